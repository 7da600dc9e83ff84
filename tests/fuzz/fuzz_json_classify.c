/* srv_classify_parse (server/classify.h) on hostile bodies and ?text= values,
 * with the tiny DistilBERT fixture; a request that parses is answered with
 * srv_classify_format from zeroed logits, in the pipeline, TEI and v2 forms.
 *
 * Input: byte 0 = flags (bit 0: a ?text= query is given, its length in byte 1
 * and its bytes next; bit 1: tight limits; bit 2: answer in the v2 form), then
 * the body. */
#include "tests/fuzz/fuzz.h"

#include "server/classify.h"

static model *m;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    m = fuzz_load_model("distilbert-sst2-tiny");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in in = {data, size};
    uint8_t flags = fuzz_byte(&in);
    char *query = NULL;
    size_t query_len = 0;
    if (flags & 1) {
        const uint8_t *q = fuzz_take(&in, fuzz_byte(&in), &query_len);
        query = fuzz_copy(q, query_len);
    }
    char *body = fuzz_copy(in.p, in.n);
    srv_limits tight = {.max_client_batch = 3, .max_input_tokens = 16};
    srv_limits dflt = {.max_client_batch = 32};
    srv_request req = {.query_text = query, .query_text_len = query_len, .body = body,
                       .body_len = in.n, .content_type = "application/json",
                       .limits = flags & 2 ? &tight : &dflt};

    srv_classify_req cls;
    srv_reply reply;
    srv_reply_init(&reply);
    if (srv_classify_parse(m, &req, &cls, &reply) == 0) {
        FUZZ_CHECK(reply.status == 0);
        FUZZ_CHECK(cls.n >= 1 && cls.enc && cls.logits);
        for (size_t i = 0; i < cls.n; i++) {
            FUZZ_CHECK(cls.enc[i].n <= (size_t)m->max_positions);
            for (size_t k = 0; k < cls.enc[i].n; k++)
                FUZZ_CHECK(cls.enc[i].ids[k] >= 0 &&
                           (size_t)cls.enc[i].ids[k] < m->tok->vocab_size);
        }
        memset(cls.logits, 0, cls.n * m->n_labels * sizeof *cls.logits);
        if (flags & 4) {
            cls.v2_form = true;
            snprintf(cls.v2_id, sizeof cls.v2_id, "fuzz");
            snprintf(cls.v2_model, sizeof cls.v2_model, "sst2");
        }
        srv_classify_format(m, &cls, &reply);
        FUZZ_CHECK(reply.status == 200);
        srv_classify_req_free(&cls);
    } else {
        FUZZ_CHECK(cls.n == 0 && cls.enc == NULL && cls.logits == NULL);
    }
    fuzz_check_reply(&reply);
    srv_reply_free(&reply);
    free(body);
    free(query);
    return 0;
}
