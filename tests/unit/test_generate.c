/* Generation end to end without HTTP: requests parsed as the daemon parses
 * them, run by the continuous-batching scheduler, answered as it answers. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "models/model.h"
#include "server/generate.h"
#include "tests/unit/fixtures.h"
#include "tests/unit/test.h"

static const srv_limits limits = {.max_client_batch = 32, .max_new_tokens = 1024,
                                  .max_batch_total_tokens = 1 << 20};

static srv_gen_job *parse(const model *m, srv_gen_form form, const char *body, bool stream)
{
    srv_gen_job *job = calloc(1, sizeof *job);
    srv_request in = {.body = body, .body_len = strlen(body), .limits = &limits};
    srv_reply err;
    srv_reply_init(&err);
    job->stream = stream;
    int rc = srv_gen_parse(m, form, &in, job, &err);
    CHECK_MSG(rc == 0, "parse %s: %s", body, err.body.data ? err.body.data : "");
    srv_reply_free(&err);
    if (rc) {
        srv_gen_job_free(job);
        free(job);
        return NULL;
    }
    return job;
}

static bool never(void *owner)
{
    (void)owner;
    return false;
}

static void count_news(void *ud, void *owner)
{
    (void)owner;
    ++*(int *)ud;
}

static srv_gen_sched *sched_new(const model *m, int batch)
{
    srv_gen_sched_cfg cfg = {.max_batch_size = batch, .max_batch_tokens = 4096,
                             .max_batch_total_tokens = 1 << 20};
    srv_gen_sched *s = NULL;
    eng_err err = {0};
    CHECK_MSG(srv_gen_sched_new(m, &cfg, &s, &err) == 0, "sched: %s", err.msg);
    return s;
}

/* Runs jobs to the end, admitting job i at step start_step[i]. */
static void run_all(const model *m, srv_gen_job **jobs, const int *start_step, int n)
{
    srv_gen_sched *s = sched_new(m, 64);
    int news = 0, admitted = 0;
    for (int step = 0; step < 500; step++) {
        for (int i = 0; i < n; i++)
            if (start_step[i] == step && srv_gen_sched_admit(s, jobs[i], jobs[i]))
                admitted++;
        if (!srv_gen_sched_running(s) && admitted == n)
            break;
        eng_err err = {0};
        CHECK(srv_gen_sched_step(s, never, count_news, &news, &err) == 0);
    }
    CHECK_EQ_INT(srv_gen_sched_running(s), 0);
    CHECK_EQ_INT(srv_gen_sched_kv_used(s), 0);
    srv_gen_sched_free(s);
}

static void free_job(srv_gen_job *job)
{
    srv_gen_job_free(job);
    free(job);
}

static void check_ids(const srv_gen_seq *q, json_t *want)
{
    CHECK_EQ_INT(q->n_tokens, json_array_size(want));
    for (int k = 0; k < q->n_tokens && k < (int)json_array_size(want); k++)
        CHECK_EQ_INT(q->tokens[k], json_integer_value(json_array_get(want, (size_t)k)));
}

/* Parses the request {"inputs": prompt, "parameters": params} in form, not
 * streamed; NULL (and a test failure) when it does not parse. */
static srv_gen_job *parse_prompt(const model *m, srv_gen_form form, const char *prompt,
                                 const char *params)
{
    json_t *req = json_pack("{s:s, s:o}", "inputs", prompt, "parameters",
                            json_loads(params, 0, NULL));
    char *body = json_dumps(req, 0);
    json_decref(req);
    srv_gen_job *job = parse(m, form, body, false);
    free(body);
    return job;
}

/* parse_prompt, then the job run alone to the end. The caller frees it with
 * free_job. */
static srv_gen_job *generate_alone(const model *m, srv_gen_form form, const char *prompt,
                                   const char *params)
{
    srv_gen_job *job = parse_prompt(m, form, prompt, params);
    if (job)
        run_all(m, &job, (int[]){0}, 1);
    return job;
}

