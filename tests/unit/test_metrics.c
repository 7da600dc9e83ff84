/* Prometheus metrics: exact sample lines, cumulative histograms, escaping,
 * exposition-format validity, stable ordering and concurrent updates. */
#include <ctype.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "engine/error.h"
#include "server/metrics.h"
#include "tests/unit/test.h"

static srv_metrics *new_metrics(void)
{
    srv_metrics *m = NULL;
    int rc = srv_metrics_new("1.2.3", "openblas", "avx2", &m);
    CHECK_EQ_INT(rc, 0);
    return m;
}

/* The whole exposition as a malloc'd string the caller frees. */
static char *render(srv_metrics *m)
{
    srv_buf b;
    srv_buf_init(&b);
    srv_metrics_render(m, &b);
    CHECK(!b.oom);
    return srv_buf_take(&b, NULL);
}

/* The number of lines of text that are exactly line. */
static int count_line(const char *text, const char *line)
{
    int n = 0;
    size_t len = strlen(line);
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        size_t l = nl ? (size_t)(nl - p) : strlen(p);
        if (l == len && memcmp(p, line, len) == 0)
            n++;
        p += l + (nl ? 1 : 0);
    }
    return n;
}

/* The number of lines of text that start with prefix. */
static int count_prefix(const char *text, const char *prefix)
{
    int n = 0;
    size_t len = strlen(prefix);
    for (const char *p = text; *p;) {
        if (strncmp(p, prefix, len) == 0)
            n++;
        const char *nl = strchr(p, '\n');
        if (!nl)
            break;
        p = nl + 1;
    }
    return n;
}

#define CHECK_LINE(text, line) CHECK_MSG(count_line(text, line) == 1, "missing line: %s", line)

/* The value of the one sample line starting with `head ` (name and labels). */
static double sample(const char *text, const char *head)
{
    size_t len = strlen(head);
    for (const char *p = text; *p;) {
        if (strncmp(p, head, len) == 0 && p[len] == ' ')
            return strtod(p + len + 1, NULL);
        const char *nl = strchr(p, '\n');
        if (!nl)
            break;
        p = nl + 1;
    }
    test_fail(__FILE__, __LINE__, "no sample %s", head);
    return NAN;
}

/* ---------------------------------------------------------------------------
 * A small checker of the text format: every line is a comment or
 * `name{label="value",...} value`, each family has one HELP then one TYPE, and
 * every sample belongs to the family typed last.
 * ------------------------------------------------------------------------- */

static const char *skip_name(const char *p)
{
    if (!(isalpha((unsigned char)*p) || *p == '_' || *p == ':'))
        return NULL;
    while (isalnum((unsigned char)*p) || *p == '_' || *p == ':')
        p++;
    return p;
}

/* Parses `{a="x",b="y"}` at p; returns the character after it, or NULL. */
static const char *skip_labels(const char *p)
{
    if (*p != '{')
        return p;
    p++;
    while (*p != '}') {
        if (!(p = skip_name(p)) || *p++ != '=' || *p++ != '"')
            return NULL;
        while (*p != '"') {
            if (*p == '\n' || !*p)
                return NULL;
            if (*p == '\\' && !strchr("\\\"n", *++p))
                return NULL;
            p++;
        }
        p++;
        if (*p == ',')
            p++;
        else if (*p != '}')
            return NULL;
    }
    return p + 1;
}

static bool valid_value(const char *s, size_t n)
{
    if ((n == 4 && (!memcmp(s, "+Inf", 4) || !memcmp(s, "-Inf", 4))) ||
        (n == 3 && !memcmp(s, "NaN", 3)))
        return true;
    char tmp[64], *end;
    if (n == 0 || n >= sizeof tmp)
        return false;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    strtod(tmp, &end);
    return *end == '\0';
}

/* Whether a sample name belongs to family (with a histogram's suffixes). */
static bool in_family(const char *name, size_t n, const char *family, bool histogram)
{
    size_t f = strlen(family);
    if (n < f || memcmp(name, family, f) != 0)
        return false;
    if (n == f)
        return !histogram;
    const char *sfx = name + f;
    size_t sl = n - f;
    return histogram && ((sl == 7 && !memcmp(sfx, "_bucket", 7)) ||
                         (sl == 4 && !memcmp(sfx, "_sum", 4)) ||
                         (sl == 6 && !memcmp(sfx, "_count", 6)));
}

