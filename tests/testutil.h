// testutil.h: what every rlx test shares: checks that count failures, tolerance comparison of
// tensors that prints the worst element, finite differences, and the test's exit code.
#ifndef RLX_TESTUTIL_H
#define RLX_TESTUTIL_H

#include <stddef.h>

extern int tu_failures;

// Record a failure (with file:line) unless cond holds.
#define TU_CHECK(cond, ...)                                                                        \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            tu_failures++;                                                                         \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
        }                                                                                          \
    } while (0)

// Compare a with ref elementwise: |a-b| <= atol + rtol*|ref|. Prints one line (worst element
// by excess over tolerance, and max abs error) and counts a failure on any mismatch.
// Returns 1 if all close.
int tu_close(const char *what, const float *a, const float *ref, size_t n, float atol, float rtol);

// Bit-exact comparison of two buffers; prints the first difference.
int tu_equal_bytes(const char *what, const void *a, const void *b, size_t nbytes);

// Print "N passed, M failed" style summary and return the exit code (0 iff no failure).
int tu_finish(const char *test_name);

// Path helpers: $RLX_SRC/rel and $RLX_BIN/rel (falling back to "." when unset).
const char *tu_src_path(const char *rel);
const char *tu_bin_path(const char *rel);

#endif
