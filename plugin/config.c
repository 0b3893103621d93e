/* UniMed for Orthanc — the "UniMed" section of Orthanc's configuration:
 * every key, its type, range and default (docs/PLUGIN.md lists them). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "analysis.h"
#include "config.h"
#include "labels.h"
#include "nearest.h"
#include "orthanc_io.h"

#ifndef UNIMED_DEFAULT_LABELSET_DIR
#define UNIMED_DEFAULT_LABELSET_DIR "/usr/share/unimed/labelsets"
#endif
#ifndef UNIMED_SOURCE_LABELSET_DIR
#define UNIMED_SOURCE_LABELSET_DIR UNIMED_DEFAULT_LABELSET_DIR
#endif

#define UNIMED_META_STATE "UniMedState"
#define UNIMED_META_FINDINGS "UniMedFindings"
#define UNIMED_ATTACH_EMB "UniMedEmbeddings"

static int cfg_err(char *err, size_t n, const char *fmt, const char *key) {
  snprintf(err, n, fmt, key);
  return -1;
}

static int get_bool(const cJSON *sec, const char *key, int def, int *out, char *err, size_t n) {
  const cJSON *it = cJSON_GetObjectItemCaseSensitive(sec, key);
  if (!it) { *out = def; return 0; }
  if (!cJSON_IsBool(it)) return cfg_err(err, n, "\"UniMed\".\"%s\" must be true or false", key);
  *out = cJSON_IsTrue(it);
  return 0;
}

static int get_int(const cJSON *sec, const char *key, long long def, long long lo, long long hi,
                   long long *out, char *err, size_t n) {
  const cJSON *it = cJSON_GetObjectItemCaseSensitive(sec, key);
  if (!it) { *out = def; return 0; }
  if (!cJSON_IsNumber(it) || it->valuedouble != (double)(long long)it->valuedouble) {
    return cfg_err(err, n, "\"UniMed\".\"%s\" must be an integer", key);
  }
  long long v = (long long)it->valuedouble;
  if (v < lo || v > hi) {
    snprintf(err, n, "\"UniMed\".\"%s\" is %lld; it must be between %lld and %lld", key, v, lo, hi);
    return -1;
  }
  *out = v;
  return 0;
}

static int get_str(const cJSON *sec, const char *key, const char *def, char **out, char *err,
                   size_t n) {
  const cJSON *it = cJSON_GetObjectItemCaseSensitive(sec, key);
  if (!it) { *out = def ? xstrdup(def) : NULL; return 0; }
  if (!cJSON_IsString(it) || !it->valuestring[0])
    return cfg_err(err, n, "\"UniMed\".\"%s\" must be a non-empty string", key);
  *out = xstrdup(it->valuestring);
  return 0;
}

static int get_str_array(const cJSON *sec, const char *key, char ***out, int *count, char *err,
                         size_t n) {
  *out = NULL;
  *count = 0;
  const cJSON *it = cJSON_GetObjectItemCaseSensitive(sec, key);
  if (!it) return 0;
  if (!cJSON_IsArray(it)) return cfg_err(err, n, "\"UniMed\".\"%s\" must be an array of strings", key);
  int k = cJSON_GetArraySize(it);
  *out = calloc((size_t)k + 1, sizeof(char *));
  const cJSON *x;
  cJSON_ArrayForEach(x, it) {
    if (!cJSON_IsString(x) || !x->valuestring[0])
      return cfg_err(err, n, "\"UniMed\".\"%s\" must be an array of non-empty strings", key);
    (*out)[(*count)++] = xstrdup(x->valuestring);
  }
  return 0;
}

/* Relative paths in Orthanc's configuration are relative to the folder of
 * the configuration file. */
static char *resolve_path(const char *p, const char *base) {
  if (!p) return NULL;
  if (p[0] == '/' || !base || !base[0]) return xstrdup(p);
  size_t n = strlen(base) + strlen(p) + 2;
  char *r = malloc(n);
  snprintf(r, n, "%s/%s", base, p);
  return r;
}

