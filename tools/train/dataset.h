/* Training and evaluation data for unimed-train and `unimed evaluate`:
 * Orthanc study archives (ZIP, read with libzip) or DICOM folders, a labels
 * CSV, label sets, and every image decoded once through the DICOM-in
 * pipeline (udcm_frame_tensor) into an in-memory cache of model inputs.
 *
 * One "row" is one line of the labels CSV that matched images: its labels
 * (indices into one label set), its report text (CSV "report" column and
 * the text of SR documents of the same study) and its images (frames).
 * Everything that is dropped is counted with its reason (ut_skips) and
 * reported through a log callback; nothing here exits or aborts. */
#ifndef UNIMED_TRAIN_DATASET_H
#define UNIMED_TRAIN_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "orthanc_source.h"
#include "unimed_model.h"

#define UT_MAX_LABELS 8

/* UT_KEY_ORTHANC (column OrthancStudyID): studies read with --orthanc only. */
enum ut_key { UT_KEY_STUDY, UT_KEY_ACCESSION, UT_KEY_SERIES, UT_KEY_SOP, UT_KEY_ORTHANC };

typedef struct {
  char key[72];          /* the CSV key value */
  char study_uid[65];
  char modality[17], body_part[65], sop_class[65];
  int set;               /* label set of the labels, -1 none */
  int n_labels;
  int labels[UT_MAX_LABELS]; /* indices into sets[set]->labels */
  char *report;          /* CSV report column (NULL when empty) */
  char *sr_text;         /* text of SR documents of the same study (NULL when none) */
  char *label_text;      /* the CSV label field as written (NULL when empty) */
  int valid;             /* internal: kept after loading */
  int first_image, n_images; /* images of the row in the cache (contiguous) */
} ut_row;

/* Why things were dropped. */
typedef struct {
  int archives_unreadable;  /* not a ZIP / folder, or unreadable */
  int entries_unreadable;   /* ZIP entries that could not be extracted */
  int files_not_dicom;      /* not DICOM, or a corrupt header */
  int frames_undecodable;   /* pixel data that failed to decode */
  int series_not_image;     /* no pixel data (SR, ...): used as report text if SR */
  int sr_own;               /* SRs written by this project (UniMed for Orthanc): never report
                               text unless include_own_sr */
  int sr_no_text;           /* SRs with neither report TEXT items nor TID 1500 findings */
  int series_wsi;           /* whole-slide series (not used for training) */
  int images_unmatched;     /* images whose key is not in the CSV */
  int rows_no_images;       /* CSV rows that matched no image */
  int rows_bad_label;       /* CSV rows with a label that no label set knows */
  int rows_no_caption;      /* CSV rows with neither label nor report */
  int csv_bad_lines;        /* malformed CSV lines */
  int orthanc_studies_unreadable; /* --orthanc studies that could not be fetched */
} ut_skips;

typedef void (*ut_log_fn)(void *ctx, const char *line);

typedef struct {
  const char *const *archives; /* ZIP files or folders (a DICOMDIR file means its folder);
                                  folders are walked recursively, ZIPs inside them read as
                                  archives */
  int n_archives;
  const ut_orthanc_opts *orthanc; /* studies straight from Orthanc (NULL: none) */
  int include_own_sr;          /* use SRs written by this project as report text (self-training
                                  experiments only; off by default) */
  const char *labels_csv;
  const char *key_column;      /* NULL: the first of StudyInstanceUID, AccessionNumber,
                                  SeriesInstanceUID, SOPInstanceUID in the header */
  unimed_label_set *const *sets; /* may be 0: labels are used as their own captions */
  int n_sets;
  int image_size;              /* model input side */
  float mean[3], std[3];
  int frames_per_series;       /* frames taken per image series (udcm_series_pick_frames) */
  int require_label;           /* evaluation: rows without a known label are dropped */
  ut_log_fn log;               /* may be NULL */
  void *log_ctx;
} ut_load_opts;

typedef struct {
  ut_row *rows;
  int n_rows;
  int n_images;
  int size;                 /* image side */
  float *pixels;            /* n_images x 3 x size x size */
  int *image_row;           /* row of each image */
  ut_skips skips;
  unimed_label_set *const *sets;
  int n_sets;
} ut_dataset;

/* Loads the data. Returns 0 when at least one row has images and a
 * caption source; -1 with a clear message in err otherwise (or on I/O /
 * memory failure). */
int ut_dataset_load(ut_dataset *d, const ut_load_opts *o, char *err, size_t errlen);
void ut_dataset_free(ut_dataset *d);
/* A fingerprint of what training sees: every row's key, labels, label set,
 * report and SR text, and every cached image tensor, in order. Two loads
 * give the same value only when they give the same samples and captions. */
uint64_t ut_dataset_fingerprint(const ut_dataset *d);
/* One line per non-zero skip counter. */
void ut_skips_report(const ut_skips *s, ut_log_fn log, void *ctx);

/* ---- captions ---- */

/* Deterministic counter-based random numbers (SplitMix64 of the inputs). */
uint64_t ut_hash3(uint64_t a, uint64_t b, uint64_t c);
static inline double ut_unit(uint64_t h) { return (double)(h >> 11) * (1.0 / 9007199254740992.0); }

/* The caption of a row for draw `h` (a random 64-bit value): the report
 * text (CSV or SR) and/or a label caption (a random prompt of the label,
 * i.e. a template applied to its name or a synonym; several labels are
 * joined into one template). Returns a malloc'd string. */
char *ut_caption(const ut_dataset *d, const ut_row *r, uint64_t h);
/* The class of that caption for label-aware targets (umt_clip_loss groups):
 * the same non-zero value for every caption drawn from the same labels of
 * the same label set, 0 when draw h is the row's report text. */
uint64_t ut_caption_group(const ut_row *r, uint64_t h);
/* Every text a caption can be built from (for the vocabulary builder):
 * calls fn once per text. */
void ut_caption_corpus(const ut_dataset *d, void (*fn)(void *ctx, const char *text), void *ctx);

/* ---- CSV (exposed for the tests) ---- */

/* Parses one RFC 4180 record starting at *p (quoted fields, "" escapes,
 * CRLF or LF); fields are written NUL-terminated into buf (cap bytes) and
 * pointed to by fields (at most max). Returns the number of fields, 0 at
 * the end of input, -1 when the record does not fit. *p moves past it. */
int ut_csv_record(const char **p, const char *end, char *buf, size_t cap, char **fields,
                  int max);

#endif
