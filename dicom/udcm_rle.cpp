/* unimed_dicom: RLE Lossless decoding (PS3.5 Annex G), bounds-checked.
 *
 * Used instead of DCMTK's RLE codec (DCMTK 3.6.7 reads past its buffer on
 * crafted headers).  A frame is a 64-byte header (segment count, then 15
 * little-endian segment offsets relative to the start of the header)
 * followed by the segments.  Each segment is one byte plane of one sample,
 * PackBits coded; the segments of a sample come most significant byte
 * first, the samples in order (PS3.5 G.2).  Every read is checked against
 * the frame's bytes and every write against the output plane. */
#include "udcm_internal.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace udcm {

static uint32_t rd32le(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static bool host_little_endian()
{
    const uint16_t one = 1;
    uint8_t b;
    memcpy(&b, &one, 1);
    return b == 1;
}

bool rle_header_plausible(const uint8_t *first8, size_t frag_len, unsigned nseg)
{
    return frag_len >= 64 && rd32le(first8) == nseg && rd32le(first8 + 4) == 64;
}

/* Decode one PackBits segment [p, end) into `px` bytes written at dst[0],
 * dst[stride], dst[2*stride], ...  Returns "" or the reason.
 *
 * The segment must decode to exactly px bytes.  Tolerated, because
 * encoders produce them: one extra decoded byte when px is odd (a plane
 * padded to an even length; the byte is dropped), no-operation bytes, and a
 * last header byte whose run is cut off by the end of the segment once the
 * plane is complete (the pad byte that makes a segment or the fragment an
 * even number of bytes). */
static std::string decode_segment(const uint8_t *p, const uint8_t *end, size_t px, uint8_t *dst, size_t stride,
                                  unsigned seg)
{
    const size_t cap = px + (px & 1);
    size_t o = 0; /* bytes produced */
    char b[160];
    while (p < end) {
        const int n = (int8_t)*p++;
        if (n == -128) continue; /* no operation */
        const bool literal = n >= 0;
        const size_t cnt = literal ? (size_t)n + 1 : (size_t)(1 - n); /* bytes produced */
        const size_t need = literal ? cnt : 1;                         /* bytes consumed */
        if ((size_t)(end - p) < need) {
            if (o >= px) break; /* padding after a complete plane */
            if (literal)
                snprintf(b, sizeof b, "RLE segment %u is truncated (a literal run of %zu bytes has %zu)", seg + 1,
                         cnt, (size_t)(end - p));
            else
                snprintf(b, sizeof b, "RLE segment %u is truncated (a replicate run has no byte)", seg + 1);
            return b;
        }
        if (cnt > cap - o) {
            snprintf(b, sizeof b, "RLE segment %u decodes to more than the %zu bytes of a plane", seg + 1, px);
            return b;
        }
        const size_t w = o < px ? std::min(cnt, px - o) : 0; /* bytes kept */
        if (literal)
            for (size_t i = 0; i < w; i++) dst[(o + i) * stride] = p[i];
        else
            for (size_t i = 0; i < w; i++) dst[(o + i) * stride] = *p;
        p += need;
        o += cnt;
    }
    if (o < px) {
        snprintf(b, sizeof b, "RLE segment %u decodes to %zu bytes, expected %zu (rows x columns)", seg + 1, o, px);
        return b;
    }
    return "";
}

std::string rle_decode_frame(const uint8_t *buf, size_t len, size_t px, unsigned spp, unsigned bps, uint8_t *out)
{
    char b[200];
    if (spp == 0 || bps == 0 || px == 0) return "RLE: nothing to decode";
    const unsigned nseg = spp * bps;
    if (len < 64) {
        snprintf(b, sizeof b, "RLE frame of %zu bytes is shorter than its 64-byte header", len);
        return b;
    }
    const uint32_t n = rd32le(buf);
    if (n == 0 || n > 15) {
        snprintf(b, sizeof b, "RLE header declares %u segments (1 to 15 allowed)", n);
        return b;
    }
    if (n != nseg) {
        snprintf(b, sizeof b, "RLE header declares %u segments, expected %u (%u samples x %u bytes)", n, nseg, spp,
                 bps);
        return b;
    }
    uint32_t off[16];
    for (unsigned k = 0; k < n; k++) off[k] = rd32le(buf + 4 + 4 * k);
    if (off[0] != 64) {
        snprintf(b, sizeof b, "RLE header: first segment offset is %u, expected 64", off[0]);
        return b;
    }
    for (unsigned k = 0; k < n; k++) {
        if (off[k] >= len) {
            snprintf(b, sizeof b, "RLE header: segment %u offset %u is beyond the %zu bytes of the frame", k + 1,
                     off[k], len);
            return b;
        }
        if (k > 0 && off[k] <= off[k - 1]) {
            snprintf(b, sizeof b, "RLE header: segment offsets out of order (%u then %u)", off[k - 1], off[k]);
            return b;
        }
    }
    const bool le = host_little_endian();
    for (unsigned k = 0; k < n; k++) {
        const unsigned sample = k / bps;
        const unsigned sig = k % bps; /* 0 = most significant byte */
        const size_t byte_in_cell = le ? (size_t)(bps - 1 - sig) : (size_t)sig;
        uint8_t *dst = out + (size_t)sample * px * bps + byte_in_cell;
        const uint8_t *s = buf + off[k];
        const uint8_t *e = buf + (k + 1 < n ? (size_t)off[k + 1] : len);
        std::string err = decode_segment(s, e, px, dst, bps, k);
        if (!err.empty()) return err;
    }
    return "";
}

} // namespace udcm
