#include "engine/cpu.h"

#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static uint64_t xgetbv0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static void detect(eng_cpu_features *f)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return;
    bool osxsave = c & (1u << 27);
    uint64_t xcr0 = osxsave ? xgetbv0() : 0;
    bool ymm = (xcr0 & 0x6) == 0x6;           /* SSE + AVX state */
    bool zmm = ymm && (xcr0 & 0xe0) == 0xe0;  /* opmask + ZMM state */
    bool amx = (xcr0 & 0x60000) == 0x60000;   /* XTILECFG + XTILEDATA */
    f->fma = ymm && (c & (1u << 12));
    f->f16c = ymm && (c & (1u << 29));
    if (__get_cpuid_max(0, NULL) < 7)
        return;
    __cpuid_count(7, 0, a, b, c, d);
    f->avx2 = ymm && (b & (1u << 5));
    f->avx512f = zmm && (b & (1u << 16));
    f->avx512dq = zmm && (b & (1u << 17));
    f->avx512bw = zmm && (b & (1u << 30));
    f->avx512vl = zmm && (b & (1u << 31));
    f->avx512vnni = zmm && (c & (1u << 11));
    f->avx512fp16 = zmm && (d & (1u << 23));
    f->amx_bf16 = amx && (d & (1u << 22));
    f->amx_tile = amx && (d & (1u << 24));
    f->amx_int8 = amx && (d & (1u << 25));
    __cpuid_count(7, 1, a, b, c, d);
    f->avxvnni = ymm && (a & (1u << 4));
    f->avx512bf16 = zmm && (a & (1u << 5));
}
#else
static void detect(eng_cpu_features *f)
{
    (void)f;
}
#endif

static eng_cpu_features features;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void init(void)
{
    detect(&features);
}

const eng_cpu_features *eng_cpu(void)
{
    pthread_once(&once, init);
    return &features;
}

bool eng_cpu_has_avx512(void)
{
    const eng_cpu_features *f = eng_cpu();
    return f->avx512f && f->avx512bw && f->avx512dq && f->avx512vl;
}

/* cgroup v2 writes "max 100000" or "<quota> <period>" in cpu.max. */
static int cgroup_cpus(void)
{
    FILE *f = fopen("/sys/fs/cgroup/cpu.max", "r");
    if (!f)
        return 0;
    char quota[32] = "";
    long period = 0;
    int n = fscanf(f, "%31s %ld", quota, &period);
    fclose(f);
    if (n != 2 || period <= 0 || quota[0] < '0' || quota[0] > '9')
        return 0;
    long q = atol(quota);
    return (int)((q + period - 1) / period);
}

int eng_cpu_count(void)
{
    int n = 0;
#ifdef CPU_COUNT
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        n = CPU_COUNT(&set);
#endif
    if (n <= 0)
        n = (int)sysconf(_SC_NPROCESSORS_ONLN);
    int quota = cgroup_cpus();
    if (quota > 0 && quota < n)
        n = quota;
    return n > 0 ? n : 1;
}
