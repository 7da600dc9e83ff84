/* srv_tokenize_handle (server/tokenize.h), POST /tokenize, with each fixture's
 * tokenizer: WordPiece (DistilBERT), GPT-2 and CLIP byte-level BPE. The
 * answer must be JSON, and a 200's offsets must lie inside the input.
 *
 * Input: byte 0 = flags (bits 0-1: the model, 0/3 DistilBERT, 1 GPT-2,
 * 2 CLIP; bit 2: tight limits), then the body. */
#include "tests/fuzz/fuzz.h"

#include "server/tokenize.h"

static model *models[3];

/* A 200's tokens of one text: ids in the vocabulary, and for tokens of the
 * input 0 <= start <= stop <= the text's length. */
static void check_tokens(const model *m, json_t *tokens, size_t text_len)
{
    FUZZ_CHECK(json_is_array(tokens));
    size_t i;
    json_t *t;
    json_array_foreach(tokens, i, t) {
        json_int_t id = json_integer_value(json_object_get(t, "id"));
        FUZZ_CHECK(id >= 0 && (size_t)id < m->tok->vocab_size);
        if (json_is_true(json_object_get(t, "special")))
            continue;
        json_int_t start = json_integer_value(json_object_get(t, "start"));
        json_int_t stop = json_integer_value(json_object_get(t, "stop"));
        FUZZ_CHECK(start >= 0 && start <= stop && (size_t)stop <= text_len);
    }
}

static void check_answer(const model *m, const char *body, size_t len, const srv_reply *r)
{
    /* As the server reads bodies (server/request.c): NULs in strings kept. */
    json_t *req = json_loadb(body, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    json_t *ans = json_loadb(r->body.data, r->body.len, JSON_ALLOW_NUL, NULL);
    FUZZ_CHECK(req && ans && json_is_array(ans));
    json_t *inputs = json_object_get(req, "inputs");
    if (json_is_string(inputs)) {
        check_tokens(m, ans, json_string_length(inputs));
    } else {
        FUZZ_CHECK(json_array_size(ans) == json_array_size(inputs));
        for (size_t i = 0; i < json_array_size(inputs); i++)
            check_tokens(m, json_array_get(ans, i), json_string_length(json_array_get(inputs, i)));
    }
    json_decref(req);
    json_decref(ans);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    models[0] = fuzz_load_model("distilbert-sst2-tiny");
    models[1] = fuzz_load_model("gpt2-tiny");
    models[2] = fuzz_load_model("clip-tiny");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in in = {data, size};
    uint8_t flags = fuzz_byte(&in);
    const model *m = models[(flags & 3) % 3];
    char *body = fuzz_copy(in.p, in.n);
    srv_limits tight = {.max_client_batch = 2};
    srv_limits dflt = {.max_client_batch = 32};
    srv_request req = {.body = body, .body_len = in.n, .content_type = "application/json",
                       .limits = flags & 4 ? &tight : &dflt};
    srv_reply reply;
    srv_reply_init(&reply);
    srv_tokenize_handle(m, &req, &reply);
    fuzz_check_reply(&reply);
    if (reply.status == 200)
        check_answer(m, body, in.n, &reply);
    srv_reply_free(&reply);

    /* The CLI's form: the ids of the raw bytes. */
    srv_reply_init(&reply);
    srv_tokenize_ids(m, body, in.n, &reply);
    fuzz_check_reply(&reply);
    srv_reply_free(&reply);
    free(body);
    return 0;
}
