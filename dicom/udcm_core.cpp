/* unimed_dicom: open, header information, decoding of stored values. */
#include "udcm_internal.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <mutex>
#include <new>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include <dcmtk/dcmdata/dcfcache.h>
#include <dcmtk/dcmjpeg/djdecode.h>
#include <dcmtk/dcmjpls/djdecode.h>
#include <dcmtk/oflog/oflog.h>

namespace udcm {

void set_error(const std::string &name, char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0) return;
    int n = snprintf(err, errlen, "%s: ", name.c_str());
    if (n < 0) n = 0;
    if ((size_t)n >= errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

DcmItem *functional_group(DcmDataset *ds, uint32_t frame, const DcmTagKey &macro)
{
    DcmItem *fg = nullptr, *it = nullptr;
    if (ds->findAndGetSequenceItem(DCM_PerFrameFunctionalGroupsSequence, fg, (long)frame).good() && fg &&
        fg->findAndGetSequenceItem(macro, it, 0).good() && it)
        return it;
    fg = nullptr;
    it = nullptr;
    if (ds->findAndGetSequenceItem(DCM_SharedFunctionalGroupsSequence, fg, 0).good() && fg &&
        fg->findAndGetSequenceItem(macro, it, 0).good() && it)
        return it;
    return nullptr;
}

} // namespace udcm

using udcm::set_error;

/* DCMTK 3.6.9 deprecates DcmXfer::isEncapsulated() (encapsulated and
 * compressed) in favour of the two questions it combined; same answer. */
static bool xfer_encapsulated(const DcmXfer &x)
{
#if PACKAGE_VERSION_NUMBER >= 369
    return x.usesEncapsulatedFormat() && x.isPixelDataCompressed();
#else
    return x.isEncapsulated();
#endif
}

static std::once_flag g_init_once;

static void udcm_global_init()
{
    /* DCMTK logs warnings to stderr by default: quiet unless asked. */
    if (!getenv("UNIMED_DCMTK_LOG"))
        OFLog::configure(OFLogger::OFF_LOG_LEVEL);
    else
        OFLog::configure(OFLogger::WARN_LOG_LEVEL);
    /* Keep the codec's colour model decisions visible through
     * getUncompressedFrame's decompressedColorModel. */
    /* Standard attributes written as UN (archives that turned Implicit into
     * Explicit VR without a dictionary) are read with their dictionary VR,
     * as pydicom does; DCMTK decodes the value in the transfer syntax's byte
     * order. */
    dcmEnableUnknownVRConversion.set(OFTrue);
    DJDecoderRegistration::registerCodecs(EDC_photometricInterpretation);
    DJLSDecoderRegistration::registerCodecs();
    /* RLE is decoded by udcm_rle.cpp: DCMTK's RLE codec is deliberately not
     * registered (DCMTK 3.6.7 reads past its buffer on crafted headers). */
}

extern "C" void udcm_limits_default(udcm_limits *l)
{
    if (!l) return;
    l->max_rows = 65535;
    l->max_columns = 65535;
    l->max_frames = 1000000;
    l->max_frame_pixels = (uint64_t)1 << 28;
    l->max_frame_bytes = (uint64_t)1 << 30;
    l->max_input_bytes = (uint64_t)1 << 33;
    l->max_sequence_depth = 64;
    l->max_elements = 4000000;
    l->max_decode_bytes = (uint64_t)1 << 29;
}

extern "C" void udcm_free(void *p) { free(p); }

/* ---- header helpers ---------------------------------------------------- */

static void get_str(DcmItem *it, const DcmTagKey &tag, char *dst, size_t cap)
{
    dst[0] = '\0';
    if (!it) return;
    OFString s;
    if (it->findAndGetOFStringArray(tag, s).good()) {
        /* trim trailing spaces / NULs kept by some writers */
        size_t n = s.length();
        while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\0')) n--;
        size_t k = std::min(n, cap - 1);
        memcpy(dst, s.c_str(), k);
        dst[k] = '\0';
        for (size_t i = 0; i < k; i++)
            if ((unsigned char)dst[i] < 0x20) dst[i] = ' ';
    }
}

static bool get_f64(DcmItem *it, const DcmTagKey &tag, double &v, unsigned long pos = 0)
{
    if (!it) return false;
    Float64 f = 0;
    if (it->findAndGetFloat64(tag, f, pos).good() && std::isfinite(f)) {
        v = f;
        return true;
    }
    return false;
}

static bool get_int(DcmItem *it, const DcmTagKey &tag, long &v)
{
    if (!it) return false;
    DcmElement *e = nullptr;
    if (it->findAndGetElement(tag, e).good() && e && e->getLength() > 0) {
        Sint32 s;
        Uint32 u;
        Uint16 u16;
        Sint16 s16;
        if (e->getUint16(u16).good()) { v = u16; return true; }
        if (e->getSint16(s16).good()) { v = s16; return true; }
        if (e->getUint32(u).good()) { v = (long)u; return true; }
        if (e->getSint32(s).good()) { v = s; return true; }
        OFString str;
        if (e->getOFString(str, 0).good()) {
            char *end = nullptr;
            errno = 0;
            long x = strtol(str.c_str(), &end, 10);
            if (end != str.c_str() && errno == 0) { v = x; return true; }
        }
    }
    return false;
}

/* Window centre/width and function of frame 0 (or `frame`). */
static bool window_of(DcmDataset *ds, uint32_t frame, double &c, double &w, char *fn, size_t fncap)
{
    DcmItem *src = udcm::functional_group(ds, frame, DCM_FrameVOILUTSequence);
    if (!src || !src->tagExists(DCM_WindowCenter)) src = ds;
    if (get_f64(src, DCM_WindowCenter, c) && get_f64(src, DCM_WindowWidth, w)) {
        get_str(src, DCM_VOILUTFunction, fn, fncap);
        return true;
    }
    fn[0] = '\0';
    return false;
}

static void fill_info(udcm_handle *h)
{
    udcm_info &in = h->info;
    DcmDataset *ds = h->ds;
    memset(&in, 0, sizeof in);
    snprintf(in.name, sizeof in.name, "%s", h->name.c_str());
    get_str(ds, DCM_StudyInstanceUID, in.study_uid, sizeof in.study_uid);
    get_str(ds, DCM_SeriesInstanceUID, in.series_uid, sizeof in.series_uid);
    get_str(ds, DCM_SOPInstanceUID, in.sop_instance_uid, sizeof in.sop_instance_uid);
    get_str(ds, DCM_SOPClassUID, in.sop_class_uid, sizeof in.sop_class_uid);
    if (!in.sop_class_uid[0])
        get_str(h->ff.getMetaInfo(), DCM_MediaStorageSOPClassUID, in.sop_class_uid, sizeof in.sop_class_uid);
    if (in.sop_class_uid[0]) {
        const char *nm = dcmFindNameOfUID(in.sop_class_uid);
        if (nm) snprintf(in.sop_class_name, sizeof in.sop_class_name, "%s", nm);
    }
    get_str(ds, DCM_Modality, in.modality, sizeof in.modality);
    /* an inflated data set reports the file's transfer syntax */
    DcmXfer xf(h->deflated ? EXS_DeflatedLittleEndianExplicit : h->xfer);
    snprintf(in.transfer_syntax_uid, sizeof in.transfer_syntax_uid, "%s", xf.getXferID());
    snprintf(in.transfer_syntax_name, sizeof in.transfer_syntax_name, "%s", xf.getXferName());
    in.encapsulated = xfer_encapsulated(xf) ? 1 : 0;

    in.has_pixel_data = ds->tagExists(DCM_PixelData) ? 1 : 0;
    long v;
    in.rows = get_int(ds, DCM_Rows, v) ? (int)v : 0;
    in.columns = get_int(ds, DCM_Columns, v) ? (int)v : 0;
    in.frames = 1;
    if (get_int(ds, DCM_NumberOfFrames, v)) in.frames = v > INT32_MAX ? INT32_MAX : (int)(v < 0 ? -1 : v);
    in.samples_per_pixel = get_int(ds, DCM_SamplesPerPixel, v) ? (int)v : 0;
    get_str(ds, DCM_PhotometricInterpretation, in.photometric, sizeof in.photometric);
    in.bits_allocated = get_int(ds, DCM_BitsAllocated, v) ? (int)v : 0;
    in.bits_stored = get_int(ds, DCM_BitsStored, v) ? (int)v : in.bits_allocated;
    in.high_bit = get_int(ds, DCM_HighBit, v) ? (int)v : in.bits_stored - 1;
    in.pixel_representation = get_int(ds, DCM_PixelRepresentation, v) ? (int)v : 0;
    in.planar_configuration = get_int(ds, DCM_PlanarConfiguration, v) ? (int)v : 0;
    in.is_image = (in.has_pixel_data && in.rows > 0 && in.columns > 0) ? 1 : 0;
    in.is_enhanced = (ds->tagExists(DCM_SharedFunctionalGroupsSequence) ||
                      ds->tagExists(DCM_PerFrameFunctionalGroupsSequence)) ? 1 : 0;

    DcmItem *pvt = udcm::functional_group(ds, 0, DCM_PixelValueTransformationSequence);
    DcmItem *rs = (pvt && pvt->tagExists(DCM_RescaleSlope)) ? pvt : ds;
    in.rescale_slope = 1.0;
    in.rescale_intercept = 0.0;
    if (get_f64(rs, DCM_RescaleSlope, in.rescale_slope)) {
        in.has_rescale = 1;
        get_f64(rs, DCM_RescaleIntercept, in.rescale_intercept);
    } else if (get_f64(rs, DCM_RescaleIntercept, in.rescale_intercept)) {
        in.has_rescale = 1;
    }
    in.has_modality_lut_sequence = ds->tagExists(DCM_ModalityLUTSequence) ? 1 : 0;
    in.has_window = window_of(ds, 0, in.window_center, in.window_width, in.voi_lut_function,
                              sizeof in.voi_lut_function) ? 1 : 0;
    in.has_voi_lut_sequence = ds->tagExists(DCM_VOILUTSequence) ? 1 : 0;

    DcmItem *pm = udcm::functional_group(ds, 0, DCM_PixelMeasuresSequence);
    DcmItem *ps = ds->tagExists(DCM_PixelSpacing) ? ds : pm;
    if (get_f64(ps, DCM_PixelSpacing, in.pixel_spacing[0], 0) &&
        get_f64(ps, DCM_PixelSpacing, in.pixel_spacing[1], 1))
        in.has_pixel_spacing = 1;
    if (get_f64(ds, DCM_ImagerPixelSpacing, in.imager_pixel_spacing[0], 0) &&
        get_f64(ds, DCM_ImagerPixelSpacing, in.imager_pixel_spacing[1], 1))
        in.has_imager_pixel_spacing = 1;

    DcmItem *pp = udcm::functional_group(ds, 0, DCM_PlanePositionSequence);
    DcmItem *pos = ds->tagExists(DCM_ImagePositionPatient) ? ds : pp;
    in.has_image_position = 1;
    for (int i = 0; i < 3; i++)
        if (!get_f64(pos, DCM_ImagePositionPatient, in.image_position[i], (unsigned long)i))
            in.has_image_position = 0;
    DcmItem *po = udcm::functional_group(ds, 0, DCM_PlaneOrientationSequence);
    DcmItem *ori = ds->tagExists(DCM_ImageOrientationPatient) ? ds : po;
    in.has_image_orientation = 1;
    for (int i = 0; i < 6; i++)
        if (!get_f64(ori, DCM_ImageOrientationPatient, in.image_orientation[i], (unsigned long)i))
            in.has_image_orientation = 0;
    if (get_int(ds, DCM_InstanceNumber, v)) { in.has_instance_number = 1; in.instance_number = (int)v; }
    if (get_int(ds, DCM_SeriesNumber, v)) { in.has_series_number = 1; in.series_number = (int)v; }
    get_str(ds, DCM_BodyPartExamined, in.body_part_examined, sizeof in.body_part_examined);
    get_str(ds, DCM_SeriesDescription, in.series_description, sizeof in.series_description);
    get_str(ds, DCM_PatientID, in.patient_id, sizeof in.patient_id);
    get_str(ds, DCM_PatientName, in.patient_name, sizeof in.patient_name);
    get_str(ds, DCM_StudyDate, in.study_date, sizeof in.study_date);
    get_str(ds, DCM_AccessionNumber, in.accession_number, sizeof in.accession_number);

    get_str(ds, DCM_ImageType, in.image_type, sizeof in.image_type);
    in.is_wsi = strcmp(in.sop_class_uid, UID_VLWholeSlideMicroscopyImageStorage) == 0 ? 1 : 0;
    {
        OFString t;
        if (ds->findAndGetOFString(DCM_ImageType, t, 2).good())
            snprintf(in.wsi_image_flavor, sizeof in.wsi_image_flavor, "%s", t.c_str());
    }
    Uint32 u = 0;
    if (ds->findAndGetUint32(DCM_TotalPixelMatrixColumns, u).good()) in.total_matrix_columns = u;
    if (ds->findAndGetUint32(DCM_TotalPixelMatrixRows, u).good()) in.total_matrix_rows = u;
    get_str(ds, DCM_DimensionOrganizationType, in.dimension_organization_type,
            sizeof in.dimension_organization_type);
}

static bool is_j2k(E_TransferSyntax x)
{
    return x == EXS_JPEG2000LosslessOnly || x == EXS_JPEG2000 ||
           x == EXS_JPEG2000MulticomponentLosslessOnly || x == EXS_JPEG2000Multicomponent;
}

static bool known_photometric(const char *p)
{
    static const char *const k[] = {"MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422",
                                    "YBR_PARTIAL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT",
                                    "PALETTE COLOR"};
    for (const char *s : k)
        if (strcmp(p, s) == 0) return true;
    return false;
}

/* Checks that make decoding meaningful and safe; returns "" or the reason. */
static std::string check_image(udcm_handle *h)
{
    const udcm_info &in = h->info;
    char b[256];
    if (!in.has_pixel_data) {
        if (h->ds->tagExists(DCM_FloatPixelData) || h->ds->tagExists(DCM_DoubleFloatPixelData))
            return "Float Pixel Data is not supported";
        snprintf(b, sizeof b, "not an image: no Pixel Data (SOP class %s)",
                 in.sop_class_name[0] ? in.sop_class_name : (in.sop_class_uid[0] ? in.sop_class_uid : "unknown"));
        return b;
    }
    if (in.rows <= 0 || in.columns <= 0) {
        snprintf(b, sizeof b, "invalid image size Rows=%d Columns=%d", in.rows, in.columns);
        return b;
    }
    if (in.frames <= 0) {
        snprintf(b, sizeof b, "invalid Number of Frames %d", in.frames);
        return b;
    }
    const udcm_limits &L = h->limits;
    if (L.max_rows && (uint32_t)in.rows > L.max_rows) {
        snprintf(b, sizeof b, "Rows %d exceeds the limit %u", in.rows, L.max_rows);
        return b;
    }
    if (L.max_columns && (uint32_t)in.columns > L.max_columns) {
        snprintf(b, sizeof b, "Columns %d exceeds the limit %u", in.columns, L.max_columns);
        return b;
    }
    if (L.max_frames && (uint32_t)in.frames > L.max_frames) {
        snprintf(b, sizeof b, "Number of Frames %d exceeds the limit %u", in.frames, L.max_frames);
        return b;
    }
    uint64_t px = (uint64_t)in.rows * (uint64_t)in.columns;
    if (L.max_frame_pixels && px > L.max_frame_pixels) {
        snprintf(b, sizeof b, "frame of %dx%d pixels exceeds the limit of %llu pixels", in.columns, in.rows,
                 (unsigned long long)L.max_frame_pixels);
        return b;
    }
    if (in.samples_per_pixel != 1 && in.samples_per_pixel != 3) {
        snprintf(b, sizeof b, "unsupported Samples per Pixel %d", in.samples_per_pixel);
        return b;
    }
    if (in.bits_allocated == 1 && (in.encapsulated || in.samples_per_pixel != 1)) {
        return "Bits Allocated 1 is only supported for uncompressed single-sample data";
    }
    if (in.bits_allocated != 1 && in.bits_allocated != 8 && in.bits_allocated != 16 && in.bits_allocated != 32) {
        snprintf(b, sizeof b, "unsupported Bits Allocated %d", in.bits_allocated);
        return b;
    }
    if (in.bits_stored < 1 || in.bits_stored > in.bits_allocated || in.high_bit < in.bits_stored - 1 ||
        in.high_bit >= in.bits_allocated) {
        snprintf(b, sizeof b, "inconsistent Bits Allocated/Stored/High Bit %d/%d/%d", in.bits_allocated,
                 in.bits_stored, in.high_bit);
        return b;
    }
    if (in.pixel_representation != 0 && in.pixel_representation != 1) {
        snprintf(b, sizeof b, "invalid Pixel Representation %d", in.pixel_representation);
        return b;
    }
    if (!known_photometric(in.photometric)) {
        snprintf(b, sizeof b, "unsupported Photometric Interpretation '%s'", in.photometric);
        return b;
    }
    bool mono = strncmp(in.photometric, "MONOCHROME", 10) == 0 || strcmp(in.photometric, "PALETTE COLOR") == 0;
    if (mono != (in.samples_per_pixel == 1)) {
        snprintf(b, sizeof b, "Photometric Interpretation %s with Samples per Pixel %d", in.photometric,
                 in.samples_per_pixel);
        return b;
    }
    uint64_t fb = px * (uint64_t)in.samples_per_pixel * (uint64_t)std::max(1, in.bits_allocated / 8);
    uint64_t fb_out = px * (uint64_t)in.samples_per_pixel * 4; /* int32 output */
    if (L.max_frame_bytes && std::max(fb, fb_out) > L.max_frame_bytes) {
        snprintf(b, sizeof b, "decoded frame of %llu bytes exceeds the limit %llu", (unsigned long long)fb_out,
                 (unsigned long long)L.max_frame_bytes);
        return b;
    }
    if (fb > 0xFFFFFFF0ull) return "frame larger than 4 GiB";
    h->over_budget.clear();
    if (L.max_decode_bytes) {
        const uint64_t need = px * (uint64_t)in.samples_per_pixel * UDCM_DECODE_BYTES_PER_SAMPLE;
        if (need > L.max_decode_bytes) {
            snprintf(b, sizeof b,
                     "frame of %dx%dx%d needs about %llu MiB to decode, over the decode budget of %llu MiB "
                     "(max_decode_bytes)",
                     in.columns, in.rows, in.samples_per_pixel, (unsigned long long)(need >> 20),
                     (unsigned long long)(L.max_decode_bytes >> 20));
            h->over_budget = b;
            /* JPEG 2000 can be decoded at a reduced resolution level */
            if (!is_j2k(h->xfer)) return b;
        }
    }
    if (!in.encapsulated) {
        if (!strncmp(in.photometric, "YBR_", 4) && strstr(in.photometric, "_42") && in.columns % 2)
            return "subsampled YBR with an odd number of columns";
        if (h->xfer == EXS_Unknown) return "unknown transfer syntax";
    }
    return "";
}

/* The parse stopped for want of the Sequence Delimitation Item that ends
 * encapsulated Pixel Data, at the end of the file, after a complete last
 * fragment that ends a JPEG / JPEG-LS / JPEG 2000 stream (FF D9: EOI or
 * EOC, possibly followed by one padding byte): nothing is missing but the delimiter (fo-dicom GH1339), and the
 * fragments read are used as they are, as pydicom and GDCM do. */
static bool only_final_delimiter_missing(udcm_handle *h, OFCondition st)
{
    if (st != EC_SequDelimitationItemMissing) return false;
    DcmDataset *d = h->ff.getDataset();
    if (!d || d->card() == 0) return false;
    DcmPixelData *pd = dynamic_cast<DcmPixelData *>(d->getElement(d->card() - 1));
    const E_TransferSyntax x = d->getOriginalXfer();
    if (!pd || pd->getTag().getXTag() != DCM_PixelData || !xfer_encapsulated(DcmXfer(x)) || x == EXS_RLELossless)
        return false;
    DcmPixelSequence *seq = nullptr;
    if (pd->getEncapsulatedRepresentation(x, nullptr, seq).bad() || !seq || seq->card() < 2) return false;
    DcmPixelItem *last = nullptr;
    if (seq->getItem(last, seq->card() - 1).bad() || !last) return false;
    const Uint32 L = last->getLength();
    uint8_t t[4] = {0, 0, 0, 0};
    if (L < 4 || L != last->getLengthField() ||
        last->getPartialValue(t, L - 4, 4, &h->cache, EBO_LittleEndian).bad())
        return false;
    /* FF D9, or FF D9 and the zero byte padding an odd stream */
    return (t[2] == 0xFF && t[3] == 0xD9) || (t[1] == 0xFF && t[2] == 0xD9 && t[3] == 0);
}

static udcm_handle *finish_open(udcm_handle *h, OFCondition st, char *err, size_t errlen)
{
    if (st.bad() && only_final_delimiter_missing(h, st)) st = EC_Normal;
    if (st.bad()) {
        /* Name the element the parser stopped in: a truncated file usually
         * stops inside Pixel Data. */
        DcmDataset *d = h->ff.getDataset();
        if (d && d->card() > 0) {
            DcmObject *o = d->getElement(d->card() - 1);
            DcmTag t = o->getTag();
            /* after a failed parse only values with a sane length field are
             * touched (a corrupt one would be loaded at its claimed size) */
            auto u16 = [d](const DcmTagKey &k, Uint16 dflt) {
                DcmElement *e = nullptr;
                Uint16 v = dflt;
                if (d->findAndGetElement(k, e).good() && e && e->getLengthField() == 2) e->getUint16(v);
                return v;
            };
            Uint16 r = u16(DCM_Rows, 0), c = u16(DCM_Columns, 0), spp = u16(DCM_SamplesPerPixel, 1),
                   ba = u16(DCM_BitsAllocated, 0);
            char extra[160] = "";
            const bool encaps = xfer_encapsulated(DcmXfer(d->getOriginalXfer()));
            if (t.getXTag() == DCM_PixelData && r && c && ba >= 8 && !encaps) {
                long nf = 1;
                DcmElement *fe = nullptr;
                if (d->findAndGetElement(DCM_NumberOfFrames, fe).good() && fe && fe->getLengthField() <= 12)
                    get_int(d, DCM_NumberOfFrames, nf);
                if (nf < 1) nf = 1;
                unsigned long long need = (unsigned long long)r * c * spp * (ba / 8) * (unsigned long long)nf;
                if (nf == 1)
                    snprintf(extra, sizeof extra, "; %ux%ux%u %u-bit needs %llu", c, r, spp, ba, need);
                else
                    snprintf(extra, sizeof extra, "; %ld frames of %ux%ux%u %u-bit need %llu", nf, c, r, spp, ba, need);
            }
            if (t.getXTag() == DCM_PixelData && encaps)
                set_error(h->name, err, errlen, "cannot parse DICOM: %s: data ends inside the encapsulated Pixel Data "
                          "(fragments truncated)", st.text());
            else if (o->getLengthField() != DCM_UndefinedLength && o->getLengthField() > 0)
                set_error(h->name, err, errlen,
                          "cannot parse DICOM: %s: data ends inside %s %s, which declares %lu bytes%s", st.text(),
                          t.getTagName(), t.toString().c_str(), (unsigned long)o->getLengthField(), extra);
            else
                set_error(h->name, err, errlen, "cannot parse DICOM: %s: data ends inside %s %s", st.text(),
                          t.getTagName(), t.toString().c_str());
        } else {
            set_error(h->name, err, errlen, "cannot parse DICOM: %s", st.text());
        }
        delete h;
        return nullptr;
    }
    h->ds = h->ff.getDataset();
    if (!h->ds) {
        set_error(h->name, err, errlen, "cannot parse DICOM: no dataset");
        delete h;
        return nullptr;
    }
    h->xfer = h->ds->getOriginalXfer();
    fill_info(h);
    if (h->info.has_pixel_data || h->info.rows || h->info.columns) {
        h->not_decodable = check_image(h);
        /* Limits are refusals at open: nothing larger is ever allocated. */
        if (h->not_decodable.find("exceeds the limit") != std::string::npos) {
            set_error(h->name, err, errlen, "%s", h->not_decodable.c_str());
            delete h;
            return nullptr;
        }
    } else {
        h->not_decodable = check_image(h);
    }
    return h;
}

/* A file DCMTK can parse (and lazily re-read) by name: a memfd when the
 * system has them, else a temporary file removed at close.  Sets h->memfd
 * (and h->tmp_path) and path.  Returns false when neither can be made. */
static bool make_scratch_file(udcm_handle *h, std::string &path)
{
    int fd = memfd_create("udcm", MFD_CLOEXEC);
    if (fd >= 0) {
        char p[64];
        snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
        if (access(p, R_OK) == 0) {
            h->memfd = fd;
            path = p;
            return true;
        }
        close(fd);
    }
    const char *td = getenv("TMPDIR");
    std::string t = std::string(td && *td ? td : "/tmp") + "/udcm-XXXXXX";
    std::vector<char> tb(t.begin(), t.end());
    tb.push_back('\0');
    fd = mkostemp(tb.data(), O_CLOEXEC);
    if (fd < 0) return false;
    h->memfd = fd;
    h->tmp_path = tb.data();
    path = h->tmp_path;
    return true;
}

static void release_scratch_file(udcm_handle *h)
{
    if (h->memfd >= 0) close(h->memfd);
    h->memfd = -1;
    if (!h->tmp_path.empty()) unlink(h->tmp_path.c_str());
    h->tmp_path.clear();
}

static bool write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = static_cast<const uint8_t *>(buf);
    while (len > 0) {
        ssize_t k = write(fd, p, len);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return false;
        p += k;
        len -= (size_t)k;
    }
    return true;
}

