// adamw.c: the AdamW step over a paramset (adamw.h). It mirrors PyTorch 1.13 exactly:
// torch.nn.utils.clip_grad_norm_ followed by torch.optim.AdamW's single-tensor path, operation
// by operation in float32, with the per-step scalars (decay factor, bias corrections, step
// size) formed in double and rounded to float as PyTorch does with Python-float scalars, so a
// C step and a PyTorch step agree to float rounding (tests/test_adamw.c checks it).
//
// The gradient norm is summed in double over fixed-size blocks whose size depends only on n,
// so the result is bit-identical whatever the number of OpenMP threads: every data-parallel
// rank takes exactly the same step from the same all-reduced gradient.
#include "adamw.h"

#include <assert.h>
#include <math.h>

#define NORM_BLOCK_MIN 65536 // smallest block of the norm's partial sums
#define NORM_MAX_BLOCKS 1024 // at most this many partial sums (kept on the stack)
#define PARALLEL_MIN 65536   // below this many parameters a step runs on one thread

// PyTorch's vectorised CPU kernels (AVX2 and up) evaluate add_(x, alpha) and addcmul_ as fused
// multiply-adds; with FMA hardware we do the same, which makes a step bit-identical to torch's
// for the same clipped gradient. Without it, torch's own fallback kernels do not fuse either.
#if defined(__FMA__) || defined(__aarch64__)
#define FMA(a, b, c) fmaf(a, b, c)
#else
#define FMA(a, b, c) ((a) * (b) + (c))
#endif

adamw_config_t adamw_defaults(void) {
    return (adamw_config_t){
        .lr = 1e-3f,
        .beta1 = 0.9f,
        .beta2 = 0.999f,
        .eps = 1e-8f,
        .weight_decay = 0.0f,
        .grad_clip = 0.0f,
        .warmup_steps = 0,
        .decay_steps = 0,
        .min_lr_frac = 0.0f,
    };
}

float adamw_lr(const adamw_config_t *c, int64_t step) {
    const double lr = c->lr;
    if (c->warmup_steps > 0 && step < c->warmup_steps)
        return (float)(lr * (double)(step + 1) / (double)c->warmup_steps);
    if (c->decay_steps > 0) {
        const int64_t warm = c->warmup_steps > 0 ? c->warmup_steps : 0;
        const int64_t span = c->decay_steps - warm > 1 ? c->decay_steps - warm : 1;
        double progress = (double)(step - warm) / (double)span;
        progress = progress < 0.0 ? 0.0 : progress > 1.0 ? 1.0 : progress;
        const double frac = c->min_lr_frac;
        return (float)(lr * (frac + (1.0 - frac) * 0.5 * (1.0 + cos(M_PI * progress))));
    }
    return c->lr;
}

// Sum of squares of g[0..n) in double; eight independent lanes so the compiler can vectorise
// without reassociating, which keeps the result independent of the instruction set.
static double sumsq_block(const float *g, size_t n) {
    double lane[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++)
            lane[k] += (double)g[i + k] * (double)g[i + k];
    for (; i < n; i++)
        lane[i & 7] += (double)g[i] * (double)g[i];
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) +
           ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

float adamw_grad_norm(const paramset_t *p) {
    const size_t n = p->n;
    size_t bs = n / NORM_MAX_BLOCKS + 1;
    if (bs < NORM_BLOCK_MIN)
        bs = NORM_BLOCK_MIN;
    const size_t nb = (n + bs - 1) / bs;
    assert(nb <= NORM_MAX_BLOCKS);
    double part[NORM_MAX_BLOCKS];
    const float *g = p->g;
#pragma omp parallel for schedule(static) if (nb > 1)
    for (size_t b = 0; b < nb; b++) {
        const size_t lo = b * bs, hi = lo + bs < n ? lo + bs : n;
        part[b] = sumsq_block(g + lo, hi - lo);
    }
    double s = 0.0;
    for (size_t b = 0; b < nb; b++)
        s += part[b];
    return (float)sqrt(s);
}

float adamw_step(paramset_t *p, const adamw_config_t *c) {
    assert(p->w && p->g && p->m && p->v && "adamw_step needs a paramset with optimizer state");
    const size_t n = p->n;
    const float norm = adamw_grad_norm(p);

    // clip_grad_norm_: coef = max_norm * (1 / (norm + 1e-6)) in float32 (torch evaluates
    // `max_norm / tensor` as reciprocal-then-multiply), applied when it is below 1.
    float clip = 1.0f;
    if (c->grad_clip > 0.0f) {
        const float coef = (1.0f / (norm + 1e-6f)) * c->grad_clip;
        if (coef < 1.0f)
            clip = coef;
    }

    const double t = (double)(p->step + 1);
    const double lr = adamw_lr(c, p->step);
    const float decay = (float)(1.0 - lr * (double)c->weight_decay);
    const float b1 = c->beta1, b2 = c->beta2;
    const float a1 = (float)(1.0 - (double)b1), a2 = (float)(1.0 - (double)b2);
    const double bc1 = 1.0 - pow((double)b1, t), bc2 = 1.0 - pow((double)b2, t);
    const float neg_step = (float)(-(lr / bc1));
    const float bc2_sqrt = (float)sqrt(bc2);
    const float eps = c->eps;

    // GCC vectorises this loop only with -fno-math-errno: otherwise sqrtf keeps a call for
    // errno on negative input (v never is), which blocks it; scalar is ~3.5x slower here.
    float *restrict w = p->w, *restrict g = p->g, *restrict m = p->m, *restrict v = p->v;
#pragma omp parallel for simd schedule(static) if (n >= PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) {
        const float gi = g[i] * clip; // exact when clip == 1, as torch's clamped multiply
        g[i] = gi;
        const float wi = w[i] * decay;                  // param.mul_(1 - lr*wd)
        const float mi = FMA(gi, a1, m[i] * b1);        // exp_avg.mul_(b1).add_(g, alpha=1-b1)
        const float vi = FMA(a2 * gi, gi, v[i] * b2);   // exp_avg_sq.mul_(b2).addcmul_(g, g, 1-b2)
        const float denom = sqrtf(vi) / bc2_sqrt + eps; // (sqrt(v) / sqrt(bc2)).add_(eps)
        m[i] = mi;
        v[i] = vi;
        w[i] = wi + (neg_step * mi) / denom; // param.addcdiv_(m, denom, value=-step_size)
    }
    p->step++;
    return norm;
}
