#include "engine/arena.h"

#include <stdlib.h>

#include "engine/error.h"

void eng_arena_init(eng_arena *a)
{
    a->base = NULL;
    a->cap = a->used = a->high_water = 0;
}

void eng_arena_free(eng_arena *a)
{
    free(a->base);
    eng_arena_init(a);
}

int eng_arena_reserve(eng_arena *a, size_t bytes)
{
    if (bytes <= a->cap)
        return 0;
    bytes = (bytes + 4095) & ~(size_t)4095;
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes) != 0)
        return ENG_ENOMEM;
    free(a->base);
    a->base = p;
    a->cap = bytes;
    a->used = 0;
    return 0;
}

float *eng_arena_floats(eng_arena *a, size_t n)
{
    size_t size = eng_arena_floats_size(n);
    if (size > a->cap - a->used)
        return NULL;
    float *p = (float *)(a->base + a->used);
    a->used += size;
    if (a->used > a->high_water)
        a->high_water = a->used;
    return p;
}
