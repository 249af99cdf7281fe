// testutil.c: see testutil.h.
#include <stdio.h>

#include "testutil.h"

#include <cblas.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int tu_failures = 0;
int tu_checks = 0;

// The worst element (largest excess over its tolerance, NaN first), counted and printed.
typedef struct {
    size_t worst, bad; // index of the worst element, elements out of tolerance
    double max_abs;    // max |a-b|
    double max_ratio;  // max |a-b|/tol: the share of its tolerance the check used
} closeness_t;

static void closeness_add(closeness_t *c, size_t i, double d, double tol, double *worst_excess) {
    if (!(d <= tol)) // also catches NaN
        c->bad++;
    double excess = isnan(d) ? INFINITY : d - tol;
    if (excess > *worst_excess) {
        *worst_excess = excess;
        c->worst = i;
    }
    if (d > c->max_abs || isnan(d))
        c->max_abs = d;
    double ratio = tol > 0 ? d / tol : (d > 0 ? INFINITY : 0.0);
    if (ratio > c->max_ratio || isnan(d))
        c->max_ratio = ratio;
}

static int closeness_report(const char *what, const closeness_t *c, const float *a,
                            const float *ref, size_t n, const char *tol_text) {
    tu_checks++;
    int ok = c->bad == 0;
    fflush(stdout); // keep this line in order with what the test printed before it
    fprintf(ok ? stdout : stderr,
            "%s %-28s n=%-8zu max|a-b|=%.3g  worst[%zu]: got %.9g ref %.9g (%s) used %.2g of "
            "tol%s\n",
            ok ? "ok  " : "FAIL", what, n, c->max_abs, c->worst, n ? a[c->worst] : 0.0f,
            n ? ref[c->worst] : 0.0f, tol_text, c->max_ratio, ok ? "" : " <-- mismatch");
    if (!ok) {
        fprintf(stderr, "     %zu of %zu elements out of tolerance\n", c->bad, n);
        tu_failures++;
    }
    fflush(stderr);
    return ok;
}

int tu_close(const char *what, const float *a, const float *ref, size_t n, float atol, float rtol) {
    closeness_t c = {0};
    double worst_excess = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)ref[i]);
        closeness_add(&c, i, d, atol + rtol * fabs((double)ref[i]), &worst_excess);
    }
    char tol_text[64];
    snprintf(tol_text, sizeof tol_text, "atol %.1g rtol %.1g", atol, rtol);
    return closeness_report(what, &c, a, ref, n, tol_text);
}

int tu_close_tol(const char *what, const float *a, const float *ref, const float *tol, size_t n) {
    closeness_t c = {0};
    double worst_excess = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)ref[i]);
        closeness_add(&c, i, d, tol[i], &worst_excess);
    }
    char tol_text[64];
    snprintf(tol_text, sizeof tol_text, "tol[%zu] %.2g", c.worst, n ? tol[c.worst] : 0.0f);
    return closeness_report(what, &c, a, ref, n, tol_text);
}

int tu_equal_bytes(const char *what, const void *a, const void *b, size_t nbytes) {
    const unsigned char *x = a, *y = b;
    tu_checks++;
    for (size_t i = 0; i < nbytes; i++) {
        if (x[i] != y[i]) {
            fprintf(stderr, "FAIL %s: first difference at byte %zu of %zu\n", what, i, nbytes);
            tu_failures++;
            return 0;
        }
    }
    printf("ok   %s: %zu bytes identical\n", what, nbytes);
    return 1;
}

// ---- OpenBLAS core types -------------------------------------------------------------------

// The /proc/cpuinfo flags the kernels of each x86-64 OpenBLAS core type execute (pni is SSE3;
// Zen's kernels are Haswell's). A core type not listed is checked by OpenBLAS's answer alone.
static const struct {
    const char *core;  // OPENBLAS_CORETYPE name
    const char *flags; // space-separated cpuinfo flags it needs
} core_flags[] = {
    {"Prescott", "sse2 pni"},
    {"Core2", "sse2 pni ssse3"},
    {"Nehalem", "sse2 pni ssse3 sse4_1 sse4_2 popcnt"},
    {"Sandybridge", "sse2 pni ssse3 sse4_1 sse4_2 avx"},
    {"Haswell", "sse2 pni ssse3 sse4_1 sse4_2 avx avx2 fma"},
    {"Zen", "sse2 pni ssse3 sse4_1 sse4_2 avx avx2 fma"},
    {"SkylakeX", "sse2 pni ssse3 sse4_1 sse4_2 avx avx2 fma avx512f avx512cd avx512bw avx512dq "
                 "avx512vl"},
    {"Cooperlake", "sse2 pni ssse3 sse4_1 sse4_2 avx avx2 fma avx512f avx512cd avx512bw "
                   "avx512dq avx512vl avx512_bf16"},
};

// Whether the space-separated list has word as one of its words.
static int has_word(const char *list, const char *word, size_t len) {
    for (const char *p = list; (p = strstr(p, word)) != NULL; p += len) {
        int starts = p == list || p[-1] == ' ' || p[-1] == '\t' || p[-1] == ':';
        int ends = p[len] == ' ' || p[len] == '\n' || p[len] == '\0';
        if (starts && ends)
            return 1;
    }
    return 0;
}

