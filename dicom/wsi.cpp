/* unimed_dicom: whole-slide images (VL Whole Slide Microscopy Image Storage).
 *
 * A slide is one series; each instance is one pyramid level (VOLUME), or a
 * THUMBNAIL, LABEL or OVERVIEW picture.  A level is a Total Pixel Matrix of
 * Total Pixel Matrix Columns x Rows pixels cut into frames (tiles) of
 * Columns x Rows:
 *   TILED_FULL    frames fill the matrix row by row, tile after tile (first
 *                 focal plane / optical path first: we use the first
 *                 ceil(W/tw) * ceil(H/th) frames);
 *   TILED_SPARSE  each frame's top-left corner is given, 1-based, by the
 *                 Plane Position (Slide) Sequence of the Per-Frame Functional
 *                 Groups; tiles may be missing (white).
 * Edge tiles are padded beyond the matrix: the padding is cropped.
 *
 * Two products (docs/DICOM.md "Whole-slide images"):
 *   - an overview picture of the slide (one level stitched),
 *   - N tissue tiles of model size from the level nearest a target pixel
 *     spacing, reading only the frames each tile overlaps.
 */
#include "udcm_internal.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <list>
#include <memory>
#include <new>

#include "resample.h"

using udcm::set_error;

namespace {

/* Largest Total Pixel Matrix side accepted (real slides stay below 2^18). */
const uint32_t kMaxMatrixSide = 1u << 22;
/* The overview / tissue-mask level is read with nearest-neighbour decimation
 * by k when its shorter side exceeds 4k times the requested size (a slide
 * without a usable pyramid). */
const int kDecimateFactor = 4;
/* Decoded tiles kept while sampling (adjacent windows share frames). */
const size_t kCacheTiles = 8;

std::atomic<uint64_t> g_frames_decoded{0};

struct Level {
    int instance = -1;
    bool thumbnail = false;
    uint32_t W = 0, H = 0;
    int tw = 0, th = 0;
    int frames = 0;
    double spacing = 0; /* mm, 0 unknown */
    std::string org;
};

bool flavor_of(const udcm_info &in, bool &thumb)
{
    const char *f = in.wsi_image_flavor;
    if (!f[0] || !strcmp(f, "VOLUME")) {
        thumb = false;
        return true;
    }
    if (!strcmp(f, "THUMBNAIL")) {
        thumb = true;
        return true;
    }
    return false; /* LABEL, OVERVIEW (slide photograph with label) */
}

/* VOLUME and THUMBNAIL levels of the series, largest first (from the headers
 * collected by udcm_collect: no file is opened). */
std::vector<Level> list_levels(const udcm_series *s)
{
    std::vector<Level> v;
    if (!s) return v;
    for (int i = 0; i < s->n_instances; i++) {
        const udcm_info &in = s->instances[i].info;
        bool thumb = false;
        if (!in.is_wsi || !in.is_image || !flavor_of(in, thumb)) continue;
        Level L;
        L.instance = i;
        L.thumbnail = thumb;
        L.W = in.total_matrix_columns ? in.total_matrix_columns : (uint32_t)in.columns;
        L.H = in.total_matrix_rows ? in.total_matrix_rows : (uint32_t)in.rows;
        L.tw = in.columns;
        L.th = in.rows;
        L.frames = in.frames;
        L.org = in.dimension_organization_type;
        if (in.has_pixel_spacing && in.pixel_spacing[0] > 0 && in.pixel_spacing[1] > 0)
            L.spacing = 0.5 * (in.pixel_spacing[0] + in.pixel_spacing[1]);
        v.push_back(L);
    }
    std::stable_sort(v.begin(), v.end(), [](const Level &a, const Level &b) {
        return (uint64_t)a.W * a.H > (uint64_t)b.W * b.H;
    });
    /* Unknown spacings from the largest level that has one (same imaged area). */
    const Level *ref = nullptr;
    for (const Level &L : v)
        if (L.spacing > 0 && !L.thumbnail) {
            ref = &L;
            break;
        }
    if (ref) {
        double rs = ref->spacing, rw = ref->W;
        for (Level &L : v)
            if (L.spacing <= 0 && L.W > 0) L.spacing = rs * rw / (double)L.W;
    }
    return v;
}

/* THUMBNAIL, else VOLUME: the smallest with both sides >= min_side; else the
 * largest of all. */
int pick_overview(const std::vector<Level> &v, int min_side)
{
    const uint32_t m = (uint32_t)std::max(1, min_side);
    for (int pass = 0; pass < 2; pass++) {
        const Level *best = nullptr;
        for (const Level &L : v)
            if (L.thumbnail == (pass == 0) && L.W >= m && L.H >= m &&
                (!best || (uint64_t)L.W * L.H < (uint64_t)best->W * best->H))
                best = &L;
        if (best) return (int)(best - v.data());
    }
    return v.empty() ? -1 : 0;
}

/* VOLUME level nearest target spacing (log ratio; ties: the finer level);
 * without spacings: the largest VOLUME level. */
int pick_tile_level(const std::vector<Level> &v, double target)
{
    int best = -1, largest = -1;
    double bd = 0;
    for (size_t i = 0; i < v.size(); i++) {
        const Level &L = v[i];
        if (L.thumbnail) continue;
        if (largest < 0) largest = (int)i;
        if (L.spacing <= 0 || target <= 0) continue;
        double d = std::fabs(std::log(L.spacing / target));
        if (best < 0 || d < bd - 1e-9 || (std::fabs(d - bd) <= 1e-9 && L.spacing < v[(size_t)best].spacing)) {
            best = (int)i;
            bd = d;
        }
    }
    return best >= 0 ? best : largest;
}

/* ---- geometry of one level (needs the data set) ------------------------- */

struct Tile {
    uint32_t frame;
    int64_t x, y; /* 0-based top-left in the Total Pixel Matrix */
};

struct Geometry {
    uint32_t W = 0, H = 0;
    int tw = 0, th = 0;
    bool full = true;
    uint32_t ntx = 0, nty = 0;
    std::vector<Tile> tiles; /* sparse */
};

bool item_long(DcmItem *it, const DcmTagKey &tag, long &v)
{
    if (!it) return false;
    Sint32 s;
    if (it->findAndGetSint32(tag, s).good()) {
        v = s;
        return true;
    }
    Uint32 u;
    if (it->findAndGetUint32(tag, u).good()) {
        v = (long)u;
        return true;
    }
    return false;
}

std::string geometry(udcm_handle *h, Geometry &g)
{
    const udcm_info &in = h->info;
    char b[256];
    if (!h->not_decodable.empty()) return h->not_decodable;
    g.tw = in.columns;
    g.th = in.rows;
    const bool has_total = in.total_matrix_columns || in.total_matrix_rows;
    if (has_total && (!in.total_matrix_columns || !in.total_matrix_rows)) {
        snprintf(b, sizeof b, "Total Pixel Matrix Columns/Rows %u/%u: both must be set", in.total_matrix_columns,
                 in.total_matrix_rows);
        return b;
    }
    g.W = has_total ? in.total_matrix_columns : (uint32_t)in.columns;
    g.H = has_total ? in.total_matrix_rows : (uint32_t)in.rows;
    if (g.W > kMaxMatrixSide || g.H > kMaxMatrixSide) {
        snprintf(b, sizeof b, "Total Pixel Matrix %ux%u is beyond the whole-slide limit of %u pixels a side", g.W,
                 g.H, kMaxMatrixSide);
        return b;
    }
    g.ntx = (g.W + (uint32_t)g.tw - 1) / (uint32_t)g.tw;
    g.nty = (g.H + (uint32_t)g.th - 1) / (uint32_t)g.th;
    const uint64_t ntiles = (uint64_t)g.ntx * g.nty;
    const uint32_t nframes = (uint32_t)in.frames;
    const std::string org = in.dimension_organization_type;

    DcmSequenceOfItems *pf = nullptr;
    if (h->ds->findAndGetSequence(DCM_PerFrameFunctionalGroupsSequence, pf).bad()) pf = nullptr;
    bool has_positions = false;
    if (pf && pf->card() > 0) {
        DcmItem *it0 = pf->getItem(0), *pp = nullptr;
        has_positions = it0 && it0->findAndGetSequenceItem(DCM_PlanePositionSlideSequence, pp, 0).good() && pp;
    }
    bool sparse;
    if (org == "TILED_FULL") sparse = false;
    else if (org == "TILED_SPARSE") sparse = true;
    else if (has_positions) sparse = true;
    else if (org.empty() || nframes == 1) sparse = false;
    else {
        snprintf(b, sizeof b, "Dimension Organization Type %s without tile positions is not supported", org.c_str());
        return b;
    }
    if (!sparse) {
        if ((uint64_t)nframes < ntiles) {
            snprintf(b, sizeof b,
                     "%s: a %ux%u Total Pixel Matrix of %dx%d tiles needs %llu frames, the object has %u",
                     org.empty() ? "implicit tiling" : org.c_str(), g.W, g.H, g.tw, g.th,
                     (unsigned long long)ntiles, nframes);
            return b;
        }
        g.full = true;
        return "";
    }
    g.full = false;
    if (!pf || pf->card() == 0)
        return "TILED_SPARSE without a Per-Frame Functional Groups Sequence: no tile positions";
    if (pf->card() != nframes) {
        snprintf(b, sizeof b, "Per-Frame Functional Groups Sequence has %lu items for %u frames", pf->card(), nframes);
        return b;
    }
    /* Tiles of the first optical path and focal plane. Items are walked with
     * nextInContainer (getItem(i) is linear in i). */
    std::string path0;
    double z0 = 0;
    bool have_z0 = false;
    DcmObject *obj = nullptr;
    g.tiles.reserve(nframes);
    for (uint32_t f = 0; f < nframes; f++) {
        obj = pf->nextInContainer(obj);
        DcmItem *it = dynamic_cast<DcmItem *>(obj);
        DcmItem *pp = nullptr;
        if (!it || it->findAndGetSequenceItem(DCM_PlanePositionSlideSequence, pp, 0).bad() || !pp) {
            snprintf(b, sizeof b, "TILED_SPARSE frame %u has no Plane Position (Slide) Sequence", f + 1);
            return b;
        }
        long col = 0, row = 0;
        if (!item_long(pp, DCM_ColumnPositionInTotalImagePixelMatrix, col) ||
            !item_long(pp, DCM_RowPositionInTotalImagePixelMatrix, row)) {
            snprintf(b, sizeof b,
                     "TILED_SPARSE frame %u: Plane Position (Slide) without Column/Row Position In Total Image "
                     "Pixel Matrix",
                     f + 1);
            return b;
        }
        if (col < 1 || row < 1 || (uint64_t)col > g.W || (uint64_t)row > g.H) {
            snprintf(b, sizeof b, "TILED_SPARSE frame %u at column %ld, row %ld is outside the %ux%u Total Pixel Matrix",
                     f + 1, col, row, g.W, g.H);
            return b;
        }
        /* optical path and focal plane filters */
        DcmItem *op = nullptr;
        OFString path;
        if (it->findAndGetSequenceItem(DCM_OpticalPathIdentificationSequence, op, 0).good() && op)
            op->findAndGetOFString(DCM_OpticalPathIdentifier, path);
        Float64 z = 0;
        bool has_z = pp->findAndGetFloat64(DCM_ZOffsetInSlideCoordinateSystem, z).good();
        if (f == 0) {
            path0 = path.c_str();
            z0 = z;
            have_z0 = has_z;
        } else {
            if (path0 != path.c_str()) continue;
            if (have_z0 && has_z && std::fabs(z - z0) > 1e-9) continue;
        }
        g.tiles.push_back(Tile{f, (int64_t)col - 1, (int64_t)row - 1});
    }
    return "";
}

/* ---- one tile as RGB8 --------------------------------------------------- */

/* The library's "NAME: reason" without NAME (added again by the caller). */
std::string strip_name(const udcm_handle *h, const char *e)
{
    const std::string p = h->name + ": ";
    if (strncmp(e, p.c_str(), p.size()) == 0) return e + p.size();
    return e;
}

bool is_grey(const udcm_info &in)
{
    return in.samples_per_pixel == 1 && strncmp(in.photometric, "MONOCHROME", 10) == 0;
}

/* Grey levels: one mapping for the whole slide (never per-tile statistics).
 * Values are rescaled (Rescale Slope/Intercept of frame 0), then: the first
 * window (LINEAR) when present; else, for Bits Stored <= 8 without rescale,
 * the full range; else 0.5 / 99.5 percentiles (numpy linear) of the overview
 * picture.  MONOCHROME1 is inverted. */
struct Tone {
    enum Mode { WINDOW, LINEAR, PERCENTILE } mode = LINEAR;
    double c = 0, w = 0, lo = 0, hi = 255;
    double slope = 1, icpt = 0;
    bool inv = false;
};

Tone tone_from_header(const udcm_info &in)
{
    Tone t;
    t.slope = in.has_rescale ? in.rescale_slope : 1.0;
    t.icpt = in.has_rescale ? in.rescale_intercept : 0.0;
    t.inv = strcmp(in.photometric, "MONOCHROME1") == 0;
    if (in.has_window && in.window_width >= 1) {
        t.mode = Tone::WINDOW;
        t.c = in.window_center;
        t.w = in.window_width;
    } else if (in.bits_stored <= 8 && (!in.has_rescale || (t.slope == 1 && t.icpt == 0))) {
        t.mode = Tone::LINEAR;
        const int bs = in.bits_stored;
        t.lo = in.pixel_representation == 1 ? -std::ldexp(1.0, bs - 1) : 0;
        t.hi = t.lo + std::ldexp(1.0, bs) - 1;
    } else {
        t.mode = Tone::PERCENTILE;
    }
    return t;
}

inline uint8_t to8(double y)
{
    if (!(y > 0)) return 0;
    if (y >= 255) return 255;
    return (uint8_t)std::floor(y + 0.5);
}

inline uint8_t tone_map(const Tone &t, double x)
{
    double y;
    if (t.mode == Tone::WINDOW) {
        if (x <= t.c - 0.5 - (t.w - 1) / 2) y = 0;
        else if (x > t.c - 0.5 + (t.w - 1) / 2) y = 255;
        else y = ((x - t.c + 0.5) + (t.w - 1) / 2) * 255.0 / (t.w - 1);
    } else {
        y = t.hi > t.lo ? (x - t.lo) * (255.0 / (t.hi - t.lo)) : 0;
    }
    uint8_t v = to8(y);
    return t.inv ? (uint8_t)(255 - v) : v;
}

/* numpy-style linear percentile (v is reordered) */
double percentile(std::vector<double> &v, double p)
{
    if (v.empty()) return 0;
    double pos = p / 100.0 * (double)(v.size() - 1);
    size_t lo = (size_t)std::floor(pos);
    double frac = pos - (double)lo;
    std::nth_element(v.begin(), v.begin() + (long)lo, v.end());
    double a = v[lo];
    if (frac == 0 || lo + 1 >= v.size()) return a;
    double b = *std::min_element(v.begin() + (long)lo + 1, v.end());
    return a + (b - a) * frac;
}

/* Grey tile: rescaled values. */
std::string read_values(udcm_handle *h, uint32_t frame, const Tone &t, std::vector<double> &vals)
{
    const udcm_info &in = h->info;
    const size_t px = (size_t)in.columns * (size_t)in.rows;
    g_frames_decoded.fetch_add(1, std::memory_order_relaxed);
    char e[512];
    std::vector<int32_t> sv(px);
    if (udcm_decode_stored(h, frame, sv.data(), sv.size(), nullptr, e, sizeof e) != 0) return strip_name(h, e);
    vals.resize(px);
    for (size_t i = 0; i < px; i++) vals[i] = (double)sv[i] * t.slope + t.icpt;
    return "";
}

/* Any tile as RGB8 (grey through the slide's tone, which must be resolved). */
std::string read_tile(udcm_handle *h, uint32_t frame, const Tone &t, std::vector<uint8_t> &rgb)
{
    const udcm_info &in = h->info;
    const size_t px = (size_t)in.columns * (size_t)in.rows;
    if (is_grey(in)) {
        std::vector<double> v;
        std::string e = read_values(h, frame, t, v);
        if (!e.empty()) return e;
        rgb.resize(px * 3);
        for (size_t i = 0; i < px; i++) rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = tone_map(t, v[i]);
        return "";
    }
    g_frames_decoded.fetch_add(1, std::memory_order_relaxed);
    char e[512];
    udcm_pipeline_opts o;
    udcm_pipeline_opts_default(&o);
    o.resample_square = 0; /* keep the tile geometry */
    uint8_t *p = nullptr;
    int w = 0, hh = 0;
    if (udcm_frame_rgb8(h, frame, &o, &p, &w, &hh, e, sizeof e) != 0) return strip_name(h, e);
    if (w != in.columns || hh != in.rows) {
        free(p);
        return "decoded tile has an unexpected size";
    }
    rgb.assign(p, p + px * 3);
    free(p);
    return "";
}

/* Copy the part of tile (tx, ty) (origin in matrix pixels) that falls in the
 * window [wx, wx+ww) x [wy, wy+wh) of the output, decimated by k (output
 * pixel j is matrix pixel j * k).  C values per pixel. */
template <typename T, int C>
void blit(const std::vector<T> &tile, int tw, int th, int64_t tx, int64_t ty, const Geometry &g, int k, int64_t wx,
          int64_t wy, int ww, int wh, T *out)
{
    /* matrix pixels covered by tile and matrix */
    const int64_t x0 = std::max<int64_t>(tx, 0), x1 = std::min<int64_t>(tx + tw, g.W);
    const int64_t y0 = std::max<int64_t>(ty, 0), y1 = std::min<int64_t>(ty + th, g.H);
    /* output pixels j with matrix coordinate j * k in [x0, x1) */
    auto first = [k](int64_t a) { return (a + k - 1) / k; };
    const int64_t ox0 = std::max<int64_t>(first(x0), wx), ox1 = std::min<int64_t>(first(x1), wx + ww);
    const int64_t oy0 = std::max<int64_t>(first(y0), wy), oy1 = std::min<int64_t>(first(y1), wy + wh);
    for (int64_t oy = oy0; oy < oy1; oy++) {
        const int64_t sy = oy * k - ty;
        T *dst = out + ((size_t)(oy - wy) * (size_t)ww) * C;
        const T *src = tile.data() + (size_t)sy * (size_t)tw * C;
        if (k == 1) {
            if (ox1 > ox0)
                memcpy(dst + (size_t)(ox0 - wx) * C, src + (size_t)(ox0 - tx) * C, (size_t)(ox1 - ox0) * C * sizeof(T));
        } else {
            for (int64_t ox = ox0; ox < ox1; ox++) {
                const T *sp = src + (size_t)(ox * k - tx) * C;
                T *dp = dst + (size_t)(ox - wx) * C;
                for (int c = 0; c < C; c++) dp[c] = sp[c];
            }
        }
    }
}

int decimation_for(const Geometry &g, int size)
{
    const uint32_t shorter = std::min(g.W, g.H);
    const uint64_t step = (uint64_t)kDecimateFactor * (uint64_t)std::max(1, size);
    const uint64_t k = shorter / step;
    return k >= 2 ? (int)std::min<uint64_t>(k, 1u << 20) : 1;
}

/* Calls fn(frame, x, y) for each tile of the level that contributes to a
 * decimated (k) stitch; stops at the first error. */
template <typename F>
std::string for_each_tile(const Geometry &g, int k, F fn)
{
    if (g.full) {
        for (uint32_t ty = 0; ty < g.nty; ty++)
            for (uint32_t tx = 0; tx < g.ntx; tx++) {
                const int64_t x0 = (int64_t)tx * g.tw, y0 = (int64_t)ty * g.th;
                if (k > 1) { /* skip tiles without a sampled row or column */
                    int64_t fx = (x0 + k - 1) / k * k, fy = (y0 + k - 1) / k * k;
                    if (fx >= x0 + g.tw || fy >= y0 + g.th) continue;
                }
                std::string e = fn(ty * g.ntx + tx, x0, y0);
                if (!e.empty()) return e;
            }
    } else {
        for (const Tile &t : g.tiles) {
            std::string e = fn(t.frame, t.x, t.y);
            if (!e.empty()) return e;
        }
    }
    return "";
}

std::string frame_error(uint32_t frame, const std::string &e)
{
    char b[64];
    snprintf(b, sizeof b, "frame %u: ", frame + 1);
    return b + e;
}

/* Whole level, decimated by k, white where there is no tile.  For grey
 * slides the tone is resolved here (percentiles of this picture). */
std::string stitch(udcm_handle *h, const Geometry &g, int k, const udcm_limits &lim, Tone &tone,
                   std::vector<uint8_t> &out, int &ow, int &oh)
{
    ow = (int)((g.W + (uint32_t)k - 1) / (uint32_t)k);
    oh = (int)((g.H + (uint32_t)k - 1) / (uint32_t)k);
    const uint64_t npx = (uint64_t)ow * (uint64_t)oh;
    if (lim.max_frame_pixels && npx > lim.max_frame_pixels) {
        char b[200];
        snprintf(b, sizeof b, "stitched level of %dx%d pixels exceeds the limit of %llu pixels", ow, oh,
                 (unsigned long long)lim.max_frame_pixels);
        return b;
    }
    tone = tone_from_header(h->info);
    if (!is_grey(h->info)) {
        out.assign((size_t)npx * 3, 255);
        std::vector<uint8_t> tile;
        return for_each_tile(g, k, [&](uint32_t f, int64_t x, int64_t y) -> std::string {
            std::string e = read_tile(h, f, tone, tile);
            if (!e.empty()) return frame_error(f, e);
            blit<uint8_t, 3>(tile, g.tw, g.th, x, y, g, k, 0, 0, ow, oh, out.data());
            return "";
        });
    }
    std::vector<double> vals((size_t)npx, std::nan("")), tile;
    std::string e = for_each_tile(g, k, [&](uint32_t f, int64_t x, int64_t y) -> std::string {
        std::string e2 = read_values(h, f, tone, tile);
        if (!e2.empty()) return frame_error(f, e2);
        blit<double, 1>(tile, g.tw, g.th, x, y, g, k, 0, 0, ow, oh, vals.data());
        return "";
    });
    if (!e.empty()) return e;
    if (tone.mode == Tone::PERCENTILE) {
        std::vector<double> t;
        t.reserve((size_t)npx);
        for (double v : vals)
            if (!std::isnan(v)) t.push_back(v);
        tone.mode = Tone::LINEAR;
        tone.lo = percentile(t, 0.5);
        tone.hi = percentile(t, 99.5);
    }
    out.resize((size_t)npx * 3);
    for (size_t i = 0; i < (size_t)npx; i++) {
        uint8_t v = std::isnan(vals[i]) ? 255 : tone_map(tone, vals[i]);
        out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = v;
    }
    return "";
}

/* Small LRU of decoded tiles. */
struct TileCache {
    std::list<std::pair<uint32_t, std::vector<uint8_t>>> items;
    const std::vector<uint8_t> *get(udcm_handle *h, uint32_t frame, const Tone &tone, std::string &err)
    {
        for (auto it = items.begin(); it != items.end(); ++it)
            if (it->first == frame) {
                items.splice(items.begin(), items, it);
                return &items.front().second;
            }
        std::vector<uint8_t> rgb;
        err = read_tile(h, frame, tone, rgb);
        if (!err.empty()) {
            err = frame_error(frame, err);
            return nullptr;
        }
        items.emplace_front(frame, std::move(rgb));
        if (items.size() > kCacheTiles) items.pop_back();
        return &items.front().second;
    }
};

/* One window of the level, white outside the matrix and where no tile is. */
std::string read_window(udcm_handle *h, const Geometry &g, const Tone &tone, TileCache &cache, int64_t wx,
                        int64_t wy, int size, uint8_t *out)
{
    memset(out, 255, (size_t)size * (size_t)size * 3);
    std::string e;
    if (g.full) {
        const int64_t tx0 = std::max<int64_t>(wx, 0) / g.tw, ty0 = std::max<int64_t>(wy, 0) / g.th;
        const int64_t tx1 = std::min<int64_t>((wx + size - 1) / g.tw, (int64_t)g.ntx - 1);
        const int64_t ty1 = std::min<int64_t>((wy + size - 1) / g.th, (int64_t)g.nty - 1);
        for (int64_t ty = ty0; ty <= ty1; ty++)
            for (int64_t tx = tx0; tx <= tx1; tx++) {
                const std::vector<uint8_t> *t = cache.get(h, (uint32_t)(ty * g.ntx + tx), tone, e);
                if (!t) return e;
                blit<uint8_t, 3>(*t, g.tw, g.th, tx * g.tw, ty * g.th, g, 1, wx, wy, size, size, out);
            }
    } else {
        for (const Tile &tl : g.tiles) {
            if (tl.x >= wx + size || tl.x + g.tw <= wx || tl.y >= wy + size || tl.y + g.th <= wy) continue;
            const std::vector<uint8_t> *t = cache.get(h, tl.frame, tone, e);
            if (!t) return e;
            blit<uint8_t, 3>(*t, g.tw, g.th, tl.x, tl.y, g, 1, wx, wy, size, size, out);
        }
    }
    return "";
}

void limits_or_default(const udcm_limits *in, udcm_limits &out)
{
    if (in) out = *in;
    else udcm_limits_default(&out);
}

const char *series_name(const udcm_series *s)
{
    return s && s->series_uid[0] ? s->series_uid : "<series>";
}

/* Overview of the chosen level: stitched, decimated if needed. */
int overview(const udcm_series *s, const udcm_limits *lim_in, int min_side, std::vector<uint8_t> &rgb, int &w,
             int &hgt, int &instance, Tone &tone, char *err, size_t errlen)
{
    udcm_limits lim;
    limits_or_default(lim_in, lim);
    std::vector<Level> v = list_levels(s);
    int li = pick_overview(v, min_side);
    if (li < 0) {
        set_error(series_name(s), err, errlen, "no VOLUME or THUMBNAIL whole-slide image in the series");
        return -1;
    }
    instance = v[(size_t)li].instance;
    const udcm_instance &inst = s->instances[instance];
    udcm_handle *h = udcm_instance_open(&inst, &lim, err, errlen);
    if (!h) return -1;
    Geometry g;
    std::string e = geometry(h, g);
    if (e.empty()) e = stitch(h, g, decimation_for(g, min_side), lim, tone, rgb, w, hgt);
    if (!e.empty()) set_error(h->name, err, errlen, "%s", e.c_str());
    udcm_close(h);
    return e.empty() ? 0 : -1;
}

bool is_tissue(const uint8_t *p)
{
    const int r = p[0], g = p[1], b = p[2];
    const int mx = std::max(r, std::max(g, b)), mn = std::min(r, std::min(g, b));
    if (mx < 16) return false; /* black: no data / scanner padding */
    const double mean = (r + g + b) / 3.0;
    const double sat = (double)(mx - mn) / (double)mx;
    return mean < 220.0 || sat > 0.07;
}

} // namespace

