// sampler.c: batched autoregressive sampling from a gpt with a key/value cache. Each step runs
// the active sequences' newest tokens through the model as one (n, C) batch of linear layers,
// with attention against each sequence's cache. See sampler.h.
#include "sampler.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "layers.h"
#include "rng.h"
#include "util.h"

struct sampler {
    const gpt_t *m; // model whose current parameters are used
    int max_batch;  // sequences per call
    float *kcache;  // (L, max_batch, ctx, C)
    float *vcache;  // (L, max_batch, ctx, C)
    float *x;       // (n, C) residual stream
    float *ln;      // (n, C)
    float *mean;    // (n)
    float *rstd;    // (n)
    float *qkv;     // (n, 3C)
    float *atty;    // (n, C)
    float *proj;    // (n, C)
    float *fch;     // (n, 4C)
    float *fchg;    // (n, 4C)
    float *logits;  // (n, V)
    float *arena;   // the one allocation the buffers above point into
    int *tok;       // (n) input token of each active row
    int *seq;       // (n) sequence of each active row
    int *pos;       // (n) position of each active row
    double *probs;  // (V) sampling distribution scratch
    float *sorted;  // (V) top-k scratch
    char *allow;    // (V) the call's allowed tokens (1 = may be drawn)
    rng_t *rng;     // (max_batch) per-sequence streams
};

sampler_t *sampler_new(const gpt_t *m, int max_batch) {
    if (max_batch < 1)
        RLX_DIE("sampler max_batch must be >= 1");
    sampler_t *s = rlx_xcalloc(1, sizeof *s, "sampler");
    const gpt_config_t *c = &m->cfg;
    size_t L = c->n_layer, C = c->n_embd, V = c->vocab, T = c->ctx_len, n = max_batch;
    s->m = m;
    s->max_batch = max_batch;
    size_t cache = L * n * T * C;
    size_t total = 2 * cache + n * (15 * C + 2 + V);
    s->arena = layers_alloc(total);
    if (!s->arena)
        RLX_DIE("out of memory: sampler cache of %zu floats; lower max_batch", total);
    float *p = s->arena;
    s->kcache = p, p += cache;
    s->vcache = p, p += cache;
    s->x = p, p += n * C;
    s->ln = p, p += n * C;
    s->mean = p, p += n;
    s->rstd = p, p += n;
    s->qkv = p, p += n * 3 * C;
    s->atty = p, p += n * C;
    s->proj = p, p += n * C;
    s->fch = p, p += n * 4 * C;
    s->fchg = p, p += n * 4 * C;
    s->logits = p, p += n * V;
    assert((size_t)(p - s->arena) == total);
    s->tok = rlx_xcalloc(n, sizeof(int), "sampler");
    s->seq = rlx_xcalloc(n, sizeof(int), "sampler");
    s->pos = rlx_xcalloc(n, sizeof(int), "sampler");
    s->probs = rlx_xcalloc(V, sizeof(double), "sampler");
    s->sorted = rlx_xcalloc(V, sizeof(float), "sampler");
    s->allow = rlx_xcalloc(V, 1, "sampler");
    s->rng = rlx_xcalloc(n, sizeof(rng_t), "sampler");
    return s;
}

void sampler_destroy(sampler_t **self_p) {
    if (!self_p || !*self_p)
        return;
    sampler_t *s = *self_p;
    layers_free(s->arena);
    free(s->tok);
    free(s->seq);
    free(s->pos);
    free(s->probs);
    free(s->sorted);
    free(s->allow);
    free(s->rng);
    free(s);
    *self_p = NULL;
}

