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

__attribute__((target("avx512f"))) static void softmax_512(float *x, int n)
{
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    int i = 0;
    for (; i + 16 <= n; i += 16)
        vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(x + i));
    __mmask16 tail = (__mmask16)((1u << (n - i)) - 1);
    vmax = _mm512_mask_max_ps(vmax, tail, vmax, _mm512_maskz_loadu_ps(tail, x + i));
    __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(vmax)), sum = _mm512_setzero_ps();
    for (i = 0; i + 16 <= n; i += 16) {
        __m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(x + i), m));
        _mm512_storeu_ps(x + i, e);
        sum = _mm512_add_ps(sum, e);
    }
    if (i < n) {
        __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, x + i), m));
        _mm512_mask_storeu_ps(x + i, tail, e);
        sum = _mm512_mask_add_ps(sum, tail, sum, e);
    }
    __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
    for (i = 0; i + 16 <= n; i += 16)
        _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), inv));
    if (i < n)
        _mm512_mask_storeu_ps(x + i, tail, _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, x + i), inv));
}

/* Mean and variance in float over 16 lanes, then a double reduction: two
 * passes, as the reference, so rows of any width stay within 1e-6. */
__attribute__((target("avx512f"))) static void layernorm_row_512(float *out, float *x,
    const float *residual, int d, const float *gamma, const float *beta, float eps)
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
    float mean = (float)(sum / d);
    __m512 m = _mm512_set1_ps(mean), s2 = _mm512_setzero_ps();
    for (j = 0; j + 16 <= d; j += 16) {
        __m512 t = _mm512_sub_ps(_mm512_loadu_ps(x + j), m);
        s2 = _mm512_fmadd_ps(t, t, s2);
    }
    double var = _mm512_reduce_add_ps(s2);
    for (; j < d; j++)
        var += (double)(x[j] - mean) * (x[j] - mean);
    float rstd = (float)(1.0 / sqrt(var / d + eps));
    __m512 r = _mm512_set1_ps(rstd);
    for (j = 0; j + 16 <= d; j += 16) {
        __m512 t = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + j), m), r);
        _mm512_storeu_ps(out + j, _mm512_fmadd_ps(t, _mm512_loadu_ps(gamma + j), _mm512_loadu_ps(beta + j)));
    }
    for (; j < d; j++)
        out[j] = (x[j] - mean) * rstd * gamma[j] + beta[j];
}

static const eng_ops_impl avx512_impl = {"avx512", gelu_erf_512, gelu_tanh_512, quick_gelu_512,
                                         softmax_512, layernorm_row_512};

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

static const eng_ops_impl avx2_impl = {"avx2", gelu_erf_256, gelu_tanh_256, quick_gelu_256,
                                       softmax_256, eng_layernorm_row_ref};

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
