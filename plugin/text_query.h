/* UniMed for Orthanc — a search text's embedding: cached, and computed in
 * one text-tower call with the other texts that arrive meanwhile. */
#ifndef UNIMED_PLUGIN_TEXT_QUERY_H
#define UNIMED_PLUGIN_TEXT_QUERY_H

#include <stddef.h>

#include "plugin_internal.h"

/* The normalised embedding of text (g.dim floats) into out, on the REST
 * engine. 0, or -1 with err. Thread-safe; blocks while the tower is busy. */
int text_query_embed(const char *text, float *out, char *err, size_t errlen);
/* Cache hits, misses and text-tower calls since the start (status). */
void text_query_stats(long long *hits, long long *misses, long long *calls);
void text_query_free(void);

#endif
