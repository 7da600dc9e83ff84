/* DistilBERT against the golden outputs of an independent implementation,
 * and batching that changes nothing. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "models/model.h"
#include "server/classify.h"
#include "tests/unit/fixtures.h"
#include "tests/unit/test.h"

/* The text of a golden case. */
static const char *case_text(const json_t *c)
{
    return json_string_value(json_object_get(c, "text"));
}

MODEL_TEST(distilbert_golden_logits, FIXTURE_DISTILBERT, FIXTURE_DISTILBERT_GOLDEN)
{
    json_t *cases = json_object_get(g, "cases"), *c;
    size_t i;
    json_array_foreach(cases, i, c) {
        tok_encoding enc;
        fixture_encode_text(m, case_text(c), &enc);
        json_t *ids = json_object_get(c, "input_ids");
        CHECK_EQ_INT(enc.n, json_array_size(ids));
        for (size_t k = 0; k < enc.n && k < json_array_size(ids); k++)
            CHECK_EQ_INT(enc.ids[k], json_integer_value(json_array_get(ids, k)));
        float logits[2];
        fixture_classify(m, &enc, 1, logits);
        json_t *want = json_object_get(c, "logits");
        for (int k = 0; k < 2; k++)
            CHECK_NEAR(logits[k], json_real_value(json_array_get(want, (size_t)k)), 1e-4);
        tok_encoding_free(&enc);
    }
}

MODEL_TEST(distilbert_batched_equals_alone, FIXTURE_DISTILBERT, FIXTURE_DISTILBERT_GOLDEN)
{
    json_t *cases = json_object_get(g, "cases");
    int n = (int)json_array_size(cases);
    tok_encoding enc[n];
    for (int i = 0; i < n; i++)
        fixture_encode_text(m, case_text(json_array_get(cases, (size_t)i)), &enc[i]);
    float batched[2 * n], alone[2];
    fixture_classify(m, enc, n, batched);
    for (int i = 0; i < n; i++) {
        fixture_classify(m, &enc[i], 1, alone);
        CHECK_NEAR(batched[2 * i], alone[0], 1e-5);
        CHECK_NEAR(batched[2 * i + 1], alone[1], 1e-5);
        tok_encoding_free(&enc[i]);
    }
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

MODEL_TEST(distilbert_pipeline_answers, FIXTURE_DISTILBERT, FIXTURE_DISTILBERT_GOLDEN)
{
    json_t *cases = json_object_get(g, "cases"), *c;
    size_t i;
    json_array_foreach(cases, i, c) {
        if (json_object_get(c, "pipeline_default"))
            continue; /* the over-long case: see distilbert_long_input */
        int status;
        char *body = answer(m, case_text(c), NULL, &status);
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
}

MODEL_TEST(distilbert_tei_form_and_errors, FIXTURE_DISTILBERT, NULL)
{
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
}

MODEL_TEST(distilbert_long_input, FIXTURE_DISTILBERT, FIXTURE_DISTILBERT_GOLDEN)
{
    json_t *cases = json_object_get(g, "cases"), *c = NULL, *it;
    size_t i;
    json_array_foreach(cases, i, it)
        if (json_object_get(it, "pipeline_default"))
            c = it;
    CHECK(c != NULL);
    const char *text = case_text(c);
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
}
