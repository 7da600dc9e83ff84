/* The model interface: what the server and the CLI know of a model.
 *
 * A model is loaded from a Hugging Face folder; config.json's "architectures"
 * picks the family from the registry (models/registry.c). Each family embeds
 * `model` as its first member and fills the ops its task needs. A loaded model
 * is immutable: any number of workers may run forwards on it at once, each
 * with its own arena. */
#ifndef MODEL_H
#define MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/arena.h"
#include "engine/error.h"
#include "engine/tensor.h"
#include "models/image.h"
#include "models/tokenizer.h"

typedef enum model_task {
    MODEL_TASK_CLASSIFY,   /* text -> label scores */
    MODEL_TASK_GENERATE,   /* text -> text */
    MODEL_TASK_IMAGE_TEXT, /* images x texts -> similarity */
} model_task;

const char *model_task_name(model_task t);

/* Token sequences packed back to back for one forward pass. */
typedef struct model_batch {
    const int32_t *ids;  /* (seq_off[n_seq]) token ids */
    const int *seq_off;  /* (n_seq + 1) sequence s is ids[seq_off[s] .. seq_off[s+1]) */
    int n_seq;
} model_batch;

static inline int model_batch_tokens(const model_batch *b)
{
    return b->seq_off[b->n_seq];
}

typedef struct model_load_opts {
    eng_dtype dtype; /* weights as held in memory; ENG_F32 by default */
} model_load_opts;

/* A sequence's key/value cache for generation: what the model has seen of it.
 * The layout inside data is the model's; the caller allocates
 * ops->kv_floats(m, capacity) floats and sets len to 0 to start. */
typedef struct model_kv {
    float *data;
    int capacity; /* tokens it can hold */
    int len;      /* tokens it holds */
} model_kv;

/* Decoding defaults of a generative model (generation_config.json, and the
 * pipeline's task_specific_params), before a request's own parameters. */
typedef struct model_gen_defaults {
    bool do_sample;
    int max_length;       /* prompt + new tokens, 0 = unset */
    int max_new_tokens;   /* 0 = unset */
    float temperature, top_p, repetition_penalty;
    int top_k;
    int num_beams;
    /* The text-generation pipeline's overrides (config.json
     * task_specific_params["text-generation"]); -1 / 0 when absent. */
    int pipeline_do_sample;  /* -1 unset, else 0/1 */
    int pipeline_max_length; /* 0 unset */
} model_gen_defaults;

typedef struct model model;

typedef struct model_ops {
    void (*free)(model *m);
    /* Arena bytes a forward needs for up to max_tokens tokens in sequences of
     * at most max_len tokens. */
    size_t (*scratch_size)(const model *m, int max_tokens, int max_len);
    /* MODEL_TASK_CLASSIFY: logits (n_seq, n_labels) for a batch. */
    int (*classify)(const model *m, const model_batch *b, eng_arena *a, float *logits, eng_err *err);
    /* MODEL_TASK_GENERATE: floats a cache of capacity tokens takes. */
    size_t (*kv_floats)(const model *m, int capacity);
    /* MODEL_TASK_GENERATE: feeds sequence s its new tokens (b's sequence s)
     * after the kv[s]->len it has seen, appends them to kv[s], and writes the
     * logits of its last new token: logits (n_seq, vocab_size). */
    int (*generate_step)(const model *m, const model_batch *b, model_kv *const *kv, eng_arena *a,
                         float *logits, eng_err *err);
    /* MODEL_TASK_IMAGE_TEXT: projected text features (n_seq, proj_dim), before
     * L2 normalisation, of sequences that end with the end-of-text token. */
    int (*embed_text)(const model *m, const model_batch *b, eng_arena *a, float *out, eng_err *err);
    /* MODEL_TASK_IMAGE_TEXT: projected image features (n, proj_dim) of n
     * preprocessed images, pixels (n, 3, image_size, image_size). */
    int (*embed_image)(const model *m, const float *pixels, int n, eng_arena *a, float *out,
                       eng_err *err);
    /* MODEL_TASK_IMAGE_TEXT: arena bytes for n images (texts use scratch_size). */
    size_t (*image_scratch_size)(const model *m, int n);
} model_ops;

struct model {
    const model_ops *ops;
    model_task task;
    char *architecture;   /* config.json's, e.g. "DistilBertForSequenceClassification" */
    char *dir;            /* the folder it was loaded from */
    tok_tokenizer *tok;
    int max_positions;    /* the longest input the model takes, in tokens */
    eng_dtype dtype;

    /* MODEL_TASK_CLASSIFY */
    char **labels;        /* (n_labels) id2label */
    size_t n_labels;
    bool multi_label;     /* problem_type multi_label_classification: sigmoid, not softmax */

    /* MODEL_TASK_GENERATE */
    int vocab_size;       /* logits per position */
    int32_t eos_id;       /* -1: none */
    bool clean_up_spaces; /* tokenizer_config's clean_up_tokenization_spaces (pipeline output) */
    model_gen_defaults gen;

    /* MODEL_TASK_IMAGE_TEXT */
    int proj_dim;         /* embedding size */
    int image_size;       /* pixels per side the vision tower takes */
    float logit_scale;    /* stored (log) value; similarities are scaled by exp of it */
    img_preproc_cfg preproc;
};

/* Loads the model in dir. Every failure is an error naming the file and the
 * field or tensor at fault; nothing is left allocated. */
int model_load(const char *dir, const model_load_opts *opts, model **out, eng_err *err);
void model_free(model *m);

/* For families' load functions: fills the fields common to every model and
 * frees them again. */
int model_base_init(model *m, const model_ops *ops, model_task task, const char *dir,
                    const char *architecture, eng_err *err);
void model_base_free(model *m);

#endif
