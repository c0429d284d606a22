#!/usr/bin/env python3
"""compare_ort.py BUILDDIR MODEL.onnx... - median time per run of Kiln (kiln bench, JIT,
full fusion) and ONNX Runtime (CPU, all optimizations, same thread count) on the same
machine in the same run, and their ratio. Run it with OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE unset (they halve OpenBLAS's speed here):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE bench/compare_ort.py build build/models/*.onnx
"""
import json
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort

THREADS = 2
RUNS = 30


def ort_median(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
        if "int" in i.type:
            feeds[i.name] = rng.integers(0, 4, shape).astype(np.int64)
        else:
            feeds[i.name] = rng.uniform(-1, 1, shape).astype(np.float32)
    for _ in range(3):
        sess.run(None, feeds)
    t = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        t.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(t))


def kiln_median(build, path):
    out = subprocess.run([f"{build}/kiln", "bench", path, "--runs", str(RUNS), "--threads",
                          str(THREADS), "--json"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main():
    build, models = sys.argv[1], sys.argv[2:]
    print(f"{'model':<24}{'kernels':>8}{'kiln ms':>10}{'ort ms':>10}{'ort/kiln':>10}")
    for m in models:
        k = kiln_median(build, m)
        o = ort_median(m)
        name = m.rsplit("/", 1)[-1]
        print(f"{name:<24}{k['kernels']:>8}{k['median_ms']:>10.3f}{o:>10.3f}{o / k['median_ms']:>10.2f}")


if __name__ == "__main__":
    main()
