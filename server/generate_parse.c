/* Parsing generation requests: the pipeline's, text-generation-inference's
 * and OpenAI's forms, each with its own defaults, into one srv_gen_job. */
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/generate.h"

#define MAX_STOP 8
#define MAX_STOP_BYTES 256

/* A field error in pydantic's shape; returns -1 for the caller to pass on. */
static int bad(srv_reply *err, const char *field, const char *type, const char *msg, json_t *input)
{
    char *dump = srv_json_dump(input);
    srv_reply_invalid(err, type, "body", field, msg, dump);
    free(dump);
    return -1;
}

/* Whether an optional field was given: present and not null. */
static bool given(const json_t *v)
{
    return v && !json_is_null(v);
}

/* Readers for optional fields: absent or null leaves *out unchanged. */
static int read_int(json_t *obj, const char *key, const char *field, long *out, srv_reply *err)
{
    json_t *v = json_object_get(obj, key);
    if (!given(v))
        return 0;
    if (!json_is_integer(v))
        return bad(err, field, "int_type", "Input should be a valid integer", v);
    *out = (long)json_integer_value(v);
    return 0;
}

static int read_num(json_t *obj, const char *key, const char *field, double *out, srv_reply *err)
{
    json_t *v = json_object_get(obj, key);
    if (!given(v))
        return 0;
    if (!json_is_number(v))
        return bad(err, field, "float_type", "Input should be a valid number", v);
    *out = json_number_value(v);
    return 0;
}

static int read_bool(json_t *obj, const char *key, const char *field, bool *out, srv_reply *err)
{
    json_t *v = json_object_get(obj, key);
    if (!given(v))
        return 0;
    if (!json_is_boolean(v))
        return bad(err, field, "bool_type", "Input should be a valid boolean", v);
    *out = json_is_true(v);
    return 0;
}

/* "stop": a string or a list of strings. */
static int read_stop(json_t *obj, const char *key, srv_gen_job *job, srv_reply *err)
{
    json_t *v = json_object_get(obj, key);
    if (!given(v))
        return 0;
    size_t n = json_is_string(v) ? 1 : json_is_array(v) ? json_array_size(v) : 0;
    if (!json_is_string(v) && !json_is_array(v))
        return bad(err, key, "list_type", "Input should be a string or a list of strings", v);
    if (n > MAX_STOP)
        return bad(err, key, "too_long", "At most 8 stop sequences are allowed", v);
    job->stop = calloc(n ? n : 1, sizeof *job->stop);
    if (!job->stop)
        return bad(err, key, "memory", "out of memory", NULL);
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_is_string(v) ? v : json_array_get(v, i);
        if (!json_is_string(s) || json_string_length(s) == 0 || json_string_length(s) > MAX_STOP_BYTES ||
            strlen(json_string_value(s)) != json_string_length(s))
            return bad(err, key, "string_type",
                       "Each stop sequence should be a non-empty string of at most 256 bytes", s);
        if (!(job->stop[job->n_stop++] = strdup(json_string_value(s))))
            return bad(err, key, "memory", "out of memory", NULL);
    }
    return 0;
}

