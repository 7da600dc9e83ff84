#include "server/options.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "engine/tensor.h"
#include "server/buf.h"
#include "server/log.h"

#include "server/version.h"

/* ---------------------------------------------------------------------------
 * The option table
 * ------------------------------------------------------------------------- */

typedef enum opt_type { OPT_MODELS, OPT_STRING, OPT_INT, OPT_SIZE, OPT_BOOL, OPT_ENUM } opt_type;

typedef struct opt_enum {
    const char *name;
    int value;
} opt_enum;

enum {
    OPT_NO_FILE = 1,  /* only the command line and environment may set it */
    OPT_API_KEY = 2,  /* api-key or api-key-file: one setting, the highest source's */
};

typedef struct opt_def {
    const char *name;       /* --name, PREDICTD_NAME, "name" in the file (dashes as underscores) */
    opt_type type;
    size_t offset;          /* of the field in srv_options */
    const char *arg;        /* the value's placeholder in --help; NULL: from the type */
    const char *def;        /* the default, written as on the command line; NULL: none */
    long long min, max;     /* integers: the range; strings: the length */
    const opt_enum *values; /* enums: the names, NULL-terminated */
    const char *help;       /* one short sentence per line: --help and the man page */
    const char *group;      /* a heading printed before this row */
    const char *file_key;   /* when the file's key is not the name's */
    int flags;
} opt_def;

/* These are the names eng_dtype_from_name() reads, limited to the types a
 * model's weights can be held as (a test holds the two to agreement). */
static const opt_enum dtype_values[] = {
    {"f32", ENG_F32}, {"f16", ENG_F16}, {"bf16", ENG_BF16}, {"int8", ENG_I8}, {NULL, 0}};
static const opt_enum log_format_values[] = {
    {"text", SRV_LOG_FORMAT_TEXT}, {"json", SRV_LOG_FORMAT_JSON}, {NULL, 0}};
static const opt_enum log_level_values[] = {{"debug", SRV_LOG_DEBUG}, {"info", SRV_LOG_INFO},
                                            {"warn", SRV_LOG_WARN},   {"error", SRV_LOG_ERROR},
                                            {NULL, 0}};

/* A field's offset, and a compile error when its C type is not the one the
 * option's type stores: the table and the struct cannot drift apart. */
#define FIELD(ctype, f) .offset = _Generic(((srv_options *)0)->f, ctype: offsetof(srv_options, f))
#define AS_INT(f) .type = OPT_INT, FIELD(int, f)
#define AS_SIZE(f) .type = OPT_SIZE, FIELD(size_t, f)
#define AS_BOOL(f) .type = OPT_BOOL, FIELD(bool, f)
#define AS_STRING(f) .type = OPT_STRING, FIELD(char *, f)
#define AS_ENUM(f, v) .type = OPT_ENUM, FIELD(int, f), .values = v

#define KiB 1024LL
#define MiB (1024 * KiB)
#define GiB (1024 * MiB)

