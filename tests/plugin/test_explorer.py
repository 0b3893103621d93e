#!/usr/bin/python3
"""plugin_explorer: the Orthanc Explorer extension, checked in headless
Chromium (Debian's chromium driven by npm's playwright-core): the findings
table appears on a study's page with the model, label-set versions and
what a probability means, the modality check apart; the panel always
belongs to the study in the address (direct address change, back/forward,
two studies in sequence); the report is one click away, readable, with a
way back; "Re-analyse" works."""

import json
import os
import shutil
import subprocess
import sys

from common import HERE, Check, Orthanc, env_paths, make_study, study_result, upload, wait_for, orthanc_session

CHROMIUM = os.environ.get("UNIMED_CHROMIUM", "/usr/bin/chromium")


def main():
    plugin, model = env_paths()
    node = shutil.which("node")
    if not (node and os.path.exists(CHROMIUM) and
            os.path.isdir(os.path.join(HERE, "node_modules", "playwright-core"))):
        print("SKIP: needs node, %s and tests/plugin/node_modules/playwright-core (npm ci)" % CHROMIUM)
        return 77
    ok = Check("plugin_explorer")
    o = Orthanc(plugin, model)
    with orthanc_session(o, ok):
        _, files = make_study("CT", 1, 2, seed=21, patient_id="PA")
        sid = upload(o, files)
        _, files_b = make_study("CR", 1, 1, seed=22, patient_id="PB")
        sid_b = upload(o, files_b)
        st, r = study_result(o, sid)
        ok(st == 200 and r["state"] == "done", "study analysed")
        st_b, r_b = study_result(o, sid_b)
        ok(st_b == 200 and r_b["state"] == "done", "second study analysed")
        analyses = o.get("/unimed/status")[1]["analyses"]
        p = subprocess.run([node, os.path.join(HERE, "explorer_check.mjs"), o.url, sid, sid_b, CHROMIUM],
                           capture_output=True, text=True, timeout=180, cwd=HERE)
        print(p.stderr[-2000:])
        try:
            page = json.loads(p.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            page = {"errors": ["no output: " + p.stdout[-500:]]}
        ok(not page.get("errors"), "no browser errors %s" % page.get("errors"))
        rows = page.get("rows") or []
        findings = [x for x in r["scores"] if x["label_set"] != "modality"]
        check = [x for x in r["scores"] if x["label_set"] == "modality"]
        ok(len(rows) == len(findings) and len(rows) > 0 and page.get("check_rows") == len(check),
           "findings table has %d rows, the modality check %s apart (the study has %d + %d scores)"
           % (len(rows), page.get("check_rows"), len(findings), len(check)))
        best = max(findings, key=lambda s: s["probability"])
        ok(rows and rows[0][0] == best["label"] and rows[0][1] == "%.1f %%" % (100 * best["probability"]),
           "first row is the most probable finding: %s" % (rows[0] if rows else None))
        m = r["model"]
        ok(m["name"] in (page.get("model_text") or "") and m["version"] in page.get("model_text", ""),
           "the panel names the model and its version: %s" % page.get("model_text"))
        used = {x["label_set"] for x in r["scores"]}
        lsets = page.get("label_sets") or []
        ok(len(lsets) == len(used) and all(any(ls["name"] in t and ls["version"] in t and
                                               ls["probability_meaning"] in t for t in lsets)
                                           for ls in r["label_sets"] if ls["name"] in used),
           "the panel lists the label sets used with versions and what a probability means: %s" % lsets[:2])
        for k in ("first", "address_change", "back", "forward", "sequence_a", "sequence_b"):
            want = sid_b if k in ("address_change", "forward", "sequence_b") else sid
            ok(page.get("belongs", {}).get(k) == want, "the panel belongs to the study in the address: %s" % k)
        ok(page.get("report_has_probability"), "the report link opens DCMTK's rendering of the SR (%s)"
           % page.get("report_title"))
        ok(page.get("back_from_report") == sid, "the report's back link returns to the study")
        ok(page.get("sr_href") == "#instance?uuid=" + r["sr"]["instance_id"], "SR link: %s" % page.get("sr_href"))
        ok(page.get("after_click", "").startswith("#instance?uuid=" + r["sr"]["instance_id"]),
           "the SR link opens the SR instance")
        ok(page.get("reanalyse_posted"), "Re-analyse posts to studies/{id}/analyze")
        try:
            s = wait_for(lambda: (lambda x: x if x["analyses"] > analyses and not x["queue"]["queued"]
                                  and not x["queue"]["running"] else None)(o.get("/unimed/status")[1]),
                         30, what="the re-analysis")
        except AssertionError:
            s = o.get("/unimed/status")[1]
        ok(s["analyses"] == analyses + 1, "the study was analysed again (%d -> %d analyses)"
           % (analyses, s["analyses"]))
    return ok.done()


if __name__ == "__main__":
    sys.exit(main())
