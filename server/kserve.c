#include "server/kserve.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/handlers.h"
#include "server/server.h"
#include "server/version.h"

#define MAX_TEXTS 1024

/* Errors in the protocol's shape: {"error": "..."}. */
static void v2_error(srv_conn *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void v2_error(srv_conn *c, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    srv_reply *r = srv_conn_reply(c);
    srv_reply_json(r, status);
    srv_buf_puts(&r->body, "{\"error\":");
    srv_json_cstr(&r->body, msg);
    srv_buf_puts(&r->body, "}");
    srv_conn_send(c);
}

/* Sends a refusal the shared parsers wrote for FastAPI's shape in the
 * protocol's: {"error": "..."} (srv_reply.error), a 400 for the client's
 * faults. */
static void send_as_v2(srv_conn *c)
{
    const srv_reply *r = srv_conn_reply(c);
    char msg[sizeof r->error];
    snprintf(msg, sizeof msg, "%s", r->error[0] ? r->error : "invalid request");
    v2_error(c, r->status >= 500 ? r->status : 400, "%s", msg);
}

static void answer(srv_conn *c, int status, const char *body)
{
    srv_reply *r = srv_conn_reply(c);
    srv_reply_json(r, status);
    srv_buf_puts(&r->body, body);
    srv_conn_send(c);
}

void srv_v2_server_live(void *server, srv_conn *c, void *ctx)
{
    (void)server;
    (void)ctx;
    answer(c, 200, "{\"live\":true}");
}

void srv_v2_server_ready(void *server, srv_conn *c, void *ctx)
{
    (void)ctx;
    bool ready = ((srv_server *)server)->state == SRV_STATE_READY;
    answer(c, ready ? 200 : 503, ready ? "{\"ready\":true}" : "{\"ready\":false}");
}

void srv_v2_server_metadata(void *server, srv_conn *c, void *ctx)
{
    (void)server;
    (void)ctx;
    answer(c, 200, "{\"name\":\"predictd\",\"version\":\"" PREDICTD_VERSION "\",\"extensions\":[]}");
}

/* The tensors each task takes and gives. */
static const char *tensors_of(const model *m)
{
    switch (m->task) {
    case MODEL_TASK_CLASSIFY:
        return "\"inputs\":[{\"name\":\"text\",\"datatype\":\"BYTES\",\"shape\":[-1]}],"
               "\"outputs\":[{\"name\":\"label\",\"datatype\":\"BYTES\",\"shape\":[-1]},"
               "{\"name\":\"score\",\"datatype\":\"FP32\",\"shape\":[-1]},"
               "{\"name\":\"logits\",\"datatype\":\"FP32\",\"shape\":[-1,-1]}]";
    case MODEL_TASK_GENERATE:
        return "\"inputs\":[{\"name\":\"text_input\",\"datatype\":\"BYTES\",\"shape\":[1]}],"
               "\"outputs\":[{\"name\":\"text_output\",\"datatype\":\"BYTES\",\"shape\":[1]}]";
    default:
        return "\"inputs\":[],\"outputs\":[]";
    }
}

static srv_worker *loaded_model(srv_server *s, srv_conn *c, void *ctx)
{
    srv_worker *w = srv_request_worker(ctx);
    if (!srv_request_admitted(s, ctx)) {
        v2_error(c, 503, "model %s is not ready", w->name);
        return NULL;
    }
    return w;
}

void srv_v2_model_metadata(void *server, srv_conn *c, void *ctx)
{
    srv_worker *w = loaded_model(server, c, ctx);
    if (!w)
        return;
    srv_reply *r = srv_conn_reply(c);
    srv_reply_json(r, 200);
    srv_buf_puts(&r->body, "{\"name\":");
    srv_json_cstr(&r->body, w->name);
    srv_buf_printf(&r->body, ",\"versions\":[\"1\"],\"platform\":\"predictd\",%s}", tensors_of(w->model));
    srv_conn_send(c);
}

void srv_v2_model_ready(void *server, srv_conn *c, void *ctx)
{
    srv_worker *w = srv_request_worker(ctx);
    bool ready = ((srv_server *)server)->state == SRV_STATE_READY;
    srv_reply *r = srv_conn_reply(c);
    srv_reply_json(r, ready ? 200 : 503);
    srv_buf_puts(&r->body, "{\"name\":");
    srv_json_cstr(&r->body, w->name);
    srv_buf_printf(&r->body, ",\"ready\":%s}", ready ? "true" : "false");
    srv_conn_send(c);
}

/* Whether a tensor's "shape" is a list of non-negative integers whose
 * product is its element count n. */
static bool shape_holds(json_t *shape, size_t n)
{
    if (!json_is_array(shape) || json_array_size(shape) == 0)
        return false;
    size_t product = 1;
    for (size_t i = 0; i < json_array_size(shape); i++) {
        json_t *d = json_array_get(shape, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0 || (size_t)json_integer_value(d) > n)
            return false;
        product *= (size_t)json_integer_value(d);
        if (product > n)
            return false;
    }
    return product == n;
}

/* The strings of the first BYTES input (its "data", flat, as many as its
 * "shape" says). */
static int texts_of(json_t *root, const char **texts, size_t *lens, size_t *n, const char **why)
{
    json_t *inputs = json_object_get(root, "inputs"), *in = NULL;
    for (size_t i = 0; i < json_array_size(inputs) && !in; i++) {
        json_t *t = json_array_get(inputs, i);
        json_t *type = json_object_get(t, "datatype");
        if (json_is_string(type) && json_string_length(type) == 5 &&
            memcmp(json_string_value(type), "BYTES", 5) == 0)
            in = t;
    }
    json_t *data = json_object_get(in, "data");
    *why = !in ? "the request needs a BYTES input" : !json_is_array(data) ? "input \"data\" must be a list" : NULL;
    if (*why)
        return -1;
    *n = 0;
    for (size_t i = 0; i < json_array_size(data); i++) {
        json_t *t = json_array_get(data, i);
        if (!json_is_string(t) || *n == MAX_TEXTS) {
            *why = json_is_string(t) ? "too many texts" : "BYTES data must be strings";
            return -1;
        }
        texts[*n] = json_string_value(t);
        lens[(*n)++] = json_string_length(t);
    }
    if (!*n)
        *why = "input \"data\" is empty";
    else if (!shape_holds(json_object_get(in, "shape"), *n))
        *why = "input \"shape\" must be a list of sizes whose product is the number of data elements";
    return *why ? -1 : 0;
}

/* The request's "id" (checked by srv_v2_infer to fit SRV_V2_ID_SIZE), or "". */
static const char *request_id(json_t *root)
{
    const char *id = json_string_value(json_object_get(root, "id"));
    return id ? id : "";
}

static void infer_classify(srv_server *s, srv_conn *c, srv_worker *w, json_t *root,
                           const char **texts, const size_t *lens, size_t n)
{
    srv_request in = {.limits = &s->limits};
    if (n > s->limits.max_client_batch) {
        v2_error(c, 400, "at most %zu texts per request", s->limits.max_client_batch);
        return;
    }
    srv_job *job = calloc(1, sizeof *job);
    if (!job) {
        v2_error(c, 503, "out of memory");
        return;
    }
    job->worker = w;
    json_t *trunc = json_object_get(json_object_get(root, "parameters"), "truncate");
    if (srv_classify_texts(w->model, &in, texts, lens, n, json_is_true(trunc), &job->cls,
                           srv_conn_reply(c))) {
        free(job);
        send_as_v2(c);
        return;
    }
    job->cls.v2_form = true;
    snprintf(job->cls.v2_id, sizeof job->cls.v2_id, "%s", request_id(root));
    snprintf(job->cls.v2_model, sizeof job->cls.v2_model, "%s", w->name);
    job->n_seq = (int)n;
    for (size_t i = 0; i < n; i++)
        job->n_tokens += (int)job->cls.enc[i].n;
    srv_server_submit(s, c, job);
}

/* Generation through v2: the prompt and the request's "parameters" become a
 * text-generation-inference request, answered as "text_output". */
static void infer_generate(srv_server *s, srv_conn *c, srv_worker *w, json_t *root,
                           const char *prompt, size_t prompt_len)
{
    json_t *params = json_object_get(root, "parameters");
    if (params && !json_is_object(params) && !json_is_null(params)) {
        v2_error(c, 400, "\"parameters\" must be an object");
        return;
    }
    json_t *tgi = json_pack("{s:s%, s:o}", "inputs", prompt, prompt_len, "parameters",
                            json_is_object(params) ? json_incref(params) : json_object());
    json_t *p = json_object_get(tgi, "parameters");
    json_t *max_tokens = json_object_get(p, "max_tokens"), *max_new = json_object_get(p, "max_new_tokens");
    if (max_tokens && (!max_new || json_is_null(max_new)))
        json_object_set(p, "max_new_tokens", max_tokens);
    json_object_del(p, "max_tokens");
    srv_request in = {.limits = &s->limits, .prepared = srv_json_prepared_value(tgi)};
    srv_job *job = calloc(1, sizeof *job);
    if (!job || !tgi || !in.prepared) {
        free(job);
        srv_json_prepared_free((void *)in.prepared);
        v2_error(c, 503, "out of memory");
        return;
    }
    job->worker = w;
    int rc = srv_gen_parse(w->model, SRV_GEN_TGI, &in, &job->gen, srv_conn_reply(c));
    srv_json_prepared_free((void *)in.prepared);
    if (rc) {
        srv_job_free(job);
        send_as_v2(c);
        return;
    }
    job->gen.form = SRV_GEN_KSERVE;
    snprintf(job->gen.model_name, sizeof job->gen.model_name, "%s", w->name);
    snprintf(job->gen.v2_id, sizeof job->gen.v2_id, "%s", request_id(root));
    job->n_seq = 1;
    job->n_tokens = job->gen.seqs[0].n_prompt;
    srv_server_submit(s, c, job);
}

void srv_v2_infer(void *server, srv_conn *c, void *ctx)
{
    srv_server *s = server;
    srv_worker *w = loaded_model(s, c, ctx);
    if (!w)
        return;
    srv_request in = srv_request_of(s, c);
    char why_not[160];
    json_t *root = srv_json_value(&in, why_not, sizeof why_not);
    if (!json_is_object(root)) {
        if (root)
            v2_error(c, 400, "request body is not a JSON object");
        else
            v2_error(c, 400, "request body is not JSON: %s", why_not);
        json_decref(root);
        return;
    }
    const char *texts[MAX_TEXTS], *why;
    size_t lens[MAX_TEXTS], n;
    json_t *id = json_object_get(root, "id");
    if (id && (!json_is_string(id) || json_string_length(id) >= SRV_V2_ID_SIZE ||
               strlen(json_string_value(id)) != json_string_length(id)))
        v2_error(c, 400, "\"id\" must be a string of at most %d bytes, without NUL",
                 SRV_V2_ID_SIZE - 1);
    else if (texts_of(root, texts, lens, &n, &why))
        v2_error(c, 400, "%s", why);
    else if (w->model->task == MODEL_TASK_CLASSIFY)
        infer_classify(s, c, w, root, texts, lens, n);
    else if (w->model->task == MODEL_TASK_GENERATE && n == 1)
        infer_generate(s, c, w, root, texts[0], lens[0]);
    else
        v2_error(c, 400, "model %s takes %s", w->name,
                 w->model->task == MODEL_TASK_GENERATE ? "one text_input" : "no v2 inference requests");
    json_decref(root);
}