// The first flag core needs that this CPU lacks (written to buf), or NULL if it has them all
// or core is not in the table.
static const char *missing_cpu_flag(const char *core, char *buf, size_t len) {
    const char *need = NULL;
    for (size_t i = 0; i < sizeof core_flags / sizeof core_flags[0]; i++)
        if (!strcasecmp(core, core_flags[i].core))
            need = core_flags[i].flags;
    if (!need)
        return NULL;
    // The first CPU's flags line (/proc files report size 0: read it line by line).
    FILE *f = fopen("/proc/cpuinfo", "r");
    char *line = NULL;
    size_t cap = 0;
    int found = 0;
    while (f && getline(&line, &cap, f) > 0)
        if (!strncmp(line, "flags", 5) && (found = 1))
            break;
    if (f)
        fclose(f);
    const char *missing = NULL;
    if (!found) {
        snprintf(buf, len, "a flags line in /proc/cpuinfo (not an x86 CPU?)");
        missing = buf;
    }
    for (const char *w = need; found && *w && !missing;) {
        size_t n = strcspn(w, " ");
        snprintf(buf, len, "%.*s", (int)n, w);
        if (!has_word(line, buf, n))
            missing = buf;
        w += n + (w[n] == ' ');
    }
    free(line);
    return missing;
}

static void skip(const char *test_name, const char *want, const char *why) {
    printf("SKIP %s under OPENBLAS_CORETYPE=%s: %s\n", test_name, want, why);
    fflush(stdout);
    exit(TU_SKIP);
}

// OpenBLAS only records its choice when it loads and runs no kernel before the first BLAS
// call, so a check made first thing in main is in time: forced onto this CPU, Opteron's
// (3DNow!) and Bulldozer's (FMA4) kernels die with SIGILL at the first call, not at load.
void tu_blas_core(const char *test_name) {
    const char *core = openblas_get_corename();
    const char *env = getenv("OPENBLAS_CORETYPE"), *want = getenv("RLX_TEST_CORETYPE");
    printf("%s: OpenBLAS core %s (OPENBLAS_CORETYPE %s)\n", test_name, core ? core : "?",
           env ? env : "unset");
    if (!want || !*want)
        return;
    if (!strcmp(want, "default")) {
        if (env) {
            fprintf(stderr,
                    "FAIL %s: RLX_TEST_CORETYPE=default wants OPENBLAS_CORETYPE unset, "
                    "it is %s (check the ctest registration)\n",
                    test_name, env);
            exit(1);
        }
        return;
    }
    if (!env || strcasecmp(env, want)) {
        fprintf(stderr,
                "FAIL %s: RLX_TEST_CORETYPE=%s but OPENBLAS_CORETYPE=%s (check the "
                "ctest registration)\n",
                test_name, want, env ? env : "unset");
        exit(1);
    }
    char buf[128], why[256];
    const char *missing = missing_cpu_flag(want, buf, sizeof buf);
    if (missing) {
        snprintf(why, sizeof why, "this CPU lacks %s", missing);
        skip(test_name, want, why);
    }
    if (!core || strcasecmp(core, want)) {
        snprintf(why, sizeof why,
                 "OpenBLAS runs %s kernels instead (this build or CPU cannot "
                 "select %s)",
                 core ? core : "unknown", want);
        skip(test_name, want, why);
    }
}

int tu_finish(const char *test_name) {
    printf("%s: %d checks, %d failed\n", test_name, tu_checks, tu_failures);
    return tu_failures == 0 ? 0 : 1;
}

static const char *join(const char *env, const char *rel, char *buf, size_t len) {
    const char *base = getenv(env);
    snprintf(buf, len, "%s/%s", base && *base ? base : ".", rel);
    return buf;
}

const char *tu_src_path(const char *rel) {
    static char buf[4][4096];
    static int k = 0;
    k = (k + 1) % 4;
    return join("RLX_SRC", rel, buf[k], sizeof buf[k]);
}

const char *tu_bin_path(const char *rel) {
    static char buf[4][4096];
    static int k = 0;
    k = (k + 1) % 4;
    return join("RLX_BIN", rel, buf[k], sizeof buf[k]);
}

pid_t tu_spawn(char *const argv[], const char *log_path) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return -1;
    }
    if (pid == 0) {
        if (log_path) {
            int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
                close(fd);
            }
        }
        execv(argv[0], argv);
        fprintf(stderr, "exec %s failed\n", argv[0]);
        _exit(127);
    }
    return pid;
}

int tu_wait(pid_t pid, double timeout_s) {
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        if (r < 0)
            return -1;
        clock_gettime(CLOCK_MONOTONIC, &now);
        double el = (now.tv_sec - t0.tv_sec) + 1e-9 * (now.tv_nsec - t0.tv_nsec);
        if (el > timeout_s) {
            fprintf(stderr, "tu_wait: pid %d still running after %.0f s: killing it\n", (int)pid,
                    timeout_s);
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        usleep(20000);
    }
}

int tu_run(char *const argv[], const char *log_path, double timeout_s) {
    pid_t pid = tu_spawn(argv, log_path);
    return pid < 0 ? -1 : tu_wait(pid, timeout_s);
}

char *tu_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc(n > 0 ? (size_t)n + 1 : 1);
    size_t got = n > 0 ? fread(buf, 1, (size_t)n, f) : 0;
    fclose(f);
    buf[got] = 0;
    if (len)
        *len = got;
    return buf;
}
