#!/usr/bin/env python3
"""torch_refill.py STRIPPED.onnx OUT.onnx [SEED] - gives a model stripped by
torch_export.py random weights with each tensor's recorded statistics (normal(mean, std)
clipped to [min, max], so variances stay non-negative), and writes it with its inputs
(OUT.input_K.npy) and onnxruntime's outputs (OUT.output_K.npy)."""
import sys

import numpy as np
import onnx
from onnx import numpy_helper


def refill(src, dst, seed=0):
    rng = np.random.default_rng(seed)
    m = onnx.load(src)
    for t in m.graph.initializer:
        if not t.doc_string.startswith("kiln-stats"):
            continue
        mean, std, lo, hi = (float(x) for x in t.doc_string.split()[1:])
        dt = onnx.helper.tensor_dtype_to_np_dtype(t.data_type)
        if std == 0 and len(t.dims) >= 2:
            # a zero-initialized weight matrix (e.g. ViT's head) would make every output
            # zero and the comparison empty: give it fan-in scaled values instead
            std, lo, hi = 1.0 / np.sqrt(t.dims[-1]), -np.inf, np.inf
        a = np.clip(rng.normal(mean, std, size=tuple(t.dims)), lo, hi).astype(dt)
        new = numpy_helper.from_array(a, t.name)
        t.CopyFrom(new)
    onnx.save(m, dst, save_as_external_data=False)
    return m


def inputs_for(m, rng):
    feeds = {}
    init = {t.name for t in m.graph.initializer}
    for i in m.graph.input:
        if i.name in init:
            continue
        tt = i.type.tensor_type
        shape = [d.dim_value if d.dim_value > 0 else 1 for d in tt.shape.dim]
        dt = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        if np.issubdtype(dt, np.integer):
            hi = 50 if "cat" in i.name else (2 if "mask" in i.name else 1000)
            feeds[i.name] = rng.integers(0, hi, size=shape).astype(dt)
            if "mask" in i.name:
                feeds[i.name][:] = 1
        else:
            feeds[i.name] = rng.standard_normal(shape).astype(dt)
    return feeds


if __name__ == "__main__":
    src, dst = sys.argv[1], sys.argv[2]
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    m = refill(src, dst, seed)
    import onnxruntime as ort
    rng = np.random.default_rng(seed + 1)
    feeds = inputs_for(m, rng)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(dst, so, providers=["CPUExecutionProvider"])
    base = dst[:-5] if dst.endswith(".onnx") else dst
    for k, name in enumerate(sorted(feeds, key=[i.name for i in m.graph.input].index)):
        np.save(f"{base}.input_{k}.npy", feeds[name])
    for k, out in enumerate(sess.run(None, feeds)):
        np.save(f"{base}.output_{k}.npy", out)
