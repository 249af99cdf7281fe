// learner.h: the RL learner, one MPI job. Every rank holds the same gpt; rank 0 also runs the
// hub (hub.h), takes batches of scored trajectories from it (or from a trajectory log with
// --replay), computes leave-one-out advantages, drops samples older than max_lag policy
// versions, and broadcasts the batch. Each rank computes the policy-gradient loss (rl.h) on
// its shard, the gradients are summed with one in-place MPI_Allreduce on the contiguous
// gradient buffer, and every rank steps AdamW identically. Rank 0 publishes new weights to
// the actors every publish_every steps, evaluates on held-out prompts, writes metrics (JSON
// lines) and checkpoints (every ckpt_every steps and on SIGINT/SIGTERM). With gflow_env set,
// learner_run trains a GFlowNet instead (gflow_learner.h) in the same loop structure, and with
// diff_env set a diffusion model by reward (diffusion_learner.h). With text_tb set the gpt is
// itself trained as a GFlowNet on text (text_gfn.h): trajectory balance on responses of
// max_new_tokens tokens of an alphabet (hub.allowed_tokens), one learned log Z per training
// prompt, and an exact L1 evaluation by enumeration instead of held-out accuracy.
#ifndef RLX_LEARNER_H
#define RLX_LEARNER_H

#include <stdint.h>

#include "adamw.h"
#include "diffusion_rl.h"
#include "hub.h"
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
    // GFlowNet mode (gflow_learner.h): set by --env; the text options above that concern the
    // model, prompts and objective are then unused.
    const char *gflow_env; // "hypergrid", or NULL for the text learner
    int gflow_objective;   // gfn_loss_kind_t: GFN_LOSS_TB, _DB, _SUBTB
    float gflow_lambda;    // SubTB length discount
    float logz_lr;         // log Z's AdamW learning rate (the net uses opt.lr); also text TB's
    int gflow_hidden;      // policy mlp width
    int gflow_blocks;      // policy mlp residual blocks
    // Diffusion mode (diffusion_learner.h): --env diffusion; --init is a diffusion checkpoint
    // (rlx-ddpm), the hub's diff_* fields say how actors sample (shape, classes and steps are
    // completed from the checkpoint when left 0).
    const char *diff_env;   // "diffusion", or NULL
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
    int text_tb;          // 1: trajectory balance instead of the policy gradient
    float reward_beta;    // log R = reward_beta * reward (the scorer's scalar)
    gpt_config_t new_gpt; // the fresh gpt made when there is no --init (TB only);
                          // ctx_len 0: the longest prompt + max_new_tokens
} learner_config_t;

enum { DIFF_OBJ_DDPO = 0, DIFF_OBJ_DAG = 1, DIFF_OBJ_DAGKL = 2 };

learner_config_t learner_defaults(void);

// Runs the learner on this rank (after MPI_Init). Returns the process exit code.
int learner_run(const learner_config_t *c);

#endif
