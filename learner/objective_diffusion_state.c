// objective_diffusion_state.c: the diffusion objective's files (objective_diffusion.h): the
// checkpoint triple (learner.ckpt, flow.ckpt, learner_state.ckpt), --resume from it, the
// broadcast of a net, and the weights blob for actors (serialised in memory).
#include "objective_diffusion.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt.h"

// learner_state.ckpt: the run counters for --resume, with the optimizer steps of the denoiser
// and the flow at the time, which tie it to the learner.ckpt and flow.ckpt written with it
// (written last, so a state file never names weights that were not written).
#define DIFF_STATE_KIND 0x44535431u // "DST1": a ckpt kind of its own (not a model)

typedef struct {
    learner_state_t st;    // counters, hub_prev = the hub's totals at the checkpoint
    int64_t denoiser_step; // d->net->ps.step when written
    int64_t flow_step;     // r->flow->ps.step when written (-1 without a flow)
} diff_state_t;

// learner.ckpt: the fine-tuned diffusion model with its AdamW state (a diff_save checkpoint:
// rlx-ddpm and actors read it); flow.ckpt: the flow net (DAG, DAG-KL) with its AdamW state
// and the counters in its extra section; learner_state.ckpt: diff_state_t.
int diffobj_save(const diff_t *d, const drl_t *r, const char *dir, const learner_counts_t *cnt) {
    char path[4096], err[512];
    diff_state_t ds = {.st = {.magic = LEARNER_STATE_MAGIC, .counts = *cnt},
                       .denoiser_step = d->net->ps.step,
                       .flow_step = r->flow ? r->flow->ps.step : -1};
    snprintf(path, sizeof path, "%s/learner.ckpt", dir);
    if (diff_save(d, path, err, sizeof err) != 0) {
        fprintf(stderr, "rlx-learner: checkpoint not written: %s\n", err);
        return -1;
    }
    if (r->flow) {
        snprintf(path, sizeof path, "%s/flow.ckpt", dir);
        if (mlp_save(r->flow, path, &ds.st, sizeof ds.st, err, sizeof err) != 0) {
            fprintf(stderr, "rlx-learner: flow checkpoint not written: %s\n", err);
            return -1;
        }
    }
    int32_t cfg[CKPT_CONFIG_LEN] = {1}; // [0]: version of diff_state_t
    ckpt_section_t sec = {"state", &ds, sizeof ds};
    snprintf(path, sizeof path, "%s/learner_state.ckpt", dir);
    if (ckpt_write(path, DIFF_STATE_KIND, cfg, &sec, 1, err, sizeof err) != 0) {
        fprintf(stderr, "rlx-learner: learner state not written: %s\n", err);
        return -1;
    }
    return 0;
}

// Copies the parameters and AdamW state of `from` into `to` if both nets have the same
// architecture; 0, or -1 with err.
static int take_net(mlp_t *to, const mlp_t *from, const char *what, char *err, size_t errlen) {
    const mlp_config_t *a = &to->cfg, *b = &from->cfg;
    if (a->in_dim != b->in_dim || a->hidden != b->hidden || a->n_blocks != b->n_blocks ||
        a->out_dim != b->out_dim || a->time_dim != b->time_dim || to->ps.n != from->ps.n) {
        snprintf(err, errlen,
                 "%s: net (in %d hidden %d blocks %d out %d time %d) differs from this run's "
                 "(in %d hidden %d blocks %d out %d time %d)",
                 what, b->in_dim, b->hidden, b->n_blocks, b->out_dim, b->time_dim, a->in_dim,
                 a->hidden, a->n_blocks, a->out_dim, a->time_dim);
        return -1;
    }
    size_t nb = to->ps.n * sizeof(float);
    memcpy(to->ps.w, from->ps.w, nb);
    memcpy(to->ps.m, from->ps.m, nb);
    memcpy(to->ps.v, from->ps.v, nb);
    to->ps.step = from->ps.step;
    return 0;
}

