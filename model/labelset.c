/* Label sets: JSON files naming the findings to ask the model about, for
 * which images, with which prompts and codes (docs/LABEL_SETS.md).
 *
 * Loading validates everything and expands the prompts (own prompts, or the
 * templates applied to the label's name and synonyms), so a loaded set is
 * complete and consumers never re-derive anything. Embedding encodes every
 * prompt once, ensembles them per label and caches the result on disk keyed
 * by the model hash and the label-set hash. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "internal.h"

#define LS_MAX_FILE (4u << 20)   /* a label set is a small text file */
#define LS_BATCH 64              /* prompts per unimed_encode_texts call */
#define LS_ORTHANC_LABEL_MAX 48  /* Orthanc allows 64 characters; the rest is the prefix's */
#define LS_DEFAULT_THRESHOLD 0.5 /* "orthanc_labels"."threshold" */
#define LS_DEFAULT_MAX 3         /* "orthanc_labels"."max_per_study" */

static uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
  const unsigned char *p = data;
  for (size_t i = 0; i < n; i++) {
    h ^= p[i];
    h *= 1099511628211ULL;
  }
  return h;
}
#define FNV_OFFSET 1469598103934665603ULL

static char *xstrdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

static int ascii_lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }
static int is_space(int c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

/* Case-insensitive (ASCII) comparison of a and b, ignoring surrounding
 * white space on both (DICOM CS values are often space-padded). */
static int same_token(const char *a, const char *b) {
  while (is_space((unsigned char)*a)) a++;
  while (is_space((unsigned char)*b)) b++;
  size_t la = strlen(a), lb = strlen(b);
  while (la && is_space((unsigned char)a[la - 1])) la--;
  while (lb && is_space((unsigned char)b[lb - 1])) lb--;
  if (la != lb) return 0;
  for (size_t i = 0; i < la; i++)
    if (ascii_lower((unsigned char)a[i]) != ascii_lower((unsigned char)b[i])) return 0;
  return 1;
}

static int blank(const char *s) {
  for (; *s; s++)
    if (!is_space((unsigned char)*s)) return 0;
  return 1;
}

/* ---- loading ---- */

typedef struct {
  const char *path;
  char *err;
  size_t errlen;
  int failed;
} ctx;

/* Records the first error only: "PATH: FIELD: message". */
static void fail(ctx *c, const char *field, const char *fmt, ...) {
  if (c->failed) return;
  c->failed = 1;
  char msg[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (field && *field)
    unimed_set_err(c->err, c->errlen, "%s: %s: %s", c->path, field, msg);
  else
    unimed_set_err(c->err, c->errlen, "%s: %s", c->path, msg);
}

static void oom(ctx *c) { fail(c, NULL, "out of memory"); }

/* Unknown or repeated keys of an object are errors (typo protection). */
static void check_keys(ctx *c, const cJSON *obj, const char *field, const char *const *known) {
  for (const cJSON *it = obj->child; it && !c->failed; it = it->next) {
    int ok = 0;
    for (int k = 0; known[k]; k++)
      if (it->string && strcmp(it->string, known[k]) == 0) ok = 1;
    if (!ok) {
      char list[256] = "";
      for (int k = 0; known[k]; k++) {
        strncat(list, k ? ", " : "", sizeof list - strlen(list) - 1);
        strncat(list, known[k], sizeof list - strlen(list) - 1);
      }
      if (field && *field)
        fail(c, field, "unknown key \"%s\" (known keys: %s)", it->string ? it->string : "",
             list);
      else
        fail(c, it->string ? it->string : "", "unknown key (known keys: %s)", list);
      return;
    }
    for (const cJSON *p = obj->child; p != it; p = p->next)
      if (strcmp(p->string, it->string) == 0) {
        char f[300];
        snprintf(f, sizeof f, "%s%s%s", field && *field ? field : "", field && *field ? "." : "",
                 it->string);
        fail(c, f, "key given twice");
        return;
      }
  }
}

/* A required or optional non-blank string member; NULL when absent/bad. */
static char *get_string(ctx *c, const cJSON *obj, const char *key, const char *field,
                        int required, size_t maxlen) {
  if (c->failed) return NULL;
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (!v) {
    if (required) fail(c, field, "missing (a non-empty string is required)");
    return NULL;
  }
  if (!cJSON_IsString(v) || !v->valuestring) {
    fail(c, field, "must be a string");
    return NULL;
  }
  if (blank(v->valuestring)) {
    fail(c, field, "must not be empty");
    return NULL;
  }
  if (maxlen && strlen(v->valuestring) > maxlen) {
    fail(c, field, "\"%s\" is longer than %zu characters", v->valuestring, maxlen);
    return NULL;
  }
  char *s = xstrdup(v->valuestring);
  if (!s) oom(c);
  return s;
}

/* An optional array of non-blank strings (absent = none). */
static void get_string_array(ctx *c, const cJSON *obj, const char *key, const char *field,
                             char ***out, int *n) {
  *out = NULL;
  *n = 0;
  if (c->failed) return;
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (!v) return;
  if (!cJSON_IsArray(v)) {
    fail(c, field, "must be an array of strings");
    return;
  }
  int cnt = cJSON_GetArraySize(v);
  if (cnt == 0) return;
  *out = calloc((size_t)cnt, sizeof(char *));
  if (!*out) {
    oom(c);
    return;
  }
  int i = 0;
  for (const cJSON *e = v->child; e; e = e->next, i++) {
    char f[300];
    snprintf(f, sizeof f, "%s[%d]", field, i);
    if (!cJSON_IsString(e) || !e->valuestring) {
      fail(c, f, "must be a string");
      return;
    }
    if (blank(e->valuestring)) {
      fail(c, f, "must not be empty");
      return;
    }
    (*out)[i] = xstrdup(e->valuestring);
    if (!(*out)[i]) {
      oom(c);
      return;
    }
    *n = i + 1;
  }
}

static int count_slots(const char *t) {
  int n = 0;
  for (const char *p = strstr(t, "{}"); p; p = strstr(p + 2, "{}")) n++;
  return n;
}

static void check_templates(ctx *c, char **t, int n, const char *field) {
  for (int i = 0; i < n && !c->failed; i++) {
    char f[300];
    snprintf(f, sizeof f, "%s[%d]", field, i);
    int k = count_slots(t[i]);
    if (k == 0)
      fail(c, f, "\"%s\" has no \"{}\" (each template needs exactly one, where the label name "
                 "goes)", t[i]);
    else if (k > 1)
      fail(c, f, "\"%s\" has %d \"{}\" (each template needs exactly one)", t[i], k);
  }
}

static void check_own_prompts(ctx *c, char **p, int n, const char *field) {
  for (int i = 0; i < n && !c->failed; i++)
    if (strstr(p[i], "{}")) {
      char f[300];
      snprintf(f, sizeof f, "%s[%d]", field, i);
      fail(c, f, "\"%s\" contains \"{}\": a label's own prompts are used as written "
                 "(\"{}\" belongs in templates)", p[i]);
    }
}

/* template with its one "{}" replaced by name. */
static char *apply_template(const char *t, const char *name) {
  const char *slot = strstr(t, "{}");
  size_t pre = (size_t)(slot - t), nl = strlen(name), post = strlen(slot + 2);
  char *s = malloc(pre + nl + post + 1);
  if (!s) return NULL;
  memcpy(s, t, pre);
  memcpy(s + pre, name, nl);
  memcpy(s + pre + nl, slot + 2, post + 1);
  return s;
}

/* Prompts from templates: for the name, then for each synonym, every
 * template in order. */
static void expand(ctx *c, char **templates, int n_templates, const char *name, char **syn,
                   int n_syn, char ***out, int *n) {
  *out = NULL;
  *n = 0;
  if (c->failed || n_templates == 0) return;
  int total = n_templates * (1 + n_syn);
  *out = calloc((size_t)total, sizeof(char *));
  if (!*out) {
    oom(c);
    return;
  }
  for (int s = 0; s <= n_syn; s++)
    for (int t = 0; t < n_templates; t++) {
      char *p = apply_template(templates[t], s == 0 ? name : syn[s - 1]);
      if (!p) {
        oom(c);
        return;
      }
      (*out)[(*n)++] = p;
    }
}

/* Verhoeff check digit, as SNOMED CT identifiers use it. */
static const unsigned char verhoeff_d[10][10] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 2, 3, 4, 0, 6, 7, 8, 9, 5},
    {2, 3, 4, 0, 1, 7, 8, 9, 5, 6}, {3, 4, 0, 1, 2, 8, 9, 5, 6, 7},
    {4, 0, 1, 2, 3, 9, 5, 6, 7, 8}, {5, 9, 8, 7, 6, 0, 4, 3, 2, 1},
    {6, 5, 9, 8, 7, 1, 0, 4, 3, 2}, {7, 6, 5, 9, 8, 2, 1, 0, 4, 3},
    {8, 7, 6, 5, 9, 3, 2, 1, 0, 4}, {9, 8, 7, 6, 5, 4, 3, 2, 1, 0}};
