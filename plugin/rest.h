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
REST_HANDLER(rest_studies);      /* listing.c: GET studies */
REST_HANDLER(rest_analyze_all);  /* listing.c: POST studies/analyze-all */
REST_HANDLER(rest_report_html);  /* sr_render.c: GET studies/{id}/report.html */
/* When the plugin is disabled: status says why, every other route 503. */
REST_HANDLER(rest_disabled_status);
REST_HANDLER(rest_disabled);
#undef REST_HANDLER

/* Shared by the handlers' files (rest.c, listing.c, sr_render.c). */
#include <cjson/cJSON.h>
void rest_answer(OrthancPluginRestOutput *out, int status, cJSON *j); /* takes j */
void rest_answer_error(OrthancPluginRestOutput *out, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* 400 (and 0) unless every GET argument is one of allowed (NULL-terminated);
 * the message names the nearest allowed one. Returns 0 when all are known. */
int rest_check_args(OrthancPluginRestOutput *out, const OrthancPluginHttpRequest *req,
                    const char *const *allowed);
/* The decoded value of GET argument key into buf (NULL when absent). */
const char *rest_arg(const OrthancPluginHttpRequest *req, const char *key, char *buf, size_t n);
/* limit (1..max, default def) and since (>= 0, default 0); -1 after a 400. */
int rest_page(OrthancPluginRestOutput *out, const OrthancPluginHttpRequest *req, int def,
              long *since, int *limit);
/* How long a route waits for the index rebuilt at start before answering 503. */
#define REST_INDEX_WAIT_SECONDS 30
/* 1 when id looks like an Orthanc ID. */
int rest_valid_id(const char *id);
/* 1 while Orthanc still holds the study; on 404 the plugin forgets it
 * (study_keep_fn for the lists: never call it with g.mu held). */
int rest_study_in_orthanc(const char *id);

/* Root of the routes ("UniMed"."Root", default /unimed/). */
const char *rest_root(void);
/* The Orthanc Explorer extension (explorer.js). */
void rest_register_explorer(void);

#endif
