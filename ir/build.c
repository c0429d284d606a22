/* build.c - the graph builder: shape-inferring node constructors (kiln_ir_input ..
 * kiln_ir_scatter). Each normalizes its arguments (negative axes, numpy broadcasting made
 * explicit with broadcast nodes), asks kiln_ir_infer for the result, and appends the node.
 * Errors go to g->diag naming the node; an operand of -1 (an earlier error) returns -1
 * without a second message. */
#include "ir.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *nm(const char *name) { return name ? name : "?"; }


/* Infers (dt/shape may carry the requested values, see kiln_ir_infer) and appends. */
static int32_t make(kiln_graph *g, kiln_op op, int32_t n_in, const int32_t *in, const kiln_attrs *a,
                    kiln_dtype dt, kiln_shape shape, const char *name) {
  kiln_diag d = {0};
  if (kiln_ir_infer(g, op, n_in, in, a, &dt, &shape, &d) != KILN_OK) {
    kiln_diag_set(&g->diag, d.status, "node '%s': %s", nm(name), d.msg);
    return -1;
  }
  return kiln_ir_append(g, op, dt, &shape, n_in, in, a, name);
}

static int32_t err(kiln_graph *g, kiln_status st, const char *name, const char *what, const char *detail) {
  kiln_diag_set(&g->diag, st, "node '%s': %s: %s", nm(name), what, detail);
  return -1;
}

static bool valid_id(kiln_graph *g, int32_t x, const char *name) {
  if (x < 0) return false;
  if (x >= g->n_nodes) {
    kiln_diag_set(&g->diag, KILN_ERR_INVALID_ARGUMENT, "node '%s': operand %d does not exist", nm(name), (int)x);
    return false;
  }
  return true;
}

static const kiln_shape *shape_of(kiln_graph *g, int32_t x) { return &g->nodes[x].shape; }

/* Normalizes axis for rank; false (diag set) if out of range. */
static bool norm_axis(kiln_graph *g, int32_t *axis, int32_t rank, const char *name, const char *op) {
  int32_t ax = *axis < 0 ? *axis + rank : *axis;
  if (ax < 0 || ax >= rank) {
    kiln_diag_set(&g->diag, KILN_ERR_INVALID_ARGUMENT, "node '%s': %s: axis %d out of range for rank %d", nm(name),
                  op, (int)*axis, (int)rank);
    return false;
  }
  *axis = ax;
  return true;
}

static int cmp_i32(const void *a, const void *b) {
  int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
  return (x > y) - (x < y);
}

/* Normalizes, sorts and checks uniqueness of an axis list into out. */
static bool norm_axes(kiln_graph *g, int32_t n, const int32_t *axes, int32_t rank, int32_t *out, const char *name,
                      const char *op) {
  if (n < 0 || n > rank || (n > 0 && !axes)) {
    kiln_diag_set(&g->diag, KILN_ERR_INVALID_ARGUMENT, "node '%s': %s: %d axes for rank %d", nm(name), op, (int)n,
                  (int)rank);
    return false;
  }
  for (int i = 0; i < n; i++) {
    out[i] = axes[i];
    if (!norm_axis(g, &out[i], rank, name, op)) return false;
  }
  qsort(out, (size_t)n, sizeof *out, cmp_i32);
  for (int i = 1; i < n; i++)
    if (out[i] == out[i - 1]) {
      kiln_diag_set(&g->diag, KILN_ERR_INVALID_ARGUMENT, "node '%s': %s: axis %d listed twice", nm(name), op,
                    (int)out[i]);
      return false;
    }
  return true;
}

/* x as a node of shape s: itself, or a broadcast node. */
static int32_t broadcast_to(kiln_graph *g, int32_t x, const kiln_shape *s, const char *name) {
  if (x < 0) return -1;
  if (kiln_shape_eq(shape_of(g, x), s)) return x;
  return make(g, KILN_OP_broadcast, 1, &x, NULL, KILN_F32, *s, name);
}