static const opt_def opt_table[] = {
    {.name = "model", .type = OPT_MODELS, FIELD(srv_model_spec *, models), .arg = "[NAME=]DIR",
     .file_key = "models", .group = "Models",
     .help = "Serve the model in DIR as NAME (default: the folder's name); repeatable.\n"
             "The first is the default. PREDICTD_MODEL takes a comma-separated list."},
    {.name = "dtype", AS_ENUM(dtype, dtype_values), .def = "f32",
     .help = "Hold weights as this type, for every model that names none."},
    {.name = "threads", AS_INT(threads), .def = "0", .min = 0, .max = 4096,
     .help = "Compute threads; 0 uses one per core."},

    {.name = "host", AS_STRING(host), .arg = "HOST", .def = "127.0.0.1", .min = 1, .max = 255,
     .group = "Server", .help = "Address to listen on; 0.0.0.0 listens on every interface."},
    {.name = "port", AS_INT(port), .arg = "PORT", .def = "8000", .min = 1, .max = 65535,
     .help = "TCP port to listen on."},
    {.name = "config", AS_STRING(config), .arg = "FILE", .max = 4095, .flags = OPT_NO_FILE,
     .help = "Read options from this JSON file (the command line and environment win)."},

    {.name = "max-batch-size", AS_INT(max_batch_size), .def = "32", .min = 1, .max = 65536,
     .group = "Batching", .help = "Most requests run in one forward pass."},
    {.name = "max-batch-tokens", AS_INT(max_batch_tokens), .def = "8192", .min = 1,
     .max = 1 << 24, .help = "Most tokens in one forward pass (batches are packed, not padded)."},
    {.name = "max-batch-wait-us", AS_INT(max_batch_wait_us), .arg = "MICROSECONDS",
     .def = "2000", .min = 0, .max = 10000000,
     .help = "How long a forward pass waits for more requests to join it."},
    {.name = "adaptive-batch-wait", AS_BOOL(adaptive_batch_wait), .def = "true",
     .help = "Skip the batch wait while requests arrive one at a time."},
    {.name = "inline-max-us", AS_INT(inline_max_us), .arg = "MICROSECONDS", .def = "100",
     .min = 0, .max = 10000000,
     .help = "Cheaper classifications sent to an idle model skip the queue (0: never)."},
    {.name = "max-queue", AS_INT(max_queue), .def = "256", .min = 1, .max = 1000000,
     .help = "Requests that may wait per model; more are answered 429."},
    {.name = "max-client-batch-size", AS_INT(max_client_batch_size), .def = "32", .min = 1,
     .max = 65536, .help = "Most texts in one request."},
    {.name = "max-input-tokens", AS_INT(max_input_tokens), .def = "0", .min = 0, .max = 1 << 24,
     .help = "Most tokens in one input; 0 is the model's own maximum."},

    {.name = "max-batch-total-tokens", AS_INT(max_batch_total_tokens), .def = "16384", .min = 1,
     .max = 1 << 28, .group = "Generation",
     .help = "KV-cache tokens shared by all running sequences."},
    {.name = "max-new-tokens-limit", AS_INT(max_new_tokens_limit), .def = "1024", .min = 1,
     .max = 1 << 20, .help = "The largest max_new_tokens a request may ask for."},

    {.name = "max-body-bytes", AS_SIZE(max_body_bytes), .def = "16777216", .min = 1,
     .max = 4 * GiB, .group = "HTTP", .help = "Largest request body (16 MiB)."},
    {.name = "max-header-bytes", AS_SIZE(max_header_bytes), .def = "16384", .min = KiB,
     .max = MiB, .help = "Largest request line and headers together."},
    {.name = "max-connections", AS_INT(max_connections), .def = "1024", .min = 1, .max = 1000000,
     .help = "Most connections open at once."},
    {.name = "timeout", AS_INT(timeout), .arg = "SECONDS", .def = "30", .min = 1, .max = 86400,
     .help = "Close a connection that stays idle this long."},
    {.name = "request-timeout", AS_INT(request_timeout), .arg = "SECONDS", .def = "60", .min = 0,
     .max = 86400, .help = "Close a connection slower than this to send a request (0: never)."},
    {.name = "shutdown-timeout", AS_INT(shutdown_timeout), .arg = "SECONDS", .def = "30",
     .min = 0, .max = 86400, .help = "On SIGTERM, time left to requests in flight before exit."},

    {.name = "max-image-bytes", AS_SIZE(max_image_bytes), .def = "16777216", .min = 1,
     .max = 4 * GiB, .group = "Images", .help = "Largest encoded image (16 MiB)."},
    {.name = "max-image-pixels", AS_SIZE(max_image_pixels), .arg = "PIXELS", .def = "40000000",
     .min = 1, .max = 1LL << 31, .help = "Largest decoded image, width times height."},

    {.name = "log-format", AS_ENUM(log_format, log_format_values), .def = "text",
     .group = "Logging", .help = "Write log lines as text or as JSON objects."},
    {.name = "log-level", AS_ENUM(log_level, log_level_values), .def = "info",
     .help = "Least severe level logged."},
    {.name = "access-log", AS_BOOL(access_log), .def = "true",
     .help = "Log one line per request."},

    {.name = "api-key", AS_STRING(api_key), .arg = "KEY", .max = 4095, .group = "Access control",
     .flags = OPT_API_KEY,
     .help = "Require \"Authorization: Bearer KEY\" on the API; empty: no authentication.\n"
             "Prefer PREDICTD_API_KEY or --api-key-file: argv is visible to other users."},
    {.name = "api-key-file", AS_STRING(api_key_file), .arg = "FILE", .max = 4095,
     .flags = OPT_API_KEY,
     .help = "Read the API key from FILE."},
    {.name = "protect-ops", AS_BOOL(protect_ops), .def = "false",
     .help = "Require the key on the probes too: /health, /metrics and the v2 health\n"
             "and ready routes (the route table's ops column)."},
};

#define N_OPTS (sizeof opt_table / sizeof opt_table[0])

/* ---------------------------------------------------------------------------
 * Names: one option, three spellings
 * ------------------------------------------------------------------------- */

typedef enum opt_style { STYLE_CLI, STYLE_ENV, STYLE_FILE } opt_style;

/* Writes d's name as the source spells it: max-batch-size on the command line,
 * PREDICTD_MAX_BATCH_SIZE in the environment, max_batch_size in the file. */
static const char *opt_key(const opt_def *d, opt_style style, char *buf, size_t n)
{
    if (style == STYLE_FILE && d->file_key)
        return d->file_key;
    size_t len = 0;
    if (style == STYLE_ENV)
        len = (size_t)snprintf(buf, n, "PREDICTD_");
    for (const char *c = d->name; *c && len + 1 < n; c++) {
        char ch = *c;
        if (style != STYLE_CLI && ch == '-')
            ch = '_';
        if (style == STYLE_ENV && ch >= 'a' && ch <= 'z')
            ch = (char)(ch - 'a' + 'A');
        buf[len++] = ch;
    }
    buf[len] = '\0';
    return buf;
}

