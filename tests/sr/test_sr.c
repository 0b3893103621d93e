/*
 * Tests of the TID 1500 SR writer and reader (dicom/unimed_dicom.h).
 *
 *   test_sr write OUTDIR SOURCE.dcm XSD   write OUTDIR/report.{dcm,xml,json}
 *                                         and check: round trip through our
 *                                         reader (file and buffer), XML Schema,
 *                                         deterministic UIDs
 *   test_sr bad SOURCE.dcm                bad requests give clear errors
 *   test_sr read FILE [MIN_GROUPS]        print what our reader finds
 *                                         (exit 77 = skipped if FILE is absent)
 */
#include "unimed_dicom.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures = 0;

#define CHECK(cond, ...)                                           \
    do {                                                           \
        if (!(cond)) {                                             \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);   \
            fprintf(stderr, __VA_ARGS__);                          \
            fputc('\n', stderr);                                   \
            failures++;                                            \
        }                                                          \
    } while (0)

/* ---- the test request ---------------------------------------------------- */

#define SERIES_CT "1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322"
#define SOP_CT "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"
#define CT_STORAGE "1.2.840.10008.5.1.4.1.1.2"
#define ENH_CT_STORAGE "1.2.840.10008.5.1.4.1.1.2.1"
/* A multi-frame instance of the same study (synthetic UIDs). */
#define SERIES_MF "2.25.160913427811412934437713934316385227061"
#define SOP_MF "2.25.282349117254340096640117383349410447718"

static const udcm_sr_finding softmax_findings[] = {
    {"pneumonia", {"233604007", "SCT", "Pneumonia"}, 0.61803398875},
    {"pleural effusion", {"60046008", "SCT", "Pleural effusion"}, 0.25},
    {"no acute finding", {"UM0001", "99UNIMED", "No acute finding"}, 0.13196601125},
};
static const udcm_sr_finding binary_findings[] = {
    {"pleural effusion present", {"60046008", "SCT", "Pleural effusion"}, 0.0123456789},
    {"pneumothorax present", {"36118008", "SCT", "Pneumothorax"}, 0.999999},
};
static const udcm_sr_image_ref ct_images[] = {
    {NULL, SERIES_CT, CT_STORAGE, SOP_CT, 0},
};
static const udcm_sr_image_ref mf_images[] = {
    {NULL, SERIES_CT, CT_STORAGE, SOP_CT, 0},
    {NULL, SERIES_MF, ENH_CT_STORAGE, SOP_MF, 2},
    {NULL, SERIES_MF, ENH_CT_STORAGE, SOP_MF, 5},
};

static udcm_sr_group groups[2];

#define CARD_WARNING \
    "label set \"chest-binary\" 2.1 is not validated for this model: its model card " \
    "(model-card.json) does not list it"


static void make_request(udcm_sr_request *req, const char *source, const char *model_hash)
{
    memset(groups, 0, sizeof groups);
    groups[0].label_set_name = "chest-softmax";
    groups[0].label_set_version = "1.0";
    groups[0].label_set_hash = "sha256:5b1f0c";
    groups[0].series_uid = SERIES_CT;
    groups[0].findings = softmax_findings;
    groups[0].n_findings = sizeof softmax_findings / sizeof softmax_findings[0];
    groups[0].images = ct_images;
    groups[0].n_images = 1;
    groups[1].label_set_name = "chest-binary";
    groups[1].label_set_version = "2.1";
    groups[1].label_set_hash = "sha256:77e0aa";
    groups[1].series_uid = SERIES_MF;
    groups[1].findings = binary_findings;
    groups[1].n_findings = sizeof binary_findings / sizeof binary_findings[0];
    groups[1].images = mf_images;
    groups[1].n_images = 3;
    /* A label set the model card does not list: its warning, in the group. */
    groups[1].comment = CARD_WARNING;

    memset(req, 0, sizeof *req);
    req->source_path = source;
    req->model_name = "UniMed-CLIP ViT-B/16";
    req->model_version = "1.0.0";
    req->model_hash = model_hash;
    req->groups = groups;
    req->n_groups = 2;
    req->complete = 0; /* PARTIAL: one series "failed" */
}

