// test_gflownet.c: the GFlowNet core (gflownet.h): HyperGrid rewards and masks, the exact
// terminal distribution against closed forms and a brute-force path enumeration, sampling
// against the exact distribution, batch validation, the TB / DB / SubTB gradients against
// finite differences (on the network outputs and end to end on parameters and log Z), and a
// training run on HyperGrid D=2 H=8 with TB whose exact L1 must fall below 0.02.
//
// Measurement mode (outside ctest): GFN_TRAIN="D,H,trajectories,loss,batch[,seed]" with loss
// tb|db|subtb trains once and prints the exact L1 curve, e.g.
//   GFN_TRAIN=4,8,32768,tb,16 build/test_gflownet
// with optional overrides GFN_LR (1e-3), GFN_LOGZ_LR (0.1), GFN_GAIN (out_gain), GFN_BLOCKS
// and GFN_EVAL_EVERY (2048 trajectories).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gflownet.h"
#include "layers.h"
#include "rng.h"
#include "testutil.h"
#include "util.h"

// ---- environment ----------------------------------------------------------------------------

static void test_grid(void) {
    gfn_grid_t g = gfn_grid(2, 8);
    int s[2];
    struct {
        int a, b;
        double r;
    } cases[] = {{0, 0, 0.6}, {1, 1, 2.6}, {1, 6, 2.6}, {6, 6, 2.6}, {0, 1, 0.6},
                 {7, 7, 0.6}, {3, 3, 0.1}, {2, 1, 0.1}, {1, 3, 0.1}, {0, 7, 0.6}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        s[0] = cases[k].a, s[1] = cases[k].b;
        double r = gfn_grid_reward(&g, s);
        TU_CHECK(fabs(r - cases[k].r) < 1e-12, "R(%d,%d) = %g, want %g", s[0], s[1], r, cases[k].r);
    }
    TU_CHECK(gfn_grid_n_states(&g) == 64 && gfn_grid_max_len(&g) == 15, "grid sizes");
    int roundtrip = 1;
    for (int32_t x = 0; x < 64; x++) {
        gfn_grid_coords(&g, x, s);
        roundtrip &= gfn_grid_index(&g, s) == x && x == s[0] + 8 * s[1];
    }
    TU_CHECK(roundtrip, "index <-> coords");
    float x[16];
    s[0] = 3, s[1] = 7;
    gfn_grid_encode(&g, s, x);
    float want[16] = {0};
    want[3] = want[15] = 1;
    tu_close("one-hot encoding", x, want, 16, 0, 0);

    gfn_evaluator_t *ev = gfn_evaluator_new(&g);
    double z = 0;
    for (int x0 = 0; x0 < 8; x0++)
        for (int x1 = 0; x1 < 8; x1++) {
            s[0] = x0, s[1] = x1;
            z += gfn_grid_reward(&g, s);
        }
    // 64 states at 0.1, 4x4 outer-band states add 0.5, 2x2 modes add 2.0
    TU_CHECK(fabs(z - (6.4 + 8.0 + 8.0)) < 1e-9, "Z = %g", z);
    TU_CHECK(ev->n_modes == 4 && fabs(ev->logz_true - log(z)) < 1e-12, "modes %d logZ %g",
             ev->n_modes, ev->logz_true);
    gfn_evaluator_destroy(&ev);
    gfn_grid_t g4 = gfn_grid(4, 8);
    ev = gfn_evaluator_new(&g4);
    TU_CHECK(ev->n_modes == 16, "D=4: %d modes, want 16", ev->n_modes);
    gfn_evaluator_destroy(&ev);
}

// ---- exact distribution -----------------------------------------------------------------

// Uniform P_F over the legal actions of every state.
static void uniform_pf(const gfn_grid_t *g, double *pf) {
    int D = g->ndim, s[8];
    for (int32_t x = 0; x < gfn_grid_n_states(g); x++) {
        gfn_grid_coords(g, x, s);
        int k = 1;
        for (int d = 0; d < D; d++)
            k += s[d] < g->height - 1;
        for (int d = 0; d < D; d++)
            pf[(size_t)x * (D + 1) + d] = s[d] < g->height - 1 ? 1.0 / k : 0;
        pf[(size_t)x * (D + 1) + D] = 1.0 / k;
    }
}

