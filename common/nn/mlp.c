// mlp.c: the residual MLP (diffusion denoiser, flow and value heads): arena layout,
// initialisation, forward and backward passes from layers.h, checkpoints. See mlp.h.
#include "mlp.h"

#include <assert.h>
#include <math.h>
#include <string.h>

#include "layers.h"
#include "rng.h"
#include "util.h"

const char *const MLP_PARAM_NAMES[MLP_NUM_PARAM_TENSORS] = {
    "w_in", "b_in", "ln_w", "ln_b", "w1", "b1", "w2", "b2", "lnf_w", "lnf_b", "w_out", "b_out"};

static void param_sizes(const mlp_config_t *c, size_t s[MLP_NUM_PARAM_TENSORS]) {
    size_t D = c->in_dim + c->time_dim, H = c->hidden, K = c->n_blocks, O = c->out_dim;
    size_t i = 0;
    s[i++] = H * D;     // w_in
    s[i++] = H;         // b_in
    s[i++] = K * H;     // ln_w
    s[i++] = K * H;     // ln_b
    s[i++] = K * H * H; // w1
    s[i++] = K * H;     // b1
    s[i++] = K * H * H; // w2
    s[i++] = K * H;     // b2
    s[i++] = H;         // lnf_w
    s[i++] = H;         // lnf_b
    s[i++] = O * H;     // w_out
    s[i++] = O;         // b_out
}

// Activation sizes for N rows in mlp_acts_t order (all needed by the backward pass too,
// except the LayerNorm statistics, which only the forward writes).
static void act_sizes(const mlp_config_t *c, size_t N, int grad, size_t s[MLP_NUM_ACTS]) {
    size_t D = c->in_dim + c->time_dim, H = c->hidden, K = c->n_blocks, O = c->out_dim;
    size_t i = 0;
    s[i++] = N * c->time_dim;     // temb
    s[i++] = N * D;               // in
    s[i++] = (K + 1) * N * H;     // h
    s[i++] = K * N * H;           // ln
    s[i++] = grad ? 0 : K * N;    // ln_mean
    s[i++] = grad ? 0 : K * N;    // ln_rstd
    s[i++] = K * N * H;           // a
    s[i++] = K * N * H;           // s
    s[i++] = N * H;               // lnf
    s[i++] = grad ? 0 : N;        // lnf_mean
    s[i++] = grad ? 0 : N;        // lnf_rstd
    s[i++] = N * O;               // out
}

static size_t sum_sizes(const size_t *s, int n) {
    size_t t = 0;
    for (int i = 0; i < n; i++)
        t += s[i];
    return t;
}

static size_t carve(float **fields, const size_t *sizes, int n, float *base) {
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        fields[i] = sizes[i] ? base + off : NULL;
        off += sizes[i];
    }
    return off;
}

static const char *config_problem(const mlp_config_t *c) {
    if (c->in_dim < 1 || c->in_dim > 1 << 20)
        return "in_dim must be in [1, 2^20]";
    if (c->hidden < 1 || c->hidden > 65536)
        return "hidden must be in [1, 65536]";
    if (c->n_blocks < 0 || c->n_blocks > 1024)
        return "n_blocks must be in [0, 1024]";
    if (c->out_dim < 1 || c->out_dim > 1 << 20)
        return "out_dim must be in [1, 2^20]";
    if (c->time_dim < 0 || c->time_dim % 2 != 0 || c->time_dim > 4096)
        return "time_dim must be even and in [0, 4096]";
    return NULL;
}

// Arena: params | grads | adam m | adam v | acts | dacts | t | dx | dt. Activations are carved
// for the actual N at each forward, so the used part of each region is a prefix.
static void carve_acts(mlp_t *m, int N) {
    size_t s[MLP_NUM_ACTS], sg[MLP_NUM_ACTS], cap[MLP_NUM_ACTS];
    act_sizes(&m->cfg, N, 0, s);
    act_sizes(&m->cfg, N, 1, sg);
    act_sizes(&m->cfg, m->max_batch, 0, cap);
    float *acts = m->ps.v + m->ps.n;
    carve((float **)&m->a, s, MLP_NUM_ACTS, acts);
    carve((float **)&m->da, sg, MLP_NUM_ACTS, acts + sum_sizes(cap, MLP_NUM_ACTS));
    m->N = N;
}

