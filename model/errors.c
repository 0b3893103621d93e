/* The one way the model core (and the trainer built on it) writes an error
 * message into a caller's (err, errlen) buffer. */
#include <stdarg.h>
#include <stdio.h>

#include "internal.h"

void unimed_set_err(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || errlen == 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}
