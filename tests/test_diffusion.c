// test_diffusion.c: the diffusion core (common/diffusion/diffusion.c) and the datasets and
// classifier (common/tasks/digits.c).
//   default: schedules, x0_hat, the DDIM mean/sigma, log P_F and log P_B against
//            tests/ref/diffusion.bin (tests/gen_ref_diffusion.py, PyTorch); a conditional
//            denoiser's eps, x0_hat, recomputed log P_F and its parameter gradient, and the MLE
//            loss and its gradient, against the same file; the log P_F gradient against finite
//            differences; sampled log-probs equal the learner's recomputation; per-row streams
//            make a row's chain independent of its batch; classifier-free guidance; checkpoints;
//            the digits reader on the real file and on corrupt ones; a DDPM on the 8-Gaussians
//            toy learns the modes; a digit classifier reaches >= 0.95 test accuracy and a small
//            class-conditional DDPM's samples are recognised by it well above chance (10%).
//   "digits" (slow label): the same with a larger DDPM trained longer (~30 s of CPU).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "diffusion.h"
#include "digits.h"
#include "layers.h"
#include "refio.h"
#include "rng.h"
#include "testutil.h"
#include "util.h"

#define RTOL 1e-5f

static ref_file_t *R;

static void check(const char *what, const float *got, const char *ref_name, size_t n, float rtol,
                  float atol_rel) {
    const float *ref = ref_floats(R, ref_name, n);
    float mx = 0.0f;
    for (size_t i = 0; i < n; i++)
        mx = fmaxf(mx, fabsf(ref[i]));
    float atol = atol_rel * mx;
    tu_close(what, got, ref, n, atol > 0 ? atol : 1e-30f, rtol);
}

static const char *nm(const char *a, const char *b) {
    static char buf[8][96];
    static int k = 0;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s%s", a, b);
    return buf[k];
}

static diff_config_t ref_config(int schedule, int D, int C) {
    const float *s = ref_floats(R, "sched", 4);
    diff_config_t c = diff_defaults();
    c.T = (int)s[0];
    c.beta_start = s[1];
    c.beta_end = s[2];
    c.cosine_s = s[3];
    c.schedule = schedule;
    c.x_dim = D;
    c.n_classes = C;
    return c;
}

// ---- the math of a step against PyTorch -------------------------------------------------

