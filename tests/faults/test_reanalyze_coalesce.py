#!/usr/bin/python3
"""faults_reanalyze_coalesce: 50 concurrent POST studies/{id}/analyze while
the study's forced re-analysis runs join that run: the engine runs once for
them, and the study keeps one SR. (A request that arrives while the study
is queued or running joins it; at most one run follows the one in progress,
and only when the study changed meanwhile.)"""

import sys
import threading

from faultlib import (Check, Orthanc, env_paths, make_study, orthanc_session, settled,
                      skip_if_sanitizer, sr_instances, study_result, upload, wait_for)


def main():
    skip_if_sanitizer()
    plugin, model = env_paths()
    ok = Check("faults_reanalyze_coalesce")
    # 256 slices: the run lasts long enough (seconds) for the burst to land in it.
    o = Orthanc(plugin, model, unimed={"Workers": 1, "MaxSlices": 256}, extra={"StableAge": 1})
    with orthanc_session(o, ok, 60):
        sid = upload(o, make_study("CT", n_instances=256, rows=64, cols=64, seed=40)[1])
        st, a = study_result(o, sid)
        ok(a["state"] == "done", "first analysis done")
        before = wait_for(lambda: settled(o), 60, what="idle")["analyses"]
        st, r = o.post("/unimed/studies/%s/analyze" % sid)
        ok(st == 202, "POST analyze: %s" % st)
        wait_for(lambda: o.get("/unimed/studies/" + sid)[1].get("state") == "running", 60,
                 interval=0.02, what="the re-analysis to start")
        answers = []

        def post():
            answers.append(o.post("/unimed/studies/%s/analyze" % sid)[0])

        threads = [threading.Thread(target=post) for _ in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ok(answers.count(202) == 50, "50 concurrent POST analyze: all 202")
        s = wait_for(lambda: settled(o), 120, what="idle again")
        runs = s["analyses"] - before
        ok(runs == 1, "engine runs for the 51 requests: %d (1 expected: they joined the running one)" % runs)
        ok(len(sr_instances(o, sid)) == 1, "one SR in the study")
        ok(o.get("/unimed/studies/" + sid)[1]["state"] == "done", "state done")
    return ok.done()


if __name__ == "__main__":
    sys.exit(main())
