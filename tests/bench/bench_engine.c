/* Engine speed on real-size checkpoints, printed as JSON lines.
 *
 *   build/bench_engine distilbert|gpt2|clip MODEL_DIR [--dtype f32|f16|bf16|int8]
 *
 * Reports the OpenBLAS sgemm peak and the memory bandwidth measured in the
 * same run, so the forward's GFLOP/s and the decode's bytes/s can be read as
 * fractions of what this machine reaches. Figure names follow the peers'
 * (the peers' benchmark scripts) so scripts/bench_table.py can set them side by side.
 *
 * Every run also prints the process's resident memory before the model is
 * loaded, after it, and after the benchmark ("rss ..." figures), and CLIP's
 * runs time an uploaded 640x480 JPEG's way to pixels (decode + preprocess)
 * next to the image tower. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "engine/blas.h"
#include "engine/pool.h"
#include "models/clip.h"
#include "models/image.h"
#include "models/model.h"
#include "tests/bench/bench_jpeg.h"

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

/* Runs shorter than this in all keep going (up to MAX_REPS): the median of
 * 15 runs of a 15 us forward moves with every hiccup of a shared machine. */
#define MIN_SECONDS 0.05
enum { MAX_REPS = 20000 };

/* Median seconds of at least reps runs of fn (after one warm-up run). */
static double median_time(void (*fn)(void *), void *arg, int reps)
{
    double *t = malloc((size_t)MAX_REPS * sizeof *t), total = 0;
    fn(arg);
    int n = 0;
    while (n < reps || (total < MIN_SECONDS && n < MAX_REPS)) {
        double t0 = now();
        fn(arg);
        t[n] = now() - t0;
        total += t[n++];
    }
    reps = n;
    qsort(t, (size_t)reps, sizeof *t, cmp_double);
    double median = t[reps / 2];
    free(t);
    return median;
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
        printf("{\"engine\":\"predictd\",\"figure\":\"sgemm %dx%dx%d\",\"gflops\":%.1f}\n", g.m, g.n, g.k, gflops);
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

/* FLOPs of a DistilBERT-base forward over n sequences of len tokens, as
 * predictd computes it: the last block runs only the [CLS] rows past its
 * key and value projections (models/distilbert.c). */
static double distilbert_flops(int n, int len)
{
    const double d = 768, h = 3072, layers = 6, T = (double)n * len;
    double block = 2 * T * (4 * d * d + 2 * d * h) + 2 * 2 * T * len * d;
    double last = 2 * T * 2 * d * d + 2 * n * (2 * d * d + 2 * d * h) + 2 * 2 * (double)n * len * d;
    return (layers - 1) * block + last;
}

static void emit(const char *model_name, const char *figure, double ms, const char *extra)
{
    printf("{\"engine\":\"predictd\",\"model\":\"%s\",\"figure\":\"%s\",\"med_ms\":%.4f%s%s}\n",
           model_name, figure, ms, *extra ? "," : "", extra);
    fflush(stdout);
}

static void bench_batch(const model *m, int n, int len, double peak, int reps, const char *figure)
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
    char extra[200];
    snprintf(extra, sizeof extra, "\"seq_per_s_med\":%.2f,\"gflops\":%.1f,\"fraction_of_sgemm_peak\":%.3f",
             n / t, gflops, gflops / peak);
    emit("distilbert", figure, t * 1e3, extra);
    eng_arena_free(&f.arena);
    free(ids), free(off), free(f.logits);
}

static void bench_distilbert(const model *m, double peak)
{
    static const int lat[] = {16, 64, 128, 512};
    char figure[64];
    for (size_t i = 0; i < sizeof lat / sizeof *lat; i++) {
        snprintf(figure, sizeof figure, "latency b1 s%d", lat[i]);
        bench_batch(m, 1, lat[i], peak, 15, figure);
    }
    bench_batch(m, 8, 64, peak, 7, "throughput b8 s64");
    bench_batch(m, 32, 64, peak, 5, "throughput b32 s64");
    bench_batch(m, 8, 128, peak, 5, "throughput b8 s128");
}

/* ---- memory bandwidth ---------------------------------------------------------- */

