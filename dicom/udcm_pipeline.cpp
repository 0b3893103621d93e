/* unimed_dicom: pixel pipeline (PS3.3 C.11 / PS3.4 N.2 order) to 8-bit RGB.
 *
 *   1. stored values (udcm_decode_stored)
 *   2. Modality LUT: Pixel Value Transformation (functional groups), Modality
 *      LUT Sequence, or Rescale Slope/Intercept
 *   3. VOI: Frame VOI LUT (functional groups) or Window Center/Width with
 *      VOI LUT Function; else VOI LUT Sequence; else CT window / percentiles
 *   4. 0..255 with rounding, MONOCHROME1 inverted
 *   5. colour models -> RGB, grey -> 3 equal channels
 *   6. non-square pixels -> square (um_resize_rgb8)
 */
#include "udcm_internal.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "resample.h"

using udcm::set_error;

namespace udcm {
std::string decode_frame_internal(udcm_handle *h, uint32_t frame, std::vector<int32_t> &out, std::string &pi);
}

extern "C" void udcm_pipeline_opts_default(udcm_pipeline_opts *o)
{
    if (!o) return;
    o->ct_window_center = 40.0;
    o->ct_window_width = 400.0;
    o->percentile_low = 0.5;
    o->percentile_high = 99.5;
    o->resample_square = 1;
    o->apply_voi = 1;
}

