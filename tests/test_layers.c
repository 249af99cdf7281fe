// test_layers.c: checks every kernel of layers.h (the back end compiled in) against naive
// double-precision references written here: forward outputs directly, backward passes against
// central finite differences, plus the accumulate (+=) and NULL-gradient conventions.
//
// Why finite differences of the double reference and not of the fp32 kernel: central
// differences of an fp32 forward need eps ~1e-2 to beat rounding, which leaves truncation errors
// ~1e-4 and forces tolerances loose enough to hide real bugs (a missing small term, a wrong
// scale on a minor path). The double reference, differenced with eps ~1e-6, gives gradients
// accurate to ~1e-9; the reference itself is tied to the kernel by the forward check (same
// inputs, ~1e-5 relative). So the gradient tolerances below only have to absorb the fp32
// rounding of the backward kernel, and stay tight. Large cases difference a random subset of
// coordinates to keep the test fast.
//
// Every case runs with 1 thread and again with 2, so the OpenMP paths (taken above a size
// threshold; some cases are sized to cross it) are checked too.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers.h"
#include "rng.h"
#include "testutil.h"

static rng_t g_rng;

static float urand(float lo, float hi) {
    return lo + (hi - lo) * rng_uniform(&g_rng);
}

static float *fvec(size_t n, float lo, float hi) {
    float *x = layers_alloc(n);
    for (size_t i = 0; i < n; i++)
        x[i] = urand(lo, hi);
    return x;
}

static double *dvec(const float *x, size_t n) {
    double *d = malloc((n ? n : 1) * sizeof *d);
    for (size_t i = 0; i < n; i++)
        d[i] = x[i];
    return d;
}

static float *fcopy(const float *x, size_t n) {
    float *y = layers_alloc(n);
    memcpy(y, x, n * sizeof *y);
    return y;
}

// Compare an fp32 output with a double reference (rounded to float for tu_close).
static void close_d(const char *what, const float *a, const double *ref, size_t n, float atol,
                    float rtol) {
    float *r = malloc((n ? n : 1) * sizeof *r);
    for (size_t i = 0; i < n; i++)
        r[i] = (float)ref[i];
    tu_close(what, a, r, n, atol, rtol);
    free(r);
}