// One decoding step for n active rows: logits (n, V) for tokens tok at positions pos.
static void step(sampler_t *s, int n) {
    const gpt_t *m = s->m;
    const gpt_config_t *c = &m->cfg;
    const gpt_params_t *w = &m->w;
    int L = c->n_layer, C = c->n_embd, NH = c->n_head, V = c->vocab, T = c->ctx_len;
    size_t cache_l = (size_t)s->max_batch * T * C;

    // Embedding: each row has its own position, so look up wpe row by row.
    for (int i = 0; i < n; i++)
        embed_forward(s->x + (size_t)i * C, &s->tok[i], w->wte, w->wpe + (size_t)s->pos[i] * C, 1,
                      1, C);
    for (int l = 0; l < L; l++) {
        size_t lc = (size_t)l * C;
        layernorm_forward(s->ln, s->mean, s->rstd, s->x, w->ln1w + lc, w->ln1b + lc, n, C);
        linear_forward(s->qkv, s->ln, w->qkvw + 3 * lc * C, w->qkvb + 3 * lc, n, C, 3 * C);
        attention_decode_forward(s->atty, s->kcache + l * cache_l, s->vcache + l * cache_l, s->qkv,
                                 s->seq, s->pos, n, T, C, NH);
        linear_forward(s->proj, s->atty, w->attprojw + lc * C, w->attprojb + lc, n, C, C);
        residual_forward(s->x, s->x, s->proj, (size_t)n * C);
        layernorm_forward(s->ln, s->mean, s->rstd, s->x, w->ln2w + lc, w->ln2b + lc, n, C);
        linear_forward(s->fch, s->ln, w->fcw + 4 * lc * C, w->fcb + 4 * lc, n, C, 4 * C);
        gelu_forward(s->fchg, s->fch, (size_t)n * 4 * C);
        linear_forward(s->proj, s->fchg, w->fcprojw + 4 * lc * C, w->fcprojb + lc, n, 4 * C, C);
        residual_forward(s->x, s->x, s->proj, (size_t)n * C);
    }
    layernorm_forward(s->ln, s->mean, s->rstd, s->x, w->lnfw, w->lnfb, n, C);
    linear_forward(s->logits, s->ln, w->wte, NULL, n, C, V);
}

