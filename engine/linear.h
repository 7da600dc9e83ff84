/* A linear layer y = x Wᵀ + b, the call every model makes for its
 * projections. The weight's storage (layout now; dtype and packing with the
 * quantized kernels) is the layer's business, not the model's. */
#ifndef ENG_LINEAR_H
#define ENG_LINEAR_H

#include "engine/error.h"

typedef enum eng_wlayout {
    ENG_W_OUT_IN, /* torch nn.Linear: weight (out, in) */
    ENG_W_IN_OUT, /* GPT-2 Conv1D: weight (in, out) */
} eng_wlayout;

typedef struct eng_linear {
    int in, out;
    eng_wlayout layout;
    const float *w; /* (out, in) or (in, out) per layout; borrowed from the checkpoint */
    const float *b; /* (out) or NULL */
} eng_linear;

/* y (n, out) = x (n, in) · Wᵀ + b. x and y must not overlap. */
void eng_linear_forward(const eng_linear *l, const float *x, int n, float *y);

#endif
