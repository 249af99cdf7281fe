// refio.h: reads the reference files tests/gen_ref.py writes with PyTorch.
//
// Format (little-endian): magic "RLXREF1\0" | u32 count | count records of
//   u32 name_len | name bytes | u32 dtype (0 float32, 1 int32) | u32 ndim | i64 dims[ndim] |
//   data (product(dims) elements).
#ifndef RLX_REFIO_H
#define RLX_REFIO_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *name;      // tensor name
    int dtype;       // 0 float32, 1 int32
    int ndim;        // number of dims
    int64_t dims[8]; // shape
    size_t count;    // number of elements
    void *data;      // elements
} ref_tensor_t;

typedef struct {
    int count;            // tensors in the file
    ref_tensor_t *tensors; // all of them
} ref_file_t;

// Loads a whole reference file; NULL with a message on stderr if missing or malformed.
ref_file_t *ref_load(const char *path);
// The named tensor, or NULL (with a message) if absent.
const ref_tensor_t *ref_get(const ref_file_t *f, const char *name);
// Shortcut: float data of the named tensor, checking its element count (dies if wrong).
const float *ref_floats(const ref_file_t *f, const char *name, size_t expect_count);
const int32_t *ref_ints(const ref_file_t *f, const char *name, size_t expect_count);
void ref_free(ref_file_t **self_p);

#endif
