/* DistilBERT for sequence classification, as transformers'
 * DistilBertForSequenceClassification: embeddings (word + learned position)
 * -> LayerNorm -> post-LN encoder blocks -> the first token's hidden state ->
 * pre_classifier -> ReLU -> classifier. */
#include "models/distilbert.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/attention.h"
#include "engine/linear.h"
#include "engine/ops.h"
#include "engine/weights.h"
#include "models/tok_wordpiece.h"

typedef struct distilbert_layer {
    eng_linear q, k, v, out;                 /* (dim, dim) each */
    const float *sa_ln_gamma, *sa_ln_beta;   /* (dim) */
    eng_linear ffn_in;                       /* (hidden, dim) */
    eng_linear ffn_out;                      /* (dim, hidden) */
    const float *out_ln_gamma, *out_ln_beta; /* (dim) */
} distilbert_layer;

typedef struct distilbert {
    model base;
    eng_weights weights;
    int dim, hidden, n_layers, n_heads, vocab, max_pos;
    float eps;
    eng_activation_fn activation;
    const float *word_emb;                   /* (vocab, dim) */
    const float *pos_emb;                    /* (max_pos, dim) */
    const float *emb_ln_gamma, *emb_ln_beta; /* (dim) */
    distilbert_layer *layers;                /* (n_layers) */
    eng_linear pre_classifier;               /* (dim, dim) */
    eng_linear classifier;                   /* (n_labels, dim) */
} distilbert;

/* The transformer blocks' projections: what --dtype converts. */
static eng_linear *block_linear(distilbert *d, int i)
{
    distilbert_layer *L = &d->layers[i / 6];
    eng_linear *all[6] = {&L->q, &L->k, &L->v, &L->out, &L->ffn_in, &L->ffn_out};
    return all[i % 6];
}

static void distilbert_free(model *m)
{
    distilbert *d = (distilbert *)m;
    for (int i = 0; d->layers && i < 6 * d->n_layers; i++)
        eng_linear_free(block_linear(d, i));
    free(d->layers);
    eng_weights_close(&d->weights);
    model_base_free(m);
    free(d);
}

static size_t distilbert_scratch_size(const model *m, int max_tokens, int max_len)
{
    (void)max_len; /* attention scores live in the engine's per-thread scratch */
    const distilbert *d = (const distilbert *)m;
    size_t T = (size_t)max_tokens;
    return 5 * eng_arena_floats_size(T * d->dim)      /* x, q, k, v, ctx */
           + eng_arena_floats_size(T * d->hidden)     /* ffn */
           + 2 * eng_arena_floats_size(T * d->dim);   /* classifier head */
}

/* x (T, dim) = LayerNorm(word_emb[id] + pos_emb[position in its sequence]). */
static void embed(const distilbert *d, const model_batch *b, float *x)
{
    for (int s = 0; s < b->n_seq; s++)
        for (int t = b->seq_off[s]; t < b->seq_off[s + 1]; t++) {
            const float *w = d->word_emb + (size_t)b->ids[t] * d->dim;
            const float *p = d->pos_emb + (size_t)(t - b->seq_off[s]) * d->dim;
            float *row = x + (size_t)t * d->dim;
            for (int j = 0; j < d->dim; j++)
                row[j] = w[j] + p[j];
        }
    eng_layernorm(x, x, model_batch_tokens(b), d->dim, d->emb_ln_gamma, d->emb_ln_beta, d->eps);
}

static int check_batch(const distilbert *d, const model_batch *b, eng_err *err)
{
    for (int s = 0; s < b->n_seq; s++) {
        int len = b->seq_off[s + 1] - b->seq_off[s];
        if (len < 1 || len > d->max_pos)
            return eng_err_set(err, ENG_ETOOLONG, "sequence of %d tokens: the model takes 1 to %d",
                               len, d->max_pos);
    }
    for (int t = 0; t < model_batch_tokens(b); t++)
        if (b->ids[t] < 0 || b->ids[t] >= d->vocab)
            return eng_err_set(err, ENG_EINVAL, "token id %d outside the vocabulary of %d",
                               b->ids[t], d->vocab);
    return 0;
}

/* Activations of one forward pass: q, k, v, ctx (T, dim) each, ffn (T,
 * hidden). q also takes the projections after attention. */
typedef struct block_bufs {
    float *q, *k, *v, *ctx, *ffn;
} block_bufs;

/* One post-LN encoder block, in place on the rows of xq. Keys and values
 * come from every row of x (T rows); the queries, and everything after
 * attention, from xq's rows: x itself (rows = T), or with first_only one row
 * per sequence, its first token's (rows = n_seq) -- the last block of a
 * classifier whose head reads nothing else, which saves that block's work on
 * every other token. Either way a row gets the values the full block gives it. */
