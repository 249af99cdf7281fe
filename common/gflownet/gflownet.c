// gflownet.c: HyperGrid, the GFlowNet policy and sampler, the TB/DB/SubTB losses with their
// gradients on the network outputs, and the exact evaluation by DP (gflownet.h).
//
// All the balance losses are one computation: a trajectory with T transitions has positions
// 0..T, u_0..u_{T-1} the state flows log F(s_t) (log Z in place of u_0 for TB), u_T = log R(x)
// (the flow into the sink through the stop, whose log P_B is 0), and cumulative sums cf, cb of
// log P_F and log P_B. The residual of the sub-trajectory j -> k is
//   r_jk = u_j + (cf_k - cf_j) - u_k - (cb_k - cb_j),
// TB uses (0, T) alone, DB every (t, t+1), SubTB every pair with its geometric weight; the
// gradient of sum w r^2 lands on u and on the cumulative sums, and a suffix sum turns the
// latter into per-transition gradients, O(T^2) per trajectory for SubTB.
#include "gflownet.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "layers.h"
#include "util.h"

#define MAX_DIM 64 // stack arrays of per-action values; gfn_grid refuses a larger D

// ---- HyperGrid -------------------------------------------------------------------------

gfn_grid_t gfn_grid(int ndim, int height) {
    if (ndim < 1 || ndim > MAX_DIM || height < 2)
        RLX_DIE("bad HyperGrid: ndim %d height %d (need 1 <= ndim <= %d, height >= 2)", ndim,
                height, MAX_DIM);
    double n = pow((double)height, (double)ndim);
    if (n >= 2147483648.0)
        RLX_DIE("HyperGrid %d^%d has %.3g states: state indices are int32", height, ndim, n);
    return (gfn_grid_t){.ndim = ndim, .height = height, .r0 = 0.1, .r1 = 0.5, .r2 = 2.0};
}

int64_t gfn_grid_n_states(const gfn_grid_t *g) {
    int64_t n = 1;
    for (int d = 0; d < g->ndim; d++)
        n *= g->height;
    return n;
}

int gfn_grid_max_len(const gfn_grid_t *g) {
    return g->ndim * (g->height - 1) + 1;
}

int32_t gfn_grid_index(const gfn_grid_t *g, const int *s) {
    int32_t idx = 0;
    for (int d = g->ndim - 1; d >= 0; d--) {
        assert(s[d] >= 0 && s[d] < g->height);
        idx = idx * g->height + s[d];
    }
    return idx;
}

void gfn_grid_coords(const gfn_grid_t *g, int32_t idx, int *s) {
    assert(idx >= 0);
    for (int d = 0; d < g->ndim; d++) {
        s[d] = idx % g->height;
        idx /= g->height;
    }
}

static int32_t stride(const gfn_grid_t *g, int d) {
    int32_t st = 1;
    for (int k = 0; k < d; k++)
        st *= g->height;
    return st;
}

// a_d = |s_d/(H-1) - 0.5| in the two bands of the reward.
static int in_outer(const gfn_grid_t *g, int v) {
    double a = fabs((double)v / (g->height - 1) - 0.5);
    return 0.25 < a;
}
static int in_mode_band(const gfn_grid_t *g, int v) {
    double a = fabs((double)v / (g->height - 1) - 0.5);
    return 0.3 < a && a < 0.4;
}

double gfn_grid_reward(const gfn_grid_t *g, const int *s) {
    int outer = 1, band = 1;
    for (int d = 0; d < g->ndim; d++) {
        outer &= in_outer(g, s[d]);
        band &= in_mode_band(g, s[d]);
    }
    return g->r0 + g->r1 * outer + g->r2 * band;
}

int gfn_grid_is_mode(const gfn_grid_t *g, const int *s) {
    int band = 1;
    for (int d = 0; d < g->ndim; d++)
        band &= in_mode_band(g, s[d]);
    return band; // the mode band lies inside the outer band, so R = R0 + R1 + R2 there
}

