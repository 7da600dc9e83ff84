/* Decoding (models/decode.c): logits processors, token choice and beam search
 * against hand-computed transformers results, and beam search against a
 * literal re-statement of BeamSearchScorer on random tiny "models". */
#include <stdlib.h>

#include "engine/ops.h"
#include "models/decode.h"
#include "tests/unit/test.h"

/* ---- Logits processors ----------------------------------------------------- */

static void *scratch_for(int vocab)
{
    return malloc(gen_scratch_bytes(vocab));
}

static gen_params sampling(void)
{
    gen_params p;
    gen_params_default(&p);
    p.do_sample = true;
    p.top_k = 0;
    return p;
}

/* Logits whose softmax is exactly probs (up to rounding). */
static void log_of(float *logits, const double *probs, int n)
{
    for (int i = 0; i < n; i++)
        logits[i] = (float)log(probs[i]);
}

TEST(decode_repetition_penalty_signs_and_repeats)
{
    gen_params p;
    gen_params_default(&p);
    p.repetition_penalty = 2.0;
    float x[6] = {2, -2, 1, -1, 0, 3};
    int32_t ctx[] = {0, 1, 0, 0, 4, 1};
    void *s = scratch_for(6);
    gen_process_logits(&p, ctx, 6, x, 6, s);
    CHECK_NEAR(x[0], 1.0, 0); /* positive: divided, once although id 0 occurs 3 times */
    CHECK_NEAR(x[1], -4.0, 0); /* negative: multiplied, once */
    CHECK_NEAR(x[2], 1.0, 0);  /* not in the context */
    CHECK_NEAR(x[3], -1.0, 0);
    CHECK_NEAR(x[4], 0.0, 0);  /* zero stays zero */
    CHECK_NEAR(x[5], 3.0, 0);
    /* A penalty below 1 rewards: positive logits grow, negative shrink. */
    p.repetition_penalty = 0.5;
    float y[2] = {2, -2};
    int32_t ctx2[] = {0, 1};
    gen_process_logits(&p, ctx2, 2, y, 2, s);
    CHECK_NEAR(y[0], 4.0, 0);
    CHECK_NEAR(y[1], -1.0, 0);
    free(s);
}

TEST(decode_temperature_scales_only_when_sampling)
{
    gen_params p = sampling();
    p.temperature = 0.5;
    float x[3] = {1, -2, 3};
    void *s = scratch_for(3);
    gen_process_logits(&p, NULL, 0, x, 3, s);
    CHECK_NEAR(x[0], 2.0, 1e-6);
    CHECK_NEAR(x[1], -4.0, 1e-6);
    CHECK_NEAR(x[2], 6.0, 1e-6);
    p.do_sample = false; /* greedy: HF adds the warpers only when sampling */
    gen_process_logits(&p, NULL, 0, x, 3, s);
    CHECK_NEAR(x[2], 6.0, 0);
    free(s);
}

static int count_kept(const float *x, int n)
{
    int k = 0;
    for (int i = 0; i < n; i++)
        k += x[i] > -INFINITY;
    return k;
}

TEST(decode_top_k_keeps_k_and_ties_at_kth)
{
    gen_params p = sampling();
    void *s = scratch_for(16);
    float x[16];
    for (int i = 0; i < 16; i++)
        x[i] = (float)((i * 7) % 16); /* a permutation of 0..15 */
    p.top_k = 5;
    gen_process_logits(&p, NULL, 0, x, 16, s);
    CHECK_EQ_INT(count_kept(x, 16), 5);
    for (int i = 0; i < 16; i++)
        CHECK_MSG((x[i] > -INFINITY) == ((i * 7) % 16 >= 11), "top-5 kept id %d wrongly", i);

    /* The 2nd largest is 3, shared by three ids: all three stay. */
    float t[5] = {1, 3, 3, 2, 3};
    p.top_k = 2;
    gen_process_logits(&p, NULL, 0, t, 5, s);
    CHECK_EQ_INT(count_kept(t, 5), 3);
    CHECK(t[0] == -INFINITY && t[3] == -INFINITY);
    float u[5] = {1, 3, 3, 2, 3};
    p.top_k = 4;
    gen_process_logits(&p, NULL, 0, u, 5, s);
    CHECK_EQ_INT(count_kept(u, 5), 4);
    CHECK(u[0] == -INFINITY);
    float w[3] = {1, 2, 3}; /* k >= vocab: nothing removed */
    p.top_k = 3;
    gen_process_logits(&p, NULL, 0, w, 3, s);
    CHECK_EQ_INT(count_kept(w, 3), 3);
    free(s);
}

