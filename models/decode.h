/* Text-generation decoding: greedy, sampling and beam search as pure functions
 * over logits, with Hugging Face transformers' semantics.
 *
 * Nothing here runs a model, takes a lock or allocates per token. A scheduler
 * runs the model and hands this module the logits of each sequence's last
 * position; this module says which token comes next (or, in beam search, which
 * beam each new beam extends). The order and arithmetic follow transformers'
 * generation/logits_process.py, generation/utils.py (_sample, _beam_search)
 * and generation/beam_search.py (BeamSearchScorer, BeamHypotheses).
 *
 * Parameters that are Python floats in transformers are doubles here, so a
 * comparison such as "cumulative probability <= 1 - top_p" sees the same
 * threshold HF computes. */
#ifndef GEN_DECODE_H
#define GEN_DECODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/error.h"

/* generate(early_stopping=...): when beam search may stop before
 * max_new_tokens. Every mode first needs num_beams finished hypotheses. */
typedef enum gen_early_stopping {
    GEN_EARLY_FALSE = 0, /* False: stop when the best candidate, normalised at the
                            current length, cannot beat the worst finished one */
    GEN_EARLY_TRUE,      /* True: stop as soon as num_beams hypotheses are finished */
    GEN_EARLY_NEVER,     /* "never": as False, but at the best attainable length
                            (max_new_tokens when length_penalty > 0): canonical beam search */
} gen_early_stopping;

typedef struct gen_params {
    int max_new_tokens;         /* >= 1 */
    bool do_sample;             /* false: greedy (argmax) or beam search */
    double temperature;         /* > 0; 1 = unchanged; only when sampling */
    int top_k;                  /* 0 = off; only when sampling */
    double top_p;               /* (0, 1]; 1 = off; only when sampling */
    double repetition_penalty;  /* > 0; 1 = off */
    uint64_t seed;              /* for gen_rng_seed */
    int num_beams;              /* 1 = no beam search; > 1 excludes do_sample */
    double length_penalty;      /* beam search: a hypothesis scores
                                   sum_logprobs / generated_len ** length_penalty */
    gen_early_stopping early_stopping;
    int32_t eos_id;             /* -1: none */
} gen_params;

/* Fills p with transformers' GenerationConfig defaults: greedy, temperature 1,
 * top_k 50 (used only when sampling, as in HF), top_p 1, no repetition
 * penalty, one beam, length_penalty 1, early_stopping False; max_new_tokens 20
 * (HF's default is max_length 20 counting the prompt) and no EOS. */
void gen_params_default(gen_params *p);

/* The sequences one prompt runs as: its beams, or 1 when it samples or is
 * greedy (num_beams 0 is refused by gen_params_check, not divided by). */
static inline int gen_beam_count(const gen_params *p)
{
    return p->num_beams > 1 ? p->num_beams : 1;
}

/* Checks every field's range. Returns 0, or ENG_EINVAL with a message naming
 * the field as the request calls it, e.g. "`top_p` must be in (0, 1], got 1.5". */
int gen_params_check(const gen_params *p, eng_err *err);

/* ---- Random numbers ------------------------------------------------------ */

/* xoshiro256**, seeded through splitmix64: the same seed gives the same draws
 * on every platform. One per request; not shared between threads. */
typedef struct gen_rng {
    uint64_t s[4];
} gen_rng;

void gen_rng_seed(gen_rng *r, uint64_t seed);
uint64_t gen_rng_next(gen_rng *r);
/* Uniform in [0, 1), with 53 random bits. */
double gen_rng_uniform(gen_rng *r);

/* ---- Greedy and sampling ------------------------------------------------- */

/* Bytes of scratch gen_process_logits needs for a vocabulary of vocab ids
 * (8 per id); any malloc'd block of that size will do. */
size_t gen_scratch_bytes(int vocab);

/* Applies, in transformers' order, the repetition penalty for the ids in
 * context[0..n_ctx) (prompt + generated; an id that occurs several times is
 * penalised once), then, only when sampling, temperature, top-k and top-p.
 * Removed tokens become -INFINITY. logits: (vocab), in place. scratch:
 * gen_scratch_bytes(vocab) bytes, contents irrelevant before and after. */
void gen_process_logits(const gen_params *p, const int32_t *context, size_t n_ctx, float *logits,
                        int vocab, void *scratch);

/* Picks the next token from processed logits (vocab): the argmax (first index
 * on ties) when !p->do_sample, else a draw from softmax(logits) using rng
 * (which may be NULL when not sampling). If logprob is not NULL it receives
 * the token's log-probability under softmax(logits). */
int32_t gen_next_token(const gen_params *p, const float *logits, int vocab, gen_rng *rng,
                       float *logprob);

/* ---- Beam search --------------------------------------------------------- */

/* The state of one request's beam search, as transformers' BeamSearchScorer
 * for a batch of one: the running beams' scores and the finished hypotheses.
 * The caller owns the beams' token sequences and KV caches; after each step it
 * makes new beam b a copy of old beam parent[b] (sequence and cache) followed
 * by token[b]. */
typedef struct gen_beams gen_beams;

/* Creates a search for p->num_beams (>= 2) beams over vocab (>= 2) ids, sized
 * for p->max_new_tokens steps; every step's memory is allocated here. Checks p.
 * Returns 0, ENG_EINVAL or ENG_ENOMEM. Free with gen_beams_free. */
int gen_beams_new(const gen_params *p, int vocab, gen_beams **out, eng_err *err);
void gen_beams_free(gen_beams *bs);

/* Runs one step. logits: (num_beams, vocab) raw logits of each beam's last
 * position; this applies log_softmax, then the repetition penalty, as HF does.
 * beam_ids[b][0..beam_len[b]) is beam b's whole sequence so far (prompt +
 * generated). On the first step every beam is the prompt and only beam 0's
 * score counts (the others start at -1e9, as in HF), so the caller may repeat
 * one row of prompt logits num_beams times.
 *
 * Writes, for each new beam b in [0, num_beams), the old beam it extends,
 * parent[b], and its new token, token[b] (never eos_id). Returns 0 to go on,
 * or 1 when the search is over: HF's is_done, or max_new_tokens reached (the
 * running beams, with this step's tokens, are then added as hypotheses, as
 * BeamSearchScorer.finalize does). No step may follow a 1. */
int gen_beams_step(gen_beams *bs, const float *logits, const int32_t *const *beam_ids,
                   const int *beam_len, int32_t *parent, int32_t *token);

/* A finished hypothesis. generated_len, the length length_penalty applies
 * to, is n_ids: the tokens after the prompt, EOS included (current
 * transformers' cur_len - prompt_len; older versions counted the prompt too). */
typedef struct gen_hypothesis {
    const int32_t *ids; /* (n_ids) generated ids, ending with eos_id when the hypothesis
                           finished on EOS; owned by the gen_beams */
    int n_ids;
    double score;       /* sum_logprobs / n_ids ** length_penalty: HF's sequences_scores */
    float sum_logprobs; /* sum of the chosen tokens' processed log-probabilities */
} gen_hypothesis;

/* After gen_beams_step returned 1: the hypothesis of the given rank (0 = the
 * best, which generate() returns; up to num_beams - 1). Returns 0, or
 * ENG_EINVAL when the search is not over or rank is out of range. */
int gen_beams_result(const gen_beams *bs, int rank, gen_hypothesis *out);

#endif
