// diffusion_rl.c: DDPO, DAG and DAG-KL objectives on received diffusion trajectories. See
// diffusion_rl.h and docs/diffusion.md.
//
// Every loss first gathers the batch's S*n transitions into contiguous rows (x_t, x_prev, t,
// t_prev, label), runs the denoiser over them in chunks of its max_batch (diff_logpf), and,
// when the gradient on log P_F depends on log P_F itself (PPO ratios, detailed balance), runs
// diff_logpf a second time with that gradient: diffusion.h offers no separate backward.
#include "diffusion_rl.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers.h"
#include "rl.h"
#include "util.h"

drl_config_t drl_defaults(void) {
    return (drl_config_t){.clip_eps = 1e-4f,
                          .adv_clip = 5.0f,
                          .ddpo_is = 1,
                          .stat_buffer = 32,
                          .stat_min_count = 16,
                          .stat_max_keys = 1024,
                          .beta = 1.0f,
                          .beta_warmup = 0,
                          .flow_cond = 1,
                          .fl_abar = 0};
}

// ---- the per-prompt reward tracker ------------------------------------------------------------

drl_tracker_t *drl_tracker_new(int buffer, int min_count, int max_keys) {
    if (buffer < 1 || max_keys < 1 || min_count < 0)
        RLX_DIE("drl tracker: buffer %d and max_keys %d must be >= 1, min_count %d >= 0", buffer,
                max_keys, min_count);
    drl_tracker_t *tr = rlx_xcalloc(1, sizeof *tr, "drl tracker");
    tr->buffer = buffer;
    tr->min_count = min_count;
    tr->max_keys = max_keys;
    tr->key = rlx_xcalloc(max_keys, sizeof(uint64_t), "tracker keys");
    tr->used = rlx_xcalloc(max_keys, sizeof(int), "tracker used");
    tr->seen = rlx_xcalloc(max_keys, sizeof(int64_t), "tracker seen");
    tr->count = rlx_xcalloc(max_keys, sizeof(int), "tracker count");
    tr->head = rlx_xcalloc(max_keys, sizeof(int), "tracker head");
    tr->ring = rlx_alloc_floats((size_t)max_keys * buffer, "tracker ring");
    return tr;
}

void drl_tracker_destroy(drl_tracker_t **self_p) {
    if (!self_p || !*self_p)
        return;
    drl_tracker_t *tr = *self_p;
    free(tr->key);
    free(tr->used);
    free(tr->seen);
    free(tr->count);
    free(tr->head);
    free(tr->ring);
    free(tr);
    *self_p = NULL;
}

// The slot of key, claiming a free one or evicting the least recently seen.
static int tracker_slot(drl_tracker_t *tr, uint64_t key) {
    int free_slot = -1, oldest = 0;
    for (int s = 0; s < tr->max_keys; s++) {
        if (tr->used[s] && tr->key[s] == key)
            return s;
        if (!tr->used[s] && free_slot < 0)
            free_slot = s;
        if (tr->seen[s] < tr->seen[oldest])
            oldest = s;
    }
    int s = free_slot >= 0 ? free_slot : oldest;
    tr->used[s] = 1;
    tr->key[s] = key;
    tr->count[s] = 0;
    tr->head[s] = 0;
    return s;
}

void drl_tracker_update(drl_tracker_t *tr, const uint64_t *keys, const float *rewards, int n,
                        float *adv) {
    assert(n >= 1);
    tr->updates++;
    double bs = 0, bs2 = 0;
    for (int i = 0; i < n; i++) {
        bs += rewards[i];
        bs2 += (double)rewards[i] * rewards[i];
    }
    double bmean = bs / n, bvar = bs2 / n - bmean * bmean;
    double bstd = sqrt(bvar > 0 ? bvar : 0) + 1e-6;
    for (int i = 0; i < n; i++) {
        int first = 1;
        for (int j = 0; j < i && first; j++)
            first = keys[j] != keys[i];
        if (!first)
            continue;
        int s = tracker_slot(tr, keys[i]);
        tr->seen[s] = tr->updates;
        float *ring = tr->ring + (size_t)s * tr->buffer;
        for (int j = i; j < n; j++) {
            if (keys[j] != keys[i])
                continue;
            ring[tr->head[s]] = rewards[j];
            tr->head[s] = (tr->head[s] + 1) % tr->buffer;
            if (tr->count[s] < tr->buffer)
                tr->count[s]++;
        }
        double mean = bmean, std = bstd;
        if (tr->count[s] >= tr->min_count && tr->count[s] > 0) {
            double s1 = 0, s2 = 0;
            for (int q = 0; q < tr->count[s]; q++) {
                s1 += ring[q];
                s2 += (double)ring[q] * ring[q];
            }
            mean = s1 / tr->count[s];
            double var = s2 / tr->count[s] - mean * mean;
            std = sqrt(var > 0 ? var : 0) + 1e-6;
        }
        for (int j = i; j < n; j++)
            if (keys[j] == keys[i])
                adv[j] = (float)((rewards[j] - mean) / std);
    }
}

