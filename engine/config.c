#include "engine/config.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct eng_config {
    json_t *root;
    char *path;
    eng_err first; /* first error, code 0 while none */
};

int eng_config_load(const char *path, eng_config **out, eng_err *err)
{
    struct stat sb;
    if (stat(path, &sb) != 0)
        return eng_err_set(err, ENG_ENOTFOUND, "%s: no such file", path);
    json_error_t jerr;
    /* Integers are read as reals: tokenizer configs hold sentinels such as
     * 1000000000000000019884624838656 that overflow jansson's integers. */
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL, &jerr);
    if (!root)
        return eng_err_set(err, ENG_EFORMAT, "%s: not valid JSON: %s (line %d)", path, jerr.text,
                           jerr.line);
    if (!json_is_object(root)) {
        json_decref(root);
        return eng_err_set(err, ENG_EFORMAT, "%s: not a JSON object", path);
    }
    eng_config *cfg = calloc(1, sizeof *cfg);
    if (!cfg || !(cfg->path = strdup(path))) {
        free(cfg);
        json_decref(root);
        return eng_err_set(err, ENG_ENOMEM, "%s: out of memory", path);
    }
    cfg->root = root;
    *out = cfg;
    return 0;
}

void eng_config_free(eng_config *cfg)
{
    if (!cfg)
        return;
    json_decref(cfg->root);
    free(cfg->path);
    free(cfg);
}

void eng_config_fail(eng_config *cfg, const char *fmt, ...)
{
    if (cfg->first.code)
        return;
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    eng_err_set(&cfg->first, ENG_EFORMAT, "%s: %s", cfg->path, msg);
}

int eng_config_check(const eng_config *cfg, eng_err *err)
{
    if (!cfg->first.code)
        return 0;
    if (err)
        *err = cfg->first;
    return cfg->first.code;
}

/* Walks a dotted key; NULL when any part is absent. */
static json_t *lookup(const eng_config *cfg, const char *key)
{
    json_t *node = cfg->root;
    char part[128];
    while (node && *key) {
        size_t n = strcspn(key, ".");
        if (n >= sizeof part)
            return NULL;
        memcpy(part, key, n);
        part[n] = '\0';
        node = json_is_object(node) ? json_object_get(node, part) : NULL;
        key += n + (key[n] == '.');
    }
    return json_is_null(node) ? NULL : node;
}

bool eng_config_has(const eng_config *cfg, const char *key)
{
    return lookup(cfg, key) != NULL;
}

long eng_config_int_or(eng_config *cfg, const char *key, long dflt)
{
    json_t *v = lookup(cfg, key);
    if (!v)
        return dflt;
    /* Every number is a real here (see eng_config_load): an integer field
     * is one whose value is integral. */
    if (json_is_real(v) && fabs(json_real_value(v)) < 9e18 &&
        json_real_value(v) == (double)(long)json_real_value(v))
        return (long)json_real_value(v);
    if (!json_is_integer(v)) {
        eng_config_fail(cfg, "field \"%s\" must be an integer", key);
        return dflt;
    }
    return (long)json_integer_value(v);
}

long eng_config_int(eng_config *cfg, const char *key)
{
    if (!lookup(cfg, key)) {
        eng_config_fail(cfg, "missing required field \"%s\"", key);
        return 0;
    }
    return eng_config_int_or(cfg, key, 0);
}

double eng_config_num_or(eng_config *cfg, const char *key, double dflt)
{
    json_t *v = lookup(cfg, key);
    if (!v)
        return dflt;
    if (!json_is_number(v)) {
        eng_config_fail(cfg, "field \"%s\" must be a number", key);
        return dflt;
    }
    return json_number_value(v);
}

bool eng_config_bool_or(eng_config *cfg, const char *key, bool dflt)
{
    json_t *v = lookup(cfg, key);
    if (!v)
        return dflt;
    if (!json_is_boolean(v)) {
        eng_config_fail(cfg, "field \"%s\" must be true or false", key);
        return dflt;
    }
    return json_is_true(v);
}

const char *eng_config_str_or(eng_config *cfg, const char *key, const char *dflt)
{
    json_t *v = lookup(cfg, key);
    if (!v)
        return dflt;
    if (!json_is_string(v)) {
        eng_config_fail(cfg, "field \"%s\" must be a string", key);
        return dflt;
    }
    return json_string_value(v);
}

const char *eng_config_str(eng_config *cfg, const char *key)
{
    if (!lookup(cfg, key)) {
        eng_config_fail(cfg, "missing required field \"%s\"", key);
        return "";
    }
    return eng_config_str_or(cfg, key, "");
}

const char *eng_config_first_str(eng_config *cfg, const char *key)
{
    json_t *v = lookup(cfg, key);
    if (json_is_string(v))
        return json_string_value(v);
    return json_is_array(v) ? json_string_value(json_array_get(v, 0)) : NULL;
}

static void free_labels(char **labels, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(labels[i]);
    free(labels);
}

int eng_config_id2label(eng_config *cfg, const char *key, char ***labels, size_t *n)
{
    json_t *obj = lookup(cfg, key);
    *labels = NULL;
    *n = 0;
    if (!json_is_object(obj) || json_object_size(obj) == 0) {
        eng_config_fail(cfg, "field \"%s\" must be a non-empty object of id -> label", key);
        return ENG_EFORMAT;
    }
    size_t count = json_object_size(obj);
    char **out = calloc(count, sizeof *out);
    if (!out)
        return ENG_ENOMEM;
    const char *id;
    json_t *label;
    json_object_foreach(obj, id, label) {
        char *end;
        long i = strtol(id, &end, 10);
        if (*end || end == id || i < 0 || (size_t)i >= count || out[i] || !json_is_string(label)) {
            eng_config_fail(cfg, "field \"%s\": entry \"%s\" must map an id in 0..%zu to a label "
                            "string, once", key, id, count - 1);
            free_labels(out, count);
            return ENG_EFORMAT;
        }
        if (!(out[i] = strdup(json_string_value(label)))) {
            free_labels(out, count);
            return ENG_ENOMEM;
        }
    }
    *labels = out;
    *n = count;
    return 0;
}
