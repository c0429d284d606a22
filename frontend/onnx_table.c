/* onnx_table.c - the one table of supported ONNX operators (default domain): op_type ->
 * importer. Grep an op type here to find the function that decomposes it. Importers read
 * n->p->op_type where one function serves several ops. */
#include "onnx_impl.h"

#include <string.h>

static const fe_importer importers[] = {
    /* elementwise math (onnx_ops_math.c) */
    {"Abs", fe_import_unary},        {"Neg", fe_import_unary},
    {"Exp", fe_import_unary},        {"Log", fe_import_unary},
    {"Sqrt", fe_import_unary},       {"Reciprocal", fe_import_unary},
    {"Tanh", fe_import_unary},       {"Sigmoid", fe_import_unary},
    {"Erf", fe_import_unary},        {"Sin", fe_import_unary},
    {"Cos", fe_import_unary},        {"Tan", fe_import_unary},
    {"Floor", fe_import_unary},      {"Ceil", fe_import_unary},
    {"Round", fe_import_unary},      {"Sign", fe_import_unary},
    {"Not", fe_import_unary},        {"IsNaN", fe_import_unary},
    {"Sinh", fe_import_unary},       {"Cosh", fe_import_unary},
    {"Asinh", fe_import_unary},      {"Acosh", fe_import_unary},
    {"Atanh", fe_import_unary},      {"Atan", fe_import_unary},
    {"Asin", fe_import_unary},       {"Acos", fe_import_unary},
    {"Add", fe_import_binary},       {"Sub", fe_import_binary},
    {"Mul", fe_import_binary},       {"Div", fe_import_binary},
    {"Pow", fe_import_binary},       {"And", fe_import_binary},
    {"Or", fe_import_binary},        {"Xor", fe_import_binary},
    {"Equal", fe_import_binary},     {"Greater", fe_import_binary},
    {"Less", fe_import_binary},      {"GreaterOrEqual", fe_import_binary},
    {"LessOrEqual", fe_import_binary},
    {"Max", fe_import_variadic},     {"Min", fe_import_variadic},
    {"Sum", fe_import_variadic},     {"Mean", fe_import_variadic},
    {"Mod", fe_import_mod},
    {"BitwiseAnd", fe_import_binary}, {"BitwiseOr", fe_import_binary},
    {"BitwiseXor", fe_import_binary}, {"BitwiseNot", fe_import_unary},
    {"BitShift", fe_import_bit_shift},
    {"Relu", fe_import_relu},        {"LeakyRelu", fe_import_leaky_relu},
    {"PRelu", fe_import_prelu},      {"Elu", fe_import_elu},
    {"Selu", fe_import_selu},        {"Celu", fe_import_celu},
    {"ThresholdedRelu", fe_import_thresholded_relu},
    {"Clip", fe_import_clip},        {"HardSigmoid", fe_import_hard_sigmoid},
    {"HardSwish", fe_import_hard_swish},
    {"Softplus", fe_import_softplus}, {"Softsign", fe_import_softsign},
    {"Mish", fe_import_mish},        {"Gelu", fe_import_gelu},
    {"IsInf", fe_import_isinf},      {"Where", fe_import_where},
    {"Cast", fe_import_cast},        {"CastLike", fe_import_cast_like},
    {"Identity", fe_import_identity}, {"Dropout", fe_import_dropout},
    {"Softmax", fe_import_softmax},  {"LogSoftmax", fe_import_softmax},
    {"ReduceSum", fe_import_reduce}, {"ReduceMean", fe_import_reduce},
    {"ReduceMax", fe_import_reduce}, {"ReduceMin", fe_import_reduce},
    {"ReduceProd", fe_import_reduce}, {"ReduceL1", fe_import_reduce},
    {"ReduceL2", fe_import_reduce},  {"ReduceSumSquare", fe_import_reduce},
    {"ReduceLogSum", fe_import_reduce}, {"ReduceLogSumExp", fe_import_reduce},
    {"ArgMax", fe_import_arg},       {"ArgMin", fe_import_arg},
    {"LayerNormalization", fe_import_layer_norm},
    {"InstanceNormalization", fe_import_instance_norm},
    {"TopK", fe_import_topk},
    /* neural network (onnx_ops_nn.c) */
    {"MatMul", fe_import_matmul},    {"Gemm", fe_import_gemm},
    {"Conv", fe_import_conv},        {"MaxPool", fe_import_pool},
    {"AveragePool", fe_import_pool}, {"GlobalAveragePool", fe_import_global_pool},
    {"GlobalMaxPool", fe_import_global_pool},
    {"BatchNormalization", fe_import_batch_norm},
    {"LpPool", fe_import_lp_pool},   {"ConvTranspose", fe_import_conv_transpose},
    {"Col2Im", fe_import_col2im}, {"MaxUnpool", fe_import_max_unpool},
    /* shapes and data movement (onnx_ops_shape.c) */
    {"Shape", fe_import_shape},      {"Size", fe_import_size},
    {"Constant", fe_import_constant}, {"ConstantOfShape", fe_import_constant_of_shape},
    {"Range", fe_import_range},      {"Reshape", fe_import_reshape},
    {"Flatten", fe_import_flatten},  {"Transpose", fe_import_transpose},
    {"Squeeze", fe_import_squeeze},  {"Unsqueeze", fe_import_unsqueeze},
    {"Concat", fe_import_concat},    {"Split", fe_import_split},
    {"Slice", fe_import_slice},      {"Gather", fe_import_gather},
    {"GatherElements", fe_import_gather_elements},
    {"ScatterElements", fe_import_scatter_elements},
    {"Scatter", fe_import_scatter_elements},
    {"Expand", fe_import_expand},    {"Tile", fe_import_tile},
    {"Pad", fe_import_pad},
    {"DepthToSpace", fe_import_depth_to_space},
    {"SpaceToDepth", fe_import_space_to_depth},
    {"CenterCropPad", fe_import_center_crop_pad},
    /* indexing and value-dependent shapes (onnx_ops_index.c) */
    {"GatherND", fe_import_gather_nd}, {"ScatterND", fe_import_scatter_nd},
    {"Compress", fe_import_compress}, {"NonZero", fe_import_nonzero},
    {"Unique", fe_import_unique},    {"ReverseSequence", fe_import_reverse_sequence},
    /* quantization (onnx_ops_quant.c) */
    {"QuantizeLinear", fe_import_quantize_linear},
    {"DequantizeLinear", fe_import_dequantize_linear},
    {"DynamicQuantizeLinear", fe_import_dynamic_quantize_linear},
    {"MatMulInteger", fe_import_matmul_integer},
    {"QLinearMatMul", fe_import_qlinear_matmul},
    {"ConvInteger", fe_import_conv_integer},
    {"QLinearConv", fe_import_qlinear_conv},
    /* Einsum (onnx_ops_einsum.c) */
    {"Einsum", fe_import_einsum},
    /* masks and the rest (onnx_ops_misc.c) */
    {"Trilu", fe_import_trilu},      {"EyeLike", fe_import_eye_like},
    {"OneHot", fe_import_one_hot},   {"Hardmax", fe_import_hardmax},
    {"Shrink", fe_import_shrink},    {"LpNormalization", fe_import_lp_norm},
    {"RMSNormalization", fe_import_rms_norm},
    {"CumSum", fe_import_cumulative}, {"CumProd", fe_import_cumulative},
    {"Swish", fe_import_swish},
    {"GroupNormalization", fe_import_group_norm}, {"LRN", fe_import_lrn},
    {"MeanVarianceNormalization", fe_import_mvn},
    /* losses (onnx_ops_loss.c) */
    {"NegativeLogLikelihoodLoss", fe_import_nll_loss},
    {"SoftmaxCrossEntropyLoss", fe_import_softmax_ce_loss},
    /* attention (onnx_ops_attention.c) */
    {"Attention", fe_import_attention},
    {"RotaryEmbedding", fe_import_rotary_embedding},
    /* resizing (onnx_ops_resize.c) */
    {"Resize", fe_import_resize},    {"Upsample", fe_import_resize},
    /* sampling grids (onnx_ops_grid.c) */
    {"GridSample", fe_import_grid_sample}, {"AffineGrid", fe_import_affine_grid},
    /* detection, for values known at import time (onnx_ops_nms.c) */
    {"NonMaxSuppression", fe_import_non_max_suppression},
    /* window functions (onnx_ops_misc.c) */
    {"HannWindow", fe_import_window}, {"HammingWindow", fe_import_window},
    {"BlackmanWindow", fe_import_window},
};

fe_import_fn fe_find_importer(const char *op_type) {
  if (!op_type) return NULL;
  for (size_t i = 0; i < sizeof importers / sizeof importers[0]; i++)
    if (!strcmp(importers[i].op_type, op_type)) return importers[i].fn;
  return NULL;
}
