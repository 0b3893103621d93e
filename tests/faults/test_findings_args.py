#!/usr/bin/python3
"""faults_findings_args: GET findings with all five arguments answers for
the label asked for (the argument parser once kept four values per thread
and the fifth overwrote the first: the label became the modality)."""

import sys
import urllib.parse

from faultlib import Check, Orthanc, env_paths, make_study, orthanc_session, skip_if_sanitizer, study_result, upload


def main():
    skip_if_sanitizer()
    plugin, model = env_paths()
    ok = Check("faults_findings_args")
    o = Orthanc(plugin, model, extra={"StableAge": 1})
    with orthanc_session(o, ok):
        sid = upload(o, make_study("CT", n_instances=2, seed=5)[1])
        st, a = study_result(o, sid)
        ok(st == 200 and a["state"] == "done" and a["scores"], "study analysed: %s" % a.get("state"))
        f = a["scores"][0]
        args = [("label", f["label"]), ("min_probability", "0"), ("label_set", f["label_set"]),
                ("limit", "50"), ("modality", "CT")]
        st, r = o.get("/unimed/findings?" + urllib.parse.urlencode(args))
        ok(st == 200, "findings with five arguments: HTTP %s" % st)
        ok(r["label"] == f["label"], "the answer is for label %r (asked %r)" % (r["label"], f["label"]))
        ok(r["total"] == 1 and r["studies"][0]["study_id"] == sid and r["studies"][0]["score"]["label"] == f["label"],
           "the study is found with its finding %r" % f["label"])
        # The same arguments in every order.
        for k in range(1, 5):
            perm = args[k:] + args[:k]
            st, r = o.get("/unimed/findings?" + urllib.parse.urlencode(perm))
            ok(st == 200 and r["label"] == f["label"] and r["total"] == 1,
               "order %s: label %r, %s studies" % ([p[0] for p in perm], r.get("label"), r.get("total")))
    return ok.done()


if __name__ == "__main__":
    sys.exit(main())
