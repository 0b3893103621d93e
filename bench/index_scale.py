#!/usr/bin/python3
"""Archive-scale index benchmark: many analysed studies stored the way the
plugin stores them, then the plugin's start-up rebuild, its resident memory
and the latency of `search` and `findings` under concurrent clients. A
benchmark, not a test (docs/PERFORMANCE.md, "Archive-scale index").

    /usr/bin/python3 bench/index_scale.py --plugin build/plugin/libOrthancUniMed.so \\
        --model build/ref/full [--studies 100000] [--series 2] [--clients 8]
        [--queries 200] [--workdir DIR] [--keep] [--generate-only]

1. Starts Debian's Orthanc with the plugin (SQLite index, a storage folder
   in --workdir) and analyses one real study, to copy the plugin's own
   record, findings and embeddings format (and the model and label-set
   hashes) from it; its memory before that is the baseline.
2. Generates --studies studies: one small CT instance each (so that Orthanc
   holds the study), then, like a worker's final writes, the findings
   metadata (the real study's findings for each of --series series, with
   random probabilities and the series' UIDs), the embeddings attachment
   (--series random unit vectors of the model's dimension, written as the
   plugin writes them) and the `done` record (naming an SR); 8 client threads, the plugin disabled meanwhile (so
   that its first start only rebuilds). Reused when --workdir already holds
   them (--keep keeps it).
3. Restarts Orthanc: the time from the start until GET status says
   catching_up false (the rebuild), and Orthanc's resident memory (VmRSS)
   then, against the same Orthanc and plugin on an empty storage.
4. --clients threads send --queries requests each, alternating
   `search?text=…&limit=10` and `findings?label=…&limit=10`: p50 / p95 /
   max per route, in two phases: "new texts" (a different text per search:
   the text tower runs each time) and "repeated texts" (the texts of a pool
   of 10 already searched once: the plugin's cache of query embeddings
   answers, and the latency is the index's own).

Both Orthanc runs set "MaximumStorageCacheSize": 0: Orthanc's storage cache
(128 MB by default) would otherwise fill with the attachments the rebuild
reads and count as the index's memory; it is Orthanc's, bounded, and the
same with or without the plugin.
"""

import argparse
import json
import os
import random
import sys
import threading
import time
import urllib.parse

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "plugin"))

from common import Orthanc, make_study, study_result, upload, wait_for  # noqa: E402

TEXTS = ["chest x-ray with a pleural effusion", "normal chest radiograph", "brain mri with a tumour",
         "ct of the abdomen", "knee mri with a meniscal tear", "pulmonary nodule", "cardiomegaly",
         "fracture of the rib", "pneumothorax on the left", "consolidation in the right lower lobe"]


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fmt_embedding(v):
    return "[" + ",".join("%.7g" % x for x in v) + "]"


