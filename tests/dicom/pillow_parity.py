#!/usr/bin/python3
"""Pillow parity test for dicom/resample.c (UniMed-CLIP preprocessing).

Real DICOM images (pydicom's bundled test files, plus ../shared/data/dicom
when present) are converted to 8-bit with a simple min-max window, written
as raw RGB8 / L8 files, and pushed through both

  * the C implementation (tests/dicom/test_resample.c, "batch" mode), and
  * Pillow: Image.resize(torchvision size, BICUBIC) + torchvision centre crop,
    Image.resize((w2, h2), BICUBIC) for arbitrary sizes,
  * numpy (and torch when importable): ToTensor + Normalize,

and compared.  Synthetic noise images cover the corner cases (1-pixel sides,
extreme aspect ratios, heavy clipping).  Exit status 0 = all within limits.

Usage: pillow_parity.py --bin path/to/test_resample [--shared DIR] [--keep]
"""
import argparse
import glob
import os
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import PIL
from PIL import Image

warnings.simplefilter("ignore")

SIZE = 224
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)

MAX_ABS = 1  # in 8-bit units (1/255)
MEAN_ABS = 0.1  # in 8-bit units (0.1/255)
NORM_TOL = 1e-6

HERE = os.path.dirname(os.path.abspath(__file__))
PYDICOM_FILES = [
    # (file, note)
    "MR_small.dcm",  # 64x64 MR, upscaling
    "CT_small.dcm",  # 128x128 CT
    "JPEG2000.dcm",  # 256 wide x 1024 high, non-square
    "liver_1frame.dcm",  # 512x512 8-bit
    "693_J2KI.dcm",  # 512x512 J2K
    "ExplVR_BigEnd.dcm",  # 80x60 RGB, non-square upscaling
    "GDCMJ2K_TextGBR.dcm",  # 400x400 colour
    "SC_rgb_small_odd.dcm",  # 3x3 RGB
    "SC_rgb_rle.dcm",  # 100x100 RGB
    "SC_jpeg_no_color_transform.dcm",  # 256x256 RGB
    "SC_ybr_full_422_uncompressed.dcm",  # 100x100 YBR_FULL_422
    "rtdose_1frame.dcm",  # 10x10 32-bit dose
]
SHARED_FILES = [
    "pydicom-data__RG3_J2KR.dcm",  # 1760x1760 CR, MONOCHROME1
    "dcmjs__sample-op.dcm",  # 1536x1536 OP
    "pydicom-data__JPGLosslessP14SV1_1s_1f_8b.dcm",  # 1024x768 US
    "pydicom-data__US1_J2KR.dcm",  # 640x480 US colour
    "pydicom-data__OBXXXX1A_rle.dcm",  # 800x600 palette colour
    "pydicom__examples_overlay.dcm",  # 484x300 MR
    "highdicom__dx_image.dcm",  # 211x169 DX, odd sizes, MONOCHROME1
    "pydicom__examples_ybr_color.dcm",  # 320x240 YBR_FULL_422 multi-frame
    "dcmjs__IM-0001-0001.dcm",  # 512x512 MR 16-bit
    "pydicom-data__emri_small.dcm",  # 64x64 multi-frame MR
]