/* 16-byte float vectors (GCC's vector extension: SSE on any x86-64), so the
 * triad is bounded by memory, not by the arithmetic. */
typedef float f32x4 __attribute__((vector_size(16)));

enum { TRIAD_TASKS = 64 };

typedef struct triad_case {
    f32x4 *a, *b, *c; /* (n) */
    size_t n, per_task; /* in vectors */
} triad_case;

static void triad_task(void *ctx, int task, int thread)
{
    (void)thread;
    triad_case *t = ctx;
    size_t i0 = (size_t)task * t->per_task, i1 = i0 + t->per_task < t->n ? i0 + t->per_task : t->n;
    for (size_t i = i0; i < i1; i++)
        t->a[i] = t->b[i] + 1.5f * t->c[i];
}

static void run_triad(void *p)
{
    eng_pool_run(eng_pool_default(), TRIAD_TASKS, triad_task, p);
}

/* A STREAM-like triad over 3 x 256 MB on all the threads of the engine's
 * pool: the bandwidth a decode step, whose GEMVs run on that pool, can draw.
 * The arrays are filled first: pages of a calloc that were never written all
 * map the one zero page, whose reads come from the cache, not from DRAM. */
static double bandwidth_gbs(void)
{
    triad_case t = {.n = (size_t)16 << 20};
    t.per_task = (t.n + TRIAD_TASKS - 1) / TRIAD_TASKS;
    t.a = malloc(t.n * sizeof *t.a), t.b = malloc(t.n * sizeof *t.b), t.c = malloc(t.n * sizeof *t.c);
    memset(t.a, 0, t.n * sizeof *t.a), memset(t.b, 1, t.n * sizeof *t.b), memset(t.c, 2, t.n * sizeof *t.c);
    double s = median_time(run_triad, &t, 5);
    free(t.a), free(t.b), free(t.c);
    double gbs = 3.0 * t.n * sizeof(f32x4) / s / 1e9;
    int threads = eng_pool_size(eng_pool_default());
    printf("{\"engine\":\"predictd\",\"figure\":\"triad bandwidth %d thread%s\",\"threads\":%d,"
           "\"gb_per_s\":%.1f}\n", threads, threads == 1 ? "" : "s", threads, gbs);
    return gbs;
}

/* ---- GPT-2 --------------------------------------------------------------------- */

typedef struct gen_case {
    const model *m;
    int batch, prompt, steps;
    model_kv *kv;
    model_kv **kvp;
    int32_t *ids;
    int *off;
    float *logits;
    eng_arena arena;
} gen_case;

static void gen_setup(gen_case *g, const model *m, int batch, int prompt, int steps)
{
    g->m = m, g->batch = batch, g->prompt = prompt, g->steps = steps;
    int cap = prompt + steps + 1;
    g->kv = calloc((size_t)batch, sizeof *g->kv);
    g->kvp = calloc((size_t)batch, sizeof *g->kvp);
    for (int b = 0; b < batch; b++) {
        g->kv[b] = (model_kv){.data = malloc(m->ops->kv_floats(m, cap) * sizeof(float)), .capacity = cap};
        g->kvp[b] = &g->kv[b];
    }
    g->ids = malloc((size_t)batch * prompt * sizeof *g->ids);
    for (int i = 0; i < batch * prompt; i++)
        g->ids[i] = (i * 2654435761u) % 50257;
    g->off = malloc((size_t)(batch + 1) * sizeof *g->off);
    g->logits = malloc((size_t)batch * m->vocab_size * sizeof *g->logits);
    eng_arena_init(&g->arena);
    eng_arena_reserve(&g->arena, m->ops->scratch_size(m, batch * prompt, cap));
}

static void gen_step(gen_case *g, int per_seq)
{
    for (int b = 0; b <= g->batch; b++)
        g->off[b] = b * per_seq;
    model_batch mb = {.ids = g->ids, .seq_off = g->off, .n_seq = g->batch};
    eng_err err;
    if (g->m->ops->generate_step(g->m, &mb, g->kvp, &g->arena, g->logits, &err)) {
        fprintf(stderr, "step: %s\n", err.msg);
        exit(1);
    }
}

