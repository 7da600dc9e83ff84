/* predictd's unit-test runner: a test is `TEST(name) { ... }` in any
 * tests/unit/test_<area>.c; it registers itself, and build/unit_tests runs every
 * test (or those whose names contain argv[1]) and closes with `N passed, N failed`.
 *
 * Checks record a failure with file:line and the values involved, and the test
 * goes on, so one run shows every mismatch. Tests run from the repository root;
 * fixtures are under tests/fixtures. */
#ifndef TEST_H
#define TEST_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef void (*test_fn)(void);
void test_register(const char *name, test_fn fn);
void test_fail(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int test_failures_in_current(void);

#define TEST(name)                                                                  \
    static void test_##name(void);                                                  \
    __attribute__((constructor)) static void register_##name(void)                  \
    {                                                                               \
        test_register(#name, test_##name);                                          \
    }                                                                               \
    static void test_##name(void)

#define CHECK(cond)                                                                 \
    do {                                                                            \
        if (!(cond))                                                                \
            test_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);                      \
    } while (0)

#define CHECK_MSG(cond, ...)                                                        \
    do {                                                                            \
        if (!(cond))                                                                \
            test_fail(__FILE__, __LINE__, __VA_ARGS__);                             \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                          \
    do {                                                                            \
        long long a_ = (long long)(a), b_ = (long long)(b);                         \
        if (a_ != b_)                                                               \
            test_fail(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a, #b, a_, b_); \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                       \
    do {                                                                            \
        double a_ = (double)(a), b_ = (double)(b);                                  \
        if (!(fabs(a_ - b_) <= (tol)))                                              \
            test_fail(__FILE__, __LINE__, "%s ~ %s: %.9g vs %.9g (tol %g)", #a, #b, \
                      a_, b_, (double)(tol));                                       \
    } while (0)

#define CHECK_STR(a, b)                                                             \
    do {                                                                            \
        const char *a_ = (a), *b_ = (b);                                            \
        if (!a_ || !b_ || strcmp(a_, b_) != 0)                                      \
            test_fail(__FILE__, __LINE__, "%s == %s: \"%s\" != \"%s\"", #a, #b,     \
                      a_ ? a_ : "(null)", b_ ? b_ : "(null)");                      \
    } while (0)

/* Reads a whole file into a NUL-terminated malloc'd buffer; NULL (and a test
 * failure) when it cannot. *len may be NULL. The caller frees. */
char *test_read_file(const char *path, size_t *len);

#endif
