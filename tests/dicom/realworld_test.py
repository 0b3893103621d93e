#!/usr/bin/python3
"""Real-world DICOM faults (docs/DICOM.md "Robustness"), each on a small file
synthesized here with pydicom (and DCMTK's dcmcjpls, Pillow's OpenJPEG
encoder): what pydicom, GDCM or DCMTK read, we read; what is refused is
refused with a true reason; one bad file never sinks a study.

usage: realworld_test.py UDCM_DUMP UNIMED MODEL_DIR
MODEL_DIR may be absent: the `unimed analyze` case is then skipped (said so).
"""
import io
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit, generate_uid

DUMP, UNIMED, MODEL = sys.argv[1:4]
TMP = tempfile.mkdtemp(prefix="udcm_realworld_")
failures = []


def check(name, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + name + ("" if ok or not detail else f": {detail}"))
    if not ok:
        failures.append(name)


def run(args, timeout=300):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def image(rows=8, cols=8, bits=16, modality="CT", sop="1.2.840.10008.5.1.4.1.1.2", study=None, pixels=None):
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = sop, generate_uid()
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.PatientID, ds.PatientName = "RW-1", "Real^World"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    if pixels is None:
        pixels = (np.arange(rows * cols) % 97).astype(np.uint16 if bits == 16 else np.uint8).reshape(rows, cols)
    ds.PixelData = pixels.tobytes()
    return ds


def meta_for(ds, ts):
    m = FileMetaDataset()
    m.TransferSyntaxUID = ts
    m.MediaStorageSOPClassUID, m.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    return m


def save(ds, name, ts=ExplicitVRLittleEndian):
    p = os.path.join(TMP, name)
    ds.file_meta = meta_for(ds, ts)
    ds.is_little_endian, ds.is_implicit_VR = True, ts == ImplicitVRLittleEndian
    ds.save_as(p, write_like_original=False)
    return p


def raw_dataset(ds, implicit):
    b = DicomBytesIO()
    b.is_little_endian, b.is_implicit_VR = True, implicit
    write_dataset(b, ds)
    return b.getvalue()


def part10(ds_low, middle, ds_high, ts):
    """Part 10 bytes: ds_low's elements, raw `middle` bytes, ds_high's elements."""
    out = io.BytesIO()
    out.write(b"\0" * 128 + b"DICM")
    m = DicomBytesIO()
    m.is_little_endian, m.is_implicit_VR = True, False
    write_file_meta_info(m, meta_for(ds_low, ts))
    out.write(m.getvalue())
    implicit = ts == ImplicitVRLittleEndian
    out.write(raw_dataset(ds_low, implicit))
    out.write(middle)
    out.write(raw_dataset(ds_high, implicit))
    return out.getvalue()


def deep_file(name, depth, implicit=False):
    """A CT whose private sequence (0009,1001) is nested `depth` levels deep
    (undefined lengths), as in the archive file that ended DCMTK's stack."""
    full = image()
    low, high = Dataset(), Dataset()
    for el in full:
        (low if el.tag.group < 0x0009 else high).add(el)
    ts = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    if implicit:
        creator = struct.pack("<HHI", 0x0009, 0x0010, 4) + b"ABC "
        opening = struct.pack("<HHI", 0x0009, 0x1001, 0xFFFFFFFF)
    else:
        creator = struct.pack("<HH2sH", 0x0009, 0x0010, b"LO", 4) + b"ABC "
        opening = struct.pack("<HH2sHI", 0x0009, 0x1001, b"SQ", 0, 0xFFFFFFFF)
    opening += struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    closing = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    data = part10(low, creator + opening * depth + closing * depth, high, ts)
    p = os.path.join(TMP, name)
    with open(p, "wb") as f:
        f.write(data)
    return p


def dump(mode, path, frame=None):
    args = [DUMP, mode, path] + ([os.path.join(TMP, "out.bin")] if mode != "mem" else [])
    if frame is not None:
        args.append(str(frame))
    return run(args)


def stored(path, frame=None):
    r = dump("stored", path, frame)
    if r.returncode != 0:
        return None, r.stderr.strip()
    return np.fromfile(os.path.join(TMP, "out.bin"), dtype="<i4"), r.stdout.strip()


def rgb(path, frame=None):
    r = dump("rgb", path, frame)
    if r.returncode != 0:
        return None, r.stderr.strip()
    with open(os.path.join(TMP, "out.bin"), "rb") as f:
        data = f.read()
    head = data.split(b"\n", 3)
    w, h = map(int, head[1].split())
    return np.frombuffer(head[3], dtype=np.uint8).reshape(h, w, 3), r.stdout.strip()


