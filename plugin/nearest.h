/* UniMed for Orthanc — the known name nearest to a misspelt one, for
 * messages about unknown configuration keys and query arguments. */
#ifndef UNIMED_PLUGIN_NEAREST_H
#define UNIMED_PLUGIN_NEAREST_H

/* The name of known (NULL-terminated) closest to given by edit distance
 * (case-insensitive), or NULL when none is close (more than a third of the
 * longer name differs). */
const char *nearest_name(const char *given, const char *const *known);

#endif
