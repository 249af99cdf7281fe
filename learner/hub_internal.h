// hub_internal.h: what the hub's files share (not part of the hub's API, hub.h): the pipe
// messages, the hub thread's state and the functions one file calls in another. The files:
//   hub.c          the API (hub_start and its configuration, the learner-side calls) and the
//                  pipe protocol as the learner side speaks it
//   hub_loop.c     the hub thread: poll loop, timers, the router socket, the pipe's hub side
//   hub_work.c     work items and groups, trajectories (checks, duplicates, acceptance)
//   hub_score.c    the score queue, ScoreRequests to reward workers, their replies
//   hub_workers.c  Hello/Welcome, the worker table, weights, run status
//   hub_kind.h     the per-kind ops table; hub_text.c, hub_gfn.c, hub_diffusion.c the kinds
//
// Threads. hub_start binds the ROUTER socket and an inproc PAIR pipe, then starts one thread
// that owns all hub state and runs one zmq_poll loop over the ROUTER socket and its end of the
// pipe. The learner-side calls (hub_take, hub_publish_weights, ...) talk to that thread only
// over the pipe; nothing mutable is shared. Each side has its own wire_t.
//
// The pipe protocol (internal, same process, so plain C structs travel as bytes):
//   request: frame 1 = pipe_cmd_t {cmd, tag, a, b}; optional frame 2 = payload:
//     TAKE     a = max trajectories, b = timeout_ms (the hub thread parks the request until
//              whole groups are ready or the timeout passes, then answers)
//     WEIGHTS  a = version; frame 2 = the weight blob (the caller's copy, handed over with
//              zmq_msg_init_data, so the blob is copied exactly once)
//     REPORT   frame 2 = an encoded Envelope holding the learner's RunStatus
//     COUNTERS (nothing)
//     DRAIN    b = timeout_ms (parked like TAKE until scoring settles or the timeout passes)
//     STOP     (nothing): the hub says Bye to every worker, answers, and the thread ends
//   reply:   frame 1 = pipe_reply_t {cmd, tag, status, count, counters}; TAKE with count > 0
//            adds frame 2 = a pointer to a TrajectoryBatch Envelope of whole groups: the
//            trajectories as decoded from the actors, no copy (wire_batch_handover). The
//            learner side takes the pointer out of the frame; a frame never read frees the
//            batch through its free function.
//   The hub thread also sends an unasked reply with cmd GONE if its loop dies (context
//   terminated), so the learner side fails fast instead of waiting for deadlines.
//   Replies carry the request's tag; a reply to a request the learner already gave up on is
//   discarded, except a late TAKE reply with trajectories, which is kept for the next hub_take
//   (trajectories counted as delivered are never thrown away on the learner side).
//
// Trajectory life: an actor's trajectory that passes validation is held (its protobuf message
// detached from the received batch, no copy; a reference keeps the batch's wire arena alive)
// with a ScoreItem pointing into it; it waits in the score queue, travels in a ScoreRequest,
// comes back scored or is dropped; when every sample of its group is settled (and the group is
// complete, or its work item is closed) the scored survivors go to the learner queue
// together; hub_take hands them out (the decoded trajectories themselves, see the pipe).
#ifndef RLX_HUB_INTERNAL_H
#define RLX_HUB_INTERNAL_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include <zmq.h>

#include "gpt.h"
#include "hub.h"
#include "rng.h"
#include "trajlog.h"
#include "wire.h"

// Largest inproc message (a RunStatus report; batches travel as pointers, weights raw).
#define PIPE_MAX_SIZE ((size_t)1 << 30)
// ZeroMQ drops peers that send more than this (the wire layer refuses above its own limit
// with an Error first, so a merely oversized message gets a clear answer).
#define ROUTER_MAXMSGSIZE ((int64_t)WIRE_DEFAULT_MAX_SIZE * 4)
// Most chunks one WeightRequest gets (a slow actor cannot fill the send queue).
#define MAX_CHUNKS_PER_REQUEST 8u
// Most router messages handled before looking at the pipe and the timers again.
#define MAX_MESSAGES_PER_TURN 256
// Extra time the learner side waits for the hub thread beyond the operation's own timeout.
#define PIPE_GRACE_MS 3000

// ---- small helpers ----------------------------------------------------------------------

static inline int64_t hub_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline int64_t min64(int64_t a, int64_t b) {
    return a < b ? a : b;
}

// ---- pipe messages ------------------------------------------------------------------------

enum { CMD_TAKE = 1, CMD_WEIGHTS, CMD_REPORT, CMD_COUNTERS, CMD_DRAIN, CMD_STOP, CMD_GONE };

