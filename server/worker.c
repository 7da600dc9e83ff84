#include "server/worker.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/log.h"

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void srv_job_cancel(srv_job *job)
{
    atomic_store(&job->cancelled, true);
}

void srv_job_free(srv_job *job)
{
    model_task task = job->worker ? job->worker->model->task : MODEL_TASK_CLASSIFY;
    if (task == MODEL_TASK_GENERATE)
        srv_gen_job_free(&job->gen);
    else if (task == MODEL_TASK_IMAGE_TEXT)
        srv_clip_req_free(&job->clip);
    else
        srv_classify_req_free(&job->cls);
    free(job);
}

/* Sets the queue-size gauge; called with the lock held, so that the gauge's
 * writes come in the order of the changes (written after unlocking, a
 * submitter's stale count could land after the worker's newer one and leave
 * an idle queue showing 1). */
static void publish_queue_size(srv_worker *w)
{
    srv_metrics_queue_size(w->hooks.metrics, w->name, w->n_waiting);
}

/* Cancels a job for the shutdown deadline: its client is answered 503. */
static void shut_out(srv_job *job)
{
    atomic_store(&job->shut_out, true);
    atomic_store(&job->cancelled, true);
}

/* Whether the waiting jobs fill a batch. */
static bool batch_full(const srv_worker *w)
{
    return w->waiting_seqs >= w->cfg.max_batch_size || w->waiting_tokens >= w->cfg.max_batch_tokens;
}

int srv_worker_submit(srv_worker *w, srv_job *job)
{
    pthread_mutex_lock(&w->lock);
    if (w->n_waiting >= w->cfg.max_queue || w->stopping) {
        pthread_mutex_unlock(&w->lock);
        return -1;
    }
    bool was_empty = !w->head;
    job->worker = w;
    job->next = NULL;
    job->t_enqueue = mono_now();
    if (w->tail)
        w->tail->next = job;
    else
        w->head = job;
    w->tail = job;
    w->n_waiting++;
    w->waiting_seqs += job->n_seq;
    w->waiting_tokens += job->n_tokens;
    publish_queue_size(w);
    /* The worker waits either for a first job or for a batch to fill (or
     * its deadline): waking it for any other arrival would only send it
     * back to sleep -- under load, a futex wake per request. */
    if (was_empty || batch_full(w))
        pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
    return 0;
}

/* Unlinks and returns the waiting job *link points at (prev: the job
 * before it, NULL at the head); called with the lock held. */
static srv_job *unlink_at(srv_worker *w, srv_job **link, srv_job *prev)
{
    srv_job *j = *link;
    *link = j->next;
    if (w->tail == j)
        w->tail = prev;
    j->next = NULL;
    w->n_waiting--;
    w->waiting_seqs -= j->n_seq;
    w->waiting_tokens -= j->n_tokens;
    return j;
}

/* Unlinks and returns the oldest waiting job. */
static srv_job *dequeue(srv_worker *w)
{
    return unlink_at(w, &w->head, NULL);
}

static void deadline_after(struct timespec *ts, double t)
{
    ts->tv_sec = (time_t)t;
    ts->tv_nsec = (long)((t - (double)ts->tv_sec) * 1e9);
}

/* Waits for work, then for the batch to fill or its oldest job to have waited
 * long enough; returns the jobs taken (a list), NULL when stopping and idle.
 *
 * With adaptive_batch_wait, a batch after one that held a single request
 * leaves at once: requests are coming one at a time, and the wait would only
 * add itself to each one's latency. Batching still starts by itself when load
 * rises, from the requests that queue while a forward runs; from the first
 * batch of two or more, the wait applies again. */
