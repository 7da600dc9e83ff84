/* tok_encode of CLIP's BPE (models/tok_bpe.h: NFC, lower case, whitespace
 * collapsed, "</w>"), loaded once from the CLIP fixture, on arbitrary bytes
 * (invalid UTF-8 included), with and without special tokens and max_len.
 *
 * Input: fuzz_tok_opts' bytes (tests/fuzz/fuzz.h), then the text. Beyond the
 * common checks: <|startoftext|> first and <|endoftext|> last when added
 * (kept when truncated), the heap merge agrees with HF's reference loop, and
 * decoding is the same whatever the buffer size, and valid UTF-8 when whole. */
#include "tests/fuzz/fuzz.h"

#include "models/tok_bpe.h"

static tok_tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    char dir[PATH_MAX];
    eng_err err = {0};
    const char *fixture = fuzz_fixture_path("clip-tiny", dir, sizeof dir);
    fuzz_require(tok_bpe_load(fixture, TOK_BPE_CLIP, &tok, &err), &err);
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
        size_t n = enc.n;
        if (o.add_special && (o.max_len == 0 || o.max_len >= 2)) {
            FUZZ_CHECK(n >= 2 && enc.ids[0] == tok->bos_id && enc.ids[n - 1] == tok->eos_id);
            FUZZ_CHECK(enc.special[0] && enc.special[n - 1]);
        }
        eng_err err = {0};
        FUZZ_CHECK(tok_bpe__encode_ref(tok, text, in.n, &o, &ref, &err) == 0);
        FUZZ_CHECK(fuzz_tok_same(&enc, &ref));

        size_t total = tok_bpe_decode(tok, enc.ids, n, NULL, 0);
        char *whole = malloc(total + 1), small[7];
        if (!whole)
            abort();
        FUZZ_CHECK(tok_bpe_decode(tok, enc.ids, n, whole, total + 1) == total);
        FUZZ_CHECK(tok_bpe_decode(tok, enc.ids, n, small, sizeof small) == total);
        FUZZ_CHECK(memcmp(small, whole, total < sizeof small ? total : sizeof small) == 0);
        if (enc.n_untruncated == n)
            FUZZ_CHECK(fuzz_utf8_valid((const uint8_t *)whole, total));
        free(whole);
    }
    tok_encoding_free(&enc);
    tok_encoding_free(&ref);
    free(text);
    return 0;
}
