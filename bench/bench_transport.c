// bench_transport.c: rlx-bench-transport, trajectories per second through the real hub
// (learner/hub.h) over the real protocol (proto/rlx.proto, common/net/wire.h), next to raw
// ZeroMQ PUSH/PULL messages per second of the same size over the same transport.
//
// The bench plays every peer of the hub with no model at all, so that only the transport,
// the wire layer and the hub are measured:
//   - A minimal actors (one thread, one DEALER socket, one ZeroMQ context each, as separate
//     processes would have): Hello, WorkRequest, and for each WorkItem at once a
//     TrajectoryBatch of prompts * k text trajectories whose encoded size is about --size
//     bytes each (the response length is chosen to get there), then WorkRequest again.
//   - W minimal reward workers: Hello, and each ScoreRequest answered at once (reward 1).
//   - the learner: the main thread calls hub_take as fast as it can and frees the batches.
// Raw: one PUSH thread sends N+1 messages of --size bytes, the main thread PULLs them (each
// side in its own context). Both rates are counted from the first delivery to the N-th
// after it. Each run also prints the CPU time per trajectory (per message for raw) of each
// thread group over that span (from /proc/self/task/*/schedstat): on a small machine where
// everything shares the cores, the rate follows the total, and the hub thread's share says
// whether the hub itself is the bottleneck. Not a test: it prints figures; the last line is
// `ratio_vs_raw R` (ours/raw, medians over --repeat runs). Every wait has a deadline
// (--timeout-s for a whole run, 10 s without progress, 10 s to join).
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "bench_net.h"
#include "hub.h"
#include "util.h"
#include "wire.h"

#define RUN_ID "bench-transport"
#define CLIENT_HB_MS 500     // heartbeat of the fake workers when idle
#define JOIN_TIMEOUT_S 10.0  // workers must join within this
#define STALL_TIMEOUT_S 10.0 // no delivery for this long ends a run as failed

typedef struct {
    long trajectories;     // N
    int actors;            // A
    int workers;           // W
    int size;              // target encoded bytes per trajectory (and raw message size)
    const char *transport; // tcp | ipc
    int port;              // first port (tcp); runs use port + 2 * run
    int prompts_per_item;  // hub: prompts per WorkItem
    int k;                 // hub: samples per prompt
    int score_batch;       // hub: trajectories per ScoreRequest
    int actor_credits;     // WorkItems each actor holds at once
    int worker_credits;    // ScoreRequests each reward worker holds at once
    int max_in_flight;     // hub backpressure
    int max_learner_queue; // hub backpressure
    int take_max;          // hub_take max
    int repeat;            // runs; medians are printed
    double timeout_s;      // deadline of one run
    int ours, raw;         // which halves to run (--mode both|ours|raw)
} opts_t;

// One fake worker thread (actor or reward worker).
typedef struct {
    int is_actor;     // actor or reward worker
    int index;        // for its name
    const char *ep;   // hub endpoint
    int credits;      // Hello.credits
    int resp_len;     // actors: response tokens per trajectory
    atomic_int *stop; // set by the main thread at the end
    void *ctx;        // own ZeroMQ context
    void *sock;       // DEALER
    wire_t *wire;     // endpoint state
    uint32_t id;      // worker_id from Welcome
    uint64_t seq;     // actors: trajectories produced
    double last_send; // for heartbeats
    // results (read by the main thread after the join)
    uint64_t messages;   // WorkItems or ScoreRequests answered
    uint64_t send_again; // sends retried because the queue was full
    uint64_t errors;     // sends that failed for good, or no Welcome in time
    // actors: scratch of one batch
    int cap;                 // trajectories the arrays below hold
    Rlx__Trajectory *tr;     // (cap)
    Rlx__Trajectory **trp;   // (cap)
    Rlx__TrajectoryId *ids;  // (cap)
    Rlx__TextTrajectory *tx; // (cap)
    uint32_t *resp;          // (resp_len) response tokens, shared by every trajectory
    float *logp;             // (resp_len) their log-probs
    // reward workers: scratch of one reply
    Rlx__ScoreResult *res;     // (cap)
    Rlx__ScoreResult **resp_p; // (cap)
} client_t;

// ---- fake workers ---------------------------------------------------------------------------

// Sends env, waiting (bounded) for room when the queue is full. 0 or -1.
static int client_send(client_t *c, Rlx__Envelope *env) {
    env->sender_id = c->id;
    for (int tries = 0;; tries++) {
        int rc = wire_send(c->wire, c->sock, NULL, env, NULL);
        if (rc == WIRE_OK) {
            c->last_send = rlx_now();
            return 0;
        }
        if (rc != WIRE_ERR_AGAIN || tries >= 200) {
            c->errors++;
            return -1;
        }
        c->send_again++;
        zmq_pollitem_t it = {.socket = c->sock, .events = ZMQ_POLLOUT};
        zmq_poll(&it, 1, 10);
    }
}