static srv_job *take_batch(srv_worker *w)
{
    pthread_mutex_lock(&w->lock);
    while (!w->head && !w->stopping)
        pthread_cond_wait(&w->wake, &w->lock);
    bool light = w->cfg.adaptive_batch_wait && w->last_batch_jobs <= 1;
    if (w->head && !w->stopping && !light) {
        struct timespec until;
        deadline_after(&until, w->head->t_enqueue + w->cfg.max_batch_wait_us * 1e-6);
        while (!batch_full(w) && !w->stopping &&
               pthread_cond_timedwait(&w->wake, &w->lock, &until) == 0)
            ;
    }
    srv_job *taken = NULL, **link = &taken;
    int seqs = 0, tokens = 0, live = 0;
    while (w->head) {
        srv_job *j = w->head;
        bool fits = seqs + j->n_seq <= w->cfg.max_batch_size &&
                    tokens + j->n_tokens <= w->cfg.max_batch_tokens;
        if (!fits && seqs > 0)
            break; /* a job larger than the limits still runs, alone */
        dequeue(w);
        *link = j;
        link = &j->next;
        if (!atomic_load(&j->cancelled)) {
            seqs += j->n_seq;
            tokens += j->n_tokens;
            live++;
        }
    }
    w->busy = taken != NULL;
    w->last_batch_jobs = live;
    publish_queue_size(w);
    pthread_mutex_unlock(&w->lock);
    return taken;
}

/* Packs the live jobs' sequences into one batch, runs it, and gives each job
 * its rows of logits.
 *
 * Which jobs are live is read once, into in_batch: the loop thread cancels a
 * job whose client leaves at any moment, even while the batch computes, and
 * the rows must be handed out exactly as they were packed (re-reading the flag
 * after the forward shifted every later job onto the rows of the one that left). */
/* A moving average of the cost per token (1/8 weight to the newest batch),
 * so one batch slowed by a preempted core does not flip the inline choice.
 * The worker and the loop thread both update it; a lost update only delays
 * the average. */
static void note_cost(srv_worker *w, double ns_per_token)
{
    long old = atomic_load(&w->ns_per_token);
    double avg = old > 0 ? old + (ns_per_token - old) / 8 : ns_per_token;
    atomic_store(&w->ns_per_token, (long)avg + 1);
}

int srv_grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    void *q = realloc(*p, need * elem);
    if (!q)
        return -1;
    *p = q;
    *cap = need;
    return 0;
}

static void batch_scratch_free(srv_batch_scratch *bs)
{
    eng_arena_free(&bs->arena);
    free(bs->ids), free(bs->off), free(bs->logits);
    memset(bs, 0, sizeof *bs);
}

static void run_classify(srv_worker *w, srv_job *jobs, srv_batch_scratch *bs)
{
    const model *m = w->model;
    int n_seq = 0, n_tok = 0, max_len = 0;
    for (srv_job *j = jobs; j; j = j->next) {
        j->in_batch = !atomic_load(&j->cancelled);
        if (!j->in_batch)
            continue;
        n_seq += j->n_seq;
        n_tok += j->n_tokens;
        for (size_t i = 0; i < j->cls.n; i++)
            max_len = (int)j->cls.enc[i].n > max_len ? (int)j->cls.enc[i].n : max_len;
    }
    if (!n_seq)
        return;
    int s = 0, rc = 0;
    if (srv_grow((void **)&bs->ids, &bs->cap_ids, (size_t)n_tok, sizeof *bs->ids) ||
        srv_grow((void **)&bs->off, &bs->cap_off, (size_t)n_seq + 1, sizeof *bs->off) ||
        srv_grow((void **)&bs->logits, &bs->cap_logits, (size_t)n_seq * m->n_labels,
                 sizeof *bs->logits))
        rc = ENG_ENOMEM;
    int32_t *ids = bs->ids;
    int *off = bs->off;
    float *logits = bs->logits;
    eng_err err = {0};
    if (!rc) {
        off[0] = 0;
        for (srv_job *j = jobs; j; j = j->next)
            for (size_t i = 0; j->in_batch && i < j->cls.n; i++, s++) {
                memcpy(ids + off[s], j->cls.enc[i].ids, j->cls.enc[i].n * sizeof *ids);
                off[s + 1] = off[s] + (int)j->cls.enc[i].n;
            }
        rc = eng_arena_reserve(&bs->arena, m->ops->scratch_size(m, n_tok, max_len));
        if (rc)
            eng_err_set(&err, rc, "out of memory for a batch of %d tokens", n_tok);
    }
    double t0 = mono_now();
    if (!rc) {
        model_batch b = {.ids = ids, .seq_off = off, .n_seq = n_seq};
        rc = m->ops->classify(m, &b, &bs->arena, logits, &err);
    } else if (!err.code) {
        eng_err_set(&err, rc, "out of memory");
    }
    double seconds = mono_now() - t0;
    if (!rc)
        note_cost(w, seconds * 1e9 / n_tok);
    srv_metrics_batch(w->hooks.metrics, w->name, n_seq, n_tok, seconds);
    s = 0;
    for (srv_job *j = jobs; j; j = j->next) {
        if (!j->in_batch)
            continue;
        srv_metrics_queue_wait(w->hooks.metrics, w->name, t0 - j->t_enqueue);
        j->rc = rc;
        j->err = err;
        if (!rc)
            memcpy(j->cls.logits, logits + (size_t)s * m->n_labels,
                   (size_t)j->n_seq * m->n_labels * sizeof *logits);
        s += j->n_seq;
    }
}