// Brute force: enumerate every path from s with its probability (an independent reference).
static void enumerate_paths(const gfn_grid_t *g, const double *pf, int *s, double prob,
                            double *pmf) {
    int D = g->ndim;
    int32_t x = gfn_grid_index(g, s);
    pmf[x] += prob * pf[(size_t)x * (D + 1) + D];
    for (int d = 0; d < D; d++)
        if (s[d] < g->height - 1) {
            s[d]++;
            enumerate_paths(g, pf, s, prob * pf[(size_t)x * (D + 1) + d], pmf);
            s[d]--;
        }
}

static void test_exact_pmf(void) {
    // D = 1, uniform: two choices below the top, so p(s) = 2^-(s+1) and p(H-1) = 2^-(H-1).
    gfn_grid_t g1 = gfn_grid(1, 6);
    double pf1[12], reach1[6], pmf1[6];
    uniform_pf(&g1, pf1);
    gfn_exact_pmf(&g1, pf1, reach1, pmf1);
    float got[64], want[64];
    for (int s = 0; s < 6; s++) {
        got[s] = (float)pmf1[s];
        want[s] = (float)(s < 5 ? ldexp(1, -(s + 1)) : ldexp(1, -5));
    }
    tu_close("exact pmf D=1 closed form", got, want, 6, 1e-7f, 0);

    // D = 2, H = 2, uniform: p(0,0) = 1/3, p(1,0) = p(0,1) = 1/3 * 1/2, p(1,1) = 1/3.
    gfn_grid_t g22 = gfn_grid(2, 2);
    double pf22[12], reach22[4], pmf22[4];
    uniform_pf(&g22, pf22);
    gfn_exact_pmf(&g22, pf22, reach22, pmf22);
    float want22[4] = {1 / 3.f, 1 / 6.f, 1 / 6.f, 1 / 3.f};
    for (int s = 0; s < 4; s++)
        got[s] = (float)pmf22[s];
    tu_close("exact pmf D=2 H=2 closed form", got, want22, 4, 1e-7f, 0);

    // D = 3, H = 4, a random P_F: the DP against path enumeration.
    gfn_grid_t g = gfn_grid(3, 4);
    double pf[64 * 4], reach[64], pmf[64], ref[64] = {0};
    rng_t r;
    rng_seed(&r, 5);
    int s[3];
    for (int32_t x = 0; x < 64; x++) {
        gfn_grid_coords(&g, x, s);
        double tot = 0;
        for (int d = 0; d <= 3; d++) {
            double w = (d == 3 || s[d] < 3) ? 0.05 + rng_uniform(&r) : 0;
            pf[x * 4 + d] = w;
            tot += w;
        }
        for (int d = 0; d <= 3; d++)
            pf[x * 4 + d] /= tot;
    }
    gfn_exact_pmf(&g, pf, reach, pmf);
    s[0] = s[1] = s[2] = 0;
    enumerate_paths(&g, pf, s, 1.0, ref);
    double sum = 0;
    for (int x = 0; x < 64; x++) {
        got[x] = (float)pmf[x];
        want[x] = (float)ref[x];
        sum += pmf[x];
    }
    tu_close("exact pmf vs enumeration", got, want, 64, 1e-7f, 1e-6f);
    TU_CHECK(fabs(sum - 1) < 1e-12, "pmf sums to %.15g", sum);

    // Through a policy: zero output weights give uniform logits, so gfn_evaluate must equal
    // the enumeration with uniform P_F; and its L1 the directly computed one.
    gfn_grid_t gp = gfn_grid(2, 5);
    gfn_policy_config_t pc = gfn_policy_defaults();
    pc.hidden = 16;
    gfn_policy_t *p = gfn_policy_new(&gp, &pc, 4, 1);
    memset(p->net->w.w_out, 0, (size_t)p->n_out * 16 * sizeof(float));
    memset(p->net->w.b_out, 0, (size_t)p->n_out * sizeof(float));
    gfn_evaluator_t *ev = gfn_evaluator_new(&gp);
    gfn_eval_t e;
    gfn_evaluate(ev, p, &e);
    double pfu[25 * 3], refu[25] = {0}, l1 = 0, z = 0;
    uniform_pf(&gp, pfu);
    int s2[2] = {0, 0};
    enumerate_paths(&gp, pfu, s2, 1.0, refu);
    for (int x = 0; x < 25; x++) {
        gfn_grid_coords(&gp, x, s2);
        z += gfn_grid_reward(&gp, s2);
    }
    for (int x = 0; x < 25; x++) {
        gfn_grid_coords(&gp, x, s2);
        l1 += fabs(refu[x] - gfn_grid_reward(&gp, s2) / z);
        got[x] = (float)ev->pmf[x];
        want[x] = (float)refu[x];
    }
    tu_close("gfn_evaluate, uniform logits", got, want, 25, 1e-7f, 1e-6f);
    TU_CHECK(fabs(e.l1 - l1) < 1e-6 && fabs(e.l1_mean - l1 / 25) < 1e-7,
             "L1 %.9g (mean %.9g), want %.9g", e.l1, e.l1_mean, l1);
    TU_CHECK(fabs(e.logz_err - log(z)) < 1e-6 && fabs(e.logf0_err - log(z)) < 1e-6,
             "logZ error %g, log F(s0) error %g, want %g", e.logz_err, e.logf0_err, log(z));
    gfn_evaluator_destroy(&ev);
    gfn_policy_destroy(&p);
}

