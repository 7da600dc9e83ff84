/* multipart/form-data (RFC 7578 over RFC 2046): finding the boundary lines,
 * then reading each part's headers.
 *
 * Parsing takes two passes over the body. The first only locates the parts,
 * so that too many parts or a missing closing boundary are refused before
 * anything is allocated, and so that one allocation can be sized for every
 * part and string; the second reads the headers into it. Both passes walk the
 * body with the same scanner, so they cannot disagree about where parts are. */
#include "server/multipart.h"

#include <assert.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A part copies at most four strings out of its headers: name, filename,
 * filename* and Content-Type (each may appear once), each with its NUL. */
#define PART_STRINGS 4

static bool is_ws(int c)
{
    return c == ' ' || c == '\t';
}

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && is_ws(*p))
        p++;
    return p;
}

static bool span_is(const char *s, size_t n, const char *lit)
{
    return n == strlen(lit) && strncasecmp(s, lit, n) == 0;
}

/* ---- header parameters: `; key=value` with token or quoted-string values ---- */

typedef struct param {
    const char *key, *val;
    size_t key_len, val_len;
    bool quoted; /* val is the inside of a quoted-string, its escapes not yet undone */
} param;

/* In a quoted-string a backslash escapes only '"' and '\'. Before anything
 * else it is kept: old browsers send Windows paths (filename="C:\cat.jpg")
 * unescaped, and RFC 7578 expects such names to survive. */
static bool is_escape(const char *p, const char *end)
{
    return p[0] == '\\' && p + 1 < end && (p[1] == '"' || p[1] == '\\');
}

static int param_value(const char **p, const char *end, param *out, eng_err *err)
{
    const char *s = *p;
    out->quoted = s < end && *s == '"';
    if (out->quoted) {
        out->val = ++s;
        while (s < end && *s != '"')
            s += is_escape(s, end) ? 2 : 1;
        if (s == end)
            return eng_err_set(err, ENG_EFORMAT, "parameter %.*s has an unterminated quoted string",
                               (int)out->key_len, out->key);
        out->val_len = (size_t)(s - out->val);
        s++;
    } else {
        out->val = s;
        while (s < end && *s != ';' && *s != '"' && !is_ws(*s))
            s++;
        out->val_len = (size_t)(s - out->val);
        if (out->val_len == 0)
            return eng_err_set(err, ENG_EFORMAT, "parameter %.*s has no value",
                               (int)out->key_len, out->key);
    }
    *p = s;
    return 0;
}

/* Reads the parameter at *p and moves *p past it. Returns 1 with *out
 * filled, 0 when only whitespace (or a stray trailing ';') is left, or
 * ENG_EFORMAT. */
static int param_next(const char **p, const char *end, param *out, eng_err *err)
{
    const char *s = skip_ws(*p, end);
    if (s == end)
        return 0;
    if (*s != ';')
        return eng_err_set(err, ENG_EFORMAT, "expected ';' before a parameter, found '%c'", *s);
    s = skip_ws(s + 1, end);
    if (s == end)
        return 0;
    out->key = s;
    while (s < end && *s != '=' && *s != ';' && !is_ws(*s))
        s++;
    out->key_len = (size_t)(s - out->key);
    s = skip_ws(s, end);
    if (out->key_len == 0 || s == end || *s != '=')
        return eng_err_set(err, ENG_EFORMAT, "parameter '%.*s' is not key=value",
                           (int)(out->key_len ? out->key_len : 1), out->key);
    s = skip_ws(s + 1, end);
    int rc = param_value(&s, end, out, err);
    *p = s;
    return rc ? rc : 1;
}

/* Copies a parameter's value into dst (room for val_len + 1 bytes), undoing
 * quoted-string escapes, and returns its length. */
static size_t param_copy(const param *pr, char *dst)
{
    const char *s = pr->val, *end = pr->val + pr->val_len;
    size_t n = 0;
    while (s < end) {
        if (pr->quoted && is_escape(s, end))
            s++;
        dst[n++] = *s++;
    }
    dst[n] = '\0';
    return n;
}

/* Reads the media type at the start of a header value and moves *p past it. */
static void media_type(const char **p, const char *end, const char **type, size_t *len)
{
    const char *s = skip_ws(*p, end);
    *type = s;
    while (s < end && *s != ';' && !is_ws(*s))
        s++;
    *len = (size_t)(s - *type);
    *p = s;
}

