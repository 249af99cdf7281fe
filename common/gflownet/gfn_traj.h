// gfn_traj.h: HyperGrid GFlowNet trajectories between the wire (proto GflowTrajectory, see
// proto/rlx.proto) and the core's flat batches (gflownet.h gfn_batch_t). The actor fills the
// proto from a sampled batch, the hub checks what arrives and builds the scorer's payload,
// the learner appends checked trajectories to its training batch.
//
// Wire form of a trajectory with T transitions (stop last): length T, state_dim D, states
// s_0 .. s_{T-1}, x (T+1 states of D coordinates as floats; x = s_{T-1}, the stop keeps the
// coordinates), actions a_0 .. a_{T-1} (a_{T-1} = D), logpf T floats, logpb T floats (0 for
// the stop) or none. Payload for scoring: x one-hot per coordinate, shape [D, H].
#ifndef RLX_GFN_TRAJ_H
#define RLX_GFN_TRAJ_H

#include <stddef.h>
#include <stdint.h>

#include "gflownet.h"
#include "rlx.pb-c.h"

// Why x cannot be a trajectory of grid g (state_dim, lengths, coordinates in range and
// integral, start at 0, every step the action's unit step, stop last and only last, legal
// actions, log-probs in [WIRE_LOGPROB_MIN, 0]), or NULL if it can.
const char *gfn_traj_check(const gfn_grid_t *g, const Rlx__GflowTrajectory *x);
// Fills x with trajectory i of b, using states (>= (max_len + 1) * D floats) and actions
// (>= max_len) as its storage; logpf/logpb point into b.
void gfn_traj_from_batch(const gfn_grid_t *g, const gfn_batch_t *b, int i, Rlx__GflowTrajectory *x,
                         float *states, uint32_t *actions);
// Appends a checked x with log R = logr to b (b->n < b->max_traj).
void gfn_traj_append(const gfn_grid_t *g, const Rlx__GflowTrajectory *x, float logr,
                     gfn_batch_t *b);
// The scoring payload of a checked x: payload (D * H) = one-hot of the terminal state.
void gfn_traj_payload(const gfn_grid_t *g, const Rlx__GflowTrajectory *x, float *payload);

#endif