/* Applies top_p alone to logits log(probs) and returns the kept-id bitmask. */
static unsigned top_p_mask(const double *probs, int n, double top_p, int top_k)
{
    gen_params p = sampling();
    p.top_p = top_p;
    p.top_k = top_k;
    float x[16];
    log_of(x, probs, n);
    void *s = scratch_for(n);
    gen_process_logits(&p, NULL, 0, x, n, s);
    free(s);
    unsigned m = 0;
    for (int i = 0; i < n; i++)
        m |= (unsigned)(x[i] > -INFINITY) << i;
    return m;
}

TEST(decode_top_p_smallest_set_reaching_p)
{
    const double probs[4] = {0.1, 0.5, 0.15, 0.25};
    CHECK_EQ_INT(top_p_mask(probs, 4, 0.7, 0), 0x2 | 0x8);         /* .5 + .25 >= .7 */
    CHECK_EQ_INT(top_p_mask(probs, 4, 0.8, 0), 0x2 | 0x8 | 0x4);   /* + .15 */
    CHECK_EQ_INT(top_p_mask(probs, 4, 0.95, 0), 0xf);
    CHECK_EQ_INT(top_p_mask(probs, 4, 0.3, 0), 0x2);               /* the top alone suffices */
    CHECK_EQ_INT(top_p_mask(probs, 4, 0.01, 0), 0x2);              /* at least one token */
    CHECK_EQ_INT(top_p_mask(probs, 4, 1.0, 0), 0xf);               /* off */
    /* top-k runs first and top-p sees the renormalised rest: .4 and .3
     * become .57 and .43, so p = .5 keeps the first alone (without top-k it
     * would keep both). */
    const double q[4] = {0.4, 0.3, 0.2, 0.1};
    CHECK_EQ_INT(top_p_mask(q, 4, 0.5, 2), 0x1);
    CHECK_EQ_INT(top_p_mask(q, 4, 0.5, 0), 0x3);
    /* Two equal halves and p = .5: one is enough; the lower id stays. */
    const double h[2] = {0.5, 0.5};
    CHECK_EQ_INT(top_p_mask(h, 2, 0.5, 0), 0x1);
}

TEST(decode_params_check_names_each_bad_field)
{
    gen_params ok;
    gen_params_default(&ok);
    eng_err err = {0};
    CHECK_EQ_INT(gen_params_check(&ok, &err), 0);
    struct {
        const char *field;
        gen_params p;
    } bad[32];
    int n = 0;
#define BAD(name, stmt)                                                                    \
    do {                                                                                   \
        bad[n].field = name;                                                               \
        bad[n].p = ok;                                                                     \
        gen_params *q = &bad[n++].p;                                                       \
        stmt;                                                                              \
    } while (0)
    BAD("`max_new_tokens`", q->max_new_tokens = 0);
    BAD("`temperature`", q->temperature = 0);
    BAD("`temperature`", q->temperature = -1);
    BAD("`temperature`", q->temperature = NAN);
    BAD("`temperature`", q->temperature = 1e-300); /* 0 in float32: logits / 0 */
    BAD("`temperature`", q->temperature = 1e-40);  /* a float32 denormal */
    BAD("`temperature`", q->temperature = 1e7);
    BAD("`top_k`", q->top_k = -1);
    BAD("`top_p`", q->top_p = 0);
    BAD("`top_p`", q->top_p = 1.5);
    BAD("`top_p`", q->top_p = NAN);
    BAD("`repetition_penalty`", q->repetition_penalty = 0);
    BAD("`repetition_penalty`", q->repetition_penalty = INFINITY);
    BAD("`repetition_penalty`", q->repetition_penalty = 1e-45);
    BAD("`repetition_penalty`", q->repetition_penalty = 3e38);
    BAD("`num_beams`", q->num_beams = 0);
    BAD("`do_sample`", (q->num_beams = 2, q->do_sample = true));
    BAD("`length_penalty`", q->length_penalty = NAN);
    BAD("`early_stopping`", q->early_stopping = (gen_early_stopping)7);
    BAD("`eos_token_id`", q->eos_id = -2);
#undef BAD
    for (int i = 0; i < n; i++) {
        err = (eng_err){0};
        int rc = gen_params_check(&bad[i].p, &err);
        CHECK_MSG(rc == ENG_EINVAL, "case %d (%s): rc %d", i, bad[i].field, rc);
        CHECK_MSG(strstr(err.msg, bad[i].field), "case %d: \"%s\" does not name %s", i, err.msg,
                  bad[i].field);
    }
}

