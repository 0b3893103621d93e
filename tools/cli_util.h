/* Helpers shared by the `unimed` subcommands. */
#ifndef UNIMED_CLI_UTIL_H
#define UNIMED_CLI_UTIL_H

#include <cjson/cJSON.h>
#include <stddef.h>

/* Prints obj as one JSON line on stdout and frees it. */
void cli_print_json(cJSON *obj);
/* A JSON array of floats printed with 9 significant digits (exact for float32). */
cJSON *cli_float_array(const float *v, int n);
/* Reads a whole file; returns NULL and prints "unimed: PATH: reason" on failure. */
void *cli_read_file(const char *path, size_t *len);
/* True when arg is --help or -h. */
int cli_is_help(const char *arg);
/* Parses a positive integer option value; prints an error and returns -1 if bad. */
int cli_parse_positive(const char *opt, const char *value);
/* Monotonic clock in milliseconds. */
double cli_now_ms(void);

#endif
