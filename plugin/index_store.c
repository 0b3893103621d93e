/* The query side of the index (index_store.h): interned names, one int8
 * embedding matrix, packed findings rows, and their scans with a top-k heap.
 *
 * Memory per study of 2 series with 14 scores each (the shipped label
 * sets): 2 × 516 bytes of matrix + 2 × 8 bytes of row data + 28 × 8 bytes
 * of findings + a 16-byte run + 9 bytes of study number and flag: about
 * 1.3 KB, against 28 KiB when the findings were kept as JSON trees and the
 * embeddings as FP32 arrays (docs/PERFORMANCE.md, "Archive-scale index").
 *
 * Rows are appended; a study's new results append new rows and mark its old
 * ones dead, and the arrays are compacted when a quarter of their rows are
 * dead. The scans walk the arrays front to back: a study's rows are side by
 * side, so the best row of each study is found in one pass. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "index.h"
#include "index_store.h"

#define DEAD UINT32_MAX
#define MAX_NAMES 0xFFFEu

typedef struct {
  uint32_t study;
  uint16_t series, modality;
} emb_row_t;

/* A score: 8 bytes. */
typedef struct {
  float probability;
  uint16_t key;    /* (label set, label): keys[] */
  uint16_t series; /* the study's series index */
} frow_t;

/* A study's findings rows (those from first to the next run's first) and
 * the modality of each of its series (smod[series_modality + i]). */
typedef struct {
  uint32_t study;  /* DEAD: rows replaced or removed */
  uint32_t first;
  uint32_t series_modality;
  uint16_t n_series;
  uint16_t unused;
} frun_t;

#define MAX_KEYS 0xFFFEu
#define NO_MODALITY 0xFFu /* ids 0..254: modalities[] */

typedef struct {
  uint16_t label, label_set; /* name ids */
} label_key_t;

static struct {
  pthread_rwlock_t rw;
  int ready;
  int dim;
  /* names: an open-addressing hash of ids */
  char **names;
  uint32_t n_names, cap_names;
  uint16_t *name_hash; /* STORE_NO_NAME: empty slot */
  uint32_t hash_size;
  /* studies */
  study_t **by_num;
  uint8_t *listed;
  uint32_t n_studies, cap_studies;
  /* the embedding matrix (int8, a scale per row) and its rows */
  int8_t *matrix;
  float *row_scale;
  emb_row_t *erow;
  size_t n_erows, cap_erows, dead_erows;
  /* findings */
  frow_t *frow;
  size_t n_frows, cap_frows, dead_frows;
  frun_t *frun;
  size_t n_fruns, cap_fruns;
  uint8_t *smod;
  size_t n_smod, cap_smod;
  label_key_t *keys;
  size_t n_keys, cap_keys;
  uint16_t *key_hash; /* open addressing, STORE_NO_NAME: empty */
  uint32_t key_hash_size;
  uint16_t modalities[NO_MODALITY]; /* modality id -> name id */
  int n_modalities;
} st;

/* ---- the embeddings' precision ----
 * A row is stored as int8 with one float scale (its largest magnitude /
 * 127): 516 bytes per series at 512 dimensions, half of BF16, so that an
 * archive of 100 000 studies of 2 series holds 103 MB of them. The query
 * is quantized to int16 (its largest magnitude / 32767, 2^-15 relative:
 * no error that matters) and the dot product is exact in int32 (at most
 * 512 × 127 × 32767 < 2^31; quantize_query() keeps it so for any size). Only the rows' rounding remains: on unit
 * vectors of 512 dimensions 2e-4 (one standard deviation) on a cosine,
 * 2e-3 at most, which reorders only studies whose similarities lie that
 * close (docs/PLUGIN.md). */

#define ROW_Q 127.0f
#define QUERY_Q 32767.0f

/* The largest finite magnitude of v. */
static float max_abs(const float *v, size_t n) {
  float m = 0.f;
  for (size_t i = 0; i < n; i++)
    if (isfinite(v[i]) && fabsf(v[i]) > m) m = fabsf(v[i]);
  return m;
}

/* Quantizes v (n values) into out; returns the scale. */
static float quantize_row(const float *v, size_t n, int8_t *out) {
  const float m = max_abs(v, n);
  const float inv = m > 0.f ? ROW_Q / m : 0.f;
  for (size_t i = 0; i < n; i++) out[i] = (int8_t)lrintf(isfinite(v[i]) ? v[i] * inv : 0.f);
  return m / ROW_Q;
}

static float quantize_query(const float *q, size_t n, int16_t *out) {
  /* The int32 sum cannot overflow: n × 127 × qmax < 2^31 (qmax is 32767
   * up to 516 dimensions, less above). */
  float qmax = QUERY_Q;
  if (n > 0 && (double)n * ROW_Q * qmax >= 2147483647.0) qmax = (float)floor(2147483647.0 / ((double)n * ROW_Q));
  const float m = max_abs(q, n);
  const float inv = m > 0.f ? qmax / m : 0.f;
  for (size_t i = 0; i < n; i++) out[i] = (int16_t)lrintf(isfinite(q[i]) ? q[i] * inv : 0.f);
  return m / qmax;
}

