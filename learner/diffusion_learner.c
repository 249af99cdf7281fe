// diffusion_learner.c: the diffusion learner loop (see diffusion_learner.h).
#include "diffusion_learner.h"

#include <errno.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

#include "diff_traj.h"
#include "diffusion.h"
#include "diffusion_rl.h"
#include "digits.h"
#include "image_scorers.h"
#include "layers.h"
#include "hub_diffusion.h"
#include "learner_common.h"
#include "util.h"

#define DIFF_LEARNER_MAX_BATCH 256 // denoiser rows per call (chunking of the losses)

// The batch in flat arrays (the form in which it is broadcast); capacity cap chains of S
// steps of D floats.
typedef struct {
    int n;           // chains
    int cap;         // capacity
    int S, D;        // steps, data dimension
    float *xs;       // (cap, S+1, D) states
    float *blogpf;   // (cap, S) behaviour log P_F
    float *logpb;    // (cap, S) log P_B
    float *reward;   // (cap) r(x_0)
    int *label;      // (cap) class or DIFF_NULL_LABEL
    uint64_t *group; // (cap) prompt id
    float *r_x0hat;  // (cap, S) forward-looking rewards (this rank's shard only)
    drl_traj_t *tr;  // (cap) views for diffusion_rl.h
} dbatch_t;

// Adds one TrajectoryBatch's chains to the batch (rank 0).
typedef struct {
    dbatch_t *b;           // the batch being filled
    diff_traj_spec_t spec; // shape, steps and the policy's timesteps
    int n_classes;         // policy classes (labels checked against the prompt)
    int64_t step;          // steps taken
    int max_lag;           // drop older than this many versions (-1: never)
    learner_counts_t *cnt; // counters
    double lag_sum;        // policy lag sum of the batch
    int lag_max;           // and its maximum
} dadd_t;

static void diff_add(void *ctx, const Rlx__Envelope *env) {
    dadd_t *a = ctx;
    dbatch_t *b = a->b;
    const Rlx__TrajectoryBatch *tb = env->trajectory_batch;
    for (size_t i = 0; i < tb->n_trajectories; i++) {
        const Rlx__Trajectory *t = tb->trajectories[i];
        a->cnt->consumed++;
        const Rlx__DiffusionTrajectory *x =
            t->kind_case == RLX__TRAJECTORY__KIND_DIFFUSION ? t->diffusion : NULL;
        int label = a->n_classes > 0 ? (int)t->prompt_id : DIFF_NULL_LABEL;
        int bad = !x || diff_traj_check(&a->spec, x, label) != NULL || !isfinite(t->reward) ||
                  b->n == b->cap;
        if (bad) {
            a->cnt->dropped_invalid++;
            continue;
        }
        if (!learner_admit_lag(a->cnt, a->step, t->policy_version, a->max_lag, &a->lag_sum,
                               &a->lag_max))
            continue;
        int j = b->n++, S = b->S, D = b->D;
        memcpy(b->xs + (size_t)j * (S + 1) * D, x->states, (size_t)(S + 1) * D * sizeof(float));
        memcpy(b->blogpf + (size_t)j * S, x->logpf, (size_t)S * sizeof(float));
        memcpy(b->logpb + (size_t)j * S, x->logpb, (size_t)S * sizeof(float));
        b->reward[j] = t->reward;
        b->label[j] = label;
        b->group[j] = t->prompt_id;
    }
}

