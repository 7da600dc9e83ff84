/* eng_safetensors_add_file (engine/safetensors.h) on arbitrary files: the
 * input is written to a temporary file in /dev/shm (one name per process),
 * added, and the file removed at once (the loader's mapping outlives the
 * name), then the result is checked and closed.
 *
 * Checks what the loader promises of a file it accepts: every tensor's bytes
 * lie inside the file's data section, its size is shape x dtype size, it is
 * found by its name, and (see CHECK_OVERLAPS) no two tensors share bytes. */
#include "tests/fuzz/fuzz.h"

#include <fcntl.h>
#include <unistd.h>

#include "engine/safetensors.h"

/* Overlaps are checked pairwise here, independently of the loader's sorted
 * scan. Off until engine/safetensors.c's check_overlaps compares each span
 * with the furthest end seen so far rather than with its predecessor's end
 * only: an empty tensor sorted between two overlapping ones hides their
 * overlap (tests/fuzz/corpus/safetensors/overlap_hidden_by_empty is such a
 * file). Build with -DCHECK_OVERLAPS=1 to look for more. */
#ifndef CHECK_OVERLAPS
#define CHECK_OVERLAPS 1
#endif

static char path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    snprintf(path, sizeof path, "/dev/shm/predictd-fuzz-%d.safetensors", (int)getpid());
    return 0;
}

static void write_file(const uint8_t *data, size_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        perror(path);
        abort();
    }
    while (size) {
        ssize_t n = write(fd, data, size);
        if (n <= 0) {
            perror(path);
            abort();
        }
        data += n;
        size -= (size_t)n;
    }
    close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    write_file(data, size);
    eng_safetensors st;
    memset(&st, 0, sizeof st);
    eng_strmap_init(&st.by_name);
    eng_err err = {0};
    int rc = eng_safetensors_add_file(&st, path, &err);
    unlink(path);
    if (rc == 0) {
        FUZZ_CHECK(st.n_files == 1 && st.files[0].size == size);
        uint64_t header = 0;
        for (int i = 7; i >= 0; i--)
            header = header << 8 | data[i];
        const uint8_t *begin = (const uint8_t *)st.files[0].map + 8 + header;
        const uint8_t *end = (const uint8_t *)st.files[0].map + size;
        for (size_t i = 0; i < st.n_tensors; i++) {
            const eng_st_tensor *t = &st.tensors[i];
            const uint8_t *p = t->data;
            FUZZ_CHECK(t->ndim >= 0 && t->ndim <= ENG_MAX_DIMS);
            FUZZ_CHECK(p >= begin && p <= end && t->nbytes <= (size_t)(end - p));
            FUZZ_CHECK(t->numel * eng_dtypes[t->dtype].size == t->nbytes);
            FUZZ_CHECK(eng_safetensors_find(&st, t->name) == t);
            if (t->nbytes) /* reading every byte proves the span is mapped */
                FUZZ_CHECK(memcmp(p, data + (p - (const uint8_t *)st.files[0].map), t->nbytes) == 0);
#if CHECK_OVERLAPS
            for (size_t j = 0; j < i; j++) {
                const uint8_t *q = st.tensors[j].data;
                size_t qn = st.tensors[j].nbytes;
                FUZZ_CHECK(!t->nbytes || !qn || p + t->nbytes <= q || q + qn <= p);
            }
#endif
        }
    } else {
        FUZZ_CHECK(err.code == rc && err.msg[0]);
        FUZZ_CHECK(rc == ENG_EFORMAT || rc == ENG_ENOMEM);
    }
    eng_safetensors_close(&st);
    return 0;
}
