#!/usr/bin/python3
"""cli_model_card: `unimed analyze` and the model card (docs/MODEL.md).

usage: test_model_card.py UNIMED MODEL_DIR LABELSET_DIR

The model directory of the ref_small fixture has no card; the test works on
a temporary copy (its files linked) and writes the cards there. With a card
that lists chest-xray 1.0.0, a chest radiograph analysed with:
 - chest-xray only: no warning on stderr, "label_set_warnings" empty, no
   "warning" on the label set, no Comment in the SR;
 - modality (not listed): one warning line on stderr naming the set, the same
   text in "label_set_warnings" and on the label set's entry, and as the
   TEXT Comment of its measurement group in the SR (read back with `unimed
   read-sr` and pydicom); the SR passes dciodvfy; chest-xray's group has none;
 - a card listing chest-xray 0.9.0 only: the warning names the listed version;
 - a card for other weights (model_hash): every set warns;
 - no card at all: no warning anywhere;
 - malformed cards: exit 1, one error naming the card file and the field."""
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

UNIMED, MODEL, LABELSETS = (os.path.abspath(p) for p in sys.argv[1:4])
CHEST = os.path.join(LABELSETS, "chest-xray.json")
MODALITY = os.path.join(LABELSETS, "modality.json")
failures = []


def check(name, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + name + ("" if ok or not detail else ": %s" % (detail,)))
    if not ok:
        failures.append(name)


def label_set(path):
    with open(path) as f:
        d = json.load(f)
    return d["name"], d["version"]


