/* AVX-512 kernels: the avx512 level (F/BW/DQ/VL, int8 through vpmaddwd) and
 * the avx512vnni level (int8 through vpdpbusd). Both share the quantiser and
 * the float-weight (F32/FP16/BF16) kernels. Every function carries its own target attribute, so
 * this file builds without -mavx512* and the binary runs on any x86-64; the
 * dispatcher calls these only on CPUs that have the features.
 *
 * Each kernel gives the reference's result bit for bit (engine/kernels.h). */
#include "engine/kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#include <string.h>

#define T512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma,f16c")))
#define T512VNNI __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,fma,f16c")))
#define INLINE static inline __attribute__((always_inline))

enum { MR_VNNI = 6, MR_MADD = 3, MR_FLOAT = 6, KC_FLOAT = 768 };

static inline uint32_t load_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Lanes of y a 16-channel vector starting at channel o0 may write. */
static inline __mmask16 out_mask(int out, int o0)
{
    return out - o0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (out - o0)) - 1);
}

/* The 16-channel groups of panel p that hold outputs (1 to 4): a layer whose
 * out is not a multiple of 64 (32 outputs, 2 labels, GPT-2's 50257-row head)
 * skips the zero channels padding its last panel instead of multiplying them.
 * Each tile takes it as a constant (the switches below), so its accumulators
 * stay in registers. */
static inline int panel_groups(int out, int p)
{
    int left = out - p * ENG_KP_NR;
    return left >= ENG_KP_NR ? 4 : (left + 15) / 16;
}

/* ---- Activation quantiser ---------------------------------------------------- */

/* minps/maxps with the running value second skip NaN as the reference does;
 * masked-off tail lanes load 0, which cannot move a range that includes 0. */
T512 static void quant_row512(const float *x, int in, uint8_t *q, int kp, float *sx, int32_t *zp)
{
    __m512 vmn = _mm512_setzero_ps(), vmx = _mm512_setzero_ps();
    for (int k = 0; k < in; k += 16) {
        __mmask16 mk = out_mask(in, k);
        __m512 v = _mm512_maskz_loadu_ps(mk, x + k);
        vmn = _mm512_min_ps(v, vmn);
        vmx = _mm512_max_ps(v, vmx);
    }
    float inv;
    eng_i8_row_params(_mm512_reduce_min_ps(vmn), _mm512_reduce_max_ps(vmx), sx, &inv, zp);
    __m512 vinv = _mm512_set1_ps(inv);
    __m512i vzp = _mm512_set1_epi32(*zp), lo = _mm512_setzero_si512(), hi = _mm512_set1_epi32(255);
    for (int k = 0; k < in; k += 16) {
        __mmask16 mk = out_mask(in, k);
        __m512 v = _mm512_maskz_loadu_ps(mk, x + k);
        __m512i r = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v, vinv)), vzp);
        r = _mm512_min_epi32(_mm512_max_epi32(r, lo), hi);
        _mm512_mask_cvtepi32_storeu_epi8(q + k, mk, r);
    }
    memset(q + in, 0, (size_t)(kp - in));
}

T512 static void quant512(const float *x, int in, int m0, int m1, uint8_t *q, int kp, float *sx,
                          int32_t *zp)
{
    for (int m = m0; m < m1; m++)
        quant_row512(x + (size_t)m * in, in, q + (size_t)m * kp, kp, sx + m, zp + m);
}

/* ---- INT8 epilogue ------------------------------------------------------------ */

/* Writes y[m][o0..o0+15] from the int32 sums acc, as eng_i8_out. */
T512 INLINE void i8_store512(const eng_wpack *w, const eng_act *x, int m, int o0, __m512i acc,
                             float *y)
{
    if (o0 >= w->out)
        return;
    __m512i corr = _mm512_mullo_epi32(_mm512_set1_epi32(x->zp[m]), _mm512_load_si512(w->wsum + o0));
    __m512 v = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc, corr));
    v = _mm512_mul_ps(v, _mm512_set1_ps(x->sx[m]));
    v = _mm512_mul_ps(v, _mm512_load_ps(w->scale + o0));
    v = _mm512_add_ps(v, _mm512_load_ps(w->bias + o0));
    _mm512_mask_storeu_ps(y + (size_t)m * w->out + o0, out_mask(w->out, o0), v);
}

/* ---- INT8 with vpdpbusd --------------------------------------------------------- */

