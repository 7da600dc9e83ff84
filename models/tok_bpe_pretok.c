/* Pre-tokenization and CLIP normalization for the byte-level BPE tokenizers.
 *
 * The two pre-tokenizers are hand-written equivalents of the regexes of HF's
 * GPT2Tokenizer and CLIPTokenizer (see tok_bpe__gpt2_split and
 * tok_bpe__clip_split). Character classes come from utf8proc: \p{L} is the
 * L* categories, \p{N} the N* categories, and \s is Unicode White_Space
 * (Zs, Zl, Zp, U+0009..U+000D and U+0085): what Python's `regex` module, which
 * the HF tokenizers use, matches with \s (U+001C..U+001F are not whitespace
 * there, unlike for str.isspace()).
 *
 * CLIP normalization is NFC, then whitespace runs to one space (trimmed), then
 * lower case, done code point by code point so that every normalized byte keeps
 * the input span it came from. */
#include "models/tok_bpe.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

enum { CLS_LETTER, CLS_NUMBER, CLS_SPACE, CLS_OTHER };

/* Decodes the character at s, which must be valid UTF-8; *n receives its length. */
static int32_t utf8_next(const unsigned char *s, size_t *n)
{
    unsigned c = s[0];
    if (c < 0x80) {
        *n = 1;
        return (int32_t)c;
    }
    if (c < 0xe0) {
        *n = 2;
        return (int32_t)(((c & 0x1fu) << 6) | (s[1] & 0x3fu));
    }
    if (c < 0xf0) {
        *n = 3;
        return (int32_t)(((c & 0x0fu) << 12) | ((s[1] & 0x3fu) << 6) | (s[2] & 0x3fu));
    }
    *n = 4;
    return (int32_t)(((c & 0x07u) << 18) | ((s[1] & 0x3fu) << 12) | ((s[2] & 0x3fu) << 6) |
                     (s[3] & 0x3fu));
}

static int char_class(int32_t c)
{
    if (c < 0x80) {
        /* ASCII without a table look-up: most text is mostly ASCII. */
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
            return CLS_LETTER;
        if (c >= '0' && c <= '9')
            return CLS_NUMBER;
        if (c == ' ' || (c >= '\t' && c <= '\r'))
            return CLS_SPACE;
        return CLS_OTHER;
    }
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
        return CLS_LETTER;
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
        return CLS_NUMBER;
    case UTF8PROC_CATEGORY_ZS:
    case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP:
        return CLS_SPACE;
    default:
        return c == 0x85 ? CLS_SPACE : CLS_OTHER; /* NEL is a White_Space control */
    }
}

static int class_at(const unsigned char *p, size_t *n)
{
    return char_class(utf8_next(p, n));
}

/* Length of the contraction ('s 't 're 've 'm 'll 'd) at p[0] == '\'', or 0.
 * Case-sensitive, as GPT-2's regex; CLIP's text is lower case by then. */
static size_t contraction_len(const unsigned char *p, size_t len)
{
    if (len >= 2 && (p[1] == 's' || p[1] == 't' || p[1] == 'm' || p[1] == 'd'))
        return 2;
    if (len >= 3 && ((p[1] == 'r' && p[2] == 'e') || (p[1] == 'v' && p[2] == 'e') ||
                     (p[1] == 'l' && p[2] == 'l')))
        return 3;
    return 0;
}

/* End of the run of characters of class cls starting at i. */
static size_t run_end(const unsigned char *p, size_t len, size_t i, int cls)
{
    size_t n;
    while (i < len && class_at(p + i, &n) == cls)
        i += n;
    return i;
}

/* The whitespace rules `\s+(?!\S)|\s+` at i: a run that ends the text is taken
 * whole; a longer run followed by a non-space leaves its last character, which
 * then prefixes the next word (" word") or stands alone; a single whitespace
 * character before a non-space is taken alone. */
static size_t space_end(const unsigned char *p, size_t len, size_t i)
{
    size_t last = i, count = 0, n;
    while (i < len && class_at(p + i, &n) == CLS_SPACE) {
        last = i;
        i += n;
        count++;
    }
    if (i == len || count == 1)
        return i;
    return last;
}

