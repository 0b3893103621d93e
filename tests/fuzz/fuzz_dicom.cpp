// libFuzzer target: unimed_dicom over arbitrary bytes.
// open_memory (tight limits) -> header info -> stored values of frame 0 ->
// pixel pipeline of frame 0 (and of the last frame when there are several).
// Deflated data sets are inflated by unimed_dicom itself (bounded by
// max_input_bytes) and RLE is decoded by its own decoder: both are fuzzed.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "unimed_dicom.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    udcm_limits lim;
    udcm_limits_default(&lim);
    lim.max_rows = 512;
    lim.max_columns = 512;
    lim.max_frames = 64;
    lim.max_frame_pixels = 1u << 16;
    lim.max_frame_bytes = 1u << 20;
    lim.max_input_bytes = 1u << 20;
    char err[512];
    udcm_handle *h = udcm_open_memory(data, size, "fuzz", &lim, err, sizeof err);
    if (!h) return 0;
    udcm_info info;
    udcm_get_info(h, &info);
    if (udcm_decodable(h, err, sizeof err)) {
        size_t n = udcm_frame_samples(h);
        std::vector<int32_t> v(n ? n : 1);
        char pi[17];
        udcm_decode_stored(h, 0, v.data(), n, pi, err, sizeof err);
        udcm_pipeline_opts o;
        udcm_pipeline_opts_default(&o);
        uint8_t *rgb = nullptr;
        int w = 0, hh = 0;
        if (udcm_frame_rgb8(h, 0, &o, &rgb, &w, &hh, err, sizeof err) == 0) udcm_free(rgb);
        if (info.frames > 1 &&
            udcm_frame_rgb8(h, (uint32_t)(info.frames - 1), &o, &rgb, &w, &hh, err, sizeof err) == 0)
            udcm_free(rgb);
    }
    udcm_close(h);
    return 0;
}
