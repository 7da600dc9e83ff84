/* Tests of the BERT WordPiece tokenizer against Hugging Face's goldens, plus
 * offsets, malformed input, special cases and the loader's error paths. */
#include <jansson.h>
#include <stdlib.h>
#include <unistd.h>

#include "models/tok_wordpiece.h"
#include "tests/unit/test.h"

#define TINY_DIR "tests/fixtures/distilbert-sst2-tiny"
#define DEMO_DIR "models/demo/sst2-distilbert-small"
#define GOLDEN "tests/fixtures/golden/distilbert.json"

static tok_tokenizer *load_or_fail(const char *dir)
{
    tok_tokenizer *t = NULL;
    eng_err err = {0};
    int rc = tok_wordpiece_load(dir, &t, &err);
    CHECK_MSG(rc == 0 && t, "loading %s: %d %s", dir, rc, err.msg);
    return rc ? NULL : t;
}

/* Encodes a string of known length with [CLS]/[SEP] and no limit. */
static int encode(tok_tokenizer *t, const char *s, size_t len, tok_encoding *e)
{
    tok_encode_opts opts = {.add_special = true};
    eng_err err = {0};
    int rc = tok_encode(t, s, len, &opts, e, &err);
    CHECK_MSG(rc == 0, "encoding \"%s\": %d %s", s, rc, err.msg);
    return rc;
}

static void check_ids(const tok_encoding *e, const int32_t *want, size_t n, const char *what)
{
    CHECK_MSG(e->n == n, "%s: %zu ids, want %zu", what, e->n, n);
    for (size_t i = 0; i < n && i < e->n; i++)
        CHECK_MSG(e->ids[i] == want[i], "%s: id %zu is %d, want %d", what, i, e->ids[i], want[i]);
}

/* The input bytes of token i equal want. */
static void check_span(const tok_encoding *e, size_t i, const char *text, const char *want)
{
    CHECK_MSG(i < e->n, "no token %zu", i);
    if (i >= e->n)
        return;
    size_t n = e->stop[i] - e->start[i];
    CHECK_MSG(e->start[i] <= e->stop[i] && n == strlen(want) &&
                  memcmp(text + e->start[i], want, n) == 0,
              "token %zu spans [%u, %u) = \"%.*s\", want \"%s\"", i, e->start[i], e->stop[i],
              (int)n, text + e->start[i], want);
}

/* Offsets are inside the text, added tokens are empty, the rest are not. */
static void check_offsets_sane(const tok_encoding *e, size_t len, const char *what)
{
    uint32_t last = 0;
    for (size_t i = 0; i < e->n; i++) {
        if (e->special[i]) {
            CHECK_MSG(e->start[i] == 0 && e->stop[i] == 0, "%s: special %zu has bytes", what, i);
            continue;
        }
        CHECK_MSG(e->start[i] < e->stop[i] && e->stop[i] <= len && e->start[i] >= last,
                  "%s: token %zu spans [%u, %u) of %zu bytes", what, i, e->start[i], e->stop[i],
                  len);
        last = e->start[i];
    }
}

static void check_golden_case(tok_tokenizer *t, json_t *c, tok_encoding *e)
{
    const char *id = json_string_value(json_object_get(c, "id"));
    json_t *text = json_object_get(c, "text"), *ids = json_object_get(c, "input_ids");
    json_t *tokens = json_object_get(c, "tokens");
    size_t len = json_string_length(text);
    tok_encode_opts opts = {.add_special = true, .max_len = 512};
    eng_err err = {0};
    int rc = tok_encode(t, json_string_value(text), len, &opts, e, &err);
    CHECK_MSG(rc == 0, "%s: %s", id, err.msg);
    CHECK_MSG(e->n == json_array_size(ids), "%s: %zu ids, want %zu", id, e->n,
              json_array_size(ids));
    CHECK_EQ_INT(e->n_untruncated, json_integer_value(json_object_get(c, "num_tokens_untruncated")));
    for (size_t i = 0; i < e->n && i < json_array_size(ids); i++) {
        CHECK_MSG(e->ids[i] == json_integer_value(json_array_get(ids, i)),
                  "%s: id %zu is %d, want %lld", id, i, e->ids[i],
                  (long long)json_integer_value(json_array_get(ids, i)));
        size_t n = 0;
        const char *tok = t->ops->id_to_token(t, e->ids[i], &n);
        const char *want = json_string_value(json_array_get(tokens, i));
        CHECK_MSG(tok && want && n == strlen(want) && memcmp(tok, want, n) == 0,
                  "%s: token %zu is \"%.*s\", want \"%s\"", id, i, (int)n, tok ? tok : "",
                  want ? want : "");
    }
    check_offsets_sane(e, len, id);
}

