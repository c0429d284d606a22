/* onnx_impl.h - the frontend's internal interface: the import context shared by the loader
 * and the op importers, the importer table, and helpers for attributes, tensors and
 * values that must be known at import time (folded through the fold callback).
 * Not installed; only the frontend sources include it.
 */
#ifndef KILN_ONNX_IMPL_H
#define KILN_ONNX_IMPL_H

#include "onnx.h"
#include "onnx.pb-c.h"

/* ONNX value name -> graph node id (open addressing; names borrowed from the model). */
typedef struct fe_map {
  const kiln_allocator *alloc;
  const char **keys;
  int32_t *vals;
  size_t cap, n;
} fe_map;

/* One import: the graph under construction and where errors go. */
typedef struct fe_ctx {
  kiln_graph *g;
  kiln_diag *d;
  const kiln_fe_options *o;
  const char *file;      /* the model path (or "<memory>") for messages */
  const char *model_dir; /* external data folder; NULL: external data is refused */
  int64_t opset;         /* of the default domain */
  fe_map values;
} fe_ctx;

/* The ONNX node being imported, with its inputs resolved to node ids. */
typedef struct fe_node {
  const Onnx__NodeProto *p;
  const char *name;  /* the ONNX node name, or "<OpType>_<index>": names every primitive */
  int32_t n_in;
  const int32_t *in; /* node ids; -1 for an omitted optional input ("") */
  int32_t n_out;
  int32_t *out;      /* filled by the importer; -1 leaves an output unproduced */
  /* The first attribute fe_attr_int/float/str found with the wrong type (e.g. axis=1.5):
   * import_node reports it. A pointer, so copies of the node (sub-importers) share it. */
  const Onnx__AttributeProto **bad_attr;
} fe_node;

/* An importer builds the node's outputs from primitives. Builder errors may be left in
 * g->diag (the caller reports them); importer-level refusals go to c->d via fe_fail. */
typedef kiln_status (*fe_import_fn)(fe_ctx *c, fe_node *n);

typedef struct fe_importer {
  const char *op_type;
  fe_import_fn fn;
} fe_importer;

/* onnx_table.c: the one place that maps op types to importers. NULL when unknown. */
fe_import_fn fe_find_importer(const char *op_type);

