/* The per-study state machine (table) and the study record's JSON. */
#include <stdio.h>
#include <string.h>

#include "study_state.h"

/* Every allowed transition. A (state, event) pair not listed leaves the
 * study unchanged: e.g. a StableStudy or an analyze request for a queued
 * study joins the queued analysis, a NewStudy for an analysed study changes
 * nothing. */
static const study_transition_t table[] = {
    /* from         event              to           action */
    {ST_NONE,    EV_NEW_STUDY,      ST_NEW,      ACT_NONE},
    {ST_NONE,    EV_STABLE,         ST_QUEUED,   ACT_ENQUEUE},
    {ST_NONE,    EV_ANALYZE,        ST_QUEUED,   ACT_ENQUEUE},
    {ST_NONE,    EV_RECOVER,        ST_QUEUED,   ACT_ENQUEUE},
    {ST_NONE,    EV_LOAD_DONE,      ST_DONE,     ACT_RESULT},
    {ST_NONE,    EV_LOAD_FAILED,    ST_FAILED,   ACT_RESULT},
    {ST_NONE,    EV_LOAD_SKIPPED,   ST_SKIPPED,  ACT_RESULT},

    {ST_NEW,     EV_STABLE,         ST_QUEUED,   ACT_ENQUEUE},
    {ST_NEW,     EV_ANALYZE,        ST_QUEUED,   ACT_ENQUEUE},
    {ST_NEW,     EV_RECOVER,        ST_QUEUED,   ACT_ENQUEUE},
    {ST_NEW,     EV_LOAD_DONE,      ST_DONE,     ACT_RESULT},
    {ST_NEW,     EV_LOAD_FAILED,    ST_FAILED,   ACT_RESULT},
    {ST_NEW,     EV_LOAD_SKIPPED,   ST_SKIPPED,  ACT_RESULT},
    {ST_NEW,     EV_DELETED,        ST_NONE,     ACT_FORGET},

    {ST_QUEUED,  EV_DEQUEUE,        ST_RUNNING,  ACT_NONE},
    {ST_QUEUED,  EV_DELETED,        ST_NONE,     ACT_FORGET},

    {ST_RUNNING, EV_STABLE,         ST_RUNNING,  ACT_RERUN},
    {ST_RUNNING, EV_ANALYZE,        ST_RUNNING,  ACT_RERUN},
    {ST_RUNNING, EV_FINISH_DONE,    ST_DONE,     ACT_RESULT},
    {ST_RUNNING, EV_FINISH_FAILED,  ST_FAILED,   ACT_RESULT},
    {ST_RUNNING, EV_FINISH_SKIPPED, ST_SKIPPED,  ACT_RESULT},
    {ST_RUNNING, EV_FINISH_GONE,    ST_NONE,     ACT_FORGET},
    {ST_RUNNING, EV_DELETED,        ST_RUNNING,  ACT_MARK_DELETED},

    {ST_DONE,    EV_STABLE,         ST_QUEUED,   ACT_ENQUEUE},
    {ST_DONE,    EV_ANALYZE,        ST_QUEUED,   ACT_ENQUEUE},
    {ST_DONE,    EV_RECOVER,        ST_QUEUED,   ACT_ENQUEUE},
    {ST_DONE,    EV_DELETED,        ST_NONE,     ACT_FORGET},

    {ST_FAILED,  EV_STABLE,         ST_QUEUED,   ACT_ENQUEUE},
    {ST_FAILED,  EV_ANALYZE,        ST_QUEUED,   ACT_ENQUEUE},
    {ST_FAILED,  EV_RECOVER,        ST_QUEUED,   ACT_ENQUEUE},
    {ST_FAILED,  EV_RECHECK,        ST_QUEUED,   ACT_ENQUEUE},
    {ST_FAILED,  EV_DELETED,        ST_NONE,     ACT_FORGET},

    {ST_SKIPPED, EV_STABLE,         ST_QUEUED,   ACT_ENQUEUE},
    {ST_SKIPPED, EV_ANALYZE,        ST_QUEUED,   ACT_ENQUEUE},
    {ST_SKIPPED, EV_RECOVER,        ST_QUEUED,   ACT_ENQUEUE},
    {ST_SKIPPED, EV_RECHECK,        ST_QUEUED,   ACT_ENQUEUE},
    {ST_SKIPPED, EV_DELETED,        ST_NONE,     ACT_FORGET},
};

