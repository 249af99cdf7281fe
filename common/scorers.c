// scorers.c: see scorers.h.
#include "scorers.h"

#include <assert.h>
#include <string.h>

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

typedef struct {
    const char *name;                                       // name peers ask for
    float (*fn)(const char *, const char *, const char *); // prompt, response, target
} scorer_t;

static const scorer_t scorers[] = {{"exact", score_exact}, {"digits", score_digits}};
#define NSCORERS (int)(sizeof scorers / sizeof scorers[0])

int scorer_find(const char *name) {
    for (int i = 0; i < NSCORERS; i++)
        if (name && strcmp(name, scorers[i].name) == 0)
            return i;
    return -1;
}

const char *scorer_name(int id) { return id >= 0 && id < NSCORERS ? scorers[id].name : NULL; }

const char *scorer_list(void) { return "exact,digits"; }

float scorer_score(int id, const char *prompt, const char *response, const char *target) {
    assert(id >= 0 && id < NSCORERS);
    return scorers[id].fn(prompt, response, target);
}
