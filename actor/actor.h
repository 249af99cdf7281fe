// actor.h: the rlx actor, a worker that samples trajectories from the current policy: text
// (text_actor.c), GFlowNet HyperGrid trajectories for a WorkItem with WorkItem.gflow
// (gfn_actor.h, with the gflownet policy blob of gfn_ckpt.h) and denoising chains for a
// WorkItem with WorkItem.diffusion (diffusion_actor.h, with a diff_save checkpoint blob).
// Each kind is one ops table (actor_kind.h); the actor holds one model per kind, installs a
// blob as the kind WeightAnnounce.kind names (or, from an older hub, the checkpoint's header
// says) and samples an item with its kind's model.
//
// It joins the hub over one DEALER socket (proto/rlx.proto: Hello/Welcome, heartbeats, Bye),
// keeps the newest weights (WeightAnnounce -> pipelined WeightRequests -> WeightChunks, each
// chunk and the whole blob checked by CRC-32; the blob is a checkpoint file's bytes), asks
// for work with credits (WorkRequest), samples samples_per_prompt responses per prompt of
// each WorkItem with the KV-cache sampler, and returns them as one TrajectoryBatch per item.
// Sampling runs in slices of at most `batch` sequences; the socket is serviced (heartbeats,
// weight chunks, new work) between slices, so a long item never silences the actor.
//
// What the actor expects of the hub (and does itself):
//  - credits are absolute: WorkRequest.credits and Heartbeat.credits are the number of
//    WorkItems the actor has room for *now* (not an increment). It asks after joining, after
//    each finished item, and again every liveness period while it has room and got nothing.
//    A WorkItem beyond its credits is still accepted and queued.
//  - weights: Welcome.weights or WeightAnnounce describe the newest version; the actor fetches
//    it at once (window of `weight_window` one-chunk WeightRequests). A chunk with a bad CRC,
//    size or offset is refused (counted) and asked for again; a chunk not answered within
//    the fetch timeout is asked for again. ERROR_CODE_UNAVAILABLE abandons the fetch until a
//    newer announce arrives. A WorkItem wanting a version newer than the one held waits
//    while that version is being fetched, else it is sampled with the weights held (its
//    trajectories say which version they used).
//  - weights whose blob holds a NaN or infinite parameter (a diverged learner) are refused
//    with an Error (ERROR_CODE_BAD_REQUEST naming the version) and not fetched again: the
//    actor keeps sampling with the last good version. Likewise an --model checkpoint.
//  - an item it cannot sample (a prompt that does not fit the context, tokens out of the
//    vocabulary, no weights because none were ever announced, a model that gives NaN/inf
//    logits) is answered with an Error
//    (ERROR_CODE_BAD_REQUEST naming the work_id) and an empty TrajectoryBatch with its
//    work_id, so the hub can settle it at once.
//  - WorkItem.allowed_tokens (if any) restricts sampling to those tokens (sampler.h); an
//    allowed token outside the model's vocabulary makes the item refused.
//  - empty WorkItem.stop_tokens means "stop at EOS" (GPT_TOK_EOS); max_new_tokens 0 means
//    "as many as the context allows".
//  - liveness: any message from the hub counts; after heartbeat_liveness intervals of
//    silence the actor closes its socket, opens a new one and says Hello again with its
//    worker_id (backoff doubling up to ACTOR_MAX_BACKOFF_MS). Error NOT_JOINED -> Hello again.
#ifndef RLX_ACTOR_H
#define RLX_ACTOR_H

#include <signal.h>
#include <stdint.h>

#include "worker_link.h"

#define ACTOR_MAX_BACKOFF_MS 8000

typedef struct {
    const char *hub;        // ZeroMQ endpoint of the hub, e.g. "tcp://127.0.0.1:5555"
    const char *name;       // name for logs and Hello.name
    const char *run_id;     // run to join; NULL = learn it from Welcome
    const char *model_path; // initial weights (checkpoint file, version 0); NULL = wait for hub
    int threads;            // OpenMP threads for sampling; 0 = leave as is
    int batch;              // most sequences per sampler call
    int heartbeat_ms;       // heartbeat interval until Welcome says otherwise
    int liveness;           // missed intervals before the hub is presumed gone (until Welcome)
    int credits;            // WorkItems held at once
    uint64_t seed;          // mixed into sampling seeds when an item has none
    long max_items;         // exit after this many finished items; 0 = run until stopped
    int weight_window;      // WeightRequests outstanding at once during a fetch
    int fetch_timeout_ms;   // re-ask for a chunk not answered within this time
    int stats_interval_ms;  // stats line period on stderr; 0 = never
} actor_config_t;

// Counters since start.
typedef struct {
    uint64_t items;              // work items finished (TrajectoryBatch sent)
    uint64_t items_refused;      // items that could not be sampled (Error + empty batch)
    uint64_t trajectories;       // trajectories sent
    uint64_t tokens;             // response tokens sampled
    uint64_t policy_version;     // weights held now (0 = initial/none)
    uint64_t weight_loads;       // weight versions installed
    uint64_t chunks_received;    // weight chunks accepted
    uint64_t chunks_bad;         // weight chunks refused (crc, size, offset, version)
    uint64_t chunks_rerequested; // chunk requests sent again (bad chunk or timeout)
    uint64_t blobs_bad;          // whole blobs refused (crc, checkpoint parse/config, NaN)
    uint64_t weights_nonfinite;  // of those, blobs with a NaN/inf parameter (version kept)
    uint64_t items_nonfinite;    // items refused because the model gave NaN/inf logits
    wlink_stats_t session;       // the hub session: Hellos, reconnects, errors, worker_id
} actor_stats_t;

typedef struct actor actor_t;

// Defaults for everything but hub.
actor_config_t actor_defaults(void);
// Creates the actor (socket not yet connected) in zmq_ctx. Loads c->model_path if given.
// NULL with a message on stderr on a bad config or unreadable model.
actor_t *actor_new(const actor_config_t *c, void *zmq_ctx);
// Runs until *stop becomes non-zero (signal handler) or max_items are done; then sends Bye.
// Returns 0 on a clean exit, 1 on a fatal error.
int actor_run(actor_t *a, volatile sig_atomic_t *stop);
const actor_stats_t *actor_stats(const actor_t *a);
void actor_destroy(actor_t **self_p);

#endif
