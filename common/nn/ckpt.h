// ckpt.h: the rlx checkpoint file format, for every model kind.
//
// Layout (little-endian):
//   header:  magic "RLXCKPT1" (8 bytes) | u32 version | u32 kind | i32 config[16] |
//            u32 nsections
//   section: char name[16] (NUL-padded) | u64 nbytes | nbytes of data
//   trailer: u32 crc32 (zlib) of everything before it | magic "RLXEND\0\0" (8 bytes)
// Written to "path.tmp.PID" then renamed over path, so a reader never sees half a file.
// Reading verifies size, magics, version and checksum before anything is handed out:
// a truncated or corrupted file is refused whole with a message saying what is wrong.
#ifndef RLX_CKPT_H
#define RLX_CKPT_H

#include <stddef.h>
#include <stdint.h>

#define CKPT_VERSION 1
#define CKPT_CONFIG_LEN 16
#define CKPT_NAME_LEN 16

enum { CKPT_KIND_GPT = 1, CKPT_KIND_MLP = 2, CKPT_KIND_GFN = 3 }; // GFN: gfn_ckpt.h

typedef struct {
    const char *name; // at most CKPT_NAME_LEN-1 characters
    const void *data; // section bytes
    uint64_t nbytes;  // size of data
} ckpt_section_t;

// Returns 0 on success, -1 with a message in err on failure (the old file, if any, is kept).
int ckpt_write(const char *path, uint32_t kind, const int32_t config[CKPT_CONFIG_LEN],
               const ckpt_section_t *sections, int nsections, char *err, size_t errlen);

typedef struct ckpt ckpt_t;

// Reads and verifies a whole checkpoint; NULL with a message in err if it is unreadable,
// truncated, corrupted, of another version or not a checkpoint.
ckpt_t *ckpt_read(const char *path, char *err, size_t errlen);
// Same verification as ckpt_read, on a checkpoint file's bytes held in memory (e.g. weights
// received over the wire). The bytes are copied; the caller keeps buf. NULL with a message in
// err if they are not a valid checkpoint.
ckpt_t *ckpt_parse(const void *buf, size_t len, char *err, size_t errlen);
// The bytes of the checkpoint file just written at path, which is then removed. The caller
// frees the buffer. NULL with a message in err (the file is removed either way).
void *ckpt_take_file(const char *path, size_t *len, char *err, size_t errlen);
// How a model becomes a weights blob for the wire without a file: after ckpt_capture_begin,
// this thread's next ckpt_write (e.g. inside gpt_save or diff_save) writes its bytes, exactly
// those of the file, to memory instead (its path is then only a name in messages), and
// ckpt_capture_end hands them over (malloc'ed, the caller frees; NULL with err when nothing
// was written, e.g. the save failed before ckpt_write).
void ckpt_capture_begin(void);
void *ckpt_capture_end(size_t *len, char *err, size_t errlen);
uint32_t ckpt_kind(const ckpt_t *c);
const int32_t *ckpt_config(const ckpt_t *c); // CKPT_CONFIG_LEN entries
// The named section's bytes (valid until ckpt_destroy; 64-byte aligned, so a section may be
// read as any struct), or NULL if absent.
const void *ckpt_section(const ckpt_t *c, const char *name, uint64_t *nbytes);
void ckpt_destroy(ckpt_t **self_p);

#endif
