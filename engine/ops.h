/* Element-wise and row-wise operations of transformer blocks, in float32.
 * Shapes are given as (rows, cols) of contiguous row-major data. */
#ifndef ENG_OPS_H
#define ENG_OPS_H

#include <stdbool.h>
#include <stddef.h>

/* out (n, d) = LayerNorm(x) * gamma + beta over each row; out may equal x. */
void eng_layernorm(float *out, const float *x, int n, int d, const float *gamma,
                   const float *beta, float eps);

/* x (n, d) = LayerNorm(x + residual) * gamma + beta: the post-LN residual step. */
void eng_add_layernorm(float *x, const float *residual, int n, int d, const float *gamma,
                       const float *beta, float eps);

/* y[i] += x[i] for n elements. */
void eng_add(float *y, const float *x, size_t n);

/* Activations, in place over n elements. */
void eng_gelu_erf(float *x, size_t n);   /* 0.5 x (1 + erf(x / sqrt 2)): BERT's "gelu" */
void eng_gelu_tanh(float *x, size_t n);  /* GPT-2's "gelu_new" */
void eng_quick_gelu(float *x, size_t n); /* x sigmoid(1.702 x): CLIP's "quick_gelu" */
void eng_relu(float *x, size_t n);

typedef void (*eng_activation_fn)(float *x, size_t n);
/* Maps a Hugging Face activation name ("gelu", "gelu_new", "quick_gelu",
 * "relu", ...) to its function; NULL when unknown. */
eng_activation_fn eng_activation_by_name(const char *name);

/* Softmax of one row of n values, in place, max-subtracted for stability. */
void eng_softmax(float *x, int n);

/* Attention heads at most this big may go through eng_attend_small. */
enum { ENG_SMALL_HEAD_LK = 64, ENG_SMALL_HEAD_HD = 64 };

/* One attention head, out (Lq, hd) = softmax(scale · q kᵀ) v, with the
 * arguments and causal rule of eng_attend_head (engine/attention.h) less its
 * scores scratch: a query's scores stay in registers from the products to
 * the softmax. For heads so small (14 x 14 x 16 in a tiny DistilBERT) that
 * the calls into OpenBLAS cost more than their arithmetic. Returns false,
 * having written nothing, when Lk > ENG_SMALL_HEAD_LK, hd > ENG_SMALL_HEAD_HD
 * or the kernel set in use has no such kernel: the caller then takes BLAS. */
bool eng_attend_small(const float *q, int ldq, const float *k, int ldk, const float *v, int ldv,
                      int Lq, int Lk, int hd, float scale, bool causal, float *out, int ldo);

/* log_softmax of one row of n values into out (may equal x). */
void eng_log_softmax(float *out, const float *x, int n);

/* The plain C references of the vectorised kernels (libm's expf, erff, tanhf). */
void eng_gelu_erf_ref(float *x, size_t n);
void eng_gelu_tanh_ref(float *x, size_t n);
void eng_quick_gelu_ref(float *x, size_t n);
void eng_softmax_ref(float *x, int n);
/* One row of LayerNorm(x + residual) (residual may be NULL; the sum is
 * written back to x), the reference of the vectorised rows. */
void eng_layernorm_row_ref(float *out, float *x, const float *residual, int d, const float *gamma,
                           const float *beta, float eps);
/* eng_layernorm_row_ref over n rows of d. */
void eng_layernorm_rows_ref(float *out, float *x, const float *residual, int n, int d,
                            const float *gamma, const float *beta, float eps);
/* eng_attend_small one query at a time, in plain C, within its bounds. */
void eng_attend_small_ref(const float *q, int ldq, const float *k, int ldk, const float *v, int ldv,
                          int Lq, int Lk, int hd, float scale, bool causal, float *out, int ldo);

/* The kernel set in use ("avx512", "avx2", "ref"), and a given one for the
 * tests (NULL when this CPU lacks it). */
const char *eng_ops_level(void);
struct eng_ops_impl;
const struct eng_ops_impl *eng_ops_for_level(const char *level);

#endif
