/* A model folder's JSON files, fuzzed: eng_config_load (engine/config.h) with
 * every getter on the bytes as a file, and model_load (models/model.h) on a
 * folder whose file is the input and whose other files are a fixture's. A
 * model that loads runs one tiny forward, since a config can give sizes the
 * loader checks against no tensor (heads, eps, token ids).
 *
 * Input: byte 0 picks the file (mod 9):
 *   0 DistilBERT config.json   1 GPT-2 config.json   2 CLIP config.json
 *   3 GPT-2 generation_config.json   4 CLIP preprocessor_config.json
 *   5 DistilBERT tokenizer_config.json   6 GPT-2 tokenizer_config.json
 *   7 CLIP special_tokens_map.json
 *   8 DistilBERT model.safetensors.index.json (a sharded checkpoint: the
 *     folder's weights are there as model-00001-of-00001.safetensors)
 * and the rest is the file. The folders live in /dev/shm for the life of the
 * process (removed at exit): symbolic links to the fixture's files, one of
 * them replaced by the input while it runs. The byte-level BPE vocabularies
 * are cut to the byte symbols, the special tokens and the first 2000 merges
 * (ids unchanged): loading the whole of them takes ten times longer than
 * everything else a load does, and would leave the fuzzer a few inputs a
 * second. */
#include "tests/fuzz/fuzz.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <unistd.h>

#include "engine/config.h"

/* Folder f holds fixture fixtures[f]; folder 3 is DistilBERT's, sharded. */
#define N_FOLDERS 4
#define SHARD "model-00001-of-00001.safetensors"
static const char *const fixtures[N_FOLDERS] = {"distilbert-sst2-tiny", "gpt2-tiny", "clip-tiny",
                                                "distilbert-sst2-tiny"};
#define N_FILES 9
static const struct {
    int folder;
    const char *file;
} files[N_FILES] = {
    {0, "config.json"}, {1, "config.json"}, {2, "config.json"},
    {1, "generation_config.json"}, {2, "preprocessor_config.json"},
    {0, "tokenizer_config.json"}, {1, "tokenizer_config.json"}, {2, "special_tokens_map.json"},
    {3, "model.safetensors.index.json"},
};

static char root[128];

static void remove_tree_at(const char *top)
{
    for (int f = 0; f < N_FOLDERS; f++) {
        char dir[PATH_MAX], path[PATH_MAX * 2];
        snprintf(dir, sizeof dir, "%s/%d", top, f);
        DIR *d = opendir(dir);
        struct dirent *e;
        while (d && (e = readdir(d)))
            if (e->d_name[0] != '.') {
                snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
                unlink(path);
            }
        if (d)
            closedir(d);
        rmdir(dir);
    }
    rmdir(top);
}

static void remove_tree(void)
{
    remove_tree_at(root);
}

/* A crash ends the process without atexit handlers: the folders of targets
 * that are no longer running are removed when the next one starts. */
static void remove_stale_trees(void)
{
    DIR *d = opendir("/dev/shm");
    struct dirent *e;
    int pid;
    while (d && (e = readdir(d)))
        if (sscanf(e->d_name, "predictd-fuzz-config-%d", &pid) == 1 && kill(pid, 0) != 0 &&
            errno == ESRCH) {
            char top[300];
            snprintf(top, sizeof top, "/dev/shm/%s", e->d_name);
            remove_tree_at(top);
        }
    if (d)
        closedir(d);
}

/* dir/name becomes a link to the fixture's file (or nothing, if the fixture
 * has none). */
static void link_fixture(int f, const char *name)
{
    char src[PATH_MAX], dst[PATH_MAX], fix[PATH_MAX];
    snprintf(src, sizeof src, "%s/%s", fuzz_fixture_path(fixtures[f], fix, sizeof fix), name);
    snprintf(dst, sizeof dst, "%s/%d/%s", root, f, name);
    unlink(dst);
    if (access(src, F_OK) == 0 && symlink(realpath(src, fix) ? fix : src, dst) != 0) {
        perror(dst);
        abort();
    }
}

/* Symbols of one byte-level BPE vocabulary entry that every load needs: a
 * single character (the byte alphabet), the same with CLIP's "</w>", or a
 * special token. */
static bool basic_symbol(const char *t)
{
    size_t n = strlen(t), cp = 0;
    if (strncmp(t, "<|", 2) == 0)
        return true;
    if (n > 4 && strcmp(t + n - 4, "</w>") == 0)
        n -= 4;
    for (size_t i = 0; i < n; i++)
        cp += ((unsigned char)t[i] & 0xc0) != 0x80;
    return cp == 1;
}

