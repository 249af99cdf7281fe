// wire.c: packing, unpacking and checking rlx Envelopes, and moving them over ZeroMQ.
// See wire.h for the contract; rlx.proto for the messages.
#include "wire.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

struct wire {
    char name[32];      // label of log lines
    size_t max_size;    // largest message accepted or produced
    char *run_id;       // stamped and checked; NULL = not known yet
    uint64_t next_seq;  // seq of the next envelope sent without its own
    uint64_t last_seq;  // seq stamped on the last envelope encoded or sent
    unsigned logged;    // bit per wire_rc_t already logged once
    wire_stats_t stats; // counters
};

wire_t *wire_new(const char *name, size_t max_size, const char *run_id) {
    wire_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    snprintf(self->name, sizeof self->name, "%s", name ? name : "wire");
    self->max_size = max_size ? max_size : WIRE_DEFAULT_MAX_SIZE;
    self->next_seq = 1;
    wire_set_run_id(self, run_id);
    return self;
}

void wire_destroy(wire_t **self_p) {
    if (!self_p || !*self_p)
        return;
    free((*self_p)->run_id);
    free(*self_p);
    *self_p = NULL;
}

void wire_set_max_size(wire_t *self, size_t max_size) {
    assert(self);
    self->max_size = max_size ? max_size : WIRE_DEFAULT_MAX_SIZE;
}

size_t wire_max_size(const wire_t *self) {
    return self ? self->max_size : WIRE_DEFAULT_MAX_SIZE;
}

void wire_set_run_id(wire_t *self, const char *run_id) {
    assert(self);
    free(self->run_id);
    self->run_id = (run_id && run_id[0]) ? strdup(run_id) : NULL;
}

const char *wire_run_id(const wire_t *self) {
    return self && self->run_id ? self->run_id : "";
}

uint64_t wire_last_seq(const wire_t *self) {
    return self ? self->last_seq : 0;
}

const wire_stats_t *wire_stats(const wire_t *self) {
    assert(self);
    return &self->stats;
}

uint64_t wire_error_total(const wire_t *self) {
    assert(self);
    uint64_t total = 0;
    for (int i = 1; i < WIRE_ERR_COUNT; i++)
        if (i != WIRE_ERR_TIMEOUT && i != WIRE_ERR_INTERRUPTED && i != WIRE_ERR_AGAIN)
            total += self->stats.errors[i];
    return total;
}

// Fills *why (if given), counts the refusal and logs the first of each kind. Returns code.
static int refuse(wire_t *self, wire_error_t *why, int code, size_t size, uint32_t got_version,
                  uint64_t seq, const char *fmt, ...) {
    wire_error_t e = {.code = code,
                      .got_version = got_version,
                      .want_version = WIRE_PROTOCOL_VERSION,
                      .size = size,
                      .seq = seq};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.detail, sizeof e.detail, fmt, ap);
    va_end(ap);
    wire_utf8_clip(e.detail); // it may quote the peer (its run id), and vsnprintf cuts anywhere
    if (self) {
        self->stats.errors[code]++;
        int routine =
            code == WIRE_ERR_TIMEOUT || code == WIRE_ERR_INTERRUPTED || code == WIRE_ERR_AGAIN;
        if (!routine && !(self->logged & (1u << code))) {
            self->logged |= 1u << code;
            fprintf(stderr, "rlx wire[%s]: %s: %s (first of its kind; later ones are counted)\n",
                    self->name, wire_strerror(code), e.detail);
        }
    }
    if (why)
        *why = e;
    return code;
}

// Fills copy with env as it goes on the wire: version, seq and run id stamped.
static void stamp(const wire_t *self, const Rlx__Envelope *env, Rlx__Envelope *copy) {
    assert(env && env->base.descriptor == &rlx__envelope__descriptor);
    assert(env->body_case != RLX__ENVELOPE__BODY__NOT_SET && "an Envelope needs a body");
    *copy = *env;
    copy->protocol_version = WIRE_PROTOCOL_VERSION;
    if (self && copy->seq == 0)
        copy->seq = self->next_seq;
    if (self && self->run_id && (!copy->run_id || !copy->run_id[0]))
        copy->run_id = self->run_id;
}

