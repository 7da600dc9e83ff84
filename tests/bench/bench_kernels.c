/* The linear layer's kernels on the shapes the product is judged on, every
 * weight dtype at every level this CPU runs, next to OpenBLAS sgemm (the F32
 * path) on the same shapes, all through eng_linear_forward's own threading.
 *
 *   build/bench_kernels            every shape, SIMD levels (ref on GEMV only)
 *   build/bench_kernels --ref      the reference level on the GEMMs too (slow)
 *   build/bench_kernels --quick    fewer repetitions
 *   build/bench_kernels --threads N   N threads for our pool and OpenBLAS
 *   build/bench_kernels --only TEXT   the shapes whose name contains TEXT
 *
 * GEMM rows (M = 2048, DistilBERT at 32 x 64 tokens) report GOP/s, counting a
 * multiply-add as two operations; GEMV rows (M = 1, GPT-2 decode) report GB/s
 * of weights streamed from DRAM (each run takes the next of enough copies of
 * the layer to overflow the caches), next to the machine's read bandwidth
 * measured here over the same number of bytes.
 * Then the interplay with OpenBLAS's threads: an int8 GEMM right after an
 * sgemm (OpenBLAS workers still spinning) against one after they sleep. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/blas.h"
#include "engine/kernels.h"
#include "engine/linear.h"
#include "engine/pool.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int quick;
static const char *only;

/* A layer in copies: a GEMV rotates through enough of them that its weights
 * come from DRAM, as a model's dozen layers do, not from the last-level cache
 * (which on this kind of VM can be hundreds of MB): four times the L3, at
 * least 256 MiB, at most 2 GiB. */
enum { MAX_COPIES = 2048 };

static size_t cold_bytes(void)
{
    long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
    size_t want = l3 > 0 ? 4 * (size_t)l3 : 0;
    size_t lo = (size_t)256 << 20, hi = (size_t)2 << 30;
    return want < lo ? lo : want > hi ? hi : want;
}

typedef struct run {
    const eng_linear *l; /* (copies) */
    int copies, next;
    const eng_kernels *k; /* NULL: the F32 path */
    const float *x;
    float *y;
    int m;
} run;

static void run_once(run *r)
{
    const eng_linear *l = &r->l[r->next];
    r->next = (r->next + 1) % r->copies;
    if (r->k)
        eng_linear_forward_kernels(l, r->k, r->x, r->m, r->y);
    else
        eng_linear_forward(l, r->x, r->m, r->y);
}

/* Best seconds of a run: one warm-up, then repetitions for ~0.4 s. The best,
 * not the median, because the machine may be shared: it is the kernel's
 * speed with the cores to itself. */
static double best_time(run *r)
{
    run_once(r);
    double start = now(), budget = quick ? 0.1 : 0.4, best = 1e9;
    for (int n = 0; n < 3 || (n < 50 && now() - start < budget); n++) {
        double t0 = now();
        run_once(r);
        double t = now() - t0;
        best = t < best ? t : best;
    }
    return best;
}

static float *random_floats(size_t n, float sd)
{
    float *a = malloc(n * sizeof *a);
    unsigned s = 12345;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        a[i] = sd * ((float)(s >> 8) / 16777216.0f - 0.5f) * 3.4f;
    }
    return a;
}

typedef struct shape {
    const char *what;
    int m, k, n;
} shape;

static const shape shapes[] = {
    {"distilbert qkv/out", 2048, 768, 768},
    {"distilbert ffn_in", 2048, 768, 3072},
    {"distilbert ffn_out", 2048, 3072, 768},
    {"gpt2 c_attn", 1, 768, 2304},
    {"gpt2 attn c_proj", 1, 768, 768},
    {"gpt2 c_fc", 1, 768, 3072},
    {"gpt2 mlp c_proj", 1, 3072, 768},
    {"gpt2 lm_head", 1, 768, 50257},
    {"gpt2 b8 c_fc", 8, 768, 3072},
    {"gpt2 b8 lm_head", 8, 768, 50257},
    {"distilbert b1x16 ffn_in", 16, 768, 3072},
};

static void print_row(const shape *s, const char *dtype, const char *level, double t, size_t wbytes)
{
    double gops = 2.0 * s->m * s->k * s->n / t / 1e9;
    printf("%-20s %5d %5d %6d  %-5s %-11s %9.3f ms %8.1f GOP/s %7.1f GB/s\n", s->what, s->m, s->k,
           s->n, dtype, level, t * 1e3, gops, (double)wbytes / t / 1e9);
}

