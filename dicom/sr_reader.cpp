// UniMed for Orthanc — TID 1500 Structured Report reader (DCMTK dcmsr).
// Public API: unimed_dicom.h (Structured Reports).  Reads our reports and other producers' TID 1500
// reports: every Measurement Group (125007, DCM) with its coded findings,
// their probabilities, its numeric measurements and its image references.

#include "unimed_dicom.h"
#include "sr_internal.h"
#include "udcm_internal.h"

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "dcmtk/dcmdata/dcistrmb.h"
#include "dcmtk/dcmsr/dsrdoc.h"

#include <cJSON.h>

#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <string>
#include <vector>

namespace {

using udcm_sr::set_err; /* the SR library's one error formatter (sr_request.cpp) */

bool is(const DSRCodedEntryValue &c, const char *value, const char *scheme)
{
    return c.getCodeValue() == value && c.getCodingSchemeDesignator() == scheme;
}

// Owned storage behind a udcm_sr_result.
struct Store {
    std::deque<std::string> strings;  // stable addresses
    std::vector<udcm_sr_read_group> groups;
    std::deque<std::vector<udcm_sr_read_finding>> findings;
    std::deque<std::vector<udcm_sr_read_measurement>> measurements;
    std::deque<std::vector<udcm_sr_image_ref>> images;
    std::deque<std::vector<const char *>> params;
    std::deque<std::vector<const char *>> comments;
    std::vector<udcm_sr_image_ref> library;
    std::vector<udcm_sr_text_item> texts;

    const char *str(const OFString &s)
    {
        strings.push_back(std::string(s.c_str()));
        return strings.back().c_str();
    }
    udcm_sr_code code(const DSRCodedEntryValue &c)
    {
        return udcm_sr_code{str(c.getCodeValue()), str(c.getCodingSchemeDesignator()), str(c.getCodeMeaning())};
    }
};

// Group under construction (vectors live in the Store's deques).
struct GroupAcc {
    udcm_sr_read_group g;
    std::vector<udcm_sr_read_finding> *findings;
    std::vector<udcm_sr_read_measurement> *measurements;
    std::vector<udcm_sr_image_ref> *images;
    std::vector<const char *> *params;
    std::vector<const char *> *comments;
    std::map<std::string, size_t> image_index;
};

struct Reader {
    DSRDocument &doc;
    DSRDocumentTree &t;
    Store &st;
    udcm_sr_result &res;
    std::deque<GroupAcc> groups;
    std::map<std::string, size_t> library_index;

    udcm_sr_image_ref image_ref(const DSRImageReferenceValue &v, uint32_t frame)
    {
        udcm_sr_image_ref r{};
        OFString study, series;
        // The study/series of an image come from the evidence sequences.
        DSRSOPInstanceReferenceList *lists[2] = {&doc.getCurrentRequestedProcedureEvidence(),
                                                 &doc.getPertinentOtherEvidence()};
        for (auto *l : lists)
            if (l->gotoItem(v.getSOPClassUID(), v.getSOPInstanceUID()).good()) {
                l->getStudyInstanceUID(study);
                l->getSeriesInstanceUID(series);
                break;
            }
        r.study_uid = st.str(study);
        r.series_uid = st.str(series);
        r.sop_class_uid = st.str(v.getSOPClassUID());
        r.sop_instance_uid = st.str(v.getSOPInstanceUID());
        r.frame = frame;
        return r;
    }

    // Adds each referenced frame (or the whole instance) once.
    void add_images(const DSRImageReferenceValue &v, std::vector<udcm_sr_image_ref> &out,
                    std::map<std::string, size_t> &index)
    {
        const DSRImageFrameList &fl = v.getFrameList();
        std::vector<uint32_t> frames;
        for (size_t i = 1; i <= fl.getNumberOfItems(); i++) {
            Sint32 f = fl.getItem(i);
            if (f > 0) frames.push_back((uint32_t)f);
        }
        if (frames.empty()) frames.push_back(0);
        for (uint32_t f : frames) {
            std::string key = std::string(v.getSOPInstanceUID().c_str()) + "#" + std::to_string(f);
            if (index.count(key)) continue;
            index[key] = out.size();
            out.push_back(image_ref(v, f));
        }
    }

