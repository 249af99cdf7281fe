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
#include "hub_internal.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <stdatomic.h>

#include "hub_kind.h"
#include "kind.h"

hub_config_t hub_defaults(void) {
    hub_config_t c;
    memset(&c, 0, sizeof c);
    c.kind = KIND_TEXT;
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

// The kind of c: c->kind, or (until every caller sets it) the one its older fields name.
static int config_ok(const hub_config_t *c, const hub_kind_ops_t *ops) {
    const char *bad = NULL;
    if (!ops)
        bad = "kind must be KIND_TEXT, KIND_GFLOW or KIND_DIFFUSION";
    else if (!c->bind || !c->run_id)
        bad = "bind and run_id are required";
    else if ((bad = ops->config_check(c)))
        ;
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
    const hub_kind_ops_t *ops = hub_kind_ops(c->kind);
    if (!config_ok(c, ops))
        return NULL;
    hub_t *h = calloc(1, sizeof *h);
    hub_loop_t *s = calloc(1, sizeof *s);
    if (!h || !s)
        goto fail;
    s->c = *c;
    s->c.kind = ops->kind;
    s->ops = ops;
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
    if (ops->prompts(s, c->train_prompts) != 0)
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
    if (pthread_create(&h->thread, NULL, hub_thread_main, s) != 0) {
        fprintf(stderr, "hub: cannot start the hub thread\n");
        goto fail;
    }
    h->running = 1;
    fprintf(stderr, "hub: serving %s (run %s, %s, %zu train prompts)\n", c->bind, c->run_id,
            kind_name(ops->kind), s->n_prompts);
    return h;
fail:
    hub_loop_free(s);
    if (h) {
        if (h->pipe)
            zmq_close(h->pipe);
        wire_destroy(&h->wire);
        free(h);
    }
    return NULL;
}

static void free_buf(void *data, void *hint) {
    (void)hint;
    free(data);
}

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
    int64_t deadline = hub_now_ms() + wait_ms;
    for (;;) {
        int64_t left = deadline - hub_now_ms();
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
