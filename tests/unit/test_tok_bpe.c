/* Byte-level BPE tokenizers (models/tok_bpe.c) against the Hugging Face goldens
 * in tests/fixtures/golden/{gpt2,clip}.json and the demo models. */
#include <ctype.h>
#include <jansson.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "models/tok_bpe.h"
#include "tests/unit/fixtures.h"
#include "tests/unit/test.h"

static tok_tokenizer *load(const char *dir, tok_bpe_flavor flavor)
{
    tok_tokenizer *t = NULL;
    eng_err err = {0};
    int rc = tok_bpe_load(dir, flavor, &t, &err);
    CHECK_MSG(rc == 0, "tok_bpe_load(%s): %d %s", dir, rc, err.msg);
    return t;
}

/* The golden cases of a family: the "tokenization" array of its golden file. */
static json_t *golden_cases(json_t *root)
{
    json_t *cases = json_object_get(root, "tokenization");
    CHECK(json_is_array(cases) && json_array_size(cases) > 0);
    return cases;
}

static const char *case_text(const json_t *c, size_t *len)
{
    const json_t *t = json_object_get(c, "text");
    *len = json_string_length(t);
    return json_string_value(t);
}

/* Checks that e holds exactly the ids of the JSON array want. */
static void check_ids(const tok_encoding *e, const json_t *want, const char *what)
{
    CHECK_MSG(e->n == json_array_size(want), "%s: %zu ids, want %zu", what, e->n,
              json_array_size(want));
    for (size_t i = 0; i < e->n && i < json_array_size(want); i++) {
        long long w = json_integer_value(json_array_get(want, i));
        CHECK_MSG(e->ids[i] == w, "%s: ids[%zu] = %d, want %lld", what, i, e->ids[i], w);
    }
}

static int encode(const tok_tokenizer *t, const char *s, size_t len, bool special,
                  size_t max_len, tok_encoding *e)
{
    tok_encode_opts opts = {.add_special = special, .max_len = max_len};
    eng_err err = {0};
    int rc = tok_encode(t, s, len, &opts, e, &err);
    CHECK_MSG(rc == 0, "encode \"%.*s\": %d %s", (int)len, s, rc, err.msg);
    return rc;
}

static const char *case_id(const json_t *c)
{
    return json_string_value(json_object_get(c, "id"));
}

/* A family's own checks of golden case c, whose text t encoded as e. */
typedef void (*case_check)(const tok_tokenizer *t, const json_t *c, const tok_encoding *e);

/* Encodes each golden case of the golden file with t (special tokens added,
 * at most max_len tokens, 0: no limit), checks its ids, and runs more on it. */
static void check_golden_cases(const tok_tokenizer *t, const char *golden, size_t max_len,
                               case_check more)
{
    json_t *root = fixture_json_load(golden), *c;
    if (!root)
        return;
    size_t i;
    tok_encoding e;
    tok_encoding_init(&e);
    json_array_foreach(golden_cases(root), i, c) {
        size_t len;
        const char *text = case_text(c, &len);
        if (encode(t, text, len, true, max_len, &e))
            continue;
        check_ids(&e, json_object_get(c, "ids"), case_id(c));
        more(t, c, &e);
    }
    tok_encoding_free(&e);
    json_decref(root);
}

/* GPT-2 never truncates here, and each id spells the golden token. */
static void check_gpt2_case(const tok_tokenizer *t, const json_t *c, const tok_encoding *e)
{
    CHECK_EQ_INT(e->n_untruncated, e->n);
    json_t *tokens = json_object_get(c, "tokens");
    for (size_t k = 0; k < e->n && k < json_array_size(tokens); k++) {
        size_t tlen = 0;
        const char *tok = t->ops->id_to_token(t, e->ids[k], &tlen);
        const char *want = json_string_value(json_array_get(tokens, k));
        CHECK_MSG(tok && tlen == strlen(want) && memcmp(tok, want, tlen) == 0,
                  "%s: token %zu is \"%.*s\", want \"%s\"", case_id(c), k, (int)tlen, tok, want);
    }
}

TEST(bpe_gpt2_golden_ids_and_tokens)
{
    tok_tokenizer *t = load(FIXTURE_GPT2, TOK_BPE_GPT2);
    if (t)
        check_golden_cases(t, FIXTURE_GPT2_GOLDEN, 0, check_gpt2_case);
    tok_tokenizer_free(t);
}

