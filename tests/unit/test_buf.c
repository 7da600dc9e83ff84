/* The response writer: Python's float repr and json.dumps string escaping. */
#include <stdlib.h>

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
