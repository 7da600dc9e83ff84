/* The engine's one door to OpenBLAS (engine/blas.c is the only file that
 * includes cblas.h). Matrices are row-major float32. */
#ifndef ENG_BLAS_H
#define ENG_BLAS_H

#include <stdbool.h>

/* C (M, N) = alpha * op(A) op(B) + beta * C, where op(A) is (M, K) and op(B)
 * is (K, N); A is stored (M, K) with row stride lda, or (K, M) when trans_a. */
void eng_sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float *A,
               int lda, const float *B, int ldb, float beta, float *C, int ldc);

/* y (M) = alpha * op(A) x + beta * y, with A stored (M, N) row-major with row
 * stride lda (trans: y has N elements and op(A) = Aᵀ). One row of input,
 * no packing of A: decode's matrix-vector products. */
void eng_sgemv(bool trans, int M, int N, float alpha, const float *A, int lda, const float *x,
               float beta, float *y);

/* The kernel family OpenBLAS chose ("SkylakeX", "Haswell", "Prescott", ...). */
const char *eng_blas_corename(void);

/* When the user has not set OPENBLAS_CORETYPE and OpenBLAS fell back to a
 * generic core on a CPU with AVX2 or AVX-512 (Debian's 0.3.21 does so on
 * Sapphire Rapids and newer), returns the core type whose kernels this CPU
 * runs; NULL when OpenBLAS's own choice should stand. The variable is read
 * when the library loads, so the caller must re-execute to apply it. */
const char *eng_blas_better_coretype(void);

int eng_blas_threads(void);
void eng_blas_set_threads(int n);

#endif
