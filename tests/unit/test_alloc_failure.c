/* Allocation failure injected at the Nth allocation: loading a model and
 * answering a request must end in a clean error, never a crash; under the
 * ASan build LeakSanitizer then checks that nothing leaked.
 *
 * The unit-test binary is linked with -Wl,--wrap for the allocation
 * functions, so every allocation predictd's own code makes goes through
 * these wrappers (the libraries' own allocations do not). With fail_at 0
 * they only count. */
#include <stdlib.h>
#include <string.h>

#include "models/model.h"
#include "server/classify.h"
#include "server/generate.h"
#include "tests/unit/fixtures.h"
#include "tests/unit/test.h"

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
int __real_posix_memalign(void **p, size_t align, size_t n);

static long calls, fail_at; /* the allocation to fail (1-based), 0: none */

static int should_fail(void)
{
    return fail_at && ++calls == fail_at;
}

void *__wrap_malloc(size_t n) { return should_fail() ? NULL : __real_malloc(n); }
void *__wrap_calloc(size_t n, size_t size) { return should_fail() ? NULL : __real_calloc(n, size); }
void *__wrap_realloc(void *p, size_t n) { return should_fail() ? NULL : __real_realloc(p, n); }
char *__wrap_strdup(const char *s) { return should_fail() ? NULL : __real_strdup(s); }
char *__wrap_strndup(const char *s, size_t n) { return should_fail() ? NULL : __real_strndup(s, n); }
int __wrap_posix_memalign(void **p, size_t align, size_t n)
{
    return should_fail() ? 12 /* ENOMEM */ : __real_posix_memalign(p, align, n);
}

/* Counts the allocations of one successful run of fn, after a first run
 * that lets one-time set-up (the kernels' thread pool) happen. */
static long count_allocations(int (*fn)(void *), void *arg)
{
    CHECK_EQ_INT(fn(arg), 0);
    fail_at = -1; /* count, never fail */
    calls = 0;
    CHECK_EQ_INT(fn(arg), 0);
    fail_at = 0;
    return calls;
}

/* Fails each allocation of fn in turn (every one up to 300, then a sample)
 * and expects a clean error each time. */
static void fail_each(const char *what, int (*fn)(void *), void *arg)
{
    long total = count_allocations(fn, arg);
    CHECK_MSG(total > 0, "%s made no allocation", what);
    for (long n = 1; n <= total; n += n < 300 ? 1 : 97) {
        calls = 0;
        fail_at = n;
        int rc = fn(arg);
        fail_at = 0;
        CHECK_MSG(rc != 0, "%s succeeded although allocation %ld of %ld failed", what, n, total);
    }
}

static int load(void *dir)
{
    model *m = NULL;
    eng_err err = {0};
    int rc = model_load(dir, NULL, &m, &err);
    if (!rc)
        model_free(m);
    else
        CHECK_MSG(err.msg[0] != '\0', "an error without a message (code %d)", rc);
    return rc;
}

TEST(alloc_failure_model_load_distilbert)
{
    fail_each("loading DistilBERT", load, FIXTURE_DISTILBERT);
}

TEST(alloc_failure_model_load_gpt2)
{
    fail_each("loading GPT-2", load, FIXTURE_GPT2);
}

TEST(alloc_failure_model_load_clip)
{
    fail_each("loading CLIP", load, FIXTURE_CLIP);
}

/* The model the request tests run on. */
static model *loaded;

/* Loads the model in dir as `loaded`, fails each allocation of fn(arg) in
 * turn, and frees the model. */
static void fail_each_on(const char *dir, const char *what, int (*fn)(void *), void *arg)
{
    loaded = fixture_model_load(dir, ENG_F32);
    if (!loaded)
        return;
    fail_each(what, fn, arg);
    model_free(loaded);
    loaded = NULL;
}

/* One classification request, parsed, run and answered. Returns 0 for a 200. */
static int classify_request(void *body)
{
    srv_limits lim = {.max_client_batch = 32};
    srv_request in = {.body = body, .body_len = strlen(body), .limits = &lim};
    srv_reply out;
    srv_reply_init(&out);
    srv_classify_req req;
    int rc = srv_classify_parse(loaded, &in, &req, &out);
    if (!rc) {
        eng_arena a;
        eng_arena_init(&a);
        eng_err err = {0};
        rc = srv_classify_run(loaded, &req, &a, &err);
        if (!rc)
            srv_classify_format(loaded, &req, &out);
        eng_arena_free(&a);
        srv_classify_req_free(&req);
    }
    if (!rc)
        rc = out.status == 200 && !out.body.oom ? 0 : -1;
    srv_reply_free(&out);
    return rc;
}

TEST(alloc_failure_classify_request)
{
    fail_each_on(FIXTURE_DISTILBERT, "a classification request", classify_request,
                 "{\"inputs\": [\"a gripping film\", \"a dull mess\"], \"raw_scores\": true}");
}

static int generate_request(void *body)
{
    srv_limits lim = {.max_client_batch = 32, .max_new_tokens = 64, .max_batch_total_tokens = 4096};
    srv_request in = {.body = body, .body_len = strlen(body), .limits = &lim};
    srv_reply out;
    srv_reply_init(&out);
    srv_gen_job job;
    memset(&job, 0, sizeof job);
    int rc = srv_gen_parse(loaded, SRV_GEN_TGI, &in, &job, &out);
    srv_reply_free(&out);
    srv_gen_job_free(&job);
    return rc;
}

TEST(alloc_failure_generate_parse)
{
    fail_each_on(FIXTURE_GPT2, "parsing a generation request", generate_request,
                 "{\"inputs\": \"Hello there\", "
                 "\"parameters\": {\"max_new_tokens\": 5, \"stop\": [\"x\"]}}");
}