def make_chest_radiograph(path):
    """One CR chest image (chest-xray and modality both apply to it)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Card^Test", "CARD1", "19700101", "O"
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", "ACC1"
    ds.ReferringPhysicianName = ""
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CR", 1, 1
    ds.BodyPartExamined, ds.ViewPosition = "CHEST", "PA"
    ds.Rows = ds.Columns = 48
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelSpacing = [0.7, 0.7]
    ds.PixelData = np.random.default_rng(5).integers(0, 4096, (48, 48), dtype=np.uint16).tobytes()
    ds.save_as(path, write_like_original=False)


def analyze(model, sets, image, sr=None):
    args = [UNIMED, "analyze", "--model", model, "--no-cache"]
    for s in sets:
        args += ["--label-set", s]
    if sr:
        args += ["--sr", sr]
    p = subprocess.run(args + [image], capture_output=True, text=True, timeout=300)
    out = json.loads(p.stdout) if p.returncode == 0 and p.stdout.strip() else None
    return p.returncode, out, p.stderr


def set_entries(findings):
    """{label-set name: its entry} over the series of a findings JSON."""
    return {ls["name"]: ls for s in findings["series"] for ls in s.get("label_sets", [])}


def sr_comments(path):
    """{label_set_name: [Comment texts directly in its measurement group]} (pydicom)."""
    ds = pydicom.dcmread(path)
    out = {}

    def code(it):
        c = it.get("ConceptNameCodeSequence")
        return (c[0].CodeValue, c[0].CodingSchemeDesignator) if c else None

    def walk(items):
        for it in items:
            if code(it) == ("125007", "DCM"):
                name, texts = None, []
                for c in it.get("ContentSequence", []):
                    if code(c) == ("111002", "DCM") and str(c.TextValue).startswith("label_set_name="):
                        name = str(c.TextValue).split("=", 1)[1]
                    if code(c) == ("121106", "DCM") and c.ValueType == "TEXT" \
                            and c.RelationshipType == "CONTAINS":
                        texts.append(str(c.TextValue))
                out[name] = texts
            elif "ContentSequence" in it:
                walk(it.ContentSequence)

    walk(ds.ContentSequence)
    return out


def dciodvfy_errors(path):
    p = subprocess.run(["dciodvfy", path], capture_output=True, text=True)
    return [l for l in (p.stdout + p.stderr).splitlines() if l.startswith("Error")]


def write_card(model, sets, model_hash=None, raw=None):
    path = os.path.join(model, "model-card.json")
    if raw is not None:
        with open(path, "w") as f:
            f.write(raw)
        return
    card = {"format": "unimed-model-card/1", "name": "ref_small", "version": "test",
            "intended_use": "tests only", "clinical_use": False,
            "label_sets": [{"name": n, "version": v, "question": "test question"} for n, v in sets]}
    if model_hash:
        card["model_hash"] = model_hash
    with open(path, "w") as f:
        json.dump(card, f)


def main():
    chest, modality = label_set(CHEST), label_set(MODALITY)
    with tempfile.TemporaryDirectory(prefix="unimed-card-") as tmp:
        model = os.path.join(tmp, "model")
        os.makedirs(model)
        for name in os.listdir(MODEL):  # the fixture itself stays as it is
            src = os.path.join(MODEL, name)
            if os.path.isfile(src):
                os.symlink(src, os.path.join(model, name))
        check("the fixture model has no card", not os.path.exists(os.path.join(MODEL, "model-card.json")))
        image = os.path.join(tmp, "cr.dcm")
        make_chest_radiograph(image)
        info = json.loads(subprocess.run([UNIMED, "info", "--model", model], capture_output=True,
                                         text=True, check=True).stdout)
        write_card(model, [chest], model_hash=info["hash"])

        # a listed set: no warning anywhere
        sr = os.path.join(tmp, "listed.dcm")
        rc, out, err = analyze(model, [CHEST], image, sr)
        entries = set_entries(out) if out else {}
        check("listed set: analyze succeeds", rc == 0 and chest[0] in entries, err)
        check("listed set: no warning on stderr", "warning" not in err, err)
        check("listed set: label_set_warnings is empty", out is not None and out.get("label_set_warnings") == [],
              out and out.get("label_set_warnings"))
        check("listed set: no warning on the label set", chest[0] in entries and "warning" not in entries[chest[0]])
        check("listed set: no Comment in the SR", os.path.exists(sr) and sr_comments(sr) == {chest[0]: []},
              os.path.exists(sr) and sr_comments(sr))

        # an unlisted set beside it: warned about, once, everywhere
        sr = os.path.join(tmp, "unlisted.dcm")
        rc, out, err = analyze(model, [CHEST, MODALITY], image, sr)
        entries = set_entries(out) if out else {}
        lines = [l for l in err.splitlines() if l.startswith("unimed: warning:")]
        check("unlisted set: analyze succeeds", rc == 0 and set(entries) == {chest[0], modality[0]}, err)
        check("unlisted set: one warning line on stderr naming it",
              len(lines) == 1 and '"%s" %s' % modality in lines[0] and "not validated" in lines[0], lines)
        warnings = out.get("label_set_warnings") if out else None
        check("unlisted set: label_set_warnings names it",
              warnings and len(warnings) == 1 and warnings[0]["label_set"] == modality[0]
              and warnings[0]["version"] == modality[1] and lines
              and lines[0] == "unimed: warning: " + warnings[0]["warning"], warnings)
        text = warnings[0]["warning"] if warnings else None
        check("unlisted set: its entry carries the warning, the listed one none",
              entries.get(modality[0], {}).get("warning") == text and "warning" not in entries.get(chest[0], {}))
        comments = sr_comments(sr) if os.path.exists(sr) else {}
        check("unlisted set: the SR carries it as the Comment of its group (pydicom)",
              comments == {chest[0]: [], modality[0]: [text]}, comments)
        rs = subprocess.run([UNIMED, "read-sr", sr], capture_output=True, text=True)
        back = {s["name"]: s.get("comments") for s in json.loads(rs.stdout)["label_sets"]} \
            if rs.returncode == 0 else rs.stderr
        check("unlisted set: `unimed read-sr` gives the comment back",
              back == {chest[0]: None, modality[0]: [text]}, back)
        errs = dciodvfy_errors(sr) if shutil.which("dciodvfy") else []
        check("unlisted set: the SR passes dciodvfy", not errs, errs[:3])
        with open(os.path.join(tmp, "listed.dcm"), "rb") as a, open(sr, "rb") as b:
            check("the two reports differ in SOP Instance UID",
                  pydicom.dcmread(a).SOPInstanceUID != pydicom.dcmread(b).SOPInstanceUID)

        # another version listed: the warning names it
        write_card(model, [(chest[0], "0.9.0")], model_hash=info["hash"])
        rc, out, err = analyze(model, [CHEST], image)
        check("another version listed: warned, naming the listed version",
              rc == 0 and "in version 0.9.0 only" in err and len(out["label_set_warnings"]) == 1, err)

        # a card for other weights vouches for nothing
        write_card(model, [chest, modality], model_hash="0123456789abcdef")
        rc, out, err = analyze(model, [CHEST, MODALITY], image)
        check("a card for other weights: every set warned about",
              rc == 0 and len(out["label_set_warnings"]) == 2 and err.count("other weights") == 2, err)

        # no card: silence
        os.unlink(os.path.join(model, "model-card.json"))
        sr = os.path.join(tmp, "nocard.dcm")
        rc, out, err = analyze(model, [CHEST, MODALITY], image, sr)
        entries = set_entries(out) if out else {}
        check("no card: no warning at all",
              rc == 0 and "warning" not in err and out["label_set_warnings"] == []
              and all("warning" not in e for e in entries.values())
              and all(not c for c in sr_comments(sr).values()), err)

        # malformed cards: the run stops with the file and the field
        card_path = os.path.join(model, "model-card.json")
        for name, raw, field in (
                ("not JSON", "{\"format\": ", "not valid JSON"),
                ("no version", json.dumps({"format": "unimed-model-card/1",
                                           "label_sets": [{"name": chest[0]}]}), "label_sets[0].version"),
                ("unknown format", json.dumps({"format": "model-card/9", "label_sets": []}), "format")):
            write_card(model, None, raw=raw)
            rc, out, err = analyze(model, [CHEST], image)
            check("malformed card (%s): exit 1, error names %s and %s" % (name, card_path, field),
                  rc == 1 and out is None and card_path + ": " in err and field in err, err.strip())
    if failures:
        print("%d failure(s): %s" % (len(failures), failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
