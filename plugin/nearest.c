/* The nearest known name (Levenshtein distance, case-insensitive). */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "nearest.h"

static size_t distance(const char *a, const char *b) {
  size_t n = strlen(a), m = strlen(b);
  if (n > 128 || m > 128) return (size_t)-1;
  size_t row[129];
  for (size_t j = 0; j <= m; j++) row[j] = j;
  for (size_t i = 1; i <= n; i++) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= m; j++) {
      size_t up = row[j];
      size_t cost = tolower((unsigned char)a[i - 1]) == tolower((unsigned char)b[j - 1]) ? 0 : 1;
      size_t best = diag + cost;
      if (up + 1 < best) best = up + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[m];
}

const char *nearest_name(const char *given, const char *const *known) {
  const char *best = NULL;
  size_t bd = (size_t)-1;
  for (int i = 0; known[i]; i++) {
    size_t d = distance(given, known[i]);
    if (d < bd) {
      bd = d;
      best = known[i];
    }
  }
  if (!best) return NULL;
  size_t longer = strlen(given) > strlen(best) ? strlen(given) : strlen(best);
  return bd * 3 <= longer ? best : NULL;
}
