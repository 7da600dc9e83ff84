/* The linear layer: converting weights into the kernels' packed layout,
 * choosing the kernel level, and splitting a forward over the thread pool.
 * The kernels themselves are in kernels_*.c. */
#include "engine/linear.h"

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "engine/blas.h"
#include "engine/cpu.h"
#include "engine/kernels.h"
#include "engine/pool.h"
#include "engine/scratch.h"

static size_t round64(size_t n)
{
    return (n + 63) & ~(size_t)63;
}

/* ---- Packing ------------------------------------------------------------------
 *
 * Both passes walk the F32 weights in memory order, whichever the layout, and
 * compute the (o, k) each element belongs to; the loop body is the macro's
 * last argument (variadic, so it may contain commas). */

#define FOR_EACH_WEIGHT(l, o, k, v, ...)                                              \
    do {                                                                              \
        int rows_ = (l)->layout == ENG_W_OUT_IN ? (l)->out : (l)->in;                 \
        int cols_ = (l)->layout == ENG_W_OUT_IN ? (l)->in : (l)->out;                 \
        for (int r_ = 0; r_ < rows_; r_++) {                                          \
            const float *row_ = (l)->w + (size_t)r_ * cols_;                          \
            for (int c_ = 0; c_ < cols_; c_++) {                                      \
                int o = (l)->layout == ENG_W_OUT_IN ? r_ : c_;                        \
                int k = (l)->layout == ENG_W_OUT_IN ? c_ : r_;                        \
                float v = row_[c_];                                                   \
                __VA_ARGS__                                                           \
            }                                                                         \
        }                                                                             \
    } while (0)

/* Allocates a zeroed pack for l as dtype: the struct, then the panels, then
 * the per-channel arrays, each 64-byte aligned, in one block. */
static eng_wpack *pack_alloc(const eng_linear *l, eng_dtype dtype)
{
    int n_panels = (l->out + ENG_KP_NR - 1) / ENG_KP_NR;
    int kp = dtype == ENG_I8 ? (l->in + 3) / 4 * 4 : l->in;
    size_t channels = (size_t)n_panels * ENG_KP_NR;
    size_t head = round64(sizeof(eng_wpack));
    size_t wbytes = round64(channels * kp * eng_dtypes[dtype].size);
    size_t cbytes = round64(channels * 4);
    int n_arrays = dtype == ENG_I8 ? 3 : 1; /* scale, wsum, bias or bias alone */
    size_t bytes = head + wbytes + (size_t)n_arrays * cbytes;
    char *block = aligned_alloc(64, bytes);
    if (!block)
        return NULL;
    memset(block, 0, bytes);
    eng_wpack *pk = (eng_wpack *)block;
    *pk = (eng_wpack){.dtype = dtype, .in = l->in, .out = l->out, .kp = kp,
                      .n_panels = n_panels, .w = block + head, .bytes = bytes};
    char *arrays = block + head + wbytes;
    pk->bias = (const float *)(arrays + (size_t)(n_arrays - 1) * cbytes);
    if (dtype == ENG_I8) {
        pk->scale = (const float *)arrays;
        pk->wsum = (const int32_t *)(arrays + cbytes);
    }
    if (l->b)
        memcpy((float *)pk->bias, l->b, (size_t)l->out * sizeof(float));
    return pk;
}

/* Symmetric per-channel int8: scale_o = max_k |w[o][k]| / 127. */
static int pack_i8(const eng_linear *l, eng_wpack *pk, eng_err *err)
{
    float *scale = (float *)pk->scale;
    int32_t *wsum = (int32_t *)pk->wsum;
    int8_t *W = (int8_t *)pk->w;
    size_t groups = (size_t)pk->kp / 4;
    float *inv = malloc((size_t)l->out * sizeof *inv);
    if (!inv)
        return eng_err_set(err, ENG_ENOMEM, "out of memory converting a (%d, %d) layer to int8",
                           l->out, l->in);
    int bad_o = -1, bad_k = -1;
    FOR_EACH_WEIGHT(l, o, k, v, {
        float a = fabsf(v);
        if (!(a <= FLT_MAX))
            bad_o = o, bad_k = k;
        else if (a > scale[o])
            scale[o] = a;
    });
    if (bad_o >= 0) {
        free(inv);
        return eng_err_set(err, ENG_EFORMAT, "weight (%d, %d) of a (%d, %d) layer is not finite",
                           bad_o, bad_k, l->out, l->in);
    }
    for (int o = 0; o < l->out; o++) {
        inv[o] = scale[o] > 0.0f ? 127.0f / scale[o] : 0.0f;
        scale[o] /= 127.0f;
    }
    FOR_EACH_WEIGHT(l, o, k, v, {
        float r = eng_rne(v * inv[o]);
        int q = r < -127.0f ? -127 : r > 127.0f ? 127 : (int)r;
        W[((size_t)(o / ENG_KP_NR) * groups + k / 4) * ENG_KP_NR * 4 + (o % ENG_KP_NR) * 4 +
          k % 4] = (int8_t)q;
        wsum[o] += q;
    });
    free(inv);
    return 0;
}

