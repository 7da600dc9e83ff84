/* Engine speed on a real-size checkpoint, printed as JSON lines.
 *
 *   build/bench_engine distilbert MODEL_DIR
 *
 * Reports the OpenBLAS sgemm peak measured in the same run, so the forward's
 * GFLOP/s can be read as a fraction of what the machine's GEMM reaches. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/blas.h"
#include "models/model.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median seconds of reps runs of fn (after one warm-up run). */
static double median_time(void (*fn)(void *), void *arg, int reps)
{
    double t[64];
    fn(arg);
    for (int i = 0; i < reps; i++) {
        double t0 = now();
        fn(arg);
        t[i] = now() - t0;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_double);
    return t[reps / 2];
}

typedef struct gemm_case {
    int m, n, k;
    float *a, *b, *c;
} gemm_case;

static void run_gemm(void *p)
{
    gemm_case *g = p;
    eng_sgemm(false, true, g->m, g->n, g->k, 1.0f, g->a, g->k, g->b, g->k, 0.0f, g->c, g->n);
}

/* The best sgemm GFLOP/s over shapes of the model's own projections. */
static double sgemm_peak(void)
{
    static const int shapes[][3] = {{1024, 3072, 768}, {1024, 768, 3072}, {2048, 2048, 2048}};
    double best = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        gemm_case g = {shapes[s][0], shapes[s][1], shapes[s][2], 0, 0, 0};
        g.a = calloc((size_t)g.m * g.k, 4);
        g.b = calloc((size_t)g.n * g.k, 4);
        g.c = calloc((size_t)g.m * g.n, 4);
        double t = median_time(run_gemm, &g, 7);
        double gflops = 2.0 * g.m * g.n * g.k / t / 1e9;
        printf("{\"bench\":\"sgemm\",\"m\":%d,\"n\":%d,\"k\":%d,\"gflops\":%.1f}\n", g.m, g.n, g.k, gflops);
        best = gflops > best ? gflops : best;
        free(g.a), free(g.b), free(g.c);
    }
    return best;
}

typedef struct forward_case {
    const model *m;
    model_batch batch;
    eng_arena arena;
    float *logits;
} forward_case;

static void run_forward(void *p)
{
    forward_case *f = p;
    eng_err err;
    if (f->m->ops->classify(f->m, &f->batch, &f->arena, f->logits, &err)) {
        fprintf(stderr, "forward: %s\n", err.msg);
        exit(1);
    }
}

/* FLOPs of a DistilBERT-base forward over n sequences of len tokens. */
static double distilbert_flops(int n, int len)
{
    const double d = 768, h = 3072, layers = 6, T = (double)n * len;
    double per_layer = 2 * T * (4 * d * d + 2 * d * h) + 2 * 2 * (double)n * len * len * d;
    return layers * per_layer;
}

static double bench_batch(const model *m, int n, int len, double peak, int reps)
{
    forward_case f = {.m = m};
    int32_t *ids = malloc((size_t)n * len * sizeof *ids);
    int *off = malloc((size_t)(n + 1) * sizeof *off);
    for (int s = 0; s <= n; s++)
        off[s] = s * len;
    for (int i = 0; i < n * len; i++)
        ids[i] = i % len == 0 ? 101 : i % len == len - 1 ? 102 : 1000 + (i * 7919) % 20000;
    f.batch = (model_batch){.ids = ids, .seq_off = off, .n_seq = n};
    eng_arena_init(&f.arena);
    eng_arena_reserve(&f.arena, m->ops->scratch_size(m, n * len, len));
    f.logits = malloc((size_t)n * m->n_labels * sizeof *f.logits);
    double t = median_time(run_forward, &f, reps);
    double gflops = distilbert_flops(n, len) / t / 1e9;
    printf("{\"bench\":\"distilbert_forward\",\"batch\":%d,\"tokens\":%d,\"ms\":%.2f,"
           "\"seq_per_s\":%.1f,\"gflops\":%.1f,\"fraction_of_sgemm_peak\":%.2f}\n",
           n, len, t * 1e3, n / t, gflops, gflops / peak);
    eng_arena_free(&f.arena);
    free(ids), free(off), free(f.logits);
    return t;
}

int main(int argc, char **argv)
{
    if (argc != 3 || strcmp(argv[1], "distilbert") != 0) {
        fprintf(stderr, "usage: bench_engine distilbert MODEL_DIR\n");
        return 2;
    }
    printf("{\"bench\":\"env\",\"blas_core\":\"%s\",\"blas_threads\":%d}\n", eng_blas_corename(),
           eng_blas_threads());
    double peak = sgemm_peak();
    model *m;
    eng_err err;
    if (model_load(argv[2], NULL, &m, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    static const int lat[] = {16, 64, 128, 512};
    for (size_t i = 0; i < sizeof lat / sizeof *lat; i++)
        bench_batch(m, 1, lat[i], peak, 15);
    bench_batch(m, 8, 64, peak, 7);
    bench_batch(m, 32, 64, peak, 5);
    bench_batch(m, 8, 128, peak, 5);
    model_free(m);
    return 0;
}
