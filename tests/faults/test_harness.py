#!/usr/bin/python3
"""faults_harness: seeded fault injection against a real Orthanc with the
plugin, checking invariants rather than scripted stories.

  test_harness.py [--seed N] [--soak] [--studies N] [--keep]

Studies are uploaded over REST by two sender threads (generated CT/MR/CR
studies; some with undecodable pixels; a decompression bomb; files from
../shared when present; some whose SR a Lua ReceivedInstanceFilter
refuses) while the main thread injects faults at moments drawn from the
seed, without waiting for anything to settle first:

  kill -9 (whatever is happening: upload, waiting for stability, analysis,
  storing the SR, writing the journal), clean stop, user DELETE, forced
  re-analysis (POST .../analyze), storage full (Orthanc's StorageDirectory
  on a size-limited tmpfs filled by a ballast file, emptied again a few
  seconds later), the model replaced atomically (a symlink swap) and in
  place (model.safetensors rewritten, same size).

After the faults stop Orthanc is started if down, and within a bounded time:
  I1 every study Orthanc holds is final: done with exactly one SR, or
     failed/skipped with a reason;
  I2 a study deleted by a user is not in Orthanc, and every plugin route
     answers 404 about it (checked right after each DELETE and at the end);
  I3 Orthanc's RSS, sampled every 0.5 s, stays under RSS_BOUND_MIB;
  I4 Orthanc never exits unless the harness stops it, and answers
     GET /system whenever it runs;
  I5 re-analysis never leaves a second SR (part of I1's count).
The CI slice takes a few minutes; --soak runs >= 1000 studies with >= 10
kills and >= 50 deletions and prints the figures."""

import argparse
import glob
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

import warnings

import numpy as np

from faultlib import Orthanc, env_paths, make_study, rss_kib, skip_if_sanitizer

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(HERE))), "shared", "data")
RSS_BOUND_MIB = 1024  # docs/PLUGIN.md, "Memory"
SETTLE_SECONDS = 300

LUA = """
function ReceivedInstanceFilter(dicom, origin, info)
  if dicom.Modality == 'SR' and string.sub(dicom.PatientID or '', 1, 4) == 'NOSR' then
    return false
  end
  return true
end
"""


class Figures:
    def __init__(self):
        self.lock = threading.Lock()
        self.c = {}
        self.errors = []

    def add(self, key, n=1):
        with self.lock:
            self.c[key] = self.c.get(key, 0) + n

    def fail(self, msg):
        with self.lock:
            self.errors.append(msg)
        print("FAIL " + msg, flush=True)


# ---------------------------------------------------------------- inputs

def rle_bomb():
    """4 MiB RLE file declaring 16384 x 16383 pixels (see test_decode_budget)."""
    from test_decode_budget import rle_bomb as bomb
    return bomb()


def shared_units(rng, limit):
    """Files from ../shared grouped by study (each group uploaded once)."""
    if not os.path.isdir(SHARED):
        print("note: %s missing: no shared sample files in this run" % SHARED)
        return []
    import pydicom
    groups = {}
    for path in sorted(glob.glob(os.path.join(SHARED, "dicom*", "*.dcm"))):
        if os.path.getsize(path) > 2 << 20:
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            key = (str(ds.get("PatientID", "")), str(ds.StudyInstanceUID))
        except Exception:  # unreadable: its own unit (Orthanc will refuse it)
            key = ("?", path)
        with open(path, "rb") as f:
            groups.setdefault(key, []).append(f.read())
    units = [("shared", files) for _, files in sorted(groups.items())]
    rng.shuffle(units)
    return units[:limit]


def make_units(rng, n):
    units = []
    for i in range(n):
        kind = rng.random()
        mod = rng.choice(["CT", "MR", "CR"])
        pid = "H%05d" % i
        if kind < 0.06:
            pid = "NOSR%05d" % i  # the Lua filter refuses its SR: failed, with the reason
        broken = 0.06 <= kind < 0.11
        _, files = make_study(mod, n_series=1, n_instances=rng.randint(1, 3), seed=rng.randrange(1 << 30),
                              patient_id=pid, broken=broken)
        units.append(("broken" if broken else "nosr" if pid.startswith("NOSR") else "study", files))
    return units


