/* unimed_dicom: Deflated Explicit VR Little Endian (PS3.5 A.5).
 *
 * DCMTK inflates such a data set as a stream, so it cannot check an element
 * length against the bytes left and allocates whatever a corrupt length
 * claims (up to 4 GiB).  We inflate the data set ourselves, with a hard
 * limit on its size, into a Part 10 file whose meta information says
 * Explicit VR Little Endian; DCMTK then parses that file with the same
 * length checks as any other input. */
#include "udcm_internal.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <unistd.h>

#include <zlib.h>

namespace udcm {

static const char kDeflatedUID[] = "1.2.840.10008.1.2.1.99";
static const char kExplicitLEUID[] = "1.2.840.10008.1.2.1";
static const uint64_t kMaxInflatedBytes = (uint64_t)1 << 30;

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static void put16(std::string &s, uint16_t v)
{
    s.push_back((char)(v & 0xFF));
    s.push_back((char)(v >> 8));
}
static void put32(std::string &s, uint32_t v)
{
    for (int i = 0; i < 4; i++) s.push_back((char)((v >> (8 * i)) & 0xFF));
}

/* VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2). */
static bool long_vr(const uint8_t *vr)
{
    static const char *const k[] = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"};
    for (const char *v : k)
        if (vr[0] == (uint8_t)v[0] && vr[1] == (uint8_t)v[1]) return true;
    return false;
}

/* Walk the File Meta Information (group 0002, Explicit VR Little Endian).
 * meta receives the elements to keep, with the Transfer Syntax UID replaced
 * by Explicit VR Little Endian and without the group length; data_start
 * the offset of the (deflated) data set. */
static std::string rewrite_meta(const uint8_t *buf, size_t len, std::string &meta, size_t &data_start)
{
    size_t pos = 0;
    if (len >= 132 && memcmp(buf + 128, "DICM", 4) == 0) pos = 132;
    bool have_ts = false;
    std::string ts;
    char b[200];
    while (pos + 8 <= len && rd16(buf + pos) == 0x0002) {
        const uint16_t elem = rd16(buf + pos + 2);
        const uint8_t *vr = buf + pos + 4;
        if (vr[0] < 'A' || vr[0] > 'Z' || vr[1] < 'A' || vr[1] > 'Z')
            return "the File Meta Information of a Deflated file is not Explicit VR";
        size_t hdr;
        uint64_t vlen;
        if (long_vr(vr)) {
            if (pos + 12 > len) return "the File Meta Information is truncated";
            hdr = 12;
            vlen = rd32(buf + pos + 8);
        } else {
            hdr = 8;
            vlen = rd16(buf + pos + 6);
        }
        if (vlen == 0xFFFFFFFFu) return "the File Meta Information has an element of undefined length";
        if (vlen > len - pos - hdr) {
            snprintf(b, sizeof b, "the File Meta Information is truncated (element (0002,%04X) declares %llu bytes)",
                     elem, (unsigned long long)vlen);
            return b;
        }
        const uint8_t *val = buf + pos + hdr;
        if (elem == 0x0000) {
            /* group length: recomputed */
        } else if (elem == 0x0010) {
            ts.assign((const char *)val, (size_t)vlen);
            while (!ts.empty() && (ts.back() == '\0' || ts.back() == ' ')) ts.pop_back();
            have_ts = true;
            put16(meta, 0x0002);
            put16(meta, 0x0010);
            meta += "UI";
            put16(meta, (uint16_t)sizeof kExplicitLEUID); /* 20: the UID and its NUL pad */
            meta.append(kExplicitLEUID, sizeof kExplicitLEUID);
        } else {
            meta.append((const char *)buf + pos, hdr + (size_t)vlen);
        }
        pos += hdr + (size_t)vlen;
    }
    if (!have_ts || ts != kDeflatedUID)
        return "the File Meta Information does not name the Deflated transfer syntax where expected";
    data_start = pos;
    return "";
}

static bool write_all(int fd, const void *p, size_t n)
{
    const uint8_t *c = static_cast<const uint8_t *>(p);
    while (n > 0) {
        ssize_t k = write(fd, c, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return false;
        c += k;
        n -= (size_t)k;
    }
    return true;
}

/* Inflate src[0, n) (raw deflate when wbits < 0, zlib format otherwise).
 * fd < 0: only count the output.  Stops with an error as soon as the output
 * exceeds max_out. */
static std::string run_inflate(const uint8_t *src, size_t n, int wbits, uint64_t max_out, int fd, uint64_t &total)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, wbits) != Z_OK) return "cannot initialise zlib";
    static const size_t kChunk = 1 << 16;
    std::vector<uint8_t> out(kChunk);
    total = 0;
    size_t fed = 0;
    std::string err;
    char b[200];
    for (;;) {
        if (zs.avail_in == 0 && fed < n) {
            const size_t k = std::min<size_t>(n - fed, (size_t)1 << 30);
            zs.next_in = const_cast<Bytef *>(src + fed);
            zs.avail_in = (uInt)k;
            fed += k;
        }
        zs.next_out = out.data();
        zs.avail_out = (uInt)kChunk;
        const int r = inflate(&zs, Z_NO_FLUSH);
        const size_t got = kChunk - zs.avail_out;
        total += got;
        if (max_out && total > max_out) {
            snprintf(b, sizeof b, "the Deflated data set inflates to more than %llu bytes (the limit for a Deflated data set)",
                     (unsigned long long)max_out);
            err = b;
            break;
        }
        if (fd >= 0 && got > 0 && !write_all(fd, out.data(), got)) {
            err = std::string("cannot store the inflated data set: ") + strerror(errno);
            break;
        }
        if (r == Z_STREAM_END) break; /* bytes after the stream (padding) are ignored */
        if (r == Z_BUF_ERROR && zs.avail_in == 0 && fed >= n) {
            err = "the Deflated data set is truncated (the compressed stream does not end)";
            break;
        }
        if (r != Z_OK && r != Z_BUF_ERROR) {
            err = std::string("cannot inflate the Deflated data set: ") + (zs.msg ? zs.msg : "zlib error");
            break;
        }
    }
    inflateEnd(&zs);
    return err;
}