TEST(wordpiece_golden_distilbert)
{
    json_error_t je;
    json_t *root = json_load_file(GOLDEN, 0, &je);
    CHECK_MSG(root, "%s:%d: %s", GOLDEN, je.line, je.text);
    tok_tokenizer *t = load_or_fail(TINY_DIR);
    if (!root || !t)
        goto out;
    json_t *cases = json_object_get(root, "cases");
    CHECK(json_array_size(cases) >= 13);
    tok_encoding e;
    tok_encoding_init(&e);
    for (size_t i = 0; i < json_array_size(cases); i++)
        check_golden_case(t, json_array_get(cases, i), &e);
    tok_encoding_free(&e);
out:
    tok_tokenizer_free(t);
    json_decref(root);
}

/* The 788-token case: whole without a limit, cut to [CLS] + 510 + [SEP] with
 * one, and cut to the first pieces when no special tokens are added. */
TEST(wordpiece_long_untruncated)
{
    json_t *root = json_load_file(GOLDEN, 0, NULL);
    tok_tokenizer *t = load_or_fail(TINY_DIR);
    json_t *c = NULL, *cases = json_object_get(root, "cases");
    for (size_t i = 0; i < json_array_size(cases); i++)
        if (!strcmp(json_string_value(json_object_get(json_array_get(cases, i), "id")),
                    "long_over_512"))
            c = json_array_get(cases, i);
    CHECK(c != NULL);
    if (!t || !c)
        goto out;
    const char *text = json_string_value(json_object_get(c, "text"));
    json_t *ids = json_object_get(c, "input_ids");
    tok_encoding e;
    tok_encoding_init(&e);
    encode(t, text, strlen(text), &e);
    CHECK_EQ_INT(e.n, 788);
    CHECK_EQ_INT(e.n_untruncated, 788);
    for (size_t i = 0; i < 511 && i < e.n; i++)
        CHECK_EQ_INT(e.ids[i], json_integer_value(json_array_get(ids, i)));
    CHECK_EQ_INT(e.ids[e.n - 1], 102);

    tok_encode_opts opts = {.add_special = false, .max_len = 5};
    CHECK_EQ_INT(tok_encode(t, text, strlen(text), &opts, &e, NULL), 0);
    CHECK_EQ_INT(e.n, 5);
    CHECK_EQ_INT(e.n_untruncated, 786);
    for (size_t i = 0; i < e.n; i++)
        CHECK_EQ_INT(e.ids[i], json_integer_value(json_array_get(ids, i + 1)));

    /* count_max stops reading just past it (with or without the special
     * tokens): the same ids kept, and a count one over the bound. */
    for (int special = 0; special < 2; special++) {
        tok_encode_opts bounded = {.add_special = special, .max_len = 512, .count_max = 600};
        CHECK_EQ_INT(tok_encode(t, text, strlen(text), &bounded, &e, NULL), 0);
        CHECK_EQ_INT(e.n, 512);
        CHECK_EQ_INT(e.n_untruncated, 601);
        for (size_t i = 0; i < 510; i++) /* the golden's first 511 ids are [CLS] and pieces */
            CHECK_EQ_INT(e.ids[i], json_integer_value(json_array_get(ids, i + !special)));
        bounded.count_max = 788; /* not passed: the full count */
        CHECK_EQ_INT(tok_encode(t, text, strlen(text), &bounded, &e, NULL), 0);
        CHECK_EQ_INT(e.n_untruncated, special ? 788 : 786);
    }
    tok_encoding_free(&e);
out:
    tok_tokenizer_free(t);
    json_decref(root);
}