static void test_math(const char *prefix, int schedule) {
    enum { N = 8, D = 6 };
    diff_config_t c = ref_config(schedule, D, 0);
    mlp_config_t mc = {.hidden = 8, .n_blocks = 1, .time_dim = 2};
    diff_t *d = diff_new(&c, &mc, N, 1);
    float ab[1024];
    for (int t = 0; t < c.T; t++)
        ab[t] = (float)diff_abar(d, t);
    check(nm(prefix, "abar"), ab, nm(prefix, "abar"), c.T, 1e-6f, 0);
    const int *t = ref_ints(R, nm(prefix, "t"), N), *tp = ref_ints(R, nm(prefix, "tp"), N);
    const float *x_t = ref_floats(R, nm(prefix, "x_t"), N * D);
    const float *eps = ref_floats(R, nm(prefix, "eps"), N * D);
    const float *x_prev = ref_floats(R, nm(prefix, "x_prev"), N * D);
    float x0[N * D], mean[N * D], sigma[N], lp[N];
    diff_x0_from_eps(d, x0, x_t, eps, t, N, 0);
    check(nm(prefix, "x0"), x0, nm(prefix, "x0"), N * D, RTOL, 1e-6f);
    diff_x0_from_eps(d, x0, x_t, eps, t, N, 1);
    check(nm(prefix, "x0_clip"), x0, nm(prefix, "x0_clip"), N * D, RTOL, 1e-6f);
    const float etas[2] = {1.0f, 0.6f};
    const char *tags[2] = {"e1", "e06"};
    for (int e = 0; e < 2; e++) {
        for (int clip = 0; clip < 2; clip++) {
            char base[64];
            snprintf(base, sizeof base, "%s%s_c%d_", prefix, tags[e], clip);
            diff_sampler_t s = {.eta = etas[e], .clip_x0 = clip, .logp_sum = 0};
            diff_pf_mean(d, mean, sigma, x_t, eps, t, tp, N, &s);
            check(nm(base, "mean"), mean, nm(base, "mean"), N * D, RTOL, 1e-6f);
            check(nm(base, "sigma"), sigma, nm(base, "sigma"), N, RTOL, 0);
            diff_logpf_from_eps(d, lp, x_t, x_prev, eps, t, tp, N, &s);
            check(nm(base, "logpf"), lp, nm(base, "logpf"), N, RTOL, 1e-6f);
            s.logp_sum = 1;
            diff_logpf_from_eps(d, lp, x_t, x_prev, eps, t, tp, N, &s);
            check(nm(base, "logpf_sum"), lp, nm(base, "logpf_sum"), N, RTOL, 1e-6f);
        }
    }
    diff_logpb(d, lp, x_t, x_prev, t, tp, N, 0);
    check(nm(prefix, "logpb"), lp, nm(prefix, "logpb"), N, RTOL, 1e-6f);
    diff_logpb(d, lp, x_t, x_prev, t, tp, N, 1);
    check(nm(prefix, "logpb_sum"), lp, nm(prefix, "logpb_sum"), N, RTOL, 1e-6f);
    diff_destroy(&d);
    TU_CHECK(d == NULL, "diff_destroy nulls the pointer");
    diff_destroy(&d);
}

// ---- a conditional denoiser against PyTorch ---------------------------------------------

static diff_t *ref_model(void) {
    const int *k = ref_ints(R, "m_config", 6);
    int D = k[0], C = k[1];
    diff_config_t c = ref_config(DIFF_SCHED_LINEAR, D, C);
    mlp_config_t mc = {.hidden = k[2], .n_blocks = k[3], .time_dim = k[4]};
    diff_t *d = diff_new(&c, &mc, 2 * k[5] + 2, 3); // guided calls run 2N rows
    float **w = (float **)&d->net->w;
    size_t total = 0;
    for (int i = 0; i < MLP_NUM_PARAM_TENSORS; i++) {
        const ref_tensor_t *rt = ref_get(R, nm("m_", MLP_PARAM_NAMES[i]));
        layers_to_device(w[i], rt->data, rt->count);
        total += rt->count;
    }
    TU_CHECK(total == d->net->ps.n, "reference has %zu parameters, the net %zu", total,
             d->net->ps.n);
    return d;
}

static void check_grads(diff_t *d, const char *prefix) {
    float **g = (float **)&d->net->g;
    const int *k = ref_ints(R, "m_config", 6);
    size_t H = k[2], K = k[3], Din = k[0] + k[1] + 1 + k[4], O = k[0];
    size_t s[MLP_NUM_PARAM_TENSORS] = {H * Din,   H,     K * H, K * H, K * H * H, K * H,
                                       K * H * H, K * H, H,     H,     O * H,     O};
    for (int i = 0; i < MLP_NUM_PARAM_TENSORS; i++) {
        const char *n = nm(prefix, MLP_PARAM_NAMES[i]);
        check(n, g[i], n, s[i], RTOL, 1e-6f);
    }
}

