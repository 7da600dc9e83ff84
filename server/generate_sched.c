/* Continuous batching for generation: the worker runs one step at a time
 * over every running sequence; sequences join (prefill) and leave (finish,
 * cancel) between steps, each with its own KV cache, within a budget of
 * cache tokens. Nothing here allocates per token: a job's caches and buffers
 * are allocated when it is admitted, the step's buffers when the scheduler
 * is created. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/arena.h"
#include "server/generate.h"

typedef struct running {
    srv_gen_job *job;
    void *owner;
    long kv_tokens;
    int seqs; /* prompts times beams, as counted in run_seqs */
} running;

/* One row of a step: a sequence's beam and the tokens it is fed. */
typedef struct step_row {
    srv_gen_job *job;
    srv_gen_seq *seq;
    int beam;
} step_row;

struct srv_gen_sched {
    const model *m;
    srv_gen_sched_cfg cfg;
    running *run;          /* (max_batch_size) running jobs */
    int n_run, run_seqs;   /* jobs, and sequences (beams) they hold */
    long kv_used, generated;
    size_t max_token_bytes;
    /* Step buffers, sized for max_batch_size rows and max_batch_tokens tokens. */
    int32_t *ids;          /* (max_batch_tokens + max_batch_size) */
    int *off;              /* (max_batch_size + 1) */
    model_kv **kvp;        /* (max_batch_size) */
    step_row *rows;        /* (max_batch_size) */
    float *logits;         /* (max_batch_size, vocab) */
    float *beam_logits;    /* (max_batch_size, vocab) a beam search's rows */
    void *scratch;         /* gen_scratch_bytes(vocab) */
    int32_t *parent, *token; /* (max_batch_size) */
    eng_arena arena;
};

/* ---- creation ------------------------------------------------------------- */

static size_t longest_token(const model *m)
{
    size_t most = 1;
    for (int id = 0; id < m->vocab_size; id++) {
        size_t n = m->tok->ops->token_bytes(m->tok, id, NULL, 0);
        most = n > most ? n : most;
    }
    return most;
}

int srv_gen_sched_new(const model *m, const srv_gen_sched_cfg *cfg, srv_gen_sched **out,
                      eng_err *err)
{
    srv_gen_sched *s = calloc(1, sizeof *s);
    if (!s)
        return eng_err_set(err, ENG_ENOMEM, "out of memory");
    s->m = m;
    s->cfg = *cfg;
    size_t rows = (size_t)cfg->max_batch_size, V = (size_t)m->vocab_size;
    s->run = calloc(rows, sizeof *s->run);
    s->ids = malloc(((size_t)cfg->max_batch_tokens + rows) * sizeof *s->ids);
    s->off = malloc((rows + 1) * sizeof *s->off);
    s->kvp = malloc(rows * sizeof *s->kvp);
    s->rows = malloc(rows * sizeof *s->rows);
    s->logits = malloc(rows * V * sizeof *s->logits);
    s->beam_logits = malloc(rows * V * sizeof *s->beam_logits);
    s->scratch = malloc(gen_scratch_bytes(m->vocab_size));
    s->parent = malloc(rows * sizeof *s->parent);
    s->token = malloc(rows * sizeof *s->token);
    eng_arena_init(&s->arena);
    int ctx = m->max_positions;
    int rc = !s->run || !s->ids || !s->off || !s->kvp || !s->rows || !s->logits ||
             !s->beam_logits || !s->scratch || !s->parent || !s->token ||
             eng_arena_reserve(&s->arena, m->ops->scratch_size(m, cfg->max_batch_tokens +
                                                                  cfg->max_batch_size, ctx));
    if (rc) {
        srv_gen_sched_free(s);
        return eng_err_set(err, ENG_ENOMEM, "out of memory for the generation scheduler");
    }
    s->max_token_bytes = longest_token(m);
    *out = s;
    return 0;
}

void srv_gen_sched_free(srv_gen_sched *s)
{
    if (!s)
        return;
    free(s->run), free(s->ids), free(s->off), free(s->kvp), free(s->rows);
    free(s->logits), free(s->beam_logits), free(s->scratch), free(s->parent), free(s->token);
    eng_arena_free(&s->arena);
    free(s);
}