/* numpy broadcast of n shapes into *out; false (diag set) when they do not fit. */
static bool broadcast_shapes(kiln_graph *g, int n, const kiln_shape *const *s, kiln_shape *out, const char *name,
                             const char *op) {
  kiln_shape r = {.rank = 0};
  for (int i = 0; i < n; i++)
    if (s[i]->rank > r.rank) r.rank = s[i]->rank;
  for (int d = 0; d < r.rank; d++) r.dims[d] = 1;
  for (int i = 0; i < n; i++) {
    int off = r.rank - s[i]->rank;
    for (int d = 0; d < s[i]->rank; d++) {
      int64_t v = s[i]->dims[d], *o = &r.dims[off + d];
      if (v == *o || v == 1) continue;
      if (*o == 1) {
        *o = v;
        continue;
      }
      char msg[512];
      snprintf(msg, sizeof msg, "operand shapes do not broadcast: ");
      for (int j = 0; j < n; j++)
        snprintf(msg + strlen(msg), sizeof msg - strlen(msg), "%s%s", j ? " and " : "", KILN_SHAPE_STR(s[j]));
      snprintf(msg + strlen(msg), sizeof msg - strlen(msg), " (dim %lld vs %lld)", (long long)v, (long long)*o);
      err(g, KILN_ERR_SHAPE, name, op, msg);
      return false;
    }
  }
  *out = r;
  return true;
}

/* Broadcasts n operands (in place in ids) to their common shape. */
static bool broadcast_operands(kiln_graph *g, int n, int32_t *ids, const char *name, const char *op) {
  const kiln_shape *s[3];
  for (int i = 0; i < n; i++) s[i] = shape_of(g, ids[i]);
  kiln_shape out;
  if (!broadcast_shapes(g, n, s, &out, name, op)) return false;
  for (int i = 0; i < n; i++) {
    ids[i] = broadcast_to(g, ids[i], &out, name);
    if (ids[i] < 0) return false;
  }
  return true;
}

static bool check_shape(kiln_graph *g, const kiln_shape *s, const char *name, const char *what) {
  if (!s || s->rank < 0 || s->rank > KILN_MAX_RANK) {
    kiln_diag_set(&g->diag, KILN_ERR_SHAPE, "node '%s': %s: rank %d not in 0..%d", nm(name), what,
                  s ? (int)s->rank : -1, KILN_MAX_RANK);
    return false;
  }
  for (int i = 0; i < s->rank; i++)
    if (s->dims[i] < 0) {
      kiln_diag_set(&g->diag, KILN_ERR_SHAPE, "node '%s': %s: negative dim in %s", nm(name), what, KILN_SHAPE_STR(s));
      return false;
    }
  return true;
}

/* ------------------------------------------------------------------ leaves */
int32_t kiln_ir_input(kiln_graph *g, const char *name, kiln_dtype dt, const kiln_shape *s,
                      const char *const *dim_names) {
  if (!check_shape(g, s, name, "input")) return -1;
  if ((unsigned)dt >= KILN_DTYPE_COUNT) return err(g, KILN_ERR_INVALID_ARGUMENT, name, "input", "bad dtype");
  int32_t id = kiln_ir_append(g, KILN_OP_input, dt, s, 0, NULL, NULL, name);
  if (id < 0) return -1;
  g->nodes[id].index = g->n_inputs;
  if (kiln_ir_add_input_io(g, id, name, dim_names, s->rank) < 0) {
    g->n_nodes--; /* keep the node list and the input list consistent */
    return -1;
  }
  return id;
}

int32_t kiln_ir_constant(kiln_graph *g, const char *name, kiln_dtype dt, const kiln_shape *s, const void *data) {
  if (!check_shape(g, s, name, "constant")) return -1;
  if ((unsigned)dt >= KILN_DTYPE_COUNT) return err(g, KILN_ERR_INVALID_ARGUMENT, name, "constant", "bad dtype");
  int32_t ci = kiln_ir_add_const(g, dt, s, data, name);
  if (ci < 0) return -1;
  int32_t id = kiln_ir_append(g, KILN_OP_constant, dt, s, 0, NULL, NULL, name);
  if (id < 0) return -1;
  g->nodes[id].index = ci;
  return id;
}

