/* multipart/form-data: curl's bodies, RFC 7578/2046 corners, and hostile
 * input (every body is copied into a buffer of exactly its length, so an
 * ASan build catches any read past the end). */
#include <stdlib.h>

#include "server/multipart.h"
#include "tests/unit/test.h"

/* curl 7.88.1's boundary, from `curl -F image=@cat.bin -F candidate_labels=cat,dog`. */
#define CURL_B "------------------------a36456441758c9b2"

typedef struct form {
    uint8_t *body;
    size_t len;
    srv_multipart m;
    eng_err err;
    int rc;
} form;

static form parse_n(const char *body, size_t len, const char *boundary, size_t max_parts)
{
    form f = {.body = malloc(len ? len : 1), .len = len};
    memcpy(f.body, body, len);
    f.rc = srv_multipart_parse(f.body, len, boundary, max_parts, &f.m, &f.err);
    return f;
}

#define PARSE(lit, boundary) parse_n(lit, sizeof(lit) - 1, boundary, 16)

static void form_free(form *f)
{
    srv_multipart_free(&f->m);
    free(f->body);
}

static bool data_is(const srv_part *p, const char *want, size_t n)
{
    return p && p->len == n && memcmp(p->data, want, n) == 0;
}

/* The body curl wrote, with the file's bytes made as hostile as a file can
 * be: NULs, CRLF, "--", the boundary not at a line start, the boundary as
 * the prefix of a longer line, and the boundary after a bare LF. */
#define FILE_BYTES                                                                          \
    "AB\0\r\n--\r\n--x\xff"                                                                 \
    "x--" CURL_B "\r\n"                                                                     \
    "\r\n--" CURL_B "X\r\n"                                                                 \
    "\n--" CURL_B "\r\n"                                                                    \
    "\r\n-" CURL_B "\r\n\0"
static const char curl_body[] =
    "--" CURL_B "\r\n"
    "Content-Disposition: form-data; name=\"image\"; filename=\"cat.bin\"\r\n"
    "Content-Type: application/octet-stream\r\n"
    "\r\n" FILE_BYTES "\r\n"
    "--" CURL_B "\r\n"
    "Content-Disposition: form-data; name=\"candidate_labels\"\r\n"
    "\r\n"
    "cat,dog\r\n"
    "--" CURL_B "--\r\n";

TEST(multipart_curl_body)
{
    form f = PARSE(curl_body, CURL_B);
    CHECK_EQ_INT(f.rc, 0);
    CHECK_EQ_INT(f.m.n, 2);
    const srv_part *img = srv_multipart_get(&f.m, "image");
    const srv_part *labels = srv_multipart_get(&f.m, "candidate_labels");
    CHECK(img == &f.m.parts[0] && labels == &f.m.parts[1]);
    CHECK(data_is(img, FILE_BYTES, sizeof FILE_BYTES - 1));
    CHECK(img && img->data > f.body && img->data < f.body + f.len); /* not a copy */
    CHECK_STR(img ? img->filename : NULL, "cat.bin");
    CHECK_STR(img ? img->content_type : NULL, "application/octet-stream");
    CHECK(data_is(labels, "cat,dog", 7));
    CHECK(labels && !labels->filename && !labels->content_type);
    CHECK(srv_multipart_get(&f.m, "file") == NULL);
    form_free(&f);
    CHECK(f.m.parts == NULL && f.m.n == 0);
}

static int boundary_of(const char *ct, char *b, size_t cap)
{
    eng_err err;
    b[0] = '\0';
    return srv_multipart_boundary(ct, b, cap, &err);
}

