#include "server/clip_task.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/base64.h"
#include "models/image.h"
#include "server/multipart.h"

#define DEFAULT_TEMPLATE "This is a photo of {}."
/* A hard cap on candidate labels, whatever --max-client-batch-size says: it
 * sizes the callers' arrays, which hold the first MAX_LABELS labels while
 * counting them all, and read_labels refuses a count over it before
 * reading any. */
#define MAX_LABELS 256

static int bad(srv_reply *err, const char *field, const char *type, const char *msg, json_t *input)
{
    char *dump = srv_json_dump(input);
    srv_reply_invalid(err, type, "body", field, msg, dump);
    free(dump);
    return -1;
}

static size_t max_items(const srv_request *in)
{
    return in->limits && in->limits->max_client_batch ? in->limits->max_client_batch : 32;
}

/* ---- images ----------------------------------------------------------------- */

static int add_image_bytes(srv_clip_req *req, const uint8_t *data, size_t len, const srv_request *in,
                           srv_reply *err)
{
    size_t max = in->limits && in->limits->max_image_bytes ? in->limits->max_image_bytes : 16u << 20;
    if (len > max) {
        srv_reply_detail(err, 413, "image of %zu bytes is larger than the limit of %zu", len, max);
        return -1;
    }
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy) {
        srv_reply_detail(err, 503, "out of memory");
        return -1;
    }
    memcpy(copy, data, len);
    req->images[req->n_images] = copy;
    req->image_len[req->n_images++] = len;
    return 0;
}

static int add_image_b64(srv_clip_req *req, json_t *v, const char *field, const srv_request *in,
                         srv_reply *err)
{
    if (!json_is_string(v))
        return bad(err, field, "string_type", "Input should be a base64 image or a data: URL", v);
    size_t max = in->limits && in->limits->max_image_bytes ? in->limits->max_image_bytes : 16u << 20;
    uint8_t *bytes;
    size_t len;
    eng_err e = {0};
    int rc = img_base64_decode(json_string_value(v), json_string_length(v), max, &bytes, &len, &e);
    if (rc == ENG_ETOOLONG) {
        srv_reply_detail(err, 413, "image is larger than the limit of %zu bytes", max);
        return -1;
    }
    if (rc) {
        srv_reply_detail(err, 422, "`%s`: %s", field, e.msg);
        return -1;
    }
    req->images[req->n_images] = bytes;
    req->image_len[req->n_images++] = len;
    return 0;
}

static int alloc_images(srv_clip_req *req, size_t n, srv_reply *err)
{
    req->images = calloc(n ? n : 1, sizeof *req->images);
    req->image_len = calloc(n ? n : 1, sizeof *req->image_len);
    if (!req->images || !req->image_len) {
        srv_reply_detail(err, 503, "out of memory");
        return -1;
    }
    return 0;
}

static int read_images(srv_clip_req *req, json_t *v, const char *field, const srv_request *in,
                       srv_reply *err)
{
    if (!json_is_array(v) || json_array_size(v) == 0)
        return bad(err, field, "list_type", "Input should be a non-empty list of base64 images", v);
    if (json_array_size(v) > max_items(in))
        return srv_reply_too_many(err, field, json_array_size(v), max_items(in));
    if (alloc_images(req, json_array_size(v), err))
        return -1;
    for (size_t i = 0; i < json_array_size(v); i++)
        if (add_image_b64(req, json_array_get(v, i), field, in, err))
            return -1;
    return 0;
}

/* ---- texts ---------------------------------------------------------------------- */

static int alloc_texts(srv_clip_req *req, size_t n, bool labels, srv_reply *err)
{
    req->texts = calloc(n ? n : 1, sizeof *req->texts);
    req->labels = labels ? calloc(n ? n : 1, sizeof *req->labels) : NULL;
    req->label_lens = labels ? calloc(n ? n : 1, sizeof *req->label_lens) : NULL;
    if (!req->texts || (labels && (!req->labels || !req->label_lens))) {
        srv_reply_detail(err, 503, "out of memory");
        return -1;
    }
    return 0;
}

/* Tokenizes one text; over-long texts are cut (keeping the end-of-text
 * token) unless the request said "truncate": false. */
static int add_text(const model *m, const srv_request *in, srv_clip_req *req, const char *field,
                    const char *text, size_t len, bool truncate, srv_reply *err)
{
    tok_encoding *enc = &req->texts[req->n_texts++];
    tok_encoding_init(enc);
    return srv_tokenize_input(m, in, field, text, len, truncate, enc, err);
}

