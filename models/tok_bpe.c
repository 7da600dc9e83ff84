/* Byte-level BPE (GPT-2, CLIP): loading, merging, encoding and decoding.
 * Pre-tokenization and CLIP normalization are in tok_bpe_pretok.c. */
#include "models/tok_bpe.h"

#include <assert.h>
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "engine/strmap.h"

/* CLIPTokenizer reads at most 49152 - 256 - 2 merges, whatever merges.txt holds. */
#define CLIP_MAX_MERGES 48894
/* Ids index a dense table; HF vocabularies are dense and far smaller than this. */
#define MAX_ID (1 << 24)
#define EOW "</w>"
#define EOW_LEN 4
/* Code points of the byte alphabet: 188 printable bytes stand for themselves,
 * the other 68 take 256..323. */
#define ALPHABET_CPS 324

enum { SPECIAL_BOS, SPECIAL_EOS, SPECIAL_UNK, SPECIAL_PAD, N_SPECIAL };
static const char *const special_keys[N_SPECIAL] = {"bos_token", "eos_token", "unk_token",
                                                    "pad_token"};

/* A token matched in the raw text before pre-tokenization (HF "added tokens"). */
typedef struct bpe_added {
    char *text;
    size_t len;
    int32_t id;
    bool special; /* skipped by CLIP's decode, as skip_special_tokens does */
} bpe_added;

typedef struct tok_bpe {
    tok_tokenizer base; /* first: callers hold a pointer to it */
    tok_bpe_flavor flavor;
    bool add_bos;         /* tokenizer_config.json add_bos_token (GPT-2) */
    eng_strmap vocab;     /* vocabulary string -> id */
    uint32_t *id_entry;   /* (vocab_size) vocab entry that spells each id, UINT32_MAX if none */
    eng_strmap merges;    /* (left id, right id) as 8 raw bytes -> merge rank */
    int32_t *merge_id;    /* (n_merges) id of the symbol the merge of each rank makes */
    size_t n_merges;
    uint16_t byte_cp[256];          /* the GPT-2 byte alphabet: byte -> code point */
    int16_t cp_byte[ALPHABET_CPS];  /* its inverse, -1 for code points outside it */
    int32_t byte_id[256];           /* id of each byte's one-character symbol */
    int32_t byte_eow_id[256];       /* CLIP: id of that symbol + "</w>" */
    bpe_added *added; /* (n_added) longest first, so the first match is the longest */
    size_t n_added, added_cap;
    uint8_t added_first[32]; /* bitset of the first bytes of added tokens */
} tok_bpe;

/* Names of the special tokens while loading; NULL for none. */
typedef struct bpe_names {
    char *tok[N_SPECIAL];
} bpe_names;

/* A queued merge of the symbols in slots left and right (heap path). */
typedef struct bpe_cand {
    int32_t rank;
    uint32_t left, right; /* slots: a symbol lives in the slot of its first byte */
    int32_t lsym, rsym;   /* the slots' ids when queued; any change makes it stale */
} bpe_cand;

/* Per-call working memory of encode, grown to the longest piece. */
typedef struct bpe_scratch {
    bool ref;       /* merge every piece with the reference scan (tests) */
    size_t stop;    /* ids in out after which reading stops (count_max) */
    int32_t *sym;   /* (cap) symbol ids of the piece being merged; -1 in a dead slot */
    uint32_t *pos;  /* (cap) byte of the piece where each symbol starts */
    int32_t *rank;  /* (cap) scan: rank of the pair (sym[i], sym[i+1]), -1 if no merge */
    uint8_t *fresh; /* (cap) 1 where the current merge round made the symbol */
    size_t cap;
    int32_t *next, *prev; /* (heap_cap / 3) heap: neighbouring live slots, -1 at the ends */
    uint32_t *merged;     /* (heap_cap / 3) heap: slots merged in the current round */
    bpe_cand *heap;       /* (heap_cap) heap: candidates, lowest (rank, left) first */
    size_t heap_n, heap_cap;
    tok_bpe__norm norm; /* CLIP: the normalized segment */
} bpe_scratch;

/* Where the bytes of a piece came from: start/stop per byte, or (both NULL)
 * the input itself from offset base on. */
typedef struct bpe_src {
    const uint32_t *start, *stop;
    uint32_t base;
} bpe_src;

static const tok_ops bpe_ops;

/* ---- Loading ---- */

/* Opens path; ENG_ENOTFOUND names a missing file (NULL *f and 0 when optional). */
static int open_file(const char *path, bool required, FILE **f, eng_err *err)
{
    *f = fopen(path, "rb");
    if (*f)
        return 0;
    if (errno == ENOENT && !required)
        return 0;
    if (errno == ENOENT)
        return eng_err_set(err, ENG_ENOTFOUND,
                           "%s: no such file (a byte-level BPE tokenizer needs vocab.json and "
                           "merges.txt)", path);
    return eng_err_set(err, ENG_EIO, "%s: %s", path, strerror(errno));
}