// Rank 0, --resume with DIR/learner.ckpt present: the denoiser (and AdamW state) from it, the
// flow from flow.ckpt, the counters from learner_state.ckpt (checked against both optimizer
// steps). 0, or -1 with err (d and r may then be partly loaded: the run stops).
int diffobj_resume(diff_t *d, drl_t *r, const char *dir, learner_counts_t *cnt, char *err,
                       size_t errlen) {
    char path[4096], e2[400];
    snprintf(path, sizeof path, "%s/learner.ckpt", dir);
    diff_t *e = diff_load(path, 1, e2, sizeof e2);
    int rc = -1;
    if (!e) {
        snprintf(err, errlen, "%s", e2);
        return -1;
    }
    if (e->cfg.x_dim != d->cfg.x_dim || e->cfg.n_classes != d->cfg.n_classes ||
        e->cfg.T != d->cfg.T || e->cfg.schedule != d->cfg.schedule ||
        e->cfg.beta_start != d->cfg.beta_start || e->cfg.beta_end != d->cfg.beta_end ||
        e->cfg.cosine_s != d->cfg.cosine_s) {
        snprintf(err, errlen,
                 "learner.ckpt: diffusion config (D %d C %d T %d or its schedule) differs from "
                 "--init's (D %d C %d T %d)",
                 e->cfg.x_dim, e->cfg.n_classes, e->cfg.T, d->cfg.x_dim, d->cfg.n_classes,
                 d->cfg.T);
        diff_destroy(&e);
        return -1;
    }
    rc = take_net(d->net, e->net, "learner.ckpt", err, errlen);
    diff_destroy(&e);
    if (rc != 0)
        return -1;
    if (r->flow) {
        snprintf(path, sizeof path, "%s/flow.ckpt", dir);
        mlp_t *f = mlp_load(path, 1, e2, sizeof e2);
        if (!f) {
            snprintf(err, errlen, "%s", e2);
            return -1;
        }
        rc = take_net(r->flow, f, "flow.ckpt", err, errlen);
        mlp_destroy(&f);
        if (rc != 0)
            return -1;
    }
    snprintf(path, sizeof path, "%s/learner_state.ckpt", dir);
    ckpt_t *ck = ckpt_read(path, e2, sizeof e2);
    uint64_t n = 0;
    const diff_state_t *ds = ck ? ckpt_section(ck, "state", &n) : NULL;
    rc = -1;
    if (!ck) {
        snprintf(err, errlen, "%s", e2);
    } else if (ckpt_kind(ck) != DIFF_STATE_KIND || ckpt_config(ck)[0] != 1 || !ds ||
               n != sizeof *ds || memcmp(ds->st.magic, LEARNER_STATE_MAGIC, 8) != 0) {
        snprintf(err, errlen,
                 "learner_state.ckpt: not a diffusion learner state (another version?)");
    } else if (ds->denoiser_step != d->net->ps.step ||
               ds->flow_step != (r->flow ? r->flow->ps.step : -1)) {
        snprintf(err, errlen,
                 "learner_state.ckpt names optimizer steps %lld / %lld, learner.ckpt / flow.ckpt "
                 "hold %lld / %lld: the files are of different checkpoints",
                 (long long)ds->denoiser_step, (long long)ds->flow_step, (long long)d->net->ps.step,
                 (long long)(r->flow ? r->flow->ps.step : -1));
    } else {
        *cnt = ds->st.counts;
        rc = 0;
    }
    ckpt_destroy(&ck);
    return rc;
}

// Rank 0's parameters and AdamW state of net to every rank.
void diffobj_bcast_net(mlp_t *net) {
    int n = (int)net->ps.n;
    MPI_Bcast(net->ps.w, n, MPI_FLOAT, 0, MPI_COMM_WORLD);
    MPI_Bcast(net->ps.m, n, MPI_FLOAT, 0, MPI_COMM_WORLD);
    MPI_Bcast(net->ps.v, n, MPI_FLOAT, 0, MPI_COMM_WORLD);
    MPI_Bcast(&net->ps.step, 1, MPI_INT64_T, 0, MPI_COMM_WORLD);
}
