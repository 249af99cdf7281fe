// ckpt.c: writes and reads the rlx checkpoint format of ckpt.h. The writer streams header,
// sections and trailer (CRC32 over all of it) to "path.tmp.PID", syncs it and renames it over
// path, so a crash never leaves half a file at path; under ckpt_capture_begin the same stream
// goes to memory (open_memstream) instead, so a weights blob is the file's bytes exactly. The reader loads the whole file, checks
// magic, version, end marker, checksum and section table, and only then hands out pointers
// into its buffer. Every check is done on bounded arithmetic: arbitrary bytes never crash it.
//
// In the file, section data is packed (at offsets 108 + 24 per section + earlier sizes), so it
// is not aligned; the reader moves each section to a 64-byte-aligned address in its buffer,
// so section pointers may be cast to float, int64 or struct pointers.
#include "ckpt.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

// The format is little-endian and this code writes host integers as they are.
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "ckpt.c assumes a little-endian host (the checkpoint format is little-endian)"
#endif

#define CKPT_MAGIC "RLXCKPT1"
#define CKPT_END_MAGIC "RLXEND\0\0"
#define MAGIC_LEN 8
// magic | u32 version | u32 kind | i32 config[16] | u32 nsections
#define HEADER_LEN (MAGIC_LEN + 4 + 4 + 4 * CKPT_CONFIG_LEN + 4)
// char name[16] | u64 nbytes
#define SECTION_HEAD_LEN (CKPT_NAME_LEN + 8)
// u32 crc32 | end magic
#define TRAILER_LEN (4 + MAGIC_LEN)
#define SECTION_ALIGN 64 // alignment of section data handed out by the reader

typedef struct {
    char name[CKPT_NAME_LEN]; // NUL-terminated section name
    uint64_t file_offset;     // offset of the data in the file
    uint64_t offset;          // offset of the (aligned) data in ckpt_t.buf
    uint64_t nbytes;          // size of the data
} ckpt_entry_t;

struct ckpt {
    unsigned char *buf;              // the whole file, then sections realigned in place
    size_t size;                     // file size in bytes
    uint32_t kind;                   // CKPT_KIND_*
    int32_t config[CKPT_CONFIG_LEN]; // model configuration, opaque here
    uint32_t nsections;              // entries in sections
    ckpt_entry_t *sections;          // (nsections) the section table
};

static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

// zlib's crc32 takes a 32-bit length; feed big sections in pieces.
static uLong crc_update(uLong crc, const void *data, uint64_t n) {
    const unsigned char *p = data;
    while (n > 0) {
        uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;
        crc = crc32(crc, p, chunk);
        p += chunk;
        n -= chunk;
    }
    return crc;
}

// fwrite that also folds the bytes into the running checksum.
static int put(FILE *f, uLong *crc, const void *data, uint64_t n) {
    if (n == 0)
        return 0;
    *crc = crc_update(*crc, data, n);
    return fwrite(data, 1, n, f) == n ? 0 : -1;
}

// Best effort: make the rename itself durable. Failing here loses nothing already written.
static void sync_parent_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir)
        return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(dir);
}

// This thread's capture of the next ckpt_write (ckpt_capture_begin/_end).
typedef struct {
    int on;     // the next ckpt_write goes to memory
    int done;   // it has been written
    char *buf;  // its bytes (open_memstream's buffer)
    size_t len; // their length
} ckpt_capture_t;
static __thread ckpt_capture_t capture;

