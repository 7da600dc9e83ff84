/* Reading Hugging Face safetensors checkpoints, single-file or sharded.
 *
 * Files are mapped read-only and validated completely before any tensor is
 * handed out: header length, JSON, dtypes, shape x dtype size == byte span,
 * spans inside the file and not overlapping. Tensors are borrowed views into
 * the mappings, valid until eng_safetensors_close. */
#ifndef ENG_SAFETENSORS_H
#define ENG_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "engine/error.h"
#include "engine/strmap.h"
#include "engine/tensor.h"

#define ENG_MAX_DIMS 8

typedef struct eng_st_tensor {
    char *name;
    eng_dtype dtype;
    int ndim;
    int64_t shape[ENG_MAX_DIMS];
    uint64_t numel;
    const void *data; /* (numel) elements of dtype, inside a mapping; any alignment */
    size_t nbytes;
    int file;         /* index into eng_safetensors.files */
} eng_st_tensor;

typedef struct eng_st_file {
    char *path;
    void *map;
    size_t size;
} eng_st_file;

typedef struct eng_safetensors {
    eng_st_file *files;
    size_t n_files;
    eng_st_tensor *tensors;
    size_t n_tensors;
    eng_strmap by_name; /* name -> index into tensors */
} eng_safetensors;

/* Opens dir/model.safetensors, or the shards listed by
 * dir/model.safetensors.index.json. A folder with only pytorch_model.bin gets
 * an error that says how to convert it. On failure nothing stays open. */
int eng_safetensors_open(eng_safetensors *st, const char *dir, eng_err *err);

/* Opens and validates one file, adding its tensors (used by open, and by the
 * tests on crafted files). */
int eng_safetensors_add_file(eng_safetensors *st, const char *path, eng_err *err);

void eng_safetensors_close(eng_safetensors *st);

/* Returns the tensor called name, or NULL. */
const eng_st_tensor *eng_safetensors_find(const eng_safetensors *st, const char *name);

#endif
