// test_wire.c: the wire module and rlx.proto. Every message type round-trips with every field
// set and compared (a filler and a comparer that walk protobuf-c's descriptors, so a field
// added to rlx.proto is covered without touching this file); garbage, every truncation of a
// valid message, wrong versions, unknown types, other runs and oversized messages are refused
// with the right code and counter; and a ROUTER "hub" on loopback TCP answers a DEALER
// client's good messages, answers each bad one with an Error, and keeps serving.
#include <stdio.h>

#include "testutil.h"
#include "wire.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <zmq.h>

// ---- descriptor-driven filler ------------------------------------------------------------

// Every (message, field) the filler set at least once, to prove full coverage.
#define MAX_SEEN 512
static struct {
    const ProtobufCMessageDescriptor *desc;
    unsigned field;
} seen[MAX_SEEN];
static int nseen;
static unsigned fill_counter; // makes every value different
static unsigned oneof_turn;   // rotates through the members of non-forced oneofs

static void mark_seen(const ProtobufCMessageDescriptor *d, unsigned f) {
    for (int i = 0; i < nseen; i++)
        if (seen[i].desc == d && seen[i].field == f)
            return;
    if (nseen < MAX_SEEN) {
        seen[nseen].desc = d;
        seen[nseen].field = f;
        nseen++;
    }
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "test_wire: out of memory\n");
        exit(2);
    }
    return p;
}

static ProtobufCMessage *new_filled(const ProtobufCMessageDescriptor *d, unsigned forced);

// Writes one non-default value of field f's type at p.
static void fill_value(const ProtobufCFieldDescriptor *f, void *p) {
    unsigned v = ++fill_counter;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        *(int32_t *)p = (v & 1) ? -(int32_t)v : (int32_t)v;
        break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        *(uint32_t *)p = (v % 3 == 0) ? 259u : v; // 259: the largest byte-level token id
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        *(int64_t *)p = -(int64_t)v * 1000000007LL;
        break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        *(uint64_t *)p = (uint64_t)v << 33 | v; // needs more than 32 bits
        break;
    case PROTOBUF_C_TYPE_FLOAT:
        *(float *)p = -1.5f * (float)v + 0.125f;
        break;
    case PROTOBUF_C_TYPE_DOUBLE:
        *(double *)p = 0.1 * v;
        break;
    case PROTOBUF_C_TYPE_BOOL:
        *(protobuf_c_boolean *)p = 1;
        break;
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumDescriptor *e = f->descriptor;
        *(int *)p = e->values[e->n_values > 1 ? 1 + v % (e->n_values - 1) : 0].value;
        break;
    }
    case PROTOBUF_C_TYPE_STRING: {
        char *s = xmalloc(48);
        snprintf(s, 48, "%s-%u-\xc3\xa9\xe2\x82\xac", f->name, v); // with UTF-8
        *(char **)p = s;
        break;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        ProtobufCBinaryData *b = p;
        b->len = 1 + v % 97;
        b->data = xmalloc(b->len);
        for (size_t i = 0; i < b->len; i++)
            b->data[i] = (uint8_t)(v * 31 + i * 7);
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE:
        *(ProtobufCMessage **)p = new_filled(f->descriptor, 0);
        break;
    }
}

static size_t value_size(ProtobufCType t) {
    switch (t) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(ProtobufCMessage *);
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    default:
        return 4;
    }
}

// A new message of type d with every field set: 3 elements per repeated field, one member
// per oneof (the one numbered `forced` when that is one of its members, else the next in turn).
static ProtobufCMessage *new_filled(const ProtobufCMessageDescriptor *d, unsigned forced) {
    ProtobufCMessage *m = xmalloc(d->sizeof_message);
    d->message_init(m);
    uint8_t *base = (uint8_t *)m;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t *which = (uint32_t *)(base + f->quantifier_offset);
            if (*which != 0)
                continue; // this oneof is decided
            unsigned members[32], n = 0, pick = 0;
            for (unsigned j = i; j < d->n_fields && n < 32; j++)
                if ((d->fields[j].flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
                    d->fields[j].quantifier_offset == f->quantifier_offset)
                    members[n++] = j;
            int is_forced = 0;
            for (unsigned j = 0; j < n; j++)
                if (d->fields[members[j]].id == forced) {
                    pick = members[j];
                    is_forced = 1;
                }
            if (!is_forced)
                pick = members[oneof_turn++ % n];
            const ProtobufCFieldDescriptor *chosen = &d->fields[pick];
            *which = chosen->id;
            fill_value(chosen, base + chosen->offset);
            mark_seen(d, pick);
            continue;
        }
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = 3, sz = value_size(f->type);
            uint8_t *arr = xmalloc(n * sz);
            for (size_t j = 0; j < n; j++)
                fill_value(f, arr + j * sz);
            *(size_t *)(base + f->quantifier_offset) = n;
            *(void **)(base + f->offset) = arr;
        } else {
            fill_value(f, base + f->offset);
        }
        mark_seen(d, i);
    }
    return m;
}

// Every field of every message reachable from d was filled at least once.
static void check_coverage(const ProtobufCMessageDescriptor *d, const void **visited,
                           int *nvisited) {
    for (int i = 0; i < *nvisited; i++)
        if (visited[i] == d)
            return;
    visited[(*nvisited)++] = d;
    for (unsigned f = 0; f < d->n_fields; f++) {
        int found = 0;
        for (int i = 0; i < nseen; i++)
            found |= seen[i].desc == d && seen[i].field == f;
        TU_CHECK(found, "field %s.%s never exercised by the round trip", d->name,
                 d->fields[f].name);
        if (d->fields[f].type == PROTOBUF_C_TYPE_MESSAGE)
            check_coverage(d->fields[f].descriptor, visited, nvisited);
    }
}

// ---- descriptor-driven comparison --------------------------------------------------------

static int msg_equal(const ProtobufCMessage *a, const ProtobufCMessage *b, const char *path);