def to_uint8(arr):
    a = np.asarray(arr, dtype=np.float64)
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.uint8)
    return np.clip(np.rint((a - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def load_dicom(path):
    """Return an HxW or HxWx3 uint8 array, or None if it cannot be decoded."""
    import pydicom
    from pydicom.pixel_data_handlers import util

    try:
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array
    except Exception as exc:  # decoder missing, broken file, ...
        print(f"  skip {os.path.basename(path)}: {type(exc).__name__}: {str(exc)[:60]}")
        return None
    pi = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    spp = int(ds.get("SamplesPerPixel", 1))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        arr = arr[frames // 2]
    if pi == "PALETTE COLOR":
        arr = util.apply_color_lut(arr, ds)
    elif spp == 3 and pi in ("YBR_FULL", "YBR_FULL_422"):
        try:
            arr = util.convert_color_space(arr, pi, "RGB")
        except Exception:
            pass
    img = to_uint8(arr)
    if pi == "MONOCHROME1":
        img = 255 - img
    return img


def tv_resize_size(w, h, size):
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    return (new_short, new_long) if w <= h else (new_long, new_short)


def pil_resize_crop(img, size):
    """torchvision Resize(size, BICUBIC) + CenterCrop(size) on a PIL image."""
    w, h = img.size
    nw, nh = tv_resize_size(w, h, size)
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BICUBIC)
    top = int(round((nh - size) / 2.0))
    left = int(round((nw - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def np_normalize(rgb):
    x = rgb.astype(np.float32) / np.float32(255.0)
    x = (x - MEAN) / STD
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def torch_normalize(rgb):
    try:
        import torch
    except Exception:
        return None
    t = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).contiguous()
    t = t.to(dtype=torch.float32).div(255)
    m = torch.as_tensor(MEAN, dtype=torch.float32).view(-1, 1, 1)
    s = torch.as_tensor(STD, dtype=torch.float32).view(-1, 1, 1)
    return t.sub_(m).div_(s).numpy()


class Job:
    def __init__(self, name, kind, arr, params):
        self.name, self.kind, self.arr, self.params = name, kind, arr, params


def build_jobs(images):
    jobs = []
    for name, arr in images:
        grey = arr.ndim == 2
        rgb = np.repeat(arr[:, :, None], 3, axis=2) if grey else arr
        h, w = arr.shape[:2]
        jobs.append(Job(name, "crop", rgb, (SIZE,)))
        if grey:
            jobs.append(Job(name, "crop", arr, (SIZE,)))
        targets = [
            (max(1, w * 3 // 2), h),  # horizontal only (300x200 -> 450x200 style)
            (w, max(1, h // 3)),  # vertical only
            (max(1, w // 3 + 1), max(1, h * 2 + 1)),  # mixed down/up
            (w + 1, max(1, h - 1)),  # near-identity
            (97, 61),  # fixed odd target
        ]
        for w2, h2 in targets:
            jobs.append(Job(name, "resize", rgb, (w2, h2)))
        if grey:
            jobs.append(Job(name, "resize", arr, (max(1, w // 2 + 3), max(1, h * 3 // 2))))
    return jobs


def synthetic_images(rng):
    out = []
    for w, h in [(1, 1), (1, 500), (500, 1), (7, 3), (2000, 13), (13, 2000), (224, 224),
                 (225, 224), (223, 225), (448, 225), (1760, 1760), (1023, 769)]:
        out.append((f"noise{w}x{h}", rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)))
    # hard edges: black/white checkerboard (maximal ringing and clipping)
    yy, xx = np.mgrid[0:301, 0:199]
    cb = (((yy // 3) + (xx // 5)) % 2 * 255).astype(np.uint8)
    out.append(("checker199x301", cb))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="test_resample executable")
    ap.add_argument("--shared", default=os.path.normpath(os.path.join(HERE, "..", "..", "..",
                                                                        "shared", "data", "dicom")))
    ap.add_argument("--keep", action="store_true", help="keep the temp directory")
    args = ap.parse_args()

    import pydicom

    print(f"Pillow {PIL.__version__}, numpy {np.__version__}, pydicom {pydicom.__version__}")
    test_dir = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
    real = []
    for f in PYDICOM_FILES:
        p = os.path.join(test_dir, f)
        if not os.path.exists(p):
            print(f"  skip {f}: not installed")
            continue
        a = load_dicom(p)
        if a is not None:
            real.append((f"pydicom:{f}", a))
    if os.path.isdir(args.shared):
        for f in SHARED_FILES:
            p = os.path.join(args.shared, f)
            if os.path.exists(p):
                a = load_dicom(p)
                if a is not None:
                    real.append((f"shared:{f}", a))
    else:
        print(f"SKIP shared DICOM samples: {args.shared} not found")
    rng = np.random.default_rng(20240601)
    synth = synthetic_images(rng)

    n_real = len(real)
    n_real_colour = sum(1 for _, a in real if a.ndim == 3)
    print(f"{n_real} real images ({n_real_colour} colour), {len(synth)} synthetic")
    if n_real < 10:
        print("FAIL: fewer than 10 real images could be decoded")
        return 1

    jobs = build_jobs(real + synth)
    # explicit non-square resampling of real pixels: 300x200 -> 450x200, 200x300 -> 201x451
    for name, arr in real:
        if arr.shape[0] >= 300 and arr.shape[1] >= 300:
            rgb = np.repeat(arr[:, :, None], 3, axis=2) if arr.ndim == 2 else arr
            sub = np.ascontiguousarray(rgb[:200, :300])
            jobs.append(Job(name + "[:200,:300]", "resize", sub, (450, 200)))
            sub = np.ascontiguousarray(rgb[-300:, -200:])
            jobs.append(Job(name + "[-300:,-200:]", "resize", sub, (201, 451)))
            break
    tmp = tempfile.mkdtemp(prefix="um_resample_")
    lines = []
    for i, j in enumerate(jobs):
        ch = 1 if j.arr.ndim == 2 else 3
        h, w = j.arr.shape[:2]
        j.inp = os.path.join(tmp, f"{i}.in")
        j.out = os.path.join(tmp, f"{i}.out")
        j.arr.tofile(j.inp)
        if j.kind == "crop":
            lines.append(f"crop {ch} {w} {h} {j.params[0]} {j.inp} {j.out}")
        else:
            lines.append(f"resize {ch} {w} {h} {j.params[0]} {j.params[1]} {j.inp} {j.out}")
        if j.kind == "crop" and ch == 3:
            j.norm = os.path.join(tmp, f"{i}.f32")
            lines.append(f"norm {SIZE} {j.out} {j.norm}")
    manifest = os.path.join(tmp, "jobs.txt")
    with open(manifest, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    res = subprocess.run([args.bin, "batch", manifest])
    if res.returncode != 0:
        print("FAIL: C driver failed")
        return 1

    failures = 0
    worst_max, total_diff, total_px = 0, 0, 0
    worst_norm, worst_torch = 0.0, 0.0
    have_torch = None
    print(f"{'image':58s} {'op':22s} {'in':>11s} {'out':>9s} {'max|d|':>6s} {'mean|d|':>9s} {'ndiff':>6s}")
    for j in jobs:
        ch = 1 if j.arr.ndim == 2 else 3
        h, w = j.arr.shape[:2]
        pil = Image.fromarray(j.arr, "L" if ch == 1 else "RGB")
        if j.kind == "crop":
            ref = np.asarray(pil_resize_crop(pil, SIZE))
            op = f"crop{SIZE}{'-L' if ch == 1 else '-RGB'}"
        else:
            ref = np.asarray(pil.resize(j.params, Image.BICUBIC))
            op = f"resize{'-L' if ch == 1 else '-RGB'}"
        got = np.fromfile(j.out, dtype=np.uint8).reshape(ref.shape)
        d = np.abs(got.astype(np.int32) - ref.astype(np.int32))
        mx, mean, nd = int(d.max()), float(d.mean()), int((d != 0).sum())
        worst_max = max(worst_max, mx)
        total_diff += int(d.sum())
        total_px += d.size
        ok = mx <= MAX_ABS and mean <= MEAN_ABS
        extra = ""
        if getattr(j, "norm", None):
            gotn = np.fromfile(j.norm, dtype=np.float32).reshape(3, SIZE, SIZE)
            refn = np_normalize(ref)
            en = float(np.abs(gotn - refn).max())
            worst_norm = max(worst_norm, en)
            extra = f" norm|d|={en:.2e}"
            ok = ok and en <= NORM_TOL
            tn = torch_normalize(ref)
            have_torch = tn is not None
            if tn is not None:
                et = float(np.abs(gotn - tn).max())
                worst_torch = max(worst_torch, et)
                extra += f" torch|d|={et:.2e}"
                ok = ok and et <= NORM_TOL
        out_sz = f"{ref.shape[1]}x{ref.shape[0]}"
        print(f"{j.name[:58]:58s} {op:22s} {w:>5d}x{h:<5d} {out_sz:>9s} {mx:6d} {mean:9.6f} {nd:6d}"
              f"{extra}{'' if ok else '  FAIL'}")
        failures += 0 if ok else 1

    if not args.keep:
        for f in glob.glob(os.path.join(tmp, "*")):
            os.remove(f)
        os.rmdir(tmp)
    else:
        print(f"kept {tmp}")
    torch_s = f", torch max|d| {worst_torch:.2e}" if have_torch else ", torch not available"
    print(f"SUMMARY: {len(jobs)} comparisons on {n_real} real + {len(synth)} synthetic images: "
          f"max|d| {worst_max}/255, mean|d| {total_diff / max(total_px, 1):.6f}/255, "
          f"normalised max|d| {worst_norm:.2e}{torch_s}; "
          f"{'PASS' if failures == 0 else f'FAIL ({failures})'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
