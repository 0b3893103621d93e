/* The work queue, the journal (one global property: the queue and the
 * position in /changes) and the catch-up at start (rebuild of the index from
 * Orthanc's metadata, replay of /changes). */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "journal.h"

/* Seconds between attempts for studies that failed because Orthanc could
 * not store their results (a full disk). */
#define RETRY_SECONDS 15.0

static struct {
  study_t **ring; /* FIFO */
  size_t cap, head, len;
  long running;
  int stop;
  int started;
  int catching_up;
  int index_ready; /* the index has been rebuilt from Orthanc's metadata */
  int dirty;
  int64_t last_change;
  pthread_t journal_thread;
  pthread_t *workers;
  int n_workers;
} q = {.last_change = -1};

/* ======================================================================
 * the queue and the state machine's actions
 * ==================================================================== */

static int queue_push_locked(study_t *s) {
  if (q.len == q.cap) {
    size_t nc = q.cap ? q.cap * 2 : 256;
    study_t **nq = malloc(nc * sizeof *nq);
    if (!nq) return -1;
    for (size_t i = 0; i < q.len; i++) nq[i] = q.ring[(q.head + i) % q.cap];
    free(q.ring);
    q.ring = nq;
    q.cap = nc;
    q.head = 0;
  }
  q.ring[(q.head + q.len) % q.cap] = s;
  q.len++;
  return 0;
}

static int queue_push_front_locked(study_t *s) {
  if (queue_push_locked(s) != 0) return -1; /* grows the ring if needed; s is last */
  q.len--;                                   /* off the end again */
  q.head = (q.head + q.cap - 1) % q.cap;     /* and before the first (a free slot) */
  q.ring[q.head] = s;
  q.len++;
  return 0;
}

const study_transition_t *study_apply_locked(study_t *s, enum study_event ev, int force) {
  const study_transition_t *t = study_transition((enum study_state)s->state, ev);
  if (!t) {
    /* A forced request joins a queued analysis as forced. */
    if (force && s->state == ST_QUEUED) s->force = 1;
    return NULL;
  }
  switch (t->action) {
    case ACT_ENQUEUE:
      /* A re-check (another server's claim, a failure to store) is a
       * metadata read or two, and a dead server's claim waits for it: ahead
       * of the analyses. */
      if ((ev == EV_RECHECK ? queue_push_front_locked(s) : queue_push_locked(s)) != 0) return NULL;
      if (force) s->force = 1;
      pthread_cond_broadcast(&g.cv);
      break;
    case ACT_RERUN:
      /* The run in progress already analyses the study as it is now when it
       * is forced: a forced request joins it. Otherwise one more run follows
       * (at most one, however many events arrive meanwhile). */
      if (!(ev == EV_ANALYZE && s->run_forced)) {
        s->rerun = 1;
        if (force) s->force = 1;
      }
      break;
    case ACT_MARK_DELETED:
      s->deleted = 1;
      break;
    case ACT_FORGET:
      study_clear_result(s);
      study_forget_tags(s);
      s->force = s->rerun = s->deleted = 0;
      break;
    case ACT_RESULT:
    case ACT_NONE:
      break;
  }
  if (t->to == ST_NEW && s->state != ST_NEW) s->new_seen = now_seconds();
  s->state = t->to;
  study_update_listed_locked(s);
  q.dirty = 1;
  return t;
}

int plugin_event(const char *id, enum study_event ev, int force) {
  pthread_mutex_lock(&g.mu);
  study_t *s = study_get(id);
  int r = 0;
  if (s) {
    r = s->state != ST_QUEUED && s->state != ST_RUNNING;
    study_apply_locked(s, ev, force);
  }
  pthread_mutex_unlock(&g.mu);
  return r;
}

void plugin_study_gone(const char *id) {
  pthread_mutex_lock(&g.mu);
  study_t *s = study_find(id);
  if (s) study_apply_locked(s, EV_DELETED, 0);
  pthread_mutex_unlock(&g.mu);
}

