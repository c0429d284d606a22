/* graph_api.c - the public graph builder (kiln_input, kiln_add, ...) on top of the ir/
 * builder, and graph queries. Builder errors stick to the graph (g->diag). */
#include "driver.h"

#include <string.h>

/* A graph holds a reference to its context (found from its allocator: the IR knows no
 * context), taken by whichever call made it (here and load.c). */
kiln_status kiln_graph_create(kiln_context *ctx, const char *name, kiln_graph **g) {
  if (!ctx || !g) return KILN_ERR_INVALID_ARGUMENT;
  *g = kiln_ir_graph_create(&ctx->alloc, name);
  if (!*g) return kiln_driver_failf(ctx, KILN_ERR_OUT_OF_MEMORY, "out of memory creating graph");
  kiln_driver_ctx_retain(ctx);
  return KILN_OK;
}

void kiln_graph_destroy(kiln_graph *g) {
  if (!g) return;
  kiln_context *ctx = kiln_driver_graph_ctx(g);
  kiln_ir_graph_destroy(g);
  kiln_driver_ctx_release(ctx);
}

kiln_status kiln_graph_status(kiln_graph *g) {
  if (!g) return KILN_ERR_INVALID_ARGUMENT;
  return g->diag.status;
}

static kiln_value val(int32_t id) { return (kiln_value){id}; }

static bool shape_from(kiln_graph *g, int32_t rank, const int64_t *dims, kiln_shape *s,
                       const char *what) {
  if (rank < 0 || rank > KILN_MAX_RANK || (rank > 0 && !dims)) {
    kiln_diag_set(&g->diag, KILN_ERR_INVALID_ARGUMENT, "%s: rank %d is not in [0, %d]", what, rank,
                  KILN_MAX_RANK);
    return false;
  }
  for (int i = 0; i < rank; i++)
    if (dims[i] < 0) {
      kiln_diag_set(&g->diag, KILN_ERR_INVALID_ARGUMENT, "%s: dim %d is negative (%lld)", what, i,
                    (long long)dims[i]);
      return false;
    }
  *s = kiln_shape_make(rank, dims);
  return true;
}

kiln_value kiln_input(kiln_graph *g, const char *name, kiln_dtype dt, int32_t rank,
                      const int64_t *dims) {
  kiln_shape s;
  if (!g || !shape_from(g, rank, dims, &s, name ? name : "input")) return val(-1);
  return val(kiln_ir_input(g, name, dt, &s, NULL));
}

kiln_value kiln_constant(kiln_graph *g, const char *name, kiln_dtype dt, int32_t rank,
                         const int64_t *dims, const void *data) {
  kiln_shape s;
  if (!g || !shape_from(g, rank, dims, &s, name ? name : "constant")) return val(-1);
  return val(kiln_ir_constant(g, name, dt, &s, data));
}

kiln_value kiln_scalar(kiln_graph *g, kiln_dtype dt, double v) {
  return g ? val(kiln_ir_scalar(g, dt, v, "scalar")) : val(-1);
}

kiln_status kiln_output(kiln_graph *g, const char *name, kiln_value v) {
  if (!g) return KILN_ERR_INVALID_ARGUMENT;
  if (v.id < 0) return g->diag.status ? g->diag.status : KILN_ERR_INVALID_ARGUMENT;
  return kiln_ir_add_output(g, v.id, name) < 0 ? g->diag.status : KILN_OK;
}

