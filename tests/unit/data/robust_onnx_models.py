# robust_onnx_models.py - models for tests/unit/test_robust_onnx.c: a few small valid models
# (base_*: byte-level mutation seeds; they must load, compile and run) and structured
# mutations (s_*), each a model that is invalid in one specific way (wrong input counts,
# undefined or cyclic references, duplicate names, initializer sizes that disagree with
# dims, negative/huge dims, rank 9, wrongly typed attributes, empty graphs, odd opsets,
# unknown domains, ...). manifest.txt lists "<name> <expect>": ok (must load, compile and
# run), err (must be refused by kiln_load_onnx or kiln_compile, with a message), any (may
# go either way, but never crash).
#
#   python3 robust_onnx_models.py OUTDIR
import sys, os
import numpy as np
import onnx
from onnx import helper as h, TensorProto as T, numpy_helper as nh

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
manifest = []

def vi(name, dt, shape):
    return h.make_tensor_value_info(name, dt, shape)

def save(name, nodes, inputs, outputs, inits=(), opset=17, expect="any", domain_opsets=(), raw=None):
    g = h.make_graph(nodes, name, inputs, outputs, list(inits))
    ops = [h.make_opsetid("", opset)] + [h.make_opsetid(d, v) for d, v in domain_opsets]
    m = h.make_model(g, opset_imports=ops, producer_name="kiln-robust")
    m.ir_version = 8
    if raw: raw(m)
    with open(os.path.join(out, name + ".onnx"), "wb") as f:
        f.write(m.SerializeToString())
    manifest.append((name, expect))

def mk(name, dt, dims, **fields):
    t = T(); t.name = name; t.data_type = dt; t.dims.extend(dims)
    for k, v in fields.items(): getattr(t, k).extend(v)
    return t

def init(name, arr):
    return nh.from_array(np.asarray(arr), name)

rng = np.random.default_rng(0)
F = T.FLOAT
# ---------------------------------------------------------------- valid base models
save("base_add_relu", [h.make_node("Add", ["x", "w"], ["s"]), h.make_node("Relu", ["s"], ["y"])],
     [vi("x", F, [2, 3])], [vi("y", F, [2, 3])], [init("w", rng.standard_normal((2, 3)).astype(np.float32))], expect="ok")
save("base_gemm_softmax",
     [h.make_node("Gemm", ["x", "w", "b"], ["g"], transB=1), h.make_node("Softmax", ["g"], ["y"], axis=-1)],
     [vi("x", F, [1, 4])], [vi("y", F, [1, 3])],
     [init("w", rng.standard_normal((3, 4)).astype(np.float32)), init("b", rng.standard_normal(3).astype(np.float32))], expect="ok")
save("base_conv_pool",
     [h.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), h.make_node("MaxPool", ["c"], ["y"], kernel_shape=[2, 2], strides=[2, 2])],
     [vi("x", F, [1, 1, 4, 4])], [vi("y", F, [1, 2, 2, 2])], [init("w", rng.standard_normal((2, 1, 3, 3)).astype(np.float32))], expect="ok")
save("base_shape_ops",
     [h.make_node("Reshape", ["x", "shp"], ["r"]), h.make_node("Transpose", ["r"], ["t"], perm=[1, 0]),
      h.make_node("ReduceSum", ["t", "ax"], ["s"], keepdims=1), h.make_node("Concat", ["s", "s"], ["y"], axis=0)],
     [vi("x", F, [2, 3])], [vi("y", F, [2, 2])],
     [init("shp", np.array([3, 2], np.int64)), init("ax", np.array([0], np.int64))], expect="ok")
save("base_gather_slice",
     [h.make_node("Gather", ["x", "idx"], ["g"], axis=1), h.make_node("Slice", ["g", "st", "en", "axs"], ["y"])],
     [vi("x", F, [3, 4])], [vi("y", F, [2, 2])],
     [init("idx", np.array([3, 0], np.int64)), init("st", np.array([1], np.int64)), init("en", np.array([3], np.int64)),
      init("axs", np.array([0], np.int64))], expect="ok")