TEST(wordpiece_offsets_accents)
{
    tok_tokenizer *t = load_or_fail(TINY_DIR);
    if (!t)
        return;
    tok_encoding e;
    tok_encoding_init(&e);
    const char *s = "Café RÉSUMÉ Ångström";
    encode(t, s, strlen(s), &e);
    CHECK_EQ_INT(e.n, 6); /* [CLS] cafe resume ang ##strom [SEP] */
    CHECK_EQ_INT(e.start[1], 0);
    CHECK_EQ_INT(e.stop[1], 5);
    check_span(&e, 1, s, "Café");
    check_span(&e, 2, s, "RÉSUMÉ");
    check_span(&e, 3, s, "Ång");
    check_span(&e, 4, s, "ström");
    CHECK(e.special[0] && e.special[5] && !e.special[1]);

    /* Punctuation, CJK and a decomposed accent (e + U+0301) map back too. */
    const char *p = "don't 我很e\xcc\x81!";
    encode(t, p, strlen(p), &e);
    const char *want[] = {"don", "'", "t", "我", "很", "e\xcc\x81", "!"};
    CHECK_EQ_INT(e.n, 9);
    for (size_t i = 0; i < 7; i++)
        check_span(&e, i + 1, p, want[i]);
    tok_encoding_free(&e);
    tok_tokenizer_free(t);
}

TEST(wordpiece_invalid_utf8)
{
    tok_tokenizer *t = load_or_fail(TINY_DIR);
    if (!t)
        return;
    static const struct {
        const char *s;
        size_t at;
    } bad[] = {{"\xff", 0}, {"ok \xe2\x82", 3}, {"\xc0\xaf", 0}, {"ab\xed\xa0\x80", 2},
               {"\xf4\x90\x80\x80", 0}, {"x\x80", 1}};
    tok_encoding e;
    tok_encoding_init(&e);
    tok_encode_opts opts = {.add_special = true};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        eng_err err = {0};
        int rc = tok_encode(t, bad[i].s, strlen(bad[i].s), &opts, &e, &err);
        char want[32];
        snprintf(want, sizeof want, "byte %zu", bad[i].at);
        CHECK_EQ_INT(rc, ENG_EFORMAT);
        CHECK_MSG(strstr(err.msg, want), "case %zu: \"%s\" does not name %s", i, err.msg, want);
        CHECK_EQ_INT(e.n, 0);
    }
    tok_encoding_free(&e);
    tok_tokenizer_free(t);
}

/* HF drops U+0000 (and other controls) without splitting the word around it. */
TEST(wordpiece_nul_and_controls)
{
    tok_tokenizer *t = load_or_fail(TINY_DIR);
    if (!t)
        return;
    tok_encoding a, b;
    tok_encoding_init(&a);
    tok_encoding_init(&b);
    encode(t, "hello\0world", 11, &a);
    encode(t, "helloworld", 10, &b);
    check_ids(&a, b.ids, b.n, "hello\\0world");
    CHECK_EQ_INT(a.stop[a.n - 2], 11);
    encode(t, "\0\0", 2, &a);
    check_ids(&a, (const int32_t[]){101, 102}, 2, "only NULs");

    /* NBSP and U+2028 split; U+200B (Cf), \v (Cc) and U+FFFD vanish. */
    const char *s = "a\xc2\xa0" "b\xe2\x80\xa8" "hel\xe2\x80\x8blo\x0bworld\xef\xbf\xbd";
    encode(t, s, strlen(s), &a);
    encode(t, "a b helloworld", 14, &b);
    check_ids(&a, b.ids, b.n, "whitespace and controls");
    CHECK_EQ_INT(a.n, 6); /* [CLS] a b hello ##world [SEP] */
    check_span(&a, 3, s, "hel\xe2\x80\x8blo");
    check_span(&a, 4, s, "world");
    tok_encoding_free(&a);
    tok_encoding_free(&b);
    tok_tokenizer_free(t);
}

