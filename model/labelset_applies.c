/* Label sets: which images a set applies to ("applies_to": modalities, body
 * parts, SOP classes). Values compare as DICOM writes them: code strings
 * case-insensitively and without their padding spaces, UIDs exactly (a
 * trailing pad byte aside). An attribute the caller does not know (NULL or
 * blank) never excludes a set. */
#include <string.h>

#include "labelset_internal.h"

static int known(const char *s) { return s && !um_ls_blank(s); }

int unimed_label_set_applies(const unimed_label_set *ls, const char *modality,
                             const char *body_part, const char *sop_class_uid) {
  if (!ls) return 0;
  if (ls->n_modalities && known(modality)) {
    int ok = 0;
    for (int i = 0; i < ls->n_modalities && !ok; i++)
      ok = um_ls_same_token(ls->modalities[i], modality);
    if (!ok) return 0;
  }
  if (ls->n_body_parts && known(body_part)) {
    int ok = 0;
    for (int i = 0; i < ls->n_body_parts && !ok; i++)
      ok = um_ls_same_token(ls->body_parts[i], body_part);
    if (!ok) return 0;
  }
  if (ls->n_sop_classes && known(sop_class_uid)) {
    /* UIDs compare exactly (a trailing NUL/space pad byte aside). */
    size_t n = strlen(sop_class_uid);
    while (n && (sop_class_uid[n - 1] == ' ' || sop_class_uid[n - 1] == '\0')) n--;
    int ok = 0;
    for (int i = 0; i < ls->n_sop_classes && !ok; i++)
      ok = strlen(ls->sop_classes[i]) == n && strncmp(ls->sop_classes[i], sop_class_uid, n) == 0;
    if (!ok) return 0;
  }
  return 1;
}
