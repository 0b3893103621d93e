#!/usr/bin/python3
"""plugin_bad_image: a study whose pixels cannot be decoded is marked
failed with the reason; the other studies are analysed; Orthanc keeps
serving."""

import sys

from common import Check, Orthanc, env_paths, make_study, sr_instances, study_result, upload, orthanc_session


def main():
    plugin, model = env_paths()
    ok = Check("plugin_bad_image")
    o = Orthanc(plugin, model, declare_names=False)  # metadata by number
    with orthanc_session(o, ok):
        _, good1 = make_study("CT", 1, 2, seed=11)
        _, bad = make_study("CT", 1, 2, seed=12, broken=True)
        _, good2 = make_study("MR", 1, 2, seed=13)
        g1, b, g2 = upload(o, good1), upload(o, bad), upload(o, good2)
        st, r = study_result(o, b)
        ok(st == 200 and r["state"] == "failed" and r.get("error"),
           "undecodable study: state %s, reason: %s" % (r.get("state"), r.get("error")))
        ok(not sr_instances(o, b), "undecodable study: no SR")
        for name, sid in (("first", g1), ("second", g2)):
            st, r = study_result(o, sid)
            ok(st == 200 and r["state"] == "done" and len(sr_instances(o, sid)) == 1,
               "%s good study analysed with one SR" % name)
        st, s = o.get("/unimed/status")
        ok(s["failed"] == 1 and s["done"] == 2, "status: done=%d failed=%d" % (s["done"], s["failed"]))
        st, _ = o.get("/system")
        ok(st == 200 and o.alive(), "Orthanc keeps serving")
        # The failure survives a restart. Studies that became stable after the
        # journal's last /changes position are checked again at start (202
        # meanwhile); the stored failure is kept, not redone.
        o.stop()
        o.start()
        st, r = study_result(o, b)
        _, s = o.get("/unimed/status")
        ok(st == 200 and r["state"] == "failed" and r.get("error") and s["analyses"] == 0,
           "after restart: still failed with the reason, not analysed again (%d analyses since)"
           % s["analyses"])
    return ok.done()


if __name__ == "__main__":
    sys.exit(main())
