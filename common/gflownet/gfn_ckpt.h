// gfn_ckpt.h: GFlowNet policies (gflownet.h) as rlx checkpoints (ckpt.h, kind CKPT_KIND_GFN):
// the learner's checkpoint (with AdamW state) and the weight blob it publishes to actors
// (parameters only), in one format.
//
// Header config: [0] env (1 = hypergrid) [1] D [2] H [3] hidden [4] n_blocks [5] uniform_pb
// [6] state_flow. Sections: "params", "adam_m", "adam_v", "adam_step" of the network (as
// paramset.h), "logz" (gfn_ckpt_logz_t) and an optional opaque "extra".
#ifndef RLX_GFN_CKPT_H
#define RLX_GFN_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "ckpt.h"
#include "gflownet.h"

#define GFN_CKPT_ENV_HYPERGRID 1

// The "logz" section.
typedef struct {
    float w, m, v; // log Z and its AdamW moments (m, v are 0 in a weights-only blob)
    float pad;     // 0
    int64_t step;  // log Z's optimizer steps
} gfn_ckpt_logz_t;

// The header config of p.
void gfn_ckpt_config(const gfn_policy_t *p, int32_t config[CKPT_CONFIG_LEN]);
// Writes p to path; with_opt 0 leaves out the optimizer state (the actors' blob). 0, or -1
// with err.
int gfn_ckpt_save(const gfn_policy_t *p, const char *path, int with_opt, const void *extra,
                  size_t extra_len, char *err, size_t errlen);
// The weights-only checkpoint's bytes (malloc'ed; the caller frees), serialised in memory
// (ckpt_capture_begin: the same bytes as the file); dir is unused (kept for callers). NULL
// with err.
void *gfn_ckpt_blob(const gfn_policy_t *p, const char *dir, size_t *len, char *err, size_t errlen);
// The grid and policy config a checkpoint describes. 0, or -1 (not a GFN checkpoint, bad
// config) with err.
int gfn_ckpt_describe(const ckpt_t *c, gfn_grid_t *g, gfn_policy_config_t *pc, char *err,
                      size_t errlen);
// A new policy (max_traj trajectories per call) holding the checkpoint's weights (and
// optimizer state when present). NULL with err.
gfn_policy_t *gfn_ckpt_policy(const ckpt_t *c, int max_traj, char *err, size_t errlen);
// Loads the weights (and optimizer state when present) into p, whose config must match.
// 0, or -1 with err (nothing changed).
int gfn_ckpt_load(gfn_policy_t *p, const ckpt_t *c, char *err, size_t errlen);

#endif