# ---------------------------------------------------------------- model variants

def perturbed_weights(path, seed):
    with open(path, "rb") as f:
        data = bytearray(f.read())
    n = struct.unpack("<Q", data[:8])[0]
    body = np.frombuffer(bytes(data[8 + n:]), dtype=np.float32).copy()
    body *= np.float32(1.0 + 0.01 * (seed % 7 + 1))
    return bytes(data[:8 + n]) + body.tobytes()


# ---------------------------------------------------------------- harness

class Harness:
    def __init__(self, plugin, model, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.fig = Figures()
        self.work = tempfile.mkdtemp(prefix="unimed-faults-")
        self.storage = os.path.join(self.work, "storage")
        os.makedirs(self.storage)
        self.tmpfs = False
        if os.geteuid() == 0:
            r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dm" % args.storage_mib, "tmpfs",
                                self.storage], capture_output=True, text=True)
            self.tmpfs = r.returncode == 0
            if not self.tmpfs:
                print("note: mount -t tmpfs failed (%s): no storage-full faults" % r.stderr.strip())
        else:
            print("note: not root: no size-limited tmpfs, so no storage-full faults")
        # The model as the upgrade procedure lays it out: a symlink to a version directory.
        self.model_src = model
        self.versions = 0
        self.model_link = os.path.join(self.work, "model")
        first = self.new_model_version(None)
        os.symlink(first, self.model_link)
        lua = os.path.join(self.work, "refuse_sr.lua")
        with open(lua, "w") as f:
            f.write(LUA)
        self.o = Orthanc(plugin, self.model_link, workdir=os.path.join(self.work, "orthanc"),
                         unimed={"Workers": 1},
                         extra={"StableAge": 1, "StorageDirectory": self.storage,
                                "IndexDirectory": os.path.join(self.work, "index"),
                                "LuaScripts": [lua]})
        os.makedirs(os.path.join(self.work, "index"), exist_ok=True)
        self.expected_down = threading.Event()  # set while the harness stops/kills Orthanc
        self.up = threading.Event()
        self.done_sending = threading.Event()
        self.stop_monitor = threading.Event()
        self.lock = threading.Lock()
        self.complete = []   # Orthanc study IDs whose upload completed
        self.deleted = set()
        self.peak_rss = 0

    # ---- model ----
    def new_model_version(self, seed):
        self.versions += 1
        d = os.path.join(self.work, "model-v%d" % self.versions)
        shutil.copytree(self.model_src, d)
        if seed is not None:
            w = os.path.join(d, "model.safetensors")
            data = perturbed_weights(w, seed)
            with open(w, "wb") as f:
                f.write(data)
        return d

    def replace_model_atomically(self):
        d = self.new_model_version(self.rng.randrange(1000))
        tmp = self.model_link + ".new"
        os.symlink(d, tmp)
        os.replace(tmp, self.model_link)
        self.fig.add("model replaced (atomic)")

    def replace_model_in_place(self):
        w = os.path.join(os.path.realpath(self.model_link), "model.safetensors")
        data = perturbed_weights(w, self.rng.randrange(1000))
        with open(w, "r+b") as f:  # same inode, same size
            f.write(data)
        self.fig.add("model replaced (in place)")

    # ---- Orthanc ----
    def start(self):
        self.o.start(timeout=180)
        self.expected_down.clear()
        self.up.set()

    def kill(self):
        self.expected_down.set()
        self.up.clear()
        self.o.kill9()
        self.fig.add("kills")
        time.sleep(self.rng.random() * 0.5)
        self.start()

    def clean_stop(self):
        self.expected_down.set()
        self.up.clear()
        rc = self.o.stop()
        if rc != 0:
            self.fig.fail("I4: a clean stop ended with exit code %s" % rc)
        self.fig.add("clean stops")
        self.start()

    # ---- monitor (I3, I4) ----
    def monitor(self):
        while not self.stop_monitor.is_set():
            p = self.o.proc
            if p is not None and not self.expected_down.is_set():
                if p.poll() is not None:
                    self.fig.fail("I4: Orthanc exited by itself (code %s); log:\n%s"
                                  % (p.returncode, self.o.log_tail(40)))
                    self.expected_down.set()
                else:
                    rss = rss_kib(p.pid)
                    self.peak_rss = max(self.peak_rss, rss)
                    if rss > RSS_BOUND_MIB * 1024:
                        self.fig.fail("I3: Orthanc's RSS %d MiB > %d MiB" % (rss // 1024, RSS_BOUND_MIB))
                    try:
                        st, _, _ = self.o.request("GET", "/system", timeout=20)
                        if st != 200 and not self.expected_down.is_set():
                            self.fig.fail("I4: GET /system answered %s" % st)
                    except OSError as e:
                        if not self.expected_down.is_set() and p.poll() is None:
                            self.fig.fail("I4: GET /system did not answer: %s" % e)
            time.sleep(0.5)

    # ---- senders ----
    def send_unit(self, kind, files):
        study = None
        for data in files:
            for attempt in range(400):
                self.up.wait()
                try:
                    st, ans = self.o.post("/instances", data, headers={"Content-Type": "application/dicom"},
                                          timeout=60)
                except OSError:
                    time.sleep(0.2)
                    continue
                if st == 200:
                    study = ans.get("ParentStudy") if isinstance(ans, dict) else None
                    break
                if st >= 500:  # down, or the storage is full: try again
                    self.fig.add("uploads retried (HTTP %d)" % st)
                    time.sleep(0.3)
                    continue
                self.fig.add("files refused by Orthanc (HTTP %d)" % st)  # bad input
                break
        if study:
            with self.lock:
                self.complete.append(study)
            self.fig.add("studies sent (%s)" % kind)

    def sender(self, units, rng):
        for kind, files in units:
            self.send_unit(kind, files)
            time.sleep(rng.random() * 0.05)

    # ---- faults ----
    def delete_one(self):
        with self.lock:
            cands = [s for s in self.complete if s not in self.deleted]
        if not cands:
            return
        sid = self.rng.choice(cands)
        try:
            st, _, _ = self.o.request("DELETE", "/studies/" + sid, timeout=60)
        except OSError:
            return
        if st != 200:
            return
        with self.lock:
            self.deleted.add(sid)
        self.fig.add("deletions")
        self.check_gone(sid, "right after its DELETE")

    def check_gone(self, sid, when):
        try:
            st, _ = self.o.get("/unimed/studies/" + sid, timeout=60)
        except OSError:
            return
        if st != 404 and self.up.is_set():
            self.fig.fail("I2: deleted study %s: studies/{id} answered %s %s" % (sid, st, when))

    def reanalyze_one(self):
        with self.lock:
            cands = [s for s in self.complete if s not in self.deleted]
        if cands:
            sid = self.rng.choice(cands)
            try:
                self.o.post("/unimed/studies/%s/analyze" % sid, timeout=60)
                self.fig.add("re-analysis requests")
            except OSError:
                pass

    def fill_storage(self):
        if not self.tmpfs:
            return
        stv = os.statvfs(self.storage)
        free = stv.f_bavail * stv.f_frsize
        ballast = os.path.join(self.storage, "ballast")
        try:
            with open(ballast, "wb") as f:
                left = free  # until ENOSPC
                chunk = b"\0" * (1 << 20)
                while left > 0:
                    k = f.write(chunk[:min(left, len(chunk))])
                    left -= k
        except OSError:
            pass  # full: that is the point
        self.fig.add("storage-full episodes")
        time.sleep(2 + self.rng.random() * 4)
        os.unlink(ballast)

    # ---- run ----
    def run(self):
        a = self.args
        units = make_units(self.rng, a.studies)
        units += shared_units(self.rng, a.shared)
        units.append(("bomb", [rle_bomb()]))
        self.rng.shuffle(units)
        # The faults, at seeded positions among the uploads.
        faults = (["kill"] * a.kills + ["stop"] * a.stops + ["delete"] * a.deletions +
                  ["reanalyze"] * a.reanalyses + ["fill"] * (a.fills if self.tmpfs else 0) +
                  ["model_atomic"] * a.models + ["model_inplace"] * a.models)
        self.rng.shuffle(faults)
        t0 = time.time()
        self.start()
        mon = threading.Thread(target=self.monitor, daemon=True)
        mon.start()
        senders = [threading.Thread(target=self.sender, args=(units[k::2], random.Random(self.args.seed * 7 + k)))
                   for k in range(2)]
        for t in senders:
            t.start()
        # Spread the faults over the sending time; each after a seeded pause.
        per = len(units) / max(1, len(faults) + 1)
        actions = {"kill": self.kill, "stop": self.clean_stop, "delete": self.delete_one,
                   "reanalyze": self.reanalyze_one, "fill": self.fill_storage,
                   "model_atomic": self.replace_model_atomically,
                   "model_inplace": self.replace_model_in_place}
        for i, f in enumerate(faults):
            target = int(per * (i + self.rng.random()))
            while len(self.complete) < target and any(t.is_alive() for t in senders):
                time.sleep(0.05)
            time.sleep(self.rng.random() * 0.8)
            actions[f]()
        for t in senders:
            t.join()
        # A few deletions after the last upload too (studies still being analysed).
        for _ in range(min(3, a.deletions)):
            self.delete_one()
        fault_seconds = time.time() - t0
        if not self.o.alive():
            self.start()
        self.verify(fault_seconds)
        self.stop_monitor.set()
        mon.join()

    def settled(self):
        st, s = self.o.get("/unimed/status")
        if st != 200 or s["catching_up"]:
            return None
        q = s["queue"]
        return s if q["queued"] == 0 and q["running"] == 0 and q["waiting_stable"] == 0 else None

    def verify(self, fault_seconds):
        fig = self.fig
        deadline = time.time() + SETTLE_SECONDS
        # I1 within a bounded time: retry failures (a full disk) must clear too.
        while time.time() < deadline:
            s = self.settled()
            if s and not self.retrying():
                break
            time.sleep(1)
        time.sleep(3)  # a StableStudy after the last SR must not add anything
        st, studies = self.o.get("/studies?expand")
        lost, duplicated, final = [], [], {"done": 0, "failed": 0, "skipped": 0}
        reasons = {}
        for sd in studies:
            sid = sd["ID"]
            st, a = self.o.get("/unimed/studies/" + sid)
            srs = self.plugin_srs(sid)
            if st != 200 or a.get("state") not in final:
                lost.append((sid, st, a.get("state") if isinstance(a, dict) else a,
                             sd.get("PatientMainDicomTags", {}).get("PatientID"), len(sd.get("Series", []))))
                self.explain(sid)
                continue
            final[a["state"]] += 1
            if a["state"] in ("failed", "skipped"):
                # The reason without the IDs and numbers that make each one unique.
                reason = re.sub(r"[0-9a-f]{8}(-[0-9a-f]{8}){4}", "<id>", a.get("error", ""))
                reason = re.sub(r"[0-9]+", "#", reason)[:150]
                reasons[a["state"] + ": " + reason] = reasons.get(a["state"] + ": " + reason, 0) + 1
            if a["state"] == "done" and (len(srs) != 1 and self.o.get("/unimed/status")[1]["write_reports"]):
                duplicated.append((sid, len(srs)))
            if a["state"] in ("failed", "skipped") and not a.get("error"):
                fig.fail("I1: study %s is %s without a reason" % (sid, a["state"]))
            if a["state"] == "failed" and "retried" in a.get("error", ""):
                lost.append((sid, st, "failed, still to be retried: " + a["error"]))
        if lost:
            fig.fail("I1: %d studies not final: %s" % (len(lost), lost[:10]))
        if duplicated:
            fig.fail("I1/I5: %d studies with a number of SRs other than one: %s" % (len(duplicated), duplicated[:10]))
        reappeared = []
        ids = {sd["ID"] for sd in studies}
        for sid in self.deleted:
            if sid in ids:
                reappeared.append(sid)
            self.check_gone(sid, "at the end")
        if reappeared:
            fig.fail("I2: %d deleted studies are back in Orthanc: %s" % (len(reappeared), reappeared[:10]))
        # The label lists answer nothing about deleted studies either.
        st, f = self.o.get("/unimed/search?text=" + urllib.parse.quote("chest x-ray") + "&limit=100000")
        back = [x["study_id"] for x in f.get("studies", []) if x["study_id"] in self.deleted]
        if back:
            fig.fail("I2: search lists deleted studies: %s" % back[:10])
        st, f = self.o.get("/unimed/studies?limit=100000")
        back = [x["study_id"] for x in f.get("studies", []) if x["study_id"] in self.deleted]
        if back:
            fig.fail("I2: GET studies lists deleted studies: %s" % back[:10])
        c = fig.c
        print("\n---- figures (seed %d) ----" % self.args.seed)
        print("studies in Orthanc: %d (done %d, failed %d, skipped %d)" % (len(studies), final["done"],
              final["failed"], final["skipped"]))
        for k in sorted(c):
            print("%s: %d" % (k, c[k]))
        for k in sorted(reasons):
            print("  %4d %s" % (reasons[k], k))
        print("lost: %d, duplicated: %d, reappeared: %d" % (len(lost), len(duplicated), len(reappeared)))
        print("peak RSS (sampled): %d MiB (bound %d MiB)" % (self.peak_rss // 1024, RSS_BOUND_MIB))
        print("storage: %s" % ("tmpfs of %d MiB" % self.args.storage_mib if self.tmpfs else "plain folder"))
        print("time under faults: %.0f s" % fault_seconds)

    def explain(self, sid):
        """The plugin's log lines about a study (to diagnose a violation)."""
        try:
            with open(self.o.log_path, errors="replace") as f:
                lines = [l.rstrip() for l in f if sid in l]
        except OSError:
            lines = []
        print("log lines about %s:\n  %s" % (sid, "\n  ".join(lines[-15:]) or "(none)"))

    def retrying(self):
        st, studies = self.o.get("/studies")
        for sid in studies or []:
            st, a = self.o.get("/unimed/studies/" + sid)
            if st == 200 and a.get("state") == "failed" and "retried" in a.get("error", ""):
                return True
        return False

    def plugin_srs(self, sid):
        st, series = self.o.get("/studies/%s/series" % sid)
        if st != 200:
            return []
        out = []
        for s in series:
            t = s["MainDicomTags"]
            if t.get("Modality") == "SR" and t.get("Manufacturer") == "UniMed for Orthanc":
                out.extend(s["Instances"])
        return out

    def cleanup(self):
        self.stop_monitor.set()
        self.expected_down.set()
        try:
            self.o.stop()
        except Exception:
            pass
        if self.tmpfs:
            subprocess.run(["umount", self.storage])
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)
        else:
            print("kept: %s" % self.work)


def main():
    skip_if_sanitizer()
    warnings.filterwarnings("ignore")  # pydicom's notes about the odd sample files
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=int(os.environ.get("UNIMED_FAULT_SEED", "12")))
    ap.add_argument("--soak", action="store_true", help=">= 1000 studies, >= 10 kills, >= 50 deletions")
    ap.add_argument("--studies", type=int)
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    if args.soak:
        defaults = dict(studies=1000, shared=40, kills=12, stops=3, deletions=60, reanalyses=30,
                        fills=3, models=2, storage_mib=256)
    else:
        defaults = dict(studies=60, shared=8, kills=3, stops=1, deletions=8, reanalyses=4,
                        fills=1, models=1, storage_mib=64)
    for k, v in defaults.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    plugin, model = env_paths()
    print("faults_harness: seed %d, %d generated studies, %d kills, %d clean stops, %d deletions"
          % (args.seed, args.studies, args.kills, args.stops, args.deletions), flush=True)
    h = Harness(plugin, model, args)
    try:
        h.run()
    finally:
        h.cleanup()
    if h.fig.errors:
        print("faults_harness: %d invariant violation(s)" % len(h.fig.errors))
        return 1
    print("faults_harness: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
