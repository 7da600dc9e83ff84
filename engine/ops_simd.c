#include "engine/ops_simd.h"

#include <math.h>

#include "engine/cpu.h"
#include "engine/ops.h"

#if defined(__x86_64__)
#include <immintrin.h>

/* Coefficients shared by both widths. exp: 2^n * e^r with |r| <= ln2/2 and a
 * degree-6 Taylor polynomial (error below 2e-7 relative). */
#define LOG2E 1.44269504088896341f
#define LN2_HI 0.693359375f
#define LN2_LO -2.12194440e-4f
#define EXP_MAX 88.3762626647949f
#define EXP_MIN -87.3365447505531f
/* erf, A&S 7.1.26: 1 - t(a1 + t(a2 + t(a3 + t(a4 + t a5)))) e^{-x^2}, t = 1/(1+px). */
#define ERF_P 0.3275911f
#define ERF_A1 0.254829592f
#define ERF_A2 -0.284496736f
#define ERF_A3 1.421413741f
#define ERF_A4 -1.453152027f
#define ERF_A5 1.061405429f

/* ---- AVX-512 ------------------------------------------------------------ */

__attribute__((target("avx512f"))) static inline __m512 exp512(__m512 x)
{
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(EXP_MIN)), _mm512_set1_ps(EXP_MAX));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(LOG2E)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* x / (1 + exp(-g)): x * sigmoid(g), the form of quick_gelu and gelu_new. */
__attribute__((target("avx512f"))) static inline __m512 x_sigmoid512(__m512 x, __m512 g)
{
    __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), g));
    return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

/* 1 + erf(z), without cancellation for negative z. */
__attribute__((target("avx512f"))) static inline __m512 one_plus_erf512(__m512 z)
{
    __m512 a = _mm512_abs_ps(z);
    __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_fmadd_ps(a, _mm512_set1_ps(ERF_P), _mm512_set1_ps(1.0f)));
    __m512 p = _mm512_set1_ps(ERF_A5);
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(ERF_A4));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(ERF_A3));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(ERF_A2));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(ERF_A1));
    __m512 q = _mm512_mul_ps(_mm512_mul_ps(p, t), exp512(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), a), a)));
    __mmask16 neg = _mm512_cmp_ps_mask(z, _mm512_setzero_ps(), _CMP_LT_OQ);
    return _mm512_mask_blend_ps(neg, _mm512_sub_ps(_mm512_set1_ps(2.0f), q), q);
}

__attribute__((target("avx512f"))) static void gelu_erf_512(float *x, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        __m512 e = one_plus_erf512(_mm512_mul_ps(v, _mm512_set1_ps((float)M_SQRT1_2)));
        _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_mul_ps(v, _mm512_set1_ps(0.5f)), e));
    }
    if (i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        __m512 v = _mm512_maskz_loadu_ps(k, x + i);
        __m512 e = one_plus_erf512(_mm512_mul_ps(v, _mm512_set1_ps((float)M_SQRT1_2)));
        _mm512_mask_storeu_ps(x + i, k, _mm512_mul_ps(_mm512_mul_ps(v, _mm512_set1_ps(0.5f)), e));
    }
}

__attribute__((target("avx512f"))) static inline __m512 gelu_tanh_arg512(__m512 v)
{
    /* 2 sqrt(2/pi) (x + 0.044715 x^3) */
    __m512 v3 = _mm512_mul_ps(_mm512_mul_ps(v, v), v);
    return _mm512_mul_ps(_mm512_set1_ps(1.5957691216057308f),
                         _mm512_fmadd_ps(v3, _mm512_set1_ps(0.044715f), v));
}

__attribute__((target("avx512f"))) static void gelu_tanh_512(float *x, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        _mm512_storeu_ps(x + i, x_sigmoid512(v, gelu_tanh_arg512(v)));
    }
    if (i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        __m512 v = _mm512_maskz_loadu_ps(k, x + i);
        _mm512_mask_storeu_ps(x + i, k, x_sigmoid512(v, gelu_tanh_arg512(v)));
    }
}

__attribute__((target("avx512f"))) static void quick_gelu_512(float *x, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        _mm512_storeu_ps(x + i, x_sigmoid512(v, _mm512_mul_ps(v, _mm512_set1_ps(1.702f))));
    }
    if (i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        __m512 v = _mm512_maskz_loadu_ps(k, x + i);
        _mm512_mask_storeu_ps(x + i, k, x_sigmoid512(v, _mm512_mul_ps(v, _mm512_set1_ps(1.702f))));
    }
}

