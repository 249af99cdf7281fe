// hub.c: the broker between actors, reward workers and the learner (see hub.h for what it
// does, proto/rlx.proto for the conversations).
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
#include "hub.h"

#include <assert.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <zlib.h>
#include <zmq.h>

#include "bytetok.h"
#include "gpt.h"
#include "hub_diffusion.h"
#include "hub_gflow.h"
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
// Positive rounding tolerated in a behaviour log-prob (log-softmax may round up to ~1e-7).
#define LOGPROB_SLACK 1e-4f

// ---- small helpers ----------------------------------------------------------------------

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t min64(int64_t a, int64_t b) {
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

    hub_counters_t n;        // counters (queue depths filled in by counters())
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

// ---- logging --------------------------------------------------------------------------------

static void note(hub_loop_t *s, int ev, const char *fmt, ...) {
    if (s->logged & (1u << ev))
        return;
    s->logged |= 1u << ev;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "hub: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (first of its kind; later ones are counted)\n");
    va_end(ap);
}

static const char *role_name(Rlx__Role r) {
    switch (r) {
    case RLX__ROLE__ROLE_ACTOR:
        return "actor";
    case RLX__ROLE__ROLE_REWARD_WORKER:
        return "reward worker";
    case RLX__ROLE__ROLE_LEARNER:
        return "learner";
    case RLX__ROLE__ROLE_OBSERVER:
        return "observer";
    default:
        return "?";
    }
}

// ---- sending --------------------------------------------------------------------------------

// Sends env to w; counts and logs (once) a refusal. Returns the wire code.
static int send_to(hub_loop_t *s, const wire_peer_t *to, const Rlx__Envelope *env) {
    wire_error_t why;
    int rc = wire_send(s->wire, s->router, to, env, &why);
    if (rc == WIRE_ERR_AGAIN) {
        s->send_again++;
        note(s, EV_SEND_AGAIN, "a worker's send queue is full (%s)",
             wire_body_name(env->body_case));
    } else if (rc != WIRE_OK) {
        note(s, EV_SEND_FAILED, "send %s failed: %s", wire_body_name(env->body_case), why.detail);
    }
    return rc;
}

static void send_error(hub_loop_t *s, const wire_peer_t *to, Rlx__ErrorCode code, uint64_t ref_seq,
                       const char *fmt, ...) {
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    wire_utf8_clip(msg); // proto3 strings are UTF-8: never cut inside a character
    Rlx__Error e = RLX__ERROR__INIT;
    e.code = code;
    e.message = msg;
    e.ref_seq = ref_seq;
    Rlx__Envelope env = RLX__ENVELOPE__INIT;
    env.body_case = RLX__ENVELOPE__BODY_ERROR;
    env.error = &e;
    send_to(s, to, &env);
}

static void bad_request(hub_loop_t *s, const wire_peer_t *to, uint64_t ref_seq, const char *fmt,
                        ...) {
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    s->bad_requests++;
    note(s, EV_BAD_REQUEST, "bad request: %s", msg);
    send_error(s, to, RLX__ERROR_CODE__ERROR_CODE_BAD_REQUEST, ref_seq, "%s", msg);
}

// ---- counters -------------------------------------------------------------------------------

static uint64_t in_flight(const hub_loop_t *s) {
    return s->n.sampled - s->n.delivered - s->n.dropped_invalid - s->n.dropped_score -
           s->n.dropped_shutdown;
}

static hub_counters_t counters(const hub_loop_t *s) {
    hub_counters_t k = s->n;
    k.in_flight = in_flight(s);
    k.wire_errors = wire_stats(s->wire)->refused;
    k.send_failures = wire_stats(s->wire)->send_failed;
    k.work_queue = 0;
    for (int i = 0; i < s->n_works; i++)
        k.work_queue += s->works[i]->state == WORK_OUT;
    k.score_queue = s->unscored;
    k.learner_queue = s->learner_queue;
    k.actors = k.reward_workers = 0;
    for (int i = 0; i < s->n_workers; i++) {
        k.actors += s->workers[i]->role == RLX__ROLE__ROLE_ACTOR;
        k.reward_workers += s->workers[i]->role == RLX__ROLE__ROLE_REWARD_WORKER;
    }
    k.policy_version = s->weights[0].set ? s->weights[0].version : 0;
    k.late_replies = s->late_replies;
    k.expired_work = s->expired_work;
    k.score_requeues = s->score_requeues;
    k.hello_refused = s->hello_refused;
    k.peer_mismatch = s->peer_mismatch;
    k.future_version = s->future_version;
    return k;
}

// ---- trajectories, groups, work ---------------------------------------------------------

static void traj_free(traj_t *t) {
    if (!t)
        return;
    wire_arena_release(&t->arena);
    free(t->payload);
    free(t);
}

static void work_remove(hub_loop_t *s, work_t *w) {
    for (int i = 0; i < s->n_works; i++)
        if (s->works[i] == w) {
            s->works[i] = s->works[--s->n_works];
            break;
        }
    for (int g = 0; g < w->n_groups; g++) {
        for (int i = 0; i < w->groups[g].n_scored; i++)
            traj_free(w->groups[g].scored[i]);
        free(w->groups[g].arrived);
        free(w->groups[g].scored);
    }
    free(w->groups);
    free(w);
}

static work_t *work_find(hub_loop_t *s, uint64_t work_id) {
    for (int i = 0; i < s->n_works; i++)
        if (s->works[i]->work_id == work_id)
            return s->works[i];
    return NULL;
}

// Hands a settled group to the learner queue once nothing more can join it.
static void group_check(hub_loop_t *s, group_t *g) {
    work_t *w = g->work;
    if (g->flushed || g->n_settled < g->n_arrived ||
        (g->n_arrived < g->k && w->state != WORK_CLOSED))
        return;
    g->flushed = 1;
    w->open_groups--;
    if (g->n_scored > 0) {
        ready_t *r = calloc(1, sizeof *r);
        if (!r) { // out of memory: the group is lost, but counted
            s->n.dropped_score += (uint64_t)g->n_scored;
            for (int i = 0; i < g->n_scored; i++)
                traj_free(g->scored[i]);
        } else {
            r->v = g->scored;
            r->n = g->n_scored;
            g->scored = NULL;
            if (s->rq_tail)
                s->rq_tail->next = r;
            else
                s->rq_head = r;
            s->rq_tail = r;
            s->learner_queue += (uint32_t)r->n;
        }
        g->n_scored = 0;
    }
    if (w->state == WORK_CLOSED && w->open_groups == 0 && !w->busy)
        work_remove(s, w);
}

// A trajectory is settled: scored (it joins its group's survivors) or dropped (the caller
// counted why). May free the trajectory, the group and its work item.
static void settle(hub_loop_t *s, traj_t *t, int scored) {
    group_t *g = t->group;
    assert(s->unscored > 0);
    s->unscored--;
    g->n_settled++;
    if (scored)
        g->scored[g->n_scored++] = t;
    else
        traj_free(t);
    group_check(s, g);
}

static void work_close(hub_loop_t *s, work_t *w) {
    if (w->state == WORK_CLOSED)
        return;
    w->state = WORK_CLOSED;
    w->busy = 1;
    for (int g = 0; g < w->n_groups; g++)
        group_check(s, &w->groups[g]);
    w->busy = 0;
    if (w->open_groups == 0)
        work_remove(s, w);
}

static void work_expire(hub_loop_t *s, work_t *w, int64_t now) {
    if (w->state != WORK_OUT)
        return;
    s->expired_work++;
    note(s, EV_WORK_EXPIRED, "work item %llu of actor %u expired (no trajectories in time)",
         (unsigned long long)w->work_id, w->actor_id);
    w->state = WORK_LATE;
    w->purge_at = now + s->c.work_deadline_ms;
}

// Trajectories still expected from work items out at actors.
static uint64_t expected_from_actors(const hub_loop_t *s) {
    uint64_t n = 0;
    for (int i = 0; i < s->n_works; i++) {
        const work_t *w = s->works[i];
        if (w->state != WORK_OUT)
            continue;
        for (int g = 0; g < w->n_groups; g++)
            n += (uint64_t)(w->groups[g].k - w->groups[g].n_arrived);
    }
    return n;
}

// ---- the score queue -------------------------------------------------------------------------

static void sq_push_back(hub_loop_t *s, traj_t *t) {
    t->next = NULL;
    if (s->sq_tail)
        s->sq_tail->next = t;
    else
        s->sq_head = t;
    s->sq_tail = t;
}

static void sq_push_front(hub_loop_t *s, traj_t *t) {
    t->next = s->sq_head;
    s->sq_head = t;
    if (!s->sq_tail)
        s->sq_tail = t;
}

static traj_t *sq_pop(hub_loop_t *s) {
    traj_t *t = s->sq_head;
    if (t) {
        s->sq_head = t->next;
        if (!s->sq_head)
            s->sq_tail = NULL;
        t->next = NULL;
    }
    return t;
}

// A trajectory came back without a score (deadline, worker gone, missing from the reply):
// again, or dropped when it has had its tries.
static void score_retry(hub_loop_t *s, traj_t *t, const char *why) {
    if (t->attempts > s->c.score_retries) {
        s->n.dropped_score++;
        note(s, EV_SCORE_DROPPED, "trajectory (%u,%llu) dropped unscored after %d tries (%s)",
             t->t->id->actor_id, (unsigned long long)t->t->id->seq, t->attempts, why);
        settle(s, t, 0);
    } else {
        s->score_requeues++;
        sq_push_front(s, t);
    }
}

static worker_t *worker_by_id(hub_loop_t *s, uint32_t id) {
    for (int i = 0; i < s->n_workers; i++)
        if (s->workers[i]->id == id)
            return s->workers[i];
    return NULL;
}

// Removes request i (its trajectories already taken care of) and gives the credit back.
static void request_remove(hub_loop_t *s, int i) {
    worker_t *w = worker_by_id(s, s->requests[i].worker_id);
    if (w && w->outstanding > 0)
        w->outstanding--;
    free(s->requests[i].items);
    s->requests[i] = s->requests[--s->n_requests];
}

// Requeues request i's trajectories (back to the front, retried first, in order).
static void request_requeue(hub_loop_t *s, int i, const char *why) {
    request_t *r = &s->requests[i];
    for (int j = r->n - 1; j >= 0; j--)
        score_retry(s, r->items[j], why);
    request_remove(s, i);
}

// ---- workers --------------------------------------------------------------------------------

static worker_t *worker_by_peer(hub_loop_t *s, const wire_peer_t *p) {
    for (int i = 0; i < s->n_workers; i++) {
        worker_t *w = s->workers[i];
        if (w->peer.size == p->size && memcmp(w->peer.data, p->data, p->size) == 0)
            return w;
    }
    return NULL;
}

