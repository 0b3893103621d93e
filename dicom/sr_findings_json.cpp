// UniMed for Orthanc — SR writer: the findings as JSON (docs/REPORTS.md, "JSON").

#include "sr_internal.h"

#include <cJSON.h>

#include <cstdlib>

namespace udcm_sr {

namespace {

cJSON *code_json(const char *v, const char *s, const char *m)
{
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "value", v);
    cJSON_AddStringToObject(c, "scheme", s);
    cJSON_AddStringToObject(c, "meaning", m);
    return c;
}

}  // namespace

std::string findings_json(const udcm_sr_request *req, const std::string &study, const Uids &uids)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "study", study.c_str());
    cJSON_AddStringToObject(root, "sr_sop_instance", uids.sop.c_str());
    cJSON_AddStringToObject(root, "sr_series", uids.series.c_str());
    cJSON_AddStringToObject(root, "completion", req->complete ? "COMPLETE" : "PARTIAL");
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "name", req->model_name);
    cJSON_AddStringToObject(model, "version", req->model_version);
    cJSON_AddStringToObject(model, "hash", req->model_hash);
    cJSON *sets = cJSON_AddArrayToObject(root, "label_sets");
    for (size_t g = 0; g < req->n_groups; g++) {
        const udcm_sr_group &G = req->groups[g];
        cJSON *s = cJSON_CreateObject();
        cJSON_AddStringToObject(s, "name", G.label_set_name);
        cJSON_AddStringToObject(s, "version", G.label_set_version);
        cJSON_AddStringToObject(s, "hash", G.label_set_hash);
        if (!empty(G.series_uid)) cJSON_AddStringToObject(s, "series", G.series_uid);
        if (!empty(G.comment)) {
            cJSON *cs = cJSON_AddArrayToObject(s, "comments");
            cJSON_AddItemToArray(cs, cJSON_CreateString(G.comment));
        }
        cJSON *fs = cJSON_AddArrayToObject(s, "findings");
        for (size_t i = 0; i < G.n_findings; i++) {
            const udcm_sr_finding &F = G.findings[i];
            cJSON *f = cJSON_CreateObject();
            cJSON_AddStringToObject(f, "label", empty(F.label) ? F.code.meaning : F.label);
            cJSON_AddItemToObject(f, "code", code_json(F.code.value, F.code.scheme, F.code.meaning));
            cJSON_AddNumberToObject(f, "probability", F.probability);
            cJSON_AddItemToArray(fs, f);
        }
        cJSON_AddItemToArray(sets, s);
    }
    cJSON *imgs = cJSON_AddArrayToObject(root, "images");
    for (auto &e : all_images(req, study)) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "study", e.first.study.c_str());
        cJSON_AddStringToObject(o, "series", e.first.series.c_str());
        cJSON_AddStringToObject(o, "sop_class", e.first.sop_class.c_str());
        cJSON_AddStringToObject(o, "sop_instance", e.first.sop.c_str());
        cJSON *fr = cJSON_AddArrayToObject(o, "frames");
        for (uint32_t f : e.second) cJSON_AddItemToArray(fr, cJSON_CreateNumber(f));
        cJSON_AddItemToArray(imgs, o);
    }
    char *txt = cJSON_Print(root);
    cJSON_Delete(root);
    if (!txt) fail("JSON: out of memory");
    std::string s = txt;
    free(txt);
    return s + "\n";
}

}  // namespace udcm_sr
