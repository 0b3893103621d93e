/* unimed_dicom: JPEG 2000 decoding with OpenJPEG from memory. */
#include "udcm_internal.h"

#include <cstring>

#include <openjpeg.h>

namespace {

struct MemSrc {
    const uint8_t *p;
    size_t len;
    size_t pos;
};

OPJ_SIZE_T mem_read(void *dst, OPJ_SIZE_T n, void *ud)
{
    MemSrc *m = static_cast<MemSrc *>(ud);
    if (m->pos >= m->len) return (OPJ_SIZE_T)-1;
    size_t k = m->len - m->pos;
    if (k > n) k = n;
    memcpy(dst, m->p + m->pos, k);
    m->pos += k;
    return k;
}

OPJ_OFF_T mem_skip(OPJ_OFF_T n, void *ud)
{
    MemSrc *m = static_cast<MemSrc *>(ud);
    if (n < 0) {
        if ((size_t)(-n) > m->pos) n = -(OPJ_OFF_T)m->pos;
    } else if ((size_t)n > m->len - m->pos) {
        n = (OPJ_OFF_T)(m->len - m->pos);
    }
    m->pos = (size_t)((OPJ_OFF_T)m->pos + n);
    return n;
}

OPJ_BOOL mem_seek(OPJ_OFF_T n, void *ud)
{
    MemSrc *m = static_cast<MemSrc *>(ud);
    if (n < 0 || (size_t)n > m->len) return OPJ_FALSE;
    m->pos = (size_t)n;
    return OPJ_TRUE;
}

void quiet(const char *, void *) {}

struct Last {
    std::string msg;
};

void on_error(const char *msg, void *ud)
{
    Last *l = static_cast<Last *>(ud);
    if (l->msg.empty() && msg) {
        l->msg = msg;
        while (!l->msg.empty() && (l->msg.back() == '\n' || l->msg.back() == ' ')) l->msg.pop_back();
    }
}

} // namespace

