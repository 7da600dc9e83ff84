#include "server/server.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/blas.h"
#include "engine/cpu.h"
#include "engine/linear.h"
#include "engine/pool.h"
#include "server/handlers.h"
#include "server/log.h"
#include "server/notify.h"
#include "server/version.h"


double srv_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

srv_worker *srv_server_model(srv_server *s, const char *name, size_t len)
{
    if (!name)
        return s->n_workers ? &s->workers[0] : NULL;
    for (size_t i = 0; i < s->n_workers; i++)
        if (strlen(s->opts->models[i].name) == len && memcmp(s->opts->models[i].name, name, len) == 0)
            return &s->workers[i];
    return NULL;
}

/* ---- jobs: worker -> loop thread -------------------------------------------- */

static void job_gone(void *arg)
{
    srv_job *job = arg;
    job->conn = NULL;
    srv_job_cancel(job);
}

/* Worker thread: queue the job for the loop thread. */
static void job_done(void *ud, srv_job *job)
{
    srv_server *s = ud;
    pthread_mutex_lock(&s->done_lock);
    job->next = s->done_head;
    s->done_head = job;
    pthread_mutex_unlock(&s->done_lock);
    uv_async_send(&s->done_async);
}

static void format_classify(const srv_job *job, srv_reply *r)
{
    if (job->rc)
        srv_reply_eng_error(r, &job->err);
    else if (job->worker->model->task == MODEL_TASK_IMAGE_TEXT)
        srv_clip_format(job->worker->model, &job->clip, r);
    else
        srv_classify_format(job->worker->model, &job->cls, r);
}

/* A job the shutdown deadline ended: a 503, or in a stream already answered
 * 200 an error event (in the stream's form) and the stream's end. */
static void end_shut_out(srv_conn *c, const srv_gen_job *gen)
{
    if (!gen || !gen->stream) {
        srv_reply_detail(srv_conn_reply(c), 503, SRV_SHUTTING_DOWN);
        srv_conn_resume(c);
        return;
    }
    srv_buf event;
    srv_buf_init(&event);
    srv_gen_stream_error(gen->form, SRV_SHUTTING_DOWN, "shutdown", &event);
    if (event.len)
        srv_conn_stream_write(c, event.data, event.len);
    srv_buf_free(&event);
    srv_conn_stream_end(c);
}

static void finish_classify(srv_server *s, srv_job *job)
{
    srv_conn *c = job->conn;
    s->in_flight--;
    if (c && atomic_load(&job->shut_out)) {
        end_shut_out(c, NULL);
    } else if (c) {
        format_classify(job, srv_conn_reply(c));
        srv_conn_resume(c);
    } else {
        srv_metrics_cancelled(s->metrics, job->worker->name);
    }
    srv_job_free(job);
}

/* A generation job is posted with news (streamed tokens) or when the worker
 * is done with it; only the latter frees it. */
static void finish_generate(srv_server *s, srv_job *job)
{
    srv_gen_job *g = &job->gen;
    srv_conn *c = job->conn;
    const model *m = job->worker->model;
    pthread_mutex_lock(&g->lock);
    g->posted = false;
    bool finished = g->finished;
    pthread_mutex_unlock(&g->lock);
    if (c && finished && atomic_load(&job->shut_out)) {
        end_shut_out(c, g);
        job->conn = NULL;
        job->answered = true;
    } else if (c && g->stream) {
        srv_buf events;
        srv_buf_init(&events);
        bool complete = srv_gen_stream_events(m, g, &events);
        if (events.len)
            srv_conn_stream_write(c, events.data, events.len);
        srv_buf_free(&events);
        if (complete) {
            srv_conn_stream_end(c);
            job->conn = NULL; /* the connection ends without us */
            job->answered = true;
        }
    } else if (c && finished) {
        srv_gen_format(m, g, srv_conn_reply(c));
        srv_conn_resume(c);
    }
    if (!finished)
        return;
    if (!c && !job->answered)
        srv_metrics_cancelled(s->metrics, job->worker->name);
    s->in_flight--;
    srv_job_free(job);
}