/* ---- Token choice ---------------------------------------------------------- */

TEST(decode_rng_reproducible)
{
    gen_rng a, b, c;
    gen_rng_seed(&a, 42);
    gen_rng_seed(&b, 42);
    gen_rng_seed(&c, 43);
    int differ = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = gen_rng_next(&a), y = gen_rng_next(&b), z = gen_rng_next(&c);
        CHECK_MSG(x == y, "draw %d differs for one seed", i);
        differ += x != z;
    }
    CHECK(differ > 990);
    /* The first draws of a fixed seed, so any platform can check itself. */
    gen_rng_seed(&a, 0);
    uint64_t first = gen_rng_next(&a);
    gen_rng_seed(&a, 0);
    CHECK(gen_rng_next(&a) == first);
    for (int i = 0; i < 1000; i++) {
        double u = gen_rng_uniform(&a);
        CHECK(u >= 0 && u < 1);
    }
}

TEST(decode_greedy_argmax_first_on_ties)
{
    gen_params p;
    gen_params_default(&p);
    float x[5] = {1, 3, 2, 3, -1};
    float lp = 0;
    CHECK_EQ_INT(gen_next_token(&p, x, 5, NULL, &lp), 1);
    double lse = log(exp(1) + 2 * exp(3) + exp(2) + exp(-1));
    CHECK_NEAR(lp, 3 - lse, 1e-6);
}

TEST(decode_sampling_never_draws_removed)
{
    enum { V = 100, DRAWS = 10000 };
    gen_rng r;
    gen_rng_seed(&r, 7);
    float x[V];
    for (int i = 0; i < V; i++)
        x[i] = (float)(gen_rng_uniform(&r) * 6 - 3);
    gen_params p = sampling();
    p.temperature = 0.7;
    p.top_k = 20;
    p.top_p = 0.9;
    void *s = scratch_for(V);
    gen_process_logits(&p, NULL, 0, x, V, s);
    free(s);
    int kept = count_kept(x, V);
    CHECK(kept >= 1 && kept <= 20);
    int hits[V] = {0};
    for (int i = 0; i < DRAWS; i++) {
        int32_t t = gen_next_token(&p, x, V, &r, NULL);
        CHECK_MSG(t >= 0 && t < V && x[t] > -INFINITY, "draw %d picked removed id %d", i, t);
        if (t >= 0 && t < V)
            hits[t]++;
    }
    int used = 0;
    for (int i = 0; i < V; i++)
        used += hits[i] > 0;
    CHECK(used >= 2 && used <= kept);
}

TEST(decode_sampling_matches_softmax)
{
    enum { V = 8, DRAWS = 20000 };
    float x[V] = {0.5f, 1.0f, -1.0f, 2.0f, 0.0f, 1.5f, -0.5f, 0.3f};
    double sum = 0, prob[V];
    for (int i = 0; i < V; i++)
        sum += exp(x[i]);
    for (int i = 0; i < V; i++)
        prob[i] = exp(x[i]) / sum;
    gen_params p = sampling();
    gen_rng r;
    gen_rng_seed(&r, 12345);
    int hits[V] = {0};
    for (int i = 0; i < DRAWS; i++)
        hits[gen_next_token(&p, x, V, &r, NULL)]++;
    /* 0.015 is over 4 standard deviations for every probability here. */
    for (int i = 0; i < V; i++)
        CHECK_NEAR((double)hits[i] / DRAWS, prob[i], 0.015);
    float lp;
    gen_rng_seed(&r, 1);
    int32_t t = gen_next_token(&p, x, V, &r, &lp);
    CHECK_NEAR(lp, log(prob[t]), 1e-6);
}

