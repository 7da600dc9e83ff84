#include "server/tokenize.h"

#include <jansson.h>
#include <stdlib.h>

/* The most tokens one text may have here, in the model's contexts: a 16 MB
 * body would otherwise come back as a 120 MB answer. */
#define MAX_CONTEXTS 16

static int encode(const model *m, const char *text, size_t len, bool special, tok_encoding *enc,
                  srv_reply *out)
{
    size_t max = (size_t)MAX_CONTEXTS * (size_t)m->max_positions;
    tok_encode_opts opts = {.add_special = special, .count_max = max};
    eng_err err = {0};
    if (tok_encode(m->tok, text, len, &opts, enc, &err)) {
        srv_reply_eng_error(out, &err);
        return -1;
    }
    if (enc->n_untruncated > max) {
        srv_reply_detail(out, 422, "Input validation error: a text has more than %zu tokens, the "
                         "most /tokenize answers (%d times the model's %d)", max, MAX_CONTEXTS,
                         m->max_positions);
        return -1;
    }
    return 0;
}

void srv_tokenize_ids(const model *m, const char *text, size_t len, srv_reply *out)
{
    tok_encoding enc;
    tok_encoding_init(&enc);
    if (!encode(m, text, len, true, &enc, out)) {
        srv_reply_json(out, 200);
        srv_buf_puts(&out->body, "[");
        for (size_t i = 0; i < enc.n; i++)
            srv_buf_printf(&out->body, i ? ",%d" : "%d", enc.ids[i]);
        srv_buf_puts(&out->body, "]");
    }
    tok_encoding_free(&enc);
}

static void write_token(const model *m, const tok_encoding *e, size_t i, const char *text,
                        srv_buf *b)
{
    srv_buf_printf(b, "{\"id\":%d,\"text\":", e->ids[i]);
    if (e->special[i]) {
        size_t len = 0;
        const char *tok = m->tok->ops->id_to_token(m->tok, e->ids[i], &len);
        srv_json_str(b, tok ? tok : "", tok ? len : 0);
        srv_buf_puts(b, ",\"special\":true,\"start\":null,\"stop\":null}");
    } else {
        srv_json_str(b, text + e->start[i], e->stop[i] - e->start[i]);
        srv_buf_printf(b, ",\"special\":false,\"start\":%u,\"stop\":%u}", e->start[i], e->stop[i]);
    }
}

static int write_text(const model *m, const char *text, size_t len, bool special, srv_buf *b,
                      srv_reply *err)
{
    tok_encoding enc;
    tok_encoding_init(&enc);
    int rc = encode(m, text, len, special, &enc, err);
    if (!rc) {
        srv_buf_puts(b, "[");
        for (size_t i = 0; i < enc.n; i++) {
            if (i)
                srv_buf_puts(b, ",");
            write_token(m, &enc, i, text, b);
        }
        srv_buf_puts(b, "]");
    }
    tok_encoding_free(&enc);
    return rc;
}

static int write_inputs(const model *m, json_t *inputs, bool special, srv_buf *b, srv_reply *err)
{
    if (json_is_string(inputs))
        return write_text(m, json_string_value(inputs), json_string_length(inputs), special, b, err);
    srv_buf_puts(b, "[");
    for (size_t i = 0; i < json_array_size(inputs); i++) {
        json_t *t = json_array_get(inputs, i);
        if (i)
            srv_buf_puts(b, ",");
        if (write_text(m, json_string_value(t), json_string_length(t), special, b, err))
            return -1;
    }
    srv_buf_puts(b, "]");
    return 0;
}

static int check_inputs(json_t *inputs, size_t limit, srv_reply *err)
{
    const char *msg = NULL;
    if (!inputs)
        msg = "Field required";
    else if (!json_is_string(inputs) && (!json_is_array(inputs) || json_array_size(inputs) == 0))
        msg = "Input should be a valid string or a non-empty list of strings";
    for (size_t i = 0; !msg && json_is_array(inputs) && i < json_array_size(inputs); i++)
        if (!json_is_string(json_array_get(inputs, i)))
            msg = "Input should be a valid string";
    if (msg) {
        char *dump = srv_json_dump(inputs);
        srv_reply_invalid(err, inputs ? "string_type" : "missing", "body", "inputs", msg, dump);
        free(dump);
        return -1;
    }
    if (json_is_array(inputs) && json_array_size(inputs) > limit)
        return srv_reply_too_many(err, "inputs", json_array_size(inputs), limit);
    return 0;
}

void srv_tokenize_handle(const model *m, const srv_request *in, srv_reply *out)
{
    json_t *root;
    if (srv_json_body(in, (void **)&root, out))
        return;
    json_t *inputs = json_object_get(root, "inputs");
    json_t *special = json_object_get(root, "add_special_tokens");
    size_t limit = in->limits ? in->limits->max_client_batch : 32;
    if (special && !json_is_boolean(special)) {
        char *dump = srv_json_dump(special);
        srv_reply_invalid(out, "bool_type", "body", "add_special_tokens",
                          "Input should be a valid boolean", dump);
        free(dump);
    } else if (!check_inputs(inputs, limit, out)) {
        srv_buf b;
        srv_buf_init(&b);
        if (!write_inputs(m, inputs, !special || json_is_true(special), &b, out)) {
            srv_reply_json(out, 200);
            srv_buf_free(&out->body);
            out->body = b;
        } else {
            srv_buf_free(&b);
        }
    }
    json_decref(root);
}