/* Does the File Meta Information of the file name a transfer syntax whose
 * data set is a compressed stream (Deflated)?  Read by DCMTK itself, meta
 * information only, so that the answer is the one its full read would act
 * on. */
static bool meta_says_stream_compressed(const std::string &path)
{
    DcmFileFormat probe;
    probe.loadFile(OFFilename(path.c_str()), EXS_Unknown, EGL_noChange, 4096, ERM_metaOnly);
    DcmMetaInfo *mi = probe.getMetaInfo();
    DcmStack stack;
    if (!mi || mi->search(DCM_TransferSyntaxUID, stack).bad() || !stack.top()) return false;
    DcmElement *e = dynamic_cast<DcmElement *>(stack.top());
    if (!e) return false;
    /* A length beyond the file: DCMTK's own read stops at this element
     * ("larger than remaining bytes"), and loading the value would
     * allocate what the length claims. */
    struct stat sb;
    const Uint32 L = e->getLengthField();
    if (stat(path.c_str(), &sb) != 0 || L == DCM_UndefinedLength || (uint64_t)L > (uint64_t)sb.st_size) return false;
    char *uid = nullptr;
    if (e->getString(uid).bad() || !uid) return false;
    return DcmXfer(uid).getStreamCompression() != ESC_none;
}