TEST(decode_cold_temperature_is_argmax)
{
    enum { V = 50 };
    gen_rng r;
    gen_rng_seed(&r, 99);
    void *s = scratch_for(V);
    gen_params greedy;
    gen_params_default(&greedy);
    for (int trial = 0; trial < 200; trial++) {
        float x[V], y[V];
        for (int i = 0; i < V; i++)
            x[i] = y[i] = (float)(gen_rng_uniform(&r) * 10); /* gaps well above 1e-4 * 20 */
        gen_params p = sampling();
        p.temperature = 1e-4;
        gen_process_logits(&p, NULL, 0, y, V, s);
        int32_t want = gen_next_token(&greedy, x, V, NULL, NULL);
        CHECK_EQ_INT(gen_next_token(&p, y, V, &r, NULL), want);
    }
    free(s);
}

/* ---- Beam search on a toy model -------------------------------------------- */

/* A toy "model" whose next-token logits depend only on the last token:
 * table (V, V), row t = the logits after t. The driver plays the scheduler:
 * it owns the beams' sequences and rebuilds them from parent/token. */
enum { TOY_MAXB = 4, TOY_MAXV = 12, TOY_MAXLEN = 24 };

typedef struct toy_run {
    int steps;                            /* steps until gen_beams_step returned 1 */
    int32_t parent[TOY_MAXLEN][TOY_MAXB]; /* per step */
    int32_t token[TOY_MAXLEN][TOY_MAXB];
    gen_hypothesis best[TOY_MAXB];        /* by rank */
    int n_best;
} toy_run;

static gen_beams *toy_beam_search(const float *table, int V, const gen_params *p, int32_t prompt,
                                  toy_run *run)
{
    int nb = p->num_beams;
    int32_t seq[2][TOY_MAXB][TOY_MAXLEN];
    int len[TOY_MAXB];
    const int32_t *rows[TOY_MAXB];
    float logits[TOY_MAXB * TOY_MAXV];
    gen_beams *bs = NULL;
    eng_err err = {0};
    int rc = gen_beams_new(p, V, &bs, &err);
    CHECK_MSG(rc == 0, "gen_beams_new: %s", err.msg);
    if (rc)
        return NULL;
    for (int b = 0; b < nb; b++) {
        seq[0][b][0] = prompt;
        len[b] = 1;
    }
    int cur = 0, done = 0;
    memset(run, 0, sizeof(*run));
    while (!done && run->steps < TOY_MAXLEN - 1) {
        for (int b = 0; b < nb; b++) {
            memcpy(logits + b * V, table + seq[cur][b][len[b] - 1] * V, (size_t)V * sizeof(float));
            rows[b] = seq[cur][b];
        }
        int32_t *par = run->parent[run->steps], *tok = run->token[run->steps];
        done = gen_beams_step(bs, logits, rows, len, par, tok);
        run->steps++;
        for (int b = 0; b < nb; b++) {
            memcpy(seq[!cur][b], seq[cur][par[b]], (size_t)len[par[b]] * sizeof(int32_t));
            seq[!cur][b][len[par[b]]] = tok[b];
        }
        int l = len[0] + 1; /* all beams have one length */
        for (int b = 0; b < nb; b++)
            len[b] = l;
        cur = !cur;
    }
    CHECK(done);
    while (run->n_best < nb && gen_beams_result(bs, run->n_best, &run->best[run->n_best]) == 0)
        run->n_best++;
    return bs;
}

/* The hand-computed toy: S = 0 (the prompt), a = 1, b = 2, EOS = 3, with
 * P(. | S) = .01 .5 .3 .19, P(. | a) = .01 .12 .08 .79, P(. | b) = .01 .6 .25 .14. */
static void hand_table(float *t)
{
    static const double p[4][4] = {
        {0.01, 0.5, 0.3, 0.19},
        {0.01, 0.12, 0.08, 0.79},
        {0.01, 0.6, 0.25, 0.14},
        {0.25, 0.25, 0.25, 0.25},
    };
    for (int i = 0; i < 4; i++)
        log_of(t + 4 * i, p[i], 4);
}

static gen_params hand_params(double length_penalty, gen_early_stopping es, int max_new)
{
    gen_params p;
    gen_params_default(&p);
    p.num_beams = 2;
    p.eos_id = 3;
    p.length_penalty = length_penalty;
    p.early_stopping = es;
    p.max_new_tokens = max_new;
    return p;
}

