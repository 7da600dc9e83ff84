/* GPT-2 against the goldens: last-position logits, greedy continuations,
 * and a KV cache that changes nothing (incremental and batched steps equal a
 * single full pass). */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "models/model.h"
#include "tests/unit/test.h"

#define TINY "tests/fixtures/gpt2-tiny"
#define GOLDEN "tests/fixtures/golden/gpt2.json"

static model *load_tiny(void)
{
    model *m = NULL;
    eng_err err = {0};
    int rc = model_load(TINY, NULL, &m, &err);
    CHECK_MSG(rc == 0, "load: %s", err.msg);
    return rc ? NULL : m;
}

typedef struct seq {
    model_kv kv;
    int32_t ids[1024];
    int n;
} seq;

static void seq_init(const model *m, seq *s, int capacity)
{
    memset(s, 0, sizeof *s);
    s->kv.capacity = capacity;
    s->kv.data = malloc(m->ops->kv_floats(m, capacity) * sizeof(float));
}

/* One step over several sequences: sequence i is fed new[i][0..n_new[i]). */
static void step(const model *m, seq **seqs, const int32_t *const *new_ids, const int *n_new, int n,
                 float *logits)
{
    int off[n + 1], T = 0;
    off[0] = 0;
    for (int i = 0; i < n; i++)
        off[i + 1] = (T += n_new[i]);
    int32_t ids[T ? T : 1];
    model_kv *kv[n];
    int max_ctx = 0;
    for (int i = 0; i < n; i++) {
        memcpy(ids + off[i], new_ids[i], (size_t)n_new[i] * sizeof *ids);
        kv[i] = &seqs[i]->kv;
        max_ctx = kv[i]->len + n_new[i] > max_ctx ? kv[i]->len + n_new[i] : max_ctx;
    }
    eng_arena a;
    eng_arena_init(&a);
    CHECK(eng_arena_reserve(&a, m->ops->scratch_size(m, T, max_ctx)) == 0);
    model_batch b = {.ids = ids, .seq_off = off, .n_seq = n};
    eng_err err = {0};
    CHECK_MSG(m->ops->generate_step(m, &b, kv, &a, logits, &err) == 0, "step: %s", err.msg);
    eng_arena_free(&a);
}

static void ids_of(json_t *arr, int32_t *out, int *n)
{
    *n = (int)json_array_size(arr);
    for (int i = 0; i < *n; i++)
        out[i] = (int32_t)json_integer_value(json_array_get(arr, (size_t)i));
}

TEST(gpt2_golden_last_logits)
{
    model *m = load_tiny();
    json_t *g = json_load_file(GOLDEN, 0, NULL);
    if (!m || !g)
        return;
    json_t *f;
    size_t i;
    float *logits = malloc((size_t)m->vocab_size * sizeof *logits);
    json_array_foreach(json_object_get(g, "forward"), i, f) {
        seq s;
        seq_init(m, &s, 64);
        ids_of(json_object_get(f, "input_ids"), s.ids, &s.n);
        seq *ps = &s;
        const int32_t *p = s.ids;
        step(m, &ps, &p, &s.n, 1, logits);
        char path[256];
        snprintf(path, sizeof path, "tests/fixtures/golden/%s",
                 json_string_value(json_object_get(f, "last_logits_file")));
        size_t len;
        float *want = (float *)test_read_file(path, &len);
        CHECK_EQ_INT(len, (size_t)m->vocab_size * 4);
        double worst = 0;
        for (int k = 0; want && k < m->vocab_size; k++)
            worst = fmax(worst, fabs(logits[k] - want[k]));
        CHECK_MSG(worst <= 1e-4, "%s: max |logit - golden| = %g",
                  json_string_value(json_object_get(f, "prompt")), worst);
        free(want);
        free(s.kv.data);
    }
    free(logits);
    json_decref(g);
    model_free(m);
}

static int32_t argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

