/* unimed-train's command line (train_options.h): parsing, defaults, usage. */
#include "train_options.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "unimed_train.h"

void ut_usage(FILE *out) {
  fprintf(out,
          "usage: unimed-train [--archive ZIP|DIR ...] [ZIP|DIR ...] [--orthanc URL ...]\n"
          "                    --labels CSV [--label-set FILE ...]\n"
          "                    (--init MODEL_DIR | --config small|tiny|FILE\n"
          "                    [--vocab VOCAB_TXT] [--vocab-size N]) --out DIR [options]\n\n"
          "Trains UniMed-CLIP contrastively on DICOM study archives. Captions come from the\n"
          "CSV labels through the label sets' templates and synonyms (a random prompt per\n"
          "epoch), and from report text (CSV 'report' column, SR documents of the study).\n\n"
          "data (any number of inputs, any mix):\n"
          "  --archive ZIP|DIR     an Orthanc archive ZIP (/studies/{id}/archive, /patients/...,\n"
          "                        /tools/create-archive or -media), a DICOMDIR, or a folder walked\n"
          "                        recursively: its DICOM files and every ZIP inside it (e.g. a\n"
          "                        folder of per-study archives). Repeatable, no limit.\n"
          "  ZIP|DIR ...           positional arguments are inputs like --archive\n"
          "  --orthanc URL         read the studies straight from a running Orthanc (REST, nothing\n"
          "                        exported); the credentials come from --orthanc-credentials FILE\n"
          "                        (one line user:password) or UNIMED_ORTHANC_USER and\n"
          "                        UNIMED_ORTHANC_PASSWORD, never from the command line\n"
          "  --orthanc-modality M  only studies with modality M (ModalitiesInStudy)\n"
          "  --orthanc-date RANGE  only studies of StudyDate RANGE (YYYYMMDD-YYYYMMDD)\n"
          "  --orthanc-label L     only studies carrying Orthanc label L (repeatable; Orthanc >= 1.12)\n"
          "  --orthanc-query JSON  more /tools/find Query fields, e.g. '{\"PatientName\":\"ANON*\"}'\n"
          "  --labels CSV          key column (StudyInstanceUID, AccessionNumber,\n"
          "                        SeriesInstanceUID, SOPInstanceUID, or OrthancStudyID with\n"
          "                        --orthanc), 'label' (several separated by '|') and/or 'report';\n"
          "                        anonymised Orthanc studies also match their original's keys\n"
          "  --include-own-sr      also use SRs written by UniMed for Orthanc (its own AI findings)\n"
          "                        as report text: for self-training experiments only\n"
          "  --key COLUMN          which key column to use (default: the first present)\n"
          "  --label-set FILE      label set(s) the labels belong to (repeatable)\n"
          "  --val-archive, --val-labels   validation data (zero-shot metrics each epoch)\n"
          "  --frames-per-series K frames taken from each image series (default 1)\n"
          "  --eval-frames K       frames per series for validation (default 8)\n"
          "  --augment             random resized crop (area 0.8-1, aspect 3/4-4/3)\n"
          "  --crop-area A         smallest area the crop keeps (default 0.8; implies --augment)\n"
          "  --flip                mirror images left-right at random (not for lateralised views)\n"
          "  --jitter F            random brightness and contrast change up to +-F (e.g. 0.1)\n"
          "  --balance             sample the labels of each label set equally often\n"
          "model:\n"
          "  --init DIR            start from a model directory (e.g. converted UniMed-CLIP)\n"
          "  --config small|tiny|FILE   train from scratch (FILE: config.json's shape)\n"
          "  --vocab FILE          vocabulary for --config (default: built from the captions)\n"
          "  --vocab-size N        maximum size of a built vocabulary (default 4000)\n"
          "  --name S, --version S model_name / model_version written to config.json\n"
          "  --mode full|lock-image|projections   what is trained (default full)\n"
          "optimisation:\n"
          "  --epochs N (10) --batch N (32, per micro-batch and rank) --accumulate N (1)\n"
          "  --lr X (5e-4) --wd X (0.1) --warmup N (steps, 50) --grad-clip X (1.0)\n"
          "  --seed N (0) --threads N (BLAS threads)\n"
          "  --label-aware         captions of the same labels in a batch count as matches of\n"
          "                        each other's images (UniCL targets) instead of negatives\n"
          "run:\n"
          "  --out DIR             output model directory (checkpoint each epoch)\n"
          "  --resume DIR          continue a run from its checkpoint (same options)\n"
          "  --max-steps N         stop after N optimiser steps (checkpoint written)\n"
          "  --keep-best           also keep the best validation epoch in OUT/best\n"
          "  --quiet               no progress bar\n\n"
          "One optimiser step takes batch x accumulate x ranks samples. Under mpirun each\n"
          "rank computes its share of the micro-batches; gradients are summed over the\n"
          "ranks (MPI_Allreduce) before the step, so -np R --accumulate A follows the\n"
          "single-process run with --accumulate R*A.\n");
}