TEST(wordpiece_long_word_is_unk)
{
    tok_tokenizer *t = load_or_fail(TINY_DIR);
    if (!t)
        return;
    char s[128];
    memset(s, 'a', sizeof s);
    tok_encoding e;
    tok_encoding_init(&e);
    encode(t, s, 101, &e);
    check_ids(&e, (const int32_t[]){101, 100, 102}, 3, "101 x a");
    CHECK_EQ_INT(e.start[1], 0);
    CHECK_EQ_INT(e.stop[1], 101);
    encode(t, s, 100, &e);
    CHECK(e.n > 3);
    for (size_t i = 1; i + 1 < e.n; i++)
        CHECK(e.ids[i] != 100);
    /* A word made only of unknown characters is one [UNK] as well. */
    encode(t, "\xe2\x98\x83\xe2\x98\x83x", 7, &e);
    check_ids(&e, (const int32_t[]){101, 100, 102}, 3, "snowmen");
    tok_encoding_free(&e);
    tok_tokenizer_free(t);
}

/* 200k combining marks of alternating classes: canonical ordering must stay
 * linear, and the dropped marks' bytes go to the "a" before them. */
TEST(wordpiece_zalgo_is_linear)
{
    tok_tokenizer *t = load_or_fail(TINY_DIR);
    if (!t)
        return;
    size_t n = 1 + 4 * 100000;
    char *s = malloc(n);
    CHECK(s != NULL);
    if (!s) {
        tok_tokenizer_free(t);
        return;
    }
    s[0] = 'a';
    for (size_t i = 1; i < n; i += 4)
        memcpy(s + i, "\xcc\x81\xcc\x96", 4); /* U+0301 (class 230), U+0316 (220) */
    tok_encoding e;
    tok_encoding_init(&e);
    encode(t, s, n, &e);
    check_ids(&e, (const int32_t[]){101, 1037, 102}, 3, "a + 200k marks");
    CHECK_EQ_INT(e.stop[1], n);
    tok_encoding_free(&e);
    free(s);
    tok_tokenizer_free(t);
}

/* Special-token strings typed in the text are those tokens, as in HF. */
TEST(wordpiece_typed_special_tokens)
{
    tok_tokenizer *t = load_or_fail(TINY_DIR);
    if (!t)
        return;
    tok_encoding e, w;
    tok_encoding_init(&e);
    tok_encoding_init(&w);
    const char *s = "hello [SEP]world[MASK]";
    encode(t, s, strlen(s), &e);
    encode(t, "hello world", 11, &w);
    CHECK_EQ_INT(e.n, 6);
    CHECK(e.n == 6 && w.n == 4 && e.ids[1] == w.ids[1] && e.ids[2] == 102 &&
          e.ids[3] == w.ids[2] && e.ids[4] == 103);
    check_span(&e, 2, s, "[SEP]");
    CHECK(!e.special[2] && e.special[5]);
    encode(t, "[sep]", 5, &e); /* lowercase: not special, split on punctuation */
    CHECK(e.n == 5 && e.ids[1] != 102);
    tok_encoding_free(&e);
    tok_encoding_free(&w);
    tok_tokenizer_free(t);
}

TEST(wordpiece_demo_model)
{
    tok_tokenizer *t = load_or_fail(DEMO_DIR);
    if (!t)
        return;
    tok_encoding e;
    tok_encoding_init(&e);
    const char *s = "a gripping, beautifully acted film";
    encode(t, s, strlen(s), &e);
    check_ids(&e, (const int32_t[]){101, 1037, 13940, 1010, 17950, 6051, 2143, 102}, 8, s);
    tok_encoding_free(&e);
    tok_tokenizer_free(t);
}