/* Float weights: F32 copied as they are, IEEE half or bfloat16 rounded to
 * nearest even (a weight beyond the half's range is an error, not an
 * infinity). */
static int pack_float(const eng_linear *l, eng_wpack *pk, eng_err *err)
{
    float *W32 = (float *)pk->w;
    uint16_t *W16 = (uint16_t *)pk->w;
    int bf16 = pk->dtype == ENG_BF16, bad_o = -1, bad_k = -1;
    FOR_EACH_WEIGHT(l, o, k, v, {
        size_t at = ((size_t)(o / ENG_KP_NR) * l->in + k) * ENG_KP_NR + o % ENG_KP_NR;
        if (pk->dtype == ENG_F32) {
            W32[at] = v;
        } else {
            uint16_t h = bf16 ? eng_f32_to_bf16(v) : eng_f32_to_f16(v);
            float back = bf16 ? eng_bf16_to_f32(h) : eng_f16_to_f32(h);
            if (!(fabsf(back) <= FLT_MAX) && bad_o < 0)
                bad_o = o, bad_k = k;
            W16[at] = h;
        }
    });
    if (bad_o >= 0)
        return eng_err_set(err, ENG_EUNSUPPORTED,
                           "weight (%d, %d) of a (%d, %d) layer is not finite as %s%s", bad_o,
                           bad_k, l->out, l->in, eng_dtypes[pk->dtype].name,
                           bf16 ? "" : " (FP16 ends at 65504)");
    return 0;
}

/* ---- Kernel levels --------------------------------------------------------------- */

static bool runs_ref(const eng_cpu_features *f)
{
    (void)f;
    return true;
}

static bool runs_avx2(const eng_cpu_features *f)
{
    return f->avx2 && f->fma && f->f16c;
}

static bool runs_avxvnni(const eng_cpu_features *f)
{
    return runs_avx2(f) && f->avxvnni;
}

static bool runs_avx512(const eng_cpu_features *f)
{
    return f->avx512f && f->avx512bw && f->avx512dq && f->avx512vl && f->fma && f->f16c;
}

static bool runs_avx512vnni(const eng_cpu_features *f)
{
    return runs_avx512(f) && f->avx512vnni;
}

/* One row per level, in order. A NULL kernels entry is a level this build
 * does not have (every SIMD level off x86-64; AMX everywhere for now). */
static const struct level_row {
    const char *name;
    const eng_kernels *k;
    bool (*runs)(const eng_cpu_features *f);
} levels[ENG_KL_COUNT] = {
    [ENG_KL_REF] = {"ref", &eng_kernels_ref, runs_ref},
#if defined(__x86_64__)
    [ENG_KL_AVX2] = {"avx2", &eng_kernels_avx2, runs_avx2},
    [ENG_KL_AVXVNNI] = {"avxvnni", &eng_kernels_avxvnni, runs_avxvnni},
    [ENG_KL_AVX512] = {"avx512", &eng_kernels_avx512, runs_avx512},
    [ENG_KL_AVX512VNNI] = {"avx512vnni", &eng_kernels_avx512vnni, runs_avx512vnni},
#else
    [ENG_KL_AVX2] = {"avx2", NULL, runs_avx2},
    [ENG_KL_AVXVNNI] = {"avxvnni", NULL, runs_avxvnni},
    [ENG_KL_AVX512] = {"avx512", NULL, runs_avx512},
    [ENG_KL_AVX512VNNI] = {"avx512vnni", NULL, runs_avx512vnni},
#endif
    [ENG_KL_AMX] = {"amx", NULL, runs_ref},
};

const char *eng_klevel_name(eng_klevel level)
{
    return level >= 0 && level < ENG_KL_COUNT ? levels[level].name : "?";
}

