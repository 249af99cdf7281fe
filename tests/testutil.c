// testutil.c: see testutil.h.
#include <stdio.h>

#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int tu_failures = 0;
static int tu_checks = 0;

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