    // Whether a TEXT item is report narrative: reached by CONTAINS (or the
    // reasoning relationships) only, and not an identification item.
    static bool is_narrative(DSRTypes::E_RelationshipType rt, const DSRCodedEntryValue &c)
    {
        if (rt != DSRTypes::RT_contains && rt != DSRTypes::RT_inferredFrom &&
            rt != DSRTypes::RT_hasProperties && rt != DSRTypes::RT_isRoot)
            return false;
        static const char *const not_text[] = {"112039", "111001", "111002", "111003"};
        for (const char *v : not_text)
            if (is(c, v, "DCM")) return false;
        return true;
    }

    // Walk the subtree below the current node.  depth: of the current node
    // (root = 0); grp: the enclosing Measurement Group; group_depth: its depth;
    // finding: index of the enclosing CODE item of the group, or -1;
    // section: the enclosing CONTAINER; narrative: no context/modifier
    // relationship on the way down.
    void walk(int depth, GroupAcc *grp, int group_depth, long finding, bool in_library,
              udcm_sr_code section = udcm_sr_code{"", "", ""}, bool narrative = true)
    {
        DSRContentItem &it = t.getCurrentContentItem();
        const DSRTypes::E_ValueType vt = it.getValueType();
        const DSRCodedEntryValue concept_code = it.getConceptName();
        narrative = narrative && is_narrative(it.getRelationshipType(), concept_code);
        if (vt == DSRTypes::VT_Text && narrative && !it.getStringValue().empty())
            st.texts.push_back(udcm_sr_text_item{st.code(concept_code), section, st.str(it.getStringValue())});
        if (vt == DSRTypes::VT_Container) section = st.code(concept_code);

        if (vt == DSRTypes::VT_Container && is(concept_code, "125007", "DCM")) {
            GroupAcc a{};
            st.findings.emplace_back();
            st.measurements.emplace_back();
            st.images.emplace_back();
            st.params.emplace_back();
            st.comments.emplace_back();
            a.comments = &st.comments.back();
            a.findings = &st.findings.back();
            a.measurements = &st.measurements.back();
            a.images = &st.images.back();
            a.params = &st.params.back();
            a.g.tracking_id = a.g.tracking_uid = a.g.algorithm_name = a.g.algorithm_version = "";
            a.g.label_set_name = a.g.label_set_version = a.g.label_set_hash = "";
            groups.push_back(std::move(a));
            grp = &groups.back();
            group_depth = depth;
            finding = -1;
        } else if (vt == DSRTypes::VT_Container && is(concept_code, "111028", "DCM")) {
            in_library = true;
        }

        if (depth == 1) {
            // Observer context and procedure of the document (TID 1500 rows 2-4).
            if (is(concept_code, "121012", "DCM")) res.device_observer_uid = st.str(it.getStringValue());
            else if (is(concept_code, "121013", "DCM")) res.device_observer_name = st.str(it.getStringValue());
            else if (is(concept_code, "121014", "DCM")) res.device_observer_manufacturer = st.str(it.getStringValue());
            else if (is(concept_code, "121015", "DCM")) res.device_observer_model_name = st.str(it.getStringValue());
            else if (is(concept_code, "121058", "DCM") && vt == DSRTypes::VT_Code && res.procedure.value[0] == '\0')
                res.procedure = st.code(it.getCodeValue());
        }

        if (in_library && !grp && vt == DSRTypes::VT_Image)
            add_images(it.getImageReference(), st.library, library_index);

        if (grp && depth == group_depth + 1) {
            const OFString &sv = it.getStringValue();
            if (vt == DSRTypes::VT_Text && is(concept_code, "112039", "DCM")) grp->g.tracking_id = st.str(sv);
            else if (vt == DSRTypes::VT_UIDRef && is(concept_code, "112040", "DCM")) grp->g.tracking_uid = st.str(sv);
            else if (vt == DSRTypes::VT_Text && is(concept_code, "111001", "DCM")) grp->g.algorithm_name = st.str(sv);
            else if (vt == DSRTypes::VT_Code && is(concept_code, "111001", "DCM"))
                grp->g.algorithm_name = st.str(it.getCodeValue().getCodeMeaning());
            else if (vt == DSRTypes::VT_Text && is(concept_code, "111003", "DCM")) grp->g.algorithm_version = st.str(sv);
            else if (vt == DSRTypes::VT_Text && is(concept_code, "111002", "DCM")) {
                const char *p = st.str(sv);
                grp->params->push_back(p);
                std::string s = p;
                size_t eq = s.find('=');
                if (eq != std::string::npos) {
                    std::string k = s.substr(0, eq), v = s.substr(eq + 1);
                    if (k == "label_set_name") grp->g.label_set_name = st.str(v);
                    else if (k == "label_set_version") grp->g.label_set_version = st.str(v);
                    else if (k == "label_set_hash") grp->g.label_set_hash = st.str(v);
                }
            } else if (vt == DSRTypes::VT_Text && is(concept_code, "121106", "DCM") &&
                       it.getRelationshipType() == DSRTypes::RT_contains) {
                grp->comments->push_back(st.str(sv));
            } else if (vt == DSRTypes::VT_Code) {
                udcm_sr_read_finding f{};
                f.concept_name = st.code(concept_code);
                f.code = st.code(it.getCodeValue());
                f.probability = NAN;
                grp->findings->push_back(f);
                finding = (long)grp->findings->size() - 1;
            }
        }

        if (grp && vt == DSRTypes::VT_Num) {
            const DSRNumericMeasurementValue &nv = it.getNumericValue();
            Float64 fp = 0;
            double value = NAN;
            if (nv.getFloatingPointRepresentation(fp).good()) value = fp;
            else if (!nv.getNumericValue().empty()) value = strtod(nv.getNumericValue().c_str(), nullptr);
            if (is(concept_code, "122157", "DCM") && finding >= 0 && depth == group_depth + 2) {
                udcm_sr_read_finding &f = (*grp->findings)[(size_t)finding];
                f.has_probability = 1;
                f.probability = value;
            } else if (depth == group_depth + 1 || finding < 0) {
                udcm_sr_read_measurement m{};
                m.concept_name = st.code(concept_code);
                m.value = value;
                m.value_text = st.str(nv.getNumericValue());
                m.unit = st.code(nv.getMeasurementUnit());
                grp->measurements->push_back(m);
            }
        }

        if (grp && vt == DSRTypes::VT_Image) add_images(it.getImageReference(), *grp->images, grp->image_index);

        if (t.goDown() != 0) {
            do {
                walk(depth + 1, grp, group_depth, finding, in_library, section, narrative);
            } while (t.gotoNext() != 0);
            t.goUp();
        }
    }
};

OFString ds_get(DcmItem &ds, const DcmTagKey &key)
{
    OFString v;
    ds.findAndGetOFStringArray(key, v);
    return v;
}

udcm_sr_result *read_dataset(DcmItem &ds, const std::string &name, char *err, size_t errlen)
{
    DSRDocument doc;
    const size_t flags = DSRTypes::RF_ignoreRelationshipConstraints | DSRTypes::RF_acceptInvalidContentItemValue |
                         DSRTypes::RF_acceptUnknownRelationshipType;
    OFCondition c = doc.read(ds, flags);
    if (c.bad()) {
        set_err(err, errlen, "%s: not a readable DICOM SR document: %s", name.c_str(), c.text());
        return nullptr;
    }
    Store *st = new Store;
    udcm_sr_result *res = new udcm_sr_result{};
    res->internal_ = st;
    OFString v;
    res->sop_class_uid = st->str(ds_get(ds, DCM_SOPClassUID));
    res->sop_instance_uid = st->str(ds_get(ds, DCM_SOPInstanceUID));
    res->series_uid = st->str(ds_get(ds, DCM_SeriesInstanceUID));
    res->study_uid = st->str(ds_get(ds, DCM_StudyInstanceUID));
    res->patient_name = st->str(ds_get(ds, DCM_PatientName));
    res->patient_id = st->str(ds_get(ds, DCM_PatientID));
    res->completion_flag = st->str(DSRTypes::completionFlagToEnumeratedValue(doc.getCompletionFlag()));
    res->verification_flag = st->str(DSRTypes::verificationFlagToEnumeratedValue(doc.getVerificationFlag()));
    res->device_observer_uid = res->device_observer_name = "";
    res->device_observer_manufacturer = res->device_observer_model_name = "";
    res->procedure = udcm_sr_code{"", "", ""};
    res->document_title = udcm_sr_code{"", "", ""};
    res->template_id = "";

    DSRDocumentTree &t = doc.getTree();
    OFString tid, mapping;
    if (t.getTemplateIdentification(tid, mapping).good()) res->template_id = st->str(tid);
    Reader r{doc, t, *st, *res, {}, {}};
    if (t.gotoRoot() != 0) {
        res->document_title = st->code(t.getCurrentContentItem().getConceptName());
        do {
            r.walk(0, nullptr, 0, -1, false);
        } while (t.gotoNext() != 0);
    }
    for (GroupAcc &a : r.groups) {
        a.g.findings = a.findings->data();
        a.g.n_findings = a.findings->size();
        a.g.measurements = a.measurements->data();
        a.g.n_measurements = a.measurements->size();
        a.g.images = a.images->data();
        a.g.n_images = a.images->size();
        a.g.algorithm_parameters = a.params->data();
        a.g.n_algorithm_parameters = a.params->size();
        a.g.comments = a.comments->data();
        a.g.n_comments = a.comments->size();
        st->groups.push_back(a.g);
    }
    res->groups = st->groups.data();
    res->n_groups = st->groups.size();
    res->library = st->library.data();
    res->n_library = st->library.size();
    res->texts = st->texts.data();
    res->n_texts = st->texts.size();
    return res;
}

}  // namespace

