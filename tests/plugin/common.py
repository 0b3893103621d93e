"""Shared helpers of the plugin integration tests: sample studies (pydicom,
random pixels, fresh UIDs), a running Orthanc with the plugin, waiting."""

import contextlib
import io
import json
import os
import subprocess
import sys
import time

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "orthanc"))

from run import Orthanc  # noqa: E402,F401

SOP_CLASS = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "CR": "1.2.840.10008.5.1.4.1.1.1",
}


def env_paths():
    """(plugin, model) from the environment set by CMake."""
    plugin = os.environ.get("UNIMED_PLUGIN")
    model = os.environ.get("UNIMED_TEST_MODEL")
    if not plugin or not os.path.isfile(plugin):
        sys.exit("UNIMED_PLUGIN must point at libOrthancUniMed.so")
    if not model or not os.path.isfile(os.path.join(model, "config.json")):
        sys.exit("UNIMED_TEST_MODEL must point at a model directory (fixture ref_small)")
    return plugin, model


def make_instance(study_uid, series_uid, modality, number, rng, rows=32, cols=32,
                  patient_id="P1", patient_name="Test^Patient", study_date="20240102",
                  series_number=1, broken=False):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SOP_CLASS[modality]
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = SOP_CLASS[modality]
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = modality
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = study_date
    ds.StudyTime = "120000"
    ds.SeriesDate = study_date
    ds.AccessionNumber = "A%06d" % rng.integers(0, 999999)
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = number
    ds.Manufacturer = "UniMed tests"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelSpacing = [0.7, 0.7]
    if modality in ("CT", "MR"):
        ds.ImagePositionPatient = [0, 0, float(number) * 2.5]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceThickness = 2.5
    if modality == "CT":
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.KVP = 120
    if modality == "CR":
        ds.BodyPartExamined = "CHEST"
        ds.ViewPosition = "PA"
    pix = rng.integers(0, 4096, size=(rows, cols), dtype=np.uint16)
    if broken:
        # Claims 32x32 16-bit pixels but holds 10 bytes: undecodable.
        ds.PixelData = b"\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a"
    else:
        ds.PixelData = pix.tobytes()
    ds["PixelData"].VR = "OW"
    bio = io.BytesIO()
    ds.save_as(bio, write_like_original=False)
    return bio.getvalue()


def make_study(modality="CT", n_series=1, n_instances=3, seed=0, broken=False, **kw):
    """A study as a list of Part-10 byte strings; returns (study_uid, files)."""
    rng = np.random.default_rng(seed)
    study_uid = generate_uid()
    files = []
    for s in range(n_series):
        series_uid = generate_uid()
        for i in range(n_instances):
            files.append(make_instance(study_uid, series_uid, modality, i + 1, rng,
                                       series_number=s + 1, broken=broken, **kw))
    return study_uid, files


def upload(o, files):
    """POST /instances; returns the Orthanc study ID. An instance Orthanc
    could not write to its storage (HTTP 500, OrthancStatus 2001) is sent
    again, as a modality would: Orthanc 1.10 reports that when two uploads
    create the same new storage folder at the same moment."""
    study = None
    for data in files:
        for attempt in range(3):
            status, ans = o.post("/instances", data, headers={"Content-Type": "application/dicom"})
            if not (status == 500 and isinstance(ans, dict) and ans.get("OrthancStatus") == 2001):
                break
            print("upload: Orthanc could not write the file (%s); sending it again" % ans.get("Message"))
            time.sleep(0.2)
        if status != 200:
            raise AssertionError("upload failed: HTTP %s %r" % (status, ans))
        study = ans["ParentStudy"]
    return study


def wait_for(fn, timeout=120, interval=0.3, what="condition"):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("timed out after %ss waiting for %s (last: %r)" % (timeout, what, last))


def study_result(o, study, timeout=120):
    """Waits until GET /unimed/studies/{id} is final (not 202)."""
    def ready():
        status, ans = o.get("/unimed/studies/" + study)
        return (status, ans) if status != 202 and status != 404 else None
    return wait_for(ready, timeout, what="the analysis of " + study)


def sr_instances(o, study):
    """Orthanc IDs of the SR instances of a study."""
    status, series = o.get("/studies/%s/series" % study)
    assert status == 200, series
    out = []
    for s in series:
        if s["MainDicomTags"].get("Modality") == "SR":
            out.extend(s["Instances"])
    return out


def storescu(o, paths):
    cmd = ["storescu", "-aet", "STORESCU", "-aec", o.aet, "127.0.0.1", str(o.dicom_port)] + paths
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise AssertionError("storescu failed (%d): %s %s" % (r.returncode, r.stdout, r.stderr))


def store_study_over_dicom(o, study_uid, files, folder):
    """Writes a study's files into folder, sends them with C-STORE and returns
    the study's Orthanc ID."""
    paths = []
    for i, data in enumerate(files):
        p = os.path.join(folder, "%s-%d.dcm" % (study_uid, i))
        with open(p, "wb") as f:
            f.write(data)
        paths.append(p)
    storescu(o, paths)
    st, found = o.post("/tools/lookup", study_uid)
    return [x["ID"] for x in found if x["Type"] == "Study"][0]


class Check:
    """Counts failed checks; prints each one."""

    def __init__(self, name):
        self.name = name
        self.failures = 0

    def __call__(self, cond, msg):
        print(("ok   " if cond else "FAIL ") + msg, flush=True)
        if not cond:
            self.failures += 1
        return cond

    def done(self):
        print("%s: %s" % (self.name, "passed" if not self.failures else "%d check(s) failed" % self.failures))
        return 1 if self.failures else 0


@contextlib.contextmanager
def orthanc_session(o, ok, log_lines=30):
    """Starts Orthanc `o`; on the way out (also after an exception) stops it,
    prints the end of its log when a check of `ok` failed, and removes its
    files."""
    try:
        o.start()
        yield o
    finally:
        o.stop()
        if ok.failures:
            print(o.log_tail(log_lines))
        o.cleanup()


def dump(obj):
    return json.dumps(obj, indent=1)[:2000]
