// gpt.c: the GPT-2-style byte-level transformer: arena layout, initialisation, forward and
// backward passes composed from layers.h, MLE loss and checkpoints. See gpt.h.
#include "gpt.h"

#include <assert.h>
#include <math.h>
#include <string.h>

#include "layers.h"
#include "rng.h"
#include "util.h"

const char *const GPT_PARAM_NAMES[GPT_NUM_PARAM_TENSORS] = {
    "wte",  "wpe",  "ln1w", "ln1b", "qkvw",    "qkvb",    "attprojw", "attprojb",
    "ln2w", "ln2b", "fcw",  "fcb",  "fcprojw", "fcprojb", "lnfw",     "lnfb"};

#define GPT_NUM_ACTS 21

// Sizes of the parameter tensors, in gpt_params_t order.
static void param_sizes(const gpt_config_t *c, size_t s[GPT_NUM_PARAM_TENSORS]) {
    size_t L = c->n_layer, C = c->n_embd, V = c->vocab, maxT = c->ctx_len;
    size_t i = 0;
    s[i++] = V * C;         // wte
    s[i++] = maxT * C;      // wpe
    s[i++] = L * C;         // ln1w
    s[i++] = L * C;         // ln1b
    s[i++] = L * 3 * C * C; // qkvw
    s[i++] = L * 3 * C;     // qkvb
    s[i++] = L * C * C;     // attprojw
    s[i++] = L * C;         // attprojb
    s[i++] = L * C;         // ln2w
    s[i++] = L * C;         // ln2b
    s[i++] = L * 4 * C * C; // fcw
    s[i++] = L * 4 * C;     // fcb
    s[i++] = L * C * 4 * C; // fcprojw
    s[i++] = L * C;         // fcprojb
    s[i++] = C;             // lnfw
    s[i++] = C;             // lnfb
}

// Sizes of the activation tensors for a (B, T) batch, in gpt_acts_t order. With grad set,
// the sizes of their gradients: the backward pass walks the layers one at a time and needs a
// layer's activation gradients only while it is in that layer, so they are one layer's worth,
// reused by every layer (they stay in cache, and the per-step zeroing shrinks L-fold). The
// residual stream's gradient is one running (B,T,C) buffer, residual3, that each layer adds
// to in place; residual_backward would only copy it (encoded, attproj, residual2 and fcproj
// get no buffer). Tensors needing no gradient are 0.
static void act_sizes(const gpt_config_t *c, size_t B, size_t T, int grad, size_t s[GPT_NUM_ACTS]) {
    size_t L = c->n_layer, C = c->n_embd, NH = c->n_head, V = c->vocab, BT = B * T;
    size_t Lg = grad ? 1 : L; // layers a tensor holds
    size_t i = 0;
    s[i++] = grad ? 0 : BT * C;             // encoded
    s[i++] = Lg * BT * C;                   // ln1
    s[i++] = grad ? 0 : L * BT;             // ln1_mean
    s[i++] = grad ? 0 : L * BT;             // ln1_rstd
    s[i++] = Lg * BT * 3 * C;               // qkv
    s[i++] = Lg * BT * C;                   // atty
    s[i++] = grad ? 0 : L * B * NH * T * T; // att
    s[i++] = grad ? 0 : L * BT * C;         // attproj
    s[i++] = grad ? 0 : L * BT * C;         // residual2
    s[i++] = Lg * BT * C;                   // ln2
    s[i++] = grad ? 0 : L * BT;             // ln2_mean
    s[i++] = grad ? 0 : L * BT;             // ln2_rstd
    s[i++] = Lg * BT * 4 * C;               // fch
    s[i++] = Lg * BT * 4 * C;               // fch_gelu
    s[i++] = grad ? 0 : L * BT * C;         // fcproj
    s[i++] = Lg * BT * C;                   // residual3
    s[i++] = BT * C;                        // lnf
    s[i++] = grad ? 0 : BT;                 // lnf_mean
    s[i++] = grad ? 0 : BT;                 // lnf_rstd
    s[i++] = BT * V;                        // logits
    s[i++] = grad ? 0 : BT;                 // lse
}

// Point the n float* fields of a struct at consecutive slices of base; returns floats used.
// Fields of size 0 become NULL.
static size_t carve(float **fields, const size_t *sizes, int n, float *base) {
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        fields[i] = sizes[i] ? base + off : NULL;
        off += sizes[i];
    }
    return off;
}

