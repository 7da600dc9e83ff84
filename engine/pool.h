/* A small persistent thread pool for the engine's own kernels.
 *
 * A pool of N threads is the caller plus N-1 workers created once; a run
 * hands out task indices 0..n_tasks-1 to all N, each thread taking the next
 * index as it finishes one, and returns when every task is done. Nothing is
 * created per run: workers spin briefly for the next run (kernels of one
 * forward pass follow each other closely), then sleep on a condition variable
 * so an idle pool leaves the cores to OpenBLAS and the rest of the process.
 *
 * Runs are serialised: when several threads (several model workers) call
 * eng_pool_run at once, one run has the pool and the others wait for it, so
 * the machine is never asked for more than N busy threads by our kernels.
 * A run started from inside a task (or on a 1-thread pool) runs inline on the
 * calling thread, so nesting cannot deadlock. */
#ifndef ENG_POOL_H
#define ENG_POOL_H

#include "engine/error.h"

typedef struct eng_pool eng_pool;

/* Runs one task. thread is 0 for the caller and 1..N-1 for the workers, so a
 * task may index per-thread scratch by it. */
typedef void (*eng_pool_fn)(void *ctx, int task, int thread);

/* Creates a pool of threads threads (caller included; 0 means the cores this
 * process may run on). Returns 0, or a negative ENG_E* code with err filled
 * when a worker cannot be started. The caller owns *out and destroys it. */
int eng_pool_create(eng_pool **out, int threads, eng_err *err);

/* Stops and joins the workers. No run may be in progress. */
void eng_pool_destroy(eng_pool *p);

/* Threads a run of p uses, the caller included. */
int eng_pool_size(const eng_pool *p);

/* Changes p to threads threads (0: the cores), waiting for a run in progress
 * to end (so never from inside a task). Returns 0 or a negative ENG_E* code;
 * on failure p keeps the workers it could start. */
int eng_pool_resize(eng_pool *p, int threads, eng_err *err);

/* Calls fn(ctx, t, thread) for every t in [0, n_tasks) across the pool's
 * threads and returns when all have returned. */
void eng_pool_run(eng_pool *p, int n_tasks, eng_pool_fn fn, void *ctx);

/* The process's pool for the kernels, created on first use with
 * eng_pool_threads() threads (and OpenBLAS then set to one thread: the
 * pool does the engine's parallel work); NULL only when even the pool's struct cannot be
 * allocated (callers then run inline). If a worker cannot be started the pool
 * runs with the threads it has (slower, never wrong). */
eng_pool *eng_pool_default(void);

/* Threads the default pool uses: the cores unless set. */
int eng_pool_threads(void);

/* Sets the default pool's threads (0: the cores); resizes it if it exists
 * (waiting for a run in progress; never from inside a task). */
void eng_pool_set_threads(int threads);

/* Cores this process may run on (its CPU affinity), at least 1. */
int eng_pool_cores(void);

#endif