static int read_whole_file(const char *path, bool required, char **buf, size_t *len,
                           eng_err *err)
{
    FILE *f;
    *buf = NULL;
    *len = 0;
    int rc = open_file(path, required, &f, err);
    if (rc || !f)
        return rc;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0)
        n = ftell(f);
    *buf = n >= 0 && fseek(f, 0, SEEK_SET) == 0 ? malloc((size_t)n + 1) : NULL;
    if (*buf && fread(*buf, 1, (size_t)n, f) != (size_t)n) {
        free(*buf);
        *buf = NULL;
    }
    fclose(f);
    if (!*buf)
        return eng_err_set(err, n < 0 ? ENG_EIO : ENG_ENOMEM, "%s: cannot read", path);
    (*buf)[n] = '\0';
    *len = (size_t)n;
    return 0;
}

/* Parses a JSON file into *root (NULL when an optional file is absent). The
 * file is read whole first: jansson's own file reader goes a byte at a time. */
static int load_json(const char *path, bool required, size_t flags, json_t **root, eng_err *err)
{
    char *buf;
    size_t len;
    *root = NULL;
    int rc = read_whole_file(path, required, &buf, &len, err);
    if (rc || !buf)
        return rc;
    json_error_t jerr;
    *root = json_loadb(buf, len, flags, &jerr);
    free(buf);
    if (!*root)
        return eng_err_set(err, ENG_EFORMAT, "%s:%d:%d: %s", path, jerr.line, jerr.column,
                           jerr.text);
    return 0;
}

/* An id held as a JSON integer, or -1 when it is not one in range. */
static int32_t json_id(const json_t *v)
{
    json_int_t i = json_is_integer(v) ? json_integer_value(v) : -1;
    return i >= 0 && i < MAX_ID ? (int32_t)i : -1;
}

/* Points id_entry at the vocab entries, sized for ids below n. */
static int index_ids(tok_bpe *b, size_t n)
{
    uint32_t *p = realloc(b->id_entry, n * sizeof *p);
    if (!p)
        return ENG_ENOMEM;
    for (size_t i = b->base.vocab_size; i < n; i++)
        p[i] = UINT32_MAX;
    b->id_entry = p;
    b->base.vocab_size = n;
    for (size_t i = 0; i < b->vocab.n; i++)
        p[b->vocab.entries[i].value] = (uint32_t)i;
    return 0;
}

static int load_vocab(tok_bpe *b, const char *path, eng_err *err)
{
    json_t *root;
    int rc = load_json(path, true, 0, &root, err);
    if (rc)
        return rc;
    int32_t max_id = -1;
    const char *key;
    json_t *val;
    if (!json_is_object(root)) {
        rc = eng_err_set(err, ENG_EFORMAT, "%s: expected an object of token -> id", path);
        goto out;
    }
    json_object_foreach(root, key, val) {
        int32_t id = json_id(val);
        if (id < 0) {
            rc = eng_err_set(err, ENG_EFORMAT, "%s: token \"%s\" has no valid id (0..%d)", path,
                             key, MAX_ID - 1);
            goto out;
        }
        if (eng_strmap_put(&b->vocab, key, strlen(key), id)) {
            rc = eng_err_set(err, ENG_ENOMEM, "%s: out of memory", path);
            goto out;
        }
        max_id = id > max_id ? id : max_id;
    }
    if (index_ids(b, (size_t)max_id + 1))
        rc = eng_err_set(err, ENG_ENOMEM, "%s: out of memory", path);
out:
    json_decref(root);
    return rc;
}

/* GPT-2's bytes_to_unicode(): printable Latin-1 bytes stand for themselves and
 * the others take code points from 256 on, in byte order, so that no symbol is
 * whitespace or a control character. */
static void build_alphabet(tok_bpe *b)
{
    uint16_t next = 256;
    for (int c = 0; c < 256; c++) {
        bool printable = (c >= '!' && c <= '~') || (c >= 0xa1 && c <= 0xac) || c >= 0xae;
        b->byte_cp[c] = printable ? (uint16_t)c : next++;
    }
    memset(b->cp_byte, 0xff, sizeof b->cp_byte);
    for (int c = 0; c < 256; c++)
        b->cp_byte[b->byte_cp[c]] = (int16_t)c;
}

/* Finds the ids of the 256 one-byte symbols (and, for CLIP, of their "</w>"
 * forms) that every piece starts from. */
static int resolve_byte_ids(tok_bpe *b, const char *path, eng_err *err)
{
    for (int c = 0; c < 256; c++) {
        char s[8];
        size_t n = (size_t)utf8proc_encode_char(b->byte_cp[c], (utf8proc_uint8_t *)s);
        memcpy(s + n, EOW, EOW_LEN);
        b->byte_id[c] = eng_strmap_get(&b->vocab, s, n);
        b->byte_eow_id[c] =
            b->flavor == TOK_BPE_CLIP ? eng_strmap_get(&b->vocab, s, n + EOW_LEN) : 0;
        if (b->byte_id[c] < 0 || b->byte_eow_id[c] < 0)
            return eng_err_set(err, ENG_EFORMAT,
                               "%s: no token for byte 0x%02x (\"%.*s\"): not a byte-level BPE "
                               "vocabulary",
                               path, c, (int)(b->byte_id[c] < 0 ? n : n + EOW_LEN), s);
    }
    return 0;
}

