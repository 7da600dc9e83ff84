#include "server/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "server/log.h"

/* The clock of one TCP connection against --request-timeout. */
typedef struct conn_clock {
    struct conn_clock *prev, *next;
    MHD_socket fd;
    double since; /* when the request being received began; 0 while one is answered */
} conn_clock;

struct srv_http {
    struct MHD_Daemon *mhd;
    uv_loop_t *loop;
    uv_poll_t poll;   /* MHD's epoll descriptor */
    uv_timer_t timer; /* MHD's timeouts */
    uv_timer_t sweep; /* --request-timeout */
    conn_clock *clocks;
    srv_http_cfg cfg;
    srv_http_hooks hooks;
    int port;
    int deferred;
    struct srv_conn *preparing; /* connections whose body is on the pool (a list) */
    bool prep_running; /* a body is being parsed on the pool (its client gone or not) */
    bool stopped;     /* srv_http_stop ran: freed once closed and no job is out */
    int closing;      /* handles whose close callback has not run yet */
    int open;         /* connections MHD holds now */
    unsigned closed;  /* connections closed so far */
    bool running;     /* inside run_mhd: resumes are picked up by this run */
};

typedef enum conn_state {
    CONN_READING,  /* gathering the body */
    CONN_DISCARDING, /* refused mid-body: the rest is read and dropped, then the reply sent */
    CONN_ANSWERED, /* a response is queued (or the request was refused) */
    CONN_PREPARING, /* suspended while the pool prepares its body (prep_job) */
    CONN_PREPARED, /* resumed for dispatch with its prepared body */
    CONN_DEFERRED, /* suspended, waiting for srv_conn_resume */
    CONN_READY,    /* resumed with its reply, response not yet queued */
    CONN_STREAMING,
} conn_state;

struct srv_conn {
    srv_http *http;
    struct MHD_Connection *mhd;
    conn_state state;
    char *method, *path;
    srv_buf body;
    size_t discarded; /* body bytes dropped after a refusal (CONN_DISCARDING) */
    double start;
    srv_reply reply;
    void *data;
    int status;
    size_t sent;
    bool abandoned;  /* the client went away before the answer */
    bool suspended;

    /* Preparation on the pool: the job while it runs (the connection on
     * h->preparing's list), then its result for the dispatch. */
    struct prep_job *prep;
    struct srv_conn *prep_prev, *prep_next;
    void *prepared;

    /* Disconnect watch while suspended: our own poll of the socket, since
     * MHD does not look at suspended connections. */
    uv_poll_t *watch;
    void (*on_gone)(void *arg);
    void *gone_arg;

    /* Streaming: bytes waiting for MHD's reader, and whether more follow. */
    srv_buf stream;
    size_t stream_pos;
    bool stream_done;
};

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- driving MHD from libuv ------------------------------------------- */

static void on_timer(uv_timer_t *t);

/* Lets MHD do all pending work, then arms the timer for its next deadline.
 *
 * A run that closed connections is followed by a second one: MHD takes its
 * listening socket out of its epoll set when it cannot accept more (at its
 * connection limit, or out of descriptors) and puts it back only at the start
 * of its next run. Without that run, new clients would wait in the backlog
 * until some unrelated event woke the loop. */
static void run_mhd(srv_http *h)
{
    if (!h->mhd)
        return;
    h->running = true;
    unsigned closed = h->closed;
    MHD_run(h->mhd);
    if (h->closed != closed)
        MHD_run(h->mhd);
    h->running = false;
    MHD_UNSIGNED_LONG_LONG ms;
    if (MHD_get_timeout(h->mhd, &ms) == MHD_YES)
        uv_timer_start(&h->timer, on_timer, ms > 60000 ? 60000 : ms, 0);
    else
        uv_timer_stop(&h->timer);
}

static void on_timer(uv_timer_t *t)
{
    run_mhd(t->data);
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    (void)status;
    (void)events;
    run_mhd(p->data);
}

