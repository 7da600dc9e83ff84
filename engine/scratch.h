/* Per-thread scratch for kernels that need working memory of a size known
 * only per call (quantised activations, attention scores), on whichever
 * thread of the pool runs them.
 *
 * Each thread keeps one block per slot, grown to the largest request it has
 * seen and then reused, so steady-state calls allocate nothing; blocks are
 * freed when their thread exits. Distinct slots never alias, so a kernel may
 * hold one slot's block while calling code that uses another. */
#ifndef ENG_SCRATCH_H
#define ENG_SCRATCH_H

#include <stddef.h>

typedef enum eng_scratch_slot {
    ENG_SCRATCH_QUANT,  /* int8 activations (engine/linear.c) */
    ENG_SCRATCH_SCORES, /* one attention head's scores (engine/attention.c) */
    ENG_SCRATCH_COUNT
} eng_scratch_slot;

/* The calling thread's block of slot with at least bytes, 64-byte aligned;
 * NULL when it cannot grow (the previous block is kept for later calls). The
 * contents are not preserved across calls. */
void *eng_scratch(eng_scratch_slot slot, size_t bytes);

#endif