static uint64_t random_seed(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    static _Atomic uint64_t counter;
    /* 63 bits: the seed is reported back in JSON, whose integers clients read as int64. */
    return (((uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull) ^ (uint64_t)ts.tv_sec ^ (counter++ << 32)) >> 1;
}

/* The decoding parameters every form shares, by their common names. */
/* Takes the seed read from obj's "seed" when one was given (else the
 * random one srv_gen_parse drew stays). */
static void set_seed(json_t *obj, long seed, gen_params *g, srv_gen_job *job)
{
    job->seed_given = given(json_object_get(obj, "seed"));
    if (job->seed_given)
        g->seed = (uint64_t)seed;
}

/* A request's "parameters": *p NULL when absent or null; anything but an
 * object is a 422. */
static int read_parameters(json_t *root, json_t **p, srv_reply *err)
{
    *p = json_object_get(root, "parameters");
    if (given(*p) && !json_is_object(*p))
        return bad(err, "parameters", "dict_type", "Input should be a valid dictionary", *p);
    if (!json_is_object(*p))
        *p = NULL;
    return 0;
}

static int read_decoding(json_t *p, gen_params *g, srv_gen_job *job, srv_reply *err)
{
    long max_new = g->max_new_tokens, top_k = g->top_k, beams = g->num_beams, seed = 0;
    int rc = read_int(p, "max_new_tokens", "max_new_tokens", &max_new, err) ||
             read_bool(p, "do_sample", "do_sample", &g->do_sample, err) ||
             read_num(p, "temperature", "temperature", &g->temperature, err) ||
             read_int(p, "top_k", "top_k", &top_k, err) ||
             read_num(p, "top_p", "top_p", &g->top_p, err) ||
             read_num(p, "repetition_penalty", "repetition_penalty", &g->repetition_penalty, err) ||
             read_int(p, "num_beams", "num_beams", &beams, err) ||
             read_num(p, "length_penalty", "length_penalty", &g->length_penalty, err) ||
             read_int(p, "seed", "seed", &seed, err) ||
             read_stop(p, "stop", job, err);
    if (rc)
        return -1;
    json_t *early = json_object_get(p, "early_stopping");
    if (json_is_boolean(early))
        g->early_stopping = json_is_true(early) ? GEN_EARLY_TRUE : GEN_EARLY_FALSE;
    else if (json_is_string(early) && strcmp(json_string_value(early), "never") == 0)
        g->early_stopping = GEN_EARLY_NEVER;
    else if (given(early))
        return bad(err, "early_stopping", "bool_type", "Input should be true, false or \"never\"", early);
    /* Bounds that keep the ints meaningful; gen_params_check judges the rest.
     * A max_new_tokens given must be positive, as in TGI (-1 is only our
     * internal "not given"). */
    json_t *max_given = json_object_get(p, "max_new_tokens");
    if (given(max_given) && max_new < 1)
        return bad(err, "max_new_tokens", "greater_than", "Input should be greater than 0", max_given);
    if (max_new > 1000000)
        return bad(err, "max_new_tokens", "value_error", "Value out of range", NULL);
    if (top_k < 0 || top_k > 1000000000)
        return bad(err, "top_k", "value_error", "Value out of range", NULL);
    if (beams < 1 || beams > 64)
        return bad(err, "num_beams", "value_error", "Value out of range", NULL);
    if (seed < 0) /* TGI's seed is unsigned, and reported back as given */
        return bad(err, "seed", "greater_than_equal", "Input should be greater than or equal to 0",
                   json_object_get(p, "seed"));
    g->max_new_tokens = (int)max_new;
    g->top_k = (int)top_k;
    g->num_beams = (int)beams;
    set_seed(p, seed, g, job);
    return 0;
}

/* Each form's defaults before the request's own parameters. */
static void form_defaults(const model *m, srv_gen_form form, gen_params *g, srv_gen_job *job)
{
    gen_params_default(g);
    g->eos_id = m->eos_id;
    g->max_new_tokens = -1; /* "not given": each form derives its own below */
    if (form == SRV_GEN_PIPELINE) {
        const model_gen_defaults *d = &m->gen;
        g->do_sample = d->pipeline_do_sample >= 0 ? d->pipeline_do_sample : d->do_sample;
        g->temperature = d->temperature;
        g->top_k = d->top_k;
        g->top_p = d->top_p;
        g->repetition_penalty = d->repetition_penalty;
        g->num_beams = d->num_beams;
        job->return_full_text = true;
        job->clean_up = m->clean_up_spaces;
    } else if (form == SRV_GEN_TGI) {
        g->top_k = 0; /* text-generation-inference applies no top-k unless asked */
    } else {
        g->top_k = 0;
        g->do_sample = true; /* OpenAI's temperature defaults to 1 */
    }
}

/* The request's own names for the prompt and the new-token count, for the
 * 422s that name them. */
static const char *prompt_field(srv_gen_form form)
{
    return form == SRV_GEN_OPENAI ? "prompt" : "inputs";
}

static const char *max_new_field(srv_gen_form form)
{
    return form == SRV_GEN_OPENAI ? "max_tokens" : "max_new_tokens";
}

/* max_new_tokens when the request gave none: the pipeline's max_length
 * (prompt included), TGI's 100, OpenAI's 16, within the context. */
static int derived_max_new(const model *m, srv_gen_form form, int n_prompt)
{
    int room = m->max_positions - n_prompt;
    int want = 100;
    if (form == SRV_GEN_PIPELINE) {
        int max_length = m->gen.pipeline_max_length ? m->gen.pipeline_max_length : m->gen.max_length;
        want = m->gen.max_new_tokens ? m->gen.max_new_tokens : max_length - n_prompt;
    } else if (form == SRV_GEN_OPENAI) {
        want = 16;
    }
    want = want < 1 ? 1 : want;
    return want < room ? want : room;
}

/* Until the job is accepted its prompts point into the request (its JSON or
 * query string): one refused for its length is never copied (a 15 MB prompt
 * cost the loop thread up to 160 ms of page faults). */
static void add_prompt(srv_gen_job *job, const char *text, size_t len)
{
    size_t i = job->n++;
    job->prompt_text[i] = (char *)text;
    job->prompt_text_len[i] = len;
}

/* The accepted job's own copies of its prompts; on failure (503) it holds
 * only what it copied, the rest NULL, as on any refusal (forget_prompts). */
static int own_prompts(srv_gen_job *job, srv_reply *err)
{
    for (size_t i = 0; i < job->n; i++) {
        char *copy = srv_bytes_dup(job->prompt_text[i], job->prompt_text_len[i]);
        if (!copy) {
            for (size_t k = i; k < job->n; k++)
                job->prompt_text[k] = NULL;
            srv_reply_detail(err, 503, "out of memory");
            return -1;
        }
        job->prompt_text[i] = copy;
    }
    return 0;
}

static void forget_prompts(srv_gen_job *job)
{
    for (size_t i = 0; job->prompt_text && i < job->n; i++)
        job->prompt_text[i] = NULL;
}

static int alloc_prompts(srv_gen_job *job, size_t n, srv_reply *err)
{
    job->prompt_text = calloc(n, sizeof *job->prompt_text);
    job->prompt_text_len = calloc(n, sizeof *job->prompt_text_len);
    job->seqs = calloc(n, sizeof *job->seqs);
    if (!job->prompt_text || !job->prompt_text_len || !job->seqs) {
        srv_reply_detail(err, 503, "out of memory");
        return -1;
    }
    return 0;
}

static int read_prompt_field(json_t *v, const char *field, const srv_request *in, srv_gen_job *job,
                             srv_reply *err)
{
    size_t n = json_is_array(v) ? json_array_size(v) : 1;
    size_t limit = in->limits ? in->limits->max_client_batch : 32;
    if (!given(v))
        return bad(err, field, "missing", "Field required", NULL);
    if (!json_is_string(v) && (!json_is_array(v) || n == 0 || n > limit))
        return bad(err, field, "string_type", "Input should be a valid string (or a list of them)", v);
    if (alloc_prompts(job, n, err))
        return -1;
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_is_array(v) ? json_array_get(v, i) : v;
        if (!json_is_string(t))
            return bad(err, field, "string_type", "Input should be a valid string", t);
        add_prompt(job, json_string_value(t), json_string_length(t));
    }
    return 0;
}