static int value_equal(const ProtobufCFieldDescriptor *f, const void *a, const void *b,
                       const char *path) {
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING: {
        const char *sa = *(char *const *)a, *sb = *(char *const *)b;
        if (strcmp(sa ? sa : "", sb ? sb : "") != 0) {
            fprintf(stderr, "  %s: \"%s\" != \"%s\"\n", path, sa, sb);
            return 0;
        }
        return 1;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *ba = a, *bb = b;
        if (ba->len != bb->len || (ba->len && memcmp(ba->data, bb->data, ba->len) != 0)) {
            fprintf(stderr, "  %s: bytes differ (%zu vs %zu bytes)\n", path, ba->len, bb->len);
            return 0;
        }
        return 1;
    }
    case PROTOBUF_C_TYPE_MESSAGE:
        return msg_equal(*(ProtobufCMessage *const *)a, *(ProtobufCMessage *const *)b, path);
    default:
        if (memcmp(a, b, value_size(f->type)) != 0) { // bitwise: floats must survive exactly
            fprintf(stderr, "  %s: values differ\n", path);
            return 0;
        }
        return 1;
    }
}

// 1 iff a and b hold the same fields (printing the first difference otherwise).
static int msg_equal(const ProtobufCMessage *a, const ProtobufCMessage *b, const char *path) {
    if (!a || !b) {
        if (a != b)
            fprintf(stderr, "  %s: one message missing\n", path);
        return a == b;
    }
    if (a->descriptor != b->descriptor) {
        fprintf(stderr, "  %s: different types\n", path);
        return 0;
    }
    const ProtobufCMessageDescriptor *d = a->descriptor;
    const uint8_t *pa = (const uint8_t *)a, *pb = (const uint8_t *)b;
    char sub[256];
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        snprintf(sub, sizeof sub, "%s.%s", path, f->name);
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t ca = *(const uint32_t *)(pa + f->quantifier_offset);
            uint32_t cb = *(const uint32_t *)(pb + f->quantifier_offset);
            if (ca != cb) {
                fprintf(stderr, "  %s: oneof case %u != %u\n", sub, ca, cb);
                return 0;
            }
            if (ca == f->id && !value_equal(f, pa + f->offset, pb + f->offset, sub))
                return 0;
        } else if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t na = *(const size_t *)(pa + f->quantifier_offset);
            size_t nb = *(const size_t *)(pb + f->quantifier_offset);
            if (na != nb) {
                fprintf(stderr, "  %s: %zu != %zu elements\n", sub, na, nb);
                return 0;
            }
            const uint8_t *ea = *(uint8_t *const *)(pa + f->offset);
            const uint8_t *eb = *(uint8_t *const *)(pb + f->offset);
            size_t sz = value_size(f->type);
            for (size_t j = 0; j < na; j++) {
                char el[300];
                snprintf(el, sizeof el, "%s[%zu]", sub, j);
                if (!value_equal(f, ea + j * sz, eb + j * sz, el))
                    return 0;
            }
        } else if (!value_equal(f, pa + f->offset, pb + f->offset, sub)) {
            return 0;
        }
    }
    if (b->n_unknown_fields != a->n_unknown_fields) {
        fprintf(stderr, "  %s: %u vs %u unknown fields\n", path, a->n_unknown_fields,
                b->n_unknown_fields);
        return 0;
    }
    return 1;
}

// ---- helpers -----------------------------------------------------------------------------

static const int body_ids[] = {
    RLX__ENVELOPE__BODY_HELLO,
    RLX__ENVELOPE__BODY_WELCOME,
    RLX__ENVELOPE__BODY_HEARTBEAT,
    RLX__ENVELOPE__BODY_BYE,
    RLX__ENVELOPE__BODY_WORK_REQUEST,
    RLX__ENVELOPE__BODY_WORK_ITEM,
    RLX__ENVELOPE__BODY_TRAJECTORY_BATCH,
    RLX__ENVELOPE__BODY_SCORE_REQUEST,
    RLX__ENVELOPE__BODY_SCORE_REPLY,
    RLX__ENVELOPE__BODY_WEIGHT_ANNOUNCE,
    RLX__ENVELOPE__BODY_WEIGHT_REQUEST,
    RLX__ENVELOPE__BODY_WEIGHT_CHUNK,
    RLX__ENVELOPE__BODY_RUN_STATUS,
    RLX__ENVELOPE__BODY_ERROR,
};
#define NBODIES (int)(sizeof body_ids / sizeof body_ids[0])

// A filled Envelope with the given body, a valid header (version 1, run "run-A").
static Rlx__Envelope *new_envelope(int body) {
    Rlx__Envelope *env = (Rlx__Envelope *)new_filled(&rlx__envelope__descriptor, body);
    env->protocol_version = WIRE_PROTOCOL_VERSION;
    free(env->run_id);
    env->run_id = strdup("run-A");
    return env;
}

static void free_msg(void *m) {
    protobuf_c_message_free_unpacked(m, NULL);
}

// Expected counters, kept next to the wire's.
static void check_counts(const char *when, const wire_t *w, const uint64_t *expect) {
    const wire_stats_t *s = wire_stats(w);
    for (int c = 1; c < WIRE_ERR_COUNT; c++)
        TU_CHECK(s->errors[c] == expect[c], "%s: counter of '%s' is %llu, expected %llu", when,
                 wire_strerror(c), (unsigned long long)s->errors[c], (unsigned long long)expect[c]);
}

