#include "engine/ops.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "engine/ops_simd.h"
#include "engine/pool.h"

void eng_layernorm_row_ref(float *out, float *x, const float *residual, int d, const float *gamma,
                           const float *beta, float eps)
{
    /* Mean and variance in double: a 768-wide row summed in float loses
     * digits the 1e-5 batched-vs-alone tolerance would notice. */
    double s = 0, s2 = 0;
    for (int j = 0; j < d; j++) {
        if (residual)
            x[j] += residual[j];
        s += x[j];
    }
    double m = s / d;
    for (int j = 0; j < d; j++)
        s2 += (x[j] - m) * (x[j] - m);
    float mean = (float)m, rstd = (float)(1.0 / sqrt(s2 / d + eps));
    for (int j = 0; j < d; j++)
        out[j] = (x[j] - mean) * rstd * gamma[j] + beta[j];
}

void eng_layernorm_rows_ref(float *out, float *x, const float *residual, int n, int d,
                            const float *gamma, const float *beta, float eps)
{
    for (int i = 0; i < n; i++) {
        size_t o = (size_t)i * d;
        eng_layernorm_row_ref(out + o, x + o, residual ? residual + o : NULL, d, gamma, beta, eps);
    }
}

/* ---- spreading row and element work over the pool ----------------------------- */

/* Below this much work a pool hand-off costs more than it saves. */
#define PAR_MIN_ELEMS 32768

typedef struct ln_task {
    float *out, *x;
    const float *residual, *gamma, *beta;
    int n, d, chunks;
    float eps;
} ln_task;

static const eng_ops_impl *ops(void);

static void ln_chunk(void *ctx, int task, int thread)
{
    (void)thread;
    ln_task *t = ctx;
    int r0 = (int)((long)t->n * task / t->chunks), r1 = (int)((long)t->n * (task + 1) / t->chunks);
    size_t o = (size_t)r0 * t->d;
    ops()->layernorm_rows(t->out + o, t->x + o, t->residual ? t->residual + o : NULL, r1 - r0, t->d,
                          t->gamma, t->beta, t->eps);
}

static int chunks_for(size_t elems)
{
    eng_pool *p = eng_pool_default();
    int threads = p ? eng_pool_size(p) : 1;
    return elems < PAR_MIN_ELEMS || threads < 2 ? 1 : threads * 4;
}

static void run_chunks(int chunks, eng_pool_fn fn, void *ctx)
{
    eng_pool *p = chunks > 1 ? eng_pool_default() : NULL;
    if (p)
        eng_pool_run(p, chunks, fn, ctx);
    else
        for (int c = 0; c < chunks; c++)
            fn(ctx, c, 0);
}

static void layernorm_rows(float *out, float *x, const float *residual, int n, int d,
                           const float *gamma, const float *beta, float eps)
{
    ln_task t = {out, x, residual, gamma, beta, n, d, 1, eps};
    t.chunks = chunks_for((size_t)n * d);
    if (t.chunks > n)
        t.chunks = n > 0 ? n : 1;
    run_chunks(t.chunks, ln_chunk, &t);
}

void eng_layernorm(float *out, const float *x, int n, int d, const float *gamma,
                   const float *beta, float eps)
{
    /* x is only read when there is no residual to fold in. */
    layernorm_rows(out, (float *)x, NULL, n, d, gamma, beta, eps);
}

void eng_add_layernorm(float *x, const float *residual, int n, int d, const float *gamma,
                       const float *beta, float eps)
{
    layernorm_rows(x, x, residual, n, d, gamma, beta, eps);
}

void eng_add(float *y, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] += x[i];
}

void eng_gelu_erf_ref(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * (float)M_SQRT1_2));
}

void eng_gelu_tanh_ref(float *x, size_t n)
{
    const float k = 0.7978845608028654f; /* sqrt(2 / pi) */
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        x[i] = 0.5f * v * (1.0f + tanhf(k * (v + 0.044715f * v * v * v)));
    }
}

void eng_quick_gelu_ref(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = x[i] / (1.0f + expf(-1.702f * x[i]));
}

void eng_relu(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = x[i] > 0 ? x[i] : 0;
}

/* ---- dispatch ----------------------------------------------------------------- */

/* No attend_small: one query at a time in plain C is slower than OpenBLAS. */
static const eng_ops_impl ref_impl = {"ref", eng_gelu_erf_ref, eng_gelu_tanh_ref, eng_quick_gelu_ref,
                                      eng_softmax_ref, eng_layernorm_rows_ref, NULL};
static const eng_ops_impl *impl = &ref_impl;
static pthread_once_t impl_once = PTHREAD_ONCE_INIT;

const eng_ops_impl *eng_ops_for_level(const char *level)
{
    if (strcmp(level, "ref") == 0)
        return &ref_impl;
    if (strcmp(level, "avx2") == 0)
        return eng_ops_avx2();
    return eng_ops_avx512();
}