/* ---- the request clock ------------------------------------------------------
 *
 * MHD's timeout counts only idle time, so a client sending a byte a second
 * keeps its connection (and a slot) for as long as it likes. Each connection
 * instead gets --request-timeout to deliver a whole request, counted from its
 * opening or the end of its previous exchange; a sweep each second shuts the
 * socket of one past it, and MHD ends the connection on the shutdown. */

static conn_clock *clock_of(struct MHD_Connection *mhd)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(mhd, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return info ? info->socket_context : NULL;
}

static void clock_set(struct MHD_Connection *mhd, double since)
{
    conn_clock *k = clock_of(mhd);
    if (k)
        k->since = since;
}

static void on_sweep(uv_timer_t *t)
{
    srv_http *h = t->data;
    double now = mono_now();
    for (conn_clock *k = h->clocks; k; k = k->next)
        if (k->since > 0 && now - k->since > h->cfg.request_timeout_s) {
            srv_log(SRV_LOG_DEBUG, "http: a request took over %d s to arrive, closing",
                    h->cfg.request_timeout_s);
            shutdown(k->fd, SHUT_RDWR);
            k->since = 0;
        }
}

static void clock_start(srv_http *h, struct MHD_Connection *mhd, void **socket_ctx)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(mhd, MHD_CONNECTION_INFO_CONNECTION_FD);
    conn_clock *k = info ? calloc(1, sizeof *k) : NULL;
    if (!k)
        return; /* this connection goes unclocked */
    k->fd = info->connect_fd;
    k->since = mono_now();
    k->next = h->clocks;
    if (h->clocks)
        h->clocks->prev = k;
    h->clocks = k;
    *socket_ctx = k;
}

static void clock_stop(srv_http *h, void **socket_ctx)
{
    conn_clock *k = *socket_ctx;
    if (!k)
        return;
    if (k->prev)
        k->prev->next = k->next;
    else
        h->clocks = k->next;
    if (k->next)
        k->next->prev = k->prev;
    free(k);
    *socket_ctx = NULL;
}

/* ---- connection bookkeeping -------------------------------------------- */

static void unprepare(srv_conn *c);

static void watch_closed(uv_handle_t *handle)
{
    free(handle);
}

static void unwatch(srv_conn *c)
{
    if (c->watch) {
        uv_poll_stop(c->watch);
        uv_close((uv_handle_t *)c->watch, watch_closed);
        c->watch = NULL;
    }
}

/* MHD picks a resumed connection up on its next run. Outside a run that run
 * is scheduled on the loop, never made here: a run may complete and free any
 * connection, the caller's included, under a caller that still holds it (a
 * stream write followed by its end). One run also serves a whole batch of
 * resumes. */
static void resume(srv_conn *c)
{
    unwatch(c);
    if (c->suspended) {
        c->suspended = false;
        MHD_resume_connection(c->mhd);
    }
    if (!c->http->running)
        uv_timer_start(&c->http->timer, on_timer, 0, 0);
}

/* The client closed (or reset) its socket while we held the request. */
static void on_watch(uv_poll_t *p, int status, int events)
{
    srv_conn *c = p->data;
    int fd;
    uv_fileno((uv_handle_t *)p, &fd);
    char byte;
    ssize_t n = status < 0 ? 0 : recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    bool gone = (events & UV_DISCONNECT) || n == 0 ||
                (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
    if (!gone) {
        if (n > 0)
            unwatch(c); /* a pipelined request: nothing to learn here any more */
        return;
    }
    c->abandoned = true;
    if (c->on_gone)
        c->on_gone(c->gone_arg);
    c->on_gone = NULL;
    if (c->state == CONN_PREPARING) {
        unprepare(c);
        c->state = CONN_READY;
    }
    if (c->state == CONN_DEFERRED) {
        /* No srv_conn_resume follows a dropped request, so it stops counting
         * as deferred here; a shutdown would otherwise wait for it forever. */
        c->http->deferred--;
        c->state = CONN_READY; /* MHD finds the socket closed and ends it */
    }
    srv_reply_detail(&c->reply, 499, "client closed request");
    if (c->state == CONN_STREAMING)
        c->stream_done = true;
    resume(c);
}

static void watch(srv_conn *c)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(c->mhd, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!info || c->watch)
        return;
    c->watch = malloc(sizeof *c->watch);
    if (!c->watch || uv_poll_init_socket(c->http->loop, c->watch, info->connect_fd) != 0) {
        free(c->watch);
        c->watch = NULL;
        return;
    }
    c->watch->data = c;
    uv_poll_start(c->watch, UV_READABLE | UV_DISCONNECT, on_watch);
}