# typed (non-raw) data fields and an int input
save("base_typed_data",
     [h.make_node("Cast", ["i"], ["f"], to=F), h.make_node("Mul", ["f", "w"], ["m"]), h.make_node("Where", ["c", "m", "f"], ["y"])],
     [vi("i", T.INT32, [4]), vi("c", T.BOOL, [4])], [vi("y", F, [4])],
     [h.make_tensor("w", F, [4], [1.0, 2.0, 3.0, 4.0])], expect="ok")

# ---------------------------------------------------------------- structured mutations
X = [vi("x", F, [2, 3])]
Y = [vi("y", F, [2, 3])]
E = "err"
save("s_add_one_input", [h.make_node("Add", ["x"], ["y"])], X, Y, expect=E)
save("s_add_three_inputs", [h.make_node("Add", ["x", "x", "x"], ["y"])], X, Y, expect=E)
save("s_add_trailing_empty", [h.make_node("Add", ["x", ""], ["y"])], X, Y, expect=E)
save("s_add_first_empty", [h.make_node("Add", ["", "x"], ["y"])], X, Y, expect=E)
save("s_relu_two_outputs", [h.make_node("Relu", ["x"], ["y", "z"])], X, Y, expect=E)
save("s_relu_empty_output", [h.make_node("Relu", ["x"], [""])], X, Y, expect=E)
save("s_gemm_two_inputs_opset9", [h.make_node("Gemm", ["x", "w"], ["y"])], X, Y, [init("w", np.ones((3, 3), np.float32))], opset=9, expect=E)
save("s_clip_trailing_empty", [h.make_node("Clip", ["x", "", ""], ["y"])], X, Y, expect="ok")
save("s_clip_middle_empty", [h.make_node("Clip", ["x", "", "hi"], ["y"])], X, Y, [init("hi", np.array(0.5, np.float32))], expect="ok")
save("s_relu_no_inputs", [h.make_node("Relu", [], ["y"])], X, Y, expect=E)
save("s_relu_missing_input", [h.make_node("Relu", [""], ["y"])], X, Y, expect=E)
save("s_undefined_ref", [h.make_node("Relu", ["nope"], ["y"])], X, Y, expect=E)
save("s_cycle", [h.make_node("Add", ["x", "b"], ["a"]), h.make_node("Relu", ["a"], ["b"]), h.make_node("Relu", ["b"], ["y"])], X, Y, expect=E)
save("s_self_loop", [h.make_node("Add", ["x", "y"], ["y"])], X, Y, expect=E)
save("s_dup_node_output", [h.make_node("Relu", ["x"], ["y"]), h.make_node("Neg", ["x"], ["y"])], X, Y, expect=E)
save("s_output_shadows_input", [h.make_node("Neg", ["x"], ["x"]), h.make_node("Relu", ["x"], ["y"])], X, Y, expect=E)
save("s_dup_initializer", [h.make_node("Add", ["x", "w"], ["y"])], X, Y,
     [init("w", np.ones((2, 3), np.float32)), init("w", np.zeros((2, 3), np.float32))], expect=E)
save("s_dup_graph_output", [h.make_node("Relu", ["x"], ["y"])], X, Y + Y)
save("s_dup_graph_input", [h.make_node("Relu", ["x"], ["y"])], X + X, Y, expect=E)
def bad_raw(m): m.graph.initializer[0].raw_data = b"\0" * 20
save("s_init_raw_size", [h.make_node("Add", ["x", "w"], ["y"])], X, Y, [init("w", np.ones((2, 3), np.float32))], expect=E, raw=bad_raw)
save("s_init_typed_size", [h.make_node("Add", ["x", "w"], ["y"])], X, Y, [mk("w", F, [2, 3], float_data=[1.0] * 5)], expect=E)
def neg_dim(m): m.graph.initializer[0].dims[0] = -2
save("s_init_negative_dim", [h.make_node("Add", ["x", "w"], ["y"])], X, Y, [init("w", np.ones((2, 3), np.float32))], expect=E, raw=neg_dim)
save("s_input_negative_dim", [h.make_node("Relu", ["x"], ["y"])], [vi("x", F, [2, -3])], Y, expect=E)
save("s_input_rank9", [h.make_node("Relu", ["x"], ["y"])], [vi("x", F, [1] * 9)], [vi("y", F, [1] * 9)], expect=E)
def rank9(m):
    t = m.graph.initializer[0]; del t.dims[:]; t.dims.extend([1] * 9)