void gfn_grid_encode(const gfn_grid_t *g, const int *s, float *x) {
    int H = g->height;
    memset(x, 0, (size_t)g->ndim * H * sizeof *x);
    for (int d = 0; d < g->ndim; d++)
        x[d * H + s[d]] = 1.0f;
}

// ---- trajectories ------------------------------------------------------------------------

gfn_batch_t *gfn_batch_new(const gfn_grid_t *g, int max_traj) {
    assert(max_traj >= 1);
    gfn_batch_t *b = rlx_xcalloc(1, sizeof *b, "gfn batch");
    int L = gfn_grid_max_len(g);
    size_t nt = (size_t)max_traj * L;
    b->max_traj = max_traj;
    b->max_len = L;
    b->arena = rlx_alloc_floats((size_t)max_traj * 2 + 4 * nt, "gfn batch");
    float *q = b->arena;
    b->len = (int *)q, q += max_traj;
    b->states = (int32_t *)q, q += nt;
    b->actions = (int32_t *)q, q += nt;
    b->logpf = q, q += nt;
    b->logpb = q, q += nt;
    b->logr = q;
    return b;
}

void gfn_batch_destroy(gfn_batch_t **self_p) {
    if (!self_p || !*self_p)
        return;
    free((*self_p)->arena);
    free(*self_p);
    *self_p = NULL;
}

int gfn_batch_check(const gfn_grid_t *g, const gfn_batch_t *b, char *err, size_t errlen) {
    int D = g->ndim, H = g->height, L = b->max_len;
    int s[MAX_DIM];
    if (L != gfn_grid_max_len(g) || b->n < 0 || b->n > b->max_traj) {
        snprintf(err, errlen, "batch shape: n %d max_traj %d max_len %d (grid wants %d)", b->n,
                 b->max_traj, L, gfn_grid_max_len(g));
        return -1;
    }
    int64_t ns = gfn_grid_n_states(g);
    for (int i = 0; i < b->n; i++) {
        int T = b->len[i];
        if (T < 1 || T > L) {
            snprintf(err, errlen, "trajectory %d: length %d outside [1, %d]", i, T, L);
            return -1;
        }
        if (b->states[(size_t)i * L] != 0) {
            snprintf(err, errlen, "trajectory %d: starts at state %d, not 0", i,
                     b->states[(size_t)i * L]);
            return -1;
        }
        if (!isfinite(b->logr[i])) {
            snprintf(err, errlen, "trajectory %d: log R %g not finite", i, b->logr[i]);
            return -1;
        }
        for (int t = 0; t < T; t++) {
            int32_t st = b->states[(size_t)i * L + t], a = b->actions[(size_t)i * L + t];
            if (st < 0 || st >= ns || a < 0 || a > D || (a == D) != (t == T - 1)) {
                snprintf(err, errlen,
                         "trajectory %d step %d: state %d action %d (stop must be "
                         "last and only last)",
                         i, t, st, a);
                return -1;
            }
            if (t == T - 1)
                break;
            gfn_grid_coords(g, st, s);
            int32_t next = b->states[(size_t)i * L + t + 1];
            if (s[a] >= H - 1 || next != st + stride(g, a)) {
                snprintf(err, errlen,
                         "trajectory %d step %d: action %d from state %d does not "
                         "lead to state %d",
                         i, t, a, st, next);
                return -1;
            }
        }
    }
    return 0;
}

// ---- policy ------------------------------------------------------------------------------

gfn_policy_config_t gfn_policy_defaults(void) {
    return (gfn_policy_config_t){.hidden = 256,
                                 .n_blocks = 1,
                                 .uniform_pb = 0,
                                 .state_flow = 1,
                                 .logz_init = 0.0f,
                                 .out_gain = 0.1f};
}

// Scratch doubles of the losses: u, cf, cb, gu, gcf, gcb, each max_len + 1.
#define LOSS_ARRAYS 6

