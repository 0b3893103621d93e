#!/usr/bin/python3
"""plugin_upload: studies sent over REST and over DICOM C-STORE (storescu)
are analysed once; the SR lands in the study, passes dciodvfy, and the REST
routes say what the SR says. Also: classify, search, findings, label-sets,
errors, re-analysis without a second SR."""

import io
import math
import subprocess
import sys
import tempfile
import time

import pydicom

from common import (Check, Orthanc, env_paths, make_study, sr_instances, store_study_over_dicom,
                    study_result, upload, wait_for, orthanc_session)


def code_of(item):
    if "ConceptNameCodeSequence" not in item:
        return (None, None)  # e.g. IMAGE references
    c = item.ConceptNameCodeSequence[0]
    return (c.CodeValue, c.CodingSchemeDesignator)


def sr_probabilities(ds):
    """[(code value, scheme, probability)] of every finding in a TID 1500 SR."""
    out = []

    def walk(items):
        for it in items:
            if code_of(it) == ("121071", "DCM") and "ConceptCodeSequence" in it:
                c = it.ConceptCodeSequence[0]
                for n in it.get("ContentSequence", []):
                    if code_of(n) == ("122157", "DCM"):
                        mv = n.MeasuredValueSequence[0]
                        v = mv.get("FloatingPointValue", None)
                        out.append((c.CodeValue, c.CodingSchemeDesignator,
                                    float(v if v is not None else mv.NumericValue)))
            if "ContentSequence" in it:
                walk(it.ContentSequence)

    walk(ds.ContentSequence)
    return out


def score_probabilities(scores):
    """The probabilities of REST's flat scores list."""
    return [float(x["probability"]) for x in scores]


def same_multiset(a, b, tol=1e-5):
    a, b = sorted(a), sorted(b)
    return len(a) == len(b) and all(abs(x - y) <= tol for x, y in zip(a, b))


def dciodvfy(data):
    with tempfile.NamedTemporaryFile(suffix=".dcm") as f:
        f.write(data)
        f.flush()
        p = subprocess.run(["dciodvfy", f.name], capture_output=True, text=True)
    lines = (p.stdout + p.stderr).splitlines()
    return [l for l in lines if l.startswith("Error")], lines