static const opt_def *opt_find(const char *key, size_t len, opt_style style)
{
    for (size_t i = 0; i < N_OPTS; i++) {
        char buf[64];
        const char *k = opt_key(&opt_table[i], style, buf, sizeof buf);
        if (strlen(k) == len && memcmp(k, key, len) == 0)
            return &opt_table[i];
    }
    return NULL;
}

/* ---------------------------------------------------------------------------
 * Sources and their error messages
 * ------------------------------------------------------------------------- */

typedef struct opt_load {
    srv_options *o;
    eng_err *err;
    int models_rank; /* the rank of the source o->models came from */
    int key_rank;    /* the rank of the source the API key (or its file) came from */
} opt_load;

/* One source being applied. The rank orders sources for the settings a
 * higher source replaces whole: `model`'s list (by the first model it
 * gives) and the API key with its file (see api_key_switch_source). */
enum { RANK_DEFAULT, RANK_FILE, RANK_ENV, RANK_CLI };

typedef struct opt_src {
    opt_load *ld;
    int rank;
    char where[320]; /* names the source: "--port", "PREDICTD_PORT", "f.json: \"port\"" */
} opt_src;

__attribute__((format(printf, 3, 4)))
static int src_fail(const opt_src *s, int code, const char *fmt, ...)
{
    char what[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return eng_err_set(s->ld->err, code, "%s: %s", s->where, what);
}

/* Writes v as a JSON string literal, cut to 60 bytes: a value from the
 * environment may hold newlines, and the message must stay one line. */
static const char *quote(const char *v, char *out, size_t n)
{
    srv_buf b;
    size_t len = strlen(v);
    srv_buf_init(&b);
    srv_json_str(&b, v, len > 60 ? 60 : len);
    snprintf(out, n, "%s%s", b.data && !b.oom ? b.data : "\"?\"", len > 60 ? "..." : "");
    srv_buf_free(&b);
    return out;
}

static const opt_enum bool_words[] = {{"true", 1}, {"false", 0}, {"1", 1}, {"0", 0},
                                      {"yes", 1},  {"no", 0},    {NULL, 0}};

static const opt_enum *enum_find(const opt_enum *e, const char *name)
{
    for (; e->name; e++)
        if (strcasecmp(e->name, name) == 0)
            return e;
    return NULL;
}

static const char *enum_list(const opt_enum *e, const char *sep, char *buf, size_t n)
{
    size_t len = 0;
    buf[0] = '\0';
    for (; e->name && len < n; e++)
        len += (size_t)snprintf(buf + len, n - len, "%s%s", len ? sep : "", e->name);
    return buf;
}

/* What a value of d must be, for messages: "an integer from 1 to 65535". */
static const char *expected(const opt_def *d, char *buf, size_t n)
{
    char list[128];
    switch (d->type) {
    case OPT_INT:
    case OPT_SIZE: snprintf(buf, n, "an integer from %lld to %lld", d->min, d->max); break;
    case OPT_BOOL: snprintf(buf, n, "true or false"); break;
    case OPT_ENUM:
        snprintf(buf, n, "one of %s", enum_list(d->values, ", ", list, sizeof list));
        break;
    case OPT_STRING: snprintf(buf, n, "a string"); break;
    case OPT_MODELS: snprintf(buf, n, "a list of objects or an object of \"NAME\": \"DIR\""); break;
    }
    return buf;
}

/* ---------------------------------------------------------------------------
 * One parser per type: text in, typed field out
 * ------------------------------------------------------------------------- */

typedef int (*opt_parse_fn)(const opt_def *d, const char *text, void *field, opt_src *s);

/* Stores an int, or a size_t for OPT_SIZE. */
static int parse_integer(const opt_def *d, const char *text, void *field, opt_src *s)
{
    char q[80], exp[128], *end = NULL;
    /* strtoll also takes leading blanks, a '+' and "0x"; a config value should not. */
    const char *digit = text + (text[0] == '-');
    bool ok = *digit >= '0' && *digit <= '9';
    errno = 0;
    long long v = ok ? strtoll(text, &end, 10) : 0;
    if (!ok || *end)
        return src_fail(s, ENG_EINVAL, "%s is not an integer", quote(text, q, sizeof q));
    if (errno == ERANGE || v < d->min || v > d->max)
        return src_fail(s, ENG_EINVAL, "%s is out of range: must be %s", text,
                        expected(d, exp, sizeof exp));
    if (d->type == OPT_SIZE)
        *(size_t *)field = (size_t)v;
    else
        *(int *)field = (int)v;
    return 0;
}

static int parse_bool(const opt_def *d, const char *text, void *field, opt_src *s)
{
    const opt_enum *w = enum_find(bool_words, text);
    char q[80];
    (void)d;
    if (!w)
        return src_fail(s, ENG_EINVAL, "%s is not a boolean: use true/false, 1/0 or yes/no",
                        quote(text, q, sizeof q));
    *(bool *)field = w->value;
    return 0;
}

static int parse_enum(const opt_def *d, const char *text, void *field, opt_src *s)
{
    const opt_enum *e = enum_find(d->values, text);
    char q[80], list[128];
    if (!e)
        return src_fail(s, ENG_EINVAL, "%s is not one of %s", quote(text, q, sizeof q),
                        enum_list(d->values, ", ", list, sizeof list));
    *(int *)field = e->value;
    return 0;
}

/* A key or key file from a higher source replaces a lower one's key and
 * key file; both from one source is an error (srv_auth_init). */
static void api_key_switch_source(opt_src *s)
{
    if (s->ld->key_rank == s->rank)
        return;
    srv_options *o = s->ld->o;
    free(o->api_key);
    free(o->api_key_file);
    o->api_key = o->api_key_file = NULL;
    s->ld->key_rank = s->rank;
}

static int parse_string(const opt_def *d, const char *text, void *field, opt_src *s)
{
    char **p = field;
    size_t len = strlen(text);
    if (len < (size_t)d->min)
        return src_fail(s, ENG_EINVAL, "must not be empty");
    if (len > (size_t)d->max)
        return src_fail(s, ENG_EINVAL, "longer than %lld bytes", d->max);
    if (d->flags & OPT_API_KEY)
        api_key_switch_source(s);
    char *copy = len ? strdup(text) : NULL;
    if (len && !copy)
        return src_fail(s, ENG_ENOMEM, "out of memory");
    free(*p);
    *p = copy;
    return 0;
}

/* ---------------------------------------------------------------------------
 * Models
 * ------------------------------------------------------------------------- */

/* Model names go into URLs and log lines, so they are held to a charset that
 * can never spell a path: no '/', and never "." or "..". */
static bool model_name_ok(const char *name)
{
    static const char allowed[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                  "abcdefghijklmnopqrstuvwxyz0123456789._-";
    size_t n = strlen(name);
    return n >= 1 && n <= 64 && strspn(name, allowed) == n && strcmp(name, ".") != 0 &&
           strcmp(name, "..") != 0;
}

static int model_name_check(opt_src *s, const char *name, bool derived)
{
    const srv_options *o = s->ld->o;
    char q[80];
    if (!model_name_ok(name))
        return src_fail(s, ENG_EINVAL,
                        "%s%s is not a valid model name: use 1 to 64 of A-Z a-z 0-9 . _ - "
                        "(not \".\" or \"..\")%s", derived ? "the folder name " : "",
                        quote(name, q, sizeof q), derived ? "; give one as NAME=DIR" : "");
    for (size_t i = 0; i < o->n_models; i++)
        if (strcmp(o->models[i].name, name) == 0)
            return src_fail(s, ENG_EINVAL, "duplicate model name %s", quote(name, q, sizeof q));
    return 0;
}

static void models_clear(srv_options *o)
{
    for (size_t i = 0; i < o->n_models; i++) {
        free(o->models[i].name);
        free(o->models[i].dir);
    }
    free(o->models);
    o->models = NULL;
    o->n_models = 0;
}

/* The folder's base name, trailing slashes ignored: "/m/sst2/" gives "sst2". */
static const char *dir_base_name(const char *dir, size_t *len)
{
    size_t end = strlen(dir), start;
    while (end > 1 && dir[end - 1] == '/')
        end--;
    for (start = end; start > 0 && dir[start - 1] != '/'; start--)
        ;
    *len = end - start;
    return dir + start;
}

/* Appends the model in dir named name[0..len) (NULL: the folder's base name),
 * first dropping the models a lower source gave. */
static int models_add(opt_src *s, const char *name, size_t len, const char *dir, int dtype)
{
    srv_options *o = s->ld->o;
    bool derived = !name;
    if (s->ld->models_rank != s->rank) {
        models_clear(o);
        s->ld->models_rank = s->rank;
    }
    if (!*dir)
        return src_fail(s, ENG_EINVAL, "empty model folder");
    if (derived)
        name = dir_base_name(dir, &len);
    char *name_copy = strndup(name, len), *dir_copy = strdup(dir);
    srv_model_spec *grown = realloc(o->models, (o->n_models + 1) * sizeof *grown);
    if (grown)
        o->models = grown;
    int rc = !name_copy || !dir_copy || !grown ? src_fail(s, ENG_ENOMEM, "out of memory")
                                               : model_name_check(s, name_copy, derived);
    if (rc) {
        free(name_copy);
        free(dir_copy);
        return rc;
    }
    o->models[o->n_models++] = (srv_model_spec){.name = name_copy, .dir = dir_copy, .dtype = dtype};
    return 0;
}

/* "[NAME=]DIR". An '=' after a '/' belongs to the folder's name, not to NAME. */
static int parse_model(const opt_def *d, const char *text, void *field, opt_src *s)
{
    (void)d, (void)field;
    const char *eq = strchr(text, '=');
    if (!eq || memchr(text, '/', (size_t)(eq - text)))
        return models_add(s, NULL, 0, text, -1);
    return models_add(s, text, (size_t)(eq - text), eq + 1, -1);
}

static const struct opt_type_traits {
    opt_parse_fn parse;
    const char *arg;  /* the default --help placeholder */
    json_type json;   /* what the config file must use; JSON_TRUE stands for either boolean */
} opt_types[] = {
    [OPT_MODELS] = {parse_model, "[NAME=]DIR", JSON_ARRAY},
    [OPT_STRING] = {parse_string, "STRING", JSON_STRING},
    [OPT_INT] = {parse_integer, "N", JSON_INTEGER},
    [OPT_SIZE] = {parse_integer, "BYTES", JSON_INTEGER},
    [OPT_BOOL] = {parse_bool, "BOOL", JSON_TRUE},
    [OPT_ENUM] = {parse_enum, NULL, JSON_STRING},
};

static int opt_set(const opt_def *d, const char *text, opt_src *s)
{
    return opt_types[d->type].parse(d, text, (char *)s->ld->o + d->offset, s);
}

/* ---------------------------------------------------------------------------
 * The config file
 * ------------------------------------------------------------------------- */

/* One entry of "models": [{"name": "sst2", "path": "/m/sst2", "dtype": "int8"}]. */
static int file_model_object(json_t *m, opt_src *s)
{
    static const char *const keys[] = {"name", "path", "dtype", NULL};
    const char *key, *text[3] = {NULL, NULL, NULL};
    json_t *v;
    size_t base = strlen(s->where);
    json_object_foreach (m, key, v) {
        int k = 0;
        while (keys[k] && strcmp(keys[k], key) != 0)
            k++;
        snprintf(s->where + base, sizeof s->where - base, ": \"%s\"", key);
        if (!keys[k])
            return src_fail(s, ENG_EINVAL, "unknown key (use \"name\", \"path\" and \"dtype\")");
        if (!json_is_string(v))
            return src_fail(s, ENG_EINVAL, "must be a string");
        text[k] = json_string_value(v);
    }
    s->where[base] = '\0';
    if (!text[1])
        return src_fail(s, ENG_EINVAL, "\"path\" is missing");
    int dtype = -1;
    if (text[2]) {
        snprintf(s->where + base, sizeof s->where - base, ": \"dtype\"");
        int rc = parse_enum(opt_find("dtype", 5, STYLE_CLI), text[2], &dtype, s);
        if (rc)
            return rc;
        s->where[base] = '\0';
    }
    return models_add(s, text[0], text[0] ? strlen(text[0]) : 0, text[1], dtype);
}

static int file_models(const opt_def *d, json_t *v, opt_src *s)
{
    char exp[160];
    size_t base = strlen(s->where), i;
    const char *name;
    json_t *m;
    int rc = 0;
    if (json_is_array(v)) {
        json_array_foreach (v, i, m) {
            snprintf(s->where + base, sizeof s->where - base, "[%zu]", i);
            if (!json_is_object(m))
                return src_fail(s, ENG_EINVAL, "must be an object");
            if ((rc = file_model_object(m, s)))
                return rc;
        }
        return 0;
    }
    if (!json_is_object(v))
        return src_fail(s, ENG_EINVAL, "must be %s", expected(d, exp, sizeof exp));
    json_object_foreach (v, name, m) {
        snprintf(s->where + base, sizeof s->where - base, ": \"%s\"", name);
        if (!json_is_string(m))
            return src_fail(s, ENG_EINVAL, "must be a string (the model's folder)");
        if ((rc = models_add(s, name, strlen(name), json_string_value(m), -1)))
            return rc;
    }
    return 0;
}

/* Brings a JSON scalar to the text the parsers read, when it has d's JSON type. */
static int file_value(const opt_def *d, json_t *v, opt_src *s)
{
    char exp[160], num[32];
    json_type want = opt_types[d->type].json, got = json_typeof(v);
    if (got == JSON_FALSE)
        got = JSON_TRUE;
    if (got != want)
        return src_fail(s, ENG_EINVAL, "must be %s", expected(d, exp, sizeof exp));
    const char *text = json_is_true(v) ? "true" : "false";
    if (json_is_string(v))
        text = json_string_value(v);
    if (json_is_integer(v)) {
        snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        text = num;
    }
    return opt_set(d, text, s);
}

static int file_entry(const char *path, const char *key, json_t *v, opt_src *s)
{
    snprintf(s->where, sizeof s->where, "%s: \"%s\"", path, key);
    const opt_def *d = opt_find(key, strlen(key), STYLE_FILE);
    if (!d || (d->flags & OPT_NO_FILE)) {
        /* The likeliest slip is writing the command line's spelling. */
        const opt_def *cli = opt_find(key, strlen(key), STYLE_CLI);
        char buf[64];
        if (cli && !(cli->flags & OPT_NO_FILE))
            return src_fail(s, ENG_EINVAL, "unknown key (did you mean \"%s\"?)",
                            opt_key(cli, STYLE_FILE, buf, sizeof buf));
        return src_fail(s, ENG_EINVAL, "unknown key");
    }
    return d->type == OPT_MODELS ? file_models(d, v, s) : file_value(d, v, s);
}

/* via names where the path came from, for a file that cannot be opened. */
static int file_load(opt_load *ld, const char *path, const char *via)
{
    opt_src s = {.ld = ld, .rank = RANK_FILE};
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je), *v;
    const char *key;
    int rc = 0;
    if (!root && json_error_code(&je) == json_error_cannot_open_file)
        return eng_err_set(ld->err, ENG_EIO, "%s: %s", via, je.text);
    if (!root)
        return eng_err_set(ld->err, ENG_EFORMAT, "%s:%d:%d: %s", path, je.line, je.column, je.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return eng_err_set(ld->err, ENG_EFORMAT, "%s: must hold a JSON object", path);
    }
    json_object_foreach (root, key, v) {
        if ((rc = file_entry(path, key, v, &s)))
            break;
    }
    json_decref(root);
    return rc;
}

/* ---------------------------------------------------------------------------
 * The environment
 * ------------------------------------------------------------------------- */

static const char *env_find(char *const *envp, const char *name)
{
    size_t n = strlen(name);
    for (; envp && *envp; envp++)
        if (strncmp(*envp, name, n) == 0 && (*envp)[n] == '=')
            return *envp + n + 1;
    return NULL;
}

/* PREDICTD_MODEL holds a comma-separated list; empty items are skipped. */
static int env_models(const opt_def *d, const char *list, opt_src *s)
{
    while (*list) {
        size_t n = strcspn(list, ",");
        if (n) {
            char *item = strndup(list, n);
            if (!item)
                return src_fail(s, ENG_ENOMEM, "out of memory");
            int rc = parse_model(d, item, NULL, s);
            free(item);
            if (rc)
                return rc;
        }
        list += n + (list[n] == ',');
    }
    return 0;
}

/* Unknown PREDICTD_* variables are not errors: the daemon sets some of its own
 * (PREDICTD_BLAS_REEXEC), and other tools may share the prefix. */
static int env_load(opt_load *ld, char *const *envp)
{
    opt_src s = {.ld = ld, .rank = RANK_ENV};
    for (size_t i = 0; i < N_OPTS; i++) {
        const opt_def *d = &opt_table[i];
        const char *v = env_find(envp, opt_key(d, STYLE_ENV, s.where, sizeof s.where));
        int rc = !v ? 0 : d->type == OPT_MODELS ? env_models(d, v, &s) : opt_set(d, v, &s);
        if (rc)
            return rc;
    }
    return 0;
}

/* ---------------------------------------------------------------------------
 * The command line
 * ------------------------------------------------------------------------- */

typedef struct opt_arg {
    const opt_def *def;
    const char *value;
} opt_arg;

enum { SCAN_OK, SCAN_HELP, SCAN_VERSION, SCAN_MAN };

/* Splits argv into (option, value) pairs in args without applying them, so the
 * file that --config names can be read first. A boolean's value is optional:
 * "--protect-ops" alone means true. */
static int cli_scan(int argc, char **argv, opt_arg *args, int *n, eng_err *err)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
            return SCAN_HELP;
        if (strcmp(a, "--version") == 0)
            return SCAN_VERSION;
        if (strcmp(a, "--man") == 0)
            return SCAN_MAN;
        char q[80], name[80];
        if (a[0] != '-' || strcmp(a, "--") == 0)
            return eng_err_set(err, ENG_EINVAL, "unexpected argument %s (see --help)",
                               quote(a, q, sizeof q));
        size_t len = strcspn(a, "=");
        const opt_def *d = a[1] == '-' ? opt_find(a + 2, len - 2, STYLE_CLI) : NULL;
        snprintf(name, sizeof name, "%.*s", (int)len, a);
        if (!d)
            return eng_err_set(err, ENG_EINVAL, "unknown option %s (see --help)",
                               quote(name, q, sizeof q));
        const char *v = a[len] == '=' ? a + len + 1 : NULL;
        if (!v && d->type == OPT_BOOL)
            v = i + 1 < argc && enum_find(bool_words, argv[i + 1]) ? argv[++i] : "true";
        /* "--host --port 80" is a forgotten value, not a host named "--port". */
        if (!v && (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0))
            return eng_err_set(err, ENG_EINVAL, "--%s: missing value (%s)", d->name,
                               d->arg ? d->arg : opt_types[d->type].arg);
        args[(*n)++] = (opt_arg){d, v ? v : argv[++i]};
    }
    return SCAN_OK;
}