# ---- 1. pathological nesting: refused before DCMTK parses it ----------------
for implicit in (False, True):
    tag = "implicit" if implicit else "explicit"
    deep = deep_file(f"deep_{tag}.dcm", 200000, implicit)
    for mode in ("stored", "mem"):
        r = dump(mode, deep)
        msg = r.stderr.strip()
        check(f"class 1: {tag} 200000-level nesting refused [{mode}]",
              r.returncode == 1 and msg.startswith(deep + ": ") and "nested more than 64 levels" in msg,
              f"rc={r.returncode} {msg}")
    r = run([UNIMED, "inspect", deep])
    check(f"class 1: unimed inspect on the {tag} deep file fails cleanly",
          r.returncode != 0 and r.returncode > 0 and "nested more than 64 levels" in r.stderr,
          f"rc={r.returncode} {r.stderr.strip()}")
    ok_file = deep_file(f"deep60_{tag}.dcm", 60, implicit)
    v, info = stored(ok_file)
    check(f"class 1: {tag} nesting of 60 levels is read", v is not None and v.size == 64, info)

# the same nesting inside a standard sequence written as UN with a defined
# length (DCMTK converts it back to SQ and recurses into it)
full = image()
full["PixelData"].VR = "OW"
low, high = Dataset(), Dataset()
for el in full:
    (low if el.tag < 0x00400275 else high).add(el)
inner_open = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + struct.pack("<HHI", 0x0040, 0x0275, 0xFFFFFFFF)
inner_close = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0) + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
body = inner_open * 100000 + struct.pack("<HHI", 0xFFFE, 0xE000, 0) + inner_close * 100000
un_seq = struct.pack("<HH2sHI", 0x0040, 0x0275, b"UN", 0, len(body)) + body
deep_un = os.path.join(TMP, "deep_un_sequence.dcm")
with open(deep_un, "wb") as f:
    f.write(part10(low, un_seq, high, ExplicitVRLittleEndian))
r = dump("stored", deep_un)
check("class 1: deep nesting inside a defined-length UN sequence refused",
      r.returncode == 1 and "nested more than 64 levels" in r.stderr, f"rc={r.returncode} {r.stderr.strip()}")

# one bad instance fails alone: `unimed analyze DIR`
if os.path.isfile(os.path.join(MODEL, "config.json")):
    study = generate_uid()
    folder = os.path.join(TMP, "study")
    os.makedirs(folder)
    rng = np.random.default_rng(5)
    for i in range(3):
        ct = image(64, 64, study=study, pixels=rng.integers(0, 2000, (64, 64)).astype(np.uint16))
        ct.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.1"
        ct.InstanceNumber = i + 1
        ct.RescaleSlope, ct.RescaleIntercept = 1, -1024
        save(ct, f"ct{i}.dcm")
        os.replace(os.path.join(TMP, f"ct{i}.dcm"), os.path.join(folder, f"ct{i}.dcm"))
    os.replace(deep_file("deep_in_study.dcm", 200000), os.path.join(folder, "bad.dcm"))
    sr = os.path.join(TMP, "study_sr.dcm")
    r = run([UNIMED, "analyze", "--model", MODEL, "--no-cache", "--sr", sr, folder], timeout=600)
    findings = None
    try:
        findings = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        pass
    check("class 1: analyze DIR with a bad file next to a CT analyses the CT",
          r.returncode == 0 and findings is not None and os.path.isfile(sr),
          f"rc={r.returncode} {r.stderr.strip()[-400:]}")
    if os.path.isfile(sr):
        import pydicom
        refs = {item.ReferencedSOPInstanceUID for item in pydicom.dcmread(sr).CurrentRequestedProcedureEvidenceSequence[0]
                .ReferencedSeriesSequence[0].ReferencedSOPSequence}
        check("class 1: the SR's evidence is the three CT instances", len(refs) == 3, str(refs))
else:
    print(f"skip class 1 analyze case: no model in {MODEL} (the ref_small fixture makes it)")

# ---- 2. standard attributes written as UN ----------------------------------
full = image(16, 16, modality="MR", sop="1.2.840.10008.5.1.4.1.1.4",
             pixels=(np.arange(256) * 7 % 1000).astype(np.uint16).reshape(16, 16))