// The model's x0_hat = (x_t - sqrt(1-abar_t) eps) / sqrt(abar_t) against PyTorch's. x_t is an
// exact input and the formula runs in double, so x0_hat's error is eps's error (which m_eps
// holds to eps_atol + RTOL |eps_ref|) times sqrt(1-abar_t)/sqrt(abar_t), plus the rounding of
// the result (RTOL |x0_ref|, as test_math checks x0_hat from exact eps). The factor is 15 at
// t = T-1 of the linear schedule here, 0.08 at t = 1, so no single atol fits every row: one
// scaled by the largest |x0| was too loose at small t and too tight where x0 ~ 0 near t = T,
// where eps's fp32 matmul rounding, which differs by BLAS kernel, shows 15-fold (it failed
// under OpenBLAS's SkylakeX kernels). Clipping to [-1, 1] is 1-Lipschitz: the same bound
// holds for the clipped x0_hat.
static void check_x0(const char *what, const diff_t *d, const float *x0, const int *t, int N, int D,
                     float eps_atol) {
    const float *ref = ref_floats(R, what, (size_t)N * D);
    const float *eps_ref = ref_floats(R, "m_eps", (size_t)N * D);
    float *tol = malloc((size_t)N * D * sizeof(float));
    for (int i = 0; i < N; i++) {
        double ab = diff_abar(d, t[i]), amp = sqrt(1.0 - ab) / sqrt(ab);
        for (int j = 0; j < D; j++) {
            size_t k = (size_t)i * D + j;
            tol[k] = (float)(amp * (eps_atol + RTOL * fabs(eps_ref[k])) + RTOL * fabs(ref[k]));
        }
    }
    tu_close_tol(what, x0, ref, tol, (size_t)N * D);
    free(tol);
}

static void test_model(void) {
    const int *k = ref_ints(R, "m_config", 6);
    int D = k[0], N = k[5];
    diff_t *d = ref_model();
    const int *t = ref_ints(R, "m_t", N), *tp = ref_ints(R, "m_tp", N);
    const int *lab = ref_ints(R, "m_labels", N);
    const float *x_t = ref_floats(R, "m_x_t", N * D), *x_prev = ref_floats(R, "m_x_prev", N * D);
    const float *dlogpf = ref_floats(R, "m_dlogpf", N);
    check("m_eps", diff_eps(d, x_t, t, lab, N), "m_eps", N * D, RTOL, 1e-6f);
    const float *eps_ref = ref_floats(R, "m_eps", N * D);
    float eps_atol = 0.0f; // the atol check() gave m_eps
    for (int i = 0; i < N * D; i++)
        eps_atol = fmaxf(eps_atol, 1e-6f * fabsf(eps_ref[i]));
    float *x0 = malloc(N * D * sizeof(float)), lp[64];
    diff_sampler_t s = {.eta = 1.0f, .clip_x0 = 0, .logp_sum = 0};
    diff_predict_x0(d, x0, x_t, t, lab, N, &s);
    check_x0("m_x0", d, x0, t, N, D, eps_atol);
    s.clip_x0 = 1;
    diff_predict_x0(d, x0, x_t, t, lab, N, &s);
    check_x0("m_x0_clip", d, x0, t, N, D, eps_atol);
    paramset_zero_grad(&d->net->ps);
    diff_logpf(d, lp, x_t, x_prev, t, tp, lab, N, &s, dlogpf);
    check("m_logpf", lp, "m_logpf", N, RTOL, 1e-6f);
    check_grads(d, "m_g_");

    // Classifier-free guidance: 2N rows through the net, gradients through both halves.
    s.guidance = ref_floats(R, "m_cfg_w", 1)[0];
    check("m_cfg_eps", diff_eps_guided(d, x_t, t, lab, N, &s), "m_cfg_eps", N * D, RTOL, 1e-6f);
    paramset_zero_grad(&d->net->ps);
    diff_logpf(d, lp, x_t, x_prev, t, tp, lab, N, &s, dlogpf);
    check("m_cfg_logpf", lp, "m_cfg_logpf", N, RTOL, 1e-6f);
    check_grads(d, "m_cfg_g_");

    paramset_zero_grad(&d->net->ps);
    float loss = diff_loss(d, ref_floats(R, "m_x0_data", N * D), lab, ref_ints(R, "m_loss_t", N),
                           ref_floats(R, "m_noise", N * D), N, 1);
    check("m_loss", &loss, "m_loss", 1, RTOL, 0);
    check_grads(d, "m_lg_");
    free(x0);
    diff_destroy(&d);
}

