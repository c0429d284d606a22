/* onnx_ops_math.c - importers for ONNX elementwise math, activations, casts, softmax,
 * reductions, normalizations and TopK, each decomposed into primitive graph ops. */
#include "onnx_impl.h"

#include <math.h>
#include <string.h>

#define G (c->g)
#define NM (n->name)
#define OP (n->p->op_type)

/* Shorthands: every primitive an ONNX node creates carries the node's name. */
static int32_t un(fe_ctx *c, fe_node *n, kiln_op op, int32_t x) { return kiln_ir_unary(G, op, x, NM); }
static int32_t bin(fe_ctx *c, fe_node *n, kiln_op op, int32_t a, int32_t b) {
  return kiln_ir_binary(G, op, a, b, NM);
}
static int32_t sc(fe_ctx *c, fe_node *n, int32_t like, double v) { return fe_scalar_like(c, n, like, v); }

/* ------------------------------------------------------------------ elementwise */
kiln_status fe_import_unary(fe_ctx *c, fe_node *n) {
  static const struct { const char *onnx; kiln_op op; } map[] = {
      {"Abs", KILN_OP_abs},     {"Neg", KILN_OP_neg},       {"Exp", KILN_OP_exp},
      {"Log", KILN_OP_log},     {"Sqrt", KILN_OP_sqrt},     {"Reciprocal", KILN_OP_recip},
      {"Tanh", KILN_OP_tanh},   {"Sigmoid", KILN_OP_sigmoid}, {"Erf", KILN_OP_erf},
      {"Sin", KILN_OP_sin},     {"Cos", KILN_OP_cos},       {"Floor", KILN_OP_floor},
      {"Ceil", KILN_OP_ceil},   {"Round", KILN_OP_round},   {"Sign", KILN_OP_sign},
      {"Not", KILN_OP_not},     {"IsNaN", KILN_OP_isnan},   {"Atan", KILN_OP_atan},
      {"BitwiseNot", KILN_OP_not},
  };
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0];
  if (!strcmp(OP, "Tan")) {
    n->out[0] = bin(c, n, KILN_OP_div, un(c, n, KILN_OP_sin, x), un(c, n, KILN_OP_cos, x));
    return KILN_OK;
  }
  if (!strcmp(OP, "Sinh") || !strcmp(OP, "Cosh")) {
    int32_t ep = un(c, n, KILN_OP_exp, x), em = un(c, n, KILN_OP_exp, un(c, n, KILN_OP_neg, x));
    int32_t s = bin(c, n, !strcmp(OP, "Sinh") ? KILN_OP_sub : KILN_OP_add, ep, em);
    n->out[0] = bin(c, n, KILN_OP_mul, s, sc(c, n, x, 0.5));
    return KILN_OK;
  }
  /* asin x = atan(x / sqrt(1 - x^2)) (x = +-1 divides by zero: atan(+-inf) is right);
   * acos x = 2 atan(sqrt((1 - x) / (1 + x))), accurate near x = 1 where acos is small. */
  if (!strcmp(OP, "Asin")) {
    int32_t r = un(c, n, KILN_OP_sqrt, bin(c, n, KILN_OP_sub, sc(c, n, x, 1), bin(c, n, KILN_OP_mul, x, x)));
    n->out[0] = un(c, n, KILN_OP_atan, bin(c, n, KILN_OP_div, x, r));
    return KILN_OK;
  }
  if (!strcmp(OP, "Acos")) {
    int32_t q = bin(c, n, KILN_OP_div, bin(c, n, KILN_OP_sub, sc(c, n, x, 1), x), bin(c, n, KILN_OP_add, sc(c, n, x, 1), x));
    n->out[0] = bin(c, n, KILN_OP_mul, un(c, n, KILN_OP_atan, un(c, n, KILN_OP_sqrt, q)), sc(c, n, x, 2));
    return KILN_OK;
  }
  /* Inverse hyperbolics through log: asinh keeps |x| to avoid cancellation for x < 0. */
  if (!strcmp(OP, "Asinh")) {
    int32_t ax = un(c, n, KILN_OP_abs, x);
    int32_t r = un(c, n, KILN_OP_sqrt, bin(c, n, KILN_OP_add, bin(c, n, KILN_OP_mul, x, x), sc(c, n, x, 1)));
    n->out[0] = bin(c, n, KILN_OP_mul, un(c, n, KILN_OP_sign, x), un(c, n, KILN_OP_log, bin(c, n, KILN_OP_add, ax, r)));
    return KILN_OK;
  }
  if (!strcmp(OP, "Acosh")) {
    int32_t r = un(c, n, KILN_OP_sqrt, bin(c, n, KILN_OP_sub, bin(c, n, KILN_OP_mul, x, x), sc(c, n, x, 1)));
    n->out[0] = un(c, n, KILN_OP_log, bin(c, n, KILN_OP_add, x, r));
    return KILN_OK;
  }
  if (!strcmp(OP, "Atanh")) {
    int32_t q = bin(c, n, KILN_OP_div, bin(c, n, KILN_OP_add, sc(c, n, x, 1), x), bin(c, n, KILN_OP_sub, sc(c, n, x, 1), x));
    n->out[0] = bin(c, n, KILN_OP_mul, un(c, n, KILN_OP_log, q), sc(c, n, x, 0.5));
    return KILN_OK;
  }
  for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
    if (!strcmp(OP, map[i].onnx)) {
      n->out[0] = un(c, n, map[i].op, x);
      return KILN_OK;
    }
  return fe_fail(c, n, KILN_ERR_INTERNAL, "no unary mapping");
}