study_t *queue_pop_locked(void) {
  while (q.len) {
    study_t *s = q.ring[q.head];
    q.head = (q.head + 1) % q.cap;
    q.len--;
    if (s->state == ST_QUEUED) return s; /* else forgotten since */
  }
  return NULL;
}

study_t *queue_wait_locked(void) {
  for (;;) {
    while (!q.stop && (q.catching_up || q.len == 0)) pthread_cond_wait(&g.cv, &g.mu);
    if (q.stop) return NULL;
    study_t *s = queue_pop_locked();
    if (s && study_apply_locked(s, EV_DEQUEUE, 0)) return s;
  }
}

void queue_note_running_locked(int delta) { q.running += delta; }

void queue_status(queue_status_t *st) {
  pthread_mutex_lock(&g.mu);
  st->running = q.running;
  st->last_change = q.last_change;
  st->catching_up = q.catching_up || !q.started;
  pthread_mutex_unlock(&g.mu);
}

void journal_mark_dirty_locked(void) { q.dirty = 1; }

int index_wait_ready(double max_seconds) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += (time_t)max_seconds;
  pthread_mutex_lock(&g.mu);
  while (!q.index_ready) {
    if (pthread_cond_timedwait(&g.cv, &g.mu, &until) != 0) break;
  }
  int ready = q.index_ready;
  pthread_mutex_unlock(&g.mu);
  return ready;
}

void queue_free(void) {
  free(q.ring);
  q.ring = NULL;
  q.cap = q.len = q.head = 0;
}

/* ======================================================================
 * the journal
 * ==================================================================== */

static void add_pending(study_t *s, void *arg) {
  cJSON *p = arg;
  if (s->state != ST_NEW && s->state != ST_QUEUED && s->state != ST_RUNNING) return;
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "id", s->id);
  cJSON_AddStringToObject(o, "state", s->state == ST_NEW ? "new" : "queued");
  if (s->force) cJSON_AddBoolToObject(o, "force", 1);
  cJSON_AddItemToArray(p, o);
}

static void persist(void) {
  pthread_mutex_lock(&g.mu);
  if (!q.dirty) {
    pthread_mutex_unlock(&g.mu);
    return;
  }
  cJSON *j = cJSON_CreateObject();
  cJSON_AddNumberToObject(j, "version", 1);
  cJSON_AddNumberToObject(j, "last_change", (double)q.last_change);
  cJSON *p = cJSON_AddArrayToObject(j, "pending");
  study_for_each_locked(add_pending, p);
  q.dirty = 0;
  pthread_mutex_unlock(&g.mu);
  char *txt = cJSON_PrintUnformatted(j);
  cJSON_Delete(j);
  if (txt) {
    if (OrthancPluginSetGlobalProperty(g.ctx, g.cfg.journal_property, txt) != OrthancPluginErrorCode_Success) {
      log_warning("UniMed: cannot store the journal in global property %d", g.cfg.journal_property);
      pthread_mutex_lock(&g.mu);
      q.dirty = 1;
      pthread_mutex_unlock(&g.mu);
    }
    free(txt);
  }
}