static void suspend(srv_conn *c)
{
    if (!c->suspended) {
        c->suspended = true;
        MHD_suspend_connection(c->mhd);
    }
    watch(c);
}

/* ---- preparing a body on the pool (srv_http_hooks.prepare) ----------------
 *
 * A job holds its connection's body while a pool thread reads it. One job
 * runs at a time, as the parse once ran on the loop, but beside it: a parse
 * tree can take 15 times its body's size, so running several would let
 * clients that send large bodies and hang up hold far more memory than the
 * loop ever did. The others wait in h->preparing (newest first), still
 * suspended. A connection that ends first (its client gone, or the server
 * stopping) leaves the list: a waiting job is freed there, a running one
 * frees what it holds when it comes back. */
typedef struct prep_job {
    uv_work_t work;
    srv_http *http;
    srv_conn *conn; /* NULL once the connection has ended */
    bool running;   /* handed to the pool */
    srv_buf body;
    void *result;
} prep_job;

static void prepare_work(uv_work_t *work)
{
    prep_job *j = work->data;
    j->result = j->http->hooks.prepare(j->body.data ? j->body.data : "", j->body.len);
}

static void prep_job_free(prep_job *j)
{
    j->http->hooks.prepared_free(j->result);
    srv_buf_free(&j->body);
    free(j);
}

static void prepare_done(uv_work_t *work, int status);

/* Hands the oldest waiting job to the pool when none runs. A job that
 * cannot be queued is parsed here, on the loop, as before. */
static void run_next_prepare(srv_http *h)
{
    if (h->prep_running)
        return;
    srv_conn *oldest = NULL;
    for (srv_conn *c = h->preparing; c; c = c->prep_next)
        oldest = c;
    if (!oldest)
        return;
    prep_job *j = oldest->prep;
    j->running = true;
    h->prep_running = true;
    if (uv_queue_work(h->loop, &j->work, prepare_work, prepare_done) != 0) {
        prepare_work(&j->work);
        prepare_done(&j->work, 0);
    }
}

/* Takes c off the list of connections being prepared: a waiting job is freed,
 * a running one comes back alone. */
static void unprepare(srv_conn *c)
{
    prep_job *j = c->prep;
    if (!j)
        return;
    c->prep = NULL;
    if (c->prep_prev)
        c->prep_prev->prep_next = c->prep_next;
    else
        c->http->preparing = c->prep_next;
    if (c->prep_next)
        c->prep_next->prep_prev = c->prep_prev;
    if (c->state == CONN_PREPARING)
        c->http->deferred--;
    if (j->running)
        j->conn = NULL;
    else
        prep_job_free(j);
}

static void prepare_done(uv_work_t *work, int status)
{
    (void)status;
    prep_job *j = work->data;
    srv_conn *c = j->conn;
    srv_http *h = j->http;
    h->prep_running = false;
    if (!c) {
        prep_job_free(j);
        if (h->stopped && h->closing == 0)
            free(h); /* it came back after srv_http_stop */
        else
            run_next_prepare(h);
        return;
    }
    unprepare(c);
    c->body = j->body;
    c->prepared = j->result;
    free(j);
    c->state = CONN_PREPARED;
    resume(c);
    run_next_prepare(h);
}

/* Suspends c and hands its body to the pool, after those waiting already;
 * false (c untouched) when out of memory. */
static bool start_prepare(srv_conn *c)
{
    srv_http *h = c->http;
    prep_job *j = calloc(1, sizeof *j);
    if (!j)
        return false;
    *j = (prep_job){.http = h, .conn = c, .body = c->body};
    j->work.data = j;
    srv_log(SRV_LOG_DEBUG, "http: %s %s: parsing its %zu-byte body on the thread pool",
            c->method, c->path, c->body.len);
    srv_buf_init(&c->body);
    c->prep = j;
    c->prep_next = h->preparing;
    if (h->preparing)
        h->preparing->prep_prev = c;
    h->preparing = c;
    c->state = CONN_PREPARING;
    h->deferred++;
    suspend(c);
    run_next_prepare(h);
    return true;
}

