/* An immutable-after-build hash map from byte strings to int32 values, for
 * vocabularies and merge tables. Open addressing with linear probing; keys are
 * copied into one arena owned by the map. */
#ifndef ENG_STRMAP_H
#define ENG_STRMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct eng_strmap {
    uint32_t *slots;   /* (cap) index+1 into entries, 0 = empty */
    size_t cap;        /* power of two */
    struct eng_strmap_entry {
        uint32_t off, len; /* key bytes at keys[off .. off+len) */
        uint64_t hash;
        int32_t value;
    } *entries;
    size_t n, entries_cap;
    char *keys;
    size_t keys_len, keys_cap;
} eng_strmap;

void eng_strmap_init(eng_strmap *m);
void eng_strmap_free(eng_strmap *m);

/* Inserts key -> value, replacing the value when the key exists.
 * Returns 0 or ENG_ENOMEM. */
int eng_strmap_put(eng_strmap *m, const char *key, size_t len, int32_t value);

/* Returns the value for key, or -1 when absent (values stored are >= 0). */
int32_t eng_strmap_get(const eng_strmap *m, const char *key, size_t len);

/* The key of entry i (0 <= i < n) in insertion order; *len receives its length. */
const char *eng_strmap_key(const eng_strmap *m, size_t i, size_t *len);

#endif
