/* The response writer: Python's float repr and json.dumps string escaping. */
#include <stdlib.h>
#include <string.h>

#include "server/buf.h"
#include "tests/unit/test.h"

static void check_num(double v, const char *want)
{
    srv_buf b;
    srv_buf_init(&b);
    srv_json_num(&b, v);
    CHECK_STR(b.data, want);
    srv_buf_free(&b);
}

TEST(buf_numbers_as_python_repr)
{
    check_num(0.5908476710319519, "0.5908476710319519");
    check_num((double)0.99981767f, "0.9998176693916321");
    check_num(1.0, "1.0");
    check_num(-2.5, "-2.5");
    check_num(1e-5, "1e-05");
    check_num(0.0001, "0.0001");
    check_num(123456789.0, "123456789.0");
    check_num(1e16, "1e+16");
    check_num(1.5e300, "1.5e+300");
    check_num(0.0, "0.0");
    check_num(1.0 / 0.0, "null");
}

TEST(buf_strings_as_json_dumps)
{
    srv_buf b;
    srv_buf_init(&b);
    srv_json_cstr(&b, "a\"b\\c\n\t\x01 é/");
    CHECK_STR(b.data, "\"a\\\"b\\\\c\\n\\t\\u0001 é/\"");
    srv_buf_clear(&b);
    srv_json_str(&b, "x\xffy", 3);
    CHECK_STR(b.data, "\"x\xef\xbf\xbdy\"");
    srv_buf_free(&b);
}

/* The significant digits of a number's text, without sign, point, exponent
 * and leading zeros: "0.0012" and "1.2e-03" both give "12". Trailing zeros
 * are dropped only where they carry no digit: an integer's ("1200.0") and an
 * exponent form's without a point ("1e+22"); "0.50" keeps its "0". */
static void significant_digits(const char *text, char *out)
{
    size_t len = strcspn(text, "e"), n = 0;
    bool integer = len >= 2 && strncmp(text + len - 2, ".0", 2) == 0;
    if (integer)
        len -= 2;
    for (size_t i = 0; i < len; i++)
        if ((text[i] >= '1' && text[i] <= '9') || (text[i] == '0' && n > 0))
            out[n++] = text[i];
    if (integer || !memchr(text, '.', len))
        while (n > 1 && out[n - 1] == '0')
            n--;
    out[n] = '\0';
}

/* srv_json_num's binary search over digit counts against the definition,
 * trying every count from one up, on arbitrary doubles, float32 scores and
 * (the asymmetric case) powers of two and their multiples, and numbers of one
 * or two digits. */
TEST(buf_numbers_shortest_as_scan)
{
    uint64_t state = 0x9e3779b97f4a7c15u;
    for (int i = 0; i < 30000 && !test_failures_in_current(); i++) {
        state = state * 6364136223846793005u + 1442695040888963407u;
        double v;
        if (i % 3 == 0) {
            uint64_t bits = state >> 1; /* a positive double of any exponent */
            memcpy(&v, &bits, sizeof v);
        } else if (i % 3 == 1) {
            v = (double)(float)((double)(state >> 40) / 16777216.0);
        } else if (i % 4 == 2) {
            v = ldexp((state & 1) ? 3.0 : 1.0, (int)(state >> 54) - 512);
        } else { /* few digits: 7e-05, 1.5, 30.0 */
            v = (double)(state >> 57) * pow(10.0, (double)((state >> 40) % 24) - 12);
        }
        if (!isfinite(v) || v == 0)
            continue;
        char scan[40], want[40], got[40];
        for (int prec = 0; prec < 17; prec++) {
            snprintf(scan, sizeof scan, "%.*e", prec, v);
            if (strtod(scan, NULL) == v)
                break;
        }
        srv_buf b;
        srv_buf_init(&b);
        srv_json_num(&b, v);
        significant_digits(scan, want);
        significant_digits(b.data, got);
        CHECK_MSG(strcmp(got, want) == 0 && strtod(b.data, NULL) == v,
                  "%.17g written %s, the scan gives %s", v, b.data, scan);
        srv_buf_free(&b);
    }
}

/* A copy of bytes with a NUL among them keeps them all, and ends in a NUL. */
TEST(buf_bytes_dup_keeps_nuls)
{
    char *copy = srv_bytes_dup("a\0b", 3);
    CHECK(copy != NULL);
    CHECK(memcmp(copy, "a\0b\0", 4) == 0);
    free(copy);
}
