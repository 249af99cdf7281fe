// diffusion_learner.h: the learner in diffusion mode (learner_config_t.diff_env set): reward
// fine-tuning of a pretrained DDPM (rlx-ddpm checkpoint, --init) through the whole system.
// Every rank holds the same denoiser (and, for DAG / DAG-KL, the same flow net); rank 0 runs
// the hub in diffusion mode (actors sample groups of k denoising chains per prompt with the
// published weights, reward workers score the samples x_0 with an image scorer), takes
// batches of scored chains (learner_common.h), drops those older than max_lag versions and
// broadcasts the batch; each rank computes the DDPO / DAG / DAG-KL loss (diffusion_rl.h) on
// its shard, the denoiser and flow gradients are summed by in-place all-reduces, and every
// rank steps AdamW in lockstep. Rank 0 publishes weights (the diff_save blob), writes metrics
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
#ifndef RLX_DIFFUSION_LEARNER_H
#define RLX_DIFFUSION_LEARNER_H

#include "learner.h"

// Runs on this rank (after MPI_Init); returns the process exit code.
int diffusion_learner_run(const learner_config_t *c);

#endif
