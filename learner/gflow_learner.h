// gflow_learner.h: the learner in GFlowNet mode (learner_config_t.gflow_env set): every rank
// holds the same HyperGrid policy (gflownet.h: mlp + log Z); rank 0 runs the hub in GFlowNet
// mode (actors sample trajectories with the published policy, reward workers score the
// terminal states with "hypergrid"), takes batches of scored trajectories (learner_common.h),
// drops those older than max_lag versions and broadcasts the batch; each rank computes the
// TB / DB / SubTB loss on its shard, the network and log Z gradients are summed by two
// in-place all-reduces, and every rank steps AdamW (lr for the net, logz_lr for log Z) in
// lockstep. Rank 0 publishes weights (gfn_ckpt.h blob), computes the exact L1 of the learned
// sampler every eval_every steps (gfn_evaluate), writes metrics (JSON lines) and checkpoints.
#ifndef RLX_GFLOW_LEARNER_H
#define RLX_GFLOW_LEARNER_H

#include "learner.h"

// Runs on this rank (after MPI_Init); returns the process exit code.
int gflow_learner_run(const learner_config_t *c);

#endif