/* Copies of a layer of bytes bytes a GEMV of m == 1 rotates through. */
static int copies_for(const shape *s, size_t bytes)
{
    if (s->m > 1)
        return 1;
    size_t c = (cold_bytes() + bytes - 1) / bytes;
    return c > MAX_COPIES ? MAX_COPIES : (int)c;
}

static void bench_dtype(const shape *s, eng_dtype dtype, const float *w, const float *b,
                        const float *x, float *y, int with_ref)
{
    eng_linear f32 = {.in = s->k, .out = s->n, .layout = ENG_W_OUT_IN, .w = w, .b = b};
    eng_linear l[MAX_COPIES];
    int copies = copies_for(s, (size_t)s->n * s->k * eng_dtypes[dtype].size);
    for (int c = 0; c < copies; c++) {
        eng_err err = {0};
        l[c] = f32;
        if (eng_linear_convert(&l[c], dtype, &err) < 0) {
            fprintf(stderr, "convert: %s\n", err.msg);
            exit(1);
        }
    }
    for (int lv = ENG_KL_COUNT - 1; lv >= 0; lv--) {
        const eng_kernels *k = eng_kernels_for_level((eng_klevel)lv);
        if (!k || (lv == ENG_KL_REF && !with_ref && s->m > 1))
            continue;
        run r = {l, copies, 0, k, x, y, s->m};
        print_row(s, eng_dtypes[dtype].name, k->name, best_time(&r),
                  eng_linear_weight_bytes(&l[0]));
    }
    for (int c = 0; c < copies; c++)
        eng_linear_free(&l[c]);
}

static void bench_shape(const shape *s, int with_ref)
{
    size_t wn = (size_t)s->n * s->k;
    int copies = copies_for(s, wn * sizeof(float));
    float *w = random_floats(wn * copies, 0.05f), *b = random_floats((size_t)s->n, 0.1f);
    float *x = random_floats((size_t)s->m * s->k, 1.0f),
          *y = malloc((size_t)s->m * s->n * sizeof *y);
    eng_linear f32[MAX_COPIES];
    for (int c = 0; c < copies; c++)
        f32[c] =
            (eng_linear){.in = s->k, .out = s->n, .layout = ENG_W_OUT_IN, .w = w + c * wn, .b = b};
    run r = {f32, copies, 0, NULL, x, y, s->m};
    print_row(s, "f32", "openblas", best_time(&r), eng_linear_weight_bytes(&f32[0]));
    static const eng_dtype dtypes[] = {ENG_F32, ENG_I8, ENG_F16, ENG_BF16};
    for (size_t d = 0; d < sizeof dtypes / sizeof *dtypes; d++)
        bench_dtype(s, dtypes[d], w, b, x, y, with_ref);
    free(w), free(b), free(x), free(y);
}

/* ---- Read bandwidth ---------------------------------------------------------- */

/* 16-byte vectors (GCC's vector extension: SSE2 on any x86-64), so the read
 * test is bounded by memory, not by the load instructions. */
typedef uint64_t u64x2 __attribute__((vector_size(16)));

typedef struct stream_job {
    const u64x2 *a;
    size_t n, per_task; /* in vectors */
    uint64_t sums[64];
} stream_job;

static void stream_task(void *ctx, int t, int thread)
{
    (void)thread;
    stream_job *j = ctx;
    size_t i0 = (size_t)t * j->per_task, i1 = i0 + j->per_task < j->n ? i0 + j->per_task : j->n;
    u64x2 s0 = {0, 0}, s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = i0; i < i1; i += 4)
        s0 += j->a[i], s1 += j->a[i + 1], s2 += j->a[i + 2], s3 += j->a[i + 3];
    s0 += s1 + s2 + s3;
    j->sums[t] = s0[0] + s0[1];
}

/* GB/s of a parallel read through the pool of as many bytes as a GEMV
 * rotates through: the GEMVs' ceiling. */
static double read_bandwidth(void)
{
    size_t n = cold_bytes() / sizeof(u64x2);
    u64x2 *a = aligned_alloc(64, n * sizeof *a);
    memset(a, 1, n * sizeof *a);
    stream_job j = {a, n, n / 64, {0}};
    double best = 0;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now();
        eng_pool_run(eng_pool_default(), 64, stream_task, &j);
        double gbs = (double)n * sizeof *a / (now() - t0) / 1e9;
        best = gbs > best ? gbs : best;
    }
    free(a);
    return best;
}

/* ---- The pool's own cost --------------------------------------------------------- */

static void empty_task(void *ctx, int t, int thread)
{
    (void)ctx, (void)t, (void)thread;
}