/* ---- the boundary ---- */

/* RFC 2046's bchars: what a boundary may be made of; it may not end in a space. */
static int boundary_check(const char *b, size_t n, eng_err *err)
{
    static const char extra[] = "'()+_,-./:=? ";
    if (n < 1 || n > SRV_MULTIPART_BOUNDARY_MAX)
        return eng_err_set(err, ENG_EFORMAT, "the boundary is %zu characters; it must be 1-%d", n,
                           SRV_MULTIPART_BOUNDARY_MAX);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)b[i];
        bool alnum = (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
        if (!alnum && !memchr(extra, c, sizeof extra - 1))
            return eng_err_set(err, ENG_EFORMAT, "the boundary has a character (0x%02x) RFC 2046 forbids", c);
    }
    if (b[n - 1] == ' ')
        return eng_err_set(err, ENG_EFORMAT, "the boundary ends with a space");
    return 0;
}

int srv_multipart_boundary(const char *content_type, char *boundary, size_t cap, eng_err *err)
{
    if (!content_type)
        return eng_err_set(err, ENG_EFORMAT, "no Content-Type; expected multipart/form-data");
    const char *p = content_type, *end = p + strlen(p), *type;
    size_t type_len;
    media_type(&p, end, &type, &type_len);
    if (!span_is(type, type_len, "multipart/form-data"))
        return eng_err_set(err, ENG_EFORMAT, "Content-Type is '%.*s', expected multipart/form-data",
                           (int)(type_len > 64 ? 64 : type_len), type);
    /* Each escape pair decodes to one character, so a longer raw value
     * cannot decode to a boundary that fits the limit. */
    char tmp[2 * SRV_MULTIPART_BOUNDARY_MAX + 1];
    size_t n = 0;
    bool found = false;
    param pr;
    int rc;
    while ((rc = param_next(&p, end, &pr, err)) == 1) {
        if (!span_is(pr.key, pr.key_len, "boundary"))
            continue;
        if (found)
            return eng_err_set(err, ENG_EFORMAT, "Content-Type gives the boundary twice");
        if (pr.val_len > 2 * SRV_MULTIPART_BOUNDARY_MAX)
            return eng_err_set(err, ENG_EFORMAT, "the boundary is longer than %d characters",
                               SRV_MULTIPART_BOUNDARY_MAX);
        n = param_copy(&pr, tmp);
        found = true;
    }
    if (rc < 0)
        return rc;
    if (!found)
        return eng_err_set(err, ENG_EFORMAT, "Content-Type multipart/form-data has no boundary");
    if ((rc = boundary_check(tmp, n, err)) != 0)
        return rc;
    if (n >= cap)
        return eng_err_set(err, ENG_EINVAL, "a %zu-character boundary does not fit in %zu bytes", n, cap);
    memcpy(boundary, tmp, n + 1);
    return 0;
}

/* ---- locating parts ---- */

typedef struct scan {
    const uint8_t *body;
    size_t len;
    const char *boundary;
    char delim[4 + SRV_MULTIPART_BOUNDARY_MAX]; /* "\r\n--" boundary, not NUL-terminated */
    size_t dash_len;    /* strlen("--" boundary) */
    size_t lf;          /* 1 if the body uses LF line breaks: parts then end at delim + 1 */
    size_t pos;         /* where the next part starts */
    bool closed;        /* the closing boundary has been read */
} scan;

/* One part as offsets into the body. */
typedef struct span {
    size_t hdr, hdr_end; /* the header lines, each ending in a line break */
    size_t data, data_end;
} span;

enum { DELIM_NO, DELIM_PART, DELIM_CLOSE };

/* The first occurrence of needle (a line break, "--", the boundary) in
 * body[from..len), or SIZE_MAX. A plain loop costs a nanosecond or two a byte
 * whatever the data holds; memmem and memchr are faster on ordinary data but
 * pay a call per candidate, 20-30 times more on a body made of CRs or of
 * boundary lookalikes. The boundary holds no line break, so a partial match
 * never hides the start of the next one and the compares add up to O(len). */
static size_t find(const scan *s, size_t from, const char *needle, size_t n)
{
    if (from >= s->len || s->len - from < n)
        return SIZE_MAX;
    const uint8_t *p = s->body + from, *last = s->body + s->len - n;
    uint8_t c0 = (uint8_t)needle[0], c1 = (uint8_t)needle[1];
    for (; p <= last; p++)
        if (p[0] == c0 && p[1] == c1 && memcmp(p + 2, needle + 2, n - 2) == 0)
            return (size_t)(p - s->body);
    return SIZE_MAX;
}