void config_free(unimed_config_t *c) {
  free(c->model_dir);
  for (int i = 0; i < c->n_label_sets; i++) free(c->label_sets[i]);
  free(c->label_sets);
  free(c->label_set_dir);
  for (int i = 0; i < c->n_modalities; i++) free(c->modalities[i]);
  free(c->modalities);
  free(c->root);
  free(c->cache_dir);
  memset(c, 0, sizeof *c);
}

/* The number of a user metadata / content type: the declared one (a number,
 * or [number, "mime"] for content types), else the default. */
static int user_number(const cJSON *root, const char *section, const char *name, int def,
                       char out[16], char *err, size_t n) {
  const cJSON *s = cJSON_GetObjectItemCaseSensitive(root, section);
  const cJSON *v = s ? cJSON_GetObjectItemCaseSensitive(s, name) : NULL;
  if (cJSON_IsArray(v)) v = cJSON_GetArrayItem(v, 0);
  int num = def;
  if (v) {
    if (!cJSON_IsNumber(v) || v->valuedouble < 1024 || v->valuedouble > 65535) {
      snprintf(err, n, "\"%s\".\"%s\" must be a number between 1024 and 65535", section, name);
      return -1;
    }
    num = (int)v->valuedouble;
  }
  snprintf(out, 16, "%d", num);
  return 0;
}

/* Every key of the "UniMed" section (docs/PLUGIN.md). */
static const char *const known_keys[] = {
    "Enable", "ModelDirectory", "LabelSets", "LabelSetDirectory", "Modalities", "MaxSlices",
    "Workers", "Threads", "Precision", "WriteReports", "Root", "MaxClassifyBytes",
    "CacheDirectory", "ClaimLease", "JournalProperty", "DecodeBudgetMB", "Labels",
    "LabelPrefix", NULL};

/* An unknown key is refused, with the nearest known one: a misspelt key
 * would otherwise silently fall back to a default (e.g. "LabelSet" to every
 * shipped label set). Orthanc refuses its own bad settings at start too;
 * here only the plugin stops, Orthanc goes on. */
static int check_keys(const cJSON *sec, char *err, size_t n) {
  const cJSON *it;
  cJSON_ArrayForEach(it, sec) {
    int known = 0;
    for (int k = 0; known_keys[k] && !known; k++) known = strcmp(it->string, known_keys[k]) == 0;
    if (known) continue;
    const char *near = nearest_name(it->string, known_keys);
    if (near)
      snprintf(err, n, "\"UniMed\".\"%.100s\" is not a setting of this plugin (did you mean \"%s\"?)",
               it->string, near);
    else
      snprintf(err, n, "\"UniMed\".\"%.100s\" is not a setting of this plugin (docs/PLUGIN.md lists them)",
               it->string);
    return -1;
  }
  return 0;
}

/* The folder relative paths are resolved against, as Orthanc resolves its
 * own: the configuration folder when Orthanc was started with a folder
 * (Debian: `Orthanc /etc/orthanc`), else the folder of the configuration
 * file. OrthancPluginGetConfigurationPath() answers the file, or for a folder
 * its parent (without a trailing slash) or itself (with one), so Orthanc's
 * argument is read from /proc/self/cmdline: the first argument that agrees
 * with that answer (a wrapper such as valgrind adds arguments before it). */