// ---- gradient of log P_F by finite differences, sampling consistency ----------------------

static double weighted_logpf(diff_t *d, const float *x_t, const float *x_prev, const int *t,
                             const int *tp, const int *lab, int N, const diff_sampler_t *s,
                             const float *w, float *lp) {
    diff_logpf(d, lp, x_t, x_prev, t, tp, lab, N, s, NULL);
    double sum = 0.0;
    for (int i = 0; i < N; i++)
        sum += (double)w[i] * lp[i];
    return sum;
}

static void test_sampling_and_fd(float guidance) {
    enum { N = 6, D = 3, S = 4, C = 2 };
    diff_config_t c = diff_defaults();
    c.x_dim = D;
    c.n_classes = C;
    c.T = 40;
    c.beta_end = 0.2f;
    c.beta_start = 1e-3f;
    mlp_config_t mc = {.hidden = 16, .n_blocks = 2, .time_dim = 8};
    diff_t *d = diff_new(&c, &mc, 64, 11);
    diff_sampler_t s = diff_sampler_defaults();
    s.guidance = guidance;
    printf("-- sampling and finite differences, guidance %g\n", guidance);
    int lab[N] = {0, 1, DIFF_NULL_LABEL, 1, 0, DIFF_NULL_LABEL}, ts[S + 1];
    float xs[(S + 1) * N * D], lpf[S * N], lpb[S * N];
    diff_sample(d, xs, lpf, lpb, ts, lab, N, S, &s, 99, 1000);
    TU_CHECK(diff_valid_step(d, 5, 0, 1) && diff_valid_step(d, c.T - 1, 3, DIFF_NULL_LABEL) &&
                 !diff_valid_step(d, 0, 0, 0) && !diff_valid_step(d, 5, 5, 0) &&
                 !diff_valid_step(d, c.T, 0, 0) && !diff_valid_step(d, 5, -1, 0) &&
                 !diff_valid_step(d, 5, 0, C) && !diff_valid_step(d, 5, 0, -2),
             "diff_valid_step");
    TU_CHECK(ts[0] == c.T - 1 && ts[S] == 0, "time steps run %d..%d, want %d..0", ts[0], ts[S],
             c.T - 1);
    for (int k = 0; k < S; k++)
        TU_CHECK(ts[k] > ts[k + 1], "time steps decrease: ts[%d]=%d ts[%d]=%d", k, ts[k], k + 1,
                 ts[k + 1]);

    // Transitions as a learner receives them: all S*N steps in one batch.
    int M = S * N, t[S * N], tp[S * N], lb[S * N];
    float x_t[S * N * D], x_prev[S * N * D], re[S * N], rb[S * N], w[S * N];
    rng_t r;
    rng_seed(&r, 5);
    for (int k = 0; k < S; k++)
        for (int i = 0; i < N; i++) {
            int q = k * N + i;
            t[q] = ts[k];
            tp[q] = ts[k + 1];
            lb[q] = lab[i];
            memcpy(x_t + q * D, xs + (k * N + i) * D, D * sizeof(float));
            memcpy(x_prev + q * D, xs + ((k + 1) * N + i) * D, D * sizeof(float));
            w[q] = rng_normal(&r);
        }
    diff_logpf(d, re, x_t, x_prev, t, tp, lb, M, &s, NULL);
    // Not bit-equal: the learner's batch (M rows) blocks the matmuls differently from the
    // sampler's (N rows), and small sigmas amplify eps's rounding.
    tu_close("sampled logpf = recomputed", re, lpf, M, 1e-4f, 1e-5f);
    diff_logpb(d, rb, x_t, x_prev, t, tp, M, 0);
    tu_close("sampled logpb = diff_logpb", rb, lpb, M, 1e-6f, 1e-6f);

    // A row's chain does not depend on its batch: rows 2..3 alone, same stream ids.
    float xs2[(S + 1) * 2 * D];
    diff_sample(d, xs2, NULL, NULL, NULL, lab + 2, 2, S, &s, 99, 1002);
    float a[2 * D], b[2 * D];
    memcpy(a, xs2 + S * 2 * D, sizeof a);
    memcpy(b, xs + (S * N + 2) * D, sizeof b);
    tu_close("chain independent of batch", a, b, 2 * D, 1e-4f, 1e-4f);

    // Analytic gradient of sum_q w_q logpf_q against central differences in double-size steps.
    paramset_zero_grad(&d->net->ps);
    diff_logpf(d, re, x_t, x_prev, t, tp, lb, M, &s, w);
    size_t n = d->net->ps.n;
    float *g = malloc(n * sizeof(float));
    layers_to_host(g, d->net->ps.g, n);
    float gmax = 0;
    for (size_t i = 0; i < n; i++)
        gmax = fmaxf(gmax, fabsf(g[i]));
    enum { PROBES = 40 };
    float got[PROBES], fd[PROBES];
    float *wp = d->net->ps.w;
    for (int p = 0; p < PROBES; p++) {
        size_t i = p < 12 ? (size_t)p * (n / 12) : rng_below(&r, (uint32_t)n);
        // h = 1e-2: float32 forward noise dominates below it, curvature above it
        float w0 = wp[i], h = 1e-2f * fmaxf(1.0f, fabsf(w0));
        wp[i] = w0 + h;
        double fp = weighted_logpf(d, x_t, x_prev, t, tp, lb, M, &s, w, re);
        wp[i] = w0 - h;
        double fm = weighted_logpf(d, x_t, x_prev, t, tp, lb, M, &s, w, re);
        wp[i] = w0;
        double hh = (double)(w0 + h) - (double)(w0 - h);
        fd[p] = (float)((fp - fm) / hh);
        got[p] = g[i];
        if (getenv("RLX_DEBUG_FD"))
            printf("probe %zu: analytic %.6g fd %.6g\n", i, got[p], fd[p]);
    }
    tu_close("dlogpf/dparams vs finite diff", got, fd, PROBES, 3e-4f * gmax, 5e-3f);
    free(g);
    diff_destroy(&d);
}

