/* Vectorised twins of the activation, softmax, LayerNorm and small-head
 * attention kernels in ops.c (their plain C references). Internal to the
 * engine: ops.c picks a set once from the CPU and calls through it.
 *
 * The SIMD versions evaluate exp and erf with polynomials instead of libm:
 * exp to about 2 ulp, erf to 1.5e-7 absolute (Abramowitz & Stegun 7.1.26),
 * which keeps every activation within 1e-6 (relative, or absolute near 0)
 * of the reference, and a small head's outputs within 1e-5 (their sums run
 * in another order); tests/unit/test_ops.c holds them to that. */
#ifndef ENG_OPS_SIMD_H
#define ENG_OPS_SIMD_H

#include <stdbool.h>
#include <stddef.h>

typedef struct eng_ops_impl {
    const char *level;
    void (*gelu_erf)(float *x, size_t n);
    void (*gelu_tanh)(float *x, size_t n);
    void (*quick_gelu)(float *x, size_t n);
    void (*softmax)(float *x, int n);
    /* n rows of d, each out = LayerNorm(x + residual) * gamma + beta;
     * residual may be NULL and out may equal x; x + residual is also written
     * back to x. Each row's result is the same whatever n. */
    void (*layernorm_rows)(float *out, float *x, const float *residual, int n, int d,
                           const float *gamma, const float *beta, float eps);
    /* One head within eng_attend_small's bounds (engine/ops.h); NULL leaves
     * such heads to OpenBLAS: in the portable C set, which would be slower,
     * and for now in the AVX2 one. */
    void (*attend_small)(const float *q, int ldq, const float *k, int ldk, const float *v,
                         int ldv, int Lq, int Lk, int hd, float scale, bool causal, float *out,
                         int ldo);
} eng_ops_impl;

/* NULL when the build or the CPU lacks the level. */
const eng_ops_impl *eng_ops_avx512(void);
const eng_ops_impl *eng_ops_avx2(void);

#endif