// Forgets a worker: its score requests go back to the queue, its work items expire.
static void worker_remove(hub_loop_t *s, worker_t *w, const char *why) {
    int requests = 0, trajs = 0, items = 0; // what it held, for the log line
    for (int i = 0; i < s->n_requests; i++)
        if (s->requests[i].worker_id == w->id) {
            requests++;
            trajs += s->requests[i].n;
        }
    for (int i = 0; w->role == RLX__ROLE__ROLE_ACTOR && i < s->n_works; i++)
        items += s->works[i]->actor_id == w->id && s->works[i]->state == WORK_OUT;
    char held[96] = "";
    if (requests)
        snprintf(held, sizeof held, "; it held %d score requests (%d trajectories): requeued",
                 requests, trajs);
    else if (items)
        snprintf(held, sizeof held, "; it held %d work items: expired", items);
    fprintf(stderr, "hub: %s %u (%s) %s%s\n", role_name(w->role), w->id, w->name, why, held);
    for (int i = s->n_requests - 1; i >= 0; i--)
        if (s->requests[i].worker_id == w->id)
            request_requeue(s, i, why);
    int64_t now = now_ms();
    if (w->role == RLX__ROLE__ROLE_ACTOR)
        for (int i = 0; i < s->n_works; i++)
            if (s->works[i]->actor_id == w->id)
                work_expire(s, s->works[i], now);
    for (int i = 0; i < s->n_workers; i++)
        if (s->workers[i] == w) {
            s->workers[i] = s->workers[--s->n_workers];
            break;
        }
    free(w);
}

static Rlx__WeightAnnounce announce_of(const blob_t *b) {
    Rlx__WeightAnnounce a = RLX__WEIGHT_ANNOUNCE__INIT;
    a.version = b->version;
    a.total_bytes = b->len;
    a.num_chunks = b->num_chunks;
    a.chunk_bytes = (uint32_t)WIRE_WEIGHT_CHUNK_BYTES;
    a.crc32 = b->crc;
    return a;
}

// A random non-zero secret for a new worker id (getrandom; the prompt rng mixed with the
// clock if the kernel has none to give).
static uint64_t new_session_key(hub_loop_t *s) {
    uint64_t k = 0;
    while (k == 0)
        if (getrandom(&k, sizeof k, GRND_NONBLOCK) != (ssize_t)sizeof k)
            k = rng_next(&s->rng) ^ (uint64_t)now_ms() * 0x9e3779b97f4a7c15ull;
    return k;
}

static void on_hello(hub_loop_t *s, const wire_peer_t *from, const Rlx__Envelope *env) {
    const Rlx__Hello *h = env->hello;
    if (h->role < RLX__ROLE__ROLE_ACTOR || h->role > RLX__ROLE__ROLE_OBSERVER) {
        bad_request(s, from, env->seq,
                    "Hello with role %d: say ROLE_ACTOR, ROLE_REWARD_WORKER, "
                    "ROLE_LEARNER or ROLE_OBSERVER",
                    (int)h->role);
        return;
    }
    // A Hello from a connection the hub knows, or under an id the hub assigned with that id's
    // session key, is a restart of that worker: whatever it held is requeued and it starts
    // afresh under the same id. A known id without its key is refused (it would take over
    // another worker's work and trajectory ids); an id never assigned gets a fresh one.
    uint32_t id = 0;
    worker_t *old = worker_by_peer(s, from);
    if (h->worker_id && h->worker_id < s->next_worker_id) {
        const session_t *ss = &s->sessions[h->worker_id];
        int same_peer = ss->peer.size == from->size &&
                        memcmp(ss->peer.data, from->data, from->size) == 0;
        if (h->session_key != ss->key && !same_peer) {
            s->hello_refused++;
            note(s, EV_HELLO_REFUSED, "Hello as worker %u without its session key: refused",
                 h->worker_id);
            send_error(s, from, RLX__ERROR_CODE__ERROR_CODE_BAD_REQUEST, env->seq,
                       "Hello as worker %u without that worker's session_key: send the key of "
                       "its Welcome, or worker_id 0 to join as a new worker",
                       h->worker_id);
            return;
        }
        id = h->worker_id;
    }
    if (old) {
        if (!id)
            id = old->id;
        worker_remove(s, old, "rejoined");
    }
    worker_t *same = id ? worker_by_id(s, id) : NULL;
    if (same)
        worker_remove(s, same, "rejoined from a new connection");
    if (!id) { // a new worker: a new id and secret
        if (s->next_worker_id >= s->cap_sessions) {
            uint32_t cap = s->cap_sessions ? 2 * s->cap_sessions : 64;
            session_t *v = realloc(s->sessions, (size_t)cap * sizeof *v);
            if (!v)
                return;
            memset(v + s->cap_sessions, 0, (size_t)(cap - s->cap_sessions) * sizeof *v);
            s->sessions = v;
            s->cap_sessions = cap;
        }
        id = s->next_worker_id++;
        s->sessions[id].key = new_session_key(s);
    }
    s->sessions[id].peer = *from;
    if (s->n_workers == s->cap_workers) {
        int cap = s->cap_workers ? 2 * s->cap_workers : 16;
        worker_t **v = realloc(s->workers, (size_t)cap * sizeof *v);
        if (!v)
            return;
        s->workers = v;
        s->cap_workers = cap;
    }
    worker_t *w = calloc(1, sizeof *w);
    if (!w)
        return;
    int64_t now = now_ms();
    w->id = id;
    w->peer = *from;
    w->role = h->role;
    snprintf(w->name, sizeof w->name, "%s", h->name && h->name[0] ? h->name : "unnamed");
    w->session_key = s->sessions[id].key;
    w->last_seen = now;
    w->next_hb = now + s->c.heartbeat_ms;
    w->capacity = h->credits > 0 ? (int)h->credits : 1;
    w->max_batch = (int)h->max_batch;
    w->can_score = h->n_scorers == 0;
    for (size_t i = 0; i < h->n_scorers; i++)
        w->can_score |= strcmp(h->scorers[i], s->scorer) == 0;
    if (w->role == RLX__ROLE__ROLE_REWARD_WORKER && !w->can_score)
        note(s, EV_NO_SCORER,
             "reward worker %u (%s) does not list scorer \"%s\": no requests "
             "go to it",
             id, w->name, s->scorer);
    s->workers[s->n_workers++] = w;
    fprintf(stderr, "hub: %s %u (%s) joined\n", role_name(w->role), id, w->name);

    Rlx__Welcome wel = RLX__WELCOME__INIT;
    Rlx__WeightAnnounce ann;
    wel.worker_id = id;
    wel.heartbeat_interval_ms = (uint32_t)s->c.heartbeat_ms;
    wel.heartbeat_liveness = (uint32_t)s->c.liveness;
    wel.session_key = w->session_key;
    if (s->weights[0].set) {
        ann = announce_of(&s->weights[0]);
        wel.policy_version = ann.version;
        wel.weights = &ann;
    }
    Rlx__Envelope out = RLX__ENVELOPE__INIT;
    out.body_case = RLX__ENVELOPE__BODY_WELCOME;
    out.welcome = &wel;
    send_to(s, from, &out);
}

// ---- run status -----------------------------------------------------------------------------

static void send_status(hub_loop_t *s, const worker_t *w) {
    Rlx__RunStatus st = RLX__RUN_STATUS__INIT;
    if (s->report && s->report->body_case == RLX__ENVELOPE__BODY_RUN_STATUS) {
        st = *s->report->run_status; // the learner's fields
        st.n_counters = 0;
        st.counters = NULL;
    }
    hub_counters_t k = counters(s);
    if (st.samples == 0) // no report yet (or one without it): what the learner was handed
        st.samples = k.delivered;
    st.sampled = k.sampled;
    st.policy_version = k.policy_version;
    st.dropped_invalid = k.dropped_invalid + k.dropped_score;
    st.work_queue = k.work_queue;
    st.score_queue = k.score_queue;
    st.learner_queue = k.learner_queue;
    st.in_flight = k.in_flight;
    st.actors = k.actors;
    st.reward_workers = k.reward_workers;
    struct {
        const char *key;
        uint64_t value;
    } named[] = {
        {"delivered", k.delivered},
        {"dropped_invalid", k.dropped_invalid},
        {"dropped_score", k.dropped_score},
        {"dropped_shutdown", k.dropped_shutdown},
        {"duplicates", k.duplicates},
        {"wire_errors", k.wire_errors},
        {"send_failures", k.send_failures},
        {"late_replies", k.late_replies},
        {"expired_work", k.expired_work},
        {"score_requeues", k.score_requeues},
        {"bad_requests", s->bad_requests},
        {"not_joined", s->not_joined},
        {"weight_chunks_sent", s->chunks_sent},
        {"hello_refused", k.hello_refused},
        {"peer_mismatch", k.peer_mismatch},
        {"future_version", k.future_version},
    };
    enum { NN = sizeof named / sizeof named[0] };
    Rlx__RunStatus__CountersEntry e[NN], *pe[NN];
    for (int i = 0; i < NN; i++) {
        rlx__run_status__counters_entry__init(&e[i]);
        e[i].key = (char *)named[i].key;
        e[i].value = named[i].value;
        pe[i] = &e[i];
    }
    st.n_counters = NN;
    st.counters = pe;
    Rlx__Envelope out = RLX__ENVELOPE__INIT;
    out.body_case = RLX__ENVELOPE__BODY_RUN_STATUS;
    out.run_status = &st;
    send_to(s, &w->peer, &out);
}

// ---- the seen table (duplicate TrajectoryIds) ----------------------------------------------

static int seen_bit(const seen_t *e, uint64_t seq) {
    uint64_t b = seq % SEEN_WINDOW;
    return (int)(e->bits[b / 64] >> (b % 64)) & 1;
}

static void seen_flip(seen_t *e, uint64_t seq) {
    uint64_t b = seq % SEEN_WINDOW;
    e->bits[b / 64] ^= 1ull << (b % 64);
}

// The seen table of actor (created empty on first use), or NULL out of memory.
static seen_t *seen_of(hub_loop_t *s, uint32_t actor) {
    if (s->seen_last < s->n_seen && s->seen[s->seen_last].actor == actor)
        return &s->seen[s->seen_last];
    for (size_t i = 0; i < s->n_seen; i++)
        if (s->seen[i].actor == actor) {
            s->seen_last = i;
            return &s->seen[i];
        }
    if (s->n_seen == s->cap_seen) {
        size_t cap = s->cap_seen ? 2 * s->cap_seen : 16;
        seen_t *v = realloc(s->seen, cap * sizeof *v);
        if (!v)
            return NULL;
        s->seen = v;
        s->cap_seen = cap;
    }
    uint64_t *bits = calloc(SEEN_WINDOW / 64, sizeof *bits);
    if (!bits)
        return NULL;
    s->seen_last = s->n_seen++;
    seen_t *e = &s->seen[s->seen_last];
    *e = (seen_t){.actor = actor, .floor = 0, .bits = bits};
    return e;
}

