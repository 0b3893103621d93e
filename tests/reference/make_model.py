#!/usr/bin/python3
"""Create a random-weight UniMed-CLIP model directory for tests.

  make_model.py --config small|full --seed N --vocab VOCAB_TXT --out DIR
                [--dtype f32|f16|bf16] [--checkpoint OUT.pt]

Writes DIR/config.json, DIR/model.safetensors (names as in the published
checkpoint minus "module." and minus the position_ids buffer) and
DIR/vocab.txt (a copy of VOCAB_TXT).  With --checkpoint also writes a torch
file shaped like the published checkpoint:
  {"epoch": 1, "name": ..., "state_dict": {"module." + name: tensor}}
including text_encoder.transformer.embeddings.position_ids.

Weights are random with realistic scales (OpenCLIP-style init for the ViT,
BERT-like init for the text tower), and every LayerNorm weight / every bias is
perturbed away from 1 / 0 so parity tests exercise them.
"""

import argparse
import json
import math
import os
import shutil
import sys
import time

import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
sys.path.insert(0, os.path.join(_HERE, "..", "..", "tools"))

import convert_checkpoint  # noqa: E402
import unimed_ref  # noqa: E402
import unimed_safetensors  # noqa: E402

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

PRESETS = {
    "small": {
        "vision": dict(image_size=32, patch_size=8, width=128, layers=2, heads=2, mlp_ratio=4.0),
        "text": dict(hidden_size=64, layers=2, heads=2, intermediate_size=128,
                     max_position_embeddings=64, type_vocab_size=2, context_length=64,
                     layer_norm_eps=1e-12),
        "embed_dim": 32,
    },
    "full": {
        "vision": dict(image_size=224, patch_size=16, width=768, layers=12, heads=12, mlp_ratio=4.0),
        "text": dict(hidden_size=768, layers=12, heads=12, intermediate_size=3072,
                     max_position_embeddings=512, type_vocab_size=2, context_length=256,
                     layer_norm_eps=1e-12),
        "embed_dim": 512,
    },
}


def read_vocab(path):
    """Vocab tokens, one per line (same convention as BERT's vocab.txt)."""
    with open(path, encoding="utf-8") as f:
        data = f.read()
    lines = data.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln.rstrip("\r") for ln in lines]


def build_config(preset, vocab, name, version, activation="quick_gelu"):
    p = PRESETS[preset]
    if "[PAD]" not in vocab:
        raise SystemExit("error: vocab has no [PAD] token")
    v = dict(p["vision"])
    v["activation"] = activation
    v["layer_norm_eps"] = 1e-5
    t = dict(p["text"])
    text = {
        "vocab_size": len(vocab),
        "hidden_size": t["hidden_size"],
        "layers": t["layers"],
        "heads": t["heads"],
        "intermediate_size": t["intermediate_size"],
        "max_position_embeddings": t["max_position_embeddings"],
        "type_vocab_size": t["type_vocab_size"],
        "layer_norm_eps": t["layer_norm_eps"],
        "pad_token_id": vocab.index("[PAD]"),
        "context_length": t["context_length"],
        "pooler": "cls_last_hidden_state",
        "projection": "mlp",
        "hidden_act": "gelu",
    }
    return {
        "model_name": name,
        "model_version": version,
        "embed_dim": p["embed_dim"],
        "vision": v,
        "text": text,
        "preprocessing": {
            "mean": CLIP_MEAN,
            "std": CLIP_STD,
            "size": v["image_size"],
            "interpolation": "bicubic",
            "resize": "shortest",
            "crop": "center",
        },
    }


