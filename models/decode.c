/* Decoding algorithms of text generation with transformers' semantics: see
 * decode.h. Section by section this follows transformers'
 * generation/logits_process.py (the processors), generation/utils.py (their
 * order, _sample's token choice, _beam_search's step) and
 * generation/beam_search.py (BeamSearchScorer.process/finalize and
 * BeamHypotheses.add/is_done).
 *
 * Ties. torch.sort and torch.topk promise no order among equal values; where
 * HF's result depends on it, equal values rank by index here, the lower index
 * first (as argmax does): top-p keeps the lower id of two equal logits at its
 * boundary, and beam search prefers the lower beam, then the lower token. */
#include "models/decode.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/ops.h"

/* ---- Parameters ------------------------------------------------------------ */

void gen_params_default(gen_params *p)
{
    *p = (gen_params){
        .max_new_tokens = 20,
        .do_sample = false,
        .temperature = 1.0,
        .top_k = 50,
        .top_p = 1.0,
        .repetition_penalty = 1.0,
        .seed = 0,
        .num_beams = 1,
        .length_penalty = 1.0,
        .early_stopping = GEN_EARLY_FALSE,
        .eos_id = -1,
    };
}

/* Temperature and repetition penalty scale float32 logits (divided or
 * multiplied): beyond this range a logit overflows to infinity or the value
 * itself underflows to 0 in float32, and the scores turn to NaN. Real
 * settings sit near 1. Comparisons are written so that NaN fails them. */
#define GEN_SCALE_MIN 1e-6
#define GEN_SCALE_MAX 1e6

static bool scale_in_range(double x)
{
    return x >= GEN_SCALE_MIN && x <= GEN_SCALE_MAX;
}

int gen_params_check(const gen_params *p, eng_err *err)
{
    if (p->max_new_tokens < 1)
        return eng_err_set(err, ENG_EINVAL, "`max_new_tokens` must be at least 1, got %d",
                           p->max_new_tokens);
    if (!scale_in_range(p->temperature))
        return eng_err_set(err, ENG_EINVAL,
                           "`temperature` must be a number from %g to %g, got %g (for greedy "
                           "decoding set `do_sample` to false)", GEN_SCALE_MIN, GEN_SCALE_MAX,
                           p->temperature);
    if (p->top_k < 0)
        return eng_err_set(err, ENG_EINVAL, "`top_k` must be 0 (off) or positive, got %d",
                           p->top_k);
    if (!(p->top_p > 0 && p->top_p <= 1))
        return eng_err_set(err, ENG_EINVAL, "`top_p` must be in (0, 1], got %g", p->top_p);
    if (!scale_in_range(p->repetition_penalty))
        return eng_err_set(err, ENG_EINVAL,
                           "`repetition_penalty` must be a number from %g to %g, got %g",
                           GEN_SCALE_MIN, GEN_SCALE_MAX, p->repetition_penalty);
    if (p->num_beams < 1)
        return eng_err_set(err, ENG_EINVAL, "`num_beams` must be at least 1, got %d",
                           p->num_beams);
    if (p->num_beams > 1 && p->do_sample)
        return eng_err_set(err, ENG_EINVAL,
                           "`num_beams` > 1 (beam search) cannot be combined with `do_sample`");
    if (!isfinite(p->length_penalty))
        return eng_err_set(err, ENG_EINVAL, "`length_penalty` must be a finite number, got %g",
                           p->length_penalty);
    if (p->early_stopping != GEN_EARLY_FALSE && p->early_stopping != GEN_EARLY_TRUE &&
        p->early_stopping != GEN_EARLY_NEVER)
        return eng_err_set(err, ENG_EINVAL,
                           "`early_stopping` must be true, false or \"never\"");
    if (p->eos_id < -1)
        return eng_err_set(err, ENG_EINVAL, "`eos_token_id` must be a token id, got %d",
                           p->eos_id);
    return 0;
}

/* ---- Random numbers -------------------------------------------------------- */

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

/* splitmix64 spreads any seed, 0 included, over the four words of state,
 * which xoshiro needs not to be all zero. */
void gen_rng_seed(gen_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++) {
        uint64_t z = (seed += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        r->s[i] = z ^ (z >> 31);
    }
}

