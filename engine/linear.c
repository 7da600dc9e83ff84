#include "engine/linear.h"

#include <string.h>

#include "engine/blas.h"

void eng_linear_forward(const eng_linear *l, const float *x, int n, float *y)
{
    float beta = 0.0f;
    if (l->b) {
        /* Seeding y with the bias lets the GEMM add it (beta = 1) for free. */
        for (int i = 0; i < n; i++)
            memcpy(y + (size_t)i * l->out, l->b, (size_t)l->out * sizeof *y);
        beta = 1.0f;
    }
    if (l->layout == ENG_W_OUT_IN)
        eng_sgemm(false, true, n, l->out, l->in, 1.0f, x, l->in, l->w, l->in, beta, y, l->out);
    else
        eng_sgemm(false, false, n, l->out, l->in, 1.0f, x, l->in, l->w, l->out, beta, y, l->out);
}
