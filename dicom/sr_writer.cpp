// UniMed for Orthanc — TID 1500 Structured Report writer (DCMTK dcmsr).
// Public API: unimed_dicom.h (Structured Reports).  The content tree is documented in docs/REPORTS.md.

#include "unimed_dicom.h"
#include "udcm_internal.h"

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "dcmtk/dcmdata/dcistrmb.h"
#include "dcmtk/dcmdata/dcostrmb.h"
#include "dcmtk/dcmdata/dcspchrs.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmdata/dcvrda.h"
#include "dcmtk/dcmdata/dcvrtm.h"
#include "dcmtk/dcmsr/dsrdoc.h"
#include "dcmtk/dcmsr/codes/dcm.h"

#include <cJSON.h>
#include <libxml/parser.h>
#include <libxml/xmlschemas.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <memory>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

namespace {

// ---- errors ---------------------------------------------------------------

void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

struct SrError {
    std::string msg;
};

[[noreturn]] void fail(const std::string &msg) { throw SrError{msg}; }

void check(const OFCondition &c, const std::string &what)
{
    if (c.bad()) fail(what + ": " + c.text());
}

bool empty(const char *s) { return s == nullptr || *s == '\0'; }

// ---- SHA-1 (FIPS 180-4), for the name-based UIDs ---------------------------

struct Sha1 {
    uint32_t h[5] = {0x67452301u, 0xEFCDAB89u, 0x98BADCFEu, 0x10325476u, 0xC3D2E1F0u};
    uint8_t block[64];
    size_t used = 0;
    uint64_t total = 0;

    static uint32_t rol(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

    void compress(const uint8_t *p)
    {
        uint32_t w[80];
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
                   (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
        for (int i = 16; i < 80; i++) w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 80; i++) {
            uint32_t f, k;
            if (i < 20) { f = (b & c) | (~b & d); k = 0x5A827999u; }
            else if (i < 40) { f = b ^ c ^ d; k = 0x6ED9EBA1u; }
            else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8F1BBCDCu; }
            else { f = b ^ c ^ d; k = 0xCA62C1D6u; }
            uint32_t t = rol(a, 5) + f + e + k + w[i];
            e = d; d = c; c = rol(b, 30); b = a; a = t;
        }
        h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
    }

    void update(const void *data, size_t len)
    {
        const uint8_t *p = static_cast<const uint8_t *>(data);
        total += len;
        while (len > 0) {
            size_t n = 64 - used;
            if (n > len) n = len;
            memcpy(block + used, p, n);
            used += n; p += n; len -= n;
            if (used == 64) { compress(block); used = 0; }
        }
    }

