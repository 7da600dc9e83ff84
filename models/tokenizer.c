#include "models/tokenizer.h"

#include <stdlib.h>
#include <string.h>

void tok_encoding_init(tok_encoding *e)
{
    memset(e, 0, sizeof *e);
}

void tok_encoding_free(tok_encoding *e)
{
    free(e->ids);
    free(e->start);
    free(e->stop);
    free(e->special);
    memset(e, 0, sizeof *e);
}

void tok_encoding_clear(tok_encoding *e)
{
    e->n = 0;
    e->n_untruncated = 0;
}

static int grow(void **p, size_t cap, size_t elem)
{
    void *q = realloc(*p, cap * elem);
    if (!q)
        return ENG_ENOMEM;
    *p = q;
    return 0;
}

int tok_encoding_push(tok_encoding *e, int32_t id, uint32_t start, uint32_t stop, bool special)
{
    if (e->n == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 64;
        if (grow((void **)&e->ids, cap, sizeof *e->ids) ||
            grow((void **)&e->start, cap, sizeof *e->start) ||
            grow((void **)&e->stop, cap, sizeof *e->stop) ||
            grow((void **)&e->special, cap, sizeof *e->special))
            return ENG_ENOMEM;
        e->cap = cap;
    }
    e->ids[e->n] = id;
    e->start[e->n] = start;
    e->stop[e->n] = stop;
    e->special[e->n] = special;
    e->n++;
    return 0;
}

/* Length of the UTF-8 sequence a lead byte starts, 0 for a byte that cannot lead. */
static size_t utf8_seq_len(unsigned char c)
{
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        return 2;
    if (c >= 0xe0 && c <= 0xef)
        return 3;
    if (c >= 0xf0 && c <= 0xf4)
        return 4;
    return 0;
}

size_t tok_utf8_validate(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        size_t n = utf8_seq_len(p[i]);
        if (!n || i + n > len)
            return i;
        for (size_t k = 1; k < n; k++)
            if ((p[i + k] & 0xc0) != 0x80)
                return i;
        /* Overlong 3/4-byte forms, UTF-16 surrogates, and values past U+10FFFF. */
        if ((p[i] == 0xe0 && p[i + 1] < 0xa0) || (p[i] == 0xed && p[i + 1] >= 0xa0) ||
            (p[i] == 0xf0 && p[i + 1] < 0x90) || (p[i] == 0xf4 && p[i + 1] >= 0x90))
            return i;
        i += n;
    }
    return len;
}

size_t tok_utf8_complete_prefix(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    /* Walk back over at most three continuation bytes to the last lead byte. */
    size_t i = len, back = 0;
    while (i > 0 && back < 4 && (p[i - 1] & 0xc0) == 0x80) {
        i--;
        back++;
    }
    if (i == 0)
        return len; /* only continuation bytes: invalid, nothing to wait for */
    size_t need = utf8_seq_len(p[i - 1]);
    if (need > 1 && back + 1 < need)
        return i - 1; /* the character starting at i-1 is not whole yet */
    return len;
}

size_t tok__count_stop(const tok_encode_opts *opts, size_t n_fixed)
{
    if (!opts || !opts->count_max)
        return SIZE_MAX;
    return opts->count_max + 1 > n_fixed ? opts->count_max + 1 - n_fixed : 1;
}