/* Adds the merge "left right" of one merges.txt line (modified in place) as the next rank. */
static int add_merge(tok_bpe *b, char *left, size_t llen, const char *right, size_t rlen,
                     const char *path, size_t line, eng_err *err)
{
    int32_t key[2] = {eng_strmap_get(&b->vocab, left, llen),
                      eng_strmap_get(&b->vocab, right, rlen)};
    memmove(left + llen, right, rlen); /* the line now starts with the merged symbol */
    int32_t merged = eng_strmap_get(&b->vocab, left, llen + rlen);
    if (key[0] < 0 || key[1] < 0 || merged < 0)
        return eng_err_set(err, ENG_EFORMAT,
                           "%s:%zu: merge makes or uses a symbol missing from vocab.json "
                           "(\"%.*s\")",
                           path, line, (int)(llen + rlen), left);
    if (eng_strmap_put(&b->merges, (const char *)key, sizeof key, (int32_t)b->n_merges))
        return eng_err_set(err, ENG_ENOMEM, "%s: out of memory", path);
    b->merge_id[b->n_merges++] = merged;
    return 0;
}

/* Parses one line of merges.txt: two symbols separated by whitespace. */
static int parse_merge_line(tok_bpe *b, char *s, size_t len, const char *path, size_t line,
                            eng_err *err)
{
    size_t a = strspn(s, " \t\r");
    size_t a_end = a + strcspn(s + a, " \t\r");
    size_t c = a_end + strspn(s + a_end, " \t\r");
    size_t c_end = c + strcspn(s + c, " \t\r");
    if (a == a_end)
        return 0; /* blank line */
    if (c == c_end || c_end + strspn(s + c_end, " \t\r") != len)
        return eng_err_set(err, ENG_EFORMAT, "%s:%zu: expected two symbols \"left right\"", path,
                           line);
    return add_merge(b, s + a, a_end - a, s + c, c_end - c, path, line, err);
}

static int load_merges(tok_bpe *b, const char *path, eng_err *err)
{
    char *buf = NULL;
    size_t len = 0, n_lines = 1;
    int rc = read_whole_file(path, true, &buf, &len, err);
    if (rc)
        return rc;
    for (size_t i = 0; i < len; i++)
        n_lines += buf[i] == '\n';
    b->merge_id = malloc(n_lines * sizeof *b->merge_id);
    if (!b->merge_id) {
        free(buf);
        return eng_err_set(err, ENG_ENOMEM, "%s: out of memory", path);
    }
    char *s = buf;
    for (size_t line = 1; !rc && s < buf + len; line++) {
        char *nl = memchr(s, '\n', (size_t)(buf + len - s));
        char *end = nl ? nl : buf + len;
        *end = '\0';
        if (b->flavor == TOK_BPE_CLIP && b->n_merges == CLIP_MAX_MERGES)
            break;
        /* The "#version: 0.2" header is no merge (HF skips the first line). */
        if (!(line == 1 && strncmp(s, "#version", 8) == 0))
            rc = parse_merge_line(b, s, (size_t)(end - s), path, line, err);
        s = end + 1;
    }
    free(buf);
    return rc;
}

/* ---- Special and added tokens ---- */

static bpe_added *find_added_id(const tok_bpe *b, int32_t id)
{
    for (size_t i = 0; i < b->n_added; i++)
        if (b->added[i].id == id)
            return &b->added[i];
    return NULL;
}

static bpe_added *find_added_text(const tok_bpe *b, const char *s, size_t len)
{
    for (size_t i = 0; i < b->n_added; i++)
        if (b->added[i].len == len && memcmp(b->added[i].text, s, len) == 0)
            return &b->added[i];
    return NULL;
}

/* Registers a token to split out of the text; a repeat only upgrades special. */
static int add_added(tok_bpe *b, const char *s, size_t len, int32_t id, bool special)
{
    bpe_added *a = find_added_text(b, s, len);
    if (a || len == 0) {
        if (a)
            a->special |= special;
        return 0;
    }
    if (b->n_added == b->added_cap) {
        size_t cap = b->added_cap ? b->added_cap * 2 : 8;
        bpe_added *p = realloc(b->added, cap * sizeof *p);
        if (!p)
            return ENG_ENOMEM;
        b->added = p;
        b->added_cap = cap;
    }
    char *text = malloc(len + 1);
    if (!text)
        return ENG_ENOMEM;
    memcpy(text, s, len);
    text[len] = '\0';
    b->added[b->n_added++] = (bpe_added){.text = text, .len = len, .id = id, .special = special};
    return 0;
}