/* Σ q[i] · r[i] in int32: 32 pairs per vpdpwssd (AVX-512 VNNI), 16 per
 * vpmaddwd (AVX2), or one at a time. */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) static int32_t dot_i8_vnni(const int16_t *q,
                                                                                   const int8_t *r,
                                                                                   int n) {
  __m512i acc0 = _mm512_setzero_si512(), acc1 = _mm512_setzero_si512();
  int i = 0;
  for (; i + 64 <= n; i += 64) {
    __m512i a = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(r + i)));
    __m512i b = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(r + i + 32)));
    acc0 = _mm512_dpwssd_epi32(acc0, a, _mm512_loadu_si512(q + i));
    acc1 = _mm512_dpwssd_epi32(acc1, b, _mm512_loadu_si512(q + i + 32));
  }
  int32_t s = _mm512_reduce_add_epi32(_mm512_add_epi32(acc0, acc1));
  for (; i < n; i++) s += (int32_t)q[i] * r[i];
  return s;
}
__attribute__((target("avx2"))) static int32_t dot_i8_avx2(const int16_t *q, const int8_t *r, int n) {
  __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
  int i = 0;
  for (; i + 32 <= n; i += 32) {
    __m256i a = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(r + i)));
    __m256i b = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(r + i + 16)));
    acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(a, _mm256_loadu_si256((const __m256i *)(q + i))));
    acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(b, _mm256_loadu_si256((const __m256i *)(q + i + 16))));
  }
  __m256i acc = _mm256_add_epi32(acc0, acc1);
  __m128i h = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
  h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));
  h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xb1));
  int32_t s = _mm_cvtsi128_si32(h);
  for (; i < n; i++) s += (int32_t)q[i] * r[i];
  return s;
}
#endif

static int32_t dot_i8_scalar(const int16_t *q, const int8_t *r, int n) {
  int32_t s = 0;
  for (int i = 0; i < n; i++) s += (int32_t)q[i] * r[i];
  return s;
}

typedef int32_t (*dot_fn)(const int16_t *, const int8_t *, int);

static dot_fn pick_dot(void) {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw")) return dot_i8_vnni;
  if (__builtin_cpu_supports("avx2")) return dot_i8_avx2;
#endif
  return dot_i8_scalar;
}

static dot_fn dot;

/* The similarity of a quantized query and row j. */
static float row_score(const int16_t *q, float q_scale, size_t j) {
  const size_t d = (size_t)st.dim;
  return (float)dot(q, st.matrix + j * d, (int)d) * q_scale * st.row_scale[j];
}

/* ---- set-up ---- */

int store_init(int dim) {
  if (st.ready) return 0;
  memset(&st, 0, sizeof st);
  if (pthread_rwlock_init(&st.rw, NULL) != 0) return -1;
  st.dim = dim;
  st.hash_size = 1024;
  st.name_hash = malloc(st.hash_size * sizeof *st.name_hash);
  st.key_hash_size = 1024;
  st.key_hash = malloc(st.key_hash_size * sizeof *st.key_hash);
  if (!st.name_hash || !st.key_hash) return -1;
  memset(st.name_hash, 0xff, st.hash_size * sizeof *st.name_hash);
  memset(st.key_hash, 0xff, st.key_hash_size * sizeof *st.key_hash);
  dot = pick_dot();
  st.ready = 1;
  return 0;
}

void store_free(void) {
  if (!st.ready) return;
  for (uint32_t i = 0; i < st.n_names; i++) free(st.names[i]);
  free(st.names);
  free(st.name_hash);
  free(st.by_num);
  free(st.listed);
  free(st.matrix);
  free(st.row_scale);
  free(st.erow);
  free(st.frow);
  free(st.frun);
  free(st.smod);
  free(st.keys);
  free(st.key_hash);
  pthread_rwlock_destroy(&st.rw);
  memset(&st, 0, sizeof st);
}

static int grow(void **p, size_t *cap, size_t need, size_t item) {
  if (need <= *cap) return 0;
  size_t nc = *cap ? *cap : 1024;
  while (nc < need) nc *= 2;
  void *np = realloc(*p, nc * item);
  if (!np) return -1;
  *p = np;
  *cap = nc;
  return 0;
}

/* ---- names ---- */

static uint32_t name_slot(const char *name, uint32_t size) {
  return (uint32_t)(fnv1a64(FNV64_OFFSET, name, strlen(name)) & (size - 1));
}

