#!/usr/bin/python3
"""Bad label sets: each is rejected with one line naming the file and the field.

usage: test_bad_sets.py LABELSET_TOOL WORK_DIR

Every case starts from a valid set, breaks one thing, writes it as
WORK_DIR/<case>.json and runs `labelset_tool load` on it: the exit status
must be 1 and stderr one line that contains "<case>.json", the field and
the expected words. The valid base set must load."""
import copy
import json
import os
import subprocess
import sys

TOOL, WORK = sys.argv[1], sys.argv[2]
failures = []
passed = 0

BASE = {
    "name": "bad-base",
    "version": "1.0.0",
    "description": "valid base for the bad-set cases",
    "applies_to": {"modalities": ["CR", "DX"], "body_parts": ["CHEST"], "sop_classes": []},
    "scoring": "binary",
    "templates": ["a chest X-ray showing {}.", "a radiograph with {}."],
    "negative_templates": ["a chest X-ray showing no {}."],
    "labels": [
        {"name": "pleural effusion",
         "code": {"value": "60046008", "scheme": "SCT", "meaning": "Pleural effusion"},
         "synonyms": ["fluid in the pleural space"]},
        {"name": "pneumothorax",
         "code": {"value": "36118008", "scheme": "SCT", "meaning": "Pneumothorax"}},
        {"name": "pneumonia",
         "code": {"value": "UM-0103", "scheme": "99UNIMED", "meaning": "Pneumonia"},
         "prompts": ["a chest X-ray with pneumonia."],
         "negative_prompts": ["a chest X-ray without pneumonia."]},
    ],
}