/* Replays /changes from q.last_change. */
static void replay_changes(void) {
  for (;;) {
    char uri[128];
    pthread_mutex_lock(&g.mu);
    int64_t since = q.last_change;
    pthread_mutex_unlock(&g.mu);
    snprintf(uri, sizeof uri, "/changes?since=%lld&limit=1000", (long long)since);
    cJSON *j = orth_get_json(uri, NULL);
    if (!j) return;
    const cJSON *ch = cJSON_GetObjectItemCaseSensitive(j, "Changes");
    const cJSON *c;
    pthread_mutex_lock(&g.mu);
    cJSON_ArrayForEach(c, ch) {
      const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c, "ChangeType"));
      const char *rt = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c, "ResourceType"));
      const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c, "ID"));
      const cJSON *seqj = cJSON_GetObjectItemCaseSensitive(c, "Seq");
      if (!type || !rt || !id || !cJSON_IsNumber(seqj) || strcmp(rt, "Study") != 0) continue;
      int64_t seq = (int64_t)seqj->valuedouble;
      if (strcmp(type, "NewStudy") == 0) {
        study_t *s = study_get(id);
        if (s && seq > s->checked_seq && study_apply_locked(s, EV_NEW_STUDY, 0)) s->new_seq = seq;
      } else if (strcmp(type, "StableStudy") == 0) {
        study_t *s = study_get(id);
        /* Already checked after this change was logged: nothing new. */
        if (s && seq > s->checked_seq) study_apply_locked(s, EV_STABLE, 0);
      } else if (strcmp(type, "UpdatedMetadata") == 0) {
        /* Another server wrote a study record (its claim, or its result):
         * a study left to it is looked at again now rather than at the next
         * periodic re-check, so that its findings reach this index at once. */
        study_t *s = study_find(id);
        if (s && s->state == ST_SKIPPED && s->elsewhere) study_apply_locked(s, EV_RECHECK, 0);
      } else if (strcmp(type, "Deleted") == 0) {
        study_t *s = study_find(id);
        if (s) study_apply_locked(s, EV_DELETED, 0);
      }
    }
    const cJSON *last = cJSON_GetObjectItemCaseSensitive(j, "Last");
    int done = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "Done"));
    if (cJSON_IsNumber(last) && (int64_t)last->valuedouble > q.last_change) {
      q.last_change = (int64_t)last->valuedouble;
      q.dirty = 1;
    }
    pthread_mutex_unlock(&g.mu);
    cJSON_Delete(j);
    if (done || !cJSON_IsNumber(last) || (int64_t)last->valuedouble <= since) return;
  }
}

/* ======================================================================
 * the rebuild at start
 * ==================================================================== */

void study_fetch_stored_results(const char *id, cJSON **findings, cJSON **emb) {
  buf_t b;
  *findings = *emb = NULL;
  if (orth_meta_get(id, g.cfg.meta_findings, &b, NULL) == 200 && b.data)
    *findings = cJSON_ParseWithLength(b.data, b.len);
  buf_free(&b);
  char uri[256];
  snprintf(uri, sizeof uri, "/studies/%s/attachments/%s/data", id, g.cfg.attach_emb);
  if (orth_call(OrthancPluginHttpMethod_Get, uri, NULL, NULL, 0, &b, NULL) == 200 && b.data)
    *emb = cJSON_ParseWithLength(b.data, b.len);
  buf_free(&b);
}

/* Applies a stored record's result fields to the index. */
static void load_record(study_t *s, const study_record *r) {
  study_clear_result(s);
  if (r->sr[0]) s->sr_id = xstrdup(r->sr);
  snprintf(s->sr_uid, sizeof s->sr_uid, "%s", r->sr_uid);
  snprintf(s->fingerprint, sizeof s->fingerprint, "%s", r->fingerprint);
  snprintf(s->analysed_at, sizeof s->analysed_at, "%s", r->time);
  s->seconds = r->seconds;
}

/* At start: the index of findings and embeddings from Orthanc's metadata,
 * and the studies left running by a crash.
 *
 * The studies come in pages of /studies?expand (one page's JSON at a time,
 * not the whole archive's), read by REBUILD_THREADS threads: each study
 * costs three internal REST calls and the parsing of its findings and
 * embeddings, which run in parallel while Orthanc's database serves the
 * other threads. Pages are offsets into a list that can change meanwhile
 * (a deletion shifts the later studies back by one), and a database need
 * not return them in the same order twice: the IDs the pages held are
 * checked against one full list of /studies at the end, and a study no
 * page held is read on its own. */
#define REBUILD_PAGE 250
#define REBUILD_THREADS 4

/* The page size: REBUILD_PAGE, or the environment's UNIMED_REBUILD_PAGE
 * (tests use small pages to read a small archive in many of them). */
static long rebuild_page_size(void) {
  const char *e = getenv("UNIMED_REBUILD_PAGE");
  long n = e ? strtol(e, NULL, 10) : 0;
  return n > 0 && n <= 100000 ? n : REBUILD_PAGE;
}

static int stop_requested(void) {
  pthread_mutex_lock(&g.mu);
  int stop = q.stop;
  pthread_mutex_unlock(&g.mu);
  return stop;
}

