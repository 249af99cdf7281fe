// hub_workers.c: the workers (hub_internal.h): Hello/Welcome with session keys (a rejoin
// under an id proves itself), the worker table and its removal, the weights (publication,
// announcements, chunked fetch) and RunStatus to observers.
#include "hub_internal.h"
#include "hub_kind.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <zlib.h>

worker_t *hub_worker_by_id(hub_loop_t *s, uint32_t id) {
    for (int i = 0; i < s->n_workers; i++)
        if (s->workers[i]->id == id)
            return s->workers[i];
    return NULL;
}

worker_t *hub_worker_by_peer(hub_loop_t *s, const wire_peer_t *p) {
    for (int i = 0; i < s->n_workers; i++) {
        worker_t *w = s->workers[i];
        if (w->peer.size == p->size && memcmp(w->peer.data, p->data, p->size) == 0)
            return w;
    }
    return NULL;
}

// Forgets a worker: its score requests go back to the queue, its work items expire.
void hub_worker_remove(hub_loop_t *s, worker_t *w, const char *why) {
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
    fprintf(stderr, "hub: %s %u (%s) %s%s\n", hub_role_name(w->role), w->id, w->name, why, held);
    for (int i = s->n_requests - 1; i >= 0; i--)
        if (s->requests[i].worker_id == w->id)
            hub_request_requeue(s, i, why);
    int64_t now = hub_now_ms();
    if (w->role == RLX__ROLE__ROLE_ACTOR)
        for (int i = 0; i < s->n_works; i++)
            if (s->works[i]->actor_id == w->id)
                hub_work_expire(s, s->works[i], now);
    for (int i = 0; i < s->n_workers; i++)
        if (s->workers[i] == w) {
            s->workers[i] = s->workers[--s->n_workers];
            break;
        }
    free(w);
}

static Rlx__WeightAnnounce announce_of(const hub_loop_t *s, const blob_t *b) {
    Rlx__WeightAnnounce a = RLX__WEIGHT_ANNOUNCE__INIT;
    a.kind = (Rlx__TrajectoryKind)s->ops->kind; // the actor installs it as this kind's model
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
            k = rng_next(&s->rng) ^ (uint64_t)hub_now_ms() * 0x9e3779b97f4a7c15ull;
    return k;
}