int32_t kiln_ir_scalar(kiln_graph *g, kiln_dtype dt, double v, const char *name) {
  union {
    float f32;
    double f64;
    uint16_t u16;
    int8_t i8;
    int16_t i16;
    int32_t i32;
    int64_t i64;
    uint8_t u8;
  } u;
  memset(&u, 0, sizeof u);
  switch (dt) {
  case KILN_F32: u.f32 = (float)v; break;
  case KILN_F64: u.f64 = v; break;
  case KILN_F16: u.u16 = kiln_f32_to_f16((float)v); break;
  case KILN_BF16: u.u16 = kiln_f32_to_bf16((float)v); break;
  /* Out-of-range doubles would be UB in a C conversion; clamp to the dtype's range. */
  case KILN_I8: u.i8 = (int8_t)(isnan(v) ? 0 : fmax(-128.0, fmin(127.0, v))); break;
  case KILN_I16: u.i16 = (int16_t)(isnan(v) ? 0 : fmax(-32768.0, fmin(32767.0, v))); break;
  case KILN_I32: u.i32 = (int32_t)(isnan(v) ? 0 : fmax(-2147483648.0, fmin(2147483647.0, v))); break;
  case KILN_I64:
    u.i64 = isnan(v) ? 0 : v >= 9223372036854775807.0 ? INT64_MAX : v <= -9223372036854775808.0 ? INT64_MIN : (int64_t)v;
    break;
  case KILN_U8: u.u8 = (uint8_t)(isnan(v) ? 0 : fmax(0.0, fmin(255.0, v))); break;
  case KILN_BOOL: u.u8 = v != 0; break;
  default: return err(g, KILN_ERR_INVALID_ARGUMENT, name, "scalar", "bad dtype");
  }
  kiln_shape s = {.rank = 0};
  return kiln_ir_constant(g, name, dt, &s, &u);
}

/* ------------------------------------------------------------------ elementwise */
int32_t kiln_ir_unary(kiln_graph *g, kiln_op op, int32_t x, const char *name) {
  if (!valid_id(g, x, name)) return -1;
  if ((unsigned)op >= KILN_OP_COUNT || kiln_op_table[op].category != KILN_CAT_ELEMENTWISE ||
      kiln_op_table[op].arity != 1 || op == KILN_OP_cast)
    return err(g, KILN_ERR_INVALID_ARGUMENT, name, kiln_op_name(op), "not a unary elementwise op");
  return make(g, op, 1, &x, NULL, KILN_F32, (kiln_shape){0}, name);
}

static int32_t binary_attrs(kiln_graph *g, kiln_op op, int32_t a, int32_t b, const kiln_attrs *at, const char *name) {
  if (!valid_id(g, a, name) || !valid_id(g, b, name)) return -1;
  if ((unsigned)op >= KILN_OP_COUNT || kiln_op_table[op].category != KILN_CAT_ELEMENTWISE ||
      kiln_op_table[op].arity != 2)
    return err(g, KILN_ERR_INVALID_ARGUMENT, name, kiln_op_name(op), "not a binary elementwise op");
  int32_t ids[2] = {a, b};
  /* Check dtypes before inserting broadcasts so a dtype error leaves no stray nodes. */
  if (g->nodes[a].dtype != g->nodes[b].dtype) {
    char msg[128];
    snprintf(msg, sizeof msg, "operand dtypes differ: %s and %s", kiln_dtype_name(g->nodes[a].dtype),
             kiln_dtype_name(g->nodes[b].dtype));
    return err(g, KILN_ERR_SHAPE, name, kiln_op_name(op), msg);
  }
  if (!broadcast_operands(g, 2, ids, name, kiln_op_name(op))) return -1;
  return make(g, op, 2, ids, at, KILN_F32, (kiln_shape){0}, name);
}

int32_t kiln_ir_binary(kiln_graph *g, kiln_op op, int32_t a, int32_t b, const char *name) {
  return binary_attrs(g, op, a, b, NULL, name);
}