// ---- checkpoints -------------------------------------------------------------------------

static void test_ckpt(void) {
    diff_config_t c = diff_defaults();
    c.x_dim = 5;
    c.n_classes = 3;
    c.T = 30;
    c.schedule = DIFF_SCHED_COSINE;
    mlp_config_t mc = {.hidden = 12, .n_blocks = 1, .time_dim = 4};
    diff_t *d = diff_new(&c, &mc, 4, 21);
    char path[256], err[512];
    snprintf(path, sizeof path, "/tmp/rlx_test_diffusion_%d.ckpt", (int)getpid());
    TU_CHECK(diff_save(d, path, err, sizeof err) == 0, "diff_save: %s", err);
    diff_t *e = diff_load(path, 4, err, sizeof err);
    TU_CHECK(e != NULL, "diff_load: %s", err);
    if (e) {
        TU_CHECK(e->cfg.T == 30 && e->cfg.schedule == DIFF_SCHED_COSINE && e->cfg.n_classes == 3 &&
                     e->cfg.x_dim == 5,
                 "config survives the checkpoint");
        float x[4 * 5];
        int t[4] = {0, 5, 17, 29}, lab[4] = {0, 1, 2, DIFF_NULL_LABEL};
        for (int i = 0; i < 20; i++)
            x[i] = sinf((float)i);
        float e1[20];
        memcpy(e1, diff_eps(d, x, t, lab, 4), sizeof e1);
        tu_equal_bytes("eps after reload", diff_eps(e, x, t, lab, 4), e1, sizeof e1);
        tu_equal_bytes("abar after reload", e->abar, d->abar, 30 * sizeof(double));
    }
    // A plain mlp checkpoint is refused with a message.
    if (mlp_save(d->net, path, NULL, 0, err, sizeof err) == 0) {
        diff_t *f = diff_load(path, 4, err, sizeof err);
        TU_CHECK(f == NULL && strstr(err, "not a diffusion checkpoint"),
                 "plain mlp checkpoint refused: %s", err);
        diff_destroy(&f);
    }
    unlink(path);
    diff_destroy(&e);
    diff_destroy(&d);
}