/* ---- public API --------------------------------------------------------- */

extern "C" int udcm_wsi_levels(const udcm_series *s, udcm_wsi_level *out, int max)
{
    try {
        std::vector<Level> v = list_levels(s);
        for (size_t i = 0; i < v.size() && (int)i < max && out; i++) {
            udcm_wsi_level &o = out[i];
            memset(&o, 0, sizeof o);
            const Level &L = v[i];
            o.instance = L.instance;
            snprintf(o.flavor, sizeof o.flavor, "%s", L.thumbnail ? "THUMBNAIL" : "VOLUME");
            o.width = L.W;
            o.height = L.H;
            o.tile_width = L.tw;
            o.tile_height = L.th;
            o.frames = L.frames;
            snprintf(o.organization, sizeof o.organization, "%s", L.org.c_str());
            o.spacing_mm = L.spacing;
        }
        return (int)v.size();
    } catch (...) {
        return -1;
    }
}

extern "C" int udcm_wsi_overview_level(const udcm_series *s, int min_side)
{
    try {
        std::vector<Level> v = list_levels(s);
        int i = pick_overview(v, min_side);
        return i < 0 ? -1 : v[(size_t)i].instance;
    } catch (...) {
        return -1;
    }
}

extern "C" int udcm_wsi_tile_level(const udcm_series *s, double target_spacing_mm)
{
    try {
        std::vector<Level> v = list_levels(s);
        int i = pick_tile_level(v, target_spacing_mm > 0 ? target_spacing_mm : UDCM_WSI_DEFAULT_SPACING_MM);
        return i < 0 ? -1 : v[(size_t)i].instance;
    } catch (...) {
        return -1;
    }
}

