/* Attention over packed sequences and KV-cache shapes, against a plain
 * double-precision reference, and the pool's split against one thread;
 * heads small enough for eng_attend_small and just too big for it. */
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

/* One head (hd wide) of one sequence, the textbook way, in doubles. */
static void reference_head(const eng_attn_seq *s, int h, int hd, bool causal, double *out)
{
    double *p = malloc((size_t)s->Lk * sizeof *p);
    for (int i = 0; i < s->Lq; i++) {
        int seen = causal ? s->Lk - s->Lq + i + 1 : s->Lk;
        double mx = -INFINITY, sum = 0;
        for (int j = 0; j < seen; j++) {
            double d = 0;
            for (int c = 0; c < hd; c++)
                d += (double)s->q[(size_t)i * s->ldq + h * hd + c] * s->k[(size_t)j * s->ldk + h * hd + c];
            p[j] = d / sqrt((double)hd);
            mx = fmax(mx, p[j]);
        }
        for (int j = 0; j < seen; j++)
            sum += p[j] = exp(p[j] - mx);
        for (int c = 0; c < hd; c++) {
            double acc = 0;
            for (int j = 0; j < seen; j++)
                acc += p[j] / sum * s->v[(size_t)j * s->ldv + h * hd + c];
            out[(size_t)i * hd + c] = acc;
        }
    }
    free(p);
}

static void check_against_reference(const eng_attn_seq *seqs, int n, int heads, int hd,
                                    bool causal)
{
    for (int s = 0; s < n; s++) {
        double *out = malloc((size_t)seqs[s].Lq * hd * sizeof *out);
        for (int h = 0; h < heads; h++) {
            reference_head(&seqs[s], h, hd, causal, out);
            double worst = 0;
            for (int i = 0; i < seqs[s].Lq; i++)
                for (int c = 0; c < hd; c++)
                    worst = fmax(worst, fabs(seqs[s].out[(size_t)i * seqs[s].ldo + h * hd + c] -
                                             out[(size_t)i * hd + c]));
            CHECK_MSG(worst < 1e-5, "seq %d (Lq %d, Lk %d, hd %d) head %d causal %d: error %g", s,
                      seqs[s].Lq, seqs[s].Lk, hd, h, causal, worst);
        }
        free(out);
    }
}

/* The row offsets of n packed sequences of the given lengths (off: n + 1);
 * returns the rows in all. */
static int pack(const int *lens, int n, int *off)
{
    off[0] = 0;
    for (int s = 0; s < n; s++)
        off[s + 1] = off[s] + lens[s];
    return off[n];
}

/* Self-attention over a packed batch of lengths 1..40: each sequence sees
 * only itself, causal or not. */
TEST(attention_packed_batch_matches_reference)
{
    static const int lens[] = {5, 1, 40, 17, 2, 33};
    int n = 6, off[7], T = pack(lens, n, off);
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
        check_against_reference(seqs, n, HEADS, HD, causal);
    }
    free(q), free(k), free(v), free(ctx);
}

/* The first token's query of each sequence against all of that sequence's
 * keys (a classifier's last encoder block): queries and outputs one row per
 * sequence, keys and values packed. */
TEST(attention_first_token_matches_reference)
{
    static const int lens[] = {5, 1, 40, 17, 2, 70};
    int n = 6, off[7], T = pack(lens, n, off);
    float *q = random_floats((size_t)n * DIM, 4), *k = random_floats((size_t)T * DIM, 5);
    float *v = random_floats((size_t)T * DIM, 6), *ctx = malloc((size_t)n * DIM * sizeof *ctx);
    memset(ctx, 0xff, (size_t)n * DIM * sizeof *ctx);
    eng_first_token_attention(q, k, v, DIM, off, n, HEADS, HD, ctx);
    eng_attn_seq seqs[6];
    for (int s = 0; s < n; s++) {
        size_t r = (size_t)off[s] * DIM;
        seqs[s] = (eng_attn_seq){q + (size_t)s * DIM, k + r, v + r, DIM, DIM, DIM, 1, lens[s],
                                 ctx + (size_t)s * DIM, DIM};
    }
    check_against_reference(seqs, n, HEADS, HD, false);
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
    check_against_reference(seqs, n, HEADS, HD, true);
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

/* Head widths of the models (16 in the tiny DistilBERT, 64 in the real ones)
 * and one not a multiple of 16; key counts at the edges of 16-key vectors and
 * of eng_attend_small's bounds (64 keys), with strided queries and fewer
 * queries than keys (a cached past). */
TEST(attention_small_heads_match_reference)
{
    static const int hds[] = {16, 24, 64};
    static const int shapes[][2] = {{1, 1}, {14, 14}, {16, 16}, {17, 17}, {50, 50},
                                    {64, 64}, {65, 65}, {1, 33}, {3, 64}, {5, 70}};
    enum { H = 2 };
    for (size_t a = 0; a < sizeof hds / sizeof *hds; a++)
        for (size_t b = 0; b < sizeof shapes / sizeof *shapes; b++) {
            int hd = hds[a], dim = H * hd, Lq = shapes[b][0], Lk = shapes[b][1];
            float *q = random_floats((size_t)Lq * 3 * dim, 40 + (unsigned)b);
            float *k = random_floats((size_t)Lk * dim, 50 + (unsigned)b);
            float *v = random_floats((size_t)Lk * dim, 60 + (unsigned)b);
            float *out = malloc((size_t)Lq * dim * sizeof *out);
            for (int causal = Lq < Lk; causal < 2; causal++) {
                eng_attn_seq s = {.q = q, .ldq = 3 * dim, .k = k, .ldk = dim, .v = v, .ldv = dim,
                                  .Lq = Lq, .Lk = Lk, .out = out, .ldo = dim};
                memset(out, 0xff, (size_t)Lq * dim * sizeof *out);
                eng_attention(&s, 1, H, hd, causal);
                check_against_reference(&s, 1, H, hd, causal);
            }
            free(q), free(k), free(v), free(out);
        }
}
