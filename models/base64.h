/* Base64 for uploaded images: requests carry image bytes as base64 text in
 * JSON, sometimes as a data: URL copied from a browser. */
#ifndef IMG_BASE64_H
#define IMG_BASE64_H

#include <stddef.h>
#include <stdint.h>

#include "engine/error.h"

/* Decodes text[0..len) into a new malloc'd buffer *out of *out_len bytes (the
 * caller frees it). Accepts the standard (+/) and URL-safe (-_) alphabets,
 * with or without '=' padding, ASCII whitespace anywhere (MIME line breaks),
 * and an optional "data:<type>;base64," prefix. Anything else (another
 * character, padding in the middle, a length no encoder produces, a data: URL
 * that is not base64) is ENG_EFORMAT naming the offset. More than max_out
 * decoded bytes is ENG_ETOOLONG, found before allocating. An empty input
 * decodes to zero bytes (*out is then a valid 1-byte allocation). */
int img_base64_decode(const char *text, size_t len, size_t max_out, uint8_t **out,
                      size_t *out_len, eng_err *err);

#endif
