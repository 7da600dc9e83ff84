#include "tests/unit/test.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "engine/tensor.h"
#include "server/log.h"
#include "server/options.h"

/* LOAD(&o, &err, env, "--port", "1") runs srv_options_load on
 * {"predictd", "--port", "1"} with env as the whole environment. */
#define LOAD(o, err, env, ...) load_args(o, err, env, (char *[]){"predictd", __VA_ARGS__, NULL})

static int load_args(srv_options *o, eng_err *err, char *const *env, char **argv)
{
    int argc = 0;
    while (argv[argc])
        argc++;
    *err = (eng_err){0};
    return srv_options_load(o, argc, argv, env, err);
}

/* Writes json to a fresh temporary file whose name goes into path. */
static void write_config(const char *json, char path[64])
{
    strcpy(path, "/tmp/predictd-options-XXXXXX");
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    CHECK_EQ_INT(write(fd, json, strlen(json)), strlen(json));
    close(fd);
}

/* Checks a failed load: a negative code, a message starting with prefix, on
 * one line, and o left empty. */
#define CHECK_FAILS(rc, o, err, prefix) check_fails(__FILE__, __LINE__, rc, o, err, prefix)

static void check_fails(const char *file, int line, int rc, const srv_options *o,
                        const eng_err *err, const char *prefix)
{
    if (rc >= 0)
        test_fail(file, line, "expected an error starting \"%s\", got rc %d", prefix, rc);
    else if (strncmp(err->msg, prefix, strlen(prefix)) != 0)
        test_fail(file, line, "message \"%s\" does not start with \"%s\"", err->msg, prefix);
    if (strchr(err->msg, '\n'))
        test_fail(file, line, "message spans lines: \"%s\"", err->msg);
    if (rc < 0 && (o->models || o->host || o->n_models))
        test_fail(file, line, "options not emptied after an error");
}

/* Loads a config file holding json (plus a model on the command line when
 * the file gives none) and checks the error. */
static void check_file_fails(int line, const char *json, const char *after_path)
{
    char path[64], prefix[256];
    srv_options o;
    eng_err err;
    write_config(json, path);
    snprintf(prefix, sizeof prefix, "%s%s", path, after_path);
    int rc = LOAD(&o, &err, NULL, "--config", path, "--model", "m");
    check_fails(__FILE__, line, rc, &o, &err, prefix);
    srv_options_free(&o);
    unlink(path);
}

TEST(options_defaults)
{
    srv_options o;
    eng_err err;
    CHECK_EQ_INT(LOAD(&o, &err, NULL, "--model", "models/demo/sst2-distilbert-small"), 0);
    CHECK_EQ_INT(o.n_models, 1);
    CHECK_STR(o.models[0].name, "sst2-distilbert-small");
    CHECK_STR(o.models[0].dir, "models/demo/sst2-distilbert-small");
    CHECK_EQ_INT(o.models[0].dtype, -1);
    CHECK_STR(o.host, "127.0.0.1");
    CHECK_EQ_INT(o.port, 8000);
    CHECK(o.config == NULL);
    CHECK_EQ_INT(o.dtype, ENG_F32);
    CHECK_EQ_INT(o.threads, 0);
    CHECK_EQ_INT(o.max_batch_size, 32);
    CHECK_EQ_INT(o.max_batch_tokens, 8192);
    CHECK_EQ_INT(o.max_batch_wait_us, 2000);
    CHECK_EQ_INT(o.max_queue, 256);
    CHECK_EQ_INT(o.max_client_batch_size, 32);
    CHECK_EQ_INT(o.max_input_tokens, 0);
    CHECK_EQ_INT(o.max_batch_total_tokens, 16384);
    CHECK_EQ_INT(o.max_new_tokens_limit, 1024);
    CHECK_EQ_INT(o.max_body_bytes, 16777216);
    CHECK_EQ_INT(o.max_header_bytes, 16384);
    CHECK_EQ_INT(o.max_connections, 1024);
    CHECK_EQ_INT(o.timeout, 30);
    CHECK_EQ_INT(o.shutdown_timeout, 30);
    CHECK_EQ_INT(o.max_image_bytes, 16777216);
    CHECK_EQ_INT(o.max_image_pixels, 40000000);
    CHECK_EQ_INT(o.log_format, SRV_LOG_FORMAT_TEXT);
    CHECK_EQ_INT(o.log_level, SRV_LOG_INFO);
    CHECK(o.access_log);
    CHECK(o.api_key == NULL);
    CHECK(o.api_key_file == NULL);
    CHECK(!o.protect_ops);
    srv_options_free(&o);
}

