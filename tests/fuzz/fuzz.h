/* Helpers shared by the libFuzzer targets in tests/fuzz (each fuzz_<name>.c is
 * one program: see tests/fuzz/run.sh).
 *
 * Fixtures are found through $PREDICTD_FIXTURES, else relative to this file's
 * own path (run.sh compiles with absolute paths, so a target runs from any
 * directory), else as tests/fixtures under the current directory.
 *
 * Everything a target loads once (models, tokenizers) stays reachable from a
 * static pointer for the life of the process, which LeakSanitizer does not
 * count as a leak; everything an input allocates is freed before the input
 * returns, so that libFuzzer's per-input leak check stays meaningful. */
#ifndef FUZZ_H
#define FUZZ_H

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "models/model.h"
#include "server/reply.h"

/* The fixtures folder, without a trailing slash. */
static inline const char *fuzz_fixtures(void)
{
    static char dir[PATH_MAX];
    if (dir[0])
        return dir;
    const char *env = getenv("PREDICTD_FIXTURES");
    struct stat sb;
    if (env && *env) {
        snprintf(dir, sizeof dir, "%s", env);
        return dir;
    }
    const char *self = __FILE__; /* .../tests/fuzz/fuzz.h */
    const char *slash = strrchr(self, '/');
    if (slash) {
        snprintf(dir, sizeof dir, "%.*s/../fixtures", (int)(slash - self), self);
        if (stat(dir, &sb) == 0)
            return dir;
    }
    snprintf(dir, sizeof dir, "tests/fixtures");
    return dir;
}

/* <fixtures>/<name> into buf. */
static inline const char *fuzz_fixture_path(const char *name, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/%s", fuzz_fixtures(), name);
    return buf;
}

/* Loads a fixture model or stops the process: a target without its model
 * would fuzz nothing. */
static inline model *fuzz_load_model(const char *name)
{
    char dir[PATH_MAX];
    fuzz_fixture_path(name, dir, sizeof dir);
    model *m = NULL;
    eng_err err = {0};
    if (model_load(dir, NULL, &m, &err)) {
        fprintf(stderr, "fuzz: cannot load %s: %s\n", dir, err.msg);
        abort();
    }
    return m;
}

/* A byte reader over the input: the first bytes choose options, the rest is
 * the payload. Reading past the end yields zeros. */
typedef struct fuzz_in {
    const uint8_t *p;
    size_t n;
} fuzz_in;

static inline uint8_t fuzz_byte(fuzz_in *in)
{
    if (!in->n)
        return 0;
    in->n--;
    return *in->p++;
}

/* Takes up to want bytes off the front. */
static inline const uint8_t *fuzz_take(fuzz_in *in, size_t want, size_t *got)
{
    const uint8_t *p = in->p;
    *got = want < in->n ? want : in->n;
    in->p += *got;
    in->n -= *got;
    return p;
}

/* An exact-size heap copy (no NUL after it), so that ASan sees a read one
 * byte past the end of a length-delimited string. len 0 still allocates. */
static inline char *fuzz_copy(const void *p, size_t len)
{
    char *s = malloc(len ? len : 1);
    if (!s)
        abort();
    if (len)
        memcpy(s, p, len);
    return s;
}

/* A NUL-terminated heap copy, for APIs that take C strings. */
static inline char *fuzz_cstr(const void *p, size_t len)
{
    char *s = malloc(len + 1);
    if (!s)
        abort();
    if (len)
        memcpy(s, p, len);
    s[len] = '\0';
    return s;
}

/* Checks a condition the code under test promises; a broken promise is a
 * finding, so it aborts (and libFuzzer saves the input). */