static bool write_all(int fd, const void *buf, size_t len);
static bool make_scratch_file(udcm_handle *h, std::string &path);
static void release_scratch_file(udcm_handle *h);

/* The structure guard (udcm_guard.cpp) over the bytes DCMTK is about to
 * parse: the file, the scratch copy of a memory input, or the inflated data
 * set.  Items standing among the top-level elements are removed: the data
 * set without them goes to a new scratch file and `path` names it.  Returns
 * "" or the reason. */
static std::string guard_file(udcm_handle *h, std::string &path, const udcm_limits &lim)
{
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        std::string e = std::string("cannot read: ") + strerror(errno);
        if (fd >= 0) close(fd);
        return e;
    }
    if (sb.st_size <= 0) {
        close(fd);
        return ""; /* DCMTK reports the empty file */
    }
    void *map = mmap(nullptr, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return std::string("cannot map the file: ") + strerror(errno);
    const uint8_t *bytes = static_cast<const uint8_t *>(map);
    const size_t n = (size_t)sb.st_size;
    std::vector<std::pair<size_t, size_t>> strays;
    std::string e = udcm::structure_guard(bytes, n, lim, &strays);
    if (e.empty() && !strays.empty()) {
        /* the mapping outlives the descriptor of a scratch file it maps */
        release_scratch_file(h);
        std::string np;
        bool ok = make_scratch_file(h, np);
        size_t at = 0;
        for (const auto &s : strays) {
            ok = ok && write_all(h->memfd, bytes + at, s.first - at);
            at = s.first + s.second;
        }
        ok = ok && write_all(h->memfd, bytes + at, n - at);
        if (ok) path = np;
        else e = std::string("cannot store the data set without its stray items: ") + strerror(errno);
    }
    munmap(map, n);
    return e;
}

