// bench_net.c: helpers shared by the network benchmarks (see bench_net.h).
#include "bench_net.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int bench_endpoint(char *buf, size_t cap, const char *transport, int port, const char *tag) {
    if (strcmp(transport, "tcp") == 0)
        snprintf(buf, cap, "tcp://127.0.0.1:%d", port);
    else if (strcmp(transport, "ipc") == 0)
        snprintf(buf, cap, "ipc:///tmp/rlx-bench-%d-%d-%s", (int)getpid(), port, tag);
    else
        return -1;
    return 0;
}

void bench_endpoint_cleanup(const char *endpoint) {
    if (strncmp(endpoint, "ipc://", 6) == 0)
        unlink(endpoint + 6);
}

int bench_default_port(void) {
    return 20000 + (int)(getpid() % 20000);
}

static char prompts_path[256]; // removed at exit, also after a fatal error

static void remove_prompts(void) {
    if (prompts_path[0])
        unlink(prompts_path);
}

int bench_write_prompts(char *buf, size_t cap, int n) {
    snprintf(buf, cap, "/tmp/rlx-bench-prompts-%d.tsv", (int)getpid());
    if (!prompts_path[0])
        atexit(remove_prompts);
    snprintf(prompts_path, sizeof prompts_path, "%s", buf);
    FILE *f = fopen(buf, "w");
    if (!f) {
        fprintf(stderr, "bench: cannot write %s: %s\n", buf, strerror(errno));
        return -1;
    }
    for (int i = 0; i < n; i++) {
        int a = i % 100, b = (i / 100) % 100;
        fprintf(f, "%02d+%02d=\t%d\n", a, b, a + b);
    }
    if (fclose(f) != 0) {
        fprintf(stderr, "bench: cannot write %s: %s\n", buf, strerror(errno));
        return -1;
    }
    return 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_median(double *v, int n) {
    if (n <= 0)
        return 0;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double bench_thread_cpu_s(const char *prefix) {
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return 0;
    double total = 0;
    size_t plen = strlen(prefix);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], comm[64] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        int named = fgets(comm, sizeof comm, f) != NULL;
        fclose(f);
        if (!named || strncmp(comm, prefix, plen) != 0)
            continue;
        snprintf(path, sizeof path, "/proc/self/task/%s/schedstat", e->d_name);
        f = fopen(path, "r");
        unsigned long long ns = 0;
        if (f && fscanf(f, "%llu", &ns) == 1)
            total += (double)ns * 1e-9;
        if (f)
            fclose(f);
    }
    closedir(d);
    return total;
}

int bench_join(pthread_t t, double timeout_s) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)timeout_s;
    until.tv_nsec += (long)((timeout_s - (double)(time_t)timeout_s) * 1e9);
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    if (pthread_timedjoin_np(t, NULL, &until) == 0)
        return 0;
    pthread_detach(t);
    return -1;
}

void bench_process_name(char *out, size_t cap, const char *fallback) {
    FILE *f = fopen("/proc/self/comm", "r");
    if (!f || !fgets(out, (int)cap, f))
        snprintf(out, cap, "%s", fallback);
    if (f)
        fclose(f);
    out[strcspn(out, "\n")] = 0;
}