namespace {

struct Lut {
    int64_t first = 0;
    uint32_t n = 0;
    int bits = 16;
    std::vector<uint32_t> data;
    uint32_t at(double x) const
    {
        double i = std::floor(x) - (double)first;
        if (!(i > 0)) return data[0];
        if (i >= (double)(n - 1)) return data[n - 1];
        return data[(size_t)i];
    }
};

bool desc_values(DcmItem *it, const DcmTagKey &tag, long v[3])
{
    DcmElement *e = nullptr;
    if (it->findAndGetElement(tag, e).bad() || !e || e->getVM() < 3) return false;
    for (unsigned long i = 0; i < 3; i++) {
        Uint16 u;
        Sint16 s;
        if (e->getUint16(u, i).good()) v[i] = u;
        else if (e->getSint16(s, i).good()) v[i] = s;
        else return false;
    }
    return true;
}

/* Raw LUT words, little-endian interpretation of the value bytes. */
bool lut_bytes(DcmItem *it, const DcmTagKey &tag, std::vector<uint8_t> &b)
{
    DcmElement *e = nullptr;
    if (it->findAndGetElement(tag, e).bad() || !e) return false;
    Uint32 L = e->getLength();
    if (L == 0 || L > (1u << 20)) return false;
    b.resize(L);
    return e->getPartialValue(b.data(), 0, L, nullptr, EBO_LittleEndian).good();
}

/* Expand a segmented palette (PS3.3 C.7.9.2), 16-bit words. */
bool expand_segmented(const std::vector<uint16_t> &w, size_t start, size_t nseg_max, uint32_t last,
                      std::vector<uint32_t> &lut, int depth, size_t cap)
{
    if (depth > 4) return false;
    size_t off = start, nseg = 0;
    while (off + 1 < w.size() && (nseg_max == 0 || nseg < nseg_max)) {
        uint16_t op = w[off], len = w[off + 1];
        off += 2;
        if (op == 0) {
            if (off + len > w.size()) return false;
            for (size_t k = 0; k < len; k++) lut.push_back(w[off + k]);
            off += len;
        } else if (op == 1) {
            if (off >= w.size()) return false;
            double y0;
            if (!lut.empty()) y0 = lut.back();
            else if (depth > 0) y0 = last;
            else return false;
            double y1 = w[off++];
            for (size_t k = 0; k < len; k++)
                lut.push_back((uint32_t)std::nearbyint(y0 + (y1 - y0) * (double)(k + 1) / (double)len));
        } else if (op == 2) {
            if (lut.empty() || off + 1 >= w.size()) return false;
            size_t o = (size_t)w[off] | ((size_t)w[off + 1] << 16);
            off += 2;
            if (o >= w.size() || len == 0) return false;
            if (!expand_segmented(w, o, len, lut.back(), lut, depth + 1, cap)) return false;
        } else {
            return false;
        }
        if (lut.size() > cap) return false;
        nseg++;
    }
    return true;
}

/* Read a LUT: descriptor + data (+ segmented data for palettes). */
std::string read_lut(DcmItem *it, const DcmTagKey &desc, const DcmTagKey &data, const DcmTagKey *seg, bool first_signed,
                     Lut &out)
{
    long d[3];
    if (!desc_values(it, desc, d)) return "missing or invalid LUT Descriptor";
    out.n = d[0] == 0 ? 65536u : (uint32_t)(d[0] & 0xFFFF);
    out.first = first_signed ? (int64_t)(int16_t)(uint16_t)d[1] : (int64_t)(uint16_t)d[1];
    out.bits = (int)d[2];
    if (out.bits < 1 || out.bits > 16) return "LUT Descriptor bits per entry " + std::to_string(out.bits);
    std::vector<uint8_t> b;
    if (lut_bytes(it, data, b)) {
        const uint32_t n = out.n;
        out.data.resize(n);
        if (out.bits <= 8 && b.size() >= n && b.size() < 2 * (size_t)n) {
            for (uint32_t i = 0; i < n; i++) out.data[i] = b[i];
        } else if (b.size() >= 2 * (size_t)n) {
            uint32_t mx = 0;
            for (uint32_t i = 0; i < n; i++) {
                out.data[i] = (uint32_t)b[2 * i] | ((uint32_t)b[2 * i + 1] << 8);
                mx = std::max(mx, out.data[i]);
            }
            /* 8-bit entries written as 16-bit words with the value in the
             * high byte: keep the high byte */
            if (out.bits <= 8 && mx > 255)
                for (auto &x : out.data) x >>= 8;
        } else {
            return "LUT Data has " + std::to_string(b.size()) + " bytes for " + std::to_string(n) + " entries";
        }
        return "";
    }
    if (seg && lut_bytes(it, *seg, b)) {
        if (out.bits != 16) return "8-bit segmented palettes are not supported";
        std::vector<uint16_t> w(b.size() / 2);
        for (size_t i = 0; i < w.size(); i++) w[i] = (uint16_t)(b[2 * i] | (b[2 * i + 1] << 8));
        std::vector<uint32_t> lut;
        if (!expand_segmented(w, 0, 0, 0, lut, 0, 65536) || lut.empty()) return "invalid segmented palette";
        lut.resize(out.n, lut.back());
        out.data.swap(lut);
        return "";
    }
    return "missing LUT Data";
}

inline uint8_t to8(double y)
{
    if (!(y > 0)) return 0; /* also NaN */
    if (y >= 255) return 255;
    return (uint8_t)std::floor(y + 0.5);
}

/* A LUT item whose LUT Descriptor and LUT Data are both absent or empty
 * (written by some archives in place of no Modality LUT): ignored, as other
 * readers do, and the Rescale attributes apply. */
bool empty_lut_item(DcmItem *it)
{
    DcmElement *e = nullptr;
    for (const DcmTagKey &k : {DCM_LUTDescriptor, DCM_LUTData})
        if (it->findAndGetElement(k, e).good() && e && e->getLength() > 0) return false;
    return true;
}

/* numpy-style linear percentile of a copy of v */
double percentile(std::vector<double> &v, double p)
{
    if (v.empty()) return 0;
    p = std::min(100.0, std::max(0.0, p));
    double pos = p / 100.0 * (double)(v.size() - 1);
    size_t lo = (size_t)std::floor(pos);
    double frac = pos - (double)lo;
    std::nth_element(v.begin(), v.begin() + (long)lo, v.end());
    double a = v[lo];
    if (frac == 0 || lo + 1 >= v.size()) return a;
    double b = *std::min_element(v.begin() + (long)lo + 1, v.end());
    return a + (b - a) * frac;
}

enum VoiKind { VOI_LINEAR, VOI_LINEAR_EXACT, VOI_SIGMOID };

/* PS3.3 C.11.2.1.2, output range 0..255 */
inline double window(double x, double c, double w, VoiKind k)
{
    const double ymax = 255.0;
    switch (k) {
    case VOI_LINEAR_EXACT:
        if (x <= c - w / 2) return 0;
        if (x > c + w / 2) return ymax;
        /* = ((x - c)/w + 0.5)*ymax, ordered so that exact halves stay exact */
        return ((x - c) + w / 2) * ymax / w;
    case VOI_SIGMOID:
        return ymax / (1.0 + std::exp(-4.0 * (x - c) / w));
    case VOI_LINEAR:
    default:
        if (x <= c - 0.5 - (w - 1) / 2) return 0;
        if (x > c - 0.5 + (w - 1) / 2) return ymax;
        /* = ((x - (c - 0.5))/(w - 1) + 0.5)*ymax, reordered as above */
        return ((x - c + 0.5) + (w - 1) / 2) * ymax / (w - 1);
    }
}

std::string grey_to8(udcm_handle *h, uint32_t frame, const udcm_pipeline_opts &o, const std::vector<int32_t> &sv,
                     std::vector<uint8_t> &g)
{
    DcmDataset *ds = h->ds;
    const udcm_info &in = h->info;
    const size_t n = sv.size();

    /* 2. Modality LUT.  The modality value of a sample is recomputed where
     * it is needed rather than kept for the whole frame: it is the same
     * expression each time, so the results are identical, and a frame then
     * costs its stored values plus 8-bit output instead of a further double
     * per sample (the decode budget, max_decode_bytes, counts on that). */
    DcmItem *pvt = udcm::functional_group(ds, frame, DCM_PixelValueTransformationSequence);
    DcmItem *mlut = nullptr;
    Lut modality_lut;
    double slope = 1, icpt = 0;
    bool rescale = false;
    auto get_rs = [&](DcmItem *it) {
        Float64 f;
        bool any = false;
        if (it->findAndGetFloat64(DCM_RescaleSlope, f).good() && std::isfinite(f)) { slope = f; any = true; }
        if (it->findAndGetFloat64(DCM_RescaleIntercept, f).good() && std::isfinite(f)) { icpt = f; any = true; }
        return any;
    };
    if (pvt && get_rs(pvt)) {
        rescale = true;
    } else if (ds->findAndGetSequenceItem(DCM_ModalityLUTSequence, mlut, 0).good() && mlut &&
               !empty_lut_item(mlut)) {
        std::string e = read_lut(mlut, DCM_LUTDescriptor, DCM_LUTData, nullptr, in.pixel_representation == 1,
                                 modality_lut);
        if (!e.empty()) return "Modality LUT Sequence: " + e;
    } else {
        rescale = get_rs(ds);
    }
    if (mlut && empty_lut_item(mlut)) mlut = nullptr;
    const bool use_lut = mlut != nullptr;
    auto mv = [&](size_t i) -> double {
        if (use_lut) return modality_lut.at(sv[i]);
        return rescale ? (double)sv[i] * slope + icpt : (double)sv[i];
    };

    /* 3. VOI */
    g.resize(n);
    double c = 0, w = 0;
    VoiKind kind = VOI_LINEAR;
    bool have_window = false;
    if (o.apply_voi) {
        DcmItem *fv = udcm::functional_group(ds, frame, DCM_FrameVOILUTSequence);
        DcmItem *src = (fv && fv->tagExists(DCM_WindowCenter)) ? fv : ds;
        Float64 fc, fw;
        if (src->findAndGetFloat64(DCM_WindowCenter, fc, 0).good() &&
            src->findAndGetFloat64(DCM_WindowWidth, fw, 0).good() && std::isfinite(fc) && std::isfinite(fw)) {
            OFString fn;
            src->findAndGetOFString(DCM_VOILUTFunction, fn);
            if (fn == "LINEAR_EXACT") kind = VOI_LINEAR_EXACT;
            else if (fn == "SIGMOID") kind = VOI_SIGMOID;
            c = fc;
            w = fw;
            have_window = kind == VOI_LINEAR ? w >= 1 : w > 0; /* invalid widths: use the default */
        }
        DcmItem *vl = nullptr;
        if (!have_window && ds->findAndGetSequenceItem(DCM_VOILUTSequence, vl, 0).good() && vl) {
            Lut L;
            std::string e = read_lut(vl, DCM_LUTDescriptor, DCM_LUTData, nullptr,
                                     in.pixel_representation == 1 && !mlut && !rescale, L);
            if (e.empty()) {
                const double mx = (double)((1u << L.bits) - 1);
                for (size_t i = 0; i < n; i++) g[i] = to8((double)L.at(mv(i)) * 255.0 / mx);
                goto done;
            }
            /* unusable VOI LUT: default below */
        }
    }
    if (!have_window && strcmp(in.modality, "CT") == 0) {
        c = o.ct_window_center;
        w = o.ct_window_width;
        kind = VOI_LINEAR;
        have_window = w >= 1;
    }
    if (have_window) {
        for (size_t i = 0; i < n; i++) g[i] = to8(window(mv(i), c, w, kind));
    } else {
        /* the one frame-sized double buffer, only when the bounds come
         * from the values themselves */
        std::vector<double> t(n);
        for (size_t i = 0; i < n; i++) t[i] = mv(i);
        double lo = percentile(t, o.percentile_low);
        double hi = percentile(t, o.percentile_high);
        if (!(hi > lo)) {
            /* a nearly constant frame (e.g. a sparse mask: both bounds
             * fall on the background value): use the value range */
            lo = *std::min_element(t.begin(), t.end());
            hi = *std::max_element(t.begin(), t.end());
        }
        if (hi > lo) {
            const double s = 255.0 / (hi - lo);
            for (size_t i = 0; i < n; i++) g[i] = to8((mv(i) - lo) * s);
        } else {
            for (size_t i = 0; i < n; i++) g[i] = 0;
        }
    }
done:
    /* 4. MONOCHROME1: minimum is white */
    if (strcmp(in.photometric, "MONOCHROME1") == 0)
        for (auto &x : g) x = (uint8_t)(255 - x);
    return "";
}

std::string palette_to_rgb(udcm_handle *h, const std::vector<int32_t> &sv, std::vector<uint8_t> &rgb)
{
    static const DcmTagKey desc[3] = {DCM_RedPaletteColorLookupTableDescriptor,
                                      DCM_GreenPaletteColorLookupTableDescriptor,
                                      DCM_BluePaletteColorLookupTableDescriptor};
    static const DcmTagKey data[3] = {DCM_RedPaletteColorLookupTableData, DCM_GreenPaletteColorLookupTableData,
                                      DCM_BluePaletteColorLookupTableData};
    static const DcmTagKey seg[3] = {DCM_SegmentedRedPaletteColorLookupTableData,
                                     DCM_SegmentedGreenPaletteColorLookupTableData,
                                     DCM_SegmentedBluePaletteColorLookupTableData};
    static const char *const nm[3] = {"Red", "Green", "Blue"};
    Lut L[3];
    for (int c = 0; c < 3; c++) {
        std::string e = read_lut(h->ds, desc[c], data[c], &seg[c], h->info.pixel_representation == 1, L[c]);
        if (!e.empty()) return std::string(nm[c]) + " palette: " + e;
    }
    /* 8-bit output: 16-bit entries are scaled (x*255/65535, rounded);
     * tables declared 16-bit whose entries all fit in 8 bits are used as is. */
    double scale[3];
    for (int c = 0; c < 3; c++) {
        uint32_t mx = 0;
        for (auto x : L[c].data) mx = std::max(mx, x);
        scale[c] = (L[c].bits > 8 && mx > 255) ? 255.0 / (double)((1u << L[c].bits) - 1) : 1.0;
    }
    const size_t n = sv.size();
    rgb.resize(n * 3);
    for (size_t i = 0; i < n; i++)
        for (int c = 0; c < 3; c++) rgb[3 * i + (size_t)c] = to8((double)L[c].at(sv[i]) * scale[c]);
    return "";
}

void colour_to_rgb(const udcm_info &in, const std::string &pi, const std::vector<int32_t> &sv,
                   std::vector<uint8_t> &rgb)
{
    const size_t n = sv.size() / 3;
    rgb.resize(n * 3);
    const int bs = in.bits_stored;
    const double maxv = bs >= 31 ? 2147483647.0 : (double)((1u << bs) - 1);
    const double s = 255.0 / maxv;
    const double mid = bs >= 31 ? 1073741824.0 : (double)(1u << (bs - 1));
    const bool full = pi == "YBR_FULL" || pi == "YBR_FULL_422" || pi == "YBR_ICT";
    const bool partial = pi == "YBR_PARTIAL_422" || pi == "YBR_PARTIAL_420";
    const double k = maxv / 255.0; /* partial-range offsets scaled to the bit depth */
    for (size_t i = 0; i < n; i++) {
        double a = sv[3 * i], b = sv[3 * i + 1], c = sv[3 * i + 2];
        double r, g, bl;
        if (full) { /* PS3.3 C.7.6.3.1.2 YBR_FULL */
            r = a + 1.402 * (c - mid);
            g = a - 0.344136 * (b - mid) - 0.714136 * (c - mid);
            bl = a + 1.772 * (b - mid);
        } else if (partial) {
            double y = 1.1644 * (a - 16 * k);
            r = y + 1.5960 * (c - mid);
            g = y - 0.3918 * (b - mid) - 0.8130 * (c - mid);
            bl = y + 2.0172 * (b - mid);
        } else {
            r = a;
            g = b;
            bl = c;
        }
        rgb[3 * i] = to8(r * s);
        rgb[3 * i + 1] = to8(g * s);
        rgb[3 * i + 2] = to8(bl * s);
    }
}

/* Pixel spacing of the frame: [0] vertical (between rows), [1] horizontal. */
bool frame_spacing(udcm_handle *h, uint32_t frame, double sp[2])
{
    DcmDataset *ds = h->ds;
    DcmItem *pm = udcm::functional_group(ds, frame, DCM_PixelMeasuresSequence);
    DcmItem *src[3] = {ds->tagExists(DCM_PixelSpacing) ? ds : pm, ds, ds};
    const DcmTagKey tags[3] = {DCM_PixelSpacing, DCM_ImagerPixelSpacing, DCM_PixelAspectRatio};
    for (int t = 0; t < 3; t++) {
        if (!src[t]) continue;
        Float64 a, b;
        if (t < 2) {
            if (src[t]->findAndGetFloat64(tags[t], a, 0).good() && src[t]->findAndGetFloat64(tags[t], b, 1).good() &&
                std::isfinite(a) && std::isfinite(b) && a > 0 && b > 0) {
                sp[0] = a;
                sp[1] = b;
                return true;
            }
        } else {
            long va = 0, vb = 0;
            OFString s0, s1;
            if (src[t]->findAndGetOFString(tags[t], s0, 0).good() &&
                src[t]->findAndGetOFString(tags[t], s1, 1).good()) {
                va = atol(s0.c_str());
                vb = atol(s1.c_str());
                if (va > 0 && vb > 0) {
                    sp[0] = (double)va;
                    sp[1] = (double)vb;
                    return true;
                }
            }
        }
    }
    return false;
}

} // namespace

