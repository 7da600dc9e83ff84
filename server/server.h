/* The daemon: one libuv loop, the HTTP front end, a worker per model, and
 * the life cycle (loading -> ready -> stopping). Handlers (server/handlers.c)
 * see the server through this header. */
#ifndef SRV_SERVER_H
#define SRV_SERVER_H

#include <pthread.h>
#include <uv.h>

#include "server/auth.h"
#include "server/http.h"
#include "server/metrics.h"
#include "server/options.h"
#include "server/request.h"
#include "server/worker.h"

typedef enum srv_state {
    SRV_STATE_LOADING,  /* models are loading: /health answers 503 */
    SRV_STATE_READY,
    SRV_STATE_STOPPING, /* draining after SIGTERM: no new work */
} srv_state;

typedef struct srv_server {
    const srv_options *opts;
    uv_loop_t loop;
    srv_http *http;
    srv_metrics *metrics;
    srv_worker *workers;   /* (n_workers) one per model, in --model order */
    size_t n_workers;
    model **models;        /* (n_workers) loaded models, NULL until loaded */
    srv_limits limits;
    srv_auth auth;
    srv_state state;
    int exit_code;
    int in_flight;         /* jobs handed to workers and not yet finished */

    /* Finished jobs, handed from the workers to the loop thread. */
    uv_async_t done_async;
    pthread_mutex_t done_lock;
    srv_job *done_head;

    uv_signal_t sig_term, sig_int;
    uv_timer_t drain_timer;
    double drain_deadline;
    double drained_at;     /* when in-flight work reached zero, 0 before */
    uv_work_t load_work;
    eng_err load_err;
} srv_server;

/* Runs the daemon until SIGTERM/SIGINT; returns the process exit status. */
int srv_server_run(const srv_options *opts);

/* The worker of the model called name, or the default model's for NULL. */
srv_worker *srv_server_model(srv_server *s, const char *name, size_t len);

/* Hands a job to its worker and defers the request until it is finished.
 * Answers 429 itself when the queue is full. */
void srv_server_submit(srv_server *s, srv_conn *c, srv_job *job);

/* Monotonic seconds. */
double srv_now(void);

#endif