/* The path of a request target. The absolute form ("http://host/path"),
 * which a server must accept (RFC 9112 3.2.2), routes by its path, as
 * uvicorn does; MHD has already split off the query either way. */
static const char *target_path(const char *url)
{
    size_t scheme = strncasecmp(url, "http://", 7) == 0    ? 7
                    : strncasecmp(url, "https://", 8) == 0 ? 8
                                                           : 0;
    if (!scheme)
        return url;
    const char *path = strchr(url + scheme, '/');
    return path ? path : "/";
}

static srv_conn *conn_new(srv_http *h, struct MHD_Connection *mhd, const char *method,
                          const char *url)
{
    srv_conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->http = h;
    c->mhd = mhd;
    c->method = strdup(method);
    c->path = strdup(target_path(url));
    c->start = mono_now();
    srv_buf_init(&c->body);
    srv_buf_init(&c->stream);
    srv_reply_init(&c->reply);
    if (!c->method || !c->path) {
        free(c->method);
        free(c->path);
        free(c);
        return NULL;
    }
    return c;
}

static void conn_free(srv_conn *c)
{
    unprepare(c);
    if (c->prepared)
        c->http->hooks.prepared_free(c->prepared);
    unwatch(c);
    srv_buf_free(&c->body);
    srv_buf_free(&c->stream);
    srv_reply_free(&c->reply);
    free(c->method);
    free(c->path);
    free(c);
}

/* ---- responses ----------------------------------------------------------- */

static enum MHD_Result queue_reply(srv_conn *c)
{
    srv_reply *r = &c->reply;
    if (!r->status)
        srv_reply_detail(r, 500, "no answer was produced");
    size_t len;
    char *body = srv_buf_take(&r->body, &len);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, body ? body : (char *)"", body ? MHD_RESPMEM_MUST_FREE
                                                                          : MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    if (r->content_type)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->content_type);
    if (r->allow[0])
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, r->allow);
    if (r->challenge)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, r->challenge);
    if (r->close)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    c->status = r->status;
    c->sent = len;
    c->state = CONN_ANSWERED;
    enum MHD_Result ret = MHD_queue_response(c->mhd, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    srv_conn *c = cls;
    size_t avail = c->stream.len - c->stream_pos;
    if (avail) {
        size_t n = avail < max ? avail : max;
        memcpy(buf, c->stream.data + c->stream_pos, n);
        c->stream_pos += n;
        c->sent += n;
        if (c->stream_pos == c->stream.len) {
            srv_buf_clear(&c->stream);
            c->stream_pos = 0;
        }
        return (ssize_t)n;
    }
    if (c->stream_done)
        return MHD_CONTENT_READER_END_OF_STREAM;
    suspend(c); /* nothing to send until the next srv_conn_stream_write */
    return 0;
}

