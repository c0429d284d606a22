/* interp.c - the reference interpreter: the definition of every graph op's semantics
 * (COMMON.md, "Graph IR semantics"), the oracle of every test and the engine of constant
 * folding. Plain loops, no cleverness: floats are computed in double and rounded to the
 * node's dtype on store, integers in int64 (wrapping to the dtype's width on store), bools
 * as 0/1. Anything a user's graph or data can get wrong (integer division by zero, an
 * out-of-range gather index) is a status naming the node, never a trap.
 *
 * The elementwise ops' edge cases (integer division by zero, max/min of NaN and zeros,
 * sign of zero, float -> integer casts, ...) are defined once, in ir/ops.def; this file
 * implements them and the backends follow (tests/unit/test_backend_ops.c checks them).
 * Conventions this file fixes where the IR spec leaves a corner open (backends follow):
 * - argmax/argmin: NaN beats every number (numpy: the first NaN is the answer); an empty
 *   axis is an error.
 * - topk: NaN orders above +inf (numpy's sort order); ties go to the lower index.
 * - pool avg whose divisor is 0 (a window wholly in padding with count_include_pad=0)
 *   yields 0; pool max of a window wholly in padding yields -inf (the dtype minimum).
 */
#include "rt.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define NODE_ERR(st, ...) node_err(n, d, st, __VA_ARGS__)

