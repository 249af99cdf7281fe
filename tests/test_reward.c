// test_reward.c: the reward worker. First exec_scorer.c on its own (the example scorer, and a
// scorer that crashes, hangs or writes garbage on command: error results, restart, and the
// next items scored again; non-text items: kind, payload and shape reach the scorer, floats
// bit-exact, examples/image_scorer_example.py on images, over-long request and reply lines).
// Then the real rlx-reward executable against a scripted hub (a ROUTER socket played by this
// test on loopback TCP): Hello/Welcome, built-in exact and digits rewards, an unknown scorer
// giving an error result, Error NOT_JOINED answered by a new Hello, --exec with
// examples/exec_scorer_example.py (and image_scorer_example.py on a DIFFUSION item's
// payload), an --exec command that crashes or hangs, and SIGTERM giving Bye and exit 0. Last,
// examples/python_reward_worker.py (Debian's /usr/bin/python3 with python3-zmq and
// python3-protobuf) against the same scripted hub, text and image items. Every receive has a
// deadline.
#include <stdio.h>

#include "testutil.h"

#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zmq.h>

#include "exec_scorer.h"
#include "util.h"
#include "wire.h"

#define PY "/usr/bin/python3"

static char tmpdir[256];

// ---- a scripted hub ---------------------------------------------------------------------------

typedef struct {
    void *ctx;        // ZeroMQ context
    void *sock;       // ROUTER bound to an ephemeral loopback port
    wire_t *w;        // its wire state (run "test-run")
    char ep[128];     // endpoint workers connect to
    wire_peer_t peer; // the last worker heard from
} fake_hub_t;