gfn_policy_t *gfn_policy_new(const gfn_grid_t *g, const gfn_policy_config_t *cfg, int max_traj,
                             uint64_t seed) {
    assert(max_traj >= 1);
    gfn_policy_t *p = rlx_xcalloc(1, sizeof *p, "gfn policy");
    int D = g->ndim, H = g->height;
    p->env = *g;
    p->cfg = *cfg;
    p->max_traj = max_traj;
    p->max_len = gfn_grid_max_len(g);
    p->max_rows = max_traj * p->max_len;
    p->n_out = D + 1;
    p->off_pb = -1;
    p->off_logf = -1;
    if (!cfg->uniform_pb) {
        p->off_pb = p->n_out;
        p->n_out += D;
    }
    if (cfg->state_flow)
        p->off_logf = p->n_out++;
    mlp_config_t mc = {.in_dim = D * H,
                       .hidden = cfg->hidden,
                       .n_blocks = cfg->n_blocks,
                       .out_dim = p->n_out,
                       .time_dim = 0};
    p->net = mlp_new(&mc, p->max_rows, seed);
    for (int j = 0; j < cfg->hidden; j++)
        p->net->w.lnf_w[j] = cfg->out_gain;

    p->logz = (paramset_t){.n = 1,
                           .w = &p->logz_buf[0],
                           .g = &p->logz_buf[1],
                           .m = &p->logz_buf[2],
                           .v = &p->logz_buf[3],
                           .step = 0};
    p->logz_buf[0] = cfg->logz_init;

    size_t nscr = (size_t)LOSS_ARRAYS * (p->max_len + 1);
    size_t nx = (size_t)p->max_rows * D * H, nd = (size_t)p->max_rows * p->n_out;
    p->arena = rlx_alloc_floats(2 * nscr + nx + nd + (size_t)max_traj * (D + 1), "gfn policy");
    float *q = p->arena;
    p->scratch = (double *)q, q += 2 * nscr; // the arena is 64-byte aligned
    p->x = q, q += nx;
    p->dout = q, q += nd;
    p->coords = (int *)q, q += (size_t)max_traj * D;
    p->active = (int *)q;
    return p;
}

void gfn_policy_destroy(gfn_policy_t **self_p) {
    if (!self_p || !*self_p)
        return;
    mlp_destroy(&(*self_p)->net);
    free((*self_p)->arena);
    free(*self_p);
    *self_p = NULL;
}

// out(n) = logits - logsumexp over the legal entries, -inf elsewhere; returns the count legal.
static int masked_log_softmax(const float *logits, const uint8_t *legal, int n, double *out) {
    double mx = -INFINITY;
    int k = 0;
    for (int j = 0; j < n; j++)
        if (legal[j] && logits[j] > mx)
            mx = logits[j];
    double z = 0;
    for (int j = 0; j < n; j++)
        if (legal[j]) {
            z += exp(logits[j] - mx);
            k++;
        }
    double lse = mx + log(z);
    for (int j = 0; j < n; j++)
        out[j] = legal[j] ? logits[j] - lse : -INFINITY;
    return k;
}

// Legal forward actions (D+1) and backward actions (D) of s.
static void legal_fwd(const gfn_grid_t *g, const int *s, uint8_t *legal) {
    for (int d = 0; d < g->ndim; d++)
        legal[d] = s[d] < g->height - 1;
    legal[g->ndim] = 1;
}
static int legal_bwd(const gfn_grid_t *g, const int *s, uint8_t *legal) {
    int k = 0;
    for (int d = 0; d < g->ndim; d++)
        k += legal[d] = s[d] > 0;
    return k;
}

