// diffusion.h: DDPM training and a stochastic DDIM sampler with per-step log-probabilities,
// for reward fine-tuning of diffusion models (DDPO, DAG-style learners).
//
// Train steps t = 0..T-1 with abar_t = prod_{s<=t} (1 - beta_s) (all < 1). Noising:
//   x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps,   eps ~ N(0, I)
// The denoiser eps_theta(x_t, t, label) is an mlp with a time embedding (time_dim > 0) whose
// input is [x_t | onehot(label)] when class-conditioned: n_classes + 1 one-hot columns, the
// last one the null class (DIFF_NULL_LABEL) for unconditional use. MLE loss: mean over rows
// and dims of (eps_theta - eps)^2.
//
// Sampling runs S steps along ts[0] = T-1 > ts[1] > ... > ts[S] = 0 from x_{T-1} ~ N(0, I).
// A step t -> t_prev (stochastic DDIM, eta = 1 is DDPM's posterior variance):
//   x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)          (optionally clipped to [-1,1])
//   sigma  = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev)
//   mean   = sqrt(abar_prev) x0_hat + sqrt(max(1 - abar_prev - sigma^2, 0)) eps
//   x_prev = mean + sigma z
// The chain ends at train step 0 (abar_0 = 1 - beta_0, as diffusers' set_alpha_to_one=False
// in DDPO), so every step, the last one included, is stochastic and has a log-density:
//   log P_F(x_prev | x_t) = log N(x_prev; mean, sigma^2 I)
//   log P_B(x_t | x_prev) = log N(x_t; sqrt(alpha) x_prev, (1 - alpha) I), alpha = abar_t/abar_prev
// Both are the mean over dimensions by default (diff_sampler_t.logp_sum = 0), or the sum.
//
// Host pointers throughout (x, labels, log-probs); the net runs on the layers.h back end.
// A diff_t owns its scratch, sized for max_batch rows: nothing allocates after diff_new.
#ifndef RLX_DIFFUSION_H
#define RLX_DIFFUSION_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "adamw.h"
#include "ckpt.h"
#include "mlp.h"
#include "rng.h"

#define DIFF_NULL_LABEL (-1) // no class: the net sees the null one-hot column
#define DIFF_MAX_T 100000

// The cosine schedule drives abar_{T-1} to ~0 (betas capped at 0.999: 6e-8 at T = 200), so
// the first sampling step scales x_t and eps by sqrt(abar_prev / abar_{T-1}) (126 at T = 200,
// S = 50) and amplifies the net's error: use it with clip_x0 on data in [-1, 1] (digits);
// the linear schedule suits unbounded data (the toy).
enum { DIFF_SCHED_LINEAR = 0, DIFF_SCHED_COSINE = 1 };

typedef struct {
    int x_dim;        // data dimensions (D)
    int n_classes;    // conditioning classes (C); 0 = unconditional (no one-hot input)
    int T;            // train steps
    int schedule;     // DIFF_SCHED_LINEAR or DIFF_SCHED_COSINE
    float beta_start; // linear: beta_0
    float beta_end;   // linear: beta_{T-1}
    float cosine_s;   // cosine: offset s of Nichol & Dhariwal (betas capped at 0.999)
} diff_config_t;

typedef struct {
    float eta;      // DDIM stochasticity, > 0 (1 = DDPM); 0 makes the chain deterministic and
                    // the log-densities meaningless
    int clip_x0;    // clip x0_hat to [-1, 1] in the mean (no gradient through clipped dims)
    int logp_sum;   // 0: log-densities are means over dims; 1: sums
    float guidance; // classifier-free guidance w: eps = eps_c + w (eps_c - eps_null); 0 = off.
                    // With w != 0 and labels, each call runs 2N rows: needs max_batch >= 2N
} diff_sampler_t;

