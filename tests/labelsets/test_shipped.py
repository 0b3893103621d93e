#!/usr/bin/python3
"""The shipped label sets (labelsets/*.json).

usage: test_shipped.py LABELSET_TOOL LABELSETS_DIR

Checks:
  - every set loads with the C loader (labelset_tool load);
  - the set's "name" is its file name without .json, "version" is x.y.z;
  - every SCT and DCM code is a code DICOM uses: found in DCMTK's code
    headers (/usr/include/dcmtk/dcmsr/codes/*.h) or in pydicom's concepts
    dictionary (pydicom/sr/_concepts_dict.py), with the same meaning
    (case-insensitive; for SCT also the fully specified name, i.e. the
    meaning followed by a " (semantic tag)" suffix);
  - private 99UNIMED codes look like UM-nnnn and each value has one meaning
    across all sets (and each meaning one value);
  - within a set no two labels share a code.
Exit 77 (skip) when neither code table is installed."""
import glob
import json
import os
import re
import subprocess
import sys

TOOL, DIR = sys.argv[1], sys.argv[2]
DCMTK_CODES = "/usr/include/dcmtk/dcmsr/codes"
PYDICOM_CONCEPTS = "/usr/lib/python3/dist-packages/pydicom/sr/_concepts_dict.py"

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL", msg)


def load_dcmtk():
    """{(scheme, value): set(meanings)} from DSRBasicCodedEntry("v", "S", "m")."""
    table = {}
    entry = re.compile(r'DSRBasicCodedEntry\(\s*"((?:[^"\\]|\\.)*)"\s*,\s*"((?:[^"\\]|\\.)*)"\s*,'
                       r'\s*"((?:[^"\\]|\\.)*)"\s*\)')
    for path in sorted(glob.glob(os.path.join(DCMTK_CODES, "*.h"))):
        with open(path, encoding="utf-8", errors="replace") as f:
            for value, scheme, meaning in entry.findall(f.read()):
                table.setdefault((scheme, value), set()).add(meaning)
    return table


def load_pydicom():
    """{(scheme, value): set(meanings)} from pydicom's concepts dictionary."""
    if not os.path.exists(PYDICOM_CONCEPTS):
        return {}
    ns = {}
    with open(PYDICOM_CONCEPTS, encoding="utf-8") as f:
        exec(compile(f.read(), PYDICOM_CONCEPTS, "exec"), ns)  # a generated dict literal
    table = {}
    for scheme, keywords in ns["concepts"].items():
        for codes in keywords.values():
            for value, (meaning, _cids) in codes.items():
                table.setdefault((scheme, value), set()).add(meaning)
    return table


def meaning_matches(scheme, ours, theirs):
    o = ours.strip().lower()
    for t in theirs:
        t = t.strip().lower()
        if t == o:
            return True
        # SNOMED fully specified name: "<term> (<semantic tag>)"
        if scheme == "SCT" and re.fullmatch(re.escape(o) + r" \([a-z /-]+\)", t):
            return True
    return False


def main():
    files = sorted(glob.glob(os.path.join(DIR, "*.json")))
    if not files:
        fail("no label sets in %s" % DIR)
        return 1
    tables = []
    if os.path.isdir(DCMTK_CODES):
        tables.append(("DCMTK", load_dcmtk()))
    pyd = load_pydicom()
    if pyd:
        tables.append(("pydicom", pyd))
    if not tables:
        print("SKIP: neither DCMTK's code headers nor pydicom's concepts dict is installed")
        return 77

    private_meaning = {}  # value -> (meaning, where)
    private_value = {}    # meaning -> (value, where)
    n_codes = 0
    for path in files:
        base = os.path.basename(path)
        p = subprocess.run([TOOL, "load", path], capture_output=True, text=True)
        if p.returncode != 0:
            fail("%s does not load: %s" % (base, p.stderr.strip()))
            continue
        print(p.stdout.strip())
        with open(path, encoding="utf-8") as f:
            ls = json.load(f)
        if ls["name"] + ".json" != base:
            fail("%s: name %r is not the file name" % (base, ls["name"]))
        if not re.fullmatch(r"\d+\.\d+\.\d+", ls["version"]):
            fail("%s: version %r is not x.y.z" % (base, ls["version"]))
        seen = {}
        for i, label in enumerate(ls["labels"]):
            code = label["code"]
            key = (code["scheme"], code["value"])
            where = "%s: labels[%d] (%s)" % (base, i, label["name"])
            n_codes += 1
            if key in seen:
                fail("%s: same code %s as labels[%d]" % (where, key, seen[key]))
            seen[key] = i
            if code["scheme"] in ("SCT", "DCM"):
                found = [(name, t[key]) for name, t in tables if key in t]
                if not found:
                    fail("%s: %s %s %r is in no DICOM code table (%s)" %
                         (where, code["scheme"], code["value"], code["meaning"],
                          ", ".join(n for n, _ in tables)))
                    continue
                if not any(meaning_matches(code["scheme"], code["meaning"], m) for _, m in found):
                    fail("%s: %s %s meaning %r; the tables say %s" %
                         (where, code["scheme"], code["value"], code["meaning"],
                          sorted(set().union(*[m for _, m in found]))))
                    continue
                print("  %-9s %-10s %-32s found in %s" % (code["scheme"], code["value"],
                                                          code["meaning"],
                                                          "+".join(n for n, _ in found)))
            elif code["scheme"] == "99UNIMED":
                if not re.fullmatch(r"UM-\d{4}", code["value"]):
                    fail("%s: private code %r is not UM-nnnn" % (where, code["value"]))
                m = code["meaning"]
                if code["value"] in private_meaning and private_meaning[code["value"]][0] != m:
                    fail("%s: %s means %r here but %r in %s" %
                         (where, code["value"], m, *private_meaning[code["value"]]))
                if m in private_value and private_value[m][0] != code["value"]:
                    fail("%s: %r is %s here but %s in %s" % (where, m, code["value"],
                                                            *private_value[m]))
                private_meaning.setdefault(code["value"], (m, where))
                private_value.setdefault(m, (code["value"], where))
                print("  %-9s %-10s %s" % (code["scheme"], code["value"], m))
            else:
                fail("%s: scheme %r; shipped sets use SCT, DCM or 99UNIMED" %
                     (where, code["scheme"]))
    print("%d sets, %d codes, %d failures" % (len(files), n_codes, len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
