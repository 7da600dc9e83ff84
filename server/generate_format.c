/* Writing generation answers: whole (pipeline, TGI, OpenAI) and as
 * server-sent events (TGI's /generate_stream, OpenAI's stream: true). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "server/generate.h"

static const char *finish_name(srv_gen_form form, srv_finish f)
{
    if (form == SRV_GEN_OPENAI)
        return f == SRV_FINISH_LENGTH ? "length" : "stop";
    switch (f) {
    case SRV_FINISH_EOS: return "eos_token";
    case SRV_FINISH_STOP: return "stop_sequence";
    default: return "length";
    }
}

/* transformers' clean_up_tokenization_spaces, pass by pass as it does. */
static void clean_up(const char *s, size_t n, srv_buf *out)
{
    static const char *const from[] = {" .", " ?", " !", " ,", " ' ", " n't", " 'm", " 's", " 've", " 're"};
    static const char *const to[] = {".", "?", "!", ",", "'", "n't", "'m", "'s", "'ve", "'re"};
    srv_buf a, b;
    srv_buf_init(&a);
    srv_buf_init(&b);
    srv_buf_append(&a, s, n);
    for (size_t k = 0; k < sizeof from / sizeof *from; k++) {
        size_t lf = strlen(from[k]);
        srv_buf_clear(&b);
        for (size_t i = 0; i < a.len;) {
            if (i + lf <= a.len && memcmp(a.data + i, from[k], lf) == 0) {
                srv_buf_puts(&b, to[k]);
                i += lf;
            } else {
                srv_buf_append(&b, a.data + i, 1);
                i++;
            }
        }
        srv_buf t = a;
        a = b;
        b = t;
    }
    srv_buf_append(out, a.data ? a.data : "", a.len);
    srv_buf_free(&a);
    srv_buf_free(&b);
}

/* Replaces invalid UTF-8 with U+FFFD, as a decode with errors="replace". */
static void sanitize(const char *s, size_t n, srv_buf *out)
{
    size_t i = 0;
    while (i < n) {
        size_t ok = i + tok_utf8_validate(s + i, n - i);
        srv_buf_append(out, s + i, ok - i);
        if (ok < n)
            srv_buf_puts(out, "\xef\xbf\xbd");
        i = ok + 1;
    }
}

static size_t skip_code_points(const char *s, size_t n, size_t count)
{
    size_t i = 0;
    while (i < n && count) {
        i++;
        while (i < n && ((unsigned char)s[i] & 0xc0) == 0x80)
            i++;
        count--;
    }
    return i;
}

static size_t code_points(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xc0) != 0x80;
    return c;
}

/* The text a form answers with for seq i: the continuation (cleaned up as
 * the pipeline does), after the prompt when return_full_text. */
static void answer_text(const srv_gen_job *job, size_t i, srv_buf *out)
{
    const srv_gen_seq *q = &job->seqs[i];
    const char *prompt = job->prompt_text[i];
    size_t plen = job->prompt_text_len[i];
    srv_buf gen, full, cut;
    srv_buf_init(&gen), srv_buf_init(&full), srv_buf_init(&cut);
    sanitize(q->text, q->text_len, &gen);
    if (job->clean_up) {
        /* transformers decodes prompt + continuation, cleans it, and drops as
         * many characters as the cleaned prompt has. */
        srv_buf joined;
        srv_buf_init(&joined);
        srv_buf_append(&joined, prompt, plen);
        srv_buf_append(&joined, gen.data ? gen.data : "", gen.len);
        clean_up(joined.data, joined.len, &full);
        clean_up(prompt, plen, &cut);
        size_t skip = skip_code_points(full.data, full.len, code_points(cut.data ? cut.data : "", cut.len));
        srv_buf_clear(&gen);
        srv_buf_append(&gen, full.data + skip, full.len - skip);
        srv_buf_free(&joined);
    }
    if (job->return_full_text)
        srv_buf_append(out, prompt, plen);
    srv_buf_append(out, gen.data ? gen.data : "", gen.len);
    srv_buf_free(&gen), srv_buf_free(&full), srv_buf_free(&cut);
}

static void write_text_field(const srv_gen_job *job, size_t i, srv_buf *b)
{
    srv_buf t;
    srv_buf_init(&t);
    answer_text(job, i, &t);
    srv_json_str(b, t.data ? t.data : "", t.len);
    srv_buf_free(&t);
}

