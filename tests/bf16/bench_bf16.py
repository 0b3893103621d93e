#!/usr/bin/python3
"""BF16 vs FP32 vs ONNX Runtime FP32, interleaved (not a test).

    /usr/bin/python3 tests/bf16/bench_bf16.py --unimed build-bf/tools/unimed \
        [--model build-bench/bench/model] [--onnx build-bench/bench/onnx] \
        [--bf16-model DIR] [--rounds 3] [--runs 5] [--threads 2] [--out FILE.json]

Per round, one process each, in this order: ONNX Runtime (bench/ort_bench.mjs,
the model exported by bench/export_onnx.py), `unimed bench --precision fp32`,
`unimed bench --precision bf16` (and with --bf16-model, `unimed bench
--precision bf16` on the same model stored as BF16 safetensors). Each process
times --runs runs after a warm-up (ms per image at batch 1 and 8, ms per
16-token prompt) under /usr/bin/time -v (peak RSS). Before each process it
waits up to 10 s for a quiet second (the machine is shared) and records how
many CPUs other processes kept busy meanwhile. Prints a markdown table: min of
the per-process minima, median of the per-process medians.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
KEYS = ("ms_per_image_batch1", "ms_per_image_batch8", "ms_per_prompt")


def busy_cpu_s():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def wait_quiet(max_wait=10.0):
    t0 = time.time()
    while time.time() - t0 < max_wait:
        b0, w0 = busy_cpu_s(), time.time()
        time.sleep(1.0)
        if (busy_cpu_s() - b0) / (time.time() - w0) < 0.3:
            return


def timed(cmd, cwd=None):
    wait_quiet()
    t = time.time()
    b0 = busy_cpu_s()
    r0 = os.times()
    p = subprocess.run(["/usr/bin/time", "-v"] + cmd, cwd=cwd, capture_output=True, text=True)
    wall = time.time() - t
    r1 = os.times()
    ours = (r1.children_user - r0.children_user) + (r1.children_system - r0.children_system)
    if p.returncode != 0:
        sys.stderr.write(p.stderr)
        raise SystemExit("%s failed (%d)" % (cmd[0], p.returncode))
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))
    j = json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("{")][-1])
    j["peak_rss_mb"] = round(rss / 1024)
    j["others_cores"] = round(max(0.0, busy_cpu_s() - b0 - ours) / wall, 2)
    print("  %-10s %s  (others %.2f CPUs)" % (
        cmd[0].split("/")[-1] if "unimed" not in cmd[0] else "unimed " + cmd[cmd.index("--precision") + 1],
        " ".join("%s %.1f" % (k.replace("ms_per_", ""), j[k]["median"]) for k in KEYS),
        j["others_cores"]), file=sys.stderr, flush=True)
    return j


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--unimed", default=os.path.join(ROOT, "build-bf", "tools", "unimed"))
    ap.add_argument("--model", default=os.path.join(ROOT, "build-bench", "bench", "model"))
    ap.add_argument("--onnx", default=os.path.join(ROOT, "build-bench", "bench", "onnx"))
    ap.add_argument("--bf16-model")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-ort", action="store_true")
    ap.add_argument("--out")
    a = ap.parse_args()
    T, R = str(a.threads), str(a.runs)
    runners = []
    if not a.no_ort:
        runners.append(("ort", ["node", os.path.join(ROOT, "bench", "ort_bench.mjs"), "--onnx",
                                a.onnx, "--runs", R, "--threads", T], os.path.join(ROOT, "bench")))
    for prec in ("fp32", "bf16"):
        runners.append((prec, [a.unimed, "bench", "--model", a.model, "--precision", prec,
                               "--runs", R, "--threads", T], None))
    if a.bf16_model:
        runners.append(("bf16-file", [a.unimed, "bench", "--model", a.bf16_model, "--precision",
                                      "bf16", "--runs", R, "--threads", T], None))
    res = {name: [] for name, _, _ in runners}
    load0 = os.getloadavg()
    t0 = time.time()
    for r in range(a.rounds):
        print("round %d/%d" % (r + 1, a.rounds), file=sys.stderr, flush=True)
        for name, cmd, cwd in runners:
            res[name].append(timed(cmd, cwd))
    summary = {"command": " ".join([sys.executable] + sys.argv), "threads": a.threads,
               "rounds": a.rounds, "runs": a.runs, "loadavg_start": load0,
               "loadavg_end": os.getloadavg(), "seconds": round(time.time() - t0)}
    for name, rs in res.items():
        s = {}
        for k in KEYS:
            s[k] = {"min": min(x[k]["min"] for x in rs),
                    "median": statistics.median(x[k]["median"] for x in rs)}
        s["peak_rss_mb"] = max(x["peak_rss_mb"] for x in rs)
        s["others_cores"] = [x["others_cores"] for x in rs]
        for k in ("precision", "blas_core", "version", "weights_held_mb"):
            if k in rs[0]:
                s[k] = rs[0][k]
        summary[name] = s
    names = [n for n, _, _ in runners]
    head = {"ort": "ONNX Runtime FP32", "fp32": "unimed FP32", "bf16": "unimed BF16",
            "bf16-file": "unimed BF16 (BF16 file)"}
    lines = ["| %d threads (min / median) | %s |%s" % (
        a.threads, " | ".join(head[n] for n in names),
        " BF16 / ORT (median, min) | BF16 / FP32 (median) |" if "ort" in names else "")]
    lines.append("|---" * (len(names) + 1 + (2 if "ort" in names else 0)) + "|")
    labels = {"ms_per_image_batch1": "image, batch 1 (ms/image)",
              "ms_per_image_batch8": "image, batch 8 (ms/image)",
              "ms_per_prompt": "text, one 16-token prompt (ms)"}
    for k in KEYS:
        row = "| %s | " % labels[k] + " | ".join(
            "%.1f / %.1f" % (summary[n][k]["min"], summary[n][k]["median"]) for n in names) + " |"
        if "ort" in names:
            b, o, f = summary["bf16"][k], summary["ort"][k], summary["fp32"][k]
            row += " %.2f×, %.2f× | %.2f× |" % (b["median"] / o["median"], b["min"] / o["min"],
                                             b["median"] / f["median"])
        lines.append(row)
    row = "| peak RSS (MB) | " + " | ".join("%d" % summary[n]["peak_rss_mb"] for n in names) + " |"
    if "ort" in names:
        row += " %.2f× | %.2f× |" % (summary["bf16"]["peak_rss_mb"] / summary["ort"]["peak_rss_mb"],
                                     summary["bf16"]["peak_rss_mb"] / summary["fp32"]["peak_rss_mb"])
    lines.append(row)
    others = "; ".join("%s %s" % (head[n], "/".join("%.1f" % c for c in summary[n]["others_cores"]))
                       for n in names)
    lines.append("")
    lines.append("Other processes' CPUs busy during each process: " + others + ".")
    md = "\n".join(lines)
    summary["markdown"] = md
    print(md)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
