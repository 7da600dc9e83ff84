/* The image-text worker's batch: decode and preprocess every image of the
 * batch's jobs (here, off the loop thread), run the vision tower over all of
 * them, and the text tower over the texts the cache does not hold. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "models/clip.h"
#include "server/text_cache.h"
#include "server/worker.h"

#define TEXT_CACHE_ENTRIES 4096

struct srv_clip_state {
    float *pixels;          /* (cap_images, 3, S, S) */
    float *emb;             /* (cap_rows, proj_dim) */
    int32_t *ids;           /* (cap_ids) texts to embed, packed */
    int *off;               /* (cap_rows + 1) */
    float **dest;           /* (cap_rows) where each embedded text's row goes */
    uint8_t *crop;          /* (S, S, 3) */
    size_t cap_images, cap_rows, cap_ids, cap_off, cap_dest;
    srv_text_cache *cache;
};

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void srv_worker_clip_free(srv_worker *w)
{
    struct srv_clip_state *st = w->clip;
    if (!st)
        return;
    free(st->pixels), free(st->emb), free(st->ids), free(st->off), free(st->dest), free(st->crop);
    srv_text_cache_free(st->cache);
    free(st);
    w->clip = NULL;
}


static struct srv_clip_state *state(srv_worker *w)
{
    if (!w->clip) {
        const model *m = w->model;
        struct srv_clip_state *st = calloc(1, sizeof *st);
        if (!st)
            return NULL;
        st->crop = malloc((size_t)m->image_size * m->image_size * 3);
        st->cache = srv_text_cache_new(TEXT_CACHE_ENTRIES, m->max_positions, m->proj_dim);
        if (!st->crop || !st->cache) {
            w->clip = st;
            srv_worker_clip_free(w);
            return NULL;
        }
        w->clip = st;
    }
    return w->clip;
}

static void fail(srv_job *j, int status, const char *msg)
{
    if (!j->clip.status) {
        j->clip.status = status;
        snprintf(j->clip.message, sizeof j->clip.message, "%.290s", msg);
    }
}

/* Runs the vision tower over every image of the live jobs. */
static void embed_images(srv_worker *w, struct srv_clip_state *st, srv_job *jobs)
{
    const model *m = w->model;
    size_t S = (size_t)m->image_size, px = 3 * S * S, n = 0, P = (size_t)m->proj_dim;
    for (srv_job *j = jobs; j; j = j->next)
        if (j->in_batch)
            n += j->clip.n_images;
    if (!n)
        return;
    if (srv_grow((void **)&st->pixels, &st->cap_images, n, px * sizeof(float)) ||
        srv_grow((void **)&st->emb, &st->cap_rows, n, P * sizeof(float))) {
        for (srv_job *j = jobs; j; j = j->next)
            fail(j, 503, "out of memory for the batch's images");
        return;
    }
    size_t k = 0;
    for (srv_job *j = jobs; j; j = j->next)
        for (size_t i = 0; j->in_batch && i < j->clip.n_images; i++, k++) {
            /* Decoding is the costly part of a large image: a client gone
             * meanwhile has the rest of its images skipped (their rows run
             * zeroed, and are dropped with the job). */
            if (atomic_load(&j->cancelled))
                memset(st->pixels + k * px, 0, px * sizeof(float));
            else
                srv_clip_load_image(m, &j->clip, i, &w->cfg.limits, st->crop, st->pixels + k * px);
        }
    eng_err err = {0};
    double t0 = mono_now();
    int rc = eng_arena_reserve(&w->work.arena, m->ops->image_scratch_size(m, (int)n));
    if (!rc)
        rc = m->ops->embed_image(m, st->pixels, (int)n, &w->work.arena, st->emb, &err);
    srv_metrics_batch(w->hooks.metrics, w->name, (int)n, (int)n * 50, mono_now() - t0);
    clip_normalize(st->emb, (int)n, (int)P);
    k = 0;
    for (srv_job *j = jobs; j; j = j->next)
        for (size_t i = 0; j->in_batch && i < j->clip.n_images; i++, k++) {
            if (rc)
                fail(j, 500, err.msg);
            memcpy(j->clip.image_emb + i * P, st->emb + k * P, P * sizeof(float));
        }
}