static uint16_t name_find(const char *name) {
  for (uint32_t h = name_slot(name, st.hash_size);; h = (h + 1) & (st.hash_size - 1)) {
    uint16_t id = st.name_hash[h];
    if (id == STORE_NO_NAME) return STORE_NO_NAME;
    if (strcmp(st.names[id], name) == 0) return id;
  }
}

uint16_t store_name_locked(const char *name) {
  if (!st.ready) return STORE_NO_NAME;
  if (!name) name = "";
  uint16_t id = name_find(name);
  if (id != STORE_NO_NAME) return id;
  if (st.n_names >= MAX_NAMES) return STORE_NO_NAME;
  char *copy = xstrdup(name);
  if (!copy) return STORE_NO_NAME;
  pthread_rwlock_wrlock(&st.rw);
  size_t cap = st.cap_names;
  if (grow((void **)&st.names, &cap, st.n_names + 1, sizeof *st.names) != 0) {
    pthread_rwlock_unlock(&st.rw);
    free(copy);
    return STORE_NO_NAME;
  }
  st.cap_names = (uint32_t)cap;
  /* At most half full, so that probes stay short. */
  if (2 * (st.n_names + 1) > st.hash_size) {
    uint32_t ns = st.hash_size * 2;
    uint16_t *nh = malloc(ns * sizeof *nh);
    if (!nh) {
      pthread_rwlock_unlock(&st.rw);
      free(copy);
      return STORE_NO_NAME;
    }
    memset(nh, 0xff, ns * sizeof *nh);
    for (uint32_t i = 0; i < st.n_names; i++) {
      uint32_t h = name_slot(st.names[i], ns);
      while (nh[h] != STORE_NO_NAME) h = (h + 1) & (ns - 1);
      nh[h] = (uint16_t)i;
    }
    free(st.name_hash);
    st.name_hash = nh;
    st.hash_size = ns;
  }
  id = (uint16_t)st.n_names;
  st.names[st.n_names++] = copy;
  uint32_t h = name_slot(copy, st.hash_size);
  while (st.name_hash[h] != STORE_NO_NAME) h = (h + 1) & (st.hash_size - 1);
  st.name_hash[h] = id;
  pthread_rwlock_unlock(&st.rw);
  return id;
}

const char *store_name(uint16_t id) { return id < st.n_names ? st.names[id] : ""; }

/* The ids whose names equal name case-insensitively, as a byte per possible
 * id (65 536: rows whose name could not be stored carry STORE_NO_NAME); the
 * caller frees it. NULL when there is none (*none set) or out of memory. */
static uint8_t *names_matching(const char *name, int *none) {
  *none = 1;
  uint8_t *m = calloc((size_t)STORE_NO_NAME + 1, 1);
  if (!m) {
    *none = 0;
    return NULL;
  }
  for (uint32_t i = 0; i < st.n_names; i++)
    if (strcasecmp(st.names[i], name) == 0) {
      m[i] = 1;
      *none = 0;
    }
  if (*none) {
    free(m);
    return NULL;
  }
  return m;
}

/* ---- studies ---- */

uint32_t store_add_study_locked(study_t *s) {
  if (!st.ready && store_init(g.dim) != 0) return DEAD;
  if (st.n_studies == DEAD - 1) return DEAD;
  if (st.n_studies == st.cap_studies) {
    pthread_rwlock_wrlock(&st.rw);
    size_t cap = st.cap_studies, cap2 = st.cap_studies;
    int bad = grow((void **)&st.by_num, &cap, st.n_studies + 1, sizeof *st.by_num) ||
              grow((void **)&st.listed, &cap2, st.n_studies + 1, 1);
    if (!bad) st.cap_studies = (uint32_t)(cap < cap2 ? cap : cap2);
    pthread_rwlock_unlock(&st.rw);
    if (bad || st.n_studies == st.cap_studies) return DEAD;
  }
  uint32_t num = st.n_studies;
  st.by_num[num] = s;
  __atomic_store_n(&st.listed[num], 0, __ATOMIC_RELAXED);
  /* The new number becomes visible to scans last. */
  __atomic_store_n(&st.n_studies, num + 1, __ATOMIC_RELEASE);
  return num;
}

void store_set_listed_locked(uint32_t num, int listed) {
  if (num < st.n_studies) __atomic_store_n(&st.listed[num], (uint8_t)(listed != 0), __ATOMIC_RELAXED);
}

/* ---- rows ---- */

static void compact_embeddings(void) {
  size_t out = 0;
  const size_t d = (size_t)st.dim;
  uint32_t last = DEAD;
  for (size_t i = 0; i < st.n_erows; i++) {
    uint32_t num = st.erow[i].study;
    if (num == DEAD) continue;
    if (num != last) {
      st.by_num[num]->emb_row = (int32_t)out;
      last = num;
    }
    if (out != i) {
      st.erow[out] = st.erow[i];
      memcpy(st.matrix + out * d, st.matrix + i * d, d * sizeof *st.matrix);
      st.row_scale[out] = st.row_scale[i];
    }
    out++;
  }
  st.n_erows = out;
  st.dead_erows = 0;
}