int srv_gen_sched_running(const srv_gen_sched *s) { return s->n_run; }
int srv_gen_sched_sequences(const srv_gen_sched *s) { return s->run_seqs; }
long srv_gen_sched_kv_used(const srv_gen_sched *s) { return s->kv_used; }
long srv_gen_sched_kv_capacity(const srv_gen_sched *s) { return s->cfg.max_batch_total_tokens; }
long srv_gen_sched_generated(const srv_gen_sched *s) { return s->generated; }

/* ---- a sequence's resources --------------------------------------------------- */

static int capacity_of(const srv_gen_seq *q)
{
    return q->n_prompt + q->params.max_new_tokens;
}

static void seq_release(srv_gen_seq *q)
{
    for (int b = 0; b < q->n_beams && q->kv; b++)
        free(q->kv[b].data);
    for (int b = 0; b < q->n_beams && q->ids; b++)
        free(q->ids[b]);
    free(q->kv), free(q->ids), free(q->len);
    q->kv = NULL, q->ids = NULL, q->len = NULL;
    gen_beams_free(q->beams);
    q->beams = NULL;
}

static int seq_setup(const srv_gen_sched *s, srv_gen_seq *q)
{
    int nb = gen_beam_count(&q->params), cap = capacity_of(q);
    size_t max_new = (size_t)q->params.max_new_tokens;
    q->n_beams = nb;
    q->kv = calloc((size_t)nb, sizeof *q->kv);
    q->ids = calloc((size_t)nb, sizeof *q->ids);
    q->len = calloc((size_t)nb, sizeof *q->len);
    q->tokens = malloc(max_new * sizeof *q->tokens);
    q->logprobs = malloc(max_new * sizeof *q->logprobs);
    q->text_end = malloc(max_new * sizeof *q->text_end);
    q->text_cap = max_new * s->max_token_bytes + 1;
    q->text = malloc(q->text_cap);
    if (!q->kv || !q->ids || !q->len || !q->tokens || !q->logprobs || !q->text_end || !q->text)
        return ENG_ENOMEM;
    for (int b = 0; b < nb; b++) {
        q->kv[b] = (model_kv){.data = malloc(s->m->ops->kv_floats(s->m, cap) * sizeof(float)),
                              .capacity = cap};
        q->ids[b] = malloc((size_t)cap * sizeof **q->ids);
        if (!q->kv[b].data || !q->ids[b])
            return ENG_ENOMEM;
        memcpy(q->ids[b], q->prompt, (size_t)q->n_prompt * sizeof *q->prompt);
        q->len[b] = q->n_prompt;
    }
    gen_rng_seed(&q->rng, q->params.seed);
    if (nb > 1) {
        eng_err err;
        return gen_beams_new(&q->params, s->m->vocab_size, &q->beams, &err);
    }
    return 0;
}

bool srv_gen_sched_admit(srv_gen_sched *s, srv_gen_job *job, void *owner)
{
    long need = (long)srv_gen_job_kv_tokens(job);
    int seqs = (int)srv_gen_job_seqs(job);
    /* Request parsing refuses what could never run; should such a job get
     * here, it ends with an error rather than wait forever at the head of
     * the queue or overrun the step buffers. */
    bool never_fits = need > s->cfg.max_batch_total_tokens || seqs > s->cfg.max_batch_size;
    for (size_t i = 0; i < job->n; i++)
        never_fits |= job->seqs[i].n_prompt > s->cfg.max_batch_tokens;
    if (s->n_run == s->cfg.max_batch_size ||
        (!never_fits && (s->kv_used + need > s->cfg.max_batch_total_tokens ||
                         s->run_seqs + seqs > s->cfg.max_batch_size)))
        return false;
    int rc = never_fits;
    for (size_t i = 0; i < job->n && !rc; i++)
        rc = seq_setup(s, &job->seqs[i]);
    if (rc) { /* out of memory, or never_fits: the job ends at once with an error */
        for (size_t i = 0; i < job->n; i++) {
            seq_release(&job->seqs[i]);
            job->seqs[i].finish = SRV_FINISH_ERROR;
        }
        need = 0;
        seqs = 0;
    }
    s->run[s->n_run++] = (running){.job = job, .owner = owner, .kv_tokens = need, .seqs = seqs};
    s->kv_used += need;
    s->run_seqs += seqs;
    return true;
}

