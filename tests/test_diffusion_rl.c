// test_diffusion_rl.c: the diffusion RL objectives (learner/diffusion_rl.c) and the image
// scorers (common/score/image_scorers.c).
//   the per-prompt reward tracker against a hand computation (buffer wrap, min_count, eviction);
//   the detailed-balance and PPO math and the DAG-KL advantages against finite differences and
//   hand values; end to end, the gradients of the DDPO (score function, PPO), DAG and DAG-KL
//   losses w.r.t. denoiser and flow parameters against finite differences (with and without
//   classifier-free guidance); the DDPO ratio is 1 at the behaviour policy; trajectory checks;
//   the scorers (toy, ink, symmetry, digit classifier from a checkpoint, errors); and a short
//   single-process run on the 8-Gaussians toy: a pretrained DDPM fine-tuned by DDPO and by
//   DAG-KL on the same number of trajectories must both raise the mean toy reward clearly.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "diffusion.h"
#include "diffusion_rl.h"
#include "digits.h"
#include "image_scorers.h"
#include "layers.h"
#include "rng.h"
#include "testutil.h"
#include "util.h"

static int near(double a, double b, double tol) {
    return fabs(a - b) <= tol * (1.0 + fabs(b));
}

// ---- the tracker -----------------------------------------------------------------------------

static double pop_std(const double *v, int n) {
    double m = 0, s = 0;
    for (int i = 0; i < n; i++)
        m += v[i] / n;
    for (int i = 0; i < n; i++)
        s += (v[i] - m) * (v[i] - m) / n;
    return sqrt(s);
}

static void test_tracker(void) {
    drl_tracker_t *tr = drl_tracker_new(4, 3, 2);
    float adv[4];
    // Batch 1: both prompts below min_count -> the batch's mean and std.
    uint64_t k1[3] = {1, 1, 2};
    float r1[3] = {1, 2, 10};
    drl_tracker_update(tr, k1, r1, 3, adv);
    double all1[3] = {1, 2, 10}, m1 = 13.0 / 3, s1 = pop_std(all1, 3) + 1e-6;
    int ok = 1;
    for (int i = 0; i < 3; i++)
        ok &= near(adv[i], (r1[i] - m1) / s1, 1e-5);
    TU_CHECK(ok, "tracker batch 1: %g %g %g", adv[0], adv[1], adv[2]);
    // Batch 2: prompt 1's ring (4) holds 2,3,4,5 after 1,2,3,4,5 -> its own statistics.
    uint64_t k2[3] = {1, 1, 1};
    float r2[3] = {3, 4, 5};
    drl_tracker_update(tr, k2, r2, 3, adv);
    double ring[4] = {2, 3, 4, 5}, s2 = pop_std(ring, 4) + 1e-6;
    ok = 1;
    for (int i = 0; i < 3; i++)
        ok &= near(adv[i], (r2[i] - 3.5) / s2, 1e-5);
    TU_CHECK(ok, "tracker batch 2 (ring wrapped): %g %g %g", adv[0], adv[1], adv[2]);
    // Batch 3: prompt 3 evicts prompt 2 (least recently seen; 2 slots); prompt 1 keeps its ring.
    uint64_t k3[2] = {3, 1};
    float r3[2] = {0, 6};
    drl_tracker_update(tr, k3, r3, 2, adv);
    double ring3[4] = {3, 4, 5, 6}, s3 = pop_std(ring3, 4) + 1e-6;
    double all3[2] = {0, 6}, s3b = pop_std(all3, 2) + 1e-6;
    TU_CHECK(near(adv[0], (0 - 3.0) / s3b, 1e-5) && near(adv[1], (6 - 4.5) / s3, 1e-5),
             "tracker batch 3: %g %g", adv[0], adv[1]);
    int has2 = 0;
    for (int s = 0; s < tr->max_keys; s++)
        has2 |= tr->used[s] && tr->key[s] == 2;
    TU_CHECK(!has2, "prompt 2 evicted");
    drl_tracker_destroy(&tr);
    TU_CHECK(tr == NULL, "drl_tracker_destroy nulls the pointer");
    drl_tracker_destroy(&tr);
}

// ---- the math ----------------------------------------------------------------------------------

