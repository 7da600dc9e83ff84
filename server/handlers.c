#include "server/handlers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "engine/linear.h"
#include "server/classify.h"
#include "server/clip_task.h"
#include "server/docs.h"
#include "server/generate.h"
#include "server/kserve.h"
#include "server/log.h"
#include "server/server.h"
#include "server/tokenize.h"

/* What the dispatcher learned about a request, kept until it completes. */
typedef struct req_ctx {
    const srv_route *route;
    srv_worker *worker; /* the model named in the path, or the default model */
    bool arrived_ready; /* its body was in while the server was ready */
} req_ctx;

srv_request srv_request_of(srv_server *s, srv_conn *c)
{
    srv_request in = {.limits = &s->limits, .content_type = srv_conn_header(c, "Content-Type"),
                      .prepared = srv_conn_prepared(c)};
    in.query_text = srv_conn_query(c, "text", &in.query_text_len);
    in.body = srv_conn_body(c, &in.body_len);
    return in;
}

bool srv_request_admitted(const srv_server *s, void *ctx)
{
    return s->state == SRV_STATE_READY ||
           (s->state == SRV_STATE_STOPPING && ((req_ctx *)ctx)->arrived_ready);
}

/* Answers 503 unless the request may run a model (srv_request_admitted). */
static bool ready(srv_server *s, srv_conn *c)
{
    if (srv_request_admitted(s, srv_conn_data(c)))
        return true;
    srv_reply_detail(srv_conn_reply(c), 503, s->state == SRV_STATE_LOADING
                                                 ? "Model is loading" : SRV_SHUTTING_DOWN);
    srv_conn_send(c);
    return false;
}

/* ---- POST /predict ------------------------------------------------------------ */

static void predict_classify(srv_server *s, srv_conn *c, srv_worker *w)
{
    srv_request in = srv_request_of(s, c);
    srv_job *job = calloc(1, sizeof *job);
    if (!job) {
        srv_reply_detail(srv_conn_reply(c), 503, "out of memory");
        srv_conn_send(c);
        return;
    }
    if (srv_classify_parse(w->model, &in, &job->cls, srv_conn_reply(c))) {
        free(job);
        srv_conn_send(c);
        return;
    }
    job->worker = w;
    job->n_seq = (int)job->cls.n;
    for (size_t i = 0; i < job->cls.n; i++)
        job->n_tokens += (int)job->cls.enc[i].n;
    srv_metrics_input_tokens(s->metrics, w->name, job->n_tokens);
    srv_server_submit(s, c, job);
}

/* Parses a generation request of the given form and hands it to the
 * model's scheduler; stream answers with server-sent events. */
static void submit_generate(srv_server *s, srv_conn *c, srv_worker *w, srv_gen_form form,
                            bool stream)
{
    srv_request in = srv_request_of(s, c);
    srv_job *job = calloc(1, sizeof *job);
    if (!job) {
        srv_reply_detail(srv_conn_reply(c), 503, "out of memory");
        srv_conn_send(c);
        return;
    }
    job->worker = w;
    job->gen.stream = stream;
    if (srv_gen_parse(w->model, form, &in, &job->gen, srv_conn_reply(c))) {
        srv_job_free(job);
        srv_conn_send(c);
        return;
    }
    snprintf(job->gen.model_name, sizeof job->gen.model_name, "%s", w->name);
    job->n_seq = (int)job->gen.n;
    for (size_t i = 0; i < job->gen.n; i++)
        job->n_tokens += job->gen.seqs[i].n_prompt;
    srv_metrics_input_tokens(s->metrics, w->name, job->n_tokens);
    srv_server_submit(s, c, job);
}

static bool is_generative(srv_conn *c, srv_worker *w)
{
    if (w->model->task == MODEL_TASK_GENERATE)
        return true;
    srv_reply_detail(srv_conn_reply(c), 422, "model '%s' does %s, not text-generation", w->name,
                     model_task_name(w->model->task));
    srv_conn_send(c);
    return false;
}

static void handle_generate(void *server, srv_conn *c, void *ctx)
{
    srv_worker *w = ((req_ctx *)ctx)->worker;
    if (ready(server, c) && is_generative(c, w))
        submit_generate(server, c, w, SRV_GEN_TGI, false);
}

static void handle_generate_stream(void *server, srv_conn *c, void *ctx)
{
    srv_worker *w = ((req_ctx *)ctx)->worker;
    if (ready(server, c) && is_generative(c, w))
        submit_generate(server, c, w, SRV_GEN_TGI, true);
}

/* OpenAI picks the model by the body's "model" field: a served model's
 * name, or absent for the default. */