static int cli_apply(opt_load *ld, const opt_arg *args, int n)
{
    opt_src s = {.ld = ld, .rank = RANK_CLI};
    for (int i = 0; i < n; i++) {
        snprintf(s.where, sizeof s.where, "--%s", args[i].def->name);
        int rc = opt_set(args[i].def, args[i].value, &s);
        if (rc)
            return rc;
    }
    return 0;
}

/* ---------------------------------------------------------------------------
 * Loading
 * ------------------------------------------------------------------------- */

static int defaults_load(opt_load *ld)
{
    opt_src s = {.ld = ld, .rank = RANK_DEFAULT};
    for (size_t i = 0; i < N_OPTS; i++) {
        const opt_def *d = &opt_table[i];
        snprintf(s.where, sizeof s.where, "the default of --%s", d->name);
        int rc = d->def ? opt_set(d, d->def, &s) : 0;
        if (rc)
            return rc;
    }
    return 0;
}

/* The file to read: the last --config, else PREDICTD_CONFIG. */
static int config_load(opt_load *ld, const opt_arg *args, int n, char *const *envp)
{
    const char *path = NULL, *via = "--config";
    for (int i = 0; i < n; i++)
        if (strcmp(args[i].def->name, "config") == 0)
            path = args[i].value;
    if (!path) {
        path = env_find(envp, "PREDICTD_CONFIG");
        via = "PREDICTD_CONFIG";
    }
    return path && *path ? file_load(ld, path, via) : 0;
}

