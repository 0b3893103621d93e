/* Study archives + labels CSV + label sets -> rows of (labels, report, images),
 * every image decoded once through udcm_frame_tensor. See dataset.h. */
#include "dataset.h"
#include "unimed_model.h"

#include <ctype.h>
#include <errno.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <dirent.h>
#include <sys/stat.h>
#include <zip.h>
#include <zlib.h>

#include "unimed_dicom.h"

static void logf_(const ut_load_opts *o, const char *fmt, ...) {
  if (!o->log) return;
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  o->log(o->log_ctx, line);
}

/* Messages about individual files: the first few are logged, then only counted. */
#define UT_LOG_LIMIT 20

/* ---- random numbers ---- */

static uint64_t splitmix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t ut_hash3(uint64_t a, uint64_t b, uint64_t c) {
  return splitmix(splitmix(splitmix(a) ^ b) ^ c);
}

/* ---- CSV ---- */

int ut_csv_record(const char **pp, const char *end, char *buf, size_t cap, char **fields,
                  int max) {
  const char *p = *pp;
  if (p >= end) return 0;
  size_t used = 0;
  int n = 0;
  for (;;) {
    if (n >= max || used >= cap) return -1;
    fields[n++] = buf + used;
    if (p < end && *p == '"') {
      p++;
      for (;;) {
        if (p >= end) break; /* unterminated: take what there is */
        if (*p == '"') {
          if (p + 1 < end && p[1] == '"') {
            if (used + 1 >= cap) return -1;
            buf[used++] = '"';
            p += 2;
            continue;
          }
          p++;
          break;
        }
        if (used + 1 >= cap) return -1;
        buf[used++] = *p++;
      }
      /* anything between the closing quote and the separator is kept */
      while (p < end && *p != ',' && *p != '\n' && *p != '\r') {
        if (used + 1 >= cap) return -1;
        buf[used++] = *p++;
      }
    } else {
      while (p < end && *p != ',' && *p != '\n' && *p != '\r') {
        if (used + 1 >= cap) return -1;
        buf[used++] = *p++;
      }
    }
    buf[used++] = 0;
    if (p < end && *p == ',') {
      p++;
      continue;
    }
    if (p < end && *p == '\r') p++;
    if (p < end && *p == '\n') p++;
    break;
  }
  *pp = p;
  return n;
}

static char *trim(char *s) {
  while (isspace((unsigned char)*s)) s++;
  size_t n = strlen(s);
  while (n > 0 && isspace((unsigned char)s[n - 1])) s[--n] = 0;
  return s;
}

static char *read_all(const char *path, size_t *len, char *err, size_t errlen) {
  FILE *fp = fopen(path, "rb");
  if (!fp) {
    unimed_set_err(err, errlen, "%s: %s", path, strerror(errno));
    return NULL;
  }
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap + 1);
  size_t r;
  while (buf && (r = fread(buf + n, 1, cap - n, fp)) > 0) {
    n += r;
    if (n == cap) {
      char *nb = realloc(buf, cap * 2 + 1);
      if (!nb) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = nb;
      cap *= 2;
    }
  }
  int bad = ferror(fp);
  fclose(fp);
  if (!buf || bad) {
    free(buf);
    unimed_set_err(err, errlen, "%s: read failed", path);
    return NULL;
  }
  buf[n] = 0;
  *len = n;
  return buf;
}

typedef struct {
  ut_dataset *d;
  const ut_load_opts *o;
  enum ut_key key;
  int *order; /* row indices sorted by key */
  /* images decoded so far (before grouping by row) */
  float *pix;
  int *img_row;
  int n_img, cap_img;
  size_t per;
  /* SR texts: study uid + text */
  char (*sr_study)[65];
  char **sr_text;
  int n_sr, cap_sr;
  int logged;
  /* the Orthanc study being added (--orthanc), and the keys of the study it
   * was anonymised from (NULL / "" when none) */
  const char *orthanc_id, *alias_study_uid, *alias_accession, *alias_orthanc_id;
  char *err; /* for the Orthanc callback */
  size_t errlen;
} loader;

static const char *const key_names[] = {"StudyInstanceUID", "AccessionNumber",
                                        "SeriesInstanceUID", "SOPInstanceUID", "OrthancStudyID"};

static loader *g_sort_loader; /* qsort has no context argument in C11 */
static int cmp_rows(const void *a, const void *b) {
  const ut_row *r = g_sort_loader->d->rows;
  return strcmp(r[*(const int *)a].key, r[*(const int *)b].key);
}

static int find_row(const loader *L, const char *key) {
  int lo = 0, hi = L->d->n_rows - 1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2, c = strcmp(L->d->rows[L->order[mid]].key, key);
    if (c == 0) { /* duplicates: the earliest line */
      while (mid > 0 && !strcmp(L->d->rows[L->order[mid - 1]].key, key)) mid--;
      int best = L->order[mid];
      for (int j = mid + 1; j < L->d->n_rows && !strcmp(L->d->rows[L->order[j]].key, key); j++)
        if (L->order[j] < best) best = L->order[j];
      return best;
    }
    if (c < 0) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}