static void run_prefill(void *p)
{
    gen_case *g = p;
    for (int b = 0; b < g->batch; b++)
        g->kv[b].len = 0;
    gen_step(g, g->prompt);
}

/* Prefill, then steps decode steps (the ids fed are arbitrary: speed does
 * not depend on them). */
static void run_decode(void *p)
{
    gen_case *g = p;
    run_prefill(g);
    for (int s = 0; s < g->steps; s++)
        gen_step(g, 1);
}

static void gen_free(gen_case *g)
{
    for (int b = 0; b < g->batch; b++)
        free(g->kv[b].data);
    free(g->kv), free(g->kvp), free(g->ids), free(g->off), free(g->logits);
    eng_arena_free(&g->arena);
}

static void bench_gpt2(const model *m, double bw, double weight_bytes)
{
    static const int prompts[] = {32, 512};
    char figure[64], extra[256];
    for (size_t i = 0; i < 2; i++) {
        gen_case g;
        gen_setup(&g, m, 1, prompts[i], 0);
        double t = median_time(run_prefill, &g, 5);
        snprintf(figure, sizeof figure, "prefill b1 p%d", prompts[i]);
        snprintf(extra, sizeof extra, "\"tok_per_s_med\":%.1f", prompts[i] / t);
        emit("gpt2", figure, t * 1e3, extra);
        gen_free(&g);
    }
    static const int batches[] = {1, 8, 32};
    for (size_t i = 0; i < 3; i++) {
        int B = batches[i], steps = 64;
        gen_case g;
        gen_setup(&g, m, B, 32, steps);
        double pre = median_time(run_prefill, &g, 3), all = median_time(run_decode, &g, 3);
        double dec = all - pre, tps = B * steps / dec;
        snprintf(figure, sizeof figure, "decode b%d %d steps after p32", B, steps);
        /* At batch 1 every step streams all the weights once: the bound is
         * bandwidth / weight bytes. */
        snprintf(extra, sizeof extra, "\"tok_per_s_med\":%.1f,\"ms_per_step_med\":%.2f,"
                 "\"bandwidth_bound_tok_per_s\":%.1f,\"fraction_of_bound\":%.3f",
                 tps, dec / steps * 1e3, bw * 1e9 / weight_bytes, B == 1 ? tps / (bw * 1e9 / weight_bytes) : 0.0);
        emit("gpt2", figure, dec * 1e3, extra);
        gen_free(&g);
    }
    printf("{\"engine\":\"predictd\",\"model\":\"gpt2\",\"figure\":\"kv cache bytes per token\",\"bytes\":%zu}\n",
           m->ops->kv_floats(m, 1) * sizeof(float));
}

/* ---- CLIP ------------------------------------------------------------------------- */

typedef struct clip_case {
    const model *m;
    int n;
    float *pixels, *out;
    eng_arena arena;
    model_batch texts;
} clip_case;

static void run_image(void *p)
{
    clip_case *c = p;
    eng_err err;
    if (c->m->ops->embed_image(c->m, c->pixels, c->n, &c->arena, c->out, &err)) {
        fprintf(stderr, "image: %s\n", err.msg);
        exit(1);
    }
}

static void run_text(void *p)
{
    clip_case *c = p;
    eng_err err;
    if (c->m->ops->embed_text(c->m, &c->texts, &c->arena, c->out, &err)) {
        fprintf(stderr, "text: %s\n", err.msg);
        exit(1);
    }
}

/* Times the image tower at batch 1 and 8; returns the batch-1 median seconds. */
static double bench_clip_images(const model *m)
{
    char figure[64], extra[128];
    int S = m->image_size;
    double b1 = 0;
    for (int n = 1; n <= 8; n += 7) {
        clip_case c = {.m = m, .n = n};
        c.pixels = calloc((size_t)n * 3 * S * S, sizeof(float));
        for (size_t i = 0; i < (size_t)n * 3 * S * S; i++)
            c.pixels[i] = sinf((float)i * 0.37f);
        c.out = malloc((size_t)n * m->proj_dim * sizeof(float));
        eng_arena_init(&c.arena);
        eng_arena_reserve(&c.arena, m->ops->image_scratch_size(m, n));
        double t = median_time(run_image, &c, n == 1 ? 9 : 5);
        b1 = n == 1 ? t : b1;
        snprintf(figure, sizeof figure, "image b%d", n);
        snprintf(extra, sizeof extra, "\"ms_per_image_med\":%.2f,\"images_per_s\":%.1f", t * 1e3 / n, n / t);
        emit("clip", figure, t * 1e3, extra);
        eng_arena_free(&c.arena);
        free(c.pixels), free(c.out);
    }
    return b1;
}