TEST(wordpiece_fields_and_token_bytes)
{
    tok_tokenizer *t = load_or_fail(TINY_DIR);
    if (!t)
        return;
    CHECK_EQ_INT(t->vocab_size, 30522);
    CHECK_EQ_INT(t->model_max_length, 512);
    CHECK_EQ_INT(t->pad_id, 0);
    CHECK_EQ_INT(t->unk_id, 100);
    CHECK_EQ_INT(t->bos_id, 101);
    CHECK_EQ_INT(t->eos_id, 102);
    size_t n = 0;
    CHECK_STR(t->ops->id_to_token(t, 101, &n), "[CLS]");
    CHECK(t->ops->id_to_token(t, 30522, &n) == NULL && t->ops->id_to_token(t, -1, &n) == NULL);

    tok_encoding e;
    tok_encoding_init(&e);
    encode(t, "Ångström", strlen("Ångström"), &e);
    char buf[16];
    CHECK_EQ_INT(t->ops->token_bytes(t, e.ids[2], buf, sizeof buf), 5);
    CHECK(memcmp(buf, "strom", 5) == 0);
    CHECK_EQ_INT(t->ops->token_bytes(t, 101, buf, sizeof buf), 5);
    CHECK(memcmp(buf, "[CLS]", 5) == 0);
    CHECK_EQ_INT(t->ops->token_bytes(t, e.ids[2], buf, 2), 5); /* reports the full size */
    CHECK_EQ_INT(t->ops->token_bytes(t, 99999, buf, sizeof buf), 0);
    tok_encoding_free(&e);
    tok_tokenizer_free(t);
}

/* ------------------------------------------------- configuration variants */

static const char tiny_vocab[] =
    "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n\xc3\xa9\ne\nhello\nHello\n##\xcc\x81\r\n"
    "\xc3\x89\rcafe\n";
/* ids:  0      1      2      3      4      5="é"   6="e" 7      8      9="##◌́"
 *       10="É" 11="cafe" (CRLF and a lone CR end lines too, as in Python) */

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    CHECK_MSG(f, "cannot write %s", path);
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void remove_dir(const char *dir)
{
    static const char *const names[] = {"vocab.txt", "tokenizer_config.json",
                                        "special_tokens_map.json"};
    char path[512];
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
}

/* Loads a folder holding tiny_vocab and config (NULL: no config file) and
 * returns the ids of text without special tokens in e. */