static const udcm_sr_read_finding *find_finding(const udcm_sr_read_group *g, const udcm_sr_code *code)
{
    for (size_t i = 0; i < g->n_findings; i++)
        if (strcmp(g->findings[i].concept_name.value, "121071") == 0 &&
            strcmp(g->findings[i].code.value, code->value) == 0 &&
            strcmp(g->findings[i].code.scheme, code->scheme) == 0)
            return &g->findings[i];
    return NULL;
}

/* Our reader gives back exactly what was written. */
static void check_round_trip(const udcm_sr_result *r, const udcm_sr_request *req, const char *sop, const char *what)
{
    CHECK(strcmp(r->sop_instance_uid, sop) == 0, "%s: SOP Instance UID %s != %s", what, r->sop_instance_uid, sop);
    CHECK(strcmp(r->sop_class_uid, "1.2.840.10008.5.1.4.1.1.88.33") == 0, "%s: SOP class %s", what,
          r->sop_class_uid);
    CHECK(strcmp(r->template_id, "1500") == 0, "%s: template '%s'", what, r->template_id);
    CHECK(strcmp(r->completion_flag, "PARTIAL") == 0, "%s: completion %s", what, r->completion_flag);
    CHECK(strcmp(r->verification_flag, "UNVERIFIED") == 0, "%s: verification %s", what, r->verification_flag);
    CHECK(strcmp(r->device_observer_name, req->model_name) == 0, "%s: observer name '%s'", what,
          r->device_observer_name);
    CHECK(strncmp(r->device_observer_uid, "2.25.", 5) == 0, "%s: observer uid '%s'", what, r->device_observer_uid);
    CHECK(strcmp(r->procedure.value, "363679005") == 0, "%s: procedure %s", what, r->procedure.value);
    /* library: CT image + 2 frames of the multi-frame image */
    CHECK(r->n_library == 3, "%s: %zu library entries", what, r->n_library);
    for (size_t i = 0; i < r->n_library; i++) {
        CHECK(strcmp(r->library[i].study_uid, "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322") == 0,
              "%s: library study '%s'", what, r->library[i].study_uid);
        if (strcmp(r->library[i].sop_instance_uid, SOP_MF) == 0)
            CHECK(r->library[i].frame == 2 || r->library[i].frame == 5, "%s: frame %u", what, r->library[i].frame);
    }
    CHECK(r->n_groups == req->n_groups, "%s: %zu groups", what, r->n_groups);
    for (size_t g = 0; g < r->n_groups && g < req->n_groups; g++) {
        const udcm_sr_read_group *rg = &r->groups[g];
        const udcm_sr_group *wg = &req->groups[g];
        CHECK(strcmp(rg->label_set_name, wg->label_set_name) == 0, "%s: group %zu name '%s'", what, g,
              rg->label_set_name);
        CHECK(strcmp(rg->label_set_version, wg->label_set_version) == 0, "%s: group %zu version", what, g);
        CHECK(strcmp(rg->label_set_hash, wg->label_set_hash) == 0, "%s: group %zu hash", what, g);
        CHECK(strcmp(rg->algorithm_name, req->model_name) == 0, "%s: algorithm name '%s'", what, rg->algorithm_name);
        CHECK(strcmp(rg->algorithm_version, req->model_version) == 0, "%s: algorithm version", what);
        CHECK(strncmp(rg->tracking_uid, "2.25.", 5) == 0, "%s: tracking uid '%s'", what, rg->tracking_uid);
        CHECK(rg->n_findings == wg->n_findings, "%s: group %zu: %zu findings", what, g, rg->n_findings);
        CHECK(rg->n_measurements == 0, "%s: group %zu: %zu stray measurements", what, g, rg->n_measurements);
        for (size_t i = 0; i < wg->n_findings; i++) {
            const udcm_sr_finding *wf = &wg->findings[i];
            const udcm_sr_read_finding *rf = find_finding(rg, &wf->code);
            CHECK(rf != NULL, "%s: group %zu: finding %s missing", what, g, wf->code.value);
            if (!rf) continue;
            CHECK(strcmp(rf->code.meaning, wf->code.meaning) == 0, "%s: meaning '%s'", what, rf->code.meaning);
            CHECK(rf->has_probability && fabs(rf->probability - wf->probability) < 1e-6,
                  "%s: %s probability %.9f != %.9f", what, wf->code.value, rf->probability, wf->probability);
        }
        /* The comment comes back in its group, and only there. */
        size_t want_comments = wg->comment && wg->comment[0] ? 1 : 0;
        CHECK(rg->n_comments == want_comments, "%s: group %zu: %zu comments, want %zu", what, g,
              rg->n_comments, want_comments);
        if (want_comments && rg->n_comments == 1)
            CHECK(strcmp(rg->comments[0], wg->comment) == 0, "%s: group %zu: comment '%s'", what, g,
                  rg->comments[0]);
        size_t want_images = g == 0 ? 1 : 3;
        CHECK(rg->n_images == want_images, "%s: group %zu: %zu images", what, g, rg->n_images);
    }
}