TEST(multipart_boundary_header)
{
    char b[SRV_MULTIPART_BOUNDARY_MAX + 1];
    CHECK_EQ_INT(boundary_of("multipart/form-data; boundary=" CURL_B, b, sizeof b), 0);
    CHECK_STR(b, CURL_B);
    CHECK_EQ_INT(boundary_of("Multipart/Form-Data;BOUNDARY=\"a b:c\"", b, sizeof b), 0);
    CHECK_STR(b, "a b:c");
    CHECK_EQ_INT(boundary_of("multipart/form-data; charset=\"x;boundary=no\" ; Boundary = yes ; q=1", b,
                             sizeof b), 0);
    CHECK_STR(b, "yes");
    /* A backslash escapes only '"' and '\'; kept before anything else, it is no bchar. */
    CHECK_EQ_INT(boundary_of("multipart/form-data; boundary=\"a\\'b\"", b, sizeof b), ENG_EFORMAT);
    CHECK_EQ_INT(boundary_of("multipart/form-data; boundary=\"a'b\"", b, sizeof b), 0);
    CHECK_STR(b, "a'b");

    CHECK_EQ_INT(boundary_of(NULL, b, sizeof b), ENG_EFORMAT);
    CHECK_EQ_INT(boundary_of("application/json", b, sizeof b), ENG_EFORMAT);
    CHECK_EQ_INT(boundary_of("multipart/mixed; boundary=x", b, sizeof b), ENG_EFORMAT);
    CHECK_EQ_INT(boundary_of("multipart/form-data", b, sizeof b), ENG_EFORMAT);
    CHECK_EQ_INT(boundary_of("multipart/form-data; boundary=", b, sizeof b), ENG_EFORMAT);
    CHECK_EQ_INT(boundary_of("multipart/form-data; boundary=\"\"", b, sizeof b), ENG_EFORMAT);
    CHECK_EQ_INT(boundary_of("multipart/form-data; boundary=\"abc", b, sizeof b), ENG_EFORMAT);
    CHECK_EQ_INT(boundary_of("multipart/form-data; boundary=\"ab \"", b, sizeof b), ENG_EFORMAT);
    CHECK_EQ_INT(boundary_of("multipart/form-data; boundary=a; boundary=b", b, sizeof b), ENG_EFORMAT);
    CHECK_EQ_INT(boundary_of("multipart/form-data; boundary=a<b", b, sizeof b), ENG_EFORMAT);
    CHECK_EQ_INT(boundary_of("multipart/form-data; boundary=abc", b, 3), ENG_EINVAL);
}

TEST(multipart_boundary_too_long)
{
    char b[256], ct[256];
    char seventy[71];
    memset(seventy, 'x', 70);
    seventy[70] = '\0';
    snprintf(ct, sizeof ct, "multipart/form-data; boundary=%s", seventy);
    CHECK_EQ_INT(boundary_of(ct, b, sizeof b), 0);
    CHECK_STR(b, seventy);
    snprintf(ct, sizeof ct, "multipart/form-data; boundary=\"%sx\"", seventy);
    CHECK_EQ_INT(boundary_of(ct, b, sizeof b), ENG_EFORMAT);

    char body[512];
    int n = snprintf(body, sizeof body,
                     "--%sx\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--%sx--\r\n",
                     seventy, seventy);
    char longer[72];
    snprintf(longer, sizeof longer, "%sx", seventy);
    form f = parse_n(body, (size_t)n, longer, 16);
    CHECK_EQ_INT(f.rc, ENG_EFORMAT);
    form_free(&f);
    f = parse_n(body, (size_t)n, "", 16);
    CHECK_EQ_INT(f.rc, ENG_EFORMAT);
    form_free(&f);
    n = snprintf(body, sizeof body,
                 "--%s\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--%s--\r\n", seventy,
                 seventy);
    f = parse_n(body, (size_t)n, seventy, 16);
    CHECK_EQ_INT(f.rc, 0);
    CHECK(data_is(srv_multipart_get(&f.m, "a"), "v", 1));
    form_free(&f);
}