/* Packs the texts the cache lacks; returns how many. */
static size_t gather_misses(srv_worker *w, struct srv_clip_state *st, srv_job *jobs, size_t *T)
{
    size_t n = 0, P = (size_t)w->model->proj_dim;
    *T = 0;
    st->off[0] = 0;
    for (srv_job *j = jobs; j; j = j->next)
        for (size_t i = 0; j->in_batch && i < j->clip.n_texts; i++) {
            const tok_encoding *e = &j->clip.texts[i];
            const float *hit = srv_text_cache_get(st->cache, e->ids, (int)e->n);
            if (hit) {
                memcpy(j->clip.text_emb + i * P, hit, P * sizeof(float));
                continue;
            }
            memcpy(st->ids + *T, e->ids, e->n * sizeof *st->ids);
            *T += e->n;
            st->dest[n] = j->clip.text_emb + i * P;
            st->off[++n] = (int)*T;
        }
    return n;
}

static void embed_texts(srv_worker *w, struct srv_clip_state *st, srv_job *jobs)
{
    const model *m = w->model;
    size_t rows = 0, tokens = 0, P = (size_t)m->proj_dim;
    for (srv_job *j = jobs; j; j = j->next)
        for (size_t i = 0; j->in_batch && i < j->clip.n_texts; i++, rows++)
            tokens += j->clip.texts[i].n;
    if (!rows)
        return;
    if (srv_grow((void **)&st->off, &st->cap_off, rows + 1, sizeof *st->off) ||
        srv_grow((void **)&st->dest, &st->cap_dest, rows, sizeof *st->dest) ||
        srv_grow((void **)&st->emb, &st->cap_rows, rows, P * sizeof(float)) ||
        srv_grow((void **)&st->ids, &st->cap_ids, tokens, sizeof *st->ids)) {
        for (srv_job *j = jobs; j; j = j->next)
            fail(j, 503, "out of memory for the batch's texts");
        return;
    }
    size_t T, n = gather_misses(w, st, jobs, &T);
    if (!n)
        return;
    eng_err err = {0};
    double t0 = mono_now();
    int rc = eng_arena_reserve(&w->work.arena, m->ops->scratch_size(m, (int)T, m->max_positions));
    model_batch b = {.ids = st->ids, .seq_off = st->off, .n_seq = (int)n};
    if (!rc)
        rc = m->ops->embed_text(m, &b, &w->work.arena, st->emb, &err);
    srv_metrics_batch(w->hooks.metrics, w->name, (int)n, (int)T, mono_now() - t0);
    clip_normalize(st->emb, (int)n, (int)P);
    for (size_t s = 0; s < n; s++) {
        memcpy(st->dest[s], st->emb + s * P, P * sizeof(float));
        if (!rc)
            srv_text_cache_put(st->cache, st->ids + st->off[s], st->off[s + 1] - st->off[s],
                               st->emb + s * P);
    }
    if (rc)
        for (srv_job *j = jobs; j; j = j->next)
            fail(j, 500, err.msg);
}

void srv_worker_run_clip(srv_worker *w, srv_job *jobs)
{
    struct srv_clip_state *st = state(w);
    if (!st) {
        for (srv_job *j = jobs; j; j = j->next)
            fail(j, 503, "out of memory");
        return;
    }
    /* A client may leave while the batch computes: decide once who is in,
     * so images and texts are packed and handed back by the same list. */
    for (srv_job *j = jobs; j; j = j->next) {
        j->in_batch = !atomic_load(&j->cancelled);
        if (j->in_batch)
            srv_metrics_queue_wait(w->hooks.metrics, w->name, mono_now() - j->t_enqueue);
    }
    embed_images(w, st, jobs);
    embed_texts(w, st, jobs);
}
