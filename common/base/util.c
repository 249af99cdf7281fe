// util.c: see util.h.
#include "util.h"

#include <string.h>
#include <time.h>

void *rlx_xcalloc(size_t n, size_t size, const char *what) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        RLX_DIE("out of memory allocating %zu x %zu bytes for %s", n, size, what);
    return p;
}

float *rlx_alloc_floats(size_t n, const char *what) {
    size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
    if (bytes == 0)
        bytes = 64;
    float *p = aligned_alloc(64, bytes);
    if (!p)
        RLX_DIE("out of memory allocating %zu floats for %s", n, what);
    memset(p, 0, bytes);
    return p;
}

double rlx_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
