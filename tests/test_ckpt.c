// test_ckpt.c: checks common/nn/ckpt.c and paramset_save/paramset_load: a bit-exact round trip of
// parameters, moments, step, extra blob, kind and config; atomic replacement (no temp file
// left, the old file kept when a write fails, a clean error for a missing directory); and that
// truncation at every length, every single-bit flip, wrong magic or version, lying section
// tables (with a valid checksum), empty and missing files are each refused with a message and
// without a crash. Run under the ASan build too.
#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "ckpt.h"
#include "paramset.h"
#include "rng.h"
#include "testutil.h"

#define HEADER_LEN 84  // magic 8 | version 4 | kind 4 | config 64 | nsections 4
#define TRAILER_LEN 12 // crc 4 | end magic 8

static char dir[64];                    // scratch directory for this run
static char err[512];                   // the last error message
static int32_t config[CKPT_CONFIG_LEN]; // a recognisable config

static const char *tmp_path(const char *name) {
    static char buf[4][256];
    static int k = 0;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

// A paramset with its own buffers; moments only if with_opt.
static paramset_t ps_new(size_t n, int with_opt, uint64_t seed) {
    paramset_t p = {.n = n};
    p.w = calloc(n ? n : 1, sizeof(float));
    p.g = calloc(n ? n : 1, sizeof(float));
    if (with_opt) {
        p.m = calloc(n ? n : 1, sizeof(float));
        p.v = calloc(n ? n : 1, sizeof(float));
    }
    if (seed) {
        rng_t r;
        rng_seed(&r, seed);
        for (size_t i = 0; i < n; i++) {
            p.w[i] = rng_normal(&r);
            p.g[i] = rng_normal(&r);
            if (with_opt) {
                p.m[i] = rng_normal(&r) * 1e-3f;
                p.v[i] = rng_uniform(&r) * 1e-6f;
            }
        }
        p.step = (int64_t)(seed % 1000) + 1;
    }
    return p;
}

static void ps_free(paramset_t *p) {
    free(p->w);
    free(p->g);
    free(p->m);
    free(p->v);
    memset(p, 0, sizeof *p);
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "test_ckpt: cannot write %s\n", path);
        exit(2);
    }
}

static void fix_crc(unsigned char *buf, size_t n) {
    uint32_t crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), buf, (uInt)(n - TRAILER_LEN));
    memcpy(buf + n - TRAILER_LEN, &crc, 4);
}

// Reads path expecting refusal: NULL, a non-empty message, and (if want) that text in it.
static int expect_refused(const char *path, const char *want, const char *what) {
    err[0] = '\0';
    ckpt_t *c = ckpt_read(path, err, sizeof err);
    int ok = c == NULL && err[0] != '\0' && (!want || strstr(err, want));
    TU_CHECK(ok, "%s: %s (message \"%s\", wanted \"%s\")", what,
             c ? "accepted" : "refused with the wrong message", err, want ? want : "any");
    ckpt_destroy(&c);
    return ok;
}

// The same refusal through ckpt_parse, from bytes in memory.
static int expect_refused_bytes(const void *buf, size_t len, const char *want, const char *what) {
    err[0] = '\0';
    ckpt_t *c = ckpt_parse(buf, len, err, sizeof err);
    int ok = c == NULL && err[0] != '\0' && (!want || strstr(err, want));
    TU_CHECK(ok, "%s (in memory): %s (message \"%s\", wanted \"%s\")", what,
             c ? "accepted" : "refused with the wrong message", err, want ? want : "any");
    ckpt_destroy(&c);
    return ok;
}

static int count_dir_entries(void) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    if (d)
        closedir(d);
    return n;
}