static void fh_open(fake_hub_t *h, void *ctx) {
    memset(h, 0, sizeof *h);
    h->ctx = ctx;
    h->sock = zmq_socket(ctx, ZMQ_ROUTER);
    int one = 1, linger = 0;
    zmq_setsockopt(h->sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(h->sock, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_bind(h->sock, "tcp://127.0.0.1:*") != 0)
        RLX_DIE("bind: %s", zmq_strerror(errno));
    size_t len = sizeof h->ep;
    zmq_getsockopt(h->sock, ZMQ_LAST_ENDPOINT, h->ep, &len);
    h->w = wire_new("fake-hub", 0, "test-run");
}

static void fh_close(fake_hub_t *h) {
    zmq_close(h->sock);
    wire_destroy(&h->w);
}

// Waits up to timeout_s for a message of type want, dropping others (heartbeats). Counts
// the dropped ones of type also_count in *counted if given.
static Rlx__Envelope *fh_expect(fake_hub_t *h, Rlx__Envelope__BodyCase want, double timeout_s) {
    double end = rlx_now() + timeout_s;
    while (rlx_now() < end) {
        Rlx__Envelope *env = NULL;
        wire_peer_t from;
        int rc = wire_recv(h->w, h->sock, 50, &from, &env, NULL);
        if (rc != WIRE_OK)
            continue;
        h->peer = from;
        if (env->protocol_version != 1)
            fprintf(stderr, "unexpected protocol version %u\n", env->protocol_version);
        if (env->body_case == want)
            return env;
        wire_free(&env);
    }
    return NULL;
}

static void fh_send(fake_hub_t *h, Rlx__Envelope *env) {
    if (h->peer.size == 0) {
        TU_CHECK(0, "hub send %s: no worker has spoken yet", wire_body_name(env->body_case));
        return;
    }
    int rc = wire_send(h->w, h->sock, &h->peer, env, NULL);
    TU_CHECK(rc == WIRE_OK, "hub send %s: %s", wire_body_name(env->body_case), wire_strerror(rc));
}

// Welcome with heartbeats every 200 ms; this hub sends none, so liveness decides when the
// worker presumes it gone: long (10 s) unless a test wants the reconnect.
// The session key this hub hands out with worker_id (a real hub draws it at random): a
// worker's later Hello under that id must carry it (the rejoin proof; join checks it).
static uint64_t session_key_of(uint32_t worker_id) {
    return 0x5e55000000000000ull ^ ((uint64_t)worker_id * 0x9E3779B97F4A7C15ull);
}

static void fh_welcome_liveness(fake_hub_t *h, uint32_t worker_id, uint32_t liveness) {
    Rlx__Welcome w = RLX__WELCOME__INIT;
    w.worker_id = worker_id;
    w.session_key = session_key_of(worker_id);
    w.heartbeat_interval_ms = 200;
    w.heartbeat_liveness = liveness;
    Rlx__Envelope env = RLX__ENVELOPE__INIT;
    env.body_case = RLX__ENVELOPE__BODY_WELCOME;
    env.welcome = &w;
    fh_send(h, &env);
}

static void fh_welcome(fake_hub_t *h, uint32_t worker_id) {
    fh_welcome_liveness(h, worker_id, 50);
}

static void fh_error(fake_hub_t *h, Rlx__ErrorCode code) {
    Rlx__Error e = RLX__ERROR__INIT;
    e.code = code;
    e.message = "test: the hub forgot you";
    Rlx__Envelope env = RLX__ENVELOPE__INIT;
    env.body_case = RLX__ENVELOPE__BODY_ERROR;
    env.error = &e;
    fh_send(h, &env);
}

// One item to put in a ScoreRequest.
typedef struct {
    const char *response, *target, *scorer;
} item_spec_t;

// The payload of a non-text item (a diffusion x_0), or NULL for text.
typedef struct {
    const float *x;        // (n) flattened payload
    size_t n;              // floats
    const uint32_t *shape; // (nshape)
    size_t nshape;         // dims
} payload_spec_t;

// A ScoreRequest of n items; pl[i] (if pl and pl[i].x) makes item i a DIFFUSION item.
static void fh_score_request_pl(fake_hub_t *h, uint64_t request_id, const item_spec_t *spec,
                                const payload_spec_t *pl, int n) {
    Rlx__ScoreItem items[16], *itemp[16];
    Rlx__TrajectoryId ids[16];
    for (int i = 0; i < n; i++) {
        rlx__score_item__init(&items[i]);
        rlx__trajectory_id__init(&ids[i]);
        ids[i].actor_id = 3;
        ids[i].seq = request_id * 100 + (uint64_t)i;
        items[i].id = &ids[i];
        items[i].prompt_text = "12+30=";
        items[i].response_text = (char *)spec[i].response;
        items[i].target = (char *)spec[i].target;
        items[i].scorer = (char *)spec[i].scorer;
        items[i].kind = RLX__TRAJECTORY_KIND__TRAJECTORY_KIND_TEXT;
        if (pl && pl[i].x) {
            items[i].kind = RLX__TRAJECTORY_KIND__TRAJECTORY_KIND_DIFFUSION;
            items[i].payload = (float *)pl[i].x;
            items[i].n_payload = pl[i].n;
            items[i].payload_shape = (uint32_t *)pl[i].shape;
            items[i].n_payload_shape = pl[i].nshape;
        }
        itemp[i] = &items[i];
    }
    Rlx__ScoreRequest req = RLX__SCORE_REQUEST__INIT;
    req.request_id = request_id;
    req.n_items = (size_t)n;
    req.items = itemp;
    req.deadline_ms = 10000;
    Rlx__Envelope env = RLX__ENVELOPE__INIT;
    env.body_case = RLX__ENVELOPE__BODY_SCORE_REQUEST;
    env.score_request = &req;
    fh_send(h, &env);
}

// Sends a request (items with payloads pl, may be NULL) and waits for its reply (NULL on
// timeout, counted as a failure).
static Rlx__Envelope *score_round_pl(fake_hub_t *h, uint64_t request_id, const item_spec_t *spec,
                                     const payload_spec_t *pl, int n, double timeout_s) {
    fh_score_request_pl(h, request_id, spec, pl, n);
    Rlx__Envelope *rep = fh_expect(h, RLX__ENVELOPE__BODY_SCORE_REPLY, timeout_s);
    TU_CHECK(rep != NULL, "no ScoreReply to request %llu within %.0f s",
             (unsigned long long)request_id, timeout_s);
    if (!rep)
        return NULL;
    TU_CHECK(rep->score_reply->request_id == request_id, "reply for request %llu, want %llu",
             (unsigned long long)rep->score_reply->request_id, (unsigned long long)request_id);
    TU_CHECK(rep->score_reply->n_results == (size_t)n, "%zu results for %d items",
             rep->score_reply->n_results, n);
    return rep;
}

static Rlx__Envelope *score_round(fake_hub_t *h, uint64_t request_id, const item_spec_t *spec,
                                  int n, double timeout_s) {
    return score_round_pl(h, request_id, spec, NULL, n, timeout_s);
}

// The symmetry score of an [H, W] image, as examples/image_scorer_example.py and the Python
// worker compute it (in double).
static float sym_ref(const float *x, int H, int W) {
    double sum = 0;
    for (int i = 0; i < H; i++)
        for (int j = 0; j < W; j++)
            sum += fabs((double)x[i * W + j] - x[i * W + (W - 1 - j)]);
    return (float)(-sum / (H * W));
}

// The result for item i of request_id (matched by id; results may come in any order).
static const Rlx__ScoreResult *result_for(const Rlx__Envelope *rep, uint64_t request_id, int i) {
    const Rlx__ScoreReply *r = rep->score_reply;
    for (size_t k = 0; k < r->n_results; k++)
        if (r->results[k]->id && r->results[k]->id->actor_id == 3 &&
            r->results[k]->id->seq == request_id * 100 + (uint64_t)i)
            return r->results[k];
    return NULL;
}

static void check_result(const Rlx__Envelope *rep, uint64_t request_id, int i, float reward,
                         int want_error, const char *what) {
    if (!rep)
        return;
    const Rlx__ScoreResult *r = result_for(rep, request_id, i);
    TU_CHECK(r != NULL, "%s: no result for item %d", what, i);
    if (!r)
        return;
    if (want_error) {
        TU_CHECK(r->error && r->error[0], "%s: item %d should have an error, got reward %g", what,
                 i, r->reward);
        printf("ok   %s: error \"%s\"\n", what, r->error);
    } else {
        TU_CHECK(!r->error || !r->error[0], "%s: item %d unexpected error \"%s\"", what, i,
                 r->error);
        TU_CHECK(fabsf(r->reward - reward) < 1e-6f, "%s: item %d reward %g, want %g", what, i,
                 r->reward, reward);
        printf("ok   %s: reward %g (%zu components)\n", what, r->reward, r->n_components);
    }
}

static float component(const Rlx__ScoreResult *r, const char *name) {
    for (size_t k = 0; r && k < r->n_components; k++)
        if (strcmp(r->components[k]->key, name) == 0)
            return r->components[k]->value;
    return NAN;
}

// Expects a Hello of `role` and answers Welcome(worker_id). Returns the Hello's worker_id
// (or -1 when none came).
static long join(fake_hub_t *h, Rlx__Role role, uint32_t worker_id, const char *want_scorer) {
    Rlx__Envelope *env = fh_expect(h, RLX__ENVELOPE__BODY_HELLO, 20.0);
    TU_CHECK(env != NULL, "no Hello within 20 s");
    if (!env)
        return -1;
    const Rlx__Hello *hello = env->hello;
    TU_CHECK(hello->role == role, "Hello role %d, want %d", hello->role, role);
    TU_CHECK(hello->credits >= 1, "Hello credits %u", hello->credits);
    int found = 0;
    for (size_t i = 0; i < hello->n_scorers; i++)
        found |= strcmp(hello->scorers[i], want_scorer) == 0;
    TU_CHECK(found, "Hello does not list scorer %s", want_scorer);
    uint64_t want_key = hello->worker_id ? session_key_of(hello->worker_id) : 0;
    TU_CHECK(hello->session_key == want_key,
             "Hello under id %u carries session_key %016llx, want %016llx (the Welcome's)",
             hello->worker_id, (unsigned long long)hello->session_key,
             (unsigned long long)want_key);
    long id = hello->worker_id;
    wire_free(&env);
    fh_welcome(h, worker_id);
    return id;
}

// SIGTERM: expect Bye from the worker and exit status 0.
static void stop_worker(fake_hub_t *h, pid_t pid, const char *what, const char *log) {
    kill(pid, SIGTERM);
    Rlx__Envelope *bye = fh_expect(h, RLX__ENVELOPE__BODY_BYE, 10.0);
    TU_CHECK(bye != NULL, "%s: no Bye after SIGTERM", what);
    wire_free(&bye);
    int st = tu_wait(pid, 10.0);
    TU_CHECK(st == 0, "%s: exit status %d after SIGTERM, want 0", what, st);
    if (tu_failures && log) {
        char *text = tu_read_file(log, NULL);
        fprintf(stderr, "---- %s log ----\n%s----\n", what, text ? text : "(none)");
        free(text);
    }
}

// ---- exec_scorer unit tests -----------------------------------------------------------------

// A text item (no payload) for exec_scorer_score.
#define TEXT_ITEM(id_, prompt_, response_, target_, scorer_)                                       \
    { .id = id_, .prompt = prompt_, .response = response_, .target = target_, .scorer = scorer_ }

static const char *faulty_script(void) {
    static char path[512];
    snprintf(path, sizeof path, "%s/faulty_scorer.py", tmpdir);
    FILE *f = fopen(path, "w");
    fprintf(f, "import json, sys, time\n"
               "for line in sys.stdin:\n"
               "    r = json.loads(line)\n"
               "    if r['response'] == 'crash': sys.exit(3)\n"
               "    if r['response'] == 'hang': time.sleep(60)\n"
               "    if r['response'] == 'garbage':\n"
               "        print('this is not json', flush=True)\n"
               "        continue\n"
               "    if r['response'] == 'refuse':\n"
               "        print(json.dumps({'id': r['id'], 'error': 'cannot score'}), flush=True)\n"
               "        continue\n"
               "    ok = 1.0 if r['response'] == r['target'] else 0.0\n"
               "    print(json.dumps({'id': r['id'], 'reward': ok}), flush=True)\n");
    fclose(f);
    return path;
}

static void test_exec_unit(void) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, PY " %s", tu_src_path("examples/exec_scorer_example.py"));
    exec_scorer_t *s = exec_scorer_new(cmd, 5000);
    exec_item_t items[4] = {TEXT_ITEM("1:1", "1+2=", "3", "3", "exact"),
                            TEXT_ITEM("1:2", "1+2=", "13", "03", "exact"),
                            TEXT_ITEM("1:3", "q", "we\"ird\n\\ \xc3\xa9", "x", "exact"),
                            TEXT_ITEM("1:4", "q", "\xff\xc3(\xed\xa0\x80 not UTF-8", "x", "exact")};
    exec_result_t out[4];
    exec_scorer_score(s, items, 4, out);
    TU_CHECK(!out[3].error[0] && out[3].reward == 0.0f, "example: invalid UTF-8 response: %g (%s)",
             out[3].reward, out[3].error);
    TU_CHECK(!out[0].error[0] && out[0].reward == 1.0f, "example: exact match reward %g (%s)",
             out[0].reward, out[0].error);
    TU_CHECK(!out[1].error[0] && fabsf(out[1].reward - 0.25f) < 1e-6f,
             "example: partial reward %g, want 0.25 (%s)", out[1].reward, out[1].error);
    TU_CHECK(!out[2].error[0] && out[2].reward == 0.0f, "example: odd characters: %g (%s)",
             out[2].reward, out[2].error);
    TU_CHECK(out[1].ncomponents == 2, "example: %d components, want 2", out[1].ncomponents);
    // A second batch through the same process.
    exec_scorer_score(s, items, 2, out);
    TU_CHECK(!out[0].error[0] && out[0].reward == 1.0f, "example: second batch");
    TU_CHECK(exec_scorer_stats(s)->starts == 1, "example: %llu starts, want 1",
             (unsigned long long)exec_scorer_stats(s)->starts);
    exec_scorer_destroy(&s);
    TU_CHECK(s == NULL, "destroy NULLs the pointer");
    printf("ok   exec_scorer: example scorer, 2 batches, 1 process\n");

    snprintf(cmd, sizeof cmd, PY " %s", faulty_script());
    s = exec_scorer_new(cmd, 700);
    struct {
        const char *resp;    // what the faulty scorer reacts to
        const char *counter; // which failure it causes
    } faults[] = {{"crash", "crashes"}, {"hang", "timeouts"}, {"garbage", "garbage"}};
    for (int f = 0; f < 3; f++) {
        exec_item_t batch[3] = {TEXT_ITEM("2:1", "p", "42", "42", "exact"),
                                TEXT_ITEM("2:2", "p", faults[f].resp, "42", "exact"),
                                TEXT_ITEM("2:3", "p", "42", "42", "exact")};
        double t0 = rlx_now();
        exec_scorer_score(s, batch, 3, out);
        double dt = rlx_now() - t0;
        TU_CHECK(!out[0].error[0] && out[0].reward == 1.0f, "%s: item before the fault: %s",
                 faults[f].resp, out[0].error);
        TU_CHECK(out[1].error[0] && out[2].error[0], "%s: the faulty item and the rest get errors",
                 faults[f].resp);
        TU_CHECK(dt < 3.0, "%s: took %.1f s", faults[f].resp, dt);
        printf("ok   exec_scorer %s: \"%s\" in %.2f s\n", faults[f].resp, out[1].error, dt);
        // During the backoff: an immediate error, no wait.
        exec_scorer_score(s, batch, 1, out);
        TU_CHECK(out[0].error[0], "%s: backoff gives an error at once", faults[f].resp);
        usleep(300 * 1000);
        exec_scorer_score(s, batch, 1, out);
        TU_CHECK(!out[0].error[0] && out[0].reward == 1.0f, "%s: restarted scorer works: %s",
                 faults[f].resp, out[0].error);
    }
    exec_item_t refuse[1] = {TEXT_ITEM("2:9", "p", "refuse", "42", "exact")};
    exec_scorer_score(s, refuse, 1, out);
    TU_CHECK(strstr(out[0].error, "cannot score") != NULL, "scorer's own error passed on: '%s'",
             out[0].error);
    const exec_scorer_stats_t *st = exec_scorer_stats(s);
    TU_CHECK(st->crashes == 1 && st->timeouts == 1 && st->garbage == 1 && st->starts == 4,
             "counters: crashes %llu timeouts %llu garbage %llu starts %llu",
             (unsigned long long)st->crashes, (unsigned long long)st->timeouts,
             (unsigned long long)st->garbage, (unsigned long long)st->starts);
    exec_scorer_destroy(&s);

    // A command that does not exist: errors, never a hang or a crash.
    s = exec_scorer_new("/nonexistent/scorer-binary", 500);
    exec_scorer_score(s, refuse, 1, out);
    TU_CHECK(out[0].error[0], "missing command gives an error");
    printf("ok   exec_scorer: missing command: \"%s\"\n", out[0].error);
    exec_scorer_destroy(&s);
}

