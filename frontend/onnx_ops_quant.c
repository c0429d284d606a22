/* onnx_ops_quant.c - importers for linear quantization: QuantizeLinear, DequantizeLinear
 * (per tensor, per axis and blocked scales; int8, uint8 and int16 codes) and
 * DynamicQuantizeLinear, computed in f32 (f64 for f64 inputs) with round half to even
 * and saturation, as ONNX's reference does; and the integer contractions MatMulInteger,
 * ConvInteger, QLinearMatMul and QLinearConv (i32 accumulation, then requantization). */
#include "onnx_impl.h"

#define G (c->g)
#define NM (n->name)

static int32_t bin(fe_ctx *c, fe_node *n, kiln_op op, int32_t a, int32_t b) {
  return kiln_ir_binary(G, op, a, b, NM);
}

static int32_t to(fe_ctx *c, fe_node *n, int32_t v, kiln_dtype dt) {
  return v >= 0 && G->nodes[v].dtype == dt ? v : kiln_ir_cast(G, v, dt, NM);
}

/* Scale or zero point p made broadcastable to x's shape s: a single value stays a scalar,
 * a vector lies along axis, a blocked tensor repeats each entry block times along axis. */
static kiln_status quant_param(fe_ctx *c, fe_node *n, int32_t p, const kiln_shape *s, int32_t *out) {
  const kiln_shape ps = G->nodes[p].shape;
  if (kiln_shape_numel(&ps) == 1 && ps.rank <= 1) {
    kiln_shape sc = {.rank = 0};
    *out = kiln_ir_reshape(G, p, &sc, NM);
    return KILN_OK;
  }
  /* The axis matters only here: a per-tensor node may carry any axis. */
  int64_t block = fe_attr_int(n, "block_size", 0);
  int32_t axis;
  kiln_status st = fe_axis(c, n, fe_attr_int(n, "axis", 1), s->rank, &axis);
  if (st != KILN_OK) return st;
  if (block <= 0) {
    if (ps.rank != 1 || ps.dims[0] != s->dims[axis])
      return fe_fail(c, n, KILN_ERR_SHAPE, "a per-axis parameter must have %lld entries", (long long)s->dims[axis]);
    kiln_shape v = {.rank = s->rank};
    for (int i = 0; i < s->rank; i++) v.dims[i] = i == axis ? s->dims[i] : 1;
    *out = kiln_ir_reshape(G, p, &v, NM);
    return KILN_OK;
  }
  if (ps.rank != s->rank || s->rank >= KILN_MAX_RANK || ps.dims[axis] * block < s->dims[axis])
    return fe_fail(c, n, KILN_ERR_SHAPE, "a blocked parameter must match the input's rank and cover axis %d", axis);
  kiln_shape with1 = {.rank = s->rank + 1}, wide, rep = ps;
  for (int i = 0, j = 0; i < s->rank; i++) {
    with1.dims[j++] = ps.dims[i];
    if (i == axis) with1.dims[j++] = 1;
  }
  wide = with1;
  wide.dims[axis + 1] = block;
  rep.dims[axis] = ps.dims[axis] * block;
  int32_t y = kiln_ir_reshape(G, kiln_ir_broadcast(G, kiln_ir_reshape(G, p, &with1, NM), &wide, NM), &rep, NM);
  int64_t starts[KILN_MAX_RANK] = {0}, steps[KILN_MAX_RANK], counts[KILN_MAX_RANK];
  for (int i = 0; i < s->rank; i++) steps[i] = 1, counts[i] = s->dims[i];
  *out = rep.dims[axis] == s->dims[axis] ? y : kiln_ir_slice(G, y, starts, steps, counts, NM);
  return KILN_OK;
}

/* The code range of a quantized dtype; false for dtypes that are not codes. */
static bool quant_range(kiln_dtype dt, double *lo, double *hi) {
  switch (dt) {
    case KILN_U8: *lo = 0, *hi = 255; return true;
    case KILN_I8: *lo = -128, *hi = 127; return true;
    case KILN_I16: *lo = -32768, *hi = 32767; return true;
    default: return false;
  }
}