sop_class = full.SOPClassUID
full.PixelAspectRatio = [1, 1]
full.WindowCenter, full.WindowWidth = 500, 200
full.Modality = "MR"
full.file_meta = meta_for(full, ExplicitVRLittleEndian)
full.is_little_endian, full.is_implicit_VR = True, False
buf = io.BytesIO()
full.save_as(buf, write_like_original=False)
data = buf.getvalue()
# rewrite their headers as VR UN (values unchanged), as such archives do
for group, elem in ((0x0008, 0x0016), (0x0008, 0x0060), (0x0028, 0x0034), (0x0028, 0x1050), (0x0028, 0x1051)):
    head = struct.pack("<HH", group, elem)
    i = data.index(head, 132 + 8 if group != 0x0002 else 0)
    while data[i + 4:i + 6] not in (b"UI", b"CS", b"IS", b"DS"):
        i = data.index(head, i + 1)
    length = struct.unpack("<H", data[i + 6:i + 8])[0]
    data = data[:i] + head + b"UN\0\0" + struct.pack("<I", length) + data[i + 8:]
un_path = os.path.join(TMP, "un_vr.dcm")
with open(un_path, "wb") as f:
    f.write(data)
r = run([UNIMED, "inspect", un_path])
try:
    j = json.loads(r.stdout)
except ValueError:
    j = {}
check("class 2: Modality and SOP Class UID read from UN with their dictionary VR",
      j.get("modality") == "MR" and j.get("sop_class", {}).get("uid") == sop_class, r.stdout + r.stderr)
check("class 2: window read from UN", (j.get("window") or {}).get("center") == 500, json.dumps(j.get("window")))
img, info = rgb(un_path)
check("class 2: Pixel Aspect Ratio 1\\1 from UN keeps 16x16", img is not None and img.shape == (16, 16, 3), info)
if img is not None:
    sv = (np.arange(256) * 7 % 1000).reshape(16, 16).astype(float)
    want = np.clip(np.floor(((sv - 500 + 0.5) / 199 + 0.5) * 255 + 0.5), 0, 255)
    check("class 2: the UN window is applied", np.abs(img[:, :, 0].astype(float) - want).max() <= 1)

# ---- 3. fragmented JPEG-LS multi-frame without a Basic Offset Table -------
frames = np.stack([(np.arange(64 * 64).reshape(64, 64) * (k + 3) % 4096) for k in range(3)]).astype(np.uint16)
mf = image(64, 64, pixels=frames)
mf.NumberOfFrames = 3
mf.BitsStored, mf.HighBit = 12, 11
native = save(mf, "mf_native.dcm")
jls = os.path.join(TMP, "mf_jls_nobot.dcm")
r = run(["dcmcjpls", "--encode-lossless", "--fragment-size", "1", "--offset-table-empty", native, jls])
check("class 3: dcmcjpls wrote a fragmented JPEG-LS file without offsets", r.returncode == 0, r.stderr)
for k in (2, 1, 0):
    v, info = stored(jls, k)
    check(f"class 3: JPEG-LS frame {k} decoded directly, exact",
          v is not None and np.array_equal(v, frames[k].ravel().astype(np.int32)), info)

# ---- 4. YBR_ICT declared, codestream without MCT ---------------------------
rgb_src = np.zeros((32, 32, 3), dtype=np.uint8)
rgb_src[..., 0] = np.arange(32)[None, :] * 8
rgb_src[..., 1] = 200
rgb_src[..., 2] = np.arange(32)[:, None] * 4
bio = io.BytesIO()
Image.fromarray(rgb_src).save(bio, "JPEG2000", no_jp2=True, mct=0, irreversible=False)
cs = bio.getvalue()
cod = cs.find(b"\xff\x52")
check("class 4: test codestream has MCT = 0", cod > 0 and cs[cod + 8] == 0)
c = image(32, 32, bits=8, modality="OT", sop="1.2.840.10008.5.1.4.1.1.7")
c.SamplesPerPixel, c.PhotometricInterpretation, c.PlanarConfiguration = 3, "YBR_ICT", 0
c.PixelData = encapsulate([cs])
ict = save(c, "ict_no_mct.dcm", JPEG2000Lossless)
img, info = rgb(ict)
check("class 4: YBR_ICT without MCT is decoded as the RGB it holds",
      img is not None and np.array_equal(img, rgb_src), info)