static int cmd_write(const char *outdir, const char *source, const char *xsd)
{
    udcm_sr_request req;
    char err[1024] = "", path_dcm[1024], path_xml[1024], path_json[1024];
    char sop1[65] = "", sop2[65] = "", sop3[65] = "", series1[65], series2[65], series3[65];
    snprintf(path_dcm, sizeof path_dcm, "%s/report.dcm", outdir);
    snprintf(path_xml, sizeof path_xml, "%s/report.xml", outdir);
    snprintf(path_json, sizeof path_json, "%s/report.json", outdir);

    /* known answer: Python's "2.25.%d" % uuid.uuid5(NS, name).int */
    {
        char u[65];
        const char *name = "unimed-sr-series\nstudy=1.2.3\nmodel=abc\n";
        udcm_sr_uid_from_name(name, strlen(name), u);
        CHECK(strcmp(u, "2.25.30543577325226133367714078504980040383") == 0, "uid_from_name: %s", u);
        udcm_sr_uid_from_name("", 0, u);
        CHECK(strcmp(u, "2.25.233050792172116073777231927312510736692") == 0, "uid_from_name(\"\"): %s", u);
    }

    make_request(&req, source, "sha256:0d9f3a77c1");
    udcm_sr_write_params to = udcm_sr_write_default_params();
    to.dcm_path = path_dcm;
    to.xml_path = path_xml;
    to.json_path = path_json;
    to.sop_instance_uid_out = sop1;
    int rc = udcm_sr_write(&req, &to, err, sizeof err);
    CHECK(rc == 0, "write: %s", err);
    if (rc != 0) return 1;
    printf("wrote %s (SOP Instance UID %s)\n", path_dcm, sop1);

    /* A model name longer than a Long String holds, with a multi-byte
     * character across the 64th byte: the report must stay valid
     * (check_sr.py runs dciodvfy on it and reads the attributes back). */
    {
        char path_long[1024];
        snprintf(path_long, sizeof path_long, "%s/report_long_name.dcm", outdir);
        udcm_sr_request lr = req;
        /* 62 ASCII bytes, then an em dash (3 bytes) over bytes 63-65 */
        lr.model_name = "UniMed-CLIP demonstration model trained on MedMNIST at 224 px \xE2\x80\x94 not for clinical use";
        char sopl[65] = "";
        udcm_sr_write_params tl = udcm_sr_write_default_params();
        tl.dcm_path = path_long;
        tl.sop_instance_uid_out = sopl;
        CHECK(udcm_sr_write(&lr, &tl, err, sizeof err) == 0,
              "write with a long model name: %s", err);
    }

    /* determinism: same request -> same UIDs (buffer output this time) */
    uint8_t *buf = NULL;
    size_t len = 0;
    udcm_sr_write_params tb = udcm_sr_write_default_params();
    tb.dcm_buf = &buf;
    tb.dcm_len = &len;
    tb.sop_instance_uid_out = sop2;
    rc = udcm_sr_write(&req, &tb, err, sizeof err);
    CHECK(rc == 0 && buf && len > 132, "write to buffer: %s", err);
    CHECK(strcmp(sop1, sop2) == 0, "SOP Instance UID not deterministic: %s vs %s", sop1, sop2);
    CHECK(strlen(sop1) <= 64 && strncmp(sop1, "2.25.", 5) == 0, "bad UID form %s", sop1);
    CHECK(buf && memcmp(buf + 128, "DICM", 4) == 0, "buffer is not Part 10");
    /* the source as a buffer instead of a path: same object */
    {
        FILE *f = fopen(source, "rb");
        CHECK(f != NULL, "cannot open %s", source);
        if (f) {
            static uint8_t src[1 << 20];
            size_t n = fread(src, 1, sizeof src, f);
            fclose(f);
            udcm_sr_request rb = req;
            rb.source_path = NULL;
            rb.source_buffer = src;
            rb.source_len = n;
            char sopb[65] = "";
            udcm_sr_write_params ts = udcm_sr_write_default_params();
            ts.sop_instance_uid_out = sopb;
            CHECK(udcm_sr_write(&rb, &ts, err, sizeof err) == 0, "source buffer: %s",
                  err);
            CHECK(strcmp(sopb, sop1) == 0, "source buffer gives another UID: %s", sopb);
        }
    }
    const char *study = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322";
    char tracking[2 * 65];
    CHECK(udcm_sr_derive_uids(&req, study, series1, sop3, tracking, err, sizeof err) == 0, "derive: %s", err);
    CHECK(strcmp(sop3, sop1) == 0, "derive_uids disagrees with write: %s vs %s", sop3, sop1);
    CHECK(strcmp(tracking, tracking + 65) != 0, "tracking UIDs of two groups equal");

    /* a different model hash -> different UIDs */
    udcm_sr_request other;
    make_request(&other, source, "sha256:0d9f3a77c2");
    CHECK(udcm_sr_derive_uids(&other, study, series2, sop2, NULL, err, sizeof err) == 0, "derive: %s", err);
    CHECK(strcmp(series1, series2) != 0, "series UID ignores model hash");
    CHECK(strcmp(sop1, sop2) != 0, "SOP UID ignores model hash");
    /* a different label-set hash -> same series, different instance */
    make_request(&other, source, "sha256:0d9f3a77c1");
    groups[1].label_set_hash = "sha256:77e0ab";
    CHECK(udcm_sr_derive_uids(&other, study, series3, sop3, NULL, err, sizeof err) == 0, "derive: %s", err);
    CHECK(strcmp(series1, series3) == 0, "series UID depends on label sets");
    CHECK(strcmp(sop1, sop3) != 0, "SOP UID ignores label-set hash");
    /* the model card's comment is content: dropping it -> same series, new instance */
    make_request(&other, source, "sha256:0d9f3a77c1");
    groups[1].comment = NULL;
    CHECK(udcm_sr_derive_uids(&other, study, series3, sop3, NULL, err, sizeof err) == 0, "derive: %s", err);
    CHECK(strcmp(series1, series3) == 0 && strcmp(sop1, sop3) != 0, "SOP UID ignores the group comment");
    printf("UIDs: series %s, instance %s; other model: %s / %s\n", series1, sop1, series2, sop2);
    make_request(&req, source, "sha256:0d9f3a77c1");

    /* our reader: file and buffer */
    udcm_sr_result *r = udcm_sr_read_file(path_dcm, err, sizeof err);
    CHECK(r != NULL, "read file: %s", err);
    if (r) {
        check_round_trip(r, &req, sop1, "file");
        CHECK(strcmp(r->series_uid, series1) == 0, "series UID %s != %s", r->series_uid, series1);
        char *js = udcm_sr_result_json(r);
        CHECK(js && strstr(js, "\"233604007\"") && strstr(js, "chest-binary"), "result JSON");
        CHECK(js && strstr(js, "\"comments\"") && strstr(js, "is not validated for this model"),
              "result JSON: the group's comment");
        free(js);
        udcm_sr_result_free(r);
    }
    if (buf) {
        r = udcm_sr_read_memory(buf, len, "report buffer", err, sizeof err);
        CHECK(r != NULL, "read buffer: %s", err);
        if (r) {
            check_round_trip(r, &req, sop1, "buffer");
            udcm_sr_result_free(r);
        }
        free(buf);
    }

    /* XML against DCMTK's schema */
    if (access(xsd, R_OK) == 0) {
        rc = udcm_sr_validate_xml(path_xml, xsd, err, sizeof err);
        CHECK(rc == 0, "XML: %s", err);
        if (rc == 0) printf("%s validates against %s\n", path_xml, xsd);
        /* and a broken file does not */
        char bad_xml[1024];
        snprintf(bad_xml, sizeof bad_xml, "%s/broken.xml", outdir);
        FILE *f = fopen(bad_xml, "w");
        if (f) {
            fputs("<?xml version=\"1.0\"?>\n<report xmlns=\"http://dicom.offis.de/dcmsr\"><bogus/></report>\n", f);
            fclose(f);
            CHECK(udcm_sr_validate_xml(bad_xml, xsd, err, sizeof err) != 0, "broken XML validated");
            printf("broken XML rejected: %.160s\n", err);
        }
    } else {
        printf("SKIP XML Schema check: %s not found\n", xsd);
    }
    return failures ? 1 : 0;
}

