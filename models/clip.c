/* CLIP as transformers' CLIPModel.
 *
 * Vision: 32x32 patches embedded by one matrix multiply (the stride-32
 * convolution), a class token in front, learned positions, pre_layrnorm,
 * pre-LN encoder layers, post_layernorm of the class token,
 * visual_projection. Text: token + position embeddings, the same kind of
 * encoder with a causal mask, final_layer_norm of the end-of-text token,
 * text_projection. Both towers share clip_encoder_forward. */
#include "models/clip.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/attention.h"
#include "engine/linear.h"
#include "engine/ops.h"
#include "engine/weights.h"
#include "models/tok_bpe.h"

typedef struct clip_layer {
    const float *ln1_gamma, *ln1_beta; /* (dim) */
    eng_linear q, k, v, out;           /* (dim, dim) */
    const float *ln2_gamma, *ln2_beta; /* (dim) */
    eng_linear fc1;                    /* (inner, dim) */
    eng_linear fc2;                    /* (dim, inner) */
} clip_layer;

typedef struct clip_tower {
    int dim, inner, n_layers, n_heads, max_pos;
    float eps;
    eng_activation_fn activation;
    clip_layer *layers;                    /* (n_layers) */
    const float *pos_emb;                  /* (max_pos, dim) */
    const float *final_gamma, *final_beta; /* final_layer_norm / post_layernorm (dim) */
    eng_linear projection;                 /* (proj_dim, dim), no bias */
} clip_tower;

typedef struct clip {
    model base;
    eng_weights weights;
    clip_tower text, vision;
    int vocab, patch, grid;                /* grid x grid patches */
    int32_t eos_id;                        /* text_config.eos_token_id */
    const float *token_emb;                /* (vocab, text.dim) */
    const float *class_emb;                /* (vision.dim) */
    eng_linear patch_embed;                /* (3 * patch * patch) -> (vision.dim), no bias */
    const float *pre_gamma, *pre_beta;     /* vision pre_layrnorm (vision.dim) */
} clip;

void clip_normalize(float *x, int n, int d)
{
    for (int i = 0; i < n; i++) {
        float *row = x + (size_t)i * d;
        double ss = 0;
        for (int j = 0; j < d; j++)
            ss += (double)row[j] * row[j];
        float inv = ss > 0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
        for (int j = 0; j < d; j++)
            row[j] *= inv;
    }
}

/* ---- the shared encoder ------------------------------------------------------- */

/* Attention scores live in the engine's per-thread scratch, not here. */
static size_t encoder_scratch(const clip_tower *t, size_t T)
{
    return 6 * eng_arena_floats_size(T * t->dim) + eng_arena_floats_size(T * t->inner);
}

/* x (T, dim): packed sequences, in place through every pre-LN layer. */
static int clip_encoder_forward(const clip_tower *t, float *x, const int *seq_off, int n_seq,
                                bool causal, eng_arena *a)
{
    int T = seq_off[n_seq];
    size_t n = (size_t)T * t->dim;
    float *h = eng_arena_floats(a, n), *q = eng_arena_floats(a, n), *k = eng_arena_floats(a, n);
    float *v = eng_arena_floats(a, n), *ctx = eng_arena_floats(a, n);
    float *mlp = eng_arena_floats(a, (size_t)T * t->inner);
    if (!mlp)
        return ENG_ENOMEM;
    for (int l = 0; l < t->n_layers; l++) {
        const clip_layer *L = &t->layers[l];
        eng_layernorm(h, x, T, t->dim, L->ln1_gamma, L->ln1_beta, t->eps);
        eng_linear_forward(&L->q, h, T, q);
        eng_linear_forward(&L->k, h, T, k);
        eng_linear_forward(&L->v, h, T, v);
        eng_self_attention(q, k, v, t->dim, seq_off, n_seq, t->n_heads, t->dim / t->n_heads, causal,
                           ctx);
        eng_linear_forward(&L->out, ctx, T, h);
        eng_add(x, h, n);
        eng_layernorm(h, x, T, t->dim, L->ln2_gamma, L->ln2_beta, t->eps);
        eng_linear_forward(&L->fc1, h, T, mlp);
        t->activation(mlp, (size_t)T * t->inner);
        eng_linear_forward(&L->fc2, mlp, T, h);
        eng_add(x, h, n);
    }
    return 0;
}

