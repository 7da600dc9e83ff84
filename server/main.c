/* predictd: serve Hugging Face models over HTTP, or answer one request from
 * the command line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/blas.h"
#include "server/cli.h"
#include "server/log.h"
#include "server/options.h"
#include "server/server.h"

extern char **environ;

/* Debian's OpenBLAS 0.3.21 takes recent Xeons for a generic core and runs
 * 5-6x below their speed. The core type is read when the library loads, so
 * the fix is to set OPENBLAS_CORETYPE and run this program again; the pid
 * stays the same, which keeps systemd and shells happy. */
static void use_fast_blas_kernels(char **argv)
{
    const char *core = eng_blas_better_coretype();
    if (!core || getenv("PREDICTD_BLAS_REEXEC"))
        return;
    setenv("OPENBLAS_CORETYPE", core, 1);
    setenv("PREDICTD_BLAS_REEXEC", eng_blas_corename(), 1);
    execv("/proc/self/exe", argv);
    srv_warn("could not re-execute with OPENBLAS_CORETYPE=%s; OpenBLAS runs its slower %s kernels",
             core, eng_blas_corename());
}

static void log_blas_core(void)
{
    const char *was = getenv("PREDICTD_BLAS_REEXEC");
    if (was)
        srv_info("OpenBLAS core %s, chosen by predictd (OpenBLAS detected %s on this CPU)",
                 eng_blas_corename(), was);
    else
        srv_log(SRV_LOG_DEBUG, "OpenBLAS core %s", eng_blas_corename());
}

static int serve(int argc, char **argv)
{
    srv_options opts;
    eng_err err = {0};
    int rc = srv_options_load(&opts, argc, argv, environ, &err);
    if (rc < 0) {
        fprintf(stderr, "predictd: %s\n", err.msg);
        return 2;
    }
    if (rc == 1) {
        srv_options_free(&opts);
        return 0;
    }
    srv_log_set_level(opts.log_level);
    srv_log_set_json(opts.log_format == SRV_LOG_FORMAT_JSON);
    log_blas_core();
    rc = srv_server_run(&opts);
    srv_options_free(&opts);
    return rc;
}

int main(int argc, char **argv)
{
    use_fast_blas_kernels(argv);
    if (argc > 1 && strcmp(argv[1], "predict") == 0)
        return srv_cli_predict(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "tokenize") == 0)
        return srv_cli_tokenize(argc - 1, argv + 1);
    return serve(argc, argv);
}
