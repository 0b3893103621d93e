#!/usr/bin/python3
"""Independent checks of the SR written by `test_sr write OUTDIR ...`.

    check_sr.py dciodvfy OUTDIR SOURCE   dicom3tools: no "Error" lines
    check_sr.py dsrdump  OUTDIR SOURCE   DCMTK dsrdump reads it; findings shown
    check_sr.py pydicom  OUTDIR SOURCE   patient/study equal the source's,
                                         header, evidence, equipment, content
Exit 0 = pass, 1 = fail, 77 = skipped (tool missing).
"""
import json
import math
import os
import shutil
import subprocess
import sys

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def load_json(outdir):
    with open(os.path.join(outdir, "report.json"), encoding="utf-8") as f:
        return json.load(f)


def check_dciodvfy(outdir, _source):
    tool = shutil.which("dciodvfy")
    if not tool:
        print("SKIP: dciodvfy not installed")
        sys.exit(77)
    for name in ("report.dcm", "report_long_name.dcm"):
        p = subprocess.run([tool, os.path.join(outdir, name)], capture_output=True, text=True)
        lines = (p.stdout + p.stderr).splitlines()
        errors = [l for l in lines if l.startswith("Error")]
        warnings = [l for l in lines if l.startswith("Warning")]
        print(f"dciodvfy output for {name}:")
        for l in lines:
            print("  " + l)
        print(f"{len(errors)} errors, {len(warnings)} warnings")
        if errors:
            fail(f"dciodvfy reported errors in {name}")
        if not any("ComprehensiveSR" in l for l in lines):
            fail(f"dciodvfy did not recognise a Comprehensive SR in {name}")


def check_dsrdump(outdir, _source):
    tool = shutil.which("dsrdump")
    if not tool:
        print("SKIP: dsrdump not installed")
        sys.exit(77)
    p = subprocess.run([tool, os.path.join(outdir, "report.dcm")], capture_output=True)
    out = p.stdout.decode("utf-8", "replace")
    print(out)
    if p.returncode != 0:
        fail(f"dsrdump exit {p.returncode}: {p.stderr.decode('utf-8', 'replace')}")
    js = load_json(outdir)
    for s in js["label_sets"]:
        for f in s["findings"]:
            c = f["code"]
            want = f'=({c["value"]},{c["scheme"]},"{c["meaning"]}")'
            if want not in out:
                fail(f"dsrdump output lacks the finding {want}")
        if f'"Tracking Identifier")="UniMed {s["name"]} {s["version"]}"' not in out:
            fail(f"dsrdump output lacks the group of {s['name']}")
    probs = [l for l in out.splitlines() if '"Probability")=' in l]
    n = sum(len(s["findings"]) for s in js["label_sets"])
    if len(probs) != n:
        fail(f"{len(probs)} Probability items, expected {n}")
    for s in js["label_sets"]:
        for f in s["findings"]:
            if not any(abs(float(l.split('="')[1].split('"')[0]) - f["probability"]) < 1e-6 for l in probs):
                fail(f"probability {f['probability']} not in dsrdump output")
    for key in ("Imaging Measurement Report", "Image Library", "Completion Flag     : PARTIAL",
                "Verification Flag   : UNVERIFIED", "UniMed AI findings \u2014 research use only (#9901)"):
        if key not in out:
            fail(f"dsrdump output lacks {key!r}")
    print("dsrdump: all findings and probabilities present")


def code_of(item):
    c = item.ConceptNameCodeSequence[0]
    return (c.CodeValue, c.CodingSchemeDesignator)