/* A token name given as "text", {"content": "text", ...} or null (NULL). */
static int token_name(const json_t *v, const char *path, const char *key, char **name,
                      eng_err *err)
{
    if (json_is_object(v))
        v = json_object_get(v, "content");
    free(*name);
    *name = NULL;
    if (json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return eng_err_set(err, ENG_EFORMAT, "%s: %s is neither a string nor null", path, key);
    *name = strdup(json_string_value(v));
    return *name ? 0 : eng_err_set(err, ENG_ENOMEM, "%s: out of memory", path);
}

/* Overrides the special token names that root sets. */
static int read_names(const json_t *root, const char *path, bpe_names *names, eng_err *err)
{
    for (int k = 0; k < N_SPECIAL; k++) {
        const json_t *v = json_object_get(root, special_keys[k]);
        int rc = v ? token_name(v, path, special_keys[k], &names->tok[k], err) : 0;
        if (rc)
            return rc;
    }
    return 0;
}

/* added_tokens_decoder: {"50256": {"content": "<|endoftext|>", "special": true, ...}}. */
static int read_added_tokens(tok_bpe *b, json_t *dec, const char *path, eng_err *err)
{
    const char *key;
    json_t *val;
    if (dec && !json_is_object(dec))
        return eng_err_set(err, ENG_EFORMAT, "%s: added_tokens_decoder is not an object", path);
    json_object_foreach(dec, key, val) {
        char *end;
        long id = strtol(key, &end, 10);
        const json_t *content = json_object_get(val, "content");
        if (*end || end == key || id < 0 || id >= MAX_ID || !json_is_string(content))
            return eng_err_set(err, ENG_EFORMAT, "%s: added_tokens_decoder entry \"%s\" needs "
                               "an id key and a \"content\" string", path, key);
        const char *s = json_string_value(content);
        if (add_added(b, s, strlen(s), (int32_t)id, json_is_true(json_object_get(val, "special"))))
            return eng_err_set(err, ENG_ENOMEM, "%s: out of memory", path);
    }
    return 0;
}

static int read_tokenizer_config(tok_bpe *b, const char *path, bpe_names *names, eng_err *err)
{
    json_t *root;
    /* Integers as reals: HF writes int(1e30) as model_max_length when there is
     * no limit, which would overflow jansson's integers and fail the parse. */
    int rc = load_json(path, false, JSON_DECODE_INT_AS_REAL, &root, err);
    if (rc || !root)
        return rc;
    const json_t *max_len = json_object_get(root, "model_max_length");
    if (!json_is_object(root))
        rc = eng_err_set(err, ENG_EFORMAT, "%s: expected a JSON object", path);
    else if (json_is_true(json_object_get(root, "add_prefix_space")))
        rc = eng_err_set(err, ENG_EUNSUPPORTED, "%s: add_prefix_space is true, which predictd "
                         "does not support", path);
    if (!rc) {
        /* No limit (int(1e30)) and other absurd values mean unknown. */
        double m = json_is_number(max_len) ? json_number_value(max_len) : 0;
        b->base.model_max_length = m >= 1 && m < 1e9 ? (size_t)m : 0;
        b->add_bos = json_is_true(json_object_get(root, "add_bos_token"));
        rc = read_names(root, path, names, err);
    }
    if (!rc)
        rc = read_added_tokens(b, json_object_get(root, "added_tokens_decoder"), path, err);
    json_decref(root);
    return rc;
}

static int read_special_tokens_map(const char *path, bpe_names *names, eng_err *err)
{
    json_t *root;
    int rc = load_json(path, false, JSON_DECODE_INT_AS_REAL, &root, err);
    if (rc || !root)
        return rc;
    if (!json_is_object(root))
        rc = eng_err_set(err, ENG_EFORMAT, "%s: expected a JSON object", path);
    else
        rc = read_names(root, path, names, err);
    json_decref(root);
    return rc;
}

/* Gives bos/eos/unk/pad their ids; HF always splits them out of the text too. */
static int resolve_specials(tok_bpe *b, const bpe_names *names, eng_err *err)
{
    int32_t *ids[N_SPECIAL] = {&b->base.bos_id, &b->base.eos_id, &b->base.unk_id, &b->base.pad_id};
    for (int k = 0; k < N_SPECIAL; k++) {
        const char *s = names->tok[k];
        *ids[k] = -1;
        if (!s)
            continue;
        const bpe_added *a = find_added_text(b, s, strlen(s));
        int32_t id = a ? a->id : eng_strmap_get(&b->vocab, s, strlen(s));
        if (id < 0)
            return eng_err_set(err, ENG_EFORMAT, "%s \"%s\" is neither in vocab.json nor an added "
                               "token", special_keys[k], s);
        if (add_added(b, s, strlen(s), id, true))
            return eng_err_set(err, ENG_ENOMEM, "out of memory");
        *ids[k] = id;
    }
    return 0;
}

static int cmp_added_longest_first(const void *x, const void *y)
{
    const bpe_added *a = x, *b = y;
    return (a->len < b->len) - (a->len > b->len);
}

/* Sorts the added tokens for matching and makes room for their ids. */
static int finish_added(tok_bpe *b)
{
    size_t n = b->base.vocab_size;
    qsort(b->added, b->n_added, sizeof *b->added, cmp_added_longest_first);
    for (size_t i = 0; i < b->n_added; i++) {
        unsigned char c = (unsigned char)b->added[i].text[0];
        b->added_first[c >> 3] |= (uint8_t)(1u << (c & 7));
        if ((size_t)b->added[i].id >= n)
            n = (size_t)b->added[i].id + 1;
    }
    return n > b->base.vocab_size ? index_ids(b, n) : 0;
}

static int load_specials(tok_bpe *b, const char *dir, eng_err *err)
{
    char path[4096];
    bpe_names names = {{NULL}};
    static const char *const defaults[2][N_SPECIAL] = {
        [TOK_BPE_GPT2] = {"<|endoftext|>", "<|endoftext|>", "<|endoftext|>", NULL},
        [TOK_BPE_CLIP] = {"<|startoftext|>", "<|endoftext|>", "<|endoftext|>", "<|endoftext|>"},
    };
    int rc = 0;
    for (int k = 0; !rc && k < N_SPECIAL; k++)
        if (defaults[b->flavor][k] && !(names.tok[k] = strdup(defaults[b->flavor][k])))
            rc = eng_err_set(err, ENG_ENOMEM, "out of memory");
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    if (!rc)
        rc = read_tokenizer_config(b, path, &names, err);
    snprintf(path, sizeof path, "%s/special_tokens_map.json", dir);
    if (!rc)
        rc = read_special_tokens_map(path, &names, err);
    if (!rc)
        rc = resolve_specials(b, &names, err);
    if (!rc && finish_added(b))
        rc = eng_err_set(err, ENG_ENOMEM, "out of memory");
    for (int k = 0; k < N_SPECIAL; k++)
        free(names.tok[k]);
    return rc;
}

static void bpe_free(tok_tokenizer *t)
{
    tok_bpe *b = (tok_bpe *)t;
    eng_strmap_free(&b->vocab);
    eng_strmap_free(&b->merges);
    free(b->id_entry);
    free(b->merge_id);
    for (size_t i = 0; i < b->n_added; i++)
        free(b->added[i].text);
    free(b->added);
    free(b);
}

int tok_bpe_load(const char *dir, tok_bpe_flavor flavor, tok_tokenizer **out, eng_err *err)
{
    char path[4096];
    *out = NULL;
    if (strlen(dir) > sizeof path - 64)
        return eng_err_set(err, ENG_EINVAL, "%s: folder path too long", dir);
    if (flavor != TOK_BPE_GPT2 && flavor != TOK_BPE_CLIP)
        return eng_err_set(err, ENG_EINVAL, "unknown byte-level BPE flavor %d", (int)flavor);
    tok_bpe *b = calloc(1, sizeof *b);
    if (!b)
        return eng_err_set(err, ENG_ENOMEM, "out of memory loading the tokenizer of %s", dir);
    b->base.ops = &bpe_ops;
    b->flavor = flavor;
    eng_strmap_init(&b->vocab);
    eng_strmap_init(&b->merges);
    build_alphabet(b);
    snprintf(path, sizeof path, "%s/vocab.json", dir);
    int rc = load_vocab(b, path, err);
    if (!rc)
        rc = resolve_byte_ids(b, path, err);
    snprintf(path, sizeof path, "%s/merges.txt", dir);
    if (!rc)
        rc = load_merges(b, path, err);
    if (!rc)
        rc = load_specials(b, dir, err);
    if (rc) {
        bpe_free(&b->base);
        return rc;
    }
    *out = &b->base;
    return 0;
}

/* ---- BPE ---- */

static int32_t pair_rank(const tok_bpe *b, int32_t left, int32_t right)
{
    int32_t key[2] = {left, right};
    return eng_strmap_get(&b->merges, (const char *)key, sizeof key);
}

/* Pieces up to this many bytes are merged by the scan below, which is what
 * HF's bpe() does; longer ones through a heap, so that a long run of letters
 * costs n log n rather than n^2. Both give the same symbols. */
#define BPE_SCAN_MAX 64

/* Merges sc->sym[0..m) as HF's bpe(): while some adjacent pair is a merge,
 * take the lowest-ranked one and merge every occurrence of it, left to right
 * without overlap. Ranks are cached per pair and only looked up again next to
 * a new symbol. Returns the new symbol count. The reference for merge_heap. */
static size_t merge_scan(const tok_bpe *b, bpe_scratch *sc, size_t m)
{
    int32_t *sym = sc->sym, *rank = sc->rank;
    for (size_t i = 0; i + 1 < m; i++)
        rank[i] = pair_rank(b, sym[i], sym[i + 1]);
    while (m > 1) {
        int32_t best = -1;
        for (size_t i = 0; i + 1 < m; i++)
            if (rank[i] >= 0 && (best < 0 || rank[i] < best))
                best = rank[i];
        if (best < 0)
            break;
        size_t w = 0;
        for (size_t i = 0; i < m; w++) {
            bool merge = i + 1 < m && rank[i] == best;
            sym[w] = merge ? b->merge_id[best] : sym[i];
            sc->pos[w] = sc->pos[i];
            rank[w] = rank[i]; /* still right unless a neighbour is fresh */
            sc->fresh[w] = merge;
            i += merge ? 2 : 1;
        }
        m = w;
        for (size_t i = 0; i + 1 < m; i++)
            if (sc->fresh[i] || sc->fresh[i + 1])
                rank[i] = pair_rank(b, sym[i], sym[i + 1]);
    }
    return m;
}

static bool cand_before(const bpe_cand *a, const bpe_cand *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void heap_push(bpe_scratch *sc, bpe_cand c)
{
    size_t i = sc->heap_n++;
    for (; i > 0 && cand_before(&c, &sc->heap[(i - 1) / 2]); i = (i - 1) / 2)
        sc->heap[i] = sc->heap[(i - 1) / 2];
    sc->heap[i] = c;
}

static bpe_cand heap_pop(bpe_scratch *sc)
{
    bpe_cand top = sc->heap[0], last = sc->heap[--sc->heap_n];
    size_t i = 0, n = sc->heap_n;
    for (size_t c; (c = 2 * i + 1) < n; i = c) {
        if (c + 1 < n && cand_before(&sc->heap[c + 1], &sc->heap[c]))
            c++;
        if (!cand_before(&sc->heap[c], &last))
            break;
        sc->heap[i] = sc->heap[c];
    }
    sc->heap[i] = last;
    return top;
}

/* Queues the pair that starts at slot left when it is a merge. */
static void queue_pair(const tok_bpe *b, bpe_scratch *sc, int32_t left)
{
    if (left < 0 || sc->next[left] < 0)
        return;
    int32_t right = sc->next[left];
    int32_t rank = pair_rank(b, sc->sym[left], sc->sym[right]);
    if (rank >= 0)
        heap_push(sc, (bpe_cand){.rank = rank, .left = (uint32_t)left, .right = (uint32_t)right,
                                 .lsym = sc->sym[left], .rsym = sc->sym[right]});
}

/* Runs one merge round: merges, left to right, every still-valid queued pair
 * of the lowest rank, then queues the pairs around the new symbols. Those are
 * queued only after the round, as HF only looks for the next pair once the
 * round is over (a pathological merges.txt could rank them lower). */
static void merge_round(const tok_bpe *b, bpe_scratch *sc)
{
    int32_t round = sc->heap[0].rank;
    size_t n_merged = 0;
    while (sc->heap_n && sc->heap[0].rank == round) {
        bpe_cand c = heap_pop(sc);
        if (sc->sym[c.left] != c.lsym || sc->sym[c.right] != c.rsym ||
            sc->next[c.left] != (int32_t)c.right)
            continue; /* a neighbour merged since it was queued */
        int32_t after = sc->next[c.right];
        sc->sym[c.left] = b->merge_id[round];
        sc->sym[c.right] = -1;
        sc->next[c.left] = after;
        if (after >= 0)
            sc->prev[after] = (int32_t)c.left;
        sc->fresh[c.left] = 1;
        sc->merged[n_merged++] = c.left;
    }
    for (size_t k = 0; k < n_merged; k++) {
        int32_t slot = (int32_t)sc->merged[k], before = sc->prev[slot];
        if (before < 0 || !sc->fresh[before]) /* else queued as that one's right pair */
            queue_pair(b, sc, before);
        queue_pair(b, sc, slot);
    }
    for (size_t k = 0; k < n_merged; k++)
        sc->fresh[sc->merged[k]] = 0;
}

/* merge_scan with the pairs in a heap; returns the same symbols. */
static size_t merge_heap(const tok_bpe *b, bpe_scratch *sc, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        sc->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
        sc->prev[i] = (int32_t)i - 1;
        sc->fresh[i] = 0;
    }
    sc->heap_n = 0;
    for (size_t i = 0; i + 1 < n; i++)
        queue_pair(b, sc, (int32_t)i);
    while (sc->heap_n)
        merge_round(b, sc);
    size_t m = 0; /* slot 0 always lives: merges keep the left slot */
    for (int32_t slot = 0; slot >= 0; slot = sc->next[slot]) {
        sc->sym[m] = sc->sym[slot];
        sc->pos[m++] = (uint32_t)slot;
    }
    return m;
}

static int grow_array(void **p, size_t n, size_t elem)
{
    void *q = realloc(*p, n * elem);
    if (!q)
        return ENG_ENOMEM;
    *p = q;
    return 0;
}

/* Makes room for a piece of n bytes (and, for the heap, its candidates). */
static int scratch_reserve(bpe_scratch *sc, size_t n, bool heap)
{
    size_t cap = n * 2 > 64 ? n * 2 : 64;
    if (n > sc->cap) {
        if (grow_array((void **)&sc->sym, cap, sizeof *sc->sym) ||
            grow_array((void **)&sc->pos, cap, sizeof *sc->pos) ||
            grow_array((void **)&sc->rank, cap, sizeof *sc->rank) ||
            grow_array((void **)&sc->fresh, cap, sizeof *sc->fresh))
            return ENG_ENOMEM;
        sc->cap = cap;
    }
    /* n - 1 first pairs, then at most two per merge: fewer than 3n in all. */
    if (heap && 3 * n > sc->heap_cap) {
        if (grow_array((void **)&sc->next, cap, sizeof *sc->next) ||
            grow_array((void **)&sc->prev, cap, sizeof *sc->prev) ||
            grow_array((void **)&sc->merged, cap, sizeof *sc->merged) ||
            grow_array((void **)&sc->heap, 3 * cap, sizeof *sc->heap))
            return ENG_ENOMEM;
        sc->heap_cap = 3 * cap;
    }
    return 0;
}

static void scratch_free(bpe_scratch *sc)
{
    free(sc->sym);
    free(sc->pos);
    free(sc->rank);
    free(sc->fresh);
    free(sc->next);
    free(sc->prev);
    free(sc->merged);
    free(sc->heap);
    tok_bpe__norm_free(&sc->norm);
}

/* Encodes one pre-token p[0..n) (n > 0) and appends its tokens to out. */
static int encode_piece(const tok_bpe *b, const unsigned char *p, size_t n, const bpe_src *src,
                        bpe_scratch *sc, tok_encoding *out)
{
    bool heap = n > BPE_SCAN_MAX && !sc->ref;
    if (scratch_reserve(sc, n, heap))
        return ENG_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        sc->sym[i] = b->byte_id[p[i]];
        sc->pos[i] = (uint32_t)i;
    }
    if (b->flavor == TOK_BPE_CLIP)
        sc->sym[n - 1] = b->byte_eow_id[p[n - 1]]; /* "</w>" ends every CLIP piece */
    size_t m = heap ? merge_heap(b, sc, n) : merge_scan(b, sc, n);
    for (size_t k = 0; k < m; k++) {
        size_t first = sc->pos[k], last = (k + 1 < m ? sc->pos[k + 1] : n) - 1;
        uint32_t start = src->start ? src->start[first] : src->base + (uint32_t)first;
        uint32_t stop = src->stop ? src->stop[last] : src->base + (uint32_t)last + 1;
        if (tok_encoding_push(out, sc->sym[k], start, stop < start ? start : stop, false))
            return ENG_ENOMEM;
    }
    return 0;
}

