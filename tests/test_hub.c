// test_hub.c: the hub (learner/hub.c) on real loopback TCP sockets, driven by fake actors,
// reward workers and observers written here as DEALER clients speaking rlx.proto through the
// wire module. The hub runs in its own thread; the test's main thread plays every client and
// the learner, all receives with timeouts. Scenarios: the full path (work, trajectories,
// scoring, whole groups to the learner, run status, the trajectory log); backpressure; a
// reward worker that goes silent holding a request; invalid, duplicate and malformed input;
// weight publication and chunked fetch; drain with trajectories stuck unscored; allowed tokens
// (the alphabet of GFlowNets on text): sent with the work, responses outside them refused.
#include <stdio.h>

#include "hub.h"
#include "testutil.h"
#include "trajlog.h"
#include "wire.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <zlib.h>
#include <zmq.h>

#define HB_MS 50
#define LIVENESS 10 // 500 ms: the test's single thread may be busy a while between heartbeats
#define EOS 257

static void *ctx;
static char prompts_path[256];
static char endpoint[64];

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

// ---- fake clients ---------------------------------------------------------------------------

#define INBOX 512
typedef struct {
    void *sock;                  // DEALER
    wire_t *w;                   // its wire endpoint
    Rlx__Role role;              // what it says it is
    uint32_t id;                 // worker_id from Welcome
    int silent;                  // sends no heartbeats
    int auto_score;              // reward worker: answers ScoreRequests at once
    uint64_t seq;                // actor: trajectory counter
    Rlx__Envelope *inbox[INBOX]; // received, not yet looked at (heartbeats skipped)
    int n;                       // in inbox
    int64_t next_hb;             // next heartbeat
    int scored;                  // auto_score: items scored
    uint64_t key;                // session_key from Welcome
} client_t;

#define MAX_CLIENTS 16
static client_t *clients[MAX_CLIENTS];
static int n_clients;

static void send_env(client_t *c, Rlx__Envelope *env) {
    int rc = wire_send(c->w, c->sock, NULL, env, NULL);
    TU_CHECK(rc == WIRE_OK, "client send %s: %s", wire_body_name(env->body_case),
             wire_strerror(rc));
}

// The reward a fake scorer gives: a function of the trajectory id, so tests can check the
// learner got the score of the right trajectory. bias tells workers apart.
static float reward_of(const Rlx__TrajectoryId *id, float bias) {
    return bias + (float)(id->seq % 7) * 0.125f;
}

static void score_reply(client_t *c, const Rlx__ScoreRequest *rq, float bias) {
    Rlx__ScoreResult *res = calloc(rq->n_items, sizeof *res);
    Rlx__ScoreResult **pr = calloc(rq->n_items, sizeof *pr);
    for (size_t i = 0; i < rq->n_items; i++) {
        rlx__score_result__init(&res[i]);
        res[i].id = rq->items[i]->id;
        res[i].reward = reward_of(rq->items[i]->id, bias);
        pr[i] = &res[i];
    }
    Rlx__ScoreReply rp = RLX__SCORE_REPLY__INIT;
    rp.request_id = rq->request_id;
    rp.n_results = rq->n_items;
    rp.results = pr;
    Rlx__Envelope env = RLX__ENVELOPE__INIT;
    env.body_case = RLX__ENVELOPE__BODY_SCORE_REPLY;
    env.score_reply = &rp;
    send_env(c, &env);
    free(res);
    free(pr);
}

static void send_heartbeat(client_t *c) {
    Rlx__Heartbeat hb = RLX__HEARTBEAT__INIT;
    hb.worker_id = c->id;
    Rlx__Envelope env = RLX__ENVELOPE__INIT;
    env.body_case = RLX__ENVELOPE__BODY_HEARTBEAT;
    env.sender_id = c->id;
    env.heartbeat = &hb;
    send_env(c, &env);
}

// Serves every client for ms: receives into inboxes, heartbeats, auto-scores.
static void pump(int ms) {
    int64_t until = now_ms() + ms;
    do {
        for (int i = 0; i < n_clients; i++) {
            client_t *c = clients[i];
            Rlx__Envelope *env = NULL;
            while (wire_recv(c->w, c->sock, 0, NULL, &env, NULL) == WIRE_OK) {
                if (env->body_case == RLX__ENVELOPE__BODY_HEARTBEAT) {
                    wire_free(&env);
                } else if (c->auto_score && env->body_case == RLX__ENVELOPE__BODY_SCORE_REQUEST) {
                    score_reply(c, env->score_request, 0.0f);
                    c->scored += (int)env->score_request->n_items;
                    wire_free(&env);
                } else if (c->n < INBOX) {
                    c->inbox[c->n++] = env;
                } else {
                    wire_free(&env);
                }
            }
            if (c->id && !c->silent && now_ms() >= c->next_hb) {
                send_heartbeat(c);
                c->next_hb = now_ms() + HB_MS;
            }
        }
        zmq_poll(NULL, 0, 2);
    } while (now_ms() < until);
}

// The first message of kind body in c's inbox (removed from it), or NULL.
static Rlx__Envelope *take_msg(client_t *c, Rlx__Envelope__BodyCase body) {
    for (int i = 0; i < c->n; i++)
        if (c->inbox[i]->body_case == body) {
            Rlx__Envelope *env = c->inbox[i];
            memmove(c->inbox + i, c->inbox + i + 1, (size_t)(c->n - i - 1) * sizeof *c->inbox);
            c->n--;
            return env;
        }
    return NULL;
}

// Pumps until c has a message of kind body, at most timeout_ms.
static Rlx__Envelope *expect(client_t *c, Rlx__Envelope__BodyCase body, int timeout_ms) {
    int64_t until = now_ms() + timeout_ms;
    for (;;) {
        Rlx__Envelope *env = take_msg(c, body);
        if (env || now_ms() >= until)
            return env;
        pump(5);
    }
}

static void send_hello_key(client_t *c, uint32_t worker_id, uint32_t credits, uint64_t key) {
    char *scorers[] = {"exact"};
    Rlx__Hello h = RLX__HELLO__INIT;
    h.session_key = key;
    h.role = c->role;
    h.worker_id = worker_id;
    h.name = "test-client";
    h.agent = "test_hub";
    if (c->role == RLX__ROLE__ROLE_REWARD_WORKER) {
        h.n_scorers = 1;
        h.scorers = scorers;
    }
    h.credits = credits;
    Rlx__Envelope env = RLX__ENVELOPE__INIT;
    env.body_case = RLX__ENVELOPE__BODY_HELLO;
    env.hello = &h;
    send_env(c, &env);
}

static void send_hello(client_t *c, uint32_t worker_id, uint32_t credits) {
    send_hello_key(c, worker_id, credits, 0);
}

