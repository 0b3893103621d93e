/* Internal to model/: safetensors files — reader (private in-memory copy, validated header)
 * and writer. Format: 8-byte little-endian header length N, N bytes of JSON
 * {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}},
 * then the tensor bytes; offsets are relative to the end of the header. */
#ifndef UNIMED_SAFETENSORS_H
#define UNIMED_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

enum st_dtype {
  ST_F32, ST_F16, ST_BF16, ST_F64, ST_I64, ST_I32, ST_I16, ST_I8, ST_U8,
  ST_U16, ST_U32, ST_U64, ST_BOOL, ST_F8_E4M3, ST_F8_E5M2
};

#define ST_MAX_DIMS 8

typedef struct {
  char *name;
  enum st_dtype dtype;
  int ndim;
  int64_t shape[ST_MAX_DIMS];
  int64_t numel;
  size_t nbytes;
  const void *data;   /* into the mapping (or the caller's buffer) */
} st_tensor;

typedef struct {
  char *path;         /* for messages */
  void *map;          /* mmap base, NULL when parsed from a caller buffer */
  size_t map_size;
  struct st_copy *copy; /* the in-memory copy mapped (st_open), shared in the process */
  st_tensor *tensors;
  int count;
} st_file;

/* Copies the file into memory once per process (a file changed in place
 * later cannot change or break what was loaded), maps that copy and
 * validates it. On failure returns -1 with a message naming
 * the file (and the tensor, when one is at fault) in err. */
int st_open(st_file *f, const char *path, char *err, size_t errlen);
/* Validates a whole file image held in memory (not copied: buf must outlive f).
 * `name` is used in messages. */
int st_parse(st_file *f, const void *buf, size_t len, const char *name,
             char *err, size_t errlen);
void st_close(st_file *f);

const st_tensor *st_find(const st_file *f, const char *name);
const char *st_dtype_name(enum st_dtype d);
size_t st_dtype_size(enum st_dtype d);

/* Converts a float tensor (F32/F16/BF16/F64) to F32 into dst (numel floats).
 * Returns -1 for other dtypes. */
int st_to_f32(const st_tensor *t, float *dst);

/* Writer. Each tensor is given as F32 data and stored as `dtype`
 * (ST_F32, ST_F16 or ST_BF16; round to nearest even). */
typedef struct {
  const char *name;
  int ndim;
  int64_t shape[ST_MAX_DIMS];
  const float *data;
} st_write_tensor;

int st_write(const char *path, const st_write_tensor *tensors, int count,
             enum st_dtype dtype, const char *metadata_json,
             char *err, size_t errlen);

float st_f16_to_f32(uint16_t h);
float st_bf16_to_f32(uint16_t b);
uint16_t st_f32_to_f16(float f);
uint16_t st_f32_to_bf16(float f);

#endif
