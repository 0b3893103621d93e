#!/usr/bin/python3
"""Bad input: every case must fail with exit status 1 (never a crash or a
signal), one stderr line that names the file and says why; both through
udcm_open_file (`udcm_dump stored`) and udcm_open_memory (`udcm_dump mem`).

Usage: bad_input.py UDCM_DUMP PYDICOM_TEST_FILES SHARED_DICOM_DIR
"""
import os
import struct
import subprocess
import sys
import tempfile
import time
import zlib

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


def rle_header(*offsets, count=None):
    """64-byte RLE header: segment count then 15 offsets (PS3.5 G.5)."""
    offs = list(offsets) + [0] * (15 - len(offsets))
    return struct.pack("<16I", len(offsets) if count is None else count, *offs)


def rle_file(name, fragments, rows=4, cols=4, bits=16, frames=None, spp=1):
    ds = base(rows=rows, cols=cols, bits=bits, frames=frames, ts="1.2.840.10008.1.2.5")
    if spp == 3:
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
    ds.PixelData = encapsulate(fragments, has_bot=False) if len(fragments) > 1 else encapsulate(fragments)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return save(ds, name)


def packbits_literal(data):
    out = b""
    for i in range(0, len(data), 128):
        chunk = data[i:i + 128]
        out += bytes([len(chunk) - 1]) + chunk
    return out


def rle_frame(planes):
    """A valid RLE frame from byte planes (most significant byte first)."""
    segs = [packbits_literal(p) for p in planes]
    offs, at = [], 64
    for sg in segs:
        offs.append(at)
        at += len(sg)
    f = rle_header(*offs) + b"".join(segs)
    return f + (b"\0" if len(f) % 2 else b"")


def deflated_file(name, stream):
    """Part 10 file whose meta header says Deflated, followed by `stream`."""
    ds = base()
    ds.PixelData = b"\0\0" * 16
    p = save(ds, name + ".tmp")
    raw = open(p, "rb").read()
    os.unlink(p)
    # end of the meta group: group length value + its offset (132 + 12)
    glen = struct.unpack("<I", raw[140:144])[0]
    meta_end = 144 + glen
    meta = raw[132:meta_end].replace(b"1.2.840.10008.1.2.1\0", b"1.2.840.10008.1.2.1.99")
    meta = meta.replace(b"UI\x14\x00" + b"1.2.840.10008.1.2.1.99", b"UI\x16\x00" + b"1.2.840.10008.1.2.1.99")
    head = raw[:132] + raw[132:140] + struct.pack("<I", len(meta) - 12) + meta[12:]
    path = os.path.join(TMP, name)
    with open(path, "wb") as f:
        f.write(head + stream)
    return path, raw[meta_end:]


def raw_deflate(data, flush=zlib.Z_FINISH):
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush(flush)


def stored_values(path):
    out = os.path.join(TMP, "values.raw")
    r = subprocess.run([DUMP, "stored", path, out], capture_output=True, text=True)
    if r.returncode != 0:
        return None
    return np.fromfile(out, dtype="<i4")


def expect_values(label, path, expected):
    got = stored_values(path)
    ok = got is not None and np.array_equal(got, np.asarray(expected).ravel())
    print(("OK   " if ok else "FAIL ") + f"{label}: stored values")
    if not ok:
        failures.append(label + " values")


def rle_cases():
    # A valid 16-bit 4x4 frame for reference: values 0..15 * 257 + 1.
    vals = (np.arange(16, dtype=np.uint16) * 257 + 1)
    hi, lo = (vals >> 8).astype(np.uint8).tobytes(), (vals & 0xFF).astype(np.uint8).tobytes()
    good = rle_frame([hi, lo])
    p = rle_file("rle_good.dcm", [good])
    expect_decodes("RLE built here", p)
    expect_values("RLE built here", p, vals)
    # a frame split over two fragments (offset table empty, one frame)
    p = rle_file("rle_two_fragments.dcm", [good[:40], good[40:]])
    expect_decodes("RLE frame spanning two fragments", p)
    expect_values("RLE frame spanning two fragments", p, vals)
    # two frames in three fragments, no offset table: found by their headers
    p = rle_file("rle_2frames_3fragments.dcm", [good[:70], good[70:], good], frames=2)
    expect_decodes("RLE 2 frames in 3 fragments", p)
    expect_values("RLE 2 frames in 3 fragments", p, np.concatenate([vals, vals]))

    seg = packbits_literal(bytes(16))
    expect_error("RLE offsets beyond the fragment",
                 rle_file("rle_offset_beyond.dcm", [rle_header(64, 100000) + seg + seg]),
                 "cannot decode", "segment 2 offset 100000 is beyond")
    expect_error("RLE header with 16 segments",
                 rle_file("rle_16_segments.dcm", [rle_header(*[64 + 17 * i for i in range(15)], count=16) + seg * 16]),
                 "cannot decode", "16 segments")
    expect_error("RLE segment count differs from the header",
                 rle_file("rle_3_segments.dcm", [rle_header(64, 81, 98) + seg * 3]),
                 "3 segments, expected 2")
    expect_error("RLE offsets out of order",
                 rle_file("rle_order.dcm", [rle_header(81, 64) + seg * 2]), "cannot decode")
    expect_error("RLE offsets out of order (second before first)",
                 rle_file("rle_order2.dcm", [rle_header(64, 64) + seg * 2]), "out of order")
    expect_error("RLE truncated segment (literal cut short)",
                 rle_file("rle_truncated.dcm", [rle_header(64, 81) + seg + b"\x0f" + bytes(5)]),
                 "cannot decode", "truncated")
    expect_error("RLE segment decodes to too few bytes",
                 rle_file("rle_short.dcm", [rle_header(64, 81) + seg + b"\xfd\x00\x80"]),
                 "decodes to 4 bytes, expected 16")
    expect_error("RLE segment decodes to too many bytes",
                 rle_file("rle_long.dcm", [rle_header(64, 81) + seg + b"\x81\x07" + b"\x00\x00"]),
                 "decodes to more than")
    expect_error("RLE header longer than the fragment",
                 rle_file("rle_tiny.dcm", [b"\x02\x00\x00\x00\x40\x00"]), "64-byte header")
    # the crafted header of a fuzzer finding in DCMTK's RLE decoder: huge
    # replicate runs in a 2-frame file whose second fragment is a bare header
    expect_error("RLE replicate runs past the plane",
                 rle_file("rle_runs.dcm", [rle_header(64, 66) + b"\x81\xff" + b"\x81\xff" * 8,
                                           rle_header(64, 66)], frames=2),
                 "cannot decode")