static void check_hyp(const gen_hypothesis *h, const int32_t *ids, int n, double sum_prob,
                      double lp, const char *what)
{
    CHECK_MSG(h->n_ids == n, "%s: %d ids, want %d", what, h->n_ids, n);
    for (int i = 0; i < n && i < h->n_ids; i++)
        CHECK_MSG(h->ids[i] == ids[i], "%s: ids[%d] = %d, want %d", what, i, h->ids[i], ids[i]);
    CHECK_NEAR(h->sum_logprobs, log(sum_prob), 1e-5);
    CHECK_NEAR(h->score, log(sum_prob) / pow(n, lp), 1e-5);
}

/* Step 1: a (.5) and b (.3) fill the two beams before the walk reaches EOS
 * (.19, third). Step 2: aEOS (.395) finishes; ba (.18), bb (.075) run.
 * Step 3: baEOS (.1422) finishes; bba (.045), baa (.0216) run. With
 * length_penalty 1, aEOS scores ln(.395)/2 = -.464, baEOS ln(.1422)/3 = -.650,
 * and the best candidate, baEOS itself, cannot beat the worst: done. */
TEST(decode_beam_hand_eos_and_early_stop)
{
    float t[16];
    hand_table(t);
    gen_params p = hand_params(1.0, GEN_EARLY_FALSE, 10);
    toy_run run;
    gen_beams *bs = toy_beam_search(t, 4, &p, 0, &run);
    CHECK_EQ_INT(run.steps, 3);
    CHECK(run.parent[0][0] == 0 && run.token[0][0] == 1 && run.parent[0][1] == 0 &&
          run.token[0][1] == 2);
    CHECK(run.parent[1][0] == 1 && run.token[1][0] == 1 && run.parent[1][1] == 1 &&
          run.token[1][1] == 2);
    CHECK(run.parent[2][0] == 1 && run.token[2][0] == 1 && run.parent[2][1] == 0 &&
          run.token[2][1] == 1);
    CHECK_EQ_INT(run.n_best, 2);
    check_hyp(&run.best[0], (const int32_t[]){1, 3}, 2, 0.395, 1.0, "best");
    check_hyp(&run.best[1], (const int32_t[]){2, 1, 3}, 3, 0.1422, 1.0, "second");
    gen_hypothesis h;
    CHECK_EQ_INT(gen_beams_result(bs, 2, &h), ENG_EINVAL);
    gen_beams_free(bs);
}

/* length_penalty 2 favours length: baEOS (-1.951/9 = -.2167) beats aEOS
 * (-.929/4 = -.2322). early_stopping True stops at step 3, when two are
 * finished. False goes on: at step 3 the best candidate could still score
 * -.2167 > -.2322; step 4 finishes bbaEOS (.03555: -3.337/16 = -.2085),
 * which pushes aEOS out; baaEOS (-.2544) does not get in; the running bbaa,
 * bbab (-.326, -.352) do not at max_new_tokens either. */
TEST(decode_beam_hand_length_penalty_and_early_stopping)
{
    float t[16];
    hand_table(t);
    toy_run run;
    gen_params p = hand_params(2.0, GEN_EARLY_TRUE, 4);
    gen_beams *bs = toy_beam_search(t, 4, &p, 0, &run);
    CHECK_EQ_INT(run.steps, 3);
    check_hyp(&run.best[0], (const int32_t[]){2, 1, 3}, 3, 0.1422, 2.0, "true best");
    check_hyp(&run.best[1], (const int32_t[]){1, 3}, 2, 0.395, 2.0, "true second");
    gen_beams_free(bs);

    p = hand_params(2.0, GEN_EARLY_FALSE, 4);
    bs = toy_beam_search(t, 4, &p, 0, &run);
    CHECK_EQ_INT(run.steps, 4);
    check_hyp(&run.best[0], (const int32_t[]){2, 2, 1, 3}, 4, 0.03555, 2.0, "false best");
    check_hyp(&run.best[1], (const int32_t[]){2, 1, 3}, 3, 0.1422, 2.0, "false second");
    gen_beams_free(bs);
}

/* Without an EOS id, token 3 is an ordinary token and the running beams are
 * the result: [a 3] (.395) and [b a] (.18) after two steps. With a
 * repetition penalty of 2 on the log-probabilities, step 2 sees P(a | a) as
 * .12^2 and P(b | b) as .25^2: aEOS finishes, ba runs, bEOS (third) is
 * dropped, and ab (.04) takes the second beam from bb (.01875). */
