// testutil.c: see testutil.h.
#include <stdio.h>

#include "testutil.h"

#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

int tu_failures = 0;
int tu_checks = 0;

int tu_close(const char *what, const float *a, const float *ref, size_t n, float atol,
             float rtol) {
    size_t worst = 0, bad = 0;
    double worst_excess = -INFINITY, max_abs = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)ref[i]);
        double tol = atol + rtol * fabs((double)ref[i]);
        if (!(d <= tol)) // also catches NaN
            bad++;
        double excess = isnan(d) ? INFINITY : d - tol;
        if (excess > worst_excess) {
            worst_excess = excess;
            worst = i;
        }
        if (d > max_abs || isnan(d))
            max_abs = d;
    }
    tu_checks++;
    int ok = bad == 0;
    fprintf(ok ? stdout : stderr,
            "%s %-28s n=%-8zu max|a-b|=%.3g  worst[%zu]: got %.9g ref %.9g (atol %.1g rtol %.1g)%s\n",
            ok ? "ok  " : "FAIL", what, n, max_abs, worst, n ? a[worst] : 0.0f,
            n ? ref[worst] : 0.0f, atol, rtol, ok ? "" : " <-- mismatch");
    if (!ok) {
        fprintf(stderr, "     %zu of %zu elements out of tolerance\n", bad, n);
        tu_failures++;
    }
    return ok;
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