// ---- construction ---------------------------------------------------------------------------

drl_t *drl_new(diff_t *d, const diff_sampler_t *s, const drl_config_t *c,
               const mlp_config_t *flow_cfg, int max_traj, int max_steps, uint64_t seed) {
    assert(d && s && c);
    if (max_traj < 1 || max_steps < 1 || max_steps > d->cfg.T - 1)
        RLX_DIE("drl: max_traj %d must be >= 1 and max_steps %d in [1, T-1 = %d]", max_traj,
                max_steps, d->cfg.T - 1);
    if (!(s->eta > 0))
        RLX_DIE("drl: the sampler's eta %g must be > 0 (log-densities of a deterministic chain "
                "are meaningless)",
                s->eta);
    int guided = s->guidance != 0.0f && d->cfg.n_classes > 0;
    if (guided && d->max_batch < 2)
        RLX_DIE("drl: guided sampling needs the policy's max_batch >= 2, got %d", d->max_batch);
    drl_t *r = rlx_xcalloc(1, sizeof *r, "drl");
    r->cfg = *c;
    r->sampler = *s;
    r->diff = d;
    r->max_traj = max_traj;
    r->max_steps = max_steps;
    r->chunk = guided ? d->max_batch / 2 : d->max_batch;
    r->tracker = drl_tracker_new(c->stat_buffer, c->stat_min_count, c->stat_max_keys);
    size_t M = (size_t)max_traj * max_steps, D = d->cfg.x_dim;
    if (flow_cfg) {
        if (flow_cfg->time_dim <= 0 || flow_cfg->hidden < 1 || flow_cfg->n_blocks < 0)
            RLX_DIE("drl: the flow net needs hidden >= 1, n_blocks >= 0 and a time embedding "
                    "(time_dim %d > 0)",
                    flow_cfg->time_dim);
        r->flow_cond_dim = c->flow_cond && d->cfg.n_classes > 0 ? d->cfg.n_classes + 1 : 0;
        mlp_config_t fc = *flow_cfg;
        fc.in_dim = (int)D + r->flow_cond_dim;
        fc.out_dim = 1;
        r->flow_chunk = M < 1024 ? (int)M : 1024;
        r->flow = mlp_new(&fc, r->flow_chunk, seed);
        r->f_in = rlx_alloc_floats((size_t)r->flow_chunk * fc.in_dim, "flow input");
        r->f_t = rlx_alloc_floats(r->flow_chunk, "flow times");
        r->f_out = rlx_alloc_floats(r->flow_chunk, "flow output");
        r->f_dout = layers_alloc(r->flow_chunk);
        if (!r->f_dout)
            RLX_DIE("out of memory: flow gradient buffer of %d floats", r->flow_chunk);
    }
    r->x_t = rlx_alloc_floats(M * D, "drl x_t");
    r->x_prev = rlx_alloc_floats(M * D, "drl x_prev");
    r->t = rlx_xcalloc(M, sizeof(int), "drl t");
    r->t_prev = rlx_xcalloc(M, sizeof(int), "drl t_prev");
    r->lab = rlx_xcalloc(M, sizeof(int), "drl labels");
    r->logpf = rlx_alloc_floats(M, "drl logpf");
    r->dlogpf = rlx_alloc_floats(M, "drl dlogpf");
    r->adv = rlx_alloc_floats(M, "drl adv");
    r->delta = rlx_alloc_floats(M, "drl delta");
    r->blogpf = rlx_alloc_floats(M, "drl blogpf");
    r->logpb = rlx_alloc_floats(M, "drl logpb");
    r->logF = rlx_alloc_floats((size_t)max_traj * (max_steps + 1), "drl logF");
    r->dlogF = rlx_alloc_floats((size_t)max_traj * (max_steps + 1), "drl dlogF");
    r->rew = rlx_alloc_floats(max_traj, "drl rewards");
    r->keys = rlx_xcalloc(max_traj, sizeof(uint64_t), "drl keys");
    return r;
}