// ---- sampling ---------------------------------------------------------------------------

static void test_sampling(void) {
    gfn_grid_t g = gfn_grid(2, 4);
    gfn_policy_config_t pc = gfn_policy_defaults();
    pc.hidden = 32;
    enum { B = 64, ROUNDS = 800 };
    gfn_policy_t *p = gfn_policy_new(&g, &pc, B, 7);
    p->net->w.b_out[g.ndim] = -1.0f; // stop less often, so the mass spreads over the grid
    gfn_batch_t *b = gfn_batch_new(&g, B);
    gfn_evaluator_t *ev = gfn_evaluator_new(&g);
    gfn_eval_t e;
    gfn_evaluate(ev, p, &e);
    rng_t r;
    rng_seed(&r, 11);
    double counts[16] = {0};
    char err[256] = "";
    int bad = 0;
    double stale = 0, stale_pb = 0;
    gfn_loss_config_t lc = {.kind = GFN_LOSS_TB, .lambda = 0.9f};
    for (int k = 0; k < ROUNDS; k++) {
        gfn_sample(p, b, B, 0.0f, &r);
        bad += gfn_batch_check(&g, b, err, sizeof err) != 0;
        gfn_evaluator_observe(ev, b);
        for (int i = 0; i < B; i++)
            counts[b->states[i * b->max_len + b->len[i] - 1]] += 1.0 / (B * ROUNDS);
        if (k < 4) { // recorded log-probs == recomputed from the network (loss's forward)
            gfn_stats_t st;
            gfn_loss(p, b, &lc, &st);
            if (st.max_stale > stale)
                stale = st.max_stale;
            int row = 0, s[2];
            double lpb[2];
            for (int i = 0; i < B; i++)
                for (int t = 0; t < b->len[i]; t++, row++)
                    if (t > 0) {
                        gfn_grid_coords(&g, b->states[i * b->max_len + t], s);
                        gfn_policy_logprobs(p, p->net->a.out + (size_t)row * p->n_out, s, NULL,
                                            lpb);
                        double d = fabs(lpb[b->actions[i * b->max_len + t - 1]] -
                                        b->logpb[i * b->max_len + t - 1]);
                        stale_pb = d > stale_pb ? d : stale_pb;
                    }
        }
    }
    TU_CHECK(bad == 0, "%d sampled batches fail gfn_batch_check: %s", bad, err);
    TU_CHECK(stale < 1e-5 && stale_pb < 1e-5, "sampler log P_F off by %g, log P_B by %g", stale,
             stale_pb);
    double l1 = 0;
    for (int x = 0; x < 16; x++)
        l1 += fabs(counts[x] - ev->pmf[x]);
    // 51200 samples over 16 states: sampling noise in L1 is about 0.01
    TU_CHECK(l1 < 0.03, "empirical vs exact terminal distribution: L1 %g", l1);
    printf("ok   sampler vs exact pmf: L1 %.4f over %d trajectories\n", l1, B * ROUNDS);

    // epsilon-greedy: the recorded log-prob is the mixture's
    gfn_sample(p, b, B, 0.5f, &r);
    gfn_stats_t st;
    gfn_loss(p, b, &lc, &st);
    TU_CHECK(st.max_stale > 1e-3, "epsilon 0.5 log-probs equal the on-policy ones");
    TU_CHECK(gfn_batch_check(&g, b, err, sizeof err) == 0, "epsilon batch: %s", err);
    gfn_evaluator_destroy(&ev);
    gfn_batch_destroy(&b);
    gfn_policy_destroy(&p);
}

