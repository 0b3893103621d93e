#!/usr/bin/python3
"""Benchmark (not a test): one training run straight from a running Orthanc
(`unimed-train --orthanc`) next to the same run from a per-study export.

    tests/trainer/bench_orthanc.py --train build/tools/train/unimed-train \
        --plugin build/plugin/libOrthancUniMed.so --zip ../shared/data/medmnist/pneumoniamnist-train.zip \
        --labels ../shared/data/medmnist/pneumoniamnist-train-labels.csv \
        --label-set samples/demo-model/labelsets/pneumonia.json --init samples/demo-model --work /tmp/bench

Uploads every instance of ZIP to a real Orthanc (authentication on, the
plugin disabled so that nothing else runs), exports one /studies/{id}/archive
per study, trains from the export folder and then from --orthanc with the
same options, and prints studies, images, times and whether the weights are
identical (figures in docs/TRAINING.md).
"""
import argparse
import os
import shutil
import subprocess
import sys
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "orthanc"))
from run import Orthanc  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    for k in ("train", "plugin", "zip", "labels", "label_set", "init", "work"):
        ap.add_argument("--" + k.replace("_", "-"), required=True)
    ap.add_argument("--epochs", default="1")
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    user, password = "bench", "b3nch-pass"
    common = ["--labels", a.labels, "--label-set", a.label_set, "--init", a.init,
              "--epochs", a.epochs, "--batch", "64", "--lr", "1e-4", "--warmup", "10",
              "--seed", "0", "--threads", "1", "--quiet"]
    with Orthanc(a.plugin, None, workdir=os.path.join(a.work, "orthanc"), users={user: password},
                 unimed={"Enable": False}) as o:
        t0 = time.time()
        src = zipfile.ZipFile(a.zip)
        n = 0
        for name in src.namelist():
            if name.endswith("/") or name.endswith("DICOMDIR"):
                continue
            st, ans = o.post("/instances", src.read(name), headers={"Content-Type": "application/dicom"})
            if st != 200:
                sys.exit("upload of %s: HTTP %s" % (name, st))
            n += 1
        print("uploaded %d instances in %.1fs" % (n, time.time() - t0), flush=True)
        st, ids = o.get("/studies")
        t0 = time.time()
        export = os.path.join(a.work, "export")
        os.makedirs(export)
        for sid in ids:
            st, data, _ = o.request("GET", "/studies/%s/archive" % sid, timeout=300)
            if st != 200:
                sys.exit("archive of %s: HTTP %s" % (sid, st))
            open(os.path.join(export, sid + ".zip"), "wb").write(data)
        t_export = time.time() - t0
        print("exported %d per-study archives in %.1fs" % (len(ids), t_export), flush=True)

        def train(out, inputs, env=None):
            t = time.time()
            p = subprocess.run([a.train] + inputs + ["--out", out] + common, capture_output=True,
                               text=True, env=env)
            if p.returncode != 0:
                sys.exit("training failed: %s" % p.stderr[-3000:])
            line = [x for x in p.stderr.splitlines() if "training data:" in x][0]
            return time.time() - t, line

        t_a, la = train(os.path.join(a.work, "from_export"), [export])
        env = dict(os.environ, UNIMED_ORTHANC_USER=user, UNIMED_ORTHANC_PASSWORD=password)
        t_b, lb = train(os.path.join(a.work, "from_orthanc"), ["--orthanc", o.url], env)
    same = open(os.path.join(a.work, "from_export", "model.safetensors"), "rb").read() == \
        open(os.path.join(a.work, "from_orthanc", "model.safetensors"), "rb").read()
    print("studies: %d; export: %.1fs + training %.1fs (%s)" % (len(ids), t_export, t_a, la))
    print("--orthanc: %.1fs (%s)" % (t_b, lb))
    print("weights identical: %s" % same)


if __name__ == "__main__":
    main()