// Header, sections and trailer (the CRC over all before it) to f. 0, or -1 on a short write.
static int write_stream(FILE *f, uint32_t kind, const int32_t config[CKPT_CONFIG_LEN],
                        const ckpt_section_t *sections, int nsections) {
    uLong crc = crc32(0L, Z_NULL, 0);
    uint32_t version = CKPT_VERSION, nsec = (uint32_t)nsections;
    if (put(f, &crc, CKPT_MAGIC, MAGIC_LEN) || put(f, &crc, &version, 4) ||
        put(f, &crc, &kind, 4) || put(f, &crc, config, 4 * CKPT_CONFIG_LEN) ||
        put(f, &crc, &nsec, 4))
        return -1;
    for (int i = 0; i < nsections; i++) {
        char name[CKPT_NAME_LEN] = {0};
        memcpy(name, sections[i].name, strlen(sections[i].name));
        uint64_t nbytes = sections[i].nbytes;
        if (put(f, &crc, name, CKPT_NAME_LEN) || put(f, &crc, &nbytes, 8) ||
            put(f, &crc, sections[i].data, nbytes))
            return -1;
    }
    uint32_t crc32v = (uint32_t)crc;
    if (fwrite(&crc32v, 1, 4, f) != 4 || fwrite(CKPT_END_MAGIC, 1, MAGIC_LEN, f) != MAGIC_LEN)
        return -1;
    return 0;
}