typedef struct {
  pthread_mutex_t mu;
  long page_size;
  long next_page;
  int end;          /* a page came back short: no later page to fetch */
  long n_loaded, n_requeued;
  char **seen;      /* the IDs the pages held */
  size_t n_seen, cap_seen;
} rebuild_t;

static void rebuild_study(const cJSON *st, rebuild_t *rb) {
  const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(st, "ID"));
  if (!id) return;
  buf_t b;
  if (orth_meta_get(id, g.cfg.meta_state, &b, NULL) != 200 || !b.data) {
    buf_free(&b);
    return;
  }
  cJSON *state = cJSON_ParseWithLength(b.data, b.len);
  buf_free(&b);
  study_record rec;
  int ok = study_record_from_json(state, &rec) == 0;
  cJSON_Delete(state);
  if (!ok) return;
  cJSON *findings = NULL, *emb = NULL;
  if (rec.state == ST_DONE) study_fetch_stored_results(id, &findings, &emb);
  long loaded = 0, requeued = 0;
  pthread_mutex_lock(&g.mu);
  study_t *s = study_get(id);
  if (s) {
    if (rec.state == ST_DONE && study_transition(s->state, EV_LOAD_DONE)) {
      study_set_patient_info(s, st);
      load_record(s, &rec);
      study_set_findings(s, findings);
      findings = NULL;
      if (emb) study_set_embeddings_json(s, emb);
      study_apply_locked(s, EV_LOAD_DONE, 0);
      loaded = 1;
    } else if (rec.state == ST_FAILED && study_transition(s->state, EV_LOAD_FAILED)) {
      study_set_patient_info(s, st);
      load_record(s, &rec);
      s->error = xstrdup(rec.error);
      study_apply_locked(s, EV_LOAD_FAILED, 0);
      s->retry = rec.retry;
    } else if (rec.state == ST_SKIPPED && study_transition(s->state, EV_LOAD_SKIPPED)) {
      study_set_patient_info(s, st);
      load_record(s, &rec);
      s->error = xstrdup(rec.error);
      study_apply_locked(s, EV_LOAD_SKIPPED, 0);
    } else if (rec.state == ST_RUNNING) {
      /* Ours (same identity): interrupted by the stop, analysed again.
       * Another server's: queued too, so that a worker watches the claim
       * (taken over if it is not renewed for ClaimLease, else its result
       * is loaded when it is done). */
      if (study_apply_locked(s, EV_RECOVER, 0)) requeued = 1;
    }
  }
  pthread_mutex_unlock(&g.mu);
  cJSON_Delete(findings);
  cJSON_Delete(emb);
  pthread_mutex_lock(&rb->mu);
  rb->n_loaded += loaded;
  rb->n_requeued += requeued;
  pthread_mutex_unlock(&rb->mu);
}

static void note_seen(rebuild_t *rb, const cJSON *page) {
  const cJSON *st;
  pthread_mutex_lock(&rb->mu);
  cJSON_ArrayForEach(st, page) {
    const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(st, "ID"));
    if (!id) continue;
    if (rb->n_seen == rb->cap_seen) {
      size_t nc = rb->cap_seen ? 2 * rb->cap_seen : 4096;
      char **ns = realloc(rb->seen, nc * sizeof *ns);
      if (!ns) break; /* such a study is read again on its own */
      rb->seen = ns;
      rb->cap_seen = nc;
    }
    char *copy = xstrdup(id);
    if (copy) rb->seen[rb->n_seen++] = copy;
  }
  pthread_mutex_unlock(&rb->mu);
}

static void *rebuild_pages(void *arg) {
  rebuild_t *rb = arg;
  for (;;) {
    pthread_mutex_lock(&rb->mu);
    long page = rb->end ? -1 : rb->next_page++;
    pthread_mutex_unlock(&rb->mu);
    if (page < 0 || stop_requested()) break;
    char uri[96];
    snprintf(uri, sizeof uri, "/studies?expand&since=%ld&limit=%ld", page * rb->page_size, rb->page_size);
    cJSON *studies = orth_get_json(uri, NULL);
    if (cJSON_GetArraySize(studies) < rb->page_size) {
      pthread_mutex_lock(&rb->mu);
      rb->end = 1;
      pthread_mutex_unlock(&rb->mu);
    }
    const cJSON *st;
    cJSON_ArrayForEach(st, studies) rebuild_study(st, rb);
    note_seen(rb, studies);
    cJSON_Delete(studies);
  }
  return NULL;
}

