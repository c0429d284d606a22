/* onnx_ops_misc.c - importers for less common ONNX ops, mostly built from iota masks:
 * Trilu, EyeLike, OneHot, Hardmax, Shrink, LpNormalization, RMSNormalization, CumSum,
 * CumProd, Swish, and the normalizations GroupNormalization, LRN and
 * MeanVarianceNormalization; and the window functions HannWindow, HammingWindow and
 * BlackmanWindow (constants of an import-time size). */
#include "onnx_impl.h"

#include <math.h>
#include <string.h>

#define G (c->g)
#define NM (n->name)
#define OP (n->p->op_type)

static int32_t bin(fe_ctx *c, fe_node *n, kiln_op op, int32_t a, int32_t b) {
  return kiln_ir_binary(G, op, a, b, NM);
}

/* Keeps x where col - row >= k (upper) or <= k (lower) in the last two dims, else 0. */
kiln_status fe_import_trilu(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0];
  const kiln_shape s = G->nodes[x].shape;
  if (s.rank < 2) return fe_fail(c, n, KILN_ERR_SHAPE, "input must have rank >= 2");
  double k = 0;
  if (fe_in(n, 1) >= 0 && (st = fe_value_scalar(c, n, 1, &k)) != KILN_OK) return st;
  kiln_shape mn = {.rank = 2, .dims = {s.dims[s.rank - 2], s.dims[s.rank - 1]}};
  int32_t rows = kiln_ir_iota(G, KILN_I64, &mn, 0, NM), cols = kiln_ir_iota(G, KILN_I64, &mn, 1, NM);
  int32_t diff = bin(c, n, KILN_OP_sub, cols, rows);
  int32_t keep = bin(c, n, fe_attr_int(n, "upper", 1) ? KILN_OP_ge : KILN_OP_le, diff,
                     kiln_ir_scalar(G, KILN_I64, k, NM));
  n->out[0] = kiln_ir_select(G, keep, x, fe_scalar_like(c, n, x, 0), NM);
  return KILN_OK;
}

kiln_status fe_import_eye_like(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  const kiln_shape s0 = G->nodes[n->in[0]].shape, *s = &s0;
  kiln_dtype dt = G->nodes[n->in[0]].dtype;
  if (fe_attr(n, "dtype") && !fe_dtype((int32_t)fe_attr_int(n, "dtype", 1), &dt))
    return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "dtype %s is not supported",
                   fe_onnx_type_name((int32_t)fe_attr_int(n, "dtype", 1)));
  if (s->rank != 2) return fe_fail(c, n, KILN_ERR_SHAPE, "input must be 2-D");
  kiln_shape mn = *s;
  int32_t diff = bin(c, n, KILN_OP_sub, kiln_ir_iota(G, KILN_I64, &mn, 1, NM),
                     kiln_ir_iota(G, KILN_I64, &mn, 0, NM));
  int32_t on = bin(c, n, KILN_OP_eq, diff, kiln_ir_scalar(G, KILN_I64, (double)fe_attr_int(n, "k", 0), NM));
  n->out[0] = dt == KILN_BOOL ? on : kiln_ir_cast(G, on, dt, NM);
  return KILN_OK;
}