/* Classifies what follows a "--boundary" that ends just before i: "--" (the
 * closing delimiter, then a line break or the end of the body), or optional
 * whitespace and a line break (a part follows), or anything else (this was
 * not a delimiter, just a line that starts like one). *next is where the line
 * ends; *crlf says whether it ended with CRLF. */
static int delim_tail(const scan *s, size_t i, size_t *next, bool *crlf)
{
    const uint8_t *b = s->body;
    bool close = i + 2 <= s->len && b[i] == '-' && b[i + 1] == '-';
    i += close ? 2 : 0;
    while (i < s->len && is_ws(b[i]))
        i++;
    *crlf = i + 2 <= s->len && b[i] == '\r' && b[i + 1] == '\n';
    if (*crlf)
        i += 2;
    else if (i < s->len && b[i] == '\n')
        i++;
    else if (!close || i != s->len)
        return DELIM_NO;
    *next = i;
    return close ? DELIM_CLOSE : DELIM_PART;
}

/* Sets up the scan and finds the first boundary line, at the very start of
 * the body or after a preamble; its line break tells whether the body uses
 * CRLF or LF. */
static int scan_init(scan *s, const uint8_t *body, size_t len, const char *boundary, eng_err *err)
{
    size_t n = strlen(boundary), at = 0, next = 0;
    int kind = DELIM_NO, rc = boundary_check(boundary, n, err);
    if (rc)
        return rc;
    *s = (scan){.body = body, .len = len, .boundary = boundary, .dash_len = n + 2};
    memcpy(s->delim, "\r\n--", 4);
    memcpy(s->delim + 4, boundary, n);
    bool crlf = false, first = len >= s->dash_len && memcmp(body, s->delim + 2, s->dash_len) == 0;
    for (size_t from = 0; kind == DELIM_NO; from = at + s->dash_len, first = false) {
        size_t hit = first ? 0 : find(s, from, s->delim + 1, s->dash_len + 1);
        if (hit == SIZE_MAX)
            return eng_err_set(err, ENG_EFORMAT, "the body has no boundary line --%s", boundary);
        at = first ? 0 : hit + 1;
        kind = delim_tail(s, at + s->dash_len, &next, &crlf);
    }
    s->lf = !crlf;
    s->pos = next;
    s->closed = kind == DELIM_CLOSE;
    return 0;
}

/* Splits body[start..end) into header lines and data at the first empty line,
 * looking no further than the header limit. Header lines that run straight
 * into the next boundary are a part with no data (RFC 2046 makes the blank
 * line optional then). */
static int split_headers(const scan *s, size_t start, size_t end, span *sp, eng_err *err)
{
    const uint8_t *b = s->body;
    size_t win = end - start > SRV_MULTIPART_HEADER_MAX + 2 ? start + SRV_MULTIPART_HEADER_MAX + 2 : end;
    size_t i = start, blank = 0;
    while (i < win) {
        blank = b[i] == '\n' ? 1 : b[i] == '\r' && i + 1 < end && b[i + 1] == '\n' ? 2 : 0;
        const uint8_t *nl = blank ? NULL : memchr(b + i, '\n', win - i);
        if (!nl)
            break;
        i = (size_t)(nl - b) + 1;
    }
    *sp = (span){.hdr = start, .hdr_end = blank ? i : end, .data = i + blank, .data_end = end};
    if (sp->hdr_end - start > SRV_MULTIPART_HEADER_MAX || (!blank && win < end))
        return eng_err_set(err, ENG_EFORMAT, "a part's headers are longer than %d bytes",
                           SRV_MULTIPART_HEADER_MAX);
    if (!blank && i != end)
        return eng_err_set(err, ENG_EFORMAT, "a part's headers are not ended by a blank line");
    return 0;
}

/* Locates the next part. Returns 1 with *sp filled, 0 after the closing
 * boundary, or ENG_EFORMAT. */
