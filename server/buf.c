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

char *srv_bytes_dup(const char *s, size_t n)
{
    char *copy = malloc(n + 1);
    if (copy) {
        memcpy(copy, s, n);
        copy[n] = '\0';
    }
    return copy;
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

/* A positive number as decimal digits: 0.d[0]d[1]...d[nd-1] * 10^(exp + 1),
 * that is d[0].d[1]... * 10^exp. */
typedef struct decimal {
    char d[24];
    int nd;
    int exp;
} decimal;

/* Parses printf's "d.ddde±XX" into dec. */
static void parse_sci(const char *sci, decimal *dec)
{
    dec->nd = 0;
    for (; *sci && *sci != 'e'; sci++)
        if (*sci != '.')
            dec->d[dec->nd++] = *sci;
    dec->d[dec->nd] = '\0';
    dec->exp = atoi(sci + 1);
}

/* v (> 0) correctly rounded to nd significant digits, by printf. */
static void round_by_printf(double v, int nd, decimal *dec)
{
    char sci[40];
    snprintf(sci, sizeof sci, "%.*e", nd - 1, v);
    parse_sci(sci, dec);
}

/* v (> 0) correctly rounded to nd significant digits, from d17 (v to 17
 * digits) without another printf. Rounding the rounded digits again gives
 * the same result except when d17 lies exactly on the midpoint ("...5000"),
 * where only the digits beyond the 17th decide: printf does that one. */
static void round_digits(double v, const decimal *d17, int nd, decimal *dec)
{
    *dec = *d17;
    dec->nd = nd;
    if (nd == d17->nd)
        return;
    const char *rest = d17->d + nd;
    if (rest[0] == '5' && strspn(rest + 1, "0") >= (size_t)(d17->nd - nd - 1)) {
        round_by_printf(v, nd, dec);
        return;
    }
    if (rest[0] < '5')
        return;
    int i = nd - 1;
    while (i >= 0 && dec->d[i] == '9')
        dec->d[i--] = '0';
    if (i >= 0) {
        dec->d[i]++;
    } else { /* 9.99 -> 10.0: one digit more before the point */
        dec->d[0] = '1';
        dec->exp++;
    }
}

/* Whether dec reads back (strtod) as v. */
static bool reads_back(const decimal *dec, double v)
{
    char text[48];
    size_t n = 0;
    text[n++] = dec->d[0];
    text[n++] = '.';
    memcpy(text + n, dec->d + 1, (size_t)dec->nd - 1);
    n += (size_t)dec->nd - 1;
    text[n++] = 'e';
    int e = dec->exp;
    if (e < 0)
        text[n++] = '-', e = -e;
    char rev[8];
    size_t ne = 0;
    do
        rev[ne++] = (char)('0' + e % 10);
    while ((e /= 10) > 0);
    while (ne > 0)
        text[n++] = rev[--ne];
    text[n] = '\0';
    return strtod(text, NULL) == v;
}

/* The fewest significant digits that read back to v (> 0, finite).
 *
 * Reading back is monotone in the digit count: if p digits land inside v's
 * rounding interval, the nearest decimal of more digits is no farther from v,
 * so it lands inside too, because the interval is symmetric about v. That
 * lets a binary search replace trying every count (17 printf and strtod pairs
 * for a typical score); the candidates are rounded from one printf of 17
 * digits. The one asymmetric interval is a power of two's (the double below
 * is nearer than the one above); those try every count. */
static void shortest_digits(double v, decimal *dec)
{
    decimal d17;
    round_by_printf(v, 17, &d17);
    int e;
    if (frexp(v, &e) == 0.5) {
        for (int nd = 1; nd <= 17; nd++) {
            round_digits(v, &d17, nd, dec);
            if (reads_back(dec, v))
                return;
        }
    }
    int lo = 1, hi = 17; /* 17 digits always read back */
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        round_digits(v, &d17, mid, dec);
        if (reads_back(dec, v))
            hi = mid;
        else
            lo = mid + 1;
    }
    round_digits(v, &d17, lo, dec);
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
    decimal dec;
    shortest_digits(fabs(v), &dec);
    const char *digits = dec.d;
    size_t nd = (size_t)dec.nd;
    int exp = dec.exp;
    if (v < 0)
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

void srv_json_ranked(srv_buf *b, const float *scores, const char *const *labels,
                     const size_t *lens, size_t n)
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
        const char *label = labels[order[i]];
        srv_json_str(b, label, lens ? lens[order[i]] : strlen(label));
        srv_buf_puts(b, "}");
    }
    srv_buf_puts(b, "]");
}