size_t tok_bpe__gpt2_split(const char *s, size_t len, size_t i)
{
    /* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
    const unsigned char *p = (const unsigned char *)s;
    size_t n;
    if (p[i] == '\'') {
        size_t c = contraction_len(p + i, len - i);
        if (c)
            return i + c;
    }
    if (p[i] == ' ' && i + 1 < len) {
        int next = class_at(p + i + 1, &n);
        if (next != CLS_SPACE)
            return run_end(p, len, i + 1, next);
    }
    int cls = class_at(p + i, &n);
    if (cls != CLS_SPACE)
        return run_end(p, len, i, cls);
    return space_end(p, len, i);
}

size_t tok_bpe__clip_split(const char *s, size_t len, size_t *i)
{
    /* 's|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+, whitespace skipped */
    const unsigned char *p = (const unsigned char *)s;
    size_t n = 0;
    int cls = CLS_SPACE;
    while (*i < len && (cls = class_at(p + *i, &n)) == CLS_SPACE)
        *i += n;
    if (*i == len)
        return len;
    size_t at = *i;
    if (p[at] == '\'') {
        size_t c = contraction_len(p + at, len - at);
        if (c)
            return at + c;
    }
    if (cls == CLS_NUMBER)
        return at + n; /* digits are pieces of one */
    return run_end(p, len, at, cls);
}

/* ---- CLIP normalization ---- */

void tok_bpe__norm_free(tok_bpe__norm *nm)
{
    free(nm->text);
    free(nm->start);
    free(nm->stop);
    free(nm->cp);
    free(nm->cp_start);
    free(nm->cp_stop);
    memset(nm, 0, sizeof *nm);
}

static int grow(void **p, size_t cap, size_t elem)
{
    void *q = realloc(*p, cap * elem);
    if (!q)
        return ENG_ENOMEM;
    *p = q;
    return 0;
}

static int reserve_cp(tok_bpe__norm *nm, size_t need)
{
    if (need <= nm->cp_cap)
        return 0;
    size_t cap = need * 2 + 16;
    if (grow((void **)&nm->cp, cap, sizeof *nm->cp) ||
        grow((void **)&nm->cp_start, cap, sizeof *nm->cp_start) ||
        grow((void **)&nm->cp_stop, cap, sizeof *nm->cp_stop))
        return ENG_ENOMEM;
    nm->cp_cap = cap;
    return 0;
}

static int reserve_bytes(tok_bpe__norm *nm, size_t need)
{
    if (need <= nm->cap)
        return 0;
    size_t cap = need * 2 + 64;
    if (grow((void **)&nm->text, cap, 1) || grow((void **)&nm->start, cap, sizeof *nm->start) ||
        grow((void **)&nm->stop, cap, sizeof *nm->stop))
        return ENG_ENOMEM;
    nm->cap = cap;
    return 0;
}

static int ccc(int32_t c)
{
    return c < 0x300 ? 0 : utf8proc_get_property(c)->combining_class;
}

/* Fills nm->cp with the canonical decomposition of s, each code point carrying
 * the span of the input character it came from. Sets *plain when s is ASCII,
 * which NFC leaves alone. */
static int decompose(const char *s, size_t len, uint32_t base, tok_bpe__norm *nm, bool *plain)
{
    enum { MAX_DECOMP = 8 }; /* canonical decompositions have at most 4 code points */
    const unsigned char *p = (const unsigned char *)s;
    nm->n_cp = 0;
    *plain = true;
    for (size_t i = 0, n; i < len; i += n) {
        int32_t c = utf8_next(p + i, &n), buf[MAX_DECOMP];
        utf8proc_ssize_t k = 1;
        buf[0] = c;
        if (c >= 0x80) {
            int boundclass = 0;
            k = utf8proc_decompose_char(c, buf, MAX_DECOMP, UTF8PROC_DECOMPOSE, &boundclass);
            if (k < 1 || k > MAX_DECOMP)
                return ENG_EINVAL; /* utf8proc refused a valid scalar value: cannot happen */
            *plain = false;
        }
        if (reserve_cp(nm, nm->n_cp + (size_t)k))
            return ENG_ENOMEM;
        for (utf8proc_ssize_t j = 0; j < k; j++) {
            nm->cp[nm->n_cp] = buf[j];
            nm->cp_start[nm->n_cp] = base + (uint32_t)i;
            nm->cp_stop[nm->n_cp] = base + (uint32_t)(i + n);
            nm->n_cp++;
        }
    }
    return 0;
}

static void swap_cp(tok_bpe__norm *nm, size_t a, size_t b)
{
    int32_t c = nm->cp[a];
    uint32_t s = nm->cp_start[a], e = nm->cp_stop[a];
    nm->cp[a] = nm->cp[b];
    nm->cp_start[a] = nm->cp_start[b];
    nm->cp_stop[a] = nm->cp_stop[b];
    nm->cp[b] = c;
    nm->cp_start[b] = s;
    nm->cp_stop[b] = e;
}

/* Canonical ordering: a stable sort of each run of non-starters by combining
 * class (insertion sort: runs are a few marks long). */