static kiln_status node_err(const kiln_node *n, kiln_diag *d, kiln_status st, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static kiln_status node_err(const kiln_node *n, kiln_diag *d, kiln_status st, const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return kiln_diag_set(d, st, "node '%s' (%s): %s", n->name ? n->name : "?", kiln_op_name(n->op), buf);
}

static void shape_str(const kiln_shape *s, char *buf, size_t cap) {
  size_t k = (size_t)snprintf(buf, cap, "[");
  for (int i = 0; i < s->rank && k < cap; i++)
    k += (size_t)snprintf(buf + k, cap - k, i ? ",%lld" : "%lld", (long long)s->dims[i]);
  if (k < cap) snprintf(buf + k, cap - k, "]");
}

/* ------------------------------------------------------------------ index helpers */
static void unravel(const kiln_shape *s, int64_t flat, int64_t *c) {
  for (int i = s->rank - 1; i >= 0; i--) {
    int64_t dim = s->dims[i] > 0 ? s->dims[i] : 1;
    c[i] = flat % dim;
    flat /= dim;
  }
}

static int64_t ravel(const kiln_shape *s, const int64_t *c) {
  int64_t off = 0;
  for (int i = 0; i < s->rank; i++) off = off * s->dims[i] + c[i];
  return off;
}

static void copy_elem(void *dst, int64_t i, const void *src, int64_t j, size_t es) {
  memcpy((char *)dst + (size_t)i * es, (const char *)src + (size_t)j * es, es);
}

static bool is_float(kiln_dtype t) { return kiln_dtype_is_float(t); }

/* Smallest/largest representable value of a dtype, as the reductions' empty identities. */
static double dtype_lowest(kiln_dtype t) {
  switch (t) {
  case KILN_I8: return -128; case KILN_I16: return -32768; case KILN_I32: return -2147483648.0;
  case KILN_I64: return -9223372036854775808.0; case KILN_U8: case KILN_BOOL: return 0;
  default: return -INFINITY;
  }
}
static int64_t dtype_min_i(kiln_dtype t) {
  switch (t) {
  case KILN_I8: return INT8_MIN; case KILN_I16: return INT16_MIN; case KILN_I32: return INT32_MIN;
  case KILN_U8: case KILN_BOOL: return 0; default: return INT64_MIN;
  }
}
static int64_t dtype_max_i(kiln_dtype t) {
  switch (t) {
  case KILN_I8: return INT8_MAX; case KILN_I16: return INT16_MAX; case KILN_I32: return INT32_MAX;
  case KILN_U8: return 255; case KILN_BOOL: return 1; default: return INT64_MAX;
  }
}

/* Wrapping int64 arithmetic (signed overflow is UB in C; the IR wraps). */
static int64_t wadd(int64_t a, int64_t b) { return (int64_t)((uint64_t)a + (uint64_t)b); }
static int64_t wsub(int64_t a, int64_t b) { return (int64_t)((uint64_t)a - (uint64_t)b); }
static int64_t wmul(int64_t a, int64_t b) { return (int64_t)((uint64_t)a * (uint64_t)b); }

/* Whole tensor converted to double / int64 (for the contraction and window loops). */
static double *to_f64(const kiln_allocator *al, const kiln_rt_tensor *t) {
  int64_t n = kiln_shape_numel(&t->shape);
  double *p = kiln_ir_malloc(al, (size_t)n * sizeof *p);
  if (p)
    for (int64_t i = 0; i < n; i++) p[i] = kiln_rt_get_f64(t->dtype, t->data, i);
  return p;
}
static int64_t *to_i64(const kiln_allocator *al, const kiln_rt_tensor *t) {
  int64_t n = kiln_shape_numel(&t->shape);
  int64_t *p = kiln_ir_malloc(al, (size_t)n * sizeof *p);
  if (p)
    for (int64_t i = 0; i < n; i++) p[i] = kiln_rt_get_i64(t->dtype, t->data, i);
  return p;
}

/* ------------------------------------------------------------------ elementwise */
/* max/min: IEEE 754-2019 maximum/minimum (ops.def): NaN propagates, -0 < +0. */
static double fmax_nan(double a, double b) {
  if (a != a || b != b) return NAN;
  if (a == b) return signbit(a) ? b : a;
  return a > b ? a : b;
}
static double fmin_nan(double a, double b) {
  if (a != a || b != b) return NAN;
  if (a == b) return signbit(a) ? a : b;
  return a < b ? a : b;
}

/* 1/(1+e^-x) as e/(1+e) below 0, e = e^-|x|: no overflow, and the tiny results of very
 * negative x (subnormal in f64 below -709) are kept. */
static double sigmoid(double x) {
  double e = exp(-fabs(x));
  return x < 0 ? e / (1 + e) : 1 / (1 + e);
}

/* Unary elementwise ops on floats. */
static double unary_f(kiln_op op, double x) {
  switch (op) {
  case KILN_OP_neg: return -x;
  case KILN_OP_abs: return fabs(x);
  case KILN_OP_exp: return exp(x);
  case KILN_OP_log: return log(x);
  case KILN_OP_sqrt: return sqrt(x);
  case KILN_OP_rsqrt: return 1.0 / sqrt(x);
  case KILN_OP_recip: return 1.0 / x;
  case KILN_OP_tanh: return tanh(x);
  case KILN_OP_sigmoid: return sigmoid(x);
  case KILN_OP_erf: return erf(x);
  case KILN_OP_sin: return sin(x);
  case KILN_OP_cos: return cos(x);
  case KILN_OP_atan: return atan(x);
  case KILN_OP_floor: return floor(x);
  case KILN_OP_ceil: return ceil(x);
  case KILN_OP_round: return nearbyint(x); /* default rounding mode: half to even */
  case KILN_OP_sign: return x > 0 ? 1.0 : x < 0 ? -1.0 : x == 0 ? 0.0 : x; /* +0 for +-0, NaN stays */
  case KILN_OP_isnan: return x != x;
  case KILN_OP_not: /* bool or integers only */
  KILN_OPS_BINARY(KILN_OP_CASE)
  case KILN_OP_select: case KILN_OP_cast:
  KILN_OPS_NOT_ELEMENTWISE(KILN_OP_CASE)
  case KILN_OP_COUNT: break;
  }
  KILN_ASSERT(!"not a unary float op");
}

/* Unary elementwise ops on integers and bool (dt: the dtype, for not). */
static int64_t unary_i(kiln_op op, int64_t v, kiln_dtype dt) {
  switch (op) {
  case KILN_OP_neg: return wsub(0, v);
  case KILN_OP_abs: return v < 0 ? wsub(0, v) : v; /* abs(min) wraps to min on store */
  case KILN_OP_sign: return (v > 0) - (v < 0);
  case KILN_OP_not: return dt == KILN_BOOL ? v == 0 : ~v; /* bitwise */
  case KILN_OP_exp: case KILN_OP_log: case KILN_OP_sqrt: case KILN_OP_rsqrt: case KILN_OP_recip:
  case KILN_OP_tanh: case KILN_OP_sigmoid: case KILN_OP_erf: case KILN_OP_sin: case KILN_OP_cos:
  case KILN_OP_floor: case KILN_OP_ceil: case KILN_OP_round: case KILN_OP_isnan: case KILN_OP_atan:
    /* floats only (ops.def OPERANDS): refused by eval_unary */
  KILN_OPS_BINARY(KILN_OP_CASE)
  case KILN_OP_select: case KILN_OP_cast:
  KILN_OPS_NOT_ELEMENTWISE(KILN_OP_CASE)
  case KILN_OP_COUNT: break;
  }
  KILN_ASSERT(!"not a unary integer op");
}

/* An elementwise op applied to a dtype it does not accept (ops.def OPERANDS): the graph
 * verifier refuses such nodes, so only a hand-built node gets here. */
static kiln_status check_operands(const kiln_node *n, kiln_dtype t, kiln_diag *d) {
  if (kiln_op_accepts(n->op, t)) return KILN_OK;
  return NODE_ERR(KILN_ERR_INVALID_ARGUMENT, "%s is not defined on %s operands", kiln_op_name(n->op),
                  kiln_dtype_name(t));
}

static kiln_status eval_unary(const kiln_node *n, const kiln_rt_tensor *x, kiln_rt_tensor *out,
                              kiln_diag *d) {
  int64_t cnt = kiln_shape_numel(&out->shape);
  kiln_op op = n->op;
  kiln_status st = check_operands(n, x->dtype, d);
  if (st) return st;
  if (is_float(x->dtype)) {
    for (int64_t i = 0; i < cnt; i++)
      kiln_rt_set_f64(out->dtype, out->data, i, unary_f(op, kiln_rt_get_f64(x->dtype, x->data, i)));
    return KILN_OK;
  }
  for (int64_t i = 0; i < cnt; i++)
    kiln_rt_set_i64(out->dtype, out->data, i, unary_i(op, kiln_rt_get_i64(x->dtype, x->data, i), x->dtype));
  return KILN_OK;
}

/* Python-style float modulo (numpy.remainder): a nonzero result takes the divisor's sign,
 * and so does a zero one. */
static double py_fmod(double a, double b) {
  double r = fmod(a, b);
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  else if (r == 0) r = copysign(0.0, b);
  return r;
}

/* a^b on integers (ops.def): repeated multiplication, wrapping; b < 0 truncates 1/a^|b|
 * (0 unless a is 1 or -1, and 0 for a = 0). */
static int64_t ipow(int64_t a, int64_t b) {
  if (b < 0) return a == 1 ? 1 : a == -1 ? ((b & 1) ? -1 : 1) : 0;
  uint64_t r = 1, base = (uint64_t)a;
  while (b) {
    if (b & 1) r *= base;
    base *= base;
    b >>= 1;
  }
  return (int64_t)r;
}

/* Binary elementwise ops on floats (comparisons give 0/1). */
static double binary_f(kiln_op op, int32_t kind, double a, double b) {
  switch (op) {
  case KILN_OP_add: return a + b;
  case KILN_OP_sub: return a - b;
  case KILN_OP_mul: return a * b;
  case KILN_OP_div: return a / b;
  case KILN_OP_pow: return pow(a, b);
  case KILN_OP_max: return fmax_nan(a, b);
  case KILN_OP_min: return fmin_nan(a, b);
  case KILN_OP_mod: return kind == 1 ? fmod(a, b) : py_fmod(a, b);
  case KILN_OP_eq: return a == b;
  case KILN_OP_ne: return a != b;
  case KILN_OP_lt: return a < b;
  case KILN_OP_le: return a <= b;
  case KILN_OP_gt: return a > b;
  case KILN_OP_ge: return a >= b;
  case KILN_OP_and: case KILN_OP_or: case KILN_OP_xor: /* bool or integers only */
  KILN_OPS_UNARY(KILN_OP_CASE)
  case KILN_OP_select: case KILN_OP_cast:
  KILN_OPS_NOT_ELEMENTWISE(KILN_OP_CASE)
  case KILN_OP_COUNT: break;
  }
  KILN_ASSERT(!"not a binary float op");
}

/* Binary elementwise ops on integers and bool, wrapping (to the dtype's width on store).
 * False for a division or modulo by zero, an error in the input data (ops.def). */
static bool binary_i(kiln_op op, int32_t kind, int64_t a, int64_t b, int64_t *r) {
  switch (op) {
  case KILN_OP_add: *r = wadd(a, b); return true;
  case KILN_OP_sub: *r = wsub(a, b); return true;
  case KILN_OP_mul: *r = wmul(a, b); return true;
  case KILN_OP_div:
  case KILN_OP_mod:
    if (b == 0) return false;
    if (b == -1) *r = op == KILN_OP_div ? wsub(0, a) : 0; /* min / -1 overflows in C; the IR wraps */
    else if (op == KILN_OP_div) *r = a / b;              /* C truncates toward zero */
    else if ((*r = a % b) != 0 && kind == 0 && ((*r < 0) != (b < 0))) *r += b;
    return true;
  case KILN_OP_pow: *r = ipow(a, b); return true;
  case KILN_OP_max: *r = a > b ? a : b; return true;
  case KILN_OP_min: *r = a < b ? a : b; return true;
  case KILN_OP_and: *r = a & b; return true; /* bitwise; on bool (0/1) the same as logical */
  case KILN_OP_or: *r = a | b; return true;
  case KILN_OP_xor: *r = a ^ b; return true;
  case KILN_OP_eq: *r = a == b; return true;
  case KILN_OP_ne: *r = a != b; return true;
  case KILN_OP_lt: *r = a < b; return true;
  case KILN_OP_le: *r = a <= b; return true;
  case KILN_OP_gt: *r = a > b; return true;
  case KILN_OP_ge: *r = a >= b; return true;
  KILN_OPS_UNARY(KILN_OP_CASE)
  case KILN_OP_select: case KILN_OP_cast:
  KILN_OPS_NOT_ELEMENTWISE(KILN_OP_CASE)
  case KILN_OP_COUNT: break;
  }
  KILN_ASSERT(!"not a binary integer op");
}

static kiln_status eval_binary(const kiln_node *n, const kiln_rt_tensor *ins, kiln_rt_tensor *out,
                               kiln_diag *d) {
  int64_t cnt = kiln_shape_numel(&out->shape);
  const kiln_rt_tensor *A = &ins[0], *B = &ins[1];
  kiln_op op = n->op;
  kiln_status st = check_operands(n, A->dtype, d);
  if (st) return st;
  if (A->dtype != B->dtype) return NODE_ERR(KILN_ERR_INTERNAL, "operand dtypes differ");
  if (is_float(A->dtype)) {
    for (int64_t i = 0; i < cnt; i++) {
      double a = kiln_rt_get_f64(A->dtype, A->data, i), b = kiln_rt_get_f64(B->dtype, B->data, i);
      kiln_rt_set_f64(out->dtype, out->data, i, binary_f(op, n->a.kind, a, b));
    }
    return KILN_OK;
  }
  for (int64_t i = 0; i < cnt; i++) {
    int64_t a = kiln_rt_get_i64(A->dtype, A->data, i), b = kiln_rt_get_i64(B->dtype, B->data, i), r;
    if (!binary_i(op, n->a.kind, a, b, &r))
      return NODE_ERR(KILN_ERR_INVALID_ARGUMENT, "integer %s by zero at element %lld",
                      op == KILN_OP_div ? "division" : "modulo", (long long)i);
    kiln_rt_set_i64(out->dtype, out->data, i, r);
  }
  return KILN_OK;
}

static kiln_status eval_select(const kiln_rt_tensor *ins, kiln_rt_tensor *out) {
  int64_t cnt = kiln_shape_numel(&out->shape);
  size_t es = kiln_dtype_size(out->dtype);
  for (int64_t i = 0; i < cnt; i++) {
    bool c = kiln_rt_get_i64(ins[0].dtype, ins[0].data, i) != 0;
    copy_elem(out->data, i, c ? ins[1].data : ins[2].data, i, es);
  }
  return KILN_OK;
}

static kiln_status eval_cast(const kiln_rt_tensor *x, kiln_rt_tensor *out) {
  int64_t cnt = kiln_shape_numel(&out->shape);
  for (int64_t i = 0; i < cnt; i++) {
    /* Integers go through int64 so that large i64 values are not rounded twice. */
    if (is_float(x->dtype))
      kiln_rt_set_f64(out->dtype, out->data, i, kiln_rt_get_f64(x->dtype, x->data, i));
    else
      kiln_rt_set_i64(out->dtype, out->data, i, kiln_rt_get_i64(x->dtype, x->data, i));
  }
  return KILN_OK;
}

/* ------------------------------------------------------------------ movement */
static kiln_status eval_permute(const kiln_node *n, const kiln_rt_tensor *x, kiln_rt_tensor *out) {
  int64_t cnt = kiln_shape_numel(&out->shape), ist[KILN_MAX_RANK], c[KILN_MAX_RANK];
  size_t es = kiln_dtype_size(out->dtype);
  kiln_shape_strides(&x->shape, ist);
  for (int64_t i = 0; i < cnt; i++) {
    unravel(&out->shape, i, c);
    int64_t j = 0;
    for (int dd = 0; dd < out->shape.rank; dd++) j += c[dd] * ist[n->a.perm[dd]];
    copy_elem(out->data, i, x->data, j, es);
  }
  return KILN_OK;
}

static kiln_status eval_broadcast(const kiln_node *n, const kiln_rt_tensor *x, kiln_rt_tensor *out,
                                  kiln_diag *d) {
  int64_t cnt = kiln_shape_numel(&out->shape), ic[KILN_MAX_RANK], c[KILN_MAX_RANK];
  size_t es = kiln_dtype_size(out->dtype);
  int off = out->shape.rank - x->shape.rank;
  if (off < 0) return NODE_ERR(KILN_ERR_SHAPE, "input rank exceeds output rank");
  for (int k = 0; k < x->shape.rank; k++)
    if (x->shape.dims[k] != 1 && x->shape.dims[k] != out->shape.dims[k + off])
      return NODE_ERR(KILN_ERR_SHAPE, "input dim %d (%lld) does not broadcast to %lld", k,
                      (long long)x->shape.dims[k], (long long)out->shape.dims[k + off]);
  for (int64_t i = 0; i < cnt; i++) {
    unravel(&out->shape, i, c);
    for (int k = 0; k < x->shape.rank; k++) ic[k] = x->shape.dims[k] == 1 ? 0 : c[k + off];
    copy_elem(out->data, i, x->data, ravel(&x->shape, ic), es);
  }
  return KILN_OK;
}

static kiln_status eval_slice(const kiln_node *n, const kiln_rt_tensor *x, kiln_rt_tensor *out,
                              kiln_diag *d) {
  int64_t cnt = kiln_shape_numel(&out->shape), ic[KILN_MAX_RANK], c[KILN_MAX_RANK];
  size_t es = kiln_dtype_size(out->dtype);
  for (int64_t i = 0; i < cnt; i++) {
    unravel(&out->shape, i, c);
    for (int k = 0; k < x->shape.rank; k++) {
      ic[k] = n->a.starts[k] + c[k] * n->a.steps[k];
      if (ic[k] < 0 || ic[k] >= x->shape.dims[k])
        return NODE_ERR(KILN_ERR_SHAPE, "slice reads index %lld of dim %d (size %lld)",
                        (long long)ic[k], k, (long long)x->shape.dims[k]);
    }
    copy_elem(out->data, i, x->data, ravel(&x->shape, ic), es);
  }
  return KILN_OK;
}

static kiln_status eval_pad(const kiln_node *n, const kiln_rt_tensor *x, kiln_rt_tensor *out) {
  int64_t cnt = kiln_shape_numel(&out->shape), ic[KILN_MAX_RANK], c[KILN_MAX_RANK];
  size_t es = kiln_dtype_size(out->dtype);
  for (int64_t i = 0; i < cnt; i++) {
    unravel(&out->shape, i, c);
    bool inside = true;
    for (int k = 0; k < x->shape.rank; k++) {
      ic[k] = c[k] - n->a.lo[k];
      if (ic[k] < 0 || ic[k] >= x->shape.dims[k]) inside = false;
    }
    if (inside) copy_elem(out->data, i, x->data, ravel(&x->shape, ic), es);
    else kiln_rt_set_f64(out->dtype, out->data, i, n->a.value);
  }
  return KILN_OK;
}

static kiln_status eval_concat(const kiln_node *n, const kiln_rt_tensor *ins, kiln_rt_tensor *out,
                               kiln_diag *d) {
  int64_t cnt = kiln_shape_numel(&out->shape), c[KILN_MAX_RANK];
  size_t es = kiln_dtype_size(out->dtype);
  int ax = n->a.axis;
  for (int64_t i = 0; i < cnt; i++) {
    unravel(&out->shape, i, c);
    int k = 0;
    while (k < n->n_in && c[ax] >= ins[k].shape.dims[ax]) c[ax] -= ins[k++].shape.dims[ax];
    if (k == n->n_in) return NODE_ERR(KILN_ERR_SHAPE, "inputs do not cover the output along axis %d", ax);
    copy_elem(out->data, i, ins[k].data, ravel(&ins[k].shape, c), es);
  }
  return KILN_OK;
}

static kiln_status eval_reverse(const kiln_node *n, const kiln_rt_tensor *x, kiln_rt_tensor *out) {
  int64_t cnt = kiln_shape_numel(&out->shape), c[KILN_MAX_RANK];
  size_t es = kiln_dtype_size(out->dtype);
  for (int64_t i = 0; i < cnt; i++) {
    unravel(&out->shape, i, c);
    for (int k = 0; k < n->a.n_axes; k++) {
      int ax = n->a.axes[k];
      c[ax] = x->shape.dims[ax] - 1 - c[ax];
    }
    copy_elem(out->data, i, x->data, ravel(&x->shape, c), es);
  }
  return KILN_OK;
}

/* Wraps a negative index once and checks the range (the interpreter's half of the
 * out-of-range rule; compiled code clamps instead). */
static kiln_status fix_index(const kiln_node *n, kiln_diag *d, int64_t *idx, int64_t dim, int64_t at) {
  int64_t v = *idx;
  if (v < 0) v += dim;
  if (v < 0 || v >= dim)
    return NODE_ERR(KILN_ERR_INVALID_ARGUMENT, "index %lld out of range [-%lld, %lld) at indices element %lld",
                    (long long)*idx, (long long)dim, (long long)dim, (long long)at);
  *idx = v;
  return KILN_OK;
}

static kiln_status eval_gather(const kiln_node *n, const kiln_rt_tensor *ins, kiln_rt_tensor *out,
                               kiln_diag *d) {
  const kiln_rt_tensor *x = &ins[0], *ix = &ins[1];
  int64_t cnt = kiln_shape_numel(&out->shape), c[KILN_MAX_RANK], ic[KILN_MAX_RANK], xc[KILN_MAX_RANK];
  size_t es = kiln_dtype_size(out->dtype);
  int ax = n->a.axis, q = ix->shape.rank, r = x->shape.rank;
  for (int64_t i = 0; i < cnt; i++) {
    unravel(&out->shape, i, c);
    for (int k = 0; k < q; k++) ic[k] = c[ax + k];
    int64_t at = ravel(&ix->shape, ic);
    int64_t idx = kiln_rt_get_i64(ix->dtype, ix->data, at);
    kiln_status st_ = fix_index(n, d, &idx, x->shape.dims[ax], at);
    if (st_) return st_;
    for (int k = 0; k < ax; k++) xc[k] = c[k];
    xc[ax] = idx;
    for (int k = ax + 1; k < r; k++) xc[k] = c[k - 1 + q];
    copy_elem(out->data, i, x->data, ravel(&x->shape, xc), es);
  }
  return KILN_OK;
}

static kiln_status eval_gather_elements(const kiln_node *n, const kiln_rt_tensor *ins,
                                        kiln_rt_tensor *out, kiln_diag *d) {
  const kiln_rt_tensor *x = &ins[0], *ix = &ins[1];
  int64_t cnt = kiln_shape_numel(&out->shape), c[KILN_MAX_RANK];
  size_t es = kiln_dtype_size(out->dtype);
  int ax = n->a.axis;
  for (int64_t i = 0; i < cnt; i++) {
    unravel(&out->shape, i, c);
    int64_t idx = kiln_rt_get_i64(ix->dtype, ix->data, i);
    kiln_status st_ = fix_index(n, d, &idx, x->shape.dims[ax], i);
    if (st_) return st_;
    c[ax] = idx;
    copy_elem(out->data, i, x->data, ravel(&x->shape, c), es);
  }
  return KILN_OK;
}

static kiln_status eval_iota(const kiln_node *n, kiln_rt_tensor *out) {
  int64_t cnt = kiln_shape_numel(&out->shape), c[KILN_MAX_RANK];
  for (int64_t i = 0; i < cnt; i++) {
    unravel(&out->shape, i, c);
    kiln_rt_set_i64(out->dtype, out->data, i, c[n->a.axis]);
  }
  return KILN_OK;
}

/* ------------------------------------------------------------------ reductions */
static kiln_status eval_reduce(const kiln_allocator *al, const kiln_node *n, const kiln_rt_tensor *x,
                               kiln_rt_tensor *out, kiln_diag *d) {
  if (n->a.n_axes == 0) { /* identity */
    if (kiln_rt_tensor_nbytes(out)) memmove(out->data, x->data, kiln_rt_tensor_nbytes(out));
    return KILN_OK;
  }
  kiln_shape ks = x->shape; /* the input shape with reduced dims set to 1 */
  for (int k = 0; k < n->a.n_axes; k++) ks.dims[n->a.axes[k]] = 1;
  int64_t on = kiln_shape_numel(&ks), xn = kiln_shape_numel(&x->shape), c[KILN_MAX_RANK];
  bool fl = is_float(x->dtype);
  double *af = fl ? kiln_ir_malloc(al, (size_t)on * sizeof(double)) : NULL;
  int64_t *ai = fl ? NULL : kiln_ir_malloc(al, (size_t)on * sizeof(int64_t));
  if (!af && !ai) return NODE_ERR(KILN_ERR_OUT_OF_MEMORY, "out of memory");
  kiln_op op = n->op, comb = kiln_op_combine(op);
  KILN_ASSERT(comb != KILN_OP_COUNT);
  for (int64_t o = 0; o < on; o++) {
    if (fl) af[o] = op == KILN_OP_reduce_sum ? 0 : op == KILN_OP_reduce_prod ? 1
                  : op == KILN_OP_reduce_max ? dtype_lowest(x->dtype) : INFINITY;
    else ai[o] = op == KILN_OP_reduce_sum ? 0 : op == KILN_OP_reduce_prod ? 1
               : op == KILN_OP_reduce_max ? dtype_min_i(x->dtype) : dtype_max_i(x->dtype);
  }
  for (int64_t i = 0; i < xn; i++) {
    unravel(&x->shape, i, c);
    for (int k = 0; k < n->a.n_axes; k++) c[n->a.axes[k]] = 0;
    int64_t o = ravel(&ks, c);
    /* folded with the elementwise op's own semantics (add, mul, max, min) */
    if (fl) af[o] = binary_f(comb, 0, af[o], kiln_rt_get_f64(x->dtype, x->data, i));
    else (void)binary_i(comb, 0, ai[o], kiln_rt_get_i64(x->dtype, x->data, i), &ai[o]);
  }
  /* keepdims or not, the output's row-major order equals ks's. */
  for (int64_t o = 0; o < on; o++) {
    if (fl) kiln_rt_set_f64(out->dtype, out->data, o, af[o]);
    else kiln_rt_set_i64(out->dtype, out->data, o, ai[o]);
  }
  kiln_ir_free(al, af);
  kiln_ir_free(al, ai);
  return KILN_OK;
}

/* > 0 when v beats best, 0 on a tie. NaN beats every number (numpy's argmax/argmin). */
static int arg_cmp_f(double v, double best, bool is_max) {
  bool vn = v != v, bn = best != best;
  if (vn || bn) return (int)vn - (int)bn;
  if (v == best) return 0;
  return (is_max ? v > best : v < best) ? 1 : -1;
}

static kiln_status eval_arg(const kiln_node *n, const kiln_rt_tensor *x, kiln_rt_tensor *out,
                            kiln_diag *d) {
  int ax = n->a.axis;
  int64_t len = x->shape.dims[ax], st[KILN_MAX_RANK], c[KILN_MAX_RANK];
  kiln_shape ks = x->shape;
  ks.dims[ax] = 1;
  int64_t on = kiln_shape_numel(&ks);
  if (len == 0 && on > 0) return NODE_ERR(KILN_ERR_INVALID_ARGUMENT, "%s over an empty axis %d", kiln_op_name(n->op), ax);
  kiln_shape_strides(&x->shape, st);
  bool is_max = n->op == KILN_OP_argmax, fl = is_float(x->dtype), last = n->a.kind == 1;
  for (int64_t o = 0; o < on; o++) {
    unravel(&ks, o, c);
    int64_t base = ravel(&x->shape, c), best = 0;
    for (int64_t j = 1; j < len; j++) {
      int cmp;
      if (fl) {
        cmp = arg_cmp_f(kiln_rt_get_f64(x->dtype, x->data, base + j * st[ax]),
                        kiln_rt_get_f64(x->dtype, x->data, base + best * st[ax]), is_max);
      } else {
        int64_t v = kiln_rt_get_i64(x->dtype, x->data, base + j * st[ax]);
        int64_t b = kiln_rt_get_i64(x->dtype, x->data, base + best * st[ax]);
        cmp = v == b ? 0 : (is_max ? v > b : v < b) ? 1 : -1;
      }
      if (cmp > 0 || (cmp == 0 && last)) best = j;
    }
    kiln_rt_set_i64(out->dtype, out->data, o, best);
  }
  return KILN_OK;
}

/* ------------------------------------------------------------------ window and contraction */
static kiln_status eval_pool(const kiln_allocator *al, const kiln_node *n, const kiln_rt_tensor *x,
                             kiln_rt_tensor *out, kiln_diag *d) {
  const kiln_attrs *a = &n->a;
  int k = x->shape.rank - 2;
  if (k < 0) return NODE_ERR(KILN_ERR_SHAPE, "pool input needs rank >= 2");
  kiln_shape win = {.rank = k}, isp = {.rank = k}, osp = {.rank = k};
  for (int s = 0; s < k; s++) {
    win.dims[s] = a->window[s];
    isp.dims[s] = x->shape.dims[2 + s];
    osp.dims[s] = out->shape.dims[2 + s];
  }
  int64_t nc = x->shape.dims[0] * x->shape.dims[1], in_sp = kiln_shape_numel(&isp);
  int64_t out_sp = kiln_shape_numel(&osp), wn = kiln_shape_numel(&win);
  double *X = to_f64(al, x);
  if (!X) return NODE_ERR(KILN_ERR_OUT_OF_MEMORY, "out of memory");
  int64_t oc[KILN_MAX_RANK] = {0}, wc[KILN_MAX_RANK] = {0}, pc[KILN_MAX_RANK] = {0};
  for (int64_t p = 0; p < nc; p++) {
    for (int64_t o = 0; o < out_sp; o++) {
      unravel(&osp, o, oc);
      double acc = a->kind == KILN_POOL_MAX ? dtype_lowest(x->dtype) : 0.0;
      int64_t cnt_in = 0, cnt_pad = 0; /* positions inside [0, in) and inside [-lo, in+hi) */
      for (int64_t w = 0; w < wn; w++) {
        unravel(&win, w, wc);
        bool in = true, in_padded = true;
        for (int s = 0; s < k; s++) {
          pc[s] = oc[s] * a->strides[s] - a->lo[s] + wc[s] * a->dilations[s];
          if (pc[s] < 0 || pc[s] >= isp.dims[s]) in = false;
          if (pc[s] < -a->lo[s] || pc[s] >= isp.dims[s] + a->hi[s]) in_padded = false;
        }
        cnt_pad += in_padded;
        if (!in) continue; /* padding never wins a max and adds 0 to a sum */
        cnt_in++;
        double v = X[p * in_sp + ravel(&isp, pc)];
        acc = a->kind == KILN_POOL_MAX ? fmax_nan(acc, v) : acc + v;
      }
      if (a->kind == KILN_POOL_AVG) {
        int64_t div = a->count_include_pad ? cnt_pad : cnt_in;
        acc = div ? acc / (double)div : 0.0; /* boundary: a window wholly in padding */
      }
      kiln_rt_set_f64(out->dtype, out->data, p * out_sp + o, acc);
    }
  }
  kiln_ir_free(al, X);
  return KILN_OK;
}

static kiln_status eval_dot(const kiln_allocator *al, const kiln_node *n, const kiln_rt_tensor *ins,
                            kiln_rt_tensor *out, kiln_diag *d) {
  const kiln_rt_tensor *A = &ins[0], *B = &ins[1];
  int r = A->shape.rank;
  if (r < 2 || B->shape.rank != r) return NODE_ERR(KILN_ERR_SHAPE, "dot needs operands of equal rank >= 2");
  int64_t M = A->shape.dims[r - 2], K = A->shape.dims[r - 1], N = B->shape.dims[r - 1];
  if (B->shape.dims[r - 2] != K) return NODE_ERR(KILN_ERR_SHAPE, "contracting dims differ (%lld vs %lld)",
                                                 (long long)K, (long long)B->shape.dims[r - 2]);
  int64_t nb = kiln_shape_numel(&out->shape) / (M * N > 0 ? M * N : 1);
  if (M * N == 0) return KILN_OK;
  bool fl = is_float(out->dtype);
  if (fl) {
    double *a = to_f64(al, A), *b = to_f64(al, B), *c = kiln_ir_malloc(al, (size_t)(M * N) * sizeof(double));
    if (!a || !b || !c) {
      kiln_ir_free(al, a); kiln_ir_free(al, b); kiln_ir_free(al, c);
      return NODE_ERR(KILN_ERR_OUT_OF_MEMORY, "out of memory");
    }
    for (int64_t bt = 0; bt < nb; bt++) {
      const double *ab = a + bt * M * K, *bb = b + bt * K * N;
      memset(c, 0, (size_t)(M * N) * sizeof(double));
      for (int64_t i = 0; i < M; i++)
        for (int64_t p = 0; p < K; p++)
          for (int64_t j = 0; j < N; j++) c[i * N + j] += ab[i * K + p] * bb[p * N + j];
      for (int64_t i = 0; i < M * N; i++) kiln_rt_set_f64(out->dtype, out->data, bt * M * N + i, c[i]);
    }
    kiln_ir_free(al, a); kiln_ir_free(al, b); kiln_ir_free(al, c);
  } else {
    int64_t *a = to_i64(al, A), *b = to_i64(al, B);
    if (!a || !b) {
      kiln_ir_free(al, a); kiln_ir_free(al, b);
      return NODE_ERR(KILN_ERR_OUT_OF_MEMORY, "out of memory");
    }
    for (int64_t bt = 0; bt < nb; bt++)
      for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
          int64_t acc = 0;
          for (int64_t p = 0; p < K; p++) acc = wadd(acc, wmul(a[bt * M * K + i * K + p], b[bt * K * N + p * N + j]));
          kiln_rt_set_i64(out->dtype, out->data, bt * M * N + i * N + j, acc);
        }
    kiln_ir_free(al, a); kiln_ir_free(al, b);
  }
  return KILN_OK;
}

