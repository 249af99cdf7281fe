// diffusion_actor.h: the actor's diffusion half (actor.h): installs a diffusion policy blob
// (a diff_save checkpoint: mlp kind with the RLXDIFF1 config, diffusion.h) and samples the
// denoising chains a WorkItem with WorkItem.diffusion asks for (diff_sample, stochastic DDIM
// with log P_F / log P_B per step), as one TrajectoryBatch of DiffusionTrajectories
// (diff_traj.h). An item is sampled whole between socket polls (small denoisers: a group of
// chains takes milliseconds to a fraction of a second); tick, if not NULL, is called between
// chunks of DIFF_ACTOR_CHUNK chains so that a long item can keep the session alive.
#ifndef RLX_DIFFUSION_ACTOR_H
#define RLX_DIFFUSION_ACTOR_H

#include <stddef.h>
#include <stdint.h>

#include "ckpt.h"
#include "diffusion.h"
#include "rlx.pb-c.h"

// Rows per diff_sample call of the actor's policy (half of it per call when guided).
#define DIFF_ACTOR_CHUNK 256

typedef struct diff_batch diff_batch_t;

// Installs the diffusion checkpoint ck as *policy (a new model replaces the old). 0, or -1
// with err (nothing changed).
int diff_actor_install(diff_t **policy, const ckpt_t *ck, char *err, size_t errlen);
// Samples prompts * samples_per_prompt chains with d (trajectory ids (actor_id, first_seq
// ..), policy_version version, sampling seed; chain i uses stream (seed, first_seq + i)).
// NULL with *why when the item cannot be sampled (shape/steps/labels do not fit the policy).
diff_batch_t *diff_actor_sample(diff_t *d, const Rlx__WorkItem *it, uint32_t actor_id,
                                uint64_t first_seq, uint64_t version, uint64_t seed,
                                void (*tick)(void *), void *tick_arg, const char **why);
// The TrajectoryBatch envelope (valid until diff_batch_destroy), its trajectories and the
// denoising steps over all of them.
Rlx__Envelope *diff_batch_envelope(diff_batch_t *b);
int diff_batch_count(const diff_batch_t *b);
uint64_t diff_batch_steps(const diff_batch_t *b);
void diff_batch_destroy(diff_batch_t **self_p);

#endif
