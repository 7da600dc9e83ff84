/* GPT-2 against the goldens: last-position logits, greedy continuations,
 * and a KV cache that changes nothing (incremental and batched steps equal a
 * single full pass). */
#include <jansson.h>
#include <stdlib.h>

#include "models/model.h"
#include "tests/unit/fixtures.h"
#include "tests/unit/test.h"

MODEL_TEST(gpt2_golden_last_logits, FIXTURE_GPT2, FIXTURE_GPT2_GOLDEN)
{
    float *logits = malloc((size_t)m->vocab_size * sizeof *logits);
    json_t *f;
    size_t i;
    json_array_foreach(json_object_get(g, "forward"), i, f) {
        fixture_seq s;
        fixture_seq_start(m, &s, json_object_get(f, "input_ids"), 64, logits);
        size_t len;
        float *want = fixture_last_logits_read(f, &len);
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
}

/* Each step feeds the model's own choice, as generation does. */
MODEL_TEST(gpt2_golden_greedy, FIXTURE_GPT2, FIXTURE_GPT2_GOLDEN)
{
    float *logits = malloc((size_t)m->vocab_size * sizeof *logits);
    json_t *c;
    size_t i;
    json_array_foreach(json_object_get(g, "greedy"), i, c) {
        json_t *want = json_object_get(c, "generated_ids");
        fixture_seq s;
        fixture_seq_start(m, &s, json_object_get(c, "input_ids"), 128, logits);
        for (size_t k = 0; k < json_array_size(want); k++) {
            int32_t next = fixture_argmax(logits, m->vocab_size);
            CHECK_EQ_INT(next, json_integer_value(json_array_get(want, k)));
            fixture_seq_feed(m, &s, next, logits);
        }
        free(s.kv.data);
    }
    free(logits);
}

/* Prefill in pieces, and several sequences in one step, give the logits a
 * single full pass gives. */
MODEL_TEST(gpt2_cache_and_batch_change_nothing, FIXTURE_GPT2, NULL)
{
    int V = m->vocab_size;
    const int32_t a_ids[] = {15496, 11, 616, 3290, 318, 13779}, b_ids[] = {464, 2068, 7586};
    float *full_a = malloc((size_t)V * 4), *full_b = malloc((size_t)V * 4);
    float *pair = malloc((size_t)2 * V * 4), *tmp = malloc((size_t)2 * V * 4);
    model_kv ka, kb;
    model_kv *kv[2] = {&ka, &kb};
    const int32_t *feed[2];
    int n[2];

    fixture_kv_init(m, &ka, 16);
    feed[0] = a_ids, n[0] = 6;
    fixture_generate_step(m, kv, feed, n, 1, full_a);
    free(ka.data);
    fixture_kv_init(m, &kb, 16);
    feed[0] = b_ids, n[0] = 3;
    fixture_generate_step(m, &kv[1], feed, n, 1, full_b);
    free(kb.data);

    /* a in three pieces (4, then 1, then 1) beside b in two (2, then 1). */
    fixture_kv_init(m, &ka, 16);
    fixture_kv_init(m, &kb, 16);
    feed[0] = a_ids, n[0] = 4, feed[1] = b_ids, n[1] = 2;
    fixture_generate_step(m, kv, feed, n, 2, tmp);
    feed[0] = a_ids + 4, n[0] = 1, feed[1] = b_ids + 2, n[1] = 1;
    fixture_generate_step(m, kv, feed, n, 2, pair);
    feed[0] = a_ids + 5;
    fixture_generate_step(m, kv, feed, n, 1, tmp);
    double worst_a = 0, worst_b = 0;
    for (int k = 0; k < V; k++) {
        worst_a = fmax(worst_a, fabs(tmp[k] - full_a[k]));
        worst_b = fmax(worst_b, fabs(pair[V + k] - full_b[k]));
    }
    CHECK_MSG(worst_a <= 1e-5, "incremental a differs by %g", worst_a);
    CHECK_MSG(worst_b <= 1e-5, "batched b differs by %g", worst_b);
    free(ka.data), free(kb.data);
    free(full_a), free(full_b), free(pair), free(tmp);
}

/* Five tokens into a cache of four: an error, not a write past the cache. */
MODEL_TEST(gpt2_rejects_context_overflow, FIXTURE_GPT2, NULL)
{
    model_kv cache, *kv = &cache;
    fixture_kv_init(m, &cache, 4);
    const int32_t ids[] = {1, 2, 3, 4, 5};
    int off[2] = {0, 5};
    eng_arena a;
    eng_arena_init(&a);
    eng_arena_reserve(&a, m->ops->scratch_size(m, 5, 5));
    model_batch b = {.ids = ids, .seq_off = off, .n_seq = 1};
    float *logits = malloc((size_t)m->vocab_size * 4);
    eng_err err = {0};
    CHECK_EQ_INT(m->ops->generate_step(m, &b, &kv, &a, logits, &err), ENG_ETOOLONG);
    free(logits);
    eng_arena_free(&a);
    free(cache.data);
}