static void test_round_trip(void) {
    const size_t n = 1237;
    paramset_t a = ps_new(n, 1, 42);
    const char extra[] = "trainer state: epoch 3, data offset 998877";
    const char *path = tmp_path("rt.ckpt");
    int rc = paramset_save(&a, path, CKPT_KIND_GPT, config, extra, sizeof extra, err, sizeof err);
    TU_CHECK(rc == 0, "paramset_save: %s", err);
    TU_CHECK(count_dir_entries() == 1, "save left %d files in %s, want 1 (a temp file?)",
             count_dir_entries(), dir);

    ckpt_t *c = ckpt_read(path, err, sizeof err);
    TU_CHECK(c != NULL, "ckpt_read of a fresh checkpoint: %s", err);
    if (!c) {
        ps_free(&a);
        return;
    }
    TU_CHECK(ckpt_kind(c) == CKPT_KIND_GPT, "kind %u", ckpt_kind(c));
    tu_equal_bytes("config", ckpt_config(c), config, sizeof config);
    uint64_t nb = 0;
    const void *x = ckpt_section(c, "extra", &nb);
    TU_CHECK(x && nb == sizeof extra, "extra section: %p, %llu bytes", x, (unsigned long long)nb);
    if (x && nb == sizeof extra)
        tu_equal_bytes("extra", x, extra, sizeof extra);
    TU_CHECK(ckpt_section(c, "nonexistent", &nb) == NULL && nb == 0, "absent section found");

    // Section data is 64-byte aligned (callers cast it to float or struct pointers), and
    // ckpt_parse on the file's bytes sees exactly what ckpt_read sees.
    size_t flen = 0;
    char *bytes = tu_read_file(path, &flen);
    ckpt_t *cp = bytes ? ckpt_parse(bytes, flen, err, sizeof err) : NULL;
    TU_CHECK(cp != NULL, "ckpt_parse of a valid checkpoint's bytes: %s", err);
    const char *names[] = {"params", "adam_m", "adam_v", "adam_step", "extra"};
    for (int i = 0; i < 5; i++) {
        uint64_t n1 = 0, n2 = 0;
        const void *d1 = ckpt_section(c, names[i], &n1);
        const void *d2 = cp ? ckpt_section(cp, names[i], &n2) : NULL;
        TU_CHECK(d1 && ((uintptr_t)d1 & 63) == 0, "section %s at %p: not 64-byte aligned", names[i],
                 d1);
        TU_CHECK(d2 && n1 == n2 && memcmp(d1, d2, n1) == 0 && ((uintptr_t)d2 & 63) == 0,
                 "section %s differs between ckpt_read and ckpt_parse", names[i]);
    }
    TU_CHECK(cp && ckpt_kind(cp) == ckpt_kind(c) &&
                 memcmp(ckpt_config(cp), ckpt_config(c), sizeof config) == 0,
             "ckpt_parse: kind or config differ");
    ckpt_destroy(&cp);
    free(bytes);

    paramset_t b = ps_new(n, 1, 0);
    rc = paramset_load(&b, c, err, sizeof err);
    TU_CHECK(rc == 0, "paramset_load: %s", err);
    tu_equal_bytes("params", b.w, a.w, n * sizeof(float));
    tu_equal_bytes("adam m", b.m, a.m, n * sizeof(float));
    tu_equal_bytes("adam v", b.v, a.v, n * sizeof(float));
    TU_CHECK(b.step == a.step, "step %lld, saved %lld", (long long)b.step, (long long)a.step);
    ckpt_destroy(&c);
    TU_CHECK(c == NULL, "ckpt_destroy did not null the pointer");
    ckpt_destroy(&c); // safe on NULL

    // Saving again replaces the file (rename over it) and still leaves no temp behind.
    a.w[0] += 1.0f;
    a.step++;
    rc = paramset_save(&a, path, CKPT_KIND_MLP, config, NULL, 0, err, sizeof err);
    TU_CHECK(rc == 0, "second paramset_save: %s", err);
    TU_CHECK(count_dir_entries() == 1, "re-save left %d files", count_dir_entries());
    c = ckpt_read(path, err, sizeof err);
    TU_CHECK(c && ckpt_kind(c) == CKPT_KIND_MLP && !ckpt_section(c, "extra", NULL),
             "re-saved checkpoint: kind or extra wrong (%s)", c ? "read" : err);
    if (c && paramset_load(&b, c, err, sizeof err) == 0)
        TU_CHECK(b.w[0] == a.w[0] && b.step == a.step, "re-saved values not loaded");

    // An inference paramset (no moments) loads a training checkpoint's parameters...
    paramset_t inf = ps_new(n, 0, 0);
    TU_CHECK(c && paramset_load(&inf, c, err, sizeof err) == 0, "load without moments: %s", err);
    tu_equal_bytes("params into an inference paramset", inf.w, a.w, n * sizeof(float));
    ckpt_destroy(&c);
    // ...and saves one without moments, which loads into a training paramset with fresh ones.
    const char *path2 = tmp_path("inf.ckpt");
    TU_CHECK(paramset_save(&inf, path2, CKPT_KIND_GPT, config, NULL, 0, err, sizeof err) == 0,
             "save without moments: %s", err);
    c = ckpt_read(path2, err, sizeof err);
    TU_CHECK(c && !ckpt_section(c, "adam_m", NULL), "inference checkpoint: %s",
             c ? "has moments" : err);
    if (c) {
        TU_CHECK(paramset_load(&b, c, err, sizeof err) == 0, "load: %s", err);
        int zero = b.step == 0;
        for (size_t i = 0; i < n; i++)
            zero &= b.m[i] == 0.0f && b.v[i] == 0.0f;
        TU_CHECK(zero, "moments and step not reset when the checkpoint has none");
        tu_equal_bytes("params from an inference checkpoint", b.w, a.w, n * sizeof(float));
    }
    ckpt_destroy(&c);
    unlink(path);
    unlink(path2);
    ps_free(&a);
    ps_free(&b);
    ps_free(&inf);
}