/* decode(the golden ids) == text, and the token spans tile the text. */
static void check_gpt2_roundtrip(const tok_tokenizer *t, const json_t *c, const tok_encoding *e)
{
    size_t len;
    const char *text = case_text(c, &len);
    int32_t ids[256];
    size_t n_ids = (size_t)fixture_json_ids(json_object_get(c, "ids"), ids, 256);
    char buf[1024];
    size_t n = tok_bpe_decode(t, ids, n_ids, buf, sizeof buf);
    CHECK_MSG(n == len && memcmp(buf, text, len) == 0, "decode \"%s\" gave \"%.*s\"", text,
              (int)(n < sizeof buf ? n : sizeof buf), buf);
    CHECK_EQ_INT(tok_bpe_decode(t, ids, n_ids, NULL, 0), len);
    uint32_t at = 0;
    for (size_t k = 0; k < e->n; k++) {
        CHECK_MSG(e->start[k] == at && e->stop[k] > e->start[k], "\"%s\" token %zu spans [%u, %u)",
                  text, k, e->start[k], e->stop[k]);
        at = e->stop[k];
    }
    CHECK_EQ_INT(at, len);
}

TEST(bpe_gpt2_decode_and_offsets_roundtrip)
{
    tok_tokenizer *t = load(FIXTURE_GPT2, TOK_BPE_GPT2);
    if (t)
        check_golden_cases(t, FIXTURE_GPT2_GOLDEN, 0, check_gpt2_roundtrip);
    tok_tokenizer_free(t);
}

/* Emoji are split across tokens: a token may be part of a UTF-8 character, and
 * a stream must hold those bytes back until the character is whole. The piece
 * " \U0001F642\U0001F389" is the one of the golden "unicode" case. */
TEST(bpe_gpt2_partial_utf8_token)
{
    tok_tokenizer *t = load(FIXTURE_GPT2, TOK_BPE_GPT2);
    if (!t)
        return;
    const char *text = " \xf0\x9f\x99\x82\xf0\x9f\x8e\x89";
    static const int32_t want[] = {32485, 8582, 236, 231}; /* "ĠðŁĻĤ", "ðŁ", "İ", "ī" */
    static const size_t want_bytes[] = {5, 2, 1, 1}, want_ready[] = {5, 5, 5, 9};
    tok_encoding e;
    tok_encoding_init(&e);
    encode(t, text, strlen(text), false, 0, &e);
    CHECK_EQ_INT(e.n, 4);
    char stream[16];
    size_t have = 0;
    for (size_t k = 0; k < e.n && k < 4; k++) {
        CHECK_EQ_INT(e.ids[k], want[k]);
        char buf[8];
        size_t n = t->ops->token_bytes(t, e.ids[k], buf, sizeof buf);
        CHECK_EQ_INT(n, want_bytes[k]);
        CHECK_EQ_INT(e.stop[k] - e.start[k], want_bytes[k]);
        memcpy(stream + have, buf, n < 8 ? n : 8);
        have += n;
        CHECK_EQ_INT(tok_utf8_complete_prefix(stream, have), want_ready[k]);
    }
    CHECK(have == 9 && memcmp(stream, text, 9) == 0);
    tok_encoding_free(&e);
    tok_tokenizer_free(t);
}

TEST(bpe_gpt2_endoftext_in_text)
{
    tok_tokenizer *t = load(FIXTURE_GPT2, TOK_BPE_GPT2);
    if (!t)
        return;
    const char *text = "Hello<|endoftext|> world";
    tok_encoding e;
    tok_encoding_init(&e);
    encode(t, text, strlen(text), true, 0, &e);
    int32_t want[] = {15496, 50256, 995};
    CHECK_EQ_INT(e.n, 3);
    for (size_t k = 0; k < e.n && k < 3; k++)
        CHECK_EQ_INT(e.ids[k], want[k]);
    if (e.n == 3) {
        CHECK(e.special[1] && !e.special[0] && !e.special[2]);
        CHECK(e.start[1] == 5 && e.stop[1] == 18);
    }
    char buf[64];
    size_t n = tok_bpe_decode(t, want, 3, buf, sizeof buf);
    CHECK(n == strlen(text) && memcmp(buf, text, n) == 0);
    CHECK_EQ_INT(t->bos_id, 50256);
    CHECK_EQ_INT(t->eos_id, 50256);
    CHECK_EQ_INT(t->unk_id, 50256);
    CHECK_EQ_INT(t->pad_id, -1);
    CHECK_EQ_INT(t->vocab_size, 50257);
    CHECK_EQ_INT(t->model_max_length, 1024);
    tok_encoding_free(&e);
    tok_tokenizer_free(t);
}