extern "C" int udcm_wsi_overview_rgb8(const udcm_series *s, const udcm_limits *lim, int min_side, uint8_t **rgb,
                                      int *w, int *h, char *err, size_t errlen)
{
    if (!rgb) return -1;
    *rgb = nullptr;
    try {
        std::vector<uint8_t> v;
        int ww = 0, hh = 0, inst = -1;
        Tone tone;
        if (overview(s, lim, min_side, v, ww, hh, inst, tone, err, errlen) != 0) return -1;
        uint8_t *p = (uint8_t *)malloc(v.size());
        if (!p) {
            set_error(series_name(s), err, errlen, "out of memory");
            return -1;
        }
        memcpy(p, v.data(), v.size());
        *rgb = p;
        if (w) *w = ww;
        if (h) *h = hh;
        return 0;
    } catch (const std::bad_alloc &) {
        set_error(series_name(s), err, errlen, "out of memory");
    } catch (...) {
        set_error(series_name(s), err, errlen, "internal error while building the overview");
    }
    return -1;
}

extern "C" int udcm_wsi_overview_tensor(const udcm_series *s, const udcm_limits *lim, int size, const float mean[3],
                                        const float std_[3], float *out, uint8_t *rgb_out, char *err, size_t errlen)
{
    if (size <= 0 || !out) return -1;
    try {
        std::vector<uint8_t> v;
        int ww = 0, hh = 0, inst = -1;
        Tone tone;
        if (overview(s, lim, size, v, ww, hh, inst, tone, err, errlen) != 0) return -1;
        std::vector<uint8_t> crop((size_t)size * (size_t)size * 3);
        if (um_resize_shorter_crop_rgb8(v.data(), ww, hh, size, crop.data()) != 0) {
            set_error(s->instances[inst].path, err, errlen, "cannot resize a %dx%d overview to %d", ww, hh, size);
            return -1;
        }
        um_rgb8_to_chw_normalized(crop.data(), size, mean, std_, out);
        if (rgb_out) memcpy(rgb_out, crop.data(), crop.size());
        return 0;
    } catch (const std::bad_alloc &) {
        set_error(series_name(s), err, errlen, "out of memory");
    } catch (...) {
        set_error(series_name(s), err, errlen, "internal error while building the overview");
    }
    return -1;
}

