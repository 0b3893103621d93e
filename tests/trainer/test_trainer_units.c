/* Unit tests of the trainer's data helpers: the CSV reader, ROC AUC and
 * the metrics, the counter-based random numbers, captions from a label set
 * and the vocabulary builder. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataset.h"
#include "evaluate.h"
#include "scratch.h"
#include "unimed_train.h"

static int failures = 0;
#define CHECK(cond)                                                  \
  do {                                                               \
    if (!(cond)) {                                                   \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      failures++;                                                    \
    }                                                                \
  } while (0)

static void test_csv(void) {
  const char *text = "a,b,c\r\n\"x, y\",\"he said \"\"hi\"\"\",\n\"multi\nline\",2,3\nlast";
  const char *p = text, *end = text + strlen(text);
  char buf[256];
  char *f[8];
  CHECK(ut_csv_record(&p, end, buf, sizeof buf, f, 8) == 3);
  CHECK(!strcmp(f[0], "a") && !strcmp(f[2], "c"));
  CHECK(ut_csv_record(&p, end, buf, sizeof buf, f, 8) == 3);
  CHECK(!strcmp(f[0], "x, y") && !strcmp(f[1], "he said \"hi\"") && !strcmp(f[2], ""));
  CHECK(ut_csv_record(&p, end, buf, sizeof buf, f, 8) == 3);
  CHECK(!strcmp(f[0], "multi\nline") && !strcmp(f[1], "2"));
  CHECK(ut_csv_record(&p, end, buf, sizeof buf, f, 8) == 1);
  CHECK(!strcmp(f[0], "last"));
  CHECK(ut_csv_record(&p, end, buf, sizeof buf, f, 8) == 0);
  const char *big = "1,2,3,4,5";
  p = big;
  CHECK(ut_csv_record(&p, big + strlen(big), buf, sizeof buf, f, 3) == -1); /* too many fields */
}

static void test_auc(void) {
  const float s1[] = {0.1f, 0.4f, 0.35f, 0.8f};
  const int y1[] = {0, 0, 1, 1};
  CHECK(fabs(ut_roc_auc(s1, y1, 4) - 0.75) < 1e-12); /* sklearn's example */
  const float s2[] = {0.5f, 0.5f, 0.5f, 0.5f};
  CHECK(fabs(ut_roc_auc(s2, y1, 4) - 0.5) < 1e-12); /* ties: half credit */
  const int y3[] = {1, 1, 1, 1};
  CHECK(isnan(ut_roc_auc(s1, y3, 4)));
  /* metrics: 3 classes */
  const float probs[] = {0.7f, 0.2f, 0.1f, 0.1f, 0.8f, 0.1f, 0.5f, 0.3f, 0.2f,
                         0.2f, 0.2f, 0.6f, 0.1f, 0.6f, 0.3f};
  const int truth[5 * UT_MAX_LABELS] = {[0] = 0, [UT_MAX_LABELS] = 1, [2 * UT_MAX_LABELS] = 1,
                                        [3 * UT_MAX_LABELS] = 2, [4 * UT_MAX_LABELS] = 2};
  const int nt[] = {1, 1, 1, 1, 1};
  ut_metrics m;
  CHECK(ut_metrics_compute(probs, truth, nt, 5, 3, &m) == 0);
  CHECK(m.n == 5 && fabs(m.accuracy - 0.6) < 1e-12);
  /* recalls: class 0 1/1, class 1 1/2, class 2 1/2 */
  CHECK(fabs(m.balanced_accuracy - (1.0 + 0.5 + 0.5) / 3) < 1e-12);
  CHECK(m.confusion[0] == 1 && m.confusion[3 + 0] == 1 && m.confusion[3 + 1] == 1);
  CHECK(m.confusion[6 + 1] == 1 && m.confusion[6 + 2] == 1);
  CHECK(m.auc > 0.5 && m.auc <= 1.0);
  ut_metrics_free(&m);
}