/* Checks one sample line [p, nl) against the current family. */
static void check_sample(const char *p, const char *nl, const char *family, bool histogram)
{
    const char *name_end = skip_name(p);
    const char *labels_end = name_end ? skip_labels(name_end) : NULL;
    if (!labels_end || labels_end > nl || *labels_end != ' ' ||
        !valid_value(labels_end + 1, (size_t)(nl - labels_end - 1))) {
        test_fail(__FILE__, __LINE__, "bad sample line: %.*s", (int)(nl - p), p);
        return;
    }
    CHECK_MSG(in_family(p, (size_t)(name_end - p), family, histogram),
              "sample outside its family %s: %.*s", family, (int)(nl - p), p);
}

static void check_exposition(const char *text)
{
    char family[128] = "", help[128] = "";
    bool histogram = false;
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        CHECK_MSG(nl, "last line has no newline");
        if (!nl)
            return;
        char kind[32];
        if (strncmp(p, "# HELP ", 7) == 0) {
            CHECK(sscanf(p, "# HELP %127s", help) == 1);
            char again[160];
            snprintf(again, sizeof again, "# HELP %s ", help);
            CHECK_MSG(count_prefix(text, again) == 1, "HELP of %s not once", help);
        } else if (strncmp(p, "# TYPE ", 7) == 0) {
            CHECK(sscanf(p, "# TYPE %127s %31s", family, kind) == 2);
            CHECK_MSG(strcmp(family, help) == 0, "TYPE %s not after its HELP", family);
            histogram = strcmp(kind, "histogram") == 0;
        } else if (*p != '#') {
            check_sample(p, nl, family, histogram);
        }
        p = nl + 1;
    }
}

/* ---------------------------------------------------------------------------
 * Tests
 * ------------------------------------------------------------------------- */

TEST(metrics_counter_lines)
{
    srv_metrics *m = new_metrics();
    for (int i = 0; i < 3; i++)
        srv_metrics_request(m, "sst2", "/predict", 200, 0.01);
    srv_metrics_request(m, "sst2", "/predict", 422, 0.001);
    srv_metrics_request(m, "", "/health", 200, 0.0001);
    srv_metrics_request(m, NULL, "/metrics", 200, 0.0001);
    char *t = render(m);
    CHECK_LINE(t, "predictd_requests_total{model=\"sst2\",endpoint=\"/predict\",status=\"200\"} 3");
    CHECK_LINE(t, "predictd_requests_total{model=\"sst2\",endpoint=\"/predict\",status=\"422\"} 1");
    CHECK_LINE(t, "predictd_requests_total{model=\"\",endpoint=\"/health\",status=\"200\"} 1");
    CHECK_LINE(t, "predictd_requests_total{model=\"\",endpoint=\"/metrics\",status=\"200\"} 1");
    CHECK_EQ_INT(count_prefix(t, "predictd_requests_total{"), 4);
    CHECK_LINE(t, "predictd_request_duration_seconds_count{model=\"sst2\",endpoint=\"/predict\"} 4");
    check_exposition(t);
    free(t);
    srv_metrics_free(m);
}