static int parse_int(const char *opt, const char *v, int lo, int *out) {
  char *end;
  errno = 0;
  long x = strtol(v, &end, 10);
  if (errno || *end || x < lo || x > 1000000000) {
    fprintf(stderr, "unimed-train: %s takes an integer >= %d, got '%s'\n", opt, lo, v);
    return -1;
  }
  *out = (int)x;
  return 0;
}

static int parse_float(const char *opt, const char *v, float *out) {
  char *end;
  errno = 0;
  double x = strtod(v, &end);
  if (errno || *end || !(x >= 0) || isinf(x)) {
    fprintf(stderr, "unimed-train: %s takes a number >= 0, got '%s'\n", opt, v);
    return -1;
  }
  *out = (float)x;
  return 0;
}

/* Defaults: the trainer's optimiser defaults (unimed_trainer_default_params)
 * and the command line's own. Lists get room for every argument; they are
 * static so that they stay reachable until exit. */
static int set_defaults(ut_options *o, int argc) {
  memset(o, 0, sizeof *o);
  const unimed_trainer_params d = unimed_trainer_default_params();
  ut_hparams *h = &o->h;
  h->epochs = 10;
  h->batch = 32;
  h->accumulate = 1;
  h->warmup = d.warmup;
  h->lr = d.lr;
  h->wd = d.weight_decay;
  h->grad_clip = d.grad_clip;
  h->beta1 = d.beta1;
  h->beta2 = d.beta2;
  h->eps = d.eps;
  h->mode = (int32_t)d.mode;
  h->frames_per_series = 1;
  h->crop_area = 0.8f;
  o->vocab_size = 4000;
  o->eval_frames = 8;
  static const char **lists[4];
  for (int k = 0; k < 4; k++)
    if (!(lists[k] = calloc((size_t)argc + 1, sizeof(char *)))) {
      fprintf(stderr, "unimed-train: out of memory\n");
      return -1;
    }
  o->archives = lists[0], o->val_archives = lists[1], o->sets = lists[2];
  o->orthanc_labels = lists[3];
  return 0;
}

/* The options that take a value checked beyond its type. a: the option,
 * v: its value. 1 when a is one of them, 0 when not, -1 on a bad value. */
static int parse_checked(ut_hparams *h, const char *a, const char *v) {
  if (!strcmp(a, "--jitter")) {
    if (parse_float(a, v, &h->jitter) != 0) return -1;
    if (h->jitter >= 1.0f) {
      fprintf(stderr, "unimed-train: --jitter takes a fraction below 1, got '%s'\n", v);
      return -1;
    }
    return 1;
  }
  if (!strcmp(a, "--crop-area")) {
    if (parse_float(a, v, &h->crop_area) != 0) return -1;
    if (!(h->crop_area > 0.05f && h->crop_area <= 1.0f)) {
      fprintf(stderr, "unimed-train: --crop-area takes a fraction in (0.05, 1], got '%s'\n", v);
      return -1;
    }
    h->augment = 1;
    return 1;
  }
  if (!strcmp(a, "--seed")) {
    char *end;
    h->seed = strtoull(v, &end, 10);
    if (*end) {
      fprintf(stderr, "unimed-train: --seed takes an integer, got '%s'\n", v);
      return -1;
    }
    return 1;
  }
  if (!strcmp(a, "--mode")) {
    unimed_train_mode mode;
    if (unimed_train_mode_parse(v, &mode) != 0) {
      fprintf(stderr, "unimed-train: --mode takes full, lock-image or projections\n");
      return -1;
    }
    h->mode = (int32_t)mode;
    return 1;
  }
  return 0;
}

/* One option at argv[*i] (and its value, *i moved past it): 0, or -1 after
 * printing why. */
