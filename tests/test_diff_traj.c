// test_diff_traj.c: the diffusion pieces of the distributed system without processes: the
// actor's sampled chains (diffusion_actor.h) survive the wire (diff_traj.h, wire.h) bit for bit
// and pass the hub's and the learner's checks (hub_diffusion.h, diff_traj_check with the
// policy's schedule); malformed chains are refused with a reason; the ScoreItem carries x_0;
// the published weights blob (diff_weights_blob) holds parameters only and installs; DAG-KL
// sharded as the learner shards it over ranks gives the whole batch's gradient.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt.h"
#include "diff_traj.h"
#include "diffusion.h"
#include "diffusion_actor.h"
#include "diffusion_rl.h"
#include "hub_diffusion.h"
#include "testutil.h"
#include "wire.h"

#define T_TRAIN 50 // train steps of the test model
#define S_STEPS 5  // sampling steps
#define CLASSES 3

// A small class-conditional model of 2x2 samples.
static diff_t *small_model(uint64_t seed) {
    diff_config_t c = diff_defaults();
    c.x_dim = 4;
    c.n_classes = CLASSES;
    c.T = T_TRAIN;
    mlp_config_t nc = {.hidden = 16, .n_blocks = 1, .time_dim = 8};
    return diff_new(&c, &nc, 64, seed);
}

static hub_config_t hub_config(void) {
    hub_config_t hc = hub_defaults();
    hc.kind = KIND_DIFFUSION;
    hc.diff_steps = S_STEPS;
    hc.diff_shape_n = 2;
    hc.diff_shape[0] = hc.diff_shape[1] = 2;
    hc.diff_classes = CLASSES;
    hc.diff_eta = 1.0f;
    return hc;
}

// One WorkItem of `np` prompts (classes 0..np-1) of k chains each; storage is the caller's.
typedef struct {
    Rlx__Prompt pr[HUB_DIFF_MAX_PROMPTS];
    Rlx__Prompt *prp[HUB_DIFF_MAX_PROMPTS];
    Rlx__WorkItem it;
    Rlx__DiffusionSpec spec;
    int32_t labels[HUB_DIFF_MAX_PROMPTS];
    uint32_t shape[4];
} work_t;

static void make_work(work_t *w, const hub_config_t *hc, int np, int k) {
    rlx__work_item__init(&w->it);
    for (int i = 0; i < np; i++) {
        rlx__prompt__init(&w->pr[i]);
        w->pr[i].prompt_id = (uint64_t)(i % CLASSES);
        w->prp[i] = &w->pr[i];
    }
    w->it.work_id = 11;
    w->it.n_prompts = (size_t)np;
    w->it.prompts = w->prp;
    w->it.samples_per_prompt = (uint32_t)k;
    hub_diff_work(hc, &w->it, &w->spec, w->labels, w->shape);
}

// The actor's keep-alive hook: counts calls.
static void count_tick(void *arg) {
    ++*(int *)arg;
}

