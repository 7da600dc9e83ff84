/* srv_clip_parse (server/clip_task.h) for /predict and /embed, JSON and
 * multipart/form-data, with the tiny CLIP fixture. A request that parses is
 * answered from zeroed embeddings (srv_clip_format), and its images go
 * through the worker's srv_clip_load_image under small limits.
 *
 * Input: byte 0 = flags (bit 0: /embed; bits 1-2: Content-Type, 0 JSON,
 * 1 multipart/form-data; boundary=XyZ, 2 fuzzed (length in byte 1, the bytes
 * next), 3 none; bit 3: tight limits), then the body. */
#include "tests/fuzz/fuzz.h"

#include "server/clip_task.h"

static model *m;
static uint8_t *crop;
static float *pixels;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    m = fuzz_load_model("clip-tiny");
    size_t side = (size_t)m->preproc.crop_h * m->preproc.crop_w;
    crop = malloc(side * 3);
    pixels = malloc(side * 3 * sizeof *pixels);
    if (!crop || !pixels)
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in in = {data, size};
    uint8_t flags = fuzz_byte(&in);
    bool embed = flags & 1;
    char *ctype = NULL;
    switch ((flags >> 1) & 3) {
    case 0:
        ctype = fuzz_cstr("application/json", 16);
        break;
    case 1:
        ctype = fuzz_cstr("multipart/form-data; boundary=XyZ", 33);
        break;
    case 2: {
        size_t n;
        const uint8_t *p = fuzz_take(&in, fuzz_byte(&in), &n);
        ctype = fuzz_cstr(p, n);
        break;
    }
    }
    char *body = fuzz_copy(in.p, in.n);
    srv_limits tight = {.max_client_batch = 2, .max_image_bytes = 4096, .max_image_pixels = 4096};
    srv_limits dflt = {.max_client_batch = 32, .max_image_bytes = 16u << 20,
                       .max_image_pixels = 1u << 20};
    srv_request req = {.body = body, .body_len = in.n, .content_type = ctype,
                       .limits = flags & 8 ? &tight : &dflt};

    srv_clip_req clip;
    srv_reply reply;
    srv_reply_init(&reply);
    if (srv_clip_parse(m, &req, embed, &clip, &reply) == 0) {
        FUZZ_CHECK(reply.status == 0);
        FUZZ_CHECK(clip.n_images + clip.n_texts >= 1);
        FUZZ_CHECK(clip.form != SRV_CLIP_ZERO_SHOT || (clip.n_images == 1 && clip.n_texts >= 1));
        FUZZ_CHECK(clip.form != SRV_CLIP_LOGITS || (clip.n_images >= 1 && clip.n_texts >= 1));
        for (size_t i = 0; i < clip.n_texts; i++) {
            FUZZ_CHECK(clip.texts[i].n >= 2 && clip.texts[i].n <= (size_t)m->max_positions);
            FUZZ_CHECK(clip.texts[i].ids[clip.texts[i].n - 1] == m->tok->eos_id);
        }
        size_t P = (size_t)m->proj_dim;
        memset(clip.image_emb, 0, (clip.n_images ? clip.n_images : 1) * P * sizeof(float));
        memset(clip.text_emb, 0, (clip.n_texts ? clip.n_texts : 1) * P * sizeof(float));
        for (size_t i = 0; i < clip.n_images; i++)
            srv_clip_load_image(m, &clip, i, req.limits, crop, pixels);
        srv_clip_format(m, &clip, &reply);
        FUZZ_CHECK(reply.status == (clip.status ? clip.status : 200));
        srv_clip_req_free(&clip);
    } else {
        FUZZ_CHECK(clip.n_images == 0 && clip.n_texts == 0 && !clip.images && !clip.texts);
    }
    fuzz_check_reply(&reply);
    srv_reply_free(&reply);
    free(body);
    free(ctype);
    return 0;
}