void gfn_policy_logprobs(const gfn_policy_t *p, const float *out_row, const int *s, double *logpf,
                         double *logpb) {
    const gfn_grid_t *g = &p->env;
    int D = g->ndim;
    assert(D <= MAX_DIM);
    uint8_t legal[MAX_DIM + 1];
    if (logpf) {
        legal_fwd(g, s, legal);
        masked_log_softmax(out_row, legal, D + 1, logpf);
    }
    if (logpb) {
        int k = legal_bwd(g, s, legal);
        if (p->cfg.uniform_pb || k == 0)
            for (int d = 0; d < D; d++)
                logpb[d] = legal[d] ? -log((double)k) : -INFINITY;
        else
            masked_log_softmax(out_row + p->off_pb, legal, D, logpb);
    }
}

// dlogits(n) += g * (onehot(a) - softmax) over the legal entries, logp the masked log-softmax.
static void log_softmax_backward(float *dlogits, double g, int a, const double *logp, int n) {
    for (int j = 0; j < n; j++)
        if (logp[j] > -INFINITY)
            dlogits[j] += (float)(g * ((j == a) - exp(logp[j])));
}

void gfn_sample(gfn_policy_t *p, gfn_batch_t *b, int n, float epsilon, rng_t *rng) {
    const gfn_grid_t *g = &p->env;
    int D = g->ndim, DH = D * g->height, L = p->max_len;
    assert(n >= 1 && n <= p->max_traj && n <= b->max_traj && b->max_len == L);
    assert(epsilon >= 0 && epsilon <= 1 && D <= MAX_DIM);
    memset(p->coords, 0, (size_t)n * D * sizeof *p->coords);
    int na = n;
    for (int i = 0; i < n; i++)
        p->active[i] = i;
    b->n = n;
    double lpf[MAX_DIM + 1], lpb[MAX_DIM];
    for (int t = 0; na > 0; t++) {
        assert(t < L);
        for (int k = 0; k < na; k++)
            gfn_grid_encode(g, p->coords + (size_t)p->active[k] * D, p->x + (size_t)k * DH);
        mlp_forward(p->net, p->x, NULL, na);
        int still = 0;
        for (int k = 0; k < na; k++) {
            int i = p->active[k], *s = p->coords + (size_t)i * D;
            size_t e = (size_t)i * L + t;
            gfn_policy_logprobs(p, p->net->a.out + (size_t)k * p->n_out, s, lpf,
                                t > 0 ? lpb : NULL);
            if (t > 0) // P_B of the step that led here, from this state's backward head
                b->logpb[e - 1] = (float)lpb[b->actions[e - 1]];
            int n_legal = 0;
            for (int j = 0; j <= D; j++)
                n_legal += lpf[j] > -INFINITY;
            double u = rng_uniform(rng), acc = 0, q = 0;
            int a = D;
            for (int j = 0; j <= D; j++) {
                if (lpf[j] == -INFINITY)
                    continue;
                q = (1.0 - epsilon) * exp(lpf[j]) + (double)epsilon / n_legal;
                acc += q;
                a = j;
                if (u < acc)
                    break;
            }
            // a rounding shortfall of acc below 1 falls to the last legal action, the stop
            b->states[e] = gfn_grid_index(g, s);
            b->actions[e] = a;
            b->logpf[e] = (float)log(q);
            if (a == D) {
                b->len[i] = t + 1;
                b->logpb[e] = 0.0f;
                b->logr[i] = (float)log(gfn_grid_reward(g, s));
            } else {
                s[a]++;
                p->active[still++] = i;
            }
        }
        na = still;
    }
}

// ---- losses --------------------------------------------------------------------------------

// sum_{m=1}^{T} (T - m + 1) lambda^(m-1): the total weight of a trajectory's sub-trajectories.
static double subtb_denom(int T, double lambda) {
    double s = 0, lp = 1;
    for (int m = 1; m <= T; m++, lp *= lambda)
        s += (T - m + 1) * lp;
    return s;
}

