#!/usr/bin/python3
"""PyTorch training reference for the C trainer (model/train_*.c).

  train_ref.py --model DIR --golden GOLDEN_DIR --out OUTDIR
               [--steps 10] [--lr 5e-4] [--warmup 3] [--wd 0.2] [--clip 1.0]

Runs unimed_ref.UniMedCLIP in float64 on a small batch built from the golden
inputs (GOLDEN_DIR/img*.f32 and the token ids in GOLDEN_DIR/golden.json):

  micro-batch A: images 0..B-1 paired with texts TEXTS_A
  micro-batch B: the images rotated by one, paired with texts TEXTS_B

and writes
  OUTDIR/grads.safetensors  d(loss_A)/d(param) for every parameter with a
                            gradient (float32 of the float64 gradient)
  OUTDIR/final.safetensors  the parameters after the training steps
  OUTDIR/model/             with --activation: the model trained (a copy of
                            DIR with vision.activation changed)
  OUTDIR/train.json         the batch (image files, text ids), the optimiser
                            settings, the weight-decay set, and per step the
                            lr, loss (mean of the two micro-batches, before
                            the update), gradient norm and logit_scale.

Training step (OpenCLIP's loop, gradient accumulation over the two
micro-batches): zero_grad; (loss_A + loss_B) / 2 backward; clip_grad_norm_;
lr from cosine_lr (linear warm-up); AdamW step; logit_scale.clamp_(0, ln 100).
Loss: symmetric CLIP cross-entropy on L2-normalised embeddings,
logits = exp(logit_scale) * img @ txt.T.
Weight decay only on >= 2-D weights that are not embeddings (no biases,
LayerNorm, class/positional/word/position/type embeddings, logit_scale).
"""

import argparse
import json
import math
import os
import shutil
import sys

import numpy as np
import torch
import torch.nn.functional as F

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
sys.path.insert(0, os.path.join(_HERE, "..", "..", "tools"))

import unimed_ref  # noqa: E402
import unimed_safetensors  # noqa: E402


def decays(name, p):
    if name == "logit_scale" or p.ndim < 2:
        return False
    return not ("embedding" in name or "LayerNorm" in name or "bias" in name)


def cosine_lr(base, warmup, total, step):
    if step < warmup:
        return base * (step + 1) / warmup
    e, es = step - warmup, total - warmup
    return 0.5 * (1 + math.cos(math.pi * e / es)) * base


def clip_loss(model, images, ids):
    img = F.normalize(model.encode_image(images), dim=-1)
    txt = F.normalize(model.encode_text(ids), dim=-1)
    logits = model.logit_scale.exp() * img @ txt.t()
    labels = torch.arange(len(images))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def pick_texts(texts, B):
    """Two disjoint sets of B texts, the longest ones first in A (edge cases)."""
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]["ids"]))
    a = sorted(order[:1] + list(range(B - 1)))  # the longest plus the first ones
    rest = [i for i in range(len(texts)) if i not in a]
    return a, rest[:B]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--golden", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--wd", type=float, default=0.2)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--beta1", type=float, default=0.9)
    ap.add_argument("--beta2", type=float, default=0.98)
    ap.add_argument("--eps", type=float, default=1e-6)
    ap.add_argument("--activation", choices=("quick_gelu", "gelu"),
                    help="train a copy of the model (written to OUTDIR/model) whose vision "
                         "tower uses this activation instead")
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    if args.activation:
        src = args.model
        args.model = os.path.join(args.out, "model")
        os.makedirs(args.model, exist_ok=True)
        with open(os.path.join(src, "config.json")) as f:
            c = json.load(f)
        c["vision"]["activation"] = args.activation
        with open(os.path.join(args.model, "config.json"), "w") as f:
            json.dump(c, f, indent=2)
            f.write("\n")
        for name in ("model.safetensors", "vocab.txt"):
            shutil.copyfile(os.path.join(src, name), os.path.join(args.model, name))
    model, cfg = unimed_ref.load_model_dir(args.model, dtype=torch.float64)
    model.train()
    with open(os.path.join(args.golden, "golden.json")) as f:
        golden = json.load(f)
    S = cfg["vision"]["image_size"]
    files = [im["file"] for im in golden["images"]]
    B = len(files)
    if B < 2 or len(golden["texts"]) < 2 * B:
        raise SystemExit("error: need >= 2 images and >= 2*images texts in golden.json")
    imgs = [torch.from_numpy(np.fromfile(os.path.join(args.golden, fn), dtype="<f4")
                             .reshape(3, S, S).astype(np.float64)) for fn in files]
    ta, tb = pick_texts(golden["texts"], B)
    ids_a = [golden["texts"][i]["ids"] for i in ta]
    ids_b = [golden["texts"][i]["ids"] for i in tb]
    rot = list(range(1, B)) + [0]
    batch_a = (torch.stack(imgs), model.pad_ids(ids_a))
    batch_b = (torch.stack([imgs[i] for i in rot]), model.pad_ids(ids_b))

    # The BERT pooler is in the checkpoint but unused: no gradient, not trained.
    for n, p in model.named_parameters():
        if ".pooler." in n:
            p.requires_grad_(False)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    # 1. gradients of micro-batch A alone
    model.zero_grad(set_to_none=True)
    loss0 = clip_loss(model, *batch_a)
    loss0.backward()
    os.makedirs(args.out, exist_ok=True)
    unimed_safetensors.write_safetensors(
        os.path.join(args.out, "grads.safetensors"),
        {n: p.grad.detach().to(torch.float32).contiguous() for n, p in named}, dtype="f32")

    # 2. training steps
    decay = [p for n, p in named if decays(n, p)]
    no_decay = [p for n, p in named if not decays(n, p)]
    opt = torch.optim.AdamW([{"params": no_decay, "weight_decay": 0.0},
                             {"params": decay, "weight_decay": args.wd}],
                            lr=args.lr, betas=(args.beta1, args.beta2), eps=args.eps)
    steps = []
    for step in range(args.steps):
        lr = cosine_lr(args.lr, args.warmup, args.steps, step)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        la = clip_loss(model, *batch_a)
        lb = clip_loss(model, *batch_b)
        loss = (la + lb) / 2
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_([p for _, p in named], args.clip, norm_type=2.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        steps.append({"lr": lr, "loss": float(loss), "loss_a": float(la), "loss_b": float(lb),
                      "grad_norm": float(norm), "logit_scale": float(model.logit_scale)})
        print("step %2d  lr %.3e  loss %.6f  |g| %.4f  logit_scale %.6f"
              % (step, lr, float(loss), float(norm), float(model.logit_scale)))

    unimed_safetensors.write_safetensors(
        os.path.join(args.out, "final.safetensors"),
        {n: p.detach().to(torch.float32).contiguous() for n, p in model.named_parameters()},
        dtype="f32")
    out = {
        "model": args.model,
        "golden": args.golden,
        "images": files,
        "rotation": rot,
        "texts_a": ta,
        "texts_b": tb,
        "ids_a": ids_a,
        "ids_b": ids_b,
        "loss0": float(loss0),
        "opt": {"lr": args.lr, "warmup": args.warmup, "total_steps": args.steps,
                "weight_decay": args.wd, "grad_clip": args.clip, "beta1": args.beta1,
                "beta2": args.beta2, "eps": args.eps},
        "decay": [n for n, p in named if decays(n, p)],
        "steps": steps,
    }
    with open(os.path.join(args.out, "train.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print("train_ref: loss0 %.6f, %d steps -> %s" % (float(loss0), args.steps, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