/* clamp(round(v) + zp, lo, hi) cast to dt; v and zp (may be -1) in v's float dtype. */
static int32_t saturate(fe_ctx *c, fe_node *n, int32_t v, int32_t zp, kiln_dtype dt) {
  double lo = 0, hi = 0;
  quant_range(dt, &lo, &hi);
  int32_t q = kiln_ir_unary(G, KILN_OP_round, v, NM);
  if (zp >= 0) q = bin(c, n, KILN_OP_add, q, zp);
  q = bin(c, n, KILN_OP_min, bin(c, n, KILN_OP_max, q, fe_scalar_like(c, n, q, lo)), fe_scalar_like(c, n, q, hi));
  return kiln_ir_cast(G, q, dt, NM);
}

kiln_status fe_import_quantize_linear(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 2);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0], zp = fe_in(n, 2);
  const kiln_shape s = G->nodes[x].shape;
  kiln_dtype out = KILN_U8;
  if (zp >= 0) out = G->nodes[zp].dtype;
  else if (fe_attr(n, "output_dtype") && !fe_dtype((int32_t)fe_attr_int(n, "output_dtype", 2), &out))
    return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "output_dtype %s is not supported",
                   fe_onnx_type_name((int32_t)fe_attr_int(n, "output_dtype", 2)));
  double lo, hi;
  if (!quant_range(out, &lo, &hi))
    return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "quantizing to %s is not supported", kiln_dtype_name(out));
  kiln_dtype ct = G->nodes[x].dtype == KILN_F64 ? KILN_F64 : KILN_F32;
  int32_t scale, zpv = -1;
  if ((st = quant_param(c, n, n->in[1], &s, &scale)) != KILN_OK) return st;
  if (zp >= 0 && (st = quant_param(c, n, zp, &s, &zpv)) != KILN_OK) return st;
  int32_t v = bin(c, n, KILN_OP_div, to(c, n, x, ct), to(c, n, scale, ct));
  n->out[0] = saturate(c, n, v, zpv >= 0 ? to(c, n, zpv, ct) : -1, out);
  return KILN_OK;
}

kiln_status fe_import_dequantize_linear(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 2);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0], zp = fe_in(n, 2);
  const kiln_shape s = G->nodes[x].shape;
  kiln_dtype out = G->nodes[n->in[1]].dtype;
  if (fe_attr(n, "output_dtype") && !fe_dtype((int32_t)fe_attr_int(n, "output_dtype", 1), &out))
    return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "output_dtype %s is not supported",
                   fe_onnx_type_name((int32_t)fe_attr_int(n, "output_dtype", 1)));
  if (!kiln_dtype_is_float(out)) return fe_fail(c, n, KILN_ERR_SHAPE, "the scale must be a float tensor");
  kiln_dtype ct = G->nodes[n->in[1]].dtype == KILN_F64 ? KILN_F64 : KILN_F32;
  int32_t scale, zpv;
  if ((st = quant_param(c, n, n->in[1], &s, &scale)) != KILN_OK) return st;
  int32_t dx = to(c, n, x, ct);
  if (zp >= 0) {
    if ((st = quant_param(c, n, zp, &s, &zpv)) != KILN_OK) return st;
    dx = bin(c, n, KILN_OP_sub, dx, to(c, n, zpv, ct));
  }
  n->out[0] = to(c, n, bin(c, n, KILN_OP_mul, dx, to(c, n, scale, ct)), out);
  return KILN_OK;
}

/* uint8 codes over [min(x, 0), max(x, 0)]: scale = range / 255 (1 / 255 for an empty
 * range), zero point = round(clamp(-min / scale, 0, 255)). */
