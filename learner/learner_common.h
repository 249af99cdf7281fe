// learner_common.h: the parts of the learner every objective (objective.h) shares: run-level
// counters and their checkpointed form, the hub's run-long counters across --resume, signals,
// collecting a batch on rank 0 from the hub (or a replay log) with the take timeout, the
// guarded update (all-reduce, skip a non-finite step on every rank alike), metrics lines
// through json-c (non-finite numbers as null) and the summary line (sampled = trained +
// dropped, in_flight).
#ifndef RLX_LEARNER_COMMON_H
#define RLX_LEARNER_COMMON_H

#include <stdint.h>
#include <stdio.h>

#include <json-c/json.h>

#include "hub.h"
#include "paramset.h"
#include "trajlog.h"
#include "wire.h"

// Run-level counters of the learner (rank 0).
typedef struct {
    int64_t step;             // optimizer steps taken
    int64_t trained;          // trajectories used in a gradient step
    int64_t consumed;         // trajectories taken (trained + dropped here)
    int64_t dropped_stale;    // older than max_lag versions
    int64_t dropped_invalid;  // refused by the learner (does not fit the model, bad kind)
    int64_t dropped_shutdown; // taken but not trained when the run stopped
    int64_t replay_read;      // trajectories read from the replay log
    hub_counters_t hub_prev;  // the hubs' run-long counters of earlier runs (before --resume)
} learner_counts_t;

// Checkpoint extra section: learner state for --resume, a raw struct behind a magic that
// changes with its layout (3: without the hub's hello_refused, peer_mismatch and
// future_version; 2: without send_failures). An older one resumes with counters at 0.
#define LEARNER_STATE_MAGIC "RLXLRN4"
typedef struct {
    char magic[8];           // LEARNER_STATE_MAGIC
    learner_counts_t counts; // counters at the time of the checkpoint
} learner_state_t;

// SIGINT/SIGTERM set the stop flag (checkpoint and stop at the next batch).
void learner_signals_install(void);
// The signal that asked to stop, or 0.
int learner_stop_signal(void);
// Collective (every rank calls it once per step): whether any rank was asked to stop, so a
// signal that reached only one rank (kill of a single process) still stops the job.
int learner_stop_any_rank(void);
// Whether that signal came from this process's parent. Under mpirun that is the MPI runtime
// tearing the job down (Ctrl-C or SIGTERM to mpirun itself): it sends SIGTERM to the ranks,
// SIGKILL one second later, and no longer answers MPI_Finalize in between. (A shell that
// started a single learner without mpirun and signals it counts too: harmless there.)
int learner_stop_by_parent(void);

// Adds the run-long hub counters (not queue depths) of earlier runs to k, so that
// sampled = trained + dropped holds across --resume.
void learner_add_earlier_runs(hub_counters_t *k, const hub_counters_t *prev);
// The hub's counters now (zero without a hub), earlier runs included.
hub_counters_t learner_hub_totals(hub_t *hub, const hub_counters_t *prev);

// Rank 0 at the end of a run: says why it stops if a signal asked, settles what is in flight
// (hub_drain; hub may be NULL for a replay) and returns the hub's counters with the earlier
// runs' added: the final counters to checkpoint and summarise.
hub_counters_t learner_finish_hub(hub_t *hub, const learner_counts_t *cnt);

// The policy-lag admission of one step's batch (the loop's; the objective's add uses it).
typedef struct {
    int64_t step;          // steps taken: the batch's weights are version step + 1
    int max_lag;           // drop older than this many versions (< 0: no limit)
    learner_counts_t *cnt; // counters (consumed, dropped_*)
    double lag_sum;        // policy lag sum of the admitted trajectories
    int lag_max;           // and its maximum
} learner_admit_t;

// Admits a trajectory sampled with policy `version`: 1, with its lag added to a->lag_sum and
// a->lag_max; or 0, counted in cnt->dropped_stale, when the lag exceeds max_lag.
int learner_admit_lag(learner_admit_t *a, uint64_t version);

// Where rank 0's trajectories come from.
typedef struct {
    hub_t *hub;            // live actors via the hub, or NULL
    trajlog_t *replay;     // ... a trajectory log (then hub is NULL)
    wire_t *w;             // decodes replay records
    double take_timeout_s; // give up after this long without trajectories
} learner_source_t;

// Called with each TrajectoryBatch envelope taken; it adds what it can train on (counting the
// rest in cnt) and so advances the count `have` that learner_collect watches.
typedef void (*learner_add_fn)(void *ctx, const Rlx__Envelope *env);

// Rank 0: takes batches (hub_take up to want - *have at once, whole groups) and gives them to
// add until *have >= want, a stop signal, the end of the replay log, the hub thread is gone,
// or take_timeout_s pass without any. Counts replayed trajectories in cnt->replay_read.
void learner_collect(const learner_source_t *src, int want, const int *have, learner_counts_t *cnt,
                     learner_add_fn add, void *ctx);

// The loop's own state on rank 0 (this run only; not checkpointed): the numeric guards'
// counts and the latest evaluation.
typedef struct {
    int64_t skipped_steps; // steps whose loss or gradient norm was not finite: no update
    int64_t unpublished;   // weights not published or checkpointed: a parameter not finite
    float last_eval;       // the latest evaluation's accuracy, for RunStatus (has_eval: one ran)
    int has_eval;
} learner_guard_t;

// Collective: sums ps's gradient over the ranks in place (one MPI_Allreduce).
void learner_allreduce(paramset_t *ps);
// Before learner_allreduce: a non-finite local loss makes ps's gradient NaN, so that the
// all-reduced gradient norm, which every rank computes alike, says so on every rank.
void learner_poison_grad(paramset_t *ps, double local_loss);
// 1 when all n norms are finite: the step may update; 0: skip it.
int learner_norms_finite(const float *norms, int n);
// 1 when every parameter of ps is finite.
int learner_params_finite(const paramset_t *ps);

// Metrics lines: json-c objects. A number with the printf format it is shown with (as the
// text lines always had), or null when it is not finite.
void learner_json_num(json_object *o, const char *key, double v, const char *fmt);
void learner_json_int(json_object *o, const char *key, int64_t v);
void learner_json_bool(json_object *o, const char *key, int v);
// Writes o as one line to f, flushes, and frees o.
void learner_json_write(FILE *f, json_object *o);

// Writes the summary JSON line to metrics and prints it: hc are the counters after
// hub_drain with earlier runs added; hub NULL means a replay (sampled = replay_read).
// guard: the numeric guards' counts (skipped_steps, unpublished).
void learner_write_summary(FILE *metrics, const learner_counts_t *cnt, const hub_counters_t *hc,
                           const learner_guard_t *guard, int have_hub, double elapsed_s);

#endif
