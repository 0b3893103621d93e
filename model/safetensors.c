/* safetensors reader and writer.
 *
 * The reader maps a private, sealed in-memory copy of the file (shared within
 * the process; see st_open) read-only and checks every header entry against
 * the file before any tensor is used: known dtype, sane shape, offsets inside
 * the data section, and byte size == numel * dtype size. A lying header is
 * reported as an error naming the file and the tensor, never trusted. */
#include "safetensors.h"
#include "unimed_train.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Headers larger than this are refused: real ones are well under 1 MiB. */
#define ST_MAX_HEADER (100u << 20)

static const struct {
  const char *name;
  enum st_dtype dtype;
  size_t size;
} dtype_table[] = {
    {"F32", ST_F32, 4},   {"F16", ST_F16, 2},   {"BF16", ST_BF16, 2},
    {"F64", ST_F64, 8},   {"I64", ST_I64, 8},   {"I32", ST_I32, 4},
    {"I16", ST_I16, 2},   {"I8", ST_I8, 1},     {"U8", ST_U8, 1},
    {"U16", ST_U16, 2},   {"U32", ST_U32, 4},   {"U64", ST_U64, 8},
    {"BOOL", ST_BOOL, 1}, {"F8_E4M3", ST_F8_E4M3, 1},
    {"F8_E5M2", ST_F8_E5M2, 1},
};

