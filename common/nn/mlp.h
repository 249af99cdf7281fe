// mlp.h: a residual MLP with an optional sinusoidal time-embedding input. It serves as the
// diffusion denoiser eps(x_t, t) and as a scalar flow/value head.
//
//   in   = [x | timeemb(t)]                       (N, in_dim + time_dim)
//   h_0  = in @ w_in^T + b_in                     (N, H)
//   h_k+1 = h_k + w2_k silu(w1_k LN_k(h_k) + b1_k) + b2_k     for k < n_blocks
//   out  = LN_f(h_K) @ w_out^T + b_out            (N, out_dim)
#ifndef RLX_MLP_H
#define RLX_MLP_H

#include "ckpt.h"
#include "paramset.h"

typedef struct {
    int in_dim;   // input features (D)
    int hidden;   // width (H)
    int n_blocks; // residual blocks (K)
    int out_dim;  // outputs (O)
    int time_dim; // sinusoidal time features appended to the input; 0 = no time input
} mlp_config_t;

// Parameter tensors, in arena order (the order of MLP_PARAM_NAMES).
typedef struct {
    float *w_in;  // (H, D + time_dim)
    float *b_in;  // (H)
    float *ln_w;  // (K, H)
    float *ln_b;  // (K, H)
    float *w1;    // (K, H, H)
    float *b1;    // (K, H)
    float *w2;    // (K, H, H)
    float *b2;    // (K, H)
    float *lnf_w; // (H)
    float *lnf_b; // (H)
    float *w_out; // (O, H)
    float *b_out; // (O)
} mlp_params_t;

#define MLP_NUM_PARAM_TENSORS 12
#define MLP_NUM_ACTS 12
extern const char *const MLP_PARAM_NAMES[MLP_NUM_PARAM_TENSORS];

typedef struct {
    float *temb;    // (N, time_dim) time features
    float *in;      // (N, D + time_dim) input with time features
    float *h;       // (K+1, N, H) residual stream before each block, and after the last
    float *ln;      // (K, N, H)
    float *ln_mean; // (K, N)
    float *ln_rstd; // (K, N)
    float *a;       // (K, N, H) pre-activation
    float *s;       // (K, N, H) silu(a)
    float *lnf;     // (N, H)
    float *lnf_mean; // (N)
    float *lnf_rstd; // (N)
    float *out;     // (N, O)
} mlp_acts_t;

typedef struct mlp {
    mlp_config_t cfg;  // architecture
    int max_batch;     // activation capacity in rows
    paramset_t ps;     // parameters, gradients, AdamW state (contiguous)
    mlp_params_t w;    // views into ps.w
    mlp_params_t g;    // views into ps.g
    mlp_acts_t a;      // activations of the last forward
    mlp_acts_t da;     // activation gradients
    float *t;          // (N) times of the last forward
    float *dx;         // (N, D) gradient on x, written by mlp_backward
    float *dt;         // (N) gradient on t, written by mlp_backward
    int N;             // rows of the last forward
    float *arena;      // the one allocation
    size_t arena_floats;
} mlp_t;

mlp_t *mlp_new(const mlp_config_t *cfg, int max_batch, uint64_t seed);
void mlp_destroy(mlp_t **self_p);

// Forward over x(N, D) and t(N) (t ignored when time_dim == 0); result in m->a.out (N, O).
void mlp_forward(mlp_t *m, const float *x, const float *t, int N);
// Backward from dout(N, O) through the last forward: accumulates into m->ps.g and writes
// m->dx (N, D) and m->dt (N).
void mlp_backward(mlp_t *m, const float *dout);

int mlp_save(const mlp_t *m, const char *path, const void *extra, size_t extra_len, char *err,
             size_t errlen);
mlp_t *mlp_from_ckpt(const ckpt_t *c, int max_batch, char *err, size_t errlen);
mlp_t *mlp_load(const char *path, int max_batch, char *err, size_t errlen);

#endif
