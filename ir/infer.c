/* infer.c - shape and dtype inference for one graph node (kiln_ir_infer). The builder
 * calls it to construct nodes and the verifier calls it to re-check them, so the two can
 * never disagree about what an op accepts. Every error message starts with the op name and
 * shows the offending shapes. */
#include "ir.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* "[2,3,4]" into buf. */
static const char *fmt_shape(char *buf, size_t n, const kiln_shape *s) {
  size_t o = 0;
  o += (size_t)snprintf(buf + o, n - o, "[");
  for (int i = 0; i < s->rank && i < KILN_MAX_RANK && o < n; i++)
    o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? "," : "", (long long)s->dims[i]);
  if (o < n) snprintf(buf + o, n - o, "]");
  return buf;
}

#define SHAPE_STR(s) fmt_shape((char[160]){0}, 160, (s))

typedef struct infer_ctx {
  const kiln_graph *g;
  kiln_op op;
  kiln_diag *d;
} infer_ctx;

static kiln_status fail(infer_ctx *c, kiln_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static kiln_status fail(infer_ctx *c, kiln_status st, const char *fmt, ...) {
  char msg[1536];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return kiln_diag_set(c->d, st, "%s: %s", kiln_op_name(c->op), msg);
}

static bool valid_dtype(kiln_dtype t) { return (unsigned)t < KILN_DTYPE_COUNT; }

static bool valid_shape(const kiln_shape *s) {
  if (s->rank < 0 || s->rank > KILN_MAX_RANK) return false;
  for (int i = 0; i < s->rank; i++)
    if (s->dims[i] < 0) return false;
  return true;
}

static kiln_status check_shape_arg(infer_ctx *c, const kiln_shape *s, const char *what) {
  if (s->rank < 0 || s->rank > KILN_MAX_RANK)
    return fail(c, KILN_ERR_SHAPE, "%s has rank %d (must be 0..%d)", what, (int)s->rank, KILN_MAX_RANK);
  if (!valid_shape(s)) return fail(c, KILN_ERR_SHAPE, "%s %s has a negative dim", what, SHAPE_STR(s));
  return KILN_OK;
}

static bool is_numeric(kiln_dtype t) { return t != KILN_BOOL; }
static bool is_index(kiln_dtype t) { return t == KILN_I32 || t == KILN_I64; }

/* Checks that `axes` (n of them) are sorted, unique and in [0, rank). */
static kiln_status check_axes(infer_ctx *c, int32_t n, const int32_t *axes, int32_t rank) {
  if (n < 0 || n > rank) return fail(c, KILN_ERR_INVALID_ARGUMENT, "%d axes for rank %d", (int)n, (int)rank);
  for (int i = 0; i < n; i++) {
    if (axes[i] < 0 || axes[i] >= rank)
      return fail(c, KILN_ERR_INVALID_ARGUMENT, "axis %d out of range for rank %d", (int)axes[i], (int)rank);
    if (i > 0 && axes[i] <= axes[i - 1])
      return fail(c, KILN_ERR_INVALID_ARGUMENT, "axes must be sorted and unique (%d after %d)",
                  (int)axes[i], (int)axes[i - 1]);
  }
  return KILN_OK;
}

static kiln_status check_axis(infer_ctx *c, int32_t axis, int32_t rank) {
  if (axis < 0 || axis >= rank)
    return fail(c, KILN_ERR_INVALID_ARGUMENT, "axis %d out of range for rank %d", (int)axis, (int)rank);
  return KILN_OK;
}

static kiln_status check_flag(infer_ctx *c, int32_t v, const char *what, int32_t max) {
  if (v < 0 || v > max) return fail(c, KILN_ERR_INVALID_ARGUMENT, "%s=%d (must be 0..%d)", what, (int)v, (int)max);
  return KILN_OK;
}

/* Whether operand dtype t fits elementwise or reduction op c->op (ops.def, column OPERANDS). */
static kiln_status check_operand(infer_ctx *c, kiln_dtype t) {
  if (kiln_op_accepts(c->op, t)) return KILN_OK;
  switch (kiln_op_table[c->op].operands) {
  case KILN_OPD_FLOAT: return fail(c, KILN_ERR_SHAPE, "operand is %s, must be a float dtype", kiln_dtype_name(t));
  case KILN_OPD_NUMERIC: return fail(c, KILN_ERR_SHAPE, "operand is bool, must be a number");
  case KILN_OPD_INTBOOL:
    return fail(c, KILN_ERR_SHAPE, "operand is %s, must be bool or an integer", kiln_dtype_name(t));
  case KILN_OPD_ANY: case KILN_OPD_NONE: break;
  }
  return fail(c, KILN_ERR_INTERNAL, "no dtype rule");
}

/* Unary and binary elementwise ops: equal shapes and dtypes, an operand dtype the op
 * accepts; the result is bool (KILN_OPF_BOOL) or the operands' dtype. */
static kiln_status infer_elementwise(infer_ctx *c, const kiln_node *x, const kiln_node *y, const kiln_attrs *a,
                                     kiln_dtype *dt, kiln_shape *shape) {
  if (y && !kiln_shape_eq(&x->shape, &y->shape))
    return fail(c, KILN_ERR_SHAPE, "operand shapes differ: %s and %s (broadcast them first)",
                SHAPE_STR(&x->shape), SHAPE_STR(&y->shape));
  if (y && x->dtype != y->dtype)
    return fail(c, KILN_ERR_SHAPE, "operand dtypes differ: %s and %s", kiln_dtype_name(x->dtype),
                kiln_dtype_name(y->dtype));
  kiln_status st = check_operand(c, x->dtype);
  if (st) return st;
  if (c->op == KILN_OP_mod && (st = check_flag(c, a->kind, "kind", 1))) return st;
  *dt = kiln_op_has(c->op, KILN_OPF_BOOL) ? KILN_BOOL : x->dtype;
  *shape = x->shape;
  return KILN_OK;
}

static kiln_status infer_reshape(infer_ctx *c, const kiln_node *x, kiln_dtype *dt, kiln_shape *shape) {
  kiln_status st = check_shape_arg(c, shape, "target shape");
  if (st) return st;
  if (kiln_shape_numel(shape) != kiln_shape_numel(&x->shape))
    return fail(c, KILN_ERR_SHAPE, "cannot reshape %s (%lld elements) to %s (%lld elements)",
                SHAPE_STR(&x->shape), (long long)kiln_shape_numel(&x->shape), SHAPE_STR(shape),
                (long long)kiln_shape_numel(shape));
  *dt = x->dtype;
  return KILN_OK;
}

static kiln_status infer_permute(infer_ctx *c, const kiln_node *x, const kiln_attrs *a,
                                 kiln_dtype *dt, kiln_shape *shape) {
  int32_t r = x->shape.rank;
  bool seen[KILN_MAX_RANK] = {0};
  kiln_shape s = {.rank = r};
  for (int d = 0; d < r; d++) {
    int32_t p = a->perm[d];
    if (p < 0 || p >= r || seen[p])
      return fail(c, KILN_ERR_INVALID_ARGUMENT, "perm is not a permutation of 0..%d (perm[%d]=%d)",
                  (int)r - 1, d, (int)p);
    seen[p] = true;
    s.dims[d] = x->shape.dims[p];
  }
  *shape = s;
  *dt = x->dtype;
  return KILN_OK;
}

static kiln_status infer_broadcast(infer_ctx *c, const kiln_node *x, kiln_dtype *dt, kiln_shape *shape) {
  kiln_status st = check_shape_arg(c, shape, "target shape");
  if (st) return st;
  const kiln_shape *in = &x->shape;
  if (in->rank > shape->rank)
    return fail(c, KILN_ERR_SHAPE, "cannot broadcast %s to lower rank %s", SHAPE_STR(in), SHAPE_STR(shape));
  int off = shape->rank - in->rank;
  for (int i = 0; i < in->rank; i++)
    if (in->dims[i] != 1 && in->dims[i] != shape->dims[off + i])
      return fail(c, KILN_ERR_SHAPE, "cannot broadcast %s to %s (dim %d is %lld, target %lld)",
                  SHAPE_STR(in), SHAPE_STR(shape), i, (long long)in->dims[i],
                  (long long)shape->dims[off + i]);
  *dt = x->dtype;
  return KILN_OK;
}

static kiln_status infer_slice(infer_ctx *c, const kiln_node *x, const kiln_attrs *a,
                               kiln_dtype *dt, kiln_shape *shape) {
  kiln_status st = check_shape_arg(c, shape, "slice counts");
  if (st) return st;
  if (shape->rank != x->shape.rank)
    return fail(c, KILN_ERR_SHAPE, "result rank %d differs from input rank %d (%s)", (int)shape->rank,
                (int)x->shape.rank, SHAPE_STR(&x->shape));
  for (int d = 0; d < shape->rank; d++) {
    int64_t n = x->shape.dims[d], cnt = shape->dims[d], s0 = a->starts[d], step = a->steps[d];
    if (step == 0) return fail(c, KILN_ERR_INVALID_ARGUMENT, "step of dim %d is 0", d);
    if (cnt == 0) {
      if (s0 < 0 || s0 > n)
        return fail(c, KILN_ERR_INVALID_ARGUMENT, "start %lld of dim %d out of range [0,%lld]",
                    (long long)s0, d, (long long)n);
      continue;
    }
    int64_t last;
    if (__builtin_mul_overflow(cnt - 1, step, &last) || __builtin_add_overflow(last, s0, &last))
      return fail(c, KILN_ERR_SHAPE, "dim %d: start %lld + (count %lld - 1) * step %lld overflows", d, (long long)s0,
                  (long long)cnt, (long long)step);
    if (s0 < 0 || s0 >= n || last < 0 || last >= n)
      return fail(c, KILN_ERR_SHAPE,
                  "dim %d: start %lld, step %lld, count %lld reads index %lld, outside [0,%lld) of input %s",
                  d, (long long)s0, (long long)step, (long long)cnt, (long long)(s0 < 0 || s0 >= n ? s0 : last),
                  (long long)n, SHAPE_STR(&x->shape));
  }
  *dt = x->dtype;
  return KILN_OK;
}

static kiln_status infer_pad(infer_ctx *c, const kiln_node *x, const kiln_attrs *a, kiln_dtype *dt,
                             kiln_shape *shape) {
  kiln_shape s = x->shape;
  for (int d = 0; d < s.rank; d++) {
    if (__builtin_add_overflow(x->shape.dims[d], a->lo[d], &s.dims[d]) ||
        __builtin_add_overflow(s.dims[d], a->hi[d], &s.dims[d]) || s.dims[d] < 0)
      return fail(c, KILN_ERR_SHAPE, "dim %d of %s padded by lo %lld hi %lld is negative or overflows", d,
                  SHAPE_STR(&x->shape), (long long)a->lo[d], (long long)a->hi[d]);
  }
  *shape = s;
  *dt = x->dtype;
  return KILN_OK;
}

static kiln_status infer_concat(infer_ctx *c, int32_t n_in, const int32_t *in, const kiln_attrs *a,
                                kiln_dtype *dt, kiln_shape *shape) {
  const kiln_node *x0 = &c->g->nodes[in[0]];
  int32_t r = x0->shape.rank;
  kiln_status st = check_axis(c, a->axis, r);
  if (st) return st;
  kiln_shape s = x0->shape;
  s.dims[a->axis] = 0;
  for (int i = 0; i < n_in; i++) {
    const kiln_node *x = &c->g->nodes[in[i]];
    if (x->dtype != x0->dtype)
      return fail(c, KILN_ERR_SHAPE, "operand %d is %s, operand 0 is %s", i, kiln_dtype_name(x->dtype),
                  kiln_dtype_name(x0->dtype));
    if (x->shape.rank != r)
      return fail(c, KILN_ERR_SHAPE, "operand %d %s has a different rank from operand 0 %s", i,
                  SHAPE_STR(&x->shape), SHAPE_STR(&x0->shape));
    for (int d = 0; d < r; d++)
      if (d != a->axis && x->shape.dims[d] != x0->shape.dims[d])
        return fail(c, KILN_ERR_SHAPE, "operand %d %s differs from operand 0 %s in dim %d (axis is %d)", i,
                    SHAPE_STR(&x->shape), SHAPE_STR(&x0->shape), d, (int)a->axis);
    s.dims[a->axis] += x->shape.dims[a->axis];
  }
  *shape = s;
  *dt = x0->dtype;
  return KILN_OK;
}

static kiln_status infer_gather(infer_ctx *c, const kiln_node *x, const kiln_node *idx,
                                const kiln_attrs *a, kiln_dtype *dt, kiln_shape *shape) {
  int32_t r = x->shape.rank, q = idx->shape.rank;
  kiln_status st = check_axis(c, a->axis, r);
  if (st) return st;
  if (!is_index(idx->dtype))
    return fail(c, KILN_ERR_SHAPE, "indices are %s, must be i32 or i64", kiln_dtype_name(idx->dtype));
  if (c->op == KILN_OP_gather) {
    if (r - 1 + q > KILN_MAX_RANK)
      return fail(c, KILN_ERR_SHAPE, "result rank %d exceeds %d (data %s, indices %s)", (int)(r - 1 + q),
                  KILN_MAX_RANK, SHAPE_STR(&x->shape), SHAPE_STR(&idx->shape));
    if (x->shape.dims[a->axis] == 0 && kiln_shape_numel(&idx->shape) > 0)
      return fail(c, KILN_ERR_SHAPE, "gathering from empty axis %d of %s", (int)a->axis, SHAPE_STR(&x->shape));
    kiln_shape s = {.rank = r - 1 + q};
    int o = 0;
    for (int d = 0; d < a->axis; d++) s.dims[o++] = x->shape.dims[d];
    for (int d = 0; d < q; d++) s.dims[o++] = idx->shape.dims[d];
    for (int d = a->axis + 1; d < r; d++) s.dims[o++] = x->shape.dims[d];
    *shape = s;
  } else {
    if (q != r)
      return fail(c, KILN_ERR_SHAPE, "indices %s must have the rank of data %s", SHAPE_STR(&idx->shape),
                  SHAPE_STR(&x->shape));
    for (int d = 0; d < r; d++)
      if (d != a->axis && idx->shape.dims[d] > x->shape.dims[d])
        return fail(c, KILN_ERR_SHAPE, "indices %s exceed data %s in dim %d", SHAPE_STR(&idx->shape),
                    SHAPE_STR(&x->shape), d);
    *shape = idx->shape;
  }
  *dt = x->dtype;
  return KILN_OK;
}

static kiln_status infer_reduce(infer_ctx *c, const kiln_node *x, const kiln_attrs *a, kiln_dtype *dt,
                                kiln_shape *shape) {
  kiln_status st = check_flag(c, a->keepdims, "keepdims", 1);
  if (st) return st;
  int32_t r = x->shape.rank;
  bool red[KILN_MAX_RANK] = {0};
  int32_t n_red;
  if (kiln_op_has(c->op, KILN_OPF_INDEX)) { /* argmax/argmin */
    if ((st = check_axis(c, a->axis, r)) || (st = check_flag(c, a->kind, "kind", 1))) return st;
    if (x->shape.dims[a->axis] == 0)
      return fail(c, KILN_ERR_SHAPE, "axis %d of %s is empty", (int)a->axis, SHAPE_STR(&x->shape));
    red[a->axis] = true;
    n_red = 1;
    *dt = KILN_I64;
  } else {
    if ((st = check_axes(c, a->n_axes, a->axes, r))) return st;
    for (int i = 0; i < a->n_axes; i++) red[a->axes[i]] = true;
    n_red = a->n_axes;
    if ((st = check_operand(c, x->dtype))) return st; /* ops.def OPERANDS: sum and prod need numbers */
    *dt = x->dtype;
  }
  (void)n_red;
  kiln_shape s = {.rank = 0};
  for (int d = 0; d < r; d++) {
    if (!red[d]) s.dims[s.rank++] = x->shape.dims[d];
    else if (a->keepdims) s.dims[s.rank++] = 1;
  }
  *shape = s;
  return KILN_OK;
}

/* Output spatial extent of a window; -1 if it does not fit. */
static int64_t window_out(int64_t in, int64_t lo, int64_t hi, int64_t w, int64_t dil, int64_t stride) {
  int64_t span, reach;
  if (__builtin_add_overflow(in, lo, &span) || __builtin_add_overflow(span, hi, &span) ||
      __builtin_mul_overflow(dil, w - 1, &reach) || __builtin_sub_overflow(span, reach, &span))
    return -1;
  span -= 1;
  if (span < 0) return -1;
  return span / stride + 1;
}

static kiln_status check_spatial(infer_ctx *c, const kiln_attrs *a, int k, bool window) {
  for (int i = 0; i < k; i++) {
    if (window && a->window[i] < 1)
      return fail(c, KILN_ERR_INVALID_ARGUMENT, "window[%d]=%lld must be >= 1", i, (long long)a->window[i]);
    if (a->strides[i] < 1)
      return fail(c, KILN_ERR_INVALID_ARGUMENT, "strides[%d]=%lld must be >= 1", i, (long long)a->strides[i]);
    if (a->dilations[i] < 1)
      return fail(c, KILN_ERR_INVALID_ARGUMENT, "dilations[%d]=%lld must be >= 1", i,
                  (long long)a->dilations[i]);
    if (a->lo[i] < 0 || a->hi[i] < 0)
      return fail(c, KILN_ERR_INVALID_ARGUMENT, "padding of spatial dim %d is negative (lo %lld, hi %lld)", i,
                  (long long)a->lo[i], (long long)a->hi[i]);
  }
  return KILN_OK;
}

static kiln_status infer_pool(infer_ctx *c, const kiln_node *x, const kiln_attrs *a, kiln_dtype *dt,
                              kiln_shape *shape) {
  int32_t r = x->shape.rank;
  if (r < 3) return fail(c, KILN_ERR_SHAPE, "input %s must be [N, C, spatial...] (rank >= 3)", SHAPE_STR(&x->shape));
  kiln_status st;
  if ((st = check_flag(c, a->kind, "kind", 2)) || (st = check_flag(c, a->count_include_pad, "count_include_pad", 1)) ||
      (st = check_spatial(c, a, r - 2, true)))
    return st;
  if (!is_numeric(x->dtype)) return fail(c, KILN_ERR_SHAPE, "operand is bool, must be a number");
  kiln_shape s = x->shape;
  for (int i = 0; i < r - 2; i++) {
    int64_t o = window_out(x->shape.dims[2 + i], a->lo[i], a->hi[i], a->window[i], a->dilations[i], a->strides[i]);
    if (o < 1)
      return fail(c, KILN_ERR_SHAPE,
                  "window %lld (dilation %lld) does not fit spatial dim %d of %s padded by %lld+%lld", (long long)a->window[i],
                  (long long)a->dilations[i], i, SHAPE_STR(&x->shape), (long long)a->lo[i], (long long)a->hi[i]);
    s.dims[2 + i] = o;
  }
  *shape = s;
  *dt = x->dtype;
  return KILN_OK;
}

static kiln_status infer_dot(infer_ctx *c, const kiln_node *x, const kiln_node *y, kiln_dtype *dt,
                             kiln_shape *shape) {
  const kiln_shape *sa = &x->shape, *sb = &y->shape;
  if (sa->rank < 2 || sb->rank != sa->rank)
    return fail(c, KILN_ERR_SHAPE, "operands %s and %s must have equal rank >= 2", SHAPE_STR(sa), SHAPE_STR(sb));
  if (x->dtype != y->dtype)
    return fail(c, KILN_ERR_SHAPE, "operand dtypes differ: %s and %s", kiln_dtype_name(x->dtype),
                kiln_dtype_name(y->dtype));
  if (!is_numeric(x->dtype)) return fail(c, KILN_ERR_SHAPE, "operands are bool, must be numbers");
  int r = sa->rank;
  for (int d = 0; d < r - 2; d++)
    if (sa->dims[d] != sb->dims[d])
      return fail(c, KILN_ERR_SHAPE, "batch dim %d differs: %s and %s", d, SHAPE_STR(sa), SHAPE_STR(sb));
  if (sa->dims[r - 1] != sb->dims[r - 2])
    return fail(c, KILN_ERR_SHAPE, "contracting dims differ: %s has K=%lld, %s has K=%lld", SHAPE_STR(sa),
                (long long)sa->dims[r - 1], SHAPE_STR(sb), (long long)sb->dims[r - 2]);
  kiln_shape s = *sa;
  s.dims[r - 1] = sb->dims[r - 1];
  *shape = s;
  *dt = x->dtype;
  return KILN_OK;
}

static kiln_status infer_conv(infer_ctx *c, const kiln_node *x, const kiln_node *w, const kiln_attrs *a,
                              kiln_dtype *dt, kiln_shape *shape) {
  const kiln_shape *sx = &x->shape, *sw = &w->shape;
  if (sx->rank < 3 || sw->rank != sx->rank)
    return fail(c, KILN_ERR_SHAPE, "x %s and w %s must have equal rank >= 3", SHAPE_STR(sx), SHAPE_STR(sw));
  if (x->dtype != w->dtype)
    return fail(c, KILN_ERR_SHAPE, "operand dtypes differ: %s and %s", kiln_dtype_name(x->dtype),
                kiln_dtype_name(w->dtype));
  if (!is_numeric(x->dtype)) return fail(c, KILN_ERR_SHAPE, "operands are bool, must be numbers");
  kiln_status st = check_spatial(c, a, sx->rank - 2, false);
  if (st) return st;
  int64_t gr = a->groups;
  if (gr < 1) return fail(c, KILN_ERR_INVALID_ARGUMENT, "groups=%lld must be >= 1", (long long)gr);
  if (sx->dims[1] % gr != 0 || sw->dims[0] % gr != 0)
    return fail(c, KILN_ERR_SHAPE, "groups=%lld does not divide the channels of x %s and w %s", (long long)gr,
                SHAPE_STR(sx), SHAPE_STR(sw));
  if (sw->dims[1] * gr != sx->dims[1])
    return fail(c, KILN_ERR_SHAPE, "w %s has %lld input channels per group, x %s with groups=%lld needs %lld",
                SHAPE_STR(sw), (long long)sw->dims[1], SHAPE_STR(sx), (long long)gr, (long long)(sx->dims[1] / gr));
  kiln_shape s = *sx;
  s.dims[1] = sw->dims[0];
  for (int i = 0; i < sx->rank - 2; i++) {
    if (sw->dims[2 + i] < 1)
      return fail(c, KILN_ERR_SHAPE, "kernel %s has an empty spatial dim %d", SHAPE_STR(sw), i);
    int64_t o = window_out(sx->dims[2 + i], a->lo[i], a->hi[i], sw->dims[2 + i], a->dilations[i], a->strides[i]);
    if (o < 1)
      return fail(c, KILN_ERR_SHAPE, "kernel %s (dilation %lld) does not fit spatial dim %d of x %s padded by %lld+%lld",
                  SHAPE_STR(sw), (long long)a->dilations[i], i, SHAPE_STR(sx), (long long)a->lo[i],
                  (long long)a->hi[i]);
    s.dims[2 + i] = o;
  }
  *shape = s;
  *dt = x->dtype;
  return KILN_OK;
}

/* conv_cl / pool_cl: the channels-first op's rules on the operands as channels first. */
static kiln_status infer_cl(infer_ctx *c, kiln_op op, const kiln_node *x, const kiln_node *w, const kiln_attrs *a,
                            kiln_dtype *dt, kiln_shape *shape) {
  int32_t r = x->shape.rank, perm[KILN_MAX_RANK];
  if (r < 3 || (w && w->shape.rank != r))
    return fail(c, KILN_ERR_SHAPE, "x %s%s%s must be [N, spatial..., C] (rank >= 3)%s", SHAPE_STR(&x->shape),
                w ? " and w " : "", w ? SHAPE_STR(&w->shape) : "", w ? " of equal rank" : "");
  kiln_node xc = *x, wc;
  kiln_cl_perm(r, false, perm);
  xc.shape = kiln_shape_permuted(&x->shape, perm);
  if (w) {
    wc = *w;
    kiln_cl_weight_perm(r, false, perm);
    wc.shape = kiln_shape_permuted(&w->shape, perm);
  }
  kiln_shape cf;
  kiln_status st = op == KILN_OP_conv_cl ? infer_conv(c, &xc, &wc, a, dt, &cf) : infer_pool(c, &xc, a, dt, &cf);
  if (st) return st;
  kiln_cl_perm(r, true, perm);
  *shape = kiln_shape_permuted(&cf, perm);
  return KILN_OK;
}

static kiln_status infer_scatter(infer_ctx *c, const kiln_node *x, const kiln_node *idx, const kiln_node *u,
                                 const kiln_attrs *a, kiln_dtype *dt, kiln_shape *shape) {
  kiln_status st;
  if ((st = check_axis(c, a->axis, x->shape.rank)) || (st = check_flag(c, a->kind, "kind", 4))) return st;
  if (!is_index(idx->dtype))
    return fail(c, KILN_ERR_SHAPE, "indices are %s, must be i32 or i64", kiln_dtype_name(idx->dtype));
  if (idx->shape.rank != x->shape.rank)
    return fail(c, KILN_ERR_SHAPE, "indices %s must have the rank of data %s", SHAPE_STR(&idx->shape),
                SHAPE_STR(&x->shape));
  if (!kiln_shape_eq(&idx->shape, &u->shape))
    return fail(c, KILN_ERR_SHAPE, "updates %s must have the shape of indices %s", SHAPE_STR(&u->shape),
                SHAPE_STR(&idx->shape));
  if (u->dtype != x->dtype)
    return fail(c, KILN_ERR_SHAPE, "updates are %s, data is %s", kiln_dtype_name(u->dtype), kiln_dtype_name(x->dtype));
  for (int d = 0; d < x->shape.rank; d++)
    if (d != a->axis && idx->shape.dims[d] > x->shape.dims[d])
      return fail(c, KILN_ERR_SHAPE, "indices %s exceed data %s in dim %d", SHAPE_STR(&idx->shape),
                  SHAPE_STR(&x->shape), d);
  if (a->kind != 0 && x->dtype == KILN_BOOL)
    return fail(c, KILN_ERR_SHAPE, "reduction kind=%d needs numbers, data is bool", (int)a->kind);
  *shape = x->shape;
  *dt = x->dtype;
  return KILN_OK;
}

kiln_status kiln_ir_infer(const kiln_graph *g, kiln_op op, int32_t n_in, const int32_t *in, const kiln_attrs *a,
                          kiln_dtype *dt, kiln_shape *shape, kiln_diag *d) {
  infer_ctx c = {g, op, d};
  if ((unsigned)op >= KILN_OP_COUNT)
    return kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT, "unknown op %d", (int)op);
  const kiln_op_info *info = &kiln_op_table[op];
  if (info->category == KILN_CAT_LEAF)
    return fail(&c, KILN_ERR_INVALID_ARGUMENT, "leaf nodes are not inferred");
  if (info->arity >= 0 ? n_in != info->arity : n_in < 1)
    return fail(&c, KILN_ERR_INVALID_ARGUMENT, "takes %s%d inputs, got %d", info->arity < 0 ? "at least " : "",
                info->arity < 0 ? 1 : info->arity, (int)n_in);
  if (n_in > 0 && !in) return fail(&c, KILN_ERR_INVALID_ARGUMENT, "no input list");
  for (int i = 0; i < n_in; i++)
    if (in[i] < 0 || in[i] >= g->n_nodes)
      return fail(&c, KILN_ERR_INVALID_ARGUMENT, "input %d is node %d, which does not exist", i, (int)in[i]);
  static const kiln_attrs zero;
  if (!a) a = &zero;
  const kiln_node *x = n_in > 0 ? &g->nodes[in[0]] : NULL;
  const kiln_node *y = n_in > 1 ? &g->nodes[in[1]] : NULL;
  const kiln_node *z = n_in > 2 ? &g->nodes[in[2]] : NULL;

  switch (op) {
  case KILN_OP_select:
    if (x->dtype != KILN_BOOL) return fail(&c, KILN_ERR_SHAPE, "condition is %s, must be bool", kiln_dtype_name(x->dtype));
    if (!kiln_shape_eq(&x->shape, &y->shape) || !kiln_shape_eq(&x->shape, &z->shape))
      return fail(&c, KILN_ERR_SHAPE, "operand shapes differ: %s, %s, %s (broadcast them first)",
                  SHAPE_STR(&x->shape), SHAPE_STR(&y->shape), SHAPE_STR(&z->shape));
    if (y->dtype != z->dtype)
      return fail(&c, KILN_ERR_SHAPE, "branch dtypes differ: %s and %s", kiln_dtype_name(y->dtype),
                  kiln_dtype_name(z->dtype));
    *dt = y->dtype;
    *shape = x->shape;
    return KILN_OK;
  case KILN_OP_cast:
    if (!valid_dtype(*dt)) return fail(&c, KILN_ERR_INVALID_ARGUMENT, "target dtype %d is not a dtype", (int)*dt);
    *shape = x->shape;
    return KILN_OK;
  case KILN_OP_reshape: return infer_reshape(&c, x, dt, shape);
  case KILN_OP_permute: return infer_permute(&c, x, a, dt, shape);
  case KILN_OP_broadcast: return infer_broadcast(&c, x, dt, shape);
  case KILN_OP_slice: return infer_slice(&c, x, a, dt, shape);
  case KILN_OP_pad: return infer_pad(&c, x, a, dt, shape);
  case KILN_OP_concat: return infer_concat(&c, n_in, in, a, dt, shape);
  case KILN_OP_reverse: {
    kiln_status st = check_axes(&c, a->n_axes, a->axes, x->shape.rank);
    if (st) return st;
    *shape = x->shape;
    *dt = x->dtype;
    return KILN_OK;
  }
  case KILN_OP_gather:
  case KILN_OP_gather_elements: return infer_gather(&c, x, y, a, dt, shape);
  case KILN_OP_iota: {
    if (!valid_dtype(*dt)) return fail(&c, KILN_ERR_INVALID_ARGUMENT, "dtype %d is not a dtype", (int)*dt);
    if (*dt == KILN_BOOL) return fail(&c, KILN_ERR_SHAPE, "dtype must be a number, not bool");
    kiln_status st = check_shape_arg(&c, shape, "shape");
    if (st) return st;
    return check_axis(&c, a->axis, shape->rank);
  }
  case KILN_OP_reduce_sum: case KILN_OP_reduce_max: case KILN_OP_reduce_min: case KILN_OP_reduce_prod:
  case KILN_OP_argmax: case KILN_OP_argmin: return infer_reduce(&c, x, a, dt, shape);
  case KILN_OP_pool: return infer_pool(&c, x, a, dt, shape);
  case KILN_OP_dot: return infer_dot(&c, x, y, dt, shape);
  case KILN_OP_conv: return infer_conv(&c, x, y, a, dt, shape);
  case KILN_OP_pool_cl: return infer_cl(&c, KILN_OP_pool_cl, x, NULL, a, dt, shape);
  case KILN_OP_conv_cl: return infer_cl(&c, KILN_OP_conv_cl, x, y, a, dt, shape);
  case KILN_OP_topk: {
    kiln_status st;
    if ((st = check_axis(&c, a->axis, x->shape.rank)) || (st = check_flag(&c, a->kind, "kind", 1))) return st;
    if (a->k < 0 || a->k > x->shape.dims[a->axis])
      return fail(&c, KILN_ERR_SHAPE, "k=%lld out of range for axis %d of %s", (long long)a->k, (int)a->axis,
                  SHAPE_STR(&x->shape));
    if (!is_numeric(x->dtype)) return fail(&c, KILN_ERR_SHAPE, "operand is bool, must be a number");
    kiln_shape s = x->shape;
    s.dims[a->axis] = a->k;
    *shape = s;
    *dt = KILN_I64;
    return KILN_OK;
  }
  case KILN_OP_nonzero: {
    kiln_status st = check_shape_arg(&c, shape, "shape");
    if (st) return st;
    if (shape->rank != 2 || shape->dims[0] != x->shape.rank || shape->dims[1] > kiln_shape_numel(&x->shape))
      return fail(&c, KILN_ERR_SHAPE, "result %s must be [%d, n] with n <= %lld for input %s", SHAPE_STR(shape),
                  (int)x->shape.rank, (long long)kiln_shape_numel(&x->shape), SHAPE_STR(&x->shape));
    *dt = KILN_I64;
    return KILN_OK;
  }
  case KILN_OP_scatter: return infer_scatter(&c, x, y, z, a, dt, shape);
  case KILN_OP_neg: case KILN_OP_abs: case KILN_OP_exp: case KILN_OP_log: case KILN_OP_sqrt: case KILN_OP_rsqrt:
  case KILN_OP_recip: case KILN_OP_tanh: case KILN_OP_sigmoid: case KILN_OP_erf: case KILN_OP_sin: case KILN_OP_cos:
  case KILN_OP_floor: case KILN_OP_ceil: case KILN_OP_round: case KILN_OP_sign: case KILN_OP_not: case KILN_OP_isnan:
  case KILN_OP_atan:
  case KILN_OP_add: case KILN_OP_sub: case KILN_OP_mul: case KILN_OP_div: case KILN_OP_pow: case KILN_OP_max:
  case KILN_OP_min: case KILN_OP_mod: case KILN_OP_and: case KILN_OP_or: case KILN_OP_xor: case KILN_OP_eq:
  case KILN_OP_ne: case KILN_OP_lt: case KILN_OP_le: case KILN_OP_gt: case KILN_OP_ge:
    return infer_elementwise(&c, x, y, a, dt, shape);
  KILN_OPS_LEAF(KILN_OP_CASE) /* refused above */
  case KILN_OP_COUNT: break;
  }
  return fail(&c, KILN_ERR_INTERNAL, "no inference rule");
}