static kiln_status eval_conv(const kiln_allocator *al, const kiln_node *n, const kiln_rt_tensor *ins,
                             kiln_rt_tensor *out, kiln_diag *d) {
  const kiln_rt_tensor *x = &ins[0], *w = &ins[1];
  const kiln_attrs *a = &n->a;
  int k = x->shape.rank - 2;
  if (k < 0 || w->shape.rank != x->shape.rank) return NODE_ERR(KILN_ERR_SHAPE, "conv operands need equal rank >= 2");
  int64_t N = x->shape.dims[0], Ci = x->shape.dims[1], Co = w->shape.dims[0], G = a->groups > 0 ? a->groups : 1;
  int64_t cig = w->shape.dims[1], cog = Co / G;
  if (cig * G != Ci || cog * G != Co)
    return NODE_ERR(KILN_ERR_SHAPE, "channels (in %lld, weight %lld, out %lld) do not fit groups=%lld",
                    (long long)Ci, (long long)cig, (long long)Co, (long long)G);
  kiln_shape ksp = {.rank = k}, isp = {.rank = k}, osp = {.rank = k};
  for (int s = 0; s < k; s++) {
    ksp.dims[s] = w->shape.dims[2 + s];
    isp.dims[s] = x->shape.dims[2 + s];
    osp.dims[s] = out->shape.dims[2 + s];
  }
  int64_t in_sp = kiln_shape_numel(&isp), k_sp = kiln_shape_numel(&ksp), out_sp = kiln_shape_numel(&osp);
  bool fl = is_float(out->dtype);
  double *X = fl ? to_f64(al, x) : NULL, *W = fl ? to_f64(al, w) : NULL;
  int64_t *XI = fl ? NULL : to_i64(al, x), *WI = fl ? NULL : to_i64(al, w);
  if (fl ? (!X || !W) : (!XI || !WI)) {
    kiln_ir_free(al, X); kiln_ir_free(al, W); kiln_ir_free(al, XI); kiln_ir_free(al, WI);
    return NODE_ERR(KILN_ERR_OUT_OF_MEMORY, "out of memory");
  }
  int64_t oc[KILN_MAX_RANK] = {0}, kc[KILN_MAX_RANK] = {0}, pc[KILN_MAX_RANK] = {0};
  for (int64_t b = 0; b < N; b++)
    for (int64_t co = 0; co < Co; co++) {
      int64_t g = co / cog;
      for (int64_t o = 0; o < out_sp; o++) {
        unravel(&osp, o, oc);
        double acc = 0;
        int64_t acci = 0;
        for (int64_t kp = 0; kp < k_sp; kp++) {
          unravel(&ksp, kp, kc);
          bool in = true;
          for (int s = 0; s < k; s++) {
            pc[s] = oc[s] * a->strides[s] - a->lo[s] + kc[s] * a->dilations[s];
            if (pc[s] < 0 || pc[s] >= isp.dims[s]) in = false;
          }
          if (!in) continue;
          int64_t xo = ravel(&isp, pc);
          for (int64_t ci = 0; ci < cig; ci++) {
            int64_t xi = (b * Ci + g * cig + ci) * in_sp + xo, wi = (co * cig + ci) * k_sp + kp;
            if (fl) acc += X[xi] * W[wi];
            else acci = wadd(acci, wmul(XI[xi], WI[wi]));
          }
        }
        int64_t oi = (b * Co + co) * out_sp + o;
        if (fl) kiln_rt_set_f64(out->dtype, out->data, oi, acc);
        else kiln_rt_set_i64(out->dtype, out->data, oi, acci);
      }
    }
  kiln_ir_free(al, X); kiln_ir_free(al, W); kiln_ir_free(al, XI); kiln_ir_free(al, WI);
  return KILN_OK;
}