/* POST /predict: ?text=, {"text"} or {"inputs", "parameters"}. */
static int parse_pipeline(const srv_request *in, json_t *root, gen_params *g, srv_gen_job *job,
                          srv_reply *err)
{
    if (in->query_text) {
        if (alloc_prompts(job, 1, err))
            return -1;
        add_prompt(job, in->query_text, in->query_text_len);
        return 0;
    }
    json_t *text = json_object_get(root, "text");
    if (read_prompt_field(text ? text : json_object_get(root, "inputs"), text ? "text" : "inputs",
                          in, job, err))
        return -1;
    json_t *p;
    if (read_parameters(root, &p, err))
        return -1;
    if (!p)
        return 0;
    return read_decoding(p, g, job, err) ||
           read_bool(p, "return_full_text", "return_full_text", &job->return_full_text, err);
}

/* POST /generate and /generate_stream: {"inputs", "parameters"}. */
static int parse_tgi(const srv_request *in, json_t *root, gen_params *g, srv_gen_job *job,
                     srv_reply *err)
{
    json_t *inputs = json_object_get(root, "inputs");
    if (json_is_array(inputs))
        return bad(err, "inputs", "string_type", "Input should be a valid string", inputs);
    if (read_prompt_field(inputs, "inputs", in, job, err))
        return -1;
    if (job->prompt_text_len[0] == 0) { /* TGI has no unconditional generation */
        srv_reply_detail(err, 422, "Input validation error: `inputs` cannot be empty");
        return -1;
    }
    json_t *p;
    if (read_parameters(root, &p, err))
        return -1;
    if (!p)
        return 0;
    if (read_decoding(p, g, job, err) ||
        read_bool(p, "return_full_text", "return_full_text", &job->return_full_text, err) ||
        read_bool(p, "details", "details", &job->details, err))
        return -1;
    /* TGI samples whenever a warper is set, do_sample or not. */
    if (g->temperature != 1.0 || g->top_k != 0 || g->top_p < 1.0)
        g->do_sample = true;
    return 0;
}

