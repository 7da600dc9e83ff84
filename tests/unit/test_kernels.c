/* The linear layer's kernels: every level this CPU runs against the reference
 * (bit for bit, every dtype), the reference against exact arithmetic within
 * the bounds engine/linear.h states, weight conversion and its errors, level
 * selection, and the thread pool. */
#include <float.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/kernels.h"
#include "engine/linear.h"
#include "engine/pool.h"
#include "tests/unit/test.h"

/* ---- Data ------------------------------------------------------------------------ */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static void rng_seed(uint64_t s)
{
    rng_state = s * 0x9e3779b97f4a7c15ULL + 1;
}

static double uniform(void) /* [0, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

static float gauss(void)
{
    double u = uniform() + 1e-12, v = uniform();
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

static float *gauss_array(size_t n, float sd)
{
    float *a = malloc(n * sizeof *a);
    for (size_t i = 0; i < n; i++)
        a[i] = sd * gauss();
    return a;
}

/* w (out, in) transposed to (in, out). */
static float *transpose(const float *w, int out, int in)
{
    float *t = malloc((size_t)out * in * sizeof *t);
    for (int o = 0; o < out; o++)
        for (int k = 0; k < in; k++)
            t[(size_t)k * out + o] = w[(size_t)o * in + k];
    return t;
}

/* The levels this CPU runs, ref first; returns how many. */
static int supported_levels(const eng_kernels **out)
{
    int n = 0;
    for (int lv = 0; lv < ENG_KL_COUNT; lv++)
        if (eng_kernels_for_level((eng_klevel)lv))
            out[n++] = eng_kernels_for_level((eng_klevel)lv);
    return n;
}

static const int sizes_n[] = {1, 3, 17, 64};
static const int sizes_in[] = {1, 7, 64, 100, 769};
static const int sizes_out[] = {1, 5, 16, 32, 33, 100, 2304};
#define COUNT(a) (int)(sizeof(a) / sizeof *(a))

/* The pack's arrays as one comparable region: everything after the struct. */
static int packs_equal(const eng_linear *a, const eng_linear *b)
{
    size_t head = (sizeof(eng_wpack) + 63) & ~(size_t)63;
    return a->pack->bytes == b->pack->bytes &&
           memcmp((const char *)a->pack + head, (const char *)b->pack + head,
                  a->pack->bytes - head) == 0;
}

/* ---- Every level equals the reference --------------------------------------------- */

/* For one dtype: every shape, with and without bias, both layouts (which must
 * pack identically), every supported level bit for bit against ref. */
static void levels_equal_ref(eng_dtype dtype)
{
    const eng_kernels *lv[ENG_KL_COUNT];
    int n_lv = supported_levels(lv);
    CHECK(n_lv >= 1 && lv[0] == &eng_kernels_ref);
    rng_seed(dtype);
    for (int io = 0; io < COUNT(sizes_out); io++) {
        for (int ii = 0; ii < COUNT(sizes_in); ii++) {
            int out = sizes_out[io], in = sizes_in[ii], nmax = 64;
            float *w = gauss_array((size_t)out * in, 0.05f), *wt = transpose(w, out, in);
            float *b = gauss_array((size_t)out, 0.5f);
            float *x = gauss_array((size_t)nmax * in, 1.0f);
            /* A row of zeros and one of one sign exercise the zero point. */
            memset(x + in, 0, (size_t)in * sizeof *x);
            for (int k = 0; k < in; k++)
                x[2 * in + k] = fabsf(x[2 * in + k]);
            float *y0 = malloc((size_t)nmax * out * sizeof *y0),
                  *y1 = malloc((size_t)nmax * out * sizeof *y1);
            for (int bias = 0; bias < 2; bias++) {
                eng_linear a = {
                    .in = in, .out = out, .layout = ENG_W_OUT_IN, .w = w, .b = bias ? b : NULL};
                eng_linear t = {
                    .in = in, .out = out, .layout = ENG_W_IN_OUT, .w = wt, .b = bias ? b : NULL};
                eng_err err = {0};
                CHECK_MSG(eng_linear_convert(&a, dtype, &err) == 0, "%s", err.msg);
                CHECK_MSG(eng_linear_convert(&t, dtype, &err) == 0, "%s", err.msg);
                CHECK_MSG(packs_equal(&a, &t), "%s (%d, %d): layouts pack differently",
                          eng_dtypes[dtype].name, out, in);
                for (int ni = 0; ni < COUNT(sizes_n); ni++) {
                    int n = sizes_n[ni];
                    eng_linear_forward_kernels(&a, lv[0], x, n, y0);
                    for (int l = 1; l < n_lv; l++) {
                        memset(y1, 0xff, (size_t)n * out * sizeof *y1);
                        eng_linear_forward_kernels(l % 2 ? &a : &t, lv[l], x, n, y1);
                        CHECK_MSG(memcmp(y0, y1, (size_t)n * out * sizeof *y0) == 0,
                                  "%s %s n=%d in=%d out=%d bias=%d differs from ref",
                                  eng_dtypes[dtype].name, lv[l]->name, n, in, out, bias);
                    }
                }
                eng_linear_free(&a);
                eng_linear_free(&t);
            }
            free(w), free(wt), free(b), free(x), free(y0), free(y1);
        }
    }
}

