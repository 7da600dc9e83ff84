/* The front end's ceiling: libmicrohttpd alone, on its own epoll thread,
 * answering every request with the same small JSON, as the FastAPI service's
 * "constant model" does. Nothing of predictd runs; bench_http.sh puts its
 * requests/s next to predictd's with the tiny model and FastAPI's constant.
 *
 *   build/mhd_constant PORT      (runs until killed) */
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char answer[] = "[{\"label\":\"POSITIVE\",\"score\":0.9998}]";

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **req)
{
    (void)cls, (void)url, (void)method, (void)version, (void)upload;
    if (!*req) {
        *req = c; /* headers seen; the body (if any) comes next */
        return MHD_YES;
    }
    if (*upload_size) {
        *upload_size = 0;
        return MHD_YES;
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(answer), (void *)answer,
                                                             MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result ok = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ok;
}

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 0;
    if (port <= 0 || port > 65535) {
        fprintf(stderr, "usage: mhd_constant PORT\n");
        return 2;
    }
    struct MHD_Daemon *d = MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_INTERNAL_POLLING_THREAD,
                                            (uint16_t)port, NULL, NULL, on_request, NULL,
                                            MHD_OPTION_CONNECTION_LIMIT, 1024u, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "mhd_constant: cannot listen on port %d\n", port);
        return 1;
    }
    for (;;)
        pause();
}