static void test_batch_check(void) {
    gfn_grid_t g = gfn_grid(2, 4);
    gfn_batch_t *b = gfn_batch_new(&g, 2);
    // (0,0) -inc0-> (1,0) -inc1-> (1,1) -stop; (0,0) -stop
    int L = b->max_len;
    b->n = 2;
    b->len[0] = 3, b->len[1] = 1;
    int32_t st[3] = {0, 1, 5}, ac[3] = {0, 1, 2};
    memcpy(b->states, st, sizeof st);
    memcpy(b->actions, ac, sizeof ac);
    b->states[L] = 0, b->actions[L] = 2;
    b->logr[0] = b->logr[1] = -1;
    char err[256];
    TU_CHECK(gfn_batch_check(&g, b, err, sizeof err) == 0, "valid batch refused: %s", err);
    struct {
        int *where;
        int val;
    } faults[] = {{&b->len[0], 0},     {&b->len[0], 2},     {&b->len[1], 8},
                  {&b->states[0], 1},  {&b->states[2], 6},  {&b->actions[1], 2},
                  {&b->actions[2], 0}, {&b->actions[0], 3}, {&b->states[1], -1}};
    for (size_t k = 0; k < sizeof faults / sizeof faults[0]; k++) {
        int old = *faults[k].where;
        *faults[k].where = faults[k].val;
        TU_CHECK(gfn_batch_check(&g, b, err, sizeof err) != 0, "fault %zu accepted", k);
        *faults[k].where = old;
    }
    b->logr[1] = NAN;
    TU_CHECK(gfn_batch_check(&g, b, err, sizeof err) != 0, "NaN log R accepted");
    b->logr[1] = -1;
    // a step past the border: (3,0) cannot increment coordinate 0
    b->len[0] = 5;
    int32_t st2[5] = {0, 1, 2, 3, 4}, ac2[5] = {0, 0, 0, 0, 2};
    memcpy(b->states, st2, sizeof st2);
    memcpy(b->actions, ac2, sizeof ac2);
    TU_CHECK(gfn_batch_check(&g, b, err, sizeof err) != 0, "step past the border accepted");
    gfn_batch_destroy(&b);
}

// ---- gradients --------------------------------------------------------------------------

static const char *loss_name(gfn_loss_kind_t k) {
    return k == GFN_LOSS_TB ? "tb" : k == GFN_LOSS_DB ? "db" : "subtb";
}

// d loss / d outputs and d loss / d log Z against central differences, every output entry.
static void check_output_grads(gfn_policy_t *p, const gfn_batch_t *b, gfn_loss_kind_t kind,
                               rng_t *r) {
    gfn_loss_config_t lc = {.kind = kind, .lambda = 0.9f};
    int rows = 0;
    for (int i = 0; i < b->n; i++)
        rows += b->len[i];
    size_t n = (size_t)rows * p->n_out;
    float *out = malloc(n * sizeof *out), *dout = malloc(n * sizeof *dout);
    float *fd = malloc((n + 1) * sizeof *fd), *an = malloc((n + 1) * sizeof *an);
    for (size_t j = 0; j < n; j++)
        out[j] = 1.5f * rng_normal(r);
    float logz = 0.7f, dz = 0, scratch_dz;
    gfn_stats_t st;
    gfn_loss_outputs(p, b, &lc, out, logz, dout, &dz, &st);
    TU_CHECK(st.loss > 0.1, "%s loss %g too small to test", loss_name(kind), st.loss);
    memcpy(an, dout, n * sizeof *an);
    an[n] = dz;
    const float h = 1e-2f;
    for (size_t j = 0; j <= n; j++) {
        float *v = j < n ? &out[j] : &logz, v0 = *v;
        *v = v0 + h;
        double lp = gfn_loss_outputs(p, b, &lc, out, logz, dout, &scratch_dz, NULL);
        *v = v0 - h;
        double lm = gfn_loss_outputs(p, b, &lc, out, logz, dout, &scratch_dz, NULL);
        *v = v0;
        fd[j] = (float)((lp - lm) / (2.0 * (double)h));
    }
    char what[64];
    snprintf(what, sizeof what, "%s%s d/d outputs", loss_name(kind),
             p->cfg.uniform_pb ? " uniform-pb" : "");
    // the loss is quadratic in log-probs; central differences at h = 1e-2 err by ~h^2 * f'''
    tu_close(what, an, fd, n + 1, 2e-5f, 2e-3f);
    if (kind != GFN_LOSS_TB)
        TU_CHECK(an[n] == 0, "%s: log Z gradient %g, want 0", loss_name(kind), an[n]);
    free(out), free(dout), free(fd), free(an);
}