/* ---- text and stop sequences ------------------------------------------------------ */

/* Cuts the text where the earliest stop sequence ending in the bytes added
 * since old_len starts (whichever of the list it is, as TGI and OpenAI cut);
 * returns true when one did. */
static bool find_stop(srv_gen_seq *q, const srv_gen_job *job, size_t old_len)
{
    size_t cut = SIZE_MAX;
    for (size_t k = 0; k < job->n_stop; k++) {
        size_t ls = strlen(job->stop[k]);
        size_t from = old_len + 1 > ls ? old_len + 1 - ls : 0;
        for (size_t p = from; ls && p < cut && p + ls <= q->text_len; p++)
            if (memcmp(q->text + p, job->stop[k], ls) == 0) {
                cut = p;
                break;
            }
    }
    if (cut == SIZE_MAX)
        return false;
    q->text_len = cut;
    return true;
}

/* The bytes that may be shown now: whole UTF-8 characters only, and nothing
 * that could be the start of a stop sequence still being written. */
static size_t showable(const srv_gen_seq *q, const srv_gen_job *job)
{
    if (q->finish != SRV_FINISH_NONE)
        return q->text_len;
    size_t end = tok_utf8_complete_prefix(q->text, q->text_len);
    for (size_t k = 0; k < job->n_stop; k++) {
        size_t ls = strlen(job->stop[k]);
        for (size_t n = ls > 1 ? ls - 1 : 0; n > 0; n--)
            if (n <= end && memcmp(q->text + end - n, job->stop[k], n) == 0) {
                end -= n;
                break;
            }
    }
    return end;
}

static void append_bytes(const model *m, srv_gen_seq *q, int32_t id)
{
    size_t room = q->text_cap - q->text_len;
    size_t n = m->tok->ops->token_bytes(m->tok, id, q->text + q->text_len, room);
    q->text_len += n < room ? n : room;
}

/* Records one generated token of a greedy or sampled sequence. */
static void push_token(const srv_gen_sched *s, const srv_gen_job *job, srv_gen_seq *q, int32_t id,
                       float logprob)
{
    size_t old_len = q->text_len;
    q->tokens[q->n_tokens] = id;
    q->logprobs[q->n_tokens] = logprob;
    if (id == q->params.eos_id)
        q->finish = SRV_FINISH_EOS;
    else
        append_bytes(s->m, q, id);
    if (q->finish == SRV_FINISH_NONE && find_stop(q, job, old_len))
        q->finish = SRV_FINISH_STOP;
    if (q->finish == SRV_FINISH_NONE && q->n_tokens + 1 >= q->params.max_new_tokens)
        q->finish = SRV_FINISH_LENGTH;
    q->text_end[q->n_tokens] = showable(q, job);
    q->n_tokens++;
}

/* ---- one step ------------------------------------------------------------------ */

/* Adds the rows a sequence feeds this step; false when its prefill does not
 * fit in the step's token budget (it waits for the next step). */
static bool add_rows(srv_gen_sched *s, srv_gen_job *job, srv_gen_seq *q, int *n_rows, int *T)
{
    if (!q->prefilled) {
        if (*T > 0 && *T + q->n_prompt > s->cfg.max_batch_tokens)
            return false;
        memcpy(s->ids + *T, q->prompt, (size_t)q->n_prompt * sizeof *q->prompt);
        *T += q->n_prompt;
        s->rows[*n_rows] = (step_row){job, q, 0};
        s->kvp[*n_rows] = &q->kv[0];
        s->off[++*n_rows] = *T;
        return true;
    }
    for (int b = 0; b < q->n_beams; b++) {
        s->ids[(*T)++] = q->ids[b][q->len[b] - 1];
        s->rows[*n_rows] = (step_row){job, q, b};
        s->kvp[*n_rows] = &q->kv[b];
        s->off[++*n_rows] = *T;
    }
    return true;
}

static void advance_single(srv_gen_sched *s, const srv_gen_job *job, srv_gen_seq *q, float *logits)
{
    int V = s->m->vocab_size;
    gen_process_logits(&q->params, q->ids[0], (size_t)q->len[0], logits, V, s->scratch);
    float logprob;
    int32_t id = gen_next_token(&q->params, logits, V, &q->rng, &logprob);
    q->ids[0][q->len[0]++] = id;
    push_token(s, job, q, id, logprob);
    s->generated++;
}

