/* Request routing and handling without sockets: server/handlers.c's
 * srv_route_request and srv_handle_request (route matching, 404/405 and
 * Allow, API-key checks, the per-model lookup, query and body handling of
 * every endpoint, KServe v2 in server/kserve.c) on fuzzed requests, through
 * a link-time seam.
 *
 * The seam: handlers.c and kserve.c see HTTP only through server/http.h's
 * srv_conn_* functions and the server through srv_server_model,
 * srv_server_submit and srv_now. This program defines all of those itself,
 * so the linker never takes server/http.o or server/server.o from the
 * library: a fake connection replays the parsed request, and the fake
 * submit "runs" the job at once from zeroed outputs (as a worker that
 * computed nothing) and answers with the real formatters. What MHD itself
 * does (request-line syntax, percent-decoding of the path and the query) is
 * MHD's and is imitated here only loosely.
 *
 * Input: byte 0 = flags (bits 0-1: which model is the default, by rotating
 * sst2/gpt2/clip; bit 2: an API key "k3y" is required; bit 3: --protect-ops;
 * bit 4: the server is still loading; bit 5: tight limits), then a request:
 *   METHOD SP TARGET LF (Name: value LF)* LF body
 * with TARGET = path[?query], both percent-decoded as MHD does. */
#include "tests/fuzz/fuzz.h"

#include <strings.h>
#include <time.h>

#include "server/handlers.h"
#include "server/server.h"
#include "server/worker.h"

/* ---- the fake connection (server/http.h) ---- */

#define MAX_HEADERS 16

struct srv_conn {
    char method[16];
    char *path;     /* percent-decoded, NUL-terminated (cut at a decoded NUL, as MHD's) */
    char *query;    /* raw, NUL-terminated */
    char *decoded;  /* the last srv_conn_query value */
    char *names[MAX_HEADERS], *values[MAX_HEADERS];
    int n_headers;
    const char *body;
    size_t body_len;
    srv_reply reply;
    void *data;
    void *prepared; /* the body's parse, when http.c would have the pool make it */
    int sends;
};

static int hex(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ? (c | 0x20) - 'a' + 10 : -1;
}

/* %XX-decodes s[0..n) (and '+' to ' ' in a query) into a new string. */
static char *unescape(const char *s, size_t n, bool plus, size_t *out_len)
{
    char *d = fuzz_cstr(s, n);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
            d[o++] = (char)(hex(s[i + 1]) * 16 + hex(s[i + 2]));
            i += 2;
        } else {
            d[o++] = plus && s[i] == '+' ? ' ' : s[i];
        }
    }
    d[o] = '\0';
    if (out_len)
        *out_len = o;
    return d;
}

const char *srv_conn_method(const srv_conn *c) { return c->method; }
const char *srv_conn_path(const srv_conn *c) { return c->path; }
double srv_conn_start_time(const srv_conn *c) { (void)c; return 0; }
void srv_conn_set_data(srv_conn *c, void *data) { c->data = data; }
void *srv_conn_data(const srv_conn *c) { return c->data; }
srv_reply *srv_conn_reply(srv_conn *c) { return &c->reply; }
int srv_conn_status(const srv_conn *c) { return c->reply.status; }
size_t srv_conn_bytes_sent(const srv_conn *c) { return c->reply.body.len; }
bool srv_conn_abandoned(const srv_conn *c) { (void)c; return false; }

const void *srv_conn_prepared(const srv_conn *c) { return c->prepared; }

const char *srv_conn_body(const srv_conn *c, size_t *len)
{
    *len = c->body_len;
    return c->body;
}

const char *srv_conn_header(const srv_conn *c, const char *name)
{
    for (int i = 0; i < c->n_headers; i++)
        if (strcasecmp(c->names[i], name) == 0)
            return c->values[i];
    return NULL;
}

/* As server/http.c: keys match case-sensitively, the last repeat wins, and
 * a key without '=' has the empty value. */