/* A micro-tile: rows m..m+mr-1 times the first nj groups of 16 channels of
 * panel p. Per group of 4 k: nj 64-byte loads of weights, one broadcast of 4
 * activation bytes per row, nj * mr vpdpbusd. mr and nj are constants at
 * every call site, so acc lives in registers (24 of the 32 zmm at mr = 6). */
T512VNNI INLINE void i8_tile_vnni(const eng_wpack *w, const eng_act *x, int m, int mr, int nj,
                                  int p, float *y)
{
    const int groups = w->kp / 4;
    const int8_t *wp = (const int8_t *)w->w + (size_t)p * groups * ENG_KP_NR * 4;
    const uint8_t *q = x->q + (size_t)m * x->ldq;
    __m512i acc[MR_VNNI][4];
    #pragma GCC unroll 8
    for (int i = 0; i < mr; i++)
        #pragma GCC unroll 4
        for (int j = 0; j < nj; j++)
            acc[i][j] = _mm512_setzero_si512();
    for (int g = 0; g < groups; g++, wp += ENG_KP_NR * 4) {
        __m512i b[4];
        #pragma GCC unroll 4
        for (int j = 0; j < nj; j++)
            b[j] = _mm512_load_si512(wp + 64 * j);
        #pragma GCC unroll 8
        for (int i = 0; i < mr; i++) {
            __m512i a = _mm512_set1_epi32((int)load_u32(q + (size_t)i * x->ldq + 4 * g));
            #pragma GCC unroll 4
            for (int j = 0; j < nj; j++)
                acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], a, b[j]);
        }
    }
    #pragma GCC unroll 8
    for (int i = 0; i < mr; i++)
        #pragma GCC unroll 4
        for (int j = 0; j < nj; j++)
            i8_store512(w, x, m + i, p * ENG_KP_NR + 16 * j, acc[i][j], y);
}

/* One panel's rows [m0, m1) in tiles of MR_VNNI, nj groups wide. */
T512VNNI INLINE void i8_rows_vnni(const eng_wpack *w, const eng_act *x, int m0, int m1, int nj,
                                  int p, float *y)
{
    for (int m = m0, mr; m < m1; m += mr) {
        mr = eng_tile_rows(m1 - m, MR_VNNI);
        switch (mr) {
        case 1: i8_tile_vnni(w, x, m, 1, nj, p, y); break;
        case 2: i8_tile_vnni(w, x, m, 2, nj, p, y); break;
        case 3: i8_tile_vnni(w, x, m, 3, nj, p, y); break;
        case 4: i8_tile_vnni(w, x, m, 4, nj, p, y); break;
        case 5: i8_tile_vnni(w, x, m, 5, nj, p, y); break;
        default: i8_tile_vnni(w, x, m, 6, nj, p, y); break;
        }
    }
}

T512VNNI static void i8_gemm_avx512vnni(const eng_wpack *w, const eng_act *x, int m0, int m1,
                                        int p0, int p1, float *y)
{
    for (int p = p0; p < p1; p++) {
        switch (panel_groups(w->out, p)) {
        case 1: i8_rows_vnni(w, x, m0, m1, 1, p, y); break;
        case 2: i8_rows_vnni(w, x, m0, m1, 2, p, y); break;
        case 3: i8_rows_vnni(w, x, m0, m1, 3, p, y); break;
        default: i8_rows_vnni(w, x, m0, m1, 4, p, y); break;
        }
    }
}

/* ---- INT8 with vpmaddwd (AVX-512 without VNNI) -------------------------------------
 *
 * vpmaddubsw would saturate its int16 pair sums (2 * 255 * 127 > 32767), so
 * weights and activations are widened to int16 and vpmaddwd sums pairs into
 * int32 exactly. A 32-byte piece of a group (8 channels x 4 k) widens to one
 * zmm; times the row's 4 activations repeated, it gives 16 int32 lanes, two
 * per channel (k0k1, k2k3), added pairwise at the end. */

/* Sums lane pairs of a (channels 0-7) and b (channels 8-15): 16 channel sums. */
T512 INLINE __m512i pair_sum512(__m512i a, __m512i b)
{
    const __m512i even =
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    return _mm512_add_epi32(_mm512_permutex2var_epi32(a, even, b),
                            _mm512_permutex2var_epi32(a, odd, b));
}