static void bench_clip_texts(const model *m)
{
    char figure[64];
    for (int L = 16; L <= 77; L += 61) {
        clip_case c = {.m = m};
        int32_t ids[8 * 77];
        int off[9];
        for (int s = 0; s <= 8; s++)
            off[s] = s * L;
        for (int i = 0; i < 8 * L; i++)
            ids[i] = i % L == 0 ? 49406 : i % L == L - 1 ? 49407 : 1000 + (i * 7919) % 39000;
        c.texts = (model_batch){.ids = ids, .seq_off = off, .n_seq = 8};
        c.out = malloc((size_t)8 * m->proj_dim * sizeof(float));
        eng_arena_init(&c.arena);
        eng_arena_reserve(&c.arena, m->ops->scratch_size(m, 8 * L, L));
        double t = median_time(run_text, &c, 7);
        snprintf(figure, sizeof figure, "text 8 x s%d", L);
        emit("clip", figure, t * 1e3, "");
        eng_arena_free(&c.arena);
        free(c.out);
    }
}

typedef struct preprocess_case {
    const model *m;
    const uint8_t *jpeg;
    size_t len;
    uint8_t *crop;  /* (crop_h, crop_w, 3) */
    float *pixels;  /* (3, crop_h, crop_w) */
} preprocess_case;

/* An uploaded image's way to the image tower, as srv_clip_load_image takes
 * it: decode, CLIPImageProcessor, free the decoded image. */
static void run_preprocess(void *p)
{
    preprocess_case *c = p;
    img_rgb8 img = {0};
    eng_err err = {0};
    if (img_decode(c->jpeg, c->len, NULL, &img, &err) ||
        img_clip_preprocess(&img, &c->m->preproc, c->crop, c->pixels, &err)) {
        fprintf(stderr, "preprocess: %s\n", err.msg);
        exit(1);
    }
    img_rgb8_free(&img);
}

/* Median of 200 decodes + preprocessings of the 640x480 test photo (one
 * thread, as a request's worker runs them), and its ratio to the image
 * tower's batch-1 time: how much a request's image costs before the model. */
static void bench_clip_preprocess(const model *m, double image_b1)
{
    unsigned char *jpeg;
    unsigned long len;
    bench_jpeg_pattern(640, 480, &jpeg, &len);
    const img_preproc_cfg *cfg = &m->preproc;
    preprocess_case c = {.m = m, .jpeg = jpeg, .len = len};
    c.crop = malloc((size_t)cfg->crop_h * cfg->crop_w * 3);
    c.pixels = malloc((size_t)3 * cfg->crop_h * cfg->crop_w * sizeof *c.pixels);
    double t = median_time(run_preprocess, &c, 200);
    char extra[128];
    snprintf(extra, sizeof extra, "\"jpeg_bytes\":%lu,\"ratio_to_image_b1\":%.3f", len, t / image_b1);
    emit("clip", "jpeg 640x480 decode + preprocess", t * 1e3, extra);
    free(c.crop), free(c.pixels), free(jpeg);
}

static void bench_clip(const model *m)
{
    double image_b1 = bench_clip_images(m);
    bench_clip_texts(m);
    bench_clip_preprocess(m, image_b1);
}

/* ---- resident memory -------------------------------------------------------------- */

typedef struct mem_use {
    double rss, hwm;   /* VmRSS, VmHWM (the peak so far), MiB */
    double anon, file; /* RssAnon, RssFile: copies we own vs pages of mapped files, MiB */
} mem_use;

/* MiB of the /proc/self/status field key (its values are in kB); 0 if absent. */
static double status_mib(const char *status, const char *key)
{
    const char *at = strstr(status, key);
    return at ? strtod(at + strlen(key), NULL) / 1024 : 0;
}