TEST(bpe_gpt2_truncation_and_empty)
{
    tok_tokenizer *t = load(FIXTURE_GPT2, TOK_BPE_GPT2);
    if (!t)
        return;
    tok_encoding e;
    tok_encoding_init(&e);
    const char *text = "Hello, my dog is cute"; /* 15496, 11, 616, 3290, 318, 13779 */
    encode(t, text, strlen(text), true, 4, &e);
    CHECK_EQ_INT(e.n, 4);
    CHECK_EQ_INT(e.n_untruncated, 6);
    CHECK_EQ_INT(e.n == 4 ? e.ids[3] : -1, 3290);
    encode(t, "", 0, true, 0, &e);
    CHECK_EQ_INT(e.n, 0);
    CHECK_EQ_INT(e.n_untruncated, 0);
    /* count_max stops reading once passed: the ids so far are the full
     * encoding's, the count a lower bound just over the bound. */
    tok_encode_opts opts = {.count_max = 3};
    CHECK_EQ_INT(tok_encode(t, text, strlen(text), &opts, &e, NULL), 0);
    CHECK_EQ_INT(e.n_untruncated, 4);
    CHECK_EQ_INT(e.n == 4 ? e.ids[3] : -1, 3290);
    opts.count_max = 6;
    CHECK_EQ_INT(tok_encode(t, text, strlen(text), &opts, &e, NULL), 0);
    CHECK_EQ_INT(e.n_untruncated, 6);
    tok_encoding_free(&e);
    tok_tokenizer_free(t);
}

/* The pieces of GPT-2's regex on whitespace edge cases (checked with Python's
 * `regex` module): a run before a word leaves its last space to the word. */
TEST(bpe_gpt2_pretokenizer_whitespace)
{
    static const struct {
        const char *text, *pieces; /* pieces joined by '|' */
    } cases[] = {
        {"a  b", "a| | b"},
        {"a \n b", "a| \n| b"},
        {"a\t\tb ", "a|\t|\t|b| "},
        {"x\xc2\xa0\xc2\xa0y", "x|\xc2\xa0|\xc2\xa0|y"}, /* NBSP is \s but not ' ' */
        {"it's 'tis ''s DON'T", "it|'s| '|tis| ''|s| DON|'|T"},
        {"1,000 ab12", "1|,|000| ab|12"},
        {"   ", "   "},
        {"?! ..", "?!| .."},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const char *s = cases[c].text;
        size_t len = strlen(s);
        char got[128] = "";
        size_t n = 0;
        for (size_t i = 0; i < len;) {
            size_t end = tok_bpe__gpt2_split(s, len, i);
            n += (size_t)snprintf(got + n, sizeof got - n, "%s%.*s", i ? "|" : "", (int)(end - i),
                                  s + i);
            i = end;
        }
        CHECK_STR(got, cases[c].pieces);
    }
}

/* CLIP truncates at 77, keeping the end-of-text token, and every span lies
 * within the text. */
static void check_clip_case(const tok_tokenizer *t, const json_t *c, const tok_encoding *e)
{
    (void)t;
    const char *id = case_id(c);
    size_t len = json_string_length(json_object_get(c, "text"));
    CHECK_MSG(e->n_untruncated ==
                  (size_t)json_integer_value(json_object_get(c, "num_ids_untruncated")),
              "%s: n_untruncated %zu", id, e->n_untruncated);
    for (size_t k = 0; k < e->n; k++)
        CHECK_MSG(e->start[k] <= e->stop[k] && e->stop[k] <= len, "%s: token %zu spans [%u, %u)",
                  id, k, e->start[k], e->stop[k]);
    CHECK(e->n >= 2 && e->special[0] && e->special[e->n - 1] && e->stop[e->n - 1] == 0);
}

