/* img_base64_decode (models/base64.h) on arbitrary text, with a limit taken
 * from the input. Oracle: a decode that succeeds re-encodes (standard
 * alphabet) to the input's data characters, so nothing is dropped or made up;
 * the length is the exact one the header promises. */
#include "tests/fuzz/fuzz.h"

#include <strings.h>

#include "models/base64.h"

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* The input's data characters in the standard alphabet, as an encoder would
 * write them (no padding, whitespace or data: prefix). */
static size_t payload_chars(const char *s, size_t len, char *out)
{
    size_t i = 0, n = 0;
    if (len >= 5 && strncasecmp(s, "data:", 5) == 0) {
        const char *comma = memchr(s, ',', len);
        i = comma ? (size_t)(comma - s) + 1 : len;
    }
    for (; i < len; i++) {
        char c = s[i] == '-' ? '+' : s[i] == '_' ? '/' : s[i];
        if (c && strchr(alphabet, c))
            out[n++] = c;
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in in = {data, size};
    uint8_t lim = fuzz_byte(&in);
    size_t max_out = lim == 255 ? SIZE_MAX : (size_t)lim * 8;
    char *text = fuzz_copy(in.p, in.n);
    uint8_t *out = (uint8_t *)data; /* must be overwritten */
    size_t out_len = 12345;
    eng_err err = {0};
    int rc = img_base64_decode(text, in.n, max_out, &out, &out_len, &err);
    if (rc == 0) {
        FUZZ_CHECK(out != NULL && out_len <= max_out);
        char *want = malloc(in.n + 1), *got = malloc(out_len / 3 * 4 + 8);
        if (!want || !got)
            abort();
        size_t n_want = payload_chars(text, in.n, want), n_got = 0;
        FUZZ_CHECK(out_len == n_want / 4 * 3 + (n_want % 4 ? n_want % 4 - 1 : 0));
        for (size_t i = 0; i < out_len; i += 3) {
            uint32_t v = (uint32_t)out[i] << 16;
            v |= i + 1 < out_len ? (uint32_t)out[i + 1] << 8 : 0;
            v |= i + 2 < out_len ? out[i + 2] : 0;
            size_t k = out_len - i >= 3 ? 4 : out_len - i + 1;
            for (size_t j = 0; j < k; j++)
                got[n_got++] = alphabet[(v >> (18 - 6 * j)) & 63];
        }
        /* The last character of a short group may carry stray low bits that
         * no encoder writes; the decoder drops them, as Python's does. */
        FUZZ_CHECK(n_got == n_want);
        if (n_got)
            FUZZ_CHECK(memcmp(got, want, n_got - (n_want % 4 ? 1 : 0)) == 0);
        free(want);
        free(got);
        free(out);
    } else {
        FUZZ_CHECK(out == NULL && out_len == 0);
        FUZZ_CHECK(rc == ENG_EFORMAT || rc == ENG_ETOOLONG);
        FUZZ_CHECK(err.code == rc && err.msg[0]);
    }
    free(text);
    return 0;
}