static void test_zero_grad(void) {
    paramset_t a = ps_new(100, 1, 5);
    paramset_zero_grad(&a);
    int zero = 1;
    for (size_t i = 0; i < a.n; i++)
        zero &= a.g[i] == 0.0f;
    TU_CHECK(zero, "paramset_zero_grad left non-zero gradients");
    ps_free(&a);
}

// A wrong parameter count, or no "params" at all, fails and leaves the target untouched.
static void test_load_mismatch(void) {
    paramset_t a = ps_new(100, 1, 7), b = ps_new(99, 1, 8), b0 = ps_new(99, 1, 8);
    const char *path = tmp_path("mm.ckpt");
    TU_CHECK(paramset_save(&a, path, CKPT_KIND_MLP, config, NULL, 0, err, sizeof err) == 0,
             "save: %s", err);
    ckpt_t *c = ckpt_read(path, err, sizeof err);
    TU_CHECK(c != NULL, "read: %s", err);
    if (c) {
        err[0] = '\0';
        int rc = paramset_load(&b, c, err, sizeof err);
        TU_CHECK(rc == -1 && strstr(err, "checkpoint has 100 parameters, model has 99"),
                 "load into a smaller model: rc %d, message \"%s\"", rc, err);
        tu_equal_bytes("params untouched after a failed load", b.w, b0.w, 99 * sizeof(float));
        tu_equal_bytes("m untouched after a failed load", b.m, b0.m, 99 * sizeof(float));
        tu_equal_bytes("v untouched after a failed load", b.v, b0.v, 99 * sizeof(float));
        TU_CHECK(b.step == b0.step, "step changed by a failed load");
        ckpt_destroy(&c);
    }
    const int64_t step = 3;
    ckpt_section_t only_step = {"adam_step", &step, sizeof step};
    TU_CHECK(ckpt_write(path, CKPT_KIND_MLP, config, &only_step, 1, err, sizeof err) == 0,
             "ckpt_write: %s", err);
    c = ckpt_read(path, err, sizeof err);
    if (c) {
        err[0] = '\0';
        TU_CHECK(paramset_load(&b, c, err, sizeof err) == -1 && err[0],
                 "load of a checkpoint without params succeeded");
        tu_equal_bytes("params untouched (no params section)", b.w, b0.w, 99 * sizeof(float));
        ckpt_destroy(&c);
    }
    unlink(path);
    ps_free(&a);
    ps_free(&b);
    ps_free(&b0);
}