save("s_init_rank9", [h.make_node("Relu", ["w"], ["y"])], [], Y, [init("w", np.ones(1, np.float32))], expect=E, raw=rank9)
save("s_input_huge", [h.make_node("Relu", ["x"], ["y"])], [vi("x", F, [1000000, 1000000])], [vi("y", F, [1000000, 1000000])], expect=E)
save("s_input_huge_u8", [h.make_node("Not", ["x"], ["y"])], [vi("x", T.BOOL, [1000000, 1000000])], [vi("y", T.BOOL, [1000000, 1000000])], expect=E)
save("s_input_overflow", [h.make_node("Relu", ["x"], ["y"])], [vi("x", F, [10**10, 10**10, 10**10])], [vi("y", F, None)], expect=E)
def huge_init(m):
    t = m.graph.initializer[0]; del t.dims[:]; t.dims.extend([1000000, 1000000])
save("s_init_huge", [h.make_node("Add", ["x", "w"], ["y"])], X, Y, [init("w", np.ones((2, 3), np.float32))], expect=E, raw=huge_init)
save("s_constantofshape_huge", [h.make_node("ConstantOfShape", ["shp"], ["c"]), h.make_node("Add", ["x", "c"], ["y"])], X, Y,
     [init("shp", np.array([1000000, 1000000], np.int64))], expect=E)
save("s_expand_huge", [h.make_node("Expand", ["x", "shp"], ["y"])], X, Y,
     [init("shp", np.array([1000000, 1000000, 1], np.int64))], expect=E)
save("s_reshape_huge", [h.make_node("Reshape", ["x", "shp"], ["y"])], X, Y,
     [init("shp", np.array([1 << 62, 4, 0], np.int64))], expect=E)
save("s_range_huge", [h.make_node("Range", ["a", "b", "c"], ["r"]), h.make_node("Relu", ["x"], ["y"])], X, Y,
     [init("a", np.array(0, np.int64)), init("b", np.array(1 << 50, np.int64)), init("c", np.array(1, np.int64))])
save("s_tile_huge", [h.make_node("Tile", ["x", "rep"], ["y"])], X, Y, [init("rep", np.array([1 << 20, 1 << 20], np.int64))], expect=E)
save("s_attr_float_for_int", [h.make_node("Softmax", ["x"], ["y"], axis=1.5)], X, Y, expect=E)
save("s_attr_string_for_ints", [h.make_node("Transpose", ["x"], ["y"], perm="ab")], X, [vi("y", F, [3, 2])], expect=E)
save("s_attr_ints_for_int", [h.make_node("Concat", ["x", "x"], ["y"], axis=[0, 1])], X, [vi("y", F, [4, 3])], expect=E)
def attr_mismatch(m):
    a = m.graph.node[0].attribute[0]; a.type = onnx.AttributeProto.FLOAT
