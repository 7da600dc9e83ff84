/* The model tests' shared fixtures: see fixtures.h. */
#include "tests/unit/fixtures.h"

#include <stdlib.h>
#include <string.h>

/* ---- Loading --------------------------------------------------------------- */

model *fixture_model_load(const char *dir, eng_dtype dtype)
{
    model *m = NULL;
    model_load_opts opts = {.dtype = dtype};
    eng_err err = {0};
    int rc = model_load(dir, &opts, &m, &err);
    CHECK_MSG(rc == 0, "load %s as %s: %s", dir, eng_dtypes[dtype].name, err.msg);
    return rc ? NULL : m;
}

json_t *fixture_json_load(const char *path)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    CHECK_MSG(root, "%s: %s", path, jerr.text);
    return root;
}

void *fixture_golden_read(const char *file, size_t *len)
{
    char path[512];
    snprintf(path, sizeof path, FIXTURE_GOLDEN_DIR "%s", file);
    return test_read_file(path, len);
}

int fixture_json_ids(const json_t *ids, int32_t *out, int cap)
{
    int n = 0;
    for (; n < cap && (size_t)n < json_array_size(ids); n++)
        out[n] = (int32_t)json_integer_value(json_array_get(ids, (size_t)n));
    return n;
}

void fixture_run(const char *dir, const char *golden, fixture_body body)
{
    model *m = fixture_model_load(dir, ENG_F32);
    json_t *g = golden ? fixture_json_load(golden) : NULL;
    if (m && (g || !golden))
        body(m, g);
    json_decref(g);
    model_free(m);
}

/* ---- DistilBERT: classification ------------------------------------------- */

void fixture_encode_text(const model *m, const char *text, tok_encoding *enc)
{
    tok_encode_opts opts = {.add_special = true, .max_len = 512};
    eng_err err = {0};
    tok_encoding_init(enc);
    CHECK_MSG(tok_encode(m->tok, text, strlen(text), &opts, enc, &err) == 0, "encode \"%s\": %s",
              text, err.msg);
}

void fixture_classify(const model *m, const tok_encoding *enc, int n, float *logits)
{
    int off[n + 1], max_len = 0;
    off[0] = 0;
    for (int i = 0; i < n; i++) {
        off[i + 1] = off[i] + (int)enc[i].n;
        max_len = (int)enc[i].n > max_len ? (int)enc[i].n : max_len;
    }
    int32_t *ids = malloc((size_t)off[n] * sizeof *ids);
    for (int i = 0; i < n; i++)
        memcpy(ids + off[i], enc[i].ids, enc[i].n * sizeof *ids);
    eng_arena a;
    eng_arena_init(&a);
    CHECK(eng_arena_reserve(&a, m->ops->scratch_size(m, off[n], max_len)) == 0);
    model_batch b = {.ids = ids, .seq_off = off, .n_seq = n};
    eng_err err = {0};
    CHECK_MSG(m->ops->classify(m, &b, &a, logits, &err) == 0, "classify: %s", err.msg);
    eng_arena_free(&a);
    free(ids);
}

/* ---- GPT-2: generation ----------------------------------------------------- */

void fixture_kv_init(const model *m, model_kv *kv, int capacity)
{
    memset(kv, 0, sizeof *kv);
    kv->capacity = capacity;
    kv->data = malloc(m->ops->kv_floats(m, capacity) * sizeof(float));
}

void fixture_generate_step(const model *m, model_kv *const *kv, const int32_t *const *new_ids,
                           const int *n_new, int n, float *logits)
{
    int off[n + 1], T = 0, max_ctx = 0;
    off[0] = 0;
    for (int i = 0; i < n; i++) {
        off[i + 1] = (T += n_new[i]);
        max_ctx = kv[i]->len + n_new[i] > max_ctx ? kv[i]->len + n_new[i] : max_ctx;
    }
    int32_t ids[T ? T : 1];
    for (int i = 0; i < n; i++)
        memcpy(ids + off[i], new_ids[i], (size_t)n_new[i] * sizeof *ids);
    eng_arena a;
    eng_arena_init(&a);
    CHECK(eng_arena_reserve(&a, m->ops->scratch_size(m, T, max_ctx)) == 0);
    model_batch b = {.ids = ids, .seq_off = off, .n_seq = n};
    eng_err err = {0};
    CHECK_MSG(m->ops->generate_step(m, &b, kv, &a, logits, &err) == 0, "step: %s", err.msg);
    eng_arena_free(&a);
}

