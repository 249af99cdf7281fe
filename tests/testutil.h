// testutil.h: what every rlx test shares: checks that count failures, tolerance comparison of
// tensors that prints the worst element, finite differences, and the test's exit code.
#ifndef RLX_TESTUTIL_H
#define RLX_TESTUTIL_H

#include <stddef.h>

extern int tu_failures;
extern int tu_checks;

// Record a failure (with file:line) unless cond holds.
#define TU_CHECK(cond, ...)                                                                        \
    do {                                                                                           \
        tu_checks++;                                                                               \
        if (!(cond)) {                                                                             \
            tu_failures++;                                                                         \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
        }                                                                                          \
    } while (0)

// Compare a with ref elementwise: |a-b| <= atol + rtol*|ref|. Prints one line (worst element
// by excess over tolerance, max abs error, and the largest |a-b|/tolerance: how much of its
// tolerance the check used) and counts a failure on any mismatch. Returns 1 if all close.
int tu_close(const char *what, const float *a, const float *ref, size_t n, float atol, float rtol);

// The same with a tolerance of its own for each element: |a[i]-ref[i]| <= tol[i], for checks
// whose error bound differs by element (one derived per row from the computation).
int tu_close_tol(const char *what, const float *a, const float *ref, const float *tol, size_t n);

// The OpenBLAS kernel set ("core type") the test runs on. Each numeric test calls this first.
// Prints the core OpenBLAS picked. When the ctest entry asks for one (RLX_TEST_CORETYPE, set
// along with OPENBLAS_CORETYPE, or "default" with OPENBLAS_CORETYPE unset), checks that this
// CPU can run it (its /proc/cpuinfo flags) and that OpenBLAS reports it as the core in use;
// if not, prints why and exits with TU_SKIP, which ctest reports as skipped, not failed.
#define TU_SKIP 77
void tu_blas_core(const char *test_name);

// Bit-exact comparison of two buffers; prints the first difference.
int tu_equal_bytes(const char *what, const void *a, const void *b, size_t nbytes);

// Print "N passed, M failed" style summary and return the exit code (0 iff no failure).
int tu_finish(const char *test_name);

// Path helpers: $RLX_SRC/rel and $RLX_BIN/rel (falling back to "." when unset).
const char *tu_src_path(const char *rel);
const char *tu_bin_path(const char *rel);

// Child processes (real executables, as a user runs them). tu_spawn starts argv[0] with
// stdout and stderr appended to log_path (NULL = inherit). tu_wait waits at most timeout_s:
// returns the exit status (0..255), 128+signal if it died by a signal, or -1 if the deadline
// passed (the child is then killed with SIGKILL and reaped).
#include <sys/types.h>
pid_t tu_spawn(char *const argv[], const char *log_path);
int tu_wait(pid_t pid, double timeout_s);
int tu_run(char *const argv[], const char *log_path, double timeout_s);

// Reads a whole file into a NUL-terminated buffer (caller frees); NULL if unreadable.
char *tu_read_file(const char *path, size_t *len);

#endif