// 1 if seq of e was seen (or is too far behind to tell), else 0.
static int seen_has(const seen_t *e, uint64_t seq) {
    if (seq <= e->floor)
        return 1;
    uint64_t newest = e->floor + SEEN_WINDOW; // the window covers (floor, floor + SEEN_WINDOW]
    return seq <= newest && seen_bit(e, seq);
}

// 1 if the actor of e can have reached seq: at most e->asked beyond its first one.
static int seen_plausible(const seen_t *e, uint64_t seq) {
    return !e->has_base ? e->asked > 0 : seq > e->base && seq - e->base <= e->asked;
}

// Enters seq (not seen, plausible) into e, sliding the window when it is ahead of it.
static void seen_add(seen_t *e, uint64_t seq) {
    if (!e->has_base) {
        e->has_base = 1;
        e->base = seq - 1;
    }
    if (seq - e->floor > SEEN_WINDOW) { // slide: what falls behind counts as seen
        uint64_t floor = seq - SEEN_WINDOW;
        if (floor - e->floor >= SEEN_WINDOW)
            memset(e->bits, 0, SEEN_WINDOW / 8);
        else
            for (uint64_t q = e->floor + 1; q <= floor; q++)
                if (seen_bit(e, q))
                    seen_flip(e, q);
        e->floor = floor;
    }
    seen_flip(e, seq);
    while (seen_bit(e, e->floor + 1)) { // the watermark follows the run of seqs all seen
        seen_flip(e, e->floor + 1);
        e->floor++;
    }
}

// ---- actors: work ---------------------------------------------------------------------------

static size_t draw_prompt(hub_loop_t *s) {
    if (s->next_prompt == s->n_prompts) { // new epoch, new order
        for (size_t i = s->n_prompts - 1; i > 0; i--) {
            size_t j = rng_below(&s->rng, (uint32_t)(i + 1));
            size_t tmp = s->order[i];
            s->order[i] = s->order[j];
            s->order[j] = tmp;
        }
        s->next_prompt = 0;
    }
    return s->order[s->next_prompt++];
}

static int work_allowed(hub_loop_t *s) {
    return !s->draining && s->learner_queue < (uint32_t)s->c.max_learner_queue &&
           in_flight(s) + expected_from_actors(s) < (uint64_t)s->c.max_in_flight;
}

// Builds, records and sends one WorkItem to actor a. 0 or -1 (nothing recorded).
static int send_work(hub_loop_t *s, worker_t *a) {
    int np = s->c.prompts_per_item;
    if (a->max_batch > 0 && a->max_batch < np)
        np = a->max_batch;
    if ((size_t)np > s->n_prompts)
        np = (int)s->n_prompts;
    int k = s->c.samples_per_prompt;
    if (s->n_works == s->cap_works) {
        int cap = s->cap_works ? 2 * s->cap_works : 64;
        work_t **v = realloc(s->works, (size_t)cap * sizeof *v);
        if (!v)
            return -1;
        s->works = v;
        s->cap_works = cap;
    }
    work_t *w = calloc(1, sizeof *w);
    Rlx__Prompt *pm = calloc((size_t)np, sizeof *pm);
    Rlx__Prompt **pp = calloc((size_t)np, sizeof *pp);
    if (!w || !pm || !pp || !(w->groups = calloc((size_t)np, sizeof *w->groups)))
        goto fail;
    w->work_id = s->next_work_id;
    w->actor_id = a->id;
    w->n_groups = np;
    for (int g = 0; g < np; g++) {
        size_t p;
        int again;
        do { // a prompt at most once per item, so (work_id, prompt_id) names one group
            p = draw_prompt(s);
            again = 0;
            for (int j = 0; j < g; j++)
                again |= w->groups[j].prompt == p;
        } while (again);
        group_t *gr = &w->groups[g];
        gr->work = w;
        gr->prompt = p;
        gr->k = k;
        gr->arrived = calloc((size_t)k, 1);
        gr->scored = calloc((size_t)k, sizeof *gr->scored);
        if (!gr->arrived || !gr->scored)
            goto fail;
        rlx__prompt__init(&pm[g]);
        pm[g].prompt_id = p;
        pm[g].n_tokens = s->prompts[p].n_tokens;
        pm[g].tokens = s->prompts[p].tokens;
        pm[g].text = s->prompts[p].text;
        pp[g] = &pm[g];
    }
    w->open_groups = np;
    uint32_t stop_tok = GPT_TOK_EOS;
    rng_t r;
    rng_seed2(&r, s->c.seed, w->work_id);
    Rlx__WorkItem it = RLX__WORK_ITEM__INIT;
    it.work_id = w->work_id;
    it.n_prompts = (size_t)np;
    it.prompts = pp;
    it.samples_per_prompt = (uint32_t)k;
    it.policy_version = s->weights[0].set ? s->weights[0].version : 0;
    it.temperature = s->c.temperature;
    it.top_k = (uint32_t)s->c.top_k;
    it.max_new_tokens = (uint32_t)s->c.max_new_tokens;
    it.n_stop_tokens = 1;
    it.stop_tokens = &stop_tok;
    it.n_allowed_tokens = (size_t)s->c.n_allowed_tokens;
    it.allowed_tokens = s->c.allowed_tokens;
    it.seed = rng_next(&r);
    it.deadline_ms = (uint32_t)s->c.work_deadline_ms;
    Rlx__GflowEnv genv;
    if (s->c.gflow_ndim > 0)
        hub_gflow_work(&s->c, &it, &genv);
    Rlx__DiffusionSpec dspec;
    int32_t dlabels[HUB_DIFF_MAX_PROMPTS];
    uint32_t dshape[4];
    if (s->c.diff_steps > 0)
        hub_diff_work(&s->c, &it, &dspec, dlabels, dshape);
    Rlx__Envelope env = RLX__ENVELOPE__INIT;
    env.body_case = RLX__ENVELOPE__BODY_WORK_ITEM;
    env.work_item = &it;
    if (send_to(s, &a->peer, &env) != WIRE_OK)
        goto fail;
    free(pm);
    free(pp);
    s->next_work_id++;
    seen_t *e = seen_of(s, a->id);
    if (e)
        e->asked += (uint64_t)np * (uint64_t)k;
    w->state = WORK_OUT;
    w->deadline = now_ms() + s->c.work_deadline_ms;
    s->works[s->n_works++] = w;
    return 0;
fail:
    if (w && w->groups)
        for (int g = 0; g < np; g++) {
            free(w->groups[g].arrived);
            free(w->groups[g].scored);
        }
    if (w)
        free(w->groups);
    free(w);
    free(pm);
    free(pp);
    return -1;
}

// Hands out work to actors with credits, round robin, while backpressure allows.
static void dispatch_work(hub_loop_t *s) {
    for (;;) {
        worker_t *pick = NULL;
        uint32_t best = 0;
        for (int i = 0; i < s->n_workers; i++) { // the next actor id after rr_actor, wrapping
            worker_t *w = s->workers[i];
            if (w->role != RLX__ROLE__ROLE_ACTOR || w->want == 0)
                continue;
            uint32_t key = w->id - s->rr_actor - 1; // wraps: the last one served comes last
            if (!pick || key < best) {
                pick = w;
                best = key;
            }
        }
        if (!pick || !work_allowed(s))
            return;
        s->rr_actor = pick->id;
        if (send_work(s, pick) != 0) {
            pick->want = 0; // unreachable or full: it asks again
            continue;
        }
        pick->want--;
    }
}

// ---- actors: trajectories ---------------------------------------------------------------------

// Why trajectory t (from actor a) cannot be accepted, or NULL if it can; *slot_g gets its
// group when it names a valid free slot of one (so a refused sample still settles it).
static const char *check_traj(hub_loop_t *s, const Rlx__Trajectory *t, group_t **slot_g) {
    *slot_g = NULL;
    work_t *w = work_find(s, t->work_id);
    if (!w)
        return "unknown work_id";
    if (w->actor_id != t->id->actor_id)
        return "work item of another actor";
    if (w->state == WORK_CLOSED)
        return "work item already completed";
    group_t *g = NULL;
    for (int i = 0; i < w->n_groups; i++)
        if (w->groups[i].prompt == t->prompt_id)
            g = &w->groups[i];
    if (!g)
        return "prompt_id not in the work item";
    if ((int)t->group_size != g->k || (int)t->group_index >= g->k)
        return "group_index/group_size do not match samples_per_prompt";
    if (g->arrived[t->group_index])
        return "a second sample for the same group slot";
    *slot_g = g;
    if (t->policy_version > (s->weights[0].set ? s->weights[0].version : 0)) {
        s->future_version++;
        return "policy_version newer than any the hub published";
    }
    if (s->c.gflow_ndim > 0)
        return hub_gflow_check(&s->c, t);
    if (s->c.diff_steps > 0)
        return hub_diff_check(&s->c, t, g->prompt);
    if (t->kind_case != RLX__TRAJECTORY__KIND_TEXT || !t->text)
        return "not a text trajectory";
    const Rlx__TextTrajectory *x = t->text;
    const prompt_t *p = &s->prompts[g->prompt];
    if (x->n_prompt_tokens != p->n_tokens ||
        memcmp(x->prompt_tokens, p->tokens, p->n_tokens * sizeof *p->tokens) != 0)
        return "prompt tokens differ from the work item's prompt";
    if (x->n_response_tokens < 1 || x->n_response_tokens > (size_t)s->c.max_new_tokens)
        return "response length outside 1..max_new_tokens";
    if (x->n_logprobs != x->n_response_tokens)
        return "logprobs count differs from the response length";
    // Branch-free scans (they vectorise): this runs for every token the hub relays.
    uint32_t top = 0;
    for (size_t i = 0; i < x->n_response_tokens; i++)
        top = x->response_tokens[i] > top ? x->response_tokens[i] : top;
    if (top >= GPT_VOCAB)
        return "response token outside the vocabulary";
    if (s->c.n_allowed_tokens > 0) {
        int outside = 0; // every token is < GPT_VOCAB here
        for (size_t i = 0; i < x->n_response_tokens; i++)
            outside |= !s->allowed[x->response_tokens[i]];
        if (outside)
            return "response token outside the work item's allowed_tokens";
    }
    int bad = 0; // NaN fails both comparisons, so it counts as bad too
    for (size_t i = 0; i < x->n_logprobs; i++)
        bad |= !(x->logprobs[i] >= WIRE_LOGPROB_MIN && x->logprobs[i] <= LOGPROB_SLACK);
    if (bad)
        return "logprob outside [WIRE_LOGPROB_MIN, 0] (not what an fp32 sampler can draw)";
    return NULL;
}