int32_t kiln_ir_mod(kiln_graph *g, int32_t a, int32_t b, int fmod_kind, const char *name) {
  kiln_attrs at = {0};
  at.kind = fmod_kind ? 1 : 0;
  return binary_attrs(g, KILN_OP_mod, a, b, &at, name);
}

int32_t kiln_ir_select(kiln_graph *g, int32_t c, int32_t a, int32_t b, const char *name) {
  if (!valid_id(g, c, name) || !valid_id(g, a, name) || !valid_id(g, b, name)) return -1;
  if (g->nodes[c].dtype != KILN_BOOL)
    return err(g, KILN_ERR_SHAPE, name, "select", "condition must be bool");
  if (g->nodes[a].dtype != g->nodes[b].dtype)
    return err(g, KILN_ERR_SHAPE, name, "select", "branch dtypes differ");
  int32_t ids[3] = {c, a, b};
  if (!broadcast_operands(g, 3, ids, name, "select")) return -1;
  return make(g, KILN_OP_select, 3, ids, NULL, KILN_F32, (kiln_shape){0}, name);
}

int32_t kiln_ir_cast(kiln_graph *g, int32_t x, kiln_dtype to, const char *name) {
  if (!valid_id(g, x, name)) return -1;
  return make(g, KILN_OP_cast, 1, &x, NULL, to, (kiln_shape){0}, name);
}

/* ------------------------------------------------------------------ movement */
int32_t kiln_ir_reshape(kiln_graph *g, int32_t x, const kiln_shape *s, const char *name) {
  if (!valid_id(g, x, name)) return -1;
  if (!check_shape(g, s, name, "reshape")) return -1;
  return make(g, KILN_OP_reshape, 1, &x, NULL, KILN_F32, *s, name);
}

int32_t kiln_ir_permute(kiln_graph *g, int32_t x, const int32_t *perm, const char *name) {
  if (!valid_id(g, x, name)) return -1;
  int32_t r = shape_of(g, x)->rank;
  kiln_attrs at = {0};
  for (int d = 0; d < r; d++) {
    at.perm[d] = perm[d] < 0 ? perm[d] + r : perm[d];
  }
  return make(g, KILN_OP_permute, 1, &x, &at, KILN_F32, (kiln_shape){0}, name);
}

int32_t kiln_ir_broadcast(kiln_graph *g, int32_t x, const kiln_shape *s, const char *name) {
  if (!valid_id(g, x, name)) return -1;
  if (!check_shape(g, s, name, "broadcast")) return -1;
  return make(g, KILN_OP_broadcast, 1, &x, NULL, KILN_F32, *s, name);
}

int32_t kiln_ir_slice(kiln_graph *g, int32_t x, const int64_t *starts, const int64_t *steps, const int64_t *counts,
                      const char *name) {
  if (!valid_id(g, x, name)) return -1;
  int32_t r = shape_of(g, x)->rank;
  kiln_attrs at = {0};
  kiln_shape s = {.rank = r};
  for (int d = 0; d < r; d++) {
    at.starts[d] = starts[d];
    at.steps[d] = steps[d];
    s.dims[d] = counts[d];
  }
  return make(g, KILN_OP_slice, 1, &x, &at, KILN_F32, s, name);
}

int32_t kiln_ir_pad(kiln_graph *g, int32_t x, const int64_t *lo, const int64_t *hi, double value, const char *name) {
  if (!valid_id(g, x, name)) return -1;
  int32_t r = shape_of(g, x)->rank;
  kiln_attrs at = {0};
  for (int d = 0; d < r; d++) {
    at.lo[d] = lo[d];
    at.hi[d] = hi[d];
  }
  at.value = value;
  return make(g, KILN_OP_pad, 1, &x, &at, KILN_F32, (kiln_shape){0}, name);
}

