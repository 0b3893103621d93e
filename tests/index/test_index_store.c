/* The plugin's in-memory index (plugin/index.c, index_store.c) without
 * Orthanc: studies' findings and embeddings set from the JSON the plugin
 * stores, then `search` and `findings` scans checked against a brute-force
 * reference written here (FP64 over the test's own copies of the vectors
 * and scores), through churn (results replaced and cleared until the store
 * compacts its rows), states that hide results, and concurrent searches
 * (whose shared passes must answer each search as it would alone).
 *
 *   test_index_store [seed]
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "index.h"

plugin_t g;

static int failures;
#define CHECK(cond, ...)                  \
  do {                                    \
    if (!(cond)) {                        \
      failures++;                         \
      if (failures < 20) {                \
        fprintf(stderr, "FAIL: ");        \
        fprintf(stderr, __VA_ARGS__);     \
        fprintf(stderr, "\n");            \
      }                                   \
    }                                     \
  } while (0)

#define DIM 200 /* not a multiple of the kernels' 64: their tails run too */
#define N_STUDIES 3000
#define MAX_SERIES 3

static const char *const MODALITIES[] = {"CT", "MR", "DX"};
static const char *const LABELS[] = {"pleural effusion", "pneumothorax", "nodule", "normal"};
static const char *const SETS[] = {"chest", "ct"};

/* What the test itself knows of each study: the reference. */
typedef struct {
  char id[48];
  int listed;
  int n_series;
  float v[MAX_SERIES][DIM];
  int modality[MAX_SERIES];
  int n_f;
  int f_label[MAX_SERIES * 8], f_set[MAX_SERIES * 8], f_series[MAX_SERIES * 8];
  double f_p[MAX_SERIES * 8];
} ref_t;

static ref_t ref[N_STUDIES];
static study_t *studies[N_STUDIES];

