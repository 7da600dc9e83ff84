/* Errors as values.
 *
 * Fallible functions return 0 on success or a negative ENG_E* code, and fill an
 * optional eng_err with a one-line message naming the file, tensor or field at
 * fault. The message is what the user sees, so it says what is wrong and, where
 * it can, what to do about it. */
#ifndef ENG_ERROR_H
#define ENG_ERROR_H

#include <stddef.h>

enum {
    ENG_OK = 0,
    ENG_EIO = -1,          /* a file could not be opened, read or mapped */
    ENG_EFORMAT = -2,      /* a file or request is malformed */
    ENG_ENOMEM = -3,       /* an allocation failed */
    ENG_EINVAL = -4,       /* an argument or value is out of range */
    ENG_ETOOLONG = -5,     /* an input exceeds a limit (tokens, bytes, pixels) */
    ENG_EUNSUPPORTED = -6, /* valid, but not something predictd does */
    ENG_ENOTFOUND = -7,    /* a named model, tensor or file does not exist */
};

typedef struct eng_err {
    int code;
    char msg[512];
} eng_err;

/* Records code and a printf-style message in err (which may be NULL) and
 * returns code, so a failure reads `return eng_err_set(err, ENG_EIO, ...)`. */
int eng_err_set(eng_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A short fixed description of a code, for logs and when no eng_err exists. */
const char *eng_strerror(int code);

#endif
