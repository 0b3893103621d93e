#!/usr/bin/python3
"""The demo model's MedMNIST test metrics in INT8 against FP32.

Runs `unimed evaluate` on samples/demo-model with the BreastMNIST and
PneumoniaMNIST test archives of ../shared/data/medmnist (the evaluation of
samples/demo-model/metrics.json), once with --precision fp32 and once with
--precision int8, and checks that accuracy, balanced accuracy and AUC move by
at most --tol (0.005).

Exit 77 (skipped) when ../shared/data/medmnist is absent or the CPU has no
VNNI (the INT8 request then runs another precision: `unimed evaluate` says
which in its JSON).
"""
import argparse
import json
import os
import subprocess
import sys


def evaluate(a, data, name, precision):
    cmd = [a.unimed, "evaluate", "--model", a.demo,
           "--archive", os.path.join(data, name + "-test.zip"),
           "--labels", os.path.join(data, name + "-test-labels.csv"),
           "--label-set", os.path.join(a.demo, "labelsets", a.sets[name]),
           "--threads", "2", "--precision", precision]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stderr)
        raise SystemExit("FAIL: %s exited %d" % (" ".join(cmd), p.returncode))
    return json.loads(p.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--unimed", required=True)
    ap.add_argument("--demo", required=True, help="samples/demo-model")
    ap.add_argument("--medmnist", required=True, help="../shared/data/medmnist")
    ap.add_argument("--tol", type=float, default=0.005)
    a = ap.parse_args()
    if not os.path.isdir(a.medmnist):
        print("SKIP: %s is absent (the MedMNIST test archives)" % a.medmnist)
        return 77
    a.sets = {"breastmnist": "breast.json", "pneumoniamnist": "pneumonia.json"}
    failures = 0
    for name in ("breastmnist", "pneumoniamnist"):
        if not os.path.isfile(os.path.join(a.medmnist, name + "-test.zip")):
            print("SKIP: %s has no %s-test.zip" % (a.medmnist, name))
            return 77
        f32 = evaluate(a, a.medmnist, name, "fp32")
        i8 = evaluate(a, a.medmnist, name, "int8")
        if i8.get("precision") != "int8":
            print("SKIP: an INT8 request runs %s on this CPU (no VNNI)" % i8.get("precision"))
            return 77
        for k in ("n", "accuracy", "balanced_accuracy", "auc"):
            d = abs(i8[k] - f32[k])
            ok = d == 0 if k == "n" else d <= a.tol
            failures += not ok
            print("%-15s %-17s fp32 %.6f int8 %.6f |d| %.6f %s" % (
                name, k, f32[k], i8[k], d, "ok" if ok else "FAIL"))
    print("FAILED" if failures else "all ok")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