    void final(uint8_t out[20])
    {
        uint64_t bits = total * 8;
        uint8_t pad = 0x80;
        update(&pad, 1);
        uint8_t zero = 0;
        while (used != 56) update(&zero, 1);
        uint8_t len[8];
        for (int i = 0; i < 8; i++) len[i] = (uint8_t)(bits >> (56 - 8 * i));
        update(len, 8);
        for (int i = 0; i < 5; i++) {
            out[4 * i] = (uint8_t)(h[i] >> 24); out[4 * i + 1] = (uint8_t)(h[i] >> 16);
            out[4 * i + 2] = (uint8_t)(h[i] >> 8); out[4 * i + 3] = (uint8_t)h[i];
        }
    }
};

// Namespace UUID of UniMed for Orthanc SR UIDs (random, fixed forever).
const uint8_t kUidNamespace[16] = {0xdc, 0x1e, 0x2d, 0x6e, 0x9f, 0xc9, 0x49, 0x43,
                                   0x8f, 0x68, 0xd2, 0xa9, 0xe9, 0x88, 0xb2, 0xa1};

std::string uid_from_name(const std::string &name)
{
    char out[65];
    udcm_sr_uid_from_name(name.data(), name.size(), out);
    return out;
}

// ---- request checks -------------------------------------------------------

void need(const char *v, const std::string &field)
{
    if (empty(v)) fail(field + ": missing or empty");
}

void check_code(const udcm_sr_code &c, const std::string &field)
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

// ---- UIDs -----------------------------------------------------------------

struct Uids {
    std::string series, sop;
    std::vector<std::string> tracking;
};

// Canonical names (docs/REPORTS.md, "UID derivation").
std::string group_key(const udcm_sr_group &G)
{
    return std::string("set=") + G.label_set_name + "|" + G.label_set_version + "|" +
           G.label_set_hash + "|" + (G.series_uid ? G.series_uid : "") + "\n";
}

Uids derive(const udcm_sr_request *req, const std::string &study)
{
    Uids u;
    std::string base = std::string("study=") + study + "\nmodel=" + req->model_hash + "\n";
    u.series = uid_from_name("unimed-sr-series\n" + base);
    std::string inst = "unimed-sr-instance\n" + base;
    for (size_t g = 0; g < req->n_groups; g++) inst += group_key(req->groups[g]);
    // The analysed instances, sorted: a study that gains or loses an
    // instance gets a new report (docs/REPORTS.md, "Versions").
    std::vector<std::string> inputs;
    for (size_t i = 0; i < req->n_inputs; i++) inputs.push_back(req->input_sop_instance_uids[i]);
    std::sort(inputs.begin(), inputs.end());
    inputs.erase(std::unique(inputs.begin(), inputs.end()), inputs.end());
    for (const std::string &in : inputs) inst += "input=" + in + "\n";
    // A comment is content too (a model card that starts or stops listing a
    // set changes the report); without comments the names stay as they were.
    for (size_t g = 0; g < req->n_groups; g++)
        if (!empty(req->groups[g].comment))
            inst += "comment[" + std::to_string(g) + "]=" + req->groups[g].comment + "\n";
    u.sop = uid_from_name(inst);
    for (size_t g = 0; g < req->n_groups; g++)
        u.tracking.push_back(uid_from_name("unimed-sr-tracking\n" + base + group_key(req->groups[g])));
    return u;
}

// ---- source ---------------------------------------------------------------

// The source goes through udcm_open_file / udcm_open_memory: the same length
// checks, limits and safe Deflated handling as any input. We keep a copy of
// its data set.
std::unique_ptr<DcmDataset> load_source(const udcm_sr_request *req, std::string &name)
{
    OFCondition c;
    char err[512] = "";
    udcm_handle *h = nullptr;
    if (!empty(req->source_path)) {
        name = req->source_path;
        h = udcm_open_file(req->source_path, nullptr, err, sizeof err);
    } else if (req->source_buffer && req->source_len > 0) {
        name = "<source buffer>";
        h = udcm_open_memory(req->source_buffer, req->source_len, name.c_str(), nullptr, err, sizeof err);
    } else {
        fail("request.source_path: no source instance (path or buffer) given");
    }
    if (!h) fail(std::string("cannot read source instance: ") + err);
    std::unique_ptr<DcmDataset> copy(new DcmDataset(*h->ds));
    // Values over 4 KiB are still in the handle's file (for a buffer, an
    // anonymous file that closes with the handle): load them now, the pixels
    // (never copied into the report) excepted.
    for (const DcmTagKey &bulk : {DCM_PixelData, DCM_FloatPixelData, DCM_DoubleFloatPixelData})
        copy->findAndDeleteElement(bulk, OFTrue /*all levels*/);
    c = copy->loadAllDataIntoMemory();
    udcm_close(h);
    if (c.bad()) fail(name + ": cannot read the source's attributes: " + c.text());
    DcmDataset *ds = copy.get();
    OFString study;
    if (ds->findAndGetOFString(DCM_StudyInstanceUID, study).bad() || study.empty())
        fail(name + ": source has no Study Instance UID");
    // Everything goes out as UTF-8 (our texts use it).
    OFString cs;
    ds->findAndGetOFStringArray(DCM_SpecificCharacterSet, cs);
    if (!cs.empty() && cs != "ISO_IR 192" && cs != "ISO_IR 6") {
        c = ds->convertToUTF8();
        if (c.bad()) fail(name + ": cannot convert Specific Character Set \"" + std::string(cs.c_str()) +
                          "\" to UTF-8: " + c.text());
    }
    return copy;
}

std::string ds_string(DcmItem *ds, const DcmTagKey &key)
{
    OFString v;
    if (ds->findAndGetOFStringArray(key, v).good()) return v.c_str();
    return "";
}

// ---- the document -----------------------------------------------------------

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

// Adds content items as the last child of a given node.
struct TreeBuilder {
    DSRDocumentTree &t;

    size_t add(size_t parent, DSRTypes::E_RelationshipType rel, DSRTypes::E_ValueType vt,
               const DSRCodedEntryValue *concept_code)
    {
        if (t.gotoNode(parent) == 0) fail("SR tree: lost node");
        size_t id;
        if (t.goDown() != 0) {
            while (t.gotoNext() != 0) {}
            id = t.addContentItem(rel, vt, DSRTypes::AM_afterCurrent);
        } else {
            id = t.addContentItem(rel, vt, DSRTypes::AM_belowCurrent);
        }
        if (id == 0)
            fail(std::string("SR tree: cannot add ") + DSRTypes::valueTypeToDefinedTerm(vt) +
                 " (" + DSRTypes::relationshipTypeToDefinedTerm(rel) + ")" +
                 (concept_code ? " \"" + std::string(concept_code->getCodeMeaning().c_str()) + "\"" : ""));
        if (concept_code) check(t.getCurrentContentItem().setConceptName(*concept_code), "SR tree: concept name");
        return id;
    }
    DSRContentItem &item() { return t.getCurrentContentItem(); }

