"""The example models and the PyTorch exports through the package (kiln.compile on the
.onnx file, the model called on numpy arrays), against onnxruntime's outputs: the stored
ones (the models' generators run onnxruntime) and, for the small example models, a live
onnxruntime session on fresh random inputs."""
import numpy as np
import onnxruntime as ort
import pytest

import kiln
from conftest import EXAMPLE_MODELS, TORCH_MODELS, assert_close_to_reference, model_io


def _check(path, inputs, refs):
    m = kiln.compile(path)
    assert [i.shape for i in m.inputs] == [x.shape for x in inputs]
    outs = m(*inputs)
    outs = list(outs) if isinstance(outs, tuple) else [outs]
    assert len(outs) == len(refs) == len(m.outputs)
    for k, (got, want) in enumerate(zip(outs, refs)):
        assert_close_to_reference(got, want, f"{path} output {k}")
    return m


@pytest.mark.parametrize("name", EXAMPLE_MODELS)
def test_example_model_matches_onnxruntime(example_models, name):
    path, inputs, refs = model_io(example_models, name)
    m = _check(path, inputs, refs)
    # fresh inputs through a live onnxruntime session (optimizations off, as the generator)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    xs = m.random_inputs(seed=7)
    want = sess.run(None, {i.name: x for i, x in zip(m.inputs, xs)})
    got = m.run(xs)
    for k, (g, w) in enumerate(zip(got, want)):
        assert_close_to_reference(g, w, f"{name} output {k} on random inputs")


@pytest.mark.parametrize("name", TORCH_MODELS)
def test_torch_export_matches_onnxruntime(torch_models, name):
    path, inputs, refs = model_io(torch_models, name)
    assert inputs and refs, f"{path}: no inputs or reference outputs beside it"
    _check(path, inputs, refs)