static void move_strings(study_t *s, void *arg) {
  (void)arg;
  study_move_strings_locked(s);
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void rebuild_index(void) {
  rebuild_t rb;
  memset(&rb, 0, sizeof rb);
  rb.page_size = rebuild_page_size();
  pthread_mutex_init(&rb.mu, NULL);
  pthread_t th[REBUILD_THREADS];
  int n_threads = 0;
  for (int i = 0; i < REBUILD_THREADS; i++)
    if (pthread_create(&th[n_threads], NULL, rebuild_pages, &rb) == 0) n_threads++;
  if (n_threads == 0) rebuild_pages(&rb);
  for (int i = 0; i < n_threads; i++) pthread_join(th[i], NULL);
  /* The studies no page held. */
  long n_alone = 0;
  cJSON *all = stop_requested() ? NULL : orth_get_json("/studies", NULL);
  if (rb.seen) qsort(rb.seen, rb.n_seen, sizeof *rb.seen, cmp_str);
  const cJSON *it;
  cJSON_ArrayForEach(it, all) {
    const char *id = cJSON_GetStringValue(it);
    if (!id || (rb.seen && bsearch(&id, rb.seen, rb.n_seen, sizeof *rb.seen, cmp_str))) continue;
    char uri[128];
    snprintf(uri, sizeof uri, "/studies/%s", id);
    int status = 0;
    cJSON *one = orth_get_json(uri, &status);
    if (status == 200) {
      rebuild_study(one, &rb);
      n_alone++;
    }
    cJSON_Delete(one);
  }
  cJSON_Delete(all);
  for (size_t i = 0; i < rb.n_seen; i++) free(rb.seen[i]);
  free(rb.seen);
  pthread_mutex_destroy(&rb.mu);
  /* The pages' JSON was freed, in many small blocks, among the studies'
   * strings: move those together and give the rest back to the system
   * rather than keep it in malloc's free lists. */
  pthread_mutex_lock(&g.mu);
  study_for_each_locked(move_strings, NULL);
  pthread_mutex_unlock(&g.mu);
  malloc_trim(0);
  log_warning("UniMed: index rebuilt: %ld analysed studies (%ld read on their own), %ld interrupted "
              "analyses queued again; the index holds %.1f MB",
              rb.n_loaded, n_alone, rb.n_requeued, (double)index_bytes() / 1e6);
}

struct recover_arg {
  int64_t start_seq;
  long *n;
};

static void recover_unstable(study_t *s, void *arg) {
  const struct recover_arg *a = arg;
  if (s->state == ST_NEW && s->new_seq >= 0 && s->new_seq <= a->start_seq &&
      study_apply_locked(s, EV_RECOVER, 0))
    (*a->n)++;
}

static void journal_start(void) {
  /* Changes up to here happened before this start. */
  int64_t start_seq = orth_last_change();
  int64_t stored = -1;
  cJSON *pending = NULL;
  char *txt = OrthancPluginGetGlobalProperty(g.ctx, g.cfg.journal_property, "");
  if (txt) {
    cJSON *j = txt[0] ? cJSON_Parse(txt) : NULL;
    OrthancPluginFreeString(g.ctx, txt);
    if (j) {
      const cJSON *l = cJSON_GetObjectItemCaseSensitive(j, "last_change");
      if (cJSON_IsNumber(l)) stored = (int64_t)l->valuedouble;
      pending = cJSON_DetachItemFromObjectCaseSensitive(j, "pending");
      cJSON_Delete(j);
    }
  }
  rebuild_index();
  pthread_mutex_lock(&g.mu);
  q.index_ready = 1;
  pthread_cond_broadcast(&g.cv);
  pthread_mutex_unlock(&g.mu);
  long n_pending = 0;
  pthread_mutex_lock(&g.mu);
  const cJSON *p;
  cJSON_ArrayForEach(p, pending) {
    const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(p, "id"));
    if (!id) continue;
    study_t *s = study_get(id);
    if (!s) continue;
    /* "new": recorded but never analysed; Orthanc forgets unstable studies
     * over a restart, so no StableStudy will come: check it now. */
    study_apply_locked(s, EV_RECOVER, cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(p, "force")));
    n_pending++;
  }
  pthread_mutex_unlock(&g.mu);
  cJSON_Delete(pending);
  if (stored < 0) {
    /* First start: begin at the end of the log (existing studies are not
     * analysed unless asked with POST .../analyze). */
    stored = orth_last_change();
    if (stored < 0) stored = 0;
  }
  pthread_mutex_lock(&g.mu);
  q.last_change = stored;
  q.dirty = 1;
  pthread_mutex_unlock(&g.mu);
  replay_changes();
  pthread_mutex_lock(&g.mu);
  /* Studies whose NewStudy was logged before this start but that were never
   * queued (the kill came before the journal recorded them): Orthanc does
   * not carry "unstable" studies over a restart, so no StableStudy will
   * come. Check them now. */
  long n_unstable = 0;
  study_for_each_locked(recover_unstable, &(struct recover_arg){start_seq, &n_unstable});
  q.catching_up = 0;
  pthread_cond_broadcast(&g.cv);
  log_warning("UniMed: caught up: %ld pending studies from the journal, %ld left unstable by a "
              "stop, now at change %lld, %zu queued",
              n_pending, n_unstable, (long long)q.last_change, q.len);
  pthread_mutex_unlock(&g.mu);
  persist();
}

