#include "models/base64.h"

#include <stdbool.h>
#include <stdlib.h>
#include <strings.h>

/* The 6-bit value of a base64 character in either alphabet, -1 for padding or
 * whitespace (skipped by the caller), -2 for anything else. */
static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -2;
}

static bool is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

/* Skips a "data:<type>[;params];base64," prefix; *start receives where the
 * payload begins (0 without a prefix). */
static int skip_data_url(const char *text, size_t len, size_t *start, eng_err *err)
{
    *start = 0;
    if (len < 5 || strncasecmp(text, "data:", 5) != 0)
        return 0;
    size_t comma = 5;
    while (comma < len && text[comma] != ',')
        comma++;
    if (comma == len)
        return eng_err_set(err, ENG_EFORMAT, "data URL without a ',' before its payload");
    if (comma < 5 + 7 || strncasecmp(text + comma - 7, ";base64", 7) != 0)
        return eng_err_set(err, ENG_EFORMAT,
                           "data URL is not base64 (expected \"data:image/...;base64,\")");
    *start = comma + 1;
    return 0;
}

/* Validates the payload and counts its data characters, so that the output
 * is sized exactly before anything is allocated. */
static int scan(const char *text, size_t start, size_t len, size_t *n_data, eng_err *err)
{
    size_t n = 0, n_pad = 0;
    for (size_t i = start; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (is_space(c))
            continue;
        if (c == '=') {
            n_pad++;
            continue;
        }
        if (b64_value(c) < 0)
            return eng_err_set(err, ENG_EFORMAT, "invalid base64 character 0x%02x at offset %zu",
                               c, i);
        if (n_pad)
            return eng_err_set(err, ENG_EFORMAT, "base64 data after '=' padding at offset %zu", i);
        n++;
    }
    /* A final group of one character carries 6 bits, not a byte: no encoder
     * writes it, so the text was cut or corrupted. */
    if (n % 4 == 1 || n_pad > 2 || (n_pad && (n + n_pad) % 4 != 0))
        return eng_err_set(err, ENG_EFORMAT, "base64 text has an impossible length (%zu data "
                           "characters, %zu '=')", n, n_pad);
    *n_data = n;
    return 0;
}

int img_base64_decode(const char *text, size_t len, size_t max_out, uint8_t **out,
                      size_t *out_len, eng_err *err)
{
    *out = NULL;
    *out_len = 0;
    size_t start = 0, n = 0;
    int rc = skip_data_url(text, len, &start, err);
    if (rc == 0)
        rc = scan(text, start, len, &n, err);
    if (rc)
        return rc;
    size_t n_bytes = n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0);
    if (n_bytes > max_out)
        return eng_err_set(err, ENG_ETOOLONG, "decoded image is %zu bytes, over the limit of %zu",
                           n_bytes, max_out);
    uint8_t *buf = malloc(n_bytes ? n_bytes : 1);
    if (!buf)
        return eng_err_set(err, ENG_ENOMEM, "out of memory decoding %zu base64 bytes", n_bytes);
    uint32_t acc = 0;
    size_t bits = 0, o = 0;
    for (size_t i = start; i < len; i++) {
        int v = b64_value((unsigned char)text[i]);
        if (v < 0)
            continue; /* whitespace and padding, already validated */
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[o++] = (uint8_t)(acc >> bits);
        }
    }
    *out = buf;
    *out_len = o;
    return 0;
}