static double dot_d(const double *a, const double *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

// ---- finite differences -----------------------------------------------------------------
// loss(ctx) evaluates the double reference forward on the inputs held in ctx and returns
// sum(out * R). fd_grad perturbs x (one of those inputs) in place, coordinate by coordinate.

typedef double (*loss_fn)(void *ctx);

typedef struct {
    size_t k;    // coordinates checked
    size_t *idx; // (k) their indices
    double *g;   // (k) d loss / d x[idx]
} fdref_t;

// All coordinates when n <= max_checks, else max_checks random ones.
static fdref_t fd_grad(double *x, size_t n, size_t max_checks, loss_fn loss, void *ctx) {
    fdref_t r;
    r.k = n <= max_checks ? n : max_checks;
    r.idx = malloc((r.k ? r.k : 1) * sizeof *r.idx);
    r.g = malloc((r.k ? r.k : 1) * sizeof *r.g);
    for (size_t c = 0; c < r.k; c++) {
        size_t i = n <= max_checks ? c : rng_below(&g_rng, (uint32_t)n);
        double x0 = x[i], eps = 1e-6 * (fabs(x0) > 1.0 ? fabs(x0) : 1.0);
        x[i] = x0 + eps;
        double lp = loss(ctx);
        x[i] = x0 - eps;
        double lm = loss(ctx);
        x[i] = x0;
        r.idx[c] = i;
        r.g[c] = (lp - lm) / (2.0 * eps);
    }
    return r;
}

// Compare g[idx] with base[idx] + reference (base NULL = 0): a gradient computed onto zeros,
// or onto a pre-filled buffer base to check that the backward pass accumulates.
static void fd_compare(const char *what, const float *g, const float *base, const fdref_t *r,
                       float atol, float rtol) {
    float *a = malloc((r->k ? r->k : 1) * sizeof *a),
          *ref = malloc((r->k ? r->k : 1) * sizeof *ref);
    for (size_t c = 0; c < r->k; c++) {
        a[c] = g[r->idx[c]];
        ref[c] = (float)((base ? (double)base[r->idx[c]] : 0.0) + r->g[c]);
    }
    tu_close(what, a, ref, r->k, atol, rtol);
    free(a);
    free(ref);
}

static void fd_free(fdref_t *r) {
    free(r->idx);
    free(r->g);
}

// Check a gradient computed from zeros (g0) and onto a pre-filled buffer (gacc, which held
// base before the call) against the same finite differences.
static void check_grad(const char *what, const float *g0, const float *gacc, const float *base,
                       double *x, size_t n, size_t max_checks, loss_fn loss, void *ctx, float atol,
                       float rtol) {
    char name[128];
    fdref_t r = fd_grad(x, n, max_checks, loss, ctx);
    snprintf(name, sizeof name, "%s", what);
    fd_compare(name, g0, NULL, &r, atol, rtol);
    snprintf(name, sizeof name, "%s (+=)", what);
    fd_compare(name, gacc, base, &r, atol, rtol);
    fd_free(&r);
}

// ---- linear -----------------------------------------------------------------------------

static void ref_linear(double *out, const double *in, const double *w, const double *b, int N,
                       int IC, int OC) {
    for (int i = 0; i < N; i++)
        for (int o = 0; o < OC; o++) {
            double s = b ? b[o] : 0.0;
            for (int k = 0; k < IC; k++)
                s += in[(size_t)i * IC + k] * w[(size_t)o * IC + k];
            out[(size_t)i * OC + o] = s;
        }
}

typedef struct {
    int N, IC, OC;
    double *in, *w, *b, *R, *out;
} linear_ctx;

static double linear_loss(void *p) {
    linear_ctx *c = p;
    ref_linear(c->out, c->in, c->w, c->b, c->N, c->IC, c->OC);
    return dot_d(c->out, c->R, (size_t)c->N * c->OC);
}

static void test_linear(int N, int IC, int OC, int with_bias) {
    char tag[64], name[96];
    snprintf(tag, sizeof tag, "linear %dx%d->%d%s", N, IC, OC, with_bias ? "" : " nobias");
    size_t nin = (size_t)N * IC, nw = (size_t)OC * IC, nout = (size_t)N * OC;
    float *in = fvec(nin, -1, 1), *w = fvec(nw, -0.5f, 0.5f);
    float *b = with_bias ? fvec(OC, -1, 1) : NULL, *R = fvec(nout, -1, 1);
    float *out = fvec(nout, 9, 9); // garbage: forward must overwrite
    linear_forward(out, in, w, b, N, IC, OC);
    linear_ctx c = {N,
                    IC,
                    OC,
                    dvec(in, nin),
                    dvec(w, nw),
                    b ? dvec(b, OC) : NULL,
                    dvec(R, nout),
                    malloc(nout * sizeof(double))};
    linear_loss(&c);
    snprintf(name, sizeof name, "%s fwd", tag);
    close_d(name, out, c.out, nout, 1e-5f, 1e-5f);

    // From zeros, then onto random pre-filled buffers.
    float *din = layers_alloc(nin), *dw = layers_alloc(nw), *db = layers_alloc(OC);
    float *bin = fvec(nin, -1, 1), *bw = fvec(nw, -1, 1), *bb = fvec(OC, -1, 1);
    float *ain = fcopy(bin, nin), *aw = fcopy(bw, nw), *ab = fcopy(bb, OC);
    linear_backward(din, dw, with_bias ? db : NULL, R, in, w, N, IC, OC);
    linear_backward(ain, aw, with_bias ? ab : NULL, R, in, w, N, IC, OC);
    // fp32 rounding of a K-term sum grows about linearly in K (partial sums ~sqrt(K), each
    // add off by ulp/2 of them, random walk over K adds): the atol follows the summed length.
    float tin = 3e-7f * (float)OC, tw = 3e-7f * (float)N;
    snprintf(name, sizeof name, "%s din", tag);
    check_grad(name, din, ain, bin, c.in, nin, 60, linear_loss, &c, tin, 1e-5f);
    snprintf(name, sizeof name, "%s dw", tag);
    check_grad(name, dw, aw, bw, c.w, nw, 60, linear_loss, &c, tw, 1e-5f);
    if (with_bias) {
        snprintf(name, sizeof name, "%s db", tag);
        check_grad(name, db, ab, bb, c.b, OC, 60, linear_loss, &c, tw, 1e-5f);
    } else {
        snprintf(name, sizeof name, "%s db untouched", tag);
        tu_close(name, ab, bb, OC, 0, 0);
    }
    // A NULL gradient is skipped and the others come out the same.
    float *din2 = layers_alloc(nin), *dw2 = layers_alloc(nw), *db2 = layers_alloc(OC);
    linear_backward(NULL, dw2, NULL, R, in, w, N, IC, OC);
    linear_backward(din2, NULL, with_bias ? db2 : NULL, R, in, w, N, IC, OC);
    snprintf(name, sizeof name, "%s dw alone", tag);
    tu_close(name, dw2, dw, nw, 0, 0);
    snprintf(name, sizeof name, "%s din, db without dw", tag);
    tu_close(name, din2, din, nin, 0, 0);
    tu_close(name, db2, db, OC, 0, 0);

    layers_free(in), layers_free(w), layers_free(b), layers_free(R), layers_free(out);
    layers_free(din), layers_free(dw), layers_free(db), layers_free(bin), layers_free(bw);
    layers_free(bb), layers_free(ain), layers_free(aw), layers_free(ab), layers_free(din2);
    layers_free(dw2), layers_free(db2);
    free(c.in), free(c.w), free(c.b), free(c.R), free(c.out);
}

// ---- embedding --------------------------------------------------------------------------

typedef struct {
    int B, T, C, V, maxT;
    const int *tok;
    double *wte, *wpe, *R, *out;
} embed_ctx;

static double embed_loss(void *p) {
    embed_ctx *c = p;
    for (int b = 0; b < c->B; b++)
        for (int t = 0; t < c->T; t++)
            for (int k = 0; k < c->C; k++)
                c->out[((size_t)b * c->T + t) * c->C + k] =
                    c->wte[(size_t)c->tok[b * c->T + t] * c->C + k] + c->wpe[(size_t)t * c->C + k];
    return dot_d(c->out, c->R, (size_t)c->B * c->T * c->C);
}

static void test_embed(int B, int T, int C, int V) {
    char tag[64], name[96];
    snprintf(tag, sizeof tag, "embed B%d T%d C%d", B, T, C);
    int maxT = T + 2;
    size_t nte = (size_t)V * C, npe = (size_t)maxT * C, nout = (size_t)B * T * C;
    int *tok = malloc((size_t)B * T * sizeof *tok);
    for (int i = 0; i < B * T; i++)
        tok[i] = (int)rng_below(&g_rng, (uint32_t)(V > 3 ? V - 2 : V)); // some rows unused
    tok[0] = tok[B * T - 1];                                            // a repeated token for sure
    float *wte = fvec(nte, -1, 1), *wpe = fvec(npe, -1, 1), *R = fvec(nout, -1, 1);
    float *out = fvec(nout, 9, 9);
    embed_forward(out, tok, wte, wpe, B, T, C);
    embed_ctx c = {B,
                   T,
                   C,
                   V,
                   maxT,
                   tok,
                   dvec(wte, nte),
                   dvec(wpe, npe),
                   dvec(R, nout),
                   malloc(nout * sizeof(double))};
    embed_loss(&c);
    snprintf(name, sizeof name, "%s fwd", tag);
    close_d(name, out, c.out, nout, 1e-6f, 1e-6f);

    float *dte = layers_alloc(nte), *dpe = layers_alloc(npe);
    float *bte = fvec(nte, -1, 1), *bpe = fvec(npe, -1, 1);
    float *ate = fcopy(bte, nte), *ape = fcopy(bpe, npe);
    embed_backward(dte, dpe, R, tok, B, T, C);
    embed_backward(ate, ape, R, tok, B, T, C);
    snprintf(name, sizeof name, "%s dwte", tag);
    check_grad(name, dte, ate, bte, c.wte, nte, 80, embed_loss, &c, 1e-5f, 1e-5f);
    snprintf(name, sizeof name, "%s dwpe", tag);
    check_grad(name, dpe, ape, bpe, c.wpe, npe, 80, embed_loss, &c, 1e-5f, 1e-5f);
    float *d2 = layers_alloc(npe);
    embed_backward(NULL, d2, R, tok, B, T, C);
    snprintf(name, sizeof name, "%s dwpe (dwte NULL)", tag);
    tu_close(name, d2, dpe, npe, 0, 0);

    free(tok);
    layers_free(wte), layers_free(wpe), layers_free(R), layers_free(out), layers_free(dte);
    layers_free(dpe), layers_free(bte), layers_free(bpe), layers_free(ate), layers_free(ape);
    layers_free(d2);
    free(c.wte), free(c.wpe), free(c.R), free(c.out);
}

// ---- layernorm --------------------------------------------------------------------------

static void ref_layernorm(double *out, double *mean, double *rstd, const double *in,
                          const double *w, const double *b, int N, int C) {
    for (int i = 0; i < N; i++) {
        const double *x = in + (size_t)i * C;
        double m = 0.0, v = 0.0;
        for (int k = 0; k < C; k++)
            m += x[k];
        m /= C;
        for (int k = 0; k < C; k++)
            v += (x[k] - m) * (x[k] - m);
        double r = 1.0 / sqrt(v / C + 1e-5);
        for (int k = 0; k < C; k++)
            out[(size_t)i * C + k] = (x[k] - m) * r * w[k] + b[k];
        if (mean)
            mean[i] = m, rstd[i] = r;
    }
}

typedef struct {
    int N, C;
    double *in, *w, *b, *R, *out;
} ln_ctx;

static double ln_loss(void *p) {
    ln_ctx *c = p;
    ref_layernorm(c->out, NULL, NULL, c->in, c->w, c->b, c->N, c->C);
    return dot_d(c->out, c->R, (size_t)c->N * c->C);
}

static void test_layernorm(int N, int C) {
    char tag[64], name[96];
    snprintf(tag, sizeof tag, "layernorm N%d C%d", N, C);
    size_t n = (size_t)N * C;
    float *in = fvec(n, -2, 2), *w = fvec(C, 0.5f, 1.5f), *b = fvec(C, -1, 1), *R = fvec(n, -1, 1);
    for (int i = 0; i < N; i++) // rows with large offsets and different spreads
        for (int k = 0; k < C; k++)
            in[(size_t)i * C + k] = in[(size_t)i * C + k] * (float)(1 + i % 3) + (float)(i % 5) * 3;
    float *out = fvec(n, 9, 9), *mean = layers_alloc(N), *rstd = layers_alloc(N);
    layernorm_forward(out, mean, rstd, in, w, b, N, C);
    ln_ctx c = {N, C, dvec(in, n), dvec(w, C), dvec(b, C), dvec(R, n), malloc(n * sizeof(double))};
    double *rm = malloc(N * sizeof(double)), *rr = malloc(N * sizeof(double));
    ref_layernorm(c.out, rm, rr, c.in, c.w, c.b, N, C);
    snprintf(name, sizeof name, "%s fwd", tag);
    close_d(name, out, c.out, n, 1e-5f, 1e-5f);
    snprintf(name, sizeof name, "%s mean", tag);
    close_d(name, mean, rm, N, 1e-6f, 1e-5f);
    snprintf(name, sizeof name, "%s rstd", tag);
    close_d(name, rstd, rr, N, 1e-6f, 1e-5f);

    float *din = layers_alloc(n), *dw = layers_alloc(C), *db = layers_alloc(C);
    float *bin = fvec(n, -1, 1), *bw = fvec(C, -1, 1), *bb = fvec(C, -1, 1);
    float *ain = fcopy(bin, n), *aw = fcopy(bw, C), *ab = fcopy(bb, C);
    layernorm_backward(din, dw, db, R, in, w, mean, rstd, N, C);
    layernorm_backward(ain, aw, ab, R, in, w, mean, rstd, N, C);
    snprintf(name, sizeof name, "%s din", tag);
    check_grad(name, din, ain, bin, c.in, n, 80, ln_loss, &c, 3e-6f, 2e-5f);
    float tw = 3e-7f * (float)N; // sums over rows, as in linear
    snprintf(name, sizeof name, "%s dw", tag);
    check_grad(name, dw, aw, bw, c.w, C, 80, ln_loss, &c, tw, 1e-5f);
    snprintf(name, sizeof name, "%s db", tag);
    check_grad(name, db, ab, bb, c.b, C, 80, ln_loss, &c, tw, 1e-5f);
    float *dw2 = layers_alloc(C);
    layernorm_backward(NULL, dw2, NULL, R, in, w, mean, rstd, N, C);
    snprintf(name, sizeof name, "%s dw (din, db NULL)", tag);
    tu_close(name, dw2, dw, C, 0, 0);

    layers_free(in), layers_free(w), layers_free(b), layers_free(R), layers_free(out);
    layers_free(mean), layers_free(rstd), layers_free(din), layers_free(dw), layers_free(db);
    layers_free(bin), layers_free(bw), layers_free(bb), layers_free(ain), layers_free(aw);
    layers_free(ab), layers_free(dw2);
    free(c.in), free(c.w), free(c.b), free(c.R), free(c.out), free(rm), free(rr);
}

// ---- attention --------------------------------------------------------------------------

static void ref_attention(double *out, double *att, const double *qkv, int B, int T, int C,
                          int NH) {
    int hs = C / NH;
    double scale = 1.0 / sqrt((double)hs);
    double *s = malloc((size_t)T * sizeof *s);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < T; i++) {
                const double *q = qkv + ((size_t)b * T + i) * 3 * C + h * hs;
                double mx = -INFINITY, sum = 0.0;
                for (int j = 0; j <= i; j++) {
                    const double *k = qkv + ((size_t)b * T + j) * 3 * C + C + h * hs;
                    s[j] = 0.0;
                    for (int d = 0; d < hs; d++)
                        s[j] += q[d] * k[d];
                    s[j] *= scale;
                    mx = s[j] > mx ? s[j] : mx;
                }
                for (int j = 0; j <= i; j++)
                    sum += (s[j] = exp(s[j] - mx));
                double *o = out + ((size_t)b * T + i) * C + h * hs;
                for (int d = 0; d < hs; d++)
                    o[d] = 0.0;
                for (int j = 0; j < T; j++) {
                    double pj = j <= i ? s[j] / sum : 0.0;
                    if (att)
                        att[(((size_t)b * NH + h) * T + i) * T + j] = pj;
                    const double *v = qkv + ((size_t)b * T + j) * 3 * C + 2 * C + h * hs;
                    for (int d = 0; d < hs && j <= i; d++)
                        o[d] += pj * v[d];
                }
            }
    free(s);
}

