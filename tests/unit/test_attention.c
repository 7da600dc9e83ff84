/* Attention over packed sequences and KV-cache shapes, against a plain
 * double-precision reference, and the pool's split against one thread. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/attention.h"
#include "engine/pool.h"
#include "tests/unit/test.h"

enum { HEADS = 3, HD = 8, DIM = HEADS * HD };

static float *random_floats(size_t n, unsigned seed)
{
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        x[i] = ((float)(seed >> 8) / (1 << 24) - 0.5f) * 4.0f;
    }
    return x;
}

/* One head of one sequence, the textbook way, in doubles. */
static void reference_head(const eng_attn_seq *s, int h, bool causal, double *out)
{
    double *p = malloc((size_t)s->Lk * sizeof *p);
    for (int i = 0; i < s->Lq; i++) {
        int seen = causal ? s->Lk - s->Lq + i + 1 : s->Lk;
        double mx = -INFINITY, sum = 0;
        for (int j = 0; j < seen; j++) {
            double d = 0;
            for (int c = 0; c < HD; c++)
                d += (double)s->q[(size_t)i * s->ldq + h * HD + c] * s->k[(size_t)j * s->ldk + h * HD + c];
            p[j] = d / sqrt((double)HD);
            mx = fmax(mx, p[j]);
        }
        for (int j = 0; j < seen; j++)
            sum += p[j] = exp(p[j] - mx);
        for (int c = 0; c < HD; c++) {
            double acc = 0;
            for (int j = 0; j < seen; j++)
                acc += p[j] / sum * s->v[(size_t)j * s->ldv + h * HD + c];
            out[(size_t)i * HD + c] = acc;
        }
    }
    free(p);
}

static void check_against_reference(const eng_attn_seq *seqs, int n, bool causal)
{
    double out[64 * HD];
    for (int s = 0; s < n; s++)
        for (int h = 0; h < HEADS; h++) {
            reference_head(&seqs[s], h, causal, out);
            double worst = 0;
            for (int i = 0; i < seqs[s].Lq; i++)
                for (int c = 0; c < HD; c++)
                    worst = fmax(worst, fabs(seqs[s].out[(size_t)i * seqs[s].ldo + h * HD + c] -
                                             out[(size_t)i * HD + c]));
            CHECK_MSG(worst < 1e-5, "seq %d head %d causal %d: error %g", s, h, causal, worst);
        }
}

/* Self-attention over a packed batch of lengths 1..40: each sequence sees
 * only itself, causal or not. */
TEST(attention_packed_batch_matches_reference)
{
    static const int lens[] = {5, 1, 40, 17, 2, 33};
    int n = 6, off[7] = {0};
    for (int s = 0; s < n; s++)
        off[s + 1] = off[s] + lens[s];
    int T = off[n];
    float *q = random_floats((size_t)T * DIM, 1), *k = random_floats((size_t)T * DIM, 2);
    float *v = random_floats((size_t)T * DIM, 3), *ctx = malloc((size_t)T * DIM * sizeof *ctx);
    for (int causal = 0; causal < 2; causal++) {
        memset(ctx, 0xff, (size_t)T * DIM * sizeof *ctx);
        eng_self_attention(q, k, v, DIM, off, n, HEADS, HD, causal, ctx);
        eng_attn_seq seqs[6];
        for (int s = 0; s < n; s++) {
            size_t r = (size_t)off[s] * DIM;
            seqs[s] = (eng_attn_seq){q + r, k + r, v + r, DIM, DIM, DIM, lens[s], lens[s], ctx + r, DIM};
        }
        check_against_reference(seqs, n, causal);
    }
    free(q), free(k), free(v), free(ctx);
}

/* The KV-cache case: a few new queries (strided, as in GPT-2's fused qkv)
 * against a longer past; then the same on one thread gives the same bits. */
TEST(attention_cached_keys_and_threads)
{
    /* Past lengths large enough that the heads go to the pool. */
    int past[] = {0, 300, 70, 600}, newq[] = {4, 1, 1, 3}, n = 4;
    eng_attn_seq seqs[4];
    float *bufs[12];
    for (int s = 0; s < n; s++) {
        int Lk = past[s] + newq[s];
        bufs[3 * s] = random_floats((size_t)newq[s] * 3 * DIM, 10 + s);
        bufs[3 * s + 1] = random_floats((size_t)Lk * DIM, 20 + s);
        bufs[3 * s + 2] = random_floats((size_t)Lk * DIM, 30 + s);
        seqs[s] = (eng_attn_seq){.q = bufs[3 * s], .ldq = 3 * DIM, .k = bufs[3 * s + 1], .ldk = DIM,
                                 .v = bufs[3 * s + 2], .ldv = DIM, .Lq = newq[s], .Lk = Lk,
                                 .out = malloc((size_t)newq[s] * DIM * sizeof(float)), .ldo = DIM};
    }
    eng_attention(seqs, n, HEADS, HD, true);
    check_against_reference(seqs, n, true);
    float *first[4];
    for (int s = 0; s < n; s++) {
        size_t bytes = (size_t)newq[s] * DIM * sizeof(float);
        first[s] = malloc(bytes);
        memcpy(first[s], seqs[s].out, bytes);
    }
    int threads = eng_pool_threads();
    eng_pool_set_threads(1);
    eng_attention(seqs, n, HEADS, HD, true);
    eng_pool_set_threads(threads);
    for (int s = 0; s < n; s++) {
        CHECK_MSG(memcmp(first[s], seqs[s].out, (size_t)newq[s] * DIM * sizeof(float)) == 0,
                  "seq %d differs on one thread", s);
        free(first[s]), free(seqs[s].out);
        free(bufs[3 * s]), free(bufs[3 * s + 1]), free(bufs[3 * s + 2]);
    }
}