TEST(options_cli_alone)
{
    srv_options o;
    eng_err err;
    int rc = LOAD(&o, &err, NULL, "--model=a=/m/a", "--host", "0.0.0.0", "--port=9000",
                  "--dtype", "bf16", "--threads", "4", "--max-batch-size=64",
                  "--max-body-bytes", "1048576", "--log-format", "json", "--log-level=debug",
                  "--access-log", "no", "--api-key", "s3cret", "--protect-ops",
                  "--max-image-pixels", "100");
    CHECK_EQ_INT(rc, 0);
    CHECK_STR(o.models[0].name, "a");
    CHECK_STR(o.host, "0.0.0.0");
    CHECK_EQ_INT(o.port, 9000);
    CHECK_EQ_INT(o.dtype, ENG_BF16);
    CHECK_EQ_INT(o.threads, 4);
    CHECK_EQ_INT(o.max_batch_size, 64);
    CHECK_EQ_INT(o.max_body_bytes, 1048576);
    CHECK_EQ_INT(o.log_format, SRV_LOG_FORMAT_JSON);
    CHECK_EQ_INT(o.log_level, SRV_LOG_DEBUG);
    CHECK(!o.access_log);
    CHECK_STR(o.api_key, "s3cret");
    CHECK(o.protect_ops);
    CHECK_EQ_INT(o.max_image_pixels, 100);
    srv_options_free(&o);
}

TEST(options_env_alone)
{
    char *env[] = {"HOME=/root", "PREDICTD_MODEL=a=/m/a", "PREDICTD_PORT=9001",
                   "PREDICTD_MAX_BATCH_SIZE=7", "PREDICTD_LOG_LEVEL=warn",
                   "PREDICTD_ACCESS_LOG=0", "PREDICTD_API_KEY_FILE=/etc/key",
                   "PREDICTD_BLAS_REEXEC=haswell", "PREDICTD_PROTECT_OPS=yes", NULL};
    srv_options o;
    eng_err err;
    CHECK_EQ_INT(LOAD(&o, &err, env, NULL), 0);
    CHECK_EQ_INT(o.n_models, 1);
    CHECK_STR(o.models[0].dir, "/m/a");
    CHECK_EQ_INT(o.port, 9001);
    CHECK_EQ_INT(o.max_batch_size, 7);
    CHECK_EQ_INT(o.log_level, SRV_LOG_WARN);
    CHECK(!o.access_log);
    CHECK(o.protect_ops);
    CHECK_STR(o.api_key_file, "/etc/key");
    srv_options_free(&o);
}

TEST(options_file_alone)
{
    char path[64];
    write_config("{\"models\": {\"x\": \"/m/x\"}, \"port\": 9002, \"host\": \"::1\","
                 " \"max_queue\": 3, \"access_log\": false, \"log_format\": \"json\","
                 " \"max_body_bytes\": 4096, \"api_key\": \"k\"}", path);
    char *env[] = {NULL, NULL};
    char var[96];
    snprintf(var, sizeof var, "PREDICTD_CONFIG=%s", path);
    env[0] = var;
    srv_options o;
    eng_err err;
    CHECK_EQ_INT(LOAD(&o, &err, env, NULL), 0);
    CHECK_STR(o.config, path);
    CHECK_EQ_INT(o.n_models, 1);
    CHECK_STR(o.models[0].name, "x");
    CHECK_EQ_INT(o.port, 9002);
    CHECK_STR(o.host, "::1");
    CHECK_EQ_INT(o.max_queue, 3);
    CHECK(!o.access_log);
    CHECK_EQ_INT(o.log_format, SRV_LOG_FORMAT_JSON);
    CHECK_EQ_INT(o.max_body_bytes, 4096);
    CHECK_STR(o.api_key, "k");
    srv_options_free(&o);
    unlink(path);
}

