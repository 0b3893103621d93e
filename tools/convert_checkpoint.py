#!/usr/bin/python3
"""Convert a published UniMed-CLIP PyTorch checkpoint into a UniMed model directory.

  convert_checkpoint.py CHECKPOINT.pt TEXT_ENCODER_DIR OUT_DIR
      [--context-length 256] [--activation quick_gelu|gelu]
      [--dtype f32|f16|bf16] [--name NAME] [--version VERSION]
      [--vision-heads N] [--unsafe-pickle]

CHECKPOINT.pt     e.g. unimed_clip_vit_b16.pt ({"state_dict": {...}} or a bare
                  state dict; a leading "module." is removed)
TEXT_ENCODER_DIR  the BiomedBERT folder used by the checkpoint: HuggingFace
                  config.json and vocab.txt
OUT_DIR           receives config.json, model.safetensors and vocab.txt

The vision configuration is inferred from tensor shapes; the text
configuration comes from TEXT_ENCODER_DIR/config.json.  Every tensor is
checked: a missing tensor, an unexpected tensor or a wrong shape stops the
conversion with exit code 1 and a message naming the tensor.

Needs only torch and numpy.
"""

import argparse
import json
import math
import os
import re
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import unimed_safetensors  # noqa: E402

# Buffers stored in the checkpoint that are not weights; dropped.
DROPPED_BUFFERS = (
    "text_encoder.transformer.embeddings.position_ids",
    "text_encoder.transformer.embeddings.token_type_ids",
)

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


class ConvertError(Exception):
    pass


# --------------------------------------------------------------------------
# expected tensor names and shapes for a config (same format as config.json)


def expected_shapes(cfg):
    """Ordered dict name -> shape tuple of every tensor in model.safetensors."""
    v, t, E = cfg["vision"], cfg["text"], cfg["embed_dim"]
    W, P, S = v["width"], v["patch_size"], v["image_size"]
    G = S // P
    H = int(round(W * float(v["mlp_ratio"])))
    out = {}
    out["visual.conv1.weight"] = (W, 3, P, P)
    out["visual.class_embedding"] = (W,)
    out["visual.positional_embedding"] = (G * G + 1, W)
    out["visual.ln_pre.weight"] = (W,)
    out["visual.ln_pre.bias"] = (W,)
    for i in range(v["layers"]):
        b = "visual.transformer.resblocks.%d." % i
        out[b + "ln_1.weight"] = (W,)
        out[b + "ln_1.bias"] = (W,)
        out[b + "attn.in_proj_weight"] = (3 * W, W)
        out[b + "attn.in_proj_bias"] = (3 * W,)
        out[b + "attn.out_proj.weight"] = (W, W)
        out[b + "attn.out_proj.bias"] = (W,)
        out[b + "ln_2.weight"] = (W,)
        out[b + "ln_2.bias"] = (W,)
        out[b + "mlp.c_fc.weight"] = (H, W)
        out[b + "mlp.c_fc.bias"] = (H,)
        out[b + "mlp.c_proj.weight"] = (W, H)
        out[b + "mlp.c_proj.bias"] = (W,)
    out["visual.ln_post.weight"] = (W,)
    out["visual.ln_post.bias"] = (W,)
    out["visual.proj"] = (W, E)

    D, I = t["hidden_size"], t["intermediate_size"]
    p = "text_encoder.transformer."
    out[p + "embeddings.word_embeddings.weight"] = (t["vocab_size"], D)
    out[p + "embeddings.position_embeddings.weight"] = (t["max_position_embeddings"], D)
    out[p + "embeddings.token_type_embeddings.weight"] = (t["type_vocab_size"], D)
    out[p + "embeddings.LayerNorm.weight"] = (D,)
    out[p + "embeddings.LayerNorm.bias"] = (D,)
    for i in range(t["layers"]):
        b = p + "encoder.layer.%d." % i
        for n in ("query", "key", "value"):
            out[b + "attention.self.%s.weight" % n] = (D, D)
            out[b + "attention.self.%s.bias" % n] = (D,)
        out[b + "attention.output.dense.weight"] = (D, D)
        out[b + "attention.output.dense.bias"] = (D,)
        out[b + "attention.output.LayerNorm.weight"] = (D,)
        out[b + "attention.output.LayerNorm.bias"] = (D,)
        out[b + "intermediate.dense.weight"] = (I, D)
        out[b + "intermediate.dense.bias"] = (I,)
        out[b + "output.dense.weight"] = (D, I)
        out[b + "output.dense.bias"] = (D,)
        out[b + "output.LayerNorm.weight"] = (D,)
        out[b + "output.LayerNorm.bias"] = (D,)
    out[p + "pooler.dense.weight"] = (D, D)
    out[p + "pooler.dense.bias"] = (D,)
    proj = t["projection"]
    if proj == "mlp":
        H2 = (D + E) // 2
        out["text_encoder.proj.0.weight"] = (H2, D)
        out["text_encoder.proj.2.weight"] = (E, H2)
    elif proj == "linear":
        out["text_encoder.proj.weight"] = (E, D)
    out["logit_scale"] = ()
    return out


