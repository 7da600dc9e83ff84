/* Reading a model folder's JSON configuration files (config.json,
 * generation_config.json, ...) with errors that name the file and the field.
 *
 * Getters are sticky: the first missing or mistyped field is remembered, later
 * getters return their defaults, and eng_config_check() reports that first
 * error. A model's load function reads every field it needs, then checks once. */
#ifndef ENG_CONFIG_H
#define ENG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "engine/error.h"

typedef struct eng_config eng_config;

/* Loads path. A missing file is ENG_ENOTFOUND, so optional files can be told
 * apart from broken ones. */
int eng_config_load(const char *path, eng_config **out, eng_err *err);
void eng_config_free(eng_config *cfg);

/* Keys may name nested fields with dots: "text_config.hidden_size".
 * The plain getters require the field; the _or getters return dflt when it
 * is absent or null, and record an error only for a wrong type. */
long eng_config_int(eng_config *cfg, const char *key);
long eng_config_int_or(eng_config *cfg, const char *key, long dflt);
double eng_config_num_or(eng_config *cfg, const char *key, double dflt);
bool eng_config_bool_or(eng_config *cfg, const char *key, bool dflt);
/* The returned string lives as long as cfg. */
const char *eng_config_str(eng_config *cfg, const char *key);
const char *eng_config_str_or(eng_config *cfg, const char *key, const char *dflt);
bool eng_config_has(const eng_config *cfg, const char *key);

/* The first element of a string array (e.g. "architectures"), or NULL. */
const char *eng_config_first_str(eng_config *cfg, const char *key);

/* Reads an {"0": "NEGATIVE", "1": "POSITIVE"} map into labels[0..n), each a
 * malloc'd copy the caller frees (with the array). Ids must be 0..n-1. */
int eng_config_id2label(eng_config *cfg, const char *key, char ***labels, size_t *n);

/* Records an error of the caller's own (a value out of range), unless one is
 * already recorded; the message is prefixed with the file name. */
void eng_config_fail(eng_config *cfg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Returns 0, or the first recorded error copied into err. */
int eng_config_check(const eng_config *cfg, eng_err *err);

#endif
