/* Prometheus metrics: one generic "family with label sets" mechanism driven by
 * a table of families, rather than a struct per metric.
 *
 * Each family keeps its series (one per label set) in an array sorted by label
 * values, so an update is a binary search under the registry mutex and render
 * order is stable whatever order label sets first appeared in. A series is one
 * allocation holding its values, its histogram buckets and copies of its label
 * values; it lives until the registry is freed. */
#include "server/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/error.h"

/* ---------------------------------------------------------------------------
 * The family table
 * ------------------------------------------------------------------------- */

enum { MET_MAX_LABELS = 3 };

/* A guard against a caller that lets unbounded values (raw URLs, unknown model
 * names) into a label: past this many label sets a family drops new ones, and
 * render reports how many updates were dropped. */
enum { MET_MAX_SERIES = 1024 };

typedef enum met_kind { MET_COUNTER, MET_GAUGE, MET_HISTOGRAM } met_kind;

static const char *const kind_names[] = {
    [MET_COUNTER] = "counter",
    [MET_GAUGE] = "gauge",
    [MET_HISTOGRAM] = "histogram",
};

typedef enum met_id {
    MET_BUILD_INFO,
    MET_START_TIME,
    MET_RESIDENT_MEMORY,
    MET_MODEL_LOADED,
    MET_REQUESTS,
    MET_REQUEST_DURATION,
    MET_CANCELLED,
    MET_INLINE,
    MET_REJECTED,
    MET_QUEUE_SIZE,
    MET_QUEUE_DURATION,
    MET_INFERENCE_DURATION,
    MET_BATCH_SIZE,
    MET_BATCH_TOKENS,
    MET_INPUT_TOKENS,
    MET_GENERATED_TOKENS,
    MET_RUNNING_SEQUENCES,
    MET_KV_CACHE_TOKENS,
    MET_KV_CACHE_CAPACITY,
    MET_COUNT
} met_id;

/* Latency buckets: the 1-2.5-5 progression from 1 ms, capped at one minute
 * (the longest a generation request is expected to run). */
