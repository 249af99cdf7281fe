// objective_diffusion.h: reward fine-tuning of a pretrained DDPM (rlx-ddpm checkpoint, --init)
// behind objective.h (objective_diffusion.c: DDPO / DAG / DAG-KL, diffusion_rl.h), and its
// files (objective_diffusion_state.c).
//
// Every rank holds the same denoiser (and, for DAG / DAG-KL, the same flow net); rank 0's hub
// runs in diffusion mode (actors sample groups of k denoising chains per prompt with the
// published weights, reward workers score the samples x_0 with an image scorer); each rank
// computes the loss of its shard, the denoiser and flow gradients are summed by in-place
// all-reduces, and every rank steps AdamW in lockstep. Metrics: reward, diversity, class
// coverage under --classifier.
//
// The forward-looking flow term r(x0_hat(x_t)) of DAG / DAG-KL is computed here, not by the
// reward workers: each rank predicts x0_hat of its shard's states with the current denoiser
// (no gradient) and scores them with a local image scorer (--fl-scorer, default the run's
// scorer when it is an image scorer). Any function of the state is a valid forward-looking
// term (diffusion_rl.h), so a local scorer that differs from the remote one changes only the
// flow's parametrisation, never the objective's fixed point. Without a local scorer the flow
// has no forward-looking term.
//
// DAG-KL's advantages (leave-one-out baseline per group and step, divided by the std at each
// step) are over the whole batch whatever the number of ranks: each rank computes the
// per-transition rewards of its shard (drl_kl_rewards), an all-gather gives every rank all of
// them, and every rank uses its shard's rows (drl_dagkl_loss_adv); -np N equals -np 1 to float
// rounding (test_diff_traj). DDPO's advantages are computed over the whole batch on every rank.
//
// Weights published to actors (diffusion.h diff_weights_blob) are the denoiser's parameters without the
// AdamW moments. Checkpoints in OUT: learner.ckpt, the denoiser with its AdamW state (a
// diff_save checkpoint: rlx-ddpm and actors read it); flow.ckpt, the flow net with its AdamW
// state (DAG, DAG-KL); learner_state.ckpt, the counters and both optimizer steps, written
// last. --resume with OUT/learner.ckpt present reloads all three (refusing files whose
// optimizer steps disagree) and continues at the checkpoint's step; the hub gets a seed of its
// own (work ids start again). Not restored: DDPO's per-prompt reward buffers (they refill).
#ifndef RLX_OBJECTIVE_DIFFUSION_H
#define RLX_OBJECTIVE_DIFFUSION_H

#include <stddef.h>

#include "diffusion.h"
#include "diffusion_rl.h"
#include "learner_common.h"

// The checkpoint triple in dir (cnt->hub_prev: the hub's totals now). 0, or -1 (printed).
int diffobj_save(const diff_t *d, const drl_t *r, const char *dir, const learner_counts_t *cnt);
// Rank 0, --resume with DIR/learner.ckpt present: the denoiser, flow and counters. 0, or -1
// with err (d and r may then be partly loaded: the run stops).
int diffobj_resume(diff_t *d, drl_t *r, const char *dir, learner_counts_t *cnt, char *err,
                   size_t errlen);
// Rank 0's parameters and AdamW state of net to every rank.
void diffobj_bcast_net(mlp_t *net);

#endif