static void compact_findings(void) {
  size_t out = 0, out_runs = 0, out_smod = 0;
  for (size_t r = 0; r < st.n_fruns; r++) {
    const frun_t run = st.frun[r];
    if (run.study == DEAD) continue;
    const size_t end = r + 1 < st.n_fruns ? st.frun[r + 1].first : st.n_frows;
    const size_t n = end - run.first;
    memmove(st.frow + out, st.frow + run.first, n * sizeof *st.frow);
    memmove(st.smod + out_smod, st.smod + run.series_modality, run.n_series);
    st.frun[out_runs] = (frun_t){run.study, (uint32_t)out, (uint32_t)out_smod, run.n_series, 0};
    st.by_num[run.study]->f_row = (int32_t)out_runs;
    out += n;
    out_smod += run.n_series;
    out_runs++;
  }
  st.n_frows = out;
  st.n_fruns = out_runs;
  st.n_smod = out_smod;
  st.dead_frows = 0;
}

/* A (label set, label) key's id, added when new; STORE_NO_NAME when the
 * table is full or out of memory. With the write lock held. */
static uint16_t key_id(uint16_t label, uint16_t label_set) {
  const uint32_t h0 = ((uint32_t)label * 2654435761u) ^ ((uint32_t)label_set * 40503u);
  for (uint32_t h = h0 & (st.key_hash_size - 1);; h = (h + 1) & (st.key_hash_size - 1)) {
    uint16_t id = st.key_hash[h];
    if (id == STORE_NO_NAME) break;
    if (st.keys[id].label == label && st.keys[id].label_set == label_set) return id;
  }
  if (st.n_keys >= MAX_KEYS ||
      grow((void **)&st.keys, &st.cap_keys, st.n_keys + 1, sizeof *st.keys) != 0)
    return STORE_NO_NAME;
  if (2 * (st.n_keys + 1) > st.key_hash_size) {
    uint32_t ns = st.key_hash_size * 2;
    uint16_t *nh = malloc(ns * sizeof *nh);
    if (!nh) return STORE_NO_NAME;
    memset(nh, 0xff, ns * sizeof *nh);
    for (size_t i = 0; i < st.n_keys; i++) {
      uint32_t k = (((uint32_t)st.keys[i].label * 2654435761u) ^ ((uint32_t)st.keys[i].label_set * 40503u)) &
                   (ns - 1);
      while (nh[k] != STORE_NO_NAME) k = (k + 1) & (ns - 1);
      nh[k] = (uint16_t)i;
    }
    free(st.key_hash);
    st.key_hash = nh;
    st.key_hash_size = ns;
  }
  uint16_t id = (uint16_t)st.n_keys;
  st.keys[st.n_keys++] = (label_key_t){label, label_set};
  uint32_t h = h0 & (st.key_hash_size - 1);
  while (st.key_hash[h] != STORE_NO_NAME) h = (h + 1) & (st.key_hash_size - 1);
  st.key_hash[h] = id;
  return id;
}

/* A modality's id (NO_MODALITY when 255 are known already). With the
 * write lock held. */
static uint8_t modality_id(uint16_t name) {
  for (int i = 0; i < st.n_modalities; i++)
    if (st.modalities[i] == name) return (uint8_t)i;
  if (st.n_modalities >= (int)NO_MODALITY || name == STORE_NO_NAME) return NO_MODALITY;
  st.modalities[st.n_modalities] = name;
  return (uint8_t)st.n_modalities++;
}

int store_put_embeddings_locked(uint32_t num, int n, const float *const *v, const uint16_t *series,
                                const uint16_t *modality, int32_t *first, int32_t *count) {
  const size_t d = (size_t)st.dim;
  if (!st.ready) return n > 0 ? -1 : 0;
  pthread_rwlock_wrlock(&st.rw);
  for (int32_t i = 0; *first >= 0 && i < *count; i++) st.erow[*first + i].study = DEAD;
  if (*first >= 0) st.dead_erows += (size_t)*count;
  *first = STORE_NO_ROW;
  *count = 0;
  if (st.dead_erows > 4096 && 4 * st.dead_erows > st.n_erows) compact_embeddings();
  int rc = 0;
  if (n > 0) {
    size_t cap_m = st.cap_erows, cap_r = st.cap_erows, cap_s = st.cap_erows, need = st.n_erows + (size_t)n;
    /* The matrix grows by realloc: its untouched tail costs address space,
     * not resident memory. */
    if (grow((void **)&st.matrix, &cap_m, need, d * sizeof *st.matrix) != 0 ||
        grow((void **)&st.row_scale, &cap_s, need, sizeof *st.row_scale) != 0 ||
        grow((void **)&st.erow, &cap_r, need, sizeof *st.erow) != 0) {
      rc = -1;
    } else {
      st.cap_erows = cap_m < cap_r ? cap_m : cap_r;
      if (cap_s < st.cap_erows) st.cap_erows = cap_s;
      *first = (int32_t)st.n_erows;
      *count = n;
      for (int i = 0; i < n; i++) {
        const size_t j = st.n_erows + (size_t)i;
        st.row_scale[j] = quantize_row(v[i], d, st.matrix + j * d);
        st.erow[j] = (emb_row_t){num, series[i], modality[i]};
      }
      st.n_erows += (size_t)n;
    }
  }
  pthread_rwlock_unlock(&st.rw);
  return rc;
}

