#!/usr/bin/python3
"""UniMed benchmark harness: the C implementation (`unimed bench` in FP32,
`--precision bf16` and `--precision int8`) against ONNX Runtime
(onnxruntime-node) in FP32 and with dynamic INT8 quantization, and PyTorch
(FP32), on the same full-size random-weight model, 2 threads each.

    /usr/bin/python3 bench/run.py [--work DIR] [--runs 5] [--rounds 3]
                                  [--threads 2] [--no-build] [--write-doc]
                                  [--doc PATH] ...

Steps (each skipped when its output is already there and up to date):
  1. build `unimed` in build-bench/ (CMake, -DUNIMED_WITH_DICOM=OFF);
  2. make a 30522-line vocabulary and the `full` random model (seed 0);
  3. export both towers to ONNX with Debian's torch (bench/export_onnx.py),
     and quantize them for ONNX Runtime's INT8 (bench/quantize_onnx.py:
     every MatMul with a constant weight -> com.microsoft::DynamicQuantizeMatMul,
     int8 symmetric per output column, as quantize_dynamic does; python3-onnx);
  4. `npm ci --ignore-scripts` in bench/ (onnxruntime-node ships its CPU
     library inside the npm package) and check that it loads.
Then, for each environment variant — the environment as it is, and the same
with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed for the child commands
(what a user's machine does) — it runs, under /usr/bin/time -v:
  ONNX Runtime FP32 and INT8, `unimed bench` in FP32, BF16 and INT8:
  --rounds processes each, interleaved (same model, --runs and --threads),
  PyTorch: one process of --torch-runs runs (it is far slower and not the
  comparison target);
  and, in the first variant, ONNX Runtime (FP32, INT8) and bench/cpu_bench.c
  (FP32, BF16, INT8) on 1 thread for the process CPU time per image (robust
  to other processes' load), and tests/int8/bench_gemm_i8 for the INT8
  GEMMs' fraction of the measured VNNI peak (one core, thread CPU time).
Before each process it waits up to --quiet-wait s for a second in which
other processes use < 0.3 CPUs, and it records how busy they kept the
machine meanwhile.
Every process times --runs runs after one warm-up run: images at batch 1
and 8, one 16-token prompt, and 32 such prompts in one call (the time per
prompt amortised over the batch, as when a label set's embeddings are built).
Across rounds the table shows the min of the minima, the median of the
medians and the max of the maxima. Peak RSS is the largest "Maximum resident
set size" seen.

Writes WORK/results.json and WORK/results.md; with --write-doc also replaces
the block between the bench markers in docs/PERFORMANCE.md (or in --doc
PATH; a PATH that does not exist yet starts as a copy of docs/PERFORMANCE.md).
"""