void drl_destroy(drl_t **self_p) {
    if (!self_p || !*self_p)
        return;
    drl_t *r = *self_p;
    mlp_destroy(&r->flow);
    drl_tracker_destroy(&r->tracker);
    free(r->f_in);
    free(r->f_t);
    free(r->f_out);
    layers_free(r->f_dout);
    free(r->x_t);
    free(r->x_prev);
    free(r->t);
    free(r->t_prev);
    free(r->lab);
    free(r->logpf);
    free(r->dlogpf);
    free(r->adv);
    free(r->delta);
    free(r->blogpf);
    free(r->logpb);
    free(r->logF);
    free(r->dlogF);
    free(r->rew);
    free(r->keys);
    free(r);
    *self_p = NULL;
}

int drl_check_traj(const drl_t *r, const drl_traj_t *tr, char *err, size_t errlen) {
    int S = tr->S, D = r->diff->cfg.x_dim;
    if (S < 1 || S > r->max_steps) {
        snprintf(err, errlen, "trajectory has %d steps, this learner takes 1..%d", S, r->max_steps);
        return -1;
    }
    if (!tr->ts || !tr->xs || !tr->blogpf || !tr->logpb) {
        snprintf(err, errlen, "trajectory lacks times, states or log-densities");
        return -1;
    }
    if (tr->ts[S] != 0) {
        snprintf(err, errlen, "trajectory ends at train step %d, not 0", tr->ts[S]);
        return -1;
    }
    for (int k = 0; k < S; k++) {
        if (!diff_valid_step(r->diff, tr->ts[k], tr->ts[k + 1], tr->label)) {
            snprintf(err, errlen,
                     "step %d (%d -> %d, label %d) does not fit the model (T %d, "
                     "%d classes)",
                     k, tr->ts[k], tr->ts[k + 1], tr->label, r->diff->cfg.T,
                     r->diff->cfg.n_classes);
            return -1;
        }
        if (!isfinite(tr->blogpf[k]) || !isfinite(tr->logpb[k]) ||
            (tr->r_x0hat && !isfinite(tr->r_x0hat[k]))) {
            snprintf(err, errlen, "step %d has a non-finite log-density or reward", k);
            return -1;
        }
    }
    for (size_t q = 0; q < (size_t)(S + 1) * D; q++)
        if (!isfinite(tr->xs[q])) {
            snprintf(err, errlen, "state %zu has a non-finite value", q / D);
            return -1;
        }
    if (!isfinite(tr->reward)) {
        snprintf(err, errlen, "non-finite reward");
        return -1;
    }
    return 0;
}

float drl_beta(const drl_config_t *c, int64_t step) {
    if (c->beta_warmup <= 0 || step + 1 >= c->beta_warmup)
        return c->beta;
    return c->beta * (float)(step + 1) / (float)c->beta_warmup;
}

// ---- the math ------------------------------------------------------------------------------

double drl_db_math(int n, int S, const float *logF, const float *logpf, const float *logpb,
                   double denom, float *delta, float *dlogF, float *dlogpf) {
    assert(n >= 1 && S >= 1 && denom > 0);
    double loss = 0;
    if (dlogF)
        memset(dlogF, 0, (size_t)n * (S + 1) * sizeof(float));
    for (int i = 0; i < n; i++)
        for (int k = 0; k < S; k++) {
            size_t q = (size_t)i * S + k, f = (size_t)i * (S + 1) + k;
            double dl = (double)logF[f] + logpf[q] - logpb[q] - logF[f + 1];
            delta[q] = (float)dl;
            loss += dl * dl / denom;
            double g = 2.0 * dl / denom;
            if (dlogF) {
                dlogF[f] += (float)g;
                dlogF[f + 1] -= (float)g;
            }
            if (dlogpf)
                dlogpf[q] = (float)g;
        }
    return loss;
}