def check_pydicom(outdir, source):
    try:
        import pydicom
    except ImportError:
        print("SKIP: pydicom not available")
        sys.exit(77)
    # A model name over 64 bytes: the Long String attributes hold it cut on
    # a character boundary, the observer context's TEXT item holds it whole.
    long_sr = pydicom.dcmread(os.path.join(outdir, "report_long_name.dcm"))
    full = "UniMed-CLIP demonstration model trained on MedMNIST at 224 px \u2014 not for clinical use"
    cut = long_sr.ManufacturerModelName
    if len(cut.encode("utf-8")) > 64 or not (full + " ").startswith(cut) or len(cut) < 60:
        fail(f"Manufacturer's Model Name not cut to a 64-byte prefix: {cut!r}")
    texts = [it.TextValue for it in long_sr.ContentSequence if "TextValue" in it]
    if not any(t.startswith(full) for t in texts):
        fail(f"the observer context lost the full model name: {texts!r}")
    print(f"long model name: attribute {cut!r}, TEXT item keeps it whole")

    sr = pydicom.dcmread(os.path.join(outdir, "report.dcm"))
    src = pydicom.dcmread(source)
    js = load_json(outdir)

    same = ["PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
            "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber"]
    for kw in same:
        a, b = sr.get(kw, None), src.get(kw, None)
        if str(a if a is not None else "") != str(b if b is not None else ""):
            fail(f"{kw}: SR {a!r} != source {b!r}")
        print(f"{kw:24s} {str(a)!r}  (= source)")

    expect = {
        "SOPClassUID": COMPREHENSIVE_SR,
        "Modality": "SR",
        "SeriesDescription": "UniMed AI findings \u2014 research use only",
        "SeriesNumber": 9901,
        "VerificationFlag": "UNVERIFIED",
        "CompletionFlag": "PARTIAL",
        "SpecificCharacterSet": "ISO_IR 192",
        "SOPInstanceUID": js["sr_sop_instance"],
        "SeriesInstanceUID": js["sr_series"],
    }
    for kw, v in expect.items():
        if sr.get(kw) != v:
            fail(f"{kw}: {sr.get(kw)!r} != {v!r}")
    if sr.file_meta.MediaStorageSOPInstanceUID != sr.SOPInstanceUID:
        fail("File Meta SOP Instance UID differs from the dataset's")
    for kw in ("SOPInstanceUID", "SeriesInstanceUID"):
        v = str(sr.get(kw))
        if not v.startswith("2.25.") or len(v) > 64:
            fail(f"{kw} {v} is not a 2.25 UID of <= 64 characters")
    for kw in ("InstanceCreationDate", "InstanceCreationTime", "ContentDate", "ContentTime"):
        if not sr.get(kw):
            fail(f"{kw} missing")
    tpl = sr.ContentTemplateSequence[0]
    if (tpl.TemplateIdentifier, tpl.MappingResource) != ("1500", "DCMR"):
        fail("ContentTemplateSequence is not TID 1500 / DCMR")

    # Contributing Equipment: the model as processing equipment
    ce = sr.ContributingEquipmentSequence[0]
    pr = ce.PurposeOfReferenceCodeSequence[0]
    if (pr.CodeValue, pr.CodingSchemeDesignator) != ("109102", "DCM"):
        fail(f"Purpose of Reference {pr.CodeValue}")
    if not ce.Manufacturer or not ce.SoftwareVersions or js["model"]["name"] not in ce.ManufacturerModelName:
        fail("Contributing Equipment lacks manufacturer / model / software version")

    # Evidence: every referenced instance, with study and series
    evidence = set()
    for st in sr.CurrentRequestedProcedureEvidenceSequence:
        for se in st.ReferencedSeriesSequence:
            for so in se.ReferencedSOPSequence:
                evidence.add((st.StudyInstanceUID, se.SeriesInstanceUID, so.ReferencedSOPInstanceUID))
    for im in js["images"]:
        if (im["study"], im["series"], im["sop_instance"]) not in evidence:
            fail(f"{im['sop_instance']} missing from Current Requested Procedure Evidence")
    if (src.StudyInstanceUID, src.SeriesInstanceUID, src.SOPInstanceUID) not in evidence:
        fail("the source image is not in the evidence")
    print(f"evidence: {len(evidence)} instances")

    # Coding scheme of the private codes is identified
    schemes = {i.CodingSchemeDesignator for i in sr.get("CodingSchemeIdentificationSequence", [])}
    if "99UNIMED" not in schemes:
        fail("99UNIMED missing from Coding Scheme Identification Sequence")

    # Content: measurement groups, findings and probabilities equal the JSON
    root = sr
    if code_of(root) != ("126000", "DCM"):
        fail("root concept is not Imaging Measurement Report")
    meas = [i for i in root.ContentSequence if code_of(i) == ("126010", "DCM")]
    if len(meas) != 1:
        fail("no Imaging Measurements container")
    groups = [i for i in meas[0].ContentSequence if code_of(i) == ("125007", "DCM")]
    if len(groups) != len(js["label_sets"]):
        fail(f"{len(groups)} groups, expected {len(js['label_sets'])}")
    for g, s in zip(groups, js["label_sets"]):
        findings = [i for i in g.ContentSequence if code_of(i) == ("121071", "DCM")]
        if len(findings) != len(s["findings"]):
            fail(f"group {s['name']}: {len(findings)} findings")
        for item, f in zip(findings, s["findings"]):
            c = item.ConceptCodeSequence[0]
            if (c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning) != (
                    f["code"]["value"], f["code"]["scheme"], f["code"]["meaning"]):
                fail(f"finding code {c.CodeValue} != {f['code']}")
            num = [i for i in item.ContentSequence if code_of(i) == ("122157", "DCM")][0]
            mv = num.MeasuredValueSequence[0]
            if not math.isclose(float(mv.FloatingPointValue), f["probability"], abs_tol=1e-12):
                fail("FloatingPointValue differs")
            if abs(float(mv.NumericValue) - f["probability"]) > 1e-6:
                fail("NumericValue differs")
            u = mv.MeasurementUnitsCodeSequence[0]
            if (u.CodeValue, u.CodingSchemeDesignator) != ("1", "UCUM"):
                fail("unit is not UCUM 1")
            srcs = [i for i in num.ContentSequence if code_of(i) == ("121112", "DCM")]
            if not srcs or any(i.RelationshipType != "INFERRED FROM" for i in srcs):
                fail("Source of Measurement missing")
    # multi-frame reference keeps its frames
    frames = []
    for im in js["images"]:
        frames += im["frames"]
    if sorted(frames) != [2, 5]:
        fail(f"frames in JSON {frames}")
    print("pydicom: header, patient/study, evidence, equipment and content agree")


def main():
    if len(sys.argv) != 4:
        print(__doc__)
        sys.exit(2)
    {"dciodvfy": check_dciodvfy, "dsrdump": check_dsrdump, "pydicom": check_pydicom}[sys.argv[1]](
        sys.argv[2], sys.argv[3])
    print("PASS")


if __name__ == "__main__":
    main()
