/* unimed-train: contrastive (CLIP) training of a UniMed-CLIP model on DICOM
 * study archives, on the CPU, optionally data-parallel over MPI ranks.
 * See docs/TRAINING.md. Exit status: 0 success (also when stopped by
 * --max-steps or a signal after writing a checkpoint), 1 bad input or a
 * failure, 2 bad usage.
 *
 * This file is the run: set-up and the training loop. The command line is in
 * train_options.c, checkpoints in checkpoint.c, batches and augmentation in
 * batches.c and augment.c, the ranks and the log in ranks.c; the model and
 * its optimiser are the model library's trainer (unimed_train.h). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "batches.h"
#include "checkpoint.h"
#include "dataset.h"
#include "evaluate.h"
#include "ranks.h"
#include "scratch.h"
#include "train_options.h"
#include "unimed_model.h"
#include "unimed_train.h"

/* ---- signals, time ---- */

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

/* ---- validation ---- */

static double validate(const ut_options *o, const ut_dataset *val, int epoch, int step, FILE *vlog) {
  char err[512];
  unimed_model *m = unimed_model_load(o->out, err, sizeof err);
  if (!m) {
    ut_log("validation: %s", err);
    return NAN;
  }
  double sum = 0;
  int k = 0;
  for (int s = 0; s < val->n_sets; s++) {
    ut_metrics mt;
    cJSON *js = NULL;
    if (ut_evaluate(m, val, s, 64, &mt, &js, err, sizeof err) != 0) continue;
    ut_log("validation epoch %d: %s n=%d accuracy %.4f balanced %.4f AUC %.4f", epoch,
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

/* ---- set-up ---- */

/* One run's inputs and state. */
typedef struct {
  ut_options o;
  unimed_label_set **sets;
  ut_dataset data, val;
  unimed_config cfg0;    /* the image size and normalisation the data are decoded with */
  const char *model_src; /* the model directory training starts from */
  unimed_trainer *t;
  double best;           /* best mean validation AUC so far (--keep-best) */
  char err[8192];
} run;

static void load_label_sets(run *r) {
  static unimed_label_set **sets; /* static: reachable until exit */
  sets = calloc((size_t)r->o.n_sets + 1, sizeof *sets);
  if (!sets) {
    ut_log("error: out of memory");
    ut_finish(1);
  }
  for (int i = 0; i < r->o.n_sets; i++)
    if (!(sets[i] = unimed_label_set_load(r->o.sets[i], r->err, sizeof r->err))) {
      ut_log("error: %s", r->err);
      ut_finish(1);
    }
  r->sets = sets;
}

/* The model config decides the image size: read it before the data. From
 * scratch, a throw-away config written the way the model's will be. */
static void read_image_geometry(run *r) {
  const ut_options *o = &r->o;
  unimed_config *cfg0 = &r->cfg0;
  memset(cfg0, 0, sizeof *cfg0);
  float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f},
        stdv[3] = {0.26862954f, 0.26130258f, 0.27577711f};
  if (r->model_src) {
    unimed_model *m = unimed_model_load(r->model_src, r->err, sizeof r->err);
    if (!m) {
      ut_log("error: %s", r->err);
      ut_finish(1);
    }
    *cfg0 = *unimed_model_config(m);
    unimed_model_free(m);
    return;
  }
  char tmpdir[1024], path[2048];
  snprintf(tmpdir, sizeof tmpdir, "%s/.config-probe", o->out);
  if (ut_rank == 0) {
    ut_mkdir_p(tmpdir);
    if (ut_write_config(tmpdir, o->config, 8, 0, NULL, NULL, r->err, sizeof r->err) != 0) {
      ut_log("error: %s", r->err);
      ut_finish(1);
    }
  }
  ut_barrier();
  snprintf(path, sizeof path, "%s/config.json", tmpdir);
  FILE *fp = fopen(path, "rb");
  char buf[65536];
  size_t n = fp ? fread(buf, 1, sizeof buf - 1, fp) : 0;
  if (fp) fclose(fp);
  buf[n] = 0;
  cJSON *root = cJSON_Parse(buf);
  const cJSON *pp = cJSON_GetObjectItem(root, "preprocessing");
  const cJSON *sz = cJSON_GetObjectItem(pp, "size");
  cfg0->image_size = cJSON_IsNumber(sz) ? sz->valueint : 0;
  for (int c = 0; c < 3; c++) {
    const cJSON *a = cJSON_GetArrayItem(cJSON_GetObjectItem(pp, "mean"), c),
                *b = cJSON_GetArrayItem(cJSON_GetObjectItem(pp, "std"), c);
    if (cJSON_IsNumber(a)) mean[c] = (float)a->valuedouble;
    if (cJSON_IsNumber(b)) stdv[c] = (float)b->valuedouble;
  }
  cJSON_Delete(root);
  ut_barrier(); /* every rank has read it */
  if (ut_rank == 0) {
    unlink(path);
    rmdir(tmpdir);
  }
  memcpy(cfg0->mean, mean, sizeof mean);
  memcpy(cfg0->std, stdv, sizeof stdv);
}

static void load_data(run *r) {
  const ut_options *o = &r->o;
  const int image_size = r->cfg0.image_size;
  double t0 = now_s();
  ut_load_opts lo = {0};
  lo.archives = o->archives;
  lo.n_archives = o->n_archives;
  lo.labels_csv = o->labels;
  lo.key_column = o->key;
  lo.sets = r->sets;
  lo.n_sets = o->n_sets;
  lo.image_size = image_size;
  memcpy(lo.mean, r->cfg0.mean, sizeof lo.mean);
  memcpy(lo.std, r->cfg0.std, sizeof lo.std);
  lo.frames_per_series = o->h.frames_per_series;
  lo.log = ut_log_cb;
  lo.include_own_sr = o->include_own_sr;
  ut_orthanc_opts orth = {o->orthanc, o->orthanc_credentials, o->orthanc_modality,
                          o->orthanc_date, o->orthanc_labels, o->n_orthanc_labels,
                          o->orthanc_query};
  if (o->orthanc) lo.orthanc = &orth;
  ut_dataset *data = &r->data, *val = &r->val;
  memset(val, 0, sizeof *val);
  if (ut_dataset_load(data, &lo, r->err, sizeof r->err) != 0) {
    ut_log("error: %s", r->err);
    ut_finish(1);
  }
  ut_skips_report(&data->skips, ut_log_cb, NULL);
  ut_log("training data: %d rows, %d images (%dx%d), decoded in %.1fs, fingerprint %016llx",
         data->n_rows, data->n_images, image_size, image_size, now_s() - t0,
         (unsigned long long)ut_dataset_fingerprint(data));
  for (int i = 0; i < 3 && i < data->n_rows; i++) { /* what the text tower will read */
    char *cap = ut_caption(data, &data->rows[i], ut_hash3(o->h.seed, 0x5a3, (uint64_t)i));
    if (cap) ut_log("caption example (%s): %s", data->rows[i].key, cap);
    free(cap);
  }
  if (!o->val_labels) return;
  ut_load_opts vo = lo;
  vo.archives = o->val_archives;
  vo.n_archives = o->n_val_archives;
  vo.labels_csv = o->val_labels;
  vo.orthanc = NULL;
  vo.frames_per_series = o->eval_frames;
  vo.require_label = 1;
  if (o->n_sets == 0) {
    ut_log("error: validation needs --label-set (zero-shot classes)");
    ut_finish(2);
  }
  if (ut_dataset_load(val, &vo, r->err, sizeof r->err) != 0) {
    ut_log("error: validation data: %s", r->err);
    ut_finish(1);
  }
  ut_skips_report(&val->skips, ut_log_cb, NULL);
  ut_log("validation data: %d rows, %d images", val->n_rows, val->n_images);
}

/* Lines of a text file (the size of a given vocabulary). */
static int count_lines(const char *path) {
  int n = 0;
  FILE *fp = fopen(path, "r");
  char line[1024];
  while (fp && fgets(line, sizeof line, fp)) n++;
  if (fp) fclose(fp);
  return n;
}

/* --config: rank 0 makes OUT a new model directory (vocabulary, config,
 * random weights) to start from. */
static void make_scratch_model(run *r) {
  const ut_options *o = &r->o;
  char vpath[2048];
  snprintf(vpath, sizeof vpath, "%s/vocab.txt", o->out);
  int vsize;
  if (o->vocab) {
    if (unimed_copy_file(o->vocab, vpath, r->err, sizeof r->err) != 0) {
      ut_log("error: cannot copy the vocabulary: %s", r->err);
      ut_finish(1);
    }
    vsize = count_lines(vpath);
  } else {
    unimed_vocab_builder *vb = unimed_vocab_builder_new();
    ut_caption_corpus(&r->data, unimed_vocab_builder_add, vb);
    if (r->val.n_rows) ut_caption_corpus(&r->val, unimed_vocab_builder_add, vb);
    vsize = unimed_vocab_builder_write(vb, vpath, o->vocab_size, r->err, sizeof r->err);
    unimed_vocab_builder_free(vb);
    if (vsize < 0) {
      ut_log("error: %s", r->err);
      ut_finish(1);
    }
    ut_log("vocabulary: %d tokens built from the captions", vsize);
  }
  if (ut_write_config(o->out, o->config, vsize, 0, o->name, o->version, r->err,
                      sizeof r->err) != 0 ||
      ut_write_random_weights(o->out, o->h.seed, r->err, sizeof r->err) != 0) {
    ut_log("error: %s", r->err);
    ut_finish(1);
  }
}

/* The trainer on the start model; OUT holds its config.json (with --name /
 * --version) and vocab.txt from then on, and every checkpoint copies them
 * from there. */
static void start_trainer(run *r) {
  const ut_options *o = &r->o;
  unimed_trainer_params tp = unimed_trainer_default_params();
  tp.lr = o->h.lr;
  tp.beta1 = o->h.beta1;
  tp.beta2 = o->h.beta2;
  tp.eps = o->h.eps;
  tp.weight_decay = o->h.wd;
  tp.grad_clip = o->h.grad_clip;
  tp.warmup = o->h.warmup;
  tp.mode = (unimed_train_mode)o->h.mode;
  tp.lazy_optimizer_state = 1; /* frozen tensors' moments never become resident */
  r->t = unimed_trainer_new(r->model_src, &tp, r->err, sizeof r->err);
  if (!r->t) {
    ut_log("error: %s", r->err);
    ut_finish(1);
  }
  if (!ut_same_dir(r->model_src, o->out)) {
    char a[4200], b[4200];
    for (int k = 0; k < 2 && ut_rank == 0; k++) {
      const char *f = k ? "vocab.txt" : "config.json";
      snprintf(a, sizeof a, "%s/%s", r->model_src, f);
      snprintf(b, sizeof b, "%s/%s", o->out, f);
      if (unimed_copy_file(a, b, r->err, sizeof r->err) != 0) {
        ut_log("error: cannot copy %s to %s: %s", a, b, r->err);
        ut_finish(1);
      }
    }
  }
  if (ut_rank == 0 && !o->config && ut_patch_config(o->out, o->name, o->version) != 0) {
    ut_log("error: %s/config.json: cannot update the name/version", o->out);
    ut_finish(1);
  }
  ut_barrier();
  unimed_trainer_set_model_dir(r->t, o->out);
  const unimed_config *c = unimed_trainer_config(r->t);
  if (c->image_size != r->cfg0.image_size) {
    ut_log("error: model image size %d, data decoded at %d", c->image_size, r->cfg0.image_size);
    ut_finish(1);
  }
  ut_log("model %s: %zu parameters, %zu trained (--mode %s)", c->name,
         unimed_trainer_n_params(r->t), unimed_trainer_n_trained(r->t),
         unimed_train_mode_name(tp.mode));
}

/* Steps per epoch and in all (fixed by the data and the options), then
 * --resume's checkpoint. */
static void plan_schedule(run *r) {
  ut_hparams *h = &r->o.h;
  const int B = h->batch, A = h->accumulate, R = ut_world, G = B * A * R;
  h->n_samples = r->data.n_images;
  h->data_fingerprint = ut_dataset_fingerprint(&r->data);
  h->steps_per_epoch = r->data.n_images / G;
  if (h->steps_per_epoch < 1) {
    ut_log("error: %d images are fewer than one step's %d (batch %d x accumulate %d x ranks %d)",
           r->data.n_images, G, B, A, R);
    ut_finish(1);
  }
  h->total_steps = h->steps_per_epoch * h->epochs;
  unimed_trainer_set_total_steps(r->t, h->total_steps);
  r->best = -1;
  if (r->o.resume) {
    ut_hparams saved;
    if (ut_state_load(r->o.resume, r->t, &saved, &r->best, r->err, sizeof r->err) != 0 ||
        ut_resume_check(&saved, h, r->err, sizeof r->err) != 0) {
      ut_log("error: %s", r->err);
      ut_finish(1);
    }
    ut_log("resumed at step %d of %d", unimed_trainer_steps_done(r->t), h->total_steps);
  }
  ut_log("%d steps (%d epochs x %d), %d samples per step, lr %g, warm-up %d", h->total_steps,
         h->epochs, h->steps_per_epoch, G, h->lr, h->warmup);
}

/* OUT/train_log.csv and OUT/val_log.csv (rank 0), appended to on --resume. */
static void open_csv_logs(const run *r, FILE **tlog, FILE **vlog) {
  *tlog = *vlog = NULL;
  if (ut_rank != 0) return;
  char path[2048];
  snprintf(path, sizeof path, "%s/train_log.csv", r->o.out);
  if (r->o.resume) ut_train_log_trim(path, unimed_trainer_steps_done(r->t));
  struct stat st;
  int fresh = stat(path, &st) != 0 || st.st_size == 0 || !r->o.resume;
  *tlog = fopen(path, fresh ? "w" : "a");
  if (*tlog && fresh) fprintf(*tlog, "step,epoch,lr,loss,grad_norm,images_per_s,elapsed_s\n");
  snprintf(path, sizeof path, "%s/val_log.csv", r->o.out);
  fresh = stat(path, &st) != 0 || st.st_size == 0 || !r->o.resume;
  *vlog = fopen(path, fresh ? "w" : "a");
  if (*vlog && fresh) fprintf(*vlog, "epoch,step,label_set,n,accuracy,balanced_accuracy,auc\n");
}

/* ---- training ---- */

/* Rank 0 at an epoch's end, a stop or the last step: the weights and the
 * trainer state, validation, the best epoch (--keep-best). */
static void checkpoint(run *r, int epoch, double loss, int end_of_epoch, FILE *vlog) {
  const ut_options *o = &r->o;
  const int step = unimed_trainer_steps_done(r->t);
  if (unimed_trainer_save(r->t, o->out, r->err, sizeof r->err) != 0 ||
      ut_state_save(o->out, r->t, &o->h, r->best) != 0) {
    ut_log("error: checkpoint: %s", r->err);
    ut_finish(1);
  }
  if (!end_of_epoch) return;
  ut_log("epoch %d done: loss %.4f, checkpoint %s (step %d)", epoch + 1, loss, o->out, step);
  if (!r->val.n_rows) return;
  double score = validate(o, &r->val, epoch + 1, step, vlog);
  if (o->keep_best && !isnan(score) && score > r->best) {
    r->best = score;
    char path[2048];
    snprintf(path, sizeof path, "%s/best", o->out);
    if (unimed_trainer_save(r->t, path, r->err, sizeof r->err) == 0)
      ut_log("best so far (mean validation AUC %.4f): %s", score, path);
    ut_state_save(o->out, r->t, &o->h, r->best);
  }
}

/* The optimiser steps from the current one to the last (or to a stop);
 * returns the exit status. */
static int train(run *r) {
  const ut_options *o = &r->o;
  const ut_hparams *h = &o->h;
  unimed_trainer *t = r->t;
  const unimed_config *c = unimed_trainer_config(t);
  const int B = h->batch, A = h->accumulate, R = ut_world, G = B * A * R;
  const int spe = h->steps_per_epoch;
  FILE *tlog, *vlog;
  open_csv_logs(r, &tlog, &vlog);

  ut_batcher bt;
  int bt_rc = ut_batcher_init(&bt, &r->data, h, B, c->text.context_length, c->mean, c->std);
  /* the tokenizer: the vocabulary only (the weights are not mapped twice) */
  char path[2048];
  snprintf(path, sizeof path, "%s/vocab.txt", o->out);
  unimed_vocab *tok = unimed_vocab_load(path, r->err, sizeof r->err);
  if (bt_rc != 0 || !tok) {
    ut_log("error: %s", tok ? "out of memory" : r->err);
    ut_finish(1);
  }

  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  const int tty = isatty(2) && !o->quiet;
  double t_start = now_s(), t_last = t_start;
  int steps_run = 0, rc = 0;
  const int start_step = unimed_trainer_steps_done(t);
  while (unimed_trainer_steps_done(t) < h->total_steps) {
    const int step = unimed_trainer_steps_done(t), epoch = step / spe, in_epoch = step % spe;
    if (bt.epoch != epoch && ut_epoch_order(&bt, epoch) != 0) {
      ut_log("error: out of memory");
      rc = 1;
      break;
    }
    double loss_sum = 0;
    for (int m = 0; m < A * R; m++) {
      if (m % R != ut_rank) continue;
      int pos = in_epoch * G + m * B;
      double loss = 0;
      if (ut_make_batch(&bt, tok, epoch, pos, B, r->err, sizeof r->err) != 0 ||
          unimed_trainer_accumulate(t, bt.pixels, (const int *const *)bt.ids, bt.lens,
                                    h->label_aware ? bt.groups : NULL, B, &loss, r->err,
                                    sizeof r->err) != 0) {
        ut_log("error: step %d: %s", step, r->err);
        ut_finish(1);
      }
      loss_sum += loss;
    }
    if (R > 1) {
      float *grads = unimed_trainer_gradients(t);
      const size_t n = unimed_trainer_n_params(t);
      ut_allreduce_sum(grads, n);
      const float inv = 1.0f / (float)R;
      for (size_t k = 0; k < n; k++) grads[k] *= inv;
      loss_sum = ut_allreduce_sum_d(loss_sum);
    }
    float lr;
    double gnorm = unimed_trainer_step(t, &lr);
    double loss = loss_sum / (A * R);
    const int done = unimed_trainer_steps_done(t);
    steps_run++;
    double now = now_s(), ips = steps_run * (double)G / (now - t_start);
    if (!isfinite(loss)) {
      ut_log("error: the loss is %f at step %d (lower --lr?)", loss, step);
      ut_finish(1);
    }
    if (ut_rank == 0) {
      if (tlog) {
        fprintf(tlog, "%d,%d,%.8g,%.8f,%.6g,%.2f,%.2f\n", done, epoch + 1, lr, loss, gnorm, ips,
                now - t_start);
        fflush(tlog);
      }
      int every = spe / 10 > 0 ? spe / 10 : 1;
      if (!o->quiet && (tty ? now - t_last > 0.25 : (in_epoch + 1) % every == 0)) {
        double eta = (h->total_steps - done) * (now - t_start) / steps_run;
        progress(tty, epoch + 1, h->epochs, in_epoch + 1, spe, loss, ips, eta);
        t_last = now;
      }
    }
    int end_of_epoch = done % spe == 0;
    int stop = ut_allreduce_max_i(g_stop || (o->max_steps && done >= o->max_steps));
    if (end_of_epoch || stop || done == h->total_steps) {
      if (ut_rank == 0) {
        if (tty && !o->quiet) fputc('\n', stderr);
        checkpoint(r, epoch, loss, end_of_epoch, vlog);
      }
      ut_barrier();
    }
    if (stop && done < h->total_steps) {
      ut_log("stopped at step %d (%s); continue with --resume %s", done,
             g_stop ? "signal" : "--max-steps", o->out);
      break;
    }
  }
  const int done = unimed_trainer_steps_done(t);
  if (done == h->total_steps && steps_run + start_step == h->total_steps)
    ut_log("done: %d steps in %.1fs, model in %s", steps_run, now_s() - t_start, o->out);
  else if (done == h->total_steps)
    ut_log("done: %d steps (this run) in %.1fs, model in %s", steps_run, now_s() - t_start,
           o->out);
  if (tlog) fclose(tlog);
  if (vlog) fclose(vlog);
  ut_batcher_free(&bt);
  unimed_vocab_free(tok);
  return rc;
}

/* ---- main ---- */

int main(int argc, char **argv) {
  ut_ranks_init(&argc, &argv);
  static run r; /* static: large, and reachable until exit */
  ut_options *o = &r.o;
  if (ut_parse_args(argc, argv, o) != 0) ut_finish(2);
  o->h.world = ut_world;
  if (o->threads) unimed_set_threads(o->threads);
  if (ut_rank == 0 && ut_mkdir_p(o->out) != 0) {
    fprintf(stderr, "unimed-train: %s: %s\n", o->out, strerror(errno));
    ut_finish(1);
  }
  ut_barrier();
  char path[2048];
  snprintf(path, sizeof path, "%s/train.log", o->out);
  ut_log_to(path, o->resume ? "a" : "w");
  if (ut_world > 1) ut_log("MPI: %d ranks", ut_world);

  load_label_sets(&r);
  r.model_src = o->init ? o->init : o->resume;
  read_image_geometry(&r);
  load_data(&r);
  if (o->config && ut_rank == 0) make_scratch_model(&r);
  ut_barrier();
  if (o->config) r.model_src = o->out;
  start_trainer(&r);
  plan_schedule(&r);
  int rc = train(&r);

  unimed_trainer_free(r.t);
  ut_dataset_free(&r.data);
  ut_dataset_free(&r.val);
  for (int i = 0; i < o->n_sets; i++) unimed_label_set_free(r.sets[i]);
  free(r.sets);
  ut_finish(rc);
}