# ---- 5. whole-slide edge tiles smaller than Rows x Columns -----------------
tile_src = [(np.add.outer(np.arange(32), np.arange(32)) * 4 % 256).astype(np.uint8),
            (np.add.outer(np.arange(32), np.arange(12)) * 8 % 256).astype(np.uint8),   # 12 wide
            (np.add.outer(np.arange(20), np.arange(12)) * 6 % 256).astype(np.uint8)]   # 12 x 20
streams = []
for t in tile_src:
    bio = io.BytesIO()
    Image.fromarray(t).save(bio, "JPEG", quality=95)
    streams.append(bio.getvalue())
wsi = image(32, 32, bits=8, modality="SM", sop="1.2.840.10008.5.1.4.1.1.77.1.6")
wsi.NumberOfFrames = 3
wsi.PixelData = encapsulate(streams)
wsi_path = save(wsi, "edge_tiles.dcm", JPEGBaseline8Bit)
for k, t in enumerate(tile_src):
    ref = np.zeros((32, 32), dtype=np.int64)
    decoded = np.asarray(Image.open(io.BytesIO(streams[k]))).astype(np.int64)
    ref[:decoded.shape[0], :decoded.shape[1]] = decoded
    v, info = stored(wsi_path, k)
    check(f"class 5: JPEG frame {k} of {t.shape[1]}x{t.shape[0]} placed top-left in the 32x32 frame",
          v is not None and np.abs(v.reshape(32, 32) - ref).max() <= 1, info)
big_tile = image(16, 16, bits=8, modality="SM", sop="1.2.840.10008.5.1.4.1.1.77.1.6")
big_tile.PixelData = encapsulate([streams[0]])
r = dump("stored", save(big_tile, "tile_too_big.dcm", JPEGBaseline8Bit))
check("class 5: a JPEG stream larger than Rows x Columns is refused",
      r.returncode == 1 and "is 32x32, larger than Columns x Rows 16x16" in r.stderr, r.stderr.strip())

# ---- 6. refused although decodable ------------------------------------------
# the final Sequence Delimitation Item is missing after a complete last fragment
src6 = (np.add.outer(np.arange(16), np.arange(16)) * 8 % 256).astype(np.uint8)
bio = io.BytesIO()
Image.fromarray(src6).save(bio, "JPEG", quality=95)
j6 = image(16, 16, bits=8, modality="OT", sop="1.2.840.10008.5.1.4.1.1.7")
j6.PixelData = encapsulate([bio.getvalue()])
whole = save(j6, "jpeg_with_delimiter.dcm", JPEGBaseline8Bit)
with open(whole, "rb") as f:
    data = f.read()
check("class 6: the test file ends with the Sequence Delimitation Item", data[-8:] == bytes.fromhex("feffdde000000000"))
no_delim = os.path.join(TMP, "jpeg_no_final_delimiter.dcm")
with open(no_delim, "wb") as f:
    f.write(data[:-8])
want6 = np.asarray(Image.open(io.BytesIO(bio.getvalue()))).astype(np.int64).ravel()
for mode in ("stored", "mem"):
    r = dump(mode, no_delim)
    check(f"class 6: missing final delimiter after a complete JPEG fragment is read [{mode}]", r.returncode == 0,
          r.stderr.strip())
v, info = stored(no_delim)
check("class 6: ... and decodes like the intact file", v is not None and np.abs(v - want6).max() <= 1, info)
cut = os.path.join(TMP, "jpeg_cut_fragment.dcm")
with open(cut, "wb") as f:
    f.write(data[:-8 - 6])  # the last fragment loses its end: still refused
r = dump("stored", cut)
check("class 6: a truncated last fragment stays refused", r.returncode == 1 and "Pixel Data" in r.stderr,
      r.stderr.strip())

# an item among the top-level elements, outside any sequence: after an
# element (fo-dicom GH364: the content of an Ultrasound Region item), and
# after an empty sequence (FreezePattern: a zero-length item)
full6 = image(8, 8, modality="US", sop="1.2.840.10008.5.1.4.1.1.6.1",
              pixels=(np.arange(64) * 3).astype(np.uint16).reshape(8, 8))
low6, high6 = Dataset(), Dataset()
for el in full6:
    (low6 if el.tag < 0x00180000 else high6).add(el)
region = Dataset()
region.RegionSpatialFormat, region.RegionDataType = 1, 1
stray = raw_dataset(region, implicit=False)
middle = (struct.pack("<HH2sH", 0x0018, 0x5020, b"LO", 12) + b"ABD_GENERAL "
          + struct.pack("<HHI", 0xFFFE, 0xE000, len(stray)) + stray
          + struct.pack("<HH2sHI", 0x0018, 0x6011, b"SQ", 0, 0) + struct.pack("<HHI", 0xFFFE, 0xE000, 0))