/* Parse `path` (the input: a file, or the scratch file holding a memory
 * input).  A Deflated data set never reaches DCMTK's stream inflater: it is
 * inflated here (bounded by max_input_bytes and 1 GiB) into a scratch
 * Part 10 file in Explicit VR Little Endian, which DCMTK parses with the
 * usual length checks.  data/len: the input bytes when in memory, else
 * NULL (the file is mapped when needed). */
static udcm_handle *load_and_finish(udcm_handle *h, std::string path, const void *data, size_t len, char *err,
                                    size_t errlen)
{
    if (meta_says_stream_compressed(path)) {
        void *map = nullptr;
        size_t maplen = 0;
        if (!data) {
            int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
            struct stat sb;
            if (fd < 0 || fstat(fd, &sb) != 0 || sb.st_size <= 0) {
                set_error(h->name, err, errlen, "cannot read: %s", strerror(errno));
                if (fd >= 0) close(fd);
                delete h;
                return nullptr;
            }
            maplen = (size_t)sb.st_size;
            map = mmap(nullptr, maplen, PROT_READ, MAP_PRIVATE, fd, 0);
            close(fd);
            if (map == MAP_FAILED) {
                set_error(h->name, err, errlen, "cannot map the file: %s", strerror(errno));
                delete h;
                return nullptr;
            }
            data = map;
            len = maplen;
        }
        /* the scratch file holding a memory input is not needed any more */
        release_scratch_file(h);
        std::string e;
        if (!make_scratch_file(h, path))
            e = std::string("cannot create a file for the inflated data set: ") + strerror(errno);
        else
            e = udcm::write_inflated_file(static_cast<const uint8_t *>(data), len, h->limits.max_input_bytes,
                                          h->memfd);
        if (map) munmap(map, maplen);
        if (!e.empty()) {
            set_error(h->name, err, errlen, "%s", e.c_str());
            delete h;
            return nullptr;
        }
        h->deflated = true;
    }
    {
        std::string e = guard_file(h, path, h->limits);
        if (!e.empty()) {
            set_error(h->name, err, errlen, "%s", e.c_str());
            delete h;
            return nullptr;
        }
    }
    /* Values longer than 4 KiB stay in the file until used: only the
     * fragments / bytes of the requested frame are ever read. */
    OFCondition st = h->ff.loadFile(OFFilename(path.c_str()), EXS_Unknown, EGL_noChange, 4096, ERM_autoDetect);
    return finish_open(h, st, err, errlen);
}

extern "C" udcm_handle *udcm_open_file(const char *path, const udcm_limits *limits, char *err, size_t errlen)
{
    std::call_once(g_init_once, udcm_global_init);
    if (!path) {
        set_error("<null>", err, errlen, "no path");
        return nullptr;
    }
    udcm_handle *h = new (std::nothrow) udcm_handle;
    if (!h) {
        set_error(path, err, errlen, "out of memory");
        return nullptr;
    }
    h->name = path;
    if (limits) h->limits = *limits; else udcm_limits_default(&h->limits);
    struct stat sb;
    if (stat(path, &sb) != 0) {
        set_error(h->name, err, errlen, "cannot open: %s", strerror(errno));
        delete h;
        return nullptr;
    }
    if (!S_ISREG(sb.st_mode)) {
        set_error(h->name, err, errlen, "not a regular file");
        delete h;
        return nullptr;
    }
    if (h->limits.max_input_bytes && (uint64_t)sb.st_size > h->limits.max_input_bytes) {
        set_error(h->name, err, errlen, "file of %lld bytes exceeds the limit %llu", (long long)sb.st_size,
                  (unsigned long long)h->limits.max_input_bytes);
        delete h;
        return nullptr;
    }
    return load_and_finish(h, path, nullptr, 0, err, errlen);
}