/* Opset < 7 broadcasting: with broadcast=1 and axis, b's dims line up with a's from axis. */
static int32_t legacy_broadcast(fe_ctx *c, fe_node *n, int32_t a, int32_t b) {
  if (c->opset >= 7 || a < 0 || b < 0 || !fe_attr_int(n, "broadcast", 0) || !fe_attr(n, "axis"))
    return b;
  const kiln_shape sa = G->nodes[a].shape, sb = G->nodes[b].shape;
  int64_t axis = fe_attr_int(n, "axis", 0);
  if (axis < 0) axis += sa.rank;
  if (axis < 0 || axis + sb.rank > sa.rank) return b; /* the builder reports the mismatch */
  kiln_shape s = {.rank = sa.rank};
  for (int i = 0; i < s.rank; i++) s.dims[i] = 1;
  for (int i = 0; i < sb.rank; i++) s.dims[axis + i] = sb.dims[i];
  return kiln_ir_reshape(G, b, &s, NM);
}

kiln_status fe_import_binary(fe_ctx *c, fe_node *n) {
  static const struct { const char *onnx; kiln_op op; } map[] = {
      {"Add", KILN_OP_add},   {"Sub", KILN_OP_sub},     {"Mul", KILN_OP_mul},
      {"Div", KILN_OP_div},   {"Pow", KILN_OP_pow},     {"And", KILN_OP_and},
      {"Or", KILN_OP_or},     {"Xor", KILN_OP_xor},     {"Equal", KILN_OP_eq},
      {"Greater", KILN_OP_gt}, {"Less", KILN_OP_lt},    {"GreaterOrEqual", KILN_OP_ge},
      {"LessOrEqual", KILN_OP_le}, {"BitwiseAnd", KILN_OP_and}, {"BitwiseOr", KILN_OP_or},
      {"BitwiseXor", KILN_OP_xor},
  };
  kiln_status st = fe_need_inputs(c, n, 2);
  if (st != KILN_OK) return st;
  int32_t a = n->in[0], b = legacy_broadcast(c, n, n->in[0], n->in[1]);
  /* Pow is the one binary op whose exponent may have another type than the base. */
  if (!strcmp(OP, "Pow") && b >= 0 && G->nodes[b].dtype != G->nodes[a].dtype)
    b = kiln_ir_cast(G, b, G->nodes[a].dtype, NM);
  for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
    if (!strcmp(OP, map[i].onnx)) {
      n->out[0] = bin(c, n, map[i].op, a, b);
      return KILN_OK;
    }
  return fe_fail(c, n, KILN_ERR_INTERNAL, "no binary mapping");
}

