/* The analysis of one study (claim, fetch, engine, SR, results, record)
 * and the worker threads that run it, one study at a time each. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "journal.h"
#include "labels.h"
#include "members.h"
#include "sr_versions.h"
#include "worker.h"

typedef struct {
  int state;           /* ST_DONE, ST_FAILED, ST_SKIPPED, ST_NONE (deleted) */
  int unchanged;       /* already up to date: index untouched */
  int analysed;        /* the engine ran (for the mean analysis time) */
  int elsewhere;       /* another server holds the claim */
  int adopted;         /* another server's final record (done or failed) taken as it is */
  int transient;       /* failed because Orthanc could not store (e.g. disk full): retried */
  char claim_etag[64]; /* elsewhere: the other server's claim (its ETag) and */
  double claim_seen;   /* when this server first saw it (now_seconds()) */
  char error[600];
  char fingerprint[17];
  char *sr_id;
  char sr_uid[65];
  cJSON *findings;
  cJSON *emb;
  cJSON *study_json;
  double seconds;
  char time[32];
} outcome_t;

static int is_non_image_modality(const char *m) {
  static const char *const skip[] = {"SR", "KO", "PR", "DOC", "REG", "RTSTRUCT", "RTPLAN",
                                     "RTRECORD", "FID", "PLAN", "AU", "ECG", "HD", NULL};
  if (!m) return 0;
  for (int i = 0; skip[i]; i++)
    if (strcasecmp(m, skip[i]) == 0) return 1;
  return 0;
}

static int modality_wanted(const char *m) {
  if (g.cfg.n_modalities == 0) return 1;
  for (int i = 0; i < g.cfg.n_modalities; i++)
    if (m && strcasecmp(m, g.cfg.modalities[i]) == 0) return 1;
  return 0;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Writes the study record (metadata UniMedState) for state st. */
static int put_state(const char *id, int st, const outcome_t *o, const char *etag) {
  study_record r;
  memset(&r, 0, sizeof r);
  r.state = st;
  snprintf(r.owner, sizeof r.owner, "%s", g.cfg.server_id);
  r.since = (double)time(NULL);
  /* A result's time is the analysis's (o->time), the one the index answers
   * as analysed_at: after a restart the index reads it from this record. */
  if (o && o->time[0] && (st == ST_DONE || st == ST_FAILED))
    snprintf(r.time, sizeof r.time, "%s", o->time);
  else
    now_iso(r.time);
  snprintf(r.model, sizeof r.model, "%s", g.model_hash);
  snprintf(r.label_sets, sizeof r.label_sets, "%s", g.labelsets_key);
  if (o) {
    snprintf(r.fingerprint, sizeof r.fingerprint, "%s", o->fingerprint);
    if (o->sr_id) snprintf(r.sr, sizeof r.sr, "%s", o->sr_id);
    snprintf(r.sr_uid, sizeof r.sr_uid, "%s", o->sr_uid);
    snprintf(r.error, sizeof r.error, "%s", o->error);
    r.seconds = o->seconds;
    r.retry = o->transient;
  }
  cJSON *j = study_record_to_json(&r);
  char *txt = cJSON_PrintUnformatted(j);
  cJSON_Delete(j);
  int status = txt ? orth_meta_put(id, g.cfg.meta_state, txt, etag) : 0;
  free(txt);
  return status;
}

/* Stores the SR unless an instance with its SOP Instance UID is already in
 * Orthanc (re-analysis with the same model and label sets: same UID). */
static int store_sr(const unimed_study_result *r, outcome_t *o) {
  snprintf(o->sr_uid, sizeof o->sr_uid, "%s", r->sr_sop_instance_uid);
  buf_t b;
  if (r->sr_sop_instance_uid[0] &&
      orth_call(OrthancPluginHttpMethod_Post, "/tools/lookup", NULL, r->sr_sop_instance_uid,
                strlen(r->sr_sop_instance_uid), &b, NULL) == 200 && b.data) {
    cJSON *l = cJSON_ParseWithLength(b.data, b.len);
    buf_free(&b);
    const cJSON *it;
    cJSON_ArrayForEach(it, l) {
      const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, "Type"));
      const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, "ID"));
      if (type && id && strcmp(type, "Instance") == 0) {
        o->sr_id = xstrdup(id);
        break;
      }
    }
    cJSON_Delete(l);
    if (o->sr_id) return 0;
  } else {
    buf_free(&b);
  }
  int st = orth_call(OrthancPluginHttpMethod_Post, "/instances", NULL, r->sr, r->sr_len, &b, NULL);
  if (st != 200 || !b.data) {
    buf_free(&b);
    if (st == 0 || st >= 500) {
      o->transient = 1;
      snprintf(o->error, sizeof o->error,
               "Orthanc could not store the SR (HTTP %d: storage full or unavailable?); "
               "the analysis is retried", st);
    } else {
      snprintf(o->error, sizeof o->error, "Orthanc refused the SR (HTTP %d)", st);
    }
    return -1;
  }
  cJSON *a = cJSON_ParseWithLength(b.data, b.len);
  buf_free(&b);
  /* Orthanc answers 200 also when it did not store the file: a Lua or plugin
   * filter refused it ("FilteredOut"). Only Success/AlreadyStored hold an SR. */
  const char *status = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(a, "Status"));
  const char *sr_id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(a, "ID"));
  if (!status || !sr_id || (strcmp(status, "Success") != 0 && strcmp(status, "AlreadyStored") != 0)) {
    snprintf(o->error, sizeof o->error,
             "Orthanc did not store the SR (Status \"%s\"%s)", status ? status : "none",
             status && strcmp(status, "FilteredOut") == 0
                 ? ": a ReceivedInstanceFilter (Lua or plugin) refused it"
                 : "");
    cJSON_Delete(a);
    return -1;
  }
  o->sr_id = xstrdup(sr_id);
  cJSON_Delete(a);
  return 0;
}

