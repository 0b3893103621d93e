/* unimed analyze: a study's findings against label sets, as JSON, and the
 * TID 1500 DICOM SR that carries them. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "analysis.h"
#include "cli_util.h"
#include "commands.h"

#ifndef UNIMED_DEFAULT_LABELSET_DIR
#define UNIMED_DEFAULT_LABELSET_DIR "/usr/share/unimed/labelsets"
#endif

static void help_analyze(FILE *out) {
  fprintf(out,
          "usage: unimed analyze --model DIR [--label-set FILE... | --label-set-dir DIR]\n"
          "                      [--sr OUT.dcm] [--xml OUT.xml]\n"
          "                      [--out-dir DIR] [--max-slices K] [--aggregate mean|max]\n"
          "                      [--cache DIR | --no-cache] [--threads N]\n"
          "                      [--precision fp32|bf16|int8] PATH...\n\n"
          "PATH: DICOM files or folders of one study. Every image series is analysed:\n"
          "K frames (default 8) along the slice normal, encoded, and scored against each\n"
          "label set that applies to it (modality, body part, SOP class). Without\n"
          "--label-set, every *.json in --label-set-dir is used (default: the shipped\n"
          "label sets, %s).\n"
          "--aggregate mean (default) scores the series' mean embedding; max takes each\n"
          "label's highest probability over the frames (a finding may sit in one slice).\n"
          "When the model directory has a model card (model-card.json), each applied label\n"
          "set that the card does not list gets a warning: on stderr, in the JSON\n"
          "(\"label_set_warnings\") and in the SR (docs/MODEL.md).\n"
          "--sr writes the findings as a DICOM TID 1500 Structured Report, --xml the same\n"
          "report as DCMTK SR XML. Several studies need --out-dir DIR: one SR per study,\n"
          "DIR/<StudyInstanceUID>.dcm. Label-set text embeddings are cached in\n"
          "$XDG_CACHE_HOME/unimed (or ~/.cache/unimed) unless --cache or --no-cache.\n"
          "--precision bf16 packs the model's linear weights as BF16 (half the memory,\n"
          "faster on CPUs with avx512_bf16; elsewhere it runs fp32, the default);\n"
          "--precision int8 runs the image encoder's linear layers in int8 (CPUs with VNNI;\n"
          "elsewhere it runs bf16 or fp32).\n"
          "Prints the findings JSON of each study on one line.\n",
          UNIMED_DEFAULT_LABELSET_DIR);
}

static void default_cache(char *buf, size_t len) {
  const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
  if (xdg && *xdg)
    snprintf(buf, len, "%s/unimed", xdg);
  else if (home && *home)
    snprintf(buf, len, "%s/.cache/unimed", home);
  else
    snprintf(buf, len, "/tmp/unimed-cache");
}

static int write_file(const char *path, const void *data, size_t len) {
  FILE *fp = fopen(path, "wb");
  if (!fp) {
    fprintf(stderr, "unimed: %s: cannot create: %s\n", path, strerror(errno));
    return -1;
  }
  int ok = fwrite(data, 1, len, fp) == len;
  if (fclose(fp) != 0) ok = 0;
  if (!ok) fprintf(stderr, "unimed: %s: write failed\n", path);
  return ok ? 0 : -1;
}

/* Analyses one study's files and prints its findings; writes its SR. */
static int analyze_study(unimed_engine *e, const char *const *paths, int n, const char *sr_path,
                         const char *xml_path) {
  unimed_study_result r;
  int want_sr = sr_path || xml_path;
  int rc = unimed_engine_analyze_files(e, paths, n, want_sr, xml_path, &r) == 0 ? 0 : 1;
  /* Label sets the model card does not list: one line each on stderr (the
   * JSON and the SR carry them too). */
  const cJSON *w;
  cJSON_ArrayForEach(w, cJSON_GetObjectItemCaseSensitive(r.findings, "label_set_warnings")) {
    const char *text = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(w, "warning"));
    if (text) fprintf(stderr, "unimed: warning: %s\n", text);
  }
  if (r.findings) {
    if (want_sr && r.sr && sr_path && write_file(sr_path, r.sr, r.sr_len) != 0) rc = 1;
    if (want_sr && r.sr) {
      cJSON *sr = cJSON_CreateObject();
      cJSON_AddStringToObject(sr, "sop_instance_uid", r.sr_sop_instance_uid);
      if (sr_path) cJSON_AddStringToObject(sr, "file", sr_path);
      if (xml_path) cJSON_AddStringToObject(sr, "xml", xml_path);
      cJSON_AddItemToObject(r.findings, "sr", sr);
    }
    cli_print_json(r.findings);
    r.findings = NULL;
  }
  if (rc) fprintf(stderr, "unimed: %s\n", r.error[0] ? r.error : "analysis failed");
  unimed_study_result_free(&r);
  return rc;
}

