/* Label sets, loading: the syntax of the codes and identifiers a label set
 * names. A label's code is checked against its coding scheme (a SNOMED CT
 * concept identifier with its Verhoeff check digit, a DICOM (DCM) code
 * value, a 99UNIMED private value) and the applies_to values against what
 * the format allows (code strings, UIDs). Only the syntax is checked here:
 * which images a set applies to is decided in labelset_applies.c. */
#include <stdio.h>
#include <string.h>

#include "labelset_internal.h"

/* Verhoeff check digit, as SNOMED CT identifiers use it. */
static const unsigned char verhoeff_d[10][10] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 2, 3, 4, 0, 6, 7, 8, 9, 5},
    {2, 3, 4, 0, 1, 7, 8, 9, 5, 6}, {3, 4, 0, 1, 2, 8, 9, 5, 6, 7},
    {4, 0, 1, 2, 3, 9, 5, 6, 7, 8}, {5, 9, 8, 7, 6, 0, 4, 3, 2, 1},
    {6, 5, 9, 8, 7, 1, 0, 4, 3, 2}, {7, 6, 5, 9, 8, 2, 1, 0, 4, 3},
    {8, 7, 6, 5, 9, 3, 2, 1, 0, 4}, {9, 8, 7, 6, 5, 4, 3, 2, 1, 0}};
static const unsigned char verhoeff_p[8][10] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 5, 7, 6, 2, 8, 3, 0, 9, 4},
    {5, 8, 0, 3, 7, 9, 6, 1, 4, 2}, {8, 9, 1, 6, 0, 4, 3, 5, 2, 7},
    {9, 4, 5, 3, 1, 2, 6, 8, 7, 0}, {4, 2, 8, 6, 5, 7, 3, 9, 0, 1},
    {2, 7, 9, 3, 8, 0, 6, 4, 1, 5}, {7, 0, 4, 6, 9, 1, 3, 2, 5, 8}};

static int verhoeff_ok(const char *s, size_t n) {
  int c = 0;
  for (size_t i = 0; i < n; i++) c = verhoeff_d[c][verhoeff_p[i % 8][s[n - 1 - i] - '0']];
  return c == 0;
}

static int all_digits(const char *s) {
  if (!*s) return 0;
  for (; *s; s++)
    if (*s < '0' || *s > '9') return 0;
  return 1;
}

/* A modality code value as DICOM's CID 29/33 write it in scheme DCM
 * ("CT", "MR", "OPT"). */
static int modality_token(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 16 || !(s[0] >= 'A' && s[0] <= 'Z')) return 0;
  for (; *s; s++)
    if (!((*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_')) return 0;
  return 1;
}

/* Printable ASCII without spaces, 1..max characters. */
static int plain_token(const char *s, size_t max) {
  size_t n = strlen(s);
  if (n == 0 || n > max) return 0;
  for (; *s; s++)
    if (*s <= ' ' || *s > '~') return 0;
  return 1;
}

void um_ls_check_code(um_ls_ctx *c, const cJSON *obj, const char *field, unimed_code *code) {
  if (c->failed) return;
  if (!obj) {
    um_ls_fail(c, field, "missing (every label needs a code: {\"value\", \"scheme\", \"meaning\"}; "
                         "use a private scheme such as 99UNIMED when no standard code fits)");
    return;
  }
  if (!cJSON_IsObject(obj)) {
    um_ls_fail(c, field, "must be an object {\"value\", \"scheme\", \"meaning\"}");
    return;
  }
  static const char *const keys[] = {"value", "scheme", "meaning", NULL};
  um_ls_check_keys(c, obj, field, keys);
  char f[300];
  snprintf(f, sizeof f, "%s.value", field);
  code->value = um_ls_get_string(c, obj, "value", f, 1, 64);
  snprintf(f, sizeof f, "%s.scheme", field);
  code->scheme = um_ls_get_string(c, obj, "scheme", f, 1, 16);
  snprintf(f, sizeof f, "%s.meaning", field);
  code->meaning = um_ls_get_string(c, obj, "meaning", f, 1, 64);
  if (c->failed) return;
  const char *v = code->value, *s = code->scheme;
  snprintf(f, sizeof f, "%s.scheme", field);
  if (!plain_token(s, 16)) {
    um_ls_fail(c, f, "'%s' is not a coding scheme designator (printable, no spaces, at most 16 "
                     "characters)", s);
    return;
  }
  snprintf(f, sizeof f, "%s.value", field);
  if (strcmp(s, "SCT") == 0) {
    size_t n = strlen(v);
    if (!all_digits(v) || n < 6 || n > 18)
      um_ls_fail(c, f, "'%s' is not a valid SNOMED CT identifier (6 to 18 digits)", v);
    else if (v[0] == '0')
      um_ls_fail(c, f, "'%s' is not a valid SNOMED CT identifier (leading zero)", v);
    else if (!verhoeff_ok(v, n))
      um_ls_fail(c, f, "'%s' is not a valid SNOMED CT identifier (check digit)", v);
    else if (!((v[n - 3] == '0' || v[n - 3] == '1') && v[n - 2] == '0'))
      um_ls_fail(c, f, "'%s' is not a SNOMED CT concept identifier (partition '%c%c'; a concept "
                       "has '00' or '10')", v, v[n - 3], v[n - 2]);
  } else if (strcmp(s, "DCM") == 0) {
    if (!all_digits(v) && !modality_token(v))
      um_ls_fail(c, f, "'%s' is not a DICOM (DCM) code value (digits, or a modality such as "
                       "'CT')", v);
  } else if (strcmp(s, "99UNIMED") == 0) {
    if (!plain_token(v, 16))
      um_ls_fail(c, f, "'%s' is not a valid 99UNIMED code value (printable, no spaces, at most "
                       "16 characters)", v);
  } else {
    if (!plain_token(v, 64))
      um_ls_fail(c, f, "'%s' is not a code value (printable, no spaces)", v);
  }
}

void um_ls_check_applies_values(um_ls_ctx *c, char **v, int n, const char *field, int uid) {
  for (int i = 0; i < n && !c->failed; i++) {
    char f[300];
    snprintf(f, sizeof f, "%s[%d]", field, i);
    const char *s = v[i];
    size_t len = strlen(s);
    int ok = len <= (uid ? 64u : 16u);
    for (const char *p = s; *p && ok; p++)
      ok = uid ? ((*p >= '0' && *p <= '9') || *p == '.')
               : ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                  (*p >= '0' && *p <= '9') || *p == '_' || *p == ' ');
    if (!ok) {
      if (uid)
        um_ls_fail(c, f, "'%s' is not a UID (digits and dots, at most 64 characters)", s);
      else
        um_ls_fail(c, f, "'%s' is not a DICOM code string (letters, digits, '_' and space, at "
                         "most 16 characters)", s);
    }
  }
}