/* Max, Min, Sum, Mean over any number of inputs, with multidirectional broadcasting. */
kiln_status fe_import_variadic(fe_ctx *c, fe_node *n) {
  kiln_op op = !strcmp(OP, "Max") ? KILN_OP_max : !strcmp(OP, "Min") ? KILN_OP_min : KILN_OP_add;
  if (n->n_in < 1) return fe_fail(c, n, KILN_ERR_PARSE, "needs at least one input");
  int32_t acc = n->in[0];
  for (int i = 1; i < n->n_in; i++) acc = bin(c, n, op, acc, n->in[i]);
  if (!strcmp(OP, "Mean")) acc = bin(c, n, KILN_OP_div, acc, sc(c, n, acc, n->n_in));
  n->out[0] = acc;
  return acc < 0 && G->diag.status == KILN_OK ? fe_fail(c, n, KILN_ERR_PARSE, "missing input") : KILN_OK;
}

/* BitShift on unsigned codes of at most 32 bits, as multiplication or truncating division
 * by 2^y computed in i64; y is clamped to the bit width so that every bit shifts out
 * (x * 2^w wraps to 0 in the cast back, x / 2^w is 0), as ONNX's reference gives. */
kiln_status fe_import_bit_shift(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 2);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0], y = n->in[1];
  kiln_dtype t = G->nodes[x].dtype;
  if (!kiln_dtype_is_int(t) || kiln_dtype_size(t) > 4 || G->nodes[y].dtype != t)
    return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "BitShift of %s by %s is not supported (integers of at most 32 bits)",
                   kiln_dtype_name(t), kiln_dtype_name(G->nodes[y].dtype));
  const char *dir = fe_attr_str(c, n, "direction", "");
  bool left = !strcmp(dir, "LEFT");
  if (!left && strcmp(dir, "RIGHT")) return fe_fail(c, n, KILN_ERR_PARSE, "direction must be LEFT or RIGHT, not '%s'", dir);
  int32_t xi = kiln_ir_cast(G, x, KILN_I64, NM), yi = kiln_ir_cast(G, y, KILN_I64, NM);
  yi = bin(c, n, KILN_OP_min, yi, sc(c, n, yi, 8.0 * (double)kiln_dtype_size(t)));
  int32_t p = bin(c, n, KILN_OP_pow, sc(c, n, yi, 2), yi);
  n->out[0] = kiln_ir_cast(G, bin(c, n, left ? KILN_OP_mul : KILN_OP_div, xi, p), t, NM);
  return KILN_OK;
}

kiln_status fe_import_mod(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 2);
  if (st != KILN_OK) return st;
  int fmod = (int)fe_attr_int(n, "fmod", 0);
  if (!fmod && kiln_dtype_is_float(G->nodes[n->in[0]].dtype))
    return fe_fail(c, n, KILN_ERR_SHAPE, "fmod=0 is only defined for integer inputs");
  n->out[0] = kiln_ir_mod(G, n->in[0], n->in[1], fmod, NM);
  return KILN_OK;
}

/* ------------------------------------------------------------------ activations */
kiln_status fe_import_relu(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  n->out[0] = bin(c, n, KILN_OP_max, n->in[0], sc(c, n, n->in[0], 0));
  return KILN_OK;
}

/* x < 0 ? neg : x */
static int32_t where_negative(fe_ctx *c, fe_node *n, int32_t x, int32_t neg) {
  return kiln_ir_select(G, bin(c, n, KILN_OP_lt, x, sc(c, n, x, 0)), neg, x, NM);
}