static int scan_next(scan *s, span *sp, eng_err *err)
{
    if (s->closed)
        return 0;
    size_t needle_len = s->dash_len + 2 - s->lf, from = s->pos, hit = 0, next = 0;
    bool crlf;
    int kind = DELIM_NO;
    /* Two matches of the needle cannot overlap (see find), so resuming after
     * a false one keeps the scan O(len). */
    while (kind == DELIM_NO) {
        hit = find(s, from, s->delim + s->lf, needle_len);
        if (hit == SIZE_MAX)
            return eng_err_set(err, ENG_EFORMAT, "the body ends without the closing boundary --%s--",
                               s->boundary);
        kind = delim_tail(s, hit + needle_len, &next, &crlf);
        from = hit + needle_len;
    }
    int rc = split_headers(s, s->pos, hit, sp, err);
    s->pos = next;
    s->closed = kind == DELIM_CLOSE;
    return rc ? rc : 1;
}

/* ---- reading part headers ---- */

/* Where a part's strings go: a slice of the result's one allocation. */
typedef struct store {
    char *p, *end;
} store;

static const char *store_param(store *st, const param *pr)
{
    assert(pr->val_len + 1 <= (size_t)(st->end - st->p));
    char *dst = st->p;
    st->p += param_copy(pr, dst) + 1;
    return dst;
}

static int hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* filename*=UTF-8'lang'percent-encoded (RFC 5987). Control characters,
 * NULs included, are refused: a filename ends up in logs and C strings. */
static int ext_value(store *st, const param *pr, const char **out, eng_err *err)
{
    const char *v = pr->val, *end = v + pr->val_len;
    const char *q1 = memchr(v, '\'', pr->val_len);
    const char *q2 = q1 ? memchr(q1 + 1, '\'', (size_t)(end - q1 - 1)) : NULL;
    if (!q2)
        return eng_err_set(err, ENG_EFORMAT, "filename* is not charset'language'value (RFC 5987)");
    if (!span_is(v, (size_t)(q1 - v), "UTF-8"))
        return eng_err_set(err, ENG_EFORMAT, "filename* charset '%.*s' is not supported; use UTF-8",
                           (int)(q1 - v > 32 ? 32 : q1 - v), v);
    assert(pr->val_len + 1 <= (size_t)(st->end - st->p));
    char *dst = st->p;
    size_t n = 0;
    for (const char *s = q2 + 1; s < end; s++) {
        int c = (unsigned char)*s;
        if (c == '%') {
            int hi = s + 2 < end ? hex_digit(s[1]) : -1, lo = s + 2 < end ? hex_digit(s[2]) : -1;
            if (hi < 0 || lo < 0)
                return eng_err_set(err, ENG_EFORMAT, "filename* has a bad %%-escape");
            c = hi * 16 + lo;
            s += 2;
        }
        if (c < 0x20 || c == 0x7f)
            return eng_err_set(err, ENG_EFORMAT, "filename* decodes to a control character");
        dst[n++] = (char)c;
    }
    dst[n] = '\0';
    st->p += n + 1;
    *out = dst;
    return 0;
}

/* Content-Disposition: form-data and its parameters. name is required;
 * filename* wins over filename. Each may be given once: two names would let
 * us and a proxy in front of us disagree about what the field is. */
static int disposition(const char *p, const char *end, srv_part *part, store *st, eng_err *err)
{
    const char *type, *ext = NULL;
    size_t type_len;
    if (part->name)
        return eng_err_set(err, ENG_EFORMAT, "a part has two Content-Disposition headers");
    media_type(&p, end, &type, &type_len);
    if (!span_is(type, type_len, "form-data"))
        return eng_err_set(err, ENG_EFORMAT, "a part's Content-Disposition is '%.*s', not form-data",
                           (int)(type_len > 32 ? 32 : type_len), type);
    param pr;
    int rc;
    while ((rc = param_next(&p, end, &pr, err)) == 1) {
        bool is_name = span_is(pr.key, pr.key_len, "name");
        bool is_file = span_is(pr.key, pr.key_len, "filename");
        bool is_ext = span_is(pr.key, pr.key_len, "filename*");
        if ((is_name && part->name) || (is_file && part->filename) || (is_ext && ext))
            return eng_err_set(err, ENG_EFORMAT, "Content-Disposition gives %.*s twice",
                               (int)pr.key_len, pr.key);
        if (is_name)
            part->name = store_param(st, &pr);
        else if (is_file)
            part->filename = store_param(st, &pr);
        else if (is_ext && (rc = ext_value(st, &pr, &ext, err)) != 0)
            return rc;
    }
    if (rc < 0)
        return rc;
    if (!part->name)
        return eng_err_set(err, ENG_EFORMAT, "a part's Content-Disposition has no name");
    if (ext)
        part->filename = ext;
    return 0;
}

