// rl.h: the policy-gradient objective of the text learner: REINFORCE with a leave-one-out
// baseline over the k samples of each prompt (optionally normalised per prompt), PPO-style
// clipped importance ratios against the behaviour log-probs, and an optional KL penalty to a
// frozen reference model. It writes dLoss/dlogp into the model; gpt_backward does the rest.
#ifndef RLX_RL_H
#define RLX_RL_H

#include <stdint.h>

#include "gpt.h"

typedef struct {
    float clip_eps;  // PPO clip: ratios outside [1-eps, 1+eps] stop pulling; <= 0 disables
    float kl_coef;   // weight of the KL(policy || reference) penalty; 0 = off
    int normalize;   // divide each prompt's advantages by its rewards' std (+1e-6)
} rl_config_t;

typedef struct {
    int prompt_len;      // tokens of the prompt (starts with BOS)
    int resp_len;        // tokens of the response (>= 1, the last may be EOS)
    const int *tokens;   // (prompt_len + resp_len) prompt then response
    const float *blogp;  // (resp_len) behaviour log-probs of the response tokens
    float reward;        // scalar reward of the response
    float advantage;     // set by rl_advantages
    uint64_t group;      // samples of one prompt share a group id
} rl_sample_t;

typedef struct {
    double loss;       // objective summed over the samples, divided by denom
    double kl;         // mean per-token k3 KL estimate (when kl_coef > 0)
    double clip_frac;  // share of tokens whose ratio was clipped
    double ratio_mean; // mean importance ratio pi/behaviour per token
    int tokens;        // response tokens in this shard
} rl_stats_t;

// Importance ratios pi/behaviour are computed in log space with a clamp: rho = exp(clamp(logp -
// blogp, -RL_LOG_RATIO_MAX, RL_LOG_RATIO_MAX)). A behaviour log-prob no sampler can produce
// (e.g. -1e30 from a forged trajectory) would otherwise overflow exp to inf and the loss, the
// gradient and then the weights to NaN. At 20 the ratio spans [2e-9, 4.9e8]: no sample of a
// policy a few versions old comes near it, and PPO's clip stops the gradient far inside.
// Outside the clamp the ratio is constant, so its gradient there is 0 (*clamped set).
#define RL_LOG_RATIO_MAX 20.0
double rl_ratio(double logp, double blogp, int *clamped);

// Leave-one-out advantages: A_i = r_i - mean of the other samples of i's group (0 for a group
// of one). With normalize, divided by the group's reward std + 1e-6.
void rl_advantages(rl_sample_t *s, int n, int normalize);

// Forward pass of samples [0, n) through m (n <= m->max_batch, each prompt+response within the
// context) and, with kl_coef > 0, through ref; then m->dlogp gets the gradient of
//   L = (1/denom) sum_i sum_t [ -min(rho A_i, clip(rho, 1-eps, 1+eps) A_i) + kl_coef * k3 ]
// with rho = rl_ratio(logp, blogp) per response token (0 gradient where clamped), k3 = exp(q) - q - 1, q = logp_ref - logp.
// denom is the number of samples in the global batch, so shards on several ranks add up to
// the global mean. tok and tgt are caller scratch of m->max_batch * ctx_len ints.
void rl_loss(gpt_t *m, gpt_t *ref, const rl_sample_t *s, int n, double denom,
             const rl_config_t *c, int *tok, int *tgt, rl_stats_t *st);

#endif
