#!/usr/bin/env python3
"""fe_models.py - writes the ONNX models that tests/unit/test_fe_onnx.c imports.

usage: fe_models.py OUT_DIR GROUP

Every model is built with onnx.helper. Expected values come from numpy or from ONNX's own
reference evaluator (onnx.reference), saved as .npy next to the model. The "ops" group
writes a manifest (ops.txt: "name n_inputs n_outputs" per line) of single-op models, each
with name.onnx, name.in<i>.npy and name.out<i>.npy.
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

D, GROUP = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(1234)


def f32(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def vi(name, arr_or_type, shape=None):
    if isinstance(arr_or_type, np.ndarray):
        return helper.make_tensor_value_info(
            name, helper.np_dtype_to_tensor_dtype(arr_or_type.dtype), arr_or_type.shape)
    return helper.make_tensor_value_info(name, arr_or_type, shape)


def model(nodes, inputs, outputs, inits=(), opset=17, name="g"):
    g = helper.make_graph(nodes, name, inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def save(m, name):
    onnx.save(m, os.path.join(D, name))


def npsave(name, arr):
    np.save(os.path.join(D, name), np.asarray(arr).copy(order="C"))  # keeps rank 0


def group_mlp():
    """x[2,4] -> MatMul -> Add -> Relu -> Gemm(transB) -> Softmax."""
    x, w1, b1, w2, b2 = f32(2, 4), f32(4, 8), f32(8), f32(3, 8), f32(3)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"], name="fc1"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="bias1"),
        helper.make_node("Relu", ["h1"], ["h2"], name="act"),
        helper.make_node("Gemm", ["h2", "w2", "b2"], ["h3"], name="fc2", transB=1),
        helper.make_node("Softmax", ["h3"], ["y"], name="sm", axis=-1),
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))]
    save(model(nodes, [vi("x", x)], [vi("y", TensorProto.FLOAT, [2, 3])], inits), "mlp.onnx")
    h = np.maximum(x @ w1 + b1, 0) @ w2.T + b2
    e = np.exp(h - h.max(-1, keepdims=True))
    npsave("mlp.in0.npy", x)
    npsave("mlp.out0.npy", (e / e.sum(-1, keepdims=True)).astype(np.float32))


def group_chain():
    """Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1])): flattens all but dim 0."""
    x = f32(2, 3, 4)
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "zero"], ["d0"], name="gather", axis=0),
        helper.make_node("Unsqueeze", ["d0", "axes0"], ["d0u"], name="unsq"),
        helper.make_node("Concat", ["d0u", "minus1"], ["target"], name="cat", axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"], name="reshape"),
    ]
    inits = [numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array([0], np.int64), "axes0"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus1")]
    save(model(nodes, [vi("x", x)], [vi("y", TensorProto.FLOAT, [2, 12])], inits), "chain.onnx")
    npsave("chain.in0.npy", x)
    npsave("chain.out0.npy", x.reshape(2, 12))


def group_unsupported():
    x = vi("x", TensorProto.FLOAT, [2, 2])
    nodes = [
        helper.make_node("Foo", ["x"], ["a"], name="n1"),
        helper.make_node("Relu", ["a"], ["b"], name="ok"),
        helper.make_node("Bar", ["b"], ["c"], name="n2"),
        helper.make_node("Bar", ["c"], ["d"], name="n3"),
        helper.make_node("FusedConv", ["d"], ["y"], name="n4", domain="com.microsoft"),
    ]
    m = model(nodes, [x], [vi("y", TensorProto.FLOAT, [2, 2])], opset=13)
    m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    save(m, "unsupported.onnx")
    # Importer-level refusal: LpPool with ceil_mode=1.
    nodes = [helper.make_node("LpPool", ["img"], ["y"], name="lpceil", kernel_shape=[2, 2], strides=[2, 2],
                              ceil_mode=1)]
    save(model(nodes, [vi("img", TensorProto.FLOAT, [1, 1, 5, 5])], [vi("y", TensorProto.FLOAT, None)],
               opset=22), "refused.onnx")
    # Data-dependent shape: the Reshape target is a graph input.
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"], name="dyn")]
    save(model(nodes, [x, vi("shape", TensorProto.INT64, [2])], [vi("y", TensorProto.FLOAT, None)]),
         "datadep.onnx")
    npsave("datadep.in0.npy", np.arange(4, dtype=np.float32).reshape(2, 2))
    npsave("datadep.out0.npy", np.arange(4, dtype=np.float32).reshape(4, 1))
    # An initializer of a dtype Kiln lacks.
    u = helper.make_tensor("u32", TensorProto.UINT32, [2], [1, 2])
    nodes = [helper.make_node("Identity", ["u32"], ["y"], name="id")]
    save(model(nodes, [], [vi("y", TensorProto.UINT32, [2])], [u]), "baddtype.onnx")


def group_arity():
    """Input/output counts against the op's schema at the model's opset, and opset bounds."""
    x = vi("x", TensorProto.FLOAT, [2, 3])
    y = vi("y", TensorProto.FLOAT, None)
    N = helper.make_node
    bad = {  # name: (nodes, opset)
        "add3": ([N("Add", ["x", "x", "x"], ["y"], name="n1")], 17),
        "add_trailing_empty": ([N("Add", ["x", ""], ["y"], name="n1")], 17),
        "add_first_empty": ([N("Add", ["", "x"], ["y"], name="n1")], 17),
        "relu_two_outputs": ([N("Relu", ["x"], ["y", "z"], name="n1")], 17),
        "topk_one_output": ([N("TopK", ["x", "k"], ["y"], name="n1")], 11),
        "clip_inputs_at_opset6": ([N("Clip", ["x", "lo"], ["y"], name="n1")], 6),
        "reshape_input_at_opset1": ([N("Reshape", ["x", "shp"], ["y"], name="n1")], 1),
    }
    inits = [numpy_helper.from_array(np.array([1], np.int64), "k"),
             numpy_helper.from_array(np.array(0, np.float32), "lo"),
             numpy_helper.from_array(np.array([3, 2], np.int64), "shp")]
    for name, (nodes, opset) in bad.items():
        save(model(nodes, [x], [y], inits, opset=opset), name + ".onnx")
    ok = {
        "clip_trailing_empty": ([N("Clip", ["x", "", ""], ["y"], name="n1")], 13),
        "clip_middle_empty": ([N("Clip", ["x", "", "hi"], ["y"], name="n1")], 13),
        "sum5": ([N("Sum", ["x", "x", "x", "x", "x"], ["y"], name="n1")], 13),
        "dropout_empty_mask": ([N("Dropout", ["x"], ["y", ""], name="n1")], 13),
        # Resize-11 documents an empty name for scales (and converters leave roi empty).
        "resize11_empty_scales": ([N("Resize", ["x", "", "", "sz"], ["y"], name="n1")], 11),
        # Gelu exists from opset 20; models declaring an older opset still import.
        "gelu_before_its_opset": ([N("Gelu", ["x"], ["y"], name="n1")], 17),
        "newest_opset": ([N("Relu", ["x"], ["y"], name="n1")], onnx.defs.onnx_opset_version()),
    }
    inits = [numpy_helper.from_array(np.array(0.5, np.float32), "hi"),
             numpy_helper.from_array(np.array([4, 6], np.int64), "sz")]
    for name, (nodes, opset) in ok.items():
        save(model(nodes, [x], [y], inits, opset=opset), name + ".onnx")
    for name, opset in (("opset99", 99), ("opset0", 0), ("opset_negative", -3)):
        save(model([N("Relu", ["x"], ["y"], name="n1")], [x], [y], opset=opset), name + ".onnx")


def group_external():
    """The weights live in w.bin; also models whose external paths leave the folder."""
    x, w = f32(2, 3), f32(3, 5)
    sub = os.path.join(D, "m")
    os.makedirs(sub, exist_ok=True)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")]
    m = model(nodes, [vi("x", x)], [vi("y", TensorProto.FLOAT, [2, 5])],
              [numpy_helper.from_array(w, "w")])
    onnx.save_model(m, os.path.join(sub, "ext.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="w.bin", size_threshold=0)
    npsave("m/ext.in0.npy", x)
    npsave("m/ext.out0.npy", x @ w)
    w.tofile(os.path.join(D, "outside.bin"))
    os.symlink(os.path.join(D, "outside.bin"), os.path.join(sub, "link.bin"))
    for fname, loc in (("escape.onnx", "../outside.bin"), ("absolute.onnx", os.path.join(D, "outside.bin")),
                       ("symlink.onnx", "link.bin")):
        t = onnx.TensorProto()
        t.name, t.data_type = "w", TensorProto.FLOAT
        t.dims.extend([3, 5])
        t.data_location = TensorProto.EXTERNAL
        e = t.external_data.add()
        e.key, e.value = "location", loc
        mm = model(nodes, [vi("x", x)], [vi("y", TensorProto.FLOAT, [2, 5])], [t])
        with open(os.path.join(sub, fname), "wb") as f:
            f.write(mm.SerializeToString())


def group_dims():
    """x[batch, 4] with batch a dim_param; z[?, 4] with an unknown dim."""
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="r")]
    save(model(nodes, [vi("x", TensorProto.FLOAT, ["batch", 4])], [vi("y", TensorProto.FLOAT, ["batch", 4])]),
         "dims.onnx")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])
    save(model(nodes, [x], [vi("y", TensorProto.FLOAT, None)]), "unknown_dim.onnx")
    t = numpy_helper.from_array(np.arange(6, dtype=np.int32).reshape(2, 3), "t")
    with open(os.path.join(D, "t.pb"), "wb") as f:
        f.write(t.SerializeToString())


def group_ops():
    from onnx.reference import ReferenceEvaluator

    manifest = []

    def case(name, nodes, inputs, n_out=1, inits=None, opset=17, expect=None):
        """expect: numpy results overriding the reference evaluator where it is wrong."""
        nodes = nodes if isinstance(nodes, list) else [nodes]
        inits = inits or {}
        outs = [vi(o, TensorProto.UNDEFINED, None) for o in nodes[-1].output[:n_out]]
        m = model(nodes, [vi(k, v) for k, v in inputs.items()], outs,
                  [numpy_helper.from_array(v, k) for k, v in inits.items()], opset=opset)
        res = expect if expect is not None else ReferenceEvaluator(m).run(None, inputs)
        save(m, name + ".onnx")
        for i, v in enumerate(inputs.values()):
            npsave(f"{name}.in{i}.npy", v)
        for i, r in enumerate(res):
            npsave(f"{name}.out{i}.npy", np.asarray(r))
        manifest.append(f"{name} {len(inputs)} {len(res)}")

    N = helper.make_node
    x234, pos = f32(2, 3, 4), np.abs(f32(2, 3, 4)) + 0.1
    img = f32(1, 2, 7, 7)
    for op in ("Abs", "Neg", "Exp", "Erf", "Sigmoid", "Tanh", "Relu", "Floor", "Ceil", "Round",
               "Sign", "Sin", "Cos", "Softsign", "Softplus", "HardSwish", "Elu", "Selu"):
        case(op.lower(), N(op, ["x"], ["y"]), {"x": x234})
    for op in ("Sqrt", "Log", "Reciprocal"):
        case(op.lower(), N(op, ["x"], ["y"]), {"x": pos})
    for op in ("Add", "Sub", "Mul", "Div", "Max", "Min"):
        case(op.lower() + "_bcast", N(op, ["x", "y"], ["z"]), {"x": x234, "y": f32(4)})
    case("pow", N("Pow", ["x", "y"], ["z"]), {"x": pos, "y": f32(3, 1)})
    for op in ("Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual"):
        case(op.lower(), N(op, ["x", "y"], ["z"]), {"x": np.round(x234), "y": np.round(f32(3, 4))})
    case("and_not", [N("Not", ["a"], ["na"]), N("And", ["na", "b"], ["z"])],
         {"a": rng.random((3, 4)) > 0.5, "b": rng.random((3, 4)) > 0.5})
    case("isnan", N("IsNaN", ["x"], ["y"]), {"x": np.array([1, np.nan, np.inf, 0], np.float32)})
    case("sum3", N("Sum", ["a", "b", "c"], ["z"]), {"a": f32(3, 4), "b": f32(4), "c": f32(1, 4)})
    case("mean3", N("Mean", ["a", "b", "c"], ["z"]), {"a": f32(3, 4), "b": f32(4), "c": f32(1, 4)})
    case("mod_fmod", N("Mod", ["a", "b"], ["z"], fmod=1), {"a": f32(3, 4) * 5, "b": pos[0]})
    case("mod_int", N("Mod", ["a", "b"], ["z"]),
         {"a": np.array([-7, 7, -3, 5], np.int64), "b": np.array([3, -3, 2, 5], np.int64)})
    case("leakyrelu", N("LeakyRelu", ["x"], ["y"], alpha=0.2), {"x": x234})
    case("prelu", N("PRelu", ["x", "s"], ["y"]), {"x": x234, "s": f32(3, 1)})
    case("hardsigmoid", N("HardSigmoid", ["x"], ["y"], alpha=0.3, beta=0.4), {"x": x234 * 3})
    case("clip13", N("Clip", ["x", "lo", "hi"], ["y"]), {"x": x234},
         inits={"lo": np.array(-0.5, np.float32), "hi": np.array(0.7, np.float32)})
    case("clip_min_only", N("Clip", ["x", "lo"], ["y"]), {"x": x234}, inits={"lo": np.array(0, np.float32)})
    case("clip6", N("Clip", ["x"], ["y"], min=-0.5, max=0.5), {"x": x234}, opset=6)
    case("softmax13", N("Softmax", ["x"], ["y"], axis=1), {"x": x234}, opset=13)
    # Before opset 13 Softmax views the input as 2-D [2, 12]; the reference evaluator
    # applies the opset-13 meaning, so the expected values are computed here.
    flat = x234.reshape(2, 12)
    e = np.exp(flat - flat.max(1, keepdims=True))
    case("softmax11", N("Softmax", ["x"], ["y"], axis=1), {"x": x234}, opset=11,
         expect=[(e / e.sum(1, keepdims=True)).reshape(2, 3, 4)])
    case("logsoftmax", N("LogSoftmax", ["x"], ["y"], axis=-1), {"x": x234})
    case("gelu", N("Gelu", ["x"], ["y"]), {"x": x234}, opset=20)
    case("gelu_tanh", N("Gelu", ["x"], ["y"], approximate="tanh"), {"x": x234}, opset=20)
    case("matmul_batched", N("MatMul", ["a", "b"], ["y"]), {"a": f32(2, 3, 4), "b": f32(4, 5)})
    case("matmul_vec", N("MatMul", ["a", "b"], ["y"]), {"a": f32(4), "b": f32(2, 4, 5)})
    case("gemm", N("Gemm", ["a", "b", "c"], ["y"], transA=1, alpha=0.5, beta=2.0),
         {"a": f32(4, 3), "b": f32(4, 5), "c": f32(5)})
    case("conv_pads_strides_bias", N("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2]),
         {"x": img, "w": f32(4, 2, 3, 3), "b": f32(4)})
    case("conv_groups_dilations", N("Conv", ["x", "w"], ["y"], group=2, dilations=[2, 2]),
         {"x": f32(1, 4, 7, 7), "w": f32(6, 2, 3, 3)})
    case("conv_same_upper", N("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", strides=[2, 2]),
         {"x": f32(1, 2, 6, 6), "w": f32(3, 2, 4, 4)})
    case("conv_same_lower", N("Conv", ["x", "w"], ["y"], auto_pad="SAME_LOWER"),
         {"x": f32(1, 2, 5, 5), "w": f32(3, 2, 2, 2)})
    # The reference evaluator ignores auto_pad=VALID for 1-D convolutions: numpy instead.
    cx, cw = f32(2, 3, 9), f32(2, 3, 3)
    cy = np.stack([np.einsum("nck,ock->no", cx[:, :, i:i + 3], cw) for i in range(7)], axis=-1)
    case("conv1d_valid", N("Conv", ["x", "w"], ["y"], auto_pad="VALID"), {"x": cx, "w": cw},
         expect=[cy.astype(np.float32)])
    case("batchnorm", N("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3),
         {"x": f32(2, 3, 4, 4)},
         inits={"s": f32(3), "b": f32(3), "m": f32(3), "v": np.abs(f32(3)) + 0.5})
    case("maxpool", N("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), {"x": img})
    case("maxpool_ceil", N("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1), {"x": img})
    case("avgpool_incl_pad", N("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                               count_include_pad=1), {"x": img})
    case("avgpool_excl_pad", N("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                               pads=[1, 1, 1, 1]), {"x": img})
    case("avgpool_ceil_incl", N("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                                ceil_mode=1, count_include_pad=1), {"x": f32(1, 2, 8, 8)}, opset=19)
    case("avgpool_ceil", N("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
         {"x": img})
    case("globalavgpool", N("GlobalAveragePool", ["x"], ["y"]), {"x": img})
    case("globalmaxpool", N("GlobalMaxPool", ["x"], ["y"]), {"x": img})
    case("flatten", N("Flatten", ["x"], ["y"], axis=2), {"x": x234})
    case("reshape_0_neg1", N("Reshape", ["x", "s"], ["y"]), {"x": x234}, inits={"s": np.array([0, -1], np.int64)})
    case("transpose", N("Transpose", ["x"], ["y"], perm=[2, 0, 1]), {"x": x234})
    case("transpose_default", N("Transpose", ["x"], ["y"]), {"x": x234})
    case("squeeze13", N("Squeeze", ["x", "a"], ["y"]), {"x": f32(2, 1, 3, 1)},
         inits={"a": np.array([-1], np.int64)})
    case("squeeze_all", N("Squeeze", ["x"], ["y"]), {"x": f32(2, 1, 3, 1)})
    case("unsqueeze13", N("Unsqueeze", ["x", "a"], ["y"]), {"x": f32(2, 3)},
         inits={"a": np.array([0, -1], np.int64)})
    case("unsqueeze11", N("Unsqueeze", ["x"], ["y"], axes=[1]), {"x": f32(2, 3)}, opset=11)
    case("concat", N("Concat", ["a", "b"], ["y"], axis=-1), {"a": f32(2, 3), "b": f32(2, 2)})
    case("slice_neg_step", N("Slice", ["x", "st", "en", "ax", "sp"], ["y"]), {"x": x234},
         inits={"st": np.array([-1, 2**62], np.int64), "en": np.array([-(2**63), 0], np.int64),
                "ax": np.array([2, 1], np.int64), "sp": np.array([-2, -1], np.int64)})
    case("slice_int_max", N("Slice", ["x", "st", "en"], ["y"]), {"x": x234},
         inits={"st": np.array([1, -3], np.int64), "en": np.array([2**63 - 1, 2**31 - 1], np.int64)})
    case("slice_empty", N("Slice", ["x", "st", "en", "ax"], ["y"]), {"x": x234},
         inits={"st": np.array([3], np.int64), "en": np.array([1], np.int64), "ax": np.array([2], np.int64)})
    case("slice9", N("Slice", ["x"], ["y"], starts=[0, 1], ends=[1, 1000], axes=[0, 2]), {"x": x234}, opset=9)
    case("gather_neg", N("Gather", ["x", "i"], ["y"], axis=1), {"x": x234},
         inits={"i": np.array([[0, -1], [2, 1]], np.int64)})
    case("gather_scalar", N("Gather", ["x", "i"], ["y"], axis=0), {"x": x234}, inits={"i": np.array(1, np.int64)})
    case("gather_elements", N("GatherElements", ["x", "i"], ["y"], axis=1), {"x": f32(3, 3)},
         inits={"i": np.array([[0, 2], [1, 0], [2, -1]], np.int64)})
    case("scatter_add", N("ScatterElements", ["x", "i", "u"], ["y"], axis=0, reduction="add"), {"x": f32(3, 3)},
         inits={"i": np.array([[1, 0, 2], [0, 2, 1]], np.int64), "u": f32(2, 3)}, opset=16)
    case("shape_start_end", N("Shape", ["x"], ["y"], start=1, end=-1), {"x": x234}, opset=15)
    case("size", N("Size", ["x"], ["y"]), {"x": x234})
    case("expand", N("Expand", ["x", "s"], ["y"]), {"x": f32(3, 1)}, inits={"s": np.array([2, 1, 4], np.int64)})
    case("where", N("Where", ["c", "a", "b"], ["y"]),
         {"c": rng.random((3, 4)) > 0.5, "a": f32(3, 4), "b": f32(4)})
    case("cast_int", N("Cast", ["x"], ["y"], to=TensorProto.INT32), {"x": x234 * 4})
    case("cast_bool", N("Cast", ["x"], ["y"], to=TensorProto.BOOL), {"x": np.round(x234)})
    case("pad13", N("Pad", ["x", "p", "v"], ["y"]), {"x": f32(2, 3)},
         inits={"p": np.array([1, 0, 0, 2], np.int64), "v": np.array(1.5, np.float32)}, opset=13)
    case("pad2", N("Pad", ["x"], ["y"], pads=[0, 1, 1, 0], value=-2.0), {"x": f32(2, 3)}, opset=2)
    case("pad18_axes", N("Pad", ["x", "p", "", "a"], ["y"]), {"x": f32(2, 3)},
         inits={"p": np.array([1, 2], np.int64), "a": np.array([-1], np.int64)}, opset=18)
    case("constant_of_shape", [N("Shape", ["x"], ["s"]), N("ConstantOfShape", ["s"], ["c"],
                               value=helper.make_tensor("v", TensorProto.INT64, [1], [7])),
                               N("Cast", ["c"], ["cf"], to=TensorProto.FLOAT), N("Add", ["x", "cf"], ["y"])],
         {"x": f32(2, 3)})
    case("constant", [N("Constant", [], ["c"], value_floats=[1.0, 2.0, 3.0]), N("Mul", ["x", "c"], ["y"])],
         {"x": f32(2, 3)})
    case("constant_tensor", [N("Constant", [], ["c"], value=numpy_helper.from_array(f32(2, 3))),
                             N("Sub", ["x", "c"], ["y"])], {"x": f32(2, 3)})
    case("identity", N("Identity", ["x"], ["y"]), {"x": x234})
    case("reduce_mean13", N("ReduceMean", ["x"], ["y"], axes=[0, 2], keepdims=0), {"x": x234}, opset=13)
    case("reduce_sum13", N("ReduceSum", ["x", "a"], ["y"]), {"x": x234}, inits={"a": np.array([1], np.int64)},
         opset=13)
    case("reduce_sum_all", N("ReduceSum", ["x"], ["y"], keepdims=0), {"x": x234}, opset=13)
    case("reduce_sum_noop", N("ReduceSum", ["x"], ["y"], noop_with_empty_axes=1), {"x": x234}, opset=13)
    case("reduce_max18", N("ReduceMax", ["x", "a"], ["y"]), {"x": x234}, inits={"a": np.array([-1], np.int64)},
         opset=18)
    case("reduce_min", N("ReduceMin", ["x"], ["y"], axes=[1]), {"x": x234}, opset=13)
    case("reduce_prod", N("ReduceProd", ["x"], ["y"], axes=[2]), {"x": x234}, opset=13)
    case("reduce_l2", N("ReduceL2", ["x"], ["y"], axes=[2]), {"x": x234}, opset=13)
    case("reduce_l1", N("ReduceL1", ["x"], ["y"], axes=[0]), {"x": x234}, opset=13)
    case("reduce_logsumexp", N("ReduceLogSumExp", ["x"], ["y"], axes=[1]), {"x": x234}, opset=13)
    case("argmax_last", N("ArgMax", ["x"], ["y"], axis=1, select_last_index=1),
         {"x": np.round(x234)}, opset=13)
    case("argmin", N("ArgMin", ["x"], ["y"], axis=-1, keepdims=0), {"x": x234}, opset=13)
    case("range_int", N("Range", ["a", "b", "c"], ["y"]), {"x": x234},
         inits={"a": np.array(10, np.int64), "b": np.array(1, np.int64), "c": np.array(-3, np.int64)})
    case("range_float", N("Range", ["a", "b", "c"], ["y"]), {"x": x234},
         inits={"a": np.array(0.5, np.float32), "b": np.array(3, np.float32), "c": np.array(0.75, np.float32)})
    case("tile", N("Tile", ["x", "r"], ["y"]), {"x": f32(2, 3)}, inits={"r": np.array([2, 3], np.int64)})
    case("topk", N("TopK", ["x", "k"], ["v", "i"], axis=1), {"x": f32(3, 5)},
         inits={"k": np.array([2], np.int64)}, n_out=2)
    case("topk_smallest", N("TopK", ["x", "k"], ["v", "i"], largest=0), {"x": f32(3, 5)},
         inits={"k": np.array([3], np.int64)}, n_out=2)
    case("split13", N("Split", ["x", "s"], ["a", "b"], axis=2), {"x": x234},
         inits={"s": np.array([1, 3], np.int64)}, n_out=2)
    case("split18", N("Split", ["x"], ["a", "b", "c"], axis=1, num_outputs=3), {"x": f32(2, 7)},
         n_out=3, opset=18)
    case("layernorm", N("LayerNormalization", ["x", "s", "b"], ["y"], axis=-1, epsilon=1e-5),
         {"x": x234}, inits={"s": f32(4), "b": f32(4)})
    case("instancenorm", N("InstanceNormalization", ["x", "s", "b"], ["y"]), {"x": img},
         inits={"s": f32(2), "b": f32(2)})
    case("depth_to_space", N("DepthToSpace", ["x"], ["y"], blocksize=2), {"x": f32(1, 8, 2, 3)})
    case("depth_to_space_crd", N("DepthToSpace", ["x"], ["y"], blocksize=2, mode="CRD"), {"x": f32(1, 8, 2, 3)})
    case("space_to_depth", N("SpaceToDepth", ["x"], ["y"], blocksize=2), {"x": f32(1, 2, 4, 6)})
    case("dropout", N("Dropout", ["x"], ["y"]), {"x": x234})
    case("isinf", N("IsInf", ["x"], ["y"], detect_negative=0),
         {"x": np.array([1, -np.inf, np.inf, np.nan], np.float32)})
    case("trilu_upper", N("Trilu", ["x", "k"], ["y"]), {"x": f32(2, 4, 5)}, inits={"k": np.array(1, np.int64)})
    case("trilu_lower", N("Trilu", ["x"], ["y"], upper=0), {"x": f32(4, 3)})
    case("eyelike", N("EyeLike", ["x"], ["y"], k=-1, dtype=TensorProto.FLOAT), {"x": f32(3, 4)})
    case("onehot", N("OneHot", ["i", "d", "v"], ["y"], axis=0), {"i": np.array([[1, -1], [0, 3]], np.int64)},
         inits={"d": np.array(4, np.int64), "v": np.array([0.5, 2.0], np.float32)})
    case("hardmax", N("Hardmax", ["x"], ["y"]), {"x": np.round(x234)})
    case("shrink", N("Shrink", ["x"], ["y"], lambd=0.6, bias=0.2), {"x": x234})
    # The reference evaluator sums x (not |x|) for p=1: positive inputs keep both meanings equal.
    case("lpnorm1", N("LpNormalization", ["x"], ["y"], axis=1, p=1), {"x": pos})
    case("lpnorm2", N("LpNormalization", ["x"], ["y"]), {"x": x234})
    case("rmsnorm", N("RMSNormalization", ["x", "s"], ["y"], axis=1), {"x": x234}, inits={"s": f32(3, 4)},
         opset=23)
    # Losses: weights, ignore_index (also on a target outside [0, C)), every reduction.
    tgt = np.array([[2, 0, 1], [1, 4, 2]], np.int64)  # 4 is ignored
    case("nll_weight_ignore", N("NegativeLogLikelihoodLoss", ["x", "t", "w"], ["y"], ignore_index=4),
         {"x": f32(2, 3, 3), "t": tgt}, inits={"w": np.abs(f32(3)) + 0.1}, opset=13)
    case("nll_sum", N("NegativeLogLikelihoodLoss", ["x", "t"], ["y"], reduction="sum"),
         {"x": f32(3, 5), "t": np.array([4, 0, 2], np.int64)}, opset=13)
    case("sce_none_logprob", N("SoftmaxCrossEntropyLoss", ["x", "t"], ["y", "lp"], reduction="none"),
         {"x": f32(2, 3, 3), "t": np.array([[2, 0, 1], [1, 1, 2]], np.int64)}, n_out=2, opset=13)
    # Attention: 3-D inputs with grouped query heads, causal mask, KV cache and qk output.
    case("attention_gqa_causal_past",
         N("Attention", ["q", "k", "v", "", "pk", "pv"], ["y", "ck", "cv", "qk"], q_num_heads=4,
           kv_num_heads=2, is_causal=1, qk_matmul_output_mode=2, softcap=2.0),
         {"q": f32(2, 3, 16), "k": f32(2, 3, 8), "v": f32(2, 3, 12), "pk": f32(2, 2, 2, 4),
          "pv": f32(2, 2, 2, 6)}, n_out=4, opset=23)
    case("attention_bool_mask", N("Attention", ["q", "k", "v", "m"], ["y"], scale=0.3),
         {"q": f32(1, 2, 3, 4), "k": f32(1, 2, 5, 4), "v": f32(1, 2, 5, 4),
          "m": np.array([[1, 1, 0, 1, 1], [0, 1, 1, 1, 1], [1, 1, 1, 1, 0]], bool)}, opset=23)
    # Resize: constant interpolation matrices per axis.
    case("resize_linear_half_pixel", N("Resize", ["x", "", "s"], ["y"], mode="linear"),
         {"x": f32(1, 2, 3, 4)}, inits={"s": np.array([1, 1, 1.5, 0.5], np.float32)}, opset=19)
    case("resize_cubic_sizes_align", N("Resize", ["x", "", "", "z"], ["y"], mode="cubic",
                                       coordinate_transformation_mode="align_corners"),
         {"x": f32(1, 1, 4, 4)}, inits={"z": np.array([1, 1, 6, 3], np.int64)}, opset=19)
    case("resize_nearest_axes", N("Resize", ["x", "", "s"], ["y"], axes=[3, 2], nearest_mode="ceil",
                                  coordinate_transformation_mode="asymmetric"),
         {"x": f32(1, 1, 2, 3)}, inits={"s": np.array([2.0, 1.5], np.float32)}, opset=19)
    case("convtranspose_stride_pads", N("ConvTranspose", ["x", "w", "b"], ["y"], strides=[2, 1],
                                        pads=[1, 0, 0, 1], output_padding=[1, 0], dilations=[1, 2]),
         {"x": f32(1, 2, 3, 4)}, inits={"w": f32(2, 3, 3, 2), "b": f32(3)})
    case("cumsum_reverse_exclusive", N("CumSum", ["x", "a"], ["y"], reverse=1, exclusive=1),
         {"x": x234}, inits={"a": np.array(1, np.int64)})
    case("cumprod_int", N("CumProd", ["x", "a"], ["y"]), {"x": np.array([[1, 2, 3], [4, -1, 2]], np.int32)},
         inits={"a": np.array(-1, np.int32)}, opset=26)
    case("lppool_pads", N("LpPool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2], p=3),
         {"x": img}, opset=22)
    # Indexing: GatherND with batch dims and negative indices, ScatterND with a reduction.
    case("gathernd_batch", N("GatherND", ["x", "i"], ["y"], batch_dims=1), {"x": x234},
         inits={"i": np.array([[[1, -1]], [[0, 2]]], np.int64)})
    case("gathernd_slices", N("GatherND", ["x", "i"], ["y"]), {"x": x234},
         inits={"i": np.array([[1], [0], [-1]], np.int64)})
    case("scatternd_add", N("ScatterND", ["x", "i", "u"], ["y"], reduction="add"), {"x": x234},
         inits={"i": np.array([[0, 2], [1, 0], [0, 2]], np.int64), "u": f32(3, 4)}, opset=18)
    # Values known at import time: Compress, NonZero, Unique, ReverseSequence lengths.
    case("compress_axis", N("Compress", ["x", "c"], ["y"], axis=1), {"x": x234},
         inits={"c": np.array([1, 0, 1], bool)})
    case("compress_flat", N("Compress", ["x", "c"], ["y"]), {"x": f32(2, 3)},
         inits={"c": np.array([0, 1, 1, 0, 1], bool)})
    case("nonzero", [N("NonZero", ["k"], ["nz"]), N("Cast", ["nz"], ["y"], to=TensorProto.FLOAT)],
         {"x": f32(1)}, inits={"k": np.array([[1, 0, 3], [0, 0, 2]], np.float32)})
    uq = np.array([[2, 1, 1], [3, 4, 2], [2, 1, 1], [0, 5, 1]], np.float32)
    case("unique_axis_sorted", [N("Identity", ["x"], ["unused"]),
                                N("Unique", ["k"], ["y", "i", "inv", "cnt"], axis=0)],
         {"x": f32(1)}, inits={"k": uq}, n_out=4, opset=11)
    case("unique_flat_unsorted", [N("Identity", ["x"], ["unused"]),
                                  N("Unique", ["k"], ["y", "i", "inv", "cnt"], sorted=0)],
         {"x": f32(1)}, inits={"k": np.array([3, 1, 2, 1, 3, 0], np.int64)}, n_out=4, opset=11)
    case("reverse_sequence", N("ReverseSequence", ["x", "l"], ["y"], batch_axis=0, time_axis=1),
         {"x": f32(3, 4, 2)}, inits={"l": np.array([4, 1, 2], np.int64)})
    # Pad modes and CenterCropPad (a pad on one axis, a crop on the other).
    for mode in ("edge", "reflect", "wrap"):
        case("pad_" + mode, N("Pad", ["x", "p"], ["y"], mode=mode), {"x": f32(3, 4)},
             inits={"p": np.array([2, 0, 1, 3], np.int64)}, opset=19)
    case("center_crop_pad", N("CenterCropPad", ["x", "s"], ["y"], axes=[1, 2]), {"x": x234},
         inits={"s": np.array([6, 1], np.int64)}, opset=18)
    # Quantization: per-axis int8, blocked uint8, per-tensor dequantize and the dynamic form.
    case("quantize_axis", N("QuantizeLinear", ["x", "s", "z"], ["y"], axis=1), {"x": x234 * 100},
         inits={"s": np.array([0.5, 1.0, 2.0], np.float32), "z": np.array([0, 5, -3], np.int8)}, opset=21)
    case("quantize_blocked", N("QuantizeLinear", ["x", "s", "z"], ["y"], axis=2, block_size=3),
         {"x": x234 * 50}, inits={"s": np.abs(f32(2, 3, 2)) + 0.2, "z": np.full((2, 3, 2), 128, np.uint8)},
         opset=21)
    case("dequantize", N("DequantizeLinear", ["x", "s", "z"], ["y"]),
         {"x": np.array([[0, 3, 128], [255, 7, 9]], np.uint8)},
         inits={"s": np.array(0.25, np.float32), "z": np.array(3, np.uint8)}, opset=21)
    case("dynamic_quantize", N("DynamicQuantizeLinear", ["x"], ["y", "s", "z"]), {"x": x234}, n_out=3, opset=11)
    # Einsum: diagonal with an ellipsis, contraction, implicit output, three operands.
    case("einsum_diag", N("Einsum", ["x"], ["y"], equation="...ii->...i"), {"x": f32(2, 3, 3)}, opset=12)
    case("einsum_bmm_t", N("Einsum", ["a", "b"], ["y"], equation="bij,bkj->bki"),
         {"a": f32(2, 3, 4), "b": f32(2, 5, 4)}, opset=12)
    case("einsum_implicit", N("Einsum", ["a", "b"], ["y"], equation="ij,jk"), {"a": f32(3, 4), "b": f32(4, 2)},
         opset=12)
    case("einsum_three", N("Einsum", ["a", "b", "d"], ["y"], equation="ij,jk,k->i"),
         {"a": f32(3, 4), "b": f32(4, 2), "d": f32(2)}, opset=12)
    # Normalizations.
    case("group_norm", N("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=2, epsilon=1e-3),
         {"x": f32(2, 4, 3, 2)}, inits={"s": f32(4), "b": f32(4)}, opset=21)
    # The reference evaluator's LRN walks the batch dim instead of the channels: numpy instead.
    lx = f32(2, 5, 3, 3)
    lsq = np.stack([(lx[:, max(0, ch - 1):ch + 2] ** 2).sum(1) for ch in range(5)], axis=1)
    case("lrn", N("LRN", ["x"], ["y"], size=3, alpha=0.01, beta=0.6, bias=1.5), {"x": lx},
         expect=[(lx / (1.5 + 0.01 / 3 * lsq) ** 0.6).astype(np.float32)])
    case("mvn", N("MeanVarianceNormalization", ["x"], ["y"]), {"x": f32(2, 3, 4, 2)})
    # RotaryEmbedding: 3-D input with position ids, interleaved, partial rotation.
    case("rotary_interleaved_partial",
         N("RotaryEmbedding", ["x", "c", "s", "p"], ["y"], interleaved=1, num_heads=2, rotary_embedding_dim=4),
         {"x": f32(2, 3, 12), "p": np.array([[0, 1, 2], [4, 3, 0]], np.int64)},
         inits={"c": f32(5, 2), "s": f32(5, 2)}, opset=23)
    case("rotary_4d", N("RotaryEmbedding", ["x", "c", "s"], ["y"]), {"x": f32(2, 2, 3, 4)},
         inits={"c": f32(2, 3, 2), "s": f32(2, 3, 2)}, opset=23)
    # Col2Im with strides, pads and dilations; inverse hyperbolics.
    case("col2im", N("Col2Im", ["x", "i", "k"], ["y"], strides=[2, 1], pads=[1, 0, 0, 1], dilations=[1, 2]),
         {"x": f32(1, 8, 9)}, inits={"i": np.array([5, 4], np.int64), "k": np.array([2, 2], np.int64)}, opset=18)
    case("asinh", N("Asinh", ["x"], ["y"]), {"x": x234 * 3})
    case("acosh", N("Acosh", ["x"], ["y"]), {"x": pos + 1})
    case("atanh", N("Atanh", ["x"], ["y"]), {"x": np.tanh(x234)})
    case("atan", N("Atan", ["x"], ["y"]), {"x": x234 * 3})
    trig = np.array([-1, -0.999, -0.5, 0, 0.3, 0.9999, 1], np.float32)
    case("asin", N("Asin", ["x"], ["y"]), {"x": trig})
    case("acos", N("Acos", ["x"], ["y"]), {"x": trig})
    # Bitwise ops on integers (and/or/xor/not are bitwise primitives), BitShift on uint8.
    bi = np.array([[12, -7, 0, 127], [5, -128, 33, -1]], np.int8)
    case("bitwise_and_bcast", N("BitwiseAnd", ["a", "b"], ["z"]),
         {"a": bi.astype(np.int32) * 1000, "b": np.array([255, -4, 7, 1 << 20], np.int32)}, opset=18)
    case("bitwise_or_i8", N("BitwiseOr", ["a", "b"], ["z"]), {"a": bi, "b": bi[::-1].copy()}, opset=18)
    case("bitwise_xor_i64", N("BitwiseXor", ["a", "b"], ["z"]),
         {"a": bi.astype(np.int64) << 40, "b": np.array(-(1 << 41), np.int64)}, opset=18)
    case("bitwise_not_u8", N("BitwiseNot", ["a"], ["z"]), {"a": np.array([0, 1, 200, 255], np.uint8)}, opset=18)
    sh_x, sh_y = np.array([1, 3, 255, 200, 7], np.uint8), np.array([0, 2, 1, 7, 9], np.uint8)
    for d in ("LEFT", "RIGHT"):
        case("bitshift_" + d.lower(), N("BitShift", ["x", "y"], ["z"], direction=d), {"x": sh_x, "y": sh_y}, opset=11,
             expect=[((sh_x.astype(np.int64) << sh_y) if d == "LEFT" else (sh_x.astype(np.int64) >> sh_y)).astype(np.uint8)])
    # Integer contractions: i32 accumulation and requantization (round half to even, saturate).
    qa, qb = rng.integers(0, 256, (3, 5)).astype(np.uint8), rng.integers(-128, 128, (2, 5, 4)).astype(np.int8)
    case("matmul_integer", N("MatMulInteger", ["a", "b", "za", "zb"], ["y"]),
         {"a": qa, "b": rng.integers(0, 256, (5, 4)).astype(np.uint8)},
         inits={"za": np.array(12, np.uint8), "zb": np.array([3, 0, 250, 128], np.uint8)}, opset=10)
    case("qlinear_matmul_3d", N("QLinearMatMul", ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"], ["y"]),
         {"a": qa, "b": qb},
         inits={"sa": np.array(0.02, np.float32), "za": np.array(100, np.uint8), "sb": np.array(0.01, np.float32),
                "zb": np.array(-3, np.int8), "sy": np.array(0.05, np.float32), "zy": np.array(110, np.uint8)},
         opset=21)
    cx, cw = rng.integers(0, 256, (1, 2, 5, 5)).astype(np.uint8), rng.integers(0, 256, (3, 2, 2, 2)).astype(np.uint8)
    case("conv_integer", N("ConvInteger", ["x", "w", "zx", "zw"], ["y"], pads=[1, 0, 0, 1], strides=[2, 1]),
         {"x": cx, "w": cw}, inits={"zx": np.array(7, np.uint8), "zw": np.array([1, 128, 255], np.uint8)}, opset=10)
    case("qlinear_conv_bias", N("QLinearConv", ["x", "sx", "zx", "w", "sw", "zw", "sy", "zy", "bias"], ["y"],
                                pads=[1, 1, 1, 1]),
         {"x": cx, "w": rng.integers(-128, 128, (3, 2, 3, 3)).astype(np.int8)},
         inits={"sx": np.array(0.03, np.float32), "zx": np.array(120, np.uint8),
                "sw": np.array([0.01, 0.02, 0.005], np.float32), "zw": np.array([0, 0, 0], np.int8),
                "sy": np.array(0.4, np.float32), "zy": np.array(-5, np.int8),
                "bias": np.array([100, -2000, 30], np.int32)}, opset=10)
    # GridSample (index arithmetic and gathers) and AffineGrid.
    gx, gg = f32(2, 3, 4, 5), rng.uniform(-1.3, 1.3, (2, 3, 2, 2)).astype(np.float32)
    case("grid_sample_linear_zeros", N("GridSample", ["x", "g"], ["y"]), {"x": gx, "g": gg}, opset=20)
    case("grid_sample_cubic_reflection_align",
         N("GridSample", ["x", "g"], ["y"], mode="cubic", padding_mode="reflection", align_corners=1),
         {"x": gx, "g": gg * 1.5}, opset=20)
    case("grid_sample_nearest_border_3d", N("GridSample", ["x", "g"], ["y"], mode="nearest", padding_mode="border"),
         {"x": f32(1, 2, 3, 4, 2), "g": rng.uniform(-1.4, 1.4, (1, 2, 3, 2, 3)).astype(np.float32)}, opset=20)
    case("affine_grid_align", N("AffineGrid", ["t", "s"], ["y"], align_corners=1), {"t": f32(2, 2, 3)},
         inits={"s": np.array([2, 3, 4, 5], np.int64)}, opset=20)
    # Values known at import time: NonMaxSuppression and the window functions.
    nb = np.array([[[0, 0, 1, 1], [0, 0.1, 1, 1.1], [0, -0.1, 1, 0.9], [0, 10, 1, 11], [0, 10.1, 1, 11.1],
                    [0, 100, 1, 101]]], np.float32)
    case("nms", [N("Identity", ["x"], ["unused"]), N("NonMaxSuppression", ["b", "s", "m", "iou", "th"], ["y"])],
         {"x": f32(1)}, inits={"b": nb, "s": np.array([[[0.9, 0.75, 0.6, 0.95, 0.5, 0.3], [0.1, 0.9, 0.9, 0.2, 0.8, 0.7]]],
                                                       np.float32),
                               "m": np.array([2], np.int64), "iou": np.array([0.5], np.float32),
                               "th": np.array([0.25], np.float32)}, opset=11)
    case("hann_window_symmetric", [N("Identity", ["x"], ["unused"]),
                                   N("HannWindow", ["n"], ["y"], periodic=0, output_datatype=TensorProto.DOUBLE)],
         {"x": f32(1)}, inits={"n": np.array(7, np.int64)}, opset=17)
    case("blackman_window", [N("Identity", ["x"], ["unused"]), N("BlackmanWindow", ["n"], ["y"])],
         {"x": f32(1)}, inits={"n": np.array(6, np.int32)}, opset=17)
    case("batch_norm_training", N("BatchNormalization", ["x", "s", "b", "m", "v"], ["y", "rm", "rv"],
                                  training_mode=1, momentum=0.8, epsilon=1e-3),
         {"x": f32(2, 3, 4, 2)}, inits={"s": f32(3), "b": f32(3), "m": f32(3), "v": np.abs(f32(3)) + 0.5},
         n_out=3, opset=15)
    case("max_unpool_shape", N("MaxUnpool", ["x", "i", "s"], ["y"], kernel_shape=[2, 2], strides=[2, 2]),
         {"x": f32(1, 2, 2, 2), "i": np.array([[[[0, 3], [9, 14]], [[17, 18], [28, 31]]]], np.int64)},
         inits={"s": np.array([1, 2, 5, 4], np.int64)}, opset=11)
    with open(os.path.join(D, "ops.txt"), "w") as f:
        f.write("\n".join(manifest) + "\n")


globals()["group_" + GROUP]()
