#!/usr/bin/env python3
"""lowp.py BUILDDIR [--runs N] - low-precision contractions against the same-shape f32
contraction, in one run: MatMul 64x512x512 in f32, f16 and bf16; Conv 64->64 3x3 at 28x28
in f32 against ConvInteger and QLinearConv (u8 activations, i8 weights). Each model is
timed by `kiln bench --json` (median of N runs, 1 thread) and the table gives the ratio to
its f32 twin. The models are written to BUILDDIR/bench_lowp/."""
import json
import os
import subprocess
import sys

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

RNG = np.random.default_rng(0)


def save(model_graph, path, opset=21):
    m = h.make_model(model_graph, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 10
    onnx.checker.check_model(m)
    onnx.save(m, path)
    return path


def matmul(d, dt, name, m=64, k=512, n=512):
    np_dt = {T.FLOAT: np.float32, T.FLOAT16: np.float16}.get(dt)
    w = RNG.uniform(-1, 1, (k, n)).astype(np.float32)
    if dt == T.BFLOAT16:
        wt = h.make_tensor("W", T.BFLOAT16, (k, n), w.flatten().tolist())
    else:
        wt = nh.from_array(w.astype(np_dt), "W")
    g = h.make_graph([h.make_node("MatMul", ["A", "W"], ["Y"])], name,
                     [h.make_tensor_value_info("A", dt, (m, k))],
                     [h.make_tensor_value_info("Y", dt, (m, n))], [wt])
    return save(g, os.path.join(d, name + ".onnx"))


def conv_f32(d, c=64, s=28):
    w = nh.from_array(RNG.uniform(-1, 1, (c, c, 3, 3)).astype(np.float32), "W")
    g = h.make_graph([h.make_node("Conv", ["X", "W"], ["Y"], pads=[1, 1, 1, 1])], "conv_f32",
                     [h.make_tensor_value_info("X", T.FLOAT, (1, c, s, s))],
                     [h.make_tensor_value_info("Y", T.FLOAT, (1, c, s, s))], [w])
    return save(g, os.path.join(d, "conv_f32.onnx"))


def conv_int(d, q, c=64, s=28):
    w = nh.from_array(RNG.integers(-127, 128, (c, c, 3, 3)).astype(np.int8), "W")
    inits = [w, nh.from_array(np.array(3, np.uint8), "xzp"), nh.from_array(np.array(0, np.int8), "wzp")]
    if q:
        inits += [nh.from_array(np.array(0.02, np.float32), "xs"), nh.from_array(np.array(0.01, np.float32), "ws"),
                  nh.from_array(np.array(0.5, np.float32), "ys"), nh.from_array(np.array(5, np.uint8), "yzp")]
        node = h.make_node("QLinearConv", ["X", "xs", "xzp", "W", "ws", "wzp", "ys", "yzp"], ["Y"], pads=[1, 1, 1, 1])
        out, name = T.UINT8, "qlinearconv"
    else:
        node = h.make_node("ConvInteger", ["X", "W", "xzp", "wzp"], ["Y"], pads=[1, 1, 1, 1])
        out, name = T.INT32, "convinteger"
    g = h.make_graph([node], name, [h.make_tensor_value_info("X", T.UINT8, (1, c, s, s))],
                     [h.make_tensor_value_info("Y", out, (1, c, s, s))], inits)
    return save(g, os.path.join(d, name + ".onnx"))


def bench(build, path, runs):
    out = subprocess.run([os.path.join(build, "kiln"), "bench", path, "--threads", "1", "--runs", str(runs), "--json"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["median_ms"]


def main():
    build = sys.argv[1]
    runs = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 20
    d = os.path.join(build, "bench_lowp")
    os.makedirs(d, exist_ok=True)
    rows = [("MatMul 64x512x512", matmul(d, T.FLOAT, "mm_f32"),
             [("f16", matmul(d, T.FLOAT16, "mm_f16")), ("bf16", matmul(d, T.BFLOAT16, "mm_bf16"))]),
            ("Conv 64->64 3x3 28x28", conv_f32(d),
             [("ConvInteger u8*i8", conv_int(d, False)), ("QLinearConv u8*i8", conv_int(d, True))])]
    print(f"{'contraction':<24}{'dtype':<20}{'median ms':>10}{'vs f32':>8}")
    for title, f32, others in rows:
        base = bench(build, f32, runs)
        print(f"{title:<24}{'f32':<20}{base:>10.3f}{1.0:>8.2f}")
        for dt, path in others:
            t = bench(build, path, runs)
            print(f"{'':<24}{dt:<20}{t:>10.3f}{t / base:>8.2f}")


if __name__ == "__main__":
    main()
