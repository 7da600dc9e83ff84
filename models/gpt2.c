/* GPT-2 as transformers' GPT2LMHeadModel: token + position embeddings ->
 * pre-LN blocks (causal self-attention, MLP with tanh-GELU) -> ln_f -> the
 * tied LM head (wteᵀ). Weights are Conv1D, stored (in, out).
 *
 * Generation runs through a per-sequence KV cache: a step feeds each sequence
 * only its new tokens (the whole prompt at first, then one token), appends
 * their keys and values, and returns the logits of each sequence's last
 * position. Sequences of a step are packed, so every linear layer runs once
 * for all of them. */
#include "models/gpt2.h"

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

typedef struct gpt2_layer {
    const float *ln1_gamma, *ln1_beta; /* (dim) */
    eng_linear qkv;                    /* c_attn: (dim) -> (3 dim), q|k|v */
    eng_linear attn_out;               /* c_proj: (dim) -> (dim) */
    const float *ln2_gamma, *ln2_beta; /* (dim) */
    eng_linear mlp_in;                 /* c_fc: (dim) -> (inner) */
    eng_linear mlp_out;                /* mlp.c_proj: (inner) -> (dim) */
} gpt2_layer;

typedef struct gpt2 {
    model base;
    eng_weights weights;
    int dim, inner, n_layers, n_heads, vocab, max_pos;
    float eps;
    eng_activation_fn activation;
    const float *wte;                  /* (vocab, dim) token embeddings; NULL when they are
                                          read from the tied F32 LM head's pack */
    const float *wpe;                  /* (max_pos, dim) */
    gpt2_layer *layers;                /* (n_layers) */
    const float *lnf_gamma, *lnf_beta; /* (dim) */
    eng_linear lm_head;                /* (dim) -> (vocab), weight = wte unless untied */
} gpt2;

/* The cache of one sequence: per layer, K (capacity, dim) then V (capacity, dim). */
static float *cache_k(const gpt2 *g, const model_kv *kv, int layer)
{
    return kv->data + (size_t)2 * layer * kv->capacity * g->dim;
}

static float *cache_v(const gpt2 *g, const model_kv *kv, int layer)
{
    return cache_k(g, kv, layer) + (size_t)kv->capacity * g->dim;
}

static size_t gpt2_kv_floats(const model *m, int capacity)
{
    const gpt2 *g = (const gpt2 *)m;
    return (size_t)2 * g->n_layers * capacity * g->dim;
}

static size_t gpt2_scratch_size(const model *m, int max_tokens, int max_len)
{
    const gpt2 *g = (const gpt2 *)m;
    size_t T = (size_t)max_tokens;
    (void)max_len; /* attention scores live in the engine's per-thread scratch */
    return 3 * eng_arena_floats_size(T * g->dim)  /* x, h, ctx */
           + eng_arena_floats_size(T * 3 * g->dim) /* qkv */
           + eng_arena_floats_size(T * g->inner)   /* mlp */
           + eng_arena_floats_size(T * g->dim);    /* last rows */
}

static eng_linear *block_linear(gpt2 *g, int i)
{
    gpt2_layer *L = &g->layers[i / 4];
    eng_linear *all[4] = {&L->qkv, &L->attn_out, &L->mlp_in, &L->mlp_out};
    return all[i % 4];
}

static void gpt2_free(model *m)
{
    gpt2 *g = (gpt2 *)m;
    for (int i = 0; g->layers && i < 4 * g->n_layers; i++)
        eng_linear_free(block_linear(g, i));
    eng_linear_free(&g->lm_head);
    free(g->layers);
    eng_weights_close(&g->weights);
    model_base_free(m);
    free(g);
}