/* Was the study deleted while we analysed it? Then our SR (an upload into a
 * deleted study re-creates the patient and the study, with the patient's
 * name) must go too. The study is gone when Orthanc no longer has it, or
 * when all it holds is our SR. Sets o->state to ST_NONE and returns 1 when
 * the study is gone. */
static int deleted_meanwhile(const char *id, outcome_t *o) {
  char uri[160];
  int st;
  snprintf(uri, sizeof uri, "/studies/%s/instances", id);
  cJSON *inst = orth_get_json(uri, &st);
  int gone = st == 404;
  if (inst) {
    int others = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, inst) {
      const char *iid = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, "ID"));
      if (iid && !(o->sr_id && strcmp(iid, o->sr_id) == 0)) others++;
    }
    gone = others == 0;
    cJSON_Delete(inst);
  }
  if (!gone) return 0;
  if (o->sr_id) {
    snprintf(uri, sizeof uri, "/instances/%s", o->sr_id);
    int ds = orth_call(OrthancPluginHttpMethod_Delete, uri, NULL, NULL, 0, NULL, NULL);
    if (ds != 200 && ds != 404)
      log_error("UniMed: study %s was deleted during its analysis; removing its SR %s answered HTTP %d",
                id, o->sr_id, ds);
    free(o->sr_id);
    o->sr_id = NULL;
  }
  log_warning("UniMed: study %s was deleted during its analysis: its results are dropped", id);
  o->state = ST_NONE;
  return 1;
}

/* Another server's claim, read with its ETag: honoured until this server has
 * seen the same revision of it, unchanged, for ClaimLease seconds of its own
 * monotonic clock. The owner's clock (the record's "since") plays no part,
 * so the servers' clocks need not agree. seen_etag/seen_at: what the
 * previous look at the study saw. Fills o->claim_etag/claim_seen. Returns 1
 * when the claim is still to be honoured. */
static int claim_honoured(const char *etag, const char *seen_etag, double seen_at, outcome_t *o) {
  double now = now_seconds();
  if (etag[0] && seen_etag && strcmp(etag, seen_etag) == 0 && seen_at > 0) {
    snprintf(o->claim_etag, sizeof o->claim_etag, "%s", etag);
    o->claim_seen = seen_at;
    return now - seen_at < (double)g.cfg.claim_lease;
  }
  snprintf(o->claim_etag, sizeof o->claim_etag, "%s", etag);
  o->claim_seen = now;
  return 1;
}

