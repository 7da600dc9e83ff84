/* The routes and their handlers: the seam between HTTP and the tasks. */
#ifndef SRV_HANDLERS_H
#define SRV_HANDLERS_H

#include <stdbool.h>
#include <stddef.h>

#include "server/http.h"
#include "server/request.h"

struct srv_server;

/* srv_http_hooks.route: finds the request's route and checks all that its
 * headers decide (path, method, API key, the model named). Returns true with
 * the route's context attached to the connection, or false with the
 * refusal in its reply. */
bool srv_route_request(void *server, srv_conn *c);
/* srv_http_hooks.prepare_if, called when a routed request's body is in:
 * notes whether the server was ready then (srv_request_admitted), and has a
 * large JSON body parsed on the pool (srv_json_prepare, from
 * SRV_PREPARE_MIN_BYTES; POST bodies other than multipart uploads are JSON). */
bool srv_request_arrived(void *server, srv_conn *c);
/* srv_http_hooks.dispatch: runs the routed request's handler. */
void srv_handle_request(void *server, srv_conn *c);
/* srv_http_hooks.completed: the access log line and request metrics. */
void srv_request_completed(void *server, srv_conn *c);

/* The route table, for the OpenAPI document and its test. */
typedef struct srv_route {
    const char *pattern; /* "/predict", "/models/{name}/predict": {name} is one path segment */
    const char *method;  /* "GET" or "POST" */
    const char *metric;  /* the endpoint label in metrics (the pattern) */
    bool per_model;      /* runs a model: the named one, or the default */
    void (*handle)(void *server, srv_conn *c, void *ctx);
    bool ops;            /* an operations endpoint: open without the API key
                            unless --protect-ops */
} srv_route;

const srv_route *srv_routes(size_t *n);

/* The request as the task layers see it: query text, body (and its parse
 * made on the pool), limits. */
srv_request srv_request_of(struct srv_server *s, srv_conn *c);

/* Whether a request may still run a model: the server is ready, or began
 * stopping after the request had arrived (its body perhaps still being
 * parsed on the pool then): a shutdown answers what it has received. */
bool srv_request_admitted(const struct srv_server *s, void *ctx);

/* The model a per-model route resolved to (handlers get ctx). */
struct srv_worker *srv_request_worker(void *ctx);

#endif
