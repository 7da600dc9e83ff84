/* Logging to stderr (journald adds its own timestamps under systemd; a
 * terminal gets ours). One line per event, as text or as JSON objects
 * (--log-format json) for log shippers; levels filter by --log-level. */
#ifndef SRV_LOG_H
#define SRV_LOG_H

#include <stdbool.h>
#include <stddef.h>

typedef enum srv_log_level { SRV_LOG_DEBUG, SRV_LOG_INFO, SRV_LOG_WARN, SRV_LOG_ERROR } srv_log_level;

void srv_log_set_level(srv_log_level level);
void srv_log_set_json(bool json);
void srv_log(srv_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One access-log line for a finished request. */
void srv_log_access(const char *method, const char *path, int status, size_t bytes, double seconds,
                    const char *model);

#define srv_info(...) srv_log(SRV_LOG_INFO, __VA_ARGS__)
#define srv_warn(...) srv_log(SRV_LOG_WARN, __VA_ARGS__)
#define srv_error(...) srv_log(SRV_LOG_ERROR, __VA_ARGS__)

#endif
