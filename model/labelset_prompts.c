/* Label sets, loading: prompt templates. A template holds one "{}" where a
 * label's name (or a synonym) goes; a label's own prompts are used as
 * written. Expansion happens at load, so a loaded set lists every prompt
 * and consumers never re-derive them (docs/LABEL_SETS.md, "Labels"). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "labelset_internal.h"

static int count_slots(const char *t) {
  int n = 0;
  for (const char *p = strstr(t, "{}"); p; p = strstr(p + 2, "{}")) n++;
  return n;
}

void um_ls_check_templates(um_ls_ctx *c, char **t, int n, const char *field) {
  for (int i = 0; i < n && !c->failed; i++) {
    char f[300];
    snprintf(f, sizeof f, "%s[%d]", field, i);
    int k = count_slots(t[i]);
    if (k == 0)
      um_ls_fail(c, f, "\"%s\" has no \"{}\" (each template needs exactly one, where the label "
                       "name goes)", t[i]);
    else if (k > 1)
      um_ls_fail(c, f, "\"%s\" has %d \"{}\" (each template needs exactly one)", t[i], k);
  }
}

void um_ls_check_own_prompts(um_ls_ctx *c, char **p, int n, const char *field) {
  for (int i = 0; i < n && !c->failed; i++)
    if (strstr(p[i], "{}")) {
      char f[300];
      snprintf(f, sizeof f, "%s[%d]", field, i);
      um_ls_fail(c, f, "\"%s\" contains \"{}\": a label's own prompts are used as written "
                       "(\"{}\" belongs in templates)", p[i]);
    }
}

char *unimed_label_template_apply(const char *tmpl, const char *name) {
  const char *slot = strstr(tmpl, "{}");
  if (!slot) return strdup(tmpl);
  size_t pre = (size_t)(slot - tmpl), nl = strlen(name), post = strlen(slot + 2);
  char *s = malloc(pre + nl + post + 1);
  if (!s) return NULL;
  memcpy(s, tmpl, pre);
  memcpy(s + pre, name, nl);
  memcpy(s + pre + nl, slot + 2, post + 1);
  return s;
}

void um_ls_expand(um_ls_ctx *c, char **templates, int n_templates, const char *name, char **syn,
                  int n_syn, char ***out, int *n) {
  *out = NULL;
  *n = 0;
  if (c->failed || n_templates == 0) return;
  int total = n_templates * (1 + n_syn);
  *out = calloc((size_t)total, sizeof(char *));
  if (!*out) {
    um_ls_oom(c);
    return;
  }
  for (int s = 0; s <= n_syn; s++)
    for (int t = 0; t < n_templates; t++) {
      char *p = unimed_label_template_apply(templates[t], s == 0 ? name : syn[s - 1]);
      if (!p) {
        um_ls_oom(c);
        return;
      }
      (*out)[(*n)++] = p;
    }
}