static int check_step(const gpt2 *g, const model_batch *b, model_kv *const *kv, eng_err *err)
{
    for (int s = 0; s < b->n_seq; s++) {
        int n = b->seq_off[s + 1] - b->seq_off[s];
        if (n < 1 || kv[s]->len + n > kv[s]->capacity || kv[s]->len + n > g->max_pos)
            return eng_err_set(err, ENG_ETOOLONG,
                               "sequence of %d tokens after %d: the context holds %d (cache %d)", n,
                               kv[s]->len, g->max_pos, kv[s]->capacity);
    }
    for (int t = 0; t < model_batch_tokens(b); t++)
        if (b->ids[t] < 0 || b->ids[t] >= g->vocab)
            return eng_err_set(err, ENG_EINVAL, "token id %d outside the vocabulary of %d",
                               b->ids[t], g->vocab);
    return 0;
}

static void embed(const gpt2 *g, const model_batch *b, model_kv *const *kv, float *x)
{
    for (int s = 0; s < b->n_seq; s++)
        for (int t = b->seq_off[s]; t < b->seq_off[s + 1]; t++) {
            const float *p = g->wpe + (size_t)(kv[s]->len + t - b->seq_off[s]) * g->dim;
            float *row = x + (size_t)t * g->dim;
            if (g->wte)
                memcpy(row, g->wte + (size_t)b->ids[t] * g->dim, (size_t)g->dim * sizeof *row);
            else
                eng_linear_f32_row(&g->lm_head, b->ids[t], row); /* ids checked against vocab */
            for (int j = 0; j < g->dim; j++)
                row[j] += p[j];
        }
}

/* Appends each sequence's new keys and values to its cache, then attends its
 * new queries to everything it has seen. qkv: (T, 3 dim); ctx: (T, dim). */
static void attend(const gpt2 *g, int l, const model_batch *b, model_kv *const *kv, const float *qkv,
                   float *ctx)
{
    enum { CHUNK = 64 }; /* sequences described at once, on the stack */
    eng_attn_seq seqs[CHUNK];
    int dim = g->dim;
    for (int s0 = 0; s0 < b->n_seq; s0 += CHUNK) {
        int n_seq = b->n_seq - s0 < CHUNK ? b->n_seq - s0 : CHUNK;
        for (int i = 0; i < n_seq; i++) {
            int s = s0 + i, r0 = b->seq_off[s], n = b->seq_off[s + 1] - r0, past = kv[s]->len;
            float *K = cache_k(g, kv[s], l), *V = cache_v(g, kv[s], l);
            for (int t = 0; t < n; t++) {
                const float *row = qkv + (size_t)(r0 + t) * 3 * dim;
                memcpy(K + (size_t)(past + t) * dim, row + dim, (size_t)dim * sizeof *K);
                memcpy(V + (size_t)(past + t) * dim, row + 2 * dim, (size_t)dim * sizeof *V);
            }
            seqs[i] = (eng_attn_seq){.q = qkv + (size_t)r0 * 3 * dim, .ldq = 3 * dim,
                                     .k = K, .ldk = dim, .v = V, .ldv = dim, .Lq = n,
                                     .Lk = past + n, .out = ctx + (size_t)r0 * dim, .ldo = dim};
        }
        eng_attention(seqs, n_seq, g->n_heads, dim / g->n_heads, true);
    }
}