T512 INLINE void i8_tile_madd(const eng_wpack *w, const eng_act *x, int m, int mr, int nj, int p,
                              float *y)
{
    const int groups = w->kp / 4;
    const int8_t *wp = (const int8_t *)w->w + (size_t)p * groups * ENG_KP_NR * 4;
    const uint8_t *q = x->q + (size_t)m * x->ldq;
    __m512i acc[MR_MADD][8];
    #pragma GCC unroll 8
    for (int i = 0; i < mr; i++)
        #pragma GCC unroll 8
        for (int e = 0; e < 2 * nj; e++)
            acc[i][e] = _mm512_setzero_si512();
    for (int g = 0; g < groups; g++, wp += ENG_KP_NR * 4) {
        __m512i a[MR_MADD];
        #pragma GCC unroll 8
        for (int i = 0; i < mr; i++)
            a[i] = _mm512_cvtepu8_epi16(
                _mm256_set1_epi32((int)load_u32(q + (size_t)i * x->ldq + 4 * g)));
#pragma GCC unroll 8
        for (int e = 0; e < 2 * nj; e++) {
            __m512i b = _mm512_cvtepi8_epi16(_mm256_load_si256((const __m256i *)(wp + 32 * e)));
            #pragma GCC unroll 8
            for (int i = 0; i < mr; i++)
                acc[i][e] = _mm512_add_epi32(acc[i][e], _mm512_madd_epi16(b, a[i]));
        }
    }
    #pragma GCC unroll 8
    for (int i = 0; i < mr; i++)
        #pragma GCC unroll 4
        for (int j = 0; j < nj; j++)
            i8_store512(w, x, m + i, p * ENG_KP_NR + 16 * j,
                        pair_sum512(acc[i][2 * j], acc[i][2 * j + 1]), y);
}

/* One panel's rows [m0, m1) in tiles of MR_MADD, nj groups wide. */
T512 INLINE void i8_rows_madd(const eng_wpack *w, const eng_act *x, int m0, int m1, int nj, int p,
                              float *y)
{
    for (int m = m0, mr; m < m1; m += mr) {
        mr = eng_tile_rows(m1 - m, MR_MADD);
        switch (mr) {
        case 1: i8_tile_madd(w, x, m, 1, nj, p, y); break;
        case 2: i8_tile_madd(w, x, m, 2, nj, p, y); break;
        default: i8_tile_madd(w, x, m, 3, nj, p, y); break;
        }
    }
}

T512 static void i8_gemm_avx512(const eng_wpack *w, const eng_act *x, int m0, int m1, int p0,
                                int p1, float *y)
{
    for (int p = p0; p < p1; p++) {
        switch (panel_groups(w->out, p)) {
        case 1: i8_rows_madd(w, x, m0, m1, 1, p, y); break;
        case 2: i8_rows_madd(w, x, m0, m1, 2, p, y); break;
        case 3: i8_rows_madd(w, x, m0, m1, 3, p, y); break;
        default: i8_rows_madd(w, x, m0, m1, 4, p, y); break;
        }
    }
}

/* ---- Float weights: F32, FP16 and BF16 ---------------------------------------------
 *
 * The weights of one k step (64 of them) load as four float vectors: F32 as
 * they are, FP16 widened exactly through vcvtph2ps, BF16 by a 16-bit shift;
 * each lane then runs the reference's fma chain over k ascending. */

T512 INLINE __m512 float_load512(const void *w, size_t i, eng_dtype dt)
{
    if (dt == ENG_F32)
        return _mm512_load_ps((const float *)w + i);
    __m256i h = _mm256_load_si256((const __m256i *)((const uint16_t *)w + i));
    if (dt == ENG_BF16)
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    return _mm512_cvtph_ps(h);
}

/* Rows m..m+mr-1 of the first nj groups of panel p over k in [k0, k1): the
 * sums start from 0 at k0 = 0 and from the partial sums left in y otherwise
 * (stored floats, so the chain goes on unchanged); the bias is added after
 * the last k. */