typedef struct {
    int B, T, C, NH;
    double *qkv, *R, *out;
} att_ctx;

static double att_loss(void *p) {
    att_ctx *c = p;
    ref_attention(c->out, NULL, c->qkv, c->B, c->T, c->C, c->NH);
    return dot_d(c->out, c->R, (size_t)c->B * c->T * c->C);
}

static void test_attention(int B, int T, int C, int NH) {
    char tag[64], name[96];
    snprintf(tag, sizeof tag, "attention B%d T%d C%d NH%d", B, T, C, NH);
    size_t nqkv = (size_t)B * T * 3 * C, nout = (size_t)B * T * C, natt = (size_t)B * NH * T * T;
    float *qkv = fvec(nqkv, -1.5f, 1.5f), *R = fvec(nout, -1, 1);
    float *out = fvec(nout, 9, 9), *att = fvec(natt, 9, 9);
    attention_forward(out, att, qkv, B, T, C, NH);
    att_ctx c = {B, T, C, NH, dvec(qkv, nqkv), dvec(R, nout), malloc(nout * sizeof(double))};
    double *ratt = malloc(natt * sizeof(double));
    ref_attention(c.out, ratt, c.qkv, B, T, C, NH);
    snprintf(name, sizeof name, "%s fwd", tag);
    close_d(name, out, c.out, nout, 1e-6f, 1e-5f);
    snprintf(name, sizeof name, "%s att", tag); // upper triangle must be exact zeros
    close_d(name, att, ratt, natt, 1e-7f, 1e-5f);
    size_t nonzero_above = 0;
    for (int bh = 0; bh < B * NH; bh++)
        for (int i = 0; i < T; i++)
            for (int j = i + 1; j < T; j++)
                nonzero_above += att[((size_t)bh * T + i) * T + j] != 0.0f;
    TU_CHECK(nonzero_above == 0, "%s: %zu probabilities above the diagonal", tag, nonzero_above);

    // datt is scratch: NaN on entry must not leak into the result.
    float *datt = fvec(natt, NAN, NAN);
    float *dqkv = layers_alloc(nqkv), *bq = fvec(nqkv, -1, 1), *aq = fcopy(bq, nqkv);
    attention_backward(dqkv, datt, R, qkv, att, B, T, C, NH);
    for (size_t i = 0; i < natt; i++)
        datt[i] = NAN;
    attention_backward(aq, datt, R, qkv, att, B, T, C, NH);
    snprintf(name, sizeof name, "%s dqkv", tag);
    check_grad(name, dqkv, aq, bq, c.qkv, nqkv, 120, att_loss, &c, 1e-6f * (1.0f + T / 32.0f),
               1e-4f);
    attention_backward(NULL, datt, R, qkv, att, B, T, C, NH); // no gradient wanted: a no-op

    layers_free(qkv), layers_free(R), layers_free(out), layers_free(att), layers_free(datt);
    layers_free(dqkv), layers_free(bq), layers_free(aq);
    free(c.qkv), free(c.R), free(c.out), free(ratt);
}