extern "C" {

/* Both readers open through udcm_open_file / udcm_open_memory, so SRs get
 * the same length checks, limits and safe Deflated handling as images. */
static udcm_sr_result *read_handle(udcm_handle *h, const std::string &name, char *err, size_t errlen)
{
    if (!h) return nullptr;
    udcm_sr_result *res = nullptr;
    try {
        res = read_dataset(*h->ds, name, err, errlen);
    } catch (const std::exception &e) {
        set_err(err, errlen, "%s: %s", name.c_str(), e.what());
    }
    udcm_close(h);
    return res;
}

udcm_sr_result *udcm_sr_read_file(const char *path, char *err, size_t errlen)
{
    if (!path || !*path) {
        set_err(err, errlen, "udcm_sr_read_file: no path");
        return nullptr;
    }
    return read_handle(udcm_open_file(path, nullptr, err, errlen), path, err, errlen);
}

udcm_sr_result *udcm_sr_read_memory(const void *buf, size_t len, const char *name, char *err, size_t errlen)
{
    std::string nm = name ? name : "<memory>";
    if (!buf || len == 0) {
        set_err(err, errlen, "%s: empty buffer", nm.c_str());
        return nullptr;
    }
    return read_handle(udcm_open_memory(buf, len, nm.c_str(), nullptr, err, errlen), nm, err, errlen);
}

void udcm_sr_result_free(udcm_sr_result *res)
{
    if (!res) return;
    delete static_cast<Store *>(res->internal_);
    delete res;
}

static cJSON *code_obj(const udcm_sr_code &c)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "value", c.value);
    cJSON_AddStringToObject(o, "scheme", c.scheme);
    cJSON_AddStringToObject(o, "meaning", c.meaning);
    return o;
}