double gfn_loss_outputs(const gfn_policy_t *p, const gfn_batch_t *b, const gfn_loss_config_t *c,
                        const float *out, float logz, float *dout, float *dlogz, gfn_stats_t *st) {
    const gfn_grid_t *g = &p->env;
    int D = g->ndim, L = b->max_len, O = p->n_out;
    assert(D <= MAX_DIM && L <= p->max_len && b->n >= 1);
    assert(c->kind == GFN_LOSS_TB || p->off_logf >= 0); // DB and SubTB need log F
    int rows = 0, n_tr = 0;
    for (int i = 0; i < b->n; i++)
        rows += b->len[i];
    n_tr = rows;
    assert(rows <= p->max_rows);
    memset(dout, 0, (size_t)rows * O * sizeof *dout);

    double *u = p->scratch, *cf = u + (L + 1), *cb = cf + (L + 1);
    double *gu = cb + (L + 1), *gcf = gu + (L + 1), *gcb = gcf + (L + 1);
    double lpf[MAX_DIM + 1], lpb[MAX_DIM];
    int s[MAX_DIM];
    double loss = 0, dz = 0, sum_logr = 0, stale = 0;
    double lambda = c->lambda;
    int base = 0;
    for (int i = 0; i < b->n; i++) {
        int T = b->len[i];
        const int32_t *sts = b->states + (size_t)i * L, *act = b->actions + (size_t)i * L;
        // log-probs of every transition and the state flows
        cf[0] = cb[0] = 0;
        for (int t = 0; t < T; t++) {
            const float *row = out + (size_t)(base + t) * O;
            gfn_grid_coords(g, sts[t], s);
            gfn_policy_logprobs(p, row, s, lpf, NULL);
            double lb = 0;
            if (t < T - 1) {
                gfn_grid_coords(g, sts[t + 1], s);
                gfn_policy_logprobs(p, row + O, s, NULL, lpb);
                lb = lpb[act[t]];
            }
            double lf = lpf[act[t]];
            double dst = fabs(lf - (double)b->logpf[(size_t)i * L + t]);
            if (dst > stale)
                stale = dst;
            cf[t + 1] = cf[t] + lf;
            cb[t + 1] = cb[t] + lb;
            u[t] = p->off_logf >= 0 ? row[p->off_logf] : 0;
        }
        u[T] = b->logr[i];
        sum_logr += b->logr[i];
        if (c->kind == GFN_LOSS_TB)
            u[0] = logz;
        for (int k = 0; k <= T; k++)
            gu[k] = gcf[k] = gcb[k] = 0;

            // residuals and their gradients on u, cf, cb
#define RESIDUAL(j, k, w)                                                                          \
    do {                                                                                           \
        double r_ = u[j] + (cf[k] - cf[j]) - u[k] - (cb[k] - cb[j]);                               \
        loss += (w)*r_ * r_;                                                                       \
        double g_ = 2.0 * (w)*r_;                                                                  \
        gu[j] += g_, gu[k] -= g_;                                                                  \
        gcf[k] += g_, gcf[j] -= g_;                                                                \
        gcb[k] -= g_, gcb[j] += g_;                                                                \
    } while (0)
        if (c->kind == GFN_LOSS_TB) {
            RESIDUAL(0, T, 1.0 / b->n);
            dz += gu[0];
        } else if (c->kind == GFN_LOSS_DB) {
            for (int t = 0; t < T; t++)
                RESIDUAL(t, t + 1, 1.0 / n_tr);
        } else {
            assert(c->kind == GFN_LOSS_SUBTB && lambda > 0);
            double norm = 1.0 / (subtb_denom(T, lambda) * b->n);
            for (int j = 0; j < T; j++) {
                double w = norm;
                for (int k = j + 1; k <= T; k++, w *= lambda)
                    RESIDUAL(j, k, w);
            }
        }
#undef RESIDUAL

        // cf_k holds log P_F of transitions t < k: d/d lpf_t = sum_{k > t} gcf_k (and cb alike)
        double acc_f = 0, acc_b = 0;
        for (int t = T - 1; t >= 0; t--) {
            acc_f += gcf[t + 1];
            acc_b += gcb[t + 1];
            float *drow = dout + (size_t)(base + t) * O;
            const float *row = out + (size_t)(base + t) * O;
            gfn_grid_coords(g, sts[t], s);
            gfn_policy_logprobs(p, row, s, lpf, NULL);
            log_softmax_backward(drow, acc_f, act[t], lpf, D + 1);
            if (t < T - 1 && p->off_pb >= 0) {
                gfn_grid_coords(g, sts[t + 1], s);
                gfn_policy_logprobs(p, row + O, s, NULL, lpb);
                log_softmax_backward(drow + O + p->off_pb, acc_b, act[t], lpb, D);
            }
            if (p->off_logf >= 0 && (c->kind != GFN_LOSS_TB || t > 0))
                drow[p->off_logf] += (float)gu[t];
        }
        base += T;
    }
    *dlogz = (float)dz;
    if (st) {
        st->loss = loss;
        st->logz = logz;
        st->mean_logr = sum_logr / b->n;
        st->mean_len = (double)rows / b->n;
        st->max_stale = stale;
    }
    return loss;
}