def init_weights(model, cfg, seed):
    """Fill every parameter in place, deterministically from `seed`."""
    g = torch.Generator().manual_seed(seed)
    W = cfg["vision"]["width"]
    L = cfg["vision"]["layers"]
    P = cfg["vision"]["patch_size"]
    D = cfg["text"]["hidden_size"]
    E = cfg["embed_dim"]
    attn_std = W ** -0.5
    proj_std = W ** -0.5 * (2 * L) ** -0.5
    fc_std = (2 * W) ** -0.5

    def normal(p, std, mean=0.0):
        p.copy_(torch.randn(p.shape, generator=g) * std + mean)

    with torch.no_grad():
        for name, p in model.named_parameters():
            is_ln = ".ln_" in name or name.startswith("visual.ln_") or "LayerNorm" in name
            if name == "logit_scale":
                p.fill_(math.log(1 / 0.07) + 0.05 * float(torch.randn((), generator=g)))
            elif name.endswith("bias"):  # every bias, LayerNorm biases included
                normal(p, 0.02)
            elif is_ln and name.endswith("weight"):
                normal(p, 0.1, 1.0)
            elif name.startswith("visual."):
                if name == "visual.conv1.weight":
                    b = (3 * P * P) ** -0.5
                    p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * b)
                elif name in ("visual.class_embedding", "visual.positional_embedding", "visual.proj"):
                    normal(p, W ** -0.5)
                elif name.endswith("attn.in_proj_weight"):
                    normal(p, attn_std)
                elif name.endswith("attn.out_proj.weight") or name.endswith("mlp.c_proj.weight"):
                    normal(p, proj_std)
                elif name.endswith("mlp.c_fc.weight"):
                    normal(p, fc_std)
                else:
                    raise RuntimeError("no init rule for " + name)
            elif name == "text_encoder.proj.0.weight":
                normal(p, D ** -0.5)
            elif name == "text_encoder.proj.2.weight":
                normal(p, ((D + E) // 2) ** -0.5)
            elif name == "text_encoder.proj.weight":
                normal(p, D ** -0.5)
            elif name.startswith("text_encoder.transformer.embeddings."):
                normal(p, 0.02)  # BERT init
            elif name.startswith("text_encoder.transformer."):
                # Dense layers: std fan_in^-0.5 (~0.036 for BERT-base, close to a
                # trained BERT's ~0.04).  BERT's own 0.02 makes tiny models map
                # every text to the same embedding (cosine 0.999+), which would
                # hide text-tower bugs in parity tests.
                normal(p, p.shape[1] ** -0.5)
            else:
                raise RuntimeError("no init rule for " + name)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", choices=sorted(PRESETS), required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vocab", required=True, help="vocab.txt (one token per line, must contain [PAD])")
    ap.add_argument("--out", required=True, help="output model directory")
    ap.add_argument("--dtype", choices=unimed_safetensors.DTYPE_CHOICES, default="f32")
    ap.add_argument("--activation", choices=("quick_gelu", "gelu"), default="quick_gelu")
    ap.add_argument("--checkpoint", help="also write a published-style torch checkpoint here")
    args = ap.parse_args(argv)

    t0 = time.time()
    torch.set_grad_enabled(False)
    vocab = read_vocab(args.vocab)
    cfg = build_config(args.config, vocab, "unimed-clip-random-" + args.config,
                       "random-seed-%d" % args.seed, args.activation)
    model = unimed_ref.build_model(cfg, torch.float32, init=False)  # init_weights fills everything
    init_weights(model, cfg, args.seed)

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    shutil.copyfile(args.vocab, os.path.join(args.out, "vocab.txt"))
    # same tensor order as tools/convert_checkpoint.py writes
    weights = model.weight_state_dict()
    order = convert_checkpoint.expected_shapes(cfg)
    assert {k: tuple(v.shape) for k, v in weights.items()} == dict(order)
    unimed_safetensors.write_safetensors(
        os.path.join(args.out, "model.safetensors"), {k: weights[k] for k in order}, dtype=args.dtype)
    if args.checkpoint:
        sd = {"module." + k: v.clone() for k, v in model.state_dict().items()
              if k != "text_encoder.transformer.embeddings.token_type_ids"}
        d = os.path.dirname(os.path.abspath(args.checkpoint))
        os.makedirs(d, exist_ok=True)
        torch.save({"epoch": 1, "name": "unimed-random-" + args.config, "state_dict": sd},
                   args.checkpoint)
    n = sum(p.numel() for p in model.parameters())
    print("make_model: %s, %d parameters, %s -> %s (%.1f s)"
          % (args.config, n, args.dtype, args.out, time.time() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