save("s_attr_type_field_mismatch", [h.make_node("Softmax", ["x"], ["y"], axis=1)], X, Y, expect=E, raw=attr_mismatch)
save("s_transpose_bad_perm", [h.make_node("Transpose", ["x"], ["y"], perm=[0, 0])], X, Y, expect=E)
save("s_transpose_perm_range", [h.make_node("Transpose", ["x"], ["y"], perm=[5, 0])], X, Y, expect=E)
save("s_concat_axis_range", [h.make_node("Concat", ["x", "x"], ["y"], axis=7)], X, Y, expect=E)
save("s_softmax_axis_range", [h.make_node("Softmax", ["x"], ["y"], axis=-9)], X, Y, expect=E)
save("s_reshape_numel", [h.make_node("Reshape", ["x", "shp"], ["y"])], X, Y, [init("shp", np.array([4, 2], np.int64))], expect=E)
save("s_reshape_neg", [h.make_node("Reshape", ["x", "shp"], ["y"])], X, Y, [init("shp", np.array([-1, -1], np.int64))], expect=E)
save("s_matmul_mismatch", [h.make_node("MatMul", ["x", "x"], ["y"])], X, Y, expect=E)
save("s_gemm_rank3", [h.make_node("Gemm", ["x", "w"], ["y"])], [vi("x", F, [2, 3, 4])], Y, [init("w", np.ones((4, 3), np.float32))], expect=E)
save("s_conv_bad_weight", [h.make_node("Conv", ["x", "w"], ["y"])], [vi("x", F, [1, 1, 4, 4])], Y, [init("w", np.ones((2, 3), np.float32))], expect=E)
save("s_conv_channels", [h.make_node("Conv", ["x", "w"], ["y"])], [vi("x", F, [1, 2, 4, 4])], Y, [init("w", np.ones((2, 3, 3, 3), np.float32))], expect=E)
save("s_conv_kernel_big", [h.make_node("Conv", ["x", "w"], ["y"])], [vi("x", F, [1, 1, 2, 2])], Y, [init("w", np.ones((1, 1, 5, 5), np.float32))], expect=E)
save("s_conv_stride0", [h.make_node("Conv", ["x", "w"], ["y"], strides=[0, 0])], [vi("x", F, [1, 1, 4, 4])], Y, [init("w", np.ones((1, 1, 3, 3), np.float32))], expect=E)
save("s_pool_stride_neg", [h.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[-1, 1])], [vi("x", F, [1, 1, 4, 4])], Y, expect=E)
save("s_pool_kernel0", [h.make_node("AveragePool", ["x"], ["y"], kernel_shape=[0, 0])], [vi("x", F, [1, 1, 4, 4])], Y, expect=E)
save("s_gather_oob", [h.make_node("Gather", ["x", "idx"], ["y"], axis=1)], X, Y, [init("idx", np.array([7], np.int64))])
save("s_gather_oob_const", [h.make_node("Gather", ["w", "idx"], ["g"], axis=0), h.make_node("Add", ["x", "g"], ["y"])], X, Y,
     [init("w", np.ones((2, 3), np.float32)), init("idx", np.array([9, 1], np.int64))])  # compiled code clamps out-of-range indices (by design)
save("s_gather_axis_range", [h.make_node("Gather", ["x", "idx"], ["y"], axis=4)], X, Y, [init("idx", np.array([0], np.int64))], expect=E)
save("s_gather_float_idx", [h.make_node("Gather", ["x", "idx"], ["y"], axis=0)], X, Y, [init("idx", np.array([0.5], np.float32))], expect=E)
save("s_slice_axes_range", [h.make_node("Slice", ["x", "st", "en", "ax"], ["y"])], X, Y,
     [init("st", np.array([0], np.int64)), init("en", np.array([1], np.int64)), init("ax", np.array([5], np.int64))], expect=E)
save("s_slice_step0", [h.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["y"])], X, Y,
     [init("st", np.array([0], np.int64)), init("en", np.array([1], np.int64)), init("ax", np.array([0], np.int64)), init("sp", np.array([0], np.int64))], expect=E)
save("s_slice_len_mismatch", [h.make_node("Slice", ["x", "st", "en"], ["y"])], X, Y,
     [init("st", np.array([0, 0], np.int64)), init("en", np.array([1], np.int64))], expect=E)
save("s_squeeze_non1", [h.make_node("Squeeze", ["x", "ax"], ["y"])], X, Y, [init("ax", np.array([0], np.int64))], expect=E)
save("s_unsqueeze_range", [h.make_node("Unsqueeze", ["x", "ax"], ["y"])], X, Y, [init("ax", np.array([9], np.int64))], expect=E)
save("s_reduce_axes_range", [h.make_node("ReduceSum", ["x", "ax"], ["y"])], X, Y, [init("ax", np.array([3], np.int64))], expect=E)
save("s_split_sizes", [h.make_node("Split", ["x", "sp"], ["y", "z"], axis=1)], X, Y, [init("sp", np.array([1, 1], np.int64))], expect=E)
save("s_split_neg_size", [h.make_node("Split", ["x", "sp"], ["y", "z"], axis=1)], X, Y, [init("sp", np.array([4, -1], np.int64))], expect=E)
save("s_topk_k_big", [h.make_node("TopK", ["x", "k"], ["y", "i"], axis=1)], X, Y, [init("k", np.array([9], np.int64))], expect=E)
save("s_topk_k_neg", [h.make_node("TopK", ["x", "k"], ["y", "i"], axis=1)], X, Y, [init("k", np.array([-1], np.int64))], expect=E)
save("s_pad_crop_too_much", [h.make_node("Pad", ["x", "p"], ["y"])], X, Y, [init("p", np.array([0, -5, 0, 0], np.int64))], expect=E)
save("s_pad_wrong_len", [h.make_node("Pad", ["x", "p"], ["y"])], X, Y, [init("p", np.array([0, 1, 0], np.int64))], expect=E)
save("s_cast_string", [h.make_node("Cast", ["x"], ["y"], to=T.STRING)], X, Y, expect=E)
save("s_cast_bad_enum", [h.make_node("Cast", ["x"], ["y"], to=1234)], X, Y, expect=E)
save("s_constant_no_value", [h.make_node("Constant", [], ["c"]), h.make_node("Add", ["x", "c"], ["y"])], X, Y, expect=E)
save("s_constant_sparse", [h.make_node("Constant", [], ["c"], sparse_value=h.make_sparse_tensor(h.make_tensor("v", F, [1], [1.0]), h.make_tensor("i", T.INT64, [1], [0]), [2, 3])),
                           h.make_node("Add", ["x", "c"], ["y"])], X, Y, expect=E)