# --------------------------------------------------------------------------
# inference of the configuration


def _shape(sd, name):
    if name not in sd:
        raise ConvertError("missing tensor '%s' in checkpoint (needed to infer the configuration)" % name)
    return tuple(sd[name].shape)


def _fmt(shape):
    return "[" + ", ".join(str(s) for s in shape) + "]"


def infer_vision(sd, activation, heads=None):
    W, c, P, P2 = (_shape(sd, "visual.conv1.weight") + (None,) * 4)[:4]
    if c != 3 or P is None or P != P2:
        raise ConvertError("tensor 'visual.conv1.weight' has shape %s, expected [width, 3, patch, patch]"
                           % _fmt(_shape(sd, "visual.conv1.weight")))
    pe = _shape(sd, "visual.positional_embedding")
    if len(pe) != 2 or pe[1] != W:
        raise ConvertError("tensor 'visual.positional_embedding' has shape %s, expected [tokens, %d]"
                           % (_fmt(pe), W))
    G = int(round(math.sqrt(pe[0] - 1))) if pe[0] > 1 else 0
    if G < 1 or G * G + 1 != pe[0]:
        raise ConvertError("tensor 'visual.positional_embedding' has %d rows, not grid*grid+1" % pe[0])
    idx = set()
    for k in sd:
        m = re.match(r"visual\.transformer\.resblocks\.(\d+)\.", k)
        if m:
            idx.add(int(m.group(1)))
    if not idx:
        raise ConvertError("missing tensor 'visual.transformer.resblocks.0.attn.in_proj_weight' in checkpoint")
    layers = max(idx) + 1
    fc = _shape(sd, "visual.transformer.resblocks.0.mlp.c_fc.weight")
    if len(fc) != 2 or fc[1] != W:
        raise ConvertError("tensor 'visual.transformer.resblocks.0.mlp.c_fc.weight' has shape %s, "
                           "expected [hidden, %d]" % (_fmt(fc), W))
    if heads is None:
        if W % 64:
            raise ConvertError("vision width %d is not a multiple of 64; pass --vision-heads" % W)
        heads = W // 64
    if W % heads:
        raise ConvertError("vision width %d is not divisible by %d heads" % (W, heads))
    ratio = fc[0] / W
    return {
        "image_size": G * P,
        "patch_size": P,
        "width": W,
        "layers": layers,
        "heads": heads,
        "mlp_ratio": ratio,
        "activation": activation,
        "layer_norm_eps": 1e-5,
    }


def read_vocab(path):
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln.rstrip("\r") for ln in lines]