// A scorer that echoes what it got: reward = payload[int(target)] (so a float's round trip
// through %.9g, Python and back is checked bit for bit), -1 when the request has no
// "payload"; components say the kind, the payload length and the shape.
static const char *echo_script(void) {
    static char path[512];
    snprintf(path, sizeof path, "%s/echo_scorer.py", tmpdir);
    FILE *f = fopen(path, "w");
    fprintf(f, "import json, sys\n"
               "for line in sys.stdin:\n"
               "    r = json.loads(line)\n"
               "    x, shape = r.get('payload'), r.get('shape')\n"
               "    c = {'diffusion': float(r['kind'] == 'diffusion'),\n"
               "         'text': float(r['kind'] == 'text'),\n"
               "         'n': float(len(x) if x else 0), 'nshape': float(len(shape or [])),\n"
               "         'shape0': float(shape[0] if shape else 0),\n"
               "         'has_shape': float('shape' in r)}\n"
               "    rew = x[int(r['target'])] if x else -1.0\n"
               "    print(json.dumps({'id': r['id'], 'reward': rew, 'components': c}), "
               "flush=True)\n");
    fclose(f);
    return path;
}

static float comp(const exec_result_t *r, const char *name) {
    for (int k = 0; k < r->ncomponents; k++)
        if (!strcmp(r->component_name[k], name))
            return r->component_value[k];
    return NAN;
}

