// digits.h: labelled datasets for the diffusion models: the 1,797 8x8 UCI handwritten digits
// (examples/data/digits.csv.gz), a 2-D Gaussian-mixture toy for fast tests, seeded
// train/test splits, and a small mlp classifier on the digits that serves as a reward.
//
// Digits file: one row per image, 64 pixel counts 0..16 (row-major 8x8) then the label 0..9,
// comma-separated, gzip-compressed or plain. Pixels are scaled to [-1, 1]: x = p / 8 - 1.
#ifndef RLX_DIGITS_H
#define RLX_DIGITS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "adamw.h"
#include "mlp.h"

#define DIGITS_DIM 64     // pixels per image
#define DIGITS_SIDE 8     // image side
#define DIGITS_CLASSES 10 // labels 0..9

typedef struct {
    int n;         // examples
    int dim;       // features per example (D)
    int n_classes; // labels are in [0, n_classes)
    float *x;      // (n, D) features (digits: pixels in [-1, 1])
    int *label;    // (n) class of each example (toy: its mixture component)
} digits_t;

// Reads the digits file (gzip or plain CSV). NULL with a message in err (naming the line and
// what is wrong) if it is missing, not gzip-decodable, truncated or malformed.
digits_t *digits_load(const char *path, char *err, size_t errlen);

// n points from `modes` isotropic Gaussians (std `std`) centred evenly on a circle of radius
// `radius` (the classic "8 Gaussians"), components drawn uniformly; label = component.
digits_t *digits_toy_mixture(int n, int modes, float radius, float std, uint64_t seed);
// Centre of mixture component k: (radius cos(2 pi k / modes), radius sin(2 pi k / modes)).
void digits_toy_centre(int k, int modes, float radius, float out[2]);

// Nearest mixture component to point x (2): returns its index, its distance in *dist.
int digits_toy_nearest(const float x[2], int modes, float radius, float *dist);

// Seeded random split: test gets round(n * test_frac) examples, train the rest (both new).
void digits_split(const digits_t *all, float test_frac, uint64_t seed, digits_t **train,
                  digits_t **test);

void digits_destroy(digits_t **self_p);

// Prints image i of a (dim 64) set as 8 lines of ASCII shades (values in [-1, 1]).
void digits_print(FILE *f, const float *x);

// ---- classifier ---------------------------------------------------------------------------
// An mlp (time_dim 0, in_dim D, out_dim n_classes) trained by softmax cross-entropy.

typedef struct {
    int hidden;         // mlp width
    int n_blocks;       // residual blocks
    int batch;          // examples per step
    int steps;          // optimizer steps
    adamw_config_t opt; // optimizer (decay_steps = steps when 0)
    float noise;        // std of Gaussian noise added to training inputs (robustness)
    uint64_t seed;      // initialisation and batch order
} digits_clf_config_t;

digits_clf_config_t digits_clf_defaults(void);

// Trains a new classifier on `train` (progress lines to log every log_every steps when log is
// non-NULL). Returns the model (max_batch = max(batch, 256)).
mlp_t *digits_clf_train(const digits_t *train, const digits_clf_config_t *c, FILE *log,
                        int log_every);
// Predicted classes pred(N) of x(N, D), in chunks of the model's max_batch; returns nothing.
void digits_clf_predict(mlp_t *m, const float *x, int N, int *pred);
// Share of `set` classified correctly.
float digits_clf_accuracy(mlp_t *m, const digits_t *set);

#endif
