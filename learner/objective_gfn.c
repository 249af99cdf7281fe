// objective_gfn.c: the HyperGrid GFlowNet behind objective.h (--env hypergrid; gflownet.h:
// an mlp policy and log Z on every rank). Rank 0's hub runs in GFlowNet mode (actors sample
// trajectories with the published policy, reward workers score the terminal states with
// "hypergrid"); each rank computes the TB / DB / SubTB loss of its shard, weighted by its share
// of the global mean's terms; the net and log Z gradients are summed by two in-place
// all-reduces and every rank steps AdamW (lr for the net, logz_lr for log Z) in lockstep.
// Weights are a gfn_ckpt.h blob; the exact L1 of the learned sampler (gfn_evaluate) every
// eval_every steps and at start and end.
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gflownet.h"
#include "gfn_ckpt.h"
#include "gfn_traj.h"
#include "objective.h"
#include "util.h"

// The learner's grid: the evaluator holds H^D states (several arrays of them).
#define GFN_MAX_STATES (1 << 24)

typedef struct {
    const learner_config_t *c; // the run's config
    int rank, nranks;          // this rank, ranks
    gfn_grid_t g;              // environment
    gfn_policy_t *p;           // the policy (every rank)
    gfn_batch_t *b;            // the batch
    float *reward;             // (b->max_traj) R(x) of each
    gfn_evaluator_t *ev;       // exact evaluation and modes seen (rank 0)
    adamw_config_t on, oz;     // the net's and log Z's optimizers
    gfn_loss_config_t lc;      // TB / DB / SubTB
    learner_admit_t *adm;      // rank 0's admission of the current batch (batch_begin)
    double glob[2];            // the step's global loss and max staleness
    char path[4096];           // OUT/learner.ckpt
} gfn_obj_t;

static void gfn_obj_defaults(learner_config_t *c, const unsigned char *given) {
    learner_gflownet_defaults(c, given, "hypergrid");
    c->hub.prompts_per_item = 1;
    if (!given['C'])
        c->opt.grad_clip = 0.0f;
}

static const char *objective_name(int k) {
    return k == GFN_LOSS_DB ? "db" : k == GFN_LOSS_SUBTB ? "subtb" : "tb";
}

static void gfn_obj_destroy(void **self_p) {
    gfn_obj_t *o = *self_p;
    if (!o)
        return;
    gfn_evaluator_destroy(&o->ev);
    gfn_batch_destroy(&o->b);
    gfn_policy_destroy(&o->p);
    free(o->reward);
    free(o);
    *self_p = NULL;
}

// Rank 0's parameters and optimizer state (net and log Z) to every rank.
static void bcast_policy(gfn_policy_t *p) {
    paramset_t *ps = &p->net->ps;
    MPI_Bcast(ps->w, (int)ps->n, MPI_FLOAT, 0, MPI_COMM_WORLD);
    MPI_Bcast(ps->m, (int)ps->n, MPI_FLOAT, 0, MPI_COMM_WORLD);
    MPI_Bcast(ps->v, (int)ps->n, MPI_FLOAT, 0, MPI_COMM_WORLD);
    MPI_Bcast(p->logz_buf, 4, MPI_FLOAT, 0, MPI_COMM_WORLD);
    int64_t steps[2] = {ps->step, p->logz.step};
    MPI_Bcast(steps, 2, MPI_INT64_T, 0, MPI_COMM_WORLD);
    ps->step = steps[0];
    p->logz.step = steps[1];
}

