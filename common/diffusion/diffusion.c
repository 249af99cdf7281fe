// diffusion.c: DDPM schedule, eps-prediction training, the stochastic DDIM sampler with its
// log-densities, and the gradient of log P_F for policy-gradient learners. See diffusion.h.
#include "diffusion.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "layers.h"
#include "util.h"

#define LOG_2PI 1.8378770664093453

diff_config_t diff_defaults(void) {
    return (diff_config_t){.x_dim = 2,
                           .n_classes = 0,
                           .T = 1000,
                           .schedule = DIFF_SCHED_LINEAR,
                           .beta_start = 1e-4f,
                           .beta_end = 0.02f,
                           .cosine_s = 0.008f};
}

diff_sampler_t diff_sampler_defaults(void) {
    return (diff_sampler_t){.eta = 1.0f, .clip_x0 = 0, .logp_sum = 0, .guidance = 0.0f};
}

diff_train_config_t diff_train_defaults(void) {
    diff_train_config_t c = {
        .batch = 128, .steps = 2000, .cond_drop = 0.1f, .seed = 1, .log_every = 100};
    c.opt = adamw_defaults();
    c.opt.lr = 2e-3f;
    c.opt.warmup_steps = 100;
    c.opt.min_lr_frac = 0.05f;
    c.opt.grad_clip = 1.0f;
    return c;
}

static const char *config_problem(const diff_config_t *c) {
    if (c->x_dim < 1 || c->x_dim > 1 << 20)
        return "x_dim must be in [1, 2^20]";
    if (c->n_classes < 0 || c->n_classes > 1 << 16)
        return "n_classes must be in [0, 65536]";
    if (c->T < 2 || c->T > DIFF_MAX_T)
        return "T must be in [2, 100000]";
    if (c->schedule == DIFF_SCHED_LINEAR) {
        if (!(c->beta_start > 0 && c->beta_start <= c->beta_end && c->beta_end < 1))
            return "linear schedule needs 0 < beta_start <= beta_end < 1";
    } else if (c->schedule == DIFF_SCHED_COSINE) {
        if (!(c->cosine_s >= 0 && c->cosine_s < 1))
            return "cosine_s must be in [0, 1)";
    } else {
        return "schedule must be linear (0) or cosine (1)";
    }
    return NULL;
}

static void fill_schedule(const diff_config_t *c, double *abar) {
    double prod = 1.0;
    for (int i = 0; i < c->T; i++) {
        double beta;
        if (c->schedule == DIFF_SCHED_LINEAR) {
            beta = c->beta_start + (c->beta_end - (double)c->beta_start) * i / (c->T - 1);
        } else {
            double s = c->cosine_s;
            double f0 = cos(((double)i / c->T + s) / (1 + s) * M_PI / 2);
            double f1 = cos(((double)(i + 1) / c->T + s) / (1 + s) * M_PI / 2);
            beta = 1.0 - (f1 * f1) / (f0 * f0);
            if (beta > 0.999)
                beta = 0.999;
        }
        prod *= 1.0 - beta;
        abar[i] = prod;
    }
}

// Takes ownership of net.
static diff_t *diff_wrap(const diff_config_t *c, mlp_t *net, int max_batch) {
    diff_t *d = rlx_xcalloc(1, sizeof *d, "diffusion");
    d->cfg = *c;
    d->net = net;
    d->cond_dim = c->n_classes > 0 ? c->n_classes + 1 : 0;
    d->max_batch = max_batch;
    size_t B = max_batch, D = c->x_dim;
    d->abar = rlx_xcalloc(c->T, sizeof(double), "abar");
    d->ts = rlx_xcalloc(c->T + 1, sizeof(int), "timesteps");
    d->in = rlx_alloc_floats(B * (D + d->cond_dim), "diffusion input");
    d->tin = rlx_alloc_floats(B, "diffusion times");
    d->trow = rlx_xcalloc(B, sizeof(int), "diffusion t");
    d->tprow = rlx_xcalloc(B, sizeof(int), "diffusion t_prev");
    d->eps = rlx_alloc_floats(B * D, "diffusion eps");
    d->deps = layers_alloc(B * D);
    if (!d->deps)
        RLX_DIE("out of memory: diffusion gradient buffer of %zu floats", B * D);
    d->work = rlx_alloc_floats(B * D, "diffusion work");
    d->noise = rlx_alloc_floats(B * D, "diffusion noise");
    d->x0 = rlx_alloc_floats(B * D, "diffusion x0");
    d->rngs = rlx_xcalloc(B, sizeof(rng_t), "diffusion rngs");
    d->t2 = rlx_xcalloc(B, sizeof(int), "diffusion guided t");
    d->lab2 = rlx_xcalloc(B, sizeof(int), "diffusion guided labels");
    fill_schedule(c, d->abar);
    return d;
}