static int load_csv(loader *L, char *err, size_t errlen) {
  const ut_load_opts *o = L->o;
  ut_dataset *d = L->d;
  size_t len;
  char *text = read_all(o->labels_csv, &len, err, errlen);
  if (!text) return -1;
  const char *p = text, *end = text + len;
  if (len >= 3 && (unsigned char)p[0] == 0xEF && (unsigned char)p[1] == 0xBB &&
      (unsigned char)p[2] == 0xBF)
    p += 3; /* UTF-8 BOM */
  size_t cap = len + 64;
  char *buf = malloc(cap);
  char *f[256];
  int rc = -1;
  if (!buf) {
    unimed_set_err(err, errlen, "out of memory");
    goto done;
  }
  int nf = ut_csv_record(&p, end, buf, cap, f, 256);
  if (nf <= 0) {
    unimed_set_err(err, errlen, "%s: empty or unreadable header line", o->labels_csv);
    goto done;
  }
  int kcol = -1, lcol = -1, rcol = -1;
  for (int i = 0; i < nf; i++) {
    char *h = trim(f[i]);
    if (!strcasecmp(h, "label") || !strcasecmp(h, "labels")) lcol = i;
    if (!strcasecmp(h, "report") || !strcasecmp(h, "text")) rcol = i;
  }
  /* the key: --key, else the first of key_names present in the header */
  for (int k = 0; k < 5 && kcol < 0; k++) {
    if (o->key_column && strcasecmp(o->key_column, key_names[k])) continue;
    for (int i = 0; i < nf && kcol < 0; i++)
      if (!strcasecmp(f[i], key_names[k])) kcol = i, L->key = (enum ut_key)k;
  }
  if (kcol < 0) {
    if (o->key_column)
      unimed_set_err(err, errlen, "%s: key column '%s' is not in the header, or is not one of "
                           "StudyInstanceUID, AccessionNumber, SeriesInstanceUID, SOPInstanceUID, "
                           "OrthancStudyID",
              o->labels_csv, o->key_column);
    else
      unimed_set_err(err, errlen, "%s: no key column (StudyInstanceUID, AccessionNumber, "
                           "SeriesInstanceUID, SOPInstanceUID or OrthancStudyID) in the header",
              o->labels_csv);
    goto done;
  }
  if (lcol < 0 && rcol < 0) {
    unimed_set_err(err, errlen, "%s: neither a 'label' nor a 'report' column", o->labels_csv);
    goto done;
  }
  int cap_rows = 0, line = 1;
  while ((nf = ut_csv_record(&p, end, buf, cap, f, 256)) != 0) {
    line++;
    if (nf < 0 || nf <= kcol) {
      if (nf == 1 && !*trim(f[0])) continue; /* blank line */
      d->skips.csv_bad_lines++;
      if (L->logged++ < UT_LOG_LIMIT)
        logf_(o, "%s:%d: malformed line (%d fields) skipped", o->labels_csv, line, nf);
      if (nf < 0) break;
      continue;
    }
    char *key = trim(f[kcol]);
    if (!*key || strlen(key) >= sizeof d->rows[0].key) {
      d->skips.csv_bad_lines++;
      if (L->logged++ < UT_LOG_LIMIT)
        logf_(o, "%s:%d: empty or over-long key skipped", o->labels_csv, line);
      continue;
    }
    if (d->n_rows == cap_rows) {
      cap_rows = cap_rows ? cap_rows * 2 : 256;
      ut_row *nr = realloc(d->rows, (size_t)cap_rows * sizeof *nr);
      if (!nr) {
        unimed_set_err(err, errlen, "out of memory");
        goto done;
      }
      d->rows = nr;
    }
    ut_row *r = &d->rows[d->n_rows++];
    memset(r, 0, sizeof *r);
    r->set = -1;
    snprintf(r->key, sizeof r->key, "%s", key);
    if (lcol >= 0 && lcol < nf && *trim(f[lcol])) r->label_text = strdup(trim(f[lcol]));
    if (rcol >= 0 && rcol < nf && *trim(f[rcol])) r->report = strdup(trim(f[rcol]));
  }
  L->order = malloc((size_t)(d->n_rows ? d->n_rows : 1) * sizeof(int));
  if (!L->order) {
    unimed_set_err(err, errlen, "out of memory");
    goto done;
  }
  for (int i = 0; i < d->n_rows; i++) L->order[i] = i;
  g_sort_loader = L;
  qsort(L->order, (size_t)d->n_rows, sizeof(int), cmp_rows);
  /* duplicate keys: the first line wins */
  for (int i = 1; i < d->n_rows; i++)
    if (!strcmp(d->rows[L->order[i]].key, d->rows[L->order[i - 1]].key)) {
      int a = L->order[i], b = L->order[i - 1], dup = a > b ? a : b;
      if (d->rows[dup].valid == 0) {
        if (L->logged++ < UT_LOG_LIMIT)
          logf_(o, "%s: key %s appears twice; the later line is skipped", o->labels_csv,
                d->rows[dup].key);
        d->skips.csv_bad_lines++;
        d->rows[dup].valid = -1;
      }
    }
  logf_(o, "%s: %d rows, key column %s", o->labels_csv, d->n_rows, key_names[L->key]);
  rc = 0;
done:
  free(buf);
  free(text);
  return rc;
}

/* ---- images ---- */

static int push_image(loader *L, int row, float **slot, char *err, size_t errlen) {
  if (L->n_img == L->cap_img) {
    int nc = L->cap_img ? L->cap_img * 2 : 256;
    float *np = realloc(L->pix, (size_t)nc * L->per * sizeof(float));
    if (!np) goto oom;
    L->pix = np;
    int *nr = realloc(L->img_row, (size_t)nc * sizeof(int));
    if (!nr) goto oom;
    L->img_row = nr;
    L->cap_img = nc;
  }
  L->img_row[L->n_img] = row;
  *slot = L->pix + (size_t)L->n_img * L->per;
  return 0;
oom:
  unimed_set_err(err, errlen, "out of memory for the image cache");
  return -1;
}

static void note_row(ut_row *r, const udcm_series *s) {
  if (r->study_uid[0]) return;
  snprintf(r->study_uid, sizeof r->study_uid, "%s", s->study_uid);
  snprintf(r->modality, sizeof r->modality, "%s", s->modality);
  snprintf(r->body_part, sizeof r->body_part, "%s", s->body_part);
  snprintf(r->sop_class, sizeof r->sop_class, "%s", s->sop_class_uid);
}

/* Decodes frame `frame` of instance `inst` into the cache for row. */
static int add_frame(loader *L, int row, const udcm_series *s, int inst, uint32_t frame,
                     char *err, size_t errlen) {
  const ut_load_opts *o = L->o;
  char e2[512];
  udcm_handle *h = udcm_instance_open(&s->instances[inst], NULL, e2, sizeof e2);
  float *slot;
  if (h && push_image(L, row, &slot, err, errlen) != 0) {
    udcm_close(h);
    return -1;
  }
  if (!h || udcm_frame_tensor(h, frame, NULL, o->image_size, o->mean, o->std, slot, NULL, e2,
                              sizeof e2) != 0) {
    udcm_close(h);
    L->d->skips.frames_undecodable++;
    if (L->logged++ < UT_LOG_LIMIT) logf_(o, "skipped frame %u: %s", frame, e2);
    return 0;
  }
  udcm_close(h);
  L->n_img++;
  note_row(&L->d->rows[row], s);
  return 0;
}

static void append_text(char **dst, const char *t) {
  if (!*dst) {
    *dst = strdup(t);
    return;
  }
  size_t a = strlen(*dst), b = strlen(t);
  char *n = realloc(*dst, a + b + 3);
  if (!n) return;
  memcpy(n + a, "; ", 2);
  memcpy(n + a + 2, t, b + 1);
  *dst = n;
}