/* Makes new beam b a copy of old beam parent[b] plus token[b], moving the
 * old buffers where a parent has one child and copying where it has more. */
static void reorder_beams(const srv_gen_sched *s, srv_gen_seq *q)
{
    int nb = q->n_beams;
    model_kv kv[nb];
    int32_t *ids[nb];
    int len[nb];
    bool taken[nb], moved[nb];
    for (int b = 0; b < nb; b++)
        taken[b] = false;
    for (int b = 0; b < nb; b++) {
        int p = s->parent[b];
        moved[b] = !taken[p];
        if (moved[b]) {
            taken[p] = true;
            kv[b] = q->kv[p], ids[b] = q->ids[p], len[b] = q->len[p];
        }
    }
    int spare = 0;
    for (int b = 0; b < nb; b++) {
        if (moved[b])
            continue;
        while (taken[spare])
            spare++;
        taken[spare] = true;
        int p = s->parent[b];
        kv[b] = q->kv[spare];
        ids[b] = q->ids[spare];
        memcpy(kv[b].data, q->kv[p].data, s->m->ops->kv_floats(s->m, kv[b].capacity) * sizeof(float));
        kv[b].len = q->kv[p].len;
        memcpy(ids[b], q->ids[p], (size_t)q->len[p] * sizeof *ids[b]);
        len[b] = q->len[p];
    }
    for (int b = 0; b < nb; b++) {
        q->kv[b] = kv[b], q->ids[b] = ids[b], q->len[b] = len[b];
        q->ids[b][q->len[b]++] = s->token[b];
    }
}

static void finish_beams(srv_gen_sched *s, const srv_gen_job *job, srv_gen_seq *q)
{
    gen_hypothesis best;
    if (gen_beams_result(q->beams, 0, &best)) {
        q->finish = SRV_FINISH_ERROR;
        return;
    }
    q->finish = SRV_FINISH_NONE;
    for (int i = 0; i < best.n_ids; i++) {
        q->tokens[i] = best.ids[i];
        q->logprobs[i] = NAN; /* beam search scores sequences, not tokens */
        if (best.ids[i] == q->params.eos_id)
            q->finish = SRV_FINISH_EOS;
        else
            append_bytes(s->m, q, best.ids[i]);
        q->n_tokens = i + 1;
    }
    if (q->finish == SRV_FINISH_NONE)
        q->finish = find_stop(q, job, 0) ? SRV_FINISH_STOP : SRV_FINISH_LENGTH;
    for (int i = 0; i < q->n_tokens; i++)
        q->text_end[i] = q->text_len;
    s->generated += q->n_tokens;
}

static void advance_beams(srv_gen_sched *s, const srv_gen_job *job, srv_gen_seq *q, int first_row)
{
    size_t V = (size_t)s->m->vocab_size;
    int nb = q->n_beams;
    for (int b = 0; b < nb; b++) /* after prefill only beam 0 ran: the others repeat it */
        memcpy(s->beam_logits + b * V, s->logits + (size_t)(first_row + (q->prefilled ? b : 0)) * V,
               V * sizeof *s->logits);
    /* After the prefill every parent is beam 0 (the others start at -1e9),
     * so reorder_beams gives every beam a copy of the prompt's cache. */
    int done = gen_beams_step(q->beams, s->beam_logits, (const int32_t *const *)q->ids, q->len,
                              s->parent, s->token);
    reorder_beams(s, q);
    if (done)
        finish_beams(s, job, q);
}

/* Posts a job to the loop thread unless a post is already on its way. Call
 * with job->lock held; returns whether the caller must notify. */
static bool post_locked(srv_gen_job *job)
{
    if (job->posted)
        return false;
    job->posted = true;
    return true;
}

static void release_job(srv_gen_sched *s, int i)
{
    running *r = &s->run[i];
    for (size_t k = 0; k < r->job->n; k++) {
        srv_gen_seq *q = &r->job->seqs[k];
        seq_release(q);
    }
    s->kv_used -= r->kv_tokens;
    s->run_seqs -= r->seqs;
    /* Closing the gap keeps run[] in the order of admission, which is the
     * order prefills are served in (srv_gen_sched_step). */
    memmove(&s->run[i], &s->run[i + 1], (size_t)(--s->n_run - i) * sizeof *s->run);
}