static void config_base(OrthancPluginContext *ctx, char *base, size_t n) {
  base[0] = 0;
  char cp_real[PATH_MAX] = "";
  /* Deprecated in the 1.12 SDK without a replacement for this use
   * (relative paths in the configuration). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  char *cp = OrthancPluginGetConfigurationPath(ctx);
#pragma GCC diagnostic pop
  if (cp) {
    if (!realpath(cp, cp_real)) snprintf(cp_real, sizeof cp_real, "%s", cp);
    OrthancPluginFreeString(ctx, cp);
  }
  FILE *f = fopen("/proc/self/cmdline", "rb");
  if (f && cp_real[0]) {
    char cmd[8192];
    size_t len = fread(cmd, 1, sizeof cmd - 1, f);
    cmd[len] = 0;
    for (size_t i = strlen(cmd) + 1; i < len;) { /* argv[0] skipped */
      const char *arg = cmd + i;
      i += strlen(arg) + 1;
      char real[PATH_MAX];
      struct stat st;
      if (arg[0] == '-' || !arg[0] || !realpath(arg, real) || stat(real, &st) != 0) continue;
      char parent[PATH_MAX];
      snprintf(parent, sizeof parent, "%s", real);
      char *slash = strrchr(parent, '/');
      if (slash) *slash = 0;
      if (!parent[0]) snprintf(parent, sizeof parent, "/");
      if (S_ISDIR(st.st_mode) && (strcmp(cp_real, real) == 0 || strcmp(cp_real, parent) == 0)) {
        snprintf(base, n, "%s", real);
        break;
      }
      if (!S_ISDIR(st.st_mode) && strcmp(cp_real, real) == 0) {
        snprintf(base, n, "%s", parent);
        break;
      }
    }
  }
  if (f) fclose(f);
  if (base[0] || !cp_real[0]) return;
  /* No agreeing argument: Orthanc's answer alone (a folder, or a file's folder). */
  struct stat st;
  snprintf(base, n, "%s", cp_real);
  if (stat(cp_real, &st) != 0 || !S_ISDIR(st.st_mode)) {
    char *slash = strrchr(base, '/');
    if (slash) *slash = 0; else base[0] = 0;
  }
}