TEST(kernels_i8_levels_equal_ref)
{
    levels_equal_ref(ENG_I8);
}

TEST(kernels_f16_levels_equal_ref)
{
    levels_equal_ref(ENG_F16);
}

TEST(kernels_bf16_levels_equal_ref)
{
    levels_equal_ref(ENG_BF16);
}

TEST(kernels_f32_levels_equal_ref)
{
    levels_equal_ref(ENG_F32);
}

/* The SIMD quantisers equal the reference on awkward rows: zeros, one sign,
 * tiny values, a huge range, an infinity, a NaN, odd lengths. */
TEST(kernels_quant_levels_equal_ref)
{
    const eng_kernels *lv[ENG_KL_COUNT];
    int n_lv = supported_levels(lv);
    enum { ROWS = 8 };
    for (int ii = 0; ii < COUNT(sizes_in); ii++) {
        int in = sizes_in[ii], kp = (in + 3) / 4 * 4;
        float *x = gauss_array((size_t)ROWS * in, 3.0f);
        memset(x, 0, (size_t)in * sizeof *x);
        for (int k = 0; k < in; k++) {
            x[1 * in + k] = -fabsf(x[1 * in + k]);
            x[2 * in + k] *= 1e-33f;
            x[3 * in + k] *= 1e30f;
        }
        x[4 * in + in / 2] = INFINITY;
        x[5 * in + in / 2] = NAN;
        uint8_t q0[ROWS * 772], q1[ROWS * 772];
        float sx0[ROWS], sx1[ROWS];
        int32_t zp0[ROWS], zp1[ROWS];
        eng_i8_quant_ref(x, in, 0, ROWS, q0, kp, sx0, zp0);
        for (int l = 1; l < n_lv; l++) {
            memset(q1, 0xaa, sizeof q1);
            lv[l]->quant(x, in, 0, ROWS, q1, kp, sx1, zp1);
            CHECK_MSG(memcmp(q0, q1, (size_t)ROWS * kp) == 0, "%s in=%d: q differs", lv[l]->name,
                      in);
            CHECK_MSG(memcmp(sx0, sx1, sizeof sx0) == 0, "%s in=%d: sx differs", lv[l]->name, in);
            CHECK_MSG(memcmp(zp0, zp1, sizeof zp0) == 0, "%s in=%d: zp differs", lv[l]->name, in);
        }
        CHECK(sx0[0] == 0.0f && zp0[0] == 0);
        CHECK(zp0[1] == 255);
        CHECK(isnan(sx0[4]));
        free(x);
    }
}

/* ---- The reference against exact arithmetic ---------------------------------------- */

typedef struct exact {
    double y, sum_abs_xw, sum_abs_x, sum_abs_w;
} exact;