static void handle_completions(void *server, srv_conn *c, void *ctx)
{
    (void)ctx;
    srv_server *s = server;
    if (!ready(s, c))
        return;
    srv_request in = srv_request_of(s, c);
    void *root;
    if (srv_json_body(&in, &root, srv_conn_reply(c))) {
        srv_conn_send(c);
        return;
    }
    char name[80];
    size_t len = 0;
    bool named = srv_json_string_field(root, "model", name, sizeof name, &len);
    srv_json_free(root);
    /* A name cut by the copy (too long, or a NUL in it) names no model. */
    srv_worker *w = !named ? srv_server_model(s, NULL, 0)
                    : len == strlen(name) ? srv_server_model(s, name, len) : NULL;
    if (!w) {
        srv_reply_detail(srv_conn_reply(c), 404, "Model '%s' not found", name);
        srv_conn_send(c);
        return;
    }
    ((req_ctx *)ctx)->worker = w;
    if (is_generative(c, w))
        submit_generate(s, c, w, SRV_GEN_OPENAI, false); /* "stream" is read from the body */
}

/* CLIP: zero-shot, image-text logits (/predict) or embeddings (/embed). */
static void submit_clip(srv_server *s, srv_conn *c, srv_worker *w, bool embed)
{
    srv_request in = srv_request_of(s, c);
    srv_job *job = calloc(1, sizeof *job);
    if (!job) {
        srv_reply_detail(srv_conn_reply(c), 503, "out of memory");
        srv_conn_send(c);
        return;
    }
    job->worker = w;
    if (srv_clip_parse(w->model, &in, embed, &job->clip, srv_conn_reply(c))) {
        srv_job_free(job);
        srv_conn_send(c);
        return;
    }
    job->n_seq = (int)(job->clip.n_images + job->clip.n_texts);
    job->n_tokens = (int)job->clip.n_images * 50;
    for (size_t i = 0; i < job->clip.n_texts; i++)
        job->n_tokens += (int)job->clip.texts[i].n;
    srv_metrics_input_tokens(s->metrics, w->name, job->n_tokens);
    srv_server_submit(s, c, job);
}

static void handle_embed(void *server, srv_conn *c, void *ctx)
{
    srv_worker *w = ((req_ctx *)ctx)->worker;
    if (!ready(server, c))
        return;
    if (w->model->task != MODEL_TASK_IMAGE_TEXT) {
        srv_reply_detail(srv_conn_reply(c), 422, "model '%s' does %s; /embed serves image-text models",
                         w->name, model_task_name(w->model->task));
        srv_conn_send(c);
        return;
    }
    submit_clip(server, c, w, true);
}

static void handle_predict(void *server, srv_conn *c, void *ctx)
{
    srv_server *s = server;
    srv_worker *w = ((req_ctx *)ctx)->worker;
    if (!ready(s, c))
        return;
    switch (w->model->task) {
    case MODEL_TASK_CLASSIFY:
        predict_classify(s, c, w);
        return;
    case MODEL_TASK_GENERATE:
        submit_generate(s, c, w, SRV_GEN_PIPELINE, false);
        return;
    case MODEL_TASK_IMAGE_TEXT:
        submit_clip(s, c, w, false);
        return;
    }
}

/* ---- POST /tokenize ------------------------------------------------------------ */

static void handle_tokenize(void *server, srv_conn *c, void *ctx)
{
    srv_server *s = server;
    srv_worker *w = ((req_ctx *)ctx)->worker;
    if (!ready(s, c))
        return;
    srv_request in = srv_request_of(s, c);
    srv_tokenize_handle(w->model, &in, srv_conn_reply(c));
    srv_conn_send(c);
}

/* ---- operations ------------------------------------------------------------------- */

static void handle_health(void *server, srv_conn *c, void *ctx)
{
    (void)ctx;
    srv_server *s = server;
    static const char *const states[] = {"loading", "ok", "stopping"};
    srv_reply *r = srv_conn_reply(c);
    srv_reply_json(r, s->state == SRV_STATE_READY ? 200 : 503);
    srv_buf_printf(&r->body, "{\"status\":\"%s\"}", states[s->state]);
    srv_conn_send(c);
}

static void handle_metrics(void *server, srv_conn *c, void *ctx)
{
    (void)ctx;
    srv_server *s = server;
    srv_reply *r = srv_conn_reply(c);
    srv_reply_json(r, 200);
    r->content_type = SRV_METRICS_CONTENT_TYPE;
    srv_metrics_render(s->metrics, &r->body);
    srv_conn_send(c);
}

