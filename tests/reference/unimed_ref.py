"""PyTorch reference implementation of UniMed-CLIP (independent re-implementation).

State-dict compatible with the published UniMed-CLIP checkpoints (after the
"module." prefix is removed):

  visual.*                        OpenCLIP-style VisionTransformer
  text_encoder.transformer.*      BERT encoder (HF BertModel parameter names)
  text_encoder.proj.{0,2}.weight  MLP projection (or text_encoder.proj.weight)
  logit_scale                     scalar

The model is configured from the dict stored in a model directory's
config.json (see make_model.py).  Everything here is plain torch; no
transformers / open_clip.
"""

import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

_HERE = os.path.dirname(os.path.abspath(__file__))
_TOOLS = os.path.join(_HERE, "..", "..", "tools")
if _TOOLS not in sys.path:
    sys.path.insert(0, _TOOLS)

import unimed_safetensors  # noqa: E402

# Buffers that exist in the published checkpoint but are not model weights.
BUFFER_NAMES = (
    "text_encoder.transformer.embeddings.position_ids",
    "text_encoder.transformer.embeddings.token_type_ids",
)


# --------------------------------------------------------------------------
# activations


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class ExactGELU(nn.Module):
    def forward(self, x):
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def make_activation(name):
    if name == "quick_gelu":
        return QuickGELU()
    if name == "gelu":
        return ExactGELU()
    raise ValueError("unknown activation %r" % name)


# --------------------------------------------------------------------------
# vision tower (OpenCLIP VisionTransformer layout)


class SelfAttention(nn.Module):
    """nn.MultiheadAttention-compatible parameter names, written out by hand."""

    def __init__(self, width, heads):
        super().__init__()
        assert width % heads == 0
        self.width = width
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x):  # x: [B, T, W]
        B, T, W = x.shape
        h = self.heads
        d = W // h
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.split(W, dim=-1)
        q = q.reshape(B, T, h, d).transpose(1, 2)
        k = k.reshape(B, T, h, d).transpose(1, 2)
        v = v.reshape(B, T, h, d).transpose(1, 2)
        att = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(d))
        att = att.softmax(dim=-1)
        o = (att @ v).transpose(1, 2).reshape(B, T, W)
        return self.out_proj(o)


class MLP(nn.Module):
    def __init__(self, width, hidden, act):
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.gelu = make_activation(act)
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width, heads, mlp_hidden, act, eps):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=eps)
        self.attn = SelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width, eps=eps)
        self.mlp = MLP(width, mlp_hidden, act)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class Transformer(nn.Module):
    def __init__(self, width, layers, heads, mlp_hidden, act, eps):
        super().__init__()
        self.resblocks = nn.ModuleList(
            [ResidualAttentionBlock(width, heads, mlp_hidden, act, eps) for _ in range(layers)]
        )

    def forward(self, x):
        for blk in self.resblocks:
            x = blk(x)
        return x


class VisionTransformer(nn.Module):
    def __init__(self, vcfg, embed_dim):
        super().__init__()
        W = vcfg["width"]
        P = vcfg["patch_size"]
        S = vcfg["image_size"]
        assert S % P == 0, "image_size must be a multiple of patch_size"
        G = S // P
        eps = vcfg.get("layer_norm_eps", 1e-5)
        hidden = int(round(W * float(vcfg["mlp_ratio"])))
        self.image_size = S
        self.patch_size = P
        self.grid = G
        self.conv1 = nn.Conv2d(3, W, kernel_size=P, stride=P, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(W))
        self.positional_embedding = nn.Parameter(torch.empty(G * G + 1, W))
        self.ln_pre = nn.LayerNorm(W, eps=eps)
        self.transformer = Transformer(W, vcfg["layers"], vcfg["heads"], hidden,
                                       vcfg.get("activation", "quick_gelu"), eps)
        self.ln_post = nn.LayerNorm(W, eps=eps)
        self.proj = nn.Parameter(torch.empty(W, embed_dim))

    def forward(self, x):  # x: [B, 3, S, S]
        x = self.conv1(x)  # [B, W, G, G]
        B, W = x.shape[:2]
        x = x.reshape(B, W, -1).transpose(1, 2)  # [B, G*G, W] row-major grid
        cls = self.class_embedding.to(x.dtype).reshape(1, 1, W).expand(B, 1, W)
        x = torch.cat([cls, x], dim=1)
        x = x + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x)
        x = self.transformer(x)
        x = self.ln_post(x[:, 0])
        return x @ self.proj


# --------------------------------------------------------------------------
# text tower (BERT, HF BertModel parameter names)


