#!/usr/bin/python3
"""plugin_site: what a site sees (issue "the SR, REST and the panel never
disagree"), on a real Orthanc:
 - SR versions: a study that gains an instance is re-analysed when stable
   again and gets a new SR (new UID, Instance Number 2, Predecessor
   Documents Sequence naming the first, which is removed); a study that
   gains an undecodable series gets a PARTIAL SR, and a COMPLETE one again
   by itself once that series is deleted; dciodvfy finds no error;
   Software Versions is the plugin's version;
 - reasons travel: the decoder's message reaches REST and the log;
 - GET studies (filters, paging), unknown query arguments -> 400 with the
   nearest known one; every answer matches docs/openapi.json;
 - configuration: a misspelt key disables the plugin, naming the right key
   (status and panel say so); a relative ModelDirectory resolves against the
   configuration folder given without a trailing slash (Debian's form);
 - the model card: that model directory (a copy of the fixture's, files
   linked) carries a model-card.json listing only the "ct" label set; the
   "modality" set, applied too, is flagged in status and label-sets, its
   scores and the study's label_set_warnings carry the warning (GET
   studies/{id}, findings, classify) and the SR has it as the TEXT Comment of
   the modality measurement group, not of the ct one;
 - POST studies/analyze-all analyses a study stored while the plugin was
   disabled."""

import io
import json
import os
import subprocess
import sys
import tempfile
import time

import pydicom

from common import (REPO, Check, Orthanc, env_paths, make_instance, make_study, sr_instances,
                    study_result, upload, wait_for, orthanc_session)
import numpy as np
from pydicom.uid import generate_uid

OPENAPI = os.path.join(REPO, "docs", "openapi.json")


# ---- a small JSON-schema check of the subset docs/openapi.json uses ----
def resolve(spec, sch):
    while "$ref" in sch:
        path = sch["$ref"].lstrip("#/").split("/")
        sch = spec
        for p in path:
            sch = sch[p]
    return sch


def conforms(spec, sch, v, where="$"):
    """A list of mismatches of value v against schema sch."""
    sch = resolve(spec, sch)
    errs = []
    if sch.get("nullable") and v is None:
        return errs
    t = sch.get("type")
    types = {"object": dict, "array": list, "string": str, "boolean": bool, "integer": int,
             "number": (int, float)}
    if t:
        ok = isinstance(v, types[t]) and not (t in ("integer", "number") and isinstance(v, bool))
        if t == "integer" and isinstance(v, float) and v.is_integer():
            ok = True
        if not ok:
            return ["%s: %r is not %s" % (where, v, t)]
    if "enum" in sch and v not in sch["enum"]:
        errs.append("%s: %r not in %s" % (where, v, sch["enum"]))
    if isinstance(v, dict):
        for k in sch.get("required", []):
            if k not in v:
                errs.append("%s: missing %s" % (where, k))
        props = sch.get("properties", {})
        for k, x in v.items():
            if k in props:
                errs += conforms(spec, props[k], x, where + "." + k)
            elif sch.get("additionalProperties") is False:
                errs.append("%s: undocumented field %s" % (where, k))
    if isinstance(v, list) and "items" in sch:
        for i, x in enumerate(v[:50]):
            errs += conforms(spec, sch["items"], x, "%s[%d]" % (where, i))
    return errs


def answer_schema(spec, path, method, status):
    op = spec["paths"][path][method]
    r = op["responses"].get(str(status))
    if not r:
        return None
    return r["content"]["application/json"]["schema"]


def dciodvfy_errors(data):
    with tempfile.NamedTemporaryFile(suffix=".dcm") as f:
        f.write(data)
        f.flush()
        p = subprocess.run(["dciodvfy", f.name], capture_output=True, text=True)
    return [l for l in (p.stdout + p.stderr).splitlines() if l.startswith("Error")]


def sr_of(o, sid):
    srs = sr_instances(o, sid)
    if len(srs) != 1:
        return None, srs
    st, data, _ = o.request("GET", "/instances/%s/file" % srs[0])
    return pydicom.dcmread(io.BytesIO(data)), data