/* Encodes text[from..to), which holds no added token. */
static int encode_segment(const tok_bpe *b, const char *text, size_t from, size_t to,
                          bpe_scratch *sc, tok_encoding *out)
{
    int rc = 0;
    if (b->flavor == TOK_BPE_GPT2) {
        const char *s = text + from;
        for (size_t i = 0, n = to - from; !rc && i < n && out->n < sc->stop;) {
            size_t end = tok_bpe__gpt2_split(s, n, i);
            bpe_src src = {.base = (uint32_t)(from + i)};
            rc = encode_piece(b, (const unsigned char *)s + i, end - i, &src, sc, out);
            i = end;
        }
        return rc;
    }
    tok_bpe__norm *nm = &sc->norm;
    rc = tok_bpe__clip_normalize(text + from, to - from, (uint32_t)from, nm);
    for (size_t i = 0; !rc && out->n < sc->stop;) {
        size_t end = tok_bpe__clip_split(nm->text, nm->n, &i);
        if (i == nm->n)
            break;
        bpe_src src = {.start = nm->start + i, .stop = nm->stop + i};
        rc = encode_piece(b, (const unsigned char *)nm->text + i, end - i, &src, sc, out);
        i = end;
    }
    return rc;
}

/* The first added token in text[pos..len): its offset (len if none), length and id. */
static size_t find_added(const tok_bpe *b, const char *text, size_t len, size_t pos,
                         size_t *hit_len, int32_t *hit_id)
{
    for (size_t i = pos; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (!(b->added_first[c >> 3] & (1u << (c & 7))))
            continue;
        for (size_t k = 0; k < b->n_added; k++) {
            const bpe_added *a = &b->added[k];
            if (a->len <= len - i && memcmp(text + i, a->text, a->len) == 0) {
                *hit_len = a->len;
                *hit_id = a->id;
                return i;
            }
        }
    }
    return len;
}