MODEL_TEST(generate_golden_greedy_and_pipeline_text, FIXTURE_GPT2, FIXTURE_GPT2_GOLDEN)
{
    json_t *c;
    size_t i;
    json_array_foreach(json_object_get(g, "greedy"), i, c) {
        const char *prompt = json_string_value(json_object_get(c, "prompt"));
        srv_gen_job *job = generate_alone(m, SRV_GEN_PIPELINE, prompt,
                                          "{\"do_sample\": false, \"max_new_tokens\": 20}");
        if (!job)
            continue;
        check_ids(&job->seqs[0], json_object_get(c, "generated_ids"));
        srv_reply out;
        srv_reply_init(&out);
        srv_gen_format(m, job, &out);
        json_t *got = json_loads(out.body.data, 0, NULL);
        CHECK_STR(json_string_value(json_object_get(json_array_get(got, 0), "generated_text")),
                  json_string_value(json_object_get(c, "full_text_hf_clean_up")));
        json_decref(got);
        srv_reply_free(&out);
        free_job(job);
    }
}

MODEL_TEST(generate_golden_beam_search, FIXTURE_GPT2, FIXTURE_GPT2_GOLDEN)
{
    json_t *c;
    size_t i;
    json_array_foreach(json_object_get(g, "beam"), i, c) {
        char params[160];
        snprintf(params, sizeof params, "{\"num_beams\": %d, \"length_penalty\": 1.0, "
                 "\"early_stopping\": false, \"max_new_tokens\": 20}",
                 (int)json_integer_value(json_object_get(c, "num_beams")));
        const char *prompt = json_string_value(json_object_get(c, "prompt"));
        srv_gen_job *job = generate_alone(m, SRV_GEN_TGI, prompt, params);
        if (!job)
            continue;
        check_ids(&job->seqs[0], json_object_get(c, "generated_ids"));
        free_job(job);
    }
}

/* Sixteen greedy generations of different lengths, joining at different
 * steps, each equal to its run alone. */
MODEL_TEST(generate_continuous_batching_equals_solo, FIXTURE_GPT2, NULL)
{
    const char *prompts[] = {"Hello, my dog is cute", "The", "Once upon a time", "Numbers 1 2 3"};
    srv_gen_job *batch[16], *solo;
    int start[16];
    for (int i = 0; i < 16; i++) {
        char params[96];
        snprintf(params, sizeof params, "{\"max_new_tokens\": %d}", 3 + (i * 5) % 17);
        batch[i] = parse_prompt(m, SRV_GEN_TGI, prompts[i % 4], params);
        start[i] = i % 5;
    }
    run_all(m, batch, start, 16);
    for (int i = 0; i < 16; i++) {
        char params[96];
        snprintf(params, sizeof params, "{\"max_new_tokens\": %d}", 3 + (i * 5) % 17);
        solo = generate_alone(m, SRV_GEN_TGI, prompts[i % 4], params);
        CHECK_EQ_INT(batch[i]->seqs[0].n_tokens, solo->seqs[0].n_tokens);
        for (int k = 0; k < solo->seqs[0].n_tokens; k++)
            CHECK_EQ_INT(batch[i]->seqs[0].tokens[k], solo->seqs[0].tokens[k]);
        free_job(solo);
        free_job(batch[i]);
    }
}

static void sample(const model *m, const char *params, int32_t *out, int *n)
{
    srv_gen_job *job = generate_alone(m, SRV_GEN_TGI, "Once upon a time", params);
    if (!job)
        return;
    *n = job->seqs[0].n_tokens;
    memcpy(out, job->seqs[0].tokens, (size_t)*n * sizeof *out);
    free_job(job);
}

MODEL_TEST(generate_sampling_seeded_and_temperature_limit, FIXTURE_GPT2, NULL)
{
    int32_t a[32], b[32], c[32], greedy[32], cold[32];
    int na = 0, nb = 0, nc = 0, ng = 0, ncold = 0;
    sample(m, "{\"do_sample\": true, \"seed\": 7, \"max_new_tokens\": 24}", a, &na);
    sample(m, "{\"do_sample\": true, \"seed\": 7, \"max_new_tokens\": 24}", b, &nb);
    sample(m, "{\"do_sample\": true, \"seed\": 8, \"max_new_tokens\": 24}", c, &nc);
    CHECK_EQ_INT(na, 24);
    CHECK(na == nb && memcmp(a, b, (size_t)na * sizeof *a) == 0);
    CHECK(na != nc || memcmp(a, c, (size_t)na * sizeof *a) != 0);
    sample(m, "{\"max_new_tokens\": 24}", greedy, &ng);
    sample(m, "{\"do_sample\": true, \"temperature\": 0.0001, \"seed\": 3, \"max_new_tokens\": 24}",
           cold, &ncold);
    CHECK(ng == ncold && memcmp(greedy, cold, (size_t)ng * sizeof *greedy) == 0);
}