static void test_math(void) {
    enum { n = 3, S = 4 };
    rng_t r;
    rng_seed(&r, 17);
    float logF[n * (S + 1)], lpf[n * S], lpb[n * S], delta[n * S], dF[n * (S + 1)], dpf[n * S];
    for (int i = 0; i < n * (S + 1); i++)
        logF[i] = rng_normal(&r);
    for (int i = 0; i < n * S; i++) {
        lpf[i] = rng_normal(&r);
        lpb[i] = rng_normal(&r);
    }
    double denom = 7.0;
    drl_db_math(n, S, logF, lpf, lpb, denom, delta, dF, dpf);
    float fdF[n * (S + 1)], fdpf[n * S], scratch[64]; // scratch: dlogpf of up to 64 terms
    double h = 1e-3;
    for (int i = 0; i < n * (S + 1); i++) {
        float v = logF[i];
        logF[i] = (float)(v + h);
        double lp = drl_db_math(n, S, logF, lpf, lpb, denom, scratch, NULL, NULL);
        logF[i] = (float)(v - h);
        double lm = drl_db_math(n, S, logF, lpf, lpb, denom, scratch, NULL, NULL);
        logF[i] = v;
        fdF[i] = (float)((lp - lm) / (2 * h));
    }
    for (int i = 0; i < n * S; i++) {
        float v = lpf[i];
        lpf[i] = (float)(v + h);
        double lp = drl_db_math(n, S, logF, lpf, lpb, denom, scratch, NULL, NULL);
        lpf[i] = (float)(v - h);
        double lm = drl_db_math(n, S, logF, lpf, lpb, denom, scratch, NULL, NULL);
        lpf[i] = v;
        fdpf[i] = (float)((lp - lm) / (2 * h));
    }
    tu_close("db dL/dlogF vs fd", dF, fdF, n * (S + 1), 1e-3f, 1e-3f);
    tu_close("db dL/dlogpf vs fd", dpf, fdpf, n * S, 1e-3f, 1e-3f);
    float want = logF[S + 1 + 2] + lpf[S + 2] - lpb[S + 2] - logF[S + 1 + 3];
    TU_CHECK(near(delta[S + 2], want, 1e-6), "delta(1,2) = %g, want %g", delta[S + 2], want);

    // PPO: ratios spread over [0.6, 1.5] with clip 0.2, so both branches occur.
    enum { M = 40 };
    float A[M], lp[M], blp[M], g[M], fd[M];
    for (int q = 0; q < M; q++) {
        A[q] = rng_normal(&r);
        blp[q] = rng_normal(&r);
        lp[q] = blp[q] + logf(0.6f + 0.9f * q / (M - 1)) + 0.003f; // off the clip edges
    }
    int clipped;
    double rs;
    drl_ppo_math(M, A, lp, blp, 0.2f, 3.0, g, &clipped, &rs);
    for (int q = 0; q < M; q++) {
        float v = lp[q];
        lp[q] = (float)(v + h);
        double a = drl_ppo_math(M, A, lp, blp, 0.2f, 3.0, scratch, NULL, NULL);
        lp[q] = (float)(v - h);
        double b = drl_ppo_math(M, A, lp, blp, 0.2f, 3.0, scratch, NULL, NULL);
        lp[q] = v;
        fd[q] = (float)((a - b) / (2 * h));
    }
    tu_close("ppo dL/dlogpf vs fd", g, fd, M, 1e-4f, 1e-3f);
    TU_CHECK(clipped > 5 && clipped < M - 5, "some clipped, some not: %d of %d", clipped, M);
    // At the behaviour policy: ratio 1 and the score-function gradient -A/denom.
    drl_ppo_math(M, A, blp, blp, 0.2f, 3.0, g, &clipped, &rs);
    for (int q = 0; q < M; q++)
        fd[q] = -A[q] / 3.0f;
    tu_close("ppo at behaviour = score function", g, fd, M, 1e-7f, 1e-6f);
    TU_CHECK(clipped == 0 && near(rs / M, 1.0, 1e-7), "ratio 1 at behaviour: %g", rs / M);

    // DAG-KL advantages by hand: groups {0,1} {2,3}, LOO then the batch std, clip 1.
    float b[4] = {1, 3, 0, 4}, adv[4], work[4];
    uint64_t grp[4] = {0, 0, 1, 1};
    drl_kl_advantages(4, 1, b, grp, 1.0f, adv, work);
    float s10 = sqrtf(10.0f) + 1e-6f;
    float wantA[4] = {-2 / s10, 2 / s10, -1, 1};
    tu_close("kl advantages (LOO, std, clip)", adv, wantA, 4, 1e-6f, 1e-5f);
    uint64_t solo[4] = {0, 1, 2, 3};
    drl_kl_advantages(4, 1, b, solo, 0, adv, work);
    TU_CHECK(adv[0] == 0 && adv[1] == 0 && adv[2] == 0 && adv[3] == 0,
             "groups of one have no advantage");

    drl_config_t c = drl_defaults();
    c.beta = 4;
    c.beta_warmup = 10;
    TU_CHECK(near(drl_beta(&c, 0), 0.4, 1e-6) && near(drl_beta(&c, 4), 2.0, 1e-6) &&
                 drl_beta(&c, 9) == 4 && drl_beta(&c, 100) == 4,
             "beta warm-up");
}

