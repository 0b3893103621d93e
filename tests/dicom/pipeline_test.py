#!/usr/bin/python3
"""Pixel pipeline unit tests with hand-computed expected values.

Small DICOM objects are built with pydicom in a temporary directory, run
through `udcm_dump rgb`, and the 8-bit output is compared with values worked
out by hand from PS3.3 C.11.2.1.2 (windows), C.7.6.3.1 (colour) and C.7.9
(segmented palettes).  The arithmetic is in the comments.

Usage: pipeline_test.py UDCM_DUMP
"""
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

DUMP = None
TMP = tempfile.mkdtemp(prefix="udcm_pipe_")
failures = []


def make(name, pixels, photometric="MONOCHROME2", modality="MR", bits=16, signed=False, **attrs):
    """pixels: (rows, cols) or (rows, cols, 3) or (frames, rows, cols)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    a = np.asarray(pixels)
    frames = attrs.pop("frames", 1)
    spp = 3 if photometric in ("RGB", "YBR_FULL") else 1
    if frames > 1:
        ds.NumberOfFrames = frames
        rows, cols = a.shape[1], a.shape[2]
    else:
        rows, cols = a.shape[0], a.shape[1]
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = spp
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if signed else 0
    if spp == 3:
        ds.PlanarConfiguration = attrs.pop("planar", 0)
    for k, v in attrs.items():
        setattr(ds, k, v)
    dt = {(8, False): "u1", (16, False): "<u2", (16, True): "<i2"}[(bits, signed)]
    data = a.astype(dt).tobytes()
    if len(data) % 2:
        data += b"\0"
    ds.PixelData = data
    ds["PixelData"].VR = "OB" if bits == 8 else "OW"
    p = os.path.join(TMP, name + ".dcm")
    ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.save_as(p, write_like_original=False)
    return p


def run_rgb(path, frame=0):
    out = path + ".ppm"
    r = subprocess.run([DUMP, "rgb", path, out, str(frame)], capture_output=True, text=True)
    if r.returncode != 0:
        return None, r.stderr.strip()
    with open(out, "rb") as f:
        data = f.read()
    parts = data.split(b"\n", 3)
    w, h = map(int, parts[1].split())
    return np.frombuffer(parts[3], np.uint8).reshape(h, w, 3), ""


def check(name, path, expected, frame=0, grey=True):
    got, err = run_rgb(path, frame)
    if got is None:
        failures.append(f"{name}: {err}")
        print(f"FAIL {name}: {err}")
        return
    exp = np.asarray(expected, dtype=np.int64)
    g = got[..., 0].astype(np.int64) if grey else got.astype(np.int64)
    if grey and not (got[..., 0] == got[..., 1]).all() or grey and not (got[..., 0] == got[..., 2]).all():
        failures.append(f"{name}: grey output has unequal channels")
    if g.shape != exp.shape or not (g == exp).all():
        failures.append(f"{name}: got {g.tolist()} expected {exp.tolist()}")
        print(f"FAIL {name}: got {g.tolist()}\n     expected {exp.tolist()}")
    else:
        print(f"OK   {name}")


def main():
    global DUMP
    DUMP = sys.argv[1]

    # LINEAR, c=20 w=11: x <= 14.5 -> 0, x > 24.5 -> 255,
    # else ((x - 19.5)/10 + 0.5)*255: 15 -> 12.75 -> 13, 17 -> 63.75 -> 64,
    # 19 -> 114.75 -> 115, 20 -> 140.25 -> 140, 22 -> 191.25 -> 191,
    # 24 -> 242.25 -> 242
    v = [[14, 15, 17, 19, 20, 22, 24, 25]]
    lin = [[0, 13, 64, 115, 140, 191, 242, 255]]
    check("window_linear", make("lin", v, WindowCenter=20, WindowWidth=11), lin)
    check("window_linear_explicit", make("lin2", v, WindowCenter=20, WindowWidth=11, VOILUTFunction="LINEAR"), lin)
    # MONOCHROME1: same window, inverted
    check("monochrome1", make("m1", v, photometric="MONOCHROME1", WindowCenter=20, WindowWidth=11),
          [[255 - x for x in lin[0]]])

    # LINEAR_EXACT, c=20 w=10: x <= 15 -> 0, x > 25 -> 255,
    # else ((x-20)/10 + 0.5)*255: 16 -> 25.5 -> 26, 18 -> 76.5 -> 77,
    # 20 -> 127.5 -> 128, 22 -> 178.5 -> 179, 25 -> 255
    check("window_linear_exact",
          make("lex", [[15, 16, 18, 20, 22, 25, 26, 10]], WindowCenter=20, WindowWidth=10,
               VOILUTFunction="LINEAR_EXACT"),
          [[0, 26, 77, 128, 179, 255, 255, 0]])

    # SIGMOID, c=20 w=10: 255/(1+exp(-4(x-20)/10)): 20 -> 127.5 -> 128,
    # 25 -> 255/(1+e^-2) = 224.6 -> 225, 15 -> 255/(1+e^2) = 30.4 -> 30,
    # 30 -> 255/(1+e^-4) = 250.4 -> 250, 0 -> 255/(1+e^8) = 0.086 -> 0
    check("window_sigmoid",
          make("sig", [[20, 25, 15, 30, 0]], WindowCenter=20, WindowWidth=10, VOILUTFunction="SIGMOID"),
          [[128, 225, 30, 250, 0]])

    # Rescale slope 2, intercept -100: stored 50,60,70,100 -> 0,20,40,100;
    # LINEAR c=0 w=101: ((x+0.5)/100 + 0.5)*255: 0 -> 128.775 -> 129,
    # 20 -> 179.775 -> 180, 40 -> 230.775 -> 231, 100 > 49.5 -> 255
    check("rescale",
          make("resc", [[50, 60, 70, 100]], RescaleSlope=2, RescaleIntercept=-100, WindowCenter=0,
               WindowWidth=101),
          [[129, 180, 231, 255]])

    # CT without a window: default c=40 w=400 (LINEAR):
    # x <= -160 -> 0, x > 239 -> 255, else ((x-39.5)/399 + 0.5)*255:
    # -159 -> 0.639 -> 1, 40 -> 127.82 -> 128, 0 -> 102.26 -> 102
    hu = [-1000, -160, -159, 40, 239, 240, 0]
    check("ct_default_window",
          make("ct", [[x + 1024 for x in hu]], modality="CT", RescaleSlope=1, RescaleIntercept=-1024),
          [[0, 0, 1, 128, 255, 255, 102]])
    # signed stored values, same HU, no rescale
    check("ct_default_window_signed", make("cts", [hu], modality="CT", signed=True),
          [[0, 0, 1, 128, 255, 255, 102]])

    # Other modality without a window: 0.5/99.5 percentiles of 0..999
    # (numpy linear): lo = 4.995, hi = 994.005, y = (x-lo)/(hi-lo)*255:
    # 0 -> 0, 100 -> 24.495 -> 24, 500 -> 127.63 -> 128, 999 -> 255
    ramp = np.arange(1000).reshape(10, 100)
    got, err = run_rgb(make("pct", ramp))
    if got is None:
        failures.append("percentiles: " + err)
    else:
        g = got[..., 0].ravel()
        ok = [int(g[0]), int(g[100]), int(g[500]), int(g[999])] == [0, 24, 128, 255]
        print(("OK   " if ok else "FAIL ") + "percentile_default", [int(g[0]), int(g[100]), int(g[500]), int(g[999])])
        if not ok:
            failures.append("percentile_default")

    # VOI LUT Sequence: descriptor (4, 10, 8), data 0,100,200,255; stored
    # 9 (clamped to first) 10 11 12 13 20 (clamped to last);
    # 8-bit entries: y*255/255
    vl = Dataset()
    vl.LUTDescriptor = [4, 10, 8]
    vl.add_new(0x00283006, "US", [0, 100, 200, 255])  # LUT Data
    check("voi_lut_sequence", make("voilut", [[9, 10, 11, 12, 13, 20]], VOILUTSequence=[vl]),
          [[0, 0, 100, 200, 255, 255]])

    # Modality LUT Sequence: descriptor (3, 0, 16), data 0, 1000, 2000;
    # stored 0 1 2 5 -> 0 1000 2000 2000; LINEAR c=1000 w=2001:
    # ((x-999.5)/2000 + 0.5)*255: 0 -> 0.06 -> 0, 1000 -> 127.56 -> 128,
    # 2000 -> 255.06 -> 255
    ml = Dataset()
    ml.LUTDescriptor = [3, 0, 16]
    ml.add_new(0x00283006, "US", [0, 1000, 2000])  # LUT Data
    ml.ModalityLUTType = "US"
    check("modality_lut_sequence",
          make("modlut", [[0, 1, 2, 5]], ModalityLUTSequence=[ml], WindowCenter=1000, WindowWidth=2001),
          [[0, 128, 255, 255]])

    # Enhanced: per-frame Frame VOI LUT (frame 0: c=20 w=11, frame 1:
    # c=100 w=11) and shared Pixel Value Transformation (slope 1, int. 0)
    def fg(c, w):
        it = Dataset()
        v = Dataset()
        v.WindowCenter, v.WindowWidth = c, w
        it.FrameVOILUTSequence = [v]
        return it
    sh = Dataset()
    pvt = Dataset()
    pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = 1, 0, "US"
    sh.PixelValueTransformationSequence = [pvt]
    fr = np.array([v, [[x + 80 for x in v[0]]]])
    p = make("enh", fr, frames=2, PerFrameFunctionalGroupsSequence=[fg(20, 11), fg(100, 11)],
             SharedFunctionalGroupsSequence=[sh])
    check("frame_voi_lut_frame0", p, lin, frame=0)
    check("frame_voi_lut_frame1", p, lin, frame=1)

    # PALETTE COLOR, 16-bit entries, descriptor (4, 10, 16), 8-bit stored;
    # x*255/65535 rounded: 65535 -> 255, 32768 -> 127.502 -> 128,
    # 257 -> 1; 9 clamps to the first entry, 200 to the last
    pal = dict(RedPaletteColorLookupTableDescriptor=[4, 10, 16],
               GreenPaletteColorLookupTableDescriptor=[4, 10, 16],
               BluePaletteColorLookupTableDescriptor=[4, 10, 16],
               RedPaletteColorLookupTableData=struct.pack("<4H", 0, 65535, 32768, 0),
               GreenPaletteColorLookupTableData=struct.pack("<4H", 65535, 0, 32768, 257),
               BluePaletteColorLookupTableData=struct.pack("<4H", 0, 0, 65535, 65535))
    check("palette_16bit", make("pal", [[9, 10, 11, 12, 13, 200]], photometric="PALETTE COLOR", bits=8, **pal),
          [[[0, 255, 0], [0, 255, 0], [255, 0, 0], [128, 128, 255], [0, 1, 255], [0, 1, 255]]], grey=False)

    # Segmented palette (C.7.9.2), descriptor (5, 0, 16):
    #  red:   discrete [0], linear 4 -> 65535: 0 + 65535*k/4 rounded =
    #         16384 (16383.75), 32768 (32767.5, half to even), 49151, 65535
    #         -> 8 bit: 0, 64 (63.75), 128 (127.5), 191 (191.25), 255
    #  green: discrete 5 values 65535 0 65535 0 65535 -> 255 0 255 0 255
    #  blue:  discrete [0, 65535], indirect 1 segment at word 0 (repeats
    #         [0, 65535]), discrete [257] -> 0 255 0 255 1
    def words(*w):
        return struct.pack("<%dH" % len(w), *w)
    seg = dict(RedPaletteColorLookupTableDescriptor=[5, 0, 16],
               GreenPaletteColorLookupTableDescriptor=[5, 0, 16],
               BluePaletteColorLookupTableDescriptor=[5, 0, 16],
               SegmentedRedPaletteColorLookupTableData=words(0, 1, 0, 1, 4, 65535),
               SegmentedGreenPaletteColorLookupTableData=words(0, 5, 65535, 0, 65535, 0, 65535),
               SegmentedBluePaletteColorLookupTableData=words(0, 2, 0, 65535, 2, 1, 0, 0, 0, 1, 257))
    check("palette_segmented", make("seg", [[0, 1, 2, 3, 4]], photometric="PALETTE COLOR", bits=8, **seg),
          [[[0, 255, 0], [64, 0, 255], [128, 255, 0], [191, 0, 255], [255, 255, 1]]], grey=False)

    # YBR_FULL -> RGB (C.7.6.3.1.2):
    #  (128,128,128) -> 128 128 128
    #  (100,150,200): R = 100 + 1.402*72 = 200.94 -> 201,
    #    G = 100 - 0.344136*22 - 0.714136*72 = 41.01 -> 41, B = 100 + 1.772*22 = 138.98 -> 139
    #  (255,0,255): R -> 255 (clamped), G = 255 + 44.05 - 90.70 = 208.35 -> 208,
    #    B = 255 - 226.82 = 28.18 -> 28
    ybr = np.array([[[128, 128, 128], [100, 150, 200], [255, 0, 255]]])
    check("ybr_full", make("ybr", ybr, photometric="YBR_FULL", bits=8),
          [[[128, 128, 128], [201, 41, 139], [255, 208, 28]]], grey=False)

    # RGB, planar configuration 1: planes R | G | B of a 2x2 image
    planes = np.array([[1, 2, 3, 4], [10, 20, 30, 40], [100, 110, 120, 130]], dtype=np.uint8)
    p = make("planar", np.zeros((2, 2, 3)), photometric="RGB", bits=8, planar=1)
    ds = pydicom.dcmread(p)
    ds.PixelData = planes.tobytes()
    ds.save_as(p)
    check("rgb_planar1", p, [[[1, 10, 100], [2, 20, 110]], [[3, 30, 120], [4, 40, 130]]], grey=False)

    # Non-square pixels: Pixel Spacing 1.0\0.5 (rows 1 mm apart, columns
    # 0.5 mm): the vertical axis is scaled up, 4x4 -> 4 wide x 8 high.
    p = make("nonsq", np.full((4, 4), 7), PixelSpacing=[1.0, 0.5], WindowCenter=7, WindowWidth=1)
    got, err = run_rgb(p)
    if got is None and "resampler is not built in" in err:
        print("SKIP non_square: " + err)
    elif got is None:
        failures.append("non_square: " + err)
        print("FAIL non_square: " + err)
    else:
        ok = got.shape == (8, 4, 3)
        print(("OK   " if ok else "FAIL ") + "non_square", got.shape)
        if not ok:
            failures.append(f"non_square: shape {got.shape}")

    print(f"\n{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