/* Writes fixture f's vocab.json and merges.txt, cut down, into its folder. */
static void write_reduced_bpe(int f)
{
    enum { MERGES = 2000 };
    char src[PATH_MAX], dst[PATH_MAX], fix[PATH_MAX];
    fuzz_fixture_path(fixtures[f], fix, sizeof fix);
    snprintf(src, sizeof src, "%s/merges.txt", fix);
    snprintf(dst, sizeof dst, "%s/%d/merges.txt", root, f);
    FILE *in = fopen(src, "r");
    unlink(dst);
    FILE *out = fopen(dst, "w");
    json_t *keep = json_object();
    char line[1024];
    int n = 0;
    FUZZ_CHECK(in && out && keep);
    while (n < MERGES && fgets(line, sizeof line, in)) {
        fputs(line, out);
        char a[512], b[512], ab[1024];
        if (strncmp(line, "#version", 8) == 0 || sscanf(line, "%511s %511s", a, b) != 2)
            continue;
        snprintf(ab, sizeof ab, "%s%s", a, b);
        json_object_set_new(keep, a, json_true());
        json_object_set_new(keep, b, json_true());
        json_object_set_new(keep, ab, json_true());
        n++;
    }
    fclose(in);
    FUZZ_CHECK(fclose(out) == 0);

    snprintf(src, sizeof src, "%s/vocab.json", fix);
    snprintf(dst, sizeof dst, "%s/%d/vocab.json", root, f);
    json_t *vocab = json_load_file(src, 0, NULL), *small = json_object();
    const char *tok;
    json_t *id;
    FUZZ_CHECK(vocab && small);
    json_object_foreach(vocab, tok, id)
        if (basic_symbol(tok) || json_object_get(keep, tok))
            json_object_set(small, tok, id);
    unlink(dst);
    FUZZ_CHECK(json_dump_file(small, dst, JSON_COMPACT) == 0);
    json_decref(vocab);
    json_decref(small);
    json_decref(keep);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    remove_stale_trees();
    snprintf(root, sizeof root, "/dev/shm/predictd-fuzz-config-%d", (int)getpid());
    if (mkdir(root, 0700) != 0) {
        perror(root);
        abort();
    }
    atexit(remove_tree);
    for (int f = 0; f < N_FOLDERS; f++) {
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s/%d", root, f);
        mkdir(dir, 0700);
        DIR *d = opendir(fuzz_fixture_path(fixtures[f], dir, sizeof dir));
        struct dirent *e;
        if (!d) {
            perror(dir);
            abort();
        }
        while ((e = readdir(d)))
            if (e->d_name[0] != '.')
                link_fixture(f, e->d_name);
        closedir(d);
        if (f == 1 || f == 2)
            write_reduced_bpe(f);
        if (f == 3) { /* the weights as the index's only shard */
            char from[PATH_MAX], to[PATH_MAX + 64];
            snprintf(from, sizeof from, "%s/3/model.safetensors", root);
            snprintf(to, sizeof to, "%s/3/" SHARD, root);
            FUZZ_CHECK(rename(from, to) == 0);
        }
    }
    return 0;
}

static void write_file(const char *path, const uint8_t *data, size_t size)
{
    unlink(path);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0) {
        perror(path);
        abort();
    }
}

/* Every getter on key, the way loaders call them; errors are sticky, so each
 * getter runs on a fresh load too (see exercise_config). */
static void get_all(eng_config *cfg, const char *key)
{
    (void)eng_config_int_or(cfg, key, 7);
    (void)eng_config_num_or(cfg, key, 0.5);
    (void)eng_config_bool_or(cfg, key, true);
    const char *s = eng_config_str_or(cfg, key, "dflt");
    FUZZ_CHECK(s != NULL);
    (void)strlen(s);
    (void)eng_config_has(cfg, key);
    s = eng_config_first_str(cfg, key);
    if (s)
        (void)strlen(s);
    (void)eng_config_int(cfg, key);
    s = eng_config_str(cfg, key);
    FUZZ_CHECK(s != NULL);
    char **labels = NULL;
    size_t n = 0;
    if (eng_config_id2label(cfg, key, &labels, &n) == 0) {
        FUZZ_CHECK(n > 0 && labels);
        for (size_t i = 0; i < n; i++) {
            FUZZ_CHECK(labels[i] != NULL);
            free(labels[i]);
        }
        free(labels);
    } else {
        FUZZ_CHECK(labels == NULL && n == 0);
    }
}