TEST(options_precedence)
{
    char path[64];
    write_config("{\"port\": 1111, \"max_batch_size\": 10, \"log_level\": \"debug\","
                 " \"host\": \"10.0.0.1\", \"api_key\": \"from-file\"}", path);
    char *env[] = {"PREDICTD_PORT=2222", "PREDICTD_MAX_BATCH_SIZE=20",
                   "PREDICTD_HOST=10.0.0.2", "PREDICTD_API_KEY=from-env", NULL};
    srv_options o;
    eng_err err;
    int rc = LOAD(&o, &err, env, "--config", path, "--port", "3333", "--model", "m",
                  "--host", "10.0.0.3", "--api-key=");
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(o.port, 3333);                 /* CLI over env and file */
    CHECK_EQ_INT(o.max_batch_size, 20);         /* env over file */
    CHECK_EQ_INT(o.log_level, SRV_LOG_DEBUG);   /* file over default */
    CHECK_EQ_INT(o.max_queue, 256);             /* the default */
    CHECK_STR(o.host, "10.0.0.3");
    CHECK(o.api_key == NULL);                   /* an empty value clears */
    srv_options_free(&o);

    CHECK_EQ_INT(LOAD(&o, &err, env, "--config", path, "--model", "m"), 0);
    CHECK_EQ_INT(o.port, 2222);
    CHECK_STR(o.api_key, "from-env");
    srv_options_free(&o);

    /* The key and the key file are one setting: a key file from a higher
     * source replaces a lower one's key (and the reverse); both from one
     * source stay both, for srv_auth_init to refuse. */
    char *file_env[] = {"PREDICTD_API_KEY_FILE=/run/env-key", NULL};
    CHECK_EQ_INT(LOAD(&o, &err, file_env, "--config", path, "--model", "m"), 0);
    CHECK(o.api_key == NULL);
    CHECK_STR(o.api_key_file, "/run/env-key");
    srv_options_free(&o);
    CHECK_EQ_INT(LOAD(&o, &err, file_env, "--config", path, "--model", "m", "--api-key", "cli"), 0);
    CHECK_STR(o.api_key, "cli");
    CHECK(o.api_key_file == NULL);
    srv_options_free(&o);
    CHECK_EQ_INT(LOAD(&o, &err, NULL, "--model", "m", "--api-key", "a", "--api-key-file", "/k"), 0);
    CHECK_STR(o.api_key, "a");
    CHECK_STR(o.api_key_file, "/k");
    srv_options_free(&o);
    unlink(path);
}

TEST(options_model_name_and_dir)
{
    srv_options o;
    eng_err err;
    int rc = LOAD(&o, &err, NULL, "--model", "sst2=/models/a", "--model", "/models/gpt2/",
                  "--model", "/odd/x=y/clip", "--model", "rel");
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(o.n_models, 4);
    if (o.n_models == 4) {
        CHECK_STR(o.models[0].name, "sst2"); /* the first is the default model */
        CHECK_STR(o.models[0].dir, "/models/a");
        CHECK_STR(o.models[1].name, "gpt2");
        CHECK_STR(o.models[1].dir, "/models/gpt2/");
        CHECK_STR(o.models[2].name, "clip"); /* an '=' after a '/' is the folder's */
        CHECK_STR(o.models[2].dir, "/odd/x=y/clip");
        CHECK_STR(o.models[3].name, "rel");
    }
    srv_options_free(&o);
}