diff_t *diff_new(const diff_config_t *c, const mlp_config_t *net_cfg, int max_batch,
                 uint64_t seed) {
    const char *why = config_problem(c);
    if (why)
        RLX_DIE("bad diffusion config (D=%d C=%d T=%d schedule=%d): %s", c->x_dim, c->n_classes,
                c->T, c->schedule, why);
    if (net_cfg->time_dim <= 0)
        RLX_DIE("the diffusion denoiser needs a time embedding: time_dim %d must be > 0",
                net_cfg->time_dim);
    if (max_batch < 1)
        RLX_DIE("diffusion max_batch must be >= 1, got %d", max_batch);
    mlp_config_t mc = *net_cfg;
    mc.in_dim = c->x_dim + (c->n_classes > 0 ? c->n_classes + 1 : 0);
    mc.out_dim = c->x_dim;
    return diff_wrap(c, mlp_new(&mc, max_batch, seed), max_batch);
}

void diff_destroy(diff_t **self_p) {
    if (!self_p || !*self_p)
        return;
    diff_t *d = *self_p;
    mlp_destroy(&d->net);
    free(d->abar);
    free(d->ts);
    free(d->in);
    free(d->tin);
    free(d->trow);
    free(d->tprow);
    free(d->eps);
    layers_free(d->deps);
    free(d->work);
    free(d->noise);
    free(d->x0);
    free(d->rngs);
    free(d->t2);
    free(d->lab2);
    free(d);
    *self_p = NULL;
}

// ---- checkpoints ----------------------------------------------------------------------------

#define DIFF_MAGIC "RLXDIFF1"

typedef struct {
    char magic[8];   // DIFF_MAGIC
    int32_t version; // 1
    int32_t x_dim;   // diff_config_t fields
    int32_t n_classes;
    int32_t T;
    int32_t schedule;
    float beta_start;
    float beta_end;
    float cosine_s;
} diff_blob_t;

int diff_save(const diff_t *d, const char *path, char *err, size_t errlen) {
    diff_blob_t b;
    memset(&b, 0, sizeof b);
    memcpy(b.magic, DIFF_MAGIC, 8);
    b.version = 1;
    b.x_dim = d->cfg.x_dim;
    b.n_classes = d->cfg.n_classes;
    b.T = d->cfg.T;
    b.schedule = d->cfg.schedule;
    b.beta_start = d->cfg.beta_start;
    b.beta_end = d->cfg.beta_end;
    b.cosine_s = d->cfg.cosine_s;
    return mlp_save(d->net, path, &b, sizeof b, err, errlen);
}

int diff_is_ckpt(const ckpt_t *ck) {
    uint64_t nb = 0;
    const diff_blob_t *b = ckpt_section(ck, "extra", &nb);
    return b && nb == sizeof *b && memcmp(b->magic, DIFF_MAGIC, 8) == 0;
}

void *diff_weights_blob(const diff_t *d, size_t *len, char *err, size_t errlen) {
    // diff_save writes the moments only when the paramset has them: a view of d without.
    mlp_t net = *d->net;
    net.ps.m = net.ps.v = NULL;
    diff_t view = *d;
    view.net = &net;
    ckpt_capture_begin(); // the file's bytes, in memory
    if (diff_save(&view, "diffusion weights", err, errlen) != 0) {
        free(ckpt_capture_end(len, NULL, 0));
        return NULL;
    }
    return ckpt_capture_end(len, err, errlen);
}

diff_t *diff_load(const char *path, int max_batch, char *err, size_t errlen) {
    ckpt_t *ck = ckpt_read(path, err, errlen);
    if (!ck)
        return NULL;
    diff_t *d = diff_from_ckpt(ck, path, max_batch, err, errlen);
    ckpt_destroy(&ck);
    return d;
}