void hub_on_hello(hub_loop_t *s, const wire_peer_t *from, const Rlx__Envelope *env) {
    const Rlx__Hello *h = env->hello;
    if (h->role < RLX__ROLE__ROLE_ACTOR || h->role > RLX__ROLE__ROLE_OBSERVER) {
        hub_bad_request(s, from, env->seq,
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
    worker_t *old = hub_worker_by_peer(s, from);
    if (h->worker_id && h->worker_id < s->next_worker_id) {
        const session_t *ss = &s->sessions[h->worker_id];
        int same_peer =
            ss->peer.size == from->size && memcmp(ss->peer.data, from->data, from->size) == 0;
        if (h->session_key != ss->key && !same_peer) {
            s->hello_refused++;
            hub_note(s, EV_HELLO_REFUSED, "Hello as worker %u without its session key: refused",
                     h->worker_id);
            hub_send_error(s, from, RLX__ERROR_CODE__ERROR_CODE_BAD_REQUEST, env->seq,
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
        hub_worker_remove(s, old, "rejoined");
    }
    worker_t *same = id ? hub_worker_by_id(s, id) : NULL;
    if (same)
        hub_worker_remove(s, same, "rejoined from a new connection");
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
    int64_t now = hub_now_ms();
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
        hub_note(s, EV_NO_SCORER,
                 "reward worker %u (%s) does not list scorer \"%s\": no requests "
                 "go to it",
                 id, w->name, s->scorer);
    s->workers[s->n_workers++] = w;
    fprintf(stderr, "hub: %s %u (%s) joined\n", hub_role_name(w->role), id, w->name);

    Rlx__Welcome wel = RLX__WELCOME__INIT;
    Rlx__WeightAnnounce ann;
    wel.worker_id = id;
    wel.heartbeat_interval_ms = (uint32_t)s->c.heartbeat_ms;
    wel.heartbeat_liveness = (uint32_t)s->c.liveness;
    wel.session_key = w->session_key;
    if (s->weights[0].set) {
        ann = announce_of(s, &s->weights[0]);
        wel.policy_version = ann.version;
        wel.weights = &ann;
    }
    Rlx__Envelope out = RLX__ENVELOPE__INIT;
    out.body_case = RLX__ENVELOPE__BODY_WELCOME;
    out.welcome = &wel;
    hub_send(s, from, &out);
}

void hub_send_status(hub_loop_t *s, const worker_t *w) {
    Rlx__RunStatus st = RLX__RUN_STATUS__INIT;
    if (s->report && s->report->body_case == RLX__ENVELOPE__BODY_RUN_STATUS) {
        st = *s->report->run_status; // the learner's fields
        st.n_counters = 0;
        st.counters = NULL;
    }
    hub_counters_t k = hub_counters_now(s);
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
    hub_send(s, &w->peer, &out);
}

static void announce_weights(hub_loop_t *s) {
    Rlx__WeightAnnounce a = announce_of(s, &s->weights[0]);
    Rlx__Envelope env = RLX__ENVELOPE__INIT;
    env.body_case = RLX__ENVELOPE__BODY_WEIGHT_ANNOUNCE;
    env.weight_announce = &a;
    for (int i = 0; i < s->n_workers; i++)
        if (s->workers[i]->role == RLX__ROLE__ROLE_ACTOR)
            hub_send(s, &s->workers[i]->peer, &env);
}

void hub_on_weight_request(hub_loop_t *s, const wire_peer_t *from, const Rlx__Envelope *env) {
    const Rlx__WeightRequest *q = env->weight_request;
    blob_t *b = NULL;
    for (int i = 0; i < 2; i++)
        if (s->weights[i].set && s->weights[i].version == q->version)
            b = &s->weights[i];
    if (!b) {
        hub_note(s, EV_UNAVAILABLE, "weights of version %llu requested, no longer held",
                 (unsigned long long)q->version);
        hub_send_error(s, from, RLX__ERROR_CODE__ERROR_CODE_UNAVAILABLE, env->seq,
                       "weights of version %llu are not held (newest: %llu): fetch the newest",
                       (unsigned long long)q->version,
                       (unsigned long long)(s->weights[0].set ? s->weights[0].version : 0));
        return;
    }
    if (q->first_chunk >= b->num_chunks) {
        hub_bad_request(s, from, env->seq, "chunk %u of weights version %llu asked, it has %u",
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
        if (hub_send(s, from, &out) != WIRE_OK)
            break; // queue full or gone: the actor asks again for what it misses
        s->chunks_sent++;
    }
}

void hub_blob_clear(blob_t *b) {
    if (b->set)
        zmq_msg_close(&b->msg);
    free(b->chunk_crc);
    b->chunk_crc = NULL;
    b->set = 0;
}

void hub_on_weights(hub_loop_t *s, const pipe_cmd_t *cmd, zmq_msg_t *payload) {
    uint64_t version = (uint64_t)cmd->a;
    if (s->weights[0].set && version <= s->weights[0].version) {
        fprintf(stderr, "hub: weights version %llu refused: not newer than %llu\n",
                (unsigned long long)version, (unsigned long long)s->weights[0].version);
        hub_pipe_reply(s, cmd, -1, 0, NULL, 0);
        return;
    }
    size_t blen = zmq_msg_size(payload);
    uint32_t nch = (uint32_t)((blen + WIRE_WEIGHT_CHUNK_BYTES - 1) / WIRE_WEIGHT_CHUNK_BYTES);
    uint32_t *ccrc = malloc((size_t)nch * sizeof *ccrc);
    if (!ccrc) {
        hub_pipe_reply(s, cmd, -1, 0, NULL, 0);
        return;
    }
    hub_blob_clear(&s->weights[1]);
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
    hub_pipe_reply(s, cmd, 0, 0, NULL, 0);
}
