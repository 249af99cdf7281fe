// test_gpt.c: the gpt model against tests/ref/gpt.bin, which tests/gen_ref.py writes with
// PyTorch in float64 from the same float32 inputs: logits, log-probs and MLE loss; the
// gradients of the MLE loss (with a mask and weights) and of an RL-style loss sum(dlogp*logp);
// and 10 steps of AdamW MLE training on a new batch each step. Also: a forward without
// targets gives the same logits, a repeated forward/backward gives bit-identical results (no
// state leaks from one step, or from a smaller batch, into the next), backward accumulates,
// and batches smaller than max_batch (fewer sequences, shorter sequences) work. The vocabulary
// mask (gpt_set_vocab_mask): logp is the log-softmax over the allowed tokens (against float64
// on the unmasked logits), its gradient matches central finite differences, the output rows of
// masked tokens get no gradient, and lifting the mask restores the unmasked model bit for bit.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adamw.h"
#include "gpt.h"
#include "layers.h"
#include "refio.h"
#include "testutil.h"

_Static_assert(sizeof(gpt_params_t) == GPT_NUM_PARAM_TENSORS * sizeof(float *),
               "gpt_params_t is walked as an array of GPT_NUM_PARAM_TENSORS float pointers");

// Tolerances: |got - ref| <= atol + rtol |ref| with atol = ATOL_REL * max|ref| over the tensor.
// The reference is float64 rounded once, so this bounds the C side's float32 error alone. The
// atol covers elements near zero that are sums of O(max) terms (a logit is a 32-term dot
// product that can cancel to ~0; a weight gradient sums over all B*T tokens): float32
// accumulation leaves up to ~0.9e-6 * max|ref| there with OpenBLAS (measured, 1-4 threads),
// and 2e-6 leaves room for other BLAS kernels and summation orders.
#define RTOL 1e-5f
#define ATOL_REL 2e-6f
#define ADAM_ATOL 5e-6f // absolute, on parameters after 10 AdamW steps: see test_adamw

static ref_file_t *R;
static int L, C, NH, maxT, V, B, T;
static size_t psize[GPT_NUM_PARAM_TENSORS]; // elements of each parameter tensor

// Host copy of back-end memory (a growing scratch buffer; valid until the next call).
static const float *to_host(const float *dev, size_t n) {
    static float *buf = NULL;
    static size_t cap = 0;
    if (n > cap) {
        free(buf);
        buf = malloc(n * sizeof(float));
        cap = n;
    }
    layers_to_host(buf, dev, n);
    return buf;
}

static float max_abs(const float *x, size_t n) {
    float mx = 0.0f;
    for (size_t i = 0; i < n; i++)
        mx = fmaxf(mx, fabsf(x[i]));
    return mx;
}

// Compare host data with a reference tensor of n elements.
static void check_host(const char *what, const float *got, const float *ref, size_t n, float rtol,
                       float atol_rel) {
    float atol = atol_rel * max_abs(ref, n);
    tu_close(what, got, ref, n, atol > 0 ? atol : 1e-30f, rtol);
}

static void check(const char *what, const float *dev, const char *ref_name, size_t n, float rtol,
                  float atol_rel) {
    check_host(what, to_host(dev, n), ref_floats(R, ref_name, n), n, rtol, atol_rel);
}

static void param_sizes(void) {
    size_t l = L, c = C, v = V, t = maxT;
    size_t s[GPT_NUM_PARAM_TENSORS] = {
        v * c,         // wte
        t * c,         // wpe
        l * c,         // ln1w
        l * c,         // ln1b
        l * 3 * c * c, // qkvw
        l * 3 * c,     // qkvb
        l * c * c,     // attprojw
        l * c,         // attprojb
        l * c,         // ln2w
        l * c,         // ln2b
        l * 4 * c * c, // fcw
        l * 4 * c,     // fcb
        l * c * 4 * c, // fcprojw
        l * c,         // fcprojb
        c,             // lnfw
        c,             // lnfb
    };
    memcpy(psize, s, sizeof s);
}

static float **params_of(gpt_params_t *p) {
    return (float **)p;
}

// Overwrite the model's parameters with the reference tensors "<prefix><name>".
static void load_params(gpt_t *m, const char *prefix) {
    float **w = params_of(&m->w);
    size_t total = 0;
    char name[64];
    for (int i = 0; i < GPT_NUM_PARAM_TENSORS; i++) {
        snprintf(name, sizeof name, "%s%s", prefix, GPT_PARAM_NAMES[i]);
        layers_to_device(w[i], ref_floats(R, name, psize[i]), psize[i]);
        total += psize[i];
    }
    TU_CHECK(total == m->ps.n, "parameter count %zu, model has %zu", total, m->ps.n);
}