TEST(options_model_lists)
{
    char path[64];
    write_config("{\"models\": [{\"name\": \"a\", \"path\": \"/m/a\", \"dtype\": \"int8\"},"
                 " {\"path\": \"/m/b\"}]}", path);
    char var[96];
    snprintf(var, sizeof var, "PREDICTD_CONFIG=%s", path);
    char *file_only[] = {var, NULL};
    char *with_env[] = {var, "PREDICTD_MODEL=c=/m/c,,/m/d,", NULL};
    char *empty_env[] = {var, "PREDICTD_MODEL=", NULL};
    srv_options o;
    eng_err err;

    CHECK_EQ_INT(LOAD(&o, &err, file_only, NULL), 0);
    CHECK_EQ_INT(o.n_models, 2);
    if (o.n_models == 2) {
        CHECK_STR(o.models[0].name, "a");
        CHECK_EQ_INT(o.models[0].dtype, ENG_I8);
        CHECK_STR(o.models[1].name, "b");
        CHECK_EQ_INT(o.models[1].dtype, -1);
    }
    srv_options_free(&o);

    /* The highest source that names any model replaces the others' whole. */
    CHECK_EQ_INT(LOAD(&o, &err, with_env, NULL), 0);
    CHECK_EQ_INT(o.n_models, 2);
    if (o.n_models == 2) {
        CHECK_STR(o.models[0].name, "c");
        CHECK_STR(o.models[1].name, "d");
    }
    srv_options_free(&o);

    CHECK_EQ_INT(LOAD(&o, &err, with_env, "--model", "e=/m/e"), 0);
    CHECK_EQ_INT(o.n_models, 1);
    CHECK_STR(o.models[0].name, "e");
    srv_options_free(&o);

    CHECK_EQ_INT(LOAD(&o, &err, empty_env, NULL), 0);
    CHECK_EQ_INT(o.n_models, 2);
    srv_options_free(&o);
    unlink(path);
}

TEST(options_booleans)
{
    char *env[] = {"PREDICTD_ACCESS_LOG=no", "PREDICTD_PROTECT_OPS=TRUE", NULL};
    srv_options o;
    eng_err err;
    CHECK_EQ_INT(LOAD(&o, &err, env, "--model", "m"), 0);
    CHECK(!o.access_log);
    CHECK(o.protect_ops);
    srv_options_free(&o);
    CHECK_EQ_INT(LOAD(&o, &err, env, "--access-log", "--protect-ops", "0", "--model", "m"), 0);
    CHECK(o.access_log);
    CHECK(!o.protect_ops);
    srv_options_free(&o);
    CHECK_EQ_INT(LOAD(&o, &err, env, "--model", "m", "--access-log=1", "--protect-ops"), 0);
    CHECK(o.access_log);
    CHECK(o.protect_ops);
    srv_options_free(&o);
}

TEST(options_dtype_names_match_engine)
{
    const char *names[] = {"f32", "f16", "bf16", "int8"};
    for (size_t i = 0; i < 4; i++) {
        srv_options o;
        eng_err err;
        CHECK_EQ_INT(LOAD(&o, &err, NULL, "--model", "m", "--dtype", (char *)names[i]), 0);
        CHECK_EQ_INT(o.dtype, eng_dtype_from_name(names[i]));
        srv_options_free(&o);
    }
}

TEST(options_cli_errors)
{
    srv_options o;
    eng_err err;
    char *env[] = {NULL};
    CHECK_FAILS(LOAD(&o, &err, env, "--model", "m", "--nope", "1"), &o, &err,
                "unknown option \"--nope\"");
    CHECK_FAILS(LOAD(&o, &err, env, "--model", "m", "-p", "1"), &o, &err, "unknown option \"-p\"");
    CHECK_FAILS(LOAD(&o, &err, env, "--model", "m", "stray"), &o, &err,
                "unexpected argument \"stray\"");
    CHECK_FAILS(LOAD(&o, &err, env, "--model", "m", "--port"), &o, &err, "--port: missing value");
    CHECK_FAILS(LOAD(&o, &err, env, "--host", "--port", "1", "--model", "m"), &o, &err,
                "--host: missing value");
    CHECK_FAILS(LOAD(&o, &err, env, "--model", "m", "--host="), &o, &err,
                "--host: must not be empty");
}

