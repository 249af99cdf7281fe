// util.h: small helpers shared by every module: fatal start-up errors with file:line,
// a monotonic clock, and checked allocation for start-up paths.
#ifndef RLX_UTIL_H
#define RLX_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

// Start-up failure (bad config, out of memory, cannot bind): print where and why, exit non-zero.
#define RLX_DIE(...)                                                                               \
    do {                                                                                           \
        fprintf(stderr, "rlx: fatal at %s:%d: ", __FILE__, __LINE__);                              \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, "\n");                                                                     \
        exit(1);                                                                                   \
    } while (0)

// Allocation on start-up paths; dies with a hint instead of returning NULL.
void *rlx_xcalloc(size_t n, size_t size, const char *what);

// 64-byte aligned, zeroed float buffer of n elements (the arenas use it); dies on failure.
float *rlx_alloc_floats(size_t n, const char *what);

// Seconds on a monotonic clock.
double rlx_now(void);

#endif
