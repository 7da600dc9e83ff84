/* The vectorised activations, softmax, LayerNorm and small attention heads
 * against their plain C references. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/ops.h"
#include "engine/ops_simd.h"
#include "tests/unit/test.h"

static const char *const levels[] = {"avx512", "avx2"};

/* Values spanning where the functions bend and saturate, at odd lengths. */
static void fill(float *x, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        x[i] = ((float)(seed >> 8) / (1 << 24) - 0.5f) * 24.0f;
    }
    if (n > 3)
        x[0] = 0.0f, x[1] = -90.0f, x[2] = 90.0f, x[3] = -1e-8f;
}

static void check_act(const char *name, void (*simd)(float *, size_t), void (*ref)(float *, size_t))
{
    static const size_t sizes[] = {1, 7, 8, 15, 16, 17, 100, 3072};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        size_t n = sizes[s];
        float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
        fill(a, n, (unsigned)n);
        for (size_t i = 0; i < n; i++)
            b[i] = a[i];
        simd(a, n);
        ref(b, n);
        double worst = 0;
        for (size_t i = 0; i < n; i++)
            worst = fmax(worst, fabs(a[i] - b[i]) / fmax(1.0, fabs(b[i])));
        CHECK_MSG(worst <= 1e-6, "%s n=%zu: error %g", name, n, worst);
        free(a), free(b);
    }
}

TEST(ops_simd_activations_match_reference)
{
    int tested = 0;
    for (size_t l = 0; l < sizeof levels / sizeof *levels; l++) {
        const eng_ops_impl *impl = (const eng_ops_impl *)eng_ops_for_level(levels[l]);
        if (!impl)
            continue;
        tested++;
        check_act("gelu_erf", impl->gelu_erf, eng_gelu_erf_ref);
        check_act("gelu_tanh", impl->gelu_tanh, eng_gelu_tanh_ref);
        check_act("quick_gelu", impl->quick_gelu, eng_quick_gelu_ref);
    }
    printf("     (SIMD levels tested: %d)\n", tested);
}

TEST(ops_simd_softmax_matches_reference)
{
    for (size_t l = 0; l < sizeof levels / sizeof *levels; l++) {
        const eng_ops_impl *impl = (const eng_ops_impl *)eng_ops_for_level(levels[l]);
        if (!impl)
            continue;
        for (int n = 1; n <= 130; n += 3) {
            float a[130], b[130];
            fill(a, (size_t)n, (unsigned)n * 7u);
            for (int i = 0; i < n; i++)
                b[i] = a[i] * 0.3f, a[i] *= 0.3f;
            impl->softmax(a, n);
            eng_softmax_ref(b, n);
            double sum = 0;
            for (int i = 0; i < n; i++) {
                CHECK_NEAR(a[i], b[i], 1e-6);
                sum += a[i];
            }
            CHECK_NEAR(sum, 1.0, 1e-5);
        }
    }
}

/* The small-head attention kernels against eng_attend_small_ref: head widths
 * below, at and between 16-lane vectors, keys up to the kernels' bound,
 * strided rows, causal with fewer queries than keys. */
TEST(ops_simd_attend_small_matches_reference)
{
    static const int hds[] = {1, 7, 16, 24, 64};
    static const int shapes[][2] = {{1, 1}, {1, 9}, {2, 31}, {7, 7}, {14, 14}, {16, 16},
                                    {9, 33}, {48, 48}, {49, 49}, {5, 64}, {64, 64}};
    int ld = 3 * ENG_SMALL_HEAD_HD, n = ENG_SMALL_HEAD_LK * ld;
    float *q = malloc((size_t)n * 4), *k = malloc((size_t)n * 4), *v = malloc((size_t)n * 4);
    float *o1 = malloc((size_t)n * 4), *o2 = malloc((size_t)n * 4);
    fill(q, (size_t)n, 11u), fill(k, (size_t)n, 13u), fill(v, (size_t)n, 17u);
    for (int i = 0; i < n; i++)
        q[i] *= 0.1f, k[i] *= 0.1f, v[i] *= 0.3f;
    for (size_t l = 0; l < sizeof levels / sizeof *levels; l++) {
        const eng_ops_impl *impl = (const eng_ops_impl *)eng_ops_for_level(levels[l]);
        if (!impl || !impl->attend_small)
            continue;
        for (size_t a = 0; a < sizeof hds / sizeof *hds; a++)
            for (size_t b = 0; b < sizeof shapes / sizeof *shapes; b++)
                for (int causal = 0; causal < 2; causal++) {
                    int hd = hds[a], Lq = shapes[b][0], Lk = shapes[b][1];
                    if (!causal && Lq < Lk)
                        continue;
                    float scale = 1.0f / sqrtf((float)hd);
                    impl->attend_small(q + 3, ld, k + 1, ld, v + 2, ld, Lq, Lk, hd, scale, causal,
                                       o1, ld);
                    eng_attend_small_ref(q + 3, ld, k + 1, ld, v + 2, ld, Lq, Lk, hd, scale,
                                         causal, o2, ld);
                    double worst = 0;
                    for (int i = 0; i < Lq; i++)
                        for (int d = 0; d < hd; d++) {
                            float x1 = o1[(size_t)i * ld + d], x2 = o2[(size_t)i * ld + d];
                            worst = fmax(worst, fabs(x1 - x2) / fmax(1.0, fabs(x2)));
                        }
                    CHECK_MSG(worst <= 1e-5, "%s Lq %d Lk %d hd %d causal %d: error %g",
                              levels[l], Lq, Lk, hd, causal, worst);
                }
    }
    free(q), free(k), free(v), free(o1), free(o2);
}