char *udcm_sr_result_json(const udcm_sr_result *res)
{
    if (!res) return nullptr;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "study", res->study_uid);
    cJSON_AddStringToObject(root, "sr_sop_instance", res->sop_instance_uid);
    cJSON_AddStringToObject(root, "sr_series", res->series_uid);
    cJSON_AddStringToObject(root, "completion", res->completion_flag);
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    std::string mname, mversion, mhash;
    if (res->n_groups > 0) {
        const udcm_sr_read_group &g = res->groups[0];
        mname = g.algorithm_name;
        mversion = g.algorithm_version;
        for (size_t i = 0; i < g.n_algorithm_parameters; i++)
            if (strncmp(g.algorithm_parameters[i], "model_hash=", 11) == 0) mhash = g.algorithm_parameters[i] + 11;
    }
    cJSON_AddStringToObject(model, "name", mname.c_str());
    cJSON_AddStringToObject(model, "version", mversion.c_str());
    cJSON_AddStringToObject(model, "hash", mhash.c_str());
    cJSON *sets = cJSON_AddArrayToObject(root, "label_sets");
    for (size_t gi = 0; gi < res->n_groups; gi++) {
        const udcm_sr_read_group &g = res->groups[gi];
        cJSON *s = cJSON_CreateObject();
        cJSON_AddStringToObject(s, "name", g.label_set_name[0] ? g.label_set_name : g.tracking_id);
        cJSON_AddStringToObject(s, "version", g.label_set_version);
        cJSON_AddStringToObject(s, "hash", g.label_set_hash);
        if (g.n_comments > 0) {
            cJSON *cs = cJSON_AddArrayToObject(s, "comments");
            for (size_t i = 0; i < g.n_comments; i++) cJSON_AddItemToArray(cs, cJSON_CreateString(g.comments[i]));
        }
        cJSON *fs = cJSON_AddArrayToObject(s, "findings");
        for (size_t i = 0; i < g.n_findings; i++) {
            const udcm_sr_read_finding &f = g.findings[i];
            if (!(strcmp(f.concept_name.value, "121071") == 0 && strcmp(f.concept_name.scheme, "DCM") == 0)) continue;
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "label", f.code.meaning);
            cJSON_AddItemToObject(o, "code", code_obj(f.code));
            if (f.has_probability) cJSON_AddNumberToObject(o, "probability", f.probability);
            else cJSON_AddNullToObject(o, "probability");
            cJSON_AddItemToArray(fs, o);
        }
        cJSON_AddItemToArray(sets, s);
    }
    cJSON *imgs = cJSON_AddArrayToObject(root, "images");
    // Library entries, frames of one instance merged (the writer's shape).
    std::map<std::string, cJSON *> seen;
    for (size_t i = 0; i < res->n_library; i++) {
        const udcm_sr_image_ref &r = res->library[i];
        cJSON *o;
        auto itr = seen.find(r.sop_instance_uid);
        if (itr == seen.end()) {
            o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "study", r.study_uid);
            cJSON_AddStringToObject(o, "series", r.series_uid);
            cJSON_AddStringToObject(o, "sop_class", r.sop_class_uid);
            cJSON_AddStringToObject(o, "sop_instance", r.sop_instance_uid);
            cJSON_AddArrayToObject(o, "frames");
            cJSON_AddItemToArray(imgs, o);
            seen[r.sop_instance_uid] = o;
        } else {
            o = itr->second;
        }
        if (r.frame > 0) cJSON_AddItemToArray(cJSON_GetObjectItem(o, "frames"), cJSON_CreateNumber(r.frame));
    }
    char *txt = cJSON_Print(root);
    cJSON_Delete(root);
    return txt;
}

}  // extern "C"
