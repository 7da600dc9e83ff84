/* Every model family in f16, bf16 and int8 against the FP32 goldens, within
 * the bounds the quantized engine promises; the measured errors are printed
 * for the record. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "models/clip.h"
#include "models/model.h"
#include "tests/unit/test.h"

static const struct {
    eng_dtype dtype;
    double logit_tol; /* DistilBERT logits, absolute */
} dtypes[] = {{ENG_F16, 0.01}, {ENG_BF16, 0.05}, {ENG_I8, 0.1}};

static model *load_as(const char *dir, eng_dtype dt)
{
    model *m = NULL;
    model_load_opts opts = {.dtype = dt};
    eng_err err = {0};
    CHECK_MSG(model_load(dir, &opts, &m, &err) == 0, "load %s as %s: %s", dir, eng_dtypes[dt].name, err.msg);
    return m;
}

static double cosine(const float *a, const float *b, int n)
{
    double ab = 0, aa = 0, bb = 0;
    for (int i = 0; i < n; i++)
        ab += (double)a[i] * b[i], aa += (double)a[i] * a[i], bb += (double)b[i] * b[i];
    return ab / sqrt(aa * bb);
}

TEST(dtypes_distilbert_logits_and_labels)
{
    json_t *g = json_load_file("tests/fixtures/golden/distilbert.json", 0, NULL);
    json_t *cases = json_object_get(g, "cases");
    for (size_t d = 0; d < sizeof dtypes / sizeof *dtypes; d++) {
        model *m = load_as("tests/fixtures/distilbert-sst2-tiny", dtypes[d].dtype);
        if (!m)
            continue;
        CHECK_EQ_INT(m->dtype, dtypes[d].dtype);
        double worst = 0;
        json_t *c;
        size_t i;
        json_array_foreach(cases, i, c) {
            const char *text = json_string_value(json_object_get(c, "text"));
            tok_encoding e;
            tok_encoding_init(&e);
            tok_encode_opts o = {.add_special = true, .max_len = 512};
            eng_err err = {0};
            tok_encode(m->tok, text, strlen(text), &o, &e, &err);
            int off[2] = {0, (int)e.n};
            model_batch b = {.ids = e.ids, .seq_off = off, .n_seq = 1};
            eng_arena a;
            eng_arena_init(&a);
            eng_arena_reserve(&a, m->ops->scratch_size(m, (int)e.n, (int)e.n));
            float logits[2];
            CHECK(m->ops->classify(m, &b, &a, logits, &err) == 0);
            json_t *want = json_object_get(c, "logits");
            double w0 = json_real_value(json_array_get(want, 0)), w1 = json_real_value(json_array_get(want, 1));
            worst = fmax(worst, fmax(fabs(logits[0] - w0), fabs(logits[1] - w1)));
            if (fabs(w0 - w1) > 0.2)
                CHECK_MSG((logits[1] > logits[0]) == (w1 > w0), "%s: label flipped on %s",
                          eng_dtypes[m->dtype].name, json_string_value(json_object_get(c, "id")));
            eng_arena_free(&a);
            tok_encoding_free(&e);
        }
        CHECK_MSG(worst <= dtypes[d].logit_tol, "%s: logit error %g > %g", eng_dtypes[m->dtype].name,
                  worst, dtypes[d].logit_tol);
        printf("     distilbert %-4s max |logit error| %.5f\n", eng_dtypes[m->dtype].name, worst);
        model_free(m);
    }
    json_decref(g);
}