int store_put_findings_locked(uint32_t num, int n, const store_finding_in_t *in, int32_t *first,
                              int32_t *count) {
  if (!st.ready) return n > 0 ? -1 : 0;
  /* Names first: store_name_locked takes the write lock itself. */
  uint16_t *ids = n > 0 ? malloc((size_t)n * 3 * sizeof *ids) : NULL;
  if (n > 0 && !ids) n = -1;
  int n_series = 0;
  for (int i = 0; i < n; i++) {
    ids[3 * i] = store_name_locked(in[i].label);
    ids[3 * i + 1] = store_name_locked(in[i].label_set);
    ids[3 * i + 2] = store_name_locked(in[i].modality);
    if (in[i].series >= n_series && in[i].series < 0xFFFF) n_series = in[i].series + 1;
  }
  pthread_rwlock_wrlock(&st.rw);
  if (*first >= 0 && (size_t)*first < st.n_fruns) {
    st.frun[*first].study = DEAD;
    st.dead_frows += (size_t)*count;
  }
  *first = STORE_NO_ROW;
  *count = 0;
  if (st.dead_frows > 16384 && 4 * st.dead_frows > st.n_frows) compact_findings();
  int rc = n < 0 ? -1 : 0;
  if (n > 0) {
    if (grow((void **)&st.frow, &st.cap_frows, st.n_frows + (size_t)n, sizeof *st.frow) != 0 ||
        grow((void **)&st.frun, &st.cap_fruns, st.n_fruns + 1, sizeof *st.frun) != 0 ||
        grow((void **)&st.smod, &st.cap_smod, st.n_smod + (size_t)n_series, 1) != 0) {
      rc = -1;
    } else {
      memset(st.smod + st.n_smod, NO_MODALITY, (size_t)n_series);
      for (int i = 0; i < n; i++) {
        uint16_t series = (uint16_t)(in[i].series < 0 ? 0xFFFF : in[i].series);
        st.frow[st.n_frows + (size_t)i] =
            (frow_t){(float)in[i].probability, key_id(ids[3 * i], ids[3 * i + 1]), series};
        if (series < n_series) st.smod[st.n_smod + series] = modality_id(ids[3 * i + 2]);
      }
      st.frun[st.n_fruns] = (frun_t){num, (uint32_t)st.n_frows, (uint32_t)st.n_smod, (uint16_t)n_series, 0};
      *first = (int32_t)st.n_fruns++;
      *count = n;
      st.n_frows += (size_t)n;
      st.n_smod += (size_t)n_series;
    }
  }
  pthread_rwlock_unlock(&st.rw);
  free(ids);
  return rc;
}

/* Finding i of the run r, unpacked. */
static store_finding_t unpack(const frun_t *run, size_t i) {
  const frow_t *f = &st.frow[run->first + i];
  store_finding_t o = {f->probability, STORE_NO_NAME, STORE_NO_NAME, STORE_NO_NAME, f->series};
  if (f->key < st.n_keys) {
    o.label = st.keys[f->key].label;
    o.label_set = st.keys[f->key].label_set;
  }
  if (f->series < run->n_series) {
    uint8_t m = st.smod[run->series_modality + f->series];
    if (m != NO_MODALITY) o.modality = st.modalities[m];
  }
  return o;
}

int store_finding_locked(const study_t *s, int32_t i, store_finding_t *out) {
  if (s->f_row < 0 || (size_t)s->f_row >= st.n_fruns || i < 0 || i >= s->nf) return -1;
  *out = unpack(&st.frun[s->f_row], (size_t)i);
  return 0;
}

void store_embedding_row_locked(int32_t row, uint16_t *series, uint16_t *modality) {
  *series = *modality = STORE_NO_NAME;
  if (row >= 0 && (size_t)row < st.n_erows) {
    *series = st.erow[row].series;
    *modality = st.erow[row].modality;
  }
}