/* pooled (n, dim) rows -> final LayerNorm -> projection -> out (n, proj). */
static void project(const clip_tower *t, float *pooled, int n, float *out)
{
    eng_layernorm(pooled, pooled, n, t->dim, t->final_gamma, t->final_beta, t->eps);
    eng_linear_forward(&t->projection, pooled, n, out);
}

/* ---- text ---------------------------------------------------------------------- */

/* The pooled position: transformers' legacy rule (text_config.eos_token_id
 * == 2) takes the highest id, which is the end-of-text token in CLIP's
 * vocabulary; otherwise the first eos_token_id. */
static int pool_index(const clip *c, const int32_t *ids, int n)
{
    int best = 0;
    for (int i = 0; i < n; i++) {
        if (c->eos_id != 2 && ids[i] == c->eos_id)
            return i;
        if (ids[i] > ids[best])
            best = i;
    }
    return best;
}

static size_t clip_scratch_size(const model *m, int max_tokens, int max_len)
{
    const clip *c = (const clip *)m;
    (void)max_len;
    return encoder_scratch(&c->text, (size_t)max_tokens) +
           eng_arena_floats_size((size_t)max_tokens * c->text.dim) * 2;
}

static int clip_embed_text(const model *m, const model_batch *b, eng_arena *a, float *out,
                           eng_err *err)
{
    const clip *c = (const clip *)m;
    const clip_tower *t = &c->text;
    int T = model_batch_tokens(b);
    for (int s = 0; s < b->n_seq; s++) {
        int len = b->seq_off[s + 1] - b->seq_off[s];
        if (len < 1 || len > t->max_pos)
            return eng_err_set(err, ENG_ETOOLONG, "text of %d tokens: the model takes 1 to %d", len,
                               t->max_pos);
    }
    for (int i = 0; i < T; i++)
        if (b->ids[i] < 0 || b->ids[i] >= c->vocab)
            return eng_err_set(err, ENG_EINVAL, "token id %d outside the vocabulary", b->ids[i]);
    eng_arena_reset(a);
    float *x = eng_arena_floats(a, (size_t)T * t->dim);
    float *pooled = eng_arena_floats(a, (size_t)b->n_seq * t->dim);
    if (!pooled)
        return eng_err_set(err, ENG_ENOMEM, "texts of %d tokens exceed the reserved scratch", T);
    for (int s = 0; s < b->n_seq; s++)
        for (int i = b->seq_off[s]; i < b->seq_off[s + 1]; i++) {
            const float *w = c->token_emb + (size_t)b->ids[i] * t->dim;
            const float *p = t->pos_emb + (size_t)(i - b->seq_off[s]) * t->dim;
            for (int j = 0; j < t->dim; j++)
                x[(size_t)i * t->dim + j] = w[j] + p[j];
        }
    if (clip_encoder_forward(t, x, b->seq_off, b->n_seq, true, a))
        return eng_err_set(err, ENG_ENOMEM, "texts of %d tokens exceed the reserved scratch", T);
    for (int s = 0; s < b->n_seq; s++) {
        int r0 = b->seq_off[s];
        int at = r0 + pool_index(c, b->ids + r0, b->seq_off[s + 1] - r0);
        memcpy(pooled + (size_t)s * t->dim, x + (size_t)at * t->dim, (size_t)t->dim * sizeof *x);
    }
    project(t, pooled, b->n_seq, out);
    return 0;
}

/* ---- vision --------------------------------------------------------------------- */

static size_t clip_image_scratch_size(const model *m, int n)
{
    const clip *c = (const clip *)m;
    size_t tokens = (size_t)n * (c->grid * c->grid + 1), pd = 3 * (size_t)c->patch * c->patch;
    return encoder_scratch(&c->vision, tokens) +
           eng_arena_floats_size(tokens * c->vision.dim) +         /* x */
           eng_arena_floats_size((size_t)n * c->grid * c->grid * pd) + /* patches */
           eng_arena_floats_size((size_t)n * c->grid * c->grid * c->vision.dim) +
           eng_arena_floats_size((size_t)n * c->vision.dim) +       /* pooled */
           eng_arena_floats_size((size_t)n + 1);                    /* offsets */
}

/* patches (n * grid², 3 * patch²): each row one patch, in the (channel, y, x)
 * order of the convolution's weight. */
