/* DICOM files and folders as model input, for the `unimed` subcommands. */
#ifndef UNIMED_DICOM_INPUT_H
#define UNIMED_DICOM_INPUT_H

#include "unimed_dicom.h"
#include "unimed_model.h"

typedef struct {
  const udcm_series *series;
  const udcm_frame_ref *frames;   /* the frames used, in slice order */
  int n_frames;
  const float *frame_embeddings;  /* n_frames x embed_dim, normalised */
  const float *embedding;         /* the series: mean of the frames, renormalised */
} series_embedding;

typedef int (*series_callback)(const series_embedding *s, void *ctx);

/* Collects the DICOM files under paths into series and, for every image
 * series, preprocesses up to max_slices frames, encodes them as one batch
 * and calls cb. Skipped files and series are reported on stderr. Returns 0
 * when at least one series was embedded and nothing failed, 1 otherwise. */
int dicom_embed_series(unimed_model *m, const char *const *paths, int n_paths, int max_slices,
                       series_callback cb, void *ctx);

#endif