class BertEmbeddings(nn.Module):
    def __init__(self, tcfg):
        super().__init__()
        D = tcfg["hidden_size"]
        self.word_embeddings = nn.Embedding(tcfg["vocab_size"], D)
        self.position_embeddings = nn.Embedding(tcfg["max_position_embeddings"], D)
        self.token_type_embeddings = nn.Embedding(tcfg["type_vocab_size"], D)
        self.LayerNorm = nn.LayerNorm(D, eps=tcfg["layer_norm_eps"])
        self.register_buffer(
            "position_ids",
            torch.arange(tcfg["max_position_embeddings"], dtype=torch.int64).unsqueeze(0),
        )

    def forward(self, ids):  # ids: [B, T] int64
        T = ids.shape[1]
        pos = self.position_ids[:, :T]
        tt = torch.zeros_like(ids)
        x = self.word_embeddings(ids) + self.position_embeddings(pos) + self.token_type_embeddings(tt)
        return self.LayerNorm(x)


class BertSelfAttention(nn.Module):
    def __init__(self, D, heads):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(D, D)
        self.key = nn.Linear(D, D)
        self.value = nn.Linear(D, D)

    def forward(self, x, add_mask):  # add_mask: [B, 1, 1, T]
        B, T, D = x.shape
        h = self.heads
        d = D // h

        def split(t):
            return t.reshape(B, T, h, d).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        att = (q @ k.transpose(-1, -2)) / math.sqrt(d) + add_mask
        att = att.softmax(dim=-1)
        return (att @ v).transpose(1, 2).reshape(B, T, D)


class BertSelfOutput(nn.Module):
    def __init__(self, D, eps):
        super().__init__()
        self.dense = nn.Linear(D, D)
        self.LayerNorm = nn.LayerNorm(D, eps=eps)

    def forward(self, h, x):
        return self.LayerNorm(self.dense(h) + x)


class BertAttention(nn.Module):
    def __init__(self, D, heads, eps):
        super().__init__()
        self.self = BertSelfAttention(D, heads)
        self.output = BertSelfOutput(D, eps)

    def forward(self, x, add_mask):
        return self.output(self.self(x, add_mask), x)


class BertIntermediate(nn.Module):
    def __init__(self, D, inter, act):
        super().__init__()
        self.dense = nn.Linear(D, inter)
        self.act = make_activation(act)

    def forward(self, x):
        return self.act(self.dense(x))


class BertOutput(nn.Module):
    def __init__(self, D, inter, eps):
        super().__init__()
        self.dense = nn.Linear(inter, D)
        self.LayerNorm = nn.LayerNorm(D, eps=eps)

    def forward(self, h, x):
        return self.LayerNorm(self.dense(h) + x)


class BertLayer(nn.Module):
    def __init__(self, tcfg):
        super().__init__()
        D = tcfg["hidden_size"]
        eps = tcfg["layer_norm_eps"]
        self.attention = BertAttention(D, tcfg["heads"], eps)
        self.intermediate = BertIntermediate(D, tcfg["intermediate_size"], tcfg.get("hidden_act", "gelu"))
        self.output = BertOutput(D, tcfg["intermediate_size"], eps)

    def forward(self, x, add_mask):
        a = self.attention(x, add_mask)
        return self.output(self.intermediate(a), a)


class BertEncoder(nn.Module):
    def __init__(self, tcfg):
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(tcfg) for _ in range(tcfg["layers"])])

    def forward(self, x, add_mask):
        for lyr in self.layer:
            x = lyr(x, add_mask)
        return x


class BertPooler(nn.Module):
    """Present in the checkpoint; not used by UniMed-CLIP (CLS of last hidden state)."""

    def __init__(self, D):
        super().__init__()
        self.dense = nn.Linear(D, D)

    def forward(self, x):
        return torch.tanh(self.dense(x[:, 0]))


class BertModel(nn.Module):
    def __init__(self, tcfg):
        super().__init__()
        self.embeddings = BertEmbeddings(tcfg)
        self.encoder = BertEncoder(tcfg)
        self.pooler = BertPooler(tcfg["hidden_size"])

    def forward(self, ids, attn_mask):
        """Returns last_hidden_state.  attn_mask: [B, T], 1 = attend, 0 = padding."""
        x = self.embeddings(ids)
        neg = torch.finfo(x.dtype).min
        add_mask = (1.0 - attn_mask.to(x.dtype))[:, None, None, :] * neg
        return self.encoder(x, add_mask)


class TextEncoder(nn.Module):
    def __init__(self, tcfg, embed_dim):
        super().__init__()
        D = tcfg["hidden_size"]
        self.pad_token_id = tcfg["pad_token_id"]
        self.transformer = BertModel(tcfg)
        ptype = tcfg.get("projection", "mlp")
        self.projection = ptype
        if ptype == "mlp":
            hidden = (D + embed_dim) // 2
            self.proj = nn.Sequential(
                nn.Linear(D, hidden, bias=False),
                ExactGELU(),
                nn.Linear(hidden, embed_dim, bias=False),
            )
        elif ptype == "linear":
            self.proj = nn.Linear(D, embed_dim, bias=False)
        elif ptype == "none":
            if D != embed_dim:
                raise ValueError("projection 'none' needs hidden_size == embed_dim")
            self.proj = nn.Identity()
        else:
            raise ValueError("unknown text projection %r" % ptype)

    def forward(self, ids):
        attn_mask = (ids != self.pad_token_id).long()
        h = self.transformer(ids, attn_mask)
        pooled = h[:, 0]  # cls_last_hidden_state
        return self.proj(pooled)