// Records a successful encode or send of the stamped copy.
static void sent(wire_t *self, const Rlx__Envelope *orig, const Rlx__Envelope *copy, size_t size) {
    if (!self)
        return;
    if (orig->seq == 0)
        self->next_seq++;
    self->last_seq = copy->seq;
    self->stats.sent++;
    self->stats.bytes_sent += size;
}

size_t wire_encoded_size(wire_t *self, const Rlx__Envelope *env) {
    Rlx__Envelope copy;
    stamp(self, env, &copy);
    return rlx__envelope__get_packed_size(&copy);
}

static int too_large_to_send(wire_t *self, wire_error_t *why, const Rlx__Envelope *env, size_t size,
                             size_t limit) {
    return refuse(self, why, WIRE_ERR_TOO_LARGE, size, 0, 0,
                  "refusing to send %s of %zu bytes, limit %zu: send it in smaller parts",
                  wire_body_name(env->body_case), size, limit);
}

int wire_encode(wire_t *self, const Rlx__Envelope *env, uint8_t **buf, size_t *len,
                wire_error_t *why) {
    assert(buf && len);
    *buf = NULL;
    *len = 0;
    Rlx__Envelope copy;
    stamp(self, env, &copy);
    size_t size = rlx__envelope__get_packed_size(&copy);
    if (size > wire_max_size(self)) {
        if (self)
            self->stats.send_failed++;
        return too_large_to_send(self, why, env, size, wire_max_size(self));
    }
    uint8_t *out = malloc(size ? size : 1);
    if (!out) {
        if (self)
            self->stats.send_failed++;
        return refuse(self, why, WIRE_ERR_NOMEM, size, 0, 0, "no memory for %zu bytes", size);
    }
    size_t packed = rlx__envelope__pack(&copy, out);
    assert(packed == size);
    sent(self, env, &copy, size);
    *buf = out;
    *len = packed;
    return WIRE_OK;
}

int wire_encode_into(wire_t *self, const Rlx__Envelope *env, uint8_t *buf, size_t cap, size_t *len,
                     wire_error_t *why) {
    assert(buf && len);
    *len = 0;
    Rlx__Envelope copy;
    stamp(self, env, &copy);
    size_t size = rlx__envelope__get_packed_size(&copy);
    size_t limit = wire_max_size(self) < cap ? wire_max_size(self) : cap;
    if (size > limit) {
        if (self)
            self->stats.send_failed++;
        return too_large_to_send(self, why, env, size, limit);
    }
    size_t packed = rlx__envelope__pack(&copy, buf);
    assert(packed == size);
    sent(self, env, &copy, size);
    *len = packed;
    return WIRE_OK;
}

int wire_encode_raw(const Rlx__Envelope *env, uint8_t **buf, size_t *len) {
    assert(env && buf && len);
    size_t size = rlx__envelope__get_packed_size(env);
    *buf = malloc(size ? size : 1);
    *len = 0;
    if (!*buf)
        return WIRE_ERR_NOMEM;
    *len = rlx__envelope__pack(env, *buf);
    return WIRE_OK;
}

// ---- arenas -----------------------------------------------------------------------------

#define ARENA_MAGIC 0x72656e61u // "aner"
#define ARENA_ALIGN 16          // every allocation is aligned for any field type
#if defined(__SANITIZE_ADDRESS__)
#define ARENA_EXACT 1 // one block per allocation: AddressSanitizer still sees every bound
#else
#define ARENA_EXACT 0
#endif

typedef struct arena_block {
    struct arena_block *next; // older block
    size_t cap;               // bytes of data
    size_t used;              // bytes handed out
    size_t last;              // offset of the last allocation (undone by its free)
    _Alignas(ARENA_ALIGN) unsigned char data[];
} arena_block_t;