static void send_hello(client_t *c) {
    char name[32];
    snprintf(name, sizeof name, "bench-%s-%d", c->is_actor ? "actor" : "reward", c->index);
    char *scorers[1] = {"exact"};
    Rlx__TrajectoryKind kinds[1] = {RLX__TRAJECTORY_KIND__TRAJECTORY_KIND_TEXT};
    Rlx__Hello h = RLX__HELLO__INIT;
    h.role = c->is_actor ? RLX__ROLE__ROLE_ACTOR : RLX__ROLE__ROLE_REWARD_WORKER;
    h.name = name;
    h.agent = "rlx-bench-transport";
    h.n_trajectory_kinds = 1;
    h.trajectory_kinds = kinds;
    if (!c->is_actor) {
        h.n_scorers = 1;
        h.scorers = scorers;
    }
    h.credits = (uint32_t)c->credits;
    h.pid = (uint32_t)getpid();
    Rlx__Envelope env = RLX__ENVELOPE__INIT;
    env.body_case = RLX__ENVELOPE__BODY_HELLO;
    env.hello = &h;
    client_send(c, &env);
}

static void send_work_request(client_t *c) {
    Rlx__WorkRequest wr = RLX__WORK_REQUEST__INIT;
    wr.credits = (uint32_t)c->credits; // absolute: every item is answered at once
    Rlx__Envelope env = RLX__ENVELOPE__INIT;
    env.body_case = RLX__ENVELOPE__BODY_WORK_REQUEST;
    env.work_request = &wr;
    client_send(c, &env);
}

static void send_heartbeat(client_t *c) {
    Rlx__Heartbeat hb = RLX__HEARTBEAT__INIT;
    hb.worker_id = c->id;
    hb.credits = (uint32_t)c->credits;
    Rlx__Envelope env = RLX__ENVELOPE__INIT;
    env.body_case = RLX__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &hb;
    client_send(c, &env);
}

static int client_reserve(client_t *c, int n) {
    if (n <= c->cap)
        return 0;
    free(c->tr);
    free(c->trp);
    free(c->ids);
    free(c->tx);
    free(c->res);
    free(c->resp_p);
    c->tr = calloc((size_t)n, sizeof *c->tr);
    c->trp = calloc((size_t)n, sizeof *c->trp);
    c->ids = calloc((size_t)n, sizeof *c->ids);
    c->tx = calloc((size_t)n, sizeof *c->tx);
    c->res = calloc((size_t)n, sizeof *c->res);
    c->resp_p = calloc((size_t)n, sizeof *c->resp_p);
    c->cap = n;
    if (!c->tr || !c->trp || !c->ids || !c->tx || !c->res || !c->resp_p) {
        c->cap = 0;
        return -1;
    }
    return 0;
}

// Fills trajectory slot i of a batch answering item it (prompt p, sample j).
static void fill_trajectory(client_t *c, const Rlx__WorkItem *it, int i, int p, int j, int k) {
    int r = c->resp_len;
    if (it->max_new_tokens && (int)it->max_new_tokens < r)
        r = (int)it->max_new_tokens;
    rlx__trajectory_id__init(&c->ids[i]);
    c->ids[i].actor_id = c->id;
    c->ids[i].seq = ++c->seq;
    rlx__text_trajectory__init(&c->tx[i]);
    c->tx[i].n_prompt_tokens = it->prompts[p]->n_tokens;
    c->tx[i].prompt_tokens = it->prompts[p]->tokens;
    c->tx[i].n_response_tokens = (size_t)r;
    c->tx[i].response_tokens = c->resp;
    c->tx[i].n_logprobs = (size_t)r;
    c->tx[i].logprobs = c->logp;
    c->tx[i].finish_reason = RLX__FINISH_REASON__FINISH_REASON_LENGTH;
    rlx__trajectory__init(&c->tr[i]);
    c->tr[i].id = &c->ids[i];
    c->tr[i].work_id = it->work_id;
    c->tr[i].prompt_id = it->prompts[p]->prompt_id;
    c->tr[i].group_index = (uint32_t)j;
    c->tr[i].group_size = (uint32_t)k;
    c->tr[i].policy_version = it->policy_version;
    c->tr[i].kind_case = RLX__TRAJECTORY__KIND_TEXT;
    c->tr[i].text = &c->tx[i];
    c->trp[i] = &c->tr[i];
}