static void expect_error(const udcm_sr_request *req, const char *needle, const char *what)
{
    char err[1024] = "";
    char sop[65] = "";
    udcm_sr_write_params to = udcm_sr_write_default_params();
    to.dcm_path = "/nonexistent-dir/x.dcm";
    to.sop_instance_uid_out = sop;
    int rc = udcm_sr_write(req, &to, err, sizeof err);
    CHECK(rc != 0, "%s: accepted", what);
    CHECK(strstr(err, needle) != NULL, "%s: error '%s' does not name '%s'", what, err, needle);
    printf("%s -> %s\n", what, err);
}

static int cmd_bad(const char *source)
{
    udcm_sr_request req;
    udcm_sr_finding f[1];

    make_request(&req, "/nonexistent/source.dcm", "h");
    expect_error(&req, "/nonexistent/source.dcm", "missing source file");

    make_request(&req, source, "h");
    memcpy(f, softmax_findings, sizeof f);
    f[0].code.meaning = "";
    groups[0].findings = f;
    groups[0].n_findings = 1;
    expect_error(&req, "request.groups[0].findings[0].code.meaning", "empty code meaning");

    make_request(&req, source, "h");
    f[0] = softmax_findings[0];
    f[0].probability = 1.5;
    groups[1].findings = f;
    groups[1].n_findings = 1;
    expect_error(&req, "request.groups[1].findings[0].probability", "probability out of range");

    make_request(&req, source, "");
    expect_error(&req, "request.model_hash", "empty model hash");

    make_request(&req, source, "h");
    req.n_groups = 0;
    expect_error(&req, "request.groups", "no groups");

    make_request(&req, source, "h");
    udcm_sr_image_ref im = ct_images[0];
    im.sop_instance_uid = "1.2.x";
    groups[0].images = &im;
    expect_error(&req, "request.groups[0].images[0].sop_instance_uid", "bad UID");

    make_request(&req, source, "h");
    expect_error(&req, "/nonexistent-dir/x.dcm", "unwritable output");

    make_request(&req, NULL, "h");
    expect_error(&req, "request.source_path", "no source");

    char err[256] = "";
    CHECK(udcm_sr_read_file("/nonexistent/sr.dcm", err, sizeof err) == NULL && strstr(err, "/nonexistent/sr.dcm"),
          "read of missing file: '%s'", err);
    printf("read missing file -> %s\n", err);
    CHECK(udcm_sr_read_file(source, err, sizeof err) == NULL && strstr(err, source), "read of a CT image: '%s'",
          err);
    printf("read CT image -> %s\n", err);
    CHECK(udcm_sr_read_memory("junk", 4, "junk", err, sizeof err) == NULL, "read of junk");
    printf("read junk -> %s\n", err);
    return failures ? 1 : 0;
}