kiln_status fe_import_leaky_relu(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0];
  n->out[0] = where_negative(c, n, x, bin(c, n, KILN_OP_mul, x, sc(c, n, x, fe_attr_float(n, "alpha", 0.01f))));
  return KILN_OK;
}

kiln_status fe_import_prelu(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 2);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0];
  n->out[0] = where_negative(c, n, x, bin(c, n, KILN_OP_mul, x, n->in[1]));
  return KILN_OK;
}

/* alpha * (exp(x) - 1) */
static int32_t expm1_scaled(fe_ctx *c, fe_node *n, int32_t x, double alpha) {
  int32_t e = bin(c, n, KILN_OP_sub, un(c, n, KILN_OP_exp, x), sc(c, n, x, 1));
  return bin(c, n, KILN_OP_mul, e, sc(c, n, x, alpha));
}

kiln_status fe_import_elu(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0];
  n->out[0] = where_negative(c, n, x, expm1_scaled(c, n, x, fe_attr_float(n, "alpha", 1.0f)));
  return KILN_OK;
}

kiln_status fe_import_selu(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0];
  double alpha = fe_attr_float(n, "alpha", 1.67326319217681884765625f);
  double gamma = fe_attr_float(n, "gamma", 1.05070102214813232421875f);
  int32_t neg = expm1_scaled(c, n, x, alpha);
  int32_t le0 = bin(c, n, KILN_OP_le, x, sc(c, n, x, 0));
  n->out[0] = bin(c, n, KILN_OP_mul, kiln_ir_select(G, le0, neg, x, NM), sc(c, n, x, gamma));
  return KILN_OK;
}

kiln_status fe_import_celu(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0];
  double alpha = fe_attr_float(n, "alpha", 1.0f);
  int32_t pos = bin(c, n, KILN_OP_max, x, sc(c, n, x, 0));
  int32_t neg = expm1_scaled(c, n, bin(c, n, KILN_OP_div, x, sc(c, n, x, alpha)), alpha);
  n->out[0] = bin(c, n, KILN_OP_add, pos, bin(c, n, KILN_OP_min, neg, sc(c, n, x, 0)));
  return KILN_OK;
}

kiln_status fe_import_thresholded_relu(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0];
  int32_t gt = bin(c, n, KILN_OP_gt, x, sc(c, n, x, fe_attr_float(n, "alpha", 1.0f)));
  n->out[0] = kiln_ir_select(G, gt, x, sc(c, n, x, 0), NM);
  return KILN_OK;
}

kiln_status fe_import_clip(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  int32_t y = n->in[0], lo = -1, hi = -1;
  if (c->opset < 11) {
    if (fe_attr(n, "min")) lo = sc(c, n, y, fe_attr_float(n, "min", 0));
    if (fe_attr(n, "max")) hi = sc(c, n, y, fe_attr_float(n, "max", 0));
  } else {
    lo = fe_in(n, 1);
    hi = fe_in(n, 2);
  }
  if (lo >= 0) y = bin(c, n, KILN_OP_max, y, lo);
  if (hi >= 0) y = bin(c, n, KILN_OP_min, y, hi);
  n->out[0] = y;
  return KILN_OK;
}

/* max(0, min(1, alpha*x + beta)) */
static int32_t hard_sigmoid(fe_ctx *c, fe_node *n, int32_t x, double alpha, double beta) {
  int32_t t = bin(c, n, KILN_OP_add, bin(c, n, KILN_OP_mul, x, sc(c, n, x, alpha)), sc(c, n, x, beta));
  return bin(c, n, KILN_OP_max, bin(c, n, KILN_OP_min, t, sc(c, n, x, 1)), sc(c, n, x, 0));
}

kiln_status fe_import_hard_sigmoid(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  n->out[0] = hard_sigmoid(c, n, n->in[0], fe_attr_float(n, "alpha", 0.2f), fe_attr_float(n, "beta", 0.5f));
  return KILN_OK;
}

kiln_status fe_import_hard_swish(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0];
  n->out[0] = bin(c, n, KILN_OP_mul, x, hard_sigmoid(c, n, x, 1.0 / 6.0, 0.5));
  return KILN_OK;
}