/* Concatenated stream events equal the whole answer; stop text never shows. */
MODEL_TEST(generate_stream_equals_whole_answer, FIXTURE_GPT2, NULL)
{
    const char *body = "{\"inputs\": \"Unicode: café 日本語 🙂\", \"parameters\": "
                       "{\"max_new_tokens\": 20, \"stop\": [\"783\"]}}";
    srv_gen_job *job = parse(m, SRV_GEN_TGI, body, true);
    if (!job)
        return;
    srv_gen_sched *s = sched_new(m, 8);
    CHECK(srv_gen_sched_admit(s, job, job));
    srv_buf events, text;
    srv_buf_init(&events);
    srv_buf_init(&text);
    int news = 0;
    bool complete = false;
    for (int step = 0; step < 100 && !complete; step++) {
        eng_err err = {0};
        if (srv_gen_sched_running(s))
            srv_gen_sched_step(s, never, count_news, &news, &err);
        complete = srv_gen_stream_events(m, job, &events);
    }
    CHECK(complete);
    /* Sum the token texts of the events; the last event carries generated_text. */
    const char *final_text = NULL;
    json_t *last = NULL;
    for (char *line = strtok(events.data, "\n"); line; line = strtok(NULL, "\n")) {
        json_t *ev = json_loads(line + 5, 0, NULL);
        CHECK(ev != NULL);
        json_t *tok = json_object_get(ev, "token");
        if (!json_is_true(json_object_get(tok, "special")))
            srv_buf_puts(&text, json_string_value(json_object_get(tok, "text")));
        if (json_is_string(json_object_get(ev, "generated_text"))) {
            json_decref(last);
            last = json_incref(ev);
            final_text = json_string_value(json_object_get(ev, "generated_text"));
        }
        json_decref(ev);
    }
    CHECK_STR(text.data ? text.data : "", final_text);
    CHECK(final_text && !strstr(final_text, "783"));
    CHECK_STR(json_string_value(json_object_get(json_object_get(last, "details"), "finish_reason")),
              "stop_sequence");
    json_decref(last);
    srv_buf_free(&events);
    srv_buf_free(&text);
    srv_gen_sched_free(s);
    free_job(job);
}

MODEL_TEST(generate_rejects_bad_parameters, FIXTURE_GPT2, NULL)
{
    static const struct {
        const char *body, *field;
    } cases[] = {
        {"{\"inputs\": \"x\", \"parameters\": {\"top_p\": 1.5, \"do_sample\": true}}", "top_p"},
        {"{\"inputs\": \"x\", \"parameters\": {\"temperature\": -1, \"do_sample\": true}}", "temperature"},
        {"{\"inputs\": \"x\", \"parameters\": {\"max_new_tokens\": 5000}}", "max_new_tokens"},
        {"{\"inputs\": \"x\", \"parameters\": {\"num_beams\": 2, \"do_sample\": true}}", "num_beams"},
        {"{\"inputs\": \"x\", \"parameters\": {\"top_k\": \"ten\"}}", "top_k"},
        {"{\"inputs\": 5}", "inputs"},
        {"{\"parameters\": {}}", "inputs"},
        {"{\"inputs\": \"x\", \"parameters\": {\"repetition_penalty\": 0}}", "repetition_penalty"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        srv_gen_job job = {0};
        srv_request in = {.body = cases[i].body, .body_len = strlen(cases[i].body), .limits = &limits};
        srv_reply err;
        srv_reply_init(&err);
        CHECK_MSG(srv_gen_parse(m, SRV_GEN_TGI, &in, &job, &err) == -1, "accepted %s", cases[i].body);
        CHECK_EQ_INT(err.status, 422);
        CHECK_MSG(err.body.data && strstr(err.body.data, cases[i].field), "%s: %s", cases[i].body,
                  err.body.data ? err.body.data : "");
        srv_reply_free(&err);
        srv_gen_job_free(&job);
    }
}