int32_t kiln_ir_concat(kiln_graph *g, int32_t n, const int32_t *xs, int32_t axis, const char *name) {
  if (n < 1 || !xs) return err(g, KILN_ERR_INVALID_ARGUMENT, name, "concat", "needs at least one operand");
  for (int i = 0; i < n; i++)
    if (!valid_id(g, xs[i], name)) return -1;
  kiln_attrs at = {0};
  at.axis = axis;
  if (!norm_axis(g, &at.axis, shape_of(g, xs[0])->rank, name, "concat")) return -1;
  return make(g, KILN_OP_concat, n, xs, &at, KILN_F32, (kiln_shape){0}, name);
}

int32_t kiln_ir_reverse(kiln_graph *g, int32_t x, int32_t n_axes, const int32_t *axes, const char *name) {
  if (!valid_id(g, x, name)) return -1;
  kiln_attrs at = {0};
  if (!norm_axes(g, n_axes, axes, shape_of(g, x)->rank, at.axes, name, "reverse")) return -1;
  at.n_axes = n_axes;
  return make(g, KILN_OP_reverse, 1, &x, &at, KILN_F32, (kiln_shape){0}, name);
}

static int32_t gather_op(kiln_graph *g, kiln_op op, int32_t data, int32_t indices, int32_t axis, const char *name) {
  if (!valid_id(g, data, name) || !valid_id(g, indices, name)) return -1;
  kiln_attrs at = {0};
  at.axis = axis;
  if (!norm_axis(g, &at.axis, shape_of(g, data)->rank, name, kiln_op_name(op))) return -1;
  int32_t in[2] = {data, indices};
  return make(g, op, 2, in, &at, KILN_F32, (kiln_shape){0}, name);
}

int32_t kiln_ir_gather(kiln_graph *g, int32_t data, int32_t indices, int32_t axis, const char *name) {
  return gather_op(g, KILN_OP_gather, data, indices, axis, name);
}

int32_t kiln_ir_gather_elements(kiln_graph *g, int32_t data, int32_t indices, int32_t axis, const char *name) {
  return gather_op(g, KILN_OP_gather_elements, data, indices, axis, name);
}

int32_t kiln_ir_iota(kiln_graph *g, kiln_dtype dt, const kiln_shape *s, int32_t axis, const char *name) {
  if (!check_shape(g, s, name, "iota")) return -1;
  kiln_attrs at = {0};
  at.axis = axis;
  if (!norm_axis(g, &at.axis, s->rank, name, "iota")) return -1;
  return make(g, KILN_OP_iota, 0, NULL, &at, dt, *s, name);
}

/* ------------------------------------------------------------------ reductions */
int32_t kiln_ir_reduce(kiln_graph *g, kiln_op op, int32_t x, int32_t n_axes, const int32_t *axes, int keepdims,
                       const char *name) {
  if (!valid_id(g, x, name)) return -1;
  if (kiln_op_combine(op) == KILN_OP_COUNT) /* reduce_sum/max/min/prod combine with an elementwise op */
    return err(g, KILN_ERR_INVALID_ARGUMENT, name, (unsigned)op < KILN_OP_COUNT ? kiln_op_name(op) : "?",
               "not a reduce_* op");
  if (n_axes == 0) return x; /* reduces nothing: the identity, no node */
  kiln_attrs at = {0};
  if (!norm_axes(g, n_axes, axes, shape_of(g, x)->rank, at.axes, name, kiln_op_name(op))) return -1;
  at.n_axes = n_axes;
  at.keepdims = keepdims ? 1 : 0;
  return make(g, op, 1, &x, &at, KILN_F32, (kiln_shape){0}, name);
}

int32_t kiln_ir_arg(kiln_graph *g, kiln_op op, int32_t x, int32_t axis, int keepdims, int select_last,
                    const char *name) {
  if (!valid_id(g, x, name)) return -1;
  if (!kiln_op_has(op, KILN_OPF_INDEX) || kiln_op_table[op].category != KILN_CAT_REDUCE)
    return err(g, KILN_ERR_INVALID_ARGUMENT, name, (unsigned)op < KILN_OP_COUNT ? kiln_op_name(op) : "?",
               "not argmax/argmin");
  kiln_attrs at = {0};
  at.axis = axis;
  if (!norm_axis(g, &at.axis, shape_of(g, x)->rank, name, kiln_op_name(op))) return -1;
  at.keepdims = keepdims ? 1 : 0;
  at.kind = select_last ? 1 : 0;
  return make(g, op, 1, &x, &at, KILN_I64, (kiln_shape){0}, name);
}

