#include "server/buf.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "models/tokenizer.h"

void srv_buf_init(srv_buf *b)
{
    b->data = NULL;
    b->len = b->cap = 0;
    b->oom = false;
}

void srv_buf_free(srv_buf *b)
{
    free(b->data);
    srv_buf_init(b);
}

void srv_buf_clear(srv_buf *b)
{
    b->len = 0;
    b->oom = false;
    if (b->data)
        b->data[0] = '\0';
}

static bool reserve(srv_buf *b, size_t extra)
{
    if (b->oom)
        return false;
    if (b->len + extra + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->data = p;
    b->cap = cap;
    return true;
}

void srv_buf_append(srv_buf *b, const char *s, size_t n)
{
    if (!reserve(b, n))
        return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void srv_buf_puts(srv_buf *b, const char *s)
{
    srv_buf_append(b, s, strlen(s));
}

void srv_buf_printf(srv_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

char *srv_buf_take(srv_buf *b, size_t *len)
{
    if (!b->data)
        reserve(b, 0);
    char *p = b->data;
    if (len)
        *len = b->len;
    srv_buf_init(b);
    return p;
}

void srv_json_str(srv_buf *b, const char *s, size_t n)
{
    srv_buf_append(b, "\"", 1);
    size_t i = 0;
    while (i < n) {
        size_t ok = i + tok_utf8_validate(s + i, n - i);
        size_t run = i;
        for (; run < ok; run++) {
            unsigned char c = (unsigned char)s[run];
            if (c >= 0x20 && c != '"' && c != '\\')
                continue;
            srv_buf_append(b, s + i, run - i);
            switch (c) {
            case '"': srv_buf_puts(b, "\\\""); break;
            case '\\': srv_buf_puts(b, "\\\\"); break;
            case '\n': srv_buf_puts(b, "\\n"); break;
            case '\r': srv_buf_puts(b, "\\r"); break;
            case '\t': srv_buf_puts(b, "\\t"); break;
            case '\b': srv_buf_puts(b, "\\b"); break;
            case '\f': srv_buf_puts(b, "\\f"); break;
            default: srv_buf_printf(b, "\\u%04x", c); break;
            }
            i = run + 1;
        }
        srv_buf_append(b, s + i, ok - i);
        i = ok;
        if (i < n) { /* one invalid byte */
            srv_buf_puts(b, "\xef\xbf\xbd");
            i++;
        }
    }
    srv_buf_append(b, "\"", 1);
}

/* Whether v written with prec + 1 significant digits (correctly rounded, as
 * glibc's printf does) reads back as v; the text is left in sci. */
static bool reads_back(char *sci, size_t len, int prec, double v)
{
    snprintf(sci, len, "%.*e", prec, v);
    return strtod(sci, NULL) == v;
}

/* The fewest significant digits that read back to v, in "%.Ne" form.
 *
 * Reading back is monotone in the digit count: if p digits land inside v's
 * rounding interval, the nearest decimal of more digits is no farther from v,
 * so it lands inside too, because the interval is symmetric about v. That
 * lets a binary search replace trying every count (which cost 17 printf and
 * strtod pairs for a typical score). The one asymmetric interval is a power of
 * two's (the double below is nearer than the one above); those take the
 * linear scan. */
static void shortest_sci(char *sci, size_t len, double v)
{
    int e;
    if (fabs(frexp(v, &e)) == 0.5) {
        for (int prec = 0; prec < 17 && !reads_back(sci, len, prec, v); prec++)
            ;
        return;
    }
    int lo = 0, hi = 16; /* 17 digits always read back */
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (reads_back(sci, len, mid, v))
            hi = mid;
        else
            lo = mid + 1;
    }
    snprintf(sci, len, "%.*e", lo, v); /* sci holds the last probe, maybe not lo's */
}

/* Python's repr(float): the fewest significant digits that read back to the
 * same double, written positionally when the exponent is in [-4, 16) and in
 * scientific form (with a two-digit exponent at least) otherwise. */
void srv_json_num(srv_buf *b, double v)
{
    if (!isfinite(v)) {
        srv_buf_puts(b, "null");
        return;
    }
    if (v == 0) {
        srv_buf_puts(b, signbit(v) ? "-0.0" : "0.0");
        return;
    }
    char sci[40];
    shortest_sci(sci, sizeof sci, v);
    /* sci is "-d.ddde±XX": split into sign, digits and exponent. */
    char digits[24];
    size_t nd = 0;
    const char *p = sci;
    bool neg = *p == '-';
    p += neg;
    for (; *p && *p != 'e'; p++)
        if (*p != '.')
            digits[nd++] = *p;
    digits[nd] = '\0';
    int exp = atoi(p + 1);
    if (neg)
        srv_buf_puts(b, "-");
    if (exp >= 16 || exp < -4) {
        srv_buf_append(b, digits, 1);
        if (nd > 1) {
            srv_buf_puts(b, ".");
            srv_buf_append(b, digits + 1, nd - 1);
        }
        srv_buf_printf(b, "e%c%02d", exp < 0 ? '-' : '+', abs(exp));
    } else if (exp < 0) {
        srv_buf_puts(b, "0.");
        for (int i = -1; i > exp; i--)
            srv_buf_puts(b, "0");
        srv_buf_append(b, digits, nd);
    } else {
        size_t int_digits = (size_t)exp + 1;
        for (size_t i = 0; i < int_digits; i++)
            srv_buf_append(b, i < nd ? &digits[i] : "0", 1);
        srv_buf_puts(b, ".");
        if (nd > int_digits)
            srv_buf_append(b, digits + int_digits, nd - int_digits);
        else
            srv_buf_puts(b, "0");
    }
}

void srv_json_ranked(srv_buf *b, const float *scores, const char *const *labels, size_t n)
{
    size_t order[n ? n : 1];
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    for (size_t i = 1; i < n; i++) /* insertion sort: stable, and n is small */
        for (size_t j = i; j > 0 && scores[order[j]] > scores[order[j - 1]]; j--) {
            size_t t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    srv_buf_puts(b, "[");
    for (size_t i = 0; i < n; i++) {
        srv_buf_puts(b, i ? ",{\"score\":" : "{\"score\":");
        srv_json_num(b, scores[order[i]]);
        srv_buf_puts(b, ",\"label\":");
        srv_json_cstr(b, labels[order[i]]);
        srv_buf_puts(b, "}");
    }
    srv_buf_puts(b, "]");
}