// attention_decode_forward, one position at a time for every sequence, must reproduce the rows
// of attention_forward; sequences sit in scattered cache slots.
static void test_attention_decode(int B, int T, int C, int NH) {
    char name[96];
    int max_seqs = B + 2, ctx = T + 3;
    size_t nqkv = (size_t)B * T * 3 * C, nout = (size_t)B * T * C;
    float *qkv = fvec(nqkv, -1.5f, 1.5f), *full = layers_alloc(nout);
    float *att = layers_alloc((size_t)B * NH * T * T);
    attention_forward(full, att, qkv, B, T, C, NH);
    float *kc = fvec((size_t)max_seqs * ctx * C, 9, 9),
          *vc = fvec((size_t)max_seqs * ctx * C, 9, 9);
    float *step_qkv = layers_alloc((size_t)B * 3 * C), *step_out = layers_alloc((size_t)B * C);
    float *got = layers_alloc(nout);
    int *seq = malloc(B * sizeof *seq), *pos = malloc(B * sizeof *pos);
    for (int b = 0; b < B; b++)
        seq[b] = (max_seqs - 1 - 2 * b + 2 * max_seqs) % max_seqs; // distinct, not in order
    for (int t = 0; t < T; t++) {
        for (int b = 0; b < B; b++) {
            memcpy(step_qkv + (size_t)b * 3 * C, qkv + ((size_t)b * T + t) * 3 * C,
                   (size_t)3 * C * sizeof(float));
            pos[b] = t;
        }
        attention_decode_forward(step_out, kc, vc, step_qkv, seq, pos, B, ctx, C, NH);
        for (int b = 0; b < B; b++)
            memcpy(got + ((size_t)b * T + t) * C, step_out + (size_t)b * C,
                   (size_t)C * sizeof(float));
    }
    snprintf(name, sizeof name, "attention_decode B%d T%d C%d NH%d", B, T, C, NH);
    tu_close(name, got, full, nout, 1e-6f, 1e-5f);
    free(seq), free(pos);
    layers_free(qkv), layers_free(full), layers_free(att), layers_free(kc), layers_free(vc);
    layers_free(step_qkv), layers_free(step_out), layers_free(got);
}