// Sampled chains: through the wire unchanged, accepted by hub and learner, equal to a direct
// diff_sample with the same streams; the ScoreItem's payload is x_0.
static void test_roundtrip(void) {
    diff_t *d = small_model(5);
    hub_config_t hc = hub_config();
    work_t w;
    make_work(&w, &hc, 2, 3);
    const char *why = NULL;
    int ticks = 0;
    diff_batch_t *b = diff_actor_sample(d, &w.it, 7, 100, 4, 99, count_tick, &ticks, &why);
    TU_CHECK(b != NULL, "actor refused a valid item: %s", why ? why : "?");
    TU_CHECK(!b || ticks == 1, "%d keep-alive ticks for one chunk, want 1", ticks);
    if (!b) {
        diff_destroy(&d);
        return;
    }
    TU_CHECK(diff_batch_count(b) == 6 && diff_batch_steps(b) == 6 * S_STEPS, "%d chains",
             diff_batch_count(b));
    wire_t *wr = wire_new("test", 0, "run");
    uint8_t *buf = NULL;
    size_t len = 0;
    wire_error_t we;
    TU_CHECK(wire_encode(wr, diff_batch_envelope(b), &buf, &len, &we) == WIRE_OK, "encode");
    Rlx__Envelope *env = NULL;
    TU_CHECK(buf && wire_decode(wr, buf, len, &env, &we) == WIRE_OK, "decode");
    int ts[S_STEPS + 1];
    diff_timesteps(d, S_STEPS, ts);
    diff_traj_spec_t learner_spec = {.nshape = 2, .shape = {2, 2}, .steps = S_STEPS, .ts = ts};
    // The reference: the same rows sampled directly (chain i: stream (99, 100 + i)).
    float xs[(S_STEPS + 1) * 6 * 4], lf[S_STEPS * 6], lb[S_STEPS * 6];
    int lab[6] = {0, 0, 0, 1, 1, 1};
    diff_sampler_t smp = diff_sampler_defaults();
    diff_sample(d, xs, lf, lb, NULL, lab, 6, S_STEPS, &smp, 99, 100);
    const Rlx__TrajectoryBatch *tb = env ? env->trajectory_batch : NULL;
    int bad = 0, differ = 0;
    for (size_t i = 0; tb && i < tb->n_trajectories; i++) {
        const Rlx__Trajectory *t = tb->trajectories[i];
        const Rlx__DiffusionTrajectory *x = t->diffusion;
        const char *w1 = hub_diff_check(&hc, t, t->prompt_id);
        const char *w2 = x ? diff_traj_check(&learner_spec, x, (int)t->prompt_id) : "none";
        if ((w1 || w2) && bad++ == 0)
            fprintf(stderr, "chain %zu refused: %s\n", i, w1 ? w1 : w2);
        if (w1 || w2)
            continue;
        bad += t->id->actor_id != 7 || t->id->seq != 100 + i || t->policy_version != 4 ||
               t->group_index != i % 3 || t->group_size != 3 || t->prompt_id != i / 3 ||
               t->work_id != 11;
        for (int s = 0; s <= S_STEPS; s++) {
            differ += memcmp(x->states + s * 4, xs + ((size_t)s * 6 + i) * 4, 4 * sizeof(float));
            differ += x->timesteps[s] != (uint32_t)ts[s];
        }
        for (int s = 0; s < S_STEPS; s++)
            differ += x->logpf[s] != lf[s * 6 + i] || x->logpb[s] != lb[s * 6 + i];
        Rlx__ScoreItem item;
        hub_diff_item(t, "toy", "1", &item);
        differ += item.n_payload != 4 || item.n_payload_shape != 2 || item.payload_shape[0] != 2 ||
                  memcmp(item.payload, xs + ((size_t)S_STEPS * 6 + i) * 4, 4 * sizeof(float)) ||
                  item.kind != RLX__TRAJECTORY_KIND__TRAJECTORY_KIND_DIFFUSION;
    }
    TU_CHECK(tb && tb->n_trajectories == 6 && bad == 0, "%d of the chains refused or mislabeled",
             bad);
    TU_CHECK(differ == 0, "%d values differ after the wire from a direct diff_sample", differ);
    // The schedule of another step count is refused by the learner (the hub cannot tell).
    int ts4[S_STEPS + 1];
    diff_timesteps(d, S_STEPS - 1, ts4);
    ts4[S_STEPS] = 0;
    diff_traj_spec_t other = learner_spec;
    other.ts = ts4;
    TU_CHECK(tb && diff_traj_check(&other, tb->trajectories[0]->diffusion, 0) != NULL,
             "a chain off the policy's schedule accepted");
    wire_free(&env);
    free(buf);
    wire_destroy(&wr);
    diff_batch_destroy(&b);

    // The actor refuses items that do not fit the policy.
    work_t w2;
    make_work(&w2, &hc, 1, 1);
    w2.spec.steps = T_TRAIN; // > T-1
    TU_CHECK(!diff_actor_sample(d, &w2.it, 7, 0, 1, 1, NULL, NULL, &why), "steps T accepted");
    make_work(&w2, &hc, 1, 1);
    w2.shape[1] = 3; // 2x3 != D
    TU_CHECK(!diff_actor_sample(d, &w2.it, 7, 0, 1, 1, NULL, NULL, &why), "shape 2x3 accepted");
    make_work(&w2, &hc, 1, 1);
    w2.labels[0] = CLASSES; // no such class
    TU_CHECK(!diff_actor_sample(d, &w2.it, 7, 0, 1, 1, NULL, NULL, &why), "class %d accepted",
             CLASSES);
    make_work(&w2, &hc, 1, 1);
    w2.it.samples_per_prompt = 1u << 17; // too many chains
    TU_CHECK(!diff_actor_sample(d, &w2.it, 7, 0, 1, 1, NULL, NULL, &why), "2^17 chains accepted");
    diff_destroy(&d);
}

