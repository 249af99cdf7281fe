// wire.h: the one module that turns rlx messages (proto/rlx.proto, an Envelope each) into
// bytes and back, and moves them over ZeroMQ. Nothing else calls *__pack or *__unpack.
//
// Encoding stamps the protocol version (and the endpoint's message counter and run id) on
// every outgoing Envelope. Decoding refuses, in this order and before handing anything out:
// a message longer than the endpoint's maximum (checked before parsing), a protocol version
// other than WIRE_PROTOCOL_VERSION (read from the first field even when the rest does not
// parse, so a newer peer gets a version error, not "malformed"), bytes that do not parse, an
// Envelope with no body (a message type newer than this build), and a run id of another run.
// Each refusal is a return code, a counter in the endpoint's wire_stats_t and one log line
// the first time it happens; the caller then keeps serving.
//
// A wire_t is one endpoint's state (limit, counters, message counter): one per thread, not
// shared between threads, like the ZeroMQ socket it goes with.
#ifndef RLX_WIRE_H
#define RLX_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "rlx.pb-c.h"

#define WIRE_PROTOCOL_VERSION 2u
// Default largest message accepted or sent: 16 MiB. Weights travel in chunks well below it
// (WIRE_WEIGHT_CHUNK_BYTES); a batch of 1 KiB trajectories fits thousands.
#define WIRE_DEFAULT_MAX_SIZE ((size_t)16 << 20)
// Suggested weight chunk size: big enough that per-message costs vanish, small enough that a
// chunk never holds up heartbeats for long.
#define WIRE_WEIGHT_CHUNK_BYTES ((size_t)1 << 20)
// Smallest behaviour log-probability a trajectory may carry (TextTrajectory.logprobs,
// GflowTrajectory.logpf/logpb; rlx.proto). Samplers compute probabilities in fp32, where
// exp(x) underflows to 0 below about -103.3 (2^-149, the smallest subnormal), so a token or
// action that was actually drawn never has log p below that; -128 leaves a margin for
// log-space rounding. Anything lower (e.g. -1e30) is refused: it can only be forged, and it
// overflows the learner's importance ratios.
#define WIRE_LOGPROB_MIN (-128.0f)
// Largest |log-density| per sample dimension of a diffusion step (DiffusionTrajectory
// logpf/logpb): a Gaussian log N(x; m, s^2) per dimension is -log s - 0.92 - z^2/2; fp32
// sampling keeps log s above -88 and Box-Muller's |z| below 8.6 for the drawn kernel, and
// the noising kernel P_B of a badly fitted chain may be far out in its tail, so the bound is
// generous: 1e6 per dimension (the sum over dim dimensions: dim * 1e6, which also bounds the
// mean form).
#define WIRE_DIFF_LOGP_MAX_PER_DIM 1e6f
// Longest ZeroMQ routing identity (ZeroMQ's own limit).
#define WIRE_MAX_IDENTITY 255

// Outcome of every wire call. TOO_LARGE .. WRONG_RUN equal rlx.proto's ErrorCode numbers.
typedef enum {
    WIRE_OK = 0,
    WIRE_ERR_TOO_LARGE = 1,    // longer than the endpoint's max size (checked before parsing)
    WIRE_ERR_MALFORMED = 2,    // bytes that do not parse as an Envelope
    WIRE_ERR_VERSION = 3,      // protocol_version != WIRE_PROTOCOL_VERSION
    WIRE_ERR_UNKNOWN_TYPE = 4, // no body set: unknown (newer) message type or a broken sender
    WIRE_ERR_WRONG_RUN = 5,    // run_id set and different from the endpoint's run id
    WIRE_ERR_FRAMES = 6,       // a ZeroMQ message with the wrong number of frames
    WIRE_ERR_TIMEOUT = 7,      // nothing arrived within the timeout (not a fault)
    WIRE_ERR_INTERRUPTED = 8,  // a signal interrupted the wait (EINTR): check the stop flag
    WIRE_ERR_AGAIN = 9,        // send queue full (high-water mark): try again later
    WIRE_ERR_UNREACHABLE = 10, // ROUTER send to a peer that is gone (with ZMQ_ROUTER_MANDATORY)
    WIRE_ERR_TRANSPORT = 11,   // any other ZeroMQ failure (errno in the detail)
    WIRE_ERR_NOMEM = 12,       // out of memory while packing or unpacking
    WIRE_ERR_COUNT
} wire_rc_t;