static void extract_patches(const clip *c, const float *pixels, int n, float *patches)
{
    int P = c->patch, S = c->base.image_size, G = c->grid;
    size_t pd = 3 * (size_t)P * P;
    for (int img = 0; img < n; img++)
        for (int gy = 0; gy < G; gy++)
            for (int gx = 0; gx < G; gx++) {
                float *row = patches + ((size_t)img * G * G + (size_t)gy * G + gx) * pd;
                for (int ch = 0; ch < 3; ch++)
                    for (int y = 0; y < P; y++)
                        memcpy(row + ((size_t)ch * P + y) * P,
                               pixels + (((size_t)img * 3 + ch) * S + (size_t)gy * P + y) * S + (size_t)gx * P,
                               (size_t)P * sizeof *row);
            }
}

static int clip_embed_image(const model *m, const float *pixels, int n, eng_arena *a, float *out,
                            eng_err *err)
{
    const clip *c = (const clip *)m;
    const clip_tower *t = &c->vision;
    int G2 = c->grid * c->grid, L = G2 + 1, T = n * L;
    size_t pd = 3 * (size_t)c->patch * c->patch;
    eng_arena_reset(a);
    float *x = eng_arena_floats(a, (size_t)T * t->dim);
    float *patches = eng_arena_floats(a, (size_t)n * G2 * pd);
    float *emb = eng_arena_floats(a, (size_t)n * G2 * t->dim);
    float *pooled = eng_arena_floats(a, (size_t)n * t->dim);
    int *off = (int *)eng_arena_floats(a, (size_t)n + 1);
    if (!off)
        return eng_err_set(err, ENG_ENOMEM, "%d images exceed the reserved scratch", n);
    extract_patches(c, pixels, n, patches);
    eng_linear_forward(&c->patch_embed, patches, n * G2, emb);
    for (int img = 0; img < n; img++) {
        off[img] = img * L;
        for (int p = 0; p < L; p++) {
            float *row = x + ((size_t)img * L + p) * t->dim;
            const float *src = p == 0 ? c->class_emb : emb + ((size_t)img * G2 + p - 1) * t->dim;
            const float *pos = t->pos_emb + (size_t)p * t->dim;
            for (int j = 0; j < t->dim; j++)
                row[j] = src[j] + pos[j];
        }
    }
    off[n] = T;
    eng_layernorm(x, x, T, t->dim, c->pre_gamma, c->pre_beta, t->eps);
    if (clip_encoder_forward(t, x, off, n, false, a))
        return eng_err_set(err, ENG_ENOMEM, "%d images exceed the reserved scratch", n);
    for (int img = 0; img < n; img++)
        memcpy(pooled + (size_t)img * t->dim, x + (size_t)img * L * t->dim, (size_t)t->dim * sizeof *x);
    project(t, pooled, n, out);
    return 0;
}

/* ---- loading ---------------------------------------------------------------------- */

static eng_linear *block_linear(clip_tower *t, int i)
{
    clip_layer *L = &t->layers[i / 6];
    eng_linear *all[6] = {&L->q, &L->k, &L->v, &L->out, &L->fc1, &L->fc2};
    return all[i % 6];
}

static void clip_free(model *m)
{
    clip *c = (clip *)m;
    for (int i = 0; c->text.layers && i < 6 * c->text.n_layers; i++)
        eng_linear_free(block_linear(&c->text, i));
    for (int i = 0; c->vision.layers && i < 6 * c->vision.n_layers; i++)
        eng_linear_free(block_linear(&c->vision, i));
    eng_linear_free(&c->patch_embed);
    free(c->text.layers);
    free(c->vision.layers);
    eng_weights_close(&c->weights);
    model_base_free(m);
    free(c);
}

static const model_ops clip_ops = {
    .free = clip_free,
    .scratch_size = clip_scratch_size,
    .embed_text = clip_embed_text,
    .embed_image = clip_embed_image,
    .image_scratch_size = clip_image_scratch_size,
};

