// main.c (rlx-reward): parses options, installs SIGINT/SIGTERM handlers and runs the reward
// worker (reward.h) until it is stopped, the hub says Bye, or --max-requests are answered.
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zmq.h>

#include "reward.h"
#include "scorers.h"

static volatile sig_atomic_t stop_flag = 0;

static void on_signal(int sig) {
    (void)sig;
    stop_flag = 1;
}

static void usage(FILE *out) {
    fprintf(out,
            "usage: rlx-reward --hub tcp://HOST:PORT [options]\n"
            "  --hub EP              hub endpoint (required)\n"
            "  --name NAME           name for logs (default reward-PID)\n"
            "  --credits N           score requests held at once (default 2)\n"
            "  --heartbeat-ms MS     heartbeat interval until the hub says (default 1000)\n"
            "  --scorer NAMES        comma-separated scorers served (default: all built-ins,\n"
            "                        %s; with --exec: the names the external scorer answers\n"
            "                        for, default \"exec\")\n"
            "  --classifier CKPT     digit classifier (rlx-train-classifier) for the image\n"
            "                        scorers digit_logprob/digit-logp, digit_prob/digit-prob;\n"
            "                        the other image scorers: ink, symmetry, toy/toy-mode,\n"
            "                        toy-density (diffusion payloads, docs/diffusion.md)\n"
            "  --exec CMD            external scorer: JSON lines over stdin/stdout (see\n"
            "                        docs/scorers.md); every item goes to it\n"
            "  --exec-timeout-ms MS  deadline per external reply (default 5000)\n"
            "  --max-requests N      exit after N answered requests (default: until stopped)\n"
            "  --run-id ID           run to join (default: the hub's)\n",
            scorer_list());
}

static long parse_long(const char *opt, const char *v, long lo) {
    char *end;
    long x = strtol(v, &end, 10);
    if (*v == 0 || *end != 0 || x < lo) {
        fprintf(stderr, "rlx-reward: %s wants an integer >= %ld, got \"%s\"\n", opt, lo, v);
        exit(2);
    }
    return x;
}

int main(int argc, char **argv) {
    reward_config_t c = reward_defaults();
    char name[64];
    snprintf(name, sizeof name, "reward-%ld", (long)getpid());
    c.name = name;
    enum { O_HUB = 1, O_NAME, O_CREDITS, O_HB, O_SCORER, O_EXEC, O_EXEC_TO, O_MAX, O_RUN, O_CLF };
    static const struct option opts[] = {{"hub", required_argument, 0, O_HUB},
                                         {"name", required_argument, 0, O_NAME},
                                         {"credits", required_argument, 0, O_CREDITS},
                                         {"heartbeat-ms", required_argument, 0, O_HB},
                                         {"scorer", required_argument, 0, O_SCORER},
                                         {"exec", required_argument, 0, O_EXEC},
                                         {"exec-timeout-ms", required_argument, 0, O_EXEC_TO},
                                         {"max-requests", required_argument, 0, O_MAX},
                                         {"run-id", required_argument, 0, O_RUN},
                                         {"classifier", required_argument, 0, O_CLF},
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
        case O_CREDITS:
            c.credits = (int)parse_long("--credits", optarg, 1);
            break;
        case O_HB:
            c.heartbeat_ms = (int)parse_long("--heartbeat-ms", optarg, 1);
            break;
        case O_SCORER:
            c.scorers = optarg;
            break;
        case O_EXEC:
            c.exec_cmd = optarg;
            break;
        case O_EXEC_TO:
            c.exec_timeout_ms = (int)parse_long("--exec-timeout-ms", optarg, 1);
            break;
        case O_MAX:
            c.max_requests = parse_long("--max-requests", optarg, 0);
            break;
        case O_RUN:
            c.run_id = optarg;
            break;
        case O_CLF:
            c.classifier = optarg;
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
    signal(SIGPIPE, SIG_IGN); // a dead --exec scorer must not kill the worker

    void *ctx = zmq_ctx_new();
    if (!ctx) {
        fprintf(stderr, "rlx-reward: cannot create a ZeroMQ context\n");
        return 1;
    }
    reward_t *r = reward_new(&c, ctx);
    if (!r) {
        zmq_ctx_term(ctx);
        return 1;
    }
    int rc = reward_run(r, &stop_flag);
    reward_destroy(&r);
    zmq_ctx_term(ctx);
    return rc;
}