const char *srv_conn_query(const srv_conn *c, const char *key, size_t *len)
{
    srv_conn *mc = (srv_conn *)c;
    size_t klen = strlen(key);
    const char *value = NULL;
    for (const char *p = c->query; p && *p;) {
        const char *end = p + strcspn(p, "&"), *eq = memchr(p, '=', (size_t)(end - p));
        const char *kend = eq ? eq : end;
        size_t n;
        char *k = unescape(p, (size_t)(kend - p), true, &n);
        if (n == klen && memcmp(k, key, klen) == 0) {
            free(mc->decoded);
            mc->decoded = unescape(eq ? eq + 1 : end, eq ? (size_t)(end - eq - 1) : 0, true, &n);
            value = mc->decoded;
            if (len)
                *len = n;
        }
        free(k);
        p = *end ? end + 1 : end;
    }
    return value;
}

void srv_conn_send(srv_conn *c)
{
    FUZZ_CHECK(c->sends++ == 0); /* one answer per request */
    fuzz_check_reply(&c->reply);
}

/* ---- the fake server (server/server.h) ---- */

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
        if (strlen(s->workers[i].name) == len && memcmp(s->workers[i].name, name, len) == 0)
            return &s->workers[i];
    return NULL;
}

/* A worker that computed nothing: zero logits and embeddings, no tokens. */
void srv_server_submit(srv_server *s, srv_conn *c, srv_job *job)
{
    (void)s;
    const model *m = job->worker->model;
    srv_reply *r = srv_conn_reply(c);
    if (m->task == MODEL_TASK_CLASSIFY) {
        FUZZ_CHECK(job->cls.n >= 1);
        memset(job->cls.logits, 0, job->cls.n * m->n_labels * sizeof(float));
        srv_classify_format(m, &job->cls, r);
    } else if (m->task == MODEL_TASK_GENERATE) {
        for (size_t i = 0; i < job->gen.n; i++)
            job->gen.seqs[i].finish = SRV_FINISH_LENGTH;
        job->gen.finished = true;
        if (job->gen.stream) {
            srv_buf events;
            srv_buf_init(&events);
            FUZZ_CHECK(srv_gen_stream_events(m, &job->gen, &events));
            fuzz_check_events(&events);
            srv_reply_json(r, 200);
            r->content_type = "text/event-stream";
            srv_buf_free(&r->body);
            r->body = events;
        } else {
            srv_gen_format(m, &job->gen, r);
        }
    } else {
        size_t P = (size_t)m->proj_dim;
        memset(job->clip.image_emb, 0, (job->clip.n_images ? job->clip.n_images : 1) * P * sizeof(float));
        memset(job->clip.text_emb, 0, (job->clip.n_texts ? job->clip.n_texts : 1) * P * sizeof(float));
        srv_clip_format(m, &job->clip, r);
    }
    FUZZ_CHECK(r->status == 200);
    srv_conn_send(c);
    srv_job_free(job);
}

/* ---- the harness ---- */

static const char *const names[3] = {"sst2", "gpt2", "clip"};
static model *models[3];
static srv_metrics *metrics;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    models[0] = fuzz_load_model("distilbert-sst2-tiny");
    models[1] = fuzz_load_model("gpt2-tiny");
    models[2] = fuzz_load_model("clip-tiny");
    if (srv_metrics_new("fuzz", "none", "ref", &metrics))
        abort();
    return 0;
}