extern "C" udcm_handle *udcm_open_memory(const void *buf, size_t len, const char *name, const udcm_limits *limits,
                                         char *err, size_t errlen)
{
    std::call_once(g_init_once, udcm_global_init);
    udcm_handle *h = new (std::nothrow) udcm_handle;
    if (!h) {
        set_error(name ? name : "<memory>", err, errlen, "out of memory");
        return nullptr;
    }
    h->name = name ? name : "<memory>";
    if (limits) h->limits = *limits; else udcm_limits_default(&h->limits);
    if (!buf || len == 0) {
        set_error(h->name, err, errlen, "empty input");
        delete h;
        return nullptr;
    }
    if (h->limits.max_input_bytes && (uint64_t)len > h->limits.max_input_bytes) {
        set_error(h->name, err, errlen, "input of %zu bytes exceeds the limit %llu", len,
                  (unsigned long long)h->limits.max_input_bytes);
        delete h;
        return nullptr;
    }
    if (len > 0xFFFFFFF0u) {
        set_error(h->name, err, errlen, "input larger than 4 GiB");
        delete h;
        return nullptr;
    }
    /* Parse through an anonymous file: DCMTK's file input checks each
     * element length against the bytes left (its buffer stream does not,
     * and would allocate whatever a corrupt length claims), and large
     * values are then read lazily, one frame at a time. */
    std::string path;
    if (!make_scratch_file(h, path)) {
        set_error(h->name, err, errlen, "cannot create an in-memory file: %s", strerror(errno));
        delete h;
        return nullptr;
    }
    if (!write_all(h->memfd, buf, len)) {
        set_error(h->name, err, errlen, "cannot store the input: %s", strerror(errno));
        delete h;
        return nullptr;
    }
    return load_and_finish(h, path, buf, len, err, errlen);
}

udcm_handle::~udcm_handle()
{
    /* the data set (member ff) may still refer to the file: it is destroyed
     * after this body runs, and only closes its own descriptors */
    if (memfd >= 0) close(memfd);
    if (!tmp_path.empty()) unlink(tmp_path.c_str());
}

extern "C" void udcm_close(udcm_handle *h) { delete h; }

extern "C" int udcm_get_info(const udcm_handle *h, udcm_info *info)
{
    if (!h || !info) return -1;
    *info = h->info;
    return 0;
}

extern "C" int udcm_decodable(const udcm_handle *h, char *err, size_t errlen)
{
    if (!h) return 0;
    if (h->not_decodable.empty()) return 1;
    set_error(h->name, err, errlen, "%s", h->not_decodable.c_str());
    return 0;
}

extern "C" size_t udcm_frame_samples(const udcm_handle *h)
{
    if (!h || !h->info.is_image) return 0;
    return (size_t)h->info.rows * (size_t)h->info.columns * (size_t)(h->info.samples_per_pixel == 3 ? 3 : 1);
}

/* ---- stored values ------------------------------------------------------ */

/* Raw cells (local byte order) -> stored values. */
static void cells_to_stored(const uint8_t *buf, size_t n, const udcm_info &in, int32_t *out)
{
    const int shift = in.high_bit + 1 - in.bits_stored;
    const int bs = in.bits_stored;
    const uint32_t mask = bs >= 32 ? 0xFFFFFFFFu : ((1u << bs) - 1u);
    const bool sgn = in.pixel_representation == 1;
    for (size_t i = 0; i < n; i++) {
        uint32_t raw;
        if (in.bits_allocated == 8) {
            raw = buf[i];
        } else if (in.bits_allocated == 16) {
            uint16_t v;
            memcpy(&v, buf + 2 * i, 2);
            raw = v;
        } else {
            memcpy(&raw, buf + 4 * i, 4);
        }
        uint32_t v = (raw >> shift) & mask;
        if (sgn && bs < 32 && (v & (1u << (bs - 1)))) v |= ~mask;
        int32_t s;
        memcpy(&s, &v, 4);
        out[i] = s;
    }
}

static void planar_to_interleaved(std::vector<int32_t> &v, size_t px)
{
    std::vector<int32_t> t(v.size());
    for (size_t i = 0; i < px; i++) {
        t[3 * i] = v[i];
        t[3 * i + 1] = v[px + i];
        t[3 * i + 2] = v[2 * px + i];
    }
    v.swap(t);
}

/* Does the marker walk DCMTK 3.6.7 does over the first fragment of a JPEG
 * frame, looking for the frame header's precision, stop advancing?  Our own
 * statement of its rules: from offset 0, while at least 5 bytes are left:
 * SOFn (C0-CF except C4, C8, CC) ends the walk; RSTn, SOI and EOI (D0-D9)
 * and reserved markers (02-BF) are 2 bytes; every other marker from C4 to
 * FE is followed by a 16-bit length; a fill byte (FF FF) advances one
 * byte; TEM (01) is not skipped at all (the walk stalls); anything else
 * ends the walk.  Every rule must be mirrored: a run of fill bytes that
 * ends in FF 01 stalls it too (a fuzzer finding). */
static bool jpeg_marker_walk_stalls(const uint8_t *d, size_t len)
{
    size_t off = 0;
    while (off + 4 < len) {
        if (d[off] != 0xFF) return false;
        const uint8_t m = d[off + 1];
        if (m == 0x01) return true;
        if (m == 0xFF) {
            off += 1;
            continue;
        }
        if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) return false;
        if (m >= 0xD0 && m <= 0xD9)
            off += 2;
        else if (m >= 0xC4 && m <= 0xFE)
            off += 2 + (((size_t)d[off + 2] << 8) | d[off + 3]);
        else if (m > 0x02 && m <= 0xBF)
            off += 2;
        else
            return false;
    }
    return false;
}

/* Transfer syntaxes decoded by DCMTK's dcmjpeg (IJG) codec. */
static bool is_ijg_jpeg(E_TransferSyntax x)
{
    DcmXfer xf(x);
    return xfer_encapsulated(xf) && !is_j2k(x) && x != EXS_RLELossless && x != EXS_JPEGLSLossless &&
           x != EXS_JPEGLSLossy;
}

/* A JPEG / JPEG-LS stream starts with SOI (FF D8); writers may pad before it. */
static bool has_soi(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i + 1 < n; i++)
        if (p[i] == 0xFF && p[i + 1] == 0xD8) return true;
    return false;
}

/* Width and height in the frame header (SOFn, or SOF55 for JPEG-LS) of the
 * JPEG stream starting in p[0, n).  False when no frame header is found
 * before the first scan. */
static bool jpeg_frame_size(const uint8_t *p, size_t n, int &w, int &h)
{
    size_t i = 0;
    while (i + 1 < n && !(p[i] == 0xFF && p[i + 1] == 0xD8)) i++;
    i += 2;
    while (i + 3 < n) {
        if (p[i] != 0xFF) return false;
        const uint8_t m = p[i + 1];
        if (m == 0xFF) { i++; continue; } /* fill byte */
        if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) { i += 2; continue; }
        if (m == 0xDA || m == 0xD9) return false;
        const size_t len = ((size_t)p[i + 2] << 8) | p[i + 3];
        const bool sof = (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) || m == 0xF7;
        if (sof) {
            if (i + 9 > n || len < 7) return false;
            h = (p[i + 5] << 8) | p[i + 6];
            w = (p[i + 7] << 8) | p[i + 8];
            return true;
        }
        i += 2 + len;
    }
    return false;
}

/* DCMTK's own message for such data names an unrelated cause ("Pixel
 * representation cannot be changed"). */
static std::string no_soi_message(const udcm_info &in, uint32_t frame, size_t len)
{
    const uint64_t raw = (uint64_t)in.rows * (uint64_t)in.columns * (uint64_t)in.samples_per_pixel *
                         (uint64_t)std::max(1, in.bits_allocated / 8);
    char b[256];
    snprintf(b, sizeof b, "cannot decode frame: the %zu bytes of frame %u hold no JPEG stream (no SOI marker FF D8)%s",
             len, frame, raw == len ? "; it is the size of the uncompressed frame" : "");
    return b;
}

/* Transfer syntaxes decoded by DCMTK's dcmjpls (CharLS) codec. */
static bool is_jpeg_ls(E_TransferSyntax x) { return x == EXS_JPEGLSLossless || x == EXS_JPEGLSLossy; }

/* Locate the fragments of each frame of an encapsulated J2K, RLE or JPEG
 * object: from the Extended / Basic Offset Table when it is consistent,
 * else one fragment per frame, else by looking for the start of a frame
 * (a J2K codestream or JP2 signature, an RLE header, a JPEG SOI marker). */