// Compare every parameter gradient (or parameter) with "<prefix><name>".
static void check_params(gpt_params_t *p, const char *prefix, float rtol, float atol_rel) {
    float **x = params_of(p);
    char name[64];
    for (int i = 0; i < GPT_NUM_PARAM_TENSORS; i++) {
        snprintf(name, sizeof name, "%s%s", prefix, GPT_PARAM_NAMES[i]);
        check(name, x[i], name, psize[i], rtol, atol_rel);
    }
}

// Forward on the reference batch, MLE loss with its mask and weights, backward.
static float mle_step(gpt_t *m, const int *tokens, const int *targets) {
    gpt_forward(m, tokens, targets, B, T);
    float loss = gpt_mle_loss(m, ref_floats(R, "mask", B * T), ref_floats(R, "weight", B * T));
    paramset_zero_grad(&m->ps);
    gpt_backward(m);
    return loss;
}

static float *host_dup(const float *dev, size_t n) {
    float *h = malloc(n * sizeof(float));
    layers_to_host(h, dev, n);
    return h;
}

// Sequences b0..b0+nb-1, first Ts positions, on their own: causal attention makes their
// logits and log-probs the reference's rows.
static void check_sub_batch(gpt_t *m, const int *tokens, const int *targets, int b0, int nb,
                            int Ts) {
    int *tk = malloc(sizeof(int) * nb * Ts), *tg = malloc(sizeof(int) * nb * Ts);
    float *rl = malloc(sizeof(float) * nb * Ts * V), *rp = malloc(sizeof(float) * nb * Ts);
    const float *logits = ref_floats(R, "logits", (size_t)B * T * V);
    const float *logp = ref_floats(R, "logp", (size_t)B * T);
    for (int b = 0; b < nb; b++)
        for (int t = 0; t < Ts; t++) {
            int i = b * Ts + t, j = (b0 + b) * T + t;
            tk[i] = tokens[j];
            tg[i] = targets[j];
            rp[i] = logp[j];
            memcpy(rl + (size_t)i * V, logits + (size_t)j * V, sizeof(float) * V);
        }
    gpt_forward(m, tk, tg, nb, Ts);
    char what[64];
    snprintf(what, sizeof what, "logits B=%d T=%d", nb, Ts);
    check_host(what, to_host(m->a.logits, (size_t)nb * Ts * V), rl, (size_t)nb * Ts * V, RTOL,
               ATOL_REL);
    snprintf(what, sizeof what, "logp B=%d T=%d", nb, Ts);
    check_host(what, to_host(m->logp, (size_t)nb * Ts), rp, (size_t)nb * Ts, RTOL, ATOL_REL);
    // And a backward on the small batch must run (and leave nothing behind: checked later).
    gpt_mle_loss(m, NULL, NULL);
    paramset_zero_grad(&m->ps);
    gpt_backward(m);
    free(tk);
    free(tg);
    free(rl);
    free(rp);
}

