/* BERT WordPiece tokenizer: see tok_wordpiece.h for the behaviour it matches.
 *
 * Encoding is one pass over the input. Each input character is lowercased,
 * cleaned and classified on its own and appended to the current word together
 * with the input bytes it came from; at a word boundary the word is normalised
 * (NFD or NFC, carrying those byte spans along), split on punctuation and cut
 * into WordPiece pieces. Every piece's offsets are then the union of the spans
 * of its characters, so they always point into the caller's original text. */
#include "models/tok_wordpiece.h"

#include <assert.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <utf8proc.h>

#include "engine/strmap.h"

/* HF WordpieceTokenizer.max_input_chars_per_word. */
#define WP_MAX_WORD_CHARS 100
/* No canonical decomposition is longer than 4 code points; keep headroom. */
#define WP_MAX_DECOMP 16

/* The special tokens BertTokenizer knows. */
enum { WP_UNK, WP_SEP, WP_PAD, WP_CLS, WP_MASK, WP_N_SPECIAL };

static const struct {
    const char *key;  /* field in tokenizer_config.json and special_tokens_map.json */
    const char *dflt; /* BertTokenizer's default string */
} wp_special_fields[WP_N_SPECIAL] = {
    [WP_UNK] = {"unk_token", "[UNK]"},   [WP_SEP] = {"sep_token", "[SEP]"},
    [WP_PAD] = {"pad_token", "[PAD]"},   [WP_CLS] = {"cls_token", "[CLS]"},
    [WP_MASK] = {"mask_token", "[MASK]"},
};

typedef struct wp_tokenizer {
    tok_tokenizer base; /* first, so a tok_tokenizer * casts back */
    eng_strmap vocab;   /* token -> id; a repeated line keeps its last id, like HF's dict */
    char *text;         /* vocab.txt's bytes, every line NUL-terminated in place */
    uint32_t *tok_off;  /* (vocab_size) byte offset of token id in text */
    uint32_t *tok_len;  /* (vocab_size) its length in bytes */
    size_t max_tok_len; /* longest token in bytes: longer candidates need no lookup */
    char *special[WP_N_SPECIAL];     /* special token strings, NULL when disabled */
    size_t special_len[WP_N_SPECIAL];
    int32_t special_id[WP_N_SPECIAL]; /* their vocab ids, -1 when absent */
    bool special_first[256];          /* bytes a special token can start with */
    bool lower, strip_accents, chinese;
} wp_tokenizer;

/* ---------------------------------------------------------------- loading */

static int path_join(char *buf, size_t cap, const char *dir, const char *name, eng_err *err)
{
    int n = snprintf(buf, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= cap)
        return eng_err_set(err, ENG_EINVAL, "model folder path is too long: %s", dir);
    return 0;
}

