#!/usr/bin/python3
"""safetensors writer/reader checked against numpy (F16) and torch (BF16).

usage: test_safetensors.py ROUNDTRIP_BINARY

The C program writes the same values as F32, F16 and BF16 files and prints
what it reads back. Here the files are parsed independently, their stored
bits are compared with numpy's float16 and torch's bfloat16 rounding
(round to nearest even), and the decoded values with the reference's."""
import json
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch

binary = sys.argv[1]
tmp = tempfile.mkdtemp(prefix="unimed-st-")
out = subprocess.run([binary, tmp], capture_output=True, text=True, check=True).stdout
decoded = {}
for line in out.splitlines():
    kind, i, v = line.split()
    decoded.setdefault(kind, {})[int(i)] = float(v)
inputs = np.array([decoded["IN"][i] for i in range(len(decoded["IN"]))], dtype=np.float32)

def load(dtype):
    with open(f"{tmp}/values_{dtype}.safetensors", "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    assert (8 + n) % 8 == 0, "data section must start 8-byte aligned"
    assert header["__metadata__"]["note"] == "roundtrip", header["__metadata__"]
    e = header["values"]
    assert e["dtype"] == dtype and e["shape"] == [len(inputs)], e
    b0, b1 = e["data_offsets"]
    return raw[8 + n + b0: 8 + n + b1]

failures = 0
def check(name, ok, detail=""):
    global failures
    print(("ok   " if ok else "FAIL ") + name + (f": {detail}" if detail and not ok else ""))
    failures += 0 if ok else 1

f32 = np.frombuffer(load("F32"), dtype="<f4")
check("F32 bits identical", np.array_equal(f32.view("<u4"), inputs.view("<u4")))

f16 = np.frombuffer(load("F16"), dtype="<u2")
ref16 = inputs.astype(np.float16).view("<u2")
nan = np.isnan(inputs)
bad = np.nonzero((f16 != ref16) & ~nan)[0]
check("F16 bits equal numpy's rounding", len(bad) == 0,
      ", ".join(f"{inputs[i]!r}: ours {f16[i]:#06x} numpy {ref16[i]:#06x}" for i in bad))
check("F16 NaN stays NaN", np.isnan(f16.view(np.float16)[nan]).all())

bf = np.frombuffer(load("BF16"), dtype="<u2")
refbf = torch.from_numpy(inputs.copy()).to(torch.bfloat16).view(torch.int16).numpy().view("<u2")
bad = np.nonzero((bf != refbf) & ~nan)[0]
check("BF16 bits equal torch's rounding", len(bad) == 0,
      ", ".join(f"{inputs[i]!r}: ours {bf[i]:#06x} torch {refbf[i]:#06x}" for i in bad))

for dtype, ref in (("F32", inputs), ("F16", ref16.view(np.float16).astype(np.float32)),
                   ("BF16", torch.from_numpy(refbf.view(np.int16).copy()).view(torch.bfloat16).float().numpy())):
    got = np.array([decoded[dtype][i] for i in range(len(inputs))], dtype=np.float32)
    same = np.array_equal(got[~nan], ref[~nan]) and np.isnan(got[nan]).all()
    check(f"{dtype} decoded to the reference float32", same,
          str([(float(a), float(b)) for a, b in zip(got, ref) if a != b and not np.isnan(b)][:5]))
print(f"safetensors: {failures} failures")
sys.exit(1 if failures else 0)
