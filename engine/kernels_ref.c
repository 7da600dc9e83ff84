/* The reference kernels: plain C, any architecture, the definition every SIMD
 * level is held to (see engine/kernels.h). Written for clarity, not speed:
 * one output at a time, the packed layout read through its index formula. */
#include "engine/kernels.h"

#include <math.h>

/* ---- INT8 ------------------------------------------------------------------- */

/* Quantises one row: [min(x, 0), max(x, 0)] onto [0, 255]. NaN elements are
 * skipped by the min/max (as minps/maxps skip them when the running value is
 * the second operand) and quantise to 0. */
static void quant_row_ref(const float *x, int in, uint8_t *q, int kp, float *sx, int32_t *zp)
{
    float mn = 0.0f, mx = 0.0f, inv;
    for (int k = 0; k < in; k++) {
        mn = x[k] < mn ? x[k] : mn;
        mx = x[k] > mx ? x[k] : mx;
    }
    eng_i8_row_params(mn, mx, sx, &inv, zp);
    for (int k = 0; k < in; k++) {
        float r = eng_rne(x[k] * inv);
        /* Clamping before the conversion keeps (int) defined; -256 stands for
         * what cvtps2dq makes of NaN (INT_MIN), and both clamp to 0 below. */
        r = !(r >= -256.0f) ? -256.0f : r > 511.0f ? 511.0f : r;
        int v = (int)r + *zp;
        q[k] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
    for (int k = in; k < kp; k++)
        q[k] = 0;
}

void eng_i8_quant_ref(const float *x, int in, int m0, int m1, uint8_t *q, int kp, float *sx,
                      int32_t *zp)
{
    for (int m = m0; m < m1; m++)
        quant_row_ref(x + (size_t)m * in, in, q + (size_t)m * kp, kp, sx + m, zp + m);
}

/* y[m][o] = eng_i8_out(Σ_k q[m][k] w[o][k], ...), w read from the panels. */
static void i8_gemm_ref(const eng_wpack *w, const eng_act *x, int m0, int m1, int p0, int p1,
                        float *y)
{
    const int8_t *W = w->w;
    int groups = w->kp / 4;
    for (int p = p0; p < p1; p++) {
        const int8_t *panel = W + (size_t)p * groups * ENG_KP_NR * 4;
        for (int m = m0; m < m1; m++) {
            const uint8_t *q = x->q + (size_t)m * x->ldq;
            for (int c = 0; c < ENG_KP_NR && p * ENG_KP_NR + c < w->out; c++) {
                int o = p * ENG_KP_NR + c;
                int32_t dot = 0;
                for (int k = 0; k < w->kp; k++)
                    dot += (int32_t)q[k] * panel[((size_t)(k / 4) * ENG_KP_NR + c) * 4 + k % 4];
                y[(size_t)m * w->out + o] =
                    eng_i8_out(dot, x->zp[m], w->wsum[o], x->sx[m], w->scale[o], w->bias[o]);
            }
        }
    }
}

/* ---- Float weights: F32, FP16 and BF16 ------------------------------------------ */

/* Weight i of a float pack, widened exactly to float. */
static float float_weight(const eng_wpack *w, size_t i)
{
    if (w->dtype == ENG_F32)
        return ((const float *)w->w)[i];
    uint16_t h = ((const uint16_t *)w->w)[i];
    return w->dtype == ENG_F16 ? eng_f16_to_f32(h) : eng_bf16_to_f32(h);
}

/* y[m][o] = fma chain over k ascending, starting from 0, then + bias: the
 * order every SIMD level keeps, lane by lane. */
static void float_gemm_ref(const eng_wpack *w, const eng_act *x, int m0, int m1, int p0, int p1,
                           float *y)
{
    for (int p = p0; p < p1; p++) {
        size_t panel = (size_t)p * w->in * ENG_KP_NR;
        for (int m = m0; m < m1; m++) {
            const float *xr = x->x + (size_t)m * w->in;
            for (int c = 0; c < ENG_KP_NR && p * ENG_KP_NR + c < w->out; c++) {
                float acc = 0.0f;
                for (int k = 0; k < w->in; k++)
                    acc = fmaf(xr[k], float_weight(w, panel + (size_t)k * ENG_KP_NR + c), acc);
                int o = p * ENG_KP_NR + c;
                y[(size_t)m * w->out + o] = acc + w->bias[o];
            }
        }
    }
}

const eng_kernels eng_kernels_ref = {
    .name = "ref",
    .quant = eng_i8_quant_ref,
    .gemm = {[ENG_I8] = i8_gemm_ref, [ENG_F32] = float_gemm_ref, [ENG_F16] = float_gemm_ref,
             [ENG_BF16] = float_gemm_ref},
};
