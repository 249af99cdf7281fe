// paramset.h: the trainable state every model shares: contiguous parameters, gradients and
// AdamW moments, carved from the model's arena. Contiguous gradients make the data-parallel
// all-reduce a single in-place MPI call; the optimizer and checkpoints work on this view
// without knowing the model.
#ifndef RLX_PARAMSET_H
#define RLX_PARAMSET_H

#include <stddef.h>
#include <stdint.h>

#include "ckpt.h"

typedef struct {
    size_t n;     // number of parameters
    float *w;     // (n) parameters
    float *g;     // (n) gradients, accumulated by backward passes
    float *m;     // (n) AdamW first moment
    float *v;     // (n) AdamW second moment
    int64_t step; // optimizer steps taken so far
} paramset_t;

// Zero the gradients (start of a step).
void paramset_zero_grad(paramset_t *p);

// Save parameters, AdamW moments and step (the moments only when p->m and p->v are set) (and an
// opaque `extra` blob, e.g. trainer state; may be NULL) as a checkpoint of the given kind/config. 0
// on success, -1 with err.
int paramset_save(const paramset_t *p, const char *path, uint32_t kind,
                  const int32_t config[CKPT_CONFIG_LEN], const void *extra, size_t extra_len,
                  char *err, size_t errlen);
// Copy a verified checkpoint's parameters (and, if present, optimizer state) into p; a
// checkpoint without complete optimizer state loads as a fresh optimizer (zero moments, step 0).
// Fails (-1, err) if the parameter count differs; nothing is copied then.
int paramset_load(paramset_t *p, const ckpt_t *c, char *err, size_t errlen);
#endif