def main():
    plugin, model = env_paths()
    ok = Check("plugin_upload")
    o = Orthanc(plugin, model, unimed={"MaxClassifyBytes": 1 << 20})
    with tempfile.TemporaryDirectory(prefix="unimed-upload-") as tmp, orthanc_session(o, ok, 40):
        st, status = o.get("/unimed/status")
        ok(st == 200 and status["enabled"], "GET /unimed/status: enabled")

        # REST: a CT study (2 series) and a CR study; C-STORE: an MR study.
        _, ct = make_study("CT", n_series=2, n_instances=3, seed=1, patient_id="PCT")
        _, cr = make_study("CR", n_series=1, n_instances=1, seed=2, patient_id="PCR",
                           rows=48, cols=40)
        mr_uid, mr = make_study("MR", n_series=1, n_instances=4, seed=3, patient_id="PMR")
        ct_id = upload(o, ct)
        cr_id = upload(o, cr)
        mr_id = store_study_over_dicom(o, mr_uid, mr, tmp)

        st, pending = o.get("/unimed/studies/" + ct_id)
        ok(st in (200, 202), "GET studies/{id} while pending answers %d (%s)" % (st, pending.get("state")))

        results = {}
        for name, sid in (("CT", ct_id), ("CR", cr_id), ("MR (C-STORE)", mr_id)):
            st, r = study_result(o, sid, timeout=120)
            results[sid] = r
            ok(st == 200 and r["state"] == "done", "%s study analysed: state %s" % (name, r.get("state")))
            srs = sr_instances(o, sid)
            ok(len(srs) == 1 and (r.get("sr") or {}).get("instance_id") == srs[0],
               "%s: exactly one SR in the study, the one GET studies/{id} names" % name)
            if not srs:
                continue
            st, data, _ = o.request("GET", "/instances/%s/file" % srs[0])
            errors, lines = dciodvfy(data)
            ok(not errors and any("ComprehensiveSR" in l for l in lines),
               "%s: SR passes dciodvfy (%d errors)" % (name, len(errors)))
            for l in errors[:5]:
                print("   ", l)
            ds = pydicom.dcmread(io.BytesIO(data))
            ok(ds.SOPInstanceUID == r["sr"]["sop_instance_uid"], "%s: SR SOP Instance UID matches" % name)
            a, b = [x[2] for x in sr_probabilities(ds)], score_probabilities(r["scores"])
            ok(len(a) > 0 and same_multiset(a, b),
               "%s: REST scores = SR findings (%d probabilities)" % (name, len(a)))
            ok(ds.SoftwareVersions == status["version"], "%s: SR Software Versions %s = plugin version"
               % (name, ds.SoftwareVersions))

        # findings?label=...
        r = results[ct_id]
        best = max(r["scores"], key=lambda s: s["probability"])
        label, p = best["label"], best["probability"]
        q = "/unimed/findings?label=%s&min_probability=%.6f&label_set=%s" % (
            label.replace(" ", "%20"), max(0.0, p - 1e-4), best["label_set"])
        st, ans = o.get(q)
        hit = [x for x in ans.get("studies", []) if x["study_id"] == ct_id] if st == 200 else []
        ok(st == 200 and hit and abs(hit[0]["score"]["probability"] - p) < 1e-6 and hit[0]["patient_id"] == "PCT"
           and hit[0]["study_date"] == "20240102",
           "GET findings?label=%s finds the CT study with p=%.4f, patient and date" % (label, p))
        st, ans = o.get(q + "&modality=MR")
        ok(st == 200 and not [x for x in ans["studies"] if x["study_id"] == ct_id],
           "GET findings ... &modality=MR leaves the CT study out")
        if p < 0.999:
            st, ans = o.get("/unimed/findings?label=%s&min_probability=%.6f&label_set=%s" % (
                label.replace(" ", "%20"), p + 1e-3, best["label_set"]))
            ok(st == 200 and not [x for x in ans["studies"] if x["study_id"] == ct_id],
               "GET findings with min_probability above p leaves it out")
        st, ans = o.get("/unimed/findings?min_probability=0.5")
        ok(st == 400 and "error" in ans, "GET findings without label: 400 JSON")
        st, ans = o.get("/unimed/findings?label=x&min_probability=abc")
        ok(st == 400, "GET findings with a bad min_probability: 400")
        st, ans = o.get("/unimed/findings?label=x&min-probability=0.2")
        ok(st == 400 and "min_probability" in ans.get("error", ""),
           "GET findings with a misspelt argument: 400 naming the right one (%s)" % ans.get("error"))

        # search
        st, ans = o.get("/unimed/search?text=chest%20x-ray%20with%20pleural%20effusion&limit=10")
        sims = [x["similarity"] for x in ans.get("studies", [])] if st == 200 else []
        ok(st == 200 and {x["study_id"] for x in ans["studies"]} >= {ct_id, cr_id, mr_id}
           and sims == sorted(sims, reverse=True) and all(-1.0001 <= s <= 1.0001 for s in sims),
           "GET search ranks the 3 studies by cosine similarity: %s" % ["%.3f" % s for s in sims])
        st, ans = o.get("/unimed/search?text=x&limit=1")
        ok(st == 200 and len(ans["studies"]) == 1, "GET search &limit=1: one study")
        st, ans = o.get("/unimed/search")
        ok(st == 400, "GET search without text: 400")

        # label-sets
        st, ls = o.get("/unimed/label-sets")
        names = [x["name"] for x in ls.get("label_sets", [])] if st == 200 else []
        ok(st == 200 and names == [x["name"] for x in status["label_sets"]] and len(names) > 0,
           "GET label-sets lists %d label sets with labels" % len(names))

        # classify: findings, nothing stored
        st, stats0 = o.get("/statistics")
        st, ans = o.post("/unimed/classify", cr[0], headers={"Content-Type": "application/dicom"})
        ok(st == 200 and ans.get("scores"), "POST classify: scores")
        if st == 200:
            same = same_multiset(score_probabilities(ans["scores"]), score_probabilities(results[cr_id]["scores"]))
            ok(same, "POST classify of the CR image = the CR study's scores")
        st, stats1 = o.get("/statistics")
        ok(stats0["CountInstances"] == stats1["CountInstances"], "POST classify stores nothing")
        st, ans = o.post("/unimed/classify", b"\0" * ((1 << 20) + 1))
        ok(st == 413 and "error" in ans, "POST classify above MaxClassifyBytes: 413 JSON")
        st, ans = o.post("/unimed/classify", b"not dicom at all")
        ok(st == 400 and "error" in ans, "POST classify of garbage: 400 JSON (%s)" % (ans or {}).get("error"))

        # errors
        st, ans = o.get("/unimed/studies/00000000-00000000-00000000-00000000-00000000")
        ok(st == 404 and "error" in ans, "GET studies/{unknown}: 404 JSON")
        st, _, hdr = o.request("DELETE", "/unimed/status")
        ok(st == 405, "DELETE status: 405 (Allow: %s)" % hdr.get("Allow"))
        st, _ = o.get("/unimed/studies/%s/analyze" % ct_id)
        ok(st == 405, "GET studies/{id}/analyze: 405")
        st, ans = o.post("/unimed/studies/00000000-00000000-00000000-00000000-00000000/analyze")
        ok(st == 404, "POST analyze of an unknown study: 404")

        # re-analysis: queued again, same SR, no second report
        before = results[ct_id]
        st, ans = o.post("/unimed/studies/%s/analyze" % ct_id)
        ok(st == 202 and ans["state"] == "queued", "POST studies/{id}/analyze: 202 queued")
        time.sleep(0.5)
        st, r2 = study_result(o, ct_id)
        ok(st == 200 and r2["state"] == "done" and r2["sr"] == before["sr"],
           "re-analysis: done, same SR")
        time.sleep(4)  # the study becomes stable again; nothing more must happen
        ok(len(sr_instances(o, ct_id)) == 1, "re-analysis: still one SR in the study")
        st, status = o.get("/unimed/status")
        ok(status["failed"] == 0 and status["done"] == 3 and status["mean_analysis_seconds"] > 0,
           "status: done=%d failed=%d mean=%.3fs queue=%s" % (status["done"], status["failed"],
                                                           status["mean_analysis_seconds"], status["queue"]))
        ok(o.alive(), "Orthanc is still running")
    return ok.done()


if __name__ == "__main__":
    sys.exit(main())
