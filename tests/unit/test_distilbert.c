/* DistilBERT against the golden outputs of an independent implementation,
 * and batching that changes nothing. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "models/model.h"
#include "server/classify.h"
#include "tests/unit/test.h"

#define TINY "tests/fixtures/distilbert-sst2-tiny"
#define GOLDEN "tests/fixtures/golden/distilbert.json"

static model *load_tiny(void)
{
    model *m = NULL;
    eng_err err = {0};
    int rc = model_load(TINY, NULL, &m, &err);
    CHECK_MSG(rc == 0, "load: %s", err.msg);
    return rc ? NULL : m;
}

/* Runs the given sequences as one batch; logits (n, n_labels). */
static void run_batch(const model *m, const tok_encoding *enc, int n, float *logits)
{
    int off[n + 1];
    off[0] = 0;
    for (int i = 0; i < n; i++)
        off[i + 1] = off[i] + (int)enc[i].n;
    int32_t *ids = malloc((size_t)off[n] * sizeof *ids);
    int max_len = 0;
    for (int i = 0; i < n; i++) {
        memcpy(ids + off[i], enc[i].ids, enc[i].n * sizeof *ids);
        max_len = (int)enc[i].n > max_len ? (int)enc[i].n : max_len;
    }
    eng_arena a;
    eng_arena_init(&a);
    CHECK(eng_arena_reserve(&a, m->ops->scratch_size(m, off[n], max_len)) == 0);
    model_batch b = {.ids = ids, .seq_off = off, .n_seq = n};
    eng_err err = {0};
    CHECK_MSG(m->ops->classify(m, &b, &a, logits, &err) == 0, "classify: %s", err.msg);
    eng_arena_free(&a);
    free(ids);
}

static void encode_case(const model *m, json_t *c, tok_encoding *enc)
{
    const char *text = json_string_value(json_object_get(c, "text"));
    tok_encode_opts opts = {.add_special = true, .max_len = 512};
    eng_err err = {0};
    tok_encoding_init(enc);
    CHECK(tok_encode(m->tok, text, strlen(text), &opts, enc, &err) == 0);
}

TEST(distilbert_golden_logits)
{
    model *m = load_tiny();
    json_t *g = json_load_file(GOLDEN, 0, NULL);
    CHECK(m && g);
    if (!m || !g)
        return;
    json_t *cases = json_object_get(g, "cases"), *c;
    size_t i;
    json_array_foreach(cases, i, c) {
        tok_encoding enc;
        encode_case(m, c, &enc);
        json_t *ids = json_object_get(c, "input_ids");
        CHECK_EQ_INT(enc.n, json_array_size(ids));
        for (size_t k = 0; k < enc.n && k < json_array_size(ids); k++)
            CHECK_EQ_INT(enc.ids[k], json_integer_value(json_array_get(ids, k)));
        float logits[2];
        run_batch(m, &enc, 1, logits);
        json_t *want = json_object_get(c, "logits");
        for (int k = 0; k < 2; k++)
            CHECK_NEAR(logits[k], json_real_value(json_array_get(want, (size_t)k)), 1e-4);
        tok_encoding_free(&enc);
    }
    json_decref(g);
    model_free(m);
}

TEST(distilbert_batched_equals_alone)
{
    model *m = load_tiny();
    json_t *g = json_load_file(GOLDEN, 0, NULL);
    if (!m || !g)
        return;
    json_t *cases = json_object_get(g, "cases");
    int n = (int)json_array_size(cases);
    tok_encoding enc[n];
    for (int i = 0; i < n; i++)
        encode_case(m, json_array_get(cases, (size_t)i), &enc[i]);
    float batched[2 * n], alone[2];
    run_batch(m, enc, n, batched);
    for (int i = 0; i < n; i++) {
        run_batch(m, &enc[i], 1, alone);
        CHECK_NEAR(batched[2 * i], alone[0], 1e-5);
        CHECK_NEAR(batched[2 * i + 1], alone[1], 1e-5);
        tok_encoding_free(&enc[i]);
    }
    json_decref(g);
    model_free(m);
}

/* The answer a request gets, as bytes: the same path the daemon and CLI use. */
static char *answer(const model *m, const char *query_text, const char *body, int *status)
{
    srv_limits lim = {.max_client_batch = 32};
    srv_request in = {.query_text = query_text, .query_text_len = query_text ? strlen(query_text) : 0,
                      .body = body, .body_len = body ? strlen(body) : 0, .limits = &lim};
    srv_reply out;
    srv_reply_init(&out);
    srv_classify_req req;
    if (!srv_classify_parse(m, &in, &req, &out)) {
        eng_arena a;
        eng_arena_init(&a);
        eng_err err = {0};
        CHECK(srv_classify_run(m, &req, &a, &err) == 0);
        srv_classify_format(m, &req, &out);
        eng_arena_free(&a);
        srv_classify_req_free(&req);
    }
    *status = out.status;
    return srv_buf_take(&out.body, NULL);
}