static mem_use mem_now(void)
{
    char status[8192] = "";
    FILE *f = fopen("/proc/self/status", "r");
    if (f) {
        status[fread(status, 1, sizeof status - 1, f)] = 0;
        fclose(f);
    }
    return (mem_use){status_mib(status, "VmRSS:"), status_mib(status, "VmHWM:"),
                     status_mib(status, "RssAnon:"), status_mib(status, "RssFile:")};
}

/* One JSON line of the process's resident memory now, then extra's fields.
 * With base (the reading before the model was loaded) it adds the model's
 * share, model_rss_mib. hwm_mib right after the load is the load's peak
 * (conversions included); after the benchmark it includes the benchmark's own
 * buffers. F32 tensors read in place from the file mapping (embeddings, norms)
 * count only once a forward has touched them: hence the "rss after benchmark"
 * line beside "rss after load". */
static void emit_memory(const char *model_name, const char *figure, const char *dtype,
                        const mem_use *base, const char *extra)
{
    mem_use u = mem_now();
    printf("{\"engine\":\"predictd\",\"model\":\"%s\",\"figure\":\"%s\",\"dtype\":\"%s\",\"rss_mib\":%.1f,"
           "\"hwm_mib\":%.1f,\"rss_anon_mib\":%.1f,\"rss_file_mib\":%.1f",
           model_name, figure, dtype, u.rss, u.hwm, u.anon, u.file);
    if (base)
        printf(",\"model_rss_mib\":%.1f", u.rss - base->rss);
    printf("%s%s}\n", *extra ? "," : "", extra);
    fflush(stdout);
}

/* Bytes of dir/model.safetensors; 0 when it cannot be read. */
static double checkpoint_bytes(const char *dir)
{
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    return stat(path, &st) == 0 ? (double)st.st_size : 0;
}


int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_engine distilbert|gpt2|clip MODEL_DIR [--dtype D]\n");
        return 2;
    }
    model_load_opts opts = {.dtype = ENG_F32};
    if (argc == 5 && strcmp(argv[3], "--dtype") == 0) {
        int dt = eng_dtype_from_name(argv[4]);
        if (dt < 0) {
            fprintf(stderr, "unknown dtype %s\n", argv[4]);
            return 2;
        }
        opts.dtype = (eng_dtype)dt;
    }
    const char *dtype = eng_dtypes[opts.dtype].name;
    printf("{\"engine\":\"predictd\",\"figure\":\"env\",\"blas_core\":\"%s\",\"blas_threads\":%d,\"dtype\":\"%s\"}\n",
           eng_blas_corename(), eng_blas_threads(), dtype);
    /* The baseline is taken after OpenBLAS has started (the env line), so the
     * difference to it is the model's alone. */
    mem_use before = mem_now();
    emit_memory(argv[1], "rss before load", dtype, NULL, "");
    model *m;
    eng_err err;
    if (model_load(argv[2], &opts, &m, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    /* There is no accessor for the bytes a model's weights take; the
     * checkpoint's size (F32) is the scale the dtypes are judged against. */
    char checkpoint[64];
    snprintf(checkpoint, sizeof checkpoint, "\"checkpoint_mib\":%.1f", checkpoint_bytes(argv[2]) / (1 << 20));
    emit_memory(argv[1], "rss after load", dtype, &before, checkpoint);
    /* What a decode step streams: the weights as held after conversion,
     * which are the model's anonymous memory right after loading (the tied
     * F32 embeddings stay in the file mapping, read a row per token). */
    double held_bytes = (mem_now().anon - before.anon) * (1 << 20);
    if (strcmp(argv[1], "distilbert") == 0)
        bench_distilbert(m, sgemm_peak());
    else if (strcmp(argv[1], "gpt2") == 0)
        bench_gpt2(m, bandwidth_gbs(), held_bytes > 0 ? held_bytes : 1);
    else if (strcmp(argv[1], "clip") == 0)
        bench_clip(m);
    emit_memory(argv[1], "rss after benchmark", dtype, &before, "");
    model_free(m);
    return 0;
}