/* log(exp(x) + 1), as the ONNX definition writes it */
static int32_t softplus(fe_ctx *c, fe_node *n, int32_t x) {
  return un(c, n, KILN_OP_log, bin(c, n, KILN_OP_add, un(c, n, KILN_OP_exp, x), sc(c, n, x, 1)));
}

kiln_status fe_import_softplus(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  n->out[0] = softplus(c, n, n->in[0]);
  return KILN_OK;
}

kiln_status fe_import_softsign(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0];
  int32_t den = bin(c, n, KILN_OP_add, un(c, n, KILN_OP_abs, x), sc(c, n, x, 1));
  n->out[0] = bin(c, n, KILN_OP_div, x, den);
  return KILN_OK;
}

kiln_status fe_import_mish(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0];
  n->out[0] = bin(c, n, KILN_OP_mul, x, un(c, n, KILN_OP_tanh, softplus(c, n, x)));
  return KILN_OK;
}

kiln_status fe_import_gelu(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0], inner;
  const char *approx = fe_attr_str(c, n, "approximate", "none");
  if (!strcmp(approx, "tanh")) {
    /* tanh(sqrt(2/pi) * (x + 0.044715 x^3)) */
    int32_t x3 = bin(c, n, KILN_OP_mul, bin(c, n, KILN_OP_mul, x, x), x);
    int32_t t = bin(c, n, KILN_OP_add, x, bin(c, n, KILN_OP_mul, x3, sc(c, n, x, 0.044715)));
    inner = un(c, n, KILN_OP_tanh, bin(c, n, KILN_OP_mul, t, sc(c, n, x, sqrt(2.0 / M_PI))));
  } else if (!strcmp(approx, "none")) {
    inner = un(c, n, KILN_OP_erf, bin(c, n, KILN_OP_mul, x, sc(c, n, x, M_SQRT1_2)));
  } else {
    return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "approximate='%s' is not supported", approx);
  }
  int32_t half_x = bin(c, n, KILN_OP_mul, x, sc(c, n, x, 0.5));
  n->out[0] = bin(c, n, KILN_OP_mul, half_x, bin(c, n, KILN_OP_add, inner, sc(c, n, x, 1)));
  return KILN_OK;
}

kiln_status fe_import_isinf(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0];
  int pos = (int)fe_attr_int(n, "detect_positive", 1), neg = (int)fe_attr_int(n, "detect_negative", 1);
  int32_t p = bin(c, n, KILN_OP_eq, x, sc(c, n, x, pos ? INFINITY : NAN)); /* NaN: never equal */
  int32_t m = bin(c, n, KILN_OP_eq, x, sc(c, n, x, neg ? -INFINITY : NAN));
  n->out[0] = bin(c, n, KILN_OP_or, p, m);
  return KILN_OK;
}

kiln_status fe_import_where(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 3);
  if (st != KILN_OK) return st;
  n->out[0] = kiln_ir_select(G, n->in[0], n->in[1], n->in[2], NM);
  return KILN_OK;
}

static void cast_to(fe_ctx *c, fe_node *n, kiln_dtype to) {
  int32_t x = n->in[0];
  n->out[0] = G->nodes[x].dtype == to ? x : kiln_ir_cast(G, x, to, NM);
}

kiln_status fe_import_cast(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  int64_t to = fe_attr_int(n, "to", 0);
  kiln_dtype dt;
  if (!fe_dtype((int32_t)to, &dt))
    return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "cast to %s is not supported",
                   fe_onnx_type_name((int32_t)to));
  cast_to(c, n, dt);
  return KILN_OK;
}

kiln_status fe_import_cast_like(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 2);
  if (st != KILN_OK) return st;
  cast_to(c, n, G->nodes[n->in[1]].dtype);
  return KILN_OK;
}

kiln_status fe_import_identity(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  n->out[0] = n->in[0];
  return KILN_OK;
}

