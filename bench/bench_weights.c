// bench_weights.c: rlx-bench-weights, weight broadcast time: from hub_publish_weights of a
// new version until every one of N real actors (actor/actor.c, each in its own thread with
// its own ZeroMQ context, as separate processes would have) holds it, i.e. has fetched every
// chunk (WeightAnnounce -> pipelined WeightRequests -> WeightChunks, CRC per chunk and for
// the whole blob), parsed the checkpoint and loaded it into its model. Printed next to the
// time of one plain memcpy of the same bytes.
//
// Per model size: a gpt (2 layers, 4 heads, ctx 16) whose params-only checkpoint (what the
// learner publishes) is about the wanted size. Per actor count: a fresh hub and N actors;
// version 1 is published first as a warm-up (the first install builds each actor's model),
// then versions 2.. are timed, --repeat times; the median is printed. The hub hands out at
// most one tiny work item in all (max_in_flight 1, one prompt, k 1, one token, no reward
// workers), so sampling never competes with the fetch.
//
// "Holds it" is read from actor_stats(a)->policy_version, polled every 0.2 ms from the main
// thread with a relaxed atomic load: the field is an aligned 64-bit counter the actor thread
// writes once per install (a benchmark-only peek; rlx code talks over sockets). Every wait has
// a deadline (--timeout-s per broadcast). Not a test: it prints figures.
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <omp.h>
#include <zlib.h>
#include <zmq.h>

#include "actor.h"
#include "bench_net.h"
#include "gpt.h"
#include "hub.h"
#include "paramset.h"
#include "util.h"
#include "wire.h"

#define RUN_ID "bench-weights"
#define MAX_LIST 16
#define JOIN_TIMEOUT_S 10.0

typedef struct {
    actor_t *a;                 // the actor
    void *ctx;                  // its own ZeroMQ context
    volatile sig_atomic_t stop; // set by the main thread
    int rc;                     // actor_run's result
    pthread_t th;               // its thread
    int started;                // th is running
} runner_t;

static void *run_actor(void *arg) {
    runner_t *r = arg;
    pthread_setname_np(pthread_self(), "b-actor");
    omp_set_num_threads(1); // per-thread setting: sampling (one tiny item) stays on one core
    r->rc = actor_run(r->a, &r->stop);
    return NULL;
}

static uint64_t held_version(const runner_t *r) {
    return __atomic_load_n(&actor_stats(r->a)->policy_version, __ATOMIC_RELAXED);
}

// Parameters of a gpt (same formula as gpt.c's parameter table).
static size_t gpt_params(const gpt_config_t *c) {
    size_t C = (size_t)c->n_embd, L = (size_t)c->n_layer;
    return (size_t)c->vocab * C + (size_t)c->ctx_len * C + L * (12 * C * C + 13 * C) + 2 * C;
}

// A gpt config whose parameters take about target_bytes as float32.
static gpt_config_t config_for(double target_bytes) {
    gpt_config_t best = {.n_layer = 2, .n_embd = 4, .n_head = 4, .ctx_len = 16, .vocab = GPT_VOCAB};
    gpt_config_t c = best;
    double err = 1e300;
    for (c.n_embd = 4; c.n_embd <= 16384; c.n_embd += 4) {
        double d = 4.0 * (double)gpt_params(&c) - target_bytes;
        if (d * d < err) {
            err = d * d;
            best = c;
        }
        if (d > 0)
            break;
    }
    return best;
}