# Verhoeff tables, to build identifiers with a correct check digit.
D = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 0, 6, 7, 8, 9, 5], [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
     [3, 4, 0, 1, 2, 8, 9, 5, 6, 7], [4, 0, 1, 2, 3, 9, 5, 6, 7, 8], [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
     [6, 5, 9, 8, 7, 1, 0, 4, 3, 2], [7, 6, 5, 9, 8, 2, 1, 0, 4, 3], [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
     [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]]
P = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 5, 7, 6, 2, 8, 3, 0, 9, 4], [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
     [8, 9, 1, 6, 0, 4, 3, 5, 2, 7], [9, 4, 5, 3, 1, 2, 6, 8, 7, 0], [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
     [2, 7, 9, 3, 8, 0, 6, 4, 1, 5], [7, 0, 4, 6, 9, 1, 3, 2, 5, 8]]
INV = [0, 4, 3, 2, 1, 5, 6, 7, 8, 9]


def with_check_digit(body):
    c = 0
    for i, ch in enumerate(reversed(body)):
        c = D[c][P[(i + 1) % 8][int(ch)]]
    return body + str(INV[c])


assert with_check_digit("6004600") == "60046008"  # Pleural effusion


def run(path):
    p = subprocess.run([TOOL, "load", path], capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


def case(name, mutate=None, *words, raw=None):
    """mutate(set_dict) breaks a copy of BASE; raw gives the file text instead."""
    global passed
    path = os.path.join(WORK, name + ".json")
    if raw is None:
        s = copy.deepcopy(BASE)
        mutate(s)
        raw = json.dumps(s, indent=2)
    with open(path, "w", encoding="utf-8") as f:
        f.write(raw)
    rc, out, err = run(path)
    problems = []
    if rc != 1:
        problems.append("exit %d, expected 1" % rc)
    lines = err.strip().split("\n")
    if len(lines) != 1:
        problems.append("%d lines on stderr, expected 1" % len(lines))
    for w in (name + ".json",) + words:
        if w not in err:
            problems.append("stderr lacks %r" % w)
    if "Sanitizer" in err or "runtime error" in err:
        problems.append("sanitizer report")
    if problems:
        failures.append(name)
        print("FAIL %-28s %s\n     stderr: %s" % (name, "; ".join(problems), err.strip()))
    else:
        passed += 1
        print("ok   %-28s %s" % (name, err.strip()))


def setitem(path, value):
    def f(s):
        o = s
        for k in path[:-1]:
            o = o[k]
        o[path[-1]] = value
    return f


def delitem(path):
    def f(s):
        o = s
        for k in path[:-1]:
            o = o[k]
        del o[path[-1]]
    return f


def dump(s, name):
    path = os.path.join(WORK, name + ".json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(s, f)
    p = subprocess.run([TOOL, "dump", path], capture_output=True, text=True, timeout=60)
    return json.loads(p.stdout) if p.returncode == 0 else {"error": p.stderr.strip()}


def check_orthanc_defaults():
    """The documented defaults and overrides of the Orthanc label rule."""
    global passed
    got = dump(BASE, "orthanc-defaults")
    want = {"orthanc_max_per_study": 3,
            "labels": [("pleural-effusion", 0.5), ("pneumothorax", 0.5), ("pneumonia", 0.5)]}
    s = copy.deepcopy(BASE)
    s["orthanc_labels"] = {"threshold": 0.25, "max_per_study": 1}
    s["labels"][0]["name"] = "Pleural  effusion (large)!"
    s["labels"][1]["orthanc_label"] = "PTX_1"
    s["labels"][1]["orthanc_threshold"] = 0.9
    s["labels"][2]["orthanc_label"] = False
    got2 = dump(s, "orthanc-overrides")
    want2 = {"orthanc_max_per_study": 1,
             "labels": [("pleural-effusion-large", 0.25), ("PTX_1", 0.9), (None, 0.25)]}
    s3 = copy.deepcopy(BASE)
    s3["orthanc_labels"] = False
    got3 = dump(s3, "orthanc-off")
    want3 = {"orthanc_max_per_study": 0, "labels": [(None, 0.5)] * 3}
    for name, g, w in (("orthanc-defaults", got, want), ("orthanc-overrides", got2, want2),
                       ("orthanc-off", got3, want3)):
        have = {"orthanc_max_per_study": g.get("orthanc_max_per_study"),
                "labels": [(l.get("orthanc_label"), l.get("orthanc_threshold"))
                           for l in g.get("labels", [])]}
        if have == w:
            passed += 1
            print("ok   %-28s %s" % (name, have))
        else:
            failures.append(name)
            print("FAIL %-28s got %s, expected %s" % (name, have, w))


def main():
    os.makedirs(WORK, exist_ok=True)
    global passed
    base = os.path.join(WORK, "base.json")
    with open(base, "w") as f:
        json.dump(BASE, f, indent=2)
    rc, out, err = run(base)
    if rc != 0:
        print("FAIL the valid base set does not load: " + err.strip())
        return 1
    print("ok   base set loads: " + out.strip())

    # the cases named in the brief
    case("bad-sct-check-digit", setitem(["labels", 1, "code", "value"], "36118007"),
         "labels[1].code.value", "'36118007'", "not a valid SNOMED CT identifier (check digit)")
    case("empty-labels", setitem(["labels"], []), "labels:", "empty")
    case("template-without-slot",
         setitem(["templates"], ["a chest X-ray showing {}.", "a radiograph of the chest."]),
         "templates[1]:", "has no \"{}\"")
    case("malformed-json", None, "malformed JSON", "line 3",
         raw='{\n  "name": "x",\n  "version": "1.0.0",,\n  "labels": []\n}\n')
    case("binary-without-negatives", delitem(["negative_templates"]), "labels[0]:",
         "binary scoring needs negatives")
    case("duplicate-label",
         lambda s: s["labels"].append(dict(copy.deepcopy(s["labels"][0]), name="Pleural Effusion")),
         "labels[3].name:", "duplicates labels[0].name")
    case("unknown-key", lambda s: s.update(templtes=s.pop("templates")), "templtes:",
         "unknown key")

    # more validation
    case("template-two-slots", setitem(["templates", 0], "{} and {}"), "templates[0]:",
         "has 2 \"{}\"")
    case("negative-template-without-slot", setitem(["negative_templates", 0], "no finding."),
         "negative_templates[0]:", "has no \"{}\"")
    case("unknown-label-key", setitem(["labels", 0, "synonym"], ["x"]), "labels[0]:",
         "unknown key \"synonym\"")
    case("unknown-code-key", setitem(["labels", 0, "code", "designator"], "SCT"),
         "labels[0].code:", "unknown key \"designator\"")
    case("unknown-applies-key", setitem(["applies_to", "modality"], ["CT"]), "applies_to:",
         "unknown key \"modality\"")
    case("missing-name", delitem(["name"]), "name:", "missing")
    case("missing-version", delitem(["version"]), "version:", "missing")
    case("version-not-string", setitem(["version"], 1), "version:", "must be a string")
    case("bad-name", setitem(["name"], "chest x-ray"), "name:", "letters, digits")
    case("missing-labels", delitem(["labels"]), "labels:", "missing")
    case("unknown-scoring", setitem(["scoring"], "multilabel"), "scoring:",
         "unknown scoring mode 'multilabel'")
    case("missing-code", delitem(["labels", 2, "code"]), "labels[2].code:", "missing")
    case("code-missing-value", delitem(["labels", 0, "code", "value"]), "labels[0].code.value:",
         "missing")
    case("code-missing-scheme", delitem(["labels", 0, "code", "scheme"]),
         "labels[0].code.scheme:", "missing")
    case("code-missing-meaning", delitem(["labels", 0, "code", "meaning"]),
         "labels[0].code.meaning:", "missing")
    case("code-empty-meaning", setitem(["labels", 0, "code", "meaning"], "  "),
         "labels[0].code.meaning:", "must not be empty")
    case("sct-too-short", setitem(["labels", 0, "code", "value"], "1234"),
         "labels[0].code.value:", "'1234'", "6 to 18 digits")
    case("sct-not-digits", setitem(["labels", 0, "code", "value"], "6004600X"),
         "labels[0].code.value:", "6 to 18 digits")
    case("sct-leading-zero", setitem(["labels", 0, "code", "value"], with_check_digit("0604600")),
         "labels[0].code.value:", "leading zero")
    desc_id = with_check_digit("12345601")  # partition 01: a description, not a concept
    case("sct-description-id", setitem(["labels", 0, "code", "value"], desc_id),
         "labels[0].code.value:", "partition '01'")
    case("dcm-not-digits", setitem(["labels", 0, "code"],
                                   {"value": "12a45", "scheme": "DCM", "meaning": "x"}),
         "labels[0].code.value:", "'12a45'", "DCM")
    case("private-too-long", setitem(["labels", 2, "code", "value"], "UM-00000000000001"),
         "labels[2].code.value:", "99UNIMED")
    case("private-with-space", setitem(["labels", 2, "code", "value"], "UM 1"),
         "labels[2].code.value:", "99UNIMED")
    case("meaning-too-long", setitem(["labels", 0, "code", "meaning"], "x" * 65),
         "labels[0].code.meaning:", "longer than 64")
    case("own-prompt-with-slot", setitem(["labels", 2, "prompts"], ["a chest X-ray with {}."]),
         "labels[2].prompts[0]:", "used as written")
    case("empty-own-prompts", setitem(["labels", 2, "prompts"], []), "labels[2].prompts:",
         "is empty")
    case("prompt-not-string", setitem(["labels", 2, "prompts"], ["ok", 3]),
         "labels[2].prompts[1]:", "must be a string")
    case("negatives-with-softmax", setitem(["scoring"], "softmax"), "negative_templates:",
         "only used with \"scoring\": \"binary\"")
    case("own-negatives-with-softmax",
         lambda s: (s.update(scoring="softmax"), s.pop("negative_templates")),
         "labels[2].negative_prompts:", "only used with")
    case("softmax-one-label",
         lambda s: (s.update(scoring="softmax", labels=s["labels"][:1]),
                    s.pop("negative_templates")),
         "labels:", "at least 2 labels")
    case("no-prompts-no-templates", delitem(["templates"]), "labels[0]:", "no prompts")
    case("empty-templates", setitem(["templates"], []), "templates:", "is empty")
    case("labels-not-array", setitem(["labels"], {"name": "x"}), "labels:", "must be an array")
    case("label-not-object", setitem(["labels", 1], "pneumothorax"), "labels[1]:",
         "must be an object")
    case("modality-bad", setitem(["applies_to", "modalities"], ["C-R"]),
         "applies_to.modalities[0]:", "'C-R'")
    case("sop-class-bad", setitem(["applies_to", "sop_classes"], ["1.2.840.x"]),
         "applies_to.sop_classes[0]:", "not a UID")
    case("applies-not-object", setitem(["applies_to"], ["CT"]), "applies_to:", "must be an object")
    case("root-not-object", None, "must be a JSON object", raw='["name", "version"]\n')
    case("duplicate-json-key", None, "name:", "key given twice",
         raw='{"name": "a", "version": "1.0.0", "name": "b", "labels": []}\n')
    case("trailing-garbage", None, "malformed JSON",
         raw=json.dumps(BASE) + "\n}\n")
    case("empty-file", None, "malformed JSON", raw="")
    case("nul-byte", None, "NUL byte", raw='{"name": "a\u0000"}')

    # Orthanc labels (docs/LABEL_SETS.md)
    case("orthanc-labels-unknown-key", setitem(["orthanc_labels"], {"max": 2}), "orthanc_labels:",
         "unknown key \"max\"")
    case("orthanc-labels-not-object", setitem(["orthanc_labels"], 3), "orthanc_labels:",
         "must be an object")
    case("orthanc-threshold-above-1", setitem(["orthanc_labels"], {"threshold": 1.5}),
         "orthanc_labels.threshold:", "from 0 to 1")
    case("orthanc-max-fraction", setitem(["orthanc_labels"], {"max_per_study": 1.5}),
         "orthanc_labels.max_per_study:", "whole number")
    case("orthanc-label-bad-char", setitem(["labels", 0, "orthanc_label"], "pleural effusion"),
         "labels[0].orthanc_label:", "only letters, digits, '-' and '_'")
    case("orthanc-label-too-long", setitem(["labels", 0, "orthanc_label"], "x" * 49),
         "labels[0].orthanc_label:", "longer than 48")
    case("orthanc-label-true", setitem(["labels", 0, "orthanc_label"], True),
         "labels[0].orthanc_label:", "or false")
    case("orthanc-label-threshold-string", setitem(["labels", 1, "orthanc_threshold"], "0.7"),
         "labels[1].orthanc_threshold:", "a probability")
    case("orthanc-label-unnamable", setitem(["labels", 1, "name"], "\u00e9\u00e8"),
         "labels[1].orthanc_label:", "give \"orthanc_label\", or false")
    case("orthanc-label-key-typo", setitem(["labels", 0, "orthanc_labels"], "x"), "labels[0]:",
         "unknown key \"orthanc_labels\"")
    check_orthanc_defaults()

    # a file that is not there
    global failures
    rc, out, err = run(os.path.join(WORK, "does-not-exist.json"))
    if rc == 1 and "does-not-exist.json" in err and "cannot open" in err:
        passed += 1
        print("ok   missing-file                 " + err.strip())
    else:
        failures.append("missing-file")
        print("FAIL missing-file: rc %d, %s" % (rc, err.strip()))

    print("%d passed, %d failed%s" % (passed, len(failures),
                                      ": " + ", ".join(failures) if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
