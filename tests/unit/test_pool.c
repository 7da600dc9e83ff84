/* The pool under back-to-back runs: a run's tasks must all have finished,
 * and no task of a later run may start under an earlier run's index, when
 * eng_pool_run returns (its ctx lives on the caller's stack). */
#include <stdatomic.h>

#include "engine/pool.h"
#include "tests/unit/test.h"

typedef struct run_ctx {
    int id;
    int n;
    _Atomic int seen[64];
    _Atomic int wrong;
} run_ctx;

static void task(void *ctx, int t, int thread)
{
    (void)thread;
    run_ctx *c = ctx;
    if (t < 0 || t >= c->n)
        atomic_fetch_add(&c->wrong, 1);
    else
        atomic_fetch_add(&c->seen[t], 1);
}

TEST(pool_back_to_back_runs_keep_their_tasks)
{
    eng_pool *p = NULL;
    eng_err err = {0};
    CHECK(eng_pool_create(&p, 2, &err) == 0);
    if (!p)
        return;
    int bad = 0;
    for (int r = 0; r < 300000; r++) {
        run_ctx c = {.id = r, .n = 1 + (r % 5 == 0 ? 63 : r % 3)};
        eng_pool_run(p, c.n, task, &c);
        for (int t = 0; t < c.n; t++)
            bad += atomic_load(&c.seen[t]) != 1;
        bad += atomic_load(&c.wrong);
    }
    CHECK_EQ_INT(bad, 0);
    eng_pool_destroy(p);
}