/* Microseconds of a run of one empty task per thread: back to back (workers
 * spinning) and after a pause (workers asleep on the condition variable). */
static void pool_overhead(void)
{
    eng_pool *p = eng_pool_default();
    int n = eng_pool_size(p), reps = 2000;
    double t0 = now();
    for (int i = 0; i < reps; i++)
        eng_pool_run(p, n, empty_task, NULL);
    double hot = (now() - t0) / reps * 1e6, cold = 1e9;
    for (int i = 0; i < 20; i++) {
        usleep(2000);
        double t1 = now();
        eng_pool_run(p, n, empty_task, NULL);
        double t = (now() - t1) * 1e6;
        cold = t < cold ? t : cold;
    }
    printf("pool run of %d empty tasks: %.1f us back to back, %.1f us from sleep (best)\n", n, hot,
           cold);
}

/* ---- OpenBLAS's threads and ours ---------------------------------------------------- */

static void interplay(void)
{
    const shape s = {"int8 ffn_in", 512, 768, 3072};
    float *w = random_floats((size_t)s.n * s.k, 0.05f), *x = random_floats((size_t)s.m * s.k, 1.0f);
    float *y = malloc((size_t)s.m * s.n * sizeof *y);
    eng_linear f32 = {.in = s.k, .out = s.n, .layout = ENG_W_OUT_IN, .w = w}, i8 = f32;
    eng_linear_convert(&i8, ENG_I8, NULL);
    double after_sleep = 1e9, after_sgemm = 1e9, sgemm_alone = 1e9, sgemm_after_ours = 1e9;
    for (int rep = 0; rep < (quick ? 3 : 8); rep++) {
        usleep(300000); /* OpenBLAS's and our workers are asleep now */
        double t0 = now();
        eng_linear_forward(&i8, x, s.m, y);
        double t = now() - t0;
        after_sleep = t < after_sleep ? t : after_sleep;
        usleep(300000);
        t0 = now();
        eng_linear_forward(&f32, x, s.m, y);
        t = now() - t0;
        sgemm_alone = t < sgemm_alone ? t : sgemm_alone;
        t0 = now();
        eng_linear_forward(&i8, x, s.m, y); /* OpenBLAS's workers just finished */
        t = now() - t0;
        after_sgemm = t < after_sgemm ? t : after_sgemm;
        t0 = now();
        eng_linear_forward(&f32, x, s.m, y); /* our workers just finished */
        t = now() - t0;
        sgemm_after_ours = t < sgemm_after_ours ? t : sgemm_after_ours;
    }
    printf("\nOpenBLAS and the pool, M=%d K=%d N=%d (best of runs, ms):\n", s.m, s.k, s.n);
    printf("  int8 after idle %.3f, int8 right after sgemm %.3f\n", after_sleep * 1e3,
           after_sgemm * 1e3);
    printf("  sgemm after idle %.3f, sgemm right after int8 %.3f\n", sgemm_alone * 1e3,
           sgemm_after_ours * 1e3);
    eng_linear_free(&i8);
    free(w), free(x), free(y);
}

int main(int argc, char **argv)
{
    int with_ref = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--ref") == 0)
            with_ref = 1;
        else if (strcmp(argv[i], "--quick") == 0)
            quick = 1;
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
            only = argv[++i];
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            eng_pool_set_threads(atoi(argv[++i]));
        }
        else {
            fprintf(stderr, "usage: %s [--ref] [--quick] [--threads N] [--only TEXT]\n", argv[0]);
            return 2;
        }
    }
    /* Creating the pool leaves OpenBLAS one thread (the engine's setting);
     * its sgemm figures here are OpenBLAS's own, on as many threads. */
    eng_pool_default();
    eng_blas_set_threads(eng_pool_threads());
    printf("kernel level %s%s%s; pool %d threads; OpenBLAS %s, %d threads\n", eng_kernel_level(),
           *eng_kernel_note() ? " — " : "", eng_kernel_note(), eng_pool_threads(),
           eng_blas_corename(), eng_blas_threads());
    printf("read bandwidth (pool, all threads, %zu MiB): %.1f GB/s\n", cold_bytes() >> 20,
           read_bandwidth());
    pool_overhead();
    printf("\n");
    printf("%-20s %5s %5s %6s  %-5s %-11s %12s %14s %12s\n", "shape", "M", "K", "N", "dtype",
           "level", "best time", "", "weights");
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        if (!only || strstr(shapes[s].what, only))
            bench_shape(&shapes[s], with_ref);
    if (!only)
        interplay();
    return 0;
}