TEST(decode_beam_hand_no_eos_and_penalty)
{
    float t[16];
    hand_table(t);
    toy_run run;
    gen_params p = hand_params(1.0, GEN_EARLY_FALSE, 2);
    p.eos_id = -1;
    gen_beams *bs = toy_beam_search(t, 4, &p, 0, &run);
    CHECK_EQ_INT(run.steps, 2);
    check_hyp(&run.best[0], (const int32_t[]){1, 3}, 2, 0.395, 1.0, "no-eos best");
    check_hyp(&run.best[1], (const int32_t[]){2, 1}, 2, 0.18, 1.0, "no-eos second");
    gen_beams_free(bs);

    p = hand_params(1.0, GEN_EARLY_FALSE, 2);
    p.repetition_penalty = 2.0;
    bs = toy_beam_search(t, 4, &p, 0, &run);
    CHECK(run.parent[1][0] == 1 && run.token[1][0] == 1 && run.parent[1][1] == 0 &&
          run.token[1][1] == 2);
    check_hyp(&run.best[0], (const int32_t[]){1, 3}, 2, 0.395, 1.0, "penalty best");
    check_hyp(&run.best[1], (const int32_t[]){2, 1}, 2, 0.18, 1.0, "penalty second");
    gen_beams_free(bs);
}

/* Exact ties: a uniform toy. torch.topk leaves the order of equal scores
 * open; here the lower (beam, token) wins, so both steps extend beam 0 with
 * tokens 0 and 1. The two final beams tie too, and finalize's stable sort
 * then pop returns the one added later, [0 1], first. */
TEST(decode_beam_ties)
{
    float t[16] = {0};
    gen_params p = hand_params(1.0, GEN_EARLY_FALSE, 2);
    p.eos_id = -1;
    toy_run run;
    gen_beams *bs = toy_beam_search(t, 4, &p, 0, &run);
    for (int s = 0; s < 2; s++)
        CHECK(run.parent[s][0] == 0 && run.token[s][0] == 0 && run.parent[s][1] == 0 &&
              run.token[s][1] == 1);
    check_hyp(&run.best[0], (const int32_t[]){0, 1}, 2, 0.0625, 1.0, "tie first");
    check_hyp(&run.best[1], (const int32_t[]){0, 0}, 2, 0.0625, 1.0, "tie second");
    gen_beams_free(bs);
}

TEST(decode_beam_rejects_bad_setup)
{
    gen_params p = hand_params(1.0, GEN_EARLY_FALSE, 4);
    gen_beams *bs = NULL;
    eng_err err = {0};
    p.num_beams = 1;
    CHECK_EQ_INT(gen_beams_new(&p, 10, &bs, &err), ENG_EINVAL);
    CHECK(bs == NULL && strstr(err.msg, "`num_beams`"));
    p.num_beams = 2;
    p.do_sample = true;
    CHECK_EQ_INT(gen_beams_new(&p, 10, &bs, &err), ENG_EINVAL);
    p.do_sample = false;
    CHECK_EQ_INT(gen_beams_new(&p, 1, &bs, &err), ENG_EINVAL);
    CHECK_EQ_INT(gen_beams_new(&p, 10, &bs, &err), 0);
    gen_hypothesis h;
    CHECK_EQ_INT(gen_beams_result(bs, 0, &h), ENG_EINVAL); /* not over yet */
    gen_beams_free(bs);
}

/* ---- Beam search against a literal BeamSearchScorer ------------------------ */

/* What follows re-states transformers' procedure as directly as C allows:
 * every (beam, token) score in one array, fully sorted; BeamHypotheses as a
 * Python list with sorted() to find the worst; is_done and finalize as
 * written. It shares only eng_log_softmax with the code under test. */
typedef struct ref_hyp {
    double score;
    float sum;
    int n;
    int32_t ids[TOY_MAXLEN];
} ref_hyp;

typedef struct ref_state {
    const gen_params *p;
    ref_hyp hyps[TOY_MAXB + 1];
    int n_hyps;
    double worst;
} ref_state;