// ---- the digits file ---------------------------------------------------------------------

static void write_file(const char *path, const void *buf, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(buf, 1, n, f);
    fclose(f);
}

static void test_digits_file(void) {
    char err[512];
    const char *src = tu_src_path("examples/data/digits.csv.gz");
    digits_t *dg = digits_load(src, err, sizeof err);
    TU_CHECK(dg != NULL, "digits_load: %s", err);
    if (!dg)
        return;
    TU_CHECK(dg->n == 1797 && dg->dim == 64 && dg->n_classes == 10, "1797 x 64, 10 classes: %d %d",
             dg->n, dg->dim);
    int counts[10] = {0}, inrange = 1;
    for (int i = 0; i < dg->n; i++)
        counts[dg->label[i]]++;
    for (size_t i = 0; i < (size_t)dg->n * 64; i++)
        inrange &= dg->x[i] >= -1.0f && dg->x[i] <= 1.0f;
    TU_CHECK(inrange, "pixels in [-1, 1]");
    for (int k = 0; k < 10; k++)
        TU_CHECK(counts[k] >= 170 && counts[k] <= 190, "class %d has %d examples", k, counts[k]);
    // First row of the file: 0,0,5,13,9,1,... label 0.
    TU_CHECK(dg->label[0] == 0 && dg->x[0] == -1.0f && dg->x[2] == 5.0f / 8 - 1 &&
                 dg->x[3] == 13.0f / 8 - 1,
             "first row parsed");
    digits_t *tr, *te;
    digits_split(dg, 0.2f, 3, &tr, &te);
    TU_CHECK(tr->n + te->n == dg->n && te->n == 359, "split %d + %d", tr->n, te->n);
    digits_destroy(&tr);
    digits_destroy(&te);

    size_t len;
    char *gz = tu_read_file(src, &len);
    char path[256];
    snprintf(path, sizeof path, "/tmp/rlx_test_digits_%d.gz", (int)getpid());
    write_file(path, gz, len / 2); // truncated
    digits_t *bad = digits_load(path, err, sizeof err);
    TU_CHECK(!bad && strstr(err, "trunc"), "truncated gzip refused: %s", bad ? "(loaded)" : err);
    digits_destroy(&bad);
    for (size_t i = len / 3; i < len / 3 + 64; i++) // corrupt the deflate stream
        gz[i] ^= 0x5a;
    write_file(path, gz, len);
    bad = digits_load(path, err, sizeof err);
    TU_CHECK(!bad, "corrupt gzip refused");
    printf("ok   corrupt gzip: %s\n", err);
    digits_destroy(&bad);
    const char *csv = "0,1,2,3\n";
    write_file(path, csv, strlen(csv));
    bad = digits_load(path, err, sizeof err);
    TU_CHECK(!bad && strstr(err, "line 1"), "short row refused: %s", err);
    digits_destroy(&bad);
    char row[512] = "";
    for (int j = 0; j < 64; j++)
        strcat(row, j == 10 ? "17," : "3,");
    strcat(row, "4\n");
    write_file(path, row, strlen(row));
    bad = digits_load(path, err, sizeof err);
    TU_CHECK(!bad && strstr(err, "outside 0..16"), "pixel 17 refused: %s", err);
    digits_destroy(&bad);
    bad = digits_load("/nonexistent/digits.csv.gz", err, sizeof err);
    TU_CHECK(!bad && strstr(err, "cannot open"), "missing file: %s", err);
    unlink(path);
    free(gz);
    digits_destroy(&dg);
}