static void reorder(tok_bpe__norm *nm)
{
    for (size_t i = 1; i < nm->n_cp; i++) {
        int ci = ccc(nm->cp[i]);
        for (size_t j = i; ci && j > 0 && ccc(nm->cp[j - 1]) > ci; j--)
            swap_cp(nm, j - 1, j);
    }
}

/* The primary composite of a + b, or -1. utf8proc answers for one pair at a
 * time so that we keep track of which input each composite came from. */
static int32_t compose_pair(int32_t a, int32_t b)
{
    if (b < 0x300)
        return -1; /* no composition has a second character below U+0300 (checked
                      over all pairs against utf8proc's tables) */
    utf8proc_int32_t buf[2] = {a, b};
    return utf8proc_normalize_utf32(buf, 2, UTF8PROC_COMPOSE) == 1 ? buf[0] : -1;
}

/* Canonical composition (UAX #15) in place; a composite's span covers the
 * spans of everything composed into it. */
static void compose(tok_bpe__norm *nm)
{
    size_t starter = SIZE_MAX, w = 0; /* no starter yet: leading marks stay as they are */
    int last = 0;                     /* class of the last character kept after the starter */
    for (size_t r = 0; r < nm->n_cp; r++) {
        int32_t c = nm->cp[r];
        int cc = ccc(c);
        bool open = starter != SIZE_MAX && (last == 0 || last < cc);
        int32_t comp = open ? compose_pair(nm->cp[starter], c) : -1;
        if (comp >= 0) {
            nm->cp[starter] = comp;
            if (nm->cp_start[r] < nm->cp_start[starter])
                nm->cp_start[starter] = nm->cp_start[r];
            if (nm->cp_stop[r] > nm->cp_stop[starter])
                nm->cp_stop[starter] = nm->cp_stop[r];
            continue;
        }
        if (cc == 0)
            starter = w;
        last = cc;
        nm->cp[w] = c;
        nm->cp_start[w] = nm->cp_start[r];
        nm->cp_stop[w] = nm->cp_stop[r];
        w++;
    }
    nm->n_cp = w;
}

/* Appends c to the normalized text. A byte maps to the byte of the input at
 * the same position when c has as many bytes as its source, else to the
 * whole source. */
static int emit(tok_bpe__norm *nm, int32_t c, uint32_t start, uint32_t stop)
{
    utf8proc_uint8_t u[4];
    size_t n = (size_t)utf8proc_encode_char(c, u);
    if (reserve_bytes(nm, nm->n + n))
        return ENG_ENOMEM;
    bool aligned = stop - start == n;
    for (size_t k = 0; k < n; k++) {
        nm->text[nm->n] = (char)u[k];
        nm->start[nm->n] = aligned ? start + (uint32_t)k : start;
        nm->stop[nm->n] = aligned ? start + (uint32_t)k + 1 : stop;
        nm->n++;
    }
    return 0;
}

/* Lower-cases one character as Rust's char::to_lowercase: the simple mapping,
 * except U+0130 whose full lower case is two characters. */
static int emit_lower(tok_bpe__norm *nm, int32_t c, uint32_t start, uint32_t stop)
{
    if (c == 0x130)
        return emit(nm, 'i', start, stop) || emit(nm, 0x307, start, stop) ? ENG_ENOMEM : 0;
    return emit(nm, utf8proc_tolower(c), start, stop);
}

/* Writes the code points as UTF-8, whitespace runs as one space, without
 * leading or trailing whitespace, in lower case. */
static int collapse_and_lower(tok_bpe__norm *nm)
{
    bool pending = false;
    uint32_t ws_start = 0, ws_stop = 0;
    nm->n = 0;
    for (size_t r = 0; r < nm->n_cp; r++) {
        int32_t c = nm->cp[r];
        if (char_class(c) == CLS_SPACE) {
            if (!pending)
                ws_start = nm->cp_start[r];
            ws_stop = nm->cp_stop[r];
            pending = true;
            continue;
        }
        if (pending && nm->n && emit(nm, ' ', ws_start, ws_stop))
            return ENG_ENOMEM;
        pending = false;
        if (emit_lower(nm, c, nm->cp_start[r], nm->cp_stop[r]))
            return ENG_ENOMEM;
    }
    return 0;
}

int tok_bpe__clip_normalize(const char *s, size_t len, uint32_t base, tok_bpe__norm *nm)
{
    bool plain;
    int rc = decompose(s, len, base, nm, &plain);
    if (rc)
        return rc;
    if (!plain) {
        reorder(nm);
        compose(nm);
    }
    return collapse_and_lower(nm);
}