static void read_tower_config(eng_config *cfg, const char *sect, clip_tower *t, int default_pos)
{
    char key[96];
#define KEY(name) (snprintf(key, sizeof key, "%s.%s", sect, name), key)
    t->dim = (int)eng_config_int(cfg, KEY("hidden_size"));
    t->inner = (int)eng_config_int(cfg, KEY("intermediate_size"));
    t->n_layers = (int)eng_config_int(cfg, KEY("num_hidden_layers"));
    t->n_heads = (int)eng_config_int(cfg, KEY("num_attention_heads"));
    t->max_pos = (int)eng_config_int_or(cfg, KEY("max_position_embeddings"), default_pos);
    t->eps = (float)eng_config_num_or(cfg, KEY("layer_norm_eps"), 1e-5);
    const char *act = eng_config_str_or(cfg, KEY("hidden_act"), "quick_gelu");
    t->activation = eng_activation_by_name(act);
    if (!t->activation)
        eng_config_fail(cfg, "%s.hidden_act \"%s\" is not supported", sect, act);
    if (t->dim <= 0 || t->inner <= 0 || t->n_layers <= 0 || t->n_heads <= 0 || t->max_pos <= 0 ||
        t->dim % t->n_heads)
        eng_config_fail(cfg, "%s: sizes must be positive and hidden_size a multiple of "
                        "num_attention_heads", sect);
#undef KEY
}

static void read_config(clip *c, eng_config *cfg)
{
    read_tower_config(cfg, "text_config", &c->text, 77);
    c->vocab = (int)eng_config_int_or(cfg, "text_config.vocab_size", 49408);
    c->eos_id = (int32_t)eng_config_int_or(cfg, "text_config.eos_token_id", 2);
    c->base.image_size = (int)eng_config_int_or(cfg, "vision_config.image_size", 224);
    c->patch = (int)eng_config_int_or(cfg, "vision_config.patch_size", 32);
    c->base.proj_dim = (int)eng_config_int_or(cfg, "projection_dim", 512);
    if (c->patch <= 0 || c->base.image_size % c->patch || c->base.proj_dim <= 0 ||
        eng_config_int_or(cfg, "vision_config.num_channels", 3) != 3)
        eng_config_fail(cfg, "vision_config: image_size must be a multiple of patch_size, with 3 channels");
    c->grid = c->patch > 0 ? c->base.image_size / c->patch : 0;
    if (c->grid < 0 || c->grid > 46340) { /* grid * grid + 1 must fit in an int */
        eng_config_fail(cfg, "vision_config: image_size / patch_size must be 0..46340");
        c->grid = 0;
    }
    read_tower_config(cfg, "vision_config", &c->vision, c->grid * c->grid + 1);
    c->vision.max_pos = c->grid * c->grid + 1;
}

static eng_linear linear(eng_weights *w, int out, int in, bool bias, const char *prefix)
{
    return (eng_linear){
        .in = in, .out = out, .layout = ENG_W_OUT_IN,
        .w = eng_weights_f32(w, ENG_SHAPE(out, in), "%s.weight", prefix),
        .b = bias ? eng_weights_f32(w, ENG_SHAPE(out), "%s.bias", prefix) : NULL,
    };
}

static int load_tower(clip *c, clip_tower *t, const char *prefix, const char *final_norm,
                      const char *projection, eng_err *err)
{
    eng_weights *w = &c->weights;
    if (!(t->layers = calloc((size_t)t->n_layers, sizeof *t->layers)))
        return eng_err_set(err, ENG_ENOMEM, "%s: out of memory", c->base.dir);
    char p[160];
    for (int l = 0; l < t->n_layers; l++) {
        clip_layer *L = &t->layers[l];
#define AT(name) (snprintf(p, sizeof p, "%s.encoder.layers.%d.%s", prefix, l, name), p)
        L->ln1_gamma = eng_weights_f32(w, ENG_SHAPE(t->dim), "%s.weight", AT("layer_norm1"));
        L->ln1_beta = eng_weights_f32(w, ENG_SHAPE(t->dim), "%s.bias", AT("layer_norm1"));
        L->q = linear(w, t->dim, t->dim, true, AT("self_attn.q_proj"));
        L->k = linear(w, t->dim, t->dim, true, AT("self_attn.k_proj"));
        L->v = linear(w, t->dim, t->dim, true, AT("self_attn.v_proj"));
        L->out = linear(w, t->dim, t->dim, true, AT("self_attn.out_proj"));
        L->ln2_gamma = eng_weights_f32(w, ENG_SHAPE(t->dim), "%s.weight", AT("layer_norm2"));
        L->ln2_beta = eng_weights_f32(w, ENG_SHAPE(t->dim), "%s.bias", AT("layer_norm2"));
        L->fc1 = linear(w, t->inner, t->dim, true, AT("mlp.fc1"));
        L->fc2 = linear(w, t->dim, t->inner, true, AT("mlp.fc2"));
#undef AT
    }
    t->pos_emb = eng_weights_f32(w, ENG_SHAPE(t->max_pos, t->dim), "%s.embeddings.position_embedding.weight", prefix);
    t->final_gamma = eng_weights_f32(w, ENG_SHAPE(t->dim), "%s.%s.weight", prefix, final_norm);
    t->final_beta = eng_weights_f32(w, ENG_SHAPE(t->dim), "%s.%s.bias", prefix, final_norm);
    t->projection = linear(w, c->base.proj_dim, t->dim, false, projection);
    return 0;
}