// Failures while writing: no temp file left behind, and the old checkpoint survives intact.
static void test_atomic(void) {
    err[0] = '\0';
    paramset_t a = ps_new(64, 1, 9);
    int rc = paramset_save(&a, "/nonexistent-rlx-dir/sub/x.ckpt", CKPT_KIND_GPT, config, NULL, 0,
                           err, sizeof err);
    TU_CHECK(rc == -1 && err[0], "save into a missing directory: rc %d, message \"%s\"", rc, err);
    printf("ok   missing directory refused: %s\n", err);

    const char *path = tmp_path("keep.ckpt");
    TU_CHECK(paramset_save(&a, path, CKPT_KIND_GPT, config, NULL, 0, err, sizeof err) == 0,
             "save: %s", err);
    size_t n0 = 0;
    char *orig = tu_read_file(path, &n0);

    // The temp name is taken by a directory: the write fails before touching path.
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    mkdir(tmp, 0700);
    paramset_t big = ps_new(50000, 1, 10);
    err[0] = '\0';
    rc = paramset_save(&big, path, CKPT_KIND_GPT, config, NULL, 0, err, sizeof err);
    TU_CHECK(rc == -1 && err[0], "save over a blocked temp name: rc %d", rc);
    rmdir(tmp);

    // The file-size limit cuts the write short (EFBIG) half-way through the parameters.
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 100000;
    setrlimit(RLIMIT_FSIZE, &lim);
    err[0] = '\0';
    rc = paramset_save(&big, path, CKPT_KIND_GPT, config, NULL, 0, err, sizeof err);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, SIG_DFL);
    TU_CHECK(rc == -1 && err[0], "save cut short by RLIMIT_FSIZE: rc %d", rc);
    printf("ok   short write refused: %s\n", err);
    TU_CHECK(count_dir_entries() == 1, "failed saves left %d files, want 1", count_dir_entries());
    size_t n1 = 0;
    char *now = tu_read_file(path, &n1);
    TU_CHECK(orig && now && n0 == n1, "old checkpoint changed size: %zu -> %zu", n0, n1);
    if (orig && now && n0 == n1)
        tu_equal_bytes("old checkpoint kept after failed saves", now, orig, n0);
    free(orig);
    free(now);
    unlink(path);
    ps_free(&a);
    ps_free(&big);
}

static void test_bad_write_args(void) {
    float x = 1.0f;
    ckpt_section_t dup[2] = {{"params", &x, 4}, {"params", &x, 4}};
    ckpt_section_t longname = {"a_name_too_long_x", &x, 4};
    const char *path = tmp_path("bad.ckpt");
    err[0] = '\0';
    TU_CHECK(ckpt_write(path, 1, config, dup, 2, err, sizeof err) == -1 && err[0],
             "duplicate section names accepted");
    err[0] = '\0';
    TU_CHECK(ckpt_write(path, 1, config, &longname, 1, err, sizeof err) == -1 && err[0],
             "16-character section name accepted");
    TU_CHECK(access(path, F_OK) != 0 && count_dir_entries() == 0, "refused write left a file");
}

// A small valid checkpoint's bytes (for the corruption tests); caller frees.
static unsigned char *small_ckpt(size_t *len) {
    paramset_t a = ps_new(8, 1, 3);
    const char extra[5] = "xtra";
    const char *path = tmp_path("small.ckpt");
    if (paramset_save(&a, path, CKPT_KIND_GPT, config, extra, sizeof extra, err, sizeof err)) {
        fprintf(stderr, "test_ckpt: %s\n", err);
        exit(2);
    }
    unsigned char *buf = (unsigned char *)tu_read_file(path, len);
    unlink(path);
    ps_free(&a);
    return buf;
}

static void test_truncation(void) {
    size_t len;
    unsigned char *buf = small_ckpt(&len);
    const char *path = tmp_path("trunc.ckpt");
    int all = 1;
    for (size_t k = 0; k < len; k++) {
        write_bytes(path, buf, k);
        char what[64];
        snprintf(what, sizeof what, "truncated to %zu of %zu bytes", k, len);
        const char *want = k == 0 ? "empty" : k < 8 ? "not an rlx checkpoint" : "truncated";
        all &= expect_refused(path, want, what);
        all &= expect_refused_bytes(buf, k, want, what);
        if (k == len / 2)
            printf("ok   e.g. %s\n", err);
    }
    TU_CHECK(all, "some truncations were not refused");
    printf("%s every truncation of a %zu-byte checkpoint refused\n", all ? "ok  " : "FAIL", len);
    write_bytes(path, buf, len);
    ckpt_t *c = ckpt_read(path, err, sizeof err);
    TU_CHECK(c != NULL, "the untruncated file is refused: %s", err);
    ckpt_destroy(&c);
    unlink(path);
    free(buf);
}

