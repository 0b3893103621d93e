/* Label sets: the on-disk cache of their class embeddings, so that a
 * process starting with a known model and set reads them back instead of
 * encoding every prompt again. One file per (model, label set):
 *
 * <cache_dir>/<model-hash>-<labelset-hash>.emb, all little-endian:
 *   0  char[8]  magic "UMLSEMB1"
 *   8  u32      format version (1)
 *  12  u32      n_labels
 *  16  u32      dim
 *  20  u32      flags: bit 0 = binary (negative block present)
 *  24  char[16] model hash
 *  40  char[16] label-set hash
 *  56  u64      FNV-1a 64 of the payload bytes
 *  64  f32      positive[n_labels][dim], then negative[n_labels][dim] if binary
 *
 * A file that does not match in every field, or holds a row that is not a
 * normalised ensemble, is ignored (and rewritten by the caller). Files are
 * written to a temporary name and renamed, so readers never see half a
 * file. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "labelset_internal.h"

#define CACHE_MAGIC "UMLSEMB1"
#define CACHE_VERSION 1u
#define CACHE_HEADER 64

static void put_u32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get_u32(const unsigned char *p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
  return v;
}
static uint64_t get_u64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
  return v;
}

/* Payload bytes (little-endian float32) of the embeddings; n floats. */
static unsigned char *encode_payload(const unimed_label_embeddings *e, size_t *nbytes) {
  size_t per = (size_t)e->n_labels * (size_t)e->dim;
  size_t n = per * (e->negative ? 2 : 1);
  unsigned char *buf = malloc(n * 4);
  if (!buf) return NULL;
  for (size_t i = 0; i < n; i++) {
    float f = i < per ? e->positive[i] : e->negative[i - per];
    uint32_t u;
    memcpy(&u, &f, 4);
    put_u32(buf + 4 * i, u);
  }
  *nbytes = n * 4;
  return buf;
}

/* mkdir -p; 0 when dir exists (or was made) as a directory. */
static int make_dirs(const char *dir) {
  char p[4096];
  size_t n = strlen(dir);
  if (n == 0 || n >= sizeof p) return -1;
  memcpy(p, dir, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if (p[i] == '/' || p[i] == '\0') {
      char saved = p[i];
      p[i] = '\0';
      if (mkdir(p, 0777) != 0 && errno != EEXIST) return -1;
      p[i] = saved;
    }
  }
  struct stat st;
  return stat(dir, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : -1;
}

int um_ls_cache_read(const char *file, const char *model_hash, const char *set_hash, int n_labels,
                     int dim, int binary, unimed_label_embeddings *out) {
  FILE *fp = fopen(file, "rb");
  if (!fp) return -1;
  size_t per = (size_t)n_labels * (size_t)dim, nf = per * (binary ? 2 : 1);
  size_t want = CACHE_HEADER + nf * 4;
  unsigned char *buf = malloc(want + 1);
  size_t got = buf ? fread(buf, 1, want + 1, fp) : 0;
  fclose(fp);
  int ok = buf && got == want && memcmp(buf, CACHE_MAGIC, 8) == 0 &&
           get_u32(buf + 8) == CACHE_VERSION && get_u32(buf + 12) == (uint32_t)n_labels &&
           get_u32(buf + 16) == (uint32_t)dim && get_u32(buf + 20) == (uint32_t)(binary ? 1 : 0) &&
           memcmp(buf + 24, model_hash, 16) == 0 && memcmp(buf + 40, set_hash, 16) == 0 &&
           get_u64(buf + 56) == um_ls_fnv1a(UM_LS_FNV_OFFSET, buf + CACHE_HEADER, nf * 4);
  float *pos = NULL, *neg = NULL;
  if (ok) {
    pos = malloc(per * sizeof(float));
    neg = binary ? malloc(per * sizeof(float)) : NULL;
    ok = pos && (!binary || neg);
  }
  for (size_t i = 0; ok && i < nf; i++) {
    uint32_t u = get_u32(buf + CACHE_HEADER + 4 * i);
    float f;
    memcpy(&f, &u, 4);
    if (!isfinite(f)) ok = 0;
    if (i < per)
      pos[i] = f;
    else
      neg[i - per] = f;
  }
  /* every row is a normalised ensemble */
  for (size_t r = 0; ok && r < (size_t)n_labels * (binary ? 2u : 1u); r++) {
    const float *row = r < (size_t)n_labels ? pos + r * dim : neg + (r - n_labels) * dim;
    double s = 0;
    for (int d = 0; d < dim; d++) s += (double)row[d] * row[d];
    if (fabs(s - 1.0) > 1e-3) ok = 0;
  }
  free(buf);
  if (!ok) {
    free(pos);
    free(neg);
    return -1;
  }
  out->n_labels = n_labels;
  out->dim = dim;
  out->positive = pos;
  out->negative = neg;
  return 0;
}

void um_ls_cache_write(const char *dir, const char *file, const char *model_hash,
                       const char *set_hash, const unimed_label_embeddings *e) {
  if (make_dirs(dir) != 0) return;
  size_t nbytes = 0;
  unsigned char *payload = encode_payload(e, &nbytes);
  if (!payload) return;
  unsigned char hdr[CACHE_HEADER];
  memset(hdr, 0, sizeof hdr);
  memcpy(hdr, CACHE_MAGIC, 8);
  put_u32(hdr + 8, CACHE_VERSION);
  put_u32(hdr + 12, (uint32_t)e->n_labels);
  put_u32(hdr + 16, (uint32_t)e->dim);
  put_u32(hdr + 20, e->negative ? 1u : 0u);
  memcpy(hdr + 24, model_hash, 16);
  memcpy(hdr + 40, set_hash, 16);
  put_u64(hdr + 56, um_ls_fnv1a(UM_LS_FNV_OFFSET, payload, nbytes));
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", file, (long)getpid());
  FILE *fp = fopen(tmp, "wb");
  int ok = fp != NULL;
  if (ok) {
    ok = fwrite(hdr, 1, sizeof hdr, fp) == sizeof hdr && fwrite(payload, 1, nbytes, fp) == nbytes;
    ok = fflush(fp) == 0 && ok;
    ok = fsync(fileno(fp)) == 0 && ok;
    ok = fclose(fp) == 0 && ok;
  }
  if (ok) ok = rename(tmp, file) == 0;
  if (!ok && fp) unlink(tmp);
  free(payload);
}
