/* test_ir_util.h - shared by the ir/ unit tests: a graph that uses every op in ops.def
 * (built through the builder) and every dtype in its constants. */
#ifndef KILN_TEST_IR_UTIL_H
#define KILN_TEST_IR_UTIL_H

#include <math.h>
#include <stdarg.h>
#include <string.h>

#include "../../ir/ir.h"

static inline kiln_shape shp(int rank, ...) {
  kiln_shape s;
  memset(&s, 0, sizeof s);
  s.rank = rank;
  va_list ap;
  va_start(ap, rank);
  for (int i = 0; i < rank; i++) s.dims[i] = va_arg(ap, int);
  va_end(ap);
  return s;
}

/* nonzero has no builder (only folding produces it): infer and append directly. */
static inline int32_t test_nonzero(kiln_graph *g, int32_t x, int64_t n, const char *name) {
  kiln_shape s = {.rank = 2, .dims = {g->nodes[x].shape.rank, n}};
  kiln_dtype dt = KILN_I64;
  kiln_diag d = {0};
  if (kiln_ir_infer(g, KILN_OP_nonzero, 1, &x, NULL, &dt, &s, &d) != KILN_OK) return -1;
  return kiln_ir_append(g, KILN_OP_nonzero, dt, &s, 1, &x, NULL, name);
}