/* Applies the sources from the lowest to the highest. */
static int sources_apply(opt_load *ld, const opt_arg *args, int n, char *const *envp)
{
    int rc = defaults_load(ld);
    if (rc == 0)
        rc = config_load(ld, args, n, envp);
    if (rc == 0)
        rc = env_load(ld, envp);
    if (rc == 0)
        rc = cli_apply(ld, args, n);
    if (rc == 0 && ld->o->n_models == 0)
        rc = eng_err_set(ld->err, ENG_EINVAL, "no model to serve: give --model [NAME=]DIR, "
                                              "PREDICTD_MODEL or \"models\" in a config file");
    return rc;
}

static int load(opt_load *ld, int argc, char **argv, char *const *envp)
{
    opt_arg *args = calloc((size_t)(argc > 0 ? argc : 1), sizeof *args);
    int n = 0, rc;
    if (!args)
        return eng_err_set(ld->err, ENG_ENOMEM, "out of memory");
    rc = cli_scan(argc, argv, args, &n, ld->err);
    if (rc == SCAN_OK)
        rc = sources_apply(ld, args, n, envp);
    else if (rc == SCAN_HELP)
        srv_options_usage(stdout);
    else if (rc == SCAN_VERSION)
        printf("predictd %s\n", PREDICTD_VERSION);
    else if (rc == SCAN_MAN)
        srv_options_man(stdout);
    free(args);
    return rc > 0 ? 1 : rc;
}

