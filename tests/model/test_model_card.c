/* The model-card parser (model/model_card.c): a good card is read and
 * answers "is this label set listed?"; a model directory without a card is
 * not an error; every malformed card fails with one line naming the file
 * and the field at fault.
 *
 * usage: test_model_card (works in a fresh temporary folder) */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "unimed_model.h"

static int failures = 0;

#define CHECK(cond, ...)                          \
  do {                                            \
    if (!(cond)) {                                \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);               \
      fprintf(stderr, "\n");                      \
      failures++;                                 \
    }                                             \
  } while (0)

static char dir[256];
static char card_path[512];

static void write_card(const char *text, size_t len) {
  FILE *f = fopen(card_path, "wb");
  if (!f) {
    fprintf(stderr, "cannot create %s: %s\n", card_path, strerror(errno));
    exit(1);
  }
  fwrite(text, 1, len, f);
  fclose(f);
}

#define GOOD_CARD                                                                          \
  "{\"format\": \"unimed-model-card/1\", \"name\": \"demo\", \"version\": \"demo-2\",\n"   \
  " \"model_hash\": \"fbe0e9bda593c2eb\", \"intended_use\": \"tests\", \"clinical_use\": false,\n" \
  " \"future_field\": {\"readers\": \"ignore it\"},\n"                                      \
  " \"label_sets\": [\n"                                                                    \
  "  {\"name\": \"chest\", \"version\": \"1.0.0\", \"question\": \"pneumonia or normal\",\n" \
  "   \"file\": \"labelsets/chest.json\", \"modalities\": [\"DX\"],\n"                      \
  "   \"test\": {\"n\": 624, \"accuracy\": 0.9, \"auc\": 0.96}},\n"                         \
  "  {\"name\": \"breast\", \"version\": \"1.1.0\"},\n"                                     \
  "  {\"name\": \"breast\", \"version\": \"1.2.0\"}]}\n"

static void test_good(void) {
  write_card(GOOD_CARD, strlen(GOOD_CARD));
  unimed_model_card *c = NULL;
  char err[512] = "";
  int rc = unimed_model_card_load(dir, &c, err, sizeof err);
  CHECK(rc == 0 && c, "good card: rc %d, %s", rc, err);
  if (!c) return;
  CHECK(strcmp(c->path, card_path) == 0, "path %s", c->path);
  CHECK(strcmp(c->name, "demo") == 0 && strcmp(c->version, "demo-2") == 0, "name/version");
  CHECK(strcmp(c->model_hash, "fbe0e9bda593c2eb") == 0, "model_hash %s", c->model_hash);
  CHECK(strcmp(c->intended_use, "tests") == 0, "intended_use");
  CHECK(c->n_label_sets == 3, "%d label sets", c->n_label_sets);
  CHECK(c->n_label_sets >= 2 && strcmp(c->label_sets[0].question, "pneumonia or normal") == 0 &&
            strcmp(c->label_sets[1].question, "") == 0,
        "questions");
  /* listed: name and version equal */
  CHECK(unimed_model_card_find(c, "chest", "1.0.0") == &c->label_sets[0], "chest 1.0.0 listed");
  CHECK(unimed_model_card_find(c, "chest", "1.0.1") == NULL, "chest 1.0.1 is another question");
  CHECK(unimed_model_card_find(c, "Chest", "1.0.0") == NULL, "names are case-sensitive");
  char why[512];
  CHECK(unimed_model_card_check(c, "fbe0e9bda593c2eb", "chest", "1.0.0", why, sizeof why) == 0 &&
            why[0] == 0,
        "listed set: no warning (%s)", why);
  CHECK(unimed_model_card_check(c, "fbe0e9bda593c2eb", "modality", "1.0.0", why, sizeof why) == 1 &&
            strstr(why, "\"modality\" 1.0.0 is not validated for this model") &&
            strstr(why, "does not list it"),
        "unlisted set: %s", why);
  CHECK(unimed_model_card_check(c, "fbe0e9bda593c2eb", "breast", "1.0.0", why, sizeof why) == 1 &&
            strstr(why, "in version 1.1.0, 1.2.0 only"),
        "another version: the listed ones named: %s", why);
  /* a card about other weights vouches for nothing */
  CHECK(unimed_model_card_check(c, "0123456789abcdef", "chest", "1.0.0", why, sizeof why) == 1 &&
            strstr(why, "other weights") && strstr(why, "fbe0e9bda593c2eb") &&
            strstr(why, "0123456789abcdef"),
        "other weights: %s", why);
  unimed_model_card_free(c);

  /* no model_hash, no label sets: every set unlisted, no hash comparison */
  const char *empty_sets = "{\"format\": \"unimed-model-card/1\", \"label_sets\": []}";
  write_card(empty_sets, strlen(empty_sets));
  rc = unimed_model_card_load(dir, &c, err, sizeof err);
  CHECK(rc == 0 && c && c->n_label_sets == 0 && c->model_hash[0] == 0, "empty label_sets: %s", err);
  if (c) {
    CHECK(unimed_model_card_check(c, "0123456789abcdef", "chest", "1.0.0", why, sizeof why) == 1 &&
              strstr(why, "does not list it"),
          "empty card: every set unlisted: %s", why);
    unimed_model_card_free(c);
  }
}