// accept_traj for a checked GflowTrajectory: its terminal state is the scorer's payload.
static int accept_gflow(hub_loop_t *s, Rlx__Trajectory *t, group_t *g) {
    traj_t *h = calloc(1, sizeof *h);
    if (h && s->c.diff_steps > 0) {
        hub_diff_item(t, s->scorer, s->prompts[g->prompt].target, &h->item);
    } else if (!h || hub_gflow_item(&s->c, t, s->scorer, &h->item, &h->payload, h->shape) != 0) {
        free(h);
        return -1;
    }
    h->t = t;
    h->group = g;
    t->scored = 0;
    t->reward = 0;
    g->arrived[t->group_index] = 1;
    g->n_arrived++;
    s->unscored++;
    sq_push_back(s, h);
    return 0;
}

// Builds the held trajectory (taking ownership of t) and queues it for scoring.
static int accept_traj(hub_loop_t *s, Rlx__Trajectory *t, group_t *g) {
    if (s->c.gflow_ndim > 0 || s->c.diff_steps > 0)
        return accept_gflow(s, t, g);
    const Rlx__TextTrajectory *x = t->text;
    size_t cap = 3 * x->n_response_tokens + 1; // U+FFFD is the longest a token decodes to
    traj_t *h = malloc(sizeof *h + cap);
    if (!h)
        return -1;
    memset(h, 0, sizeof *h);
    bytetok_decode_wire(x->response_tokens, (int)x->n_response_tokens, GPT_VOCAB, h->response_text,
                        cap);
    h->t = t;
    h->group = g;
    rlx__score_item__init(&h->item);
    h->item.id = t->id;
    h->item.prompt_text = s->prompts[g->prompt].text;
    h->item.response_text = h->response_text;
    h->item.target = s->prompts[g->prompt].target;
    h->item.scorer = s->scorer;
    h->item.kind = RLX__TRAJECTORY_KIND__TRAJECTORY_KIND_TEXT;
    t->scored = 0;
    t->reward = 0;
    g->arrived[t->group_index] = 1;
    g->n_arrived++;
    s->unscored++;
    sq_push_back(s, h);
    return 0;
}

static void on_trajectories(hub_loop_t *s, worker_t *a, Rlx__Envelope *env) {
    Rlx__TrajectoryBatch *b = env->trajectory_batch;
    for (size_t i = 0; i < b->n_trajectories; i++) {
        Rlx__Trajectory *t = b->trajectories[i];
        if (!t->id || t->id->actor_id != a->id || t->id->seq == 0) {
            s->n.sampled++;
            s->n.dropped_invalid++;
            note(s, EV_INVALID,
                 "invalid trajectory from actor %u: missing id, seq 0 or "
                 "another actor's id",
                 a->id);
            continue;
        }
        seen_t *e = seen_of(s, a->id);
        if (e && seen_has(e, t->id->seq)) {
            s->n.duplicates++;
            note(s, EV_DUPLICATE, "duplicate trajectory (%u,%llu)", t->id->actor_id,
                 (unsigned long long)t->id->seq);
            continue;
        }
        s->n.sampled++;
        if (s->drained) {
            s->n.dropped_shutdown++;
            continue;
        }
        group_t *g;
        const char *why = check_traj(s, t, &g);
        if (!e) {
            why = why ? why : "out of memory";
        } else if (g) { // it names a slot of this actor's work: it enters the seen table
            if (seen_plausible(e, t->id->seq))
                seen_add(e, t->id->seq);
            else if (!why)
                why = "seq beyond the trajectories the hub asked of this actor";
        }
        if (!why && accept_traj(s, t, g) == 0) {
            traj_t *held = s->sq_tail; // accept_traj queued it last
            assert(held && held->t == t);
            held->arena = wire_arena_retain(env);
            b->trajectories[i] = NULL; // detached: now held by the hub
            continue;
        }
        if (!why)
            why = "out of memory";
        s->n.dropped_invalid++;
        note(s, EV_INVALID, "invalid trajectory (%u,%llu) for work %llu: %s", t->id->actor_id,
             (unsigned long long)t->id->seq, (unsigned long long)t->work_id, why);
        if (g) { // the slot is spent: the group does not wait for it
            g->arrived[t->group_index] = 1;
            g->n_arrived++;
            g->n_settled++;
            group_check(s, g);
        }
    }
    // Compact away the detached ones (their memory stays with the arena references).
    size_t m = 0;
    for (size_t i = 0; i < b->n_trajectories; i++)
        if (b->trajectories[i])
            b->trajectories[m++] = b->trajectories[i];
    b->n_trajectories = m;
    if (b->work_id) { // the batch completes its work item
        work_t *w = work_find(s, b->work_id);
        if (w && w->actor_id == a->id)
            work_close(s, w);
    }
}

// ---- reward workers ------------------------------------------------------------------------

// Sends ScoreRequests to the least-loaded reward workers with free credits.
static void dispatch_scoring(hub_loop_t *s) {
    while (s->sq_head) {
        worker_t *best = NULL;
        for (int i = 0; i < s->n_workers; i++) {
            worker_t *w = s->workers[i];
            if (w->role != RLX__ROLE__ROLE_REWARD_WORKER || !w->can_score ||
                w->outstanding >= w->capacity)
                continue;
            if (!best || w->outstanding * best->capacity < best->outstanding * w->capacity)
                best = w;
        }
        if (!best)
            return;
        int n = s->c.score_batch > 0 ? s->c.score_batch : 1;
        if (best->max_batch > 0 && best->max_batch < n)
            n = best->max_batch;
        if (s->n_requests == s->cap_requests) {
            int cap = s->cap_requests ? 2 * s->cap_requests : 32;
            request_t *v = realloc(s->requests, (size_t)cap * sizeof *v);
            if (!v)
                return;
            s->requests = v;
            s->cap_requests = cap;
        }
        traj_t **items = malloc((size_t)n * sizeof *items);
        Rlx__ScoreItem **pi = malloc((size_t)n * sizeof *pi);
        if (!items || !pi) {
            free(items);
            free(pi);
            return;
        }
        int m = 0;
        while (m < n && s->sq_head) {
            items[m] = sq_pop(s);
            pi[m] = &items[m]->item;
            m++;
        }
        Rlx__ScoreRequest rq = RLX__SCORE_REQUEST__INIT;
        rq.request_id = s->next_request_id++;
        rq.n_items = (size_t)m;
        rq.items = pi;
        rq.deadline_ms = (uint32_t)s->c.score_deadline_ms;
        Rlx__Envelope env = RLX__ENVELOPE__INIT;
        env.body_case = RLX__ENVELOPE__BODY_SCORE_REQUEST;
        env.score_request = &rq;
        int rc = send_to(s, &best->peer, &env);
        free(pi);
        if (rc != WIRE_OK) { // back to the front, in order; try again next turn
            for (int j = m - 1; j >= 0; j--)
                sq_push_front(s, items[j]);
            free(items);
            if (rc == WIRE_ERR_UNREACHABLE)
                worker_remove(s, best, "is unreachable (disconnected)");
            return;
        }
        for (int j = 0; j < m; j++)
            items[j]->attempts++;
        request_t *r = &s->requests[s->n_requests++];
        r->request_id = rq.request_id;
        r->worker_id = best->id;
        r->deadline = now_ms() + s->c.score_deadline_ms;
        r->n = m;
        r->items = items;
        best->outstanding++;
    }
}

static void on_score_reply(hub_loop_t *s, worker_t *w, const Rlx__ScoreReply *rp) {
    int ri = -1;
    for (int i = 0; i < s->n_requests; i++)
        if (s->requests[i].request_id == rp->request_id && s->requests[i].worker_id == w->id)
            ri = i;
    if (ri < 0) {
        s->late_replies++;
        note(s, EV_LATE_REPLY,
             "reply to score request %llu from %u, which the hub no longer "
             "waits for: dropped",
             (unsigned long long)rp->request_id, w->id);
        return;
    }
    request_t *r = &s->requests[ri];
    for (size_t k = 0; k < rp->n_results; k++) {
        const Rlx__ScoreResult *res = rp->results[k];
        if (!res->id)
            continue;
        // Replies normally keep the request's order: look at slot k first, then everywhere.
        for (int jj = -1; jj < r->n; jj++) {
            int j = jj < 0 ? (int)k : jj;
            if (j >= r->n || (jj >= 0 && j == (int)k))
                continue;
            traj_t *t = r->items[j];
            if (!t || t->t->id->actor_id != res->id->actor_id || t->t->id->seq != res->id->seq)
                continue;
            r->items[j] = NULL;
            if ((res->error && res->error[0]) || !isfinite(res->reward)) {
                s->n.dropped_score++;
                note(s, EV_SCORER_ERROR, "scorer error for trajectory (%u,%llu): %s",
                     res->id->actor_id, (unsigned long long)res->id->seq,
                     res->error && res->error[0] ? res->error : "non-finite reward");
                settle(s, t, 0);
            } else {
                t->t->scored = 1;
                t->t->reward = res->reward;
                settle(s, t, 1);
            }
            break;
        }
    }
    // Items the reply left out are tried again.
    int m = 0;
    for (int j = 0; j < r->n; j++)
        if (r->items[j])
            r->items[m++] = r->items[j];
    r->n = m;
    request_requeue(s, ri, "missing from the reply");
}

// ---- weights --------------------------------------------------------------------------------

static void announce_weights(hub_loop_t *s) {
    Rlx__WeightAnnounce a = announce_of(&s->weights[0]);
    Rlx__Envelope env = RLX__ENVELOPE__INIT;
    env.body_case = RLX__ENVELOPE__BODY_WEIGHT_ANNOUNCE;
    env.weight_announce = &a;
    for (int i = 0; i < s->n_workers; i++)
        if (s->workers[i]->role == RLX__ROLE__ROLE_ACTOR)
            send_to(s, &s->workers[i]->peer, &env);
}

