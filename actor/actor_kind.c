// actor_kind.c: the actor's kind tables by kind_t and the kind decisions (actor_kind.h).
#include "actor_kind.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diffusion.h"
#include "gfn_ckpt.h"

static const actor_kind_t *const tables[KIND_COUNT] = {
    [KIND_TEXT] = &text_actor_kind,
    [KIND_GFLOW] = &gfn_actor_kind,
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

// Index of the first non-finite float of w[0..n) (its exponent bits all set: inf or NaN), or
// n. Tested on the bits, OR-reduced per block, so the scan vectorises: it runs once per
// weight version over every parameter of every actor.
static uint64_t first_nonfinite(const uint32_t *w, uint64_t n) {
    enum { BLOCK = 4096 };
    for (uint64_t lo = 0; lo < n; lo += BLOCK) {
        uint64_t hi = n - lo < BLOCK ? n : lo + BLOCK;
        uint32_t bad = 0;
        for (uint64_t i = lo; i < hi; i++)
            bad |= (uint32_t)((w[i] & 0x7f800000u) == 0x7f800000u);
        if (bad)
            for (uint64_t i = lo; i < hi; i++)
                if ((w[i] & 0x7f800000u) == 0x7f800000u)
                    return i;
    }
    return n;
}

int actor_params_finite(const ckpt_t *ck, char *err, size_t errlen) {
    uint64_t nb = 0;
    const uint32_t *w = ckpt_section(ck, "params", &nb); // float32 bits
    uint64_t n = w ? nb / sizeof *w : 0, at = w ? first_nonfinite(w, n) : 0;
    if (at < n) {
        float x;
        memcpy(&x, w + at, sizeof x);
        snprintf(err, errlen, "parameter %llu of %llu is %g: non-finite weights",
                 (unsigned long long)at, (unsigned long long)n, (double)x);
        return -1;
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
