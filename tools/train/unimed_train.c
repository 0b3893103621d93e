/* unimed-train: contrastive (CLIP) training of a UniMed-CLIP model on DICOM
 * study archives, on the CPU, optionally data-parallel over MPI ranks.
 * See docs/TRAINING.md. Exit status: 0 success (also when stopped by
 * --max-steps or a signal after writing a checkpoint), 1 bad input or a
 * failure, 2 bad usage. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifdef UT_WITH_MPI
#include <mpi.h>
#endif

#include "dataset.h"
#include "evaluate.h"
#include "scratch.h"
#include "tokenizer.h"
#include "train.h"
#include "unimed_model.h"

enum mode { MODE_FULL, MODE_LOCK_IMAGE, MODE_PROJECTIONS };
static const char *const mode_names[] = {"full", "lock-image", "projections"};

/* Everything that fixes the sequence of updates; stored in the checkpoint
 * and compared on --resume. */
typedef struct {
  int32_t epochs, batch, accumulate, warmup, world;
  int32_t mode, augment, balance, frames_per_series;
  int32_t flip;            /* mirror left-right with probability 1/2 */
  int32_t label_aware;     /* captions of the same labels are positives of each other */
  uint64_t seed;
  float lr, wd, grad_clip, beta1, beta2, eps;
  float crop_area;         /* smallest area kept by the random resized crop */
  float jitter;            /* brightness and contrast change up to +-jitter */
  int32_t n_samples, steps_per_epoch, total_steps;
  uint64_t data_fingerprint; /* ut_dataset_fingerprint: samples, labels, captions, images */
} hparams;

typedef struct {
  const char **archives, **val_archives, **sets; /* argc entries each */
  int n_archives, n_val_archives, n_sets;
  const char **orthanc_labels;
  int n_orthanc_labels;
  const char *orthanc, *orthanc_credentials, *orthanc_modality, *orthanc_date, *orthanc_query;
  int include_own_sr;
  const char *labels, *val_labels, *key, *init, *config, *vocab, *out, *resume;
  const char *name, *version;
  int threads, max_steps, vocab_size, eval_frames, keep_best, quiet;
  hparams h;
} options;

/* ---- ranks ---- */

static int g_rank = 0, g_world = 1;
static FILE *g_logfile;