static void test_hash(void) {
  CHECK(ut_hash3(1, 2, 3) == ut_hash3(1, 2, 3));
  CHECK(ut_hash3(1, 2, 3) != ut_hash3(1, 2, 4));
  double mean = 0;
  for (int i = 0; i < 10000; i++) mean += ut_unit(ut_hash3(42, 0, (uint64_t)i));
  mean /= 10000;
  CHECK(fabs(mean - 0.5) < 0.02);
}

static void test_captions(const char *dir) {
  char path[1024], err[512];
  snprintf(path, sizeof path, "%s/set.json", dir);
  FILE *fp = fopen(path, "w");
  fputs("{\"name\":\"t\",\"version\":\"1\",\"scoring\":\"softmax\","
        "\"templates\":[\"an image of {}.\",\"{} is seen.\"],"
        "\"labels\":[{\"name\":\"cat\",\"code\":{\"value\":\"1\",\"scheme\":\"99T\",\"meaning\":\"Cat\"},"
        "\"synonyms\":[\"kitten\"]},"
        "{\"name\":\"dog\",\"code\":{\"value\":\"2\",\"scheme\":\"99T\",\"meaning\":\"Dog\"}}]}",
        fp);
  fclose(fp);
  unimed_label_set *ls = unimed_label_set_load(path, err, sizeof err);
  CHECK(ls != NULL);
  if (!ls) return;
  ut_dataset d;
  memset(&d, 0, sizeof d);
  d.sets = &ls;
  d.n_sets = 1;
  ut_row r;
  memset(&r, 0, sizeof r);
  r.set = 0;
  r.n_labels = 1;
  r.labels[0] = 0;
  int seen_syn = 0, seen_name = 0;
  for (uint64_t h = 0; h < 64; h++) {
    char *c = ut_caption(&d, &r, ut_hash3(h, 0, 0));
    CHECK(c && (strstr(c, "cat") || strstr(c, "kitten")));
    seen_syn += strstr(c, "kitten") != NULL;
    seen_name += strstr(c, "cat") != NULL;
    free(c);
  }
  CHECK(seen_syn > 0 && seen_name > 0);
  r.n_labels = 2;
  r.labels[1] = 1;
  char *c = ut_caption(&d, &r, 5);
  CHECK(c && strstr(c, "dog") && strstr(c, " and "));
  free(c);
  /* a report wins half of the draws */
  r.report = "free text report";
  int reports = 0;
  for (uint64_t h = 0; h < 200; h++) {
    char *t = ut_caption(&d, &r, ut_hash3(h, 1, 1));
    reports += !strcmp(t, "free text report");
    free(t);
  }
  CHECK(reports > 60 && reports < 140);
  /* vocabulary from the corpus */
  unimed_vocab_builder *vb = unimed_vocab_builder_new();
  ut_caption_corpus(&d, unimed_vocab_builder_add, vb);
  unimed_vocab_builder_add(vb, "Déjà vu, 42!");
  snprintf(path, sizeof path, "%s/vocab.txt", dir);
  int n = unimed_vocab_builder_write(vb, path, 1000, err, sizeof err);
  unimed_vocab_builder_free(vb);
  CHECK(n > 70);
  fp = fopen(path, "r");
  char line[128];
  int has_kitten = 0, has_pad = 0, has_hash_a = 0;
  while (fp && fgets(line, sizeof line, fp)) {
    line[strcspn(line, "\n")] = 0;
    has_kitten |= !strcmp(line, "kitten");
    has_pad |= !strcmp(line, "[PAD]");
    has_hash_a |= !strcmp(line, "##a");
  }
  if (fp) fclose(fp);
  CHECK(has_kitten && has_pad && has_hash_a);
  unimed_label_set_free(ls);
}

int main(int argc, char **argv) {
  test_csv();
  test_auc();
  test_hash();
  test_captions(argc > 1 ? argv[1] : ".");
  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("trainer units: all checks passed\n");
  return 0;
}
