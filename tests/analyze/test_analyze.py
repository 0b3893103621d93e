#!/usr/bin/python3
"""`unimed analyze` end to end: sample studies -> findings JSON + TID 1500 SR.

usage: test_analyze.py UNIMED MODEL_DIR LABELSET_DIR XSD

Studies: DICOM files that Debian's python3-pydicom installs (CT, MR, a
multi-frame RGB), and a 12-slice CT series made here with shuffled files
and an oblique orientation. For each SR written we check: dciodvfy reports
no error (warnings are listed), dsrdump reads it, our reader (`unimed
read-sr`) returns the findings and probabilities that analyze printed, the
XML form validates against DCMTK's dsr2xml.xsd (xmllint), and a second run
gives the same SOP Instance UID. Then the error paths: several studies
without --out-dir, a broken label set, a folder without DICOM."""
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

UNIMED, MODEL, LABELSETS, XSD = sys.argv[1:5]
SAMPLES = "/usr/lib/python3/dist-packages/pydicom/data/test_files"
# The version the build declares (CMakeLists.txt, project()).
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "CMakeLists.txt")) as _f:
    PROJECT_VERSION = re.search(r"project\(unimed VERSION ([0-9.]+)", _f.read()).group(1)
failures = []


def check(name, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + name + ("" if ok or not detail else f": {detail}"))
    if not ok:
        failures.append(name)


def run(args, **kw):
    return subprocess.run([UNIMED] + args, capture_output=True, text=True, timeout=600, **kw)


def make_ct_series(folder, n=12):
    """A CT series with an oblique orientation, written in shuffled order."""
    os.makedirs(folder)
    study, series = generate_uid(), generate_uid()
    row = np.array([0.96, 0.28, 0.0])
    col = np.array([0.0, 0.0, -1.0])
    normal = np.cross(row, col)
    order = list(range(n))
    random.Random(7).shuffle(order)
    rng = np.random.default_rng(3)
    for k, i in enumerate(order):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Phantom^CT", "PH-001", "19700101", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", "ACC1"
        ds.ReferringPhysicianName = ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 2, n - i  # numbers disagree with position
        ds.BodyPartExamined = "CHEST"
        ds.ImageOrientationPatient = [float(v) for v in (*row, *col)]
        ds.ImagePositionPatient = [float(v) for v in normal * 2.5 * i]
        ds.PixelSpacing = [0.7, 0.7]
        ds.SliceThickness = 2.5
        ds.Rows = ds.Columns = 64
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = (rng.integers(0, 2000, (64, 64)) + 20 * i).astype("<i2").tobytes()
        ds.save_as(os.path.join(folder, f"slice{k:02d}.dcm"), write_like_original=False)
    return study


def make_slide(folder, cols=384, rows=256, tile=64):
    """A one-level VL Whole Slide Microscopy image, TILED_FULL, RGB, with a
    pink 'tissue' ellipse on white glass."""
    os.makedirs(folder)
    yy, xx = np.mgrid[0:rows, 0:cols]
    tissue = ((xx - cols / 2) / (cols / 3)) ** 2 + ((yy - rows / 2) / (rows / 3)) ** 2 < 1
    img = np.full((rows, cols, 3), 245, np.uint8)
    rng = np.random.default_rng(5)
    img[tissue] = (rng.integers(0, 40, (int(tissue.sum()), 3)) + np.array([170, 90, 150])).astype(np.uint8)
    frames = []
    for ty in range(0, rows, tile):
        for tx in range(0, cols, tile):
            frames.append(img[ty:ty + tile, tx:tx + tile].tobytes())
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.6"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Phantom^Slide", "PH-002", "19700101", "O"
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", "ACC2"
    ds.ReferringPhysicianName = ""
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "SM", 1, 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows = cols, rows
    ds.Rows = ds.Columns = tile
    ds.NumberOfFrames = len(frames)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    pm = Dataset()
    pm.PixelSpacing = [0.0005, 0.0005]
    pm.SliceThickness = 0.001
    shared = Dataset()
    shared.PixelMeasuresSequence = [pm]
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.PixelData = b"".join(frames)
    ds.save_as(os.path.join(folder, "level0.dcm"), write_like_original=False)


