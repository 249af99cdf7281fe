// hub_loop.c: the hub thread (hub_internal.h): one zmq_poll loop over the ROUTER socket and
// the pipe, the timers (heartbeats, deaths, deadlines), the router's message dispatch, the hub
// side of the pipe protocol (hub.c's file comment), logging, sending and the counters.
#include "hub_internal.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#include "hub_kind.h"

void hub_note(hub_loop_t *s, int ev, const char *fmt, ...) {
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

const char *hub_role_name(Rlx__Role r) {
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

// Sends env to w; counts and logs (once) a refusal. Returns the wire code.
int hub_send(hub_loop_t *s, const wire_peer_t *to, const Rlx__Envelope *env) {
    wire_error_t why;
    int rc = wire_send(s->wire, s->router, to, env, &why);
    if (rc == WIRE_ERR_AGAIN) {
        s->send_again++;
        hub_note(s, EV_SEND_AGAIN, "a worker's send queue is full (%s)",
                 wire_body_name(env->body_case));
    } else if (rc != WIRE_OK) {
        hub_note(s, EV_SEND_FAILED, "send %s failed: %s", wire_body_name(env->body_case),
                 why.detail);
    }
    return rc;
}

void hub_send_error(hub_loop_t *s, const wire_peer_t *to, Rlx__ErrorCode code, uint64_t ref_seq,
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
    hub_send(s, to, &env);
}

void hub_bad_request(hub_loop_t *s, const wire_peer_t *to, uint64_t ref_seq, const char *fmt, ...) {
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    s->bad_requests++;
    hub_note(s, EV_BAD_REQUEST, "bad request: %s", msg);
    hub_send_error(s, to, RLX__ERROR_CODE__ERROR_CODE_BAD_REQUEST, ref_seq, "%s", msg);
}

uint64_t hub_in_flight(const hub_loop_t *s) {
    return s->n.sampled - s->n.delivered - s->n.dropped_invalid - s->n.dropped_score -
           s->n.dropped_shutdown;
}

hub_counters_t hub_counters_now(const hub_loop_t *s) {
    hub_counters_t k = s->n;
    k.in_flight = hub_in_flight(s);
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

static void on_message(hub_loop_t *s, const wire_peer_t *from, Rlx__Envelope *env) {
    if (env->body_case == RLX__ENVELOPE__BODY_HELLO) {
        hub_on_hello(s, from, env);
        return;
    }
    worker_t *w = hub_worker_by_peer(s, from);
    worker_t *claimed = env->sender_id && (!w || env->sender_id != w->id)
                            ? hub_worker_by_id(s, env->sender_id)
                            : NULL;
    if (claimed) { // a worker id used from another connection than the one that joined
        s->peer_mismatch++;
        hub_note(s, EV_PEER_MISMATCH, "%s as worker %u from a connection that is not that worker's",
                 wire_body_name(env->body_case), env->sender_id);
        if (env->body_case != RLX__ENVELOPE__BODY_ERROR &&
            env->body_case != RLX__ENVELOPE__BODY_BYE)
            hub_send_error(s, from, RLX__ERROR_CODE__ERROR_CODE_NOT_JOINED, env->seq,
                           "worker %u joined from another connection: send Hello (with its "
                           "session_key) to rejoin from this one",
                           env->sender_id);
        return;
    }
    if (!w) {
        s->not_joined++;
        hub_note(s, EV_NOT_JOINED, "%s from a sender that has not joined: told to send Hello",
                 wire_body_name(env->body_case));
        if (env->body_case != RLX__ENVELOPE__BODY_ERROR &&
            env->body_case != RLX__ENVELOPE__BODY_BYE)
            hub_send_error(s, from, RLX__ERROR_CODE__ERROR_CODE_NOT_JOINED, env->seq,
                           "unknown sender (never joined, or presumed dead): send Hello again");
        return;
    }
    w->last_seen = hub_now_ms();
    int is_actor = w->role == RLX__ROLE__ROLE_ACTOR;
    switch (env->body_case) {
    case RLX__ENVELOPE__BODY_HEARTBEAT: {
        const Rlx__Heartbeat *hb = env->heartbeat;
        if (w->role == RLX__ROLE__ROLE_REWARD_WORKER && hb->credits + hb->in_flight > 0)
            w->capacity = (int)(hb->credits + hb->in_flight);
        if (is_actor)
            w->policy_version = hb->policy_version;
        if (w->role == RLX__ROLE__ROLE_OBSERVER)
            hub_send_status(s, w);
        break;
    }
    case RLX__ENVELOPE__BODY_BYE:
        hub_worker_remove(s, w, "left");
        break;
    case RLX__ENVELOPE__BODY_WORK_REQUEST:
        if (!is_actor) {
            hub_bad_request(s, from, env->seq, "work_request from a %s: only actors get work",
                            hub_role_name(w->role));
            break;
        }
        w->want = env->work_request->credits;
        w->policy_version = env->work_request->policy_version;
        break;
    case RLX__ENVELOPE__BODY_TRAJECTORY_BATCH:
        if (!is_actor) {
            hub_bad_request(s, from, env->seq, "trajectory_batch from a %s: only actors send them",
                            hub_role_name(w->role));
            break;
        }
        hub_on_trajectories(s, w, env);
        break;
    case RLX__ENVELOPE__BODY_SCORE_REPLY:
        if (w->role != RLX__ROLE__ROLE_REWARD_WORKER) {
            hub_bad_request(s, from, env->seq, "score_reply from a %s: only reward workers score",
                            hub_role_name(w->role));
            break;
        }
        hub_on_score_reply(s, w, env->score_reply);
        break;
    case RLX__ENVELOPE__BODY_WEIGHT_REQUEST:
        hub_on_weight_request(s, from, env);
        break;
    case RLX__ENVELOPE__BODY_ERROR:
        s->peer_errors++;
        hub_note(s, EV_PEER_ERROR, "error from %s %u: code %d: %s", hub_role_name(w->role), w->id,
                 (int)env->error->code, env->error->message ? env->error->message : "");
        break;
    default:
        hub_bad_request(s, from, env->seq, "the hub does not accept %s messages",
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

static void free_buf(void *data, void *hint) {
    (void)hint;
    free(data);
}

// Sends a reply, with an optional payload (taken over: freed with free()).
void hub_pipe_reply(hub_loop_t *s, const pipe_cmd_t *cmd, int status, int count, void *payload,
                    size_t len) {
    pipe_reply_t r;
    memset(&r, 0, sizeof r);
    r.cmd = cmd->cmd;
    r.tag = cmd->tag;
    r.status = status;
    r.count = count;
    r.counters = hub_counters_now(s);
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
        hub_pipe_reply(s, cmd, -1, 0, NULL, 0);
        return;
    }
    *cell = env;
    pipe_reply_t r;
    memset(&r, 0, sizeof r);
    r.cmd = cmd->cmd;
    r.tag = cmd->tag;
    r.count = count;
    r.counters = hub_counters_now(s);
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
        hub_note(s, EV_LOG_FAILED, "cannot append to the trajectory log %s", s->log_path);
    free(v);
}

static void ready_free(ready_t *r) {
    for (int i = 0; i < r->n; i++)
        hub_traj_free(r->v[i]);
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
        hub_pipe_reply(s, cmd, 0, 0, NULL, 0);
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
        hub_pipe_reply(s, cmd, -1, 0, NULL, 0);
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
            hub_settle(s, r->items[j], 0);
        }
        r->n = 0;
        hub_request_remove(s, s->n_requests - 1);
    }
    traj_t *t;
    while ((t = hub_sq_pop(s))) {
        s->n.dropped_shutdown++;
        hub_settle(s, t, 0);
    }
    while (s->n_works > 0) { // scored survivors of unflushed groups go with their work item
        work_t *w = s->works[s->n_works - 1];
        for (int g = 0; g < w->n_groups; g++)
            s->n.dropped_shutdown += (uint64_t)w->groups[g].n_scored;
        hub_work_remove(s, w);
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
                hub_pipe_reply(s, &s->take, 0, 0, NULL, 0);
            s->take_parked = 0;
            if (s->rq_head || cmd.b <= 0) {
                answer_take(s, &cmd);
            } else {
                s->take_parked = 1;
                s->take = cmd;
                s->take_deadline = hub_now_ms() + cmd.b;
            }
            break;
        case CMD_WEIGHTS:
            if (nframes != 2 || zmq_msg_size(&payload) == 0)
                hub_pipe_reply(s, &cmd, -1, 0, NULL, 0);
            else
                hub_on_weights(s, &cmd, &payload);
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
                        hub_send_status(s, s->workers[i]);
                hub_pipe_reply(s, &cmd, 0, 0, NULL, 0);
            } else {
                wire_free(&env);
                hub_pipe_reply(s, &cmd, -1, 0, NULL, 0);
            }
            break;
        }
        case CMD_COUNTERS:
            hub_pipe_reply(s, &cmd, 0, 0, NULL, 0);
            break;
        case CMD_DRAIN:
            if (s->drain_parked)
                hub_pipe_reply(s, &s->drain, -1, 0, NULL, 0);
            s->draining = 1;
            s->drain_parked = 1;
            s->drain = cmd;
            s->drain_deadline = hub_now_ms() + (cmd.b > 0 ? cmd.b : 0);
            break;
        case CMD_STOP:
            s->stop = 1;
            hub_pipe_reply(s, &cmd, 0, 0, NULL, 0);
            break;
        default:
            break; // not from hub.c's learner side: ignore
        }
        zmq_msg_close(&payload);
    }
}

