#include "engine/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The format allows any header size, but a header past 100 MB is a corrupt
 * file in practice (the reference implementation refuses those too). */
#define MAX_HEADER_BYTES (100u * 1024 * 1024)

static int map_file(const char *path, eng_st_file *f, eng_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return eng_err_set(err, ENG_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return eng_err_set(err, ENG_EIO, "%s: not a regular file", path);
    }
    f->size = (size_t)sb.st_size;
    f->map = NULL;
    if (f->size > 0) {
        f->map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (f->map == MAP_FAILED) {
            close(fd);
            f->map = NULL;
            return eng_err_set(err, ENG_EIO, "%s: cannot map: %s", path, strerror(errno));
        }
    }
    close(fd);
    f->path = strdup(path);
    if (!f->path) {
        if (f->map)
            munmap(f->map, f->size);
        return eng_err_set(err, ENG_ENOMEM, "%s: out of memory", path);
    }
    return 0;
}

static int parse_shape(const char *path, const char *name, json_t *shape, eng_st_tensor *t,
                       eng_err *err)
{
    if (!json_is_array(shape) || json_array_size(shape) > ENG_MAX_DIMS)
        return eng_err_set(err, ENG_EFORMAT, "%s: tensor %s: \"shape\" must be an array of at most %d sizes",
                           path, name, ENG_MAX_DIMS);
    t->ndim = (int)json_array_size(shape);
    t->numel = 1;
    for (int d = 0; d < t->ndim; d++) {
        json_t *v = json_array_get(shape, (size_t)d);
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return eng_err_set(err, ENG_EFORMAT, "%s: tensor %s: shape[%d] is not a non-negative integer",
                               path, name, d);
        uint64_t n = (uint64_t)json_integer_value(v);
        if (n && t->numel > UINT64_MAX / n)
            return eng_err_set(err, ENG_EFORMAT, "%s: tensor %s: shape overflows", path, name);
        t->shape[d] = (int64_t)n;
        t->numel *= n;
    }
    return 0;
}

/* Validates one header entry and fills t; data spans are checked against
 * data_size here, for overlap later. */
static int parse_entry(const char *path, const char *name, json_t *obj, const unsigned char *data,
                       uint64_t data_size, eng_st_tensor *t, eng_err *err)
{
    if (!json_is_object(obj))
        return eng_err_set(err, ENG_EFORMAT, "%s: tensor %s: entry is not an object", path, name);
    json_t *dtype = json_object_get(obj, "dtype"), *offs = json_object_get(obj, "data_offsets");
    if (!json_is_string(dtype))
        return eng_err_set(err, ENG_EFORMAT, "%s: tensor %s: missing \"dtype\"", path, name);
    int dt = eng_dtype_from_st_name(json_string_value(dtype));
    if (dt < 0)
        return eng_err_set(err, ENG_EFORMAT, "%s: tensor %s: unknown dtype \"%s\"", path, name,
                           json_string_value(dtype));
    t->dtype = (eng_dtype)dt;
    int rc = parse_shape(path, name, json_object_get(obj, "shape"), t, err);
    if (rc)
        return rc;
    if (!json_is_array(offs) || json_array_size(offs) != 2 ||
        !json_is_integer(json_array_get(offs, 0)) || !json_is_integer(json_array_get(offs, 1)))
        return eng_err_set(err, ENG_EFORMAT, "%s: tensor %s: \"data_offsets\" must be [begin, end]", path, name);
    json_int_t b = json_integer_value(json_array_get(offs, 0));
    json_int_t e = json_integer_value(json_array_get(offs, 1));
    if (b < 0 || e < b || (uint64_t)e > data_size)
        return eng_err_set(err, ENG_EFORMAT,
                           "%s: tensor %s: data_offsets [%lld, %lld] outside the %llu data bytes", path,
                           name, (long long)b, (long long)e, (unsigned long long)data_size);
    size_t esize = eng_dtypes[t->dtype].size;
    if (t->numel > UINT64_MAX / esize || t->numel * esize != (uint64_t)(e - b))
        return eng_err_set(err, ENG_EFORMAT,
                           "%s: tensor %s: shape x %s size is %llu bytes but data_offsets span %lld",
                           path, name, eng_dtypes[t->dtype].st_name,
                           (unsigned long long)(t->numel * esize), (long long)(e - b));
    t->data = data + b;
    t->nbytes = (size_t)(e - b);
    t->name = strdup(name);
    return t->name ? 0 : eng_err_set(err, ENG_ENOMEM, "%s: out of memory", path);
}