static exact exact_out(const float *x, const float *w, float b, int in)
{
    exact e = {b, 0, 0, 0};
    for (int k = 0; k < in; k++) {
        e.y += (double)x[k] * w[k];
        e.sum_abs_xw += fabs((double)x[k] * w[k]);
        e.sum_abs_x += fabs(x[k]);
        e.sum_abs_w += fabs(w[k]);
    }
    return e;
}

/* The bound engine/linear.h states for the ref level, for output (m, o). */
static double ref_bound(eng_dtype dtype, const float *xr, const float *wr, float b, int in, exact e)
{
    double u = 0x1p-24, fl = (in + 1) * u * (e.sum_abs_xw * 1.01 + fabs(b));
    if (dtype == ENG_F16) {
        double conv = 0;
        for (int k = 0; k < in; k++)
            conv += fabs(xr[k]) * (0x1p-11 * fabs(wr[k]) + 0x1p-25);
        return conv + fl;
    }
    if (dtype == ENG_BF16)
        return 0x1p-8 * e.sum_abs_xw + fl;
    if (dtype == ENG_F32)
        return fl;
    float mn = 0, mx = 0, amax = 0;
    for (int k = 0; k < in; k++) {
        mn = xr[k] < mn ? xr[k] : mn, mx = xr[k] > mx ? xr[k] : mx;
        amax = fabsf(wr[k]) > amax ? fabsf(wr[k]) : amax;
    }
    double sx = (mx - mn) / 255.0, scale = amax / 127.0;
    return 0.51 * (sx * e.sum_abs_w + scale * e.sum_abs_x) + 0.26 * in * sx * scale +
           1e-6 * (e.sum_abs_xw + fabs(b));
}

static void ref_vs_exact(eng_dtype dtype)
{
    rng_seed(100 + dtype);
    for (int io = 0; io < COUNT(sizes_out); io++) {
        for (int ii = 0; ii < COUNT(sizes_in); ii++) {
            int out = sizes_out[io], in = sizes_in[ii], n = 17;
            float *w = gauss_array((size_t)out * in, 0.05f), *b = gauss_array((size_t)out, 0.5f);
            float *x = gauss_array((size_t)n * in, 1.0f), *y = malloc((size_t)n * out * sizeof *y);
            eng_linear l = {.in = in, .out = out, .layout = ENG_W_OUT_IN, .w = w, .b = b};
            CHECK(eng_linear_convert(&l, dtype, NULL) == 0);
            eng_linear_forward_kernels(&l, &eng_kernels_ref, x, n, y);
            int bad = 0;
            for (int m = 0; m < n; m++) {
                for (int o = 0; o < out; o++) {
                    const float *xr = x + (size_t)m * in, *wr = w + (size_t)o * in;
                    exact e = exact_out(xr, wr, b[o], in);
                    double err = fabs(y[(size_t)m * out + o] - e.y);
                    double bound = ref_bound(dtype, xr, wr, b[o], in, e);
                    if (!(err <= bound) && bad++ < 3)
                        CHECK_MSG(0, "%s in=%d out=%d y[%d][%d]: error %.3g > bound %.3g",
                                  eng_dtypes[dtype].name, in, out, m, o, err, bound);
                }
            }
            eng_linear_free(&l);
            free(w), free(b), free(x), free(y);
        }
    }
}

TEST(kernels_i8_ref_within_bound)
{
    ref_vs_exact(ENG_I8);
}

TEST(kernels_f16_ref_within_bound)
{
    ref_vs_exact(ENG_F16);
}

TEST(kernels_bf16_ref_within_bound)
{
    ref_vs_exact(ENG_BF16);
}

TEST(kernels_f32_ref_within_bound)
{
    ref_vs_exact(ENG_F32);
}

/* On Gaussian data of a transformer layer's size, int8's relative RMS error
 * is about 1%, through the level in use. */