TEST(dtypes_gpt2_logits_and_greedy)
{
    json_t *g = json_load_file("tests/fixtures/golden/gpt2.json", 0, NULL);
    for (size_t d = 0; d < sizeof dtypes / sizeof *dtypes; d++) {
        model *m = load_as("tests/fixtures/gpt2-tiny", dtypes[d].dtype);
        if (!m)
            continue;
        int V = m->vocab_size;
        float *logits = malloc((size_t)V * sizeof *logits);
        double worst_cos = 1;
        json_t *c;
        size_t i;
        json_array_foreach(json_object_get(g, "greedy"), i, c) {
            json_t *prompt = json_object_get(c, "input_ids"), *want = json_object_get(c, "generated_ids");
            int n = (int)json_array_size(prompt), cap = n + 6;
            int32_t ids[64];
            for (int k = 0; k < n; k++)
                ids[k] = (int32_t)json_integer_value(json_array_get(prompt, (size_t)k));
            model_kv kv = {.data = malloc(m->ops->kv_floats(m, cap) * sizeof(float)), .capacity = cap};
            model_kv *kvp = &kv;
            eng_arena a;
            eng_arena_init(&a);
            eng_arena_reserve(&a, m->ops->scratch_size(m, n, cap));
            eng_err err = {0};
            const int32_t *feed = ids;
            int n_feed = n;
            for (int step = 0; step < 5; step++) {
                int off[2] = {0, n_feed};
                model_batch b = {.ids = feed, .seq_off = off, .n_seq = 1};
                CHECK(m->ops->generate_step(m, &b, &kvp, &a, logits, &err) == 0);
                if (step == 0) {
                    char path[256];
                    json_t *f = json_array_get(json_object_get(g, "forward"), i);
                    snprintf(path, sizeof path, "tests/fixtures/golden/%s",
                             json_string_value(json_object_get(f, "last_logits_file")));
                    float *gold = (float *)test_read_file(path, NULL);
                    if (gold && !strcmp(json_string_value(json_object_get(f, "prompt")),
                                        json_string_value(json_object_get(c, "prompt"))))
                        worst_cos = fmin(worst_cos, cosine(logits, gold, V));
                    free(gold);
                }
                int best = 0;
                for (int v = 1; v < V; v++)
                    best = logits[v] > logits[best] ? v : best;
                /* A step whose FP32 top-2 margin is within the dtype's logit
                 * error is a tie the quantisation may break either way; the
                 * sequences may part there, so the comparison stops. */
                double margin = json_real_value(json_object_get(
                    json_array_get(json_object_get(c, "steps"), (size_t)step), "margin_to_second"));
                if (margin <= dtypes[d].logit_tol)
                    break;
                CHECK_MSG(best == json_integer_value(json_array_get(want, (size_t)step)),
                          "%s: greedy step %d of %s differs", eng_dtypes[m->dtype].name, step,
                          json_string_value(json_object_get(c, "prompt")));
                ids[n + step] = best;
                feed = &ids[n + step];
                n_feed = 1;
            }
            eng_arena_free(&a);
            free(kv.data);
        }
        CHECK_MSG(worst_cos >= 0.99, "%s: last-logits cosine %g", eng_dtypes[m->dtype].name, worst_cos);
        printf("     gpt2       %-4s min last-logits cosine %.6f\n", eng_dtypes[m->dtype].name, worst_cos);
        free(logits);
        model_free(m);
    }
    json_decref(g);
}

static void clip_embeddings(const model *m, json_t *g, float *img, float *txt)
{
    json_t *files = json_object_get(g, "image_files"), *ids = json_object_get(g, "text_input_ids");
    int S = m->image_size, n_img = (int)json_array_size(files), n_txt = (int)json_array_size(ids);
    float *px = malloc((size_t)n_img * 3 * S * S * sizeof *px);
    uint8_t *crop = malloc((size_t)S * S * 3);
    for (int i = 0; i < n_img; i++) {
        char path[256];
        const char *f = json_string_value(json_array_get(files, (size_t)i));
        const char *jpg = strstr(f, ".jpg");
        if (jpg)
            snprintf(path, sizeof path, "tests/fixtures/golden/%.*s.decoded.png", (int)(jpg - f), f);
        else
            snprintf(path, sizeof path, "tests/fixtures/golden/%s", f);
        size_t len;
        uint8_t *data = (uint8_t *)test_read_file(path, &len);
        img_rgb8 im = {0};
        eng_err err = {0};
        if (data && !img_decode(data, len, NULL, &im, &err))
            img_clip_preprocess(&im, &m->preproc, crop, px + (size_t)i * 3 * S * S, &err);
        img_rgb8_free(&im);
        free(data);
    }
    eng_arena a;
    eng_arena_init(&a);
    eng_arena_reserve(&a, m->ops->image_scratch_size(m, n_img) + m->ops->scratch_size(m, n_txt * 77, 77));
    eng_err err = {0};
    CHECK(m->ops->embed_image(m, px, n_img, &a, img, &err) == 0);
    int32_t buf[77 * 16];
    int off[17], T = 0;
    off[0] = 0;
    for (int s = 0; s < n_txt; s++) {
        json_t *row = json_array_get(ids, (size_t)s);
        for (size_t k = 0; k < json_array_size(row); k++) {
            int32_t id = (int32_t)json_integer_value(json_array_get(row, k));
            if (k > 0 && id == 49407 && buf[T - 1] == 49407)
                break;
            buf[T++] = id;
        }
        off[s + 1] = T;
    }
    model_batch b = {.ids = buf, .seq_off = off, .n_seq = n_txt};
    CHECK(m->ops->embed_text(m, &b, &a, txt, &err) == 0);
    clip_normalize(img, n_img, m->proj_dim);
    clip_normalize(txt, n_txt, m->proj_dim);
    eng_arena_free(&a);
    free(px), free(crop);
}

