/* The checkpoint loader's fault tests: every malformed file is a clear error
 * naming what is wrong, never a crash (this suite also runs under ASan). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/safetensors.h"
#include "models/model.h"
#include "tests/unit/test.h"

#define TINY "tests/fixtures/distilbert-sst2-tiny"

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f) {
        fwrite(data, 1, len, f);
        fclose(f);
    }
}

/* Writes a safetensors file: 8-byte length, header, then data_len bytes. */
static void write_st(const char *path, const char *header, size_t header_len_claim, size_t data_len)
{
    size_t hl = strlen(header);
    size_t total = 8 + hl + data_len;
    unsigned char *buf = calloc(1, total);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)(header_len_claim >> (8 * i));
    memcpy(buf + 8, header, hl);
    write_file(path, buf, total);
    free(buf);
}

/* Opens a crafted file and expects failure with a message containing want. */
static void expect_bad(const char *header, size_t claim, size_t data_len, const char *want)
{
    char path[] = "/tmp/predictd-st-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    write_st(path, header, claim, data_len);
    eng_safetensors st;
    memset(&st, 0, sizeof st);
    eng_err err = {0};
    int rc = eng_safetensors_add_file(&st, path, &err);
    CHECK_MSG(rc < 0, "header %s: expected an error containing \"%s\"", header, want);
    CHECK_MSG(strstr(err.msg, want) != NULL, "message \"%s\" lacks \"%s\"", err.msg, want);
    CHECK_MSG(strstr(err.msg, path) != NULL, "message \"%s\" does not name the file", err.msg);
    eng_safetensors_close(&st);
    unlink(path);
}

#define BAD(header, data_len, want) expect_bad(header, strlen(header), data_len, want)

TEST(safetensors_reads_fixture)
{
    eng_safetensors st;
    eng_err err = {0};
    CHECK_EQ_INT(eng_safetensors_open(&st, TINY, &err), 0);
    const eng_st_tensor *t = eng_safetensors_find(&st, "distilbert.embeddings.word_embeddings.weight");
    CHECK(t != NULL);
    if (t) {
        CHECK_EQ_INT(t->dtype, ENG_F32);
        CHECK_EQ_INT(t->ndim, 2);
        CHECK_EQ_INT(t->shape[0], 30522);
        CHECK_EQ_INT(t->shape[1], 32);
    }
    CHECK(eng_safetensors_find(&st, "no.such.tensor") == NULL);
    eng_safetensors_close(&st);
}

TEST(safetensors_rejects_malformed_headers)
{
    BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "outside");
    expect_bad("{}", 1000, 0, "runs past the end");
    BAD("{\"a\": [1, 2", 0, "not valid JSON");
    BAD("[1, 2]", 0, "not a JSON object");
    BAD("{\"a\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "unknown dtype \"F33\"");
    BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "span 8");
    BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,8]}}", 8, "shape[0]");
    BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, "data_offsets");
    BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
        "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "overlap");
    BAD("{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
        "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
        "\"y\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 16, "overlap");
    BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, "data_offsets");
    BAD("{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "missing \"dtype\"");
    BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
        "\"data_offsets\":[0,8]}}", 8, "overflows");
    BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
        "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "not valid JSON");
}

TEST(safetensors_rejects_short_and_truncated_files)
{
    char path[] = "/tmp/predictd-st-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    write_file(path, "abc", 3);
    eng_safetensors st;
    memset(&st, 0, sizeof st);
    eng_err err = {0};
    CHECK(eng_safetensors_add_file(&st, path, &err) == ENG_EFORMAT);
    CHECK(strstr(err.msg, "too short") != NULL);
    eng_safetensors_close(&st);

    /* The fixture cut in half: its header is intact, its tensors are not. */
    size_t len;
    char *whole = test_read_file(TINY "/model.safetensors", &len);
    if (whole) {
        write_file(path, whole, len / 2);
        memset(&st, 0, sizeof st);
        CHECK(eng_safetensors_add_file(&st, path, &err) == ENG_EFORMAT);
        CHECK_MSG(strstr(err.msg, "outside") != NULL, "got: %s", err.msg);
        eng_safetensors_close(&st);
        free(whole);
    }
    unlink(path);
}

/* ---- model-level faults: a temporary copy of the fixture, altered ---- */

static char tmpdir[64];

static void make_model_dir(void)
{
    strcpy(tmpdir, "/tmp/predictd-model-XXXXXX");
    CHECK(mkdtemp(tmpdir) != NULL);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "cp " TINY "/* %s/", tmpdir);
    CHECK(system(cmd) == 0);
}

static void remove_model_dir(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    CHECK(system(cmd) == 0);
}