static void *gfn_obj_create(learner_config_t *c, learner_counts_t *cnt, int *rc) {
    int rank = 0, nranks = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    int D = c->hub.gfn_ndim, H = c->hub.gfn_height;
    double n_states = pow((double)H, (double)D);
    *rc = 2;
    if (D < 1 || D > 64 || H < 2 || n_states > GFN_MAX_STATES) {
        if (rank == 0)
            fprintf(stderr,
                    "rlx-learner: --env hypergrid with --ndim D >= 1 and --height H >= 2 "
                    "and H^D <= %d (got D %d H %d)\n",
                    GFN_MAX_STATES, D, H);
        return NULL;
    }
    *rc = 1;
    gfn_obj_t *o = rlx_xcalloc(1, sizeof *o, "objective");
    o->c = c;
    o->rank = rank;
    o->nranks = nranks;
    o->g = gfn_grid(D, H);
    gfn_policy_config_t pc = gfn_policy_defaults();
    pc.hidden = c->gfn_hidden > 0 ? c->gfn_hidden : pc.hidden;
    pc.n_blocks = c->gfn_blocks >= 0 ? c->gfn_blocks : pc.n_blocks;
    pc.state_flow = c->gfn_objective != GFN_LOSS_TB;
    int k = c->hub.samples_per_prompt > 0 ? c->hub.samples_per_prompt : 1;
    int cap_all = c->batch + k * c->hub.prompts_per_item; // rank 0 may take a group more
    int cap_rank = (cap_all + nranks - 1) / nranks + 1;
    o->p = gfn_policy_new(&o->g, &pc, cap_rank, c->seed);
    o->b = gfn_batch_new(&o->g, cap_all);
    o->reward = rlx_xcalloc((size_t)cap_all, sizeof *o->reward, "batch rewards");
    o->on = o->oz = c->opt;
    o->oz.lr = c->logz_lr;
    o->oz.weight_decay = 0;
    o->lc = (gfn_loss_config_t){.kind = (gfn_loss_kind_t)c->gfn_objective, .lambda = c->gfn_lambda};
    snprintf(o->path, sizeof o->path, "%s/learner.ckpt", c->out);
    int ok = 1;
    char err[512];
    if (rank == 0) {
        struct stat stt;
        if (c->resume && stat(o->path, &stt) == 0) {
            ckpt_t *ck = ckpt_read(o->path, err, sizeof err);
            uint64_t n = 0;
            const learner_state_t *st = ck ? ckpt_section(ck, "extra", &n) : NULL;
            if (!ck || gfn_ckpt_load(o->p, ck, err, sizeof err) != 0) {
                fprintf(stderr, "rlx-learner: cannot resume from %s: %s\n", o->path, err);
                ok = 0;
            } else if (st && n == sizeof *st && !memcmp(st->magic, LEARNER_STATE_MAGIC, 8)) {
                *cnt = st->counts;
                printf("rlx-learner: resumed from %s at step %lld\n", o->path,
                       (long long)cnt->step);
            }
            ckpt_destroy(&ck);
        }
        if (ok) {
            o->ev = gfn_evaluator_new(&o->g);
            printf("rlx-learner: %d rank(s), gflownet hypergrid D=%d H=%d (%lld states, %d "
                   "modes), %s, mlp hidden %d blocks %d (%zu parameters), batch %d, lr %g, "
                   "log Z lr %g\n",
                   nranks, D, H, (long long)o->ev->n_states, o->ev->n_modes,
                   objective_name(c->gfn_objective), pc.hidden, pc.n_blocks, o->p->net->ps.n,
                   c->batch, o->on.lr, o->oz.lr);
            fflush(stdout);
        }
    }
    MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (!ok) {
        void *v = o;
        gfn_obj_destroy(&v);
        return NULL;
    }
    bcast_policy(o->p);
    MPI_Bcast(&cnt->step, 1, MPI_INT64_T, 0, MPI_COMM_WORLD);
    *rc = 0;
    return o;
}

static const int *gfn_obj_batch_begin(void *self, learner_admit_t *adm) {
    gfn_obj_t *o = self;
    o->b->n = 0;
    o->adm = adm;
    return &o->b->n;
}

// Adds one TrajectoryBatch's trajectories to the training batch (rank 0).
static void gfn_obj_add(void *self, const Rlx__Envelope *env) {
    gfn_obj_t *a = self;
    const Rlx__TrajectoryBatch *tb = env->trajectory_batch;
    for (size_t i = 0; i < tb->n_trajectories; i++) {
        const Rlx__Trajectory *t = tb->trajectories[i];
        a->adm->cnt->consumed++;
        const Rlx__GflowTrajectory *x =
            t->kind_case == RLX__TRAJECTORY__KIND_GFLOW ? t->gflow : NULL;
        if (!x || gfn_traj_check(&a->g, x) || !(t->reward > 0) || !isfinite(t->reward) ||
            a->b->n == a->b->max_traj) {
            a->adm->cnt->dropped_invalid++;
            continue;
        }
        if (!learner_admit_lag(a->adm, t->policy_version))
            continue;
        a->reward[a->b->n] = t->reward;
        gfn_traj_append(&a->g, x, logf(t->reward), a->b);
    }
}