/* out[..., j, ...] = (j == indices[...]) ? on : off, with j on a new axis. */
kiln_status fe_import_one_hot(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 3);
  if (st != KILN_OK) return st;
  double depth_d;
  if ((st = fe_value_scalar(c, n, 1, &depth_d)) != KILN_OK) return st;
  int64_t depth = (int64_t)depth_d;
  if (depth < 1) return fe_fail(c, n, KILN_ERR_SHAPE, "depth must be positive");
  int32_t ind = n->in[0], vals = n->in[2];
  const kiln_shape in = G->nodes[ind].shape;
  if (kiln_shape_numel(&G->nodes[vals].shape) != 2)
    return fe_fail(c, n, KILN_ERR_SHAPE, "values must hold [off, on]");
  int32_t axis;
  if ((st = fe_axis(c, n, fe_attr_int(n, "axis", -1), in.rank + 1, &axis)) != KILN_OK) return st;
  if (G->nodes[ind].dtype != KILN_I64) ind = kiln_ir_cast(G, ind, KILN_I64, NM);
  int32_t d = kiln_ir_scalar(G, KILN_I64, (double)depth, NM);
  int32_t neg = bin(c, n, KILN_OP_lt, ind, kiln_ir_scalar(G, KILN_I64, 0, NM));
  ind = kiln_ir_select(G, neg, bin(c, n, KILN_OP_add, ind, d), ind, NM);
  kiln_shape with1 = {.rank = in.rank + 1}, out = with1;
  for (int i = 0, j = 0; i < with1.rank; i++) {
    with1.dims[i] = i == axis ? 1 : in.dims[j];
    out.dims[i] = i == axis ? depth : in.dims[j];
    if (i != axis) j++;
  }
  int32_t hit = bin(c, n, KILN_OP_eq, kiln_ir_iota(G, KILN_I64, &out, axis, NM),
                    kiln_ir_reshape(G, ind, &with1, NM));
  kiln_shape flat2 = {.rank = 1, .dims = {2}}, scalar = {.rank = 0};
  int32_t v = kiln_ir_reshape(G, vals, &flat2, NM);
  int64_t st0[1] = {0}, st1[1] = {1}, step[1] = {1}, cnt[1] = {1};
  int32_t off = kiln_ir_reshape(G, kiln_ir_slice(G, v, st0, step, cnt, NM), &scalar, NM);
  int32_t on = kiln_ir_reshape(G, kiln_ir_slice(G, v, st1, step, cnt, NM), &scalar, NM);
  n->out[0] = kiln_ir_select(G, hit, on, off, NM);
  return KILN_OK;
}

/* 1 at the (first) maximum along the axis, 0 elsewhere; before opset 13 on the 2-D view. */
kiln_status fe_import_hardmax(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0], axis;
  const kiln_shape orig = G->nodes[x].shape;
  if (c->opset >= 13) {
    if ((st = fe_axis(c, n, fe_attr_int(n, "axis", -1), orig.rank, &axis)) != KILN_OK) return st;
  } else {
    int64_t a = fe_attr_int(n, "axis", 1);
    if (a < 0) a += orig.rank;
    if (a < 0 || a > orig.rank) return fe_fail(c, n, KILN_ERR_SHAPE, "axis is out of range");
    kiln_shape flat = {.rank = 2, .dims = {1, 1}};
    for (int i = 0; i < orig.rank; i++) flat.dims[i < a ? 0 : 1] *= orig.dims[i];
    x = kiln_ir_reshape(G, x, &flat, NM);
    axis = 1;
  }
  int32_t am = kiln_ir_arg(G, KILN_OP_argmax, x, axis, 1, 0, NM);
  kiln_shape xs = G->nodes[x].shape;
  int32_t hit = bin(c, n, KILN_OP_eq, kiln_ir_iota(G, KILN_I64, &xs, axis, NM), am);
  int32_t y = kiln_ir_cast(G, hit, G->nodes[x].dtype, NM);
  n->out[0] = c->opset >= 13 ? y : kiln_ir_reshape(G, y, &orig, NM);
  return KILN_OK;
}

kiln_status fe_import_shrink(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0];
  double l = fe_attr_float(n, "lambd", 0.5f), b = fe_attr_float(n, "bias", 0.0f);
  int32_t lo = bin(c, n, KILN_OP_lt, x, fe_scalar_like(c, n, x, -l));
  int32_t hi = bin(c, n, KILN_OP_gt, x, fe_scalar_like(c, n, x, l));
  int32_t y = kiln_ir_select(G, hi, bin(c, n, KILN_OP_sub, x, fe_scalar_like(c, n, x, b)),
                             fe_scalar_like(c, n, x, 0), NM);
  n->out[0] = kiln_ir_select(G, lo, bin(c, n, KILN_OP_add, x, fe_scalar_like(c, n, x, b)), y, NM);
  return KILN_OK;
}