// The bytes of a params-only checkpoint of a fresh model with config c (as the learner
// publishes: no optimizer state). Dies on failure.
static uint8_t *make_blob(const gpt_config_t *c, size_t *len) {
    gpt_t *m = gpt_new(c, 1, 7);
    paramset_t ps = m->ps;
    ps.m = ps.v = NULL;
    int32_t cfg[CKPT_CONFIG_LEN] = {c->n_layer, c->n_embd, c->n_head, c->ctx_len, c->vocab};
    char path[256], err[256];
    snprintf(path, sizeof path, "/tmp/rlx-bench-weights-%d.ckpt", (int)getpid());
    if (paramset_save(&ps, path, CKPT_KIND_GPT, cfg, NULL, 0, err, sizeof err) != 0)
        RLX_DIE("cannot write the checkpoint %s: %s", path, err);
    gpt_destroy(&m);
    FILE *f = fopen(path, "rb");
    if (!f)
        RLX_DIE("cannot read back %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)n);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n)
        RLX_DIE("cannot read back %s", path);
    fclose(f);
    unlink(path);
    *len = (size_t)n;
    return buf;
}

// Median seconds of `repeat` plain memcpys of len bytes into a buffer already touched.
static double memcpy_s(const uint8_t *src, size_t len, int repeat, double *crc_s) {
    uint8_t *dst = malloc(len);
    if (!dst)
        RLX_DIE("out of memory");
    memset(dst, 1, len);
    double t[MAX_LIST], c[MAX_LIST];
    volatile uint32_t sink = 0;
    for (int r = 0; r < repeat && r < MAX_LIST; r++) {
        double t0 = rlx_now();
        memcpy(dst, src, len);
        t[r] = rlx_now() - t0;
        sink ^= dst[len / 2];
        t0 = rlx_now();
        sink ^= (uint32_t)crc32(0L, dst, (uInt)len);
        c[r] = rlx_now() - t0;
    }
    (void)sink;
    free(dst);
    int n = repeat < MAX_LIST ? repeat : MAX_LIST;
    *crc_s = bench_median(c, n);
    return bench_median(t, n);
}

// Waits until every actor holds version v or the deadline passes. Seconds since t0, or -1.
static double wait_all(runner_t *rs, int n, uint64_t v, double t0, double timeout_s) {
    struct timespec nap = {0, 200000};
    for (;;) {
        int all = 1;
        for (int i = 0; i < n && all; i++)
            all = held_version(&rs[i]) >= v;
        double now = rlx_now();
        if (all)
            return now - t0;
        if (now - t0 > timeout_s)
            return -1;
        nanosleep(&nap, NULL);
    }
}

// Thread names: the hub thread keeps the process's name (hub_name); the main thread renames
// itself b-main once the hub runs; actors are b-actor; ZeroMQ I/O threads ZMQbg/IO/N.
static char hub_name[32];

typedef struct {
    double hub_s;   // CPU of the hub thread
    double actor_s; // CPU of all actor threads
    double io_s;    // CPU of every ZeroMQ I/O thread
} cpu_t;

static cpu_t cpu_now(void) {
    cpu_t c = {bench_thread_cpu_s(hub_name), bench_thread_cpu_s("b-actor"),
               bench_thread_cpu_s("ZMQbg")};
    return c;
}

typedef struct {
    double bcast_s[MAX_LIST];   // publish -> all hold it, per repeat
    cpu_t cpu[MAX_LIST];        // CPU used during each broadcast
    double publish_s[MAX_LIST]; // time hub_publish_weights took, per repeat
    int n;                      // repeats done
    int ok;                     // every broadcast finished in time
} result_t;

static result_t run_case(const char *ep, const char *prompts, const uint8_t *blob, size_t len,
                         int n_actors, int repeat, int window, double timeout_s) {
    result_t res;
    memset(&res, 0, sizeof res);
    void *ctx = zmq_ctx_new();
    hub_config_t hc = hub_defaults();
    hc.bind = ep;
    hc.run_id = RUN_ID;
    hc.train_prompts = prompts;
    hc.prompts_per_item = 1;
    hc.samples_per_prompt = 1;
    hc.max_new_tokens = 1;
    hc.max_in_flight = 1; // one tiny work item in all: no sampling during the fetches
    pthread_setname_np(pthread_self(), hub_name); // the hub thread inherits it
    hub_t *h = hub_start(&hc, ctx);
    if (!h)
        RLX_DIE("hub_start failed on %s (hint: --port P or --transport ipc)", ep);
    pthread_setname_np(pthread_self(), "b-main");

    runner_t *rs = calloc((size_t)n_actors, sizeof *rs);
    if (!rs)
        RLX_DIE("out of memory");
    for (int i = 0; i < n_actors; i++) {
        char name[32];
        snprintf(name, sizeof name, "bench-actor-%d", i);
        actor_config_t c = actor_defaults();
        c.hub = ep;
        c.name = name;
        c.run_id = RUN_ID;
        c.batch = 1;
        c.threads = 0; // set per thread in run_actor
        c.heartbeat_ms = 500;
        c.stats_interval_ms = 0;
        c.weight_window = window;
        rs[i].ctx = zmq_ctx_new();
        rs[i].a = actor_new(&c, rs[i].ctx);
        if (!rs[i].a)
            RLX_DIE("actor_new failed");
        rs[i].started = pthread_create(&rs[i].th, NULL, run_actor, &rs[i]) == 0;
        if (!rs[i].started)
            RLX_DIE("cannot start actor thread %d", i);
    }
    hub_counters_t k;
    double t_join = rlx_now();
    int joined = 0;
    while (!joined && rlx_now() - t_join < JOIN_TIMEOUT_S) {
        joined = hub_counters(h, &k, 1000) == 0 && (int)k.actors == n_actors;
        if (!joined)
            usleep(2000);
    }
    res.ok = joined;
    if (!joined)
        fprintf(stderr, "bench: %d actors did not join within %.0f s\n", n_actors, JOIN_TIMEOUT_S);

    // Warm-up: version 1 builds every actor's model.
    double t0 = rlx_now();
    if (res.ok && (hub_publish_weights(h, 1, blob, len) != 0 ||
                   wait_all(rs, n_actors, 1, t0, timeout_s) < 0)) {
        fprintf(stderr, "bench: warm-up version 1 did not reach all %d actors in %.0f s\n",
                n_actors, timeout_s);
        res.ok = 0;
    }
    for (int r = 0; res.ok && r < repeat && r < MAX_LIST; r++) {
        uint64_t v = (uint64_t)r + 2;
        cpu_t c0 = cpu_now();
        t0 = rlx_now();
        if (hub_publish_weights(h, v, blob, len) != 0) {
            fprintf(stderr, "bench: hub_publish_weights v%llu failed\n", (unsigned long long)v);
            res.ok = 0;
            break;
        }
        res.publish_s[r] = rlx_now() - t0;
        res.bcast_s[r] = wait_all(rs, n_actors, v, t0, timeout_s);
        if (res.bcast_s[r] < 0) {
            fprintf(stderr, "bench: v%llu did not reach all %d actors in %.0f s\n",
                    (unsigned long long)v, n_actors, timeout_s);
            res.ok = 0;
            break;
        }
        cpu_t c1 = cpu_now();
        res.cpu[r].hub_s = c1.hub_s - c0.hub_s;
        res.cpu[r].actor_s = c1.actor_s - c0.actor_s;
        res.cpu[r].io_s = c1.io_s - c0.io_s;
        res.n++;
    }
    for (int i = 0; i < n_actors; i++)
        rs[i].stop = 1;
    for (int i = 0; i < n_actors; i++) {
        if (rs[i].started && bench_join(rs[i].th, 10.0) != 0) {
            fprintf(stderr, "bench: actor thread %d did not stop in time\n", i);
            exit(1);
        }
        const actor_stats_t *st = actor_stats(rs[i].a);
        if (st->chunks_bad || st->blobs_bad || rs[i].rc != 0)
            fprintf(stderr, "bench: actor %d: rc %d, %llu bad chunks, %llu bad blobs\n", i,
                    rs[i].rc, (unsigned long long)st->chunks_bad,
                    (unsigned long long)st->blobs_bad);
        actor_destroy(&rs[i].a);
        zmq_ctx_term(rs[i].ctx);
    }
    free(rs);
    hub_stop(&h);
    zmq_ctx_term(ctx);
    return res;
}

// Parses "1,4,8" into v (at most MAX_LIST). Count, or -1.
static int parse_list(const char *s, double *v) {
    int n = 0;
    char *end;
    while (*s && n < MAX_LIST) {
        v[n++] = strtod(s, &end);
        if (end == s || (*end && *end != ','))
            return -1;
        s = *end ? end + 1 : end;
    }
    return n;
}

static void usage(FILE *f) {
    fprintf(f, "usage: rlx-bench-weights [--sizes-mb 1,40] [--actors 1,4,8] [--repeat 3]\n"
               "         [--transport tcp|ipc] [--port P] [--window 4] [--timeout-s 60]\n"
               "Time from hub_publish_weights until N real actors hold the new version, per\n"
               "model size (MiB of float32 parameters) and actor count, median of --repeat,\n"
               "next to one memcpy of the same bytes. --window is the actors' weight_window.\n");
}

int main(int argc, char **argv) {
    double sizes[MAX_LIST] = {1, 40}, actors[MAX_LIST] = {1, 4, 8};
    int n_sizes = 2, n_actors = 3, repeat = 3, window = actor_defaults().weight_window;
    int port = bench_default_port();
    const char *transport = "tcp";
    double timeout_s = 60;
    static const struct option opts[] = {
        {"sizes-mb", 1, 0, 's'},  {"actors", 1, 0, 'a'}, {"repeat", 1, 0, 'r'},
        {"transport", 1, 0, 't'}, {"port", 1, 0, 'p'},   {"window", 1, 0, 'w'},
        {"timeout-s", 1, 0, 'D'}, {"help", 0, 0, 'h'},   {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 's':
            n_sizes = parse_list(optarg, sizes);
            break;
        case 'a':
            n_actors = parse_list(optarg, actors);
            break;
        case 'r':
            repeat = atoi(optarg);
            break;
        case 't':
            transport = optarg;
            break;
        case 'p':
            port = atoi(optarg);
            break;
        case 'w':
            window = atoi(optarg);
            break;
        case 'D':
            timeout_s = atof(optarg);
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
    if (n_sizes < 1 || n_actors < 1 || repeat < 1 || repeat > MAX_LIST || window < 1 ||
        timeout_s <= 0 || bench_endpoint(probe, sizeof probe, transport, port, "x") != 0) {
        usage(stderr);
        return 2;
    }
    for (int i = 0; i < n_actors; i++)
        if (actors[i] < 1) {
            usage(stderr);
            return 2;
        }
    bench_process_name(hub_name, sizeof hub_name, "rlx-bench-weigh");
    char prompts[256];
    if (bench_write_prompts(prompts, sizeof prompts, 10) != 0)
        return 1;
    printf("rlx-bench-weights: %s, chunk %zu bytes, actor weight_window %d, median of %d\n",
           transport, (size_t)WIRE_WEIGHT_CHUNK_BYTES, window, repeat);
    printf("%8s %10s %5s %6s %10s %10s %10s %9s %9s %8s %9s | %13s %11s %10s\n", "model",
           "blob_bytes", "C", "actors", "bcast_ms", "min_ms", "max_ms", "publish", "memcpy_ms",
           "crc_ms", "x_memcpy", "cpu_ms/actor", "cpu_ms_hub", "cpu_ms_io");
    fflush(stdout);
    int failed = 0, run = 0;
    for (int si = 0; si < n_sizes; si++) {
        gpt_config_t cfg = config_for(sizes[si] * 1048576.0);
        size_t len = 0;
        uint8_t *blob = make_blob(&cfg, &len);
        double crc = 0, mc = memcpy_s(blob, len, repeat, &crc);
        for (int ai = 0; ai < n_actors; ai++) {
            char ep[256];
            bench_endpoint(ep, sizeof ep, transport, port + run++, "hub");
            result_t r =
                run_case(ep, prompts, blob, len, (int)actors[ai], repeat, window, timeout_s);
            bench_endpoint_cleanup(ep);
            failed |= !r.ok;
            double lo = 1e30, hi = 0;
            for (int i = 0; i < r.n; i++) {
                lo = r.bcast_s[i] < lo ? r.bcast_s[i] : lo;
                hi = r.bcast_s[i] > hi ? r.bcast_s[i] : hi;
            }
            double med = bench_median(r.bcast_s, r.n), pub = bench_median(r.publish_s, r.n);
            double ca[MAX_LIST], ch[MAX_LIST], ci[MAX_LIST];
            for (int i = 0; i < r.n; i++) {
                ca[i] = r.cpu[i].actor_s / actors[ai];
                ch[i] = r.cpu[i].hub_s;
                ci[i] = r.cpu[i].io_s;
            }
            printf("%6.0fMB %10zu %5d %6d %10.2f %10.2f %10.2f %9.2f %9.3f %8.2f %9.0f | %13.1f "
                   "%11.1f %10.1f%s\n",
                   sizes[si], len, cfg.n_embd, (int)actors[ai], med * 1e3, r.n ? lo * 1e3 : 0,
                   hi * 1e3, pub * 1e3, mc * 1e3, crc * 1e3, mc > 0 ? med / mc : 0,
                   bench_median(ca, r.n) * 1e3, bench_median(ch, r.n) * 1e3,
                   bench_median(ci, r.n) * 1e3, r.ok ? "" : "  FAILED");
            fflush(stdout);
        }
        free(blob);
    }
    unlink(prompts);
    return failed ? 1 : 0;
}
