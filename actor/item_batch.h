// item_batch.h: the kind-independent half of the TrajectoryBatch an actor sends for one work
// item: n = prompts * k trajectories, sample i answering prompt i / k as slot i % k of its
// group, with ids (actor_id, first_seq + i), the item's work_id and one policy version. The
// text, GFlowNet and diffusion samplers fill only their kind's body (Trajectory.kind_case and
// .text / .gflow / .diffusion) and, where it differs per sample, policy_version.
#ifndef RLX_ITEM_BATCH_H
#define RLX_ITEM_BATCH_H

#include <stdint.h>

#include "rlx.pb-c.h"

typedef struct {
    int n;                   // trajectories
    Rlx__TrajectoryId *ids;  // (n)
    Rlx__Trajectory *tr;     // (n) headers filled, body left to the caller
    Rlx__Trajectory **trp;   // (n) pointers into tr, as the batch holds them
    Rlx__TrajectoryBatch tb; // the batch (work_id set)
    Rlx__Envelope env;       // its envelope, ready to send once the bodies are in
} item_batch_t;

// Allocates and fills b for item it with k samples per prompt. 0, or -1 when out of memory
// (b is then empty; item_batch_free is still safe).
int item_batch_init(item_batch_t *b, const Rlx__WorkItem *it, int k, uint32_t actor_id,
                    uint64_t first_seq, uint64_t version);
void item_batch_free(item_batch_t *b);

#endif
