/* Zero-shot evaluation of a model on a dataset (dataset.h): class
 * embeddings from a label set's prompts (unimed_label_set_embed), one
 * embedding per row (the normalised mean of its frames' embeddings, as
 * unimed_series_embed does for a series), probabilities by
 * unimed_label_set_score, and the usual metrics. */
#ifndef UNIMED_TRAIN_EVALUATE_H
#define UNIMED_TRAIN_EVALUATE_H

#include <cjson/cJSON.h>

#include "dataset.h"

typedef struct {
  int n, n_classes;
  double accuracy, balanced_accuracy, auc; /* auc: mean of the one-vs-rest AUCs defined */
  double auc_per_class[64];                /* NaN when a class has no positives or negatives */
  int *confusion;                          /* n_classes x n_classes, [truth][prediction] */
} ut_metrics;

/* Metrics from per-row probabilities (n x n_classes) and truths (labels
 * of each row: truth[i*UT_MAX_LABELS ...], n_truth[i]). Accuracy counts a
 * row right when the arg-max is one of its labels; the confusion matrix and
 * the balanced accuracy use its first label; AUCs are one-vs-rest (a row is
 * positive for every one of its labels). */
int ut_metrics_compute(const float *probs, const int *truth, const int *n_truth, int n,
                       int n_classes, ut_metrics *m);
void ut_metrics_free(ut_metrics *m);
/* ROC AUC of scores against 0/1 labels (ties get half credit); NaN when
 * one class is empty. */
double ut_roc_auc(const float *scores, const int *positive, int n);

/* Evaluates the rows of `set` (an index into d->sets). *json (may be NULL)
 * receives {"label_set", "n", "accuracy", "balanced_accuracy", "auc",
 * "auc_per_label", "labels", "confusion_matrix"}. Returns 0, or -1 with err
 * (e.g. no rows of that set). */
int ut_evaluate(unimed_model *model, const ut_dataset *d, int set, int batch, ut_metrics *m,
                cJSON **json, char *err, size_t errlen);

#endif