/* Collects dotted keys of the object (two levels), plus awkward ones. */
static void exercise_config(const char *path)
{
    eng_config *cfg = NULL;
    eng_err err = {0};
    int rc = eng_config_load(path, &cfg, &err);
    if (rc) {
        FUZZ_CHECK(cfg == NULL && err.code == rc && (rc == ENG_EFORMAT || rc == ENG_ENOMEM));
        return;
    }
    static const char *const fixed[] = {
        "dim", "id2label", "architectures", "text_config.hidden_size", "a.b.c", "", ".", "..",
        "x.", ".x", "text_config..vocab_size",
        ("a_key_longer_than_the_128_bytes_config_c_copies_each_part_into_"
         "a_key_longer_than_the_128_bytes_config_c_copies_each_part_into_xx.y"),
    };
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++)
        get_all(cfg, fixed[i]);
    eng_config_free(cfg);

    /* Each real key on a fresh config, so a sticky error does not hide
     * the later getters' paths. */
    json_t *root_json = json_load_file(path, JSON_DECODE_INT_AS_REAL, NULL);
    const char *k1, *k2;
    json_t *v1, *v2;
    size_t budget = 64;
    json_object_foreach(root_json, k1, v1) {
        char key[300];
        if (!budget--)
            break;
        if (eng_config_load(path, &cfg, NULL) != 0)
            break;
        get_all(cfg, k1);
        json_object_foreach(v1, k2, v2) {
            snprintf(key, sizeof key, "%s.%s", k1, k2);
            get_all(cfg, key);
        }
        eng_config_fail(cfg, "fuzz %s", k1);
        FUZZ_CHECK(eng_config_check(cfg, &err) == ENG_EFORMAT && err.msg[0]);
        eng_config_free(cfg);
    }
    json_decref(root_json);
}

/* One small forward pass of whatever loaded. */
static void run_model(const model *m)
{
    FUZZ_CHECK(m->tok && m->max_positions > 0);
    tok_encoding enc;
    tok_encoding_init(&enc);
    tok_encode_opts o = {.add_special = true, .max_len = (size_t)m->max_positions};
    FUZZ_CHECK(tok_encode(m->tok, "a b", 3, &o, &enc, NULL) == 0 || m->max_positions < 2);
    if (enc.n == 0) {
        tok_encoding_free(&enc);
        return;
    }
    if (m->task == MODEL_TASK_GENERATE && m->eos_id >= 0)
        enc.ids[0] = m->eos_id; /* what an empty prompt becomes */
    int n = (int)enc.n, off[2] = {0, n};
    model_batch b = {.ids = enc.ids, .seq_off = off, .n_seq = 1};
    eng_arena a;
    eng_arena_init(&a);
    eng_err err = {0};
    size_t out_n = m->task == MODEL_TASK_CLASSIFY ? m->n_labels
                 : m->task == MODEL_TASK_GENERATE ? (size_t)m->vocab_size
                                                  : (size_t)m->proj_dim;
    float *out = calloc(out_n ? out_n : 1, sizeof *out);
    FUZZ_CHECK(out && eng_arena_reserve(&a, m->ops->scratch_size(m, n, n)) == 0);
    int rc = 0;
    if (m->task == MODEL_TASK_CLASSIFY) {
        rc = m->ops->classify(m, &b, &a, out, &err);
    } else if (m->task == MODEL_TASK_GENERATE) {
        model_kv kv = {.capacity = n};
        kv.data = calloc(m->ops->kv_floats(m, n), sizeof(float));
        FUZZ_CHECK(kv.data);
        model_kv *kvs[1] = {&kv};
        rc = m->ops->generate_step(m, &b, kvs, &a, out, &err);
        free(kv.data);
    } else {
        rc = m->ops->embed_text(m, &b, &a, out, &err);
        size_t px = 3 * (size_t)m->image_size * (size_t)m->image_size;
        if (!rc && px <= 3 * 256 * 256) {
            float *pixels = calloc(px, sizeof *pixels);
            FUZZ_CHECK(pixels && eng_arena_reserve(&a, m->ops->image_scratch_size(m, 1)) == 0);
            eng_arena_reset(&a);
            rc = m->ops->embed_image(m, pixels, 1, &a, out, &err);
            free(pixels);
        }
    }
    /* KNOWN, reported: the loaders accept a tokenizer or an eos_token_id
     * (config.json, generation_config.json) with ids past the model's
     * vocabulary; the forward refuses those ids (no read past the
     * embeddings), so requests fail instead of the load. Accepted here until
     * the loaders check, so that the smoke run stays about new findings. */
    bool id_refused = rc == ENG_EINVAL && strstr(err.msg, "outside the vocabulary");
    FUZZ_CHECK(rc == 0 || id_refused);
    free(out);
    eng_arena_free(&a);
    tok_encoding_free(&enc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in in = {data, size};
    int which = fuzz_byte(&in) % N_FILES, f = files[which].folder;
    char dir[PATH_MAX], path[PATH_MAX + 64];
    snprintf(dir, sizeof dir, "%s/%d", root, f);
    snprintf(path, sizeof path, "%s/%s", dir, files[which].file);
    write_file(path, in.p, in.n);
    exercise_config(path);

    model *m = NULL;
    eng_err err = {0};
    int rc = model_load(dir, NULL, &m, &err);
    if (rc == 0) {
        run_model(m);
        model_free(m);
    } else {
        FUZZ_CHECK(m == NULL && err.code == rc && err.msg[0]);
    }
    link_fixture(f, files[which].file);
    return 0;
}