kiln_status fe_import_dynamic_quantize_linear(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0];
  if (G->nodes[x].dtype != KILN_F32) return fe_fail(c, n, KILN_ERR_SHAPE, "x must be float32");
  int32_t rank = G->nodes[x].shape.rank, axes[KILN_MAX_RANK];
  for (int i = 0; i < rank; i++) axes[i] = i;
  int32_t zero = fe_scalar_like(c, n, x, 0);
  int32_t mx = bin(c, n, KILN_OP_max, kiln_ir_reduce(G, KILN_OP_reduce_max, x, rank, axes, 0, NM), zero);
  int32_t mn = bin(c, n, KILN_OP_min, kiln_ir_reduce(G, KILN_OP_reduce_min, x, rank, axes, 0, NM), zero);
  int32_t range = bin(c, n, KILN_OP_sub, mx, mn);
  range = kiln_ir_select(G, bin(c, n, KILN_OP_eq, range, zero), fe_scalar_like(c, n, x, 1), range, NM);
  int32_t scale = bin(c, n, KILN_OP_div, range, fe_scalar_like(c, n, x, 255));
  int32_t zpf = bin(c, n, KILN_OP_sub, zero, bin(c, n, KILN_OP_div, mn, scale));
  zpf = kiln_ir_unary(G, KILN_OP_round,
                      bin(c, n, KILN_OP_min, bin(c, n, KILN_OP_max, zpf, zero), fe_scalar_like(c, n, x, 255)), NM);
  n->out[0] = saturate(c, n, bin(c, n, KILN_OP_div, x, scale), zpf, KILN_U8);
  if (n->n_out > 1) n->out[1] = scale;
  if (n->n_out > 2) n->out[2] = kiln_ir_cast(G, zpf, KILN_U8, NM);
  return KILN_OK;
}

/* ------------------------------------------------------------------ integer contractions */
/* A zero point or scale p of a matmul operand made broadcastable: one value becomes a
 * scalar; a vector lies along the rows of a [..., M, K] operand (row) or along the last
 * axis of a [..., K, N] operand (!row). */
static int32_t mm_param(fe_ctx *c, fe_node *n, int32_t p, bool row) {
  if (p < 0) return -1;
  kiln_shape s = {.rank = 0};
  int64_t cnt = kiln_shape_numel(&G->nodes[p].shape);
  if (cnt != 1) {
    s.rank = row ? 2 : 1;
    s.dims[0] = cnt, s.dims[1] = 1;
  }
  return kiln_ir_reshape(G, p, &s, NM);
}

/* x as i32 minus its zero point zp (already shaped to broadcast; -1: none). */
static int32_t centered(fe_ctx *c, fe_node *n, int32_t x, int32_t zp) {
  int32_t v = to(c, n, x, KILN_I32);
  return zp < 0 ? v : bin(c, n, KILN_OP_sub, v, to(c, n, zp, KILN_I32));
}

/* Requantizes the i32 accumulator acc: round(acc * (sa * sb / sy)) + zp, saturated to dt.
 * The scale product stays in the scales' dtype and the rest is f64, as ONNX's reference
 * (numpy promotes i32 times a float scale to f64). */
static kiln_status requantize(fe_ctx *c, fe_node *n, int32_t acc, int32_t sa, int32_t sb, int32_t sy,
                              int32_t zp, kiln_dtype dt, int32_t *out) {
  double lo, hi;
  if (!quant_range(dt, &lo, &hi))
    return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "quantizing to %s is not supported", kiln_dtype_name(dt));
  if (!kiln_dtype_is_float(G->nodes[sa].dtype))
    return fe_fail(c, n, KILN_ERR_SHAPE, "the scales must be float tensors");
  int32_t s = bin(c, n, KILN_OP_div, bin(c, n, KILN_OP_mul, sa, sb), sy);
  int32_t v = bin(c, n, KILN_OP_mul, to(c, n, acc, KILN_F64), to(c, n, s, KILN_F64));
  *out = saturate(c, n, v, zp >= 0 ? to(c, n, zp, KILN_F64) : -1, dt);
  return KILN_OK;
}

