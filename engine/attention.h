/* Scaled dot-product attention.
 *
 * Batches are packed, not padded: the rows of every sequence follow one
 * another, and seq_off[s] .. seq_off[s+1] are sequence s's rows. Attention
 * runs per sequence, so no token ever sees another sequence's tokens: this is
 * the padding mask, without computing the padding.
 *
 * The (sequence, head) pairs are independent tasks on the engine's pool; each
 * task's scores live in its thread's scratch (engine/scratch.h), so callers
 * pass none. Heads of at most 64 keys and 64 dimensions skip OpenBLAS, whose
 * call costs more than their arithmetic: eng_attend_small (engine/ops.h). */
#ifndef ENG_ATTENTION_H
#define ENG_ATTENTION_H

#include <stdbool.h>
#include <stddef.h>

/* One head: out (Lq, hd) = softmax(scale · q kᵀ) v.
 * q: (Lq, hd) with row stride ldq; k, v: (Lk, hd) with strides ldk, ldv;
 * out: row stride ldo. When causal, query i stands at position Lk - Lq + i
 * and sees keys 0 .. Lk - Lq + i (the KV-cache case when Lq < Lk).
 * scores: scratch of Lq * Lk floats. */
void eng_attend_head(const float *q, int ldq, const float *k, int ldk, const float *v, int ldv,
                     int Lq, int Lk, int hd, float scale, bool causal, float *out, int ldo,
                     float *scores);

/* One sequence's queries against its keys, for every head: head h is
 * columns h*hd .. h*hd+hd-1 of q, k, v and out. */
typedef struct eng_attn_seq {
    const float *q, *k, *v;
    int ldq, ldk, ldv;
    int Lq, Lk;
    float *out;
    int ldo;
} eng_attn_seq;

/* Every head of n_seq sequences, split over the pool. A task whose scores
 * cannot be allocated writes NaN into its head's output (visible, never a
 * silently wrong number). */
void eng_attention(const eng_attn_seq *seqs, int n_seq, int n_heads, int hd, bool causal);

/* Multi-head self-attention over a packed batch.
 * q, k, v: (T, n_heads * hd) with row stride ld, head h in columns h*hd ..;
 * ctx: (T, n_heads * hd) contiguous; seq_off: (n_seq + 1) row offsets. */
void eng_self_attention(const float *q, const float *k, const float *v, int ld, const int *seq_off,
                        int n_seq, int n_heads, int hd, bool causal, float *ctx);

/* Bidirectional attention for the first token of each sequence only: what an
 * encoder's last block needs when its head reads nothing but that token (a
 * classifier's [CLS]). q, ctx: (n_seq, n_heads * hd), row s for sequence s
 * (q row stride ld); k, v: the packed batch, as for eng_self_attention. */
void eng_first_token_attention(const float *q, const float *k, const float *v, int ld,
                               const int *seq_off, int n_seq, int n_heads, int hd, float *ctx);

#endif