// ---- end to end against finite differences ---------------------------------------------------

enum { E_N = 4, E_S = 4, E_D = 2, E_C = 3 };

typedef struct {
    diff_t *d;
    drl_t *r;
    int ts[E_S + 1];
    float xs[E_N][(E_S + 1) * E_D];
    float lpf[E_N][E_S], lpb[E_N][E_S], rhat[E_N][E_S];
    drl_traj_t tr[E_N];
} e2e_t;

// Samples E_N chains of a random conditional denoiser and lays them out as received.
static void e2e_setup(e2e_t *e, float guidance, const drl_config_t *c) {
    diff_config_t dc = diff_defaults();
    dc.x_dim = E_D;
    dc.n_classes = E_C;
    dc.T = 30;
    dc.beta_start = 1e-3f;
    dc.beta_end = 0.2f;
    mlp_config_t mc = {.hidden = 16, .n_blocks = 1, .time_dim = 8};
    e->d = diff_new(&dc, &mc, 64, 5);
    diff_sampler_t s = diff_sampler_defaults();
    s.guidance = guidance;
    mlp_config_t fc = {.hidden = 12, .n_blocks = 1, .time_dim = 6};
    e->r = drl_new(e->d, &s, c, &fc, E_N, E_S, 9);
    int lab[E_N] = {0, 2, DIFF_NULL_LABEL, 1};
    float xs[(E_S + 1) * E_N * E_D], lpf[E_S * E_N], lpb[E_S * E_N];
    diff_sample(e->d, xs, lpf, lpb, e->ts, lab, E_N, E_S, &s, 3, 0);
    rng_t rr;
    rng_seed(&rr, 4);
    for (int i = 0; i < E_N; i++) {
        for (int k = 0; k <= E_S; k++)
            memcpy(e->xs[i] + k * E_D, xs + (k * E_N + i) * E_D, E_D * sizeof(float));
        for (int k = 0; k < E_S; k++) {
            e->lpf[i][k] = lpf[k * E_N + i];
            e->lpb[i][k] = lpb[k * E_N + i];
            e->rhat[i][k] = rng_normal(&rr);
        }
        e->tr[i] = (drl_traj_t){.S = E_S,
                                .ts = e->ts,
                                .xs = e->xs[i],
                                .blogpf = e->lpf[i],
                                .logpb = e->lpb[i],
                                .r_x0hat = i == 3 ? NULL : e->rhat[i],
                                .reward = rng_normal(&rr),
                                .label = lab[i],
                                .group = (uint64_t)(i / 2),
                                .advantage = rng_normal(&rr)};
    }
}

static void e2e_free(e2e_t *e) {
    drl_destroy(&e->r);
    TU_CHECK(e->r == NULL, "drl_destroy nulls the pointer");
    drl_destroy(&e->r);
    diff_destroy(&e->d);
}

enum { LOSS_SF, LOSS_IS, LOSS_DAG, LOSS_DAGKL };
static const char *const LOSS_NAMES[4] = {"DDPO score function", "DDPO PPO", "DAG", "DAG-KL"};

// Runs the loss; returns the objective whose gradient lands in `which` net (0 denoiser, 1 flow).
static double run_loss(e2e_t *e, int loss, int which, drl_stats_t *st) {
    float beta = 0.7f;
    double denom = E_N * E_S;
    switch (loss) {
    case LOSS_SF:
    case LOSS_IS:
        e->r->cfg.ddpo_is = loss == LOSS_IS;
        drl_ddpo_loss(e->r, e->tr, E_N, denom, st);
        return st->loss;
    case LOSS_DAG:
        drl_dag_loss(e->r, e->tr, E_N, denom, beta, st);
        return st->loss;
    default:
        drl_dagkl_loss(e->r, e->tr, E_N, denom, beta, st);
        return which ? st->flow_loss : st->loss;
    }
}

static void fd_check(e2e_t *e, int loss, int which, const char *tag) {
    mlp_t *net = which ? e->r->flow : e->d->net;
    paramset_zero_grad(&e->d->net->ps);
    paramset_zero_grad(&e->r->flow->ps);
    drl_stats_t st;
    run_loss(e, loss, which, &st);
    size_t n = net->ps.n;
    float *g = malloc(n * sizeof(float));
    layers_to_host(g, net->ps.g, n);
    float gmax = 0;
    for (size_t i = 0; i < n; i++)
        gmax = fmaxf(gmax, fabsf(g[i]));
    enum { PROBES = 24 };
    float got[PROBES], fd[PROBES];
    rng_t r;
    rng_seed(&r, 77 + loss);
    float *w = net->ps.w;
    for (int p = 0; p < PROBES; p++) {
        size_t i = p < 8 ? (size_t)p * (n / 8) : rng_below(&r, (uint32_t)n);
        float w0 = w[i], h = 1e-2f * fmaxf(1.0f, fabsf(w0));
        w[i] = w0 + h;
        double fp = run_loss(e, loss, which, &st);
        w[i] = w0 - h;
        double fm = run_loss(e, loss, which, &st);
        w[i] = w0;
        fd[p] = (float)((fp - fm) / ((double)(w0 + h) - (double)(w0 - h)));
        got[p] = g[i];
    }
    char what[160];
    snprintf(what, sizeof what, "%s: d/d%s params vs fd (%s)", LOSS_NAMES[loss],
             which ? "flow" : "denoiser", tag);
    tu_close(what, got, fd, PROBES, 1e-3f * gmax, 1e-2f);
    TU_CHECK(gmax > 0, "%s: nonzero gradient", what);
    free(g);
}

