// hub.h: the broker between actors, reward workers and the learner. It runs as a thread of
// the learner's rank 0 with one ZeroMQ ROUTER socket that actors and reward workers (DEALER)
// connect to, and talks to the learner's main thread only over an inproc socket (no shared
// mutable state).
//
// What it does (protocol: proto/rlx.proto):
//  - joins workers (Hello/Welcome), tracks them by heartbeat; a worker silent for
//    liveness * heartbeat_ms is dead: its unscored requests are requeued to other reward
//    workers (up to score_retries times, then the trajectories are dropped with reason
//    "score_failed"); an actor's outstanding work items simply expire.
//  - hands out WorkItems (prompts_per_item prompts from the train prompt file, each to be
//    sampled samples_per_prompt times) to actors that ask, only while the learner's queue and
//    the in-flight trajectories are below their limits (backpressure).
//  - takes TrajectoryBatches: validates each trajectory (ids, lengths, token range, logprobs
//    count, known work item), drops duplicates (same TrajectoryId, not counted as sampled),
//    counts "sampled", decodes prompt/response text and sends ScoreRequests (score_batch items
//    each) to reward workers that have credits; holds each trajectory until its score comes.
//  - queues scored trajectories for the learner in complete groups (all surviving samples of
//    a prompt), and serves them to hub_take.
//  - serves weights: hub_publish_weights hands it a blob; it announces the version to actors
//    (WeightAnnounce) and answers WeightRequests with WeightChunks.
//  - optionally appends every scored trajectory to a trajectory log (trajlog.h).
//  - GFlowNet mode (kind KIND_GFLOW, hub_gfn.h): no prompt file; each WorkItem asks for
//    samples_per_prompt HyperGrid trajectories (WorkItem.gflow), the hub checks them
//    (gfn_traj_check) and scores their terminal states (ScoreItem.payload, kind GFLOW).
//  - text work with allowed_tokens (GFlowNets on text, text_gfn.h): WorkItem.allowed_tokens
//    restricts what actors sample; a response holding any other token is refused as invalid.
//  - diffusion mode (kind KIND_DIFFUSION, hub_diffusion.h): synthetic prompts (one per class, or
//    one unconditional); each WorkItem asks for samples_per_prompt denoising chains per
//    prompt (WorkItem.diffusion), the hub checks them (diff_traj_check) and scores their
//    samples x_0 (ScoreItem.payload with payload_shape, kind DIFFUSION).
// Every trajectory the hub accepted is, at the end, delivered to the learner or dropped for a
// counted reason; hub_drain settles the in-flight ones before shutdown.
#ifndef RLX_HUB_H
#define RLX_HUB_H

#include <stddef.h>
#include <stdint.h>

#include "kind.h"
#include "rlx.pb-c.h"

#define HUB_MAX_ALLOWED 512 // most entries of hub_config_t.allowed_tokens

typedef struct {
    kind_t kind;               // what the run trains on (KIND_TEXT, KIND_GFLOW, KIND_DIFFUSION;
                               // hub_defaults: text): picks the hub's ops table (hub_kind.h)
    const char *bind;          // ZeroMQ endpoint to bind, e.g. "tcp://*:5555"
    const char *run_id;        // run identifier stamped on every message
    const char *train_prompts; // TSV file: prompt<TAB>target per line
    const char *scorer;        // scorer name put in every ScoreItem ("exact")
    int prompts_per_item;      // prompts per WorkItem
    int samples_per_prompt;    // k: samples per prompt (a group)
    float temperature;         // sampling parameters sent with work
    int top_k;
    int max_new_tokens;
    int max_learner_queue;      // scored trajectories waiting for the learner: no new work above
    int max_in_flight;          // trajectories handed out as work or unscored: no new work above
    int heartbeat_ms;           // heartbeat interval (both directions)
    int liveness;               // missed heartbeats before a peer is dead
    int score_deadline_ms;      // a ScoreRequest unanswered this long is requeued
    int score_retries;          // requeues before its trajectories are dropped
    int work_deadline_ms;       // a WorkItem not returned this long expires
    int score_batch;            // trajectories per ScoreRequest
    uint64_t seed;              // prompt order and sampling seeds
    const char *trajectory_log; // append scored trajectories here (NULL = off)
    int gfn_ndim;               // GFlowNet: HyperGrid work of this D (no prompt file)
    int gfn_height;             // its H
    float gfn_epsilon;          // exploration epsilon sent with GFlowNet work
    int diff_steps;             // diffusion: S sampling steps (hub_diffusion.h)
    int diff_shape[4];          // sample shape (diff_shape_n entries), e.g. {2} or {8, 8}
    int diff_shape_n;           // entries of diff_shape
    int diff_classes;           // > 0: one prompt per class 0..C-1; 0: one unconditional
    float diff_eta;             // DiffusionSpec.eta
    float diff_guidance;        // DiffusionSpec.guidance
    int diff_logp_sum;          // DiffusionSpec.logp_sum
    int diff_clip_x0;           // DiffusionSpec.clip_x0
    const char *diff_target;    // unconditional: ScoreItem.target of every sample ("" = none)
    uint32_t allowed_tokens[HUB_MAX_ALLOWED]; // text: the only tokens responses may hold
    int n_allowed_tokens; // entries used (WorkItem.allowed_tokens); 0 = any token
} hub_config_t;

