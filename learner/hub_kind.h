// hub_kind.h: what the hub does differently per trajectory kind, as one ops table per kind
// (redis ConnectionType style): the rest of the hub calls s->ops->... and never asks which
// kind it serves. The kind is decided once, in hub_start, from hub_config_t.kind. A new kind
// is one file (hub_<kind>.c) with its table, and one entry in hub_kind_ops.
//   text       hub_text.c       prompts from the train file, token checks (text_traj.h),
//                               the response decoded to text for the scorer
//   GFlowNet   hub_gfn.c      one synthetic prompt, HyperGrid checks (gfn_traj.h), the
//                               terminal state one-hot as the scorer's payload
//   diffusion  hub_diffusion.c  a synthetic prompt per class, chain checks (diff_traj.h), the
//                               sample x_0 as the scorer's payload
#ifndef RLX_HUB_KIND_H
#define RLX_HUB_KIND_H

#include "hub_diffusion.h"
#include "hub_internal.h"
#include "kind.h"

// Storage a WorkItem's kind-specific fields point to while it is sent (the caller's stack).
typedef struct {
    uint32_t stop_tok;                     // text: the stop token
    Rlx__GflowEnv genv;                    // GFlowNet: WorkItem.gflow
    Rlx__DiffusionSpec dspec;              // diffusion: WorkItem.diffusion
    int32_t dlabels[HUB_DIFF_MAX_PROMPTS]; // diffusion: its class labels
    uint32_t dshape[4];                    // diffusion: its sample shape
} hub_work_scratch_t;

struct hub_kind_ops {
    kind_t kind; // which kind this table serves
    // Why c cannot serve this kind (NULL if it can); checked in hub_start.
    const char *(*config_check)(const hub_config_t *c);
    // Loads (text: from path) or synthesises the prompt table: s->prompts, n_prompts, order,
    // next_prompt. 0, or -1 with a message on stderr.
    int (*prompts)(hub_loop_t *s, const char *path);
    // Fills the kind's fields of WorkItem it (stop tokens, GflowEnv, DiffusionSpec, ...),
    // pointing into *scratch.
    void (*work_fill)(const hub_loop_t *s, Rlx__WorkItem *it, hub_work_scratch_t *scratch);
    // Why t, answering prompt index `prompt` (its work item, slot and version already
    // checked), cannot be accepted; NULL if it can.
    const char *(*traj_check)(const hub_loop_t *s, const Rlx__Trajectory *t, size_t prompt);
    // A new zeroed held trajectory for the checked t with its ScoreItem filled (strings and
    // payload point into t, the prompt table or memory the traj_t owns); NULL out of memory.
    traj_t *(*held_new)(const hub_loop_t *s, const Rlx__Trajectory *t, size_t prompt);
};

extern const hub_kind_ops_t hub_text_ops;      // hub_text.c
extern const hub_kind_ops_t hub_gfn_ops;       // hub_gfn.c
extern const hub_kind_ops_t hub_diffusion_ops; // hub_diffusion.c

// The table of kind k, or NULL if k is not a kind.
const hub_kind_ops_t *hub_kind_ops(kind_t k);

#endif