/* Encodes the whole text: added tokens as themselves, the rest by BPE. */
static int encode_text(const tok_bpe *b, const char *text, size_t len, bpe_scratch *sc,
                       tok_encoding *out)
{
    for (size_t pos = 0; pos < len && out->n < sc->stop;) {
        size_t hit_len = 0;
        int32_t hit_id = -1;
        size_t hit = find_added(b, text, len, pos, &hit_len, &hit_id);
        int rc = encode_segment(b, text, pos, hit, sc, out);
        if (rc)
            return rc;
        if (hit == len)
            break;
        if (tok_encoding_push(out, hit_id, (uint32_t)hit, (uint32_t)(hit + hit_len), true))
            return ENG_ENOMEM;
        pos = hit + hit_len;
    }
    return 0;
}

/* Records the untruncated count, truncates to max_len keeping room for the
 * closing token, and appends it. */
static int finish_encoding(const tok_bpe *b, tok_encoding *out, bool close, size_t max_len)
{
    size_t total = out->n + close;
    if (max_len && total > max_len)
        out->n = max_len - close;
    out->n_untruncated = total;
    if (close && tok_encoding_push(out, b->base.eos_id, 0, 0, true))
        return ENG_ENOMEM;
    return 0;
}

/* Encodes as tok_encode; ref merges every piece with the reference scan. */
static int encode_with(const tok_tokenizer *t, const char *text, size_t len,
                       const tok_encode_opts *opts, tok_encoding *out, eng_err *err, bool ref)
{
    const tok_bpe *b = (const tok_bpe *)t;
    tok_encoding_clear(out);
    size_t bad = tok_utf8_validate(text, len);
    if (bad < len)
        return eng_err_set(err, ENG_EFORMAT, "text is not valid UTF-8 at byte %zu", bad);
    if (len > UINT32_MAX)
        return eng_err_set(err, ENG_ETOOLONG, "text of %zu bytes is over the 4 GiB limit", len);
    bool special = opts && opts->add_special;
    size_t max_len = opts ? opts->max_len : 0;
    bool open = special && (b->flavor == TOK_BPE_CLIP || b->add_bos) && t->bos_id >= 0;
    bool close = special && b->flavor == TOK_BPE_CLIP && t->eos_id >= 0;
    if (max_len && max_len < (size_t)open + close)
        return eng_err_set(err, ENG_EINVAL, "max_len %zu leaves no room for the special tokens",
                           max_len);
    /* out holds the opening token too; the closing one comes after. */
    bpe_scratch sc = {.ref = ref, .stop = tok__count_stop(opts, close)};
    int rc = open ? tok_encoding_push(out, t->bos_id, 0, 0, true) : 0;
    if (!rc)
        rc = encode_text(b, text, len, &sc, out);
    scratch_free(&sc);
    if (!rc)
        rc = finish_encoding(b, out, close, max_len);
    if (rc)
        return eng_err_set(err, rc, "out of memory tokenizing %zu bytes", len);
    return 0;
}

