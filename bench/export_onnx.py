#!/usr/bin/python3
"""Exports the two towers of a UniMed model directory to ONNX, for the
benchmark harness (bench/run.py).

    /usr/bin/python3 bench/export_onnx.py --model DIR --out OUTDIR [--opset 17]

Uses the PyTorch reference in tests/reference/unimed_ref.py, in float32:

  OUTDIR/image.onnx  input  pixels [batch, 3, S, S] float32
                     output embedding [batch, E] (not normalised)
  OUTDIR/text.onnx   input  ids [batch, tokens] int64 (pad id = padding)
                     output embedding [batch, E] (not normalised)

The batch axis (and the text's token axis) are dynamic. OUTDIR/export.json
records the model hash it was made from, so run.py can skip a re-export.
"""

import argparse
import hashlib
import json
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "reference"))

import unimed_ref  # noqa: E402


def file_digest(path):
    """Cheap identity of a (large) file: size, mtime and its first/last MiB."""
    st = os.stat(path)
    h = hashlib.sha256(("%d:%d" % (st.st_size, int(st.st_mtime))).encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, st.st_size - (1 << 20)))
        h.update(f.read())
    return h.hexdigest()[:16]


class ImageTower(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.visual = model.visual

    def forward(self, pixels):
        return self.visual(pixels)


class TextTower(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.text_encoder = model.text_encoder

    def forward(self, ids):
        return self.text_encoder(ids)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--opset", type=int, default=17)
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    t0 = time.time()
    model, cfg = unimed_ref.load_model_dir(a.model, dtype=torch.float32)
    S = cfg["vision"]["image_size"]
    with torch.no_grad():
        img = ImageTower(model).eval()
        torch.onnx.export(img, (torch.zeros(2, 3, S, S),), os.path.join(a.out, "image.onnx"),
                          input_names=["pixels"], output_names=["embedding"],
                          dynamic_axes={"pixels": {0: "batch"}, "embedding": {0: "batch"}},
                          opset_version=a.opset, do_constant_folding=True)
        txt = TextTower(model).eval()
        ids = torch.full((2, 16), 1000, dtype=torch.int64)
        torch.onnx.export(txt, (ids,), os.path.join(a.out, "text.onnx"),
                          input_names=["ids"], output_names=["embedding"],
                          dynamic_axes={"ids": {0: "batch", 1: "tokens"},
                                        "embedding": {0: "batch"}},
                          opset_version=a.opset, do_constant_folding=True)
    info = {"model_digest": file_digest(os.path.join(a.model, "model.safetensors")),
            "opset": a.opset, "torch": torch.__version__, "image_size": S,
            "embed_dim": cfg["embed_dim"], "pad_token_id": cfg["text"]["pad_token_id"]}
    with open(os.path.join(a.out, "export.json"), "w") as f:
        json.dump(info, f, indent=1)
    print("exported %s -> %s in %.1f s" % (a.model, a.out, time.time() - t0), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
