/* CLIP against the goldens: features, embeddings and logits of the golden
 * batch (images decoded and preprocessed as the daemon does), and batching
 * that changes nothing. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "models/clip.h"
#include "models/model.h"
#include "tests/unit/test.h"

#define TINY "tests/fixtures/clip-tiny"
#define GOLDEN "tests/fixtures/golden/clip.json"

static model *load_tiny(void)
{
    model *m = NULL;
    eng_err err = {0};
    int rc = model_load(TINY, NULL, &m, &err);
    CHECK_MSG(rc == 0, "load: %s", err.msg);
    return rc ? NULL : m;
}

/* Decodes and preprocesses the golden images into pixels (n, 3, S, S). */
static float *golden_pixels(const model *m, json_t *files, int *n)
{
    int S = m->image_size;
    *n = (int)json_array_size(files);
    float *px = malloc((size_t)*n * 3 * S * S * sizeof *px);
    uint8_t *crop = malloc((size_t)S * S * 3);
    for (int i = 0; i < *n; i++) {
        char path[256];
        const char *file = json_string_value(json_array_get(files, (size_t)i));
        /* JPEG decoders differ by a level: preprocess the golden decoded pixels. */
        const char *jpg = strstr(file, ".jpg");
        if (jpg)
            snprintf(path, sizeof path, "tests/fixtures/golden/%.*s.decoded.png", (int)(jpg - file), file);
        else
            snprintf(path, sizeof path, "tests/fixtures/golden/%s", file);
        size_t len;
        uint8_t *data = (uint8_t *)test_read_file(path, &len);
        img_rgb8 img = {0};
        eng_err err = {0};
        CHECK_MSG(data && img_decode(data, len, NULL, &img, &err) == 0, "%s: %s", path, err.msg);
        CHECK(img_clip_preprocess(&img, &m->preproc, crop, px + (size_t)i * 3 * S * S, &err) == 0);
        img_rgb8_free(&img);
        free(data);
    }
    free(crop);
    return px;
}

static void embed_texts(const model *m, json_t *ids, float *out)
{
    int n = (int)json_array_size(ids), off[n + 1], T = 0;
    int32_t buf[n * 77];
    off[0] = 0;
    for (int s = 0; s < n; s++) {
        json_t *row = json_array_get(ids, (size_t)s);
        for (size_t k = 0; k < json_array_size(row); k++) {
            int32_t id = (int32_t)json_integer_value(json_array_get(row, k));
            /* padding=True pads with the end-of-text id; the pooled position is
             * the first one, so padding changes nothing: drop it. */
            if (k > 0 && id == 49407 && (int32_t)json_integer_value(json_array_get(row, k - 1)) == 49407)
                break;
            buf[T++] = id;
        }
        off[s + 1] = T;
    }
    eng_arena a;
    eng_arena_init(&a);
    CHECK(eng_arena_reserve(&a, m->ops->scratch_size(m, T, 77)) == 0);
    model_batch b = {.ids = buf, .seq_off = off, .n_seq = n};
    eng_err err = {0};
    CHECK_MSG(m->ops->embed_text(m, &b, &a, out, &err) == 0, "%s", err.msg);
    eng_arena_free(&a);
}

static void embed_images(const model *m, const float *px, int n, float *out)
{
    eng_arena a;
    eng_arena_init(&a);
    CHECK(eng_arena_reserve(&a, m->ops->image_scratch_size(m, n)) == 0);
    eng_err err = {0};
    CHECK_MSG(m->ops->embed_image(m, px, n, &a, out, &err) == 0, "%s", err.msg);
    eng_arena_free(&a);
}

static void check_matrix(const float *got, json_t *want, int rows, int cols, double tol, const char *what)
{
    double worst = 0;
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++)
            worst = fmax(worst, fabs(got[i * cols + j] -
                                     json_number_value(json_array_get(json_array_get(want, (size_t)i), (size_t)j))));
    CHECK_MSG(worst <= tol, "%s: max error %g > %g", what, worst, tol);
}

TEST(clip_golden_features_embeds_logits)
{
    model *m = load_tiny();
    json_t *g = json_load_file(GOLDEN, 0, NULL);
    if (!m || !g)
        return;
    int n_img, P = m->proj_dim;
    float *px = golden_pixels(m, json_object_get(g, "image_files"), &n_img);
    int n_txt = (int)json_array_size(json_object_get(g, "texts"));
    float *img = malloc((size_t)n_img * P * 4), *txt = malloc((size_t)n_txt * P * 4);
    embed_images(m, px, n_img, img);
    embed_texts(m, json_object_get(g, "text_input_ids"), txt);
    check_matrix(img, json_object_get(g, "image_features"), n_img, P, 1e-4, "image_features");
    check_matrix(txt, json_object_get(g, "text_features"), n_txt, P, 1e-4, "text_features");
    clip_normalize(img, n_img, P);
    clip_normalize(txt, n_txt, P);
    check_matrix(img, json_object_get(g, "image_embeds"), n_img, P, 1e-4, "image_embeds");
    check_matrix(txt, json_object_get(g, "text_embeds"), n_txt, P, 1e-4, "text_embeds");
    CHECK_NEAR(m->logit_scale, json_number_value(json_object_get(g, "logit_scale")), 1e-6);
    float scale = expf(m->logit_scale), *logits = malloc((size_t)n_img * n_txt * 4);
    for (int i = 0; i < n_img; i++)
        for (int j = 0; j < n_txt; j++) {
            double dot = 0;
            for (int k = 0; k < P; k++)
                dot += img[i * P + k] * txt[j * P + k];
            logits[i * n_txt + j] = scale * (float)dot;
        }
    double tol = 1e-4 * fmax(1.0, json_number_value(json_object_get(g, "logit_scale_exp")) / 10);
    check_matrix(logits, json_object_get(g, "logits_per_image"), n_img, n_txt, tol, "logits_per_image");
    free(px), free(img), free(txt), free(logits);
    json_decref(g);
    model_free(m);
}

TEST(clip_batched_images_equal_alone)
{
    model *m = load_tiny();
    json_t *g = json_load_file(GOLDEN, 0, NULL);
    if (!m || !g)
        return;
    int n, P = m->proj_dim, S = m->image_size;
    float *px = golden_pixels(m, json_object_get(g, "image_files"), &n);
    float *all = malloc((size_t)n * P * 4), one[P];
    embed_images(m, px, n, all);
    for (int i = 0; i < n; i++) {
        embed_images(m, px + (size_t)i * 3 * S * S, 1, one);
        for (int k = 0; k < P; k++)
            CHECK_NEAR(all[i * P + k], one[k], 1e-5);
    }
    free(px), free(all);
    json_decref(g);
    model_free(m);
}