double gfn_loss(gfn_policy_t *p, const gfn_batch_t *b, const gfn_loss_config_t *c,
                gfn_stats_t *st) {
    const gfn_grid_t *g = &p->env;
    int D = g->ndim, DH = D * g->height, L = b->max_len;
    int s[MAX_DIM];
    int rows = 0;
    for (int i = 0; i < b->n; i++)
        for (int t = 0; t < b->len[i]; t++, rows++) {
            assert(rows < p->max_rows);
            gfn_grid_coords(g, b->states[(size_t)i * L + t], s);
            gfn_grid_encode(g, s, p->x + (size_t)rows * DH);
        }
    mlp_forward(p->net, p->x, NULL, rows);
    float dz = 0;
    double loss = gfn_loss_outputs(p, b, c, p->net->a.out, p->logz.w[0], p->dout, &dz, st);
    mlp_backward(p->net, p->dout);
    p->logz.g[0] += dz;
    return loss;
}

double gfn_train_step(gfn_policy_t *p, const gfn_batch_t *b, const gfn_loss_config_t *c,
                      const adamw_config_t *opt_net, const adamw_config_t *opt_logz,
                      gfn_stats_t *st) {
    paramset_zero_grad(&p->net->ps);
    paramset_zero_grad(&p->logz);
    double loss = gfn_loss(p, b, c, st);
    adamw_step(&p->net->ps, opt_net);
    adamw_step(&p->logz, opt_logz);
    return loss;
}

// ---- exact evaluation --------------------------------------------------------------------

gfn_evaluator_t *gfn_evaluator_new(const gfn_grid_t *g) {
    gfn_evaluator_t *ev = rlx_xcalloc(1, sizeof *ev, "gfn evaluator");
    int D = g->ndim;
    assert(D <= MAX_DIM);
    ev->env = *g;
    ev->n_states = gfn_grid_n_states(g);
    size_t n = (size_t)ev->n_states;
    ev->target = rlx_xcalloc(n, sizeof *ev->target, "gfn evaluator");
    ev->pmf = rlx_xcalloc(n, sizeof *ev->pmf, "gfn evaluator");
    ev->reach = rlx_xcalloc(n, sizeof *ev->reach, "gfn evaluator");
    ev->pf = rlx_xcalloc(n * (D + 1), sizeof *ev->pf, "gfn evaluator");
    ev->is_mode = rlx_xcalloc(n, 1, "gfn evaluator");
    ev->visited = rlx_xcalloc(n, 1, "gfn evaluator");
    int s[MAX_DIM];
    double z = 0;
    for (size_t x = 0; x < n; x++) {
        gfn_grid_coords(g, (int32_t)x, s);
        ev->target[x] = gfn_grid_reward(g, s);
        z += ev->target[x];
        ev->is_mode[x] = (uint8_t)gfn_grid_is_mode(g, s);
        ev->n_modes += ev->is_mode[x];
    }
    for (size_t x = 0; x < n; x++)
        ev->target[x] /= z;
    ev->logz_true = log(z);
    return ev;
}