/* conv_cl / pool_cl: the channels-first op on its operands permuted to channels first,
 * the result permuted back (one definition of the arithmetic). */
static kiln_status eval_cl(const kiln_allocator *al, const kiln_node *n, const kiln_rt_tensor *ins,
                           kiln_rt_tensor *out, kiln_diag *d) {
  bool conv = n->op == KILN_OP_conv_cl;
  int32_t r = ins[0].shape.rank;
  if (r < 3 || (conv && ins[1].shape.rank != r))
    return NODE_ERR(KILN_ERR_SHAPE, "channels-last operands need equal rank >= 3");
  kiln_node pn = *n; /* a permute node for eval_permute: only a.perm is read */
  kiln_rt_tensor cf[2], co = {out->dtype, {0}, NULL};
  void *mem[3] = {NULL, NULL, NULL};
  kiln_status st = KILN_OK;
  for (int i = 0; i < (conv ? 2 : 1) && st == KILN_OK; i++) {
    if (i == 0) kiln_cl_perm(r, false, pn.a.perm);
    else kiln_cl_weight_perm(r, false, pn.a.perm);
    cf[i] = (kiln_rt_tensor){ins[i].dtype, kiln_shape_permuted(&ins[i].shape, pn.a.perm), NULL};
    size_t nb = kiln_rt_tensor_nbytes(&cf[i]);
    if (!(cf[i].data = mem[i] = kiln_ir_malloc(al, nb ? nb : 1))) st = NODE_ERR(KILN_ERR_OUT_OF_MEMORY, "out of memory");
    else st = eval_permute(&pn, &ins[i], &cf[i]);
  }
  int32_t to_cl[KILN_MAX_RANK];
  kiln_cl_perm(r, true, to_cl);
  kiln_cl_perm(r, false, pn.a.perm);
  co.shape = kiln_shape_permuted(&out->shape, pn.a.perm);
  size_t nb = kiln_rt_tensor_nbytes(&co);
  if (st == KILN_OK && !(co.data = mem[2] = kiln_ir_malloc(al, nb ? nb : 1)))
    st = NODE_ERR(KILN_ERR_OUT_OF_MEMORY, "out of memory");
  if (st == KILN_OK) {
    pn.op = conv ? KILN_OP_conv : KILN_OP_pool;
    st = conv ? eval_conv(al, &pn, cf, &co, d) : eval_pool(al, &pn, &cf[0], &co, d);
  }
  if (st == KILN_OK) {
    memcpy(pn.a.perm, to_cl, sizeof to_cl);
    st = eval_permute(&pn, &co, out);
  }
  for (int i = 0; i < 3; i++) kiln_ir_free(al, mem[i]);
  return st;
}