static char *sr_text_of(const udcm_sr_result *res) {
  size_t cap = 256, n = 0;
  char *out = malloc(cap);
  if (!out) return NULL;
  out[0] = 0;
#define APPEND(str)                                   \
  do {                                                \
    const char *s_ = (str);                           \
    size_t l_ = strlen(s_);                           \
    while (n + l_ + 1 > cap) {                        \
      char *nb_ = realloc(out, cap *= 2);             \
      if (!nb_) {                                     \
        free(out);                                    \
        return NULL;                                  \
      }                                               \
      out = nb_;                                      \
    }                                                 \
    memcpy(out + n, s_, l_ + 1);                      \
    n += l_;                                          \
  } while (0)
  int items = 0;
  for (size_t g = 0; g < res->n_groups; g++) {
    const udcm_sr_read_group *gr = &res->groups[g];
    for (size_t i = 0; i < gr->n_findings; i++) {
      const udcm_sr_read_finding *f = &gr->findings[i];
      if (f->has_probability && f->probability < 0.5) continue;
      if (!f->code.meaning || !*f->code.meaning) continue;
      APPEND(items++ ? ", " : "findings: ");
      APPEND(f->code.meaning);
    }
    for (size_t i = 0; i < gr->n_measurements; i++) {
      const udcm_sr_read_measurement *m = &gr->measurements[i];
      if (!m->concept_name.meaning || !*m->concept_name.meaning) continue;
      APPEND(items++ ? ", " : "findings: ");
      APPEND(m->concept_name.meaning);
      if (m->value_text && *m->value_text) {
        APPEND(" ");
        APPEND(m->value_text);
        if (m->unit.meaning && *m->unit.meaning) {
          APPEND(" ");
          APPEND(m->unit.meaning);
        }
      }
    }
  }
#undef APPEND
  if (!items) {
    free(out);
    return NULL;
  }
  return out;
}

/* The SR writer's identity (dicom/sr_observer.cpp, plugin): the Device
 * Observer Manufacturer it sets, and the label_set_* algorithm parameters
 * only it writes into a TID 4019 Algorithm Identification. */
#define UT_OWN_MANUFACTURER "UniMed for Orthanc"
static int written_by_this_project(const udcm_sr_result *res) {
  if (res->device_observer_manufacturer &&
      !strcmp(res->device_observer_manufacturer, UT_OWN_MANUFACTURER))
    return 1;
  for (size_t g = 0; g < res->n_groups; g++)
    if (res->groups[g].label_set_hash && res->groups[g].label_set_hash[0]) return 1;
  return 0;
}

static const char *sr_kind(const char *sop_class) {
  static const struct {
    const char *uid, *name;
  } kinds[] = {{"1.2.840.10008.5.1.4.1.1.88.11", "Basic Text SR"},
               {"1.2.840.10008.5.1.4.1.1.88.22", "Enhanced SR"},
               {"1.2.840.10008.5.1.4.1.1.88.33", "Comprehensive SR"},
               {"1.2.840.10008.5.1.4.1.1.88.34", "Comprehensive 3D SR"},
               {"1.2.840.10008.5.1.4.1.1.88.35", "Extensible SR"}};
  for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
    if (sop_class && !strcmp(sop_class, kinds[i].uid)) return kinds[i].name;
  return "SR";
}

static int is_code(const udcm_sr_code *c, const char *value, const char *scheme) {
  return c->value && c->scheme && !strcmp(c->value, value) && !strcmp(c->scheme, scheme);
}

/* The report narrative: the TEXT items of the Findings (121070) and
 * Impressions (121072) sections of a TID 2000 report when it has them (its
 * other sections - history, request, ... - describe the question, not the
 * images), else every TEXT item. `what` says which. NULL when none. */
static char *narrative_of(const udcm_sr_result *res, char *what, size_t whatlen) {
  int sections = 0;
  for (size_t i = 0; i < res->n_texts; i++)
    if (is_code(&res->texts[i].section, "121070", "DCM") ||
        is_code(&res->texts[i].section, "121072", "DCM"))
      sections = 1;
  size_t total = 1;
  for (size_t i = 0; i < res->n_texts; i++) total += strlen(res->texts[i].value) + 2;
  char *out = malloc(total);
  if (!out) return NULL;
  out[0] = 0;
  int n = 0;
  what[0] = 0;
  for (size_t i = 0; i < res->n_texts; i++) {
    const udcm_sr_text_item *t = &res->texts[i];
    if (sections && !is_code(&t->section, "121070", "DCM") && !is_code(&t->section, "121072", "DCM"))
      continue;
    if (n++) { /* items become sentences */
      size_t l = strlen(out);
      while (l > 0 && out[l - 1] == ' ') out[--l] = 0;
      strcat(out, l > 0 && strchr(".!?;:", out[l - 1]) ? " " : ". ");
    }
    strcat(out, t->value);
    const char *sec = t->section.meaning && *t->section.meaning ? t->section.meaning : "root";
    if (!strstr(what, sec) && strlen(what) + strlen(sec) + 3 < whatlen) {
      if (*what) strcat(what, ", ");
      strcat(what, sec);
    }
  }
  if (!n) {
    free(out);
    return NULL;
  }
  char *sections_read = strdup(what);
  if (sections_read) {
    snprintf(what, whatlen, "%d TEXT item%s (%.150s)", n, n == 1 ? "" : "s", sections_read);
    free(sections_read);
  }
  return out;
}

static int add_sr(loader *L, const udcm_series *s, char *err, size_t errlen) {
  for (int i = 0; i < s->n_instances; i++) {
    const udcm_instance *in = &s->instances[i];
    char e2[512];
    udcm_sr_result *res = in->data ? udcm_sr_read_memory(in->data, in->len, in->path, e2,
                                                         sizeof e2)
                                   : udcm_sr_read_file(in->path, e2, sizeof e2);
    if (!res) {
      if (L->logged++ < UT_LOG_LIMIT) logf_(L->o, "SR not read: %s", e2);
      continue;
    }
    const char *kind = sr_kind(res->sop_class_uid);
    int own = written_by_this_project(res);
    if (own) {
      L->d->skips.sr_own++;
      if (!L->o->include_own_sr) {
        logf_(L->o, "study %s: %s %s was written by " UT_OWN_MANUFACTURER
                    " (AI findings): not used as report text", in->info.study_uid, kind,
              in->path);
        udcm_sr_result_free(res);
        continue;
      }
    }
    char what[200];
    char *narrative = narrative_of(res, what, sizeof what);
    char *findings = sr_text_of(res);
    udcm_sr_result_free(res);
    const int has_narrative = narrative != NULL, has_findings = findings != NULL;
    char *t = narrative;
    if (findings) {
      if (t) {
        append_text(&t, findings);
        free(findings);
      } else {
        t = findings;
      }
    }
    if (!t) {
      L->d->skips.sr_no_text++;
      logf_(L->o, "study %s: %s %s has no report text (no TEXT item, no TID 1500 finding)",
            in->info.study_uid, kind, in->path);
      continue;
    }
    logf_(L->o, "study %s: report text from %s%s %s: %s%s%s", in->info.study_uid,
          own ? "our own (--include-own-sr) " : "", kind, in->path, has_narrative ? what : "",
          has_narrative && has_findings ? " + " : "", has_findings ? "TID 1500 findings" : "");
    if (L->n_sr == L->cap_sr) {
      int nc = L->cap_sr ? L->cap_sr * 2 : 16;
      char(*ns)[65] = realloc(L->sr_study, (size_t)nc * sizeof *ns);
      if (ns) L->sr_study = ns;
      char **nt = realloc(L->sr_text, (size_t)nc * sizeof *nt);
      if (nt) L->sr_text = nt;
      if (!ns || !nt) {
        free(t);
        unimed_set_err(err, errlen, "out of memory");
        return -1;
      }
      L->cap_sr = nc;
    }
    snprintf(L->sr_study[L->n_sr], 65, "%s", in->info.study_uid);
    L->sr_text[L->n_sr++] = t;
  }
  return 0;
}