static void test_bit_flips(void) {
    size_t len;
    unsigned char *buf = small_ckpt(&len);
    const char *path = tmp_path("flip.ckpt");
    int all = 1;
    for (size_t k = 0; k < len; k++) {
        // Which check must catch a flip here.
        const char *want = k < 8                   ? "not an rlx checkpoint"
                           : k < 12                ? "version"
                           : k < len - TRAILER_LEN ? "checksum mismatch"
                           : k < len - 8           ? "checksum mismatch"
                                                   : "no end marker";
        for (int bit = 0; bit < 8; bit++) {
            char what[64];
            snprintf(what, sizeof what, "bit %d of byte %zu flipped", bit, k);
            buf[k] ^= (unsigned char)(1u << bit);
            write_bytes(path, buf, len);
            all &= expect_refused_bytes(buf, len, want, what);
            buf[k] ^= (unsigned char)(1u << bit);
            all &= expect_refused(path, want, what);
        }
    }
    TU_CHECK(all, "some bit flips were not refused");
    printf("%s all %zu single-bit flips of a %zu-byte checkpoint refused\n", all ? "ok  " : "FAIL",
           8 * len, len);
    unlink(path);
    free(buf);
}

// Damage that a checksum cannot see (the crc is recomputed after it): only the format checks
// stand between these files and the caller.
static void test_lying_files(void) {
    size_t len;
    unsigned char *buf = small_ckpt(&len);
    unsigned char *b = malloc(len + 64);
    const char *path = tmp_path("lie.ckpt");

    memcpy(b, buf, len);
    memcpy(b, "RLXCKPT2", 8);
    fix_crc(b, len);
    write_bytes(path, b, len);
    expect_refused(path, "not an rlx checkpoint", "wrong magic");

    memcpy(b, buf, len);
    uint32_t v2 = 2;
    memcpy(b + 8, &v2, 4);
    fix_crc(b, len);
    write_bytes(path, b, len);
    if (expect_refused(path, "version 2, this build reads version 1", "wrong version"))
        printf("ok   wrong version: %s\n", err);

    const uint64_t sizes[] = {(uint64_t)1 << 40, UINT64_MAX, UINT64_MAX - 100, 33, 1000};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        memcpy(b, buf, len);
        memcpy(b + HEADER_LEN + CKPT_NAME_LEN, &sizes[i], 8); // first section's size
        fix_crc(b, len);
        write_bytes(path, b, len);
        char what[64];
        snprintf(what, sizeof what, "section size %llu", (unsigned long long)sizes[i]);
        if (expect_refused(path, "claims", what) && i == 0)
            printf("ok   section size past the end: %s\n", err);
    }
    memcpy(b, buf, len);
    uint64_t shorter = 31; // one byte less: the table no longer ends at the trailer
    memcpy(b + HEADER_LEN + CKPT_NAME_LEN, &shorter, 8);
    fix_crc(b, len);
    write_bytes(path, b, len);
    expect_refused(path, NULL, "section one byte shorter");

    const uint32_t nsecs[] = {0, 4, 6, 1000, UINT32_MAX};
    for (size_t i = 0; i < sizeof nsecs / sizeof *nsecs; i++) {
        memcpy(b, buf, len);
        memcpy(b + HEADER_LEN - 4, &nsecs[i], 4);
        fix_crc(b, len);
        write_bytes(path, b, len);
        char what[64];
        snprintf(what, sizeof what, "nsections %u (file has 5)", nsecs[i]);
        expect_refused(path, NULL, what);
    }

    memcpy(b, buf, len); // second section renamed to the first's name
    memcpy(b + HEADER_LEN + 24 + 32, "params\0\0\0\0\0\0\0\0\0\0", CKPT_NAME_LEN);
    fix_crc(b, len);
    write_bytes(path, b, len);
    expect_refused(path, "duplicate", "duplicate section name");

    memcpy(b, buf, len); // name without a terminating NUL
    memset(b + HEADER_LEN, 'a', CKPT_NAME_LEN);
    fix_crc(b, len);
    write_bytes(path, b, len);
    expect_refused(path, "name", "unterminated section name");

    memcpy(b, buf, len); // bytes after the trailer
    memcpy(b + len, "garbage!", 8);
    write_bytes(path, b, len + 8);
    expect_refused(path, NULL, "trailing bytes");

    write_bytes(path, "hello, world: not a checkpoint at all, just some text\n", 54);
    expect_refused(path, "not an rlx checkpoint", "a text file");
    write_bytes(path, "", 0);
    expect_refused(path, "empty", "an empty file");
    expect_refused_bytes("", 0, "empty", "zero bytes");
    expect_refused_bytes(NULL, 0, "empty", "a NULL buffer");
    expect_refused(tmp_path("does-not-exist.ckpt"), "does-not-exist", "a missing file");
    expect_refused(dir, NULL, "a directory");
    unlink(path);
    free(b);
    free(buf);
}

