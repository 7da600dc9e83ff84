/* The image-text task (CLIP): requests in, answers out.
 *
 *   POST /predict {"inputs": <base64 image | data: URL>, "parameters":
 *       {"candidate_labels": [...], "hypothesis_template": "This is a photo of {}."}}
 *       or the same as multipart/form-data (image=@cat.jpg, candidate_labels=cat,dog)
 *       -> [{"score", "label"}] sorted, as the zero-shot-image-classification pipeline;
 *   POST /predict {"images": [...], "texts": [...]}
 *       -> {"logits_per_image": [[...]], "logits_per_text": [[...]]}, as CLIPModel;
 *   POST /embed {"inputs": T | [T...]} or {"images": [...]} -> L2-normalised embeddings.
 *
 * Images stay encoded until the worker decodes them, off the loop thread. */
#ifndef SRV_CLIP_TASK_H
#define SRV_CLIP_TASK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "models/model.h"
#include "server/reply.h"
#include "server/request.h"

typedef enum srv_clip_form {
    SRV_CLIP_ZERO_SHOT,
    SRV_CLIP_LOGITS,
    SRV_CLIP_EMBED_TEXT,
    SRV_CLIP_EMBED_IMAGE,
} srv_clip_form;

typedef struct srv_clip_req {
    srv_clip_form form;
    uint8_t **images;      /* (n_images) encoded image bytes */
    size_t *image_len;
    size_t n_images;
    tok_encoding *texts;   /* (n_texts) */
    size_t n_texts;
    char **labels;         /* (n_texts) zero-shot candidate labels, else NULL */
    size_t *label_lens;    /* (n_texts) their lengths: a label may hold a NUL */
    /* Written by the worker. */
    float *image_emb;      /* (n_images, proj_dim), L2-normalised */
    float *text_emb;       /* (n_texts, proj_dim), L2-normalised */
    int status;            /* 0, or the HTTP status of a failure (a bad image: 422/413) */
    char message[300];
} srv_clip_req;

/* Parses a request to /predict (embed false) or /embed (embed true).
 * Returns 0, or -1 with the error answer in err. */
int srv_clip_parse(const model *m, const srv_request *in, bool embed, srv_clip_req *req,
                   srv_reply *err);
void srv_clip_req_free(srv_clip_req *req);

/* Worker thread: decodes and preprocesses image i into pixels
 * (3, image_size, image_size); on failure sets req->status/message. */
int srv_clip_load_image(const model *m, srv_clip_req *req, size_t i, const srv_limits *lim,
                        uint8_t *crop, float *pixels);

void srv_clip_format(const model *m, const srv_clip_req *req, srv_reply *out);

#endif