static enum MHD_Result queue_stream(srv_conn *c)
{
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096,
                                                                  stream_read, c, NULL);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, c->reply.content_type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    c->status = 200;
    enum MHD_Result ret = MHD_queue_response(c->mhd, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* ---- MHD callbacks --------------------------------------------------------- */

static enum MHD_Result refuse(srv_conn *c, int status, const char *fmt, size_t limit)
{
    srv_reply_detail(&c->reply, status, fmt, limit);
    return queue_reply(c);
}

/* Refuses a request whose body is being received. MHD queues a response only
 * before the body or after all of it, so the rest of the body is read and
 * dropped and the reply leaves at its end (see CONN_DISCARDING). */
static enum MHD_Result refuse_body(srv_conn *c, int status, const char *fmt, size_t limit)
{
    srv_reply_detail(&c->reply, status, fmt, limit);
    c->state = CONN_DISCARDING;
    srv_buf_free(&c->body);
    return MHD_YES;
}

static enum MHD_Result add_header_size(void *cls, enum MHD_ValueKind kind, const char *key,
                                       size_t key_size, const char *value, size_t value_size)
{
    (void)kind;
    (void)key;
    (void)value;
    *(size_t *)cls += key_size + value_size + 4; /* "key: value\r\n", "key=value&" */
    return MHD_YES;
}

/* The request line and headers, as received less a few bytes of syntax. MHD
 * enforces only its memory pool, which must be larger than the limit (it also
 * holds the read buffer and the response headers). */
static size_t header_size(srv_conn *c)
{
    size_t n = strlen(c->method) + strlen(c->path) + sizeof " HTTP/1.1\r\n\r\n";
    MHD_get_connection_values_n(c->mhd, MHD_HEADER_KIND | MHD_GET_ARGUMENT_KIND, add_header_size,
                                &n);
    return n;
}

typedef struct framing {
    int content_length, transfer_encoding; /* how many of each header */
    bool chunked;                          /* the one Transfer-Encoding is "chunked" */
    bool bad_name;                         /* a header name with white space in it */
    bool folded;                           /* a framing header folded over lines */
} framing;

/* Whether key is name with more after it. MHD 0.9.75 reads a header folded
 * over lines (obs-fold: "Transfer-Encoding:\r\n chunked") as the name
 * "Transfer-Encodingchunked" with no value; a proxy that unfolds it sees the
 * header itself. */
static bool name_run_on(const char *key, size_t key_size, const char *name)
{
    size_t n = strlen(name);
    return key_size > n && strncasecmp(key, name, n) == 0;
}

static enum MHD_Result count_framing(void *cls, enum MHD_ValueKind kind, const char *key,
                                     size_t key_size, const char *value, size_t value_size)
{
    (void)kind;
    framing *f = cls;
    if (strcspn(key, " \t") < key_size)
        f->bad_name = true;
    if (name_run_on(key, key_size, MHD_HTTP_HEADER_CONTENT_LENGTH) ||
        name_run_on(key, key_size, MHD_HTTP_HEADER_TRANSFER_ENCODING))
        f->folded = true;
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0)
        f->content_length++;
    if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
        f->transfer_encoding++;
        f->chunked = value_size == 7 && strncasecmp(value, "chunked", 7) == 0;
    }
    return MHD_YES;
}

/* Refuses the framings that parsers disagree on (the stuff of request
 * smuggling) and the codings MHD does not decode, which it would otherwise
 * read as a body lasting until the client closes. The connection is closed
 * after: where this request ends is not known. */
static const char *bad_framing(srv_conn *c, int *status)
{
    framing f = {0};
    MHD_get_connection_values_n(c->mhd, MHD_HEADER_KIND, count_framing, &f);
    *status = 400;
    if (f.bad_name)
        return "a header name contains white space";
    if (f.folded)
        return "a Content-Length or Transfer-Encoding header is folded over lines";
    if (f.content_length > 1)
        return "Content-Length is given more than once";
    if (f.transfer_encoding > 1)
        return "Transfer-Encoding is given more than once";
    if (f.transfer_encoding && f.content_length)
        return "both Content-Length and Transfer-Encoding are given";
    *status = 501;
    if (f.transfer_encoding && !f.chunked)
        return "only the chunked Transfer-Encoding is supported";
    return NULL;
}

/* The first call for a request: its headers are in, none of its body. */
static enum MHD_Result on_headers(srv_http *h, srv_conn *c)
{
    if (header_size(c) > h->cfg.max_header_bytes)
        return refuse(c, 431, "request line and headers are larger than the limit of %zu bytes",
                      h->cfg.max_header_bytes);
    int status;
    const char *why = bad_framing(c, &status);
    if (why) {
        srv_reply_detail(&c->reply, status, "%s", why);
        c->reply.close = true;
        return queue_reply(c);
    }
    const char *cl = MHD_lookup_connection_value(c->mhd, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strtoull(cl, NULL, 10) > h->cfg.max_body_bytes)
        return refuse(c, 413, "request body is larger than the limit of %zu bytes",
                      h->cfg.max_body_bytes);
    /* Refused by its headers (say, no API key): answered before any of
     * the body is buffered, so such clients cannot hold our memory. */
    if (!h->hooks.route(h->hooks.ud, c))
        return queue_reply(c);
    return MHD_YES;
}