typedef struct {
    uint32_t cmd; // CMD_*
    uint32_t tag; // request number, echoed in the reply
    int64_t a;    // per command, see the file comment
    int64_t b;    // per command, see the file comment
} pipe_cmd_t;

typedef struct {
    uint32_t cmd;            // the request's cmd (CMD_GONE when the hub thread died)
    uint32_t tag;            // the request's tag
    int32_t status;          // 0 or -1
    int32_t count;           // TAKE: trajectories in frame 2
    hub_counters_t counters; // after the command (COUNTERS, DRAIN; others too)
} pipe_reply_t;

// ---- hub thread state ---------------------------------------------------------------------

typedef struct group group_t;
typedef struct hub_kind_ops hub_kind_ops_t;
typedef struct work work_t;

// One accepted trajectory, held until it is delivered or dropped.
typedef struct traj {
    Rlx__Trajectory *t;   // detached from the actor's batch; lives in its arena
    wire_arena_t *arena;  // the actor's batch (wire arena): t's memory, held by reference
    Rlx__ScoreItem item;  // what a reward worker gets; strings point into t, prompts, config
    float *payload;       // GFlowNet: item.payload, the terminal state one-hot; owned
    uint32_t shape[2];    // GFlowNet: item.payload_shape [D, H]
    group_t *group;       // the group it belongs to
    int attempts;         // ScoreRequests it was sent in
    struct traj *next;    // score queue link
    char response_text[]; // text kind: the decoded response, allocated with the struct
} traj_t;

// The k samples of one prompt of one work item.
struct group {
    work_t *work;     // owner
    size_t prompt;    // index in the prompt table
    int k;            // samples_per_prompt
    uint8_t *arrived; // (k) slot taken by an accepted or refused sample
    int n_arrived;    // slots taken
    int n_settled;    // of those, scored or dropped
    traj_t **scored;  // (k) scored survivors
    int n_scored;     // survivors
    int flushed;      // handed to the learner queue (or dropped)
};

enum { WORK_OUT = 0, WORK_LATE, WORK_CLOSED };

// A work item handed to an actor.
struct work {
    uint64_t work_id;  // hub-assigned
    uint32_t actor_id; // the actor it went to
    int state;         // WORK_OUT: deadline running; LATE: expired, late samples accepted
                       // until purge_at; CLOSED: no more samples, waits for its groups
    int64_t deadline;  // OUT until then
    int64_t purge_at;  // LATE until then
    int n_groups;      // prompts in the item
    group_t *groups;   // (n_groups)
    int open_groups;   // groups not flushed yet
    int busy;          // work_close is walking its groups: do not free it under the walk
};

// Scored survivors of one group waiting for hub_take.
typedef struct ready {
    traj_t **v;         // (n) trajectories, owned
    int n;              // how many
    struct ready *next; // FIFO link
} ready_t;

// A ScoreRequest out at a reward worker.
typedef struct {
    uint64_t request_id; // as sent
    uint32_t worker_id;  // where it went
    int64_t deadline;    // requeued after this
    int n;               // items
    traj_t **items;      // (n) the trajectories in it
} request_t;

// A joined worker.
typedef struct {
    uint32_t id;             // worker_id
    wire_peer_t peer;        // ROUTER identity
    Rlx__Role role;          // what it is
    char name[64];           // for logs
    int64_t last_seen;       // last message from it
    int64_t next_hb;         // when the hub heartbeats it next
    int capacity;            // reward: ScoreRequests it may hold at once
    int outstanding;         // reward: ScoreRequests it holds now
    int max_batch;           // items per WorkItem / ScoreRequest; 0 = no limit
    int can_score;           // reward: lists the hub's scorer (or lists none)
    uint32_t want;           // actor: WorkItems asked for and not yet sent
    uint64_t policy_version; // actor: the version it says it holds
    uint64_t session_key;    // the secret of its Welcome (Hello.session_key proves the id)
} worker_t;

// What the hub remembers of every worker id it assigned, for the whole run (a worker it
// forgot may rejoin under its id): the secret handed out in Welcome, and the connection it
// last joined from (a Hello from that same connection needs no key).
typedef struct {
    uint64_t key;     // Welcome.session_key, never 0
    wire_peer_t peer; // ROUTER identity of its last Hello
} session_t;

// A published weight blob.
typedef struct {
    int set;             // holds a blob
    uint64_t version;    // policy version
    zmq_msg_t msg;       // the bytes (as received over the pipe: no copy)
    size_t len;          // bytes
    uint32_t crc;        // crc32 of the whole blob
    uint32_t num_chunks; // ceil(len / WIRE_WEIGHT_CHUNK_BYTES)
    uint32_t *chunk_crc; // (num_chunks) crc32 of each chunk, computed once at publication
} blob_t;