TEST(options_value_errors)
{
    srv_options o;
    eng_err err;
    const char *not_ints[] = {"abc", "12x", "", "+5", " 5", "0x10", "1.5", "-"};
    for (size_t i = 0; i < sizeof not_ints / sizeof *not_ints; i++) {
        char prefix[64];
        snprintf(prefix, sizeof prefix, "--max-batch-size: \"%s\" is not an integer", not_ints[i]);
        CHECK_FAILS(LOAD(&o, &err, NULL, "--model", "m", "--max-batch-size", (char *)not_ints[i]),
                    &o, &err, prefix);
    }
    CHECK_FAILS(LOAD(&o, &err, NULL, "--model", "m", "--port", "0"), &o, &err,
                "--port: 0 is out of range: must be an integer from 1 to 65535");
    CHECK_FAILS(LOAD(&o, &err, NULL, "--model", "m", "--port=65536"), &o, &err,
                "--port: 65536 is out of range");
    CHECK_FAILS(LOAD(&o, &err, NULL, "--model", "m", "--max-body-bytes", "99999999999999999999"),
                &o, &err, "--max-body-bytes: 99999999999999999999 is out of range");
    CHECK_FAILS(LOAD(&o, &err, NULL, "--model", "m", "--threads", "-1"), &o, &err,
                "--threads: -1 is out of range: must be an integer from 0 to");
    CHECK_FAILS(LOAD(&o, &err, NULL, "--model", "m", "--dtype", "f64"), &o, &err,
                "--dtype: \"f64\" is not one of f32, f16, bf16, int8");
    CHECK_FAILS(LOAD(&o, &err, NULL, "--model", "m", "--log-level", "verbose"), &o, &err,
                "--log-level: \"verbose\" is not one of debug, info, warn, error");
    CHECK_FAILS(LOAD(&o, &err, NULL, "--model", "m", "--access-log=maybe"), &o, &err,
                "--access-log: \"maybe\" is not a boolean");

    char *env_port[] = {"PREDICTD_PORT=70000", NULL};
    CHECK_FAILS(LOAD(&o, &err, env_port, "--model", "m"), &o, &err,
                "PREDICTD_PORT: 70000 is out of range: must be an integer from 1 to 65535");
    char *env_bool[] = {"PREDICTD_ACCESS_LOG=maybe\nyes", NULL};
    CHECK_FAILS(LOAD(&o, &err, env_bool, "--model", "m"), &o, &err,
                "PREDICTD_ACCESS_LOG: \"maybe\\nyes\" is not a boolean");
    char *env_int[] = {"PREDICTD_MAX_QUEUE=lots", NULL};
    CHECK_FAILS(LOAD(&o, &err, env_int, "--model", "m"), &o, &err,
                "PREDICTD_MAX_QUEUE: \"lots\" is not an integer");
}

TEST(options_model_errors)
{
    srv_options o;
    eng_err err;
    char long_name[80];
    memset(long_name, 'a', 65);
    strcpy(long_name + 65, "=/m");
    CHECK_FAILS(LOAD(&o, &err, NULL, NULL), &o, &err, "no model to serve");
    CHECK_FAILS(LOAD(&o, &err, NULL, "--model", "a=/m/1", "--model", "/n/a"), &o, &err,
                "--model: duplicate model name \"a\"");
    CHECK_FAILS(LOAD(&o, &err, NULL, "--model", "..=/m"), &o, &err,
                "--model: \"..\" is not a valid model name");
    CHECK_FAILS(LOAD(&o, &err, NULL, "--model", ".=/m"), &o, &err,
                "--model: \".\" is not a valid model name");
    CHECK_FAILS(LOAD(&o, &err, NULL, "--model", "bad name=/m"), &o, &err,
                "--model: \"bad name\" is not a valid model name");
    CHECK_FAILS(LOAD(&o, &err, NULL, "--model", "a%2f=/m"), &o, &err,
                "--model: \"a%2f\" is not a valid model name");
    CHECK_FAILS(LOAD(&o, &err, NULL, "--model", long_name), &o, &err, "--model: \"aaaa");
    CHECK_FAILS(LOAD(&o, &err, NULL, "--model", "/"), &o, &err,
                "--model: the folder name \"\" is not a valid model name");
    CHECK_FAILS(LOAD(&o, &err, NULL, "--model", "/m/my model"), &o, &err,
                "--model: the folder name \"my model\" is not a valid model name");
    CHECK_FAILS(LOAD(&o, &err, NULL, "--model", "a="), &o, &err, "--model: empty model folder");
    char *env[] = {"PREDICTD_MODEL=/m/x,/n/x", NULL};
    CHECK_FAILS(LOAD(&o, &err, env, NULL), &o, &err,
                "PREDICTD_MODEL: duplicate model name \"x\"");

    /* A 64-character name is the longest allowed. */
    strcpy(long_name + 64, "=/m");
    CHECK_EQ_INT(LOAD(&o, &err, NULL, "--model", long_name), 0);
    srv_options_free(&o);
}

