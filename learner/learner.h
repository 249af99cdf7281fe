// learner.h: the learner, one MPI job. Every rank holds the same model; rank 0 also runs the
// hub (hub.h), takes batches of scored trajectories from it (or from a trajectory log with
// --replay), drops samples older than max_lag policy versions, and broadcasts the batch. Each
// rank computes the objective's loss on its shard, the gradients are summed with in-place
// MPI_Allreduce calls, and every rank steps AdamW identically; a step whose loss or gradient
// norm is not finite is skipped on every rank. Rank 0 publishes new (finite) weights to the
// actors every publish_every steps, evaluates, writes metrics (JSON lines, json-c) and
// checkpoints (every ckpt_every steps and on SIGINT/SIGTERM). What is trained is the
// objective (objective.h), picked once from `kind` and `objective`: text by reward
// (objective_rl.c) or by trajectory balance (objective_text_tb.c, text_gfn.h), a HyperGrid
// GFlowNet (objective_gfn.c) or a diffusion model by reward (objective_diffusion.h).
#ifndef RLX_LEARNER_H
#define RLX_LEARNER_H

#include <stdint.h>

#include "adamw.h"
#include "diffusion_rl.h"
#include "hub.h"
#include "kind.h"
#include "rl.h"

typedef struct {
    const char *init;         // pretrained gpt checkpoint (required unless resuming)
    const char *out;          // run directory: learner.ckpt, metrics.jsonl by default
    const char *metrics;      // metrics JSON-lines path (default OUT/metrics.jsonl)
    const char *replay;       // train from this trajectory log instead of live actors
    int resume;               // continue from OUT/learner.ckpt if it exists
    hub_config_t hub;         // the hub (bind, prompts, sampling, limits)
    const char *eval_prompts; // held-out prompts (TSV prompt<TAB>target); NULL = no eval
    const char *eval_scorer;  // built-in scorer for evaluation ("exact")
    int eval_n;               // held-out prompts per evaluation
    int eval_every;           // evaluate every this many steps (and at start and end)
    int batch;                // trajectories per step (global, over all ranks)
    int max_lag;              // drop samples more than this many versions old (-1 = never)
    rl_config_t rl;           // objective
    adamw_config_t opt;       // optimizer
    int64_t steps;            // stop after this many steps
    int64_t max_samples;      // ... or after consuming this many trajectories (0 = no limit)
    int publish_every;        // new weights to actors every this many steps
    int ckpt_every;           // checkpoint every this many steps (0 = only at the end)
    int threads;              // compute threads per rank
    uint64_t seed;            // evaluation sampling seed
    double take_timeout_s;    // give up waiting for trajectories after this long with none
    kind_t kind;              // what is trained: KIND_TEXT, KIND_GFLOW (--env hypergrid) or
                              // KIND_DIFFUSION (--env diffusion)
    const char *objective;    // --objective (NULL: the kind's default): objective_pick
    // GFlowNet mode (objective_gfn.c): the text options above that concern the model,
    // prompts and objective are then unused.
    int gfn_objective; // gfn_loss_kind_t: GFN_LOSS_TB, _DB, _SUBTB
    float gfn_lambda;  // SubTB length discount
    float logz_lr;     // log Z's AdamW learning rate (the net uses opt.lr); also text TB's
    int gfn_hidden;    // policy mlp width
    int gfn_blocks;    // policy mlp residual blocks
    // Diffusion mode (objective_diffusion.h): --init is a diffusion checkpoint (rlx-ddpm), the
    // hub's diff_* fields say how actors sample (shape, classes and steps are completed from
    // the checkpoint when left 0).
    int diff_objective;     // DIFF_OBJ_DDPO, _DAG, _DAGKL
    drl_config_t drl;       // objective settings (diffusion_rl.h)
    int flow_hidden;        // DAG / DAG-KL flow mlp width
    int flow_blocks;        // its residual blocks
    int flow_time_dim;      // its time embedding
    float flow_lr;          // the flow net's learning rate (0 = opt.lr)
    const char *fl_scorer;  // local scorer of the forward-looking term (NULL = hub scorer)
    const char *classifier; // digit classifier: digit scorers and the class_coverage metric
    // Text GFlowNet (--objective tb without --env; text_gfn.h): responses of
    // hub.max_new_tokens tokens of hub.allowed_tokens (--alphabet), hub.train_prompts the
    // prompts (and the scorer's targets), hub.scorer the reward (built-in: exact L1).
    float reward_beta;    // log R = reward_beta * reward (the scorer's scalar)
    gpt_config_t new_gpt; // the fresh gpt made when there is no --init (TB only);
                          // ctx_len 0: the longest prompt + max_new_tokens
} learner_config_t;

enum { DIFF_OBJ_DDPO = 0, DIFF_OBJ_DAG = 1, DIFF_OBJ_DAGKL = 2 };

learner_config_t learner_defaults(void);
// The defaults of the GFlowNet objectives (HyperGrid, TB on text) where the text RL ones do
// not fit, for every option not given (learner_main's short codes), with their scorer.
void learner_gflownet_defaults(learner_config_t *c, const unsigned char *given, const char *scorer);

// Runs the learner on this rank (after MPI_Init). Returns the process exit code.
int learner_run(const learner_config_t *c);

#endif
