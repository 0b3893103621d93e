#!/usr/bin/python3
"""plugin_load: 200 small studies sent concurrently (REST from 8 threads and
C-STORE from 2) -> 200 reports, none lost, none duplicated, while GET /system
keeps answering. Prints GET /system latency and studies per minute."""

import os
import statistics
import sys
import tempfile
import threading
import time

from common import Check, Orthanc, env_paths, make_study, sr_instances, storescu, upload, wait_for, orthanc_session

N = int(os.environ.get("UNIMED_LOAD_STUDIES", "200"))
N_DICOM = N // 10


def main():
    plugin, model = env_paths()
    ok = Check("plugin_load")
    tmp = tempfile.mkdtemp(prefix="unimed-load-")
    o = Orthanc(plugin, model, unimed={"Workers": 2})
    with orthanc_session(o, ok):
        mods = ["CT", "MR", "CR"]
        studies = [make_study(mods[i % 3], 1, 2 if mods[i % 3] != "CR" else 1, seed=1000 + i,
                              patient_id="L%04d" % i)[1] for i in range(N)]
        latencies, errors = [], []
        stop = threading.Event()

        def probe():
            while not stop.is_set():
                t0 = time.time()
                try:
                    st, _, _ = o.request("GET", "/system", timeout=30)
                    if st != 200:
                        errors.append(st)
                except OSError as e:
                    errors.append(str(e))
                latencies.append(time.time() - t0)
                time.sleep(0.1)

        send_errors = []

        def send_rest(batch):
            try:
                for files in batch:
                    upload(o, files)
            except Exception as e:  # noqa: BLE001 - reported below, not left to a timeout
                send_errors.append(repr(e))

        def send_dicom(k, batch):
            paths = []
            for i, files in enumerate(batch):
                for j, data in enumerate(files):
                    p = os.path.join(tmp, "d%d_%d_%d.dcm" % (k, i, j))
                    with open(p, "wb") as f:
                        f.write(data)
                    paths.append(p)
            try:
                for i in range(0, len(paths), 4):
                    storescu(o, paths[i:i + 4])
            except Exception as e:  # noqa: BLE001
                send_errors.append(repr(e))

        rest, dicom = studies[N_DICOM:], studies[:N_DICOM]
        threads = [threading.Thread(target=probe)]
        threads += [threading.Thread(target=send_rest, args=(rest[k::8],)) for k in range(8)]
        threads += [threading.Thread(target=send_dicom, args=(k, dicom[k::2])) for k in range(2)]
        t0 = time.time()
        for t in threads:
            t.start()
        for t in threads[1:]:
            t.join()
        t_sent = time.time() - t0
        if send_errors:
            stop.set()
            ok(False, "every study sent: %s" % send_errors[:2])
            return ok.done()

        def finished():
            st, s = o.get("/unimed/status")
            return s if st == 200 and s["done"] + s["failed"] >= N else None
        s = wait_for(finished, 900, interval=0.2, what="%d analyses" % N)
        t_done = time.time() - t0
        stop.set()
        threads[0].join()
        st, ids = o.get("/studies")
        ok(len(ids) == N, "%d studies in Orthanc" % len(ids))
        ok(s["done"] == N and s["failed"] == 0, "status: done=%d failed=%d" % (s["done"], s["failed"]))
        time.sleep(4)  # every SR makes its study unstable once more: no second report
        counts = [len(sr_instances(o, sid)) for sid in ids]
        ok(counts.count(1) == N, "reports: %d studies with exactly one SR, %d without, %d with more"
           % (counts.count(1), counts.count(0), sum(1 for c in counts if c > 1)))
        lat = sorted(latencies)
        p50 = statistics.median(lat) * 1000
        p95 = lat[int(0.95 * (len(lat) - 1))] * 1000
        print("load: %d studies (%d over REST, %d over C-STORE) sent in %.1f s, all analysed after %.1f s"
              % (N, len(rest), len(dicom), t_sent, t_done))
        print("load: throughput %.0f studies/minute (including StableAge = 2 s); mean analysis %.3f s"
              % (N / t_done * 60, s["mean_analysis_seconds"]))
        print("load: GET /system latency over %d probes: median %.1f ms, p95 %.1f ms, max %.1f ms"
              % (len(lat), p50, p95, lat[-1] * 1000))
        ok(not errors, "GET /system answered 200 throughout (%d errors)" % len(errors))
        ok(lat[-1] < 5.0, "GET /system never took 5 s or more (max %.0f ms)" % (lat[-1] * 1000))
    return ok.done()


if __name__ == "__main__":
    sys.exit(main())