static void write_token(const model *m, const srv_gen_seq *q, int i, srv_buf *b)
{
    int32_t id = q->tokens[i];
    char bytes[256];
    size_t n = m->tok->ops->token_bytes(m->tok, id, bytes, sizeof bytes);
    srv_buf_printf(b, "{\"id\":%d,\"text\":", id);
    srv_json_str(b, bytes, n < sizeof bytes ? n : sizeof bytes);
    srv_buf_puts(b, ",\"logprob\":");
    srv_json_num(b, q->logprobs[i]);
    srv_buf_printf(b, ",\"special\":%s}", id == q->params.eos_id ? "true" : "false");
}

static void write_tgi_details(const model *m, const srv_gen_job *job, bool tokens, srv_buf *b)
{
    const srv_gen_seq *q = &job->seqs[0];
    srv_buf_printf(b, "{\"finish_reason\":\"%s\",\"generated_tokens\":%d,\"seed\":",
                   finish_name(job->form, q->finish), q->n_tokens);
    if (q->params.do_sample)
        srv_buf_printf(b, "%llu", (unsigned long long)q->params.seed);
    else
        srv_buf_puts(b, "null");
    if (tokens) {
        srv_buf_puts(b, ",\"prefill\":[],\"tokens\":[");
        for (int i = 0; i < q->n_tokens; i++) {
            if (i)
                srv_buf_puts(b, ",");
            write_token(m, q, i, b);
        }
        srv_buf_puts(b, "]");
    }
    srv_buf_puts(b, "}");
}

static void write_openai(const srv_gen_job *job, srv_buf *b)
{
    long prompt_tokens = 0, completion_tokens = 0;
    srv_buf_printf(b, "{\"id\":\"cmpl-%016llx\",\"object\":\"text_completion\",\"created\":%ld,\"model\":",
                   (unsigned long long)job->id, job->created);
    srv_json_cstr(b, job->model_name);
    srv_buf_puts(b, ",\"choices\":[");
    for (size_t i = 0; i < job->n; i++) {
        const srv_gen_seq *q = &job->seqs[i];
        prompt_tokens += q->n_prompt;
        completion_tokens += q->n_tokens;
        srv_buf_printf(b, "%s{\"index\":%zu,\"text\":", i ? "," : "", i);
        write_text_field(job, i, b);
        srv_buf_printf(b, ",\"logprobs\":null,\"finish_reason\":\"%s\"}", finish_name(job->form, q->finish));
    }
    srv_buf_printf(b, "],\"usage\":{\"prompt_tokens\":%ld,\"completion_tokens\":%ld,"
                      "\"total_tokens\":%ld}}", prompt_tokens, completion_tokens,
                   prompt_tokens + completion_tokens);
}

void srv_gen_format(const model *m, srv_gen_job *job, srv_reply *out)
{
    pthread_mutex_lock(&job->lock);
    for (size_t i = 0; i < job->n; i++)
        if (job->seqs[i].finish == SRV_FINISH_ERROR) {
            pthread_mutex_unlock(&job->lock);
            srv_reply_detail(out, 500, "generation failed");
            return;
        }
    srv_reply_json(out, 200);
    srv_buf *b = &out->body;
    if (job->form == SRV_GEN_PIPELINE) {
        srv_buf_puts(b, "[");
        for (size_t i = 0; i < job->n; i++) {
            srv_buf_puts(b, i ? ",{\"generated_text\":" : "{\"generated_text\":");
            write_text_field(job, i, b);
            srv_buf_puts(b, "}");
        }
        srv_buf_puts(b, "]");
    } else if (job->form == SRV_GEN_TGI) {
        srv_buf_puts(b, "{\"generated_text\":");
        write_text_field(job, 0, b);
        if (job->details) {
            srv_buf_puts(b, ",\"details\":");
            write_tgi_details(m, job, true, b);
        }
        srv_buf_puts(b, "}");
    } else if (job->form == SRV_GEN_KSERVE) {
        srv_buf_puts(b, "{\"model_name\":");
        srv_json_cstr(b, job->model_name);
        srv_buf_puts(b, ",\"id\":");
        srv_json_cstr(b, job->v2_id);
        srv_buf_puts(b, ",\"outputs\":[{\"name\":\"text_output\",\"datatype\":\"BYTES\",\"shape\":[1],\"data\":[");
        write_text_field(job, 0, b);
        srv_buf_puts(b, "]}]}");
    } else {
        write_openai(job, b);
    }
    pthread_mutex_unlock(&job->lock);
}