/* Fills the spatial attrs (k entries); NULL arrays mean the defaults (stride and
 * dilation 1, no padding). */
static void spatial_attrs(kiln_attrs *at, int k, const int64_t *strides, const int64_t *dilations, const int64_t *lo,
                          const int64_t *hi) {
  for (int i = 0; i < k; i++) {
    at->strides[i] = strides ? strides[i] : 1;
    at->dilations[i] = dilations ? dilations[i] : 1;
    at->lo[i] = lo ? lo[i] : 0;
    at->hi[i] = hi ? hi[i] : 0;
  }
}

int32_t kiln_ir_pool(kiln_graph *g, int32_t x, int kind, const int64_t *window, const int64_t *strides,
                     const int64_t *dilations, const int64_t *lo, const int64_t *hi, int count_include_pad,
                     const char *name) {
  if (!valid_id(g, x, name)) return -1;
  int32_t r = shape_of(g, x)->rank;
  if (r < 3) {
    char msg[200];
    snprintf(msg, sizeof msg, "input %s must be [N, C, spatial...] (rank >= 3)", KILN_SHAPE_STR(shape_of(g, x)));
    return err(g, KILN_ERR_SHAPE, name, "pool", msg);
  }
  if (!window) return err(g, KILN_ERR_INVALID_ARGUMENT, name, "pool", "no window");
  kiln_attrs at = {0};
  at.kind = kind;
  at.count_include_pad = count_include_pad;
  for (int i = 0; i < r - 2; i++) at.window[i] = window[i];
  spatial_attrs(&at, r - 2, strides, dilations, lo, hi);
  return make(g, KILN_OP_pool, 1, &x, &at, KILN_F32, (kiln_shape){0}, name);
}

int32_t kiln_ir_conv(kiln_graph *g, int32_t x, int32_t w, const int64_t *strides, const int64_t *dilations,
                     const int64_t *lo, const int64_t *hi, int32_t groups, const char *name) {
  if (!valid_id(g, x, name) || !valid_id(g, w, name)) return -1;
  int32_t r = shape_of(g, x)->rank;
  if (r < 3 || r > KILN_MAX_RANK) {
    char msg[200];
    snprintf(msg, sizeof msg, "x %s must be [N, C, spatial...] (rank >= 3)", KILN_SHAPE_STR(shape_of(g, x)));
    return err(g, KILN_ERR_SHAPE, name, "conv", msg);
  }
  kiln_attrs at = {0};
  at.groups = groups;
  spatial_attrs(&at, r - 2, strides, dilations, lo, hi);
  int32_t in[2] = {x, w};
  return make(g, KILN_OP_conv, 2, in, &at, KILN_F32, (kiln_shape){0}, name);
}

