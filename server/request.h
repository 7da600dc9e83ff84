/* A request as the task layers see it, whatever carried it (HTTP or the CLI). */
#ifndef SRV_REQUEST_H
#define SRV_REQUEST_H

#include <stdbool.h>
#include <stddef.h>

#include "engine/error.h"
#include "models/model.h"
#include "models/tokenizer.h"
#include "server/reply.h"

/* A KServe v2 request's "id" is echoed in its answer: at most this many
 * bytes, NUL included. */
#define SRV_V2_ID_SIZE 128

typedef struct srv_limits {
    size_t max_client_batch; /* texts in one request's "inputs" list */
    int max_input_tokens;    /* 0: the model's own maximum */
    int max_new_tokens;      /* generation: the most a request may ask for */
    long max_batch_total_tokens; /* generation: KV-cache tokens a model holds */
    int max_batch_seqs;      /* generation: sequences (beams count) in one step */
    int max_batch_tokens;    /* generation: tokens in one step, so the longest prompt */
    size_t max_image_bytes;  /* an encoded image */
    size_t max_image_pixels; /* a decoded image (decompression bombs) */
} srv_limits;

/* The input tokens a model takes: its context, or --max-input-tokens if
 * lower (lim may be NULL). */
int srv_limits_input_tokens(const srv_limits *lim, int model_max);

/* Tokenizing a text whose limit is max stops past srv_count_max(max) tokens
 * (tok_encode_opts.count_max), so a long text costs the loop thread a pass
 * over its bytes, not a tokenization of all of them: a 422 names the exact
 * count up to 4x the limit, and "more than" past it. */
size_t srv_count_max(size_t max);

/* The 422 of an input over the model's limit, in text-embeddings-inference's
 * words: "`field` must have at most max tokens. Given: n" (n counted up to
 * count_max); hint adds how to ask for truncation. Returns -1. */
int srv_reply_too_long(srv_reply *err, const char *field, int max, size_t n, size_t count_max,
                       bool hint);

typedef struct srv_request {
    const char *query_text; /* the ?text= parameter, or NULL */
    size_t query_text_len;
    const char *body;       /* the raw body (may be empty) */
    size_t body_len;
    const char *content_type;
    const srv_limits *limits;
    const void *prepared;   /* the body already parsed (srv_json_prepare), or NULL */
} srv_request;

/* Tokenizes one input text, special tokens added, against the model's input
 * limit (srv_limits_input_tokens): cut there when truncate, else refused past
 * it with srv_reply_too_long naming field (and the hint unless the text came
 * as ?text=, which cannot ask for truncation). Returns 0, or -1 with err. */
int srv_tokenize_input(const model *m, const srv_request *in, const char *field,
                       const char *text, size_t len, bool truncate, tok_encoding *enc,
                       srv_reply *err);

/* A request body of at least this many bytes is parsed on libuv's thread
 * pool before its handler runs (srv_json_prepare): jansson takes 15 to 90 ms
 * a megabyte, which on the loop thread would stall every other connection. */
#define SRV_PREPARE_MIN_BYTES (64 * 1024)

/* Parses a body as JSON, on any thread; what srv_json_body and srv_json_value
 * then take instead of parsing again. NULL only when out of memory. */
void *srv_json_prepare(const char *body, size_t len);
void srv_json_prepared_free(void *prepared);
/* A JSON value built in memory (a json_t *, its reference taken over) as a
 * prepared body, for a handler that hands another's parser a request it
 * built; NULL (the reference dropped) when out of memory. */
void *srv_json_prepared_value(void *value);

/* Parses a JSON body into *root (a json_t *, kept opaque here so that only the
 * JSON layer includes jansson), or takes in->prepared's value. On failure
 * returns -1 with a 422 json_invalid in err; the value must be an object. */
int srv_json_body(const srv_request *in, void **root, srv_reply *err);

/* The body's JSON value, whatever its type (a new reference), or NULL with
 * jansson's reason in why (cap bytes). */
void *srv_json_value(const srv_request *in, char *why, size_t cap);

/* Frees what srv_json_body returned. */
void srv_json_free(void *root);

/* Copies the string field key of a parsed object into buf (cut to fit, and
 * at a NUL it holds); false when it is absent or not a string. *len is the
 * string's whole length, so a cut copy can be told from the value. */
bool srv_json_string_field(const void *root, const char *key, char *buf, size_t cap, size_t *len);

/* Writes the JSON encoding of a jansson value (for the "input" of an error). */
char *srv_json_dump(const void *value);

/* A 422 for a list of n items over limit (--max-client-batch-size, or a
 * cap of its own) in field; returns -1. */
int srv_reply_too_many(srv_reply *err, const char *field, size_t n, size_t limit);

/* Maps a tokenizer/engine error to a reply: ENG_EFORMAT and ENG_ETOOLONG are
 * the client's (422), ENG_ENOMEM is 503, anything else 500. */
void srv_reply_eng_error(srv_reply *r, const eng_err *err);

#endif