save("s_constant_bad_tensor", [h.make_node("Constant", [], ["c"], value=mk("v", F, [2, 3], float_data=[1.0])), h.make_node("Add", ["x", "c"], ["y"])], X, Y, expect=E)
save("s_empty_graph", [], [], [], expect=E)
save("s_no_outputs", [h.make_node("Relu", ["x"], ["y"])], X, [], expect=E)
save("s_identity_graph", [], X, [vi("x", F, [2, 3])])
save("s_output_is_constant", [], [], [vi("w", F, [2, 3])], [init("w", np.ones((2, 3), np.float32))])
save("s_output_undefined", [h.make_node("Relu", ["x"], ["y"])], X, [vi("q", F, [2, 3])], expect=E)
save("s_opset1", [h.make_node("Add", ["x", "x"], ["y"])], X, Y, opset=1)
save("s_opset99", [h.make_node("Add", ["x", "x"], ["y"])], X, Y, opset=99, expect=E)
save("s_opset0", [h.make_node("Relu", ["x"], ["y"])], X, Y, opset=0, expect=E)
save("s_opset_newest", [h.make_node("Add", ["x", "x"], ["y"])], X, Y, opset=onnx.defs.onnx_opset_version(), expect="ok")
save("s_unknown_domain", [h.make_node("Relu", ["x"], ["r"], domain="com.example"), h.make_node("FooBar", ["r"], ["y"], domain="com.example")], X, Y,
     domain_opsets=[("com.example", 1)], expect=E)
save("s_unknown_op", [h.make_node("NoSuchOp", ["x"], ["a"]), h.make_node("NoSuchOp2", ["a"], ["y"])], X, Y, expect=E)
save("s_empty_op_type", [h.make_node("", ["x"], ["y"])], X, Y, expect=E)
save("s_if_subgraph", [h.make_node("If", ["c"], ["y"], then_branch=h.make_graph([], "t", [], [vi("x", F, [2, 3])]),
                                   else_branch=h.make_graph([], "e", [], [vi("x", F, [2, 3])]))], X + [vi("c", T.BOOL, [])], Y, expect=E)
save("s_input_string", [h.make_node("Identity", ["x"], ["y"])], [vi("x", T.STRING, [2])], Y, expect=E)
save("s_input_no_shape", [h.make_node("Relu", ["x"], ["y"])], [vi("x", F, None)], Y, expect=E)
def seq_input(m):
    m.graph.input[0].type.CopyFrom(h.make_sequence_type_proto(h.make_tensor_type_proto(F, [2])))
save("s_input_sequence", [h.make_node("Relu", ["x"], ["y"])], X, Y, expect=E, raw=seq_input)
def no_type(m): m.graph.input[0].ClearField("type")
save("s_input_no_type", [h.make_node("Relu", ["x"], ["y"])], X, Y, expect=E, raw=no_type)
def init_string(m):
    m.graph.initializer.append(h.make_tensor("w", T.STRING, [1], [b"hi"]))
save("s_init_string", [h.make_node("Relu", ["x"], ["y"])], X, Y, expect=E, raw=init_string)
save("s_init_complex", [h.make_node("Add", ["x", "w"], ["y"])], X, Y, [h.make_tensor("w", T.COMPLEX64, [1], [1 + 2j])], expect=E)
def ext(loc):
    def f(m):
        t = m.graph.initializer[0]; t.ClearField("raw_data"); t.data_location = T.EXTERNAL
        e = t.external_data.add(); e.key = "location"; e.value = loc
    return f