diff_t *diff_from_ckpt(const ckpt_t *ck, const char *path, int max_batch, char *err,
                       size_t errlen) {
    diff_t *d = NULL;
    uint64_t nb = 0;
    const diff_blob_t *b = ckpt_section(ck, "extra", &nb);
    if (!b || nb != sizeof *b || memcmp(b->magic, DIFF_MAGIC, 8) != 0 || b->version != 1) {
        snprintf(err, errlen,
                 "%s: not a diffusion checkpoint (no " DIFF_MAGIC " config in its extra "
                 "section; was it written by rlx-ddpm?)",
                 path);
        goto done;
    }
    diff_config_t c = {.x_dim = b->x_dim,
                       .n_classes = b->n_classes,
                       .T = b->T,
                       .schedule = b->schedule,
                       .beta_start = b->beta_start,
                       .beta_end = b->beta_end,
                       .cosine_s = b->cosine_s};
    const char *why = config_problem(&c);
    if (why) {
        snprintf(err, errlen, "%s: invalid diffusion config: %s", path, why);
        goto done;
    }
    mlp_t *net = mlp_from_ckpt(ck, max_batch, err, errlen);
    if (!net)
        goto done;
    int cond = c.n_classes > 0 ? c.n_classes + 1 : 0;
    if (net->cfg.in_dim != c.x_dim + cond || net->cfg.out_dim != c.x_dim ||
        net->cfg.time_dim <= 0) {
        snprintf(err, errlen, "%s: denoiser shape (in %d, out %d, time %d) does not fit D=%d C=%d",
                 path, net->cfg.in_dim, net->cfg.out_dim, net->cfg.time_dim, c.x_dim, c.n_classes);
        mlp_destroy(&net);
        goto done;
    }
    d = diff_wrap(&c, net, max_batch);
done:
    return d;
}

// ---- schedule -------------------------------------------------------------------------------

double diff_abar(const diff_t *d, int t) {
    assert(t >= 0 && t < d->cfg.T);
    return d->abar[t];
}

void diff_timesteps(const diff_t *d, int S, int *ts) {
    int T = d->cfg.T;
    assert(S >= 1 && S <= T - 1);
    for (int k = 0; k <= S; k++)
        ts[k] = (int)lround((double)(S - k) * (T - 1) / S);
}

int diff_valid_step(const diff_t *d, int t, int t_prev, int label) {
    int lab_ok = label == DIFF_NULL_LABEL || (label >= 0 && label < d->cfg.n_classes);
    return t >= 1 && t < d->cfg.T && t_prev >= 0 && t_prev < t && lab_ok;
}

// Coefficients of one step t -> t_prev.
typedef struct {
    double sa_t;  // sqrt(abar_t)
    double s1a_t; // sqrt(1 - abar_t)
    double sa_p;  // sqrt(abar_prev)
    double c_eps; // sqrt(max(1 - abar_prev - sigma^2, 0))
    double sigma; // noise std of the step
} step_coef_t;

static step_coef_t step_coef(const diff_t *d, int t, int t_prev, float eta) {
    assert(t >= 1 && t < d->cfg.T && t_prev >= 0 && t_prev < t);
    double at = d->abar[t], ap = d->abar[t_prev];
    step_coef_t k;
    k.sa_t = sqrt(at);
    k.s1a_t = sqrt(1.0 - at);
    k.sa_p = sqrt(ap);
    k.sigma = eta * sqrt((1.0 - ap) / (1.0 - at)) * sqrt(1.0 - at / ap);
    double r = 1.0 - ap - k.sigma * k.sigma;
    k.c_eps = r > 0 ? sqrt(r) : 0.0;
    return k;
}

static inline double x0_elem(double x, double e, double sa, double s1a, int clip, int *clipped) {
    double v = (x - s1a * e) / sa;
    *clipped = 0;
    if (clip && (v > 1.0 || v < -1.0)) {
        *clipped = 1;
        v = v > 1.0 ? 1.0 : -1.0;
    }
    return v;
}

static int is_guided(const diff_t *d, const int *labels, const diff_sampler_t *s) {
    return s->guidance != 0.0f && labels && d->cfg.n_classes > 0;
}

const float *diff_eps_guided(diff_t *d, const float *x_t, const int *t, const int *labels, int N,
                             const diff_sampler_t *s) {
    if (!is_guided(d, labels, s))
        return diff_eps(d, x_t, t, labels, N);
    assert(2 * N <= d->max_batch);
    int D = d->cfg.x_dim;
    size_t ND = (size_t)N * D;
    // Rows [conditional | null], one forward.
    memcpy(d->x0, x_t, ND * sizeof(float));
    memcpy(d->x0 + ND, x_t, ND * sizeof(float));
    for (int i = 0; i < N; i++) {
        d->t2[i] = d->t2[N + i] = t[i];
        d->lab2[i] = labels[i];
        d->lab2[N + i] = DIFF_NULL_LABEL;
    }
    diff_eps(d, d->x0, d->t2, d->lab2, 2 * N);
    float w = s->guidance;
    for (size_t k = 0; k < ND; k++)
        d->eps[k] = (1.0f + w) * d->eps[k] - w * d->eps[ND + k];
    return d->eps;
}

