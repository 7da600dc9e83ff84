/* Byte-level BPE tokenizers: Hugging Face's GPT2Tokenizer and CLIPTokenizer.
 *
 * Both read a model folder's vocab.json + merges.txt (and, when present,
 * tokenizer_config.json and special_tokens_map.json) and share one
 * implementation: added tokens (bos/eos/unk/pad and added_tokens_decoder) are
 * split out of the text first and come out as themselves, marked special, with
 * the span they cover; the rest is pre-tokenized by a hand-written equivalent
 * of the model's regex, and each piece's UTF-8 bytes are spelt in the GPT-2
 * byte alphabet and merged by merge rank exactly as HF's bpe() does.
 *
 * GPT-2: no normalization; add_special adds nothing unless tokenizer_config.json
 * sets add_bos_token (then the bos token is prepended). Offsets are exact byte
 * offsets: the spans of the tokens of a text concatenate to the text, and a
 * token may end or start inside a UTF-8 character.
 *
 * CLIP: NFC, whitespace runs collapsed to one space, lower case (as the fast
 * tokenizer: character by character, so no final-sigma rule), pieces end with
 * "</w>", add_special wraps them in <|startoftext|> ... <|endoftext|>, and
 * max_len keeps bos + the first max_len - 2 tokens + eos. Only the first 48894
 * merges are read, as CLIPTokenizer does. Offsets map each normalized character
 * back to the input it came from (a composed character spans all its sources):
 * always inside the input with start <= stop, exact for text NFC and lower-casing
 * leave at the same length, approximate elsewhere.
 *
 * Not modelled: add_prefix_space (refused at load), additional_special_tokens,
 * the lstrip/rstrip/single_word flags of added tokens, and matching added tokens
 * after normalization (they are matched in the raw text, as the slow tokenizers
 * do). There is no BPE cache: a loaded tokenizer is immutable and may be shared
 * between threads; encode allocates its working memory per call, not per
 * character. */
#ifndef TOK_BPE_H
#define TOK_BPE_H

#include <stddef.h>
#include <stdint.h>

#include "engine/error.h"
#include "models/tokenizer.h"

typedef enum tok_bpe_flavor {
    TOK_BPE_GPT2, /* GPT2Tokenizer: bos/eos <|endoftext|>, no pad by default */
    TOK_BPE_CLIP, /* CLIPTokenizer: bos <|startoftext|>, eos = pad = <|endoftext|> */
} tok_bpe_flavor;

/* Loads vocab.json + merges.txt (+ optional tokenizer_config.json for
 * model_max_length, add_bos_token and added/special tokens, and optional
 * special_tokens_map.json) from the model folder dir. On success *out owns a
 * tokenizer the caller frees with tok_tokenizer_free. Missing or malformed files
 * are errors naming the file (and line or field). */
int tok_bpe_load(const char *dir, tok_bpe_flavor flavor, tok_tokenizer **out, eng_err *err);

/* Writes the decoded bytes of ids[0..n) to out, at most cap bytes, and returns
 * the full byte count (which may exceed cap). GPT-2: byte-exact, special tokens
 * included as their text, so decode(encode(text)) == text. CLIP: as HF's
 * decode(ids, skip_special_tokens=True): special tokens are skipped, "</w>"
 * becomes a space and a final space is dropped. Ids outside the vocabulary
 * decode to nothing. */
size_t tok_bpe_decode(const tok_tokenizer *t, const int32_t *ids, size_t n, char *out, size_t cap);

/* ---- Internal: shared by tok_bpe.c, tok_bpe_pretok.c and their tests. ---- */

/* Encodes as tok_encode, but merges every piece with the plain reference loop
 * (HF's bpe()) instead of the heap used for long pieces; for tests. */
int tok_bpe__encode_ref(const tok_tokenizer *t, const char *text, size_t len,
                        const tok_encode_opts *opts, tok_encoding *out, eng_err *err);

/* Returns the end of the GPT-2 pre-token that starts at byte i < len of the
 * valid UTF-8 s; GPT-2 pre-tokens tile the text. */
size_t tok_bpe__gpt2_split(const char *s, size_t len, size_t i);

/* Finds the next CLIP pre-token at or after *i in the valid UTF-8 s: sets *i to
 * its start and returns its end. Whitespace belongs to no pre-token; when only
 * whitespace is left, *i becomes len and len is returned. */
size_t tok_bpe__clip_split(const char *s, size_t len, size_t *i);

/* A CLIP-normalized piece of input and where each of its bytes came from.
 * Zero-initialize, reuse across calls, free with tok_bpe__norm_free. */
typedef struct tok_bpe__norm {
    char *text;      /* (n) normalized UTF-8 */
    uint32_t *start; /* (n) input offset where the source of each byte starts */
    uint32_t *stop;  /* (n) input offset one past the end of that source */
    size_t n, cap;
    int32_t *cp;     /* (n_cp) code points while normalizing */
    uint32_t *cp_start, *cp_stop; /* (n_cp) their input spans */
    size_t n_cp, cp_cap;
} tok_bpe__norm;

/* Normalizes the valid UTF-8 s[0..len), which sits at input offset base, into
 * norm (replacing its contents). Returns 0 or ENG_ENOMEM (ENG_EINVAL if utf8proc
 * refuses a character, which valid UTF-8 never makes it do). */
int tok_bpe__clip_normalize(const char *s, size_t len, uint32_t base, tok_bpe__norm *norm);
void tok_bpe__norm_free(tok_bpe__norm *norm);

#endif