// Details of a refusal, for logs and for the Error reply to the peer.
typedef struct {
    int code;              // a wire_rc_t
    uint32_t got_version;  // WIRE_ERR_VERSION: the peer's protocol_version
    uint32_t want_version; // WIRE_ERR_VERSION: ours (WIRE_PROTOCOL_VERSION)
    size_t size;           // bytes of the offending message
    uint64_t seq;          // the offending message's seq when it could be read, else 0
    char detail[192];      // one line saying what was wrong, with a hint
} wire_error_t;

// Counters of one endpoint. Everything the peers sent is counted somewhere.
typedef struct {
    uint64_t sent;                   // envelopes encoded (wire_encode*) or sent (wire_send)
    uint64_t received;               // envelopes decoded and accepted
    uint64_t bytes_sent;             // bytes of those envelopes
    uint64_t bytes_received;         // bytes of every message looked at, accepted or not
    uint64_t errors[WIRE_ERR_COUNT]; // by wire_rc_t (errors[WIRE_OK] stays 0)
    uint64_t refused;     // received messages refused (wire_decode, wire_recv; not timeouts)
    uint64_t send_failed; // wire_send / wire_encode calls that failed (peer gone, queue full,
                          // too large): counted in errors[] by code too, never in refused
} wire_stats_t;

// A ZeroMQ routing identity (the peer of a ROUTER socket).
typedef struct {
    uint8_t data[WIRE_MAX_IDENTITY]; // identity bytes
    size_t size;                     // 0 = none
} wire_peer_t;

typedef struct wire wire_t;

// New endpoint state. name labels its log lines ("hub", "actor-3"); max_size 0 means
// WIRE_DEFAULT_MAX_SIZE; run_id NULL or "" means "not known yet": nothing is stamped or
// checked until wire_set_run_id. Returns NULL only when out of memory.
wire_t *wire_new(const char *name, size_t max_size, const char *run_id);
void wire_destroy(wire_t **self_p);
// Largest message accepted by decode and produced by encode.
void wire_set_max_size(wire_t *self, size_t max_size);
size_t wire_max_size(const wire_t *self);
// The run id stamped on outgoing envelopes whose run_id is empty, and required of incoming
// envelopes that carry one (a Hello may come with none).
void wire_set_run_id(wire_t *self, const char *run_id);
const char *wire_run_id(const wire_t *self);
// Seq stamped on the last envelope this endpoint encoded or sent (0 before any).
uint64_t wire_last_seq(const wire_t *self);
const wire_stats_t *wire_stats(const wire_t *self);
// Errors counted so far, over every kind except WIRE_ERR_TIMEOUT, WIRE_ERR_INTERRUPTED and
// WIRE_ERR_AGAIN, received and sent alike (stats.refused and stats.send_failed split them).
uint64_t wire_error_total(const wire_t *self);

// ---- bytes ------------------------------------------------------------------------------
// In all of these self may be NULL: the default limit applies and nothing is counted or
// stamped but the version. env is never modified: the stamped fields go into a copy.
// Stamped: protocol_version always; seq when env->seq == 0 (the endpoint's next number);
// run_id when env->run_id is empty. An Envelope without a body is a programming error.

// Bytes env will take once stamped.
size_t wire_encoded_size(wire_t *self, const Rlx__Envelope *env);
// Packs into a new buffer *buf (caller frees with free()) of *len bytes. Returns WIRE_OK,
// WIRE_ERR_TOO_LARGE (counted; nothing allocated) or WIRE_ERR_NOMEM.
int wire_encode(wire_t *self, const Rlx__Envelope *env, uint8_t **buf, size_t *len,
                wire_error_t *why);
// Packs into buf of cap bytes; WIRE_ERR_TOO_LARGE when it is larger than cap or the limit.
int wire_encode_into(wire_t *self, const Rlx__Envelope *env, uint8_t *buf, size_t cap, size_t *len,
                     wire_error_t *why);
// Unpacks and checks len bytes. On WIRE_OK, *out is a new Envelope owned by the caller
// (wire_free); on any refusal *out is NULL, why (if not NULL) says what was wrong, and the
// matching counter went up.
int wire_decode(wire_t *self, const uint8_t *buf, size_t len, Rlx__Envelope **out,
                wire_error_t *why);
// Frees an Envelope from wire_decode or wire_recv and NULLs the pointer; safe on NULL.
// Not for Envelopes the caller built itself.
void wire_free(Rlx__Envelope **env_p);

