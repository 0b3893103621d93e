#!/usr/bin/python3
"""faults_decode_budget: a 4 MiB RLE file declaring 16384 x 16383 pixels
(a decompression bomb: 1 GiB as 32-bit samples) is refused from its header
by the decode budget ("DecodeBudgetMB", default 128), through POST classify
and through a plain upload alike, with a reason naming the limit; Orthanc's
peak resident memory stays far below what decoding it would take."""

import io
import sys

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import RLELossless, generate_uid

from faultlib import (Check, Orthanc, env_paths, orthanc_session, rss_kib, skip_if_sanitizer,
                      study_result, upload)

ROWS, COLS = 16383, 16384
BOUND_KIB = 1024 * 1024  # 1 GiB: decoding the bomb took 5.4 GiB


def rle_bomb():
    # One segment of zeros, each row encoded separately: 128 packets of
    # "repeat 0 128 times" per row.
    row = bytes([0x81, 0]) * (COLS // 128)
    segment = row * ROWS
    header = np.zeros(16, dtype="<u4")
    header[0], header[1] = 1, 64
    frame = header.tobytes() + segment
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = RLELossless
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientID, ds.PatientName = "OT", "BOMB", "Bomb^Test"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = ROWS, COLS
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    bio = io.BytesIO()
    ds.save_as(bio, write_like_original=False)
    return bio.getvalue()


def main():
    skip_if_sanitizer()
    plugin, model = env_paths()
    ok = Check("faults_decode_budget")
    data = rle_bomb()
    print("RLE file: %d bytes declaring %dx%d pixels" % (len(data), COLS, ROWS))
    o = Orthanc(plugin, model, extra={"StableAge": 1})
    with orthanc_session(o, ok, 60):
        st, r = o.post("/unimed/classify", data, headers={"Content-Type": "application/dicom"})
        err = (r or {}).get("error", "") if isinstance(r, dict) else str(r)
        ok(st == 400 and "exceeds the limit" in err, "classify: HTTP %s, %r" % (st, err[:300]))
        sid = upload(o, [data])
        st, a = study_result(o, sid)
        ok(a.get("state") == "failed", "upload: the study fails (state %r)" % a.get("state"))
        ok("exceeds the limit" in a.get("error", "") or "exceeds the limit" in str(a),
           "the reason names the limit: %r" % a.get("error", "")[:300])
        peak = rss_kib(o.proc.pid, "VmHWM")
        ok(0 < peak < BOUND_KIB, "Orthanc's peak RSS %d MiB < %d MiB" % (peak // 1024, BOUND_KIB // 1024))
        ok(o.get("/system")[0] == 200, "Orthanc answers")
    return ok.done()


if __name__ == "__main__":
    sys.exit(main())