def read_text_config(text_dir, context_length, sd):
    cfg_path = os.path.join(text_dir, "config.json")
    vocab_path = os.path.join(text_dir, "vocab.txt")
    for pth in (cfg_path, vocab_path):
        if not os.path.isfile(pth):
            raise ConvertError("text encoder folder lacks %s" % pth)
    with open(cfg_path) as f:
        hf = json.load(f)
    vocab = read_vocab(vocab_path)

    def need(key, default=None):
        if key in hf:
            return hf[key]
        if default is not None:
            return default
        raise ConvertError("%s: missing key '%s'" % (cfg_path, key))

    act = need("hidden_act", "gelu")
    if act != "gelu":
        raise ConvertError("%s: hidden_act '%s' is not supported (only exact 'gelu')" % (cfg_path, act))
    pad = hf.get("pad_token_id")
    if pad is None:
        pad = vocab.index("[PAD]") if "[PAD]" in vocab else 0
    t = {
        "vocab_size": int(need("vocab_size")),
        "hidden_size": int(need("hidden_size")),
        "layers": int(need("num_hidden_layers")),
        "heads": int(need("num_attention_heads")),
        "intermediate_size": int(need("intermediate_size")),
        "max_position_embeddings": int(need("max_position_embeddings")),
        "type_vocab_size": int(need("type_vocab_size", 2)),
        "layer_norm_eps": float(need("layer_norm_eps", 1e-12)),
        "pad_token_id": int(pad),
        "context_length": int(context_length),
        "pooler": "cls_last_hidden_state",
        "projection": None,
        "hidden_act": "gelu",
    }
    if t["hidden_size"] % t["heads"]:
        raise ConvertError("%s: hidden_size %d not divisible by num_attention_heads %d"
                           % (cfg_path, t["hidden_size"], t["heads"]))
    if len(vocab) > t["vocab_size"]:
        raise ConvertError("%s has %d tokens but vocab_size is %d" % (vocab_path, len(vocab), t["vocab_size"]))
    if not 0 <= t["pad_token_id"] < t["vocab_size"]:
        raise ConvertError("pad_token_id %d outside the vocabulary" % t["pad_token_id"])
    if t["context_length"] > t["max_position_embeddings"]:
        raise ConvertError("--context-length %d exceeds max_position_embeddings %d"
                           % (t["context_length"], t["max_position_embeddings"]))
    if "text_encoder.proj.0.weight" in sd or "text_encoder.proj.2.weight" in sd:
        t["projection"] = "mlp"
    elif "text_encoder.proj.weight" in sd:
        t["projection"] = "linear"
    else:
        t["projection"] = "none"
    return t, vocab_path


def default_name(v):
    size = {768: "b", 1024: "l", 1280: "h"}.get(v["width"], "w%dp" % v["width"])
    name = "unimed-clip-vit-%s%d" % (size, v["patch_size"])
    if v["image_size"] != 224:
        name += "-%d" % v["image_size"]
    return name


# BertModel's pooler is unused (UniMed pools the CLS hidden state); a
# checkpoint saved without it is still complete.
OPTIONAL_TENSORS = ("text_encoder.transformer.pooler.dense.weight",
                    "text_encoder.transformer.pooler.dense.bias")


def check_tensors(sd, expected):
    for k in OPTIONAL_TENSORS:
        if k not in sd:
            expected.pop(k, None)
    missing = [k for k in expected if k not in sd]
    if missing:
        more = " (and %d more)" % (len(missing) - 1) if len(missing) > 1 else ""
        raise ConvertError("missing tensor '%s' (expected shape %s)%s"
                           % (missing[0], _fmt(expected[missing[0]]), more))
    unexpected = [k for k in sd if k not in expected]
    if unexpected:
        more = " (and %d more)" % (len(unexpected) - 1) if len(unexpected) > 1 else ""
        raise ConvertError("unexpected tensor '%s' with shape %s%s"
                           % (unexpected[0], _fmt(tuple(sd[unexpected[0]].shape)), more))
    for k, shape in expected.items():
        got = tuple(sd[k].shape)
        if got != shape:
            if k == "logit_scale" and int(sd[k].numel()) == 1:
                sd[k] = sd[k].reshape(())
                continue
            raise ConvertError("tensor '%s' has shape %s, expected %s" % (k, _fmt(got), _fmt(shape)))


