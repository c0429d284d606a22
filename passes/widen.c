/* widen.c - pass "widen": low-precision contractions (dot, conv) computed in a dtype the
 * contraction engine runs, with the result converted back:
 *
 *   dot(a, b) : f16/bf16      -> cast(dot(cast(a, f32), cast(b, f32)), f16/bf16)
 *   dot(a, b) : integer       -> cast(dot(cast(a, F), cast(b, F)), integer)   (conv alike)
 *
 * Floats: the product is accumulated in f32 and rounded once to the node's dtype, which is
 * how ONNX Runtime computes f16 MatMul and what the interpreter does (it accumulates in
 * f64: the two differ by at most the f32 accumulation error, far below an f16 ulp).
 *
 * Integers: the rewrite is exact, never an approximation. Each operand's values are
 * bounded by interval arithmetic over the nodes that make it (casts from narrow integer
 * types, constants, zero-point subtractions, movement ops); with K the reduction length,
 * every partial sum lies within K * max|a| * max|b|. When that bound is at most 2^24 every
 * partial sum is an integer an f32 holds exactly (F = f32); when it is below 2^31, f64
 * (F = f64), and the integer result never wraps, so it equals the interpreter's wrapping
 * integer sum. Otherwise (an unbounded operand) the contraction stays an integer loop.
 * QLinearConv, ConvInteger, MatMulInteger and QLinearMatMul (u8/i8 operands) take this
 * path: their weights, cast and centered, fold to an f32 constant the pack pass packs.
 */
#include "passes-impl.h"

#include <math.h>

/* How deep the bound looks through an operand's producers. add/sub branch, so the walk is
 * at most 2^BOUND_DEPTH calls on a DAG that shares nodes; quantized operands are a cast, a
 * zero-point subtraction and a few movement ops deep. */
enum { BOUND_DEPTH = 10 };

/* [lo, hi] lies within integer dtype dt, so a node of dt holding it does not wrap. */
static bool holds(kiln_dtype dt, double lo, double hi) {
  return dt == KILN_I64 || (dt == KILN_I32 && lo >= -2147483648.0 && hi <= 2147483647.0);
}

/* [lo, hi] holds every value of integer node v; false when no bound is known. */
static bool int_range(const kiln_graph *g, int32_t v, int depth, double *lo, double *hi) {
  const kiln_node *n = &g->nodes[v];
  if (depth > BOUND_DEPTH) return false;
  double l1, h1, l2, h2;
  switch (n->op) {
  case KILN_OP_constant: {
    const kiln_const *c = kiln_ir_const_of(g, v);
    int64_t cnt = c ? kiln_shape_numel(&c->shape) : 0;
    if (!c || cnt < 1 || !kiln_dtype_is_int(c->dtype)) return false;
    *lo = *hi = (double)kiln_rt_get_i64(c->dtype, c->data, 0);
    for (int64_t i = 1; i < cnt; i++) {
      double x = (double)kiln_rt_get_i64(c->dtype, c->data, i);
      *lo = fmin(*lo, x), *hi = fmax(*hi, x);
    }
    return true;
  }
  case KILN_OP_cast: {
    kiln_dtype from = g->nodes[n->in[0]].dtype;
    if (from == KILN_I8) return *lo = -128, *hi = 127, true;
    if (from == KILN_U8) return *lo = 0, *hi = 255, true;
    if (from == KILN_I16) return *lo = -32768, *hi = 32767, true;
    if (from == KILN_BOOL) return *lo = 0, *hi = 1, true;
    /* a wider integer: its bound holds if the cast cannot wrap it */
    if (!kiln_dtype_is_int(from) || !int_range(g, n->in[0], depth + 1, lo, hi)) return false;
    return holds(n->dtype, *lo, *hi);
  }
  case KILN_OP_broadcast:
  case KILN_OP_reshape:
  case KILN_OP_permute:
  case KILN_OP_slice:
  case KILN_OP_reverse:
    return int_range(g, n->in[0], depth + 1, lo, hi);
  case KILN_OP_neg:
    if (!int_range(g, n->in[0], depth + 1, &l1, &h1)) return false;
    return *lo = -h1, *hi = -l1, true;
  case KILN_OP_add:
  case KILN_OP_sub:
    if (!int_range(g, n->in[0], depth + 1, &l1, &h1) || !int_range(g, n->in[1], depth + 1, &l2, &h2)) return false;
    if (n->op == KILN_OP_add) *lo = l1 + l2, *hi = h1 + h2;
    else *lo = l1 - h2, *hi = h1 - l2;
    return holds(n->dtype, *lo, *hi); /* the node's own (wrapping) dtype must hold it */
  default:
    return false;
  }
}

