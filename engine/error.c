#include "engine/error.h"

#include <stdarg.h>
#include <stdio.h>

int eng_err_set(eng_err *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

const char *eng_strerror(int code)
{
    switch (code) {
    case ENG_OK: return "success";
    case ENG_EIO: return "input/output error";
    case ENG_EFORMAT: return "malformed input";
    case ENG_ENOMEM: return "out of memory";
    case ENG_EINVAL: return "invalid argument";
    case ENG_ETOOLONG: return "input too long";
    case ENG_EUNSUPPORTED: return "unsupported";
    case ENG_ENOTFOUND: return "not found";
    }
    return "unknown error";
}
