// test_pretrain.c: the rlx-pretrain tool run as a user runs it (a real process).
//   test_pretrain resume  — an interrupted-and-resumed run ends bit-exactly like an
//                           uninterrupted one; SIGTERM writes a checkpoint and exits 0; a
//                           corrupted checkpoint is refused on --resume; bad options exit 2.
//   test_pretrain learns  — a short MLE run on a generated corpus takes the validation loss
//                           well below the corpus's unigram entropy.
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt.h"
#include "rng.h"
#include "testutil.h"

static char dir[256];

static const char *path_in(const char *name) {
    static char buf[4][512];
    static int k = 0;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

// Two-digit additions, one per line: "a+b=c".
static void write_corpus(const char *path, int lines, uint64_t seed) {
    FILE *f = fopen(path, "w");
    rng_t r;
    rng_seed(&r, seed);
    for (int i = 0; i < lines; i++) {
        int a = (int)rng_below(&r, 100), b = (int)rng_below(&r, 100);
        fprintf(f, "%d+%d=%d\n", a, b, a + b);
    }
    fclose(f);
}

// Runs rlx-pretrain with the common small-model options plus extra ones.
static int pretrain(const char *log, double timeout, const char *const *extra) {
    char *argv[64];
    int n = 0;
    const char *base[] = {tu_bin_path("rlx-pretrain"), "--data", path_in("corpus.txt"),
                          "--layers", "2", "--dim", "32", "--heads", "4", "--ctx", "16",
                          "--batch", "8", "--log-every", "5", "--eval-every", "0", "--warmup",
                          "4", "--seed", "11", NULL};
    for (int i = 0; base[i]; i++)
        argv[n++] = (char *)base[i];
    for (int i = 0; extra[i]; i++)
        argv[n++] = (char *)extra[i];
    argv[n] = NULL;
    return tu_run(argv, log, timeout);
}

static void test_resume(void) {
    write_corpus(path_in("corpus.txt"), 2000, 3);
    const char *full[] = {"--steps", "30", "--out", path_in("full.ckpt"), NULL};
    TU_CHECK(pretrain(path_in("full.log"), 120, full) == 0, "uninterrupted run failed");
    const char *first[] = {"--steps", "30", "--stop-at", "13", "--out", path_in("res.ckpt"), NULL};
    TU_CHECK(pretrain(path_in("res.log"), 120, first) == 0, "first half failed");
    const char *rest[] = {"--steps", "30", "--resume", "--out", path_in("res.ckpt"), NULL};
    TU_CHECK(pretrain(path_in("res.log"), 120, rest) == 0, "resumed run failed");
    size_t na = 0, nb = 0;
    char *a = tu_read_file(path_in("full.ckpt"), &na), *b = tu_read_file(path_in("res.ckpt"), &nb);
    TU_CHECK(a && b && na == nb && na > 1000, "checkpoints missing or of different sizes");
    if (a && b && na == nb)
        tu_equal_bytes("resumed == uninterrupted checkpoint", a, b, na);
    char *log = tu_read_file(path_in("res.log"), NULL);
    TU_CHECK(log && strstr(log, "resumed from") && strstr(log, "at step 13"),
             "resume log does not say where it resumed");
    free(log);

    // Corrupt one byte of the checkpoint: --resume must refuse it with a message.
    b[nb / 2] ^= 0x40;
    FILE *f = fopen(path_in("bad.ckpt"), "wb");
    fwrite(b, 1, nb, f);
    fclose(f);
    const char *bad[] = {"--steps", "40", "--resume", "--out", path_in("bad.ckpt"), NULL};
    int st = pretrain(path_in("bad.log"), 60, bad);
    log = tu_read_file(path_in("bad.log"), NULL);
    TU_CHECK(st != 0 && st != -1, "corrupted checkpoint accepted (status %d)", st);
    TU_CHECK(log && strstr(log, "cannot resume"), "no clear message for a corrupted checkpoint");
    free(log);
    free(a);
    free(b);

    // SIGTERM: the run writes a checkpoint and exits 0.
    char *argv[] = {(char *)tu_bin_path("rlx-pretrain"), "--data", (char *)path_in("corpus.txt"),
                    "--layers", "2", "--dim", "32", "--heads", "4", "--ctx", "16", "--steps",
                    "100000000", "--log-every", "1", "--out", (char *)path_in("sig.ckpt"), NULL};
    pid_t pid = tu_spawn(argv, path_in("sig.log"));
    int started = 0;
    for (int i = 0; i < 600 && !started; i++) { // up to 60 s for the first step
        usleep(100000);
        char *l = tu_read_file(path_in("sig.log"), NULL);
        started = l && strstr(l, "step 3/");
        free(l);
    }
    TU_CHECK(started, "signal run never reached step 3");
    kill(pid, SIGTERM);
    TU_CHECK(tu_wait(pid, 60) == 0, "SIGTERM did not end the run cleanly");
    char err[256];
    ckpt_t *ck = ckpt_read(path_in("sig.ckpt"), err, sizeof err);
    TU_CHECK(ck != NULL, "no readable checkpoint after SIGTERM: %s", err);
    uint64_t n = 0;
    const int64_t *step = ck ? ckpt_section(ck, "adam_step", &n) : NULL;
    TU_CHECK(step && n == 8 && *step >= 3, "checkpoint after SIGTERM has no progress");
    ckpt_destroy(&ck);

    // Bad options: exit status 2 with usage.
    char *bad_argv[] = {(char *)tu_bin_path("rlx-pretrain"), "--data", "x", "--out", "y",
                        "--layers", "two", NULL};
    TU_CHECK(tu_run(bad_argv, path_in("opt.log"), 30) == 2, "bad number accepted");
    char *missing[] = {(char *)tu_bin_path("rlx-pretrain"), "--data",
                       (char *)path_in("no-such-file"), "--out", (char *)path_in("x.ckpt"), NULL};
    TU_CHECK(tu_run(missing, path_in("opt.log"), 30) == 1, "missing corpus not reported");
}

static void test_learns(void) {
    write_corpus(path_in("corpus.txt"), 20000, 5);
    char *argv[] = {(char *)tu_bin_path("rlx-pretrain"), "--data", (char *)path_in("corpus.txt"),
                    "--layers", "2", "--dim", "64", "--heads", "4", "--ctx", "16", "--batch", "32",
                    "--lr", "3e-3", "--warmup", "20", "--steps", "1500", "--max-seconds", "100",
                    "--log-every", "50", "--eval-every", "250", "--threads", "2", "--out",
                    (char *)path_in("learn.ckpt"), NULL};
    int st = tu_run(argv, path_in("learn.log"), 300);
    TU_CHECK(st == 0, "MLE run failed (status %d)", st);
    char *log = tu_read_file(path_in("learn.log"), NULL);
    double val = NAN, uni = NAN;
    const char *d = log ? strstr(log, "done steps") : NULL;
    if (d) {
        const char *v = strstr(d, "val_loss "), *u = strstr(d, "unigram_entropy ");
        if (v && u) {
            val = atof(v + 9);
            uni = atof(u + 16);
        }
    }
    printf("learns: val_loss %.4f nats/token vs unigram entropy %.4f\n", val, uni);
    // Operands are uniform digits (irreducible); the format and the sum are learnable, which
    // takes the loss to about half the unigram entropy. Require clearly below 0.7x.
    TU_CHECK(val < 0.7 * uni, "validation loss %.4f not well below unigram entropy %.4f", val,
             uni);
    if (tu_failures && log)
        fprintf(stderr, "---- log ----\n%s\n", log);
    free(log);
}

int main(int argc, char **argv) {
    snprintf(dir, sizeof dir, "/tmp/rlx-test-pretrain-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    const char *mode = argc > 1 ? argv[1] : "resume";
    if (!strcmp(mode, "resume"))
        test_resume();
    else if (!strcmp(mode, "learns"))
        test_learns();
    else {
        fprintf(stderr, "usage: test_pretrain resume|learns\n");
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
    return tu_finish(argc > 1 ? argv[1] : "test_pretrain");
}