TEST(kernels_i8_relative_error)
{
    rng_seed(7);
    int n = 32, in = 768, out = 256;
    float *w = gauss_array((size_t)out * in, 0.03f), *x = gauss_array((size_t)n * in, 1.0f);
    float *y = malloc((size_t)n * out * sizeof *y);
    eng_linear l = {.in = in, .out = out, .layout = ENG_W_OUT_IN, .w = w};
    CHECK(eng_linear_convert(&l, ENG_I8, NULL) == 0);
    eng_linear_forward(&l, x, n, y);
    double se = 0, sy = 0;
    for (int m = 0; m < n; m++) {
        for (int o = 0; o < out; o++) {
            exact e = exact_out(x + (size_t)m * in, w + (size_t)o * in, 0.0f, in);
            se += (y[(size_t)m * out + o] - e.y) * (y[(size_t)m * out + o] - e.y);
            sy += e.y * e.y;
        }
    }
    double rel = sqrt(se / sy);
    CHECK_MSG(rel < 0.02, "relative RMS error %.4f", rel);
    eng_linear_free(&l);
    free(w), free(x), free(y);
}

/* ---- The layer ------------------------------------------------------------------------ */

/* F32 before conversion is OpenBLAS on the borrowed weights, after it our
 * packed kernels: both against exact arithmetic, both layouts; the packed
 * layer gives back each weight row exactly. */
TEST(kernels_f32_blas_and_packed)
{
    rng_seed(3);
    int n = 5, in = 100, out = 77;
    float *w = gauss_array((size_t)out * in, 0.1f), *wt = transpose(w, out, in);
    float *b = gauss_array((size_t)out, 1.0f), *x = gauss_array((size_t)n * in, 1.0f);
    float y[5 * 77], yt[5 * 77], yp[5 * 77], row[100];
    eng_linear a = {.in = in, .out = out, .layout = ENG_W_OUT_IN, .w = w, .b = b};
    eng_linear t = {.in = in, .out = out, .layout = ENG_W_IN_OUT, .w = wt, .b = b};
    eng_linear p = a;
    CHECK(a.dtype == ENG_F32 && a.pack == NULL);
    CHECK_EQ_INT(eng_linear_weight_bytes(&a), (in * out + out) * 4);
    CHECK(eng_linear_convert(&p, ENG_F32, NULL) == 0);
    CHECK(p.dtype == ENG_F32 && p.pack != NULL && p.w == NULL && p.b == NULL);
    CHECK(eng_linear_convert(&p, ENG_F32, NULL) == 0); /* converted already: nothing */
    CHECK(eng_linear_weight_bytes(&p) >= (size_t)(128 * in + out) * 4);
    eng_linear_forward(&a, x, n, y);
    eng_linear_forward(&t, x, n, yt);
    eng_linear_forward(&p, x, n, yp);
    for (int m = 0; m < n; m++) {
        for (int o = 0; o < out; o++) {
            exact e = exact_out(x + (size_t)m * in, w + (size_t)o * in, b[o], in);
            CHECK_NEAR(y[m * out + o], e.y, 1e-5 * (e.sum_abs_xw + 1));
            CHECK_NEAR(yt[m * out + o], e.y, 1e-5 * (e.sum_abs_xw + 1));
            CHECK_NEAR(yp[m * out + o], e.y, 1e-5 * (e.sum_abs_xw + 1));
        }
    }
    const eng_linear *layers[] = {&a, &t, &p};
    for (int i = 0; i < 3; i++)
        for (int o = 0; o < out; o += 19) {
            CHECK_EQ_INT(eng_linear_f32_row(layers[i], o, row), 0);
            CHECK_MSG(memcmp(row, w + (size_t)o * in, sizeof row) == 0, "layer %d row %d", i, o);
        }
    CHECK_EQ_INT(eng_linear_f32_row(&p, out, row), -1);
    CHECK_EQ_INT(eng_linear_f32_row(&p, -1, row), -1);
    eng_linear_free(&a); /* a no-op */
    eng_linear_free(&p);
    CHECK(eng_linear_convert(&a, ENG_I8, NULL) == 0);
    CHECK_EQ_INT(eng_linear_f32_row(&a, 0, row), -1);
    eng_linear_free(&a);
    free(w), free(wt), free(b), free(x);
}