extern "C" int udcm_frame_rgb8(udcm_handle *h, uint32_t frame, const udcm_pipeline_opts *opts, uint8_t **rgb_out,
                               int *w_out, int *h_out, char *err, size_t errlen)
{
    if (!h || !rgb_out) return -1;
    *rgb_out = nullptr;
    udcm_pipeline_opts o;
    if (opts) o = *opts; else udcm_pipeline_opts_default(&o);
    try {
        std::vector<int32_t> sv;
        std::string pi;
        h->allow_reduce = true; /* JPEG 2000 over the decode budget: a reduced level */
        std::string e = udcm::decode_frame_internal(h, frame, sv, pi);
        h->allow_reduce = false;
        if (!e.empty()) {
            set_error(h->name, err, errlen, "%s", e.c_str());
            return -1;
        }
        const udcm_info &in = h->info;
        int W = h->decoded_width, H = h->decoded_height;
        std::vector<uint8_t> rgb;
        if (in.samples_per_pixel == 1 && pi != "PALETTE COLOR") {
            std::vector<uint8_t> g;
            e = grey_to8(h, frame, o, sv, g);
            if (e.empty()) {
                /* push_back rather than resize: GCC 12 at -O3 warns falsely
                 * (-Warray-bounds) on resize of a possibly empty vector. */
                rgb.reserve(g.size() * 3);
                for (uint8_t v : g) {
                    rgb.push_back(v);
                    rgb.push_back(v);
                    rgb.push_back(v);
                }
            }
        } else if (pi == "PALETTE COLOR") {
            e = palette_to_rgb(h, sv, rgb);
        } else {
            colour_to_rgb(in, pi, sv, rgb);
        }
        if (!e.empty()) {
            set_error(h->name, err, errlen, "%s", e.c_str());
            return -1;
        }
        double sp[2];
        if (o.resample_square && frame_spacing(h, frame, sp) && std::fabs(sp[0] - sp[1]) > 1e-6 * std::max(sp[0], sp[1])) {
            int W2 = W, H2 = H;
            if (sp[0] > sp[1]) H2 = (int)std::lround((double)H * sp[0] / sp[1]);
            else W2 = (int)std::lround((double)W * sp[1] / sp[0]);
            const udcm_limits &L = h->limits;
            if (W2 < 1 || H2 < 1 || (L.max_columns && (uint32_t)W2 > L.max_columns) ||
                (L.max_rows && (uint32_t)H2 > L.max_rows) ||
                (L.max_frame_pixels && (uint64_t)W2 * (uint64_t)H2 > L.max_frame_pixels)) {
                set_error(h->name, err, errlen, "pixel spacing %g\\%g would resample %dx%d to %dx%d, beyond the limits",
                          sp[0], sp[1], W, H, W2, H2);
                return -1;
            }
            if (W2 != W || H2 != H) {
                std::vector<uint8_t> r2((size_t)W2 * (size_t)H2 * 3);
                if (um_resize_rgb8(rgb.data(), W, H, r2.data(), W2, H2) != 0) {
                    set_error(h->name, err, errlen, "resampling %dx%d to %dx%d failed", W, H, W2, H2);
                    return -1;
                }
                rgb.swap(r2);
                W = W2;
                H = H2;
            }
        }
        uint8_t *p = (uint8_t *)malloc(rgb.size());
        if (!p) {
            set_error(h->name, err, errlen, "out of memory");
            return -1;
        }
        memcpy(p, rgb.data(), rgb.size());
        *rgb_out = p;
        if (w_out) *w_out = W;
        if (h_out) *h_out = H;
        return 0;
    } catch (const std::bad_alloc &) {
        set_error(h->name, err, errlen, "out of memory");
    } catch (...) {
        set_error(h->name, err, errlen, "internal error in the pixel pipeline");
    }
    return -1;
}