/* The widest set the CPU runs, or a lower one PREDICTD_KERNELS asks for
 * ("ref", "avx2"; anything wider than the CPU falls back). */
static void pick_impl(void)
{
    const char *want = getenv("PREDICTD_KERNELS");
    const eng_ops_impl *best = eng_ops_avx512();
    if (!best || (want && strncmp(want, "avx2", 4) == 0) || (want && strcmp(want, "avxvnni") == 0))
        best = eng_ops_avx2();
    if (!best || (want && strcmp(want, "ref") == 0))
        best = &ref_impl;
    impl = best;
}

static const eng_ops_impl *ops(void)
{
    pthread_once(&impl_once, pick_impl);
    return impl;
}

const char *eng_ops_level(void)
{
    return ops()->level;
}

typedef struct act_task {
    void (*fn)(float *x, size_t n);
    float *x;
    size_t n;
    int chunks;
} act_task;

static void act_chunk(void *ctx, int task, int thread)
{
    (void)thread;
    act_task *t = ctx;
    /* Chunk edges on 16-float boundaries keep every vector whole. */
    size_t per = ((t->n + (size_t)t->chunks - 1) / (size_t)t->chunks + 15) & ~(size_t)15;
    size_t a = per * (size_t)task, b = a + per < t->n ? a + per : t->n;
    if (a < b)
        t->fn(t->x + a, b - a);
}

static void activate(void (*fn)(float *, size_t), float *x, size_t n)
{
    act_task t = {fn, x, n, chunks_for(n)};
    run_chunks(t.chunks, act_chunk, &t);
}

void eng_gelu_erf(float *x, size_t n)
{
    activate(ops()->gelu_erf, x, n);
}

void eng_gelu_tanh(float *x, size_t n)
{
    activate(ops()->gelu_tanh, x, n);
}

void eng_quick_gelu(float *x, size_t n)
{
    activate(ops()->quick_gelu, x, n);
}

void eng_softmax(float *x, int n)
{
    ops()->softmax(x, n);
}

static const struct {
    const char *name;
    eng_activation_fn fn;
} activations[] = {
    {"gelu", eng_gelu_erf},          {"gelu_python", eng_gelu_erf},
    {"gelu_new", eng_gelu_tanh},     {"gelu_pytorch_tanh", eng_gelu_tanh},
    {"gelu_fast", eng_gelu_tanh},    {"quick_gelu", eng_quick_gelu},
    {"relu", eng_relu},
};

eng_activation_fn eng_activation_by_name(const char *name)
{
    for (size_t i = 0; i < sizeof activations / sizeof *activations; i++)
        if (strcmp(activations[i].name, name) == 0)
            return activations[i].fn;
    return NULL;
}

void eng_softmax_ref(float *x, int n)
{
    float max = -INFINITY;
    for (int i = 0; i < n; i++)
        max = x[i] > max ? x[i] : max;
    float sum = 0;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    float inv = 1.0f / sum;
    for (int i = 0; i < n; i++)
        x[i] *= inv;
}

bool eng_attend_small(const float *q, int ldq, const float *k, int ldk, const float *v, int ldv,
                      int Lq, int Lk, int hd, float scale, bool causal, float *out, int ldo)
{
    const eng_ops_impl *o = ops();
    if (!o->attend_small || Lk > ENG_SMALL_HEAD_LK || hd > ENG_SMALL_HEAD_HD)
        return false;
    o->attend_small(q, ldq, k, ldk, v, ldv, Lq, Lk, hd, scale, causal, out, ldo);
    return true;
}

void eng_attend_small_ref(const float *q, int ldq, const float *k, int ldk, const float *v, int ldv,
                          int Lq, int Lk, int hd, float scale, bool causal, float *out, int ldo)
{
    float p[ENG_SMALL_HEAD_LK];
    for (int i = 0; i < Lq; i++) {
        const float *qi = q + (size_t)i * ldq;
        int seen = causal ? Lk - Lq + i + 1 : Lk;
        for (int j = 0; j < seen; j++) {
            float dot = 0.0f;
            for (int d = 0; d < hd; d++)
                dot += qi[d] * k[(size_t)j * ldk + d];
            p[j] = dot * scale;
        }
        eng_softmax_ref(p, seen);
        for (int d = 0; d < hd; d++) {
            float acc = 0.0f;
            for (int j = 0; j < seen; j++)
                acc += p[j] * v[(size_t)j * ldv + d];
            out[(size_t)i * ldo + d] = acc;
        }
    }
}

void eng_log_softmax(float *out, const float *x, int n)
{
    float max = -INFINITY;
    for (int i = 0; i < n; i++)
        max = x[i] > max ? x[i] : max;
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += exp((double)(x[i] - max));
    float lse = max + (float)log(sum);
    for (int i = 0; i < n; i++)
        out[i] = x[i] - lse;
}