/* Inference: the identity; the optional mask output is all true. */
kiln_status fe_import_dropout(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0];
  if (fe_in(n, 2) >= 0) {
    double training;
    st = fe_value_scalar(c, n, 2, &training);
    if (st != KILN_OK) return st;
    /* Training with ratio 0 drops nothing: the identity, as inference. */
    double ratio = 0.5;
    if (training != 0 && fe_in(n, 1) >= 0 && (st = fe_value_scalar(c, n, 1, &ratio)) != KILN_OK) return st;
    if (training != 0 && ratio != 0)
      return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "training_mode=true is not supported (random masks) unless ratio is 0");
  }
  n->out[0] = x;
  if (n->n_out > 1) {
    kiln_shape xs = G->nodes[x].shape;
    n->out[1] = kiln_ir_broadcast(G, kiln_ir_scalar(G, KILN_BOOL, 1, NM), &xs, NM);
  }
  return KILN_OK;
}

/* ------------------------------------------------------------------ softmax */
/* Softmax or log-softmax along one axis, stabilized by subtracting the maximum. */
static int32_t softmax_axis(fe_ctx *c, fe_node *n, int32_t x, int32_t axis, bool log_sm) {
  int32_t m = kiln_ir_reduce(G, KILN_OP_reduce_max, x, 1, &axis, 1, NM);
  int32_t z = bin(c, n, KILN_OP_sub, x, m);
  int32_t e = un(c, n, KILN_OP_exp, z);
  int32_t s = kiln_ir_reduce(G, KILN_OP_reduce_sum, e, 1, &axis, 1, NM);
  return log_sm ? bin(c, n, KILN_OP_sub, z, un(c, n, KILN_OP_log, s)) : bin(c, n, KILN_OP_div, e, s);
}

kiln_status fe_import_softmax(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0], axis;
  bool log_sm = !strcmp(OP, "LogSoftmax");
  const kiln_shape s = G->nodes[x].shape;
  if (c->opset >= 13) {
    if ((st = fe_axis(c, n, fe_attr_int(n, "axis", -1), s.rank, &axis)) != KILN_OK) return st;
    n->out[0] = softmax_axis(c, n, x, axis, log_sm);
    return KILN_OK;
  }
  /* Before opset 13 the input is viewed as 2-D [prod(dims[:axis]), prod(dims[axis:])]. */
  if (s.rank == 0) return fe_fail(c, n, KILN_ERR_SHAPE, "input must have rank >= 1");
  int64_t a = fe_attr_int(n, "axis", 1);
  if (a < 0) a += s.rank;
  if (a < 0 || a > s.rank) /* axis == rank is allowed: one row per element */
    return fe_fail(c, n, KILN_ERR_SHAPE, "axis %lld is out of range for rank %d",
                   (long long)fe_attr_int(n, "axis", 1), s.rank);
  axis = (int32_t)a;
  kiln_shape flat = {.rank = 2, .dims = {1, 1}};
  for (int i = 0; i < s.rank; i++) flat.dims[i < axis ? 0 : 1] *= s.dims[i];
  kiln_shape orig = s;
  int32_t y = softmax_axis(c, n, kiln_ir_reshape(G, x, &flat, NM), 1, log_sm);
  n->out[0] = kiln_ir_reshape(G, y, &orig, NM);
  return KILN_OK;
}

