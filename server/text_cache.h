/* A bounded LRU cache of text embeddings keyed by token ids: zero-shot
 * requests repeat the same candidate labels, and their text tower results
 * never change. Used by one worker thread only, so it takes no lock. All
 * memory is allocated at creation. */
#ifndef SRV_TEXT_CACHE_H
#define SRV_TEXT_CACHE_H

#include <stddef.h>
#include <stdint.h>

typedef struct srv_text_cache srv_text_cache;

/* capacity entries of up to max_ids ids and dim floats. Returns NULL when
 * out of memory. */
srv_text_cache *srv_text_cache_new(int capacity, int max_ids, int dim);
void srv_text_cache_free(srv_text_cache *c);

/* The embedding cached for ids[0..n) (now the most recently used), or NULL. */
const float *srv_text_cache_get(srv_text_cache *c, const int32_t *ids, int n);
/* Stores emb (dim floats) for ids, evicting the least recently used entry
 * when full. Sequences longer than max_ids are not cached. */
void srv_text_cache_put(srv_text_cache *c, const int32_t *ids, int n, const float *emb);

long srv_text_cache_hits(const srv_text_cache *c);

#endif