import argparse
import datetime
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PY = "/usr/bin/python3"
BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
DOC = os.path.join(ROOT, "docs", "PERFORMANCE.md")
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def log(msg):
    print("[bench %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def run(cmd, env=None, cwd=None):
    log(" ".join(cmd))
    subprocess.run(cmd, check=True, env=env, cwd=cwd)


def build(build_dir):
    run(["cmake", "-S", ROOT, "-B", build_dir, "-DUNIMED_WITH_DICOM=OFF"])
    run(["cmake", "--build", build_dir, "--target", "unimed", "bench_gemm_i8", "-j2"])


def build_cpu_bench(build_dir, work):
    """Compiles bench/cpu_bench.c against the model library just built."""
    out = os.path.join(work, "cpu_bench")
    libs = subprocess.run(["pkg-config", "--libs", "openblas", "libcjson"], capture_output=True,
                          text=True, check=True).stdout.split()
    run(["cc", "-std=c11", "-D_GNU_SOURCE", "-O2", "-Wall", "-Wextra", "-Werror",
         "-I" + os.path.join(ROOT, "model"), os.path.join(HERE, "cpu_bench.c"),
         os.path.join(build_dir, "model", "libunimed_model.a")] + libs +
        ["-lm", "-lpthread", "-o", out])
    return out


def ensure_model(work):
    model = os.path.join(work, "model")
    if os.path.isfile(os.path.join(model, "model.safetensors")):
        return model
    vocab = os.path.join(work, "vocab.txt")
    run([PY, os.path.join(ROOT, "tests", "tokenizer", "make_vocab.py"), "--size", "30522",
         "--layout", "bert", "--out", vocab])
    run([PY, os.path.join(ROOT, "tests", "reference", "make_model.py"), "--config", "full",
         "--seed", "0", "--vocab", vocab, "--out", model])
    return model


def ensure_onnx(work, model):
    onnx = os.path.join(work, "onnx")
    sys.path.insert(0, HERE)
    import export_onnx  # noqa: E402  (only for its file digest; torch is imported lazily there)
    want = export_onnx.file_digest(os.path.join(model, "model.safetensors"))
    try:
        with open(os.path.join(onnx, "export.json")) as f:
            if json.load(f)["model_digest"] == want and all(
                    os.path.isfile(os.path.join(onnx, n)) for n in ("image.onnx", "text.onnx")):
                return onnx
    except (OSError, ValueError, KeyError):
        pass
    run([PY, os.path.join(HERE, "export_onnx.py"), "--model", model, "--out", onnx])
    return onnx


def ensure_onnx_int8(work, onnx):
    """The ORT INT8 towers, rebuilt when the FP32 export changed."""
    out = os.path.join(work, "onnx-int8")
    try:
        with open(os.path.join(onnx, "export.json")) as f:
            want = json.load(f)["model_digest"]
        with open(os.path.join(out, "export.json")) as f:
            if json.load(f)["model_digest"] == want and all(
                    os.path.isfile(os.path.join(out, n)) for n in ("image.onnx", "text.onnx")):
                return out
    except (OSError, ValueError, KeyError):
        pass
    run([PY, os.path.join(HERE, "quantize_onnx.py"), "--onnx", onnx, "--out", out])
    return out


def ensure_ort():
    pkg = os.path.join(HERE, "node_modules", "onnxruntime-node", "package.json")
    if not os.path.isfile(pkg):
        run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=HERE)
    out = subprocess.run(["node", "-e", "import('onnxruntime-node').then(o => "
                          "console.log(o.env.versions.node))"],
                         cwd=HERE, check=True, capture_output=True, text=True)
    return out.stdout.strip()


def busy_cpu_s():
    """CPU seconds spent busy by the whole machine (all CPUs) so far, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_s():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


QUIET = {"max_wait": 10.0, "threshold": 0.3}


def wait_quiet():
    """Waits (at most QUIET["max_wait"] s) for a second in which other
    processes keep less than QUIET["threshold"] CPUs busy: the machine is
    shared and their compiles would otherwise be timed with us."""
    t0 = time.time()
    while time.time() - t0 < QUIET["max_wait"]:
        b0, w0 = busy_cpu_s(), time.time()
        time.sleep(1.0)
        if (busy_cpu_s() - b0) / (time.time() - w0) < QUIET["threshold"]:
            return time.time() - t0
    log("  machine not quiet after %.0f s; measuring anyway" % QUIET["max_wait"])
    return time.time() - t0


def timed(cmd, env, cwd=None):
    """Runs cmd under /usr/bin/time -v; returns (its JSON stdout, peak RSS kB, wall s).

    The JSON also gets "others_cores": how many CPUs other processes kept busy
    on average meanwhile (machine busy time minus our child's CPU time)."""
    waited = wait_quiet()
    log(" ".join(cmd))
    t = time.time()
    b0, c0 = busy_cpu_s(), children_cpu_s()
    p = subprocess.run(["/usr/bin/time", "-v"] + cmd, env=env, cwd=cwd, capture_output=True,
                       text=True)
    wall = time.time() - t
    others = max(0.0, (busy_cpu_s() - b0) - (children_cpu_s() - c0)) / wall
    if p.returncode != 0:
        sys.stderr.write(p.stderr)
        raise SystemExit("bench: %s failed (%d)" % (cmd[0], p.returncode))
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("{")][-1]
    j = json.loads(line)
    j["others_cores"] = round(others, 2)
    j["waited_s"] = round(waited)
    log("  %.1f s, other processes used %.2f CPUs meanwhile (waited %.0f s for quiet)" %
        (wall, others, waited))
    return j, int(m.group(1)) if m else None, wall


