// diffusion_rl.h: reward fine-tuning objectives for the diffusion policy (common/diffusion/diffusion.h)
// on batches of received trajectories: DDPO (score function and PPO-clip importance sampling,
// per-prompt running reward normalisation) and two GFlowNet objectives on the diffusion DAG
// (Zhang et al. 2024): DAG (detailed balance with a forward-looking learned flow, gradients
// into denoiser and flow) and DAG-KL (the flow trained by detailed balance with P_F fixed, the
// denoiser by a REINFORCE/PPO gradient of the KL with per-transition rewards from the flows).
// Each loss writes its gradients into the nets' ps.g (accumulating); the caller zeroes them,
// all-reduces and steps the optimizers. See docs/diffusion.md.
//
// A trajectory of S steps runs through states x_{ts[0]} (noise, ts[0] = T-1) .. x_{ts[S]}
// (the sample x_0, ts[S] = 0); transition k is ts[k] -> ts[k+1]. Flows (DAG, DAG-KL):
//   log F(x_{ts[k]}) = logF~(x_{ts[k]}, ts[k] [, label]) + beta w_k r(x0_hat(x_{ts[k]}))  (k < S)
//   w_k = 1 (Zhang et al.), or abar_{ts[k]} with fl_abar: x0_hat of a noisy state extrapolates
//   by 1/sqrt(abar) and its reward can be far off; any function of the state is a valid
//   forward-looking term, this one fades where it is uninformative
//   log F(x_0)       = beta r(x_0)
//   delta_k = log F(x_{ts[k]}) + log P_F(k) - log P_B(k) - log F(x_{ts[k+1]})
// With mean log-densities (diff_sampler_t.logp_sum = 0) the balance is that of the summed
// densities with beta scaled by 1/D: choose beta for the convention sampled with.
#ifndef RLX_DIFFUSION_RL_H
#define RLX_DIFFUSION_RL_H

#include <stddef.h>
#include <stdint.h>

#include "diffusion.h"
#include "mlp.h"

typedef struct {
    int S;                // steps of the chain (1 <= S <= drl_t.max_steps)
    const int *ts;        // (S+1) train steps, ts[0] > ts[1] > ... > ts[S] = 0
    const float *xs;      // (S+1, D) states at ts[0..S]; xs[S] is the sample x_0
    const float *blogpf;  // (S) behaviour log P_F of transition k, as sampled
    const float *logpb;   // (S) log P_B(x_{ts[k]} | x_{ts[k+1]}) (needs no net)
    const float *r_x0hat; // (S) r(x0_hat(x_{ts[k]})) for k < S (forward-looking flow term);
                          // NULL = no forward-looking term for this trajectory
    float reward;         // r(x_0), the reward of the sample
    int label;            // class, or DIFF_NULL_LABEL
    uint64_t group;       // prompt id: samples of one prompt share it (baselines, stats)
    float advantage;      // DDPO: set by drl_ddpo_advantages
} drl_traj_t;

typedef struct {
    float clip_eps;     // PPO clip of exp(logpf - blogpf) to [1-eps, 1+eps]; <= 0: no clip
    float adv_clip;     // advantages clipped to [-adv_clip, adv_clip]; <= 0: no clip
    int ddpo_is;        // DDPO: 1 = PPO-clip importance sampling, 0 = score function
    int stat_buffer;    // DDPO: recent rewards kept per prompt
    int stat_min_count; // DDPO: below this many in the buffer, use the batch's mean/std
    int stat_max_keys;  // DDPO: prompts tracked (the least recently seen is evicted)
    float beta;         // DAG: log R(x) = beta r(x) after warm-up
    int beta_warmup;    // DAG: beta rises linearly over this many steps (0 = none)
    int flow_cond;      // DAG: the flow net sees the class one-hot (when the policy has classes)
    int fl_abar;        // DAG: weight the forward-looking term by abar_t (0 = the paper's 1)
} drl_config_t;

typedef struct {
    double loss;       // DDPO / DAG-KL: policy surrogate; DAG: detailed-balance loss
    double flow_loss;  // DAG, DAG-KL: detailed-balance loss (mean of delta^2 over denom)
    double delta_abs;  // DAG, DAG-KL: mean |delta| per transition
    double ratio_mean; // mean exp(logpf - blogpf) per transition
    double clip_frac;  // share of transitions whose PPO term was clipped
    double adv_abs;    // mean |advantage| per transition
    int transitions;   // transitions in this call
} drl_stats_t;

