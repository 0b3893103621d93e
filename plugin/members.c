/* Members of analysed studies: a hash table from the 64-bit hash of an
 * Orthanc instance or series ID to its study (about 32 bytes per analysed
 * instance), and the re-analysis of a study after removals settle. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "index.h"
#include "journal.h"
#include "members.h"

typedef struct {
  uint64_t key;     /* 0: empty slot */
  study_t *study;   /* studies are never freed while the plugin runs */
} slot_t;

typedef struct {
  study_t *study;
  time_t last_removal;
} pending_t;

static struct {
  pthread_mutex_t mu; /* after g.mu when both are taken */
  slot_t *slots;
  size_t cap, used;
  pending_t *pending;
  size_t n_pending, cap_pending;
  pthread_t thread;
  int running, stop, settle;
} m = {.mu = PTHREAD_MUTEX_INITIALIZER};

static uint64_t key_of(const char *id) {
  uint64_t h = fnv1a64(FNV64_OFFSET, id, strlen(id));
  return h ? h : 1;
}

static int insert_locked(uint64_t key, study_t *s) {
  if ((m.used + 1) * 2 > m.cap) {
    size_t ncap = m.cap ? 2 * m.cap : 4096;
    slot_t *ns = calloc(ncap, sizeof *ns);
    if (!ns) return -1;
    for (size_t i = 0; i < m.cap; i++) {
      if (!m.slots[i].key) continue;
      size_t j = (size_t)m.slots[i].key & (ncap - 1);
      while (ns[j].key) j = (j + 1) & (ncap - 1);
      ns[j] = m.slots[i];
    }
    free(m.slots);
    m.slots = ns;
    m.cap = ncap;
  }
  size_t j = (size_t)key & (m.cap - 1);
  while (m.slots[j].key && m.slots[j].key != key) j = (j + 1) & (m.cap - 1);
  if (!m.slots[j].key) m.used++;
  m.slots[j].key = key;
  m.slots[j].study = s;
  return 0;
}

static study_t *find_locked(uint64_t key) {
  if (!m.cap) return NULL;
  size_t j = (size_t)key & (m.cap - 1);
  while (m.slots[j].key) {
    if (m.slots[j].key == key) return m.slots[j].study;
    j = (j + 1) & (m.cap - 1);
  }
  return NULL;
}

/* With g.mu held (the study pointer comes from the index). */
static void note_locked(study_t *s, const cJSON *series) {
  const cJSON *se, *inst;
  pthread_mutex_lock(&m.mu);
  cJSON_ArrayForEach(se, series) {
    /* Reports and other non-image objects do not change an analysis (the
     * plugin removes its own superseded SRs). */
    const char *mod = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(se, "MainDicomTags"), "Modality"));
    if (mod && (strcmp(mod, "SR") == 0 || strcmp(mod, "KO") == 0 || strcmp(mod, "PR") == 0)) continue;
    const char *sid = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(se, "ID"));
    if (sid) insert_locked(key_of(sid), s);
    cJSON_ArrayForEach(inst, cJSON_GetObjectItemCaseSensitive(se, "Instances"))
      if (cJSON_IsString(inst)) insert_locked(key_of(inst->valuestring), s);
  }
  pthread_mutex_unlock(&m.mu);
}

void members_note(const char *study_id, const cJSON *series) {
  pthread_mutex_lock(&g.mu);
  study_t *s = study_find(study_id);
  if (s) note_locked(s, series);
  pthread_mutex_unlock(&g.mu);
}

void members_removed(const char *resource_id) {
  pthread_mutex_lock(&m.mu);
  study_t *s = find_locked(key_of(resource_id));
  if (s) {
    size_t i = 0;
    while (i < m.n_pending && m.pending[i].study != s) i++;
    if (i == m.n_pending && m.n_pending == m.cap_pending) {
      size_t nc = m.cap_pending ? 2 * m.cap_pending : 16;
      pending_t *np = realloc(m.pending, nc * sizeof *np);
      if (np) {
        m.pending = np;
        m.cap_pending = nc;
      }
    }
    if (i < m.cap_pending) {
      m.pending[i].study = s;
      m.pending[i].last_removal = time(NULL);
      if (i == m.n_pending) m.n_pending++;
    }
  }
  pthread_mutex_unlock(&m.mu);
}

