#include "server/reply.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void srv_reply_init(srv_reply *r)
{
    r->status = 0;
    r->content_type = NULL;
    r->allow[0] = '\0';
    r->challenge = NULL;
    r->error[0] = '\0';
    srv_buf_init(&r->body);
}

void srv_reply_free(srv_reply *r)
{
    srv_buf_free(&r->body);
}

void srv_reply_json(srv_reply *r, int status)
{
    r->status = status;
    r->content_type = "application/json";
    r->error[0] = '\0';
    srv_buf_clear(&r->body);
}

/* Sets r->error to prefix then text, cut to fit (silently: it is a
 * summary of the body, which carries the whole text). */
static void set_error(srv_reply *r, const char *prefix, const char *text)
{
    size_t cap = sizeof r->error - 1, np = strlen(prefix), nt = strlen(text);
    np = np < cap ? np : cap;
    nt = nt < cap - np ? nt : cap - np;
    memcpy(r->error, prefix, np);
    memcpy(r->error + np, text, nt);
    r->error[np + nt] = '\0';
}

void srv_reply_detail(srv_reply *r, int status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    srv_reply_json(r, status);
    srv_buf_puts(&r->body, "{\"detail\":");
    srv_json_cstr(&r->body, msg);
    srv_buf_puts(&r->body, "}");
    set_error(r, "", msg);
}

void srv_reply_invalid(srv_reply *r, const char *type, const char *where, const char *field,
                       const char *msg, const char *input_json)
{
    srv_reply_json(r, 422);
    srv_buf *b = &r->body;
    srv_buf_puts(b, "{\"detail\":[{\"type\":");
    srv_json_cstr(b, type);
    srv_buf_puts(b, ",\"loc\":[");
    srv_json_cstr(b, where);
    if (field) {
        srv_buf_puts(b, ",");
        srv_json_cstr(b, field);
    }
    srv_buf_puts(b, "],\"msg\":");
    srv_json_cstr(b, msg);
    srv_buf_printf(b, ",\"input\":%s}]}", input_json ? input_json : "null");
    char prefix[80];
    snprintf(prefix, sizeof prefix, "%.64s%s", field ? field : "", field ? ": " : "");
    set_error(r, prefix, msg);
}

void srv_reply_json_invalid(srv_reply *r, int pos, const char *why)
{
    srv_reply_json(r, 422);
    srv_buf *b = &r->body;
    srv_buf_printf(b, "{\"detail\":[{\"type\":\"json_invalid\",\"loc\":[\"body\",%d],"
                      "\"msg\":\"JSON decode error\",\"input\":{},\"ctx\":{\"error\":", pos);
    srv_json_cstr(b, why);
    srv_buf_puts(b, "}}]}");
    char where[64];
    snprintf(where, sizeof where, "JSON decode error at byte %d: ", pos);
    set_error(r, where, why);
}

const char *srv_status_text(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    }
    return "";
}