TEST(bpe_clip_golden_ids_truncated_at_77)
{
    tok_tokenizer *t = load(FIXTURE_CLIP, TOK_BPE_CLIP);
    if (!t)
        return;
    check_golden_cases(t, FIXTURE_CLIP_GOLDEN, 77, check_clip_case);
    /* Bounded reading keeps the truncated ids, start and end tokens included. */
    char text[4000] = "";
    for (int i = 0; i < 400; i++)
        strcat(text, "a cat ");
    tok_encoding all, bounded;
    tok_encoding_init(&all);
    tok_encoding_init(&bounded);
    tok_encode_opts opts = {.add_special = true, .max_len = 77};
    CHECK_EQ_INT(tok_encode(t, text, strlen(text), &opts, &all, NULL), 0);
    opts.count_max = 77;
    CHECK_EQ_INT(tok_encode(t, text, strlen(text), &opts, &bounded, NULL), 0);
    CHECK_EQ_INT(all.n_untruncated, 802);
    CHECK_EQ_INT(bounded.n_untruncated, 78);
    CHECK(all.n == 77 && bounded.n == 77 && !memcmp(all.ids, bounded.ids, 77 * sizeof *all.ids));
    tok_encoding_free(&all);
    tok_encoding_free(&bounded);
    CHECK_EQ_INT(t->bos_id, 49406);
    CHECK_EQ_INT(t->eos_id, 49407);
    CHECK_EQ_INT(t->pad_id, 49407);
    CHECK_EQ_INT(t->vocab_size, 49408);
    CHECK_EQ_INT(t->model_max_length, 77);
    tok_tokenizer_free(t);
}

/* On ASCII text CLIP's offsets are exact: each piece token spans the input
 * characters it spells, before lower-casing. */
TEST(bpe_clip_offsets_and_decode)
{
    tok_tokenizer *t = load(FIXTURE_CLIP, TOK_BPE_CLIP);
    if (!t)
        return;
    const char *text = "  A PHOTO\tof a DOG's   life!! ";
    tok_encoding e;
    tok_encoding_init(&e);
    encode(t, text, strlen(text), true, 0, &e);
    for (size_t k = 1; k + 1 < e.n; k++) {
        char bytes[64], span[64];
        size_t n = t->ops->token_bytes(t, e.ids[k], bytes, sizeof bytes);
        if (n && bytes[n - 1] == ' ')
            n--; /* the "</w>" */
        size_t m = e.stop[k] - e.start[k];
        for (size_t j = 0; j < m && j < sizeof span; j++)
            span[j] = (char)tolower((unsigned char)text[e.start[k] + j]);
        CHECK_MSG(m == n && memcmp(span, bytes, n) == 0, "token %zu \"%.*s\" spans \"%.*s\"", k,
                  (int)n, bytes, (int)m, text + e.start[k]);
    }
    char out[128];
    size_t n = tok_bpe_decode(t, e.ids, e.n, out, sizeof out);
    const char *want = "a photo of a dog 's life !! ";
    CHECK_MSG(n == strlen(want) - 1 && memcmp(out, want, n) == 0, "decode gave \"%.*s\"", (int)n,
              out);
    tok_encoding_free(&e);
    tok_tokenizer_free(t);
}

/* NFC: a decomposed "e" + U+0301 encodes as the precomposed character, and the
 * composed character's token spans both input characters. */
TEST(bpe_clip_nfc_and_empty)
{
    tok_tokenizer *t = load(FIXTURE_CLIP, TOK_BPE_CLIP);
    if (!t)
        return;
    tok_encoding a, b;
    tok_encoding_init(&a);
    tok_encoding_init(&b);
    encode(t, "CAF\xc3\x89", 5, true, 0, &a);   /* CAFÉ */
    encode(t, "cafe\xcc\x81", 6, true, 0, &b);  /* cafe + combining acute */
    CHECK_EQ_INT(a.n, 3);
    CHECK_EQ_INT(b.n, 3);
    CHECK_EQ_INT(a.n == 3 ? a.ids[1] : -1, 15304); /* "cafÃ©</w>" */
    CHECK_EQ_INT(b.n == 3 ? b.ids[1] : -1, 15304);
    CHECK(b.n == 3 && b.start[1] == 0 && b.stop[1] == 6);
    encode(t, "", 0, true, 0, &a);
    CHECK(a.n == 2 && a.ids[0] == 49406 && a.ids[1] == 49407 && a.n_untruncated == 2);
    encode(t, " \t\n", 3, false, 0, &a);
    CHECK_EQ_INT(a.n, 0);
    tok_encoding_free(&a);
    tok_encoding_free(&b);
    tok_tokenizer_free(t);
}