static void logline(const char *fmt, ...) {
  char line[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (g_rank != 0) { /* other ranks report their errors only */
    if (!strncmp(line, "error", 5)) fprintf(stderr, "unimed-train [rank %d]: %s\n", g_rank, line);
    return;
  }
  fprintf(stderr, "unimed-train: %s\n", line);
  if (g_logfile) {
    fprintf(g_logfile, "%s\n", line);
    fflush(g_logfile);
  }
}

static void log_cb(void *ctx, const char *line) {
  (void)ctx;
  logline("%s", line);
}

static void allreduce_sum(float *x, size_t n) {
#ifdef UT_WITH_MPI
  if (g_world > 1) {
    const size_t chunk = (size_t)1 << 28; /* MPI counts are int */
    for (size_t off = 0; off < n; off += chunk) {
      size_t k = n - off < chunk ? n - off : chunk;
      MPI_Allreduce(MPI_IN_PLACE, x + off, (int)k, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    }
  }
#else
  (void)x;
  (void)n;
#endif
}

static double allreduce_sum_d(double v) {
#ifdef UT_WITH_MPI
  if (g_world > 1) MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
#endif
  return v;
}

static int allreduce_max_i(int v) {
#ifdef UT_WITH_MPI
  if (g_world > 1) MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
#endif
  return v;
}

/* Waits for rank 0 (checkpoint, validation) without spinning a core. */
static void quiet_barrier(void) {
#ifdef UT_WITH_MPI
  if (g_world > 1) {
    MPI_Request rq;
    MPI_Ibarrier(MPI_COMM_WORLD, &rq);
    int done = 0;
    while (!done) {
      MPI_Test(&rq, &done, MPI_STATUS_IGNORE);
      if (!done) {
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
      }
    }
  }
#endif
}

static void finish(int code) {
#ifdef UT_WITH_MPI
  if (g_world > 1) {
    if (code != 0 && code != 2) MPI_Abort(MPI_COMM_WORLD, code);
    MPI_Finalize();
  }
#endif
  if (g_logfile) fclose(g_logfile);
  exit(code);
}

/* ---- signals ---- */

static volatile sig_atomic_t g_stop = 0;
static void on_signal(int sig) {
  (void)sig;
  g_stop = 1;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- usage ---- */

static void usage(FILE *out) {
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

static int parse_args(int argc, char **argv, options *o) {
  memset(o, 0, sizeof *o);
  hparams *h = &o->h;
  h->epochs = 10;
  h->batch = 32;
  h->accumulate = 1;
  h->warmup = 50;
  h->lr = 5e-4f;
  h->wd = 0.1f;
  h->grad_clip = 1.0f;
  h->beta1 = 0.9f;
  h->beta2 = 0.98f;
  h->eps = 1e-6f;
  h->frames_per_series = 1;
  h->crop_area = 0.8f;
  o->vocab_size = 4000;
  o->eval_frames = 8;
  /* lists: any length (at most argc entries); static so that they stay
     reachable until exit */
  static const char **lists[4];
  for (int k = 0; k < 4; k++)
    if (!(lists[k] = calloc((size_t)argc + 1, sizeof(char *)))) {
      fprintf(stderr, "unimed-train: out of memory\n");
      return -1;
    }
  o->archives = lists[0], o->val_archives = lists[1], o->sets = lists[2];
  o->orthanc_labels = lists[3];
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    int iv = 0, rc = 0;
#define LIST(flag, arr, n)      \
  if (!strcmp(a, flag) && v) { \
    o->arr[o->n++] = v, i++;   \
    continue;                  \
  }
#define STR(flag, field)        \
  if (!strcmp(a, flag) && v) {  \
    o->field = v, i++;          \
    continue;                   \
  }
#define INT(flag, field, lo)                                   \
  if (!strcmp(a, flag) && v) {                                 \
    if ((rc = parse_int(flag, v, lo, &iv)) != 0) return -1;    \
    field = iv, i++;                                           \
    continue;                                                  \
  }
#define FLAG(flag, field) \
  if (!strcmp(a, flag)) {  \
    field = 1;             \
    continue;              \
  }
#define FLT(flag, field)                                       \
  if (!strcmp(a, flag) && v) {                                 \
    if (parse_float(flag, v, &field) != 0) return -1;          \
    i++;                                                       \
    continue;                                                  \
  }
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
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
    if (!strcmp(a, "--jitter") && v) {
      if (parse_float(a, v, &h->jitter) != 0) return -1;
      if (h->jitter >= 1.0f) {
        fprintf(stderr, "unimed-train: --jitter takes a fraction below 1, got '%s'\n", v);
        return -1;
      }
      i++;
      continue;
    }
    if (!strcmp(a, "--crop-area") && v) {
      if (parse_float(a, v, &h->crop_area) != 0) return -1;
      if (!(h->crop_area > 0.05f && h->crop_area <= 1.0f)) {
        fprintf(stderr, "unimed-train: --crop-area takes a fraction in (0.05, 1], got '%s'\n", v);
        return -1;
      }
      h->augment = 1, i++;
      continue;
    }
    FLAG("--flip", h->flip)
    FLAG("--label-aware", h->label_aware)
    if (!strcmp(a, "--seed") && v) {
      char *end;
      h->seed = strtoull(v, &end, 10);
      if (*end) {
        fprintf(stderr, "unimed-train: --seed takes an integer, got '%s'\n", v);
        return -1;
      }
      i++;
      continue;
    }
    if (!strcmp(a, "--mode") && v) {
      int k = 0;
      while (k < 3 && strcmp(v, mode_names[k])) k++;
      if (k == 3) {
        fprintf(stderr, "unimed-train: --mode takes full, lock-image or projections\n");
        return -1;
      }
      h->mode = k, i++;
      continue;
    }
    FLAG("--augment", h->augment)
    FLAG("--balance", h->balance)
    FLAG("--keep-best", o->keep_best)
    FLAG("--quiet", o->quiet)
    if (a[0] != '-') { /* positional: an input like --archive */
      o->archives[o->n_archives++] = a;
      continue;
    }
    fprintf(stderr, "unimed-train: unknown option or missing value: '%s'\n\n", a);
    usage(stderr);
    return -1;
#undef LIST
#undef STR
#undef INT
#undef FLT
#undef FLAG
  }
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
    usage(stderr);
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

/* ---- files ---- */

static int mkdir_p(const char *dir) {
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s", dir);
  for (char *p = tmp + 1; *p; p++)
    if (*p == '/') {
      *p = 0;
      if (mkdir(tmp, 0777) != 0 && errno != EEXIST) return -1;
      *p = '/';
    }
  return mkdir(tmp, 0777) != 0 && errno != EEXIST ? -1 : 0;
}

static int same_dir(const char *a, const char *b) {
  char ra[4096], rb[4096];
  return realpath(a, ra) && realpath(b, rb) && !strcmp(ra, rb);
}

/* Rewrites DIR/config.json with model_name / model_version. */
static int patch_config(const char *dir, const char *name, const char *version) {
  if (!name && !version) return 0;
  char path[2048];
  snprintf(path, sizeof path, "%s/config.json", dir);
  FILE *fp = fopen(path, "rb");
  if (!fp) return -1;
  char buf[65536];
  size_t n = fread(buf, 1, sizeof buf - 1, fp);
  fclose(fp);
  buf[n] = 0;
  cJSON *root = cJSON_Parse(buf);
  if (!root) return -1;
  if (name) {
    cJSON_DeleteItemFromObjectCaseSensitive(root, "model_name");
    cJSON_AddStringToObject(root, "model_name", name);
  }
  if (version) {
    cJSON_DeleteItemFromObjectCaseSensitive(root, "model_version");
    cJSON_AddStringToObject(root, "model_version", version);
  }
  char *text = cJSON_Print(root);
  cJSON_Delete(root);
  fp = fopen(path, "w");
  if (!fp || !text) {
    free(text);
    if (fp) fclose(fp);
    return -1;
  }
  fputs(text, fp);
  fputc('\n', fp);
  free(text);
  return fclose(fp);
}

static uint64_t fnv(const void *p, size_t n) {
  const unsigned char *b = p;
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

/* OUT/trainer_state.bin: magic, hparams, step, parameter checksum, AdamW m, v. */
#define STATE_MAGIC "UMTRAIN3"

static int save_state(const char *dir, const umt_trainer *T, const hparams *h, double best) {
  char path[2048], tmp[4200];
  snprintf(path, sizeof path, "%s/trainer_state.bin", dir);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *fp = fopen(tmp, "wb");
  if (!fp) return -1;
  uint64_t total = T->P.total, sum = fnv(T->P.params, T->P.total * sizeof(float));
  int32_t step = T->step;
  int ok = fwrite(STATE_MAGIC, 1, 8, fp) == 8 && fwrite(h, sizeof *h, 1, fp) == 1 &&
           fwrite(&step, 4, 1, fp) == 1 && fwrite(&best, 8, 1, fp) == 1 &&
           fwrite(&total, 8, 1, fp) == 1 && fwrite(&sum, 8, 1, fp) == 1 &&
           fwrite(T->m, sizeof(float), total, fp) == total &&
           fwrite(T->v, sizeof(float), total, fp) == total;
  if (fclose(fp) != 0) ok = 0;
  if (!ok || rename(tmp, path) != 0) {
    unlink(tmp);
    return -1;
  }
  return 0;
}

static int load_state(const char *dir, umt_trainer *T, hparams *h, double *best, char *err,
                      size_t errlen) {
  char path[2048];
  snprintf(path, sizeof path, "%s/trainer_state.bin", dir);
  FILE *fp = fopen(path, "rb");
  if (!fp) {
    snprintf(err, errlen, "%s: %s (not a checkpoint of unimed-train?)", path, strerror(errno));
    return -1;
  }
  char magic[8] = {0};
  int32_t step;
  uint64_t total, sum;
  int ok = fread(magic, 1, 8, fp) == 8 && !memcmp(magic, STATE_MAGIC, 8) &&
           fread(h, sizeof *h, 1, fp) == 1 && fread(&step, 4, 1, fp) == 1 &&
           fread(best, 8, 1, fp) == 1 && fread(&total, 8, 1, fp) == 1 &&
           fread(&sum, 8, 1, fp) == 1 && total == T->P.total &&
           fread(T->m, sizeof(float), total, fp) == total &&
           fread(T->v, sizeof(float), total, fp) == total;
  fclose(fp);
  if (!memcmp(magic, "UMTRAIN2", 8)) {
    snprintf(err, errlen, "%s: written by an older unimed-train (no data fingerprint); it cannot "
                          "be resumed by this one", path);
    return -1;
  }
  if (!ok) {
    snprintf(err, errlen, "%s: truncated, or not for this model", path);
    return -1;
  }
  if (sum != fnv(T->P.params, T->P.total * sizeof(float))) {
    snprintf(err, errlen, "%s: does not belong to %s/model.safetensors (interrupted save?)", path,
             dir);
    return -1;
  }
  T->step = step;
  return 0;
}

static int check_resume(const hparams *a, const hparams *b, char *err, size_t errlen) {
#define SAME(f, fmt)                                                                         \
  if (a->f != b->f) {                                                                        \
    snprintf(err, errlen, "--resume: option %s differs from the run being resumed (" fmt     \
                          " there, " fmt " now)", #f, a->f, b->f);                           \
    return -1;                                                                               \
  }
  SAME(epochs, "%d") SAME(batch, "%d") SAME(accumulate, "%d") SAME(warmup, "%d")
  SAME(world, "%d") SAME(mode, "%d") SAME(augment, "%d") SAME(balance, "%d")
  SAME(flip, "%d") SAME(crop_area, "%g") SAME(jitter, "%g") SAME(label_aware, "%d")
  SAME(frames_per_series, "%d") SAME(lr, "%g") SAME(wd, "%g")
  SAME(grad_clip, "%g") SAME(n_samples, "%d")
#undef SAME
  if (a->data_fingerprint != b->data_fingerprint) {
    snprintf(err, errlen, "--resume: the training data differ from the run being resumed (images, "
                          "labels or report text; data fingerprint %016llx there, %016llx now)",
             (unsigned long long)a->data_fingerprint, (unsigned long long)b->data_fingerprint);
    return -1;
  }
  if (a->seed != b->seed) {
    snprintf(err, errlen, "--resume: option seed differs from the run being resumed (%llu there, "
                          "%llu now)", (unsigned long long)a->seed, (unsigned long long)b->seed);
    return -1;
  }
  return 0;
}

/* ---- batches ---- */

typedef struct {
  const ut_dataset *d;
  const hparams *h;
  int *order;      /* sample (image) of each position of the current epoch */
  int epoch;       /* epoch `order` belongs to, -1 none */
  float *pixels;   /* batch x 3 x S x S */
  int **ids;
  int *lens;
  uint64_t *groups; /* class of each caption (--label-aware) */
  int ctx;         /* token budget per caption */
  float mean[3], std[3]; /* the model's normalisation, for intensity jitter */
} batcher;

/* Sample order of an epoch: a permutation, or (--balance) draws with
 * replacement that give the labels of each label set equal weight while
 * keeping each set's share of the epoch. */
static int epoch_order(batcher *b, int epoch) {
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

/* Random resized crop of a 3 x S x S tensor (bilinear) keeping an area in
 * [min_area, 1] and an aspect ratio in [3/4, 4/3]; mirrored left-right when
 * `flip`. min_area 1 with flip set is a plain mirror. */
static void crop_and_flip(const float *src, float *dst, int S, double min_area, int flip,
                          uint64_t h) {
  double area = min_area + (1 - min_area) * ut_unit(ut_hash3(h, 1, 0));
  double logr = log(3.0 / 4.0) + (log(4.0 / 3.0) - log(3.0 / 4.0)) * ut_unit(ut_hash3(h, 2, 0));
  double r = exp(logr);
  double cw = S * sqrt(area * r), ch = S * sqrt(area / r);
  if (cw > S) cw = S;
  if (ch > S) ch = S;
  double x0 = (S - cw) * ut_unit(ut_hash3(h, 3, 0)), y0 = (S - ch) * ut_unit(ut_hash3(h, 4, 0));
  for (int c = 0; c < 3; c++) {
    const float *s = src + (size_t)c * S * S;
    float *o = dst + (size_t)c * S * S;
    for (int y = 0; y < S; y++) {
      double sy = y0 + (y + 0.5) * ch / S - 0.5;
      if (sy < 0) sy = 0;
      if (sy > S - 1) sy = S - 1;
      int iy = (int)sy;
      int iy1 = iy + 1 < S ? iy + 1 : iy;
      double fy = sy - iy;
      for (int x = 0; x < S; x++) {
        double sx = x0 + (x + 0.5) * cw / S - 0.5;
        if (sx < 0) sx = 0;
        if (sx > S - 1) sx = S - 1;
        int ix = (int)sx;
        int ix1 = ix + 1 < S ? ix + 1 : ix;
        double fx = sx - ix;
        double v = (1 - fy) * ((1 - fx) * s[iy * S + ix] + fx * s[iy * S + ix1]) +
                   fy * ((1 - fx) * s[iy1 * S + ix] + fx * s[iy1 * S + ix1]);
        o[y * S + (flip ? S - 1 - x : x)] = (float)v;
      }
    }
  }
}

/* Brightness and contrast jitter applied in pixel space (0..1) to a
 * normalised 3 x S x S tensor: p' = c (p - 1/2) + 1/2 + b with
 * c in [1 - amount, 1 + amount] and b in [-amount, amount], the same for all
 * channels so that grey stays grey. */
static void jitter_intensity(float *img, int S, const float mean[3], const float stdv[3],
                             double amount, uint64_t h) {
  double c = 1 + amount * (2 * ut_unit(ut_hash3(h, 5, 0)) - 1);
  double b = amount * (2 * ut_unit(ut_hash3(h, 6, 0)) - 1);
  for (int ch = 0; ch < 3; ch++) {
    /* in normalised units: n' = c n + (c (m - 1/2) + 1/2 + b - m) / s */
    float scale = (float)c, shift = (float)((c * (mean[ch] - 0.5) + 0.5 + b - mean[ch]) / stdv[ch]);
    float *p = img + (size_t)ch * S * S;
    for (int i = 0; i < S * S; i++) p[i] = scale * p[i] + shift;
  }
}

/* Fills pixels / ids / lens for positions [pos, pos + B) of the epoch. */
static int make_batch(batcher *b, const um_vocab *tok, int epoch, int pos, int B, char *err,
                      size_t errlen) {
  const ut_dataset *d = b->d;
  const int S = d->size;
  const size_t per = (size_t)3 * S * S;
  for (int j = 0; j < B; j++) {
    int p = pos + j, img = b->order[p];
    uint64_t h = ut_hash3(b->h->seed ^ 0xca97105ull, (uint64_t)epoch, (uint64_t)p);
    const float *src = d->pixels + (size_t)img * per;
    float *dst = b->pixels + (size_t)j * per;
    const uint64_t ha = ut_hash3(h, 9, 9);
    const int flip = b->h->flip && (ut_hash3(ha, 7, 0) & 1);
    if (b->h->augment || flip)
      crop_and_flip(src, dst, S, b->h->augment ? b->h->crop_area : 1.0, flip, ha);
    else memcpy(dst, src, per * sizeof(float));
    if (b->h->jitter > 0) jitter_intensity(dst, S, b->mean, b->std, b->h->jitter, ha);
    char *cap = ut_caption(d, &d->rows[d->image_row[img]], h);
    if (!cap) {
      snprintf(err, errlen, "out of memory");
      return -1;
    }
    int n = um_tokenize(tok, cap, b->ctx, b->ids[j], err, errlen);
    free(cap);
    if (n < 0) return -1;
    b->lens[j] = n;
    b->groups[j] = ut_caption_group(&d->rows[d->image_row[img]], h);
  }
  return 0;
}

static void set_mode(umt_params *P, int mode) {
  for (int i = 0; i < P->n; i++) {
    umt_tensor *t = &P->t[i];
    if (!(t->flags & UMT_TRAIN)) continue;
    int keep = 1;
    if (mode == MODE_LOCK_IMAGE) keep = strncmp(t->name, "visual.", 7) != 0;
    if (mode == MODE_PROJECTIONS)
      keep = !strcmp(t->name, "visual.proj") || !strncmp(t->name, "text_encoder.proj.", 18) ||
             !strcmp(t->name, "logit_scale");
    if (!keep) t->flags &= ~(UMT_TRAIN | UMT_DECAY);
  }
}

/* ---- progress ---- */

static void fmt_time(double s, char *buf, size_t n) {
  if (s < 0 || !isfinite(s)) snprintf(buf, n, "?");
  else if (s < 60) snprintf(buf, n, "%.0fs", s);
  else if (s < 3600) snprintf(buf, n, "%dm%02ds", (int)s / 60, (int)s % 60);
  else snprintf(buf, n, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
}

static void progress(int tty, int epoch, int epochs, int step_in_epoch, int spe, double loss,
                     double ips, double eta) {
  char e[32];
  fmt_time(eta, e, sizeof e);
  if (tty) {
    char bar[31];
    int fill = spe ? (int)(30.0 * step_in_epoch / spe) : 30;
    for (int i = 0; i < 30; i++) bar[i] = i < fill ? '=' : i == fill ? '>' : ' ';
    bar[30] = 0;
    fprintf(stderr, "\repoch %d/%d [%s] step %d/%d loss %.4f %.1f img/s ETA %s   ", epoch, epochs,
            bar, step_in_epoch, spe, loss, ips, e);
  } else {
    fprintf(stderr, "epoch %d/%d step %d/%d loss %.4f %.1f img/s ETA %s\n", epoch, epochs,
            step_in_epoch, spe, loss, ips, e);
  }
  fflush(stderr);
}

/* Keeps the lines of OUT/train_log.csv up to `step` (for --resume). */
static void trim_log(const char *path, int step) {
  FILE *fp = fopen(path, "r");
  if (!fp) return;
  char tmp[2100];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *out = fopen(tmp, "w");
  if (!out) {
    fclose(fp);
    return;
  }
  char line[1024];
  int first = 1;
  while (fgets(line, sizeof line, fp)) {
    if (!first && atoi(line) > step) continue;
    first = 0;
    fputs(line, out);
  }
  fclose(fp);
  fclose(out);
  rename(tmp, path);
}

/* ---- validation ---- */

static double validate(const options *o, const ut_dataset *val, int epoch, int step, FILE *vlog) {
  char err[512];
  unimed_model *m = unimed_model_load(o->out, err, sizeof err);
  if (!m) {
    logline("validation: %s", err);
    return NAN;
  }
  double sum = 0;
  int k = 0;
  for (int s = 0; s < val->n_sets; s++) {
    ut_metrics mt;
    cJSON *js = NULL;
    if (ut_evaluate(m, val, s, 64, &mt, &js, err, sizeof err) != 0) continue;
    logline("validation epoch %d: %s n=%d accuracy %.4f balanced %.4f AUC %.4f", epoch,
            val->sets[s]->name, mt.n, mt.accuracy, mt.balanced_accuracy, mt.auc);
    if (vlog) {
      fprintf(vlog, "%d,%d,%s,%d,%.6f,%.6f,%.6f\n", epoch, step, val->sets[s]->name, mt.n,
              mt.accuracy, mt.balanced_accuracy, mt.auc);
      fflush(vlog);
    }
    if (!isnan(mt.auc)) sum += mt.auc, k++;
    ut_metrics_free(&mt);
    cJSON_Delete(js);
  }
  unimed_model_free(m);
  return k ? sum / k : NAN;
}

/* ---- main ---- */

int main(int argc, char **argv) {
#ifdef UT_WITH_MPI
  if (getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK")) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_world);
  }
#endif
  options o;
  if (parse_args(argc, argv, &o) != 0) finish(2);
  o.h.world = g_world;
  char err[8192];
  if (o.threads) unimed_set_threads(o.threads);
  if (g_rank == 0 && mkdir_p(o.out) != 0) {
    fprintf(stderr, "unimed-train: %s: %s\n", o.out, strerror(errno));
    finish(1);
  }
  quiet_barrier();
  char path[2048];
  snprintf(path, sizeof path, "%s/train.log", o.out);
  if (g_rank == 0) g_logfile = fopen(path, o.resume ? "a" : "w");
  if (g_world > 1) logline("MPI: %d ranks", g_world);

  /* label sets */
  static unimed_label_set **sets; /* static: reachable until exit */
  sets = calloc((size_t)o.n_sets + 1, sizeof *sets);
  if (!sets) {
    logline("error: out of memory");
    finish(1);
  }
  for (int i = 0; i < o.n_sets; i++)
    if (!(sets[i] = unimed_label_set_load(o.sets[i], err, sizeof err))) {
      logline("error: %s", err);
      finish(1);
    }

  /* the model config decides the image size: read it first */
  const char *model_src = o.init ? o.init : o.resume;
  unimed_config cfg0;
  memset(&cfg0, 0, sizeof cfg0);
  int image_size = 0;
  float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f},
        stdv[3] = {0.26862954f, 0.26130258f, 0.27577711f};
  if (model_src) {
    unimed_model *m = unimed_model_load(model_src, err, sizeof err);
    if (!m) {
      logline("error: %s", err);
      finish(1);
    }
    cfg0 = *unimed_model_config(m);
    unimed_model_free(m);
  } else {
    /* a throw-away config to learn the image size and normalisation */
    char tmpdir[1024];
    snprintf(tmpdir, sizeof tmpdir, "%s/.config-probe", o.out);
    if (g_rank == 0) {
      mkdir_p(tmpdir);
      if (ut_write_config(tmpdir, o.config, 8, 0, NULL, NULL, err, sizeof err) != 0) {
        logline("error: %s", err);
        finish(1);
      }
    }
    quiet_barrier();
    snprintf(path, sizeof path, "%s/config.json", tmpdir);
    FILE *fp = fopen(path, "rb");
    char buf[65536];
    size_t n = fp ? fread(buf, 1, sizeof buf - 1, fp) : 0;
    if (fp) fclose(fp);
    buf[n] = 0;
    cJSON *root = cJSON_Parse(buf);
    const cJSON *pp = cJSON_GetObjectItem(root, "preprocessing");
    const cJSON *sz = cJSON_GetObjectItem(pp, "size");
    cfg0.image_size = cJSON_IsNumber(sz) ? sz->valueint : 0;
    for (int c = 0; c < 3; c++) {
      const cJSON *a = cJSON_GetArrayItem(cJSON_GetObjectItem(pp, "mean"), c),
                  *b = cJSON_GetArrayItem(cJSON_GetObjectItem(pp, "std"), c);
      if (cJSON_IsNumber(a)) mean[c] = (float)a->valuedouble;
      if (cJSON_IsNumber(b)) stdv[c] = (float)b->valuedouble;
    }
    cJSON_Delete(root);
    quiet_barrier(); /* every rank has read it */
    if (g_rank == 0) {
      unlink(path);
      rmdir(tmpdir);
    }
    memcpy(cfg0.mean, mean, sizeof mean);
    memcpy(cfg0.std, stdv, sizeof stdv);
  }
  image_size = cfg0.image_size;

  /* data */
  double t0 = now_s();
  ut_load_opts lo = {0};
  lo.archives = o.archives;
  lo.n_archives = o.n_archives;
  lo.labels_csv = o.labels;
  lo.key_column = o.key;
  lo.sets = sets;
  lo.n_sets = o.n_sets;
  lo.image_size = image_size;
  memcpy(lo.mean, cfg0.mean, sizeof lo.mean);
  memcpy(lo.std, cfg0.std, sizeof lo.std);
  lo.frames_per_series = o.h.frames_per_series;
  lo.log = log_cb;
  lo.include_own_sr = o.include_own_sr;
  ut_orthanc_opts orth = {o.orthanc, o.orthanc_credentials, o.orthanc_modality, o.orthanc_date,
                          o.orthanc_labels, o.n_orthanc_labels, o.orthanc_query};
  if (o.orthanc) lo.orthanc = &orth;
  ut_dataset data, val;
  memset(&val, 0, sizeof val);
  if (ut_dataset_load(&data, &lo, err, sizeof err) != 0) {
    logline("error: %s", err);
    finish(1);
  }
  ut_skips_report(&data.skips, log_cb, NULL);
  logline("training data: %d rows, %d images (%dx%d), decoded in %.1fs, fingerprint %016llx",
          data.n_rows, data.n_images, image_size, image_size, now_s() - t0,
          (unsigned long long)ut_dataset_fingerprint(&data));
  for (int i = 0; i < 3 && i < data.n_rows; i++) { /* what the text tower will read */
    char *cap = ut_caption(&data, &data.rows[i], ut_hash3(o.h.seed, 0x5a3, (uint64_t)i));
    if (cap) logline("caption example (%s): %s", data.rows[i].key, cap);
    free(cap);
  }
  if (o.val_labels) {
    ut_load_opts vo = lo;
    vo.archives = o.val_archives;
    vo.n_archives = o.n_val_archives;
    vo.labels_csv = o.val_labels;
    vo.orthanc = NULL;
    vo.frames_per_series = o.eval_frames;
    vo.require_label = 1;
    if (o.n_sets == 0) {
      logline("error: validation needs --label-set (zero-shot classes)");
      finish(2);
    }
    if (ut_dataset_load(&val, &vo, err, sizeof err) != 0) {
      logline("error: validation data: %s", err);
      finish(1);
    }
    ut_skips_report(&val.skips, log_cb, NULL);
    logline("validation data: %d rows, %d images", val.n_rows, val.n_images);
  }

  /* the model directory to start from */
  if (o.config && g_rank == 0) {
    char vpath[2048];
    snprintf(vpath, sizeof vpath, "%s/vocab.txt", o.out);
    int vsize;
    if (o.vocab) {
      if (umt_copy_file(o.vocab, vpath, err, sizeof err) != 0) {
        logline("error: cannot copy the vocabulary: %s", err);
        finish(1);
      }
      vsize = 0;
      FILE *fp = fopen(vpath, "r");
      char line[1024];
      while (fp && fgets(line, sizeof line, fp)) vsize++;
      if (fp) fclose(fp);
    } else {
      ut_vocab_builder *vb = ut_vocab_builder_new();
      ut_caption_corpus(&data, ut_vocab_builder_add, vb);
      if (val.n_rows) ut_caption_corpus(&val, ut_vocab_builder_add, vb);
      vsize = ut_vocab_builder_write(vb, vpath, o.vocab_size, err, sizeof err);
      ut_vocab_builder_free(vb);
      if (vsize < 0) {
        logline("error: %s", err);
        finish(1);
      }
      logline("vocabulary: %d tokens built from the captions", vsize);
    }
    if (ut_write_config(o.out, o.config, vsize, 0, o.name, o.version, err, sizeof err) != 0 ||
        ut_write_random_weights(o.out, o.h.seed, err, sizeof err) != 0) {
      logline("error: %s", err);
      finish(1);
    }
  }
  quiet_barrier();
  if (o.config) model_src = o.out;

  umt_opt_config oc = {0};
  oc.lr = o.h.lr;
  oc.beta1 = o.h.beta1;
  oc.beta2 = o.h.beta2;
  oc.eps = o.h.eps;
  oc.weight_decay = o.h.wd;
  oc.grad_clip = o.h.grad_clip;
  oc.warmup = o.h.warmup;
  umt_trainer T;
  /* umt_trainer_init without its eager AdamW moments (allocated below) */
  memset(&T, 0, sizeof T);
  T.opt = oc;
  if (umt_params_load(&T.P, model_src, UMT_DECAY_NO_EMBEDDINGS, err, sizeof err) != 0) {
    logline("error: %s", err);
    finish(1);
  }
  /* OUT holds config.json and vocab.txt from now on */
  if (!same_dir(model_src, o.out)) {
    char a[4200], b[4200];
    for (int k = 0; k < 2 && g_rank == 0; k++) {
      const char *f = k ? "vocab.txt" : "config.json";
      snprintf(a, sizeof a, "%s/%s", model_src, f);
      snprintf(b, sizeof b, "%s/%s", o.out, f);
      if (umt_copy_file(a, b, err, sizeof err) != 0) {
        logline("error: cannot copy %s to %s: %s", a, b, err);
        finish(1);
      }
    }
  }
  if (g_rank == 0 && !o.config && patch_config(o.out, o.name, o.version) != 0) {
    logline("error: %s/config.json: cannot update the name/version", o.out);
    finish(1);
  }
  quiet_barrier();
  snprintf(T.P.src_dir, sizeof T.P.src_dir, "%s", o.out);
  set_mode(&T.P, o.h.mode);
  /* The AdamW moments of frozen tensors are never touched: allocate them
   * lazily (calloc of a large block maps zero pages on demand) so that
   * --mode lock-image / projections do not make them resident. */
  T.m = calloc(T.P.total, sizeof(float));
  T.v = calloc(T.P.total, sizeof(float));
  if (!T.m || !T.v) {
    logline("error: out of memory for the optimiser state");
    finish(1);
  }
  const unimed_config *c = &T.P.cfg;
  if (c->image_size != image_size) {
    logline("error: model image size %d, data decoded at %d", c->image_size, image_size);
    finish(1);
  }
  size_t trainable = 0;
  for (int i = 0; i < T.P.n; i++)
    if (T.P.t[i].flags & UMT_TRAIN) trainable += T.P.t[i].numel;
  logline("model %s: %zu parameters, %zu trained (--mode %s)", c->name, T.P.total, trainable,
          mode_names[o.h.mode]);

  /* schedule */
  const int B = o.h.batch, A = o.h.accumulate, R = g_world, G = B * A * R;
  o.h.n_samples = data.n_images;
  o.h.data_fingerprint = ut_dataset_fingerprint(&data);
  o.h.steps_per_epoch = data.n_images / G;
  if (o.h.steps_per_epoch < 1) {
    logline("error: %d images are fewer than one step's %d (batch %d x accumulate %d x ranks %d)",
            data.n_images, G, B, A, R);
    finish(1);
  }
  o.h.total_steps = o.h.steps_per_epoch * o.h.epochs;
  T.opt.total_steps = o.h.total_steps;
  double best = -1;
  if (o.resume) {
    hparams saved;
    if (load_state(o.resume, &T, &saved, &best, err, sizeof err) != 0 ||
        check_resume(&saved, &o.h, err, sizeof err) != 0) {
      logline("error: %s", err);
      finish(1);
    }
    logline("resumed at step %d of %d", T.step, o.h.total_steps);
  }
  const int spe = o.h.steps_per_epoch;
  logline("%d steps (%d epochs x %d), %d samples per step, lr %g, warm-up %d", o.h.total_steps,
          o.h.epochs, spe, G, o.h.lr, o.h.warmup);

  /* logs */
  FILE *tlog = NULL, *vlog = NULL;
  if (g_rank == 0) {
    snprintf(path, sizeof path, "%s/train_log.csv", o.out);
    if (o.resume) trim_log(path, T.step);
    struct stat st;
    int fresh = stat(path, &st) != 0 || st.st_size == 0 || !o.resume;
    tlog = fopen(path, fresh ? "w" : "a");
    if (tlog && fresh) fprintf(tlog, "step,epoch,lr,loss,grad_norm,images_per_s,elapsed_s\n");
    snprintf(path, sizeof path, "%s/val_log.csv", o.out);
    fresh = stat(path, &st) != 0 || st.st_size == 0 || !o.resume;
    vlog = fopen(path, fresh ? "w" : "a");
    if (vlog && fresh) fprintf(vlog, "epoch,step,label_set,n,accuracy,balanced_accuracy,auc\n");
  }

  /* batch buffers */
  batcher bt = {0};
  bt.d = &data;
  bt.h = &o.h;
  bt.epoch = -1;
  bt.ctx = c->text.context_length;
  memcpy(bt.mean, c->mean, sizeof bt.mean);
  memcpy(bt.std, c->std, sizeof bt.std);
  bt.order = malloc((size_t)data.n_images * sizeof(int));
  bt.pixels = malloc((size_t)B * 3 * image_size * image_size * sizeof(float));
  bt.ids = calloc((size_t)B, sizeof(int *));
  bt.lens = calloc((size_t)B, sizeof(int));
  bt.groups = calloc((size_t)B, sizeof(uint64_t));
  for (int j = 0; bt.ids && j < B; j++) bt.ids[j] = malloc((size_t)bt.ctx * sizeof(int));
  /* the tokenizer: the vocabulary only (the weights are not mapped twice) */
  snprintf(path, sizeof path, "%s/vocab.txt", o.out);
  um_vocab *tok = um_vocab_load(path, err, sizeof err);
  if (!bt.order || !bt.pixels || !bt.ids || !bt.lens || !bt.groups || !tok) {
    logline("error: %s", tok ? "out of memory" : err);
    finish(1);
  }

  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  const int tty = isatty(2) && !o.quiet;
  double t_start = now_s(), t_last = t_start;
  int steps_run = 0, rc = 0;
  const int start_step = T.step;
  while (T.step < o.h.total_steps) {
    const int step = T.step, epoch = step / spe, in_epoch = step % spe;
    if (bt.epoch != epoch && epoch_order(&bt, epoch) != 0) {
      logline("error: out of memory");
      rc = 1;
      break;
    }
    double loss_sum = 0;
    for (int m = 0; m < A * R; m++) {
      if (m % R != g_rank) continue;
      int pos = in_epoch * G + m * B;
      double loss = 0;
      if (make_batch(&bt, tok, epoch, pos, B, err, sizeof err) != 0 ||
          umt_trainer_accumulate(&T, bt.pixels, (const int *const *)bt.ids, bt.lens,
                                 o.h.label_aware ? bt.groups : NULL, B, &loss, err,
                                 sizeof err) != 0) {
        logline("error: step %d: %s", step, err);
        finish(1);
      }
      loss_sum += loss;
    }
    if (R > 1) {
      allreduce_sum(T.P.grads, T.P.total);
      const float inv = 1.0f / (float)R;
      for (size_t k = 0; k < T.P.total; k++) T.P.grads[k] *= inv;
      loss_sum = allreduce_sum_d(loss_sum);
    }
    float lr;
    double gnorm = umt_trainer_step(&T, &lr);
    double loss = loss_sum / (A * R);
    steps_run++;
    double t = now_s(), ips = steps_run * (double)G / (t - t_start);
    if (!isfinite(loss)) {
      logline("error: the loss is %f at step %d (lower --lr?)", loss, step);
      finish(1);
    }
    if (g_rank == 0) {
      if (tlog) {
        fprintf(tlog, "%d,%d,%.8g,%.8f,%.6g,%.2f,%.2f\n", T.step, epoch + 1, lr, loss, gnorm, ips,
                t - t_start);
        fflush(tlog);
      }
      int every = spe / 10 > 0 ? spe / 10 : 1;
      if (!o.quiet && (tty ? t - t_last > 0.25 : (in_epoch + 1) % every == 0) ) {
        double eta = (o.h.total_steps - T.step) * (t - t_start) / steps_run;
        progress(tty, epoch + 1, o.h.epochs, in_epoch + 1, spe, loss, ips, eta);
        t_last = t;
      }
    }
    int end_of_epoch = T.step % spe == 0;
    int stop = allreduce_max_i(g_stop || (o.max_steps && T.step >= o.max_steps));
    if (end_of_epoch || stop || T.step == o.h.total_steps) {
      if (g_rank == 0) {
        if (tty && !o.quiet) fputc('\n', stderr);
        if (umt_params_save(&T.P, o.out, err, sizeof err) != 0 ||
            save_state(o.out, &T, &o.h, best) != 0) {
          logline("error: checkpoint: %s", err);
          finish(1);
        }
        if (end_of_epoch) {
          logline("epoch %d done: loss %.4f, checkpoint %s (step %d)", epoch + 1, loss, o.out,
                  T.step);
          if (val.n_rows) {
            double score = validate(&o, &val, epoch + 1, T.step, vlog);
            if (o.keep_best && !isnan(score) && score > best) {
              best = score;
              snprintf(path, sizeof path, "%s/best", o.out);
              if (umt_params_save(&T.P, path, err, sizeof err) == 0)
                logline("best so far (mean validation AUC %.4f): %s", score, path);
              save_state(o.out, &T, &o.h, best);
            }
          }
        }
      }
      quiet_barrier();
    }
    if (stop && T.step < o.h.total_steps) {
      logline("stopped at step %d (%s); continue with --resume %s", T.step,
              g_stop ? "signal" : "--max-steps", o.out);
      break;
    }
  }
  if (T.step == o.h.total_steps && steps_run + start_step == o.h.total_steps)
    logline("done: %d steps in %.1fs, model in %s", steps_run, now_s() - t_start, o.out);
  else if (T.step == o.h.total_steps)
    logline("done: %d steps (this run) in %.1fs, model in %s", steps_run, now_s() - t_start, o.out);
  if (tlog) fclose(tlog);
  if (vlog) fclose(vlog);
  for (int j = 0; bt.ids && j < B; j++) free(bt.ids[j]);
  free(bt.ids);
  free(bt.lens);
  free(bt.groups);
  free(bt.order);
  free(bt.pixels);
  um_vocab_free(tok);
  umt_trainer_free(&T);
  ut_dataset_free(&data);
  ut_dataset_free(&val);
  for (int i = 0; i < o.n_sets; i++) unimed_label_set_free(sets[i]);
  free(sets);
  finish(rc);
  return rc;
}
