/* predictd: serve Hugging Face models over HTTP, or answer one request from
 * the command line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/blas.h"
#include "server/cli.h"
#include "server/log.h"

/* Debian's OpenBLAS 0.3.21 takes recent Xeons and EPYCs for a generic core and
 * runs 5-6x below their speed. The core type is read when the library loads,
 * so the fix is to set OPENBLAS_CORETYPE and run this program again; the pid
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
        srv_log(SRV_LOG_DEBUG, "OpenBLAS core: %s (chosen by predictd; OpenBLAS detected %s)",
                eng_blas_corename(), was);
    else
        srv_log(SRV_LOG_DEBUG, "OpenBLAS core: %s", eng_blas_corename());
}

int main(int argc, char **argv)
{
    use_fast_blas_kernels(argv);
    if (argc > 1 && strcmp(argv[1], "predict") == 0) {
        log_blas_core();
        return srv_cli_predict(argc - 1, argv + 1);
    }
    if (argc > 1 && strcmp(argv[1], "tokenize") == 0)
        return srv_cli_tokenize(argc - 1, argv + 1);
    fprintf(stderr, "usage: predictd predict|tokenize ... (the daemon comes next)\n");
    return 2;
}