TEST(kernels_convert_errors)
{
    float w[4 * 3] = {0};
    eng_err err = {0};
    eng_linear l = {.in = 3, .out = 4, .layout = ENG_W_OUT_IN, .w = w};
    w[5] = NAN;
    CHECK_EQ_INT(eng_linear_convert(&l, ENG_I8, &err), ENG_EFORMAT);
    CHECK(strstr(err.msg, "(1, 2)") != NULL);
    CHECK(l.dtype == ENG_F32 && l.w == w && l.pack == NULL);
    w[5] = 1e5f;
    CHECK_EQ_INT(eng_linear_convert(&l, ENG_F16, &err), ENG_EUNSUPPORTED);
    CHECK(strstr(err.msg, "65504") != NULL);
    CHECK_EQ_INT(eng_linear_convert(&l, ENG_I32, &err), ENG_EUNSUPPORTED);
    CHECK_EQ_INT(eng_linear_convert(&l, ENG_BF16, &err), 0);
    CHECK(l.dtype == ENG_BF16 && l.w == NULL && l.b == NULL && l.pack != NULL);
    CHECK(eng_linear_weight_bytes(&l) >= 64 * 3 * 2);
    CHECK_EQ_INT(eng_linear_convert(&l, ENG_BF16, &err), 0);
    CHECK_EQ_INT(eng_linear_convert(&l, ENG_I8, &err), ENG_EINVAL);
    eng_linear_free(&l);

    float *big = calloc(65537, sizeof *big);
    eng_linear wide = {.in = 65537, .out = 1, .layout = ENG_W_OUT_IN, .w = big};
    CHECK_EQ_INT(eng_linear_convert(&wide, ENG_I8, &err), ENG_EUNSUPPORTED);
    CHECK_EQ_INT(eng_linear_convert(&wide, ENG_F16, &err), 0);
    eng_linear_free(&wide);
    free(big);
}

/* A zero weight row and zero inputs give exactly the bias. */
TEST(kernels_i8_zeros_give_bias)
{
    float w[2 * 8] = {0}, b[2] = {1.5f, -2.0f}, x[3 * 8] = {0}, y[3 * 2];
    for (int k = 0; k < 8; k++)
        w[8 + k] = (float)k;
    eng_linear l = {.in = 8, .out = 2, .layout = ENG_W_OUT_IN, .w = w, .b = b};
    CHECK(eng_linear_convert(&l, ENG_I8, NULL) == 0);
    eng_linear_forward(&l, x, 3, y);
    for (int m = 0; m < 3; m++) {
        CHECK(y[m * 2] == 1.5f);
        CHECK(y[m * 2 + 1] == -2.0f);
    }
    eng_linear_free(&l);
}

/* The split over the pool changes nothing: one thread or all, same bits. */
TEST(kernels_threads_change_nothing)
{
    rng_seed(11);
    int n = 200, in = 192, out = 700;
    float *w = gauss_array((size_t)out * in, 0.05f), *x = gauss_array((size_t)n * in, 1.0f);
    float *y1 = malloc((size_t)n * out * 4), *yn = malloc((size_t)n * out * 4);
    for (int d = 0; d < 4; d++) {
        eng_dtype dt = (eng_dtype[]){ENG_I8, ENG_F16, ENG_BF16, ENG_F32}[d];
        eng_linear l = {.in = in, .out = out, .layout = ENG_W_OUT_IN, .w = w};
        CHECK(eng_linear_convert(&l, dt, NULL) == 0);
        int threads = eng_pool_threads();
        eng_pool_set_threads(1);
        eng_linear_forward(&l, x, n, y1);
        eng_pool_set_threads(threads > 1 ? threads : 3);
        eng_linear_forward(&l, x, n, yn);
        eng_pool_set_threads(threads);
        CHECK_MSG(memcmp(y1, yn, (size_t)n * out * 4) == 0, "%s", eng_dtypes[dt].name);
        eng_linear_free(&l);
    }
    free(w), free(x), free(y1), free(yn);
}

/* Batches bigger than the scratch cap go through it in chunks of rows, with
 * the same result. */