static void answer_work(client_t *c, const Rlx__WorkItem *it) {
    int k = it->samples_per_prompt ? (int)it->samples_per_prompt : 1;
    int n = (int)it->n_prompts * k;
    if (client_reserve(c, n) != 0) {
        c->errors++;
        return;
    }
    for (int p = 0; p < (int)it->n_prompts; p++)
        for (int j = 0; j < k; j++)
            fill_trajectory(c, it, p * k + j, p, j, k);
    Rlx__TrajectoryBatch tb = RLX__TRAJECTORY_BATCH__INIT;
    tb.n_trajectories = (size_t)n;
    tb.trajectories = c->trp;
    tb.work_id = it->work_id;
    Rlx__Envelope env = RLX__ENVELOPE__INIT;
    env.body_case = RLX__ENVELOPE__BODY_TRAJECTORY_BATCH;
    env.trajectory_batch = &tb;
    if (client_send(c, &env) == 0)
        c->messages++;
    send_work_request(c);
}

static void answer_score(client_t *c, const Rlx__ScoreRequest *rq) {
    int n = (int)rq->n_items;
    if (client_reserve(c, n) != 0) {
        c->errors++;
        return;
    }
    for (int i = 0; i < n; i++) {
        rlx__score_result__init(&c->res[i]);
        c->res[i].id = rq->items[i]->id;
        c->res[i].reward = 1.0f;
        c->resp_p[i] = &c->res[i];
    }
    Rlx__ScoreReply rp = RLX__SCORE_REPLY__INIT;
    rp.request_id = rq->request_id;
    rp.n_results = (size_t)n;
    rp.results = c->resp_p;
    Rlx__Envelope env = RLX__ENVELOPE__INIT;
    env.body_case = RLX__ENVELOPE__BODY_SCORE_REPLY;
    env.score_reply = &rp;
    if (client_send(c, &env) == 0)
        c->messages++;
}

static void *client_main(void *arg) {
    client_t *c = arg;
    char tname[16];
    snprintf(tname, sizeof tname, "b-%s%d", c->is_actor ? "actor" : "reward", c->index);
    pthread_setname_np(pthread_self(), tname);
    int linger = 0;
    zmq_setsockopt(c->sock, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_connect(c->sock, c->ep) != 0) {
        fprintf(stderr, "bench: %s cannot connect to %s: %s\n", tname, c->ep, zmq_strerror(errno));
        c->errors++;
        return NULL;
    }
    double start = rlx_now();
    send_hello(c);
    int hub_left = 0;
    while (!atomic_load(c->stop) && !hub_left) {
        Rlx__Envelope *env = NULL;
        if (wire_recv(c->wire, c->sock, 50, NULL, &env, NULL) == WIRE_OK) {
            switch (env->body_case) {
            case RLX__ENVELOPE__BODY_WELCOME:
                c->id = env->welcome->worker_id;
                if (c->is_actor)
                    send_work_request(c);
                break;
            case RLX__ENVELOPE__BODY_WORK_ITEM:
                if (c->is_actor)
                    answer_work(c, env->work_item);
                break;
            case RLX__ENVELOPE__BODY_SCORE_REQUEST:
                if (!c->is_actor)
                    answer_score(c, env->score_request);
                break;
            case RLX__ENVELOPE__BODY_BYE:
                hub_left = 1;
                break;
            case RLX__ENVELOPE__BODY_ERROR:
                c->errors++;
                break;
            default: // heartbeats, announces: nothing to do
                break;
            }
            wire_free(&env);
        }
        double now = rlx_now();
        if (!c->id && now - start > JOIN_TIMEOUT_S) {
            fprintf(stderr, "bench: %s got no Welcome within %.0f s\n", tname, JOIN_TIMEOUT_S);
            c->errors++;
            break;
        }
        if (c->id && now - c->last_send > CLIENT_HB_MS * 1e-3)
            send_heartbeat(c);
    }
    if (c->id && !hub_left) {
        Rlx__Bye bye = RLX__BYE__INIT;
        bye.worker_id = c->id;
        bye.reason = "bench finished";
        Rlx__Envelope env = RLX__ENVELOPE__INIT;
        env.body_case = RLX__ENVELOPE__BODY_BYE;
        env.bye = &bye;
        client_send(c, &env);
        linger = 200; // let the Bye leave
        zmq_setsockopt(c->sock, ZMQ_LINGER, &linger, sizeof linger);
    }
    return NULL;
}