static int load_weights(clip *c, eng_err *err)
{
    eng_weights *w = &c->weights;
    int V = c->vision.dim, P = c->patch;
    int rc = load_tower(c, &c->text, "text_model", "final_layer_norm", "text_projection", err);
    if (!rc)
        rc = load_tower(c, &c->vision, "vision_model", "post_layernorm", "visual_projection", err);
    if (rc)
        return rc;
    c->token_emb = eng_weights_f32(w, ENG_SHAPE(c->vocab, c->text.dim), "text_model.embeddings.token_embedding.weight");
    c->class_emb = eng_weights_f32(w, ENG_SHAPE(V), "vision_model.embeddings.class_embedding");
    /* The patch convolution (stride = kernel) is a linear layer over each
     * patch's pixels, channel-major as extract_patches lays them out. */
    c->patch_embed = (eng_linear){.in = 3 * P * P, .out = V, .layout = ENG_W_OUT_IN,
        .w = eng_weights_f32(w, ENG_SHAPE(V, 3, P, P), "vision_model.embeddings.patch_embedding.weight")};
    c->pre_gamma = eng_weights_f32(w, ENG_SHAPE(V), "vision_model.pre_layrnorm.weight");
    c->pre_beta = eng_weights_f32(w, ENG_SHAPE(V), "vision_model.pre_layrnorm.bias");
    const float *scale = eng_weights_f32(w, NULL, 0, "logit_scale");
    rc = eng_weights_check(w, err);
    if (!rc)
        c->base.logit_scale = scale[0];
    return rc;
}

/* The blocks' projections to dtype; the patch embedding stays F32 in our
 * packed kernels whatever the dtype (one layer, run once per image). */
static int convert(clip *c, eng_dtype dtype, eng_err *err)
{
    clip_tower *towers[2] = {&c->text, &c->vision};
    int rc = eng_weights_convert_linear(&c->weights, &c->patch_embed, ENG_F32, 0, err);
    for (int t = 0; t < 2; t++)
        for (int i = 0; !rc && i < 6 * towers[t]->n_layers; i++)
            rc = eng_weights_convert_linear(&c->weights, block_linear(towers[t], i), dtype, 0, err);
    if (!rc)
        c->base.dtype = dtype;
    return rc;
}

int clip_load(const char *dir, eng_config *cfg, const model_load_opts *opts, model **out,
              eng_err *err)
{
    clip *c = calloc(1, sizeof *c);
    if (!c)
        return eng_err_set(err, ENG_ENOMEM, "%s: out of memory", dir);
    int rc = model_base_init(&c->base, &clip_ops, MODEL_TASK_IMAGE_TEXT, dir, "CLIPModel", err);
    if (!rc) {
        read_config(c, cfg);
        rc = eng_config_check(cfg, err);
    }
    if (!rc)
        rc = eng_weights_open(&c->weights, dir, err);
    if (!rc)
        rc = load_weights(c, err);
    if (!rc)
        rc = convert(c, opts->dtype, err);
    if (!rc)
        rc = tok_bpe_load(dir, TOK_BPE_CLIP, &c->base.tok, err);
    if (!rc)
        rc = img_preproc_cfg_load(dir, &c->base.preproc, err);
    if (!rc && (c->base.preproc.crop_h != (uint32_t)c->base.image_size ||
                c->base.preproc.crop_w != (uint32_t)c->base.image_size))
        rc = eng_err_set(err, ENG_EFORMAT, "%s/preprocessor_config.json: crop %ux%u does not match "
                         "the vision tower's image_size %d", dir, c->base.preproc.crop_h,
                         c->base.preproc.crop_w, c->base.image_size);
    if (rc) {
        clip_free(&c->base);
        return rc;
    }
    c->base.max_positions = c->text.max_pos;
    c->base.vocab_size = c->vocab;
    *out = &c->base;
    return 0;
}