static void set_err(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || errlen == 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

const char *st_dtype_name(enum st_dtype d) {
  for (size_t i = 0; i < sizeof dtype_table / sizeof dtype_table[0]; i++)
    if (dtype_table[i].dtype == d) return dtype_table[i].name;
  return "?";
}

size_t st_dtype_size(enum st_dtype d) {
  for (size_t i = 0; i < sizeof dtype_table / sizeof dtype_table[0]; i++)
    if (dtype_table[i].dtype == d) return dtype_table[i].size;
  return 0;
}

static int dtype_from_name(const char *s, enum st_dtype *out) {
  for (size_t i = 0; i < sizeof dtype_table / sizeof dtype_table[0]; i++)
    if (strcmp(dtype_table[i].name, s) == 0) {
      *out = dtype_table[i].dtype;
      return 0;
    }
  return -1;
}

static void free_tensors(st_file *f) {
  for (int i = 0; i < f->count; i++) free(f->tensors[i].name);
  free(f->tensors);
  f->tensors = NULL;
  f->count = 0;
}

/* Parses and checks one header entry. */
static int parse_entry(const cJSON *item, const char *fname, const unsigned char *data,
                       size_t data_len, st_tensor *t, char *err, size_t errlen) {
  const char *tname = item->string;
  const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(item, "dtype");
  const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
  const cJSON *offs = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
  if (!cJSON_IsObject(item) || !cJSON_IsString(dtype) || !cJSON_IsArray(shape) ||
      !cJSON_IsArray(offs)) {
    set_err(err, errlen, "%s: tensor '%s': header entry needs dtype, shape and data_offsets",
            fname, tname);
    return -1;
  }
  if (dtype_from_name(dtype->valuestring, &t->dtype) != 0) {
    set_err(err, errlen, "%s: tensor '%s': unknown dtype '%s'", fname, tname,
            dtype->valuestring);
    return -1;
  }
  int ndim = cJSON_GetArraySize(shape);
  if (ndim > ST_MAX_DIMS) {
    set_err(err, errlen, "%s: tensor '%s': %d dimensions (at most %d supported)", fname,
            tname, ndim, ST_MAX_DIMS);
    return -1;
  }
  t->ndim = ndim;
  int64_t numel = 1;
  for (int i = 0; i < ndim; i++) {
    const cJSON *d = cJSON_GetArrayItem(shape, i);
    if (!cJSON_IsNumber(d) || d->valuedouble < 0 || d->valuedouble > 1e15 ||
        d->valuedouble != (double)(int64_t)d->valuedouble) {
      set_err(err, errlen, "%s: tensor '%s': dimension %d is not a non-negative integer",
              fname, tname, i);
      return -1;
    }
    t->shape[i] = (int64_t)d->valuedouble;
    if (t->shape[i] != 0 && numel > INT64_MAX / 16 / t->shape[i]) {
      set_err(err, errlen, "%s: tensor '%s': shape is too large", fname, tname);
      return -1;
    }
    numel *= t->shape[i];
  }
  t->numel = numel;
  if (cJSON_GetArraySize(offs) != 2) {
    set_err(err, errlen, "%s: tensor '%s': data_offsets must be [begin, end]", fname, tname);
    return -1;
  }
  double b = cJSON_GetArrayItem(offs, 0)->valuedouble;
  double e = cJSON_GetArrayItem(offs, 1)->valuedouble;
  if (!cJSON_IsNumber(cJSON_GetArrayItem(offs, 0)) ||
      !cJSON_IsNumber(cJSON_GetArrayItem(offs, 1)) || b < 0 || e < b ||
      e > (double)data_len || b != (double)(size_t)b || e != (double)(size_t)e) {
    set_err(err, errlen,
            "%s: tensor '%s': data_offsets [%.0f, %.0f] lie outside the %zu-byte data section",
            fname, tname, b, e, data_len);
    return -1;
  }
  size_t nbytes = (size_t)e - (size_t)b;
  size_t want = (size_t)numel * st_dtype_size(t->dtype);
  if (nbytes != want) {
    set_err(err, errlen,
            "%s: tensor '%s': data_offsets span %zu bytes but shape and dtype %s need %zu",
            fname, tname, nbytes, dtype->valuestring, want);
    return -1;
  }
  t->nbytes = nbytes;
  t->data = data + (size_t)b;
  t->name = strdup(tname);
  if (!t->name) {
    set_err(err, errlen, "%s: out of memory", fname);
    return -1;
  }
  return 0;
}

int st_parse(st_file *f, const void *buf, size_t len, const char *name, char *err,
             size_t errlen) {
  const unsigned char *p = buf;
  /* The whole record starts empty: st_close() on a parsed buffer must not
   * see a mapping or an in-memory copy that st_open() did not make. */
  memset(f, 0, sizeof *f);
  if (len < 8) {
    set_err(err, errlen, "%s: truncated safetensors file (%zu bytes, header length needs 8)",
            name, len);
    return -1;
  }
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | p[i];
  if (hlen > ST_MAX_HEADER || hlen > len - 8) {
    set_err(err, errlen,
            "%s: header length %llu exceeds the file (%zu bytes) or the %u-byte limit: "
            "truncated or not a safetensors file",
            name, (unsigned long long)hlen, len, ST_MAX_HEADER);
    return -1;
  }
  cJSON *root = cJSON_ParseWithLength((const char *)p + 8, (size_t)hlen);
  if (!cJSON_IsObject(root)) {
    set_err(err, errlen, "%s: header is not a JSON object", name);
    cJSON_Delete(root);
    return -1;
  }
  const unsigned char *data = p + 8 + hlen;
  size_t data_len = len - 8 - (size_t)hlen;
  int n = 0;
  for (cJSON *it = root->child; it; it = it->next) n++;
  f->tensors = calloc((size_t)n + 1, sizeof *f->tensors);
  if (!f->tensors) {
    set_err(err, errlen, "%s: out of memory", name);
    cJSON_Delete(root);
    return -1;
  }
  for (cJSON *it = root->child; it; it = it->next) {
    if (!it->string) continue;
    if (strcmp(it->string, "__metadata__") == 0) continue;
    for (int i = 0; i < f->count; i++)
      if (strcmp(f->tensors[i].name, it->string) == 0) {
        set_err(err, errlen, "%s: tensor '%s' appears twice in the header", name, it->string);
        cJSON_Delete(root);
        free_tensors(f);
        return -1;
      }
    if (parse_entry(it, name, data, data_len, &f->tensors[f->count], err, errlen) != 0) {
      cJSON_Delete(root);
      free_tensors(f);
      return -1;
    }
    f->count++;
  }
  cJSON_Delete(root);
  return 0;
}

/* ---- private copies of weight files ----
 * A file is not mapped itself but copied once into a sealed memfd that is
 * mapped instead: a file rewritten or truncated in place under a running
 * process (an upgrade done by copying over the old model) can then neither
 * change its results behind the hash it reported nor kill it with SIGBUS.
 * One copy per file and process, shared by every model of the process that
 * opens the same file (same device, inode, size and modification time); each
 * open maps it separately, so madvise(MADV_DONTNEED) on one mapping only
 * drops that mapping's pages (the memfd keeps the bytes). */
typedef struct st_copy {
  dev_t dev;
  ino_t ino;
  off_t size;
  struct timespec mtime;
  int fd;
  int refs;
  struct st_copy *next;
} st_copy;

static pthread_mutex_t copies_mu = PTHREAD_MUTEX_INITIALIZER;
static st_copy *copies;

static int same_file(const st_copy *c, const struct stat *st) {
  return c->dev == st->st_dev && c->ino == st->st_ino && c->size == st->st_size &&
         c->mtime.tv_sec == st->st_mtim.tv_sec && c->mtime.tv_nsec == st->st_mtim.tv_nsec;
}

/* Copies fd (size bytes) into a new sealed memfd; -1 with a message. */
static int copy_to_memfd(int fd, size_t size, const char *path, char *err, size_t errlen) {
  int mfd = memfd_create("unimed-weights", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (mfd < 0) {
    set_err(err, errlen, "%s: cannot create an in-memory copy: %s", path, strerror(errno));
    return -1;
  }
  char *buf = malloc(1u << 20);
  size_t done = 0;
  while (buf && done < size) {
    ssize_t r = pread(fd, buf, size - done < (1u << 20) ? size - done : (1u << 20), (off_t)done);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    ssize_t w = 0;
    while (w < r) {
      ssize_t k = write(mfd, buf + w, (size_t)(r - w));
      if (k < 0 && errno == EINTR) continue;
      if (k <= 0) goto fail;
      w += k;
    }
    done += (size_t)r;
  }
  if (done != size) goto fail;
  free(buf);
  if (fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) != 0) {
    set_err(err, errlen, "%s: cannot seal the in-memory copy: %s", path, strerror(errno));
    close(mfd);
    return -1;
  }
  return mfd;
fail:
  set_err(err, errlen, "%s: cannot copy the file into memory (%zu of %zu bytes): %s", path, done,
          size, errno ? strerror(errno) : "the file shrank while being read");
  free(buf);
  close(mfd);
  return -1;
}

/* The shared copy of the open file fd (a reference is taken). */
static st_copy *copy_acquire(int fd, const struct stat *st, const char *path, char *err,
                             size_t errlen) {
  pthread_mutex_lock(&copies_mu);
  st_copy *c = copies;
  while (c && !same_file(c, st)) c = c->next;
  if (c) {
    c->refs++;
    pthread_mutex_unlock(&copies_mu);
    return c;
  }
  int mfd = copy_to_memfd(fd, (size_t)st->st_size, path, err, errlen);
  struct stat after;
  if (mfd >= 0 && (fstat(fd, &after) != 0 || after.st_size != st->st_size ||
                   after.st_mtim.tv_sec != st->st_mtim.tv_sec ||
                   after.st_mtim.tv_nsec != st->st_mtim.tv_nsec)) {
    set_err(err, errlen, "%s: the file changed while it was being read", path);
    close(mfd);
    mfd = -1;
  }
  c = mfd >= 0 ? calloc(1, sizeof *c) : NULL;
  if (c) {
    c->dev = st->st_dev;
    c->ino = st->st_ino;
    c->size = st->st_size;
    c->mtime = st->st_mtim;
    c->fd = mfd;
    c->refs = 1;
    c->next = copies;
    copies = c;
  } else if (mfd >= 0) {
    set_err(err, errlen, "%s: out of memory", path);
    close(mfd);
  }
  pthread_mutex_unlock(&copies_mu);
  return c;
}

static void copy_release(st_copy *c) {
  if (!c) return;
  pthread_mutex_lock(&copies_mu);
  if (--c->refs == 0) {
    st_copy **pp = &copies;
    while (*pp != c) pp = &(*pp)->next;
    *pp = c->next;
    close(c->fd);
    free(c);
  }
  pthread_mutex_unlock(&copies_mu);
}

int st_open(st_file *f, const char *path, char *err, size_t errlen) {
  memset(f, 0, sizeof *f);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    set_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    return -1;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    set_err(err, errlen, "%s: not a regular file", path);
    close(fd);
    return -1;
  }
  size_t size = (size_t)st.st_size;
  if (size == 0) {
    set_err(err, errlen, "%s: empty file, not a safetensors file", path);
    close(fd);
    return -1;
  }
  st_copy *copy = copy_acquire(fd, &st, path, err, errlen);
  close(fd);
  if (!copy) return -1;
  void *map = mmap(NULL, size, PROT_READ, MAP_SHARED, copy->fd, 0);
  if (map == MAP_FAILED) {
    set_err(err, errlen, "%s: cannot map: %s", path, strerror(errno));
    copy_release(copy);
    return -1;
  }
  if (st_parse(f, map, size, path, err, errlen) != 0) {
    munmap(map, size);
    copy_release(copy);
    return -1;
  }
  f->map = map;
  f->map_size = size;
  f->copy = copy;
  f->path = strdup(path);
  return 0;
}