kiln_status fe_import_lp_norm(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0], axis;
  if ((st = fe_axis(c, n, fe_attr_int(n, "axis", -1), G->nodes[x].shape.rank, &axis)) != KILN_OK)
    return st;
  int64_t p = fe_attr_int(n, "p", 2);
  int32_t norm;
  if (p == 1) {
    norm = kiln_ir_reduce(G, KILN_OP_reduce_sum, kiln_ir_unary(G, KILN_OP_abs, x, NM), 1, &axis, 1, NM);
  } else if (p == 2) {
    norm = kiln_ir_unary(G, KILN_OP_sqrt,
                         kiln_ir_reduce(G, KILN_OP_reduce_sum, bin(c, n, KILN_OP_mul, x, x), 1, &axis, 1, NM), NM);
  } else {
    return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "p=%lld (only 1 and 2)", (long long)p);
  }
  /* A zero norm means a zero vector: divide by 1 so it stays 0 (as ONNX's reference does). */
  int32_t zero = bin(c, n, KILN_OP_eq, norm, fe_scalar_like(c, n, norm, 0));
  norm = kiln_ir_select(G, zero, fe_scalar_like(c, n, norm, 1), norm, NM);
  n->out[0] = bin(c, n, KILN_OP_div, x, norm);
  return KILN_OK;
}

/* x * rsqrt(mean(x^2) + eps) * scale over axes [axis, rank), statistics in f32 for 16-bit. */
kiln_status fe_import_rms_norm(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 2);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0], rank = G->nodes[x].shape.rank, axis;
  kiln_dtype dt = G->nodes[x].dtype;
  if ((st = fe_axis(c, n, fe_attr_int(n, "axis", -1), rank, &axis)) != KILN_OK) return st;
  int32_t axes[KILN_MAX_RANK], n_axes = 0;
  for (int i = axis; i < rank; i++) axes[n_axes++] = i;
  bool up = (dt == KILN_F16 || dt == KILN_BF16) && fe_attr_int(n, "stash_type", 1) == 1;
  int32_t xs = up ? kiln_ir_cast(G, x, KILN_F32, NM) : x;
  int32_t ms = fe_reduce_mean(c, n, bin(c, n, KILN_OP_mul, xs, xs), n_axes, axes, 1);
  int32_t inv = kiln_ir_unary(G, KILN_OP_rsqrt,
                              bin(c, n, KILN_OP_add, ms, fe_scalar_like(c, n, xs, fe_attr_float(n, "epsilon", 1e-5f))), NM);
  int32_t y = bin(c, n, KILN_OP_mul, xs, inv);
  if (up) y = kiln_ir_cast(G, y, dt, NM);
  n->out[0] = bin(c, n, KILN_OP_mul, y, n->in[1]);
  return KILN_OK;
}

/* CumSum / CumProd along axis (input 1, folded): x is viewed as [outer, n, inner], broadcast
 * to [outer, n (out), n (in), inner], masked by a constant triangle (in <= out, or < for
 * exclusive; reversed: >=, >) with the identity and reduced over the input position. */
kiln_status fe_import_cumulative(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 2);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0];
  const kiln_shape s = G->nodes[x].shape;
  if (s.rank < 1) return fe_fail(c, n, KILN_ERR_SHAPE, "input must have rank >= 1");
  double av;
  int32_t axis;
  if ((st = fe_value_scalar(c, n, 1, &av)) != KILN_OK ||
      (st = fe_axis(c, n, (int64_t)av, s.rank, &axis)) != KILN_OK)
    return st;
  bool prod = !strcmp(OP, "CumProd");
  int64_t excl = fe_attr_int(n, "exclusive", 0), rev = fe_attr_int(n, "reverse", 0);
  int64_t outer = 1, len = s.dims[axis], inner = 1;
  for (int i = 0; i < axis; i++) outer *= s.dims[i];
  for (int i = axis + 1; i < s.rank; i++) inner *= s.dims[i];
  kiln_shape v4 = {4, {outer, 1, len, inner}}, b4 = {4, {outer, len, len, inner}}, ms = {4, {1, len, len, 1}};
  int32_t io = kiln_ir_iota(G, KILN_I64, &ms, 1, NM), ii = kiln_ir_iota(G, KILN_I64, &ms, 2, NM);
  kiln_op cmp = rev ? (excl ? KILN_OP_gt : KILN_OP_ge) : (excl ? KILN_OP_lt : KILN_OP_le);
  int32_t mask = bin(c, n, cmp, ii, io);
  int32_t xb = kiln_ir_broadcast(G, kiln_ir_reshape(G, x, &v4, NM), &b4, NM);
  int32_t sel = kiln_ir_select(G, mask, xb, fe_scalar_like(c, n, x, prod ? 1 : 0), NM);
  int32_t ax = 2;
  int32_t r = kiln_ir_reduce(G, prod ? KILN_OP_reduce_prod : KILN_OP_reduce_sum, sel, 1, &ax, 0, NM);
  n->out[0] = kiln_ir_reshape(G, r, &s, NM);
  return KILN_OK;
}