static void finish_job(srv_server *s, srv_job *job)
{
    if (job->worker->model->task == MODEL_TASK_GENERATE)
        finish_generate(s, job);
    else
        finish_classify(s, job);
}

static void on_jobs_done(uv_async_t *a)
{
    srv_server *s = a->data;
    pthread_mutex_lock(&s->done_lock);
    srv_job *jobs = s->done_head;
    s->done_head = NULL;
    pthread_mutex_unlock(&s->done_lock);
    while (jobs) {
        srv_job *next = jobs->next;
        finish_job(s, jobs);
        jobs = next;
    }
}

void srv_server_submit(srv_server *s, srv_conn *c, srv_job *job)
{
    srv_worker *w = job->worker;
    job->conn = c;
    if (srv_worker_run_inline(w, job)) {
        format_classify(job, srv_conn_reply(c));
        srv_job_free(job);
        srv_conn_send(c);
        return;
    }
    if (srv_worker_submit(w, job) != 0) {
        srv_metrics_rejected(s->metrics, w->name, "queue_full");
        srv_reply_detail(srv_conn_reply(c), 429, "Model is overloaded");
        srv_job_free(job);
        srv_conn_send(c);
        return;
    }
    s->in_flight++;
    if (w->model->task == MODEL_TASK_GENERATE && job->gen.stream)
        srv_conn_stream_start(c, "text/event-stream", job_gone, job);
    else
        srv_conn_defer(c, job_gone, job);
}

/* ---- loading --------------------------------------------------------------- */

/* Runs on libuv's pool so the loop answers /health (503) while models load. */
static void load_models(uv_work_t *work)
{
    srv_server *s = work->data;
    for (size_t i = 0; i < s->n_workers; i++) {
        const srv_model_spec *spec = &s->opts->models[i];
        model_load_opts lo = {.dtype = spec->dtype >= 0 ? spec->dtype : s->opts->dtype};
        double t0 = srv_now();
        if (model_load(spec->dir, &lo, &s->models[i], &s->load_err))
            return;
        srv_info("model %s: %s (%s) loaded from %s in %.2f s", spec->name,
                 s->models[i]->architecture, model_task_name(s->models[i]->task), spec->dir,
                 srv_now() - t0);
    }
}

static void begin_shutdown(srv_server *s, int exit_code);

static void models_loaded(uv_work_t *work, int status)
{
    srv_server *s = work->data;
    (void)status;
    if (s->load_err.code) {
        srv_error("%s", s->load_err.msg);
        begin_shutdown(s, 1);
        return;
    }
    srv_worker_cfg wc = {
        .max_batch_size = s->opts->max_batch_size, .max_batch_tokens = s->opts->max_batch_tokens,
        .max_batch_wait_us = s->opts->max_batch_wait_us,
        .adaptive_batch_wait = s->opts->adaptive_batch_wait, .max_queue = s->opts->max_queue,
        .inline_max_us = s->opts->inline_max_us,
        .max_batch_total_tokens = s->opts->max_batch_total_tokens, .limits = s->limits};
    srv_worker_hooks hooks = {.done = job_done, .ud = s, .metrics = s->metrics};
    for (size_t i = 0; i < s->n_workers; i++) {
        eng_err err = {0};
        if (srv_worker_start(&s->workers[i], s->models[i], &wc, &hooks, &err)) {
            srv_error("%s", err.msg);
            begin_shutdown(s, 1);
            return;
        }
        srv_metrics_model_loaded(s->metrics, s->opts->models[i].name,
                                 model_task_name(s->models[i]->task),
                                 eng_dtypes[s->models[i]->dtype].name);
        srv_metrics_queue_size(s->metrics, s->opts->models[i].name, 0); /* scale signal from the start */
    }
    s->state = SRV_STATE_READY;
    srv_info("ready: http://%s:%d/ serving %zu model%s", s->opts->host, srv_http_port(s->http),
             s->n_workers, s->n_workers == 1 ? "" : "s");
    srv_notify("READY=1");
}

