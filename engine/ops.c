#include "engine/ops.h"

#include <math.h>
#include <string.h>

/* Mean and variance in double: a 768-wide row summed in float loses digits
 * that the 1e-5 batched-vs-alone tolerance would notice. */
static void row_stats(const float *x, int d, float *mean, float *rstd, float eps)
{
    double s = 0, s2 = 0;
    for (int j = 0; j < d; j++)
        s += x[j];
    double m = s / d;
    for (int j = 0; j < d; j++) {
        double t = x[j] - m;
        s2 += t * t;
    }
    *mean = (float)m;
    *rstd = (float)(1.0 / sqrt(s2 / d + eps));
}

void eng_layernorm(float *out, const float *x, int n, int d, const float *gamma,
                   const float *beta, float eps)
{
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * d;
        float *oi = out + (size_t)i * d;
        float mean, rstd;
        row_stats(xi, d, &mean, &rstd, eps);
        for (int j = 0; j < d; j++)
            oi[j] = (xi[j] - mean) * rstd * gamma[j] + beta[j];
    }
}

void eng_add_layernorm(float *x, const float *residual, int n, int d, const float *gamma,
                       const float *beta, float eps)
{
    eng_add(x, residual, (size_t)n * d);
    eng_layernorm(x, x, n, d, gamma, beta, eps);
}

void eng_add(float *y, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] += x[i];
}

void eng_gelu_erf(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * (float)M_SQRT1_2));
}

void eng_gelu_tanh(float *x, size_t n)
{
    const float k = 0.7978845608028654f; /* sqrt(2 / pi) */
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        x[i] = 0.5f * v * (1.0f + tanhf(k * (v + 0.044715f * v * v * v)));
    }
}

void eng_quick_gelu(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = x[i] / (1.0f + expf(-1.702f * x[i]));
}

void eng_relu(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = x[i] > 0 ? x[i] : 0;
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

void eng_softmax(float *x, int n)
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