static void write_model(srv_server *s, size_t i, srv_buf *b)
{
    const srv_model_spec *spec = &s->opts->models[i];
    const model *m = s->models[i];
    srv_buf_puts(b, "{\"name\":");
    srv_json_cstr(b, spec->name);
    srv_buf_printf(b, ",\"default\":%s,\"loaded\":%s", i == 0 ? "true" : "false",
                   m && s->state != SRV_STATE_LOADING ? "true" : "false");
    if (m && s->state != SRV_STATE_LOADING) {
        srv_buf_printf(b, ",\"task\":\"%s\",\"architecture\":", model_task_name(m->task));
        srv_json_cstr(b, m->architecture);
        srv_buf_printf(b, ",\"dtype\":\"%s\",\"kernels\":\"%s\",\"max_input_tokens\":%d",
                       eng_dtypes[m->dtype].name, eng_kernel_level(),
                       srv_limits_input_tokens(&s->limits, m->max_positions));
    }
    srv_buf_puts(b, "}");
}

static void handle_models(void *server, srv_conn *c, void *ctx)
{
    (void)ctx;
    srv_server *s = server;
    srv_reply *r = srv_conn_reply(c);
    srv_reply_json(r, 200);
    srv_buf_puts(&r->body, "{\"models\":[");
    for (size_t i = 0; i < s->n_workers; i++) {
        if (i)
            srv_buf_puts(&r->body, ",");
        write_model(s, i, &r->body);
    }
    srv_buf_puts(&r->body, "]}");
    srv_conn_send(c);
}

/* Answers 200 with a fixed document. */
static void send_document(srv_conn *c, const char *content_type, const char *text)
{
    srv_reply *r = srv_conn_reply(c);
    srv_reply_json(r, 200);
    r->content_type = content_type;
    srv_buf_puts(&r->body, text);
    srv_conn_send(c);
}

static void handle_openapi(void *server, srv_conn *c, void *ctx)
{
    (void)server;
    (void)ctx;
    send_document(c, "application/json", srv_openapi_json());
}

static void handle_docs(void *server, srv_conn *c, void *ctx)
{
    (void)server;
    (void)ctx;
    send_document(c, "text/html; charset=utf-8", srv_docs_html());
}

/* ---- routing ------------------------------------------------------------------------ */

struct srv_worker *srv_request_worker(void *ctx)
{
    return ((req_ctx *)ctx)->worker;
}

static const srv_route routes[] = {
    {"/predict", "POST", "/predict", true, handle_predict},
    {"/models/{name}/predict", "POST", "/models/{name}/predict", true, handle_predict},
    {"/tokenize", "POST", "/tokenize", true, handle_tokenize},
    {"/models/{name}/tokenize", "POST", "/models/{name}/tokenize", true, handle_tokenize},
    {"/generate", "POST", "/generate", true, handle_generate},
    {"/generate_stream", "POST", "/generate_stream", true, handle_generate_stream},
    {"/models/{name}/generate", "POST", "/models/{name}/generate", true, handle_generate},
    {"/models/{name}/generate_stream", "POST", "/models/{name}/generate_stream", true,
     handle_generate_stream},
    {"/v1/completions", "POST", "/v1/completions", false, handle_completions},
    {"/embed", "POST", "/embed", true, handle_embed},
    {"/models/{name}/embed", "POST", "/models/{name}/embed", true, handle_embed},
    {"/v2", "GET", "/v2", false, srv_v2_server_metadata},
    {"/v2/health/live", "GET", "/v2/health/live", false, srv_v2_server_live, true},
    {"/v2/health/ready", "GET", "/v2/health/ready", false, srv_v2_server_ready, true},
    {"/v2/models/{name}", "GET", "/v2/models/{name}", true, srv_v2_model_metadata},
    {"/v2/models/{name}/ready", "GET", "/v2/models/{name}/ready", true, srv_v2_model_ready, true},
    {"/v2/models/{name}/infer", "POST", "/v2/models/{name}/infer", true, srv_v2_infer},
    /* The one version each model's metadata names. */
    {"/v2/models/{name}/versions/1", "GET", "/v2/models/{name}/versions/1", true,
     srv_v2_model_metadata},
    {"/v2/models/{name}/versions/1/ready", "GET", "/v2/models/{name}/versions/1/ready", true,
     srv_v2_model_ready, true},
    {"/v2/models/{name}/versions/1/infer", "POST", "/v2/models/{name}/versions/1/infer", true,
     srv_v2_infer},
    {"/models", "GET", "/models", false, handle_models},
    {"/health", "GET", "/health", false, handle_health, true},
    {"/metrics", "GET", "/metrics", false, handle_metrics, true},
    {"/openapi.json", "GET", "/openapi.json", false, handle_openapi},
    {"/docs", "GET", "/docs", false, handle_docs},
};

