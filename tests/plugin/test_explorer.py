#!/usr/bin/python3
"""plugin_explorer: the Orthanc Explorer extension, checked in headless
Chromium (Debian's chromium driven by npm's playwright-core): the findings
table appears on a study's page, with a link to the SR and a working
"Re-analyse" button."""

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
        _, files = make_study("CT", 1, 2, seed=21)
        sid = upload(o, files)
        st, r = study_result(o, sid)
        ok(st == 200 and r["state"] == "done", "study analysed")
        analyses = o.get("/unimed/status")[1]["analyses"]
        p = subprocess.run([node, os.path.join(HERE, "explorer_check.mjs"), o.url, sid, CHROMIUM],
                           capture_output=True, text=True, timeout=180, cwd=HERE)
        print(p.stderr[-2000:])
        try:
            page = json.loads(p.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            page = {"errors": ["no output: " + p.stdout[-500:]]}
        ok(not page.get("errors"), "no browser errors %s" % page.get("errors"))
        rows = page.get("rows") or []
        ok(len(rows) == len(r["scores"]) and len(rows) > 0,
           "findings table has %d rows (the study has %d scores)" % (len(rows), len(r["scores"])))
        best = max(r["scores"], key=lambda s: s["probability"])
        ok(rows and rows[0][0] == best["label"] and rows[0][1] == "%.1f %%" % (100 * best["probability"]),
           "first row is the most probable finding: %s" % (rows[0] if rows else None))
        ok(page.get("sr_href") == "#instance?uuid=" + r["sr"], "SR link: %s" % page.get("sr_href"))
        ok(page.get("after_click", "").startswith("#instance?uuid=" + r["sr"]), "the SR link opens the SR instance")
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