// End to end: gfn_loss's parameter and log Z gradients against central differences.
static void check_param_grads(gfn_policy_t *p, const gfn_batch_t *b, gfn_loss_kind_t kind,
                              rng_t *r) {
    gfn_loss_config_t lc = {.kind = kind, .lambda = 0.9f};
    enum { Q = 24 };
    paramset_zero_grad(&p->net->ps);
    paramset_zero_grad(&p->logz);
    gfn_loss(p, b, &lc, NULL);
    float an[Q + 1], fd[Q + 1];
    size_t idx[Q];
    size_t n = p->net->ps.n, out_lo = (size_t)(p->net->w.w_out - p->net->ps.w);
    for (int q = 0; q < Q; q++) { // half of the probes on the output layer, half anywhere
        idx[q] = q % 2 ? out_lo + rng_below(r, (uint32_t)(n - out_lo)) : rng_below(r, (uint32_t)n);
        an[q] = p->net->ps.g[idx[q]];
    }
    an[Q] = p->logz.g[0];
    gfn_stats_t st;
    for (int q = 0; q <= Q; q++) {
        float *w = q < Q ? &p->net->ps.w[idx[q]] : &p->logz.w[0], w0 = *w;
        float h = 1e-2f * (fabsf(w0) > 0.1f ? fabsf(w0) : 0.1f);
        *w = w0 + h;
        double lp = gfn_loss(p, b, &lc, &st);
        *w = w0 - h;
        double lm = gfn_loss(p, b, &lc, &st);
        *w = w0;
        fd[q] = (float)((lp - lm) / (2.0 * (double)h));
    }
    char what[64];
    snprintf(what, sizeof what, "%s%s d/d params, log Z", loss_name(kind),
             p->cfg.uniform_pb ? " uniform-pb" : "");
    // fp32 network, steps of 1% of a weight: finite differences carry ~1e-3 relative noise
    tu_close(what, an, fd, Q + 1, 2e-3f, 3e-2f);
}

static void test_gradients(void) {
    gfn_grid_t g = gfn_grid(3, 4);
    rng_t r;
    rng_seed(&r, 3);
    for (int upb = 0; upb <= 1; upb++) {
        gfn_policy_config_t pc = gfn_policy_defaults();
        pc.hidden = 16;
        pc.uniform_pb = upb;
        gfn_policy_t *p = gfn_policy_new(&g, &pc, 6, 21 + upb);
        gfn_batch_t *b = gfn_batch_new(&g, 6);
        gfn_sample(p, b, 6, 0.3f, &r); // exploratory: longer and varied trajectories
        b->len[0] = 1; // make sure a stop-at-s_0 trajectory is in (valid: s_0 is terminal)
        b->actions[0] = g.ndim;
        b->logr[0] = (float)log(gfn_grid_reward(&g, (int[]){0, 0, 0}));
        char err[256];
        TU_CHECK(gfn_batch_check(&g, b, err, sizeof err) == 0, "gradient batch: %s", err);
        for (int k = GFN_LOSS_TB; k <= GFN_LOSS_SUBTB; k++) {
            check_output_grads(p, b, (gfn_loss_kind_t)k, &r);
            p->logz.w[0] = 0.5f; // residuals away from zero so the gradient is not tiny
            check_param_grads(p, b, (gfn_loss_kind_t)k, &r);
        }
        gfn_batch_destroy(&b);
        gfn_policy_destroy(&p);
    }
}