static const char *series_key(const loader *L, const udcm_series *s, int inst) {
  switch (L->key) {
  case UT_KEY_STUDY: return s->study_uid;
  case UT_KEY_ACCESSION: return s->instances[0].info.accession_number;
  case UT_KEY_SERIES: return s->series_uid;
  case UT_KEY_SOP: return s->instances[inst].info.sop_instance_uid;
  case UT_KEY_ORTHANC: return L->orthanc_id ? L->orthanc_id : "";
  }
  return "";
}

/* The key of the study an anonymised Orthanc study came from (AnonymizedFrom). */
static const char *alias_key(const loader *L) {
  const char *k = L->key == UT_KEY_STUDY ? L->alias_study_uid
                  : L->key == UT_KEY_ACCESSION ? L->alias_accession
                  : L->key == UT_KEY_ORTHANC ? L->alias_orthanc_id : NULL;
  return k && *k ? k : NULL;
}

static int add_collection(loader *L, const udcm_collection *c, char *err, size_t errlen) {
  const ut_load_opts *o = L->o;
  ut_dataset *d = L->d;
  const int K = o->frames_per_series > 0 ? o->frames_per_series : 1;
  udcm_frame_ref *refs = malloc((size_t)K * sizeof *refs);
  if (!refs) {
    unimed_set_err(err, errlen, "out of memory");
    return -1;
  }
  int rc = 0;
  for (int si = 0; si < c->n_series && rc == 0; si++) {
    const udcm_series *s = &c->series[si];
    if (s->is_wsi) {
      d->skips.series_wsi++;
      continue;
    }
    if (!s->is_image) {
      d->skips.series_not_image++;
      if (!strcmp(s->modality, "SR")) rc = add_sr(L, s, err, errlen);
      continue;
    }
    if (L->key == UT_KEY_SOP) {
      for (int i = 0; i < s->n_instances && rc == 0; i++) {
        const udcm_instance *in = &s->instances[i];
        if (!in->info.is_image) continue;
        int row = find_row(L, in->info.sop_instance_uid);
        if (row < 0 || d->rows[row].valid < 0) {
          d->skips.images_unmatched++;
          continue;
        }
        int N = in->info.frames > 0 ? in->info.frames : 1, k = K < N ? K : N;
        for (int j = 0; j < k && rc == 0; j++)
          rc = add_frame(L, row, s, i, (uint32_t)(((double)j + 0.5) * N / k), err, errlen);
      }
      continue;
    }
    int row = find_row(L, series_key(L, s, 0));
    if (row < 0 && alias_key(L)) {
      row = find_row(L, alias_key(L));
      if (row >= 0)
        logf_(o, "series %s: anonymised study, labels of the original (%s %s, AnonymizedFrom)",
              s->series_uid, key_names[L->key], alias_key(L));
    }
    if (row < 0 || d->rows[row].valid < 0) {
      d->skips.images_unmatched += s->n_instances;
      if (L->logged++ < UT_LOG_LIMIT && row < 0)
        logf_(o, "series %s: %s '%s' is not in the labels CSV", s->series_uid,
              key_names[L->key], series_key(L, s, 0));
      continue;
    }
    int k = udcm_series_pick_frames(s, K, refs);
    if (k < 0) {
      unimed_set_err(err, errlen, "out of memory");
      rc = -1;
    }
    for (int j = 0; j < k && rc == 0; j++)
      rc = add_frame(L, row, s, refs[j].instance, refs[j].frame, err, errlen);
  }
  free(refs);
  return rc;
}

static void warn_cb(void *ctx, const char *msg) {
  loader *L = ctx;
  L->d->skips.files_not_dicom++;
  if (L->logged++ < UT_LOG_LIMIT) logf_(L->o, "%s", msg);
}