void fixture_seq_start(const model *m, fixture_seq *s, const json_t *prompt_ids, int capacity,
                       float *logits)
{
    model_kv *kv = &s->kv;
    const int32_t *feed = s->ids;
    s->n = fixture_json_ids(prompt_ids, s->ids, (int)(sizeof s->ids / sizeof *s->ids));
    fixture_kv_init(m, kv, capacity);
    fixture_generate_step(m, &kv, &feed, &s->n, 1, logits);
}

void fixture_seq_feed(const model *m, fixture_seq *s, int32_t id, float *logits)
{
    model_kv *kv = &s->kv;
    const int32_t *feed = &s->ids[s->n];
    int one = 1;
    bool room = s->n < (int)(sizeof s->ids / sizeof *s->ids);
    CHECK_MSG(room, "a sequence of %d tokens is full", s->n);
    if (!room)
        return;
    s->ids[s->n++] = id;
    fixture_generate_step(m, &kv, &feed, &one, 1, logits);
}

float *fixture_last_logits_read(const json_t *f, size_t *len)
{
    return fixture_golden_read(json_string_value(json_object_get(f, "last_logits_file")), len);
}

int32_t fixture_argmax(const float *x, int n)
{
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        best = x[i] > x[best] ? i : best;
    return best;
}

/* ---- CLIP: image and text embeddings --------------------------------------- */

/* Reads golden image i of files and preprocesses it into pixels (3, S, S). */
static void clip_golden_image(const model *m, const json_t *files, int i, uint8_t *crop,
                              float *pixels)
{
    char name[256];
    const char *file = json_string_value(json_array_get(files, (size_t)i));
    const char *jpg = strstr(file, ".jpg");
    if (jpg)
        snprintf(name, sizeof name, "%.*s.decoded.png", (int)(jpg - file), file);
    else
        snprintf(name, sizeof name, "%s", file);
    size_t len;
    uint8_t *data = fixture_golden_read(name, &len);
    img_rgb8 img = {0};
    eng_err err = {0};
    CHECK_MSG(data && img_decode(data, len, NULL, &img, &err) == 0, "%s: %s", name, err.msg);
    CHECK(img_clip_preprocess(&img, &m->preproc, crop, pixels, &err) == 0);
    img_rgb8_free(&img);
    free(data);
}

float *fixture_clip_pixels(const model *m, const json_t *files, int *n)
{
    int S = m->image_size;
    *n = (int)json_array_size(files);
    float *pixels = malloc((size_t)*n * 3 * S * S * sizeof *pixels);
    uint8_t *crop = malloc((size_t)S * S * 3);
    for (int i = 0; i < *n; i++)
        clip_golden_image(m, files, i, crop, pixels + (size_t)i * 3 * S * S);
    free(crop);
    return pixels;
}

void fixture_clip_embed_images(const model *m, const float *pixels, int n, float *out)
{
    eng_arena a;
    eng_arena_init(&a);
    CHECK(eng_arena_reserve(&a, m->ops->image_scratch_size(m, n)) == 0);
    eng_err err = {0};
    CHECK_MSG(m->ops->embed_image(m, pixels, n, &a, out, &err) == 0, "embed_image: %s", err.msg);
    eng_arena_free(&a);
}

void fixture_clip_embed_texts(const model *m, const json_t *ids, float *out)
{
    enum { EOT = 49407, MAX_LEN = 77 };
    int n = (int)json_array_size(ids), off[n + 1], T = 0;
    int32_t buf[n * MAX_LEN + 1];
    off[0] = 0;
    for (int s = 0; s < n; s++) {
        json_t *row = json_array_get(ids, (size_t)s);
        for (size_t k = 0; k < json_array_size(row) && k < MAX_LEN; k++) {
            int32_t id = (int32_t)json_integer_value(json_array_get(row, k));
            /* padding=True pads with the end-of-text id; the pooled position is
             * the first one, so padding changes nothing: drop it. */
            if (k > 0 && id == EOT && buf[T - 1] == EOT)
                break;
            buf[T++] = id;
        }
        off[s + 1] = T;
    }
    eng_arena a;
    eng_arena_init(&a);
    CHECK(eng_arena_reserve(&a, m->ops->scratch_size(m, T, MAX_LEN)) == 0);
    model_batch b = {.ids = buf, .seq_off = off, .n_seq = n};
    eng_err err = {0};
    CHECK_MSG(m->ops->embed_text(m, &b, &a, out, &err) == 0, "embed_text: %s", err.msg);
    eng_arena_free(&a);
}