int srv_options_load(srv_options *o, int argc, char **argv, char *const *envp, eng_err *err)
{
    opt_load ld = {.o = o, .err = err, .models_rank = -1, .key_rank = -1};
    memset(o, 0, sizeof *o);
    int rc = load(&ld, argc, argv, envp);
    if (rc < 0)
        srv_options_free(o);
    return rc;
}

void srv_options_free(srv_options *o)
{
    models_clear(o);
    for (size_t i = 0; i < N_OPTS; i++)
        if (opt_table[i].type == OPT_STRING)
            free(*(char **)((char *)o + opt_table[i].offset));
    memset(o, 0, sizeof *o);
}

/* ---------------------------------------------------------------------------
 * --help
 * ------------------------------------------------------------------------- */

static const char usage_head[] =
    "usage: predictd --model [NAME=]DIR [--model [NAME=]DIR]... [OPTION]...\n"
    "       predictd predict|tokenize --model DIR ...\n"
    "\n"
    "Serves Hugging Face models over HTTP. Each option can also be set by the\n"
    "environment variable or the --config file key shown under it; per option the\n"
    "command line wins over the environment, and the environment over the file.\n";

static const char usage_tail[] = "\nOther:\n"
                                 "  --help, -h\n      Print this help and exit.\n"
                                 "  --version\n      Print the version and exit.\n"
                                 "  --man\n      Print the manual page (roff) and exit.\n"
                                 "\nEnvironment only:\n"
                                 "  PREDICTD_KERNELS=ref|avx2|avxvnni|avx512|avx512vnni\n"
                                 "      Use this kernel level or a lower one, not the widest the CPU has.\n";