uint64_t gen_rng_next(gen_rng *r)
{
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

double gen_rng_uniform(gen_rng *r)
{
    return (double)(gen_rng_next(r) >> 11) * 0x1.0p-53;
}

/* ---- Logits processors ----------------------------------------------------- */

/* One vocabulary entry in the scratch: a value and its token id. */
typedef struct gen_entry {
    float v;
    int32_t id;
} gen_entry;

size_t gen_scratch_bytes(int vocab)
{
    return (size_t)vocab * sizeof(gen_entry);
}

/* RepetitionPenaltyLogitsProcessor: a negative score is multiplied by the
 * penalty, any other divided, so a penalty > 1 always makes the token less
 * likely. HF gathers every context id's score first and scatters the
 * penalised values back, so an id that occurs twice is penalised once; seen
 * (vocab bytes) marks the ids already done. Works on logits (sampling,
 * greedy) and on log-probabilities (beam search) alike. */
static void repetition_penalty(double penalty, const int32_t *context, size_t n_ctx,
                               float *scores, int vocab, uint8_t *seen)
{
    if (penalty == 1.0 || n_ctx == 0)
        return;
    float pen = (float)penalty;
    memset(seen, 0, (size_t)vocab);
    for (size_t i = 0; i < n_ctx; i++) {
        int32_t id = context[i];
        assert(id >= 0 && id < vocab);
        if (seen[id])
            continue;
        seen[id] = 1;
        scores[id] = scores[id] < 0 ? scores[id] * pen : scores[id] / pen;
    }
}

static void temperature(double t, float *logits, int vocab)
{
    float tf = (float)t;
    for (int i = 0; i < vocab; i++)
        logits[i] /= tf;
}

/* The k-th largest of v[0..n) (k in [1, n]), counting equal values
 * separately as torch.topk does. Quickselect; reorders v. */
static float kth_largest(float *v, int n, int k)
{
    int lo = 0, hi = n - 1, want = k - 1;
    while (lo < hi) {
        float pivot = v[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (v[i] > pivot)
                i++;
            while (v[j] < pivot)
                j--;
            if (i <= j) {
                float t = v[i];
                v[i++] = v[j];
                v[j--] = t;
            }
        }
        if (want <= j)
            hi = j;
        else if (want >= i)
            lo = i;
        else
            break; /* v[j+1 .. i-1] all equal the pivot */
    }
    return v[want];
}

/* TopKLogitsWarper: removes every score below the k-th largest, so values
 * tied with the k-th are all kept and more than k tokens may survive. */
static void top_k(int k, float *logits, int vocab, float *copy)
{
    if (k <= 0 || k >= vocab)
        return;
    memcpy(copy, logits, (size_t)vocab * sizeof(float));
    float kth = kth_largest(copy, vocab, k);
    for (int i = 0; i < vocab; i++)
        if (logits[i] < kth)
            logits[i] = -INFINITY;
}

/* Ascending by value; among equal values the higher id first, so that the
 * lower id counts as the more probable (see the file comment). */
static int entry_cmp_ascending(const void *a, const void *b)
{
    const gen_entry *x = a, *y = b;
    if (x->v != y->v)
        return x->v < y->v ? -1 : 1;
    return (x->id < y->id) - (x->id > y->id);
}

/* TopPLogitsWarper: sorts ascending, takes the cumulative softmax, removes
 * every token whose cumulative probability is <= 1 - top_p and always keeps
 * the most probable one (min_tokens_to_keep = 1): what remains is the
 * smallest set of most probable tokens whose mass reaches top_p. Tokens
 * already at -inf (or NaN) have no mass and are left out of the sort. HF's
 * softmax and cumsum yield float32; this accumulates in double and compares
 * in float32 with HF's float32 threshold, so the two can differ only where a
 * cumulative sum lies within rounding of 1 - top_p. */
static void top_p(double p, float *logits, int vocab, gen_entry *e)
{
    if (p >= 1.0)
        return;
    int n = 0;
    for (int i = 0; i < vocab; i++)
        if (logits[i] > -INFINITY)
            e[n++] = (gen_entry){logits[i], i};
    if (n <= 1)
        return;
    qsort(e, (size_t)n, sizeof(*e), entry_cmp_ascending);
    float max = e[n - 1].v;
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += exp((double)e[i].v - max);
    float threshold = (float)(1.0 - p);
    double cum = 0;
    for (int i = 0; i < n - 1; i++) {
        cum += exp((double)e[i].v - max) / sum;
        if (!((float)cum <= threshold))
            break;
        logits[e[i].id] = -INFINITY;
    }
}

void gen_process_logits(const gen_params *p, const int32_t *context, size_t n_ctx, float *logits,
                        int vocab, void *scratch)
{
    repetition_penalty(p->repetition_penalty, context, n_ctx, logits, vocab, scratch);
    if (!p->do_sample)
        return;
    /* The warpers, in _get_logits_processor's order. */
    if (p->temperature != 1.0)
        temperature(p->temperature, logits, vocab);
    top_k(p->top_k, logits, vocab, scratch);
    top_p(p->top_p, logits, vocab, scratch);
}

/* ---- Choosing the token ---------------------------------------------------- */

static int32_t argmax(const float *x, int n)
{
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

/* Inverse-CDF draw from softmax(logits) with max = the largest logit and sum
 * = sum(exp(logit - max)). A token at -inf has no mass and is never drawn:
 * the cumulative sum must strictly pass the target. */
static int32_t draw(const float *logits, int vocab, float max, double sum, gen_rng *rng)
{
    double target = gen_rng_uniform(rng) * sum, cum = 0;
    int32_t last = -1;
    for (int i = 0; i < vocab; i++) {
        if (!(logits[i] > -INFINITY))
            continue;
        cum += exp((double)logits[i] - max);
        if (cum > target)
            return i;
        last = i;
    }
    return last; /* only when rounding left target at the very top */
}

int32_t gen_next_token(const gen_params *p, const float *logits, int vocab, gen_rng *rng,
                       float *logprob)
{
    assert(vocab >= 1);
    int32_t tok = argmax(logits, vocab);
    float max = logits[tok];
    double sum = 0;
    if (p->do_sample || logprob)
        for (int i = 0; i < vocab; i++)
            sum += exp((double)logits[i] - max);
    if (p->do_sample) {
        assert(rng);
        tok = draw(logits, vocab, max, sum, rng);
    }
    if (logprob)
        *logprob = (float)((double)logits[tok] - max - log(sum));
    return tok;
}

/* ---- Beam search ----------------------------------------------------------- */

/* A continuation: beam `beam` followed by `token`, with the running sum of
 * log-probabilities it would have. */
typedef struct gen_cand {
    float score;
    int32_t beam, token;
} gen_cand;

typedef struct gen_hyp {
    double score;       /* sum_logprobs / n ** length_penalty */
    float sum_logprobs;
    int n;
    int32_t *ids;       /* (max_new_tokens) */
} gen_hyp;

struct gen_beams {
    gen_params p;
    int vocab, nb;
    int step;           /* tokens each running beam has generated */
    bool done;
    float *beam_scores; /* (nb) running sums of log-probabilities */
    float *row;         /* (vocab) one beam's processed log-probabilities */
    uint8_t *seen;      /* (vocab) repetition-penalty marks */
    gen_cand *cand;     /* (2 nb) the best continuations so far, best first */
    int n_cand;
    /* BeamHypotheses: in HF's list order, with one slot more than nb for an
     * arrival that pushes the worst out. */
    gen_hyp *hyps;      /* (nb + 1) */
    int n_hyps;
    double worst;       /* HF's worst_score: the lowest score held, 1e9 when none */
    int32_t *ids;       /* (nb + 1, max_new_tokens) backing hyps[].ids */
    int *rank;          /* (nb) indices into hyps, best first, once done */
};

void gen_beams_free(gen_beams *bs)
{
    if (!bs)
        return;
    free(bs->beam_scores);
    free(bs->row);
    free(bs->seen);
    free(bs->cand);
    free(bs->hyps);
    free(bs->ids);
    free(bs->rank);
    free(bs);
}

int gen_beams_new(const gen_params *p, int vocab, gen_beams **out, eng_err *err)
{
    *out = NULL;
    int rc = gen_params_check(p, err);
    if (rc)
        return rc;
    if (p->num_beams < 2)
        return eng_err_set(err, ENG_EINVAL, "beam search needs `num_beams` >= 2, got %d",
                           p->num_beams);
    if (vocab < 2)
        return eng_err_set(err, ENG_EINVAL, "beam search needs a vocabulary of 2 or more ids");
    gen_beams *bs = calloc(1, sizeof(*bs));
    if (!bs)
        return eng_err_set(err, ENG_ENOMEM, "out of memory for beam search");
    int nb = p->num_beams;
    bs->p = *p;
    bs->vocab = vocab;
    bs->nb = nb;
    bs->beam_scores = malloc((size_t)nb * sizeof(float));
    bs->row = malloc((size_t)vocab * sizeof(float));
    bs->seen = malloc((size_t)vocab);
    bs->cand = malloc(2 * (size_t)nb * sizeof(gen_cand));
    bs->hyps = calloc((size_t)nb + 1, sizeof(gen_hyp));
    bs->ids = malloc(((size_t)nb + 1) * (size_t)p->max_new_tokens * sizeof(int32_t));
    bs->rank = malloc((size_t)nb * sizeof(int));
    if (!bs->beam_scores || !bs->row || !bs->seen || !bs->cand || !bs->hyps || !bs->ids ||
        !bs->rank) {
        gen_beams_free(bs);
        return eng_err_set(err, ENG_ENOMEM, "out of memory for %d beams over %d ids", nb, vocab);
    }
    /* Only beam 0 starts live, so the first step does not pick the same
     * continuation of the prompt num_beams times. */
    bs->beam_scores[0] = 0;
    for (int b = 1; b < nb; b++)
        bs->beam_scores[b] = -1e9f;
    for (int i = 0; i <= nb; i++)
        bs->hyps[i].ids = bs->ids + (size_t)i * (size_t)p->max_new_tokens;
    bs->worst = 1e9;
    *out = bs;
    return 0;
}

/* Offers a continuation to the best 2 nb (HF's n_tokens_to_keep with one EOS
 * id, a top-k over the flattened (beam, vocab) scores). Offers come in
 * increasing (beam, token) order, so one equal to a held score goes after it. */
static void cand_offer(gen_beams *bs, float score, int32_t beam, int32_t token)
{
    int cap = 2 * bs->nb, n = bs->n_cand;
    if (n == cap) {
        if (!(score > bs->cand[cap - 1].score))
            return;
        n--;
    }
    int i = n;
    while (i > 0 && score > bs->cand[i - 1].score) {
        bs->cand[i] = bs->cand[i - 1];
        i--;
    }
    bs->cand[i] = (gen_cand){score, beam, token};
    bs->n_cand = n + 1;
}

/* BeamHypotheses.add: the sequence prev[len - step .. len) + last, whose
 * log-probabilities sum to sum, enters when fewer than nb are held or it
 * beats the worst; the worst (the earliest of equal worst) then leaves. */
static void hyp_add(gen_beams *bs, const int32_t *prev, int len, int32_t last, float sum)
{
    int n = bs->step + 1;
    double score = (double)sum / pow((double)n, bs->p.length_penalty);
    if (bs->n_hyps == bs->nb && !(score > bs->worst))
        return;
    assert(len >= bs->step);
    gen_hyp *h = &bs->hyps[bs->n_hyps++];
    memcpy(h->ids, prev + len - bs->step, (size_t)bs->step * sizeof(int32_t));
    h->ids[bs->step] = last;
    h->n = n;
    h->score = score;
    h->sum_logprobs = sum;
    if (bs->n_hyps <= bs->nb) {
        bs->worst = fmin(score, bs->worst);
        return;
    }
    int w = 0;
    for (int i = 1; i < bs->n_hyps; i++)
        if (bs->hyps[i].score < bs->hyps[w].score)
            w = i;
    gen_hyp gone = bs->hyps[w];
    memmove(&bs->hyps[w], &bs->hyps[w + 1], (size_t)(bs->n_hyps - w - 1) * sizeof(gen_hyp));
    bs->hyps[--bs->n_hyps] = gone; /* keeps its ids buffer for the next arrival */
    bs->worst = bs->hyps[0].score;
    for (int i = 1; i < bs->n_hyps; i++)
        bs->worst = fmin(bs->worst, bs->hyps[i].score);
}

/* BeamHypotheses.is_done, with best the step's best candidate score, before
 * bs->step counts this step's token: can no running beam still beat the
 * worst finished hypothesis? (The newer, vectorised _beam_search in
 * generation/utils.py takes the best running beam's score instead of the
 * best candidate's; the two differ only when that candidate is an EOS.) */
static bool hyps_done(const gen_beams *bs, float best)
{
    if (bs->n_hyps < bs->nb)
        return false;
    if (bs->p.early_stopping == GEN_EARLY_TRUE)
        return true;
    double len = bs->step + 1; /* HF's cur_len - prompt_len, this step's token included */
    if (bs->p.early_stopping == GEN_EARLY_NEVER && bs->p.length_penalty > 0)
        len = bs->p.max_new_tokens;
    return bs->worst >= (double)best / pow(len, bs->p.length_penalty);
}

/* Gathers the best 2 nb continuations over all beams into bs->cand. */
static void collect_candidates(gen_beams *bs, const float *logits,
                               const int32_t *const *beam_ids, const int *beam_len)
{
    int vocab = bs->vocab;
    bs->n_cand = 0;
    for (int b = 0; b < bs->nb; b++) {
        /* _beam_search: log_softmax first, then the processors, then the
         * beam's running score, all in float32. */
        eng_log_softmax(bs->row, logits + (size_t)b * vocab, vocab);
        repetition_penalty(bs->p.repetition_penalty, beam_ids[b], (size_t)beam_len[b], bs->row,
                           vocab, bs->seen);
        float base = bs->beam_scores[b];
        for (int v = 0; v < vocab; v++)
            cand_offer(bs, bs->row[v] + base, b, v);
    }
}

/* Orders the hypotheses best first as finalize's sorted(...).pop() does:
 * by score, and among equal scores the later in the list first. */
static void rank_hyps(gen_beams *bs)
{
    for (int i = 0; i < bs->n_hyps; i++) {
        int j = i;
        while (j > 0 && !(bs->hyps[bs->rank[j - 1]].score > bs->hyps[i].score)) {
            bs->rank[j] = bs->rank[j - 1];
            j--;
        }
        bs->rank[j] = i;
    }
}

int gen_beams_step(gen_beams *bs, const float *logits, const int32_t *const *beam_ids,
                   const int *beam_len, int32_t *parent, int32_t *token)
{
    assert(!bs->done);
    collect_candidates(bs, logits, beam_ids, beam_len);

    /* BeamSearchScorer.process: walk the candidates best first. An EOS among
     * the top nb finishes a hypothesis; an EOS further down is dropped; any
     * other token extends a beam until nb beams are filled. */
    int filled = 0;
    for (int r = 0; r < bs->n_cand && filled < bs->nb; r++) {
        gen_cand c = bs->cand[r];
        if (c.token == bs->p.eos_id) {
            if (r < bs->nb)
                hyp_add(bs, beam_ids[c.beam], beam_len[c.beam], c.token, c.score);
            continue;
        }
        parent[filled] = c.beam;
        token[filled] = c.token;
        bs->beam_scores[filled++] = c.score;
    }
    /* Each beam yields at most one EOS among 2 nb candidates. */
    assert(filled == bs->nb);

    bool done = hyps_done(bs, bs->cand[0].score);
    bool last = bs->step + 1 == bs->p.max_new_tokens;
    if (!done && last) {
        /* finalize: the running beams, this step's tokens appended, compete
         * with the finished hypotheses. */
        for (int b = 0; b < bs->nb; b++)
            hyp_add(bs, beam_ids[parent[b]], beam_len[parent[b]], token[b], bs->beam_scores[b]);
    }
    bs->step++;
    if (!done && !last)
        return 0;
    rank_hyps(bs);
    bs->done = true;
    return 1;
}

int gen_beams_result(const gen_beams *bs, int rank, gen_hypothesis *out)
{
    if (!bs->done)
        return ENG_EINVAL;
    if (rank < 0 || rank >= bs->n_hyps)
        return ENG_EINVAL;
    const gen_hyp *h = &bs->hyps[bs->rank[rank]];
    *out = (gen_hypothesis){h->ids, h->n, h->score, h->sum_logprobs};
    return 0;
}