static int add_zip(loader *L, const char *path, char *err, size_t errlen) {
  const ut_load_opts *o = L->o;
  int zerr = 0;
  zip_t *z = zip_open(path, ZIP_RDONLY | ZIP_CHECKCONS, &zerr);
  if (!z) {
    zip_error_t ze;
    zip_error_init_with_code(&ze, zerr);
    L->d->skips.archives_unreadable++;
    logf_(o, "skipped archive %s: not a readable ZIP (%s)", path, zip_error_strerror(&ze));
    zip_error_fini(&ze);
    return 0;
  }
  zip_int64_t n = zip_get_num_entries(z, 0);
  udcm_memory_file *files = calloc((size_t)(n > 0 ? n : 1), sizeof *files);
  char **names = calloc((size_t)(n > 0 ? n : 1), sizeof *names);
  int nf = 0, rc = 0;
  if (!files || !names) {
    unimed_set_err(err, errlen, "out of memory");
    rc = -1;
    goto done;
  }
  for (zip_int64_t i = 0; i < n; i++) {
    zip_stat_t st;
    if (zip_stat_index(z, (zip_uint64_t)i, 0, &st) != 0 || !(st.valid & ZIP_STAT_NAME)) continue;
    size_t nl = strlen(st.name);
    if (nl == 0 || st.name[nl - 1] == '/') continue; /* folder */
    const char *base = strrchr(st.name, '/');
    base = base ? base + 1 : st.name;
    if (!strcmp(base, "DICOMDIR") || base[0] == '.' || !strncmp(st.name, "__MACOSX/", 9))
      continue;
    if (!(st.valid & ZIP_STAT_SIZE) || st.size > ((zip_uint64_t)1 << 31)) {
      L->d->skips.entries_unreadable++;
      if (L->logged++ < UT_LOG_LIMIT) logf_(o, "skipped %s:%s: unknown or huge size", path, st.name);
      continue;
    }
    char *buf = malloc(st.size ? st.size : 1);
    char why[300] = "";
    if (!buf) {
      snprintf(why, sizeof why, "out of memory for %llu bytes", (unsigned long long)st.size);
    } else {
      zip_file_t *zf = zip_fopen_index(z, (zip_uint64_t)i, 0);
      if (!zf) {
        snprintf(why, sizeof why, "cannot open the entry: %s", zip_strerror(z));
      } else {
        zip_int64_t got = 0, r = 0;
        while ((zip_uint64_t)got < st.size &&
               (r = zip_fread(zf, buf + got, st.size - (zip_uint64_t)got)) > 0)
          got += r;
        if (r < 0)
          snprintf(why, sizeof why, "read error after %lld of %llu bytes: %s", (long long)got,
                   (unsigned long long)st.size, zip_file_strerror(zf));
        else if ((zip_uint64_t)got != st.size)
          snprintf(why, sizeof why, "truncated: %lld of %llu bytes", (long long)got,
                   (unsigned long long)st.size);
        if (zip_fclose(zf) != 0 && !why[0])
          snprintf(why, sizeof why, "error at the end of the entry: %s", zip_strerror(z));
      }
    }
    /* libzip checks the CRC only when a read reaches the end of the data; an
     * entry read by its size (stored entries) is never checked. Check every
     * entry here. */
    if (!why[0] && (st.valid & ZIP_STAT_CRC)) {
      uLong crc = crc32(crc32(0L, Z_NULL, 0), (const Bytef *)buf, (uInt)st.size);
      if ((zip_uint32_t)crc != st.crc)
        snprintf(why, sizeof why, "CRC-32 mismatch (%08lx in the archive, %08lx of the %s data)",
                 (unsigned long)st.crc, (unsigned long)crc,
                 st.comp_method == ZIP_CM_STORE ? "stored" : "inflated");
    }
    if (why[0]) {
      L->d->skips.entries_unreadable++;
      if (L->logged++ < UT_LOG_LIMIT) logf_(o, "skipped %s:%s: %s", path, st.name, why);
      free(buf);
      continue;
    }
    /* messages about the entry name the archive too */
    size_t nlen = strlen(path) + strlen(st.name) + 2;
    names[nf] = malloc(nlen);
    if (!names[nf]) {
      free(buf);
      unimed_set_err(err, errlen, "out of memory");
      rc = -1;
      goto done;
    }
    snprintf(names[nf], nlen, "%s:%s", path, st.name);
    files[nf].name = names[nf];
    files[nf].data = buf;
    files[nf].len = st.size;
    nf++;
  }
  udcm_collection c;
  char e2[512];
  if (udcm_collect_memory(files, nf, NULL, warn_cb, L, &c, e2, sizeof e2) != 0) {
    unimed_set_err(err, errlen, "%s: %s", path, e2);
    rc = -1;
    goto done;
  }
  int before = L->n_img;
  rc = add_collection(L, &c, err, errlen);
  udcm_collection_free(&c);
  logf_(o, "%s: %d files, %d images used", path, nf, L->n_img - before);
done:
  for (int i = 0; i < nf; i++) {
    free((void *)files[i].data);
    free(names[i]);
  }
  free(files);
  free(names);
  zip_discard(z);
  return rc;
}

typedef struct {
  char **v;
  int n, cap;
} path_list;

static int path_push(path_list *l, const char *p) {
  if (l->n == l->cap) {
    int nc = l->cap ? l->cap * 2 : 64;
    char **nv = realloc(l->v, (size_t)nc * sizeof *nv);
    if (!nv) return -1;
    l->v = nv;
    l->cap = nc;
  }
  return (l->v[l->n] = strdup(p)) ? (l->n++, 0) : -1;
}

static void path_free(path_list *l) {
  for (int i = 0; i < l->n; i++) free(l->v[i]);
  free(l->v);
}

static int cmp_cstr(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Whether a file starts like a ZIP archive (local header or empty archive). */
static int looks_like_zip(const char *path) {
  FILE *fp = fopen(path, "rb");
  if (!fp) return 0;
  unsigned char m[4] = {0};
  size_t n = fread(m, 1, 4, fp);
  fclose(fp);
  return n == 4 && m[0] == 'P' && m[1] == 'K' &&
         ((m[2] == 3 && m[3] == 4) || (m[2] == 5 && m[3] == 6));
}

/* Walks a folder in name order: ZIP archives (by their signature) to zips,
 * everything else to files. Hidden entries, __MACOSX and DICOMDIR are left
 * out. */
static int walk_folder(loader *L, const char *dir, int depth, path_list *files, path_list *zips) {
  if (depth > 64) return 0;
  DIR *dp = opendir(dir);
  if (!dp) {
    L->d->skips.archives_unreadable++;
    logf_(L->o, "skipped folder %s: %s", dir, strerror(errno));
    return 0;
  }
  path_list names = {0};
  int rc = 0;
  struct dirent *e;
  while ((e = readdir(dp)) != NULL && rc == 0)
    if (e->d_name[0] != '.' && strcmp(e->d_name, "__MACOSX") && strcmp(e->d_name, "DICOMDIR"))
      rc = path_push(&names, e->d_name);
  closedir(dp);
  if (names.n) qsort(names.v, (size_t)names.n, sizeof *names.v, cmp_cstr);
  for (int i = 0; i < names.n && rc == 0; i++) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, names.v[i]);
    struct stat st;
    if (stat(p, &st) != 0) continue;
    if (S_ISDIR(st.st_mode)) rc = walk_folder(L, p, depth + 1, files, zips);
    else if (S_ISREG(st.st_mode)) rc = path_push(looks_like_zip(p) ? zips : files, p);
  }
  path_free(&names);
  return rc;
}

static int add_zip(loader *L, const char *path, char *err, size_t errlen);

/* A folder: its DICOM files (any depth) as one collection, then every ZIP
 * archive found in it (e.g. one /studies/{id}/archive per study). */