/* ------------------------------------------------------------------ reductions */
kiln_status fe_import_reduce(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0];
  int32_t rank = G->nodes[x].shape.rank;
  int keep = (int)fe_attr_int(n, "keepdims", 1);
  int noop = (int)fe_attr_int(n, "noop_with_empty_axes", 0);
  /* Axes moved from an attribute to an input: ReduceSum at opset 13, the others at 18. */
  int64_t ax64[KILN_MAX_RANK];
  int n_ax = 0;
  bool axes_input = c->opset >= (!strcmp(OP, "ReduceSum") ? 13 : 18);
  if (axes_input) {
    if (fe_in(n, 1) >= 0 && (st = fe_value_ints(c, n, 1, ax64, KILN_MAX_RANK, &n_ax)) != KILN_OK)
      return st;
  } else {
    n_ax = fe_attr_ints(c, n, "axes", ax64, KILN_MAX_RANK, &st);
    if (st != KILN_OK) return st;
    if (n_ax < 0) n_ax = 0;
  }
  if (n_ax == 0 && noop) {
    n->out[0] = x;
    return KILN_OK;
  }
  int32_t axes[KILN_MAX_RANK];
  for (int i = 0; i < n_ax; i++)
    if ((st = fe_axis(c, n, ax64[i], rank, &axes[i])) != KILN_OK) return st;
  if (n_ax == 0)
    for (int i = 0; i < rank; i++) axes[n_ax++] = i;

  int32_t y;
  if (!strcmp(OP, "ReduceSum")) {
    y = kiln_ir_reduce(G, KILN_OP_reduce_sum, x, n_ax, axes, keep, NM);
  } else if (!strcmp(OP, "ReduceMean")) {
    y = fe_reduce_mean(c, n, x, n_ax, axes, keep);
  } else if (!strcmp(OP, "ReduceMax")) {
    y = kiln_ir_reduce(G, KILN_OP_reduce_max, x, n_ax, axes, keep, NM);
  } else if (!strcmp(OP, "ReduceMin")) {
    y = kiln_ir_reduce(G, KILN_OP_reduce_min, x, n_ax, axes, keep, NM);
  } else if (!strcmp(OP, "ReduceProd")) {
    y = kiln_ir_reduce(G, KILN_OP_reduce_prod, x, n_ax, axes, keep, NM);
  } else if (!strcmp(OP, "ReduceL1")) {
    y = kiln_ir_reduce(G, KILN_OP_reduce_sum, un(c, n, KILN_OP_abs, x), n_ax, axes, keep, NM);
  } else if (!strcmp(OP, "ReduceL2") || !strcmp(OP, "ReduceSumSquare")) {
    y = kiln_ir_reduce(G, KILN_OP_reduce_sum, bin(c, n, KILN_OP_mul, x, x), n_ax, axes, keep, NM);
    if (!strcmp(OP, "ReduceL2")) y = un(c, n, KILN_OP_sqrt, y);
  } else if (!strcmp(OP, "ReduceLogSum")) {
    y = un(c, n, KILN_OP_log, kiln_ir_reduce(G, KILN_OP_reduce_sum, x, n_ax, axes, keep, NM));
  } else if (!strcmp(OP, "ReduceLogSumExp")) {
    y = un(c, n, KILN_OP_log,
           kiln_ir_reduce(G, KILN_OP_reduce_sum, un(c, n, KILN_OP_exp, x), n_ax, axes, keep, NM));
  } else {
    return fe_fail(c, n, KILN_ERR_INTERNAL, "no reduce mapping");
  }
  n->out[0] = y;
  return KILN_OK;
}

kiln_status fe_import_arg(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0], axis;
  if ((st = fe_axis(c, n, fe_attr_int(n, "axis", 0), G->nodes[x].shape.rank, &axis)) != KILN_OK)
    return st;
  n->out[0] = kiln_ir_arg(G, !strcmp(OP, "ArgMax") ? KILN_OP_argmax : KILN_OP_argmin, x, axis,
                          (int)fe_attr_int(n, "keepdims", 1),
                          (int)fe_attr_int(n, "select_last_index", 0), NM);
  return KILN_OK;
}

/* ------------------------------------------------------------------ normalizations */
/* (x - mean) * rsqrt(var + eps) over axes; also returns the mean and the rsqrt. */
static int32_t normalize(fe_ctx *c, fe_node *n, int32_t x, int32_t n_axes, const int32_t *axes,
                         double eps, int32_t *mean, int32_t *inv) {
  *mean = fe_reduce_mean(c, n, x, n_axes, axes, 1);
  int32_t d = bin(c, n, KILN_OP_sub, x, *mean);
  int32_t var = fe_reduce_mean(c, n, bin(c, n, KILN_OP_mul, d, d), n_axes, axes, 1);
  *inv = un(c, n, KILN_OP_rsqrt, bin(c, n, KILN_OP_add, var, sc(c, n, x, eps)));
  return bin(c, n, KILN_OP_mul, d, *inv);
}

