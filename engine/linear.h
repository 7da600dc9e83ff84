/* A linear layer y = x Wᵀ + b, the call every model makes for its
 * projections. The weight's storage (layout, dtype, packing) is the layer's
 * business, not the model's: a model builds an F32 layer over its checkpoint,
 * may convert it once at load, and calls eng_linear_forward either way.
 *
 * Weight dtypes:
 *   ENG_F32   the checkpoint's floats: borrowed and multiplied by OpenBLAS
 *             (sgemm; sgemv for one row) until converted, then copied into
 *             our panels and run by our kernels, which skip the per-call
 *             repacking OpenBLAS does (a decode step of 8 rows runs at the
 *             speed of one) and add the bias in the same pass.
 *   ENG_F16   IEEE half, widened to float in registers (F16C) by our kernels.
 *   ENG_BF16  bfloat16, widened likewise (a 16-bit shift).
 *   ENG_I8    int8, symmetric per output channel (scale = max|w_o| / 127);
 *             activations quantised per row at run time to asymmetric uint8
 *             (x ≈ sx (q - zp)); int32 sums; y = sum * sx * scale + b.
 * Converted layers run the kernels of the CPU's best level (engine/
 * kernels.h), chosen once; PREDICTD_KERNELS=ref|avx2|avxvnni|avx512|
 * avx512vnni|amx forces a lower one. They split the work over the cores with
 * the engine's thread pool (engine/pool.h).
 *
 * Error bounds, per output y[m][o] (sums over the layer's in inputs k):
 *   Every level equals the ref level bit for bit, for every dtype: the int8
 *   kernels share the quantisation and the int32 sums; the FP16/BF16 kernels
 *   run, per output, the same fma chain over k ascending as the reference.
 *   The ref level against exact arithmetic on the F32 weights (u = 2^-24,
 *   F = (in + 1) u (Σ|x_k w_k| + |b|), the float summation):
 *   F16   |Δ| <= Σ|x_k| (2^-11 |w_k| + 2^-25) + F    (halves round to 11 bits)
 *   BF16  |Δ| <= 2^-8 Σ|x_k w_k| + F                 (bfloat16 rounds to 8 bits)
 *   I8    |Δ| <= 0.51 (sx Σ|w_k| + scale_o Σ|x_k|) + 0.26 in sx scale_o
 *                + 1e-6 (Σ|x_k w_k| + |b|)
 *         where sx = (max(x_m, 0) - min(x_m, 0)) / 255 and scale_o =
 *         max|w_o| / 127: each activation and weight is off by at most half
 *         a step. On Gaussian data of a transformer layer's size the relative
 *         RMS error of an int8 layer is about 1% (tested below 2%).
 * tests/unit/test_kernels.c checks each of these. */
#ifndef ENG_LINEAR_H
#define ENG_LINEAR_H

#include <stddef.h>

#include "engine/error.h"
#include "engine/tensor.h"

typedef enum eng_wlayout {
    ENG_W_OUT_IN, /* torch nn.Linear: weight (out, in) */
    ENG_W_IN_OUT, /* GPT-2 Conv1D: weight (in, out) */
} eng_wlayout;

struct eng_wpack; /* engine/kernels.h */

typedef struct eng_linear {
    int in, out;
    eng_wlayout layout;
    const float *w;         /* (out, in) or (in, out) per layout; borrowed from the
                               checkpoint; NULL once converted (packed) */
    const float *b;         /* (out) or NULL; borrowed; NULL once converted (the pack
                               holds a copy) */
    eng_dtype dtype;        /* the weights as held: ENG_F32 (w) unless converted */
    struct eng_wpack *pack; /* owned packed weights, bias and scales; NULL until converted */
} eng_linear;

/* y (n, out) = x (n, in) · Wᵀ + b. x and y must not overlap. Safe to call
 * from several threads at once, on one layer or many. INT8 layers quantise x
 * into a per-thread scratch buffer that grows to the largest n·in seen and is
 * then reused, so steady-state calls allocate nothing; if it cannot grow at
 * all, y is filled with NaN (visible, never a silently wrong number). */
void eng_linear_forward(const eng_linear *l, const float *x, int n, float *y);

/* Converts l's F32 weights (either layout) and bias into owned buffers of
 * dtype to (ENG_F32, ENG_F16, ENG_BF16 or ENG_I8), packed for the kernels;
 * converting a converted layer to its own dtype does nothing. Afterwards l->w and l->b are NULL
 * and never read again: the caller may release the checkpoint's pages of both
 * (e.g. madvise(MADV_DONTNEED) on a private mapping). Returns 0, or a negative
 * ENG_E* code with err filled (non-finite weights, a weight beyond FP16's
 * range, in > 65536 for INT8, out of memory) leaving l unchanged. */
int eng_linear_convert(eng_linear *l, eng_dtype to, eng_err *err);

/* Frees what eng_linear_convert allocated; a no-op for a layer never converted. The
 * layer cannot be run afterwards. */
void eng_linear_free(eng_linear *l);

/* Copies the in weights of output channel o of an F32 layer, packed or not,
 * into dst exactly (GPT-2 reads its tied token embeddings from the LM head
 * this way). Returns 0, or -1 for another dtype or o out of range. */
int eng_linear_f32_row(const eng_linear *l, int o, float *dst);

/* Bytes of weights the layer holds: the packed buffers once converted, the
 * borrowed F32 weights and bias before. */
size_t eng_linear_weight_bytes(const eng_linear *l);

/* The kernel level in use ("avx512vnni", "avx2", "ref", ...), for the log and
 * GET /models. */
const char *eng_kernel_level(void);

/* A sentence for the log when PREDICTD_KERNELS asked for an unknown level or
 * one this CPU lacks (and what runs instead); "" otherwise. */
const char *eng_kernel_note(void);

#endif
