/* Regression tests for what the libFuzzer targets (tests/fuzz) found: each
 * test replays one minimised input through the public API, and its
 * reproducer is also in the target's seed corpus under
 * tests/fuzz/corpus/<target>/regress_*. The failures these guard against
 * were sanitizer reports, so a test here matters most in the ASan+UBSan
 * build (make asan-test); in the plain build it checks the error path. */
#include "tests/unit/test.h"

#include <arpa/inet.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "models/image.h"
#include "models/model.h"
#include "server/handlers.h"
#include "server/http.h"
#include "server/server.h"

/* Writes text as dir/config.json in a new temporary folder; returns 0. */
static int config_folder(char *dir, size_t cap, const char *text)
{
    snprintf(dir, cap, "/tmp/predictd-fuzzreg-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    char path[256];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fputs(text, f);
    return fclose(f);
}

static void remove_config_folder(const char *dir)
{
    char path[256];
    snprintf(path, sizeof path, "%s/config.json", dir);
    unlink(path);
    rmdir(dir);
}

/* fuzz_config, corpus/config/regress_clip_grid_overflow: a CLIP config whose
 * image_size / patch_size is past 46340 made read_config compute
 * grid * grid + 1 in int (signed overflow, UBSan) before refusing it. */
TEST(fuzz_clip_config_grid_overflow)
{
    static const char *const configs[] = {
        "{\"architectures\":[\"CLIPModel\"],\"vision_config\":{\"image_size\":2000000000,"
        "\"patch_size\":1}}",
        "{\"architectures\":[\"CLIPModel\"],\"vision_config\":{\"image_size\":-2000000000,"
        "\"patch_size\":1}}",
        "{\"architectures\":[\"CLIPModel\"],\"vision_config\":{\"image_size\":46341,"
        "\"patch_size\":1}}",
    };
    for (size_t i = 0; i < sizeof configs / sizeof *configs; i++) {
        char dir[64];
        CHECK(config_folder(dir, sizeof dir, configs[i]) == 0);
        model *m = NULL;
        eng_err err = {0};
        CHECK_EQ_INT(model_load(dir, NULL, &m, &err), ENG_EFORMAT);
        CHECK(m == NULL);
        remove_config_folder(dir);
    }
}

/* fuzz_image, corpus/image/regress_tall_png_geometry: with a large
 * shortest_edge (preprocessor_config.json may give up to 8192) a 1-pixel-wide
 * image's long side, shortest_edge * h / w, passed 2^32, and
 * img_resize_geometry cast it to uint32_t (undefined; UBSan's
 * float-cast-overflow). It now saturates, and the size is refused. */
TEST(fuzz_resize_geometry_overflow)
{
    img_preproc_cfg cfg;
    img_preproc_cfg_default(&cfg);
    cfg.shortest_edge = 8192;
    cfg.crop_h = cfg.crop_w = 8;
    uint32_t rw, rh;
    int64_t top, left;
    img_resize_geometry(1, 1000000, &cfg, &rw, &rh, &top, &left);
    CHECK_EQ_INT(rw, 8192);
    CHECK_EQ_INT(rh, UINT32_MAX);
    img_resize_geometry(1000000, 1, &cfg, &rw, &rh, &top, &left);
    CHECK_EQ_INT(rw, UINT32_MAX);
    CHECK_EQ_INT(rh, 8192);
    img_resize_geometry(300, 500, &cfg, &rw, &rh, &top, &left); /* unchanged in range */
    CHECK_EQ_INT(rw, 8192);
    CHECK_EQ_INT(rh, 13653);

    img_rgb8 img = {.px = calloc(3, 1000000), .w = 1, .h = 1000000};
    uint8_t crop[8 * 8 * 3];
    float out[8 * 8 * 3];
    eng_err err = {0};
    CHECK(img.px != NULL);
    if (img.px)
        CHECK_EQ_INT(img_clip_preprocess(&img, &cfg, crop, out, &err), ENG_EINVAL);
    img_rgb8_free(&img);
}

/* ---- one request through the real HTTP layer and router ---------------------- */

/* A client on its own thread: sends req to 127.0.0.1:port and reads the
 * answer until the server closes ("Connection: close"). */
typedef struct client {
    int port;
    const char *req;
    char answer[4096];
    atomic_bool done;
} client;

static void *client_run(void *arg)
{
    client *cl = arg;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)cl->port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        write(fd, cl->req, strlen(cl->req)) == (ssize_t)strlen(cl->req)) {
        size_t n = 0;
        ssize_t k;
        while (n < sizeof cl->answer - 1 && (k = read(fd, cl->answer + n, sizeof cl->answer - 1 - n)) > 0)
            n += (size_t)k;
        cl->answer[n] = '\0';
    }
    if (fd >= 0)
        close(fd);
    atomic_store(&cl->done, true);
    return NULL;
}