static double int_abs_bound(const kiln_graph *g, int32_t v) {
  double lo, hi;
  if (!int_range(g, v, 0, &lo, &hi)) return INFINITY;
  return fmax(fabs(lo), fabs(hi));
}

/* The number of products each output element of contraction n sums. */
static int64_t reduction_length(const kiln_graph *g, const kiln_node *n) {
  const kiln_shape *b = &g->nodes[n->in[1]].shape;
  if (n->op == KILN_OP_dot) return g->nodes[n->in[0]].shape.dims[g->nodes[n->in[0]].shape.rank - 1];
  int64_t k = 1; /* conv: w [Co, Ci/groups, k...]; conv_cl: w [k..., Ci/groups, Co] */
  int32_t from = n->op == KILN_OP_conv ? 1 : 0, to = n->op == KILN_OP_conv ? b->rank : b->rank - 1;
  for (int32_t d = from; d < to; d++) k *= b->dims[d];
  return k;
}

/* The dtype contraction n is computed in, or n's own when it stays as it is. */
static kiln_dtype wide_dtype(const kiln_graph *g, const kiln_node *n) {
  if (n->op != KILN_OP_dot && n->op != KILN_OP_conv && n->op != KILN_OP_conv_cl) return n->dtype;
  if (n->dtype == KILN_F16 || n->dtype == KILN_BF16) return KILN_F32;
  if (!kiln_dtype_is_int(n->dtype) || n->dtype == KILN_I8 || n->dtype == KILN_U8 || n->dtype == KILN_I16)
    return n->dtype; /* narrow integer results wrap at every step: left to the loop */
  double bound = (double)reduction_length(g, n) * int_abs_bound(g, n->in[0]) * int_abs_bound(g, n->in[1]);
  if (bound <= 16777216.0) return KILN_F32;
  if (bound < 2147483648.0) return KILN_F64;
  return n->dtype;
}

/* A node like `like` (its shape and name; its attributes when it has op `op`) of op and dt. */
static int32_t append(kiln_graph *g, kiln_op op, kiln_dtype dt, int32_t n_in, const int32_t *in, int32_t like,
                      kiln_diag *d, bool *failed) {
  kiln_node ln = g->nodes[like]; /* copied: appending may move the node array */
  bool same = op == ln.op && op != KILN_OP_cast;
  int32_t id = kiln_ir_append(g, op, dt, &ln.shape, n_in, in, same ? &ln.a : NULL, ln.name);
  if (id < 0 && !*failed) {
    kiln_diag_set(d, g->diag.status ? g->diag.status : KILN_ERR_OUT_OF_MEMORY, "%s", g->diag.msg);
    *failed = true;
  }
  return id;
}

kiln_status kiln_pass_widen(kiln_graph *g, const kiln_pass_target *t, kiln_diag *d) {
  (void)t;
  int32_t n = g->n_nodes;
  int32_t *repl = kiln_ir_malloc(g->alloc, sizeof(int32_t) * (size_t)(n > 0 ? n : 1));
  if (!repl) return kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory widening contractions");
  bool failed = false;
  int widened = 0;
  for (int32_t i = 0; i < n && !failed; i++) {
    repl[i] = i;
    kiln_dtype wide = wide_dtype(g, &g->nodes[i]);
    if (wide == g->nodes[i].dtype) continue;
    int32_t in[2];
    for (int k = 0; k < 2; k++) in[k] = append(g, KILN_OP_cast, wide, 1, &g->nodes[i].in[k], g->nodes[i].in[k], d, &failed);
    if (failed) break;
    int32_t p = append(g, g->nodes[i].op, wide, 2, in, i, d, &failed);
    if (p >= 0) repl[i] = append(g, KILN_OP_cast, g->nodes[i].dtype, 1, &p, i, d, &failed);
    widened++;
  }
  kiln_status st = failed ? d->status : widened ? kiln_pass_rewrite(g, repl, n, NULL, d) : KILN_OK;
  kiln_ir_free(g->alloc, repl);
  return st;
}
