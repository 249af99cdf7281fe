// arith.c: see arith.h.
#include "arith.h"

#include <stdio.h>

#include "rng.h"

int arith_is_heldout(int a, int b) {
    uint32_t h = (uint32_t)(a * 100 + b) * 2654435761u;
    return (h >> 16) % 10 == 0;
}

void arith_prompt(int a, int b, char *buf) {
    snprintf(buf, 8, "%02u+%02u=", (unsigned)a % 100u, (unsigned)b % 100u);
}

void arith_target(int a, int b, char *buf) {
    int s = a + b;
    buf[0] = (char)('0' + s % 10);
    buf[1] = (char)('0' + s / 10 % 10);
    buf[2] = (char)('0' + s / 100 % 10);
    buf[3] = 0;
}

int arith_write_corpus(const char *path, int lines, float noise, uint64_t seed) {
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    rng_t r;
    rng_seed(&r, seed);
    for (int i = 0; i < lines; i++) {
        int a, b;
        do {
            a = (int)rng_below(&r, 100);
            b = (int)rng_below(&r, 100);
        } while (arith_is_heldout(a, b));
        char p[8], t[4];
        arith_prompt(a, b, p);
        arith_target(a, b, t);
        if (rng_uniform(&r) < noise) {
            int pos = (int)rng_below(&r, 3);
            t[pos] = (char)('0' + (t[pos] - '0' + 1 + (int)rng_below(&r, 9)) % 10);
        }
        fprintf(f, "%s%s\n", p, t);
    }
    return fclose(f) == 0 ? 0 : -1;
}

int arith_write_prompts(const char *train_path, const char *eval_path) {
    FILE *tr = fopen(train_path, "w"), *ev = fopen(eval_path, "w");
    if (!tr || !ev) {
        if (tr)
            fclose(tr);
        if (ev)
            fclose(ev);
        return -1;
    }
    for (int a = 0; a < 100; a++) {
        for (int b = 0; b < 100; b++) {
            char p[8], t[4];
            arith_prompt(a, b, p);
            arith_target(a, b, t);
            fprintf(arith_is_heldout(a, b) ? ev : tr, "%s\t%s\n", p, t);
        }
    }
    int rc = fclose(tr) | fclose(ev);
    return rc == 0 ? 0 : -1;
}