const srv_route *srv_routes(size_t *n)
{
    *n = sizeof routes / sizeof *routes;
    return routes;
}

/* Matches path against pattern; a {param} segment matches one non-empty
 * segment, returned in *param / *param_len. */
static bool match(const char *pattern, const char *path, const char **param, size_t *param_len)
{
    while (*pattern && *path) {
        if (*pattern == '{') {
            size_t n = strcspn(path, "/");
            if (!n)
                return false;
            *param = path;
            *param_len = n;
            path += n;
            pattern = strchr(pattern, '}') + 1;
        } else if (*pattern++ != *path++) {
            return false;
        }
    }
    return !*pattern && !*path;
}

static void not_allowed(srv_conn *c, const char *path)
{
    srv_reply *r = srv_conn_reply(c);
    char *allow = r->allow;
    const char *param;
    size_t len;
    for (size_t i = 0; i < sizeof routes / sizeof *routes; i++)
        if (match(routes[i].pattern, path, &param, &len) && !strstr(allow, routes[i].method))
            snprintf(allow + strlen(allow), sizeof r->allow - strlen(allow), "%s%s",
                     allow[0] ? ", " : "", routes[i].method);
    srv_reply_detail(r, 405, "Method Not Allowed");
}

static void refuse_key(srv_conn *c)
{
    srv_reply *r = srv_conn_reply(c);
    srv_reply_detail(r, 401, srv_conn_header(c, "Authorization") ? "Invalid API key"
                                                                  : "Not authenticated");
    r->challenge = "Bearer";
}

bool srv_route_request(void *server, srv_conn *c)
{
    srv_server *s = server;
    const char *method = srv_conn_method(c), *path = srv_conn_path(c), *param = NULL;
    size_t param_len = 0;
    bool path_known = false;
    for (size_t i = 0; i < sizeof routes / sizeof *routes; i++) {
        if (!match(routes[i].pattern, path, &param, &param_len))
            continue;
        path_known = true;
        bool head_of_get = strcmp(method, "HEAD") == 0 && strcmp(routes[i].method, "GET") == 0;
        if (strcmp(method, routes[i].method) != 0 && !head_of_get)
            continue;
        req_ctx *ctx = calloc(1, sizeof *ctx);
        if (!ctx) {
            srv_reply_detail(srv_conn_reply(c), 503, "out of memory");
            return false;
        }
        ctx->route = &routes[i];
        srv_conn_set_data(c, ctx);
        if (!srv_auth_allows(&s->auth, routes[i].ops, srv_conn_header(c, "Authorization"))) {
            refuse_key(c);
            return false;
        }
        if (routes[i].per_model && !(ctx->worker = srv_server_model(s, param, param_len))) {
            srv_reply_detail(srv_conn_reply(c), 404, "Model '%.*s' not found", (int)param_len, param);
            return false;
        }
        return true;
    }
    if (path_known)
        not_allowed(c, path);
    else
        srv_reply_detail(srv_conn_reply(c), 404, "Not Found");
    return false;
}

bool srv_request_arrived(void *server, srv_conn *c)
{
    srv_server *s = server;
    req_ctx *ctx = srv_conn_data(c);
    ctx->arrived_ready = s->state == SRV_STATE_READY;
    if (!ctx->arrived_ready)
        return false; /* answered 503 at once: nothing to parse for */
    size_t len;
    srv_conn_body(c, &len);
    if (len < SRV_PREPARE_MIN_BYTES || strcmp(srv_conn_method(c), "POST") != 0)
        return false;
    const char *type = srv_conn_header(c, "Content-Type");
    return !(type && strncasecmp(type, "multipart/form-data", 19) == 0);
}

void srv_handle_request(void *server, srv_conn *c)
{
    req_ctx *ctx = srv_conn_data(c);
    ctx->route->handle(server, c, ctx);
}

void srv_request_completed(void *server, srv_conn *c)
{
    srv_server *s = server;
    req_ctx *ctx = srv_conn_data(c);
    const char *endpoint = ctx ? ctx->route->metric : "other";
    const char *model_name = ctx && ctx->worker ? ctx->worker->name : "";
    int status = srv_conn_abandoned(c) ? 499 : srv_conn_status(c);
    double seconds = srv_now() - srv_conn_start_time(c);
    srv_metrics_request(s->metrics, model_name, endpoint, status, seconds);
    if (s->opts->access_log)
        srv_log_access(srv_conn_method(c), srv_conn_path(c), status, srv_conn_bytes_sent(c),
                       seconds, model_name);
    free(ctx);
}