/* Three passes (max, exp and sum, scale), with the tail of fewer than 16
 * elements loaded once and kept in a register from the exp to the scaling:
 * reloading it after its masked store would wait for the store to retire
 * (masked stores do not forward to loads), a stall as long as the whole of a
 * short row's arithmetic. */
__attribute__((target("avx512f"))) static void softmax_512(float *x, int n)
{
    int nt = n & ~15;
    __mmask16 tail = (__mmask16)((1u << (n - nt)) - 1);
    __m512 xt = _mm512_maskz_loadu_ps(tail, x + nt);
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    for (int i = 0; i < nt; i += 16)
        vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(x + i));
    vmax = _mm512_mask_max_ps(vmax, tail, vmax, xt);
    __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(vmax)), sum = _mm512_setzero_ps();
    for (int i = 0; i < nt; i += 16) {
        __m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(x + i), m));
        _mm512_storeu_ps(x + i, e);
        sum = _mm512_add_ps(sum, e);
    }
    __m512 et = exp512(_mm512_sub_ps(xt, m));
    sum = _mm512_mask_add_ps(sum, tail, sum, et);
    __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
    for (int i = 0; i < nt; i += 16)
        _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), inv));
    _mm512_mask_storeu_ps(x + nt, tail, _mm512_mul_ps(et, inv));
}

/* LayerNorm rows: mean and variance in float over 16 lanes, then a double
 * reduction, two passes as the reference, so rows of any width stay within
 * 1e-6. Rows go in groups, phase by phase (sums, variances, output), so that
 * the group's rows overlap in the core and the scalar double tail of the
 * statistics (a division for the mean; a division, a square root and a
 * division for 1 / std: some 60 cycles of latency per row) runs once per
 * group in vectors of 8 rows. Vector and scalar divisions and square roots
 * round alike, so each row's result does not depend on its group. */

/* Σ x (in double after the 16-lane float sum), first adding the residual
 * into x when there is one. */
__attribute__((target("avx512f"))) static inline double ln_sum512(float *x, const float *residual,
                                                                  int d)
{
    __m512 s = _mm512_setzero_ps();
    int j = 0;
    for (; j + 16 <= d; j += 16) {
        __m512 v = _mm512_loadu_ps(x + j);
        if (residual) {
            v = _mm512_add_ps(v, _mm512_loadu_ps(residual + j));
            _mm512_storeu_ps(x + j, v);
        }
        s = _mm512_add_ps(s, v);
    }
    double sum = _mm512_reduce_add_ps(s);
    for (; j < d; j++) {
        if (residual)
            x[j] += residual[j];
        sum += x[j];
    }
    return sum;
}

/* Σ (x - mean)², in double after the 16-lane float sum. */
__attribute__((target("avx512f"))) static inline double ln_var512(const float *x, float mean, int d)
{
    __m512 m = _mm512_set1_ps(mean), s2 = _mm512_setzero_ps();
    int j = 0;
    for (; j + 16 <= d; j += 16) {
        __m512 t = _mm512_sub_ps(_mm512_loadu_ps(x + j), m);
        s2 = _mm512_fmadd_ps(t, t, s2);
    }
    double var = _mm512_reduce_add_ps(s2);
    for (; j < d; j++)
        var += (double)(x[j] - mean) * (x[j] - mean);
    return var;
}

__attribute__((target("avx512f"))) static inline void ln_out512(float *out, const float *x,
    float mean, float rstd, int d, const float *gamma, const float *beta)
{
    __m512 m = _mm512_set1_ps(mean), r = _mm512_set1_ps(rstd);
    int j = 0;
    for (; j + 16 <= d; j += 16) {
        __m512 t = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + j), m), r);
        _mm512_storeu_ps(out + j, _mm512_fmadd_ps(t, _mm512_loadu_ps(gamma + j), _mm512_loadu_ps(beta + j)));
    }
    for (; j < d; j++)
        out[j] = (x[j] - mean) * rstd * gamma[j] + beta[j];
}