static const double seconds_buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                         0.5,   1,      2.5,   5,    10,    25,   60};
static const double batch_size_buckets[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
static const double batch_tokens_buckets[] = {16,   32,   64,    128,   256,   512,  1024,
                                              2048, 4096, 8192, 16384, 32768, 65536};

#define BUCKETS(a) a, sizeof(a) / sizeof(a[0])

typedef struct met_def {
    const char *name;
    const char *help; /* no backslash or newline: written as is */
    met_kind kind;
    int n_labels;
    const char *labels[MET_MAX_LABELS];
    const double *buckets; /* (n_buckets) ascending upper bounds, +Inf implied */
    int n_buckets;
} met_def;

static const met_def defs[MET_COUNT] = {
    [MET_BUILD_INFO] = {"predictd_build_info", "Build information; the value is always 1.",
                        MET_GAUGE, 3, {"version", "blas_core", "kernel_level"}},
    [MET_START_TIME] = {"predictd_process_start_time_seconds",
                        "Start time of the process since the Unix epoch in seconds.", MET_GAUGE},
    [MET_RESIDENT_MEMORY] = {"predictd_process_resident_memory_bytes",
                             "Resident memory size of the process in bytes.", MET_GAUGE},
    [MET_MODEL_LOADED] = {"predictd_model_loaded", "Models being served; the value is always 1.",
                          MET_GAUGE, 3, {"model", "task", "dtype"}},
    [MET_REQUESTS] = {"predictd_requests_total", "HTTP requests answered, by route and status.",
                      MET_COUNTER, 3, {"model", "endpoint", "status"}},
    [MET_REQUEST_DURATION] = {"predictd_request_duration_seconds",
                              "Time from receiving a request to answering it.", MET_HISTOGRAM, 2,
                              {"model", "endpoint"}, BUCKETS(seconds_buckets)},
    [MET_CANCELLED] = {"predictd_cancelled_requests_total",
                       "Requests whose client disconnected before the answer.", MET_COUNTER, 1,
                       {"model"}},
    [MET_INLINE] = {"predictd_inline_requests_total",
                    "Requests computed on the event loop, skipping the queue (--inline-max-us).",
                    MET_COUNTER, 1, {"model"}},
    [MET_REJECTED] = {"predictd_rejected_requests_total",
                      "Requests refused before inference, by reason.", MET_COUNTER, 2,
                      {"model", "reason"}},
    [MET_QUEUE_SIZE] = {"predictd_queue_size", "Requests waiting for a batch.", MET_GAUGE, 1,
                        {"model"}},
    [MET_QUEUE_DURATION] = {"predictd_queue_duration_seconds",
                            "Time from enqueueing a request to the start of its batch.",
                            MET_HISTOGRAM, 1, {"model"}, BUCKETS(seconds_buckets)},
    [MET_INFERENCE_DURATION] = {"predictd_inference_duration_seconds",
                                "Time of one batch forward pass.", MET_HISTOGRAM, 1, {"model"},
                                BUCKETS(seconds_buckets)},
    [MET_BATCH_SIZE] = {"predictd_batch_size", "Sequences per batch.", MET_HISTOGRAM, 1,
                        {"model"}, BUCKETS(batch_size_buckets)},
    [MET_BATCH_TOKENS] = {"predictd_batch_tokens", "Tokens processed per batch forward pass.",
                          MET_HISTOGRAM, 1, {"model"}, BUCKETS(batch_tokens_buckets)},
    [MET_INPUT_TOKENS] = {"predictd_input_tokens_total", "Prompt tokens of admitted requests.",
                          MET_COUNTER, 1, {"model"}},
    [MET_GENERATED_TOKENS] = {"predictd_generated_tokens_total", "Tokens generated.",
                              MET_COUNTER, 1, {"model"}},
    [MET_RUNNING_SEQUENCES] = {"predictd_running_sequences", "Sequences being generated now.",
                               MET_GAUGE, 1, {"model"}},
    [MET_KV_CACHE_TOKENS] = {"predictd_kv_cache_tokens", "Tokens held in KV-cache slots.",
                             MET_GAUGE, 1, {"model"}},
    [MET_KV_CACHE_CAPACITY] = {"predictd_kv_cache_capacity_tokens",
                               "Tokens the KV cache can hold.", MET_GAUGE, 1, {"model"}},
};

/* ---------------------------------------------------------------------------
 * Series and the registry
 * ------------------------------------------------------------------------- */

typedef struct met_series {
    const char *labels[MET_MAX_LABELS]; /* point into the tail of this allocation */
    double value;       /* a counter's total or a gauge's value; a histogram's sum */
    uint64_t count;     /* a histogram's observations */
    uint64_t buckets[]; /* (n_buckets) per-bucket counts, not cumulative; render sums them */
} met_series;

typedef struct met_family {
    met_series **series; /* (n) sorted by label values */
    size_t n, cap;
} met_family;

struct srv_metrics {
    pthread_mutex_t lock; /* guards every family and dropped */
    met_family families[MET_COUNT];
    uint64_t dropped; /* updates lost to MET_MAX_SERIES or a failed allocation */
};

/* Orders label sets value by value, so status "200" sorts before "404". */
static int labels_cmp(int n, const char *const *a, const char *const *b)
{
    for (int i = 0; i < n; i++) {
        int c = strcmp(a[i], b[i]);
        if (c)
            return c;
    }
    return 0;
}

/* One allocation: the struct, its buckets, then each label value and its NUL. */
static met_series *series_new(const met_def *d, const char *const *labels)
{
    size_t head = sizeof(met_series) + (size_t)d->n_buckets * sizeof(uint64_t);
    size_t size = head;
    for (int i = 0; i < d->n_labels; i++)
        size += strlen(labels[i]) + 1;
    met_series *s = calloc(1, size);
    if (!s)
        return NULL;
    char *p = (char *)s + head;
    for (int i = 0; i < d->n_labels; i++) {
        size_t len = strlen(labels[i]) + 1;
        memcpy(p, labels[i], len);
        s->labels[i] = p;
        p += len;
    }
    return s;
}

/* Finds the series of a label set, creating it on first sight. Called with
 * the lock held. Returns NULL (and counts a dropped update) when the family is
 * full or memory runs out. */
static met_series *series_get(srv_metrics *m, met_id id, const char *const *labels)
{
    const met_def *d = &defs[id];
    met_family *f = &m->families[id];
    size_t lo = 0, hi = f->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = labels_cmp(d->n_labels, f->series[mid]->labels, labels);
        if (c == 0)
            return f->series[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (f->n == MET_MAX_SERIES)
        goto drop;
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 8;
        met_series **v = realloc(f->series, cap * sizeof *v);
        if (!v)
            goto drop;
        f->series = v;
        f->cap = cap;
    }
    met_series *s = series_new(d, labels);
    if (!s)
        goto drop;
    memmove(f->series + lo + 1, f->series + lo, (f->n - lo) * sizeof *f->series);
    f->series[lo] = s;
    f->n++;
    return s;
drop:
    m->dropped++;
    return NULL;
}

/* Applies one update as the family's kind reads it: a counter adds v, a gauge
 * becomes v, a histogram observes v. Called with the lock held. NULL label
 * values become "". */
static void record(srv_metrics *m, met_id id, const char *const *labels, double v)
{
    const met_def *d = &defs[id];
    const char *vals[MET_MAX_LABELS] = {0};
    for (int i = 0; i < d->n_labels; i++)
        vals[i] = labels[i] ? labels[i] : "";
    met_series *s = series_get(m, id, vals);
    if (!s)
        return;
    switch (d->kind) {
    case MET_COUNTER:
        s->value += v;
        break;
    case MET_GAUGE:
        s->value = v;
        break;
    case MET_HISTOGRAM: {
        int b = 0;
        while (b < d->n_buckets && v > d->buckets[b])
            b++;
        if (b < d->n_buckets)
            s->buckets[b]++;
        s->value += v;
        s->count++;
        break;
    }
    }
}

/* ---------------------------------------------------------------------------
 * Process figures
 * ------------------------------------------------------------------------- */

/* Resident set size from /proc/self/statm (in pages); 0 where there is no
 * /proc. */
static double process_resident_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return 0;
    unsigned long size, resident;
    double bytes = 0;
    if (fscanf(f, "%lu %lu", &size, &resident) == 2)
        bytes = (double)resident * (double)sysconf(_SC_PAGESIZE);
    fclose(f);
    return bytes;
}