int32_t store_best_finding_locked(const study_t *s, const char *label, double min_p,
                                  const char *label_set, const char *modality, double *p) {
  int32_t best = STORE_NO_ROW;
  const float min_pf = (float)min_p;
  store_finding_t f;
  for (int32_t i = 0; store_finding_locked(s, i, &f) == 0; i++) {
    if (f.probability < min_pf || strcasecmp(store_name(f.label), label) != 0) continue;
    if (label_set && strcasecmp(store_name(f.label_set), label_set) != 0) continue;
    if (modality && strcasecmp(store_name(f.modality), modality) != 0) continue;
    if (best < 0 || f.probability > *p) {
      best = i;
      *p = f.probability;
    }
  }
  return best;
}

int32_t store_best_embedding_locked(const study_t *s, const float *q, const char *modality,
                                    double *score) {
  int32_t best = STORE_NO_ROW;
  /* The same kernel as the scan, so that the answer's similarity is the
   * one the scan ranked by. */
  int16_t *q16 = malloc((size_t)st.dim * sizeof *q16);
  if (!q16) return STORE_NO_ROW;
  const float q_scale = quantize_query(q, (size_t)st.dim, q16);
  for (int32_t i = 0; s->emb_row >= 0 && i < s->nemb; i++) {
    const emb_row_t *r = &st.erow[s->emb_row + i];
    if (modality && strcasecmp(store_name(r->modality), modality) != 0) continue;
    float x = row_score(q16, q_scale, (size_t)(s->emb_row + i));
    if (best < 0 || x > *score) {
      best = s->emb_row + i;
      *score = x;
    }
  }
  free(q16);
  return best;
}

int store_study_has_locked(const study_t *s, const char *label_set, const char *modality) {
  if (!label_set && !modality) return 1;
  store_finding_t f;
  for (int32_t i = 0; store_finding_locked(s, i, &f) == 0; i++) {
    if (label_set && strcasecmp(store_name(f.label_set), label_set) != 0) continue;
    if (modality && strcasecmp(store_name(f.modality), modality) != 0) continue;
    return 1;
  }
  for (int32_t i = 0; !label_set && s->emb_row >= 0 && i < s->nemb; i++)
    if (strcasecmp(store_name(st.erow[s->emb_row + i].modality), modality) == 0) return 1;
  return 0;
}

size_t store_bytes(void) {
  if (!st.ready) return 0;
  pthread_rwlock_rdlock(&st.rw);
  size_t b = st.n_erows * ((size_t)st.dim + sizeof(float) + sizeof(emb_row_t)) + st.n_frows * sizeof(frow_t) +
             st.n_fruns * sizeof(frun_t) + st.n_smod + st.n_keys * sizeof(label_key_t) +
             (size_t)st.n_studies * (sizeof(study_t *) + 1);
  pthread_rwlock_unlock(&st.rw);
  return b;
}

/* ---- the top k: a min-heap on (score, then study ID descending) ---- */

/* a ranks before b: higher score, then the smaller study ID (stable pages). */
static int ranks_before(const store_hit_t *a, const store_hit_t *b) {
  if (a->score != b->score) return a->score > b->score;
  return strcmp(a->study->id, b->study->id) < 0;
}

typedef struct {
  store_hit_t *h;
  size_t n, k;
} heap_t;

static void sift_down(heap_t *hp, size_t i) {
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, w = i;
    /* The root holds the hit that ranks last. */
    if (l < hp->n && ranks_before(&hp->h[w], &hp->h[l])) w = l;
    if (r < hp->n && ranks_before(&hp->h[w], &hp->h[r])) w = r;
    if (w == i) return;
    store_hit_t t = hp->h[i];
    hp->h[i] = hp->h[w];
    hp->h[w] = t;
    i = w;
  }
}

static void heap_offer(heap_t *hp, const store_hit_t *x) {
  if (hp->k == 0) return;
  if (hp->n < hp->k) {
    size_t i = hp->n++;
    hp->h[i] = *x;
    while (i > 0) {
      size_t p = (i - 1) / 2;
      if (!ranks_before(&hp->h[p], &hp->h[i])) break;
      store_hit_t t = hp->h[i];
      hp->h[i] = hp->h[p];
      hp->h[p] = t;
      i = p;
    }
  } else if (ranks_before(x, &hp->h[0])) {
    hp->h[0] = *x;
    sift_down(hp, 0);
  }
}

static int cmp_hits(const void *a, const void *b) {
  return ranks_before(a, b) ? -1 : ranks_before(b, a) ? 1 : 0;
}

static long heap_finish(heap_t *hp) {
  qsort(hp->h, hp->n, sizeof *hp->h, cmp_hits);
  return (long)hp->n;
}

/* ---- the scans ---- */

/* Searches share passes over the matrix: reading it (516 bytes per series,
 * 103 MB for 100 000 studies of 2 series) costs more than the dot products,
 * so the searches that arrive while a pass runs wait for it to end and then
 * go through the next pass together, which reads each block of SCAN_BLOCK
 * rows from memory once and scores it for each of them while it is in the
 * cache. A pass splits the rows into SCAN_PARTS parts (at study
 * boundaries) scanned by as many threads, each with its own top k per
 * search; the parts' hits are merged at the end. */