// Back-propagates g (N, D), the gradient on the eps diff_eps_guided returned (held in d->work),
// into the net's parameters.
static void eps_backward(diff_t *d, int N, int guided, float w) {
    size_t ND = (size_t)N * d->cfg.x_dim;
    if (guided) {
        for (size_t k = 0; k < ND; k++) {
            d->work[ND + k] = -w * d->work[k];
            d->work[k] *= 1.0f + w;
        }
        ND *= 2;
    }
    layers_to_device(d->deps, d->work, ND);
    mlp_backward(d->net, d->deps);
}

// ---- the net --------------------------------------------------------------------------------

const float *diff_eps(diff_t *d, const float *x_t, const int *t, const int *labels, int N) {
    assert(N >= 1 && N <= d->max_batch);
    int D = d->cfg.x_dim, C = d->cond_dim, W = D + C;
    for (int i = 0; i < N; i++) {
        assert(t[i] >= 0 && t[i] < d->cfg.T);
        float *row = d->in + (size_t)i * W;
        memcpy(row, x_t + (size_t)i * D, (size_t)D * sizeof(float));
        if (C > 0) {
            int lab = labels ? labels[i] : DIFF_NULL_LABEL;
            assert(lab == DIFF_NULL_LABEL || (lab >= 0 && lab < d->cfg.n_classes));
            memset(row + D, 0, (size_t)C * sizeof(float));
            row[D + (lab < 0 ? C - 1 : lab)] = 1.0f;
        }
        d->tin[i] = (float)t[i];
    }
    mlp_forward(d->net, d->in, d->tin, N);
    layers_to_host(d->eps, d->net->a.out, (size_t)N * D);
    return d->eps;
}

float diff_loss(diff_t *d, const float *x0, const int *labels, const int *t, const float *noise,
                int N, int backward) {
    int D = d->cfg.x_dim;
    float *xt = d->x0; // (N, D)
    for (int i = 0; i < N; i++) {
        double sa = sqrt(d->abar[t[i]]), s1a = sqrt(1.0 - d->abar[t[i]]);
        for (int j = 0; j < D; j++) {
            size_t k = (size_t)i * D + j;
            xt[k] = (float)(sa * x0[k] + s1a * noise[k]);
        }
    }
    const float *eps = diff_eps(d, xt, t, labels, N);
    double sum = 0.0, scale = 2.0 / ((double)N * D);
    for (size_t k = 0; k < (size_t)N * D; k++) {
        double e = (double)eps[k] - noise[k];
        sum += e * e;
        d->work[k] = (float)(scale * e);
    }
    if (backward) {
        layers_to_device(d->deps, d->work, (size_t)N * D);
        mlp_backward(d->net, d->deps);
    }
    return (float)(sum / ((double)N * D));
}

float diff_train(diff_t *d, const float *x, const int *labels, int n, const diff_train_config_t *c,
                 FILE *log) {
    int B = c->batch, D = d->cfg.x_dim;
    assert(n >= 1 && B >= 1 && B <= d->max_batch);
    adamw_config_t opt = c->opt;
    int64_t s0 = d->net->ps.step;
    if (opt.decay_steps == 0)
        opt.decay_steps = s0 + c->steps;
    float *xb = rlx_alloc_floats((size_t)B * D, "train batch"); // (B, D)
    float *nb = rlx_alloc_floats((size_t)B * D, "train noise"); // (B, D)
    int *lb = rlx_xcalloc(B, sizeof(int), "train labels");      // (B)
    int *tb = rlx_xcalloc(B, sizeof(int), "train t");           // (B)
    rng_t r;
    rng_seed2(&r, c->seed, (uint64_t)s0);
    int tail = c->steps / 10 > 0 ? c->steps / 10 : 1;
    double tail_sum = 0.0, run = 0.0, t0 = rlx_now();
    for (int s = 0; s < c->steps; s++) {
        for (int i = 0; i < B; i++) {
            int j = (int)rng_below(&r, (uint32_t)n);
            memcpy(xb + (size_t)i * D, x + (size_t)j * D, (size_t)D * sizeof(float));
            int lab = DIFF_NULL_LABEL;
            if (d->cfg.n_classes > 0 && labels && rng_uniform(&r) >= c->cond_drop)
                lab = labels[j];
            lb[i] = lab;
            tb[i] = (int)rng_below(&r, (uint32_t)d->cfg.T);
            for (int k = 0; k < D; k++)
                nb[(size_t)i * D + k] = rng_normal(&r);
        }
        paramset_zero_grad(&d->net->ps);
        float loss = diff_loss(d, xb, lb, tb, nb, B, 1);
        float lr = adamw_lr(&opt, d->net->ps.step);
        float gnorm = adamw_step(&d->net->ps, &opt);
        run = s == 0 ? loss : 0.95 * run + 0.05 * loss;
        if (s >= c->steps - tail)
            tail_sum += loss;
        if (log && c->log_every > 0 && ((s + 1) % c->log_every == 0 || s + 1 == c->steps)) {
            double el = rlx_now() - t0;
            fprintf(log, "step %d/%d loss %.4f avg %.4f lr %.2e gnorm %.3f %.1f steps/s\n", s + 1,
                    c->steps, loss, run, lr, gnorm, (s + 1) / (el > 0 ? el : 1e-9));
            fflush(log);
        }
    }
    free(xb);
    free(nb);
    free(lb);
    free(tb);
    return (float)(tail_sum / tail);
}

