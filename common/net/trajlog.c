// trajlog.c: see trajlog.h.
#include "trajlog.h"

#include <stdlib.h>
#include <string.h>

static const char MAGIC[8] = {'R', 'L', 'X', 'T', 'R', 'J', '1', '\n'};

struct trajlog {
    FILE *f;     // the file
    long record; // records read or written so far
};

trajlog_t *trajlog_open_append(const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "ab+");
    if (!f) {
        snprintf(err, errlen, "cannot open trajectory log %s for appending", path);
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    if (ftell(f) == 0 && fwrite(MAGIC, 1, 8, f) != 8) {
        snprintf(err, errlen, "cannot write trajectory log %s", path);
        fclose(f);
        return NULL;
    }
    trajlog_t *t = calloc(1, sizeof *t);
    if (!t) {
        fclose(f);
        return NULL;
    }
    t->f = f;
    return t;
}

trajlog_t *trajlog_open_read(const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    char m[8];
    if (!f) {
        snprintf(err, errlen, "cannot open trajectory log %s", path);
        return NULL;
    }
    if (fread(m, 1, 8, f) != 8 || memcmp(m, MAGIC, 8) != 0) {
        snprintf(err, errlen, "%s is not an rlx trajectory log (bad magic)", path);
        fclose(f);
        return NULL;
    }
    trajlog_t *t = calloc(1, sizeof *t);
    if (!t) {
        fclose(f);
        return NULL;
    }
    t->f = f;
    return t;
}

int trajlog_write(trajlog_t *t, wire_t *w, const Rlx__Envelope *batch) {
    uint8_t *buf = NULL;
    size_t len = 0;
    if (wire_encode(w, batch, &buf, &len, NULL) != WIRE_OK)
        return -1;
    uint32_t n = (uint32_t)len;
    int ok = fwrite(&n, 4, 1, t->f) == 1 && fwrite(buf, 1, len, t->f) == len && fflush(t->f) == 0;
    free(buf);
    t->record++;
    return ok ? 0 : -1;
}

int trajlog_read(trajlog_t *t, wire_t *w, Rlx__Envelope **out, char *err, size_t errlen) {
    *out = NULL;
    uint32_t n;
    size_t got = fread(&n, 1, 4, t->f);
    if (got == 0)
        return 0;
    if (got != 4 || n > wire_max_size(w)) {
        snprintf(err, errlen, "record %ld: truncated or oversized length", t->record);
        return -1;
    }
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf || fread(buf, 1, n, t->f) != n) {
        free(buf);
        snprintf(err, errlen, "record %ld: truncated", t->record);
        return -1;
    }
    wire_error_t why;
    int rc = wire_decode(w, buf, n, out, &why);
    free(buf);
    if (rc != WIRE_OK) {
        snprintf(err, errlen, "record %ld: %s", t->record, why.detail);
        return -1;
    }
    if ((*out)->body_case != RLX__ENVELOPE__BODY_TRAJECTORY_BATCH) {
        wire_free(out);
        snprintf(err, errlen, "record %ld: not a trajectory batch", t->record);
        return -1;
    }
    t->record++;
    return 1;
}

void trajlog_close(trajlog_t **self_p) {
    if (!self_p || !*self_p)
        return;
    fclose((*self_p)->f);
    free(*self_p);
    *self_p = NULL;
}
