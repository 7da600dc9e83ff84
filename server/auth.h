/* Optional API-key authentication: `Authorization: Bearer KEY` on every
 * endpoint except the operations ones (/health, /metrics and the v2 health
 * probes), which stay open unless --protect-ops. The key is compared in
 * constant time, so response timing does not leak how much of it matched. */
#ifndef SRV_AUTH_H
#define SRV_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "engine/error.h"
#include "server/options.h"

typedef struct srv_auth {
    char *key;        /* NULL: no authentication */
    size_t len;
    bool protect_ops;
} srv_auth;

/* Takes the key from --api-key or the first line of --api-key-file (not
 * both). Returns 0 or an error naming the option. */
int srv_auth_init(srv_auth *a, const srv_options *o, eng_err *err);
void srv_auth_free(srv_auth *a);

/* Whether a request to an endpoint (ops: an operations endpoint) with this
 * Authorization header (may be NULL) is let in. */
bool srv_auth_allows(const srv_auth *a, bool ops, const char *authorization);

#endif
