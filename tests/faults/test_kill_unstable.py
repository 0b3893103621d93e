#!/usr/bin/python3
"""faults_kill_unstable: kill -9 Orthanc right after a burst of uploads (no
grace delay, so the last studies are not yet in the plugin's journal), start
it again on the same storage: every study still reaches a final state with
exactly one SR. (Orthanc does not carry "unstable" studies over a restart:
a study whose NewStudy came just before the kill never gets a StableStudy.)"""

import os
import sys
import threading

from faultlib import (Check, Orthanc, env_paths, make_study, orthanc_session, settled,
                      skip_if_sanitizer, sr_instances, upload, wait_for)

N = 40


def main():
    skip_if_sanitizer()
    plugin, model = env_paths()
    ok = Check("faults_kill_unstable")
    o = Orthanc(plugin, model, unimed={"Workers": 1}, extra={"StableAge": 2})
    with orthanc_session(o, ok, 60):
        studies = [make_study("CT", n_instances=1, seed=200 + i, patient_id="K%03d" % i)[1]
                   for i in range(N)]
        ids, lock = [], threading.Lock()

        def send(batch):
            for files in batch:
                sid = upload(o, files)
                with lock:
                    ids.append(sid)

        threads = [threading.Thread(target=send, args=(studies[k::4],)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        o.kill9()  # at once: the journal is written every 0.3 s at best
        ok(not o.alive(), "Orthanc killed with SIGKILL right after %d uploads" % len(ids))
        o.start()
        s = wait_for(lambda: settled(o), 120, interval=0.5, what="every study final after the restart")
        ok(s["done"] == N and s["failed"] == 0,
           "after the restart: done=%d failed=%d of %d" % (s["done"], s["failed"], N))
        counts = [len(sr_instances(o, sid)) for sid in ids]
        ok(all(c == 1 for c in counts), "exactly one SR per study (counts %s)" % sorted(set(counts)))
        states = [o.get("/unimed/studies/" + sid)[1].get("state") for sid in ids]
        ok(all(x == "done" for x in states), "every study answers done")
    return ok.done()


if __name__ == "__main__":
    sys.exit(main())