    size_t code(size_t parent, DSRTypes::E_RelationshipType rel, const DSRCodedEntryValue &concept_code,
                const DSRCodedEntryValue &value)
    {
        size_t id = add(parent, rel, DSRTypes::VT_Code, &concept_code);
        check(item().setCodeValue(value), "SR tree: code value of " + std::string(concept_code.getCodeMeaning().c_str()));
        return id;
    }
    size_t text(size_t parent, DSRTypes::E_RelationshipType rel, const DSRCodedEntryValue &concept_code,
                const std::string &value)
    {
        size_t id = add(parent, rel, DSRTypes::VT_Text, &concept_code);
        check(item().setStringValue(value.c_str()), "SR tree: text of " + std::string(concept_code.getCodeMeaning().c_str()));
        return id;
    }
    size_t uidref(size_t parent, DSRTypes::E_RelationshipType rel, const DSRCodedEntryValue &concept_code,
                  const std::string &value)
    {
        size_t id = add(parent, rel, DSRTypes::VT_UIDRef, &concept_code);
        check(item().setStringValue(value.c_str()), "SR tree: UID of " + std::string(concept_code.getCodeMeaning().c_str()));
        return id;
    }
    size_t container(size_t parent, DSRTypes::E_RelationshipType rel, const DSRCodedEntryValue &concept_code)
    {
        size_t id = add(parent, rel, DSRTypes::VT_Container, &concept_code);
        check(item().setContinuityOfContent(DSRTypes::COC_Separate), "SR tree: continuity");
        return id;
    }
    size_t image(size_t parent, DSRTypes::E_RelationshipType rel, const DSRCodedEntryValue *concept_code,
                 const std::string &sop_class, const std::string &sop_inst, const std::set<uint32_t> &frames)
    {
        size_t id = add(parent, rel, DSRTypes::VT_Image, concept_code);
        DSRImageReferenceValue ref(sop_class.c_str(), sop_inst.c_str());
        for (uint32_t f : frames)
            if (f > 0) ref.getFrameList().addItem((Sint32)f);
        check(item().setImageReference(ref), "SR tree: image reference " + sop_inst);
        return id;
    }
};

struct ImageKey {
    std::string study, series, sop_class, sop;
    bool operator<(const ImageKey &o) const
    {
        return std::tie(study, series, sop) < std::tie(o.study, o.series, o.sop);
    }
};

// Referenced Frame Number is allowed only for multi-frame IODs (PS3.3
// C.17.3.2.1; dciodvfy checks it). A multi-frame object of a single-frame
// SOP class (e.g. Secondary Capture with NumberOfFrames) is referenced whole.
bool is_multiframe_sop_class(const std::string &uid)
{
    static const char *const prefixes_exact[] = {
        "1.2.840.10008.5.1.4.1.1.2.1",     // Enhanced CT
        "1.2.840.10008.5.1.4.1.1.2.2",     // Legacy Converted Enhanced CT
        "1.2.840.10008.5.1.4.1.1.3.1",     // US Multi-frame
        "1.2.840.10008.5.1.4.1.1.4.1",     // Enhanced MR
        "1.2.840.10008.5.1.4.1.1.4.3",     // Enhanced MR Color
        "1.2.840.10008.5.1.4.1.1.4.4",     // Legacy Converted Enhanced MR
        "1.2.840.10008.5.1.4.1.1.6.2",     // Enhanced US Volume
        "1.2.840.10008.5.1.4.1.1.7.1", "1.2.840.10008.5.1.4.1.1.7.2",  // Multi-frame SC
        "1.2.840.10008.5.1.4.1.1.7.3", "1.2.840.10008.5.1.4.1.1.7.4",
        "1.2.840.10008.5.1.4.1.1.12.1", "1.2.840.10008.5.1.4.1.1.12.1.1",  // XA, Enhanced XA
        "1.2.840.10008.5.1.4.1.1.12.2", "1.2.840.10008.5.1.4.1.1.12.2.1",  // XRF
        "1.2.840.10008.5.1.4.1.1.13.1.1", "1.2.840.10008.5.1.4.1.1.13.1.3",  // 3D XA, tomosynthesis
        "1.2.840.10008.5.1.4.1.1.20",      // NM
        "1.2.840.10008.5.1.4.1.1.77.1.1.1", "1.2.840.10008.5.1.4.1.1.77.1.2.1",  // video
        "1.2.840.10008.5.1.4.1.1.77.1.4.1", "1.2.840.10008.5.1.4.1.1.77.1.5.4",
        "1.2.840.10008.5.1.4.1.1.77.1.6",  // VL Whole Slide Microscopy
        "1.2.840.10008.5.1.4.1.1.128.1", "1.2.840.10008.5.1.4.1.1.130",  // PET legacy/enhanced
        "1.2.840.10008.5.1.4.1.1.481.1", "1.2.840.10008.5.1.4.1.1.481.2",  // RT image, dose
    };
    for (const char *p : prefixes_exact)
        if (uid == p) return true;
    return false;
}

// Images of a list, deduplicated per instance, frames merged; first-seen order.
std::vector<std::pair<ImageKey, std::set<uint32_t>>> collect_images(const udcm_sr_image_ref *refs, size_t n,
                                                                      const std::string &study)
{
    std::vector<std::pair<ImageKey, std::set<uint32_t>>> out;
    std::map<ImageKey, size_t> index;
    for (size_t i = 0; i < n; i++) {
        ImageKey k{empty(refs[i].study_uid) ? study : refs[i].study_uid, refs[i].series_uid,
                   refs[i].sop_class_uid, refs[i].sop_instance_uid};
        auto it = index.find(k);
        size_t at;
        if (it == index.end()) {
            at = out.size();
            index[k] = at;
            out.push_back({k, {}});
        } else {
            at = it->second;
            if (out[at].first.sop_class != k.sop_class)
                fail("images: " + k.sop + " referenced with two SOP classes");
        }
        // 0 = whole instance: the whole instance wins over single frames.
        if (refs[i].frame == 0) out[at].second.insert(0);
        else out[at].second.insert(refs[i].frame);
    }
    for (auto &e : out)
        if (e.second.count(0) || !is_multiframe_sop_class(e.first.sop_class)) e.second.clear();
    return out;
}

std::string ds_number(double v)
{
    // DS holds 16 characters; the exact double goes to Floating Point Value.
    char buf[32];
    for (int prec = 15; prec >= 1; prec--) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strlen(buf) <= 16) break;
    }
    return buf;
}