// ---- element-wise -----------------------------------------------------------------------

typedef enum { EW_GELU, EW_SILU } ew_kind;

static double ref_ew(ew_kind k, double x) {
    if (k == EW_GELU) // the header's formula, literally
        return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    return x / (1.0 + exp(-x));
}

typedef struct {
    ew_kind k;
    size_t n;
    double *in, *R;
} ew_ctx;

static double ew_loss(void *p) {
    ew_ctx *c = p;
    double s = 0.0;
    for (size_t i = 0; i < c->n; i++)
        s += ref_ew(c->k, c->in[i]) * c->R[i];
    return s;
}

static void test_elementwise(ew_kind k, size_t n) {
    char tag[64], name[96];
    snprintf(tag, sizeof tag, "%s N%zu", k == EW_GELU ? "gelu" : "silu", n);
    float *in = fvec(n, -6, 6), *R = fvec(n, -1, 1), *out = fvec(n, 9, 9);
    static const float extreme[] = {0.0f,  -0.0f,  1e-6f,  -1e-6f,  20.0f, -20.0f,
                                    90.0f, -90.0f, 100.0f, -100.0f, 3e4f,  -3e4f};
    size_t ne = sizeof extreme / sizeof extreme[0];
    for (size_t i = 0; i < ne && i < n; i++) {
        in[i * (n / ne)] = extreme[i];
        // A term of 3e4 in the loss would leave its double rounding (~1e-12) over the
        // difference step (~1e-6) as noise in every coordinate's finite difference.
        R[i * (n / ne)] *= 1e-3f;
    }
    (k == EW_GELU ? gelu_forward : silu_forward)(out, in, n);
    double *ref = malloc(n * sizeof *ref);
    for (size_t i = 0; i < n; i++)
        ref[i] = ref_ew(k, in[i]);
    snprintf(name, sizeof name, "%s fwd", tag);
    close_d(name, out, ref, n, 1e-6f, 1e-5f);

    ew_ctx c = {k, n, dvec(in, n), dvec(R, n)};
    float *din = layers_alloc(n), *base = fvec(n, -1, 1), *acc = fcopy(base, n);
    (k == EW_GELU ? gelu_backward : silu_backward)(din, R, in, n);
    (k == EW_GELU ? gelu_backward : silu_backward)(acc, R, in, n);
    snprintf(name, sizeof name, "%s din", tag);
    // FD of the extremes' coordinates are exact zeros or R_i; all others are smooth.
    check_grad(name, din, acc, base, c.in, n, n <= 2000 ? n : 200, ew_loss, &c, 1e-6f, 1e-5f);
    layers_free(in), layers_free(R), layers_free(out), layers_free(din), layers_free(base);
    layers_free(acc);
    free(ref), free(c.in), free(c.R);
}

