/* A bump allocator for a forward pass's activations.
 *
 * A worker owns one arena, reserves it once for the largest batch it will run,
 * and resets it before every forward: the forward pass itself never calls
 * malloc. Every block is 64-byte aligned for the SIMD kernels. */
#ifndef ENG_ARENA_H
#define ENG_ARENA_H

#include <stddef.h>

typedef struct eng_arena {
    char *base;
    size_t cap, used;
    size_t high_water; /* the most bytes any forward has used */
} eng_arena;

void eng_arena_init(eng_arena *a);
void eng_arena_free(eng_arena *a);

/* Makes room for at least bytes; existing blocks become invalid. Returns 0
 * or ENG_ENOMEM. Called at load and between batches, never inside a forward. */
int eng_arena_reserve(eng_arena *a, size_t bytes);

static inline void eng_arena_reset(eng_arena *a)
{
    a->used = 0;
}

/* Returns n floats (uninitialised), or NULL when the reservation is too small
 * (a sizing bug in the caller: forward passes compute their need up front). */
float *eng_arena_floats(eng_arena *a, size_t n);

/* Bytes a block of n floats takes in an arena, alignment included; models sum
 * these to size their reservation. */
static inline size_t eng_arena_floats_size(size_t n)
{
    return (n * sizeof(float) + 63) & ~(size_t)63;
}

#endif
