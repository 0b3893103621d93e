/* UniMed for Orthanc — which study an instance or series belongs to, so that
 * a study that loses instances after its analysis is analysed again (Orthanc
 * sends no StableStudy for removals, and its Deleted event names only the
 * removed resource). docs/PLUGIN.md, "Removed instances". */
#ifndef UNIMED_PLUGIN_MEMBERS_H
#define UNIMED_PLUGIN_MEMBERS_H

#include <cjson/cJSON.h>

/* Records the series and instances of an analysed study (series: the answer
 * of GET /studies/{id}/series). Takes g.mu. */
void members_note(const char *study_id, const cJSON *series);
/* Orthanc's Deleted event for an instance or series: the study it belonged
 * to is checked again once no removal has touched it for the settle time.
 * Only in-memory work (callable from the OnChange callback). */
void members_removed(const char *resource_id);
/* The thread that learns the members of the studies analysed before this
 * start, and re-queues studies whose removals have settled. */
void members_start(int settle_seconds);
void members_stop(void);

#endif