static int cmp_by_data(const void *a, const void *b)
{
    const eng_st_tensor *x = *(eng_st_tensor *const *)a, *y = *(eng_st_tensor *const *)b;
    const char *px = x->data, *py = y->data;
    return px < py ? -1 : px > py ? 1 : 0;
}

/* Rejects tensors whose byte spans overlap (a crafted file could otherwise
 * alias one weight onto another). */
static int check_overlaps(const char *path, eng_st_tensor *ts, size_t n, eng_err *err)
{
    if (n < 2)
        return 0;
    eng_st_tensor **order = malloc(n * sizeof *order);
    if (!order)
        return eng_err_set(err, ENG_ENOMEM, "%s: out of memory", path);
    for (size_t i = 0; i < n; i++)
        order[i] = &ts[i];
    qsort(order, n, sizeof *order, cmp_by_data);
    /* Against the furthest end seen so far, not just the previous span: an
     * empty tensor between two overlapping ones must not hide the overlap. */
    int rc = 0;
    const eng_st_tensor *far = order[0];
    for (size_t i = 1; i < n && !rc; i++) {
        const char *far_end = (const char *)far->data + far->nbytes;
        const char *end = (const char *)order[i]->data + order[i]->nbytes;
        if (order[i]->nbytes && (const char *)order[i]->data < far_end)
            rc = eng_err_set(err, ENG_EFORMAT, "%s: tensors %s and %s overlap", path, far->name,
                             order[i]->name);
        if (end > far_end)
            far = order[i];
    }
    free(order);
    return rc;
}

static int read_header(const eng_st_file *f, json_t **root, uint64_t *header_len, eng_err *err)
{
    if (f->size < 8)
        return eng_err_set(err, ENG_EFORMAT, "%s: file too short for a safetensors header (%zu bytes)",
                           f->path, f->size);
    const unsigned char *p = f->map;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | p[i];
    if (n > f->size - 8 || n > MAX_HEADER_BYTES)
        return eng_err_set(err, ENG_EFORMAT,
                           "%s: header length %llu runs past the end of the %zu-byte file (truncated or not safetensors)",
                           f->path, (unsigned long long)n, f->size);
    json_error_t jerr;
    *root = json_loadb((const char *)p + 8, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
    if (!*root)
        return eng_err_set(err, ENG_EFORMAT, "%s: header is not valid JSON: %s (at byte %d)", f->path,
                           jerr.text, jerr.position);
    if (!json_is_object(*root)) {
        json_decref(*root);
        return eng_err_set(err, ENG_EFORMAT, "%s: header is not a JSON object", f->path);
    }
    *header_len = n;
    return 0;
}

static int add_tensors(eng_safetensors *st, int file_idx, json_t *root, uint64_t header_len,
                       eng_err *err)
{
    const eng_st_file *f = &st->files[file_idx];
    const unsigned char *data = (const unsigned char *)f->map + 8 + header_len;
    uint64_t data_size = f->size - 8 - header_len;
    size_t first = st->n_tensors, cap = st->n_tensors + json_object_size(root);
    eng_st_tensor *ts = realloc(st->tensors, (cap ? cap : 1) * sizeof *ts);
    if (!ts)
        return eng_err_set(err, ENG_ENOMEM, "%s: out of memory", f->path);
    st->tensors = ts;
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0)
            continue;
        eng_st_tensor *t = &st->tensors[st->n_tensors];
        memset(t, 0, sizeof *t);
        int rc = parse_entry(f->path, key, val, data, data_size, t, err);
        if (rc)
            return rc;
        t->file = file_idx;
        if (eng_strmap_get(&st->by_name, key, strlen(key)) >= 0) {
            free(t->name);
            return eng_err_set(err, ENG_EFORMAT, "%s: tensor %s appears in two shards", f->path, key);
        }
        if (eng_strmap_put(&st->by_name, key, strlen(key), (int32_t)st->n_tensors)) {
            free(t->name);
            return eng_err_set(err, ENG_ENOMEM, "%s: out of memory", f->path);
        }
        st->n_tensors++;
    }
    return check_overlaps(f->path, st->tensors + first, st->n_tensors - first, err);
}

int eng_safetensors_add_file(eng_safetensors *st, const char *path, eng_err *err)
{
    eng_st_file *files = realloc(st->files, (st->n_files + 1) * sizeof *files);
    if (!files)
        return eng_err_set(err, ENG_ENOMEM, "%s: out of memory", path);
    st->files = files;
    int rc = map_file(path, &st->files[st->n_files], err);
    if (rc)
        return rc;
    int idx = (int)st->n_files++;
    json_t *root;
    uint64_t header_len;
    rc = read_header(&st->files[idx], &root, &header_len, err);
    if (rc)
        return rc;
    rc = add_tensors(st, idx, root, header_len, err);
    json_decref(root);
    return rc;
}

