/* UniMed for Orthanc — the query side of the index: what `search` and
 * `findings` scan, laid out for an archive of 100 000s of studies.
 *
 *   names      every label, label-set name, modality and warning text once,
 *              by a 16-bit id (a handful of hundreds in practice)
 *   studies    a number per study (its index in one pointer array) and a
 *              "listed" byte per number (whether its results may be listed)
 *   matrix     the series embeddings as one contiguous int8 matrix, one
 *              row of `dim` values and a scale per series, a study's rows
 *              side by side
 *   findings   one 8-byte row per score (probability, a (label set, label)
 *              id, series), a study's rows side by side in one run (study,
 *              first row, the modality of each of its series)
 *
 * Locking: writers hold g.mu (they are the index's own study_* functions)
 * and take the store's write lock for the moments they change the arrays;
 * the scans take only its read lock, so queries run in parallel with each
 * other and with the queue and the workers (which hold g.mu but not the
 * store). "listed" is written under g.mu without the write lock (one byte,
 * atomically), so a scan may see a study's change a moment late; the answer
 * is built under g.mu, which checks the study again. */
#ifndef UNIMED_PLUGIN_INDEX_STORE_H
#define UNIMED_PLUGIN_INDEX_STORE_H

#include <stddef.h>
#include <stdint.h>

#define STORE_NO_NAME 0xFFFFu
#define STORE_NO_ROW (-1)

struct study;

/* A stored score, unpacked (store_finding_locked()). */
typedef struct {
  float probability;
  uint16_t label, label_set, modality; /* name ids */
  uint16_t series;  /* index into the study's series list */
} store_finding_t;

/* One score to store (store_put_findings). */
typedef struct {
  const char *label, *label_set, *modality;
  int series;
  double probability;
} store_finding_in_t;

/* ---- with g.mu held ---- */
int store_init(int dim); /* 0, or -1 when out of memory */
void store_free(void);
/* A number for a new study (kept for the plugin's lifetime); UINT32_MAX
 * when out of memory. */
uint32_t store_add_study_locked(struct study *s);
void store_set_listed_locked(uint32_t num, int listed);
/* The id of a name, added when new (STORE_NO_NAME when the table is full
 * or out of memory). */
uint16_t store_name_locked(const char *name);
/* Replaces a study's rows by n new ones (n = 0: removes them). *first and
 * *count are the study's rows, updated here (for embeddings the first row,
 * for findings its run); -1 when out of memory (the old rows are removed
 * then). Embeddings are `dim` floats each. */
int store_put_embeddings_locked(uint32_t num, int n, const float *const *v,
                                const uint16_t *series, const uint16_t *modality,
                                int32_t *first, int32_t *count);
int store_put_findings_locked(uint32_t num, int n, const store_finding_in_t *in, int32_t *first,
                              int32_t *count);
/* The name of an id ("" for STORE_NO_NAME); valid for the plugin's life. */
const char *store_name(uint16_t id);
/* A study's stored finding i (0 .. s->nf - 1) into *out; -1 when none. */
int store_finding_locked(const struct study *s, int32_t i, store_finding_t *out);
/* Modality id of an embedding row and its series index. */
void store_embedding_row_locked(int32_t row, uint16_t *series, uint16_t *modality);

/* ---- queries (take the read lock themselves; no g.mu) ---- */
typedef struct {
  struct study *study;
  double score;  /* similarity, or probability */
  int32_t row;   /* the best row when scanned (embedding row, or finding i of the study) */
} store_hit_t;

/* The studies whose best series is most similar to q (dim floats), best
 * first, at most k of them into hits (sorted), *total: how many listed
 * studies have a series (of one of the modalities, when modality is not
 * NULL; case-insensitive). Returns the number of hits, -1 out of memory. */
long store_search(const float *q, const char *modality, size_t k, store_hit_t *hits, size_t *total);
/* The studies whose best finding named label (case-insensitive) has at
 * least min_p (optionally of one label set / modality), best first. */
long store_findings(const char *label, double min_p, const char *label_set, const char *modality,
                    size_t k, store_hit_t *hits, size_t *total);
/* With g.mu held (rows cannot change then): a study's best finding (its
 * index i, its probability in *p) for a findings query, or its best
 * embedding row for
 * a search (the similarity in *score); STORE_NO_ROW when none matches. The
 * answers re-check the scans' hits with these under g.mu, as the study may
 * have changed in between. */
int32_t store_best_finding_locked(const struct study *s, const char *label, double min_p,
                                  const char *label_set, const char *modality, double *p);
int32_t store_best_embedding_locked(const struct study *s, const float *q, const char *modality,
                                    double *score);
/* Whether a study has a finding of label_set / an embedding or finding of
 * modality (NULL: any). */
int store_study_has_locked(const struct study *s, const char *label_set, const char *modality);

/* Memory held by the store, in bytes (for status). */
size_t store_bytes(void);

#endif