/* ---- shutdown ------------------------------------------------------------- */

static void close_all(srv_server *s)
{
    for (size_t i = 0; i < s->n_workers; i++)
        srv_worker_stop(&s->workers[i]);
    on_jobs_done(&s->done_async); /* jobs the workers finished while stopping */
    if (s->http)
        srv_http_stop(s->http);
    s->http = NULL;
    uv_close((uv_handle_t *)&s->done_async, NULL);
    uv_close((uv_handle_t *)&s->sig_term, NULL);
    uv_close((uv_handle_t *)&s->sig_int, NULL);
    uv_close((uv_handle_t *)&s->drain_timer, NULL);
}

/* Every 20 ms while stopping: done when no request waits on a worker (or the
 * deadline passed), plus a short grace for the last answers to leave. */
static void on_drain_tick(uv_timer_t *t)
{
    srv_server *s = t->data;
    double now = srv_now();
    bool idle = s->in_flight == 0 && (!s->http || srv_http_deferred(s->http) == 0);
    if (!idle && now < s->drain_deadline)
        return;
    if (!idle && !s->drained_at) {
        srv_warn("shutdown deadline passed with %d requests unanswered", s->in_flight);
        for (size_t i = 0; i < s->n_workers; i++)
            srv_worker_cut(&s->workers[i]);
    }
    if (!s->drained_at)
        s->drained_at = now;
    if (now - s->drained_at < 0.2)
        return; /* let MHD flush the answers just resumed */
    uv_timer_stop(t);
    close_all(s);
}

static void begin_shutdown(srv_server *s, int exit_code)
{
    if (s->state == SRV_STATE_STOPPING)
        return;
    s->state = SRV_STATE_STOPPING;
    s->exit_code = exit_code;
    srv_notify("STOPPING=1");
    if (s->http)
        srv_http_quiesce(s->http);
    s->drain_deadline = srv_now() + s->opts->shutdown_timeout;
    uv_timer_start(&s->drain_timer, on_drain_tick, 0, 20);
}

static void on_signal(uv_signal_t *sig, int signum)
{
    srv_server *s = sig->data;
    if (s->state == SRV_STATE_STOPPING) {
        srv_warn("second %s: exiting without waiting", strsignal(signum));
        exit(s->exit_code ? s->exit_code : 1);
    }
    srv_info("%s: finishing %d in-flight requests (at most %d s), then exiting", strsignal(signum),
             s->in_flight, s->opts->shutdown_timeout);
    begin_shutdown(s, 0);
}

/* ---- run ------------------------------------------------------------------------ */

/* The loop and its handles first: once they exist, close_all can undo a
 * start that fails half-way. */
static void init_loop(srv_server *s)
{
    uv_loop_init(&s->loop);
    pthread_mutex_init(&s->done_lock, NULL);
    uv_async_init(&s->loop, &s->done_async, on_jobs_done);
    s->done_async.data = s;
    uv_signal_init(&s->loop, &s->sig_term);
    uv_signal_init(&s->loop, &s->sig_int);
    s->sig_term.data = s->sig_int.data = s;
    uv_signal_start(&s->sig_term, on_signal, SIGTERM);
    uv_signal_start(&s->sig_int, on_signal, SIGINT);
    uv_timer_init(&s->loop, &s->drain_timer);
    s->drain_timer.data = s;
}