TEST(bpe_invalid_utf8_is_eformat)
{
    tok_bpe_flavor flavors[] = {TOK_BPE_GPT2, TOK_BPE_CLIP};
    const char *dirs[] = {FIXTURE_GPT2, FIXTURE_CLIP};
    for (int f = 0; f < 2; f++) {
        tok_tokenizer *t = load(dirs[f], flavors[f]);
        if (!t)
            continue;
        tok_encoding e;
        tok_encoding_init(&e);
        tok_encode_opts opts = {.add_special = true};
        eng_err err = {0};
        int rc = tok_encode(t, "abc\xe2\x82", 5, &opts, &e, &err); /* truncated euro sign */
        CHECK_EQ_INT(rc, ENG_EFORMAT);
        CHECK_MSG(strstr(err.msg, "byte 3"), "message: %s", err.msg);
        rc = tok_encode(t, "\xc0\xaf", 2, &opts, &e, &err); /* overlong '/' */
        CHECK_EQ_INT(rc, ENG_EFORMAT);
        tok_encoding_free(&e);
        tok_tokenizer_free(t);
    }
}

/* A folder with vocab.json but no merges.txt names the missing file. */
TEST(bpe_missing_merges_names_file)
{
    char dir[] = "/tmp/predictd-bpe-XXXXXX", vocab[128], src[4096];
    if (!mkdtemp(dir) || !getcwd(src, sizeof src - 64)) {
        CHECK_MSG(0, "cannot make a temporary folder");
        return;
    }
    strcat(src, "/" FIXTURE_GPT2 "/vocab.json");
    snprintf(vocab, sizeof vocab, "%s/vocab.json", dir);
    CHECK(symlink(src, vocab) == 0);
    tok_tokenizer *t = NULL;
    eng_err err = {0};
    int rc = tok_bpe_load(dir, TOK_BPE_GPT2, &t, &err);
    CHECK_EQ_INT(rc, ENG_ENOTFOUND);
    CHECK(t == NULL);
    CHECK_MSG(strstr(err.msg, "merges.txt"), "message: %s", err.msg);
    unlink(vocab);
    rc = tok_bpe_load(dir, TOK_BPE_GPT2, &t, &err);
    CHECK_EQ_INT(rc, ENG_ENOTFOUND);
    CHECK_MSG(strstr(err.msg, "vocab.json"), "message: %s", err.msg);
    rmdir(dir);
}

/* A scratch model folder: vocab.json linked from gpt2-tiny, the rest written
 * by the test. */
typedef struct scratch_dir {
    char path[64];
    bool ok;
} scratch_dir;

static void scratch_file(scratch_dir *d, const char *name, const char *content)
{
    char file[128];
    snprintf(file, sizeof file, "%s/%s", d->path, name);
    FILE *f = fopen(file, "wb");
    CHECK_MSG(f && fputs(content, f) >= 0, "cannot write %s", file);
    if (f)
        fclose(f);
}

static void scratch_open(scratch_dir *d)
{
    char src[4096], link[128];
    strcpy(d->path, "/tmp/predictd-bpe-XXXXXX");
    d->ok = mkdtemp(d->path) && getcwd(src, sizeof src - 64);
    CHECK_MSG(d->ok, "cannot make a temporary folder");
    strcat(src, "/" FIXTURE_GPT2 "/vocab.json");
    snprintf(link, sizeof link, "%s/vocab.json", d->path);
    d->ok = d->ok && symlink(src, link) == 0;
}

static void scratch_close(scratch_dir *d)
{
    static const char *const names[] = {"vocab.json", "merges.txt", "tokenizer_config.json",
                                        "special_tokens_map.json"};
    char file[128];
    for (size_t i = 0; i < 4; i++) {
        snprintf(file, sizeof file, "%s/%s", d->path, names[i]);
        unlink(file);
    }
    rmdir(d->path);
}

