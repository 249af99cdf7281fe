// image_scorers.c: rewards of image and toy payloads. See image_scorers.h.
#include "image_scorers.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "digits.h"
#include "layers.h"
#include "util.h"

#define CLF_MAGIC "RLXCLF01"
#define TOY_MAX_MODES 1024

static const char *const NAMES[IMGSCORE_KINDS] = {"digit-logp", "digit-prob", "ink",
                                                  "symmetry",   "toy-mode",   "toy-density"};

int imgscore_find(const char *name) {
    for (int k = 0; k < IMGSCORE_KINDS; k++)
        if (!strcmp(name, NAMES[k]))
            return k;
    return -1;
}

const char *imgscore_name(int kind) {
    assert(kind >= 0 && kind < IMGSCORE_KINDS);
    return NAMES[kind];
}

const char *imgscore_list(void) {
    return "digit-logp,digit-prob,ink,symmetry,toy-mode,toy-density";
}

static int is_digit_kind(int kind) {
    return kind == IMGSCORE_DIGIT_LOGP || kind == IMGSCORE_DIGIT_PROB;
}

imgscore_t *imgscore_new_with(int kind, mlp_t *clf) {
    assert(kind >= 0 && kind < IMGSCORE_KINDS);
    assert(!is_digit_kind(kind) || (clf && clf->cfg.in_dim == DIGITS_DIM &&
                                    clf->cfg.out_dim == DIGITS_CLASSES && clf->cfg.time_dim == 0));
    imgscore_t *s = rlx_xcalloc(1, sizeof *s, "image scorer");
    s->kind = kind;
    s->clf = clf;
    return s;
}

imgscore_t *imgscore_new(const char *name, const char *clf_path, char *err, size_t errlen) {
    int kind = imgscore_find(name);
    if (kind < 0) {
        snprintf(err, errlen, "unknown image scorer '%s' (known: %s)", name, imgscore_list());
        return NULL;
    }
    if (!is_digit_kind(kind))
        return imgscore_new_with(kind, NULL);
    if (!clf_path || !*clf_path) {
        snprintf(err, errlen, "scorer %s needs a classifier checkpoint (rlx-train-classifier)",
                 name);
        return NULL;
    }
    ckpt_t *ck = ckpt_read(clf_path, err, errlen);
    if (!ck)
        return NULL;
    uint64_t nb = 0;
    const char *extra = ckpt_section(ck, "extra", &nb);
    if (!extra || nb < 8 || memcmp(extra, CLF_MAGIC, 8) != 0) {
        snprintf(err, errlen,
                 "%s: not a digit classifier checkpoint (no " CLF_MAGIC " in its extra section; "
                 "write one with rlx-train-classifier)",
                 clf_path);
        ckpt_destroy(&ck);
        return NULL;
    }
    mlp_t *clf = mlp_from_ckpt(ck, 1, err, errlen);
    ckpt_destroy(&ck);
    if (!clf)
        return NULL;
    if (clf->cfg.in_dim != DIGITS_DIM || clf->cfg.out_dim != DIGITS_CLASSES ||
        clf->cfg.time_dim != 0) {
        snprintf(err, errlen, "%s: classifier shape (in %d, out %d, time %d) is not 64 -> 10",
                 clf_path, clf->cfg.in_dim, clf->cfg.out_dim, clf->cfg.time_dim);
        mlp_destroy(&clf);
        return NULL;
    }
    return imgscore_new_with(kind, clf);
}

void imgscore_destroy(imgscore_t **self_p) {
    if (!self_p || !*self_p)
        return;
    mlp_destroy(&(*self_p)->clf);
    free(*self_p);
    *self_p = NULL;
}

// ---- target parsing -------------------------------------------------------------------------

// Parses an integer in [lo, hi] from [*p, ...) up to a char of stop (or NUL); advances *p.
static int parse_int(const char **p, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(*p, &end, 10);
    if (end == *p || errno || v < lo || v > hi)
        return -1;
    *p = end;
    *out = (int)v;
    return 0;
}

static int parse_float(const char **p, float *out) {
    char *end;
    errno = 0;
    float v = strtof(*p, &end);
    if (end == *p || errno || !isfinite(v))
        return -1;
    *p = end;
    *out = v;
    return 0;
}

// Parses "k1+k2+...[,modes,radius[,std]]" (want_std) or "k[,modes,radius]" (!want_std) into
// the mode list; defaults 8 modes, radius 2, std 0.1.
static int parse_toy_target(const char *target, int want_list, int *ks, int *nk, int *modes,
                            float *radius, float *std) {
    const char *p = target;
    *modes = 8;
    *radius = 2.0f;
    *std = 0.1f;
    *nk = 0;
    for (;;) {
        if (*nk >= TOY_MAX_MODES || parse_int(&p, 0, TOY_MAX_MODES - 1, &ks[*nk]) != 0)
            return -1;
        (*nk)++;
        if (*p == '+' && want_list) {
            p++;
            continue;
        }
        break;
    }
    if (*p == ',') {
        p++;
        if (parse_int(&p, 1, TOY_MAX_MODES, modes) != 0 || *p != ',')
            return -1;
        p++;
        if (parse_float(&p, radius) != 0)
            return -1;
        if (want_list && *p == ',') {
            p++;
            if (parse_float(&p, std) != 0 || !(*std > 0))
                return -1;
        }
    }
    if (*p != '\0')
        return -1;
    for (int i = 0; i < *nk; i++)
        if (ks[i] >= *modes)
            return -1;
    return 0;
}

