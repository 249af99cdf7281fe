// objective_diffusion.c: DDPO / DAG / DAG-KL behind objective.h (see objective_diffusion.h).
#include "objective_diffusion.h"

#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "diff_traj.h"
#include "digits.h"
#include "image_scorers.h"
#include "objective.h"
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

typedef struct {
    learner_config_t *c;    // the run's config (its hub's diffusion fields completed here)
    int rank, nranks;       // this rank, ranks
    diff_t *d;              // the denoiser (every rank)
    drl_t *r;               // the objective's state and flow net (diffusion_rl.h)
    diff_sampler_t smp;     // how actors sample (eta, guidance, ...)
    int S, D;               // steps, data dimension
    int *ts;                // (S+1) the policy's timesteps
    dbatch_t b;             // the batch
    diff_traj_spec_t spec;  // shape, steps and timesteps (chain checks)
    float *x_in, *x0;       // (DIFF_LEARNER_MAX_BATCH, D) x0_hat input and output
    int *tt, *lab;          // (DIFF_LEARNER_MAX_BATCH) their times and labels
    int *pred;              // (cap) predicted classes
    float *x0s;             // (cap, D) the batch's samples
    int kl_global;          // DAG-KL on several ranks: advantages over the whole batch
    float *kl_b, *kl_adv;   // (cap, S) per-transition rewards and advantages (kl_global)
    float *kl_work;         // (cap) scratch
    int *kl_cnt, *kl_off;   // (nranks) shard sizes and offsets for the all-gather
    imgscore_t *fl;         // the forward-looking term's local scorer, or NULL
    mlp_t *clf;             // the digit classifier (rank 0), or NULL
    adamw_config_t on, of;  // the denoiser's and flow's optimizers
    learner_admit_t *adm;   // rank 0's admission of the current batch (batch_begin)
    double glob[7];         // the step's global statistics
    float beta, fnorm;      // the step's beta and flow gradient norm
} diffobj_t;

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


static void diffusion_defaults(learner_config_t *c, const unsigned char *given) {
    if (!given['B'])
        c->batch = 32;
    if (!given['k'])
        c->hub.samples_per_prompt = 8;
    if (!given['n'])
        c->hub.prompts_per_item = 1;
    if (!given['2'])
        c->opt.beta2 = 0.999f;
    if (c->hub.diff_steps <= 0)
        c->hub.diff_steps = 20;
    if (!(c->hub.diff_eta > 0))
        c->hub.diff_eta = 1.0f;
    if (!given['F'])
        c->hub.max_in_flight = 2 * c->batch;
    if (!given['Q'])
        c->hub.max_learner_queue = 2 * c->batch;
    if (!given['V'])
        c->eval_every = 0;
}

static const char *objective_name(int k) {
    return k == DIFF_OBJ_DDPO ? "ddpo" : k == DIFF_OBJ_DAG ? "dag" : "dagkl";
}

static void diffusion_destroy(void **self_p) {
    diffobj_t *o = *self_p;
    if (!o)
        return;
    imgscore_destroy(&o->fl);
    mlp_destroy(&o->clf);
    drl_destroy(&o->r);
    diff_destroy(&o->d);
    free(o->ts);
    free(o->b.xs);
    free(o->b.blogpf);
    free(o->b.logpb);
    free(o->b.reward);
    free(o->b.label);
    free(o->b.group);
    free(o->b.r_x0hat);
    free(o->b.tr);
    free(o->x_in);
    free(o->x0);
    free(o->tt);
    free(o->lab);
    free(o->pred);
    free(o->kl_b);
    free(o->kl_adv);
    free(o->kl_work);
    free(o->kl_cnt);
    free(o->kl_off);
    free(o->x0s);
    free(o);
    *self_p = NULL;
}

