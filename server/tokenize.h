/* POST /tokenize (text-embeddings-inference's format) and the CLI's
 * `predictd tokenize`. */
#ifndef SRV_TOKENIZE_H
#define SRV_TOKENIZE_H

#include <stddef.h>

#include "models/model.h"
#include "server/reply.h"
#include "server/request.h"

/* The token ids of one text, special tokens included: [101, ..., 102]. */
void srv_tokenize_ids(const model *m, const char *text, size_t len, srv_reply *out);

/* {"inputs": T | [T...], "add_special_tokens": true} -> per input a list of
 * {"id", "text", "special", "start", "stop"}; start/stop are byte offsets into
 * the input, null for added special tokens, whose "text" is the token itself. */
void srv_tokenize_handle(const model *m, const srv_request *in, srv_reply *out);

#endif