static const unsigned char verhoeff_p[8][10] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 5, 7, 6, 2, 8, 3, 0, 9, 4},
    {5, 8, 0, 3, 7, 9, 6, 1, 4, 2}, {8, 9, 1, 6, 0, 4, 3, 5, 2, 7},
    {9, 4, 5, 3, 1, 2, 6, 8, 7, 0}, {4, 2, 8, 6, 5, 7, 3, 9, 0, 1},
    {2, 7, 9, 3, 8, 0, 6, 4, 1, 5}, {7, 0, 4, 6, 9, 1, 3, 2, 5, 8}};

static int verhoeff_ok(const char *s, size_t n) {
  int c = 0;
  for (size_t i = 0; i < n; i++) c = verhoeff_d[c][verhoeff_p[i % 8][s[n - 1 - i] - '0']];
  return c == 0;
}

static int all_digits(const char *s) {
  if (!*s) return 0;
  for (; *s; s++)
    if (*s < '0' || *s > '9') return 0;
  return 1;
}

/* A DICOM modality code value as CID 29/33 uses it in scheme DCM. */
static int modality_token(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 16 || !(s[0] >= 'A' && s[0] <= 'Z')) return 0;
  for (; *s; s++)
    if (!((*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_')) return 0;
  return 1;
}

/* Printable ASCII without spaces, 1..max characters. */
static int plain_token(const char *s, size_t max) {
  size_t n = strlen(s);
  if (n == 0 || n > max) return 0;
  for (; *s; s++)
    if (*s <= ' ' || *s > '~') return 0;
  return 1;
}

static void check_code(ctx *c, const cJSON *obj, const char *field, unimed_code *code) {
  if (c->failed) return;
  if (!obj) {
    fail(c, field, "missing (every label needs a code: {\"value\", \"scheme\", \"meaning\"}; "
                   "use a private scheme such as 99UNIMED when no standard code fits)");
    return;
  }
  if (!cJSON_IsObject(obj)) {
    fail(c, field, "must be an object {\"value\", \"scheme\", \"meaning\"}");
    return;
  }
  static const char *const keys[] = {"value", "scheme", "meaning", NULL};
  check_keys(c, obj, field, keys);
  char f[300];
  snprintf(f, sizeof f, "%s.value", field);
  code->value = get_string(c, obj, "value", f, 1, 64);
  snprintf(f, sizeof f, "%s.scheme", field);
  code->scheme = get_string(c, obj, "scheme", f, 1, 16);
  snprintf(f, sizeof f, "%s.meaning", field);
  code->meaning = get_string(c, obj, "meaning", f, 1, 64);
  if (c->failed) return;
  const char *v = code->value, *s = code->scheme;
  snprintf(f, sizeof f, "%s.scheme", field);
  if (!plain_token(s, 16)) {
    fail(c, f, "'%s' is not a coding scheme designator (printable, no spaces, at most 16 "
               "characters)", s);
    return;
  }
  snprintf(f, sizeof f, "%s.value", field);
  if (strcmp(s, "SCT") == 0) {
    size_t n = strlen(v);
    if (!all_digits(v) || n < 6 || n > 18)
      fail(c, f, "'%s' is not a valid SNOMED CT identifier (6 to 18 digits)", v);
    else if (v[0] == '0')
      fail(c, f, "'%s' is not a valid SNOMED CT identifier (leading zero)", v);
    else if (!verhoeff_ok(v, n))
      fail(c, f, "'%s' is not a valid SNOMED CT identifier (check digit)", v);
    else if (!((v[n - 3] == '0' || v[n - 3] == '1') && v[n - 2] == '0'))
      fail(c, f, "'%s' is not a SNOMED CT concept identifier (partition '%c%c'; a concept has "
                 "'00' or '10')", v, v[n - 3], v[n - 2]);
  } else if (strcmp(s, "DCM") == 0) {
    if (!all_digits(v) && !modality_token(v))
      fail(c, f, "'%s' is not a DICOM (DCM) code value (digits, or a modality such as 'CT')",
           v);
  } else if (strcmp(s, "99UNIMED") == 0) {
    if (!plain_token(v, 16))
      fail(c, f, "'%s' is not a valid 99UNIMED code value (printable, no spaces, at most 16 "
                 "characters)", v);
  } else {
    if (!plain_token(v, 64))
      fail(c, f, "'%s' is not a code value (printable, no spaces)", v);
  }
}

static void check_tokens(ctx *c, char **v, int n, const char *field, int uid) {
  for (int i = 0; i < n && !c->failed; i++) {
    char f[300];
    snprintf(f, sizeof f, "%s[%d]", field, i);
    const char *s = v[i];
    size_t len = strlen(s);
    int ok = len <= (uid ? 64u : 16u);
    for (const char *p = s; *p && ok; p++)
      ok = uid ? ((*p >= '0' && *p <= '9') || *p == '.')
               : ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                  (*p >= '0' && *p <= '9') || *p == '_' || *p == ' ');
    if (!ok)
      fail(c, f, uid ? "'%s' is not a UID (digits and dots, at most 64 characters)"
                     : "'%s' is not a DICOM code string (letters, digits, '_' and space, at "
                       "most 16 characters)", s);
  }
}

static void free_strings(char **v, int n) {
  if (!v) return;
  for (int i = 0; i < n; i++) free(v[i]);
  free(v);
}

void unimed_label_set_free(unimed_label_set *ls) {
  if (!ls) return;
  free(ls->path);
  free(ls->name);
  free(ls->version);
  free(ls->description);
  free_strings(ls->modalities, ls->n_modalities);
  free_strings(ls->body_parts, ls->n_body_parts);
  free_strings(ls->sop_classes, ls->n_sop_classes);
  free_strings(ls->templates, ls->n_templates);
  for (int i = 0; ls->labels && i < ls->n_labels; i++) {
    unimed_label *l = &ls->labels[i];
    free(l->name);
    free(l->orthanc_label);
    free(l->code.value);
    free(l->code.scheme);
    free(l->code.meaning);
    free_strings(l->prompts, l->n_prompts);
    free_strings(l->negatives, l->n_negatives);
    free_strings(l->synonyms, l->n_synonyms);
  }
  free(ls->labels);
  free(ls);
}

static char *read_file(ctx *c, size_t *len) {
  FILE *fp = fopen(c->path, "rb");
  if (!fp) {
    fail(c, NULL, "cannot open: %s", strerror(errno));
    return NULL;
  }
  char *buf = NULL;
  size_t n = 0, cap = 0;
  for (;;) {
    if (n + 4096 + 1 > cap) {
      cap = cap ? cap * 2 : 8192;
      if (cap > LS_MAX_FILE * 2u) {
        fail(c, NULL, "larger than %u MiB; not a label set", LS_MAX_FILE >> 20);
        break;
      }
      char *nb = realloc(buf, cap);
      if (!nb) {
        oom(c);
        break;
      }
      buf = nb;
    }
    size_t r = fread(buf + n, 1, 4096, fp);
    n += r;
    if (r < 4096) {
      if (ferror(fp)) fail(c, NULL, "read error: %s", strerror(errno));
      break;
    }
  }
  fclose(fp);
  if (!c->failed && n > LS_MAX_FILE) fail(c, NULL, "larger than %u MiB; not a label set",
                                          LS_MAX_FILE >> 20);
  if (c->failed) {
    free(buf);
    return NULL;
  }
  buf[n] = 0;
  *len = n;
  return buf;
}

/* ---- Orthanc labels ---- */

static int orthanc_label_char(int ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
         ch == '-' || ch == '_';
}

/* The default Orthanc label of a finding: its name in lower case, every run
 * of other characters turned into one '-' ("Pleural effusion" ->
 * "pleural-effusion"); NULL when nothing is left (a name without ASCII
 * letters or digits needs an explicit "orthanc_label"). */
static char *default_orthanc_label(const char *name) {
  char out[LS_ORTHANC_LABEL_MAX + 1];
  size_t n = 0;
  for (const char *p = name; *p && n < LS_ORTHANC_LABEL_MAX; p++) {
    int ch = ascii_lower((unsigned char)*p);
    if ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_')
      out[n++] = (char)ch;
    else if (n && out[n - 1] != '-')
      out[n++] = '-';
  }
  while (n && out[n - 1] == '-') n--;
  out[n] = 0;
  return n ? xstrdup(out) : NULL;
}

static double get_probability(ctx *c, const cJSON *v, const char *field) {
  if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0.0 && v->valuedouble <= 1.0)) {
    fail(c, field, "must be a probability, a number from 0 to 1");
    return 0;
  }
  return v->valuedouble;
}