static void analyse(unimed_engine *e, const char *id, int force, const char *known_fp,
                    const char *seen_etag, double seen_at, outcome_t *o) {
  char uri[256];
  int st;
  o->study_json = NULL;
  snprintf(uri, sizeof uri, "/studies/%s", id);
  o->study_json = orth_get_json(uri, &st);
  if (!o->study_json) {
    if (st == 404) {
      o->state = ST_NONE;
      snprintf(o->error, sizeof o->error, "the study is not in Orthanc");
    } else {
      o->state = ST_FAILED;
      snprintf(o->error, sizeof o->error, "GET %s answered HTTP %d", uri, st);
    }
    return;
  }
  snprintf(uri, sizeof uri, "/studies/%s/series", id);
  cJSON *series = orth_get_json(uri, &st);
  if (!series) {
    o->state = st == 404 ? ST_NONE : ST_FAILED;
    snprintf(o->error, sizeof o->error, "GET %s answered HTTP %d", uri, st);
    return;
  }
  /* The instances of the image series to analyse. */
  int cap = 0, n = 0;
  const char **ids = NULL;
  const cJSON *se;
  cJSON_ArrayForEach(se, series) {
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(se, "MainDicomTags");
    const char *mod = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(mt, "Modality"));
    if (is_non_image_modality(mod) || !modality_wanted(mod)) continue;
    const cJSON *inst;
    cJSON_ArrayForEach(inst, cJSON_GetObjectItemCaseSensitive(se, "Instances")) {
      if (!cJSON_IsString(inst)) continue;
      if (n == cap) {
        cap = cap ? cap * 2 : 64;
        const char **ni = realloc(ids, (size_t)cap * sizeof *ni);
        if (!ni) break;
        ids = ni;
      }
      ids[n++] = inst->valuestring;
    }
  }
  if (n == 0) {
    o->state = ST_SKIPPED;
    snprintf(o->error, sizeof o->error,
             g.cfg.n_modalities ? "no image series of the configured Modalities"
                                : "no image series");
    /* Recorded, so that a restart still knows the study is final. */
    put_state(id, ST_SKIPPED, o, NULL);
    free(ids);
    cJSON_Delete(series);
    return;
  }
  qsort(ids, (size_t)n, sizeof *ids, cmp_str);
  uint64_t h = fnv1a64(FNV64_OFFSET, g.model_hash, strlen(g.model_hash));
  h = fnv1a64(h, g.labelsets_key, strlen(g.labelsets_key));
  for (int i = 0; i < n; i++) h = fnv1a64(h, ids[i], strlen(ids[i]) + 1);
  snprintf(o->fingerprint, sizeof o->fingerprint, "%016llx", (unsigned long long)h);

  if (!force && known_fp && strcmp(known_fp, o->fingerprint) == 0) {
    o->state = ST_DONE;
    o->unchanged = 1;
    goto out;
  }

  /* Claim the study: a metadata write with a revision check (several
   * servers sharing one database; needs "CheckRevisions": true). */
  char etag[64] = "";
  buf_t b;
  st = orth_meta_get(id, g.cfg.meta_state, &b, etag);
  study_record cur;
  cJSON *curj = st == 200 && b.data ? cJSON_ParseWithLength(b.data, b.len) : NULL;
  int have = curj && study_record_from_json(curj, &cur) == 0;
  cJSON_Delete(curj);
  if (have) {
    if (!force && cur.state == ST_DONE && cur.fingerprint[0] &&
        strcmp(cur.fingerprint, o->fingerprint) == 0) {
      /* Analysed already (by us before a restart, or by another server). */
      o->state = ST_DONE;
      o->adopted = strcmp(cur.owner, g.cfg.server_id) != 0;
      o->sr_id = cur.sr[0] ? xstrdup(cur.sr) : NULL;
      snprintf(o->sr_uid, sizeof o->sr_uid, "%s", cur.sr_uid);
      o->seconds = cur.seconds;
      snprintf(o->time, sizeof o->time, "%s", cur.time);
      study_fetch_stored_results(id, &o->findings, &o->emb);
      buf_free(&b);
      goto out;
    }
    if (!force && cur.state == ST_FAILED && !cur.retry && cur.fingerprint[0] &&
        strcmp(cur.fingerprint, o->fingerprint) == 0 && strcmp(cur.owner, g.cfg.server_id) != 0) {
      /* Another server analysed it and it failed: the same instances with the
       * same model fail the same way here. */
      o->state = ST_FAILED;
      o->adopted = 1;
      snprintf(o->error, sizeof o->error, "%s", cur.error);
      snprintf(o->time, sizeof o->time, "%s", cur.time);
      study_fetch_stored_results(id, &o->findings, &o->emb);
      cJSON_Delete(o->emb);
      o->emb = NULL;
      buf_free(&b);
      goto out;
    }
    if (cur.state == ST_RUNNING && cur.owner[0] && strcmp(cur.owner, g.cfg.server_id) != 0 &&
        claim_honoured(etag, seen_etag, seen_at, o)) {
      o->state = ST_SKIPPED;
      o->elsewhere = 1;
      snprintf(o->error, sizeof o->error, "being analysed by %s", cur.owner);
      buf_free(&b);
      goto out;
    }
    if (cur.state == ST_RUNNING && strcmp(cur.owner, g.cfg.server_id) != 0)
      log_warning("UniMed: study %s: the claim of %s was not renewed for %d s (ClaimLease): taken over",
                  id, cur.owner, g.cfg.claim_lease);
  }
  buf_free(&b);
  /* If-Match of the revision read, or, when there was no record, a write
   * that only creates it: of several servers claiming at once, one wins and
   * the others get 409. */
  st = put_state(id, ST_RUNNING, o, etag);
  if (st == 409 || st == 412 || st == 428) {
    o->state = ST_SKIPPED;
    o->elsewhere = 1;
    snprintf(o->error, sizeof o->error, "claimed by another server (HTTP %d)", st);
    goto out;
  }
  if (st != 200) {
    o->state = ST_FAILED;
    /* No answer, or a database busy or away: try again later. */
    o->transient = st == 0 || st >= 500;
    snprintf(o->error, sizeof o->error, "cannot write metadata %s (HTTP %d)%s", g.cfg.meta_state, st,
             o->transient ? "; the analysis is retried" : "");
    goto out;
  }

  /* Fetch every instance and analyse. */
  double t0 = now_seconds();
  char read_error[200] = "";
  unimed_blob *blobs = calloc((size_t)n, sizeof *blobs);
  buf_t *bufs = calloc((size_t)n, sizeof *bufs);
  int nb = 0;
  for (int i = 0; i < n && blobs && bufs; i++) {
    snprintf(uri, sizeof uri, "/instances/%s/file", ids[i]);
    st = orth_call(OrthancPluginHttpMethod_Get, uri, NULL, NULL, 0, &bufs[nb], NULL);
    if (st != 200 || !bufs[nb].data) {
      buf_free(&bufs[nb]);
      if (st == 200 && !read_error[0])
        snprintf(read_error, sizeof read_error,
                 "instance %s: Orthanc serves it as an empty file (its storage may have been "
                 "full when it was stored)", ids[i]);
      else if (st != 404 && !read_error[0]) /* 404: deleted meanwhile */
        snprintf(read_error, sizeof read_error, "instance %s: GET its file answered HTTP %d",
                 ids[i], st);
      continue;
    }
    blobs[nb].name = ids[i];
    blobs[nb].data = bufs[nb].data;
    blobs[nb].len = bufs[nb].len;
    nb++;
  }
  /* The report stored now (if any) is the predecessor of the one written. */
  sr_version_t *versions = NULL;
  int n_versions = g.cfg.write_reports ? sr_versions_list(id, UNIMED_SR_MANUFACTURER, &versions) : 0;
  unimed_sr_version version = {NULL, NULL, 1};
  if (n_versions > 0) {
    version.predecessor_series_uid = versions[0].series_uid;
    version.predecessor_sop_instance_uid = versions[0].sop_instance_uid;
    version.instance_number = versions[0].instance_number + 1;
  }
  unimed_study_result r;
  memset(&r, 0, sizeof r);
  int rc = nb ? unimed_engine_analyze_blobs_version(e, blobs, nb, g.cfg.write_reports, &version, &r)
              : -1;
  /* Same content as the current report: it stays, unchanged. */
  if (rc == 0 && n_versions > 0 && strcmp(r.sr_sop_instance_uid, versions[0].sop_instance_uid) == 0)
    version.predecessor_sop_instance_uid = NULL;
  for (int i = 0; i < nb; i++) buf_free(&bufs[i]);
  free(bufs);
  free(blobs);
  o->seconds = now_seconds() - t0;
  o->analysed = 1;
  now_iso(o->time);
  if (rc != 0) {
    o->state = ST_FAILED;
    if (nb)
      snprintf(o->error, sizeof o->error, "%s", r.error[0] ? r.error : "analysis failed");
    else
      snprintf(o->error, sizeof o->error, "no instance could be read from Orthanc%s%s%s",
               read_error[0] ? " (" : "", read_error, read_error[0] ? ")" : "");
    o->findings = r.findings; /* the failed series and their reasons */
    r.findings = NULL;
    unimed_study_result_free(&r);
    /* The stored report no longer describes the study. */
    if (nb && n_versions) sr_versions_remove_superseded(versions, n_versions, NULL);
    free(versions);
    put_state(id, ST_FAILED, o, NULL);
    goto out;
  }
  if (g.cfg.write_reports && r.sr && r.sr_len) {
    if (deleted_meanwhile(id, o)) {
      /* Storing the SR now would bring the study back. */
      unimed_study_result_free(&r);
      free(versions);
      goto out;
    }
    if (store_sr(&r, o) != 0) {
      o->state = ST_FAILED;
      unimed_study_result_free(&r);
      free(versions);
      put_state(id, ST_FAILED, o, NULL);
      goto out;
    }
    /* The new version replaces the others (docs/REPORTS.md, "Versions"). */
    int removed = sr_versions_remove_superseded(versions, n_versions, o->sr_uid);
    if (removed)
      log_info("UniMed: study %s: SR %s (Instance Number %d) replaces %d earlier version(s)", id,
               o->sr_uid, version.instance_number, removed);
  }
  free(versions);
  o->findings = r.findings;
  r.findings = NULL;
  o->emb = embeddings_to_json(&r, g.dim);
  if (!r.complete && r.error[0]) {
    cJSON *w = cJSON_GetObjectItemCaseSensitive(o->findings, "warning");
    if (!w && cJSON_IsObject(o->findings))
      cJSON_AddStringToObject(o->findings, "warning", r.error);
  }
  unimed_study_result_free(&r);
  {
    char *ftxt = cJSON_PrintUnformatted(o->findings);
    int s1 = ftxt ? orth_meta_put(id, g.cfg.meta_findings, ftxt, NULL) : 0;
    free(ftxt);
    char *etxt = cJSON_PrintUnformatted(o->emb);
    snprintf(uri, sizeof uri, "/studies/%s/attachments/%s", id, g.cfg.attach_emb);
    char aetag[64];
    int s2 = orth_call(OrthancPluginHttpMethod_Get, uri, NULL, NULL, 0, NULL, aetag);
    s2 = etxt ? orth_call(OrthancPluginHttpMethod_Put, uri, s2 == 200 && aetag[0] ? aetag : NULL,
                          etxt, strlen(etxt), NULL, NULL)
              : 0;
    free(etxt);
    if (s1 != 200 || s2 != 200) {
      /* Without them the index cannot be rebuilt after a restart: not done. */
      o->state = ST_FAILED;
      o->transient = 1;
      snprintf(o->error, sizeof o->error,
               "Orthanc could not store the findings/embeddings (HTTP %d/%d: storage full or "
               "unavailable?); the analysis is retried", s1, s2);
      put_state(id, ST_FAILED, o, NULL);
      goto out;
    }
  }
  o->state = ST_DONE;
  if (put_state(id, ST_DONE, o, NULL) != 200)
    log_warning("UniMed: study %s: cannot write metadata %s", id, g.cfg.meta_state);
