/* A model's inference worker: its request queue and the thread that runs it.
 *
 * Jobs are queued by the loop thread and taken by the worker, which gathers
 * several into one forward pass (dynamic batching): a batch leaves when it
 * holds max_batch_size sequences or max_batch_tokens tokens, or when its oldest
 * request has waited max_batch_wait_us (unless traffic is too light to batch:
 * adaptive_batch_wait). A finished job goes back to the loop
 * thread through srv_worker_hooks.done, which answers and frees it: the loop
 * thread owns every job except while the worker holds it.
 *
 * A classification cheaper than the hand-off itself (the model's measured
 * cost per token times the request's tokens, below inline_max_us) that finds
 * the worker idle and its queue empty is computed on the loop thread instead:
 * with a trivially small model the queue, the two thread wake-ups and the
 * connection's suspend/resume cost more than the forward pass. */
#ifndef SRV_WORKER_H
#define SRV_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "engine/arena.h"
#include "models/model.h"
#include "server/classify.h"
#include "server/clip_task.h"
#include "server/generate.h"
#include "server/metrics.h"

typedef struct srv_job srv_job;
typedef struct srv_worker srv_worker;

struct srv_job {
    srv_job *next;           /* queue link */
    srv_worker *worker;
    void *conn;              /* the waiting request; NULL once its client left (loop thread) */
    atomic_bool cancelled;   /* set by the loop thread, read by the worker */
    atomic_bool shut_out;    /* cancelled by the shutdown deadline: answered 503 */
    bool answered;           /* loop thread: its stream has ended (conn let go) */
    bool in_batch;           /* worker: not cancelled when its batch began; a
                                batch reads this, never the moving flag above */
    int n_seq, n_tokens;     /* its size, for the batch limits */
    double t_enqueue;
    int rc;                  /* 0, or the forward's error in err */
    eng_err err;
    srv_classify_req cls;    /* MODEL_TASK_CLASSIFY */
    srv_gen_job gen;         /* MODEL_TASK_GENERATE */
    srv_clip_req clip;       /* MODEL_TASK_IMAGE_TEXT */
};

/* What a classify forward needs besides the model, for one thread that runs
 * them (the worker; the loop thread for inline jobs): the packed inputs, the
 * logits and the arena, grown to the largest batch seen, then reused. */
typedef struct srv_batch_scratch {
    eng_arena arena;
    int32_t *ids;
    int *off;
    float *logits;
    size_t cap_ids, cap_off, cap_logits;
} srv_batch_scratch;

typedef struct srv_worker_cfg {
    int max_batch_size;
    int max_batch_tokens;
    long max_batch_wait_us;
    bool adaptive_batch_wait;    /* skip the wait after a batch of one (see take_batch) */
    long inline_max_us;          /* 0: every job goes through the queue */
    int max_queue;
    long max_batch_total_tokens; /* generation: the KV-cache budget */
    srv_limits limits;           /* image limits, for decoding on the worker */
} srv_worker_cfg;

typedef struct srv_worker_hooks {
    void (*done)(void *ud, srv_job *job); /* called on the worker thread: hand back */
    void *ud;
    srv_metrics *metrics;
} srv_worker_hooks;

struct srv_worker {
    char *name;
    model *model;
    srv_worker_cfg cfg;
    srv_worker_hooks hooks;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    srv_job *head, *tail;     /* waiting jobs, oldest first */
    int n_waiting;
    int waiting_seqs, waiting_tokens; /* summed over the waiting jobs */
    bool busy;                /* the worker holds a batch */
    int last_batch_jobs;      /* requests computed in the last batch (0 before any) */
    _Atomic long ns_per_token; /* classify cost per token, averaged; 0 until measured */
    bool stopping;
    atomic_bool cut;          /* the shutdown deadline passed: end every job now */
    bool started;
    srv_batch_scratch work;   /* the worker's scratch; only its thread touches it */
    srv_batch_scratch inline_work; /* the loop thread's, for jobs it computes itself */
    struct srv_clip_state *clip; /* MODEL_TASK_IMAGE_TEXT buffers and text cache */
};

/* A worker exists from start-up, named, so requests that arrive while its
 * model loads can be refused by name; it runs once started with the model.
 * init/free and start/stop come in pairs. */
int srv_worker_init(srv_worker *w, const char *name);
void srv_worker_free(srv_worker *w);
int srv_worker_start(srv_worker *w, model *m, const srv_worker_cfg *cfg,
                     const srv_worker_hooks *hooks, eng_err *err);
/* Finishes every queued job, then joins the thread (no-op when not started). */
void srv_worker_stop(srv_worker *w);

/* At the shutdown deadline: every queued job, and every running generation,
 * ends at once without a result, marked shut_out. */
void srv_worker_cut(srv_worker *w);

/* Queues a job. Returns 0, or -1 when the queue is full (the caller answers 429). */
int srv_worker_submit(srv_worker *w, srv_job *job);

/* Loop thread: computes a classification job at once, as a batch of its own,
 * when it qualifies (see above), filling its rc, err and logits; returns
 * false, touching nothing, when it must be queued instead. */
bool srv_worker_run_inline(srv_worker *w, srv_job *job);

/* Marks a job abandoned; if still queued it is skipped, not computed. */
void srv_job_cancel(srv_job *job);

/* Frees a job and its task's data (loop thread). */
void srv_job_free(srv_job *job);

/* Internal to the workers: the image-text batch (server/worker_clip.c), and
 * growing a buffer to at least need elements of elem bytes (buffers only
 * grow, so a worker settles at its largest batch): 0, or -1 out of memory. */
int srv_grow(void **p, size_t *cap, size_t need, size_t elem);
void srv_worker_run_clip(srv_worker *w, srv_job *jobs);
void srv_worker_clip_free(srv_worker *w);

#endif
