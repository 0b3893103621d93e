/* Label sets, loading: the error context and the JSON field readers every
 * part of the loader uses, so that each error is one line naming the file
 * and the field ("PATH: labels[2].code.value: ...") and only the first one
 * is kept. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "labelset_internal.h"

void um_ls_free_strings(char **v, int n) {
  if (!v) return;
  for (int i = 0; i < n; i++) free(v[i]);
  free(v);
}

int um_ls_ascii_lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

static int is_space(int c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

int um_ls_same_token(const char *a, const char *b) {
  while (is_space((unsigned char)*a)) a++;
  while (is_space((unsigned char)*b)) b++;
  size_t la = strlen(a), lb = strlen(b);
  while (la && is_space((unsigned char)a[la - 1])) la--;
  while (lb && is_space((unsigned char)b[lb - 1])) lb--;
  if (la != lb) return 0;
  for (size_t i = 0; i < la; i++)
    if (um_ls_ascii_lower((unsigned char)a[i]) != um_ls_ascii_lower((unsigned char)b[i])) return 0;
  return 1;
}

int um_ls_blank(const char *s) {
  for (; *s; s++)
    if (!is_space((unsigned char)*s)) return 0;
  return 1;
}

void um_ls_fail(um_ls_ctx *c, const char *field, const char *fmt, ...) {
  if (c->failed) return;
  c->failed = 1;
  char msg[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (field && *field)
    unimed_set_err(c->err, c->errlen, "%s: %s: %s", c->path, field, msg);
  else
    unimed_set_err(c->err, c->errlen, "%s: %s", c->path, msg);
}

void um_ls_oom(um_ls_ctx *c) { um_ls_fail(c, NULL, "out of memory"); }

void um_ls_check_keys(um_ls_ctx *c, const cJSON *obj, const char *field,
                      const char *const *known) {
  for (const cJSON *it = obj->child; it && !c->failed; it = it->next) {
    int ok = 0;
    for (int k = 0; known[k]; k++)
      if (it->string && strcmp(it->string, known[k]) == 0) ok = 1;
    if (!ok) {
      char list[256] = "";
      for (int k = 0; known[k]; k++) {
        strncat(list, k ? ", " : "", sizeof list - strlen(list) - 1);
        strncat(list, known[k], sizeof list - strlen(list) - 1);
      }
      if (field && *field)
        um_ls_fail(c, field, "unknown key \"%s\" (known keys: %s)", it->string ? it->string : "",
                   list);
      else
        um_ls_fail(c, it->string ? it->string : "", "unknown key (known keys: %s)", list);
      return;
    }
    for (const cJSON *p = obj->child; p != it; p = p->next)
      if (strcmp(p->string, it->string) == 0) {
        char f[300];
        snprintf(f, sizeof f, "%s%s%s", field && *field ? field : "", field && *field ? "." : "",
                 it->string);
        um_ls_fail(c, f, "key given twice");
        return;
      }
  }
}

char *um_ls_get_string(um_ls_ctx *c, const cJSON *obj, const char *key, const char *field,
                       int required, size_t maxlen) {
  if (c->failed) return NULL;
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (!v) {
    if (required) um_ls_fail(c, field, "missing (a non-empty string is required)");
    return NULL;
  }
  if (!cJSON_IsString(v) || !v->valuestring) {
    um_ls_fail(c, field, "must be a string");
    return NULL;
  }
  if (um_ls_blank(v->valuestring)) {
    um_ls_fail(c, field, "must not be empty");
    return NULL;
  }
  if (maxlen && strlen(v->valuestring) > maxlen) {
    um_ls_fail(c, field, "\"%s\" is longer than %zu characters", v->valuestring, maxlen);
    return NULL;
  }
  char *s = strdup(v->valuestring);
  if (!s) um_ls_oom(c);
  return s;
}

void um_ls_get_string_array(um_ls_ctx *c, const cJSON *obj, const char *key, const char *field,
                            char ***out, int *n) {
  *out = NULL;
  *n = 0;
  if (c->failed) return;
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (!v) return;
  if (!cJSON_IsArray(v)) {
    um_ls_fail(c, field, "must be an array of strings");
    return;
  }
  int cnt = cJSON_GetArraySize(v);
  if (cnt == 0) return;
  *out = calloc((size_t)cnt, sizeof(char *));
  if (!*out) {
    um_ls_oom(c);
    return;
  }
  int i = 0;
  for (const cJSON *e = v->child; e; e = e->next, i++) {
    char f[300];
    snprintf(f, sizeof f, "%s[%d]", field, i);
    if (!cJSON_IsString(e) || !e->valuestring) {
      um_ls_fail(c, f, "must be a string");
      return;
    }
    if (um_ls_blank(e->valuestring)) {
      um_ls_fail(c, f, "must not be empty");
      return;
    }
    (*out)[i] = strdup(e->valuestring);
    if (!(*out)[i]) {
      um_ls_oom(c);
      return;
    }
    *n = i + 1;
  }
}

double um_ls_get_probability(um_ls_ctx *c, const cJSON *v, const char *field) {
  if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0.0 && v->valuedouble <= 1.0)) {
    um_ls_fail(c, field, "must be a probability, a number from 0 to 1");
    return 0;
  }
  return v->valuedouble;
}