bool srv_worker_run_inline(srv_worker *w, srv_job *job)
{
    long per_token = atomic_load(&w->ns_per_token);
    if (w->model->task != MODEL_TASK_CLASSIFY || per_token <= 0 ||
        (double)per_token * job->n_tokens >= w->cfg.inline_max_us * 1e3)
        return false;
    pthread_mutex_lock(&w->lock);
    bool idle = !w->head && !w->busy && !w->stopping;
    pthread_mutex_unlock(&w->lock);
    if (!idle)
        return false; /* never overtake queued work */
    job->worker = w;
    job->next = NULL;
    job->t_enqueue = mono_now();
    run_classify(w, job, &w->inline_work);
    srv_metrics_inline(w->hooks.metrics, w->name);
    return true;
}

/* ---- generation: continuous batching ------------------------------------ */

/* Ends a running generation whose client left, or any at the deadline. */
static bool job_cancelled(void *owner)
{
    srv_job *job = owner;
    if (atomic_load(&job->worker->cut))
        shut_out(job);
    return atomic_load(&job->cancelled);
}

static void job_news(void *ud, void *owner)
{
    srv_worker *w = ud;
    w->hooks.done(w->hooks.ud, owner);
}

/* Hands back a queued job whose client left, without running it. */
static void drop_queued(srv_worker *w, srv_job *job)
{
    pthread_mutex_lock(&job->gen.lock);
    job->gen.finished = true;
    job->gen.posted = true;
    pthread_mutex_unlock(&job->gen.lock);
    w->hooks.done(w->hooks.ud, job);
}

/* Hands back the queued jobs whose clients left, wherever they wait: behind
 * a head that waits for KV room they would keep their queue slots (and
 * count against --max-queue) for as long as it waits. */
static void drop_cancelled_queued(srv_worker *w)
{
    srv_job **link = &w->head, *prev = NULL;
    while (*link) {
        if (atomic_load(&(*link)->cancelled)) {
            drop_queued(w, unlink_at(w, link, prev));
        } else {
            prev = *link;
            link = &(*link)->next;
        }
    }
}

/* Moves queued jobs into the running set while the KV budget allows; waits
 * when there is nothing to do. Returns false when stopping and drained. */
