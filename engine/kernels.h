/* The linear layer's own kernels (packed F32, INT8, FP16, BF16 weights): the packed
 * weight layout every level shares, the table of kernels one instruction-set
 * level provides, and the arithmetic every level must reproduce.
 *
 * Internal to the engine: engine/linear.c is the only caller, besides the
 * tests and the benchmark, which force each level through
 * eng_kernels_for_level(). Models see only engine/linear.h.
 *
 * Reference first: kernels_ref.c holds the plain C `_ref` version of every
 * kernel. The integer kernels of every level give the reference's result bit
 * for bit (same quantised activations, same int32 sums, same float epilogue);
 * the float-weight kernels (F32, FP16, BF16) do too, because each output is one chain of fused
 * multiply-adds over k in ascending order, exactly as the reference's fmaf()
 * loop (see "Error bounds" in linear.h). Both rely on the compiler not
 * contracting a*b+c on its own: -std=c11 makes GCC default to
 * -ffp-contract=off, and the tests would catch a change.
 *
 * Not here (yet): AMX-INT8 tiles, AVX512-FP16 arithmetic and AVX512-BF16
 * vdpbf16ps. The last two would round x to 16 bits (no longer equal to the
 * reference) to speed up FP16/BF16 GEMMs, which are not on the product's
 * path: DistilBERT runs INT8, and decoding is a GEMV, bound by memory, where
 * widening the weights in registers is already free. Debian's OpenBLAS 0.3.21
 * exports no cblas_sbgemm. */
#ifndef ENG_KERNELS_H
#define ENG_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/tensor.h"

/* ---- Packed weights ---------------------------------------------------------
 *
 * Output channels are grouped in panels of ENG_KP_NR = 64 (four AVX-512
 * vectors of 16 channels); the last panel is padded with zero weights. Within
 * a panel the weights are ordered by k, so a panel is one contiguous stream
 * (the GEMV reads the whole matrix front to back) and a GEMM micro-tile loads
 * 64 channels of one k step with consecutive loads.
 *
 *   I8:       int8  w[n_panels][kp/4][64][4]   four consecutive k of one
 *             channel form the 32-bit lane vpdpbusd multiplies; kp = in
 *             rounded up to 4, padding k are zero.
 *   F32:      float  w[n_panels][in][64]       one k step = 64 floats (256 B).
 *   F16/BF16: uint16 w[n_panels][in][64]       one k step = 64 halves (128 B).
 *
 * Per channel (n_panels * 64 entries, zero on padding channels):
 *   scale  I8 only: the weight scale, w[o][k] ≈ scale[o] * q[o][k]
 *   wsum   I8 only: Σ_k q[o][k], for the activation zero-point correction
 *   bias   the layer's bias, zeros when it has none                          */
enum { ENG_KP_NR = 64 };

/* The largest `in` an INT8 layer may have: |Σ_k w (q - zp)| <= in * 127 * 255
 * must fit an int32. */
enum { ENG_I8_MAX_IN = 65536 };

typedef struct eng_wpack {
    eng_dtype dtype;     /* ENG_F32, ENG_I8, ENG_F16 or ENG_BF16 */
    int in, out;         /* y (n, out) = x (n, in) · Wᵀ + b */
    int kp;              /* I8: in rounded up to 4; float weights: in */
    int n_panels;        /* ceil(out / 64) */
    const void *w;       /* the panels, as above */
    const float *scale;  /* (n_panels * 64) I8 only, else NULL */
    const int32_t *wsum; /* (n_panels * 64) I8 only, else NULL */
    const float *bias;   /* (n_panels * 64) */
    size_t bytes;        /* the one allocation holding this struct and the arrays */
} eng_wpack;

/* ---- Activations as the kernels read them --------------------------------
 *
 * INT8 activations are quantised per row, dynamically, as asymmetric uint8:
 * x[m][k] ≈ sx[m] * (q[m][k] - zp[m]), with [min(x, 0), max(x, 0)] mapped
 * onto [0, 255]. Unsigned activations times signed weights is what vpdpbusd
 * multiplies, so no +128 shift is needed, and the zero point costs one
 * correction per output, zp[m] * wsum[o], after the int32 sum. */
typedef struct eng_act {
    const float *x;     /* float-weight kernels: (n, in), row stride in */
    const uint8_t *q;   /* I8 kernels: (n, ldq); columns in..ldq-1 are 0 */
    const float *sx;    /* (n) */
    const int32_t *zp;  /* (n), each in [0, 255] */
    int ldq;            /* the packed kp */
} eng_act;

/* Computes y rows [m0, m1) and the channels of panels [p0, p1) (clipped to
 * out). y is (n, out), row stride out; nothing else of y is written. */
typedef void eng_gemm_fn(const eng_wpack *w, const eng_act *x, int m0, int m1, int p0, int p1,
                         float *y);

/* Quantises rows [m0, m1) of x (n, in) into q (n, kp) (padding columns set to
 * 0), sx and zp, exactly as eng_i8_quant_ref. */
typedef void eng_quant_fn(const float *x, int in, int m0, int m1, uint8_t *q, int kp, float *sx,
                          int32_t *zp);