mlp_t *mlp_new(const mlp_config_t *cfg, int max_batch, uint64_t seed) {
    const char *why = config_problem(cfg);
    if (why)
        RLX_DIE("bad mlp config (D=%d H=%d K=%d O=%d time_dim=%d): %s", cfg->in_dim, cfg->hidden,
                cfg->n_blocks, cfg->out_dim, cfg->time_dim, why);
    if (max_batch < 1)
        RLX_DIE("mlp max_batch must be >= 1, got %d", max_batch);
    mlp_t *m = rlx_xcalloc(1, sizeof *m, "mlp");
    m->cfg = *cfg;
    m->max_batch = max_batch;
    size_t ps[MLP_NUM_PARAM_TENSORS], cap[MLP_NUM_ACTS], capg[MLP_NUM_ACTS];
    param_sizes(cfg, ps);
    act_sizes(cfg, max_batch, 0, cap);
    act_sizes(cfg, max_batch, 1, capg);
    size_t n = sum_sizes(ps, MLP_NUM_PARAM_TENSORS);
    size_t N = max_batch;
    m->arena_floats = 4 * n + sum_sizes(cap, MLP_NUM_ACTS) + sum_sizes(capg, MLP_NUM_ACTS) +
                      N + N * cfg->in_dim + N;
    m->arena = layers_alloc(m->arena_floats);
    if (!m->arena)
        RLX_DIE("out of memory: mlp arena of %zu floats; lower max_batch", m->arena_floats);
    m->ps.n = n;
    m->ps.w = m->arena;
    m->ps.g = m->ps.w + n;
    m->ps.m = m->ps.g + n;
    m->ps.v = m->ps.m + n;
    carve((float **)&m->w, ps, MLP_NUM_PARAM_TENSORS, m->ps.w);
    carve((float **)&m->g, ps, MLP_NUM_PARAM_TENSORS, m->ps.g);
    float *tail = m->ps.v + n + sum_sizes(cap, MLP_NUM_ACTS) + sum_sizes(capg, MLP_NUM_ACTS);
    m->t = tail;
    m->dx = m->t + N;
    m->dt = m->dx + N * cfg->in_dim;
    carve_acts(m, max_batch);

    // Fan-in scaled normal weights; the second matmul of each block is scaled down by
    // sqrt(K) so the residual stream's variance stays O(1) with depth.
    float *host = rlx_alloc_floats(n, "mlp init");
    rng_t r;
    rng_seed(&r, seed);
    float D = (float)(cfg->in_dim + cfg->time_dim), H = (float)cfg->hidden;
    float K = (float)(cfg->n_blocks > 0 ? cfg->n_blocks : 1);
    float std[MLP_NUM_PARAM_TENSORS] = {1.0f / sqrtf(D), 0, 0, 0, 1.0f / sqrtf(H), 0,
                                        1.0f / sqrtf(H * K), 0, 0, 0, 1.0f / sqrtf(H), 0};
    size_t off = 0;
    for (int t = 0; t < MLP_NUM_PARAM_TENSORS; t++) {
        int is_lnw = !strcmp(MLP_PARAM_NAMES[t], "ln_w") || !strcmp(MLP_PARAM_NAMES[t], "lnf_w");
        for (size_t i = 0; i < ps[t]; i++)
            host[off + i] = is_lnw ? 1.0f : std[t] * rng_normal(&r);
        off += ps[t];
    }
    layers_to_device(m->ps.w, host, n);
    free(host);
    return m;
}

void mlp_destroy(mlp_t **self_p) {
    if (!self_p || !*self_p)
        return;
    layers_free((*self_p)->arena);
    free(*self_p);
    *self_p = NULL;
}

void mlp_forward(mlp_t *m, const float *x, const float *t, int N) {
    const mlp_config_t *c = &m->cfg;
    assert(N >= 1 && N <= m->max_batch);
    if (N != m->N)
        carve_acts(m, N);
    int D = c->in_dim, TD = c->time_dim, Din = D + TD, H = c->hidden, K = c->n_blocks;
    mlp_params_t *w = &m->w;
    mlp_acts_t *a = &m->a;
    size_t nh = (size_t)N * H;

    if (TD > 0) {
        assert(t);
        memcpy(m->t, t, (size_t)N * sizeof(float));
        timeemb_forward(a->temb, m->t, N, TD);
    }
    for (int i = 0; i < N; i++) {
        memcpy(a->in + (size_t)i * Din, x + (size_t)i * D, (size_t)D * sizeof(float));
        if (TD > 0)
            memcpy(a->in + (size_t)i * Din + D, a->temb + (size_t)i * TD,
                   (size_t)TD * sizeof(float));
    }
    linear_forward(a->h, a->in, w->w_in, w->b_in, N, Din, H);
    for (int k = 0; k < K; k++) {
        size_t kh = (size_t)k * H;
        float *h = a->h + k * nh, *hn = a->h + (k + 1) * nh;
        float *ln = a->ln + k * nh, *pre = a->a + k * nh, *s = a->s + k * nh;
        layernorm_forward(ln, a->ln_mean + (size_t)k * N, a->ln_rstd + (size_t)k * N, h,
                          w->ln_w + kh, w->ln_b + kh, N, H);
        linear_forward(pre, ln, w->w1 + kh * H, w->b1 + kh, N, H, H);
        silu_forward(s, pre, nh);
        linear_forward(hn, s, w->w2 + kh * H, w->b2 + kh, N, H, H);
        residual_forward(hn, hn, h, nh);
    }
    layernorm_forward(a->lnf, a->lnf_mean, a->lnf_rstd, a->h + K * nh, w->lnf_w, w->lnf_b, N, H);
    linear_forward(a->out, a->lnf, w->w_out, w->b_out, N, H, c->out_dim);
}

