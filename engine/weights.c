#include "engine/weights.h"

#include "engine/linear.h"

#include <stdarg.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>

int eng_weights_open(eng_weights *w, const char *dir, eng_err *err)
{
    memset(w, 0, sizeof *w);
    return eng_safetensors_open(&w->st, dir, err);
}

void eng_weights_close(eng_weights *w)
{
    for (size_t i = 0; i < w->n_owned; i++)
        free(w->owned[i]);
    free(w->owned);
    eng_safetensors_close(&w->st);
    memset(w, 0, sizeof *w);
}

/* Drops from the resident set the whole pages of the file mapping that
 * data covers (a neighbour sharing an edge page keeps that page). The
 * mapping is private and never written, so a later read faults the bytes
 * back in from the file: nothing is lost but residency. */
static void evict_pages(const float *data, size_t n_floats)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t begin = ((uintptr_t)data + page - 1) & ~(page - 1);
    uintptr_t end = ((uintptr_t)(data + n_floats)) & ~(page - 1);
    if (end > begin)
        madvise((void *)begin, end - begin, MADV_DONTNEED);
}

static bool is_owned(const eng_weights *w, const float *data)
{
    for (size_t i = 0; i < w->n_owned; i++)
        if (w->owned[i] == data)
            return true;
    return false;
}

void eng_weights_release(eng_weights *w, const float *data, size_t n_floats)
{
    if (!data)
        return;
    for (size_t i = 0; i < w->n_owned; i++)
        if (w->owned[i] == data) {
            free(w->owned[i]);
            w->owned[i] = w->owned[--w->n_owned];
            return;
        }
    evict_pages(data, n_floats);
}

int eng_weights_convert_linear(eng_weights *w, eng_linear *l, eng_dtype to, int keep_source,
                               eng_err *err)
{
    const float *wt = l->w, *b = l->b;
    int rc = eng_linear_convert(l, to, err);
    if (rc)
        return rc;
    if (keep_source) {
        /* Converting read every page; the tensor's other reader (a row
         * gather) touches few, so let it fault in just those. */
        if (!is_owned(w, wt))
            evict_pages(wt, (size_t)l->in * l->out);
        return 0;
    }
    eng_weights_release(w, wt, (size_t)l->in * l->out);
    if (b)
        eng_weights_release(w, b, (size_t)l->out);
    return 0;
}

int eng_weights_has(const eng_weights *w, const char *name)
{
    return eng_safetensors_find(&w->st, name) != NULL;
}

int eng_weights_check(const eng_weights *w, eng_err *err)
{
    if (!w->first.code)
        return 0;
    if (err)
        *err = w->first;
    return w->first.code;
}

static void format_shape(char *buf, size_t cap, const int64_t *shape, int ndim)
{
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < ndim && n < cap; d++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (n < cap)
        snprintf(buf + n, cap - n, "]");
}

static const float *to_f32(eng_weights *w, const eng_st_tensor *t)
{
    if (t->dtype == ENG_F32 && ((uintptr_t)t->data & 3) == 0)
        return t->data;
    void **owned = realloc(w->owned, (w->n_owned + 1) * sizeof *owned);
    float *buf = malloc((t->numel ? t->numel : 1) * sizeof *buf);
    if (owned)
        w->owned = owned;
    if (!owned || !buf) {
        free(buf);
        eng_err_set(&w->first, ENG_ENOMEM, "%s: out of memory converting %s", w->st.files[t->file].path,
                    t->name);
        return NULL;
    }
    eng_convert_to_f32(t->dtype, t->data, buf, t->numel);
    w->owned[w->n_owned++] = buf;
    return buf;
}

const float *eng_weights_f32(eng_weights *w, const int64_t *shape, int ndim, const char *fmt, ...)
{
    if (w->first.code)
        return NULL;
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    const char *file = w->st.n_files ? w->st.files[0].path : "checkpoint";
    const eng_st_tensor *t = eng_safetensors_find(&w->st, name);
    if (!t) {
        eng_err_set(&w->first, ENG_EFORMAT, "%s: missing tensor %s", file, name);
        return NULL;
    }
    file = w->st.files[t->file].path;
    int same = t->ndim == ndim;
    for (int d = 0; same && d < ndim; d++)
        same = t->shape[d] == shape[d];
    if (!same) {
        char want[96], got[96];
        format_shape(want, sizeof want, shape, ndim);
        format_shape(got, sizeof got, t->shape, t->ndim);
        eng_err_set(&w->first, ENG_EFORMAT, "%s: tensor %s has shape %s, the config implies %s", file,
                    name, got, want);
        return NULL;
    }
    if (!eng_dtypes[t->dtype].is_float) {
        eng_err_set(&w->first, ENG_EFORMAT, "%s: tensor %s has dtype %s, a float type is needed", file,
                    name, eng_dtypes[t->dtype].st_name);
        return NULL;
    }
    return to_f32(w, t);
}
