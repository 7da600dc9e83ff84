#include "engine/scratch.h"

#include <pthread.h>
#include <stdlib.h>

typedef struct slot_block {
    void *data;
    size_t cap;
} slot_block;

static pthread_key_t key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

static void free_blocks(void *p)
{
    slot_block *blocks = p;
    for (int s = 0; s < ENG_SCRATCH_COUNT; s++)
        free(blocks[s].data);
    free(blocks);
}

static void key_init(void)
{
    pthread_key_create(&key, free_blocks);
}

void *eng_scratch(eng_scratch_slot slot, size_t bytes)
{
    pthread_once(&key_once, key_init);
    slot_block *blocks = pthread_getspecific(key);
    if (!blocks) {
        blocks = calloc(ENG_SCRATCH_COUNT, sizeof *blocks);
        if (!blocks)
            return NULL;
        if (pthread_setspecific(key, blocks) != 0) {
            free(blocks);
            return NULL;
        }
    }
    slot_block *b = &blocks[slot];
    if (b->data && b->cap >= bytes)
        return b->data;
    size_t rounded = (bytes + 63) & ~(size_t)63;
    void *grown = aligned_alloc(64, rounded ? rounded : 64);
    if (!grown)
        return NULL;
    free(b->data);
    b->data = grown;
    b->cap = bytes;
    return grown;
}
