// UniMed for Orthanc — SR writer: the document.  The source instance, the
// header modules, the TID 1500 root (DCMTK's TID1500_MeasurementReport:
// language, observation context, procedure, image library, measurement
// groups; each part in its own file, see sr_internal.h), and the outputs.
// Public API: unimed_dicom.h (Structured Reports); docs/REPORTS.md.

#include "sr_internal.h"
#include "udcm_internal.h"

#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "dcmtk/dcmdata/dcostrmb.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmsr/codes/dcm.h"
#include "dcmtk/dcmsr/dsrdoc.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

namespace udcm_sr {

namespace {

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

const char *const kDefaultSeriesDescription = "UniMed AI findings \xE2\x80\x94 research use only";

void write_text_file(const char *path, const std::string &data)
{
    FILE *f = fopen(path, "wb");
    if (!f) fail(std::string(path) + ": cannot create: " + strerror(errno));
    bool ok = fwrite(data.data(), 1, data.size(), f) == data.size();
    ok = (fclose(f) == 0) && ok;
    if (!ok) fail(std::string(path) + ": write failed");
}

// Procedure reported: the request's, else the source's Procedure Code Sequence, else generic.
DSRCodedEntryValue procedure_reported(const udcm_sr_request *req, DcmDataset *src)
{
    if (req->procedure.value) return make_code(req->procedure, "request.procedure");
    DcmItem *pc = nullptr;
    if (src->findAndGetSequenceItem(DCM_ProcedureCodeSequence, pc, 0).good() && pc) {
        DSRCodedEntryValue c;
        if (c.readSequence(*src, DCM_ProcedureCodeSequence, "3").good() && c.isValid()) return c;
    }
    return make_code("363679005", "SCT", "Imaging procedure", "procedure");
}

// The content tree (docs/REPORTS.md), built with DCMTK's TID 1500 classes.
void build_content(DSRDocument &doc, const udcm_sr_request *req, DcmDataset *src, const std::string &study,
                   const Uids &uids, const DeviceIdentity &device, const ImageList &library)
{
    TID1500_MeasurementReport report(SrDocumentTitleGroup(CODE_DCM_ImagingMeasurementReport));
    // TID 1204: the texts are US English.
    check(report.setLanguage(SrLanguageGroup(make_code("en", "RFC5646", "English", "language")),
                             SrCountryGroup(make_code("US", "ISO3166_1", "United States", "country"))),
          "language (TID 1204)");
    add_observer_context(report.getObservationContext(), req, device);
    // Row 4 takes a code of CID 100, which is extensible (DCID): a source's own
    // Procedure Code is allowed, so DCMTK's check against CID 100 is off (the
    // code itself is valid: make_code / isValid above).
    check(report.addProcedureReported(SrProcedureGroup(procedure_reported(req, src)),
                                      OFFalse),
          "Procedure reported");
    add_image_library(report.getImageLibrary(), library);
    const bool private_scheme = add_measurement_groups(report, req, uids, study);
    check(doc.setTreeFromRootTemplate(report), "SR tree");
    // DCMTK's TID 1500 builds an Enhanced SR tree; the document is a
    // Comprehensive SR (docs/REPORTS.md, "Why Comprehensive SR"), whose
    // constraints the tree also meets.
    check(doc.changeDocumentType(DSRTypes::DT_ComprehensiveSR), "SR document type");
    if (private_scheme) {
        // 99UNIMED is our private scheme (labels without a standard code).
        DSRCodingSchemeIdentificationList &csl = doc.getCodingSchemeIdentification();
        check(csl.addItem("99UNIMED", "", "UniMed for Orthanc private codes", "UniMed for Orthanc"),
              "Coding Scheme Identification");
    }
}

// Contributing Equipment Sequence: the AI model as processing equipment.
// DSRDocument has no API for it (not part of its IOD model), so it goes into
// the written data set.
void add_contributing_equipment(DcmDataset *ds, const DeviceIdentity &device, const std::string &datetime)
{
    DcmItem *ce = nullptr;
    check(ds->findOrCreateSequenceItem(DCM_ContributingEquipmentSequence, ce, 0), "Contributing Equipment");
    check(ce->putAndInsertString(DCM_Manufacturer, long_string_value(device.manufacturer).c_str()),
          "Contributing Equipment");
    check(ce->putAndInsertString(DCM_ManufacturerModelName, long_string_value(device.model_label).c_str()),
          "Contributing Equipment");
    check(ce->putAndInsertString(DCM_SoftwareVersions, long_string_value(device.software).c_str()),
          "Contributing Equipment");
    check(ce->putAndInsertString(DCM_ContributionDateTime, datetime.c_str()), "Contributing Equipment");
    check(ce->putAndInsertString(DCM_ContributionDescription,
                                 ("Zero-shot findings by " + device.model_label + " (research use only)").c_str()),
          "Contributing Equipment");
    DSRCodedEntryValue purpose = CODE_DCM_ProcessingEquipment;
    check(purpose.writeSequence(*ce, DCM_PurposeOfReferenceCodeSequence), "Purpose of Reference");
}

void write_buffer(DcmFileFormat &out, E_TransferSyntax xfer, uint8_t **dcm_buf, size_t *dcm_len)
{
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

void write_xml(DcmDataset *ds, const char *xml_path)
{
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

void write_sr(const udcm_sr_request *req, const udcm_sr_write_params &out)
{
    check_request(req);
    std::string srcname;
    std::unique_ptr<DcmDataset> srcds = load_source(req, srcname);
    DcmDataset *src = srcds.get();
    const std::string study = ds_string(src, DCM_StudyInstanceUID);
    const Uids uids = derive_uids(req, study);
    std::string date, time_s;
    now_strings(req, date, time_s);
    const DeviceIdentity device = device_identity(req);
    const ImageList library = all_images(req, study);

    // ---- header modules (docs/REPORTS.md, "Header")
    DSRDocument doc(DSRTypes::DT_ComprehensiveSR);
    check(doc.readStudyData(*src), srcname + ": patient/study modules");
    check(doc.setSpecificCharacterSetType(DSRTypes::CS_UTF8), "Specific Character Set");
    doc.createNewSeries();
    char num[16];
    snprintf(num, sizeof num, "%d", req->series_number > 0 ? req->series_number : 9901);
    check(doc.setSeriesDescription(empty(req->series_description) ? kDefaultSeriesDescription
                                                                  : req->series_description),
          "request.series_description");
    check(doc.setSeriesNumber(num), "request.series_number");
    char instance_number[16];
    snprintf(instance_number, sizeof instance_number, "%d", req->instance_number > 0 ? req->instance_number : 1);
    check(doc.setInstanceNumber(instance_number), "Instance Number");
    check(doc.setManufacturer(long_string_value(device.manufacturer).c_str()), "request.manufacturer");
    check(doc.setManufacturerModelName(long_string_value(device.model_label).c_str()), "request.model_name");
    check(doc.setSoftwareVersions(long_string_value(device.software).c_str()), "request.software_version");
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

    build_content(doc, req, src, study, uids, device, library);

    // Current Requested Procedure Evidence: every referenced instance
    for (auto &e : library)
        check(doc.getCurrentRequestedProcedureEvidence().addItem(e.first.study.c_str(), e.first.series.c_str(),
                                                                 e.first.sop_class.c_str(), e.first.sop.c_str()),
              "evidence " + e.first.sop);

    // ---- dataset
    DcmFileFormat file;
    DcmDataset *ds = file.getDataset();
    check(doc.write(*ds), "SR document");
    // DSRDocument generated its own UIDs and creation time: ours replace them
    // (DCMTK makes only random UIDs; ours follow the content, sr_uid.cpp).
    check(ds->putAndInsertString(DCM_SeriesInstanceUID, uids.series.c_str()), "Series Instance UID");
    check(ds->putAndInsertString(DCM_SOPInstanceUID, uids.sop.c_str()), "SOP Instance UID");
    check(ds->putAndInsertString(DCM_InstanceCreationDate, date.c_str()), "Instance Creation Date");
    check(ds->putAndInsertString(DCM_InstanceCreationTime, time_s.c_str()), "Instance Creation Time");
    add_contributing_equipment(ds, device, date + time_s);

    if (out.sop_instance_uid_out) snprintf(out.sop_instance_uid_out, 65, "%s", uids.sop.c_str());

    const E_TransferSyntax xfer = EXS_LittleEndianExplicit;
    if (out.dcm_path) {
        OFCondition c = file.saveFile(out.dcm_path, xfer);
        if (c.bad()) fail(std::string(out.dcm_path) + ": cannot write: " + c.text());
    }
    if (out.dcm_buf) write_buffer(file, xfer, out.dcm_buf, out.dcm_len);
    if (out.xml_path) write_xml(ds, out.xml_path);
    if (out.json_path) write_text_file(out.json_path, findings_json(req, study, uids));
}

}  // namespace

}  // namespace udcm_sr

using namespace udcm_sr;

extern "C" {

udcm_sr_write_params udcm_sr_write_default_params(void)
{
    udcm_sr_write_params p;
    memset(&p, 0, sizeof p);
    return p;
}

int udcm_sr_write(const udcm_sr_request *req, const udcm_sr_write_params *params, char *err, size_t errlen)
{
    const udcm_sr_write_params none = udcm_sr_write_default_params();
    const udcm_sr_write_params &out = params ? *params : none;
    if (out.dcm_buf) *out.dcm_buf = nullptr;
    if (out.dcm_len) *out.dcm_len = 0;
    try {
        write_sr(req, out);
        return 0;
    } catch (const SrError &e) {
        set_err(err, errlen, "%s", e.msg.c_str());
    } catch (const std::exception &e) {
        set_err(err, errlen, "udcm_sr_write: %s", e.what());
    }
    if (out.dcm_buf && *out.dcm_buf) {
        free(*out.dcm_buf);
        *out.dcm_buf = nullptr;
    }
    return -1;
}

}  // extern "C"