/* Loads d as GPT-2 and checks the error code and a word of the message. */
static void check_load_fails(scratch_dir *d, int want_rc, const char *want_msg)
{
    tok_tokenizer *t = NULL;
    eng_err err = {0};
    int rc = tok_bpe_load(d->path, TOK_BPE_GPT2, &t, &err);
    CHECK_MSG(rc == want_rc && t == NULL, "want %d, got %d (%s)", want_rc, rc, err.msg);
    CHECK_MSG(strstr(err.msg, want_msg), "\"%s\" not in: %s", want_msg, err.msg);
    tok_tokenizer_free(t);
}

TEST(bpe_malformed_files_are_errors)
{
    scratch_dir d;
    scratch_open(&d);
    if (!d.ok) {
        scratch_close(&d);
        return;
    }
    scratch_file(&d, "merges.txt", "#version: 0.2\n\xc4\xa0 t\nlonely\n");
    check_load_fails(&d, ENG_EFORMAT, "merges.txt:3");
    scratch_file(&d, "merges.txt", "#version: 0.2\nzq\xc3\xa6 xx\n"); /* not in the vocab */
    check_load_fails(&d, ENG_EFORMAT, "merges.txt:2");
    scratch_file(&d, "merges.txt", "#version: 0.2\n\xc4\xa0 t\n");
    scratch_file(&d, "tokenizer_config.json", "{\"add_prefix_space\": true}");
    check_load_fails(&d, ENG_EUNSUPPORTED, "add_prefix_space");
    scratch_file(&d, "tokenizer_config.json", "{\"bos_token\": \"<nope>\"");
    check_load_fails(&d, ENG_EFORMAT, "tokenizer_config.json");
    scratch_file(&d, "tokenizer_config.json", "{\"bos_token\": \"<nope>\"}");
    check_load_fails(&d, ENG_EFORMAT, "<nope>");

    /* What save_pretrained writes when there is no length limit: int(1e30). */
    scratch_file(&d, "tokenizer_config.json",
                 "{\"model_max_length\": 1000000000000000019884624838656, \"pad_token\": null}");
    tok_tokenizer *t = NULL;
    eng_err err = {0};
    CHECK_MSG(tok_bpe_load(d.path, TOK_BPE_GPT2, &t, &err) == 0, "%s", err.msg);
    if (t) {
        CHECK_EQ_INT(t->model_max_length, 0);
        CHECK_EQ_INT(t->eos_id, 50256);
        tok_encoding e;
        tok_encoding_init(&e);
        encode(t, " t", 2, false, 0, &e); /* the only merge: "\xc4\xa0 t" */
        CHECK(e.n == 1 && e.ids[0] == 256); /* "Ġt" */
        tok_encoding_free(&e);
        tok_tokenizer_free(t);
    }
    scratch_close(&d);
}

/* The Shakespeare demo: prompt ids, and decode(prompt + generated) == text. */
TEST(bpe_demo_shakespeare_gpt2)
{
    tok_tokenizer *t = load("models/demo/shakespeare-gpt2-small", TOK_BPE_GPT2);
    json_t *root = fixture_json_load("models/demo/expected.json");
    if (!t || !root)
        goto out;
    json_t *greedy = json_object_get(json_object_get(root, "shakespeare-gpt2-small"), "greedy");
    CHECK(json_array_size(greedy) > 0);
    CHECK_EQ_INT(t->model_max_length, 256);
    json_t *g;
    size_t i;
    json_array_foreach(greedy, i, g) {
        const char *prompt = json_string_value(json_object_get(g, "prompt"));
        json_t *pids = json_object_get(g, "prompt_ids"), *gids = json_object_get(g, "ids");
        tok_encoding e;
        tok_encoding_init(&e);
        encode(t, prompt, strlen(prompt), true, 0, &e);
        check_ids(&e, pids, prompt);
        int32_t all[256];
        int n_prompt = fixture_json_ids(pids, all, 256);
        size_t n = (size_t)(n_prompt + fixture_json_ids(gids, all + n_prompt, 256 - n_prompt));
        char buf[2048];
        const char *want = json_string_value(json_object_get(g, "text"));
        size_t len = tok_bpe_decode(t, all, n, buf, sizeof buf);
        CHECK_MSG(len == strlen(want) && memcmp(buf, want, len) == 0, "decode of \"%s\"", prompt);
        tok_encoding_free(&e);
    }
out:
    json_decref(root);
    tok_tokenizer_free(t);
}