static void encoder_block(const distilbert *d, const distilbert_layer *L, const model_batch *b,
                          const float *x, int T, bool first_only, float *xq, const block_bufs *w)
{
    int dim = d->dim, hd = dim / d->n_heads, rows = first_only ? b->n_seq : T;
    eng_linear_forward(&L->k, x, T, w->k);
    eng_linear_forward(&L->v, x, T, w->v);
    eng_linear_forward(&L->q, xq, rows, w->q);
    if (!first_only)
        eng_self_attention(w->q, w->k, w->v, dim, b->seq_off, b->n_seq, d->n_heads, hd, false,
                           w->ctx);
    else
        eng_first_token_attention(w->q, w->k, w->v, dim, b->seq_off, b->n_seq, d->n_heads, hd,
                                  w->ctx);
    eng_linear_forward(&L->out, w->ctx, rows, w->q);
    eng_add_layernorm(xq, w->q, rows, dim, L->sa_ln_gamma, L->sa_ln_beta, d->eps);
    eng_linear_forward(&L->ffn_in, xq, rows, w->ffn);
    d->activation(w->ffn, (size_t)rows * d->hidden);
    eng_linear_forward(&L->ffn_out, w->ffn, rows, w->q);
    eng_add_layernorm(xq, w->q, rows, dim, L->out_ln_gamma, L->out_ln_beta, d->eps);
}

static int distilbert_classify(const model *m, const model_batch *b, eng_arena *a, float *logits,
                               eng_err *err)
{
    const distilbert *d = (const distilbert *)m;
    int rc = check_batch(d, b, err);
    if (rc)
        return rc;
    int T = model_batch_tokens(b), S = b->n_seq, dim = d->dim;
    size_t n = (size_t)T * dim;
    eng_arena_reset(a);
    float *x = eng_arena_floats(a, n);
    block_bufs w = {eng_arena_floats(a, n), eng_arena_floats(a, n), eng_arena_floats(a, n),
                    eng_arena_floats(a, n), eng_arena_floats(a, (size_t)T * d->hidden)};
    float *cls = eng_arena_floats(a, (size_t)S * dim);
    float *pre = eng_arena_floats(a, (size_t)S * dim);
    if (!pre)
        return eng_err_set(err, ENG_ENOMEM, "batch of %d tokens exceeds the reserved scratch", T);

    embed(d, b, x);
    for (int l = 0; l < d->n_layers - 1; l++)
        encoder_block(d, &d->layers[l], b, x, T, false, x, &w);
    for (int s = 0; s < S; s++)
        memcpy(cls + (size_t)s * dim, x + (size_t)b->seq_off[s] * dim, (size_t)dim * sizeof *x);
    encoder_block(d, &d->layers[d->n_layers - 1], b, x, T, true, cls, &w); /* n_layers >= 1 */
    eng_linear_forward(&d->pre_classifier, cls, S, pre);
    eng_relu(pre, (size_t)S * dim);
    eng_linear_forward(&d->classifier, pre, S, logits);
    return 0;
}

static const model_ops distilbert_ops = {
    .free = distilbert_free,
    .scratch_size = distilbert_scratch_size,
    .classify = distilbert_classify,
};

/* Without id2label transformers names the labels LABEL_0, LABEL_1, ... */
static void default_labels(model *m, long n)
{
    if (n <= 0 || n > 100000 || !(m->labels = calloc((size_t)n, sizeof *m->labels)))
        return;
    m->n_labels = (size_t)n;
    for (long i = 0; i < n; i++)
        if (asprintf(&m->labels[i], "LABEL_%ld", i) < 0)
            m->labels[i] = NULL;
}

static void read_config(distilbert *d, eng_config *cfg)
{
    d->dim = (int)eng_config_int(cfg, "dim");
    d->hidden = (int)eng_config_int(cfg, "hidden_dim");
    d->n_layers = (int)eng_config_int(cfg, "n_layers");
    d->n_heads = (int)eng_config_int(cfg, "n_heads");
    d->vocab = (int)eng_config_int(cfg, "vocab_size");
    d->max_pos = (int)eng_config_int_or(cfg, "max_position_embeddings", 512);
    /* DistilBERT's LayerNorm eps is fixed at 1e-12 in transformers. */
    d->eps = 1e-12f;
    const char *act = eng_config_str_or(cfg, "activation", "gelu");
    d->activation = eng_activation_by_name(act);
    if (!d->activation)
        eng_config_fail(cfg, "activation \"%s\" is not supported", act);
    if (eng_config_bool_or(cfg, "sinusoidal_pos_embds", false))
        eng_config_fail(cfg, "sinusoidal_pos_embds is not supported");
    if (d->dim <= 0 || d->hidden <= 0 || d->n_layers <= 0 || d->n_heads <= 0 || d->vocab <= 0 ||
        d->max_pos <= 0 || d->dim % d->n_heads)
        eng_config_fail(cfg, "dim %d, hidden_dim %d, n_layers %d, n_heads %d, vocab_size %d: "
                        "sizes must be positive and dim a multiple of n_heads",
                        d->dim, d->hidden, d->n_layers, d->n_heads, d->vocab);
    const char *problem = eng_config_str_or(cfg, "problem_type", "");
    d->base.multi_label = strcmp(problem, "multi_label_classification") == 0;
    if (eng_config_has(cfg, "id2label"))
        eng_config_id2label(cfg, "id2label", &d->base.labels, &d->base.n_labels);
    else
        default_labels(&d->base, eng_config_int_or(cfg, "num_labels", 2));
}