/* The boot time in seconds since the epoch ("btime" in /proc/stat), or -1. */
static double boot_time(void)
{
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return -1;
    char line[256];
    double btime = -1;
    while (fgets(line, sizeof line, f)) {
        unsigned long long t;
        if (sscanf(line, "btime %llu", &t) == 1)
            btime = (double)t;
    }
    fclose(f);
    return btime;
}

/* The process's start in clock ticks since boot: field 22 of /proc/self/stat,
 * or -1. */
static double process_start_ticks(void)
{
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name (field 2) may hold spaces and parentheses; the fields
     * after the last ')' start at field 3. */
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    char *save, *tok = strtok_r(p + 1, " ", &save);
    for (int field = 3; tok && field < 22; field++)
        tok = strtok_r(NULL, " ", &save);
    return tok ? strtod(tok, NULL) : -1;
}

/* The process's start time since the epoch, as Prometheus' own clients report
 * it (boot time plus start ticks). Where /proc cannot tell, now: the registry
 * is created as the daemon starts. */
static double process_start_time(void)
{
    double btime = boot_time(), ticks = process_start_ticks();
    if (btime >= 0 && ticks >= 0)
        return btime + ticks / (double)sysconf(_SC_CLK_TCK);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---------------------------------------------------------------------------
 * Public updates
 * ------------------------------------------------------------------------- */

int srv_metrics_new(const char *version, const char *blas_core, const char *kernel_level,
                    srv_metrics **out)
{
    *out = NULL;
    srv_metrics *m = calloc(1, sizeof *m);
    if (!m)
        return ENG_ENOMEM;
    if (pthread_mutex_init(&m->lock, NULL) != 0) {
        free(m);
        return ENG_ENOMEM;
    }
    const char *build[] = {version, blas_core, kernel_level};
    record(m, MET_BUILD_INFO, build, 1);
    record(m, MET_START_TIME, NULL, process_start_time());
    if (m->dropped) {
        srv_metrics_free(m);
        return ENG_ENOMEM;
    }
    *out = m;
    return 0;
}

void srv_metrics_free(srv_metrics *m)
{
    if (!m)
        return;
    for (int id = 0; id < MET_COUNT; id++) {
        met_family *f = &m->families[id];
        for (size_t i = 0; i < f->n; i++)
            free(f->series[i]);
        free(f->series);
    }
    pthread_mutex_destroy(&m->lock);
    free(m);
}

void srv_metrics_request(srv_metrics *m, const char *model, const char *endpoint, int status,
                         double seconds)
{
    char code[16];
    snprintf(code, sizeof code, "%d", status);
    /* The duration family's labels (model, endpoint) are a prefix of these. */
    const char *labels[] = {model, endpoint, code};
    pthread_mutex_lock(&m->lock);
    record(m, MET_REQUESTS, labels, 1);
    record(m, MET_REQUEST_DURATION, labels, seconds);
    pthread_mutex_unlock(&m->lock);
}

/* The updates labelled by model alone share one shape. */
static void record_model(srv_metrics *m, met_id id, const char *model, double v)
{
    pthread_mutex_lock(&m->lock);
    record(m, id, &model, v);
    pthread_mutex_unlock(&m->lock);
}

void srv_metrics_input_tokens(srv_metrics *m, const char *model, long tokens)
{
    record_model(m, MET_INPUT_TOKENS, model, (double)tokens);
}

void srv_metrics_queue_wait(srv_metrics *m, const char *model, double seconds)
{
    record_model(m, MET_QUEUE_DURATION, model, seconds);
}

void srv_metrics_queue_size(srv_metrics *m, const char *model, int waiting)
{
    record_model(m, MET_QUEUE_SIZE, model, waiting);
}

void srv_metrics_cancelled(srv_metrics *m, const char *model)
{
    record_model(m, MET_CANCELLED, model, 1);
}

void srv_metrics_inline(srv_metrics *m, const char *model)
{
    record_model(m, MET_INLINE, model, 1);
}

void srv_metrics_batch(srv_metrics *m, const char *model, int sequences, int tokens,
                       double seconds)
{
    pthread_mutex_lock(&m->lock);
    record(m, MET_BATCH_SIZE, &model, sequences);
    record(m, MET_BATCH_TOKENS, &model, tokens);
    record(m, MET_INFERENCE_DURATION, &model, seconds);
    pthread_mutex_unlock(&m->lock);
}

void srv_metrics_generation(srv_metrics *m, const char *model, int new_tokens, int running,
                            long kv_tokens, long kv_capacity)
{
    pthread_mutex_lock(&m->lock);
    record(m, MET_GENERATED_TOKENS, &model, new_tokens);
    record(m, MET_RUNNING_SEQUENCES, &model, running);
    record(m, MET_KV_CACHE_TOKENS, &model, (double)kv_tokens);
    record(m, MET_KV_CACHE_CAPACITY, &model, (double)kv_capacity);
    pthread_mutex_unlock(&m->lock);
}

void srv_metrics_rejected(srv_metrics *m, const char *model, const char *reason)
{
    const char *labels[] = {model, reason};
    pthread_mutex_lock(&m->lock);
    record(m, MET_REJECTED, labels, 1);
    pthread_mutex_unlock(&m->lock);
}

void srv_metrics_model_loaded(srv_metrics *m, const char *model, const char *task,
                              const char *dtype)
{
    const char *labels[] = {model, task, dtype};
    pthread_mutex_lock(&m->lock);
    record(m, MET_MODEL_LOADED, labels, 1);
    pthread_mutex_unlock(&m->lock);
}

/* ---------------------------------------------------------------------------
 * Rendering
 * ------------------------------------------------------------------------- */

/* A sample value as the text format reads it (Go's ParseFloat): integers
 * without a decimal point, others in the fewest digits that read back
 * exactly, and +Inf, -Inf, NaN. */
static void put_num(srv_buf *b, double v)
{
    if (isnan(v)) {
        srv_buf_puts(b, "NaN");
        return;
    }
    if (isinf(v)) {
        srv_buf_puts(b, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    if (v == floor(v) && fabs(v) < 1e15) {
        srv_buf_printf(b, "%.0f", v == 0 ? 0.0 : v); /* 0.0 so -0 prints as 0 */
        return;
    }
    char s[32];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(s, sizeof s, "%.*g", prec, v);
        if (strtod(s, NULL) == v)
            break;
    }
    srv_buf_puts(b, s);
}

/* A label value in double quotes, with the three escapes the format has. */
static void put_label_value(srv_buf *b, const char *s)
{
    srv_buf_puts(b, "\"");
    const char *run = s;
    for (; *s; s++) {
        const char *esc = *s == '\\' ? "\\\\" : *s == '"' ? "\\\"" : *s == '\n' ? "\\n" : NULL;
        if (!esc)
            continue;
        srv_buf_append(b, run, (size_t)(s - run));
        srv_buf_puts(b, esc);
        run = s + 1;
    }
    srv_buf_append(b, run, (size_t)(s - run));
    srv_buf_puts(b, "\"");
}

/* `name[suffix]{labels[,le="bound"]} ` up to the value. le is NULL outside
 * histogram buckets; a bucket's le is the bound, or +Inf when isinf. */
static void put_sample_head(srv_buf *b, const met_def *d, const char *suffix,
                            const met_series *s, const double *le)
{
    srv_buf_puts(b, d->name);
    srv_buf_puts(b, suffix);
    if (d->n_labels > 0 || le) {
        srv_buf_puts(b, "{");
        for (int i = 0; i < d->n_labels; i++) {
            srv_buf_printf(b, "%s%s=", i ? "," : "", d->labels[i]);
            put_label_value(b, s->labels[i]);
        }
        if (le) {
            srv_buf_puts(b, d->n_labels ? ",le=\"" : "le=\"");
            put_num(b, *le);
            srv_buf_puts(b, "\"");
        }
        srv_buf_puts(b, "}");
    }
    srv_buf_puts(b, " ");
}

static void put_sample(srv_buf *b, const met_def *d, const char *suffix, const met_series *s,
                       const double *le, double v)
{
    put_sample_head(b, d, suffix, s, le);
    put_num(b, v);
    srv_buf_puts(b, "\n");
}

/* A histogram's cumulative buckets, the +Inf bucket (equal to _count), _sum
 * and _count. */
static void put_histogram(srv_buf *b, const met_def *d, const met_series *s)
{
    uint64_t cum = 0;
    for (int i = 0; i < d->n_buckets; i++) {
        cum += s->buckets[i];
        put_sample(b, d, "_bucket", s, &d->buckets[i], (double)cum);
    }
    const double inf = INFINITY;
    put_sample(b, d, "_bucket", s, &inf, (double)s->count);
    put_sample(b, d, "_sum", s, NULL, s->value);
    put_sample(b, d, "_count", s, NULL, (double)s->count);
}

static void put_family(srv_buf *b, const met_def *d, const met_family *f)
{
    srv_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", d->name, d->help, d->name,
                   kind_names[d->kind]);
    for (size_t i = 0; i < f->n; i++) {
        if (d->kind == MET_HISTOGRAM)
            put_histogram(b, d, f->series[i]);
        else
            put_sample(b, d, "", f->series[i], NULL, f->series[i]->value);
    }
}

/* Rendering holds the lock throughout: a scrape is rare and takes
 * microseconds, and a consistent snapshot (a histogram's buckets agreeing with
 * its count) is worth the brief wait it may cause an update. */
void srv_metrics_render(srv_metrics *m, srv_buf *out)
{
    double resident = process_resident_bytes(); /* file I/O stays outside the lock */
    pthread_mutex_lock(&m->lock);
    record(m, MET_RESIDENT_MEMORY, NULL, resident);
    for (int id = 0; id < MET_COUNT; id++)
        put_family(out, &defs[id], &m->families[id]);
    if (m->dropped)
        srv_buf_printf(out, "# predictd: %llu metric updates dropped (too many label sets "
                            "or out of memory)\n", (unsigned long long)m->dropped);
    pthread_mutex_unlock(&m->lock);
}
