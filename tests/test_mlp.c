// test_mlp.c: the residual MLP against tests/ref/mlp.bin, which tests/gen_ref.py writes with
// PyTorch in float64 from the same float32 inputs: the output and the gradients of
// sum(dout * out) with respect to every parameter, x and t, with a time embedding and
// without one (time_dim = 0, prefix "nt_"); and 10 AdamW steps on an MSE loss. Also: fewer
// rows than max_batch, and a repeated forward/backward giving bit-identical results.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adamw.h"
#include "layers.h"
#include "mlp.h"
#include "refio.h"
#include "testutil.h"

_Static_assert(sizeof(mlp_params_t) == MLP_NUM_PARAM_TENSORS * sizeof(float *),
               "mlp_params_t is walked as an array of MLP_NUM_PARAM_TENSORS float pointers");

// Tolerances: |got - ref| <= atol + rtol |ref| with atol = ATOL_REL * max|ref| over the tensor.
// With t up to 1000 these hold only if the time embedding's argument t * f_j is formed in
// double: in float32 it would be off by up to ~1000 * 2^-24 = 6e-5.
#define RTOL 1e-5f
#define ATOL_REL 1e-6f
#define ADAM_ATOL 5e-6f // absolute, on parameters after 10 AdamW steps: see test_adamw

static ref_file_t *R;

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

static void check_host(const char *what, const float *got, const float *ref, size_t n, float rtol,
                       float atol_rel) {
    float mx = 0.0f;
    for (size_t i = 0; i < n; i++)
        mx = fmaxf(mx, fabsf(ref[i]));
    float atol = atol_rel * mx;
    tu_close(what, got, ref, n, atol > 0 ? atol : 1e-30f, rtol);
}

static void check(const char *what, const float *dev, const char *ref_name, size_t n, float rtol,
                  float atol_rel) {
    check_host(what, to_host(dev, n), ref_floats(R, ref_name, n), n, rtol, atol_rel);
}

static const char *pname(const char *prefix, const char *name) {
    static char buf[4][64];
    static int k = 0;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s%s", prefix, name);
    return buf[k];
}

// One reference case: config, parameters and data under "<prefix>...".
typedef struct {
    const char *prefix;                  // name prefix in the reference file
    mlp_config_t cfg;                    // architecture
    int N;                               // rows
    size_t psize[MLP_NUM_PARAM_TENSORS]; // elements of each parameter tensor
    const float *x, *t;                  // (N, D), (N) or NULL
} mlp_case_t;

static mlp_case_t load_case(const char *prefix) {
    mlp_case_t c = {.prefix = prefix};
    const int *k = ref_ints(R, pname(prefix, "config"), 6);
    c.cfg = (mlp_config_t){
        .in_dim = k[0], .hidden = k[1], .n_blocks = k[2], .out_dim = k[3], .time_dim = k[4]};
    c.N = k[5];
    size_t D = k[0] + k[4], H = k[1], K = k[2], O = k[3];
    size_t s[MLP_NUM_PARAM_TENSORS] = {
        H * D,     // w_in
        H,         // b_in
        K * H,     // ln_w
        K * H,     // ln_b
        K * H * H, // w1
        K * H,     // b1
        K * H * H, // w2
        K * H,     // b2
        H,         // lnf_w
        H,         // lnf_b
        O * H,     // w_out
        O,         // b_out
    };
    memcpy(c.psize, s, sizeof s);
    c.x = ref_floats(R, pname(prefix, "x"), (size_t)c.N * k[0]);
    c.t = k[4] > 0 ? ref_floats(R, pname(prefix, "t"), c.N) : NULL;
    return c;
}

static void load_params(mlp_t *m, const mlp_case_t *c) {
    float **w = (float **)&m->w;
    size_t total = 0;
    for (int i = 0; i < MLP_NUM_PARAM_TENSORS; i++) {
        layers_to_device(w[i], ref_floats(R, pname(c->prefix, MLP_PARAM_NAMES[i]), c->psize[i]),
                         c->psize[i]);
        total += c->psize[i];
    }
    TU_CHECK(total == m->ps.n, "parameter count %zu, model has %zu", total, m->ps.n);
}

static void check_params(const mlp_case_t *c, mlp_params_t *p, const char *what, float rtol,
                         float atol_rel) {
    float **x = (float **)p;
    char name[64];
    for (int i = 0; i < MLP_NUM_PARAM_TENSORS; i++) {
        snprintf(name, sizeof name, "%s%s%s", c->prefix, what, MLP_PARAM_NAMES[i]);
        check(name, x[i], name, c->psize[i], rtol, atol_rel);
    }
}

