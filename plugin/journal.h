/* UniMed for Orthanc — the work queue, the journal and the catch-up.
 *
 * The journal is one global property (JournalProperty) holding the queue
 * (studies new, queued or running) and the position in Orthanc's /changes
 * log up to which events have been taken in. The journal thread replays
 * /changes from that position (at start: what happened while the plugin was
 * down; then every second: anything the callback could not deliver) and
 * writes the journal when it changed. */
#ifndef UNIMED_PLUGIN_JOURNAL_H
#define UNIMED_PLUGIN_JOURNAL_H

#include "index.h"

/* Applies an event to a study through the state machine (study_state.c) and
 * carries out the transition's action (enqueue, rerun, forget). force: with
 * EV_ANALYZE, analyse even if up to date. Returns the transition taken, or
 * NULL when the event does not apply in the study's state. g.mu held. */
const study_transition_t *study_apply_locked(study_t *s, enum study_event ev, int force);
/* Event by study ID (creates the study when unknown); takes g.mu.
 * Returns 1 when the study became queued, 0 when it was already pending. */
int plugin_event(const char *id, enum study_event ev, int force);

/* Orthanc no longer holds the study (found by a REST route before Orthanc's
 * Deleted event arrived): the same as that event. Takes g.mu. */
void plugin_study_gone(const char *id);

/* Next queued study, or NULL. g.mu held. */
study_t *queue_pop_locked(void);
/* Blocks until there is work (returns the study, state running) or the
 * plugin stops (NULL). g.mu held. */
study_t *queue_wait_locked(void);
void queue_note_running_locked(int delta);
typedef struct {
  long running;
  long long last_change;
  int catching_up;
} queue_status_t;
void queue_status(queue_status_t *st);

void journal_mark_dirty_locked(void);
/* Waits (at most max_seconds) until the index has been rebuilt at start, so
 * that REST never answers from a half-built index. 1 when it is. */
int index_wait_ready(double max_seconds);
/* A study's stored findings and embeddings, read from Orthanc (no lock held). */
void study_fetch_stored_results(const char *id, cJSON **findings, cJSON **emb);
/* Threads: the journal thread plus cfg.workers workers. */
void threads_start(void *(*worker_main)(void *), void **worker_args, int n_workers);
void threads_stop(void);
void queue_free(void);

#endif
