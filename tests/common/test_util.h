/* Small helpers shared by the C test programs (not part of the product). */
#ifndef UNIMED_TEST_UTIL_H
#define UNIMED_TEST_UTIL_H

#include <stddef.h>

/* The whole file, NUL-terminated (malloc'd), its size in *len (may be
 * NULL); NULL when it cannot be opened or read. */
char *tu_read_file(const char *path, size_t *len);

#endif