static size_t sum_sizes(const size_t *s, int n) {
    size_t t = 0;
    for (int i = 0; i < n; i++)
        t += s[i];
    return t;
}

// Start-up check of a config; returns NULL if fine, else what is wrong.
static const char *config_problem(const gpt_config_t *c) {
    if (c->n_layer < 1 || c->n_layer > 256)
        return "n_layer must be in [1, 256]";
    if (c->n_embd < 1 || c->n_embd > 16384)
        return "n_embd must be in [1, 16384]";
    if (c->n_head < 1 || c->n_embd % c->n_head != 0)
        return "n_head must divide n_embd";
    if (c->ctx_len < 1 || c->ctx_len > 65536)
        return "ctx_len must be in [1, 65536]";
    if (c->vocab < GPT_VOCAB || c->vocab > 1 << 20)
        return "vocab must be at least 260 (bytes + specials)";
    return NULL;
}

// Layout of the arena: params | grads | adam m | adam v | acts | dacts | datt | logp | dlogp |
// mask | vocab_mask. Activation regions are sized for (max_batch, ctx_len); gpt_forward re-carves
// them for the actual (B, T) so each region's used part is a prefix.
static void carve_acts(gpt_t *m, int B, int T) {
    size_t s[GPT_NUM_ACTS], sg[GPT_NUM_ACTS];
    act_sizes(&m->cfg, B, T, 0, s);
    act_sizes(&m->cfg, B, T, 1, sg);
    size_t cap[GPT_NUM_ACTS];
    act_sizes(&m->cfg, m->max_batch, m->cfg.ctx_len, 0, cap);
    float *acts_base = m->ps.v + m->ps.n;
    float *dacts_base = acts_base + sum_sizes(cap, GPT_NUM_ACTS);
    carve((float **)&m->a, s, GPT_NUM_ACTS, acts_base);
    carve((float **)&m->da, sg, GPT_NUM_ACTS, dacts_base);
    m->B = B;
    m->T = T;
}

gpt_t *gpt_new(const gpt_config_t *cfg, int max_batch, uint64_t seed) {
    const char *why = config_problem(cfg);
    if (why)
        RLX_DIE("bad gpt config (L=%d C=%d NH=%d T=%d V=%d): %s", cfg->n_layer, cfg->n_embd,
                cfg->n_head, cfg->ctx_len, cfg->vocab, why);
    if (max_batch < 1)
        RLX_DIE("gpt max_batch must be >= 1, got %d", max_batch);
    gpt_t *m = rlx_xcalloc(1, sizeof *m, "gpt");
    m->cfg = *cfg;
    m->max_batch = max_batch;

    size_t ps[GPT_NUM_PARAM_TENSORS], cap[GPT_NUM_ACTS], capg[GPT_NUM_ACTS];
    param_sizes(cfg, ps);
    act_sizes(cfg, max_batch, cfg->ctx_len, 0, cap);
    act_sizes(cfg, max_batch, cfg->ctx_len, 1, capg);
    size_t n = sum_sizes(ps, GPT_NUM_PARAM_TENSORS);
    size_t BT = (size_t)max_batch * cfg->ctx_len;
    size_t datt = (size_t)max_batch * cfg->n_head * cfg->ctx_len * cfg->ctx_len;
    m->arena_floats = 4 * n + sum_sizes(cap, GPT_NUM_ACTS) + sum_sizes(capg, GPT_NUM_ACTS) + datt +
                      3 * BT + (size_t)cfg->vocab;
    m->arena = layers_alloc(m->arena_floats);
    if (!m->arena)
        RLX_DIE("out of memory: gpt arena of %zu floats (%.1f MiB); lower max_batch or ctx_len",
                m->arena_floats, m->arena_floats * 4.0 / 1048576.0);

    m->ps.n = n;
    m->ps.w = m->arena;
    m->ps.g = m->ps.w + n;
    m->ps.m = m->ps.g + n;
    m->ps.v = m->ps.m + n;
    carve((float **)&m->w, ps, GPT_NUM_PARAM_TENSORS, m->ps.w);
    carve((float **)&m->g, ps, GPT_NUM_PARAM_TENSORS, m->ps.g);
    float *tail = m->ps.v + n + sum_sizes(cap, GPT_NUM_ACTS) + sum_sizes(capg, GPT_NUM_ACTS);
    m->datt_scratch = tail;
    m->logp = tail + datt;
    m->dlogp = m->logp + BT;
    m->mask = m->dlogp + BT;
    m->vocab_mask = m->mask + BT;
    m->tokens = rlx_xcalloc(BT, sizeof(int), "gpt tokens");
    m->targets = rlx_xcalloc(BT, sizeof(int), "gpt targets");
    carve_acts(m, max_batch, cfg->ctx_len);

    // GPT-2 initialisation, drawn on the host then copied to the back end.
    float *host = rlx_alloc_floats(n, "gpt init");
    rng_t r;
    rng_seed(&r, seed);
    float resid_std = 0.02f / sqrtf(2.0f * cfg->n_layer);
    size_t off = 0;
    for (int t = 0; t < GPT_NUM_PARAM_TENSORS; t++) {
        const char *name = GPT_PARAM_NAMES[t];
        int is_lnw = !strcmp(name, "ln1w") || !strcmp(name, "ln2w") || !strcmp(name, "lnfw");
        int is_bias = name[strlen(name) - 1] == 'b';
        float std = (!strcmp(name, "attprojw") || !strcmp(name, "fcprojw")) ? resid_std : 0.02f;
        for (size_t i = 0; i < ps[t]; i++)
            host[off + i] = is_lnw ? 1.0f : is_bias ? 0.0f : std * rng_normal(&r);
        off += ps[t];
    }
    layers_to_device(m->ps.w, host, n);
    free(host);
    return m;
}

