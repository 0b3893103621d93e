#!/usr/bin/python3
"""End-to-end timing of `unimed analyze` on a synthetic 300-slice CT series.

    /usr/bin/python3 bench/ct_end_to_end.py --unimed BUILD/tools/unimed --model DIR
        [--work DIR] [--runs 7] [--threads 2] [--max-slices 8]
        [--variants raw,rle,jpegls] [--slices 300] [--quiet-wait S] [--no-pieces]
        [--json OUT.json]

1. Writes (once, deterministic) a CT series: 300 slices of 512 x 512, 16-bit
   signed (PixelRepresentation 1, RescaleIntercept -1024, slope 1), a phantom
   in Hounsfield units (air -1000, body ellipse 40 with a fat ring -100,
   two lungs -850 with vessels that grow and shrink along z, heart 45,
   aorta 60, vertebra 250-350, ribs 900, a table 200, noise sigma 12),
   ImagePositionPatient /
   ImageOrientationPatient / InstanceNumber / PixelSpacing / SliceThickness /
   window 40/400, CT Image Storage, explicit VR little endian, uncompressed.
   File names are shuffled against InstanceNumber, so the order has to come
   from the headers. Variants: `rle` (DCMTK dcmcrle) and `jpegls` (DCMTK
   dcmcjpls, lossless) of the same files.
2. Warms the label-set embedding cache (--cache WORK/cache) with one run of
   `unimed analyze` (timed and reported as the cold-cache run), then one
   untimed run per variant (page cache).
3. Times --runs processes per variant under /usr/bin/time -v:
   `unimed analyze --model M --max-slices 8 --label-set-dir labelsets
    --cache WORK/cache --threads 2 --sr WORK/out.dcm SERIES_DIR`
   (wall, user, sys, peak RSS, page faults), with /proc/loadavg before each
   and how many CPUs other processes kept busy meanwhile (/proc/stat busy
   time minus the run's own CPU time); --quiet-wait S first waits up to S s
   for a second in which others use < 0.3 CPUs, as bench/run.py does.
4. Phase split from outside:
   * strace -f -ttt -e trace=openat,exit_group (seccomp filter, so untraced
     system calls run at full speed) gives a timeline: start -> the first
     series file opened (process start, model mapping, label sets, cached
     embeddings) -> the last of the 300 header reads (collect) -> the picked
     slices reopened and decoded/preprocessed -> (image tower + scoring +
     SR encoding: no files opened) -> SR file opened -> exit.
   * `unimed inspect` over the 300 files (header reading on its own);
   * `unimed preprocess` of one slice (decode + preprocess), and `unimed
     info` for what a process start alone costs;
   * `unimed bench --runs 5` for the image tower at batch 8.
   (--no-pieces skips these three.)
Prints a summary and writes --json.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def log(msg):
    print("[ct-e2e %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def busy_cpu_s():
    """CPU seconds the whole machine has spent busy so far (/proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")


QUIET = {"max_wait": 0.0, "threshold": 0.3}


def wait_quiet():
    """Waits at most QUIET["max_wait"] s for a second in which other processes
    keep less than QUIET["threshold"] CPUs busy (as bench/run.py does);
    returns whether it found one."""
    t0 = time.time()
    while time.time() - t0 < QUIET["max_wait"]:
        b0, w0 = busy_cpu_s(), time.time()
        time.sleep(1.0)
        if (busy_cpu_s() - b0) / (time.time() - w0) < QUIET["threshold"]:
            return True
    return False


# ---------------------------------------------------------------- phantom

def phantom_slice(k, n, rng, yy, xx):
    """HU image of slice k of n (k = 0 at the top of the chest)."""
    t = k / max(1, n - 1)  # 0 .. 1 along z
    hu = np.full(yy.shape, -1000.0, dtype=np.float32)
    # body: ellipse, a little larger towards the abdomen
    a, b = 175 + 20 * t, 120 + 10 * t
    body = (xx / a) ** 2 + (yy / b) ** 2 <= 1.0
    inner = (xx / (a - 12)) ** 2 + (yy / (b - 12)) ** 2 <= 1.0
    hu[body] = -100.0           # subcutaneous fat
    hu[inner] = 40.0            # soft tissue
    # lungs: present in the upper 80 %, largest in the middle of that range
    if t < 0.8:
        s = np.sin(np.pi * t / 0.8) ** 0.7
        la, lb = 55 * s + 5, 80 * s + 5
        for cx in (-75.0, 75.0):
            lung = ((xx - cx) / la) ** 2 + ((yy + 5) / lb) ** 2 <= 1.0
            hu[lung] = -850.0
            # a few vessels in the lungs
            for dx, dy in ((-15, -20), (10, 25), (20, -40)):
                v = (xx - cx - dx * s) ** 2 + (yy - dy * s) ** 2 <= 9
                hu[v & lung] = 30.0
    # heart (anterior, left) in the lower half of the lung range
    if 0.35 < t < 0.8:
        r = 45 * np.sin(np.pi * (t - 0.35) / 0.45)
        hu[(xx - 20) ** 2 + (yy + 25) ** 2 <= r * r] = 45.0
    # aorta
    hu[(xx - 15) ** 2 + (yy - 55) ** 2 <= 12 ** 2] = 60.0
    # vertebral body + spinal canal
    hu[(xx) ** 2 + (yy - 85) ** 2 <= 20 ** 2] = 350.0
    hu[(xx) ** 2 + (yy - 85) ** 2 <= 14 ** 2] = 250.0  # cancellous
    hu[(xx) ** 2 + (yy - 112) ** 2 <= 7 ** 2] = 20.0   # canal
    # ribs: small dense circles near the body outline, every few slices
    if t < 0.85 and (k // 6) % 2 == 0:
        for ang in np.linspace(0.35, np.pi - 0.35, 8):
            for side in (-1, 1):
                rx = side * (a - 20) * np.cos(ang)
                ry = (b - 20) * np.sin(ang) * (1 if ang < np.pi / 2 else 1)
                hu[(xx - rx) ** 2 + (yy - ry * 0.2 - 20) ** 2 <= 6 ** 2] = 900.0
    # table
    hu[(yy > b + 30) & (yy < b + 38) & (np.abs(xx) < 220)] = 200.0
    hu += rng.normal(0.0, 12.0, size=hu.shape).astype(np.float32)
    return np.clip(hu, -1024, 3071)


def write_series(out_dir, n, seed=0):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    uid = lambda s: generate_uid(prefix=None, entropy_srcs=["unimed-ct-e2e", str(seed), s])
    study, series, frame_of_ref = uid("study"), uid("series"), uid("for")
    ys, xs = np.mgrid[0:512, 0:512].astype(np.float32)
    yy, xx = ys - 255.5, xs - 255.5
    names = rng.permutation(n)
    spacing, thick = 0.9765625, 1.25
    for k in range(n):
        hu = phantom_slice(k, n, rng, yy, xx)
        stored = np.round(hu + 1024.0).astype("<i2")
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_STORAGE
        meta.MediaStorageSOPInstanceUID = uid("sop%d" % k)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CT_STORAGE
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.FrameOfReferenceUID = frame_of_ref
        ds.PatientID, ds.PatientName = "CTE2E", "Phantom^CT"
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "20240101", "120000", "CTE2E1"
        ds.Modality, ds.BodyPartExamined = "CT", "CHEST"
        ds.SeriesNumber, ds.InstanceNumber = 2, k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [-249.51171875, -249.51171875, -10.0 - thick * k]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = -10.0 - thick * k
        ds.SliceThickness = thick
        ds.PixelSpacing = [spacing, spacing]
        ds.KVP, ds.ConvolutionKernel = 120, "STANDARD"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = 512, 512
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.PixelData = stored.tobytes()
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(os.path.join(out_dir, "CT%06d.dcm" % names[k]), write_like_original=False)
    return {"study": study, "series": series}


def convert_series(src, dst, tool, extra):
    os.makedirs(dst, exist_ok=True)
    for name in sorted(os.listdir(src)):
        subprocess.run([tool] + extra + [os.path.join(src, name), os.path.join(dst, name)],
                       check=True)


def ensure_series(work, n, variants):
    dirs = {}
    raw = os.path.join(work, "ct-raw")
    if len([f for f in os.listdir(raw)] if os.path.isdir(raw) else []) != n:
        shutil.rmtree(raw, ignore_errors=True)
        t = time.time()
        write_series(raw, n)
        log("wrote %d slices to %s in %.1fs" % (n, raw, time.time() - t))
    dirs["raw"] = raw
    tools = {"rle": ("dcmcrle", []), "jpegls": ("dcmcjpls", [])}
    for v in variants:
        if v == "raw":
            continue
        d = os.path.join(work, "ct-" + v)
        if not os.path.isdir(d) or len(os.listdir(d)) != n:
            shutil.rmtree(d, ignore_errors=True)
            t = time.time()
            convert_series(raw, d, *tools[v])
            log("converted to %s in %.1fs" % (v, time.time() - t))
        dirs[v] = d
    return {v: dirs[v] for v in variants}


def dir_bytes(d):
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))


