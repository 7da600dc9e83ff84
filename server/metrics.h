/* The daemon's Prometheus metrics, served by GET /metrics in the text
 * exposition format 0.0.4.
 *
 * A srv_metrics is a registry object, not global state, so two daemons in one
 * process keep separate counts. Every function here is safe to call from any
 * thread (the event loop and the inference threads update it at once). An
 * update takes one mutex and allocates only the first time a label set is seen;
 * label sets are few because callers pass bounded values: a loaded model's name
 * (or "" for requests not tied to a model), the route pattern ("/predict",
 * never the raw URL), the status code, a fixed reason word.
 *
 * NULL label values are written as "". */
#ifndef SRV_METRICS_H
#define SRV_METRICS_H

#include "server/buf.h"

/* The Content-Type of a /metrics answer. */
#define SRV_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

typedef struct srv_metrics srv_metrics;

/* Creates a registry with predictd_build_info{version,blas_core,kernel_level}
 * set to 1 and the process start time recorded. Returns 0 or ENG_ENOMEM; the
 * caller owns *out and releases it with srv_metrics_free. */
int srv_metrics_new(const char *version, const char *blas_core, const char *kernel_level,
                    srv_metrics **out);
/* Frees m; nothing may update it concurrently. NULL is a no-op. */
void srv_metrics_free(srv_metrics *m);

/* One answered HTTP request: counts it under (model, endpoint, status) and
 * observes its duration from arrival to answer under (model, endpoint). */
void srv_metrics_request(srv_metrics *m, const char *model, const char *endpoint, int status,
                         double seconds);

/* The prompt tokens of one admitted request (counted once, at tokenization,
 * so decode steps of a generation are not counted as input). */
void srv_metrics_input_tokens(srv_metrics *m, const char *model, long tokens);

/* How long a request waited from enqueue until its batch started. */
void srv_metrics_queue_wait(srv_metrics *m, const char *model, double seconds);

/* The number of requests waiting for a batch now. */
void srv_metrics_queue_size(srv_metrics *m, const char *model, int waiting);

/* One batch forward: its sequences, the tokens it processed and its duration. */
void srv_metrics_batch(srv_metrics *m, const char *model, int sequences, int tokens,
                       double seconds);

/* A generation step: adds new_tokens to the generated-token counter and sets
 * the running-sequence and KV-cache gauges (tokens held, tokens of capacity). */
void srv_metrics_generation(srv_metrics *m, const char *model, int new_tokens, int running,
                            long kv_tokens, long kv_capacity);

/* A request whose client disconnected before its answer. */
void srv_metrics_cancelled(srv_metrics *m, const char *model);
void srv_metrics_inline(srv_metrics *m, const char *model);

/* A request refused before inference; reason is a fixed word such as
 * "queue_full", "too_large" or "shutting_down". */
void srv_metrics_rejected(srv_metrics *m, const char *model, const char *reason);

/* Marks a model as loaded: predictd_model_loaded{model,task,dtype} = 1. */
void srv_metrics_model_loaded(srv_metrics *m, const char *model, const char *task,
                              const char *dtype);

/* Appends every family, with # HELP and # TYPE lines, to out: families in a
 * fixed order, label sets sorted by their values. Process gauges (resident
 * memory) are read at this moment. On allocation failure out->oom is set. */
void srv_metrics_render(srv_metrics *m, srv_buf *out);

#endif