int cmd_analyze(int argc, char **argv) {
  const char *model = NULL, *sr = NULL, *xml = NULL, *out_dir = NULL, *cache = NULL;
  const char *set_dir = UNIMED_DEFAULT_LABELSET_DIR;
  const char **sets = calloc((size_t)argc, sizeof(char *));
  const char **paths = calloc((size_t)argc, sizeof(char *));
  int n_sets = 0, n_paths = 0, max_slices = 8, threads = 0, aggregate_max = 0, no_cache = 0;
  int rc = 0;
  unimed_precision precision = UNIMED_PRECISION_FP32;
  for (int i = 1; i < argc && rc == 0; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (cli_is_help(a)) {
      help_analyze(stdout);
      free(sets);
      free(paths);
      return 0;
    }
    if (strcmp(a, "--model") == 0 && v) model = v, i++;
    else if (strcmp(a, "--label-set") == 0 && v) sets[n_sets++] = v, i++;
    else if (strcmp(a, "--label-set-dir") == 0 && v) set_dir = v, i++;
    else if (strcmp(a, "--sr") == 0 && v) sr = v, i++;
    else if (strcmp(a, "--xml") == 0 && v) xml = v, i++;
    else if (strcmp(a, "--out-dir") == 0 && v) out_dir = v, i++;
    else if (strcmp(a, "--cache") == 0 && v) cache = v, i++;
    else if (strcmp(a, "--no-cache") == 0) no_cache = 1;
    else if (strcmp(a, "--max-slices") == 0 && v) {
      if ((max_slices = cli_parse_positive(a, v)) < 0) rc = 2;
      i++;
    } else if (strcmp(a, "--threads") == 0 && v) {
      if ((threads = cli_parse_positive(a, v)) < 0) rc = 2;
      i++;
    } else if (strcmp(a, "--precision") == 0 && v) {
      if (unimed_precision_parse(v, &precision) != 0) {
        fprintf(stderr, "unimed: --precision takes fp32, bf16 or int8, got '%s'\n", v);
        rc = 2;
      }
      i++;
    } else if (strcmp(a, "--aggregate") == 0 && v) {
      if (strcmp(v, "mean") == 0) aggregate_max = 0;
      else if (strcmp(v, "max") == 0) aggregate_max = 1;
      else {
        fprintf(stderr, "unimed: --aggregate takes mean or max, got '%s'\n", v);
        rc = 2;
      }
      i++;
    } else if (a[0] == '-') {
      fprintf(stderr, "unimed: unknown option or missing value: '%s'\n\n", a);
      help_analyze(stderr);
      rc = 2;
    } else {
      paths[n_paths++] = a;
    }
  }
  if (rc == 0 && (!model || n_paths == 0)) {
    fprintf(stderr, "unimed: analyze needs --model DIR and at least one PATH\n\n");
    help_analyze(stderr);
    rc = 2;
  }
  if (rc == 0 && out_dir && (sr || xml)) {
    fprintf(stderr, "unimed: --out-dir names the SR files itself; drop --sr/--xml\n");
    rc = 2;
  }
  char cache_buf[1024];
  if (!cache && !no_cache) default_cache(cache_buf, sizeof cache_buf), cache = cache_buf;
  unimed_engine *e = NULL;
  if (rc == 0) {
    unimed_engine_options o = {0};
    o.model_dir = model;
    o.label_sets = sets;
    o.n_label_sets = n_sets;
    o.label_set_dir = set_dir;
    o.cache_dir = no_cache ? NULL : cache;
    o.max_slices = max_slices;
    o.aggregate_max = aggregate_max;
    o.threads = threads;
    o.precision = precision;
    char err[512];
    e = unimed_engine_create(&o, err, sizeof err);
    if (!e) {
      fprintf(stderr, "unimed: %s\n", err);
      rc = 1;
    }
  }
  if (rc == 0 && !out_dir) {
    rc = analyze_study(e, paths, n_paths, sr, xml);
  } else if (rc == 0) {
    /* Several studies: split the files by study, one SR each. */
    if (mkdir(out_dir, 0777) != 0 && errno != EEXIST) {
      fprintf(stderr, "unimed: %s: cannot create: %s\n", out_dir, strerror(errno));
      rc = 1;
    }
    udcm_collection col;
    char err[512];
    if (rc == 0 && udcm_collect(paths, n_paths, NULL, NULL, NULL, &col, err, sizeof err) != 0) {
      fprintf(stderr, "unimed: %s\n", err);
      rc = 1;
    } else if (rc == 0) {
      if (col.n_skipped)
        fprintf(stderr, "unimed: %d of %d files are not readable DICOM and were skipped\n",
                col.n_skipped, col.n_files);
      int any = 0;
      for (int i = 0; i < col.n_series; i++) {
        const char *study = col.series[i].study_uid;
        int seen = 0;
        for (int k = 0; k < i && !seen; k++) seen = strcmp(col.series[k].study_uid, study) == 0;
        if (seen) continue;
        int n = 0;
        for (int k = i; k < col.n_series; k++)
          if (strcmp(col.series[k].study_uid, study) == 0) n += col.series[k].n_instances;
        const char **files = calloc((size_t)n, sizeof(char *));
        n = 0;
        for (int k = i; k < col.n_series; k++)
          if (strcmp(col.series[k].study_uid, study) == 0)
            for (int f = 0; f < col.series[k].n_instances; f++)
              files[n++] = col.series[k].instances[f].path;
        char path[1200];
        snprintf(path, sizeof path, "%s/%s.dcm", out_dir, study);
        if (analyze_study(e, files, n, path, NULL) != 0) rc = 1;
        any = 1;
        free(files);
      }
      if (!any) {
        fprintf(stderr, "unimed: no DICOM studies found\n");
        rc = 1;
      }
      udcm_collection_free(&col);
    }
  }
  unimed_engine_free(e);
  free(sets);
  free(paths);
  return rc;
}

/* ---- read-sr ---- */

static void help_read_sr(FILE *out) {
  fprintf(out, "usage: unimed read-sr FILE...\n\n"
               "Reads TID 1500 Structured Reports (ours or another producer's) and prints\n"
               "each one's measurement groups and findings as one JSON line.\n");
}

int cmd_read_sr(int argc, char **argv) {
  if (argc < 2) {
    help_read_sr(stderr);
    return 2;
  }
  int rc = 0;
  for (int i = 1; i < argc; i++) {
    if (cli_is_help(argv[i])) {
      help_read_sr(stdout);
      return 0;
    }
    char err[512];
    udcm_sr_result *r = udcm_sr_read_file(argv[i], err, sizeof err);
    if (!r) {
      fprintf(stderr, "unimed: %s\n", err);
      rc = 1;
      continue;
    }
    char *json = udcm_sr_result_json(r);
    cJSON *j = json ? cJSON_Parse(json) : NULL;
    if (j) {
      cJSON_AddStringToObject(j, "file", argv[i]);
      cli_print_json(j);
    } else {
      fprintf(stderr, "unimed: %s: cannot render the report as JSON\n", argv[i]);
      rc = 1;
    }
    free(json);
    udcm_sr_result_free(r);
  }
  return rc;
}
