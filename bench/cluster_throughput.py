#!/usr/bin/python3
"""Throughput of a cluster of Orthanc servers with the UniMed plugin on one
PostgreSQL index, with 1, 2, ... N nodes, and the time to take over a dead
node's claims. A benchmark, not a test (docs/PERFORMANCE.md has the figures).

    /usr/bin/python3 bench/cluster_throughput.py --plugin build/plugin/libOrthancUniMed.so \\
        --model build/ref/small [--nodes 1,2,3] [--studies 120] [--lease 10]
        [--precision fp32|bf16|int8] [--workers 1] [--threads 1] [--instances 3]
        [--no-takeover]

For each node count: a fresh PostgreSQL server and storage folder (the
cluster of tests/cluster/cluster.py), the nodes started and caught up, then
--studies generated studies (CT, MR, CR in turn, --instances instances of
32x32 each) posted over REST round-robin from one thread per node; timed
from the first upload until every study's record is "done" in the database.
Studies per minute = studies / that time. Then (unless --no-takeover) with
the last node count: 6 studies sent to one node, that node killed with
SIGKILL the moment it holds a claim, and the time from the kill until the
other nodes have finished every study it held.
"""

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "cluster"))

from cluster import PostgresServer, cluster_node, why_skip  # noqa: E402
from common import make_study, upload, wait_for  # noqa: E402


def done_count(pg):
    return int(pg.sql("SELECT count(*) FROM Metadata WHERE type = 4600 AND value LIKE '%\"state\":\"done\"%'").strip())


def claims_of(pg, owner):
    out = pg.sql("SELECT r.publicId FROM Metadata m JOIN Resources r ON r.internalId = m.id "
                 "WHERE m.type = 4600 AND m.value LIKE '%%\"state\":\"running\"%%' "
                 "AND m.value LIKE '%%\"owner\":\"%s\"%%'" % owner)
    return [x for x in out.split() if x]


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def run(args, n_nodes, takeover):
    folder = tempfile.mkdtemp(prefix="unimed-cluster-bench-")
    storage = os.path.join(folder, "storage")
    os.makedirs(storage)
    pg = PostgresServer(folder)
    nodes = []
    res = {"nodes": n_nodes}
    try:
        pg.start()
        unimed = {"Precision": args.precision, "Threads": args.threads}
        nodes = [cluster_node(i, args.plugin, args.model, pg, storage, args.lease,
                              workers=args.workers, unimed=unimed) for i in range(n_nodes)]
        for o in nodes:
            o.start(timeout=600)
        for o in nodes:
            wait_for(lambda: (o.get("/unimed/status")[1] or {}).get("catching_up") is False, 600, what="catch-up")
        kinds = ["CT", "MR", "CR"]
        studies = [make_study(kinds[k % 3], n_series=1, n_instances=args.instances, seed=5000 + k,
                              patient_id="B%04d" % k)[1] for k in range(args.studies)]
        res["load_before"] = loadavg()
        t0 = time.time()

        def send(i):
            for k in range(i, args.studies, n_nodes):
                upload(nodes[i], studies[k])
        threads = [threading.Thread(target=send, args=(i,)) for i in range(n_nodes)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        res["upload_s"] = time.time() - t0
        wait_for(lambda: done_count(pg) >= args.studies, 36000, interval=0.5, what="all done")
        res["seconds"] = time.time() - t0
        res["per_min"] = args.studies * 60.0 / res["seconds"]
        res["load_after"] = loadavg()
        if takeover and n_nodes >= 2:
            victim = nodes[0]
            batch = [make_study("CT", n_series=1, n_instances=args.instances, seed=9000 + k,
                                patient_id="T%d" % k)[1] for k in range(6)]
            for files in batch:
                upload(victim, files)
            orphans = []
            deadline = time.time() + 600
            while not orphans and time.time() < deadline:
                if claims_of(pg, victim.name):
                    victim.kill9()
                    t_kill = time.time()
                    orphans = claims_of(pg, victim.name)
                    if not orphans:
                        victim.start(timeout=600)
                else:
                    time.sleep(0.02)
            if orphans:
                # Every orphan done (not merely claimed again).
                def orphans_done():
                    out = pg.sql("SELECT r.publicId FROM Metadata m JOIN Resources r ON r.internalId = m.id "
                                 "WHERE m.type = 4600 AND m.value LIKE '%\"state\":\"done\"%'")
                    return set(orphans) <= set(out.split())
                wait_for(orphans_done, 3600, interval=0.1, what="orphans done")
                res["takeover_s"] = time.time() - t_kill
                res["orphans"] = len(orphans)
    finally:
        for o in nodes:
            o.stop()
            o.cleanup()
        pg.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--plugin", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--nodes", default="1,2,3")
    ap.add_argument("--studies", type=int, default=120)
    ap.add_argument("--instances", type=int, default=3)
    ap.add_argument("--lease", type=int, default=10)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--no-takeover", action="store_true")
    args = ap.parse_args()
    reason = why_skip()
    if reason:
        sys.exit(reason)
    counts = [int(x) for x in args.nodes.split(",")]
    print("model %s, precision %s, %d studies of %d instances, Workers %d, Threads %d, ClaimLease %d s"
          % (args.model, args.precision, args.studies, args.instances, args.workers, args.threads, args.lease))
    print("| nodes | studies | seconds | studies/min | takeover s (claims) | load before / after |")
    print("|---|---|---|---|---|---|")
    for n in counts:
        r = run(args, n, takeover=not args.no_takeover and n == counts[-1])
        tk = "%.1f (%d)" % (r["takeover_s"], r["orphans"]) if "takeover_s" in r else "-"
        print("| %d | %d | %.1f | %.1f | %s | %s / %s |" % (n, args.studies, r["seconds"], r["per_min"], tk,
                                                       r["load_before"], r["load_after"]), flush=True)


if __name__ == "__main__":
    main()