// SubTB's weights: with one transition it is DB's single residual; the weights of a
// trajectory sum to 1 (a constant residual r everywhere gives loss r^2).
static void test_subtb_weights(void) {
    gfn_grid_t g = gfn_grid(2, 4);
    gfn_policy_config_t pc = gfn_policy_defaults();
    pc.hidden = 8;
    pc.uniform_pb = 1;
    gfn_policy_t *p = gfn_policy_new(&g, &pc, 1, 1);
    gfn_batch_t *b = gfn_batch_new(&g, 1);
    // (0,0) -> (1,0) -> (1,1) -> stop, with P_F made uniform by zero logits
    b->n = 1, b->len[0] = 3;
    int32_t st[3] = {0, 1, 5}, ac[3] = {0, 1, 2};
    memcpy(b->states, st, sizeof st);
    memcpy(b->actions, ac, sizeof ac);
    b->logr[0] = 0.0f;
    float out[3 * 4] = {0}, dout[12], dz;
    // uniform P_F: 3 choices at (0,0) and (1,0), and P_B(.|(1,0)) = 1, P_B(.|(1,1)) = 1/2.
    // Set log F so every residual of length 1 is c = 0.25: u_t + lpf_t - u_t+1 - lpb_t = c.
    double lpf[3] = {-log(3.0), -log(3.0), -log(3.0)}, lpb[3] = {0, -log(2.0), 0};
    double u[4];
    u[3] = 0; // log R
    for (int t = 2; t >= 0; t--)
        u[t] = 0.25 + u[t + 1] + lpb[t] - lpf[t];
    for (int t = 0; t < 3; t++)
        out[t * 4 + 3] = (float)u[t];
    // a sub-trajectory of m steps then has residual m c; weights lambda^(m-1) per (T-m+1)
    double lam = 0.5, c = 0.25, num = 0, den = 0;
    for (int m = 1; m <= 3; m++) {
        num += (3 - m + 1) * pow(lam, m - 1) * (m * c) * (m * c);
        den += (3 - m + 1) * pow(lam, m - 1);
    }
    gfn_loss_config_t lc = {.kind = GFN_LOSS_SUBTB, .lambda = (float)lam};
    double got = gfn_loss_outputs(p, b, &lc, out, 0, dout, &dz, NULL);
    TU_CHECK(fabs(got - num / den) < 1e-6, "SubTB loss %.9g, want %.9g", got, num / den);
    lc.kind = GFN_LOSS_DB;
    got = gfn_loss_outputs(p, b, &lc, out, 0, dout, &dz, NULL);
    TU_CHECK(fabs(got - c * c) < 1e-6, "DB loss %.9g, want %.9g", got, c * c);
    lc.kind = GFN_LOSS_TB; // log Z = u_0 + 0 gives the TB residual 3c
    got = gfn_loss_outputs(p, b, &lc, out, (float)u[0], dout, &dz, NULL);
    TU_CHECK(fabs(got - 9 * c * c) < 1e-5, "TB loss %.9g, want %.9g", got, 9 * c * c);
    gfn_batch_destroy(&b);
    gfn_policy_destroy(&p);
}

// ---- training ----------------------------------------------------------------------------

typedef struct {
    long traj_at_target; // trajectories when the exact L1 first fell to the target; -1 never
    double final_l1;     // exact L1 at the end
    double final_l1_mean;
    int modes_visited;
    double seconds;
} train_result_t;

// On-policy training; prints the exact L1 every eval_every trajectories. Stops at max_traj or
// (stop_at_target) when L1 <= target.
static train_result_t train(int D, int H, gfn_loss_kind_t kind, int batch, long max_traj,
                            double target, int stop_at_target, long eval_every, uint64_t seed) {
    gfn_grid_t g = gfn_grid(D, H);
    gfn_policy_config_t pc = gfn_policy_defaults();
    pc.state_flow = kind != GFN_LOSS_TB;
    if (getenv("GFN_GAIN"))
        pc.out_gain = (float)atof(getenv("GFN_GAIN"));
    if (getenv("GFN_BLOCKS"))
        pc.n_blocks = atoi(getenv("GFN_BLOCKS"));
    gfn_policy_t *p = gfn_policy_new(&g, &pc, batch, seed);
    gfn_batch_t *b = gfn_batch_new(&g, batch);
    gfn_evaluator_t *ev = gfn_evaluator_new(&g);
    adamw_config_t on = adamw_defaults(), oz = adamw_defaults();
    on.lr = getenv("GFN_LR") ? (float)atof(getenv("GFN_LR")) : 1e-3f;
    oz.lr = getenv("GFN_LOGZ_LR") ? (float)atof(getenv("GFN_LOGZ_LR")) : 0.1f;
    gfn_loss_config_t lc = {.kind = kind, .lambda = 0.9f};
    rng_t r;
    rng_seed2(&r, seed, 1);
    train_result_t res = {.traj_at_target = -1};
    double t0 = rlx_now();
    gfn_eval_t e;
    gfn_stats_t st = {0};
    printf("train D=%d H=%d %s batch %d: trajectories, exact L1 (sum), L1 mean (torchgfn), "
           "logZ err (TB: log Z, else log F(s0)), mode mass, modes visited, loss, s\n",
           D, H, loss_name(kind), batch);
    long next_eval = 0;
    for (long n = 0;;) {
        if (n >= next_eval || n >= max_traj) {
            gfn_evaluate(ev, p, &e);
            printf("  %7ld  %.5f  %.6f  %.4f  %.3f  %d/%d  %.4f  %.1f\n", n, e.l1, e.l1_mean,
                   kind == GFN_LOSS_TB ? e.logz_err : e.logf0_err, e.mode_mass, e.modes_visited,
                   ev->n_modes, st.loss, rlx_now() - t0);
            fflush(stdout);
            next_eval += eval_every;
            if (e.l1 <= target && res.traj_at_target < 0)
                res.traj_at_target = n;
            if (n >= max_traj || (stop_at_target && res.traj_at_target >= 0))
                break;
        }
        gfn_sample(p, b, batch, 0.0f, &r);
        gfn_evaluator_observe(ev, b);
        gfn_train_step(p, b, &lc, &on, &oz, &st);
        n += batch;
    }
    res.final_l1 = e.l1;
    res.final_l1_mean = e.l1_mean;
    res.modes_visited = e.modes_visited;
    res.seconds = rlx_now() - t0;
    gfn_evaluator_destroy(&ev);
    gfn_batch_destroy(&b);
    gfn_policy_destroy(&p);
    return res;
}