static inline kiln_graph *build_every_op_graph(void) {
  kiln_graph *g = kiln_ir_graph_create(NULL, "every \"op\"");
  const char *dn[2] = {"batch", NULL};
  kiln_shape s23 = shp(2, 2, 3);
  int32_t x = kiln_ir_input(g, "x", KILN_F32, &s23, dn);
  int32_t y = kiln_ir_input(g, "y\n2", KILN_F32, &s23, NULL);
  float wv[12];
  for (int i = 0; i < 12; i++) wv[i] = (float)i * 0.1f - 0.5f;
  kiln_shape s34 = shp(2, 3, 4);
  int32_t w = kiln_ir_constant(g, "w", KILN_F32, &s34, wv);
  float big[25];
  for (int i = 0; i < 25; i++) big[i] = (float)i / 3.0f;
  kiln_shape s55 = shp(4, 1, 1, 5, 5);
  int32_t img = kiln_ir_constant(g, "img", KILN_F32, &s55, big);
  /* every dtype */
  double f64v[3] = {0.1, -1e300, INFINITY};
  kiln_shape s3 = shp(1, 3), s2 = shp(1, 2);
  kiln_ir_constant(g, "c_f64", KILN_F64, &s3, f64v);
  uint16_t f16v[3] = {kiln_f32_to_f16(1.5f), kiln_f32_to_f16(-0.0f), 0x0001};
  kiln_ir_constant(g, "c_f16", KILN_F16, &s3, f16v);
  uint16_t bf16v[2] = {kiln_f32_to_bf16(3.140625f), 0x7fc0 /* NaN */};
  kiln_ir_constant(g, "c_bf16", KILN_BF16, &s2, bf16v);
  int8_t i8v[2] = {-128, 127};
  kiln_ir_constant(g, "c_i8", KILN_I8, &s2, i8v);
  int16_t i16v[2] = {-32768, 1234};
  kiln_ir_constant(g, "c_i16", KILN_I16, &s2, i16v);
  int32_t i32v[2] = {INT32_MIN, 7};
  kiln_ir_constant(g, "c_i32", KILN_I32, &s2, i32v);
  int64_t i64v[2] = {INT64_MIN, INT64_MAX};
  kiln_ir_constant(g, "c_i64", KILN_I64, &s2, i64v);
  uint8_t u8v[2] = {0, 255};
  kiln_ir_constant(g, "c_u8", KILN_U8, &s2, u8v);
  uint8_t bv[2] = {1, 0};
  kiln_ir_constant(g, "c_bool", KILN_BOOL, &s2, bv);
  float nanv = NAN;
  kiln_shape s0 = shp(0);
  kiln_ir_constant(g, "c_nan", KILN_F32, &s0, &nanv);
  kiln_ir_scalar(g, KILN_F16, 0.333, "half");

  /* elementwise */
  for (int op = KILN_OP_neg; op <= KILN_OP_sign; op++) kiln_ir_unary(g, (kiln_op)op, x, kiln_op_name((kiln_op)op));
  kiln_ir_unary(g, KILN_OP_atan, x, "atan");
  int32_t nan_mask = kiln_ir_unary(g, KILN_OP_isnan, x, "isnan");
  int32_t notm = kiln_ir_unary(g, KILN_OP_not, nan_mask, "not");
  for (int op = KILN_OP_add; op <= KILN_OP_min; op++) kiln_ir_binary(g, (kiln_op)op, x, y, kiln_op_name((kiln_op)op));
  kiln_ir_mod(g, x, y, 1, "fmod");
  for (int op = KILN_OP_and; op <= KILN_OP_xor; op++)
    kiln_ir_binary(g, (kiln_op)op, nan_mask, notm, kiln_op_name((kiln_op)op));
  int32_t cmp = -1;
  for (int op = KILN_OP_eq; op <= KILN_OP_ge; op++) cmp = kiln_ir_binary(g, (kiln_op)op, x, y, kiln_op_name((kiln_op)op));
  kiln_ir_select(g, cmp, x, kiln_ir_scalar(g, KILN_F32, 0.0, "zero"), "select");
  int32_t xi = kiln_ir_cast(g, x, KILN_I64, "cast");

  /* movement */
  kiln_shape s32 = shp(2, 3, 2);
  kiln_ir_reshape(g, x, &s32, "reshape");
  int32_t perm[2] = {1, 0};
  kiln_ir_permute(g, x, perm, "permute");
  kiln_shape s423 = shp(3, 4, 2, 3);
  kiln_ir_broadcast(g, x, &s423, "broadcast");
  int64_t st[2] = {1, 2}, sp[2] = {1, -2}, cn[2] = {1, 2};
  kiln_ir_slice(g, x, st, sp, cn, "slice");
  int64_t lo[2] = {1, -1}, hi[2] = {0, 2};
  kiln_ir_pad(g, x, lo, hi, -0.25, "pad");
  int32_t cx[3] = {x, y, x};
  kiln_ir_concat(g, 3, cx, -1, "concat");
  int32_t rax[1] = {-1};
  kiln_ir_reverse(g, x, 1, rax, "reverse");
  int64_t idxv[2] = {2, -1};
  int32_t idx = kiln_ir_constant(g, "idx", KILN_I64, &s2, idxv);
  kiln_ir_gather(g, x, idx, 1, "gather");
  int64_t gev[6] = {0, 1, 2, 2, 1, 0};
  int32_t gei = kiln_ir_constant(g, "gei", KILN_I64, &s23, gev);
  kiln_ir_gather_elements(g, x, gei, 1, "gather_elements");
  kiln_ir_iota(g, KILN_I32, &s23, 1, "iota");

  /* reductions */
  int32_t ax1[1] = {1};
  kiln_ir_reduce(g, KILN_OP_reduce_sum, x, 1, ax1, 1, "reduce_sum");
  kiln_ir_reduce(g, KILN_OP_reduce_max, x, 1, ax1, 0, "reduce_max");
  int32_t ax01[2] = {0, 1};
  kiln_ir_reduce(g, KILN_OP_reduce_min, x, 2, ax01, 0, "reduce_min");
  kiln_ir_reduce(g, KILN_OP_reduce_prod, xi, 1, ax1, 0, "reduce_prod");
  kiln_ir_arg(g, KILN_OP_argmax, x, 1, 0, 1, "argmax");
  kiln_ir_arg(g, KILN_OP_argmin, x, 0, 1, 0, "argmin");

  /* window, contraction, opaque */
  int64_t win[2] = {2, 2}, str[2] = {2, 1}, dil[2] = {1, 2}, plo[2] = {1, 0}, phi[2] = {0, 1};
  int32_t pl = kiln_ir_pool(g, img, KILN_POOL_AVG, win, str, dil, plo, phi, 1, "pool");
  int32_t mm = kiln_ir_matmul(g, x, w, "matmul");
  float kv[4] = {1, 2, 3, 4};
  kiln_shape sk = shp(4, 1, 1, 2, 2);
  int32_t k = kiln_ir_constant(g, "k", KILN_F32, &sk, kv);
  int32_t cv = kiln_ir_conv(g, img, k, str, dil, plo, phi, 1, "conv");
  /* the layout pass's channels-last forms, on the same operands permuted */
  int32_t to_cl[4] = {0, 2, 3, 1}, w_cl[4] = {2, 3, 1, 0};
  int32_t img_cl = kiln_ir_permute(g, img, to_cl, "img_cl"), k_cl = kiln_ir_permute(g, k, w_cl, "k_cl");
  if (pl >= 0 && cv >= 0 && img_cl >= 0 && k_cl >= 0) {
    kiln_attrs pa = g->nodes[pl].a, ca = g->nodes[cv].a;
    kiln_shape ps = kiln_shape_permuted(&g->nodes[pl].shape, to_cl), cs = kiln_shape_permuted(&g->nodes[cv].shape, to_cl);
    kiln_ir_append(g, KILN_OP_pool_cl, KILN_F32, &ps, 1, &img_cl, &pa, "pool_cl");
    int32_t cin[2] = {img_cl, k_cl};
    kiln_ir_append(g, KILN_OP_conv_cl, KILN_F32, &cs, 2, cin, &ca, "conv_cl");
  }
  kiln_ir_topk(g, x, 2, -1, 1, "topk");
  test_nonzero(g, xi, 3, "nonzero");
  int64_t sidx[2] = {0, 2};
  kiln_shape s12 = shp(2, 1, 2);
  int32_t si = kiln_ir_constant(g, "sidx", KILN_I64, &s12, sidx);
  float su[2] = {5, 6};
  int32_t sup = kiln_ir_constant(g, "supd", KILN_F32, &s12, su);
  int32_t sc = kiln_ir_scatter(g, x, si, sup, 1, 1, "scatter");
  kiln_ir_add_output(g, mm, "out");
  kiln_ir_add_output(g, sc, "scattered");
  return g;
}

#endif