static std::string map_frames(udcm_handle *h, DcmPixelSequence *seq)
{
    const bool rle = h->xfer == EXS_RLELossless;
    const bool jpeg = is_ijg_jpeg(h->xfer) || is_jpeg_ls(h->xfer); /* both start with SOI */
    const unsigned rle_nseg = (unsigned)h->info.samples_per_pixel * (unsigned)(h->info.bits_allocated / 8);
    const uint32_t nframes = (uint32_t)h->info.frames;
    const unsigned long nitems = seq->card();
    if (nitems < 2) return "encapsulated Pixel Data has no fragments";
    const uint32_t nfrag = (uint32_t)(nitems - 1);
    std::vector<std::pair<uint32_t, uint32_t>> fr;
    DcmPixelItem *bot = nullptr;
    if (seq->getItem(bot, 0).bad() || !bot) return "cannot read the Basic Offset Table";

    std::vector<uint64_t> offsets;
    DcmElement *eot = nullptr;
    if (h->ds->findAndGetElement(DCM_ExtendedOffsetTable, eot).good() && eot && eot->getLength() >= 8 * nframes &&
        nframes > 0) {
        Uint8 *p = nullptr;
        if (eot->getUint8Array(p).good() && p)
            for (uint32_t i = 0; i < nframes; i++) {
                uint64_t o;
                memcpy(&o, p + 8 * i, 8); /* loaded in local byte order (OV) */
                offsets.push_back(o);
            }
    } else if (bot->getLength() >= 4 * nframes && nframes > 0 && bot->getLength() > 0) {
        Uint8 *p = nullptr;
        if (bot->getUint8Array(p).good() && p)
            for (uint32_t i = 0; i < nframes; i++) {
                uint32_t o;
                memcpy(&o, p + 4 * i, 4);
                if (gLocalByteOrder == EBO_BigEndian) o = __builtin_bswap32(o);
                offsets.push_back(o);
            }
    }
    if (!offsets.empty()) {
        /* byte position of each fragment's item tag, relative to the first */
        std::vector<uint64_t> pos(nfrag + 1);
        uint64_t acc = 0;
        for (uint32_t i = 0; i < nfrag; i++) {
            DcmPixelItem *it = nullptr;
            if (seq->getItem(it, i + 1).bad() || !it) return "cannot read a fragment";
            pos[i] = acc;
            acc += 8 + (uint64_t)it->getLength();
        }
        pos[nfrag] = acc;
        bool ok = true;
        for (uint32_t f = 0; f < nframes && ok; f++) {
            auto a = std::lower_bound(pos.begin(), pos.end() - 1, offsets[f]);
            if (a == pos.end() - 1 || *a != offsets[f]) { ok = false; break; }
            uint64_t endoff = f + 1 < nframes ? offsets[f + 1] : acc;
            auto b = std::lower_bound(pos.begin(), pos.end(), endoff);
            if (b == pos.end() || *b != endoff || b <= a) { ok = false; break; }
            fr.emplace_back((uint32_t)(a - pos.begin()) + 1, (uint32_t)(b - a));
        }
        if (ok) {
            h->j2k_frames = fr;
            return "";
        }
        fr.clear(); /* inconsistent table: fall back to scanning */
    }
    if (nframes == 1) {
        fr.emplace_back(1, nfrag);
    } else if (nfrag == nframes) {
        for (uint32_t i = 0; i < nframes; i++) fr.emplace_back(i + 1, 1);
    } else {
        /* a frame starts at a fragment opening with SOC+SIZ or a JP2 signature */
        for (uint32_t i = 0; i < nfrag; i++) {
            DcmPixelItem *it = nullptr;
            if (seq->getItem(it, i + 1).bad() || !it) return "cannot read a fragment";
            uint8_t m[12] = {0};
            Uint32 L = it->getLength();
            bool start = false;
            if (L >= 4 && it->getPartialValue(m, 0, std::min<Uint32>(12, L & ~1u), &h->cache, EBO_LittleEndian).good()) {
                static const uint8_t jp2[12] = {0, 0, 0, 0x0C, 'j', 'P', ' ', ' ', 0x0D, 0x0A, 0x87, 0x0A};
                if (rle)
                    start = udcm::rle_header_plausible(m, L, rle_nseg);
                else if (jpeg)
                    start = m[0] == 0xFF && m[1] == 0xD8;
                else
                    start = (m[0] == 0xFF && m[1] == 0x4F && m[2] == 0xFF && m[3] == 0x51) ||
                            (L >= 12 && memcmp(m, jp2, 12) == 0);
            }
            if (start || fr.empty())
                fr.emplace_back(i + 1, 1);
            else
                fr.back().second++;
        }
        if (fr.size() != nframes) {
            char b[160];
            snprintf(b, sizeof b, "found %zu %s in %u fragments, expected %u frames", fr.size(),
                     rle ? "RLE frame headers" : jpeg ? "JPEG streams" : "JPEG 2000 codestreams", nfrag, nframes);
            return b;
        }
    }
    h->j2k_frames = fr;
    return "";
}

/* The pixel sequence and the fragments (first item index, count) of frame
 * `frame` of an encapsulated J2K / RLE / JPEG object. */
static std::string frame_fragments(udcm_handle *h, uint32_t frame, DcmPixelSequence *&seq,
                                   std::pair<uint32_t, uint32_t> &fr)
{
    DcmElement *el = nullptr;
    if (h->ds->findAndGetElement(DCM_PixelData, el).bad() || !el) return "no Pixel Data";
    DcmPixelData *pd = dynamic_cast<DcmPixelData *>(el);
    if (!pd) return "Pixel Data has an unexpected VR";
    seq = nullptr;
    if (pd->getEncapsulatedRepresentation(h->xfer, nullptr, seq).bad() || !seq)
        return "Pixel Data is not encapsulated";
    if (!h->j2k_frames_done) {
        std::string e = map_frames(h, seq);
        h->j2k_frames_done = true;
        if (!e.empty()) {
            h->j2k_frames.clear();
            h->not_decodable = e;
        }
    }
    if (h->j2k_frames.size() <= frame) return h->not_decodable.empty() ? "frame not found" : h->not_decodable;
    fr = h->j2k_frames[frame];
    return "";
}

/* The bytes of frame `frame` of an encapsulated J2K / RLE object, its
 * fragments concatenated. */
static std::string encapsulated_frame_bytes(udcm_handle *h, uint32_t frame, std::vector<uint8_t> &cs)
{
    DcmPixelSequence *seq = nullptr;
    std::pair<uint32_t, uint32_t> fr;
    std::string e = frame_fragments(h, frame, seq, fr);
    if (!e.empty()) return e;
    uint64_t total = 0;
    for (uint32_t i = 0; i < fr.second; i++) {
        DcmPixelItem *it = nullptr;
        if (seq->getItem(it, fr.first + i).bad() || !it) return "cannot read a fragment";
        total += it->getLength();
    }
    if (h->limits.max_frame_bytes && total > 2 * h->limits.max_frame_bytes + 1024)
        return "compressed frame larger than the limits allow";
    try {
        cs.resize((size_t)total);
    } catch (...) {
        return "out of memory";
    }
    size_t at = 0;
    for (uint32_t i = 0; i < fr.second; i++) {
        DcmPixelItem *it = nullptr;
        if (seq->getItem(it, fr.first + i).bad() || !it) return "cannot read a fragment";
        Uint32 L = it->getLength();
        if (L == 0) continue;
        if (L > cs.size() - at) return "fragment sizes changed while reading";
        Uint8 *p = nullptr;
        if (it->getUint8Array(p).bad() || !p) return "cannot read a fragment";
        memcpy(cs.data() + at, p, L);
        at += L;
        it->compact(); /* do not keep large fragments loaded */
    }
    cs.resize(at);
    return "";
}