static int client_init(client_t *c, int is_actor, int index, const char *ep, int credits,
                       int resp_len, atomic_int *stop) {
    memset(c, 0, sizeof *c);
    c->is_actor = is_actor;
    c->index = index;
    c->ep = ep;
    c->credits = credits;
    c->resp_len = resp_len;
    c->stop = stop;
    c->ctx = zmq_ctx_new();
    c->sock = c->ctx ? zmq_socket(c->ctx, ZMQ_DEALER) : NULL;
    c->wire = wire_new("bench-client", 0, RUN_ID);
    c->resp = malloc((size_t)(resp_len > 0 ? resp_len : 1) * sizeof *c->resp);
    c->logp = malloc((size_t)(resp_len > 0 ? resp_len : 1) * sizeof *c->logp);
    if (!c->sock || !c->wire || !c->resp || !c->logp)
        return -1;
    for (int i = 0; i < resp_len; i++) { // letters: one varint byte per token
        c->resp[i] = (uint32_t)('a' + (i + index) % 26);
        c->logp[i] = -0.25f;
    }
    return 0;
}

static void client_free(client_t *c) {
    if (c->sock)
        zmq_close(c->sock);
    if (c->ctx)
        zmq_ctx_term(c->ctx);
    wire_destroy(&c->wire);
    free(c->tr);
    free(c->trp);
    free(c->ids);
    free(c->tx);
    free(c->res);
    free(c->resp_p);
    free(c->resp);
    free(c->logp);
}

// ---- trajectory size --------------------------------------------------------------------------

// Encoded bytes of one trajectory with r response tokens (and a typical prompt), measured as
// the growth of a batch envelope by one more trajectory.
static size_t trajectory_bytes(int r) {
    uint32_t prompt[7] = {256, '1', '2', '+', '3', '4', '='};
    uint32_t *resp = calloc((size_t)r + 1, sizeof *resp);
    float *lp = calloc((size_t)r + 1, sizeof *lp);
    for (int i = 0; i < r; i++) {
        resp[i] = 'a' + i % 26;
        lp[i] = -0.25f;
    }
    Rlx__TrajectoryId id = RLX__TRAJECTORY_ID__INIT;
    id.actor_id = 3;
    id.seq = 123456;
    Rlx__TextTrajectory tx = RLX__TEXT_TRAJECTORY__INIT;
    tx.n_prompt_tokens = 7;
    tx.prompt_tokens = prompt;
    tx.n_response_tokens = (size_t)r;
    tx.response_tokens = resp;
    tx.n_logprobs = (size_t)r;
    tx.logprobs = lp;
    tx.finish_reason = RLX__FINISH_REASON__FINISH_REASON_LENGTH;
    Rlx__Trajectory t = RLX__TRAJECTORY__INIT;
    t.id = &id;
    t.work_id = 1234;
    t.prompt_id = 567;
    t.group_index = 3;
    t.group_size = 4;
    t.policy_version = 12;
    t.kind_case = RLX__TRAJECTORY__KIND_TEXT;
    t.text = &tx;
    Rlx__Trajectory *v[2] = {&t, &t};
    Rlx__TrajectoryBatch b = RLX__TRAJECTORY_BATCH__INIT;
    b.trajectories = v;
    b.work_id = 1234;
    Rlx__Envelope env = RLX__ENVELOPE__INIT;
    env.body_case = RLX__ENVELOPE__BODY_TRAJECTORY_BATCH;
    env.trajectory_batch = &b;
    b.n_trajectories = 1;
    size_t one = wire_encoded_size(NULL, &env);
    b.n_trajectories = 2;
    size_t two = wire_encoded_size(NULL, &env);
    free(resp);
    free(lp);
    return two - one;
}

// Response length whose trajectory encodes closest to size bytes.
static int response_len_for(int size) {
    int best = 1;
    for (int r = 1; r < 16384; r++) {
        size_t n = trajectory_bytes(r);
        if (labs((long)n - size) < labs((long)trajectory_bytes(best) - size))
            best = r;
        if ((long)n > size)
            break;
    }
    return best;
}

// ---- CPU by thread group
// --------------------------------------------------------------------------

// Thread names: the hub thread keeps the process's name (hub_name), the main thread renames
// itself b-learner (or b-pull for raw), the fake workers are b-actorN / b-rewardN, ZeroMQ's
// I/O threads ZMQbg/IO/N (every context's).
enum { G_HUB, G_LEARNER, G_ACTORS, G_REWARD, G_PUSH, G_PULL, G_IO, G_ALL, G_COUNT };
static char hub_name[32];
static const char *group_prefix(int g) {
    static const char *const p[G_COUNT] = {NULL,     "b-learner", "b-actor", "b-reward",
                                           "b-push", "b-pull",    "ZMQbg",   ""};
    return g == G_HUB ? hub_name : p[g];
}

static void cpu_snapshot(double *cpu) {
    for (int g = 0; g < G_COUNT; g++)
        cpu[g] = bench_thread_cpu_s(group_prefix(g));
}