out:
  /* A deletion during the analysis wins over its outcome. */
  if (o->state != ST_NONE && !o->unchanged && !o->elsewhere) deleted_meanwhile(id, o);
  /* Which study its instances belong to, for removals later. */
  if (o->state == ST_DONE || o->state == ST_FAILED) members_note(id, series);
  free(ids);
  cJSON_Delete(series);
}

/* Takes a worker's outcome into the index, through the state machine. */
static void finish_locked(study_t *s, outcome_t *o, int had_failed) {
  if (o->state == ST_NONE || s->deleted) {
    /* Deleted before or during the analysis: nothing of it stays. */
    study_apply_locked(s, EV_FINISH_GONE, 0);
  } else if (o->unchanged) {
    if (o->study_json) study_set_patient_info(s, o->study_json);
    study_apply_locked(s, had_failed ? EV_FINISH_FAILED : EV_FINISH_DONE, 0);
  } else if (o->state == ST_DONE) {
    if (o->study_json) study_set_patient_info(s, o->study_json);
    study_clear_result(s);
    s->sr_id = o->sr_id;
    o->sr_id = NULL;
    snprintf(s->sr_uid, sizeof s->sr_uid, "%s", o->sr_uid);
    snprintf(s->fingerprint, sizeof s->fingerprint, "%s", o->fingerprint);
    snprintf(s->analysed_at, sizeof s->analysed_at, "%s", o->time);
    s->seconds = o->seconds;
    cJSON *failed = o->analysed ? index_failed_series_json(o->findings) : NULL;
    study_set_findings(s, o->findings);
    o->findings = NULL;
    if (o->emb) study_set_embeddings_json(s, o->emb);
    if (o->analysed) index_note_analysis_locked(o->seconds);
    study_apply_locked(s, EV_FINISH_DONE, 0);
    const cJSON *fs;
    cJSON_ArrayForEach(fs, failed)
      log_warning("UniMed: study %s: series %s left out: %s", s->id,
                  cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(fs, "series_instance_uid")),
                  cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(fs, "error")));
    cJSON_Delete(failed);
  } else if (o->state == ST_FAILED) {
    if (o->study_json) study_set_patient_info(s, o->study_json);
    study_clear_result(s);
    s->error = xstrdup(o->error);
    if (o->findings) s->failed_series = index_failed_series_json(o->findings);
    snprintf(s->fingerprint, sizeof s->fingerprint, "%s", o->fingerprint);
    snprintf(s->analysed_at, sizeof s->analysed_at, "%s", o->time[0] ? o->time : "-");
    if (o->analysed) index_note_analysis_locked(o->seconds);
    study_apply_locked(s, EV_FINISH_FAILED, 0);
    s->retry = o->transient;
    log_error("UniMed: study %s: analysis failed: %s", s->id, o->error);
  } else {
    if (o->study_json) study_set_patient_info(s, o->study_json);
    free(s->error);
    s->error = xstrdup(o->error);
    study_apply_locked(s, EV_FINISH_SKIPPED, 0);
  }
  s->elsewhere = o->state == ST_SKIPPED && o->elsewhere;
  free(s->claim_etag);
  s->claim_etag = NULL;
  s->claim_seen = 0;
  if (s->elsewhere) {
    s->claim_etag = xstrdup(o->claim_etag);
    s->claim_seen = o->claim_seen;
  }
  if (s->rerun || s->force) {
    s->rerun = 0;
    study_apply_locked(s, EV_STABLE, 0);
  }
}

