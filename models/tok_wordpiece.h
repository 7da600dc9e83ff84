/* BERT WordPiece tokenizer, matching Hugging Face's slow BertTokenizer
 * (the tokenizer of bert-base-uncased and distilbert-base-uncased).
 *
 * Encoding follows transformers' PreTrainedTokenizer.tokenize + BasicTokenizer
 * + WordpieceTokenizer:
 *   1. special-token strings typed in the text ("[SEP]", "[MASK]", ...) are
 *      taken as those tokens (case-sensitive, like HF's added-token split);
 *   2. with do_lower_case, every character is lowercased on its own (HF lowers
 *      the text one character at a time, so there is no final-sigma rule);
 *   3. U+0000, U+FFFD and category C* characters (except \t \n \r) are dropped
 *      without splitting the word; whitespace (Python's str.isspace) splits;
 *   4. CJK ideographs (HF's _is_chinese_char ranges) become words of their own;
 *   5. each word is normalised: NFD with the Mn marks dropped when accents are
 *      stripped, else NFC; then split before and after every punctuation
 *      character (ASCII symbols and Unicode P*);
 *   6. greedy longest-match-first WordPiece with "##" continuations; a word of
 *      more than 100 code points, or one that cannot be matched, is one [UNK].
 *
 * Offsets are byte offsets into the caller's original text: a piece covers the
 * input characters its normalised characters came from ("Café" -> "cafe" is
 * bytes [0, 5)). Added [CLS]/[SEP] have start == stop == 0 and special = 1; a
 * special token typed in the text keeps its bytes and has special = 0.
 *
 * token_bytes() returns a piece's text without its "##" marker (and a special
 * token's text as is): the bytes are exact, but where spaces go between pieces
 * is for the caller to decide from id_to_token(), which keeps the "##". */
#ifndef TOK_WORDPIECE_H
#define TOK_WORDPIECE_H

#include "engine/error.h"
#include "models/tokenizer.h"

/* Loads vocab.txt (one token per line, id = line number) and the optional
 * tokenizer_config.json (do_lower_case default true, strip_accents (null =
 * follow lowercase), tokenize_chinese_chars default true, model_max_length)
 * and special_tokens_map.json (the special token strings, which override the
 * config's) from the model folder dir. Token fields may be plain strings or the
 * legacy {"__type": "AddedToken", "content": ...} objects; an absent file means
 * defaults. model_max_length above 1e9 (HF's "no limit" sentinel) is 0.
 *
 * On success *out is a tok_tokenizer the caller frees with tok_tokenizer_free;
 * vocab_size is the number of lines, pad/unk/bos/eos are the ids of [PAD],
 * [UNK], [CLS], [SEP] (or -1 when the vocabulary lacks them). On failure *out
 * is NULL and err names the file at fault. */
int tok_wordpiece_load(const char *dir, tok_tokenizer **out, eng_err *err);

#endif
