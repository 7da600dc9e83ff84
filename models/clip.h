/* CLIPModel: a vision and a text transformer projected into one space. */
#ifndef CLIP_H
#define CLIP_H

#include "engine/config.h"
#include "models/model.h"

int clip_load(const char *dir, eng_config *cfg, const model_load_opts *opts, model **out,
              eng_err *err);

/* L2-normalises n rows of d floats in place (CLIP's image_embeds/text_embeds). */
void clip_normalize(float *x, int n, int d);

#endif