/* Swish: x * sigmoid(alpha * x). */
kiln_status fe_import_swish(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0];
  double alpha = fe_attr_float(n, "alpha", 1.0f);
  int32_t ax = alpha == 1.0 ? x : bin(c, n, KILN_OP_mul, x, fe_scalar_like(c, n, x, alpha));
  n->out[0] = bin(c, n, KILN_OP_mul, x, kiln_ir_unary(G, KILN_OP_sigmoid, ax, NM));
  return KILN_OK;
}

/* GroupNormalization: statistics over each group of channels (and the spatial dims) of
 * x [N, C, ...] viewed as [N, G, rest]; scale and bias are per channel (per group before
 * opset 21); statistics in f32 for 16-bit inputs (stash_type). */
kiln_status fe_import_group_norm(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 3);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0];
  const kiln_shape s = G->nodes[x].shape;
  kiln_dtype dt = G->nodes[x].dtype;
  int64_t groups = fe_attr_int(n, "num_groups", 0);
  if (s.rank < 2) return fe_fail(c, n, KILN_ERR_SHAPE, "X must be [N, C, ...]");
  if (groups < 1 || s.dims[1] % groups) return fe_fail(c, n, KILN_ERR_SHAPE, "num_groups must divide C");
  bool up = (dt == KILN_F16 || dt == KILN_BF16) && fe_attr_int(n, "stash_type", 1) == 1;
  int32_t xs = up ? kiln_ir_cast(G, x, KILN_F32, NM) : x;
  kiln_shape v3 = {3, {s.dims[0], groups, kiln_shape_numel(&s) / (s.dims[0] * groups)}};
  if (s.dims[0] == 0) v3.dims[2] = 0;
  xs = kiln_ir_reshape(G, xs, &v3, NM);
  int32_t ax = 2;
  int32_t d = bin(c, n, KILN_OP_sub, xs, fe_reduce_mean(c, n, xs, 1, &ax, 1));
  int32_t var = fe_reduce_mean(c, n, bin(c, n, KILN_OP_mul, d, d), 1, &ax, 1);
  int32_t inv = kiln_ir_unary(G, KILN_OP_rsqrt,
                              bin(c, n, KILN_OP_add, var, fe_scalar_like(c, n, xs, fe_attr_float(n, "epsilon", 1e-5f))), NM);
  int32_t y = kiln_ir_reshape(G, bin(c, n, KILN_OP_mul, d, inv), &s, NM);
  if (up) y = kiln_ir_cast(G, y, dt, NM);
  int32_t sc = n->in[1], bi = n->in[2];
  if (c->opset < 21) { /* per-group parameters: repeat each over its channels */
    kiln_shape g2 = {2, {groups, 1}}, gb = {2, {groups, s.dims[1] / groups}}, cs = {1, {s.dims[1]}};
    sc = kiln_ir_reshape(G, kiln_ir_broadcast(G, kiln_ir_reshape(G, sc, &g2, NM), &gb, NM), &cs, NM);
    bi = kiln_ir_reshape(G, kiln_ir_broadcast(G, kiln_ir_reshape(G, bi, &g2, NM), &gb, NM), &cs, NM);
  }
  n->out[0] = bin(c, n, KILN_OP_add, bin(c, n, KILN_OP_mul, y, fe_channel_view(c, n, sc, s.rank)),
                  fe_channel_view(c, n, bi, s.rank));
  return KILN_OK;
}

/* LRN: x / (bias + alpha / size * sum of x^2 over the channel window)^beta; the window sum
 * is a sum pool over the channel dim of x^2 viewed as [N, 1, C, rest]. */
