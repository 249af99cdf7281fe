// test_actor.c: the actor (actor.c compiled in) against a scripted hub: a ROUTER socket played
// by this test on loopback TCP. The actor joins, fetches a real small gpt checkpoint in
// chunks (pipelined: several requests outstanding; one chunk served corrupted is refused and
// asked for again), samples a WorkItem of 2 prompts x 3 and returns 6 trajectories whose
// log-probs match gpt_forward on the same tokens, with unique ids and the right policy
// version; a second version (same config) is installed in place and used; an item whose
// prompt does not fit the context is refused with an Error and an empty batch. Then the real
// rlx-actor executable: SIGTERM gives Bye and exit 0. Also: every Hello after a Welcome
// carries its session_key (the rejoin proof); weights with a NaN parameter are refused with
// an Error and the last good version kept; the sampler on NaN/inf logits fails instead of
// drawing token -1. Every receive has a deadline.
#include <stdio.h>

#include "testutil.h"

#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>
#include <zmq.h>

#include "actor.h"
#include "gpt.h"
#include "sampler.h"
#include "util.h"
#include "wire.h"

static char tmpdir[256];

// ---- a scripted hub ---------------------------------------------------------------------------

typedef struct {
    void *sock;       // ROUTER bound to an ephemeral loopback port
    wire_t *w;        // its wire state (run "test-run")
    char ep[128];     // endpoint workers connect to
    wire_peer_t peer; // the last worker heard from
} fake_hub_t;

