#!/usr/bin/env python3
"""gen_models.py - builds the small real-architecture ONNX models Kiln's model tests use.

Usage: gen_models.py OUTDIR

Writes, for each model M (mlp, cnn, mobilenet_block, transformer):
  OUTDIR/M.onnx            opset 17, ir_version 8 (loadable by onnxruntime), random weights
  OUTDIR/M.input_K.npy     an input for each graph input K (float32)
  OUTDIR/M.output_K.npy    onnxruntime's output K for those inputs (float32)

The graphs are written by hand with onnx.helper in the shape the usual exporters produce
(PyTorch's Shape->Gather->Unsqueeze->Concat reshape chains, LayerNorm and GELU spelled out
as primitive ops, BatchNormalization after bias-free convolutions), so they exercise the
importer's decompositions and the fusion passes the way real models do. Weights are
scaled by their fan-in so activations stay O(1) and errors can be compared absolutely.
Everything is seeded: the files are the same on every run.
"""
import argparse
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8


class Builder:
    """Collects nodes and initializers; names every node so error messages can point at it."""

    def __init__(self, name, seed):
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.nodes = []
        self.inits = []
        self.count = 0

    def fresh(self, hint):
        self.count += 1
        return f"{hint}_{self.count}"

    def init(self, hint, array):
        nm = self.fresh(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(array), nm))
        return nm

    def const_node(self, hint, array):
        """A Constant node (how torch exports scalars), not an initializer."""
        nm = self.fresh(hint)
        t = numpy_helper.from_array(np.asarray(array), nm + "_value")
        self.nodes.append(helper.make_node("Constant", [], [nm], name=nm + "_node", value=t))
        return nm

    def op(self, op_type, inputs, hint=None, **attrs):
        out = self.fresh(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out + "_node", **attrs))
        return out

    def weight(self, hint, shape, fan_in, gain=1.0):
        w = self.rng.standard_normal(shape) * (gain / np.sqrt(fan_in))
        return self.init(hint, w.astype(np.float32))

    def small(self, hint, shape, scale=0.1):
        return self.init(hint, (self.rng.standard_normal(shape) * scale).astype(np.float32))

    def model(self, inputs, outputs):
        graph = helper.make_graph(self.nodes, self.name, inputs, outputs, self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="kiln-gen_models")
        m.ir_version = IR_VERSION
        onnx.checker.check_model(m, full_check=True)
        return m

    # -- layers used by several models ---------------------------------------------------
    def conv(self, x, cin, cout, k, stride=1, pad=None, group=1, bias=False):
        pad = k // 2 if pad is None else pad
        fan_in = cin // group * k * k
        ins = [x, self.weight("conv_w", (cout, cin // group, k, k), fan_in, gain=np.sqrt(2.0))]
        if bias:
            ins.append(self.small("conv_b", (cout,)))
        return self.op("Conv", ins, "conv", kernel_shape=[k, k], strides=[stride, stride],
                       pads=[pad] * 4, group=group)

    def bn(self, x, c):
        scale = self.init("bn_scale", self.rng.uniform(0.5, 1.5, c).astype(np.float32))
        bias = self.small("bn_bias", (c,))
        mean = self.small("bn_mean", (c,))
        var = self.init("bn_var", self.rng.uniform(0.5, 1.5, c).astype(np.float32))
        return self.op("BatchNormalization", [x, scale, bias, mean, var], "bn", epsilon=1e-5)


def tensor_info(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


# ------------------------------------------------------------------------------ models
def make_mlp():
    b = Builder("mlp", seed=1)
    h = b.op("Gemm", ["x", b.weight("fc1_w", (256, 784), 784, np.sqrt(2.0)),
                      b.small("fc1_b", (256,))], "fc1", transB=1)
    h = b.op("Relu", [h])
    # The second layer stores its weight untransposed (transB=0), as some exporters do.
    h = b.op("Gemm", [h, b.weight("fc2_w", (256, 128), 256, np.sqrt(2.0)),
                      b.small("fc2_b", (128,))], "fc2")
    h = b.op("Relu", [h])
    h = b.op("MatMul", [h, b.weight("fc3_w", (128, 10), 128)], "fc3")
    h = b.op("Add", [h, b.small("fc3_b", (10,))])
    y = b.op("Softmax", [h], "probs", axis=-1)
    m = b.model([tensor_info("x", ["batch", 784])], [tensor_info(y, ["batch", 10])])
    inputs = [b.rng.standard_normal((1, 784)).astype(np.float32)]
    return m, inputs


def make_cnn():
    b = Builder("cnn", seed=2)
    x = b.op("Relu", [b.bn(b.conv("x", 3, 16, 3, bias=True), 16)])
    # Block 1: identity skip.
    h = b.op("Relu", [b.bn(b.conv(x, 16, 16, 3), 16)])
    h = b.bn(b.conv(h, 16, 16, 3), 16)
    x = b.op("Relu", [b.op("Add", [h, x])])
    # Block 2: stride 2, 16 -> 32 channels, 1x1 projection on the skip.
    h = b.op("Relu", [b.bn(b.conv(x, 16, 32, 3, stride=2), 32)])
    h = b.bn(b.conv(h, 32, 32, 3), 32)
    skip = b.conv(x, 16, 32, 1, stride=2, pad=0, bias=True)
    x = b.op("Relu", [b.op("Add", [h, skip])])
    x = b.op("MaxPool", [x], "pool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    x = b.op("GlobalAveragePool", [x], "gap")
    x = b.op("Flatten", [x], "flat", axis=1)
    y = b.op("Gemm", [x, b.weight("fc_w", (10, 32), 32), b.small("fc_b", (10,))], "logits",
             transB=1)
    m = b.model([tensor_info("x", [1, 3, 32, 32])], [tensor_info(y, [1, 10])])
    inputs = [b.rng.standard_normal((1, 3, 32, 32)).astype(np.float32)]
    return m, inputs


def make_mobilenet_block():
    b = Builder("mobilenet_block", seed=3)
    c, e = 16, 64
    # Clip bounds as inputs (opset 11+): Constant nodes for the first Clip (as torch
    # exports them), initializers for the second, so both spellings are covered.
    h = b.bn(b.conv("x", c, e, 1, pad=0), e)
    h = b.op("Clip", [h, b.const_node("clip_min", np.float32(0.0)),
                      b.const_node("clip_max", np.float32(6.0))], "relu6")
    h = b.bn(b.conv(h, e, e, 3, group=e), e)
    h = b.op("Clip", [h, b.init("clip_min", np.float32(0.0)),
                      b.init("clip_max", np.float32(6.0))], "relu6")
    h = b.bn(b.conv(h, e, c, 1, pad=0), c)
    y = b.op("Add", [h, "x"], "residual")
    m = b.model([tensor_info("x", [1, c, 16, 16])], [tensor_info(y, [1, c, 16, 16])])
    inputs = [b.rng.standard_normal((1, c, 16, 16)).astype(np.float32)]
    return m, inputs


def make_transformer():
    b = Builder("transformer", seed=4)
    seq, d, heads = 16, 64, 4
    hd = d // heads

    def linear(x, din, dout, hint):
        h = b.op("MatMul", [x, b.weight(hint + "_w", (din, dout), din)], hint)
        return b.op("Add", [h, b.small(hint + "_b", (dout,))], hint + "_bias")

    def dim_of(x, i):
        """torch's size(i): Shape -> Gather(scalar index) -> Unsqueeze(axes as an input)."""
        shape = b.op("Shape", [x], "shape")
        g = b.op("Gather", [shape, b.const_node("idx", np.int64(i))], "dim", axis=0)
        return b.op("Unsqueeze", [g, b.const_node("axes", np.array([0], np.int64))], "dim1")

    def split_heads(t, x, perm):
        target = b.op("Concat", [dim_of(x, 0), dim_of(x, 1),
                                 b.const_node("heads", np.array([heads], np.int64)),
                                 b.const_node("head_dim", np.array([hd], np.int64))],
                      "heads_shape", axis=0)
        r = b.op("Reshape", [t, target], "split_heads")
        return b.op("Transpose", [r], "heads_first", perm=perm)

    def layer_norm(x):
        mean = b.op("ReduceMean", [x], "ln_mean", axes=[-1], keepdims=1)
        c = b.op("Sub", [x, mean], "ln_center")
        var = b.op("ReduceMean", [b.op("Pow", [c, b.const_node("two", np.float32(2.0))])],
                   "ln_var", axes=[-1], keepdims=1)
        std = b.op("Sqrt", [b.op("Add", [var, b.const_node("eps", np.float32(1e-5))])])
        n = b.op("Div", [c, std], "ln_norm")
        g = b.init("ln_gamma", b.rng.uniform(0.8, 1.2, d).astype(np.float32))
        return b.op("Add", [b.op("Mul", [n, g]), b.small("ln_beta", (d,))], "ln_out")

    x = "x"
    q = split_heads(linear(x, d, d, "q"), x, [0, 2, 1, 3])
    k = split_heads(linear(x, d, d, "k"), x, [0, 2, 3, 1])  # K already transposed
    v = split_heads(linear(x, d, d, "v"), x, [0, 2, 1, 3])
    s = b.op("MatMul", [q, k], "scores")
    s = b.op("Div", [s, b.const_node("sqrt_d", np.float32(np.sqrt(hd)))], "scaled")
    p = b.op("Softmax", [s], "attn", axis=-1)
    a = b.op("MatMul", [p, v], "context")
    a = b.op("Transpose", [a], "heads_last", perm=[0, 2, 1, 3])
    merged = b.op("Concat", [dim_of(x, 0), dim_of(x, 1),
                             b.const_node("d_model", np.array([d], np.int64))],
                  "merge_shape", axis=0)
    a = b.op("Reshape", [a, merged], "merge_heads")
    h = b.op("Add", [linear(a, d, d, "out_proj"), x], "residual1")
    h = layer_norm(h)
    f = linear(h, d, 4 * d, "ffn1")
    erf = b.op("Erf", [b.op("Div", [f, b.const_node("sqrt2", np.float32(np.sqrt(2.0)))])])
    f = b.op("Mul", [b.op("Mul", [f, b.op("Add", [erf, b.const_node("one", np.float32(1))])]),
                     b.const_node("half", np.float32(0.5))], "gelu")
    f = linear(f, 4 * d, d, "ffn2")
    y = layer_norm(b.op("Add", [f, h], "residual2"))
    m = b.model([tensor_info("x", [1, seq, d])], [tensor_info(y, [1, seq, d])])
    inputs = [b.rng.standard_normal((1, seq, d)).astype(np.float32)]
    return m, inputs


MODELS = {
    "mlp": make_mlp,
    "cnn": make_cnn,
    "mobilenet_block": make_mobilenet_block,
    "transformer": make_transformer,
}


def reference_outputs(model, inputs):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # The reference should be the plain graph, not ORT's own fused rewrite of it.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    feeds = {i.name: x for i, x in zip(sess.get_inputs(), inputs)}
    return sess.run(None, feeds)


def main(argv):
    ap = argparse.ArgumentParser(
        prog="gen_models.py",
        description="Builds Kiln's example ONNX models (" + ", ".join(MODELS) + ") with seeded random "
        "weights, one input per graph input and onnxruntime's outputs for it.",
        epilog="Writes OUTDIR/M.onnx, OUTDIR/M.input_K.npy and OUTDIR/M.output_K.npy for each model M.")
    ap.add_argument("outdir", metavar="OUTDIR", help="folder to write the models into (created if missing)")
    outdir = ap.parse_args(argv[1:]).outdir
    os.makedirs(outdir, exist_ok=True)
    for name, make in MODELS.items():
        model, inputs = make()
        onnx.save(model, os.path.join(outdir, name + ".onnx"))
        for k, x in enumerate(inputs):
            np.save(os.path.join(outdir, f"{name}.input_{k}.npy"), x)
        outs = reference_outputs(model, inputs)
        for k, y in enumerate(outs):
            np.save(os.path.join(outdir, f"{name}.output_{k}.npy"), np.asarray(y, np.float32))
        shapes = ", ".join(str(list(np.shape(y))) for y in outs)
        print(f"{name}: {len(model.graph.node)} nodes, outputs {shapes}, "
              f"max|y| {max(float(np.max(np.abs(y))) for y in outs):.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