static int read_texts(const model *m, srv_clip_req *req, json_t *v, const char *field,
                      const srv_request *in, bool truncate, srv_reply *err)
{
    size_t n = json_is_string(v) ? 1 : json_array_size(v);
    if ((!json_is_string(v) && !json_is_array(v)) || n == 0)
        return bad(err, field, "list_type", "Input should be a string or a non-empty list of strings", v);
    if (n > max_items(in))
        return srv_reply_too_many(err, field, n, max_items(in));
    if (alloc_texts(req, n, false, err))
        return -1;
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_is_string(v) ? v : json_array_get(v, i);
        if (!json_is_string(t))
            return bad(err, field, "string_type", "Input should be a valid string", t);
        if (add_text(m, in, req, field, json_string_value(t), json_string_length(t), truncate, err))
            return -1;
    }
    return 0;
}

/* template.format(label), as the pipeline: the first "{}" takes the label.
 * Lengths, not NULs, bound the template and the label (either may hold one). */
static char *fill_template(const char *tmpl, size_t tmpl_len, const char *label, size_t label_len,
                           size_t *len)
{
    const char *at = memmem(tmpl, tmpl_len, "{}", 2);
    size_t pre = at ? (size_t)(at - tmpl) : tmpl_len, post = at ? tmpl_len - pre - 2 : 0;
    *len = pre + (at ? label_len : 0) + post;
    char *s = malloc(*len + 1);
    if (!s)
        return NULL;
    memcpy(s, tmpl, pre);
    if (at) {
        memcpy(s + pre, label, label_len);
        memcpy(s + pre + label_len, at + 2, post);
    }
    s[*len] = '\0';
    return s;
}

/* Candidate labels, from a list or one comma-separated string (the form
 * field): n counted, the first MAX_LABELS of them in labels/lens; tmpl NULL
 * is the pipeline's default template. */
static int read_labels(const model *m, srv_clip_req *req, const char *const *labels,
                       const size_t *lens, size_t n, const char *tmpl, size_t tmpl_len,
                       const srv_request *in, srv_reply *err)
{
    if (!tmpl) {
        tmpl = DEFAULT_TEMPLATE;
        tmpl_len = strlen(DEFAULT_TEMPLATE);
    }
    size_t limit = max_items(in) < MAX_LABELS ? max_items(in) : MAX_LABELS;
    if (n == 0) {
        srv_reply_invalid(err, "list_type", "body", "candidate_labels",
                          "Input should be a non-empty list of labels", NULL);
        return -1;
    }
    if (n > limit)
        return srv_reply_too_many(err, "candidate_labels", n, limit);
    if (alloc_texts(req, n, true, err))
        return -1;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        char *text = fill_template(tmpl, tmpl_len, labels[i], lens[i], &len);
        req->labels[i] = srv_bytes_dup(labels[i], lens[i]);
        req->label_lens[i] = lens[i];
        int rc = !text || !req->labels[i]
                     ? -1 : add_text(m, in, req, "candidate_labels", text, len, true, err);
        free(text);
        if (rc) {
            if (!err->status)
                srv_reply_detail(err, 503, "out of memory");
            return -1;
        }
    }
    return 0;
}

/* Splits "cat, dog,bird" into trimmed, non-empty labels (pointers into s);
 * returns how many there are, of which the first cap are stored. */
static size_t split_labels(const char *s, size_t len, const char **out, size_t *lens, size_t cap)
{
    size_t n = 0, i = 0;
    while (i <= len) {
        size_t j = i;
        while (j < len && s[j] != ',')
            j++;
        size_t a = i, b = j;
        while (a < b && (s[a] == ' ' || s[a] == '\t'))
            a++;
        while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t'))
            b--;
        if (b > a && n < cap) {
            out[n] = s + a;
            lens[n] = b - a;
        }
        n += b > a;
        i = j + 1;
    }
    return n;
}

static int parse_zero_shot_json(const model *m, json_t *root, const srv_request *in,
                                srv_clip_req *req, srv_reply *err)
{
    json_t *params = json_object_get(root, "parameters");
    json_t *labels = json_object_get(params, "candidate_labels");
    json_t *tmpl = json_object_get(params, "hypothesis_template");
    if (tmpl && !json_is_string(tmpl))
        return bad(err, "hypothesis_template", "string_type", "Input should be a valid string", tmpl);
    const char *names[MAX_LABELS];
    size_t lens[MAX_LABELS], n = 0;
    if (json_is_string(labels)) {
        n = split_labels(json_string_value(labels), json_string_length(labels), names, lens, MAX_LABELS);
    } else if (json_is_array(labels)) {
        for (; n < json_array_size(labels); n++) {
            json_t *l = json_array_get(labels, n);
            if (!json_is_string(l))
                return bad(err, "candidate_labels", "string_type", "Input should be a valid string", l);
            if (n < MAX_LABELS) {
                names[n] = json_string_value(l);
                lens[n] = json_string_length(l);
            }
        }
    } else {
        return bad(err, "candidate_labels", labels ? "list_type" : "missing",
                   labels ? "Input should be a list of labels" : "Field required", labels);
    }
    req->form = SRV_CLIP_ZERO_SHOT;
    if (alloc_images(req, 1, err) || add_image_b64(req, json_object_get(root, "inputs"), "inputs", in, err))
        return -1;
    return read_labels(m, req, names, lens, n, json_string_value(tmpl), json_string_length(tmpl),
                       in, err);
}