static eng_linear linear(eng_weights *w, int out, int in, const char *prefix)
{
    return (eng_linear){
        .in = in, .out = out, .layout = ENG_W_OUT_IN,
        .w = eng_weights_f32(w, ENG_SHAPE(out, in), "%s.weight", prefix),
        .b = eng_weights_f32(w, ENG_SHAPE(out), "%s.bias", prefix),
    };
}

static void load_layer(distilbert *d, int l)
{
    eng_weights *w = &d->weights;
    distilbert_layer *L = &d->layers[l];
    char p[128];
#define LAYER(name) (snprintf(p, sizeof p, "distilbert.transformer.layer.%d.%s", l, name), p)
    L->q = linear(w, d->dim, d->dim, LAYER("attention.q_lin"));
    L->k = linear(w, d->dim, d->dim, LAYER("attention.k_lin"));
    L->v = linear(w, d->dim, d->dim, LAYER("attention.v_lin"));
    L->out = linear(w, d->dim, d->dim, LAYER("attention.out_lin"));
    L->sa_ln_gamma = eng_weights_f32(w, ENG_SHAPE(d->dim), "%s.weight", LAYER("sa_layer_norm"));
    L->sa_ln_beta = eng_weights_f32(w, ENG_SHAPE(d->dim), "%s.bias", LAYER("sa_layer_norm"));
    L->ffn_in = linear(w, d->hidden, d->dim, LAYER("ffn.lin1"));
    L->ffn_out = linear(w, d->dim, d->hidden, LAYER("ffn.lin2"));
    L->out_ln_gamma = eng_weights_f32(w, ENG_SHAPE(d->dim), "%s.weight", LAYER("output_layer_norm"));
    L->out_ln_beta = eng_weights_f32(w, ENG_SHAPE(d->dim), "%s.bias", LAYER("output_layer_norm"));
#undef LAYER
}

static int load_weights(distilbert *d, eng_err *err)
{
    eng_weights *w = &d->weights;
    d->word_emb = eng_weights_f32(w, ENG_SHAPE(d->vocab, d->dim), "distilbert.embeddings.word_embeddings.weight");
    d->pos_emb = eng_weights_f32(w, ENG_SHAPE(d->max_pos, d->dim), "distilbert.embeddings.position_embeddings.weight");
    d->emb_ln_gamma = eng_weights_f32(w, ENG_SHAPE(d->dim), "distilbert.embeddings.LayerNorm.weight");
    d->emb_ln_beta = eng_weights_f32(w, ENG_SHAPE(d->dim), "distilbert.embeddings.LayerNorm.bias");
    d->layers = calloc((size_t)d->n_layers, sizeof *d->layers);
    if (!d->layers)
        return eng_err_set(err, ENG_ENOMEM, "%s: out of memory", d->base.dir);
    for (int l = 0; l < d->n_layers; l++)
        load_layer(d, l);
    d->pre_classifier = linear(w, d->dim, d->dim, "pre_classifier");
    d->classifier = linear(w, (int)d->base.n_labels, d->dim, "classifier");
    return eng_weights_check(w, err);
}

static int convert(distilbert *d, eng_dtype dtype, eng_err *err)
{
    for (int i = 0; i < 6 * d->n_layers; i++) {
        int rc = eng_weights_convert_linear(&d->weights, block_linear(d, i), dtype, 0, err);
        if (rc)
            return rc;
    }
    d->base.dtype = dtype;
    return 0;
}

int distilbert_load(const char *dir, eng_config *cfg, const model_load_opts *opts, model **out,
                    eng_err *err)
{
    distilbert *d = calloc(1, sizeof *d);
    if (!d)
        return eng_err_set(err, ENG_ENOMEM, "%s: out of memory", dir);
    int rc = model_base_init(&d->base, &distilbert_ops, MODEL_TASK_CLASSIFY, dir,
                             "DistilBertForSequenceClassification", err);
    if (!rc) {
        read_config(d, cfg);
        rc = eng_config_check(cfg, err);
    }
    for (size_t i = 0; !rc && i < d->base.n_labels; i++)
        if (!d->base.labels[i])
            rc = eng_err_set(err, ENG_ENOMEM, "%s: out of memory", dir);
    if (!rc && d->base.n_labels == 0)
        rc = eng_err_set(err, ENG_EFORMAT, "%s/config.json: num_labels must be positive", dir);
    if (!rc)
        rc = eng_weights_open(&d->weights, dir, err);
    if (!rc)
        rc = load_weights(d, err);
    if (!rc)
        rc = convert(d, opts->dtype, err);
    if (!rc)
        rc = tok_wordpiece_load(dir, &d->base.tok, err);
    if (rc) {
        distilbert_free(&d->base);
        return rc;
    }
    d->base.max_positions = d->max_pos;
    *out = &d->base;
    return 0;
}