// Non-text items through --exec: "kind", "payload" and "shape" reach the scorer (floats
// exactly), text items carry none; examples/image_scorer_example.py scores images (a
// 28x28x3 one too); an item whose request line is over the limit gets an error, unsent.
static void test_exec_payload_unit(void) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, PY " %s", echo_script());
    exec_scorer_t *s = exec_scorer_new(cmd, 5000);
    // Floats that need all 9 digits, the extremes, a denormal, -0.
    const float x[6] = {0.1f,        1e-30f,      -3.40282347e38f, 1.17549435e-38f * 0.5f,
                        16777215.0f, -1.0f / 3.0f};
    const uint32_t shape[2] = {2, 3};
    exec_item_t items[8];
    char target[6][4];
    memset(items, 0, sizeof items);
    for (int i = 0; i < 6; i++) {
        snprintf(target[i], sizeof target[i], "%d", i);
        items[i] = (exec_item_t){.id = "5:1",
                                 .prompt = "",
                                 .response = "",
                                 .target = target[i],
                                 .scorer = "echo",
                                 .kind = "diffusion",
                                 .payload = x,
                                 .npayload = 6,
                                 .shape = shape,
                                 .nshape = 2};
    }
    items[6] = (exec_item_t)TEXT_ITEM("5:7", "1+2=", "3", "0", "echo");
    exec_result_t out[8];
    exec_scorer_score(s, items, 7, out);
    for (int i = 0; i < 6; i++) {
        TU_CHECK(!out[i].error[0], "echo item %d: %s", i, out[i].error);
        TU_CHECK(memcmp(&out[i].reward, &x[i], sizeof x[i]) == 0,
                 "payload[%d] %.9g came back as %.9g (not bit-exact)", i, (double)x[i],
                 (double)out[i].reward);
    }
    TU_CHECK(comp(&out[0], "diffusion") == 1 && comp(&out[0], "n") == 6 &&
                 comp(&out[0], "nshape") == 2 && comp(&out[0], "shape0") == 2,
             "echo: kind/payload/shape not as sent (diffusion %g n %g nshape %g shape0 %g)",
             comp(&out[0], "diffusion"), comp(&out[0], "n"), comp(&out[0], "nshape"),
             comp(&out[0], "shape0"));
    TU_CHECK(!out[6].error[0] && out[6].reward == -1.0f && comp(&out[6], "text") == 1 &&
                 comp(&out[6], "has_shape") == 0,
             "echo: a text item must carry kind text and no payload/shape (reward %g, %s)",
             out[6].reward, out[6].error);
    printf("ok   exec_scorer payload: kind, shape and 6 floats bit-exact; text has none\n");
    // Over the request limit: that item gets an error, the others of the batch are scored.
    size_t big = EXEC_SCORER_MAX_REQUEST / 15 + 1000;
    float *huge = malloc(big * sizeof *huge);
    for (size_t i = 0; i < big; i++)
        huge[i] = -1.23456789e-30f; // 15 characters and a comma each
    uint32_t hshape[1] = {(uint32_t)big};
    exec_item_t mix[3] = {items[0], items[1], items[2]};
    mix[1].payload = huge;
    mix[1].npayload = big;
    mix[1].shape = hshape;
    mix[1].nshape = 1;
    double t0 = rlx_now();
    exec_scorer_score(s, mix, 3, out);
    TU_CHECK(!out[0].error[0] && out[0].reward == x[0] && !out[2].error[0] && out[2].reward == x[2],
             "items around an oversized one: %s / %s", out[0].error, out[2].error);
    TU_CHECK(strstr(out[1].error, "limit") != NULL, "oversized request: error \"%s\"",
             out[1].error);
    TU_CHECK(exec_scorer_stats(s)->oversized == 1 && exec_scorer_stats(s)->starts == 1,
             "oversized %llu starts %llu, want 1 1",
             (unsigned long long)exec_scorer_stats(s)->oversized,
             (unsigned long long)exec_scorer_stats(s)->starts);
    printf("ok   exec_scorer: %zu-float request refused in %.2f s: \"%s\"\n", big, rlx_now() - t0,
           out[1].error);
    free(huge);
    exec_scorer_destroy(&s);
    // A reply line over EXEC_SCORER_MAX_LINE: an error, counted as oversized (and garbage).
    // Just over the limit, so the read that crosses it usually holds the newline too: the
    // whole over-long line is then complete at once and must still count as oversized.
    s = exec_scorer_new("read l; head -c 1048600 /dev/zero | tr '\\0' x; echo; cat >/dev/null",
                        5000);
    exec_scorer_score(s, items, 2, out);
    TU_CHECK(strstr(out[0].error, "reply line over") && out[1].error[0] &&
                 exec_scorer_stats(s)->oversized == 1 && exec_scorer_stats(s)->garbage == 1,
             "over-long reply: \"%s\", oversized %llu", out[0].error,
             (unsigned long long)exec_scorer_stats(s)->oversized);
    printf("ok   exec_scorer: over-long reply: \"%s\"\n", out[0].error);
    exec_scorer_destroy(&s);

    // The example image scorer: symmetry, ink, toy_x, a 28x28x3 image; errors for a text item
    // and an unknown name.
    snprintf(cmd, sizeof cmd, PY " %s", tu_src_path("examples/image_scorer_example.py"));
    s = exec_scorer_new(cmd, 5000);
    const float img[6] = {0.25f, -1.0f, 0.5f, 1.0f, 0.125f, -0.75f};
    enum { NBIG = 3 * 28 * 28 };
    float *rgb = malloc(NBIG * sizeof *rgb);
    uint64_t st = 7;
    for (int i = 0; i < NBIG; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        rgb[i] = (float)((double)(st >> 11) / 9007199254740992.0 * 2 - 1);
    }
    const uint32_t rgb_shape[3] = {3, 28, 28};
    exec_item_t im[6];
    for (int i = 0; i < 6; i++)
        im[i] = (exec_item_t){.id = "6:1",
                              .prompt = "",
                              .response = "",
                              .target = "",
                              .scorer = "symmetry",
                              .kind = "diffusion",
                              .payload = img,
                              .npayload = 6,
                              .shape = shape,
                              .nshape = 2};
    im[1].scorer = "ink";
    im[2].scorer = "toy_x";
    im[3].payload = rgb;
    im[3].npayload = NBIG;
    im[3].shape = rgb_shape;
    im[3].nshape = 3;
    im[4] = (exec_item_t)TEXT_ITEM("6:5", "q", "r", "", "symmetry");
    im[5].scorer = "no_such";
    exec_scorer_score(s, im, 6, out);
    double ink = 0;
    for (int i = 0; i < 6; i++)
        ink += 0.5 * (img[i] + 1.0) / 6;
    float want[4] = {sym_ref(img, 2, 3), (float)ink, (float)-fabs((double)img[0] - 1.0),
                     sym_ref(rgb, 3 * 28, 28)};
    const char *what[4] = {"symmetry", "ink", "toy_x", "symmetry 28x28x3"};
    for (int i = 0; i < 4; i++)
        TU_CHECK(!out[i].error[0] && fabsf(out[i].reward - want[i]) <= 1e-6f,
                 "image example %s: reward %g, want %g (%s)", what[i], out[i].reward, want[i],
                 out[i].error);
    TU_CHECK(strstr(out[4].error, "no payload") != NULL, "image example, text item: \"%s\"",
             out[4].error);
    TU_CHECK(strstr(out[5].error, "unknown scorer") != NULL, "image example, unknown: \"%s\"",
             out[5].error);
    TU_CHECK(exec_scorer_stats(s)->starts == 1 && exec_scorer_stats(s)->garbage == 0,
             "image example: the process kept serving");
    printf("ok   image_scorer_example: symmetry %g, ink %g, toy_x %g, 28x28x3 symmetry %g; "
           "text item: \"%s\"\n",
           out[0].reward, out[1].reward, out[2].reward, out[3].reward, out[4].error);
    free(rgb);
    exec_scorer_destroy(&s);
}