void now_strings(const udcm_sr_request *req, std::string &date, std::string &time_s)
{
    if (req->content_datetime) {
        date.assign(req->content_datetime, 8);
        time_s.assign(req->content_datetime + 8, 6);
        return;
    }
    time_t t = ::time(nullptr);
    struct tm tmv;
    localtime_r(&t, &tmv);
    char d[16], h[16];
    strftime(d, sizeof d, "%Y%m%d", &tmv);
    strftime(h, sizeof h, "%H%M%S", &tmv);
    date = d;
    time_s = h;
}

const char *kDefaultSeriesDescription = "UniMed AI findings \xE2\x80\x94 research use only";
const char *kDefaultManufacturer = "UniMed for Orthanc";

/* A Long String (LO) attribute holds at most 64 characters; a longer model
 * name or version (the demo model's name is 66 bytes) would make the report
 * invalid.  The attributes get the value cut at 64 bytes on a UTF-8
 * character boundary; the observer context's TEXT items, which have no such
 * limit, keep it whole. */
std::string long_string_value(const std::string &v)
{
    if (v.size() <= 64) return v;
    size_t n = 64;
    while (n > 0 && ((unsigned char)v[n] & 0xC0) == 0x80) n--; /* not inside a character */
    return v.substr(0, n);
}

std::string device_uid(const udcm_sr_request *req)
{
    if (!empty(req->device_observer_uid)) return req->device_observer_uid;
    return uid_from_name(std::string("unimed-sr-device\nname=") + req->model_name + "\nmodel=" + req->model_hash + "\n");
}

// ---- JSON -------------------------------------------------------------------

cJSON *code_json(const char *v, const char *s, const char *m)
{
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "value", v);
    cJSON_AddStringToObject(c, "scheme", s);
    cJSON_AddStringToObject(c, "meaning", m);
    return c;
}

std::string findings_json(const udcm_sr_request *req, const std::string &study, const std::string &sop,
                          const std::string &series)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "study", study.c_str());
    cJSON_AddStringToObject(root, "sr_sop_instance", sop.c_str());
    cJSON_AddStringToObject(root, "sr_series", series.c_str());
    cJSON_AddStringToObject(root, "completion", req->complete ? "COMPLETE" : "PARTIAL");
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "name", req->model_name);
    cJSON_AddStringToObject(model, "version", req->model_version);
    cJSON_AddStringToObject(model, "hash", req->model_hash);
    cJSON *sets = cJSON_AddArrayToObject(root, "label_sets");
    std::vector<udcm_sr_image_ref> all;
    for (size_t g = 0; g < req->n_groups; g++) {
        const udcm_sr_group &G = req->groups[g];
        cJSON *s = cJSON_CreateObject();
        cJSON_AddStringToObject(s, "name", G.label_set_name);
        cJSON_AddStringToObject(s, "version", G.label_set_version);
        cJSON_AddStringToObject(s, "hash", G.label_set_hash);
        if (!empty(G.series_uid)) cJSON_AddStringToObject(s, "series", G.series_uid);
        if (!empty(G.comment)) {
            cJSON *cs = cJSON_AddArrayToObject(s, "comments");
            cJSON_AddItemToArray(cs, cJSON_CreateString(G.comment));
        }
        cJSON *fs = cJSON_AddArrayToObject(s, "findings");
        for (size_t i = 0; i < G.n_findings; i++) {
            const udcm_sr_finding &F = G.findings[i];
            cJSON *f = cJSON_CreateObject();
            cJSON_AddStringToObject(f, "label", empty(F.label) ? F.code.meaning : F.label);
            cJSON_AddItemToObject(f, "code", code_json(F.code.value, F.code.scheme, F.code.meaning));
            cJSON_AddNumberToObject(f, "probability", F.probability);
            cJSON_AddItemToArray(fs, f);
        }
        cJSON_AddItemToArray(sets, s);
        all.insert(all.end(), G.images, G.images + G.n_images);
    }
    cJSON *imgs = cJSON_AddArrayToObject(root, "images");
    for (auto &e : collect_images(all.data(), all.size(), study)) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "study", e.first.study.c_str());
        cJSON_AddStringToObject(o, "series", e.first.series.c_str());
        cJSON_AddStringToObject(o, "sop_class", e.first.sop_class.c_str());
        cJSON_AddStringToObject(o, "sop_instance", e.first.sop.c_str());
        cJSON *fr = cJSON_AddArrayToObject(o, "frames");
        for (uint32_t f : e.second) cJSON_AddItemToArray(fr, cJSON_CreateNumber(f));
        cJSON_AddItemToArray(imgs, o);
    }
    char *txt = cJSON_Print(root);
    cJSON_Delete(root);
    if (!txt) fail("JSON: out of memory");
    std::string s = txt;
    free(txt);
    return s + "\n";
}

