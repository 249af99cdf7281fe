// worker_link.c: see worker_link.h.
#include "worker_link.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zmq.h>

#include "util.h"

struct wlink {
    wlink_config_t cfg;  // configuration (strings point into the copies below)
    char *hub;           // endpoint (owned)
    char *name;          // worker name (owned)
    char *tag;           // log prefix word (owned)
    wlink_hooks_t hooks; // the owner's role-specific parts
    void *arg;           // their argument
    void *ctx;           // ZeroMQ context (not owned)
    void *sock;          // DEALER socket to the hub (NULL before the first Hello)
    wire_t *wire;        // wire endpoint state of sock
    wlink_stats_t st;    // counters
    uint64_t key;        // Welcome.session_key for st.worker_id: the rejoin proof (0 before)
    int send_logged;     // a send failure was logged (once)
    int joined;          // Welcome received on this socket
    int hub_left;        // the hub said Bye
    int hb_ms;           // heartbeat interval
    int liveness;        // silent intervals before the hub is presumed gone
    int backoff_ms;      // current wait between Hellos
    double last_recv;    // time of the last message from the hub
    double last_send;    // time of the last message to the hub
    double hello_due;    // when to (re)send Hello while not joined
};

static void logf_(wlink_t *l, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s %s: ", l->tag, l->name);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

int wlink_send(wlink_t *l, Rlx__Envelope *env) {
    if (!l->sock)
        return WIRE_ERR_TRANSPORT;
    env->sender_id = l->st.worker_id;
    wire_error_t why;
    int rc = wire_send(l->wire, l->sock, NULL, env, &why);
    if (rc == WIRE_OK)
        l->last_send = rlx_now();
    else if (!l->send_logged++)
        logf_(l, "cannot send %s: %s (logged once)", wire_body_name(env->body_case), why.detail);
    return rc;
}

static int open_socket(wlink_t *l) {
    int linger = 0;
    if (l->sock) {
        zmq_setsockopt(l->sock, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(l->sock);
    }
    l->sock = zmq_socket(l->ctx, ZMQ_DEALER);
    if (!l->sock) {
        logf_(l, "zmq_socket: %s", zmq_strerror(errno));
        return -1;
    }
    zmq_setsockopt(l->sock, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_connect(l->sock, l->hub) != 0) {
        logf_(l, "cannot connect to %s: %s (hint: --hub tcp://HOST:PORT)", l->hub,
              zmq_strerror(errno));
        zmq_close(l->sock);
        l->sock = NULL;
        return -1;
    }
    return 0;
}

static int send_hello(wlink_t *l) {
    if (open_socket(l) != 0)
        return -1;
    if (l->hooks.on_new_socket)
        l->hooks.on_new_socket(l->arg);
    static Rlx__TrajectoryKind kinds[3] = {RLX__TRAJECTORY_KIND__TRAJECTORY_KIND_TEXT,
                                           RLX__TRAJECTORY_KIND__TRAJECTORY_KIND_GFLOW,
                                           RLX__TRAJECTORY_KIND__TRAJECTORY_KIND_DIFFUSION};
    Rlx__Hello h = RLX__HELLO__INIT;
    l->hooks.fill_hello(l->arg, &h);
    if (h.n_trajectory_kinds == 0) { // every kind rlx's workers handle
        h.n_trajectory_kinds = 3;
        h.trajectory_kinds = kinds;
    }
    h.worker_id = l->st.worker_id;
    h.session_key = l->key; // proves a rejoin under worker_id is this worker
    h.name = l->name;
    h.pid = (uint32_t)getpid();
    Rlx__Envelope env = RLX__ENVELOPE__INIT;
    env.body_case = RLX__ENVELOPE__BODY_HELLO;
    env.hello = &h;
    l->st.hellos++;
    l->joined = 0;
    wlink_send(l, &env);
    return 0;
}

static void send_heartbeat(wlink_t *l) {
    Rlx__Heartbeat hb = RLX__HEARTBEAT__INIT;
    l->hooks.fill_heartbeat(l->arg, &hb);
    hb.worker_id = l->st.worker_id;
    Rlx__Envelope env = RLX__ENVELOPE__INIT;
    env.body_case = RLX__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &hb;
    wlink_send(l, &env);
}

static void on_welcome(wlink_t *l, const Rlx__Envelope *env) {
    const Rlx__Welcome *w = env->welcome;
    if (l->st.worker_id && w->worker_id != l->st.worker_id)
        logf_(l, "rejoined as worker %u (was %u)", w->worker_id, l->st.worker_id);
    l->st.worker_id = w->worker_id;
    l->key = w->session_key; // the key goes with the id, old or new
    if (w->heartbeat_interval_ms)
        l->hb_ms = (int)w->heartbeat_interval_ms;
    if (w->heartbeat_liveness)
        l->liveness = (int)w->heartbeat_liveness;
    if (!wire_run_id(l->wire)[0] && env->run_id && env->run_id[0])
        wire_set_run_id(l->wire, env->run_id);
    l->joined = 1;
    l->backoff_ms = l->hb_ms;
    logf_(l, "joined %s as worker %u (run \"%s\", heartbeat %d ms x %d, policy v%llu)", l->hub,
          l->st.worker_id, wire_run_id(l->wire), l->hb_ms, l->liveness,
          (unsigned long long)w->policy_version);
}

int wlink_recv(wlink_t *l, int timeout_ms, Rlx__Envelope **out) {
    *out = NULL;
    if (!l->sock)
        return 0;
    // Bounded: a peer flooding session messages cannot keep the owner from its work.
    for (int n = 0; n < 1000; n++) {
        Rlx__Envelope *env = NULL;
        wire_error_t why;
        int rc = wire_recv(l->wire, l->sock, n == 0 ? timeout_ms : 0, NULL, &env, &why);
        if (rc == WIRE_ERR_TIMEOUT || rc == WIRE_ERR_INTERRUPTED)
            return 0;
        if (rc != WIRE_OK) {
            l->st.wire_errors++; // the wire layer logged it once
            continue;
        }
        l->last_recv = rlx_now();
        switch (env->body_case) {
        case RLX__ENVELOPE__BODY_WELCOME:
            on_welcome(l, env);
            *out = env;
            return 1;
        case RLX__ENVELOPE__BODY_HEARTBEAT:
            wire_free(&env);
            continue;
        case RLX__ENVELOPE__BODY_BYE:
            logf_(l, "hub said Bye (%s): leaving", env->bye->reason);
            l->hub_left = 1;
            wire_free(&env);
            return 0;
        case RLX__ENVELOPE__BODY_ERROR:
            l->st.hub_errors++;
            if (env->error->code == RLX__ERROR_CODE__ERROR_CODE_NOT_JOINED) {
                logf_(l, "hub does not know us (%s): saying Hello again", env->error->message);
                l->joined = 0;
                l->hello_due = 0;
                wire_free(&env);
                continue;
            }
            *out = env;
            return 1;
        default:
            *out = env;
            return 1;
        }
    }
    return 0;
}

int wlink_tick(wlink_t *l, double now) {
    if (!l->joined) {
        if (now >= l->hello_due) {
            send_hello(l); // on failure sock is NULL: reported below
            l->hello_due = now + l->backoff_ms * 1e-3;
            l->backoff_ms = l->backoff_ms * 2 > l->cfg.max_backoff_ms ? l->cfg.max_backoff_ms
                                                                      : l->backoff_ms * 2;
            l->last_recv = now;
        }
        return l->sock ? 0 : -1;
    }
    if (now - l->last_recv > l->hb_ms * 1e-3 * l->liveness) {
        logf_(l, "hub silent for %.1f s: reconnecting", now - l->last_recv);
        l->st.reconnects++;
        l->joined = 0;
        l->hello_due = now;
        return 0;
    }
    wlink_heartbeat_if_due(l, now);
    return 0;
}

void wlink_heartbeat_if_due(wlink_t *l, double now) {
    if (l->joined && now - l->last_send >= l->hb_ms * 1e-3)
        send_heartbeat(l);
}

void wlink_bye(wlink_t *l, const char *reason) {
    if (!l->sock || l->st.worker_id == 0 || l->hub_left) // nobody to say Bye to
        return;
    Rlx__Bye bye = RLX__BYE__INIT;
    bye.worker_id = l->st.worker_id;
    bye.reason = (char *)reason;
    Rlx__Envelope env = RLX__ENVELOPE__INIT;
    env.body_case = RLX__ENVELOPE__BODY_BYE;
    env.bye = &bye;
    wlink_send(l, &env);
    int linger = 1000; // give the Bye a moment to leave before the socket closes
    zmq_setsockopt(l->sock, ZMQ_LINGER, &linger, sizeof linger);
}

wlink_t *wlink_new(const wlink_config_t *cfg, const wlink_hooks_t *hooks, void *arg,
                   void *zmq_ctx) {
    assert(cfg->hub && cfg->heartbeat_ms >= 1 && cfg->liveness >= 1 && cfg->max_backoff_ms >= 1);
    assert(hooks->fill_hello && hooks->fill_heartbeat);
    wlink_t *l = rlx_xcalloc(1, sizeof *l, "worker link");
    l->cfg = *cfg;
    l->hub = strdup(cfg->hub);
    l->name = strdup(cfg->name ? cfg->name : "worker");
    l->tag = strdup(cfg->log_tag ? cfg->log_tag : "worker");
    l->wire = wire_new(l->name, 0, cfg->run_id);
    if (!l->hub || !l->name || !l->tag || !l->wire)
        RLX_DIE("out of memory");
    l->cfg.hub = l->hub;
    l->cfg.name = l->name;
    l->cfg.log_tag = l->tag;
    l->cfg.run_id = NULL; // kept by the wire endpoint
    l->hooks = *hooks;
    l->arg = arg;
    l->ctx = zmq_ctx;
    l->hb_ms = cfg->heartbeat_ms;
    l->liveness = cfg->liveness;
    l->backoff_ms = cfg->heartbeat_ms;
    return l;
}

void wlink_destroy(wlink_t **self_p) {
    if (!self_p || !*self_p)
        return;
    wlink_t *l = *self_p;
    if (l->sock)
        zmq_close(l->sock);
    wire_destroy(&l->wire);
    free(l->hub);
    free(l->name);
    free(l->tag);
    free(l);
    *self_p = NULL;
}

int wlink_joined(const wlink_t *l) {
    return l->joined;
}

int wlink_hub_left(const wlink_t *l) {
    return l->hub_left;
}

int wlink_heartbeat_ms(const wlink_t *l) {
    return l->hb_ms;
}

int wlink_liveness(const wlink_t *l) {
    return l->liveness;
}

const char *wlink_run_id(const wlink_t *l) {
    return wire_run_id(l->wire);
}

const wlink_stats_t *wlink_stats(const wlink_t *l) {
    return &l->st;
}

wire_t *wlink_wire(const wlink_t *l) {
    return l->wire;
}