TEST(kernels_i8_chunked_rows)
{
    rng_seed(13);
    int n = 64, in = 769, out = 40;
    float *w = gauss_array((size_t)out * in, 0.05f), *x = gauss_array((size_t)n * in, 1.0f);
    float *want = malloc((size_t)n * out * 4), *got = malloc((size_t)n * out * 4);
    eng_linear l = {.in = in, .out = out, .layout = ENG_W_OUT_IN, .w = w};
    CHECK(eng_linear_convert(&l, ENG_I8, NULL) == 0);
    eng_linear_forward_kernels(&l, &eng_kernels_ref, x, n, want);
    size_t cap = eng_i8_scratch_cap(5 * 772); /* 5 rows a chunk, the last 4 */
    eng_linear_forward(&l, x, n, got);
    CHECK(memcmp(want, got, (size_t)n * out * 4) == 0);
    eng_i8_scratch_cap(1); /* below one row still runs a row at a time */
    eng_linear_forward(&l, x, 3, got);
    CHECK(memcmp(want, got, (size_t)3 * out * 4) == 0);
    eng_i8_scratch_cap(cap);
    CHECK_EQ_INT(eng_i8_scratch_cap(0), cap);
    eng_linear_free(&l);
    free(w), free(x), free(want), free(got);
}

/* ---- Levels ---------------------------------------------------------------------- */

TEST(kernels_level_pick_clamps)
{
    char note[200];
    eng_klevel best = eng_kernels_pick(NULL, note, sizeof note);
    CHECK(eng_kernels_for_level(best) != NULL);
    CHECK_STR(note, "");
    CHECK_STR(eng_kernel_level(),
              eng_klevel_name(eng_kernels_pick(getenv("PREDICTD_KERNELS"), NULL, 0)));
    CHECK(eng_kernels_pick("ref", note, sizeof note) == ENG_KL_REF);
    CHECK_STR(note, "");
    CHECK(eng_kernels_pick("fast", note, sizeof note) == best);
    CHECK(strstr(note, "not a kernel level") != NULL);
    /* AMX has no kernels yet: asking for it clamps, and says so. */
    CHECK(eng_kernels_pick("amx", note, sizeof note) == best);
    CHECK(strstr(note, "lacks") != NULL);
    for (int lv = 0; lv < ENG_KL_COUNT; lv++) {
        eng_klevel got = eng_kernels_pick(eng_klevel_name((eng_klevel)lv), note, sizeof note);
        CHECK(got <= (eng_klevel)lv && eng_kernels_for_level(got) != NULL);
        if (eng_kernels_for_level((eng_klevel)lv))
            CHECK(got == (eng_klevel)lv && note[0] == '\0');
        else
            CHECK_MSG(strstr(note, "lacks") != NULL, "%s: %s", eng_klevel_name((eng_klevel)lv),
                      note);
    }
    CHECK(eng_kernels_pick("AVX2", NULL, 0) <= ENG_KL_AVX2);
}

/* ---- The pool -------------------------------------------------------------------- */

typedef struct rendezvous {
    atomic_int arrived;
    int n;
    atomic_int seen[16]; /* tasks run by each thread index */
    atomic_int timeouts;
} rendezvous;

/* Each task waits until n tasks have started: a thread blocked here cannot
 * take a second task, so n tasks finishing means n distinct threads ran. */
static void meet(void *ctx, int task, int thread)
{
    (void)task;
    rendezvous *r = ctx;
    atomic_fetch_add(&r->seen[thread], 1);
    atomic_fetch_add(&r->arrived, 1);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (atomic_load(&r->arrived) < r->n) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (t.tv_sec - t0.tv_sec > 10) {
            atomic_fetch_add(&r->timeouts, 1);
            return;
        }
    }
}