TEST(gpt2_golden_greedy)
{
    model *m = load_tiny();
    json_t *g = json_load_file(GOLDEN, 0, NULL);
    if (!m || !g)
        return;
    json_t *c;
    size_t i;
    float *logits = malloc((size_t)m->vocab_size * sizeof *logits);
    json_array_foreach(json_object_get(g, "greedy"), i, c) {
        seq s;
        seq_init(m, &s, 128);
        ids_of(json_object_get(c, "input_ids"), s.ids, &s.n);
        json_t *want = json_object_get(c, "generated_ids");
        seq *ps = &s;
        const int32_t *feed = s.ids;
        int n_feed = s.n;
        for (size_t k = 0; k < json_array_size(want); k++) {
            step(m, &ps, &feed, &n_feed, 1, logits);
            int32_t next = argmax(logits, m->vocab_size);
            CHECK_EQ_INT(next, json_integer_value(json_array_get(want, k)));
            s.ids[s.n++] = next;
            feed = &s.ids[s.n - 1];
            n_feed = 1;
        }
        free(s.kv.data);
    }
    free(logits);
    json_decref(g);
    model_free(m);
}

/* Prefill in pieces, and several sequences in one step, give the logits a
 * single full pass gives. */
TEST(gpt2_cache_and_batch_change_nothing)
{
    model *m = load_tiny();
    if (!m)
        return;
    int V = m->vocab_size;
    const int32_t a_ids[] = {15496, 11, 616, 3290, 318, 13779}, b_ids[] = {464, 2068, 7586};
    float *full_a = malloc((size_t)V * 4), *full_b = malloc((size_t)V * 4);
    float *pair = malloc((size_t)2 * V * 4), *tmp = malloc((size_t)2 * V * 4);
    seq sa, sb;
    seq *ps[2] = {&sa, &sb};
    const int32_t *feed[2];
    int n[2];

    seq_init(m, &sa, 16);
    feed[0] = a_ids, n[0] = 6;
    step(m, ps, feed, n, 1, full_a);
    free(sa.kv.data);
    seq_init(m, &sb, 16);
    feed[0] = b_ids, n[0] = 3;
    step(m, &ps[1], feed, n, 1, full_b);
    free(sb.kv.data);

    /* a in three pieces (4, then 1, then 1) beside b in two (2, then 1). */
    seq_init(m, &sa, 16);
    seq_init(m, &sb, 16);
    feed[0] = a_ids, n[0] = 4, feed[1] = b_ids, n[1] = 2;
    step(m, ps, feed, n, 2, tmp);
    feed[0] = a_ids + 4, n[0] = 1, feed[1] = b_ids + 2, n[1] = 1;
    step(m, ps, feed, n, 2, pair);
    feed[0] = a_ids + 5;
    step(m, ps, feed, n, 1, tmp);
    double worst_a = 0, worst_b = 0;
    for (int k = 0; k < V; k++) {
        worst_a = fmax(worst_a, fabs(tmp[k] - full_a[k]));
        worst_b = fmax(worst_b, fabs(pair[V + k] - full_b[k]));
    }
    CHECK_MSG(worst_a <= 1e-5, "incremental a differs by %g", worst_a);
    CHECK_MSG(worst_b <= 1e-5, "batched b differs by %g", worst_b);
    free(sa.kv.data), free(sb.kv.data);
    free(full_a), free(full_b), free(pair), free(tmp);
    model_free(m);
}

TEST(gpt2_rejects_context_overflow)
{
    model *m = load_tiny();
    if (!m)
        return;
    seq s;
    seq_init(m, &s, 4);
    const int32_t ids[] = {1, 2, 3, 4, 5};
    int n = 5;
    int off[2] = {0, 5};
    model_kv *kv = &s.kv;
    eng_arena a;
    eng_arena_init(&a);
    eng_arena_reserve(&a, m->ops->scratch_size(m, 5, 5));
    model_batch b = {.ids = ids, .seq_off = off, .n_seq = 1};
    float *logits = malloc((size_t)m->vocab_size * 4);
    eng_err err = {0};
    CHECK_EQ_INT(m->ops->generate_step(m, &b, &kv, &a, logits, &err), ENG_ETOOLONG);
    (void)n;
    free(logits);
    eng_arena_free(&a);
    free(s.kv.data);
    model_free(m);
}