static void on_weight_request(hub_loop_t *s, const wire_peer_t *from, const Rlx__Envelope *env) {
    const Rlx__WeightRequest *q = env->weight_request;
    blob_t *b = NULL;
    for (int i = 0; i < 2; i++)
        if (s->weights[i].set && s->weights[i].version == q->version)
            b = &s->weights[i];
    if (!b) {
        note(s, EV_UNAVAILABLE, "weights of version %llu requested, no longer held",
             (unsigned long long)q->version);
        send_error(s, from, RLX__ERROR_CODE__ERROR_CODE_UNAVAILABLE, env->seq,
                   "weights of version %llu are not held (newest: %llu): fetch the newest",
                   (unsigned long long)q->version,
                   (unsigned long long)(s->weights[0].set ? s->weights[0].version : 0));
        return;
    }
    if (q->first_chunk >= b->num_chunks) {
        bad_request(s, from, env->seq, "chunk %u of weights version %llu asked, it has %u",
                    q->first_chunk, (unsigned long long)b->version, b->num_chunks);
        return;
    }
    uint32_t n = q->num_chunks ? q->num_chunks : 1;
    if (n > MAX_CHUNKS_PER_REQUEST)
        n = MAX_CHUNKS_PER_REQUEST;
    if (n > b->num_chunks - q->first_chunk)
        n = b->num_chunks - q->first_chunk;
    const uint8_t *data = zmq_msg_data(&b->msg);
    for (uint32_t i = q->first_chunk; i < q->first_chunk + n; i++) {
        size_t off = (size_t)i * WIRE_WEIGHT_CHUNK_BYTES;
        size_t len =
            b->len - off < WIRE_WEIGHT_CHUNK_BYTES ? b->len - off : WIRE_WEIGHT_CHUNK_BYTES;
        Rlx__WeightChunk ch = RLX__WEIGHT_CHUNK__INIT;
        ch.version = b->version;
        ch.index = i;
        ch.offset = off;
        ch.data.data = (uint8_t *)data + off;
        ch.data.len = len;
        ch.crc32 = b->chunk_crc[i];
        Rlx__Envelope out = RLX__ENVELOPE__INIT;
        out.body_case = RLX__ENVELOPE__BODY_WEIGHT_CHUNK;
        out.weight_chunk = &ch;
        if (send_to(s, from, &out) != WIRE_OK)
            break; // queue full or gone: the actor asks again for what it misses
        s->chunks_sent++;
    }
}

// ---- the router socket ------------------------------------------------------------------------

static void on_message(hub_loop_t *s, const wire_peer_t *from, Rlx__Envelope *env) {
    if (env->body_case == RLX__ENVELOPE__BODY_HELLO) {
        on_hello(s, from, env);
        return;
    }
    worker_t *w = worker_by_peer(s, from);
    worker_t *claimed = env->sender_id && (!w || env->sender_id != w->id)
                            ? worker_by_id(s, env->sender_id)
                            : NULL;
    if (claimed) { // a worker id used from another connection than the one that joined
        s->peer_mismatch++;
        note(s, EV_PEER_MISMATCH, "%s as worker %u from a connection that is not that worker's",
             wire_body_name(env->body_case), env->sender_id);
        if (env->body_case != RLX__ENVELOPE__BODY_ERROR &&
            env->body_case != RLX__ENVELOPE__BODY_BYE)
            send_error(s, from, RLX__ERROR_CODE__ERROR_CODE_NOT_JOINED, env->seq,
                       "worker %u joined from another connection: send Hello (with its "
                       "session_key) to rejoin from this one",
                       env->sender_id);
        return;
    }
    if (!w) {
        s->not_joined++;
        note(s, EV_NOT_JOINED, "%s from a sender that has not joined: told to send Hello",
             wire_body_name(env->body_case));
        if (env->body_case != RLX__ENVELOPE__BODY_ERROR &&
            env->body_case != RLX__ENVELOPE__BODY_BYE)
            send_error(s, from, RLX__ERROR_CODE__ERROR_CODE_NOT_JOINED, env->seq,
                       "unknown sender (never joined, or presumed dead): send Hello again");
        return;
    }
    w->last_seen = now_ms();
    int is_actor = w->role == RLX__ROLE__ROLE_ACTOR;
    switch (env->body_case) {
    case RLX__ENVELOPE__BODY_HEARTBEAT: {
        const Rlx__Heartbeat *hb = env->heartbeat;
        if (w->role == RLX__ROLE__ROLE_REWARD_WORKER && hb->credits + hb->in_flight > 0)
            w->capacity = (int)(hb->credits + hb->in_flight);
        if (is_actor)
            w->policy_version = hb->policy_version;
        if (w->role == RLX__ROLE__ROLE_OBSERVER)
            send_status(s, w);
        break;
    }
    case RLX__ENVELOPE__BODY_BYE:
        worker_remove(s, w, "left");
        break;
    case RLX__ENVELOPE__BODY_WORK_REQUEST:
        if (!is_actor) {
            bad_request(s, from, env->seq, "work_request from a %s: only actors get work",
                        role_name(w->role));
            break;
        }
        w->want = env->work_request->credits;
        w->policy_version = env->work_request->policy_version;
        break;
    case RLX__ENVELOPE__BODY_TRAJECTORY_BATCH:
        if (!is_actor) {
            bad_request(s, from, env->seq, "trajectory_batch from a %s: only actors send them",
                        role_name(w->role));
            break;
        }
        on_trajectories(s, w, env);
        break;
    case RLX__ENVELOPE__BODY_SCORE_REPLY:
        if (w->role != RLX__ROLE__ROLE_REWARD_WORKER) {
            bad_request(s, from, env->seq, "score_reply from a %s: only reward workers score",
                        role_name(w->role));
            break;
        }
        on_score_reply(s, w, env->score_reply);
        break;
    case RLX__ENVELOPE__BODY_WEIGHT_REQUEST:
        on_weight_request(s, from, env);
        break;
    case RLX__ENVELOPE__BODY_ERROR:
        s->peer_errors++;
        note(s, EV_PEER_ERROR, "error from %s %u: code %d: %s", role_name(w->role), w->id,
             (int)env->error->code, env->error->message ? env->error->message : "");
        break;
    default:
        bad_request(s, from, env->seq, "the hub does not accept %s messages",
                    wire_body_name(env->body_case));
        break;
    }
}

static void read_router(hub_loop_t *s) {
    for (int i = 0; i < MAX_MESSAGES_PER_TURN; i++) {
        wire_peer_t from;
        Rlx__Envelope *env = NULL;
        wire_error_t why;
        int rc = wire_recv(s->wire, s->router, 0, &from, &env, &why);
        if (rc == WIRE_ERR_TIMEOUT || rc == WIRE_ERR_INTERRUPTED || rc == WIRE_ERR_TRANSPORT)
            return; // nothing more now (transport trouble is counted and logged by wire)
        if (rc != WIRE_OK) {
            if (from.size > 0)
                wire_send_error(s->wire, s->router, &from, &why);
            continue;
        }
        if (from.size > 0)
            on_message(s, &from, env);
        wire_free(&env);
    }
}

// ---- the pipe -------------------------------------------------------------------------------

static void free_buf(void *data, void *hint) {
    (void)hint;
    free(data);
}

// Sends a reply, with an optional payload (taken over: freed with free()).
static void pipe_reply(hub_loop_t *s, const pipe_cmd_t *cmd, int status, int count, void *payload,
                       size_t len) {
    pipe_reply_t r;
    memset(&r, 0, sizeof r);
    r.cmd = cmd->cmd;
    r.tag = cmd->tag;
    r.status = status;
    r.count = count;
    r.counters = counters(s);
    if (zmq_send(s->pipe, &r, sizeof r, payload ? ZMQ_SNDMORE | ZMQ_DONTWAIT : ZMQ_DONTWAIT) < 0) {
        free(payload);
        return;
    }
    if (payload) {
        zmq_msg_t m;
        if (zmq_msg_init_data(&m, payload, len, free_buf, NULL) != 0) {
            free(payload);
            return;
        }
        if (zmq_msg_send(&m, s->pipe, ZMQ_DONTWAIT) < 0)
            zmq_msg_close(&m);
    }
}

// A TAKE payload's free function: frees the batch unless the learner side took it out.
static void free_batch_cell(void *data, void *hint) {
    (void)hint;
    Rlx__Envelope **cell = data;
    wire_free(cell);
    free(cell);
}