/* Reads path into a malloc'd NUL-terminated buffer that the caller frees. */
static int read_file(const char *path, char **out, size_t *len, eng_err *err)
{
    struct stat st;
    FILE *f = fopen(path, "rb");
    if (!f || fstat(fileno(f), &st) != 0) {
        int e = errno;
        if (f)
            fclose(f);
        return eng_err_set(err, e == ENOENT ? ENG_ENOTFOUND : ENG_EIO, "cannot open %s: %s",
                           path, strerror(e));
    }
    size_t n = (size_t)st.st_size; /* offsets into it are uint32_t */
    char *buf = n < UINT32_MAX ? malloc(n + 1) : NULL;
    bool ok = buf && fread(buf, 1, n, f) == n;
    fclose(f);
    if (!ok) {
        int code = !buf ? ENG_ENOMEM : ENG_EIO;
        free(buf);
        return eng_err_set(err, code, "cannot read %s (%zu bytes)", path, n);
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

/* Splits vocab.txt into lines the way Python's text-mode readlines() does
 * (\n, \r\n and a lone \r all end a line); line number i is token id i. */
static int vocab_load(wp_tokenizer *t, const char *path, eng_err *err)
{
    size_t len = 0;
    int rc = read_file(path, &t->text, &len, err);
    if (rc)
        return rc;
    char *s = t->text;
    size_t bad = tok_utf8_validate(s, len);
    if (bad < len)
        return eng_err_set(err, ENG_EFORMAT, "%s: invalid UTF-8 at byte %zu", path, bad);
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += s[i] == '\n' || (s[i] == '\r' && (i + 1 == len || s[i + 1] != '\n'));
    n += len && s[len - 1] != '\n' && s[len - 1] != '\r';
    if (n == 0)
        return eng_err_set(err, ENG_EFORMAT, "%s is empty", path);
    t->tok_off = malloc(n * sizeof *t->tok_off);
    t->tok_len = malloc(n * sizeof *t->tok_len);
    if (!t->tok_off || !t->tok_len)
        return eng_err_set(err, ENG_ENOMEM, "out of memory loading %s", path);
    size_t id = 0, start = 0;
    for (size_t i = 0; i <= len && id < n; i++) {
        if (i < len && s[i] != '\n' && s[i] != '\r')
            continue;
        bool crlf = i + 1 < len && s[i] == '\r' && s[i + 1] == '\n';
        s[i] = '\0';
        t->tok_off[id] = (uint32_t)start;
        t->tok_len[id] = (uint32_t)(i - start);
        if (i - start > t->max_tok_len)
            t->max_tok_len = i - start;
        if (eng_strmap_put(&t->vocab, s + start, i - start, (int32_t)id))
            return eng_err_set(err, ENG_ENOMEM, "out of memory loading %s", path);
        id++;
        i += crlf;
        start = i + 1;
    }
    t->base.vocab_size = n;
    return 0;
}

/* Parses an optional JSON object file; *root stays NULL when it does not exist. */
static int json_open(const char *path, json_t **root, eng_err *err)
{
    *root = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        if (e == ENOENT)
            return 0;
        return eng_err_set(err, ENG_EIO, "cannot open %s: %s", path, strerror(e));
    }
    json_error_t je;
    /* Reals, because model_max_length may hold 1e30, past any json_int_t. */
    json_t *j = json_loadf(f, JSON_DECODE_INT_AS_REAL, &je);
    fclose(f);
    if (!j)
        return eng_err_set(err, ENG_EFORMAT, "%s:%d:%d: %s", path, je.line, je.column, je.text);
    if (!json_is_object(j)) {
        json_decref(j);
        return eng_err_set(err, ENG_EFORMAT, "%s: expected a JSON object", path);
    }
    *root = j;
    return 0;
}

/* Reads an optional flag into *val as 1 or 0; absent or null leaves it alone. */
static int json_flag(json_t *root, const char *path, const char *key, int *val, eng_err *err)
{
    json_t *v = json_object_get(root, key);
    if (v && !json_is_null(v) && !json_is_boolean(v))
        return eng_err_set(err, ENG_EFORMAT, "%s: \"%s\" must be true, false or null", path, key);
    if (json_is_boolean(v))
        *val = json_is_true(v);
    return 0;
}

/* Reads the special-token fields present in root into t->special. A field is a
 * string, an AddedToken object ({"__type": "AddedToken", "content": ...}, or
 * the newer form without __type), or null for "this tokenizer has none". */
static int specials_read(wp_tokenizer *t, json_t *root, const char *path, eng_err *err)
{
    for (int k = 0; k < WP_N_SPECIAL; k++) {
        const char *key = wp_special_fields[k].key;
        json_t *v = json_object_get(root, key);
        if (!v)
            continue;
        if (json_is_object(v))
            v = json_object_get(v, "content");
        if (!json_is_null(v) && !json_is_string(v))
            return eng_err_set(err, ENG_EFORMAT,
                               "%s: \"%s\" must be a string or an AddedToken object", path, key);
        char *s = json_is_string(v) ? strdup(json_string_value(v)) : NULL;
        if (json_is_string(v) && !s)
            return eng_err_set(err, ENG_ENOMEM, "out of memory reading %s", path);
        free(t->special[k]);
        t->special[k] = s;
    }
    return 0;
}

static int config_fields(wp_tokenizer *t, json_t *root, const char *path, eng_err *err)
{
    int lower = 1, strip = -1, chinese = 1, basic = 1; /* strip -1: follow lower, as HF */
    const struct {
        const char *key;
        int *val;
    } flags[] = {{"do_lower_case", &lower},
                 {"strip_accents", &strip},
                 {"tokenize_chinese_chars", &chinese},
                 {"do_basic_tokenize", &basic}};
    for (size_t i = 0; i < sizeof flags / sizeof *flags; i++) {
        int rc = json_flag(root, path, flags[i].key, flags[i].val, err);
        if (rc)
            return rc;
    }
    if (!basic)
        return eng_err_set(err, ENG_EUNSUPPORTED, "%s: do_basic_tokenize=false is not supported",
                           path);
    t->lower = lower;
    t->chinese = chinese;
    t->strip_accents = strip < 0 ? lower : strip;
    /* HF writes int(1e30) when a model has no limit; anything that large is none. */
    json_t *v = json_object_get(root, "model_max_length");
    if (v && !json_is_null(v) && !json_is_number(v))
        return eng_err_set(err, ENG_EFORMAT, "%s: \"model_max_length\" must be a number", path);
    double d = json_number_value(v); /* 0 when absent */
    t->base.model_max_length = d >= 1 && d <= 1e9 ? (size_t)d : 0;
    return specials_read(t, root, path, err);
}

static int config_load(wp_tokenizer *t, const char *dir, eng_err *err)
{
    static const char *const files[] = {"tokenizer_config.json", "special_tokens_map.json"};
    char path[PATH_MAX];
    t->lower = t->chinese = t->strip_accents = true;
    for (int k = 0; k < WP_N_SPECIAL; k++)
        if (!(t->special[k] = strdup(wp_special_fields[k].dflt)))
            return eng_err_set(err, ENG_ENOMEM, "out of memory loading a tokenizer");
    /* special_tokens_map.json is read second so that it wins, as in HF. */
    for (size_t f = 0; f < sizeof files / sizeof *files; f++) {
        json_t *root;
        int rc = path_join(path, sizeof path, dir, files[f], err);
        if (!rc)
            rc = json_open(path, &root, err);
        if (rc)
            return rc;
        if (!root)
            continue;
        rc = f == 0 ? config_fields(t, root, path, err) : specials_read(t, root, path, err);
        json_decref(root);
        if (rc)
            return rc;
    }
    return 0;
}

static void specials_resolve(wp_tokenizer *t)
{
    for (int k = 0; k < WP_N_SPECIAL; k++) {
        const char *s = t->special[k];
        t->special_len[k] = s ? strlen(s) : 0;
        t->special_id[k] = t->special_len[k] ? eng_strmap_get(&t->vocab, s, t->special_len[k]) : -1;
        if (t->special_len[k])
            t->special_first[(unsigned char)s[0]] = true;
    }
    t->base.unk_id = t->special_id[WP_UNK];
    t->base.pad_id = t->special_id[WP_PAD];
    t->base.bos_id = t->special_id[WP_CLS];
    t->base.eos_id = t->special_id[WP_SEP];
}

/* ----------------------------------------------------- character classes */

/* _clean_text drops U+0000, U+FFFD and every C* category but \t \n \r. */
static bool is_dropped(int32_t cp, const utf8proc_property_t *p)
{
    if (cp == 0 || cp == 0xfffd)
        return true;
    if (cp == '\t' || cp == '\n' || cp == '\r')
        return false;
    return p->category == UTF8PROC_CATEGORY_CN || p->category >= UTF8PROC_CATEGORY_CC;
}

/* HF turns \t \n \r and Zs into spaces, then splits with Python's str.split(),
 * whose whitespace is Zs plus the bidi classes WS, B and S (which adds U+2028
 * and U+2029 to what survives cleaning). */
static bool is_space(int32_t cp, const utf8proc_property_t *p)
{
    return cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r' ||
           p->category == UTF8PROC_CATEGORY_ZS || p->bidi_class == UTF8PROC_BIDI_CLASS_WS ||
           p->bidi_class == UTF8PROC_BIDI_CLASS_B || p->bidi_class == UTF8PROC_BIDI_CLASS_S;
}

/* HF's _is_chinese_char: the CJK Unified Ideographs blocks, not all CJK. */
static bool is_cjk(int32_t cp)
{
    return (cp >= 0x4e00 && cp <= 0x9fff) || (cp >= 0x3400 && cp <= 0x4dbf) ||
           (cp >= 0x20000 && cp <= 0x2a6df) || (cp >= 0x2a700 && cp <= 0x2b73f) ||
           (cp >= 0x2b740 && cp <= 0x2b81f) || (cp >= 0x2b820 && cp <= 0x2ceaf) ||
           (cp >= 0xf900 && cp <= 0xfaff) || (cp >= 0x2f800 && cp <= 0x2fa1f);
}

/* HF counts every non-alphanumeric ASCII character as punctuation, plus P*. */
static bool is_punct(int32_t cp)
{
    if ((cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) ||
        (cp >= 123 && cp <= 126))
        return true;
    utf8proc_category_t c = utf8proc_category(cp);
    return c >= UTF8PROC_CATEGORY_PC && c <= UTF8PROC_CATEGORY_PO;
}

static int ccc(int32_t cp)
{
    return utf8proc_get_property(cp)->combining_class;
}

/* ------------------------------------------------- per-call scratch state */

/* One normalised code point and the input bytes [beg, end) it came from. */
typedef struct wp_char {
    int32_t cp;
    uint32_t beg, end;
} wp_char;

typedef struct wp_buf {
    wp_char *c; /* (cap) */
    size_t n, cap;
} wp_buf;

/* The state of one encode() call; the tokenizer itself stays read-only. */
typedef struct wp_run {
    const wp_tokenizer *t;
    tok_encoding *out;
    size_t keep;     /* pieces to store; later ones are only counted */
    size_t stop;     /* pieces after which reading stops (count_max) */
    size_t count;    /* pieces produced, stored or not */
    wp_buf word;     /* the current word: cleaned, lowercased input characters */
    wp_buf norm;     /* the word after NFD or NFC */
    bool word_ascii; /* the word is ASCII, which no normalisation changes */
    eng_err *err;
} wp_run;

static int buf_reserve(wp_buf *b, size_t need, eng_err *err)
{
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    wp_char *c = realloc(b->c, cap * sizeof *c);
    if (!c)
        return eng_err_set(err, ENG_ENOMEM, "out of memory tokenizing a word of %zu characters",
                           need);
    b->c = c;
    b->cap = cap;
    return 0;
}

static int buf_push(wp_buf *b, int32_t cp, uint32_t beg, uint32_t end, eng_err *err)
{
    int rc = buf_reserve(b, b->n + 1, err);
    if (!rc)
        b->c[b->n++] = (wp_char){cp, beg, end};
    return rc;
}

/* Makes c cover the input bytes of part as well. */
static void widen(wp_char *c, wp_char part)
{
    c->beg = part.beg < c->beg ? part.beg : c->beg;
    c->end = part.end > c->end ? part.end : c->end;
}

/* --------------------------------------------------------- normalisation */

/* Sorts one run of combining marks by combining class, keeping equal classes
 * in order (canonical ordering). A counting sort keeps the work linear even
 * for a run of 100k marks (Zalgo text, or an attack). */
static int sort_marks(wp_char *c, size_t n, wp_buf *tmp, eng_err *err)
{
    int rc = buf_reserve(tmp, n, err);
    if (rc)
        return rc;
    size_t at[257] = {0}; /* at[k]: where the next mark of class k goes */
    for (size_t i = 0; i < n; i++)
        at[ccc(c[i].cp) + 1]++;
    for (int k = 1; k < 257; k++)
        at[k] += at[k - 1];
    for (size_t i = 0; i < n; i++)
        tmp->c[at[ccc(c[i].cp)]++] = c[i];
    memcpy(c, tmp->c, n * sizeof *c);
    return 0;
}

/* NFD of r->word into r->norm: each character's full canonical decomposition
 * (every part keeps the character's span), then canonical ordering. r->word
 * serves as the sort's scratch afterwards, so it is spent. */
static int decompose(wp_run *r)
{
    wp_buf *in = &r->word, *out = &r->norm;
    out->n = 0;
    for (size_t i = 0; i < in->n; i++) {
        utf8proc_int32_t d[WP_MAX_DECOMP];
        int boundclass = 0;
        utf8proc_ssize_t k =
            utf8proc_decompose_char(in->c[i].cp, d, WP_MAX_DECOMP, UTF8PROC_DECOMPOSE, &boundclass);
        assert(k >= 1 && k <= WP_MAX_DECOMP);
        for (utf8proc_ssize_t j = 0; j < k; j++) {
            int rc = buf_push(out, d[j], in->c[i].beg, in->c[i].end, r->err);
            if (rc)
                return rc;
        }
    }
    for (size_t i = 0; i < out->n;) {
        size_t j = i;
        while (j < out->n && ccc(out->c[j].cp))
            j++;
        if (j > i + 1) {
            int rc = sort_marks(out->c + i, j - i, in, r->err);
            if (rc)
                return rc;
        }
        i = j > i ? j : i + 1;
    }
    return 0;
}

/* The composite of starter a and b, or -1. utf8proc has no pair lookup, so
 * this composes a two-character buffer, which uses NFC's own table, Hangul
 * and composition exclusions included. */
static int32_t compose_pair(int32_t a, int32_t b)
{
    utf8proc_int32_t p[2] = {a, b};
    return utf8proc_normalize_utf32(p, 2, UTF8PROC_COMPOSE | UTF8PROC_STABLE) == 1 ? p[0] : -1;
}

/* Canonical composition of an NFD buffer (NFD + this = NFC). A composite
 * covers the spans of both its parts. */
static void compose(wp_buf *b)
{
    size_t w = 0, starter = SIZE_MAX;
    int last_cc = -1; /* highest class since the starter; -1: none yet (adjacent) */
    for (size_t i = 0; i < b->n; i++) {
        wp_char c = b->c[i];
        int cc = ccc(c.cp);
        if (starter != SIZE_MAX && cc > last_cc) {
            int32_t p = compose_pair(b->c[starter].cp, c.cp);
            if (p >= 0) {
                b->c[starter].cp = p;
                widen(&b->c[starter], c);
                continue;
            }
        }
        if (cc == 0) {
            starter = w;
            last_cc = -1;
        } else if (cc > last_cc) {
            last_cc = cc;
        }
        b->c[w++] = c;
    }
    b->n = w;
}

/* _run_strip_accents after NFD: drop the nonspacing marks. A dropped mark's
 * bytes go to the character before it (as HF's fast tokenizers align them), so
 * "cafe" + U+0301 still covers the whole input word. */
static void drop_marks(wp_buf *b)
{
    size_t w = 0;
    for (size_t i = 0; i < b->n; i++) {
        wp_char c = b->c[i];
        if (utf8proc_category(c.cp) != UTF8PROC_CATEGORY_MN)
            b->c[w++] = c;
        else if (w > 0)
            widen(&b->c[w - 1], c);
    }
    b->n = w;
}

/* -------------------------------------------------------------- WordPiece */

/* Not an error: emit's way to stop the scan once count_max is passed. */
#define WP_ENOUGH 1

/* Counts a piece and stores it unless truncation has cut it; id -1 is [UNK]. */
static int emit(wp_run *r, int32_t id, uint32_t beg, uint32_t end)
{
    id = id >= 0 ? id : r->t->base.unk_id;
    if (id < 0)
        return eng_err_set(r->err, ENG_EFORMAT,
                           "text at byte %u needs the unknown token, which vocab.txt lacks", beg);
    if (r->count++ < r->keep && tok_encoding_push(r->out, id, beg, end, false))
        return eng_err_set(r->err, ENG_ENOMEM, "out of memory storing %zu tokens", r->count);
    return r->count >= r->stop ? WP_ENOUGH : 0;
}

/* The input bytes behind c[0..n): reordered marks may not ascend, so this is
 * the union of all their spans. */
static void span_of(const wp_char *c, size_t n, uint32_t *beg, uint32_t *end)
{
    wp_char all = c[0];
    for (size_t i = 1; i < n; i++)
        widen(&all, c[i]);
    *beg = all.beg;
    *end = all.end;
}

/* Greedy longest-match-first WordPiece of one basic token c[0..n): all its
 * pieces, or a single [UNK] when some part has no match. */
static int wordpiece(wp_run *r, const wp_char *c, size_t n)
{
    const wp_tokenizer *t = r->t;
    uint32_t beg, end;
    if (n > WP_MAX_WORD_CHARS) {
        span_of(c, n, &beg, &end);
        return emit(r, -1, beg, end);
    }
    /* Not zero-filled: only what the word fills is read (these are 1.2 KB,
     * and a word is usually a few bytes). */
    char utf8[4 * WP_MAX_WORD_CHARS];
    char key[2 + 4 * WP_MAX_WORD_CHARS]; /* a continuation candidate: "##" + a tail */
    size_t pos[WP_MAX_WORD_CHARS + 1];   /* utf8 offset of character i */
    key[0] = key[1] = '#';
    pos[0] = 0;
    for (size_t i = 0; i < n; i++) {
        if (c[i].cp < 0x80)
            utf8[pos[i]] = (char)c[i].cp, pos[i + 1] = pos[i] + 1;
        else
            pos[i + 1] = pos[i] + (size_t)utf8proc_encode_char(c[i].cp, (uint8_t *)utf8 + pos[i]);
    }
    int32_t ids[WP_MAX_WORD_CHARS];
    size_t stops[WP_MAX_WORD_CHARS], np = 0;
    for (size_t start = 0; start < n; start = stops[np++]) {
        const char *s = utf8; /* the candidates: s[0 .. prefix + bytes of start..stop) */
        size_t prefix = 0;
        if (start > 0) {
            memcpy(key + 2, utf8 + pos[start], pos[n] - pos[start]);
            s = key;
            prefix = 2;
        }
        ids[np] = -1;
        for (size_t stop = n; stop > start && ids[np] < 0; stop--) {
            size_t klen = prefix + pos[stop] - pos[start];
            if (klen <= t->max_tok_len)
                ids[np] = eng_strmap_get(&t->vocab, s, klen);
            stops[np] = stop;
        }
        if (ids[np] < 0) {
            span_of(c, n, &beg, &end);
            return emit(r, -1, beg, end);
        }
    }
    for (size_t i = 0, start = 0; i < np; start = stops[i++]) {
        span_of(c + start, stops[i] - start, &beg, &end);
        int rc = emit(r, ids[i], beg, end);
        if (rc)
            return rc;
    }
    return 0;
}

/* _run_split_on_punc: every punctuation character is a token of its own. */
static int split_punct(wp_run *r, const wp_char *c, size_t n)
{
    size_t start = 0;
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        if (!is_punct(c[i].cp))
            continue;
        if (i > start)
            rc = wordpiece(r, c + start, i - start);
        if (!rc)
            rc = wordpiece(r, c + i, 1);
        start = i + 1;
    }
    if (!rc && n > start)
        rc = wordpiece(r, c + start, n - start);
    return rc;
}