# --------------------------------------------------------------------------
# full model


class UniMedCLIP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        E = cfg["embed_dim"]
        self.visual = VisionTransformer(cfg["vision"], E)
        self.text_encoder = TextEncoder(cfg["text"], E)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.context_length = cfg["text"]["context_length"]
        self.pad_token_id = cfg["text"]["pad_token_id"]

    def encode_image(self, images, normalize=False):
        x = self.visual(images)
        return F.normalize(x, dim=-1) if normalize else x

    def encode_text(self, ids, normalize=False):
        x = self.text_encoder(ids)
        return F.normalize(x, dim=-1) if normalize else x

    def pad_ids(self, id_lists):
        """Pad token-id lists with pad_token_id to context_length -> LongTensor."""
        L = self.context_length
        out = torch.full((len(id_lists), L), self.pad_token_id, dtype=torch.int64)
        for i, ids in enumerate(id_lists):
            if len(ids) > L:
                raise ValueError("text %d has %d ids > context_length %d" % (i, len(ids), L))
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
        return out

    def weight_state_dict(self):
        """state_dict without buffers (what model.safetensors holds)."""
        return {k: v for k, v in self.state_dict().items() if k not in BUFFER_NAMES}


def class_embeddings(text_emb_normalized, classes):
    """classes: list of lists of text indices -> [C, E] normalised class embeddings."""
    rows = []
    for prompts in classes:
        e = text_emb_normalized[list(prompts)].mean(dim=0)
        rows.append(F.normalize(e, dim=-1))
    return torch.stack(rows)


def zero_shot_probs(logit_scale, img_emb_normalized, class_emb):
    logits = logit_scale.exp() * (img_emb_normalized @ class_emb.t())
    return logits.softmax(dim=-1)


# --------------------------------------------------------------------------
# loading


def strip_module_prefix(sd):
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module."):]: v for k, v in sd.items()}
    return dict(sd)


def load_weights(model, sd):
    """Load a state dict (checkpoint or safetensors names), strict on weights.

    Buffers (position_ids, token_type_ids) may be present or absent.
    """
    sd = strip_module_prefix(sd)
    sd = {k: (torch.from_numpy(v if v.flags.writeable else np.array(v, copy=True)) if isinstance(v, np.ndarray) else v)
          for k, v in sd.items() if k not in BUFFER_NAMES}
    own = model.weight_state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        raise KeyError("state dict mismatch: missing=%s unexpected=%s" % (missing[:5], unexpected[:5]))
    for k, v in own.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            raise ValueError("shape mismatch for %s: %s vs %s" % (k, tuple(sd[k].shape), tuple(v.shape)))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(sd[name])
    return model


class _NoInit:
    """Context manager: skip torch's default parameter initialisation.

    Building the full-size model otherwise spends seconds filling ~200M
    parameters that are overwritten right away.
    """

    _NAMES = ("uniform_", "normal_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_",
              "xavier_normal_", "trunc_normal_", "ones_", "zeros_", "constant_")

    def __enter__(self):
        self.saved = {n: getattr(nn.init, n) for n in self._NAMES if hasattr(nn.init, n)}
        for n in self.saved:
            setattr(nn.init, n, lambda t, *a, **k: t)
        return self

    def __exit__(self, *exc):
        for n, f in self.saved.items():
            setattr(nn.init, n, f)
        return False


def build_model(cfg, dtype=torch.float32, init=True):
    """UniMedCLIP(cfg) with parameters in `dtype`; init=False leaves them uninitialised."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        if init:
            return UniMedCLIP(cfg)
        with _NoInit():
            return UniMedCLIP(cfg)
    finally:
        torch.set_default_dtype(old)


def load_model_dir(path, dtype=torch.float64):
    """Load DIR/config.json + DIR/model.safetensors.  Returns (model, cfg)."""
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    model = build_model(cfg, dtype, init=False)
    sd = unimed_safetensors.read_safetensors(os.path.join(path, "model.safetensors"))
    load_weights(model, sd)
    del sd
    return model.eval(), cfg


def load_checkpoint(model, ckpt_path):
    ck = torch.load(ckpt_path, map_location="cpu")
    sd = ck["state_dict"] if isinstance(ck, dict) and "state_dict" in ck else ck
    return load_weights(model, sd)
