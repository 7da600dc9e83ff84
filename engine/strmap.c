#include "engine/strmap.h"

#include <stdlib.h>
#include <string.h>

#include "engine/error.h"

static uint64_t hash_bytes(const char *s, size_t len)
{
    /* FNV-1a, then a final mix so that linear probing sees spread-out slots. */
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 32);
}

void eng_strmap_init(eng_strmap *m)
{
    memset(m, 0, sizeof *m);
}

void eng_strmap_free(eng_strmap *m)
{
    free(m->slots);
    free(m->entries);
    free(m->keys);
    memset(m, 0, sizeof *m);
}

static int grow_slots(eng_strmap *m)
{
    size_t cap = m->cap ? m->cap * 2 : 64;
    uint32_t *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return ENG_ENOMEM;
    for (size_t i = 0; i < m->n; i++) {
        size_t j = m->entries[i].hash & (cap - 1);
        while (slots[j])
            j = (j + 1) & (cap - 1);
        slots[j] = (uint32_t)(i + 1);
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    return 0;
}

static int reserve(void **buf, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 64;
    while (n < need)
        n *= 2;
    void *p = realloc(*buf, n * elem);
    if (!p)
        return ENG_ENOMEM;
    *buf = p;
    *cap = n;
    return 0;
}

static uint32_t *find_slot(const eng_strmap *m, const char *key, size_t len, uint64_t h)
{
    size_t j = h & (m->cap - 1);
    for (;;) {
        uint32_t s = m->slots[j];
        if (!s)
            return &m->slots[j];
        const struct eng_strmap_entry *e = &m->entries[s - 1];
        if (e->hash == h && e->len == len && memcmp(m->keys + e->off, key, len) == 0)
            return &m->slots[j];
        j = (j + 1) & (m->cap - 1);
    }
}

int eng_strmap_put(eng_strmap *m, const char *key, size_t len, int32_t value)
{
    if ((m->n + 1) * 2 > m->cap && grow_slots(m))
        return ENG_ENOMEM;
    uint64_t h = hash_bytes(key, len);
    uint32_t *slot = find_slot(m, key, len, h);
    if (*slot) {
        m->entries[*slot - 1].value = value;
        return 0;
    }
    if (reserve((void **)&m->entries, &m->entries_cap, m->n + 1, sizeof *m->entries) ||
        reserve((void **)&m->keys, &m->keys_cap, m->keys_len + len + 1, 1))
        return ENG_ENOMEM;
    memcpy(m->keys + m->keys_len, key, len);
    m->keys[m->keys_len + len] = '\0';
    m->entries[m->n] = (struct eng_strmap_entry){
        .off = (uint32_t)m->keys_len, .len = (uint32_t)len, .hash = h, .value = value};
    m->keys_len += len + 1;
    *slot = (uint32_t)++m->n;
    return 0;
}

int32_t eng_strmap_get(const eng_strmap *m, const char *key, size_t len)
{
    if (!m->cap)
        return -1;
    uint32_t *slot = find_slot(m, key, len, hash_bytes(key, len));
    return *slot ? m->entries[*slot - 1].value : -1;
}

const char *eng_strmap_key(const eng_strmap *m, size_t i, size_t *len)
{
    *len = m->entries[i].len;
    return m->keys + m->entries[i].off;
}