/* "orthanc_label" (a name, or false for none) and "orthanc_threshold" of a
 * label; the set's threshold (ls_threshold) when not given. */
static void load_orthanc_label(ctx *c, unimed_label *l, const cJSON *jl, const char *field,
                               int set_enabled, double ls_threshold) {
  char f[160];
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(jl, "orthanc_label");
  snprintf(f, sizeof f, "%s.orthanc_label", field);
  l->orthanc_threshold = ls_threshold;
  if (cJSON_IsFalse(v) || (!v && !set_enabled)) {
    l->orthanc_label = NULL;
  } else if (v) {
    if (!cJSON_IsString(v) || !v->valuestring[0]) {
      fail(c, f, "must be a label name (letters, digits, '-', '_') or false");
      return;
    }
    if (strlen(v->valuestring) > LS_ORTHANC_LABEL_MAX) {
      fail(c, f, "\"%s\" is longer than %d characters", v->valuestring, LS_ORTHANC_LABEL_MAX);
      return;
    }
    for (const char *p = v->valuestring; *p; p++)
      if (!orthanc_label_char((unsigned char)*p)) {
        fail(c, f, "\"%s\": Orthanc labels allow only letters, digits, '-' and '_'",
             v->valuestring);
        return;
      }
    l->orthanc_label = xstrdup(v->valuestring);
    if (!l->orthanc_label) oom(c);
  } else {
    l->orthanc_label = default_orthanc_label(l->name);
    if (!l->orthanc_label) {
      fail(c, f, "missing: \"%s\" has no letters or digits to name an Orthanc label after "
                 "(give \"orthanc_label\", or false)", l->name);
      return;
    }
  }
  const cJSON *t = cJSON_GetObjectItemCaseSensitive(jl, "orthanc_threshold");
  if (t) {
    snprintf(f, sizeof f, "%s.orthanc_threshold", field);
    l->orthanc_threshold = get_probability(c, t, f);
  }
}

