/* Test driver for the label sets of the model library (model/labelset_*.c).
 *
 *   labelset_tool load FILE...
 *       Loads each set; prints "ok NAME LABELS HASH" per file, or the error
 *       on stderr and exit 1 at the first bad file.
 *   labelset_tool dump FILE
 *       The loaded set as JSON (expanded prompts and negatives per label).
 *   labelset_tool applies
 *       Built-in matching cases for unimed_label_set_applies().
 *   labelset_tool score MODEL_DIR CACHE_DIR|- GOLDEN_DIR OUT.json FILE...
 *       Encodes GOLDEN_DIR/img*.f32, embeds every set (through the cache
 *       unless "-") and writes per set the class embeddings and per image
 *       the label probabilities.
 *   labelset_tool cache MODEL_DIR SET_FILE WORK_DIR
 *       Embedding-cache behaviour: created (with missing parent dirs),
 *       read back instead of recomputed, corrupt files ignored and rewritten. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test_util.h"
#include "unimed_model.h"

static int failures = 0;

static void expect(int cond, const char *what) {
  printf("%-64s %s\n", what, cond ? "ok" : "FAIL");
  if (!cond) failures++;
}

static cJSON *strings_json(char **v, int n) {
  cJSON *a = cJSON_CreateArray();
  for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateString(v[i]));
  return a;
}

static cJSON *floats_json(const float *v, int n) {
  cJSON *a = cJSON_CreateArray();
  for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber((double)v[i]));
  return a;
}

static int write_json(const char *path, cJSON *j) {
  char *s = cJSON_Print(j);
  FILE *fp = fopen(path, "w");
  int ok = fp && s && fputs(s, fp) >= 0;
  if (fp) ok = fclose(fp) == 0 && ok;
  free(s);
  if (!ok) fprintf(stderr, "cannot write %s\n", path);
  return ok ? 0 : -1;
}

static cJSON *dump_set(const unimed_label_set *ls) {
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "path", ls->path);
  cJSON_AddStringToObject(j, "name", ls->name);
  cJSON_AddStringToObject(j, "version", ls->version);
  cJSON_AddStringToObject(j, "description", ls->description);
  cJSON_AddStringToObject(j, "hash", ls->hash);
  cJSON_AddStringToObject(j, "scoring", ls->scoring == UNIMED_SCORING_BINARY ? "binary" : "softmax");
  cJSON_AddItemToObject(j, "modalities", strings_json(ls->modalities, ls->n_modalities));
  cJSON_AddItemToObject(j, "body_parts", strings_json(ls->body_parts, ls->n_body_parts));
  cJSON_AddItemToObject(j, "sop_classes", strings_json(ls->sop_classes, ls->n_sop_classes));
  cJSON_AddItemToObject(j, "templates", strings_json(ls->templates, ls->n_templates));
  cJSON_AddNumberToObject(j, "orthanc_max_per_study", ls->orthanc_max);
  cJSON *labels = cJSON_AddArrayToObject(j, "labels");
  for (int i = 0; i < ls->n_labels; i++) {
    const unimed_label *l = &ls->labels[i];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", l->name);
    cJSON *code = cJSON_AddObjectToObject(o, "code");
    cJSON_AddStringToObject(code, "value", l->code.value);
    cJSON_AddStringToObject(code, "scheme", l->code.scheme);
    cJSON_AddStringToObject(code, "meaning", l->code.meaning);
    cJSON_AddItemToObject(o, "synonyms", strings_json(l->synonyms, l->n_synonyms));
    cJSON_AddItemToObject(o, "prompts", strings_json(l->prompts, l->n_prompts));
    cJSON_AddItemToObject(o, "negatives", strings_json(l->negatives, l->n_negatives));
    if (l->orthanc_label)
      cJSON_AddStringToObject(o, "orthanc_label", l->orthanc_label);
    else
      cJSON_AddNullToObject(o, "orthanc_label");
    cJSON_AddNumberToObject(o, "orthanc_threshold", l->orthanc_threshold);
    cJSON_AddItemToArray(labels, o);
  }
  return j;
}

static int cmd_load(int argc, char **argv) {
  char err[1024];
  for (int i = 0; i < argc; i++) {
    unimed_label_set *ls = unimed_label_set_load(argv[i], err, sizeof err);
    if (!ls) {
      fprintf(stderr, "%s\n", err);
      return 1;
    }
    printf("ok %s %d %s\n", ls->name, ls->n_labels, ls->hash);
    unimed_label_set_free(ls);
  }
  return 0;
}

static int cmd_dump(const char *file) {
  char err[1024];
  unimed_label_set *ls = unimed_label_set_load(file, err, sizeof err);
  if (!ls) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  cJSON *j = dump_set(ls);
  char *s = cJSON_Print(j);
  puts(s);
  free(s);
  cJSON_Delete(j);
  unimed_label_set_free(ls);
  return 0;
}

/* ---- applies ---- */