/* Importers, by file. */
#define FE_DECLARE(fn) kiln_status fn(fe_ctx *c, fe_node *n);
/* onnx_ops_math.c */
FE_DECLARE(fe_import_unary)
FE_DECLARE(fe_import_binary)
FE_DECLARE(fe_import_variadic)
FE_DECLARE(fe_import_mod)
FE_DECLARE(fe_import_bit_shift)
FE_DECLARE(fe_import_relu)
FE_DECLARE(fe_import_leaky_relu)
FE_DECLARE(fe_import_prelu)
FE_DECLARE(fe_import_elu)
FE_DECLARE(fe_import_selu)
FE_DECLARE(fe_import_celu)
FE_DECLARE(fe_import_thresholded_relu)
FE_DECLARE(fe_import_clip)
FE_DECLARE(fe_import_hard_sigmoid)
FE_DECLARE(fe_import_hard_swish)
FE_DECLARE(fe_import_softplus)
FE_DECLARE(fe_import_softsign)
FE_DECLARE(fe_import_mish)
FE_DECLARE(fe_import_gelu)
FE_DECLARE(fe_import_isinf)
FE_DECLARE(fe_import_where)
FE_DECLARE(fe_import_cast)
FE_DECLARE(fe_import_cast_like)
FE_DECLARE(fe_import_identity)
FE_DECLARE(fe_import_dropout)
FE_DECLARE(fe_import_softmax)
FE_DECLARE(fe_import_reduce)
FE_DECLARE(fe_import_arg)
FE_DECLARE(fe_import_layer_norm)
FE_DECLARE(fe_import_instance_norm)
FE_DECLARE(fe_import_topk)
/* onnx_ops_nn.c */
FE_DECLARE(fe_import_matmul)
FE_DECLARE(fe_import_gemm)
FE_DECLARE(fe_import_conv)
FE_DECLARE(fe_import_pool)
FE_DECLARE(fe_import_global_pool)
FE_DECLARE(fe_import_batch_norm)
FE_DECLARE(fe_import_lp_pool)
FE_DECLARE(fe_import_conv_transpose)
FE_DECLARE(fe_import_col2im)
FE_DECLARE(fe_import_max_unpool)
/* onnx_ops_shape.c */
FE_DECLARE(fe_import_shape)
FE_DECLARE(fe_import_size)
FE_DECLARE(fe_import_constant)
FE_DECLARE(fe_import_constant_of_shape)
FE_DECLARE(fe_import_range)
FE_DECLARE(fe_import_reshape)
FE_DECLARE(fe_import_flatten)
FE_DECLARE(fe_import_transpose)
FE_DECLARE(fe_import_squeeze)
FE_DECLARE(fe_import_unsqueeze)
FE_DECLARE(fe_import_concat)
FE_DECLARE(fe_import_split)
FE_DECLARE(fe_import_slice)
FE_DECLARE(fe_import_gather)
FE_DECLARE(fe_import_gather_elements)
FE_DECLARE(fe_import_scatter_elements)
FE_DECLARE(fe_import_expand)
FE_DECLARE(fe_import_tile)
FE_DECLARE(fe_import_pad)
FE_DECLARE(fe_import_depth_to_space)
FE_DECLARE(fe_import_space_to_depth)
FE_DECLARE(fe_import_center_crop_pad)
/* onnx_ops_index.c */
FE_DECLARE(fe_import_gather_nd)
FE_DECLARE(fe_import_scatter_nd)
FE_DECLARE(fe_import_compress)
FE_DECLARE(fe_import_nonzero)
FE_DECLARE(fe_import_unique)
FE_DECLARE(fe_import_reverse_sequence)
/* onnx_ops_quant.c */
FE_DECLARE(fe_import_quantize_linear)
FE_DECLARE(fe_import_dequantize_linear)
FE_DECLARE(fe_import_dynamic_quantize_linear)
FE_DECLARE(fe_import_matmul_integer)
FE_DECLARE(fe_import_qlinear_matmul)
FE_DECLARE(fe_import_conv_integer)
FE_DECLARE(fe_import_qlinear_conv)
/* onnx_ops_einsum.c */
FE_DECLARE(fe_import_einsum)
/* onnx_ops_misc.c */
FE_DECLARE(fe_import_trilu)
FE_DECLARE(fe_import_eye_like)
FE_DECLARE(fe_import_one_hot)
FE_DECLARE(fe_import_hardmax)
FE_DECLARE(fe_import_shrink)
FE_DECLARE(fe_import_lp_norm)
FE_DECLARE(fe_import_rms_norm)
FE_DECLARE(fe_import_cumulative)
FE_DECLARE(fe_import_swish)
FE_DECLARE(fe_import_group_norm)
FE_DECLARE(fe_import_lrn)
FE_DECLARE(fe_import_mvn)
FE_DECLARE(fe_import_window)
/* onnx_ops_loss.c */
FE_DECLARE(fe_import_nll_loss)
FE_DECLARE(fe_import_softmax_ce_loss)
/* onnx_ops_attention.c */
FE_DECLARE(fe_import_attention)
FE_DECLARE(fe_import_rotary_embedding)
/* onnx_ops_resize.c */
FE_DECLARE(fe_import_resize)
/* onnx_ops_grid.c */
FE_DECLARE(fe_import_grid_sample)
FE_DECLARE(fe_import_affine_grid)
/* onnx_ops_nms.c */
FE_DECLARE(fe_import_non_max_suppression)
#undef FE_DECLARE