const eng_kernels *eng_kernels_for_level(eng_klevel level)
{
    if (level < 0 || level >= ENG_KL_COUNT || !levels[level].k)
        return NULL;
    return levels[level].runs(eng_cpu()) ? levels[level].k : NULL;
}

eng_klevel eng_kernels_pick(const char *request, char *note, size_t note_len)
{
    eng_klevel best = ENG_KL_REF;
    for (int lv = 0; lv < ENG_KL_COUNT; lv++)
        if (eng_kernels_for_level((eng_klevel)lv))
            best = (eng_klevel)lv;
    if (note_len)
        note[0] = '\0';
    if (!request || !*request)
        return best;
    int want = -1;
    for (int lv = 0; lv < ENG_KL_COUNT; lv++)
        if (strcasecmp(request, levels[lv].name) == 0)
            want = lv;
    if (want < 0) {
        snprintf(
            note, note_len,
            "PREDICTD_KERNELS=%s is not a kernel level (ref, avx2, avxvnni, avx512, avx512vnni, "
            "amx); using %s",
            request, levels[best].name);
        return best;
    }
    int lv = want;
    while (!eng_kernels_for_level((eng_klevel)lv))
        lv--; /* ref always runs */
    if (lv != want)
        snprintf(note, note_len, "PREDICTD_KERNELS=%s: this CPU or build lacks it; using %s",
                 request, levels[lv].name);
    return (eng_klevel)lv;
}

static pthread_once_t active_once = PTHREAD_ONCE_INIT;
static eng_klevel active_level;
static char active_note[200];

static void pick_active(void)
{
    active_level = eng_kernels_pick(getenv("PREDICTD_KERNELS"), active_note, sizeof active_note);
}

const eng_kernels *eng_kernels_active(void)
{
    pthread_once(&active_once, pick_active);
    return levels[active_level].k;
}

const char *eng_kernel_level(void)
{
    pthread_once(&active_once, pick_active);
    return levels[active_level].name;
}

const char *eng_kernel_note(void)
{
    pthread_once(&active_once, pick_active);
    return active_note;
}

/* ---- Splitting a product over the pool ---------------------------------------------
 *
 * A task is a block of rows times a block of panels. Row blocks of 48 are a
 * multiple of every micro-tile height (1, 2, 3, 6) and keep a block's rows of
 * x in L2 while its panels stream past; panel blocks are halved until there
 * are a few tasks per thread, so the dynamic hand-out evens out the load. */

enum { ROW_BLOCK = 48, TASKS_PER_THREAD = 4, MIN_PARALLEL_MACS = 1 << 17 };

typedef struct gemm_job {
    const eng_kernels *k;
    const eng_wpack *w;
    eng_act act;
    float *y;         /* (rows, out) */
    int rows;
    int rb, n_rb;     /* rows per task, row blocks */
    int pb, n_pb;     /* panels per task, panel blocks */
} gemm_job;

static void gemm_task(void *ctx, int t, int thread)
{
    (void)thread;
    const gemm_job *j = ctx;
    int ri = t / j->n_pb, pi = t % j->n_pb;
    int m0 = ri * j->rb, m1 = m0 + j->rb < j->rows ? m0 + j->rb : j->rows;
    int p0 = pi * j->pb, p1 = p0 + j->pb < j->w->n_panels ? p0 + j->pb : j->w->n_panels;
    j->k->gemm[j->w->dtype](j->w, &j->act, m0, m1, p0, p1, j->y);
}

static void run_gemm(gemm_job *j)
{
    eng_pool *pool = eng_pool_default();
    int threads = pool ? eng_pool_size(pool) : 1;
    double macs = (double)j->rows * j->w->n_panels * ENG_KP_NR * j->w->kp;
    j->rb = j->rows <= ROW_BLOCK ? j->rows : ROW_BLOCK;
    j->n_rb = (j->rows + j->rb - 1) / j->rb;
    j->pb = j->w->n_panels;
    if (threads > 1 && macs >= MIN_PARALLEL_MACS)
        while (j->pb > 1 &&
               j->n_rb * ((j->w->n_panels + j->pb - 1) / j->pb) < TASKS_PER_THREAD * threads)
            j->pb = (j->pb + 1) / 2;
    j->n_pb = (j->w->n_panels + j->pb - 1) / j->pb;
    int tasks = j->n_rb * j->n_pb;
    if (!pool || threads == 1 || macs < MIN_PARALLEL_MACS) {
        for (int t = 0; t < tasks; t++)
            gemm_task(j, t, 0);
        return;
    }
    eng_pool_run(pool, tasks, gemm_task, j);
}