__attribute__((target("avx512f"))) static void layernorm_rows_512(float *out, float *x,
    const float *residual, int n, int d, const float *gamma, const float *beta, float eps)
{
    /* Up to 8 rows a group, fewer when wide, so that the group's rows stay
     * in L1 across the three passes (16 KiB). */
    int group = d <= 512 ? 8 : d <= 4096 ? 4096 / d : 1;
    __m512d vd = _mm512_set1_pd((double)d);
    for (int r0 = 0; r0 < n; r0 += group) {
        int g = n - r0 < group ? n - r0 : group;
        double acc[8] = {0};
        float mean[8], rstd[8];
        for (int r = 0; r < g; r++) {
            size_t o = (size_t)(r0 + r) * d;
            acc[r] = ln_sum512(x + o, residual ? residual + o : NULL, d);
        }
        _mm256_storeu_ps(mean, _mm512_cvtpd_ps(_mm512_div_pd(_mm512_loadu_pd(acc), vd)));
        for (int r = 0; r < g; r++)
            acc[r] = ln_var512(x + (size_t)(r0 + r) * d, mean[r], d);
        __m512d v = _mm512_add_pd(_mm512_div_pd(_mm512_loadu_pd(acc), vd), _mm512_set1_pd(eps));
        v = _mm512_div_pd(_mm512_set1_pd(1.0), _mm512_sqrt_pd(v));
        _mm256_storeu_ps(rstd, _mm512_cvtpd_ps(v));
        for (int r = 0; r < g; r++) {
            size_t o = (size_t)(r0 + r) * d;
            ln_out512(out + o, x + o, mean[r], rstd[r], d, gamma, beta);
        }
    }
}

/* ---- Small attention heads (AVX-512) --------------------------------------
 *
 * kᵀ goes once into a buffer on the stack, (hd, 16 nc) for Lk <= 16 nc keys,
 * so that a query's scores come out as nc vectors of 16 keys: fused
 * multiply-adds of its elements broadcast against rows of kᵀ. The softmax
 * then runs on those registers; only the probabilities go through memory, to
 * be broadcast against the rows of v. Queries go in blocks of R, which share
 * every load of kᵀ and v and give the core R independent chains. */

#define T512A __attribute__((target("avx512f")))
#define INLINE512 static inline __attribute__((always_inline))

/* Lanes [0, n) of a 16-lane vector, n clipped to [0, 16]. */
static inline __mmask16 lanes16(int n)
{
    return n >= 16 ? (__mmask16)0xffff : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

/* r[i][j] becomes r[j][i]. */
T512A INLINE512 void transpose16(__m512 r[16])
{
    __m512 t[16];
    #pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    #pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    #pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
        t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
    }
    #pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
    }
}

/* kt (hd, ldt) = kᵀ of keys [0, Lk), zeros past Lk, in 16 x 16 blocks. */
T512A static void transpose_keys512(const float *k, int ldk, int Lk, int hd, float *kt, int ldt)
{
    for (int j0 = 0; j0 < ldt; j0 += 16)
        for (int d0 = 0; d0 < hd; d0 += 16) {
            __mmask16 md = lanes16(hd - d0);
            __m512 r[16];
            #pragma GCC unroll 16
            for (int j = 0; j < 16; j++)
                r[j] = _mm512_maskz_loadu_ps(j0 + j < Lk ? md : 0, k + (size_t)(j0 + j) * ldk + d0);
            transpose16(r);
            for (int d = 0; d < 16 && d0 + d < hd; d++)
                _mm512_store_ps(kt + (size_t)(d0 + d) * ldt + j0, r[d]);
        }
}

/* Rows i0 .. i0+R-1 of out (those below Lq) = p v over the first seen keys,
 * those the last query of the block sees (the others' probabilities are 0
 * past their own), in two chains, over even and odd keys. */
T512A INLINE512 void attend_mix512(const float (*p)[ENG_SMALL_HEAD_LK], const float *v, int ldv,
                                   int seen, int i0, int Lq, int hd, float *out, int ldo, int R)
{
    for (int h = 0; h < hd; h += 16) {
        __mmask16 mh = lanes16(hd - h);
        __m512 acc0[4], acc1[4];
        #pragma GCC unroll 4
        for (int r = 0; r < R; r++)
            acc0[r] = acc1[r] = _mm512_setzero_ps();
        int j = 0;
        for (; j + 2 <= seen; j += 2) {
            __m512 v0 = _mm512_maskz_loadu_ps(mh, v + (size_t)j * ldv + h);
            __m512 v1 = _mm512_maskz_loadu_ps(mh, v + (size_t)(j + 1) * ldv + h);
            #pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                acc0[r] = _mm512_fmadd_ps(_mm512_set1_ps(p[r][j]), v0, acc0[r]);
                acc1[r] = _mm512_fmadd_ps(_mm512_set1_ps(p[r][j + 1]), v1, acc1[r]);
            }
        }
        if (j < seen) {
            __m512 v0 = _mm512_maskz_loadu_ps(mh, v + (size_t)j * ldv + h);
            #pragma GCC unroll 4
            for (int r = 0; r < R; r++)
                acc0[r] = _mm512_fmadd_ps(_mm512_set1_ps(p[r][j]), v0, acc0[r]);
        }
        #pragma GCC unroll 4
        for (int r = 0; r < R; r++)
            if (i0 + r < Lq)
                _mm512_mask_storeu_ps(out + (size_t)(i0 + r) * ldo + h, mh,
                                      _mm512_add_ps(acc0[r], acc1[r]));
    }
}