// ---- rlx-reward against the scripted hub ------------------------------------------------------

static void test_builtin(void *ctx) {
    fake_hub_t h;
    fh_open(&h, ctx);
    char log[512];
    snprintf(log, sizeof log, "%s/reward_builtin.log", tmpdir);
    char *argv[] = {(char *)tu_bin_path("rlx-reward"),
                    "--hub",
                    h.ep,
                    "--name",
                    "r-builtin",
                    "--heartbeat-ms",
                    "200",
                    NULL};
    pid_t pid = tu_spawn(argv, log);
    TU_CHECK(join(&h, RLX__ROLE__ROLE_REWARD_WORKER, 7, "digits") == 0, "first Hello has id 0");
    item_spec_t items[] = {{"42", "42", "exact"},
                           {"41", "42", "exact"},
                           {"43", "42", "digits"},
                           {"42", "42", "no_such_scorer"}};
    Rlx__Envelope *rep = score_round(&h, 1, items, 4, 10.0);
    check_result(rep, 1, 0, 1.0f, 0, "built-in exact match");
    check_result(rep, 1, 1, 0.0f, 0, "built-in exact mismatch");
    check_result(rep, 1, 2, 0.5f, 0, "built-in digits");
    check_result(rep, 1, 3, 0.0f, 1, "unknown scorer");
    if (rep)
        TU_CHECK(rep->sender_id == 7, "reply sender_id %u, want 7", rep->sender_id);
    if (rep)
        TU_CHECK(component(result_for(rep, 1, 0), "exact") == 1.0f, "exact component");
    wire_free(&rep);

    // The hub forgets the worker: it says Hello again with its id, then keeps serving.
    fh_error(&h, RLX__ERROR_CODE__ERROR_CODE_NOT_JOINED);
    TU_CHECK(join(&h, RLX__ROLE__ROLE_REWARD_WORKER, 7, "exact") == 7,
             "Hello after NOT_JOINED carries worker_id 7");
    rep = score_round(&h, 2, items, 1, 10.0);
    check_result(rep, 2, 0, 1.0f, 0, "after rejoin");
    wire_free(&rep);

    // Heartbeats keep coming while idle.
    Rlx__Envelope *hb = fh_expect(&h, RLX__ENVELOPE__BODY_HEARTBEAT, 2.0);
    TU_CHECK(hb && hb->heartbeat->worker_id == 7, "heartbeat from worker 7");
    wire_free(&hb);

    // A hub silent for liveness (3) x 200 ms: the worker reconnects and says Hello with its id.
    fh_welcome_liveness(&h, 7, 3);
    double t0 = rlx_now();
    TU_CHECK(join(&h, RLX__ROLE__ROLE_REWARD_WORKER, 7, "exact") == 7,
             "Hello after hub silence carries worker_id 7");
    double dt = rlx_now() - t0;
    TU_CHECK(dt > 0.5 && dt < 3.0, "reconnect after %.2f s of silence (liveness 0.6 s)", dt);
    printf("ok   reconnect after %.2f s of hub silence\n", dt);
    rep = score_round(&h, 3, items, 2, 10.0);
    check_result(rep, 3, 1, 0.0f, 0, "after reconnect");
    wire_free(&rep);
    stop_worker(&h, pid, "rlx-reward built-in", log);
    fh_close(&h);
}