static bool truncate_flag(json_t *root)
{
    json_t *t = json_object_get(root, "truncate");
    return !json_is_false(t);
}

static int parse_json(const model *m, const srv_request *in, bool embed, srv_clip_req *req,
                      srv_reply *err)
{
    json_t *root;
    if (srv_json_body(in, (void **)&root, err))
        return -1;
    json_t *images = json_object_get(root, "images"), *texts = json_object_get(root, "texts");
    json_t *inputs = json_object_get(root, "inputs");
    json_t *truncate = json_object_get(root, "truncate");
    int rc;
    if (truncate && !json_is_boolean(truncate))
        rc = bad(err, "truncate", "bool_type", "Input should be a valid boolean", truncate);
    else if (embed && images) {
        req->form = SRV_CLIP_EMBED_IMAGE;
        rc = read_images(req, images, "images", in, err);
    } else if (embed) {
        req->form = SRV_CLIP_EMBED_TEXT;
        rc = read_texts(m, req, inputs, "inputs", in, truncate_flag(root), err);
    } else if (images || texts) {
        req->form = SRV_CLIP_LOGITS;
        rc = read_images(req, images, "images", in, err);
        if (!rc)
            rc = read_texts(m, req, texts, "texts", in, truncate_flag(root), err);
    } else if (inputs) {
        rc = parse_zero_shot_json(m, root, in, req, err);
    } else {
        rc = bad(err, "inputs", "missing", "Field required", root);
    }
    json_decref(root);
    return rc;
}

/* curl -F image=@cat.jpg -F candidate_labels=cat,dog [-F hypothesis_template=...] */
static int parse_multipart(const model *m, const srv_request *in, srv_clip_req *req, srv_reply *err)
{
    char boundary[80];
    eng_err e = {0};
    srv_multipart mp = {0};
    if (srv_multipart_boundary(in->content_type, boundary, sizeof boundary, &e) ||
        srv_multipart_parse((const uint8_t *)in->body, in->body_len, boundary, 64, &mp, &e)) {
        srv_reply_detail(err, 422, "multipart/form-data: %s", e.msg);
        return -1;
    }
    const srv_part *image = srv_multipart_get(&mp, "image");
    const srv_part *labels = srv_multipart_get(&mp, "candidate_labels");
    const srv_part *tmpl = srv_multipart_get(&mp, "hypothesis_template");
    image = image ? image : srv_multipart_get(&mp, "file");
    int rc = 0;
    if (!image || !labels) {
        srv_reply_invalid(err, "missing", "body", image ? "candidate_labels" : "image",
                          "Field required", NULL);
        rc = -1;
    }
    const char *names[MAX_LABELS];
    size_t lens[MAX_LABELS];
    req->form = SRV_CLIP_ZERO_SHOT;
    if (!rc)
        rc = alloc_images(req, 1, err) || add_image_bytes(req, image->data, image->len, in, err);
    if (!rc)
        rc = read_labels(m, req, names, lens,
                         split_labels((const char *)labels->data, labels->len, names, lens, MAX_LABELS),
                         tmpl ? (const char *)tmpl->data : NULL, tmpl ? tmpl->len : 0, in, err);
    srv_multipart_free(&mp);
    return rc ? -1 : 0;
}

int srv_clip_parse(const model *m, const srv_request *in, bool embed, srv_clip_req *req,
                   srv_reply *err)
{
    memset(req, 0, sizeof *req);
    int rc;
    if (in->body_len == 0) {
        rc = bad(err, "inputs", "missing", "Field required", NULL);
    } else if (in->content_type && !strncasecmp(in->content_type, "multipart/form-data", 19)) {
        rc = embed ? (srv_reply_detail(err, 422, "/embed takes a JSON body"), -1)
                   : parse_multipart(m, in, req, err);
    } else {
        rc = parse_json(m, in, embed, req, err);
    }
    if (!rc) {
        size_t P = (size_t)m->proj_dim;
        req->image_emb = malloc((req->n_images ? req->n_images : 1) * P * sizeof(float));
        req->text_emb = malloc((req->n_texts ? req->n_texts : 1) * P * sizeof(float));
        if (!req->image_emb || !req->text_emb) {
            srv_reply_detail(err, 503, "out of memory");
            rc = -1;
        }
    }
    if (rc)
        srv_clip_req_free(req);
    return rc;
}

