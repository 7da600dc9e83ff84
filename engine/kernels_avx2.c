/* AVX2 kernels: the avx2 level (AVX2 + FMA + F16C, int8 through vpmaddwd)
 * and the avxvnni level (the same with the VEX-encoded vpdpbusd of Alder Lake,
 * Sapphire Rapids and Zen 5). Both share the quantiser and the float-weight
 * (F32/FP16/BF16) kernels. Every function carries its own target attribute, so this file
 * builds without -mavx2 and the binary runs on any x86-64.
 *
 * With 16 ymm registers the micro-tiles cover 32 channels (half a panel) for
 * 3 rows: 12 accumulators, one weight vector and the rows' 3 broadcasts.
 * Three broadcasts per 12 multiply-adds, not 6 per 12 (6 rows x 16 channels):
 * broadcasts from memory, not the FMA units, bounded the latter on Zen 5
 * (50 against 105 GOP/s per core for FP16). One row (the GEMV) takes a whole
 * panel, whose 8 independent accumulators hide the latency of the adds. The
 * last panel of a layer whose out is not a multiple of 64 takes only the
 * vectors of 8 channels that hold outputs.
 *
 * Each kernel gives the reference's result bit for bit (engine/kernels.h). */
#include "engine/kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#include <string.h>

#define T256 __attribute__((target("avx2,fma,f16c")))
#define T256VNNI __attribute__((target("avx2,fma,f16c,avxvnni")))
#define INLINE static inline __attribute__((always_inline))

enum { MR_VNNI = 3, MR_MADD = 2, MR_FLOAT = 3, MAX_NV = 8 };

