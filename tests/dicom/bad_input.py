#!/usr/bin/python3
"""Bad input: every case must fail with exit status 1 (never a crash or a
signal), one stderr line that names the file and says why; both through
udcm_open_file (`udcm_dump stored`) and udcm_open_memory (`udcm_dump mem`).

Usage: bad_input.py UDCM_DUMP PYDICOM_TEST_FILES SHARED_DICOM_DIR
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid, JPEG2000Lossless
from pydicom.encaps import encapsulate

failures = []
TMP = tempfile.mkdtemp(prefix="udcm_bad_")


def base(rows=4, cols=4, frames=None, bits=16, ts=ExplicitVRLittleEndian):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ts
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = rows, cols
    if frames is not None:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    return ds


def save(ds, name, implicit=False):
    p = os.path.join(TMP, name)
    ds.is_little_endian, ds.is_implicit_VR = True, implicit
    ds.save_as(p, write_like_original=False)
    return p


def expect_error(label, path, *needles):
    for mode in ("stored", "mem"):
        args = [DUMP, mode, path] + ([os.path.join(TMP, "out.raw")] if mode == "stored" else [])
        r = subprocess.run(args, capture_output=True, text=True, timeout=120)
        msg = r.stderr.strip()
        ok = r.returncode == 1 and msg.startswith(path + ": ") and all(n in msg for n in needles)
        print(("OK   " if ok else "FAIL ") + f"{label} [{mode}] rc={r.returncode}: {msg}")
        if not ok:
            failures.append(f"{label} [{mode}]")


def expect_decodes(label, path):
    """Damaged but decodable: must succeed (or fail cleanly) -- never crash."""
    for mode in ("stored", "mem"):
        args = [DUMP, mode, path] + ([os.path.join(TMP, "out.raw")] if mode == "stored" else [])
        r = subprocess.run(args, capture_output=True, text=True, timeout=120)
        ok = r.returncode == 0
        print(("OK   " if ok else "FAIL ") + f"{label} [{mode}] rc={r.returncode} {r.stderr.strip()}")
        if not ok:
            failures.append(f"{label} [{mode}]")


def main():
    global DUMP
    DUMP = sys.argv[1]
    pyd = sys.argv[2]
    shared = sys.argv[3] if len(sys.argv) > 3 else ""

    # --- real broken files
    expect_error("MR_truncated", os.path.join(pyd, "MR_truncated.dcm"), "Pixel", "8192")
    expect_error("rtplan (not an image)", os.path.join(pyd, "rtplan.dcm"), "not an image")
    expect_error("rtplan_truncated", os.path.join(pyd, "rtplan_truncated.dcm"), "cannot parse")
    expect_error("SR (not an image)", os.path.join(pyd, "test-SR.dcm"), "not an image")
    expect_error("ECG waveform (not an image)", os.path.join(pyd, "waveform_ecg.dcm"), "not an image")
    expect_error("J2K with overwritten codestream bytes",
                 os.path.join(pyd, "JPEG2000-embedded-sequence-delimiter.dcm"), "JPEG 2000")
    expect_error("data set VR disagrees with meta header", os.path.join(pyd, "SC_rgb_jpeg.dcm"), "cannot parse")
    if os.path.isdir(shared):
        expect_error("emri J2K too short",
                     os.path.join(shared, "pydicom-data__emri_small_jpeg_2k_lossless_too_short.dcm"),
                     "Pixel Data")
        expect_error("Enhanced SR (not an image)", os.path.join(shared, "dcmjs__sample-sr.dcm"), "not an image")
        # SeriesTime is 18 bytes (TM allows 16); the pixels are intact: we
        # accept the file, like DCMTK and Orthanc do, and the values must be
        # those of the valid twin.
        inv = os.path.join(shared, "dcmjs__invalid-vr-length-test.dcm")
        expect_decodes("invalid VR length (header only)", inv)
        a, b = os.path.join(TMP, "a.raw"), os.path.join(TMP, "b.raw")
        subprocess.run([DUMP, "stored", inv, a], capture_output=True)
        subprocess.run([DUMP, "stored", os.path.join(shared, "dcmjs__cine-test.dcm"), b], capture_output=True)
        same = open(a, "rb").read() == open(b, "rb").read()
        print(("OK   " if same else "FAIL ") + "invalid VR length: pixels equal to dcmjs__cine-test.dcm")
        if not same:
            failures.append("invalid VR length pixels")
    else:
        print(f"SKIP shared files: {shared} not present")

    # --- built here
    ds = base()
    expect_error("missing Pixel Data", save(ds, "no_pixel_data.dcm"), "not an image", "no Pixel Data")

    ds = base(frames=3)
    ds.PixelData = np.zeros((2, 4, 4), "<u2").tobytes()
    expect_error("frames x rows x columns > data", save(ds, "short_frames.dcm"),
                 "Pixel Data is 64 bytes, expected 96 for 3 frames of 4x4x1 16-bit")

    ds = base(rows=8, cols=8)
    ds.PixelData = np.zeros((4, 4), "<u2").tobytes()
    expect_error("rows x columns > data", save(ds, "short.dcm"), "Pixel Data is 32 bytes, expected 128")

    ds = base(rows=65535, cols=65535, frames=2000000000)
    ds.PixelData = b"\0\0" * 8
    expect_error("absurd dimensions refused by limits", save(ds, "absurd.dcm"), "exceeds the limit")

    ds = base(rows=65535, cols=65535)
    ds.PixelData = b"\0\0" * 8
    expect_error("absurd frame refused by limits", save(ds, "absurd1.dcm"), "exceeds the limit")

    ds = base(rows=0, cols=4)
    ds.PixelData = b"\0\0" * 8
    expect_error("zero rows", save(ds, "zero.dcm"), "invalid image size")

    ds = base(bits=12)
    ds.PixelData = b"\0\0" * 16
    expect_error("bits allocated 12", save(ds, "ba12.dcm"), "Bits Allocated")

    ds = base()
    ds.BitsStored = 20
    ds.PixelData = b"\0\0" * 16
    expect_error("bits stored > allocated", save(ds, "bs20.dcm"), "Bits")

    ds = base()
    ds.PhotometricInterpretation = "RGB"
    ds.PixelData = b"\0\0" * 16
    expect_error("RGB with one sample", save(ds, "rgb1.dcm"), "Samples per Pixel")

    ds = base()
    ds.PhotometricInterpretation = "HSV"
    ds.PixelData = b"\0\0" * 16
    expect_error("retired photometric", save(ds, "hsv.dcm"), "Photometric")

    ds = base()
    ds.NumberOfFrames = 0
    ds.PixelData = b"\0\0" * 16
    expect_error("zero frames", save(ds, "frames0.dcm"), "Number of Frames")

    ds = base(ts=JPEG2000Lossless)
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 60])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    expect_error("garbage J2K codestream", save(ds, "j2k_garbage.dcm"), "JPEG 2000")

    ds = base(ts=JPEG2000Lossless, frames=3)
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 60] * 2)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    expect_error("J2K: fewer codestreams than frames", save(ds, "j2k_frames.dcm"), "JPEG 2000")

    ds = base(ts="1.2.840.10008.1.2.5")
    ds.PixelData = encapsulate([b"\x01\x00\x00\x00" + b"\x00" * 60])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    expect_error("garbage RLE", save(ds, "rle_garbage.dcm"), "cannot decode")

    with open(os.path.join(TMP, "not_dicom.dcm"), "wb") as f:
        f.write(b"hello, this is not DICOM at all" * 10)
    expect_error("not DICOM", os.path.join(TMP, "not_dicom.dcm"))
    with open(os.path.join(TMP, "empty.dcm"), "wb") as f:
        pass
    expect_error("empty file", os.path.join(TMP, "empty.dcm"))

    print(f"\n{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
