#!/usr/bin/python3
"""The real-world corpus: every file of ../shared/data/dicom-realworld/
(MANIFEST.tsv) through `unimed inspect`, the decoder (`udcm_dump stored`)
and the pixel pipeline (`udcm_dump rgb`) -- every frame of files with up to
4 frames, else the first, middle and last -- and `unimed preprocess` (frame
0, small reference model).  The outcome is compared with the table
realworld_corpus.tsv kept beside this script:

  decoded   every frame decodes; `reference` names the independent decoder
            the stored values are compared with: gdcm or pydicom (with the
            normalisations of parity.py), pillow (each frame's JPEG stream
            decoded by Pillow, placed top-left in Rows x Columns: GDCM
            misplaces whole-slide edge tiles), twin:FILE (another corpus file
            holding the same pixels, e.g. the RLE copy of a JPEG-LS file GDCM
            misreads), or none (no reference decodes the file; the reason is
            in `detail`); `detail` is `exact`, or `max1` for lossy JPEG;
  refused   opening or decoding fails with a message containing `detail`;
  no-image  the file is read, and is no image (`detail` in the reason).

A change of behaviour on any file -- a new refusal, a new decode, another
reason, a parity difference, a crash or a hang -- fails the test.

usage: corpus_test.py UDCM_DUMP UNIMED MODEL_DIR CORPUS_DIR TABLE [--write FILE]
Exit 77 (skipped, with the reason printed) when CORPUS_DIR is absent.
"""
import csv
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import parity  # noqa: E402  (normalisations of the reference decoders)

LOSSY_JPEG = parity.LOSSY_JPEG


def run(args, timeout=120):
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(args, -999, "", "timeout after %ds (hang)" % timeout)