static int gpt2_generate_step(const model *m, const model_batch *b, model_kv *const *kv,
                              eng_arena *a, float *logits, eng_err *err)
{
    const gpt2 *g = (const gpt2 *)m;
    int rc = check_step(g, b, kv, err);
    if (rc)
        return rc;
    int T = model_batch_tokens(b), dim = g->dim;
    eng_arena_reset(a);
    float *x = eng_arena_floats(a, (size_t)T * dim), *h = eng_arena_floats(a, (size_t)T * dim);
    float *ctx = eng_arena_floats(a, (size_t)T * dim);
    float *qkv = eng_arena_floats(a, (size_t)T * 3 * dim);
    float *mlp = eng_arena_floats(a, (size_t)T * g->inner);
    float *last = eng_arena_floats(a, (size_t)b->n_seq * dim);
    if (!last)
        return eng_err_set(err, ENG_ENOMEM, "step of %d tokens exceeds the reserved scratch", T);

    embed(g, b, kv, x);
    for (int l = 0; l < g->n_layers; l++) {
        const gpt2_layer *L = &g->layers[l];
        eng_layernorm(h, x, T, dim, L->ln1_gamma, L->ln1_beta, g->eps);
        eng_linear_forward(&L->qkv, h, T, qkv);
        attend(g, l, b, kv, qkv, ctx);
        eng_linear_forward(&L->attn_out, ctx, T, h);
        eng_add(x, h, (size_t)T * dim);
        eng_layernorm(h, x, T, dim, L->ln2_gamma, L->ln2_beta, g->eps);
        eng_linear_forward(&L->mlp_in, h, T, mlp);
        g->activation(mlp, (size_t)T * g->inner);
        eng_linear_forward(&L->mlp_out, mlp, T, h);
        eng_add(x, h, (size_t)T * dim);
    }
    for (int s = 0; s < b->n_seq; s++) {
        memcpy(last + (size_t)s * dim, x + (size_t)(b->seq_off[s + 1] - 1) * dim, (size_t)dim * sizeof *x);
        kv[s]->len += b->seq_off[s + 1] - b->seq_off[s];
    }
    eng_layernorm(last, last, b->n_seq, dim, g->lnf_gamma, g->lnf_beta, g->eps);
    eng_linear_forward(&g->lm_head, last, b->n_seq, logits);
    return 0;
}

static const model_ops gpt2_ops = {
    .free = gpt2_free,
    .scratch_size = gpt2_scratch_size,
    .kv_floats = gpt2_kv_floats,
    .generate_step = gpt2_generate_step,
};

/* ---- loading ------------------------------------------------------------------ */

static void read_config(gpt2 *g, eng_config *cfg)
{
    g->dim = (int)eng_config_int(cfg, "n_embd");
    g->n_layers = (int)eng_config_int(cfg, "n_layer");
    g->n_heads = (int)eng_config_int(cfg, "n_head");
    g->vocab = (int)eng_config_int(cfg, "vocab_size");
    g->max_pos = (int)eng_config_int_or(cfg, "n_positions", 1024);
    g->inner = (int)eng_config_int_or(cfg, "n_inner", 4L * g->dim);
    g->eps = (float)eng_config_num_or(cfg, "layer_norm_epsilon", 1e-5);
    const char *act = eng_config_str_or(cfg, "activation_function", "gelu_new");
    g->activation = eng_activation_by_name(act);
    if (!g->activation)
        eng_config_fail(cfg, "activation_function \"%s\" is not supported", act);
    if (!eng_config_bool_or(cfg, "scale_attn_weights", true) ||
        eng_config_bool_or(cfg, "scale_attn_by_inverse_layer_idx", false) ||
        eng_config_bool_or(cfg, "reorder_and_upcast_attn", false))
        eng_config_fail(cfg, "only the standard GPT-2 attention scaling is supported");
    if (g->dim <= 0 || g->n_layers <= 0 || g->n_heads <= 0 || g->vocab <= 0 || g->max_pos <= 0 ||
        g->inner <= 0 || g->dim % g->n_heads)
        eng_config_fail(cfg, "n_embd %d, n_layer %d, n_head %d, vocab_size %d: sizes must be "
                        "positive and n_embd a multiple of n_head", g->dim, g->n_layers, g->n_heads,
                        g->vocab);
    g->base.eos_id = (int32_t)eng_config_int_or(cfg, "eos_token_id", -1);
    long ts_sample = eng_config_has(cfg, "task_specific_params.text-generation.do_sample")
                         ? eng_config_bool_or(cfg, "task_specific_params.text-generation.do_sample", false)
                         : -1;
    g->base.gen.pipeline_do_sample = (int)ts_sample;
    g->base.gen.pipeline_max_length =
        (int)eng_config_int_or(cfg, "task_specific_params.text-generation.max_length", 0);
}