static int cmd_applies(void) {
  char dir[] = "/tmp/labelset_applies_XXXXXX";
  if (!mkdtemp(dir)) return 2;
  char path[256], err[1024];
  snprintf(path, sizeof path, "%s/filtered.json", dir);
  FILE *fp = fopen(path, "w");
  fputs("{\"name\": \"filtered\", \"version\": \"1\", \"scoring\": \"softmax\",\n"
        " \"applies_to\": {\"modalities\": [\"CR\", \"dx\"], \"body_parts\": [\"CHEST\"],\n"
        "                \"sop_classes\": [\"1.2.840.10008.5.1.4.1.1.1.1\"]},\n"
        " \"templates\": [\"an image of {}.\"],\n"
        " \"labels\": [{\"name\": \"a\", \"code\": {\"value\": \"UM-1\", \"scheme\": \"99UNIMED\","
        " \"meaning\": \"A\"}},\n"
        "            {\"name\": \"b\", \"code\": {\"value\": \"UM-2\", \"scheme\": \"99UNIMED\","
        " \"meaning\": \"B\"}}]}\n", fp);
  fclose(fp);
  unimed_label_set *ls = unimed_label_set_load(path, err, sizeof err);
  if (!ls) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  const char *dx = "1.2.840.10008.5.1.4.1.1.1.1";
  expect(unimed_label_set_applies(ls, "CR", "CHEST", dx) == 1, "CR CHEST DX-class: applies");
  expect(unimed_label_set_applies(ls, "DX", "CHEST", dx) == 1, "DX (set says dx): applies");
  expect(unimed_label_set_applies(ls, "cr", "chest", dx) == 1, "lower case cr/chest: applies");
  expect(unimed_label_set_applies(ls, "CR ", " CHEST ", dx) == 1, "space-padded values: applies");
  expect(unimed_label_set_applies(ls, "CT", "CHEST", dx) == 0, "CT: does not apply");
  expect(unimed_label_set_applies(ls, "CR", "KNEE", dx) == 0, "KNEE: does not apply");
  expect(unimed_label_set_applies(ls, "CRX", "CHEST", dx) == 0, "CRX (prefix match): no");
  expect(unimed_label_set_applies(ls, "C", "CHEST", dx) == 0, "C (prefix of CR): no");
  expect(unimed_label_set_applies(ls, "CR", "CHEST", "1.2.840.10008.5.1.4.1.1.2") == 0,
         "CT image storage SOP class: does not apply");
  expect(unimed_label_set_applies(ls, "CR", "CHEST", "1.2.840.10008.5.1.4.1.1.1.1.1") == 0,
         "SOP class with extra component: does not apply");
  expect(unimed_label_set_applies(ls, NULL, "CHEST", dx) == 1, "unknown modality (NULL): applies");
  expect(unimed_label_set_applies(ls, "", "", "") == 1, "all unknown (\"\"): applies");
  expect(unimed_label_set_applies(ls, NULL, NULL, NULL) == 1, "all unknown (NULL): applies");
  expect(unimed_label_set_applies(ls, "  ", NULL, NULL) == 1, "blank modality = unknown: applies");
  expect(unimed_label_set_applies(ls, NULL, "HEAD", NULL) == 0, "unknown modality, HEAD: no");
  unimed_label_set_free(ls);
  unlink(path);

  snprintf(path, sizeof path, "%s/any.json", dir);
  fp = fopen(path, "w");
  fputs("{\"name\": \"any\", \"version\": \"1\", \"scoring\": \"binary\",\n"
        " \"applies_to\": {\"modalities\": [], \"body_parts\": []},\n"
        " \"templates\": [\"an image of {}.\"], \"negative_templates\": [\"no {}.\"],\n"
        " \"labels\": [{\"name\": \"a\", \"code\": {\"value\": \"UM-1\", \"scheme\": \"99UNIMED\","
        " \"meaning\": \"A\"}}]}\n", fp);
  fclose(fp);
  ls = unimed_label_set_load(path, err, sizeof err);
  if (!ls) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  expect(unimed_label_set_applies(ls, "MR", "KNEE", "1.2.3") == 1, "empty filters: applies to MR");
  expect(unimed_label_set_applies(ls, "SM", NULL, NULL) == 1, "empty filters: applies to SM");
  unimed_label_set_free(ls);
  unlink(path);
  rmdir(dir);
  return failures ? 1 : 0;
}

