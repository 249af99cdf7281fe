// diffusion_learner.h: the learner in diffusion mode (learner_config_t.diff_env set): reward
// fine-tuning of a pretrained DDPM (rlx-ddpm checkpoint, --init) through the whole system.
// Every rank holds the same denoiser (and, for DAG / DAG-KL, the same flow net); rank 0 runs
// the hub in diffusion mode (actors sample groups of k denoising chains per prompt with the
// published weights, reward workers score the samples x_0 with an image scorer), takes
// batches of scored chains (learner_common.h), drops those older than max_lag versions and
// broadcasts the batch; each rank computes the DDPO / DAG / DAG-KL loss (diffusion_rl.h) on
// its shard, the denoiser and flow gradients are summed by in-place all-reduces, and every
// rank steps AdamW in lockstep. Rank 0 publishes weights, writes metrics
// (JSON lines: reward, diversity, class coverage under --classifier) and checkpoints.
//
// The forward-looking flow term r(x0_hat(x_t)) of DAG / DAG-KL is computed here, not by the
// reward workers: each rank predicts x0_hat of its shard's states with the current denoiser
// (no gradient) and scores them with a local image scorer (--fl-scorer, default the run's
// scorer when it is an image scorer). Any function of the state is a valid forward-looking
// term (diffusion_rl.h), so a local scorer that differs from the remote one changes only the
// flow's parametrisation, never the objective's fixed point; it costs no extra traffic (S
// more payloads per chain through hub and reward workers otherwise). Without a local scorer
// the flow has no forward-looking term.
//
// DAG-KL's advantages (leave-one-out baseline per group and step, divided by the std at each
// step) are over the whole batch whatever the number of ranks: each rank computes the
// per-transition rewards of its shard (drl_kl_rewards: flows only), an all-gather gives every
// rank all of them, and every rank computes the whole batch's advantages and uses its shard's
// rows (drl_dagkl_loss_adv); -np N equals -np 1 to float rounding (test_diff_traj). DDPO's
// advantages are computed over the whole batch on every rank too (same tracker state).
//
// Weights published to actors (hub_diff_weights) are the denoiser's parameters without the
// AdamW moments. Checkpoints (every --ckpt-every steps and at the end, SIGINT/SIGTERM
// included) in OUT: learner.ckpt, the denoiser with its AdamW state (a diff_save checkpoint:
// rlx-ddpm and actors read it); flow.ckpt, the flow net with its AdamW state (DAG, DAG-KL);
// learner_state.ckpt, the counters (with the hub's run-long counters, as the text learner's)
// and both optimizer steps, written last. --resume with OUT/learner.ckpt present reloads all
// three (refusing files whose optimizer steps disagree) and continues at the checkpoint's step:
// metrics are appended, weights are published as version step+1, sampled = trained + dropped
// holds over all runs, the hub gets a seed of its own (work ids start again). Not restored:
// DDPO's per-prompt reward buffers (they refill; the batch statistics stand in until then).
#ifndef RLX_DIFFUSION_LEARNER_H
#define RLX_DIFFUSION_LEARNER_H

#include "learner.h"

// Runs on this rank (after MPI_Init); returns the process exit code.
int diffusion_learner_run(const learner_config_t *c);

#endif