# ---------------------------------------------------------------- timing

TIME_FIELDS = {
    "wall": "Elapsed (wall clock) time",
    "user": "User time (seconds)",
    "sys": "System time (seconds)",
    "rss_kb": "Maximum resident set size (kbytes)",
    "minor_faults": "Minor (reclaiming a frame) page faults",
    "major_faults": "Major (requiring I/O) page faults",
    "cpu_pct": "Percent of CPU this job got",
}


def parse_time_v(text):
    out = {}
    for key, label in TIME_FIELDS.items():
        m = re.search(re.escape(label) + r".*?:\s*(\S+)\s*$", text, re.M)
        if not m:
            continue
        v = m.group(1)
        if key == "wall":
            parts = [float(p) for p in v.split(":")]
            s = 0.0
            for p in parts:
                s = s * 60 + p
            out[key] = s
        elif key == "cpu_pct":
            out[key] = float(v.rstrip("%") or 0)
        else:
            out[key] = float(v)
    return out


def timed(cmd, env=None):
    """Runs cmd under /usr/bin/time -v; returns (wall by perf_counter, time -v fields, stdout)."""
    quiet = wait_quiet() if QUIET["max_wait"] > 0 else None
    la = loadavg()
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        b0 = busy_cpu_s()
        t = time.perf_counter()
        p = subprocess.run(["/usr/bin/time", "-v", "-o", tf.name] + cmd, capture_output=True,
                           text=True, env=env)
        wall = time.perf_counter() - t
        busy = busy_cpu_s() - b0
        info = parse_time_v(tf.read())
    info["quiet_before"] = quiet
    # CPUs that other processes kept busy meanwhile (machine busy - ours)
    info["others_cpus"] = max(0.0, busy - info.get("user", 0) - info.get("sys", 0)) / wall
    if p.returncode != 0:
        raise SystemExit("failed (%d): %s\n%s" % (p.returncode, " ".join(cmd), p.stderr))
    info["wall_pc"] = wall
    info["loadavg_before"] = la
    return info, p.stdout