/* ---- score ---- */

static float *read_f32(const char *path, size_t n) {
  FILE *fp = fopen(path, "rb");
  if (!fp) return NULL;
  float *v = malloc(n * sizeof(float));
  size_t got = v ? fread(v, sizeof(float), n, fp) : 0;
  int extra = fgetc(fp) != EOF;
  fclose(fp);
  if (got != n || extra) {
    free(v);
    return NULL;
  }
  return v;
}

static int cmd_score(int argc, char **argv) {
  if (argc < 5) return 2;
  const char *model_dir = argv[0], *cache = strcmp(argv[1], "-") ? argv[1] : NULL;
  const char *golden = argv[2], *out_path = argv[3];
  char err[1024], path[2048];
  unimed_model *m = unimed_model_load(model_dir, err, sizeof err);
  if (!m) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  const unimed_config *cfg = unimed_model_config(m);
  const int S = cfg->image_size, E = cfg->embed_dim;
  size_t px = (size_t)3 * S * S;
  int n_img = 0;
  float *pixels = NULL;
  for (;; n_img++) {
    snprintf(path, sizeof path, "%s/img%d.f32", golden, n_img);
    if (access(path, R_OK) != 0) break;
    float *img = read_f32(path, px);
    if (!img) {
      fprintf(stderr, "%s: not %zu float32 values\n", path, px);
      return 1;
    }
    pixels = realloc(pixels, (size_t)(n_img + 1) * px * sizeof(float));
    memcpy(pixels + (size_t)n_img * px, img, px * sizeof(float));
    free(img);
  }
  if (n_img == 0) {
    fprintf(stderr, "%s: no img*.f32\n", golden);
    return 1;
  }
  float *iemb = malloc((size_t)n_img * E * sizeof(float));
  if (unimed_encode_images(m, pixels, n_img, iemb, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  cJSON *root = cJSON_CreateObject();
  cJSON_AddStringToObject(root, "model_hash", unimed_model_hash(m));
  cJSON *sets = cJSON_AddArrayToObject(root, "sets");
  for (int f = 4; f < argc; f++) {
    unimed_label_set *ls = unimed_label_set_load(argv[f], err, sizeof err);
    if (!ls) {
      fprintf(stderr, "%s\n", err);
      return 1;
    }
    unimed_label_embeddings e;
    if (unimed_label_set_embed(m, ls, cache, &e, err, sizeof err) != 0) {
      fprintf(stderr, "%s\n", err);
      return 1;
    }
    cJSON *js = dump_set(ls);
    cJSON *pos = cJSON_AddArrayToObject(js, "positive");
    cJSON *neg = cJSON_AddArrayToObject(js, "negative");
    for (int i = 0; i < e.n_labels; i++) {
      cJSON_AddItemToArray(pos, floats_json(e.positive + (size_t)i * E, E));
      if (e.negative) cJSON_AddItemToArray(neg, floats_json(e.negative + (size_t)i * E, E));
    }
    cJSON *probs = cJSON_AddArrayToObject(js, "probs");
    float *p = malloc((size_t)ls->n_labels * sizeof(float));
    for (int k = 0; k < n_img; k++) {
      unimed_label_set_score(m, ls, &e, iemb + (size_t)k * E, p);
      cJSON_AddItemToArray(probs, floats_json(p, ls->n_labels));
    }
    free(p);
    cJSON_AddItemToArray(sets, js);
    unimed_label_embeddings_free(&e);
    unimed_label_set_free(ls);
  }
  int rc = write_json(out_path, root);
  cJSON_Delete(root);
  free(iemb);
  free(pixels);
  unimed_model_free(m);
  return rc ? 1 : 0;
}

/* ---- cache ---- */

static int file_id(const char *path, struct stat *st) { return stat(path, st); }

static int same_embeddings(const unimed_label_embeddings *a, const unimed_label_embeddings *b) {
  if (a->n_labels != b->n_labels || a->dim != b->dim || !a->negative != !b->negative) return 0;
  size_t n = (size_t)a->n_labels * a->dim;
  if (memcmp(a->positive, b->positive, n * sizeof(float))) return 0;
  return !a->negative || memcmp(a->negative, b->negative, n * sizeof(float)) == 0;
}

static uint64_t fnv(const unsigned char *p, size_t n) {
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n; i++) {
    h ^= p[i];
    h *= 1099511628211ULL;
  }
  return h;
}

static int spit(const char *path, const unsigned char *b, size_t n) {
  FILE *fp = fopen(path, "wb");
  if (!fp) return -1;
  size_t w = fwrite(b, 1, n, fp);
  return fclose(fp) == 0 && w == n ? 0 : -1;
}

static int cmd_cache(const char *model_dir, const char *set_file, const char *work) {
  char err[1024], dir[2048], file[2600];
  unimed_model *m = unimed_model_load(model_dir, err, sizeof err);
  unimed_label_set *ls = m ? unimed_label_set_load(set_file, err, sizeof err) : NULL;
  if (!ls) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  /* a fresh, not yet existing, nested cache directory */
  snprintf(dir, sizeof dir, "%s/run-%ld/nested/cache", work, (long)getpid());
  snprintf(file, sizeof file, "%s/%s-%s.emb", dir, unimed_model_hash(m), ls->hash);
  unimed_label_embeddings ref, e;
  if (unimed_label_set_embed(m, ls, NULL, &ref, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  struct stat st0, st1;
  expect(file_id(file, &st0) != 0, "no cache file before the first embed");
  int rc = unimed_label_set_embed(m, ls, dir, &e, err, sizeof err);
  expect(rc == 0, "first embed with a cache dir that does not exist yet");
  expect(file_id(file, &st0) == 0, "cache file <model-hash>-<set-hash>.emb created");
  const size_t per = (size_t)ls->n_labels * ref.dim;
  const int binary = ref.negative != NULL;
  size_t want = 64 + per * 4 * (binary ? 2 : 1);
  expect((size_t)st0.st_size == want, "cache file size = 64-byte header + float32 data");
  expect(rc == 0 && same_embeddings(&ref, &e), "first embed = uncached computation");
  unimed_label_embeddings_free(&e);

  /* second embed reads the file: same inode (not rewritten), same values */
  rc = unimed_label_set_embed(m, ls, dir, &e, err, sizeof err);
  file_id(file, &st1);
  expect(rc == 0 && same_embeddings(&ref, &e), "second embed = same embeddings");
  expect(st1.st_ino == st0.st_ino && st1.st_mtim.tv_sec == st0.st_mtim.tv_sec &&
             st1.st_mtim.tv_nsec == st0.st_mtim.tv_nsec,
         "second embed leaves the cache file untouched");
  unimed_label_embeddings_free(&e);

  /* proof that the cache is read, not recomputed: a valid file holding
   * other (still normalised) embeddings is returned as is */
  size_t n = 0;
  unsigned char *b = (unsigned char *)tu_read_file(file, &n);
  if (!b || n != want) {
    fprintf(stderr, "cannot read %s\n", file);
    return 1;
  }
  unsigned char *swapped = malloc(n);
  memcpy(swapped, b, n);
  size_t row = (size_t)ref.dim * 4;
  if (ls->n_labels > 1) { /* swap the first two positive rows */
    memcpy(swapped + 64, b + 64 + row, row);
    memcpy(swapped + 64 + row, b + 64, row);
  } else { /* negate the first row */
    for (size_t k = 0; k < row; k += 4) swapped[64 + k + 3] ^= 0x80;
  }
  uint64_t h = fnv(swapped + 64, n - 64);
  for (int k = 0; k < 8; k++) swapped[56 + k] = (unsigned char)(h >> (8 * k));
  spit(file, swapped, n);
  file_id(file, &st0);
  rc = unimed_label_set_embed(m, ls, dir, &e, err, sizeof err);
  int from_cache = rc == 0 && !same_embeddings(&ref, &e);
  if (from_cache && ls->n_labels > 1)
    from_cache = memcmp(e.positive, ref.positive + ref.dim, row) == 0 &&
                 memcmp(e.positive + ref.dim, ref.positive, row) == 0;
  expect(from_cache, "a valid cache file is used as it is (values come from the file)");
  unimed_label_embeddings_free(&e);

  /* corrupt caches are ignored and rewritten */
  struct {
    const char *what;
    int kind;
  } cases[] = {{"payload byte flipped (checksum)", 0}, {"truncated file", 1},
               {"wrong magic", 2},                     {"empty file", 3},
               {"extra trailing byte", 4},             {"wrong label count", 5},
               {"NaN in data (checksum fixed)", 6},    {"wrong model hash in header", 7},
               {"directory in place of the file", 8}};
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    unsigned char *x = malloc(n + 1);
    memcpy(x, b, n);
    size_t xn = n;
    switch (cases[c].kind) {
      case 0: x[64 + 5] ^= 0x40; break;
      case 1: xn = n - 7; break;
      case 2: x[0] = 'X'; break;
      case 3: xn = 0; break;
      case 4: x[n] = 0; xn = n + 1; break;
      case 5: x[12] ^= 1; break;
      case 6: {
        uint32_t nan = 0x7fc00000u;
        for (int k = 0; k < 4; k++) x[64 + k] = (unsigned char)(nan >> (8 * k));
        uint64_t hh = fnv(x + 64, n - 64);
        for (int k = 0; k < 8; k++) x[56 + k] = (unsigned char)(hh >> (8 * k));
        break;
      }
      case 7: x[24] = x[24] == '0' ? '1' : '0'; break;
      default: break;
    }
    unlink(file);
    if (cases[c].kind == 8) {
      mkdir(file, 0777);
    } else {
      spit(file, x, xn);
    }
    free(x);
    rc = unimed_label_set_embed(m, ls, dir, &e, err, sizeof err);
    char what[160];
    snprintf(what, sizeof what, "corrupt cache ignored: %s", cases[c].what);
    expect(rc == 0 && same_embeddings(&ref, &e), what);
    unimed_label_embeddings_free(&e);
    if (cases[c].kind == 8) {
      rmdir(file);
      continue;
    }
    size_t rn = 0;
    unsigned char *r = (unsigned char *)tu_read_file(file, &rn);
    snprintf(what, sizeof what, "corrupt cache rewritten: %s", cases[c].what);
    expect(r && rn == n && memcmp(r, b, n) == 0, what);
    free(r);
  }

  /* no temporary files left behind */
  char tmpl[2700];
  snprintf(tmpl, sizeof tmpl, "%s.tmp.%ld", file, (long)getpid());
  expect(access(tmpl, F_OK) != 0, "no temporary file left behind");

  /* an unusable cache directory only costs the cache */
  snprintf(dir, sizeof dir, "%s/run-%ld/a-file", work, (long)getpid());
  spit(dir, (const unsigned char *)"x", 1);
  char sub[2100];
  snprintf(sub, sizeof sub, "%s/cache", dir);
  rc = unimed_label_set_embed(m, ls, sub, &e, err, sizeof err);
  expect(rc == 0 && same_embeddings(&ref, &e), "cache dir under a regular file: still embeds");
  unimed_label_embeddings_free(&e);

  /* clean up WORK_DIR/run-PID */
  unlink(dir);
  unlink(file);
  char d[2600];
  snprintf(d, sizeof d, "%s/run-%ld/nested/cache", work, (long)getpid());
  rmdir(d);
  snprintf(d, sizeof d, "%s/run-%ld/nested", work, (long)getpid());
  rmdir(d);
  snprintf(d, sizeof d, "%s/run-%ld", work, (long)getpid());
  rmdir(d);

  free(b);
  free(swapped);
  unimed_label_embeddings_free(&ref);
  unimed_label_set_free(ls);
  unimed_model_free(m);
  printf("%s\n", failures ? "FAILED" : "all cache checks passed");
  return failures ? 1 : 0;
}

int main(int argc, char **argv) {
  if (argc >= 3 && strcmp(argv[1], "load") == 0) return cmd_load(argc - 2, argv + 2);
  if (argc == 3 && strcmp(argv[1], "dump") == 0) return cmd_dump(argv[2]);
  if (argc == 2 && strcmp(argv[1], "applies") == 0) return cmd_applies();
  if (argc >= 7 && strcmp(argv[1], "score") == 0) return cmd_score(argc - 2, argv + 2);
  if (argc == 5 && strcmp(argv[1], "cache") == 0) return cmd_cache(argv[2], argv[3], argv[4]);
  fprintf(stderr,
          "usage: labelset_tool load FILE... | dump FILE | applies |\n"
          "       score MODEL_DIR CACHE_DIR|- GOLDEN_DIR OUT.json FILE... |\n"
          "       cache MODEL_DIR SET_FILE WORK_DIR\n");
  return 2;
}