TEST(distilbert_pipeline_answers)
{
    model *m = load_tiny();
    json_t *g = json_load_file(GOLDEN, 0, NULL);
    if (!m || !g)
        return;
    json_t *cases = json_object_get(g, "cases"), *c;
    size_t i;
    json_array_foreach(cases, i, c) {
        if (json_object_get(c, "pipeline_default"))
            continue; /* the over-long case: see distilbert_long_input */
        int status;
        char *body = answer(m, json_string_value(json_object_get(c, "text")), NULL, &status);
        CHECK_EQ_INT(status, 200);
        json_t *got = json_loads(body, 0, NULL);
        json_t *want = json_array_get(json_object_get(c, "pipeline_output"), 0);
        json_t *top = json_array_get(got, 0);
        CHECK_EQ_INT(json_array_size(got), 1);
        CHECK_STR(json_string_value(json_object_get(top, "label")),
                  json_string_value(json_object_get(want, "label")));
        CHECK_NEAR(json_real_value(json_object_get(top, "score")),
                   json_real_value(json_object_get(want, "score")), 1e-4);
        json_decref(got);
        free(body);
    }
    json_decref(g);
    model_free(m);
}

TEST(distilbert_tei_form_and_errors)
{
    model *m = load_tiny();
    if (!m)
        return;
    int status;
    char *body = answer(m, NULL, "{\"inputs\": [\"good\", \"bad\"], \"raw_scores\": true}", &status);
    CHECK_EQ_INT(status, 200);
    json_t *got = json_loads(body, 0, NULL);
    CHECK_EQ_INT(json_array_size(got), 2);
    CHECK_EQ_INT(json_array_size(json_array_get(got, 0)), 2);
    json_t *first = json_array_get(json_array_get(got, 0), 0);
    json_t *second = json_array_get(json_array_get(got, 0), 1);
    CHECK(json_real_value(json_object_get(first, "score")) >=
          json_real_value(json_object_get(second, "score")));
    CHECK(strncmp(body, "[[{\"score\":", 11) == 0);
    json_decref(got);
    free(body);

    body = answer(m, NULL, "", &status);
    CHECK_EQ_INT(status, 422);
    CHECK_STR(body, "{\"detail\":[{\"type\":\"missing\",\"loc\":[\"query\",\"text\"],"
                    "\"msg\":\"Field required\",\"input\":null}]}");
    free(body);
    body = answer(m, NULL, "{\"inputs\": 5}", &status);
    CHECK_EQ_INT(status, 422);
    CHECK(strstr(body, "\"loc\":[\"body\",\"inputs\"]") != NULL);
    free(body);
    body = answer(m, NULL, "{\"inputs\": ", &status);
    CHECK_EQ_INT(status, 422);
    CHECK(strstr(body, "\"type\":\"json_invalid\"") != NULL);
    free(body);
    body = answer(m, "bad \xff utf8", NULL, &status);
    CHECK_EQ_INT(status, 422);
    free(body);
    model_free(m);
}

TEST(distilbert_long_input)
{
    model *m = load_tiny();
    json_t *g = json_load_file(GOLDEN, 0, NULL);
    if (!m || !g)
        return;
    json_t *cases = json_object_get(g, "cases"), *c = NULL, *it;
    size_t i;
    json_array_foreach(cases, i, it)
        if (json_object_get(it, "pipeline_default"))
            c = it;
    CHECK(c != NULL);
    const char *text = json_string_value(json_object_get(c, "text"));
    int status;
    char *body = answer(m, text, NULL, &status);
    CHECK_EQ_INT(status, 422);
    CHECK_MSG(strstr(body, "Given: 788") && strstr(body, "512"), "got %s", body);
    free(body);

    json_t *req = json_pack("{s:s, s:b}", "inputs", text, "truncate", 1);
    char *req_body = json_dumps(req, 0);
    body = answer(m, NULL, req_body, &status);
    CHECK_EQ_INT(status, 200);
    json_t *got = json_loads(body, 0, NULL);
    json_t *want = json_object_get(c, "scores");
    /* TEI form: sorted by score; find each label's score. */
    for (size_t k = 0; k < 2; k++) {
        json_t *p = json_array_get(got, k);
        const char *label = json_string_value(json_object_get(p, "label"));
        for (size_t j = 0; j < 2; j++) {
            json_t *w = json_array_get(want, j);
            if (strcmp(label, json_string_value(json_object_get(w, "label"))) == 0)
                CHECK_NEAR(json_real_value(json_object_get(p, "score")),
                           json_real_value(json_object_get(w, "score")), 1e-4);
        }
    }
    json_decref(got);
    free(body);
    free(req_body);
    json_decref(req);
    json_decref(g);
    model_free(m);
}
