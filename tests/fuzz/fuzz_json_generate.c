/* srv_gen_parse (server/generate.h) in each form on hostile bodies, with the
 * tiny GPT-2 fixture. A request that parses is then "run" without the model:
 * each sequence pretends to generate its own prompt back (real token ids,
 * their real bytes), and the answer is written whole (srv_gen_format) and as
 * server-sent events (srv_gen_stream_events); every event must be JSON.
 *
 * Input: byte 0 = flags (bits 0-1: form, 0 pipeline, 1 TGI, 2 OpenAI, 3
 * TGI; bit 2: stream (as /generate_stream; OpenAI reads "stream" from the
 * body); bit 3: a ?text= query (pipeline), its length in byte 1 and its bytes
 * next; bit 4: tight limits), then the body. */
#include "tests/fuzz/fuzz.h"

#include "server/generate.h"

static model *m;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    m = fuzz_load_model("gpt2-tiny");
    return 0;
}

/* What the worker would leave in a finished job, made from the prompt. */
static void pretend_generate(srv_gen_job *job)
{
    for (size_t s = 0; s < job->n; s++) {
        srv_gen_seq *q = &job->seqs[s];
        int n = q->n_prompt;
        if (q->params.max_new_tokens > 0 && q->params.max_new_tokens < n)
            n = q->params.max_new_tokens;
        q->tokens = calloc((size_t)n + 1, sizeof *q->tokens);
        q->logprobs = calloc((size_t)n + 1, sizeof *q->logprobs);
        q->text_end = calloc((size_t)n + 1, sizeof *q->text_end);
        q->text_cap = 16 * (size_t)n + 1;
        q->text = malloc(q->text_cap);
        if (!q->tokens || !q->logprobs || !q->text_end || !q->text)
            abort();
        for (int i = 0; i < n; i++) {
            int32_t id = q->prompt[i];
            char bytes[256];
            size_t k = m->tok->ops->token_bytes(m->tok, id, bytes, sizeof bytes);
            FUZZ_CHECK(k <= sizeof bytes);
            if (q->text_len + k > q->text_cap) {
                q->text_cap = 2 * (q->text_len + k);
                if (!(q->text = realloc(q->text, q->text_cap)))
                    abort();
            }
            if (id != m->eos_id) {
                memcpy(q->text + q->text_len, bytes, k);
                q->text_len += k;
            }
            q->tokens[i] = id;
            q->logprobs[i] = -0.5f;
            q->text_end[i] = tok_utf8_complete_prefix(q->text, q->text_len);
        }
        q->n_tokens = n;
        q->finish = n && q->tokens[n - 1] == m->eos_id ? SRV_FINISH_EOS : SRV_FINISH_LENGTH;
    }
    job->finished = true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const srv_gen_form forms[4] = {SRV_GEN_PIPELINE, SRV_GEN_TGI, SRV_GEN_OPENAI, SRV_GEN_TGI};
    fuzz_in in = {data, size};
    uint8_t flags = fuzz_byte(&in);
    srv_gen_form form = forms[flags & 3];
    char *query = NULL;
    size_t query_len = 0;
    if (flags & 8) {
        const uint8_t *q = fuzz_take(&in, fuzz_byte(&in), &query_len);
        query = fuzz_copy(q, query_len);
    }
    char *body = fuzz_copy(in.p, in.n);
    srv_limits tight = {.max_client_batch = 2, .max_new_tokens = 8, .max_batch_total_tokens = 40};
    srv_limits dflt = {.max_client_batch = 32, .max_new_tokens = 1024, .max_batch_total_tokens = 16384};
    srv_request req = {.query_text = query, .query_text_len = query_len, .body = body,
                       .body_len = in.n, .content_type = "application/json",
                       .limits = flags & 16 ? &tight : &dflt};

    srv_gen_job job;
    memset(&job, 0, sizeof job);
    job.stream = (flags & 4) && form == SRV_GEN_TGI;
    srv_reply reply;
    srv_reply_init(&reply);
    if (srv_gen_parse(m, form, &req, &job, &reply) == 0) {
        FUZZ_CHECK(reply.status == 0);
        FUZZ_CHECK(job.n >= 1 && job.seqs);
        for (size_t i = 0; i < job.n; i++) {
            const srv_gen_seq *q = &job.seqs[i];
            FUZZ_CHECK(q->n_prompt >= 1 && q->params.max_new_tokens >= 1);
            FUZZ_CHECK(q->n_prompt + q->params.max_new_tokens <= m->max_positions);
            FUZZ_CHECK(q->params.max_new_tokens <= req.limits->max_new_tokens);
            for (int k = 0; k < q->n_prompt; k++)
                FUZZ_CHECK(q->prompt[k] >= 0 && q->prompt[k] < m->vocab_size);
        }
        FUZZ_CHECK(srv_gen_job_kv_tokens(&job) <= (size_t)req.limits->max_batch_total_tokens);
        for (size_t i = 0; i < job.n_stop; i++)
            FUZZ_CHECK(job.stop[i] && job.stop[i][0]);
        pretend_generate(&job);
        if (job.stream) {
            srv_buf events;
            srv_buf_init(&events);
            FUZZ_CHECK(srv_gen_stream_events(m, &job, &events));
            fuzz_check_events(&events);
            srv_buf_free(&events);
        } else {
            srv_gen_format(m, &job, &reply);
            FUZZ_CHECK(reply.status == 200);
        }
    }
    srv_gen_job_free(&job);
    if (reply.status)
        fuzz_check_reply(&reply);
    srv_reply_free(&reply);
    free(body);
    free(query);
    return 0;
}
