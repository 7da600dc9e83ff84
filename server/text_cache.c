#include "server/text_cache.h"

#include <stdlib.h>
#include <string.h>

typedef struct entry {
    uint64_t hash;
    int n;              /* ids held; -1 when the entry is free */
    int bucket_next;    /* next entry in the same bucket, -1 at the end */
    int older, newer;   /* LRU list, -1 at the ends */
} entry;

struct srv_text_cache {
    int capacity, max_ids, dim, n_used;
    entry *entries;     /* (capacity) */
    int32_t *ids;       /* (capacity, max_ids) */
    float *embs;        /* (capacity, dim) */
    int *buckets;       /* (n_buckets) first entry, -1 when empty */
    int n_buckets;
    int newest, oldest;
    long hits;
};

static uint64_t hash_ids(const int32_t *ids, int n)
{
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < n; i++)
        h = (h ^ (uint32_t)ids[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

srv_text_cache *srv_text_cache_new(int capacity, int max_ids, int dim)
{
    srv_text_cache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->capacity = capacity, c->max_ids = max_ids, c->dim = dim;
    c->n_buckets = capacity * 2;
    c->entries = malloc((size_t)capacity * sizeof *c->entries);
    c->ids = malloc((size_t)capacity * max_ids * sizeof *c->ids);
    c->embs = malloc((size_t)capacity * dim * sizeof *c->embs);
    c->buckets = malloc((size_t)c->n_buckets * sizeof *c->buckets);
    if (!c->entries || !c->ids || !c->embs || !c->buckets) {
        srv_text_cache_free(c);
        return NULL;
    }
    for (int i = 0; i < c->n_buckets; i++)
        c->buckets[i] = -1;
    c->newest = c->oldest = -1;
    return c;
}

void srv_text_cache_free(srv_text_cache *c)
{
    if (!c)
        return;
    free(c->entries), free(c->ids), free(c->embs), free(c->buckets);
    free(c);
}

long srv_text_cache_hits(const srv_text_cache *c)
{
    return c->hits;
}

static void unlink_lru(srv_text_cache *c, int i)
{
    entry *e = &c->entries[i];
    if (e->older >= 0)
        c->entries[e->older].newer = e->newer;
    else
        c->oldest = e->newer;
    if (e->newer >= 0)
        c->entries[e->newer].older = e->older;
    else
        c->newest = e->older;
}

static void push_newest(srv_text_cache *c, int i)
{
    entry *e = &c->entries[i];
    e->older = c->newest;
    e->newer = -1;
    if (c->newest >= 0)
        c->entries[c->newest].newer = i;
    c->newest = i;
    if (c->oldest < 0)
        c->oldest = i;
}

static int find(const srv_text_cache *c, const int32_t *ids, int n)
{
    uint64_t h = hash_ids(ids, n);
    for (int i = c->buckets[h % (uint64_t)c->n_buckets]; i >= 0; i = c->entries[i].bucket_next) {
        const entry *e = &c->entries[i];
        if (e->hash == h && e->n == n && !memcmp(c->ids + (size_t)i * c->max_ids, ids, (size_t)n * sizeof *ids))
            return i;
    }
    return -1;
}

const float *srv_text_cache_get(srv_text_cache *c, const int32_t *ids, int n)
{
    int i = find(c, ids, n);
    if (i < 0)
        return NULL;
    unlink_lru(c, i);
    push_newest(c, i);
    c->hits++;
    return c->embs + (size_t)i * c->dim;
}

/* Takes entry i out of its bucket chain. */
static void unlink_bucket(srv_text_cache *c, int i)
{
    int *link = &c->buckets[c->entries[i].hash % (uint64_t)c->n_buckets];
    while (*link != i)
        link = &c->entries[*link].bucket_next;
    *link = c->entries[i].bucket_next;
}

void srv_text_cache_put(srv_text_cache *c, const int32_t *ids, int n, const float *emb)
{
    if (n > c->max_ids || c->capacity == 0 || find(c, ids, n) >= 0)
        return;
    int i;
    if (c->n_used < c->capacity) {
        i = c->n_used++;
    } else {
        i = c->oldest;
        unlink_lru(c, i);
        unlink_bucket(c, i);
    }
    entry *e = &c->entries[i];
    e->hash = hash_ids(ids, n);
    e->n = n;
    memcpy(c->ids + (size_t)i * c->max_ids, ids, (size_t)n * sizeof *ids);
    memcpy(c->embs + (size_t)i * c->dim, emb, (size_t)c->dim * sizeof *emb);
    int *head = &c->buckets[e->hash % (uint64_t)c->n_buckets];
    e->bucket_next = *head;
    *head = i;
    push_newest(c, i);
}
