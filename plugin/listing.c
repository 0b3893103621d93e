/* GET studies and POST studies/analyze-all (docs/PLUGIN.md, REST). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "index.h"
#include "journal.h"
#include "listing.h"
#include "rest.h"

/* ---- GET studies ---- */
OrthancPluginErrorCode rest_studies(OrthancPluginRestOutput *out, const char *url,
                                    const OrthancPluginHttpRequest *req) {
  (void)url;
  if (req->method != OrthancPluginHttpMethod_Get) {
    OrthancPluginSendMethodNotAllowed(g.ctx, out, "GET");
    return 0;
  }
  static const char *const args[] = {"state", "label_set", "modality", "analysed_since",
                                     "limit", "since", NULL};
  if (rest_check_args(out, req, args)) return 0;
  char stb[32], lsb[256], mob[64], asb[64];
  study_filter_t f = {-1, NULL, NULL, NULL};
  const char *st = rest_arg(req, "state", stb, sizeof stb);
  if (st) {
    f.state = study_state_parse(st);
    if (f.state < 0 || f.state == ST_NONE || f.state == ST_NEW) {
      rest_answer_error(out, 400, "\"state\" must be one of queued, running, done, failed, skipped");
      return 0;
    }
  }
  f.label_set = rest_arg(req, "label_set", lsb, sizeof lsb);
  f.modality = rest_arg(req, "modality", mob, sizeof mob);
  f.analysed_since = rest_arg(req, "analysed_since", asb, sizeof asb);
  if (f.analysed_since && (strlen(f.analysed_since) < 4 || f.analysed_since[0] < '0' ||
                           f.analysed_since[0] > '9')) {
    rest_answer_error(out, 400, "\"analysed_since\" must be an ISO 8601 date or time, e.g. 2024-01-31 or 2024-01-31T12:00:00Z");
    return 0;
  }
  page_t page;
  if (rest_page(out, req, 100, &page.since, &page.limit)) return 0;
  if (!index_wait_ready(REST_INDEX_WAIT_SECONDS)) {
    rest_answer_error(out, 503, "the index of analysed studies is still being rebuilt; try again");
    return 0;
  }
  rest_answer(out, 200, index_list_json(&f, page, rest_study_in_orthanc));
  return 0;
}

/* ---- POST studies/analyze-all: a walk over Orthanc's studies ---- */
static struct {
  pthread_mutex_t mu;
  pthread_t thread;
  int running, joinable, stop;
  long examined, queued;
} walk = {.mu = PTHREAD_MUTEX_INITIALIZER};

static int should_stop(void) {
  pthread_mutex_lock(&walk.mu);
  int s = walk.stop;
  pthread_mutex_unlock(&walk.mu);
  return s;
}

/* Low priority: a study of the walk is queued only when nothing else waits,
 * so studies arriving meanwhile are analysed first. */
static int wait_for_idle_queue(void) {
  for (;;) {
    if (should_stop()) return -1;
    index_counts_t c;
    index_counts(&c);
    if (c.n[ST_QUEUED] == 0) return 0;
    struct timespec ts = {0, 200 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}

static void *walk_main(void *arg) {
  (void)arg;
  long since = 0;
  for (;;) {
    char uri[96];
    int st;
    snprintf(uri, sizeof uri, "/studies?since=%ld&limit=500", since);
    cJSON *ids = orth_get_json(uri, &st);
    int n = cJSON_GetArraySize(ids);
    const cJSON *it;
    cJSON_ArrayForEach(it, ids) {
      if (!cJSON_IsString(it)) continue;
      pthread_mutex_lock(&walk.mu);
      walk.examined++;
      pthread_mutex_unlock(&walk.mu);
      if (!index_is_unanalysed(it->valuestring)) continue;
      if (wait_for_idle_queue() != 0) break;
      if (plugin_event(it->valuestring, EV_ANALYZE, 0)) {
        pthread_mutex_lock(&walk.mu);
        walk.queued++;
        pthread_mutex_unlock(&walk.mu);
      }
    }
    cJSON_Delete(ids);
    if (n < 500 || should_stop()) break;
    since += n;
  }
  pthread_mutex_lock(&walk.mu);
  walk.running = 0;
  pthread_mutex_unlock(&walk.mu);
  return NULL;
}

cJSON *listing_status_json(void) {
  cJSON *j = cJSON_CreateObject();
  pthread_mutex_lock(&walk.mu);
  cJSON_AddBoolToObject(j, "running", walk.running);
  cJSON_AddNumberToObject(j, "examined", (double)walk.examined);
  cJSON_AddNumberToObject(j, "queued", (double)walk.queued);
  pthread_mutex_unlock(&walk.mu);
  return j;
}

void listing_stop(void) {
  pthread_mutex_lock(&walk.mu);
  walk.stop = 1;
  int join = walk.joinable;
  walk.joinable = 0;
  pthread_mutex_unlock(&walk.mu);
  if (join) pthread_join(walk.thread, NULL);
}

OrthancPluginErrorCode rest_analyze_all(OrthancPluginRestOutput *out, const char *url,
                                        const OrthancPluginHttpRequest *req) {
  (void)url;
  if (req->method != OrthancPluginHttpMethod_Post) {
    OrthancPluginSendMethodNotAllowed(g.ctx, out, "POST");
    return 0;
  }
  static const char *const no_args[] = {NULL};
  if (rest_check_args(out, req, no_args)) return 0;
  pthread_mutex_lock(&walk.mu);
  int started = 0;
  if (!walk.running && !walk.stop) {
    if (walk.joinable) pthread_join(walk.thread, NULL); /* the previous walk, finished */
    walk.joinable = 0;
    walk.examined = walk.queued = 0;
    walk.running = 1;
    if (pthread_create(&walk.thread, NULL, walk_main, NULL) == 0) {
      walk.joinable = 1;
      started = 1;
    } else {
      walk.running = 0;
    }
  }
  int running = walk.running;
  pthread_mutex_unlock(&walk.mu);
  if (!running) {
    rest_answer_error(out, 503, "cannot start the walk over the studies");
    return 0;
  }
  cJSON *j = listing_status_json();
  cJSON_AddBoolToObject(j, "started", started);
  rest_answer(out, 202, j);
  return 0;
}