/* Runs the handler. The body's parse, if the pool made one, is dropped as
 * soon as it returns: a handler keeps what it needs, and a deferred request
 * would otherwise hold the whole tree until answered. */
static void dispatch(srv_http *h, srv_conn *c)
{
    h->hooks.dispatch(h->hooks.ud, c);
    if (c->prepared) {
        h->hooks.prepared_free(c->prepared);
        c->prepared = NULL;
    }
}

/* A piece of the body, or (none left) the request complete. */
static enum MHD_Result on_body(srv_http *h, srv_conn *c, const char *data, size_t *size)
{
    if (*size) {
        size_t n = *size;
        *size = 0;
        if (c->body.len + n > h->cfg.max_body_bytes) {
            c->discarded = n;
            return refuse_body(c, 413, "request body is larger than the limit of %zu bytes",
                               h->cfg.max_body_bytes);
        }
        srv_buf_append(&c->body, data, n);
        if (c->body.oom)
            return refuse_body(c, 503, "out of memory for a body of %zu bytes", c->body.len);
        return MHD_YES;
    }
    clock_set(c->mhd, 0); /* received: the clock rests while it is answered */
    if (!(h->hooks.prepare_if && h->hooks.prepare_if(h->hooks.ud, c) && start_prepare(c)))
        dispatch(h, c);
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *mhd, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **req_cls)
{
    (void)version;
    srv_http *h = cls;
    srv_conn *c = *req_cls;
    if (!c) {
        if (!(c = conn_new(h, mhd, method, url)))
            return MHD_NO;
        *req_cls = c;
        return on_headers(h, c);
    }
    switch (c->state) {
    case CONN_READING:
        return on_body(h, c, upload_data, upload_size);
    case CONN_PREPARED:
        /* Back from the pool: dispatched as any request whose body is in,
         * so the handler's answer (or deferral) moves it on from here. */
        c->state = CONN_READING;
        dispatch(h, c);
        return MHD_YES;
    case CONN_DISCARDING:
        if (*upload_size) {
            c->discarded += *upload_size;
            *upload_size = 0;
            /* Past another limit's worth the client is not listening: hang up. */
            return c->discarded > h->cfg.max_body_bytes ? MHD_NO : MHD_YES;
        }
        return queue_reply(c);
    case CONN_READY:
        if (c->abandoned) {
            /* 499 is for the log and metrics (nginx's "client closed
             * request"), never for the wire: a client that only shut its
             * sending side would read it. Like nginx, that counts as gone. */
            c->status = c->reply.status;
            return MHD_NO;
        }
        return queue_reply(c);
    case CONN_STREAMING:
        if (!c->status)
            return queue_stream(c);
        return MHD_YES;
    case CONN_ANSWERED:
    case CONN_PREPARING:
    case CONN_DEFERRED:
        *upload_size = 0; /* a body after an early answer: discarded */
        return MHD_YES;
    }
    return MHD_NO;
}

static void on_completed(void *cls, struct MHD_Connection *mhd, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    srv_http *h = cls;
    srv_conn *c = *req_cls;
    if (!c)
        return;
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && c->state != CONN_ANSWERED)
        c->abandoned = true;
    if (c->on_gone && c->abandoned) {
        c->on_gone(c->gone_arg);
        c->on_gone = NULL;
    }
    if (c->state == CONN_DEFERRED)
        h->deferred--;
    unprepare(c);
    h->hooks.completed(h->hooks.ud, c);
    conn_free(c);
    *req_cls = NULL;
    clock_set(mhd, mono_now()); /* a kept-alive connection's next request */
}

/* Counts open connections, for the accept policy below, and clocks them. */
static void on_connection(void *cls, struct MHD_Connection *mhd, void **socket_ctx,
                          enum MHD_ConnectionNotificationCode toe)
{
    srv_http *h = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        h->open++;
        if (h->cfg.request_timeout_s > 0)
            clock_start(h, mhd, socket_ctx);
    } else {
        h->open--;
        h->closed++;
        clock_stop(h, socket_ctx);
    }
}