void st_close(st_file *f) {
  if (!f) return;
  free_tensors(f);
  if (f->map) munmap(f->map, f->map_size);
  copy_release(f->copy);
  free(f->path);
  memset(f, 0, sizeof *f);
}

const st_tensor *st_find(const st_file *f, const char *name) {
  for (int i = 0; i < f->count; i++)
    if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
  return NULL;
}

float st_bf16_to_f32(uint16_t b) {
  uint32_t u = (uint32_t)b << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

float st_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t man = h & 0x3ff;
  uint32_t u;
  if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else { /* subnormal: renormalise */
      exp = 127 - 15 + 1;
      while (!(man & 0x400)) {
        man <<= 1;
        exp--;
      }
      man &= 0x3ff;
      u = sign | (exp << 23) | (man << 13);
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (man << 13);
  } else {
    u = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  float f;
  memcpy(&f, &u, 4);
  return f;
}

uint16_t st_f32_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* NaN */
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

uint16_t st_f32_to_f16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
  uint32_t absu = u & 0x7fffffffu;
  if (absu > 0x7f800000u) return sign | 0x7e00; /* NaN */
  if (absu >= 0x477ff000u) return sign | 0x7c00; /* overflow -> inf */
  if (absu < 0x38800000u) { /* subnormal or zero in f16 */
    if (absu < 0x33000000u) return sign;
    uint32_t e = absu >> 23;
    uint32_t m = (absu & 0x7fffff) | 0x800000;
    uint32_t shift = 126 - e; /* value = m * 2^(e-150) = half * 2^-24 */
    uint32_t half = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1);
    uint32_t mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1))) half++;
    return sign | (uint16_t)half;
  }
  uint32_t r = absu + 0xfffu + ((absu >> 13) & 1u) - 0x38000000u;
  return sign | (uint16_t)(r >> 13);
}