/* ------------------------------------------------------------------ opaque */
typedef struct topk_item {
  double f;
  int64_t i, idx;
} topk_item;

typedef struct topk_order {
  bool fl, largest;
} topk_order;

static int topk_cmp(const void *pa, const void *pb, void *ctx) {
  const topk_item *a = pa, *b = pb;
  const topk_order *ord = ctx;
  int c;
  if (ord->fl) {
    bool an = a->f != a->f, bn = b->f != b->f;
    if (an || bn) c = (int)an - (int)bn; /* NaN above +inf */
    else c = a->f < b->f ? -1 : a->f > b->f;
  } else {
    c = a->i < b->i ? -1 : a->i > b->i;
  }
  if (ord->largest) c = -c;
  if (c) return c;
  return a->idx < b->idx ? -1 : a->idx > b->idx; /* ties: lower index first */
}

static kiln_status eval_topk(const kiln_allocator *al, const kiln_node *n, const kiln_rt_tensor *x,
                             kiln_rt_tensor *out, kiln_diag *d) {
  int ax = n->a.axis;
  int64_t len = x->shape.dims[ax], kk = out->shape.dims[ax], st[KILN_MAX_RANK], ost[KILN_MAX_RANK], c[KILN_MAX_RANK];
  if (kk > len) return NODE_ERR(KILN_ERR_SHAPE, "k=%lld exceeds the axis size %lld", (long long)kk, (long long)len);
  kiln_shape ks = x->shape;
  ks.dims[ax] = 1;
  int64_t lines = kiln_shape_numel(&ks);
  kiln_shape_strides(&x->shape, st);
  kiln_shape_strides(&out->shape, ost);
  topk_order ord = {is_float(x->dtype), n->a.kind == 1};
  topk_item *items = kiln_ir_malloc(al, (size_t)(len > 0 ? len : 1) * sizeof *items);
  if (!items) return NODE_ERR(KILN_ERR_OUT_OF_MEMORY, "out of memory");
  for (int64_t l = 0; l < lines && kk > 0; l++) {
    unravel(&ks, l, c);
    int64_t base = ravel(&x->shape, c), obase = ravel(&out->shape, c);
    for (int64_t j = 0; j < len; j++) {
      int64_t e = base + j * st[ax];
      items[j].f = ord.fl ? kiln_rt_get_f64(x->dtype, x->data, e) : 0;
      items[j].i = ord.fl ? 0 : kiln_rt_get_i64(x->dtype, x->data, e);
      items[j].idx = j;
    }
    qsort_r(items, (size_t)len, sizeof *items, topk_cmp, &ord);
    for (int64_t j = 0; j < kk; j++) kiln_rt_set_i64(out->dtype, out->data, obase + j * ost[ax], items[j].idx);
  }
  kiln_ir_free(al, items);
  return KILN_OK;
}

