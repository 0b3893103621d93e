// UniMed for Orthanc — SR writer: the name-based UIDs (docs/REPORTS.md, "UID derivation").
//
// Our own code, not DCMTK's: DCMTK makes only random UIDs
// (dcmGenerateUniqueIdentifier: root, host, time, counter), and the report's
// identity must follow its content (a re-run writes the same object).  The
// UIDs are UUIDv5-style names under 2.25 (PS3.5 B.2), which needs SHA-1;
// DCMTK exposes no hash outside dcmsign (OpenSSL, not a dependency of ours),
// so the 60-line FIPS 180-4 SHA-1 below does it.

#include "sr_internal.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace udcm_sr {

namespace {

struct Sha1 {
    uint32_t h[5] = {0x67452301u, 0xEFCDAB89u, 0x98BADCFEu, 0x10325476u, 0xC3D2E1F0u};
    uint8_t block[64];
    size_t used = 0;
    uint64_t total = 0;

    static uint32_t rol(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

    void compress(const uint8_t *p)
    {
        uint32_t w[80];
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
                   (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
        for (int i = 16; i < 80; i++) w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 80; i++) {
            uint32_t f, k;
            if (i < 20) { f = (b & c) | (~b & d); k = 0x5A827999u; }
            else if (i < 40) { f = b ^ c ^ d; k = 0x6ED9EBA1u; }
            else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8F1BBCDCu; }
            else { f = b ^ c ^ d; k = 0xCA62C1D6u; }
            uint32_t t = rol(a, 5) + f + e + k + w[i];
            e = d; d = c; c = rol(b, 30); b = a; a = t;
        }
        h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
    }

    void update(const void *data, size_t len)
    {
        const uint8_t *p = static_cast<const uint8_t *>(data);
        total += len;
        while (len > 0) {
            size_t n = 64 - used;
            if (n > len) n = len;
            memcpy(block + used, p, n);
            used += n; p += n; len -= n;
            if (used == 64) { compress(block); used = 0; }
        }
    }

    void final(uint8_t out[20])
    {
        uint64_t bits = total * 8;
        uint8_t pad = 0x80;
        update(&pad, 1);
        uint8_t zero = 0;
        while (used != 56) update(&zero, 1);
        uint8_t len[8];
        for (int i = 0; i < 8; i++) len[i] = (uint8_t)(bits >> (56 - 8 * i));
        update(len, 8);
        for (int i = 0; i < 5; i++) {
            out[4 * i] = (uint8_t)(h[i] >> 24); out[4 * i + 1] = (uint8_t)(h[i] >> 16);
            out[4 * i + 2] = (uint8_t)(h[i] >> 8); out[4 * i + 3] = (uint8_t)h[i];
        }
    }
};

// Namespace UUID of UniMed for Orthanc SR UIDs (random, fixed forever).
const uint8_t kUidNamespace[16] = {0xdc, 0x1e, 0x2d, 0x6e, 0x9f, 0xc9, 0x49, 0x43,
                                   0x8f, 0x68, 0xd2, 0xa9, 0xe9, 0x88, 0xb2, 0xa1};

}  // namespace

std::string uid_from_name(const std::string &name)
{
    char out[65];
    udcm_sr_uid_from_name(name.data(), name.size(), out);
    return out;
}

// Canonical names (docs/REPORTS.md, "UID derivation").
static std::string group_key(const udcm_sr_group &G)
{
    return std::string("set=") + G.label_set_name + "|" + G.label_set_version + "|" +
           G.label_set_hash + "|" + (G.series_uid ? G.series_uid : "") + "\n";
}

Uids derive_uids(const udcm_sr_request *req, const std::string &study)
{
    Uids u;
    std::string base = std::string("study=") + study + "\nmodel=" + req->model_hash + "\n";
    u.series = uid_from_name("unimed-sr-series\n" + base);
    std::string inst = "unimed-sr-instance\n" + base;
    for (size_t g = 0; g < req->n_groups; g++) inst += group_key(req->groups[g]);
    // The analysed instances, sorted: a study that gains or loses an
    // instance gets a new report (docs/REPORTS.md, "Versions").
    std::vector<std::string> inputs;
    for (size_t i = 0; i < req->n_inputs; i++) inputs.push_back(req->input_sop_instance_uids[i]);
    std::sort(inputs.begin(), inputs.end());
    inputs.erase(std::unique(inputs.begin(), inputs.end()), inputs.end());
    for (const std::string &in : inputs) inst += "input=" + in + "\n";
    // A comment is content too (a model card that starts or stops listing a
    // set changes the report); without comments the names stay as they were.
    for (size_t g = 0; g < req->n_groups; g++)
        if (!empty(req->groups[g].comment))
            inst += "comment[" + std::to_string(g) + "]=" + req->groups[g].comment + "\n";
    u.sop = uid_from_name(inst);
    for (size_t g = 0; g < req->n_groups; g++)
        u.tracking.push_back(uid_from_name("unimed-sr-tracking\n" + base + group_key(req->groups[g])));
    return u;
}

std::string device_observer_uid(const udcm_sr_request *req)
{
    if (!empty(req->device_observer_uid)) return req->device_observer_uid;
    return uid_from_name(std::string("unimed-sr-device\nname=") + req->model_name + "\nmodel=" + req->model_hash +
                         "\n");
}

}  // namespace udcm_sr

using namespace udcm_sr;

extern "C" {

void udcm_sr_uid_from_name(const void *name, size_t len, char *out)
{
    Sha1 s;
    s.update(kUidNamespace, sizeof kUidNamespace);
    s.update(name, len);
    uint8_t d[20];
    s.final(d);
    d[6] = (uint8_t)((d[6] & 0x0F) | 0x50);  // version 5
    d[8] = (uint8_t)((d[8] & 0x3F) | 0x80);  // RFC 4122 variant
    // 128-bit big-endian integer to decimal (repeated division by 10).
    uint8_t n[16];
    memcpy(n, d, 16);
    char digits[48];
    int nd = 0;
    for (;;) {
        bool zero = true;
        unsigned rem = 0;
        for (int i = 0; i < 16; i++) {
            unsigned cur = (rem << 8) | n[i];
            n[i] = (uint8_t)(cur / 10);
            rem = cur % 10;
            if (n[i]) zero = false;
        }
        digits[nd++] = (char)('0' + rem);
        if (zero) break;
    }
    int o = snprintf(out, 65, "2.25.");
    while (nd > 0) out[o++] = digits[--nd];
    out[o] = '\0';
}

int udcm_sr_derive_uids(const udcm_sr_request *req, const char *study_uid, char *series_uid_out,
                        char *sop_instance_uid_out, char *tracking_uids_out, char *err, size_t errlen)
{
    try {
        check_request(req);
        check_uid(study_uid, "study_uid");
        Uids u = derive_uids(req, study_uid);
        if (series_uid_out) snprintf(series_uid_out, 65, "%s", u.series.c_str());
        if (sop_instance_uid_out) snprintf(sop_instance_uid_out, 65, "%s", u.sop.c_str());
        if (tracking_uids_out)
            for (size_t g = 0; g < u.tracking.size(); g++)
                snprintf(tracking_uids_out + 65 * g, 65, "%s", u.tracking[g].c_str());
        return 0;
    } catch (const SrError &e) {
        set_err(err, errlen, "%s", e.msg.c_str());
    } catch (const std::exception &e) {
        set_err(err, errlen, "udcm_sr_derive_uids: %s", e.what());
    }
    return -1;
}

}  // extern "C"