/* transformers' GenerationConfig defaults, then generation_config.json. */
static int read_generation_config(gpt2 *g, const char *dir, eng_err *err)
{
    model_gen_defaults *d = &g->base.gen;
    d->do_sample = false;
    d->max_length = 20;
    d->max_new_tokens = 0;
    d->temperature = 1.0f;
    d->top_k = 50;
    d->top_p = 1.0f;
    d->repetition_penalty = 1.0f;
    d->num_beams = 1;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    eng_config *cfg;
    int rc = eng_config_load(path, &cfg, err);
    if (rc == ENG_ENOTFOUND)
        return 0;
    if (rc)
        return rc;
    d->do_sample = eng_config_bool_or(cfg, "do_sample", d->do_sample);
    d->max_length = (int)eng_config_int_or(cfg, "max_length", d->max_length);
    d->max_new_tokens = (int)eng_config_int_or(cfg, "max_new_tokens", 0);
    d->temperature = (float)eng_config_num_or(cfg, "temperature", d->temperature);
    d->top_k = (int)eng_config_int_or(cfg, "top_k", d->top_k);
    d->top_p = (float)eng_config_num_or(cfg, "top_p", d->top_p);
    d->repetition_penalty = (float)eng_config_num_or(cfg, "repetition_penalty", 1.0);
    d->num_beams = (int)eng_config_int_or(cfg, "num_beams", 1);
    if (eng_config_has(cfg, "eos_token_id"))
        g->base.eos_id = (int32_t)eng_config_int_or(cfg, "eos_token_id", g->base.eos_id);
    rc = eng_config_check(cfg, err);
    eng_config_free(cfg);
    return rc;
}

/* The pipeline cleans up its output text when the tokenizer says so, which
 * transformers' GPT-2 tokenizer does unless its config turns it off. */
static int read_tokenizer_config(gpt2 *g, const char *dir, eng_err *err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    eng_config *cfg;
    g->base.clean_up_spaces = true;
    int rc = eng_config_load(path, &cfg, err);
    if (rc == ENG_ENOTFOUND)
        return 0;
    if (rc)
        return rc;
    g->base.clean_up_spaces = eng_config_bool_or(cfg, "clean_up_tokenization_spaces", true);
    rc = eng_config_check(cfg, err);
    eng_config_free(cfg);
    return rc;
}

/* The hub's own gpt2 checkpoint names tensors without "transformer."; a
 * fresh save_pretrained adds it. Both are read. */
static const char *prefix_of(const eng_weights *w)
{
    return eng_weights_has(w, "transformer.wte.weight") ? "transformer." : "";
}

static eng_linear conv1d(eng_weights *w, int in, int out, const char *pre, int l, const char *name)
{
    return (eng_linear){
        .in = in, .out = out, .layout = ENG_W_IN_OUT,
        .w = eng_weights_f32(w, ENG_SHAPE(in, out), "%sh.%d.%s.weight", pre, l, name),
        .b = eng_weights_f32(w, ENG_SHAPE(out), "%sh.%d.%s.bias", pre, l, name),
    };
}

