#!/usr/bin/python3
"""Decode parity: unimed_dicom's stored values vs an independent decoder.

For every DICOM file in the given directories: objects without Pixel Data are
skipped (listed), deliberately broken files are skipped here (they are the
bad-input test's business), every other file is decoded by `udcm_dump stored`
(all frames) and by GDCM (python3-gdcm; pydicom's own numpy/RLE handlers when
GDCM cannot), and the stored values are compared:

  * lossless transfer syntaxes and uncompressed data: identical;
  * lossy JPEG (baseline/extended, JPEG-LS near-lossless): |delta| <= 1;
  * lossy JPEG 2000: identical (both sides run OpenJPEG; any difference would
    be a bug in the glue, not codec noise).

Normalisations of the reference (the reference decoders make other, equally
valid, choices):
  * BitsStored masking and sign extension per the dataset header (GDCM gives
    the raw cells);
  * planar configuration 1 -> interleaved;
  * DCMTK's JPEG codec converts YCbCr to RGB (libjpeg's integer JFIF
    transform) while GDCM keeps YCbCr: the GDCM values are converted with the
    same integer transform before comparing.

Usage: parity.py UDCM_DUMP DIR [DIR...]   (a missing DIR prints a skip line)
Exit 0 when every compared file is within tolerance.
"""
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import pydicom

# Deliberately broken inputs, exercised by bad_input.py instead.
BROKEN = {
    "MR_truncated.dcm": "Pixel Data truncated",
    "pydicom-data__emri_small_jpeg_2k_lossless_too_short.dcm": "final delimiter missing; compared with its twin there",
    "dcmjs__invalid-vr-length-test.dcm": "invalid VR length",
    "rtplan_truncated.dcm": "truncated non-image",
    "JPEG2000-embedded-sequence-delimiter.dcm": "codestream bytes deliberately overwritten",
    "SC_rgb_jpeg.dcm": "data set in implicit VR while the meta header says explicit",
}

LOSSY_JPEG = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81"}
LOSSY_J2K = {"1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.93"}


def ijg_ycc_to_rgb(a):
    """libjpeg jdcolor.c ycc_rgb_convert, 8-bit, exact integer arithmetic."""
    a = a.astype(np.int64)
    y, cb, cr = a[..., 0], a[..., 1] - 128, a[..., 2] - 128

    def fix(x):
        return int(x * 65536 + 0.5)

    half = 1 << 15
    r = y + ((fix(1.40200) * cr + half) >> 16)
    g = y + ((-fix(0.34414) * cb - fix(0.71414) * cr + half) >> 16)
    b = y + ((fix(1.77200) * cb + half) >> 16)
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255)


def gdcm_reference(path, ds):
    import gdcm
    r = gdcm.ImageReader()
    r.SetFileName(path)
    if not r.Read():
        raise RuntimeError("gdcm cannot read")
    im = r.GetImage()
    pf = im.GetPixelFormat()
    st = pf.GetScalarTypeAsString()
    dt = {"UINT8": np.uint8, "INT8": np.int8, "UINT16": np.uint16, "INT16": np.int16,
          "UINT32": np.uint32, "INT32": np.int32}.get(st)
    if dt is None:
        raise RuntimeError("gdcm scalar type " + st)
    buf = im.GetBuffer().encode("utf-8", "surrogateescape")
    a = np.frombuffer(buf, dtype=dt).astype(np.int64)
    pi = im.GetPhotometricInterpretation().GetString().strip()
    return a, pi, im.GetPlanarConfiguration()


def pydicom_reference(path, ds):
    a = ds.pixel_array
    return a.astype(np.int64).ravel(), str(ds.PhotometricInterpretation), 0


def mask_sign(a, bits_stored, high_bit, pixrep):
    shift = high_bit + 1 - bits_stored
    m = (1 << bits_stored) - 1
    a = (a.astype(np.int64) & ((1 << 32) - 1)) >> shift & m
    if pixrep == 1:
        a = np.where(a & (1 << (bits_stored - 1)), a - (1 << bits_stored), a)
    return a


