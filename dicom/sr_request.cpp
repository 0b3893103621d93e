// UniMed for Orthanc — SR writer: request checks and the helpers every part of the writer uses.
// The parts: sr_internal.h.

#include "sr_internal.h"

#include <cstdarg>
#include <cstdio>
#include <cstring>

namespace udcm_sr {

void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

[[noreturn]] void fail(const std::string &msg) { throw SrError{msg}; }

void check(const OFCondition &c, const std::string &what)
{
    if (c.bad()) fail(what + ": " + c.text());
}

bool empty(const char *s) { return s == nullptr || *s == '\0'; }

DSRCodedEntryValue make_code(const char *v, const char *s, const char *m, const std::string &field)
{
    DSRCodedEntryValue c;
    OFCondition st = c.setCode(v, s, m);
    if (st.bad()) fail(field + ": invalid code (" + std::string(v) + ", " + s + ", \"" + m + "\"): " + st.text());
    return c;
}

DSRCodedEntryValue make_code(const udcm_sr_code &c, const std::string &field)
{
    return make_code(c.value, c.scheme, c.meaning, field);
}

/* A Long String (LO) attribute holds at most 64 characters; a longer model
 * name or version (the demo model's name is 66 bytes) would make the report
 * invalid.  The attributes get the value cut at 64 bytes on a UTF-8
 * character boundary; the observer context's TEXT items, which have no such
 * limit, keep it whole.  DCMTK's setters check the length but do not cut. */
std::string long_string_value(const std::string &v)
{
    if (v.size() <= 64) return v;
    size_t n = 64;
    while (n > 0 && ((unsigned char)v[n] & 0xC0) == 0x80) n--; /* not inside a character */
    return v.substr(0, n);
}

static void need(const char *v, const std::string &field)
{
    if (empty(v)) fail(field + ": missing or empty");
}

static void check_code(const udcm_sr_code &c, const std::string &field)
{
    need(c.value, field + ".value");
    need(c.scheme, field + ".scheme");
    need(c.meaning, field + ".meaning");
    if (strlen(c.scheme) > 16) fail(field + ".scheme: longer than 16 characters");
    if (strlen(c.meaning) > 64) fail(field + ".meaning: longer than 64 characters");
}

void check_uid(const char *v, const std::string &field)
{
    need(v, field);
    size_t n = strlen(v);
    if (n > 64) fail(field + ": UID longer than 64 characters");
    for (size_t i = 0; i < n; i++)
        if (!((v[i] >= '0' && v[i] <= '9') || v[i] == '.'))
            fail(field + ": not a UID: \"" + v + "\"");
}

// Checked before anything is built, so that an error names the request
// field (DCMTK's own checks would name only the content item).
void check_request(const udcm_sr_request *req)
{
    if (!req) fail("request: NULL");
    need(req->model_name, "request.model_name");
    need(req->model_version, "request.model_version");
    need(req->model_hash, "request.model_hash");
    if (!empty(req->device_observer_uid)) check_uid(req->device_observer_uid, "request.device_observer_uid");
    if (req->procedure.value) check_code(req->procedure, "request.procedure");
    if (req->content_datetime) {
        const char *d = req->content_datetime;
        bool ok = strlen(d) == 14;
        for (size_t i = 0; ok && i < 14; i++) ok = d[i] >= '0' && d[i] <= '9';
        if (!ok) fail("request.content_datetime: expected YYYYMMDDHHMMSS");
    }
    if (req->n_groups == 0 || !req->groups) fail("request.groups: no label set");
    for (size_t i = 0; i < req->n_inputs; i++)
        check_uid(req->input_sop_instance_uids ? req->input_sop_instance_uids[i] : nullptr,
                  "request.input_sop_instance_uids[" + std::to_string(i) + "]");
    if (empty(req->predecessor_sop_instance_uid) != empty(req->predecessor_series_uid))
        fail("request.predecessor_series_uid / predecessor_sop_instance_uid: give both or neither");
    if (!empty(req->predecessor_sop_instance_uid)) {
        check_uid(req->predecessor_series_uid, "request.predecessor_series_uid");
        check_uid(req->predecessor_sop_instance_uid, "request.predecessor_sop_instance_uid");
    }
    for (size_t g = 0; g < req->n_groups; g++) {
        const udcm_sr_group &G = req->groups[g];
        std::string f = "request.groups[" + std::to_string(g) + "]";
        need(G.label_set_name, f + ".label_set_name");
        need(G.label_set_version, f + ".label_set_version");
        need(G.label_set_hash, f + ".label_set_hash");
        if (!empty(G.series_uid)) check_uid(G.series_uid, f + ".series_uid");
        if (G.n_findings == 0 || !G.findings) fail(f + ".findings: empty");
        if (G.n_images == 0 || !G.images) fail(f + ".images: empty");
        for (size_t i = 0; i < G.n_findings; i++) {
            std::string ff = f + ".findings[" + std::to_string(i) + "]";
            check_code(G.findings[i].code, ff + ".code");
            double p = G.findings[i].probability;
            if (!(p >= 0.0 && p <= 1.0)) fail(ff + ".probability: not in [0, 1]");
        }
        for (size_t i = 0; i < G.n_images; i++) {
            std::string fi = f + ".images[" + std::to_string(i) + "]";
            const udcm_sr_image_ref &R = G.images[i];
            if (!empty(R.study_uid)) check_uid(R.study_uid, fi + ".study_uid");
            check_uid(R.series_uid, fi + ".series_uid");
            check_uid(R.sop_class_uid, fi + ".sop_class_uid");
            check_uid(R.sop_instance_uid, fi + ".sop_instance_uid");
        }
    }
}

}  // namespace udcm_sr
