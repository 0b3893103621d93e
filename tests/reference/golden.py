#!/usr/bin/python3
"""Compute golden outputs of a UniMed-CLIP model directory (float64).

  golden.py --model DIR --texts TEXTS.jsonl --out OUTDIR [--images N] [--seed S]

TEXTS.jsonl: one {"text": str, "ids": [int, ...]} per line (ids from the
HuggingFace tokenizer, without padding).  ids are padded with pad_token_id to
context_length before running the model, as UniMed-CLIP does.

Writes
  OUTDIR/img{k}.f32   raw little-endian float32 [3, S, S], already normalised
                      with the CLIP mean/std (smooth random "photo-like" images)
  OUTDIR/golden.json  {"model", "logit_scale", "images": [{"file", "embedding"}],
                       "texts": [{"text", "ids", "embedding"}],
                       "zero_shot": [{"image", "classes", "probs", "logits"}], ...}
All embeddings are L2-normalised.  The N images are encoded as one batch.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)

import unimed_ref  # noqa: E402


def make_image(rng, size):
    """Smooth random pattern in [0, 1], shape [3, size, size], float64."""
    yy, xx = np.meshgrid(np.linspace(0.0, 1.0, size), np.linspace(0.0, 1.0, size), indexing="ij")
    img = np.empty((3, size, size))
    for c in range(3):
        acc = rng.uniform(-1, 1) * xx + rng.uniform(-1, 1) * yy
        for _ in range(4):  # low-frequency waves
            fx, fy = rng.uniform(-4, 4, size=2)
            ph = rng.uniform(0, 2 * np.pi)
            acc = acc + rng.uniform(0.2, 1.0) * np.sin(2 * np.pi * (fx * xx + fy * yy) + ph)
        for _ in range(3):  # soft blobs
            cx, cy = rng.uniform(0, 1, size=2)
            r = rng.uniform(0.05, 0.3)
            acc = acc + rng.uniform(-1.5, 1.5) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
        lo, hi = acc.min(), acc.max()
        a, b = sorted(rng.uniform(0, 1, size=2))
        b = max(b, a + 0.3)
        img[c] = np.clip(a + (acc - lo) / max(hi - lo, 1e-12) * (b - a), 0.0, 1.0)
    return img


def zero_shot_cases(n_texts, n_images, rng):
    """2-3 cases with 2-4 classes; some classes have several prompts."""
    if n_texts < 2:
        raise SystemExit("error: need at least 2 texts for zero-shot cases")
    cases = [{"image": 0, "classes": [[0], [1]]}]
    if n_texts >= 4:
        perm = [int(i) for i in rng.permutation(n_texts)]
        rest = perm[3:]
        cases.append({"image": 1 % n_images,
                      "classes": [perm[0:2], [perm[2]], rest[:3]]})
        perm = [int(i) for i in rng.permutation(n_texts)]
        classes = [[] for _ in range(4)]
        for j, t in enumerate(perm):
            classes[j % 4].append(t)
        cases.append({"image": 2 % n_images, "classes": classes})
    elif n_texts == 3:
        cases.append({"image": 1 % n_images, "classes": [[0, 1], [2]]})
    return cases


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="model directory (config.json, model.safetensors)")
    ap.add_argument("--texts", required=True, help="JSONL with {text, ids} per line")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--images", type=int, default=3, help="number of images (encoded as one batch)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.images < 1:
        raise SystemExit("error: --images must be >= 1")

    t0 = time.time()
    torch.set_grad_enabled(False)
    model, cfg = unimed_ref.load_model_dir(args.model, dtype=torch.float64)
    t_load = time.time() - t0
    S = cfg["vision"]["image_size"]
    mean = np.array(cfg["preprocessing"]["mean"]).reshape(3, 1, 1)
    std = np.array(cfg["preprocessing"]["std"]).reshape(3, 1, 1)
    V = cfg["text"]["vocab_size"]

    texts = []
    with open(args.texts, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            rec = json.loads(line)
            ids = [int(i) for i in rec["ids"]]
            bad = [i for i in ids if not 0 <= i < V]
            if bad:
                raise SystemExit("error: %s:%d: token id %d outside vocab (size %d)"
                                 % (args.texts, lineno, bad[0], V))
            if len(ids) > model.context_length:
                raise SystemExit("error: %s:%d: %d ids > context_length %d"
                                 % (args.texts, lineno, len(ids), model.context_length))
            texts.append({"text": rec["text"], "ids": ids})
    if not texts:
        raise SystemExit("error: no texts in " + args.texts)

    os.makedirs(args.out, exist_ok=True)
    rng = np.random.RandomState(args.seed)
    images = []
    files = []
    for k in range(args.images):
        x = ((make_image(rng, S) - mean) / std).astype("<f4")
        name = "img%d.f32" % k
        x.tofile(os.path.join(args.out, name))
        files.append(name)
        images.append(torch.from_numpy(x.astype(np.float64)))

    t1 = time.time()
    img_emb = model.encode_image(torch.stack(images), normalize=True)  # one batch
    t_img = time.time() - t1
    t1 = time.time()
    ids = model.pad_ids([t["ids"] for t in texts])
    txt_emb = model.encode_text(ids, normalize=True)
    t_txt = time.time() - t1

    zs = []
    for case in zero_shot_cases(len(texts), args.images, rng):
        ce = unimed_ref.class_embeddings(txt_emb, case["classes"])
        logits = model.logit_scale.exp() * (img_emb[case["image"]] @ ce.t())
        probs = unimed_ref.zero_shot_probs(model.logit_scale, img_emb[case["image"]], ce)
        zs.append({"image": case["image"], "classes": case["classes"],
                   "logits": logits.tolist(), "probs": probs.tolist()})

    out = {
        "model": args.model,
        "logit_scale": float(model.logit_scale),
        "image_size": S,
        "context_length": model.context_length,
        "pad_token_id": model.pad_token_id,
        "images": [{"file": f, "embedding": e.tolist()} for f, e in zip(files, img_emb)],
        "texts": [{"text": t["text"], "ids": t["ids"], "embedding": e.tolist()}
                  for t, e in zip(texts, txt_emb)],
        "zero_shot": zs,
    }
    with open(os.path.join(args.out, "golden.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print("golden: %d images, %d texts, %d zero-shot cases -> %s "
          "(load %.1f s, images %.1f s, texts %.1f s, total %.1f s)"
          % (args.images, len(texts), len(zs), args.out, t_load, t_img, t_txt, time.time() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