// ---- a DDPM on the 8-Gaussians toy -------------------------------------------------------

static void test_toy(void) {
    const int modes = 8;
    const float radius = 2.0f, std = 0.1f;
    digits_t *toy = digits_toy_mixture(4000, modes, radius, std, 8);
    diff_config_t c = diff_defaults();
    c.x_dim = 2;
    c.T = 200;
    mlp_config_t mc = {.hidden = 64, .n_blocks = 2, .time_dim = 16};
    enum { NS = 400, S = 50 };
    diff_t *d = diff_new(&c, &mc, NS, 4);
    diff_train_config_t tc = diff_train_defaults();
    tc.batch = 256;
    tc.steps = 100;
    tc.log_every = 0;
    double t0 = rlx_now();
    float first = diff_train(d, toy->x, NULL, toy->n, &tc, NULL);
    tc.steps = 2400;
    tc.opt.warmup_steps = 0;
    tc.log_every = 600;
    float last = diff_train(d, toy->x, NULL, toy->n, &tc, stdout);
    double secs = rlx_now() - t0;
    printf("toy DDPM: loss %.4f after 100 steps, %.4f after 2500 (%.1fs)\n", first, last, secs);
    TU_CHECK(last < 0.8f * first, "training lowers the loss: %.4f -> %.4f", first, last);

    static float xs[(S + 1) * NS * 2];
    diff_sampler_t s = diff_sampler_defaults();
    diff_sample(d, xs, NULL, NULL, NULL, NULL, NS, S, &s, 1, 0);
    const float *x = xs + S * NS * 2;
    int near = 0, hit[8] = {0}, covered = 0;
    double dist = 0;
    for (int i = 0; i < NS; i++) {
        float dd;
        int k = digits_toy_nearest(x + 2 * i, modes, radius, &dd);
        dist += dd;
        if (dd < 4 * std) {
            near++;
            hit[k]++;
        }
    }
    for (int k = 0; k < modes; k++)
        covered += hit[k] >= NS / modes / 3;
    printf("toy samples: mean distance to the nearest mode %.3f, %.1f%% within 4 std, %d/8 modes "
           "covered\n",
           dist / NS, 100.0 * near / NS, covered);
    TU_CHECK(near >= 0.85 * NS, "samples near the modes: %d of %d", near, NS);
    TU_CHECK(covered == modes, "every mode covered: %d", covered);
    diff_destroy(&d);
    digits_destroy(&toy);
}

// ---- digits: classifier and conditional DDPM (slow) --------------------------------------

// Samples PER digits of each class with guidance w and returns the share the classifier
// recognises as their label.
static float sample_accuracy(diff_t *d, mlp_t *clf, float w, int print) {
    enum { PER = 20, NS = 10 * PER, S = 50 };
    int lab[NS], pred[NS];
    for (int i = 0; i < NS; i++)
        lab[i] = i / PER;
    float *xs = malloc((size_t)(S + 1) * NS * 64 * sizeof(float));
    diff_sampler_t s = diff_sampler_defaults();
    s.guidance = w;
    double t0 = rlx_now();
    diff_sample(d, xs, NULL, NULL, NULL, lab, NS, S, &s, 2, 0);
    double secs = rlx_now() - t0;
    const float *x = xs + (size_t)S * NS * 64;
    digits_clf_predict(clf, x, NS, pred);
    int ok = 0;
    for (int i = 0; i < NS; i++)
        ok += pred[i] == lab[i];
    printf("  %d samples (S=%d, eta 1, guidance %g) in %.2fs: classifier agrees with the label on "
           "%.1f%%\n",
           NS, S, w, secs, 100.0 * ok / NS);
    for (int k = 0; print && k < 10; k += 3) {
        printf("sample, label %d (classified %d):\n", k, pred[k * PER]);
        digits_print(stdout, x + (size_t)k * PER * 64);
    }
    free(xs);
    return (float)ok / NS;
}