static void load_label(ctx *c, unimed_label_set *ls, const cJSON *jl, int i, char **neg_templates,
                       int n_neg_templates, double ls_threshold) {
  unimed_label *l = &ls->labels[i];
  char field[64], f[128];
  snprintf(field, sizeof field, "labels[%d]", i);
  if (!cJSON_IsObject(jl)) {
    fail(c, field, "must be an object with at least \"name\" and \"code\"");
    return;
  }
  static const char *const keys[] = {"name",          "code",
                                     "synonyms",      "prompts",
                                     "negative_prompts", "orthanc_label",
                                     "orthanc_threshold", NULL};
  check_keys(c, jl, field, keys);
  snprintf(f, sizeof f, "%s.name", field);
  l->name = get_string(c, jl, "name", f, 1, 256);
  if (c->failed) return;
  if (strstr(l->name, "{}")) {
    fail(c, f, "\"%s\" contains \"{}\"", l->name);
    return;
  }
  for (int j = 0; j < i; j++)
    if (same_token(ls->labels[j].name, l->name)) {
      fail(c, f, "\"%s\" duplicates labels[%d].name (label names must be unique, ignoring "
                 "case)", l->name, j);
      return;
    }
  snprintf(f, sizeof f, "%s.code", field);
  check_code(c, cJSON_GetObjectItemCaseSensitive(jl, "code"), f, &l->code);
  if (c->failed) return;
  load_orthanc_label(c, l, jl, field, ls->orthanc_max > 0, ls_threshold);

  snprintf(f, sizeof f, "%s.synonyms", field);
  get_string_array(c, jl, "synonyms", f, &l->synonyms, &l->n_synonyms);
  for (int s = 0; s < l->n_synonyms && !c->failed; s++)
    if (strstr(l->synonyms[s], "{}")) {
      snprintf(f, sizeof f, "%s.synonyms[%d]", field, s);
      fail(c, f, "\"%s\" contains \"{}\"", l->synonyms[s]);
    }

  /* positives: own prompts, else templates x (name, synonyms) */
  const cJSON *own = cJSON_GetObjectItemCaseSensitive(jl, "prompts");
  snprintf(f, sizeof f, "%s.prompts", field);
  if (own && cJSON_IsArray(own) && cJSON_GetArraySize(own) == 0) {
    fail(c, f, "is empty (leave it out to use the templates)");
    return;
  }
  get_string_array(c, jl, "prompts", f, &l->prompts, &l->n_prompts);
  check_own_prompts(c, l->prompts, l->n_prompts, f);
  if (c->failed) return;
  if (!own) {
    if (ls->n_templates == 0) {
      fail(c, field, "no prompts: give the label \"prompts\" or the set \"templates\"");
      return;
    }
    expand(c, ls->templates, ls->n_templates, l->name, l->synonyms, l->n_synonyms, &l->prompts,
           &l->n_prompts);
  }

  /* negatives (binary scoring only) */
  const cJSON *own_neg = cJSON_GetObjectItemCaseSensitive(jl, "negative_prompts");
  snprintf(f, sizeof f, "%s.negative_prompts", field);
  if (own_neg && ls->scoring != UNIMED_SCORING_BINARY) {
    fail(c, f, "only used with \"scoring\": \"binary\"");
    return;
  }
  if (own_neg && cJSON_IsArray(own_neg) && cJSON_GetArraySize(own_neg) == 0) {
    fail(c, f, "is empty (leave it out to use the negative_templates)");
    return;
  }
  get_string_array(c, jl, "negative_prompts", f, &l->negatives, &l->n_negatives);
  check_own_prompts(c, l->negatives, l->n_negatives, f);
  if (c->failed) return;
  if (ls->scoring == UNIMED_SCORING_BINARY && !own_neg) {
    if (n_neg_templates == 0) {
      fail(c, field, "binary scoring needs negatives: give the label \"negative_prompts\" or "
                     "the set \"negative_templates\"");
      return;
    }
    expand(c, neg_templates, n_neg_templates, l->name, l->synonyms, l->n_synonyms, &l->negatives,
           &l->n_negatives);
  }
}