static int start(srv_server *s, eng_err *err)
{
    s->workers = calloc(s->opts->n_models, sizeof *s->workers);
    s->models = calloc(s->opts->n_models, sizeof *s->models);
    if (!s->workers || !s->models)
        return eng_err_set(err, ENG_ENOMEM, "out of memory");
    s->n_workers = s->opts->n_models;
    for (size_t i = 0; i < s->n_workers; i++)
        if (srv_worker_init(&s->workers[i], s->opts->models[i].name))
            return eng_err_set(err, ENG_ENOMEM, "out of memory");
    s->limits = (srv_limits){.max_client_batch = (size_t)s->opts->max_client_batch_size,
                             .max_input_tokens = s->opts->max_input_tokens,
                             .max_new_tokens = s->opts->max_new_tokens_limit,
                             .max_batch_total_tokens = s->opts->max_batch_total_tokens,
                             .max_batch_seqs = s->opts->max_batch_size,
                             .max_batch_tokens = s->opts->max_batch_tokens,
                             .max_image_bytes = s->opts->max_image_bytes,
                             .max_image_pixels = s->opts->max_image_pixels};
    int rc = srv_auth_init(&s->auth, s->opts, err);
    if (rc)
        return rc;
    /* Said either way: an empty PREDICTD_API_KEY turns off a file's key. */
    srv_info("API key: %s", !s->auth.key ? "none, every endpoint is open"
                            : s->auth.protect_ops ? "required on every endpoint"
                                                  : "required on all but the probes (/health, /metrics, "
                                                    "/v2/health/*, /v2/models/*/ready)");
    rc = srv_metrics_new(PREDICTD_VERSION, eng_blas_corename(), eng_kernel_level(), &s->metrics);
    if (rc)
        return eng_err_set(err, rc, "out of memory");
    srv_http_cfg hc = {.host = s->opts->host, .port = s->opts->port,
                       .max_connections = s->opts->max_connections, .timeout_s = s->opts->timeout,
                       .request_timeout_s = s->opts->request_timeout,
                       .max_header_bytes = s->opts->max_header_bytes,
                       .max_body_bytes = s->opts->max_body_bytes};
    srv_http_hooks hooks = {.route = srv_route_request, .prepare_if = srv_request_arrived,
                            .prepare = srv_json_prepare, .prepared_free = srv_json_prepared_free,
                            .dispatch = srv_handle_request, .completed = srv_request_completed,
                            .ud = s};
    rc = srv_http_start(&s->http, &s->loop, &hc, &hooks, err);
    if (rc)
        return rc;
    srv_info("listening on http://%s:%d/ (%d compute threads, OpenBLAS core %s); loading %zu "
             "model%s", s->opts->host, srv_http_port(s->http), eng_pool_threads(), eng_blas_corename(),
             s->n_workers, s->n_workers == 1 ? "" : "s");
    s->load_work.data = s;
    return uv_queue_work(&s->loop, &s->load_work, load_models, models_loaded) ? ENG_ENOMEM : 0;
}

int srv_server_run(const srv_options *opts)
{
    srv_server s;
    memset(&s, 0, sizeof s);
    s.opts = opts;
    s.state = SRV_STATE_LOADING;
    /* A container's CPU quota, not the host's cores, is ours. The pool
     * does all parallel work; it sets OpenBLAS to one thread when created. */
    int threads = opts->threads > 0 ? opts->threads : eng_cpu_count();
    eng_pool_set_threads(threads);
    eng_pool_default();
    srv_info("kernels: %s%s%s", eng_kernel_level(), *eng_kernel_note() ? "; " : "", eng_kernel_note());
    eng_err err = {0};
    init_loop(&s);
    if (start(&s, &err)) {
        srv_error("%s", err.msg);
        s.exit_code = 1;
        s.state = SRV_STATE_STOPPING;
        close_all(&s);
    }
    uv_run(&s.loop, UV_RUN_DEFAULT);
    uv_loop_close(&s.loop);
    for (size_t i = 0; i < s.n_workers; i++) {
        srv_worker_free(&s.workers[i]);
        model_free(s.models[i]);
    }
    free(s.models);
    free(s.workers);
    srv_metrics_free(s.metrics);
    srv_auth_free(&s.auth);
    pthread_mutex_destroy(&s.done_lock);
    srv_info("stopped");
    return s.exit_code;
}
