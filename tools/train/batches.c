/* unimed-train's batches (batches.h): the sample order of each epoch and
 * the images and token ids of one micro-batch. */
#include "batches.h"

#include <stdlib.h>
#include <string.h>

#include "augment.h"

int ut_batcher_init(ut_batcher *b, const ut_dataset *d, const ut_hparams *h, int B, int ctx,
                    const float mean[3], const float stdv[3]) {
  memset(b, 0, sizeof *b);
  b->d = d;
  b->h = h;
  b->epoch = -1;
  b->ctx = ctx;
  b->B = B;
  memcpy(b->mean, mean, sizeof b->mean);
  memcpy(b->std, stdv, sizeof b->std);
  const int S = d->size;
  b->order = malloc((size_t)d->n_images * sizeof(int));
  b->pixels = malloc((size_t)B * 3 * S * S * sizeof(float));
  b->ids = calloc((size_t)B, sizeof(int *));
  b->lens = calloc((size_t)B, sizeof(int));
  b->groups = calloc((size_t)B, sizeof(uint64_t));
  for (int j = 0; b->ids && j < B; j++) b->ids[j] = malloc((size_t)ctx * sizeof(int));
  if (!b->order || !b->pixels || !b->ids || !b->lens || !b->groups) return -1;
  for (int j = 0; j < B; j++)
    if (!b->ids[j]) return -1;
  return 0;
}

void ut_batcher_free(ut_batcher *b) {
  for (int j = 0; b->ids && j < b->B; j++) free(b->ids[j]);
  free(b->ids);
  free(b->lens);
  free(b->groups);
  free(b->order);
  free(b->pixels);
  memset(b, 0, sizeof *b);
}

int ut_epoch_order(ut_batcher *b, int epoch) {
  const ut_dataset *d = b->d;
  const int N = d->n_images;
  uint64_t seed = b->h->seed;
  if (!b->h->balance) {
    for (int i = 0; i < N; i++) b->order[i] = i;
    for (int i = N - 1; i > 0; i--) {
      int j = (int)(ut_hash3(seed, (uint64_t)epoch, (uint64_t)i) % (uint64_t)(i + 1));
      int t = b->order[i];
      b->order[i] = b->order[j];
      b->order[j] = t;
    }
  } else {
    /* class of an image: (set, first label); report-only rows are a class of their own */
    double *cum = malloc((size_t)N * sizeof(double));
    int *cls = malloc((size_t)N * sizeof(int));
    int ncls = (d->n_sets + 1) * 65;
    int *cnt = calloc((size_t)ncls, sizeof(int)), *set_n = calloc((size_t)d->n_sets + 1, sizeof(int)),
        *set_k = calloc((size_t)d->n_sets + 1, sizeof(int));
    if (!cum || !cls || !cnt || !set_n || !set_k) {
      free(cum), free(cls), free(cnt), free(set_n), free(set_k);
      return -1;
    }
    for (int i = 0; i < N; i++) {
      const ut_row *r = &d->rows[d->image_row[i]];
      int s = r->set < 0 ? d->n_sets : r->set;
      int l = r->n_labels ? (r->labels[0] < 64 ? r->labels[0] : 63) : 64;
      cls[i] = s * 65 + l;
      if (cnt[cls[i]]++ == 0) set_k[s]++;
      set_n[s]++;
    }
    double acc = 0;
    for (int i = 0; i < N; i++) {
      int s = cls[i] / 65;
      acc += (double)set_n[s] / set_k[s] / cnt[cls[i]];
      cum[i] = acc;
    }
    for (int i = 0; i < N; i++) {
      double u = ut_unit(ut_hash3(seed, (uint64_t)epoch, (uint64_t)i + 0x5eed0000ull)) * acc;
      int lo = 0, hi = N - 1;
      while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (cum[mid] > u) hi = mid;
        else lo = mid + 1;
      }
      b->order[i] = lo;
    }
    free(cum), free(cls), free(cnt), free(set_n), free(set_k);
  }
  b->epoch = epoch;
  return 0;
}

int ut_make_batch(ut_batcher *b, const unimed_vocab *tok, int epoch, int pos, int B, char *err,
                      size_t errlen) {
  const ut_dataset *d = b->d;
  const int S = d->size;
  const size_t per = (size_t)3 * S * S;
  for (int j = 0; j < B; j++) {
    int p = pos + j, img = b->order[p];
    uint64_t h = ut_hash3(b->h->seed ^ 0xca97105ull, (uint64_t)epoch, (uint64_t)p);
    const float *src = d->pixels + (size_t)img * per;
    float *dst = b->pixels + (size_t)j * per;
    ut_augment(src, dst, S, b->h, b->mean, b->std, h);
    char *cap = ut_caption(d, &d->rows[d->image_row[img]], h);
    if (!cap) {
      snprintf(err, errlen, "out of memory");
      return -1;
    }
    int n = unimed_vocab_tokenize(tok, cap, b->ids[j], b->ctx, err, errlen);
    free(cap);
    if (n < 0) return -1;
    b->lens[j] = n;
    b->groups[j] = ut_caption_group(&d->rows[d->image_row[img]], h);
  }
  return 0;
}