// ---- one run through the hub ------------------------------------------------------------------

typedef struct {
    int ok;              // finished N trajectories in time
    double rate;         // trajectories/s
    double seconds;      // measured span
    hub_counters_t k;    // hub counters after drain
    uint64_t send_again; // client sends retried (queue full)
    uint64_t client_errors;
    uint64_t learner_batches; // hub_take calls that returned trajectories
    double cpu[G_COUNT];      // CPU seconds per thread group over the measured span
} ours_t;

static ours_t run_ours(const opts_t *o, const char *prompts, const char *ep, int resp_len) {
    ours_t out;
    memset(&out, 0, sizeof out);
    void *ctx = zmq_ctx_new();
    if (!ctx)
        RLX_DIE("zmq_ctx_new failed");
    hub_config_t hc = hub_defaults();
    hc.bind = ep;
    hc.run_id = RUN_ID;
    hc.train_prompts = prompts;
    hc.scorer = "exact";
    hc.prompts_per_item = o->prompts_per_item;
    hc.samples_per_prompt = o->k;
    hc.max_new_tokens = resp_len;
    hc.score_batch = o->score_batch;
    if (o->max_in_flight > 0)
        hc.max_in_flight = o->max_in_flight;
    if (o->max_learner_queue > 0)
        hc.max_learner_queue = o->max_learner_queue;
    // The hub thread inherits this thread's name (hub_name); then this one is the learner.
    pthread_setname_np(pthread_self(), hub_name);
    hub_t *h = hub_start(&hc, ctx);
    if (!h)
        RLX_DIE("hub_start failed on %s (hint: --port P or --transport ipc)", ep);
    pthread_setname_np(pthread_self(), "b-learner");

    atomic_int stop = 0;
    int nc = o->actors + o->workers;
    client_t *cl = calloc((size_t)nc, sizeof *cl);
    pthread_t *th = calloc((size_t)nc, sizeof *th);
    int *started = calloc((size_t)nc, sizeof *started);
    if (!cl || !th || !started)
        RLX_DIE("out of memory");
    for (int i = 0; i < nc; i++) {
        int is_actor = i < o->actors;
        if (client_init(&cl[i], is_actor, is_actor ? i : i - o->actors, ep,
                        is_actor ? o->actor_credits : o->worker_credits, resp_len, &stop) != 0)
            RLX_DIE("cannot set up bench client %d", i);
        started[i] = pthread_create(&th[i], NULL, client_main, &cl[i]) == 0;
        if (!started[i])
            RLX_DIE("cannot start bench client thread %d", i);
    }

    hub_counters_t k;
    double t_join = rlx_now();
    int joined = 0;
    while (rlx_now() - t_join < JOIN_TIMEOUT_S) {
        if (hub_counters(h, &k, 1000) == 0 && (int)k.actors == o->actors &&
            (int)k.reward_workers == o->workers) {
            joined = 1;
            break;
        }
        usleep(2000);
    }
    if (!joined)
        fprintf(stderr, "bench: workers did not all join within %.0f s\n", JOIN_TIMEOUT_S);

    long got = 0, first = 0;
    double t_first = 0, t_last = 0, deadline = rlx_now() + o->timeout_s;
    double last_progress = rlx_now();
    int bad = 0;
    double cpu0[G_COUNT] = {0}, cpu1[G_COUNT] = {0};
    while (joined && got - first < o->trajectories) {
        Rlx__Envelope *b = NULL;
        int n = hub_take(h, o->take_max, 200, &b);
        double now = rlx_now();
        if (n < 0) {
            fprintf(stderr, "bench: hub_take failed\n");
            break;
        }
        if (n > 0) {
            const Rlx__TrajectoryBatch *tb = b->trajectory_batch;
            for (size_t i = 0; i < tb->n_trajectories; i++)
                bad += !tb->trajectories[i]->scored;
            if (got == 0) {
                cpu_snapshot(cpu0);
                t_first = now;
                first = n;
            }
            got += n;
            if (got - first >= o->trajectories)
                cpu_snapshot(cpu1);
            t_last = now;
            last_progress = now;
            out.learner_batches++;
            wire_free(&b);
        }
        if (now > deadline || now - last_progress > STALL_TIMEOUT_S) {
            fprintf(stderr, "bench: %s after %ld trajectories\n",
                    now > deadline ? "deadline passed" : "no progress for 10 s", got);
            break;
        }
    }
    out.ok = joined && got - first >= o->trajectories && bad == 0;
    if (bad)
        fprintf(stderr, "bench: %d trajectories came to the learner unscored\n", bad);
    out.seconds = t_last - t_first;
    out.rate = out.seconds > 0 ? (double)(got - first) / out.seconds : 0;
    for (int g = 0; g < G_COUNT; g++)
        out.cpu[g] = cpu1[g] - cpu0[g];

    if (hub_drain(h, 2000, &out.k) != 0)
        fprintf(stderr, "bench: hub_drain did not answer\n");
    atomic_store(&stop, 1);
    for (int i = 0; i < nc; i++)
        if (started[i] && bench_join(th[i], 5.0) != 0) {
            fprintf(stderr, "bench: client thread %d did not stop in time\n", i);
            exit(1);
        }
    hub_stop(&h);
    for (int i = 0; i < nc; i++) {
        out.send_again += cl[i].send_again;
        out.client_errors += cl[i].errors;
        client_free(&cl[i]);
    }
    free(cl);
    free(th);
    free(started);
    zmq_ctx_term(ctx);
    return out;
}