static void *diffusion_create(learner_config_t *c, learner_counts_t *cnt, int *rc) {
    int rank = 0, nranks = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    *rc = 2;
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
        return NULL;
    }
    diff_t *d = diff_load(from, DIFF_LEARNER_MAX_BATCH, err, sizeof err);
    if (!d) {
        if (rank == 0)
            fprintf(stderr, "rlx-learner: %s: %s\n", c->init ? "--init" : "--resume", err);
        return NULL;
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
        return NULL;
    }
    *rc = 1;
    diffobj_t *o = rlx_xcalloc(1, sizeof *o, "objective");
    o->c = c;
    o->rank = rank;
    o->nranks = nranks;
    o->d = d;
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
    drl_t *r = o->r = drl_new(d, &smp, &c->drl, with_flow ? &fcfg : NULL, cap, S, c->seed);
    int *ts = o->ts = rlx_xcalloc((size_t)S + 1, sizeof *ts, "timesteps");
    diff_timesteps(d, S, ts);
    o->b = (dbatch_t){.cap = cap, .S = S, .D = D};
    o->b.xs = rlx_alloc_floats((size_t)cap * (S + 1) * D, "batch states");
    o->b.blogpf = rlx_alloc_floats((size_t)cap * S, "batch logpf");
    o->b.logpb = rlx_alloc_floats((size_t)cap * S, "batch logpb");
    o->b.reward = rlx_alloc_floats((size_t)cap, "batch rewards");
    o->b.label = rlx_xcalloc((size_t)cap, sizeof(int), "batch labels");
    o->b.group = rlx_xcalloc((size_t)cap, sizeof(uint64_t), "batch groups");
    o->b.r_x0hat = rlx_alloc_floats((size_t)cap * S, "forward-looking rewards");
    o->b.tr = rlx_xcalloc((size_t)cap, sizeof(drl_traj_t), "batch views");
    o->x_in = rlx_alloc_floats((size_t)DIFF_LEARNER_MAX_BATCH * D, "x0_hat input");
    o->x0 = rlx_alloc_floats((size_t)DIFF_LEARNER_MAX_BATCH * D, "x0_hat");
    o->tt = rlx_xcalloc(DIFF_LEARNER_MAX_BATCH, sizeof(int), "x0_hat times");
    o->lab = rlx_xcalloc(DIFF_LEARNER_MAX_BATCH, sizeof(int), "x0_hat labels");
    o->pred = rlx_xcalloc((size_t)cap, sizeof(int), "predicted classes");
    o->x0s = rlx_alloc_floats((size_t)cap * D, "batch samples");
    // DAG-KL on several ranks: the whole batch's per-transition rewards and advantages.
    int kl_global = o->kl_global = c->diff_objective == DIFF_OBJ_DAGKL && nranks > 1;
    o->kl_b = kl_global ? rlx_alloc_floats((size_t)cap * S, "DAG-KL rewards") : NULL;
    o->kl_adv = kl_global ? rlx_alloc_floats((size_t)cap * S, "DAG-KL advantages") : NULL;
    o->kl_work = kl_global ? rlx_alloc_floats((size_t)cap, "DAG-KL scratch") : NULL;
    o->kl_cnt = kl_global ? rlx_xcalloc((size_t)nranks, sizeof(int), "shard sizes") : NULL;
    o->kl_off = kl_global ? rlx_xcalloc((size_t)nranks, sizeof(int), "shard offsets") : NULL;
    o->on = o->of = c->opt;
    if (c->flow_lr > 0)
        o->of.lr = c->flow_lr;

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
        o->fl = imgscore_new(fln, c->classifier, err, sizeof err);
        if (!o->fl) {
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
        o->clf = mlp_load(c->classifier, cap, err, sizeof err);
        if (!o->clf) {
            fprintf(stderr, "rlx-learner: --classifier: %s\n", err);
            ok = 0;
        }
    }
    if (ok && rank == 0 && resuming) {
        if (diffobj_resume(d, r, c->out, cnt, err, sizeof err) != 0) {
            fprintf(stderr, "rlx-learner: cannot resume from %s: %s\n", c->out, err);
            ok = 0;
        } else {
            printf("rlx-learner: resumed from %s/learner.ckpt at step %lld\n", c->out,
                   (long long)cnt->step);
            // Work ids start again at 1 in the new hub: a seed of its own for the resumed
            // part, so that its chains do not replay the noise of the first run's.
            c->hub.seed += 0x9e3779b97f4a7c15ull * (uint64_t)cnt->step;
        }
    }
    if (ok && rank == 0) {
        printf("rlx-learner: %d rank(s), diffusion D=%d classes %d (prompts %d), %s, S=%d eta "
               "%g, denoiser %zu parameters, flow %zu, forward-looking %s, batch %d, k %d, lr "
               "%g\n",
               nranks, D, d->cfg.n_classes, c->hub.diff_classes > 0 ? c->hub.diff_classes : 1,
               objective_name(c->diff_objective), S, smp.eta, d->net->ps.n,
               r->flow ? r->flow->ps.n : 0, o->fl ? imgscore_name(o->fl->kind) : "off",
               c->batch, k, o->on.lr);
        fflush(stdout);
    }
    o->smp = smp;
    o->S = S;
    o->D = D;
    o->spec = (diff_traj_spec_t){.nshape = c->hub.diff_shape_n, .steps = S, .ts = ts};
    for (int i = 0; i < o->spec.nshape; i++)
        o->spec.shape[i] = (uint32_t)c->hub.diff_shape[i];
    MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (!ok) {
        void *v = o;
        diffusion_destroy(&v);
        return NULL;
    }
    MPI_Bcast(&resuming, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (resuming) { // every rank steps from rank 0's state (beta's warm-up needs the step)
        diffobj_bcast_net(d->net);
        if (r->flow)
            diffobj_bcast_net(r->flow);
        MPI_Bcast(&cnt->step, 1, MPI_INT64_T, 0, MPI_COMM_WORLD);
    }
    *rc = 0;
    return o;
}