TEST(options_file_errors)
{
    check_file_fails(__LINE__, "{\"port\": \"8000\"}",
                     ": \"port\": must be an integer from 1 to 65535");
    check_file_fails(__LINE__, "{\"port\": 8000.5}", ": \"port\": must be an integer");
    check_file_fails(__LINE__, "{\"port\": 0}", ": \"port\": 0 is out of range");
    check_file_fails(__LINE__, "{\"max-batch-size\": 3}",
                     ": \"max-batch-size\": unknown key (did you mean \"max_batch_size\"?)");
    check_file_fails(__LINE__, "{\"bogus\": 3}", ": \"bogus\": unknown key");
    check_file_fails(__LINE__, "{\"config\": \"/x\"}", ": \"config\": unknown key");
    check_file_fails(__LINE__, "{\"access_log\": 1}", ": \"access_log\": must be true or false");
    check_file_fails(__LINE__, "{\"host\": 5}", ": \"host\": must be a string");
    check_file_fails(__LINE__, "{\"dtype\": 1}",
                     ": \"dtype\": must be one of f32, f16, bf16, int8");
    check_file_fails(__LINE__, "{\"dtype\": \"f64\"}", ": \"dtype\": \"f64\" is not one of");
    check_file_fails(__LINE__, "{\"models\": \"/m\"}", ": \"models\": must be a list of");
    check_file_fails(__LINE__, "{\"models\": [\"/m\"]}", ": \"models\"[0]: must be an object");
    check_file_fails(__LINE__, "{\"models\": [{\"path\": \"/m\", \"file\": \"x\"}]}",
                     ": \"models\"[0]: \"file\": unknown key");
    check_file_fails(__LINE__, "{\"models\": [{\"name\": \"a\"}]}",
                     ": \"models\"[0]: \"path\" is missing");
    check_file_fails(__LINE__, "{\"models\": [{\"path\": 3}]}",
                     ": \"models\"[0]: \"path\": must be a string");
    check_file_fails(__LINE__, "{\"models\": [{\"path\": \"/m\", \"dtype\": \"f64\"}]}",
                     ": \"models\"[0]: \"dtype\": \"f64\" is not one of");
    check_file_fails(__LINE__, "{\"models\": [{\"path\": \"/a/m\"}, {\"path\": \"/b/m\"}]}",
                     ": \"models\"[1]: duplicate model name \"m\"");
    check_file_fails(__LINE__, "{\"models\": [{\"name\": \"../etc\", \"path\": \"/m\"}]}",
                     ": \"models\"[0]: \"../etc\" is not a valid model name");
    check_file_fails(__LINE__, "{\"models\": {\"a\": 1}}", ": \"models\": \"a\": must be a string");
    check_file_fails(__LINE__, "{\"models\": {\"a/b\": \"/m\"}}",
                     ": \"models\": \"a/b\": \"a/b\" is not a valid model name");
    check_file_fails(__LINE__, "[1]", ": must hold a JSON object");
    check_file_fails(__LINE__, "{\"port\": 1,}", ":1:");
    check_file_fails(__LINE__, "{\"port\": 1, \"port\": 2}", ":1:");
}

