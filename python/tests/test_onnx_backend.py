"""ONNX's own backend test runner (onnx.backend.test.BackendTest) on kiln.backend.

KILN_ONNX_BACKEND=all collects every case of onnx 1.22.0's runner (node, real, simple,
pytorch-converted and pytorch-operator models: `make conformance-py`); by default (as in
`make test`) only SMOKE, a few cases that exercise each path of the backend: plain
models, symbolic dims, frozen inputs, several outputs, integer and bool tensors, and a
model that Kiln cannot represent (skipped through is_compatible).

The _cuda variants are collected only where kiln.backend supports CUDA (a GPU and its
driver); elsewhere they are left out and the run says so, rather than counting each as a
skip. KILN_BACKEND_THREADS (default 1, like the C runner) sets the compiled code's threads.
"""
import os
import unittest

import onnx.backend.test

import kiln.backend
from conftest import NOTES

kiln.backend.DEFAULT_OPTIONS["threads"] = int(os.environ.get("KILN_BACKEND_THREADS", "1"))

SMOKE = {
    "test_relu", "test_add_bcast", "test_matmul_2d", "test_softmax_axis_1", "test_gemm_default_matrix_bias",
    "test_conv_with_strides_padding", "test_reshape_reordered_all_dims",  # frozen input: shape
    "test_reduce_sum_keepdims_random",  # frozen input: axes
    "test_top_k",  # frozen K; two outputs (values, int64 indices)
    "test_equal_bcast", "test_where_example", "test_cast_FLOAT_to_DOUBLE", "test_argmax_default_axis_example",
    "test_expand_shape_model1",  # a "simple" model test
    "test_strnorm_model_nostopwords_nochangecase",  # string tensors: not representable, skipped
    "test_operator_exp", "test_PReLU_2d",  # pytorch-operator, pytorch-converted
    "test_layer_normalization_2d_axis0", "test_gelu_default_1",
}

MODE = os.environ.get("KILN_ONNX_BACKEND", "smoke")
CUDA = kiln.backend.supports_device("CUDA")



class ReasonedBackend(kiln.backend.KilnBackend):
    """kiln.backend, with the reason of each incompatible model in the skip message
    (onnx's runner says only "Not compatible with backend")."""

    @classmethod
    def is_compatible(cls, model, device="CPU", **kwargs):
        reason = kiln.backend.unsupported_reason(model)
        if reason:
            raise unittest.SkipTest(f"Kiln cannot represent this model's values: {reason}")
        return super().is_compatible(model, device, **kwargs)


backend_test = onnx.backend.test.BackendTest(ReasonedBackend, __name__)
_cases = backend_test.test_cases
_left_out_cuda = 0
for _cls in _cases.values():
    for _name in [n for n in vars(_cls) if n.startswith("test_")]:
        base, _, device = _name.rpartition("_")
        if device == "cuda" and not CUDA:
            delattr(_cls, _name)
            _left_out_cuda += 1
        elif MODE != "all" and base not in SMOKE:
            delattr(_cls, _name)
if _left_out_cuda:
    NOTES.append(f"onnx backend: {_left_out_cuda} _cuda variants not collected (no CUDA device for kiln.backend)")
if MODE != "all":
    NOTES.append(f"onnx backend: {len(SMOKE)} smoke cases only (KILN_ONNX_BACKEND=all or `make conformance-py` runs every case)")
del _cls  # a TestCase class bound at module level would be collected twice
globals().update(_cases)