static void test_forward_backward(void) {
    gpt_config_t cfg = {.n_layer = L, .n_embd = C, .n_head = NH, .ctx_len = maxT, .vocab = V};
    // max_batch above B: the reference batch does not fill the arena.
    gpt_t *m = gpt_new(&cfg, B + 2, 1);
    load_params(m, "");
    const int *tokens = ref_ints(R, "tokens", B * T);
    const int *targets = ref_ints(R, "targets", B * T);
    size_t BT = (size_t)B * T, n = m->ps.n;

    // MLE: outputs and gradients. The unused wpe rows (t >= T) must get exactly zero.
    float loss = mle_step(m, tokens, targets);
    check("logits", m->a.logits, "logits", BT * V, RTOL, ATOL_REL);
    check("logp", m->logp, "logp", BT, RTOL, ATOL_REL);
    tu_close("loss", &loss, ref_floats(R, "loss", 1), 1, 0.0f, RTOL);
    check_params(&m->g, "g_", RTOL, ATOL_REL);
    float *g1 = host_dup(m->ps.g, n), *logits1 = host_dup(m->a.logits, BT * V);
    const float *gwpe = to_host(m->g.wpe, psize[1]);
    int nz = 0;
    for (size_t i = (size_t)T * C; i < psize[1]; i++)
        nz += gwpe[i] != 0.0f;
    TU_CHECK(nz == 0, "%d gradient elements of unused wpe rows are non-zero", nz);

    // Backward accumulates: a second backward of the same forward doubles the gradient.
    gpt_backward(m);
    float *g2 = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        g2[i] = 2.0f * g1[i];
    check_host("backward accumulates (2g)", to_host(m->ps.g, n), g2, n, 1e-6f, 1e-7f);

    // RL-style loss: the caller fills dlogp.
    gpt_forward(m, tokens, targets, B, T);
    layers_to_device(m->dlogp, ref_floats(R, "dlogp", BT), BT);
    paramset_zero_grad(&m->ps);
    gpt_backward(m);
    check_params(&m->g, "rlg_", RTOL, ATOL_REL);

    // No targets: same logits (bit for bit), logp all 0.
    gpt_forward(m, tokens, NULL, B, T);
    tu_equal_bytes("logits without targets", to_host(m->a.logits, BT * V), logits1,
                   BT * V * sizeof(float));
    float zeros[64] = {0};
    tu_close("logp without targets = 0", to_host(m->logp, BT), zeros, BT, 0.0f, 0.0f);

    // Batches smaller than max_batch, and shorter sequences.
    check_sub_batch(m, tokens, targets, 1, 1, T - 4);
    check_sub_batch(m, tokens, targets, 1, 2, T);
    check_sub_batch(m, tokens, targets, 0, 1, 1);

    // After all that, the reference step again gives the same result, bit for bit.
    mle_step(m, tokens, targets);
    tu_equal_bytes("logits, second run", to_host(m->a.logits, BT * V), logits1,
                   BT * V * sizeof(float));
    tu_equal_bytes("gradients, second run", to_host(m->ps.g, n), g1, n * sizeof(float));

    free(g1);
    free(g2);
    free(logits1);
    gpt_destroy(&m);
    TU_CHECK(m == NULL, "gpt_destroy nulls the pointer");
    gpt_destroy(&m); // safe on NULL
}

// 10 AdamW steps of MLE training, a new batch each step (warm-up, cosine decay, clipping and
// weight decay all active).
static void test_adamw(void) {
    gpt_config_t cfg = {.n_layer = L, .n_embd = C, .n_head = NH, .ctx_len = maxT, .vocab = V};
    gpt_t *m = gpt_new(&cfg, B, 2);
    load_params(m, "");
    adamw_config_t c = {.lr = 1e-3f,
                        .beta1 = 0.9f,
                        .beta2 = 0.95f,
                        .eps = 1e-8f,
                        .weight_decay = 0.1f,
                        .grad_clip = 1.0f,
                        .warmup_steps = 3,
                        .decay_steps = 10,
                        .min_lr_frac = 0.1f};
    enum { STEPS = 10 };
    const int *tokens = ref_ints(R, "adam_tokens", STEPS * B * T);
    const int *targets = ref_ints(R, "adam_targets", STEPS * B * T);
    float losses[STEPS];
    for (int s = 0; s < STEPS; s++) {
        gpt_forward(m, tokens + s * B * T, targets + s * B * T, B, T);
        losses[s] = gpt_mle_loss(m, NULL, NULL);
        paramset_zero_grad(&m->ps);
        gpt_backward(m);
        adamw_step(&m->ps, &c);
    }
    TU_CHECK(m->ps.step == STEPS, "step counter %lld after %d steps", (long long)m->ps.step, STEPS);
    tu_close("adam_losses", losses, ref_floats(R, "adam_losses", STEPS), STEPS, 0.0f, RTOL);
    // An Adam step moves a parameter by about lr * m/sqrt(v) whatever the gradient's size, so
    // the float32 rounding of a small gradient element becomes a relative error of its step:
    // a gradient of 1e-6 carrying a 1e-9 error shifts each step by 0.1%. ADAM_ATOL (0.5% of
    // one peak-lr step, summed over the 10 steps) allows for that. Measured worst: 2.1e-6, a
    // key-projection weight, whose gradient is a difference of near-equal sums (the key
    // gradients of a row sum to zero: softmax ignores a shift shared by all scores).
    float **w = params_of(&m->w);
    char name[64];
    for (int i = 0; i < GPT_NUM_PARAM_TENSORS; i++) {
        snprintf(name, sizeof name, "adam_final_%s", GPT_PARAM_NAMES[i]);
        const float *ref = ref_floats(R, name, psize[i]);
        const float *got = to_host(w[i], psize[i]);
        if (strcmp(GPT_PARAM_NAMES[i], "qkvb") != 0) {
            tu_close(name, got, ref, psize[i], ADAM_ATOL, RTOL);
            continue;
        }
        // The key bias gets no gradient at all (softmax is invariant to adding q.bk to every
        // score of a row): PyTorch's float64 gradient is ~1e-17 and Adam leaves the bias to
        // weight decay, but float32 rounding leaves ~1e-8, which Adam (dividing by sqrt(v) +
        // eps, eps = 1e-8) turns into steps of up to ~lr. So the query and value biases are
        // checked tightly, the key biases against what the steps can move them at most:
        // |m_hat / sqrt(v_hat)| <= 1.012 for 10 steps with betas (0.9, 0.95).
        float qv[2 * 64], qvr[2 * 64], k[64], kr[64];
        int nqv = 0, nk = 0;
        for (int l = 0; l < L; l++)
            for (int j = 0; j < 3 * C; j++) {
                int idx = l * 3 * C + j;
                if (j >= C && j < 2 * C) {
                    k[nk] = got[idx], kr[nk++] = ref[idx];
                } else {
                    qv[nqv] = got[idx], qvr[nqv++] = ref[idx];
                }
            }
        double lr_sum = 0.0;
        for (int s = 0; s < STEPS; s++)
            lr_sum += adamw_lr(&c, s);
        tu_close("adam_final_qkvb (q, v)", qv, qvr, nqv, ADAM_ATOL, RTOL);
        tu_close("adam_final_qkvb (k)", k, kr, nk, (float)(1.02 * lr_sum), RTOL);
    }
    gpt_destroy(&m);
}