unimed_label_set *unimed_label_set_load(const char *path, char *err, size_t errlen) {
  ctx c = {path ? path : "(null)", err, errlen, 0};
  if (!path) {
    fail(&c, NULL, "no label-set path given");
    return NULL;
  }
  size_t len = 0;
  char *text = read_file(&c, &len);
  if (!text) return NULL;
  unimed_label_set *ls = calloc(1, sizeof *ls);
  cJSON *root = NULL;
  char **neg_templates = NULL;
  int n_neg_templates = 0;
  if (!ls) {
    oom(&c);
    goto done;
  }
  snprintf(ls->hash, sizeof ls->hash, "%016llx",
           (unsigned long long)fnv1a(FNV_OFFSET, text, len));
  ls->path = xstrdup(path);
  if (!ls->path) {
    oom(&c);
    goto done;
  }
  if (strlen(text) != len) {
    fail(&c, NULL, "contains a NUL byte; not a JSON text file");
    goto done;
  }
  const char *end = NULL;
  root = cJSON_ParseWithOpts(text, &end, 1);
  if (!root) {
    size_t off = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
    int line = 1, col = 1;
    for (size_t i = 0; i < off; i++) {
      if (text[i] == '\n') {
        line++;
        col = 1;
      } else {
        col++;
      }
    }
    fail(&c, NULL, "malformed JSON near line %d, column %d", line, col);
    goto done;
  }
  if (!cJSON_IsObject(root)) {
    fail(&c, NULL, "must be a JSON object");
    goto done;
  }
  static const char *const keys[] = {"name",      "version",   "description",
                                     "applies_to", "scoring",  "templates",
                                     "negative_templates",     "labels",
                                     "orthanc_labels",         NULL};
  check_keys(&c, root, "", keys);

  ls->name = get_string(&c, root, "name", "name", 1, 64);
  if (ls->name && !c.failed)
    for (const char *p = ls->name; *p; p++)
      if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '_' || *p == '.')) {
        fail(&c, "name", "'%s' must consist of letters, digits, '-', '_' and '.'", ls->name);
        break;
      }
  ls->version = get_string(&c, root, "version", "version", 1, 64);
  if (!c.failed) {
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(root, "description");
    if (d && !cJSON_IsString(d))
      fail(&c, "description", "must be a string");
    else
      ls->description = xstrdup(d ? d->valuestring : "");
    if (!c.failed && !ls->description) oom(&c);
  }

  const cJSON *app = cJSON_GetObjectItemCaseSensitive(root, "applies_to");
  if (app && !c.failed) {
    if (!cJSON_IsObject(app)) {
      fail(&c, "applies_to", "must be an object {\"modalities\", \"body_parts\", "
                             "\"sop_classes\"}");
    } else {
      static const char *const akeys[] = {"modalities", "body_parts", "sop_classes", NULL};
      check_keys(&c, app, "applies_to", akeys);
      get_string_array(&c, app, "modalities", "applies_to.modalities", &ls->modalities,
                       &ls->n_modalities);
      check_tokens(&c, ls->modalities, ls->n_modalities, "applies_to.modalities", 0);
      get_string_array(&c, app, "body_parts", "applies_to.body_parts", &ls->body_parts,
                       &ls->n_body_parts);
      check_tokens(&c, ls->body_parts, ls->n_body_parts, "applies_to.body_parts", 0);
      get_string_array(&c, app, "sop_classes", "applies_to.sop_classes", &ls->sop_classes,
                       &ls->n_sop_classes);
      check_tokens(&c, ls->sop_classes, ls->n_sop_classes, "applies_to.sop_classes", 1);
    }
  }

  ls->scoring = UNIMED_SCORING_SOFTMAX;
  const cJSON *sc = cJSON_GetObjectItemCaseSensitive(root, "scoring");
  if (sc && !c.failed) {
    if (cJSON_IsString(sc) && strcmp(sc->valuestring, "softmax") == 0)
      ls->scoring = UNIMED_SCORING_SOFTMAX;
    else if (cJSON_IsString(sc) && strcmp(sc->valuestring, "binary") == 0)
      ls->scoring = UNIMED_SCORING_BINARY;
    else if (cJSON_IsString(sc))
      fail(&c, "scoring", "unknown scoring mode '%s' (use \"softmax\" or \"binary\")",
           sc->valuestring);
    else
      fail(&c, "scoring", "must be the string \"softmax\" or \"binary\"");
  }

  const cJSON *tj = cJSON_GetObjectItemCaseSensitive(root, "templates");
  if (tj && cJSON_IsArray(tj) && cJSON_GetArraySize(tj) == 0)
    fail(&c, "templates", "is empty (leave it out when every label has its own prompts)");
  get_string_array(&c, root, "templates", "templates", &ls->templates, &ls->n_templates);
  check_templates(&c, ls->templates, ls->n_templates, "templates");

  const cJSON *ntj = cJSON_GetObjectItemCaseSensitive(root, "negative_templates");
  if (ntj && !c.failed && ls->scoring != UNIMED_SCORING_BINARY)
    fail(&c, "negative_templates", "only used with \"scoring\": \"binary\"");
  if (ntj && cJSON_IsArray(ntj) && cJSON_GetArraySize(ntj) == 0)
    fail(&c, "negative_templates", "is empty");
  get_string_array(&c, root, "negative_templates", "negative_templates", &neg_templates,
                   &n_neg_templates);
  check_templates(&c, neg_templates, n_neg_templates, "negative_templates");

  /* "orthanc_labels": {"threshold", "max_per_study"}, or false for none. */
  double ls_threshold = LS_DEFAULT_THRESHOLD;
  ls->orthanc_max = LS_DEFAULT_MAX;
  const cJSON *olj = cJSON_GetObjectItemCaseSensitive(root, "orthanc_labels");
  if (olj && !c.failed) {
    if (cJSON_IsFalse(olj)) {
      ls->orthanc_max = 0;
    } else if (!cJSON_IsObject(olj)) {
      fail(&c, "orthanc_labels", "must be an object {\"threshold\", \"max_per_study\"} or false");
    } else {
      static const char *const okeys[] = {"threshold", "max_per_study", NULL};
      check_keys(&c, olj, "orthanc_labels", okeys);
      const cJSON *t = cJSON_GetObjectItemCaseSensitive(olj, "threshold");
      if (t && !c.failed) ls_threshold = get_probability(&c, t, "orthanc_labels.threshold");
      const cJSON *m = cJSON_GetObjectItemCaseSensitive(olj, "max_per_study");
      if (m && !c.failed) {
        if (!cJSON_IsNumber(m) || m->valuedouble != (double)(int)m->valuedouble ||
            m->valuedouble < 0 || m->valuedouble > 64)
          fail(&c, "orthanc_labels.max_per_study", "must be a whole number from 0 to 64");
        else
          ls->orthanc_max = (int)m->valuedouble;
      }
    }
  }

  const cJSON *labels = cJSON_GetObjectItemCaseSensitive(root, "labels");
  if (!c.failed) {
    if (!labels)
      fail(&c, "labels", "missing (a non-empty array of labels is required)");
    else if (!cJSON_IsArray(labels))
      fail(&c, "labels", "must be an array of label objects");
    else if (cJSON_GetArraySize(labels) == 0)
      fail(&c, "labels", "is empty (a label set needs at least one label)");
  }
  if (!c.failed) {
    int n = cJSON_GetArraySize(labels);
    ls->labels = calloc((size_t)n, sizeof(unimed_label));
    if (!ls->labels) {
      oom(&c);
      goto done;
    }
    int i = 0;
    for (const cJSON *jl = labels->child; jl && !c.failed; jl = jl->next, i++) {
      ls->n_labels = i + 1;
      load_label(&c, ls, jl, i, neg_templates, n_neg_templates, ls_threshold);
    }
    if (!c.failed && ls->scoring == UNIMED_SCORING_SOFTMAX && ls->n_labels < 2)
      fail(&c, "labels", "softmax scoring needs at least 2 labels (use \"binary\" for one)");
  }