// ---- one step's math ------------------------------------------------------------------------

void diff_x0_from_eps(const diff_t *d, float *x0_hat, const float *x_t, const float *eps,
                      const int *t, int N, int clip) {
    int D = d->cfg.x_dim, cl;
    for (int i = 0; i < N; i++) {
        assert(t[i] >= 0 && t[i] < d->cfg.T);
        double sa = sqrt(d->abar[t[i]]), s1a = sqrt(1.0 - d->abar[t[i]]);
        for (int j = 0; j < D; j++) {
            size_t k = (size_t)i * D + j;
            x0_hat[k] = (float)x0_elem(x_t[k], eps[k], sa, s1a, clip, &cl);
        }
    }
}

void diff_pf_mean(const diff_t *d, float *mean, float *sigma, const float *x_t, const float *eps,
                  const int *t, const int *t_prev, int N, const diff_sampler_t *s) {
    int D = d->cfg.x_dim, cl;
    for (int i = 0; i < N; i++) {
        step_coef_t k = step_coef(d, t[i], t_prev[i], s->eta);
        for (int j = 0; j < D; j++) {
            size_t q = (size_t)i * D + j;
            double x0 = x0_elem(x_t[q], eps[q], k.sa_t, k.s1a_t, s->clip_x0, &cl);
            mean[q] = (float)(k.sa_p * x0 + k.c_eps * eps[q]);
        }
        if (sigma)
            sigma[i] = (float)k.sigma;
    }
}

// log P_F of N rows given eps; with dmean != NULL also writes the gradient of
// sum_i dlogpf_i logpf_i with respect to eps into dmean (N, D).
static void logpf_rows(const diff_t *d, float *logpf, float *deps, const float *dlogpf,
                       const float *x_t, const float *x_prev, const float *eps, const int *t,
                       const int *t_prev, int N, const diff_sampler_t *s) {
    int D = d->cfg.x_dim, cl;
    assert(s->eta > 0);
    double norm = s->logp_sum ? 1.0 : 1.0 / D;
    for (int i = 0; i < N; i++) {
        step_coef_t k = step_coef(d, t[i], t_prev[i], s->eta);
        double inv_var = 1.0 / (k.sigma * k.sigma), q = 0.0;
        double dl = deps ? dlogpf[i] * norm : 0.0;
        for (int j = 0; j < D; j++) {
            size_t p = (size_t)i * D + j;
            double x0 = x0_elem(x_t[p], eps[p], k.sa_t, k.s1a_t, s->clip_x0, &cl);
            double m = k.sa_p * x0 + k.c_eps * eps[p];
            double r = (double)x_prev[p] - m;
            q += r * r;
            if (deps) {
                double dm_de = k.c_eps - (cl ? 0.0 : k.sa_p * k.s1a_t / k.sa_t);
                deps[p] = (float)(dl * r * inv_var * dm_de);
            }
        }
        logpf[i] = (float)(norm * (-0.5 * q * inv_var - D * log(k.sigma) - 0.5 * D * LOG_2PI));
    }
}