/* Added tokens found in the text are marked special, with the span they cover;
 * the bos/eos the tokenizer adds have start == stop == 0. */
static int bpe_encode(const tok_tokenizer *t, const char *text, size_t len,
                      const tok_encode_opts *opts, tok_encoding *out, eng_err *err)
{
    return encode_with(t, text, len, opts, out, err, false);
}

int tok_bpe__encode_ref(const tok_tokenizer *t, const char *text, size_t len,
                        const tok_encode_opts *opts, tok_encoding *out, eng_err *err)
{
    assert(t->ops == &bpe_ops);
    return encode_with(t, text, len, opts, out, err, true);
}

/* ---- Decoding ---- */

static const char *bpe_id_to_token(const tok_tokenizer *t, int32_t id, size_t *len)
{
    const tok_bpe *b = (const tok_bpe *)t;
    if (id < 0 || (size_t)id >= t->vocab_size)
        return NULL;
    if (b->id_entry[id] != UINT32_MAX)
        return eng_strmap_key(&b->vocab, b->id_entry[id], len);
    const bpe_added *a = find_added_id(b, id);
    if (a)
        *len = a->len;
    return a ? a->text : NULL;
}

static void put_byte(char *buf, size_t cap, size_t *n, unsigned char c)
{
    if (*n < cap)
        buf[*n] = (char)c;
    (*n)++;
}