TEST(multipart_preamble_epilogue_and_padding)
{
    form f = PARSE("This is the preamble. --b is not a boundary here\r\n--bb\r\n"
                   "--b \t\r\n"
                   "content-disposition: FORM-DATA; NAME=a\r\n"
                   "X-Ignored: yes\r\n"
                   "\r\n"
                   "one\r\n"
                   "--b  \r\n"
                   "Content-Disposition: form-data; name=\"empty\"\r\n"
                   "\r\n"
                   "\r\n"
                   "--b\r\n"
                   "Content-Disposition: form-data; name=\"nodata\"\r\n"
                   "\r\n"
                   "--b-- \t\r\n"
                   "This is the epilogue.\r\n--b\r\nContent-Disposition: form-data; name=late\r\n",
                   "b");
    CHECK_EQ_INT(f.rc, 0);
    CHECK_EQ_INT(f.m.n, 3);
    CHECK(data_is(srv_multipart_get(&f.m, "a"), "one", 3));
    CHECK(data_is(srv_multipart_get(&f.m, "empty"), "", 0));
    CHECK(data_is(srv_multipart_get(&f.m, "nodata"), "", 0));
    CHECK(srv_multipart_get(&f.m, "late") == NULL);
    form_free(&f);

    /* A closing boundary at the very end of the body, no line break. */
    f = PARSE("--b\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--b--", "b");
    CHECK_EQ_INT(f.rc, 0);
    CHECK(data_is(srv_multipart_get(&f.m, "a"), "x", 1));
    form_free(&f);
}

TEST(multipart_lf_line_endings)
{
    form f = PARSE("preamble\n"
                   "--b\n"
                   "Content-Disposition: form-data; name=\"a\"\n"
                   "\n"
                   "hello\n"
                   "--b\n"
                   "Content-Disposition: form-data; name=\"f\"; filename=\"x.txt\"\n"
                   "Content-Type: text/plain\r\n"
                   "\n"
                   "line1\r\nline2\n--bX\n"
                   "--b--\n",
                   "b");
    CHECK_EQ_INT(f.rc, 0);
    CHECK_EQ_INT(f.m.n, 2);
    CHECK(data_is(srv_multipart_get(&f.m, "a"), "hello", 5));
    const srv_part *p = srv_multipart_get(&f.m, "f");
    CHECK(data_is(p, "line1\r\nline2\n--bX", 17));
    CHECK_STR(p ? p->content_type : NULL, "text/plain");
    form_free(&f);
}

TEST(multipart_missing_final_boundary)
{
    form f = PARSE("--b\r\nContent-Disposition: form-data; name=a\r\n\r\nvalue\r\n", "b");
    CHECK_EQ_INT(f.rc, ENG_EFORMAT);
    CHECK(strstr(f.err.msg, "closing boundary") != NULL);
    CHECK(f.m.parts == NULL && f.m.n == 0);
    form_free(&f);
    /* Cut inside the closing boundary, and a boundary line with junk after it. */
    f = PARSE("--b\r\nContent-Disposition: form-data; name=a\r\n\r\nvalue\r\n--b-", "b");
    CHECK_EQ_INT(f.rc, ENG_EFORMAT);
    form_free(&f);
    f = PARSE("--b\r\nContent-Disposition: form-data; name=a\r\n\r\nvalue\r\n--b--x", "b");
    CHECK_EQ_INT(f.rc, ENG_EFORMAT);
    form_free(&f);
    /* Another boundary entirely. */
    f = PARSE(curl_body, "other");
    CHECK_EQ_INT(f.rc, ENG_EFORMAT);
    CHECK(strstr(f.err.msg, "no boundary line") != NULL);
    form_free(&f);
}