// Sends a TAKE reply with the batch env (taken over: the learner side, or if it never reads
// the reply, the message's free function, frees it).
static void pipe_reply_batch(hub_loop_t *s, const pipe_cmd_t *cmd, int count, Rlx__Envelope *env) {
    Rlx__Envelope **cell = malloc(sizeof *cell);
    zmq_msg_t m;
    if (!cell || zmq_msg_init_data(&m, cell, sizeof *cell, free_batch_cell, NULL) != 0) {
        free(cell);
        wire_free(&env);
        pipe_reply(s, cmd, -1, 0, NULL, 0);
        return;
    }
    *cell = env;
    pipe_reply_t r;
    memset(&r, 0, sizeof r);
    r.cmd = cmd->cmd;
    r.tag = cmd->tag;
    r.count = count;
    r.counters = counters(s);
    if (zmq_send(s->pipe, &r, sizeof r, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        zmq_msg_send(&m, s->pipe, ZMQ_DONTWAIT) < 0)
        zmq_msg_close(&m);
}

static void log_group(hub_loop_t *s, ready_t *r) {
    if (!s->log)
        return;
    Rlx__TrajectoryBatch b = RLX__TRAJECTORY_BATCH__INIT;
    Rlx__Trajectory **v = malloc((size_t)r->n * sizeof *v);
    if (!v)
        return;
    for (int i = 0; i < r->n; i++)
        v[i] = r->v[i]->t;
    b.n_trajectories = (size_t)r->n;
    b.trajectories = v;
    Rlx__Envelope env = RLX__ENVELOPE__INIT;
    env.body_case = RLX__ENVELOPE__BODY_TRAJECTORY_BATCH;
    env.trajectory_batch = &b;
    if (trajlog_write(s->log, s->log_wire, &env) != 0)
        note(s, EV_LOG_FAILED, "cannot append to the trajectory log %s", s->log_path);
    free(v);
}

static void ready_free(ready_t *r) {
    for (int i = 0; i < r->n; i++)
        traj_free(r->v[i]);
    free(r->v);
    free(r);
}

// Answers the TAKE cmd: whole groups, up to max trajectories (at least one group).
static void answer_take(hub_loop_t *s, const pipe_cmd_t *cmd) {
    int max = cmd->a > 0 ? (int)cmd->a : 1;
    int n = 0, ng = 0;
    for (ready_t *r = s->rq_head; r && (ng == 0 || n + r->n <= max); r = r->next) {
        n += r->n;
        ng++;
    }
    if (ng == 0) {
        pipe_reply(s, cmd, 0, 0, NULL, 0);
        return;
    }
    // Same process: the learner gets the decoded trajectories themselves (their arenas stay
    // alive for it), not an encoded copy to decode again.
    Rlx__Trajectory **v = calloc((size_t)n, sizeof *v);
    wire_arena_t **va = calloc((size_t)n, sizeof *va);
    Rlx__Envelope *batch = NULL;
    if (v && va) {
        int m = 0;
        ready_t *r = s->rq_head;
        for (int g = 0; g < ng; g++, r = r->next)
            for (int i = 0; i < r->n; i++, m++) {
                v[m] = r->v[i]->t;
                va[m] = r->v[i]->arena;
            }
        batch = wire_batch_handover(s->pipe_wire, v, va, (size_t)n);
    }
    free(v);
    free(va);
    if (!batch) { // keep them queued; the learner sees an error
        pipe_reply(s, cmd, -1, 0, NULL, 0);
        return;
    }
    ready_t *r;
    for (int g = 0; g < ng; g++) {
        r = s->rq_head;
        s->rq_head = r->next;
        if (!s->rq_head)
            s->rq_tail = NULL;
        log_group(s, r);
        s->learner_queue -= (uint32_t)r->n;
        s->n.delivered += (uint64_t)r->n;
        ready_free(r);
    }
    pipe_reply_batch(s, cmd, n, batch);
}

// The end of drain: everything not delivered is dropped as shutdown.
static void finish_drain(hub_loop_t *s) {
    s->draining = s->drained = 1;
    while (s->n_requests > 0) {
        request_t *r = &s->requests[s->n_requests - 1];
        for (int j = 0; j < r->n; j++) {
            s->n.dropped_shutdown++;
            settle(s, r->items[j], 0);
        }
        r->n = 0;
        request_remove(s, s->n_requests - 1);
    }
    traj_t *t;
    while ((t = sq_pop(s))) {
        s->n.dropped_shutdown++;
        settle(s, t, 0);
    }
    while (s->n_works > 0) { // scored survivors of unflushed groups go with their work item
        work_t *w = s->works[s->n_works - 1];
        for (int g = 0; g < w->n_groups; g++)
            s->n.dropped_shutdown += (uint64_t)w->groups[g].n_scored;
        work_remove(s, w);
    }
    while (s->rq_head) {
        ready_t *r = s->rq_head;
        s->rq_head = r->next;
        s->n.dropped_shutdown += (uint64_t)r->n;
        s->learner_queue -= (uint32_t)r->n;
        ready_free(r);
    }
    s->rq_tail = NULL;
    for (int i = 0; i < s->n_workers; i++)
        s->workers[i]->want = 0;
}

static void blob_clear(blob_t *b) {
    if (b->set)
        zmq_msg_close(&b->msg);
    free(b->chunk_crc);
    b->chunk_crc = NULL;
    b->set = 0;
}

static void on_weights(hub_loop_t *s, const pipe_cmd_t *cmd, zmq_msg_t *payload) {
    uint64_t version = (uint64_t)cmd->a;
    if (s->weights[0].set && version <= s->weights[0].version) {
        fprintf(stderr, "hub: weights version %llu refused: not newer than %llu\n",
                (unsigned long long)version, (unsigned long long)s->weights[0].version);
        pipe_reply(s, cmd, -1, 0, NULL, 0);
        return;
    }
    size_t blen = zmq_msg_size(payload);
    uint32_t nch = (uint32_t)((blen + WIRE_WEIGHT_CHUNK_BYTES - 1) / WIRE_WEIGHT_CHUNK_BYTES);
    uint32_t *ccrc = malloc((size_t)nch * sizeof *ccrc);
    if (!ccrc) {
        pipe_reply(s, cmd, -1, 0, NULL, 0);
        return;
    }
    blob_clear(&s->weights[1]);
    if (s->weights[0].set) {
        s->weights[1] = s->weights[0];
        s->weights[0].chunk_crc = NULL;
        zmq_msg_init(&s->weights[1].msg);
        zmq_msg_move(&s->weights[1].msg, &s->weights[0].msg);
    }
    blob_t *b = &s->weights[0];
    zmq_msg_init(&b->msg);
    zmq_msg_move(&b->msg, payload);
    b->set = 1;
    b->version = version;
    b->len = blen;
    b->num_chunks = nch;
    b->chunk_crc = ccrc;
    b->crc = 0;
    const uint8_t *p = zmq_msg_data(&b->msg);
    // One pass: each chunk's crc (sent with every copy of the chunk), combined into the whole.
    for (uint32_t i = 0; i < nch; i++) {
        size_t off = (size_t)i * WIRE_WEIGHT_CHUNK_BYTES;
        size_t n = blen - off < WIRE_WEIGHT_CHUNK_BYTES ? blen - off : WIRE_WEIGHT_CHUNK_BYTES;
        ccrc[i] = (uint32_t)crc32(0L, p + off, (uInt)n);
        b->crc = i == 0 ? ccrc[i] : (uint32_t)crc32_combine(b->crc, ccrc[i], (z_off_t)n);
    }
    announce_weights(s);
    pipe_reply(s, cmd, 0, 0, NULL, 0);
}

static void read_pipe(hub_loop_t *s) {
    for (;;) {
        pipe_cmd_t cmd;
        memset(&cmd, 0, sizeof cmd);
        zmq_msg_t part, payload;
        zmq_msg_init(&part);
        zmq_msg_init(&payload);
        int nframes = 0, more = 1, ok = 1;
        while (more) {
            if (zmq_msg_recv(&part, s->pipe, ZMQ_DONTWAIT) < 0) {
                ok = nframes > 0 ? 0 : -1;
                break;
            }
            nframes++;
            more = zmq_msg_more(&part);
            if (nframes == 1 && zmq_msg_size(&part) == sizeof cmd)
                memcpy(&cmd, zmq_msg_data(&part), sizeof cmd);
            else if (nframes == 2)
                zmq_msg_move(&payload, &part);
        }
        zmq_msg_close(&part);
        if (ok < 0) { // nothing (more) to read
            zmq_msg_close(&payload);
            return;
        }
        switch (cmd.cmd) {
        case CMD_TAKE:
            if (s->take_parked) // the learner gave up on that one
                pipe_reply(s, &s->take, 0, 0, NULL, 0);
            s->take_parked = 0;
            if (s->rq_head || cmd.b <= 0) {
                answer_take(s, &cmd);
            } else {
                s->take_parked = 1;
                s->take = cmd;
                s->take_deadline = now_ms() + cmd.b;
            }
            break;
        case CMD_WEIGHTS:
            if (nframes != 2 || zmq_msg_size(&payload) == 0)
                pipe_reply(s, &cmd, -1, 0, NULL, 0);
            else
                on_weights(s, &cmd, &payload);
            break;
        case CMD_REPORT: {
            Rlx__Envelope *env = NULL;
            int rc = nframes == 2 ? wire_decode(s->pipe_wire, zmq_msg_data(&payload),
                                                zmq_msg_size(&payload), &env, NULL)
                                  : WIRE_ERR_MALFORMED;
            if (rc == WIRE_OK && env->body_case == RLX__ENVELOPE__BODY_RUN_STATUS) {
                wire_free(&s->report);
                s->report = env;
                for (int i = 0; i < s->n_workers; i++)
                    if (s->workers[i]->role == RLX__ROLE__ROLE_OBSERVER)
                        send_status(s, s->workers[i]);
                pipe_reply(s, &cmd, 0, 0, NULL, 0);
            } else {
                wire_free(&env);
                pipe_reply(s, &cmd, -1, 0, NULL, 0);
            }
            break;
        }
        case CMD_COUNTERS:
            pipe_reply(s, &cmd, 0, 0, NULL, 0);
            break;
        case CMD_DRAIN:
            if (s->drain_parked)
                pipe_reply(s, &s->drain, -1, 0, NULL, 0);
            s->draining = 1;
            s->drain_parked = 1;
            s->drain = cmd;
            s->drain_deadline = now_ms() + (cmd.b > 0 ? cmd.b : 0);
            break;
        case CMD_STOP:
            s->stop = 1;
            pipe_reply(s, &cmd, 0, 0, NULL, 0);
            break;
        default:
            break; // not from hub.c's learner side: ignore
        }
        zmq_msg_close(&payload);
    }
}

// ---- timers ---------------------------------------------------------------------------------

// Heartbeats, deaths, deadlines. Returns the time of the next thing due.
static int64_t timers(hub_loop_t *s, int64_t now) {
    int64_t next = now + s->c.heartbeat_ms;
    int64_t dead_after = (int64_t)s->c.heartbeat_ms * s->c.liveness;
    for (int i = s->n_workers - 1; i >= 0; i--) {
        if (i >= s->n_workers)
            continue;
        worker_t *w = s->workers[i];
        if (now - w->last_seen > dead_after) {
            worker_remove(s, w, "presumed dead (no heartbeat)");
            continue;
        }
        if (now >= w->next_hb) {
            Rlx__Heartbeat hb = RLX__HEARTBEAT__INIT;
            hb.policy_version = s->weights[0].set ? s->weights[0].version : 0;
            Rlx__Envelope env = RLX__ENVELOPE__INIT;
            env.body_case = RLX__ENVELOPE__BODY_HEARTBEAT;
            env.heartbeat = &hb;
            if (send_to(s, &w->peer, &env) == WIRE_ERR_UNREACHABLE) {
                worker_remove(s, w, "is unreachable (disconnected)");
                continue;
            }
            w->next_hb = now + s->c.heartbeat_ms;
        }
        next = min64(next, min64(w->next_hb, w->last_seen + dead_after + 1));
    }
    for (int i = s->n_requests - 1; i >= 0; i--) {
        if (i >= s->n_requests)
            continue;
        if (now >= s->requests[i].deadline) {
            note(s, EV_SCORE_TIMEOUT,
                 "score request %llu to worker %u passed its deadline: "
                 "requeued",
                 (unsigned long long)s->requests[i].request_id, s->requests[i].worker_id);
            request_requeue(s, i, "deadline");
        } else {
            next = min64(next, s->requests[i].deadline);
        }
    }
    for (int i = s->n_works - 1; i >= 0; i--) {
        if (i >= s->n_works)
            continue;
        work_t *w = s->works[i];
        if (w->state == WORK_OUT && now >= w->deadline)
            work_expire(s, w, now);
        if (w->state == WORK_LATE && now >= w->purge_at) {
            work_close(s, w); // may free w
            continue;
        }
        if (w->state == WORK_OUT)
            next = min64(next, w->deadline);
        else if (w->state == WORK_LATE)
            next = min64(next, w->purge_at);
    }
    if (s->take_parked)
        next = min64(next, s->take_deadline);
    if (s->drain_parked)
        next = min64(next, s->drain_deadline);
    return next;
}

// After each turn: answer a parked TAKE or DRAIN whose condition or deadline came.
static void answer_parked(hub_loop_t *s, int64_t now) {
    if (s->take_parked && (s->rq_head || now >= s->take_deadline)) {
        s->take_parked = 0;
        answer_take(s, &s->take);
    }
    if (s->drain_parked && (s->unscored == 0 || now >= s->drain_deadline)) {
        s->drain_parked = 0;
        if (s->take_parked) { // the learner is in hub_drain, not waiting for that one
            s->take_parked = 0;
            pipe_reply(s, &s->take, 0, 0, NULL, 0);
        }
        finish_drain(s);
        pipe_reply(s, &s->drain, 0, 0, NULL, 0);
    }
}

// ---- the thread -----------------------------------------------------------------------------

static void loop_free(hub_loop_t *s) {
    if (!s)
        return;
    while (s->n_requests > 0) {
        request_t *r = &s->requests[s->n_requests - 1];
        for (int j = 0; j < r->n; j++)
            traj_free(r->items[j]);
        free(r->items);
        s->n_requests--;
    }
    free(s->requests);
    traj_t *t;
    while ((t = sq_pop(s)))
        traj_free(t);
    while (s->n_works > 0)
        work_remove(s, s->works[s->n_works - 1]);
    free(s->works);
    while (s->rq_head) {
        ready_t *r = s->rq_head;
        s->rq_head = r->next;
        ready_free(r);
    }
    for (int i = 0; i < s->n_workers; i++)
        free(s->workers[i]);
    free(s->workers);
    free(s->sessions);
    for (size_t i = 0; i < s->n_seen; i++)
        free(s->seen[i].bits);
    free(s->seen);
    blob_clear(&s->weights[0]);
    blob_clear(&s->weights[1]);
    wire_free(&s->report);
    for (size_t i = 0; i < s->n_prompts; i++) {
        free(s->prompts[i].text);
        free(s->prompts[i].target);
        free(s->prompts[i].tokens);
    }
    free(s->prompts);
    free(s->order);
    trajlog_close(&s->log);
    wire_destroy(&s->wire);
    wire_destroy(&s->pipe_wire);
    wire_destroy(&s->log_wire);
    if (s->router)
        zmq_close(s->router);
    if (s->pipe)
        zmq_close(s->pipe);
    free(s->bind);
    free(s->run_id);
    free(s->scorer);
    free(s->log_path);
    free(s);
}

static void say_bye(hub_loop_t *s) {
    Rlx__Bye bye = RLX__BYE__INIT;
    bye.reason = "hub stopping";
    Rlx__Envelope env = RLX__ENVELOPE__INIT;
    env.body_case = RLX__ENVELOPE__BODY_BYE;
    env.bye = &bye;
    for (int i = 0; i < s->n_workers; i++)
        wire_send(s->wire, s->router, &s->workers[i]->peer, &env, NULL);
}

static void *hub_thread(void *arg) {
    hub_loop_t *s = arg;
    int64_t next = now_ms();
    while (!s->stop) {
        int64_t now = now_ms();
        long timeout = (long)(next > now ? next - now : 0);
        if (timeout > s->c.heartbeat_ms)
            timeout = s->c.heartbeat_ms;
        zmq_pollitem_t items[2] = {{.socket = s->router, .events = ZMQ_POLLIN},
                                   {.socket = s->pipe, .events = ZMQ_POLLIN}};
        int rc = zmq_poll(items, 2, timeout);
        if (rc < 0 && errno != EINTR) {
            fprintf(stderr, "hub: zmq_poll failed (%s): the hub thread stops\n",
                    zmq_strerror(errno));
            pipe_cmd_t gone = {.cmd = CMD_GONE};
            pipe_reply(s, &gone, -1, 0, NULL, 0);
            break;
        }
        if (rc > 0 && (items[0].revents & ZMQ_POLLIN))
            read_router(s);
        if (rc > 0 && (items[1].revents & ZMQ_POLLIN))
            read_pipe(s);
        if (s->stop)
            break;
        now = now_ms();
        next = timers(s, now);
        dispatch_scoring(s);
        dispatch_work(s);
        answer_parked(s, now);
    }
    if (s->stop)
        say_bye(s);
    loop_free(s);
    return NULL;
}

// ---- start-up -------------------------------------------------------------------------------

hub_config_t hub_defaults(void) {
    hub_config_t c;
    memset(&c, 0, sizeof c);
    c.scorer = "exact";
    c.prompts_per_item = 8;
    c.samples_per_prompt = 4;
    c.temperature = 1.0f;
    c.top_k = 0;
    c.max_new_tokens = 8;
    c.max_learner_queue = 256;
    c.max_in_flight = 512;
    c.heartbeat_ms = 500;
    c.liveness = 5;
    c.score_deadline_ms = 5000;
    c.score_retries = 2;
    c.work_deadline_ms = 30000;
    c.score_batch = 128; // an upper bound: requests go out with what is queued, never wait
    c.seed = 1;
    c.trajectory_log = NULL;
    return c;
}

static int load_prompts(hub_loop_t *s, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "hub: cannot read the train prompt file %s: %s\n", path, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0, cap_p = 0;
    ssize_t len;
    int rc = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = 0;
        if (len == 0)
            continue;
        if (s->n_prompts == cap_p) {
            cap_p = cap_p ? 2 * cap_p : 256;
            prompt_t *v = realloc(s->prompts, cap_p * sizeof *v);
            if (!v) {
                rc = -1;
                break;
            }
            s->prompts = v;
        }
        char *tab = strchr(line, '\t');
        if (tab)
            *tab = 0;
        prompt_t *p = &s->prompts[s->n_prompts];
        memset(p, 0, sizeof *p);
        p->text = strdup(line);
        p->target = strdup(tab ? tab + 1 : "");
        int nt = bytetok_encode_prompt(line, strlen(line), NULL, 0);
        int *tok = malloc((size_t)nt * sizeof *tok);
        p->tokens = malloc((size_t)nt * sizeof *p->tokens);
        s->n_prompts++;
        if (!p->text || !p->target || !tok || !p->tokens) {
            free(tok);
            rc = -1;
            break;
        }
        bytetok_encode_prompt(line, strlen(line), tok, nt);
        for (int i = 0; i < nt; i++)
            p->tokens[i] = (uint32_t)tok[i];
        p->n_tokens = (size_t)nt;
        free(tok);
    }
    free(line);
    fclose(f);
    if (rc == 0 && s->n_prompts == 0) {
        fprintf(stderr, "hub: the train prompt file %s has no prompts (prompt<TAB>target lines)\n",
                path);
        rc = -1;
    }
    if (rc == 0 && !(s->order = malloc(s->n_prompts * sizeof *s->order)))
        rc = -1;
    if (rc != 0)
        return -1;
    for (size_t i = 0; i < s->n_prompts; i++)
        s->order[i] = i;
    s->next_prompt = s->n_prompts; // the first draw shuffles
    return 0;
}