static void test_case(const char *prefix) {
    mlp_case_t c = load_case(prefix);
    int N = c.N, D = c.cfg.in_dim, O = c.cfg.out_dim;
    mlp_t *m = mlp_new(&c.cfg, N + 3, 1); // max_batch above N
    load_params(m, &c);
    const float *dout = ref_floats(R, pname(prefix, "dout"), (size_t)N * O);

    mlp_forward(m, c.x, c.t, N);
    check(pname(prefix, "out"), m->a.out, pname(prefix, "out"), (size_t)N * O, RTOL, ATOL_REL);
    paramset_zero_grad(&m->ps);
    mlp_backward(m, dout);
    check_params(&c, &m->g, "g_", RTOL, ATOL_REL);
    check(pname(prefix, "dx"), m->dx, pname(prefix, "dx"), (size_t)N * D, RTOL, ATOL_REL);
    if (c.t)
        check(pname(prefix, "dt"), m->dt, pname(prefix, "dt"), N, RTOL, ATOL_REL);
    size_t n = m->ps.n;
    float *g1 = malloc(n * sizeof(float)), *out1 = malloc((size_t)N * O * sizeof(float));
    layers_to_host(g1, m->ps.g, n);
    layers_to_host(out1, m->a.out, (size_t)N * O);

    // Fewer rows: rows 2.. on their own give the reference's rows.
    int off = 2, Ns = N - off;
    mlp_forward(m, c.x + off * D, c.t ? c.t + off : NULL, Ns);
    check_host(pname(prefix, "out, fewer rows"), to_host(m->a.out, (size_t)Ns * O),
               ref_floats(R, pname(prefix, "out"), (size_t)N * O) + off * O, (size_t)Ns * O, RTOL,
               ATOL_REL);
    paramset_zero_grad(&m->ps);
    mlp_backward(m, dout);

    // The full batch again: bit-identical output and gradients.
    mlp_forward(m, c.x, c.t, N);
    paramset_zero_grad(&m->ps);
    mlp_backward(m, dout);
    tu_equal_bytes(pname(prefix, "out, second run"), to_host(m->a.out, (size_t)N * O), out1,
                   (size_t)N * O * sizeof(float));
    tu_equal_bytes(pname(prefix, "gradients, second run"), to_host(m->ps.g, n), g1,
                   n * sizeof(float));
    free(g1);
    free(out1);
    mlp_destroy(&m);
    TU_CHECK(m == NULL, "mlp_destroy nulls the pointer");
    mlp_destroy(&m); // safe on NULL
}

// 10 AdamW steps on mean((out - y)^2) with fixed x, t, y.
static void test_adamw(void) {
    mlp_case_t c = load_case("");
    int N = c.N, O = c.cfg.out_dim;
    mlp_t *m = mlp_new(&c.cfg, N, 2);
    load_params(m, &c);
    adamw_config_t ac = {.lr = 1e-3f,
                         .beta1 = 0.9f,
                         .beta2 = 0.95f,
                         .eps = 1e-8f,
                         .weight_decay = 0.1f,
                         .grad_clip = 1.0f,
                         .warmup_steps = 3,
                         .decay_steps = 10,
                         .min_lr_frac = 0.1f};
    enum { STEPS = 10 };
    const float *y = ref_floats(R, "y", (size_t)N * O);
    float losses[STEPS], *dout = malloc((size_t)N * O * sizeof(float));
    for (int s = 0; s < STEPS; s++) {
        mlp_forward(m, c.x, c.t, N);
        const float *out = to_host(m->a.out, (size_t)N * O);
        double loss = 0.0;
        for (int i = 0; i < N * O; i++) {
            double d = (double)out[i] - y[i];
            loss += d * d;
            dout[i] = (float)(2.0 * d / (N * O));
        }
        losses[s] = (float)(loss / (N * O));
        paramset_zero_grad(&m->ps);
        mlp_backward(m, dout);
        adamw_step(&m->ps, &ac);
    }
    tu_close("adam_losses", losses, ref_floats(R, "adam_losses", STEPS), STEPS, 0.0f, RTOL);
    // An Adam step moves a parameter by about lr * m/sqrt(v) whatever the gradient's size, so
    // the float32 rounding of a small gradient element becomes a relative error of its step:
    // a gradient of 1e-6 carrying a 1e-9 error shifts each step by 0.1%. ADAM_ATOL (0.5% of
    // one peak-lr step, summed over the 10 steps) allows for that, as in test_gpt.
    float **w = (float **)&m->w;
    for (int i = 0; i < MLP_NUM_PARAM_TENSORS; i++) {
        const char *name = pname("adam_final_", MLP_PARAM_NAMES[i]);
        tu_close(name, to_host(w[i], c.psize[i]), ref_floats(R, name, c.psize[i]), c.psize[i],
                 ADAM_ATOL, RTOL);
    }
    free(dout);
    mlp_destroy(&m);
}

int main(void) {
    tu_blas_core("test_mlp");
    R = ref_load(tu_src_path("tests/ref/mlp.bin"));
    if (!R) {
        fprintf(stderr, "test_mlp: no reference file (run tests/gen_ref.py)\n");
        return 1;
    }
    test_case("");
    test_case("nt_");
    test_adamw();
    ref_free(&R);
    return tu_finish("test_mlp");
}