static tok_tokenizer *load_tiny(char *dir, const char *config)
{
    strcpy(dir, "/tmp/predictd-wp-XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    write_file(dir, "vocab.txt", tiny_vocab);
    if (config)
        write_file(dir, "tokenizer_config.json", config);
    return load_or_fail(dir);
}

static void check_tiny(tok_tokenizer *t, const char *text, const int32_t *want, size_t n)
{
    tok_encoding e;
    tok_encoding_init(&e);
    tok_encode_opts opts = {0};
    eng_err err = {0};
    CHECK_MSG(tok_encode(t, text, strlen(text), &opts, &e, &err) == 0, "%s", err.msg);
    check_ids(&e, want, n, text);
    tok_encoding_free(&e);
}

TEST(wordpiece_config_variants)
{
    char dir[64];
    /* No config: uncased, accents stripped. */
    tok_tokenizer *t = load_tiny(dir, NULL);
    if (t) {
        CHECK_EQ_INT(t->vocab_size, 12);
        CHECK_EQ_INT(t->model_max_length, 0);
        check_tiny(t, "\xc3\x89 Hello CAFE", (const int32_t[]){6, 7, 11}, 3);
    }
    tok_tokenizer_free(t);
    remove_dir(dir);

    /* Cased, legacy AddedToken objects, the "no limit" sentinel: NFC joins
     * e + U+0301 into é, and nothing is lowercased or stripped. */
    t = load_tiny(dir, "{\"do_lower_case\": false, \"model_max_length\": "
                       "1000000000000000019884624838656, \"unk_token\": {\"__type\": "
                       "\"AddedToken\", \"content\": \"[UNK]\", \"lstrip\": false}}");
    if (t) {
        CHECK_EQ_INT(t->model_max_length, 0);
        CHECK_EQ_INT(t->unk_id, 1);
        check_tiny(t, "Hello e\xcc\x81 \xc3\x89 hello", (const int32_t[]){8, 5, 10, 7}, 4);
        /* HF's never_split keeps a special that cleaning joins ("[SE" U+200B "P]"). */
        check_tiny(t, "[SE\xe2\x80\x8bP]", (const int32_t[]){3}, 1);
    }
    tok_tokenizer_free(t);
    remove_dir(dir);

    /* Lowercased but accents kept (strip_accents false). */
    t = load_tiny(dir, "{\"model_max_length\": 512, \"do_lower_case\": true, "
                       "\"strip_accents\": false}");
    if (t) {
        CHECK_EQ_INT(t->model_max_length, 512);
        check_tiny(t, "\xc3\x89 E\xcc\x81", (const int32_t[]){5, 5}, 2);
    }
    tok_tokenizer_free(t);
    remove_dir(dir);

    /* A special token renamed to one the vocab lacks is -1, not a crash. */
    t = load_tiny(dir, "{\"pad_token\": \"<pad>\", \"mask_token\": null}");
    if (t) {
        CHECK_EQ_INT(t->pad_id, -1);
        check_tiny(t, "[MASK]", (const int32_t[]){1, 1, 1}, 3); /* "[" "mask" "]" */
    }
    tok_tokenizer_free(t);
    remove_dir(dir);
}

TEST(wordpiece_load_errors)
{
    tok_tokenizer *t = (tok_tokenizer *)1;
    eng_err err = {0};
    int rc = tok_wordpiece_load("/nonexistent/predictd-model", &t, &err);
    CHECK_EQ_INT(rc, ENG_ENOTFOUND);
    CHECK(t == NULL);
    CHECK_MSG(strstr(err.msg, "/nonexistent/predictd-model/vocab.txt"), "message: %s", err.msg);

    static const struct {
        const char *config, *needle;
        int code;
    } bad[] = {
        {"{\"do_lower_case\": ", "tokenizer_config.json", ENG_EFORMAT},
        {"[1, 2]", "expected a JSON object", ENG_EFORMAT},
        {"{\"do_lower_case\": \"yes\"}", "do_lower_case", ENG_EFORMAT},
        {"{\"strip_accents\": 1}", "strip_accents", ENG_EFORMAT},
        {"{\"unk_token\": 5}", "unk_token", ENG_EFORMAT},
        {"{\"do_basic_tokenize\": false}", "do_basic_tokenize", ENG_EUNSUPPORTED},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char dir[64] = "/tmp/predictd-wp-XXXXXX";
        CHECK(mkdtemp(dir) != NULL);
        write_file(dir, "vocab.txt", tiny_vocab);
        write_file(dir, "tokenizer_config.json", bad[i].config);
        t = NULL;
        rc = tok_wordpiece_load(dir, &t, &err);
        CHECK_MSG(rc == bad[i].code && !t, "case %zu: rc %d", i, rc);
        CHECK_MSG(strstr(err.msg, bad[i].needle), "case %zu: message \"%s\"", i, err.msg);
        remove_dir(dir);
    }

    char dir[64] = "/tmp/predictd-wp-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    write_file(dir, "vocab.txt", "");
    rc = tok_wordpiece_load(dir, &t, &err);
    CHECK_EQ_INT(rc, ENG_EFORMAT);
    CHECK_MSG(strstr(err.msg, "empty"), "message: %s", err.msg);
    write_file(dir, "vocab.txt", "ok\n\xff\n");
    rc = tok_wordpiece_load(dir, &t, &err);
    CHECK_EQ_INT(rc, ENG_EFORMAT);
    CHECK_MSG(strstr(err.msg, "UTF-8"), "message: %s", err.msg);
    remove_dir(dir);
}
