/* The daemon's options and their three sources.
 *
 * One table in options.c describes every option: its name, type, default, range
 * and help text. From it come the command-line parser (--max-batch-size 32 or
 * --max-batch-size=32), the environment (PREDICTD_MAX_BATCH_SIZE), the JSON
 * config file ("max_batch_size": 32) and the --help text. Per option, the
 * command line wins over the environment, the environment over the file, and
 * the file over the default. */
#ifndef SRV_OPTIONS_H
#define SRV_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "engine/error.h"

/* How log lines are written. (Kept here until the log module grows JSON output.) */
typedef enum srv_log_format { SRV_LOG_FORMAT_TEXT, SRV_LOG_FORMAT_JSON } srv_log_format;

/* One model to serve. The name appears in URLs (/models/NAME/...), so it is
 * always 1 to 64 of [A-Za-z0-9._-] and never "." or "..": it cannot name a path. */
typedef struct srv_model_spec {
    char *name;
    char *dir;
    int dtype; /* an eng_dtype to hold the weights as, or -1 for srv_options.dtype */
} srv_model_spec;

/* Strings are owned by the struct. An optional string that was not given, or
 * was given empty, is NULL, so callers test one thing. */
typedef struct srv_options {
    srv_model_spec *models; /* (n_models) at least one; the first is the default */
    size_t n_models;
    char *host;
    int port;
    char *config;           /* the file that was read, or NULL */
    int dtype;              /* eng_dtype: ENG_F32, ENG_F16, ENG_BF16 or ENG_I8 */
    int threads;            /* 0: one per core */

    /* Batching (encoders and CLIP). */
    int max_batch_size;     /* requests in one forward pass */
    int max_batch_tokens;   /* tokens (padded) in one forward pass */
    int max_batch_wait_us;  /* how long a batch waits to fill */
    bool adaptive_batch_wait; /* no wait while requests come one at a time */
    int inline_max_us;      /* cheaper classifications skip the queue */
    int max_queue;          /* waiting requests per model before 429 */
    int max_client_batch_size; /* texts in one request */
    int max_input_tokens;   /* 0: the model's own maximum */

    /* Generation. */
    int max_batch_total_tokens; /* KV-cache tokens across running sequences */
    int max_new_tokens_limit;

    /* HTTP. */
    size_t max_body_bytes;
    size_t max_header_bytes;
    int max_connections;
    int timeout;            /* seconds a connection may stay idle or slow */
    int request_timeout;    /* seconds to receive one request, however steadily; 0: no limit */
    int shutdown_timeout;   /* seconds to finish in-flight requests on SIGTERM */

    /* Images. */
    size_t max_image_bytes;
    size_t max_image_pixels;

    /* Logging. */
    int log_format;         /* srv_log_format */
    int log_level;          /* srv_log_level */
    bool access_log;

    /* Access control. */
    char *api_key;          /* NULL: no authentication */
    char *api_key_file;     /* NULL: none */
    bool protect_ops;       /* /health and /metrics need the key too */
} srv_options;

/* Fills o from the defaults, then the JSON file named by --config or
 * PREDICTD_CONFIG, then the environment envp (NULL-terminated "NAME=value"
 * strings; may be NULL), then argv (argv[0] is the program and is skipped).
 * Returns 0; 1 when --help or --version was printed on stdout (exit 0); or a
 * negative ENG_E* code with a one-line message naming the source in err.
 * After 0 or 1 the caller owns o and calls srv_options_free(); after an error
 * o is already empty (and freeing it again is harmless). */
int srv_options_load(srv_options *o, int argc, char **argv, char *const *envp, eng_err *err);
void srv_options_free(srv_options *o);

/* Writes the --help text, generated from the option table. */
void srv_options_usage(FILE *out);

/* Writes the predictd(8) man page (roff), from the same table. `predictd
 * --man` prints it; make install installs it. */
void srv_options_man(FILE *out);

#endif