TEST(multipart_no_content_disposition)
{
    static const char *bad[] = {
        "--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--\r\n",
        "--b\r\n\r\nx\r\n--b--\r\n",
        "--b\r\n--b--\r\n",
        "--b\r\nContent-Disposition: attachment; name=a\r\n\r\nx\r\n--b--\r\n",
        "--b\r\nContent-Disposition: form-data; filename=a\r\n\r\nx\r\n--b--\r\n",
        "--b\r\nContent-Disposition: form-data; name=a; name=b\r\n\r\nx\r\n--b--\r\n",
        "--b\r\nContent-Disposition: form-data; name=a\r\nContent-Disposition: form-data; name=b\r\n"
        "\r\nx\r\n--b--\r\n",
        "--b\r\nContent-Disposition: form-data; name=\"a\r\n\r\nx\r\n--b--\r\n",
        "--b\r\nContent-Disposition: form-data; name=a junk\r\n\r\nx\r\n--b--\r\n",
        "--b\r\nContent-Disposition: form-data;\r\n name=a\r\n\r\nx\r\n--b--\r\n",
        "--b\r\nContent-Disposition form-data; name=a\r\n\r\nx\r\n--b--\r\n",
        "--b\r\nContent-Disposition: form-data; name=a\r\n--b--\r\n", /* line cut by the boundary */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        form f = parse_n(bad[i], strlen(bad[i]), "b", 16);
        CHECK_MSG(f.rc == ENG_EFORMAT && f.err.msg[0], "case %zu: rc %d", i, f.rc);
        form_free(&f);
    }
    /* A NUL would silently cut the name short in C. */
    form f = PARSE("--b\r\nContent-Disposition: form-data; name=\"a\0b\"\r\n\r\nx\r\n--b--\r\n", "b");
    CHECK_EQ_INT(f.rc, ENG_EFORMAT);
    form_free(&f);
}

TEST(multipart_quoting)
{
    form f = PARSE("--b\r\n"
                   "Content-Disposition: form-data; name=\"q\\\"uo\\\\te; d\"; filename=\"C:\\dir\\cat.jpg\"\r\n"
                   "\r\n1\r\n--b\r\n"
                   "Content-Disposition:form-data;name=tok;filename=f.png\r\n"
                   "Content-Type:  image/png ; x=1  \r\n"
                   "\r\n2\r\n--b\r\n"
                   "Content-Disposition: form-data; name=\"caf\xc3\xa9\"; filename=\"\"\r\n"
                   "\r\n3\r\n--b--\r\n",
                   "b");
    CHECK_EQ_INT(f.rc, 0);
    const srv_part *q = srv_multipart_get(&f.m, "q\"uo\\te; d");
    CHECK(data_is(q, "1", 1));
    CHECK_STR(q ? q->filename : NULL, "C:\\dir\\cat.jpg");
    const srv_part *t = srv_multipart_get(&f.m, "tok");
    CHECK(data_is(t, "2", 1));
    CHECK_STR(t ? t->filename : NULL, "f.png");
    CHECK_STR(t ? t->content_type : NULL, "image/png ; x=1");
    const srv_part *u = srv_multipart_get(&f.m, "caf\xc3\xa9");
    CHECK_STR(u ? u->filename : NULL, "");
    form_free(&f);
}

TEST(multipart_filename_ext)
{
    form f = PARSE("--b\r\nContent-Disposition: form-data; name=img; filename=\"cafe.jpg\"; "
                   "filename*=utf-8'fr'caf%C3%a9%20%E2%82%AC.jpg\r\n\r\nx\r\n--b--\r\n",
                   "b");
    CHECK_EQ_INT(f.rc, 0);
    const srv_part *p = srv_multipart_get(&f.m, "img");
    CHECK_STR(p ? p->filename : NULL, "caf\xc3\xa9 \xe2\x82\xac.jpg");
    form_free(&f);
    f = PARSE("--b\r\nContent-Disposition: form-data; filename*=UTF-8''a.jpg; name=img\r\n\r\nx\r\n--b--\r\n",
              "b");
    CHECK_EQ_INT(f.rc, 0);
    CHECK_STR(f.m.n ? f.m.parts[0].filename : NULL, "a.jpg");
    form_free(&f);

    static const char *bad[] = {"ISO-8859-1''caf%E9", "UTF-8'a.jpg", "a.jpg", "UTF-8''a%2", "UTF-8''a%zz",
                                "UTF-8''a%00b", "UTF-8''a%0D%0Ab", "UTF-8''a%"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char body[256];
        int n = snprintf(body, sizeof body,
                         "--b\r\nContent-Disposition: form-data; name=img; filename*=%s\r\n\r\nx\r\n--b--\r\n",
                         bad[i]);
        f = parse_n(body, (size_t)n, "b", 16);
        CHECK_MSG(f.rc == ENG_EFORMAT, "filename*=%s: rc %d", bad[i], f.rc);
        form_free(&f);
    }
}

