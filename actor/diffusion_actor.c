// diffusion_actor.c: see diffusion_actor.h; also the diffusion kind's ops table (actor_kind.h).
#include "diffusion_actor.h"

#include <stdlib.h>
#include <string.h>

#include "actor_kind.h"
#include "diff_traj.h"
#include "item_batch.h"

struct diff_batch {
    int S;                        // steps per chain
    uint32_t shape[4];            // sample shape
    int nshape;                   // its entries
    float *states;                // (n, S+1, D) chains, per trajectory
    float *logpf;                 // (n, S)
    float *logpb;                 // (n, S)
    uint32_t *ts;                 // (S+1) timesteps (shared by all)
    Rlx__DiffusionTrajectory *dx; // (n) the trajectories' bodies
    item_batch_t ib;              // headers, batch and envelope
};

int diff_actor_install(diff_t **policy, const ckpt_t *ck, char *err, size_t errlen) {
    diff_t *d = diff_from_ckpt(ck, "weights", DIFF_ACTOR_CHUNK, err, errlen);
    if (!d)
        return -1;
    diff_destroy(policy);
    *policy = d;
    return 0;
}

diff_batch_t *diff_actor_sample(diff_t *d, const Rlx__WorkItem *it, uint32_t actor_id,
                                uint64_t first_seq, uint64_t version, uint64_t seed,
                                void (*tick)(void *), void *tick_arg, const char **why) {
    const Rlx__DiffusionSpec *sp = it->diffusion;
    int P = (int)it->n_prompts, k = it->samples_per_prompt ? (int)it->samples_per_prompt : 1;
    int D = d->cfg.x_dim, S = sp ? (int)sp->steps : 0;
    size_t dim = 1;
    for (size_t i = 0; sp && i < sp->n_shape; i++)
        dim *= sp->shape[i];
    if (!sp || sp->n_shape < 1 || sp->n_shape > 4 || dim != (size_t)D) {
        *why = "the item's sample shape does not fit the policy's data dimension";
        return NULL;
    }
    if (S < 1 || S > d->cfg.T - 1) {
        *why = "DiffusionSpec.steps outside 1..T-1 of the policy";
        return NULL;
    }
    if (!(sp->eta > 0) || !(sp->eta < 100)) {
        *why = "eta must be > 0";
        return NULL;
    }
    if (P < 1 || (int64_t)P * k > (1 << 16) || (int64_t)P * k * (S + 1) * D > (1 << 26)) {
        *why = P < 1 ? "no prompts" : "too many chains";
        return NULL;
    }
    if (sp->n_class_labels != 0 && sp->n_class_labels != (size_t)P) {
        *why = "class_labels count differs from the prompts";
        return NULL;
    }
    for (size_t i = 0; i < sp->n_class_labels; i++) {
        int l = sp->class_labels[i];
        if (l != DIFF_NULL_LABEL && (l < 0 || l >= d->cfg.n_classes)) {
            *why = "class label outside the policy's classes";
            return NULL;
        }
    }
    diff_sampler_t smp = diff_sampler_defaults();
    smp.eta = sp->eta;
    smp.clip_x0 = sp->clip_x0;
    smp.logp_sum = sp->logp_sum;
    smp.guidance = sp->guidance;
    int guided = smp.guidance != 0 && d->cfg.n_classes > 0;
    int chunk = guided ? d->max_batch / 2 : d->max_batch;
    int n = P * k;
    diff_batch_t *g = calloc(1, sizeof *g);
    if (!g) {
        *why = "out of memory";
        return NULL;
    }
    g->S = S;
    g->nshape = (int)sp->n_shape;
    for (int i = 0; i < g->nshape; i++)
        g->shape[i] = sp->shape[i];
    g->states = malloc((size_t)n * (S + 1) * D * sizeof *g->states);
    g->logpf = malloc((size_t)n * S * sizeof *g->logpf);
    g->logpb = malloc((size_t)n * S * sizeof *g->logpb);
    g->ts = malloc((size_t)(S + 1) * sizeof *g->ts);
    g->dx = calloc((size_t)n, sizeof *g->dx);
    int hdr = item_batch_init(&g->ib, it, k, actor_id, first_seq, version);
    float *xs = malloc((size_t)(S + 1) * chunk * D * sizeof *xs);
    float *lf = malloc((size_t)S * chunk * sizeof *lf);
    float *lb = malloc((size_t)S * chunk * sizeof *lb);
    int *lab = malloc((size_t)chunk * sizeof *lab);
    int *ts = malloc((size_t)(S + 1) * sizeof *ts);
    if (!g->states || !g->logpf || !g->logpb || !g->ts || !g->dx || hdr != 0 || !xs || !lf || !lb ||
        !lab || !ts) {
        free(xs), free(lf), free(lb), free(lab), free(ts);
        diff_batch_destroy(&g);
        *why = "out of memory";
        return NULL;
    }
    // Chain i uses stream (seed, first_seq + i) whatever the chunking; rows are re-laid out
    // from diff_sample's (step, row) order to one contiguous chain per trajectory.
    for (int lo = 0; lo < n; lo += chunk) {
        int m = n - lo < chunk ? n - lo : chunk;
        for (int i = 0; i < m; i++)
            lab[i] = sp->n_class_labels ? sp->class_labels[(lo + i) / k] : DIFF_NULL_LABEL;
        diff_sample(d, xs, lf, lb, ts, lab, m, S, &smp, seed, first_seq + (uint64_t)lo);
        for (int i = 0; i < m; i++) {
            float *dst = g->states + (size_t)(lo + i) * (S + 1) * D;
            for (int s = 0; s <= S; s++)
                memcpy(dst + (size_t)s * D, xs + ((size_t)s * m + i) * D, (size_t)D * sizeof *xs);
            for (int s = 0; s < S; s++) {
                g->logpf[(size_t)(lo + i) * S + s] = lf[(size_t)s * m + i];
                g->logpb[(size_t)(lo + i) * S + s] = lb[(size_t)s * m + i];
            }
        }
        if (tick)
            tick(tick_arg);
    }
    for (int s = 0; s <= S; s++)
        g->ts[s] = (uint32_t)ts[s];
    free(xs), free(lf), free(lb), free(ts);
    for (int i = 0; i < n; i++) {
        int pi = i / k;
        int label = sp->n_class_labels ? sp->class_labels[pi] : DIFF_NULL_LABEL;
        diff_traj_fill(&g->dx[i], g->shape, g->nshape, S, g->states + (size_t)i * (S + 1) * D,
                       g->logpf + (size_t)i * S, g->logpb + (size_t)i * S, g->ts, label);
        g->ib.tr[i].kind_case = RLX__TRAJECTORY__KIND_DIFFUSION;
        g->ib.tr[i].diffusion = &g->dx[i];
    }
    free(lab);
    return g;
}

