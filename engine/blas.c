#include "engine/blas.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "engine/cpu.h"

void eng_sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float *A,
               int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void eng_sgemv(bool trans, int M, int N, float alpha, const float *A, int lda, const float *x,
               float beta, float *y)
{
    cblas_sgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, M, N, alpha, A, lda, x, 1, beta,
                y, 1);
}

const char *eng_blas_corename(void)
{
    return openblas_get_corename();
}

/* Cores whose kernels use neither AVX2 nor AVX-512: OpenBLAS reports one of
 * these when it does not recognise a newer CPU model. */
static const char *const generic_cores[] = {
    "Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom", "Katmai",
    "Coppermine", "Northwood", "Banias", "Opteron", "Barcelona", "Sandybridge",
    "Bulldozer", "Piledriver", "Steamroller", "Excavator", "Bobcat", "Generic", "unknown",
};

const char *eng_blas_better_coretype(void)
{
    const char *env = getenv("OPENBLAS_CORETYPE");
    if (env && *env)
        return NULL;
    const char *core = openblas_get_corename();
    int generic = 0;
    for (size_t i = 0; i < sizeof generic_cores / sizeof *generic_cores; i++)
        generic |= core && strcasecmp(core, generic_cores[i]) == 0;
    if (!generic)
        return NULL;
    const eng_cpu_features *f = eng_cpu();
    if (eng_cpu_has_avx512())
        return f->avx512bf16 ? "Cooperlake" : "SkylakeX";
    if (f->avx2 && f->fma)
        return "Haswell";
    return NULL;
}

int eng_blas_threads(void)
{
    return openblas_get_num_threads();
}

void eng_blas_set_threads(int n)
{
    openblas_set_num_threads(n);
}