static int add_folder(loader *L, const char *path, char *err, size_t errlen) {
  path_list files = {0}, zips = {0};
  int rc = walk_folder(L, path, 0, &files, &zips);
  if (rc != 0) {
    unimed_set_err(err, errlen, "out of memory");
    goto done;
  }
  int before = L->n_img;
  if (files.n > 0) {
    udcm_collection c;
    char e2[512];
    if (udcm_collect((const char *const *)files.v, files.n, NULL, warn_cb, L, &c, e2,
                     sizeof e2) != 0) {
      unimed_set_err(err, errlen, "%s: %s", path, e2);
      rc = -1;
      goto done;
    }
    rc = add_collection(L, &c, err, errlen);
    udcm_collection_free(&c);
  }
  logf_(L->o, "%s: %d files, %d images used, %d ZIP archives inside", path, files.n,
        L->n_img - before, zips.n);
  for (int i = 0; i < zips.n && rc == 0; i++) rc = add_zip(L, zips.v[i], err, errlen);
done:
  path_free(&files);
  path_free(&zips);
  return rc;
}

/* ---- Orthanc ---- */

static int add_orthanc_study(void *ctx, const ut_orthanc_study *s) {
  loader *L = ctx;
  udcm_memory_file *files = calloc((size_t)(s->n_files ? s->n_files : 1), sizeof *files);
  if (!files) {
    unimed_set_err(L->err, L->errlen, "out of memory");
    return -1;
  }
  for (int i = 0; i < s->n_files; i++) {
    files[i].name = s->names[i];
    files[i].data = s->data[i];
    files[i].len = s->len[i];
  }
  udcm_collection c;
  char e2[512];
  int rc = udcm_collect_memory(files, s->n_files, NULL, warn_cb, L, &c, e2, sizeof e2);
  if (rc != 0) {
    unimed_set_err(L->err, L->errlen, "Orthanc study %s: %s", s->orthanc_id, e2);
  } else {
    L->orthanc_id = s->orthanc_id;
    L->alias_study_uid = s->original_study_uid;
    L->alias_accession = s->original_accession;
    L->alias_orthanc_id = s->original_id;
    int before = L->n_img;
    rc = add_collection(L, &c, L->err, L->errlen);
    udcm_collection_free(&c);
    logf_(L->o, "orthanc study %s (%s%s%s): %d instances, %d images used", s->orthanc_id,
          s->study_uid, *s->original_id ? ", anonymised from " : "", s->original_id, s->n_files,
          L->n_img - before);
    L->orthanc_id = L->alias_study_uid = L->alias_accession = L->alias_orthanc_id = NULL;
  }
  free(files);
  return rc;
}

/* ---- labels ---- */

static int find_label(const unimed_label_set *ls, const char *name) {
  for (int i = 0; i < ls->n_labels; i++) {
    const unimed_label *l = &ls->labels[i];
    if (!strcasecmp(l->name, name)) return i;
    for (int k = 0; k < l->n_synonyms; k++)
      if (!strcasecmp(l->synonyms[k], name)) return i;
  }
  return -1;
}

/* Resolves the row's labels in the first set (those that apply to the
 * row's images first) that knows all of them. 0, or -1 with the unknown label. */
static int resolve_labels(const ut_load_opts *o, ut_row *r, char *bad, size_t badlen) {
  char tmp[1024];
  snprintf(tmp, sizeof tmp, "%s", r->label_text);
  char *names[UT_MAX_LABELS];
  int n = 0;
  for (char *save = NULL, *t = strtok_r(tmp, "|", &save); t; t = strtok_r(NULL, "|", &save)) {
    t = trim(t);
    if (!*t) continue;
    if (n == UT_MAX_LABELS) break;
    names[n++] = t;
  }
  if (n == 0) return 0;
  for (int pass = 0; pass < 2; pass++)
    for (int s = 0; s < o->n_sets; s++) {
      int ap = unimed_label_set_applies(o->sets[s], r->modality, r->body_part, r->sop_class);
      if (ap != (pass == 0)) continue;
      int ok = 1;
      for (int i = 0; i < n && ok; i++) ok = (r->labels[i] = find_label(o->sets[s], names[i])) >= 0;
      if (ok) {
        r->set = s;
        r->n_labels = n;
        return 0;
      }
    }
  /* name the first label no set knows (or the combination) */
  for (int i = 0; i < n; i++) {
    int any = 0;
    for (int s = 0; s < o->n_sets && !any; s++) any = find_label(o->sets[s], names[i]) >= 0;
    if (!any) {
      snprintf(bad, badlen, "label '%s' is in no label set", names[i]);
      return -1;
    }
  }
  snprintf(bad, badlen, "labels '%s' are not all in one label set", r->label_text);
  return -1;
}

static void free_row(ut_row *r) {
  free(r->report);
  free(r->sr_text);
  free(r->label_text);
}