static kiln_status eval_nonzero(const kiln_node *n, const kiln_rt_tensor *x, kiln_rt_tensor *out,
                                kiln_diag *d) {
  int64_t xn = kiln_shape_numel(&x->shape), c[KILN_MAX_RANK], found = 0;
  int r = x->shape.rank;
  bool fl = is_float(x->dtype);
  for (int64_t i = 0; i < xn; i++)
    found += fl ? kiln_rt_get_f64(x->dtype, x->data, i) != 0 : kiln_rt_get_i64(x->dtype, x->data, i) != 0;
  int64_t cnt = out->shape.rank == 2 ? out->shape.dims[1] : -1;
  if (out->shape.rank != 2 || out->shape.dims[0] != r || cnt != found)
    return NODE_ERR(KILN_ERR_SHAPE, "input has %lld nonzero elements but the node's shape does not say [%d, %lld]",
                    (long long)found, r, (long long)found);
  int64_t j = 0;
  for (int64_t i = 0; i < xn; i++) {
    bool nz = fl ? kiln_rt_get_f64(x->dtype, x->data, i) != 0 : kiln_rt_get_i64(x->dtype, x->data, i) != 0;
    if (!nz) continue;
    unravel(&x->shape, i, c);
    for (int k = 0; k < r; k++) kiln_rt_set_i64(out->dtype, out->data, k * cnt + j, c[k]);
    j++;
  }
  return KILN_OK;
}