static form parts_form(size_t parts, size_t max_parts)
{
    static char body[4096];
    size_t n = 0;
    for (size_t i = 0; i < parts; i++)
        n += (size_t)snprintf(body + n, sizeof body - n,
                              "--b\r\nContent-Disposition: form-data; name=p%zu\r\n\r\n%zu\r\n", i, i);
    n += (size_t)snprintf(body + n, sizeof body - n, "--b--\r\n");
    return parse_n(body, n, "b", max_parts);
}

TEST(multipart_too_many_parts)
{
    form f = parts_form(8, 8);
    CHECK_EQ_INT(f.rc, 0);
    CHECK_EQ_INT(f.m.n, 8);
    CHECK(data_is(srv_multipart_get(&f.m, "p7"), "7", 1));
    form_free(&f);
    f = parts_form(9, 8);
    CHECK_EQ_INT(f.rc, ENG_ETOOLONG);
    CHECK(f.m.parts == NULL && f.m.n == 0);
    form_free(&f);
    f = parts_form(1, 0);
    CHECK_EQ_INT(f.rc, ENG_ETOOLONG);
    form_free(&f);
}

/* A part whose header lines take exactly hdr_bytes, in lines of at most 100. */
static form header_form(size_t hdr_bytes)
{
    static const char cd[] = "Content-Disposition: form-data; name=a\r\n";
    size_t cap = hdr_bytes + 64, n = 0;
    char *body = malloc(cap);
    n += (size_t)snprintf(body, cap, "--b\r\n%s", cd);
    for (size_t left = hdr_bytes - (sizeof cd - 1); left > 0;) {
        size_t line = left > 100 ? 100 : left;
        if (left - line > 0 && left - line < 4)
            line -= 4; /* keep the last line long enough for "X:" and CRLF */
        memcpy(body + n, "X:", 2);
        memset(body + n + 2, 'y', line - 4);
        memcpy(body + n + line - 2, "\r\n", 2);
        n += line;
        left -= line;
    }
    n += (size_t)snprintf(body + n, cap - n, "\r\nv\r\n--b--\r\n");
    form f = parse_n(body, n, "b", 16);
    free(body);
    return f;
}

TEST(multipart_header_section_too_long)
{
    form f = header_form(SRV_MULTIPART_HEADER_MAX);
    CHECK_EQ_INT(f.rc, 0);
    CHECK(data_is(srv_multipart_get(&f.m, "a"), "v", 1));
    form_free(&f);
    f = header_form(SRV_MULTIPART_HEADER_MAX + 1);
    CHECK_EQ_INT(f.rc, ENG_EFORMAT);
    CHECK(strstr(f.err.msg, "longer than") != NULL);
    form_free(&f);
    f = header_form(3 * SRV_MULTIPART_HEADER_MAX);
    CHECK_EQ_INT(f.rc, ENG_EFORMAT);
    form_free(&f);

    /* One endless header line, and headers that never end before the data. */
    size_t len = 4 * SRV_MULTIPART_HEADER_MAX;
    char *body = malloc(len + 16);
    memcpy(body, "--b\r\nX: ", 8);
    memset(body + 8, 'y', len - 8);
    memcpy(body + len, "\r\n--b--\r\n", 9);
    f = parse_n(body, len + 9, "b", 16);
    CHECK_EQ_INT(f.rc, ENG_EFORMAT);
    form_free(&f);
    free(body);
}

TEST(multipart_empty_body)
{
    form f = parse_n("", 0, "b", 16);
    CHECK_EQ_INT(f.rc, ENG_EFORMAT);
    form_free(&f);
    eng_err err;
    srv_multipart m = {0};
    CHECK_EQ_INT(srv_multipart_parse(NULL, 0, "b", 16, &m, &err), ENG_EFORMAT);
    /* A form with no fields is what a browser sends for an empty form. */
    f = PARSE("--b--\r\n", "b");
    CHECK_EQ_INT(f.rc, 0);
    CHECK_EQ_INT(f.m.n, 0);
    CHECK(srv_multipart_get(&f.m, "a") == NULL);
    form_free(&f);
}