namespace udcm {

std::string j2k_decode(const uint8_t *buf, size_t len, uint64_t max_pixels, J2KImage &out)
{
    return j2k_decode_within(buf, len, max_pixels, 0, out);
}

std::string j2k_decode_within(const uint8_t *buf, size_t len, uint64_t max_pixels, uint64_t budget_bytes,
                              J2KImage &out)
{
    static const uint8_t jp2sig[12] = {0, 0, 0, 0x0C, 'j', 'P', ' ', ' ', 0x0D, 0x0A, 0x87, 0x0A};
    /* Some writers pad fragments before the codestream; find SOC. */
    OPJ_CODEC_FORMAT fmt;
    if (len >= 12 && memcmp(buf, jp2sig, 12) == 0) {
        fmt = OPJ_CODEC_JP2;
    } else {
        size_t k = 0;
        while (k + 1 < len && k < 64 && !(buf[k] == 0xFF && buf[k + 1] == 0x4F)) k++;
        if (k + 1 >= len || k >= 64) return "no JPEG 2000 codestream (SOC marker or JP2 signature) found";
        buf += k;
        len -= k;
        fmt = OPJ_CODEC_J2K;
    }
    MemSrc src{buf, len, 0};
    opj_stream_t *st = opj_stream_create(1 << 16, OPJ_TRUE);
    if (!st) return "out of memory";
    opj_stream_set_user_data(st, &src, nullptr);
    opj_stream_set_user_data_length(st, (OPJ_UINT64)len);
    opj_stream_set_read_function(st, mem_read);
    opj_stream_set_skip_function(st, mem_skip);
    opj_stream_set_seek_function(st, mem_seek);

    opj_codec_t *codec = opj_create_decompress(fmt);
    Last last;
    opj_set_info_handler(codec, quiet, nullptr);
    opj_set_warning_handler(codec, quiet, nullptr);
    opj_set_error_handler(codec, on_error, &last);
    opj_dparameters_t par;
    opj_set_default_decoder_parameters(&par);
    opj_image_t *img = nullptr;
    std::string err;
    auto fail = [&](const char *what) {
        err = what;
        if (!last.msg.empty()) err += " (" + last.msg + ")";
    };
    if (!opj_setup_decoder(codec, &par)) {
        fail("decoder setup failed");
    } else if (!opj_read_header(st, codec, &img) || !img) {
        fail("cannot read the codestream header");
    } else {
        uint64_t w = (uint64_t)img->x1 - img->x0, h = (uint64_t)img->y1 - img->y0;
        if (img->numcomps < 1 || img->numcomps > 4) {
            err = "unsupported number of components " + std::to_string(img->numcomps);
        } else if (w == 0 || h == 0 || (max_pixels && w * h > max_pixels)) {
            err = "codestream size " + std::to_string(w) + "x" + std::to_string(h) + " refused by the limits";
        } else {
            opj_codestream_info_v2_t *ci = opj_get_cstr_info(codec);
            uint32_t levels = 1;
            if (ci) {
                out.mct = ci->m_default_tile_info.mct != 0;
                if (ci->m_default_tile_info.tccp_info) levels = ci->m_default_tile_info.tccp_info[0].numresolutions;
                opj_destroy_cstr_info(&ci);
            }
            /* the smallest reduction whose output fits the budget */
            auto cost = [&](int r) {
                const uint64_t rw = (w + (1ull << r) - 1) >> r, rh = (h + (1ull << r) - 1) >> r;
                return rw * rh * (uint64_t)img->numcomps * UDCM_DECODE_BYTES_PER_SAMPLE;
            };
            int r = 0;
            if (budget_bytes)
                while (cost(r) > budget_bytes && (uint32_t)r + 1 < levels) r++;
            if (budget_bytes && cost(r) > budget_bytes) {
                err = "codestream of " + std::to_string(w) + "x" + std::to_string(h) + " exceeds the decode budget of " +
                      std::to_string(budget_bytes >> 20) + " MiB even at its smallest resolution level (" +
                      std::to_string(levels) + " levels)";
            } else if (r > 0 && !opj_set_decoded_resolution_factor(codec, (OPJ_UINT32)r)) {
                fail("cannot select a reduced resolution level");
            } else {
                out.reduce = r;
            }
            if (!err.empty()) {
            } else if (!opj_decode(codec, st, img) || !opj_end_decompress(codec, st)) fail("decoding failed");
        }
    }
    if (err.empty()) {
        const int nc = (int)img->numcomps;
        for (int c = 0; c < nc; c++) {
            const opj_image_comp_t &cp = img->comps[c];
            if (!cp.data) { err = "component without data"; break; }
            if (cp.dx != 1 || cp.dy != 1 || cp.w != img->comps[0].w || cp.h != img->comps[0].h) {
                err = "subsampled components are not supported";
                break;
            }
            if (cp.prec != img->comps[0].prec || cp.sgnd != img->comps[0].sgnd) {
                err = "components of different precision are not supported";
                break;
            }
        }
        if (err.empty()) {
            out.width = (int)img->comps[0].w;
            out.height = (int)img->comps[0].h;
            out.comps = nc;
            out.prec = (int)img->comps[0].prec;
            out.sgnd = img->comps[0].sgnd != 0;
            /* a 1-component image never had an MCT applied */
            if (nc < 3) out.mct = false;
            size_t n = (size_t)out.width * (size_t)out.height;
            try {
                out.data.resize(n * (size_t)nc);
            } catch (...) {
                err = "out of memory";
            }
            if (err.empty())
                for (int c = 0; c < nc; c++) {
                    const OPJ_INT32 *d = img->comps[c].data;
                    for (size_t i = 0; i < n; i++) out.data[i * (size_t)nc + (size_t)c] = d[i];
                }
        }
    }
    if (img) opj_image_destroy(img);
    opj_destroy_codec(codec);
    opj_stream_destroy(st);
    return err;
}

} // namespace udcm