static kiln_status eval_scatter(const kiln_node *n, const kiln_rt_tensor *ins, kiln_rt_tensor *out,
                                kiln_diag *d) {
  const kiln_rt_tensor *x = &ins[0], *ix = &ins[1], *up = &ins[2];
  int ax = n->a.axis, kind = n->a.kind;
  size_t es = kiln_dtype_size(out->dtype);
  if (!kiln_shape_eq(&ix->shape, &up->shape) || ix->shape.rank != x->shape.rank)
    return NODE_ERR(KILN_ERR_SHAPE, "indices and updates must have equal shapes of the data's rank");
  if (kiln_rt_tensor_nbytes(out)) memmove(out->data, x->data, kiln_rt_tensor_nbytes(out)); /* may alias */
  int64_t un = kiln_shape_numel(&up->shape), c[KILN_MAX_RANK];
  bool fl = is_float(out->dtype);
  for (int64_t i = 0; i < un; i++) {
    unravel(&up->shape, i, c);
    int64_t idx = kiln_rt_get_i64(ix->dtype, ix->data, i);
    kiln_status st_ = fix_index(n, d, &idx, x->shape.dims[ax], i);
    if (st_) return st_;
    c[ax] = idx;
    int64_t t = ravel(&x->shape, c);
    if (kind == 0) {
      copy_elem(out->data, t, up->data, i, es);
    } else if (fl) {
      double o = kiln_rt_get_f64(out->dtype, out->data, t), u = kiln_rt_get_f64(up->dtype, up->data, i);
      double r = kind == 1 ? o + u : kind == 2 ? o * u : kind == 3 ? fmax_nan(o, u) : fmin_nan(o, u);
      kiln_rt_set_f64(out->dtype, out->data, t, r);
    } else {
      int64_t o = kiln_rt_get_i64(out->dtype, out->data, t), u = kiln_rt_get_i64(up->dtype, up->data, i);
      int64_t r = kind == 1 ? wadd(o, u) : kind == 2 ? wmul(o, u) : kind == 3 ? (o > u ? o : u) : (o < u ? o : u);
      kiln_rt_set_i64(out->dtype, out->data, t, r);
    }
  }
  return KILN_OK;
}

/* ------------------------------------------------------------------ one node */
kiln_status kiln_rt_eval_node(const kiln_graph *g, const kiln_node *n, const kiln_rt_tensor *ins,
                              kiln_rt_tensor *out, kiln_diag *d) {
  /* g may be NULL (kiln_rt_opaque has no graph): it only supplies the allocator. */
  const kiln_allocator *al = g ? g->alloc : NULL;
  if ((unsigned)n->op >= KILN_OP_COUNT) return NODE_ERR(KILN_ERR_INTERNAL, "unknown op %d", (int)n->op);
  const kiln_op_info *info = &kiln_op_table[n->op];
  if (info->arity >= 0 ? n->n_in != info->arity : n->n_in < 1)
    return NODE_ERR(KILN_ERR_INTERNAL, "has %d inputs, op takes %d", n->n_in, info->arity);
  if (info->category == KILN_CAT_ELEMENTWISE)
    for (int k = 0; k < n->n_in; k++)
      if (!kiln_shape_eq(&ins[k].shape, &out->shape)) {
        char a[160], b[160];
        shape_str(&ins[k].shape, a, sizeof a);
        shape_str(&out->shape, b, sizeof b);
        return NODE_ERR(KILN_ERR_SHAPE, "input %d has shape %s, elementwise output %s", k, a, b);
      }
  switch (n->op) {
  case KILN_OP_input:
  case KILN_OP_constant:
    return NODE_ERR(KILN_ERR_INTERNAL, "leaves are supplied by the caller, not evaluated");
  case KILN_OP_neg: case KILN_OP_abs: case KILN_OP_exp: case KILN_OP_log: case KILN_OP_sqrt:
  case KILN_OP_rsqrt: case KILN_OP_recip: case KILN_OP_tanh: case KILN_OP_sigmoid: case KILN_OP_erf:
  case KILN_OP_sin: case KILN_OP_cos: case KILN_OP_floor: case KILN_OP_ceil: case KILN_OP_round:
  case KILN_OP_sign: case KILN_OP_not: case KILN_OP_isnan: case KILN_OP_atan:
    return eval_unary(n, &ins[0], out, d);
  case KILN_OP_add: case KILN_OP_sub: case KILN_OP_mul: case KILN_OP_div: case KILN_OP_pow:
  case KILN_OP_max: case KILN_OP_min: case KILN_OP_mod: case KILN_OP_and: case KILN_OP_or:
  case KILN_OP_xor: case KILN_OP_eq: case KILN_OP_ne: case KILN_OP_lt: case KILN_OP_le:
  case KILN_OP_gt: case KILN_OP_ge:
    return eval_binary(n, ins, out, d);
  case KILN_OP_select: return eval_select(ins, out);
  case KILN_OP_cast: return eval_cast(&ins[0], out);
  case KILN_OP_reshape:
    if (kiln_shape_numel(&ins[0].shape) != kiln_shape_numel(&out->shape))
      return NODE_ERR(KILN_ERR_SHAPE, "reshape changes the element count");
    if (kiln_rt_tensor_nbytes(out)) memmove(out->data, ins[0].data, kiln_rt_tensor_nbytes(out));
    return KILN_OK;
  case KILN_OP_permute: return eval_permute(n, &ins[0], out);
  case KILN_OP_broadcast: return eval_broadcast(n, &ins[0], out, d);
  case KILN_OP_slice: return eval_slice(n, &ins[0], out, d);
  case KILN_OP_pad: return eval_pad(n, &ins[0], out);
  case KILN_OP_concat: return eval_concat(n, ins, out, d);
  case KILN_OP_reverse: return eval_reverse(n, &ins[0], out);
  case KILN_OP_gather: return eval_gather(n, ins, out, d);
  case KILN_OP_gather_elements: return eval_gather_elements(n, ins, out, d);
  case KILN_OP_iota: return eval_iota(n, out);
  case KILN_OP_reduce_sum: case KILN_OP_reduce_max: case KILN_OP_reduce_min: case KILN_OP_reduce_prod:
    return eval_reduce(al, n, &ins[0], out, d);
  case KILN_OP_argmax: case KILN_OP_argmin: return eval_arg(n, &ins[0], out, d);
  case KILN_OP_pool: return eval_pool(al, n, &ins[0], out, d);
  case KILN_OP_dot: return eval_dot(al, n, ins, out, d);
  case KILN_OP_conv: return eval_conv(al, n, ins, out, d);
  case KILN_OP_conv_cl: case KILN_OP_pool_cl: return eval_cl(al, n, ins, out, d);
  case KILN_OP_topk: return eval_topk(al, n, &ins[0], out, d);
  case KILN_OP_nonzero: return eval_nonzero(n, &ins[0], out, d);
  case KILN_OP_scatter: return eval_scatter(n, ins, out, d);
  case KILN_OP_COUNT: break;
  }
  return NODE_ERR(KILN_ERR_UNSUPPORTED, "no reference semantics");
}

/* ------------------------------------------------------------------ whole graphs */
static kiln_status check_tensor(const char *what, int32_t i, const char *name, kiln_dtype dt,
                                const kiln_shape *s, const kiln_rt_tensor *t, kiln_diag *d) {
  if (t->dtype == dt && kiln_shape_eq(&t->shape, s) && (t->data || kiln_shape_numel(s) == 0))
    return KILN_OK;
  char want[160], got[160];
  shape_str(s, want, sizeof want);
  shape_str(&t->shape, got, sizeof got);
  if (!t->data && t->dtype == dt && kiln_shape_eq(&t->shape, s))
    return kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT, "%s %d ('%s') has no data", what, i, name);
  return kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT, "%s %d ('%s'): expected %s%s, got %s%s", what, i,
                       name, kiln_dtype_name(dt), want, kiln_dtype_name(t->dtype), got);
}

/* Evaluates the nodes with keep[i] (all of them when keep is NULL) into vals, which the
 * caller zeroed. Leaves: constants alias the store, inputs are copied from `in`. */
