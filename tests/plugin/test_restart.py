#!/usr/bin/python3
"""plugin_restart: kill -9 Orthanc while studies are new (not yet stable),
queued and being analysed; start it again on the same storage: every study
is analysed exactly once (one SR each). Then a clean restart: the index of
findings and embeddings is rebuilt from Orthanc."""

import sys
import threading
import time

from common import Check, Orthanc, env_paths, make_study, sr_instances, upload, wait_for, orthanc_session

N_FIRST = 40   # uploaded, then killed while they are queued / running
N_SECOND = 10  # uploaded just before the kill: still unstable ("new")


def all_studies(o):
    st, ids = o.get("/studies")
    return ids if st == 200 else []


def main():
    plugin, model = env_paths()
    ok = Check("plugin_restart")
    # Workers=1 and 8 instances per study so that a queue builds up.
    # CheckRevisions: the metadata writes carry If-Match (the multi-server claim).
    o = Orthanc(plugin, model, unimed={"Workers": 1}, extra={"CheckRevisions": True})
    with orthanc_session(o, ok, 60):
        studies = [make_study("CT", n_series=2, n_instances=4, seed=100 + i,
                              patient_id="R%03d" % i)[1] for i in range(N_FIRST + N_SECOND)]
        ids = []
        lock = threading.Lock()

        def send(batch):
            for files in batch:
                sid = upload(o, files)
                with lock:
                    ids.append(sid)

        threads = [threading.Thread(target=send, args=(studies[k:N_FIRST:4],)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        # Kill while the queue holds studies: as soon as the first one is done.
        def first_done():
            st, s = o.get("/unimed/status")
            return s if st == 200 and s["done"] >= 1 else None
        s = wait_for(first_done, 60, interval=0.05, what="the first analysis")
        send(studies[N_FIRST:])  # these stay "new": the kill comes before StableAge
        st, s = o.get("/unimed/status")
        print("before kill -9: done=%d queue=%s" % (s["done"], s["queue"]))
        pending_at_kill = s["queue"]["queued"] + s["queue"]["running"] + s["queue"]["waiting_stable"]
        ok(pending_at_kill > 0, "studies pending when killed: %d" % pending_at_kill)
        time.sleep(0.5)  # let the journal record the last ones
        o.kill9()
        ok(not o.alive(), "Orthanc killed with SIGKILL")

        o.start()
        ok(len(all_studies(o)) == len(ids), "Orthanc restarted on the same storage with %d studies" % len(ids))

        def finished():
            st, s = o.get("/unimed/status")
            if st != 200:
                return None
            return s if s["done"] + s["failed"] >= len(ids) and not s["catching_up"] and \
                s["queue"]["queued"] == 0 and s["queue"]["running"] == 0 else None
        s = wait_for(finished, int(__import__("os").environ.get("RESTART_WAIT", "300")), interval=0.5, what="all studies analysed after the restart")
        ok(s["failed"] == 0, "after restart: done=%d failed=%d" % (s["done"], s["failed"]))
        time.sleep(4)  # StableStudy after each SR: must not add reports
        counts = {sid: len(sr_instances(o, sid)) for sid in ids}
        once = [sid for sid, n in counts.items() if n == 1]
        ok(len(once) == len(ids), "every study has exactly one SR: %d/%d (counts %s)"
           % (len(once), len(ids), sorted(set(counts.values()))))
        states = [o.get("/unimed/studies/" + sid) for sid in ids]
        ok(all(st == 200 and a["state"] == "done" for st, a in states), "every study: state done")

        # Clean restart: the index comes back from Orthanc's metadata.
        st, before = o.get("/unimed/search?text=pleural%20effusion&limit=1000")
        answers_before = {sid: o.get("/unimed/studies/" + sid)[1] for sid in ids}
        findings_route = "/unimed/findings?label=pleural%20effusion&min_probability=0&limit=1000"
        findings_before = o.get(findings_route)[1]
        # The scores as the index answers them = the stored findings JSON
        # (UniMedFindings), flattened here: the index keeps them packed.
        for sid in ids[:8]:
            stored = o.get("/studies/%s/metadata/4601" % sid)[1]
            flat = sorted((f["label"], ls["name"], se["modality"], se["series"], f["probability"])
                          for se in stored["series"] for ls in se.get("label_sets", [])
                          for f in ls["findings"])
            got = sorted((x["label"], x["label_set"], x["modality"], x["series_instance_uid"], x["probability"])
                         for x in answers_before[sid]["scores"])
            ok(flat == got and flat, "study %s: the %d scores answered are the stored findings'" % (sid, len(flat)))
        rc = o.stop()
        ok(rc == 0, "clean stop (exit code %s)" % rc)
        # Pages of 3 studies: the rebuild reads the archive in many pages,
        # in parallel (250 studies per page by default).
        __import__("os").environ["UNIMED_REBUILD_PAGE"] = "3"
        o.start()
        st, s = o.get("/unimed/status")
        wait_for(lambda: not o.get("/unimed/status")[1]["catching_up"], 60, what="catch-up")
        st, s = o.get("/unimed/status")
        ok(s["done"] == len(ids), "after a clean restart: %d analysed studies in the index" % s["done"])
        st, after = o.get("/unimed/search?text=pleural%20effusion&limit=1000")
        b = [(x["study_id"], round(x["similarity"], 5)) for x in before["studies"]]
        a = [(x["study_id"], round(x["similarity"], 5)) for x in after["studies"]]
        ok(len(a) == len(ids) and sorted(a) == sorted(b), "search after restart = search before (%d studies)" % len(a))
        answers_after = {sid: o.get("/unimed/studies/" + sid)[1] for sid in ids}
        same = [sid for sid in ids if answers_after[sid] == answers_before[sid]]
        for sid in [x for x in ids if x not in same][:2]:
            a, b = answers_after[sid], answers_before[sid]
            print("study %s differs after restart in: %s" % (sid, {k: (b.get(k), a.get(k)) for k in set(a) | set(b)
                                                                   if a.get(k) != b.get(k)}))
        ok(len(same) == len(ids), "GET studies/{id} after restart = before, for %d/%d studies" % (len(same), len(ids)))
        ok(o.get(findings_route)[1] == findings_before, "GET findings after restart = before (%d studies)"
           % len(findings_before["studies"]))
        st, r = o.get("/unimed/studies/" + ids[0])
        ok(st == 200 and r["state"] == "done" and r["scores"], "GET studies/{id} after restart: findings")
        time.sleep(3)
        ok(sum(len(sr_instances(o, sid)) for sid in ids) == len(ids), "no new SR after the restart")
    return ok.done()


if __name__ == "__main__":
    sys.exit(main())
