// test_launch.c: rlx-launch (cluster/launch.c) run as a user runs it. First --dry-run on a config
// written to a temporary directory: command-line overrides, ${...} substitution, flags from
// keys (bare, omitted, continued lines), --out and --only, and bad configs (exit 2 with the
// file and line). Then real runs in which run.bin points at stand-in shell scripts for mpirun,
// rlx-learner, rlx-actor, rlx-reward, rlx-task-add and rlx-pretrain: the launcher streams the
// preparation steps, ends with the learner's exit code, restarts a killed actor, SIGTERMs the
// workers and SIGKILLs one that ignores SIGTERM, reaps everything, prints progress from the
// metrics file; and on SIGINT it stops everything within a deadline and exits 130.
// (The end-to-end run with the real executables is another test.)
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

static char tmp[256];  // the test's temporary directory
static char ini[300];  // the config under test
static char exe[4096]; // rlx-launch

static void write_file(const char *path, const char *text, mode_t mode) {
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
        exit(1);
    }
    fputs(text, f);
    fclose(f);
    chmod(path, mode);
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int count_of(const char *hay, const char *needle) {
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

// The line of text that contains needle, copied to out ("" if none).
static const char *line_with(const char *text, const char *needle, char *out, size_t cap) {
    const char *p = strstr(text, needle);
    out[0] = 0;
    if (!p)
        return out;
    while (p > text && p[-1] != '\n')
        p--;
    const char *e = strchr(p, '\n');
    size_t n = e ? (size_t)(e - p) : strlen(p);
    if (n >= cap)
        n = cap - 1;
    memcpy(out, p, n);
    out[n] = 0;
    return out;
}

// Runs rlx-launch with args (NULL-terminated, after the executable); returns the exit code
// and the combined stdout+stderr in *output (caller frees).
static int launch(char **output, const char *first, ...) {
    char *argv[64];
    int n = 0;
    argv[n++] = exe;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a && n < 63; a = va_arg(ap, const char *))
        argv[n++] = (char *)a;
    va_end(ap);
    argv[n] = NULL;
    char log[400];
    snprintf(log, sizeof log, "%s/launch.out", tmp);
    unlink(log);
    int rc = tu_run(argv, log, 60);
    *output = tu_read_file(log, NULL);
    if (!*output)
        *output = strdup("");
    return rc;
}

static const char *CONFIG = "; a test config\n"
                            "[run]\n"
                            "name = t1\n"
                            "out = %s/run   ; inline comment\n"
                            "hub = tcp://${env.RLX_TEST_HUB_HOST}:5999\n"
                            "bind = tcp://*:5999\n"
                            "bin = %s/bin\n"
                            "\n"
                            "[task]\n"
                            "kind = add\n"
                            "noise = 0.3\n"
                            "\n"
                            "[pretrain]\n"
                            "out = ${run.out}/pre.ckpt\n"
                            "data = ${task.dir}/corpus.txt\n"
                            "layers = 2\n"
                            "\n"
                            "[learner]\n"
                            "np = 1\n"
                            "mpi_args = --oversubscribe --bind-to none\n"
                            "run-id = ${run.name}\n"
                            "init = ${pretrain.out}\n"
                            "resume = false\n"
                            "normalize = true\n"
                            "verbose =\n"
                            "steps = 100\n"
                            "\n"
                            "[actor]\n"
                            "count = 2\n"
                            "threads = 1\n"
                            "\n"
                            "[reward]\n"
                            "count = 1\n"
                            "scorer = exact\n"
                            "exec = python3 my_scorer.py\n"
                            "  --digits 2\n";

