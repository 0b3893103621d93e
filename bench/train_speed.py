#!/usr/bin/python3
"""Training-step speed: `unimed-train` against Debian's PyTorch on the same
model, batch and captions, float32, 2 threads each.

    /usr/bin/python3 bench/train_speed.py --unimed-train BUILD/tools/train/unimed-train
        --unimed BUILD/tools/unimed [--work DIR] [--config small|full] [--batch 32]
        [--steps 30] [--rounds 3] [--threads 2] [--studies 1024] [--json OUT.json]
        [--only c|torch]

1. Model: tests/reference/make_model.py --config CONFIG --seed 0 with the
   vocabulary of tests/tokenizer/make_vocab.py (3000 tokens for small, the
   30522-token BERT layout for full).
2. Data: a study-archive ZIP of --studies chest radiographs (DX, CHEST,
   32 x 32, 8 bit, one per study, laid out like Orthanc's archives) and a CSV
   of their StudyInstanceUIDs with chest-xray labels (labelsets/chest-xray.json),
   written with pydicom + zipfile.
3. unimed-train: `--init MODEL --archive ZIP --labels CSV --label-set
   labelsets/chest-xray.json --batch B --epochs E --max-steps S --threads 2
   --quiet --out DIR`. Its OUT/train_log.csv has the elapsed time after each
   optimiser step (10 ms resolution); a run's step time is the elapsed time
   from the end of the warm-up steps (3) to the last step over their number
   (batch assembly + forward + backward + AdamW; the one-off DICOM decoding
   before the first step is not in it; E is just enough epochs for S steps,
   and the small checkpoint written at each epoch's end is in the steps).
   bench/train_step.c ("driver"): the same two calls unimed-train makes per
   step (umt_trainer_accumulate + umt_trainer_step, model/train.h) in a loop
   on fixed pseudo-random pixels and the same captions, with wall and
   process CPU time (CLOCK_PROCESS_CPUTIME_ID) of every step, compiled here
   against BUILD/model/libunimed_model.a.
4. PyTorch: the same model directory loaded with tests/reference/unimed_ref.py
   in float32, torch.set_num_threads(2); the same kind of captions (each
   label set template with a label name or synonym, tokenised by
   `unimed tokenize` with the model's vocabulary), padded to the longest in
   the batch (not to the context length: the fairer baseline), random images
   of the model's size. One step = batch assembly, CLIP loss (OpenCLIP's
   symmetric cross-entropy on L2-normalised embeddings, as train_ref.py),
   backward, clip_grad_norm_(1.0), AdamW (beta 0.9/0.98, eps 1e-6, wd 0.1 on
   >= 2-D non-embedding weights, as unimed-train), logit_scale clamp.
   The first 3 steps are dropped as warm-up.
Besides wall time, process CPU time per step (all threads): for PyTorch
time.process_time() around each step; for unimed-train the difference in
/usr/bin/time's user + sys between the run and the same run stopped after
the 3 warm-up steps, divided by the timed steps. On a machine shared with
other jobs the CPU time is the steadier figure (it also exposes spinning
threads).
Both run --rounds times, alternating; a run's step time is the mean over its
timed steps (unimed-train logs elapsed time with 10 ms resolution); images/s =
batch / step time, reported as min / median / max over the rounds, with the
load average before each round.
"""

import argparse
import csv
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PY = "/usr/bin/python3"
WARMUP = 3  # --warmup