// Rank 0's batch (and the stop decision) to every rank.
static void bcast_batch(dbatch_t *b, int *stop, int rank) {
    int hdr[2] = {b->n, *stop};
    MPI_Bcast(hdr, 2, MPI_INT, 0, MPI_COMM_WORLD);
    if (rank != 0) {
        b->n = hdr[0];
        *stop = hdr[1];
    }
    if (b->n == 0)
        return;
    int n = b->n, S = b->S;
    MPI_Bcast(b->xs, n * (S + 1) * b->D, MPI_FLOAT, 0, MPI_COMM_WORLD);
    MPI_Bcast(b->blogpf, n * S, MPI_FLOAT, 0, MPI_COMM_WORLD);
    MPI_Bcast(b->logpb, n * S, MPI_FLOAT, 0, MPI_COMM_WORLD);
    MPI_Bcast(b->reward, n, MPI_FLOAT, 0, MPI_COMM_WORLD);
    MPI_Bcast(b->label, n, MPI_INT, 0, MPI_COMM_WORLD);
    MPI_Bcast(b->group, n, MPI_UINT64_T, 0, MPI_COMM_WORLD);
}

// Publishes d's parameters (hub_diff_weights: no AdamW moments) as weights `version`.
static int publish(hub_t *hub, const diff_t *d, const char *dir, uint64_t version) {
    char err[256] = "";
    size_t len = 0;
    void *blob = hub_diff_weights(d, dir, &len, err, sizeof err);
    int rc = blob ? hub_publish_weights(hub, version, blob, len) : -1;
    if (rc != 0)
        fprintf(stderr, "rlx-learner: publishing weights v%llu failed%s%s\n",
                (unsigned long long)version, blob ? "" : ": ", err);
    free(blob);
    return rc;
}

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
static void save_checkpoint(const diff_t *d, const drl_t *r, const char *dir,
                            const learner_counts_t *cnt, const hub_counters_t *hc) {
    char path[4096], err[512];
    diff_state_t ds = {.st = {.magic = "RLXLRN3", .counts = *cnt},
                       .denoiser_step = d->net->ps.step,
                       .flow_step = r->flow ? r->flow->ps.step : -1};
    ds.st.counts.hub_prev = *hc;
    snprintf(path, sizeof path, "%s/learner.ckpt", dir);
    if (diff_save(d, path, err, sizeof err) != 0) {
        fprintf(stderr, "rlx-learner: checkpoint not written: %s\n", err);
        return;
    }
    if (r->flow) {
        snprintf(path, sizeof path, "%s/flow.ckpt", dir);
        if (mlp_save(r->flow, path, &ds.st, sizeof ds.st, err, sizeof err) != 0) {
            fprintf(stderr, "rlx-learner: flow checkpoint not written: %s\n", err);
            return;
        }
    }
    int32_t cfg[CKPT_CONFIG_LEN] = {1}; // [0]: version of diff_state_t
    ckpt_section_t sec = {"state", &ds, sizeof ds};
    snprintf(path, sizeof path, "%s/learner_state.ckpt", dir);
    if (ckpt_write(path, DIFF_STATE_KIND, cfg, &sec, 1, err, sizeof err) != 0)
        fprintf(stderr, "rlx-learner: learner state not written: %s\n", err);
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
static int diff_resume(diff_t *d, drl_t *r, const char *dir, learner_counts_t *cnt, char *err,
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
               n != sizeof *ds || memcmp(ds->st.magic, "RLXLRN3", 8) != 0) {
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
static void bcast_net(mlp_t *net) {
    int n = (int)net->ps.n;
    MPI_Bcast(net->ps.w, n, MPI_FLOAT, 0, MPI_COMM_WORLD);
    MPI_Bcast(net->ps.m, n, MPI_FLOAT, 0, MPI_COMM_WORLD);
    MPI_Bcast(net->ps.v, n, MPI_FLOAT, 0, MPI_COMM_WORLD);
    MPI_Bcast(&net->ps.step, 1, MPI_INT64_T, 0, MPI_COMM_WORLD);
}

static const char *objective_name(int k) {
    return k == DIFF_OBJ_DDPO ? "ddpo" : k == DIFF_OBJ_DAG ? "dag" : "dagkl";
}

// The scorer target of a chain of class `label` (as the hub's prompts say it).
static const char *target_of(const learner_config_t *c, int label, char *buf, size_t len) {
    if (label == DIFF_NULL_LABEL)
        return c->hub.diff_target ? c->hub.diff_target : "";
    snprintf(buf, len, "%d", label);
    return buf;
}

// r(x0_hat(x_{ts[k]})) for k < S of chains lo..hi-1 under the current denoiser, scored by
// fl. Returns how many could not be scored (their term is 0).
static int forward_looking(diff_t *d, const diff_sampler_t *smp, imgscore_t *fl,
                           const learner_config_t *c, dbatch_t *b, const int *ts, int lo, int hi,
                           float *x_in, float *x0, int *tt, int *lab) {
    int S = b->S, D = b->D, rows = (hi - lo) * S, bad = 0;
    int guided = smp->guidance != 0 && d->cfg.n_classes > 0;
    int chunk = guided ? d->max_batch / 2 : d->max_batch;
    uint32_t shape[4];
    for (int i = 0; i < c->hub.diff_shape_n; i++)
        shape[i] = (uint32_t)c->hub.diff_shape[i];
    for (int r0 = 0; r0 < rows; r0 += chunk) {
        int m = rows - r0 < chunk ? rows - r0 : chunk;
        for (int j = 0; j < m; j++) {
            int i = lo + (r0 + j) / S, k = (r0 + j) % S;
            memcpy(x_in + (size_t)j * D, b->xs + ((size_t)i * (S + 1) + k) * D,
                   (size_t)D * sizeof(float));
            tt[j] = ts[k];
            lab[j] = b->label[i];
        }
        diff_predict_x0(d, x0, x_in, tt, lab, m, smp);
        for (int j = 0; j < m; j++) {
            int i = lo + (r0 + j) / S, k = (r0 + j) % S;
            char tb[16], err[160];
            float rw = 0;
            if (imgscore_score(
                    fl, x0 + (size_t)j * D, (size_t)D, shape, (size_t)c->hub.diff_shape_n,
                    target_of(c, b->label[i], tb, sizeof tb), &rw, err, sizeof err) != 0 ||
                !isfinite(rw)) {
                rw = 0;
                bad++;
            }
            b->r_x0hat[(size_t)i * S + k] = rw;
        }
    }
    return bad;
}

// Mean pairwise Euclidean distance of the batch's samples x_0.
static double diversity(const dbatch_t *b) {
    int n = b->n, S = b->S, D = b->D;
    double sum = 0;
    long pairs = 0;
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            const float *x = b->xs + ((size_t)i * (S + 1) + S) * D;
            const float *y = b->xs + ((size_t)j * (S + 1) + S) * D;
            double s2 = 0;
            for (int e = 0; e < D; e++)
                s2 += (double)(x[e] - y[e]) * (x[e] - y[e]);
            sum += sqrt(s2);
            pairs++;
        }
    return pairs ? sum / pairs : 0;
}

int diffusion_learner_run(const learner_config_t *cin) {
    int rank = 0, nranks = 1, rc = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    layers_set_threads(cin->threads);
    learner_signals_install();
    learner_config_t cc = *cin, *c = &cc;
    char err[512], path[4096];
    // The architecture comes from --init (every rank reads it); --resume without --init
    // takes it from OUT/learner.ckpt (then every rank must see OUT). Rank 0 then loads the
    // checkpoint's weights and optimizer state and broadcasts them.
    snprintf(path, sizeof path, "%s/learner.ckpt", c->out);
    struct stat stt;
    int resuming = c->resume && stat(path, &stt) == 0;
    const char *from = c->init ? c->init : resuming ? path : NULL;
    if (!from) {
        if (rank == 0)
            fprintf(stderr,
                    "rlx-learner: --env diffusion needs --init DDPM.ckpt (rlx-ddpm), "
                    "or --resume with %s\n",
                    path);
        return 2;
    }
    diff_t *d = diff_load(from, DIFF_LEARNER_MAX_BATCH, err, sizeof err);
    if (!d) {
        if (rank == 0)
            fprintf(stderr, "rlx-learner: %s: %s\n", c->init ? "--init" : "--resume", err);
        return 2;
    }
    // Complete the hub's diffusion settings from the model.
    int D = d->cfg.x_dim;
    if (c->hub.diff_shape_n == 0) {
        int side = (int)lround(sqrt((double)D));
        if (D == DIGITS_DIM)
            c->hub.diff_shape_n = 2, c->hub.diff_shape[0] = c->hub.diff_shape[1] = side;
        else
            c->hub.diff_shape_n = 1, c->hub.diff_shape[0] = D;
    }
    long prod = 1;
    for (int i = 0; i < c->hub.diff_shape_n; i++)
        prod *= c->hub.diff_shape[i];
    if (c->hub.diff_classes < 0 || c->hub.diff_classes > d->cfg.n_classes)
        c->hub.diff_classes = d->cfg.n_classes;
    int S = c->hub.diff_steps;
    if (prod != D || S < 1 || S > d->cfg.T - 1) {
        if (rank == 0)
            fprintf(stderr,
                    "rlx-learner: --shape (product %ld) must be the model's dimension %d and "
                    "--sample-steps %d in 1..T-1 = %d\n",
                    prod, D, S, d->cfg.T - 1);
        diff_destroy(&d);
        return 2;
    }
    diff_sampler_t smp = diff_sampler_defaults();
    smp.eta = c->hub.diff_eta;
    smp.guidance = c->hub.diff_guidance;
    smp.logp_sum = c->hub.diff_logp_sum;
    smp.clip_x0 = c->hub.diff_clip_x0;
    int k = c->hub.samples_per_prompt > 0 ? c->hub.samples_per_prompt : 1;
    int cap = c->batch + k * c->hub.prompts_per_item; // rank 0 may take a group more
    int with_flow = c->diff_objective != DIFF_OBJ_DDPO;
    mlp_config_t fcfg = {
        .hidden = c->flow_hidden, .n_blocks = c->flow_blocks, .time_dim = c->flow_time_dim};
    drl_t *r = drl_new(d, &smp, &c->drl, with_flow ? &fcfg : NULL, cap, S, c->seed);
    int *ts = rlx_xcalloc((size_t)S + 1, sizeof *ts, "timesteps");
    diff_timesteps(d, S, ts);
    dbatch_t b = {.cap = cap, .S = S, .D = D};
    b.xs = rlx_alloc_floats((size_t)cap * (S + 1) * D, "batch states");
    b.blogpf = rlx_alloc_floats((size_t)cap * S, "batch logpf");
    b.logpb = rlx_alloc_floats((size_t)cap * S, "batch logpb");
    b.reward = rlx_alloc_floats((size_t)cap, "batch rewards");
    b.label = rlx_xcalloc((size_t)cap, sizeof *b.label, "batch labels");
    b.group = rlx_xcalloc((size_t)cap, sizeof *b.group, "batch groups");
    b.r_x0hat = rlx_alloc_floats((size_t)cap * S, "forward-looking rewards");
    b.tr = rlx_xcalloc((size_t)cap, sizeof *b.tr, "batch views");
    float *x_in = rlx_alloc_floats((size_t)DIFF_LEARNER_MAX_BATCH * D, "x0_hat input");
    float *x0 = rlx_alloc_floats((size_t)DIFF_LEARNER_MAX_BATCH * D, "x0_hat");
    int *tt = rlx_xcalloc(DIFF_LEARNER_MAX_BATCH, sizeof *tt, "x0_hat times");
    int *lab = rlx_xcalloc(DIFF_LEARNER_MAX_BATCH, sizeof *lab, "x0_hat labels");
    int *pred = rlx_xcalloc((size_t)cap, sizeof *pred, "predicted classes");
    float *x0s = rlx_alloc_floats((size_t)cap * D, "batch samples");
    // DAG-KL on several ranks: the whole batch's per-transition rewards and advantages.
    int kl_global = c->diff_objective == DIFF_OBJ_DAGKL && nranks > 1;
    float *kl_b = kl_global ? rlx_alloc_floats((size_t)cap * S, "DAG-KL rewards") : NULL;
    float *kl_adv = kl_global ? rlx_alloc_floats((size_t)cap * S, "DAG-KL advantages") : NULL;
    float *kl_work = kl_global ? rlx_alloc_floats((size_t)cap, "DAG-KL scratch") : NULL;
    int *kl_cnt = kl_global ? rlx_xcalloc((size_t)nranks, sizeof *kl_cnt, "shard sizes") : NULL;
    int *kl_off = kl_global ? rlx_xcalloc((size_t)nranks, sizeof *kl_off, "shard offsets") : NULL;
    imgscore_t *fl = NULL;
    mlp_t *clf = NULL;
    hub_t *hub = NULL;
    void *zctx = NULL;
    FILE *metrics = NULL;
    learner_counts_t cnt = {0};
    adamw_config_t on = c->opt, of = c->opt;
    if (c->flow_lr > 0)
        of.lr = c->flow_lr;

    // The forward-looking term's local scorer: --fl-scorer, or the run's scorer if it is an
    // image scorer; "none" turns it off.
    int ok = 1;
    const char *fln = c->fl_scorer ? c->fl_scorer : c->hub.scorer;
    static const char *const alias[][2] = {{"digit_logprob", "digit-logp"},
                                           {"digit_prob", "digit-prob"},
                                           {"toy", "toy-mode"},
                                           {"toy_density", "toy-density"}};
    for (size_t i = 0; fln && i < sizeof alias / sizeof alias[0]; i++)
        if (!strcmp(fln, alias[i][0]))
            fln = alias[i][1];
    if (with_flow && fln && strcmp(fln, "none") != 0 && imgscore_find(fln) >= 0) {
        fl = imgscore_new(fln, c->classifier, err, sizeof err);
        if (!fl) {
            if (rank == 0)
                fprintf(stderr, "rlx-learner: forward-looking scorer %s: %s\n", fln, err);
            ok = 0;
        }
    } else if (c->fl_scorer && strcmp(c->fl_scorer, "none") != 0 && with_flow) {
        if (rank == 0)
            fprintf(stderr, "rlx-learner: --fl-scorer %s is not an image scorer (%s)\n",
                    c->fl_scorer, imgscore_list());
        ok = 0;
    }
    if (ok && rank == 0 && c->classifier && D == DIGITS_DIM) {
        clf = mlp_load(c->classifier, cap, err, sizeof err);
        if (!clf) {
            fprintf(stderr, "rlx-learner: --classifier: %s\n", err);
            ok = 0;
        }
    }
    if (ok && rank == 0 && resuming) {
        if (diff_resume(d, r, c->out, &cnt, err, sizeof err) != 0) {
            fprintf(stderr, "rlx-learner: cannot resume from %s: %s\n", c->out, err);
            ok = 0;
        } else {
            printf("rlx-learner: resumed from %s/learner.ckpt at step %lld\n", c->out,
                   (long long)cnt.step);
            // Work ids start again at 1 in the new hub: a seed of its own for the resumed
            // part, so that its chains do not replay the noise of the first run's.
            c->hub.seed += 0x9e3779b97f4a7c15ull * (uint64_t)cnt.step;
        }
    }
    if (ok && rank == 0) {
        mkdir(c->out, 0755);
        if (c->metrics)
            snprintf(path, sizeof path, "%s", c->metrics);
        else
            snprintf(path, sizeof path, "%s/metrics.jsonl", c->out);
        if (!(metrics = fopen(path, c->resume ? "a" : "w"))) {
            fprintf(stderr, "rlx-learner: cannot write metrics %s: %s\n", path, strerror(errno));
            ok = 0;
        }
        if (ok) {
            zctx = zmq_ctx_new();
            hub = hub_start(&c->hub, zctx);
            ok = hub && publish(hub, d, c->out, (uint64_t)cnt.step + 1) == 0;
        }
        if (ok) {
            printf("rlx-learner: %d rank(s), diffusion D=%d classes %d (prompts %d), %s, S=%d "
                   "eta %g, denoiser %zu parameters, flow %zu, forward-looking %s, batch %d, "
                   "k %d, lr %g\n",
                   nranks, D, d->cfg.n_classes, c->hub.diff_classes > 0 ? c->hub.diff_classes : 1,
                   objective_name(c->diff_objective), S, smp.eta, d->net->ps.n,
                   r->flow ? r->flow->ps.n : 0, fl ? imgscore_name(fl->kind) : "off", c->batch, k,
                   on.lr);
            fflush(stdout);
        }
    }
    MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (!ok)
        goto cleanup;
    MPI_Bcast(&resuming, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (resuming) { // every rank steps from rank 0's state (beta's warm-up needs the step)
        bcast_net(d->net);
        if (r->flow)
            bcast_net(r->flow);
        MPI_Bcast(&cnt.step, 1, MPI_INT64_T, 0, MPI_COMM_WORLD);
    }

    double t0 = rlx_now();
    int stop = 0, finish = 0;
    learner_source_t src = {.hub = hub, .take_timeout_s = c->take_timeout_s};
    diff_traj_spec_t spec = {.nshape = c->hub.diff_shape_n, .steps = S, .ts = ts};
    for (int i = 0; i < spec.nshape; i++)
        spec.shape[i] = (uint32_t)c->hub.diff_shape[i];
    while (!stop) {
        b.n = 0;
        dadd_t da = {.b = &b,
                     .spec = spec,
                     .n_classes = c->hub.diff_classes,
                     .step = cnt.step,
                     .max_lag = c->max_lag,
                     .cnt = &cnt};
        int signalled = learner_stop_any_rank();
        if (rank == 0) {
            if (!finish)
                learner_collect(&src, c->batch, &b.n, &cnt, diff_add, &da);
            stop = finish || signalled || learner_stop_signal() || b.n < c->batch;
            if (stop && b.n > 0) {
                cnt.dropped_shutdown += b.n; // a partial batch is not trained on
                b.n = 0;
            }
        }
        bcast_batch(&b, &stop, rank);
        if (stop)
            break;

        // Views, then this rank's shard.
        int n = b.n;
        for (int i = 0; i < n; i++) {
            drl_traj_t *t = &b.tr[i];
            memset(t, 0, sizeof *t);
            t->S = S;
            t->ts = ts;
            t->xs = b.xs + (size_t)i * (S + 1) * D;
            t->blogpf = b.blogpf + (size_t)i * S;
            t->logpb = b.logpb + (size_t)i * S;
            t->r_x0hat = fl ? b.r_x0hat + (size_t)i * S : NULL;
            t->reward = b.reward[i];
            t->label = b.label[i];
            t->group = b.group[i];
        }
        int lo = (int)((int64_t)n * rank / nranks), hi = (int)((int64_t)n * (rank + 1) / nranks);
        int fl_bad = 0;
        if (fl && hi > lo)
            fl_bad = forward_looking(d, &smp, fl, c, &b, ts, lo, hi, x_in, x0, tt, lab);
        int refused = 0;
        for (int i = lo; i < hi; i++)
            if (drl_check_traj(r, &b.tr[i], err, sizeof err) != 0) {
                if (!refused++)
                    fprintf(stderr, "rlx-learner: chain refused: %s\n", err);
            }
        MPI_Allreduce(MPI_IN_PLACE, &refused, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
        if (refused) { // hub-checked chains the policy cannot score: a config mismatch
            if (rank == 0) {
                fprintf(stderr, "rlx-learner: %d chains do not fit the policy: stopping\n",
                        refused);
                cnt.dropped_invalid += n;
            }
            break;
        }
        if (c->diff_objective == DIFF_OBJ_DDPO)
            drl_ddpo_advantages(r, b.tr, n); // every rank, whole batch: same tracker state
        paramset_zero_grad(&d->net->ps);
        if (r->flow)
            paramset_zero_grad(&r->flow->ps);
        drl_stats_t st = {0};
        double denom = (double)n * S;
        float beta = drl_beta(&c->drl, cnt.step);
        if (kl_global) {
            // The leave-one-out baseline and the per-step std of DAG-KL are over the whole
            // batch (its groups may straddle shards): every rank gets all rewards b.
            if (hi > lo)
                drl_kl_rewards(r, b.tr + lo, hi - lo, beta, kl_b + (size_t)lo * S);
            for (int q = 0; q < nranks; q++) {
                int qlo = (int)((int64_t)n * q / nranks),
                    qhi = (int)((int64_t)n * (q + 1) / nranks);
                kl_off[q] = qlo * S;
                kl_cnt[q] = (qhi - qlo) * S;
            }
            MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, kl_b, kl_cnt, kl_off, MPI_FLOAT,
                           MPI_COMM_WORLD);
            drl_kl_advantages(n, S, kl_b, b.group, c->drl.adv_clip, kl_adv, kl_work);
        }
        if (hi > lo) {
            if (c->diff_objective == DIFF_OBJ_DDPO)
                drl_ddpo_loss(r, b.tr + lo, hi - lo, denom, &st);
            else if (c->diff_objective == DIFF_OBJ_DAG)
                drl_dag_loss(r, b.tr + lo, hi - lo, denom, beta, &st);
            else if (kl_global)
                drl_dagkl_loss_adv(r, b.tr + lo, hi - lo, denom, beta, kl_adv + (size_t)lo * S,
                                   &st);
            else
                drl_dagkl_loss(r, b.tr + lo, hi - lo, denom, beta, &st);
        }
        if (nranks > 1) {
            MPI_Allreduce(MPI_IN_PLACE, d->net->ps.g, (int)d->net->ps.n, MPI_FLOAT, MPI_SUM,
                          MPI_COMM_WORLD);
            if (r->flow)
                MPI_Allreduce(MPI_IN_PLACE, r->flow->ps.g, (int)r->flow->ps.n, MPI_FLOAT, MPI_SUM,
                              MPI_COMM_WORLD);
        }
        float gnorm = adamw_step(&d->net->ps, &on);
        float fnorm = r->flow ? adamw_step(&r->flow->ps, &of) : 0.0f;
        // Global statistics: the losses are already over the global denominator; per-
        // transition means are weighted by the shard's share.
        double w = n ? (double)(hi - lo) / n : 0;
        double loc[7] = {st.loss,          st.flow_loss,   st.delta_abs * w, st.ratio_mean * w,
                         st.clip_frac * w, st.adv_abs * w, (double)fl_bad},
               glob[7] = {0};
        MPI_Reduce(loc, glob, 7, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
        cnt.step++;
        cnt.trained += n;
        if (rank != 0)
            continue;

        // Rank 0: publish, log, checkpoint.
        if (c->publish_every > 0 && cnt.step % c->publish_every == 0)
            publish(hub, d, c->out, (uint64_t)cnt.step + 1);
        double rsum = 0;
        for (int i = 0; i < n; i++)
            rsum += b.reward[i];
        char cls[160] = "";
        if (clf) {
            for (int i = 0; i < n; i++)
                memcpy(x0s + (size_t)i * D, b.xs + ((size_t)i * (S + 1) + S) * D,
                       (size_t)D * sizeof(float));
            digits_clf_predict(clf, x0s, n, pred);
            int seen[DIGITS_CLASSES] = {0}, covered = 0, hit = 0, cond = 0;
            for (int i = 0; i < n; i++) {
                if (pred[i] >= 0 && pred[i] < DIGITS_CLASSES && !seen[pred[i]]++)
                    covered++;
                if (b.label[i] != DIFF_NULL_LABEL) {
                    cond++;
                    hit += pred[i] == b.label[i];
                }
            }
            snprintf(cls, sizeof cls, "\"class_coverage\": %.4f, %s%.4f, ",
                     (double)covered / DIGITS_CLASSES,
                     cond ? "\"class_accuracy\": " : "\"class_accuracy_na\": ",
                     cond ? (double)hit / cond : 0.0);
        }
        hub_counters_t hc = learner_hub_totals(hub, &cnt.hub_prev);
        double el = rlx_now() - t0;
        fprintf(metrics,
                "{\"step\": %lld, \"trajectories\": %lld, \"samples\": %lld, \"trained\": %lld, "
                "\"reward_mean\": %.6f, \"diversity\": %.5f, %s\"loss\": %.6f, "
                "\"flow_loss\": %.6f, \"delta_abs\": %.5f, \"ratio_mean\": %.6f, "
                "\"clip_frac\": %.4f, \"adv_abs\": %.4f, \"beta\": %.4f, \"fl_unscored\": %.0f, "
                "\"lag_mean\": %.3f, \"lag_max\": %d, \"dropped_stale\": %lld, "
                "\"dropped_invalid\": %lld, \"samples_per_s\": %.2f, \"grad_norm\": %.4f, "
                "\"flow_grad_norm\": %.4f, \"sampled\": %llu, \"queue_work\": %u, "
                "\"queue_score\": %u, \"queue_learner\": %u, \"actors\": %u, "
                "\"reward_workers\": %u, \"policy_version\": %lld, \"elapsed_s\": %.2f}\n",
                (long long)cnt.step, (long long)cnt.consumed, (long long)cnt.consumed,
                (long long)cnt.trained, rsum / n, diversity(&b), cls, glob[0], glob[1], glob[2],
                glob[3], glob[4], glob[5], beta, glob[6], da.lag_sum / n, da.lag_max,
                (long long)cnt.dropped_stale,
                (long long)(cnt.dropped_invalid + (int64_t)hc.dropped_invalid),
                cnt.consumed / (el > 0 ? el : 1), gnorm, fnorm, (unsigned long long)hc.sampled,
                hc.work_queue, hc.score_queue, hc.learner_queue, hc.actors, hc.reward_workers,
                (long long)cnt.step + 1, el);
        fflush(metrics);
        if (c->ckpt_every > 0 && cnt.step % c->ckpt_every == 0)
            save_checkpoint(d, r, c->out, &cnt, &hc);
        if (cnt.step >= c->steps || (c->max_samples > 0 && cnt.consumed >= c->max_samples))
            finish = 1; // told to the other ranks with the next batch header
    }

    rc = 0;
    if (rank == 0) {
        hub_counters_t hc = learner_finish_hub(hub, &cnt);
        save_checkpoint(d, r, c->out, &cnt, &hc);
        learner_write_summary(metrics, &cnt, &hc, 1, rlx_now() - t0);
    }
cleanup:
    hub_stop(&hub);
    if (zctx)
        zmq_ctx_term(zctx);
    if (metrics)
        fclose(metrics);
    imgscore_destroy(&fl);
    mlp_destroy(&clf);
    drl_destroy(&r);
    diff_destroy(&d);
    free(ts);
    free(b.xs);
    free(b.blogpf);
    free(b.logpb);
    free(b.reward);
    free(b.label);
    free(b.group);
    free(b.r_x0hat);
    free(b.tr);
    free(x_in);
    free(x0);
    free(tt);
    free(lab);
    free(pred);
    free(kl_b);
    free(kl_adv);
    free(kl_work);
    free(kl_cnt);
    free(kl_off);
    free(x0s);
    return rc;
}