const study_transition_t *study_transition(enum study_state from, enum study_event event) {
  for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
    if (table[i].from == from && table[i].event == event) return &table[i];
  return NULL;
}

const study_transition_t *study_transitions(int *count) {
  *count = (int)(sizeof table / sizeof table[0]);
  return table;
}

static const char *const state_names[ST_COUNT] = {"none", "new", "queued", "running",
                                                  "done", "failed", "skipped"};

const char *study_state_name(int st) {
  return st >= 0 && st < ST_COUNT ? state_names[st] : "none";
}

const char *study_event_name(int ev) {
  static const char *const names[EV_COUNT] = {
      "NewStudy", "StableStudy", "analyze", "recover", "recheck", "dequeue", "finish-done",
      "finish-failed", "finish-skipped", "finish-gone", "Deleted", "load-done", "load-failed",
      "load-skipped"};
  return ev >= 0 && ev < EV_COUNT ? names[ev] : "?";
}

int study_state_parse(const char *name) {
  if (!name) return -1;
  for (int i = 0; i < ST_COUNT; i++)
    if (strcmp(name, state_names[i]) == 0) return i;
  return -1;
}

/* ---- the record ---- */

cJSON *study_record_to_json(const study_record *r) {
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "state", study_state_name(r->state));
  cJSON_AddStringToObject(j, "owner", r->owner);
  cJSON_AddNumberToObject(j, "since", r->since);
  cJSON_AddStringToObject(j, "time", r->time);
  cJSON_AddStringToObject(j, "model", r->model);
  cJSON_AddStringToObject(j, "label_sets", r->label_sets);
  if (r->fingerprint[0]) cJSON_AddStringToObject(j, "fingerprint", r->fingerprint);
  if (r->sr[0]) cJSON_AddStringToObject(j, "sr", r->sr);
  if (r->sr_uid[0]) cJSON_AddStringToObject(j, "sr_uid", r->sr_uid);
  if (r->error[0]) cJSON_AddStringToObject(j, "error", r->error);
  if (r->state != ST_RUNNING) cJSON_AddNumberToObject(j, "seconds", r->seconds);
  if (r->retry) cJSON_AddBoolToObject(j, "retry", 1);
  return j;
}

static void copy_str(const cJSON *j, const char *key, char *out, size_t n) {
  const char *v = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, key));
  snprintf(out, n, "%s", v ? v : "");
}

static double get_num(const cJSON *j, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
  return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

int study_record_from_json(const cJSON *j, study_record *r) {
  memset(r, 0, sizeof *r);
  int st = study_state_parse(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "state")));
  if (st < 0) return -1;
  r->state = st;
  copy_str(j, "owner", r->owner, sizeof r->owner);
  r->since = get_num(j, "since");
  copy_str(j, "time", r->time, sizeof r->time);
  copy_str(j, "model", r->model, sizeof r->model);
  copy_str(j, "label_sets", r->label_sets, sizeof r->label_sets);
  copy_str(j, "fingerprint", r->fingerprint, sizeof r->fingerprint);
  copy_str(j, "sr", r->sr, sizeof r->sr);
  copy_str(j, "sr_uid", r->sr_uid, sizeof r->sr_uid);
  copy_str(j, "error", r->error, sizeof r->error);
  r->seconds = get_num(j, "seconds");
  r->retry = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "retry"));
  return 0;
}