static void ref_add(ref_state *st, const int32_t *gen, int n_gen, int32_t last, float sum)
{
    int n = n_gen + 1;
    double score = sum / pow(n, st->p->length_penalty);
    if (!(st->n_hyps < st->p->num_beams || score > st->worst))
        return;
    ref_hyp *h = &st->hyps[st->n_hyps++];
    memcpy(h->ids, gen, (size_t)n_gen * sizeof(int32_t));
    h->ids[n_gen] = last;
    h->n = n;
    h->score = score;
    h->sum = sum;
    if (st->n_hyps <= st->p->num_beams) {
        st->worst = score < st->worst ? score : st->worst;
        return;
    }
    /* sorted([(s, idx)]): the first two entries. */
    int i0 = -1, i1 = -1;
    for (int i = 0; i < st->n_hyps; i++) {
        if (i0 < 0 || st->hyps[i].score < st->hyps[i0].score) {
            i1 = i0;
            i0 = i;
        } else if (i1 < 0 || st->hyps[i].score < st->hyps[i1].score) {
            i1 = i;
        }
    }
    st->worst = st->hyps[i1].score;
    for (int i = i0; i + 1 < st->n_hyps; i++)
        st->hyps[i] = st->hyps[i + 1];
    st->n_hyps--;
}

static bool ref_is_done(const ref_state *st, float best, int cur_minus_prompt)
{
    if (st->n_hyps < st->p->num_beams)
        return false;
    if (st->p->early_stopping == GEN_EARLY_TRUE)
        return true;
    double len = cur_minus_prompt;
    if (st->p->early_stopping == GEN_EARLY_NEVER && st->p->length_penalty > 0)
        len = st->p->max_new_tokens;
    return st->worst >= best / pow(len, st->p->length_penalty);
}

typedef struct ref_cand {
    float score;
    int flat; /* beam * V + token */
} ref_cand;

static int ref_cand_cmp(const void *a, const void *b)
{
    const ref_cand *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return x->flat - y->flat;
}

/* Scores of every (beam, token), sorted best first. seq[b] holds n_ctx ids. */
static void ref_scores(const float *table, int V, const gen_params *p, int nb,
                       int32_t seq[][TOY_MAXLEN], int n_ctx, const float *beam_scores,
                       ref_cand *all)
{
    for (int b = 0; b < nb; b++) {
        float row[TOY_MAXV], g[TOY_MAXLEN];
        eng_log_softmax(row, table + seq[b][n_ctx - 1] * V, V);
        float pen = (float)p->repetition_penalty;
        for (int i = 0; i < n_ctx; i++) /* torch.gather */
            g[i] = row[seq[b][i]];
        for (int i = 0; i < n_ctx; i++) /* torch.scatter */
            row[seq[b][i]] = g[i] < 0 ? g[i] * pen : g[i] / pen;
        for (int v = 0; v < V; v++)
            all[b * V + v] = (ref_cand){row[v] + beam_scores[b], b * V + v};
    }
    qsort(all, (size_t)nb * V, sizeof(*all), ref_cand_cmp);
}

/* Runs the literal beam search from a one-token prompt; returns the steps. */
static int ref_beam_search(const float *table, int V, const gen_params *p, int32_t prompt,
                           ref_state *st)
{
    int nb = p->num_beams;
    int32_t seq[TOY_MAXB][TOY_MAXLEN], next[TOY_MAXB][TOY_MAXLEN];
    float scores[TOY_MAXB], next_scores[TOY_MAXB];
    ref_cand all[TOY_MAXB * TOY_MAXV];
    memset(st, 0, sizeof(*st));
    st->p = p;
    st->worst = 1e9;
    for (int b = 0; b < nb; b++) {
        seq[b][0] = prompt;
        scores[b] = b == 0 ? 0 : -1e9f;
    }
    for (int cur = 1;; cur++) { /* cur: sequence length, prompt included */
        ref_scores(table, V, p, nb, seq, cur, scores, all);
        int filled = 0;
        for (int r = 0; r < 2 * nb && filled < nb; r++) {
            int b = all[r].flat / V, tok = all[r].flat % V;
            if (tok == p->eos_id) {
                if (r < nb)
                    ref_add(st, seq[b] + 1, cur - 1, tok, all[r].score);
                continue;
            }
            memcpy(next[filled], seq[b], (size_t)cur * sizeof(int32_t));
            next[filled][cur] = tok;
            next_scores[filled++] = all[r].score;
        }
        bool done = ref_is_done(st, all[0].score, (cur + 1) - 1); /* HF: cur_len - prompt_len */
        memcpy(seq, next, sizeof(seq));
        memcpy(scores, next_scores, sizeof(scores));
        if (done)
            return cur;
        if (cur == p->max_new_tokens) { /* finalize */
            for (int b = 0; b < nb; b++)
                ref_add(st, seq[b] + 1, cur - 1, seq[b][cur], scores[b]);
            return cur;
        }
    }
}