/* ---- streaming ----------------------------------------------------------------- */

static void tgi_event(const model *m, srv_gen_job *job, int i, const char *text, size_t n,
                      bool last, srv_buf *out)
{
    const srv_gen_seq *q = &job->seqs[0];
    int32_t id = q->tokens[i];
    bool special = id == q->params.eos_id;
    srv_buf_printf(out, "data:{\"index\":%d,\"token\":{\"id\":%d,\"text\":", i + 1, id);
    if (special) {
        size_t len = 0;
        const char *tok = m->tok->ops->id_to_token(m->tok, id, &len);
        srv_json_str(out, tok ? tok : "", tok ? len : 0);
    } else {
        srv_json_str(out, text, n);
    }
    srv_buf_puts(out, ",\"logprob\":");
    srv_json_num(out, q->logprobs[i]);
    srv_buf_printf(out, ",\"special\":%s},\"top_tokens\":null,\"generated_text\":",
                   special ? "true" : "false");
    if (last) {
        write_text_field(job, 0, out);
        srv_buf_puts(out, ",\"details\":");
        write_tgi_details(m, job, false, out);
    } else {
        srv_buf_puts(out, "null,\"details\":null");
    }
    srv_buf_puts(out, "}\n\n");
}

static void openai_chunk(const srv_gen_job *job, const char *text, size_t n, const char *finish,
                         srv_buf *out)
{
    srv_buf_printf(out, "data: {\"id\":\"cmpl-%016llx\",\"object\":\"text_completion\",\"created\":%ld,"
                        "\"model\":", (unsigned long long)job->id, job->created);
    srv_json_cstr(out, job->model_name);
    srv_buf_puts(out, ",\"choices\":[{\"index\":0,\"text\":");
    srv_json_str(out, text, n);
    srv_buf_puts(out, ",\"logprobs\":null,\"finish_reason\":");
    if (finish)
        srv_buf_printf(out, "\"%s\"", finish);
    else
        srv_buf_puts(out, "null");
    srv_buf_puts(out, "}]}\n\n");
}

/* The stream is complete once its sequence has finished, which the worker
 * records under the lock together with the last token: the final event
 * rides on that token, whether or not the worker has let go of the job yet
 * (job->finished, which only says when the job may be freed). */
bool srv_gen_stream_events(const model *m, srv_gen_job *job, srv_buf *out)
{
    pthread_mutex_lock(&job->lock);
    srv_gen_seq *q = &job->seqs[0];
    bool done = q->finish != SRV_FINISH_NONE;
    if (job->form == SRV_GEN_OPENAI && job->return_full_text && !job->echo_sent) {
        /* "echo": the prompt is the stream's first text, as whole answers
         * start with it. */
        openai_chunk(job, job->prompt_text[0], job->prompt_text_len[0], NULL, out);
        job->echo_sent = true;
    }
    if (q->finish == SRV_FINISH_ERROR)
        srv_gen_stream_error(job->form, "generation failed", "generation", out);
    for (int i = job->sent_tokens; i < q->n_tokens && q->finish != SRV_FINISH_ERROR; i++) {
        size_t end = q->text_end[i] < job->sent_bytes ? job->sent_bytes : q->text_end[i];
        const char *delta = q->text + job->sent_bytes;
        size_t n = end - job->sent_bytes;
        bool last = done && i == q->n_tokens - 1;
        if (job->form == SRV_GEN_TGI)
            tgi_event(m, job, i, delta, n, last, out);
        else if (n || last)
            openai_chunk(job, delta, n, last ? finish_name(job->form, q->finish) : NULL, out);
        job->sent_bytes = end;
        job->sent_tokens = i + 1;
    }
    if (done && job->form == SRV_GEN_OPENAI && q->finish != SRV_FINISH_ERROR)
        srv_buf_puts(out, "data: [DONE]\n\n");
    pthread_mutex_unlock(&job->lock);
    return done;
}

void srv_gen_stream_error(srv_gen_form form, const char *message, const char *type, srv_buf *out)
{
    if (form == SRV_GEN_OPENAI)
        srv_buf_printf(out, "data: {\"error\":{\"message\":\"%s\",\"type\":\"%s\"}}\n\n"
                            "data: [DONE]\n\n", message, type);
    else
        srv_buf_printf(out, "data:{\"error\":\"%s\",\"error_type\":\"%s\"}\n\n", message, type);
}