static void test_dry_run(void) {
    char text[4096], line[4096], want[2048], *out;
    snprintf(text, sizeof text, CONFIG, tmp, tmp);
    write_file(ini, text, 0644);

    int rc =
        launch(&out, ini, "learner.np=2", "actor.count=3", "learner.steps=7", "--dry-run", NULL);
    TU_CHECK(rc == 0, "dry run exit code %d, output:\n%s", rc, out);
    line_with(out, "rlx-learner", line, sizeof line);
    TU_CHECK(strstr(line, "mpirun -np 2 --oversubscribe --bind-to none "),
             "learner.np=2 -> 'mpirun -np 2', mpi_args split: %s", line);
    snprintf(want, sizeof want,
             "%s/bin/rlx-learner --bind 'tcp://*:5999' --metrics %s/run/metrics.jsonl", tmp, tmp);
    TU_CHECK(strstr(line, want), "learner command starts with bin, --bind, --metrics: %s", line);
    snprintf(want, sizeof want, "--init %s/run/pre.ckpt ", tmp);
    TU_CHECK(strstr(line, want), "${pretrain.out} -> ${run.out}/pre.ckpt: %s", line);
    TU_CHECK(strstr(line, "--run-id t1 "), "${run.name}: %s", line);
    TU_CHECK(!strstr(line, "--resume"), "resume = false -> flag omitted: %s", line);
    TU_CHECK(strstr(line, "--normalize --verbose --steps 7"),
             "true and empty -> bare flags; override learner.steps=7 in place: %s", line);
    TU_CHECK(!strstr(line, "--np ") && !strstr(line, "--mpi_args"),
             "launcher keys are not passed on: %s", line);
    if (geteuid() == 0)
        TU_CHECK(strstr(line, "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun"),
                 "as root: mpirun gets OMPI_ALLOW_RUN_AS_ROOT: %s", line);

    TU_CHECK(count_of(out, "/rlx-actor ") == 3, "actor.count=3 -> 3 actor lines:\n%s", out);
    for (int i = 0; i < 3; i++) {
        snprintf(want, sizeof want, "--name actor-%d ", i);
        line_with(out, want, line, sizeof line);
        TU_CHECK(strstr(line, "/rlx-actor --hub tcp://127.0.0.1:5999 --name actor-") &&
                     strstr(line, "--threads 1"),
                 "actor %d: --hub from run.hub (via ${env...}), --name, flags: '%s'", i, line);
    }
    line_with(out, "/rlx-reward ", line, sizeof line);
    TU_CHECK(count_of(out, "/rlx-reward ") == 1 &&
                 strstr(line, "--hub tcp://127.0.0.1:5999 --name reward-0 --scorer exact "
                              "--exec 'python3 my_scorer.py --digits 2'"),
             "reward worker: --exec with a continued line, quoted: %s", line);
    snprintf(want, sizeof want, "%s/bin/rlx-task-add --dir %s/run/task --noise 0.3\n", tmp, tmp);
    TU_CHECK(strstr(out, want), "task: %s", want);
    snprintf(want, sizeof want,
             "%s/bin/rlx-pretrain --out %s/run/pre.ckpt.partial --resume --data "
             "%s/run/task/corpus.txt --layers 2\n",
             tmp, tmp, tmp);
    TU_CHECK(strstr(out, want), "pretrain: %s", want);
    free(out);

    // --out moves everything that refers to ${run.out}
    char other[300];
    snprintf(other, sizeof other, "%s/other", tmp);
    rc = launch(&out, ini, "--dry-run", "--out", other, NULL);
    snprintf(want, sizeof want,
             "--metrics %s/other/metrics.jsonl --run-id t1 --init %s/other/pre.ckpt", tmp, tmp);
    TU_CHECK(rc == 0 && strstr(out, want), "--out DIR: want '%s' in:\n%s", want, out);
    free(out);

    // --only actor: just the actors, named after the host
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    rc = launch(&out, ini, "--only", "actor", "actor.count=4", "--dry-run", NULL);
    snprintf(want, sizeof want, "--name actor-%s-3 ", host);
    TU_CHECK(rc == 0 && count_of(out, "/rlx-actor ") == 4 && strstr(out, want) &&
                 !strstr(out, "mpirun") && !strstr(out, "rlx-reward") &&
                 !strstr(out, "rlx-pretrain") && !strstr(out, "rlx-task-add"),
             "--only actor: 4 actors named actor-HOST-i and nothing else:\n%s", out);
    free(out);

    // a value set on the command line for an absent key, a bool-valued flag set to false
    rc = launch(&out, ini, "actor.model=${pretrain.out}", "actor.threads=false", "--dry-run", NULL);
    snprintf(want, sizeof want, "--name actor-0 --model %s/run/pre.ckpt\n", tmp);
    TU_CHECK(rc == 0 && strstr(out, want), "new key from the command line, 'false' omitted: %s",
             out);
    free(out);
}