TEST(options_missing_config_file)
{
    srv_options o;
    eng_err err;
    CHECK_FAILS(LOAD(&o, &err, NULL, "--config", "/nonexistent/p.json", "--model", "m"), &o, &err,
                "--config: unable to open /nonexistent/p.json");
    char *env[] = {"PREDICTD_CONFIG=/nonexistent/q.json", NULL};
    CHECK_FAILS(LOAD(&o, &err, env, "--model", "m"), &o, &err,
                "PREDICTD_CONFIG: unable to open /nonexistent/q.json");
    srv_options_free(&o); /* harmless after an error */
}

TEST(options_example_config)
{
    srv_options o;
    eng_err err;
    int rc = LOAD(&o, &err, NULL, "--config", "config/predictd.example.json");
    CHECK_MSG(rc == 0, "%s", err.msg);
    CHECK_EQ_INT(o.n_models, 3);
    if (o.n_models == 3) {
        CHECK_STR(o.models[0].name, "sst2");
        CHECK_STR(o.models[0].dir, "models/demo/sst2-distilbert-small");
        CHECK_EQ_INT(o.models[0].dtype, ENG_F32);
        CHECK_STR(o.models[1].dir, "models/demo/shakespeare-gpt2-small");
        CHECK_STR(o.models[2].dir, "models/demo/shapes-clip-small");
        CHECK_EQ_INT(o.models[2].dtype, -1);
    }
    CHECK_EQ_INT(o.port, 8000);
    CHECK(o.api_key == NULL);
    srv_options_free(&o);
}

/* Runs a load with stdout sent to /dev/null, for --help and --version. */
static int load_quietly(char *flag)
{
    srv_options o;
    eng_err err;
    fflush(stdout);
    int saved = dup(1), null = open("/dev/null", O_WRONLY);
    dup2(null, 1);
    int rc = LOAD(&o, &err, NULL, "--port", "1", flag, "--nope");
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    close(null);
    srv_options_free(&o);
    return rc;
}

TEST(options_help)
{
    static const char *const names[] = {
        "model", "dtype", "threads", "host", "port", "config", "max-batch-size",
        "max-batch-tokens", "max-batch-wait-us", "adaptive-batch-wait", "max-queue",
        "max-client-batch-size", "max-input-tokens", "max-batch-total-tokens", "max-new-tokens-limit", "max-body-bytes",
        "max-header-bytes", "max-connections", "timeout", "request-timeout", "shutdown-timeout", "max-image-bytes",
        "max-image-pixels", "log-format", "log-level", "access-log", "api-key", "api-key-file",
        "protect-ops"};
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    srv_options_usage(f);
    fclose(f);
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char opt[64], env[64];
        snprintf(opt, sizeof opt, "  --%s ", names[i]);
        snprintf(env, sizeof env, "env PREDICTD_");
        for (const char *c = names[i]; *c; c++) {
            char ch = *c == '-' ? '_' : (char)(*c - 'a' + 'A');
            strncat(env, &ch, 1);
        }
        CHECK_MSG(strstr(text, opt), "--help lacks %s", opt);
        CHECK_MSG(strstr(text, env), "--help lacks %s", env);
    }
    CHECK(strstr(text, "  --max-body-bytes BYTES (default 16777216)\n"));
    CHECK(strstr(text, "env PREDICTD_MAX_BODY_BYTES, file \"max_body_bytes\"\n"));
    CHECK(strstr(text, "--dtype f32|f16|bf16|int8"));
    for (char *line = text; *line;) {
        size_t n = strcspn(line, "\n");
        CHECK_MSG(n <= 80, "--help line over 80 columns: %.*s", (int)n, line);
        line += n + (line[n] == '\n');
    }
    free(text);
    /* --help and --version stop the load before anything after them is read. */
    CHECK_EQ_INT(load_quietly("--help"), 1);
    CHECK_EQ_INT(load_quietly("--version"), 1);
}