// ---- scoring ---------------------------------------------------------------------------------

static int digit_score(imgscore_t *s, const float *x, const char *target, float *reward, char *err,
                       size_t errlen) {
    const char *p = target;
    int cls;
    if (parse_int(&p, 0, DIGITS_CLASSES - 1, &cls) != 0 || *p != '\0') {
        snprintf(err, errlen, "%s: target '%s' is not a digit class 0..9", NAMES[s->kind], target);
        return -1;
    }
    float logits[DIGITS_CLASSES];
    mlp_forward(s->clf, x, NULL, 1);
    layers_to_host(logits, s->clf->a.out, DIGITS_CLASSES);
    double mx = logits[0], sum = 0;
    for (int k = 1; k < DIGITS_CLASSES; k++)
        mx = logits[k] > mx ? logits[k] : mx;
    for (int k = 0; k < DIGITS_CLASSES; k++)
        sum += exp(logits[k] - mx);
    double logp = logits[cls] - mx - log(sum);
    *reward = (float)(s->kind == IMGSCORE_DIGIT_LOGP ? logp : exp(logp));
    return 0;
}

int imgscore_score(imgscore_t *s, const float *payload, size_t n, const uint32_t *shape,
                   size_t nshape, const char *target, float *reward, char *err, size_t errlen) {
    assert(s && reward && target);
    size_t prod = nshape ? 1 : 0;
    for (size_t i = 0; i < nshape; i++)
        prod *= shape[i];
    if (!payload || prod != n || n == 0) {
        snprintf(err, errlen,
                 "%s: payload of %zu floats does not match its shape (%zu dims, "
                 "%zu elements)",
                 NAMES[s->kind], n, nshape, prod);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        if (!isfinite(payload[i])) {
            snprintf(err, errlen, "%s: payload value %zu is not finite", NAMES[s->kind], i);
            return -1;
        }
    switch (s->kind) {
    case IMGSCORE_DIGIT_LOGP:
    case IMGSCORE_DIGIT_PROB:
        if (n != DIGITS_DIM || nshape > 2 || (nshape == 2 && shape[0] != DIGITS_SIDE)) {
            snprintf(err, errlen, "%s: payload must be an 8x8 image ([8, 8] or [64])",
                     NAMES[s->kind]);
            return -1;
        }
        return digit_score(s, payload, target, reward, err, errlen);
    case IMGSCORE_INK: {
        double ink = 0;
        for (size_t i = 0; i < n; i++)
            ink += 0.5 * (payload[i] + 1.0);
        ink /= n;
        if (!*target) {
            *reward = (float)ink;
            return 0;
        }
        const char *p = target;
        float v;
        if (parse_float(&p, &v) != 0 || *p != '\0' || v < 0 || v > 1) {
            snprintf(err, errlen, "ink: target '%s' is not a brightness in [0, 1]", target);
            return -1;
        }
        *reward = (float)-fabs(ink - v);
        return 0;
    }
    case IMGSCORE_SYMMETRY: {
        size_t H, W;
        if (nshape == 2) {
            H = shape[0];
            W = shape[1];
        } else if (nshape == 1 && n == DIGITS_DIM) {
            H = W = DIGITS_SIDE;
        } else {
            snprintf(err, errlen, "symmetry: payload must be an image [H, W] (or [64])");
            return -1;
        }
        double sum = 0;
        for (size_t i = 0; i < H; i++)
            for (size_t j = 0; j < W; j++)
                sum += fabs((double)payload[i * W + j] - payload[i * W + (W - 1 - j)]);
        *reward = (float)(-sum / n);
        return 0;
    }
    case IMGSCORE_TOY_MODE:
    case IMGSCORE_TOY_DENSITY: {
        if (n != 2) {
            snprintf(err, errlen, "%s: payload must be a 2-D point [2]", NAMES[s->kind]);
            return -1;
        }
        int ks[TOY_MAX_MODES], nk, modes;
        float radius, std;
        int list = s->kind == IMGSCORE_TOY_DENSITY;
        if (parse_toy_target(target, list, ks, &nk, &modes, &radius, &std) != 0) {
            snprintf(err, errlen, "%s: bad target '%s' (want %s)", NAMES[s->kind], target,
                     list ? "k1+k2+...[,modes,radius,std]" : "k[,modes,radius]");
            return -1;
        }
        if (!list) {
            float c[2];
            digits_toy_centre(ks[0], modes, radius, c);
            *reward = -hypotf(payload[0] - c[0], payload[1] - c[1]);
            return 0;
        }
        // log (1/K) sum_k N(x; c_k, std^2 I), by log-sum-exp.
        double lw[TOY_MAX_MODES], mx = -INFINITY, sum = 0;
        for (int i = 0; i < nk; i++) {
            float c[2];
            digits_toy_centre(ks[i], modes, radius, c);
            double dx = payload[0] - c[0], dy = payload[1] - c[1];
            lw[i] = -0.5 * (dx * dx + dy * dy) / ((double)std * std);
            mx = lw[i] > mx ? lw[i] : mx;
        }
        for (int i = 0; i < nk; i++)
            sum += exp(lw[i] - mx);
        *reward = (float)(mx + log(sum) - log((double)nk) - log(2 * M_PI * (double)std * std));
        return 0;
    }
    }
    assert(0 && "unreachable");
    return -1;
}