TEST(ops_reference_values)
{
    float x[4] = {0.0f, 1.0f, -1.0f, 3.0f};
    eng_gelu_erf_ref(x, 4);
    CHECK_NEAR(x[0], 0.0, 1e-7);
    CHECK_NEAR(x[1], 0.8413447460685429, 1e-6);
    CHECK_NEAR(x[2], -0.15865525393145707, 1e-6);
    CHECK_NEAR(x[3], 2.995950330717207, 1e-6);
}

/* Rows in one call give each row the bits it gets alone, whatever the
 * grouping inside (n up to 13 rows, widths around the group sizes). */
TEST(ops_simd_layernorm_rows_equal_one_by_one)
{
    static const int widths[] = {7, 32, 768, 1000};
    for (size_t l = 0; l < sizeof levels / sizeof *levels; l++) {
        const eng_ops_impl *impl = (const eng_ops_impl *)eng_ops_for_level(levels[l]);
        if (!impl)
            continue;
        for (size_t w = 0; w < sizeof widths / sizeof *widths; w++)
            for (int n = 1; n <= 13; n += 4) {
                int d = widths[w];
                size_t N = (size_t)n * d;
                float *x1 = malloc(N * 4), *x2 = malloc(N * 4), *res = malloc(N * 4);
                float *g = malloc((size_t)d * 4), *b = malloc((size_t)d * 4);
                float *o1 = malloc(N * 4), *o2 = malloc(N * 4);
                fill(x1, N, 21u + (unsigned)d), fill(res, N, 23u + (unsigned)n);
                fill(g, (size_t)d, 7u), fill(b, (size_t)d, 9u);
                for (size_t i = 0; i < N; i++)
                    x1[i] = x1[i] * 0.1f + 3.0f, x2[i] = x1[i];
                impl->layernorm_rows(o1, x1, res, n, d, g, b, 1e-5f);
                for (int r = 0; r < n; r++) {
                    size_t o = (size_t)r * d;
                    impl->layernorm_rows(o2 + o, x2 + o, res + o, 1, d, g, b, 1e-5f);
                }
                CHECK_MSG(memcmp(o1, o2, N * 4) == 0 && memcmp(x1, x2, N * 4) == 0,
                          "%s: %d rows of %d differ from one at a time", levels[l], n, d);
                free(x1), free(x2), free(res), free(g), free(b), free(o1), free(o2);
            }
    }
}

TEST(ops_simd_layernorm_matches_reference)
{
    static const int widths[] = {1, 7, 16, 33, 768, 1000};
    for (size_t l = 0; l < sizeof levels / sizeof *levels; l++) {
        const eng_ops_impl *impl = (const eng_ops_impl *)eng_ops_for_level(levels[l]);
        if (!impl)
            continue;
        for (size_t w = 0; w < sizeof widths / sizeof *widths; w++) {
            int d = widths[w];
            float *x1 = malloc((size_t)d * 4), *x2 = malloc((size_t)d * 4), *res = malloc((size_t)d * 4);
            float *g = malloc((size_t)d * 4), *b = malloc((size_t)d * 4);
            float *o1 = malloc((size_t)d * 4), *o2 = malloc((size_t)d * 4);
            fill(x1, (size_t)d, 3u + (unsigned)d);
            fill(res, (size_t)d, 5u + (unsigned)d);
            fill(g, (size_t)d, 7u), fill(b, (size_t)d, 9u);
            for (int i = 0; i < d; i++)
                x1[i] = x1[i] * 0.1f + 3.0f, x2[i] = x1[i], res[i] *= 0.1f;
            impl->layernorm_rows(o1, x1, res, 1, d, g, b, 1e-5f);
            eng_layernorm_row_ref(o2, x2, res, d, g, b, 1e-5f);
            for (int i = 0; i < d; i++) {
                CHECK_NEAR(x1[i], x2[i], 0); /* the residual sum is exact */
                CHECK_NEAR(o1[i], o2[i], 1e-5 * fmax(1.0, fabs(o2[i])));
            }
            free(x1), free(x2), free(res), free(g), free(b), free(o1), free(o2);
        }
    }
}