void mlp_backward(mlp_t *m, const float *dout) {
    const mlp_config_t *c = &m->cfg;
    int N = m->N, D = c->in_dim, TD = c->time_dim, Din = D + TD, H = c->hidden, K = c->n_blocks;
    mlp_params_t *w = &m->w, *g = &m->g;
    mlp_acts_t *a = &m->a, *d = &m->da;
    size_t nh = (size_t)N * H;

    size_t sg[MLP_NUM_ACTS];
    act_sizes(c, N, 1, sg);
    layers_zero(d->temb ? d->temb : d->in, sum_sizes(sg, MLP_NUM_ACTS));

    linear_backward(d->lnf, g->w_out, g->b_out, dout, a->lnf, w->w_out, N, H, c->out_dim);
    layernorm_backward(d->h + K * nh, g->lnf_w, g->lnf_b, d->lnf, a->h + K * nh, w->lnf_w,
                       a->lnf_mean, a->lnf_rstd, N, H);
    for (int k = K - 1; k >= 0; k--) {
        size_t kh = (size_t)k * H;
        float *dh = d->h + k * nh, *dhn = d->h + (k + 1) * nh;
        residual_backward(dh, NULL, dhn, nh);
        linear_backward(d->s + k * nh, g->w2 + kh * H, g->b2 + kh, dhn, a->s + k * nh,
                        w->w2 + kh * H, N, H, H);
        silu_backward(d->a + k * nh, d->s + k * nh, a->a + k * nh, nh);
        linear_backward(d->ln + k * nh, g->w1 + kh * H, g->b1 + kh, d->a + k * nh,
                        a->ln + k * nh, w->w1 + kh * H, N, H, H);
        layernorm_backward(dh, g->ln_w + kh, g->ln_b + kh, d->ln + k * nh, a->h + k * nh,
                           w->ln_w + kh, a->ln_mean + (size_t)k * N, a->ln_rstd + (size_t)k * N,
                           N, H);
    }
    linear_backward(d->in, g->w_in, g->b_in, d->h, a->in, w->w_in, N, Din, H);

    for (int i = 0; i < N; i++) {
        memcpy(m->dx + (size_t)i * D, d->in + (size_t)i * Din, (size_t)D * sizeof(float));
        if (TD > 0)
            memcpy(d->temb + (size_t)i * TD, d->in + (size_t)i * Din + D,
                   (size_t)TD * sizeof(float));
    }
    layers_zero(m->dt, (size_t)N);
    if (TD > 0)
        timeemb_backward(m->dt, d->temb, m->t, N, TD);
}

static void config_to_ckpt(const mlp_config_t *c, int32_t out[CKPT_CONFIG_LEN]) {
    memset(out, 0, CKPT_CONFIG_LEN * sizeof(int32_t));
    out[0] = c->in_dim;
    out[1] = c->hidden;
    out[2] = c->n_blocks;
    out[3] = c->out_dim;
    out[4] = c->time_dim;
}

int mlp_save(const mlp_t *m, const char *path, const void *extra, size_t extra_len, char *err,
             size_t errlen) {
    int32_t cfg[CKPT_CONFIG_LEN];
    config_to_ckpt(&m->cfg, cfg);
    return paramset_save(&m->ps, path, CKPT_KIND_MLP, cfg, extra, extra_len, err, errlen);
}

mlp_t *mlp_from_ckpt(const ckpt_t *ck, int max_batch, char *err, size_t errlen) {
    if (ckpt_kind(ck) != CKPT_KIND_MLP) {
        snprintf(err, errlen, "checkpoint holds model kind %u, not an mlp (kind %d)",
                 ckpt_kind(ck), CKPT_KIND_MLP);
        return NULL;
    }
    const int32_t *k = ckpt_config(ck);
    mlp_config_t cfg = {.in_dim = k[0], .hidden = k[1], .n_blocks = k[2], .out_dim = k[3],
                        .time_dim = k[4]};
    const char *why = config_problem(&cfg);
    if (why) {
        snprintf(err, errlen, "checkpoint has an invalid mlp config: %s", why);
        return NULL;
    }
    size_t ps[MLP_NUM_PARAM_TENSORS];
    param_sizes(&cfg, ps);
    uint64_t nbytes = 0;
    if (!ckpt_section(ck, "params", &nbytes) ||
        nbytes != sum_sizes(ps, MLP_NUM_PARAM_TENSORS) * sizeof(float)) {
        snprintf(err, errlen, "checkpoint's params section does not match its mlp config");
        return NULL;
    }
    mlp_t *m = mlp_new(&cfg, max_batch, 0);
    if (paramset_load(&m->ps, ck, err, errlen) != 0) {
        mlp_destroy(&m);
        return NULL;
    }
    return m;
}

mlp_t *mlp_load(const char *path, int max_batch, char *err, size_t errlen) {
    ckpt_t *ck = ckpt_read(path, err, errlen);
    if (!ck)
        return NULL;
    mlp_t *m = mlp_from_ckpt(ck, max_batch, err, errlen);
    ckpt_destroy(&ck);
    return m;
}