void gfn_evaluator_destroy(gfn_evaluator_t **self_p) {
    if (!self_p || !*self_p)
        return;
    gfn_evaluator_t *ev = *self_p;
    free(ev->target);
    free(ev->pmf);
    free(ev->reach);
    free(ev->pf);
    free(ev->is_mode);
    free(ev->visited);
    free(ev);
    *self_p = NULL;
}

void gfn_exact_pmf(const gfn_grid_t *g, const double *pf, double *reach, double *pmf) {
    int D = g->ndim, H = g->height;
    int64_t n = gfn_grid_n_states(g);
    int s[MAX_DIM];
    int32_t strides[MAX_DIM];
    assert(D <= MAX_DIM);
    for (int d = 0; d < D; d++)
        strides[d] = stride(g, d);
    memset(reach, 0, (size_t)n * sizeof *reach);
    reach[0] = 1.0;
    for (int64_t x = 0; x < n; x++) { // parents have smaller indices: reach[x] is final here
        const double *row = pf + (size_t)x * (D + 1);
        gfn_grid_coords(g, (int32_t)x, s);
        for (int d = 0; d < D; d++)
            if (s[d] < H - 1)
                reach[x + strides[d]] += reach[x] * row[d];
        pmf[x] = reach[x] * row[D];
    }
}

void gfn_evaluate(gfn_evaluator_t *ev, gfn_policy_t *p, gfn_eval_t *out) {
    const gfn_grid_t *g = &ev->env;
    int D = g->ndim, DH = D * g->height;
    assert(g->ndim == p->env.ndim && g->height == p->env.height);
    int s[MAX_DIM];
    double lpf[MAX_DIM + 1];
    out->logf0_err = NAN;
    for (int64_t lo = 0; lo < ev->n_states; lo += p->max_rows) {
        int64_t hi = lo + p->max_rows < ev->n_states ? lo + p->max_rows : ev->n_states;
        for (int64_t x = lo; x < hi; x++) {
            gfn_grid_coords(g, (int32_t)x, s);
            gfn_grid_encode(g, s, p->x + (size_t)(x - lo) * DH);
        }
        mlp_forward(p->net, p->x, NULL, (int)(hi - lo));
        if (lo == 0 && p->off_logf >= 0)
            out->logf0_err = fabs((double)p->net->a.out[p->off_logf] - ev->logz_true);
        for (int64_t x = lo; x < hi; x++) {
            gfn_grid_coords(g, (int32_t)x, s);
            gfn_policy_logprobs(p, p->net->a.out + (size_t)(x - lo) * p->n_out, s, lpf, NULL);
            for (int j = 0; j <= D; j++)
                ev->pf[(size_t)x * (D + 1) + j] = exp(lpf[j]);
        }
    }
    gfn_exact_pmf(g, ev->pf, ev->reach, ev->pmf);
    double l1 = 0, mass = 0;
    int high = 0;
    for (int64_t x = 0; x < ev->n_states; x++) {
        l1 += fabs(ev->pmf[x] - ev->target[x]);
        if (ev->is_mode[x]) {
            mass += ev->pmf[x];
            high += ev->pmf[x] >= 0.5 * ev->target[x];
        }
    }
    out->l1 = l1;
    out->l1_mean = l1 / (double)ev->n_states;
    out->logz_err = fabs((double)p->logz.w[0] - ev->logz_true);
    out->mode_mass = mass;
    out->modes_high = high;
    out->modes_visited = ev->modes_visited;
}

void gfn_evaluator_observe(gfn_evaluator_t *ev, const gfn_batch_t *b) {
    for (int i = 0; i < b->n; i++) {
        int32_t x = b->states[(size_t)i * b->max_len + b->len[i] - 1];
        assert(x >= 0 && x < ev->n_states);
        if (!ev->visited[x]) {
            ev->visited[x] = 1;
            ev->modes_visited += ev->is_mode[x];
        }
    }
}
