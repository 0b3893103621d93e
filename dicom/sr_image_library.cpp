// UniMed for Orthanc — SR writer: TID 1600 Image Library, and the image references of the report.
// DCMTK's TID1600_ImageLibrary makes the library, its groups and entries; the
// entries' frame lists are ours (see add_image_library).

#include "sr_internal.h"

#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcitem.h"

#include <map>
#include <tuple>

namespace udcm_sr {

bool ImageKey::operator<(const ImageKey &o) const
{
    return std::tie(study, series, sop) < std::tie(o.study, o.series, o.sop);
}

// Referenced Frame Number is allowed only for multi-frame IODs (PS3.3
// C.17.3.2.1; dciodvfy checks it). A multi-frame object of a single-frame
// SOP class (e.g. Secondary Capture with NumberOfFrames) is referenced whole.
static bool is_multiframe_sop_class(const std::string &uid)
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
ImageList collect_images(const udcm_sr_image_ref *refs, size_t n, const std::string &study)
{
    ImageList out;
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

ImageList all_images(const udcm_sr_request *req, const std::string &study)
{
    std::vector<udcm_sr_image_ref> all;
    for (size_t g = 0; g < req->n_groups; g++)
        all.insert(all.end(), req->groups[g].images, req->groups[g].images + req->groups[g].n_images);
    return collect_images(all.data(), all.size(), study);
}

DSRImageReferenceValue image_reference(const ImageKey &key, const std::set<uint32_t> &frames)
{
    DSRImageReferenceValue ref(key.sop_class.c_str(), key.sop.c_str());
    for (uint32_t f : frames)
        if (f > 0) ref.getFrameList().addItem((Sint32)f);
    return ref;
}

// One Image Library Group per source series (first-seen order), one entry
// per instance.  TID1600_ImageLibrary::addImageEntry takes the reference from
// an image's data set (SOP Class and Instance UID only, with
// withoutDescriptors); we have UIDs, not the images, so it gets a data set
// holding just those two.  Which frames are referenced is not something
// addImageEntry can say (a data set names the instance, not a frame
// selection), so the entry's image reference is then replaced by ours with
// its Referenced Frame Numbers.
void add_image_library(TID1600_ImageLibrary &library, const ImageList &images)
{
    check(library.createNewImageLibrary(), "Image Library");
    std::vector<std::string> series_order;
    std::map<std::string, std::vector<size_t>> by_series;
    for (size_t i = 0; i < images.size(); i++) {
        const std::string &s = images[i].first.series;
        if (!by_series.count(s)) series_order.push_back(s);
        by_series[s].push_back(i);
    }
    for (const std::string &s : series_order) {
        check(library.addImageGroup(), "Image Library Group");
        for (size_t i : by_series[s]) {
            const ImageKey &key = images[i].first;
            const std::string what = "Image Library entry " + key.sop;
            DcmItem instance;
            check(instance.putAndInsertString(DCM_SOPClassUID, key.sop_class.c_str()), what);
            check(instance.putAndInsertString(DCM_SOPInstanceUID, key.sop.c_str()), what);
            check(library.addImageEntry(instance, TID1600_ImageLibrary::withoutDescriptors), what);
            if (images[i].second.empty()) continue;
            // addImageEntry leaves the cursor on the new entry.
            DSRContentItem &entry = library.getCurrentContentItem();
            if (entry.getValueType() != DSRTypes::VT_Image ||
                entry.getImageReference().getSOPInstanceUID() != OFString(key.sop.c_str()))
                fail(what + ": the Image Library cursor is not on the new entry");
            check(entry.setImageReference(image_reference(key, images[i].second)), what);
        }
    }
}

}  // namespace udcm_sr
