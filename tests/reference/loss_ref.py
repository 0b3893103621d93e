#!/usr/bin/python3
"""PyTorch reference for the CLIP loss of the C trainer (umt_clip_loss in
model/train_loss.c), with and without label-aware targets.

  loss_ref.py OUT.json

Writes seeded cases: un-normalised image and text embeddings [B, E]
(float32 values), logit_scale, optional groups, and — computed in float64 by
autograd — the loss and its gradients with respect to the image and text
embeddings and logit_scale.

Loss (OpenCLIP's ClipLoss on L2-normalised embeddings, logits =
exp(logit_scale) * img @ txt.T), symmetric cross-entropy with targets T:
the identity, or with groups (UniCL's label-aware targets) T[i][j] = 1/n_i
when pairs i and j share a non-zero group of n_i pairs, a group of 0 being
a pair of its own. F.cross_entropy with probability targets.
"""
import json
import sys

import torch
import torch.nn.functional as F


def targets(groups, B):
    T = torch.zeros(B, B, dtype=torch.float64)
    for i in range(B):
        if groups is None or groups[i] == 0:
            T[i, i] = 1
            continue
        same = [j for j in range(B) if groups[j] == groups[i]]
        for j in same:
            T[i, j] = 1.0 / len(same)
    return T


def case(gen, B, E, scale, groups):
    img = torch.randn(B, E, generator=gen, dtype=torch.float32) * 3
    txt = torch.randn(B, E, generator=gen, dtype=torch.float32) * 0.5
    i64 = img.double().requires_grad_()
    t64 = txt.double().requires_grad_()
    ls = torch.tensor(float(torch.tensor(scale, dtype=torch.float32)), dtype=torch.float64,
                      requires_grad=True)
    logits = ls.exp() * F.normalize(i64, dim=-1) @ F.normalize(t64, dim=-1).t()
    T = targets(groups, B)
    loss = (F.cross_entropy(logits, T) + F.cross_entropy(logits.t(), T.t())) / 2
    loss.backward()
    return {"B": B, "E": E, "logit_scale": float(ls), "groups": groups,
            "img": img.flatten().tolist(), "txt": txt.flatten().tolist(),
            "loss": float(loss), "d_img": i64.grad.flatten().tolist(),
            "d_txt": t64.grad.flatten().tolist(), "d_logit_scale": float(ls.grad)}


def main():
    gen = torch.Generator().manual_seed(20261128)
    cases = [
        case(gen, 6, 16, 2.659, None),                            # plain CLIP targets
        case(gen, 8, 16, 2.659, [5, 9, 5, 0, 9, 5, 0, 7]),        # groups of 3, 2, 1 and two 0s
        case(gen, 5, 12, 4.605, [3, 3, 3, 3, 3]),                 # one class only, ln 100 scale
        case(gen, 64, 32, 3.5, [1 + (i * 7) % 4 for i in range(64)]),  # a training-sized batch
        case(gen, 7, 8, 0.0, [0] * 7),                            # all zero: plain targets
    ]
    with open(sys.argv[1], "w") as f:
        json.dump({"cases": cases}, f)
    print("loss_ref: %d cases, losses %s" % (len(cases), [round(c["loss"], 6) for c in cases]))


if __name__ == "__main__":
    main()
