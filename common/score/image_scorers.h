// image_scorers.h: rewards of diffusion samples (float payloads with a shape), for reward
// workers (rlx-reward) and for learners that score x0_hat locally. One scorer object per kind;
// the digit scorers hold the classifier written by rlx-train-classifier.
//
// Kinds (names) and targets (the item's target string):
//   "digit-logp"  log p(target class | x) under the classifier; payload [8, 8] or [64] pixels
//                 in [-1, 1]; target "0".."9"
//   "digit-prob"  p(target class | x), same payload and target
//   "ink"         mean brightness (x + 1) / 2 in [0, 1] of an image; target "" = that value,
//                 or a number v in [0, 1]: -|ink - v|
//   "symmetry"    left-right symmetry of a square image [H, W]: -mean |x[i][j] - x[i][W-1-j]|
//                 over the pixels, in [-2, 0] (0 = symmetric); target ignored
//   "toy-mode"    2-D toy (digits_toy_mixture): -||x - centre_k||; payload [2]; target
//                 "k" or "k,modes,radius" (defaults 8 modes, radius 2)
//   "toy-density" log-density of the equal-weight sub-mixture of the listed modes,
//                 log (1/|K|) sum_{k in K} N(x; centre_k, std^2 I); target "k1+k2+...", or
//                 "k1+k2,modes,radius,std" (defaults 8, 2, 0.1)
#ifndef RLX_IMAGE_SCORERS_H
#define RLX_IMAGE_SCORERS_H

#include <stddef.h>
#include <stdint.h>

#include "mlp.h"

enum {
    IMGSCORE_DIGIT_LOGP = 0,
    IMGSCORE_DIGIT_PROB = 1,
    IMGSCORE_INK = 2,
    IMGSCORE_SYMMETRY = 3,
    IMGSCORE_TOY_MODE = 4,
    IMGSCORE_TOY_DENSITY = 5,
    IMGSCORE_KINDS = 6
};

typedef struct {
    int kind;   // IMGSCORE_*
    mlp_t *clf; // digit classifier (digit kinds; owned), else NULL
} imgscore_t;

// Kind of a scorer name, or -1.
int imgscore_find(const char *name);
const char *imgscore_name(int kind);
// Comma-separated names.
const char *imgscore_list(void);

// A scorer by name. The digit kinds load the classifier checkpoint clf_path (an mlp with
// in_dim 64, out_dim 10, no time input, "RLXCLF01" extra section); other kinds ignore it.
// NULL with err on an unknown name or a bad checkpoint.
imgscore_t *imgscore_new(const char *name, const char *clf_path, char *err, size_t errlen);
// The same with a classifier in memory (takes ownership of clf; NULL for non-digit kinds).
imgscore_t *imgscore_new_with(int kind, mlp_t *clf);
void imgscore_destroy(imgscore_t **self_p);

// Reward of one payload of n floats with shape (nshape) for target (NUL-terminated, may be
// ""). 0 with *reward, or -1 with err (shape does not match n or the kind, a bad target, a
// non-finite value): run-time input, never an assert.
int imgscore_score(imgscore_t *s, const float *payload, size_t n, const uint32_t *shape,
                   size_t nshape, const char *target, float *reward, char *err, size_t errlen);

#endif