stray_path = os.path.join(TMP, "stray_items.dcm")
with open(stray_path, "wb") as f:
    f.write(part10(low6, middle, high6, ExplicitVRLittleEndian))
for mode in ("stored", "mem"):
    r = dump(mode, stray_path)
    check(f"class 6: items among the top-level elements are stepped over [{mode}]", r.returncode == 0,
          r.stderr.strip())
v, info = stored(stray_path)
check("class 6: ... and the image after them decodes", v is not None and np.array_equal(v, np.arange(64) * 3), info)
r = run([UNIMED, "inspect", stray_path])
check("class 6: ... and its header is read", r.returncode == 0 and '"modality":"US"' in r.stdout, r.stderr.strip())

# a Modality LUT Sequence item with an empty LUT Descriptor and LUT Data
m6 = image(8, 8, modality="CR", sop="1.2.840.10008.5.1.4.1.1.1",
           pixels=(np.arange(64) * 10).astype(np.uint16).reshape(8, 8))
m6.RescaleSlope, m6.RescaleIntercept = 1, 0
m6.WindowCenter, m6.WindowWidth = 320, 640
item = Dataset()
item.add_new(0x00283002, "US", None)  # LUT Descriptor, empty
item.add_new(0x00283006, "US", None)  # LUT Data, empty
item.ModalityLUTType = "US"
m6.ModalityLUTSequence = [item]
img, info = rgb(save(m6, "empty_modality_lut.dcm"))
sv = (np.arange(64) * 10).astype(float)
want = np.clip(np.floor(((sv - 320 + 0.5) / 639 + 0.5) * 255 + 0.5), 0, 255)
check("class 6: an empty Modality LUT item is ignored (rescale and window apply)",
      img is not None and np.abs(img[:, :, 0].ravel() - want).max() <= 1, info)

# ---- 7. a sparse mask; a "JPEG" holding no JPEG stream ----------------------
mask = np.zeros((128, 128), dtype=np.uint16)
mask.ravel()[np.random.default_rng(1).choice(128 * 128, 11, replace=False)] = 1
seg = image(128, 128, modality="MR", sop="1.2.840.10008.5.1.4.1.1.4", pixels=mask)
img, info = rgb(save(seg, "sparse_mask.dcm"))
check("class 7: a mask of 11 ones in 16384 pixels is not all black",
      img is not None and int((img[:, :, 0] == 255).sum()) == 11 and int((img[:, :, 0] == 0).sum()) == 128 * 128 - 11,
      info)
nj = image(16, 16, bits=8, modality="OT", sop="1.2.840.10008.5.1.4.1.1.7")
nj.PixelData = encapsulate([bytes(range(256))])
nj_path = save(nj, "raw_in_jpeg.dcm", JPEGBaseline8Bit)
r = dump("stored", nj_path)
check("class 7: raw bytes in a JPEG transfer syntax are refused with the true reason",
      r.returncode == 1 and "no JPEG stream (no SOI marker FF D8)" in r.stderr
      and "size of the uncompressed frame" in r.stderr, r.stderr.strip())

# ---- issue 12 item 3: Latin-1 long texts through the in-memory path --------
lat = image(8, 8)
lat.SpecificCharacterSet = "ISO_IR 100"
lat.PatientName = "Müller^Zoë"
lat.ImageComments = ("Größe " * 1000)[:5000]
lat.add_new(0x00090010, "LO", "UNIMED TEST")
lat.add_new(0x00091001, "UT", "Ärztin " * 3900)  # 27 300 bytes
lat_path = save(lat, "latin1_long.dcm")
sr_path = os.path.join(TMP, "latin1_sr.dcm")
r = run([DUMP, "sr-mem", lat_path, sr_path])
check("issue 12.3: SR from an ISO_IR 100 source with 5000-char ImageComments and a 27 kB UT (buffer)",
      r.returncode == 0 and os.path.isfile(sr_path), r.stderr.strip())
if os.path.isfile(sr_path):
    import pydicom
    srds = pydicom.dcmread(sr_path)
    check("issue 12.3: the SR carries the patient's name in UTF-8",
          srds.SpecificCharacterSet == "ISO_IR 192" and str(srds.PatientName) == "Müller^Zoë",
          f"{srds.get('SpecificCharacterSet')} {srds.get('PatientName')}")

