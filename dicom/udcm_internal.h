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
    /* J2K: first fragment index (1-based, item 0 is the offset table) and
     * fragment count of each frame; computed on first use. */
    std::vector<std::pair<uint32_t, uint32_t>> j2k_frames;
    bool j2k_frames_done = false;
    /* udcm_open_memory: the anonymous file holding the input, or -1 */
    int memfd = -1;
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
    std::vector<int32_t> data;
};

/* Decode a raw J2K codestream or a JP2 file held in memory.  max_pixels
 * bounds width*height before OpenJPEG allocates the output.  Returns empty
 * string on success, else the reason. */
std::string j2k_decode(const uint8_t *buf, size_t len, uint64_t max_pixels, J2KImage &out);

/* Item of a functional group macro for a frame: per-frame first, then
 * shared.  NULL when absent. */
DcmItem *functional_group(DcmDataset *ds, uint32_t frame, const DcmTagKey &macro);

} // namespace udcm

#endif