/* Past max_connections a new client is accepted and closed at once, so it
 * learns that the server is full. (MHD's own limit instead leaves it waiting
 * in the listen backlog, with no answer, until a slot frees.) */
static enum MHD_Result on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
    (void)addr;
    (void)addrlen;
    srv_http *h = cls;
    if (h->open < h->cfg.max_connections)
        return MHD_YES;
    srv_log(SRV_LOG_DEBUG, "http: %d connections open, refusing another", h->open);
    return MHD_NO;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    srv_log(SRV_LOG_DEBUG, "http: %s", msg);
}

/* ---- the daemon -------------------------------------------------------------- */

static int resolve(const char *host, int port, struct sockaddr_storage *ss, eng_err *err)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV}, *res;
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    int rc = getaddrinfo(host, service, &hints, &res);
    if (rc)
        return eng_err_set(err, ENG_EINVAL, "--host %s: %s", host, gai_strerror(rc));
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

static int bound_port(struct MHD_Daemon *d)
{
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    return info ? info->port : 0;
}

int srv_http_start(srv_http **out, uv_loop_t *loop, const srv_http_cfg *cfg,
                   const srv_http_hooks *hooks, eng_err *err)
{
    srv_http *h = calloc(1, sizeof *h);
    if (!h)
        return eng_err_set(err, ENG_ENOMEM, "out of memory");
    h->loop = loop;
    h->cfg = *cfg;
    h->hooks = *hooks;
    struct sockaddr_storage ss;
    int rc = resolve(cfg->host, cfg->port, &ss, err);
    if (rc) {
        free(h);
        return rc;
    }
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* MHD keeps the request line and headers in a per-connection pool, sized
     * above the header limit (which on_request checks, answering 431); MHD
     * answers past the pool by itself. Its connection limit is one above ours
     * and never reached: on_accept enforces ours. The listening socket gets
     * MHD's default SO_REUSEADDR (a restart binds at once), never
     * SO_REUSEPORT: a second daemon on the port must fail, not share it. */
    h->mhd = MHD_start_daemon(flags, (uint16_t)cfg->port, on_accept, h, on_request, h,
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, h, /* first, or MHD logs the others itself */
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_connections + 1,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, h,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->timeout_s,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, cfg->max_header_bytes + 16384,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
        MHD_OPTION_END);
    if (!h->mhd) {
        free(h);
        return eng_err_set(err, ENG_EIO, "cannot listen on %s:%d: %s", cfg->host, cfg->port,
                           strerror(errno ? errno : EADDRINUSE));
    }
    h->port = bound_port(h->mhd);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    uv_poll_init(loop, &h->poll, info->epoll_fd);
    h->poll.data = h;
    uv_poll_start(&h->poll, UV_READABLE, on_poll);
    uv_timer_init(loop, &h->timer);
    h->timer.data = h;
    uv_timer_init(loop, &h->sweep);
    h->sweep.data = h;
    if (cfg->request_timeout_s > 0) {
        uv_timer_start(&h->sweep, on_sweep, 1000, 1000);
        uv_unref((uv_handle_t *)&h->sweep); /* never what keeps the loop running */
    }
    *out = h;
    return 0;
}

void srv_http_quiesce(srv_http *h)
{
    MHD_socket fd = MHD_quiesce_daemon(h->mhd);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
    run_mhd(h);
}

/* The handles live inside the object: it is freed when the last of their
 * close callbacks has run (libuv runs them in no order we may rely on), or
 * when the last pool job comes back after that (prepare_done). */
static void handle_closed(uv_handle_t *handle)
{
    srv_http *h = handle->data;
    if (--h->closing == 0 && !h->prep_running)
        free(h);
}

