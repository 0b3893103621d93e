/* Internal declarations shared by the C++ sources of unimed_dicom.
 * Not installed, not part of the API. */
#ifndef UDCM_INTERNAL_H
#define UDCM_INTERNAL_H

#include <cstdarg>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "unimed_dicom.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dctk.h>
#include <dcmtk/dcmdata/dcfcache.h>

struct udcm_handle {
    std::string name;
    udcm_limits limits{};
    DcmFileFormat ff;
    DcmDataset *ds = nullptr;
    DcmFileCache cache;
    E_TransferSyntax xfer = EXS_Unknown;
    udcm_info info{};
    /* 0 when frames can be decoded, else the reason they cannot. */
    std::string not_decodable;
    /* next start fragment learnt from DCMTK after decoding frame i */
    std::map<uint32_t, Uint32> start_fragment;
    /* J2K and RLE: first fragment index (1-based, item 0 is the offset
     * table) and fragment count of each frame; computed on first use. */
    std::vector<std::pair<uint32_t, uint32_t>> j2k_frames;
    bool j2k_frames_done = false;
    /* the anonymous file holding the input (udcm_open_memory) or the
     * inflated data set (Deflated transfer syntax), or -1 */
    int memfd = -1;
    /* the file's transfer syntax was Deflated Explicit VR Little Endian: the
     * data set was inflated by udcm (ds and xfer describe the inflated,
     * Explicit VR Little Endian, data set) */
    bool deflated = false;
    /* temporary file used instead of memfd when the system has none
     * (removed at close), or "" */
    std::string tmp_path;
    /* a frame is over limits.max_decode_bytes: full-size decoding is
     * refused with this reason; JPEG 2000 may still be decoded at a reduced
     * resolution level (allow_reduce, set by the pixel pipeline) */
    std::string over_budget;
    bool allow_reduce = false;
    /* size of the last decoded frame (smaller than Rows x Columns after a
     * reduced JPEG 2000 decode) */
    int decoded_width = 0, decoded_height = 0;
    ~udcm_handle();
};

namespace udcm {

/* "NAME: message" into err. */
void set_error(const std::string &name, char *err, size_t errlen, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

/* Result of a JPEG 2000 decode: components interleaved. */
struct J2KImage {
    int width = 0, height = 0, comps = 0;
    int prec = 0;
    bool sgnd = false;
    bool mct = false; /* the codestream used a multiple component transform,
                         which OpenJPEG inverted: the output is RGB */
    int reduce = 0; /* resolution levels discarded (each halves both sides) */
    std::vector<int32_t> data;
};

/* Decode a raw J2K codestream or a JP2 file held in memory.  max_pixels
 * bounds width*height before OpenJPEG allocates the output.  Returns empty
 * string on success, else the reason. */
std::string j2k_decode(const uint8_t *buf, size_t len, uint64_t max_pixels, J2KImage &out);
/* The same at the lowest resolution reduction r (0 = full size) whose
 * decoded size costs at most budget_bytes (UDCM_DECODE_BYTES_PER_SAMPLE per
 * sample), within the codestream's resolution levels; budget_bytes 0: full
 * size.  out.reduce receives r. */
std::string j2k_decode_within(const uint8_t *buf, size_t len, uint64_t max_pixels, uint64_t budget_bytes,
                              J2KImage &out);

/* RLE Lossless (PS3.5 Annex G, udcm_rle.cpp).  Decodes the frame held in
 * buf[0, len) (header and segments, fragments concatenated) of px =
 * rows*columns pixels, spp samples of bps bytes (1, 2 or 4).  out receives
 * px*spp*bps bytes: sample plane after sample plane, each cell in local
 * byte order.  Every read and write is bounds-checked; headers whose
 * segment count is not spp*bps (or > 15), whose offsets are out of order or
 * outside the frame, and segments that do not decode to exactly px bytes
 * are refused.  Returns "" or the reason. */
std::string rle_decode_frame(const uint8_t *buf, size_t len, size_t px, unsigned spp, unsigned bps, uint8_t *out);
/* The first 8 bytes of a fragment of frag_len bytes look like the header
 * of an RLE frame with nseg segments. */
bool rle_header_plausible(const uint8_t *first8, size_t frag_len, unsigned nseg);

/* Deflated Explicit VR Little Endian (PS3.5 A.5, udcm_deflate.cpp).
 * buf[0, len) is a whole Part 10 file whose File Meta Information names the
 * Deflated transfer syntax.  Writes to fd a Part 10 file holding the same
 * meta information with Explicit VR Little Endian as transfer syntax,
 * followed by the inflated data set.  The inflated data set may not exceed
 * max_inflated bytes nor 1 GiB (max_inflated 0: 1 GiB); the data is inflated
 * once without being stored to check that before anything is written.
 * Returns "" or the reason. */
std::string write_inflated_file(const uint8_t *buf, size_t len, uint64_t max_inflated, int fd);

/* The structure guard (udcm_guard.cpp): walks the element headers of a
 * Part 10 file or raw data set buf[0, len) and returns the reason when the
 * sequence nesting or the element count exceeds lim, else "" (also when the
 * walk cannot follow the data: DCMTK reports damage itself).  stray_items
 * (may be NULL) receives (offset, size) of each item met among the top-level
 * elements, outside any sequence, which DCMTK cannot parse past. */
std::string structure_guard(const uint8_t *buf, size_t len, const udcm_limits &lim,
                            std::vector<std::pair<size_t, size_t>> *stray_items = nullptr);

/* Item of a functional group macro for a frame: per-frame first, then
 * shared.  NULL when absent. */
DcmItem *functional_group(DcmDataset *ds, uint32_t frame, const DcmTagKey &macro);

} // namespace udcm

#endif