static void test_end_to_end(float guidance) {
    drl_config_t c = drl_defaults();
    c.clip_eps = 0.2f;
    e2e_t e;
    e2e_setup(&e, guidance, &c);
    char tag[32];
    snprintf(tag, sizeof tag, "guidance %g", guidance);
    char err[256];
    int ok = 1;
    for (int i = 0; i < E_N; i++)
        ok &= drl_check_traj(e.r, &e.tr[i], err, sizeof err) == 0;
    TU_CHECK(ok, "sampled trajectories pass drl_check_traj: %s", err);

    // The DDPO ratio is 1 at the behaviour policy, and PPO's gradient equals the score
    // function's there.
    drl_stats_t st;
    paramset_zero_grad(&e.d->net->ps);
    run_loss(&e, LOSS_IS, 0, &st);
    TU_CHECK(fabs(st.ratio_mean - 1.0) < 1e-4 && st.clip_frac == 0,
             "DDPO ratio at the behaviour policy %.7f, clipped %.3f", st.ratio_mean, st.clip_frac);
    size_t n = e.d->net->ps.n;
    float *g_is = malloc(n * sizeof(float)), *g_sf = malloc(n * sizeof(float));
    layers_to_host(g_is, e.d->net->ps.g, n);
    paramset_zero_grad(&e.d->net->ps);
    run_loss(&e, LOSS_SF, 0, &st);
    layers_to_host(g_sf, e.d->net->ps.g, n);
    float gm = 0;
    for (size_t i = 0; i < n; i++)
        gm = fmaxf(gm, fabsf(g_sf[i]));
    tu_close("PPO gradient = score function at behaviour", g_is, g_sf, n, 1e-4f * gm, 1e-3f);
    free(g_is);
    free(g_sf);

    fd_check(&e, LOSS_SF, 0, tag);
    fd_check(&e, LOSS_IS, 0, tag);
    fd_check(&e, LOSS_DAG, 0, tag);
    fd_check(&e, LOSS_DAG, 1, tag);
    fd_check(&e, LOSS_DAGKL, 0, tag);
    fd_check(&e, LOSS_DAGKL, 1, tag);
    // DAG-KL leaves the denoiser's gradient out of the flow loss: the flow gradient of the
    // two losses is the same, the denoiser's is not.
    paramset_zero_grad(&e.r->flow->ps);
    run_loss(&e, LOSS_DAG, 1, &st);
    double dag = st.flow_loss;
    float *gf = malloc(e.r->flow->ps.n * sizeof(float));
    layers_to_host(gf, e.r->flow->ps.g, e.r->flow->ps.n);
    paramset_zero_grad(&e.r->flow->ps);
    run_loss(&e, LOSS_DAGKL, 1, &st);
    TU_CHECK(near(st.flow_loss, dag, 1e-6), "same flow loss: %g vs %g", st.flow_loss, dag);
    tu_close("DAG and DAG-KL flow gradients agree", e.r->flow->ps.g, gf, e.r->flow->ps.n, 1e-7f,
             1e-5f);
    free(gf);

    // Malformed trajectories are refused with a reason.
    drl_traj_t bad = e.tr[0];
    bad.S = E_S + 1;
    TU_CHECK(drl_check_traj(e.r, &bad, err, sizeof err) != 0, "too many steps refused");
    bad = e.tr[0];
    bad.label = E_C;
    TU_CHECK(drl_check_traj(e.r, &bad, err, sizeof err) != 0 && strstr(err, "label"),
             "bad label refused: %s", err);
    bad = e.tr[0];
    bad.reward = NAN;
    TU_CHECK(drl_check_traj(e.r, &bad, err, sizeof err) != 0, "NaN reward refused");
    float xs_bad[(E_S + 1) * E_D];
    memcpy(xs_bad, e.xs[0], sizeof xs_bad);
    xs_bad[3] = INFINITY;
    bad = e.tr[0];
    bad.xs = xs_bad;
    TU_CHECK(drl_check_traj(e.r, &bad, err, sizeof err) != 0, "infinite state refused: %s", err);
    e2e_free(&e);
}

