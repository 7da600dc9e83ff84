/* The vectorised activations and softmax against their libm references. */
#include <stdlib.h>

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

TEST(ops_reference_values)
{
    float x[4] = {0.0f, 1.0f, -1.0f, 3.0f};
    eng_gelu_erf_ref(x, 4);
    CHECK_NEAR(x[0], 0.0, 1e-7);
    CHECK_NEAR(x[1], 0.8413447460685429, 1e-6);
    CHECK_NEAR(x[2], -0.15865525393145707, 1e-6);
    CHECK_NEAR(x[3], 2.995950330717207, 1e-6);
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
            impl->layernorm_row(o1, x1, res, d, g, b, 1e-5f);
            eng_layernorm_row_ref(o2, x2, res, d, g, b, 1e-5f);
            for (int i = 0; i < d; i++) {
                CHECK_NEAR(x1[i], x2[i], 0); /* the residual sum is exact */
                CHECK_NEAR(o1[i], o2[i], 1e-5 * fmax(1.0, fabs(o2[i])));
            }
            free(x1), free(x2), free(res), free(g), free(b), free(o1), free(o2);
        }
    }
}