def ref_child(which, path, out):
    ds = pydicom.dcmread(path, force=True)
    fn = gdcm_reference if which == "gdcm" else pydicom_reference
    a, pi, pc = fn(path, ds)
    np.save(out, a)
    print(pi, pc)
    return 0


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--ref":
        return ref_child(*sys.argv[2:])
    if len(sys.argv) < 3:
        print(__doc__)
        return 2
    dump = sys.argv[1]
    files = []
    for d in sys.argv[2:]:
        if not os.path.isdir(d):
            print(f"SKIP directory {d}: not present")
            continue
        for n in sorted(os.listdir(d)):
            p = os.path.join(d, n)
            if os.path.isfile(p) and n.endswith(".dcm"):
                files.append(p)
    fails, skipped, compared = [], [], []
    tsyntaxes, photometrics = set(), set()
    maxd = {"lossless": 0, "jpeg-lossy": 0, "j2k-lossy": 0}
    tmp = tempfile.mkdtemp(prefix="udcm_parity_")
    for p in files:
        n = os.path.basename(p)
        if n in BROKEN:
            skipped.append((n, "broken input (" + BROKEN[n] + "), see dicom_bad_input"))
            continue
        try:
            ds = pydicom.dcmread(p, force=True)
        except Exception as e:  # noqa: BLE001
            skipped.append((n, f"pydicom cannot read: {e}"))
            continue
        if "PixelData" not in ds:
            skipped.append((n, "no Pixel Data (SOP class %s)" % getattr(ds, "SOPClassUID", "?")))
            continue
        if not ds.get("Rows") or not ds.get("Columns"):
            skipped.append((n, "Pixel Data without Rows/Columns: not an image"))
            continue
        out = os.path.join(tmp, n + ".raw")
        ts = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""
        r = subprocess.run([dump, "stored", p, out], capture_output=True, text=True)
        if r.returncode != 0:
            fails.append((n, "udcm: " + r.stderr.strip()))
            continue
        kv = dict(re.findall(r"(\w+)=(.*?)(?= \w+=|$)", r.stdout.strip()))
        ts = kv["ts"]
        ours = np.fromfile(out, dtype="<i4").astype(np.int64)
        ref = None
        why = []
        # pydicom's RLE handler is the reference for RLE (GDCM 3.0.21 orders
        # the byte segments of 16/32-bit colour RLE differently from
        # PS3.5 G.2, which pydicom and DCMTK follow) and for Explicit VR Big
        # Endian (GDCM swaps 32-bit OW cells as 16-bit words; pydicom and the
        # little-endian copies of the same files agree with us); GDCM for the
        # rest.
        pyfirst = ("1.2.840.10008.1.2.5", "1.2.840.10008.1.2.2")
        order = ("pydicom", "gdcm") if ts in pyfirst else ("gdcm", "pydicom")
        for refname in order:
            # in a child process: GDCM aborts (assert) on some inputs
            rp = os.path.join(tmp, n + "." + refname + ".npy")
            c = subprocess.run([sys.executable, __file__, "--ref", refname, p, rp],
                               capture_output=True, text=True)
            if c.returncode == 0 and os.path.exists(rp):
                rpi, rpc = c.stdout.strip().rsplit(" ", 1)
                ref = (np.load(rp), rpi, int(rpc))
                break
            why.append(f"{refname}: " + (c.stderr.strip().splitlines() or ["exit %d" % c.returncode])[-1])
        if ref is None:
            fails.append((n, "no reference decoder: " + "; ".join(why)))
            continue
        a, rpi, rpc = ref
        rows, cols, frames, spp = int(kv["rows"]), int(kv["columns"]), int(kv["frames"]), int(kv["spp"])
        if a.size != ours.size:
            fails.append((n, f"size differs: ours {ours.size}, {refname} {a.size}"))
            continue
        if spp == 3 and rpc == 1:
            a = a.reshape(frames, 3, rows * cols).transpose(0, 2, 1).ravel()
        bs = int(ds.BitsStored)
        hb = int(getattr(ds, "HighBit", bs - 1))
        pr = int(getattr(ds, "PixelRepresentation", 0))
        a = mask_sign(a, bs, hb, pr)
        if spp == 3 and kv["pi"] == "RGB" and rpi in ("YBR_FULL", "YBR_FULL_422"):
            a = ijg_ycc_to_rgb(a.reshape(-1, 3)).ravel()
        if bs == 32 and pr == 0:
            ours = ours & 0xFFFFFFFF
        d = int(np.abs(a - ours).max()) if a.size else 0
        if ts in LOSSY_JPEG:
            kind, tol = "jpeg-lossy", 1
        elif ts in LOSSY_J2K:
            kind, tol = "j2k-lossy", 0
        else:
            kind, tol = "lossless", 0
        maxd[kind] = max(maxd[kind], d)
        tsyntaxes.add(ts + " " + pydicom.uid.UID(ts).name)
        photometrics.add(kv["stored_pi"])
        line = f"{n}: {ts} {kv['stored_pi']} {cols}x{rows}x{spp} frames={frames} vs {refname}: max|d|={d}"
        if d > tol:
            fails.append((n, line + f" > {tol}"))
        else:
            compared.append(line)
    for c in compared:
        print("OK  ", c)
    for n, why in skipped:
        print("SKIP", n + ":", why)
    for n, why in fails:
        print("FAIL", n + ":", why)
    print(f"\nsummary: {len(files)} files, {len(compared)} compared, {len(skipped)} skipped, {len(fails)} failed")
    print("transfer syntaxes:", len(tsyntaxes))
    for t in sorted(tsyntaxes):
        print("   ", t)
    print("photometric interpretations:", ", ".join(sorted(photometrics)))
    print("max |delta|: " + ", ".join(f"{k}={v}" for k, v in maxd.items()))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
