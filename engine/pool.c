#include "engine/pool.h"

#include "engine/blas.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* How long a worker spins for the next run before sleeping. Long enough to
 * bridge the layer norm or attention between two linear layers, short enough
 * that an idle worker hands its core back to OpenBLAS quickly. */
#define SPIN_NS 50000

struct eng_pool {
    pthread_mutex_t run_lock; /* held by the caller for a whole run: runs are serialised */
    pthread_mutex_t mu;       /* with wake and done, for sleeping workers and caller */
    pthread_cond_t wake, done;
    pthread_t *workers;       /* (n_workers) */
    atomic_int n_workers;     /* changed only under run_lock (or by the sole owner) */
    /* The run's generation (high 32 bits) and the next task index to hand out
     * (low 32 bits). A thread takes a task with a compare-and-swap that also
     * checks the generation, so a worker that wakes after its run ended can
     * never take, or waste, a task of the next one. */
    _Atomic uint64_t ticket;
    atomic_int done_tasks;    /* tasks of the current run that have returned */
    atomic_bool stop;         /* set with a new generation when the workers must exit */
    /* The current run, written before its generation is published. n_tasks
     * is atomic because a late worker may read it while the next run is
     * being published (its compare-and-swap then fails). */
    atomic_int n_tasks;
    eng_pool_fn fn;
    void *ctx;
};

typedef struct worker_arg {
    eng_pool *p;
    int index;     /* 1..n_workers */
    uint32_t seen; /* the generation when the worker was started: runs after it are new */
} worker_arg;

/* True on a thread that is running a task: a nested run goes inline. */
static _Thread_local bool in_task;

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static uint32_t generation(const eng_pool *p)
{
    return (uint32_t)(atomic_load_explicit(&p->ticket, memory_order_acquire) >> 32);
}

/* Waits until a run newer than seen starts (spinning up to SPIN_NS, then on
 * the condition variable) and returns its generation. */