/* ---- Forward by dtype ------------------------------------------------------------- */

/* F32 weights as the checkpoint holds them, through OpenBLAS. */
static void blas_forward(const eng_linear *l, const float *x, int n, float *y)
{
    float beta = 0.0f;
    if (l->b) {
        /* Seeding y with the bias lets the GEMM add it (beta = 1) for free. */
        for (int i = 0; i < n; i++)
            memcpy(y + (size_t)i * l->out, l->b, (size_t)l->out * sizeof *y);
        beta = 1.0f;
    }
    /* One row (a decode step): a matrix-vector product streams the weights
     * once, where a GEMM would first copy them into its packed panels. */
    if (n == 1 && l->layout == ENG_W_OUT_IN)
        eng_sgemv(false, l->out, l->in, 1.0f, l->w, l->in, x, beta, y);
    else if (n == 1)
        eng_sgemv(true, l->in, l->out, 1.0f, l->w, l->out, x, beta, y);
    else if (l->layout == ENG_W_OUT_IN)
        eng_sgemm(false, true, n, l->out, l->in, 1.0f, x, l->in, l->w, l->in, beta, y, l->out);
    else
        eng_sgemm(false, false, n, l->out, l->in, 1.0f, x, l->in, l->w, l->out, beta, y, l->out);
}

/* F32, FP16 or BF16 panels through our kernels; an F32 layer not packed
 * (pack NULL) goes to OpenBLAS. */
static void float_forward(const eng_linear *l, const eng_kernels *k, const float *x, int n,
                          float *y)
{
    if (!l->pack) {
        blas_forward(l, x, n, y);
        return;
    }
    gemm_job j = {.k = k, .w = l->pack, .act = {.x = x}, .y = y, .rows = n};
    run_gemm(&j);
}

/* ---- INT8 activations ---------------------------------------------------------------
 *
 * Each calling thread quantises into its own scratch (engine/scratch.h),
 * grown to the largest batch it has run up to the cap; bigger batches go
 * through it in chunks of rows. */

enum { QUANT_TASK_BYTES = 1 << 16 };

/* The most scratch one call quantises into before going in chunks of rows. */
static _Atomic size_t scratch_cap = (size_t)32 << 20;

size_t eng_i8_scratch_cap(size_t bytes)
{
    return bytes ? atomic_exchange(&scratch_cap, bytes) : atomic_load(&scratch_cap);
}

/* Bytes of scratch for rows quantised rows of kp columns: q, then sx, then zp. */
static size_t quant_bytes(int rows, int kp)
{
    return round64((size_t)rows * kp) + 2 * round64((size_t)rows * 4);
}

typedef struct quant_job {
    const eng_kernels *k;
    const float *x; /* (rows, in) */
    int in, kp, rows, per_task;
    uint8_t *q;
    float *sx;
    int32_t *zp;
} quant_job;

static void quant_task(void *ctx, int t, int thread)
{
    (void)thread;
    const quant_job *j = ctx;
    int m0 = t * j->per_task, m1 = m0 + j->per_task < j->rows ? m0 + j->per_task : j->rows;
    j->k->quant(j->x, j->in, m0, m1, j->q, j->kp, j->sx, j->zp);
}

static void quantize(quant_job *j)
{
    j->per_task = QUANT_TASK_BYTES / j->kp > 0 ? QUANT_TASK_BYTES / j->kp : 1;
    int tasks = (j->rows + j->per_task - 1) / j->per_task;
    eng_pool *pool = eng_pool_default();
    if (pool && tasks > 1)
        eng_pool_run(pool, tasks, quant_task, j);
    else
        for (int t = 0; t < tasks; t++)
            quant_task(j, t, 0);
}

static void i8_forward(const eng_linear *l, const eng_kernels *k, const float *x, int n, float *y)
{
    const eng_wpack *w = l->pack;
    int kp = w->kp;
    size_t cap = eng_i8_scratch_cap(0);
    int chunk = (size_t)n * kp <= cap ? n : (int)(cap / kp > 0 ? cap / kp : 1);
    unsigned char *buf = NULL;
    for (; chunk > 0 && !(buf = eng_scratch(ENG_SCRATCH_QUANT, quant_bytes(chunk, kp))); chunk /= 2) {
    }
    if (!buf) {
        for (size_t i = 0; i < (size_t)n * l->out; i++)
            y[i] = NAN;
        return;
    }
    for (int m = 0; m < n; m += chunk) {
        int rows = n - m < chunk ? n - m : chunk;
        quant_job qj = {.k = k, .x = x + (size_t)m * l->in, .in = l->in, .kp = kp, .rows = rows};
        qj.q = buf;
        qj.sx = (float *)(buf + round64((size_t)rows * kp));
        qj.zp = (int32_t *)(buf + round64((size_t)rows * kp) + round64((size_t)rows * 4));
        quantize(&qj);
        gemm_job gj = {.k = k, .w = w, .y = y + (size_t)m * l->out, .rows = rows,
                       .act = {.q = qj.q, .sx = qj.sx, .zp = qj.zp, .ldq = kp}};
        run_gemm(&gj);
    }
}

