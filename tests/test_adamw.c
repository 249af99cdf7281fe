// test_adamw.c: checks common/nn/adamw.c against PyTorch (tests/ref/adamw.bin, written by
// tests/gen_ref_adamw.py): 10 steps of clip_grad_norm_ + AdamW with weight decay, warm-up and
// cosine decay, parameters after every step, gradient norms and final moments. Also checks the
// learning-rate schedule against hand-computed values, in-place clipping, the no-clip path,
// and that a large step is bit-identical whatever the number of OpenMP threads.
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adamw.h"
#include "refio.h"
#include "rng.h"
#include "testutil.h"

#define N 1000
#define STEPS 10

static void check_lr(const adamw_config_t *c, int64_t step, double want) {
    float got = adamw_lr(c, step);
    TU_CHECK(fabs(got - want) <= 1e-7 * fabs(want) + 1e-12, "adamw_lr(step %lld) = %.9g, want %.9g",
             (long long)step, got, want);
}

static void test_schedule(void) {
    adamw_config_t c = adamw_defaults();
    TU_CHECK(c.lr == 1e-3f && c.beta1 == 0.9f && c.beta2 == 0.999f && c.eps == 1e-8f &&
                 c.weight_decay == 0.0f && c.grad_clip == 0.0f && c.warmup_steps == 0 &&
                 c.decay_steps == 0,
             "adamw_defaults differ from the documented ones");
    check_lr(&c, 0, 1e-3f); // no schedule: constant
    check_lr(&c, 123456, 1e-3f);

    c.lr = 1.0f;
    c.warmup_steps = 4;
    c.decay_steps = 12; // cosine over steps 4..12
    c.min_lr_frac = 0.1f;
    check_lr(&c, 0, 0.25);
    check_lr(&c, 1, 0.5);
    check_lr(&c, 3, 1.0);
    check_lr(&c, 4, 1.0);                                      // progress 0
    check_lr(&c, 6, 0.1 + 0.9 * 0.5 * (1 + cos(M_PI * 0.25))); // 0.868198052
    check_lr(&c, 8, (double)0.1f + (1 - (double)0.1f) * 0.5);  // progress 0.5: 0.55
    check_lr(&c, 12, 0.1f);                                    // floor
    check_lr(&c, 1000, 0.1f);

    c.warmup_steps = 0; // decay only, from step 0 over 10 steps
    c.decay_steps = 10;
    c.min_lr_frac = 0.0f;
    check_lr(&c, 0, 1.0);
    check_lr(&c, 5, 0.5);
    check_lr(&c, 10, 0.0);

    c.warmup_steps = 5; // warm-up only
    c.decay_steps = 0;
    check_lr(&c, 0, 0.2);
    check_lr(&c, 4, 1.0);
    check_lr(&c, 50, 1.0);
}

static void test_against_torch(void) {
    ref_file_t *rf = ref_load(tu_src_path("tests/ref/adamw.bin"));
    TU_CHECK(rf != NULL, "cannot load tests/ref/adamw.bin");
    if (!rf)
        return;
    adamw_config_t c = adamw_defaults();
    c.lr = 1e-2f;
    c.beta1 = 0.9f;
    c.beta2 = 0.95f;
    c.eps = 1e-8f;
    c.weight_decay = 0.1f;
    c.grad_clip = 1.0f;
    c.warmup_steps = 3;
    c.decay_steps = 10;
    c.min_lr_frac = 0.1f;
    const float want_cfg[9] = {c.lr,
                               c.beta1,
                               c.beta2,
                               c.eps,
                               c.weight_decay,
                               c.grad_clip,
                               (float)c.warmup_steps,
                               (float)c.decay_steps,
                               c.min_lr_frac};
    tu_equal_bytes("reference config", ref_floats(rf, "config", 9), want_cfg, sizeof want_cfg);

    const float *w0 = ref_floats(rf, "w0", N);
    const float *grad = ref_floats(rf, "grad", (size_t)STEPS * N);
    const float *lr = ref_floats(rf, "lr", STEPS);
    const float *norm = ref_floats(rf, "grad_norm", STEPS);
    const float *w_ref = ref_floats(rf, "w", (size_t)STEPS * N);

    float *w = calloc(N, sizeof(float)), *g = calloc(N, sizeof(float));
    float *m = calloc(N, sizeof(float)), *v = calloc(N, sizeof(float));
    paramset_t p = {.n = N, .w = w, .g = g, .m = m, .v = v, .step = 0};
    memcpy(w, w0, sizeof(float) * N);
    for (int s = 0; s < STEPS; s++) {
        char what[64];
        TU_CHECK(adamw_lr(&c, p.step) == lr[s], "step %d: adamw_lr %.9g, torch used %.9g", s,
                 adamw_lr(&c, p.step), lr[s]);
        memcpy(g, grad + (size_t)s * N, sizeof(float) * N);
        float got = adamw_step(&p, &c);
        TU_CHECK(fabsf(got - norm[s]) <= 1e-6f * norm[s], "step %d: grad norm %.9g, torch %.9g", s,
                 got, norm[s]);
        TU_CHECK(p.step == s + 1, "step counter %lld after %d steps", (long long)p.step, s + 1);
        snprintf(what, sizeof what, "params after step %d", s + 1);
        tu_close(what, w, w_ref + (size_t)s * N, N, 1e-7f, 1e-5f);
    }
    // torch sums the norm in float32 and lands an ulp away from our double sum on some steps, so
    // the clip coefficient (and everything after) can differ by an ulp: m, whose ulp is ~2e-9 at
    // its largest, keeps that absolute error while later steps cancel it toward zero.
    tu_close("adam m after 10 steps", m, ref_floats(rf, "m", N), N, 1e-8f, 1e-5f);
    tu_close("adam v after 10 steps", v, ref_floats(rf, "v", N), N, 1e-12f, 1e-5f);
    free(w);
    free(g);
    free(m);
    free(v);
    ref_free(&rf);
}