Rlx__Envelope *diff_batch_envelope(diff_batch_t *b) {
    return &b->ib.env;
}
int diff_batch_count(const diff_batch_t *b) {
    return b->ib.n;
}
uint64_t diff_batch_steps(const diff_batch_t *b) {
    return (uint64_t)b->ib.n * (uint64_t)b->S;
}

void diff_batch_destroy(diff_batch_t **self_p) {
    if (!self_p || !*self_p)
        return;
    diff_batch_t *g = *self_p;
    free(g->states);
    free(g->logpf);
    free(g->logpb);
    free(g->ts);
    free(g->dx);
    item_batch_free(&g->ib);
    free(g);
    *self_p = NULL;
}

// ---- the diffusion kind's ops (actor_kind.h) -----------------------------------------------

static int kind_install(void **model_p, const ckpt_t *ck, int batch, char *err, size_t errlen) {
    (void)batch; // the denoiser samples DIFF_ACTOR_CHUNK rows per call
    diff_t *d = *model_p;
    int rc = diff_actor_install(&d, ck, err, errlen);
    *model_p = d;
    return rc;
}

static int kind_step(void *model, void *job, uint64_t version, uint64_t *units, const char **why) {
    actor_whole_job_t *j = job;
    diff_batch_t *b = diff_actor_sample(model, j->item, j->ctx.actor_id, j->ctx.first_seq, version,
                                        j->ctx.seed, j->ctx.tick, j->ctx.tick_arg, why);
    if (!b)
        return ACTOR_STEP_REFUSED;
    j->batch = b;
    *units = diff_batch_steps(b);
    return 1;
}

static Rlx__Envelope *kind_batch(void *job, int *count, const char **why) {
    (void)why;
    diff_batch_t *b = ((actor_whole_job_t *)job)->batch;
    *count = diff_batch_count(b);
    return diff_batch_envelope(b);
}

static void kind_job_destroy(void **job_p) {
    actor_whole_job_t *j = *job_p;
    if (!j)
        return;
    diff_batch_t *b = j->batch;
    diff_batch_destroy(&b);
    free(j);
    *job_p = NULL;
}

static void kind_destroy(void **model_p) {
    diff_t *d = *model_p;
    diff_destroy(&d);
    *model_p = NULL;
}

const actor_kind_t diffusion_actor_kind = {
    .kind = KIND_DIFFUSION,
    .name = "diffusion",
    .holds = actor_holds_model,
    .install = kind_install,
    .job_new = actor_whole_job_new,
    .step = kind_step,
    .batch = kind_batch,
    .job_destroy = kind_job_destroy,
    .destroy = kind_destroy,
};