def generate(o, n, n_series, template, start, clients, seed):
    rec0, findings0, emb0 = template
    dim = emb0["dim"]
    t0 = time.time()
    done = [0]
    lock = threading.Lock()
    errors = []

    def work(k0):
        rng = np.random.default_rng(seed + k0)
        try:
            for k in range(start + k0, n, clients):
                uid, files = make_study("CT", n_series=1, n_instances=1, seed=k, patient_id="S%06d" % k,
                                        rows=8, cols=8)
                sid = upload(o, files)
                series_uids = ["1.2.826.0.1.3680043.10.1%06d.%d" % (k, j) for j in range(n_series)]
                # The real study's findings for each series (its own UID and
                # probabilities), as a study of n_series analysed series has.
                f = json.loads(json.dumps(findings0))
                series0 = f["series"][0]
                f["series"] = []
                for j in range(n_series):
                    se = json.loads(json.dumps(series0))
                    se["series"] = series_uids[j]

                    def redo(node):
                        if isinstance(node, dict):
                            for key, val in node.items():
                                if key == "probability" and isinstance(val, (int, float)):
                                    node[key] = round(float(rng.random()), 6)
                                else:
                                    redo(val)
                        elif isinstance(node, list):
                            for it in node:
                                redo(it)
                    redo(se)
                    f["series"].append(se)
                st, _, _ = o.request("PUT", "/studies/%s/metadata/4601" % sid, json.dumps(f, separators=(",", ":")))
                assert st == 200, st
                series = []
                for j in range(n_series):
                    v = rng.standard_normal(dim).astype(np.float32)
                    v /= np.linalg.norm(v)
                    series.append('{"series_uid":"%s","modality":"CT","n_frames":8,"embedding":%s}'
                                  % (series_uids[j], fmt_embedding(v)))
                emb = '{"dim":%d,"model":"%s","series":[%s]}' % (dim, emb0["model"], ",".join(series))
                st, _, _ = o.request("PUT", "/studies/%s/attachments/4602" % sid, emb)
                assert st == 200, st
                rec = dict(rec0)
                rec["fingerprint"] = "%016x" % rng.integers(0, 2**63)
                # An SR as the plugin stores one (its Orthanc ID and UID),
                # so that the index holds what it holds for a real study.
                rec["sr"] = "-".join("%08x" % rng.integers(0, 2**32) for _ in range(5))
                rec["sr_uid"] = "2.25.%d" % rng.integers(10**17, 10**18)
                st, _, _ = o.request("PUT", "/studies/%s/metadata/4600" % sid, json.dumps(rec))
                assert st == 200, st
                with lock:
                    done[0] += 1
                    if done[0] % 5000 == 0:
                        print("  %d studies generated, %.0f s" % (start + done[0], time.time() - t0), flush=True)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        sys.exit("generation failed: %s" % errors[:3])
    return time.time() - t0


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--plugin", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--studies", type=int, default=100000)
    ap.add_argument("--series", type=int, default=2)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--workdir", default="/tmp/unimed-index-scale")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--generate-only", action="store_true",
                    help="stop once --workdir holds the studies (implies --keep)")
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    unimed = {"Workers": 1, "Threads": 2, "Precision": "bf16"}
    extra = {"HttpThreadsCount": 50, "MaximumStorageCacheSize": 0}
    tmpl_path = os.path.join(a.workdir, "template.json")
    # The template study, and the baseline memory: the same Orthanc and
    # plugin (model loaded, label sets embedded) on an empty storage.
    b = Orthanc(a.plugin, a.model, unimed=unimed, extra=extra)
    try:
        b.start(timeout=600)
        wait_for(lambda: (b.get("/unimed/status")[1] or {}).get("catching_up") is False, 600, what="catch-up")
        time.sleep(2)
        base_rss = rss_kib(b.proc.pid)
        if not os.path.exists(tmpl_path):
            uid, files = make_study("CT", n_series=1, n_instances=2, seed=0, patient_id="TEMPLATE")
            sid = upload(b, files)
            study_result(b, sid, 600)
            rec = b.get("/studies/%s/metadata/4600" % sid)[1]
            findings = b.get("/studies/%s/metadata/4601" % sid)[1]
            emb = b.get("/studies/%s/attachments/4602/data" % sid)[1]
            with open(tmpl_path, "w") as f:
                json.dump([rec, findings, emb], f)
    finally:
        b.cleanup()
    with open(tmpl_path) as f:
        template = json.load(f)
    # The studies, written with the plugin disabled (so that it does not
    # queue them); its first start then begins at the end of the change log
    # and only rebuilds its index from what is stored.
    o = Orthanc(a.plugin, a.model, workdir=a.workdir, unimed=dict(unimed, Enable=False), extra=extra)
    try:
        o.start(timeout=600)
        have = len(o.get("/studies")[1])
        if have < a.studies:
            print("generating %d studies (%d there) ..." % (a.studies, have), flush=True)
            secs = generate(o, a.studies, a.series, template, have, 8, a.seed)
            print("generated in %.0f s" % secs, flush=True)
        n_in = len(o.get("/studies")[1])
        if a.generate_only:
            print("%d studies in %s" % (n_in, a.workdir))
            a.keep = True
            return
        o.stop()
        o.write_config(a.model, unimed, extra)
        t0 = time.time()
        o.start(timeout=600)
        wait_for(lambda: (o.get("/unimed/status")[1] or {}).get("catching_up") is False, 3600, interval=0.2,
                 what="the rebuild")
        rebuild = time.time() - t0
        time.sleep(2)
        rss = rss_kib(o.proc.pid)
        st = o.get("/unimed/status")[1]
        label = None
        for node in [template[1]]:
            s = json.dumps(node)
            i = s.find('"label": "')
            label = s[i + 10:s.index('"', i + 10)] if i >= 0 else "pleural effusion"
        print("studies in Orthanc %d, in the index %d (done), %d series each, dim %d"
              % (n_in, st["done"], a.series, template[2]["dim"]))
        print("rebuild at start: %.1f s; Orthanc VmRSS %.0f MiB with the index, %.0f MiB with an empty "
              "one (the index: %.0f MiB)"
              % (rebuild, rss / 1024, base_rss / 1024, (rss - base_rss) / 1024), flush=True)
        for phase in ("new texts", "repeated texts"):
            if phase == "repeated texts":
                for t in TEXTS:  # each once, so that the phase only meets cached texts
                    o.request("GET", "/unimed/search?text=%s&limit=10" % urllib.parse.quote(t), timeout=600)
            lat = {"search": [], "findings": []}
            lock = threading.Lock()

            def client(i):
                rng = random.Random(a.seed * 100 + i)
                for q in range(a.queries):
                    if q % 2 == 0:
                        text = rng.choice(TEXTS)
                        if phase == "new texts":
                            text = "%s %d" % (text, rng.randrange(1000000))
                        path, route = "/unimed/search?text=%s&limit=10" % urllib.parse.quote(text), "search"
                    else:
                        path, route = ("/unimed/findings?label=%s&min_probability=%.2f&limit=10"
                                       % (urllib.parse.quote(label), rng.random() * 0.9)), "findings"
                    t = time.perf_counter()
                    code, body, _ = o.request("GET", path, timeout=600)
                    dt = time.perf_counter() - t
                    assert code == 200, (code, body[:200])
                    with lock:
                        lat[route].append(dt * 1000)
            threads = [threading.Thread(target=client, args=(i,)) for i in range(a.clients)]
            t1 = time.time()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.time() - t1
            print("%s:" % phase)
            for route, xs in lat.items():
                print("  %s: %d requests from %d clients, p50 %.1f ms, p95 %.1f ms, max %.1f ms"
                      % (route, len(xs), a.clients, percentile(xs, 50), percentile(xs, 95), max(xs)))
            print("  %.1f requests/s over %.1f s; load average %s"
                  % ((len(lat["search"]) + len(lat["findings"])) / wall, wall,
                     open("/proc/loadavg").read().split()[:3]), flush=True)
        print("status: %s" % json.dumps((o.get("/unimed/status")[1] or {}).get("index")))
    finally:
        o.stop()
        if not a.keep:
            import shutil
            shutil.rmtree(a.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