int ckpt_write(const char *path, uint32_t kind, const int32_t config[CKPT_CONFIG_LEN],
               const ckpt_section_t *sections, int nsections, char *err, size_t errlen) {
    if (!path || !config || nsections < 0 || (nsections > 0 && !sections)) {
        set_err(err, errlen, "ckpt_write: bad arguments");
        return -1;
    }
    for (int i = 0; i < nsections; i++) {
        size_t len = sections[i].name ? strlen(sections[i].name) : 0;
        if (len == 0 || len >= CKPT_NAME_LEN || (!sections[i].data && sections[i].nbytes > 0)) {
            set_err(err, errlen, "ckpt_write %s: section %d has a bad name or no data", path, i);
            return -1;
        }
        for (int j = 0; j < i; j++) {
            if (strcmp(sections[i].name, sections[j].name) == 0) {
                set_err(err, errlen, "ckpt_write %s: duplicate section '%s'", path,
                        sections[i].name);
                return -1;
            }
        }
    }

    if (capture.on) {
        capture.on = 0;
        free(capture.buf);
        capture.buf = NULL;
        capture.len = 0;
        FILE *m = open_memstream(&capture.buf, &capture.len);
        if (!m) {
            set_err(err, errlen, "ckpt_write %s: cannot open a memory stream", path);
            return -1;
        }
        int bad = write_stream(m, kind, config, sections, nsections) != 0;
        bad |= fclose(m) != 0;
        if (bad) {
            set_err(err, errlen, "ckpt_write %s: out of memory", path);
            free(capture.buf);
            capture.buf = NULL;
            return -1;
        }
        capture.done = 1;
        return 0;
    }

    size_t tmplen = strlen(path) + 32;
    char *tmp = malloc(tmplen);
    if (!tmp) {
        set_err(err, errlen, "ckpt_write %s: out of memory", path);
        return -1;
    }
    snprintf(tmp, tmplen, "%s.tmp.%ld", path, (long)getpid());

    int rc = -1;
    errno = 0;
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        set_err(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    if (write_stream(f, kind, config, sections, nsections) != 0)
        goto write_failed;
    if (fflush(f) != 0)
        goto write_failed;
    if (fsync(fileno(f)) != 0) {
        set_err(err, errlen, "cannot sync %s: %s", tmp, strerror(errno));
        goto cleanup;
    }
    int close_rc = fclose(f);
    f = NULL;
    if (close_rc != 0) {
        set_err(err, errlen, "cannot close %s: %s", tmp, strerror(errno));
        goto cleanup;
    }
    if (rename(tmp, path) != 0) {
        set_err(err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        goto cleanup;
    }
    sync_parent_dir(path);
    rc = 0;
    goto cleanup;

write_failed:
    set_err(err, errlen, "cannot write %s: %s", tmp, errno ? strerror(errno) : "short write");
cleanup:
    if (f)
        fclose(f);
    if (rc != 0)
        unlink(tmp);
    free(tmp);
    return rc;
}

void ckpt_capture_begin(void) {
    free(capture.buf);
    capture = (ckpt_capture_t){.on = 1};
}

void *ckpt_capture_end(size_t *len, char *err, size_t errlen) {
    void *buf = capture.done ? capture.buf : NULL;
    if (buf)
        *len = capture.len;
    else {
        free(capture.buf);
        set_err(err, errlen, "no checkpoint was written while capturing");
    }
    capture = (ckpt_capture_t){0};
    return buf;
}

static uint32_t get_u32(const unsigned char *p) {
    uint32_t x;
    memcpy(&x, p, 4);
    return x;
}

static uint64_t get_u64(const unsigned char *p) {
    uint64_t x;
    memcpy(&x, p, 8);
    return x;
}

// Walks the section table of buf[0..size) as the header describes it, without trusting it.
// Returns the file size the table implies, or UINT64_MAX if it runs past `size` before it can
// tell (then *claim holds the first offset known to be needed, which exceeds size).
static uint64_t implied_size(const unsigned char *buf, size_t size, uint64_t *claim) {
    uint32_t nsec = get_u32(buf + HEADER_LEN - 4);
    uint64_t off = HEADER_LEN;
    for (uint32_t i = 0; i < nsec; i++) {
        if (off + SECTION_HEAD_LEN > size) {
            *claim = off + SECTION_HEAD_LEN;
            return UINT64_MAX;
        }
        uint64_t nbytes = get_u64(buf + off + CKPT_NAME_LEN);
        off += SECTION_HEAD_LEN;
        if (nbytes > size - off) {
            *claim = nbytes > UINT64_MAX - off ? UINT64_MAX : off + nbytes;
            return UINT64_MAX;
        }
        off += nbytes;
    }
    return off + TRAILER_LEN;
}

// Moves every section's data to a SECTION_ALIGN-aligned address inside c->buf, so callers may
// cast section pointers to float, int64 or struct pointers. Each section moves right by less
// than SECTION_ALIGN plus the section headers it no longer needs, so moving from the last
// section to the first never overwrites data not yet moved. 0, or -1 if out of memory.
static int realign_sections(ckpt_t *c) {
    const size_t cap = c->size + (size_t)SECTION_ALIGN * (c->nsections + 1);
    unsigned char *nb = realloc(c->buf, cap);
    if (!nb)
        return -1;
    c->buf = nb;
    const uintptr_t base = (uintptr_t)nb;
    uint64_t cursor = HEADER_LEN;
    for (uint32_t i = 0; i < c->nsections; i++) {
        ckpt_entry_t *e = &c->sections[i];
        uint64_t at = cursor > e->file_offset ? cursor : e->file_offset;
        uintptr_t addr = (base + at + SECTION_ALIGN - 1) & ~(uintptr_t)(SECTION_ALIGN - 1);
        e->offset = addr - base;
        cursor = e->offset + e->nbytes;
    }
    assert(cursor <= cap);
    for (uint32_t i = c->nsections; i-- > 0;) {
        const ckpt_entry_t *e = &c->sections[i];
        if (e->nbytes)
            memmove(nb + e->offset, nb + e->file_offset, e->nbytes);
    }
    return 0;
}

// Verifies a checkpoint's bytes and builds the reader over them. Takes ownership of buf
// (malloc'd, size bytes), which it frees on failure. `what` names the source in messages.
static ckpt_t *ckpt_from_bytes(unsigned char *buf, size_t size, const char *what, char *err,
                               size_t errlen) {
    ckpt_t *c = NULL;
    if (size == 0) {
        set_err(err, errlen, "%s is empty (0 bytes): not an rlx checkpoint", what);
        goto fail;
    }
    if (size < MAGIC_LEN || memcmp(buf, CKPT_MAGIC, MAGIC_LEN) != 0) {
        set_err(err, errlen, "%s: not an rlx checkpoint (no \"%s\" magic at the start)", what,
                CKPT_MAGIC);
        goto fail;
    }
    if (size < MAGIC_LEN + 4) {
        set_err(err, errlen, "%s: truncated: %zu bytes, shorter than the header", what, size);
        goto fail;
    }
    uint32_t version = get_u32(buf + MAGIC_LEN);
    if (version != CKPT_VERSION) {
        set_err(err, errlen,
                "%s: checkpoint format version %u, this build reads version %d "
                "(written by a %s build of rlx)",
                what, version, CKPT_VERSION, version > CKPT_VERSION ? "newer" : "older");
        goto fail;
    }
    if (size < HEADER_LEN + TRAILER_LEN) {
        set_err(err, errlen, "%s: truncated: file has %zu bytes, a checkpoint has at least %d",
                what, size, HEADER_LEN + TRAILER_LEN);
        goto fail;
    }
    if (memcmp(buf + size - MAGIC_LEN, CKPT_END_MAGIC, MAGIC_LEN) != 0) {
        // No end marker: say how much is missing if the section table can tell.
        uint64_t claim = 0, want = implied_size(buf, size, &claim);
        if (want == UINT64_MAX)
            set_err(err, errlen,
                    "%s: truncated: expected at least %llu bytes, file has %zu (or corrupted)",
                    what, (unsigned long long)claim, size);
        else if (want > size)
            set_err(err, errlen, "%s: truncated: expected %llu bytes, file has %zu", what,
                    (unsigned long long)want, size);
        else
            set_err(err, errlen, "%s: no end marker: file is corrupted or truncated", what);
        goto fail;
    }
    uint32_t stored_crc = get_u32(buf + size - TRAILER_LEN);
    uint32_t crc = (uint32_t)crc_update(crc32(0L, Z_NULL, 0), buf, size - TRAILER_LEN);
    if (crc != stored_crc) {
        set_err(err, errlen, "%s: checksum mismatch: file is corrupted", what);
        goto fail;
    }

    // The bytes are what the writer wrote; still check the table, since a buggy or hostile
    // writer can produce a valid checksum over a nonsensical table.
    uint32_t nsec = get_u32(buf + HEADER_LEN - 4);
    if ((uint64_t)nsec > (size - HEADER_LEN - TRAILER_LEN) / SECTION_HEAD_LEN) {
        set_err(err, errlen, "%s: header claims %u sections, too many for %zu bytes", what, nsec,
                size);
        goto fail;
    }
    c = calloc(1, sizeof *c);
    if (!c || !(c->sections = calloc(nsec ? nsec : 1, sizeof *c->sections))) {
        set_err(err, errlen, "%s: out of memory", what);
        goto fail;
    }
    c->buf = buf;
    buf = NULL; // c owns it now
    c->size = size;
    c->kind = get_u32(c->buf + MAGIC_LEN + 4);
    memcpy(c->config, c->buf + MAGIC_LEN + 8, 4 * CKPT_CONFIG_LEN);
    c->nsections = nsec;
    const uint64_t end = size - TRAILER_LEN;
    uint64_t off = HEADER_LEN;
    for (uint32_t i = 0; i < nsec; i++) {
        ckpt_entry_t *e = &c->sections[i];
        if (end - off < SECTION_HEAD_LEN) {
            set_err(err, errlen, "%s: section %u header lies past the end of the data", what, i);
            goto fail;
        }
        memcpy(e->name, c->buf + off, CKPT_NAME_LEN);
        if (memchr(e->name, '\0', CKPT_NAME_LEN) == NULL || e->name[0] == '\0') {
            set_err(err, errlen, "%s: section %u has an empty or unterminated name", what, i);
            goto fail;
        }
        e->nbytes = get_u64(c->buf + off + CKPT_NAME_LEN);
        off += SECTION_HEAD_LEN;
        if (e->nbytes > end - off) {
            set_err(err, errlen,
                    "%s: section '%s' claims %llu bytes but only %llu remain: corrupted", what,
                    e->name, (unsigned long long)e->nbytes, (unsigned long long)(end - off));
            goto fail;
        }
        e->file_offset = off;
        off += e->nbytes;
        for (uint32_t j = 0; j < i; j++) {
            if (strcmp(c->sections[j].name, e->name) == 0) {
                set_err(err, errlen, "%s: duplicate section '%s'", what, e->name);
                goto fail;
            }
        }
    }
    if (off != end) {
        set_err(err, errlen, "%s: %llu unexplained bytes after the last section: corrupted", what,
                (unsigned long long)(end - off));
        goto fail;
    }
    if (realign_sections(c) != 0) {
        set_err(err, errlen, "%s: out of memory", what);
        goto fail;
    }
    return c;

fail:
    ckpt_destroy(&c);
    free(buf);
    return NULL;
}

// A whole regular file's bytes (malloc'd, *size set); NULL with err.
static unsigned char *read_file(const char *path, size_t *size, char *err, size_t errlen) {
    unsigned char *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        set_err(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        set_err(err, errlen, "cannot stat %s: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        set_err(err, errlen, "%s is not a regular file", path);
        goto fail;
    }
    *size = (size_t)st.st_size;
    buf = malloc(*size ? *size : 1);
    if (!buf) {
        set_err(err, errlen, "%s: out of memory reading %zu bytes", path, *size);
        goto fail;
    }
    size_t got = fread(buf, 1, *size, f);
    if (got != *size) {
        set_err(err, errlen, "%s: read %zu of %zu bytes (%s)", path, got, *size,
                ferror(f) ? strerror(errno) : "file shrank while reading");
        goto fail;
    }
    fclose(f);
    return buf;

fail:
    fclose(f);
    free(buf);
    return NULL;
}

ckpt_t *ckpt_read(const char *path, char *err, size_t errlen) {
    size_t size = 0;
    unsigned char *buf = read_file(path, &size, err, errlen);
    return buf ? ckpt_from_bytes(buf, size, path, err, errlen) : NULL;
}

void *ckpt_take_file(const char *path, size_t *len, char *err, size_t errlen) {
    size_t size = 0;
    unsigned char *buf = read_file(path, &size, err, errlen);
    unlink(path);
    if (buf)
        *len = size;
    return buf;
}

ckpt_t *ckpt_parse(const void *bytes, size_t len, char *err, size_t errlen) {
    if (!bytes && len > 0) {
        set_err(err, errlen, "checkpoint bytes: NULL buffer of %zu bytes", len);
        return NULL;
    }
    unsigned char *buf = malloc(len ? len : 1);
    if (!buf) {
        set_err(err, errlen, "checkpoint bytes: out of memory copying %zu bytes", len);
        return NULL;
    }
    if (len)
        memcpy(buf, bytes, len);
    return ckpt_from_bytes(buf, len, "checkpoint bytes", err, errlen);
}

uint32_t ckpt_kind(const ckpt_t *c) {
    return c->kind;
}

const int32_t *ckpt_config(const ckpt_t *c) {
    return c->config;
}

const void *ckpt_section(const ckpt_t *c, const char *name, uint64_t *nbytes) {
    for (uint32_t i = 0; i < c->nsections; i++) {
        if (strncmp(c->sections[i].name, name, CKPT_NAME_LEN) == 0) {
            if (nbytes)
                *nbytes = c->sections[i].nbytes;
            return c->buf + c->sections[i].offset;
        }
    }
    if (nbytes)
        *nbytes = 0;
    return NULL;
}

void ckpt_destroy(ckpt_t **self_p) {
    if (!self_p || !*self_p)
        return;
    ckpt_t *c = *self_p;
    free(c->buf);
    free(c->sections);
    free(c);
    *self_p = NULL;
}