/* Rewrites the copy's safetensors header through edit(), keeping the data. */
static void edit_header(void (*edit)(json_t *root))
{
    char path[128];
    snprintf(path, sizeof path, "%s/model.safetensors", tmpdir);
    size_t len;
    unsigned char *buf = (unsigned char *)test_read_file(path, &len);
    if (!buf)
        return;
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = (hl << 8) | buf[i];
    json_t *root = json_loadb((char *)buf + 8, hl, 0, NULL);
    edit(root);
    char *h = json_dumps(root, JSON_COMPACT);
    size_t nh = strlen(h);
    unsigned char *out = malloc(8 + nh + (len - 8 - hl));
    for (int i = 0; i < 8; i++)
        out[i] = (unsigned char)((uint64_t)nh >> (8 * i));
    memcpy(out + 8, h, nh);
    memcpy(out + 8 + nh, buf + 8 + hl, len - 8 - hl);
    write_file(path, out, 8 + nh + (len - 8 - hl));
    free(out);
    free(h);
    json_decref(root);
    free(buf);
}

static void expect_load_error(const char *want)
{
    model *m = NULL;
    eng_err err = {0};
    int rc = model_load(tmpdir, NULL, &m, &err);
    CHECK_MSG(rc < 0, "model loaded, expected an error containing \"%s\"", want);
    CHECK_MSG(strstr(err.msg, want) != NULL, "message \"%s\" lacks \"%s\"", err.msg, want);
    if (!rc)
        model_free(m);
}

static void drop_classifier(json_t *root)
{
    json_object_del(root, "classifier.weight");
}

static void reshape_q(json_t *root)
{
    json_t *t = json_object_get(root, "distilbert.transformer.layer.1.attention.q_lin.weight");
    json_object_set_new(t, "shape", json_pack("[ii]", 16, 64));
}

TEST(model_load_names_missing_tensor)
{
    make_model_dir();
    edit_header(drop_classifier);
    expect_load_error("missing tensor classifier.weight");
    remove_model_dir();
}

TEST(model_load_names_wrong_shape)
{
    make_model_dir();
    edit_header(reshape_q);
    expect_load_error("layer.1.attention.q_lin.weight has shape [16, 64], the config implies [32, 32]");
    remove_model_dir();
}

static void write_config(const char *text)
{
    char path[128];
    snprintf(path, sizeof path, "%s/config.json", tmpdir);
    write_file(path, text, strlen(text));
}

TEST(model_load_config_faults)
{
    make_model_dir();
    write_config("{\"architectures\":[\"DistilBertForSequenceClassification\"],\"dim\":32}");
    expect_load_error("missing required field \"hidden_dim\"");
    write_config("{\"architectures\":[\"DistilBertForSequenceClassification\"],\"dim\":\"x\"}");
    expect_load_error("field \"dim\" must be an integer");
    write_config("{\"architectures\":[\"BertForMaskedLM\"]}");
    expect_load_error("architecture \"BertForMaskedLM\" is not supported");
    write_config("{\"architectures\":");
    expect_load_error("not valid JSON");
    remove_model_dir();
}

TEST(model_load_folder_faults)
{
    make_model_dir();
    char path[128], cmd[160];
    snprintf(path, sizeof path, "%s/model.safetensors", tmpdir);
    unlink(path);
    expect_load_error("no model.safetensors");
    snprintf(cmd, sizeof cmd, "touch %s/pytorch_model.bin", tmpdir);
    CHECK(system(cmd) == 0);
    expect_load_error("safe_serialization=True");
    remove_model_dir();
    expect_load_error("no such file"); /* the folder itself is gone */
}

/* The conversion command printed for a pickle-only folder is one shell line
 * that loads the config's own class and passes the folder as one word, even
 * one with a quote in its name: run through sh with python3 swapped for
 * printf, its last word is the folder. */
TEST(pickle_folder_gets_a_working_command)
{
    char dir[] = "/tmp/predictd-it's a \"model\"-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[sizeof dir + 32];
    snprintf(path, sizeof path, "%s/pytorch_model.bin", dir);
    write_file(path, "x", 1);
    eng_safetensors st;
    eng_err err = {0};
    CHECK(eng_safetensors_open(&st, dir, &err) == ENG_EUNSUPPORTED);
    const char *cmd = strstr(err.msg, "python3 -c ");
    CHECK_MSG(cmd != NULL, "no command in \"%s\"", err.msg);
    CHECK(strstr(err.msg, "architectures[0]") && strstr(err.msg, "safe_serialization=True"));
    if (cmd) {
        char shell[1024];
        snprintf(shell, sizeof shell, "printf '%%s\\n' %s | tail -n 1", cmd + strlen("python3 -c "));
        FILE *p = popen(shell, "r");
        char last[512] = "";
        CHECK(p && fgets(last, sizeof last, p));
        if (p)
            pclose(p);
        last[strcspn(last, "\n")] = '\0';
        CHECK_MSG(strcmp(last, dir) == 0, "the shell read the folder as \"%s\"", last);
    }
    unlink(path);
    rmdir(dir);
}