std::string write_inflated_file(const uint8_t *buf, size_t len, uint64_t max_inflated, int fd)
{
    std::string meta;
    size_t start = 0;
    std::string e = rewrite_meta(buf, len, meta, start);
    if (!e.empty()) return e;
    if (start >= len) return "the Deflated file has no data set after its File Meta Information";
    if (meta.size() > ((size_t)1 << 24)) return "the File Meta Information of the Deflated file is larger than 16 MiB";
    /* Deflated data sets are rare and small (structured reports, the odd
     * image): 1 GiB inflated is plenty, and bounds what a deflate bomb
     * costs (zlib expands at most ~1000:1, so a few MB could otherwise claim
     * the 4 GiB DCMTK accepts). */
    const uint64_t hard = kMaxInflatedBytes;
    const uint64_t cap = (max_inflated && max_inflated < hard) ? max_inflated : hard;
    const uint8_t *src = buf + start;
    const size_t n = len - start;
    /* PS3.5 A.5 says raw deflate; some writers used the zlib format. */
    int wbits = -MAX_WBITS;
    uint64_t total = 0;
    e = run_inflate(src, n, wbits, cap, -1, total);
    if (!e.empty() && e.find("limit") == std::string::npos && n >= 2 && (src[0] & 0x0F) == 8 &&
        (src[0] >> 4) <= 7 && ((src[0] << 8) | src[1]) % 31 == 0) {
        wbits = MAX_WBITS;
        std::string e2 = run_inflate(src, n, wbits, cap, -1, total);
        if (e2.empty()) e.clear();
    }
    if (!e.empty()) return e;
    if (total == 0) return "the Deflated data set is empty";

    std::string head(128, '\0');
    head += "DICM";
    put16(head, 0x0002);
    put16(head, 0x0000);
    head += "UL";
    put16(head, 4);
    put32(head, (uint32_t)meta.size());
    head += meta;
    if (!write_all(fd, head.data(), head.size()))
        return std::string("cannot store the inflated data set: ") + strerror(errno);
    uint64_t again = 0;
    e = run_inflate(src, n, wbits, cap, fd, again);
    if (!e.empty()) return e;
    if (again != total) return "the Deflated data set inflated differently twice";
    return "";
}

} // namespace udcm
