// adamw.h: AdamW (decoupled weight decay, PyTorch semantics) with global gradient-norm clipping
// and a learning-rate schedule of linear warm-up then cosine decay to a floor.
#ifndef RLX_ADAMW_H
#define RLX_ADAMW_H

#include "paramset.h"

typedef struct {
    float lr;            // peak learning rate
    float beta1;         // first-moment decay (0.9)
    float beta2;         // second-moment decay (0.999 in PyTorch, 0.95 common for GPTs)
    float eps;           // denominator epsilon (1e-8)
    float weight_decay;  // decoupled decay, applied to every parameter: w -= lr * wd * w
    float grad_clip;     // clip the global L2 norm of the gradient to this; <= 0 disables
    int warmup_steps;    // lr rises linearly from lr/warmup to lr over these steps
    int64_t decay_steps; // cosine decay from lr to lr*min_lr_frac ends here; <= 0 = constant
    float min_lr_frac;   // floor of the decay as a fraction of lr
} adamw_config_t;

// Defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8, wd 0, no clipping, no schedule
// (warmup 0, decay_steps 0, min_lr_frac 0).
adamw_config_t adamw_defaults(void);

// Learning rate for the step with 0-based index `step` (the one about to be taken).
float adamw_lr(const adamw_config_t *c, int64_t step);

// Global L2 norm of the gradient (accumulated in double).
float adamw_grad_norm(const paramset_t *p);

// One step: clip p->g in place to grad_clip (as torch.nn.utils.clip_grad_norm_: g *=
// grad_clip * (1 / (norm + 1e-6)) when that factor is below 1), update moments and parameters with
// lr = adamw_lr(c, p->step), then p->step++. Returns the gradient norm before clipping.
float adamw_step(paramset_t *p, const adamw_config_t *c);

#endif