static void expect_config_error(const char *what, const char *text, const char *override,
                                const char *message) {
    char path[400], *out;
    snprintf(path, sizeof path, "%s/bad.ini", tmp);
    write_file(path, text, 0644);
    int rc = override ? launch(&out, path, override, "--dry-run", NULL)
                      : launch(&out, path, "--dry-run", NULL);
    TU_CHECK(rc == 2 && strstr(out, message), "%s: want exit 2 and '%s', got %d:\n%s", what,
             message, rc, out);
    free(out);
}

static void test_bad_configs(void) {
    char msg[400];
    snprintf(msg, sizeof msg, "%s/bad.ini:3: syntax error", tmp);
    expect_config_error("syntax error", "[run]\nname = x\nthis line has no equals sign\n", NULL,
                        msg);
    snprintf(msg, sizeof msg, "%s/bad.ini:2: unknown section [lerner]", tmp);
    expect_config_error("unknown section", "[run]\n[lerner]\nnp = 2\n", NULL, msg);
    expect_config_error("empty unknown section", "[run]\n[lerner]\n", NULL, msg);
    snprintf(msg, sizeof msg, "%s/bad.ini:2: unknown key run.hubb", tmp);
    expect_config_error("unknown run key", "[run]\nhubb = tcp://x:1\n", NULL, msg);
    expect_config_error("unknown section on the command line", "[run]\nname = x\n", "lerner.np=2",
                        "unknown section [lerner]");
    expect_config_error("undefined reference", "[learner]\ninit = ${run.nope}/x\n", NULL,
                        "refers to ${run.nope}, which is not set");
    expect_config_error("reference loop", "[learner]\na = ${learner.b}\nb = ${learner.a}\n", NULL,
                        "reference loop");
    expect_config_error("bad number", "[learner]\nnp = two\n", NULL,
                        "learner.np = 'two': expected a number");
    expect_config_error("reserved key", "[learner]\nmetrics = m.jsonl\n", NULL,
                        "set run.metrics instead");
    expect_config_error("bad override", "[run]\n", "learner.np", "unexpected argument");
    char *out;
    int rc = launch(&out, "/nonexistent/x.ini", "--dry-run", NULL);
    TU_CHECK(rc == 2 && strstr(out, "cannot open config /nonexistent/x.ini"),
             "missing config: %d %s", rc, out);
    free(out);
}

// ---- real runs with stand-in programs ----------------------------------------------------------

static const char *MPIRUN_SH = "#!/bin/sh\n"
                               "# stand-in mpirun: skips -np N and options, runs the program\n"
                               "while [ $# -gt 0 ]; do\n"
                               "  case \"$1\" in\n"
                               "    -np|-n|--hostfile) shift 2 ;;\n"
                               "    -*) shift ;;\n"
                               "    *) break ;;\n"
                               "  esac\n"
                               "done\n"
                               "exec \"$@\"\n";

static const char *LEARNER_SH =
    "#!/bin/sh\n"
    "# stand-in learner: two metrics lines, runs --seconds, a summary line, exits --exit-code;\n"
    "# on SIGTERM writes the summary and exits 0\n"
    "m=''; code=0; secs=2; state=''\n"
    "while [ $# -gt 0 ]; do\n"
    "  case \"$1\" in\n"
    "    --metrics) m=\"$2\"; shift 2 ;;\n"
    "    --exit-code) code=\"$2\"; shift 2 ;;\n"
    "    --seconds) secs=\"$2\"; shift 2 ;;\n"
    "    --state) state=\"$2\"; shift 2 ;;\n"
    "    *) shift ;;\n"
    "  esac\n"
    "done\n"
    "mkdir -p \"$state\"\n"
    "echo \"${OMPI_ALLOW_RUN_AS_ROOT:-unset}\" > \"$state/learner.env\"\n"
    "summary() { echo '{\"summary\": true, \"sampled\": 640, \"trained\": 600, "
    "\"dropped_stale\": 30, \"dropped_invalid\": 10, \"in_flight\": 0}' >> \"$m\"; }\n"
    "trap 'echo $$ > \"$state/learner.term\"; summary; exit 0' TERM\n"
    "echo '{\"step\": 1, \"samples\": 64, \"reward_mean\": 0.25, \"lag_mean\": 0.5, "
    "\"lag_max\": 1, \"samples_per_s\": 32.0, \"queue_work\": 3, \"queue_score\": 1, "
    "\"queue_learner\": 0}' >> \"$m\"\n"
    "echo $$ > \"$state/learner.pid\"\n"
    "sleep 0.3 & wait $!\n"
    "echo '{\"step\": 2, \"samples\": 128, \"reward_mean\": 0.5, \"eval_accuracy\": 0.75, "
    "\"lag_mean\": 0.25, \"lag_max\": 1, \"samples_per_s\": 64.0}' >> \"$m\"\n"
    "sleep \"$secs\" & wait $!\n"
    "summary\n"
    "exit \"$code\"\n";

