/* Structure guard: a walk over the element headers of a Part 10 file (or a
 * raw data set) before DCMTK parses it.  DCMTK's parser recurses once per
 * sequence level and keeps one object per element: a file nested a few
 * hundred thousand levels deep ends its stack, and millions of tiny elements
 * cost far more memory than the file.  The walk reads only tags, VRs and
 * lengths (never values), with an explicit stack, and refuses a nesting
 * depth or an element count over the limits.  Anything it cannot follow
 * (a length beyond the data, an odd VR, a stray delimiter) ends the walk
 * without a verdict: reporting such damage is left to DCMTK's parser, which
 * checks each length against the bytes left before allocating.  Items found
 * among the top-level elements (outside any sequence) are reported to the
 * caller, which removes them before DCMTK parses the data. */
#include "udcm_internal.h"

#include <cstring>

namespace {

const uint32_t kUndefined = 0xFFFFFFFFu;

struct Reader {
    const uint8_t *p;
    size_t len;
    bool little = true;
    uint16_t u16(size_t at) const
    {
        return little ? (uint16_t)(p[at] | (p[at + 1] << 8)) : (uint16_t)((p[at] << 8) | p[at + 1]);
    }
    uint32_t u32(size_t at) const
    {
        return little ? (uint32_t)p[at] | ((uint32_t)p[at + 1] << 8) | ((uint32_t)p[at + 2] << 16) |
                            ((uint32_t)p[at + 3] << 24)
                      : ((uint32_t)p[at] << 24) | ((uint32_t)p[at + 1] << 16) | ((uint32_t)p[at + 2] << 8) |
                            (uint32_t)p[at + 3];
    }
};

bool long_length_vr(const uint8_t *vr)
{
    static const char *const k[] = {"OB", "OW", "OF", "OD", "OL", "OV", "SQ", "UC", "UR", "UT", "UN", "SV", "UV"};
    for (const char *s : k)
        if (vr[0] == (uint8_t)s[0] && vr[1] == (uint8_t)s[1]) return true;
    return false;
}

/* One open container on the explicit stack: a data set / item (its items
 * are elements) or a sequence (its children are items). */
struct Frame {
    bool is_sequence;
    bool is_fragments; /* encapsulated Pixel Data: items are opaque */
    size_t end;        /* end offset when the length is defined, else SIZE_MAX */
    bool explicit_vr;  /* encoding of the elements inside (UN sequences are implicit LE) */
    bool little;
};

} // namespace