void write_text_file(const char *path, const std::string &data)
{
    FILE *f = fopen(path, "wb");
    if (!f) fail(std::string(path) + ": cannot create: " + strerror(errno));
    bool ok = fwrite(data.data(), 1, data.size(), f) == data.size();
    ok = (fclose(f) == 0) && ok;
    if (!ok) fail(std::string(path) + ": write failed");
}

// ---- main -------------------------------------------------------------------

void write_sr(const udcm_sr_request *req, const char *dcm_path, uint8_t **dcm_buf, size_t *dcm_len,
              const char *xml_path, const char *json_path, char *sop_out)
{
    check_request(req);
    std::string srcname;
    std::unique_ptr<DcmDataset> srcds = load_source(req, srcname);
    DcmDataset *src = srcds.get();
    const std::string study = ds_string(src, DCM_StudyInstanceUID);
    const Uids uids = derive(req, study);
    std::string date, time_s;
    now_strings(req, date, time_s);

    DSRDocument doc(DSRTypes::DT_ComprehensiveSR);
    check(doc.readStudyData(*src), srcname + ": patient/study modules");
    check(doc.setSpecificCharacterSetType(DSRTypes::CS_UTF8), "Specific Character Set");
    doc.createNewSeries();

    const std::string manufacturer = empty(req->manufacturer) ? kDefaultManufacturer : req->manufacturer;
    const std::string software = empty(req->software_version) ? req->model_version : req->software_version;
    const std::string model_label = std::string(req->model_name) + " " + req->model_version;
    char num[16];
    snprintf(num, sizeof num, "%d", req->series_number > 0 ? req->series_number : 9901);
    check(doc.setSeriesDescription(empty(req->series_description) ? kDefaultSeriesDescription
                                                                  : req->series_description),
          "request.series_description");
    check(doc.setSeriesNumber(num), "request.series_number");
    char instance_number[16];
    snprintf(instance_number, sizeof instance_number, "%d",
             req->instance_number > 0 ? req->instance_number : 1);
    check(doc.setInstanceNumber(instance_number), "Instance Number");
    check(doc.setManufacturer(long_string_value(manufacturer).c_str()), "request.manufacturer");
    check(doc.setManufacturerModelName(long_string_value(model_label).c_str()), "request.model_name");
    check(doc.setSoftwareVersions(long_string_value(software).c_str()), "request.software_version");
    check(doc.setContentDate(date.c_str()), "Content Date");
    check(doc.setContentTime(time_s.c_str()), "Content Time");
    check(doc.setSeriesDate(date.c_str()), "Series Date");
    check(doc.setSeriesTime(time_s.c_str()), "Series Time");
    if (req->complete) check(doc.completeDocument(), "Completion Flag");
    if (!empty(req->predecessor_sop_instance_uid))
        check(doc.getPredecessorDocuments().addItem(study.c_str(), req->predecessor_series_uid,
                                                    UID_ComprehensiveSRStorage,
                                                    req->predecessor_sop_instance_uid),
              "Predecessor Documents Sequence");

    // Procedure reported: request, else the source's Procedure Code Sequence, else generic.
    DSRCodedEntryValue procedure;
    if (req->procedure.value) {
        procedure = make_code(req->procedure, "request.procedure");
    } else {
        DcmItem *pc = nullptr;
        if (src->findAndGetSequenceItem(DCM_ProcedureCodeSequence, pc, 0).good() && pc) {
            DSRCodedEntryValue c;
            if (c.readSequence(*src, DCM_ProcedureCodeSequence, "3").good() && c.isValid()) procedure = c;
        }
        if (!procedure.isValid()) procedure = make_code("363679005", "SCT", "Imaging procedure", "procedure");
    }

    // ---- content tree (docs/REPORTS.md)
    DSRDocumentTree &tree = doc.getTree();
    TreeBuilder b{tree};
    size_t root = tree.addContentItem(DSRTypes::RT_isRoot, DSRTypes::VT_Container);
    if (root == 0) fail("SR tree: cannot add the root container");
    check(tree.getCurrentContentItem().setConceptName(CODE_DCM_ImagingMeasurementReport), "root");
    check(tree.getCurrentContentItem().setContinuityOfContent(DSRTypes::COC_Separate), "root");
    check(tree.setTemplateIdentification("1500", "DCMR"), "root template");

    // TID 1204 language
    size_t lang = b.code(root, DSRTypes::RT_hasConceptMod, CODE_DCM_LanguageOfContentItemAndDescendants,
                         make_code("en", "RFC5646", "English", "language"));
    b.code(lang, DSRTypes::RT_hasConceptMod, CODE_DCM_CountryOfLanguage,
           make_code("US", "ISO3166_1", "United States", "country"));
    // TID 1002 observer context: device
    const std::string dev_uid = device_uid(req);
    b.code(root, DSRTypes::RT_hasObsContext, CODE_DCM_ObserverType, CODE_DCM_Device);
    b.uidref(root, DSRTypes::RT_hasObsContext, CODE_DCM_DeviceObserverUID, dev_uid);
    b.text(root, DSRTypes::RT_hasObsContext, CODE_DCM_DeviceObserverName,
           empty(req->device_observer_name) ? req->model_name : req->device_observer_name);
    b.text(root, DSRTypes::RT_hasObsContext, CODE_DCM_DeviceObserverManufacturer, manufacturer);
    b.text(root, DSRTypes::RT_hasObsContext, CODE_DCM_DeviceObserverModelName, model_label);
    // Procedure reported
    b.code(root, DSRTypes::RT_hasConceptMod, CODE_DCM_ProcedureReported, procedure);

    // TID 1600 Image Library: one group per source series
    std::vector<udcm_sr_image_ref> all;
    for (size_t g = 0; g < req->n_groups; g++)
        all.insert(all.end(), req->groups[g].images, req->groups[g].images + req->groups[g].n_images);
    auto library = collect_images(all.data(), all.size(), study);
    size_t lib = b.container(root, DSRTypes::RT_contains, CODE_DCM_ImageLibrary);
    {
        std::vector<std::string> series_order;
        std::map<std::string, std::vector<size_t>> by_series;
        for (size_t i = 0; i < library.size(); i++) {
            const std::string &s = library[i].first.series;
            if (!by_series.count(s)) series_order.push_back(s);
            by_series[s].push_back(i);
        }
        for (const std::string &s : series_order) {
            size_t grp = b.container(lib, DSRTypes::RT_contains, CODE_DCM_ImageLibraryGroup);
            for (size_t i : by_series[s])
                b.image(grp, DSRTypes::RT_contains, nullptr, library[i].first.sop_class, library[i].first.sop,
                        library[i].second);
        }
    }

    // Imaging Measurements: one TID 1501 group per label set
    size_t meas = b.container(root, DSRTypes::RT_contains, CODE_DCM_ImagingMeasurements);
    const DSRCodedEntryValue unit_none = make_code("1", "UCUM", "no units", "unit");
    const DSRCodedEntryValue probability_concept = CODE_DCM_Probability;
    const DSRCodedEntryValue source_concept = CODE_DCM_SourceOfMeasurement;
    bool private_scheme = false;
    for (size_t g = 0; g < req->n_groups; g++) {
        const udcm_sr_group &G = req->groups[g];
        std::string f = "request.groups[" + std::to_string(g) + "]";
        size_t mg = b.container(meas, DSRTypes::RT_contains, CODE_DCM_MeasurementGroup);
        std::string tid = std::string("UniMed ") + G.label_set_name + " " + G.label_set_version;
        b.text(mg, DSRTypes::RT_hasObsContext, CODE_DCM_TrackingIdentifier, tid);
        b.uidref(mg, DSRTypes::RT_hasObsContext, CODE_DCM_TrackingUniqueIdentifier, uids.tracking[g]);
        // TID 4019 Algorithm Identification
        b.text(mg, DSRTypes::RT_hasConceptMod, CODE_DCM_AlgorithmName, req->model_name);
        b.text(mg, DSRTypes::RT_hasConceptMod, CODE_DCM_AlgorithmVersion, req->model_version);
        b.text(mg, DSRTypes::RT_hasConceptMod, CODE_DCM_AlgorithmParameters,
               std::string("label_set_name=") + G.label_set_name);
        b.text(mg, DSRTypes::RT_hasConceptMod, CODE_DCM_AlgorithmParameters,
               std::string("label_set_version=") + G.label_set_version);
        b.text(mg, DSRTypes::RT_hasConceptMod, CODE_DCM_AlgorithmParameters,
               std::string("label_set_hash=") + G.label_set_hash);
        b.text(mg, DSRTypes::RT_hasConceptMod, CODE_DCM_AlgorithmParameters,
               std::string("model_hash=") + req->model_hash);
        auto imgs = collect_images(G.images, G.n_images, study);
        for (size_t i = 0; i < G.n_findings; i++) {
            const udcm_sr_finding &F = G.findings[i];
            std::string ff = f + ".findings[" + std::to_string(i) + "].code";
            if (strncmp(F.code.scheme, "99", 2) == 0) private_scheme = true;
            size_t fi = b.code(mg, DSRTypes::RT_contains, CODE_DCM_Finding, make_code(F.code, ff));
            size_t num = b.add(fi, DSRTypes::RT_hasProperties, DSRTypes::VT_Num, &probability_concept);
            DSRNumericMeasurementValue nv(ds_number(F.probability).c_str(), unit_none);
            check(nv.setFloatingPointRepresentation(F.probability), ff + ": probability");
            check(b.item().setNumericValue(nv), ff + ": probability");
            for (auto &e : imgs)
                b.image(num, DSRTypes::RT_inferredFrom, &source_concept, e.first.sop_class,
                        e.first.sop, e.second);
        }
        // The model card's warning (the set is not among those the model was
        // validated with) belongs to this group's findings, not to the whole
        // report: TID 1501 row 12 is exactly that place, a qualitative
        // evaluation in text form (CONTAINS TEXT, any concept name), and
        // (121106, DCM, "Comment") is the standard concept for free text
        // about the observations. Observation context (HAS OBS CONTEXT) would
        // be wrong: TID 1501 allows only its listed context items there, and
        // the warning describes the answers, not the circumstances of the
        // observation. Readers that do not know it show it as report text.
        if (!empty(G.comment))
            b.text(mg, DSRTypes::RT_contains, CODE_DCM_Comment, G.comment);
    }
    if (private_scheme) {
        // 99UNIMED is our private scheme (labels without a standard code).
        DSRCodingSchemeIdentificationList &csl = doc.getCodingSchemeIdentification();
        check(csl.addItem("99UNIMED", "", "UniMed for Orthanc private codes", "UniMed for Orthanc"),
              "Coding Scheme Identification");
    }

    // Current Requested Procedure Evidence: every referenced instance
    for (auto &e : library)
        check(doc.getCurrentRequestedProcedureEvidence().addItem(e.first.study.c_str(), e.first.series.c_str(),
                                                                 e.first.sop_class.c_str(), e.first.sop.c_str()),
              "evidence " + e.first.sop);

    // ---- dataset
    DcmFileFormat out;
    DcmDataset *ds = out.getDataset();
    check(doc.write(*ds), "SR document");
    // DSRDocument generated its own UIDs and creation time: ours replace them.
    check(ds->putAndInsertString(DCM_SeriesInstanceUID, uids.series.c_str()), "Series Instance UID");
    check(ds->putAndInsertString(DCM_SOPInstanceUID, uids.sop.c_str()), "SOP Instance UID");
    check(ds->putAndInsertString(DCM_InstanceCreationDate, date.c_str()), "Instance Creation Date");
    check(ds->putAndInsertString(DCM_InstanceCreationTime, time_s.c_str()), "Instance Creation Time");

    // Contributing Equipment Sequence: the AI model as processing equipment
    {
        DcmItem *ce = nullptr;
        check(ds->findOrCreateSequenceItem(DCM_ContributingEquipmentSequence, ce, 0), "Contributing Equipment");
        check(ce->putAndInsertString(DCM_Manufacturer, long_string_value(manufacturer).c_str()),
              "Contributing Equipment");
        check(ce->putAndInsertString(DCM_ManufacturerModelName, long_string_value(model_label).c_str()),
              "Contributing Equipment");
        check(ce->putAndInsertString(DCM_SoftwareVersions, long_string_value(software).c_str()),
              "Contributing Equipment");
        check(ce->putAndInsertString(DCM_ContributionDateTime, (date + time_s).c_str()), "Contributing Equipment");
        check(ce->putAndInsertString(DCM_ContributionDescription,
                                     ("Zero-shot findings by " + model_label + " (research use only)").c_str()),
              "Contributing Equipment");
        DSRCodedEntryValue purpose = CODE_DCM_ProcessingEquipment;
        check(purpose.writeSequence(*ce, DCM_PurposeOfReferenceCodeSequence), "Purpose of Reference");
    }

    if (sop_out) snprintf(sop_out, 65, "%s", uids.sop.c_str());

    const E_TransferSyntax xfer = EXS_LittleEndianExplicit;
    if (dcm_path) {
        OFCondition c = out.saveFile(dcm_path, xfer);
        if (c.bad()) fail(std::string(dcm_path) + ": cannot write: " + c.text());
    }
    if (dcm_buf) {
        check(out.validateMetaInfo(xfer), "File Meta Information");
        size_t cap = (size_t)out.calcElementLength(xfer, EET_ExplicitLength) + 4096;
        std::vector<uint8_t> tmp(cap);
        DcmOutputBufferStream os(tmp.data(), (offile_off_t)cap);
        out.transferInit();
        OFCondition c = out.write(os, xfer, EET_ExplicitLength, nullptr);
        out.transferEnd();
        if (c.bad()) fail(std::string("<buffer>: cannot encode: ") + c.text());
        void *p = nullptr;
        offile_off_t n = 0;
        os.flushBuffer(p, n);
        uint8_t *m = static_cast<uint8_t *>(malloc(n > 0 ? (size_t)n : 1));
        if (!m) fail("<buffer>: out of memory");
        memcpy(m, tmp.data(), (size_t)n);
        *dcm_buf = m;
        if (dcm_len) *dcm_len = (size_t)n;
    }
    if (xml_path) {
        // The XML comes from the final dataset (our UIDs), read back by dcmsr.
        DSRDocument back;
        check(back.read(*ds), "SR document (read back)");
        std::ofstream xs(xml_path, std::ios::binary);
        if (!xs) fail(std::string(xml_path) + ": cannot create");
        check(back.writeXML(xs, DSRTypes::XF_useDcmsrNamespace | DSRTypes::XF_addSchemaReference),
              std::string(xml_path) + ": XML");
        xs.close();
        if (!xs) fail(std::string(xml_path) + ": write failed");
    }
    if (json_path) write_text_file(json_path, findings_json(req, study, uids.sop, uids.series));
}

}  // namespace