// GFlowNet mode: one synthetic prompt that only names the groups (no tokens).
static int gflow_prompts(hub_loop_t *s) {
    s->prompts = calloc(1, sizeof *s->prompts);
    s->order = calloc(1, sizeof *s->order);
    if (!s->prompts || !s->order)
        return -1;
    s->n_prompts = 1;
    s->prompts[0].text = hub_gflow_prompt_text(&s->c);
    s->prompts[0].target = strdup("");
    s->next_prompt = 1;
    return s->prompts[0].text && s->prompts[0].target ? 0 : -1;
}

// Diffusion mode: one synthetic prompt per class (or one), no tokens (hub_diffusion.h).
static int diffusion_prompts(hub_loop_t *s) {
    int n = hub_diff_prompts(&s->c);
    s->prompts = calloc((size_t)n, sizeof *s->prompts);
    s->order = calloc((size_t)n, sizeof *s->order);
    if (!s->prompts || !s->order)
        return -1;
    s->n_prompts = (size_t)n;
    for (int i = 0; i < n; i++) {
        s->order[i] = (size_t)i;
        s->prompts[i].text = hub_diff_prompt_text(&s->c, i);
        s->prompts[i].target = hub_diff_prompt_target(&s->c, i);
        if (!s->prompts[i].text || !s->prompts[i].target)
            return -1;
    }
    s->next_prompt = s->n_prompts; // the first draw shuffles
    return 0;
}

static int config_ok(const hub_config_t *c) {
    const char *bad = NULL;
    if (!c->bind || !c->run_id || (!c->train_prompts && c->gflow_ndim <= 0 && c->diff_steps <= 0))
        bad = "bind, run_id and train_prompts are required";
    else if (c->diff_steps > 0 &&
             (c->diff_shape_n < 1 || c->diff_shape_n > 4 || !(c->diff_eta > 0) ||
              c->prompts_per_item > HUB_DIFF_MAX_PROMPTS || c->diff_classes < 0))
        bad = "diffusion mode needs a shape of 1..4 dims, eta > 0, prompts_per_item <= 64";
    else if (c->gflow_ndim > 64 || (c->gflow_ndim > 0 && c->gflow_height < 2))
        bad = "gflow_ndim must be <= 64 and gflow_height >= 2";
    else if (c->n_allowed_tokens < 0 || c->n_allowed_tokens > HUB_MAX_ALLOWED)
        bad = "n_allowed_tokens must be in 0..HUB_MAX_ALLOWED";
    else if (c->prompts_per_item < 1 || c->samples_per_prompt < 1 || c->max_new_tokens < 1)
        bad = "prompts_per_item, samples_per_prompt and max_new_tokens must be >= 1";
    else if (c->heartbeat_ms < 1 || c->liveness < 1 || c->score_deadline_ms < 1 ||
             c->work_deadline_ms < 1 || c->score_batch < 1 || c->score_retries < 0)
        bad = "heartbeat_ms, liveness, deadlines and score_batch must be >= 1, score_retries >= 0";
    else if (c->max_learner_queue < 1 || c->max_in_flight < 1)
        bad = "max_learner_queue and max_in_flight must be >= 1";
    if (bad)
        fprintf(stderr, "hub: bad configuration: %s\n", bad);
    return !bad;
}