static void fh_open(fake_hub_t *h, void *ctx) {
    memset(h, 0, sizeof *h);
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

// Next message of any type within timeout_ms, NULL if none.
static Rlx__Envelope *fh_recv(fake_hub_t *h, int timeout_ms) {
    Rlx__Envelope *env = NULL;
    wire_peer_t from;
    if (wire_recv(h->w, h->sock, timeout_ms, &from, &env, NULL) != WIRE_OK)
        return NULL;
    h->peer = from;
    return env;
}

// Waits up to timeout_s for a message of type want, dropping others.
static Rlx__Envelope *fh_expect(fake_hub_t *h, Rlx__Envelope__BodyCase want, double timeout_s) {
    double end = rlx_now() + timeout_s;
    while (rlx_now() < end) {
        Rlx__Envelope *env = fh_recv(h, 50);
        if (env && env->body_case == want)
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

// ---- weights ------------------------------------------------------------------------------------

#define CHUNK_BYTES 65536

typedef struct {
    uint8_t *blob;           // checkpoint file bytes
    size_t len;              // their size
    uint64_t version;        // policy version
    int32_t config[5];       // gpt config as in the checkpoint
    Rlx__WeightAnnounce ann; // the announce (points into config)
} weights_t;

static void weights_make(weights_t *wt, const gpt_t *m, uint64_t version) {
    char path[512], err[256];
    snprintf(path, sizeof path, "%s/w%llu.ckpt", tmpdir, (unsigned long long)version);
    if (gpt_save(m, path, NULL, 0, err, sizeof err) != 0)
        RLX_DIE("gpt_save: %s", err);
    wt->blob = (uint8_t *)tu_read_file(path, &wt->len);
    if (!wt->blob)
        RLX_DIE("cannot read %s", path);
    wt->version = version;
    wt->config[0] = m->cfg.n_layer;
    wt->config[1] = m->cfg.n_embd;
    wt->config[2] = m->cfg.n_head;
    wt->config[3] = m->cfg.ctx_len;
    wt->config[4] = m->cfg.vocab;
    rlx__weight_announce__init(&wt->ann);
    wt->ann.version = version;
    wt->ann.total_bytes = wt->len;
    wt->ann.chunk_bytes = CHUNK_BYTES;
    wt->ann.num_chunks = (uint32_t)((wt->len + CHUNK_BYTES - 1) / CHUNK_BYTES);
    wt->ann.crc32 = (uint32_t)crc32(0L, wt->blob, (uInt)wt->len);
    wt->ann.model_kind = "gpt";
    wt->ann.n_model_config = 5;
    wt->ann.model_config = wt->config;
}

static void send_chunk(fake_hub_t *h, const weights_t *wt, uint32_t index, int corrupt) {
    size_t off = (size_t)index * CHUNK_BYTES;
    size_t n = wt->len - off < CHUNK_BYTES ? wt->len - off : CHUNK_BYTES;
    uint8_t *copy = malloc(n);
    memcpy(copy, wt->blob + off, n);
    Rlx__WeightChunk c = RLX__WEIGHT_CHUNK__INIT;
    c.version = wt->version;
    c.index = index;
    c.offset = off;
    c.crc32 = (uint32_t)crc32(0L, copy, (uInt)n);
    if (corrupt)
        copy[n / 2] ^= 0x5a; // the data no longer matches its crc
    c.data.data = copy;
    c.data.len = n;
    Rlx__Envelope env = RLX__ENVELOPE__INIT;
    env.body_case = RLX__ENVELOPE__BODY_WEIGHT_CHUNK;
    env.weight_chunk = &c;
    fh_send(h, &env);
    free(copy);
}

// Answers WeightRequests until every chunk has been served intact once (chunk `corrupt_index`
// is served corrupted the first time it is asked for). Requests arriving in the first 300 ms
// are held and answered together, so *max_window tells how many the actor pipelines. Returns
// how many requests for the corrupted chunk arrived. A WorkRequest seen meanwhile goes to
// *work_request (if given).
static int serve_weights(fake_hub_t *h, const weights_t *wt, int corrupt_index, int *max_window,
                         Rlx__Envelope **work_request) {
    uint32_t n = wt->ann.num_chunks;
    char *served = calloc(n, 1);
    uint32_t *pending = calloc(n * 4 + 16, sizeof *pending);
    uint32_t nserved = 0, npend = 0;
    int corrupt_asks = 0;
    *max_window = 0;
    double collect_until = rlx_now() + 0.3, end = rlx_now() + 20.0;
    while (nserved < n && rlx_now() < end) {
        Rlx__Envelope *env = fh_recv(h, 50);
        if (env && env->body_case == RLX__ENVELOPE__BODY_WORK_REQUEST && work_request) {
            wire_free(work_request);
            *work_request = env;
            env = NULL;
        }
        if (env && env->body_case == RLX__ENVELOPE__BODY_WEIGHT_REQUEST) {
            const Rlx__WeightRequest *r = env->weight_request;
            TU_CHECK(r->version == wt->version, "WeightRequest for v%llu, want v%llu",
                     (unsigned long long)r->version, (unsigned long long)wt->version);
            uint32_t cnt = r->num_chunks ? r->num_chunks : 1;
            for (uint32_t i = r->first_chunk; i < r->first_chunk + cnt && i < n; i++) {
                if (npend < n * 4 + 16)
                    pending[npend++] = i;
                if (rlx_now() < collect_until)
                    (*max_window)++;
            }
        }
        wire_free(&env);
        if (rlx_now() < collect_until)
            continue;
        for (uint32_t k = 0; k < npend; k++) {
            uint32_t i = pending[k];
            int corrupt = (int)i == corrupt_index && corrupt_asks == 0;
            if ((int)i == corrupt_index)
                corrupt_asks++;
            send_chunk(h, wt, i, corrupt);
            if (!corrupt && !served[i]) {
                served[i] = 1;
                nserved++;
            }
        }
        npend = 0;
    }
    TU_CHECK(nserved == n, "served %u of %u chunks", nserved, n);
    free(served);
    free(pending);
    return corrupt_asks;
}

// ---- reference log-probs
// --------------------------------------------------------------------------

// Checks one trajectory's logprobs against gpt_forward on prompt + response (temperature 1,
// no top-k: the sampling distribution is the model's).
static void check_logprobs(gpt_t *ref, const Rlx__TextTrajectory *t, const char *what) {
    int plen = (int)t->n_prompt_tokens, rlen = (int)t->n_response_tokens;
    int T = plen + rlen;
    int *tok = calloc((size_t)T, sizeof(int)), *tgt = calloc((size_t)T, sizeof(int));
    for (int i = 0; i < plen; i++)
        tok[i] = (int)t->prompt_tokens[i];
    for (int i = 0; i < rlen; i++)
        tok[plen + i] = (int)t->response_tokens[i];
    for (int i = 0; i < T; i++)
        tgt[i] = (i + 1 < T && i + 1 >= plen) ? tok[i + 1] : -1;
    gpt_forward(ref, tok, tgt, 1, T);
    tu_close(what, t->logprobs, ref->logp + plen - 1, (size_t)rlen, 1e-4f, 1e-4f);
    free(tok);
    free(tgt);
}

// ---- the work
// ---------------------------------------------------------------------------------------

static const char *const PROMPTS[2] = {"12+30=", "7+5="};

static void send_work(fake_hub_t *h, uint64_t work_id, uint64_t version, int long_prompt) {
    Rlx__Prompt pr[2], *prp[2];
    uint32_t tok[2][64];
    for (int p = 0; p < 2; p++) {
        rlx__prompt__init(&pr[p]);
        pr[p].prompt_id = 1000 + (uint64_t)p;
        pr[p].text = (char *)PROMPTS[p];
        pr[p].target = p == 0 ? "42" : "12";
        size_t n = strlen(PROMPTS[p]);
        tok[p][0] = GPT_TOK_BOS;
        for (size_t i = 0; i < n; i++)
            tok[p][i + 1] = (unsigned char)PROMPTS[p][i];
        pr[p].tokens = tok[p];
        pr[p].n_tokens = n + 1;
        if (long_prompt && p == 1) {
            for (int i = 0; i < 40; i++)
                tok[p][i] = 'x';
            pr[p].n_tokens = 40;
        }
        prp[p] = &pr[p];
    }
    uint32_t stop[1] = {GPT_TOK_EOS};
    Rlx__WorkItem it = RLX__WORK_ITEM__INIT;
    it.work_id = work_id;
    it.n_prompts = 2;
    it.prompts = prp;
    it.samples_per_prompt = 3;
    it.policy_version = version;
    it.temperature = 1.0f;
    it.max_new_tokens = 8;
    it.n_stop_tokens = 1;
    it.stop_tokens = stop;
    it.seed = 1234 + work_id;
    Rlx__Envelope env = RLX__ENVELOPE__INIT;
    env.body_case = RLX__ENVELOPE__BODY_WORK_ITEM;
    env.work_item = &it;
    fh_send(h, &env);
}

// Receives the batch for work_id and checks it against ref. seq0: the first expected seq.
static void check_batch(fake_hub_t *h, gpt_t *ref, uint64_t work_id, uint64_t version,
                        uint64_t seq0) {
    Rlx__Envelope *env = fh_expect(h, RLX__ENVELOPE__BODY_TRAJECTORY_BATCH, 30.0);
    TU_CHECK(env != NULL, "no TrajectoryBatch for item %llu within 30 s",
             (unsigned long long)work_id);
    if (!env)
        return;
    const Rlx__TrajectoryBatch *b = env->trajectory_batch;
    TU_CHECK(b->work_id == work_id, "batch work_id %llu", (unsigned long long)b->work_id);
    TU_CHECK(b->n_trajectories == 6, "%zu trajectories, want 6", b->n_trajectories);
    int seen[6] = {0};
    for (size_t i = 0; i < b->n_trajectories; i++) {
        const Rlx__Trajectory *t = b->trajectories[i];
        TU_CHECK(t->id && t->id->actor_id == 5, "actor_id %u", t->id ? t->id->actor_id : 0);
        uint64_t s = t->id ? t->id->seq - seq0 : 99;
        TU_CHECK(s < 6 && !seen[s], "seq %llu not unique / out of range",
                 (unsigned long long)(t->id ? t->id->seq : 0));
        if (s < 6)
            seen[s] = 1;
        TU_CHECK(t->work_id == work_id, "trajectory work_id");
        TU_CHECK(t->policy_version == version, "policy_version %llu, want %llu",
                 (unsigned long long)t->policy_version, (unsigned long long)version);
        TU_CHECK(t->group_size == 3 && t->group_index == i % 3, "group %u/%u", t->group_index,
                 t->group_size);
        TU_CHECK(t->prompt_id == 1000 + i / 3, "prompt_id %llu", (unsigned long long)t->prompt_id);
        TU_CHECK(t->kind_case == RLX__TRAJECTORY__KIND_TEXT, "text trajectory");
        if (t->kind_case != RLX__TRAJECTORY__KIND_TEXT)
            continue;
        const Rlx__TextTrajectory *x = t->text;
        TU_CHECK(x->n_prompt_tokens == strlen(PROMPTS[i / 3]) + 1, "prompt tokens");
        TU_CHECK(x->n_response_tokens >= 1 && x->n_response_tokens <= 8 &&
                     x->n_logprobs == x->n_response_tokens,
                 "response %zu tokens, %zu logprobs", x->n_response_tokens, x->n_logprobs);
        int stopped =
            x->n_response_tokens && x->response_tokens[x->n_response_tokens - 1] == GPT_TOK_EOS;
        TU_CHECK(x->finish_reason == (stopped ? RLX__FINISH_REASON__FINISH_REASON_STOP
                                              : RLX__FINISH_REASON__FINISH_REASON_LENGTH),
                 "finish reason %d", x->finish_reason);
        char what[64];
        snprintf(what, sizeof what, "logprobs item %llu traj %zu", (unsigned long long)work_id, i);
        check_logprobs(ref, x, what);
    }
    wire_free(&env);
}

// ---- the actor in a thread ---------------------------------------------------------------------

typedef struct {
    actor_t *a;                 // the actor
    volatile sig_atomic_t stop; // set to stop it
    int rc;                     // actor_run's result
} runner_t;

static void *run_actor(void *arg) {
    runner_t *r = arg;
    r->rc = actor_run(r->a, &r->stop);
    return NULL;
}

static void test_actor_thread(void *ctx) {
    fake_hub_t h;
    fh_open(&h, ctx);
    gpt_config_t cfg = {.n_layer = 2, .n_embd = 32, .n_head = 2, .ctx_len = 32, .vocab = GPT_VOCAB};
    gpt_t *ref = gpt_new(&cfg, 2, 42);
    weights_t w1;
    weights_make(&w1, ref, 1);
    printf("     weights: %zu bytes in %u chunks\n", w1.len, w1.ann.num_chunks);

    actor_config_t c = actor_defaults();
    c.hub = h.ep;
    c.name = "t-actor";
    c.batch = 4; // 6 sequences: two slices
    c.heartbeat_ms = 200;
    c.threads = 1;
    c.stats_interval_ms = 0;
    runner_t run = {.a = actor_new(&c, ctx)};
    TU_CHECK(run.a != NULL, "actor_new");
    if (!run.a)
        return;
    pthread_t th;
    pthread_create(&th, NULL, run_actor, &run);

    Rlx__Envelope *env = fh_expect(&h, RLX__ENVELOPE__BODY_HELLO, 10.0);
    TU_CHECK(env != NULL, "no Hello within 10 s");
    if (env) {
        const Rlx__Hello *hl = env->hello;
        TU_CHECK(hl->role == RLX__ROLE__ROLE_ACTOR && hl->credits == 1 &&
                     hl->n_trajectory_kinds == 3 &&
                     hl->trajectory_kinds[0] == RLX__TRAJECTORY_KIND__TRAJECTORY_KIND_TEXT &&
                     hl->trajectory_kinds[1] == RLX__TRAJECTORY_KIND__TRAJECTORY_KIND_GFLOW &&
                     hl->trajectory_kinds[2] == RLX__TRAJECTORY_KIND__TRAJECTORY_KIND_DIFFUSION,
                 "Hello role %d credits %u", hl->role, hl->credits);
        wire_free(&env);
    }
    Rlx__Welcome wel = RLX__WELCOME__INIT;
    wel.worker_id = 5;
    wel.heartbeat_interval_ms = 200;
    wel.heartbeat_liveness = 50; // this hub sends no heartbeats: long liveness
    wel.policy_version = 1;
    wel.weights = &w1.ann;
    Rlx__Envelope out = RLX__ENVELOPE__INIT;
    out.body_case = RLX__ENVELOPE__BODY_WELCOME;
    out.welcome = &wel;
    fh_send(&h, &out);

    int window = 0;
    Rlx__Envelope *wr = NULL;
    int asks = serve_weights(&h, &w1, 2, &window, &wr);
    TU_CHECK(window >= 2 && window <= 4,
             "pipelined fetch: %d chunk requests before the first "
             "answer (window 4)",
             window);
    TU_CHECK(asks >= 2, "corrupted chunk 2 asked for %d times, want >= 2", asks);
    printf("ok   weight fetch: window %d, corrupted chunk asked for %d times\n", window, asks);
    if (!wr)
        wr = fh_expect(&h, RLX__ENVELOPE__BODY_WORK_REQUEST, 5.0);
    TU_CHECK(wr && wr->work_request->credits == 1, "WorkRequest with credits 1");
    wire_free(&wr);

    send_work(&h, 77, 1, 0);
    check_batch(&h, ref, 77, 1, 1);
    wr = fh_expect(&h, RLX__ENVELOPE__BODY_WORK_REQUEST, 5.0);
    TU_CHECK(wr && wr->work_request->policy_version == 1, "WorkRequest after the batch, v1");
    wire_free(&wr);

    // Version 2, same config: perturbed weights, installed in place.
    for (size_t i = 0; i < ref->ps.n; i += 7)
        ref->ps.w[i] += 0.05f;
    weights_t w2;
    weights_make(&w2, ref, 2);
    out.body_case = RLX__ENVELOPE__BODY_WEIGHT_ANNOUNCE;
    out.weight_announce = &w2.ann;
    fh_send(&h, &out);
    asks = serve_weights(&h, &w2, -1, &window, NULL);
    send_work(&h, 78, 2, 0);
    check_batch(&h, ref, 78, 2, 7);

    // A prompt that does not fit the context: Error BAD_REQUEST and an empty batch.
    send_work(&h, 79, 2, 1);
    double end = rlx_now() + 10.0;
    int got_error = 0, got_empty = 0;
    while (rlx_now() < end && !(got_error && got_empty)) {
        Rlx__Envelope *e = fh_recv(&h, 50);
        if (!e)
            continue;
        if (e->body_case == RLX__ENVELOPE__BODY_ERROR)
            got_error = e->error->code == RLX__ERROR_CODE__ERROR_CODE_BAD_REQUEST;
        if (e->body_case == RLX__ENVELOPE__BODY_TRAJECTORY_BATCH)
            got_empty =
                e->trajectory_batch->work_id == 79 && e->trajectory_batch->n_trajectories == 0;
        wire_free(&e);
    }
    TU_CHECK(got_error && got_empty, "refused item: error %d, empty batch %d", got_error,
             got_empty);

    run.stop = 1;
    Rlx__Envelope *bye = fh_expect(&h, RLX__ENVELOPE__BODY_BYE, 5.0);
    TU_CHECK(bye && bye->bye->worker_id == 5, "Bye from worker 5 on stop");
    wire_free(&bye);
    pthread_join(th, NULL);
    TU_CHECK(run.rc == 0, "actor_run returned %d", run.rc);
    const actor_stats_t *st = actor_stats(run.a);
    TU_CHECK(st->items == 2 && st->trajectories == 12 && st->items_refused == 1 &&
                 st->policy_version == 2 && st->weight_loads == 2 && st->chunks_bad == 1,
             "stats: items %llu traj %llu refused %llu version %llu loads %llu bad chunks %llu",
             (unsigned long long)st->items, (unsigned long long)st->trajectories,
             (unsigned long long)st->items_refused, (unsigned long long)st->policy_version,
             (unsigned long long)st->weight_loads, (unsigned long long)st->chunks_bad);
    actor_destroy(&run.a);
    TU_CHECK(run.a == NULL, "actor_destroy NULLs");
    free(w1.blob);
    free(w2.blob);
    gpt_destroy(&ref);
    fh_close(&h);
}

// ---- rejoin proof: the Welcome's session_key goes into every later Hello under its id ---------

// Sends a Welcome of worker id with session key to the last worker heard from.
static void send_welcome(fake_hub_t *h, uint32_t id, uint64_t key) {
    Rlx__Welcome wel = RLX__WELCOME__INIT;
    wel.worker_id = id;
    wel.session_key = key;
    wel.heartbeat_interval_ms = 200;
    wel.heartbeat_liveness = 50;
    Rlx__Envelope out = RLX__ENVELOPE__INIT;
    out.body_case = RLX__ENVELOPE__BODY_WELCOME;
    out.welcome = &wel;
    fh_send(h, &out);
}

static void send_not_joined(fake_hub_t *h) {
    Rlx__Error e = RLX__ERROR__INIT;
    e.code = RLX__ERROR_CODE__ERROR_CODE_NOT_JOINED;
    e.message = "unknown worker";
    Rlx__Envelope out = RLX__ENVELOPE__INIT;
    out.body_case = RLX__ENVELOPE__BODY_ERROR;
    out.error = &e;
    fh_send(h, &out);
}

// Expects a Hello with worker_id id and session_key key.
static void expect_hello(fake_hub_t *h, uint32_t id, uint64_t key, const char *what) {
    Rlx__Envelope *env = fh_expect(h, RLX__ENVELOPE__BODY_HELLO, 10.0);
    TU_CHECK(env != NULL, "%s: no Hello within 10 s", what);
    if (env)
        TU_CHECK(env->hello->worker_id == id && env->hello->session_key == key,
                 "%s: Hello worker_id %u key %016llx, want %u key %016llx", what,
                 env->hello->worker_id, (unsigned long long)env->hello->session_key, id,
                 (unsigned long long)key);
    wire_free(&env);
}

static void test_actor_rejoin(void *ctx) {
    fake_hub_t h;
    fh_open(&h, ctx);
    actor_config_t c = actor_defaults();
    c.hub = h.ep;
    c.name = "t-rejoin";
    c.heartbeat_ms = 200;
    c.threads = 1;
    c.stats_interval_ms = 0;
    runner_t run = {.a = actor_new(&c, ctx)};
    TU_CHECK(run.a != NULL, "actor_new");
    if (!run.a)
        return;
    pthread_t th;
    pthread_create(&th, NULL, run_actor, &run);
    const uint64_t k1 = 0x9e3779b97f4a7c15ull, k2 = 0x0123456789abcdefull;
    expect_hello(&h, 0, 0, "first Hello");
    send_welcome(&h, 5, k1);
    send_not_joined(&h); // the hub forgot us: the rejoin must prove it is worker 5
    expect_hello(&h, 5, k1, "rejoin after NOT_JOINED");
    send_welcome(&h, 8, k2); // the hub gave another id: its key goes with it
    send_not_joined(&h);
    expect_hello(&h, 8, k2, "rejoin under the new id");
    send_welcome(&h, 8, k2);
    printf("ok   rejoin: every later Hello carries the Welcome's session_key\n");
    run.stop = 1;
    pthread_join(th, NULL);
    actor_destroy(&run.a);
    fh_close(&h);
}

// ---- non-finite weights: refused, the last good version kept -------------------------------

static void test_actor_nan_weights(void *ctx) {
    fake_hub_t h;
    fh_open(&h, ctx);
    gpt_config_t cfg = {.n_layer = 1, .n_embd = 16, .n_head = 2, .ctx_len = 32, .vocab = GPT_VOCAB};
    gpt_t *ref = gpt_new(&cfg, 2, 7);
    weights_t w1, w2;
    weights_make(&w1, ref, 1);
    float keep = ref->ps.w[3];
    ref->ps.w[3] = NAN; // what a diverged learner published
    weights_make(&w2, ref, 2);
    ref->ps.w[3] = keep;

    actor_config_t c = actor_defaults();
    c.hub = h.ep;
    c.name = "t-nan";
    c.heartbeat_ms = 200;
    c.threads = 1;
    c.stats_interval_ms = 0;
    runner_t run = {.a = actor_new(&c, ctx)};
    TU_CHECK(run.a != NULL, "actor_new");
    if (!run.a)
        return;
    pthread_t th;
    pthread_create(&th, NULL, run_actor, &run);
    Rlx__Envelope *env = fh_expect(&h, RLX__ENVELOPE__BODY_HELLO, 10.0);
    TU_CHECK(env != NULL, "no Hello");
    wire_free(&env);
    Rlx__Welcome wel = RLX__WELCOME__INIT;
    wel.worker_id = 5;
    wel.heartbeat_interval_ms = 200;
    wel.heartbeat_liveness = 50;
    wel.policy_version = 1;
    wel.weights = &w1.ann;
    Rlx__Envelope out = RLX__ENVELOPE__INIT;
    out.body_case = RLX__ENVELOPE__BODY_WELCOME;
    out.welcome = &wel;
    fh_send(&h, &out);
    int window = 0;
    serve_weights(&h, &w1, -1, &window, NULL);
    send_work(&h, 80, 1, 0);
    check_batch(&h, ref, 80, 1, 1);

    out.body_case = RLX__ENVELOPE__BODY_WEIGHT_ANNOUNCE;
    out.weight_announce = &w2.ann;
    fh_send(&h, &out);
    serve_weights(&h, &w2, -1, &window, NULL);
    env = fh_expect(&h, RLX__ENVELOPE__BODY_ERROR, 10.0);
    TU_CHECK(env && env->error->code == RLX__ERROR_CODE__ERROR_CODE_BAD_REQUEST &&
                 strstr(env->error->message, "v2") && strstr(env->error->message, "non-finite"),
             "Error for the NaN weights: %s", env ? env->error->message : "(none)");
    wire_free(&env);
    send_work(&h, 81, 2, 0); // wants v2: sampled with v1, the last good weights
    check_batch(&h, ref, 81, 1, 7);

    // Good weights announced as another kind than the checkpoint holds: refused too.
    weights_t w3;
    weights_make(&w3, ref, 3);
    w3.ann.kind = RLX__TRAJECTORY_KIND__TRAJECTORY_KIND_GFLOW;
    out.weight_announce = &w3.ann;
    fh_send(&h, &out);
    serve_weights(&h, &w3, -1, &window, NULL);
    env = fh_expect(&h, RLX__ENVELOPE__BODY_ERROR, 10.0);
    TU_CHECK(env && strstr(env->error->message, "v3") && strstr(env->error->message, "gflow"),
             "Error for weights of the wrong kind: %s", env ? env->error->message : "(none)");
    wire_free(&env);
    free(w3.blob);

    run.stop = 1;
    pthread_join(th, NULL);
    const actor_stats_t *st = actor_stats(run.a);
    TU_CHECK(st->items == 2 && st->policy_version == 1 && st->weight_loads == 1 &&
                 st->blobs_bad == 2 && st->weights_nonfinite == 1,
             "stats: items %llu version %llu loads %llu bad blobs %llu non-finite %llu",
             (unsigned long long)st->items, (unsigned long long)st->policy_version,
             (unsigned long long)st->weight_loads, (unsigned long long)st->blobs_bad,
             (unsigned long long)st->weights_nonfinite);
    printf("ok   NaN weights v2 and mislabelled v3 refused with an Error; v1 kept and sampled\n");
    actor_destroy(&run.a);
    free(w1.blob);
    free(w2.blob);
    gpt_destroy(&ref);
    fh_close(&h);
}

// ---- the sampler on a model with NaN logits: fails, never an out-of-range token ----------------

static void test_sampler_nan_logits(void) {
    gpt_config_t cfg = {.n_layer = 1, .n_embd = 16, .n_head = 2, .ctx_len = 32, .vocab = GPT_VOCAB};
    for (int mode = 0; mode < 3; mode++) { // all weights NaN; one +inf; greedy with NaN
        gpt_t *m = gpt_new(&cfg, 2, 11);
        if (mode == 1)
            m->ps.w[m->ps.n / 2] = INFINITY;
        else
            for (size_t i = 0; i < m->ps.n; i++)
                m->ps.w[i] = NAN;
        sampler_t *s = sampler_new(m, 2);
        int prompt[4] = {GPT_TOK_BOS, '1', GPT_TOK_BOS, '2'}, off[3] = {0, 2, 4};
        sample_config_t sc = {.temperature = mode == 2 ? 0.0f : 1.0f, .max_new = 8, .seed = 3};
        sc.stop[sc.n_stop++] = GPT_TOK_EOS;
        int tok[2 * 8], len[2];
        float lp[2 * 8];
        for (int i = 0; i < 16; i++)
            tok[i] = 0;
        int rc = sampler_generate(s, prompt, off, 2, &sc, 0, tok, lp, len);
        int bad = 0;
        for (int i = 0; i < 2; i++)
            for (int t = 0; t < len[i] && t < 8; t++)
                bad += tok[i * 8 + t] < 0 || tok[i * 8 + t] >= GPT_VOCAB;
        TU_CHECK(rc == SAMPLER_NONFINITE && bad == 0,
                 "sampler on non-finite logits (mode %d): rc %d (want %d), %d tokens out of range",
                 mode, rc, SAMPLER_NONFINITE, bad);
        sampler_destroy(&s);
        gpt_destroy(&m);
    }
    printf("ok   sampler: NaN/inf logits give SAMPLER_NONFINITE, no token out of range\n");
}

// ---- the executable: SIGTERM -> Bye, exit 0
// ---------------------------------------------------------

static void test_actor_sigterm(void *ctx) {
    fake_hub_t h;
    fh_open(&h, ctx);
    gpt_config_t cfg = {.n_layer = 1, .n_embd = 16, .n_head = 2, .ctx_len = 32, .vocab = GPT_VOCAB};
    gpt_t *m = gpt_new(&cfg, 1, 3);
    char path[512], log[512], err[256];
    snprintf(path, sizeof path, "%s/initial.ckpt", tmpdir);
    snprintf(log, sizeof log, "%s/actor.log", tmpdir);
    if (gpt_save(m, path, NULL, 0, err, sizeof err) != 0)
        RLX_DIE("gpt_save: %s", err);
    gpt_destroy(&m);
    char *argv[] = {(char *)tu_bin_path("rlx-actor"),
                    "--hub",
                    h.ep,
                    "--name",
                    "a-sig",
                    "--model",
                    path,
                    "--heartbeat-ms",
                    "200",
                    "--threads",
                    "1",
                    NULL};
    pid_t pid = tu_spawn(argv, log);
    Rlx__Envelope *env = fh_expect(&h, RLX__ENVELOPE__BODY_HELLO, 10.0);
    TU_CHECK(env != NULL, "rlx-actor: no Hello");
    wire_free(&env);
    Rlx__Welcome wel = RLX__WELCOME__INIT;
    wel.worker_id = 9;
    wel.heartbeat_interval_ms = 200;
    wel.heartbeat_liveness = 50;
    Rlx__Envelope out = RLX__ENVELOPE__INIT;
    out.body_case = RLX__ENVELOPE__BODY_WELCOME;
    out.welcome = &wel;
    fh_send(&h, &out);
    env = fh_expect(&h, RLX__ENVELOPE__BODY_WORK_REQUEST, 5.0);
    TU_CHECK(env != NULL, "rlx-actor: WorkRequest after Welcome");
    wire_free(&env);
    env = fh_expect(&h, RLX__ENVELOPE__BODY_HEARTBEAT, 2.0);
    TU_CHECK(env && env->heartbeat->worker_id == 9, "rlx-actor: heartbeat");
    wire_free(&env);
    double t0 = rlx_now();
    kill(pid, SIGTERM);
    env = fh_expect(&h, RLX__ENVELOPE__BODY_BYE, 5.0);
    TU_CHECK(env && env->bye->worker_id == 9, "rlx-actor: Bye after SIGTERM");
    wire_free(&env);
    int st = tu_wait(pid, 10.0);
    TU_CHECK(st == 0, "rlx-actor: exit status %d after SIGTERM, want 0", st);
    printf("ok   rlx-actor: SIGTERM -> Bye and exit %d in %.2f s\n", st, rlx_now() - t0);
    if (tu_failures) {
        char *text = tu_read_file(log, NULL);
        fprintf(stderr, "---- rlx-actor log ----\n%s----\n", text ? text : "(none)");
        free(text);
    }
    fh_close(&h);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_actor.XXXXXX");
    if (!mkdtemp(tmpdir))
        RLX_DIE("mkdtemp failed");
    void *ctx = zmq_ctx_new();
    test_sampler_nan_logits();
    test_actor_thread(ctx);
    test_actor_rejoin(ctx);
    test_actor_nan_weights(ctx);
    test_actor_sigterm(ctx);
    zmq_ctx_term(ctx);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return tu_finish("test_actor");
}