// Defaults for everything but bind, run_id, train_prompts.
hub_config_t hub_defaults(void);

// Counters, all since start. sampled = delivered + dropped_invalid + dropped_score +
// dropped_shutdown + in_flight at all times.
typedef struct {
    uint64_t sampled;         // new (not duplicate) trajectories received from actors, valid or not
    uint64_t delivered;       // handed to the learner by hub_take
    uint64_t dropped_invalid; // refused: malformed, unknown work, bad lengths/tokens/log-probs,
                              // seq beyond what the actor was asked for, future policy version
    uint64_t dropped_score;   // no score after score_retries, or the scorer reported an error
    uint64_t dropped_shutdown; // still unscored or undelivered when hub_drain gave up
    uint64_t duplicates;       // already-seen TrajectoryIds (not counted as sampled)
    uint64_t in_flight;        // received, not yet delivered or dropped
    uint64_t wire_errors;      // received messages refused by the wire layer (malformed, ...)
    uint64_t send_failures;    // sends that failed, mostly to workers that just died
    uint32_t work_queue;       // work items out at actors
    uint32_t score_queue;      // trajectories waiting for or in scoring
    uint32_t learner_queue;    // scored trajectories waiting for hub_take
    uint32_t actors;           // live actors
    uint32_t reward_workers;   // live reward workers
    uint64_t policy_version;   // newest published weights
    uint64_t late_replies;     // ScoreReplies to requests no longer waited for (dropped)
    uint64_t expired_work;     // work items whose deadline passed (not trajectories)
    uint64_t score_requeues;   // trajectories sent again to a reward worker
    // Added after RLXLRN3 checkpoints were written (the learner stores this struct raw, so a
    // change here changes LEARNER_STATE_MAGIC in learner_common.h):
    uint64_t hello_refused;  // Hellos claiming a known worker_id without its session_key
    uint64_t peer_mismatch;  // messages whose sender_id is a worker joined from another peer
    uint64_t future_version; // trajectories claiming a policy version never published (also
                             // in dropped_invalid)
} hub_counters_t;

typedef struct hub hub_t;

// Binds and starts the hub thread. zmq_ctx is the process's ZeroMQ context. NULL with a
// message on stderr if the endpoint cannot be bound or the prompt file cannot be read.
hub_t *hub_start(const hub_config_t *c, void *zmq_ctx);

// Learner side; call only from the thread that called hub_start. Every call waits for the
// hub thread with a deadline (its timeout, plus a few seconds' grace where it has none).
// Waits up to timeout_ms for scored trajectories; returns how many (up to max, whole groups
// only, so possibly fewer; a single group larger than max comes whole) as *out, a
// TrajectoryBatch envelope the caller frees with wire_free. Every trajectory has scored = true
// and its reward set; the samples of a group (same work_id and prompt_id) are adjacent.
// 0 (and *out NULL) on timeout. -1 if the hub thread is gone or did not answer in time.
int hub_take(hub_t *h, int max, int timeout_ms, Rlx__Envelope **out);
// New policy version: blob is the serialized weights (a params-only checkpoint), copied.
// version must be greater than the last published one (proto: 1, 2, ...). The hub keeps this
// and the previous version for actors that are fetching; older ones are answered UNAVAILABLE.
// 0, or -1 (not newer, empty blob, or no answer).
int hub_publish_weights(hub_t *h, uint64_t version, const void *blob, size_t len);
// The learner's progress, forwarded to observers as RunStatus.
int hub_report(hub_t *h, const Rlx__RunStatus *st);
// Counters snapshot. 0, or -1 if the hub did not answer within timeout_ms.
int hub_counters(hub_t *h, hub_counters_t *out, int timeout_ms);
// Stops handing out work, waits up to timeout_ms for in-flight scoring; what is still not
// delivered after that (the learner queue included: hub_take what you want first) is dropped
// as "shutdown", and so is any trajectory arriving later. Fills *out (may be NULL) with the
// counters after draining (in_flight 0). 0, or -1 if the hub did not answer.
int hub_drain(hub_t *h, int timeout_ms, hub_counters_t *out);
// Stops the thread (Bye to workers), joins it, frees everything; NULLs *self_p. Safe on NULL.
void hub_stop(hub_t **self_p);

#endif
