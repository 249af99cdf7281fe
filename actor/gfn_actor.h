// gfn_actor.h: the actor's GFlowNet half (actor.h): installs a gflownet policy blob
// (gfn_ckpt.h: mlp + log Z) and samples the HyperGrid trajectories a WorkItem with
// WorkItem.gflow asks for (gfn_sample), as one TrajectoryBatch of GflowTrajectories
// (gfn_traj.h). A gflownet item is sampled whole between socket polls: at torchgfn's sizes
// a few thousand transitions take milliseconds.
#ifndef RLX_GFN_ACTOR_H
#define RLX_GFN_ACTOR_H

#include <stddef.h>
#include <stdint.h>

#include "ckpt.h"
#include "gflownet.h"
#include "rlx.pb-c.h"

// Trajectories per gfn_sample call of the actor's policy.
#define GFN_ACTOR_CHUNK 64

// Sampled trajectories of one item and the envelope that carries them.
typedef struct gfn_sampled gfn_sampled_t;

// Installs the checkpoint ck (kind CKPT_KIND_GFN) as *policy: loaded in place when the
// config matches, else a new policy replaces the old. 0, or -1 with err (nothing changed).
int gfn_actor_install(gfn_policy_t **policy, const ckpt_t *ck, char *err, size_t errlen);
// Samples it's prompts * samples_per_prompt trajectories with p (trajectory ids
// (actor_id, first_seq ..), policy_version version, sampling seed). NULL with *why when the
// item cannot be sampled (another environment than the policy's, too many trajectories).
// tick, if not NULL, is called after each chunk of the policy's max_traj trajectories, so
// that a long item can keep the session alive.
gfn_sampled_t *gfn_actor_sample(gfn_policy_t *p, const Rlx__WorkItem *it, uint32_t actor_id,
                                uint64_t first_seq, uint64_t version, uint64_t seed,
                                void (*tick)(void *), void *tick_arg, const char **why);
// The TrajectoryBatch envelope (valid until gfn_sampled_destroy), its trajectories and their
// transitions.
Rlx__Envelope *gfn_sampled_envelope(gfn_sampled_t *b);
int gfn_sampled_count(const gfn_sampled_t *b);
uint64_t gfn_sampled_transitions(const gfn_sampled_t *b);
void gfn_sampled_destroy(gfn_sampled_t **self_p);

#endif