// One valid chain (S=2 of 2x2, class 1) and faults of it, each refused with a reason.
static void test_faults(void) {
    diff_traj_spec_t sp = {.nshape = 2, .shape = {2, 2}, .steps = 2};
    int sched[3] = {9, 4, 0};
    uint32_t shape[2] = {2, 2}, ts[3] = {9, 4, 0};
    float st[12], lpf[2] = {-1, -2}, lpb[2] = {-0.5f, -0.25f};
    for (int i = 0; i < 12; i++)
        st[i] = 0.1f * (float)i - 0.5f;
    Rlx__DiffusionTrajectory ok;
    diff_traj_fill(&ok, shape, 2, 2, st, lpf, lpb, ts, 1);
    TU_CHECK(diff_traj_check(&sp, &ok, 1) == NULL, "valid chain refused: %s",
             diff_traj_check(&sp, &ok, 1));
    sp.ts = sched;
    TU_CHECK(diff_traj_check(&sp, &ok, 1) == NULL, "valid chain refused by the schedule: %s",
             diff_traj_check(&sp, &ok, 1));
    TU_CHECK(diff_traj_dim(&sp) == 4, "dim %zu", diff_traj_dim(&sp));
    TU_CHECK(diff_traj_check(&sp, NULL, 1) != NULL, "no chain accepted");
    int refused = 0, n = 0;
#define FAULT(label, stmt)                                                                         \
    do {                                                                                           \
        Rlx__DiffusionTrajectory x = ok;                                                           \
        float s2[12], f2[2], b2[2];                                                                \
        uint32_t t2[3], sh2[2];                                                                    \
        memcpy(s2, st, sizeof s2);                                                                 \
        memcpy(f2, lpf, sizeof f2);                                                                \
        memcpy(b2, lpb, sizeof b2);                                                                \
        memcpy(t2, ts, sizeof t2);                                                                 \
        memcpy(sh2, shape, sizeof sh2);                                                            \
        x.states = s2;                                                                             \
        x.logpf = f2;                                                                              \
        x.logpb = b2;                                                                              \
        x.timesteps = t2;                                                                          \
        x.shape = sh2;                                                                             \
        stmt;                                                                                      \
        n++;                                                                                       \
        const char *why = diff_traj_check(&sp, &x, label);                                         \
        if (why && *why)                                                                           \
            refused++;                                                                             \
        else                                                                                       \
            fprintf(stderr, "accepted: %s\n", #stmt);                                              \
    } while (0)
    FAULT(1, x.n_shape = 1);          // shape [2]
    FAULT(1, sh2[1] = 3);             // shape [2, 3]
    FAULT(1, sh2[0] = 4; sh2[1] = 1); // same dim, other shape
    FAULT(1, x.steps = 3);            // not the work item's S
    FAULT(1, x.steps = 0xffffffffu);  // S + 1 would wrap in 32 bits
    FAULT(1, x.n_states = 8);         // one state short
    FAULT(1, x.n_states = 1u << 30);  // oversized (counts are checked first)
    FAULT(1, x.n_logpf = 1);
    FAULT(1, x.n_logpf = 1000);
    FAULT(1, x.n_logpb = 3);
    FAULT(1, x.n_timesteps = 2);
    FAULT(1, x.n_timesteps = 4);
    FAULT(1, t2[1] = 9);  // not strictly decreasing
    FAULT(1, t2[0] = 3);  // increasing
    FAULT(1, t2[2] = 1);  // does not end at 0
    FAULT(1, t2[1] = 5);  // decreasing to 0, off the policy's schedule
    FAULT(1, t2[0] = 10); // ditto at the start
    FAULT(1, s2[5] = NAN);
    FAULT(1, s2[11] = INFINITY); // the sample x_0 itself
    FAULT(1, s2[0] = -INFINITY);
    FAULT(1, f2[1] = NAN);
    FAULT(1, f2[0] = INFINITY);
    FAULT(1, b2[1] = -INFINITY);
    FAULT(0, (void)0);  // the prompt's class is 0
    FAULT(-1, (void)0); // an unconditional prompt
    FAULT(1, x.class_label = 2);
    FAULT(1, x.class_label = -1);
    FAULT(1, f2[0] = -1e30f); // finite, but no Gaussian step of a 4-dim sample has that density
    FAULT(1, b2[1] = 1e30f);
#undef FAULT
    TU_CHECK(refused == n, "%d of %d malformed chains accepted", n - refused, n);

    // The hub's view: kind, class against the prompt, unconditional runs.
    hub_config_t hc = hub_config();
    hc.diff_steps = 2;
    Rlx__Trajectory t = RLX__TRAJECTORY__INIT;
    TU_CHECK(hub_diff_check(&hc, &t, 1) != NULL, "a trajectory without a chain accepted");
    t.kind_case = RLX__TRAJECTORY__KIND_DIFFUSION;
    TU_CHECK(hub_diff_check(&hc, &t, 1) != NULL, "a diffusion case without a chain accepted");
    t.diffusion = &ok;
    TU_CHECK(hub_diff_check(&hc, &t, 1) == NULL, "hub refused a valid chain: %s",
             hub_diff_check(&hc, &t, 1));
    TU_CHECK(hub_diff_check(&hc, &t, 2) != NULL, "chain of class 1 accepted for prompt 2");
    hc.diff_steps = 3;
    TU_CHECK(hub_diff_check(&hc, &t, 1) != NULL, "2 steps accepted for 3");
    hc.diff_steps = 2;
    hc.diff_classes = 0; // unconditional: every chain must say -1
    TU_CHECK(hub_diff_check(&hc, &t, 0) != NULL, "a labelled chain accepted unconditionally");
    ok.class_label = -1;
    TU_CHECK(hub_diff_check(&hc, &t, 0) == NULL, "unconditional chain refused: %s",
             hub_diff_check(&hc, &t, 0));
    TU_CHECK(hub_diff_prompts(&hc) == 1, "unconditional prompts");
    hc.diff_classes = CLASSES;
    TU_CHECK(hub_diff_prompts(&hc) == CLASSES, "class prompts");
    char *target = hub_diff_prompt_target(&hc, 2);
    TU_CHECK(target && !strcmp(target, "2"), "target of prompt 2: %s", target ? target : "");
    free(target);
}

// The weights blob: parameters without AdamW moments, about a third of the learner's
// checkpoint; the actor installs it with the same parameters.
static void test_weights(void) {
    diff_t *d = small_model(9);
    for (size_t i = 0; i < d->net->ps.n; i++) { // optimizer state that must not travel
        d->net->ps.m[i] = 0.5f;
        d->net->ps.v[i] = 0.25f;
    }
    d->net->ps.step = 17;
    char err[256], dir[] = "/tmp/rlx-test-diff-XXXXXX", path[300];
    TU_CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    size_t len = 0, full = 0;
    void *blob = diff_weights_blob(d, &len, err, sizeof err);
    TU_CHECK(blob != NULL, "blob: %s", err);
    snprintf(path, sizeof path, "%s/full.ckpt", dir);
    TU_CHECK(diff_save(d, path, err, sizeof err) == 0, "diff_save: %s", err);
    free(tu_read_file(path, &full));
    unlink(path);
    rmdir(dir);
    size_t params = d->net->ps.n * sizeof(float);
    printf("weights blob %zu bytes, full checkpoint %zu, parameters %zu\n", len, full, params);
    TU_CHECK(len > params && len < params + 4096 && full > 3 * params,
             "blob %zu bytes for %zu bytes of parameters (full checkpoint %zu)", len, params, full);
    ckpt_t *ck = blob ? ckpt_parse(blob, len, err, sizeof err) : NULL;
    TU_CHECK(ck != NULL, "parse: %s", err);
    uint64_t nb = 0;
    TU_CHECK(ck && diff_is_ckpt(ck) && ckpt_section(ck, "params", &nb) && nb == params &&
                 !ckpt_section(ck, "adam_m", NULL) && !ckpt_section(ck, "adam_v", NULL),
             "blob sections: params %llu bytes, adam moments %s", (unsigned long long)nb,
             ck && ckpt_section(ck, "adam_m", NULL) ? "present" : "absent");
    diff_t *q = NULL;
    TU_CHECK(ck && diff_actor_install(&q, ck, err, sizeof err) == 0, "install: %s", err);
    TU_CHECK(q && q->net->ps.n == d->net->ps.n && !memcmp(q->net->ps.w, d->net->ps.w, params) &&
                 q->cfg.n_classes == CLASSES && q->cfg.T == T_TRAIN,
             "installed weights differ");
    TU_CHECK(d->net->ps.m[0] == 0.5f && d->net->ps.step == 17, "the learner's state changed");
    // A truncated blob is refused whole.
    TU_CHECK(!ckpt_parse(blob, len / 2, err, sizeof err), "a truncated blob parsed");
    ckpt_destroy(&ck);
    free(blob);
    diff_destroy(&q);
    diff_destroy(&d);
}

// Largest |a - b| / (atol + rtol |b|) over n entries.
static double worst(const float *a, const float *b, size_t n, double atol, double rtol) {
    double w = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]) / (atol + rtol * fabs((double)b[i]));
        w = e > w ? e : w;
    }
    return w;
}