#define FUZZ_CHECK(cond)                                                           \
    do {                                                                           \
        if (!(cond)) {                                                             \
            fprintf(stderr, "%s:%d: FUZZ_CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
            abort();                                                               \
        }                                                                          \
    } while (0)

/* Whether s[0..len) is valid UTF-8 (RFC 3629: no overlongs, surrogates or
 * code points past U+10FFFF), written here independently of the tokenizers'
 * own check so that it can serve as an oracle for them. */
static inline int fuzz_utf8_valid(const uint8_t *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        size_t n;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            n = 2, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            n = 3, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            n = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (len - i < n)
            return 0;
        for (size_t k = 1; k < n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += n;
    }
    return 1;
}

/* Options for a tokenizer run from the input's first bytes: byte 0 bit 0 =
 * add_special, bit 1 = a max_len of 1 + byte 1 % 64. */
static inline tok_encode_opts fuzz_tok_opts(fuzz_in *in)
{
    uint8_t flags = fuzz_byte(in);
    tok_encode_opts o = {.add_special = flags & 1};
    if (flags & 2)
        o.max_len = 1 + fuzz_byte(in) % 64;
    return o;
}

/* What every tokenizer promises of an encoding of text[0..len): ids in the
 * vocabulary, spans inside the text, max_len kept; and encoding again into a
 * used tok_encoding gives the same result. Returns the encode's status, which
 * must be 0 exactly for valid UTF-8 (except that a max_len too small for the
 * special tokens is refused). */
static inline int fuzz_tok_encode_checked(const tok_tokenizer *t, const char *text, size_t len,
                                          const tok_encode_opts *o, tok_encoding *enc)
{
    eng_err err = {0};
    int rc = tok_encode(t, text, len, o, enc, &err);
    int valid = fuzz_utf8_valid((const uint8_t *)text, len);
    FUZZ_CHECK(valid == (tok_utf8_validate(text, len) == len));
    if (rc) {
        /* max_len 1 cannot hold [CLS] and [SEP]: refused, whatever the text. */
        bool no_room = o->add_special && o->max_len == 1 && rc == ENG_EINVAL;
        FUZZ_CHECK((no_room || (!valid && rc == ENG_EFORMAT)) && err.code == rc && err.msg[0]);
        return rc;
    }
    FUZZ_CHECK(valid);
    FUZZ_CHECK(o->max_len == 0 ? enc->n_untruncated == enc->n
                               : enc->n <= o->max_len && enc->n_untruncated >= enc->n);
    for (size_t i = 0; i < enc->n; i++) {
        FUZZ_CHECK(enc->ids[i] >= 0 && (size_t)enc->ids[i] < t->vocab_size);
        FUZZ_CHECK(enc->start[i] <= enc->stop[i] && enc->stop[i] <= len);
        FUZZ_CHECK(enc->special[i] <= 1);
    }
    tok_encoding again;
    tok_encoding_init(&again);
    FUZZ_CHECK(tok_encode(t, "x", 1, o, &again, NULL) == 0); /* leave something behind */
    FUZZ_CHECK(tok_encode(t, text, len, o, &again, NULL) == 0);
    FUZZ_CHECK(again.n == enc->n && again.n_untruncated == enc->n_untruncated);
    for (size_t i = 0; i < enc->n; i++)
        FUZZ_CHECK(again.ids[i] == enc->ids[i] && again.start[i] == enc->start[i] &&
                   again.stop[i] == enc->stop[i] && again.special[i] == enc->special[i]);
    tok_encoding_free(&again);
    return 0;
}

/* Whether two encodings are the same, field by field. */
static inline int fuzz_tok_same(const tok_encoding *a, const tok_encoding *b)
{
    if (a->n != b->n || a->n_untruncated != b->n_untruncated)
        return 0;
    for (size_t i = 0; i < a->n; i++)
        if (a->ids[i] != b->ids[i] || a->start[i] != b->start[i] || a->stop[i] != b->stop[i] ||
            a->special[i] != b->special[i])
            return 0;
    return 1;
}

/* Whether s[0..len) is one JSON value (jansson is the tests' own JSON reader
 * here, independent of the server's writer in server/buf.c). Integers past
 * int64 (a u64 seed) are JSON too: they are read as reals. */
static inline int fuzz_json_valid(const char *s, size_t len)
{
    json_error_t e;
    json_t *v = json_loadb(s, len, JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &e);
    if (!v)
        return 0;
    json_decref(v);
    return 1;
}

/* Each "data:" event of a stream is JSON, except OpenAI's closing [DONE]. */
static inline void fuzz_check_events(const srv_buf *b)
{
    const char *p = b->data ? b->data : "", *end = p + b->len;
    while (p < end) {
        FUZZ_CHECK(strncmp(p, "data:", 5) == 0);
        const char *stop = strstr(p, "\n\n");
        FUZZ_CHECK(stop != NULL);
        const char *json = p + 5 + (p[5] == ' ');
        if (strncmp(json, "[DONE]", 6) != 0 && !fuzz_json_valid(json, (size_t)(stop - json))) {
            fprintf(stderr, "fuzz: event is not JSON: %.*s\n", (int)(stop - p), p);
            abort();
        }
        p = stop + 2;
    }
}

/* A target's one-time set-up must succeed: otherwise it says why and stops. */
static inline void fuzz_require(int rc, const eng_err *err)
{
    if (rc) {
        fprintf(stderr, "fuzz: %s\n", err->msg);
        abort();
    }
}

/* Every answer predictd writes has a status, and a JSON one parses. */
static inline void fuzz_check_reply(const srv_reply *r)
{
    FUZZ_CHECK(r->status >= 100 && r->status <= 599);
    FUZZ_CHECK(!r->body.oom);
    if (!r->content_type || strncmp(r->content_type, "application/json", 16) != 0)
        return;
    if (!fuzz_json_valid(r->body.data ? r->body.data : "", r->body.len)) {
        fprintf(stderr, "fuzz: status %d body is not JSON: %.*s\n", r->status,
                (int)(r->body.len > 2000 ? 2000 : r->body.len), r->body.data);
        abort();
    }
}

#endif