/* Splits the request text into c; returns false when it has no request line. */
static bool parse_request(const char *p, size_t n, srv_conn *c)
{
    const char *end = p + n, *nl = memchr(p, '\n', n);
    if (!nl)
        return false;
    const char *sp = memchr(p, ' ', (size_t)(nl - p));
    if (!sp || sp == p || sp - p >= (ptrdiff_t)sizeof c->method)
        return false;
    memcpy(c->method, p, (size_t)(sp - p));
    const char *target = sp + 1, *tend = nl > target && nl[-1] == '\r' ? nl - 1 : nl;
    const char *q = memchr(target, '?', (size_t)(tend - target));
    c->path = unescape(target, (size_t)((q ? q : tend) - target), false, NULL);
    c->query = q ? fuzz_cstr(q + 1, (size_t)(tend - q - 1)) : NULL;
    p = nl + 1;
    while (p < end) {
        nl = memchr(p, '\n', (size_t)(end - p));
        const char *lend = nl ? nl : end;
        if (lend > p && lend[-1] == '\r')
            lend--;
        if (lend == p) { /* the blank line: the body follows */
            p = nl ? nl + 1 : end;
            break;
        }
        const char *colon = memchr(p, ':', (size_t)(lend - p));
        if (colon && c->n_headers < MAX_HEADERS) {
            const char *v = colon + 1;
            while (v < lend && (*v == ' ' || *v == '\t'))
                v++;
            c->names[c->n_headers] = fuzz_cstr(p, (size_t)(colon - p));
            c->values[c->n_headers++] = fuzz_cstr(v, (size_t)(lend - v));
        }
        p = nl ? nl + 1 : end;
    }
    c->body = p;
    c->body_len = (size_t)(end - p);
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in in = {data, size};
    uint8_t flags = fuzz_byte(&in);
    char *text = fuzz_copy(in.p, in.n);
    srv_conn c;
    memset(&c, 0, sizeof c);
    srv_reply_init(&c.reply);

    srv_model_spec specs[3];
    srv_worker workers[3];
    model *order[3];
    memset(specs, 0, sizeof specs);
    memset(workers, 0, sizeof workers);
    for (int i = 0; i < 3; i++) {
        int k = (i + (flags & 3)) % 3;
        specs[i].name = (char *)names[k];
        workers[i].name = (char *)names[k];
        workers[i].model = order[i] = models[k];
    }
    srv_options opts;
    memset(&opts, 0, sizeof opts);
    opts.models = specs;
    opts.n_models = 3;
    opts.protect_ops = flags & 8;
    srv_server s;
    memset(&s, 0, sizeof s);
    s.opts = &opts;
    s.metrics = metrics;
    s.workers = workers;
    s.n_workers = 3;
    s.models = order;
    s.state = flags & 16 ? SRV_STATE_LOADING : SRV_STATE_READY;
    s.limits = flags & 32 ? (srv_limits){.max_client_batch = 2, .max_input_tokens = 8,
                                         .max_new_tokens = 4, .max_batch_total_tokens = 32,
                                         .max_image_bytes = 512, .max_image_pixels = 4096}
                          : (srv_limits){.max_client_batch = 32, .max_new_tokens = 1024,
                                         .max_batch_total_tokens = 16384,
                                         .max_image_bytes = 16u << 20, .max_image_pixels = 1u << 22};
    char key[] = "k3y";
    s.auth.key = flags & 4 ? key : NULL;
    s.auth.len = flags & 4 ? 3 : 0;
    s.auth.protect_ops = flags & 8;

    if (parse_request(text, in.n, &c)) {
        /* As server/http.c does: a request refused by its headers is
         * answered from the reply, without the handler's send. */
        if (!srv_route_request(&s, &c)) {
            FUZZ_CHECK(c.reply.status >= 400 && c.sends == 0);
        } else {
            /* As server/http.c: a large body is parsed first (on its pool). */
            if (srv_request_arrived(&s, &c))
                c.prepared = srv_json_prepare(c.body, c.body_len);
            srv_handle_request(&s, &c);
            srv_json_prepared_free(c.prepared);
            FUZZ_CHECK(c.sends == 1); /* answered at once */
        }
        srv_request_completed(&s, &c);
    }
    srv_reply_free(&c.reply);
    free(c.path);
    free(c.query);
    free(c.decoded);
    for (int i = 0; i < c.n_headers; i++) {
        free(c.names[i]);
        free(c.values[i]);
    }
    free(text);
    return 0;
}
