// main.c (rlx-actor): parses options, installs SIGINT/SIGTERM handlers and runs the actor
// (actor.h) until it is stopped, the hub says Bye, or --max-items are done.
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zmq.h>

#include "actor.h"

static volatile sig_atomic_t stop_flag = 0;

static void on_signal(int sig) {
    (void)sig;
    stop_flag = 1;
}

static void usage(FILE *out) {
    fprintf(out, "usage: rlx-actor --hub tcp://HOST:PORT [options]\n"
                 "  --hub EP            hub endpoint (required)\n"
                 "  --name NAME         name for logs (default actor-PID)\n"
                 "  --threads N         OpenMP threads for sampling (default: OMP_NUM_THREADS)\n"
                 "  --batch N           most sequences per sampler call (default 16)\n"
                 "  --heartbeat-ms MS   heartbeat interval until the hub says (default 1000)\n"
                 "  --seed N            seed for items that carry none (default 1)\n"
                 "  --credits N         work items held at once (default 1)\n"
                 "  --model CKPT        initial weights (else wait for the hub's)\n"
                 "  --max-items N       exit after N work items (default: run until stopped)\n"
                 "  --run-id ID         run to join (default: the hub's)\n");
}

static long parse_long(const char *opt, const char *v, long lo) {
    char *end;
    long x = strtol(v, &end, 10);
    if (*v == 0 || *end != 0 || x < lo) {
        fprintf(stderr, "rlx-actor: %s wants an integer >= %ld, got \"%s\"\n", opt, lo, v);
        exit(2);
    }
    return x;
}

int main(int argc, char **argv) {
    actor_config_t c = actor_defaults();
    char name[64];
    snprintf(name, sizeof name, "actor-%ld", (long)getpid());
    c.name = name;
    enum { O_HUB = 1, O_NAME, O_THREADS, O_BATCH, O_HB, O_SEED, O_CREDITS, O_MODEL, O_MAX, O_RUN };
    static const struct option opts[] = {{"hub", required_argument, 0, O_HUB},
                                         {"name", required_argument, 0, O_NAME},
                                         {"threads", required_argument, 0, O_THREADS},
                                         {"batch", required_argument, 0, O_BATCH},
                                         {"heartbeat-ms", required_argument, 0, O_HB},
                                         {"seed", required_argument, 0, O_SEED},
                                         {"credits", required_argument, 0, O_CREDITS},
                                         {"model", required_argument, 0, O_MODEL},
                                         {"max-items", required_argument, 0, O_MAX},
                                         {"run-id", required_argument, 0, O_RUN},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case O_HUB:
            c.hub = optarg;
            break;
        case O_NAME:
            c.name = optarg;
            break;
        case O_THREADS:
            c.threads = (int)parse_long("--threads", optarg, 0);
            break;
        case O_BATCH:
            c.batch = (int)parse_long("--batch", optarg, 1);
            break;
        case O_HB:
            c.heartbeat_ms = (int)parse_long("--heartbeat-ms", optarg, 1);
            break;
        case O_SEED:
            c.seed = (uint64_t)strtoull(optarg, NULL, 10);
            break;
        case O_CREDITS:
            c.credits = (int)parse_long("--credits", optarg, 1);
            break;
        case O_MODEL:
            c.model_path = optarg;
            break;
        case O_MAX:
            c.max_items = parse_long("--max-items", optarg, 0);
            break;
        case O_RUN:
            c.run_id = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc || !c.hub) {
        usage(stderr);
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    void *ctx = zmq_ctx_new();
    if (!ctx) {
        fprintf(stderr, "rlx-actor: cannot create a ZeroMQ context\n");
        return 1;
    }
    actor_t *a = actor_new(&c, ctx);
    if (!a) {
        zmq_ctx_term(ctx);
        return 1;
    }
    int rc = actor_run(a, &stop_flag);
    actor_destroy(&a);
    zmq_ctx_term(ctx);
    return rc;
}