// ---- raw ZeroMQ
// -----------------------------------------------------------------------------------

typedef struct {
    void *ctx;        // own context (another process, in effect)
    const char *ep;   // PULL side's endpoint
    long n;           // messages to send
    int size;         // bytes each
    double timeout_s; // give up after
    long sent;        // messages sent
    atomic_int done;  // the receiver has taken its CPU snapshot: the thread may end
} pusher_t;

static void *pusher_main(void *arg) {
    pusher_t *p = arg;
    pthread_setname_np(pthread_self(), "b-push");
    void *s = zmq_socket(p->ctx, ZMQ_PUSH);
    int linger = 2000, sndtimeo = 100;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s, ZMQ_SNDTIMEO, &sndtimeo, sizeof sndtimeo);
    if (zmq_connect(s, p->ep) != 0) {
        fprintf(stderr, "bench: raw PUSH cannot connect to %s: %s\n", p->ep, zmq_strerror(errno));
        zmq_close(s);
        return NULL;
    }
    char *buf = malloc((size_t)p->size);
    memset(buf, 'x', (size_t)p->size);
    double deadline = rlx_now() + p->timeout_s;
    while (p->sent < p->n && rlx_now() < deadline) {
        if (zmq_send(s, buf, (size_t)p->size, 0) == p->size)
            p->sent++;
    }
    free(buf);
    while (!atomic_load(&p->done) && rlx_now() < deadline + 5) // stay countable
        usleep(1000);
    zmq_close(s);
    return NULL;
}

// Messages/s of PUSH -> PULL, counted from the first message to the n-th after it; < 0 if
// they did not all arrive in time.
static double run_raw(const char *ep, long n, int size, double timeout_s, double *seconds,
                      double *cpu) {
    void *ctx_pull = zmq_ctx_new(), *ctx_push = zmq_ctx_new();
    void *pull = zmq_socket(ctx_pull, ZMQ_PULL);
    int linger = 0;
    zmq_setsockopt(pull, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_bind(pull, ep) != 0)
        RLX_DIE("raw PULL cannot bind %s: %s (hint: --port P)", ep, zmq_strerror(errno));
    pusher_t p = {.ctx = ctx_push, .ep = ep, .n = n + 1, .size = size, .timeout_s = timeout_s};
    pthread_t th;
    if (pthread_create(&th, NULL, pusher_main, &p) != 0)
        RLX_DIE("cannot start the PUSH thread");
    pthread_setname_np(pthread_self(), "b-pull");
    char *buf = malloc((size_t)size + 1);
    long got = 0;
    double t_first = 0, t_last = 0, deadline = rlx_now() + timeout_s;
    double cpu0[G_COUNT] = {0}, cpu1[G_COUNT] = {0};
    while (got < n + 1 && rlx_now() < deadline) {
        zmq_pollitem_t it = {.socket = pull, .events = ZMQ_POLLIN};
        if (zmq_poll(&it, 1, 200) <= 0)
            continue;
        while (got < n + 1 && zmq_recv(pull, buf, (size_t)size + 1, ZMQ_DONTWAIT) >= 0) {
            if (got++ == 0) {
                cpu_snapshot(cpu0);
                t_first = rlx_now();
            }
        }
        t_last = rlx_now();
    }
    cpu_snapshot(cpu1);
    atomic_store(&p.done, 1);
    for (int g = 0; g < G_COUNT; g++)
        cpu[g] = cpu1[g] - cpu0[g];
    free(buf);
    if (bench_join(th, timeout_s + 5) != 0) {
        fprintf(stderr, "bench: the PUSH thread did not stop in time\n");
        exit(1);
    }
    zmq_close(pull);
    zmq_ctx_term(ctx_push);
    zmq_ctx_term(ctx_pull);
    *seconds = t_last - t_first;
    if (got < n + 1) {
        fprintf(stderr, "bench: raw PUSH/PULL: %ld of %ld messages in time\n", got, n + 1);
        return -1;
    }
    return *seconds > 0 ? (double)n / *seconds : 0;
}