KEYS = ("ms_per_image_batch1", "ms_per_image_batch8", "ms_per_prompt", "ms_per_prompt_batch32")
NAN_STATS = {"min": float("nan"), "median": float("nan"), "max": float("nan")}


def combine(results):
    """Per-process stats -> min of minima, median of medians, max of maxima
    (NaN for a key some process did not report)."""
    out = {}
    for k in KEYS:
        if not all(k in r for r in results):
            out[k] = dict(NAN_STATS)
            continue
        out[k] = {"min": min(r[k]["min"] for r in results),
                  "median": statistics.median(r[k]["median"] for r in results),
                  "max": max(r[k]["max"] for r in results),
                  "process_medians": [r[k]["median"] for r in results]}
    out["peak_rss_kb"] = max(r["peak_rss_kb"] for r in results)
    out["others_cores"] = [r["others_cores"] for r in results]
    for k in ("blas_core", "version", "threads", "prompt_tokens", "precision", "batch_prompts"):
        if k in results[0]:
            out[k] = results[0][k]
    out["processes"] = len(results)
    return out


def variant_env(name):
    env = dict(os.environ)
    if name == "unset":
        for v in BLAS_VARS:
            env.pop(v, None)
    return env


def machine_info():
    info = {}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for ln in lscpu.splitlines():
            k, _, v = ln.partition(":")
            if k.strip() in ("Model name", "CPU(s)", "L2 cache", "L3 cache", "Hypervisor vendor"):
                info[k.strip()] = v.strip()
            if k.strip() == "Flags":
                flags = v.split()
                info["flags"] = {f: f in flags for f in ("avx2", "fma", "avx512f", "avx512_bf16",
                                                         "avx512_vnni")}
    except OSError:
        pass
    try:
        info["openblas"] = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Package} ${Version}", "libopenblas0-pthread"],
            capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    try:
        rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "model"],
                               capture_output=True, text=True).stdout.strip()
        info["commit"] = rev + (" (model/ modified)" if dirty else "")
    except OSError:
        pass
    return info


def fmt_stats(s):
    return "%.1f / %.1f / %.1f" % (s["min"], s["median"], s["max"])


COLUMNS = (("ort", "ONNX Runtime %s FP32"), ("ort_int8", "ONNX Runtime %s INT8"),
           ("torch", "PyTorch %s FP32"), ("unimed", "unimed FP32"), ("unimed_bf16", "unimed BF16"),
           ("unimed_int8", "unimed INT8"))


def ratio(a, b, stat="median"):
    return a[stat] / b[stat] if b[stat] == b[stat] and b[stat] else float("nan")