/* POST /v1/completions. */
static int parse_openai(const srv_request *in, json_t *root, gen_params *g, srv_gen_job *job,
                        srv_reply *err)
{
    long max_tokens = -1, n = 1, seed = 0;
    double temperature = 1.0;
    if (read_prompt_field(json_object_get(root, "prompt"), "prompt", in, job, err) ||
        read_int(root, "max_tokens", "max_tokens", &max_tokens, err) ||
        read_num(root, "temperature", "temperature", &temperature, err) ||
        read_num(root, "top_p", "top_p", &g->top_p, err) ||
        read_stop(root, "stop", job, err) || read_int(root, "n", "n", &n, err) ||
        read_bool(root, "stream", "stream", &job->stream, err) ||
        read_bool(root, "echo", "echo", &job->return_full_text, err) ||
        read_int(root, "seed", "seed", &seed, err))
        return -1;
    set_seed(root, seed, g, job); /* OpenAI's may be negative: it is never reported back */
    if (n != 1)
        return bad(err, "n", "value_error", "Only n = 1 is supported", json_object_get(root, "n"));
    if (temperature < 0 || temperature > 100)
        return bad(err, "temperature", "value_error", "temperature must be in [0, 100]",
                   json_object_get(root, "temperature"));
    if ((given(json_object_get(root, "max_tokens")) && max_tokens < 1) || max_tokens > 1000000)
        return bad(err, "max_tokens", "value_error", "max_tokens must be a positive integer",
                   json_object_get(root, "max_tokens"));
    g->do_sample = temperature > 0; /* OpenAI: temperature 0 means greedy */
    g->temperature = temperature > 0 ? temperature : 1.0;
    g->max_new_tokens = (int)max_tokens;
    json_t *model_field = json_object_get(root, "model");
    snprintf(job->model_name, sizeof job->model_name, "%s",
             json_is_string(model_field) ? json_string_value(model_field) : "");
    return 0;
}

/* Tokenizes prompt i into seq i and settles its length limits. An empty
 * prompt starts from the end-of-text token, as unconditional generation. */