// Random damage, with and without a repaired checksum: refused or, if accepted, every section
// readable in bounds (ASan watches).
static void test_fuzz(void) {
    size_t len;
    unsigned char *buf = small_ckpt(&len);
    unsigned char *b = malloc(len);
    const char *path = tmp_path("fuzz.ckpt");
    rng_t r;
    rng_seed(&r, 99);
    int accepted = 0;
    for (int it = 0; it < 3000; it++) {
        memcpy(b, buf, len);
        int nflips = 1 + (int)rng_below(&r, 4);
        for (int k = 0; k < nflips; k++) {
            // mostly the header and section table, where the structure lives
            size_t at = rng_below(&r, 4) ? rng_below(&r, HEADER_LEN + 24) : rng_below(&r, len);
            b[at] = (unsigned char)rng_next(&r);
        }
        size_t n = rng_below(&r, 8) ? len : rng_below(&r, (uint32_t)len + 1);
        if (n >= HEADER_LEN + TRAILER_LEN && rng_below(&r, 2))
            fix_crc(b, n);
        write_bytes(path, b, n);
        err[0] = '\0';
        ckpt_t *c = ckpt_read(path, err, sizeof err);
        ckpt_t *cp = ckpt_parse(b, n, err, sizeof err);
        TU_CHECK(!c == !cp, "fuzz %d: ckpt_read and ckpt_parse disagree", it);
        ckpt_destroy(&cp);
        if (c) {
            accepted++;
            const char *names[] = {"params", "adam_m", "adam_v", "adam_step", "extra"};
            volatile unsigned sum = 0;
            for (int s = 0; s < 5; s++) {
                uint64_t nb = 0;
                const unsigned char *d = ckpt_section(c, names[s], &nb);
                for (uint64_t i = 0; d && i < nb; i++)
                    sum += d[i];
            }
            (void)sum;
            ckpt_destroy(&c);
        } else {
            TU_CHECK(err[0] != '\0', "fuzz %d: refused without a message", it);
        }
    }
    printf("ok   3000 fuzzed files: %d accepted (harmless header changes), none crashed\n",
           accepted);
    unlink(path);
    free(b);
    free(buf);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/rlx_test_ckpt_XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 2;
    }
    for (int i = 0; i < CKPT_CONFIG_LEN; i++)
        config[i] = (int32_t)(1000 * i - 7);
    test_round_trip();
    test_zero_grad();
    test_load_mismatch();
    test_atomic();
    test_bad_write_args();
    test_truncation();
    test_bit_flips();
    test_lying_files();
    test_fuzz();
    int left = count_dir_entries();
    TU_CHECK(left == 0, "%d files left in %s", left, dir);
    rmdir(dir);
    return tu_finish("test_ckpt");
}
