/* tok_encode of the BERT WordPiece tokenizer (models/tok_wordpiece.h), loaded
 * once from the DistilBERT fixture, on arbitrary bytes (invalid UTF-8
 * included), with and without special tokens and max_len.
 *
 * Input: fuzz_tok_opts' bytes (tests/fuzz/fuzz.h), then the text. Beyond the
 * common checks: [CLS] first and [SEP] last when added (also when truncated),
 * the pieces' spans move forward through the text, and every id has a
 * vocabulary string and bytes. */
#include "tests/fuzz/fuzz.h"

#include "models/tok_wordpiece.h"

static tok_tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    char dir[PATH_MAX];
    eng_err err = {0};
    const char *fixture = fuzz_fixture_path("distilbert-sst2-tiny", dir, sizeof dir);
    fuzz_require(tok_wordpiece_load(fixture, &tok, &err), &err);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in in = {data, size};
    tok_encode_opts o = fuzz_tok_opts(&in);
    char *text = fuzz_copy(in.p, in.n);
    tok_encoding enc;
    tok_encoding_init(&enc);
    if (fuzz_tok_encode_checked(tok, text, in.n, &o, &enc) == 0) {
        size_t n = enc.n;
        if (o.add_special && (o.max_len == 0 || o.max_len >= 2)) {
            FUZZ_CHECK(n >= 2 && enc.ids[0] == tok->bos_id && enc.ids[n - 1] == tok->eos_id);
            FUZZ_CHECK(enc.special[0] && enc.special[n - 1]);
        }
        uint32_t last_start = 0;
        for (size_t i = 0; i < n; i++) {
            size_t len = 0;
            FUZZ_CHECK(tok->ops->id_to_token(tok, enc.ids[i], &len) != NULL && len > 0);
            char buf[64];
            FUZZ_CHECK(tok->ops->token_bytes(tok, enc.ids[i], buf, sizeof buf) > 0);
            if (enc.special[i])
                continue;
            FUZZ_CHECK(enc.start[i] < enc.stop[i] && enc.start[i] >= last_start);
            last_start = enc.start[i];
        }
    }
    tok_encoding_free(&enc);
    free(text);
    return 0;
}