static void usage_option(FILE *out, const opt_def *d)
{
    char arg[128], env[64], key[64];
    const char *a = d->arg ? d->arg : opt_types[d->type].arg;
    if (!a)
        a = enum_list(d->values, "|", arg, sizeof arg);
    fprintf(out, "  --%s %s", d->name, a);
    if (d->def)
        fprintf(out, " (default %s)", d->def);
    fputc('\n', out);
    for (const char *h = d->help; *h;) {
        size_t n = strcspn(h, "\n");
        fprintf(out, "      %.*s\n", (int)n, h);
        h += n + (h[n] == '\n');
    }
    fprintf(out, "      env %s", opt_key(d, STYLE_ENV, env, sizeof env));
    if (!(d->flags & OPT_NO_FILE))
        fprintf(out, ", file \"%s\"", opt_key(d, STYLE_FILE, key, sizeof key));
    fputc('\n', out);
}

void srv_options_usage(FILE *out)
{
    fputs(usage_head, out);
    for (size_t i = 0; i < N_OPTS; i++) {
        if (opt_table[i].group)
            fprintf(out, "\n%s:\n", opt_table[i].group);
        usage_option(out, &opt_table[i]);
    }
    fputs(usage_tail, out);
}

/* ---------------------------------------------------------------------------
 * The man page, predictd(8), from the same table as --help
 * ------------------------------------------------------------------------- */

