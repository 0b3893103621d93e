/* UniMed for Orthanc — an SR document as readable HTML (DCMTK's
 * DSRDocument::renderHTML, the renderer of dsr2html). */
#ifndef UDCM_SR_HTML_H
#define UDCM_SR_HTML_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Renders the SR held in buf (Part-10 bytes) as an HTML page.
 * *html: malloc'd, NUL-terminated (free with free()). 0, or -1 with a
 * message naming `name` in err. */
int udcm_sr_render_html(const void *buf, size_t len, const char *name, char **html,
                        size_t *html_len, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