typedef struct {
    diff_config_t cfg; // schedule and data shape
    mlp_t *net;        // eps_theta; in_dim D + cond_dim, out_dim D (owned)
    int cond_dim;      // one-hot columns: n_classes + 1, or 0
    int max_batch;     // rows per call
    double *abar;      // (T) cumulative alpha products
    int *ts;           // (T + 1) scratch for sampling time steps
    float *in;         // (max_batch, D + cond_dim) net input rows
    float *tin;        // (max_batch) net time inputs
    int *trow;         // (max_batch) per-row times
    int *tprow;        // (max_batch) per-row previous times
    float *eps;        // (max_batch, D) host copy of the net's last output
    float *deps;       // (max_batch, D) gradient on the net's output (back-end memory)
    float *work;       // (max_batch, D) host scratch
    float *noise;      // (max_batch, D) host scratch for drawn noise
    float *x0;         // (max_batch, D) host scratch for x0 / x_t
    rng_t *rngs;       // (max_batch) per-row random streams of a chain
    int *t2;           // (max_batch) times of a guided (doubled) batch
    int *lab2;         // (max_batch) labels of a guided (doubled) batch
} diff_t;

// Linear schedule 1e-4..0.02, T 1000, unconditional, D 2.
diff_config_t diff_defaults(void);
// Sampler defaults: eta 1, no clipping, mean log-densities, no guidance.
diff_sampler_t diff_sampler_defaults(void);

// A model with net architecture from net_cfg's hidden, n_blocks and time_dim (> 0); its
// in_dim and out_dim are set from c. Dies with a hint on a bad config.
diff_t *diff_new(const diff_config_t *c, const mlp_config_t *net_cfg, int max_batch, uint64_t seed);
void diff_destroy(diff_t **self_p);

// Checkpoint: the mlp checkpoint with the diffusion config in its "extra" section (magic
// "RLXDIFF1"), optimizer state included. 0, or -1 with err.
int diff_save(const diff_t *d, const char *path, char *err, size_t errlen);
// The weights blob of d for actors: a diff_save checkpoint (diff_from_ckpt reads it) of the
// parameters without the AdamW moments, serialised in memory (ckpt_capture_begin/end).
// malloc'ed (the caller frees) with its length in *len, or NULL with err.
void *diff_weights_blob(const diff_t *d, size_t *len, char *err, size_t errlen);
diff_t *diff_load(const char *path, int max_batch, char *err, size_t errlen);
// The same from a checkpoint already read (e.g. weights received over the wire; path only
// names it in messages), and whether ck is a diffusion checkpoint at all.
diff_t *diff_from_ckpt(const ckpt_t *ck, const char *path, int max_batch, char *err, size_t errlen);
int diff_is_ckpt(const ckpt_t *ck);

// abar_t for t in [0, T).
double diff_abar(const diff_t *d, int t);
// Sampling time steps ts (S+1): ts[0] = T-1 > ... > ts[S] = 0, evenly spaced (rounded).
// Requires 1 <= S <= T-1.
void diff_timesteps(const diff_t *d, int S, int *ts);

// 1 if a recorded step t -> t_prev with this label is one the model can score (1 <= t < T,
// 0 <= t_prev < t, label a class or DIFF_NULL_LABEL), else 0. The functions below assert
// this; a learner checks transitions received from peers with it first.
int diff_valid_step(const diff_t *d, int t, int t_prev, int label);

// ---- the net --------------------------------------------------------------------------

// eps_theta(x_t, t, label) for N rows: x_t (N, D), t (N), labels (N) or NULL (= all null).
// Returns d->eps (N, D), valid until the next call.
const float *diff_eps(diff_t *d, const float *x_t, const int *t, const int *labels, int N);

// MLE (eps-prediction) loss at given t (N) and noise (N, D) for clean x0 (N, D); returns the
// loss. With backward != 0 also accumulates its gradient into d->net->ps.g.
float diff_loss(diff_t *d, const float *x0, const int *labels, const int *t, const float *noise,
                int N, int backward);

typedef struct {
    int batch;          // rows per step
    int steps;          // optimizer steps
    adamw_config_t opt; // optimizer; decay_steps = steps when 0
    float cond_drop;    // probability a label is replaced by the null class (CFG training)
    uint64_t seed;      // batch order, t and noise draws
    int log_every;      // progress line every this many steps (0 = none)
} diff_train_config_t;

