// digits.c: the UCI digits reader (zlib), the Gaussian-mixture toy, splits and the digit
// classifier. See digits.h.
#include "digits.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "layers.h"
#include "rng.h"
#include "util.h"

static digits_t *digits_alloc(int n, int dim, int n_classes) {
    digits_t *d = rlx_xcalloc(1, sizeof *d, "digits");
    d->n = n;
    d->dim = dim;
    d->n_classes = n_classes;
    d->x = rlx_alloc_floats((size_t)n * dim, "digits features");
    d->label = rlx_xcalloc(n > 0 ? n : 1, sizeof(int), "digits labels");
    return d;
}

void digits_destroy(digits_t **self_p) {
    if (!self_p || !*self_p)
        return;
    free((*self_p)->x);
    free((*self_p)->label);
    free(*self_p);
    *self_p = NULL;
}

// Whole decompressed file in a NUL-terminated buffer; NULL with err.
static char *read_gz(const char *path, size_t *len, char *err, size_t errlen) {
    gzFile f = gzopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open", path);
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            snprintf(err, errlen, "%s: out of memory", path);
            gzclose(f);
            return NULL;
        }
        if (n + 1 >= cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb)
                free(buf);
            buf = nb;
            cap *= 2;
            continue;
        }
        int got = gzread(f, buf + n, (unsigned)(cap - 1 - n));
        if (got < 0) {
            int code;
            const char *why = gzerror(f, &code);
            snprintf(err, errlen, "%s: corrupt gzip data after %zu bytes (%s)", path, n, why);
            free(buf);
            gzclose(f);
            return NULL;
        }
        if (got == 0)
            break;
        n += (size_t)got;
    }
    // gzclose_r reports a stream that ended early (truncated file) as Z_BUF_ERROR.
    int rc = gzclose(f);
    if (rc != Z_OK) {
        snprintf(err, errlen, "%s: %s after %zu bytes", path,
                 rc == Z_BUF_ERROR ? "gzip stream truncated" : "gzip read error", n);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

digits_t *digits_load(const char *path, char *err, size_t errlen) {
    size_t len = 0;
    char *text = read_gz(path, &len, err, errlen);
    if (!text)
        return NULL;
    int rows = 0;
    for (size_t i = 0; i < len; i++)
        rows += text[i] == '\n';
    if (len > 0 && text[len - 1] != '\n')
        rows++;
    digits_t *d = NULL;
    if (rows == 0) {
        snprintf(err, errlen, "%s: no rows", path);
        goto fail;
    }
    d = digits_alloc(rows, DIGITS_DIM, DIGITS_CLASSES);
    char *p = text;
    int row = 0;
    while (*p) {
        if (*p == '\n' || *p == '\r') { // blank line
            p++;
            continue;
        }
        for (int j = 0; j <= DIGITS_DIM; j++) {
            char *end;
            long v = strtol(p, &end, 10);
            int last = j == DIGITS_DIM;
            if (end == p) {
                snprintf(err, errlen,
                         "%s: line %d: field %d is not a number (want %d pixels then a label)",
                         path, row + 1, j + 1, DIGITS_DIM);
                goto fail;
            }
            if (!last && (v < 0 || v > 16)) {
                snprintf(err, errlen, "%s: line %d: pixel %d is %ld, outside 0..16", path, row + 1,
                         j + 1, v);
                goto fail;
            }
            if (last && (v < 0 || v >= DIGITS_CLASSES)) {
                snprintf(err, errlen, "%s: line %d: label %ld outside 0..9", path, row + 1, v);
                goto fail;
            }
            char want = last ? '\n' : ',';
            if (*end == '\r')
                end++;
            if (!(*end == want || (last && *end == '\0'))) {
                snprintf(err, errlen, "%s: line %d: expected %d comma-separated fields", path,
                         row + 1, DIGITS_DIM + 1);
                goto fail;
            }
            if (last)
                d->label[row] = (int)v;
            else
                d->x[(size_t)row * DIGITS_DIM + j] = (float)v / 8.0f - 1.0f;
            p = *end ? end + 1 : end;
        }
        row++;
    }
    d->n = row;
    free(text);
    return d;
fail:
    free(text);
    digits_destroy(&d);
    return NULL;
}

void digits_toy_centre(int k, int modes, float radius, float out[2]) {
    double a = 2.0 * M_PI * k / modes;
    out[0] = (float)(radius * cos(a));
    out[1] = (float)(radius * sin(a));
}

int digits_toy_nearest(const float x[2], int modes, float radius, float *dist) {
    int best = 0;
    float bd = INFINITY;
    for (int k = 0; k < modes; k++) {
        float c[2];
        digits_toy_centre(k, modes, radius, c);
        float dd = hypotf(x[0] - c[0], x[1] - c[1]);
        if (dd < bd) {
            bd = dd;
            best = k;
        }
    }
    *dist = bd;
    return best;
}

digits_t *digits_toy_mixture(int n, int modes, float radius, float std, uint64_t seed) {
    assert(n >= 1 && modes >= 1);
    digits_t *d = digits_alloc(n, 2, modes);
    rng_t r;
    rng_seed(&r, seed);
    for (int i = 0; i < n; i++) {
        int k = (int)rng_below(&r, (uint32_t)modes);
        float c[2];
        digits_toy_centre(k, modes, radius, c);
        d->label[i] = k;
        d->x[2 * i] = c[0] + std * rng_normal(&r);
        d->x[2 * i + 1] = c[1] + std * rng_normal(&r);
    }
    return d;
}

void digits_split(const digits_t *all, float test_frac, uint64_t seed, digits_t **train,
                  digits_t **test) {
    assert(test_frac >= 0.0f && test_frac <= 1.0f);
    int n = all->n, nt = (int)lrint(n * (double)test_frac);
    int *perm = rlx_xcalloc(n, sizeof(int), "split");
    for (int i = 0; i < n; i++)
        perm[i] = i;
    rng_t r;
    rng_seed(&r, seed);
    for (int i = n - 1; i > 0; i--) { // Fisher-Yates
        int j = (int)rng_below(&r, (uint32_t)(i + 1));
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    digits_t *te = digits_alloc(nt, all->dim, all->n_classes);
    digits_t *tr = digits_alloc(n - nt, all->dim, all->n_classes);
    for (int i = 0; i < n; i++) {
        digits_t *dst = i < nt ? te : tr;
        int k = i < nt ? i : i - nt;
        memcpy(dst->x + (size_t)k * all->dim, all->x + (size_t)perm[i] * all->dim,
               (size_t)all->dim * sizeof(float));
        dst->label[k] = all->label[perm[i]];
    }
    free(perm);
    *train = tr;
    *test = te;
}

void digits_print(FILE *f, const float *x) {
    static const char shades[] = " .:-=+*#%@";
    for (int r = 0; r < DIGITS_SIDE; r++) {
        char line[2 * DIGITS_SIDE + 1];
        for (int c = 0; c < DIGITS_SIDE; c++) {
            float v = (x[r * DIGITS_SIDE + c] + 1.0f) * 0.5f; // [0, 1]
            int k = (int)(v * 9.99f);
            k = k < 0 ? 0 : k > 9 ? 9 : k;
            line[2 * c] = line[2 * c + 1] = shades[k];
        }
        line[2 * DIGITS_SIDE] = '\0';
        fprintf(f, "%s\n", line);
    }
}

// ---- classifier ---------------------------------------------------------------------------

digits_clf_config_t digits_clf_defaults(void) {
    digits_clf_config_t c = {
        .hidden = 128, .n_blocks = 1, .batch = 64, .steps = 1500, .noise = 0.1f, .seed = 1};
    c.opt = adamw_defaults();
    c.opt.lr = 2e-3f;
    c.opt.weight_decay = 0.01f;
    c.opt.warmup_steps = 50;
    c.opt.min_lr_frac = 0.05f;
    return c;
}

mlp_t *digits_clf_train(const digits_t *train, const digits_clf_config_t *c, FILE *log,
                        int log_every) {
    assert(train->n >= 1 && c->batch >= 1 && c->steps >= 0);
    int B = c->batch, D = train->dim, K = train->n_classes;
    mlp_config_t mc = {
        .in_dim = D, .hidden = c->hidden, .n_blocks = c->n_blocks, .out_dim = K, .time_dim = 0};
    mlp_t *m = mlp_new(&mc, B > 256 ? B : 256, c->seed);
    adamw_config_t opt = c->opt;
    if (opt.decay_steps == 0)
        opt.decay_steps = c->steps;
    rng_t r;
    rng_seed2(&r, c->seed, 7);
    float *x = rlx_alloc_floats((size_t)B * D, "clf batch"); // (B, D)
    int *y = rlx_xcalloc(B, sizeof(int), "clf labels");      // (B)
    float *logp = rlx_alloc_floats(B, "clf logp"), *lse = rlx_alloc_floats(B, "clf lse");
    float *dlogp = rlx_alloc_floats(B, "clf dlogp");                 // (B)
    float *dlogits = rlx_alloc_floats((size_t)B * K, "clf dlogits"); // (B, K)
    double t0 = rlx_now(), run = 0.0;
    for (int s = 0; s < c->steps; s++) {
        for (int i = 0; i < B; i++) {
            int j = (int)rng_below(&r, (uint32_t)train->n);
            y[i] = train->label[j];
            for (int k = 0; k < D; k++)
                x[(size_t)i * D + k] = train->x[(size_t)j * D + k] + c->noise * rng_normal(&r);
        }
        mlp_forward(m, x, NULL, B);
        logprob_forward(logp, lse, m->a.out, y, B, K);
        float loss = xent_forward(logp, NULL, NULL, B);
        memset(dlogp, 0, (size_t)B * sizeof(float));
        xent_backward(dlogp, 1.0f, NULL, NULL, B);
        memset(dlogits, 0, (size_t)B * K * sizeof(float));
        logprob_backward(dlogits, dlogp, m->a.out, lse, y, B, K);
        paramset_zero_grad(&m->ps);
        mlp_backward(m, dlogits);
        adamw_step(&m->ps, &opt);
        run = s == 0 ? loss : 0.98 * run + 0.02 * loss;
        if (log && log_every > 0 && ((s + 1) % log_every == 0 || s + 1 == c->steps))
            fprintf(log, "clf step %d/%d loss %.4f (avg %.4f) %.1fs\n", s + 1, c->steps, loss, run,
                    rlx_now() - t0);
    }
    free(x);
    free(y);
    free(logp);
    free(lse);
    free(dlogp);
    free(dlogits);
    return m;
}

void digits_clf_predict(mlp_t *m, const float *x, int N, int *pred) {
    int D = m->cfg.in_dim, K = m->cfg.out_dim;
    for (int i0 = 0; i0 < N; i0 += m->max_batch) {
        int n = N - i0 < m->max_batch ? N - i0 : m->max_batch;
        mlp_forward(m, x + (size_t)i0 * D, NULL, n);
        for (int i = 0; i < n; i++) {
            const float *o = m->a.out + (size_t)i * K;
            int best = 0;
            for (int k = 1; k < K; k++)
                if (o[k] > o[best])
                    best = k;
            pred[i0 + i] = best;
        }
    }
}

float digits_clf_accuracy(mlp_t *m, const digits_t *set) {
    int *pred = rlx_xcalloc(set->n, sizeof(int), "predictions");
    digits_clf_predict(m, set->x, set->n, pred);
    int ok = 0;
    for (int i = 0; i < set->n; i++)
        ok += pred[i] == set->label[i];
    free(pred);
    return set->n ? (float)ok / set->n : 0.0f;
}
