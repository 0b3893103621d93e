#!/usr/bin/env python3
"""Copies the files of the studies with a given label out of an Orthanc
study-archive ZIP into a folder, so that train.sh can list that folder
several times (oversampling one label of one data set).

usage: extract_studies.py ARCHIVE.zip LABELS.csv LABEL OUT_DIR

LABELS.csv has a StudyInstanceUID and a label column (MedMNIST's CSVs in
../shared/data/medmnist). A file belongs to a study when the study's UID
occurs in it as a complete UID value (the DICOM bytes are searched, so only
the standard library is needed). Prints how many studies and files it wrote.
"""
import csv
import os
import re
import sys
import zipfile

UID = re.compile(rb"[0-9]+(?:\.[0-9]+)+")


def main(argv):
    if len(argv) != 5:
        sys.stderr.write(__doc__)
        return 2
    archive, labels, label, out = argv[1:]
    with open(labels, newline="") as f:
        wanted = {row["StudyInstanceUID"] for row in csv.DictReader(f) if row["label"] == label}
    if not wanted:
        sys.stderr.write(f"{labels}: no study has label {label!r}\n")
        return 1
    found, files = set(), 0
    with zipfile.ZipFile(archive) as z:
        for info in z.infolist():
            if info.is_dir():
                continue
            data = z.read(info)
            hit = {u.decode() for u in UID.findall(data)} & wanted
            if not hit:
                continue
            found |= hit
            path = os.path.join(out, f"{files:06d}.dcm")
            os.makedirs(out, exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
            files += 1
    if found != wanted:
        sys.stderr.write(f"{archive}: {len(wanted - found)} studies labelled {label!r} not found\n")
        return 1
    print(f"{archive}: {len(found)} studies labelled {label!r}, {files} files -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