// ---- scorers ---------------------------------------------------------------------------------

static void test_scorers(void) {
    char err[256];
    float rew;
    uint32_t sh2[1] = {2};
    imgscore_t *s = imgscore_new("toy-mode", NULL, err, sizeof err);
    float x[2] = {2.0f, 0.0f};
    TU_CHECK(s && imgscore_score(s, x, 2, sh2, 1, "0", &rew, err, sizeof err) == 0 && rew == 0,
             "toy-mode at the centre: %g", rew);
    x[0] = 0;
    imgscore_score(s, x, 2, sh2, 1, "0", &rew, err, sizeof err);
    TU_CHECK(near(rew, -2.0, 1e-6), "toy-mode at the origin: %g", rew);
    imgscore_score(s, x, 2, sh2, 1, "2,4,3", &rew, err, sizeof err);
    TU_CHECK(near(rew, -3.0, 1e-6), "toy-mode, 4 modes, radius 3: %g", rew);
    TU_CHECK(imgscore_score(s, x, 2, sh2, 1, "8", &rew, err, sizeof err) != 0,
             "mode 8 of 8 refused");
    TU_CHECK(imgscore_score(s, x, 2, sh2, 1, "1x", &rew, err, sizeof err) != 0,
             "bad target refused: %s", err);
    uint32_t sh3[1] = {3};
    TU_CHECK(imgscore_score(s, x, 2, sh3, 1, "0", &rew, err, sizeof err) != 0,
             "shape mismatch refused: %s", err);
    imgscore_destroy(&s);
    TU_CHECK(s == NULL, "imgscore_destroy nulls the pointer");

    s = imgscore_new("toy-density", NULL, err, sizeof err);
    x[0] = 2.0f;
    x[1] = 0.0f;
    imgscore_score(s, x, 2, sh2, 1, "0+4", &rew, err, sizeof err);
    // At centre 0 the other mode (distance 4) adds nothing: log(0.5 / (2 pi 0.01)).
    TU_CHECK(near(rew, log(0.5 / (2 * M_PI * 0.01)), 1e-5), "toy-density at a centre: %g", rew);
    imgscore_score(s, x, 2, sh2, 1, "0,8,2,1", &rew, err, sizeof err);
    TU_CHECK(near(rew, -log(2 * M_PI), 1e-5), "toy-density std 1: %g", rew);
    imgscore_destroy(&s);

    float img[64];
    uint32_t sh88[2] = {8, 8};
    for (int i = 0; i < 64; i++)
        img[i] = (i % 8) < 4 ? 1.0f : -1.0f; // left half white
    s = imgscore_new("ink", NULL, err, sizeof err);
    imgscore_score(s, img, 64, sh88, 2, "", &rew, err, sizeof err);
    TU_CHECK(near(rew, 0.5, 1e-6), "ink of a half-white image: %g", rew);
    imgscore_score(s, img, 64, sh88, 2, "0.2", &rew, err, sizeof err);
    TU_CHECK(near(rew, -0.3, 1e-6), "ink target 0.2: %g", rew);
    imgscore_destroy(&s);
    s = imgscore_new("symmetry", NULL, err, sizeof err);
    imgscore_score(s, img, 64, sh88, 2, "", &rew, err, sizeof err);
    TU_CHECK(near(rew, -2.0, 1e-6), "symmetry of a half-white image: %g", rew);
    for (int i = 0; i < 64; i++)
        img[i] = ((i % 8) == 3 || (i % 8) == 4) ? 1.0f : -1.0f;
    imgscore_score(s, img, 64, sh88, 2, "", &rew, err, sizeof err);
    TU_CHECK(rew == 0.0f, "symmetry of a symmetric image: %g", rew);
    imgscore_destroy(&s);
    TU_CHECK(!imgscore_new("nope", NULL, err, sizeof err) && strstr(err, "unknown"),
             "unknown scorer: %s", err);
    TU_CHECK(!imgscore_new("digit-logp", NULL, err, sizeof err), "digit scorer needs a model");

    // The digit classifier, through a checkpoint as rlx-train-classifier writes it.
    digits_t *all = digits_load(tu_src_path("examples/data/digits.csv.gz"), err, sizeof err);
    if (!all) {
        TU_CHECK(0, "%s", err);
        return;
    }
    digits_clf_config_t cc = digits_clf_defaults();
    cc.steps = 600;
    mlp_t *clf = digits_clf_train(all, &cc, NULL, 0);
    char path[256];
    snprintf(path, sizeof path, "/tmp/rlx_test_imgscore_%d.ckpt", (int)getpid());
    struct {
        char magic[8];
        float test_frac;
        uint32_t seed_lo;
        float test_acc;
        uint32_t pad;
    } extra = {{'R', 'L', 'X', 'C', 'L', 'F', '0', '1'}, 0, 0, 0, 0};
    TU_CHECK(mlp_save(clf, path, &extra, sizeof extra, err, sizeof err) == 0, "save: %s", err);
    imgscore_t *lp = imgscore_new("digit-logp", path, err, sizeof err);
    imgscore_t *pp = imgscore_new("digit-prob", path, err, sizeof err);
    TU_CHECK(lp && pp, "digit scorers load the classifier: %s", err);
    if (lp && pp) {
        double mean_right = 0, psum = 0;
        int n = 50;
        for (int i = 0; i < n; i++) {
            const float *xi = all->x + (size_t)i * 64;
            char tg[4];
            snprintf(tg, sizeof tg, "%d", all->label[i]);
            float a, b;
            imgscore_score(lp, xi, 64, sh88, 2, tg, &a, err, sizeof err);
            mean_right += a / n;
            psum = 0;
            for (int k = 0; k < 10; k++) {
                snprintf(tg, sizeof tg, "%d", k);
                imgscore_score(pp, xi, 64, sh88, 2, tg, &b, err, sizeof err);
                psum += b;
            }
        }
        printf("digit-logp of the true class, mean over %d digits: %.4f\n", n, mean_right);
        TU_CHECK(mean_right > log(0.5), "classifier prefers the true class: %g", mean_right);
        TU_CHECK(near(psum, 1.0, 1e-5), "digit-prob sums to 1 over classes: %g", psum);
        TU_CHECK(imgscore_score(lp, all->x, 64, sh88, 2, "10", &rew, err, sizeof err) != 0,
                 "class 10 refused: %s", err);
        uint32_t sh2x32[2] = {2, 32};
        TU_CHECK(imgscore_score(lp, all->x, 64, sh2x32, 2, "1", &rew, err, sizeof err) != 0,
                 "non-8x8 image refused: %s", err);
    }
    imgscore_destroy(&lp);
    imgscore_destroy(&pp);
    mlp_save(clf, path, NULL, 0, err, sizeof err);
    lp = imgscore_new("digit-logp", path, err, sizeof err);
    TU_CHECK(!lp && strstr(err, "RLXCLF01"), "plain mlp refused: %s", lp ? "(loaded)" : err);
    imgscore_destroy(&lp);
    unlink(path);
    mlp_destroy(&clf);
    digits_destroy(&all);
}

