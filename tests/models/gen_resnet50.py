#!/usr/bin/env python3
"""gen_resnet50.py OUTDIR [--reference] - writes OUTDIR/resnet50.onnx, a ResNet-50-shaped
network with seeded random weights, for issue 3's arena target ("peak arena memory of a
ResNet-50-shaped network is at most 3x its largest activation").

The graph is torchvision's ResNet-50 layer for layer, written with onnx.helper the way
PyTorch exports it before any folding: stem conv 7x7/2 (3->64) + BatchNormalization + Relu
+ MaxPool 3x3/2; bottleneck stages of [3, 4, 6, 3] blocks with widths 64/128/256/512 and
4x expansion (1x1 reduce, 3x3 (stride 2 in the first block of stages 2-4, as torchvision
v1.5 does), 1x1 expand, a BatchNormalization after every convolution, a 1x1/stride
projection + BatchNormalization on the first block's skip, residual Add, Relu);
GlobalAveragePool, Flatten, Gemm 2048 -> 1000. Input [1, 3, 224, 224].

Its ~25.6M weights are ~100 MB, too big for the repository: tests generate it into the
build directory (tests/models/check_fusion_targets.py does). Seeded: the same file every
run. With --reference it also writes resnet50.input_0.npy and onnxruntime's
resnet50.output_0.npy, the layout tests/models/check_models.py reads. Prints how long
generation took.
"""
import os
import sys
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "examples"))
from gen_models import Builder, reference_outputs, tensor_info  # noqa: E402

STAGES = [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]  # width, blocks, stride
EXPANSION = 4


class ResNetBuilder(Builder):
    def bn(self, x, c, gamma=(0.5, 1.5)):
        """BatchNormalization with positive variances; the last BN of a block gets a
        small gamma (as zero-init-residual training leaves it) so that 16 residual adds
        keep activations O(1)."""
        scale = self.init("bn_scale", self.rng.uniform(*gamma, c).astype(np.float32))
        bias = self.small("bn_bias", (c,))
        mean = self.small("bn_mean", (c,))
        var = self.init("bn_var", self.rng.uniform(0.5, 1.5, c).astype(np.float32))
        return self.op("BatchNormalization", [x, scale, bias, mean, var], "bn", epsilon=1e-5)

    def model(self, inputs, outputs):
        # Builder.model runs the full checker, which serializes the 100 MB model once
        # more; the plain check is enough for a graph built the same way.
        graph = helper.make_graph(self.nodes, self.name, inputs, outputs, self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="kiln-gen_resnet50")
        m.ir_version = 8
        onnx.checker.check_model(m)
        return m


def bottleneck(b, x, cin, width, stride):
    cout = width * EXPANSION
    h = b.op("Relu", [b.bn(b.conv(x, cin, width, 1, pad=0), width)])
    h = b.op("Relu", [b.bn(b.conv(h, width, width, 3, stride=stride), width)])
    h = b.bn(b.conv(h, width, cout, 1, pad=0), cout, gamma=(0.1, 0.3))
    skip = x
    if stride != 1 or cin != cout:
        skip = b.bn(b.conv(x, cin, cout, 1, stride=stride, pad=0), cout)
    return b.op("Relu", [b.op("Add", [h, skip], "residual")]), cout


def make_resnet50():
    b = ResNetBuilder("resnet50", seed=50)
    x = b.op("Relu", [b.bn(b.conv("input", 3, 64, 7, stride=2, pad=3), 64)])
    x = b.op("MaxPool", [x], "maxpool", kernel_shape=[3, 3], strides=[2, 2],
             pads=[1, 1, 1, 1])
    c = 64
    for width, blocks, stride in STAGES:
        for i in range(blocks):
            x, c = bottleneck(b, x, c, width, stride if i == 0 else 1)
    x = b.op("GlobalAveragePool", [x], "avgpool")
    x = b.op("Flatten", [x], "flatten", axis=1)
    y = b.op("Gemm", [x, b.weight("fc_w", (1000, c), c), b.small("fc_b", (1000,))], "fc",
             transB=1)
    m = b.model([tensor_info("input", [1, 3, 224, 224])], [tensor_info(y, [1, 1000])])
    inputs = [b.rng.standard_normal((1, 3, 224, 224)).astype(np.float32)]
    return m, inputs


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    if len(args) != 1 or any(a not in ("--reference",) for a in argv[1:] if a.startswith("--")):
        print("usage: gen_resnet50.py OUTDIR [--reference]", file=sys.stderr)
        return 2
    outdir = args[0]
    os.makedirs(outdir, exist_ok=True)
    t0 = time.perf_counter()
    model, inputs = make_resnet50()
    path = os.path.join(outdir, "resnet50.onnx")
    onnx.save(model, path)
    gen_s = time.perf_counter() - t0
    n_conv = sum(n.op_type == "Conv" for n in model.graph.node)
    n_param = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    print(f"resnet50: {len(model.graph.node)} nodes ({n_conv} Conv), {n_param / 1e6:.1f}M "
          f"weights, {os.path.getsize(path) / 1e6:.1f} MB, generated in {gen_s:.1f} s")
    if "--reference" in argv:
        t0 = time.perf_counter()
        np.save(os.path.join(outdir, "resnet50.input_0.npy"), inputs[0])
        outs = reference_outputs(model, inputs)
        for k, y in enumerate(outs):
            np.save(os.path.join(outdir, f"resnet50.output_{k}.npy"), np.asarray(y, np.float32))
        print(f"resnet50: onnxruntime reference in {time.perf_counter() - t0:.1f} s, "
              f"max|y| {max(float(np.max(np.abs(y))) for y in outs):.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