static std::string decode_rle_frame(udcm_handle *h, uint32_t frame, std::vector<int32_t> &out, std::string &pi)
{
    std::vector<uint8_t> cs;
    std::string e = encapsulated_frame_bytes(h, frame, cs);
    if (!e.empty()) return e;
    const udcm_info &in = h->info;
    const size_t px = (size_t)in.rows * (size_t)in.columns;
    const unsigned spp = (unsigned)in.samples_per_pixel;
    const unsigned bps = (unsigned)in.bits_allocated / 8;
    std::vector<uint8_t> raw;
    try {
        raw.resize(px * spp * bps);
    } catch (...) {
        return "out of memory";
    }
    e = udcm::rle_decode_frame(cs.data(), cs.size(), px, spp, bps, raw.data());
    if (!e.empty()) return "cannot decode frame: " + e;
    /* segments are sample planes whatever Planar Configuration says */
    out.resize(px * spp);
    cells_to_stored(raw.data(), px * spp, in, out.data());
    if (spp == 3) planar_to_interleaved(out, px);
    pi = in.photometric;
    if (pi == "YBR_FULL_422") pi = "YBR_FULL"; /* RLE planes are never subsampled */
    return "";
}

static std::string decode_j2k_frame(udcm_handle *h, uint32_t frame, std::vector<int32_t> &out, std::string &pi)
{
    std::vector<uint8_t> cs;
    std::string e0 = encapsulated_frame_bytes(h, frame, cs);
    if (!e0.empty()) return e0;
    udcm::J2KImage img;
    const udcm_info &in = h->info;
    std::string e = udcm::j2k_decode_within(cs.data(), cs.size(), h->limits.max_frame_pixels,
                                            h->over_budget.empty() ? 0 : h->limits.max_decode_bytes, img);
    if (!e.empty()) return "JPEG 2000: " + e;
    const int rw = (int)(((int64_t)in.columns + (1 << img.reduce) - 1) >> img.reduce);
    const int rh = (int)(((int64_t)in.rows + (1 << img.reduce) - 1) >> img.reduce);
    if (img.reduce > 0 && (std::abs(img.width - rw) > 1 || std::abs(img.height - rh) > 1)) {
        char b[200];
        snprintf(b, sizeof b, "JPEG 2000 codestream reduced %d times is %dx%d, header says %dx%d", img.reduce,
                 img.width, img.height, in.columns, in.rows);
        return b;
    }
    if (img.reduce == 0 && (img.width != in.columns || img.height != in.rows)) {
        char b[160];
        snprintf(b, sizeof b, "JPEG 2000 codestream is %dx%d, header says %dx%d", img.width, img.height, in.columns,
                 in.rows);
        return b;
    }
    if (img.comps != in.samples_per_pixel) {
        char b[160];
        snprintf(b, sizeof b, "JPEG 2000 codestream has %d components, Samples per Pixel is %d", img.comps,
                 in.samples_per_pixel);
        return b;
    }
    /* Values as bit patterns of BitsStored bits, interpreted with the
     * dataset's Pixel Representation (PS3.5 8.2.4: the DICOM attributes
     * describe the pixel data; a codestream signedness mismatch is
     * resolved in favour of the header). */
    const int bs = in.bits_stored;
    const uint32_t mask = bs >= 32 ? 0xFFFFFFFFu : ((1u << bs) - 1u);
    const bool sgn = in.pixel_representation == 1;
    out.resize(img.data.size());
    for (size_t i = 0; i < img.data.size(); i++) {
        uint32_t v;
        int32_t s = img.data[i];
        memcpy(&v, &s, 4);
        v &= mask;
        if (sgn && bs < 32 && (v & (1u << (bs - 1)))) v |= ~mask;
        memcpy(&s, &v, 4);
        out[i] = s;
    }
    h->decoded_width = img.width;
    h->decoded_height = img.height;
    pi = in.photometric;
    if (img.comps == 3) {
        if (img.mct) pi = "RGB";
        /* YBR_ICT / YBR_RCT declared but no MCT in the codestream: the
         * components are stored untransformed, R, G, B (as GDCM reads them) */
        else if (pi == "YBR_ICT" || pi == "YBR_RCT") pi = "RGB";
    }
    return "";
}

