#!/usr/bin/python3
"""plugin_cluster: three Debian Orthanc servers with the UniMed plugin on one
PostgreSQL index (Orthanc's PostgreSQL plugin) and one storage folder, all
created by the test on loopback.

  1. studies sent round-robin to the three nodes, alternately over C-STORE
     (storescu) and REST; a few deleted on another node right after upload;
  2. kill -9 of one node (seeded choice and moment) while it holds claims:
     the others take the claimed studies over after ClaimLease;
  3. the killed node restarts: no second report;
  4. DELETE on one node: nothing of the study on the others (Orthanc, and
     every plugin route);
  5. findings and search answer the same on every node; each node's status
     counts every study.

Invariants: lost 0 (every study still in Orthanc is done with one SR),
duplicated 0 (no study with two SRs), deleted-reappeared 0.

  UNIMED_CLUSTER_STUDIES=300 tests/cluster/test_cluster.py   (default: 300)
  UNIMED_CLUSTER_SEED=N                                      (default: 15)
"""

import os
import random
import shutil
import sys
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from cluster import PostgresServer, cluster_node, why_skip  # noqa: E402
from common import Check, env_paths, make_study, sr_instances, store_study_over_dicom, upload, wait_for  # noqa: E402

LEASE = 10          # ClaimLease of the test (seconds; the minimum allowed)
N_NODES = 3
N_DELETE_EARLY = 3  # deleted on another node right after their upload
N_DELETE_LATE = 5   # deleted once analysed


def status(o):
    try:
        st, s = o.get("/unimed/status", timeout=10)
    except OSError:
        return None
    return s if st == 200 else None


def settled(o):
    s = status(o)
    if not s or s["catching_up"]:
        return None
    q = s["queue"]
    return s if q["queued"] == 0 and q["running"] == 0 and q["waiting_stable"] == 0 else None


def claims_of(pg, owner):
    """Orthanc IDs of the studies whose record is a claim (running) of owner,
    read from the database itself (one query, so that the test can kill the
    owner the moment it holds one)."""
    out = pg.sql("SELECT r.publicId FROM Metadata m JOIN Resources r ON r.internalId = m.id "
                 "WHERE m.type = 4600 AND m.value LIKE '%%\"state\":\"running\"%%' "
                 "AND m.value LIKE '%%\"owner\":\"%s\"%%'" % owner)
    return [x for x in out.split() if x]


def records(pg):
    """{study ID: record text} of every study with a UniMedState record."""
    out = pg.sql("SELECT r.publicId || ' ' || m.value FROM Metadata m JOIN Resources r "
                 "ON r.internalId = m.id WHERE m.type = 4600")
    res = {}
    for line in out.splitlines():
        sid, _, val = line.partition(" ")
        res[sid] = val
    return res


def answers(o, label, text):
    """What a node answers to findings and search: sorted (study, score)."""
    q = urllib.parse.quote
    st, f = o.get("/unimed/findings?label=%s&min_probability=0&limit=100000" % q(label))
    st2, s = o.get("/unimed/search?text=%s&limit=100000" % q(text))
    if st != 200 or st2 != 200:
        return None
    fa = sorted((x["study_id"], round(x["score"]["probability"], 5)) for x in f["studies"])
    sa = sorted((x["study_id"], round(x["similarity"], 5)) for x in s["studies"])
    return fa, sa


