#!/usr/bin/python3
"""faults_delete_running: DELETE /studies/{id} while a worker analyses the
study. Nothing of it may remain or come back: the SR upload must not
re-create it (with WriteReports), and once the DELETE has returned every
plugin route answers 404 about it (studies/{id}) or leaves it out
(findings, search) — with and without WriteReports. Also a study deleted
after its analysis: 404 at once (Orthanc reports deletions to plugins
asynchronously)."""

import sys
import time
import urllib.parse

from faultlib import (Check, Orthanc, env_paths, make_study, orthanc_session, settled,
                      skip_if_sanitizer, study_result, upload, wait_for)


def listed(o, sid, label):
    st, f = o.get("/unimed/findings?" + urllib.parse.urlencode({"label": label, "min_probability": 0,
                                                                 "limit": 1000}))
    st2, s = o.get("/unimed/search?text=chest&limit=1000")
    st3, l = o.get("/unimed/studies?limit=1000")
    return any(sid in [x["study_id"] for x in r["studies"]] for r in (f, s, l))


def run(ok, plugin, model, write_reports):
    tag = "WriteReports %s" % ("on" if write_reports else "off")
    o = Orthanc(plugin, model, unimed={"Workers": 1, "MaxSlices": 256, "WriteReports": write_reports},
                extra={"StableAge": 1})
    with orthanc_session(o, ok, 60):
        # A finished study, for a label to look up and a delete after analysis.
        done_id = upload(o, make_study("CT", n_instances=2, seed=30, patient_id="DONE")[1])
        st, a = study_result(o, done_id)
        label = a["scores"][0]["label"]
        # A slow study (256 slices): deleted while it is running.
        sid = upload(o, make_study("CT", n_instances=256, rows=64, cols=64, seed=31,
                                   patient_id="DEL", patient_name="Secret^Name")[1])
        wait_for(lambda: o.get("/unimed/studies/" + sid)[1].get("state") == "running", 120,
                 interval=0.02, what="the analysis to start")
        st, _, _ = o.request("DELETE", "/studies/" + sid)
        ok(st == 200, "%s: DELETE while running: HTTP %s" % (tag, st))
        st, a = o.get("/unimed/studies/" + sid)
        ok(st == 404, "%s: right after the DELETE, studies/{id} answers %s" % (tag, st))
        st, _, _ = o.request("DELETE", "/studies/" + done_id)
        st, a = o.get("/unimed/studies/" + done_id)
        ok(st == 404, "%s: an analysed study, right after its DELETE: %s" % (tag, st))
        ok(not listed(o, done_id, label), "%s: ... and not listed by findings/search" % tag)
        wait_for(lambda: settled(o), 120, what="the worker to finish")
        time.sleep(2)  # a StableStudy of a re-created study would come after StableAge
        st, _ = o.get("/studies/" + sid)
        ok(st == 404, "%s: the deleted study is not in Orthanc (GET /studies/{id}: %s)" % (tag, st))
        st, pats = o.get("/patients?expand")
        names = [p["MainDicomTags"].get("PatientName") for p in pats]
        ok("Secret^Name" not in names, "%s: the patient is not back (patients: %s)" % (tag, names))
        st, a = o.get("/unimed/studies/" + sid)
        ok(st == 404, "%s: after the worker finished, studies/{id} answers %s" % (tag, st))
        ok(not listed(o, sid, label), "%s: not listed by findings/search" % tag)
        s = o.get("/unimed/status")[1]
        ok(s["done"] == 0, "%s: status counts no analysed study (done=%d)" % (tag, s["done"]))


def main():
    skip_if_sanitizer()
    plugin, model = env_paths()
    ok = Check("faults_delete_running")
    run(ok, plugin, model, True)
    run(ok, plugin, model, False)
    return ok.done()


if __name__ == "__main__":
    sys.exit(main())
