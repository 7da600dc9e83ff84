/* tok_encode of GPT-2's byte-level BPE (models/tok_bpe.h), loaded once from
 * the GPT-2 fixture, on arbitrary bytes (invalid UTF-8 included), with and
 * without special tokens and max_len.
 *
 * Input: fuzz_tok_opts' bytes (tests/fuzz/fuzz.h), then the text. Oracles for
 * valid UTF-8: the spans of the tokens that cover input tile the text from
 * its start; decoding those ids gives the text back byte for byte (the part
 * kept, when truncated); and the heap merge agrees with HF's reference loop
 * (tok_bpe__encode_ref). */
#include "tests/fuzz/fuzz.h"

#include "models/tok_bpe.h"

static tok_tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    char dir[PATH_MAX];
    eng_err err = {0};
    const char *fixture = fuzz_fixture_path("gpt2-tiny", dir, sizeof dir);
    fuzz_require(tok_bpe_load(fixture, TOK_BPE_GPT2, &tok, &err), &err);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in in = {data, size};
    tok_encode_opts o = fuzz_tok_opts(&in);
    char *text = fuzz_copy(in.p, in.n);
    tok_encoding enc, ref;
    tok_encoding_init(&enc);
    tok_encoding_init(&ref);
    if (fuzz_tok_encode_checked(tok, text, in.n, &o, &enc) == 0) {
        /* The tokens that stand for input, in order. */
        int32_t *ids = malloc((enc.n ? enc.n : 1) * sizeof *ids);
        if (!ids)
            abort();
        size_t n = 0, at = 0;
        for (size_t i = 0; i < enc.n; i++) {
            if (enc.start[i] == enc.stop[i]) {
                FUZZ_CHECK(enc.special[i]); /* an added token: no input */
                continue;
            }
            FUZZ_CHECK(enc.start[i] == at);
            at = enc.stop[i];
            ids[n++] = enc.ids[i];
        }
        FUZZ_CHECK(enc.n_untruncated > enc.n || at == in.n);
        char *back = malloc(at + 1);
        if (!back)
            abort();
        FUZZ_CHECK(tok_bpe_decode(tok, ids, n, back, at + 1) == at);
        FUZZ_CHECK(memcmp(back, text, at) == 0);
        free(back);
        free(ids);

        eng_err err = {0};
        FUZZ_CHECK(tok_bpe__encode_ref(tok, text, in.n, &o, &ref, &err) == 0);
        FUZZ_CHECK(fuzz_tok_same(&enc, &ref));
    }
    tok_encoding_free(&enc);
    tok_encoding_free(&ref);
    free(text);
    return 0;
}
