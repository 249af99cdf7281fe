// paramset.c: gradient reset and checkpointing of a model's trainable state (paramset.h).
// A checkpoint holds the sections "params" (n floats), "adam_m" and "adam_v" (n floats each,
// absent for an inference-only paramset without moments), "adam_step" (int64) and an optional
// opaque "extra" blob; the model kind and config travel in the ckpt header.
#include "paramset.h"

#include <stdio.h>
#include <string.h>

void paramset_zero_grad(paramset_t *p) {
    if (p->g)
        memset(p->g, 0, p->n * sizeof *p->g);
}

int paramset_save(const paramset_t *p, const char *path, uint32_t kind,
                  const int32_t config[CKPT_CONFIG_LEN], const void *extra, size_t extra_len,
                  char *err, size_t errlen) {
    const uint64_t nb = (uint64_t)p->n * sizeof(float);
    const int64_t step = p->step;
    ckpt_section_t sec[5];
    int ns = 0;
    sec[ns++] = (ckpt_section_t){"params", p->w, nb};
    if (p->m && p->v) {
        sec[ns++] = (ckpt_section_t){"adam_m", p->m, nb};
        sec[ns++] = (ckpt_section_t){"adam_v", p->v, nb};
    }
    sec[ns++] = (ckpt_section_t){"adam_step", &step, sizeof step};
    if (extra)
        sec[ns++] = (ckpt_section_t){"extra", extra, extra_len};
    return ckpt_write(path, kind, config, sec, ns, err, errlen);
}

int paramset_load(paramset_t *p, const ckpt_t *c, char *err, size_t errlen) {
    uint64_t nb_w = 0, nb_m = 0, nb_v = 0, nb_step = 0;
    const void *w = ckpt_section(c, "params", &nb_w);
    if (!w) {
        snprintf(err, errlen, "checkpoint has no 'params' section");
        return -1;
    }
    const uint64_t want = (uint64_t)p->n * sizeof(float);
    if (nb_w != want) {
        if (nb_w % sizeof(float))
            snprintf(err, errlen,
                     "checkpoint 'params' has %llu bytes, not a whole number of floats",
                     (unsigned long long)nb_w);
        else
            snprintf(err, errlen, "checkpoint has %llu parameters, model has %zu",
                     (unsigned long long)(nb_w / sizeof(float)), p->n);
        return -1;
    }
    const void *m = ckpt_section(c, "adam_m", &nb_m);
    const void *v = ckpt_section(c, "adam_v", &nb_v);
    const void *s = ckpt_section(c, "adam_step", &nb_step);
    int64_t step = 0;
    int have_opt = m && v && s && nb_m == want && nb_v == want && nb_step == sizeof step;
    if (have_opt) {
        memcpy(&step, s, sizeof step);
        if (step < 0) {
            snprintf(err, errlen, "checkpoint has a negative optimizer step (%lld)",
                     (long long)step);
            return -1;
        }
    }

    // All checks passed: from here on nothing fails.
    memcpy(p->w, w, want);
    if (have_opt) {
        if (p->m)
            memcpy(p->m, m, want);
        if (p->v)
            memcpy(p->v, v, want);
        p->step = step;
    } else {
        // Parameters without optimizer state (e.g. a converted or inference checkpoint):
        // the optimizer starts fresh.
        if (p->m)
            memset(p->m, 0, want);
        if (p->v)
            memset(p->v, 0, want);
        p->step = 0;
    }
    return 0;
}