def frames_to_try(n):
    return list(range(n)) if n <= 4 else sorted({0, n // 2, n - 1})


def pillow_frames(path, nframes, rows, cols):
    """Each frame's JPEG stream decoded by Pillow, top-left in rows x cols."""
    import io
    import pydicom
    from PIL import Image
    from pydicom.encaps import generate_pixel_data_frame
    ds = pydicom.dcmread(path)
    out = []
    for data in generate_pixel_data_frame(ds.PixelData, nframes):
        im = Image.open(io.BytesIO(data))
        a = np.asarray(im.convert("RGB") if im.mode not in ("L", "I;16", "I") else im).astype(np.int64)
        full = np.zeros((rows, cols) + a.shape[2:], dtype=np.int64)
        full[:a.shape[0], :a.shape[1]] = a
        out.append(full.ravel())
    return np.concatenate(out)


def reference(path, tmp, ts, declared=None, dump=None):
    """(values, photometric, planar configuration, decoder) or (None, why)."""
    if declared and declared.startswith("twin:"):
        twin = os.path.join(os.path.dirname(path), declared[5:])
        out = os.path.join(tmp, "twin.raw")
        d = run([dump, "stored", twin, out])
        if d.returncode != 0:
            return None, "twin: " + d.stderr.strip()
        kv = dict(re.findall(r"(\w+)=(.*?)(?= \w+=|$)", d.stdout.strip()))
        return (np.fromfile(out, dtype="<i4").astype(np.int64), kv["pi"], 0, declared), ""
    if declared == "pillow":
        import pydicom
        ds = pydicom.dcmread(path)
        return (pillow_frames(path, int(ds.get("NumberOfFrames") or 1), int(ds.Rows), int(ds.Columns)), "RGB", 0,
                "pillow"), ""
    order = ("pydicom", "gdcm") if ts in ("1.2.840.10008.1.2.5", "1.2.840.10008.1.2.2") else ("gdcm", "pydicom")
    if declared in ("gdcm", "pydicom"):
        order = (declared,)
    why = []
    for name in order:
        out = os.path.join(tmp, os.path.basename(path) + "." + name + ".npy")
        c = run([sys.executable, parity.__file__, "--ref", name, path, out], timeout=300)
        if c.returncode == 0 and os.path.exists(out):
            pi, pc = c.stdout.strip().rsplit(" ", 1)
            return (np.load(out), pi, int(pc), name), ""
        why.append(f"{name}: " + (c.stderr.strip().splitlines() or ["exit %d" % c.returncode])[-1][:120])
    return None, "; ".join(why)


def check_file(dump, unimed, model, path, tmp, declared=None):
    """Returns (outcome, reference, detail) as the table writes them."""
    n = os.path.basename(path)
    r = run([unimed, "inspect", path])
    if r.returncode < 0 or r.returncode == -999:
        return "crash", "", f"inspect rc={r.returncode} {r.stderr.strip()}"
    if r.returncode != 0:
        msg = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"rc={r.returncode}"
        return "refused", "", msg.split(n + ": ", 1)[-1]
    info = json.loads(r.stdout)
    if not info.get("image"):
        d = run([dump, "stored", path, os.path.join(tmp, "x.raw")])
        return "no-image", "", d.stderr.strip().split(n + ": ", 1)[-1]
    nframes = int(info.get("frames") or 1)
    outs = []
    kv = {}
    for f in frames_to_try(nframes):
        raw = os.path.join(tmp, f"{n}.{f}.raw")
        d = run([dump, "stored", path, raw, str(f)])
        if d.returncode != 0:
            kind = "crash" if d.returncode < 0 or d.returncode == -999 else "refused"
            return kind, "", d.stderr.strip().split(n + ": ", 1)[-1]
        kv = dict(re.findall(r"(\w+)=(.*?)(?= \w+=|$)", d.stdout.strip()))
        outs.append((f, np.fromfile(raw, dtype="<i4").astype(np.int64)))
        g = run([dump, "rgb", path, os.path.join(tmp, f"{n}.{f}.ppm"), str(f)])
        if g.returncode != 0:
            kind = "crash" if g.returncode < 0 or g.returncode == -999 else "refused"
            return kind, "", "pipeline: " + g.stderr.strip().split(n + ": ", 1)[-1]
    if os.path.isfile(os.path.join(model, "config.json")):
        p = run([unimed, "preprocess", "--model", model, path, "--out", os.path.join(tmp, "t.f32")])
        if p.returncode != 0:
            return "refused", "", "preprocess: " + p.stderr.strip()
    ts = kv.get("ts", "")
    if declared == "none":
        return "decoded", "none", ""
    ref, why = reference(path, tmp, ts, declared, dump)
    if ref is None:
        return "decoded", "none", "no reference decodes it (" + why + ")"
    a, rpi, rpc, refname = ref
    # header values as read by `unimed inspect` (pydicom cannot read every file)
    bs, hb, pr = int(info["bits_stored"]), int(info["high_bit"]), int(info["pixel_representation"])
    rows, cols, spp = int(kv["rows"]), int(kv["columns"]), int(kv["spp"])
    per = rows * cols * spp
    if a.size != per * nframes:
        return "decoded", refname, f"reference size {a.size} != {per} x {nframes} frames"
    worst = 0
    for f, ours in outs:
        b = a[f * per:(f + 1) * per]
        if spp == 3 and rpc == 1:
            b = b.reshape(3, rows * cols).T.ravel()
        b = parity.mask_sign(b, bs, hb, pr)
        if spp == 3 and kv["pi"] == "RGB" and rpi in ("YBR_FULL", "YBR_FULL_422"):
            b = parity.ijg_ycc_to_rgb(b.reshape(-1, 3)).ravel()
        if bs == 32 and pr == 0:
            ours = ours & 0xFFFFFFFF
        worst = max(worst, int(np.abs(b - ours).max()) if b.size else 0)
    if worst == 0:
        return "decoded", refname, "exact"
    if worst <= 1 and ts in LOSSY_JPEG:
        return "decoded", refname, "max1"
    return "decoded", refname, f"max|d|={worst}"


def matches(expected, got):
    eo, er, ed = expected
    go, gr, gd = got
    if eo != go:
        return False
    if eo == "decoded":
        if er == "none":
            return gr == "none"  # decodes; no reference to compare with (why: the table)
        return er == gr and ed == gd
    return ed in gd


def main():
    if len(sys.argv) < 6:
        print(__doc__)
        return 2
    dump, unimed, model, corpus, table = sys.argv[1:6]
    write = sys.argv[7] if len(sys.argv) > 7 and sys.argv[6] == "--write" else None
    manifest = os.path.join(corpus, "MANIFEST.tsv")
    if not os.path.isfile(manifest):
        print(f"SKIP: the real-world corpus is not present ({manifest} missing)")
        return 77
    if not os.path.isfile(os.path.join(model, "config.json")):
        print(f"note: no model in {model}: `unimed preprocess` is not run")
    with open(manifest) as f:
        files = [row["file"] for row in csv.DictReader(f, delimiter="\t")]
    expected = {}
    if os.path.isfile(table):
        with open(table) as f:
            for line in f:
                if line.startswith("#") or not line.strip():
                    continue
                parts = line.rstrip("\n").split("\t")
                expected[parts[0]] = tuple((parts + ["", "", ""])[1:4])
    tmp = tempfile.mkdtemp(prefix="udcm_corpus_")
    fails, rows = [], []
    counts = {}
    for n in files:
        exp = expected.get(n)
        declared = exp[1] if exp and exp[0] == "decoded" else None
        got = check_file(dump, unimed, model, os.path.join(corpus, n), tmp, declared)
        if declared == "none" and got[0] == "decoded":
            got = (got[0], got[1], exp[2])
        rows.append((n,) + got)
        counts[got[0]] = counts.get(got[0], 0) + 1
        ok = got[0] != "crash" and exp is not None and matches(exp, got)
        print(("ok   " if ok else "FAIL ") + f"{n}: {got[0]} {got[1]} {got[2]}"
              + ("" if ok else f"  (table: {exp})"))
        if not ok:
            fails.append(n)
        for stale in os.listdir(tmp):
            os.unlink(os.path.join(tmp, stale))
    if write:
        with open(write, "w") as f:
            f.write("# file\toutcome\treference\tdetail (see corpus_test.py)\n")
            for r in rows:
                f.write("\t".join(r) + "\n")
    print("\nsummary: %d files: %s; %d differ from the table" %
          (len(files), ", ".join(f"{v} {k}" for k, v in sorted(counts.items())), len(fails)))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