double drl_ppo_math(int M, const float *adv, const float *logpf, const float *blogpf,
                    float clip_eps, double denom, float *dlogpf, int *clipped, double *ratio_sum) {
    assert(denom > 0);
    double loss = 0, rs = 0;
    int nc = 0;
    for (int q = 0; q < M; q++) {
        int clamped = 0; // in log space with a clamp (rl_ratio)
        double A = adv[q], rho = rl_ratio(logpf[q], blogpf[q], &clamped);
        double obj = rho * A, g = clamped ? 0.0 : -rho * A; // d(-rho A)/dlogpf
        if (clip_eps > 0) {
            double rc = rho < 1 - clip_eps ? 1 - clip_eps : rho > 1 + clip_eps ? 1 + clip_eps : rho;
            if (rc * A < obj) { // the clipped term is the minimum: no gradient
                obj = rc * A;
                g = 0;
                nc++;
            }
        }
        loss -= obj / denom;
        dlogpf[q] = (float)(g / denom);
        rs += rho;
    }
    if (clipped)
        *clipped = nc;
    if (ratio_sum)
        *ratio_sum = rs;
    return loss;
}

void drl_kl_advantages(int n, int S, const float *b, const uint64_t *groups, float adv_clip,
                       float *adv, float *work) {
    for (int k = 0; k < S; k++) {
        for (int i = 0; i < n; i++) {
            double sum = 0;
            int cnt = 0;
            for (int j = 0; j < n; j++)
                if (groups[j] == groups[i]) {
                    sum += b[(size_t)j * S + k];
                    cnt++;
                }
            double bi = b[(size_t)i * S + k];
            work[i] = cnt < 2 ? 0.0f : (float)(bi - (sum - bi) / (cnt - 1));
        }
        double s1 = 0, s2 = 0;
        for (int i = 0; i < n; i++) {
            s1 += work[i];
            s2 += (double)work[i] * work[i];
        }
        double mean = s1 / n, var = s2 / n - mean * mean;
        double inv = 1.0 / (sqrt(var > 0 ? var : 0) + 1e-6);
        for (int i = 0; i < n; i++) {
            double a = work[i] * inv;
            if (adv_clip > 0)
                a = a > adv_clip ? adv_clip : a < -adv_clip ? -adv_clip : a;
            adv[(size_t)i * S + k] = (float)a;
        }
    }
}

// ---- batch plumbing ------------------------------------------------------------------------

// Gathers the transitions of tr[0..n) into r's rows; returns S (the same for all).
static int gather(drl_t *r, const drl_traj_t *tr, int n) {
    assert(n >= 1 && n <= r->max_traj);
    int S = tr[0].S, D = r->diff->cfg.x_dim;
    assert(S >= 1 && S <= r->max_steps);
    size_t rowb = (size_t)D * sizeof(float);
    for (int i = 0; i < n; i++) {
        assert(tr[i].S == S && tr[i].ts[S] == 0);
        for (int k = 0; k < S; k++) {
            size_t q = (size_t)i * S + k;
            assert(diff_valid_step(r->diff, tr[i].ts[k], tr[i].ts[k + 1], tr[i].label));
            memcpy(r->x_t + q * D, tr[i].xs + (size_t)k * D, rowb);
            memcpy(r->x_prev + q * D, tr[i].xs + (size_t)(k + 1) * D, rowb);
            r->t[q] = tr[i].ts[k];
            r->t_prev[q] = tr[i].ts[k + 1];
            r->lab[q] = tr[i].label;
            r->blogpf[q] = tr[i].blogpf[k];
            r->logpb[q] = tr[i].logpb[k];
        }
    }
    return S;
}

// log P_F of the M gathered rows under the current denoiser into r->logpf; with dlogpf
// (M) also accumulates its gradient into the denoiser.
static void denoiser_pass(drl_t *r, int M, const float *dlogpf) {
    int D = r->diff->cfg.x_dim;
    for (int q0 = 0; q0 < M; q0 += r->chunk) {
        int m = M - q0 < r->chunk ? M - q0 : r->chunk;
        diff_logpf(r->diff, r->logpf + q0, r->x_t + (size_t)q0 * D, r->x_prev + (size_t)q0 * D,
                   r->t + q0, r->t_prev + q0, r->lab + q0, m, &r->sampler,
                   dlogpf ? dlogpf + q0 : NULL);
    }
}