/* One header line, its line break removed. Control characters are refused
 * outright, so every string copied out of a header is a clean C string. */
static int header_line(const char *p, const char *end, srv_part *part, store *st, eng_err *err)
{
    for (const char *s = p; s < end; s++)
        if (((unsigned char)*s < 0x20 && *s != '\t') || *s == 0x7f)
            return eng_err_set(err, ENG_EFORMAT, "a part header has a control character (0x%02x)",
                               (unsigned char)*s);
    if (p < end && is_ws(*p))
        return eng_err_set(err, ENG_EFORMAT, "folded part header lines are not supported");
    const char *colon = memchr(p, ':', (size_t)(end - p));
    if (!colon)
        return eng_err_set(err, ENG_EFORMAT, "a part header line has no ':'");
    const char *v = skip_ws(colon + 1, end), *vend = end;
    while (vend > v && is_ws(vend[-1]))
        vend--;
    size_t key_len = (size_t)(colon - p);
    if (span_is(p, key_len, "content-disposition"))
        return disposition(v, vend, part, st, err);
    if (!span_is(p, key_len, "content-type"))
        return 0; /* RFC 7578 says to ignore other headers */
    if (part->content_type)
        return eng_err_set(err, ENG_EFORMAT, "a part has two Content-Type headers");
    param whole = {.val = v, .val_len = (size_t)(vend - v)};
    part->content_type = store_param(st, &whole);
    return 0;
}

static int read_part(const uint8_t *body, const span *sp, srv_part *part, store *st, eng_err *err)
{
    *part = (srv_part){.data = body + sp->data, .len = sp->data_end - sp->data};
    size_t i = sp->hdr;
    while (i < sp->hdr_end) {
        const uint8_t *nl = memchr(body + i, '\n', sp->hdr_end - i);
        size_t eol = nl ? (size_t)(nl - body) : sp->hdr_end, line_end = eol;
        if (line_end > i && body[line_end - 1] == '\r')
            line_end--;
        int rc = header_line((const char *)body + i, (const char *)body + line_end, part, st, err);
        if (rc)
            return rc;
        i = eol + 1;
    }
    if (!part->name)
        return eng_err_set(err, ENG_EFORMAT, "a part has no Content-Disposition: form-data header");
    return 0;
}

/* ---- the whole body ---- */

/* The first pass: counts the parts and the bytes their strings may need. */
static int count_parts(scan s, size_t max_parts, size_t *n, size_t *bytes, eng_err *err)
{
    span sp;
    int rc;
    *n = *bytes = 0;
    while ((rc = scan_next(&s, &sp, err)) == 1) {
        if (*n == max_parts)
            return eng_err_set(err, ENG_ETOOLONG, "the form has more than %zu parts", max_parts);
        (*n)++;
        /* The copied strings are disjoint pieces of the header lines, and
         * unescaping only shortens them. */
        *bytes += sp.hdr_end - sp.hdr + PART_STRINGS;
    }
    return rc;
}

int srv_multipart_parse(const uint8_t *body, size_t len, const char *boundary, size_t max_parts,
                        srv_multipart *out, eng_err *err)
{
    *out = (srv_multipart){0};
    scan s;
    size_t n = 0, bytes = 0;
    int rc = scan_init(&s, body, len, boundary, err);
    if (!rc)
        rc = count_parts(s, max_parts, &n, &bytes, err);
    if (rc || n == 0)
        return rc;
    srv_part *parts = malloc(n * sizeof *parts + bytes);
    if (!parts)
        return eng_err_set(err, ENG_ENOMEM, "out of memory for %zu form parts", n);
    store st = {(char *)(parts + n), (char *)(parts + n) + bytes};
    span sp;
    for (size_t i = 0; i < n && !rc; i++) {
        rc = scan_next(&s, &sp, err);
        assert(rc == 1); /* the first pass walked the same parts */
        rc = read_part(body, &sp, &parts[i], &st, err);
    }
    if (rc) {
        free(parts);
        return rc;
    }
    *out = (srv_multipart){.parts = parts, .n = n};
    return 0;
}

void srv_multipart_free(srv_multipart *m)
{
    free(m->parts);
    *m = (srv_multipart){0};
}

const srv_part *srv_multipart_get(const srv_multipart *m, const char *name)
{
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->parts[i].name, name) == 0)
            return &m->parts[i];
    return NULL;
}
