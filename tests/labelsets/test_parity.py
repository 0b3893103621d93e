#!/usr/bin/python3
"""Label-set embeddings and probabilities: C vs the PyTorch reference.

usage: test_parity.py --tool LABELSET_TOOL --model MODEL_DIR --golden GOLDEN_DIR
                      --work WORK_DIR [--tol 1e-4] SET_OR_DIR...

1. Prompts: every set is expanded here, independently, by the rules of
   docs/LABEL_SETS.md and compared with the C loader's expansion.
2. C side: `labelset_tool score` encodes GOLDEN_DIR/img*.f32, embeds every
   set (fresh cache in WORK_DIR/cache) and scores; run twice, the second
   run reads the cache and must give identical output.
3. Reference: token ids from the HuggingFace tokenizer
   (tests/tokenizer/hf_reference.py), the float64 model of
   tests/reference/unimed_ref.py, prompt ensembles (mean of normalised
   prompt embeddings, normalised), softmax over labels of
   exp(logit_scale)·cos, or per label softmax over {positive, negative}.
4. max |C - reference| <= tol for every class embedding and probability.
Exit 77 (skip) when the reference tokenizer is unavailable."""
import argparse
import glob
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))


def expand(ls):
    """{label name: (prompts, negatives)} by the documented rules."""
    binary = ls.get("scoring", "softmax") == "binary"
    templates = ls.get("templates", [])
    neg_templates = ls.get("negative_templates", [])
    out = []
    for label in ls["labels"]:
        names = [label["name"]] + label.get("synonyms", [])
        if "prompts" in label:
            pos = list(label["prompts"])
        else:
            pos = [t.replace("{}", n, 1) for n in names for t in templates]
        neg = []
        if binary:
            if "negative_prompts" in label:
                neg = list(label["negative_prompts"])
            else:
                neg = [t.replace("{}", n, 1) for n in names for t in neg_templates]
        out.append((label["name"], pos, neg))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tool", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--golden", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("sets", nargs="+")
    args = ap.parse_args()

    files = []
    for s in args.sets:
        files += sorted(glob.glob(os.path.join(s, "*.json"))) if os.path.isdir(s) else [s]
    work = os.path.abspath(args.work)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    failures = []

    def check(what, delta):
        ok = delta <= args.tol
        print("%-60s max|d| = %.3g  %s" % (what, delta, "ok" if ok else "FAIL"))
        if not ok:
            failures.append(what)

    # ---- C side, twice (second run from the cache) ----
    cache = os.path.join(work, "cache")
    outs = []
    for run in (1, 2):
        out = os.path.join(work, "c%d.json" % run)
        p = subprocess.run([args.tool, "score", args.model, cache, args.golden, out] + files,
                           capture_output=True, text=True)
        if p.returncode != 0:
            print("FAIL labelset_tool score: " + p.stderr.strip())
            return 1
        with open(out) as f:
            outs.append(json.load(f))
    c_out = outs[0]
    n_cache = len(glob.glob(os.path.join(cache, "*.emb")))
    if outs[0] != outs[1]:
        failures.append("cached run differs")
        print("FAIL second (cached) run differs from the first")
    else:
        print("second run (from %d cache files) identical to the first" % n_cache)
    if n_cache != len(files):
        failures.append("cache files")
        print("FAIL %d cache files for %d sets" % (n_cache, len(files)))

    # ---- prompts: C expansion vs ours ----
    sets = []
    for path, cs in zip(files, c_out["sets"]):
        with open(path, encoding="utf-8") as f:
            ls = json.load(f)
        mine = expand(ls)
        theirs = [(l["name"], l["prompts"], l["negatives"]) for l in cs["labels"]]
        if mine != theirs:
            failures.append("prompts of " + path)
            print("FAIL prompts of %s differ:\n  C:  %s\n  py: %s" % (path, theirs, mine))
        sets.append((path, ls, mine, cs))
    n_prompts = sum(len(p) + len(n) for _, _, m, _ in sets for _, p, n in m)
    print("prompt expansion: %d sets, %d prompts, C = Python" % (len(sets), n_prompts))

    # ---- reference token ids ----
    texts = sorted({t for _, _, m, _ in sets for _, p, n in m for t in p + n})
    for t in texts:
        if "\n" in t or "\r" in t:
            print("FAIL prompt with a line break: %r" % t)
            return 1
    with open(os.path.join(args.model, "config.json")) as f:
        cfg = json.load(f)
    txt = os.path.join(work, "prompts.txt")
    ids_path = os.path.join(work, "ids.jsonl")
    with open(txt, "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(t + "\n" for t in texts))
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "tokenizer", "hf_reference.py"),
                        "--vocab", os.path.abspath(os.path.join(args.model, "vocab.txt")),
                        "--context", str(cfg["text"]["context_length"]),
                        "--in", txt, "--out", ids_path], capture_output=True, text=True)
    if p.returncode == 77:
        print("SKIP: " + p.stdout.strip())
        return 77
    if p.returncode != 0:
        print("FAIL hf_reference.py: " + p.stdout + p.stderr)
        return 1
    ids = {}
    with open(ids_path, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            ids[r["text"]] = r["ids"]

    # ---- reference model (float64) ----
    import numpy as np
    import torch
    import unimed_ref
    torch.set_grad_enabled(False)
    model, cfg = unimed_ref.load_model_dir(args.model, dtype=torch.float64)
    emb = {}
    for b in range(0, len(texts), 64):
        chunk = texts[b:b + 64]
        e = model.encode_text(model.pad_ids([ids[t] for t in chunk]), normalize=True)
        for t, v in zip(chunk, e):
            emb[t] = v
    S = cfg["vision"]["image_size"]
    imgs = []
    for k in range(1000):
        fn = os.path.join(args.golden, "img%d.f32" % k)
        if not os.path.exists(fn):
            break
        x = np.fromfile(fn, dtype="<f4").reshape(3, S, S).astype(np.float64)
        imgs.append(torch.from_numpy(x))
    if not imgs:
        print("FAIL no images in " + args.golden)
        return 1
    img_emb = model.encode_image(torch.stack(imgs), normalize=True)
    scale = model.logit_scale.exp()

    def ensemble(prompts):
        return torch.nn.functional.normalize(torch.stack([emb[t] for t in prompts]).mean(0), dim=-1)

    worst = 0.0
    for path, ls, mine, cs in sets:
        name = os.path.basename(path)
        binary = ls.get("scoring", "softmax") == "binary"
        pos = torch.stack([ensemble(p) for _, p, _ in mine])
        d_pos = float((torch.tensor(cs["positive"], dtype=torch.float64) - pos).abs().max())
        check("%s: label embeddings" % name, d_pos)
        if binary:
            neg = torch.stack([ensemble(n) for _, _, n in mine])
            d_neg = float((torch.tensor(cs["negative"], dtype=torch.float64) - neg).abs().max())
            check("%s: negative embeddings" % name, d_neg)
        elif cs["negative"]:
            failures.append(name + " negatives")
            print("FAIL %s: softmax set has negative embeddings" % name)
        d = 0.0
        for k, ie in enumerate(img_emb):
            if binary:
                lp = scale * (pos @ ie)
                ln = scale * (neg @ ie)
                probs = torch.sigmoid(lp - ln)  # softmax over {positive, negative}
            else:
                probs = (scale * (pos @ ie)).softmax(dim=-1)
            c = torch.tensor(cs["probs"][k], dtype=torch.float64)
            d = max(d, float((c - probs).abs().max()))
        check("%s: probabilities (%d images, %s)" % (name, len(imgs),
                                                     "binary" if binary else "softmax"), d)
        worst = max(worst, d)
    print("%d sets; worst probability difference %.3g; %d failures"
          % (len(sets), worst, len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