def main():
    plugin, model = env_paths()
    reason = why_skip()
    if reason:
        print("skipped: " + reason)
        return 77
    n_studies = int(os.environ.get("UNIMED_CLUSTER_STUDIES", "300"))
    seed = int(os.environ.get("UNIMED_CLUSTER_SEED", "15"))
    rng = random.Random(seed)
    ok = Check("plugin_cluster")
    folder = tempfile.mkdtemp(prefix="unimed-cluster-")
    storage = os.path.join(folder, "storage")
    dicom_dir = os.path.join(folder, "dicom")
    os.makedirs(storage)
    os.makedirs(dicom_dir)
    pg = PostgresServer(folder)
    nodes = []
    t_start = time.time()
    try:
        pg.start()
        print("PostgreSQL on 127.0.0.1:%d (%s), seed %d, %d studies, ClaimLease %d s"
              % (pg.port, pg.bin, seed, n_studies, LEASE), flush=True)
        nodes = [cluster_node(i, plugin, model, pg, storage, LEASE) for i in range(N_NODES)]
        for o in nodes:
            o.start()
        for o in nodes:
            wait_for(lambda: settled(o), 60, what="%s caught up" % o.name)

        # ---- 1. uploads, round-robin, C-STORE and REST ----
        kinds = ["CT", "MR", "CR"]
        studies = [make_study(kinds[k % 3], n_series=1, n_instances=2 + k % 3, seed=1000 + k,
                              patient_id="C%04d" % k) for k in range(n_studies)]
        ids = [None] * n_studies
        deleted = set()
        early = set(rng.sample(range(n_studies), N_DELETE_EARLY))
        victim_i = rng.randrange(N_NODES)
        victim = nodes[victim_i]
        others = [o for o in nodes if o is not victim]
        kill_after = rng.randint(n_studies // 5, n_studies // 2)  # done studies before the kill
        errors = []

        def sender(k0):
            try:
                for k in range(k0, n_studies, N_NODES):
                    uid, files = studies[k]
                    for o in (nodes[k % N_NODES], others[k % len(others)]):
                        try:
                            if k % 2 == 0:
                                ids[k] = upload(o, files)
                            else:
                                ids[k] = store_study_over_dicom(o, uid, files, dicom_dir)
                            break
                        except (AssertionError, OSError):
                            if o is not victim:
                                raise
                            # The node was killed meanwhile: send it to another one.
                    if k in early:
                        # Deleted on another node at once (often before its analysis).
                        d = others[k % len(others)]
                        st, _, _ = d.request("DELETE", "/studies/" + ids[k])
                        if st == 200:
                            deleted.add(ids[k])
                        else:
                            errors.append("DELETE %s on %s: HTTP %d" % (ids[k], d.name, st))
            except Exception as e:  # noqa: BLE001 - reported as a failed check
                errors.append("sender %d: %r" % (k0, e))

        senders = [threading.Thread(target=sender, args=(k,)) for k in range(N_NODES)]
        t_upload = time.time()
        for t in senders:
            t.start()

        # ---- 2. kill -9 one node while it holds a claim ----
        def total_done():
            return len([v for v in records(pg).values() if '"state":"done"' in v])
        wait_for(lambda: total_done() >= kill_after, 600, interval=0.5,
                 what="%d studies analysed before the kill" % kill_after)
        orphans = []
        attempts = 0
        deadline = time.time() + 120
        while time.time() < deadline and not orphans:
            if claims_of(pg, victim.name):
                attempts += 1
                victim.kill9()
                t_kill = time.time()
                orphans = claims_of(pg, victim.name)
                if not orphans:
                    # Its analysis finished between the two looks: start again.
                    victim.start()
            else:
                time.sleep(0.02)
        ok(bool(orphans), "kill -9 of %s while it held %d claim(s) (after %d analyses, %d attempt(s))"
           % (victim.name, len(orphans), kill_after, attempts))
        for t in senders:
            t.join()
        ok(not errors, "uploads and early deletions: %s" % (errors[:3] or "no error"))
        print("uploads took %.1f s" % (time.time() - t_upload), flush=True)

        # The claims of the dead node are taken over after the lease.
        takeover = {}

        def taken_over():
            recs = records(pg)
            for sid in orphans:
                if sid not in takeover and sid in recs and '"state":"running"' not in recs[sid]:
                    takeover[sid] = time.time() - t_kill
            return len(takeover) == len([s for s in orphans if s in recs]) or None
        wait_for(taken_over, LEASE + 300, interval=0.2, what="the dead node's claims taken over")
        owners = {}
        for sid in orphans:
            rec = records(pg).get(sid, "")
            owners[sid] = rec.split('"owner":"')[1].split('"')[0] if '"owner":"' in rec else "?"
        ok(all(owners[s] != victim.name for s in takeover),
           "the dead node's %d claim(s) finished by %s after %s s (lease %d s)"
           % (len(orphans), sorted(set(owners.values())),
              ", ".join("%.1f" % v for v in sorted(takeover.values())), LEASE))

        def all_final():
            for o in others:
                if not settled(o):
                    return None
            recs = records(pg)
            live = [s for s in ids if s and s not in deleted]
            return all(s in recs and '"state":"done"' in recs[s] for s in live) or None
        wait_for(all_final, 300, interval=1, what="every study analysed by the surviving nodes")
        t_analysed = time.time() - t_upload
        print("all studies analysed %.1f s after the first upload" % t_analysed, flush=True)

        # ---- 3. restart of the killed node: no second report ----
        victim.start()
        wait_for(lambda: settled(victim), 300, interval=0.5, what="%s caught up after restart" % victim.name)
        time.sleep(4)  # StableAge after anything its restart would have stored

        # ---- 4. DELETE on one node, checked on the others ----
        live = [s for s in ids if s and s not in deleted]
        late = rng.sample(live, N_DELETE_LATE)
        # A label the studies were scored for (the most probable of the first).
        label = nodes[0].get("/unimed/studies/" + live[0])[1]["scores"][0]["label"]
        text = "chest x-ray with a pleural effusion"
        for k, sid in enumerate(late):
            a = nodes[k % N_NODES]
            st, _, _ = a.request("DELETE", "/studies/" + sid)
            ok(st == 200, "DELETE /studies/%s on %s" % (sid, a.name))
            deleted.add(sid)
            for b in nodes:
                if b is a:
                    continue
                so = b.get("/studies/" + sid)[0]
                su = b.get("/unimed/studies/" + sid)[0]
                fa, sa = answers(b, label, text)
                inf = any(x[0] == sid for x in fa) or any(x[0] == sid for x in sa)
                ok(so == 404 and su == 404 and not inf,
                   "  on %s at once: Orthanc %d, unimed/studies %d, in findings/search: %s"
                   % (b.name, so, su, inf))

        # ---- invariants ----
        time.sleep(3)
        for o in nodes:
            wait_for(lambda: settled(o), 120, what="%s settled" % o.name)
        live = [s for s in ids if s and s not in deleted]
        st, in_orthanc = nodes[0].get("/studies")
        in_orthanc = set(in_orthanc)
        recs = records(pg)
        lost = [s for s in live if s not in in_orthanc or '"state":"done"' not in recs.get(s, "")]
        counts = {s: len(sr_instances(nodes[0], s)) for s in live}
        dup = [s for s, n in counts.items() if n > 1]
        no_sr = [s for s, n in counts.items() if n == 0]
        back = [s for s in deleted if s in in_orthanc]
        ok(not lost and not no_sr, "lost 0: %d studies, every one done with its SR (lost %d, without SR %d)"
           % (len(live), len(lost), len(no_sr)))
        ok(not dup, "duplicated 0 (studies with two SRs: %d)" % len(dup))
        ok(not back, "deleted-reappeared 0 (%d deleted: %d early, %d late; back: %d)"
           % (len(deleted), len(early), len(late), len(back)))
        for o in nodes:
            for sid in sorted(deleted)[:N_DELETE_EARLY + N_DELETE_LATE]:
                if o.get("/studies/" + sid)[0] != 404 or o.get("/unimed/studies/" + sid)[0] != 404:
                    ok(False, "%s still answers about deleted study %s" % (o.name, sid))

        # ---- 5. the same answers everywhere ----
        work = {}
        for v in recs.values():
            if '"owner":"' in v:
                w = v.split('"owner":"')[1].split('"')[0]
                work[w] = work.get(w, 0) + 1
        print("study records last written by each node: %s" % work)
        ok(len(work) >= 2, "the work was spread over %d nodes" % len(work))
        ref = answers(nodes[0], label, text)
        ok(ref is not None and len(ref[0]) > 0 and len(ref[1]) == len(live),
           "%s: search lists the %d studies, findings for \"%s\" %d"
           % (nodes[0].name, len(live), label, len(ref[0]) if ref else -1))
        for o in nodes[1:]:
            ok(answers(o, label, text) == ref, "%s answers findings and search as %s" % (o.name, nodes[0].name))
        for o in nodes:
            s = status(o)
            ok(s["done"] == len(live) and s["failed"] == 0,
               "%s status: done %d failed %d skipped %d" % (o.name, s["done"], s["failed"], s["skipped"]))
        print("cluster: %d studies sent, %d deleted, %d in Orthanc, 1 kill, %d takeover(s) in %.1f-%.1f s, "
              "lost %d, duplicated %d, deleted-reappeared %d; %.0f s in all"
              % (n_studies, len(deleted), len(live), len(takeover), min(takeover.values()),
                 max(takeover.values()), len(lost), len(dup), len(back), time.time() - t_start))
    except (AssertionError, RuntimeError) as e:
        ok(False, str(e))
    finally:
        for o in nodes:
            o.stop()
            if ok.failures:
                print("---- %s log ----" % o.name)
                print(o.log_tail(25))
            o.cleanup()
        pg.stop()
        if not os.environ.get("UNIMED_KEEP_ORTHANC"):
            shutil.rmtree(folder, ignore_errors=True)
    return ok.done()


if __name__ == "__main__":
    sys.exit(main())