TEST(kernels_pool_runs_on_all_threads)
{
    eng_pool *p = NULL;
    eng_err err = {0};
    CHECK_MSG(eng_pool_create(&p, 3, &err) == 0, "%s", err.msg);
    if (!p)
        return;
    CHECK_EQ_INT(eng_pool_size(p), 3);
    for (int round = 0; round < 3; round++) {
        rendezvous r = {.n = 3};
        eng_pool_run(p, 3, meet, &r);
        CHECK_EQ_INT(atomic_load(&r.timeouts), 0);
        for (int t = 0; t < 3; t++)
            CHECK_EQ_INT(atomic_load(&r.seen[t]), 1);
    }
    CHECK(eng_pool_resize(p, 4, &err) == 0);
    CHECK_EQ_INT(eng_pool_size(p), 4);
    rendezvous r = {.n = 4};
    eng_pool_run(p, 4, meet, &r);
    CHECK_EQ_INT(atomic_load(&r.timeouts), 0);
    eng_pool_destroy(p);
}

typedef struct count_job {
    eng_pool *p;
    atomic_int hits[64];
    int nested; /* tasks start a nested run of 4 tasks */
} count_job;

static void count_task(void *ctx, int task, int thread)
{
    (void)thread;
    count_job *j = ctx;
    atomic_fetch_add(&j->hits[task], 1);
    if (j->nested) {
        count_job inner = {.p = j->p};
        eng_pool_run(j->p, 4, count_task, &inner);
        for (int t = 0; t < 4; t++)
            if (atomic_load(&inner.hits[t]) != 1)
                atomic_fetch_add(&j->hits[63], 1000);
    }
}

typedef struct caller_arg {
    eng_pool *p;
    int bad;
} caller_arg;

static void *caller_main(void *arg)
{
    caller_arg *a = arg;
    for (int run = 0; run < 300; run++) {
        count_job j = {.p = a->p, .nested = run % 10 == 0};
        eng_pool_run(a->p, 40, count_task, &j);
        for (int t = 0; t < 40; t++)
            a->bad += atomic_load(&j.hits[t]) != 1;
        a->bad += atomic_load(&j.hits[63]) != 0;
    }
    return NULL;
}

/* Two callers at once, each run's tasks run exactly once; nested runs work. */
TEST(kernels_pool_concurrent_callers)
{
    eng_pool *p = NULL;
    CHECK(eng_pool_create(&p, 2, NULL) == 0);
    if (!p)
        return;
    caller_arg a = {p, 0}, b = {p, 0};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, caller_main, &a);
    pthread_create(&tb, NULL, caller_main, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    CHECK_EQ_INT(a.bad, 0);
    CHECK_EQ_INT(b.bad, 0);
    eng_pool_destroy(p);
}

/* Several threads running int8 layers through the default pool at once get
 * what one thread gets. */
typedef struct layer_caller {
    const eng_linear *l;
    const float *x;
    const float *want;
    int n, bad;
} layer_caller;

static void *layer_main(void *arg)
{
    layer_caller *c = arg;
    float *y = malloc((size_t)c->n * c->l->out * sizeof *y);
    for (int i = 0; i < 20; i++) {
        eng_linear_forward(c->l, c->x, c->n, y);
        c->bad += memcmp(y, c->want, (size_t)c->n * c->l->out * sizeof *y) != 0;
    }
    free(y);
    return NULL;
}

TEST(kernels_concurrent_layers)
{
    rng_seed(5);
    int n = 64, in = 256, out = 300;
    float *w = gauss_array((size_t)out * in, 0.05f), *x = gauss_array((size_t)n * in, 1.0f);
    float *want = malloc((size_t)n * out * sizeof *want);
    eng_linear l = {.in = in, .out = out, .layout = ENG_W_OUT_IN, .w = w};
    CHECK(eng_linear_convert(&l, ENG_I8, NULL) == 0);
    eng_linear_forward_kernels(&l, &eng_kernels_ref, x, n, want);
    layer_caller c[3];
    pthread_t t[3];
    for (int i = 0; i < 3; i++) {
        c[i] = (layer_caller){&l, x, want, n - i, 0};
        pthread_create(&t[i], NULL, layer_main, &c[i]);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        CHECK_EQ_INT(c[i].bad, 0);
    }
    eng_linear_free(&l);
    free(w), free(x), free(want);
}