/* Writes the raw bytes a vocabulary string spells: each character of the
 * byte alphabet is one byte; any other character (not in a valid vocabulary)
 * is copied as it is. */
static size_t unspell(const tok_bpe *b, const char *s, size_t len, char *buf, size_t cap)
{
    size_t n = 0;
    for (utf8proc_ssize_t i = 0, k; (size_t)i < len; i += k) {
        utf8proc_int32_t c;
        k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)len - i, &c);
        if (k < 1) { /* vocab.json is valid UTF-8; be safe anyway */
            k = 1;
            c = -1;
        }
        if (c >= 0 && c < ALPHABET_CPS && b->cp_byte[c] >= 0) {
            put_byte(buf, cap, &n, (unsigned char)b->cp_byte[c]);
            continue;
        }
        for (utf8proc_ssize_t j = 0; j < k; j++)
            put_byte(buf, cap, &n, (unsigned char)s[i + j]);
    }
    return n;
}

/* Whether the vocabulary string s is a CLIP piece's last symbol ("...</w>"). */
static bool ends_word(const tok_bpe *b, const char *s, size_t len)
{
    return b->flavor == TOK_BPE_CLIP && len >= EOW_LEN &&
           memcmp(s + len - EOW_LEN, EOW, EOW_LEN) == 0;
}

/* Added tokens decode to their text; CLIP's "</w>" decodes to a space. */
static size_t bpe_token_bytes(const tok_tokenizer *t, int32_t id, char *buf, size_t cap)
{
    const tok_bpe *b = (const tok_bpe *)t;
    const bpe_added *a = find_added_id(b, id);
    if (a) {
        if (cap)
            memcpy(buf, a->text, a->len < cap ? a->len : cap);
        return a->len;
    }
    size_t len;
    const char *s = bpe_id_to_token(t, id, &len);
    if (!s)
        return 0;
    bool eow = ends_word(b, s, len);
    size_t n = unspell(b, s, eow ? len - EOW_LEN : len, buf, cap);
    if (eow)
        put_byte(buf, cap, &n, ' ');
    return n;
}

size_t tok_bpe_decode(const tok_tokenizer *t, const int32_t *ids, size_t n, char *out, size_t cap)
{
    assert(t->ops == &bpe_ops);
    const tok_bpe *b = (const tok_bpe *)t;
    bool clip = b->flavor == TOK_BPE_CLIP, last_ends_word = false;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        const bpe_added *a = find_added_id(b, ids[i]);
        if (clip && a && a->special)
            continue;
        size_t at = total < cap ? total : cap;
        size_t k = bpe_token_bytes(t, ids[i], cap ? out + at : NULL, cap - at);
        if (!k)
            continue;
        total += k;
        size_t len = 0;
        const char *s = a ? NULL : bpe_id_to_token(t, ids[i], &len);
        last_ends_word = s && ends_word(b, s, len);
    }
    return last_ends_word ? total - 1 : total; /* HF strips the space of the last "</w>" */
}

static const tok_ops bpe_ops = {
    .encode = bpe_encode,
    .id_to_token = bpe_id_to_token,
    .token_bytes = bpe_token_bytes,
    .free = bpe_free,
};