static int measure(const char *spec) {
    int D = 0, H = 0, batch = 16;
    long n = 0;
    unsigned long long seed = 1;
    char loss[16] = "tb";
    if (sscanf(spec, "%d,%d,%ld,%15[a-z],%d,%llu", &D, &H, &n, loss, &batch, &seed) < 3) {
        fprintf(stderr, "GFN_TRAIN=D,H,trajectories[,tb|db|subtb[,batch[,seed]]]\n");
        return 2;
    }
    gfn_loss_kind_t k = !strcmp(loss, "db")      ? GFN_LOSS_DB
                        : !strcmp(loss, "subtb") ? GFN_LOSS_SUBTB
                                                 : GFN_LOSS_TB;
    const char *every = getenv("GFN_EVAL_EVERY");
    train_result_t res = train(D, H, k, batch, n, 0.012, 0, every ? atol(every) : 2048, seed);
    printf("result: D=%d H=%d %s batch %d: L1 %.5f (mean %.6f) after %ld trajectories; first "
           "L1 <= 0.012 at %ld; modes visited %d; %.1f s\n",
           D, H, loss_name(k), batch, res.final_l1, res.final_l1_mean, n, res.traj_at_target,
           res.modes_visited, res.seconds);
    return 0;
}

int main(void) {
    tu_blas_core("test_gflownet");
    layers_set_threads(1);
    const char *spec = getenv("GFN_TRAIN");
    if (spec && *spec)
        return measure(spec);
    test_grid();
    test_exact_pmf();
    test_batch_check();
    test_sampling();
    test_gradients();
    test_subtb_weights();

    train_result_t res = train(2, 8, GFN_LOSS_TB, 16, 200000, 0.02, 1, 2048, 1);
    TU_CHECK(res.traj_at_target >= 0,
             "TB on HyperGrid 2x8: exact L1 %.4f > 0.02 after the "
             "budget",
             res.final_l1);
    TU_CHECK(res.modes_visited == 4, "%d of 4 modes visited", res.modes_visited);
    printf("%s TB HyperGrid D=2 H=8: L1 %.4f <= 0.02 at %ld trajectories (%.1f s)\n",
           res.traj_at_target >= 0 ? "ok  " : "FAIL", res.final_l1, res.traj_at_target,
           res.seconds);
    // DB and SubTB end to end (their gradients are checked above; this checks they learn)
    for (int k = GFN_LOSS_DB; k <= GFN_LOSS_SUBTB; k++) {
        res = train(2, 8, (gfn_loss_kind_t)k, 16, 32768, 0.05, 1, 2048, 2);
        TU_CHECK(res.traj_at_target >= 0,
                 "%s on HyperGrid 2x8: exact L1 %.4f > 0.05 after "
                 "the budget",
                 loss_name((gfn_loss_kind_t)k), res.final_l1);
    }
    return tu_finish("test_gflownet");
}
