// An SR document as HTML: DCMTK's own renderer (dsr2html's), after the SR
// was opened through udcm_open_memory like every input (length checks,
// limits, safe Deflated handling).
#include "udcm_sr_html.h"
#include "udcm_internal.h"
#include "unimed_dicom.h"

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmsr/dsrdoc.h"

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>

namespace {

__attribute__((format(printf, 3, 4))) void html_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

}  // namespace

extern "C" int udcm_sr_render_html(const void *buf, size_t len, const char *name, char **html,
                                   size_t *html_len, char *err, size_t errlen)
{
    *html = nullptr;
    if (html_len) *html_len = 0;
    const std::string nm = name ? name : "<memory>";
    if (!buf || len == 0) {
        html_err(err, errlen, "%s: empty buffer", nm.c_str());
        return -1;
    }
    udcm_handle *h = udcm_open_memory(buf, len, nm.c_str(), nullptr, err, errlen);
    if (!h) return -1;
    int rc = -1;
    try {
        DSRDocument doc;
        OFCondition c = doc.read(*h->ds);
        if (c.bad()) {
            html_err(err, errlen, "%s: not a structured report DCMTK can read (%s)", nm.c_str(), c.text());
        } else {
            std::ostringstream out;
            // Children inline: each probability next to its finding, not in an annex.
            c = doc.renderHTML(out, DSRTypes::HF_renderDcmtkFootnote | DSRTypes::HF_alwaysExpandChildrenInline);
            if (c.bad()) {
                html_err(err, errlen, "%s: cannot render the report (%s)", nm.c_str(), c.text());
            } else {
                const std::string s = out.str();
                *html = static_cast<char *>(malloc(s.size() + 1));
                if (!*html) {
                    html_err(err, errlen, "%s: out of memory", nm.c_str());
                } else {
                    memcpy(*html, s.c_str(), s.size() + 1);
                    if (html_len) *html_len = s.size();
                    rc = 0;
                }
            }
        }
    } catch (const std::exception &e) {
        html_err(err, errlen, "%s: %s", nm.c_str(), e.what());
    }
    udcm_close(h);
    return rc;
}