static void test_missing(void) {
  unlink(card_path);
  unimed_model_card *c = (unimed_model_card *)1;
  char err[512] = "";
  int rc = unimed_model_card_load(dir, &c, err, sizeof err);
  CHECK(rc == 0 && c == NULL && err[0] == 0, "no card: rc %d, card %p, err '%s'", rc, (void *)c, err);
  char why[64] = "x";
  CHECK(unimed_model_card_check(NULL, "h", "chest", "1.0.0", why, sizeof why) == 0 && why[0] == 0,
        "no card: nothing flagged");
}

typedef struct {
  const char *name, *text, *field; /* field: what the error must name */
} bad_case;

static const bad_case bad_cases[] = {
    {"not JSON", "{\"format\": \"unimed-model-card/1\",", "not valid JSON"},
    {"not an object", "[1, 2]", "must be a JSON object"},
    {"empty file", "", "not valid JSON"},
    {"no format", "{\"label_sets\": []}", "format: missing"},
    {"other format", "{\"format\": \"unimed-model-card/2\", \"label_sets\": []}",
     "format: \"unimed-model-card/2\" is not a format"},
    {"format not a string", "{\"format\": 1, \"label_sets\": []}", "format: must be the string \"unimed-model-card/1\""},
    {"no label_sets", "{\"format\": \"unimed-model-card/1\"}", "label_sets: missing"},
    {"label_sets an object", "{\"format\": \"unimed-model-card/1\", \"label_sets\": {}}",
     "label_sets: must be an array"},
    {"entry not an object", "{\"format\": \"unimed-model-card/1\", \"label_sets\": [\"chest\"]}",
     "label_sets[0]: must be an object"},
    {"entry without name",
     "{\"format\": \"unimed-model-card/1\", \"label_sets\": [{\"name\": \"a\", \"version\": \"1\"}, "
     "{\"version\": \"1\"}]}",
     "label_sets[1].name: missing"},
    {"entry without version", "{\"format\": \"unimed-model-card/1\", \"label_sets\": [{\"name\": \"a\"}]}",
     "label_sets[0].version: missing"},
    {"version a number",
     "{\"format\": \"unimed-model-card/1\", \"label_sets\": [{\"name\": \"a\", \"version\": 1.0}]}",
     "label_sets[0].version: must be a non-empty string"},
    {"empty name",
     "{\"format\": \"unimed-model-card/1\", \"label_sets\": [{\"name\": \"\", \"version\": \"1\"}]}",
     "label_sets[0].name: must be a non-empty string"},
    {"question not a string",
     "{\"format\": \"unimed-model-card/1\", \"label_sets\": [{\"name\": \"a\", \"version\": \"1\", "
     "\"question\": [\"q\"]}]}",
     "label_sets[0].question: must be a string"},
    {"model_hash not a string", "{\"format\": \"unimed-model-card/1\", \"model_hash\": 12, \"label_sets\": []}",
     "model_hash: must be a string"},
    {"name not a string", "{\"format\": \"unimed-model-card/1\", \"name\": null, \"label_sets\": []}",
     "name: must be a string"},
};

static void test_bad(void) {
  for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
    const bad_case *b = &bad_cases[i];
    write_card(b->text, strlen(b->text));
    unimed_model_card *c = (unimed_model_card *)1;
    char err[512] = "";
    int rc = unimed_model_card_load(dir, &c, err, sizeof err);
    CHECK(rc == -1 && c == NULL, "%s: rc %d", b->name, rc);
    CHECK(strncmp(err, card_path, strlen(card_path)) == 0 && strstr(err, b->field),
          "%s: error '%s' should name %s and '%s'", b->name, err, card_path, b->field);
    printf("ok   %-24s %s\n", b->name, err);
  }
  /* a NUL byte inside */
  write_card("{\"format\"\0: 1}", 14);
  unimed_model_card *c = NULL;
  char err[512] = "";
  CHECK(unimed_model_card_load(dir, &c, err, sizeof err) == -1 && strstr(err, "NUL byte"),
        "NUL byte: %s", err);
  /* larger than 1 MiB */
  size_t big = (1u << 20) + 10;
  char *text = malloc(big);
  if (text) {
    memset(text, ' ', big);
    text[0] = '{';
    text[big - 1] = '}';
    write_card(text, big);
    free(text);
    CHECK(unimed_model_card_load(dir, &c, err, sizeof err) == -1 && strstr(err, "larger than 1 MiB"),
          "huge card: %s", err);
  }
  /* there, but not a file: an error, not "no card" */
  unlink(card_path);
  if (mkdir(card_path, 0755) == 0) {
    CHECK(unimed_model_card_load(dir, &c, err, sizeof err) == -1 &&
              strncmp(err, card_path, strlen(card_path)) == 0,
          "a folder named model-card.json: %s", err);
    rmdir(card_path);
  }
}

int main(void) {
  const char *tmp = getenv("TMPDIR");
  snprintf(dir, sizeof dir, "%s/unimed-card-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(dir)) {
    fprintf(stderr, "mkdtemp: %s\n", strerror(errno));
    return 1;
  }
  snprintf(card_path, sizeof card_path, "%s/model-card.json", dir);
  test_good();
  test_missing();
  test_bad();
  unlink(card_path);
  rmdir(dir);
  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("model card parser: all checks passed\n");
  return 0;
}
