/* An HTTP answer as data: status, content type and body. Handlers and the
 * CLI fill one; server/http.c sends it. Every error body is written here, in
 * FastAPI's shapes, so the daemon answers errors one way everywhere. */
#ifndef SRV_REPLY_H
#define SRV_REPLY_H

#include <stdbool.h>

#include "server/buf.h"

typedef struct srv_reply {
    int status;               /* 0 while unset */
    const char *content_type; /* static string */
    char allow[64];           /* the Allow header of a 405, or empty */
    const char *challenge;    /* the WWW-Authenticate header of a 401, or NULL */
    bool close;               /* end the connection after this answer */
    srv_buf body;
    char error[400];          /* an error's text in one line ("field: msg"), for a
                                 protocol that words errors its own way; else empty */
} srv_reply;

void srv_reply_init(srv_reply *r);
void srv_reply_free(srv_reply *r);

/* Starts a JSON answer; the caller writes the body into r->body. */
void srv_reply_json(srv_reply *r, int status);

/* The detail of a 503 while the server stops. */
#define SRV_SHUTTING_DOWN "Service is shutting down"

/* {"detail": "<message>"} with the given status. */
void srv_reply_detail(srv_reply *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A 422 in pydantic's shape:
 * {"detail":[{"type":T,"loc":[where,field],"msg":M,"input":I}]}
 * where is "query" or "body"; field may be NULL (loc holds only where);
 * input_json is raw JSON for "input" (NULL writes null). */
void srv_reply_invalid(srv_reply *r, const char *type, const char *where, const char *field,
                       const char *msg, const char *input_json);

/* A 422 json_invalid for a body that does not parse, at byte offset pos. */
void srv_reply_json_invalid(srv_reply *r, int pos, const char *why);

/* The reason phrase of a status, for logs and the CLI. */
const char *srv_status_text(int status);

#endif
