/* GPT2LMHeadModel. */
#ifndef GPT2_H
#define GPT2_H

#include "engine/config.h"
#include "models/model.h"

int gpt2_load(const char *dir, eng_config *cfg, const model_load_opts *opts, model **out,
              eng_err *err);

#endif
