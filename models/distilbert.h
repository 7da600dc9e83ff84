/* DistilBertForSequenceClassification. */
#ifndef DISTILBERT_H
#define DISTILBERT_H

#include "engine/config.h"
#include "models/model.h"

int distilbert_load(const char *dir, eng_config *cfg, const model_load_opts *opts, model **out,
                    eng_err *err);

#endif
