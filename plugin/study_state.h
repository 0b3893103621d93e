/* UniMed for Orthanc — the per-study state machine and the study record.
 *
 * Every study the plugin knows of is in exactly one state. A state changes
 * only through study_transition(), which looks the (state, event) pair up in
 * the table of study_state.c; pairs absent from the table leave the study as
 * it is. The table is the contract: docs/PLUGIN.md shows it.
 *
 * What is persisted of a study is one record, study_record, stored as JSON
 * in the study's UniMedState metadata (study_record_to_json/_from_json). */
#ifndef UNIMED_PLUGIN_STUDY_STATE_H
#define UNIMED_PLUGIN_STUDY_STATE_H

#include <cjson/cJSON.h>

enum study_state {
  ST_NONE = 0, /* unknown to the plugin, or deleted */
  ST_NEW,      /* NewStudy seen, not yet stable */
  ST_QUEUED,   /* waiting for a worker */
  ST_RUNNING,  /* a worker analyses it */
  ST_DONE,     /* analysed; findings (and the SR) stored */
  ST_FAILED,   /* analysis failed; the reason is stored */
  ST_SKIPPED,  /* nothing to analyse (no image series, Modalities filter), or
                  claimed by another server */
  ST_COUNT
};

enum study_event {
  EV_NEW_STUDY = 0, /* Orthanc's NewStudy (callback or /changes replay) */
  EV_STABLE,        /* Orthanc's StableStudy */
  EV_ANALYZE,       /* POST studies/{id}/analyze */
  EV_RECOVER,       /* at start: pending in the journal, or left running by a crash */
  EV_RECHECK,       /* looked at again: a claim by another server, or a failure
                       to store in Orthanc (disk full) */
  EV_DEQUEUE,       /* a worker takes it */
  EV_FINISH_DONE,   /* the worker's outcome */
  EV_FINISH_FAILED,
  EV_FINISH_SKIPPED,
  EV_FINISH_GONE,   /* the worker found the study deleted */
  EV_DELETED,       /* Orthanc's Deleted (callback or replay) */
  EV_LOAD_DONE,     /* at start: a stored record says done / failed */
  EV_LOAD_FAILED,
  EV_LOAD_SKIPPED,
  EV_COUNT
};

/* What the caller must do besides setting the new state. */
enum study_action {
  ACT_NONE = 0,
  ACT_ENQUEUE,      /* append to the work queue */
  ACT_RERUN,        /* running: analyse once more after this run (a forced
                       request joins a forced run instead) */
  ACT_MARK_DELETED, /* running: the study was deleted; the worker removes what
                       it wrote and forgets the study when it finishes */
  ACT_FORGET,       /* drop results and patient data from the index */
  ACT_RESULT,       /* take the worker's outcome into the index */
};

typedef struct {
  enum study_state from;
  enum study_event event;
  enum study_state to;
  enum study_action action;
} study_transition_t;

/* The transition for (state, event), or NULL when the event does not apply
 * in that state (the study stays as it is). */
const study_transition_t *study_transition(enum study_state from, enum study_event event);
/* The whole table (for docs and tests). */
const study_transition_t *study_transitions(int *count);
const char *study_state_name(int st);
const char *study_event_name(int ev);
/* The state's name in a stored record ("done", ...); -1 for an unknown name. */
int study_state_parse(const char *name);

/* ---- the persisted record (metadata UniMedState) ---- */
typedef struct {
  int state;              /* ST_RUNNING (a claim), ST_DONE, ST_FAILED, ST_SKIPPED */
  char owner[128];        /* server that wrote it */
  double since;           /* seconds since the epoch when it was written */
  char time[32];          /* the same, ISO 8601 */
  char model[32];         /* model hash */
  char label_sets[1024];  /* "name:hash,..." */
  char fingerprint[17];   /* model + label sets + the analysed instances */
  char sr[64];            /* Orthanc ID of the SR, "" when none */
  char sr_uid[65];
  char error[600];
  double seconds;         /* analysis time */
  int retry;              /* failed: Orthanc could not store (disk full...); retried */
} study_record;

cJSON *study_record_to_json(const study_record *r);
/* 0, or -1 when j is not a record (no known "state"). */
int study_record_from_json(const cJSON *j, study_record *r);

#endif