static const char *WORKER_SH =
    "#!/bin/sh\n"
    "# stand-in actor / reward worker: records its pid, runs until SIGTERM (records it too),\n"
    "# or ignores SIGTERM with --ignore-term\n"
    "name=''; state=''; ignore=0\n"
    "while [ $# -gt 0 ]; do\n"
    "  case \"$1\" in\n"
    "    --name) name=\"$2\"; shift 2 ;;\n"
    "    --state) state=\"$2\"; shift 2 ;;\n"
    "    --ignore-term) ignore=1; shift ;;\n"
    "    *) shift ;;\n"
    "  esac\n"
    "done\n"
    "mkdir -p \"$state\"\n"
    "if [ $ignore = 1 ]; then trap '' TERM; else trap 'echo $$ >> \"$state/$name.term\"; exit 0' "
    "TERM; fi\n"
    "echo $$ >> \"$state/$name.pids\"\n"
    "while :; do sleep 1 & wait $!; done\n";

static const char *TASK_SH = "#!/bin/sh\n"
                             "dir=''\n"
                             "while [ $# -gt 0 ]; do\n"
                             "  case \"$1\" in --dir) dir=\"$2\"; shift 2 ;; *) shift ;; esac\n"
                             "done\n"
                             "mkdir -p \"$dir\"\n"
                             "for f in corpus.txt train.tsv eval.tsv; do echo x > \"$dir/$f\"; "
                             "done\n"
                             "echo \"task files in $dir\"\n";

static const char *PRETRAIN_SH = "#!/bin/sh\n"
                                 "out=''; resume=0\n"
                                 "while [ $# -gt 0 ]; do\n"
                                 "  case \"$1\" in\n"
                                 "    --out) out=\"$2\"; shift 2 ;;\n"
                                 "    --resume) resume=1; shift ;;\n"
                                 "    *) shift ;;\n"
                                 "  esac\n"
                                 "done\n"
                                 "echo \"pretrain step 5 loss 1.25 resume=$resume\"\n"
                                 "echo ckpt > \"$out\"\n";

static const char *REAL_CONFIG = "[run]\n"
                                 "name = real\n"
                                 "bin = %s/bin\n"
                                 "hub = tcp://127.0.0.1:5998\n"
                                 "progress_interval_s = 0.3\n"
                                 "stop_timeout_s = 1\n"
                                 "[task]\n"
                                 "kind = add\n"
                                 "[pretrain]\n"
                                 "out = ${run.out}/pre.ckpt\n"
                                 "[learner]\n"
                                 "mpirun = ${run.bin}/mpirun\n"
                                 "mpi_args = --oversubscribe\n"
                                 "state = ${run.out}/state\n"
                                 "stop_timeout_s = 5\n"
                                 "[actor]\n"
                                 "count = 2\n"
                                 "backoff_s = 0.2\n"
                                 "state = ${run.out}/state\n"
                                 "[reward]\n"
                                 "count = 1\n"
                                 "state = ${run.out}/state\n"
                                 "ignore-term = true\n";

static void setup_bin(void) {
    char dir[400], path[500];
    snprintf(dir, sizeof dir, "%s/bin", tmp);
    mkdir(dir, 0755);
    const char *names[] = {"mpirun",     "rlx-learner",  "rlx-actor",
                           "rlx-reward", "rlx-task-add", "rlx-pretrain"};
    const char *texts[] = {MPIRUN_SH, LEARNER_SH, WORKER_SH, WORKER_SH, TASK_SH, PRETRAIN_SH};
    for (int i = 0; i < 6; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        write_file(path, texts[i], 0755);
    }
    char text[2048];
    snprintf(text, sizeof text, REAL_CONFIG, tmp);
    snprintf(ini, sizeof ini, "%s/real.ini", tmp);
    write_file(ini, text, 0644);
}

// Number of lines of a file (0 if missing).
static int file_lines(const char *path) {
    char *t = tu_read_file(path, NULL);
    int n = t ? count_of(t, "\n") : 0;
    free(t);
    return n;
}

