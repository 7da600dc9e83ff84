#include "engine/attention.h"

#include <math.h>

#include "engine/blas.h"
#include "engine/ops.h"

void eng_attend_head(const float *q, int ldq, const float *k, int ldk, const float *v, int ldv,
                     int Lq, int Lk, int hd, float scale, bool causal, float *out, int ldo,
                     float *scores)
{
    eng_sgemm(false, true, Lq, Lk, hd, scale, q, ldq, k, ldk, 0.0f, scores, Lk);
    for (int i = 0; i < Lq; i++) {
        float *row = scores + (size_t)i * Lk;
        int seen = causal ? Lk - Lq + i + 1 : Lk;
        eng_softmax(row, seen);
        for (int j = seen; j < Lk; j++)
            row[j] = 0.0f;
    }
    eng_sgemm(false, false, Lq, hd, Lk, 1.0f, scores, Lk, v, ldv, 0.0f, out, ldo);
}

void eng_self_attention(const float *q, const float *k, const float *v, int ld, const int *seq_off,
                        int n_seq, int n_heads, int hd, bool causal, float *ctx, float *scores)
{
    int dim = n_heads * hd;
    float scale = 1.0f / sqrtf((float)hd);
    for (int s = 0; s < n_seq; s++) {
        int r0 = seq_off[s], L = seq_off[s + 1] - seq_off[s];
        for (int h = 0; h < n_heads; h++) {
            size_t in = (size_t)r0 * ld + (size_t)h * hd;
            eng_attend_head(q + in, ld, k + in, ld, v + in, ld, L, L, hd, scale, causal,
                            ctx + (size_t)r0 * dim + (size_t)h * hd, dim, scores);
        }
    }
}