// Rank 0's batch (and the stop decision) to every rank.
static void gfn_obj_bcast(void *self, int *stop) {
    gfn_obj_t *o = self;
    gfn_batch_t *b = o->b;
    int hdr[2] = {b->n, *stop};
    MPI_Bcast(hdr, 2, MPI_INT, 0, MPI_COMM_WORLD);
    if (o->rank != 0) {
        b->n = hdr[0];
        *stop = hdr[1];
    }
    if (b->n == 0)
        return;
    int rows = b->n * b->max_len;
    MPI_Bcast(b->len, b->n, MPI_INT, 0, MPI_COMM_WORLD);
    MPI_Bcast(b->states, rows, MPI_INT32_T, 0, MPI_COMM_WORLD);
    MPI_Bcast(b->actions, rows, MPI_INT32_T, 0, MPI_COMM_WORLD);
    MPI_Bcast(b->logpf, rows, MPI_FLOAT, 0, MPI_COMM_WORLD);
    MPI_Bcast(b->logpb, rows, MPI_FLOAT, 0, MPI_COMM_WORLD);
    MPI_Bcast(b->logr, b->n, MPI_FLOAT, 0, MPI_COMM_WORLD);
}

static int gfn_obj_batch_n(void *self) {
    return ((gfn_obj_t *)self)->b->n;
}

