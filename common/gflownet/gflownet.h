// gflownet.h: GFlowNets on torchgfn's HyperGrid: the environment, a policy network (an mlp with
// forward, backward and state-flow heads, plus a learned log Z), on-policy trajectory sampling
// (the actor's half), the trajectory balance, detailed balance and sub-trajectory balance losses
// with hand-written gradients (the learner's half), and the exact terminal distribution of the
// sampler by dynamic programming over the grid's DAG (evaluation).
//
// A trajectory s_0 = 0 -> s_1 -> ... -> s_{T-1} = x -> stop has T transitions, the last one the
// stop action; it travels as flat arrays (gfn_batch_t): state indices, actions, the behaviour
// policy's log P_F and log P_B per transition, and log R(x). Everything the losses need is
// recomputed from states and actions with the current network, so an actor only has to ship
// those arrays; the behaviour log-probs serve as a staleness check.
#ifndef RLX_GFLOWNET_H
#define RLX_GFLOWNET_H

#include <stdint.h>

#include "adamw.h"
#include "mlp.h"
#include "paramset.h"
#include "rng.h"

// ---- HyperGrid -------------------------------------------------------------------------
// States s in {0..H-1}^D, start at 0. Actions 0..D-1 increment one coordinate (masked at
// H-1), action D stops (always allowed, so every state is terminal). With
// a_d = |s_d/(H-1) - 0.5|:
//   R(s) = R0 + R1 prod_d 1[0.25 < a_d] + R2 prod_d 1[0.3 < a_d < 0.4].
// A state is stored as its index sum_d s_d H^d; the parent s - e_d then has a smaller index,
// so ascending index order is a topological order of the DAG.
typedef struct {
    int ndim;   // D
    int height; // H
    double r0;  // base reward (0.1)
    double r1;  // outer-band bonus (0.5)
    double r2;  // mode bonus (2.0)
} gfn_grid_t;

// torchgfn's defaults: R0 0.1, R1 0.5, R2 2.0. Dies on D < 1, H < 2 or H^D >= 2^31.
gfn_grid_t gfn_grid(int ndim, int height);
int64_t gfn_grid_n_states(const gfn_grid_t *g);            // H^D
int gfn_grid_max_len(const gfn_grid_t *g);                 // D(H-1) + 1 transitions, stop included
int32_t gfn_grid_index(const gfn_grid_t *g, const int *s); // s (D) -> index
void gfn_grid_coords(const gfn_grid_t *g, int32_t idx, int *s); // index -> s (D)
double gfn_grid_reward(const gfn_grid_t *g, const int *s);
int gfn_grid_is_mode(const gfn_grid_t *g, const int *s); // R(s) = R0 + R1 + R2
// Policy input: one-hot of each coordinate, x (D*H) with x[d*H + s_d] = 1 (torchgfn's KHot).
void gfn_grid_encode(const gfn_grid_t *g, const int *s, float *x);

// ---- trajectories ------------------------------------------------------------------------
// A batch of up to max_traj trajectories, padded to max_len transitions each; entry [i, t]
// is at i * max_len + t and is meaningful for t < len[i].
typedef struct {
    int max_traj;     // capacity in trajectories
    int max_len;      // transitions per trajectory at most (gfn_grid_max_len)
    int n;            // trajectories held
    int *len;         // (max_traj) T_i, transitions including the stop, in [1, max_len]
    int32_t *states;  // (max_traj, max_len) index of s_t, the state transition t leaves
    int32_t *actions; // (max_traj, max_len) a_t: 0..D-1 increment coordinate a_t, D = stop
    float *logpf;     // (max_traj, max_len) behaviour log P_F(a_t | s_t)
    float *logpb;     // (max_traj, max_len) behaviour log P_B(s_t | s_t+1); 0 for the stop
    float *logr;      // (max_traj) log R(x), x = s_{T-1}
    float *arena;     // the one allocation
} gfn_batch_t;

gfn_batch_t *gfn_batch_new(const gfn_grid_t *g, int max_traj);
void gfn_batch_destroy(gfn_batch_t **self_p);
// Validate a batch received from a peer: start state, lengths, actions legal, each state the
// previous plus the action's unit step, the stop last and only last, log R finite. 0 if
// valid, else -1 with the first problem in err.
int gfn_batch_check(const gfn_grid_t *g, const gfn_batch_t *b, char *err, size_t errlen);