static int file_exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* Opens every shard named by the index's weight_map once, then checks that
 * each listed tensor is where the index says. */
static int open_sharded(eng_safetensors *st, const char *dir, const char *index_path, eng_err *err)
{
    json_error_t jerr;
    json_t *root = json_load_file(index_path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return eng_err_set(err, ENG_EFORMAT, "%s: not valid JSON: %s (line %d)", index_path,
                           jerr.text, jerr.line);
    json_t *map = json_object_get(root, "weight_map");
    int rc = 0;
    if (!json_is_object(map))
        rc = eng_err_set(err, ENG_EFORMAT, "%s: missing \"weight_map\" object", index_path);
    const char *name;
    json_t *file;
    json_object_foreach(map, name, file) {
        if (rc)
            break;
        const char *fn = json_string_value(file);
        if (!fn || strchr(fn, '/') || strcmp(fn, "..") == 0) {
            rc = eng_err_set(err, ENG_EFORMAT, "%s: tensor %s: shard must be a file name in the folder",
                             index_path, name);
            break;
        }
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", dir, fn);
        int seen = 0;
        for (size_t i = 0; i < st->n_files && !seen; i++)
            seen = strcmp(st->files[i].path, path) == 0;
        if (!seen)
            rc = eng_safetensors_add_file(st, path, err);
        const eng_st_tensor *t = rc ? NULL : eng_safetensors_find(st, name);
        if (!rc && (!t || strcmp(st->files[t->file].path, path) != 0))
            rc = eng_err_set(err, ENG_EFORMAT, "%s: tensor %s is not in %s as the index says",
                             index_path, name, fn);
    }
    json_decref(root);
    return rc;
}

/* Writes s into out as one single-quoted shell word ('it'\''s'). */
static void shell_quote(const char *s, char *out, size_t cap)
{
    size_t n = 0;
    out[n++] = '\'';
    for (; *s && n + 5 < cap; s++) {
        if (*s == '\'') {
            memcpy(out + n, "'\\''", 4);
            n += 4;
        } else {
            out[n++] = *s;
        }
    }
    out[n++] = '\'';
    out[n] = '\0';
}

/* Refuses a folder holding only pytorch_model.bin, with a command that
 * converts it. The command loads the class config.json names (AutoModel
 * would drop the task's head and rename the architecture to the bare
 * model's, which predictd then refuses). */
static int refuse_pickle(const char *dir, eng_err *err)
{
    char quoted[4 * PATH_MAX + 3]; /* each ' becomes four bytes */
    shell_quote(dir, quoted, sizeof quoted);
    return eng_err_set(err, ENG_EUNSUPPORTED,
        "%s: found pytorch_model.bin but no model.safetensors; predictd reads only safetensors "
        "(pickle files can run code). Convert once with: python3 -c 'import sys, transformers as t; "
        "p = sys.argv[1]; a = t.AutoConfig.from_pretrained(p).architectures[0]; "
        "getattr(t, a).from_pretrained(p).save_pretrained(p, safe_serialization=True)' %s",
        dir, quoted);
}

int eng_safetensors_open(eng_safetensors *st, const char *dir, eng_err *err)
{
    memset(st, 0, sizeof *st);
    eng_strmap_init(&st->by_name);
    char path[PATH_MAX];
    int rc;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (file_exists(path)) {
        rc = eng_safetensors_add_file(st, path, err);
    } else {
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
        if (file_exists(path)) {
            rc = open_sharded(st, dir, path, err);
        } else {
            snprintf(path, sizeof path, "%s/pytorch_model.bin", dir);
            if (file_exists(path))
                rc = refuse_pickle(dir, err);
            else
                rc = eng_err_set(err, ENG_ENOTFOUND,
                    "%s: no model.safetensors or model.safetensors.index.json in the folder", dir);
        }
    }
    if (rc)
        eng_safetensors_close(st);
    return rc;
}

void eng_safetensors_close(eng_safetensors *st)
{
    for (size_t i = 0; i < st->n_tensors; i++)
        free(st->tensors[i].name);
    for (size_t i = 0; i < st->n_files; i++) {
        if (st->files[i].map)
            munmap(st->files[i].map, st->files[i].size);
        free(st->files[i].path);
    }
    free(st->tensors);
    free(st->files);
    eng_strmap_free(&st->by_name);
    memset(st, 0, sizeof *st);
}

const eng_st_tensor *eng_safetensors_find(const eng_safetensors *st, const char *name)
{
    int32_t i = eng_strmap_get(&st->by_name, name, strlen(name));
    return i < 0 ? NULL : &st->tensors[i];
}