class _RestrictedPickle:
    """pickle_module for torch.load that only rebuilds tensors and plain containers.

    Used when torch's own weights_only loader is unavailable or too strict
    (torch 1.13's rejects plain floats, e.g. a learning rate in the optimizer
    state).
    """

    import pickle as _pickle

    class Unpickler(_pickle.Unpickler):
        def find_class(self, module, name):
            import torch

            ok = (
                (module == "torch._utils" and name.startswith("_rebuild_"))
                or (module == "torch" and (name.endswith("Storage") or name == "Size"
                                           or isinstance(getattr(torch, name, None), torch.dtype)))
                or module == "torch.storage"
                or (module == "collections" and name == "OrderedDict")
                or (module == "torch.serialization" and name == "_get_layout")
                or (module == "torch" and name in ("strided", "sparse_coo"))
            )
            if not ok:
                raise self._unpickling_error("refusing to load global %s.%s" % (module, name))
            return super().find_class(module, name)

        @staticmethod
        def _unpickling_error(msg):
            import pickle

            return pickle.UnpicklingError(msg)

    @staticmethod
    def load(f, **kw):
        return _RestrictedPickle.Unpickler(f, **kw).load()

    Pickler = _pickle.Pickler
    __name__ = "unimed_restricted_pickle"


def _restricted_torch_load(path):
    """torch.load through _RestrictedPickle.

    torch.load(pickle_module=...) cannot be used: torch 1.13 silently replaces
    it with the standard pickle module unless weights_only=True.  So call the
    zip-format loader that torch.load itself uses.
    """
    import inspect

    import torch

    ser = torch.serialization
    for attr in ("_load", "_open_zipfile_reader", "_is_zipfile"):
        if not hasattr(ser, attr):
            raise RuntimeError("restricted loading is not available with torch %s" % torch.__version__)
    if list(inspect.signature(ser._load).parameters)[:3] != ["zip_file", "map_location", "pickle_module"]:
        raise RuntimeError("restricted loading is not available with torch %s" % torch.__version__)
    with open(path, "rb") as f:
        if not ser._is_zipfile(f):
            raise RuntimeError("not a zip-format torch checkpoint")
        with ser._open_zipfile_reader(f) as zf:
            return ser._load(zf, "cpu", _RestrictedPickle, encoding="utf-8")


def load_state_dict(path, unsafe_pickle=False):
    import torch

    if not os.path.isfile(path):
        raise ConvertError("no such checkpoint: %s" % path)
    ck = None
    if unsafe_pickle:
        attempts = [lambda: torch.load(path, map_location="cpu", weights_only=False)]
    else:
        # torch's weights_only loader first; torch 1.13's rejects plain floats
        # (e.g. a learning rate in the optimizer state), so then a restricted
        # unpickler that still only allows tensors and plain containers.
        attempts = [lambda: torch.load(path, map_location="cpu", weights_only=True),
                    lambda: _restricted_torch_load(path)]
    err = None
    for attempt in attempts:
        try:
            ck = attempt()
            err = None
            break
        except Exception as e:  # noqa: BLE001
            err = e  # report the last (most specific) failure
    if err is not None:
        msg = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        hint = "" if unsafe_pickle else " (if you trust the file, retry with --unsafe-pickle)"
        raise ConvertError("cannot load %s: %s%s" % (path, msg, hint))
    sd = ck
    if isinstance(ck, dict) and "state_dict" in ck:
        sd = ck["state_dict"]
    if not isinstance(sd, dict):
        raise ConvertError("%s does not contain a state dict" % path)
    out = {}
    for k, v in sd.items():
        if k.startswith("module."):
            k = k[len("module."):]
        if k in DROPPED_BUFFERS:
            continue
        if not isinstance(v, torch.Tensor):
            raise ConvertError("state dict entry '%s' is not a tensor" % k)
        out[k] = v
    return out


