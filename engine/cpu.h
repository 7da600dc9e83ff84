/* What the CPU can run, read once with cpuid (and xgetbv, so a feature the OS
 * does not save registers for counts as absent). On other architectures every
 * flag is false and the portable C kernels run. */
#ifndef ENG_CPU_H
#define ENG_CPU_H

#include <stdbool.h>

typedef struct eng_cpu_features {
    bool avx2, fma, f16c;
    bool avx512f, avx512bw, avx512dq, avx512vl; /* the SkylakeX set */
    bool avx512vnni, avx512bf16, avx512fp16;
    bool avxvnni;
    bool amx_tile, amx_int8, amx_bf16;
} eng_cpu_features;

const eng_cpu_features *eng_cpu(void);

/* 1 when the SkylakeX AVX-512 subset (F, BW, DQ, VL) is usable. */
bool eng_cpu_has_avx512(void);

/* The cores this process may use: its CPU affinity, further limited by a
 * cgroup v2 CPU quota (containers: a limit of 2 CPUs on a 64-core host is 2). */
int eng_cpu_count(void);

#endif
