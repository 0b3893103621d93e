/* UniMed for Orthanc — GET studies (the listing, with filters and paging)
 * and POST studies/analyze-all (queue every study not yet analysed, at low
 * priority: one at a time, only when no other study waits). */
#ifndef UNIMED_PLUGIN_LISTING_H
#define UNIMED_PLUGIN_LISTING_H

#include <cjson/cJSON.h>

/* {"running": bool, "examined": n, "queued": n} of the analyze-all walk. */
cJSON *listing_status_json(void);
/* Stops (and joins) the analyze-all walk, if one runs. */
void listing_stop(void);

#endif