static int wait_lines(const char *path, int n, double timeout_s) {
    double t0 = now_s();
    while (file_lines(path) < n && now_s() - t0 < timeout_s)
        usleep(20000);
    return file_lines(path) >= n;
}

// The pids listed in a file, one a line.
static int read_pids(const char *path, pid_t *pids, int cap) {
    char *t = tu_read_file(path, NULL);
    int n = 0;
    for (char *p = t; p && *p && n < cap;) {
        pids[n++] = (pid_t)strtol(p, &p, 10);
        while (*p == '\n')
            p++;
    }
    free(t);
    return n;
}

// Checks every pid listed in state/NAME.pids is gone (reaped: not even a zombie of ours).
static void check_dead(const char *state, const char *name) {
    char path[600];
    pid_t pids[16];
    snprintf(path, sizeof path, "%s/%s", state, name);
    int n = read_pids(path, pids, 16);
    TU_CHECK(n > 0, "%s lists pids", path);
    for (int i = 0; i < n; i++)
        TU_CHECK(kill(pids[i], 0) != 0 && errno == ESRCH, "%s: pid %d still exists", name,
                 (int)pids[i]);
}

static void test_run_until_learner_exits(void) {
    char out_dir[400], state[500], path[600], log[500], over[600];
    snprintf(out_dir, sizeof out_dir, "%s/r1", tmp);
    snprintf(state, sizeof state, "%s/state", out_dir);
    snprintf(log, sizeof log, "%s/r1.out", tmp);
    snprintf(over, sizeof over, "run.out=%s", out_dir);
    char *argv[] = {exe, ini, over, "learner.seconds=3", "learner.exit-code=3", NULL};
    double t0 = now_s();
    pid_t pid = tu_spawn(argv, log);

    // kill -9 an actor: it is restarted (with backoff), the run goes on
    snprintf(path, sizeof path, "%s/actor-0.pids", state);
    TU_CHECK(wait_lines(path, 1, 10), "actor-0 started");
    pid_t first;
    if (read_pids(path, &first, 1) == 1)
        kill(first, SIGKILL);
    TU_CHECK(wait_lines(path, 2, 5), "actor-0 restarted after kill -9");

    int rc = tu_wait(pid, 30);
    double took = now_s() - t0;
    char *out = tu_read_file(log, NULL);
    if (!out)
        out = strdup("");
    TU_CHECK(rc == 3, "the launcher exits with the learner's exit code 3, got %d", rc);
    TU_CHECK(took < 10, "learner of 3.3 s + 1 s worker deadline, took %.1f s", took);
    TU_CHECK(strstr(out, "task | task files in") && strstr(out, "pretrain | pretrain step 5"),
             "the preparation steps' output is streamed");
    snprintf(path, sizeof path, "%s/pre.ckpt", out_dir);
    TU_CHECK(access(path, F_OK) == 0, "pretraining output renamed to %s", path);
    snprintf(path, sizeof path, "%s/pre.ckpt.partial", out_dir);
    TU_CHECK(access(path, F_OK) != 0, "no %s left", path);
    TU_CHECK(strstr(out, "actor-0 killed by signal 9") && strstr(out, "restarting in 0.2 s") &&
                 strstr(out, "actor-0 restarted"),
             "the dead actor is reported and restarted");
    TU_CHECK(strstr(out, "samples 64 (32.0/s)"), "progress shows the samples figure");
    TU_CHECK(strstr(out, "final: ") && strstr(out, "step 2 | samples 128 (64.0/s) | reward 0.500 "
                                                   "| eval 0.750 | lag 0.25/1 | queues work 3 "
                                                   "score 1 learner 0"),
             "final progress line");
    TU_CHECK(strstr(out, "summary: sampled 640 trained 600 dropped_stale 30 dropped_invalid 10 "
                         "in_flight 0"),
             "summary line printed");
    TU_CHECK(strstr(out, "reward-0 (pid") && strstr(out, "past its deadline: SIGKILL"),
             "the reward worker that ignores SIGTERM is SIGKILLed at the deadline");
    TU_CHECK(strstr(out, "exit code 3"), "exit code reported");

    // actors: SIGTERMed (the live ones wrote .term), everything reaped
    snprintf(path, sizeof path, "%s/actor-1.term", state);
    TU_CHECK(file_lines(path) == 1, "actor-1 got SIGTERM");
    snprintf(path, sizeof path, "%s/actor-0.term", state);
    TU_CHECK(file_lines(path) == 1, "the restarted actor-0 got SIGTERM");
    check_dead(state, "actor-0.pids");
    check_dead(state, "actor-1.pids");
    check_dead(state, "reward-0.pids");
    check_dead(state, "learner.pid");
    snprintf(path, sizeof path, "%s/learner.env", state);
    char *env = tu_read_file(path, NULL);
    TU_CHECK(env && !strcmp(env, geteuid() == 0 ? "1\n" : "unset\n"),
             "OMPI_ALLOW_RUN_AS_ROOT in the learner's environment iff root: %s", env);
    free(env);
    snprintf(path, sizeof path, "%s/logs/actor-0.log", out_dir);
    char *alog = tu_read_file(path, NULL);
    TU_CHECK(alog && count_of(alog, "==== rlx-launch: actor-0 start") == 2,
             "actor-0's log has both starts");
    free(alog);
    if (tu_failures)
        fprintf(stderr, "---- launcher output ----\n%s\n", out);
    free(out);
}

