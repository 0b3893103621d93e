#!/usr/bin/python3
"""Dynamic INT8 quantization of the exported towers for ONNX Runtime, with
Debian's python3-onnx only (for bench/run.py's ORT INT8 column).

    /usr/bin/python3 bench/quantize_onnx.py --onnx DIR --out OUTDIR

Rewrites every MatMul whose second input is a constant 2-D weight [K, N]
(an initializer) into com.microsoft::DynamicQuantizeMatMul with the weight
quantized to int8 symmetrically per output column (scale = max|column| / 127,
zero point 0) and the activation quantized per call by ONNX Runtime (uint8,
per tensor): what onnxruntime.quantization.quantize_dynamic produces with
per_channel=True, weight_type=QInt8 for MatMul. A Gemm with a constant weight
(transB 0 or 1, alpha 1, and a constant bias or none) is rewritten the same
way with its bias as the operator's bias input. Everything else (attention
products, LayerNorm, softmax) stays FP32, as with quantize_dynamic.

Writes OUTDIR/image.onnx, OUTDIR/text.onnx, and OUTDIR/export.json (the
input's, plus "quantized": the rewritten node count per tower).
"""

import argparse
import json
import os
import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper

MS_DOMAIN = "com.microsoft"


def quantize_weight(w):
    """w [K, N] float32 -> (int8 [K, N], scale [N]) symmetric per column."""
    amax = np.abs(w).max(axis=0).astype(np.float32)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return q, scale


def rewrite(model):
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    new_nodes, dropped, count = [], set(), 0
    for node in g.node:
        weight_name, transposed, bias_name = None, False, None
        if node.op_type == "MatMul" and node.input[1] in inits:
            weight_name = node.input[1]
        elif node.op_type == "Gemm" and node.input[1] in inits:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if attrs.get("transA", 0) == 0 and attrs.get("alpha", 1.0) == 1.0 and (
                    len(node.input) < 3 or (node.input[2] in inits and
                                            attrs.get("beta", 1.0) == 1.0)):
                weight_name = node.input[1]
                transposed = attrs.get("transB", 0) == 1
                bias_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
        w = numpy_helper.to_array(inits[weight_name]) if weight_name else None
        if w is None or w.ndim != 2 or w.dtype != np.float32:
            new_nodes.append(node)
            continue
        if transposed:
            w = w.T
        q, scale = quantize_weight(np.ascontiguousarray(w))
        base = node.name or node.output[0]
        qn, sn, zn = base + "_w_int8", base + "_w_scale", base + "_w_zero"
        g.initializer.extend([numpy_helper.from_array(q, qn),
                              numpy_helper.from_array(scale, sn),
                              numpy_helper.from_array(np.zeros(scale.shape, np.int8), zn)])
        inputs = [node.input[0], qn, sn, zn] + ([bias_name] if bias_name else [])
        new_nodes.append(helper.make_node("DynamicQuantizeMatMul", inputs, list(node.output),
                                          name=base + "_quant", domain=MS_DOMAIN))
        dropped.add(weight_name)
        count += 1
    del g.node[:]
    g.node.extend(new_nodes)
    # drop the FP32 weights no node uses any more
    used = {i for n in g.node for i in n.input}
    keep = [t for t in g.initializer if t.name not in dropped or t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.extend([helper.make_opsetid(MS_DOMAIN, 1)])
    return count


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--onnx", required=True, help="folder of bench/export_onnx.py's output")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.onnx, "export.json")) as f:
        info = json.load(f)
    info["quantized"] = {}
    for tower in ("image", "text"):
        model = onnx.load(os.path.join(a.onnx, tower + ".onnx"))
        n = rewrite(model)
        if n == 0:
            raise SystemExit("quantize_onnx: no MatMul with a constant weight in %s.onnx" % tower)
        onnx.save(model, os.path.join(a.out, tower + ".onnx"))
        info["quantized"][tower] = n
        print("quantize_onnx: %s.onnx: %d MatMul/Gemm -> DynamicQuantizeMatMul" % (tower, n),
              file=sys.stderr)
    with open(os.path.join(a.out, "export.json"), "w") as f:
        json.dump(info, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