static bool is_half(kiln_dtype t) { return t == KILN_F16 || t == KILN_BF16; }

kiln_status fe_import_layer_norm(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 2);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0], rank = G->nodes[x].shape.rank, axis;
  kiln_dtype dt = G->nodes[x].dtype;
  if ((st = fe_axis(c, n, fe_attr_int(n, "axis", -1), rank, &axis)) != KILN_OK) return st;
  int32_t axes[KILN_MAX_RANK], n_axes = 0;
  for (int i = axis; i < rank; i++) axes[n_axes++] = i;
  /* stash_type=1 (the default) computes statistics in f32. */
  bool up = is_half(dt) && fe_attr_int(n, "stash_type", 1) == 1;
  int32_t xs = up ? kiln_ir_cast(G, x, KILN_F32, NM) : x, mean, inv;
  int32_t y = normalize(c, n, xs, n_axes, axes, fe_attr_float(n, "epsilon", 1e-5f), &mean, &inv);
  if (up) y = kiln_ir_cast(G, y, dt, NM);
  y = bin(c, n, KILN_OP_mul, y, n->in[1]);
  if (fe_in(n, 2) >= 0) y = bin(c, n, KILN_OP_add, y, n->in[2]);
  n->out[0] = y;
  if (n->n_out > 1) n->out[1] = mean;
  if (n->n_out > 2) n->out[2] = inv;
  return KILN_OK;
}

kiln_status fe_import_instance_norm(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 3);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0], rank = G->nodes[x].shape.rank;
  if (rank < 3) return fe_fail(c, n, KILN_ERR_SHAPE, "input must be [N, C, spatial...]");
  int32_t axes[KILN_MAX_RANK], n_axes = 0, mean, inv;
  for (int i = 2; i < rank; i++) axes[n_axes++] = i;
  int32_t y = normalize(c, n, x, n_axes, axes, fe_attr_float(n, "epsilon", 1e-5f), &mean, &inv);
  y = bin(c, n, KILN_OP_mul, y, fe_channel_view(c, n, n->in[1], rank));
  n->out[0] = bin(c, n, KILN_OP_add, y, fe_channel_view(c, n, n->in[2], rank));
  return KILN_OK;
}

/* ------------------------------------------------------------------ TopK */
kiln_status fe_import_topk(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0], axis;
  int64_t k;
  if (c->opset < 10) {
    k = fe_attr_int(n, "k", -1);
  } else {
    int64_t kv[1];
    int cnt;
    if ((st = fe_value_ints(c, n, 1, kv, 1, &cnt)) != KILN_OK) return st;
    if (cnt != 1) return fe_fail(c, n, KILN_ERR_SHAPE, "K must hold one value");
    k = kv[0];
  }
  if ((st = fe_axis(c, n, fe_attr_int(n, "axis", -1), G->nodes[x].shape.rank, &axis)) != KILN_OK)
    return st;
  if (k < 0 || k > G->nodes[x].shape.dims[axis])
    return fe_fail(c, n, KILN_ERR_SHAPE, "k=%lld is out of range for axis %d of size %lld",
                   (long long)k, axis, (long long)G->nodes[x].shape.dims[axis]);
  /* Sorted output satisfies sorted=0 too (any order is allowed there). */
  int32_t idx = kiln_ir_topk(G, x, k, axis, (int)fe_attr_int(n, "largest", 1), NM);
  n->out[0] = kiln_ir_gather_elements(G, x, idx, axis, NM);
  if (n->n_out > 1) n->out[1] = idx;
  return KILN_OK;
}