int st_to_f32(const st_tensor *t, float *dst) {
  const unsigned char *s = t->data;
  switch (t->dtype) {
  case ST_F32:
    memcpy(dst, s, (size_t)t->numel * 4);
    return 0;
  case ST_F16:
  case ST_BF16:
    for (int64_t i = 0; i < t->numel; i++) {
      uint16_t h = (uint16_t)(s[2 * i] | (s[2 * i + 1] << 8));
      dst[i] = t->dtype == ST_F16 ? st_f16_to_f32(h) : st_bf16_to_f32(h);
    }
    return 0;
  case ST_F64:
    for (int64_t i = 0; i < t->numel; i++) {
      double d;
      memcpy(&d, s + 8 * i, 8);
      dst[i] = (float)d;
    }
    return 0;
  default:
    return -1;
  }
}

int st_write(const char *path, const st_write_tensor *tensors, int count, enum st_dtype dtype,
             const char *metadata_json, char *err, size_t errlen) {
  if (dtype != ST_F32 && dtype != ST_F16 && dtype != ST_BF16) {
    set_err(err, errlen, "%s: can only write F32, F16 or BF16", path);
    return -1;
  }
  size_t esize = st_dtype_size(dtype);
  cJSON *root = cJSON_CreateObject();
  cJSON *meta = metadata_json ? cJSON_Parse(metadata_json) : NULL;
  if (!meta) meta = cJSON_CreateObject();
  if (!cJSON_GetObjectItem(meta, "format")) cJSON_AddStringToObject(meta, "format", "pt");
  cJSON_AddItemToObject(root, "__metadata__", meta);
  size_t offset = 0;
  for (int i = 0; i < count; i++) {
    const st_write_tensor *t = &tensors[i];
    int64_t numel = 1;
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "dtype", st_dtype_name(dtype));
    cJSON *shape = cJSON_AddArrayToObject(e, "shape");
    for (int d = 0; d < t->ndim; d++) {
      cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->shape[d]));
      numel *= t->shape[d];
    }
    cJSON *offs = cJSON_AddArrayToObject(e, "data_offsets");
    cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)offset));
    offset += (size_t)numel * esize;
    cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)offset));
    cJSON_AddItemToObject(root, t->name, e);
  }
  char *json = cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  if (!json) {
    set_err(err, errlen, "%s: out of memory", path);
    return -1;
  }
  size_t jlen = strlen(json);
  size_t padded = (jlen + 8 + 7) / 8 * 8 - 8; /* data starts 8-aligned */
  FILE *fp = fopen(path, "wb");
  if (!fp) {
    set_err(err, errlen, "%s: cannot create: %s", path, strerror(errno));
    free(json);
    return -1;
  }
  unsigned char lenbuf[8];
  for (int i = 0; i < 8; i++) lenbuf[i] = (unsigned char)((uint64_t)padded >> (8 * i));
  int ok = fwrite(lenbuf, 1, 8, fp) == 8 && fwrite(json, 1, jlen, fp) == jlen;
  for (size_t i = jlen; ok && i < padded; i++) ok = fputc(' ', fp) != EOF;
  free(json);
  unsigned char chunk[8192];
  for (int i = 0; ok && i < count; i++) {
    const st_write_tensor *t = &tensors[i];
    int64_t numel = 1;
    for (int d = 0; d < t->ndim; d++) numel *= t->shape[d];
    if (dtype == ST_F32) {
      ok = fwrite(t->data, 4, (size_t)numel, fp) == (size_t)numel;
      continue;
    }
    size_t fill = 0;
    for (int64_t j = 0; ok && j < numel; j++) {
      uint16_t h = dtype == ST_F16 ? st_f32_to_f16(t->data[j]) : st_f32_to_bf16(t->data[j]);
      chunk[fill++] = (unsigned char)h;
      chunk[fill++] = (unsigned char)(h >> 8);
      if (fill == sizeof chunk || j + 1 == numel) {
        ok = fwrite(chunk, 1, fill, fp) == fill;
        fill = 0;
      }
    }
  }
  if (fclose(fp) != 0) ok = 0;
  if (!ok) {
    set_err(err, errlen, "%s: write failed: %s", path, strerror(errno));
    return -1;
  }
  return 0;
}