/* Queries i0 .. i0+R-1 of the head (those past Lq repeat the last one and
 * are not stored), with Lk <= 16 nc keys. The scores of a query sum two
 * chains, over even and odd dimensions, to halve their latency. */
T512A INLINE512 void attend_block512(const float *q, int ldq, const float *kt, const float *v,
                                     int ldv, int i0, int Lq, int Lk, int hd, float scale,
                                     bool causal, float *out, int ldo, int R, int nc)
{
    const int ldt = 16 * nc;
    float p[4][ENG_SMALL_HEAD_LK] __attribute__((aligned(64)));
    const float *qr[4];
    int seen[4];
    __m512 s0[4][4], s1[4][4];
    #pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        int i = i0 + r < Lq ? i0 + r : Lq - 1;
        qr[r] = q + (size_t)i * ldq;
        seen[r] = causal ? Lk - Lq + i + 1 : Lk;
        #pragma GCC unroll 4
        for (int c = 0; c < nc; c++)
            s0[r][c] = s1[r][c] = _mm512_setzero_ps();
    }
    int d = 0;
    for (; d + 2 <= hd; d += 2) {
        const float *t = kt + (size_t)d * ldt;
        #pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            __m512 a0 = _mm512_set1_ps(qr[r][d]), a1 = _mm512_set1_ps(qr[r][d + 1]);
            #pragma GCC unroll 4
            for (int c = 0; c < nc; c++) {
                s0[r][c] = _mm512_fmadd_ps(a0, _mm512_load_ps(t + 16 * c), s0[r][c]);
                s1[r][c] = _mm512_fmadd_ps(a1, _mm512_load_ps(t + ldt + 16 * c), s1[r][c]);
            }
        }
    }
    if (d < hd) {
        #pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            __m512 a0 = _mm512_set1_ps(qr[r][d]);
            #pragma GCC unroll 4
            for (int c = 0; c < nc; c++)
                s0[r][c] = _mm512_fmadd_ps(a0, _mm512_load_ps(kt + (size_t)d * ldt + 16 * c),
                                           s0[r][c]);
        }
    }
    /* The softmax of each query over its seen keys; unseen keys get 0. */
    __m512 vs = _mm512_set1_ps(scale);
    #pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        __m512 vmax = _mm512_set1_ps(-INFINITY), sum = _mm512_setzero_ps();
        __mmask16 mk[4];
        #pragma GCC unroll 4
        for (int c = 0; c < nc; c++) {
            mk[c] = lanes16(seen[r] - 16 * c);
            s0[r][c] = _mm512_mul_ps(_mm512_add_ps(s0[r][c], s1[r][c]), vs);
            vmax = _mm512_mask_max_ps(vmax, mk[c], vmax, s0[r][c]);
        }
        __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
        #pragma GCC unroll 4
        for (int c = 0; c < nc; c++) {
            s0[r][c] = _mm512_maskz_mov_ps(mk[c], exp512(_mm512_sub_ps(s0[r][c], m)));
            sum = _mm512_add_ps(sum, s0[r][c]);
        }
        __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
        #pragma GCC unroll 4
        for (int c = 0; c < nc; c++)
            _mm512_store_ps(p[r] + 16 * c, _mm512_mul_ps(s0[r][c], inv));
    }
    attend_mix512(p, v, ldv, seen[R - 1], i0, Lq, hd, out, ldo, R);
}