// Flow forward over gathered rows [q0, q0+m) (their source states); outputs in r->f_out.
static void flow_forward_rows(drl_t *r, int q0, int m) {
    int D = r->diff->cfg.x_dim, C = r->flow_cond_dim, W = D + C;
    for (int j = 0; j < m; j++) {
        size_t q = (size_t)q0 + j;
        float *row = r->f_in + (size_t)j * W;
        memcpy(row, r->x_t + q * D, (size_t)D * sizeof(float));
        if (C > 0) {
            memset(row + D, 0, (size_t)C * sizeof(float));
            row[D + (r->lab[q] < 0 ? C - 1 : r->lab[q])] = 1.0f;
        }
        r->f_t[j] = (float)r->t[q];
    }
    mlp_forward(r->flow, r->f_in, r->f_t, m);
    layers_to_host(r->f_out, r->flow->a.out, (size_t)m);
}

// Fills r->logF (n, S+1): learned flows plus beta r(x0_hat) at k < S, beta r(x_0) at S.
static void flows_forward(drl_t *r, const drl_traj_t *tr, int n, int S, float beta) {
    assert(r->flow);
    int M = n * S;
    for (int q0 = 0; q0 < M; q0 += r->flow_chunk) {
        int m = M - q0 < r->flow_chunk ? M - q0 : r->flow_chunk;
        flow_forward_rows(r, q0, m);
        for (int j = 0; j < m; j++) {
            int q = q0 + j, i = q / S, k = q % S;
            double w = r->cfg.fl_abar ? diff_abar(r->diff, tr[i].ts[k]) : 1.0;
            float fl = tr[i].r_x0hat ? (float)(beta * w * tr[i].r_x0hat[k]) : 0.0f;
            r->logF[(size_t)i * (S + 1) + k] = r->f_out[j] + fl;
        }
    }
    for (int i = 0; i < n; i++)
        r->logF[(size_t)i * (S + 1) + S] = beta * tr[i].reward;
}

// Accumulates the flow gradient of r->dlogF (n, S+1) into r->flow (the terminal entries hold
// no parameters). Re-runs the forward of each chunk unless one chunk covers the batch.
static void flows_backward(drl_t *r, int n, int S) {
    int M = n * S;
    for (int q0 = 0; q0 < M; q0 += r->flow_chunk) {
        int m = M - q0 < r->flow_chunk ? M - q0 : r->flow_chunk;
        if (M > r->flow_chunk)
            flow_forward_rows(r, q0, m);
        for (int j = 0; j < m; j++) {
            int q = q0 + j, i = q / S, k = q % S;
            r->f_out[j] = r->dlogF[(size_t)i * (S + 1) + k];
        }
        layers_to_device(r->f_dout, r->f_out, (size_t)m);
        mlp_backward(r->flow, r->f_dout);
    }
}

static void fill_stats(drl_stats_t *st, int M, double ratio_sum, int clipped, const float *adv,
                       const float *delta) {
    st->transitions = M;
    st->ratio_mean = ratio_sum / M;
    st->clip_frac = (double)clipped / M;
    double a = 0, dl = 0;
    for (int q = 0; q < M; q++) {
        a += adv ? fabsf(adv[q]) : 0;
        dl += delta ? fabsf(delta[q]) : 0;
    }
    st->adv_abs = a / M;
    st->delta_abs = dl / M;
}

// ---- DDPO ----------------------------------------------------------------------------------

void drl_ddpo_advantages(drl_t *r, drl_traj_t *tr, int n) {
    assert(n >= 1 && n <= r->max_traj);
    for (int i = 0; i < n; i++) {
        r->keys[i] = tr[i].group;
        r->rew[i] = tr[i].reward;
    }
    drl_tracker_update(r->tracker, r->keys, r->rew, n, r->adv);
    float c = r->cfg.adv_clip;
    for (int i = 0; i < n; i++) {
        float a = r->adv[i];
        if (c > 0)
            a = a > c ? c : a < -c ? -c : a;
        tr[i].advantage = a;
    }
}

void drl_ddpo_loss(drl_t *r, const drl_traj_t *tr, int n, double denom, drl_stats_t *st) {
    memset(st, 0, sizeof *st);
    assert(denom > 0);
    int S = gather(r, tr, n), M = n * S, clipped = 0;
    for (int q = 0; q < M; q++)
        r->adv[q] = tr[q / S].advantage;
    double ratio_sum = 0;
    if (!r->cfg.ddpo_is) {
        // Score function: the gradient does not depend on log P_F, one pass.
        for (int q = 0; q < M; q++)
            r->dlogpf[q] = (float)(-r->adv[q] / denom);
        denoiser_pass(r, M, r->dlogpf);
        for (int q = 0; q < M; q++) {
            st->loss -= r->adv[q] * (double)r->logpf[q] / denom;
            ratio_sum += rl_ratio(r->logpf[q], r->blogpf[q], NULL);
        }
    } else {
        denoiser_pass(r, M, NULL);
        st->loss = drl_ppo_math(M, r->adv, r->logpf, r->blogpf, r->cfg.clip_eps, denom, r->dlogpf,
                                &clipped, &ratio_sum);
        denoiser_pass(r, M, r->dlogpf);
    }
    fill_stats(st, M, ratio_sum, clipped, r->adv, NULL);
}