def convert(args):
    sd = load_state_dict(args.checkpoint, args.unsafe_pickle)
    vision = infer_vision(sd, args.activation, args.vision_heads)
    text, vocab_path = read_text_config(args.text_encoder_dir, args.context_length, sd)
    vp = _shape(sd, "visual.proj")
    if len(vp) != 2 or vp[0] != vision["width"]:
        raise ConvertError("tensor 'visual.proj' has shape %s, expected [%d, embed_dim]"
                           % (_fmt(vp), vision["width"]))
    embed_dim = vp[1]
    for tp in ("text_encoder.proj.2.weight", "text_encoder.proj.weight"):
        if tp in sd and text["projection"] in ("mlp", "linear"):
            if sd[tp].dim() != 2 or sd[tp].shape[0] != embed_dim:
                raise ConvertError("tensor '%s' has shape %s but 'visual.proj' has shape %s: "
                                   "the image and text embedding sizes disagree"
                                   % (tp, _fmt(tuple(sd[tp].shape)), _fmt(vp)))
            break
    if text["projection"] == "none" and text["hidden_size"] != embed_dim:
        raise ConvertError("no text projection in checkpoint and hidden_size %d != embed_dim %d"
                           % (text["hidden_size"], embed_dim))
    cfg = {
        "model_name": args.name or default_name(vision),
        "model_version": args.version or os.path.splitext(os.path.basename(args.checkpoint))[0],
        "embed_dim": int(embed_dim),
        "vision": vision,
        "text": text,
        "preprocessing": {
            "mean": CLIP_MEAN,
            "std": CLIP_STD,
            "size": vision["image_size"],
            "interpolation": "bicubic",
            "resize": "shortest",
            "crop": "center",
        },
    }
    expected = expected_shapes(cfg)
    check_tensors(sd, expected)

    import torch

    os.makedirs(args.out_dir, exist_ok=True)
    tensors = {k: sd[k].detach().to(torch.float32) for k in expected}
    tmp = os.path.join(args.out_dir, "model.safetensors.tmp")
    unimed_safetensors.write_safetensors(tmp, tensors, dtype=args.dtype,
                                         metadata={"source": os.path.basename(args.checkpoint)})
    os.replace(tmp, os.path.join(args.out_dir, "model.safetensors"))
    with open(os.path.join(args.out_dir, "vocab.txt"), "wb") as fo, open(vocab_path, "rb") as fi:
        fo.write(fi.read())
    with open(os.path.join(args.out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    n = sum(int(t.numel()) for t in tensors.values())
    print("converted %s: %s, vision %dx%d/%d x%d layers, text %d x%d layers, embed %d, "
          "%d tensors, %d parameters, %s -> %s"
          % (args.checkpoint, cfg["model_name"], vision["image_size"], vision["image_size"],
             vision["patch_size"], vision["layers"], text["hidden_size"], text["layers"],
             embed_dim, len(tensors), n, args.dtype, args.out_dir))
    return cfg


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Convert a UniMed-CLIP checkpoint to config.json + model.safetensors + vocab.txt")
    ap.add_argument("checkpoint", help="UniMed-CLIP .pt checkpoint")
    ap.add_argument("text_encoder_dir", help="BiomedBERT folder (HF config.json + vocab.txt)")
    ap.add_argument("out_dir", help="output model directory")
    ap.add_argument("--context-length", type=int, default=256)
    ap.add_argument("--activation", choices=("quick_gelu", "gelu"), default="quick_gelu",
                    help="vision MLP activation (UniMed-CLIP ViT-B/16 uses quick_gelu)")
    ap.add_argument("--dtype", choices=unimed_safetensors.DTYPE_CHOICES, default="f32")
    ap.add_argument("--name", help="model_name in config.json (default from the architecture)")
    ap.add_argument("--version", help="model_version in config.json (default: checkpoint file stem)")
    ap.add_argument("--vision-heads", type=int, help="vision attention heads (default width/64)")
    ap.add_argument("--unsafe-pickle", action="store_true",
                    help="allow arbitrary pickled objects in the checkpoint (trusted files only)")
    args = ap.parse_args(argv)
    try:
        convert(args)
    except ConvertError as e:
        print("convert_checkpoint: error: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