// ---- main ---------------------------------------------------------------------------------------

static void usage(FILE *f) {
    fprintf(f,
            "usage: rlx-bench-transport [--trajectories 200000] [--actors 2] [--workers 2]\n"
            "         [--size 1024] [--transport tcp|ipc] [--port P] [--prompts-per-item N]\n"
            "         [--k N] [--score-batch N] [--actor-credits 2] [--worker-credits 2]\n"
            "         [--max-in-flight N] [--max-learner-queue N] [--take-max 256]\n"
            "         [--repeat 3] [--timeout-s 120] [--mode both|ours|raw]\n"
            "Trajectories/s through the real hub (fake actors, reward workers and learner\n"
            "with no model) vs raw ZeroMQ PUSH/PULL messages/s of --size bytes; the last line\n"
            "is `ratio_vs_raw R` (medians over --repeat runs). The defaults are a\n"
            "throughput configuration: work items of 16 prompts x k 8 = 128 trajectories,\n"
            "2048 in flight; an RL run's smaller items and limits (hub_defaults(): %d x %d,\n"
            "%d in flight) bound its policy lag instead and cost more messages per\n"
            "trajectory: --prompts-per-item %d --k %d --max-in-flight %d to measure them.\n",
            hub_defaults().prompts_per_item, hub_defaults().samples_per_prompt,
            hub_defaults().max_in_flight, hub_defaults().prompts_per_item,
            hub_defaults().samples_per_prompt, hub_defaults().max_in_flight);
}