static inline uint32_t load_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* A mask of the first n (< 8) int32 lanes, for vmaskmov. */
T256 INLINE __m256i lane_mask(int n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* The 8-channel vectors from channel c0 of panel p that hold outputs, at
 * most max: a layer whose out is not a multiple of 64 (32 outputs, 2 labels,
 * GPT-2's 50257-row head) skips the zero channels padding its last panel
 * instead of multiplying them. Each tile takes the count as a constant (the
 * switches below), so its accumulators stay in registers. */
static inline int panel_vectors(int out, int p, int c0, int max)
{
    int left = out - p * ENG_KP_NR - c0;
    return left >= 8 * max ? max : (left + 7) / 8;
}

/* Stores the 8 floats of v at y[o0..o0+7], clipped to out. */
T256 INLINE void store8(float *y, int out, int o0, __m256 v)
{
    if (out - o0 >= 8)
        _mm256_storeu_ps(y + o0, v);
    else if (o0 < out)
        _mm256_maskstore_ps(y + o0, lane_mask(out - o0), v);
}

/* ---- Activation quantiser ---------------------------------------------------- */

/* Loads x[k..k+7], zeros past in (zeros cannot move a range that includes 0). */
T256 INLINE __m256 load_tail8(const float *x, int in, int k)
{
    if (in - k >= 8)
        return _mm256_loadu_ps(x + k);
    return _mm256_maskload_ps(x + k, lane_mask(in - k));
}

T256 static void quant_row256(const float *x, int in, uint8_t *q, int kp, float *sx, int32_t *zp)
{
    __m256 vmn = _mm256_setzero_ps(), vmx = _mm256_setzero_ps();
    for (int k = 0; k < in; k += 8) {
        __m256 v = load_tail8(x, in, k);
        vmn = _mm256_min_ps(v, vmn); /* the running value second: NaN is skipped */
        vmx = _mm256_max_ps(v, vmx);
    }
    float lo8[8], hi8[8], mn = 0.0f, mx = 0.0f, inv;
    _mm256_storeu_ps(lo8, vmn);
    _mm256_storeu_ps(hi8, vmx);
    for (int i = 0; i < 8; i++) {
        mn = lo8[i] < mn ? lo8[i] : mn;
        mx = hi8[i] > mx ? hi8[i] : mx;
    }
    eng_i8_row_params(mn, mx, sx, &inv, zp);
    __m256 vinv = _mm256_set1_ps(inv);
    __m256i vzp = _mm256_set1_epi32(*zp), zero = _mm256_setzero_si256();
    for (int k = 0; k < in; k += 8) {
        __m256i r = _mm256_cvtps_epi32(_mm256_mul_ps(load_tail8(x, in, k), vinv));
        r = _mm256_max_epi32(_mm256_add_epi32(r, vzp), zero);
        /* Saturating packs clamp to [0, 255] and order the 8 bytes 0..7 in
         * the low 4 bytes of each 128-bit lane. */
        __m256i b = _mm256_packus_epi16(_mm256_packs_epi32(r, zero), zero);
        uint32_t lo = (uint32_t)_mm256_extract_epi32(b, 0),
                 hi = (uint32_t)_mm256_extract_epi32(b, 4);
        uint8_t bytes[8];
        memcpy(bytes, &lo, 4);
        memcpy(bytes + 4, &hi, 4);
        memcpy(q + k, bytes, (size_t)(in - k >= 8 ? 8 : in - k));
    }
    memset(q + in, 0, (size_t)(kp - in));
}

T256 static void quant256(const float *x, int in, int m0, int m1, uint8_t *q, int kp, float *sx,
                          int32_t *zp)
{
    for (int m = m0; m < m1; m++)
        quant_row256(x + (size_t)m * in, in, q + (size_t)m * kp, kp, sx + m, zp + m);
}

/* ---- INT8 epilogue ------------------------------------------------------------ */

/* Writes y[m][o0..o0+7] from the int32 sums acc, as eng_i8_out. */
T256 INLINE void i8_store256(const eng_wpack *w, const eng_act *x, int m, int o0, __m256i acc,
                             float *y)
{
    if (o0 >= w->out)
        return;
    __m256i ws = _mm256_load_si256((const __m256i *)(w->wsum + o0));
    __m256i corr = _mm256_mullo_epi32(_mm256_set1_epi32(x->zp[m]), ws);
    __m256 v = _mm256_cvtepi32_ps(_mm256_sub_epi32(acc, corr));
    v = _mm256_mul_ps(v, _mm256_set1_ps(x->sx[m]));
    v = _mm256_mul_ps(v, _mm256_load_ps(w->scale + o0));
    v = _mm256_add_ps(v, _mm256_load_ps(w->bias + o0));
    store8(y + (size_t)m * w->out, w->out, o0, v);
}

/* ---- INT8 with VEX vpdpbusd ------------------------------------------------------- */

/* Rows m..m+mr-1 times nv vectors of 8 channels from channel c0 of panel p.
 * A vector's 8 channels x 4 k are 32 consecutive bytes of the group. */
T256VNNI INLINE void i8_tile_avxvnni(const eng_wpack *w, const eng_act *x, int m, int mr, int p,
                                     int c0, int nv, float *y)
{
    const int groups = w->kp / 4;
    const int8_t *wp = (const int8_t *)w->w + (size_t)p * groups * ENG_KP_NR * 4 + c0 * 4;
    const uint8_t *q = x->q + (size_t)m * x->ldq;
    __m256i acc[MR_VNNI][MAX_NV];
    #pragma GCC unroll 8
    for (int i = 0; i < mr; i++)
        #pragma GCC unroll 8
        for (int j = 0; j < nv; j++)
            acc[i][j] = _mm256_setzero_si256();
    for (int g = 0; g < groups; g++, wp += ENG_KP_NR * 4) {
        #pragma GCC unroll 8
        for (int j = 0; j < nv; j++) {
            __m256i b = _mm256_load_si256((const __m256i *)(wp + 32 * j));
            #pragma GCC unroll 8
            for (int i = 0; i < mr; i++) {
                __m256i a = _mm256_set1_epi32((int)load_u32(q + (size_t)i * x->ldq + 4 * g));
                acc[i][j] = _mm256_dpbusd_avx_epi32(acc[i][j], a, b);
            }
        }
    }
    #pragma GCC unroll 8
    for (int i = 0; i < mr; i++)
        #pragma GCC unroll 8
        for (int j = 0; j < nv; j++)
            i8_store256(w, x, m + i, p * ENG_KP_NR + c0 + 8 * j, acc[i][j], y);
}

/* One row times the first nv vectors of panel p. */
T256VNNI static void i8_gemv_avxvnni(const eng_wpack *w, const eng_act *x, int m, int p, int nv,
                                     float *y)
{
    switch (nv) {
    case 1: i8_tile_avxvnni(w, x, m, 1, p, 0, 1, y); break;
    case 2: i8_tile_avxvnni(w, x, m, 1, p, 0, 2, y); break;
    case 3: i8_tile_avxvnni(w, x, m, 1, p, 0, 3, y); break;
    case 4: i8_tile_avxvnni(w, x, m, 1, p, 0, 4, y); break;
    case 5: i8_tile_avxvnni(w, x, m, 1, p, 0, 5, y); break;
    case 6: i8_tile_avxvnni(w, x, m, 1, p, 0, 6, y); break;
    case 7: i8_tile_avxvnni(w, x, m, 1, p, 0, 7, y); break;
    default: i8_tile_avxvnni(w, x, m, 1, p, 0, 8, y); break;
    }
}

/* Rows [m0, m1) times nv vectors from channel c0 of panel p, in tiles of MR_VNNI. */
T256VNNI INLINE void i8_rows_avxvnni(const eng_wpack *w, const eng_act *x, int m0, int m1, int p,
                                     int c0, int nv, float *y)
{
    for (int m = m0, mr; m < m1; m += mr) {
        mr = eng_tile_rows(m1 - m, MR_VNNI);
        switch (mr) {
        case 1: i8_tile_avxvnni(w, x, m, 1, p, c0, nv, y); break;
        case 2: i8_tile_avxvnni(w, x, m, 2, p, c0, nv, y); break;
        default: i8_tile_avxvnni(w, x, m, 3, p, c0, nv, y); break;
        }
    }
}

T256VNNI static void i8_gemm_avxvnni(const eng_wpack *w, const eng_act *x, int m0, int m1, int p0,
                                     int p1, float *y)
{
    for (int p = p0; p < p1; p++) {
        if (m1 - m0 == 1) {
            i8_gemv_avxvnni(w, x, m0, p, panel_vectors(w->out, p, 0, 8), y);
            continue;
        }
        for (int c0 = 0; c0 < ENG_KP_NR && p * ENG_KP_NR + c0 < w->out; c0 += 32) {
            switch (panel_vectors(w->out, p, c0, 4)) {
            case 1: i8_rows_avxvnni(w, x, m0, m1, p, c0, 1, y); break;
            case 2: i8_rows_avxvnni(w, x, m0, m1, p, c0, 2, y); break;
            case 3: i8_rows_avxvnni(w, x, m0, m1, p, c0, 3, y); break;
            default: i8_rows_avxvnni(w, x, m0, m1, p, c0, 4, y); break;
            }
        }
    }
}

/* ---- INT8 with vpmaddwd --------------------------------------------------------------
 *
 * vpmaddubsw would saturate its int16 pair sums (2 * 255 * 127 > 32767), so
 * both sides are widened to int16 and vpmaddwd sums pairs into int32 exactly:
 * 16 bytes of a group (4 channels x 4 k) widen to one ymm, which times the
 * row's 4 activations repeated gives 8 int32 lanes, two per channel. */

/* Sums lane pairs of a (channels 0-3) and b (channels 4-7): 8 channel sums. */
T256 INLINE __m256i pair_sum256(__m256i a, __m256i b)
{
    /* hadd gives a01 a23 b01 b23 | a45 a67 b45 b67; reorder the 64-bit halves. */
    return _mm256_permute4x64_epi64(_mm256_hadd_epi32(a, b), _MM_SHUFFLE(3, 1, 2, 0));
}

/* Rows m..m+mr-1 times 4 * nq channels from channel c0 of panel p. */
T256 INLINE void i8_tile_madd(const eng_wpack *w, const eng_act *x, int m, int mr, int p, int c0,
                              int nq, float *y)
{
    const int groups = w->kp / 4;
    const int8_t *wp = (const int8_t *)w->w + (size_t)p * groups * ENG_KP_NR * 4 + c0 * 4;
    const uint8_t *q = x->q + (size_t)m * x->ldq;
    __m256i acc[MR_MADD][16];
    #pragma GCC unroll 8
    for (int i = 0; i < mr; i++)
        #pragma GCC unroll 16
        for (int e = 0; e < nq; e++)
            acc[i][e] = _mm256_setzero_si256();
    for (int g = 0; g < groups; g++, wp += ENG_KP_NR * 4) {
        __m256i a[MR_MADD];
        #pragma GCC unroll 8
        for (int i = 0; i < mr; i++)
            a[i] =
                _mm256_cvtepu8_epi16(_mm_set1_epi32((int)load_u32(q + (size_t)i * x->ldq + 4 * g)));
#pragma GCC unroll 16
        for (int e = 0; e < nq; e++) {
            __m256i b = _mm256_cvtepi8_epi16(_mm_load_si128((const __m128i *)(wp + 16 * e)));
            #pragma GCC unroll 8
            for (int i = 0; i < mr; i++)
                acc[i][e] = _mm256_add_epi32(acc[i][e], _mm256_madd_epi16(b, a[i]));
        }
    }
    #pragma GCC unroll 8
    for (int i = 0; i < mr; i++)
        #pragma GCC unroll 8
        for (int e = 0; e < nq; e += 2)
            i8_store256(w, x, m + i, p * ENG_KP_NR + c0 + 4 * e,
                        pair_sum256(acc[i][e], acc[i][e + 1]), y);
}

/* One row times the first nv 8-channel vectors of panel p (2 nv quads). The
 * whole panel at once streams it front to back; some of the 16 accumulators
 * live in L1, which a GEMV has time for. */
T256 static void i8_gemv_madd(const eng_wpack *w, const eng_act *x, int m, int p, int nv, float *y)
{
    switch (nv) {
    case 1: i8_tile_madd(w, x, m, 1, p, 0, 2, y); break;
    case 2: i8_tile_madd(w, x, m, 1, p, 0, 4, y); break;
    case 3: i8_tile_madd(w, x, m, 1, p, 0, 6, y); break;
    case 4: i8_tile_madd(w, x, m, 1, p, 0, 8, y); break;
    case 5: i8_tile_madd(w, x, m, 1, p, 0, 10, y); break;
    case 6: i8_tile_madd(w, x, m, 1, p, 0, 12, y); break;
    case 7: i8_tile_madd(w, x, m, 1, p, 0, 14, y); break;
    default: i8_tile_madd(w, x, m, 1, p, 0, 16, y); break;
    }
}

/* Rows [m0, m1) times nq quads from channel c0 of panel p, in tiles of MR_MADD. */
T256 INLINE void i8_rows_madd(const eng_wpack *w, const eng_act *x, int m0, int m1, int p, int c0,
                              int nq, float *y)
{
    for (int m = m0, mr; m < m1; m += mr) {
        mr = eng_tile_rows(m1 - m, MR_MADD);
        if (mr == 1)
            i8_tile_madd(w, x, m, 1, p, c0, nq, y);
        else
            i8_tile_madd(w, x, m, 2, p, c0, nq, y);
    }
}

T256 static void i8_gemm_avx2(const eng_wpack *w, const eng_act *x, int m0, int m1, int p0, int p1,
                              float *y)
{
    for (int p = p0; p < p1; p++) {
        if (m1 - m0 == 1) {
            i8_gemv_madd(w, x, m0, p, panel_vectors(w->out, p, 0, 8), y);
            continue;
        }
        for (int c0 = 0; c0 < ENG_KP_NR && p * ENG_KP_NR + c0 < w->out; c0 += 16) {
            if (panel_vectors(w->out, p, c0, 2) == 1)
                i8_rows_madd(w, x, m0, m1, p, c0, 2, y);
            else
                i8_rows_madd(w, x, m0, m1, p, c0, 4, y);
        }
    }
}

/* ---- Float weights: F32, FP16 and BF16 ---------------------------------------------
 *
 * 8 weights load as one float vector: F32 as they are, FP16 widened exactly
 * (vcvtph2ps), BF16 by a 16-bit shift; each lane then runs the reference's
 * fma chain over k. */

T256 INLINE __m256 float_load256(const void *w, size_t i, eng_dtype dt)
{
    if (dt == ENG_F32)
        return _mm256_load_ps((const float *)w + i);
    __m128i h = _mm_load_si128((const __m128i *)((const uint16_t *)w + i));
    if (dt == ENG_BF16)
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    return _mm256_cvtph_ps(h);
}

/* Rows m..m+mr-1 times nv vectors of 8 channels from channel c0 of panel p. */
T256 INLINE void float_tile256(const eng_wpack *w, const eng_act *x, int m, int mr, int p, int c0,
                               int nv, eng_dtype dt, float *y)
{
    const int in = w->in;
    size_t wi = (size_t)p * in * ENG_KP_NR + c0;
    const float *xr = x->x + (size_t)m * in;
    __m256 acc[MR_FLOAT][MAX_NV];
    #pragma GCC unroll 8
    for (int i = 0; i < mr; i++)
        #pragma GCC unroll 8
        for (int j = 0; j < nv; j++)
            acc[i][j] = _mm256_setzero_ps();
    for (int k = 0; k < in; k++, wi += ENG_KP_NR) {
        #pragma GCC unroll 8
        for (int j = 0; j < nv; j++) {
            __m256 b = float_load256(w->w, wi + 8 * j, dt);
            #pragma GCC unroll 8
            for (int i = 0; i < mr; i++)
                acc[i][j] = _mm256_fmadd_ps(_mm256_set1_ps(xr[(size_t)i * in + k]), b, acc[i][j]);
        }
    }
    #pragma GCC unroll 8
    for (int i = 0; i < mr; i++) {
        #pragma GCC unroll 8
        for (int j = 0; j < nv; j++) {
            int o0 = p * ENG_KP_NR + c0 + 8 * j;
            if (o0 < w->out) {
                __m256 v = _mm256_add_ps(acc[i][j], _mm256_load_ps(w->bias + o0));
                store8(y + (size_t)(m + i) * w->out, w->out, o0, v);
            }
        }
    }
}

/* One row times the first nv vectors of panel p. */
T256 INLINE void float_gemv256(const eng_wpack *w, const eng_act *x, int m, int p, int nv,
                               eng_dtype dt, float *y)
{
    switch (nv) {
    case 1: float_tile256(w, x, m, 1, p, 0, 1, dt, y); break;
    case 2: float_tile256(w, x, m, 1, p, 0, 2, dt, y); break;
    case 3: float_tile256(w, x, m, 1, p, 0, 3, dt, y); break;
    case 4: float_tile256(w, x, m, 1, p, 0, 4, dt, y); break;
    case 5: float_tile256(w, x, m, 1, p, 0, 5, dt, y); break;
    case 6: float_tile256(w, x, m, 1, p, 0, 6, dt, y); break;
    case 7: float_tile256(w, x, m, 1, p, 0, 7, dt, y); break;
    default: float_tile256(w, x, m, 1, p, 0, 8, dt, y); break;
    }
}

/* Rows [m0, m1) times nv vectors from channel c0 of panel p, in tiles of MR_FLOAT. */
T256 INLINE void float_rows256(const eng_wpack *w, const eng_act *x, int m0, int m1, int p, int c0,
                               int nv, eng_dtype dt, float *y)
{
    for (int m = m0, mr; m < m1; m += mr) {
        mr = eng_tile_rows(m1 - m, MR_FLOAT);
        switch (mr) {
        case 1: float_tile256(w, x, m, 1, p, c0, nv, dt, y); break;
        case 2: float_tile256(w, x, m, 2, p, c0, nv, dt, y); break;
        default: float_tile256(w, x, m, 3, p, c0, nv, dt, y); break;
        }
    }
}

T256 INLINE void float_gemm256(const eng_wpack *w, const eng_act *x, int m0, int m1, int p0,
                               int p1, eng_dtype dt, float *y)
{
    for (int p = p0; p < p1; p++) {
        if (m1 - m0 == 1) {
            float_gemv256(w, x, m0, p, panel_vectors(w->out, p, 0, 8), dt, y);
            continue;
        }
        for (int c0 = 0; c0 < ENG_KP_NR && p * ENG_KP_NR + c0 < w->out; c0 += 32) {
            switch (panel_vectors(w->out, p, c0, 4)) {
            case 1: float_rows256(w, x, m0, m1, p, c0, 1, dt, y); break;
            case 2: float_rows256(w, x, m0, m1, p, c0, 2, dt, y); break;
            case 3: float_rows256(w, x, m0, m1, p, c0, 3, dt, y); break;
            default: float_rows256(w, x, m0, m1, p, c0, 4, dt, y); break;
            }
        }
    }
}

T256 static void f32_gemm256(const eng_wpack *w, const eng_act *x, int m0, int m1, int p0, int p1,
                             float *y)
{
    float_gemm256(w, x, m0, m1, p0, p1, ENG_F32, y);
}

T256 static void f16_gemm256(const eng_wpack *w, const eng_act *x, int m0, int m1, int p0, int p1,
                             float *y)
{
    float_gemm256(w, x, m0, m1, p0, p1, ENG_F16, y);
}

T256 static void bf16_gemm256(const eng_wpack *w, const eng_act *x, int m0, int m1, int p0, int p1,
                              float *y)
{
    float_gemm256(w, x, m0, m1, p0, p1, ENG_BF16, y);
}

const eng_kernels eng_kernels_avx2 = {
    .name = "avx2",
    .quant = quant256,
    .gemm = {[ENG_I8] = i8_gemm_avx2, [ENG_F32] = f32_gemm256, [ENG_F16] = f16_gemm256,
             [ENG_BF16] = bf16_gemm256},
};

const eng_kernels eng_kernels_avxvnni = {
    .name = "avxvnni",
    .quant = quant256,
    .gemm = {[ENG_I8] = i8_gemm_avxvnni, [ENG_F32] = f32_gemm256, [ENG_F16] = f16_gemm256,
             [ENG_BF16] = bf16_gemm256},
};

#endif