TEST(metrics_histogram_cumulative)
{
    srv_metrics *m = new_metrics();
    const double obs[] = {0.0005, 0.001, 0.003, 0.2, 100};
    for (size_t i = 0; i < sizeof obs / sizeof obs[0]; i++)
        srv_metrics_request(m, "gpt2", "/generate", 200, obs[i]);
    char *t = render(m);
    const char *h = "predictd_request_duration_seconds";
    char line[256];
    /* A bound counts observations equal to it (le is "less or equal"). */
    const struct { const char *le; int n; } want[] = {
        {"0.001", 2}, {"0.0025", 2}, {"0.005", 3}, {"0.1", 3}, {"0.25", 4},
        {"1", 4},     {"2.5", 4},    {"60", 4},    {"+Inf", 5},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        snprintf(line, sizeof line, "%s_bucket{model=\"gpt2\",endpoint=\"/generate\",le=\"%s\"} %d",
                 h, want[i].le, want[i].n);
        CHECK_LINE(t, line);
    }
    CHECK_EQ_INT(count_prefix(t, "predictd_request_duration_seconds_bucket{"), 16);
    snprintf(line, sizeof line, "%s_count{model=\"gpt2\",endpoint=\"/generate\"}", h);
    CHECK_EQ_INT(sample(t, line), 5);
    snprintf(line, sizeof line, "%s_sum{model=\"gpt2\",endpoint=\"/generate\"}", h);
    CHECK_NEAR(sample(t, line), 100.2045, 1e-12);

    /* Cumulative counts never decrease. */
    double prev = 0;
    for (const char *p = strstr(t, "predictd_request_duration_seconds_bucket"); p;
         p = strstr(p + 1, "predictd_request_duration_seconds_bucket")) {
        double v = strtod(strchr(p, ' ') + 1, NULL);
        CHECK(v >= prev);
        prev = v;
    }
    free(t);
    srv_metrics_free(m);
}

TEST(metrics_batch_and_generation)
{
    srv_metrics *m = new_metrics();
    srv_metrics_batch(m, "sst2", 1, 16, 0.02);
    srv_metrics_batch(m, "sst2", 3, 100, 0.04);
    srv_metrics_queue_wait(m, "sst2", 0.003);
    srv_metrics_queue_size(m, "sst2", 7);
    srv_metrics_queue_size(m, "sst2", 2);
    srv_metrics_input_tokens(m, "sst2", 100);
    srv_metrics_input_tokens(m, "sst2", 16);
    srv_metrics_generation(m, "gpt2", 4, 4, 1200, 8192);
    srv_metrics_generation(m, "gpt2", 3, 3, 1100, 8192);
    char *t = render(m);
    CHECK_LINE(t, "predictd_batch_size_bucket{model=\"sst2\",le=\"1\"} 1");
    CHECK_LINE(t, "predictd_batch_size_bucket{model=\"sst2\",le=\"2\"} 1");
    CHECK_LINE(t, "predictd_batch_size_bucket{model=\"sst2\",le=\"4\"} 2");
    CHECK_LINE(t, "predictd_batch_size_bucket{model=\"sst2\",le=\"256\"} 2");
    CHECK_LINE(t, "predictd_batch_size_sum{model=\"sst2\"} 4");
    CHECK_LINE(t, "predictd_batch_tokens_bucket{model=\"sst2\",le=\"16\"} 1");
    CHECK_LINE(t, "predictd_batch_tokens_bucket{model=\"sst2\",le=\"128\"} 2");
    CHECK_LINE(t, "predictd_batch_tokens_bucket{model=\"sst2\",le=\"65536\"} 2");
    CHECK_LINE(t, "predictd_inference_duration_seconds_count{model=\"sst2\"} 2");
    CHECK_LINE(t, "predictd_inference_duration_seconds_sum{model=\"sst2\"} 0.06");
    CHECK_LINE(t, "predictd_queue_duration_seconds_bucket{model=\"sst2\",le=\"0.005\"} 1");
    CHECK_LINE(t, "predictd_queue_size{model=\"sst2\"} 2");
    CHECK_LINE(t, "predictd_input_tokens_total{model=\"sst2\"} 116");
    CHECK_LINE(t, "predictd_generated_tokens_total{model=\"gpt2\"} 7");
    CHECK_LINE(t, "predictd_running_sequences{model=\"gpt2\"} 3");
    CHECK_LINE(t, "predictd_kv_cache_tokens{model=\"gpt2\"} 1100");
    CHECK_LINE(t, "predictd_kv_cache_capacity_tokens{model=\"gpt2\"} 8192");
    check_exposition(t);
    free(t);
    srv_metrics_free(m);
}