// A prompt of the training file.
typedef struct {
    char *text;       // the prompt
    char *target;     // the reference answer ("" if none)
    uint32_t *tokens; // (n_tokens) bytetok_encode_prompt(text)
    size_t n_tokens;  // tokens
} prompt_t;

// The TrajectoryIds seen from one actor. Actors number their trajectories 1, 2, 3, ... and
// send them about in order, so a watermark and a small window bound the memory whatever the
// run's length: every seq <= floor counts as seen, and a bit per seq in (floor, floor +
// SEEN_WINDOW]. A seq more than SEEN_WINDOW behind the newest one of its actor counts as seen
// (a retry that late is older than any work item still open).
#define SEEN_WINDOW 65536u // seqs per actor (8 KiB of bits)
//
// Only trajectories that name a slot of a work item this hub sent to that actor (so came over
// the actor's own connection, see on_message) enter the table, and only with a seq the actor
// can have reached: at most `asked` (trajectories the hub asked of it) beyond the first seq
// it sent. So one far-future seq (forged, or a broken actor) is refused as invalid instead of
// sliding the window past the actor's real trajectories, which would all count as duplicates.
typedef struct {
    uint32_t actor; // actor_id
    uint64_t floor; // every seq <= floor is seen
    uint64_t *bits; // (SEEN_WINDOW / 64) ring: bit seq % SEEN_WINDOW for seq > floor
    uint64_t asked; // trajectories the hub has asked of this actor (its work items' samples)
    uint64_t base;  // first seq entered, minus 1 (0 before any)
    int has_base;   // base is set
} seen_t;

// Things logged once (first occurrence), then only counted.
enum {
    EV_INVALID,
    EV_DUPLICATE,
    EV_SCORER_ERROR,
    EV_SCORE_TIMEOUT,
    EV_SCORE_DROPPED,
    EV_LATE_REPLY,
    EV_WORK_EXPIRED,
    EV_NOT_JOINED,
    EV_BAD_REQUEST,
    EV_PEER_ERROR,
    EV_SEND_AGAIN,
    EV_SEND_FAILED,
    EV_UNAVAILABLE,
    EV_NO_SCORER,
    EV_LOG_FAILED,
    EV_HELLO_REFUSED,
    EV_PEER_MISMATCH,
    EV_COUNT
};

// Everything the hub thread owns.
typedef struct {
    hub_config_t c;     // configuration (strings below are copies)
    char *bind;         // copy of c.bind
    char *run_id;       // copy of c.run_id
    char *scorer;       // copy of c.scorer
    char *log_path;     // copy of c.trajectory_log, or NULL
    void *router;       // ROUTER socket (workers)
    void *pipe;         // PAIR socket (learner side of this process)
    wire_t *wire;       // router endpoint
    wire_t *pipe_wire;  // encodes batches for the learner, decodes reports
    wire_t *log_wire;   // encodes trajectory log records
    trajlog_t *log;     // trajectory log, or NULL
    prompt_t *prompts;  // (n_prompts) training prompts
    size_t n_prompts;   // prompts
    size_t *order;      // (n_prompts) shuffled prompt order
    size_t next_prompt; // position in order
    rng_t rng;          // prompt order

    worker_t **workers;      // (n_workers) joined workers
    int n_workers;           // joined workers
    int cap_workers;         // allocated
    uint32_t next_worker_id; // next id handed out
    session_t *sessions;     // (next_worker_id) by worker id: every id assigned ([0] unused)
    uint32_t cap_sessions;   // allocated
    uint32_t rr_actor;       // round-robin position for work hand-out

    work_t **works;        // (n_works) work items not yet freed
    int n_works;           // items
    int cap_works;         // allocated
    uint64_t next_work_id; // next id

    traj_t *sq_head, *sq_tail; // score queue (trajectories waiting for a ScoreRequest)
    request_t *requests;       // (n_requests) ScoreRequests out
    int n_requests;            // out
    int cap_requests;          // allocated
    uint64_t next_request_id;  // next id

    ready_t *rq_head, *rq_tail; // learner queue, whole groups

    seen_t *seen;     // (n_seen) TrajectoryIds seen, per actor
    size_t n_seen;    // actors
    size_t cap_seen;  // allocated
    size_t seen_last; // index of the last actor looked up (a batch is one actor's)

    blob_t weights[2]; // [0] newest, [1] previous

    Rlx__Envelope *report; // the learner's last RunStatus (decoded), or NULL

    hub_counters_t n;        // counters (queue depths filled in by hub_counters_now())
    uint64_t late_replies;   // ScoreReplies to requests no longer waited for
    uint64_t expired_work;   // work items whose deadline passed
    uint64_t score_requeues; // trajectories resent to a reward worker
    uint64_t not_joined;     // messages from unknown senders
    uint64_t bad_requests;   // messages refused by the hub (role, lengths, ...)
    uint64_t peer_errors;    // Error messages received from workers
    uint64_t chunks_sent;    // WeightChunks sent
    uint64_t send_again;     // sends refused because a peer's queue was full
    uint64_t hello_refused;  // Hellos claiming a known worker id without its session key
    uint64_t peer_mismatch;  // messages whose sender_id names a worker of another connection
    uint64_t future_version; // trajectories claiming a policy version never published
    uint32_t unscored;       // trajectories waiting for or in scoring
    uint32_t learner_queue;  // trajectories in the learner queue
    uint32_t logged;         // EV_* bits logged once

    int draining;               // no new work
    int drained;                // drain finished: everything new is dropped as shutdown
    int take_parked;            // a TAKE waits
    pipe_cmd_t take;            // the parked TAKE
    int64_t take_deadline;      // when it is answered empty
    int drain_parked;           // a DRAIN waits
    pipe_cmd_t drain;           // the parked DRAIN
    int64_t drain_deadline;     // when it gives up waiting for scores
    int stop;                   // leave the loop
    uint8_t allowed[GPT_VOCAB]; // text: 1 for each of c.allowed_tokens (n_allowed_tokens > 0)
    const hub_kind_ops_t *ops;  // the run's kind (decided once, in hub_start)
} hub_loop_t;