static int parse_option(ut_options *o, int argc, char **argv, int *i) {
  ut_hparams *h = &o->h;
  const char *a = argv[*i], *v = *i + 1 < argc ? argv[*i + 1] : NULL;
  int iv = 0;
#define LIST(flag, arr, n)      \
  if (!strcmp(a, flag) && v) { \
    o->arr[o->n++] = v, ++*i;  \
    return 0;                  \
  }
#define STR(flag, field)        \
  if (!strcmp(a, flag) && v) {  \
    o->field = v, ++*i;         \
    return 0;                   \
  }
#define INT(flag, field, lo)                             \
  if (!strcmp(a, flag) && v) {                           \
    if (parse_int(flag, v, lo, &iv) != 0) return -1;     \
    field = iv, ++*i;                                    \
    return 0;                                            \
  }
#define FLAG(flag, field) \
  if (!strcmp(a, flag)) {  \
    field = 1;             \
    return 0;              \
  }
#define FLT(flag, field)                                 \
  if (!strcmp(a, flag) && v) {                           \
    if (parse_float(flag, v, &field) != 0) return -1;    \
    ++*i;                                                \
    return 0;                                            \
  }
  if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
    ut_usage(stdout);
    exit(0);
  }
  LIST("--archive", archives, n_archives)
  LIST("--val-archive", val_archives, n_val_archives)
  LIST("--label-set", sets, n_sets)
  LIST("--orthanc-label", orthanc_labels, n_orthanc_labels)
  STR("--orthanc", orthanc)
  STR("--orthanc-credentials", orthanc_credentials)
  STR("--orthanc-modality", orthanc_modality)
  STR("--orthanc-date", orthanc_date)
  STR("--orthanc-query", orthanc_query)
  FLAG("--include-own-sr", o->include_own_sr)
  if (!strncmp(a, "--orthanc", 9) && strchr(a, '@')) {
    fprintf(stderr, "unimed-train: credentials are never taken from the command line; use "
                    "--orthanc-credentials FILE or UNIMED_ORTHANC_USER/UNIMED_ORTHANC_PASSWORD\n");
    return -1;
  }
  STR("--labels", labels)
  STR("--val-labels", val_labels)
  STR("--key", key)
  STR("--init", init)
  STR("--config", config)
  STR("--vocab", vocab)
  STR("--out", out)
  STR("--resume", resume)
  STR("--name", name)
  STR("--version", version)
  INT("--epochs", h->epochs, 1)
  INT("--batch", h->batch, 2)
  INT("--accumulate", h->accumulate, 1)
  INT("--warmup", h->warmup, 0)
  INT("--frames-per-series", h->frames_per_series, 1)
  INT("--eval-frames", o->eval_frames, 1)
  INT("--threads", o->threads, 1)
  INT("--max-steps", o->max_steps, 1)
  INT("--vocab-size", o->vocab_size, 64)
  FLT("--lr", h->lr)
  FLT("--wd", h->wd)
  FLT("--grad-clip", h->grad_clip)
  if (v) {
    int rc = parse_checked(h, a, v);
    if (rc != 0) {
      if (rc > 0) ++*i;
      return rc > 0 ? 0 : -1;
    }
  }
  FLAG("--flip", h->flip)
  FLAG("--label-aware", h->label_aware)
  FLAG("--augment", h->augment)
  FLAG("--balance", h->balance)
  FLAG("--keep-best", o->keep_best)
  FLAG("--quiet", o->quiet)
#undef LIST
#undef STR
#undef INT
#undef FLT
#undef FLAG
  if (a[0] != '-') { /* positional: an input like --archive */
    o->archives[o->n_archives++] = a;
    return 0;
  }
  fprintf(stderr, "unimed-train: unknown option or missing value: '%s'\n\n", a);
  ut_usage(stderr);
  return -1;
}

/* The rules between options. */
static int check_options(const ut_options *o) {
  if (o->orthanc && strchr(o->orthanc, '@')) {
    fprintf(stderr, "unimed-train: --orthanc URL must not hold credentials (they would be seen "
                    "by every user of the machine); use --orthanc-credentials FILE or "
                    "UNIMED_ORTHANC_USER/UNIMED_ORTHANC_PASSWORD\n");
    return -1;
  }
  if (!o->orthanc && (o->orthanc_credentials || o->orthanc_modality || o->orthanc_date ||
                      o->orthanc_query || o->n_orthanc_labels)) {
    fprintf(stderr, "unimed-train: the --orthanc-* options need --orthanc URL\n");
    return -1;
  }
  if ((!o->n_archives && !o->orthanc) || !o->labels || !o->out) {
    fprintf(stderr, "unimed-train: needs inputs (--archive, positional, or --orthanc), --labels "
                    "and --out\n\n");
    ut_usage(stderr);
    return -1;
  }
  int sources = (o->init != NULL) + (o->config != NULL) + (o->resume != NULL);
  if (sources != 1) {
    fprintf(stderr, "unimed-train: give exactly one of --init, --config and --resume\n");
    return -1;
  }
  if ((o->val_labels != NULL) != (o->n_val_archives > 0)) {
    fprintf(stderr, "unimed-train: --val-archive and --val-labels go together\n");
    return -1;
  }
  if (o->vocab && !o->config) {
    fprintf(stderr, "unimed-train: --vocab only applies to --config (a model has its own)\n");
    return -1;
  }
  return 0;
}

int ut_parse_args(int argc, char **argv, ut_options *o) {
  if (set_defaults(o, argc) != 0) return -1;
  for (int i = 1; i < argc; i++)
    if (parse_option(o, argc, argv, &i) != 0) return -1;
  return check_options(o);
}
