// actor_kind.c: the actor's kind tables by kind_t and the kind decisions (actor_kind.h).
#include "actor_kind.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "diffusion.h"
#include "gfn_ckpt.h"

static const actor_kind_t *const tables[KIND_COUNT] = {
    [KIND_TEXT] = &text_actor_kind,
    [KIND_GFLOW] = &gflow_actor_kind,
    [KIND_DIFFUSION] = &diffusion_actor_kind,
};

const actor_kind_t *actor_kind(kind_t k) {
    return kind_valid(k) ? tables[k] : NULL;
}

kind_t actor_item_kind(const Rlx__WorkItem *it) {
    return it->gflow ? KIND_GFLOW : it->diffusion ? KIND_DIFFUSION : KIND_TEXT;
}

kind_t actor_ckpt_kind(const ckpt_t *ck) {
    switch (ckpt_kind(ck)) {
    case CKPT_KIND_GPT:
        return KIND_TEXT;
    case CKPT_KIND_GFN:
        return KIND_GFLOW;
    case CKPT_KIND_MLP: // a plain mlp is no policy; a diffusion denoiser carries RLXDIFF1
        return diff_is_ckpt(ck) ? KIND_DIFFUSION : KIND_NONE;
    default:
        return KIND_NONE;
    }
}

int actor_params_finite(const ckpt_t *ck, char *err, size_t errlen) {
    uint64_t nb = 0;
    const float *w = ckpt_section(ck, "params", &nb);
    for (uint64_t i = 0; w && i < nb / sizeof *w; i++) {
        if (!isfinite(w[i])) {
            snprintf(err, errlen, "parameter %llu of %llu is %g: non-finite weights",
                     (unsigned long long)i, (unsigned long long)(nb / sizeof *w), (double)w[i]);
            return -1;
        }
    }
    const gfn_ckpt_logz_t *lz = ckpt_section(ck, "logz", &nb);
    if (lz && nb == sizeof *lz && !isfinite(lz->w)) {
        snprintf(err, errlen, "log Z is %g: non-finite weights", (double)lz->w);
        return -1;
    }
    return 0;
}

uint64_t actor_item_seed(const Rlx__WorkItem *it, uint64_t actor_seed) {
    return it->seed ? it->seed : actor_seed ^ (it->work_id * 0x9E3779B97F4A7C15ull);
}

void *actor_whole_job_new(void *model, const Rlx__WorkItem *it, const actor_job_ctx_t *ctx,
                          char *why_buf, size_t why_len, const char **why) {
    (void)model, (void)why_buf, (void)why_len;
    actor_whole_job_t *j = calloc(1, sizeof *j);
    if (!j) {
        *why = "out of memory";
        return NULL;
    }
    j->item = it;
    j->ctx = *ctx;
    return j;
}

int actor_holds_model(const void *model) {
    return model != NULL;
}
