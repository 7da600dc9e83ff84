/* srv_multipart_boundary + srv_multipart_parse (server/multipart.h).
 *
 * Input: byte 0 = the Content-Type's length n, the next n bytes the
 * Content-Type header value, the rest the body. The boundary is taken from
 * the fuzzed header when it yields one, else "XyZ", so the body parser runs
 * on every input. Checks the header's promises: parts point into the body,
 * strings are clean C strings, at most max_parts parts. */
#include "tests/fuzz/fuzz.h"

#include "server/multipart.h"

static void check_str(const char *s)
{
    if (!s)
        return;
    for (; *s; s++)
        FUZZ_CHECK((unsigned char)*s >= 0x20 || *s == '\t');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in in = {data, size};
    size_t n;
    const uint8_t *p = fuzz_take(&in, fuzz_byte(&in), &n);
    char *ctype = fuzz_cstr(p, n);
    char boundary[SRV_MULTIPART_BOUNDARY_MAX + 1];
    eng_err err = {0};
    int rc = srv_multipart_boundary(ctype, boundary, sizeof boundary, &err);
    if (rc == 0) {
        size_t len = strlen(boundary);
        FUZZ_CHECK(len >= 1 && len <= SRV_MULTIPART_BOUNDARY_MAX);
    } else {
        FUZZ_CHECK(rc == ENG_EFORMAT && err.code == rc && err.msg[0]);
        strcpy(boundary, "XyZ");
    }
    /* A too-small buffer is refused, never overrun. */
    char small[4];
    rc = srv_multipart_boundary(ctype, small, sizeof small, NULL);
    FUZZ_CHECK(rc != 0 || strlen(small) < sizeof small);
    free(ctype);

    uint8_t *body = (uint8_t *)fuzz_copy(in.p, in.n);
    size_t max_parts = 1 + (size % 8);
    srv_multipart mp;
    memset(&err, 0, sizeof err);
    rc = srv_multipart_parse(body, in.n, boundary, max_parts, &mp, &err);
    if (rc == 0) {
        FUZZ_CHECK(mp.n <= max_parts && (mp.n == 0) == (mp.parts == NULL));
        for (size_t i = 0; i < mp.n; i++) {
            const srv_part *part = &mp.parts[i];
            FUZZ_CHECK(part->name != NULL);
            check_str(part->name);
            check_str(part->filename);
            check_str(part->content_type);
            FUZZ_CHECK(part->data >= body && part->data + part->len <= body + in.n);
            FUZZ_CHECK(srv_multipart_get(&mp, part->name) != NULL);
        }
        srv_multipart_free(&mp);
        FUZZ_CHECK(mp.parts == NULL && mp.n == 0);
    } else {
        FUZZ_CHECK(mp.parts == NULL && mp.n == 0);
        FUZZ_CHECK(rc == ENG_EFORMAT || rc == ENG_ETOOLONG);
        FUZZ_CHECK(err.code == rc);
    }
    free(body);
    return 0;
}