void *worker_main(void *arg) {
  unimed_engine *e = arg;
  pthread_mutex_lock(&g.mu);
  for (;;) {
    study_t *s = queue_wait_locked();
    if (!s) break;
    s->rerun = 0;
    s->deleted = 0;
    study_update_listed_locked(s);
    int force = s->force;
    s->run_forced = force;
    s->force = 0;
    char id[64], fp[17], seen_etag[64];
    snprintf(id, sizeof id, "%s", s->id);
    snprintf(seen_etag, sizeof seen_etag, "%s", s->claim_etag ? s->claim_etag : "");
    double seen_at = s->claim_seen;
    /* A final result for this fingerprint (done, or failed) is not redone
     * unless forced. */
    int had_done = s->fingerprint[0] && (s->has_result || s->sr_id);
    int had_failed = !had_done && s->fingerprint[0] && s->error && s->analysed_at[0] && !s->retry;
    snprintf(fp, sizeof fp, "%s", s->fingerprint);
    queue_note_running_locked(1);
    pthread_mutex_unlock(&g.mu);

    int64_t seq = orth_last_change();
    outcome_t o;
    memset(&o, 0, sizeof o);
    analyse(e, id, force, had_done || had_failed ? fp : NULL, seen_etag, seen_at, &o);
    /* Our labels follow a new outcome: a failed or skipped study carries
     * none (a deleted one, ST_NONE, loses its labels with it). */
    if (!o.unchanged && !o.elsewhere && !o.adopted && o.state != ST_NONE)
      labels_update(id, o.state == ST_DONE ? o.findings : NULL);

    pthread_mutex_lock(&g.mu);
    queue_note_running_locked(-1);
    if (seq > s->checked_seq) s->checked_seq = seq;
    s->run_forced = 0;
    finish_locked(s, &o, had_failed);
    pthread_cond_broadcast(&g.cv);
    free(o.sr_id);
    cJSON_Delete(o.findings);
    cJSON_Delete(o.emb);
    cJSON_Delete(o.study_json);
  }
  pthread_mutex_unlock(&g.mu);
  return NULL;
}
