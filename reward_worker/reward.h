// reward.h: the rlx reward worker: joins the hub over one DEALER socket (proto/rlx.proto:
// Hello with its scorer names and credits, Welcome, heartbeats, Bye), answers every
// ScoreRequest with one ScoreReply holding one ScoreResult per item, and keeps serving
// whatever the items or the external scorer do.
//
// Scoring: without exec_cmd, each item is scored by the built-in scorer it names
// (scorers.h) if that scorer is among cfg.scorers; any other name gives that item an error
// result ("unknown scorer"), never a crash. With exec_cmd, every item goes to the external
// process (exec_scorer.h) with the scorer name it asked for; Hello then lists cfg.scorers
// as the names this worker answers for (default "exec").
//
// Requests are queued as they come (the hub sends at most `credits` at once) and scored one
// at a time between socket polls; while an external scorer is slow the worker keeps
// heartbeating. Liveness, reconnects and NOT_JOINED work as for the actor (actor.h).
#ifndef RLX_REWARD_H
#define RLX_REWARD_H

#include <signal.h>
#include <stdint.h>

#include "worker_link.h"

#define REWARD_MAX_BACKOFF_MS 8000
#define REWARD_MAX_SCORERS 16

typedef struct {
    const char *hub;        // ZeroMQ endpoint of the hub
    const char *name;       // name for logs and Hello.name
    const char *run_id;     // run to join; NULL = learn it from Welcome
    const char *scorers;    // comma-separated scorer names; NULL = scorer_list() (or "exec")
    const char *exec_cmd;   // external scorer command; NULL = built-ins only
    const char *classifier; // digit classifier checkpoint for the digit image scorers
    int exec_timeout_ms;    // deadline per external reply
    int credits;            // ScoreRequests held at once
    int heartbeat_ms;       // heartbeat interval until Welcome says otherwise
    int liveness;           // missed intervals before the hub is presumed gone (until Welcome)
    long max_requests;      // exit after this many answered requests; 0 = until stopped
    int stats_interval_ms;  // stats line period on stderr; 0 = never
} reward_config_t;

// Counters since start.
typedef struct {
    uint64_t requests;     // ScoreRequests answered
    uint64_t items;        // items scored (with or without error)
    uint64_t item_errors;  // items answered with an error
    wlink_stats_t session; // the hub session: Hellos, reconnects, errors, worker_id
} reward_stats_t;

typedef struct reward reward_t;

// Defaults for everything but hub.
reward_config_t reward_defaults(void);
// NULL with a message on stderr on a bad config (e.g. an unknown built-in scorer name).
reward_t *reward_new(const reward_config_t *c, void *zmq_ctx);
// Runs until *stop becomes non-zero, the hub says Bye or max_requests are answered; then
// sends Bye. Returns 0 on a clean exit, 1 on a fatal error.
int reward_run(reward_t *r, volatile sig_atomic_t *stop);
const reward_stats_t *reward_stats(const reward_t *r);
void reward_destroy(reward_t **self_p);

#endif