static void test_residual(size_t n) {
    char name[96];
    float *a = fvec(n, -1, 1), *b = fvec(n, -1, 1), *out = fvec(n, 9, 9), *R = fvec(n, -1, 1);
    residual_forward(out, a, b, n);
    double *ref = malloc(n * sizeof *ref);
    for (size_t i = 0; i < n; i++)
        ref[i] = (double)a[i] + b[i];
    snprintf(name, sizeof name, "residual N%zu fwd", n);
    close_d(name, out, ref, n, 0, 1e-7f);
    // d(sum(R (a+b)))/da = R exactly: no finite differences needed.
    float *ba = fvec(n, -1, 1), *bb = fvec(n, -1, 1), *da = fcopy(ba, n), *db = fcopy(bb, n);
    residual_backward(da, db, R, n);
    residual_backward(NULL, db, R, n);
    for (size_t i = 0; i < n; i++) {
        ref[i] = (double)ba[i] + R[i];
        out[i] = (float)((double)bb[i] + R[i]) + R[i]; // the same two float roundings as +=
    }
    snprintf(name, sizeof name, "residual N%zu da", n);
    close_d(name, da, ref, n, 0, 0);
    snprintf(name, sizeof name, "residual N%zu db (twice)", n);
    tu_close(name, db, out, n, 0, 0);
    layers_free(a), layers_free(b), layers_free(out), layers_free(R), layers_free(ba);
    layers_free(bb), layers_free(da), layers_free(db);
    free(ref);
}

// ---- log-probabilities and cross-entropy ------------------------------------------------

static void ref_logprob(double *logp, double *lse, const double *logits, const int *tg, int N,
                        int V) {
    for (int i = 0; i < N; i++) {
        const double *x = logits + (size_t)i * V;
        double mx = -INFINITY, s = 0.0;
        for (int j = 0; j < V; j++)
            mx = x[j] > mx ? x[j] : mx;
        for (int j = 0; j < V; j++)
            s += exp(x[j] - mx);
        double l = mx + log(s);
        if (lse)
            lse[i] = l;
        logp[i] = tg[i] >= 0 ? x[tg[i]] - l : 0.0;
    }
}

typedef struct {
    int N, V;
    const int *tg;
    double *logits, *R, *logp;
} lp_ctx;

static double lp_loss(void *p) {
    lp_ctx *c = p;
    ref_logprob(c->logp, NULL, c->logits, c->tg, c->N, c->V);
    return dot_d(c->logp, c->R, c->N);
}