/* Every query of the head in blocks of R (a constant, as nc). */
T512A INLINE512 void attend_rows512(const float *q, int ldq, const float *kt, const float *v,
                                    int ldv, int Lq, int Lk, int hd, float scale, bool causal,
                                    float *out, int ldo, int R, int nc)
{
    for (int i0 = 0; i0 < Lq; i0 += R) {
        if (Lq - i0 == 1)
            attend_block512(q, ldq, kt, v, ldv, i0, Lq, Lk, hd, scale, causal, out, ldo, 1, nc);
        else
            attend_block512(q, ldq, kt, v, ldv, i0, Lq, Lk, hd, scale, causal, out, ldo, R, nc);
    }
}

T512A static void attend_small_512(const float *q, int ldq, const float *k, int ldk,
                                   const float *v, int ldv, int Lq, int Lk, int hd, float scale,
                                   bool causal, float *out, int ldo)
{
    int nc = (Lk + 15) / 16;
    float kt[ENG_SMALL_HEAD_HD * ENG_SMALL_HEAD_LK] __attribute__((aligned(64)));
    transpose_keys512(k, ldk, Lk, hd, kt, 16 * nc);
    /* R * nc * 2 score accumulators: at most 16 of the 32 registers. */
    switch (nc) {
    case 1: attend_rows512(q, ldq, kt, v, ldv, Lq, Lk, hd, scale, causal, out, ldo, 4, 1); break;
    case 2: attend_rows512(q, ldq, kt, v, ldv, Lq, Lk, hd, scale, causal, out, ldo, 4, 2); break;
    case 3: attend_rows512(q, ldq, kt, v, ldv, Lq, Lk, hd, scale, causal, out, ldo, 2, 3); break;
    default: attend_rows512(q, ldq, kt, v, ldv, Lq, Lk, hd, scale, causal, out, ldo, 2, 4); break;
    }
}

static const eng_ops_impl avx512_impl = {"avx512", gelu_erf_512, gelu_tanh_512, quick_gelu_512,
                                         softmax_512, layernorm_rows_512, attend_small_512};

const eng_ops_impl *eng_ops_avx512(void)
{
    return eng_cpu_has_avx512() ? &avx512_impl : NULL;
}

/* ---- AVX2 + FMA ------------------------------------------------------------ */

#define AVX2 __attribute__((target("avx2,fma")))

AVX2 static inline __m256 exp256(__m256 x)
{
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(EXP_MIN)), _mm256_set1_ps(EXP_MAX));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(LOG2E)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
    __m256 p = _mm256_set1_ps(1.0f / 720);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

AVX2 static inline __m256 x_sigmoid256(__m256 x, __m256 g)
{
    __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), g));
    return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

AVX2 static inline __m256 one_plus_erf256(__m256 z)
{
    __m256 a = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), z);
    __m256 t = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_fmadd_ps(a, _mm256_set1_ps(ERF_P), _mm256_set1_ps(1.0f)));
    __m256 p = _mm256_set1_ps(ERF_A5);
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(ERF_A4));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(ERF_A3));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(ERF_A2));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(ERF_A1));
    __m256 q = _mm256_mul_ps(_mm256_mul_ps(p, t), exp256(_mm256_mul_ps(_mm256_sub_ps(_mm256_setzero_ps(), a), a)));
    __m256 neg = _mm256_cmp_ps(z, _mm256_setzero_ps(), _CMP_LT_OQ);
    return _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(2.0f), q), q, neg);
}

AVX2 static inline __m256 gelu_erf8(__m256 v)
{
    __m256 e = one_plus_erf256(_mm256_mul_ps(v, _mm256_set1_ps((float)M_SQRT1_2)));
    return _mm256_mul_ps(_mm256_mul_ps(v, _mm256_set1_ps(0.5f)), e);
}

AVX2 static inline __m256 gelu_tanh8(__m256 v)
{
    __m256 v3 = _mm256_mul_ps(_mm256_mul_ps(v, v), v);
    __m256 g = _mm256_mul_ps(_mm256_set1_ps(1.5957691216057308f), _mm256_fmadd_ps(v3, _mm256_set1_ps(0.044715f), v));
    return x_sigmoid256(v, g);
}

AVX2 static inline __m256 quick_gelu8(__m256 v)
{
    return x_sigmoid256(v, _mm256_mul_ps(v, _mm256_set1_ps(1.702f)));
}

/* Applies f eight at a time; the tail goes through a padded copy so every
 * element sees the same arithmetic. */
