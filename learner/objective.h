// objective.h: what the learner loop (learner.c) trains, behind one ops table (redis's
// ConnectionType): one const objective_ops_t per objective, each in a file of its own
// (objective_rl.c: text REINFORCE/PPO; objective_text_tb.c: trajectory balance on text;
// objective_gfn.c: HyperGrid TB/DB/SubTB; objective_diffusion.c: DDPO/DAG/DAG-KL). The loop
// picks the table once (objective_pick, from the config's kind_t and objective name) and then
// calls only these entries, unaware of which objective it drives:
//
//   next batch (batch_begin, add via learner_collect), batch broadcast (bcast), step (forward,
//   backward, all-reduce, check, update), publish (finite, weights), log (metrics), evaluate,
//   checkpoint (save), destroy.
//
// A step whose loss or all-reduced gradient norm is not finite is skipped on every rank alike
// (learner_step_update in learner_common.h): no optimizer update. A new objective is one file
// with its table and one line in objective_pick.
#ifndef RLX_OBJECTIVE_H
#define RLX_OBJECTIVE_H

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>

#include "kind.h"
#include "learner.h"
#include "learner_common.h"

// What one step did, for the loop's metrics and stdout line (rank 0's values are global).
typedef struct {
    int updated;     // 0: skipped (non-finite loss or gradient norm), parameters unchanged
    double loss;     // the global loss
    float grad_norm; // the global gradient norm before clipping (the main network's)
} objective_step_t;

// When evaluate is called.
typedef enum {
    OBJ_EVAL_START = 0, // before the first step (its own metrics line)
    OBJ_EVAL_STEP = 1,  // after a step, into that step's line (every eval_every steps)
    OBJ_EVAL_FINAL = 2, // after the last step (its own line, "final": true)
} objective_eval_t;

typedef struct {
    const char *name; // as --objective says it ("rl", "tb", ...)
    kind_t kind;      // the trajectories it trains on
    int print_steps;  // a line on stdout per step (else metrics only)
    // Mode defaults for every option not on the command line (given: learner_main's short
    // codes seen), set before the config is checked; NULL = the text RL defaults stand.
    void (*defaults)(learner_config_t *c, const unsigned char *given);
    // Collective: the model on every rank (from --init, a fresh one or, with --resume and
    // OUT/learner.ckpt present, the checkpoint; *cnt from its state on rank 0, cnt->step on
    // every rank), completing c->hub where the model decides (e.g. diffusion's shape). Rank 0
    // prints its banner. NULL on every rank when any failed (message printed), with *rc the
    // exit code.
    void *(*create)(learner_config_t *c, learner_counts_t *cnt, int *rc);
    // Rank 0: empties the batch; add then admits by adm (the loop's: step, max_lag, counters,
    // lags). Returns the count of trainable trajectories in it, which add advances.
    const int *(*batch_begin)(void *self, learner_admit_t *adm);
    learner_add_fn add; // rank 0: one TrajectoryBatch envelope into the batch, counted
    // Collective: rank 0 prepares (e.g. advantages) and sends the batch with *stop (when set,
    // an empty batch) to every rank.
    void (*bcast)(void *self, int *stop);
    // Collective: the batch's trajectories now trained (counted in cnt->trained by the loop).
    int (*batch_n)(void *self);
    // Collective: forward and backward on this rank's shard, all-reduce, update (or skip).
    // 0, or -1 when the batch cannot be trained on at all (the run stops).
    int (*step)(void *self, int64_t step, objective_step_t *out);
    // 1 when every parameter is finite (checked before publishing and checkpointing).
    int (*finite)(void *self);
    // Rank 0: the weights blob for actors (a checkpoint's bytes without optimizer state,
    // malloc'ed: the caller frees), or NULL with err.
    void *(*weights)(void *self, size_t *len, char *err, size_t errlen);
    // Rank 0: the checkpoint in c->out with cnt (hub_prev: the hub's totals now). 0 or -1.
    int (*save)(void *self, const learner_counts_t *cnt);
    // Rank 0, after a step: its fields of the step's metrics line (reward_mean, loss, ...).
    void (*metrics)(void *self, const learner_counts_t *cnt, const objective_step_t *st,
                    json_object *line);
    // Rank 0: evaluates (phase) and adds the fields to line; 1 if it evaluated. NULL: none.
    int (*evaluate)(void *self, const learner_counts_t *cnt, objective_eval_t phase,
                    json_object *line);
    void (*destroy)(void **self_p);
} objective_ops_t;

extern const objective_ops_t objective_rl;        // text: REINFORCE / PPO (rl.h)
extern const objective_ops_t objective_text_tb;   // text: trajectory balance (text_gfn.h)
extern const objective_ops_t objective_gfn;       // HyperGrid: TB / DB / SubTB (gflownet.h)
extern const objective_ops_t objective_diffusion; // DDPO / DAG / DAG-KL (diffusion_rl.h)

// The table for kind and objective name (NULL: the kind's default), or NULL if the kind has
// no such objective.
const objective_ops_t *objective_pick(kind_t kind, const char *name);

#endif