/* Whether c[0..n) is the UTF-8 string s[0..len). */
static bool spells(const wp_char *c, size_t n, const char *s, size_t len)
{
    size_t at = 0, i = 0;
    while (i < n && at < len) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k =
            utf8proc_iterate((const uint8_t *)s + at, (utf8proc_ssize_t)(len - at), &cp);
        if (k <= 0 || c[i].cp != cp)
            return false;
        at += (size_t)k;
        i++;
    }
    return i == n && at == len;
}

/* The special token that c[0..n) spells exactly, or -1. A typed special is
 * normally split off before cleaning; this catches one that appears only once
 * cleaning or accent stripping removes a character inside it ("[SE\0P]"),
 * which HF's never_split keeps whole. */
static int word_special(const wp_tokenizer *t, const wp_char *c, size_t n)
{
    for (int k = 0; k < WP_N_SPECIAL; k++)
        if (t->special_len[k] && spells(c, n, t->special[k], t->special_len[k]))
            return k;
    return -1;
}

/* Normalises and tokenizes the current word, then starts a new one. */
static int flush_word(wp_run *r)
{
    if (!r->word.n)
        return 0;
    const wp_buf *w = &r->word;
    if (!r->word_ascii) {
        int rc = decompose(r);
        if (rc)
            return rc;
        if (r->t->strip_accents)
            drop_marks(&r->norm);
        else
            compose(&r->norm);
        w = &r->norm;
    }
    int k = w->n ? word_special(r->t, w->c, w->n) : -1, rc;
    if (k >= 0) {
        uint32_t beg, end;
        span_of(w->c, w->n, &beg, &end);
        rc = emit(r, r->t->special_id[k], beg, end);
    } else {
        rc = split_punct(r, w->c, w->n);
    }
    r->word.n = 0;
    r->word_ascii = true;
    return rc;
}