// ---- the toy: DDPO vs DAG-KL from a pretrained DDPM --------------------------------------------

enum { TOY_N = 64, TOY_S = 20, TOY_EVAL = 1024 };
#define TOY_TARGET "0"

typedef struct {
    diff_t *d;
    imgscore_t *score;
    diff_sampler_t s;
    float *w0, *m0, *v0; // pretrained parameters and optimizer moments
    int64_t step0;
    int ts[TOY_S + 1];
    float *xs;    // (S+1, N, 2) sampler output
    float *lpf;   // (S, N)
    float *lpb;   // (S, N)
    float *txs;   // (N, S+1, 2) per trajectory
    float *tlpf;  // (N, S)
    float *tlpb;  // (N, S)
    float *trhat; // (N, S) r(x0_hat) per state
    float *x0hat; // (N, 2)
    float *eval;  // (S+1, TOY_EVAL, 2)
    drl_traj_t tr[TOY_N];
} toy_t;

static float toy_reward(toy_t *t, const float *x) {
    uint32_t sh[1] = {2};
    float r;
    char err[128];
    int rc = imgscore_score(t->score, x, 2, sh, 1, TOY_TARGET, &r, err, sizeof err);
    TU_CHECK(rc == 0, "toy scorer: %s", err);
    return r;
}

static double toy_eval(toy_t *t, uint64_t seed) {
    diff_sample(t->d, t->eval, NULL, NULL, NULL, NULL, TOY_EVAL, TOY_S, &t->s, seed, 0);
    const float *x = t->eval + (size_t)TOY_S * TOY_EVAL * 2;
    double sum = 0;
    for (int i = 0; i < TOY_EVAL; i++)
        sum += toy_reward(t, x + 2 * i);
    return sum / TOY_EVAL;
}

static void toy_restore(toy_t *t) {
    paramset_t *p = &t->d->net->ps;
    memcpy(p->w, t->w0, p->n * sizeof(float));
    memcpy(p->m, t->m0, p->n * sizeof(float));
    memcpy(p->v, t->v0, p->n * sizeof(float));
    p->step = t->step0;
}