// ---- arenas -----------------------------------------------------------------------------
// A decoded Envelope lives in one arena: protobuf-c allocates its parts from a few blocks
// (a bump allocator) instead of one malloc per field, and wire_free releases them together.
// A part used after
// wire_free (the hub keeps the trajectories of a batch) keeps the arena alive: take a
// reference with wire_arena_retain and drop it with wire_arena_release. Not thread-safe: an
// arena stays with the thread that decoded it, like the wire_t, except that its reference
// count is atomic, so the last reference may go in another thread (wire_batch_handover).
typedef struct wire_arena wire_arena_t;

// A new reference to the arena of env (from wire_decode or wire_recv).
wire_arena_t *wire_arena_retain(const Rlx__Envelope *env);
// Drops a reference (the memory goes with the last one) and NULLs *arena_p; safe on NULL.
void wire_arena_release(wire_arena_t **arena_p);
// A TrajectoryBatch Envelope of v[0..n) themselves, for a thread of the same process (no
// encoding, no copy): trajectory v[i] is part of a decoded Envelope whose arena is
// arenas[i]; the batch takes a reference of its own on each. The giver must not touch the
// trajectories afterwards. Stamped and counted like a sent Envelope; freed with wire_free by
// whichever thread holds it. NULL when out of memory.
Rlx__Envelope *wire_batch_handover(wire_t *self, Rlx__Trajectory *const *v,
                                   wire_arena_t *const *arenas, size_t n);

// Packs env exactly as given: no stamping, no checks, no counting. For tests and fault
// injection only (wrong versions, missing bodies). Caller frees *buf.
int wire_encode_raw(const Rlx__Envelope *env, uint8_t **buf, size_t *len);

// ---- ZeroMQ -----------------------------------------------------------------------------
// Sockets: workers use DEALER, the hub ROUTER (set ZMQ_ROUTER_MANDATORY on it, so that a
// send to a vanished peer is WIRE_ERR_UNREACHABLE instead of a silent drop). The socket type
// is read from the socket.

// Sends env as one frame, after the routing-identity frame `to` on a ROUTER socket (to must
// be NULL on any other socket). Never blocks: WIRE_ERR_AGAIN when the queue is full.
int wire_send(wire_t *self, void *socket, const wire_peer_t *to, const Rlx__Envelope *env,
              wire_error_t *why);
// Waits at most timeout_ms (>= 0; never forever) for one message, then decodes it as
// wire_decode does. On a ROUTER socket *from receives the sender's identity whenever one was
// read, also on refusals, so the hub can answer with wire_send_error. Returns WIRE_OK with
// *out owned by the caller, or a refusal (counted; the message is consumed), or
// WIRE_ERR_TIMEOUT / WIRE_ERR_INTERRUPTED / WIRE_ERR_TRANSPORT with *out NULL.
int wire_recv(wire_t *self, void *socket, int timeout_ms, wire_peer_t *from, Rlx__Envelope **out,
              wire_error_t *why);
// Tells a peer its message was refused: sends an Error with the code for why->code, its
// detail and its seq. Returns what wire_send returns.
int wire_send_error(wire_t *self, void *socket, const wire_peer_t *to, const wire_error_t *why);

// ---- UTF-8 ------------------------------------------------------------------------------
// proto3 `string` fields must hold valid UTF-8 (protobuf in Python and Go refuse the whole
// message otherwise); protobuf-c does not check. Text rlx cuts to fit a buffer (Error.message)
// goes through wire_utf8_clip.

// 1 if s[0..len) is well-formed UTF-8 (no overlong forms, surrogates or code points above
// U+10FFFF), else 0.
int wire_utf8_valid(const char *s, size_t len);
// Makes the NUL-terminated s valid UTF-8 in place: an incomplete sequence at the end (what
// snprintf leaves when it cuts inside a multi-byte character) is cut off, so the cut falls on
// a code-point boundary; any other ill-formed byte becomes '?'. Returns the new length.
size_t wire_utf8_clip(char *s);
// Bytes of the longest prefix of s of at most max bytes that ends on a code-point boundary
// (for "%.*s" of a peer's string).
int wire_utf8_prefix(const char *s, int max);

// ---- names ------------------------------------------------------------------------------
// Short text of a wire_rc_t ("malformed message").
const char *wire_strerror(int rc);
// rlx.proto ErrorCode for a wire_rc_t (FRAMES counts as MALFORMED, transport trouble as
// INTERNAL).
Rlx__ErrorCode wire_error_code(int rc);
// Name of a body type for logs ("work_item"), "none" when not set, "?" when unknown.
const char *wire_body_name(Rlx__Envelope__BodyCase body);

#endif