done:
  free_strings(neg_templates, n_neg_templates);
  cJSON_Delete(root);
  free(text);
  if (c.failed) {
    unimed_label_set_free(ls);
    return NULL;
  }
  return ls;
}

/* ---- matching ---- */

static int known(const char *s) { return s && !blank(s); }

int unimed_label_set_applies(const unimed_label_set *ls, const char *modality,
                             const char *body_part, const char *sop_class_uid) {
  if (!ls) return 0;
  if (ls->n_modalities && known(modality)) {
    int ok = 0;
    for (int i = 0; i < ls->n_modalities && !ok; i++) ok = same_token(ls->modalities[i], modality);
    if (!ok) return 0;
  }
  if (ls->n_body_parts && known(body_part)) {
    int ok = 0;
    for (int i = 0; i < ls->n_body_parts && !ok; i++) ok = same_token(ls->body_parts[i], body_part);
    if (!ok) return 0;
  }
  if (ls->n_sop_classes && known(sop_class_uid)) {
    /* UIDs compare exactly (a trailing NUL/space pad byte aside). */
    size_t n = strlen(sop_class_uid);
    while (n && (sop_class_uid[n - 1] == ' ' || sop_class_uid[n - 1] == '\0')) n--;
    int ok = 0;
    for (int i = 0; i < ls->n_sop_classes && !ok; i++)
      ok = strlen(ls->sop_classes[i]) == n && strncmp(ls->sop_classes[i], sop_class_uid, n) == 0;
    if (!ok) return 0;
  }
  return 1;
}