extern "C" {

void udcm_sr_uid_from_name(const void *name, size_t len, char *out)
{
    Sha1 s;
    s.update(kUidNamespace, sizeof kUidNamespace);
    s.update(name, len);
    uint8_t d[20];
    s.final(d);
    d[6] = (uint8_t)((d[6] & 0x0F) | 0x50);  // version 5
    d[8] = (uint8_t)((d[8] & 0x3F) | 0x80);  // RFC 4122 variant
    // 128-bit big-endian integer to decimal (repeated division by 10).
    uint8_t n[16];
    memcpy(n, d, 16);
    char digits[48];
    int nd = 0;
    for (;;) {
        bool zero = true;
        unsigned rem = 0;
        for (int i = 0; i < 16; i++) {
            unsigned cur = (rem << 8) | n[i];
            n[i] = (uint8_t)(cur / 10);
            rem = cur % 10;
            if (n[i]) zero = false;
        }
        digits[nd++] = (char)('0' + rem);
        if (zero) break;
    }
    int o = snprintf(out, 65, "2.25.");
    while (nd > 0) out[o++] = digits[--nd];
    out[o] = '\0';
}

int udcm_sr_derive_uids(const udcm_sr_request *req, const char *study_uid, char *series_uid_out,
                        char *sop_instance_uid_out, char *tracking_uids_out, char *err, size_t errlen)
{
    try {
        check_request(req);
        check_uid(study_uid, "study_uid");
        Uids u = derive(req, study_uid);
        if (series_uid_out) snprintf(series_uid_out, 65, "%s", u.series.c_str());
        if (sop_instance_uid_out) snprintf(sop_instance_uid_out, 65, "%s", u.sop.c_str());
        if (tracking_uids_out)
            for (size_t g = 0; g < u.tracking.size(); g++)
                snprintf(tracking_uids_out + 65 * g, 65, "%s", u.tracking[g].c_str());
        return 0;
    } catch (const SrError &e) {
        set_err(err, errlen, "%s", e.msg.c_str());
    } catch (const std::exception &e) {
        set_err(err, errlen, "udcm_sr_derive_uids: %s", e.what());
    }
    return -1;
}

int udcm_sr_write(const udcm_sr_request *req, const char *dcm_path, uint8_t **dcm_buf, size_t *dcm_len,
                  const char *xml_path, const char *json_path, char *sop_instance_uid_out, char *err,
                  size_t errlen)
{
    if (dcm_buf) *dcm_buf = nullptr;
    if (dcm_len) *dcm_len = 0;
    try {
        write_sr(req, dcm_path, dcm_buf, dcm_len, xml_path, json_path, sop_instance_uid_out);
        return 0;
    } catch (const SrError &e) {
        set_err(err, errlen, "%s", e.msg.c_str());
    } catch (const std::exception &e) {
        set_err(err, errlen, "udcm_sr_write: %s", e.what());
    }
    if (dcm_buf && *dcm_buf) {
        free(*dcm_buf);
        *dcm_buf = nullptr;
    }
    return -1;
}

// libxml2 error collector: keeps the first few messages.
static void xml_collect(void *ctx, const char *fmt, ...)
{
    std::string *s = static_cast<std::string *>(ctx);
    if (s->size() > 2000) return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    *s += buf;
}

int udcm_sr_validate_xml(const char *xml_path, const char *xsd_path, char *err, size_t errlen)
{
    if (empty(xml_path) || empty(xsd_path)) {
        set_err(err, errlen, "udcm_sr_validate_xml: missing %s path", empty(xml_path) ? "XML" : "XSD");
        return -1;
    }
    std::string msgs;
    int rc = -1;
    xmlSchemaParserCtxtPtr pctx = xmlSchemaNewParserCtxt(xsd_path);
    xmlSchemaPtr schema = nullptr;
    xmlSchemaValidCtxtPtr vctx = nullptr;
    xmlDocPtr doc = nullptr;
    if (pctx) {
        xmlSchemaSetParserErrors(pctx, xml_collect, xml_collect, &msgs);
        schema = xmlSchemaParse(pctx);
    }
    if (!schema) {
        set_err(err, errlen, "%s: cannot load XML Schema: %s", xsd_path, msgs.c_str());
        goto done;
    }
    doc = xmlReadFile(xml_path, nullptr, XML_PARSE_NONET);
    if (!doc) {
        set_err(err, errlen, "%s: not well-formed XML", xml_path);
        goto done;
    }
    vctx = xmlSchemaNewValidCtxt(schema);
    if (!vctx) {
        set_err(err, errlen, "%s: out of memory", xml_path);
        goto done;
    }
    xmlSchemaSetValidErrors(vctx, xml_collect, xml_collect, &msgs);
    if (xmlSchemaValidateDoc(vctx, doc) == 0) {
        rc = 0;
    } else {
        while (!msgs.empty() && msgs.back() == '\n') msgs.pop_back();
        for (char &c : msgs)
            if (c == '\n') c = ' ';
        set_err(err, errlen, "%s: not valid against %s: %s", xml_path, xsd_path, msgs.c_str());
    }
done:
    if (vctx) xmlSchemaFreeValidCtxt(vctx);
    if (doc) xmlFreeDoc(doc);
    if (schema) xmlSchemaFree(schema);
    if (pctx) xmlSchemaFreeParserCtxt(pctx);
    return rc;
}

}  // extern "C"