/* ---- The layer ------------------------------------------------------------------------ */

/* What the layer does per weight dtype; a NULL pack is a dtype a layer
 * cannot be converted to. */
static const struct linear_kind {
    int (*pack)(const eng_linear *l, eng_wpack *pk, eng_err *err);
    void (*forward)(const eng_linear *l, const eng_kernels *k, const float *x, int n, float *y);
} kinds[ENG_DTYPE_COUNT] = {
    [ENG_F32] = {pack_float, float_forward},
    [ENG_F16] = {pack_float, float_forward},
    [ENG_BF16] = {pack_float, float_forward},
    [ENG_I8] = {pack_i8, i8_forward},
};

void eng_linear_forward_kernels(const eng_linear *l, const eng_kernels *k, const float *x, int n,
                                float *y)
{
    if (n > 0)
        kinds[l->dtype].forward(l, k, x, n, y);
}

void eng_linear_forward(const eng_linear *l, const float *x, int n, float *y)
{
    eng_linear_forward_kernels(l, l->pack ? eng_kernels_active() : NULL, x, n, y);
}

int eng_linear_convert(eng_linear *l, eng_dtype to, eng_err *err)
{
    if (l->pack && to == l->dtype)
        return 0;
    if (to < 0 || to >= ENG_DTYPE_COUNT || !kinds[to].pack)
        return eng_err_set(err, ENG_EUNSUPPORTED, "a linear layer's weights cannot be held as %s",
                           to >= 0 && to < ENG_DTYPE_COUNT ? eng_dtypes[to].name : "?");
    if (l->pack)
        return eng_err_set(err, ENG_EINVAL, "the layer is already converted to %s",
                           eng_dtypes[l->dtype].name);
    if (l->in <= 0 || l->out <= 0 || !l->w)
        return eng_err_set(err, ENG_EINVAL, "a (%d, %d) layer without weights cannot be converted",
                           l->out, l->in);
    if (to == ENG_I8 && l->in > ENG_I8_MAX_IN)
        return eng_err_set(err, ENG_EUNSUPPORTED,
                           "int8 layers take at most %d inputs (int32 sums); this one has %d",
                           ENG_I8_MAX_IN, l->in);
    eng_wpack *pk = pack_alloc(l, to);
    if (!pk)
        return eng_err_set(err, ENG_ENOMEM, "out of memory converting a (%d, %d) layer to %s",
                           l->out, l->in, eng_dtypes[to].name);
    int rc = kinds[to].pack(l, pk, err);
    if (rc < 0) {
        free(pk);
        return rc;
    }
    l->pack = pk;
    l->dtype = to;
    l->w = NULL;
    l->b = NULL;
    return 0;
}

void eng_linear_free(eng_linear *l)
{
    free(l->pack);
    l->pack = NULL;
}

int eng_linear_f32_row(const eng_linear *l, int o, float *dst)
{
    if (l->dtype != ENG_F32 || o < 0 || o >= l->out)
        return -1;
    const float *w = l->pack ? l->pack->w : l->w;
    size_t at = (size_t)o, step = (size_t)l->out; /* ENG_W_IN_OUT */
    if (l->pack)
        at = (size_t)(o / ENG_KP_NR) * l->in * ENG_KP_NR + o % ENG_KP_NR, step = ENG_KP_NR;
    else if (l->layout == ENG_W_OUT_IN)
        at = (size_t)o * l->in, step = 1;
    for (int k = 0; k < l->in; k++)
        dst[k] = w[at + (size_t)k * step];
    return 0;
}

size_t eng_linear_weight_bytes(const eng_linear *l)
{
    if (l->pack)
        return l->pack->bytes;
    return ((size_t)l->in * l->out + (l->b ? (size_t)l->out : 0)) * sizeof(float);
}