/* The zero-shot golden: its image against its hypothesis texts, ranked as
 * the FP32 pipeline ranks them. */
static bool zero_shot_order_kept(const model *m, json_t *g)
{
    json_t *z = json_object_get(g, "zero_shot");
    json_t *doc = json_pack("{s:[s], s:O}", "image_files", json_string_value(json_object_get(z, "image")),
                            "text_input_ids", json_object_get(z, "text_input_ids"));
    int P = m->proj_dim, n = (int)json_array_size(json_object_get(z, "text_input_ids"));
    float *img = malloc((size_t)P * 4), *txt = malloc((size_t)n * P * 4);
    clip_embeddings(m, doc, img, txt);
    bool kept = true;
    json_t *order = json_object_get(z, "pipeline_output"), *labels = json_object_get(z, "candidate_labels");
    for (size_t r = 0; r + 1 < json_array_size(order); r++) {
        const char *a = json_string_value(json_object_get(json_array_get(order, r), "label"));
        const char *b = json_string_value(json_object_get(json_array_get(order, r + 1), "label"));
        int ia = 0, ib = 0;
        for (int j = 0; j < n; j++) {
            const char *l = json_string_value(json_array_get(labels, (size_t)j));
            ia = strcmp(l, a) == 0 ? j : ia;
            ib = strcmp(l, b) == 0 ? j : ib;
        }
        kept &= cosine(img, txt + (size_t)ia * P, P) >= cosine(img, txt + (size_t)ib * P, P);
    }
    free(img), free(txt);
    json_decref(doc);
    return kept;
}

TEST(dtypes_clip_embeddings_and_ranking)
{
    json_t *g = json_load_file("tests/fixtures/golden/clip.json", 0, NULL);
    for (size_t d = 0; d < sizeof dtypes / sizeof *dtypes; d++) {
        model *m = load_as("tests/fixtures/clip-tiny", dtypes[d].dtype);
        if (!m)
            continue;
        int P = m->proj_dim, n_img = (int)json_array_size(json_object_get(g, "image_files"));
        int n_txt = (int)json_array_size(json_object_get(g, "texts"));
        float *img = malloc((size_t)n_img * P * 4), *txt = malloc((size_t)n_txt * P * 4), want[64];
        clip_embeddings(m, g, img, txt);
        double worst = 1;
        for (int i = 0; i < n_img + n_txt; i++) {
            json_t *row = json_array_get(json_object_get(g, i < n_img ? "image_embeds" : "text_embeds"),
                                         (size_t)(i < n_img ? i : i - n_img));
            for (int k = 0; k < P; k++)
                want[k] = (float)json_real_value(json_array_get(row, (size_t)k));
            worst = fmin(worst, cosine(i < n_img ? img + (size_t)i * P : txt + (size_t)(i - n_img) * P, want, P));
        }
        CHECK_MSG(worst >= 0.99, "%s: embedding cosine %g", eng_dtypes[m->dtype].name, worst);
        CHECK_MSG(zero_shot_order_kept(m, g), "%s: the zero-shot ranking changed",
                  eng_dtypes[m->dtype].name);
        printf("     clip       %-4s min embedding cosine %.6f\n", eng_dtypes[m->dtype].name, worst);
        free(img), free(txt);
        model_free(m);
    }
    json_decref(g);
}