void srv_clip_req_free(srv_clip_req *req)
{
    for (size_t i = 0; i < req->n_images; i++)
        free(req->images[i]);
    for (size_t i = 0; i < req->n_texts; i++) {
        tok_encoding_free(&req->texts[i]);
        if (req->labels)
            free(req->labels[i]);
    }
    free(req->images), free(req->image_len), free(req->texts), free(req->labels);
    free(req->label_lens);
    free(req->image_emb), free(req->text_emb);
    memset(req, 0, sizeof *req);
}

int srv_clip_load_image(const model *m, srv_clip_req *req, size_t i, const srv_limits *lim,
                        uint8_t *crop, float *pixels)
{
    img_limits il = {.max_bytes = lim ? lim->max_image_bytes : 0,
                     .max_pixels = lim ? lim->max_image_pixels : 0};
    img_rgb8 img = {0};
    eng_err e = {0};
    int rc = img_decode(req->images[i], req->image_len[i], &il, &img, &e);
    if (!rc)
        rc = img_clip_preprocess(&img, &m->preproc, crop, pixels, &e);
    img_rgb8_free(&img);
    if (rc && !req->status) {
        req->status = rc == ENG_ETOOLONG ? 413 : rc == ENG_ENOMEM ? 503 : 422;
        snprintf(req->message, sizeof req->message, "image %zu: %.280s", i, e.msg);
    }
    return rc;
}

/* ---- answers -------------------------------------------------------------------- */

static float similarity(const model *m, const srv_clip_req *req, size_t img, size_t txt)
{
    const float *a = req->image_emb + img * (size_t)m->proj_dim;
    const float *b = req->text_emb + txt * (size_t)m->proj_dim;
    float dot = 0;
    for (int k = 0; k < m->proj_dim; k++)
        dot += a[k] * b[k];
    return expf(m->logit_scale) * dot;
}

static void format_zero_shot(const model *m, const srv_clip_req *req, srv_buf *b)
{
    size_t n = req->n_texts;
    float p[n], max = -INFINITY, sum = 0;
    for (size_t j = 0; j < n; j++) {
        p[j] = similarity(m, req, 0, j);
        max = p[j] > max ? p[j] : max;
    }
    for (size_t j = 0; j < n; j++)
        sum += p[j] = expf(p[j] - max);
    for (size_t j = 0; j < n; j++)
        p[j] /= sum;
    srv_json_ranked(b, p, (const char *const *)req->labels, req->label_lens, n);
}

static void format_matrix(const model *m, const srv_clip_req *req, bool per_image, srv_buf *b)
{
    size_t rows = per_image ? req->n_images : req->n_texts, cols = per_image ? req->n_texts : req->n_images;
    srv_buf_puts(b, "[");
    for (size_t i = 0; i < rows; i++) {
        srv_buf_puts(b, i ? ",[" : "[");
        for (size_t j = 0; j < cols; j++) {
            if (j)
                srv_buf_puts(b, ",");
            srv_json_num(b, per_image ? similarity(m, req, i, j) : similarity(m, req, j, i));
        }
        srv_buf_puts(b, "]");
    }
    srv_buf_puts(b, "]");
}

static void format_embeddings(const float *emb, size_t n, int d, srv_buf *b)
{
    srv_buf_puts(b, "[");
    for (size_t i = 0; i < n; i++) {
        srv_buf_puts(b, i ? ",[" : "[");
        for (int k = 0; k < d; k++) {
            if (k)
                srv_buf_puts(b, ",");
            srv_json_num(b, emb[i * (size_t)d + (size_t)k]);
        }
        srv_buf_puts(b, "]");
    }
    srv_buf_puts(b, "]");
}

void srv_clip_format(const model *m, const srv_clip_req *req, srv_reply *out)
{
    if (req->status) {
        srv_reply_detail(out, req->status, "%s", req->message);
        return;
    }
    srv_reply_json(out, 200);
    srv_buf *b = &out->body;
    switch (req->form) {
    case SRV_CLIP_ZERO_SHOT:
        format_zero_shot(m, req, b);
        break;
    case SRV_CLIP_LOGITS:
        srv_buf_puts(b, "{\"logits_per_image\":");
        format_matrix(m, req, true, b);
        srv_buf_puts(b, ",\"logits_per_text\":");
        format_matrix(m, req, false, b);
        srv_buf_puts(b, "}");
        break;
    case SRV_CLIP_EMBED_TEXT:
        format_embeddings(req->text_emb, req->n_texts, m->proj_dim, b);
        break;
    case SRV_CLIP_EMBED_IMAGE:
        format_embeddings(req->image_emb, req->n_images, m->proj_dim, b);
        break;
    }
}