def markdown(res):
    L = []
    m = res["machine"]
    L.append("Run %s on %s (%s CPUs, L2 %s, L3 %s, %s); flags: %s. %s; commit %s." % (
        res["date"], m.get("Model name", "?"), m.get("CPU(s)", "?"), m.get("L2 cache", "?"),
        m.get("L3 cache", "?"), ("hypervisor " + m["Hypervisor vendor"])
        if "Hypervisor vendor" in m else "bare metal",
        ", ".join("%s %s" % (k, "yes" if v else "no") for k, v in m.get("flags", {}).items()),
        m.get("openblas", "OpenBLAS ?"), m.get("commit", "?")))
    bw = res.get("membw", {})
    L.append("")
    L.append("Memory read bandwidth (bench/membw.c, best of 5 over 512 MB): %.1f GB/s on 1 "
             "thread, %.1f GB/s on 2 (other processes kept %.1f CPUs busy meanwhile)." % (
                 bw.get("read_gbs_1t", float("nan")), bw.get("read_gbs_2t", float("nan")),
                 bw.get("others_cores", float("nan"))))
    L.append("")
    L.append("Command: `%s`. %d threads; every process times %d runs after a warm-up; "
             "ONNX Runtime FP32 and INT8, unimed FP32, BF16 and INT8: %d processes each, "
             "interleaved (min of minima / median of medians / max of maxima); PyTorch: 1 "
             "process of %d runs. Load average at the start: %s, at the end: %s; %d s in all." % (
                 res["command"], res["threads"], res["runs"], res["rounds"], res["torch_runs"],
                 res["loadavg"], res["loadavg_end"], res["wall_s"]))
    names = {"ms_per_image_batch1": "image, batch 1 (ms/image, min / median / max)",
             "ms_per_image_batch8": "image, batch 8 (ms/image)",
             "ms_per_prompt": "text, one 16-token prompt (ms)",
             "ms_per_prompt_batch32": "text, 32 such prompts in one batch (ms per prompt, "
                                      "amortised over the batch)"}
    for v in res["variants"]:
        L.append("")
        setv = ", ".join("%s=%s" % (k, x) for k, x in v["env"].items()) or "none set"
        L.append("**%s** (%s; OpenBLAS kernel: unimed %s, PyTorch %s; unimed BF16 ran as %s, "
                 "unimed INT8 as %s)" % (
                     "Environment as is" if v["name"] == "as-is" else
                     "OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset", setv,
                     v["unimed"].get("blas_core"), v["torch"].get("blas_core"),
                     v["unimed_bf16"].get("precision", "?"), v["unimed_int8"].get("precision", "?")))
        L.append("")
        heads = [h % v[k].get("version", "") if "%s" in h else h for k, h in COLUMNS]
        L.append("| %d threads | %s | INT8 / ORT INT8 (median, min) | INT8 / ORT FP32 (median) | "
                 "BF16 / ORT FP32 (median) | FP32 / ORT FP32 (median) |" % (
                     res["threads"], " | ".join(heads)))
        L.append("|---" * (len(COLUMNS) + 5) + "|")
        for k in KEYS:
            i8, o, o8 = v["unimed_int8"][k], v["ort"][k], v["ort_int8"][k]
            L.append("| %s | %s | %.2f×, %.2f× | %.2f× | %.2f× | %.2f× |" % (
                names[k], " | ".join(fmt_stats(v[c][k]) for c, _ in COLUMNS),
                ratio(i8, o8), ratio(i8, o8, "min"), ratio(i8, o),
                ratio(v["unimed_bf16"][k], o), ratio(v["unimed"][k], o)))
        rss = lambda r: r["peak_rss_kb"] / 1024
        L.append("| peak RSS (MB) | %s | %.2f× | %.2f× | %.2f× | %.2f× |" % (
            " | ".join("%.0f" % rss(v[c]) for c, _ in COLUMNS),
            rss(v["unimed_int8"]) / rss(v["ort_int8"]), rss(v["unimed_int8"]) / rss(v["ort"]),
            rss(v["unimed_bf16"]) / rss(v["ort"]), rss(v["unimed"]) / rss(v["ort"])))
        oc = lambda r: ("%.1f–%.1f" % (min(r["others_cores"]), max(r["others_cores"]))
                        if "others_cores" in r else "n/a")
        L.append("")
        L.append("Other processes kept on average %s CPUs busy during the runs (%s)." % (
            ", ".join("%s for %s" % (oc(v[c]), h.replace(" %s", "")) for c, h in COLUMNS), "min–max over the processes"))
        if "unimed_1t" in v:
            L.append("")
            L.append("Single thread, process CPU time (ms, min / median / max of 3 runs; wall "
                     "time is in the JSON):")
            L.append("")
            cols = (("ort_1t", "ONNX Runtime FP32"), ("ort_int8_1t", "ONNX Runtime INT8"),
                    ("unimed_1t", "unimed FP32"), ("unimed_bf16_1t", "unimed BF16"),
                    ("unimed_int8_1t", "unimed INT8"))
            L.append("| 1 thread, CPU time | %s | INT8 / ORT INT8 (median) | INT8 / ORT FP32 | "
                     "BF16 / ORT FP32 |" % " | ".join(h for _, h in cols))
            L.append("|---" * (len(cols) + 4) + "|")
            for k, name in (("cpu_ms_per_image_batch1", "image, batch 1 (per image)"),
                            ("cpu_ms_per_image_batch8", "image, batch 8 (per image)"),
                            ("cpu_ms_per_prompt", "text, one 16-token prompt")):
                i8 = v["unimed_int8_1t"][k]
                L.append("| %s | %s | %.2f× | %.2f× | %.2f× |" % (
                    name, " | ".join(fmt_stats(v[c][k]) for c, _ in cols),
                    ratio(i8, v["ort_int8_1t"][k]), ratio(i8, v["ort_1t"][k]),
                    ratio(v["unimed_bf16_1t"][k], v["ort_1t"][k])))
    g = res.get("gemm_i8")
    if g:
        L.append("")
        L.append("INT8 GEMM (tests/int8/bench_gemm_i8, one core, thread CPU time, min of 7): "
                 "measured VNNI peak %.0f GOPS per core (back-to-back `vpdpbusd` zmm); the "
                 "ViT-B/16 block's four linear layers reach %.0f GOPS = **%.0f %%** of it at batch "
                 "1 and %.0f GOPS = **%.0f %%** at batch 8 (quantizing the activations included); "
                 "BERT-base at a 16-token prompt: %.0f–%.0f GOPS (weights streamed at %.1f–%.1f "
                 "GB/s)." % (
                     g["peak_gops_per_core"], g["vit_block_b1_gops"],
                     100 * g["vit_block_fraction_b1"], g["vit_block_b8_gops"],
                     100 * g["vit_block_fraction_b8"],
                     min(g["bert_%s_16tok_gops" % n] for n in ("qkv", "inter", "out")),
                     max(g["bert_%s_16tok_gops" % n] for n in ("qkv", "inter", "out")),
                     min(g["bert_%s_16tok_weight_gbs" % n] for n in ("qkv", "inter", "out")),
                     max(g["bert_%s_16tok_weight_gbs" % n] for n in ("qkv", "inter", "out"))))
    return "\n".join(L) + "\n"