void gpt_destroy(gpt_t **self_p) {
    if (!self_p || !*self_p)
        return;
    gpt_t *m = *self_p;
    layers_free(m->arena);
    free(m->tokens);
    free(m->targets);
    free(m);
    *self_p = NULL;
}

void gpt_forward(gpt_t *m, const int *tokens, const int *targets, int B, int T) {
    const gpt_config_t *c = &m->cfg;
    assert(B >= 1 && B <= m->max_batch && T >= 1 && T <= c->ctx_len);
    int L = c->n_layer, C = c->n_embd, NH = c->n_head, V = c->vocab, BT = B * T;
    for (int i = 0; i < BT; i++)
        assert(tokens[i] >= 0 && tokens[i] < V);
    if (B != m->B || T != m->T)
        carve_acts(m, B, T);
    memcpy(m->tokens, tokens, (size_t)BT * sizeof(int));
    for (int i = 0; i < BT; i++)
        m->targets[i] = targets ? targets[i] : -1;

    gpt_params_t *w = &m->w;
    gpt_acts_t *a = &m->a;
    size_t btc = (size_t)BT * C;
    embed_forward(a->encoded, tokens, w->wte, w->wpe, B, T, C);
    const float *res = a->encoded;
    for (int l = 0; l < L; l++) {
        float *ln1 = a->ln1 + l * btc, *qkv = a->qkv + 3 * l * btc, *atty = a->atty + l * btc;
        float *att = a->att + (size_t)l * B * NH * T * T;
        float *attproj = a->attproj + l * btc, *res2 = a->residual2 + l * btc;
        float *ln2 = a->ln2 + l * btc, *fch = a->fch + 4 * l * btc;
        float *fchg = a->fch_gelu + 4 * l * btc, *fcproj = a->fcproj + l * btc;
        float *res3 = a->residual3 + l * btc;
        size_t lc = (size_t)l * C, lbt = (size_t)l * BT;

        layernorm_forward(ln1, a->ln1_mean + lbt, a->ln1_rstd + lbt, res, w->ln1w + lc,
                          w->ln1b + lc, BT, C);
        linear_forward(qkv, ln1, w->qkvw + 3 * lc * C, w->qkvb + 3 * lc, BT, C, 3 * C);
        attention_forward(atty, att, qkv, B, T, C, NH);
        linear_forward(attproj, atty, w->attprojw + lc * C, w->attprojb + lc, BT, C, C);
        residual_forward(res2, res, attproj, btc);
        layernorm_forward(ln2, a->ln2_mean + lbt, a->ln2_rstd + lbt, res2, w->ln2w + lc,
                          w->ln2b + lc, BT, C);
        linear_forward(fch, ln2, w->fcw + 4 * lc * C, w->fcb + 4 * lc, BT, C, 4 * C);
        gelu_forward(fchg, fch, 4 * btc);
        linear_forward(fcproj, fchg, w->fcprojw + 4 * lc * C, w->fcprojb + lc, BT, 4 * C, C);
        residual_forward(res3, res2, fcproj, btc);
        res = res3;
    }
    layernorm_forward(a->lnf, a->lnf_mean, a->lnf_rstd, res, w->lnfw, w->lnfb, BT, C);
    // The vocabulary mask (gpt_set_vocab_mask) is the output layer's bias: 0 or -inf per token.
    linear_forward(a->logits, a->lnf, w->wte, m->vocab_masked ? m->vocab_mask : NULL, BT, C, V);
    logprob_forward(m->logp, a->lse, a->logits, m->targets, BT, V);
}