def main():
    plugin, model = env_paths()
    ok = Check("plugin_site")
    with open(OPENAPI) as f:
        spec = json.load(f)
    checked = []

    def check_api(path, method, status, ans):
        sch = answer_schema(spec, path, method, status)
        errs = ["no answer %d documented" % status] if sch is None else conforms(spec, sch, ans)
        checked.append(path)
        ok(not errs, "%s %s -> %d matches docs/openapi.json %s" % (method.upper(), path, status, errs[:3]))

    # ---- 1. configuration: a misspelt key, and the plugin disabled ----
    o = Orthanc(plugin, model, unimed={"LabelSet": ["ct.json"], "Enable": True})
    with orthanc_session(o, ok):
        st, s = o.get("/unimed/status")
        ok(st == 200 and s["enabled"] is False and "LabelSet" in s.get("reason", "")
           and "did you mean \"LabelSets\"" in s.get("reason", ""),
           "a misspelt key disables the plugin and names the right one: %s" % s.get("reason"))
        check_api("/status", "get", 200, s)
        st, a = o.get("/unimed/studies")
        ok(st == 503 and "disabled" in a.get("error", ""), "other routes: 503 saying disabled")
        _, files = make_study("CR", 1, 1, seed=41, patient_id="PLATE")
        late = upload(o, files)
        shot(o, late, "disabled", ok)

    # ---- 2. relative ModelDirectory, folder argument without a slash ----
    # The model directory: the fixture's files linked, and a model card that
    # lists the "ct" label set only (the fixture itself has no card).
    o = Orthanc(plugin, None, unimed={"Workers": 1})
    model_copy = os.path.join(o.config_dir, "model")
    os.makedirs(model_copy)
    for name in os.listdir(model):
        if os.path.isfile(os.path.join(model, name)):
            os.symlink(os.path.abspath(os.path.join(model, name)), os.path.join(model_copy, name))
    labelsets = os.path.join(REPO, "labelsets")
    with open(os.path.join(labelsets, "ct.json")) as f:
        ct_version = json.load(f)["version"]
    with open(os.path.join(model_copy, "model-card.json"), "w") as f:
        json.dump({"format": "unimed-model-card/1", "name": "ref_small", "version": "test",
                   "intended_use": "tests only", "clinical_use": False,
                   "label_sets": [{"name": "ct", "version": ct_version, "question": "CT findings"}]}, f)
    cfg = os.path.join(o.config_dir, "unimed.json")
    with open(cfg) as f:
        c = json.load(f)
    c["UniMed"]["ModelDirectory"] = "model"
    c["UniMed"]["LabelSetDirectory"] = labelsets
    with open(cfg, "w") as f:
        json.dump(c, f)
    with orthanc_session(o, ok):
        st, s = o.get("/unimed/status")
        ok(st == 200 and s["enabled"], "\"ModelDirectory\": \"model\" resolves against %s (given without a "
           "trailing slash): %s" % (o.config_dir, s.get("reason")))
        check_api("/status", "get", 200, s)

        # ---- 3. SR versions ----
        rng = np.random.default_rng(7)
        study_uid, series_uid = generate_uid(), generate_uid()
        first = [make_instance(study_uid, series_uid, "CT", i + 1, rng) for i in range(2)]
        sid = upload(o, first)
        st, r1 = study_result(o, sid)
        check_api("/studies/{id}", "get", st, r1)
        ds1, data1 = sr_of(o, sid)
        ok(ds1 is not None and int(ds1.InstanceNumber) == 1 and "PredecessorDocumentsSequence" not in ds1
           and ds1.CompletionFlag == "COMPLETE" and ds1.SoftwareVersions == s["version"],
           "first SR: Instance Number 1, COMPLETE, no predecessor, Software Versions %s"
           % (ds1.SoftwareVersions if ds1 else None))
        check_model_card(o, s, r1, ds1, ct_version, ok, check_api)
        shot(o, sid, "normal", ok)
        upload(o, [make_instance(study_uid, series_uid, "CT", 3, rng)])
        st, r2 = wait_for(lambda: (lambda x: x if x[0] == 200 and x[1].get("sr") and
                                   x[1]["sr"]["sop_instance_uid"] != r1["sr"]["sop_instance_uid"] else None)(
            o.get("/unimed/studies/" + sid)), 120, what="re-analysis after a new instance")
        ds2, data2 = wait_for(lambda: (lambda x: x if x[0] is not None else None)(sr_of(o, sid)), 30,
                              what="one SR in the study")
        pred = ds2.get("PredecessorDocumentsSequence")
        ok(ds2.SOPInstanceUID == r2["sr"]["sop_instance_uid"] and int(ds2.InstanceNumber) == 2 and pred
           and pred[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
           == ds1.SOPInstanceUID,
           "a new instance: new SR, Instance Number 2, predecessor = the first SR, the first removed")
        errs = dciodvfy_errors(data2)
        ok(not errs, "the second version passes dciodvfy %s" % errs[:3])
        # an undecodable series joins the study: PARTIAL, reason in REST
        bad_series = generate_uid()
        st, stored = o.post("/instances", make_instance(study_uid, bad_series, "CT", 1, rng, series_number=2,
                                                        broken=True), headers={"Content-Type": "application/dicom"})
        bad_id = stored["ID"]
        st, r3 = wait_for(lambda: (lambda x: x if x[0] == 200 and x[1].get("sr") and
                                   x[1]["sr"]["sop_instance_uid"] != r2["sr"]["sop_instance_uid"] else None)(
            o.get("/unimed/studies/" + sid)), 120, what="re-analysis after a broken series")
        ds3, data3 = wait_for(lambda: (lambda x: x if x[0] is not None else None)(sr_of(o, sid)), 30,
                              what="one SR in the study")
        ok(ds3.CompletionFlag == "PARTIAL" and int(ds3.InstanceNumber) == 3 and r3["complete"] is False,
           "an undecodable series: PARTIAL SR, Instance Number 3, complete=false")
        fs = [x for x in r3["failed_series"] if x["series_instance_uid"] == bad_series]
        ok(fs and fs[0]["error"], "REST failed_series names the series and the reason: %s" % fs)
        check_api("/studies/{id}", "get", 200, r3)
        shot(o, sid, "failed-series", ok, report=True)
        # the undecodable series is removed again: re-analysed once removals settle
        st = o.request("DELETE", "/instances/%s" % bad_id)[0]
        ok(st == 200, "the undecodable instance deleted")
        st, r4 = wait_for(lambda: (lambda x: x if x[0] == 200 and x[1].get("sr") and
                                   x[1]["sr"]["sop_instance_uid"] != r3["sr"]["sop_instance_uid"] else None)(
            o.get("/unimed/studies/" + sid)), 120, what="re-analysis after a removal")
        ds4, _ = wait_for(lambda: (lambda x: x if x[0] is not None else None)(sr_of(o, sid)), 30,
                          what="one SR in the study")
        ok(ds4.CompletionFlag == "COMPLETE" and int(ds4.InstanceNumber) == 4 and r4["complete"] is True
           and not r4["failed_series"] and ds4.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
           .ReferencedSOPSequence[0].ReferencedSOPInstanceUID == ds3.SOPInstanceUID,
           "an instance removed: re-analysed by itself, COMPLETE again, Instance Number 4, predecessor the third")

        # ---- 4. reasons travel: a study nothing of which can be read ----
        _, bad = make_study("CT", 1, 2, seed=43, broken=True, patient_id="PBAD")
        bid = upload(o, bad)
        st, rb = study_result(o, bid)
        ok(st == 200 and rb["state"] == "failed" and "series" in rb["error"] and "see series" not in rb["error"]
           and rb["failed_series"] and rb["failed_series"][0]["error"] in rb["error"],
           "failed study: the decoder's message in error and failed_series: %s" % rb.get("error"))
        check_api("/studies/{id}", "get", 200, rb)
        log = open(o.log_path, errors="replace").read()
        ok(rb["failed_series"][0]["error"][:60] in log, "the reason is in Orthanc's log")

        # ---- 5. listing, paging, one schema, unknown arguments ----
        st, ls = o.get("/unimed/studies")
        check_api("/studies", "get", st, ls)
        ok(st == 200 and ls["total"] == 2 and {x["study_id"] for x in ls["studies"]} == {sid, bid},
           "GET studies lists both studies (total %s)" % ls.get("total"))
        st, lf = o.get("/unimed/studies?state=failed")
        ok(st == 200 and [x["study_id"] for x in lf["studies"]] == [bid], "?state=failed: the failed one")
        st, lp = o.get("/unimed/studies?limit=1")
        st2, lp2 = o.get("/unimed/studies?limit=1&since=%s" % lp.get("next_since"))
        ok(st == 200 and lp["total"] == 2 and len(lp["studies"]) == 1 and lp["next_since"] == 1
           and st2 == 200 and lp2["next_since"] is None
           and lp2["studies"][0]["study_id"] != lp["studies"][0]["study_id"], "paging with limit/since")
        st, lm = o.get("/unimed/studies?modality=MR")
        ok(st == 200 and lm["total"] == 0, "?modality=MR: none")
        st, ll = o.get("/unimed/studies?label_set=ct&state=done")
        ok(st == 200 and [x["study_id"] for x in ll["studies"]] == [sid], "?label_set=ct&state=done")
        st, la = o.get("/unimed/studies?analysed_since=2999-01-01")
        ok(st == 200 and la["total"] == 0, "?analysed_since in the future: none")
        for q, near in (("/unimed/studies?stat=done", "state"), ("/unimed/search?text=x&limt=2", "limit"),
                        ("/unimed/findings?label=x&min-probability=0.1", "min_probability"),
                        ("/unimed/status?verbose=1", None)):
            st, e = o.get(q)
            ok(st == 400 and (near is None or '"%s"' % near in e.get("error", "")),
               "%s: 400 %s" % (q, e.get("error")))
            check_api("/status", "get", 400, e)
        best = max(r3["scores"], key=lambda x: x["probability"])
        st, fa = o.get("/unimed/findings?label=%s&min_probability=0&limit=1" % best["label"].replace(" ", "%20"))
        check_api("/findings", "get", st, fa)
        ok(st == 200 and fa["total"] >= 1 and fa["studies"][0]["study_id"] == sid
           and fa["studies"][0]["study_instance_uid"] == study_uid, "findings: IDs and UIDs named for what they are")
        st, se = o.get("/unimed/search?text=chest&limit=1")
        check_api("/search", "get", st, se)
        st, lsets = o.get("/unimed/label-sets?limit=2")
        check_api("/label-sets", "get", st, lsets)
        ok(st == 200 and len(lsets["label_sets"]) == 2 and lsets["total"] == len(s["label_sets"]),
           "label-sets paged")
        st, cl = o.post("/unimed/classify", first[0], headers={"Content-Type": "application/dicom"})
        check_api("/classify", "post", st, cl)
        ok(st == 200 and isinstance(cl["model"], dict) and cl["model"] == r3["model"]
           and cl["label_sets"] == r3["label_sets"], "classify: model and label sets as on every route")
        ok(st == 200 and [w["label_set"] for w in cl["label_set_warnings"]] == ["modality"]
           and {x.get("label_set_warning") is not None for x in cl["scores"] if x["label_set"] == "modality"}
           == {True}, "classify: label_set_warnings and the modality scores' warning")
        st, html, hdr = o.request("GET", "/unimed/studies/%s/report.html" % sid)
        text = html.decode("utf-8", "replace") if isinstance(html, bytes) else str(html)
        ok(st == 200 and "unimed-back-link" in text and "Probability" in text,
           "report.html: DCMTK's rendering of the SR with a way back")
        st, an = o.post("/unimed/studies/%s/analyze" % sid)
        check_api("/studies/{id}/analyze", "post", st, an)
        st, pend = o.get("/unimed/studies/" + sid)
        check_api("/studies/{id}", "get", st, pend)  # 202 while queued or running, else 200
        st, again = study_result(o, sid)
        ok(st == 200 and again["sr"] == r4["sr"], "re-analysis of unchanged content: the same SR")

    # ---- 6. analyze-all: studies stored while the plugin was disabled ----
    o = Orthanc(plugin, model, unimed={"Enable": False})
    with orthanc_session(o, ok):
        _, files = make_study("CR", 1, 1, seed=44)
        old = upload(o, files)
        o.stop()
        o.write_config(model, {}, {})
        o.start()
        st, _ = o.get("/unimed/studies/" + old)
        ok(st == 404, "a study stored while disabled is not analysed by itself")
        st, a = o.post("/unimed/studies/analyze-all")
        check_api("/studies/analyze-all", "post", st, a)
        st, r = study_result(o, old)
        ok(st == 200 and r["state"] == "done", "POST studies/analyze-all analysed it")
    print("routes checked against docs/openapi.json: %s" % sorted(set(checked)))
    return ok.done()


def sr_group_comments(ds):
    """{label_set_name: [TEXT Comment items directly in its measurement group]}."""
    def code(it):
        c = it.get("ConceptNameCodeSequence")
        return (c[0].CodeValue, c[0].CodingSchemeDesignator) if c else None

    out = {}

    def walk(items):
        for it in items:
            if code(it) == ("125007", "DCM"):
                name, texts = None, []
                for c in it.get("ContentSequence", []):
                    if code(c) == ("111002", "DCM") and str(c.TextValue).startswith("label_set_name="):
                        name = str(c.TextValue).split("=", 1)[1]
                    elif code(c) == ("121106", "DCM") and c.ValueType == "TEXT" and c.RelationshipType == "CONTAINS":
                        texts.append(str(c.TextValue))
                out.setdefault(name, []).extend(texts)
            elif "ContentSequence" in it:
                walk(it.ContentSequence)

    walk(ds.ContentSequence)
    return out


def check_model_card(o, status, r, ds, ct_version, ok, check_api):
    """The card lists "ct" only: "modality" is flagged on every route and in the SR."""
    card = status.get("model_card") or {}
    ok([(x["name"], x["version"]) for x in card.get("label_sets", [])] == [("ct", ct_version)]
       and card.get("file", "").endswith("/model/model-card.json") and card.get("matches_model") is True,
       "status: model_card names the card and its one validated set: %s" % card)
    flags = {x["name"]: (x.get("validated"), x.get("warning")) for x in status.get("label_sets", [])}
    warning = (flags.get("modality") or (None, None))[1]
    ok(flags.get("ct") == (True, None) and flags.get("modality", (None,))[0] is False and warning
       and '"modality"' in warning and "not validated" in warning
       and all(v[0] is False and v[1] for k, v in flags.items() if k != "ct"),
       "status: ct validated, every other set validated=false with its warning: %s" % warning)
    st, ls = o.get("/unimed/label-sets")
    lflags = {x["name"]: (x.get("validated"), x.get("warning")) for x in ls.get("label_sets", [])}
    ok(st == 200 and lflags == flags, "label-sets: the same validated flags and warnings")
    lw = r.get("label_set_warnings") or []
    ok([(w["label_set"], w["warning"]) for w in lw] == [("modality", warning)],
       "GET studies/{id}: label_set_warnings names modality (applied, unlisted) and not ct: %s" % lw)
    by_set = {}
    for x in r.get("scores", []):
        by_set.setdefault(x["label_set"], set()).add(x.get("label_set_warning"))
    ok(by_set.get("modality") == {warning} and by_set.get("ct") == {None},
       "GET studies/{id}: modality scores carry the warning, ct scores none")
    comments = sr_group_comments(ds) if ds is not None else {}
    ok(comments == {"ct": [], "modality": [warning]},
       "SR: the warning is the TEXT Comment of the modality group, none in the ct group: %s" % comments)
    m = [x for x in r.get("scores", []) if x["label_set"] == "modality"]
    if m:
        st, fa = o.get("/unimed/findings?label=%s&min_probability=0&label_set=modality"
                       % m[0]["label"].replace(" ", "%20"))
        check_api("/findings", "get", st, fa)
        hit = [x for x in fa.get("studies", []) if x["study_id"] == r["study_id"]]
        ok(st == 200 and hit and hit[0]["score"].get("label_set_warning") == warning,
           "findings: the modality score of the study carries the warning")
    log = open(o.log_path, errors="replace").read()
    ok(warning and warning in log, "the warning is in Orthanc's log at start")


SHOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "explorer_shot.mjs")


def shot(o, sid, name, ok, report=False):
    """A screenshot of the panel into /work/screens (when a browser is there)."""
    import shutil
    node, chromium = shutil.which("node"), os.environ.get("UNIMED_CHROMIUM", "/usr/bin/chromium")
    outdir = os.environ.get("UNIMED_SCREENS")
    if not (outdir and node and os.path.exists(chromium)):
        return
    os.makedirs(outdir, exist_ok=True)
    subprocess.run([node, SHOT, o.url, sid, os.path.join(outdir, name + ".png"), "report" if report else "",
                    chromium], capture_output=True, text=True, timeout=120,
                   cwd=os.path.dirname(SHOT))


if __name__ == "__main__":
    sys.exit(main())