/* ---- embedding cache ----
 * <cache_dir>/<model-hash>-<labelset-hash>.emb, all little-endian:
 *   0  char[8]  magic "UMLSEMB1"
 *   8  u32      format version (1)
 *  12  u32      n_labels
 *  16  u32      dim
 *  20  u32      flags: bit 0 = binary (negative block present)
 *  24  char[16] model hash
 *  40  char[16] label-set hash
 *  56  u64      FNV-1a 64 of the payload bytes
 *  64  f32      positive[n_labels][dim], then negative[n_labels][dim] if binary */

#define CACHE_MAGIC "UMLSEMB1"
#define CACHE_VERSION 1u
#define CACHE_HEADER 64

static void put_u32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get_u32(const unsigned char *p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
  return v;
}
static uint64_t get_u64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
  return v;
}

/* Payload bytes (little-endian float32) of the embeddings; n floats. */
static unsigned char *encode_payload(const unimed_label_embeddings *e, size_t *nbytes) {
  size_t per = (size_t)e->n_labels * (size_t)e->dim;
  size_t n = per * (e->negative ? 2 : 1);
  unsigned char *buf = malloc(n * 4);
  if (!buf) return NULL;
  for (size_t i = 0; i < n; i++) {
    float f = i < per ? e->positive[i] : e->negative[i - per];
    uint32_t u;
    memcpy(&u, &f, 4);
    put_u32(buf + 4 * i, u);
  }
  *nbytes = n * 4;
  return buf;
}