// Running per-prompt reward statistics (DDPO's PerPromptStatTracker): each prompt keeps its
// `buffer` most recent rewards; a sample's advantage is (r - mean) / (std + 1e-6) of its
// prompt's buffer after adding the batch's rewards, or of the whole batch while the buffer
// holds fewer than min_count (std: population, ddof 0).
typedef struct {
    int buffer;      // rewards kept per prompt
    int min_count;   // buffer fill needed to use the prompt's own statistics
    int max_keys;    // prompts tracked
    uint64_t *key;   // (max_keys) prompt ids
    int *used;       // (max_keys) 1 if the slot holds a prompt
    int64_t *seen;   // (max_keys) update counter when last seen (eviction order)
    int *count;      // (max_keys) rewards in the ring
    int *head;       // (max_keys) next ring slot
    float *ring;     // (max_keys, buffer) recent rewards
    int64_t updates; // drl_tracker_update calls so far
} drl_tracker_t;

typedef struct {
    drl_config_t cfg;       // objectives
    diff_sampler_t sampler; // how the trajectories were sampled (eta, clip, logp_sum, guidance)
    diff_t *diff;           // the policy (not owned)
    mlp_t *flow;            // logF~(x, t [, label]) -> 1 (owned); NULL when made without one
    int flow_cond_dim;      // one-hot columns of the flow input (0 = unconditional)
    drl_tracker_t *tracker; // DDPO reward statistics (owned)
    int max_traj;           // trajectories per call
    int max_steps;          // S per trajectory
    int chunk;              // denoiser rows per diff_logpf call
    int flow_chunk;         // flow rows per forward
    // scratch, all sized for max_traj * max_steps transitions (M):
    float *x_t;     // (M, D) source states
    float *x_prev;  // (M, D) target states
    int *t;         // (M) source times
    int *t_prev;    // (M) target times
    int *lab;       // (M) labels
    float *logpf;   // (M) current log P_F
    float *dlogpf;  // (M) gradient on log P_F
    float *adv;     // (M) per-transition advantages
    float *delta;   // (M) detailed-balance residuals
    float *blogpf;  // (M) behaviour log P_F, gathered
    float *logpb;   // (M) log P_B, gathered
    float *logF;    // (max_traj, max_steps + 1) log F per state
    float *dlogF;   // (max_traj, max_steps + 1) gradient on log F
    float *f_in;    // (flow_chunk, D + flow_cond_dim) flow input rows
    float *f_t;     // (flow_chunk) flow times
    float *f_out;   // (flow_chunk) flow outputs (host)
    float *f_dout;  // (flow_chunk) gradient on the flow output (back-end memory)
    float *rew;     // (max_traj) rewards
    uint64_t *keys; // (max_traj) prompt ids
} drl_t;

// Defaults: clip_eps 1e-4 (DDPO's), adv_clip 5, ddpo_is 1, stat_buffer 32, stat_min_count 16,
// stat_max_keys 1024, beta 1, beta_warmup 0, flow_cond 1, fl_abar 0.
drl_config_t drl_defaults(void);

drl_tracker_t *drl_tracker_new(int buffer, int min_count, int max_keys);
void drl_tracker_destroy(drl_tracker_t **self_p);
// Adds rewards (n) of prompts keys (n) and writes their advantages adv (n), unclipped.
// n >= 1.
void drl_tracker_update(drl_tracker_t *tr, const uint64_t *keys, const float *rewards, int n,
                        float *adv);

// A learner for policy d (not owned; its max_batch sets the chunking) on batches of up to
// max_traj trajectories of up to max_steps steps, sampled with s. flow_cfg (hidden, n_blocks,
// time_dim > 0; in/out dims are set here) makes the flow net for DAG and DAG-KL; NULL = none
// (DDPO only). Dies with a hint on a bad config.
drl_t *drl_new(diff_t *d, const diff_sampler_t *s, const drl_config_t *c,
               const mlp_config_t *flow_cfg, int max_traj, int max_steps, uint64_t seed);
void drl_destroy(drl_t **self_p);

// 0 if trajectory tr (received from a peer) fits this learner: S within max_steps, valid
// steps and label for the policy (diff_valid_step), ts[S] = 0, finite states, log-densities
// and rewards. Else -1 with the reason in err. The losses assert what this checks.
int drl_check_traj(const drl_t *r, const drl_traj_t *tr, char *err, size_t errlen);

// beta at learner step `step` (0-based): c->beta * min(1, (step + 1) / beta_warmup).
float drl_beta(const drl_config_t *c, int64_t step);

// ---- DDPO ---------------------------------------------------------------------------------