/* Ends the jobs whose clients left, freeing their caches at once. */
static void drop_cancelled(srv_gen_sched *s, bool (*is_cancelled)(void *), srv_gen_notify_fn notify,
                           void *ud)
{
    for (int i = s->n_run - 1; i >= 0; i--) {
        if (!is_cancelled(s->run[i].owner))
            continue;
        srv_gen_job *job = s->run[i].job;
        void *owner = s->run[i].owner;
        release_job(s, i);
        pthread_mutex_lock(&job->lock);
        job->finished = true;
        bool post = post_locked(job);
        pthread_mutex_unlock(&job->lock);
        if (post)
            notify(ud, owner);
    }
}

static void advance_rows(srv_gen_sched *s, int n_rows, int rc)
{
    size_t V = (size_t)s->m->vocab_size;
    for (int r = 0; r < n_rows; r++) {
        srv_gen_seq *q = s->rows[r].seq;
        if (s->rows[r].beam != 0)
            continue; /* a beam search is advanced once, at its beam 0 row */
        srv_gen_job *job = s->rows[r].job;
        pthread_mutex_lock(&job->lock);
        if (rc)
            q->finish = SRV_FINISH_ERROR;
        else if (q->n_beams == 1)
            advance_single(s, job, q, s->logits + (size_t)r * V);
        else
            advance_beams(s, job, q, r);
        q->prefilled = true;
        pthread_mutex_unlock(&job->lock);
    }
}

/* Finished jobs leave; streaming jobs are posted after every step. Once a
 * job is marked finished the loop thread may free it, so the worker frees
 * its own part first and touches nothing after. */
static void notify_jobs(srv_gen_sched *s, srv_gen_notify_fn notify, void *ud)
{
    for (int i = s->n_run - 1; i >= 0; i--) {
        srv_gen_job *job = s->run[i].job;
        void *owner = s->run[i].owner;
        bool done = true;
        pthread_mutex_lock(&job->lock);
        for (size_t k = 0; k < job->n; k++)
            done &= job->seqs[k].finish != SRV_FINISH_NONE;
        pthread_mutex_unlock(&job->lock);
        if (done)
            release_job(s, i);
        pthread_mutex_lock(&job->lock);
        job->finished = done;
        bool post = (done || job->stream) && post_locked(job);
        pthread_mutex_unlock(&job->lock);
        if (post)
            notify(ud, owner);
    }
}

/* Adds the rows of the unfinished sequences that are (or are not yet)
 * prefilled, in the order their jobs were admitted. */
static void add_pending_rows(srv_gen_sched *s, bool prefilled, int *n_rows, int *T)
{
    for (int i = 0; i < s->n_run; i++)
        for (size_t k = 0; k < s->run[i].job->n; k++) {
            srv_gen_seq *q = &s->run[i].job->seqs[k];
            if (q->finish == SRV_FINISH_NONE && q->prefilled == prefilled)
                add_rows(s, s->run[i].job, q, n_rows, T);
        }
}

int srv_gen_sched_step(srv_gen_sched *s, bool (*is_cancelled)(void *owner),
                       srv_gen_notify_fn notify, void *ud, eng_err *err)
{
    drop_cancelled(s, is_cancelled, notify, ud);
    int n_rows = 0, T = 0;
    s->off[0] = 0;
    /* Prefills first, oldest first: the oldest waiting prompt always fits
     * (T is 0 for it), so none waits behind decode rows that keep coming;
     * then every decode row (one token per beam, within the buffers). */
    add_pending_rows(s, false, &n_rows, &T);
    add_pending_rows(s, true, &n_rows, &T);
    int rc = 0;
    if (n_rows) {
        model_batch b = {.ids = s->ids, .seq_off = s->off, .n_seq = n_rows};
        rc = s->m->ops->generate_step(s->m, &b, s->kvp, &s->arena, s->logits, err);
        advance_rows(s, n_rows, rc);
    }
    notify_jobs(s, notify, ud);
    return rc;
}
