/* multipart/form-data request bodies (RFC 7578), as `curl -F image=@cat.jpg
 * -F candidate_labels=cat,dog` and browsers' file forms send them.
 *
 * The body is hostile input, so the parser never reads past its length, runs
 * in O(len), and allocates once, in proportion to the number of parts only
 * (each part's strings come from its header section, which is capped at
 * SRV_MULTIPART_HEADER_MAX bytes). Part contents are not copied: a part's data
 * points into the body, which must outlive the result.
 *
 * Line endings are CRLF as the RFCs say; a body whose first boundary line ends
 * with a bare LF is read with LF line endings throughout. A boundary only
 * counts at the start of a line and when followed by optional spaces and a line
 * break (or "--" for the last one), so "--boundary" fragments inside binary
 * data are data. */
#ifndef SRV_MULTIPART_H
#define SRV_MULTIPART_H

#include <stddef.h>
#include <stdint.h>

#include "engine/error.h"

/* RFC 2046 caps a boundary at 70 characters; a buffer of
 * SRV_MULTIPART_BOUNDARY_MAX + 1 bytes always holds one. */
#define SRV_MULTIPART_BOUNDARY_MAX 70
/* The most bytes one part's header lines may take (the blank line that ends
 * them not counted). */
#define SRV_MULTIPART_HEADER_MAX 8192

typedef struct srv_part {
    const char *name;         /* Content-Disposition name="...", never NULL */
    const char *filename;     /* filename* (RFC 5987, UTF-8) if given, else filename; or NULL */
    const char *content_type; /* the part's whole Content-Type value, or NULL */
    const uint8_t *data;      /* the part's bytes, pointing into the body; may hold NULs */
    size_t len;
} srv_part;

typedef struct srv_multipart {
    srv_part *parts; /* n parts in body order: one allocation that also holds their strings */
    size_t n;
} srv_multipart;

/* Copies the boundary parameter of a Content-Type header value such as
 * `multipart/form-data; boundary="----x"` (quoted or not, parameter names in
 * any case) into boundary, NUL-terminated. Returns 0; ENG_EFORMAT when the
 * media type is not multipart/form-data or the boundary is missing, given
 * twice, or not 1-70 RFC 2046 characters; ENG_EINVAL when cap is too small. */
int srv_multipart_boundary(const char *content_type, char *boundary, size_t cap, eng_err *err);

/* Splits body[0..len) into its parts (at most max_parts; more is
 * ENG_ETOOLONG). A preamble before the first boundary and an epilogue after the
 * last are ignored. Returns 0 with *out filled, to be released with
 * srv_multipart_free; or ENG_EFORMAT naming what is wrong (no boundary, no
 * closing boundary, a part without Content-Disposition: form-data and a name,
 * headers too long or unterminated, ...), ENG_ENOMEM, and *out left empty
 * (nothing to free). */
int srv_multipart_parse(const uint8_t *body, size_t len, const char *boundary, size_t max_parts,
                        srv_multipart *out, eng_err *err);

/* Frees what srv_multipart_parse allocated and empties m; safe on an empty one. */
void srv_multipart_free(srv_multipart *m);

/* The first part whose name is name, or NULL. */
const srv_part *srv_multipart_get(const srv_multipart *m, const char *name);

#endif
