/* CLIP against the goldens: features, embeddings and logits of the golden
 * batch (images decoded and preprocessed as the daemon does), and batching
 * that changes nothing. */
#include <jansson.h>
#include <stdlib.h>

#include "models/clip.h"
#include "models/model.h"
#include "tests/unit/fixtures.h"
#include "tests/unit/test.h"

static void check_matrix(const float *got, json_t *want, int rows, int cols, double tol, const char *what)
{
    double worst = 0;
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++)
            worst = fmax(worst, fabs(got[i * cols + j] -
                                     json_number_value(json_array_get(json_array_get(want, (size_t)i), (size_t)j))));
    CHECK_MSG(worst <= tol, "%s: max error %g > %g", what, worst, tol);
}

MODEL_TEST(clip_golden_features_embeds_logits, FIXTURE_CLIP, FIXTURE_CLIP_GOLDEN)
{
    int n_img, P = m->proj_dim;
    float *px = fixture_clip_pixels(m, json_object_get(g, "image_files"), &n_img);
    int n_txt = (int)json_array_size(json_object_get(g, "texts"));
    float *img = malloc((size_t)n_img * P * 4), *txt = malloc((size_t)n_txt * P * 4);
    fixture_clip_embed_images(m, px, n_img, img);
    fixture_clip_embed_texts(m, json_object_get(g, "text_input_ids"), txt);
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
}

MODEL_TEST(clip_batched_images_equal_alone, FIXTURE_CLIP, FIXTURE_CLIP_GOLDEN)
{
    int n, P = m->proj_dim, S = m->image_size;
    float *px = fixture_clip_pixels(m, json_object_get(g, "image_files"), &n);
    float *all = malloc((size_t)n * P * 4), one[P];
    fixture_clip_embed_images(m, px, n, all);
    for (int i = 0; i < n; i++) {
        fixture_clip_embed_images(m, px + (size_t)i * 3 * S * S, 1, one);
        for (int k = 0; k < P; k++)
            CHECK_NEAR(all[i * P + k], one[k], 1e-5);
    }
    free(px), free(all);
}
