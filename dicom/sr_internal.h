// UniMed for Orthanc — the SR writer's parts, shared between its files (C++17, not public).
// Public API: unimed_dicom.h (Structured Reports).  The content tree is documented in docs/REPORTS.md.
//
//   sr_document.cpp          the document: source, header modules, TID 1500 root rows, outputs
//   sr_observer.cpp          TID 1001 observation context (the model as device observer)
//   sr_image_library.cpp     TID 1600 image library and the image references
//   sr_measurement_group.cpp TID 1501 measurement groups (one per label set)
//   sr_request.cpp           request checks and the helpers every part uses
//   sr_uid.cpp               the name-based UIDs
//   sr_findings_json.cpp     the findings as JSON
//   sr_xml_schema.cpp        XML Schema validation of the XML output
#ifndef UNIMED_SR_INTERNAL_H
#define UNIMED_SR_INTERNAL_H

#include "unimed_dicom.h"

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmsr/cmr/tid1500.h"
#include "dcmtk/dcmsr/dsrcodvl.h"
#include "dcmtk/dcmsr/dsrimgvl.h"

/* The context groups' classes have plural names in DCMTK 3.6.7 (Debian 12)
 * and singular ones in later releases (3.6.9, Debian 13). */
#if PACKAGE_VERSION_NUMBER > 367
typedef CID7021_MeasurementReportDocumentTitle SrDocumentTitleGroup;
typedef CID5000_Language SrLanguageGroup;
typedef CID5001_Country SrCountryGroup;
typedef CID100_QuantitativeDiagnosticImagingProcedure SrProcedureGroup;
#else
typedef CID7021_MeasurementReportDocumentTitles SrDocumentTitleGroup;
typedef CID5000_Languages SrLanguageGroup;
typedef CID5001_Countries SrCountryGroup;
typedef CID100_QuantitativeDiagnosticImagingProcedures SrProcedureGroup;
#endif

#include <cstdint>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace udcm_sr {

// ---- errors and small helpers (sr_request.cpp) ---------------------------

// Any failure while writing: the message names the request field or file at fault.
struct SrError {
    std::string msg;
};

[[noreturn]] void fail(const std::string &msg);
void check(const OFCondition &c, const std::string &what);
bool empty(const char *s);
void set_err(char *err, size_t errlen, const char *fmt, ...);

DSRCodedEntryValue make_code(const char *value, const char *scheme, const char *meaning, const std::string &field);
DSRCodedEntryValue make_code(const udcm_sr_code &c, const std::string &field);

// A Long String (LO) value: at most 64 bytes, cut on a UTF-8 character boundary.
std::string long_string_value(const std::string &v);

void check_uid(const char *v, const std::string &field);
void check_request(const udcm_sr_request *req);

// ---- UIDs (sr_uid.cpp) -----------------------------------------------------

struct Uids {
    std::string series, sop;
    std::vector<std::string> tracking;  // one per group
};

std::string uid_from_name(const std::string &name);
Uids derive_uids(const udcm_sr_request *req, const std::string &study);
std::string device_observer_uid(const udcm_sr_request *req);

// ---- images (sr_image_library.cpp) ---------------------------------------

struct ImageKey {
    std::string study, series, sop_class, sop;
    bool operator<(const ImageKey &o) const;
};
// Deduplicated per instance, first-seen order; the frames referenced (empty: the whole instance).
typedef std::vector<std::pair<ImageKey, std::set<uint32_t>>> ImageList;

ImageList collect_images(const udcm_sr_image_ref *refs, size_t n, const std::string &study);
ImageList all_images(const udcm_sr_request *req, const std::string &study);
DSRImageReferenceValue image_reference(const ImageKey &key, const std::set<uint32_t> &frames);
void add_image_library(TID1600_ImageLibrary &library, const ImageList &images);

// ---- the device observer (sr_observer.cpp) --------------------------------

struct DeviceIdentity {
    std::string manufacturer;  // request.manufacturer or "UniMed for Orthanc"
    std::string model_label;   // "model name + version"
    std::string software;      // request.software_version or the model version
};

DeviceIdentity device_identity(const udcm_sr_request *req);
void add_observer_context(TID1001_ObservationContext &context, const udcm_sr_request *req,
                          const DeviceIdentity &device);

// ---- measurement groups (sr_measurement_group.cpp) ------------------------

// Adds one TID 1501 group per label set; returns whether a 99UNIMED code was used.
bool add_measurement_groups(TID1500_MeasurementReport &report, const udcm_sr_request *req, const Uids &uids,
                            const std::string &study);

// ---- JSON (sr_findings_json.cpp) ------------------------------------------

std::string findings_json(const udcm_sr_request *req, const std::string &study, const Uids &uids);

}  // namespace udcm_sr

#endif