save("s_external_escape", [h.make_node("Add", ["x", "w"], ["y"])], X, Y, [init("w", np.ones((2, 3), np.float32))], expect=E, raw=ext("../../etc/passwd"))
save("s_external_missing", [h.make_node("Add", ["x", "w"], ["y"])], X, Y, [init("w", np.ones((2, 3), np.float32))], expect=E, raw=ext("nope.bin"))
save("s_external_self", [h.make_node("Add", ["x", "w"], ["y"])], X, Y, [init("w", np.ones((2, 3), np.float32))], raw=ext("s_external_self.onnx"))
def no_graph(m): m.ClearField("graph")
save("s_no_graph", [h.make_node("Relu", ["x"], ["y"])], X, Y, expect=E, raw=no_graph)
save("s_binary_broadcast_bad", [h.make_node("Add", ["x", "w"], ["y"])], X, Y, [init("w", np.ones((4,), np.float32))], expect=E)
save("s_where_bool_cond_float", [h.make_node("Where", ["x", "x", "x"], ["y"])], X, Y, expect=E)
save("s_and_float", [h.make_node("And", ["x", "x"], ["y"])], X, Y, expect=E)
save("s_add_mixed_dtypes", [h.make_node("Add", ["x", "w"], ["y"])], X, Y, [init("w", np.ones((2, 3), np.int64))], expect=E)
save("s_sum_70_inputs", [h.make_node("Sum", ["x"] * 70, ["y"])], X, Y, expect=E)
save("s_dropout_mask", [h.make_node("Dropout", ["x"], ["d", "mask"]), h.make_node("Cast", ["mask"], ["y"], to=F)], X, Y)
save("s_batchnorm_short", [h.make_node("BatchNormalization", ["x", "s"], ["y"])], [vi("x", F, [1, 2, 2])], Y, [init("s", np.ones(2, np.float32))], expect=E)
save("s_batchnorm_param_size", [h.make_node("BatchNormalization", ["x", "s", "s", "s", "v"], ["y"])], [vi("x", F, [1, 2, 2])], Y,
     [init("s", np.ones(3, np.float32)), init("v", np.ones(2, np.float32))], expect=E)
save("s_layernorm_axis", [h.make_node("LayerNormalization", ["x", "s"], ["y"], axis=5)], X, Y, [init("s", np.ones(3, np.float32))], expect=E)
save("s_einsum_bad", [h.make_node("Einsum", ["x"], ["y"], equation="ij->kk")], X, Y, expect=E)
save("s_einsum_garbage", [h.make_node("Einsum", ["x", "x"], ["y"], equation="!!,,->->")], X, Y, expect=E)
save("s_resize_bad_scales", [h.make_node("Resize", ["x", "", "sc"], ["y"])], X, Y, [init("sc", np.array([1.0], np.float32))], expect=E)
save("s_depth_to_space_bad", [h.make_node("DepthToSpace", ["x"], ["y"], blocksize=2)], [vi("x", F, [1, 3, 2, 2])], Y, expect=E)
save("s_onehot_neg_depth", [h.make_node("OneHot", ["i", "d", "v"], ["y"])], [vi("i", T.INT64, [3])], Y,
     [init("d", np.array(-4, np.int64)), init("v", np.array([0, 1], np.float32))], expect=E)
save("s_argmax_axis_range", [h.make_node("ArgMax", ["x"], ["y"], axis=3)], X, Y, expect=E)
save("s_flatten_axis_range", [h.make_node("Flatten", ["x"], ["y"], axis=4)], X, Y, expect=E)
save("s_cumsum_axis_range", [h.make_node("CumSum", ["x", "a"], ["y"])], X, Y, [init("a", np.array(5, np.int64))], expect=E)
save("s_scatter_oob", [h.make_node("ScatterElements", ["x", "i", "u"], ["y"], axis=0)], X, Y,
     [init("i", np.array([[9, 0, 0]], np.int64)), init("u", np.ones((1, 3), np.float32))])
save("s_lstm", [h.make_node("LSTM", ["x"], ["y"])], X, Y, expect=E)

with open(os.path.join(out, "manifest.txt"), "w") as f:
    for n, e in manifest:
        f.write(f"{n} {e}\n")
