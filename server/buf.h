/* A growable byte buffer and the JSON writer built on it.
 *
 * Responses are written with these rather than built as jansson trees so that
 * numbers come out as Python writes them (shortest round-trip repr: 0.9998176693916321,
 * 1e-05, 1.0): predictd's bodies then match the FastAPI service's byte for byte.
 * Strings are escaped as Python's json.dumps(ensure_ascii=False) does. */
#ifndef SRV_BUF_H
#define SRV_BUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct srv_buf {
    char *data; /* NUL-terminated when non-NULL */
    size_t len, cap;
    bool oom;   /* an append failed; the content is incomplete */
} srv_buf;

void srv_buf_init(srv_buf *b);
void srv_buf_free(srv_buf *b);
void srv_buf_clear(srv_buf *b);
void srv_buf_append(srv_buf *b, const char *s, size_t n);
void srv_buf_puts(srv_buf *b, const char *s);
void srv_buf_printf(srv_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A NUL-terminated copy of n bytes, which may hold NULs themselves (where
 * strndup would stop); NULL when out of memory. */
char *srv_bytes_dup(const char *s, size_t n);
/* Hands the data to the caller (who frees it) and empties the buffer. */
char *srv_buf_take(srv_buf *b, size_t *len);

/* A JSON string literal of s[0..n), quotes included. Invalid UTF-8 is
 * replaced with U+FFFD, so the output is always valid JSON. */
void srv_json_str(srv_buf *b, const char *s, size_t n);
static inline void srv_json_cstr(srv_buf *b, const char *s);
/* A JSON number as Python's repr(float) writes it; NaN and infinities (which
 * JSON cannot hold) as null. */
void srv_json_num(srv_buf *b, double v);

/* [{"score": S, "label": L}, ...] for n labels, highest score first; equal
 * scores keep the labels' order (as a stable sort does in the pipelines).
 * lens: the labels' lengths, or NULL for C strings. */
void srv_json_ranked(srv_buf *b, const float *scores, const char *const *labels,
                     const size_t *lens, size_t n);

#include <string.h>
static inline void srv_json_cstr(srv_buf *b, const char *s)
{
    srv_json_str(b, s, strlen(s));
}

#endif
