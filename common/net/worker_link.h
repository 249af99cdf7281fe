// worker_link.h: a worker's side of its session with the hub (proto/rlx.proto, "join"), shared
// by rlx-actor and rlx-reward: one DEALER socket; Hello on a fresh socket, retried with
// exponential backoff until Welcome; heartbeats; the hub presumed gone after `liveness`
// silent intervals (then a new socket and Hello, keeping the worker id and proving it with
// the session_key of the Welcome that assigned it; a Welcome with another id replaces both);
// NOT_JOINED answered with a new Hello; Bye. What differs by role (Hello's role, scorers and
// credits, the heartbeat's credits) comes from the owner's hooks.
//
// A fresh socket per Hello: Hellos queued in a socket to a hub that is not there yet would
// each become a separate worker once it appears.
#ifndef RLX_WORKER_LINK_H
#define RLX_WORKER_LINK_H

#include <stdint.h>

#include "wire.h"

typedef struct {
    const char *hub;     // ZeroMQ endpoint of the hub
    const char *name;    // worker name: Hello.name and log lines
    const char *log_tag; // role word that starts log lines ("actor", "reward")
    const char *run_id;  // run to join; NULL = learn it from Welcome
    int heartbeat_ms;    // heartbeat interval until Welcome says otherwise (>= 1)
    int liveness;        // silent intervals before the hub is presumed gone (>= 1)
    int max_backoff_ms;  // longest wait between Hellos
} wlink_config_t;

typedef struct {
    // Role-specific Hello fields (role, agent, credits, scorers); the link sets worker_id,
    // name and pid, and trajectory_kinds to all three (text, GFlowNet, diffusion) unless the
    // hook set them. Required.
    void (*fill_hello)(void *arg, Rlx__Hello *h);
    // Heartbeat fields beyond worker_id (credits, in_flight, policy_version). Required.
    void (*fill_heartbeat)(void *arg, Rlx__Heartbeat *hb);
    // Called when a new socket replaces the old one: replies to what was asked on the old
    // one will not come. May be NULL.
    void (*on_new_socket)(void *arg);
} wlink_hooks_t;

// Counters since start.
typedef struct {
    uint64_t hellos;      // Hellos sent
    uint64_t reconnects;  // sockets reopened after hub silence
    uint64_t hub_errors;  // Error messages received from the hub
    uint64_t wire_errors; // messages refused by the wire layer
    uint32_t worker_id;   // assigned by Welcome (0 before)
} wlink_stats_t;

typedef struct wlink wlink_t;

// hooks and arg are kept (not copied strings: cfg's strings are copied). Dies on no memory.
wlink_t *wlink_new(const wlink_config_t *cfg, const wlink_hooks_t *hooks, void *arg, void *zmq_ctx);
void wlink_destroy(wlink_t **self_p);

// Sends env (stamping sender_id); a failure is logged once and returned (WIRE_ERR_*).
int wlink_send(wlink_t *l, Rlx__Envelope *env);

// Receives the next message, waiting up to timeout_ms (0 = only what is there). Returns 1
// with *out for the owner (wire_free it), or 0 when nothing (more) is there. Session
// messages are handled here: a Welcome is applied and also returned (it carries the policy
// version and weights); Heartbeats are consumed; a Bye marks the hub gone and is consumed; a
// NOT_JOINED Error starts a new Hello and is consumed; other Errors are counted and returned.
int wlink_recv(wlink_t *l, int timeout_ms, Rlx__Envelope **out);

// Timers: Hello retries while not joined, hub liveness, a heartbeat when one is due.
// Returns -1 if no socket could be opened (fatal for the owner), else 0.
int wlink_tick(wlink_t *l, double now);

// A heartbeat now if one is due (for owners busy inside a long call).
void wlink_heartbeat_if_due(wlink_t *l, double now);

// Bye with reason if joined and the hub has not left; lingers up to 1 s so it can leave.
void wlink_bye(wlink_t *l, const char *reason);

int wlink_joined(const wlink_t *l);
int wlink_hub_left(const wlink_t *l);     // the hub said Bye
int wlink_heartbeat_ms(const wlink_t *l); // current interval (Welcome may change it)
int wlink_liveness(const wlink_t *l);
const char *wlink_run_id(const wlink_t *l); // "" until known
const wlink_stats_t *wlink_stats(const wlink_t *l);
wire_t *wlink_wire(const wlink_t *l); // the socket's wire endpoint (limits, counters)

#endif