static void test_exec_process(void *ctx) {
    fake_hub_t h;
    fh_open(&h, ctx);
    char log[512], cmd[1024];
    snprintf(log, sizeof log, "%s/reward_exec.log", tmpdir);
    snprintf(cmd, sizeof cmd, PY " %s", tu_src_path("examples/exec_scorer_example.py"));
    char *argv[] = {(char *)tu_bin_path("rlx-reward"),
                    "--hub",
                    h.ep,
                    "--name",
                    "r-exec",
                    "--heartbeat-ms",
                    "200",
                    "--scorer",
                    "exact",
                    "--exec",
                    cmd,
                    NULL};
    pid_t pid = tu_spawn(argv, log);
    join(&h, RLX__ROLE__ROLE_REWARD_WORKER, 8, "exact");
    item_spec_t items[] = {{"42", "42", "exact"}, {"43", "42", "exact"}};
    Rlx__Envelope *rep = score_round(&h, 1, items, 2, 10.0);
    check_result(rep, 1, 0, 1.0f, 0, "--exec example exact");
    check_result(rep, 1, 1, 0.25f, 0, "--exec example partial");
    if (rep)
        TU_CHECK(component(result_for(rep, 1, 1), "digits") == 0.5f, "--exec components passed");
    wire_free(&rep);
    stop_worker(&h, pid, "rlx-reward --exec example", log);
    fh_close(&h);

    // A scorer that crashes or hangs on command: error results, and the worker keeps serving.
    fh_open(&h, ctx);
    snprintf(log, sizeof log, "%s/reward_faulty.log", tmpdir);
    snprintf(cmd, sizeof cmd, PY " %s", faulty_script());
    char *argv2[] = {(char *)tu_bin_path("rlx-reward"),
                     "--hub",
                     h.ep,
                     "--name",
                     "r-faulty",
                     "--heartbeat-ms",
                     "200",
                     "--scorer",
                     "exact",
                     "--exec",
                     cmd,
                     "--exec-timeout-ms",
                     "800",
                     NULL};
    pid = tu_spawn(argv2, log);
    join(&h, RLX__ROLE__ROLE_REWARD_WORKER, 9, "exact");
    const char *faults[] = {"crash", "hang"};
    uint64_t rid = 1;
    for (int f = 0; f < 2; f++) {
        item_spec_t bad[] = {{"42", "42", "exact"}, {faults[f], "42", "exact"}};
        rep = score_round(&h, rid, bad, 2, 10.0);
        check_result(rep, rid, 0, 1.0f, 0, "faulty scorer, item before the fault");
        check_result(rep, rid, 1, 0.0f, 1, f == 0 ? "--exec crash" : "--exec hang");
        wire_free(&rep);
        rid++;
        usleep(400 * 1000); // past the restart backoff
        item_spec_t good[] = {{"42", "42", "exact"}};
        rep = score_round(&h, rid, good, 1, 10.0);
        check_result(rep, rid, 0, 1.0f, 0, "after the fault, restarted scorer");
        wire_free(&rep);
        rid++;
    }
    stop_worker(&h, pid, "rlx-reward --exec faulty", log);
    fh_close(&h);
}

