/* The architecture registry: config.json's "architectures" (or, failing
 * that, "model_type") -> the family that loads it. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/config.h"
#include "models/clip.h"
#include "models/distilbert.h"
#include "models/gpt2.h"
#include "models/model.h"

typedef int (*model_load_fn)(const char *dir, eng_config *cfg, const model_load_opts *opts,
                             model **out, eng_err *err);

static const struct {
    const char *architecture;
    const char *model_type; /* for configs without "architectures" */
    model_load_fn load;
} registry[] = {
    {"DistilBertForSequenceClassification", "distilbert", distilbert_load},
    {"GPT2LMHeadModel", "gpt2", gpt2_load},
    {"CLIPModel", "clip", clip_load},
};

const char *model_task_name(model_task t)
{
    switch (t) {
    case MODEL_TASK_CLASSIFY: return "text-classification";
    case MODEL_TASK_GENERATE: return "text-generation";
    case MODEL_TASK_IMAGE_TEXT: return "zero-shot-image-classification";
    }
    return "unknown";
}

static model_load_fn find_loader(eng_config *cfg)
{
    const char *arch = eng_config_first_str(cfg, "architectures");
    const char *type = eng_config_str_or(cfg, "model_type", "");
    for (size_t i = 0; i < sizeof registry / sizeof *registry; i++)
        if (arch ? strcmp(arch, registry[i].architecture) == 0
                 : strcmp(type, registry[i].model_type) == 0)
            return registry[i].load;
    return NULL;
}

int model_load(const char *dir, const model_load_opts *opts, model **out, eng_err *err)
{
    char path[PATH_MAX];
    eng_config *cfg;
    snprintf(path, sizeof path, "%s/config.json", dir);
    int rc = eng_config_load(path, &cfg, err);
    if (rc)
        return rc;
    model_load_fn load = find_loader(cfg);
    if (!load) {
        const char *arch = eng_config_first_str(cfg, "architectures");
        rc = eng_err_set(err, ENG_EUNSUPPORTED,
                         "%s: architecture \"%s\" is not supported; predictd serves "
                         "DistilBertForSequenceClassification, GPT2LMHeadModel and CLIPModel",
                         path, arch ? arch : eng_config_str_or(cfg, "model_type", "(none)"));
    } else if (opts && opts->dtype != ENG_F32 && opts->dtype != ENG_F16 &&
               opts->dtype != ENG_BF16 && opts->dtype != ENG_I8) {
        rc = eng_err_set(err, ENG_EUNSUPPORTED, "%s: weights can be held as f32, f16, bf16 or "
                         "int8, not %s", dir, eng_dtypes[opts->dtype].name);
    } else {
        model_load_opts dflt = {.dtype = ENG_F32};
        rc = load(dir, cfg, opts ? opts : &dflt, out, err);
    }
    eng_config_free(cfg);
    return rc;
}

void model_free(model *m)
{
    if (m)
        m->ops->free(m);
}

int model_base_init(model *m, const model_ops *ops, model_task task, const char *dir,
                    const char *architecture, eng_err *err)
{
    m->ops = ops;
    m->task = task;
    m->dtype = ENG_F32;
    m->dir = strdup(dir);
    m->architecture = strdup(architecture);
    if (!m->dir || !m->architecture)
        return eng_err_set(err, ENG_ENOMEM, "%s: out of memory", dir);
    return 0;
}

void model_base_free(model *m)
{
    tok_tokenizer_free(m->tok);
    for (size_t i = 0; i < m->n_labels; i++)
        free(m->labels[i]);
    free(m->labels);
    free(m->dir);
    free(m->architecture);
}
