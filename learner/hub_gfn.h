// hub_gfn.h: the GFlowNet-specific parts of the hub (hub.h, kind KIND_GFLOW): what a
// HyperGrid WorkItem says, the checks on a GflowTrajectory, and the ScoreItem payload (the
// terminal state, one-hot per coordinate, shape [D, H], kind GFLOW). The hub's bookkeeping
// (groups, scoring, delivery) is the same as for text.
#ifndef RLX_HUB_GFN_H
#define RLX_HUB_GFN_H

#include <stdint.h>

#include "hub.h"
#include "rlx.pb-c.h"

// The text of the hub's one synthetic prompt ("hypergrid ndim=D height=H"), malloc'ed.
char *hub_gfn_prompt_text(const hub_config_t *c);
// Sets it->gflow to env, filled from c (env is the caller's storage; it must outlive it).
void hub_gfn_work(const hub_config_t *c, Rlx__WorkItem *it, Rlx__GflowEnv *env);
// Why t cannot be accepted (not a gflow trajectory, gfn_traj_check), or NULL.
const char *hub_gfn_check(const hub_config_t *c, const Rlx__Trajectory *t);
// Fills the ScoreItem of a checked t (id, scorer, kind, payload): *payload (malloc'ed, the
// caller frees) and shape (2 entries, the caller's storage) back item's payload fields.
// 0, or -1 out of memory.
int hub_gfn_item(const hub_config_t *c, const Rlx__Trajectory *t, const char *scorer,
                 Rlx__ScoreItem *item, float **payload, uint32_t *shape);

#endif