namespace udcm {

std::string structure_guard(const uint8_t *buf, size_t len, const udcm_limits &lim,
                            std::vector<std::pair<size_t, size_t>> *stray_items)
{
    size_t pos = 0;
    /* Part 10: preamble, "DICM", then group 0002 in Explicit VR Little Endian. */
    bool explicit_vr = true, little = true, deflated = false;
    if (len >= 132 && memcmp(buf + 128, "DICM", 4) == 0) {
        pos = 132;
        Reader r{buf, len, true};
        while (pos + 8 <= len && r.u16(pos) == 0x0002) {
            const uint16_t el = r.u16(pos + 2);
            const uint8_t *vr = buf + pos + 4;
            size_t hdr = 8;
            uint32_t L;
            if (long_length_vr(vr)) {
                if (pos + 12 > len) return "";
                L = r.u32(pos + 8);
                hdr = 12;
            } else {
                L = r.u16(pos + 6);
            }
            if (L == kUndefined || pos + hdr + L > len) return "";
            if (el == 0x0010) {
                std::string uid((const char *)buf + pos + hdr, L);
                while (!uid.empty() && (uid.back() == '\0' || uid.back() == ' ')) uid.pop_back();
                if (uid == "1.2.840.10008.1.2") explicit_vr = false;
                else if (uid == "1.2.840.10008.1.2.2") little = false;
                else if (uid == "1.2.840.10008.1.2.1.99") deflated = true;
            }
            pos += hdr + L;
        }
    } else if (len >= 8) {
        /* Raw data set: Implicit VR when the first element's bytes 4-5 are no VR. */
        const uint8_t *vr = buf + 4;
        explicit_vr = vr[0] >= 'A' && vr[0] <= 'Z' && vr[1] >= 'A' && vr[1] <= 'Z';
    }
    if (deflated) return ""; /* walked again once inflated */

    std::vector<Frame> stack;
    stack.push_back({false, false, len, explicit_vr, little});
    uint64_t elements = 0;
    char b[200];
    while (!stack.empty()) {
        Frame &top = stack.back();
        if (pos >= top.end) {
            if (pos > top.end) return ""; /* overran a defined length: DCMTK's to report */
            stack.pop_back();
            continue;
        }
        if (pos + 8 > len) return "";
        Reader r{buf, len, top.little};
        const uint16_t g = r.u16(pos), e = r.u16(pos + 2);
        if (g == 0xFFFE) {
            const uint32_t L = r.u32(pos + 4);
            pos += 8;
            if (e == 0xE00D || e == 0xE0DD) {
                /* the delimiter closes the innermost undefined-length container
                 * of its kind; a stray one ends the walk */
                const bool want_seq = e == 0xE0DD;
                if (top.end != SIZE_MAX || top.is_sequence != want_seq) return "";
                stack.pop_back();
                continue;
            }
            if (e == 0xE000 && stack.size() == 1 && L != kUndefined && (uint64_t)pos + L <= len) {
                /* an item among the top-level elements, outside any sequence
                 * (fo-dicom GH364, FreezePattern): DCMTK stops there
                 * ("Invalid tag"); pydicom reads on.  Noted, and stepped over. */
                if (stray_items) stray_items->emplace_back(pos - 8, (size_t)L + 8);
                pos += L;
                continue;
            }
            if (e != 0xE000 || !top.is_sequence) return "";
            /* an item: a data set at the same depth as its sequence */
            if (L != kUndefined && (uint64_t)pos + L > len) return "";
            if (++elements > lim.max_elements && lim.max_elements) goto too_many;
            if (top.is_fragments) {
                if (L == kUndefined) return "";
                pos += L;
                continue;
            }
            stack.push_back({false, false, L == kUndefined ? SIZE_MAX : pos + L, top.explicit_vr, top.little});
            continue;
        }
        if (top.is_sequence) return ""; /* an element where an item belongs */
        if (++elements > lim.max_elements && lim.max_elements) goto too_many;
        {
            uint32_t L;
            size_t hdr;
            bool is_sq = false, is_un = false;
            if (top.explicit_vr) {
                const uint8_t *vr = buf + pos + 4;
                if (!(vr[0] >= 'A' && vr[0] <= 'Z' && vr[1] >= 'A' && vr[1] <= 'Z')) return "";
                if (long_length_vr(vr)) {
                    if (pos + 12 > len) return "";
                    L = r.u32(pos + 8);
                    hdr = 12;
                } else {
                    L = r.u16(pos + 6);
                    hdr = 8;
                }
                is_sq = vr[0] == 'S' && vr[1] == 'Q';
                is_un = vr[0] == 'U' && vr[1] == 'N';
                /* DCMTK reads a UN element of a dictionary SQ tag as the
                 * sequence it is (dcmEnableUnknownVRConversion) */
                if (is_un && DcmTag(DcmTagKey(g, e)).getEVR() == EVR_SQ) is_sq = true;
            } else {
                L = r.u32(pos + 4);
                hdr = 8;
                is_sq = DcmTag(DcmTagKey(g, e)).getEVR() == EVR_SQ;
            }
            pos += hdr;
            if (L == kUndefined) {
                if (g == 0x7FE0 && e == 0x0010 && stack.size() == 1) {
                    /* encapsulated Pixel Data: a sequence of fragments, walked
                     * like any sequence (fragments are defined-length items) */
                    stack.push_back({true, true, SIZE_MAX, top.explicit_vr, top.little});
                    continue;
                }
                is_sq = true;
            } else if ((uint64_t)pos + L > len) {
                return ""; /* beyond the data: DCMTK's length check reports it */
            }
            if (!is_sq) {
                pos += L;
                continue;
            }
            const size_t depth = stack.size() / 2 + 1; /* data sets and sequences alternate */
            if (lim.max_sequence_depth && depth > lim.max_sequence_depth) {
                snprintf(b, sizeof b,
                         "sequences nested more than %u levels deep (at (%04X,%04X), byte %zu): refused before parsing",
                         lim.max_sequence_depth, g, e, pos - hdr);
                return b;
            }
            /* UN with undefined length holds Implicit VR Little Endian items */
            const bool ex = is_un ? false : top.explicit_vr;
            const bool le = is_un ? true : top.little;
            stack.push_back({true, false, L == kUndefined ? SIZE_MAX : pos + L, ex, le});
        }
    }
    return "";
too_many:
    snprintf(b, sizeof b, "more than %llu data elements: refused before parsing",
             (unsigned long long)lim.max_elements);
    return b;
}

} // namespace udcm