struct wire_arena {
    uint32_t magic;        // ARENA_MAGIC: wire_free was given a decoded Envelope
    atomic_int refs;       // the Envelope's own (until wire_free) plus wire_arena_retain's
    arena_block_t *blocks; // newest first
    wire_arena_t **held;   // (n_held) arenas this one keeps alive (wire_batch_handover)
    size_t n_held;         // how many
    Rlx__Envelope env;     // the decoded Envelope handed out
};

static wire_arena_t *arena_new(size_t first_block) {
    wire_arena_t *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->magic = ARENA_MAGIC;
    atomic_init(&a->refs, 1);
    if (!ARENA_EXACT && first_block > 0) {
        arena_block_t *b = malloc(sizeof *b + first_block);
        if (b) {
            b->next = NULL;
            b->cap = first_block;
            b->used = b->last = 0;
            a->blocks = b;
        }
    }
    return a;
}

static void *arena_alloc(void *data, size_t size) {
    wire_arena_t *a = data;
    size_t need = (size + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (need == 0)
        need = ARENA_ALIGN;
    arena_block_t *b = a->blocks;
    if (ARENA_EXACT || !b || b->cap - b->used < need) {
        size_t cap = ARENA_EXACT ? need : (b ? 2 * b->cap : 1024);
        if (cap < need)
            cap = need;
        arena_block_t *nb = malloc(sizeof *nb + cap);
        if (!nb)
            return NULL;
        nb->next = b;
        nb->cap = cap;
        nb->used = nb->last = 0;
        a->blocks = b = nb;
    }
    b->last = b->used;
    b->used += need;
    return b->data + b->last;
}

// protobuf-c frees only scratch (and parts of a message that failed to parse): the last
// allocation is given back, anything else waits for the arena.
static void arena_free(void *data, void *ptr) {
    wire_arena_t *a = data;
    arena_block_t *b = a->blocks;
    if (ptr && b && (unsigned char *)ptr == b->data + b->last) {
        b->used = b->last;
        if (ARENA_EXACT) {
            a->blocks = b->next;
            free(b);
        }
    }
}

static void arena_destroy(wire_arena_t *a) {
    for (size_t i = 0; i < a->n_held; i++)
        wire_arena_release(&a->held[i]);
    for (arena_block_t *b = a->blocks, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    a->magic = 0;
    free(a);
}

static wire_arena_t *arena_of(const Rlx__Envelope *env) {
    wire_arena_t *a = (wire_arena_t *)((char *)env - offsetof(wire_arena_t, env));
    assert(a->magic == ARENA_MAGIC && "not an Envelope from wire_decode or wire_recv");
    return a;
}

wire_arena_t *wire_arena_retain(const Rlx__Envelope *env) {
    assert(env);
    wire_arena_t *a = arena_of(env);
    atomic_fetch_add_explicit(&a->refs, 1, memory_order_relaxed);
    return a;
}

void wire_arena_release(wire_arena_t **arena_p) {
    if (!arena_p || !*arena_p)
        return;
    wire_arena_t *a = *arena_p;
    assert(a->magic == ARENA_MAGIC && atomic_load(&a->refs) > 0);
    if (atomic_fetch_sub_explicit(&a->refs, 1, memory_order_acq_rel) == 1)
        arena_destroy(a);
    *arena_p = NULL;
}

Rlx__Envelope *wire_batch_handover(wire_t *self, Rlx__Trajectory *const *v,
                                   wire_arena_t *const *arenas, size_t n) {
    assert((v && arenas) || n == 0);
    size_t need = sizeof(Rlx__TrajectoryBatch) + 2 * n * sizeof(void *) + 4 * ARENA_ALIGN;
    wire_arena_t *a = arena_new(need);
    if (!a)
        return NULL;
    Rlx__TrajectoryBatch *b = arena_alloc(a, sizeof *b);
    Rlx__Trajectory **tv = arena_alloc(a, (n ? n : 1) * sizeof *tv);
    a->held = arena_alloc(a, (n ? n : 1) * sizeof *a->held);
    if (!b || !tv || !a->held) {
        arena_destroy(a);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        assert(arenas[i] && arenas[i]->magic == ARENA_MAGIC);
        atomic_fetch_add_explicit(&arenas[i]->refs, 1, memory_order_relaxed);
        a->held[i] = arenas[i];
        tv[i] = v[i];
    }
    a->n_held = n;
    rlx__trajectory_batch__init(b);
    b->n_trajectories = n;
    b->trajectories = tv;
    Rlx__Envelope env = RLX__ENVELOPE__INIT;
    env.body_case = RLX__ENVELOPE__BODY_TRAJECTORY_BATCH;
    env.trajectory_batch = b;
    stamp(self, &env, &a->env);
    if (a->env.run_id && self && a->env.run_id == self->run_id) { // outlives nothing of self's
        char *id = arena_alloc(a, strlen(self->run_id) + 1);
        if (!id) {
            arena_destroy(a);
            return NULL;
        }
        strcpy(id, self->run_id);
        a->env.run_id = id;
    }
    sent(self, &env, &a->env, 0);
    return &a->env;
}

// protocol_version as the first field (tag 0x08, a varint), the way every encoder writes it.
// Lets a reader name the version of a message from a newer schema it cannot otherwise parse.
static int peek_version(const uint8_t *buf, size_t len, uint64_t *version) {
    if (len < 2 || buf[0] != 0x08)
        return 0;
    uint64_t v = 0;
    for (size_t i = 1; i < len && i <= 10; i++) {
        v |= (uint64_t)(buf[i] & 0x7f) << (7 * (i - 1));
        if (!(buf[i] & 0x80)) {
            *version = v;
            return 1;
        }
    }
    return 0;
}

static int version_refusal(wire_t *self, wire_error_t *why, size_t len, uint64_t got,
                           uint64_t seq) {
    if (got == 0)
        return refuse(self, why, WIRE_ERR_VERSION, len, 0, seq,
                      "message without protocol_version (this end speaks %u): not an rlx "
                      "envelope, or a sender that does not stamp it",
                      WIRE_PROTOCOL_VERSION);
    return refuse(self, why, WIRE_ERR_VERSION, len, (uint32_t)got, seq,
                  "protocol version %llu, this end speaks %u: run matching rlx versions "
                  "(regenerate the peer's code from the same rlx.proto)",
                  (unsigned long long)got, WIRE_PROTOCOL_VERSION);
}

static int decode(wire_t *self, const uint8_t *buf, size_t len, Rlx__Envelope **out,
                  wire_error_t *why) {
    assert(out && (buf || len == 0));
    *out = NULL;
    if (self)
        self->stats.bytes_received += len;
    size_t limit = wire_max_size(self);
    if (len > limit)
        return refuse(self, why, WIRE_ERR_TOO_LARGE, len, 0, 0,
                      "message of %zu bytes, limit %zu: the sender must split it (weights go "
                      "in chunks) or the receiver's max size must be raised",
                      len, limit);
    uint64_t version;
    if (peek_version(buf, len, &version) && version != WIRE_PROTOCOL_VERSION)
        return version_refusal(self, why, len, version, 0);

    // Parts of a message take about twice its bytes (packed varints widen to 4-8 bytes).
    wire_arena_t *arena = arena_new(2 * len + 512);
    if (!arena)
        return refuse(self, why, WIRE_ERR_NOMEM, len, 0, 0, "no memory for %zu bytes", len);
    ProtobufCAllocator alloc = {.alloc = arena_alloc, .free = arena_free, .allocator_data = arena};
    Rlx__Envelope *parsed = rlx__envelope__unpack(&alloc, len, buf);
    if (!parsed) {
        arena_destroy(arena);
        return refuse(self, why, WIRE_ERR_MALFORMED, len, 0, 0,
                      "%zu bytes that do not parse as an rlx Envelope: a peer that is not "
                      "rlx, or corrupted data",
                      len);
    }
    arena->env = *parsed; // handed out from the arena header, so wire_free finds the arena
    Rlx__Envelope *env = &arena->env;
    int rc = WIRE_OK;
    if (env->protocol_version != WIRE_PROTOCOL_VERSION) {
        rc = version_refusal(self, why, len, env->protocol_version, env->seq);
    } else if (env->body_case == RLX__ENVELOPE__BODY__NOT_SET) {
        unsigned field = env->base.n_unknown_fields ? env->base.unknown_fields[0].tag : 0;
        rc = refuse(self, why, WIRE_ERR_UNKNOWN_TYPE, len, 0, env->seq,
                    field ? "envelope seq %llu has no known message type (unknown field %u: a "
                            "newer peer's message? upgrade this end)"
                          : "envelope seq %llu has no message type set (broken sender)",
                    (unsigned long long)env->seq, field);
    } else if (self && self->run_id && env->run_id && env->run_id[0] &&
               strcmp(env->run_id, self->run_id) != 0) {
        rc = refuse(self, why, WIRE_ERR_WRONG_RUN, len, 0, env->seq,
                    "%s for run \"%.*s\", this is run \"%.*s\": a worker left over from "
                    "another run?",
                    wire_body_name(env->body_case), wire_utf8_prefix(env->run_id, 40), env->run_id,
                    wire_utf8_prefix(self->run_id, 40), self->run_id);
    }
    if (rc != WIRE_OK) {
        arena_destroy(arena);
        return rc;
    }
    if (self)
        self->stats.received++;
    *out = env;
    return WIRE_OK;
}

int wire_decode(wire_t *self, const uint8_t *buf, size_t len, Rlx__Envelope **out,
                wire_error_t *why) {
    int rc = decode(self, buf, len, out, why);
    if (rc != WIRE_OK && self)
        self->stats.refused++;
    return rc;
}

void wire_free(Rlx__Envelope **env_p) {
    if (!env_p || !*env_p)
        return;
    wire_arena_t *a = arena_of(*env_p);
    wire_arena_release(&a);
    *env_p = NULL;
}

// ---- ZeroMQ -----------------------------------------------------------------------------

static int socket_is_router(wire_t *self, void *socket, wire_error_t *why, int *is_router) {
    int type = 0;
    size_t type_len = sizeof type;
    if (zmq_getsockopt(socket, ZMQ_TYPE, &type, &type_len) != 0)
        return refuse(self, why, WIRE_ERR_TRANSPORT, 0, 0, 0, "zmq_getsockopt(ZMQ_TYPE): %s",
                      zmq_strerror(errno));
    *is_router = type == ZMQ_ROUTER;
    return WIRE_OK;
}

static int send_failure(wire_t *self, wire_error_t *why, int err, size_t size) {
    switch (err) {
    case EAGAIN:
        return refuse(self, why, WIRE_ERR_AGAIN, size, 0, 0,
                      "send queue full (high-water mark): the peer is slow or not connected");
    case EHOSTUNREACH:
        return refuse(self, why, WIRE_ERR_UNREACHABLE, size, 0, 0,
                      "no such peer on this ROUTER socket: it disconnected");
    case EINTR:
        return refuse(self, why, WIRE_ERR_INTERRUPTED, size, 0, 0, "interrupted by a signal");
    default:
        return refuse(self, why, WIRE_ERR_TRANSPORT, size, 0, 0, "zmq send: %s", zmq_strerror(err));
    }
}

static int send_env(wire_t *self, void *socket, const wire_peer_t *to, const Rlx__Envelope *env,
                    wire_error_t *why) {
    assert(socket);
    int is_router = 0;
    int rc = socket_is_router(self, socket, why, &is_router);
    if (rc != WIRE_OK)
        return rc;
    assert(is_router == (to != NULL) && "a ROUTER send needs a peer, others must not have one");
    assert(!to || (to->size > 0 && to->size <= WIRE_MAX_IDENTITY));

    Rlx__Envelope copy;
    stamp(self, env, &copy);
    size_t size = rlx__envelope__get_packed_size(&copy);
    if (size > wire_max_size(self))
        return too_large_to_send(self, why, env, size, wire_max_size(self));
    zmq_msg_t msg;
    if (zmq_msg_init_size(&msg, size) != 0)
        return refuse(self, why, WIRE_ERR_NOMEM, size, 0, 0, "no memory for %zu bytes", size);
    size_t packed = rlx__envelope__pack(&copy, zmq_msg_data(&msg));
    assert(packed == size);
    (void)packed;
    if (is_router && zmq_send(socket, to->data, to->size, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        int err = errno;
        zmq_msg_close(&msg);
        return send_failure(self, why, err, size);
    }
    if (zmq_msg_send(&msg, socket, ZMQ_DONTWAIT) < 0) {
        int err = errno;
        zmq_msg_close(&msg);
        return send_failure(self, why, err, size);
    }
    sent(self, env, &copy, size);
    return WIRE_OK;
}

int wire_send(wire_t *self, void *socket, const wire_peer_t *to, const Rlx__Envelope *env,
              wire_error_t *why) {
    int rc = send_env(self, socket, to, env, why);
    if (rc != WIRE_OK && self)
        self->stats.send_failed++;
    return rc;
}

int wire_recv(wire_t *self, void *socket, int timeout_ms, wire_peer_t *from, Rlx__Envelope **out,
              wire_error_t *why) {
    assert(socket && out);
    assert(timeout_ms >= 0 && "never wait forever");
    *out = NULL;
    if (from)
        from->size = 0;
    int is_router = 0;
    int rc = socket_is_router(self, socket, why, &is_router);
    if (rc != WIRE_OK)
        return rc;

    // No wait: the non-blocking read below says whether anything is there (zmq_poll would
    // cost a poll() system call per message to the hub's drain loop).
    if (timeout_ms > 0) {
        zmq_pollitem_t item = {.socket = socket, .events = ZMQ_POLLIN};
        int ready = zmq_poll(&item, 1, timeout_ms);
        if (ready < 0)
            return errno == EINTR
                       ? refuse(self, why, WIRE_ERR_INTERRUPTED, 0, 0, 0, "interrupted by a signal")
                       : refuse(self, why, WIRE_ERR_TRANSPORT, 0, 0, 0, "zmq_poll: %s",
                                zmq_strerror(errno));
        if (ready == 0 || !(item.revents & ZMQ_POLLIN))
            return refuse(self, why, WIRE_ERR_TIMEOUT, 0, 0, 0, "nothing within %d ms", timeout_ms);
    }

    // Read every frame of the message (ZeroMQ delivers them all at once): the identity on a
    // ROUTER socket, then the payload; any extra frames are read and dropped.
    zmq_msg_t part, payload;
    zmq_msg_init(&part);
    zmq_msg_init(&payload);
    int nframes = 0, more = 1;
    size_t extra_bytes = 0;
    while (more) {
        if (zmq_msg_recv(&part, socket, ZMQ_DONTWAIT) < 0) {
            int err = errno;
            if (nframes == 0 && err == EAGAIN)
                rc = refuse(self, why, WIRE_ERR_TIMEOUT, 0, 0, 0, "nothing within %d ms",
                            timeout_ms);
            else if (err == EINTR)
                rc = refuse(self, why, WIRE_ERR_INTERRUPTED, 0, 0, 0, "interrupted by a signal");
            else
                rc = refuse(self, why, WIRE_ERR_TRANSPORT, 0, 0, 0, "zmq_msg_recv: %s",
                            zmq_strerror(err));
            if (rc == WIRE_ERR_TRANSPORT && self)
                self->stats.refused++;
            goto cleanup;
        }
        nframes++;
        more = zmq_msg_more(&part);
        size_t size = zmq_msg_size(&part);
        if (is_router && nframes == 1) {
            if (from) {
                from->size = size <= WIRE_MAX_IDENTITY ? size : WIRE_MAX_IDENTITY;
                memcpy(from->data, zmq_msg_data(&part), from->size);
            }
        } else if (nframes == 1 + is_router) {
            zmq_msg_move(&payload, &part);
        } else {
            extra_bytes += size;
        }
    }
    int want_frames = 1 + is_router;
    if (nframes != want_frames) {
        size_t total = zmq_msg_size(&payload) + extra_bytes;
        if (self)
            self->stats.bytes_received += total;
        if (self)
            self->stats.refused++;
        rc = refuse(self, why, WIRE_ERR_FRAMES, total, 0, 0,
                    "message of %d frames, expected %d: send one Envelope per message, one "
                    "frame, from a DEALER socket (no REQ, no delimiter frame)",
                    nframes, want_frames);
        goto cleanup;
    }
    rc = wire_decode(self, zmq_msg_data(&payload), zmq_msg_size(&payload), out, why);
cleanup:
    zmq_msg_close(&part);
    zmq_msg_close(&payload);
    return rc;
}

int wire_send_error(wire_t *self, void *socket, const wire_peer_t *to, const wire_error_t *why) {
    assert(why);
    Rlx__Error error = RLX__ERROR__INIT;
    error.code = wire_error_code(why->code);
    error.message = (char *)why->detail;
    error.ref_seq = why->seq;
    Rlx__Envelope env = RLX__ENVELOPE__INIT;
    env.body_case = RLX__ENVELOPE__BODY_ERROR;
    env.error = &error;
    return wire_send(self, socket, to, &env, NULL);
}

// ---- UTF-8 ------------------------------------------------------------------------------

// Bytes of the well-formed UTF-8 sequence at s[0..n), or 0 if it is not one (Unicode table
// 3-7: no overlong forms, no surrogates, nothing above U+10FFFF).
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    size_t need;
    unsigned lo = 0x80, hi = 0xBF;
    if (c < 0xC2 || c > 0xF4)
        return 0;
    if (c <= 0xDF) {
        need = 1;
    } else if (c <= 0xEF) {
        need = 2;
        lo = c == 0xE0 ? 0xA0 : 0x80;
        hi = c == 0xED ? 0x9F : 0xBF;
    } else {
        need = 3;
        lo = c == 0xF0 ? 0x90 : 0x80;
        hi = c == 0xF4 ? 0x8F : 0xBF;
    }
    if (n < need + 1)
        return 0;
    for (size_t j = 1; j <= need; j++) {
        if (s[j] < lo || s[j] > hi)
            return 0;
        lo = 0x80;
        hi = 0xBF;
    }
    return need + 1;
}

int wire_utf8_valid(const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        size_t m = utf8_seq(p + i, len - i);
        if (!m)
            return 0;
        i += m;
    }
    return 1;
}

size_t wire_utf8_clip(char *s) {
    unsigned char *p = (unsigned char *)s;
    size_t len = strlen(s);
    for (size_t i = 0; i < len;) {
        size_t m = utf8_seq(p + i, len - i);
        if (m) {
            i += m;
            continue;
        }
        // Ill-formed: at the end, a sequence cut short (its lead byte promises more bytes
        // than are left) is cut off; anywhere else the byte becomes '?'.
        unsigned c = p[i];
        size_t promised = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
        int cut_short = promised > len - i && c <= 0xF4;
        for (size_t j = i + 1; cut_short && j < len; j++)
            cut_short = (p[j] & 0xC0) == 0x80;
        if (cut_short) {
            p[len = i] = 0;
            break;
        }
        p[i++] = '?';
    }
    return len;
}

int wire_utf8_prefix(const char *s, int max) {
    const unsigned char *p = (const unsigned char *)s;
    int n = 0;
    while (n < max && p[n]) {
        size_t left = strnlen(s + n, 4);
        size_t m = utf8_seq(p + n, left);
        if (m == 0)
            m = 1; // ill-formed bytes count one each (wire_utf8_clip turns them into '?')
        if (n + (int)m > max)
            break;
        n += (int)m;
    }
    return n;
}

// ---- names ------------------------------------------------------------------------------

const char *wire_strerror(int rc) {
    static const char *const text[WIRE_ERR_COUNT] = {
        [WIRE_OK] = "ok",
        [WIRE_ERR_TOO_LARGE] = "message too large",
        [WIRE_ERR_MALFORMED] = "malformed message",
        [WIRE_ERR_VERSION] = "protocol version mismatch",
        [WIRE_ERR_UNKNOWN_TYPE] = "unknown message type",
        [WIRE_ERR_WRONG_RUN] = "message of another run",
        [WIRE_ERR_FRAMES] = "wrong number of frames",
        [WIRE_ERR_TIMEOUT] = "timed out",
        [WIRE_ERR_INTERRUPTED] = "interrupted",
        [WIRE_ERR_AGAIN] = "send queue full",
        [WIRE_ERR_UNREACHABLE] = "peer unreachable",
        [WIRE_ERR_TRANSPORT] = "transport error",
        [WIRE_ERR_NOMEM] = "out of memory",
    };
    return rc >= 0 && rc < WIRE_ERR_COUNT ? text[rc] : "unknown wire error";
}

Rlx__ErrorCode wire_error_code(int rc) {
    switch (rc) {
    case WIRE_OK:
        return RLX__ERROR_CODE__ERROR_CODE_UNSPECIFIED;
    case WIRE_ERR_TOO_LARGE:
        return RLX__ERROR_CODE__ERROR_CODE_TOO_LARGE;
    case WIRE_ERR_MALFORMED:
    case WIRE_ERR_FRAMES:
        return RLX__ERROR_CODE__ERROR_CODE_MALFORMED;
    case WIRE_ERR_VERSION:
        return RLX__ERROR_CODE__ERROR_CODE_VERSION;
    case WIRE_ERR_UNKNOWN_TYPE:
        return RLX__ERROR_CODE__ERROR_CODE_UNKNOWN_TYPE;
    case WIRE_ERR_WRONG_RUN:
        return RLX__ERROR_CODE__ERROR_CODE_WRONG_RUN;
    default:
        return RLX__ERROR_CODE__ERROR_CODE_INTERNAL;
    }
}

const char *wire_body_name(Rlx__Envelope__BodyCase body) {
    switch (body) {
    case RLX__ENVELOPE__BODY__NOT_SET:
        return "none";
    case RLX__ENVELOPE__BODY_HELLO:
        return "hello";
    case RLX__ENVELOPE__BODY_WELCOME:
        return "welcome";
    case RLX__ENVELOPE__BODY_HEARTBEAT:
        return "heartbeat";
    case RLX__ENVELOPE__BODY_BYE:
        return "bye";
    case RLX__ENVELOPE__BODY_WORK_REQUEST:
        return "work_request";
    case RLX__ENVELOPE__BODY_WORK_ITEM:
        return "work_item";
    case RLX__ENVELOPE__BODY_TRAJECTORY_BATCH:
        return "trajectory_batch";
    case RLX__ENVELOPE__BODY_SCORE_REQUEST:
        return "score_request";
    case RLX__ENVELOPE__BODY_SCORE_REPLY:
        return "score_reply";
    case RLX__ENVELOPE__BODY_WEIGHT_ANNOUNCE:
        return "weight_announce";
    case RLX__ENVELOPE__BODY_WEIGHT_REQUEST:
        return "weight_request";
    case RLX__ENVELOPE__BODY_WEIGHT_CHUNK:
        return "weight_chunk";
    case RLX__ENVELOPE__BODY_RUN_STATUS:
        return "run_status";
    case RLX__ENVELOPE__BODY_ERROR:
        return "error";
    default:
        return "?";
    }
}