/* The reference quantiser (kernels_ref.c), also what tests hold the SIMD
 * quantisers to. */
void eng_i8_quant_ref(const float *x, int in, int m0, int m1, uint8_t *q, int kp, float *sx,
                      int32_t *zp);

/* ---- Levels ----------------------------------------------------------------
 *
 * Ordered: forcing a level (PREDICTD_KERNELS) picks the highest level the CPU
 * runs that is not above the one asked for. */
typedef enum eng_klevel {
    ENG_KL_REF,        /* portable C */
    ENG_KL_AVX2,       /* AVX2 + FMA + F16C: int8 through 16-bit vpmaddwd */
    ENG_KL_AVXVNNI,    /* the above with VEX vpdpbusd (Alder Lake and later) */
    ENG_KL_AVX512,     /* AVX-512 F/BW/DQ/VL + FMA + F16C: int8 through vpmaddwd */
    ENG_KL_AVX512VNNI, /* the above with EVEX vpdpbusd */
    ENG_KL_AMX,        /* AMX-INT8 tiles: no kernels yet, so asking for it clamps down */
    ENG_KL_COUNT
} eng_klevel;

typedef struct eng_kernels {
    const char *name;                   /* as PREDICTD_KERNELS spells it */
    eng_quant_fn *quant;                /* the int8 activation quantiser */
    eng_gemm_fn *gemm[ENG_DTYPE_COUNT]; /* by weight dtype: ENG_F32, ENG_I8, ENG_F16, ENG_BF16 */
} eng_kernels;

extern const eng_kernels eng_kernels_ref;
#if defined(__x86_64__)
extern const eng_kernels eng_kernels_avx2, eng_kernels_avxvnni;
extern const eng_kernels eng_kernels_avx512, eng_kernels_avx512vnni;
#endif

/* The kernels of a level, or NULL when this CPU (or this build) lacks it. */
const eng_kernels *eng_kernels_for_level(eng_klevel level);
const char *eng_klevel_name(eng_klevel level);

/* The level a PREDICTD_KERNELS value selects on this CPU: the default (the
 * highest supported) for NULL or "", otherwise the request clamped down to
 * what the CPU runs. When the request is unknown or clamped, note (note_len
 * bytes, may be 0) receives a sentence saying so; otherwise it is set to "". */
eng_klevel eng_kernels_pick(const char *request, char *note, size_t note_len);

/* The kernels in use, chosen once from eng_cpu() and PREDICTD_KERNELS. */
const eng_kernels *eng_kernels_active(void);

/* Sets the bytes of quantised activations one INT8 forward holds at once
 * (more rows go in chunks; 32 MiB unless set) and returns the previous value;
 * 0 only reads it. For the tests, which make the chunking path run. */
size_t eng_i8_scratch_cap(size_t bytes);

/* eng_linear_forward through the kernels k (which must be a level this CPU
 * runs), for the tests and the benchmark. */
struct eng_linear;
void eng_linear_forward_kernels(const struct eng_linear *l, const eng_kernels *k, const float *x,
                                int n, float *y);

/* ---- Arithmetic every level shares ------------------------------------------ */

/* The rows of the next micro-tile when left rows remain and a tile holds at
 * most mr: whole tiles, except that between mr and 2 mr rows go as two near
 * halves (14 rows as 6 + 4 + 4, not 6 + 6 + 2), because a tile of one or two
 * rows has too few independent accumulators to cover the latency of its
 * fused multiply-adds. Tiles only group rows: every output's arithmetic is
 * the same whatever the split. */
static inline int eng_tile_rows(int left, int mr)
{
    return left >= 2 * mr ? mr : left > mr ? (left + 1) / 2 : left;
}

/* Round to nearest, ties to even, for |v| < 2^22 (what cvtps2dq does under the
 * default MXCSR): adding 1.5 * 2^23 leaves no fraction bits. */
static inline float eng_rne(float v)
{
    return (v + 12582912.0f) - 12582912.0f;
}

/* A row's quantisation parameters from its min (<= 0) and max (>= 0). A row
 * of (near) zeros gets sx = 0 and q = 0; a row with an infinity or NaN range
 * gets sx = NaN, so its outputs are NaN rather than a wrong number. */
static inline void eng_i8_row_params(float mn, float mx, float *sx, float *inv, int32_t *zp)
{
    float range = mx - mn;
    *sx = 0.0f, *inv = 0.0f, *zp = 0;
    if (!(range <= 3.0e38f)) {
        *sx = __builtin_nanf("");
    } else if (range >= 1e-30f) {
        *sx = range / 255.0f;
        *inv = 255.0f / range;
        float z = eng_rne(-mn * *inv);
        *zp = z < 0.0f ? 0 : z > 255.0f ? 255 : (int32_t)z;
    }
}

/* The INT8 epilogue, in the one order every level uses:
 * y = ((float)(Σ q w - zp wsum) * sx) * scale + bias, no fused operations. */
static inline float eng_i8_out(int32_t dot, int32_t zp, int32_t wsum, float sx, float scale,
                               float bias)
{
    float v = (float)(dot - zp * wsum) * sx;
    v = v * scale;
    return v + bias;
}

#endif
