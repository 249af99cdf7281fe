// hub_diffusion.h: the diffusion-specific parts of the hub (hub.h, kind KIND_DIFFUSION): the
// synthetic prompts (one per class when class-conditional, so classes are drawn uniformly by
// the hub's shuffled prompt order; one unconditional prompt otherwise), what a diffusion
// WorkItem says (WorkItem.diffusion), the checks on a DiffusionTrajectory (diff_traj.h) and
// the ScoreItem (payload = the sample x_0 with its shape, kind DIFFUSION, target = the
// prompt's class or the configured target).
// Bookkeeping (groups, scoring, delivery) is the hub's, as for text.
#ifndef RLX_HUB_DIFFUSION_H
#define RLX_HUB_DIFFUSION_H

#include <stdint.h>

#include "diffusion.h"
#include "hub.h"
#include "rlx.pb-c.h"

#define HUB_DIFF_MAX_PROMPTS 64 // prompts_per_item limit in diffusion mode

// Synthetic prompts: how many, and prompt i's text and target (malloc'ed; the caller frees).
int hub_diff_prompts(const hub_config_t *c);
char *hub_diff_prompt_text(const hub_config_t *c, int i);
char *hub_diff_prompt_target(const hub_config_t *c, int i);
// Sets it->diffusion to spec, filled from c, with labels (caller's storage of
// it->n_prompts <= HUB_DIFF_MAX_PROMPTS entries) the prompts' classes and shape (4 entries,
// caller's storage) the sample shape.
void hub_diff_work(const hub_config_t *c, Rlx__WorkItem *it, Rlx__DiffusionSpec *spec,
                   int32_t *labels, uint32_t *shape);
// Why t (for prompt index `prompt`) cannot be accepted, or NULL.
const char *hub_diff_check(const hub_config_t *c, const Rlx__Trajectory *t, uint64_t prompt);
// Fills the ScoreItem of a checked t: payload and payload_shape point into t (no copy; t
// outlives the item), target is the prompt's.
void hub_diff_item(const Rlx__Trajectory *t, const char *scorer, const char *target,
                   Rlx__ScoreItem *item);

#endif