// ---- policy ------------------------------------------------------------------------------
typedef struct {
    int hidden;      // mlp width (256 as torchgfn)
    int n_blocks;    // mlp residual blocks (1 ~ torchgfn's 2 hidden layers)
    int uniform_pb;  // 1: P_B uniform over the parents, no backward head
    int state_flow;  // 1: a log F(s) output (needed by DB and SubTB)
    float logz_init; // initial log Z (torchgfn: 0)
    float out_gain;  // initial gain of the trunk's final LayerNorm (mlp lnf_w); see below
} gfn_policy_config_t;

// Defaults: hidden 256, 1 block, learned P_B, state flow on, log Z 0, out_gain 0.1.
// out_gain: the mlp feeds the heads LayerNorm-ed features of unit scale, so Adam at lr 1e-3
// moves every logit by ~0.2 per step (torchgfn's ReLU MLP feeds ~0.1-scale features: ~10x
// slower); with gain 1, on-policy TB collapses onto one mode within ~60 steps on some seeds,
// before log Z has caught up. A small gain starts near uniform and slows those first steps.
gfn_policy_config_t gfn_policy_defaults(void);

// Network output columns of one state: [0, D] forward logits (D+1), then D backward logits
// when P_B is learned (column off_pb + d: undo coordinate d), then log F(s) (column off_logf).
typedef struct gfn_policy {
    gfn_grid_t env;          // the environment
    gfn_policy_config_t cfg; // architecture
    int max_traj;            // trajectories per sampling call / loss batch
    int max_len;             // gfn_grid_max_len(env)
    int max_rows;            // max_traj * max_len: network rows of a loss batch
    int n_out;               // network outputs per state
    int off_pb;              // first backward-logit column, -1 with uniform P_B
    int off_logf;            // log F column, -1 without a state flow
    mlp_t *net;              // P_F, P_B and log F heads on one trunk
    paramset_t logz;         // the scalar log Z: w, g, m, v of 1 float each (own lr)
    float logz_buf[4];       // its storage
    float *x;                // (max_rows, D*H) encoded states of the last forward
    float *dout;             // (max_rows, n_out) loss gradient on the outputs
    double *scratch;         // (6 * (max_len + 1)) per-trajectory work of the losses
    int *coords;             // (max_traj, D) sampler: current states
    int *active;             // (max_traj) sampler: trajectories still running
    float *arena;            // the one host allocation
} gfn_policy_t;

gfn_policy_t *gfn_policy_new(const gfn_grid_t *g, const gfn_policy_config_t *cfg, int max_traj,
                             uint64_t seed);
void gfn_policy_destroy(gfn_policy_t **self_p);

// log P_F over actions (D+1) and log P_B over backward actions (D) of the state s from one
// output row (n_out): masked log-softmax (-inf where masked); uniform P_B when cfg.uniform_pb.
// log P_B is all -inf at s_0. Either output may be NULL.
void gfn_policy_logprobs(const gfn_policy_t *p, const float *out_row, const int *s, double *logpf,
                         double *logpb);

// Sample n <= max_traj trajectories from s_0 with P_F, each action drawn from the mixture
// (1-epsilon) P_F + epsilon uniform over the legal actions (epsilon 0: on-policy). Fills b
// (b->n = n) with the sampling log-probs and log R. Runs the network on the running
// trajectories once per step. Needs b->max_len == p->max_len.
void gfn_sample(gfn_policy_t *p, gfn_batch_t *b, int n, float epsilon, rng_t *rng);

// ---- losses --------------------------------------------------------------------------------
typedef enum {
    GFN_LOSS_TB,    // mean_i (log Z + sum log P_F - log R - sum log P_B)^2
    GFN_LOSS_DB,    // mean over transitions of (log F(s) + log P_F - log F(s') - log P_B)^2,
                    // and for the stop from x: (log F(x) + log P_F(stop|x) - log R(x))^2
    GFN_LOSS_SUBTB, // every sub-trajectory's balance residual squared, weighted lambda^(len-1)
                    // and normalised within each trajectory (torchgfn "geometric_within"),
                    // then averaged over trajectories
} gfn_loss_kind_t;