void gpt_set_vocab_mask(gpt_t *m, const int *allowed, int n) {
    int V = m->cfg.vocab;
    assert(n >= 0 && n <= V && (n == 0 || allowed));
    m->vocab_masked = n > 0;
    if (n == 0)
        return;
    float *host = rlx_alloc_floats((size_t)V, "gpt vocab mask");
    for (int v = 0; v < V; v++)
        host[v] = -INFINITY;
    for (int i = 0; i < n; i++) {
        assert(allowed[i] >= 0 && allowed[i] < V);
        host[allowed[i]] = 0.0f;
    }
    layers_to_device(m->vocab_mask, host, (size_t)V);
    free(host);
}

void gpt_backward(gpt_t *m) {
    const gpt_config_t *c = &m->cfg;
    int B = m->B, T = m->T, L = c->n_layer, C = c->n_embd, NH = c->n_head, V = c->vocab;
    int BT = B * T;
    size_t btc = (size_t)BT * C;
    gpt_params_t *w = &m->w, *g = &m->g;
    gpt_acts_t *a = &m->a, *d = &m->da;
    // One layer's activation gradients (see act_sizes): ln1 | qkv | atty | ln2 | fch | fch_gelu
    // are consecutive in the arena, 14 (B,T,C) slices, zeroed again before each layer.
    size_t layer_grads = 14 * btc;
    assert(d->fch_gelu + 4 * btc == d->ln1 + layer_grads);
    float *dres = d->residual3; // (B,T,C) gradient of the residual stream, updated in place

    // Gradients accumulate, so start from zero.
    layers_zero(dres, btc);
    layers_zero(d->lnf, btc);
    layers_zero(d->logits, (size_t)BT * V);
    logprob_backward(d->logits, m->dlogp, a->logits, a->lse, m->targets, BT, V);
    linear_backward(d->lnf, g->wte, NULL, d->logits, a->lnf, w->wte, BT, C, V);
    layernorm_backward(dres, g->lnfw, g->lnfb, d->lnf, a->residual3 + (size_t)(L - 1) * btc,
                       w->lnfw, a->lnf_mean, a->lnf_rstd, BT, C);
    for (int l = L - 1; l >= 0; l--) {
        size_t lc = (size_t)l * C, lbt = (size_t)l * BT, o = l * btc;
        const float *res_in = l == 0 ? a->encoded : a->residual3 + o - btc;
        layers_zero(d->ln1, layer_grads);

        // res3 = res2 + fcproj: both get dres as is; dres then collects LayerNorm 2's input
        // gradient and so becomes the gradient of res2.
        linear_backward(d->fch_gelu, g->fcprojw + 4 * lc * C, g->fcprojb + lc, dres,
                        a->fch_gelu + 4 * o, w->fcprojw + 4 * lc * C, BT, 4 * C, C);
        gelu_backward(d->fch, d->fch_gelu, a->fch + 4 * o, 4 * btc);
        linear_backward(d->ln2, g->fcw + 4 * lc * C, g->fcb + 4 * lc, d->fch, a->ln2 + o,
                        w->fcw + 4 * lc * C, BT, C, 4 * C);
        layernorm_backward(dres, g->ln2w + lc, g->ln2b + lc, d->ln2, a->residual2 + o, w->ln2w + lc,
                           a->ln2_mean + lbt, a->ln2_rstd + lbt, BT, C);
        // res2 = res_in + attproj: the same again, dres becomes the gradient of res_in.
        linear_backward(d->atty, g->attprojw + lc * C, g->attprojb + lc, dres, a->atty + o,
                        w->attprojw + lc * C, BT, C, C);
        attention_backward(d->qkv, m->datt_scratch, d->atty, a->qkv + 3 * o,
                           a->att + (size_t)l * B * NH * T * T, B, T, C, NH);
        linear_backward(d->ln1, g->qkvw + 3 * lc * C, g->qkvb + 3 * lc, d->qkv, a->ln1 + o,
                        w->qkvw + 3 * lc * C, BT, C, 3 * C);
        layernorm_backward(dres, g->ln1w + lc, g->ln1b + lc, d->ln1, res_in, w->ln1w + lc,
                           a->ln1_mean + lbt, a->ln1_rstd + lbt, BT, C);
    }
    embed_backward(g->wte, g->wpe, dres, m->tokens, B, T, C);
}