static int cmd_read(const char *path, int min_groups)
{
    if (access(path, R_OK) != 0) {
        printf("SKIP: %s not present\n", path);
        return 77;
    }
    char err[1024] = "";
    udcm_sr_result *r = udcm_sr_read_file(path, err, sizeof err);
    if (!r) {
        fprintf(stderr, "FAIL: %s\n", err);
        return 1;
    }
    printf("%s: SOP class %s, template '%s', title (%s, %s, \"%s\"), %s/%s\n", path, r->sop_class_uid,
           r->template_id, r->document_title.value, r->document_title.scheme, r->document_title.meaning,
           r->completion_flag, r->verification_flag);
    printf("  observer device '%s' uid %s; procedure (%s, %s, \"%s\"); %zu library images\n",
           r->device_observer_name, r->device_observer_uid, r->procedure.value, r->procedure.scheme,
           r->procedure.meaning, r->n_library);
    size_t nf = 0, nm = 0;
    for (size_t g = 0; g < r->n_groups; g++) {
        const udcm_sr_read_group *G = &r->groups[g];
        printf("  group %zu: tracking '%s' %s; algorithm '%s' '%s'; %zu findings, %zu measurements, %zu images\n", g,
               G->tracking_id, G->tracking_uid, G->algorithm_name, G->algorithm_version, G->n_findings,
               G->n_measurements, G->n_images);
        for (size_t i = 0; i < G->n_findings; i++) {
            const udcm_sr_read_finding *f = &G->findings[i];
            printf("    %s = (%s, %s, \"%s\")", f->concept_name.meaning, f->code.value, f->code.scheme, f->code.meaning);
            if (f->has_probability) printf(" probability %.9g", f->probability);
            printf("\n");
        }
        for (size_t i = 0; i < G->n_measurements; i++) {
            const udcm_sr_read_measurement *m = &G->measurements[i];
            printf("    %s = %s [%s] (%.9g)\n", m->concept_name.meaning, m->value_text, m->unit.value, m->value);
        }
        nf += G->n_findings;
        nm += G->n_measurements;
    }
    int ok = (int)r->n_groups >= min_groups && (min_groups == 0 || nf + nm > 0);
    printf("%zu groups, %zu findings, %zu measurements\n", r->n_groups, nf, nm);
    udcm_sr_result_free(r);
    if (!ok) fprintf(stderr, "FAIL: expected at least %d groups with content\n", min_groups);
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc >= 5 && strcmp(argv[1], "write") == 0) return cmd_write(argv[2], argv[3], argv[4]);
    if (argc >= 3 && strcmp(argv[1], "bad") == 0) return cmd_bad(argv[2]);
    if (argc >= 3 && strcmp(argv[1], "read") == 0) return cmd_read(argv[2], argc >= 4 ? atoi(argv[3]) : 0);
    fprintf(stderr, "usage: test_sr write OUTDIR SOURCE XSD | bad SOURCE | read FILE [MIN_GROUPS]\n");
    return 2;
}
