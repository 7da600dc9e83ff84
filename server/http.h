/* HTTP on the event loop: libmicrohttpd parses, libuv waits.
 *
 * MHD runs in external-poll epoll mode: its epoll descriptor is watched by a
 * uv_poll and its timeouts by a uv_timer, so one libuv loop thread owns all
 * I/O and no connection has a thread. This file is the only one that includes
 * microhttpd.h; the rest of the server sees requests as srv_conn.
 *
 * A request's life: http.c gathers the body (refusing it past max_body_bytes),
 * has the thread pool prepare it if asked (hooks.prepare_if), then calls the
 * dispatch function once. The handler either answers at once
 * (srv_conn_send) or defers (srv_conn_defer): the connection is suspended, its
 * socket watched for the client going away, and answered later with
 * srv_conn_resume from the loop thread. A streamed answer (server-sent events)
 * is started with srv_conn_stream_start and fed with srv_conn_stream_write. */
#ifndef SRV_HTTP_H
#define SRV_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "engine/error.h"
#include "server/reply.h"

typedef struct srv_http srv_http;
typedef struct srv_conn srv_conn;

typedef struct srv_http_cfg {
    const char *host;
    int port;
    int max_connections;
    int timeout_s;           /* idle/slow connection timeout */
    int request_timeout_s;   /* to receive one whole request; 0: no limit */
    size_t max_header_bytes; /* request line + headers */
    size_t max_body_bytes;
} srv_http_cfg;

typedef struct srv_http_hooks {
    /* Called once per request when its headers are in, before any of its
     * body is read: returns false when it refuses the request, having
     * written the answer into srv_conn_reply (the body is then never taken
     * in). */
    bool (*route)(void *ud, srv_conn *c);
    /* Optional (all three or none): work on a complete body that would
     * stall the loop, such as parsing a large JSON document, done on libuv's
     * thread pool before dispatch. prepare_if (loop thread), called for
     * every routed request once its body is in, says whether it needs it; prepare (a pool thread) sees only the body, and its
     * result is srv_conn_prepared(c) at dispatch; prepared_free frees it. */
    bool (*prepare_if)(void *ud, srv_conn *c);
    void *(*prepare)(const char *body, size_t len);
    void (*prepared_free)(void *result);
    /* Called once per routed request, with its body complete (and prepared). */
    void (*dispatch)(void *ud, srv_conn *c);
    /* Called when a request is finished (answered or abandoned), for the
     * access log and metrics; the connection is freed right after. */
    void (*completed)(void *ud, srv_conn *c);
    void *ud;
} srv_http_hooks;

int srv_http_start(srv_http **out, uv_loop_t *loop, const srv_http_cfg *cfg,
                   const srv_http_hooks *hooks, eng_err *err);
/* Stops accepting connections; open ones are still served. */
void srv_http_quiesce(srv_http *h);
/* Closes everything and frees h once the loop has run its close callbacks.
 * Every deferred request must have been resumed. */
void srv_http_stop(srv_http *h);
/* The port actually bound (useful with port 0). */
int srv_http_port(const srv_http *h);
/* Requests deferred and not yet answered. */
int srv_http_deferred(const srv_http *h);

/* ---- the request ---- */
const char *srv_conn_method(const srv_conn *c);
const char *srv_conn_path(const srv_conn *c);
/* A query argument, URL-decoded, with its length (NULs kept); NULL if absent. */
const char *srv_conn_query(const srv_conn *c, const char *key, size_t *len);
const char *srv_conn_header(const srv_conn *c, const char *name);
const char *srv_conn_body(const srv_conn *c, size_t *len);
/* What srv_http_hooks.prepare made of the body, or NULL. */
const void *srv_conn_prepared(const srv_conn *c);
double srv_conn_start_time(const srv_conn *c); /* monotonic seconds */

/* Per-request data of the server's (route, model, job). */
void srv_conn_set_data(srv_conn *c, void *data);
void *srv_conn_data(const srv_conn *c);

/* ---- the answer ---- */
srv_reply *srv_conn_reply(srv_conn *c);
/* Answers now with srv_conn_reply(c); only from the dispatch call. */
void srv_conn_send(srv_conn *c);
/* Answers later. If the client disconnects first, on_gone(arg) runs on the
 * loop thread and the request is dropped (no srv_conn_resume needed, and none
 * may follow). Only from the dispatch call. */
void srv_conn_defer(srv_conn *c, void (*on_gone)(void *arg), void *arg);
/* Sends the reply of a deferred request (loop thread only). */
void srv_conn_resume(srv_conn *c);

/* Starts a streamed 200 answer with the given content type; deferred
 * semantics (on_gone) apply until srv_conn_stream_end. Only from dispatch. */
void srv_conn_stream_start(srv_conn *c, const char *content_type, void (*on_gone)(void *arg),
                           void *arg);
/* Queues bytes of a stream (loop thread only). */
void srv_conn_stream_write(srv_conn *c, const char *data, size_t len);
void srv_conn_stream_end(srv_conn *c);

/* The status sent, for logs and metrics (0 when the client went away first). */
int srv_conn_status(const srv_conn *c);
size_t srv_conn_bytes_sent(const srv_conn *c);
bool srv_conn_abandoned(const srv_conn *c);

#endif
