// gfn_actor.c: see gfn_actor.h; also the GFlowNet kind's ops table (actor_kind.h).
#include "gfn_actor.h"

#include <stdlib.h>
#include <string.h>

#include "actor_kind.h"
#include "gfn_ckpt.h"
#include "gfn_traj.h"
#include "item_batch.h"
#include "rng.h"

struct gfn_sampled {
    uint64_t transitions;     // transitions over all of them
    gfn_batch_t *b;           // (n) the sampled trajectories (logpf/logpb point here)
    float *states;            // (n, max_len + 1, D) wire states
    uint32_t *actions;        // (n, max_len) wire actions
    Rlx__GflowTrajectory *gx; // (n) the trajectories' bodies
    item_batch_t ib;          // headers, batch and envelope
};

int gfn_actor_install(gfn_policy_t **policy, const ckpt_t *ck, char *err, size_t errlen) {
    if (*policy && gfn_ckpt_load(*policy, ck, err, errlen) == 0)
        return 0;
    gfn_policy_t *p = gfn_ckpt_policy(ck, GFN_ACTOR_CHUNK, err, errlen);
    if (!p)
        return -1;
    gfn_policy_destroy(policy);
    *policy = p;
    return 0;
}

gfn_sampled_t *gfn_actor_sample(gfn_policy_t *p, const Rlx__WorkItem *it, uint32_t actor_id,
                                uint64_t first_seq, uint64_t version, uint64_t seed,
                                void (*tick)(void *), void *tick_arg, const char **why) {
    const Rlx__GflowEnv *e = it->gflow;
    int P = (int)it->n_prompts, k = it->samples_per_prompt ? (int)it->samples_per_prompt : 1;
    if (!e || !e->env || strcmp(e->env, "hypergrid") != 0) {
        *why = "unknown gflownet environment (this actor samples \"hypergrid\")";
        return NULL;
    }
    if ((int)e->ndim != p->env.ndim || (int)e->height != p->env.height) {
        *why = "the item's ndim/height differ from the policy's";
        return NULL;
    }
    if (P < 1 || (int64_t)P * k > (1 << 16)) {
        *why = P < 1 ? "no prompts" : "too many trajectories";
        return NULL;
    }
    if (!(e->epsilon >= 0 && e->epsilon <= 1)) {
        *why = "epsilon outside [0, 1]";
        return NULL;
    }
    int n = P * k, D = p->env.ndim, L = p->max_len;
    gfn_sampled_t *g = calloc(1, sizeof *g);
    if (!g) {
        *why = "out of memory";
        return NULL;
    }
    g->b = gfn_batch_new(&p->env, n);
    g->states = malloc((size_t)n * (L + 1) * D * sizeof *g->states);
    g->actions = malloc((size_t)n * L * sizeof *g->actions);
    g->gx = calloc((size_t)n, sizeof *g->gx);
    int hdr = item_batch_init(&g->ib, it, k, actor_id, first_seq, version);
    if (!g->states || !g->actions || !g->gx || hdr != 0) {
        gfn_sampled_destroy(&g);
        *why = "out of memory";
        return NULL;
    }
    // Sample in chunks of the policy's capacity into a view of the item's batch.
    gfn_batch_t *chunk = gfn_batch_new(&p->env, p->max_traj);
    for (int lo = 0, c = 0; lo < n; lo += p->max_traj, c++) {
        int m = n - lo < p->max_traj ? n - lo : p->max_traj;
        rng_t r;
        rng_seed2(&r, seed, (uint64_t)c);
        gfn_sample(p, chunk, m, e->epsilon, &r);
        size_t at = (size_t)lo * L, cnt = (size_t)m * L;
        memcpy(g->b->len + lo, chunk->len, (size_t)m * sizeof *chunk->len);
        memcpy(g->b->states + at, chunk->states, cnt * sizeof *chunk->states);
        memcpy(g->b->actions + at, chunk->actions, cnt * sizeof *chunk->actions);
        memcpy(g->b->logpf + at, chunk->logpf, cnt * sizeof *chunk->logpf);
        memcpy(g->b->logpb + at, chunk->logpb, cnt * sizeof *chunk->logpb);
        memcpy(g->b->logr + lo, chunk->logr, (size_t)m * sizeof *chunk->logr);
        if (tick)
            tick(tick_arg);
    }
    gfn_batch_destroy(&chunk);
    g->b->n = n;
    for (int i = 0; i < n; i++) {
        gfn_traj_from_batch(&p->env, g->b, i, &g->gx[i], g->states + (size_t)i * (L + 1) * D,
                            g->actions + (size_t)i * L);
        g->transitions += (uint64_t)g->b->len[i];
        g->ib.tr[i].kind_case = RLX__TRAJECTORY__KIND_GFLOW;
        g->ib.tr[i].gflow = &g->gx[i];
    }
    return g;
}

Rlx__Envelope *gfn_sampled_envelope(gfn_sampled_t *b) {
    return &b->ib.env;
}
int gfn_sampled_count(const gfn_sampled_t *b) {
    return b->ib.n;
}
uint64_t gfn_sampled_transitions(const gfn_sampled_t *b) {
    return b->transitions;
}

void gfn_sampled_destroy(gfn_sampled_t **self_p) {
    if (!self_p || !*self_p)
        return;
    gfn_sampled_t *g = *self_p;
    gfn_batch_destroy(&g->b);
    free(g->states);
    free(g->actions);
    free(g->gx);
    item_batch_free(&g->ib);
    free(g);
    *self_p = NULL;
}

// ---- the GFlowNet kind's ops (actor_kind.h) ------------------------------------------------

static int kind_install(void **model_p, const ckpt_t *ck, int batch, char *err, size_t errlen) {
    (void)batch; // the policy samples GFN_ACTOR_CHUNK trajectories per call
    gfn_policy_t *p = *model_p;
    int rc = gfn_actor_install(&p, ck, err, errlen);
    *model_p = p;
    return rc;
}

static int kind_step(void *model, void *job, uint64_t version, uint64_t *units, const char **why) {
    actor_whole_job_t *j = job;
    gfn_sampled_t *b = gfn_actor_sample(model, j->item, j->ctx.actor_id, j->ctx.first_seq, version,
                                        j->ctx.seed, j->ctx.tick, j->ctx.tick_arg, why);
    if (!b)
        return ACTOR_STEP_REFUSED;
    j->batch = b;
    *units = gfn_sampled_transitions(b);
    return 1;
}

static Rlx__Envelope *kind_batch(void *job, int *count, const char **why) {
    (void)why;
    gfn_sampled_t *b = ((actor_whole_job_t *)job)->batch;
    *count = gfn_sampled_count(b);
    return gfn_sampled_envelope(b);
}

static void kind_job_destroy(void **job_p) {
    actor_whole_job_t *j = *job_p;
    if (!j)
        return;
    gfn_sampled_t *b = j->batch;
    gfn_sampled_destroy(&b);
    free(j);
    *job_p = NULL;
}

static void kind_destroy(void **model_p) {
    gfn_policy_t *p = *model_p;
    gfn_policy_destroy(&p);
    *model_p = NULL;
}

const actor_kind_t gfn_actor_kind = {
    .kind = KIND_GFLOW,
    .name = "gflow",
    .holds = actor_holds_model,
    .install = kind_install,
    .job_new = actor_whole_job_new,
    .step = kind_step,
    .batch = kind_batch,
    .job_destroy = kind_job_destroy,
    .destroy = kind_destroy,
};