def stats(xs):
    xs = sorted(xs)
    return {"min": xs[0], "median": statistics.median(xs), "max": xs[-1], "n": len(xs)}


def fmt(s, scale=1.0, digits=2):
    f = "%%.%df" % digits
    return " / ".join(f % (s[k] * scale) for k in ("min", "median", "max"))


def strace_timeline(cmd, series_dir, sr_path):
    """Phase boundaries (seconds from the exec) from the openat timeline."""
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as tf:
        p = subprocess.run(["strace", "-f", "-ttt", "--seccomp-bpf", "-e",
                            "trace=execve,openat,exit_group", "-o", tf.name] + cmd,
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit("strace run failed: %s" % p.stderr[-2000:])
        lines = tf.read().splitlines()
    t0 = None
    series_opens, sr_open, end, cache_opens, model_open = [], None, None, [], None
    for ln in lines:
        m = re.match(r"(\d+)\s+(\d+\.\d+)\s+(\w+)\((.*)", ln)
        if not m:
            continue
        t, call, rest = float(m.group(2)), m.group(3), m.group(4)
        if t0 is None:
            t0 = t
        if call == "openat":
            pm = re.search(r'"([^"]*)"', rest)
            path = pm.group(1) if pm else ""
            if path.startswith(series_dir + "/") and "ENOENT" not in rest:
                series_opens.append((t - t0, path))
            elif path == sr_path:
                sr_open = t - t0
            elif path.endswith("model.safetensors"):
                model_open = t - t0
            elif "/cache/" in path:
                cache_opens.append(t - t0)
        elif call == "exit_group":
            end = t - t0
    # Every file is opened twice while its header is read (probe, then parse);
    # each picked slice is opened again (three times) to decode it; after the
    # image tower the SR writer opens the series' first instance for its
    # patient/study attributes. The image tower opens nothing, so the largest
    # gap between reopens separates decoding from the SR.
    seen, reopen = set(), []
    for t, path in series_opens:
        if path in seen:
            reopen.append((t, path))
        else:
            seen.add(path)
    out = {"exec_to_first_series_open": series_opens[0][0] if series_opens else None,
           "model_open": model_open, "cache_files": len(cache_opens),
           "n_header_files": len(seen), "exit": end, "sr_open": sr_open}
    if len(reopen) >= 2:
        gaps = [(reopen[i + 1][0] - reopen[i][0], i) for i in range(len(reopen) - 1)]
        gmax, gi = max(gaps)
        pre, post = reopen[:gi + 1], reopen[gi + 1:]
        picked = []
        for t, path in pre:
            if path not in picked:
                picked.append(path)
        first_of = [min(t for t, p in pre if p == q) for q in picked]
        per_slice = ((first_of[-1] - first_of[0]) / (len(picked) - 1)) if len(picked) > 1 else 0
        decode_start = first_of[0]
        decode_end = first_of[-1] + per_slice  # the last slice takes about as long as the others
        out.update({
            "startup": series_opens[0][0],
            "collect": decode_start - series_opens[0][0],
            "decode_preprocess": decode_end - decode_start,
            "n_picked": len(picked),
            "tower_scoring": post[0][0] - decode_end if post else None,
            "sr_build": (sr_open - post[0][0]) if (post and sr_open) else None,
            "sr_write_exit": (end - sr_open) if (end and sr_open) else None,
        })
    return out


PHASES = ("startup", "collect", "decode_preprocess", "tower_scoring", "sr_build",
          "sr_write_exit", "exit")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--unimed", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--work", default="/tmp/unimed-ct-e2e")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-slices", type=int, default=8)
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--variants", default="raw,rle,jpegls")
    ap.add_argument("--labelsets", default=os.path.join(ROOT, "labelsets"))
    ap.add_argument("--strace-runs", type=int, default=3)
    ap.add_argument("--quiet-wait", type=float, default=0.0,
                    help="before each timed run, wait up to this many s for a second in which "
                         "other processes keep < 0.3 CPUs busy")
    ap.add_argument("--no-pieces", action="store_true",
                    help="skip the separate inspect / preprocess / bench measurements")
    ap.add_argument("--json")
    a = ap.parse_args()
    QUIET["max_wait"] = a.quiet_wait
    variants = [v for v in a.variants.split(",") if v]
    os.makedirs(a.work, exist_ok=True)
    dirs = ensure_series(a.work, a.slices, variants)
    cache = os.path.join(a.work, "cache")
    sr = os.path.join(a.work, "out.dcm")
    U = os.path.abspath(a.unimed)
    res = {"commit": subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                    capture_output=True, text=True).stdout.strip(),
           "cpu": open("/proc/cpuinfo").read().count("processor\t:"),
           "series_bytes": {v: dir_bytes(d) for v, d in dirs.items()},
           "loadavg_start": loadavg(), "variants": {}}

    def analyze_cmd(d):
        return [U, "analyze", "--model", a.model, "--max-slices", str(a.max_slices),
                "--label-set-dir", a.labelsets, "--cache", cache, "--threads", str(a.threads),
                "--sr", sr, d]

    # cold label-set cache: one run, reported separately
    cold = None
    if not os.path.isdir(cache) or not os.listdir(cache):
        log("warming the label-set cache in %s" % cache)
        cold, out = timed(analyze_cmd(dirs[variants[0]]))
        res["cold_cache_run"] = cold
    else:
        log("label-set cache %s already warm (%d files)" % (cache, len(os.listdir(cache))))
    res["cache_files"] = sorted(os.listdir(cache))
    findings = None
    for v, d in dirs.items():
        timed(analyze_cmd(d))  # page cache warm-up
        runs = []
        for r in range(a.runs):
            info, out = timed(analyze_cmd(d))
            runs.append(info)
            log("%s run %d: %.2fs wall, %.2f user, %.2f sys, %d MB, load %s, others kept %.1f "
                "CPUs busy%s" % (v, r, info["wall_pc"], info["user"], info["sys"],
                                 info["rss_kb"] / 1024, info["loadavg_before"],
                                 info["others_cpus"],
                                 {None: "", True: " (quiet before)",
                                  False: " (no quiet second found)"}[info["quiet_before"]]))
            findings = out
        tl = [strace_timeline(analyze_cmd(d), d, sr) for _ in range(a.strace_runs)]
        res["variants"][v] = {"runs": runs, "timeline": tl,
                              "phases": {k: stats([t[k] for t in tl if t.get(k) is not None])
                                         for k in PHASES if any(t.get(k) is not None for t in tl)},
                              "wall": stats([r["wall_pc"] for r in runs]),
                              "cpu": stats([r["user"] + r["sys"] for r in runs]),
                              "rss_mb": max(r["rss_kb"] for r in runs) / 1024,
                              "others_cpus": stats([r["others_cpus"] for r in runs]),
                              "loadavg": [r["loadavg_before"] for r in runs],
                              "minor_faults": stats([r["minor_faults"] for r in runs])}
    try:
        res["findings_example"] = json.loads(findings.splitlines()[0])
    except (ValueError, AttributeError, IndexError):
        pass

    # ---- pieces measured on their own
    raw = dirs[variants[0]]
    files = sorted(os.path.join(raw, f) for f in os.listdir(raw))
    pieces, bench_lines = {}, []
    if not a.no_pieces:
        pieces["inspect_300"] = stats([timed([U, "inspect"] + files)[0]["wall_pc"]
                                       for _ in range(5)])
        pieces["info_process"] = stats([timed([U, "info", "--model", a.model])[0]["wall_pc"]
                                        for _ in range(5)])
        for v, d in dirs.items():
            one = os.path.join(d, sorted(os.listdir(d))[len(os.listdir(d)) // 2])
            pieces["preprocess_one_" + v] = stats([
                timed([U, "preprocess", "--model", a.model, one, "--out",
                       os.path.join(a.work, "slice.f32")])[0]["wall_pc"] for _ in range(5)])
        for _ in range(3):
            info, out = timed([U, "bench", "--model", a.model, "--runs", "5",
                               "--threads", str(a.threads)])
            bench_lines.append(out)
    res["bench_out"] = bench_lines
    res["pieces"] = pieces
    res["loadavg_end"] = loadavg()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    # ---- summary
    print("load average at start %s, at end %s" % (res["loadavg_start"], res["loadavg_end"]))
    if cold:
        print("cold label-set cache run: %.2f s wall" % cold["wall_pc"])
    for v, r in res["variants"].items():
        print("%-7s %5.1f MB on disk: wall %s s, CPU %s s, peak RSS %.0f MB, minor faults %s; "
              "other processes kept %s CPUs busy; 1-min load before runs %s" % (
                  v, res["series_bytes"][v] / 1e6, fmt(r["wall"]), fmt(r["cpu"]), r["rss_mb"],
                  fmt(r["minor_faults"], digits=0), fmt(r["others_cpus"], digits=1),
                  "/".join(x.split()[0] for x in r["loadavg"])))
        for k in PHASES:
            xs = [t[k] for t in r["timeline"] if t.get(k) is not None]
            if xs:
                print("   %-18s %s s (strace runs)" % (k, fmt(stats(xs), digits=3)))
    for k, s in pieces.items():
        print("%-22s %s s" % (k, fmt(s, digits=3)))
    for out in bench_lines:
        print("bench: " + out.strip().replace("\n", " | "))


if __name__ == "__main__":
    main()