/* Serves one request with srv_handle_request (no workers: only requests
 * that are answered while parsing may be sent) and returns the answer's
 * status line and body in cl->answer. */
static void serve_one(model *m, const char *name, const srv_limits *limits, client *cl)
{
    srv_model_spec spec = {.name = (char *)name};
    srv_options opts = {.models = &spec, .n_models = 1};
    srv_worker worker = {.name = (char *)name, .model = m};
    srv_server s;
    memset(&s, 0, sizeof s);
    s.opts = &opts;
    s.workers = &worker;
    s.n_workers = 1;
    s.models = &m;
    s.limits = *limits;
    s.state = SRV_STATE_READY;
    CHECK(srv_metrics_new("test", "none", "ref", &s.metrics) == 0);

    uv_loop_t loop;
    uv_loop_init(&loop);
    srv_http *h = NULL;
    srv_http_cfg cfg = {.host = "127.0.0.1", .port = 0, .max_connections = 4, .timeout_s = 10,
                        .max_header_bytes = 16384, .max_body_bytes = 1 << 20};
    srv_http_hooks hooks = {.route = srv_route_request, .dispatch = srv_handle_request,
                            .completed = srv_request_completed, .ud = &s};
    eng_err err = {0};
    CHECK_MSG(srv_http_start(&h, &loop, &cfg, &hooks, &err) == 0, "%s", err.msg);
    if (h) {
        cl->port = srv_http_port(h);
        pthread_t t;
        CHECK(pthread_create(&t, NULL, client_run, cl) == 0);
        time_t deadline = time(NULL) + 15;
        while (!atomic_load(&cl->done) && time(NULL) < deadline)
            uv_run(&loop, UV_RUN_NOWAIT), usleep(1000);
        pthread_join(t, NULL);
        srv_http_stop(h);
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    uv_loop_close(&loop);
    srv_metrics_free(s.metrics);
}

/* fuzz_route, corpus/route/regress_v2_generate_leak: a KServe v2 generation
 * request without a "parameters" object leaked the empty object kserve.c
 * made in its place (json_pack "O" took a second reference to a new object).
 * The request is refused by srv_gen_parse (its prompt over the input-token
 * limit), so that it is answered without a worker; LeakSanitizer (make asan-test)
 * reports the leak at exit if it comes back. */
TEST(fuzz_v2_generate_without_parameters)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "tests/fixtures/gpt2-tiny");
    model *m = NULL;
    eng_err err = {0};
    CHECK_MSG(model_load(dir, NULL, &m, &err) == 0, "%s", err.msg);
    if (!m)
        return;
    static const char body[] = "{\"inputs\":[{\"name\":\"text_input\",\"datatype\":\"BYTES\","
                               "\"shape\":[1],\"data\":[\"ROMEO:\"]}]}";
    char req[512];
    snprintf(req, sizeof req, "POST /v2/models/gpt2/infer HTTP/1.1\r\nHost: x\r\n"
             "Content-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
             strlen(body), body);
    client cl = {.req = req};
    srv_limits limits = {.max_client_batch = 32, .max_input_tokens = 1, .max_new_tokens = 1024,
                         .max_batch_total_tokens = 16384};
    serve_one(m, "gpt2", &limits, &cl);
    CHECK_MSG(strncmp(cl.answer, "HTTP/1.1 400", 12) == 0, "answer: %.200s", cl.answer);
    CHECK(strstr(cl.answer, "{\"error\":") && strstr(cl.answer, "at most 1 tokens"));
    model_free(m);
}