// One batch of TOY_N trajectories (iteration it), laid out as a learner receives them, with
// r(x0_hat) per state when forward_looking (computed here, as an actor would).
static double toy_batch(toy_t *t, int it, int forward_looking) {
    diff_sample(t->d, t->xs, t->lpf, t->lpb, t->ts, NULL, TOY_N, TOY_S, &t->s, 1000 + it,
                (uint64_t)it * TOY_N);
    double mean = 0;
    for (int i = 0; i < TOY_N; i++) {
        for (int k = 0; k <= TOY_S; k++)
            memcpy(t->txs + ((size_t)i * (TOY_S + 1) + k) * 2, t->xs + ((size_t)k * TOY_N + i) * 2,
                   2 * sizeof(float));
        for (int k = 0; k < TOY_S; k++) {
            t->tlpf[i * TOY_S + k] = t->lpf[k * TOY_N + i];
            t->tlpb[i * TOY_S + k] = t->lpb[k * TOY_N + i];
        }
        float rw = toy_reward(t, t->txs + ((size_t)i * (TOY_S + 1) + TOY_S) * 2);
        mean += rw / TOY_N;
        t->tr[i] = (drl_traj_t){.S = TOY_S,
                                .ts = t->ts,
                                .xs = t->txs + (size_t)i * (TOY_S + 1) * 2,
                                .blogpf = t->tlpf + i * TOY_S,
                                .logpb = t->tlpb + i * TOY_S,
                                .r_x0hat = forward_looking ? t->trhat + i * TOY_S : NULL,
                                .reward = rw,
                                .label = DIFF_NULL_LABEL,
                                .group = (uint64_t)(i / 8),
                                .advantage = 0};
    }
    if (forward_looking)
        for (int k = 0; k < TOY_S; k++) {
            int tk[TOY_N];
            for (int i = 0; i < TOY_N; i++)
                tk[i] = t->ts[k];
            diff_predict_x0(t->d, t->x0hat, t->xs + (size_t)k * TOY_N * 2, tk, NULL, TOY_N, &t->s);
            for (int i = 0; i < TOY_N; i++)
                t->trhat[i * TOY_S + k] = toy_reward(t, t->x0hat + 2 * i);
        }
    return mean;
}

// Fine-tunes the pretrained model for `iters` batches; returns the eval mean reward.
static double toy_finetune(toy_t *t, int method, int iters, double *last_batch) {
    toy_restore(t);
    drl_config_t c = drl_defaults();
    c.adv_clip = 5.0f;
    c.clip_eps = 0.2f;
    c.beta = getenv("RLX_TOY_BETA") ? (float)atof(getenv("RLX_TOY_BETA")) : 5.0f;
    c.beta_warmup = iters / 4;
    c.ddpo_is = 1;
    c.fl_abar = getenv("RLX_TOY_FL_ABAR") != NULL;
    mlp_config_t fc = {.hidden = 64, .n_blocks = 1, .time_dim = 16};
    drl_t *r = drl_new(t->d, &t->s, &c, method == LOSS_DAGKL ? &fc : NULL, TOY_N, TOY_S, 13);
    adamw_config_t opt = adamw_defaults();
    opt.lr = getenv("RLX_TOY_LR") ? (float)atof(getenv("RLX_TOY_LR")) : 1e-4f;
    opt.grad_clip = 1.0f;
    adamw_config_t fopt = adamw_defaults();
    fopt.lr = 2e-3f;
    fopt.grad_clip = 10.0f;
    double t0 = rlx_now(), tail = 0;
    int ntail = iters / 10 > 0 ? iters / 10 : 1;
    drl_stats_t st;
    for (int it = 0; it < iters; it++) {
        double mean = toy_batch(t, it, method == LOSS_DAGKL);
        if (it >= iters - ntail)
            tail += mean / ntail;
        paramset_zero_grad(&t->d->net->ps);
        if (method == LOSS_DAGKL) {
            paramset_zero_grad(&r->flow->ps);
            drl_dagkl_loss(r, t->tr, TOY_N, TOY_N * TOY_S, drl_beta(&c, it), &st);
            adamw_step(&r->flow->ps, &fopt);
        } else {
            drl_ddpo_advantages(r, t->tr, TOY_N);
            drl_ddpo_loss(r, t->tr, TOY_N, TOY_N * TOY_S, &st);
        }
        adamw_step(&t->d->net->ps, &opt);
        if (getenv("RLX_DEBUG_TOY") && it % 20 == 0)
            printf("  %s it %d: batch reward %.3f flow loss %.3f |delta| %.3f |A| %.3f\n",
                   LOSS_NAMES[method], it, mean, st.flow_loss, st.delta_abs, st.adv_abs);
        if (getenv("RLX_DEBUG_TOY") && it % 20 == 0 && method == LOSS_DAGKL) {
            printf("    |delta| per step:");
            for (int k = 0; k < TOY_S; k++) {
                double a = 0, mn = 0;
                for (int i = 0; i < TOY_N; i++) {
                    a += fabsf(r->delta[i * TOY_S + k]) / TOY_N;
                    mn = fmin(mn, t->trhat[i * TOY_S + k]);
                }
                printf(" %.1f(%.0f)", a, mn);
            }
            printf("\n");
        }
    }
    double ev = toy_eval(t, 777);
    printf("%s: %d trajectories in %.1fs, batch reward over the last %d batches %.3f, eval mean "
           "reward %.3f\n",
           LOSS_NAMES[method], iters * TOY_N, rlx_now() - t0, ntail, tail, ev);
    *last_batch = tail;
    drl_destroy(&r);
    return ev;
}