/* The shapes demo shares CLIP's vocabulary: the golden batch texts must give
 * the golden ids with it too. */
TEST(bpe_demo_shapes_clip)
{
    tok_tokenizer *t = load("models/demo/shapes-clip-small", TOK_BPE_CLIP);
    json_t *root = fixture_json_load(FIXTURE_CLIP_GOLDEN);
    if (!t || !root)
        goto out;
    json_t *texts = json_object_get(root, "texts"), *ids = json_object_get(root, "text_input_ids");
    CHECK(json_array_size(texts) > 0 && json_array_size(texts) == json_array_size(ids));
    tok_encoding e;
    tok_encoding_init(&e);
    for (size_t i = 0; i < json_array_size(texts); i++) {
        const json_t *s = json_array_get(texts, i);
        encode(t, json_string_value(s), json_string_length(s), true, 77, &e);
        check_ids(&e, json_array_get(ids, i), json_string_value(s));
    }
    const char *red = "a photo of a red circle"; /* 320 1125 539 320 736 ... */
    encode(t, red, strlen(red), true, 77, &e);
    CHECK(e.n >= 7 && e.ids[5] == 736 && e.ids[e.n - 1] == 49407);
    tok_encoding_free(&e);
out:
    json_decref(root);
    tok_tokenizer_free(t);
}

/* Long pieces are merged through a heap; it must give exactly what the
 * reference scan (HF's bpe() loop) gives, offsets included. */
TEST(bpe_heap_merge_matches_reference)
{
    static const char *const alphabets[] = {
        "abcdefghijklmnopqrstuvwxyz", "aab", "ABab", "!?.,;:-_<>", "0123456789", "ab \n",
        "\xc3\xa9\xc3\xa8" "a", "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", /* é è a; 日 本 語 */
    };
    tok_tokenizer *tok[2] = {load(FIXTURE_GPT2, TOK_BPE_GPT2), load(FIXTURE_CLIP, TOK_BPE_CLIP)};
    char text[4096];
    uint32_t seed = 12345;
    tok_encoding a, b;
    tok_encoding_init(&a);
    tok_encoding_init(&b);
    for (int round = 0; round < 64 && tok[0] && tok[1]; round++) {
        const char *alpha = alphabets[round % 8];
        size_t n_alpha = strlen(alpha), len = 0, want = 100 + (size_t)round * 50;
        while (len < want) {
            seed = seed * 1103515245u + 12345u;
            size_t k = (seed >> 16) % n_alpha;
            while (k > 0 && (alpha[k] & 0xc0) == 0x80)
                k--; /* start of a character */
            do
                text[len++] = alpha[k++];
            while ((alpha[k] & 0xc0) == 0x80);
        }
        tok_tokenizer *t = tok[round & 1];
        tok_encode_opts opts = {.add_special = true};
        eng_err err = {0};
        int rc = tok_encode(t, text, len, &opts, &a, &err);
        rc |= tok_bpe__encode_ref(t, text, len, &opts, &b, &err);
        CHECK_MSG(rc == 0, "encode: %s", err.msg);
        bool same = a.n == b.n;
        for (size_t k = 0; same && k < a.n; k++)
            same = a.ids[k] == b.ids[k] && a.start[k] == b.start[k] && a.stop[k] == b.stop[k];
        CHECK_MSG(same, "round %d (%zu bytes): heap gave %zu tokens, reference %zu", round, len,
                  a.n, b.n);
    }
    tok_encoding_free(&a);
    tok_encoding_free(&b);
    tok_tokenizer_free(tok[0]);
    tok_tokenizer_free(tok[1]);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Loading 50k tokens and 50k merges should take well under 100 ms in an
 * optimized build; the bound here leaves room for sanitizer builds. */
TEST(bpe_load_time)
{
    double t0 = now_ms();
    tok_tokenizer *g = load(FIXTURE_GPT2, TOK_BPE_GPT2);
    double t1 = now_ms();
    tok_tokenizer *c = load(FIXTURE_CLIP, TOK_BPE_CLIP);
    double t2 = now_ms();
    printf("     gpt2 load %.1f ms, clip load %.1f ms\n", t1 - t0, t2 - t1);
    CHECK(t1 - t0 < 1000 && t2 - t1 < 1000);
    tok_tokenizer_free(g);
    tok_tokenizer_free(c);
}