// rlx-reward --exec examples/image_scorer_example.py: the worker passes a DIFFUSION item's
// payload and shape on (ScoreItem.payload -> "payload"), the reward comes back; a text item
// for the same scorer gets the scorer's error.
static void test_exec_image_process(void *ctx) {
    fake_hub_t h;
    fh_open(&h, ctx);
    char log[512], cmd[1024];
    snprintf(log, sizeof log, "%s/reward_image.log", tmpdir);
    snprintf(cmd, sizeof cmd, PY " %s", tu_src_path("examples/image_scorer_example.py"));
    char *argv[] = {(char *)tu_bin_path("rlx-reward"),
                    "--hub",
                    h.ep,
                    "--name",
                    "r-image",
                    "--heartbeat-ms",
                    "200",
                    "--scorer",
                    "symmetry,toy_x",
                    "--exec",
                    cmd,
                    NULL};
    pid_t pid = tu_spawn(argv, log);
    join(&h, RLX__ROLE__ROLE_REWARD_WORKER, 12, "symmetry");
    const float img[8] = {0.5f, -0.25f, 0.75f, 0.5f, 1.0f, 0.0f, -1.0f, 0.1f};
    const uint32_t shape[2] = {2, 4}, pshape[1] = {2};
    item_spec_t items[] = {{"", "", "symmetry"}, {"", "", "toy_x"}, {"42", "42", "symmetry"}};
    payload_spec_t pl[] = {{img, 8, shape, 2}, {img + 2, 2, pshape, 1}, {NULL, 0, NULL, 0}};
    Rlx__Envelope *rep = score_round_pl(&h, 1, items, pl, 3, 10.0);
    check_result(rep, 1, 0, sym_ref(img, 2, 4), 0, "--exec image symmetry");
    check_result(rep, 1, 1, (float)-fabs((double)img[2] - 1.0), 0, "--exec image toy_x");
    check_result(rep, 1, 2, 0.0f, 1, "--exec image scorer on a text item");
    if (rep)
        TU_CHECK(component(result_for(rep, 1, 0), "symmetry") == sym_ref(img, 2, 4),
                 "--exec image: component passed");
    wire_free(&rep);
    stop_worker(&h, pid, "rlx-reward --exec image example", log);
    fh_close(&h);
}