// Heartbeats, deaths, deadlines. Returns the time of the next thing due.
static int64_t timers(hub_loop_t *s, int64_t now) {
    int64_t next = now + s->c.heartbeat_ms;
    int64_t dead_after = (int64_t)s->c.heartbeat_ms * s->c.liveness;
    for (int i = s->n_workers - 1; i >= 0; i--) {
        if (i >= s->n_workers)
            continue;
        worker_t *w = s->workers[i];
        if (now - w->last_seen > dead_after) {
            hub_worker_remove(s, w, "presumed dead (no heartbeat)");
            continue;
        }
        if (now >= w->next_hb) {
            Rlx__Heartbeat hb = RLX__HEARTBEAT__INIT;
            hb.policy_version = s->weights[0].set ? s->weights[0].version : 0;
            Rlx__Envelope env = RLX__ENVELOPE__INIT;
            env.body_case = RLX__ENVELOPE__BODY_HEARTBEAT;
            env.heartbeat = &hb;
            if (hub_send(s, &w->peer, &env) == WIRE_ERR_UNREACHABLE) {
                hub_worker_remove(s, w, "is unreachable (disconnected)");
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
            hub_note(s, EV_SCORE_TIMEOUT,
                     "score request %llu to worker %u passed its deadline: "
                     "requeued",
                     (unsigned long long)s->requests[i].request_id, s->requests[i].worker_id);
            hub_request_requeue(s, i, "deadline");
        } else {
            next = min64(next, s->requests[i].deadline);
        }
    }
    for (int i = s->n_works - 1; i >= 0; i--) {
        if (i >= s->n_works)
            continue;
        work_t *w = s->works[i];
        if (w->state == WORK_OUT && now >= w->deadline)
            hub_work_expire(s, w, now);
        if (w->state == WORK_LATE && now >= w->purge_at) {
            hub_work_close(s, w); // may free w
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
            hub_pipe_reply(s, &s->take, 0, 0, NULL, 0);
        }
        finish_drain(s);
        hub_pipe_reply(s, &s->drain, 0, 0, NULL, 0);
    }
}

void hub_loop_free(hub_loop_t *s) {
    if (!s)
        return;
    while (s->n_requests > 0) {
        request_t *r = &s->requests[s->n_requests - 1];
        for (int j = 0; j < r->n; j++)
            hub_traj_free(r->items[j]);
        free(r->items);
        s->n_requests--;
    }
    free(s->requests);
    traj_t *t;
    while ((t = hub_sq_pop(s)))
        hub_traj_free(t);
    while (s->n_works > 0)
        hub_work_remove(s, s->works[s->n_works - 1]);
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
    hub_blob_clear(&s->weights[0]);
    hub_blob_clear(&s->weights[1]);
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

void *hub_thread_main(void *arg) {
    hub_loop_t *s = arg;
    int64_t next = hub_now_ms();
    while (!s->stop) {
        int64_t now = hub_now_ms();
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
            hub_pipe_reply(s, &gone, -1, 0, NULL, 0);
            break;
        }
        if (rc > 0 && (items[0].revents & ZMQ_POLLIN))
            read_router(s);
        if (rc > 0 && (items[1].revents & ZMQ_POLLIN))
            read_pipe(s);
        if (s->stop)
            break;
        now = hub_now_ms();
        next = timers(s, now);
        hub_dispatch_scoring(s);
        hub_dispatch_work(s);
        answer_parked(s, now);
    }
    if (s->stop)
        say_bye(s);
    hub_loop_free(s);
    return NULL;
}
