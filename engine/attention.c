#include "engine/attention.h"

#include <math.h>

#include "engine/blas.h"
#include "engine/ops.h"
#include "engine/pool.h"
#include "engine/scratch.h"

void eng_attend_head(const float *q, int ldq, const float *k, int ldk, const float *v, int ldv,
                     int Lq, int Lk, int hd, float scale, bool causal, float *out, int ldo,
                     float *scores)
{
    if (eng_attend_small(q, ldq, k, ldk, v, ldv, Lq, Lk, hd, scale, causal, out, ldo))
        return;
    eng_sgemm(false, true, Lq, Lk, hd, scale, q, ldq, k, ldk, 0.0f, scores, Lk);
    for (int i = 0; i < Lq; i++) {
        float *row = scores + (size_t)i * Lk;
        int seen = causal ? Lk - Lq + i + 1 : Lk;
        eng_softmax(row, seen);
        for (int j = seen; j < Lk; j++)
            row[j] = 0.0f;
    }
    eng_sgemm(false, false, Lq, hd, Lk, 1.0f, scores, Lk, v, ldv, 0.0f, out, ldo);
}

/* Below this many multiply-adds a call runs on the calling thread: waking
 * the pool would cost more than the heads (a decode step's early tokens). */
enum { MIN_PARALLEL_MACS = 1 << 16 };

typedef struct attn_job {
    const eng_attn_seq *seqs;
    int n_heads, hd;
    float scale;
    bool causal;
} attn_job;

static void attn_task(void *ctx, int t, int thread)
{
    (void)thread;
    const attn_job *j = ctx;
    const eng_attn_seq *s = &j->seqs[t / j->n_heads];
    size_t c = (size_t)(t % j->n_heads) * j->hd;
    float *scores = eng_scratch(ENG_SCRATCH_SCORES, (size_t)s->Lq * s->Lk * sizeof(float));
    if (!scores) {
        for (int i = 0; i < s->Lq; i++)
            for (int d = 0; d < j->hd; d++)
                s->out[(size_t)i * s->ldo + c + d] = NAN;
        return;
    }
    eng_attend_head(s->q + c, s->ldq, s->k + c, s->ldk, s->v + c, s->ldv, s->Lq, s->Lk, j->hd,
                    j->scale, j->causal, s->out + c, s->ldo, scores);
}

void eng_attention(const eng_attn_seq *seqs, int n_seq, int n_heads, int hd, bool causal)
{
    attn_job j = {seqs, n_heads, hd, 1.0f / sqrtf((float)hd), causal};
    double macs = 0;
    for (int s = 0; s < n_seq; s++)
        macs += 2.0 * seqs[s].Lq * seqs[s].Lk * hd * n_heads;
    int tasks = n_seq * n_heads;
    eng_pool *pool = eng_pool_default();
    if (!pool || macs < MIN_PARALLEL_MACS) {
        for (int t = 0; t < tasks; t++)
            attn_task(&j, t, 0);
        return;
    }
    eng_pool_run(pool, tasks, attn_task, &j);
}

/* Every head of a packed batch. The queries are every row of each sequence
 * (q row r for token r), or with first_only one row per sequence (q row s),
 * attending to all of that sequence's keys; ctx rows follow the queries. */
static void packed_attention(const float *q, const float *k, const float *v, int ld,
                             const int *seq_off, int n_seq, int n_heads, int hd, bool causal,
                             bool first_only, float *ctx)
{
    enum { CHUNK = 64 }; /* sequences described at once, on the stack */
    eng_attn_seq seqs[CHUNK];
    int dim = n_heads * hd;
    for (int s0 = 0; s0 < n_seq; s0 += CHUNK) {
        int n = n_seq - s0 < CHUNK ? n_seq - s0 : CHUNK;
        for (int i = 0; i < n; i++) {
            int r0 = seq_off[s0 + i], L = seq_off[s0 + i + 1] - r0;
            int qrow = first_only ? s0 + i : r0;
            size_t in = (size_t)r0 * ld;
            seqs[i] = (eng_attn_seq){.q = q + (size_t)qrow * ld, .k = k + in, .v = v + in,
                                     .ldq = ld, .ldk = ld, .ldv = ld,
                                     .Lq = first_only ? 1 : L, .Lk = L,
                                     .out = ctx + (size_t)qrow * dim, .ldo = dim};
        }
        eng_attention(seqs, n, n_heads, hd, causal);
    }
}

void eng_self_attention(const float *q, const float *k, const float *v, int ld, const int *seq_off,
                        int n_seq, int n_heads, int hd, bool causal, float *ctx)
{
    packed_attention(q, k, v, ld, seq_off, n_seq, n_heads, hd, causal, false, ctx);
}

void eng_first_token_attention(const float *q, const float *k, const float *v, int ld,
                               const int *seq_off, int n_seq, int n_heads, int hd, float *ctx)
{
    packed_attention(q, k, v, ld, seq_off, n_seq, n_heads, hd, false, true, ctx);
}