diff_train_config_t diff_train_defaults(void);

// Trains on n examples x (n, D) with labels (n) (ignored when unconditional; may be NULL then)
// for c->steps steps, continuing from d->net->ps.step (the learning-rate schedule runs over
// the model's step count; decay_steps 0 = the end of this call). Progress lines to log.
// Returns the mean loss over the last 10% of steps.
float diff_train(diff_t *d, const float *x, const int *labels, int n, const diff_train_config_t *c,
                 FILE *log);

// ---- the math of one step, given eps ------------------------------------------------------

// x0_hat (N, D) from x_t (N, D) and eps (N, D) at per-row t (N); clipped to [-1,1] if clip.
void diff_x0_from_eps(const diff_t *d, float *x0_hat, const float *x_t, const float *eps,
                      const int *t, int N, int clip);
// Mean (N, D) and sigma (N) of P_F(. | x_t) at per-row t -> t_prev, given eps.
void diff_pf_mean(const diff_t *d, float *mean, float *sigma, const float *x_t, const float *eps,
                  const int *t, const int *t_prev, int N, const diff_sampler_t *s);
// log P_F(x_prev | x_t) (N) given eps.
void diff_logpf_from_eps(const diff_t *d, float *logpf, const float *x_t, const float *x_prev,
                         const float *eps, const int *t, const int *t_prev, int N,
                         const diff_sampler_t *s);
// log P_B(x_t | x_prev) (N) under the noising kernel; needs no net.
void diff_logpb(const diff_t *d, float *logpb, const float *x_t, const float *x_prev, const int *t,
                const int *t_prev, int N, int logp_sum);

// ---- sampling and the learner's recomputation -------------------------------------------

// eps the sampler uses at x_t (N, D): diff_eps, or its classifier-free-guided mix when
// s->guidance != 0 and labels are given. Returns d->eps (N, D), valid until the next call.
const float *diff_eps_guided(diff_t *d, const float *x_t, const int *t, const int *labels, int N,
                             const diff_sampler_t *s);

// x0_hat(x_t) under the net (the forward-looking estimate of the final sample), with the
// sampler's guidance and clipping: x0_hat (N, D).
void diff_predict_x0(diff_t *d, float *x0_hat, const float *x_t, const int *t, const int *labels,
                     int N, const diff_sampler_t *s);

// One sampling step for N rows, all at t -> t_prev: x_prev (N, D) (may not alias x_t), and
// logpf (N), logpb (N) when non-NULL. Row i draws its noise from rngs[i].
void diff_sample_step(diff_t *d, float *x_prev, float *logpf, float *logpb, const float *x_t, int t,
                      int t_prev, const int *labels, int N, const diff_sampler_t *s, rng_t *rngs);

// A whole chain of S steps for N rows (N <= max_batch, 2N if guided): row i uses random stream
// (seed, seq_id0 + i), so its chain does not depend on its batch. xs (S+1, N, D) receives
// x at ts[0..S] (xs[0] = x_{T-1} noise, xs[S] the sample); logpf and logpb (S, N) the
// log-probabilities of step k (ts[k] -> ts[k+1]); ts_out (S+1) the times; any may be NULL
// except xs. labels (N) or NULL.
void diff_sample(diff_t *d, float *xs, float *logpf, float *logpb, int *ts_out, const int *labels,
                 int N, int S, const diff_sampler_t *s, uint64_t seed, uint64_t seq_id0);

// Recomputes log P_F(x_prev | x_t) (N) of recorded transitions (per-row t, t_prev, labels)
// under the current net (with s's guidance, as sampled). With dlogpf (N) non-NULL also
// accumulates the gradient of sum_i dlogpf_i * logpf_i into d->net->ps.g (through eps_theta),
// e.g. dlogpf = -advantage / N for a policy-gradient loss. N <= max_batch (2N <= max_batch
// when guided): a learner chunks larger batches; gradients accumulate across calls.
void diff_logpf(diff_t *d, float *logpf, const float *x_t, const float *x_prev, const int *t,
                const int *t_prev, const int *labels, int N, const diff_sampler_t *s,
                const float *dlogpf);

#endif
