#!/usr/bin/python3
"""Times the PyTorch reference (tests/reference/unimed_ref.py) in float32.

    /usr/bin/python3 bench/torch_bench.py --model DIR [--runs N] [--threads N] [--tokens N]

Prints one JSON object like `unimed bench`: min/median/max milliseconds per
image at batch 1 and 8, per prompt of --tokens ids (no padding) and per
prompt when 32 such prompts run as one batch (ms_per_prompt_batch32), after one
warm-up run each, under torch.inference_mode() with torch.set_num_threads(N),
plus this process's peak RSS.
"""

import argparse
import ctypes
import json
import os
import resource
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "reference"))

import unimed_ref  # noqa: E402


def blas_core():
    """The OpenBLAS kernel torch's BLAS calls use (Debian's torch links OpenBLAS)."""
    try:
        lib = ctypes.CDLL("libopenblas.so.0")
        lib.openblas_get_corename.restype = ctypes.c_char_p
        return lib.openblas_get_corename().decode()
    except (OSError, AttributeError):
        return None


def stats(ms):
    s = sorted(ms)
    return {"min": round(s[0], 3), "median": round(s[len(s) // 2], 3), "max": round(s[-1], 3)}


def pixels(n, S):
    """The pseudo-random pixels of `unimed bench` (an LCG over [-2, 2))."""
    out = torch.empty(n * 3 * S * S, dtype=torch.float32)
    vals = []
    s = 12345
    for _ in range(out.numel()):
        s = (s * 1103515245 + 12345) & 0xFFFFFFFF
        vals.append((s >> 8) / 16777216.0 * 4.0 - 2.0)
    out[:] = torch.tensor(vals, dtype=torch.float32)
    return out.reshape(n, 3, S, S)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=16)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    model, cfg = unimed_ref.load_model_dir(a.model, dtype=torch.float32)
    load_ms = (time.perf_counter() - t0) * 1000
    S = cfg["vision"]["image_size"]
    px = pixels(8, S)
    res = {"runtime": "pytorch", "version": torch.__version__, "threads": torch.get_num_threads(),
           "runs": a.runs, "load_ms": round(load_ms), "blas_core": blas_core()}
    with torch.inference_mode():
        for B in (1, 8):
            x = px[:B].contiguous()
            ms = []
            for r in range(-1, a.runs):
                t = time.perf_counter()
                model.encode_image(x)
                if r >= 0:
                    ms.append((time.perf_counter() - t) * 1000 / B)
            res["ms_per_image_batch%d" % B] = stats(ms)
        row = [101] + [2000 + 37 * i for i in range(1, a.tokens - 1)] + [102]
        ids = torch.tensor([row], dtype=torch.int64)
        ms = []
        for r in range(-1, a.runs):
            t = time.perf_counter()
            model.encode_text(ids)
            if r >= 0:
                ms.append((time.perf_counter() - t) * 1000)
        res["prompt_tokens"] = a.tokens
        res["ms_per_prompt"] = stats(ms)
        # 32 prompts of the same length as one batch (a label set's cache
        # build): the inner ids rotated by p for prompt p.
        inner = row[1:-1]
        batch = torch.tensor([[row[0]] + inner[p % len(inner):] + inner[:p % len(inner)] +
                              [row[-1]] for p in range(32)], dtype=torch.int64)
        ms = []
        for r in range(-1, a.runs):
            t = time.perf_counter()
            model.encode_text(batch)
            if r >= 0:
                ms.append((time.perf_counter() - t) * 1000 / 32)
        res["batch_prompts"] = 32
        res["ms_per_prompt_batch32"] = stats(ms)
    res["peak_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