/* ---- hostile input ---- */

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* One random edit of buf[0..*len) (capacity cap): truncate, overwrite bytes,
 * delete a range, duplicate a range, or insert a boundary-like fragment. */
static void mutate(uint8_t *buf, size_t *len, size_t cap, uint64_t *rng)
{
    static const char *frags[] = {"\r\n", "\n", "--", "--" CURL_B, "\r\n--" CURL_B "\r\n",
                                  "\r\n--" CURL_B "--", "\"", "\\", ";", "%", "\r\n\r\n",
                                  "Content-Disposition: form-data; name=", "filename*=UTF-8''%"};
    size_t n = *len, at = n ? rng_next(rng) % n : 0, span = n ? rng_next(rng) % (n - at) + 1 : 0;
    switch (rng_next(rng) % 5) {
    case 0:
        *len = at;
        break;
    case 1:
        for (int i = 0; i < 4 && n; i++)
            buf[rng_next(rng) % n] = (uint8_t)rng_next(rng);
        break;
    case 2:
        memmove(buf + at, buf + at + span, n - at - span);
        *len = n - span;
        break;
    case 3:
        span = span < cap - n ? span : cap - n;
        memmove(buf + at + span, buf + at, n - at);
        *len = n + span;
        break;
    default: {
        const char *fr = frags[rng_next(rng) % (sizeof frags / sizeof *frags)];
        size_t fl = strlen(fr) < cap - n ? strlen(fr) : cap - n;
        memmove(buf + at + fl, buf + at, n - at);
        memcpy(buf + at, fr, fl);
        *len = n + fl;
    }
    }
}

static void check_result(const form *f)
{
    CHECK_MSG(f->rc == 0 || f->rc == ENG_EFORMAT || f->rc == ENG_ETOOLONG, "rc %d", f->rc);
    if (f->rc != 0) {
        CHECK(f->m.parts == NULL && f->m.n == 0 && f->err.msg[0]);
        return;
    }
    CHECK(f->m.n <= 4);
    for (size_t i = 0; i < f->m.n; i++) {
        const srv_part *p = &f->m.parts[i];
        CHECK(p->name && p->data >= f->body && p->len <= f->len &&
              (size_t)(p->data - f->body) <= f->len - p->len);
        CHECK(srv_multipart_get(&f->m, p->name) != NULL);
    }
}

TEST(multipart_fuzz_mutations)
{
    uint64_t rng = 0x9e3779b97f4a7c15u;
    uint8_t buf[2 * sizeof curl_body];
    int ok = 0, refused = 0;
    for (int iter = 0; iter < 2000; iter++) {
        size_t len = sizeof curl_body - 1;
        memcpy(buf, curl_body, len);
        int edits = 1 + (int)(rng_next(&rng) % 3);
        for (int e = 0; e < edits; e++)
            mutate(buf, &len, sizeof buf, &rng);
        form f = parse_n((const char *)buf, len, CURL_B, 4);
        check_result(&f);
        ok += f.rc == 0;
        refused += f.rc != 0;
        form_free(&f);

        char ct[128] = "multipart/form-data; boundary=\"" CURL_B "\"", b[SRV_MULTIPART_BOUNDARY_MAX + 1];
        size_t ct_len = strlen(ct);
        mutate((uint8_t *)ct, &ct_len, sizeof ct - 1, &rng);
        ct[ct_len] = '\0';
        int rc = boundary_of(ct, b, sizeof b);
        CHECK_MSG(rc == 0 ? strlen(b) >= 1 && strlen(b) <= SRV_MULTIPART_BOUNDARY_MAX : rc == ENG_EFORMAT,
                  "boundary rc %d for %s", rc, ct);
    }
    /* Both outcomes must occur, or the mutations are not exercising the parser. */
    CHECK_MSG(ok > 50 && refused > 50, "%d parsed, %d refused", ok, refused);
}
