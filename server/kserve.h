/* The Open Inference Protocol (KServe v2), so KServe, Seldon and Triton-style
 * clients can run predictd as a custom runtime:
 *   GET /v2, /v2/health/live, /v2/health/ready, /v2/models/NAME, /v2/models/NAME/ready
 *   POST /v2/models/NAME/infer
 * Classification takes a BYTES input of texts and answers "label", "score"
 * and "logits"; generation takes "text_input" and answers "text_output". */
#ifndef SRV_KSERVE_H
#define SRV_KSERVE_H

#include "server/http.h"

/* Route handlers (ctx is the dispatcher's per-request context). */
void srv_v2_server_live(void *server, srv_conn *c, void *ctx);
void srv_v2_server_ready(void *server, srv_conn *c, void *ctx);
void srv_v2_server_metadata(void *server, srv_conn *c, void *ctx);
void srv_v2_model_metadata(void *server, srv_conn *c, void *ctx);
void srv_v2_model_ready(void *server, srv_conn *c, void *ctx);
void srv_v2_infer(void *server, srv_conn *c, void *ctx);

#endif