#define SCAN_BLOCK 64
#define SCAN_BATCH 16
#define SCAN_PARTS 2

typedef struct {
  heap_t hp;
  size_t total;
  uint32_t cur;    /* the study whose rows are being scanned */
  int32_t best;
  float best_score;
} search_part_t;

typedef struct search_req {
  const float *q;
  int16_t *q16;    /* q quantized (row_score) */
  float q_scale;
  const char *modality;
  uint8_t *mods;   /* the modality ids asked for (NULL: any) */
  int skip;        /* matches nothing (an unknown modality) or out of memory */
  int failed;      /* out of memory */
  size_t k;
  store_hit_t *hits;
  search_part_t part[SCAN_PARTS];
  size_t total;
  long n_hits;
  int done;
  struct search_req *next;
} search_req_t;

static struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  search_req_t *waiting, **tail; /* first come, first scanned */
  int busy;
} sp = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

/* The study scanned so far becomes a hit (when one of its rows matched). */
static void search_flush(search_part_t *p) {
  if (p->best >= 0) {
    p->total++;
    store_hit_t h = {st.by_num[p->cur], p->best_score, p->best};
    heap_offer(&p->hp, &h);
  }
  p->best = -1;
}

typedef struct {
  search_req_t **rs;
  int n, part;
  size_t from, to; /* rows */
} scan_job_t;

/* Part job->part of the pass: rows [from, to) for every search. */
static void *scan_part(void *arg) {
  const scan_job_t *job = arg;
  for (size_t i0 = job->from; i0 < job->to; i0 += SCAN_BLOCK) {
    const size_t i1 = i0 + SCAN_BLOCK < job->to ? i0 + SCAN_BLOCK : job->to;
    for (int k = 0; k < job->n; k++) {
      search_req_t *r = job->rs[k];
      search_part_t *p = &r->part[job->part];
      if (r->skip) continue;
      for (size_t j = i0; j < i1; j++) {
        const uint32_t num = st.erow[j].study;
        if (num != p->cur) {
          search_flush(p);
          p->cur = num;
        }
        if (num == DEAD || !__atomic_load_n(&st.listed[num], __ATOMIC_RELAXED)) continue;
        if (r->mods && !r->mods[st.erow[j].modality]) continue;
        const float x = row_score(r->q16, r->q_scale, j);
        if (p->best < 0 || x > p->best_score) {
          p->best_score = x;
          p->best = (int32_t)j;
        }
      }
    }
  }
  for (int k = 0; k < job->n; k++) search_flush(&job->rs[k]->part[job->part]);
  return NULL;
}

/* One pass for n searches, with the read lock held. */
static void search_pass(search_req_t **rs, int n) {
  const size_t d = (size_t)st.dim;
  for (int k = 0; k < n; k++) {
    search_req_t *r = rs[k];
    int none = 0;
    r->mods = r->modality ? names_matching(r->modality, &none) : NULL;
    r->q16 = malloc(d * sizeof *r->q16);
    if (r->q16) r->q_scale = quantize_query(r->q, d, r->q16);
    store_hit_t *part_hits = malloc((r->k ? r->k : 1) * SCAN_PARTS * sizeof *part_hits);
    r->failed = (r->modality && !r->mods && !none) || !r->q16 || !part_hits;
    r->skip = r->failed || (r->modality && !r->mods);
    for (int t = 0; t < SCAN_PARTS; t++)
      r->part[t] = (search_part_t){{part_hits ? part_hits + (size_t)t * r->k : NULL, 0, r->skip ? 0 : r->k},
                                   0, DEAD, -1, 0.f};
  }
  /* The parts, cut where a study's rows end. */
  scan_job_t jobs[SCAN_PARTS];
  size_t from = 0;
  for (int t = 0; t < SCAN_PARTS; t++) {
    size_t to = t == SCAN_PARTS - 1 ? st.n_erows : st.n_erows / SCAN_PARTS * (size_t)(t + 1);
    if (to < from) to = from;
    while (to > from && to < st.n_erows && st.erow[to].study == st.erow[to - 1].study) to++;
    jobs[t] = (scan_job_t){rs, n, t, from, to};
    from = to;
  }
  pthread_t th[SCAN_PARTS];
  int started[SCAN_PARTS] = {0};
  for (int t = 1; t < SCAN_PARTS; t++)
    started[t] = jobs[t].to > jobs[t].from && pthread_create(&th[t], NULL, scan_part, &jobs[t]) == 0;
  scan_part(&jobs[0]);
  for (int t = 1; t < SCAN_PARTS; t++) {
    if (started[t])
      pthread_join(th[t], NULL);
    else
      scan_part(&jobs[t]);
  }
  /* Each search's top k from its parts' top k. */
  for (int k = 0; k < n; k++) {
    search_req_t *r = rs[k];
    heap_t hp = {r->hits, 0, r->skip ? 0 : r->k};
    r->total = 0;
    for (int t = 0; t < SCAN_PARTS; t++) {
      r->total += r->part[t].total;
      for (size_t i = 0; i < r->part[t].hp.n; i++) heap_offer(&hp, &r->part[t].hp.h[i]);
    }
    r->n_hits = heap_finish(&hp);
    free(r->part[0].hp.h);
    free(r->mods);
    free(r->q16);
    r->mods = NULL;
    r->q16 = NULL;
  }
}

