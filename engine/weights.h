/* Fetching a model's weights from its checkpoint by name and expected shape.
 *
 * A model's load function asks for each tensor with the shape its config
 * implies; the first missing tensor or mismatched shape is remembered (sticky,
 * like eng_config) and reported once by eng_weights_check. Float32 tensors are
 * borrowed from the file mapping; F16/BF16/F64 ones are converted into buffers
 * the eng_weights owns. */
#ifndef ENG_WEIGHTS_H
#define ENG_WEIGHTS_H

#include <stddef.h>
#include <stdint.h>

#include "engine/error.h"
#include "engine/safetensors.h"

typedef struct eng_weights {
    eng_safetensors st;
    eng_err first;   /* first error; code 0 while none */
    void **owned;    /* converted copies, freed with the weights */
    size_t n_owned;
} eng_weights;

int eng_weights_open(eng_weights *w, const char *dir, eng_err *err);
void eng_weights_close(eng_weights *w);

/* Shape literal for eng_weights_f32: SHAPE(out, in) expands to the array and
 * its length. */
#define ENG_SHAPE(...) (const int64_t[]){__VA_ARGS__}, \
    (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t))

/* Returns the float32 data of the tensor named by the printf-style fmt, which
 * must have exactly the given shape; NULL (and a recorded error) otherwise. */
const float *eng_weights_f32(eng_weights *w, const int64_t *shape, int ndim, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Gives back the memory of a tensor eng_weights_f32 returned, once nothing
 * reads it any more (its layer now holds a converted copy): a converted
 * buffer is freed, pages of the file mapping are dropped from the resident
 * set. The pointer must not be used afterwards. */
void eng_weights_release(eng_weights *w, const float *data, size_t n_floats);

/* Converts a linear layer's weights to dtype to (ENG_F32: packed for our
 * kernels) and gives back the float32 copy it read from. With keep_source
 * (the tensor is also read elsewhere, e.g. GPT-2's LM head tied to its
 * embeddings) the copy stays valid, but its pages in the file mapping leave
 * the resident set until read again. */
struct eng_linear;
int eng_weights_convert_linear(eng_weights *w, struct eng_linear *l, eng_dtype to, int keep_source,
                               eng_err *err);

/* 1 when the named tensor exists. */
int eng_weights_has(const eng_weights *w, const char *name);

/* Returns 0, or the first recorded error copied into err. */
int eng_weights_check(const eng_weights *w, eng_err *err);

#endif
