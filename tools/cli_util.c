/* Helpers shared by the `unimed` subcommands. */
#include "cli_util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void cli_print_json(cJSON *obj) {
  char *s = cJSON_PrintUnformatted(obj);
  if (s) {
    fputs(s, stdout);
    fputc('\n', stdout);
    free(s);
  }
  cJSON_Delete(obj);
  fflush(stdout);
}

cJSON *cli_float_array(const float *v, int n) {
  /* cJSON prints doubles with up to 17 digits; round-trip float32 needs 9. */
  cJSON *arr = cJSON_CreateArray();
  char buf[32];
  for (int i = 0; i < n; i++) {
    snprintf(buf, sizeof buf, "%.9g", (double)v[i]);
    cJSON_AddItemToArray(arr, cJSON_CreateRaw(buf));
  }
  return arr;
}

void *cli_read_file(const char *path, size_t *len) {
  FILE *fp = fopen(path, "rb");
  if (!fp) {
    fprintf(stderr, "unimed: %s: cannot open: %s\n", path, strerror(errno));
    return NULL;
  }
  if (fseek(fp, 0, SEEK_END) != 0) {
    fprintf(stderr, "unimed: %s: cannot seek (not a regular file?)\n", path);
    fclose(fp);
    return NULL;
  }
  long size = ftell(fp);
  rewind(fp);
  if (size < 0) {
    fprintf(stderr, "unimed: %s: cannot tell its size\n", path);
    fclose(fp);
    return NULL;
  }
  unsigned char *buf = malloc((size_t)size + 1);
  if (!buf || fread(buf, 1, (size_t)size, fp) != (size_t)size) {
    fprintf(stderr, "unimed: %s: read failed\n", path);
    free(buf);
    fclose(fp);
    return NULL;
  }
  fclose(fp);
  buf[size] = 0;
  *len = (size_t)size;
  return buf;
}

int cli_is_help(const char *arg) { return strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0; }

int cli_parse_positive(const char *opt, const char *value) {
  char *end = NULL;
  long v = value ? strtol(value, &end, 10) : 0;
  if (!value || *end || v <= 0 || v > 1000000) {
    fprintf(stderr, "unimed: %s needs a positive integer, got '%s'\n", opt, value ? value : "");
    return -1;
  }
  return (int)v;
}

double cli_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}