static void test_logprob(int N, int V) {
    char tag[64], name[96];
    snprintf(tag, sizeof tag, "logprob N%d V%d", N, V);
    size_t n = (size_t)N * V;
    float *logits = fvec(n, -4, 4), *R = fvec(N, -1, 1);
    int *tg = malloc(N * sizeof *tg);
    for (int i = 0; i < N; i++) {
        tg[i] = i % 4 == 1 ? -1 : (int)rng_below(&g_rng, V); // every 4th from 1 has no target
        float off = i % 3 == 2 ? 80.0f : i % 3 == 1 ? -60.0f : 0.0f; // exp would overflow
        for (int j = 0; j < V; j++)
            logits[(size_t)i * V + j] += off;
    }
    R[0] = 0.0f; // a zero upstream gradient adds nothing
    float *logp = fvec(N, 9, 9), *lse = fvec(N, 9, 9);
    logprob_forward(logp, lse, logits, tg, N, V);
    lp_ctx c = {N, V, tg, dvec(logits, n), dvec(R, N), malloc(N * sizeof(double))};
    double *rlse = malloc(N * sizeof(double));
    ref_logprob(c.logp, rlse, c.logits, tg, N, V);
    snprintf(name, sizeof name, "%s fwd", tag);
    close_d(name, logp, c.logp, N, 2e-6f, 1e-5f);
    snprintf(name, sizeof name, "%s lse", tag);
    close_d(name, lse, rlse, N, 2e-6f, 1e-6f);

    float *dl = layers_alloc(n), *base = fvec(n, -1, 1), *acc = fcopy(base, n);
    logprob_backward(dl, R, logits, lse, tg, N, V);
    logprob_backward(acc, R, logits, lse, tg, N, V);
    snprintf(name, sizeof name, "%s dlogits", tag);
    // The saved lse is a float at the logits' magnitude (up to ~85 here): its rounding, up to
    // 4e-6, shifts every probability by that relative amount, and (onehot - p) turns it into
    // an absolute error of ~4e-6 |dlogp| at the target. That is the atol.
    check_grad(name, dl, acc, base, c.logits, n, 150, lp_loss, &c, 5e-6f, 1e-5f);
    size_t leaked = 0; // rows without a target keep their pre-filled gradient bit for bit
    for (int i = 0; i < N; i++)
        for (int j = 0; tg[i] < 0 && j < V; j++)
            leaked += acc[(size_t)i * V + j] != base[(size_t)i * V + j];
    TU_CHECK(leaked == 0, "%s: %zu gradient entries in rows without a target", tag, leaked);

    free(tg), free(rlse), free(c.logits), free(c.R), free(c.logp);
    layers_free(logits), layers_free(R), layers_free(logp), layers_free(lse), layers_free(dl);
    layers_free(base), layers_free(acc);
}

typedef struct {
    int N;
    const float *mask, *weight;
    double *logp;
} xent_ctx;

static double xent_ref(void *p) {
    xent_ctx *c = p;
    double s = 0.0, m = 0.0;
    for (int i = 0; i < c->N; i++) {
        double mi = c->mask ? c->mask[i] : 1.0, wi = c->weight ? c->weight[i] : 1.0;
        s += mi * wi * c->logp[i];
        m += mi;
    }
    return -s / (m > 1.0 ? m : 1.0);
}

static void test_xent(int N, int use_mask, int use_weight, int all_masked) {
    char tag[64], name[96];
    snprintf(tag, sizeof tag, "xent N%d%s%s%s", N, use_mask ? " mask" : "",
             use_weight ? " weight" : "", all_masked ? " all-masked" : "");
    float *logp = fvec(N, -5, 0), *mask = NULL, *weight = NULL;
    if (use_mask) {
        mask = layers_alloc(N);
        for (int i = 0; i < N; i++)
            mask[i] = all_masked ? 0.0f : (float)(i % 3 != 0);
    }
    if (use_weight)
        weight = fvec(N, -2, 2);
    xent_ctx c = {N, mask, weight, dvec(logp, N)};
    float loss = xent_forward(logp, mask, weight, N);
    double rloss = xent_ref(&c);
    snprintf(name, sizeof name, "%s loss", tag);
    close_d(name, &loss, &rloss, 1, 1e-6f, 1e-6f);
    // loss is a scalar: dloss plays the part of R.
    float dloss = 0.7f;
    float *g = layers_alloc(N), *base = fvec(N, -1, 1), *acc = fcopy(base, N);
    xent_backward(g, dloss, mask, weight, N);
    xent_backward(acc, dloss, mask, weight, N);
    fdref_t r = fd_grad(c.logp, N, N, xent_ref, &c);
    for (size_t i = 0; i < r.k; i++)
        r.g[i] *= dloss;
    snprintf(name, sizeof name, "%s dlogp", tag);
    fd_compare(name, g, NULL, &r, 1e-6f, 1e-5f);
    snprintf(name, sizeof name, "%s dlogp (+=)", tag);
    fd_compare(name, acc, base, &r, 1e-6f, 1e-5f);
    fd_free(&r);
    layers_free(logp), layers_free(mask), layers_free(weight), layers_free(g);
    layers_free(base), layers_free(acc);
    free(c.logp);
}