def deflate_cases():
    # reference: a valid deflated file decodes like its explicit twin
    path, dataset = deflated_file("dfl_good.dcm", b"")
    with open(path, "ab") as f:
        f.write(raw_deflate(dataset))
    expect_decodes("Deflated built here", path)
    expect_values("Deflated built here", path, np.zeros(16))
    with open(path, "rb") as f:
        whole = f.read()
    trunc = os.path.join(TMP, "dfl_truncated.dcm")
    with open(trunc, "wb") as f:
        f.write(whole[:-6])
    expect_error("Deflated stream truncated", trunc, "Deflated data set is truncated")
    bad = os.path.join(TMP, "dfl_garbage.dcm")
    with open(bad, "wb") as f:
        f.write(whole[:len(whole) - len(raw_deflate(dataset))] + b"\xff" * 64)
    expect_error("Deflated stream is garbage", bad, "cannot inflate")

    # claims: a tiny stream whose data set declares a 4 GiB element
    claim = dataset[:dataset.index(b"\xe0\x7f\x10\x00")] + b"\xe0\x7f\x10\x00OW\0\0" + \
        struct.pack("<I", 0xFFFFFFF0) + bytes(64)
    path, _ = deflated_file("dfl_claim.dcm", raw_deflate(claim))
    expect_error("deflate bomb: element claims 4 GiB", path, "cannot parse", "4294967280")

    # expands: ~1 MB of deflate blocks that inflate to 1.1 GB (1 MiB of
    # zeros per self-contained block, repeated), beyond the 1 GiB a Deflated
    # data set may have; refused while counting, nothing is stored.
    block = raw_deflate(bytes(1 << 20), zlib.Z_FULL_FLUSH)
    stream = raw_deflate(dataset[:dataset.index(b"\xe0\x7f\x10\x00")], zlib.Z_FULL_FLUSH) + \
        block * 1040 + b"\x03\x00"
    path, _ = deflated_file("dfl_bomb.dcm", stream)
    t0 = time.time()
    expect_error("deflate bomb: inflates beyond 4 GiB", path, "inflates to more than")
    print(f"     (deflate bomb: {len(stream)} bytes, refused in {time.time() - t0:.1f} s, both modes)")


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
        # "too short": the valid file without its final Sequence Delimitation
        # Item (8 bytes); every fragment is complete: read like pydicom and
        # GDCM do (docs/DICOM.md "Robustness"), pixels equal to the twin.
        short = os.path.join(shared, "pydicom-data__emri_small_jpeg_2k_lossless_too_short.dcm")
        expect_decodes("emri J2K without its final delimiter", short)
        a, b = os.path.join(TMP, "a.raw"), os.path.join(TMP, "b.raw")
        subprocess.run([DUMP, "stored", short, a], capture_output=True)
        subprocess.run([DUMP, "stored", os.path.join(shared, "pydicom-data__emri_small_jpeg_2k_lossless.dcm"), b],
                       capture_output=True)
        same = os.path.exists(a) and open(a, "rb").read() == open(b, "rb").read()
        print(("OK   " if same else "FAIL ") + "emri J2K without its final delimiter: pixels equal to the complete file")
        if not same:
            failures.append("emri J2K without its final delimiter pixels")
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

    rle_cases()
    deflate_cases()

    # DCMTK 3.6.7 loops forever on a TEM marker (FF01) before the frame
    # header while looking for the JPEG precision (a fuzzer finding): we
    # check the fragment before DCMTK sees it.
    ds = base(ts="1.2.840.10008.1.2.4.50", bits=8)
    ds.PixelData = encapsulate([b"\xff\xd8\xff\x01" + b"\x00" * 60])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    expect_error("JPEG with a TEM marker before SOF", save(ds, "jpeg_tem.dcm"), "TEM marker")
    # the same after a run of fill bytes, which that walk steps over one by one
    ds = base(ts="1.2.840.10008.1.2.4.50", bits=8)
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xc4\x00\x04\x00\x00" + b"\xff" * 40 + b"\x01" + b"\x00" * 60])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    expect_error("JPEG with fill bytes then a TEM marker before SOF", save(ds, "jpeg_fill_tem.dcm"), "TEM marker")

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
