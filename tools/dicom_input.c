/* DICOM files and folders as model input: collect, pick frames, preprocess,
 * encode, aggregate per series. */
#include "dicom_input.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void warn_stderr(void *ctx, const char *message) {
  (void)ctx;
  fprintf(stderr, "unimed: %s\n", message);
}

/* Preprocesses and encodes the chosen frames of one series. */
static int embed_one(unimed_model *m, const udcm_series *s, int max_slices, series_callback cb,
                     void *ctx) {
  const unimed_config *c = unimed_model_config(m);
  const int S = c->image_size, E = c->embed_dim;
  const size_t per = (size_t)3 * S * S;
  udcm_frame_ref *frames = calloc((size_t)max_slices, sizeof *frames);
  float *pixels = malloc((size_t)max_slices * per * sizeof(float));
  float *emb = malloc((size_t)max_slices * E * sizeof(float));
  float *series_emb = malloc((size_t)E * sizeof(float));
  int rc = 1, n = frames ? udcm_series_pick_frames(s, max_slices, frames) : -1;
  char err[512];
  if (!pixels || !emb || !series_emb || n < 0) {
    fprintf(stderr, "unimed: series %s: out of memory\n", s->series_uid);
    goto done;
  }
  /* Frames of one instance are decoded through one open handle. */
  udcm_handle *h = NULL;
  int open_instance = -1;
  for (int i = 0; i < n; i++) {
    if (frames[i].instance != open_instance) {
      udcm_close(h);
      open_instance = frames[i].instance;
      h = udcm_open_file(s->instances[open_instance].path, NULL, err, sizeof err);
      if (!h) {
        fprintf(stderr, "unimed: %s\n", err);
        goto done;
      }
    }
    if (udcm_frame_tensor(h, frames[i].frame, NULL, S, c->mean, c->std, pixels + (size_t)i * per,
                          NULL, err, sizeof err) != 0) {
      fprintf(stderr, "unimed: %s (frame %u)\n", err, frames[i].frame);
      udcm_close(h);
      goto done;
    }
  }
  udcm_close(h);
  if (unimed_encode_images(m, pixels, n, emb, err, sizeof err) != 0) {
    fprintf(stderr, "unimed: series %s: %s\n", s->series_uid, err);
    goto done;
  }
  /* Series embedding: the mean of the normalised frame embeddings,
   * renormalised — the same arithmetic as a prompt ensemble. */
  unimed_prompt_ensemble(emb, n, E, series_emb);
  series_embedding out = {s, frames, n, emb, series_emb};
  rc = cb(&out, ctx) == 0 ? 0 : 1;
done:
  free(frames);
  free(pixels);
  free(emb);
  free(series_emb);
  return rc;
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
    if (embed_one(m, s, max_slices, cb, ctx) == 0)
      embedded++;
    else
      failed = 1;
  }
  if (col.n_files == 0) fprintf(stderr, "unimed: no files found\n");
  else if (embedded == 0) fprintf(stderr, "unimed: no image series could be embedded\n");
  udcm_collection_free(&col);
  return embedded > 0 && !failed ? 0 : 1;
}