static const int *diffusion_batch_begin(void *self, learner_admit_t *adm) {
    diffobj_t *o = self;
    o->b.n = 0;
    o->adm = adm;
    return &o->b.n;
}

// Adds one TrajectoryBatch's chains to the batch (rank 0).
static void diffusion_add(void *self, const Rlx__Envelope *env) {
    diffobj_t *a = self;
    dbatch_t *b = &a->b;
    learner_counts_t *cnt = a->adm->cnt;
    int n_classes = a->c->hub.diff_classes;
    const Rlx__TrajectoryBatch *tb = env->trajectory_batch;
    for (size_t i = 0; i < tb->n_trajectories; i++) {
        const Rlx__Trajectory *t = tb->trajectories[i];
        cnt->consumed++;
        const Rlx__DiffusionTrajectory *x =
            t->kind_case == RLX__TRAJECTORY__KIND_DIFFUSION ? t->diffusion : NULL;
        int label = n_classes > 0 ? (int)t->prompt_id : DIFF_NULL_LABEL;
        int bad = !x || diff_traj_check(&a->spec, x, label) != NULL || !isfinite(t->reward) ||
                  b->n == b->cap;
        if (bad) {
            cnt->dropped_invalid++;
            continue;
        }
        if (!learner_admit_lag(a->adm, t->policy_version))
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
static void diffusion_bcast(void *self, int *stop) {
    diffobj_t *o = self;
    dbatch_t *b = &o->b;
    int hdr[2] = {b->n, *stop};
    MPI_Bcast(hdr, 2, MPI_INT, 0, MPI_COMM_WORLD);
    if (o->rank != 0) {
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

static int diffusion_batch_n(void *self) {
    return ((diffobj_t *)self)->b.n;
}

// DAG-KL on several ranks: the leave-one-out baseline and the per-step std are over the whole
// batch (its groups may straddle shards): every rank gets all rewards b.
static void kl_global_advantages(diffobj_t *o, int lo, int hi) {
    int n = o->b.n, S = o->S;
    if (hi > lo)
        drl_kl_rewards(o->r, o->b.tr + lo, hi - lo, o->beta, o->kl_b + (size_t)lo * S);
    for (int q = 0; q < o->nranks; q++) {
        int qlo = (int)((int64_t)n * q / o->nranks), qhi = (int)((int64_t)n * (q + 1) / o->nranks);
        o->kl_off[q] = qlo * S;
        o->kl_cnt[q] = (qhi - qlo) * S;
    }
    MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, o->kl_b, o->kl_cnt, o->kl_off, MPI_FLOAT,
                   MPI_COMM_WORLD);
    drl_kl_advantages(n, S, o->kl_b, o->b.group, o->c->drl.adv_clip, o->kl_adv, o->kl_work);
}

static int diffusion_step(void *self, int64_t step, objective_step_t *out) {
    diffobj_t *o = self;
    const learner_config_t *c = o->c;
    dbatch_t *b = &o->b;
    diff_t *d = o->d;
    drl_t *r = o->r;
    int n = b->n, S = o->S, D = o->D;
    char err[512];
    // Views, then this rank's shard.
    for (int i = 0; i < n; i++) {
        drl_traj_t *t = &b->tr[i];
        memset(t, 0, sizeof *t);
        t->S = S;
        t->ts = o->ts;
        t->xs = b->xs + (size_t)i * (S + 1) * D;
        t->blogpf = b->blogpf + (size_t)i * S;
        t->logpb = b->logpb + (size_t)i * S;
        t->r_x0hat = o->fl ? b->r_x0hat + (size_t)i * S : NULL;
        t->reward = b->reward[i];
        t->label = b->label[i];
        t->group = b->group[i];
    }
    int lo = (int)((int64_t)n * o->rank / o->nranks),
        hi = (int)((int64_t)n * (o->rank + 1) / o->nranks);
    int fl_bad = 0;
    if (o->fl && hi > lo)
        fl_bad = forward_looking(d, &o->smp, o->fl, c, b, o->ts, lo, hi, o->x_in, o->x0, o->tt,
                                 o->lab);
    int refused = 0;
    for (int i = lo; i < hi; i++)
        if (drl_check_traj(r, &b->tr[i], err, sizeof err) != 0) {
            if (!refused++)
                fprintf(stderr, "rlx-learner: chain refused: %s\n", err);
        }
    MPI_Allreduce(MPI_IN_PLACE, &refused, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (refused) { // hub-checked chains the policy cannot score: a config mismatch
        if (o->rank == 0)
            fprintf(stderr, "rlx-learner: %d chains do not fit the policy: stopping\n", refused);
        return -1;
    }
    if (c->diff_objective == DIFF_OBJ_DDPO)
        drl_ddpo_advantages(r, b->tr, n); // every rank, whole batch: same tracker state
    paramset_zero_grad(&d->net->ps);
    if (r->flow)
        paramset_zero_grad(&r->flow->ps);
    drl_stats_t st = {0};
    double denom = (double)n * S;
    o->beta = drl_beta(&c->drl, step);
    if (o->kl_global)
        kl_global_advantages(o, lo, hi);
    if (hi > lo) {
        if (c->diff_objective == DIFF_OBJ_DDPO)
            drl_ddpo_loss(r, b->tr + lo, hi - lo, denom, &st);
        else if (c->diff_objective == DIFF_OBJ_DAG)
            drl_dag_loss(r, b->tr + lo, hi - lo, denom, o->beta, &st);
        else if (o->kl_global)
            drl_dagkl_loss_adv(r, b->tr + lo, hi - lo, denom, o->beta,
                               o->kl_adv + (size_t)lo * S, &st);
        else
            drl_dagkl_loss(r, b->tr + lo, hi - lo, denom, o->beta, &st);
    }
    learner_poison_grad(&d->net->ps, st.loss + st.flow_loss);
    if (o->nranks > 1) {
        learner_allreduce(&d->net->ps);
        if (r->flow)
            learner_allreduce(&r->flow->ps);
    }
    float norms[2] = {adamw_grad_norm(&d->net->ps), r->flow ? adamw_grad_norm(&r->flow->ps) : 0};
    out->updated = learner_norms_finite(norms, 2);
    if (out->updated) {
        norms[0] = adamw_step(&d->net->ps, &o->on);
        norms[1] = r->flow ? adamw_step(&r->flow->ps, &o->of) : 0.0f;
    }
    // Global statistics: the losses are already over the global denominator; per-
    // transition means are weighted by the shard's share.
    double w = n ? (double)(hi - lo) / n : 0;
    double loc[7] = {st.loss,          st.flow_loss,   st.delta_abs * w, st.ratio_mean * w,
                     st.clip_frac * w, st.adv_abs * w, (double)fl_bad};
    memset(o->glob, 0, sizeof o->glob);
    MPI_Reduce(loc, o->glob, 7, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
    out->loss = o->glob[0];
    out->grad_norm = norms[0];
    o->fnorm = norms[1];
    return 0;
}

static int diffusion_finite(void *self) {
    diffobj_t *o = self;
    return learner_params_finite(&o->d->net->ps) &&
           (!o->r->flow || learner_params_finite(&o->r->flow->ps));
}

static void *diffusion_weights(void *self, size_t *len, char *err, size_t errlen) {
    return diff_weights_blob(((diffobj_t *)self)->d, len, err, errlen);
}

static int diffusion_save(void *self, const learner_counts_t *cnt) {
    diffobj_t *o = self;
    return diffobj_save(o->d, o->r, o->c->out, cnt);
}

// Class coverage and accuracy of the batch's samples under the digit classifier.
static void class_fields(diffobj_t *o, json_object *line) {
    const dbatch_t *b = &o->b;
    int n = b->n, S = o->S, D = o->D;
    for (int i = 0; i < n; i++)
        memcpy(o->x0s + (size_t)i * D, b->xs + ((size_t)i * (S + 1) + S) * D,
               (size_t)D * sizeof(float));
    digits_clf_predict(o->clf, o->x0s, n, o->pred);
    int seen[DIGITS_CLASSES] = {0}, covered = 0, hit = 0, cond = 0;
    for (int i = 0; i < n; i++) {
        if (o->pred[i] >= 0 && o->pred[i] < DIGITS_CLASSES && !seen[o->pred[i]]++)
            covered++;
        if (b->label[i] != DIFF_NULL_LABEL) {
            cond++;
            hit += o->pred[i] == b->label[i];
        }
    }
    learner_json_num(line, "class_coverage", (double)covered / DIGITS_CLASSES, "%.4f");
    learner_json_num(line, cond ? "class_accuracy" : "class_accuracy_na",
                     cond ? (double)hit / cond : 0.0, "%.4f");
}

static void diffusion_metrics(void *self, const learner_counts_t *cnt, const objective_step_t *st,
                              json_object *line) {
    (void)cnt;
    diffobj_t *o = self;
    int n = o->b.n;
    double rsum = 0;
    for (int i = 0; i < n; i++)
        rsum += o->b.reward[i];
    learner_json_num(line, "reward_mean", rsum / n, "%.6f");
    learner_json_num(line, "diversity", diversity(&o->b), "%.5f");
    if (o->clf)
        class_fields(o, line);
    learner_json_num(line, "loss", st->loss, "%.6f");
    learner_json_num(line, "flow_loss", o->glob[1], "%.6f");
    learner_json_num(line, "delta_abs", o->glob[2], "%.5f");
    learner_json_num(line, "ratio_mean", o->glob[3], "%.6f");
    learner_json_num(line, "clip_frac", o->glob[4], "%.4f");
    learner_json_num(line, "adv_abs", o->glob[5], "%.4f");
    learner_json_num(line, "beta", o->beta, "%.4f");
    learner_json_num(line, "fl_unscored", o->glob[6], "%.0f");
    learner_json_num(line, "grad_norm", st->grad_norm, "%.4f");
    learner_json_num(line, "flow_grad_norm", o->fnorm, "%.4f");
}

const objective_ops_t objective_diffusion = {
    .name = "dagkl", // also ddpo, dag (learner_config_t.diff_objective)
    .kind = KIND_DIFFUSION,
    .defaults = diffusion_defaults,
    .create = diffusion_create,
    .batch_begin = diffusion_batch_begin,
    .add = diffusion_add,
    .bcast = diffusion_bcast,
    .batch_n = diffusion_batch_n,
    .step = diffusion_step,
    .finite = diffusion_finite,
    .weights = diffusion_weights,
    .save = diffusion_save,
    .metrics = diffusion_metrics,
    .evaluate = NULL,
    .destroy = diffusion_destroy,
};