def log(msg):
    print("[train-speed %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def stats(xs):
    xs = sorted(xs)
    return {"min": xs[0], "median": statistics.median(xs), "max": xs[-1], "n": len(xs)}


# ---------------------------------------------------------------- inputs

def ensure_model(work, config):
    model = os.path.join(work, "model-" + config)
    if os.path.isfile(os.path.join(model, "model.safetensors")):
        return model
    vocab = os.path.join(work, "vocab-%s.txt" % config)
    size = "3000" if config == "small" else "30522"
    subprocess.run([PY, os.path.join(ROOT, "tests", "tokenizer", "make_vocab.py"), "--size", size,
                    "--layout", "bert", "--out", vocab], check=True)
    subprocess.run([PY, os.path.join(ROOT, "tests", "reference", "make_model.py"), "--config",
                    config, "--seed", "0", "--vocab", vocab, "--out", model], check=True)
    return model


def label_set():
    with open(os.path.join(ROOT, "labelsets", "chest-xray.json")) as f:
        return json.load(f)


def ensure_archive(work, n):
    z, c = os.path.join(work, "train-%d.zip" % n), os.path.join(work, "train-%d.csv" % n)
    if os.path.isfile(z) and os.path.isfile(c):
        return z, c
    import numpy as np
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    DX = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    rng = np.random.default_rng(0)
    labels = [lab["name"] for lab in label_set()["labels"]]
    yy, xx = np.mgrid[0:32, 0:32]
    rows = []
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(n):
            def uid(s, i=i):
                return generate_uid(prefix=None, entropy_srcs=["unimed-train-speed", str(i), s])
            label = labels[i % len(labels)]
            img = 40 + 160 * (((xx - 16) / 13.0) ** 2 + ((yy - 16) / 15.0) ** 2 < 1)
            img = img - 120 * ((((xx - 10) / 5.0) ** 2 + ((yy - 15) / 9.0) ** 2 < 1) |
                               (((xx - 22) / 5.0) ** 2 + ((yy - 15) / 9.0) ** 2 < 1))
            img = np.clip(img + rng.normal(0, 10, img.shape) + 15 * (i % len(labels)), 0, 255)
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = DX
            meta.MediaStorageSOPInstanceUID = uid("sop")
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
            ds.SOPClassUID, ds.SOPInstanceUID = DX, meta.MediaStorageSOPInstanceUID
            ds.StudyInstanceUID, ds.SeriesInstanceUID = uid("study"), uid("series")
            ds.PatientID = ds.PatientName = "TS-%05d" % i
            ds.AccessionNumber = "TS%05d" % i
            ds.StudyDate = "20240101"
            ds.Modality, ds.BodyPartExamined = "DX", "CHEST"
            ds.SeriesNumber = ds.InstanceNumber = 1
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.Rows = ds.Columns = 32
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
            ds.PixelData = img.astype(np.uint8).tobytes()
            ds.is_little_endian, ds.is_implicit_VR = True, False
            buf = io.BytesIO()
            ds.save_as(buf, write_like_original=False)
            zf.writestr("TS-%05d TS-%05d/20240101 Chest/DX1 PA/DX000001.dcm" % (i, i),
                        buf.getvalue())
            rows.append((ds.StudyInstanceUID, label))
    with open(c, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["StudyInstanceUID", "label"])
        w.writerows(rows)
    return z, c


def captions():
    ls = label_set()
    out = []
    for lab in ls["labels"]:
        for name in [lab["name"]] + lab.get("synonyms", []):
            for t in ls["templates"]:
                out.append(t.replace("{}", name))
    return out


# ---------------------------------------------------------------- the two trainers

def c_cmd(a, model, archive, csvf, steps, out):
    epochs = -(-steps * a.batch // a.studies)  # enough epochs for the steps
    return [a.unimed_train, "--init", model, "--archive", archive, "--labels", csvf,
            "--label-set", os.path.join(ROOT, "labelsets", "chest-xray.json"),
            "--batch", str(a.batch), "--epochs", str(epochs), "--max-steps", str(steps),
            "--threads", str(a.threads), "--quiet", "--out", out]


def time_v_cpu(stderr):
    f = {}
    for ln in stderr.splitlines():
        if ":" in ln:
            k, v = ln.rsplit(":", 1)
            f[k.strip()] = v.strip()
    return float(f["User time (seconds)"]) + float(f["System time (seconds)"])


def run_c(a, model, archive, csvf, rnd):
    out = os.path.join(a.work, "c-run")
    # the same run stopped after the warm-up steps: the difference in process
    # CPU time is the CPU time of the timed steps
    shutil.rmtree(out, ignore_errors=True)
    p0 = subprocess.run(["/usr/bin/time", "-v"] + c_cmd(a, model, archive, csvf, WARMUP, out),
                        capture_output=True, text=True)
    if p0.returncode != 0:
        raise SystemExit("unimed-train failed:\n" + p0.stderr[-3000:])
    shutil.rmtree(out, ignore_errors=True)
    cmd = c_cmd(a, model, archive, csvf, a.steps, out)
    la = loadavg()
    t = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit("unimed-train failed:\n" + p.stderr[-3000:])
    with open(os.path.join(out, "train_log.csv")) as f:
        n_steps = len(list(csv.DictReader(f)))
    if n_steps != a.steps:
        raise SystemExit("unimed-train ran %d steps, not %d" % (n_steps, a.steps))
    cpu_per_step = (time_v_cpu(p.stderr) - time_v_cpu(p0.stderr)) / (a.steps - WARMUP)
    with open(os.path.join(out, "train_log.csv")) as f:
        rows = list(csv.DictReader(f))
    el = [float(r["elapsed_s"]) for r in rows]
    # elapsed_s has 10 ms resolution: time the steps after the warm-up together
    steps = [(el[-1] - el[WARMUP - 1]) / (len(el) - WARMUP)]
    rss = [ln for ln in p.stderr.splitlines() if "Maximum resident" in ln]
    res = {"round": rnd, "loadavg_before": la, "wall": wall, "cmd": cmd,
           "step_s": steps, "cpu_per_step_s": cpu_per_step,
           "last_ips_logged": float(rows[-1]["images_per_s"]),
           "peak_rss_mb": float(rss[0].split(":")[1]) / 1024 if rss else None,
           "loss_first_last": [float(rows[0]["loss"]), float(rows[-1]["loss"])]}
    log("unimed-train round %d: median step %.1f ms (%.0f img/s), load %s" % (
        rnd, 1e3 * statistics.median(res["step_s"]), a.batch / statistics.median(res["step_s"]),
        la))
    return res


def build_driver(a):
    """Compiles bench/train_step.c against the build's model library."""
    lib = a.model_lib or os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(a.unimed_train)))), "model", "libunimed_model.a")
    out = os.path.join(a.work, "train_step")
    libs = subprocess.run(["pkg-config", "--libs", "openblas", "libcjson"], capture_output=True,
                          text=True, check=True).stdout.split()
    subprocess.run(["cc", "-std=c11", "-D_GNU_SOURCE", "-O2", "-Wall", "-Wextra", "-Werror",
                    "-I" + os.path.join(ROOT, "model"), os.path.join(HERE, "train_step.c"), lib] +
                   libs + ["-lm", "-lpthread", "-o", out], check=True)
    return out