static int gfn_obj_step(void *self, int64_t step, objective_step_t *out) {
    (void)step;
    gfn_obj_t *o = self;
    gfn_batch_t *b = o->b;
    gfn_policy_t *p = o->p;
    int nranks = o->nranks;
    // This rank's shard; its mean loss weighted by its share of the global mean's terms.
    int lo = (int)((int64_t)b->n * o->rank / nranks),
        hi = (int)((int64_t)b->n * (o->rank + 1) / nranks);
    int64_t terms = 0, mine = 0;
    for (int i = 0; i < b->n; i++) {
        int t = o->lc.kind == GFN_LOSS_DB ? b->len[i] : 1;
        terms += t;
        mine += i >= lo && i < hi ? t : 0;
    }
    gfn_batch_t shard = *b;
    size_t at = (size_t)lo * b->max_len;
    shard.n = hi - lo;
    shard.len += lo;
    shard.states += at;
    shard.actions += at;
    shard.logpf += at;
    shard.logpb += at;
    shard.logr += lo;
    paramset_zero_grad(&p->net->ps);
    paramset_zero_grad(&p->logz);
    gfn_stats_t st = {0};
    double wgt = terms ? (double)mine / (double)terms : 0;
    if (hi > lo) {
        gfn_loss(p, &shard, &o->lc, &st);
        if (nranks > 1) {
            for (size_t j = 0; j < p->net->ps.n; j++)
                p->net->ps.g[j] *= (float)wgt;
            p->logz.g[0] *= (float)wgt;
        }
    }
    learner_poison_grad(&p->net->ps, st.loss);
    if (nranks > 1) {
        learner_allreduce(&p->net->ps);
        learner_allreduce(&p->logz);
    }
    float norms[2] = {adamw_grad_norm(&p->net->ps), adamw_grad_norm(&p->logz)};
    out->updated = learner_norms_finite(norms, 2);
    if (out->updated) {
        norms[0] = adamw_step(&p->net->ps, &o->on);
        adamw_step(&p->logz, &o->oz);
    }
    double loc[2] = {st.loss * wgt, st.max_stale};
    o->glob[0] = o->glob[1] = 0;
    MPI_Reduce(&loc[0], &o->glob[0], 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
    MPI_Reduce(&loc[1], &o->glob[1], 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
    out->loss = o->glob[0];
    out->grad_norm = norms[0];
    return 0;
}

static int gfn_obj_finite(void *self) {
    gfn_obj_t *o = self;
    return learner_params_finite(&o->p->net->ps) && learner_params_finite(&o->p->logz);
}

static void *gfn_obj_weights(void *self, size_t *len, char *err, size_t errlen) {
    gfn_obj_t *o = self;
    return gfn_ckpt_blob(o->p, o->c->out, len, err, errlen);
}

static int gfn_obj_save(void *self, const learner_counts_t *cnt) {
    gfn_obj_t *o = self;
    char err[512];
    learner_state_t st = {.magic = LEARNER_STATE_MAGIC, .counts = *cnt};
    if (gfn_ckpt_save(o->p, o->path, 1, &st, sizeof st, err, sizeof err) != 0) {
        fprintf(stderr, "rlx-learner: checkpoint not written: %s\n", err);
        return -1;
    }
    return 0;
}

static void gfn_obj_metrics(void *self, const learner_counts_t *cnt, const objective_step_t *st,
                            json_object *line) {
    (void)cnt;
    gfn_obj_t *o = self;
    const gfn_batch_t *b = o->b;
    gfn_evaluator_observe(o->ev, b); // modes seen
    double rsum = 0, lsum = 0;
    for (int i = 0; i < b->n; i++) {
        rsum += o->reward[i];
        lsum += b->len[i];
    }
    learner_json_num(line, "reward_mean", rsum / b->n, "%.5f");
    learner_json_num(line, "len_mean", lsum / b->n, "%.3f");
    learner_json_num(line, "loss", st->loss, "%.6f");
    learner_json_num(line, "logz", o->p->logz.w[0], "%.5f");
    learner_json_num(line, "max_stale", o->glob[1], "%.4f");
    learner_json_int(line, "modes", o->ev->modes_visited);
    learner_json_num(line, "grad_norm", st->grad_norm, "%.4f");
}

static int gfn_obj_evaluate(void *self, const learner_counts_t *cnt, objective_eval_t phase,
                            json_object *line) {
    gfn_obj_t *o = self;
    const learner_config_t *c = o->c;
    if (phase == OBJ_EVAL_STEP && !(c->eval_every > 0 && cnt->step % c->eval_every == 0))
        return 0;
    gfn_eval_t e;
    gfn_evaluate(o->ev, o->p, &e);
    if (phase != OBJ_EVAL_STEP)
        learner_json_int(line, "trajectories", cnt->consumed);
    learner_json_num(line, "l1", e.l1, "%.6f");
    learner_json_num(line, "l1_mean", e.l1_mean, "%.8f");
    learner_json_num(line, "logz_err", e.logz_err, "%.5f");
    learner_json_num(line, "mode_mass", e.mode_mass, "%.5f");
    learner_json_int(line, "modes_high", e.modes_high);
    learner_json_int(line, "n_modes", o->ev->n_modes);
    if (phase != OBJ_EVAL_STEP) {
        learner_json_int(line, "modes", o->ev->modes_visited);
        learner_json_num(line, "logz", o->p->logz.w[0], "%.5f");
    }
    printf("eval step %lld trajectories %lld L1 %.5f modes found %d/%d logZ err %.4f\n",
           (long long)cnt->step, (long long)cnt->consumed, e.l1, e.modes_visited, o->ev->n_modes,
           e.logz_err);
    fflush(stdout);
    return 1;
}

const objective_ops_t objective_gfn = {
    .name = "tb", // also db, subtb (learner_config_t.gfn_objective)
    .kind = KIND_GFLOW,
    .defaults = gfn_obj_defaults,
    .create = gfn_obj_create,
    .batch_begin = gfn_obj_batch_begin,
    .add = gfn_obj_add,
    .bcast = gfn_obj_bcast,
    .batch_n = gfn_obj_batch_n,
    .step = gfn_obj_step,
    .finite = gfn_obj_finite,
    .weights = gfn_obj_weights,
    .save = gfn_obj_save,
    .metrics = gfn_obj_metrics,
    .evaluate = gfn_obj_evaluate,
    .destroy = gfn_obj_destroy,
};