// A classifier on a train/test split, then a class-conditional DDPM (hidden, blocks, steps)
// on the training split; its samples must be recognised at min_plain (no guidance) and
// min_guided (guidance 1) rates (chance: 0.1).
static void test_digits_models(int hidden, int blocks, int steps, float min_plain,
                               float min_guided) {
    char err[512];
    digits_t *all = digits_load(tu_src_path("examples/data/digits.csv.gz"), err, sizeof err);
    if (!all) {
        TU_CHECK(0, "%s", err);
        return;
    }
    digits_t *tr, *te;
    digits_split(all, 0.2f, 1, &tr, &te);
    double t0 = rlx_now();
    digits_clf_config_t cc = digits_clf_defaults();
    mlp_t *clf = digits_clf_train(tr, &cc, NULL, 0);
    float acc = digits_clf_accuracy(clf, te);
    printf("classifier: test accuracy %.4f on %d held-out digits (%.1fs)\n", acc, te->n,
           rlx_now() - t0);
    TU_CHECK(acc >= 0.95f, "classifier test accuracy %.4f >= 0.95", acc);

    diff_config_t c = diff_defaults();
    c.x_dim = 64;
    c.n_classes = 10;
    c.T = 500;
    mlp_config_t mc = {.hidden = hidden, .n_blocks = blocks, .time_dim = 32};
    diff_t *d = diff_new(&c, &mc, 400, 6);
    diff_train_config_t tc = diff_train_defaults();
    tc.batch = 128;
    tc.steps = steps;
    tc.log_every = steps / 4;
    t0 = rlx_now();
    float loss = diff_train(d, tr->x, tr->label, tr->n, &tc, stdout);
    printf("digits DDPM (H=%d K=%d, %zu params): %d steps in %.1fs, loss %.4f\n", hidden, blocks,
           d->net->ps.n, steps, rlx_now() - t0, loss);
    float plain = sample_accuracy(d, clf, 0.0f, 1), guided = sample_accuracy(d, clf, 1.0f, 0);
    TU_CHECK(plain >= min_plain, "conditional samples recognised: %.3f (want >= %.2f)", plain,
             min_plain);
    TU_CHECK(guided >= min_guided, "guided samples recognised: %.3f (want >= %.2f)", guided,
             min_guided);
    diff_destroy(&d);
    mlp_destroy(&clf);
    digits_destroy(&tr);
    digits_destroy(&te);
    digits_destroy(&all);
}

int main(int argc, char **argv) {
    tu_blas_core("test_diffusion");
    // One thread: these nets are small, and on a loaded 2-core machine two OpenMP threads ran
    // the toy training 17x slower than one (spinning against other processes).
    layers_set_threads(getenv("RLX_THREADS") ? atoi(getenv("RLX_THREADS")) : 1);
    if (argc > 1 && !strcmp(argv[1], "digits")) {
        test_digits_models(256, 3, 4000, 0.9f, 0.9f);
        return tu_finish("test_diffusion digits");
    }
    R = ref_load(tu_src_path("tests/ref/diffusion.bin"));
    if (!R) {
        fprintf(stderr, "test_diffusion: no reference file (run tests/gen_ref_diffusion.py)\n");
        return 1;
    }
    test_math("lin_", DIFF_SCHED_LINEAR);
    test_math("cos_", DIFF_SCHED_COSINE);
    test_model();
    ref_free(&R);
    test_sampling_and_fd(0.0f);
    test_sampling_and_fd(2.0f);
    test_ckpt();
    test_digits_file();
    test_toy();
    test_digits_models(128, 2, 1500, 0.5f, 0.8f);
    return tu_finish("test_diffusion");
}