/* Parses the "UniMed" section. Returns 0, or -1 with a message. */
int config_load(OrthancPluginContext *ctx, unimed_config_t *c, char *err, size_t n) {
  memset(c, 0, sizeof *c);
  char *text = OrthancPluginGetConfiguration(ctx);
  if (!text) return cfg_err(err, n, "%s", "cannot read Orthanc's configuration");
  cJSON *root = cJSON_Parse(text);
  OrthancPluginFreeString(ctx, text);
  if (!root) return cfg_err(err, n, "%s", "Orthanc's configuration is not valid JSON");

  /* Folder of the configuration file, for relative paths. */
  char base[PATH_MAX] = "";
  config_base(ctx, base, sizeof base);

  int rc = -1;
  long long v;
  const cJSON *sec = cJSON_GetObjectItemCaseSensitive(root, "UniMed");
  if (sec && !cJSON_IsObject(sec)) {
    cfg_err(err, n, "%s", "\"UniMed\" must be an object");
    goto done;
  }
  if (sec && check_keys(sec, err, n)) goto done;
  if (get_bool(sec, "Enable", 1, &c->enable, err, n)) goto done;
  if (!c->enable) { rc = 0; goto done; }
  char *md = NULL;
  if (get_str(sec, "ModelDirectory", NULL, &md, err, n)) goto done;
  if (!md) {
    cfg_err(err, n, "%s", "\"UniMed\".\"ModelDirectory\" is missing (the folder with config.json, model.safetensors, vocab.txt)");
    goto done;
  }
  c->model_dir = resolve_path(md, base);
  free(md);
  char **ls = NULL;
  int nls = 0;
  if (get_str_array(sec, "LabelSets", &ls, &nls, err, n)) {
    for (int i = 0; i < nls; i++) free(ls[i]);
    free(ls);
    goto done;
  }
  c->label_sets = ls;
  c->n_label_sets = nls;
  for (int i = 0; i < nls; i++) {
    char *r = resolve_path(ls[i], base);
    free(ls[i]);
    ls[i] = r;
  }
  char *lsd = NULL;
  {
    /* The installed label sets, or those of the source tree for a build
     * that was not installed. */
    const char *def = UNIMED_DEFAULT_LABELSET_DIR;
    struct stat lst;
    if (stat(def, &lst) != 0) def = UNIMED_SOURCE_LABELSET_DIR;
    if (get_str(sec, "LabelSetDirectory", def, &lsd, err, n)) goto done;
  }
  c->label_set_dir = resolve_path(lsd, base);
  free(lsd);
  if (get_str_array(sec, "Modalities", &c->modalities, &c->n_modalities, err, n)) goto done;
  if (get_int(sec, "MaxSlices", 8, 1, 4096, &v, err, n)) goto done;
  c->max_slices = (int)v;
  if (get_int(sec, "Workers", 1, 1, 64, &v, err, n)) goto done;
  c->workers = (int)v;
  if (get_int(sec, "Threads", 1, 1, 256, &v, err, n)) goto done;
  c->threads = (int)v;
  {
    char *prec = NULL;
    if (get_str(sec, "Precision", "fp32", &prec, err, n)) goto done;
    unimed_precision pv;
    int bad = unimed_precision_parse(prec, &pv) != 0;
    free(prec);
    if (bad) {
      cfg_err(err, n, "%s", "\"UniMed\".\"Precision\" must be \"fp32\", \"bf16\" or \"int8\"");
      goto done;
    }
    c->precision = (int)pv;
  }
  if (get_bool(sec, "WriteReports", 1, &c->write_reports, err, n)) goto done;
  if (labels_configure(sec, err, n)) goto done;
  if (get_str(sec, "Root", "/unimed/", &c->root, err, n)) goto done;
  {
    size_t rl = strlen(c->root);
    if (c->root[0] != '/' || c->root[rl - 1] != '/' || rl < 2 ||
        strspn(c->root, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/-_") != rl) {
      free(c->root);
      c->root = NULL; /* the disabled status route goes to the default root */
      cfg_err(err, n, "%s", "\"UniMed\".\"Root\" must start and end with '/' and contain only letters, digits, '-', '_' (e.g. \"/unimed/\")");
      goto done;
    }
  }
  if (get_int(sec, "MaxClassifyBytes", 64LL << 20, 1, 1LL << 32, &v, err, n)) goto done;
  c->max_classify_bytes = v;
  /* A frame's decoded size (32-bit samples) is checked from its header
   * before anything is allocated: 128 MiB keeps a worker's decoding well
   * under 1 GiB and admits 4096 x 8192 grayscale (mammography, DX). */
  if (get_int(sec, "DecodeBudgetMB", 128, 1, 4096, &v, err, n)) goto done;
  c->decode_budget_mb = v;
  if (get_int(sec, "ClaimLease", 3600, 10, 7 * 86400, &v, err, n)) goto done;
  c->claim_lease = (int)v;
  if (get_int(sec, "JournalProperty", UNIMED_DEFAULT_JOURNAL_PROPERTY, 1024, 2147483647LL, &v, err, n)) goto done;
  c->journal_property = (int)v;
  char *cd = NULL;
  if (get_str(sec, "CacheDirectory", NULL, &cd, err, n)) goto done;
  if (cd) {
    c->cache_dir = resolve_path(cd, base);
    free(cd);
  } else {
    const cJSON *sd = cJSON_GetObjectItemCaseSensitive(root, "StorageDirectory");
    if (cJSON_IsString(sd) && sd->valuestring[0]) {
      char *s = resolve_path(sd->valuestring, base);
      size_t l = strlen(s) + 16;
      c->cache_dir = malloc(l);
      snprintf(c->cache_dir, l, "%s/unimed", s);
      free(s);
    } else {
      c->cache_dir = xstrdup("/var/lib/orthanc/unimed");
    }
  }
  if (user_number(root, "UserMetadata", UNIMED_META_STATE, 4600, c->meta_state, err, n) ||
      user_number(root, "UserMetadata", UNIMED_META_FINDINGS, 4601, c->meta_findings, err, n) ||
      user_number(root, "UserContentType", UNIMED_ATTACH_EMB, 4602, c->attach_emb, err, n))
    goto done;
  {
    const cJSON *sa = cJSON_GetObjectItemCaseSensitive(root, "StableAge");
    c->stable_age = cJSON_IsNumber(sa) && sa->valuedouble >= 1 ? (int)sa->valuedouble : 60;
  }
  /* A stable identity for claims: survives restarts of this server. */
  const cJSON *dsi = cJSON_GetObjectItemCaseSensitive(root, "DatabaseServerIdentifier");
  if (cJSON_IsString(dsi) && dsi->valuestring[0]) {
    snprintf(c->server_id, sizeof c->server_id, "%s", dsi->valuestring);
  } else {
    char host[64] = "localhost";
    gethostname(host, sizeof host - 1);
    const cJSON *port = cJSON_GetObjectItemCaseSensitive(root, "HttpPort");
    snprintf(c->server_id, sizeof c->server_id, "%s:%d", host,
             cJSON_IsNumber(port) ? port->valueint : 8042);
  }
  rc = 0;
done:
  cJSON_Delete(root);
  return rc;
}