def write_doc(md, path):
    """Replaces the bench block of path (a copy of DOC if path does not exist yet)."""
    with open(path if os.path.exists(path) else DOC) as f:
        doc = f.read()
    if BEGIN not in doc or END not in doc:
        raise SystemExit("bench: %s has no %s ... %s block" % (path, BEGIN, END))
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(path, "w") as f:
        f.write(head + BEGIN + "\n" + md + END + tail)
    log("updated " + path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default=os.path.join(ROOT, "build-bench", "bench"))
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build-bench"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--torch-runs", type=int, default=3,
                    help="timed runs in the PyTorch process (it is ~5x slower)")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch (quick iterations)")
    ap.add_argument("--variants", default="as-is,unset",
                    help="comma list of as-is and/or unset (default both)")
    ap.add_argument("--write-doc", action="store_true")
    ap.add_argument("--doc", default=DOC,
                    help="the Markdown file --write-doc updates (default docs/PERFORMANCE.md; "
                         "a new path starts as a copy of it)")
    ap.add_argument("--no-cpu", action="store_true",
                    help="skip the single-thread CPU-time comparison")
    ap.add_argument("--quiet-wait", type=float, default=10.0,
                    help="max seconds to wait for an idle machine before each process")
    a = ap.parse_args(argv)
    t_start = time.time()
    a.work, a.build_dir = os.path.abspath(a.work), os.path.abspath(a.build_dir)
    QUIET["max_wait"] = a.quiet_wait
    os.makedirs(a.work, exist_ok=True)
    if not a.no_build:
        build(a.build_dir)
    unimed = os.path.join(a.build_dir, "tools", "unimed")
    cpu_bench = build_cpu_bench(a.build_dir, a.work) if not a.no_cpu else None
    model = ensure_model(a.work)
    onnx = ensure_onnx(a.work, model)
    onnx8 = ensure_onnx_int8(a.work, onnx)
    ensure_ort()
    membw_bin = os.path.join(a.work, "membw")
    run(["cc", "-std=c11", "-D_GNU_SOURCE", "-O3", "-march=native", "-Wall", "-Wextra", "-Werror",
         os.path.join(HERE, "membw.c"), "-lpthread", "-o", membw_bin])
    membw, _, _ = timed([membw_bin], dict(os.environ))

    res = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "command": "/usr/bin/python3 bench/run.py" + (" " + " ".join(argv if argv is not None
                                                                       else sys.argv[1:])
                                                         ).rstrip(),
           "machine": machine_info(), "runs": a.runs, "rounds": a.rounds, "threads": a.threads,
           "torch_runs": a.torch_runs, "membw": membw,
           "loadavg": " ".join(open("/proc/loadavg").read().split()[:3]), "variants": []}
    R, T = str(a.runs), str(a.threads)
    for name in a.variants.split(","):
        env = variant_env(name)
        v = {"name": name, "env": {k: env[k] for k in BLAS_VARS if k in env}}
        # the five contenders, interleaved round by round
        cmds = {"ort": ["node", os.path.join(HERE, "ort_bench.mjs"), "--onnx", onnx,
                        "--runs", R, "--threads", T],
                "ort_int8": ["node", os.path.join(HERE, "ort_bench.mjs"), "--onnx", onnx8,
                             "--runs", R, "--threads", T]}
        for key, prec in (("unimed", "fp32"), ("unimed_bf16", "bf16"), ("unimed_int8", "int8")):
            cmds[key] = [unimed, "bench", "--model", model, "--precision", prec, "--runs", R,
                         "--threads", T]
        got = {k: [] for k in cmds}
        for _ in range(a.rounds):
            for key, cmd in cmds.items():
                j, rss, _ = timed(cmd, env, cwd=HERE)
                j["peak_rss_kb"] = rss
                got[key].append(j)
        for key in cmds:
            v[key] = combine(got[key])
        if a.no_torch:
            v["torch"] = {k: dict(NAN_STATS) for k in KEYS}
            v["torch"]["peak_rss_kb"] = float("nan")
        else:
            j, rss, _ = timed([PY, os.path.join(HERE, "torch_bench.py"), "--model", model,
                               "--runs", str(a.torch_runs), "--threads", T], env)
            j["peak_rss_kb"] = rss
            v["torch"] = combine([j])
        if cpu_bench and not res["variants"]:
            # Single-thread CPU time: how much work each does per image, which
            # other processes on a shared machine disturb far less than wall time.
            for key, d in (("ort_1t", onnx), ("ort_int8_1t", onnx8)):
                v[key], _, _ = timed(["node", os.path.join(HERE, "ort_bench.mjs"), "--onnx", d,
                                      "--runs", "3", "--threads", "1"], env, cwd=HERE)
            for key, prec in (("unimed_1t", "fp32"), ("unimed_bf16_1t", "bf16"),
                              ("unimed_int8_1t", "int8")):
                v[key], _, _ = timed([cpu_bench, model, "1", "3", prec], env)
            gemm = os.path.join(a.build_dir, "tests", "int8", "bench_gemm_i8")
            if os.path.isfile(gemm) and "gemm_i8" not in res:
                res["gemm_i8"], _, _ = timed([gemm, "7"], env)
        res["variants"].append(v)
        for u in ("unimed", "unimed_bf16", "unimed_int8"):
            for base in ("ort", "ort_int8"):
                log("%s: %s/%s median b1 %.2f b8 %.2f prompt %.2f prompt in batch %.2f" % (
                    (name, u, base) + tuple(ratio(v[u][k], v[base][k]) for k in KEYS)))
    res["loadavg_end"] = " ".join(open("/proc/loadavg").read().split()[:3])
    res["wall_s"] = round(time.time() - t_start)
    with open(os.path.join(a.work, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
    md = markdown(res)
    with open(os.path.join(a.work, "results.md"), "w") as f:
        f.write(md)
    print(md)
    if a.write_doc:
        write_doc(md, a.doc)
    log("done in %d s" % res["wall_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