typedef struct {
    gfn_loss_kind_t kind; // which objective
    float lambda;         // SubTB length discount (torchgfn: 0.9)
} gfn_loss_config_t;

typedef struct {
    double loss;      // the objective
    double logz;      // current log Z
    double mean_logr; // mean log R over the batch
    double mean_len;  // mean transitions per trajectory
    double max_stale; // max |log P_F now - behaviour log P_F| over the batch's transitions
} gfn_stats_t;

// The objective as a function of the network outputs out (rows, n_out) (row r = state s_t of
// trajectory i, trajectories' states packed in order, rows = sum_i len[i]) and log Z; writes
// dout (rows, n_out) = d loss / d out and *dlogz. Computed in double. The learner's core and
// the finite-difference target of the tests.
double gfn_loss_outputs(const gfn_policy_t *p, const gfn_batch_t *b, const gfn_loss_config_t *c,
                        const float *out, float logz, float *dout, float *dlogz, gfn_stats_t *st);
// Network forward over the batch's states, gfn_loss_outputs, network backward: ACCUMULATES
// into p->net->ps.g and p->logz.g. Returns the loss. b must pass gfn_batch_check.
double gfn_loss(gfn_policy_t *p, const gfn_batch_t *b, const gfn_loss_config_t *c, gfn_stats_t *st);
// One optimizer step on a batch: zero both gradients, gfn_loss, AdamW on the network
// (opt_net) and on log Z (opt_logz, its own lr). Returns the loss.
double gfn_train_step(gfn_policy_t *p, const gfn_batch_t *b, const gfn_loss_config_t *c,
                      const adamw_config_t *opt_net, const adamw_config_t *opt_logz,
                      gfn_stats_t *st);

// ---- exact evaluation --------------------------------------------------------------------
// The sampler's terminal distribution p(x) = P(reach x) P_F(stop | x), P(reach) pushed through
// the DAG in index order with P_F from the network at every state (on-policy, epsilon 0), and
// its distance to the target R(x)/Z. Sized for grids whose H^D states fit in memory.
typedef struct {
    gfn_grid_t env;    // the environment
    int64_t n_states;  // H^D
    double logz_true;  // log sum_x R(x)
    int n_modes;       // states with R = R0 + R1 + R2 (2^D for H = 8)
    double *target;    // (n_states) R(x) / Z
    double *pmf;       // (n_states) p(x) of the last gfn_evaluate
    double *reach;     // (n_states) P(the sampler passes through s)
    double *pf;        // (n_states, D+1) P_F(a | s)
    uint8_t *is_mode;  // (n_states)
    uint8_t *visited;  // (n_states) terminal states seen by gfn_evaluator_observe
    int modes_visited; // distinct modes among them
} gfn_evaluator_t;

typedef struct {
    double l1;         // sum_x |p(x) - R(x)/Z|
    double l1_mean;    // l1 / n_states: torchgfn's "l1_dist" (mean over states)
    double logz_err;   // |log Z learned - log Z true| (the TB scalar)
    double logf0_err;  // |log F(s_0) - log Z true| (DB/SubTB's estimate); NAN without a flow head
    double mode_mass;  // p(modes)
    int modes_high;    // modes with p(x) >= R(x)/(2Z)
    int modes_visited; // distinct modes sampled so far (gfn_evaluator_observe)
} gfn_eval_t;

gfn_evaluator_t *gfn_evaluator_new(const gfn_grid_t *g);
void gfn_evaluator_destroy(gfn_evaluator_t **self_p);
// Exact distribution of p's sampler into ev->pmf and the metrics. Runs the network in chunks
// of p->max_rows states: do not call between a forward and its backward.
void gfn_evaluate(gfn_evaluator_t *ev, gfn_policy_t *p, gfn_eval_t *out);
// Record the terminal states of a batch (mode discovery).
void gfn_evaluator_observe(gfn_evaluator_t *ev, const gfn_batch_t *b);
// p(x) from a table of P_F, pf (n_states, D+1) rows summing to 1 over the legal actions,
// into pmf (n_states) using reach (n_states) as work: the DP alone, for tests.
void gfn_exact_pmf(const gfn_grid_t *g, const double *pf, double *reach, double *pmf);

#endif