/* The reference's hypotheses best first, as finalize's stable sort + pop. */
static void ref_ranked(const ref_state *st, const ref_hyp **out)
{
    int idx[TOY_MAXB + 1];
    for (int i = 0; i < st->n_hyps; i++)
        idx[i] = i;
    for (int i = 0; i < st->n_hyps; i++) /* selection: highest score, latest on ties */
        for (int j = i + 1; j < st->n_hyps; j++)
            if (st->hyps[idx[j]].score > st->hyps[idx[i]].score ||
                (st->hyps[idx[j]].score == st->hyps[idx[i]].score && idx[j] > idx[i])) {
                int t = idx[i];
                idx[i] = idx[j];
                idx[j] = t;
            }
    for (int i = 0; i < st->n_hyps; i++)
        out[i] = &st->hyps[idx[i]];
}

static void random_case(gen_rng *r, float *table, int *V, gen_params *p)
{
    static const double lps[] = {1.0, 2.0, 0.5, 0.0, -1.0};
    gen_params_default(p);
    *V = 4 + (int)(gen_rng_next(r) % (TOY_MAXV - 3));
    p->num_beams = 2 + (int)(gen_rng_next(r) % (TOY_MAXB - 1));
    p->max_new_tokens = 1 + (int)(gen_rng_next(r) % 10);
    p->length_penalty = lps[gen_rng_next(r) % 5];
    p->early_stopping = (gen_early_stopping)(gen_rng_next(r) % 3);
    p->repetition_penalty = gen_rng_next(r) % 2 ? 1.0 : 1.5;
    p->eos_id = gen_rng_next(r) % 4 ? *V - 1 : -1;
    double eos_boost = gen_rng_uniform(r) * 3; /* make EOS likely in some tables */
    for (int i = 0; i < *V * *V; i++)
        table[i] = (float)(gen_rng_uniform(r) * 4 - 2);
    for (int i = 0; i < *V; i++)
        table[i * *V + *V - 1] += (float)eos_boost;
}

TEST(decode_beam_matches_literal_scorer_on_random_toys)
{
    gen_rng r;
    gen_rng_seed(&r, 2024);
    int eos_cases = 0, early_cases = 0;
    for (int c = 0; c < 400; c++) {
        float table[TOY_MAXV * TOY_MAXV];
        int V;
        gen_params p;
        random_case(&r, table, &V, &p);
        ref_state st;
        int ref_steps = ref_beam_search(table, V, &p, 0, &st);
        const ref_hyp *want[TOY_MAXB + 1];
        ref_ranked(&st, want);
        toy_run run;
        gen_beams *bs = toy_beam_search(table, V, &p, 0, &run);
        if (!bs)
            return;
        CHECK_MSG(run.steps == ref_steps, "case %d: %d steps, want %d", c, run.steps, ref_steps);
        CHECK_MSG(run.n_best == st.n_hyps, "case %d: %d results, want %d", c, run.n_best,
                  st.n_hyps);
        for (int k = 0; k < run.n_best && k < st.n_hyps; k++) {
            const gen_hypothesis *h = &run.best[k];
            bool same = h->n_ids == want[k]->n && h->score == want[k]->score &&
                        h->sum_logprobs == want[k]->sum &&
                        !memcmp(h->ids, want[k]->ids, (size_t)h->n_ids * sizeof(int32_t));
            CHECK_MSG(same, "case %d rank %d: n %d score %.9g, want n %d score %.9g", c, k,
                      h->n_ids, h->score, want[k]->n, want[k]->score);
            eos_cases += h->ids[h->n_ids - 1] == p.eos_id && k == 0;
        }
        early_cases += run.steps < p.max_new_tokens;
        gen_beams_free(bs);
    }
    /* The random cases must exercise the interesting paths. */
    CHECK_MSG(eos_cases > 40, "only %d cases won by an EOS hypothesis", eos_cases);
    CHECK_MSG(early_cases > 40, "only %d cases stopped early", early_cases);
}