// Loss sum_i c_i logp_i of the last forward, in double (c: (BT) coefficients).
static double weighted_logp(const gpt_t *m, const float *c, int n) {
    const float *lp = to_host(m->logp, (size_t)n);
    double s = 0;
    for (int i = 0; i < n; i++)
        s += (double)c[i] * lp[i];
    return s;
}

static void test_vocab_mask(void) {
    enum { MB = 3, MT = 5, NA = 3 };
    gpt_config_t cfg = {.n_layer = 2, .n_embd = 16, .n_head = 2, .ctx_len = 8, .vocab = GPT_VOCAB};
    gpt_t *m = gpt_new(&cfg, MB, 11);
    float *w = malloc(m->ps.n * sizeof(float));
    layers_to_host(w, m->ps.w, m->ps.n);
    for (size_t j = 0; j < m->ps.n; j++) // sharpen: distributions far from uniform
        w[j] *= 4.0f;
    layers_to_device(m->ps.w, w, m->ps.n);
    const int allowed[NA] = {'a', 'c', GPT_TOK_EOS};
    int tok[MB * MT], tgt[MB * MT];
    for (int i = 0; i < MB * MT; i++) {
        tok[i] = i % MT == 0 ? GPT_TOK_BOS : allowed[(i * 7) % NA];
        tgt[i] = i % MT == 0 ? -1 : allowed[(i * 5 + 1) % NA]; // a prompt position: no target
    }
    int BT = MB * MT, Vv = cfg.vocab;

    // Unmasked logits, then masked logp against a float64 log-softmax over the allowed set.
    gpt_forward(m, tok, tgt, MB, MT);
    float *logits0 = host_dup(m->a.logits, (size_t)BT * Vv);
    float *lp0 = host_dup(m->logp, BT);
    gpt_set_vocab_mask(m, allowed, NA);
    gpt_forward(m, tok, tgt, MB, MT);
    const float *lgm = to_host(m->a.logits, (size_t)BT * Vv);
    int bad_inf = 0;
    for (int i = 0; i < BT; i++)
        for (int v = 0; v < Vv; v++) {
            int ok = v == 'a' || v == 'c' || v == GPT_TOK_EOS;
            bad_inf +=
                ok ? !isfinite(lgm[(size_t)i * Vv + v]) : lgm[(size_t)i * Vv + v] != -INFINITY;
        }
    TU_CHECK(bad_inf == 0, "%d logits wrong: masked ones must be -inf, allowed ones finite",
             bad_inf);
    float ref[MB * MT];
    for (int i = 0; i < BT; i++) {
        const float *x = logits0 + (size_t)i * Vv;
        double mx = -INFINITY, s = 0;
        for (int a = 0; a < NA; a++)
            mx = fmax(mx, x[allowed[a]]);
        for (int a = 0; a < NA; a++)
            s += exp((double)x[allowed[a]] - mx);
        ref[i] = tgt[i] < 0 ? 0.0f : (float)((double)x[tgt[i]] - mx - log(s));
    }
    tu_close("masked logp = log-softmax over the allowed tokens", to_host(m->logp, BT), ref, BT,
             2e-6f, 1e-5f);

    // Gradient of sum c_i logp_i against central differences (float32 forward, h = 1e-3).
    float c[MB * MT];
    for (int i = 0; i < BT; i++)
        c[i] = tgt[i] < 0 ? 0.0f : (float)((i % 4) - 1.5) * 0.7f;
    layers_to_device(m->dlogp, c, BT);
    paramset_zero_grad(&m->ps);
    gpt_backward(m);
    float *g = host_dup(m->ps.g, m->ps.n);
    // Output rows of tokens that are neither allowed nor ever an input get (almost) nothing.
    double leak = 0;
    for (int v = 'p'; v < 'p' + 8; v++)
        for (int k = 0; k < cfg.n_embd; k++)
            leak = fmax(leak, fabs(g[(size_t)v * cfg.n_embd + k]));
    TU_CHECK(leak < 1e-12, "masked tokens' wte rows got gradient %.3g", leak);
    enum { NCHK = 48 };
    size_t idx[NCHK];
    float got[NCHK], fd[NCHK];
    for (int k = 0; k < NCHK; k++) { // half the largest |g| (greedy), half spread out
        size_t best = 0;
        if (k < NCHK / 2) {
            float bv = -1;
            for (size_t j = 0; j < m->ps.n; j++) {
                int used = 0;
                for (int q = 0; q < k; q++)
                    used |= idx[q] == j;
                if (!used && fabsf(g[j]) > bv) {
                    bv = fabsf(g[j]);
                    best = j;
                }
            }
        } else {
            best = ((size_t)k * 2654435761u) % m->ps.n;
        }
        idx[k] = best;
    }
    const float h = 1e-3f;
    double gmax = 0;
    for (int k = 0; k < NCHK; k++) {
        size_t j = idx[k];
        float w0 = w[j];
        w[j] = w0 + h;
        layers_to_device(m->ps.w + j, w + j, 1);
        gpt_forward(m, tok, tgt, MB, MT);
        double up = weighted_logp(m, c, BT);
        w[j] = w0 - h;
        layers_to_device(m->ps.w + j, w + j, 1);
        gpt_forward(m, tok, tgt, MB, MT);
        double dn = weighted_logp(m, c, BT);
        w[j] = w0;
        layers_to_device(m->ps.w + j, w + j, 1);
        got[k] = g[j];
        fd[k] = (float)((up - dn) / (2.0 * h));
        gmax = fmax(gmax, fabs(got[k]));
    }
    TU_CHECK(gmax > 0.05, "largest gradient %.3g: the check would be vacuous", gmax);
    tu_close("masked gradient vs finite differences", got, fd, NCHK, (float)(1e-3 * gmax), 1e-2f);

    // Lifting the mask: the unmasked model again, bit for bit.
    gpt_set_vocab_mask(m, NULL, 0);
    gpt_forward(m, tok, tgt, MB, MT);
    tu_equal_bytes("logits after lifting the mask", to_host(m->a.logits, (size_t)BT * Vv), logits0,
                   (size_t)BT * Vv * sizeof(float));
    tu_equal_bytes("logp after lifting the mask", to_host(m->logp, BT), lp0, BT * sizeof(float));
    free(w);
    free(g);
    free(logits0);
    free(lp0);
    gpt_destroy(&m);
}

int main(void) {
    tu_blas_core("test_gpt");
    R = ref_load(tu_src_path("tests/ref/gpt.bin"));
    if (!R) {
        fprintf(stderr, "test_gpt: no reference file (run tests/gen_ref.py)\n");
        return 1;
    }
    const int *cf = ref_ints(R, "config", 7);
    L = cf[0], C = cf[1], NH = cf[2], maxT = cf[3], V = cf[4], B = cf[5], T = cf[6];
    TU_CHECK(V == GPT_VOCAB, "reference vocab %d, GPT_VOCAB %d", V, GPT_VOCAB);
    TU_CHECK(B * T <= 64 && L * C <= 64 && T < maxT,
             "reference batch too big for this test's buffers");
    param_sizes();
    test_forward_backward();
    test_adamw();
    test_vocab_mask();
    ref_free(&R);
    return tu_finish("test_gpt");
}