static int setup_seq(const model *m, const srv_request *in, srv_gen_job *job, size_t i,
                     const gen_params *g, bool explicit_max, srv_reply *err)
{
    srv_gen_seq *q = &job->seqs[i];
    tok_encoding enc;
    tok_encoding_init(&enc);
    int max_input = srv_limits_input_tokens(in->limits, m->max_positions);
    size_t count_max = srv_count_max((size_t)max_input);
    tok_encode_opts opts = {.add_special = false, .count_max = count_max};
    eng_err e = {0};
    if (tok_encode(m->tok, job->prompt_text[i], job->prompt_text_len[i], &opts, &enc, &e)) {
        tok_encoding_free(&enc);
        srv_reply_eng_error(err, &e);
        return -1;
    }
    if (enc.n == 0 && m->eos_id >= 0)
        tok_encoding_push(&enc, m->eos_id, 0, 0, true);
    q->params = *g;
    /* Each prompt of a list draws its own samples, as one generator over
     * the batch would give (splitmix64 makes neighbouring seeds unrelated);
     * a single prompt keeps the seed the client gave. */
    q->params.seed = g->seed + i;
    q->n_prompt = (int)enc.n;
    q->prompt = enc.ids; /* taken over; the rest of the encoding is freed */
    enc.ids = NULL;
    tok_encoding_free(&enc);
    int limit_new = in->limits && in->limits->max_new_tokens ? in->limits->max_new_tokens : 1024;
    if (!explicit_max) {
        /* A default the client never set stays within the server's limits:
         * the new-token limit, and this prompt's share of the KV budget
         * (the job's prompts split it evenly, each for all its beams). */
        int want = derived_max_new(m, job->form, q->n_prompt);
        long budget = in->limits ? in->limits->max_batch_total_tokens : 0;
        long share = (long)gen_beam_count(&q->params) * (long)job->n;
        long kv_room = budget ? budget / share - q->n_prompt : LONG_MAX;
        want = want < limit_new ? want : limit_new;
        want = want < kv_room ? want : (int)(kv_room > 1 ? kv_room : 1);
        q->params.max_new_tokens = want;
    }
    const char *prompt = prompt_field(job->form), *max_new = max_new_field(job->form);
    if (q->params.max_new_tokens > limit_new) {
        srv_reply_detail(err, 422, "Input validation error: `%s` must be <= %d. Given: %d",
                         max_new, limit_new, q->params.max_new_tokens);
        return -1;
    }
    if (q->n_prompt > max_input)
        return srv_reply_too_long(err, prompt, max_input, (size_t)q->n_prompt, count_max, false);
    int limit_prompt = in->limits && in->limits->max_batch_tokens ? in->limits->max_batch_tokens : INT_MAX;
    if (q->n_prompt > limit_prompt) { /* a prompt is prefilled in one step */
        srv_reply_detail(err, 422, "Input validation error: `%s` must have at most %d tokens "
                         "(the server's --max-batch-tokens). Given: %d", prompt, limit_prompt,
                         q->n_prompt);
        return -1;
    }
    if (q->n_prompt + q->params.max_new_tokens > m->max_positions) {
        srv_reply_detail(err, 422, "Input validation error: `%s` tokens + `%s` must be <= %d. "
                         "Given: %d `%s` tokens and %d `%s`", prompt, max_new, m->max_positions,
                         q->n_prompt, prompt, q->params.max_new_tokens, max_new);
        return -1;
    }
    return 0;
}

static int check_combination(const srv_request *in, const srv_gen_job *job, const gen_params *g,
                             srv_reply *err)
{
    eng_err e = {0};
    gen_params probe = *g;
    if (probe.max_new_tokens < 0)
        probe.max_new_tokens = 1;
    if (gen_params_check(&probe, &e)) {
        srv_reply_detail(err, 422, "Input validation error: %s", e.msg);
        return -1;
    }
    if (job->stream && (g->num_beams > 1 || job->n != 1)) {
        srv_reply_detail(err, 422, "Input validation error: streaming takes one prompt and no beam search");
        return -1;
    }
    size_t seqs = srv_gen_job_seqs(job);
    size_t step = in->limits && in->limits->max_batch_seqs ? (size_t)in->limits->max_batch_seqs : SIZE_MAX;
    if (seqs > step) { /* it could never be admitted, and would block the queue */
        srv_reply_detail(err, 422, "Input validation error: the request needs %zu sequences "
                         "(inputs times num_beams), more than the server's --max-batch-size %zu",
                         seqs, step);
        return -1;
    }
    size_t budget = in->limits ? (size_t)in->limits->max_batch_total_tokens : 0;
    if (budget && srv_gen_job_kv_tokens(job) > budget) {
        srv_reply_detail(err, 422, "Input validation error: the request needs %zu KV-cache tokens "
                         "(prompt + max_new_tokens, per beam), more than the server's "
                         "--max-batch-total-tokens %zu", srv_gen_job_kv_tokens(job), budget);
        return -1;
    }
    return 0;
}

