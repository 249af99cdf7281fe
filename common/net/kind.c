// kind.c: names of the trajectory kinds (kind.h).
#include "kind.h"

#include <string.h>

static const char *const names[KIND_COUNT] = {
    [KIND_NONE] = "none",
    [KIND_TEXT] = "text",
    [KIND_DIFFUSION] = "diffusion",
    [KIND_GFLOW] = "gflow",
};

const char *kind_name(kind_t k) {
    return (unsigned)k < KIND_COUNT ? names[k] : "?";
}

kind_t kind_parse(const char *s) {
    for (int k = KIND_TEXT; k < KIND_COUNT; k++)
        if (s && strcmp(s, names[k]) == 0) return (kind_t)k;
    return KIND_NONE;
}

int kind_valid(int k) {
    return k == KIND_TEXT || k == KIND_DIFFUSION || k == KIND_GFLOW;
}
