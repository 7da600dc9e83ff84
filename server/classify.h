/* The text-classification task: request bodies in, answers out.
 *
 * Shared by the daemon and the one-shot CLI, so both answer a request with the
 * same bytes. Two request forms:
 *   ?text=T or {"text": T}                  -> [{"label": L, "score": S}]
 *       as transformers' text-classification pipeline (the FastAPI service);
 *   {"inputs": T | [T...], "raw_scores", "truncate"}
 *       -> every label sorted by score, per input, as text-embeddings-inference.
 * Parsing also tokenizes: a request that parses is ready for the engine. */
#ifndef SRV_CLASSIFY_H
#define SRV_CLASSIFY_H

#include <stdbool.h>
#include <stddef.h>

#include "models/model.h"
#include "server/reply.h"
#include "server/request.h"

typedef struct srv_classify_req {
    bool tei_form;      /* "inputs": all labels sorted; else the pipeline's top label */
    bool v2_form;       /* Open Inference Protocol: label, score and logits tensors */
    char v2_id[SRV_V2_ID_SIZE]; /* the request's "id", echoed in the answer */
    char v2_model[80];  /* the model's name, for the answer */
    bool list_input;    /* "inputs" was an array: answer one list per input */
    bool raw_scores;    /* logits instead of probabilities */
    bool truncate;      /* cut over-long inputs instead of refusing them */
    size_t n;           /* number of texts */
    tok_encoding *enc;  /* (n) token ids per text */
    float *logits;      /* (n, n_labels) written by the forward */
} srv_classify_req;

/* Parses and tokenizes a request. On failure returns -1 with the error answer
 * in err (422 for bad fields and over-long inputs). */
int srv_classify_parse(const model *m, const srv_request *in, srv_classify_req *req,
                       srv_reply *err);
void srv_classify_req_free(srv_classify_req *req);

/* Builds a request from texts given by another protocol (KServe v2); the
 * caller sets the form flags. Returns 0, or -1 with the error in err. */
int srv_classify_texts(const model *m, const srv_request *in, const char *const *texts,
                       const size_t *lens, size_t n, bool truncate, srv_classify_req *req,
                       srv_reply *err);

/* Writes the answer for req's logits. */
void srv_classify_format(const model *m, const srv_classify_req *req, srv_reply *out);

/* Runs req alone as one batch (the CLI's path; the daemon batches). */
int srv_classify_run(const model *m, srv_classify_req *req, eng_arena *a, eng_err *err);

#endif