int srv_gen_parse(const model *m, srv_gen_form form, const srv_request *in, srv_gen_job *job,
                  srv_reply *err)
{
    bool stream = job->stream;
    memset(job, 0, sizeof *job);
    pthread_mutex_init(&job->lock, NULL);
    job->form = form;
    job->stream = stream;
    job->created = (long)time(NULL);
    job->id = random_seed();
    gen_params g;
    form_defaults(m, form, &g, job);
    /* Sampling draws from a fresh seed unless the request names one; this
     * holds for a request without "parameters" too, which once always
     * sampled from seed 0 (the same "random" text every time). */
    g.seed = random_seed();
    json_t *root = NULL;
    int rc = 0;
    if (!(form == SRV_GEN_PIPELINE && in->query_text)) {
        bool blank = true;
        for (size_t i = 0; i < in->body_len && blank; i++)
            blank = in->body[i] && strchr(" \t\r\n", in->body[i]) != NULL;
        if (blank && form == SRV_GEN_PIPELINE) {
            srv_reply_invalid(err, "missing", "query", "text", "Field required", NULL);
            return -1;
        }
        if (srv_json_body(in, (void **)&root, err))
            return -1;
    }
    if (form == SRV_GEN_PIPELINE)
        rc = parse_pipeline(in, root, &g, job, err);
    else if (form == SRV_GEN_TGI)
        rc = parse_tgi(in, root, &g, job, err);
    else
        rc = parse_openai(in, root, &g, job, err);
    bool explicit_max = g.max_new_tokens > 0;
    for (size_t i = 0; !rc && i < job->n; i++)
        rc = setup_seq(m, in, job, i, &g, explicit_max, err);
    if (!rc)
        rc = check_combination(in, job, job->n ? &job->seqs[0].params : &g, err);
    if (!rc)
        rc = own_prompts(job, err);
    else
        forget_prompts(job);
    json_decref(root); /* the prompts' strings until own_prompts */
    return rc ? -1 : 0;
}

size_t srv_gen_job_seqs(const srv_gen_job *job)
{
    size_t seqs = 0;
    for (size_t i = 0; i < job->n; i++)
        seqs += (size_t)gen_beam_count(&job->seqs[i].params);
    return seqs;
}

size_t srv_gen_job_kv_tokens(const srv_gen_job *job)
{
    size_t need = 0;
    for (size_t i = 0; i < job->n; i++) {
        const srv_gen_seq *q = &job->seqs[i];
        size_t new_tokens = q->params.max_new_tokens > 0 ? (size_t)q->params.max_new_tokens : 0;
        need += (size_t)gen_beam_count(&q->params) * ((size_t)q->n_prompt + new_tokens);
    }
    return need;
}

void srv_gen_job_free(srv_gen_job *job)
{
    for (size_t i = 0; i < job->n_stop; i++)
        free(job->stop[i]);
    free(job->stop);
    for (size_t i = 0; i < job->n; i++) {
        srv_gen_seq *q = &job->seqs[i];
        free(q->prompt), free(q->tokens), free(q->logprobs), free(q->text_end), free(q->text);
        if (job->prompt_text)
            free(job->prompt_text[i]);
    }
    free(job->seqs);
    free(job->prompt_text);
    free(job->prompt_text_len);
    pthread_mutex_destroy(&job->lock);
    memset(job, 0, sizeof *job);
}