extern "C" int udcm_wsi_sample_tiles(const udcm_series *s, const udcm_limits *lim_in, int n_tiles, int tile_size,
                                     double target_spacing_mm, uint8_t **tiles, int *n_out, udcm_wsi_tile *where,
                                     char *err, size_t errlen)
{
    if (!tiles || !n_out) return -1;
    *tiles = nullptr;
    *n_out = 0;
    if (n_tiles <= 0) n_tiles = UDCM_WSI_DEFAULT_TILES;
    if (tile_size <= 0) tile_size = UDCM_WSI_DEFAULT_TILE_SIZE;
    if (target_spacing_mm <= 0) target_spacing_mm = UDCM_WSI_DEFAULT_SPACING_MM;
    udcm_handle *h = nullptr;
    try {
        udcm_limits lim;
        limits_or_default(lim_in, lim);
        if (lim.max_frame_pixels && (uint64_t)tile_size * (uint64_t)tile_size > lim.max_frame_pixels) {
            set_error(series_name(s), err, errlen, "tile size %d exceeds the pixel limit", tile_size);
            return -1;
        }
        std::vector<Level> v = list_levels(s);
        const int ti = pick_tile_level(v, target_spacing_mm);
        if (ti < 0) {
            set_error(series_name(s), err, errlen, "no VOLUME whole-slide image in the series");
            return -1;
        }
        /* 1. tissue mask from the overview level */
        std::vector<uint8_t> ov;
        int mw = 0, mh = 0, minst = -1;
        Tone tone;
        if (overview(s, &lim, tile_size, ov, mw, mh, minst, tone, err, errlen) != 0) return -1;
        const Level &T = v[(size_t)ti];
        /* mask coordinates of target pixel x: x * sx (the levels cover the same area) */
        const double sx = (double)mw / (double)T.W, sy = (double)mh / (double)T.H;
        std::vector<uint32_t> integ((size_t)(mw + 1) * (size_t)(mh + 1), 0);
        for (int y = 0; y < mh; y++) {
            uint32_t row = 0;
            for (int x = 0; x < mw; x++) {
                row += is_tissue(&ov[((size_t)y * (size_t)mw + (size_t)x) * 3]) ? 1 : 0;
                integ[(size_t)(y + 1) * (size_t)(mw + 1) + (size_t)(x + 1)] =
                    integ[(size_t)y * (size_t)(mw + 1) + (size_t)(x + 1)] + row;
            }
        }
        std::vector<uint8_t>().swap(ov);

        /* 2. grid of non-overlapping windows, centred in the level */
        const int64_t ts = tile_size;
        const int64_t nx = std::max<int64_t>(1, (int64_t)T.W / ts), ny = std::max<int64_t>(1, (int64_t)T.H / ts);
        const int64_t ox = std::max<int64_t>(0, ((int64_t)T.W - nx * ts) / 2);
        const int64_t oy = std::max<int64_t>(0, ((int64_t)T.H - ny * ts) / 2);
        struct Cand {
            int64_t x, y;
            float frac;
        };
        std::vector<Cand> strong, weak;
        for (int64_t j = 0; j < ny; j++)
            for (int64_t i = 0; i < nx; i++) {
                const int64_t x = ox + i * ts, y = oy + j * ts;
                int a0 = (int)std::floor((double)x * sx), a1 = (int)std::ceil((double)(x + ts) * sx);
                int b0 = (int)std::floor((double)y * sy), b1 = (int)std::ceil((double)(y + ts) * sy);
                a0 = std::max(0, std::min(a0, mw - 1));
                b0 = std::max(0, std::min(b0, mh - 1));
                a1 = std::max(a0 + 1, std::min(a1, mw));
                b1 = std::max(b0 + 1, std::min(b1, mh));
                const size_t W1 = (size_t)mw + 1;
                const uint64_t cnt = (uint64_t)integ[(size_t)b1 * W1 + (size_t)a1] -
                                     integ[(size_t)b0 * W1 + (size_t)a1] - integ[(size_t)b1 * W1 + (size_t)a0] +
                                     integ[(size_t)b0 * W1 + (size_t)a0];
                const float frac = (float)((double)cnt / ((double)(a1 - a0) * (double)(b1 - b0)));
                if (frac >= 0.5f) strong.push_back(Cand{x, y, frac});
                else if (frac > 0) weak.push_back(Cand{x, y, frac});
            }
        const std::vector<Cand> &c = strong.empty() ? weak : strong;
        const size_t K = std::min<size_t>((size_t)n_tiles, c.size());
        if (K == 0) return 0; /* no tissue found: *n_out = 0 */

        /* 3. the chosen windows, reading only the frames they overlap */
        const size_t per = (size_t)tile_size * (size_t)tile_size * 3;
        std::unique_ptr<uint8_t, void (*)(void *)> own((uint8_t *)malloc(per * K), free);
        uint8_t *buf = own.get();
        if (!buf) {
            set_error(series_name(s), err, errlen, "out of memory");
            return -1;
        }
        h = udcm_instance_open(&s->instances[T.instance], &lim, err, errlen);
        if (!h) return -1;
        Geometry g;
        std::string e = geometry(h, g);
        /* grey: the overview's mapping, unless this level has its own window */
        {
            Tone own_tone = tone_from_header(h->info);
            if (own_tone.mode != Tone::PERCENTILE) tone = own_tone;
            else tone.slope = own_tone.slope, tone.icpt = own_tone.icpt, tone.inv = own_tone.inv;
        }
        TileCache cache;
        for (size_t k = 0; k < K && e.empty(); k++) {
            /* evenly spread over the candidates in raster order */
            const Cand &cd = c[(size_t)(((2 * (uint64_t)k + 1) * c.size()) / (2 * K))];
            e = read_window(h, g, tone, cache, cd.x, cd.y, tile_size, buf + per * k);
            if (where) {
                where[k].instance = T.instance;
                where[k].x = (int)cd.x;
                where[k].y = (int)cd.y;
                where[k].tissue = cd.frac;
            }
        }
        if (!e.empty()) {
            set_error(h->name, err, errlen, "%s", e.c_str());
            udcm_close(h);
            return -1;
        }
        udcm_close(h);
        *tiles = own.release();
        *n_out = (int)K;
        return 0;
    } catch (const std::bad_alloc &) {
        set_error(series_name(s), err, errlen, "out of memory");
    } catch (...) {
        set_error(series_name(s), err, errlen, "internal error while sampling tiles");
    }
    if (h) udcm_close(h);
    return -1;
}

extern "C" uint64_t udcm_wsi_frames_decoded(void)
{
    return g_frames_decoded.load(std::memory_order_relaxed);
}
