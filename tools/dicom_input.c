/* DICOM files and folders as model input for `unimed embed-image`:
 * collect into series, embed each image series (plugin/analysis.c). */
#include "dicom_input.h"

#include <stdio.h>
#include <stdlib.h>

#include "analysis.h"

static void warn_stderr(void *ctx, const char *message) {
  (void)ctx;
  fprintf(stderr, "unimed: %s\n", message);
}

int dicom_embed_series(unimed_model *m, const char *const *paths, int n_paths, int max_slices,
                       series_callback cb, void *ctx) {
  udcm_collection col;
  char err[512];
  if (udcm_collect(paths, n_paths, NULL, warn_stderr, NULL, &col, err, sizeof err) != 0) {
    fprintf(stderr, "unimed: %s\n", err);
    return 1;
  }
  int embedded = 0, failed = col.n_skipped > 0;
  for (int i = 0; i < col.n_series; i++) {
    const udcm_series *s = &col.series[i];
    if (!s->is_image) {
      fprintf(stderr, "unimed: series %s (%s): no images, skipped\n", s->series_uid, s->modality);
      continue;
    }
    unimed_series_embedding w;
    if (unimed_series_embed(m, s, max_slices, &w, err, sizeof err) != 0) {
      fprintf(stderr, "unimed: %s\n", err);
      failed = 1;
      continue;
    }
    series_embedding out = {s, w.frames, w.n_frames, w.frame_embeddings, w.embedding};
    if (cb(&out, ctx) == 0) embedded++;
    unimed_series_embedding_free(&w);
  }
  if (col.n_files == 0) fprintf(stderr, "unimed: no files found\n");
  else if (embedded == 0) fprintf(stderr, "unimed: no image series could be embedded\n");
  udcm_collection_free(&col);
  return embedded > 0 && !failed ? 0 : 1;
}
