#!/usr/bin/python3
"""Tests for tools/convert_checkpoint.py, the safetensors writer and the reference model.

Run directly (/usr/bin/python3 tests/reference/test_convert.py) or via ctest
(test name: reference_convert).
"""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.abspath(os.path.join(_HERE, "..", ".."))
sys.path.insert(0, _HERE)
sys.path.insert(0, os.path.join(_ROOT, "tools"))

import convert_checkpoint  # noqa: E402
import unimed_ref  # noqa: E402
import unimed_safetensors as st  # noqa: E402

PY = sys.executable
MAKE_MODEL = os.path.join(_HERE, "make_model.py")
CONVERT = os.path.join(_ROOT, "tools", "convert_checkpoint.py")
SEED = 3


def write_toy_vocab(path, n=500):
    toks = ["[PAD]"] + ["[unused%d]" % i for i in range(20)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    toks += [chr(c) for c in range(ord("a"), ord("z") + 1)]
    toks += ["tok%d" % i for i in range(n - len(toks))]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(toks) + "\n")


def run(*args):
    return subprocess.run([PY] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True)


class ConvertTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        torch.set_grad_enabled(False)
        cls.tmp = tempfile.mkdtemp(prefix="unimed_conv_")
        cls.vocab = os.path.join(cls.tmp, "vocab.txt")
        write_toy_vocab(cls.vocab)
        cls.model_dir = os.path.join(cls.tmp, "model")
        cls.ckpt = os.path.join(cls.tmp, "ckpt.pt")
        r = run(MAKE_MODEL, "--config", "small", "--seed", str(SEED), "--vocab", cls.vocab,
                "--out", cls.model_dir, "--checkpoint", cls.ckpt)
        assert r.returncode == 0, r.stderr
        with open(os.path.join(cls.model_dir, "config.json")) as f:
            cls.cfg = json.load(f)
        t = cls.cfg["text"]
        # fake BiomedBERT folder
        cls.bert_dir = os.path.join(cls.tmp, "bert")
        os.makedirs(cls.bert_dir)
        hf = {
            "architectures": ["BertForMaskedLM"],
            "model_type": "bert",
            "vocab_size": t["vocab_size"],
            "hidden_size": t["hidden_size"],
            "num_hidden_layers": t["layers"],
            "num_attention_heads": t["heads"],
            "intermediate_size": t["intermediate_size"],
            "max_position_embeddings": t["max_position_embeddings"],
            "type_vocab_size": t["type_vocab_size"],
            "layer_norm_eps": t["layer_norm_eps"],
            "pad_token_id": t["pad_token_id"],
            "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1,
        }
        with open(os.path.join(cls.bert_dir, "config.json"), "w") as f:
            json.dump(hf, f)
        shutil.copyfile(cls.vocab, os.path.join(cls.bert_dir, "vocab.txt"))
        ck = torch.load(cls.ckpt, map_location="cpu")
        cls.ck_sd = ck["state_dict"]

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def convert(self, ckpt, out, *extra):
        return run(CONVERT, ckpt, self.bert_dir, out, "--context-length",
                   str(self.cfg["text"]["context_length"]), "--name", self.cfg["model_name"],
                   "--version", self.cfg["model_version"], *extra)

    def save_variant(self, name, sd, wrap=True):
        path = os.path.join(self.tmp, name + ".pt")
        torch.save({"epoch": 7, "state_dict": sd, "optimizer": {"lr": 1e-4}} if wrap else sd, path)
        return path

    # ------------------------------------------------------------------

    def test_checkpoint_layout(self):
        self.assertTrue(all(k.startswith("module.") for k in self.ck_sd))
        self.assertIn("module.text_encoder.transformer.embeddings.position_ids", self.ck_sd)
        self.assertEqual(self.ck_sd["module.text_encoder.transformer.embeddings.position_ids"].dtype,
                         torch.int64)
        self.assertIn("module.text_encoder.transformer.pooler.dense.weight", self.ck_sd)

    def test_convert_roundtrip(self):
        out = os.path.join(self.tmp, "conv")
        r = self.convert(self.ckpt, out)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(out, "config.json")) as f:
            cfg = json.load(f)
        self.assertEqual(cfg, self.cfg)
        with open(os.path.join(out, "vocab.txt"), "rb") as a, open(self.vocab, "rb") as b:
            self.assertEqual(a.read(), b.read())
        conv = st.read_safetensors(os.path.join(out, "model.safetensors"))
        made = st.read_safetensors(os.path.join(self.model_dir, "model.safetensors"))
        want = {k[len("module."):]: v for k, v in self.ck_sd.items()
                if not k.endswith("position_ids")}
        self.assertEqual(set(conv), set(want))
        self.assertEqual(set(made), set(want))
        for k, v in want.items():
            self.assertEqual(conv[k].dtype, np.float32, k)
            self.assertEqual(tuple(conv[k].shape), tuple(v.shape), k)
            self.assertTrue(np.array_equal(conv[k], v.numpy()), k)
            self.assertTrue(np.array_equal(made[k], v.numpy()), k)
        # format details the C loader relies on
        hdr, meta, start = st.read_header(os.path.join(out, "model.safetensors"))
        self.assertEqual(start % 8, 0)
        self.assertEqual(meta.get("format"), "pt")
        self.assertEqual(hdr["logit_scale"]["shape"], [])
        ends = sorted(tuple(i["data_offsets"]) for i in hdr.values())
        pos = 0
        for b, e in ends:
            self.assertEqual(b, pos)
            pos = e
        self.assertEqual(os.path.getsize(os.path.join(out, "model.safetensors")), start + pos)

    def test_bare_state_dict(self):
        sd = {k[len("module."):]: v for k, v in self.ck_sd.items()}
        path = self.save_variant("bare", sd, wrap=False)
        out = os.path.join(self.tmp, "conv_bare")
        r = self.convert(path, out)
        self.assertEqual(r.returncode, 0, r.stderr)
        a = st.read_safetensors(os.path.join(out, "model.safetensors"))
        b = st.read_safetensors(os.path.join(self.model_dir, "model.safetensors"))
        self.assertEqual(list(a), list(b))  # same tensor order as make_model
        for k in a:
            self.assertTrue(np.array_equal(a[k], b[k]), k)

    def test_without_pooler(self):
        # The pooler is unused; a checkpoint saved without it converts.
        sd = {k: v for k, v in self.ck_sd.items() if ".pooler." not in k}
        path = self.save_variant("nopooler", sd)
        out = os.path.join(self.tmp, "conv_nopooler")
        r = self.convert(path, out)
        self.assertEqual(r.returncode, 0, r.stderr)
        a = st.read_safetensors(os.path.join(out, "model.safetensors"))
        self.assertFalse(any(".pooler." in k for k in a))
        b = st.read_safetensors(os.path.join(self.model_dir, "model.safetensors"))
        self.assertEqual(set(a), {k for k in b if ".pooler." not in k})

    def test_dtypes(self):
        for dt, code in (("f16", "F16"), ("bf16", "BF16")):
            out = os.path.join(self.tmp, "conv_" + dt)
            r = self.convert(self.ckpt, out, "--dtype", dt)
            self.assertEqual(r.returncode, 0, r.stderr)
            path = os.path.join(out, "model.safetensors")
            hdr, _, start = st.read_header(path)
            with open(path, "rb") as f:
                f.seek(start)
                blob = f.read()
            for k, v in self.ck_sd.items():
                k = k[len("module."):]
                if k.endswith("position_ids"):
                    continue
                info = hdr[k]
                self.assertEqual(info["dtype"], code, k)
                b, e = info["data_offsets"]
                raw = np.frombuffer(blob[b:e], dtype="<u2")
                ref = v.to(torch.float16 if dt == "f16" else torch.bfloat16).reshape(-1)
                ref_bits = ref.view(torch.int16).numpy().view("<u2")
                self.assertTrue(np.array_equal(raw, ref_bits), "%s %s" % (dt, k))

    def test_bf16_rounding_edge_cases(self):
        x = np.array([1.0, 1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, 1.0 + 2 ** -8 + 2 ** -20, -2.5e-3,
                      3.4e38, np.inf, -np.inf, 0.0, -0.0, 1e-40], dtype=np.float32)
        got = st.f32_to_bf16_bits(x)
        ref = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view("<u2")
        self.assertTrue(np.array_equal(got, ref), (got, ref))
        nan = st.f32_to_bf16_bits(np.array([np.nan], dtype=np.float32))
        self.assertTrue(np.isnan(st.bf16_bits_to_f32(nan))[0])

    def expect_error(self, name, sd, tensor_name, subprocess_run=False):
        path = self.save_variant(name, sd)
        out = os.path.join(self.tmp, "conv_" + name)
        if subprocess_run:
            r = self.convert(path, out)
            rc, err = r.returncode, r.stderr
        else:  # in-process main() (same code path, avoids a torch start-up per case)
            buf = io.StringIO()
            with contextlib.redirect_stderr(buf), contextlib.redirect_stdout(io.StringIO()):
                rc = convert_checkpoint.main([path, self.bert_dir, out, "--context-length",
                                              str(self.cfg["text"]["context_length"])])
            err = buf.getvalue()
        self.assertEqual(rc, 1, err)
        self.assertIn("'%s'" % tensor_name, err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertFalse(os.path.exists(os.path.join(out, "model.safetensors")))

    def test_error_exit_code_cli(self):
        sd = dict(self.ck_sd)
        del sd["module.visual.transformer.resblocks.0.attn.in_proj_bias"]
        self.expect_error("cli_missing", sd, "visual.transformer.resblocks.0.attn.in_proj_bias",
                          subprocess_run=True)

    def test_pickle_safety(self):
        import argparse

        sd = dict(self.ck_sd)
        path = os.path.join(self.tmp, "with_namespace.pt")
        torch.save({"epoch": 1, "args": argparse.Namespace(lr=0.1), "state_dict": sd,
                    "optimizer": {"param_groups": [{"lr": 1e-4, "betas": (0.9, 0.98), "x": None}]}},
                   path)
        buf = io.StringIO()
        out = os.path.join(self.tmp, "conv_ns")
        argv = [path, self.bert_dir, out, "--context-length", str(self.cfg["text"]["context_length"])]
        with contextlib.redirect_stderr(buf), contextlib.redirect_stdout(io.StringIO()):
            rc = convert_checkpoint.main(argv)
        self.assertEqual(rc, 1, buf.getvalue())
        self.assertIn("--unsafe-pickle", buf.getvalue())
        self.assertFalse(os.path.exists(os.path.join(out, "model.safetensors")))
        with contextlib.redirect_stdout(io.StringIO()):
            rc = convert_checkpoint.main(argv + ["--unsafe-pickle"])
        self.assertEqual(rc, 0)

    def test_missing_tensor(self):
        for n in ("visual.ln_post.bias",
                  "text_encoder.transformer.encoder.layer.1.output.LayerNorm.weight",
                  "text_encoder.proj.2.weight",
                  "logit_scale"):
            sd = dict(self.ck_sd)
            del sd["module." + n]
            self.expect_error("missing_" + n.replace(".", "_"), sd, n)

    def test_unexpected_tensor(self):
        for n, t in (("visual.attn_pool.weight", torch.zeros(4)),
                     ("text_encoder.transformer.encoder.layer.2.output.dense.bias", torch.zeros(64))):
            sd = dict(self.ck_sd)
            sd["module." + n] = t
            self.expect_error("unexpected_" + n.replace(".", "_"), sd, n)

    def test_wrong_shape(self):
        for n in ("visual.transformer.resblocks.1.mlp.c_proj.bias",
                  "text_encoder.transformer.encoder.layer.0.intermediate.dense.weight",
                  "text_encoder.transformer.embeddings.word_embeddings.weight",
                  "text_encoder.proj.0.weight",
                  "visual.proj"):
            sd = dict(self.ck_sd)
            v = sd["module." + n]
            sd["module." + n] = v.t().contiguous() if v.dim() == 2 and v.shape[0] != v.shape[1] \
                else torch.zeros(v.shape[0] + 1, *v.shape[1:])
            self.expect_error("shape_" + n.replace(".", "_"), sd, n)

    def test_expected_shapes_match_reference_model(self):
        for proj in ("mlp", "linear"):
            cfg = json.loads(json.dumps(self.cfg))
            cfg["text"]["projection"] = proj
            m = unimed_ref.UniMedCLIP(cfg)
            got = {k: tuple(v.shape) for k, v in m.weight_state_dict().items()}
            self.assertEqual(got, dict(convert_checkpoint.expected_shapes(cfg)))

    def test_reference_output_identical(self):
        out = os.path.join(self.tmp, "conv_ref")
        r = self.convert(self.ckpt, out)
        self.assertEqual(r.returncode, 0, r.stderr)
        a, cfg = unimed_ref.load_model_dir(out, dtype=torch.float32)
        b = unimed_ref.load_checkpoint(unimed_ref.UniMedCLIP(cfg), self.ckpt).eval()
        g = torch.Generator().manual_seed(0)
        S = cfg["vision"]["image_size"]
        imgs = torch.randn(2, 3, S, S, generator=g)
        ids = a.pad_ids([[22, 30, 31, 40, 23], [22, 50, 23]])
        for m in (a, b):
            self.assertEqual(m.logit_scale.dtype, torch.float32)
        ea, eb = a.encode_image(imgs), b.encode_image(imgs)
        ta, tb = a.encode_text(ids), b.encode_text(ids)
        self.assertTrue(torch.equal(ea, eb))
        self.assertTrue(torch.equal(ta, tb))
        self.assertTrue(torch.equal(a.logit_scale, b.logit_scale))
        # padding must not matter beyond the mask: compare with unpadded ids
        t_short = a.encode_text(torch.tensor([[22, 50, 23]]))
        self.assertTrue(torch.allclose(t_short[0], ta[1], atol=1e-5))


class ReferenceModelTest(unittest.TestCase):
    """Cross-check unimed_ref against torch's own building blocks (float64)."""

    @classmethod
    def setUpClass(cls):
        torch.set_grad_enabled(False)
        cls.tmp = tempfile.mkdtemp(prefix="unimed_ref_")
        vocab = os.path.join(cls.tmp, "vocab.txt")
        write_toy_vocab(vocab)
        out = os.path.join(cls.tmp, "model")
        r = run(MAKE_MODEL, "--config", "small", "--seed", "11", "--vocab", vocab, "--out", out)
        assert r.returncode == 0, r.stderr
        cls.model, cls.cfg = unimed_ref.load_model_dir(out, dtype=torch.float64)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_vision_matches_torch_mha(self):
        m, v = self.model.visual, self.cfg["vision"]
        W, P = v["width"], v["patch_size"]
        g = torch.Generator().manual_seed(1)
        x = torch.randn(2, 3, v["image_size"], v["image_size"], generator=g, dtype=torch.float64)
        # independent forward: unfold patches by hand, nn.MultiheadAttention for attention
        B = x.shape[0]
        G = v["image_size"] // P
        patches = x.reshape(B, 3, G, P, G, P).permute(0, 2, 4, 1, 3, 5).reshape(B, G * G, 3 * P * P)
        h = patches @ m.conv1.weight.reshape(W, -1).t()
        h = torch.cat([m.class_embedding.expand(B, 1, W), h], dim=1) + m.positional_embedding
        ln = lambda t, mod: torch.nn.functional.layer_norm(t, (W,), mod.weight, mod.bias, 1e-5)  # noqa: E731
        h = ln(h, m.ln_pre)
        for blk in m.transformer.resblocks:
            mha = torch.nn.MultiheadAttention(W, v["heads"], batch_first=True).double()
            mha.in_proj_weight.copy_(blk.attn.in_proj_weight)
            mha.in_proj_bias.copy_(blk.attn.in_proj_bias)
            mha.out_proj.weight.copy_(blk.attn.out_proj.weight)
            mha.out_proj.bias.copy_(blk.attn.out_proj.bias)
            mha.eval()
            y = ln(h, blk.ln_1)
            h = h + mha(y, y, y, need_weights=False)[0]
            y = ln(h, blk.ln_2) @ blk.mlp.c_fc.weight.t() + blk.mlp.c_fc.bias
            y = y * torch.sigmoid(1.702 * y)
            h = h + y @ blk.mlp.c_proj.weight.t() + blk.mlp.c_proj.bias
        want = ln(h[:, 0], m.ln_post) @ m.proj
        got = self.model.encode_image(x)
        self.assertTrue(torch.allclose(got, want, rtol=0, atol=1e-12), (got - want).abs().max())

    def test_text_matches_torch_mha(self):
        t = self.cfg["text"]
        D, nh, eps = t["hidden_size"], t["heads"], t["layer_norm_eps"]
        bert = self.model.text_encoder.transformer
        ids = self.model.pad_ids([[22, 30, 31, 40, 23], [22, 50, 23], [22] + list(range(30, 60)) + [23]])
        pad = ids == t["pad_token_id"]
        e = bert.embeddings
        h = (e.word_embeddings.weight[ids] + e.position_embeddings.weight[: ids.shape[1]]
             + e.token_type_embeddings.weight[0])
        h = torch.nn.functional.layer_norm(h, (D,), e.LayerNorm.weight, e.LayerNorm.bias, eps)
        for lyr in bert.encoder.layer:
            sa = lyr.attention.self
            mha = torch.nn.MultiheadAttention(D, nh, batch_first=True).double()
            mha.in_proj_weight.copy_(torch.cat([sa.query.weight, sa.key.weight, sa.value.weight]))
            mha.in_proj_bias.copy_(torch.cat([sa.query.bias, sa.key.bias, sa.value.bias]))
            mha.out_proj.weight.copy_(lyr.attention.output.dense.weight)
            mha.out_proj.bias.copy_(lyr.attention.output.dense.bias)
            mha.eval()
            a = mha(h, h, h, key_padding_mask=pad, need_weights=False)[0]
            lo = lyr.attention.output.LayerNorm
            h = torch.nn.functional.layer_norm(a + h, (D,), lo.weight, lo.bias, eps)
            y = torch.nn.functional.gelu(lyr.intermediate.dense(h))
            lo = lyr.output.LayerNorm
            h = torch.nn.functional.layer_norm(lyr.output.dense(y) + h, (D,), lo.weight, lo.bias, eps)
        pr = self.model.text_encoder.proj
        want = torch.nn.functional.gelu(h[:, 0] @ pr[0].weight.t()) @ pr[2].weight.t()
        got = self.model.encode_text(ids)
        self.assertTrue(torch.allclose(got, want, rtol=0, atol=1e-12), (got - want).abs().max())

    def test_zero_shot_formula(self):
        g = torch.Generator().manual_seed(2)
        img = torch.nn.functional.normalize(torch.randn(32, generator=g, dtype=torch.float64), dim=0)
        txt = torch.nn.functional.normalize(torch.randn(5, 32, generator=g, dtype=torch.float64), dim=1)
        ce = unimed_ref.class_embeddings(txt, [[0, 3], [1], [2, 4]])
        c0 = (txt[0] + txt[3]) / 2
        self.assertTrue(torch.allclose(ce[0], c0 / c0.norm(), atol=1e-15))
        p = unimed_ref.zero_shot_probs(torch.tensor(4.0, dtype=torch.float64), img, ce)
        logits = np.exp(4.0) * (ce.numpy() @ img.numpy())
        want = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        self.assertTrue(np.allclose(p.numpy(), want, atol=1e-15))


if __name__ == "__main__":
    unittest.main(verbosity=2)