static int stopping(void) {
  pthread_mutex_lock(&m.mu);
  int s = m.stop;
  pthread_mutex_unlock(&m.mu);
  return s;
}

/* The members of the studies analysed before this start (paged). */
static void learn_existing(void) {
  long since = 0;
  const long page = 1000;
  while (!stopping()) {
    char uri[96];
    int st;
    snprintf(uri, sizeof uri, "/series?expand&since=%ld&limit=%ld", since, page);
    cJSON *list = orth_get_json(uri, &st);
    int n = cJSON_GetArraySize(list);
    const cJSON *se;
    pthread_mutex_lock(&g.mu);
    cJSON_ArrayForEach(se, list) {
      const char *parent = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(se, "ParentStudy"));
      study_t *s = parent ? study_find(parent) : NULL;
      if (!s || s->state == ST_NONE) continue;
      cJSON *one = cJSON_CreateArray();
      cJSON_AddItemReferenceToArray(one, (cJSON *)se);
      note_locked(s, one);
      cJSON_Delete(one);
    }
    pthread_mutex_unlock(&g.mu);
    cJSON_Delete(list);
    if (n < page) break;
    since += n;
  }
}

static void *members_main(void *arg) {
  (void)arg;
  /* Let the index be rebuilt first (the journal thread does it at start). */
  while (!stopping()) {
    queue_status_t qs;
    queue_status(&qs);
    if (!qs.catching_up) break;
    struct timespec ts = {0, 200 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  learn_existing();
  while (!stopping()) {
    struct timespec ts = {1, 0};
    nanosleep(&ts, NULL);
    /* Studies whose last removal is older than the settle time. */
    char ids[32][64];
    int n = 0;
    time_t now = time(NULL);
    pthread_mutex_lock(&m.mu);
    for (size_t i = 0; i < m.n_pending && n < 32;) {
      if (now - m.pending[i].last_removal >= m.settle) {
        snprintf(ids[n++], sizeof ids[0], "%s", m.pending[i].study->id);
        m.pending[i] = m.pending[--m.n_pending];
      } else {
        i++;
      }
    }
    pthread_mutex_unlock(&m.mu);
    for (int i = 0; i < n; i++) {
      /* A study deleted as a whole is not brought back to the queue. */
      char uri[128];
      int st;
      snprintf(uri, sizeof uri, "/studies/%.63s", ids[i]);
      cJSON *j = orth_get_json(uri, &st);
      cJSON_Delete(j);
      if (st != 200) continue;
      log_info("UniMed: study %s lost instances after its analysis: analysing it again", ids[i]);
      pthread_mutex_lock(&g.mu);
      study_t *s = study_find(ids[i]);
      if (s && s->state != ST_NONE && s->state != ST_NEW) study_apply_locked(s, EV_STABLE, 0);
      pthread_mutex_unlock(&g.mu);
    }
  }
  return NULL;
}

void members_start(int settle_seconds) {
  pthread_mutex_lock(&m.mu);
  m.stop = 0;
  m.settle = settle_seconds > 0 ? settle_seconds : 1;
  if (!m.running && pthread_create(&m.thread, NULL, members_main, NULL) == 0) m.running = 1;
  pthread_mutex_unlock(&m.mu);
}

void members_stop(void) {
  pthread_mutex_lock(&m.mu);
  m.stop = 1;
  int join = m.running;
  m.running = 0;
  pthread_mutex_unlock(&m.mu);
  if (join) pthread_join(m.thread, NULL);
  pthread_mutex_lock(&m.mu);
  free(m.slots);
  m.slots = NULL;
  m.cap = m.used = 0;
  free(m.pending);
  m.pending = NULL;
  m.n_pending = m.cap_pending = 0;
  pthread_mutex_unlock(&m.mu);
}