// ---- DAG and DAG-KL ------------------------------------------------------------------------

void drl_dag_loss(drl_t *r, const drl_traj_t *tr, int n, double denom, float beta,
                  drl_stats_t *st) {
    memset(st, 0, sizeof *st);
    assert(r->flow && denom > 0);
    int S = gather(r, tr, n), M = n * S;
    flows_forward(r, tr, n, S, beta);
    denoiser_pass(r, M, NULL);
    double ratio_sum = 0;
    for (int q = 0; q < M; q++)
        ratio_sum += rl_ratio(r->logpf[q], r->blogpf[q], NULL);
    st->loss = st->flow_loss =
        drl_db_math(n, S, r->logF, r->logpf, r->logpb, denom, r->delta, r->dlogF, r->dlogpf);
    flows_backward(r, n, S);
    denoiser_pass(r, M, r->dlogpf);
    fill_stats(st, M, ratio_sum, 0, NULL, r->delta);
}

// The per-transition rewards b = -delta under the behaviour log P_F of the n gathered chains
// (r->logF filled) into b (n, S).
static void kl_rewards(drl_t *r, int n, int S, double denom, float *b) {
    drl_db_math(n, S, r->logF, r->blogpf, r->logpb, denom, b, NULL, NULL);
    for (int q = 0; q < n * S; q++)
        b[q] = -b[q];
}

void drl_kl_rewards(drl_t *r, const drl_traj_t *tr, int n, float beta, float *b) {
    assert(r->flow);
    int S = gather(r, tr, n);
    flows_forward(r, tr, n, S, beta);
    kl_rewards(r, n, S, 1.0, b);
}

// DAG-KL with the advantages adv (n, S) given, or computed from this batch when NULL.
static void dagkl(drl_t *r, const drl_traj_t *tr, int n, double denom, float beta, const float *adv,
                  drl_stats_t *st) {
    memset(st, 0, sizeof *st);
    assert(r->flow && denom > 0);
    int S = gather(r, tr, n), M = n * S, clipped = 0;
    flows_forward(r, tr, n, S, beta);
    denoiser_pass(r, M, NULL);
    // The flow: detailed balance with the current log P_F held fixed.
    st->flow_loss = drl_db_math(n, S, r->logF, r->logpf, r->logpb, denom, r->delta, r->dlogF, NULL);
    fill_stats(st, M, 0, 0, NULL, r->delta);
    if (adv) {
        memcpy(r->adv, adv, (size_t)M * sizeof *r->adv);
    } else {
        // The policy: per-transition rewards -delta under the behaviour log P_F (kept in
        // dlogpf until drl_ppo_math overwrites it).
        float *b = r->dlogpf;
        kl_rewards(r, n, S, denom, b);
        for (int i = 0; i < n; i++)
            r->keys[i] = tr[i].group;
        drl_kl_advantages(n, S, b, r->keys, r->cfg.adv_clip, r->adv, r->rew);
    }
    double ratio_sum = 0;
    st->loss = drl_ppo_math(M, r->adv, r->logpf, r->blogpf, r->cfg.clip_eps, denom, r->dlogpf,
                            &clipped, &ratio_sum);
    double delta_abs = st->delta_abs;
    fill_stats(st, M, ratio_sum, clipped, r->adv, NULL);
    st->delta_abs = delta_abs;
    flows_backward(r, n, S);
    denoiser_pass(r, M, r->dlogpf);
}

void drl_dagkl_loss(drl_t *r, const drl_traj_t *tr, int n, double denom, float beta,
                    drl_stats_t *st) {
    dagkl(r, tr, n, denom, beta, NULL, st);
}

void drl_dagkl_loss_adv(drl_t *r, const drl_traj_t *tr, int n, double denom, float beta,
                        const float *adv, drl_stats_t *st) {
    assert(adv);
    dagkl(r, tr, n, denom, beta, adv, st);
}