kiln_status fe_import_lrn(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0];
  const kiln_shape s = G->nodes[x].shape;
  int64_t size = fe_attr_int(n, "size", 0);
  if (s.rank < 2) return fe_fail(c, n, KILN_ERR_SHAPE, "X must be [N, C, ...]");
  if (size < 1) return fe_fail(c, n, KILN_ERR_SHAPE, "size must be positive");
  kiln_shape v4 = {4, {s.dims[0], 1, s.dims[1], 1}};
  for (int i = 2; i < s.rank; i++) v4.dims[3] *= s.dims[i];
  int64_t w[2] = {size, 1}, one[2] = {1, 1}, lo[2] = {(size - 1) / 2, 0}, hi[2] = {size / 2, 0};
  int32_t sq = kiln_ir_reshape(G, bin(c, n, KILN_OP_mul, x, x), &v4, NM);
  int32_t sum = kiln_ir_reshape(G, kiln_ir_pool(G, sq, KILN_POOL_SUM, w, one, one, lo, hi, 0, NM), &s, NM);
  double alpha = fe_attr_float(n, "alpha", 1e-4f), beta = fe_attr_float(n, "beta", 0.75f);
  int32_t den = bin(c, n, KILN_OP_add, fe_scalar_like(c, n, x, fe_attr_float(n, "bias", 1.0f)),
                    bin(c, n, KILN_OP_mul, sum, fe_scalar_like(c, n, x, alpha / (double)size)));
  n->out[0] = bin(c, n, KILN_OP_div, x, bin(c, n, KILN_OP_pow, den, fe_scalar_like(c, n, x, beta)));
  return KILN_OK;
}

/* MeanVarianceNormalization: (x - mean) / (sqrt(mean(x^2) - mean^2) + 1e-9) over axes,
 * as ONNX's function body computes it. */
kiln_status fe_import_mvn(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0], rank = G->nodes[x].shape.rank;
  int64_t ax64[KILN_MAX_RANK] = {0, 2, 3};
  int na = fe_attr_ints(c, n, "axes", ax64, KILN_MAX_RANK, &st);
  if (st != KILN_OK) return st;
  if (na < 0) na = 3;
  int32_t axes[KILN_MAX_RANK];
  for (int i = 0; i < na; i++)
    if ((st = fe_axis(c, n, ax64[i], rank, &axes[i])) != KILN_OK) return st;
  int32_t mean = fe_reduce_mean(c, n, x, na, axes, 1);
  int32_t ms = fe_reduce_mean(c, n, bin(c, n, KILN_OP_mul, x, x), na, axes, 1);
  int32_t sd = kiln_ir_unary(G, KILN_OP_sqrt, bin(c, n, KILN_OP_sub, ms, bin(c, n, KILN_OP_mul, mean, mean)), NM);
  n->out[0] = bin(c, n, KILN_OP_div, bin(c, n, KILN_OP_sub, x, mean),
                  bin(c, n, KILN_OP_add, sd, fe_scalar_like(c, n, x, 1e-9)));
  return KILN_OK;
}

/* HannWindow, HammingWindow, BlackmanWindow(size): a constant of the import-time size,
 * computed in double with onnx.reference's formulas (N1 = size, or size - 1 when
 * periodic=0). */
kiln_status fe_import_window(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  double size;
  if ((st = fe_value_scalar(c, n, 0, &size)) != KILN_OK) return st;
  if (!(size >= 0 && size <= (double)(1 << 24)))
    return fe_fail(c, n, KILN_ERR_SHAPE, "size %g is out of range", size);
  kiln_dtype dt;
  int32_t odt = (int32_t)fe_attr_int(n, "output_datatype", 1);
  if (!fe_dtype(odt, &dt)) return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "output_datatype %s is not supported", fe_onnx_type_name(odt));
  int64_t len = (int64_t)size;
  double n1 = fe_attr_int(n, "periodic", 1) ? (double)len : (double)len - 1;
  void *data = kiln_ir_malloc(G->alloc, (size_t)(len + 1) * kiln_dtype_size(dt));
  if (!data) return fe_fail(c, n, KILN_ERR_OUT_OF_MEMORY, "out of memory");
  for (int64_t i = 0; i < len; i++) {
    double x = (double)i, v;
    if (!strcmp(OP, "HannWindow")) {
      v = sin(x * M_PI / n1);
      v *= v;
    } else if (!strcmp(OP, "HammingWindow")) {
      v = 25.0 / 46.0 - cos(x * M_PI * 2 / n1) * (1 - 25.0 / 46.0);
    } else {
      v = cos(x * (M_PI * 2) / n1) * -0.5 + cos(x * (M_PI * 4) / n1) * 0.08 + 0.42;
    }
    fe_set_f64(dt, data, i, v);
  }
  kiln_shape s = {1, {len}};
  n->out[0] = kiln_ir_constant(G, NM, dt, &s, data);
  kiln_ir_free(G->alloc, data);
  return KILN_OK;
}