def main():
    tmp = tempfile.mkdtemp(prefix="unimed-analyze-")
    cache = os.path.join(tmp, "cache")
    try:
        ct_dir = os.path.join(tmp, "ct_series")
        ct_study = make_ct_series(ct_dir)
        slide_dir = os.path.join(tmp, "slide")
        make_slide(slide_dir)
        studies = {
            "slide": [slide_dir],
            "CT_small": [os.path.join(SAMPLES, "CT_small.dcm")],
            "MR_small": [os.path.join(SAMPLES, "MR_small.dcm")],
            "rgb_2frame": [os.path.join(SAMPLES, "SC_rgb_rle_2frame.dcm")],
            "ct_series": [ct_dir],
        }
        for name, paths in studies.items():
            sr, xml = os.path.join(tmp, name + ".dcm"), os.path.join(tmp, name + ".xml")
            r = run(["analyze", "--model", MODEL, "--label-set-dir", LABELSETS, "--cache", cache,
                     "--sr", sr, "--xml", xml, *paths])
            check(f"{name}: analyze exit 0", r.returncode == 0, r.stderr.strip()[-400:])
            if r.returncode != 0:
                continue
            findings = json.loads(r.stdout)
            series = findings["series"]
            check(f"{name}: one series, label sets applied", len(series) == 1 and series[0].get("label_sets"),
                  json.dumps(series)[:300])
            if name == "slide":
                used = series[0]["frames_used"]
                check("slide: tissue tiles used, with positions", len(used) >= 4 and all("tile_x" in f for f in used),
                      json.dumps(used)[:300])
            if name == "ct_series":
                used = [f["sop_instance"] for f in series[0]["frames_used"]]
                # Expected: 8 of the 12 slices at floor((i+0.5)*12/8), in position order.
                by_pos = sorted((pydicom.dcmread(os.path.join(ct_dir, f)) for f in os.listdir(ct_dir)),
                                key=lambda d: float(np.dot(np.cross(np.array(d.ImageOrientationPatient[:3], float),
                                                                     np.array(d.ImageOrientationPatient[3:], float)),
                                                            np.array(d.ImagePositionPatient, float))))
                want = [by_pos[int((i + 0.5) * 12 / 8)].SOPInstanceUID for i in range(8)]
                check("ct_series: frames picked along the slice normal", used == want,
                      f"got {used[:3]}..., want {want[:3]}...")
                check("ct_series: study UID", findings["study"] == ct_study)
            # dciodvfy: no errors
            v = subprocess.run(["dciodvfy", sr], capture_output=True, text=True)
            errors = [l for l in (v.stdout + v.stderr).splitlines() if l.startswith("Error")]
            warnings = [l for l in (v.stdout + v.stderr).splitlines() if l.startswith("Warning")]
            for w in warnings:
                print(f"     dciodvfy {name}: {w}")
            check(f"{name}: dciodvfy reports no error", not errors, "; ".join(errors[:3]))
            # One Software Versions value everywhere: the project version (the plugin writes it too).
            sw = pydicom.dcmread(sr, stop_before_pixels=True).get("SoftwareVersions")
            check(f"{name}: Software Versions is the project version {PROJECT_VERSION}",
                  str(sw) == PROJECT_VERSION, f"got {sw!r}")
            d = subprocess.run(["dsrdump", sr], capture_output=True, text=True)
            check(f"{name}: dsrdump reads it", d.returncode == 0 and "Imaging Measurement Report" in d.stdout)
            # our reader gives back what analyze printed
            rr = run(["read-sr", sr])
            check(f"{name}: read-sr exit 0", rr.returncode == 0, rr.stderr[-300:])
            if rr.returncode == 0:
                back = json.loads(rr.stdout)
                want = {(ls["name"], f["code"]["value"], f["code"]["scheme"]): f["probability"]
                        for s in series for ls in s["label_sets"] for f in ls["findings"]}
                got = {(ls["name"], f["code"]["value"], f["code"]["scheme"]): f["probability"]
                       for ls in back["label_sets"] for f in ls["findings"]}
                same = want.keys() == got.keys() and all(abs(want[k] - got[k]) < 1e-5 for k in want)
                check(f"{name}: SR findings equal analyze's ({len(want)} findings)", same,
                      f"only in analyze {sorted(set(want) - set(got))[:3]}, only in SR {sorted(set(got) - set(want))[:3]}")
                check(f"{name}: SR UID reported", back["sr_sop_instance"] == findings["sr"]["sop_instance_uid"])
            x = subprocess.run(["xmllint", "--noout", "--schema", XSD, xml], capture_output=True, text=True)
            check(f"{name}: XML validates against dsr2xml.xsd", x.returncode == 0, x.stderr[-300:])
            # determinism
            r2 = run(["analyze", "--model", MODEL, "--label-set-dir", LABELSETS, "--cache", cache,
                      "--sr", sr + ".2", *paths])
            uid2 = json.loads(r2.stdout)["sr"]["sop_instance_uid"] if r2.returncode == 0 else None
            check(f"{name}: a re-run gives the same SOP Instance UID", uid2 == findings["sr"]["sop_instance_uid"])

        # max aggregation runs and reports probabilities in [0, 1]
        r = run(["analyze", "--model", MODEL, "--label-set-dir", LABELSETS, "--cache", cache,
                 "--aggregate", "max", ct_dir])
        ok = r.returncode == 0 and all(0 <= f["probability"] <= 1 for s in json.loads(r.stdout)["series"]
                                       for ls in s["label_sets"] for f in ls["findings"])
        check("--aggregate max", ok, r.stderr[-300:])

        # several studies
        two = [os.path.join(SAMPLES, "CT_small.dcm"), os.path.join(SAMPLES, "MR_small.dcm")]
        r = run(["analyze", "--model", MODEL, "--label-set-dir", LABELSETS, "--cache", cache, *two])
        check("two studies without --out-dir: exit 1, says so", r.returncode == 1 and "more than one study" in r.stderr,
              r.stderr[-300:])
        out_dir = os.path.join(tmp, "reports")
        r = run(["analyze", "--model", MODEL, "--label-set-dir", LABELSETS, "--cache", cache,
                 "--out-dir", out_dir, *two])
        srs = sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else []
        check("two studies with --out-dir: two SRs, two JSON lines",
              r.returncode == 0 and len(srs) == 2 and len(r.stdout.strip().splitlines()) == 2, r.stderr[-300:])

        # bad label set, nothing to analyse
        bad = os.path.join(tmp, "bad.json")
        with open(bad, "w") as f:
            f.write('{"name": "x", "version": "1", "templates": ["no placeholder"], "labels": []}')
        r = run(["analyze", "--model", MODEL, "--label-set", bad, os.path.join(SAMPLES, "CT_small.dcm")])
        check("broken label set: exit 1 naming the file", r.returncode == 1 and "bad.json" in r.stderr, r.stderr[-300:])
        empty = os.path.join(tmp, "empty")
        os.makedirs(empty)
        with open(os.path.join(empty, "notes.txt"), "w") as f:
            f.write("not DICOM")
        r = run(["analyze", "--model", MODEL, "--label-set-dir", LABELSETS, "--cache", cache, empty])
        check("folder without DICOM: exit 1", r.returncode == 1 and r.stderr.strip(), r.stderr[-300:])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"analyze: {len(failures)} failures")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