static int load_weights(gpt2 *g, eng_config *cfg, eng_err *err)
{
    eng_weights *w = &g->weights;
    const char *pre = prefix_of(w);
    int D = g->dim;
    g->wte = eng_weights_f32(w, ENG_SHAPE(g->vocab, D), "%swte.weight", pre);
    g->wpe = eng_weights_f32(w, ENG_SHAPE(g->max_pos, D), "%swpe.weight", pre);
    if (!(g->layers = calloc((size_t)g->n_layers, sizeof *g->layers)))
        return eng_err_set(err, ENG_ENOMEM, "%s: out of memory", g->base.dir);
    for (int l = 0; l < g->n_layers; l++) {
        gpt2_layer *L = &g->layers[l];
        L->ln1_gamma = eng_weights_f32(w, ENG_SHAPE(D), "%sh.%d.ln_1.weight", pre, l);
        L->ln1_beta = eng_weights_f32(w, ENG_SHAPE(D), "%sh.%d.ln_1.bias", pre, l);
        L->qkv = conv1d(w, D, 3 * D, pre, l, "attn.c_attn");
        L->attn_out = conv1d(w, D, D, pre, l, "attn.c_proj");
        L->ln2_gamma = eng_weights_f32(w, ENG_SHAPE(D), "%sh.%d.ln_2.weight", pre, l);
        L->ln2_beta = eng_weights_f32(w, ENG_SHAPE(D), "%sh.%d.ln_2.bias", pre, l);
        L->mlp_in = conv1d(w, D, g->inner, pre, l, "mlp.c_fc");
        L->mlp_out = conv1d(w, g->inner, D, pre, l, "mlp.c_proj");
    }
    g->lnf_gamma = eng_weights_f32(w, ENG_SHAPE(D), "%sln_f.weight", pre);
    g->lnf_beta = eng_weights_f32(w, ENG_SHAPE(D), "%sln_f.bias", pre);
    g->lm_head = (eng_linear){.in = D, .out = g->vocab, .layout = ENG_W_OUT_IN, .w = g->wte};
    if (!eng_config_bool_or(cfg, "tie_word_embeddings", true))
        g->lm_head.w = eng_weights_f32(w, ENG_SHAPE(g->vocab, D), "lm_head.weight");
    return eng_weights_check(w, err);
}

/* The blocks' projections and the LM head. A tied LM head's weights are the
 * token embeddings too: as F32 the embeddings are read back from its pack
 * (exact) and the checkpoint's copy is given back; as a lossy dtype the F32
 * copy stays for the embeddings. */
static int convert(gpt2 *g, eng_dtype dtype, eng_err *err)
{
    int rc = 0;
    for (int i = 0; !rc && i < 4 * g->n_layers; i++)
        rc = eng_weights_convert_linear(&g->weights, block_linear(g, i), dtype, 0, err);
    int tied = g->lm_head.w == g->wte;
    if (!rc)
        rc = eng_weights_convert_linear(&g->weights, &g->lm_head, dtype,
                                        tied && dtype != ENG_F32, err);
    if (!rc && tied && dtype == ENG_F32)
        g->wte = NULL;
    if (!rc)
        g->base.dtype = dtype;
    return rc;
}

int gpt2_load(const char *dir, eng_config *cfg, const model_load_opts *opts, model **out,
              eng_err *err)
{
    gpt2 *g = calloc(1, sizeof *g);
    if (!g)
        return eng_err_set(err, ENG_ENOMEM, "%s: out of memory", dir);
    int rc = model_base_init(&g->base, &gpt2_ops, MODEL_TASK_GENERATE, dir, "GPT2LMHeadModel", err);
    if (!rc) {
        read_config(g, cfg);
        rc = eng_config_check(cfg, err);
    }
    if (!rc)
        rc = read_generation_config(g, dir, err);
    if (!rc)
        rc = read_tokenizer_config(g, dir, err);
    if (!rc)
        rc = eng_weights_open(&g->weights, dir, err);
    if (!rc)
        rc = load_weights(g, cfg, err);
    if (!rc)
        rc = convert(g, opts->dtype, err);
    if (!rc)
        rc = tok_bpe_load(dir, TOK_BPE_GPT2, &g->base.tok, err);
    if (!rc && (g->base.eos_id >= g->vocab || (int)g->base.tok->vocab_size > g->vocab))
        rc = eng_err_set(err, ENG_EFORMAT, "%s: eos_token_id %d or the tokenizer's %zu tokens do "
                         "not fit the model's vocabulary of %d", dir, g->base.eos_id,
                         g->base.tok->vocab_size, g->vocab);
    if (rc) {
        gpt2_free(&g->base);
        return rc;
    }
    g->base.max_positions = g->max_pos;
    g->base.vocab_size = g->vocab;
    *out = &g->base;
    return 0;
}
