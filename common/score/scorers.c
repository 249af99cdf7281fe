// scorers.c: see scorers.h.
#include "scorers.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gflownet.h"

static float score_exact(const char *prompt, const char *response, const char *target) {
    (void)prompt;
    return strcmp(response, target) == 0 ? 1.0f : 0.0f;
}

static float score_digits(const char *prompt, const char *response, const char *target) {
    (void)prompt;
    size_t nr = strlen(response), nt = strlen(target), n = nr > nt ? nr : nt, hit = 0;
    if (n == 0)
        return 1.0f;
    for (size_t i = 0; i < nr && i < nt; i++)
        hit += response[i] == target[i];
    return (float)hit / (float)n;
}

// One mode of a "seqmodes" target: its string [start, start + len) and weight. Returns the
// position after it (past a comma), or NULL at the end of the list.
static const char *next_mode(const char *p, const char **start, size_t *len, double *weight) {
    if (!*p)
        return NULL;
    size_t n = strcspn(p, ",:");
    *start = p;
    *len = n;
    *weight = 1.0;
    p += n;
    if (*p == ':') {
        char *end;
        *weight = strtod(p + 1, &end);
        p = end + strcspn(end, ",");
    }
    return *p == ',' ? p + 1 : p;
}

// max over modes m of w_m (1 - d(response, m) / n), n the longer length, d the Hamming
// distance plus the length difference; 0 for an empty mode list (scorers.h).
static float score_seqmodes(const char *prompt, const char *response, const char *target) {
    (void)prompt;
    size_t nr = strlen(response);
    double best = 0.0;
    const char *m;
    size_t len;
    double w;
    for (const char *p = target; (p = next_mode(p, &m, &len, &w));) {
        size_t n = nr > len ? nr : len, d = n - (nr < len ? nr : len);
        for (size_t i = 0; i < nr && i < len; i++)
            d += response[i] != m[i];
        double s = n ? w * (1.0 - (double)d / (double)n) : w;
        best = s > best ? s : best;
    }
    return (float)best;
}

// HyperGrid R(x) (gflownet.h, torchgfn's R0 0.1, R1 0.5, R2 2.0) of a one-hot payload.
static int score_hypergrid(const float *payload, size_t n, const uint32_t *shape, size_t nshape,
                           float *reward, char *err, size_t errlen) {
    if (nshape != 2 || shape[0] < 1 || shape[0] > 64 || shape[1] < 2 || shape[1] > 1024 ||
        n != (size_t)shape[0] * shape[1]) {
        snprintf(err, errlen, "hypergrid wants a one-hot payload of shape [D, H]");
        return -1;
    }
    int D = (int)shape[0], H = (int)shape[1], s[64];
    for (int d = 0; d < D; d++) {
        int hot = -1, ones = 0;
        for (int h = 0; h < H; h++) {
            float v = payload[d * H + h];
            if (v == 1.0f) {
                hot = h;
                ones++;
            } else if (v != 0.0f) {
                ones = -1;
                break;
            }
        }
        if (ones != 1) {
            snprintf(err, errlen, "hypergrid payload row %d is not one-hot", d);
            return -1;
        }
        s[d] = hot;
    }
    double states = 1;
    for (int d = 0; d < D; d++)
        states *= H;
    if (states >= 2147483648.0) {
        snprintf(err, errlen, "hypergrid %d^%d is too large", H, D);
        return -1;
    }
    gfn_grid_t g = gfn_grid(D, H);
    *reward = (float)gfn_grid_reward(&g, s);
    return 0;
}

typedef struct {
    const char *name;                                      // name peers ask for
    float (*fn)(const char *, const char *, const char *); // text: prompt, response, target
    int (*payload_fn)(const float *, size_t, const uint32_t *, size_t, float *, char *,
                      size_t); // payload scorers: payload, n, shape, nshape -> reward or err
} scorer_t;

static const scorer_t scorers[] = {{"exact", score_exact, NULL},
                                   {"digits", score_digits, NULL},
                                   {"seqmodes", score_seqmodes, NULL},
                                   {"hypergrid", NULL, score_hypergrid}};
#define NSCORERS (int)(sizeof scorers / sizeof scorers[0])

int scorer_find(const char *name) {
    for (int i = 0; i < NSCORERS; i++)
        if (name && strcmp(name, scorers[i].name) == 0)
            return i;
    return -1;
}

const char *scorer_name(int id) {
    return id >= 0 && id < NSCORERS ? scorers[id].name : NULL;
}

const char *scorer_list(void) {
    return "exact,digits,seqmodes,hypergrid";
}

int scorer_is_payload(int id) {
    assert(id >= 0 && id < NSCORERS);
    return scorers[id].payload_fn != NULL;
}

float scorer_score(int id, const char *prompt, const char *response, const char *target) {
    assert(id >= 0 && id < NSCORERS);
    return scorers[id].fn ? scorers[id].fn(prompt, response, target) : 0.0f;
}

int scorer_score_payload(int id, const float *payload, size_t n, const uint32_t *shape,
                         size_t nshape, float *reward, char *err, size_t errlen) {
    assert(id >= 0 && id < NSCORERS);
    if (!scorers[id].payload_fn) {
        snprintf(err, errlen, "scorer %s scores text, not payloads", scorers[id].name);
        return -1;
    }
    return scorers[id].payload_fn(payload, n, shape, nshape, reward, err, errlen);
}