TEST(metrics_info_and_refusals)
{
    srv_metrics *m = new_metrics();
    srv_metrics_model_loaded(m, "sst2", "text-classification", "int8");
    srv_metrics_cancelled(m, "sst2");
    srv_metrics_rejected(m, "sst2", "queue_full");
    srv_metrics_rejected(m, "sst2", "queue_full");
    srv_metrics_rejected(m, "sst2", "too_large");
    char *t = render(m);
    CHECK_LINE(t, "predictd_build_info{version=\"1.2.3\",blas_core=\"openblas\","
                  "kernel_level=\"avx2\"} 1");
    CHECK_LINE(t, "predictd_model_loaded{model=\"sst2\",task=\"text-classification\","
                  "dtype=\"int8\"} 1");
    CHECK_LINE(t, "predictd_cancelled_requests_total{model=\"sst2\"} 1");
    CHECK_LINE(t, "predictd_rejected_requests_total{model=\"sst2\",reason=\"queue_full\"} 2");
    CHECK_LINE(t, "predictd_rejected_requests_total{model=\"sst2\",reason=\"too_large\"} 1");
    free(t);
    srv_metrics_free(m);
}

TEST(metrics_label_escaping)
{
    srv_metrics *m = new_metrics();
    srv_metrics_cancelled(m, "a\"b\\c\nd");
    char *t = render(m);
    CHECK_LINE(t, "predictd_cancelled_requests_total{model=\"a\\\"b\\\\c\\nd\"} 1");
    check_exposition(t);
    free(t);
    srv_metrics_free(m);
}

TEST(metrics_help_and_type_once_per_family)
{
    static const char *const families[] = {
        "predictd_build_info gauge",
        "predictd_process_start_time_seconds gauge",
        "predictd_process_resident_memory_bytes gauge",
        "predictd_model_loaded gauge",
        "predictd_requests_total counter",
        "predictd_request_duration_seconds histogram",
        "predictd_cancelled_requests_total counter",
        "predictd_inline_requests_total counter",
        "predictd_rejected_requests_total counter",
        "predictd_queue_size gauge",
        "predictd_queue_duration_seconds histogram",
        "predictd_inference_duration_seconds histogram",
        "predictd_batch_size histogram",
        "predictd_batch_tokens histogram",
        "predictd_input_tokens_total counter",
        "predictd_generated_tokens_total counter",
        "predictd_running_sequences gauge",
        "predictd_kv_cache_tokens gauge",
        "predictd_kv_cache_capacity_tokens gauge",
    };
    srv_metrics *m = new_metrics();
    srv_metrics_request(m, "sst2", "/predict", 200, 0.01);
    srv_metrics_batch(m, "sst2", 1, 10, 0.01);
    char *t = render(m);
    size_t n = sizeof families / sizeof families[0];
    CHECK_EQ_INT(count_prefix(t, "# HELP "), n);
    CHECK_EQ_INT(count_prefix(t, "# TYPE "), n);
    for (size_t i = 0; i < n; i++) {
        char name[128], line[192];
        sscanf(families[i], "%127s", name);
        snprintf(line, sizeof line, "# HELP %s ", name);
        CHECK_MSG(count_prefix(t, line) == 1, "HELP of %s not once", name);
        snprintf(line, sizeof line, "# TYPE %s", families[i]);
        CHECK_LINE(t, line);
    }
    check_exposition(t);
    free(t);
    srv_metrics_free(m);
}

/* Everything but the process gauges, which change between renders. */
static char *render_stable(srv_metrics *m)
{
    char *t = render(m), *w = t;
    for (char *p = t; *p;) {
        char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p + 1) : strlen(p);
        if (strncmp(p, "predictd_process_", 17) != 0) {
            memmove(w, p, len);
            w += len;
        }
        p += len;
    }
    *w = '\0';
    return t;
}

TEST(metrics_order_is_stable)
{
    static const char *const models[] = {"b", "a", "c"};
    static const int codes[] = {500, 200, 404};
    srv_metrics *m1 = new_metrics(), *m2 = new_metrics();
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            srv_metrics_request(m1, models[i], "/predict", codes[j], 0.01);
            srv_metrics_request(m2, models[2 - i], "/predict", codes[2 - j], 0.01);
        }
    char *t1 = render_stable(m1), *t2 = render_stable(m2);
    CHECK_STR(t1, t2);
    const char *a200 = strstr(t1, "{model=\"a\",endpoint=\"/predict\",status=\"200\"}");
    const char *a404 = strstr(t1, "{model=\"a\",endpoint=\"/predict\",status=\"404\"}");
    const char *b200 = strstr(t1, "{model=\"b\",endpoint=\"/predict\",status=\"200\"}");
    CHECK(a200 && a404 && b200 && a200 < a404 && a404 < b200);
    free(t1);
    free(t2);
    srv_metrics_free(m1);
    srv_metrics_free(m2);
}