long store_search(const float *q, const char *modality, size_t k, store_hit_t *hits, size_t *total) {
  *total = 0;
  if (!st.ready) return 0;
  search_req_t me = {.q = q, .modality = modality, .k = k, .hits = hits};
  pthread_mutex_lock(&sp.mu);
  if (!sp.tail) sp.tail = &sp.waiting;
  *sp.tail = &me;
  sp.tail = &me.next;
  while (!me.done) {
    if (sp.busy) {
      pthread_cond_wait(&sp.cv, &sp.mu);
      continue;
    }
    /* No pass running: this search runs one for every waiting search. */
    search_req_t *batch[SCAN_BATCH];
    int n = 0;
    while (sp.waiting && n < SCAN_BATCH) {
      batch[n++] = sp.waiting;
      sp.waiting = sp.waiting->next;
    }
    if (!sp.waiting) sp.tail = &sp.waiting;
    sp.busy = 1;
    pthread_mutex_unlock(&sp.mu);
    pthread_rwlock_rdlock(&st.rw);
    search_pass(batch, n);
    pthread_rwlock_unlock(&st.rw);
    pthread_mutex_lock(&sp.mu);
    for (int i = 0; i < n; i++) batch[i]->done = 1;
    sp.busy = 0;
    pthread_cond_broadcast(&sp.cv);
  }
  pthread_mutex_unlock(&sp.mu);
  if (me.failed) return -1;
  *total = me.total;
  return me.n_hits;
}

long store_findings(const char *label, double min_p, const char *label_set, const char *modality,
                    size_t k, store_hit_t *hits, size_t *total) {
  *total = 0;
  if (!st.ready) return 0;
  pthread_rwlock_rdlock(&st.rw);
  int none_l = 0, none_s = 0, none_m = 0;
  uint8_t *labels = names_matching(label, &none_l);
  uint8_t *sets = label_set ? names_matching(label_set, &none_s) : NULL;
  uint8_t *mod_names = modality ? names_matching(modality, &none_m) : NULL;
  /* Per key and per modality id: whether it is asked for. */
  uint8_t *keym = calloc(st.n_keys ? st.n_keys : 1, 1);
  uint8_t mods[256] = {0};
  long rc = 0;
  if (!labels || (label_set && !sets) || (modality && !mod_names) || !keym) {
    rc = !keym || !(none_l || none_s || none_m) ? -1 : 0;
    pthread_rwlock_unlock(&st.rw);
    free(labels);
    free(sets);
    free(mod_names);
    free(keym);
    return rc;
  }
  for (size_t i = 0; i < st.n_keys; i++)
    keym[i] = labels[st.keys[i].label] && (!sets || sets[st.keys[i].label_set]);
  for (int i = 0; mod_names && i < st.n_modalities; i++) mods[i] = mod_names[st.modalities[i]];
  /* Probabilities are stored as floats: compare in float, so that a stored
   * value equal to min_p (as decimals) is not left out by its rounding. */
  const float min_pf = (float)min_p;
  heap_t hp = {hits, 0, k};
  size_t n = 0;
  for (size_t r = 0; r < st.n_fruns; r++) {
    const frun_t *run = &st.frun[r];
    const uint32_t num = run->study;
    if (num == DEAD || !__atomic_load_n(&st.listed[num], __ATOMIC_RELAXED)) continue;
    const size_t end = r + 1 < st.n_fruns ? st.frun[r + 1].first : st.n_frows;
    int32_t best = -1;
    float bp = 0.f;
    for (size_t j = run->first; j < end; j++) {
      const frow_t *f = &st.frow[j];
      if (f->key >= st.n_keys || !keym[f->key] || f->probability < min_pf) continue;
      if (mod_names) {
        const uint8_t m = f->series < run->n_series ? st.smod[run->series_modality + f->series] : NO_MODALITY;
        if (!mods[m]) continue;
      }
      if (best < 0 || f->probability > bp) {
        bp = f->probability;
        best = (int32_t)(j - run->first);
      }
    }
    if (best < 0) continue;
    n++;
    store_hit_t h = {st.by_num[num], bp, best};
    heap_offer(&hp, &h);
  }
  pthread_rwlock_unlock(&st.rw);
  free(labels);
  free(sets);
  free(mod_names);
  free(keym);
  *total = n;
  return heap_finish(&hp);
}