/* Writes s with roff's special characters escaped. */
static void roff(FILE *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\')
            fputs("\\e", out);
        else if (*s == '-')
            fputs("\\-", out);
        else if ((*s == '.' || *s == '\'') && (s[-1] == '\n'))
            fprintf(out, "\\&%c", *s);
        else
            fputc(*s, out);
    }
}

static const char man_head[] =
    ".TH PREDICTD 8 \"\" \"predictd " PREDICTD_VERSION "\" \"System Administration\"\n"
    ".SH NAME\npredictd \\- serve Hugging Face models over HTTP\n"
    ".SH SYNOPSIS\n.B predictd\n\\-\\-model [\\fINAME\\fR=]\\fIDIR\\fR ... [\\fIOPTION\\fR]...\n"
    ".br\n.B predictd predict\n\\-\\-model \\fIDIR\\fR (\\-\\-text \\fITEXT\\fR | \\-\\-json \\fIBODY\\fR)\n"
    ".br\n.B predictd tokenize\n\\-\\-model \\fIDIR\\fR \\fITEXT\\fR\n"
    ".SH DESCRIPTION\n"
    "predictd loads DistilBERT, GPT\\-2 and CLIP checkpoints from Hugging Face model folders\n"
    "(config.json, model.safetensors, tokenizer files) and answers HTTP requests on an\n"
    "event loop, batching concurrent requests for the engine. POST /predict?text=... answers\n"
    "as the transformers pipeline; see /docs and /openapi.json for every endpoint.\n"
    ".PP\nEvery option below can also be set by the environment variable or the key of the\n"
    "JSON file named by \\-\\-config shown under it. Per option the command line wins over\n"
    "the environment, and the environment over the file.\n.SH OPTIONS\n";

static const char man_tail[] =
    ".SH SIGNALS\nSIGTERM and SIGINT stop accepting connections, answer the requests already\n"
    "accepted within \\-\\-shutdown\\-timeout seconds, and exit 0. A second signal exits at once.\n"
    ".SH FILES\n.TP\n/etc/predictd/predictd.json\nThe configuration file of the systemd unit.\n"
    ".SH SEE ALSO\nThe README in the source tree; GET /docs on a running daemon.\n";

void srv_options_man(FILE *out)
{
    fputs(man_head, out);
    for (size_t i = 0; i < N_OPTS; i++) {
        const opt_def *d = &opt_table[i];
        char arg[128], env[64], key[64];
        const char *a = d->arg ? d->arg : opt_types[d->type].arg;
        if (!a)
            a = enum_list(d->values, "|", arg, sizeof arg);
        if (d->group) {
            fputs(".SS ", out);
            roff(out, d->group);
            fputc('\n', out);
        }
        fputs(".TP\n.BR \\-\\-", out);
        roff(out, d->name);
        fputs(" \" \\fI", out);
        roff(out, a);
        fputs("\\fR\"\n", out);
        roff(out, d->help);
        if (d->def) {
            fputs(" Default: ", out);
            roff(out, d->def);
            fputc('.', out);
        }
        fprintf(out, "\n.br\nEnvironment \\fB%s\\fR", opt_key(d, STYLE_ENV, env, sizeof env));
        if (!(d->flags & OPT_NO_FILE))
            fprintf(out, ", file key \\fB%s\\fR", opt_key(d, STYLE_FILE, key, sizeof key));
        fputs(".\n", out);
    }
    fputs(man_tail, out);
}
