#include "server/classify.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- parsing ---------------------------------------------------------- */

static int alloc_texts(srv_classify_req *req, size_t n, srv_reply *err)
{
    req->n = n;
    req->enc = calloc(n, sizeof *req->enc);
    if (!req->enc) {
        srv_reply_detail(err, 503, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        tok_encoding_init(&req->enc[i]);
    return 0;
}

/* Text i of the request, cut at the model's limit if the request asks. */
static int tokenize_one(const model *m, const srv_request *in, srv_classify_req *req, size_t i,
                        const char *text, size_t len, srv_reply *err)
{
    return srv_tokenize_input(m, in, "inputs", text, len, req->truncate, &req->enc[i], err);
}

static int alloc_logits(const model *m, srv_classify_req *req, srv_reply *err)
{
    req->logits = malloc((req->n ? req->n : 1) * m->n_labels * sizeof *req->logits);
    if (req->logits)
        return 0;
    srv_reply_detail(err, 503, "out of memory");
    return -1;
}

static int invalid_field(srv_reply *err, const char *type, const char *field, const char *msg,
                         json_t *input)
{
    char *dump = srv_json_dump(input);
    srv_reply_invalid(err, type, "body", field, msg, dump);
    free(dump);
    return -1;
}

static int get_bool(json_t *root, const char *field, bool *out, srv_reply *err)
{
    json_t *v = json_object_get(root, field);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_boolean(v))
        return invalid_field(err, "bool_type", field, "Input should be a valid boolean", v);
    *out = json_is_true(v);
    return 0;
}

static int parse_inputs(const model *m, const srv_request *in, json_t *inputs,
                        srv_classify_req *req, srv_reply *err)
{
    req->tei_form = true;
    if (json_is_string(inputs)) {
        if (alloc_texts(req, 1, err))
            return -1;
        return tokenize_one(m, in, req, 0, json_string_value(inputs), json_string_length(inputs), err);
    }
    size_t limit = in->limits ? in->limits->max_client_batch : 32;
    if (!json_is_array(inputs) || json_array_size(inputs) == 0)
        return invalid_field(err, "string_type", "inputs",
                             "Input should be a valid string or a non-empty list of strings", inputs);
    if (json_array_size(inputs) > limit)
        return srv_reply_too_many(err, "inputs", json_array_size(inputs), limit);
    req->list_input = true;
    if (alloc_texts(req, json_array_size(inputs), err))
        return -1;
    for (size_t i = 0; i < req->n; i++) {
        json_t *t = json_array_get(inputs, i);
        if (!json_is_string(t))
            return invalid_field(err, "string_type", "inputs", "Input should be a valid string", t);
        if (tokenize_one(m, in, req, i, json_string_value(t), json_string_length(t), err))
            return -1;
    }
    return 0;
}

static int parse_body(const model *m, const srv_request *in, srv_classify_req *req, srv_reply *err)
{
    json_t *root;
    if (srv_json_body(in, (void **)&root, err))
        return -1;
    int rc = get_bool(root, "raw_scores", &req->raw_scores, err);
    if (!rc)
        rc = get_bool(root, "truncate", &req->truncate, err);
    json_t *text = json_object_get(root, "text"), *inputs = json_object_get(root, "inputs");
    if (rc) {
        /* error already written */
    } else if (text && !inputs) {
        if (!json_is_string(text))
            rc = invalid_field(err, "string_type", "text", "Input should be a valid string", text);
        else if (!(rc = alloc_texts(req, 1, err)))
            rc = tokenize_one(m, in, req, 0, json_string_value(text), json_string_length(text), err);
    } else if (inputs) {
        rc = parse_inputs(m, in, inputs, req, err);
    } else {
        rc = invalid_field(err, "missing", "inputs", "Field required", root);
    }
    json_decref(root);
    return rc;
}

static bool blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
            return false;
    return true;
}

int srv_classify_parse(const model *m, const srv_request *in, srv_classify_req *req,
                       srv_reply *err)
{
    memset(req, 0, sizeof *req);
    int rc;
    if (in->query_text) {
        /* The FastAPI service reads only the query: a body beside it is ignored. */
        rc = alloc_texts(req, 1, err);
        if (!rc)
            rc = tokenize_one(m, in, req, 0, in->query_text, in->query_text_len, err);
    } else if (blank(in->body, in->body_len)) {
        srv_reply_invalid(err, "missing", "query", "text", "Field required", NULL);
        rc = -1;
    } else {
        rc = parse_body(m, in, req, err);
    }
    if (!rc)
        rc = alloc_logits(m, req, err);
    if (rc)
        srv_classify_req_free(req);
    return rc;
}

int srv_classify_texts(const model *m, const srv_request *in, const char *const *texts,
                       const size_t *lens, size_t n, bool truncate, srv_classify_req *req,
                       srv_reply *err)
{
    memset(req, 0, sizeof *req);
    req->truncate = truncate;
    req->list_input = true;
    int rc = alloc_texts(req, n, err);
    for (size_t i = 0; !rc && i < n; i++)
        rc = tokenize_one(m, in, req, i, texts[i], lens[i], err);
    if (!rc)
        rc = alloc_logits(m, req, err);
    if (rc)
        srv_classify_req_free(req);
    return rc;
}

void srv_classify_req_free(srv_classify_req *req)
{
    for (size_t i = 0; i < req->n && req->enc; i++)
        tok_encoding_free(&req->enc[i]);
    free(req->enc);
    free(req->logits);
    memset(req, 0, sizeof *req);
}