T512 INLINE void float_tile512(const eng_wpack *w, const eng_act *x, int m, int mr, int nj, int p,
                               int k0, int k1, eng_dtype dt, float *y)
{
    const int in = w->in;
    size_t wi = ((size_t)p * in + k0) * ENG_KP_NR;
    const float *xr = x->x + (size_t)m * in;
    float *yr = y + (size_t)m * w->out + (size_t)p * ENG_KP_NR;
    __m512 acc[MR_FLOAT][4];
    #pragma GCC unroll 8
    for (int i = 0; i < mr; i++)
        #pragma GCC unroll 4
        for (int j = 0; j < nj; j++) {
            int o0 = p * ENG_KP_NR + 16 * j;
            acc[i][j] = k0 == 0 ? _mm512_setzero_ps()
                                : _mm512_maskz_loadu_ps(out_mask(w->out, o0),
                                                        yr + (size_t)i * w->out + 16 * j);
        }
    for (int k = k0; k < k1; k++, wi += ENG_KP_NR) {
        __m512 b[4];
        #pragma GCC unroll 4
        for (int j = 0; j < nj; j++)
            b[j] = float_load512(w->w, wi + 16 * j, dt);
        #pragma GCC unroll 8
        for (int i = 0; i < mr; i++) {
            __m512 a = _mm512_set1_ps(xr[(size_t)i * in + k]);
            #pragma GCC unroll 4
            for (int j = 0; j < nj; j++)
                acc[i][j] = _mm512_fmadd_ps(a, b[j], acc[i][j]);
        }
    }
    #pragma GCC unroll 8
    for (int i = 0; i < mr; i++) {
        #pragma GCC unroll 4
        for (int j = 0; j < nj; j++) {
            int o0 = p * ENG_KP_NR + 16 * j;
            __m512 v = k1 == in ? _mm512_add_ps(acc[i][j], _mm512_load_ps(w->bias + o0))
                                : acc[i][j];
            _mm512_mask_storeu_ps(yr + (size_t)i * w->out + 16 * j, out_mask(w->out, o0), v);
        }
    }
}

/* k goes in blocks of KC_FLOAT, so that a panel's block of weights (192 KiB
 * as F32) and the task's rows of x over that block (48 x 3 KiB) stay in L2
 * while every tile of the rows passes over them: with FFN-sized inputs
 * (3072) a whole panel and the rows would not fit. */
T512 INLINE void float_rows512(const eng_wpack *w, const eng_act *x, int m0, int m1, int nj,
                               int p, eng_dtype dt, float *y)
{
    for (int k0 = 0; k0 < w->in; k0 += KC_FLOAT) {
        int k1 = w->in - k0 > KC_FLOAT ? k0 + KC_FLOAT : w->in;
        for (int m = m0, mr; m < m1; m += mr) {
            mr = eng_tile_rows(m1 - m, MR_FLOAT);
            switch (mr) {
            case 1: float_tile512(w, x, m, 1, nj, p, k0, k1, dt, y); break;
            case 2: float_tile512(w, x, m, 2, nj, p, k0, k1, dt, y); break;
            case 3: float_tile512(w, x, m, 3, nj, p, k0, k1, dt, y); break;
            case 4: float_tile512(w, x, m, 4, nj, p, k0, k1, dt, y); break;
            case 5: float_tile512(w, x, m, 5, nj, p, k0, k1, dt, y); break;
            default: float_tile512(w, x, m, 6, nj, p, k0, k1, dt, y); break;
            }
        }
    }
}

T512 INLINE void float_gemm512(const eng_wpack *w, const eng_act *x, int m0, int m1, int p0,
                               int p1, eng_dtype dt, float *y)
{
    for (int p = p0; p < p1; p++) {
        switch (panel_groups(w->out, p)) {
        case 1: float_rows512(w, x, m0, m1, 1, p, dt, y); break;
        case 2: float_rows512(w, x, m0, m1, 2, p, dt, y); break;
        case 3: float_rows512(w, x, m0, m1, 3, p, dt, y); break;
        default: float_rows512(w, x, m0, m1, 4, p, dt, y); break;
        }
    }
}

T512 static void f32_gemm512(const eng_wpack *w, const eng_act *x, int m0, int m1, int p0, int p1,
                             float *y)
{
    float_gemm512(w, x, m0, m1, p0, p1, ENG_F32, y);
}

T512 static void f16_gemm512(const eng_wpack *w, const eng_act *x, int m0, int m1, int p0, int p1,
                             float *y)
{
    float_gemm512(w, x, m0, m1, p0, p1, ENG_F16, y);
}

T512 static void bf16_gemm512(const eng_wpack *w, const eng_act *x, int m0, int m1, int p0, int p1,
                              float *y)
{
    float_gemm512(w, x, m0, m1, p0, p1, ENG_BF16, y);
}

const eng_kernels eng_kernels_avx512 = {
    .name = "avx512",
    .quant = quant512,
    .gemm = {[ENG_I8] = i8_gemm_avx512, [ENG_F32] = f32_gemm512, [ENG_F16] = f16_gemm512,
             [ENG_BF16] = bf16_gemm512},
};

const eng_kernels eng_kernels_avx512vnni = {
    .name = "avx512vnni",
    .quant = quant512,
    .gemm = {[ENG_I8] = i8_gemm_avx512vnni, [ENG_F32] = f32_gemm512, [ENG_F16] = f16_gemm512,
             [ENG_BF16] = bf16_gemm512},
};

#endif