// The gradient is clipped in place when its norm exceeds grad_clip, and left alone otherwise.
static void test_clip_in_place(void) {
    enum { n = 100 };
    float w[n], g[n], g0[n], m[n] = {0}, v[n] = {0};
    rng_t rng;
    rng_seed(&rng, 7);
    for (int i = 0; i < n; i++) {
        w[i] = rng_normal(&rng);
        g0[i] = g[i] = rng_normal(&rng); // norm about 10
    }
    paramset_t p = {.n = n, .w = w, .g = g, .m = m, .v = v};
    adamw_config_t c = adamw_defaults();
    c.grad_clip = 2.0f;
    float norm = adamw_step(&p, &c);
    float after = adamw_grad_norm(&p);
    TU_CHECK(norm > 2.0f && fabsf(after - 2.0f) < 1e-5f,
             "clipping: norm %.6g before, %.6g after (want 2)", norm, after);
    c.grad_clip = 0.0f;
    memcpy(g, g0, sizeof g);
    adamw_step(&p, &c);
    tu_equal_bytes("gradient untouched without clipping", g, g0, sizeof g);
    c.grad_clip = 1000.0f;
    adamw_step(&p, &c);
    tu_equal_bytes("gradient untouched below the clip norm", g, g0, sizeof g);
    TU_CHECK(p.step == 3, "step counter %lld after 3 steps", (long long)p.step);
}

// A step over many parameters runs in parallel; its result must not depend on the thread count
// (data-parallel ranks must stay in lockstep), and the norm must match a plain double sum.
static void test_threads_deterministic(void) {
    const size_t n = (size_t)3 << 20;
    float *buf = malloc(sizeof(float) * n * 8);
    float *w[2] = {buf, buf + n}, *g[2] = {buf + 2 * n, buf + 3 * n};
    float *m[2] = {buf + 4 * n, buf + 5 * n}, *v[2] = {buf + 6 * n, buf + 7 * n};
    rng_t rng;
    rng_seed(&rng, 11);
    double ss = 0.0;
    for (size_t i = 0; i < n; i++) {
        w[0][i] = w[1][i] = rng_normal(&rng);
        g[0][i] = g[1][i] = rng_normal(&rng) * 1e-3f;
        m[0][i] = m[1][i] = 0.0f;
        v[0][i] = v[1][i] = 0.0f;
        ss += (double)g[0][i] * g[0][i];
    }
    adamw_config_t c = adamw_defaults();
    c.grad_clip = 1.0f;
    c.weight_decay = 0.1f;
    int threads = omp_get_max_threads();
    float norm[2];
    for (int k = 0; k < 2; k++) {
        paramset_t p = {.n = n, .w = w[k], .g = g[k], .m = m[k], .v = v[k]};
        omp_set_num_threads(k == 0 ? 1 : (threads > 1 ? threads : 4));
        norm[k] = adamw_step(&p, &c);
    }
    omp_set_num_threads(threads);
    TU_CHECK(norm[0] == norm[1], "grad norm differs with thread count: %.9g vs %.9g", norm[0],
             norm[1]);
    TU_CHECK(fabs(norm[0] - sqrt(ss)) <= 1e-6 * sqrt(ss), "grad norm %.9g, plain sum %.9g", norm[0],
             sqrt(ss));
    tu_equal_bytes("3M-param step, 1 thread vs many: params", w[0], w[1], sizeof(float) * n);
    tu_equal_bytes("3M-param step, 1 thread vs many: v", v[0], v[1], sizeof(float) * n);
    free(buf);
}

int main(void) {
    tu_blas_core("test_adamw");
    test_schedule();
    test_against_torch();
    test_clip_in_place();
    test_threads_deterministic();
    return tu_finish("test_adamw");
}