/* ------------------------------------------------------------------ onnx_util.c */
/* Sets c->d to "<file>: node "<name>" (<OpType>): <message>". Returns st. */
kiln_status fe_fail(fe_ctx *c, const fe_node *n, kiln_status st, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

const Onnx__AttributeProto *fe_attr(const fe_node *n, const char *name);
int64_t fe_attr_int(const fe_node *n, const char *name, int64_t def);
float fe_attr_float(const fe_node *n, const char *name, float def);
/* The string attribute copied into the graph arena, or def. */
const char *fe_attr_str(fe_ctx *c, const fe_node *n, const char *name, const char *def);
/* Integer list attribute: its length (<= max, else error), or -1 when absent. */
int fe_attr_ints(fe_ctx *c, const fe_node *n, const char *name, int64_t *out, int max,
                 kiln_status *st);

/* Input i (node id) or -1 when omitted or beyond the inputs given. */
int32_t fe_in(const fe_node *n, int i);
const kiln_node *fe_nd(const fe_ctx *c, int32_t v);
/* Fails when the required input i is missing. */
kiln_status fe_need(fe_ctx *c, const fe_node *n, int i);
/* Fails when any of the first k inputs is missing. */
kiln_status fe_need_inputs(fe_ctx *c, const fe_node *n, int k);

/* Node v as a constant node (v itself, or a new node folded through o->fold); refuses
 * data-dependent values as "data-dependent shape for <node>". */
kiln_status fe_fold(fe_ctx *c, const fe_node *n, int32_t v, int32_t *out);
/* The value of node v as a constant (valid until the next constant is added), folding it through o->fold when it is computed;
 * refuses data-dependent values as "data-dependent shape for <node>". */
kiln_status fe_value(fe_ctx *c, const fe_node *n, int32_t v, const kiln_const **out);
/* The value of input i as integers (any integer dtype); *count set. */
kiln_status fe_value_ints(fe_ctx *c, const fe_node *n, int i, int64_t *vals, int max,
                          int *count);
/* The single element of input i as a double. */
kiln_status fe_value_scalar(fe_ctx *c, const fe_node *n, int i, double *v);

/* Element access for constants (host-endian data). */
double fe_get_f64(kiln_dtype dt, const void *data, int64_t i);
int64_t fe_get_i64(kiln_dtype dt, const void *data, int64_t i);
void fe_set_f64(kiln_dtype dt, void *data, int64_t i, double v);

/* Normalizes axis (negative counts from the end) against rank; fails out of range. */
kiln_status fe_axis(fe_ctx *c, const fe_node *n, int64_t axis, int32_t rank, int32_t *out);

/* The "reduction" attribute of a scatter as the scatter op's kind (0 none, 1 add, 2 mul,
 * 3 max, 4 min); refuses other values. */
kiln_status fe_scatter_reduction(fe_ctx *c, const fe_node *n, int *kind);

/* Scalar constant of v's dtype. */
int32_t fe_scalar_like(fe_ctx *c, const fe_node *n, int32_t v, double x);
/* Reshapes a per-channel vector [C] to [C, 1, ...] so it broadcasts against a tensor of
 * rank `rank` laid out [N, C, spatial...]. */
int32_t fe_channel_view(fe_ctx *c, const fe_node *n, int32_t v, int32_t rank);
/* Mean over axes (sum divided by the number of elements reduced). */
int32_t fe_reduce_mean(fe_ctx *c, const fe_node *n, int32_t x, int32_t n_axes,
                       const int32_t *axes, int keepdims);

/* ------------------------------------------------------------------ onnx_tensor.c */
/* ONNX elem type -> kiln dtype; false when Kiln has no such dtype. */
bool fe_dtype(int32_t onnx_type, kiln_dtype *out);
const char *fe_onnx_type_name(int32_t onnx_type);

/* Decodes a TensorProto. *data is allocated with a (at least 1 byte), caller frees it.
 * what names the tensor in messages ("initializer 'w'"). */
kiln_status fe_decode_tensor(const kiln_allocator *a, const Onnx__TensorProto *t,
                             const char *model_dir, const char *file, const char *what,
                             kiln_dtype *dt, kiln_shape *shape, void **data, kiln_diag *d);
/* Decodes t into a new constant node named name. */
kiln_status fe_tensor_node(fe_ctx *c, const Onnx__TensorProto *t, const char *what,
                           const char *name, int32_t *out);

/* Reads the whole file into *bytes (allocated with a, at least 1 byte; caller frees). */
kiln_status fe_read_file(const kiln_allocator *a, const char *path, uint8_t **bytes, size_t *size,
                         kiln_diag *d);
/* The folder of path into dir: "." when path has no '/', "/" for "/name". */
void fe_dir_of(const char *path, char *dir, size_t cap);

#endif