static kiln_status eval_nodes(const kiln_graph *g, const kiln_rt_tensor *in, int32_t n_in,
                              const bool *keep, kiln_rt_tensor *vals, kiln_diag *d) {
  kiln_rt_tensor *ins = NULL;
  int32_t cap_ins = 0;
  kiln_status st = KILN_OK;
  for (int32_t i = 0; i < g->n_nodes && st == KILN_OK; i++) {
    if (keep && !keep[i]) continue;
    const kiln_node *n = &g->nodes[i];
    kiln_rt_tensor *v = &vals[i];
    v->dtype = n->dtype;
    v->shape = n->shape;
    if (n->op == KILN_OP_constant) {
      const kiln_const *c = n->index >= 0 && n->index < g->n_consts ? &g->consts[n->index] : NULL;
      if (!c || c->dtype != n->dtype || kiln_shape_numel(&c->shape) != kiln_shape_numel(&n->shape)) {
        st = NODE_ERR(KILN_ERR_INTERNAL, "constant index %d does not match the store", n->index);
        break;
      }
      v->data = c->data;
      continue;
    }
    v->data = kiln_ir_malloc(g->alloc, kiln_rt_tensor_nbytes(v));
    if (!v->data) {
      st = NODE_ERR(KILN_ERR_OUT_OF_MEMORY, "out of memory for %zu bytes", kiln_rt_tensor_nbytes(v));
      break;
    }
    if (n->op == KILN_OP_input) {
      if (n->index < 0 || n->index >= n_in) {
        st = NODE_ERR(KILN_ERR_INVALID_ARGUMENT, "graph input %d was not supplied (%d given)", n->index, n_in);
        break;
      }
      if (kiln_rt_tensor_nbytes(v)) memcpy(v->data, in[n->index].data, kiln_rt_tensor_nbytes(v));
      continue;
    }
    if (n->n_in > cap_ins) {
      kiln_ir_free(g->alloc, ins);
      cap_ins = n->n_in;
      ins = kiln_ir_malloc(g->alloc, sizeof *ins * (size_t)cap_ins);
      if (!ins) {
        st = NODE_ERR(KILN_ERR_OUT_OF_MEMORY, "out of memory");
        break;
      }
    }
    for (int k = 0; k < n->n_in; k++) {
      int32_t src = n->in[k];
      if (src < 0 || src >= i) {
        st = NODE_ERR(KILN_ERR_INTERNAL, "input %d refers to node %d (not earlier)", k, src);
        break;
      }
      ins[k] = vals[src];
    }
    if (st == KILN_OK) st = kiln_rt_eval_node(g, n, ins, v, d);
  }
  kiln_ir_free(g->alloc, ins);
  return st;
}

void kiln_rt_values_free(const kiln_graph *g, kiln_rt_tensor *vals) {
  if (!vals) return;
  for (int32_t i = 0; i < g->n_nodes; i++)
    if (g->nodes[i].op != KILN_OP_constant) kiln_ir_free(g->alloc, vals[i].data);
  kiln_ir_free(g->alloc, vals);
}

static kiln_status check_inputs(const kiln_graph *g, const kiln_rt_tensor *in, int32_t n_in, kiln_diag *d) {
  if (n_in != g->n_inputs)
    return kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT, "graph '%s' takes %d inputs, %d given", g->name,
                         g->n_inputs, n_in);
  for (int32_t i = 0; i < n_in; i++) {
    const kiln_node *n = &g->nodes[g->inputs[i].node];
    kiln_status st_ = check_tensor("input", i, g->inputs[i].name, n->dtype, &n->shape, &in[i], d);
    if (st_) return st_;
  }
  return KILN_OK;
}

kiln_status kiln_rt_interpret_values(const kiln_graph *g, const kiln_rt_tensor *in, int32_t n_in,
                                     kiln_rt_tensor **vals_out, kiln_diag *d) {
  *vals_out = NULL;
  kiln_status st = check_inputs(g, in, n_in, d);
  if (st) return st;
  kiln_rt_tensor *vals = kiln_ir_malloc(g->alloc, sizeof *vals * (size_t)(g->n_nodes ? g->n_nodes : 1));
  if (!vals) return kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory interpreting graph '%s'", g->name);
  memset(vals, 0, sizeof *vals * (size_t)g->n_nodes);
  if ((st = eval_nodes(g, in, n_in, NULL, vals, d))) {
    kiln_rt_values_free(g, vals);
    return st;
  }
  *vals_out = vals;
  return KILN_OK;
}

kiln_status kiln_rt_interpret(const kiln_graph *g, const kiln_rt_tensor *in, int32_t n_in,
                              kiln_rt_tensor *out, int32_t n_out, kiln_diag *d) {
  if (n_out != g->n_outputs)
    return kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT, "graph '%s' has %d outputs, %d given", g->name,
                         g->n_outputs, n_out);
  for (int32_t i = 0; i < n_out; i++) {
    const kiln_node *n = &g->nodes[g->outputs[i].node];
    kiln_status st_ = check_tensor("output", i, g->outputs[i].name, n->dtype, &n->shape, &out[i], d);
    if (st_) return st_;
  }
  kiln_rt_tensor *vals;
  kiln_status st = kiln_rt_interpret_values(g, in, n_in, &vals, d);
  if (st) return st;
  for (int32_t i = 0; i < n_out; i++)
    if (kiln_rt_tensor_nbytes(&out[i]))
      memcpy(out[i].data, vals[g->outputs[i].node].data, kiln_rt_tensor_nbytes(&out[i]));
  kiln_rt_values_free(g, vals);
  return KILN_OK;
}

kiln_status kiln_rt_fold_value(kiln_graph *g, int32_t v, int32_t *out_node, kiln_diag *d) {
  if (v < 0 || v >= g->n_nodes)
    return kiln_diag_set(d, KILN_ERR_INTERNAL, "fold: node %d does not exist", v);
  if (g->nodes[v].op == KILN_OP_constant) { /* already folded */
    *out_node = v;
    return KILN_OK;
  }
  int32_t cnt = v + 1;
  bool *keep = kiln_ir_malloc(g->alloc, (size_t)cnt);
  kiln_rt_tensor *vals = kiln_ir_malloc(g->alloc, sizeof *vals * (size_t)cnt);
  kiln_status st = KILN_OK;
  if (!keep || !vals) {
    st = kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory folding node '%s'", g->nodes[v].name);
    goto done;
  }
  memset(keep, 0, (size_t)cnt);
  memset(vals, 0, sizeof *vals * (size_t)cnt);
  keep[v] = true; /* inputs precede their users, so one backward sweep marks the cone */
  for (int32_t i = v; i >= 0; i--) {
    if (!keep[i]) continue;
    const kiln_node *n = &g->nodes[i];
    if (n->op == KILN_OP_input) {
      st = kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT, "cannot fold node '%s': it depends on graph input '%s'",
                         g->nodes[v].name, n->name);
      goto done;
    }
    for (int k = 0; k < n->n_in; k++)
      if (n->in[k] >= 0 && n->in[k] < i) keep[n->in[k]] = true;
  }
  /* eval_nodes walks all of g's nodes; restrict it to the cone of v with a view of g. */
  kiln_graph view = *g;
  view.n_nodes = cnt;
  if ((st = eval_nodes(&view, NULL, 0, keep, vals, d))) goto done;
  const char *name = g->nodes[v].name; /* arena string: survives nodes[] reallocation */
  kiln_node nv = g->nodes[v];
  int32_t ci = kiln_ir_add_const(g, nv.dtype, &nv.shape, vals[v].data, name);
  int32_t id = ci < 0 ? -1 : kiln_ir_append(g, KILN_OP_constant, nv.dtype, &nv.shape, 0, NULL, NULL, name);
  if (id < 0) {
    st = kiln_diag_set(d, g->diag.status ? g->diag.status : KILN_ERR_OUT_OF_MEMORY, "%s", g->diag.msg);
    goto done;
  }
  g->nodes[id].index = ci;
  *out_node = id;
done:
  if (vals)
    for (int32_t i = 0; i < cnt; i++)
      if (keep && keep[i] && g->nodes[i].op != KILN_OP_constant) kiln_ir_free(g->alloc, vals[i].data);
  kiln_ir_free(g->alloc, vals);
  kiln_ir_free(g->alloc, keep);
  return st;
}