static uint64_t xorshift(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

// ---- byte-level tests --------------------------------------------------------------------

static void test_roundtrip_all_types(void) {
    wire_t *w = wire_new("roundtrip", 0, "run-A");
    for (int i = 0; i < NBODIES; i++) {
        Rlx__Envelope *env = new_envelope(body_ids[i]);
        TU_CHECK((int)env->body_case == body_ids[i], "filler set body %d", body_ids[i]);
        uint8_t *buf = NULL;
        size_t len = 0;
        wire_error_t why;
        int rc = wire_encode(w, env, &buf, &len, &why);
        TU_CHECK(rc == WIRE_OK, "encode %s: %s", wire_body_name(env->body_case), why.detail);
        TU_CHECK(len == wire_encoded_size(w, env), "encoded size of %s",
                 wire_body_name(env->body_case));
        Rlx__Envelope *back = NULL;
        rc = wire_decode(w, buf, len, &back, &why);
        TU_CHECK(rc == WIRE_OK, "decode %s: %s", wire_body_name(env->body_case), why.detail);
        if (back) {
            TU_CHECK(msg_equal(&env->base, &back->base, wire_body_name(env->body_case)),
                     "%s differs after the round trip", wire_body_name(env->body_case));
        }
        // the same through a caller buffer
        uint8_t *buf2 = malloc(len);
        size_t len2 = 0;
        rc = wire_encode_into(w, env, buf2, len, &len2, &why);
        TU_CHECK(rc == WIRE_OK && len2 == len && memcmp(buf, buf2, len) == 0,
                 "encode_into %s gives the same bytes", wire_body_name(env->body_case));
        TU_CHECK(strcmp(wire_body_name(env->body_case), "?") != 0, "body %d has a name",
                 body_ids[i]);
        free(buf2);
        free(buf);
        wire_free(&back);
        TU_CHECK(back == NULL, "wire_free nulls the pointer");
        free_msg(env);
    }
    const void *visited[64];
    int nvisited = 0;
    check_coverage(&rlx__envelope__descriptor, visited, &nvisited);
    printf("round trip: %d message types, %d message descriptors, %d fields, all compared\n",
           NBODIES, nvisited, nseen);
    TU_CHECK(wire_stats(w)->sent == 2u * NBODIES && wire_stats(w)->received == (uint64_t)NBODIES,
             "sent/received counters");
    TU_CHECK(wire_error_total(w) == 0, "no errors on good messages");
    wire_destroy(&w);
    TU_CHECK(w == NULL, "wire_destroy nulls the pointer");
    wire_destroy(&w); // safe on NULL
    wire_free(NULL);

    // The comparer must see a change deep inside a message.
    Rlx__Envelope *a = new_envelope(RLX__ENVELOPE__BODY_TRAJECTORY_BATCH);
    uint8_t *buf;
    size_t len;
    wire_encode_raw(a, &buf, &len);
    Rlx__Envelope *b = NULL;
    wire_decode(NULL, buf, len, &b, NULL);
    TU_CHECK(b && msg_equal(&a->base, &b->base, "batch"), "batch round trip");
    if (b) {
        Rlx__TrajectoryBatch *tb = b->trajectory_batch;
        int kinds = 0;
        for (size_t i = 0; i < tb->n_trajectories; i++)
            kinds |= 1 << tb->trajectories[i]->kind_case % 16;
        TU_CHECK(kinds == 7, "a filled batch holds one trajectory of each kind");
        for (size_t i = 0; i < tb->n_trajectories; i++)
            if (tb->trajectories[i]->kind_case == RLX__TRAJECTORY__KIND_GFLOW)
                tb->trajectories[i]->gflow->logpb[1] += 1.0f;
        fprintf(stderr, "(a difference is expected on the next line)\n");
        TU_CHECK(!msg_equal(&a->base, &b->base, "batch"), "the comparer sees a changed float");
    }
    free(buf);
    wire_free(&b);
    free_msg(a);
}

// A text trajectory built by hand, as the actor will, with its values checked one by one.
static void test_text_trajectory_by_hand(void) {
    uint32_t prompt[] = {256, '1', '2', '+', '3', '4', '='};
    uint32_t response[] = {'4', '6', 259};
    float logprobs[] = {-0.01f, -2.5f, -1e-7f};
    Rlx__TrajectoryId id = RLX__TRAJECTORY_ID__INIT;
    id.actor_id = 3;
    id.seq = 123456789012ULL;
    Rlx__TextTrajectory text = RLX__TEXT_TRAJECTORY__INIT;
    text.n_prompt_tokens = 7;
    text.prompt_tokens = prompt;
    text.n_response_tokens = 3;
    text.response_tokens = response;
    text.n_logprobs = 3;
    text.logprobs = logprobs;
    text.finish_reason = RLX__FINISH_REASON__FINISH_REASON_STOP;
    Rlx__Trajectory traj = RLX__TRAJECTORY__INIT;
    traj.id = &id;
    traj.work_id = 77;
    traj.prompt_id = 5;
    traj.group_index = 1;
    traj.group_size = 4;
    traj.policy_version = 9;
    traj.kind_case = RLX__TRAJECTORY__KIND_TEXT;
    traj.text = &text;
    Rlx__Trajectory *list[] = {&traj};
    Rlx__TrajectoryBatch batch = RLX__TRAJECTORY_BATCH__INIT;
    batch.n_trajectories = 1;
    batch.trajectories = list;
    batch.work_id = 77;
    Rlx__Envelope env = RLX__ENVELOPE__INIT;
    env.body_case = RLX__ENVELOPE__BODY_TRAJECTORY_BATCH;
    env.trajectory_batch = &batch;

    wire_t *w = wire_new("actor", 0, "run-B");
    uint8_t *buf;
    size_t len;
    TU_CHECK(wire_encode(w, &env, &buf, &len, NULL) == WIRE_OK, "encode by hand");
    TU_CHECK(env.protocol_version == 0 && env.seq == 0, "encode leaves the caller's env alone");
    Rlx__Envelope *got = NULL;
    TU_CHECK(wire_decode(w, buf, len, &got, NULL) == WIRE_OK, "decode by hand");
    if (got) {
        TU_CHECK(got->protocol_version == WIRE_PROTOCOL_VERSION, "version stamped");
        TU_CHECK(got->seq == 1 && wire_last_seq(w) == 1, "first seq is 1");
        TU_CHECK(strcmp(got->run_id, "run-B") == 0, "run id stamped");
        Rlx__Trajectory *t = got->trajectory_batch->trajectories[0];
        TU_CHECK(t->id->actor_id == 3 && t->id->seq == 123456789012ULL, "trajectory id");
        TU_CHECK(t->kind_case == RLX__TRAJECTORY__KIND_TEXT, "kind text");
        TU_CHECK(t->text->n_prompt_tokens == 7 &&
                     memcmp(t->text->prompt_tokens, prompt, sizeof prompt) == 0,
                 "prompt tokens");
        TU_CHECK(t->text->n_response_tokens == 3 && t->text->response_tokens[2] == 259,
                 "response tokens up to 259");
        TU_CHECK(t->text->n_logprobs == 3 &&
                     memcmp(t->text->logprobs, logprobs, sizeof logprobs) == 0,
                 "logprobs bit-exact");
        TU_CHECK(t->text->finish_reason == RLX__FINISH_REASON__FINISH_REASON_STOP, "finish");
        TU_CHECK(t->group_index == 1 && t->group_size == 4 && t->policy_version == 9 &&
                     t->work_id == 77 && t->prompt_id == 5 && !t->scored,
                 "common trajectory fields");
        printf("hand-built text trajectory: %zu bytes on the wire\n", len);
    }
    wire_free(&got);
    free(buf);
    // The next envelope gets the next seq; an explicit seq is kept and does not advance it.
    TU_CHECK(wire_encode(w, &env, &buf, &len, NULL) == WIRE_OK, "encode again");
    wire_decode(w, buf, len, &got, NULL);
    TU_CHECK(got && got->seq == 2, "second seq is 2");
    wire_free(&got);
    free(buf);
    env.seq = 1000;
    env.run_id = "run-B";
    wire_encode(w, &env, &buf, &len, NULL);
    wire_decode(w, buf, len, &got, NULL);
    TU_CHECK(got && got->seq == 1000 && wire_last_seq(w) == 1000, "explicit seq kept");
    wire_free(&got);
    free(buf);
    env.seq = 0;
    wire_encode(w, &env, &buf, &len, NULL);
    wire_decode(w, buf, len, &got, NULL);
    TU_CHECK(got && got->seq == 3, "counter resumes at 3");
    wire_free(&got);
    free(buf);
    wire_destroy(&w);
}

static void test_refusals(void) {
    uint64_t expect[WIRE_ERR_COUNT] = {0};
    wire_t *w = wire_new("refusals", 0, "run-A");
    wire_error_t why;
    Rlx__Envelope *out = NULL;

    // Random garbage: never accepted, every refusal counted under its kind.
    uint64_t rng = 0x9e3779b97f4a7c15ULL;
    uint8_t junk[512];
    int trials = 20000;
    for (int i = 0; i < trials; i++) {
        size_t len = xorshift(&rng) % sizeof junk;
        for (size_t j = 0; j < len; j++)
            junk[j] = (uint8_t)xorshift(&rng);
        if (i % 4 == 1 && len > 2) { // a valid-looking start: version 1, then garbage
            junk[0] = 0x08;
            junk[1] = 0x01;
        }
        int rc = wire_decode(w, junk, len, &out, &why);
        TU_CHECK(rc != WIRE_OK && out == NULL, "garbage #%d (%zu bytes) accepted", i, len);
        TU_CHECK(rc == why.code, "why.code matches");
        if (rc > 0 && rc < WIRE_ERR_COUNT)
            expect[rc]++;
        wire_free(&out);
    }
    printf("garbage: %d buffers refused: malformed %llu, version %llu, unknown type %llu\n", trials,
           (unsigned long long)expect[WIRE_ERR_MALFORMED],
           (unsigned long long)expect[WIRE_ERR_VERSION],
           (unsigned long long)expect[WIRE_ERR_UNKNOWN_TYPE]);
    TU_CHECK(expect[WIRE_ERR_MALFORMED] > (uint64_t)trials / 2, "garbage is mostly malformed");
    check_counts("garbage", w, expect);

    // Every truncation of a valid message is refused; cuts inside the body are malformed.
    Rlx__Envelope *env = new_envelope(RLX__ENVELOPE__BODY_TRAJECTORY_BATCH);
    uint8_t *full, *head;
    size_t full_len, head_len;
    wire_encode_raw(env, &full, &full_len);
    Rlx__Envelope header_only = *env;
    header_only.body_case = RLX__ENVELOPE__BODY__NOT_SET;
    wire_encode_raw(&header_only, &head, &head_len);
    TU_CHECK(head_len < full_len && memcmp(head, full, head_len) == 0, "header comes first");
    for (size_t cut = 0; cut < full_len; cut++) {
        int rc = wire_decode(w, full, cut, &out, &why);
        TU_CHECK(rc != WIRE_OK, "truncation to %zu of %zu bytes accepted", cut, full_len);
        if (cut > head_len)
            TU_CHECK(rc == WIRE_ERR_MALFORMED, "cut at %zu inside the body: %s", cut,
                     wire_strerror(rc));
        if (rc > 0 && rc < WIRE_ERR_COUNT)
            expect[rc]++;
        wire_free(&out);
    }
    TU_CHECK(wire_decode(w, full, full_len, &out, &why) == WIRE_OK, "the whole message is fine");
    wire_free(&out);
    printf("truncation: %zu cuts of a %zu-byte trajectory batch refused\n", full_len, full_len);
    check_counts("truncation", w, expect);

    // Wrong versions: an older one (version 1 encoded tokens differently), a newer one, a
    // newer one whose rest does not parse, and none at all.
    uint8_t *buf;
    size_t len;
    for (uint32_t v = 1; v <= WIRE_PROTOCOL_VERSION + 1; v += WIRE_PROTOCOL_VERSION) {
        env->protocol_version = v;
        wire_encode_raw(env, &buf, &len);
        TU_CHECK(wire_decode(w, buf, len, &out, &why) == WIRE_ERR_VERSION, "version %u refused", v);
        TU_CHECK(why.got_version == v && why.want_version == WIRE_PROTOCOL_VERSION,
                 "both versions reported (%u, %u)", why.got_version, why.want_version);
        char vs[16];
        snprintf(vs, sizeof vs, "%u", v);
        TU_CHECK(strstr(why.detail, vs) && strstr(why.detail, "2"), "detail: %s", why.detail);
        expect[WIRE_ERR_VERSION]++;
        free(buf);
    }
    uint8_t newer[] = {0x08, 0x07, 0xff, 0xff, 0xff}; // version 7, then nothing v1 can read
    TU_CHECK(wire_decode(w, newer, sizeof newer, &out, &why) == WIRE_ERR_VERSION &&
                 why.got_version == 7,
             "a newer unparsable message still reports its version");
    expect[WIRE_ERR_VERSION]++;
    env->protocol_version = 0;
    wire_encode_raw(env, &buf, &len);
    TU_CHECK(wire_decode(w, buf, len, &out, &why) == WIRE_ERR_VERSION && why.got_version == 0,
             "missing version refused");
    expect[WIRE_ERR_VERSION]++;
    free(buf);
    env->protocol_version = WIRE_PROTOCOL_VERSION;
    check_counts("version", w, expect);

    // Unknown type: a body field number this build does not know, and no body at all.
    uint8_t unknown[] = {0x08, 0x02, 0x10, 0x05, 0x9a, 0x06, 0x02, 'h', 'i'}; // field 99
    TU_CHECK(wire_decode(w, unknown, sizeof unknown, &out, &why) == WIRE_ERR_UNKNOWN_TYPE,
             "unknown field 99 refused as unknown type");
    TU_CHECK(why.seq == 5 && strstr(why.detail, "99"), "seq and field named: %s", why.detail);
    expect[WIRE_ERR_UNKNOWN_TYPE]++;
    Rlx__Envelope no_body = *env;
    no_body.body_case = RLX__ENVELOPE__BODY__NOT_SET;
    wire_encode_raw(&no_body, &buf, &len);
    TU_CHECK(wire_decode(w, buf, len, &out, &why) == WIRE_ERR_UNKNOWN_TYPE && out == NULL,
             "envelope without body refused");
    expect[WIRE_ERR_UNKNOWN_TYPE]++;
    free(buf);
    check_counts("unknown type", w, expect);

    // Another run's message; one with no run id (a first Hello) is accepted.
    free(env->run_id);
    env->run_id = strdup("run-Z");
    wire_encode_raw(env, &buf, &len);
    TU_CHECK(wire_decode(w, buf, len, &out, &why) == WIRE_ERR_WRONG_RUN, "other run refused");
    expect[WIRE_ERR_WRONG_RUN]++;
    free(buf);
    env->run_id[0] = '\0';
    wire_encode_raw(env, &buf, &len);
    TU_CHECK(wire_decode(w, buf, len, &out, &why) == WIRE_OK, "no run id accepted");
    wire_free(&out);
    free(buf);
    check_counts("wrong run", w, expect);

    // Oversized: refused before parsing (garbage over the limit is TOO_LARGE, not
    // MALFORMED); the limit itself is inclusive; encoding refuses too.
    wire_encode_raw(env, &buf, &len);
    wire_set_max_size(w, len);
    TU_CHECK(wire_max_size(w) == len, "max size set");
    TU_CHECK(wire_decode(w, buf, len, &out, &why) == WIRE_OK, "message at the limit accepted");
    wire_free(&out);
    wire_set_max_size(w, len - 1);
    TU_CHECK(wire_decode(w, buf, len, &out, &why) == WIRE_ERR_TOO_LARGE && out == NULL,
             "message one byte over the limit refused");
    TU_CHECK(why.size == len, "size reported");
    expect[WIRE_ERR_TOO_LARGE]++;
    free(buf);
    wire_set_max_size(w, 1024);
    uint8_t *big = malloc(4096);
    memset(big, 0xff, 4096);
    TU_CHECK(wire_decode(w, big, 4096, &out, &why) == WIRE_ERR_TOO_LARGE,
             "oversized garbage is refused for its size, before parsing");
    expect[WIRE_ERR_TOO_LARGE]++;
    wire_set_max_size(w, 64);
    TU_CHECK(wire_encode(w, env, &buf, &len, &why) == WIRE_ERR_TOO_LARGE && buf == NULL,
             "encode over the limit refused");
    expect[WIRE_ERR_TOO_LARGE]++;
    wire_set_max_size(w, 0);
    TU_CHECK(wire_max_size(w) == WIRE_DEFAULT_MAX_SIZE, "0 restores the default");
    TU_CHECK(wire_encode_into(w, env, big, 16, &len, &why) == WIRE_ERR_TOO_LARGE,
             "encode_into a small buffer refused");
    expect[WIRE_ERR_TOO_LARGE]++;
    free(big);
    check_counts("oversized", w, expect);

    // The library's names.
    for (int c = 0; c < WIRE_ERR_COUNT; c++)
        for (int d = c + 1; d < WIRE_ERR_COUNT; d++)
            TU_CHECK(strcmp(wire_strerror(c), wire_strerror(d)) != 0, "distinct error texts");
    TU_CHECK(wire_error_code(WIRE_ERR_VERSION) == RLX__ERROR_CODE__ERROR_CODE_VERSION &&
                 wire_error_code(WIRE_ERR_FRAMES) == RLX__ERROR_CODE__ERROR_CODE_MALFORMED,
             "error code mapping");
    TU_CHECK(wire_stats(w)->refused == wire_error_total(w) - wire_stats(w)->send_failed,
             "refused %llu = errors %llu - failed sends %llu",
             (unsigned long long)wire_stats(w)->refused, (unsigned long long)wire_error_total(w),
             (unsigned long long)wire_stats(w)->send_failed);
    printf("refusals: %llu counted, all under the right kind\n",
           (unsigned long long)wire_error_total(w));
    free(full);
    free(head);
    free_msg(env);
    wire_destroy(&w);
}

// ---- ZeroMQ loopback ---------------------------------------------------------------------

typedef struct {
    void *socket;       // the server's ROUTER socket (handed over before the thread starts)
    wire_stats_t stats; // its wire counters at the end
    int good, bad;      // messages answered normally / with an Error
    int stopped_by_bye; // 1 if a Bye ended the loop (not the deadline)
} server_t;

// The "hub": serves until a Bye or 20 s, never blocking more than 100 ms.
static void *server_main(void *arg) {
    server_t *s = arg;
    wire_t *w = wire_new("test-hub", 4096, "run-loop");
    double deadline = now_s() + 20.0;
    while (now_s() < deadline && !s->stopped_by_bye) {
        wire_peer_t from;
        Rlx__Envelope *in = NULL;
        wire_error_t why;
        int rc = wire_recv(w, s->socket, 100, &from, &in, &why);
        if (rc == WIRE_ERR_TIMEOUT)
            continue;
        if (rc != WIRE_OK) {
            s->bad++;
            if (from.size > 0)
                wire_send_error(w, s->socket, &from, &why);
            continue;
        }
        Rlx__Envelope reply = RLX__ENVELOPE__INIT;
        Rlx__Welcome welcome = RLX__WELCOME__INIT;
        Rlx__RunStatus status = RLX__RUN_STATUS__INIT;
        Rlx__Bye bye = RLX__BYE__INIT;
        Rlx__RunStatus__CountersEntry entries[WIRE_ERR_COUNT], *ptrs[WIRE_ERR_COUNT];
        switch (in->body_case) {
        case RLX__ENVELOPE__BODY_HELLO:
            welcome.worker_id = 42;
            welcome.heartbeat_interval_ms = 500;
            reply.body_case = RLX__ENVELOPE__BODY_WELCOME;
            reply.welcome = &welcome;
            break;
        case RLX__ENVELOPE__BODY_HEARTBEAT: // answer with the hub's error counters
            for (int c = 0; c < WIRE_ERR_COUNT; c++) {
                rlx__run_status__counters_entry__init(&entries[c]);
                entries[c].key = (char *)wire_strerror(c);
                entries[c].value = wire_stats(w)->errors[c];
                ptrs[c] = &entries[c];
            }
            status.n_counters = WIRE_ERR_COUNT;
            status.counters = ptrs;
            reply.body_case = RLX__ENVELOPE__BODY_RUN_STATUS;
            reply.run_status = &status;
            break;
        default:
            bye.reason = "done";
            reply.body_case = RLX__ENVELOPE__BODY_BYE;
            reply.bye = &bye;
            s->stopped_by_bye = in->body_case == RLX__ENVELOPE__BODY_BYE;
            break;
        }
        rc = wire_send(w, s->socket, &from, &reply, &why);
        if (rc != WIRE_OK)
            fprintf(stderr, "server send: %s\n", why.detail);
        s->good++;
        wire_free(&in);
    }
    s->stats = *wire_stats(w);
    wire_destroy(&w);
    return NULL;
}

// Client side: receive one reply (2 s at most) and check its type.
static Rlx__Envelope *expect_reply(wire_t *w, void *sock, Rlx__Envelope__BodyCase want,
                                   const char *after) {
    Rlx__Envelope *in = NULL;
    wire_error_t why;
    int rc = wire_recv(w, sock, 2000, NULL, &in, &why);
    TU_CHECK(rc == WIRE_OK, "reply after %s: %s", after, wire_strerror(rc));
    if (rc == WIRE_OK && in->body_case != want) {
        TU_CHECK(0, "reply after %s is %s, expected %s", after, wire_body_name(in->body_case),
                 wire_body_name(want));
        wire_free(&in);
    }
    return in;
}

static void expect_error(wire_t *w, void *sock, Rlx__ErrorCode code, const char *after) {
    Rlx__Envelope *in = expect_reply(w, sock, RLX__ENVELOPE__BODY_ERROR, after);
    if (in) {
        TU_CHECK(in->error->code == code, "Error after %s has code %d, expected %d", after,
                 in->error->code, code);
        TU_CHECK(in->error->message[0] != '\0', "Error after %s has a message", after);
        printf("  %-14s -> Error %d: %s\n", after, in->error->code, in->error->message);
    }
    wire_free(&in);
}

static void test_zmq_loopback(void) {
    void *ctx = zmq_ctx_new();
    int zero = 0, one = 1;
    server_t server = {0};
    server.socket = zmq_socket(ctx, ZMQ_ROUTER);
    zmq_setsockopt(server.socket, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(server.socket, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    TU_CHECK(zmq_bind(server.socket, "tcp://127.0.0.1:*") == 0, "bind: %s", zmq_strerror(errno));
    char endpoint[256];
    size_t endpoint_len = sizeof endpoint;
    zmq_getsockopt(server.socket, ZMQ_LAST_ENDPOINT, endpoint, &endpoint_len);

    // Before the server runs: a ROUTER send to a peer that does not exist.
    wire_t *probe = wire_new("probe", 0, NULL);
    wire_peer_t nobody = {.data = "nobody", .size = 6};
    Rlx__Bye bye_body = RLX__BYE__INIT;
    Rlx__Envelope bye = RLX__ENVELOPE__INIT;
    bye.body_case = RLX__ENVELOPE__BODY_BYE;
    bye.bye = &bye_body;
    TU_CHECK(wire_send(probe, server.socket, &nobody, &bye, NULL) == WIRE_ERR_UNREACHABLE,
             "send to an unknown peer is unreachable");
    TU_CHECK(wire_stats(probe)->errors[WIRE_ERR_UNREACHABLE] == 1, "unreachable counted");
    TU_CHECK(wire_stats(probe)->send_failed == 1 && wire_stats(probe)->refused == 0,
             "a failed send counts as send_failed (%llu), not refused (%llu)",
             (unsigned long long)wire_stats(probe)->send_failed,
             (unsigned long long)wire_stats(probe)->refused);
    wire_destroy(&probe);

    pthread_t thread;
    pthread_create(&thread, NULL, server_main, &server);

    void *client = zmq_socket(ctx, ZMQ_DEALER);
    zmq_setsockopt(client, ZMQ_LINGER, &zero, sizeof zero);
    TU_CHECK(zmq_connect(client, endpoint) == 0, "connect %s", endpoint);
    wire_t *w = wire_new("test-actor", 0, "run-loop");
    printf("loopback on %s\n", endpoint);

    // Nothing is waiting: a receive times out, promptly.
    Rlx__Envelope *in = NULL;
    double t0 = now_s();
    TU_CHECK(wire_recv(w, client, 50, NULL, &in, NULL) == WIRE_ERR_TIMEOUT && in == NULL,
             "idle receive times out");
    TU_CHECK(now_s() - t0 < 1.0, "timeout honoured (%.3f s)", now_s() - t0);

    // Good: Hello -> Welcome.
    Rlx__Hello hello_body = RLX__HELLO__INIT;
    hello_body.role = RLX__ROLE__ROLE_ACTOR;
    hello_body.name = "actor-test";
    Rlx__Envelope hello = RLX__ENVELOPE__INIT;
    hello.body_case = RLX__ENVELOPE__BODY_HELLO;
    hello.hello = &hello_body;
    TU_CHECK(wire_send(w, client, NULL, &hello, NULL) == WIRE_OK, "send hello");
    in = expect_reply(w, client, RLX__ENVELOPE__BODY_WELCOME, "hello");
    TU_CHECK(in && in->welcome->worker_id == 42, "welcome assigns id 42");
    wire_free(&in);

    // Bad ones, each answered with an Error of the right code.
    uint8_t garbage[] = {0x0a, 0x10, 'x'};
    zmq_send(client, garbage, sizeof garbage, 0);
    expect_error(w, client, RLX__ERROR_CODE__ERROR_CODE_MALFORMED, "garbage");

    Rlx__Heartbeat hb_body = RLX__HEARTBEAT__INIT;
    Rlx__Envelope hb = RLX__ENVELOPE__INIT;
    hb.body_case = RLX__ENVELOPE__BODY_HEARTBEAT;
    hb.heartbeat = &hb_body;
    hb.protocol_version = WIRE_PROTOCOL_VERSION + 1;
    hb.seq = 11;
    uint8_t *buf;
    size_t len;
    wire_encode_raw(&hb, &buf, &len);
    zmq_send(client, buf, len, 0);
    free(buf);
    expect_error(w, client, RLX__ERROR_CODE__ERROR_CODE_VERSION, "a newer version");

    zmq_send(client, "", 0, 0);
    expect_error(w, client, RLX__ERROR_CODE__ERROR_CODE_VERSION, "empty frame");

    uint8_t unknown[] = {0x08, 0x02, 0x10, 0x05, 0x9a, 0x06, 0x02, 'h', 'i'};
    zmq_send(client, unknown, sizeof unknown, 0);
    Rlx__Envelope *err = expect_reply(w, client, RLX__ENVELOPE__BODY_ERROR, "unknown type");
    TU_CHECK(err && err->error->code == RLX__ERROR_CODE__ERROR_CODE_UNKNOWN_TYPE &&
                 err->error->ref_seq == 5,
             "unknown type answered with its seq");
    if (err)
        printf("  %-14s -> Error %d: %s\n", "unknown type", err->error->code, err->error->message);
    wire_free(&err);

    uint8_t chunk_data[8000] = {1};
    Rlx__WeightChunk chunk_body = RLX__WEIGHT_CHUNK__INIT;
    chunk_body.data.len = sizeof chunk_data;
    chunk_body.data.data = chunk_data;
    Rlx__Envelope chunk = RLX__ENVELOPE__INIT;
    chunk.body_case = RLX__ENVELOPE__BODY_WEIGHT_CHUNK;
    chunk.weight_chunk = &chunk_body;
    TU_CHECK(wire_send(w, client, NULL, &chunk, NULL) == WIRE_OK, "send big chunk");
    expect_error(w, client, RLX__ERROR_CODE__ERROR_CODE_TOO_LARGE, "8000 bytes");

    zmq_send(client, "a", 1, ZMQ_SNDMORE);
    zmq_send(client, "b", 1, 0);
    expect_error(w, client, RLX__ERROR_CODE__ERROR_CODE_MALFORMED, "two frames");

    hb.protocol_version = 0;
    hb.seq = 0;
    hb.run_id = "another-run";
    TU_CHECK(wire_send(w, client, NULL, &hb, NULL) == WIRE_OK, "send other run");
    expect_error(w, client, RLX__ERROR_CODE__ERROR_CODE_WRONG_RUN, "another run");

    // Good again after all the bad: the hub kept serving and counted each.
    hb.run_id = "";
    TU_CHECK(wire_send(w, client, NULL, &hb, NULL) == WIRE_OK, "send heartbeat");
    in = expect_reply(w, client, RLX__ENVELOPE__BODY_RUN_STATUS, "heartbeat");
    if (in) {
        uint64_t want[WIRE_ERR_COUNT] = {0};
        want[WIRE_ERR_MALFORMED] = 1;
        want[WIRE_ERR_VERSION] = 2;
        want[WIRE_ERR_UNKNOWN_TYPE] = 1;
        want[WIRE_ERR_TOO_LARGE] = 1;
        want[WIRE_ERR_FRAMES] = 1;
        want[WIRE_ERR_WRONG_RUN] = 1;
        Rlx__RunStatus *st = in->run_status;
        TU_CHECK(st->n_counters == WIRE_ERR_COUNT, "hub sent its counters");
        for (size_t i = 0; i < st->n_counters && i < WIRE_ERR_COUNT; i++)
            if (i != WIRE_ERR_TIMEOUT)
                TU_CHECK(st->counters[i]->value == want[i], "hub counter '%s' = %llu, want %llu",
                         st->counters[i]->key, (unsigned long long)st->counters[i]->value,
                         (unsigned long long)want[i]);
        TU_CHECK(strcmp(in->run_id, "run-loop") == 0, "hub stamps its run id");
    }
    wire_free(&in);

    TU_CHECK(wire_send(w, client, NULL, &bye, NULL) == WIRE_OK, "send bye");
    in = expect_reply(w, client, RLX__ENVELOPE__BODY_BYE, "bye");
    wire_free(&in);
    pthread_join(thread, NULL);

    TU_CHECK(server.stopped_by_bye, "server ended on Bye, not on its deadline");
    TU_CHECK(server.good == 3 && server.bad == 7, "server: %d good, %d bad (want 3, 7)",
             server.good, server.bad);
    TU_CHECK(server.stats.received == 3 && server.stats.sent == 10,
             "server wire: %llu received, %llu sent", (unsigned long long)server.stats.received,
             (unsigned long long)server.stats.sent);
    TU_CHECK(wire_stats(w)->received == 10 && wire_error_total(w) == 0,
             "client: every reply accepted");
    TU_CHECK(wire_stats(w)->errors[WIRE_ERR_TIMEOUT] == 1, "client: one timeout counted");
    printf("loopback: server answered %d good and %d bad messages and kept serving\n", server.good,
           server.bad);

    wire_destroy(&w);
    zmq_close(client);
    zmq_close(server.socket);
    zmq_ctx_term(ctx);
}

// ---- arenas and same-process handover ----------------------------------------------------

static void *free_in_thread(void *arg) {
    Rlx__Envelope *env = arg;
    wire_free(&env);
    return NULL;
}

// Parts of a decoded Envelope outlive it while a reference holds its arena; a handover batch
// of trajectories from two decoded batches reads them after both are freed, and its last
// reference may go in another thread (ASan checks the memory, LeakSanitizer that all goes).
static void test_arena_handover(void) {
    wire_t *w = wire_new("arena", 0, "run-A");
    Rlx__Envelope *dec[2] = {NULL, NULL};
    wire_arena_t *held[4];
    Rlx__Trajectory *tv[4];
    for (int b = 0; b < 2; b++) {
        uint32_t prompt[3] = {256, 'a', (uint32_t)('0' + b)};
        float lp[3] = {-1.f, -2.f, -3.f};
        Rlx__TrajectoryId id[2];
        Rlx__TextTrajectory tx[2];
        Rlx__Trajectory t[2], *tp[2];
        for (int i = 0; i < 2; i++) {
            rlx__trajectory_id__init(&id[i]);
            id[i].actor_id = 7;
            id[i].seq = (uint64_t)(2 * b + i + 1);
            rlx__text_trajectory__init(&tx[i]);
            tx[i].n_prompt_tokens = tx[i].n_response_tokens = tx[i].n_logprobs = 3;
            tx[i].prompt_tokens = tx[i].response_tokens = prompt;
            tx[i].logprobs = lp;
            rlx__trajectory__init(&t[i]);
            t[i].id = &id[i];
            t[i].work_id = 10 + (uint64_t)b;
            t[i].kind_case = RLX__TRAJECTORY__KIND_TEXT;
            t[i].text = &tx[i];
            tp[i] = &t[i];
        }
        Rlx__TrajectoryBatch tb = RLX__TRAJECTORY_BATCH__INIT;
        tb.n_trajectories = 2;
        tb.trajectories = tp;
        Rlx__Envelope env = RLX__ENVELOPE__INIT;
        env.body_case = RLX__ENVELOPE__BODY_TRAJECTORY_BATCH;
        env.trajectory_batch = &tb;
        uint8_t *buf;
        size_t len;
        TU_CHECK(wire_encode(w, &env, &buf, &len, NULL) == WIRE_OK, "encode batch %d", b);
        TU_CHECK(wire_decode(w, buf, len, &dec[b], NULL) == WIRE_OK, "decode batch %d", b);
        free(buf); // the decoded Envelope does not point into the bytes
        if (!dec[b])
            return;
        for (int i = 0; i < 2; i++) {
            tv[2 * b + i] = dec[b]->trajectory_batch->trajectories[i];
            held[2 * b + i] = wire_arena_retain(dec[b]);
        }
    }
    for (int b = 0; b < 2; b++)
        wire_free(&dec[b]); // the trajectories live on in their arenas
    TU_CHECK(tv[3]->id->seq == 4 && tv[3]->text->prompt_tokens[2] == '1' &&
                 tv[3]->text->logprobs[2] == -3.f,
             "a trajectory outlives its Envelope while its arena is held");
    Rlx__Envelope *batch = wire_batch_handover(w, tv, held, 4);
    for (int i = 0; i < 4; i++)
        wire_arena_release(&held[i]); // the batch holds its own references
    TU_CHECK(held[0] == NULL, "wire_arena_release nulls the pointer");
    TU_CHECK(batch && batch->body_case == RLX__ENVELOPE__BODY_TRAJECTORY_BATCH &&
                 batch->protocol_version == WIRE_PROTOCOL_VERSION &&
                 strcmp(batch->run_id, "run-A") == 0 &&
                 batch->trajectory_batch->n_trajectories == 4,
             "handover batch stamped, 4 trajectories");
    if (batch) {
        int ok = 1;
        for (int i = 0; i < 4; i++)
            ok &= batch->trajectory_batch->trajectories[i]->id->seq == (uint64_t)i + 1;
        TU_CHECK(ok, "handover batch in order");
        // It re-encodes like any Envelope, then goes in another thread.
        uint8_t *buf;
        size_t len;
        TU_CHECK(wire_encode(w, batch, &buf, &len, NULL) == WIRE_OK, "handover batch encodes");
        free(buf);
        pthread_t th;
        TU_CHECK(pthread_create(&th, NULL, free_in_thread, batch) == 0, "thread");
        pthread_join(th, NULL);
    }
    wire_destroy(&w);
}

// ---- UTF-8 in Error.message -------------------------------------------------------------------

// proto3 strings must be UTF-8: an Error whose message was cut inside a character is refused
// whole by Python's and Go's protobuf.
static void test_utf8_errors(void) {
    TU_CHECK(wire_utf8_valid("a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80", 10), "valid text refused");
    TU_CHECK(!wire_utf8_valid("\xC3\x28", 2) && !wire_utf8_valid("\xFF", 1) &&
                 !wire_utf8_valid("\xED\xA0\x80", 3) && !wire_utf8_valid("\xC0\xAF", 2) &&
                 !wire_utf8_valid("\xE2\x82", 2),
             "ill-formed UTF-8 accepted");
    char buf[8];
    memcpy(buf, "ab\xE2\x82\xAC\xE2\x82", 7); // as snprintf cuts "ab" + 2 euros at 8 bytes
    buf[7] = 0;
    TU_CHECK(strlen(buf) == 7 && !wire_utf8_valid(buf, 7), "snprintf cut inside a character");
    TU_CHECK(wire_utf8_clip(buf) == 5 && !strcmp(buf, "ab\xE2\x82\xAC"), "clip: '%s'", buf);
    char mid[] = "a\xFF"
                 "b\xC3";
    TU_CHECK(wire_utf8_clip(mid) == 3 && !strcmp(mid, "a?b"), "clip of stray bytes: '%s'", mid);
    TU_CHECK(wire_utf8_prefix("\xE2\x82\xAC\xE2\x82\xAC", 5) == 3, "prefix at a boundary");

    // A peer's run id of multi-byte characters, quoted (cut) in the refusal's detail.
    char run[128] = "";
    for (int i = 0; i < 30; i++)
        strcat(run, "\xE2\x82\xAC"); // 90 bytes: the detail quotes at most 40
    Rlx__Heartbeat hb = RLX__HEARTBEAT__INIT;
    Rlx__Envelope env = RLX__ENVELOPE__INIT;
    env.body_case = RLX__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &hb;
    env.run_id = run;
    uint8_t *bytes = NULL;
    size_t len = 0;
    TU_CHECK(wire_encode(NULL, &env, &bytes, &len, NULL) == WIRE_OK, "encode");
    wire_t *w = wire_new("utf8", 0, "run-\xC3\xA9t\xC3\xA9");
    wire_error_t why;
    Rlx__Envelope *out = NULL;
    TU_CHECK(wire_decode(w, bytes, len, &out, &why) == WIRE_ERR_WRONG_RUN, "wrong run");
    TU_CHECK(wire_utf8_valid(why.detail, strlen(why.detail)), "detail not UTF-8: %s", why.detail);
    free(bytes);
    wire_destroy(&w);
}

int main(void) {
    test_roundtrip_all_types();
    test_text_trajectory_by_hand();
    test_refusals();
    test_arena_handover();
    test_utf8_errors();
    test_zmq_loopback();
    return tu_finish("test_wire");
}