int main(int argc, char **argv) {
    hub_config_t hd = hub_defaults();
    opts_t o = {.trajectories = 200000,
                .actors = 2,
                .workers = 2,
                .size = 1024,
                .transport = "tcp",
                .port = bench_default_port(),
                .prompts_per_item = 16, // items of 128 trajectories: see usage()
                .k = 8,
                .max_in_flight = 2048,
                .max_learner_queue = 2048,
                .score_batch = hd.score_batch,
                .actor_credits = 2,
                .worker_credits = 2,
                .take_max = 256,
                .repeat = 3,
                .timeout_s = 120,
                .ours = 1,
                .raw = 1};
    static const struct option opts[] = {{"trajectories", 1, 0, 'n'},
                                         {"actors", 1, 0, 'a'},
                                         {"workers", 1, 0, 'w'},
                                         {"size", 1, 0, 's'},
                                         {"transport", 1, 0, 't'},
                                         {"port", 1, 0, 'p'},
                                         {"prompts-per-item", 1, 0, 'P'},
                                         {"k", 1, 0, 'k'},
                                         {"score-batch", 1, 0, 'b'},
                                         {"actor-credits", 1, 0, 'c'},
                                         {"worker-credits", 1, 0, 'C'},
                                         {"max-in-flight", 1, 0, 'F'},
                                         {"max-learner-queue", 1, 0, 'Q'},
                                         {"take-max", 1, 0, 'T'},
                                         {"repeat", 1, 0, 'r'},
                                         {"timeout-s", 1, 0, 'D'},
                                         {"mode", 1, 0, 'M'},
                                         {"help", 0, 0, 'h'},
                                         {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'n':
            o.trajectories = atol(optarg);
            break;
        case 'a':
            o.actors = atoi(optarg);
            break;
        case 'w':
            o.workers = atoi(optarg);
            break;
        case 's':
            o.size = atoi(optarg);
            break;
        case 't':
            o.transport = optarg;
            break;
        case 'p':
            o.port = atoi(optarg);
            break;
        case 'P':
            o.prompts_per_item = atoi(optarg);
            break;
        case 'k':
            o.k = atoi(optarg);
            break;
        case 'b':
            o.score_batch = atoi(optarg);
            break;
        case 'c':
            o.actor_credits = atoi(optarg);
            break;
        case 'C':
            o.worker_credits = atoi(optarg);
            break;
        case 'F':
            o.max_in_flight = atoi(optarg);
            break;
        case 'Q':
            o.max_learner_queue = atoi(optarg);
            break;
        case 'T':
            o.take_max = atoi(optarg);
            break;
        case 'r':
            o.repeat = atoi(optarg);
            break;
        case 'D':
            o.timeout_s = atof(optarg);
            break;
        case 'M':
            o.ours = strcmp(optarg, "raw") != 0;
            o.raw = strcmp(optarg, "ours") != 0;
            if (strcmp(optarg, "both") && strcmp(optarg, "ours") && strcmp(optarg, "raw")) {
                usage(stderr);
                return 2;
            }
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    char probe[256];
    if (o.trajectories < 1 || o.actors < 1 || o.workers < 1 || o.size < 64 || o.repeat < 1 ||
        o.actor_credits < 1 || o.worker_credits < 1 || o.take_max < 1 || o.timeout_s <= 0 ||
        bench_endpoint(probe, sizeof probe, o.transport, o.port, "x") != 0) {
        usage(stderr);
        return 2;
    }
    bench_process_name(hub_name, sizeof hub_name, "rlx-bench-trans");
    char prompts[256];
    if (bench_write_prompts(prompts, sizeof prompts, 1000) != 0)
        return 1;
    int resp_len = response_len_for(o.size);
    printf("rlx-bench-transport: %ld trajectories, %d actors, %d reward workers, %s, "
           "%zu bytes per trajectory (%d response tokens), %d prompts x k %d per item, "
           "score batch %d, %d in flight, learner queue %d, %d run(s)\n",
           o.trajectories, o.actors, o.workers, o.transport, trajectory_bytes(resp_len), resp_len,
           o.prompts_per_item, o.k, o.score_batch, o.max_in_flight, o.max_learner_queue, o.repeat);
    fflush(stdout);

    double *ours = calloc((size_t)o.repeat, sizeof *ours);
    double *raw = calloc((size_t)o.repeat, sizeof *raw);
    int failed = 0;
    for (int r = 0; r < o.repeat; r++) {
        char ep_hub[256], ep_raw[256];
        bench_endpoint(ep_hub, sizeof ep_hub, o.transport, o.port + 2 * r, "hub");
        bench_endpoint(ep_raw, sizeof ep_raw, o.transport, o.port + 2 * r + 1, "raw");
        ours_t u;
        memset(&u, 0, sizeof u);
        if (o.ours) {
            u = run_ours(&o, prompts, ep_hub, resp_len);
            bench_endpoint_cleanup(ep_hub);
            failed |= !u.ok;
            double n = (double)o.trajectories / 1e6; // per trajectory, in microseconds
            printf("run %d ours: %.0f traj/s (%.3f s, %llu learner batches; hub: sampled %llu "
                   "delivered %llu dropped %llu/%llu/%llu wire_errors %llu; client retries %llu "
                   "errors %llu)\n",
                   r + 1, u.rate, u.seconds, (unsigned long long)u.learner_batches,
                   (unsigned long long)u.k.sampled, (unsigned long long)u.k.delivered,
                   (unsigned long long)u.k.dropped_invalid, (unsigned long long)u.k.dropped_score,
                   (unsigned long long)u.k.dropped_shutdown, (unsigned long long)u.k.wire_errors,
                   (unsigned long long)u.send_again, (unsigned long long)u.client_errors);
            printf("run %d ours cpu_us_per_traj: hub %.2f learner %.2f actors %.2f reward %.2f "
                   "zmq_io %.2f all %.2f | hub thread busy %.0f%% of wall\n",
                   r + 1, u.cpu[G_HUB] / n, u.cpu[G_LEARNER] / n, u.cpu[G_ACTORS] / n,
                   u.cpu[G_REWARD] / n, u.cpu[G_IO] / n, u.cpu[G_ALL] / n,
                   u.seconds > 0 ? 100 * u.cpu[G_HUB] / u.seconds : 0);
        }
        ours[r] = u.rate;
        raw[r] = 0;
        if (o.raw) {
            double raw_s = 0, cpu[G_COUNT];
            raw[r] = run_raw(ep_raw, o.trajectories, o.size, o.timeout_s, &raw_s, cpu);
            bench_endpoint_cleanup(ep_raw);
            failed |= raw[r] < 0;
            double n = (double)o.trajectories / 1e6;
            printf("run %d raw: %.0f msg/s (%.3f s) cpu_us_per_msg: push %.2f pull %.2f "
                   "zmq_io %.2f all %.2f\n",
                   r + 1, raw[r], raw_s, cpu[G_PUSH] / n, cpu[G_PULL] / n, cpu[G_IO] / n,
                   cpu[G_ALL] / n);
        }
        fflush(stdout);
    }
    unlink(prompts);
    double mo = bench_median(ours, o.repeat), mr = bench_median(raw, o.repeat);
    printf("ours_traj_per_s %.0f\n", mo);
    printf("raw_msg_per_s %.0f\n", mr);
    printf("ratio_vs_raw %.3f\n", mr > 0 ? mo / mr : 0.0);
    free(ours);
    free(raw);
    return failed ? 1 : 0;
}