#define BINARY(fn, op) \
  kiln_value fn(kiln_graph *g, kiln_value a, kiln_value b) { \
    return g ? val(kiln_ir_binary(g, KILN_OP_##op, a.id, b.id, #op)) : val(-1); \
  }
BINARY(kiln_add, add)
BINARY(kiln_sub, sub)
BINARY(kiln_mul, mul)
BINARY(kiln_div, div)
BINARY(kiln_pow, pow)
BINARY(kiln_max, max)
BINARY(kiln_min, min)
#undef BINARY

#define UNARY(fn, op) \
  kiln_value fn(kiln_graph *g, kiln_value x) { \
    return g ? val(kiln_ir_unary(g, KILN_OP_##op, x.id, #op)) : val(-1); \
  }
UNARY(kiln_neg, neg)
UNARY(kiln_exp, exp)
UNARY(kiln_log, log)
UNARY(kiln_sqrt, sqrt)
UNARY(kiln_tanh, tanh)
UNARY(kiln_sigmoid, sigmoid)
UNARY(kiln_erf, erf)
#undef UNARY

kiln_value kiln_relu(kiln_graph *g, kiln_value x) {
  if (!g || x.id < 0) return val(-1);
  if (x.id >= g->n_nodes) { /* the dtype below is read from the node: check the id first */
    kiln_diag_set(&g->diag, KILN_ERR_INVALID_ARGUMENT, "node 'relu': operand %d does not exist", (int)x.id);
    return val(-1);
  }
  int32_t zero = kiln_ir_scalar(g, g->nodes[x.id].dtype, 0.0, "relu.zero");
  return val(kiln_ir_binary(g, KILN_OP_max, x.id, zero, "relu"));
}

kiln_value kiln_cast(kiln_graph *g, kiln_value x, kiln_dtype to) {
  return g ? val(kiln_ir_cast(g, x.id, to, "cast")) : val(-1);
}

kiln_value kiln_where(kiln_graph *g, kiln_value c, kiln_value a, kiln_value b) {
  return g ? val(kiln_ir_select(g, c.id, a.id, b.id, "where")) : val(-1);
}

kiln_value kiln_reshape(kiln_graph *g, kiln_value x, int32_t rank, const int64_t *dims) {
  kiln_shape s;
  if (!g || x.id < 0 || !shape_from(g, rank, dims, &s, "reshape")) return val(-1);
  return val(kiln_ir_reshape(g, x.id, &s, "reshape"));
}

kiln_value kiln_transpose(kiln_graph *g, kiln_value x, const int32_t *perm) {
  return g ? val(kiln_ir_permute(g, x.id, perm, "transpose")) : val(-1);
}

kiln_value kiln_concat(kiln_graph *g, int32_t n, const kiln_value *xs, int32_t axis) {
  if (!g || n <= 0 || !xs) return val(-1);
  int32_t ids[64];
  if (n > 64) {
    kiln_diag_set(&g->diag, KILN_ERR_UNSUPPORTED, "concat: %d inputs (at most 64 through the API)", n);
    return val(-1);
  }
  for (int i = 0; i < n; i++) ids[i] = xs[i].id;
  return val(kiln_ir_concat(g, n, ids, axis, "concat"));
}

kiln_value kiln_reduce_sum(kiln_graph *g, kiln_value x, int32_t n_axes, const int32_t *axes,
                           int keepdims) {
  return g ? val(kiln_ir_reduce(g, KILN_OP_reduce_sum, x.id, n_axes, axes, keepdims, "reduce_sum"))
           : val(-1);
}

kiln_value kiln_reduce_max(kiln_graph *g, kiln_value x, int32_t n_axes, const int32_t *axes,
                           int keepdims) {
  return g ? val(kiln_ir_reduce(g, KILN_OP_reduce_max, x.id, n_axes, axes, keepdims, "reduce_max"))
           : val(-1);
}

/* softmax = exp(x - max) / sum(exp(x - max)) along axis, as primitives. */
kiln_value kiln_softmax(kiln_graph *g, kiln_value x, int32_t axis) {
  if (!g || x.id < 0) return val(-1);
  int32_t ax[1] = {axis};
  int32_t m = kiln_ir_reduce(g, KILN_OP_reduce_max, x.id, 1, ax, 1, "softmax.max");
  int32_t e = kiln_ir_unary(g, KILN_OP_exp, kiln_ir_binary(g, KILN_OP_sub, x.id, m, "softmax.sub"),
                            "softmax.exp");
  int32_t s = kiln_ir_reduce(g, KILN_OP_reduce_sum, e, 1, ax, 1, "softmax.sum");
  return val(kiln_ir_binary(g, KILN_OP_div, e, s, "softmax"));
}

kiln_value kiln_matmul(kiln_graph *g, kiln_value a, kiln_value b) {
  return g ? val(kiln_ir_matmul(g, a.id, b.id, "matmul")) : val(-1);
}

kiln_value kiln_conv2d(kiln_graph *g, kiln_value x, kiln_value w, const int64_t strides[2],
                       const int64_t pads[4], int32_t groups) {
  if (!g) return val(-1);
  int64_t one[2] = {1, 1}, zero[4] = {0, 0, 0, 0};
  const int64_t *st = strides ? strides : one, *p = pads ? pads : zero;
  int64_t lo[2] = {p[0], p[1]}, hi[2] = {p[2], p[3]};
  return val(kiln_ir_conv(g, x.id, w.id, st, one, lo, hi, groups, "conv2d"));
}

int32_t kiln_graph_num_inputs(const kiln_graph *g) { return g ? g->n_inputs : 0; }
int32_t kiln_graph_num_outputs(const kiln_graph *g) { return g ? g->n_outputs : 0; }

static kiln_status io_info(const kiln_graph *g, const kiln_graph_io *io, int32_t n, int32_t i,
                           const char **name, kiln_dtype *dt, int32_t *rank, int64_t *dims) {
  if (!g || i < 0 || i >= n) return KILN_ERR_INVALID_ARGUMENT;
  const kiln_node *nd = &g->nodes[io[i].node];
  if (name) *name = io[i].name;
  if (dt) *dt = nd->dtype;
  if (rank) *rank = nd->shape.rank;
  if (dims) memcpy(dims, nd->shape.dims, sizeof(int64_t) * (size_t)nd->shape.rank);
  return KILN_OK;
}

kiln_status kiln_value_info(const kiln_graph *g, kiln_value v, kiln_dtype *dt, int32_t *rank, int64_t *dims) {
  if (!g || v.id < 0 || v.id >= g->n_nodes) return KILN_ERR_INVALID_ARGUMENT;
  const kiln_node *nd = &g->nodes[v.id];
  if (dt) *dt = nd->dtype;
  if (rank) *rank = nd->shape.rank;
  if (dims) memcpy(dims, nd->shape.dims, sizeof(int64_t) * (size_t)nd->shape.rank);
  return KILN_OK;
}

kiln_status kiln_graph_input_info(const kiln_graph *g, int32_t i, const char **name,
                                  kiln_dtype *dt, int32_t *rank, int64_t *dims) {
  return io_info(g, g ? g->inputs : NULL, g ? g->n_inputs : 0, i, name, dt, rank, dims);
}

kiln_status kiln_graph_output_info(const kiln_graph *g, int32_t i, const char **name,
                                   kiln_dtype *dt, int32_t *rank, int64_t *dims) {
  return io_info(g, g ? g->outputs : NULL, g ? g->n_outputs : 0, i, name, dt, rank, dims);
}

const char *kiln_graph_input_dim_name(const kiln_graph *g, int32_t i, int32_t dim) {
  if (!g || i < 0 || i >= g->n_inputs || dim < 0 || dim >= KILN_MAX_RANK) return NULL;
  if (dim >= g->nodes[g->inputs[i].node].shape.rank) return NULL;
  return g->inputs[i].dim_names[dim];
}

char *kiln_graph_to_text(kiln_context *ctx, const kiln_graph *g) {
  (void)ctx;
  return g ? kiln_ir_print_to_string(g, NULL) : NULL;
}

const char *kiln_graph_error(const kiln_graph *g) {
  if (!g) return "no graph";
  return g->diag.status ? g->diag.msg : "no error";
}
