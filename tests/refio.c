// refio.c: see refio.h.
#include "refio.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int rd(FILE *f, void *p, size_t n) { return fread(p, 1, n, f) == n; }

ref_file_t *ref_load(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "refio: cannot open %s (regenerate with tests/gen_ref.py)\n", path);
        return NULL;
    }
    ref_file_t *rf = calloc(1, sizeof *rf);
    char magic[8];
    uint32_t count = 0;
    if (!rd(f, magic, 8) || memcmp(magic, "RLXREF1\0", 8) != 0 || !rd(f, &count, 4) ||
        count > 100000) {
        fprintf(stderr, "refio: %s is not a reference file\n", path);
        goto fail;
    }
    rf->tensors = calloc(count ? count : 1, sizeof(ref_tensor_t));
    for (uint32_t i = 0; i < count; i++) {
        ref_tensor_t *t = &rf->tensors[i];
        uint32_t nl, dt, nd;
        if (!rd(f, &nl, 4) || nl > 4096)
            goto bad;
        t->name = calloc(nl + 1, 1);
        rf->count = (int)i + 1;
        if (!rd(f, t->name, nl) || !rd(f, &dt, 4) || !rd(f, &nd, 4) || dt > 1 || nd > 8)
            goto bad;
        t->dtype = (int)dt;
        t->ndim = (int)nd;
        t->count = 1;
        for (uint32_t d = 0; d < nd; d++) {
            if (!rd(f, &t->dims[d], 8) || t->dims[d] < 0)
                goto bad;
            t->count *= (size_t)t->dims[d];
        }
        t->data = malloc(t->count * 4 + 1);
        if (!t->data || !rd(f, t->data, t->count * 4))
            goto bad;
    }
    fclose(f);
    return rf;
bad:
    fprintf(stderr, "refio: %s is truncated or malformed\n", path);
fail:
    fclose(f);
    ref_free(&rf);
    return NULL;
}

const ref_tensor_t *ref_get(const ref_file_t *f, const char *name) {
    for (int i = 0; i < f->count; i++)
        if (strcmp(f->tensors[i].name, name) == 0)
            return &f->tensors[i];
    fprintf(stderr, "refio: no tensor named %s\n", name);
    return NULL;
}

static const void *get_checked(const ref_file_t *f, const char *name, size_t n, int dtype) {
    const ref_tensor_t *t = ref_get(f, name);
    if (!t || t->dtype != dtype || (n && t->count != n)) {
        fprintf(stderr, "refio: tensor %s missing or has %zu elements of type %d, want %zu of %d\n",
                name, t ? t->count : 0, t ? t->dtype : -1, n, dtype);
        exit(2);
    }
    return t->data;
}

const float *ref_floats(const ref_file_t *f, const char *name, size_t n) {
    return get_checked(f, name, n, 0);
}

const int32_t *ref_ints(const ref_file_t *f, const char *name, size_t n) {
    return get_checked(f, name, n, 1);
}

void ref_free(ref_file_t **self_p) {
    if (!self_p || !*self_p)
        return;
    ref_file_t *f = *self_p;
    for (int i = 0; i < f->count; i++) {
        free(f->tensors[i].name);
        free(f->tensors[i].data);
    }
    free(f->tensors);
    free(f);
    *self_p = NULL;
}
