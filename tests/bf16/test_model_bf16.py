#!/usr/bin/python3
"""BF16 or INT8 inference vs FP32 on real DICOM images (driver for
test_model_bf16; --precision int8 for INT8, --prompts for sample prompts).

Preprocesses every image file of the given DICOM folders (Debian's pydicom
test files, ../shared/data/dicom when present) with `unimed preprocess`, keeps
the ones that decode, and runs test_model_bf16 on the tensors: cosine of the
BF16 and FP32 image embeddings, and zero-shot top-1 over the shipped label
sets. With --bf16-file it also writes the model stored as BF16 safetensors
and checks that it loads and agrees.

Exit 77 (skipped) when the CPU lacks avx512_bf16 (test_model_bf16 decides)
or fewer than --min-images real images are available.
"""
import argparse
import glob
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))


def preprocess(unimed, model, dirs, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    files = []
    for d in dirs:
        if os.path.isdir(d):
            files += sorted(glob.glob(os.path.join(d, "*.dcm")))
    tensors, failed = [], 0
    for f in files:
        base = os.path.basename(os.path.dirname(f)) + "__" + os.path.basename(f)
        out = os.path.join(out_dir, base + ".f32")
        r = subprocess.run([unimed, "preprocess", "--model", model, f, "--out", out],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if r.returncode == 0 and os.path.exists(out):
            tensors.append(out)
        else:
            failed += 1
    return files, tensors, failed


def write_bf16_copy(model, out):
    import unimed_safetensors as ust
    os.makedirs(out, exist_ok=True)
    for name in ("config.json", "vocab.txt"):
        shutil.copyfile(os.path.join(model, name), os.path.join(out, name))
    tensors = ust.read_safetensors(os.path.join(model, "model.safetensors"))
    ust.write_safetensors(os.path.join(out, "model.safetensors"), tensors, dtype="bf16")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--unimed", required=True)
    ap.add_argument("--test", required=True, help="test_model_bf16 binary")
    ap.add_argument("--model", required=True)
    ap.add_argument("--labelsets", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--dicom-dir", action="append", default=[])
    ap.add_argument("--min-images", type=int, default=20)
    ap.add_argument("--bf16-file", action="store_true")
    ap.add_argument("--fallback", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--prompts")
    a = ap.parse_args()

    files, tensors, failed = preprocess(a.unimed, a.model, a.dicom_dir,
                                        os.path.join(a.work, "tensors"))
    print("%d DICOM files in %s: %d preprocessed, %d without a usable image"
          % (len(files), ", ".join(d for d in a.dicom_dir if os.path.isdir(d)) or "(none)",
             len(tensors), failed))
    if len(tensors) < a.min_images:
        print("SKIP: only %d real images (need %d; install python3-pydicom)"
              % (len(tensors), a.min_images))
        return 77
    cmd = [a.test, a.model, a.labelsets]
    if a.bf16_file:
        bf = os.path.join(a.work, "bf16-model")
        write_bf16_copy(a.model, bf)
        cmd += ["--bf16-file", bf]
    if a.fallback:
        cmd.append("--fallback")
    cmd += ["--precision", a.precision]
    if a.prompts:
        cmd += ["--prompts", a.prompts]
    if a.json:
        cmd += ["--json", a.json]
    sys.stdout.flush()
    return subprocess.run(cmd + tensors).returncode


if __name__ == "__main__":
    sys.exit(main())
