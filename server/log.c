#include "server/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "server/buf.h"

/* Set once at start-up, before any thread starts, then only read. */
static srv_log_level min_level = SRV_LOG_INFO;
static bool as_json;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void srv_log_set_level(srv_log_level level)
{
    min_level = level;
}

void srv_log_set_json(bool json)
{
    as_json = json;
}

static void timestamp(char *buf, size_t cap)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
}

/* One fprintf per line keeps lines whole when threads log at once. */
static void emit(srv_buf *line)
{
    if (line->data)
        fprintf(stderr, "%s\n", line->data);
    srv_buf_free(line);
}

void srv_log(srv_log_level level, const char *fmt, ...)
{
    if (level < min_level)
        return;
    char ts[64], msg[2048];
    timestamp(ts, sizeof ts);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    srv_buf line;
    srv_buf_init(&line);
    if (as_json) {
        srv_buf_printf(&line, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":", ts, level_names[level]);
        srv_json_cstr(&line, msg);
        srv_buf_puts(&line, "}");
    } else {
        srv_buf_printf(&line, "%s %s %s", ts, level_names[level], msg);
    }
    emit(&line);
}

void srv_log_access(const char *method, const char *path, int status, size_t bytes, double seconds,
                    const char *model)
{
    if (SRV_LOG_INFO < min_level)
        return;
    char ts[64];
    timestamp(ts, sizeof ts);
    srv_buf line;
    srv_buf_init(&line);
    if (as_json) {
        srv_buf_printf(&line, "{\"ts\":\"%s\",\"level\":\"info\",\"event\":\"access\",\"method\":", ts);
        srv_json_cstr(&line, method);
        srv_buf_puts(&line, ",\"path\":");
        srv_json_cstr(&line, path);
        srv_buf_printf(&line, ",\"status\":%d,\"bytes\":%zu,\"duration_ms\":%.3f,\"model\":", status,
                       bytes, seconds * 1e3);
        srv_json_cstr(&line, model);
        srv_buf_puts(&line, "}");
    } else {
        /* The path is the client's: escape it so it cannot forge log lines. */
        srv_buf_printf(&line, "%s info %s ", ts, method);
        srv_json_cstr(&line, path);
        srv_buf_printf(&line, " %d %zuB %.2fms%s%s", status, bytes, seconds * 1e3,
                       *model ? " model=" : "", model);
    }
    emit(&line);
}