def run_driver(a, exe, model, ids_file, rnd):
    la = loadavg()
    p = subprocess.run([exe, model, ids_file, str(a.batch), str(a.steps), str(a.threads)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit("train_step failed:\n" + p.stderr[-3000:])
    r = json.loads(p.stdout)
    res = {"round": rnd, "loadavg_before": la,
           "step_s": [statistics.mean(r["wall_s"][WARMUP:])], "each_step_s": r["wall_s"][WARMUP:],
           "cpu_per_step_s": statistics.mean(r["cpu_s"][WARMUP:]),
           "loss_first_last": [r["loss"][0], r["loss"][-1]], "peak_rss_mb": None}
    log("train_step round %d: mean step %.1f ms (%.0f img/s), CPU %.1f ms/step, load %s" % (
        rnd, 1e3 * res["step_s"][0], a.batch / res["step_s"][0], 1e3 * res["cpu_per_step_s"], la))
    return res


TORCH_CHILD = r'''
import json, math, os, random, sys, time
import numpy as np
import torch
import torch.nn.functional as F
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import unimed_ref
torch.set_num_threads(THREADS)
torch.manual_seed(0)
random.seed(0)
model, cfg = unimed_ref.load_model_dir(MODEL, dtype=torch.float32)
model.train()
for n, p in model.named_parameters():
    if ".pooler." in n:
        p.requires_grad_(False)
named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
def decays(name, p):
    if name == "logit_scale" or p.ndim < 2:
        return False
    return not ("embedding" in name or "LayerNorm" in name or "bias" in name)
opt = torch.optim.AdamW([{"params": [p for n, p in named if not decays(n, p)], "weight_decay": 0.0},
                         {"params": [p for n, p in named if decays(n, p)], "weight_decay": 0.1}],
                        lr=5e-4, betas=(0.9, 0.98), eps=1e-6)
S = cfg["vision"]["image_size"]
pool = torch.randn(256, 3, S, S)
ids = IDS
pad = model.pad_token_id
B = BATCH
times, cpus, losses = [], [], []
for step in range(STEPS):
    t = time.perf_counter()
    c0 = time.process_time()
    pick = [random.randrange(len(pool)) for _ in range(B)]
    images = pool[pick]
    texts = [ids[random.randrange(len(ids))] for _ in range(B)]
    L = max(len(x) for x in texts)
    tok = torch.full((B, L), pad, dtype=torch.int64)
    for i, x in enumerate(texts):
        tok[i, :len(x)] = torch.tensor(x)
    lr = 5e-4 * (step + 1) / 50
    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad(set_to_none=True)
    img = F.normalize(model.encode_image(images), dim=-1)
    txt = F.normalize(model.encode_text(tok), dim=-1)
    logits = model.logit_scale.exp() * img @ txt.t()
    labels = torch.arange(B)
    loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for _, p in named], 1.0)
    opt.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(100))
    times.append(time.perf_counter() - t)
    cpus.append(time.process_time() - c0)
    losses.append(float(loss))
print(json.dumps({"step_s": times, "cpu_s": cpus, "losses": losses, "torch": torch.__version__,
                  "threads": torch.get_num_threads()}))
'''


def run_torch(a, model, ids, rnd):
    code = TORCH_CHILD
    th = a.torch_threads or a.threads
    for k, v in (("ROOT", repr(ROOT)), ("THREADS", str(th)), ("MODEL", repr(model)),
                 ("IDS", json.dumps(ids)), ("BATCH", str(a.batch)),
                 ("STEPS", str(a.torch_steps or a.steps))):
        code = code.replace(k, v)
    env = dict(os.environ, OMP_NUM_THREADS=str(th))
    la = loadavg()
    p = subprocess.run(["/usr/bin/time", "-v", PY, "-c", code], capture_output=True, text=True,
                       env=env)
    if p.returncode != 0:
        raise SystemExit("torch step failed:\n" + p.stderr[-3000:])
    r = json.loads(p.stdout.strip().splitlines()[-1])
    rss = [ln for ln in p.stderr.splitlines() if "Maximum resident" in ln]
    res = {"round": rnd, "loadavg_before": la, "step_s": [statistics.mean(r["step_s"][WARMUP:])],
           "each_step_s": r["step_s"][WARMUP:],
           "cpu_per_step_s": statistics.mean(r["cpu_s"][WARMUP:]),
           "torch": r["torch"], "threads": r["threads"],
           "peak_rss_mb": float(rss[0].split(":")[1]) / 1024 if rss else None,
           "loss_first_last": [r["losses"][0], r["losses"][-1]]}
    log("PyTorch round %d: median step %.1f ms (%.0f img/s), load %s" % (
        rnd, 1e3 * statistics.median(res["step_s"]), a.batch / statistics.median(res["step_s"]),
        la))
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--unimed-train", required=True)
    ap.add_argument("--unimed", required=True, help="for `unimed tokenize`")
    ap.add_argument("--work", default="/tmp/unimed-train-speed")
    ap.add_argument("--config", default="small", choices=("small", "full"))
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--torch-steps", type=int, help="steps of a PyTorch run (default --steps)")
    ap.add_argument("--torch-threads", type=int,
                    help="PyTorch threads (default --threads; 1 shows what spinning costs)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--studies", type=int, default=1024)
    ap.add_argument("--warmup", type=int, default=3, help="untimed first steps of each run")
    ap.add_argument("--only", choices=("c", "driver", "torch"))
    ap.add_argument("--model-lib", help="libunimed_model.a for bench/train_step.c (default: "
                    "BUILD/model/ next to --unimed-train's BUILD/tools/train/)")
    ap.add_argument("--json")
    a = ap.parse_args()
    global WARMUP
    WARMUP = a.warmup
    if a.steps <= WARMUP or (a.torch_steps or a.steps) <= WARMUP or WARMUP < 1:
        raise SystemExit("--steps must exceed --warmup, which must be >= 1")
    os.makedirs(a.work, exist_ok=True)
    model = ensure_model(a.work, a.config)
    archive, csvf = ensure_archive(a.work, a.studies)
    texts = captions()
    tok = subprocess.run([a.unimed, "tokenize", "--model", model] + texts, capture_output=True,
                         text=True, check=True).stdout
    ids = [json.loads(ln)["ids"] for ln in tok.splitlines() if ln.strip()]
    lens = [len(x) for x in ids]
    log("%d captions, %d-%d tokens (median %g)" % (len(ids), min(lens), max(lens),
                                                     statistics.median(lens)))
    ids_file = os.path.join(a.work, "caption_ids.txt")
    with open(ids_file, "w") as f:
        for x in ids:
            f.write(" ".join(map(str, x)) + "\n")
    exe = build_driver(a) if a.only in (None, "driver") else None
    res = {"config": a.config, "batch": a.batch, "steps": a.steps, "warmup_dropped": WARMUP,
           "threads": a.threads, "caption_tokens": stats(lens), "loadavg_start": loadavg(),
           "c": [], "driver": [], "torch": []}
    for rnd in range(a.rounds):
        if a.only in (None, "c"):
            res["c"].append(run_c(a, model, archive, csvf, rnd))
        if exe:
            res["driver"].append(run_driver(a, exe, model, ids_file, rnd))
        if a.only in (None, "torch"):
            res["torch"].append(run_torch(a, model, ids, rnd))
    res["loadavg_end"] = loadavg()
    print("config %s, batch %d, %d threads, %d steps per run (first %d dropped), %d rounds; "
          "load average %s at start, %s at end" % (a.config, a.batch, a.threads, a.steps, WARMUP,
                                                   a.rounds, res["loadavg_start"],
                                                   res["loadavg_end"]))
    summary = {}
    for who in ("c", "driver", "torch"):
        if not res[who]:
            continue
        st = [s for r in res[who] for s in r["step_s"]]
        s = stats(st)
        summary[who] = s
        ips = {k: a.batch / s[k] for k in ("min", "median", "max")}
        print("%-6s step ms (mean of a run's timed steps) %.1f / %.1f / %.1f; images/s "
              "%.1f / %.1f / %.1f (best / median / worst run); ms per image %.2f (median); "
              "peak RSS %.0f MB; loads before rounds: %s" % (
                  who, 1e3 * s["min"], 1e3 * s["median"], 1e3 * s["max"], ips["min"],
                  ips["median"], ips["max"], 1e3 * s["median"] / a.batch,
                  max(r["peak_rss_mb"] or 0 for r in res[who]),  # 0: not measured
                  "; ".join(r["loadavg_before"] for r in res[who])))
        for r in res[who]:
            print("       round %d: median %.1f ms/step wall, %.1f ms/step process CPU (all "
                  "threads), loss %.3f -> %.3f, load before %s" % (
                      r["round"], 1e3 * statistics.median(r["step_s"]), 1e3 * r["cpu_per_step_s"],
                      *r["loss_first_last"], r["loadavg_before"]))
        summary[who + "_cpu"] = stats([r["cpu_per_step_s"] for r in res[who]])
    if "c" in summary and "torch" in summary:
        print("unimed-train / PyTorch images/s: %.2fx (median steps), %.2fx (best steps)" % (
            summary["torch"]["median"] / summary["c"]["median"],
            summary["torch"]["min"] / summary["c"]["min"]))
    if "driver" in summary and "torch" in summary:
        print("train_step / PyTorch images/s: %.2fx (median runs), %.2fx (best runs)" % (
            summary["torch"]["median"] / summary["driver"]["median"],
            summary["torch"]["min"] / summary["driver"]["min"]))
    if "driver_cpu" in summary and "torch_cpu" in summary:
        print("train_step / PyTorch, process CPU time per step: %.2fx less (medians)" % (
            summary["torch_cpu"]["median"] / summary["driver_cpu"]["median"]))
    if "c_cpu" in summary and "torch_cpu" in summary:
        print("unimed-train / PyTorch, process CPU time per step: %.2fx less (medians)" % (
            summary["torch_cpu"]["median"] / summary["c_cpu"]["median"]))
    res["summary"] = summary
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
