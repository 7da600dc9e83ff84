#include "server/request.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

/* Any JSON value parses, so a non-object gets pydantic's dict_type answer;
 * NULs inside strings are kept (every reader takes the string's length). */
enum { BODY_FLAGS = JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL };

typedef struct json_parse {
    json_t *value;     /* NULL when the body is not JSON, and then */
    json_error_t err;  /* jansson's reason */
} json_parse;

static void parse(const char *body, size_t len, json_parse *p)
{
    p->value = json_loadb(body ? body : "", len, BODY_FLAGS, &p->err);
}

void *srv_json_prepare(const char *body, size_t len)
{
    json_parse *p = malloc(sizeof *p);
    if (p)
        parse(body, len, p);
    return p;
}

void *srv_json_prepared_value(void *value)
{
    json_parse *p = calloc(1, sizeof *p);
    if (p)
        p->value = value;
    else
        json_decref(value);
    return p;
}

void srv_json_prepared_free(void *prepared)
{
    if (prepared)
        json_decref(((json_parse *)prepared)->value);
    free(prepared);
}

/* The body parsed here, or the prepared parse with a reference of our own. */
static void parse_body(const srv_request *in, json_parse *p)
{
    if (!in->prepared) {
        parse(in->body, in->body_len, p);
        return;
    }
    *p = *(const json_parse *)in->prepared;
    json_incref(p->value);
}

void *srv_json_value(const srv_request *in, char *why, size_t cap)
{
    json_parse p;
    parse_body(in, &p);
    if (!p.value)
        snprintf(why, cap, "%s", p.err.text);
    return p.value;
}

int srv_json_body(const srv_request *in, void **root, srv_reply *err)
{
    json_parse p;
    parse_body(in, &p);
    if (!p.value) {
        srv_reply_json_invalid(err, p.err.position, p.err.text);
        return -1;
    }
    if (!json_is_object(p.value)) {
        char *input = json_dumps(p.value, JSON_COMPACT | JSON_ENCODE_ANY);
        srv_reply_invalid(err, "dict_type", "body", NULL, "Input should be a valid dictionary", input);
        free(input);
        json_decref(p.value);
        return -1;
    }
    *root = p.value;
    return 0;
}

void srv_json_free(void *root)
{
    json_decref(root);
}

bool srv_json_string_field(const void *root, const char *key, char *buf, size_t cap, size_t *len)
{
    json_t *v = json_object_get(root, key);
    if (!json_is_string(v))
        return false;
    snprintf(buf, cap, "%s", json_string_value(v));
    *len = json_string_length(v);
    return true;
}

char *srv_json_dump(const void *value)
{
    return value ? json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
}

void srv_reply_eng_error(srv_reply *r, const eng_err *err)
{
    int status = 500;
    if (err->code == ENG_EFORMAT || err->code == ENG_ETOOLONG || err->code == ENG_EINVAL)
        status = 422;
    else if (err->code == ENG_ENOMEM)
        status = 503;
    srv_reply_detail(r, status, "%s", err->msg);
}

int srv_limits_input_tokens(const srv_limits *lim, int model_max)
{
    if (lim && lim->max_input_tokens > 0 && lim->max_input_tokens < model_max)
        return lim->max_input_tokens;
    return model_max;
}

size_t srv_count_max(size_t max)
{
    return 4 * max;
}

int srv_reply_too_long(srv_reply *err, const char *field, int max, size_t n, size_t count_max,
                       bool hint)
{
    char given[32];
    if (n > count_max)
        snprintf(given, sizeof given, "more than %zu", count_max);
    else
        snprintf(given, sizeof given, "%zu", n);
    srv_reply_detail(err, 422, "Input validation error: `%s` must have at most %d tokens. "
                     "Given: %s%s", field, max, given,
                     hint ? " (send \"truncate\": true to cut it)" : "");
    return -1;
}

int srv_tokenize_input(const model *m, const srv_request *in, const char *field,
                       const char *text, size_t len, bool truncate, tok_encoding *enc,
                       srv_reply *err)
{
    int max = srv_limits_input_tokens(in->limits, m->max_positions);
    /* Truncating, it is enough to know there are more than max. */
    size_t count_max = truncate ? (size_t)max : srv_count_max((size_t)max);
    tok_encode_opts opts = {.add_special = true, .max_len = (size_t)max, .count_max = count_max};
    eng_err e = {0};
    if (tok_encode(m->tok, text, len, &opts, enc, &e)) {
        srv_reply_eng_error(err, &e);
        return -1;
    }
    if (!truncate && enc->n_untruncated > (size_t)max)
        return srv_reply_too_long(err, field, max, enc->n_untruncated, count_max, !in->query_text);
    return 0;
}

int srv_reply_too_many(srv_reply *err, const char *field, size_t n, size_t limit)
{
    srv_reply_detail(err, 422, "Input validation error: `%s` holds %zu items, at most %zu are "
                     "allowed in one request", field, n, limit);
    return -1;
}