static void test_sigint(void) {
    char out_dir[400], state[500], path[600], log[500], over[600];
    snprintf(out_dir, sizeof out_dir, "%s/r2", tmp);
    snprintf(state, sizeof state, "%s/state", out_dir);
    snprintf(log, sizeof log, "%s/r2.out", tmp);
    snprintf(over, sizeof over, "run.out=%s", out_dir);
    mkdir(out_dir, 0755);
    snprintf(path, sizeof path, "%s/pre.ckpt", out_dir);
    write_file(path, "ckpt\n", 0644); // an existing checkpoint is reused
    char *argv[] = {exe, ini, over, "learner.seconds=60", NULL};
    pid_t pid = tu_spawn(argv, log);
    const char *files[] = {"learner.pid", "actor-0.pids", "actor-1.pids", "reward-0.pids"};
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s/%s", state, files[i]);
        TU_CHECK(wait_lines(path, 1, 10), "%s started", files[i]);
    }
    usleep(500000);
    double t0 = now_s();
    kill(pid, SIGINT);
    int rc = tu_wait(pid, 20);
    double took = now_s() - t0;
    char *out = tu_read_file(log, NULL);
    if (!out)
        out = strdup("");
    TU_CHECK(rc == 130, "SIGINT -> exit 130, got %d", rc);
    TU_CHECK(took < 5,
             "stopped within the deadlines (learner at once, SIGKILL after 1 s), "
             "took %.1f s",
             took);
    TU_CHECK(strstr(out, "pretraining skipped") && !strstr(out, "pretrain | "),
             "existing checkpoint reused");
    snprintf(path, sizeof path, "%s/learner.term", state);
    TU_CHECK(file_lines(path) == 1, "the learner got SIGTERM");
    TU_CHECK(strstr(out, "summary: sampled 640"), "the learner's summary (written on SIGTERM)");
    TU_CHECK(file_lines(path) == 1, "the learner got SIGTERM");
    snprintf(path, sizeof path, "%s/actor-0.term", state);
    TU_CHECK(file_lines(path) == 1, "actor-0 got SIGTERM");
    check_dead(state, "actor-0.pids");
    check_dead(state, "actor-1.pids");
    check_dead(state, "reward-0.pids");
    check_dead(state, "learner.pid");
    if (tu_failures)
        fprintf(stderr, "---- launcher output ----\n%s\n", out);
    free(out);
}

int main(void) {
    snprintf(exe, sizeof exe, "%s", tu_bin_path("rlx-launch"));
    if (access(exe, X_OK) != 0) {
        fprintf(stderr, "test_launch: %s not built\n", exe);
        return 1;
    }
    snprintf(tmp, sizeof tmp, "/tmp/rlx_test_launch_XXXXXX");
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(ini, sizeof ini, "%s/test.ini", tmp);
    setenv("RLX_TEST_HUB_HOST", "127.0.0.1", 1);

    test_dry_run();
    test_bad_configs();
    setup_bin();
    test_run_until_learner_exits();
    test_sigint();

    if (!tu_failures) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", tmp);
    } else {
        fprintf(stderr, "files kept in %s\n", tmp);
    }
    return tu_finish("test_launch");
}