static bool admit(srv_worker *w, srv_gen_sched *sched)
{
    pthread_mutex_lock(&w->lock);
    for (;;) {
        drop_cancelled_queued(w);
        while (w->head && srv_gen_sched_admit(sched, &w->head->gen, w->head)) {
            srv_job *j = dequeue(w);
            srv_metrics_queue_wait(w->hooks.metrics, w->name, mono_now() - j->t_enqueue);
        }
        if (srv_gen_sched_running(sched) || (w->stopping && !w->head))
            break;
        pthread_cond_wait(&w->wake, &w->lock);
    }
    bool more = srv_gen_sched_running(sched) > 0;
    publish_queue_size(w);
    pthread_mutex_unlock(&w->lock);
    return more;
}

static void run_generate(srv_worker *w)
{
    srv_gen_sched_cfg cfg = {.max_batch_size = w->cfg.max_batch_size,
                             .max_batch_tokens = w->cfg.max_batch_tokens,
                             .max_batch_total_tokens = w->cfg.max_batch_total_tokens};
    srv_gen_sched *sched;
    eng_err err = {0};
    if (srv_gen_sched_new(w->model, &cfg, &sched, &err)) {
        srv_error("model %s: %s", w->name, err.msg);
        return;
    }
    while (admit(w, sched)) {
        long before = srv_gen_sched_generated(sched);
        double t0 = mono_now();
        int seqs = srv_gen_sched_sequences(sched);
        if (srv_gen_sched_step(sched, job_cancelled, job_news, w, &err))
            srv_error("model %s: %s", w->name, err.msg);
        srv_metrics_batch(w->hooks.metrics, w->name, seqs, 0, mono_now() - t0);
        srv_metrics_generation(w->hooks.metrics, w->name, (int)(srv_gen_sched_generated(sched) - before),
                               srv_gen_sched_sequences(sched), srv_gen_sched_kv_used(sched),
                               srv_gen_sched_kv_capacity(sched));
    }
    srv_gen_sched_free(sched);
}

static void *worker_main(void *arg)
{
    srv_worker *w = arg;
    if (w->model->task == MODEL_TASK_GENERATE) {
        run_generate(w);
        return NULL;
    }
    for (;;) {
        srv_job *jobs = take_batch(w);
        if (!jobs)
            break;
        if (w->model->task == MODEL_TASK_CLASSIFY)
            run_classify(w, jobs, &w->work);
        else if (w->model->task == MODEL_TASK_IMAGE_TEXT)
            srv_worker_run_clip(w, jobs);
        pthread_mutex_lock(&w->lock);
        w->busy = false;
        pthread_mutex_unlock(&w->lock);
        while (jobs) {
            srv_job *next = jobs->next;
            w->hooks.done(w->hooks.ud, jobs);
            jobs = next;
        }
    }
    return NULL;
}

int srv_worker_init(srv_worker *w, const char *name)
{
    memset(w, 0, sizeof *w);
    w->name = strdup(name);
    eng_arena_init(&w->work.arena);
    eng_arena_init(&w->inline_work.arena);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&w->wake, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_init(&w->lock, NULL);
    return w->name ? 0 : ENG_ENOMEM;
}

int srv_worker_start(srv_worker *w, model *m, const srv_worker_cfg *cfg,
                     const srv_worker_hooks *hooks, eng_err *err)
{
    w->model = m;
    w->cfg = *cfg;
    w->hooks = *hooks;
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
        return eng_err_set(err, ENG_ENOMEM, "cannot start the worker of model %s", w->name);
    w->started = true;
    return 0;
}

void srv_worker_stop(srv_worker *w)
{
    if (!w->started)
        return;
    pthread_mutex_lock(&w->lock);
    w->stopping = true;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    w->started = false;
}

void srv_worker_cut(srv_worker *w)
{
    pthread_mutex_lock(&w->lock);
    atomic_store(&w->cut, true);
    for (srv_job *j = w->head; j; j = j->next)
        shut_out(j);
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
}

void srv_worker_free(srv_worker *w)
{
    if (!w->name)
        return; /* never initialised */
    srv_worker_stop(w);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->wake);
    batch_scratch_free(&w->work);
    batch_scratch_free(&w->inline_work);
    srv_worker_clip_free(w);
    free(w->name);
    w->name = NULL;
}