/* ------------------------------------------------------------------ contraction */
int32_t kiln_ir_matmul(kiln_graph *g, int32_t a, int32_t b, const char *name) {
  if (!valid_id(g, a, name) || !valid_id(g, b, name)) return -1;
  kiln_shape sa = *shape_of(g, a), sb = *shape_of(g, b);
  if (sa.rank < 1 || sb.rank < 1) {
    char msg[256];
    snprintf(msg, sizeof msg, "operands %s and %s must have rank >= 1", KILN_SHAPE_STR(&sa), KILN_SHAPE_STR(&sb));
    return err(g, KILN_ERR_SHAPE, name, "matmul", msg);
  }
  bool a_vec = sa.rank == 1, b_vec = sb.rank == 1;
  if (a_vec) sa = (kiln_shape){.rank = 2, .dims = {1, sa.dims[0]}};
  if (b_vec) sb = (kiln_shape){.rank = 2, .dims = {sb.dims[0], 1}};
  int64_t k_a = sa.dims[sa.rank - 1], k_b = sb.dims[sb.rank - 2];
  if (k_a != k_b) {
    char msg[256];
    snprintf(msg, sizeof msg, "contracting dims differ: %s has K=%lld, %s has K=%lld", KILN_SHAPE_STR(shape_of(g, a)),
             (long long)k_a, KILN_SHAPE_STR(shape_of(g, b)), (long long)k_b);
    return err(g, KILN_ERR_SHAPE, name, "matmul", msg);
  }
  if (g->nodes[a].dtype != g->nodes[b].dtype)
    return err(g, KILN_ERR_SHAPE, name, "matmul", "operand dtypes differ");
  /* Batch dims: numpy broadcast of everything but the last two. */
  kiln_shape ba = {.rank = sa.rank - 2}, bb = {.rank = sb.rank - 2}, batch;
  memcpy(ba.dims, sa.dims, sizeof(int64_t) * (size_t)ba.rank);
  memcpy(bb.dims, sb.dims, sizeof(int64_t) * (size_t)bb.rank);
  const kiln_shape *bs[2] = {&ba, &bb};
  if (!broadcast_shapes(g, 2, bs, &batch, name, "matmul")) return -1;
  if (batch.rank + 2 > KILN_MAX_RANK) return err(g, KILN_ERR_SHAPE, name, "matmul", "result rank exceeds 8");
  int64_t m = sa.dims[sa.rank - 2], n = sb.dims[sb.rank - 1];
  kiln_shape fa = batch, fb = batch;
  fa.rank = fb.rank = batch.rank + 2;
  fa.dims[batch.rank] = m;
  fa.dims[batch.rank + 1] = k_a;
  fb.dims[batch.rank] = k_a;
  fb.dims[batch.rank + 1] = n;
  if (a_vec) a = make(g, KILN_OP_reshape, 1, &a, NULL, KILN_F32, sa, name);
  if (b_vec) b = make(g, KILN_OP_reshape, 1, &b, NULL, KILN_F32, sb, name);
  a = broadcast_to(g, a, &fa, name);
  b = broadcast_to(g, b, &fb, name);
  if (a < 0 || b < 0) return -1;
  int32_t in[2] = {a, b};
  int32_t y = make(g, KILN_OP_dot, 2, in, NULL, KILN_F32, (kiln_shape){0}, name);
  if (y < 0 || (!a_vec && !b_vec)) return y;
  /* Remove the dims added for 1-D operands. */
  kiln_shape out = batch;
  if (!a_vec) out.dims[out.rank++] = m;
  if (!b_vec) out.dims[out.rank++] = n;
  return make(g, KILN_OP_reshape, 1, &y, NULL, KILN_F32, out, name);
}

/* ------------------------------------------------------------------ opaque */
int32_t kiln_ir_topk(kiln_graph *g, int32_t x, int64_t k, int32_t axis, int largest, const char *name) {
  if (!valid_id(g, x, name)) return -1;
  kiln_attrs at = {0};
  at.axis = axis;
  if (!norm_axis(g, &at.axis, shape_of(g, x)->rank, name, "topk")) return -1;
  at.k = k;
  at.kind = largest ? 1 : 0;
  return make(g, KILN_OP_topk, 1, &x, &at, KILN_I64, (kiln_shape){0}, name);
}

int32_t kiln_ir_scatter(kiln_graph *g, int32_t data, int32_t indices, int32_t updates, int32_t axis, int reduction,
                        const char *name) {
  if (!valid_id(g, data, name) || !valid_id(g, indices, name) || !valid_id(g, updates, name)) return -1;
  kiln_attrs at = {0};
  at.axis = axis;
  if (!norm_axis(g, &at.axis, shape_of(g, data)->rank, name, "scatter")) return -1;
  at.kind = reduction;
  int32_t in[3] = {data, indices, updates};
  return make(g, KILN_OP_scatter, 3, in, &at, KILN_F32, (kiln_shape){0}, name);
}