static unsigned long long rng_state;
static double rnd(void) { /* xorshift64*, uniform [0, 1) */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return (double)((rng_state * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}
static double gauss(void) {
  double u = rnd() + 1e-12, w = rnd();
  return sqrt(-2 * log(u)) * cos(6.283185307179586 * w);
}

static void unit_vector(float *v) {
  double n = 0;
  for (int i = 0; i < DIM; i++) {
    v[i] = (float)gauss();
    n += (double)v[i] * v[i];
  }
  for (int i = 0; i < DIM; i++) v[i] = (float)(v[i] / sqrt(n));
}

static char *series_uid(int study, int series) {
  static char b[80];
  snprintf(b, sizeof b, "1.2.3.%d.%d", study, series);
  return b;
}

/* New results for study i, stored as the plugin stores them. */
static void new_results(int i) {
  ref_t *r = &ref[i];
  r->n_series = 1 + (int)(rnd() * MAX_SERIES);
  r->n_f = 0;
  cJSON *findings = cJSON_CreateObject();
  cJSON *fs = cJSON_AddArrayToObject(findings, "series");
  cJSON *emb = cJSON_CreateObject();
  cJSON_AddNumberToObject(emb, "dim", DIM);
  cJSON *es = cJSON_AddArrayToObject(emb, "series");
  for (int s = 0; s < r->n_series; s++) {
    unit_vector(r->v[s]);
    r->modality[s] = (int)(rnd() * 3);
    cJSON *se = cJSON_CreateObject();
    cJSON_AddStringToObject(se, "series", series_uid(i, s));
    /* CT sometimes in lower case: the filters are case-insensitive. */
    cJSON_AddStringToObject(se, "modality",
                            r->modality[s] == 0 && rnd() < 0.5 ? "ct" : MODALITIES[r->modality[s]]);
    cJSON *lss = cJSON_AddArrayToObject(se, "label_sets");
    for (int set = 0; set < 2; set++) {
      cJSON *ls = cJSON_CreateObject();
      cJSON_AddStringToObject(ls, "name", SETS[set]);
      cJSON *fl = cJSON_AddArrayToObject(ls, "findings");
      for (int l = 0; l < 4; l++) {
        if (rnd() < 0.3) continue;
        /* Six significant digits, as the engine writes them; some exactly
         * 0.5 (the default min_probability). */
        double p = rnd() < 0.05 ? 0.5 : floor(rnd() * 1e6) / 1e6;
        char num[32];
        snprintf(num, sizeof num, "%.6g", p);
        cJSON *f = cJSON_CreateObject();
        cJSON_AddStringToObject(f, "label", LABELS[l]);
        cJSON_AddItemToObject(f, "probability", cJSON_CreateRaw(num));
        cJSON_AddItemToArray(fl, f);
        int k = r->n_f++;
        r->f_label[k] = l;
        r->f_set[k] = set;
        r->f_series[k] = s;
        r->f_p[k] = strtod(num, NULL);
      }
      cJSON_AddItemToArray(lss, ls);
    }
    cJSON_AddItemToArray(fs, se);
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "series_uid", series_uid(i, s));
    cJSON_AddStringToObject(e, "modality", cJSON_GetStringValue(cJSON_GetObjectItem(se, "modality")));
    cJSON *arr = cJSON_AddArrayToObject(e, "embedding");
    for (int x = 0; x < DIM; x++) {
      char num[32];
      snprintf(num, sizeof num, "%.9g", (double)r->v[s][x]);
      cJSON_AddItemToArray(arr, cJSON_CreateRaw(num));
    }
    cJSON_AddItemToArray(es, e);
  }
  study_t *st = studies[i];
  study_clear_result(st);
  study_set_findings(st, findings);
  study_set_embeddings_json(st, emb);
  cJSON_Delete(emb);
  /* Mostly done; some results hidden (failed, or a re-run of a deleted
   * study); some listed while queued again with their results. */
  double u = rnd();
  st->deleted = 0;
  st->state = u < 0.8 ? ST_DONE : u < 0.9 ? ST_QUEUED : u < 0.95 ? ST_FAILED : ST_RUNNING;
  if (st->state == ST_RUNNING) st->deleted = 1;
  study_update_listed_locked(st);
  r->listed = st->state == ST_DONE || st->state == ST_QUEUED;
}

static void forget(int i) {
  study_clear_result(studies[i]);
  studies[i]->state = ST_NONE;
  study_update_listed_locked(studies[i]);
  ref[i].listed = 0;
  ref[i].n_series = ref[i].n_f = 0;
}

/* ---- the reference ---- */
typedef struct {
  int study;
  double score;
} ref_hit_t;

static int cmp_ref(const void *a, const void *b) {
  const ref_hit_t *x = a, *y = b;
  if (x->score != y->score) return x->score > y->score ? -1 : 1;
  return strcmp(ref[x->study].id, ref[y->study].id);
}

static size_t ref_search(const float *q, int modality, ref_hit_t *out) {
  size_t n = 0;
  for (int i = 0; i < N_STUDIES; i++) {
    if (!ref[i].listed) continue;
    double best = -1e9;
    int any = 0;
    for (int s = 0; s < ref[i].n_series; s++) {
      if (modality >= 0 && ref[i].modality[s] != modality) continue;
      double d = 0;
      for (int x = 0; x < DIM; x++) d += (double)q[x] * ref[i].v[s][x];
      if (!any || d > best) best = d;
      any = 1;
    }
    if (any) out[n++] = (ref_hit_t){i, best};
  }
  qsort(out, n, sizeof *out, cmp_ref);
  return n;
}

static size_t ref_findings(int label, double min_p, int set, int modality, ref_hit_t *out) {
  size_t n = 0;
  for (int i = 0; i < N_STUDIES; i++) {
    if (!ref[i].listed) continue;
    double best = -1;
    for (int k = 0; k < ref[i].n_f; k++) {
      if (ref[i].f_label[k] != label || ref[i].f_p[k] < min_p) continue;
      if (set >= 0 && ref[i].f_set[k] != set) continue;
      if (modality >= 0 && ref[i].modality[ref[i].f_series[k]] != modality) continue;
      if (ref[i].f_p[k] > best) best = ref[i].f_p[k];
    }
    if (best >= 0) out[n++] = (ref_hit_t){i, best};
  }
  qsort(out, n, sizeof *out, cmp_ref);
  return n;
}

static int study_index(const study_t *s) {
  return atoi(s->id + 1);
}

/* The stored embeddings are rounded to int8 with a scale per row (the
 * query to int16): at 200 dimensions a cosine moves by about 6e-4 (one
 * standard deviation). Hits must be the reference's, in its order, except
 * where two scores lie within the tolerance. */
#define SCORE_TOLERANCE 4e-3

static void check_search(const float *q, int modality, size_t k, const char *what) {
  static ref_hit_t want[N_STUDIES];
  store_hit_t *got = malloc(k * sizeof *got);
  size_t total = 0;
  const char *name = modality == 0 && rnd() < 0.5 ? "ct" : modality >= 0 ? MODALITIES[modality] : NULL;
  long n = store_search(q, name, k, got, &total);
  size_t nw = ref_search(q, modality, want);
  CHECK(total == nw, "%s: total %zu, reference %zu", what, total, nw);
  CHECK(n == (long)(nw < k ? nw : k), "%s: %ld hits, reference %zu (k %zu)", what, n, nw, k);
  for (long i = 0; i < n && i < (long)nw; i++) {
    int gi = study_index(got[i].study);
    CHECK(fabs(got[i].score - want[i].score) <= SCORE_TOLERANCE,
          "%s: hit %ld: score %.6f, reference %.6f", what, i, got[i].score, want[i].score);
    if (gi != want[i].study) {
      /* Another study in that place: only when the two tie within the
       * rounding, and the one found is among the listed with that score. */
      double other = -2;
      for (size_t j = 0; j < nw; j++)
        if (want[j].study == gi) other = want[j].score;
      CHECK(fabs(other - want[i].score) <= 2 * SCORE_TOLERANCE,
            "%s: hit %ld is study %d (reference score %.6f), reference has %d (%.6f)", what, i, gi, other,
            want[i].study, want[i].score);
    }
    if (i > 0) CHECK(got[i].score <= got[i - 1].score, "%s: hits not sorted at %ld", what, i);
  }
  free(got);
}

static void check_findings(size_t k, const char *what) {
  static ref_hit_t want[N_STUDIES];
  int label = (int)(rnd() * 4), set = rnd() < 0.5 ? (int)(rnd() * 2) : -1,
      modality = rnd() < 0.3 ? (int)(rnd() * 3) : -1;
  /* Sometimes a min_p that equals stored values: they are included. */
  double min_p = rnd() < 0.3 ? 0.5 : floor(rnd() * 1e6) / 1e6;
  char label_name[64];
  snprintf(label_name, sizeof label_name, "%s", LABELS[label]);
  if (rnd() < 0.5) label_name[0] = (char)(label_name[0] - 'a' + 'A');
  store_hit_t *got = malloc(k * sizeof *got);
  size_t total = 0;
  long n = store_findings(label_name, min_p, set >= 0 ? SETS[set] : NULL,
                          modality >= 0 ? MODALITIES[modality] : NULL, k, got, &total);
  size_t nw = ref_findings(label, min_p, set, modality, want);
  CHECK(total == nw, "%s: findings %s >= %g: total %zu, reference %zu", what, label_name, min_p, total, nw);
  CHECK(n == (long)(nw < k ? nw : k), "%s: findings: %ld hits, reference %zu", what, n, nw);
  for (long i = 0; i < n && i < (long)nw; i++) {
    CHECK(study_index(got[i].study) == want[i].study && fabs(got[i].score - want[i].score) < 1e-6,
          "%s: findings hit %ld: study %d p %.6f, reference study %d p %.6f", what, i,
          study_index(got[i].study), got[i].score, want[i].study, want[i].score);
  }
  /* The answer's re-check under g.mu finds the same row. */
  for (long i = 0; i < n; i++) {
    double p = 0;
    int32_t row = store_best_finding_locked(got[i].study, label_name, min_p, set >= 0 ? SETS[set] : NULL,
                                            modality >= 0 ? MODALITIES[modality] : NULL, &p);
    CHECK(row != STORE_NO_ROW && fabs(p - got[i].score) < 1e-9, "%s: re-check of hit %ld", what, i);
  }
  free(got);
}

/* ---- concurrent searches ---- */
#define N_THREADS 8
#define QUERIES_PER_THREAD 6
static float queries[N_THREADS][QUERIES_PER_THREAD][DIM];
static store_hit_t alone[N_THREADS][QUERIES_PER_THREAD][25];
static long alone_n[N_THREADS][QUERIES_PER_THREAD];

static void *searcher(void *arg) {
  int t = (int)(size_t)arg;
  for (int k = 0; k < QUERIES_PER_THREAD; k++) {
    store_hit_t hits[25];
    size_t total;
    long n = store_search(queries[t][k], NULL, 25, hits, &total);
    int same = n == alone_n[t][k];
    for (long i = 0; same && i < n; i++)
      same = hits[i].study == alone[t][k][i].study && hits[i].score == alone[t][k][i].score;
    CHECK(same, "thread %d query %d: a shared pass answered differently from the search alone", t, k);
  }
  return NULL;
}

int main(int argc, char **argv) {
  unsigned long long seed = argc > 1 ? strtoull(argv[1], NULL, 10) : 1;
  rng_state = seed * 0x9E3779B97F4A7C15ULL + 1;
  printf("test_index_store: seed %llu, %d studies, dim %d\n", seed, N_STUDIES, DIM);
  g.dim = DIM;
  pthread_mutex_init(&g.mu, NULL);
  CHECK(store_init(DIM) == 0, "store_init");
  for (int i = 0; i < N_STUDIES; i++) {
    snprintf(ref[i].id, sizeof ref[i].id, "s%05d-%08x", i, (unsigned)(rnd() * 4e9));
    studies[i] = study_get(ref[i].id);
    CHECK(studies[i] != NULL, "study_get");
    new_results(i);
  }
  float q[DIM];
  for (int round = 0; round < 6; round++) {
    char what[32];
    snprintf(what, sizeof what, "round %d", round);
    for (int t = 0; t < 4; t++) {
      unit_vector(q);
      check_search(q, -1, 1 + (size_t)(rnd() * 40), what);
      check_search(q, (int)(rnd() * 3), 1 + (size_t)(rnd() * 40), what);
      check_findings(1 + (size_t)(rnd() * 40), what);
    }
    /* The whole list once: every listed study in order. */
    unit_vector(q);
    check_search(q, -1, N_STUDIES, what);
    /* Churn: new results for a third of the studies, a few forgotten, so
     * that dead rows pile up and the store compacts them. */
    for (int i = 0; i < N_STUDIES; i++) {
      double u = rnd();
      if (u < 0.33) new_results(i);
      else if (u < 0.36) forget(i);
    }
  }
  /* An unknown modality or label matches nothing. */
  store_hit_t h[4];
  size_t total = 1;
  CHECK(store_search(q, "XA", 4, h, &total) == 0 && total == 0, "unknown modality");
  CHECK(store_findings("no such label", 0, NULL, NULL, 4, h, &total) == 0 && total == 0, "unknown label");

  /* Concurrent searches: each answered as alone. */
  for (int t = 0; t < N_THREADS; t++)
    for (int k = 0; k < QUERIES_PER_THREAD; k++) {
      unit_vector(queries[t][k]);
      size_t tot;
      alone_n[t][k] = store_search(queries[t][k], NULL, 25, alone[t][k], &tot);
    }
  pthread_t th[N_THREADS];
  for (int t = 0; t < N_THREADS; t++) pthread_create(&th[t], NULL, searcher, (void *)(size_t)t);
  for (int t = 0; t < N_THREADS; t++) pthread_join(th[t], NULL);

  pthread_mutex_lock(&g.mu);
  study_free_all();
  pthread_mutex_unlock(&g.mu);
  if (failures) {
    printf("test_index_store: %d failures (seed %llu)\n", failures, seed);
    return 1;
  }
  printf("test_index_store: all checks passed\n");
  return 0;
}
