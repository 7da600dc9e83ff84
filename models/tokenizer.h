/* The tokenizer interface every model family uses.
 *
 * A tokenizer turns UTF-8 text into token ids with the byte span of the input
 * each token came from (for /tokenize), and ids back into bytes. Concrete
 * tokenizers (tok_wordpiece.c, tok_bpe.c) fill a tok_tokenizer's ops table;
 * callers only see this header. A loaded tokenizer is immutable and may be
 * used from several threads at once. */
#ifndef TOK_TOKENIZER_H
#define TOK_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/error.h"

/* One encoded text. Grows as needed; reuse one across calls with
 * tok_encoding_clear to avoid reallocations. */
typedef struct tok_encoding {
    int32_t *ids;     /* (n) token ids */
    uint32_t *start;  /* (n) byte offset in the input of the token's first byte */
    uint32_t *stop;   /* (n) byte offset one past its last byte; a special token
                         that stands for no input has start == stop == 0 */
    uint8_t *special; /* (n) 1 for tokens the tokenizer added ([CLS], [SEP], ...) */
    size_t n, cap;
    size_t n_untruncated; /* how many ids the text has without truncation */
} tok_encoding;

void tok_encoding_init(tok_encoding *e);
void tok_encoding_free(tok_encoding *e);
void tok_encoding_clear(tok_encoding *e);
/* Appends one token. Returns 0 or ENG_ENOMEM. */
int tok_encoding_push(tok_encoding *e, int32_t id, uint32_t start, uint32_t stop, bool special);

typedef struct tok_encode_opts {
    bool add_special; /* add the model's special tokens ([CLS] ... [SEP]) */
    size_t max_len;   /* 0: no limit; else keep at most max_len ids, special ones
                         included, dropping pieces from the end and keeping the
                         closing special token; n_untruncated tells what was cut */
    size_t count_max; /* 0: count every token; else stop reading the text once
                         n_untruncated passes count_max (it is then a lower
                         bound): the splitting and merging stop there (UTF-8
                         validation and CLIP's normalisation still pass over
                         the whole text, and one huge word costs its size) */
} tok_encode_opts;

typedef struct tok_tokenizer tok_tokenizer;

typedef struct tok_ops {
    /* Encodes text[0..len) into out (cleared first). Invalid UTF-8 is an
     * ENG_EFORMAT error naming the byte offset. */
    int (*encode)(const tok_tokenizer *t, const char *text, size_t len,
                  const tok_encode_opts *opts, tok_encoding *out, eng_err *err);
    /* The vocabulary string of an id (e.g. "##ing", "Ġthe"), or NULL. */
    const char *(*id_to_token)(const tok_tokenizer *t, int32_t id, size_t *len);
    /* Appends the raw bytes an id decodes to (byte-level BPE: exact bytes;
     * may be a partial UTF-8 character) to buf, at most cap bytes; returns the
     * number of bytes the id decodes to (which may exceed cap). */
    size_t (*token_bytes)(const tok_tokenizer *t, int32_t id, char *buf, size_t cap);
    void (*free)(tok_tokenizer *t);
} tok_ops;

struct tok_tokenizer {
    const tok_ops *ops;
    size_t vocab_size;
    size_t model_max_length; /* from tokenizer_config.json, 0 when unknown */
    int32_t bos_id, eos_id, pad_id, unk_id; /* -1 when the tokenizer has none */
};

static inline int tok_encode(const tok_tokenizer *t, const char *text, size_t len,
                             const tok_encode_opts *opts, tok_encoding *out, eng_err *err)
{
    return t->ops->encode(t, text, len, opts, out, err);
}

static inline void tok_tokenizer_free(tok_tokenizer *t)
{
    if (t)
        t->ops->free(t);
}

/* Returns the number of leading bytes of s[0..len) that form complete UTF-8
 * characters, so a stream can hold back a character split across tokens. */
size_t tok_utf8_complete_prefix(const char *s, size_t len);

/* Returns the offset of the first invalid UTF-8 byte in s[0..len), or len when
 * all of it is valid (overlongs, surrogates and values past U+10FFFF are invalid). */
size_t tok_utf8_validate(const char *s, size_t len);

/* For tokenizers: how many tokens of their own (beyond the n_fixed special
 * ones they add) may be counted before reading stops, for opts->count_max
 * (0: no stop, SIZE_MAX). */
size_t tok__count_stop(const tok_encode_opts *opts, size_t n_fixed);

#endif