// A connected DEALER that has not said Hello.
static client_t *client_raw(Rlx__Role role) {
    client_t *c = calloc(1, sizeof *c);
    c->role = role;
    c->w = wire_new("client", 0, "test-run");
    c->sock = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(c->sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_connect(c->sock, endpoint);
    clients[n_clients++] = c;
    return c;
}

// A joined client (Hello answered by Welcome); NULL on failure.
static client_t *client_join(Rlx__Role role, uint32_t credits, Rlx__Envelope **welcome) {
    client_t *c = client_raw(role);
    send_hello(c, 0, credits);
    Rlx__Envelope *w = expect(c, RLX__ENVELOPE__BODY_WELCOME, 2000);
    TU_CHECK(w != NULL, "no Welcome for a %d", (int)role);
    if (!w)
        return NULL;
    c->id = w->welcome->worker_id;
    TU_CHECK(c->id > 0, "worker_id 0 in Welcome");
    TU_CHECK(w->welcome->heartbeat_interval_ms == HB_MS, "heartbeat interval %u",
             w->welcome->heartbeat_interval_ms);
    TU_CHECK(w->welcome->session_key != 0, "Welcome without a session key");
    c->key = w->welcome->session_key;
    if (welcome)
        *welcome = w;
    else
        wire_free(&w);
    return c;
}

static void clients_close(void) {
    for (int i = 0; i < n_clients; i++) {
        client_t *c = clients[i];
        for (int j = 0; j < c->n; j++)
            wire_free(&c->inbox[j]);
        zmq_close(c->sock);
        wire_destroy(&c->w);
        free(c);
    }
    n_clients = 0;
}

static void work_request(client_t *c, uint32_t credits) {
    Rlx__WorkRequest wr = RLX__WORK_REQUEST__INIT;
    wr.credits = credits;
    Rlx__Envelope env = RLX__ENVELOPE__INIT;
    env.body_case = RLX__ENVELOPE__BODY_WORK_REQUEST;
    env.work_request = &wr;
    send_env(c, &env);
}

// ---- trajectories ---------------------------------------------------------------------------

// Storage for one fake trajectory.
typedef struct {
    Rlx__Trajectory t;
    Rlx__TrajectoryId id;
    Rlx__TextTrajectory x;
    uint32_t resp[4];
    float lp[4];
} fake_traj_t;

// A valid trajectory answering prompt p of item it, sample g (caller may spoil it).
static void fake_traj(fake_traj_t *f, client_t *actor, const Rlx__WorkItem *it, size_t p,
                      uint32_t g) {
    memset(f, 0, sizeof *f);
    rlx__trajectory__init(&f->t);
    rlx__trajectory_id__init(&f->id);
    rlx__text_trajectory__init(&f->x);
    f->id.actor_id = actor->id;
    f->id.seq = ++actor->seq;
    f->t.id = &f->id;
    f->t.work_id = it->work_id;
    f->t.prompt_id = it->prompts[p]->prompt_id;
    f->t.group_index = g;
    f->t.group_size = it->samples_per_prompt;
    f->t.policy_version = it->policy_version;
    f->t.kind_case = RLX__TRAJECTORY__KIND_TEXT;
    f->t.text = &f->x;
    f->x.n_prompt_tokens = it->prompts[p]->n_tokens;
    f->x.prompt_tokens = it->prompts[p]->tokens;
    f->resp[0] = '4';
    f->resp[1] = '2';
    f->resp[2] = EOS;
    f->lp[0] = -0.5f;
    f->lp[1] = -0.25f;
    f->lp[2] = 0.0f;
    f->x.n_response_tokens = 3;
    f->x.response_tokens = f->resp;
    f->x.n_logprobs = 3;
    f->x.logprobs = f->lp;
    f->x.finish_reason = RLX__FINISH_REASON__FINISH_REASON_STOP;
}

static void send_batch(client_t *actor, fake_traj_t *f, int n, uint64_t work_id) {
    Rlx__Trajectory **v = calloc((size_t)n, sizeof *v);
    for (int i = 0; i < n; i++)
        v[i] = &f[i].t;
    Rlx__TrajectoryBatch b = RLX__TRAJECTORY_BATCH__INIT;
    b.n_trajectories = (size_t)n;
    b.trajectories = v;
    b.work_id = work_id;
    Rlx__Envelope env = RLX__ENVELOPE__INIT;
    env.body_case = RLX__ENVELOPE__BODY_TRAJECTORY_BATCH;
    env.trajectory_batch = &b;
    send_env(actor, &env);
    free(v);
}

// Answers a WorkItem with all its samples, valid. Returns how many.
static int answer_item(client_t *actor, const Rlx__WorkItem *it) {
    int n = (int)(it->n_prompts * it->samples_per_prompt), k = 0;
    fake_traj_t *f = calloc((size_t)n, sizeof *f);
    for (size_t p = 0; p < it->n_prompts; p++)
        for (uint32_t g = 0; g < it->samples_per_prompt; g++)
            fake_traj(&f[k++], actor, it, p, g);
    send_batch(actor, f, n, it->work_id);
    free(f);
    return n;
}

// ---- the hub --------------------------------------------------------------------------------

static hub_config_t test_config(void) {
    hub_config_t c = hub_defaults();
    c.run_id = "test-run";
    c.train_prompts = prompts_path;
    c.prompts_per_item = 2;
    c.samples_per_prompt = 3;
    c.max_new_tokens = 4;
    c.heartbeat_ms = HB_MS;
    c.liveness = LIVENESS;
    c.score_deadline_ms = 2000;
    c.score_retries = 2;
    c.work_deadline_ms = 5000;
    c.score_batch = 4;
    c.seed = 7;
    return c;
}

static hub_t *start(hub_config_t *c) {
    for (int attempt = 0; attempt < 20; attempt++) {
        int port = 20000 + (int)((unsigned)rand() % 40000);
        static char bind[64];
        snprintf(bind, sizeof bind, "tcp://127.0.0.1:%d", port);
        snprintf(endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", port);
        c->bind = bind;
        hub_t *h = hub_start(c, ctx);
        if (h)
            return h;
    }
    TU_CHECK(0, "cannot start a hub");
    return NULL;
}

static int identity_holds(const hub_counters_t *k) {
    return k->sampled == k->delivered + k->dropped_invalid + k->dropped_score +
                             k->dropped_shutdown + k->in_flight;
}

// Takes trajectories until n arrived or timeout; checks whole groups and rewards (bias).
// Returns how many arrived.
static int take_all(hub_t *h, int n, int timeout_ms, float bias, int group_size) {
    int got = 0;
    int64_t until = now_ms() + timeout_ms;
    while (got < n && now_ms() < until) {
        pump(10);
        Rlx__Envelope *env = NULL;
        int m = hub_take(h, 100, 20, &env);
        TU_CHECK(m >= 0, "hub_take failed");
        if (m <= 0)
            continue;
        Rlx__TrajectoryBatch *b = env->trajectory_batch;
        TU_CHECK((int)b->n_trajectories == m, "count %d vs batch %zu", m, b->n_trajectories);
        for (size_t i = 0; i < b->n_trajectories; i++) {
            Rlx__Trajectory *t = b->trajectories[i];
            TU_CHECK(t->scored, "unscored trajectory delivered");
            TU_CHECK(fabsf(t->reward - reward_of(t->id, bias)) < 1e-6f,
                     "reward %g for (%u,%llu), want %g", t->reward, t->id->actor_id,
                     (unsigned long long)t->id->seq, reward_of(t->id, bias));
            TU_CHECK(t->kind_case == RLX__TRAJECTORY__KIND_TEXT && t->text->n_logprobs == 3,
                     "payload lost");
        }
        if (group_size > 0) { // whole groups, adjacent
            TU_CHECK(m % group_size == 0, "%d trajectories: not whole groups of %d", m, group_size);
            for (int g = 0; g + group_size <= m; g += group_size)
                for (int i = 1; i < group_size; i++) {
                    Rlx__Trajectory *a = b->trajectories[g], *x = b->trajectories[g + i];
                    TU_CHECK(a->work_id == x->work_id && a->prompt_id == x->prompt_id,
                             "group members not adjacent");
                }
        }
        got += m;
        wire_free(&env);
    }
    return got;
}

// ---- 1: the whole path ----------------------------------------------------------------------

static void test_flow(void) {
    char logpath[256];
    snprintf(logpath, sizeof logpath, "/tmp/test_hub_log_%d.trj", (int)getpid());
    unlink(logpath);
    hub_config_t c = test_config();
    c.trajectory_log = logpath;
    hub_t *h = start(&c);
    if (!h)
        return;
    client_t *actor = client_join(RLX__ROLE__ROLE_ACTOR, 2, NULL);
    client_t *rw = client_join(RLX__ROLE__ROLE_REWARD_WORKER, 2, NULL);
    client_t *obs = client_join(RLX__ROLE__ROLE_OBSERVER, 0, NULL);
    if (!actor || !rw || !obs)
        goto done;
    TU_CHECK(actor->id != rw->id && rw->id != obs->id, "worker ids not distinct");
    rw->auto_score = 1;
    work_request(actor, 2);
    int sent = 0;
    for (int i = 0; i < 2; i++) {
        Rlx__Envelope *w = expect(actor, RLX__ENVELOPE__BODY_WORK_ITEM, 2000);
        TU_CHECK(w != NULL, "work item %d did not come", i);
        if (!w)
            continue;
        Rlx__WorkItem *it = w->work_item;
        TU_CHECK(it->n_prompts == 2 && it->samples_per_prompt == 3 && it->max_new_tokens == 4,
                 "work item shape");
        TU_CHECK(it->n_stop_tokens == 1 && it->stop_tokens[0] == EOS, "stop token");
        TU_CHECK(it->prompts[0]->n_tokens > 1 && it->prompts[0]->tokens[0] == 256,
                 "prompt tokens start with BOS");
        TU_CHECK(it->prompts[0]->prompt_id != it->prompts[1]->prompt_id, "prompt twice in item");
        sent += answer_item(actor, it);
        wire_free(&w);
    }
    TU_CHECK(sent == 12, "sent %d", sent);
    int got = take_all(h, sent, 5000, 0.0f, 3);
    TU_CHECK(got == sent, "learner got %d of %d", got, sent);
    hub_counters_t k;
    TU_CHECK(hub_counters(h, &k, 1000) == 0, "hub_counters");
    TU_CHECK(k.sampled == 12 && k.delivered == 12 && k.in_flight == 0,
             "sampled %llu delivered "
             "%llu in_flight %llu",
             (unsigned long long)k.sampled, (unsigned long long)k.delivered,
             (unsigned long long)k.in_flight);
    TU_CHECK(k.dropped_invalid == 0 && k.dropped_score == 0 && k.duplicates == 0, "drops");
    TU_CHECK(identity_holds(&k), "accounting identity");
    TU_CHECK(k.actors == 1 && k.reward_workers == 1, "actors %u reward workers %u", k.actors,
             k.reward_workers);
    TU_CHECK(rw->scored == 12, "reward worker scored %d", rw->scored);

    // Run status to the observer after a report.
    Rlx__RunStatus st = RLX__RUN_STATUS__INIT;
    st.step = 17;
    st.reward_mean = 0.5f;
    TU_CHECK(hub_report(h, &st) == 0, "hub_report");
    Rlx__Envelope *rs = NULL; // observers also get one per heartbeat: wait for the report's
    for (int i = 0; i < 100; i++) {
        rs = expect(obs, RLX__ENVELOPE__BODY_RUN_STATUS, 2000);
        if (!rs || rs->run_status->step == 17)
            break;
        wire_free(&rs);
    }
    TU_CHECK(rs && rs->run_status->step == 17 && rs->run_status->sampled == 12 &&
                 rs->run_status->n_counters > 0 && rs->run_status->actors == 1,
             "run status");
    wire_free(&rs);

    // The trajectory log holds the delivered groups.
    hub_stop(&h);
    char err[256];
    wire_t *w = wire_new("test-log", 0, NULL);
    trajlog_t *tl = trajlog_open_read(logpath, err, sizeof err);
    TU_CHECK(tl != NULL, "trajectory log: %s", err);
    int logged = 0, records = 0;
    Rlx__Envelope *env;
    while (tl && trajlog_read(tl, w, &env, err, sizeof err) == 1) {
        records++;
        for (size_t i = 0; i < env->trajectory_batch->n_trajectories; i++)
            logged += env->trajectory_batch->trajectories[i]->scored;
        wire_free(&env);
    }
    TU_CHECK(logged == 12 && records == 4, "log: %d scored trajectories in %d records", logged,
             records);
    trajlog_close(&tl);
    wire_destroy(&w);
    unlink(logpath);
done:
    hub_stop(&h);
    clients_close();
}

// ---- 2: backpressure ------------------------------------------------------------------------

static int count_items(client_t *actor, int ms, int answer) {
    int n = 0;
    pump(ms);
    Rlx__Envelope *w;
    while ((w = take_msg(actor, RLX__ENVELOPE__BODY_WORK_ITEM))) {
        if (answer)
            answer_item(actor, w->work_item);
        wire_free(&w);
        n++;
    }
    return n;
}

static void test_backpressure(void) {
    hub_config_t c = test_config();
    c.prompts_per_item = 1;
    c.samples_per_prompt = 2;
    c.max_learner_queue = 4;
    c.max_in_flight = 100;
    hub_t *h = start(&c);
    if (!h)
        return;
    client_t *actor = client_join(RLX__ROLE__ROLE_ACTOR, 2, NULL);
    client_t *rw = client_join(RLX__ROLE__ROLE_REWARD_WORKER, 4, NULL);
    if (!actor || !rw)
        goto done;
    rw->auto_score = 1;
    work_request(actor, 2);
    int n = count_items(actor, 300, 1);
    TU_CHECK(n == 2, "%d items before the queue filled", n);
    hub_counters_t k = {0};
    for (int i = 0; i < 100 && k.learner_queue < 4; i++) {
        pump(10);
        hub_counters(h, &k, 1000);
    }
    TU_CHECK(k.learner_queue == 4, "learner queue %u", k.learner_queue);
    work_request(actor, 5);
    n = count_items(actor, 400, 0);
    TU_CHECK(n == 0, "%d work items went out with the learner queue full", n);
    Rlx__Envelope *env = NULL;
    TU_CHECK(hub_take(h, 100, 500, &env) == 4, "take after backpressure");
    wire_free(&env);
    n = count_items(actor, 300, 0);
    TU_CHECK(n == 5, "%d of 5 asked items after hub_take", n);
    hub_stop(&h);
    clients_close();

    // The in-flight limit alone: 4 trajectories = 2 items of 1 x 2.
    c.max_in_flight = 4;
    h = start(&c);
    if (!h)
        return;
    actor = client_join(RLX__ROLE__ROLE_ACTOR, 5, NULL);
    if (!actor)
        goto done;
    work_request(actor, 5);
    n = count_items(actor, 400, 0);
    TU_CHECK(n == 2, "%d items with max_in_flight 4", n);
done:
    hub_stop(&h);
    clients_close();
}

// ---- 3: a reward worker goes silent holding a request -------------------------------------

static void test_silent_worker(void) {
    hub_config_t c = test_config();
    c.prompts_per_item = 1;
    c.samples_per_prompt = 2;
    c.score_deadline_ms = 10000; // the requeue must come from the death, not the deadline
    hub_t *h = start(&c);
    if (!h)
        return;
    client_t *actor = client_join(RLX__ROLE__ROLE_ACTOR, 1, NULL);
    client_t *a = client_join(RLX__ROLE__ROLE_REWARD_WORKER, 1, NULL);
    if (!actor || !a)
        goto done;
    work_request(actor, 1);
    Rlx__Envelope *w = expect(actor, RLX__ENVELOPE__BODY_WORK_ITEM, 2000);
    TU_CHECK(w != NULL, "no work");
    if (!w)
        goto done;
    answer_item(actor, w->work_item);
    wire_free(&w);
    Rlx__Envelope *rq = expect(a, RLX__ENVELOPE__BODY_SCORE_REQUEST, 2000);
    TU_CHECK(rq && rq->score_request->n_items == 2, "first worker's request");
    if (!rq)
        goto done;
    a->silent = 1; // holds the request, stops heartbeating
    client_t *b = client_join(RLX__ROLE__ROLE_REWARD_WORKER, 1, NULL);
    if (!b) {
        wire_free(&rq);
        goto done;
    }
    b->auto_score = 1;
    int64_t t0 = now_ms();
    int got = take_all(h, 2, 3000, 0.0f, 2);
    int64_t waited = now_ms() - t0;
    TU_CHECK(got == 2, "learner got %d of 2 after the worker went silent", got);
    TU_CHECK(waited >= (int64_t)HB_MS * (LIVENESS - 1),
             "requeued after %lld ms, before the "
             "liveness timeout",
             (long long)waited);
    TU_CHECK(b->scored == 2, "second worker scored %d", b->scored);

    // The silent one wakes up and answers: it was forgotten (NOT_JOINED), rejoins under its
    // id, answers again: the reply is late and ignored.
    score_reply(a, rq->score_request, 50.0f);
    Rlx__Envelope *e = expect(a, RLX__ENVELOPE__BODY_ERROR, 2000);
    TU_CHECK(e && e->error->code == RLX__ERROR_CODE__ERROR_CODE_NOT_JOINED, "NOT_JOINED");
    wire_free(&e);
    uint32_t old_id = a->id;
    send_hello(a, old_id, 1);
    Rlx__Envelope *wel = expect(a, RLX__ENVELOPE__BODY_WELCOME, 2000);
    TU_CHECK(wel && wel->welcome->worker_id == old_id, "rejoined under the same id");
    wire_free(&wel);
    a->silent = 0;
    score_reply(a, rq->score_request, 50.0f);
    wire_free(&rq);
    hub_counters_t k = {0};
    for (int i = 0; i < 50 && k.late_replies == 0; i++) {
        pump(10);
        hub_counters(h, &k, 1000);
    }
    TU_CHECK(k.late_replies == 1, "late replies %llu", (unsigned long long)k.late_replies);
    TU_CHECK(k.sampled == 2 && k.delivered == 2 && k.in_flight == 0 && k.dropped_score == 0,
             "nothing lost: sampled %llu delivered %llu", (unsigned long long)k.sampled,
             (unsigned long long)k.delivered);
    TU_CHECK(k.score_requeues == 2, "requeues %llu", (unsigned long long)k.score_requeues);
    TU_CHECK(identity_holds(&k), "accounting identity");
done:
    hub_stop(&h);
    clients_close();
}

// ---- 4: bad input -----------------------------------------------------------------------------

static void send_raw(client_t *c, const void *buf, size_t len) {
    TU_CHECK(zmq_send(c->sock, buf, len, 0) == (int)len, "raw send");
}

static void expect_error(client_t *c, Rlx__ErrorCode code, const char *what) {
    Rlx__Envelope *e = expect(c, RLX__ENVELOPE__BODY_ERROR, 2000);
    TU_CHECK(e && e->error->code == code, "%s: error %d, want %d", what,
             e ? (int)e->error->code : -1, (int)code);
    if (e)
        TU_CHECK(e->error->message && e->error->message[0], "%s: empty error message", what);
    wire_free(&e);
}

static void test_bad_input(void) {
    hub_config_t c = test_config();
    c.samples_per_prompt = 2;
    hub_t *h = start(&c);
    if (!h)
        return;
    client_t *actor = client_join(RLX__ROLE__ROLE_ACTOR, 1, NULL);
    client_t *rw = client_join(RLX__ROLE__ROLE_REWARD_WORKER, 2, NULL);
    if (!actor || !rw)
        goto done;
    rw->auto_score = 1;
    work_request(actor, 1);
    Rlx__Envelope *w = expect(actor, RLX__ENVELOPE__BODY_WORK_ITEM, 2000);
    TU_CHECK(w != NULL, "no work");
    if (!w)
        goto done;
    const Rlx__WorkItem *it = w->work_item;
    fake_traj_t f[6];
    fake_traj(&f[0], actor, it, 0, 0);
    f[0].x.n_logprobs = 2; // wrong logprobs count
    fake_traj(&f[1], actor, it, 0, 1);
    fake_traj(&f[2], actor, it, 1, 0);
    f[2].resp[1] = 999; // out of the vocabulary
    fake_traj(&f[3], actor, it, 1, 1);
    fake_traj(&f[4], actor, it, 1, 1);
    f[4].t.work_id = 9999; // unknown work item
    f[4].t.group_index = 0;
    send_batch(actor, f, 5, 0);
    fake_traj_t dup = f[1]; // the same id again
    dup.t.id = &dup.id;
    dup.t.text = &dup.x;
    dup.x.response_tokens = dup.resp;
    dup.x.logprobs = dup.lp;
    send_batch(actor, &dup, 1, it->work_id); // and completes the item
    wire_free(&w);
    int got = take_all(h, 2, 3000, 0.0f, 1);
    TU_CHECK(got == 2, "learner got %d of the 2 valid trajectories", got);
    hub_counters_t k = {0};
    hub_counters(h, &k, 1000);
    TU_CHECK(k.sampled == 5 && k.dropped_invalid == 3 && k.duplicates == 1 && k.delivered == 2,
             "sampled %llu invalid %llu duplicates %llu delivered %llu",
             (unsigned long long)k.sampled, (unsigned long long)k.dropped_invalid,
             (unsigned long long)k.duplicates, (unsigned long long)k.delivered);
    TU_CHECK(identity_holds(&k) && k.in_flight == 0, "accounting identity");

    // Seqs the actor cannot have reached (it was asked for 4 trajectories) are refused as
    // invalid and never enter the duplicate window (issue 8: 64 trajectories with seq 10^9
    // made the hub drop the actor's real ones as duplicates); the retry above still was one.
    fake_traj_t late[3];
    uint64_t seqs[3] = {1000000, 1000000 - 70000, 999999};
    for (int i = 0; i < 3; i++) {
        late[i] = f[1];
        late[i].t.id = &late[i].id;
        late[i].t.text = &late[i].x;
        late[i].x.response_tokens = late[i].resp;
        late[i].x.logprobs = late[i].lp;
        late[i].x.prompt_tokens = late[i].resp; // the work item's tokens are freed by now
        late[i].x.n_prompt_tokens = 1;
        late[i].id.seq = seqs[i];
        send_batch(actor, &late[i], 1, 0); // its work item is completed: refused
    }
    for (int i = 0; i < 100 && k.sampled + k.duplicates < 11; i++) {
        pump(10);
        hub_counters(h, &k, 1000);
    }
    TU_CHECK(k.sampled == 8 && k.dropped_invalid == 6 && k.duplicates == 1,
             "far seqs: sampled %llu invalid %llu duplicates %llu", (unsigned long long)k.sampled,
             (unsigned long long)k.dropped_invalid, (unsigned long long)k.duplicates);

    // Refusals of the wire layer: each answered with an Error, counted.
    uint64_t wire_before = k.wire_errors;
    send_raw(actor, "\x08\x02\xff\xff\xff garbage", 14);
    expect_error(actor, RLX__ERROR_CODE__ERROR_CODE_MALFORMED, "malformed bytes");
    Rlx__Heartbeat hb = RLX__HEARTBEAT__INIT;
    Rlx__Envelope env = RLX__ENVELOPE__INIT;
    env.body_case = RLX__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &hb;
    env.protocol_version = WIRE_PROTOCOL_VERSION + 1;
    env.seq = 5;
    uint8_t *buf;
    size_t len;
    wire_encode_raw(&env, &buf, &len);
    send_raw(actor, buf, len);
    free(buf);
    expect_error(actor, RLX__ERROR_CODE__ERROR_CODE_VERSION, "wrong version");
    Rlx__Envelope none = RLX__ENVELOPE__INIT;
    none.protocol_version = WIRE_PROTOCOL_VERSION;
    none.seq = 6;
    wire_encode_raw(&none, &buf, &len);
    send_raw(actor, buf, len);
    free(buf);
    expect_error(actor, RLX__ERROR_CODE__ERROR_CODE_UNKNOWN_TYPE, "unknown type");
    size_t big = WIRE_DEFAULT_MAX_SIZE + 1024;
    buf = calloc(big, 1);
    buf[0] = 0x08;
    buf[1] = 0x01;
    send_raw(actor, buf, big);
    free(buf);
    expect_error(actor, RLX__ERROR_CODE__ERROR_CODE_TOO_LARGE, "oversized");
    env.protocol_version = 0;
    env.seq = 0;
    env.run_id = "another-run";
    send_env(actor, &env);
    expect_error(actor, RLX__ERROR_CODE__ERROR_CODE_WRONG_RUN, "wrong run");

    // Refusals of the hub: wrong role, not joined.
    Rlx__ScoreReply sr = RLX__SCORE_REPLY__INIT;
    Rlx__Envelope sre = RLX__ENVELOPE__INIT;
    sre.body_case = RLX__ENVELOPE__BODY_SCORE_REPLY;
    sre.score_reply = &sr;
    send_env(actor, &sre);
    expect_error(actor, RLX__ERROR_CODE__ERROR_CODE_BAD_REQUEST, "score reply from an actor");
    client_t *stranger = client_raw(RLX__ROLE__ROLE_ACTOR);
    work_request(stranger, 1);
    expect_error(stranger, RLX__ERROR_CODE__ERROR_CODE_NOT_JOINED, "not joined");

    // And the hub keeps serving: a good request is answered.
    work_request(actor, 1);
    w = expect(actor, RLX__ENVELOPE__BODY_WORK_ITEM, 2000);
    TU_CHECK(w != NULL, "no work after the bad messages");
    wire_free(&w);
    hub_counters(h, &k, 1000);
    TU_CHECK(k.wire_errors == wire_before + 5, "wire errors %llu, want %llu",
             (unsigned long long)k.wire_errors, (unsigned long long)wire_before + 5);
done:
    hub_stop(&h);
    clients_close();
}

// ---- 4b: allowed tokens ------------------------------------------------------------------------

static void test_allowed_tokens(void) {
    hub_config_t c = test_config();
    c.samples_per_prompt = 2;
    c.allowed_tokens[0] = '2';
    c.allowed_tokens[1] = '4';
    c.n_allowed_tokens = 2;
    hub_t *h = start(&c);
    if (!h)
        return;
    client_t *actor = client_join(RLX__ROLE__ROLE_ACTOR, 1, NULL);
    client_t *rw = client_join(RLX__ROLE__ROLE_REWARD_WORKER, 2, NULL);
    if (!actor || !rw)
        goto done;
    rw->auto_score = 1;
    work_request(actor, 1);
    Rlx__Envelope *w = expect(actor, RLX__ENVELOPE__BODY_WORK_ITEM, 2000);
    TU_CHECK(w != NULL, "no work");
    if (!w)
        goto done;
    const Rlx__WorkItem *it = w->work_item;
    TU_CHECK(it->n_allowed_tokens == 2 && it->allowed_tokens[0] == '2' &&
                 it->allowed_tokens[1] == '4',
             "the work item carries %zu allowed tokens", it->n_allowed_tokens);
    fake_traj_t f[4];
    for (int i = 0; i < 4; i++) {
        fake_traj(&f[i], actor, it, (size_t)(i / 2), (uint32_t)(i % 2));
        f[i].resp[2] = '4'; // "424": only allowed tokens
    }
    f[1].resp[2] = EOS; // an actor that ignores allowed_tokens: the old "42" + EOS
    f[3].resp[0] = '5';
    send_batch(actor, f, 4, it->work_id);
    wire_free(&w);
    int got = take_all(h, 2, 3000, 0.0f, 0);
    TU_CHECK(got == 2, "learner got %d of the 2 valid trajectories", got);
    hub_counters_t k = {0};
    hub_counters(h, &k, 1000);
    TU_CHECK(k.sampled == 4 && k.dropped_invalid == 2 && k.delivered == 2,
             "sampled %llu invalid %llu delivered %llu", (unsigned long long)k.sampled,
             (unsigned long long)k.dropped_invalid, (unsigned long long)k.delivered);
done:
    hub_stop(&h);
    clients_close();
}

// ---- 5: weights -------------------------------------------------------------------------------

static void weight_request(client_t *c, uint64_t version, uint32_t first, uint32_t n) {
    Rlx__WeightRequest q = RLX__WEIGHT_REQUEST__INIT;
    q.version = version;
    q.first_chunk = first;
    q.num_chunks = n;
    Rlx__Envelope env = RLX__ENVELOPE__INIT;
    env.body_case = RLX__ENVELOPE__BODY_WEIGHT_REQUEST;
    env.weight_request = &q;
    send_env(c, &env);
}

static void test_weights(void) {
    hub_config_t c = test_config();
    hub_t *h = start(&c);
    if (!h)
        return;
    client_t *actor = client_join(RLX__ROLE__ROLE_ACTOR, 1, NULL);
    if (!actor)
        goto done;
    size_t len = 3500000;
    uint8_t *blob = malloc(len), *got = calloc(len, 1);
    for (size_t i = 0; i < len; i++)
        blob[i] = (uint8_t)(i * 2654435761u >> 13);
    uint32_t crc = (uint32_t)crc32(0L, blob, (uInt)len);
    TU_CHECK(hub_publish_weights(h, 1, blob, len) == 0, "publish v1");
    Rlx__Envelope *a = expect(actor, RLX__ENVELOPE__BODY_WEIGHT_ANNOUNCE, 2000);
    TU_CHECK(a != NULL, "no announce");
    if (a) {
        Rlx__WeightAnnounce *wa = a->weight_announce;
        TU_CHECK(wa->version == 1 && wa->total_bytes == len && wa->num_chunks == 4 &&
                     wa->chunk_bytes == WIRE_WEIGHT_CHUNK_BYTES && wa->crc32 == crc &&
                     wa->kind == RLX__TRAJECTORY_KIND__TRAJECTORY_KIND_TEXT,
                 "announce v%llu %llu bytes %u chunks crc %08x", (unsigned long long)wa->version,
                 (unsigned long long)wa->total_bytes, wa->num_chunks, wa->crc32);
        wire_free(&a);
    }
    weight_request(actor, 1, 0, 100); // more than exist: the hub sends what there is
    int chunks = 0;
    for (int i = 0; i < 4; i++) {
        Rlx__Envelope *e = expect(actor, RLX__ENVELOPE__BODY_WEIGHT_CHUNK, 2000);
        TU_CHECK(e != NULL, "chunk %d missing", i);
        if (!e)
            break;
        Rlx__WeightChunk *ch = e->weight_chunk;
        TU_CHECK(ch->version == 1 && ch->offset == (uint64_t)ch->index * WIRE_WEIGHT_CHUNK_BYTES &&
                     ch->offset + ch->data.len <= len,
                 "chunk header");
        TU_CHECK(ch->crc32 == (uint32_t)crc32(0L, ch->data.data, (uInt)ch->data.len), "chunk crc");
        if (ch->offset + ch->data.len <= len)
            memcpy(got + ch->offset, ch->data.data, ch->data.len);
        chunks++;
        wire_free(&e);
    }
    TU_CHECK(chunks == 4 && (uint32_t)crc32(0L, got, (uInt)len) == crc &&
                 memcmp(got, blob, len) == 0,
             "reassembled weights differ");
    blob[0] ^= 1;
    TU_CHECK(hub_publish_weights(h, 2, blob, len) == 0, "publish v2");
    TU_CHECK(hub_publish_weights(h, 3, blob, 1000) == 0, "publish v3");
    TU_CHECK(hub_publish_weights(h, 3, blob, 1000) != 0, "v3 again must be refused");
    weight_request(actor, 1, 0, 1);
    expect_error(actor, RLX__ERROR_CODE__ERROR_CODE_UNAVAILABLE, "old version");
    weight_request(actor, 2, 3, 1); // the previous version is still served
    Rlx__Envelope *e = expect(actor, RLX__ENVELOPE__BODY_WEIGHT_CHUNK, 2000);
    TU_CHECK(e && e->weight_chunk->version == 2 && e->weight_chunk->index == 3 &&
                 e->weight_chunk->data.len == len - 3 * WIRE_WEIGHT_CHUNK_BYTES,
             "last chunk of v2");
    wire_free(&e);
    weight_request(actor, 3, 1, 1); // v3 has one chunk
    expect_error(actor, RLX__ERROR_CODE__ERROR_CODE_BAD_REQUEST, "chunk out of range");
    Rlx__Envelope *wel = NULL;
    client_t *late = client_join(RLX__ROLE__ROLE_ACTOR, 1, &wel);
    TU_CHECK(late && wel && wel->welcome->policy_version == 3 && wel->welcome->weights &&
                 wel->welcome->weights->total_bytes == 1000 &&
                 wel->welcome->weights->kind == RLX__TRAJECTORY_KIND__TRAJECTORY_KIND_TEXT,
             "Welcome carries the newest weights, of the run's kind");
    wire_free(&wel);
    free(blob);
    free(got);
done:
    hub_stop(&h);
    clients_close();
}

// ---- 6: drain -------------------------------------------------------------------------------

static void test_drain(void) {
    hub_config_t c = test_config();
    c.prompts_per_item = 2;
    c.samples_per_prompt = 2;
    hub_t *h = start(&c);
    if (!h)
        return;
    client_t *actor = client_join(RLX__ROLE__ROLE_ACTOR, 1, NULL);
    if (!actor)
        goto done;
    work_request(actor, 1);
    Rlx__Envelope *w = expect(actor, RLX__ENVELOPE__BODY_WORK_ITEM, 2000);
    TU_CHECK(w != NULL, "no work");
    if (!w)
        goto done;
    answer_item(actor, w->work_item);
    hub_counters_t k = {0};
    for (int i = 0; i < 100 && k.sampled < 4; i++) {
        pump(10);
        hub_counters(h, &k, 1000);
    }
    TU_CHECK(k.sampled == 4 && k.in_flight == 4 && k.score_queue == 4,
             "before drain: sampled "
             "%llu in flight %llu",
             (unsigned long long)k.sampled, (unsigned long long)k.in_flight);
    int64_t t0 = now_ms();
    TU_CHECK(hub_drain(h, 200, &k) == 0, "hub_drain");
    TU_CHECK(now_ms() - t0 < 2000, "drain took %lld ms", (long long)(now_ms() - t0));
    TU_CHECK(k.in_flight == 0 && k.dropped_shutdown == 4 && identity_holds(&k),
             "after drain: in flight %llu, shutdown %llu", (unsigned long long)k.in_flight,
             (unsigned long long)k.dropped_shutdown);
    // No more work; late trajectories are dropped as shutdown.
    work_request(actor, 1);
    TU_CHECK(count_items(actor, 200, 0) == 0, "work after drain");
    fake_traj_t f;
    fake_traj(&f, actor, w->work_item, 1, 0);
    f.id.seq = 1000;
    send_batch(actor, &f, 1, 0);
    wire_free(&w);
    for (int i = 0; i < 100 && k.sampled < 5; i++) {
        pump(10);
        hub_counters(h, &k, 1000);
    }
    TU_CHECK(k.sampled == 5 && k.in_flight == 0 && k.dropped_shutdown == 5 && identity_holds(&k),
             "late trajectory after drain");
done:
    hub_stop(&h);
    clients_close();
}

// ---- 7: adversarial clients (issue 8, section 4) ------------------------------------------

// Pumps until the hub has counted n trajectories as sampled (or 2 s), returns the counters.
static hub_counters_t wait_sampled(hub_t *h, uint64_t n) {
    hub_counters_t k = {0};
    for (int i = 0; i < 200; i++) {
        pump(10);
        hub_counters(h, &k, 1000);
        if (k.sampled + k.duplicates >= n)
            break;
    }
    return k;
}

// Impossible log-probs (-1e30 poisoned the learner's PPO ratios), versions never published,
// raw bytes that are not UTF-8.
static void test_bad_trajectories(void) {
    hub_config_t c = test_config();
    c.samples_per_prompt = 3;
    hub_t *h = start(&c);
    if (!h)
        return;
    client_t *actor = client_join(RLX__ROLE__ROLE_ACTOR, 1, NULL);
    client_t *rw = client_join(RLX__ROLE__ROLE_REWARD_WORKER, 2, NULL);
    if (!actor || !rw)
        goto done;
    work_request(actor, 1);
    Rlx__Envelope *w = expect(actor, RLX__ENVELOPE__BODY_WORK_ITEM, 2000);
    TU_CHECK(w != NULL, "no work");
    if (!w)
        goto done;
    const Rlx__WorkItem *it = w->work_item;
    fake_traj_t f[6];
    for (int i = 0; i < 6; i++)
        fake_traj(&f[i], actor, it, (size_t)(i / 3), (uint32_t)(i % 3));
    f[0].lp[1] = -1e30f;                // finite, but no fp32 sampler draws it
    f[1].lp[0] = -127.0f;               // unlikely, but possible: accepted
    f[2].t.policy_version = 1ull << 40; // never published
    f[3].resp[0] = 0xC3;                // raw bytes: C3 28 is no UTF-8, FF never is
    f[3].resp[1] = 0x28;
    f[3].resp[2] = 0xFF;
    f[4].lp[2] = nanf("");
    send_batch(actor, f, 6, it->work_id);
    wire_free(&w);
    hub_counters_t k = wait_sampled(h, 6);
    TU_CHECK(k.sampled == 6 && k.dropped_invalid == 3 && k.future_version == 1,
             "sampled %llu invalid %llu (want 3: -1e30, 2^40, NaN) future_version %llu",
             (unsigned long long)k.sampled, (unsigned long long)k.dropped_invalid,
             (unsigned long long)k.future_version);
    // The reward worker gets the 3 valid ones; every response_text is valid UTF-8 (Python's
    // protobuf refuses a whole ScoreRequest otherwise).
    int items = 0, utf8_ok = 0, replaced = 0;
    for (int i = 0; i < 20 && items < 3; i++) {
        Rlx__Envelope *rq = expect(rw, RLX__ENVELOPE__BODY_SCORE_REQUEST, 200);
        if (!rq)
            continue;
        for (size_t j = 0; j < rq->score_request->n_items; j++) {
            const char *txt = rq->score_request->items[j]->response_text;
            items++;
            utf8_ok += txt && wire_utf8_valid(txt, strlen(txt));
            replaced += txt && strcmp(txt, "\xEF\xBF\xBD(\xEF\xBF\xBD") == 0;
        }
        score_reply(rw, rq->score_request, 0.0f);
        wire_free(&rq);
    }
    TU_CHECK(items == 3 && utf8_ok == 3 && replaced == 1,
             "%d items scored, %d valid UTF-8, %d with C3 28 FF as U+FFFD ( U+FFFD", items, utf8_ok,
             replaced);
    int got = take_all(h, 3, 3000, 0.0f, 0);
    TU_CHECK(got == 3, "learner got %d of the 3 valid trajectories", got);
done:
    hub_stop(&h);
    clients_close();
}

// A forged Hello under a real actor's id, far-future seqs, another connection using its id.
static void test_forged_worker(void) {
    hub_config_t c = test_config();
    c.samples_per_prompt = 2;
    hub_t *h = start(&c);
    if (!h)
        return;
    client_t *actor = client_join(RLX__ROLE__ROLE_ACTOR, 1, NULL);
    client_t *rw = client_join(RLX__ROLE__ROLE_REWARD_WORKER, 2, NULL);
    if (!actor || !rw)
        goto done;
    rw->auto_score = 1;
    // Hellos claiming the actor's id without its key (none, a wrong one): refused.
    client_t *forger = client_raw(RLX__ROLE__ROLE_ACTOR);
    send_hello(forger, actor->id, 1);
    expect_error(forger, RLX__ERROR_CODE__ERROR_CODE_BAD_REQUEST, "Hello with a stolen id");
    send_hello_key(forger, actor->id, 1, actor->key + 1);
    expect_error(forger, RLX__ERROR_CODE__ERROR_CODE_BAD_REQUEST, "Hello with a wrong key");
    hub_counters_t k = {0};
    hub_counters(h, &k, 1000);
    TU_CHECK(k.hello_refused == 2 && k.actors == 1, "hello_refused %llu actors %u",
             (unsigned long long)k.hello_refused, k.actors);
    // Messages under the actor's id from the forger's connection: refused, counted.
    Rlx__WorkRequest wr = RLX__WORK_REQUEST__INIT;
    wr.credits = 1;
    Rlx__Envelope env = RLX__ENVELOPE__INIT;
    env.body_case = RLX__ENVELOPE__BODY_WORK_REQUEST;
    env.work_request = &wr;
    env.sender_id = actor->id;
    send_env(forger, &env);
    expect_error(forger, RLX__ERROR_CODE__ERROR_CODE_NOT_JOINED, "another connection's id");
    hub_counters(h, &k, 1000);
    TU_CHECK(k.peer_mismatch == 1, "peer_mismatch %llu", (unsigned long long)k.peer_mismatch);
    // A Hello with an id the hub never assigned gets a fresh one.
    send_hello(forger, 999, 1);
    Rlx__Envelope *wel = expect(forger, RLX__ENVELOPE__BODY_WELCOME, 2000);
    TU_CHECK(wel && wel->welcome->worker_id != 999 && wel->welcome->worker_id != actor->id &&
                 wel->welcome->worker_id != rw->id,
             "a never-assigned id was granted (%u)", wel ? wel->welcome->worker_id : 0);
    if (wel)
        forger->id = wel->welcome->worker_id;
    wire_free(&wel);

    // 64 trajectories with seq 10^9 under the actor's own id and connection: refused as
    // invalid, and its real trajectories after them are not duplicates.
    fake_traj_t far[64];
    Rlx__WorkItem none = RLX__WORK_ITEM__INIT;
    Rlx__Prompt p0 = RLX__PROMPT__INIT, *pp = &p0;
    none.work_id = 12345;
    none.n_prompts = 1;
    none.prompts = &pp;
    none.samples_per_prompt = 2;
    uint64_t real_seq = actor->seq;
    for (int i = 0; i < 64; i++) {
        actor->seq = 1000000000ull + (uint64_t)i - 1;
        fake_traj(&far[i], actor, &none, 0, 0);
    }
    actor->seq = real_seq;
    send_batch(actor, far, 64, 0);
    hub_counters_t k0 = wait_sampled(h, 64);
    TU_CHECK(k0.sampled == 64 && k0.dropped_invalid == 64, "far seqs: sampled %llu invalid %llu",
             (unsigned long long)k0.sampled, (unsigned long long)k0.dropped_invalid);
    work_request(actor, 2);
    int sent = 0;
    for (int i = 0; i < 2; i++) {
        Rlx__Envelope *w = expect(actor, RLX__ENVELOPE__BODY_WORK_ITEM, 2000);
        TU_CHECK(w != NULL, "work item %d did not come", i);
        if (!w)
            continue;
        sent += answer_item(actor, w->work_item);
        wire_free(&w);
    }
    int got = take_all(h, sent, 3000, 0.0f, 2);
    hub_counters(h, &k, 1000);
    TU_CHECK(got == sent && sent == 8 && k.duplicates == 0,
             "after far seqs: learner got %d of %d, duplicates %llu", got, sent,
             (unsigned long long)k.duplicates);

    // The real actor rejoins from a new connection with its key: same id.
    client_t *again = client_raw(RLX__ROLE__ROLE_ACTOR);
    send_hello_key(again, actor->id, 1, actor->key);
    wel = expect(again, RLX__ENVELOPE__BODY_WELCOME, 2000);
    TU_CHECK(wel && wel->welcome->worker_id == actor->id && wel->welcome->session_key == actor->key,
             "rejoin with the key: id %u", wel ? wel->welcome->worker_id : 0);
    wire_free(&wel);
    TU_CHECK(identity_holds(&k), "accounting identity");
done:
    hub_stop(&h);
    clients_close();
}

// RunStatus to observers before and without the learner's report (it was always step 0,
// samples 0: the learners never called hub_report, and the hub filled in nothing).
static void test_status(void) {
    hub_config_t c = test_config();
    hub_t *h = start(&c);
    if (!h)
        return;
    client_t *actor = client_join(RLX__ROLE__ROLE_ACTOR, 1, NULL);
    client_t *rw = client_join(RLX__ROLE__ROLE_REWARD_WORKER, 2, NULL);
    client_t *obs = client_join(RLX__ROLE__ROLE_OBSERVER, 0, NULL);
    if (!actor || !rw || !obs)
        goto done;
    rw->auto_score = 1;
    work_request(actor, 1);
    Rlx__Envelope *w = expect(actor, RLX__ENVELOPE__BODY_WORK_ITEM, 2000);
    TU_CHECK(w != NULL, "no work");
    if (!w)
        goto done;
    int sent = answer_item(actor, w->work_item);
    wire_free(&w);
    int got = take_all(h, sent, 3000, 0.0f, 3);
    TU_CHECK(got == sent, "learner got %d of %d", got, sent);
    Rlx__Envelope *rs = NULL;
    for (int i = 0; i < 100; i++) { // one per heartbeat: wait for one after the delivery
        rs = expect(obs, RLX__ENVELOPE__BODY_RUN_STATUS, 2000);
        if (!rs || rs->run_status->samples == (uint64_t)sent)
            break;
        wire_free(&rs);
    }
    TU_CHECK(rs && rs->run_status->samples == (uint64_t)sent &&
                 rs->run_status->sampled == (uint64_t)sent,
             "run status without a report: samples %llu, want %d",
             rs ? (unsigned long long)rs->run_status->samples : 0ull, sent);
    wire_free(&rs);
    Rlx__RunStatus st = RLX__RUN_STATUS__INIT; // a report names the step and what was trained
    st.step = 3;
    st.samples = 5;
    TU_CHECK(hub_report(h, &st) == 0, "hub_report");
    for (int i = 0; i < 100; i++) {
        rs = expect(obs, RLX__ENVELOPE__BODY_RUN_STATUS, 2000);
        if (!rs || rs->run_status->step == 3)
            break;
        wire_free(&rs);
    }
    TU_CHECK(rs && rs->run_status->step == 3 && rs->run_status->samples == 5,
             "run status after a report");
    wire_free(&rs);
done:
    hub_stop(&h);
    clients_close();
}

int main(void) {
    srand((unsigned)getpid() ^ (unsigned)time(NULL));
    snprintf(prompts_path, sizeof prompts_path, "/tmp/test_hub_prompts_%d.tsv", (int)getpid());
    FILE *f = fopen(prompts_path, "w");
    if (!f) {
        fprintf(stderr, "test_hub: cannot write %s\n", prompts_path);
        return 1;
    }
    for (int i = 0; i < 20; i++)
        fprintf(f, "%02d+%02d=\t%d\n", i * 3 % 100, i * 7 % 100, i * 3 % 100 + i * 7 % 100);
    fclose(f);
    ctx = zmq_ctx_new();
    struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {{"flow", test_flow},
                 {"backpressure", test_backpressure},
                 {"silent reward worker", test_silent_worker},
                 {"bad input", test_bad_input},
                 {"allowed tokens", test_allowed_tokens},
                 {"weights", test_weights},
                 {"drain", test_drain},
                 {"bad trajectories", test_bad_trajectories},
                 {"forged worker", test_forged_worker},
                 {"status", test_status}};
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        int before = tu_failures;
        int64_t t0 = now_ms();
        tests[i].fn();
        printf("test_hub: %-22s %s (%lld ms)\n", tests[i].name,
               tu_failures == before ? "ok" : "FAILED", (long long)(now_ms() - t0));
        fflush(stdout);
    }
    zmq_ctx_term(ctx);
    unlink(prompts_path);
    return tu_finish("test_hub");
}
