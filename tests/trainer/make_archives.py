#!/usr/bin/python3
"""Synthetic study archives for the trainer tests (written by the test, never
stored in the project).

    make_archives.py OUT_DIR [--train N] [--val N] [--seed S]

Writes, laid out like Orthanc's study-archive ZIPs
(<PatientID>/<Study>/<Modality><SeriesNumber>/<Modality>000001.dcm, one
8-bit 16x16 secondary-capture image per study):
  train.zip, train.csv   N studies, label "left" (bright left half) or "right"
  val.zip, val.csv       the same task, other images
  sides.json             a label set for the two labels
and the bad inputs:
  corrupt.zip            random bytes
  noimages.zip           a ZIP with a text file only
  mixed.zip              2 good studies, 1 truncated DICOM, 1 non-DICOM file,
  mixed.csv              and an entry whose bytes are corrupt (bad CRC)
  nomatch.csv            keys that match no study of train.zip
  badlabel.csv           train.zip's keys with a label no set knows
  report.csv             train.zip's keys with a 'report' column (free text)
"""
import argparse
import csv
import io
import json
import os
import random
import zipfile

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid as _gen

_UID_N = [0]


def generate_uid():
    """Deterministic 2.25 UIDs (the same archives for the same seed)."""
    _UID_N[0] += 1
    return _gen(prefix=None, entropy_srcs=["unimed-trainer-test", str(_UID_N[0])])

SC = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage


def dicom_bytes(pixels, study_uid, accession, patient):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SC
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = SC
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.AccessionNumber = accession
    ds.PatientID = patient
    ds.PatientName = patient
    ds.StudyDate = "20240101"
    ds.Modality = "OT"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.astype(np.uint8).tobytes()
    buf = io.BytesIO()
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    ds.save_as(buf, write_like_original=False)
    return buf.getvalue()


def picture(label, rng):
    img = rng.integers(20, 60, size=(16, 16))
    half = slice(0, 8) if label == "left" else slice(8, 16)
    img[:, half] += rng.integers(120, 180)
    return np.clip(img, 0, 255)


def make_set(path_zip, path_csv, n, prefix, rng, extra=None):
    rows = []
    with zipfile.ZipFile(path_zip, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(n):
            label = "left" if i % 2 == 0 else "right"
            study = generate_uid()
            acc = "%s%05d" % (prefix, i)
            patient = "%s-%05d" % (prefix, i)
            data = dicom_bytes(picture(label, rng), study, acc, patient)
            z.writestr("%s %s/20240101 Test/OT1 Sides/OT000001.dcm" % (patient, patient), data)
            rows.append((study, acc, label))
        if extra:
            extra(z)
    with open(path_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["StudyInstanceUID", "AccessionNumber", "label"])
        w.writerows(rows)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--train", type=int, default=64)
    ap.add_argument("--val", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    _UID_N[0] = a.seed * 1000000
    random.seed(a.seed)
    p = lambda f: os.path.join(a.out, f)
    train = make_set(p("train.zip"), p("train.csv"), a.train, "TR", rng)
    make_set(p("val.zip"), p("val.csv"), a.val, "VA", rng)
    json.dump({
        "name": "sides", "version": "1.0.0",
        "description": "test label set: which half of the image is bright",
        "scoring": "softmax",
        "templates": ["an image with a bright {} side.", "the {} half is bright."],
        "labels": [
            {"name": "left", "code": {"value": "T-1", "scheme": "99TEST", "meaning": "Left"},
             "synonyms": ["left half"]},
            {"name": "right", "code": {"value": "T-2", "scheme": "99TEST", "meaning": "Right"},
             "synonyms": ["right half"]},
        ]}, open(p("sides.json"), "w"), indent=1)

    with open(p("corrupt.zip"), "wb") as f:
        f.write(bytes(rng.integers(0, 256, size=4096, dtype=np.uint8)))
    with zipfile.ZipFile(p("noimages.zip"), "w") as z:
        z.writestr("README.txt", "no images here\n")

    def broken(z):
        good = dicom_bytes(picture("left", rng), generate_uid(), "MXBAD1", "MX-bad1")
        z.writestr("MX-bad1/20240101 Test/OT1 Sides/OT000001.dcm", good[: len(good) // 2])
        z.writestr("MX-bad2/20240101 Test/OT1 Sides/notes.txt", "not DICOM at all\n" * 20)
        z.writestr("MX-bad3/20240101 Test/OT1 Sides/OT000001.dcm",
                   dicom_bytes(picture("right", rng), generate_uid(), "MXBAD3", "MX-bad3"))
    make_set(p("mixed.zip"), p("mixed.csv"), 2, "MX", rng, broken)
    # corrupt the stored bytes of the last entry (bad CRC / inflate error)
    raw = bytearray(open(p("mixed.zip"), "rb").read())
    with zipfile.ZipFile(p("mixed.zip")) as z:
        info = z.getinfo("MX-bad3/20240101 Test/OT1 Sides/OT000001.dcm")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for k in range(start + 10, start + 40):
        raw[k] ^= 0x5A
    open(p("mixed.zip"), "wb").write(bytes(raw))

    with open(p("nomatch.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["StudyInstanceUID", "label"])
        for i in range(5):
            w.writerow([generate_uid(), "left"])
    with open(p("badlabel.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["AccessionNumber", "label"])
        for study, acc, label in train:
            w.writerow([acc, "middle"])
    with open(p("report.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["StudyInstanceUID", "report"])
        for study, acc, label in train:
            w.writerow([study, "Findings: the %s half is bright, \"as expected\"." % label])


if __name__ == "__main__":
    main()