static std::string decode_frame(udcm_handle *h, uint32_t frame, std::vector<int32_t> &out, std::string &pi)
{
    const udcm_info &in = h->info;
    if (!h->not_decodable.empty()) return h->not_decodable;
    if (!h->over_budget.empty() && !h->allow_reduce) return h->over_budget;
    h->decoded_width = in.columns;
    h->decoded_height = in.rows;
    if (frame >= (uint32_t)in.frames) {
        char b[96];
        snprintf(b, sizeof b, "frame %u out of range (%d frames)", frame, in.frames);
        return b;
    }
    const size_t px = (size_t)in.rows * (size_t)in.columns;
    const size_t spp = (size_t)in.samples_per_pixel;
    const size_t bpc = (size_t)in.bits_allocated / 8;
    pi = in.photometric;
    if (is_j2k(h->xfer)) return decode_j2k_frame(h, frame, out, pi);
    if (h->xfer == EXS_RLELossless) return decode_rle_frame(h, frame, out, pi);

    DcmElement *el = nullptr;
    if (h->ds->findAndGetElement(DCM_PixelData, el).bad() || !el) return "no Pixel Data";
    DcmPixelData *pd = dynamic_cast<DcmPixelData *>(el);
    if (!pd) return "Pixel Data has an unexpected VR";
    std::vector<uint8_t> buf;
    if (!in.encapsulated && in.bits_allocated == 1) {
        /* PS3.5 8.1.1: bits are packed LSB first, frames not byte aligned */
        const uint64_t need = ((uint64_t)px * (uint64_t)in.frames + 7) / 8;
        const uint64_t have = el->getLength();
        if (have < need) {
            char b[200];
            snprintf(b, sizeof b, "Pixel Data is %llu bytes, expected %llu for %d frames of %dx%d 1-bit",
                     (unsigned long long)have, (unsigned long long)need, in.frames, in.columns, in.rows);
            return b;
        }
        const uint64_t bit0 = (uint64_t)px * frame;
        const uint64_t b0 = bit0 / 8, b1 = (bit0 + px + 7) / 8;
        buf.resize((size_t)(b1 - b0) + 2);
        /* even offset and length: OW data may be byte-swapped in 16-bit units */
        uint64_t e0 = b0 & ~1ull, e1 = std::min<uint64_t>((b1 + 1) & ~1ull, have);
        OFCondition st = el->getPartialValue(buf.data(), (Uint32)e0, (Uint32)(e1 - e0), &h->cache, EBO_LittleEndian);
        if (st.bad()) return std::string("cannot read Pixel Data: ") + st.text();
        out.resize(px);
        for (size_t i = 0; i < px; i++) {
            uint64_t bit = bit0 + i - e0 * 8;
            out[i] = (buf[(size_t)(bit / 8)] >> (bit % 8)) & 1;
        }
        return "";
    }
    if (!in.encapsulated) {
        const bool sub422 = (pi == "YBR_FULL_422" || pi == "YBR_PARTIAL_422") && spp == 3;
        const uint64_t cells = sub422 ? (uint64_t)px * 2 : (uint64_t)px * spp;
        const uint64_t fbytes = cells * bpc;
        const uint64_t need = fbytes * (uint64_t)in.frames;
        const uint64_t have = el->getLength();
        if (have < need) {
            char b[256];
            if (in.frames == 1)
                snprintf(b, sizeof b, "Pixel Data is %llu bytes, expected %llu for %dx%dx%zu %d-bit",
                         (unsigned long long)have, (unsigned long long)need, in.columns, in.rows, spp,
                         in.bits_allocated);
            else
                snprintf(b, sizeof b, "Pixel Data is %llu bytes, expected %llu for %d frames of %dx%dx%zu %d-bit",
                         (unsigned long long)have, (unsigned long long)need, in.frames, in.columns, in.rows, spp,
                         in.bits_allocated);
            return b;
        }
        try {
            buf.resize((size_t)fbytes + 1);
        } catch (...) {
            return "out of memory";
        }
        /* Odd-length 8-bit reads: read an even count when possible. */
        uint64_t off = fbytes * frame;
        Uint32 nb = (Uint32)fbytes;
        OFCondition st = el->getPartialValue(buf.data(), (Uint32)off, nb, &h->cache);
        if (st.bad()) return std::string("cannot read Pixel Data: ") + st.text();
        if (in.bits_allocated == 32 && el->getVR() == EVR_OW && h->xfer == EXS_BigEndianExplicit) {
            /* DCMTK swapped OW in 16-bit units: restore the 32-bit words */
            for (size_t i = 0; i < (size_t)cells; i++) {
                uint32_t v;
                memcpy(&v, buf.data() + 4 * i, 4);
                v = (v >> 16) | (v << 16);
                memcpy(buf.data() + 4 * i, &v, 4);
            }
        }
        out.resize((size_t)cells);
        cells_to_stored(buf.data(), (size_t)cells, in, out.data());
        if (sub422) {
            /* Y1 Y2 Cb Cr per pixel pair -> full YBR */
            std::vector<int32_t> f(px * 3);
            for (size_t i = 0; i < px / 2; i++) {
                int32_t y1 = out[4 * i], y2 = out[4 * i + 1], cb = out[4 * i + 2], cr = out[4 * i + 3];
                f[6 * i] = y1; f[6 * i + 1] = cb; f[6 * i + 2] = cr;
                f[6 * i + 3] = y2; f[6 * i + 4] = cb; f[6 * i + 5] = cr;
            }
            out.swap(f);
            if (pi == "YBR_FULL_422") pi = "YBR_FULL";
        } else if (spp == 3 && in.planar_configuration == 1) {
            planar_to_interleaved(out, px);
        }
        return "";
    }

    /* JPEG, JPEG-LS through DCMTK, one frame at a time. */
    const size_t fbytes = px * spp * bpc;
    try {
        buf.resize(fbytes + 2);
    } catch (...) {
        return "out of memory";
    }
    Uint32 start = 0;
    int jpeg_w = 0, jpeg_h = 0; /* frame header of the stream, when found */
    auto it = h->start_fragment.find(frame);
    if (it != h->start_fragment.end()) start = it->second;
    if (is_ijg_jpeg(h->xfer)) {
        /* DCMTK's JPEG decoder first walks the markers of the frame's first
         * fragment (DJCodecDecoder::scanJpegDataForBitDepth) and never gets
         * past a TEM marker (FF01): it would loop forever.  We tell DCMTK
         * which fragment starts the frame (it trusts a non-zero start) and
         * check that fragment first. */
        DcmPixelSequence *seq = nullptr;
        std::pair<uint32_t, uint32_t> fr;
        std::string e = frame_fragments(h, frame, seq, fr);
        if (!e.empty()) return e;
        DcmPixelItem *first = nullptr;
        if (seq->getItem(first, fr.first).bad() || !first) return "cannot read a fragment";
        Uint8 *p = nullptr;
        const Uint32 L = first->getLength();
        if (L == 0 || first->getUint8Array(p).bad() || !p) return "cannot decode frame: empty JPEG fragment";
        if (!has_soi(p, L)) return no_soi_message(in, frame, L);
        if (jpeg_marker_walk_stalls(p, L)) return "cannot decode frame: JPEG stream has a TEM marker before its frame header";
        jpeg_frame_size(p, L, jpeg_w, jpeg_h);
        start = fr.first;
    } else if (is_jpeg_ls(h->xfer)) {
        /* DCMTK finds a later frame's first fragment from the Basic Offset
         * Table only; without one it needs the previous frame decoded
         * first.  The frame-to-fragment map (offset tables, else SOI
         * markers) gives it directly. */
        DcmPixelSequence *seq = nullptr;
        std::pair<uint32_t, uint32_t> fr;
        std::string e = frame_fragments(h, frame, seq, fr);
        if (!e.empty()) return e;
        DcmPixelItem *first = nullptr;
        Uint8 *p = nullptr;
        if (seq->getItem(first, fr.first).bad() || !first || first->getLength() == 0 ||
            first->getUint8Array(p).bad() || !p)
            return "cannot decode frame: empty JPEG-LS fragment";
        if (!has_soi(p, first->getLength())) return no_soi_message(in, frame, first->getLength());
        jpeg_frame_size(p, first->getLength(), jpeg_w, jpeg_h);
        start = fr.first;
    }
    /* A stream smaller than Rows x Columns (whole-slide edge tiles): DCMTK
     * packs its rows into the frame buffer; they are put back in place below.
     * A larger one would not fit. */
    const bool small_tile = jpeg_w > 0 && jpeg_h > 0 && (jpeg_w < in.columns || jpeg_h < in.rows);
    if (jpeg_w > in.columns || jpeg_h > in.rows) {
        char b[160];
        snprintf(b, sizeof b, "cannot decode frame: the JPEG stream of frame %u is %dx%d, larger than Columns x Rows %dx%d",
                 frame, jpeg_w, jpeg_h, in.columns, in.rows);
        return b;
    }
    OFString cm;
    Uint32 bsz = (Uint32)((fbytes + 1) & ~(size_t)1);
    /* DCMTK's frame size for this dataset must match ours */
    Uint32 dsz = 0;
#if PACKAGE_VERSION_NUMBER >= 369
    /* 3.6.9 asks whether the frame is stored uncompressed: not here (JPEG,
     * JPEG-LS), so YBR_FULL_422 counts as the decoders' full output. */
    const OFCondition fsz = pd->getUncompressedFrameSize(h->ds, dsz, OFFalse);
#else
    const OFCondition fsz = pd->getUncompressedFrameSize(h->ds, dsz);
#endif
    if (fsz.bad() || dsz < fbytes)
        return "cannot determine the frame size";
    OFCondition st = pd->getUncompressedFrame(h->ds, frame, start, buf.data(), bsz, cm, &h->cache);
    if (st.bad()) return std::string("cannot decode frame: ") + st.text();
    h->start_fragment[frame + 1] = start;
    /* DCMTK may change the dataset's Planar Configuration to describe the
     * decoded buffer: read it back. */
    long pc = in.planar_configuration;
    get_int(h->ds, DCM_PlanarConfiguration, pc);
    out.resize(px * spp);
    cells_to_stored(buf.data(), px * spp, in, out.data());
    if (small_tile) {
        /* the decoded jpeg_w x jpeg_h picture occupies the start of the
         * buffer (per plane when planar): place it top-left, zero elsewhere */
        const size_t tw = (size_t)jpeg_w, th = (size_t)jpeg_h, cols = (size_t)in.columns;
        std::vector<int32_t> placed(px * spp, 0);
        if (spp == 3 && pc == 1) {
            for (size_t c = 0; c < 3; c++)
                for (size_t y = 0; y < th; y++)
                    memcpy(&placed[c * px + y * cols], &out[c * tw * th + y * tw], tw * sizeof(int32_t));
        } else {
            for (size_t y = 0; y < th; y++)
                memcpy(&placed[y * cols * spp], &out[y * tw * spp], tw * spp * sizeof(int32_t));
        }
        out.swap(placed);
    }
    if (spp == 3 && pc == 1) planar_to_interleaved(out, px);
    if (!cm.empty()) pi = cm.c_str();
    if (spp == 3 && (pi == "YBR_FULL_422" || pi == "YBR_PARTIAL_422")) {
        /* decoded buffers are never subsampled */
        if (pi == "YBR_FULL_422") pi = "YBR_FULL";
    }
    return "";
}

namespace udcm {
std::string decode_frame_internal(udcm_handle *h, uint32_t frame, std::vector<int32_t> &out, std::string &pi)
{
    try {
        return decode_frame(h, frame, out, pi);
    } catch (const std::bad_alloc &) {
        return "out of memory";
    } catch (...) {
        return "internal error while decoding";
    }
}
} // namespace udcm

extern "C" int udcm_decode_stored(udcm_handle *h, uint32_t frame, int32_t *out, size_t out_count,
                                  char *decoded_photometric, char *err, size_t errlen)
{
    if (!h) return -1;
    if (!h->not_decodable.empty()) {
        set_error(h->name, err, errlen, "%s", h->not_decodable.c_str());
        return -1;
    }
    size_t n = udcm_frame_samples(h);
    if (!out || out_count < n) {
        set_error(h->name, err, errlen, "output buffer too small (%zu < %zu)", out_count, n);
        return -1;
    }
    std::vector<int32_t> v;
    std::string pi;
    h->allow_reduce = false; /* full-size stored values only */
    std::string e = udcm::decode_frame_internal(h, frame, v, pi);
    if (e.empty() && v.size() != n) e = "internal error: decoded size mismatch";
    if (!e.empty()) {
        set_error(h->name, err, errlen, "%s", e.c_str());
        return -1;
    }
    memcpy(out, v.data(), n * sizeof(int32_t));
    if (decoded_photometric) snprintf(decoded_photometric, 17, "%s", pi.c_str());
    return 0;
}