static int word_push(wp_run *r, int32_t cp, uint32_t beg, uint32_t end)
{
    r->word_ascii &= cp < 0x80;
    return buf_push(&r->word, cp, beg, end, r->err);
}

/* take_char for ASCII, the common case, without the Unicode tables: the
 * controls but \t \n \r are dropped (ASCII's other whitespace, \v \f and
 * \x1c-\x1f, are controls too), the four spaces end a word, and no ASCII
 * character is CJK or lowercases to more than one. */
static int take_ascii(wp_run *r, int32_t cp, uint32_t beg, uint32_t end)
{
    if (cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r')
        return flush_word(r);
    if (cp < 0x20 || cp == 0x7f)
        return 0;
    if (r->t->lower && cp >= 'A' && cp <= 'Z')
        cp += 'a' - 'A';
    return word_push(r, cp, beg, end);
}

/* One input character through lowercasing, _clean_text, the whitespace split
 * and _tokenize_chinese_chars. HF lowercases the text one character at a time
 * (a regex that matches single characters), so no context rule such as final
 * sigma applies; U+0130 is Python's one multi-character lowercase mapping. */
static int take_char(wp_run *r, int32_t cp, uint32_t beg, uint32_t end)
{
    if (cp < 0x80)
        return take_ascii(r, cp, beg, end);
    const utf8proc_property_t *p = utf8proc_get_property(cp);
    if (is_dropped(cp, p))
        return 0;
    if (is_space(cp, p))
        return flush_word(r);
    bool cjk = r->t->chinese && is_cjk(cp);
    int rc = cjk ? flush_word(r) : 0;
    if (!rc && r->t->lower && cp == 0x130) {
        rc = word_push(r, 'i', beg, end);
        cp = 0x307;
    } else if (r->t->lower) {
        cp = utf8proc_tolower(cp);
    }
    if (!rc)
        rc = word_push(r, cp, beg, end);
    return !rc && cjk ? flush_word(r) : rc;
}

/* The length of the special token typed at s (the longest one), or 0. HF
 * splits these off before anything else, so they survive lowercasing. */
static size_t special_at(const wp_tokenizer *t, const char *s, size_t len, int32_t *id)
{
    size_t best = 0;
    for (int k = 0; k < WP_N_SPECIAL; k++) {
        size_t n = t->special_len[k];
        if (n > best && n <= len && memcmp(s, t->special[k], n) == 0) {
            best = n;
            *id = t->special_id[k];
        }
    }
    return best;
}

static int scan(wp_run *r, const char *text, size_t len)
{
    const wp_tokenizer *t = r->t;
    r->word_ascii = true;
    for (size_t i = 0; i < len;) {
        int32_t id = -1;
        size_t m = t->special_first[(unsigned char)text[i]] ? special_at(t, text + i, len - i, &id)
                                                            : 0;
        int rc;
        if (m) {
            rc = flush_word(r);
            if (!rc)
                rc = emit(r, id, (uint32_t)i, (uint32_t)(i + m));
        } else if ((unsigned char)text[i] < 0x80) {
            m = 1;
            rc = take_ascii(r, (unsigned char)text[i], (uint32_t)i, (uint32_t)(i + 1));
        } else {
            utf8proc_int32_t cp;
            /* The text is validated, so this always decodes one character. */
            m = (size_t)utf8proc_iterate((const uint8_t *)text + i, (utf8proc_ssize_t)(len - i), &cp);
            rc = take_char(r, cp, (uint32_t)i, (uint32_t)(i + m));
        }
        if (rc)
            return rc;
        i += m;
    }
    return flush_word(r);
}

/* ------------------------------------------------------------------- ops */

static int wp_encode(const tok_tokenizer *tt, const char *text, size_t len,
                     const tok_encode_opts *opts, tok_encoding *out, eng_err *err)
{
    const wp_tokenizer *t = (const wp_tokenizer *)tt;
    bool special = opts && opts->add_special;
    size_t max_len = opts ? opts->max_len : 0;
    tok_encoding_clear(out);
    if (len >= UINT32_MAX)
        return eng_err_set(err, ENG_ETOOLONG, "text of %zu bytes is too long to tokenize", len);
    size_t bad = tok_utf8_validate(text, len);
    if (bad < len)
        return eng_err_set(err, ENG_EFORMAT, "text is not valid UTF-8 (byte %zu)", bad);
    if (special && (t->special_id[WP_CLS] < 0 || t->special_id[WP_SEP] < 0))
        return eng_err_set(err, ENG_EUNSUPPORTED, "vocab.txt has no %s or %s token to add",
                           t->special[WP_CLS] ? t->special[WP_CLS] : "[CLS]",
                           t->special[WP_SEP] ? t->special[WP_SEP] : "[SEP]");
    if (special && max_len == 1)
        return eng_err_set(err, ENG_EINVAL, "max_len 1 leaves no room for [CLS] and [SEP]");

    wp_run r = {.t = t, .out = out, .keep = SIZE_MAX, .err = err};
    if (max_len)
        r.keep = special ? max_len - 2 : max_len;
    r.stop = tok__count_stop(opts, special ? 2 : 0); /* [CLS] and [SEP] count too */
    int rc = 0;
    if (special && tok_encoding_push(out, t->special_id[WP_CLS], 0, 0, true))
        rc = eng_err_set(err, ENG_ENOMEM, "out of memory storing tokens");
    if (!rc)
        rc = scan(&r, text, len);
    if (rc == WP_ENOUGH)
        rc = 0;
    if (!rc && special && tok_encoding_push(out, t->special_id[WP_SEP], 0, 0, true))
        rc = eng_err_set(err, ENG_ENOMEM, "out of memory storing tokens");
    out->n_untruncated = r.count + (special ? 2 : 0);
    free(r.word.c);
    free(r.norm.c);
    if (rc)
        tok_encoding_clear(out);
    return rc;
}

static const char *wp_id_to_token(const tok_tokenizer *tt, int32_t id, size_t *len)
{
    const wp_tokenizer *t = (const wp_tokenizer *)tt;
    if (id < 0 || (size_t)id >= t->base.vocab_size)
        return NULL;
    if (len)
        *len = t->tok_len[id];
    return t->text + t->tok_off[id];
}

/* A piece's text without its "##" continuation marker; see tok_wordpiece.h. */
static size_t wp_token_bytes(const tok_tokenizer *tt, int32_t id, char *buf, size_t cap)
{
    size_t n;
    const char *s = wp_id_to_token(tt, id, &n);
    if (!s)
        return 0;
    if (n > 2 && s[0] == '#' && s[1] == '#') {
        s += 2;
        n -= 2;
    }
    if (cap)
        memcpy(buf, s, n < cap ? n : cap);
    return n;
}

static void wp_free(tok_tokenizer *tt)
{
    wp_tokenizer *t = (wp_tokenizer *)tt;
    eng_strmap_free(&t->vocab);
    free(t->text);
    free(t->tok_off);
    free(t->tok_len);
    for (int k = 0; k < WP_N_SPECIAL; k++)
        free(t->special[k]);
    free(t);
}

static const tok_ops wp_ops = {
    .encode = wp_encode,
    .id_to_token = wp_id_to_token,
    .token_bytes = wp_token_bytes,
    .free = wp_free,
};

int tok_wordpiece_load(const char *dir, tok_tokenizer **out, eng_err *err)
{
    char path[PATH_MAX];
    *out = NULL;
    wp_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return eng_err_set(err, ENG_ENOMEM, "out of memory loading the tokenizer in %s", dir);
    t->base.ops = &wp_ops;
    eng_strmap_init(&t->vocab);
    int rc = path_join(path, sizeof path, dir, "vocab.txt", err);
    if (!rc)
        rc = vocab_load(t, path, err);
    if (!rc)
        rc = config_load(t, dir, err);
    if (rc) {
        wp_free(&t->base);
        return rc;
    }
    specials_resolve(t);
    *out = &t->base;
    return 0;
}
