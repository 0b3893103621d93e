/* UniMed for Orthanc — the REST handlers (rest.c); plugin.c's route table
 * maps them under Root. */
#ifndef UNIMED_PLUGIN_REST_H
#define UNIMED_PLUGIN_REST_H

#include <orthanc/OrthancCPlugin.h>

#define REST_HANDLER(name)                                                             \
  OrthancPluginErrorCode name(OrthancPluginRestOutput *out, const char *url,           \
                              const OrthancPluginHttpRequest *req)
REST_HANDLER(rest_status);
REST_HANDLER(rest_study);
REST_HANDLER(rest_analyze);
REST_HANDLER(rest_findings);
REST_HANDLER(rest_search);
REST_HANDLER(rest_classify);
REST_HANDLER(rest_label_sets);
REST_HANDLER(rest_unknown);
/* When the plugin is disabled: status says why, every other route 503. */
REST_HANDLER(rest_disabled_status);
REST_HANDLER(rest_disabled);
#undef REST_HANDLER

/* Root of the routes ("UniMed"."Root", default /unimed/). */
const char *rest_root(void);
/* The Orthanc Explorer extension (explorer.js). */
void rest_register_explorer(void);

#endif