void srv_http_stop(srv_http *h)
{
    /* MHD must not stop with connections suspended: one still being prepared
     * is answered without waiting for its job. */
    while (h->preparing) {
        srv_conn *c = h->preparing;
        unprepare(c);
        srv_reply_detail(&c->reply, 503, SRV_SHUTTING_DOWN);
        c->state = CONN_READY;
        resume(c);
    }
    run_mhd(h); /* sends what was resumed since the last run (resume only schedules one) */
    uv_poll_stop(&h->poll);
    MHD_stop_daemon(h->mhd);
    h->mhd = NULL;
    h->stopped = true;
    h->closing = 3;
    uv_close((uv_handle_t *)&h->poll, handle_closed);
    uv_close((uv_handle_t *)&h->timer, handle_closed);
    uv_close((uv_handle_t *)&h->sweep, handle_closed);
}

int srv_http_port(const srv_http *h)
{
    return h->port;
}

int srv_http_deferred(const srv_http *h)
{
    return h->deferred;
}

/* ---- srv_conn accessors ------------------------------------------------------------ */

const char *srv_conn_method(const srv_conn *c) { return c->method; }
const char *srv_conn_path(const srv_conn *c) { return c->path; }
double srv_conn_start_time(const srv_conn *c) { return c->start; }
void srv_conn_set_data(srv_conn *c, void *data) { c->data = data; }
void *srv_conn_data(const srv_conn *c) { return c->data; }
srv_reply *srv_conn_reply(srv_conn *c) { return &c->reply; }
int srv_conn_status(const srv_conn *c) { return c->status; }
size_t srv_conn_bytes_sent(const srv_conn *c) { return c->sent; }
bool srv_conn_abandoned(const srv_conn *c) { return c->abandoned; }

typedef struct query_match {
    const char *key;
    size_t key_len;
    const char *value; /* the last match; NULL while none */
    size_t len;
} query_match;

static enum MHD_Result match_query(void *cls, enum MHD_ValueKind kind, const char *key,
                                   size_t key_size, const char *value, size_t value_size)
{
    (void)kind;
    query_match *m = cls;
    if (key && key_size == m->key_len && memcmp(key, m->key, key_size) == 0) {
        m->value = value ? value : "";
        m->len = value ? value_size : 0;
    }
    return MHD_YES;
}

/* Keys match case-sensitively and a repeated key gives its last value, as in
 * FastAPI (MHD's own lookup ignores case and returns the first). */
const char *srv_conn_query(const srv_conn *c, const char *key, size_t *len)
{
    query_match m = {.key = key, .key_len = strlen(key)};
    MHD_get_connection_values_n(c->mhd, MHD_GET_ARGUMENT_KIND, match_query, &m);
    if (m.value && len)
        *len = m.len;
    return m.value;
}

const char *srv_conn_header(const srv_conn *c, const char *name)
{
    return MHD_lookup_connection_value(c->mhd, MHD_HEADER_KIND, name);
}

const char *srv_conn_body(const srv_conn *c, size_t *len)
{
    *len = c->body.len;
    return c->body.data ? c->body.data : "";
}

const void *srv_conn_prepared(const srv_conn *c)
{
    return c->prepared;
}

void srv_conn_send(srv_conn *c)
{
    queue_reply(c);
}

void srv_conn_defer(srv_conn *c, void (*on_gone)(void *arg), void *arg)
{
    c->state = CONN_DEFERRED;
    c->on_gone = on_gone;
    c->gone_arg = arg;
    c->http->deferred++;
    suspend(c);
}

void srv_conn_resume(srv_conn *c)
{
    if (c->state != CONN_DEFERRED)
        return;
    c->http->deferred--;
    c->state = CONN_READY;
    c->on_gone = NULL;
    resume(c);
}

void srv_conn_stream_start(srv_conn *c, const char *content_type, void (*on_gone)(void *arg),
                           void *arg)
{
    c->state = CONN_STREAMING;
    c->reply.content_type = content_type;
    c->on_gone = on_gone;
    c->gone_arg = arg;
    queue_stream(c);
}

void srv_conn_stream_write(srv_conn *c, const char *data, size_t len)
{
    srv_buf_append(&c->stream, data, len);
    if (c->suspended)
        resume(c);
}

void srv_conn_stream_end(srv_conn *c)
{
    c->stream_done = true;
    c->on_gone = NULL;
    if (c->suspended)
        resume(c);
}