TEST(metrics_registries_are_separate)
{
    srv_metrics *m1 = new_metrics(), *m2 = new_metrics();
    srv_metrics_cancelled(m1, "x");
    char *t = render(m2);
    CHECK(strstr(t, "predictd_cancelled_requests_total{") == NULL);
    free(t);
    srv_metrics_free(m1);
    srv_metrics_free(m2);
}

enum { THREADS = 4, PER_THREAD = 10000 };

static void *hammer(void *arg)
{
    srv_metrics *m = arg;
    char own[32];
    snprintf(own, sizeof own, "t%p", (void *)&own); /* a label set per thread, made mid-run */
    for (int i = 0; i < PER_THREAD; i++) {
        srv_metrics_request(m, "sst2", "/predict", 200, 0.002);
        srv_metrics_batch(m, "sst2", 2, 32, 0.01);
        if (i % 1000 == 0)
            srv_metrics_cancelled(m, own);
    }
    return NULL;
}

TEST(metrics_concurrent_updates_are_exact)
{
    srv_metrics *m = new_metrics();
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        CHECK_EQ_INT(pthread_create(&th[i], NULL, hammer, m), 0);
    char *mid = render(m); /* a scrape while updates run */
    free(mid);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    char *t = render(m);
    long total = (long)THREADS * PER_THREAD;
    CHECK_EQ_INT(sample(t, "predictd_requests_total{model=\"sst2\",endpoint=\"/predict\","
                           "status=\"200\"}"), total);
    CHECK_EQ_INT(sample(t, "predictd_request_duration_seconds_count{model=\"sst2\","
                           "endpoint=\"/predict\"}"), total);
    CHECK_EQ_INT(sample(t, "predictd_batch_size_bucket{model=\"sst2\",le=\"+Inf\"}"), total);
    CHECK_EQ_INT(sample(t, "predictd_batch_size_sum{model=\"sst2\"}"), 2 * total);
    CHECK_EQ_INT(count_prefix(t, "predictd_cancelled_requests_total{"), THREADS);
    check_exposition(t);
    free(t);
    srv_metrics_free(m);
}

TEST(metrics_process_gauges)
{
    srv_metrics *m = new_metrics();
    char *t = render(m);
    double start = sample(t, "predictd_process_start_time_seconds");
    CHECK(start > 1e9 && start <= (double)time(NULL) + 1);
#ifdef __linux__
    CHECK(sample(t, "predictd_process_resident_memory_bytes") > 0);
#endif
    free(t);
    srv_metrics_free(m);
}

TEST(metrics_number_format)
{
    srv_metrics *m = new_metrics();
    srv_metrics_queue_wait(m, "x", 0.1);
    srv_metrics_queue_wait(m, "x", 0.2);
    srv_metrics_generation(m, "x", 0, 0, 123456789012L, 0);
    char *t = render(m);
    CHECK_LINE(t, "predictd_queue_duration_seconds_sum{model=\"x\"} 0.30000000000000004");
    CHECK_LINE(t, "predictd_kv_cache_tokens{model=\"x\"} 123456789012");
    CHECK_LINE(t, "predictd_kv_cache_capacity_tokens{model=\"x\"} 0");
    free(t);
    srv_metrics_free(m);
}

TEST(metrics_series_limit_drops_and_says_so)
{
    srv_metrics *m = new_metrics();
    char model[32];
    for (int i = 0; i < 1100; i++) {
        snprintf(model, sizeof model, "m%04d", i);
        srv_metrics_cancelled(m, model);
    }
    srv_metrics_cancelled(m, "m0000"); /* a known label set still counts */
    char *t = render(m);
    CHECK_EQ_INT(count_prefix(t, "predictd_cancelled_requests_total{"), 1024);
    CHECK_LINE(t, "predictd_cancelled_requests_total{model=\"m0000\"} 2");
    CHECK_LINE(t, "# predictd: 76 metric updates dropped (too many label sets or out of memory)");
    check_exposition(t);
    free(t);
    srv_metrics_free(m);
}