# ---- issue 12 item 6: the decode budget --------------------------------------
def rle_big_file(path, rows, cols):
    """8-bit RLE frame of rows x cols zeros: runs of 128 (2 bytes each)."""
    n = rows * cols
    runs, rest = divmod(n, 128)
    seg = bytes([0x81, 0]) * runs + (bytes([257 - rest, 0]) if rest else b"")
    header = struct.pack("<16I", 1, 64, *([0] * 14))
    ds = image(4, 4, bits=8, modality="OT", sop="1.2.840.10008.5.1.4.1.1.7")
    ds.Rows, ds.Columns = rows, cols
    ds.PixelData = encapsulate([header + seg + (b"\0" if len(seg) % 2 else b"")])
    ds.file_meta = meta_for(ds, "1.2.840.10008.1.2.5")
    ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.save_as(path, write_like_original=False)


big = os.path.join(TMP, "rle_16384x16383.dcm")
rle_big_file(big, 16383, 16384)
time_out = os.path.join(TMP, "time.txt")
r = run(["/usr/bin/time", "-v", "-o", time_out, DUMP, "rgb", big, os.path.join(TMP, "big.ppm")])
rss_kb = 0
with open(time_out) as f:
    for line in f:
        if "Maximum resident set size" in line:
            rss_kb = int(line.split(":")[1])
check("issue 12.6: a %d kB RLE file declaring 16384 x 16383 pixels is refused by the decode budget"
      % (os.path.getsize(big) // 1024),
      r.returncode == 1 and "over the decode budget of 512 MiB (max_decode_bytes)" in r.stderr, r.stderr.strip())
check("issue 12.6: ... with a peak RSS under 100 MiB", 0 < rss_kb < 100 * 1024, f"{rss_kb} kB")
print(f"     RLE 16384 x 16383: peak RSS {rss_kb} kB")

# JPEG 2000 over the budget: decoded at a reduced resolution level; the
# reference is Pillow's OpenJPEG decode with the same reduce factor.
j2k_src = (np.add.outer(np.arange(512), np.arange(512)) % 251).astype(np.uint8)
bio = io.BytesIO()
Image.fromarray(j2k_src).save(bio, "JPEG2000", no_jp2=True, irreversible=False, num_resolutions=6)
j = image(512, 512, bits=8, modality="OT", sop="1.2.840.10008.5.1.4.1.1.7")
j.PixelData = encapsulate([bio.getvalue()])
j2k_path = save(j, "j2k_512.dcm", JPEG2000Lossless)
ref = Image.open(io.BytesIO(bio.getvalue()))
ref.reduce = 2  # 512 x 512 x 20 B = 5 MiB; 256 x 256 x 20 B = 1.25 MiB; 128 x 128 fits 1 MiB
ref.load()
ref = np.asarray(ref)
env = dict(os.environ, UDCM_MAX_DECODE_BYTES=str(1 << 20))
r = subprocess.run([DUMP, "rgb", j2k_path, os.path.join(TMP, "j2k.ppm")], capture_output=True, text=True, env=env,
                   timeout=120)
got = None
if r.returncode == 0:
    with open(os.path.join(TMP, "j2k.ppm"), "rb") as f:
        head = f.read().split(b"\n", 3)
    w, h = map(int, head[1].split())
    got = np.frombuffer(head[3], dtype=np.uint8).reshape(h, w, 3)[:, :, 0]
lo, hi = np.percentile(ref.astype(float), [0.5, 99.5])
want = np.clip(np.floor((ref.astype(float) - lo) * (255.0 / (hi - lo)) + 0.5), 0, 255) if hi > lo else None
check("issue 12.6: a JPEG 2000 frame over the budget is decoded at reduction 2 (128 x 128)",
      got is not None and got.shape == (128, 128), r.stderr.strip() or r.stdout.strip())
check("issue 12.6: ... equal to OpenJPEG's reduced decode (Pillow), through the pipeline",
      got is not None and want is not None and got.shape == want.shape and np.abs(got - want).max() <= 1)
r = subprocess.run([DUMP, "stored", j2k_path, os.path.join(TMP, "j2k.raw")], capture_output=True, text=True, env=env,
                   timeout=120)
check("issue 12.6: full-size stored values of that frame are refused by the budget",
      r.returncode == 1 and "over the decode budget of 1 MiB" in r.stderr, r.stderr.strip())

if failures:
    print(f"{len(failures)} failure(s):", *failures, sep="\n  ")
    sys.exit(1)
print("all real-world cases pass")