static void recheck_elsewhere(study_t *s, void *arg) {
  (void)arg;
  if (s->state == ST_SKIPPED && s->elsewhere) study_apply_locked(s, EV_RECHECK, 0);
}

/* A study that stays "new" (its NewStudy seen, no StableStudy) for
 * StableAge + ClaimLease: it was being received by a server that stopped
 * before the study became stable there (Orthanc keeps stability in memory
 * and sends no StableStudy for it after a restart, nor does any other
 * server). Checked now, so that a dead server's incoming studies are taken
 * over like its claims. Measured on this server's monotonic clock. */
static void recheck_unstable(study_t *s, void *arg) {
  double now = *(const double *)arg;
  if (s->state == ST_NEW && now - s->new_seen >= (double)(g.cfg.stable_age + g.cfg.claim_lease))
    study_apply_locked(s, EV_RECOVER, 0);
}

struct id_list {
  char (*ids)[64];
  int n, cap;
};

static void collect_running(study_t *s, void *arg) {
  struct id_list *l = arg;
  if (s->state != ST_RUNNING) return;
  if (l->n == l->cap) {
    int nc = l->cap ? l->cap * 2 : 16;
    char(*ni)[64] = realloc(l->ids, (size_t)nc * sizeof *ni);
    if (!ni) return;
    l->ids = ni;
    l->cap = nc;
  }
  snprintf(l->ids[l->n++], 64, "%s", s->id);
}

/* Renews this server's claims: each study it analyses whose record is its
 * claim is written again (same text, with If-Match of its revision), which
 * gives the record a new revision. The other servers measure the lease from
 * the last revision they saw, so a claim is taken over only ClaimLease after
 * its server stopped renewing it (it died, or lost the database), however
 * long the analysis takes. A write that races with the worker's final
 * record fails with 409 and changes nothing. */
