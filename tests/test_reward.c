// test_reward.c: the reward worker. First exec_scorer.c on its own (the example scorer, and a
// scorer that crashes, hangs or writes garbage on command: error results, restart, and the
// next items scored again). Then the real rlx-reward executable against a scripted hub (a
// ROUTER socket played by this test on loopback TCP): Hello/Welcome, built-in exact and
// digits rewards, an unknown scorer giving an error result, Error NOT_JOINED answered by a
// new Hello, --exec with examples/exec_scorer_example.py, an --exec command that crashes or
// hangs, and SIGTERM giving Bye and exit 0. Last, examples/python_reward_worker.py (Debian's
// /usr/bin/python3 with python3-zmq and python3-protobuf) against the same scripted hub.
// Every receive has a deadline.
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
static void fh_welcome_liveness(fake_hub_t *h, uint32_t worker_id, uint32_t liveness) {
    Rlx__Welcome w = RLX__WELCOME__INIT;
    w.worker_id = worker_id;
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

static void fh_score_request(fake_hub_t *h, uint64_t request_id, const item_spec_t *spec, int n) {
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

// Sends a request and waits for its reply (NULL on timeout, counted as a failure).
static Rlx__Envelope *score_round(fake_hub_t *h, uint64_t request_id, const item_spec_t *spec,
                                  int n, double timeout_s) {
    fh_score_request(h, request_id, spec, n);
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
    exec_item_t items[4] = {{"1:1", "1+2=", "3", "3", "exact"},
                            {"1:2", "1+2=", "13", "03", "exact"},
                            {"1:3", "q", "we\"ird\n\\ \xc3\xa9", "x", "exact"},
                            {"1:4", "q", "\xff\xc3(\xed\xa0\x80 not UTF-8", "x", "exact"}};
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
        exec_item_t batch[3] = {{"2:1", "p", "42", "42", "exact"},
                                {"2:2", "p", faults[f].resp, "42", "exact"},
                                {"2:3", "p", "42", "42", "exact"}};
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
    exec_item_t refuse[1] = {{"2:9", "p", "refuse", "42", "exact"}};
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
        TU_CHECK(rep->protocol_version == 1, "python worker protocol_version %u",
                 rep->protocol_version);
        TU_CHECK(rep->sender_id == 11, "python worker sender_id %u", rep->sender_id);
        TU_CHECK(component(result_for(rep, 1, 0), "exact") == 1.0f, "python worker component");
    }
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
    void *ctx = zmq_ctx_new();
    test_builtin(ctx);
    test_exec_process(ctx);
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