int ut_dataset_load(ut_dataset *d, const ut_load_opts *o, char *err, size_t errlen) {
  memset(d, 0, sizeof *d);
  d->size = o->image_size;
  d->sets = o->sets;
  d->n_sets = o->n_sets;
  loader L;
  memset(&L, 0, sizeof L);
  L.d = d;
  L.o = o;
  L.per = (size_t)3 * o->image_size * o->image_size;
  int rc = -1;
  if (load_csv(&L, err, errlen) != 0) goto done;
  if (d->n_rows == 0) {
    unimed_set_err(err, errlen, "%s: no data rows", o->labels_csv);
    goto done;
  }
  for (int a = 0; a < o->n_archives; a++) {
    const char *p = o->archives[a];
    char dirbuf[4096];
    const char *base = strrchr(p, '/');
    base = base ? base + 1 : p;
    if (!strcmp(base, "DICOMDIR")) { /* the folder it indexes */
      snprintf(dirbuf, sizeof dirbuf, "%s", p);
      p = dirname(dirbuf);
    }
    struct stat st;
    if (stat(p, &st) != 0) {
      d->skips.archives_unreadable++;
      logf_(o, "skipped archive %s: %s", p, strerror(errno));
      continue;
    }
    if ((S_ISDIR(st.st_mode) ? add_folder(&L, p, err, errlen) : add_zip(&L, p, err, errlen)) != 0)
      goto done;
  }
  if (o->orthanc) {
#ifdef UT_WITH_ORTHANC
    L.err = err;
    L.errlen = errlen;
    if (ut_orthanc_fetch(o->orthanc, add_orthanc_study, &L, o->log, o->log_ctx,
                         &d->skips.orthanc_studies_unreadable, err, errlen) != 0)
      goto done;
#else
    (void)add_orthanc_study;
    unimed_set_err(err, errlen, "this unimed-train was built without libcurl: no --orthanc");
    goto done;
#endif
  }
  if (d->skips.sr_own)
    logf_(o, "%d SR document%s written by " UT_OWN_MANUFACTURER " (its AI findings) %s", d->skips.sr_own,
          d->skips.sr_own == 1 ? "" : "s",
          o->include_own_sr ? "used as report text (--include-own-sr)" : "excluded from the report text");
  /* SR text to the rows of the same study */
  for (int i = 0; i < L.n_sr; i++)
    for (int r = 0; r < d->n_rows; r++)
      if (!strcmp(d->rows[r].study_uid, L.sr_study[i])) append_text(&d->rows[r].sr_text, L.sr_text[i]);
  /* which rows are kept */
  int *count = calloc((size_t)d->n_rows, sizeof(int));
  if (!count) {
    unimed_set_err(err, errlen, "out of memory");
    goto done;
  }
  for (int i = 0; i < L.n_img; i++) count[L.img_row[i]]++;
  for (int r = 0; r < d->n_rows; r++) {
    ut_row *row = &d->rows[r];
    if (row->valid < 0) continue;
    if (count[r] == 0) {
      d->skips.rows_no_images++;
      if (L.logged++ < UT_LOG_LIMIT) logf_(o, "row %s: no images in the archives", row->key);
      continue;
    }
    char bad[1100];
    if (row->label_text && o->n_sets > 0 && resolve_labels(o, row, bad, sizeof bad) != 0) {
      d->skips.rows_bad_label++;
      if (L.logged++ < UT_LOG_LIMIT) logf_(o, "row %s: %s", row->key, bad);
      continue;
    }
    int has_label = row->n_labels > 0 || (o->n_sets == 0 && row->label_text);
    if (o->require_label ? row->n_labels == 0 : !has_label && !row->report && !row->sr_text) {
      d->skips.rows_no_caption++;
      if (L.logged++ < UT_LOG_LIMIT)
        logf_(o, "row %s: %s", row->key, o->require_label ? "no label" : "no label and no report");
      continue;
    }
    row->valid = 1;
  }
  /* compact the rows and group the images by row */
  int *newidx = malloc((size_t)d->n_rows * sizeof(int));
  int *first = malloc((size_t)d->n_rows * sizeof(int));
  if (!newidx || !first) {
    free(count);
    free(newidx);
    free(first);
    unimed_set_err(err, errlen, "out of memory");
    goto done;
  }
  int nr = 0, ni = 0;
  for (int r = 0; r < d->n_rows; r++) {
    if (d->rows[r].valid == 1) {
      newidx[r] = nr;
      first[r] = ni;
      ni += count[r];
      d->rows[r].first_image = first[r];
      d->rows[r].n_images = 0;
      d->rows[nr++] = d->rows[r];
    } else {
      newidx[r] = -1;
      free_row(&d->rows[r]);
    }
  }
  for (int i = 0; i < L.n_img; i++)
    if (newidx[L.img_row[i]] < 0) d->skips.images_unmatched++;
  d->n_rows = nr;
  d->n_images = ni;
  d->pixels = malloc((size_t)(ni ? ni : 1) * L.per * sizeof(float));
  d->image_row = malloc((size_t)(ni ? ni : 1) * sizeof(int));
  if (!d->pixels || !d->image_row) {
    free(count);
    free(newidx);
    free(first);
    unimed_set_err(err, errlen, "out of memory for the image cache");
    goto done;
  }
  for (int i = 0; i < L.n_img; i++) {
    int r = newidx[L.img_row[i]];
    if (r < 0) continue;
    ut_row *row = &d->rows[r];
    int k = row->first_image + row->n_images++;
    memcpy(d->pixels + (size_t)k * L.per, L.pix + (size_t)i * L.per, L.per * sizeof(float));
    d->image_row[k] = r;
  }
  free(count);
  free(newidx);
  free(first);
  if (d->n_rows == 0) {
    unimed_set_err(err, errlen,
            "nothing to train on: no CSV row matched an image with a usable label or report "
            "(see the skipped counts above)");
    ut_skips_report(&d->skips, o->log, o->log_ctx);
    goto done;
  }
  rc = 0;
done:
  free(L.order);
  free(L.pix);
  free(L.img_row);
  for (int i = 0; i < L.n_sr; i++) free(L.sr_text[i]);
  free(L.sr_text);
  free(L.sr_study);
  if (rc != 0) ut_dataset_free(d);
  return rc;
}

void ut_dataset_free(ut_dataset *d) {
  if (!d) return;
  for (int r = 0; r < d->n_rows; r++) free_row(&d->rows[r]);
  free(d->rows);
  free(d->pixels);
  free(d->image_row);
  ut_skips s = d->skips;
  memset(d, 0, sizeof *d);
  d->skips = s; /* still reported after a failed load */
}

void ut_skips_report(const ut_skips *s, ut_log_fn log, void *ctx) {
  if (!log) return;
  static const struct {
    size_t off;
    const char *what;
  } items[] = {
      {offsetof(ut_skips, archives_unreadable), "archives skipped (unreadable, not a ZIP or folder)"},
      {offsetof(ut_skips, entries_unreadable), "ZIP entries skipped (corrupt or unreadable)"},
      {offsetof(ut_skips, files_not_dicom), "files skipped (not DICOM or a corrupt header)"},
      {offsetof(ut_skips, frames_undecodable), "frames skipped (pixel data failed to decode)"},
      {offsetof(ut_skips, series_not_image), "series without pixel data (SR, ...: no images)"},
      {offsetof(ut_skips, sr_own), "SRs written by " UT_OWN_MANUFACTURER
                                   " (AI findings: report text only with --include-own-sr)"},
      {offsetof(ut_skips, sr_no_text), "SRs without report text (no TEXT item or TID 1500 finding)"},
      {offsetof(ut_skips, series_wsi), "whole-slide series skipped"},
      {offsetof(ut_skips, images_unmatched), "images skipped (key not in the CSV or row dropped)"},
      {offsetof(ut_skips, rows_no_images), "CSV rows skipped (no matching images)"},
      {offsetof(ut_skips, rows_bad_label), "CSV rows skipped (label not in the label sets)"},
      {offsetof(ut_skips, rows_no_caption), "CSV rows skipped (no label / no report)"},
      {offsetof(ut_skips, csv_bad_lines), "CSV lines skipped (malformed or duplicate key)"},
      {offsetof(ut_skips, orthanc_studies_unreadable), "Orthanc studies skipped (could not be fetched)"},
  };
  for (size_t i = 0; i < sizeof items / sizeof items[0]; i++) {
    int v = *(const int *)((const char *)s + items[i].off);
    if (v) {
      char line[256];
      snprintf(line, sizeof line, "%d %s", v, items[i].what);
      log(ctx, line);
    }
  }
}