static void renew_claims(void) {
  struct id_list l = {NULL, 0, 0};
  pthread_mutex_lock(&g.mu);
  study_for_each_locked(collect_running, &l);
  pthread_mutex_unlock(&g.mu);
  for (int i = 0; i < l.n; i++) {
    buf_t b;
    char etag[64] = "";
    if (orth_meta_get(l.ids[i], g.cfg.meta_state, &b, etag) == 200 && b.data && etag[0]) {
      char *txt = malloc(b.len + 1);
      cJSON *j = txt ? cJSON_ParseWithLength(b.data, b.len) : NULL;
      study_record rec;
      if (j && study_record_from_json(j, &rec) == 0 && rec.state == ST_RUNNING &&
          strcmp(rec.owner, g.cfg.server_id) == 0) {
        memcpy(txt, b.data, b.len);
        txt[b.len] = 0;
        int st = orth_meta_put(l.ids[i], g.cfg.meta_state, txt, etag);
        if (st != 200 && st != 409)
          log_warning("UniMed: study %s: renewing the claim answered HTTP %d", l.ids[i], st);
      }
      cJSON_Delete(j);
      free(txt);
    }
    buf_free(&b);
  }
  free(l.ids);
}

static void recheck_retry(study_t *s, void *arg) {
  (void)arg;
  if (s->state == ST_FAILED && s->retry) study_apply_locked(s, EV_RECHECK, 0);
}

/* How often the studies left to another server are looked at again: a
 * quarter of ClaimLease (so that a dead server's claim is taken over within
 * 1.25 leases of its last renewal), at most every minute, at least every
 * second. */
static double claim_poll_seconds(void) {
  double t = g.cfg.claim_lease / 4.0;
  return t < 1.0 ? 1.0 : t > 60.0 ? 60.0 : t;
}

static void *journal_main(void *arg) {
  (void)arg;
  journal_start();
  double last_replay = now_seconds(), last_claims = last_replay, last_retry = last_replay;
  pthread_mutex_lock(&g.mu);
  while (!q.stop) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 300 * 1000000L;
    if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
    pthread_cond_timedwait(&g.cv, &g.mu, &ts);
    if (q.stop) break;
    pthread_mutex_unlock(&g.mu);
    if (now_seconds() - last_replay >= 1.0) {
      replay_changes();
      last_replay = now_seconds();
    }
    if (now_seconds() - last_retry >= RETRY_SECONDS) {
      /* Failures to store in Orthanc (a full disk): try again. */
      pthread_mutex_lock(&g.mu);
      study_for_each_locked(recheck_retry, NULL);
      pthread_mutex_unlock(&g.mu);
      last_retry = now_seconds();
    }
    if (now_seconds() - last_claims >= claim_poll_seconds()) {
      /* Studies claimed by another server: look again (it may be done, or
       * its claim may have expired because it died). */
      pthread_mutex_lock(&g.mu);
      study_for_each_locked(recheck_elsewhere, NULL);
      double now = now_seconds();
      study_for_each_locked(recheck_unstable, &now);
      pthread_mutex_unlock(&g.mu);
      renew_claims();
      last_claims = now_seconds();
    }
    persist();
    pthread_mutex_lock(&g.mu);
  }
  pthread_mutex_unlock(&g.mu);
  return NULL;
}

/* ======================================================================
 * threads
 * ==================================================================== */

void threads_start(void *(*worker_main)(void *), void **worker_args, int n_workers) {
  if (q.started) return;
  q.stop = 0;
  q.catching_up = 1;
  q.workers = calloc((size_t)n_workers, sizeof(pthread_t));
  if (!q.workers) return;
  q.n_workers = n_workers;
  pthread_create(&q.journal_thread, NULL, journal_main, NULL);
  for (int i = 0; i < n_workers; i++) pthread_create(&q.workers[i], NULL, worker_main, worker_args[i]);
  q.started = 1;
  log_warning("UniMed: %d worker(s) started", n_workers);
}

void threads_stop(void) {
  if (!q.started) return;
  pthread_mutex_lock(&g.mu);
  q.stop = 1;
  pthread_cond_broadcast(&g.cv);
  pthread_mutex_unlock(&g.mu);
  pthread_join(q.journal_thread, NULL);
  for (int i = 0; i < q.n_workers; i++) pthread_join(q.workers[i], NULL);
  free(q.workers);
  q.workers = NULL;
  q.started = 0;
  /* Anything still queued is written for the next start. */
  pthread_mutex_lock(&g.mu);
  q.dirty = 1;
  pthread_mutex_unlock(&g.mu);
  persist();
  log_warning("UniMed: workers stopped");
}