/* mkdir -p; 0 when dir exists (or was made) as a directory. */
static int make_dirs(const char *dir) {
  char p[4096];
  size_t n = strlen(dir);
  if (n == 0 || n >= sizeof p) return -1;
  memcpy(p, dir, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if (p[i] == '/' || p[i] == '\0') {
      char saved = p[i];
      p[i] = '\0';
      if (mkdir(p, 0777) != 0 && errno != EEXIST) return -1;
      p[i] = saved;
    }
  }
  struct stat st;
  return stat(dir, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : -1;
}

/* 0 and filled `out` when the cache file is complete and consistent. */
static int read_cache(const char *file, const char *model_hash, const char *set_hash,
                      int n_labels, int dim, int binary, unimed_label_embeddings *out) {
  FILE *fp = fopen(file, "rb");
  if (!fp) return -1;
  size_t per = (size_t)n_labels * (size_t)dim, nf = per * (binary ? 2 : 1);
  size_t want = CACHE_HEADER + nf * 4;
  unsigned char *buf = malloc(want + 1);
  size_t got = buf ? fread(buf, 1, want + 1, fp) : 0;
  fclose(fp);
  int ok = buf && got == want && memcmp(buf, CACHE_MAGIC, 8) == 0 &&
           get_u32(buf + 8) == CACHE_VERSION && get_u32(buf + 12) == (uint32_t)n_labels &&
           get_u32(buf + 16) == (uint32_t)dim && get_u32(buf + 20) == (uint32_t)(binary ? 1 : 0) &&
           memcmp(buf + 24, model_hash, 16) == 0 && memcmp(buf + 40, set_hash, 16) == 0 &&
           get_u64(buf + 56) == fnv1a(FNV_OFFSET, buf + CACHE_HEADER, nf * 4);
  float *pos = NULL, *neg = NULL;
  if (ok) {
    pos = malloc(per * sizeof(float));
    neg = binary ? malloc(per * sizeof(float)) : NULL;
    ok = pos && (!binary || neg);
  }
  for (size_t i = 0; ok && i < nf; i++) {
    uint32_t u = get_u32(buf + CACHE_HEADER + 4 * i);
    float f;
    memcpy(&f, &u, 4);
    if (!isfinite(f)) ok = 0;
    if (i < per)
      pos[i] = f;
    else
      neg[i - per] = f;
  }
  /* every row is a normalised ensemble */
  for (size_t r = 0; ok && r < (size_t)n_labels * (binary ? 2u : 1u); r++) {
    const float *row = r < (size_t)n_labels ? pos + r * dim : neg + (r - n_labels) * dim;
    double s = 0;
    for (int d = 0; d < dim; d++) s += (double)row[d] * row[d];
    if (fabs(s - 1.0) > 1e-3) ok = 0;
  }
  free(buf);
  if (!ok) {
    free(pos);
    free(neg);
    return -1;
  }
  out->n_labels = n_labels;
  out->dim = dim;
  out->positive = pos;
  out->negative = neg;
  return 0;
}

/* Best effort: a cache that cannot be written only costs time later. */
static void write_cache(const char *dir, const char *file, const char *model_hash,
                        const char *set_hash, const unimed_label_embeddings *e) {
  if (make_dirs(dir) != 0) return;
  size_t nbytes = 0;
  unsigned char *payload = encode_payload(e, &nbytes);
  if (!payload) return;
  unsigned char hdr[CACHE_HEADER];
  memset(hdr, 0, sizeof hdr);
  memcpy(hdr, CACHE_MAGIC, 8);
  put_u32(hdr + 8, CACHE_VERSION);
  put_u32(hdr + 12, (uint32_t)e->n_labels);
  put_u32(hdr + 16, (uint32_t)e->dim);
  put_u32(hdr + 20, e->negative ? 1u : 0u);
  memcpy(hdr + 24, model_hash, 16);
  memcpy(hdr + 40, set_hash, 16);
  put_u64(hdr + 56, fnv1a(FNV_OFFSET, payload, nbytes));
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", file, (long)getpid());
  FILE *fp = fopen(tmp, "wb");
  int ok = fp != NULL;
  if (ok) {
    ok = fwrite(hdr, 1, sizeof hdr, fp) == sizeof hdr && fwrite(payload, 1, nbytes, fp) == nbytes;
    ok = fflush(fp) == 0 && ok;
    ok = fsync(fileno(fp)) == 0 && ok;
    ok = fclose(fp) == 0 && ok;
  }
  if (ok) ok = rename(tmp, file) == 0;
  if (!ok && fp) unlink(tmp);
  free(payload);
}

void unimed_label_embeddings_free(unimed_label_embeddings *e) {
  if (!e) return;
  free(e->positive);
  free(e->negative);
  e->positive = e->negative = NULL;
  e->n_labels = e->dim = 0;
}

int unimed_label_set_embed(unimed_model *m, const unimed_label_set *ls, const char *cache_dir,
                           unimed_label_embeddings *out, char *err, size_t errlen) {
  if (!out) {
    unimed_set_err(err, errlen, "label-set embeddings: no output given");
    return -1;
  }
  memset(out, 0, sizeof *out);
  if (!m || !ls || ls->n_labels <= 0) {
    unimed_set_err(err, errlen, "label-set embeddings: no model or no label set");
    return -1;
  }
  const int dim = unimed_model_config(m)->embed_dim;
  const int binary = ls->scoring == UNIMED_SCORING_BINARY;
  const int L = ls->n_labels;
  const char *mhash = um_model_cache_key(m);

  char file[4200] = "";
  if (cache_dir && *cache_dir) {
    int n = snprintf(file, sizeof file, "%s/%s-%s.emb", cache_dir, mhash, ls->hash);
    if (n < 0 || (size_t)n >= sizeof file) {
      unimed_set_err(err, errlen, "%s: cache directory path too long", cache_dir);
      return -1;
    }
    if (read_cache(file, mhash, ls->hash, L, dim, binary, out) == 0) return 0;
  }

  /* every prompt once: label by label, positives then negatives */
  int total = 0;
  for (int i = 0; i < L; i++)
    total += ls->labels[i].n_prompts + (binary ? ls->labels[i].n_negatives : 0);
  const char **texts = malloc((size_t)total * sizeof(char *));
  float *emb = malloc((size_t)total * (size_t)dim * sizeof(float));
  out->positive = malloc((size_t)L * (size_t)dim * sizeof(float));
  out->negative = binary ? malloc((size_t)L * (size_t)dim * sizeof(float)) : NULL;
  out->n_labels = L;
  out->dim = dim;
  if (!texts || !emb || !out->positive || (binary && !out->negative)) {
    unimed_set_err(err, errlen, "%s: out of memory for %d prompt embeddings", ls->path, total);
    goto fail;
  }
  int k = 0;
  for (int i = 0; i < L; i++) {
    const unimed_label *l = &ls->labels[i];
    for (int p = 0; p < l->n_prompts; p++) texts[k++] = l->prompts[p];
    for (int p = 0; binary && p < l->n_negatives; p++) texts[k++] = l->negatives[p];
  }
  for (int b = 0; b < total; b += LS_BATCH) {
    int n = total - b < LS_BATCH ? total - b : LS_BATCH;
    char e2[512];
    if (unimed_encode_texts(m, texts + b, n, emb + (size_t)b * dim, e2, sizeof e2) != 0) {
      unimed_set_err(err, errlen, "%s: encoding prompts %d..%d: %s", ls->path, b, b + n - 1, e2);
      goto fail;
    }
  }
  k = 0;
  for (int i = 0; i < L; i++) {
    const unimed_label *l = &ls->labels[i];
    unimed_prompt_ensemble(emb + (size_t)k * dim, l->n_prompts, dim,
                           out->positive + (size_t)i * dim);
    k += l->n_prompts;
    if (binary) {
      unimed_prompt_ensemble(emb + (size_t)k * dim, l->n_negatives, dim,
                             out->negative + (size_t)i * dim);
      k += l->n_negatives;
    }
  }
  free(texts);
  free(emb);
  if (*file) write_cache(cache_dir, file, mhash, ls->hash, out);
  return 0;
fail:
  free(texts);
  free(emb);
  unimed_label_embeddings_free(out);
  return -1;
}

/* ---- scoring ---- */

void unimed_label_set_score(const unimed_model *m, const unimed_label_set *ls,
                            const unimed_label_embeddings *e, const float *image_embedding,
                            float *probs) {
  const int L = e->n_labels, dim = e->dim;
  if (ls->scoring == UNIMED_SCORING_SOFTMAX || !e->negative) {
    unimed_zero_shot(m, image_embedding, 1, e->positive, L, probs);
    return;
  }
  const double scale = exp((double)unimed_model_logit_scale(m));
  for (int i = 0; i < L; i++) {
    double pos = 0, neg = 0;
    for (int d = 0; d < dim; d++) {
      pos += (double)image_embedding[d] * e->positive[(size_t)i * dim + d];
      neg += (double)image_embedding[d] * e->negative[(size_t)i * dim + d];
    }
    /* softmax over {positive, negative}, probability of the positive */
    probs[i] = (float)(1.0 / (1.0 + exp(scale * (neg - pos))));
  }
}