static uint32_t wait_for_run(eng_pool *p, uint32_t seen)
{
    long long t0 = now_ns();
    for (int i = 1; generation(p) == seen; i++) {
        cpu_relax();
        if ((i & 255) == 0 && now_ns() - t0 > SPIN_NS) {
            pthread_mutex_lock(&p->mu);
            while (generation(p) == seen)
                pthread_cond_wait(&p->wake, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
    }
    return generation(p);
}

/* Takes and runs tasks of run gen until none is left. A task is taken only
 * while the ticket still shows gen, so fn and ctx (which cannot change before
 * every task of gen has returned) are gen's. */
static void run_tasks(eng_pool *p, uint32_t gen, int thread)
{
    bool nested = in_task;
    in_task = true;
    for (;;) {
        uint64_t t = atomic_load_explicit(&p->ticket, memory_order_acquire);
        int n_tasks = atomic_load_explicit(&p->n_tasks, memory_order_relaxed);
        if ((uint32_t)(t >> 32) != gen || (uint32_t)t >= (uint32_t)n_tasks)
            break;
        if (!atomic_compare_exchange_weak_explicit(&p->ticket, &t, t + 1, memory_order_acq_rel,
                                                   memory_order_acquire))
            continue;
        /* The swap succeeded, so gen is still running and n_tasks was its. */
        p->fn(p->ctx, (int)(uint32_t)t, thread);
        if (atomic_fetch_add_explicit(&p->done_tasks, 1, memory_order_acq_rel) + 1 == n_tasks) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
    in_task = nested;
}

static void *worker_main(void *arg)
{
    worker_arg a = *(worker_arg *)arg;
    free(arg);
    eng_pool *p = a.p;
    for (uint32_t gen = a.seen;;) {
        gen = wait_for_run(p, gen);
        if (atomic_load(&p->stop))
            break;
        run_tasks(p, gen, a.index);
    }
    return NULL;
}

/* Publishes a run of n_tasks (0 to stop the workers) as the next generation
 * and wakes sleeping workers; returns the generation. */
static uint32_t publish(eng_pool *p, int n_tasks, eng_pool_fn fn, void *ctx)
{
    /* Close the previous run first: a worker still leaving run_tasks may hold
     * that run's ticket and read the new n_tasks below; once the ticket has
     * moved its compare-and-swap fails, so it cannot start a task of the new
     * run under an old index (and outlive the caller's ctx). */
    uint32_t prev = generation(p);
    atomic_store_explicit(&p->ticket, ((uint64_t)prev << 32) | 0xffffffffu, memory_order_release);
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->n_tasks, n_tasks, memory_order_relaxed);
    atomic_store_explicit(&p->done_tasks, 0, memory_order_relaxed);
    uint32_t gen = generation(p) + 1;
    pthread_mutex_lock(&p->mu);
    atomic_store_explicit(&p->ticket, (uint64_t)gen << 32, memory_order_release);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    return gen;
}

int eng_pool_cores(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    return 1;
}

/* Stops and joins every worker; the caller holds run_lock (or owns p alone). */
static void stop_workers(eng_pool *p)
{
    atomic_store(&p->stop, true);
    publish(p, 0, NULL, NULL);
    for (int i = 0; i < p->n_workers; i++)
        pthread_join(p->workers[i], NULL);
    free(p->workers);
    p->workers = NULL;
    p->n_workers = 0;
    atomic_store(&p->stop, false);
}

/* Starts threads-1 workers; the caller holds run_lock (or owns p alone). */
static int start_workers(eng_pool *p, int threads, eng_err *err)
{
    if (threads <= 0)
        threads = eng_pool_cores();
    if (threads == 1)
        return 0;
    p->workers = calloc((size_t)threads - 1, sizeof *p->workers);
    if (!p->workers)
        return eng_err_set(err, ENG_ENOMEM, "out of memory for %d pool threads", threads);
    uint32_t seen = generation(p);
    for (int i = 0; i < threads - 1; i++) {
        worker_arg *a = malloc(sizeof *a);
        int rc = -1;
        if (a) {
            *a = (worker_arg){p, i + 1, seen};
            rc = pthread_create(&p->workers[i], NULL, worker_main, a);
        }
        if (rc == 0) {
            p->n_workers++;
            continue;
        }
        free(a);
        return eng_err_set(err, ENG_ENOMEM, "could not start pool thread %d of %d: %s", i + 2,
                           threads, rc > 0 ? strerror(rc) : "out of memory");
    }
    return 0;
}

/* A pool without workers, or NULL when out of memory. */
static eng_pool *pool_alloc(void)
{
    eng_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    pthread_mutex_init(&p->run_lock, NULL);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    return p;
}

int eng_pool_create(eng_pool **out, int threads, eng_err *err)
{
    eng_pool *p = pool_alloc();
    if (!p)
        return eng_err_set(err, ENG_ENOMEM, "out of memory for a thread pool");
    int rc = start_workers(p, threads, err);
    if (rc < 0) {
        eng_pool_destroy(p);
        return rc;
    }
    *out = p;
    return 0;
}

void eng_pool_destroy(eng_pool *p)
{
    if (!p)
        return;
    stop_workers(p);
    pthread_mutex_destroy(&p->run_lock);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    free(p);
}

int eng_pool_size(const eng_pool *p)
{
    return p->n_workers + 1;
}

int eng_pool_resize(eng_pool *p, int threads, eng_err *err)
{
    pthread_mutex_lock(&p->run_lock);
    stop_workers(p);
    int rc = start_workers(p, threads, err);
    pthread_mutex_unlock(&p->run_lock);
    return rc;
}

void eng_pool_run(eng_pool *p, int n_tasks, eng_pool_fn fn, void *ctx)
{
    if (n_tasks <= 0)
        return;
    if (in_task || n_tasks == 1 || p->n_workers == 0) {
        bool nested = in_task;
        in_task = true;
        for (int t = 0; t < n_tasks; t++)
            fn(ctx, t, 0);
        in_task = nested;
        return;
    }
    pthread_mutex_lock(&p->run_lock);
    run_tasks(p, publish(p, n_tasks, fn, ctx), 0);
    /* Only tasks still running on workers are waited for: a worker that has
     * not woken yet holds nothing, so a busy core cannot stall the run. */
    long long t0 = now_ns();
    while (atomic_load_explicit(&p->done_tasks, memory_order_acquire) < n_tasks &&
           now_ns() - t0 < SPIN_NS)
        cpu_relax();
    pthread_mutex_lock(&p->mu);
    while (atomic_load_explicit(&p->done_tasks, memory_order_acquire) < n_tasks)
        pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
    pthread_mutex_unlock(&p->run_lock);
}

/* ---- The default pool ---------------------------------------------------------- */

static pthread_mutex_t default_lock = PTHREAD_MUTEX_INITIALIZER;
static eng_pool *_Atomic default_pool; /* set once, under default_lock */
static int default_threads;            /* 0: the cores */

eng_pool *eng_pool_default(void)
{
    eng_pool *ready = atomic_load_explicit(&default_pool, memory_order_acquire);
    if (ready)
        return ready; /* every forward asks: no lock once the pool exists */
    pthread_mutex_lock(&default_lock);
    if (!default_pool) {
        eng_pool *p = pool_alloc();
        /* Every parallel split of a forward is the pool's: OpenBLAS is left
         * the small products (attention heads inside pool tasks, tiny
         * layers), one thread each, so its own threads never spin on the
         * cores the pool is using. */
        eng_blas_set_threads(1);
        if (p) {
            /* A worker that fails to start leaves a smaller pool, which is
             * slower but computes the same results. */
            start_workers(p, default_threads, NULL);
            default_pool = p;
        }
    }
    eng_pool *p = default_pool;
    pthread_mutex_unlock(&default_lock);
    return p;
}

int eng_pool_threads(void)
{
    pthread_mutex_lock(&default_lock);
    int n = default_pool ? eng_pool_size(default_pool)
                         : (default_threads > 0 ? default_threads : eng_pool_cores());
    pthread_mutex_unlock(&default_lock);
    return n;
}

void eng_pool_set_threads(int threads)
{
    pthread_mutex_lock(&default_lock);
    default_threads = threads > 0 ? threads : 0;
    if (default_pool)
        eng_pool_resize(default_pool, default_threads, NULL);
    pthread_mutex_unlock(&default_lock);
}