static uint64_t mix_bytes(uint64_t h, const void *p, size_t n) {
  const unsigned char *b = p;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy(&w, b + i, 8);
    h = splitmix(h ^ w);
  }
  uint64_t tail = 0;
  memcpy(&tail, b + i, n - i);
  return splitmix(h ^ tail ^ ((uint64_t)n << 56));
}

static uint64_t mix_str(uint64_t h, const char *s) {
  return s ? mix_bytes(h, s, strlen(s) + 1) : splitmix(h ^ 0x6e756c6cull);
}

uint64_t ut_dataset_fingerprint(const ut_dataset *d) {
  uint64_t h = splitmix(0x756d6474ull ^ (uint64_t)d->n_rows);
  h = splitmix(h ^ (uint64_t)d->n_images ^ ((uint64_t)d->size << 32));
  for (int r = 0; r < d->n_rows; r++) {
    const ut_row *row = &d->rows[r];
    h = mix_str(h, row->key);
    h = mix_str(h, row->label_text);
    h = mix_str(h, row->report);
    h = mix_str(h, row->sr_text);
    int32_t v[4 + UT_MAX_LABELS] = {row->set, row->n_labels, row->first_image, row->n_images};
    for (int i = 0; i < row->n_labels && i < UT_MAX_LABELS; i++) v[4 + i] = row->labels[i];
    h = mix_bytes(h, v, sizeof v);
  }
  h = mix_bytes(h, d->pixels, (size_t)d->n_images * 3 * d->size * d->size * sizeof(float));
  return h;
}

/* ---- captions ---- */

static const char *const generic_templates[] = {"{}", "an image showing {}.",
                                                "a medical image with {}."};

static char *label_caption(const ut_dataset *d, const ut_row *r, uint64_t h) {
  if (r->set < 0) { /* no label sets: the label text in a generic template */
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", r->label_text);
    for (char *p = tmp; *p; p++)
      if (*p == '|') *p = ',';
    return unimed_label_template_apply(generic_templates[h % 3], tmp);
  }
  const unimed_label_set *ls = d->sets[r->set];
  if (r->n_labels == 1) {
    const unimed_label *l = &ls->labels[r->labels[0]];
    return strdup(l->prompts[ut_hash3(h, 1, 0) % (uint64_t)l->n_prompts]);
  }
  if (ls->n_templates == 0) { /* own prompts only: one prompt of each label */
    char *out = strdup("");
    for (int i = 0; i < r->n_labels && out; i++) {
      const unimed_label *l = &ls->labels[r->labels[i]];
      const char *p = l->prompts[ut_hash3(h, 2, (uint64_t)i) % (uint64_t)l->n_prompts];
      size_t a = strlen(out), b = strlen(p);
      char *n = realloc(out, a + b + 2);
      if (!n) {
        free(out);
        return NULL;
      }
      out = n;
      if (a) out[a++] = ' ';
      memcpy(out + a, p, b + 1);
    }
    return out;
  }
  char names[2048] = "";
  for (int i = 0; i < r->n_labels; i++) {
    const unimed_label *l = &ls->labels[r->labels[i]];
    uint64_t k = ut_hash3(h, 3, (uint64_t)i) % (uint64_t)(1 + l->n_synonyms);
    const char *nm = k == 0 ? l->name : l->synonyms[k - 1];
    const char *sep = i == 0 ? "" : i == r->n_labels - 1 ? " and " : ", ";
    strncat(names, sep, sizeof names - strlen(names) - 1);
    strncat(names, nm, sizeof names - strlen(names) - 1);
  }
  const char *tmpl = ls->templates[ut_hash3(h, 4, 0) % (uint64_t)ls->n_templates];
  return unimed_label_template_apply(tmpl, names);
}

/* Whether draw h of row r's caption is its report text (else its labels). */
static int caption_is_report(const ut_row *r, uint64_t h) {
  int has_label = r->n_labels > 0 || (r->set < 0 && r->label_text);
  int has_report = r->report || r->sr_text;
  return has_report && (!has_label || (h & 1));
}

uint64_t ut_caption_group(const ut_row *r, uint64_t h) {
  if (caption_is_report(r, h)) return 0;
  /* labels are stored in CSV order: sort a copy so that "a|b" and "b|a" agree */
  int l[UT_MAX_LABELS], n = r->n_labels;
  memcpy(l, r->labels, (size_t)n * sizeof(int));
  for (int i = 1; i < n; i++)
    for (int j = i; j > 0 && l[j - 1] > l[j]; j--) {
      int t = l[j];
      l[j] = l[j - 1];
      l[j - 1] = t;
    }
  uint64_t g = ut_hash3(0x9a0u, (uint64_t)(r->set + 1), (uint64_t)n);
  for (int i = 0; i < n; i++) g = ut_hash3(g, (uint64_t)l[i], (uint64_t)i);
  if (n == 0 && r->label_text) /* free-text labels without a label set */
    for (const unsigned char *c = (const unsigned char *)r->label_text; *c; c++)
      g = ut_hash3(g, *c, 1);
  return g ? g : 1;
}

char *ut_caption(const ut_dataset *d, const ut_row *r, uint64_t h) {
  if (caption_is_report(r, h)) {
    const char *t = r->report && r->sr_text ? ((h >> 1) & 1 ? r->sr_text : r->report)
                                            : r->report ? r->report : r->sr_text;
    return strdup(t);
  }
  return label_caption(d, r, h >> 2);
}

void ut_caption_corpus(const ut_dataset *d, void (*fn)(void *ctx, const char *text), void *ctx) {
  for (int s = 0; s < d->n_sets; s++) {
    const unimed_label_set *ls = d->sets[s];
    for (int i = 0; i < ls->n_templates; i++) fn(ctx, ls->templates[i]);
    for (int i = 0; i < ls->n_labels; i++) {
      const unimed_label *l = &ls->labels[i];
      fn(ctx, l->name);
      for (int k = 0; k < l->n_synonyms; k++) fn(ctx, l->synonyms[k]);
      for (int k = 0; k < l->n_prompts; k++) fn(ctx, l->prompts[k]);
      for (int k = 0; k < l->n_negatives; k++) fn(ctx, l->negatives[k]);
    }
  }
  for (int i = 0; i < 3; i++) fn(ctx, generic_templates[i]);
  for (int r = 0; r < d->n_rows; r++) {
    if (d->rows[r].report) fn(ctx, d->rows[r].report);
    if (d->rows[r].sr_text) fn(ctx, d->rows[r].sr_text);
    if (d->rows[r].label_text) fn(ctx, d->rows[r].label_text);
  }
}