/* MatMulInteger(A, B, a_zero_point, b_zero_point) -> i32. */
kiln_status fe_import_matmul_integer(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 2);
  if (st != KILN_OK) return st;
  int32_t a = centered(c, n, n->in[0], mm_param(c, n, fe_in(n, 2), true));
  int32_t b = centered(c, n, n->in[1], mm_param(c, n, fe_in(n, 3), false));
  n->out[0] = kiln_ir_matmul(G, a, b, NM);
  return KILN_OK;
}

/* QLinearMatMul(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp). */
kiln_status fe_import_qlinear_matmul(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 7);
  if (st != KILN_OK) return st;
  int32_t a = centered(c, n, n->in[0], mm_param(c, n, fe_in(n, 2), true));
  int32_t b = centered(c, n, n->in[3], mm_param(c, n, fe_in(n, 5), false));
  int32_t acc = kiln_ir_matmul(G, a, b, NM), yzp = fe_in(n, 7);
  kiln_dtype dt = yzp >= 0 ? G->nodes[yzp].dtype : G->nodes[n->in[0]].dtype;
  return requantize(c, n, acc, mm_param(c, n, n->in[1], true), mm_param(c, n, n->in[4], false),
                    mm_param(c, n, n->in[6], false), mm_param(c, n, yzp, false), dt, n->out);
}

/* Conv of x and w (i32, centered) with bias (i32 or -1) and the node's conv attributes. */
static kiln_status int_conv(fe_ctx *c, fe_node *n, int32_t x, int32_t w, int32_t bias, int32_t *out) {
  int32_t ins[3] = {x, w, bias}, outs[1] = {-1};
  fe_node sub = *n;
  sub.in = ins, sub.n_in = bias >= 0 ? 3 : 2, sub.out = outs, sub.n_out = 1;
  kiln_status st = fe_import_conv(c, &sub);
  *out = outs[0];
  return st;
}

/* A per-tensor (scalar) or per-output-channel ([Co]) parameter of a conv weight of rank r,
 * shaped [Co, 1, ...] (weight) or as a channel of the output (!weight). */
static int32_t conv_param(fe_ctx *c, fe_node *n, int32_t p, int32_t r, bool weight) {
  if (p < 0) return -1;
  if (kiln_shape_numel(&G->nodes[p].shape) == 1) return mm_param(c, n, p, false);
  return fe_channel_view(c, n, p, weight ? r + 1 : r);
}

/* ConvInteger(x, w, x_zero_point, w_zero_point) -> i32. */
kiln_status fe_import_conv_integer(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 2);
  if (st != KILN_OK) return st;
  int32_t r = G->nodes[n->in[0]].shape.rank;
  int32_t x = centered(c, n, n->in[0], mm_param(c, n, fe_in(n, 2), false));
  int32_t w = centered(c, n, n->in[1], conv_param(c, n, fe_in(n, 3), r, true));
  return int_conv(c, n, x, w, -1, n->out);
}

/* QLinearConv(x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, B). */
kiln_status fe_import_qlinear_conv(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 7);
  if (st != KILN_OK) return st;
  int32_t r = G->nodes[n->in[0]].shape.rank, acc, yzp = fe_in(n, 7), bias = fe_in(n, 8);
  int32_t x = centered(c, n, n->in[0], mm_param(c, n, fe_in(n, 2), false));
  int32_t w = centered(c, n, n->in[3], conv_param(c, n, fe_in(n, 5), r, true));
  if ((st = int_conv(c, n, x, w, bias >= 0 ? to(c, n, bias, KILN_I32) : -1, &acc)) != KILN_OK) return st;
  if (acc < 0) return KILN_OK; /* the builder's error is reported by the caller */
  kiln_dtype dt = yzp >= 0 ? G->nodes[yzp].dtype : G->nodes[n->in[0]].dtype;
  return requantize(c, n, acc, mm_param(c, n, n->in[1], false), conv_param(c, n, n->in[4], r, false),
                    mm_param(c, n, n->in[6], false), mm_param(c, n, yzp, false), dt, n->out);
}
