/* unimed evaluate: zero-shot metrics of a model on labelled DICOM study
 * archives (accuracy, balanced accuracy, ROC AUC, confusion matrix). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_util.h"
#include "commands.h"
#include "dataset.h"
#include "evaluate.h"

static void help_evaluate(FILE *out) {
  fprintf(out,
          "usage: unimed evaluate --model DIR --archive ZIP|DIR [--archive ...] --labels CSV\n"
          "                       --label-set FILE [--key COLUMN] [--max-slices K]\n"
          "                       [--threads N] [--precision fp32|bf16|int8] [--verbose]\n\n"
          "Zero-shot evaluation: class embeddings from the label set's prompts, one\n"
          "embedding per CSV row (the mean of up to K frames per image series, default 8,\n"
          "as `unimed analyze`), the label set's scoring, and the arg-max as prediction.\n"
          "The CSV has a key column (StudyInstanceUID, AccessionNumber, SeriesInstanceUID or\n"
          "SOPInstanceUID) and a 'label' column with names (or synonyms) of the set's labels\n"
          "('|' between several). Prints one JSON object: n, accuracy, balanced_accuracy,\n"
          "auc (mean one-vs-rest ROC AUC), auc_per_label, labels, confusion_matrix\n"
          "(rows: true label, columns: prediction), the precision that ran and what was\n"
          "skipped.\n");
}

static void log_stderr(void *ctx, const char *line) {
  if (ctx) fprintf(stderr, "unimed: %s\n", line);
}

static void count_skips(void *ctx, const char *line) {
  cJSON *arr = ctx;
  cJSON_AddItemToArray(arr, cJSON_CreateString(line));
}

int cmd_evaluate(int argc, char **argv) {
  const char *model = NULL, *labels = NULL, *set_path = NULL, *key = NULL;
  const char **archives = calloc((size_t)argc, sizeof(char *));
  int n_arch = 0, max_slices = 8, threads = 0, verbose = 0, rc = 0;
  unimed_load_options lo = {.precision = UNIMED_PRECISION_FP32};
  for (int i = 1; i < argc && rc == 0; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (cli_is_help(a)) {
      help_evaluate(stdout);
      free(archives);
      return 0;
    }
    if (!strcmp(a, "--model") && v) model = v, i++;
    else if (!strcmp(a, "--archive") && v) archives[n_arch++] = v, i++;
    else if (!strcmp(a, "--labels") && v) labels = v, i++;
    else if (!strcmp(a, "--label-set") && v) set_path = v, i++;
    else if (!strcmp(a, "--key") && v) key = v, i++;
    else if (!strcmp(a, "--verbose")) verbose = 1;
    else if (!strcmp(a, "--max-slices") && v) {
      if ((max_slices = cli_parse_positive(a, v)) < 0) rc = 2;
      i++;
    } else if (!strcmp(a, "--threads") && v) {
      if ((threads = cli_parse_positive(a, v)) < 0) rc = 2;
      i++;
    } else if (!strcmp(a, "--precision") && v) {
      if (unimed_precision_parse(v, &lo.precision) != 0) {
        fprintf(stderr, "unimed: --precision takes fp32, bf16 or int8, got '%s'\n", v);
        rc = 2;
      }
      i++;
    } else {
      fprintf(stderr, "unimed: unknown option or missing value: '%s'\n\n", a);
      help_evaluate(stderr);
      rc = 2;
    }
  }
  if (rc == 0 && (!model || !n_arch || !labels || !set_path)) {
    fprintf(stderr, "unimed: evaluate needs --model, --archive, --labels and --label-set\n\n");
    help_evaluate(stderr);
    rc = 2;
  }
  if (rc) {
    free(archives);
    return rc;
  }
  if (threads) unimed_set_threads(threads);
  char err[1024];
  unimed_model *m = unimed_model_load_opts(model, &lo, err, sizeof err);
  unimed_label_set *ls = m ? unimed_label_set_load(set_path, err, sizeof err) : NULL;
  if (!m || !ls) {
    fprintf(stderr, "unimed: %s\n", err);
    unimed_model_free(m);
    free(archives);
    return 1;
  }
  const unimed_config *c = unimed_model_config(m);
  ut_load_opts o = {0};
  o.archives = archives;
  o.n_archives = n_arch;
  o.labels_csv = labels;
  o.key_column = key;
  o.sets = &ls;
  o.n_sets = 1;
  o.image_size = c->image_size;
  memcpy(o.mean, c->mean, sizeof o.mean);
  memcpy(o.std, c->std, sizeof o.std);
  o.frames_per_series = max_slices;
  o.require_label = 1;
  o.log = log_stderr;
  o.log_ctx = verbose ? (void *)1 : NULL;
  ut_dataset d;
  double t0 = cli_now_ms();
  if (ut_dataset_load(&d, &o, err, sizeof err) != 0) {
    ut_skips_report(&d.skips, log_stderr, (void *)1);
    fprintf(stderr, "unimed: %s\n", err);
    unimed_label_set_free(ls);
    unimed_model_free(m);
    free(archives);
    return 1;
  }
  ut_metrics mt;
  cJSON *js = NULL;
  if (ut_evaluate(m, &d, 0, 32, &mt, &js, err, sizeof err) != 0) {
    fprintf(stderr, "unimed: %s\n", err);
    rc = 1;
  } else {
    cJSON *skipped = cJSON_CreateArray();
    ut_skips_report(&d.skips, count_skips, skipped);
    cJSON_AddItemToObject(js, "skipped", skipped);
    cJSON_AddStringToObject(js, "model", c->name);
    cJSON_AddStringToObject(js, "model_hash", unimed_model_hash(m));
    cJSON_AddStringToObject(js, "precision", unimed_precision_name(unimed_model_precision(m)));
    cJSON_AddNumberToObject(js, "images", d.n_images);
    cJSON_AddNumberToObject(js, "seconds", (cli_now_ms() - t0) / 1000.0);
    cli_print_json(js);
    ut_metrics_free(&mt);
  }
  ut_dataset_free(&d);
  unimed_label_set_free(ls);
  unimed_model_free(m);
  free(archives);
  return rc;
}