hub_t *hub_start(const hub_config_t *c, void *zmq_ctx) {
    assert(c && zmq_ctx);
    if (!config_ok(c))
        return NULL;
    hub_t *h = calloc(1, sizeof *h);
    hub_loop_t *s = calloc(1, sizeof *s);
    if (!h || !s)
        goto fail;
    s->c = *c;
    for (int i = 0; i < c->n_allowed_tokens; i++)
        if (c->allowed_tokens[i] < GPT_VOCAB) // larger ones can never be matched
            s->allowed[c->allowed_tokens[i]] = 1;
    s->bind = strdup(c->bind);
    s->run_id = strdup(c->run_id);
    s->scorer = strdup(c->scorer ? c->scorer : "exact");
    if (!s->bind || !s->run_id || !s->scorer)
        goto fail;
    s->c.bind = s->bind;
    s->c.run_id = s->run_id;
    s->c.scorer = s->scorer;
    s->c.train_prompts = NULL; // read now, not kept
    s->next_worker_id = 1;
    s->next_work_id = 1;
    s->next_request_id = 1;
    rng_seed2(&s->rng, c->seed, 0x6875622d70726f6dull);
    if ((c->gflow_ndim > 0   ? gflow_prompts(s)
         : c->diff_steps > 0 ? diffusion_prompts(s)
                             : load_prompts(s, c->train_prompts)) != 0)
        goto fail;
    if (c->trajectory_log) {
        char err[256];
        s->log = trajlog_open_append(c->trajectory_log, err, sizeof err);
        s->log_path = strdup(c->trajectory_log);
        if (!s->log || !s->log_path) {
            fprintf(stderr, "hub: %s\n", err);
            goto fail;
        }
    }
    s->c.trajectory_log = NULL; // the caller's string: keep none dangling
    s->wire = wire_new("hub", 0, c->run_id);
    s->pipe_wire = wire_new("hub-pipe", PIPE_MAX_SIZE, c->run_id);
    s->log_wire = wire_new("hub-log", PIPE_MAX_SIZE, c->run_id);
    h->wire = wire_new("hub-learner", PIPE_MAX_SIZE, c->run_id);
    if (!s->wire || !s->pipe_wire || !s->log_wire || !h->wire)
        goto fail;

    s->router = zmq_socket(zmq_ctx, ZMQ_ROUTER);
    s->pipe = zmq_socket(zmq_ctx, ZMQ_PAIR);
    h->pipe = zmq_socket(zmq_ctx, ZMQ_PAIR);
    if (!s->router || !s->pipe || !h->pipe) {
        fprintf(stderr, "hub: cannot create ZeroMQ sockets: %s\n", zmq_strerror(errno));
        goto fail;
    }
    int one = 1, zero = 0;
    int64_t maxmsg = ROUTER_MAXMSGSIZE;
    zmq_setsockopt(s->router, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(s->router, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s->router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    zmq_setsockopt(s->pipe, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(h->pipe, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_bind(s->router, c->bind) != 0) {
        fprintf(stderr, "hub: cannot bind %s: %s (is another run using the port?)\n", c->bind,
                zmq_strerror(errno));
        goto fail;
    }
    // A fresh name per hub: a closed hub's inproc name is released asynchronously.
    static atomic_uint hubs_started;
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://rlx-hub-%u", atomic_fetch_add(&hubs_started, 1));
    if (zmq_bind(s->pipe, ep) != 0 || zmq_connect(h->pipe, ep) != 0) {
        fprintf(stderr, "hub: cannot open the inproc pipe %s: %s\n", ep, zmq_strerror(errno));
        goto fail;
    }
    // From here on s belongs to the hub thread (pthread_create is the memory barrier that
    // hands its sockets over).
    if (pthread_create(&h->thread, NULL, hub_thread, s) != 0) {
        fprintf(stderr, "hub: cannot start the hub thread\n");
        goto fail;
    }
    h->running = 1;
    fprintf(stderr, "hub: serving %s (run %s, %zu train prompts)\n", c->bind, c->run_id,
            s->n_prompts);
    return h;
fail:
    loop_free(s);
    if (h) {
        if (h->pipe)
            zmq_close(h->pipe);
        wire_destroy(&h->wire);
        free(h);
    }
    return NULL;
}

// ---- learner side -----------------------------------------------------------------------------

// The batch of a TAKE reply's payload, taken out of it (the payload's free function then frees
// only the cell); NULL if the payload is not one.
static Rlx__Envelope *take_batch(zmq_msg_t *payload) {
    if (zmq_msg_size(payload) != sizeof(Rlx__Envelope *))
        return NULL;
    Rlx__Envelope **cell = zmq_msg_data(payload);
    Rlx__Envelope *env = *cell;
    *cell = NULL;
    return env;
}

// Sends a request (payload, if any, handed over: freed with free()) and waits until
// wait_ms for its reply. Returns 0 with *reply (and *payload_out, a received frame the
// caller closes, when given) or -1 (no answer in time, or the hub thread is gone).
static int call(hub_t *h, uint32_t cmd, int64_t a, int64_t b, void *payload, size_t len,
                int wait_ms, pipe_reply_t *reply, zmq_msg_t *payload_out) {
    if (h->gone) {
        free(payload);
        return -1;
    }
    pipe_cmd_t c = {.cmd = cmd, .tag = ++h->next_tag, .a = a, .b = b};
    if (zmq_send(h->pipe, &c, sizeof c, payload ? ZMQ_SNDMORE | ZMQ_DONTWAIT : ZMQ_DONTWAIT) < 0) {
        free(payload);
        return -1;
    }
    if (payload) {
        zmq_msg_t m;
        if (zmq_msg_init_data(&m, payload, len, free_buf, NULL) != 0) {
            free(payload);
            return -1; // the hub thread sees a lone command frame and refuses it
        }
        if (zmq_msg_send(&m, h->pipe, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            return -1;
        }
    }
    int64_t deadline = now_ms() + wait_ms;
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left < 0)
            left = 0;
        zmq_pollitem_t item = {.socket = h->pipe, .events = ZMQ_POLLIN};
        int rc = zmq_poll(&item, 1, (long)left);
        if (rc < 0 && errno != EINTR)
            return -1;
        if (rc <= 0) {
            if (left == 0)
                return -1;
            continue;
        }
        pipe_reply_t r;
        memset(&r, 0, sizeof r);
        zmq_msg_t part, data;
        zmq_msg_init(&part);
        zmq_msg_init(&data);
        int nframes = 0, more = 1;
        while (more && zmq_msg_recv(&part, h->pipe, ZMQ_DONTWAIT) >= 0) {
            nframes++;
            more = zmq_msg_more(&part);
            if (nframes == 1 && zmq_msg_size(&part) == sizeof r)
                memcpy(&r, zmq_msg_data(&part), sizeof r);
            else if (nframes == 2)
                zmq_msg_move(&data, &part);
        }
        zmq_msg_close(&part);
        if (r.cmd == CMD_GONE) {
            h->gone = 1;
            zmq_msg_close(&data);
            return -1;
        }
        if (r.tag != c.tag) { // an answer to a request given up on
            if (r.cmd == CMD_TAKE && r.count > 0 && h->n_stash < 8) {
                Rlx__Envelope *env = take_batch(&data);
                if (env)
                    h->stash[h->n_stash++] = env;
            }
            zmq_msg_close(&data); // frees a batch not taken
            continue;
        }
        *reply = r;
        if (payload_out)
            zmq_msg_move(payload_out, &data);
        zmq_msg_close(&data);
        return 0;
    }
}

int hub_take(hub_t *h, int max, int timeout_ms, Rlx__Envelope **out) {
    assert(h && out);
    *out = NULL;
    if (h->n_stash > 0) {
        *out = h->stash[0];
        memmove(h->stash, h->stash + 1, (size_t)(--h->n_stash) * sizeof *h->stash);
        return (int)(*out)->trajectory_batch->n_trajectories;
    }
    if (timeout_ms < 0)
        timeout_ms = 0;
    pipe_reply_t r;
    zmq_msg_t data;
    zmq_msg_init(&data);
    if (call(h, CMD_TAKE, max, timeout_ms, NULL, 0, timeout_ms + PIPE_GRACE_MS, &r, &data) != 0) {
        zmq_msg_close(&data);
        return -1;
    }
    int n = 0;
    if (r.status == 0 && r.count > 0) {
        *out = take_batch(&data);
        if (*out) {
            n = (int)(*out)->trajectory_batch->n_trajectories;
        } else {
            fprintf(stderr, "hub: a TAKE reply of %zu bytes holds no batch\n", zmq_msg_size(&data));
            n = -1;
        }
    }
    zmq_msg_close(&data);
    return n;
}

int hub_publish_weights(hub_t *h, uint64_t version, const void *blob, size_t len) {
    assert(h && (blob || len == 0));
    if (len == 0)
        return -1;
    void *copy = malloc(len);
    if (!copy)
        return -1;
    memcpy(copy, blob, len);
    pipe_reply_t r;
    if (call(h, CMD_WEIGHTS, (int64_t)version, 0, copy, len, 10000 + PIPE_GRACE_MS, &r, NULL) != 0)
        return -1;
    return r.status;
}

int hub_report(hub_t *h, const Rlx__RunStatus *st) {
    assert(h && st);
    Rlx__Envelope env = RLX__ENVELOPE__INIT;
    env.body_case = RLX__ENVELOPE__BODY_RUN_STATUS;
    env.run_status = (Rlx__RunStatus *)st;
    uint8_t *buf = NULL;
    size_t len = 0;
    if (wire_encode(h->wire, &env, &buf, &len, NULL) != WIRE_OK)
        return -1;
    pipe_reply_t r;
    if (call(h, CMD_REPORT, 0, 0, buf, len, PIPE_GRACE_MS, &r, NULL) != 0)
        return -1;
    return r.status;
}

int hub_counters(hub_t *h, hub_counters_t *out, int timeout_ms) {
    assert(h && out);
    pipe_reply_t r;
    if (call(h, CMD_COUNTERS, 0, 0, NULL, 0, timeout_ms > 0 ? timeout_ms : 0, &r, NULL) != 0)
        return -1;
    *out = r.counters;
    return 0;
}

int hub_drain(hub_t *h, int timeout_ms, hub_counters_t *out) {
    assert(h);
    if (timeout_ms < 0)
        timeout_ms = 0;
    pipe_reply_t r;
    if (call(h, CMD_DRAIN, 0, timeout_ms, NULL, 0, timeout_ms + PIPE_GRACE_MS, &r, NULL) != 0)
        return -1;
    if (out)
        *out = r.counters;
    return r.status;
}

void hub_stop(hub_t **self_p) {
    if (!self_p || !*self_p)
        return;
    hub_t *h = *self_p;
    if (h->running) {
        pipe_reply_t r;
        int asked = call(h, CMD_STOP, 0, 0, NULL, 0, PIPE_GRACE_MS, &r, NULL) == 0 || h->gone;
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 5;
        if (asked && pthread_timedjoin_np(h->thread, NULL, &until) == 0)
            h->running = 0;
        else // the thread's memory and sockets are leaked rather than freed under it
            fprintf(stderr, "hub: the hub thread did not stop in time; left running\n");
    }
    for (int i = 0; i < h->n_stash; i++)
        wire_free(&h->stash[i]);
    if (h->running)
        pthread_detach(h->thread);
    zmq_close(h->pipe);
    wire_destroy(&h->wire);
    free(h);
    *self_p = NULL;
}
