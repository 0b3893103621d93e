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
  stored.zip, stored.csv 4 studies in stored (uncompressed) entries, the pixel data of
                         the last one altered after zipping (its CRC-32 no longer matches)
  textsr.zip, textsr.csv 6 studies, each with a report SR of another producer (no labels):
                         2 Basic Text SR, 2 Enhanced SR (flat TEXT items), 2 Comprehensive SR
                         following TID 2000 (History, Findings and Impressions sections)
"""
import argparse
import csv
import io
import json
import os
import random
import zipfile

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
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


def code_item(value, scheme, meaning):
    c = Dataset()
    c.CodeValue = value
    c.CodingSchemeDesignator = scheme
    c.CodeMeaning = meaning
    return c


def content_item(rel, vtype, concept, value=None, children=None):
    it = Dataset()
    it.RelationshipType = rel
    it.ValueType = vtype
    it.ConceptNameCodeSequence = [code_item(*concept)]
    if vtype == "TEXT":
        it.TextValue = value
    elif vtype == "CONTAINER":
        it.ContinuityOfContent = "SEPARATE"
    if children:
        it.ContentSequence = children
    return it


SR_CLASSES = {"basic": "1.2.840.10008.5.1.4.1.1.88.11", "enhanced": "1.2.840.10008.5.1.4.1.1.88.22",
              "comprehensive": "1.2.840.10008.5.1.4.1.1.88.33"}
FINDING = ("121071", "DCM", "Finding")


def report_sr_bytes(kind, study_uid, accession, patient, label):
    """A report of another producer: free TEXT items, no TID 1500 findings.
    The words ending in 'word' let the test see which items became captions."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SR_CLASSES[kind]
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = SR_CLASSES[kind]
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.AccessionNumber = accession
    ds.PatientID = patient
    ds.PatientName = patient
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    ds.ContentDate = "20240101"
    ds.ContentTime = "120000"
    ds.Modality = "SR"
    ds.Manufacturer = "Other Reporting System"
    ds.SeriesNumber = 50
    ds.InstanceNumber = 1
    ds.ReferencedPerformedProcedureStepSequence = []
    ds.PerformedProcedureCodeSequence = []
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [code_item("18748-4", "LN", "Diagnostic Imaging Report")]
    ds.ContinuityOfContent = "SEPARATE"
    observer = [content_item("HAS OBS CONTEXT", "CODE", ("121005", "DCM", "Observer Type")),
                content_item("HAS OBS CONTEXT", "TEXT", ("121013", "DCM", "Device Observer Name"),
                             "observercontextword")]
    observer[0].ConceptCodeSequence = [code_item("121007", "DCM", "Device")]
    if kind == "comprehensive":
        tmpl = Dataset()
        tmpl.MappingResource = "DCMR"
        tmpl.TemplateIdentifier = "2000"
        ds.ContentTemplateSequence = [tmpl]
        body = [
            content_item("CONTAINS", "CONTAINER", ("121060", "DCM", "History"), children=[
                content_item("CONTAINS", "TEXT", ("121060", "DCM", "History"),
                             "historyword cough for two weeks")]),
            content_item("CONTAINS", "CONTAINER", ("121070", "DCM", "Findings"), children=[
                content_item("CONTAINS", "TEXT", FINDING,
                             "findingword the %s half is bright" % label)]),
            content_item("CONTAINS", "CONTAINER", ("121072", "DCM", "Impressions"), children=[
                content_item("CONTAINS", "TEXT", ("121073", "DCM", "Impression"),
                             "impressionword %s sided" % label)]),
        ]
    else:
        body = [content_item("CONTAINS", "TEXT", FINDING, "%sword the %s half is bright" % (kind, label)),
                content_item("CONTAINS", "TEXT", FINDING, "%sword nothing else" % kind)]
    ds.ContentSequence = observer + body
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


def make_set(path_zip, path_csv, n, prefix, rng, extra=None, compression=zipfile.ZIP_DEFLATED,
             sr_kinds=None):
    rows = []
    with zipfile.ZipFile(path_zip, "w", compression) as z:
        for i in range(n):
            label = "left" if i % 2 == 0 else "right"
            study = generate_uid()
            acc = "%s%05d" % (prefix, i)
            patient = "%s-%05d" % (prefix, i)
            data = dicom_bytes(picture(label, rng), study, acc, patient)
            z.writestr("%s %s/20240101 Test/OT1 Sides/OT000001.dcm" % (patient, patient), data)
            if sr_kinds:
                z.writestr("%s %s/20240101 Test/SR50 Report/SR000001.dcm" % (patient, patient),
                           report_sr_bytes(sr_kinds[i], study, acc, patient, label))
                label = ""  # the report is the only caption
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

    make_set(p("stored.zip"), p("stored.csv"), 4, "ST", rng, compression=zipfile.ZIP_STORED)
    # alter pixel bytes of the last entry in place: still a readable DICOM file,
    # only the CRC-32 tells
    raw = bytearray(open(p("stored.zip"), "rb").read())
    with zipfile.ZipFile(p("stored.zip")) as z:
        info = z.infolist()[-1]
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    end = start + info.compress_size
    for k in range(end - 40, end - 20):
        raw[k] ^= 0xFF
    open(p("stored.zip"), "wb").write(bytes(raw))
    make_set(p("textsr.zip"), p("textsr.csv"), 6, "TX", rng,
             sr_kinds=["basic", "basic", "enhanced", "enhanced", "comprehensive", "comprehensive"])

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