#define AVX2_MAP(name, f)                                              \
    AVX2 static void name(float *x, size_t n)                          \
    {                                                                  \
        size_t i = 0;                                                  \
        for (; i + 8 <= n; i += 8)                                     \
            _mm256_storeu_ps(x + i, f(_mm256_loadu_ps(x + i)));        \
        if (i < n) {                                                   \
            float tmp[8] = {0};                                        \
            for (size_t k = 0; k < n - i; k++)                         \
                tmp[k] = x[i + k];                                     \
            _mm256_storeu_ps(tmp, f(_mm256_loadu_ps(tmp)));            \
            for (size_t k = 0; k < n - i; k++)                         \
                x[i + k] = tmp[k];                                     \
        }                                                              \
    }

AVX2_MAP(gelu_erf_256, gelu_erf8)
AVX2_MAP(gelu_tanh_256, gelu_tanh8)
AVX2_MAP(quick_gelu_256, quick_gelu8)

AVX2 static void softmax_256(float *x, int n)
{
    float max = -INFINITY;
    for (int i = 0; i < n; i++)
        max = x[i] > max ? x[i] : max;
    __m256 m = _mm256_set1_ps(max), sum = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), m));
        _mm256_storeu_ps(x + i, e);
        sum = _mm256_add_ps(sum, e);
    }
    float tmp[8], total = 0;
    for (int k = 0; k < 8; k++)
        tmp[k] = k < n - i ? x[i + k] - max : -INFINITY;
    _mm256_storeu_ps(tmp, exp256(_mm256_loadu_ps(tmp)));
    for (int k = 0; k < n - i; k++)
        total += x[i + k] = tmp[k];
    _mm256_storeu_ps(tmp, sum);
    for (int k = 0; k < 8; k++)
        total += tmp[k];
    float inv = 1.0f / total;
    for (i = 0; i < n; i++)
        x[i] *= inv;
}

AVX2 static inline float hsum256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

/* The AVX-512 LayerNorm's three passes, eight lanes wide, a row at a time:
 * the statistics' sums in float vectors, finished in double. */
AVX2 static void layernorm_row_256(float *out, float *x, const float *residual, int d,
                                   const float *gamma, const float *beta, float eps)
{
    __m256 s = _mm256_setzero_ps();
    int j = 0;
    for (; j + 8 <= d; j += 8) {
        __m256 v = _mm256_loadu_ps(x + j);
        if (residual) {
            v = _mm256_add_ps(v, _mm256_loadu_ps(residual + j));
            _mm256_storeu_ps(x + j, v);
        }
        s = _mm256_add_ps(s, v);
    }
    double sum = hsum256(s);
    for (; j < d; j++) {
        if (residual)
            x[j] += residual[j];
        sum += x[j];
    }
    float mean = (float)(sum / d);
    __m256 m = _mm256_set1_ps(mean), s2 = _mm256_setzero_ps();
    for (j = 0; j + 8 <= d; j += 8) {
        __m256 t = _mm256_sub_ps(_mm256_loadu_ps(x + j), m);
        s2 = _mm256_fmadd_ps(t, t, s2);
    }
    double var = hsum256(s2);
    for (; j < d; j++)
        var += (double)(x[j] - mean) * (x[j] - mean);
    float rstd = (float)(1.0 / sqrt(var / d + eps));
    __m256 r = _mm256_set1_ps(rstd);
    for (j = 0; j + 8 <= d; j += 8) {
        __m256 t = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + j), m), r);
        _mm256_storeu_ps(out + j, _mm256_fmadd_ps(t, _mm256_loadu_ps(gamma + j),
                                                  _mm256_loadu_ps(beta + j)));
    }
    for (; j < d; j++)
        out[j] = (x[j] - mean) * rstd * gamma[j] + beta[j];
}

AVX2 static void layernorm_rows_256(float *out, float *x, const float *residual, int n, int d,
                                    const float *gamma, const float *beta, float eps)
{
    for (int i = 0; i < n; i++) {
        size_t o = (size_t)i * d;
        layernorm_row_256(out + o, x + o, residual ? residual + o : NULL, d, gamma, beta, eps);
    }
}

static const eng_ops_impl avx2_impl = {"avx2", gelu_erf_256, gelu_tanh_256, quick_gelu_256,
                                       softmax_256, layernorm_rows_256, NULL};

const eng_ops_impl *eng_ops_avx2(void)
{
    const eng_cpu_features *f = eng_cpu();
    return f->avx2 && f->fma ? &avx2_impl : NULL;
}

#else /* not x86-64: only the references in ops.c */

const eng_ops_impl *eng_ops_avx512(void)
{
    return NULL;
}

const eng_ops_impl *eng_ops_avx2(void)
{
    return NULL;
}

#endif