static int cmp_desc(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

// Draws a token from one row of logits; *logp gets its log-probability under the
// distribution it was drawn from (the untempered model's for greedy decoding). -1 when the
// row has no distribution to draw from (a NaN or +inf logit).
static int draw(sampler_t *s, const float *logits, int V, const sample_config_t *c, rng_t *r,
                float *logp) {
    // A NaN or +inf logit (non-finite weights) leaves no distribution to draw from: without
    // this check the inverse-CDF walk below finds no token with mass and returns -1, which
    // the next step reads as an embedding row before the table. -inf is a masked-out token.
    for (int v = 0; v < V; v++)
        if (!(logits[v] < INFINITY))
            return -1;
    if (c->temperature <= 0.0f) {
        int best = 0;
        for (int v = 1; v < V; v++)
            if (logits[v] > logits[best])
                best = v;
        double sum = 0.0;
        for (int v = 0; v < V; v++)
            sum += exp((double)logits[v] - logits[best]);
        *logp = (float)(-log(sum));
        return best;
    }
    // Tokens below the k-th largest logit are excluded (ties at the threshold are kept).
    float threshold = -INFINITY;
    if (c->top_k > 0 && c->top_k < V) {
        memcpy(s->sorted, logits, (size_t)V * sizeof(float));
        qsort(s->sorted, (size_t)V, sizeof(float), cmp_desc);
        threshold = s->sorted[c->top_k - 1];
    }
    double inv_t = 1.0 / c->temperature, mx = -INFINITY;
    for (int v = 0; v < V; v++)
        if (logits[v] >= threshold && logits[v] * inv_t > mx)
            mx = logits[v] * inv_t;
    double sum = 0.0;
    for (int v = 0; v < V; v++) {
        s->probs[v] = logits[v] >= threshold ? exp(logits[v] * inv_t - mx) : 0.0;
        sum += s->probs[v];
    }
    double u = (double)rng_uniform(r) * sum, acc = 0.0;
    int pick = -1;
    for (int v = 0; v < V; v++) {
        if (s->probs[v] <= 0.0)
            continue;
        pick = v; // the last token with mass absorbs rounding at the top end
        acc += s->probs[v];
        if (u < acc)
            break;
    }
    if (pick < 0) // no token with mass: never a token id
        return -1;
    *logp = (float)(logits[pick] * inv_t - mx - log(sum));
    return pick;
}

static int is_stop(const sample_config_t *c, int tok) {
    for (int i = 0; i < c->n_stop; i++)
        if (c->stop[i] == tok)
            return 1;
    return 0;
}

int sampler_generate(sampler_t *s, const int *prompt, const int *prompt_off, int B,
                     const sample_config_t *c, uint64_t seq_id0, int *out_tokens, float *out_logp,
                     int *out_len) {
    const gpt_config_t *mc = &s->m->cfg;
    int V = mc->vocab;
    if (B < 1 || B > s->max_batch || c->max_new < 1 || c->n_stop < 0 ||
        c->n_stop > SAMPLER_MAX_STOP || c->top_k < 0 || c->n_allowed < 0 ||
        (c->n_allowed > 0 && !c->allowed))
        return -1;
    if (c->n_allowed > 0) {
        memset(s->allow, 0, (size_t)V);
        for (int i = 0; i < c->n_allowed; i++) {
            if (c->allowed[i] < 0 || c->allowed[i] >= V)
                return -1;
            s->allow[c->allowed[i]] = 1;
        }
    }
    for (int i = 0; i < B; i++) {
        int plen = prompt_off[i + 1] - prompt_off[i];
        if (plen < 1 || plen + c->max_new > mc->ctx_len)
            return -1;
        for (int j = prompt_off[i]; j < prompt_off[i + 1]; j++)
            if (prompt[j] < 0 || prompt[j] >= V)
                return -1;
    }
    // Per-sequence state: out_len (tokens generated so far) and seqpos (next position).
    int nact = 0;
    int seqpos[B];
    for (int i = 0; i < B; i++) {
        rng_seed2(&s->rng[i], c->seed, seq_id0 + (uint64_t)i);
        out_len[i] = 0;
        seqpos[i] = 0;
    }
    for (;;) {
        nact = 0;
        for (int i = 0; i < B; i++) {
            int plen = prompt_off[i + 1] - prompt_off[i];
            int done = out_len[i] > 0 &&
                       (is_stop(c, out_tokens[(size_t)i * c->max_new + out_len[i] - 1]) ||
                        out_len[i] == c->max_new);
            if (done)
                continue;
            int p = seqpos[i];
            s->seq[nact] = i;
            s->pos[nact] = p;
            s->tok[nact] = p < plen ? prompt[prompt_off[i] + p]
                                    : out_tokens[(size_t)i * c->max_new + (p - plen)];
            nact++;
        }
        if (nact == 0)
            break;
        step(s, nact);
        for (int r = 0; r < nact; r++) {
            int i = s->seq[r];
            int plen = prompt_off[i + 1] - prompt_off[i];
            int p = seqpos[i]++;
            if (p + 1 < plen)
                continue; // still inside the prompt: the next input is the prompt's token
            float lp, *row = s->logits + (size_t)r * V;
            if (c->n_allowed > 0) // -inf logits: exp gives exactly 0, the set's softmax is left
                for (int v = 0; v < V; v++)
                    row[v] = s->allow[v] ? row[v] : -INFINITY;
            int tok = draw(s, row, V, c, &s->rng[i], &lp);
            if (tok < 0)
                return SAMPLER_NONFINITE;
            out_tokens[(size_t)i * c->max_new + out_len[i]] = tok;
            out_logp[(size_t)i * c->max_new + out_len[i]] = lp;
            out_len[i]++;
        }
    }
    return 0;
}