/* ---- answers ------------------------------------------------------------ */

/* Probabilities as the pipeline computes them, in float32: softmax over the
 * labels, or a sigmoid per label for multi-label and single-logit heads. */
static void scores_of(const model *m, const float *logits, bool raw, float *out)
{
    size_t n = m->n_labels;
    if (raw) {
        memcpy(out, logits, n * sizeof *out);
    } else if (m->multi_label || n == 1) {
        for (size_t i = 0; i < n; i++)
            out[i] = 1.0f / (1.0f + expf(-logits[i]));
    } else {
        float max = logits[0], sum = 0;
        for (size_t i = 1; i < n; i++)
            max = logits[i] > max ? logits[i] : max;
        for (size_t i = 0; i < n; i++)
            sum += out[i] = expf(logits[i] - max);
        for (size_t i = 0; i < n; i++)
            out[i] /= sum;
    }
}

static void format_top_label(const model *m, const float *scores, srv_buf *b)
{
    size_t best = 0;
    for (size_t i = 1; i < m->n_labels; i++)
        if (scores[i] > scores[best])
            best = i;
    srv_buf_puts(b, "[{\"label\":");
    srv_json_cstr(b, m->labels[best]);
    srv_buf_puts(b, ",\"score\":");
    srv_json_num(b, scores[best]);
    srv_buf_puts(b, "}]");
}

static void format_all_labels(const model *m, const float *scores, srv_buf *b)
{
    srv_json_ranked(b, scores, (const char *const *)m->labels, NULL, m->n_labels);
}

/* Open Inference Protocol outputs: "label" (BYTES [n]), "score" (FP32 [n])
 * and "logits" (FP32 [n, labels]). */
static void format_v2(const model *m, const srv_classify_req *req, srv_buf *b)
{
    size_t L = m->n_labels, best[req->n ? req->n : 1];
    float scores[L], top[req->n ? req->n : 1];
    for (size_t i = 0; i < req->n; i++) {
        scores_of(m, req->logits + i * L, false, scores);
        best[i] = 0;
        for (size_t k = 1; k < L; k++)
            if (scores[k] > scores[best[i]])
                best[i] = k;
        top[i] = scores[best[i]];
    }
    srv_buf_puts(b, "{\"model_name\":");
    srv_json_cstr(b, req->v2_model);
    srv_buf_puts(b, ",\"id\":");
    srv_json_cstr(b, req->v2_id);
    srv_buf_printf(b, ",\"outputs\":[{\"name\":\"label\",\"datatype\":\"BYTES\",\"shape\":[%zu],\"data\":[", req->n);
    for (size_t i = 0; i < req->n; i++) {
        srv_buf_puts(b, i ? "," : "");
        srv_json_cstr(b, m->labels[best[i]]);
    }
    srv_buf_printf(b, "]},{\"name\":\"score\",\"datatype\":\"FP32\",\"shape\":[%zu],\"data\":[", req->n);
    for (size_t i = 0; i < req->n; i++) {
        srv_buf_puts(b, i ? "," : "");
        srv_json_num(b, top[i]);
    }
    srv_buf_printf(b, "]},{\"name\":\"logits\",\"datatype\":\"FP32\",\"shape\":[%zu,%zu],\"data\":[", req->n, L);
    for (size_t i = 0; i < req->n * L; i++) {
        srv_buf_puts(b, i ? "," : "");
        srv_json_num(b, req->logits[i]);
    }
    srv_buf_puts(b, "]}]}");
}

void srv_classify_format(const model *m, const srv_classify_req *req, srv_reply *out)
{
    srv_reply_json(out, 200);
    if (req->v2_form) {
        format_v2(m, req, &out->body);
        return;
    }
    srv_buf *b = &out->body;
    float scores[m->n_labels];
    if (req->list_input)
        srv_buf_puts(b, "[");
    for (size_t i = 0; i < req->n; i++) {
        scores_of(m, req->logits + i * m->n_labels, req->raw_scores, scores);
        if (i)
            srv_buf_puts(b, ",");
        if (req->tei_form)
            format_all_labels(m, scores, b);
        else
            format_top_label(m, scores, b);
    }
    if (req->list_input)
        srv_buf_puts(b, "]");
}

int srv_classify_run(const model *m, srv_classify_req *req, eng_arena *a, eng_err *err)
{
    size_t total = 0;
    int max_len = 0;
    for (size_t i = 0; i < req->n; i++) {
        total += req->enc[i].n;
        max_len = (int)req->enc[i].n > max_len ? (int)req->enc[i].n : max_len;
    }
    int32_t *ids = malloc((total ? total : 1) * sizeof *ids);
    int *off = malloc((req->n + 1) * sizeof *off);
    int rc = ids && off ? 0 : eng_err_set(err, ENG_ENOMEM, "out of memory");
    if (!rc) {
        off[0] = 0;
        for (size_t i = 0; i < req->n; i++) {
            memcpy(ids + off[i], req->enc[i].ids, req->enc[i].n * sizeof *ids);
            off[i + 1] = off[i] + (int)req->enc[i].n;
        }
        model_batch batch = {.ids = ids, .seq_off = off, .n_seq = (int)req->n};
        rc = eng_arena_reserve(a, m->ops->scratch_size(m, (int)total, max_len));
        if (rc)
            eng_err_set(err, rc, "out of memory for a batch of %zu tokens", total);
        else
            rc = m->ops->classify(m, &batch, a, req->logits, err);
    }
    free(ids);
    free(off);
    return rc;
}