void gpt_response_row(int *tok_row, int *tgt_row, int T, const int *tokens, int prompt_len,
                      int resp_len) {
    int len = prompt_len + resp_len;
    assert(prompt_len >= 1 && resp_len >= 1 && len <= T + 1);
    for (int t = 0; t < T; t++) {
        tok_row[t] = t < len - 1 ? tokens[t] : GPT_TOK_PAD;
        tgt_row[t] = t >= prompt_len - 1 && t < len - 1 ? tokens[t + 1] : -1;
    }
}

float gpt_mle_loss(gpt_t *m, const float *mask, const float *weight) {
    int BT = m->B * m->T;
    for (int i = 0; i < BT; i++)
        m->mask[i] = m->targets[i] >= 0 ? (mask ? mask[i] : 1.0f) : 0.0f;
    float loss = xent_forward(m->logp, m->mask, weight, BT);
    memset(m->dlogp, 0, (size_t)BT * sizeof(float));
    xent_backward(m->dlogp, 1.0f, m->mask, weight, BT);
    return loss;
}

double gpt_flops_per_step(const gpt_config_t *c, int B, int T) {
    double L = c->n_layer, C = c->n_embd, V = c->vocab;
    // Per token forward: 2 FLOPs per weight of every matmul (12 C^2 per block + the V x C
    // output layer) plus attention scores and mixing, 2 * 2 * T * C per block (the full T x T
    // is computed; the causal half is masked). Backward is twice the forward.
    double fwd = 2.0 * (L * 12.0 * C * C + V * C) + L * 4.0 * T * C;
    return 3.0 * fwd * (double)B * (double)T;
}

static void config_to_ckpt(const gpt_config_t *c, int32_t out[CKPT_CONFIG_LEN]) {
    memset(out, 0, CKPT_CONFIG_LEN * sizeof(int32_t));
    out[0] = c->n_layer;
    out[1] = c->n_embd;
    out[2] = c->n_head;
    out[3] = c->ctx_len;
    out[4] = c->vocab;
}

int gpt_save(const gpt_t *m, const char *path, const void *extra, size_t extra_len, char *err,
             size_t errlen) {
    int32_t cfg[CKPT_CONFIG_LEN];
    config_to_ckpt(&m->cfg, cfg);
    return paramset_save(&m->ps, path, CKPT_KIND_GPT, cfg, extra, extra_len, err, errlen);
}

gpt_t *gpt_from_ckpt(const ckpt_t *ck, int max_batch, char *err, size_t errlen) {
    if (ckpt_kind(ck) != CKPT_KIND_GPT) {
        snprintf(err, errlen, "checkpoint holds model kind %u, not a gpt (kind %d)", ckpt_kind(ck),
                 CKPT_KIND_GPT);
        return NULL;
    }
    const int32_t *k = ckpt_config(ck);
    gpt_config_t cfg = {
        .n_layer = k[0], .n_embd = k[1], .n_head = k[2], .ctx_len = k[3], .vocab = k[4]};
    const char *why = config_problem(&cfg);
    if (why) {
        snprintf(err, errlen, "checkpoint has an invalid gpt config: %s", why);
        return NULL;
    }
    // Check the parameter count before allocating anything sized by the config.
    size_t ps[GPT_NUM_PARAM_TENSORS];
    param_sizes(&cfg, ps);
    uint64_t nbytes = 0;
    if (!ckpt_section(ck, "params", &nbytes) ||
        nbytes != sum_sizes(ps, GPT_NUM_PARAM_TENSORS) * sizeof(float)) {
        snprintf(err, errlen, "checkpoint's params section does not match its gpt config");
        return NULL;
    }
    gpt_t *m = gpt_new(&cfg, max_batch, 0);
    if (paramset_load(&m->ps, ck, err, errlen) != 0) {
        gpt_destroy(&m);
        return NULL;
    }
    return m;
}

gpt_t *gpt_load(const char *path, int max_batch, char *err, size_t errlen) {
    ckpt_t *ck = ckpt_read(path, err, errlen);
    if (!ck)
        return NULL;
    gpt_t *m = gpt_from_ckpt(ck, max_batch, err, errlen);
    ckpt_destroy(&ck);
    return m;
}