static void test_toy(void) {
    toy_t t;
    memset(&t, 0, sizeof t);
    digits_t *toy = digits_toy_mixture(4000, 8, 2.0f, 0.1f, 8);
    diff_config_t c = diff_defaults();
    c.x_dim = 2;
    c.T = 100;
    c.beta_end = 0.1f;
    mlp_config_t mc = {.hidden = 64, .n_blocks = 2, .time_dim = 16};
    t.d = diff_new(&c, &mc, TOY_EVAL, 4);
    t.s = diff_sampler_defaults();
    char err[128];
    t.score = imgscore_new("toy-mode", NULL, err, sizeof err);
    diff_train_config_t tc = diff_train_defaults();
    tc.batch = 256;
    tc.steps = 1500;
    tc.log_every = 0;
    double t0 = rlx_now();
    float loss = diff_train(t.d, toy->x, NULL, toy->n, &tc, NULL);
    printf("toy DDPM pretrained: loss %.4f, %d steps in %.1fs\n", loss, tc.steps, rlx_now() - t0);
    paramset_t *p = &t.d->net->ps;
    t.w0 = malloc(p->n * sizeof(float));
    t.m0 = malloc(p->n * sizeof(float));
    t.v0 = malloc(p->n * sizeof(float));
    memcpy(t.w0, p->w, p->n * sizeof(float));
    memcpy(t.m0, p->m, p->n * sizeof(float));
    memcpy(t.v0, p->v, p->n * sizeof(float));
    t.step0 = p->step;
    t.xs = malloc((size_t)(TOY_S + 1) * TOY_N * 2 * sizeof(float));
    t.lpf = malloc((size_t)TOY_S * TOY_N * sizeof(float));
    t.lpb = malloc((size_t)TOY_S * TOY_N * sizeof(float));
    t.txs = malloc((size_t)(TOY_S + 1) * TOY_N * 2 * sizeof(float));
    t.tlpf = malloc((size_t)TOY_S * TOY_N * sizeof(float));
    t.tlpb = malloc((size_t)TOY_S * TOY_N * sizeof(float));
    t.trhat = malloc((size_t)TOY_S * TOY_N * sizeof(float));
    t.x0hat = malloc((size_t)TOY_N * 2 * sizeof(float));
    t.eval = malloc((size_t)(TOY_S + 1) * TOY_EVAL * 2 * sizeof(float));

    double pre = toy_eval(&t, 777);
    printf("pretrained: eval mean reward %.3f (reward -|x - centre of mode " TOY_TARGET "|)\n",
           pre);
    int iters = getenv("RLX_TOY_ITERS") ? atoi(getenv("RLX_TOY_ITERS")) : 150;
    double bd, bk;
    double ddpo = toy_finetune(&t, LOSS_IS, iters, &bd);
    double dagkl = toy_finetune(&t, LOSS_DAGKL, iters, &bk);
    printf("toy reward at %d trajectories: pretrained %.3f, DDPO %.3f, DAG-KL %.3f\n",
           iters * TOY_N, pre, ddpo, dagkl);
    TU_CHECK(ddpo > pre + 1.0, "DDPO raises the toy reward: %.3f -> %.3f", pre, ddpo);
    TU_CHECK(dagkl > pre + 1.0, "DAG-KL raises the toy reward: %.3f -> %.3f", pre, dagkl);
    free(t.w0);
    free(t.m0);
    free(t.v0);
    free(t.xs);
    free(t.lpf);
    free(t.lpb);
    free(t.txs);
    free(t.tlpf);
    free(t.tlpb);
    free(t.trhat);
    free(t.x0hat);
    free(t.eval);
    imgscore_destroy(&t.score);
    diff_destroy(&t.d);
    digits_destroy(&toy);
}

int main(void) {
    tu_blas_core("test_diffusion_rl");
    layers_set_threads(getenv("RLX_THREADS") ? atoi(getenv("RLX_THREADS")) : 1);
    test_tracker();
    test_math();
    test_end_to_end(0.0f);
    test_end_to_end(1.5f);
    test_scorers();
    test_toy();
    return tu_finish("test_diffusion_rl");
}