// Per-prompt normalised advantages of tr[0..n) from r->tracker (keys = group, rewards), clipped
// to [-adv_clip, adv_clip]; written to tr[i].advantage. Call once per batch of new samples
// (it updates the running buffers), before the PPO epochs.
void drl_ddpo_advantages(drl_t *r, drl_traj_t *tr, int n);

// DDPO over all S steps of tr[0..n) (n <= max_traj), gradients into r->diff->net->ps.g of
//   L = (1/denom) sum_i sum_k l_ik,  A = tr[i].advantage,
//   score function (ddpo_is 0): l = -A logpf_ik
//   importance (ddpo_is 1):     l = -min(rho A, clip(rho, 1-eps, 1+eps) A),
//                               rho = exp(logpf_ik - blogpf_ik)
// denom: transitions in the global batch (so shards on several ranks add up to the mean).
// All trajectories of one call of this and the losses below have the same S.
void drl_ddpo_loss(drl_t *r, const drl_traj_t *tr, int n, double denom, drl_stats_t *st);

// ---- DAG: detailed balance with a forward-looking flow ---------------------------------

// L = (1/denom) sum_i sum_k delta_ik^2 with the current log P_F; gradients into the denoiser
// (through log P_F) and the flow net (r->flow->ps.g). beta from drl_beta.
void drl_dag_loss(drl_t *r, const drl_traj_t *tr, int n, double denom, float beta, drl_stats_t *st);

// DAG-KL: the flow by the same loss with log P_F held fixed (gradient into the flow only), and
// the denoiser by a PPO-clipped REINFORCE gradient of the KL with the per-transition reward
//   b_ik = -delta_ik = log F(x_{ts[k+1]}) + log P_B - blogpf - log F(x_{ts[k]})   (no gradient)
// (the behaviour log P_F, so advantages are fixed over PPO epochs), leave-one-out baseline
// over the samples of the same group at the same step, divided by the batch's std at that
// step (+1e-6), clipped to adv_clip: st->loss is the policy surrogate
//   (1/denom) sum -min(rho A, clip(rho) A),   st->flow_loss the detailed-balance loss.
void drl_dagkl_loss(drl_t *r, const drl_traj_t *tr, int n, double denom, float beta,
                    drl_stats_t *st);

// DAG-KL of a batch sharded over ranks: the baseline and the std above are over the whole
// batch, so each rank computes the rewards b (n, S) of its shard with drl_kl_rewards (the
// flows' forward only, no denoiser), the ranks gather them (in batch order), every rank runs
// drl_kl_advantages over the whole batch and drl_dagkl_loss_adv on its shard with the shard's
// rows of those advantages adv (n, S). The sum of the shards' gradients is then the whole
// batch's drl_dagkl_loss gradient (to float rounding).
void drl_kl_rewards(drl_t *r, const drl_traj_t *tr, int n, float beta, float *b);
void drl_dagkl_loss_adv(drl_t *r, const drl_traj_t *tr, int n, double denom, float beta,
                        const float *adv, drl_stats_t *st);

// ---- the math, exposed for tests --------------------------------------------------------

// Detailed balance of n chains of S steps: logF (n, S+1) full log-flows (terminal included),
// logpf, logpb (n, S). Writes delta (n, S) and, when non-NULL, dlogF (n, S+1) and
// dlogpf (n, S), the gradients of L = (1/denom) sum delta^2 (written, not accumulated).
// Returns L.
double drl_db_math(int n, int S, const float *logF, const float *logpf, const float *logpb,
                   double denom, float *delta, float *dlogF, float *dlogpf);

// PPO-clip surrogate of M transitions: adv (M), logpf (M), blogpf (M); dlogpf (M) receives
// dL/dlogpf of L = (1/denom) sum -min(rho A, clip(rho) A) (clip_eps <= 0: -rho A).
// *clipped counts clipped terms and *ratio_sum sums rho (either may be NULL). Returns L.
double drl_ppo_math(int M, const float *adv, const float *logpf, const float *blogpf,
                    float clip_eps, double denom, float *dlogpf, int *clipped, double *ratio_sum);

// DAG-KL advantages: from rewards b (n, S) of chains with groups (n): leave-one-out baseline
// per group and step (0 for a group of one), divided by the std over the batch at each step
// (+1e-6), clipped to [-adv_clip, adv_clip] (<= 0: off). adv (n, S); work (n) scratch.
void drl_kl_advantages(int n, int S, const float *b, const uint64_t *groups, float adv_clip,
                       float *adv, float *work);

#endif