// ---- time embedding ---------------------------------------------------------------------

typedef struct {
    int N, D;
    double *t, *R, *out;
} te_ctx;

static void ref_timeemb(double *out, const double *t, int N, int D) {
    int half = D / 2;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < half; j++) {
            double f = exp(-log(10000.0) * j / half);
            out[(size_t)i * D + j] = sin(t[i] * f);
            out[(size_t)i * D + half + j] = cos(t[i] * f);
        }
}

static double te_loss(void *p) {
    te_ctx *c = p;
    ref_timeemb(c->out, c->t, c->N, c->D);
    return dot_d(c->out, c->R, (size_t)c->N * c->D);
}

static void test_timeemb(int N, int D) {
    char tag[64], name[96];
    snprintf(tag, sizeof tag, "timeemb N%d D%d", N, D);
    size_t n = (size_t)N * D;
    float *t = fvec(N, 0, 1000), *R = fvec(n, -1, 1), *out = fvec(n, 9, 9);
    t[0] = 0.0f, t[1] = 0.37f;
    timeemb_forward(out, t, N, D);
    te_ctx c = {N, D, dvec(t, N), dvec(R, n), malloc(n * sizeof(double))};
    te_loss(&c);
    snprintf(name, sizeof name, "%s fwd", tag);
    close_d(name, out, c.out, n, 1e-6f, 1e-5f);
    float *dt = layers_alloc(N), *base = fvec(N, -1, 1), *acc = fcopy(base, N);
    timeemb_backward(dt, R, t, N, D);
    timeemb_backward(acc, R, t, N, D);
    snprintf(name, sizeof name, "%s dt", tag);
    check_grad(name, dt, acc, base, c.t, N, N, te_loss, &c, 1e-5f, 1e-5f);
    layers_free(t), layers_free(R), layers_free(out), layers_free(dt), layers_free(base);
    layers_free(acc);
    free(c.t), free(c.R), free(c.out);
}

// ---- buffers ----------------------------------------------------------------------------

static void test_buffers(void) {
    size_t n = 3 * (1 << 20) + 5; // big enough for layers_zero's threaded path
    float *p = layers_alloc(n), *h = malloc(n * sizeof *h), *z = calloc(n, sizeof *z);
    TU_CHECK(p && ((uintptr_t)p % 64) == 0, "layers_alloc: not 64-byte aligned");
    tu_equal_bytes("layers_alloc zero-filled", p, z, n * sizeof *p);
    for (size_t i = 0; i < n; i++)
        h[i] = (float)i;
    layers_to_device(p, h, n);
    memset(h, 0, n * sizeof *h);
    layers_to_host(h, p, n);
    TU_CHECK(h[n - 1] == (float)(n - 1) && h[7] == 7.0f, "layers_to_device/to_host round trip");
    layers_zero(p, n);
    tu_equal_bytes("layers_zero", p, z, n * sizeof *p);
    layers_free(p);
    layers_free(NULL);
    free(h), free(z);
}

static void run_all(void) {
    test_linear(7, 13, 9, 1);
    test_linear(7, 13, 9, 0);
    test_linear(1, 1, 1, 1);
    test_linear(256, 24, 160, 1); // column sums split across threads, a partial block
    test_embed(2, 5, 8, 11);
    test_embed(4, 64, 160, 50); // threaded, column blocks
    test_layernorm(6, 10);
    test_layernorm(300, 130); // threaded
    test_attention(2, 5, 8, 2);
    test_attention(1, 1, 4, 1);
    test_attention(3, 33, 48, 3); // threaded over (b, h)
    test_attention(2, 64, 128, 4);
    test_attention_decode(3, 7, 12, 3);
    test_elementwise(EW_GELU, 1000);
    test_elementwise(EW_GELU, 20001); // threaded
    test_elementwise(EW_SILU, 1000);
    test_elementwise(EW_SILU, 20001);
    test_residual(1001);
    test_residual(100003);
    test_logprob(9, 11);
    test_logprob(70, 260); // threaded
    test_xent(9, 1, 1, 0);
    test_xent(9, 0, 0, 0);
    test_xent(9, 1, 0, 1);
    test_xent(1, 0, 1, 0);
    test_timeemb(5, 8);
    test_buffers();
}

int main(void) {
    tu_blas_core("test_layers");
    printf("test_layers: back end %s\n", layers_backend());
    for (int threads = 1; threads <= 2; threads++) {
        rng_seed(&g_rng, 1234);
        layers_set_threads(threads);
        TU_CHECK(layers_threads() == threads, "layers_threads() = %d after setting %d",
                 layers_threads(), threads);
        printf("-- %d thread%s\n", threads, threads > 1 ? "s" : "");
        run_all();
    }
    return tu_finish("test_layers");
}
