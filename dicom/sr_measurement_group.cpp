// UniMed for Orthanc — SR writer: the TID 1501 Measurement Groups, one per applied label set.
//
// DCMTK's TID1501_MeasurementGroup makes the group container, its Tracking
// Identifier and Tracking Unique Identifier (rows 2, 3), each label's Finding
// (row 11, a qualitative evaluation: CONTAINS CODE) and the Comment (row 12,
// CONTAINS TEXT).  What it cannot express is added as extra content items of
// the (extensible) template, at the place docs/REPORTS.md shows:
//   * TID 4019 Algorithm Identification (HAS CONCEPT MOD TEXT items): DCMTK's
//     TID 1501 does not include it, so DCMTK's TID4019 template goes in as
//     an extra template of the group;
//   * the Probability of each Finding (HAS PROPERTIES NUM under the CODE) and
//     its Source of Measurement images (INFERRED FROM IMAGE under the NUM):
//     DCMTK's qualitative evaluations take no children, and its measurements
//     (TID 300) are single-finding numeric rows with concepts from CID 7469,
//     while we report one Finding per label, each with its Probability
//     (the deviation from TID 1501 that docs/REPORTS.md explains).

#include "sr_internal.h"

#include "dcmtk/dcmsr/cmr/tid4019.h"
#include "dcmtk/dcmsr/codes/dcm.h"
#include "dcmtk/dcmsr/dsrnumvl.h"

#include <cstdio>
#include <cstring>

namespace udcm_sr {

namespace {

typedef TID1500_MeasurementReport::TID1501_Measurements MeasurementGroup;

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

// Puts the cursor on the group's Tracking Unique Identifier (row 3).
void goto_tracking_uid(MeasurementGroup &mg, const std::string &what)
{
    if (mg.gotoRoot() == 0 || mg.gotoChild() == 0) fail(what + ": measurement group without content");
    do {
        if (mg.getCurrentContentItem().getConceptName() == CODE_DCM_TrackingUniqueIdentifier) return;
    } while (mg.gotoNext() != 0);
    fail(what + ": measurement group without Tracking Unique Identifier");
}

// Adds an extra content item at the cursor (after it or below it) and names it.
DSRContentItem &add_extra(MeasurementGroup &mg, DSRTypes::E_RelationshipType rel, DSRTypes::E_ValueType type,
                          DSRTypes::E_AddMode mode, const DSRCodedEntryValue &concept_name, const std::string &what)
{
    check(mg.addExtraContentItem(rel, type, mode), what);
    DSRContentItem &item = mg.getCurrentContentItem();
    check(item.setConceptName(concept_name), what + ": concept name");
    return item;
}

// TID 4019 Algorithm Identification (DCMTK's TID4019 class), right after
// the tracking identifiers.  DCMTK's TID 1501 does not include TID 4019, so
// it goes in as an extra template; and it goes in last: DCMTK puts each
// TID 1501 row after the last row it made, so items inserted before the
// Findings would end up after them.
void add_algorithm_identification(MeasurementGroup &mg, const udcm_sr_request *req, const udcm_sr_group &G,
                                  const std::string &f)
{
    const std::string what = f + ": Algorithm Identification (TID 4019)";
    TID4019_AlgorithmIdentification algorithm;
    check(algorithm.setIdentification(req->model_name, req->model_version), what);
    for (const std::string &p : {std::string("label_set_name=") + G.label_set_name,
                                 std::string("label_set_version=") + G.label_set_version,
                                 std::string("label_set_hash=") + G.label_set_hash,
                                 std::string("model_hash=") + req->model_hash})
        check(algorithm.addParameter(p.c_str()), what);
    goto_tracking_uid(mg, what);
    check(mg.insertExtraTemplate(algorithm, DSRTypes::AM_afterCurrent, DSRTypes::RT_hasConceptMod), what);
}

// One Finding (row 11) with its Probability and the images it was inferred from.
void add_finding(MeasurementGroup &mg, const udcm_sr_finding &F, const ImageList &images, const std::string &ff)
{
    const DSRCodedEntryValue code = make_code(F.code, ff);
    check(mg.addQualitativeEvaluation(CODE_DCM_Finding, code), ff);
    // The new Finding is the cursor; its Probability goes below it.
    const DSRContentItem &finding = mg.getCurrentContentItem();
    if (finding.getValueType() != DSRTypes::VT_Code || !(finding.getConceptName() == CODE_DCM_Finding) ||
        !(finding.getCodeValue() == code))
        fail(ff + ": the measurement group's cursor is not on the new Finding");
    DSRContentItem &num = add_extra(mg, DSRTypes::RT_hasProperties, DSRTypes::VT_Num, DSRTypes::AM_belowCurrent,
                                    CODE_DCM_Probability, ff + ": probability");
    DSRNumericMeasurementValue nv(ds_number(F.probability).c_str(), make_code("1", "UCUM", "no units", "unit"));
    check(nv.setFloatingPointRepresentation(F.probability), ff + ": probability");
    check(num.setNumericValue(nv), ff + ": probability");
    DSRTypes::E_AddMode mode = DSRTypes::AM_belowCurrent;
    for (const auto &e : images) {
        DSRContentItem &img = add_extra(mg, DSRTypes::RT_inferredFrom, DSRTypes::VT_Image, mode,
                                        CODE_DCM_SourceOfMeasurement, ff + ": source image " + e.first.sop);
        check(img.setImageReference(image_reference(e.first, e.second)), ff + ": source image " + e.first.sop);
        mode = DSRTypes::AM_afterCurrent;
    }
}

}  // namespace

bool add_measurement_groups(TID1500_MeasurementReport &report, const udcm_sr_request *req, const Uids &uids,
                            const std::string &study)
{
    bool private_scheme = false;
    for (size_t g = 0; g < req->n_groups; g++) {
        const udcm_sr_group &G = req->groups[g];
        const std::string f = "request.groups[" + std::to_string(g) + "]";
        // The report starts with one (empty) group; each further set gets a new one.
        if (g > 0) check(report.addIndividualMeasurements(), f + ": Measurement Group");
        MeasurementGroup &mg = report.getIndividualMeasurements();
        const std::string tracking = std::string("UniMed ") + G.label_set_name + " " + G.label_set_version;
        check(mg.setTrackingIdentifier(tracking.c_str()), f + ": Tracking Identifier");
        check(mg.setTrackingUniqueIdentifier(uids.tracking[g].c_str()), f + ": Tracking Unique Identifier");
        const ImageList images = collect_images(G.images, G.n_images, study);
        for (size_t i = 0; i < G.n_findings; i++) {
            const udcm_sr_finding &F = G.findings[i];
            if (strncmp(F.code.scheme, "99", 2) == 0) private_scheme = true;
            add_finding(mg, F, images, f + ".findings[" + std::to_string(i) + "].code");
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
            check(mg.addQualitativeEvaluation(CODE_DCM_Comment, OFString(G.comment)), f + ".comment");
        add_algorithm_identification(mg, req, G, f);
    }
    return private_scheme;
}

}  // namespace udcm_sr