/* unimed_train.h's writer: float32 tensors, metadata naming the producer. */
int unimed_weights_write(const char *path, const unimed_named_tensor *tensors, int n,
                         const char *producer, char *err, size_t errlen) {
  if (n < 0 || (n > 0 && !tensors)) {
    set_err(err, errlen, "%s: no tensors to write", path);
    return -1;
  }
  st_write_tensor *wt = calloc((size_t)n + 1, sizeof *wt);
  cJSON *meta = cJSON_CreateObject();
  if (meta) {
    cJSON_AddStringToObject(meta, "format", "pt");
    cJSON_AddStringToObject(meta, "producer", producer ? producer : "");
  }
  char *meta_json = meta ? cJSON_PrintUnformatted(meta) : NULL;
  cJSON_Delete(meta);
  if (!wt || !meta_json) {
    free(wt);
    free(meta_json);
    set_err(err, errlen, "%s: out of memory", path);
    return -1;
  }
  for (int i = 0; i < n; i++) {
    if (tensors[i].ndim < 0 || tensors[i].ndim > 4) {
      set_err(err, errlen, "%s: tensor %s: %d dimensions (at most 4)", path,
              tensors[i].name, tensors[i].ndim);
      free(wt);
      free(meta_json);
      return -1;
    }
    wt[i].name = tensors[i].name;
    wt[i].ndim = tensors[i].ndim;
    for (int d = 0; d < tensors[i].ndim; d++) wt[i].shape[d] = tensors[i].shape[d];
    wt[i].data = tensors[i].data;
  }
  int rc = st_write(path, wt, n, ST_F32, meta_json, err, errlen);
  free(wt);
  free(meta_json);
  return rc;
}