// ---- the Python worker ----------------------------------------------------------------------

static void test_python_worker(void *ctx) {
    if (access(PY, X_OK) != 0 || system(PY " -c 'import zmq, google.protobuf' 2>/dev/null") != 0 ||
        system("protoc --version >/dev/null 2>&1") != 0) {
        printf("SKIP python worker: needs " PY " with python3-zmq, python3-protobuf and protoc\n");
        return;
    }
    fake_hub_t h;
    fh_open(&h, ctx);
    char log[512], cache[512];
    snprintf(log, sizeof log, "%s/python_worker.log", tmpdir);
    snprintf(cache, sizeof cache, "%s/pycache", tmpdir);
    char *argv[] = {PY,
                    (char *)tu_src_path("examples/python_reward_worker.py"),
                    "--hub",
                    h.ep,
                    "--name",
                    "py-test",
                    "--heartbeat-ms",
                    "200",
                    "--proto-cache",
                    cache,
                    NULL};
    pid_t pid = tu_spawn(argv, log);
    long id = join(&h, RLX__ROLE__ROLE_REWARD_WORKER, 11, "py_exact");
    TU_CHECK(id == 0, "python worker: first Hello id %ld", id);
    item_spec_t items[] = {
        {"42", "42", "py_exact"}, {"41", "42", "py_exact"}, {"42", "42", "nope"}};
    Rlx__Envelope *rep = score_round(&h, 1, items, 3, 20.0);
    check_result(rep, 1, 0, 1.0f, 0, "python worker exact");
    check_result(rep, 1, 1, 0.0f, 0, "python worker mismatch");
    check_result(rep, 1, 2, 0.0f, 1, "python worker unknown scorer");
    if (rep) {
        TU_CHECK(rep->protocol_version == WIRE_PROTOCOL_VERSION,
                 "python worker protocol_version %u", rep->protocol_version);
        TU_CHECK(rep->sender_id == 11, "python worker sender_id %u", rep->sender_id);
        TU_CHECK(component(result_for(rep, 1, 0), "exact") == 1.0f, "python worker component");
    }
    wire_free(&rep);
    // py_symmetry: an image item's payload, and a text item (no payload: an error).
    const float img[6] = {0.5f, -0.25f, 0.75f, 1.0f, 0.0f, -1.0f};
    const uint32_t shape[2] = {2, 3};
    item_spec_t imitems[] = {{"", "", "py_symmetry"}, {"42", "42", "py_symmetry"}};
    payload_spec_t pl[] = {{img, 6, shape, 2}, {NULL, 0, NULL, 0}};
    rep = score_round_pl(&h, 3, imitems, pl, 2, 20.0);
    check_result(rep, 3, 0, sym_ref(img, 2, 3), 0, "python worker py_symmetry");
    check_result(rep, 3, 1, 0.0f, 1, "python worker py_symmetry without a payload");
    if (rep)
        TU_CHECK(component(result_for(rep, 3, 0), "symmetry") == sym_ref(img, 2, 3),
                 "python worker symmetry component");
    wire_free(&rep);
    fh_error(&h, RLX__ERROR_CODE__ERROR_CODE_NOT_JOINED);
    TU_CHECK(join(&h, RLX__ROLE__ROLE_REWARD_WORKER, 11, "py_exact") == 11,
             "python worker: Hello after NOT_JOINED carries its id");
    rep = score_round(&h, 2, items, 1, 10.0);
    check_result(rep, 2, 0, 1.0f, 0, "python worker after rejoin");
    wire_free(&rep);
    Rlx__Envelope *hb = fh_expect(&h, RLX__ENVELOPE__BODY_HEARTBEAT, 2.0);
    TU_CHECK(hb != NULL, "python worker heartbeats");
    wire_free(&hb);
    stop_worker(&h, pid, "python worker", log);
    fh_close(&h);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_reward.XXXXXX");
    if (!mkdtemp(tmpdir))
        RLX_DIE("mkdtemp failed");
    signal(SIGPIPE, SIG_IGN);
    test_exec_unit();
    test_exec_payload_unit();
    void *ctx = zmq_ctx_new();
    test_builtin(ctx);
    test_exec_process(ctx);
    test_exec_image_process(ctx);
    test_python_worker(ctx);
    zmq_ctx_term(ctx);
    if (tu_failures == 0) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", tmpdir);
    } else {
        fprintf(stderr, "logs kept in %s\n", tmpdir);
    }
    return tu_finish("test_reward");
}