// DAG-KL over shards [0, 3) and [3, 8) of 8 chains in 4 groups of 2 (a group straddles the
// cut), as the learner runs it on 2 ranks (drl_kl_rewards, gathered, drl_kl_advantages over
// the whole batch, drl_dagkl_loss_adv), sums to the gradients of drl_dagkl_loss on the whole
// batch; each shard's own baseline and std (the former learner) do not.
static void test_dagkl_shards(void) {
    enum { N = 8, CUT = 3 };
    diff_t *d = small_model(3);
    diff_sampler_t smp = diff_sampler_defaults();
    drl_config_t rc = drl_defaults();
    rc.clip_eps = 0.2f; // ratios are 1 here: no term is clipped either way
    mlp_config_t fc = {.hidden = 16, .n_blocks = 1, .time_dim = 8};
    drl_t *r = drl_new(d, &smp, &rc, &fc, N, S_STEPS, 4);
    float xs[(S_STEPS + 1) * N * 4], lf[S_STEPS * N], lb[S_STEPS * N];
    float cxs[N][(S_STEPS + 1) * 4], clf[N][S_STEPS], clb[N][S_STEPS], rx[N][S_STEPS];
    int lab[N], ts[S_STEPS + 1];
    for (int i = 0; i < N; i++)
        lab[i] = (i / 2) % CLASSES;
    diff_sample(d, xs, lf, lb, ts, lab, N, S_STEPS, &smp, 5, 0);
    drl_traj_t tr[N];
    for (int i = 0; i < N; i++) {
        for (int s = 0; s <= S_STEPS; s++)
            memcpy(cxs[i] + s * 4, xs + ((size_t)s * N + i) * 4, 4 * sizeof(float));
        for (int s = 0; s < S_STEPS; s++) {
            clf[i][s] = lf[s * N + i];
            clb[i][s] = lb[s * N + i];
            rx[i][s] = 0.1f * (float)((i * 7 + s * 3) % 11) - 0.5f;
        }
        tr[i] = (drl_traj_t){.S = S_STEPS,
                             .ts = ts,
                             .xs = cxs[i],
                             .blogpf = clf[i],
                             .logpb = clb[i],
                             .r_x0hat = rx[i],
                             .reward = (float)(i % 5) * 0.3f - 0.6f,
                             .label = lab[i],
                             .group = (uint64_t)(i / 2)};
    }
    size_t nd = d->net->ps.n, nf = r->flow->ps.n;
    float *gd = malloc(nd * sizeof *gd), *gf = malloc(nf * sizeof *gf);
    double denom = (double)N * S_STEPS;
    float beta = 2.0f;
    drl_stats_t st;
    paramset_zero_grad(&d->net->ps);
    paramset_zero_grad(&r->flow->ps);
    drl_dagkl_loss(r, tr, N, denom, beta, &st);
    memcpy(gd, d->net->ps.g, nd * sizeof *gd);
    memcpy(gf, r->flow->ps.g, nf * sizeof *gf);
    double whole_loss = st.loss;

    float b[N * S_STEPS], adv[N * S_STEPS], work[N];
    uint64_t groups[N];
    for (int i = 0; i < N; i++)
        groups[i] = tr[i].group;
    drl_kl_rewards(r, tr, CUT, beta, b);
    drl_kl_rewards(r, tr + CUT, N - CUT, beta, b + CUT * S_STEPS);
    drl_kl_advantages(N, S_STEPS, b, groups, rc.adv_clip, adv, work);
    paramset_zero_grad(&d->net->ps);
    paramset_zero_grad(&r->flow->ps);
    drl_dagkl_loss_adv(r, tr, CUT, denom, beta, adv, &st);
    double shard_loss = st.loss;
    drl_dagkl_loss_adv(r, tr + CUT, N - CUT, denom, beta, adv + CUT * S_STEPS, &st);
    shard_loss += st.loss;
    double wd = worst(d->net->ps.g, gd, nd, 1e-6, 1e-4),
           wf = worst(r->flow->ps.g, gf, nf, 1e-6, 1e-4);
    printf("DAG-KL sharded as 2 ranks: worst denoiser gradient %.3g, flow %.3g (of tolerance); "
           "loss %.6g vs %.6g\n",
           wd, wf, shard_loss, whole_loss);
    TU_CHECK(wd <= 1 && wf <= 1 && fabs(shard_loss - whole_loss) <= 1e-5 + 1e-4 * fabs(whole_loss),
             "sharded DAG-KL differs from the whole batch: denoiser %.3g, flow %.3g, loss %g vs %g",
             wd, wf, shard_loss, whole_loss);
    // The shards' own advantages: the denoiser gradient differs (what -np 2 used to do).
    paramset_zero_grad(&d->net->ps);
    paramset_zero_grad(&r->flow->ps);
    drl_dagkl_loss(r, tr, CUT, denom, beta, &st);
    drl_dagkl_loss(r, tr + CUT, N - CUT, denom, beta, &st);
    double wl = worst(d->net->ps.g, gd, nd, 1e-6, 1e-4);
    TU_CHECK(wl > 10, "per-shard advantages match the whole batch's (%.3g): the test is blind", wl);
    free(gd);
    free(gf);
    drl_destroy(&r);
    diff_destroy(&d);
}

int main(void) {
    test_roundtrip();
    test_faults();
    test_weights();
    test_dagkl_shards();
    return tu_finish("test_diff_traj");
}