void diff_logpf_from_eps(const diff_t *d, float *logpf, const float *x_t, const float *x_prev,
                         const float *eps, const int *t, const int *t_prev, int N,
                         const diff_sampler_t *s) {
    logpf_rows(d, logpf, NULL, NULL, x_t, x_prev, eps, t, t_prev, N, s);
}

void diff_logpb(const diff_t *d, float *logpb, const float *x_t, const float *x_prev, const int *t,
                const int *t_prev, int N, int logp_sum) {
    int D = d->cfg.x_dim;
    double norm = logp_sum ? 1.0 : 1.0 / D;
    for (int i = 0; i < N; i++) {
        assert(t[i] >= 1 && t[i] < d->cfg.T && t_prev[i] >= 0 && t_prev[i] < t[i]);
        double alpha = d->abar[t[i]] / d->abar[t_prev[i]], sa = sqrt(alpha), var = 1.0 - alpha;
        double q = 0.0;
        for (int j = 0; j < D; j++) {
            size_t p = (size_t)i * D + j;
            double r = (double)x_t[p] - sa * x_prev[p];
            q += r * r;
        }
        logpb[i] = (float)(norm * (-0.5 * q / var - 0.5 * D * log(var) - 0.5 * D * LOG_2PI));
    }
}

// ---- sampling and recomputation ------------------------------------------------------------

void diff_predict_x0(diff_t *d, float *x0_hat, const float *x_t, const int *t, const int *labels,
                     int N, const diff_sampler_t *s) {
    const float *eps = diff_eps_guided(d, x_t, t, labels, N, s);
    diff_x0_from_eps(d, x0_hat, x_t, eps, t, N, s->clip_x0);
}

void diff_sample_step(diff_t *d, float *x_prev, float *logpf, float *logpb, const float *x_t, int t,
                      int t_prev, const int *labels, int N, const diff_sampler_t *s, rng_t *rngs) {
    assert(N >= 1 && N <= d->max_batch && x_prev != x_t);
    int D = d->cfg.x_dim;
    for (int i = 0; i < N; i++) {
        d->trow[i] = t;
        d->tprow[i] = t_prev;
    }
    const float *eps = diff_eps_guided(d, x_t, d->trow, labels, N, s);
    diff_pf_mean(d, x_prev, NULL, x_t, eps, d->trow, d->tprow, N, s);
    step_coef_t k = step_coef(d, t, t_prev, s->eta);
    for (int i = 0; i < N; i++)
        for (int j = 0; j < D; j++)
            x_prev[(size_t)i * D + j] += (float)(k.sigma * rng_normal(&rngs[i]));
    // From the stored x_prev, exactly as diff_logpf recomputes it.
    if (logpf)
        logpf_rows(d, logpf, NULL, NULL, x_t, x_prev, eps, d->trow, d->tprow, N, s);
    if (logpb)
        diff_logpb(d, logpb, x_t, x_prev, d->trow, d->tprow, N, s->logp_sum);
}

void diff_sample(diff_t *d, float *xs, float *logpf, float *logpb, int *ts_out, const int *labels,
                 int N, int S, const diff_sampler_t *s, uint64_t seed, uint64_t seq_id0) {
    assert(xs && N >= 1 && N <= d->max_batch);
    int D = d->cfg.x_dim;
    size_t ND = (size_t)N * D;
    diff_timesteps(d, S, d->ts);
    for (int i = 0; i < N; i++) {
        rng_seed2(&d->rngs[i], seed, seq_id0 + (uint64_t)i);
        for (int j = 0; j < D; j++)
            xs[(size_t)i * D + j] = rng_normal(&d->rngs[i]);
    }
    for (int k = 0; k < S; k++)
        diff_sample_step(d, xs + (k + 1) * ND, logpf ? logpf + (size_t)k * N : NULL,
                         logpb ? logpb + (size_t)k * N : NULL, xs + k * ND, d->ts[k], d->ts[k + 1],
                         labels, N, s, d->rngs);
    if (ts_out)
        memcpy(ts_out, d->ts, (size_t)(S + 1) * sizeof(int));
}

void diff_logpf(diff_t *d, float *logpf, const float *x_t, const float *x_prev, const int *t,
                const int *t_prev, const int *labels, int N, const diff_sampler_t *s,
                const float *dlogpf) {
    const float *eps = diff_eps_guided(d, x_t, t, labels, N, s);
    logpf_rows(d, logpf, dlogpf ? d->work : NULL, dlogpf, x_t, x_prev, eps, t, t_prev, N, s);
    if (dlogpf)
        eps_backward(d, N, is_guided(d, labels, s), s->guidance);
}