// The learner-side handle.
struct hub {
    void *pipe;              // PAIR socket, the learner's end
    wire_t *wire;            // decodes batches, encodes reports
    pthread_t thread;        // the hub thread
    int running;             // thread started and not joined
    uint32_t next_tag;       // request numbers
    int gone;                // the hub thread said it died
    Rlx__Envelope *stash[8]; // late TAKE replies with trajectories, oldest first
    int n_stash;             // how many
};

// ---- shared between the hub's files ----------------------------------------------------------

// hub_loop.c: logging, sending, counters, the hub thread.
void hub_note(hub_loop_t *s, int ev, const char *fmt, ...);
const char *hub_role_name(Rlx__Role r);
int hub_send(hub_loop_t *s, const wire_peer_t *to, const Rlx__Envelope *env);
void hub_send_error(hub_loop_t *s, const wire_peer_t *to, Rlx__ErrorCode code, uint64_t ref_seq,
                    const char *fmt, ...);
void hub_bad_request(hub_loop_t *s, const wire_peer_t *to, uint64_t ref_seq, const char *fmt, ...);
uint64_t hub_in_flight(const hub_loop_t *s);
hub_counters_t hub_counters_now(const hub_loop_t *s);
void hub_pipe_reply(hub_loop_t *s, const pipe_cmd_t *cmd, int status, int count, void *payload,
                    size_t len);
void *hub_thread_main(void *arg);
void hub_loop_free(hub_loop_t *s);

// hub_work.c: work items, groups, trajectories.
void hub_traj_free(traj_t *t);
void hub_work_remove(hub_loop_t *s, work_t *w);
void hub_group_check(hub_loop_t *s, group_t *g);
void hub_settle(hub_loop_t *s, traj_t *t, int scored);
void hub_work_close(hub_loop_t *s, work_t *w);
void hub_work_expire(hub_loop_t *s, work_t *w, int64_t now);
int hub_work_allowed(hub_loop_t *s);
void hub_dispatch_work(hub_loop_t *s);
void hub_on_trajectories(hub_loop_t *s, worker_t *a, Rlx__Envelope *env);

// hub_score.c: the score queue and reward workers.
void hub_sq_push_back(hub_loop_t *s, traj_t *t);
traj_t *hub_sq_pop(hub_loop_t *s);
void hub_request_remove(hub_loop_t *s, int i);
void hub_request_requeue(hub_loop_t *s, int i, const char *why);
void hub_dispatch_scoring(hub_loop_t *s);
void hub_on_score_reply(hub_loop_t *s, worker_t *w, const Rlx__ScoreReply *rp);

// hub_workers.c: joining, workers, weights, run status.
worker_t *hub_worker_by_id(hub_loop_t *s, uint32_t id);
worker_t *hub_worker_by_peer(hub_loop_t *s, const wire_peer_t *p);
void hub_worker_remove(hub_loop_t *s, worker_t *w, const char *why);
void hub_on_hello(hub_loop_t *s, const wire_peer_t *from, const Rlx__Envelope *env);
void hub_send_status(hub_loop_t *s, const worker_t *w);
void hub_on_weight_request(hub_loop_t *s, const wire_peer_t *from, const Rlx__Envelope *env);
void hub_on_weights(hub_loop_t *s, const pipe_cmd_t *cmd, zmq_msg_t *payload);
void hub_blob_clear(blob_t *b);

#endif
