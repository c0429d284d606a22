/* test_rt_interp.c - the reference interpreter, op by op, against hand-computed values
 * (small tensors), with the corner cases that define each op's semantics. */
#include "test_rt_helpers.h"

TestSuite(interp, .fini = free_test_bufs);

#define E 2.718281828459045
#define F32TOL 1e-6

/* ------------------------------------------------------------------ unary */
static void unary(kiln_op op, kiln_rt_tensor x, const double *want, double tol) {
  kiln_rt_tensor o = out_tensor(x.dtype, x.shape);
  EV_OK(op, NULL, &o, 1, &x);
  expect_vals(&o, want, kiln_shape_numel(&x.shape), tol, kiln_op_name(op));
}
#define UNARY(op, x, ...) unary(KILN_OP_##op, x, (double[]){__VA_ARGS__}, F32TOL)

Test(interp, unary_float_ops) {
  UNARY(neg, TF32(SH(3), 1, -2, 0), -1, 2, 0);
  UNARY(abs, TF32(SH(3), -1.5f, 2, -0.0f), 1.5, 2, 0);
  UNARY(exp, TF32(SH(3), 0, 1, -1), 1, E, 1 / E);
  UNARY(log, TF32(SH(4), 1, (float)E, 0, -1), 0, 1, -INFINITY, NAN);
  UNARY(sqrt, TF32(SH(3), 4, 2, -1), 2, 1.41421356, NAN);
  UNARY(rsqrt, TF32(SH(3), 4, 0.25f, 0), 0.5, 2, INFINITY);
  UNARY(recip, TF32(SH(3), 2, -4, 0), 0.5, -0.25, INFINITY);
  UNARY(tanh, TF32(SH(3), 0, 1, -INFINITY), 0, 0.761594156, -1);
  UNARY(sigmoid, TF32(SH(4), 0, 2, -1000, 1000), 0.5, 0.880797078, 0, 1);
  UNARY(erf, TF32(SH(3), 0, 1, -0.5f), 0, 0.842700793, -0.520499878);
  UNARY(sin, TF32(SH(2), 0, (float)(M_PI / 2)), 0, 1);
  UNARY(cos, TF32(SH(2), 0, (float)M_PI), 1, -1);
  UNARY(atan, TF32(SH(4), 0, 1, -INFINITY, NAN), 0, M_PI / 4, -M_PI / 2, NAN);
  UNARY(floor, TF32(SH(3), 1.5f, -1.5f, 2), 1, -2, 2);
  UNARY(ceil, TF32(SH(3), 1.5f, -1.5f, 2), 2, -1, 2);
  UNARY(sign, TF32(SH(4), 3, -2, 0, NAN), 1, -1, 0, NAN);
}

Test(interp, round_is_half_to_even) {
  UNARY(round, TF32(SH(8), 0.5f, 1.5f, 2.5f, -0.5f, -1.5f, 2.4f, 2.6f, -2.6f), 0, 2, 2, 0, -2, 2, 3, -3);
  UNARY(round, TF64(SH(2), 3.5, 4.5), 4, 4);
}

Test(interp, unary_integer_ops_wrap_and_stay_exact) {
  UNARY(neg, TI8(SH(3), -128, 5, 0), -128, -5, 0); /* -(-128) wraps in i8 */
  UNARY(abs, TI32(SH(3), -3, 4, 0), 3, 4, 0);
  UNARY(sign, TI64(SH(3), -9, 0, 7), -1, 0, 1);
  /* float-only ops (ops.def OPERANDS) refuse integers, naming the node */
  kiln_rt_tensor x = TI32(SH(2), 3, 0), o = out_tensor(KILN_I32, SH(2));
  kiln_op float_only[] = {KILN_OP_recip, KILN_OP_floor, KILN_OP_exp};
  for (int i = 0; i < 3; i++) {
    memset(&test_diag, 0, sizeof test_diag);
    cr_assert_eq(ev(float_only[i], NULL, &o, 1, &x), KILN_ERR_INVALID_ARGUMENT, "%s", kiln_op_name(float_only[i]));
    cr_assert(strstr(test_diag.msg, "node_under_test"), "error names the node: %s", test_diag.msg);
  }
}

Test(interp, not_and_isnan_give_bool) {
  UNARY(not, TBOOL(SH(2), 0, 1), 1, 0);
  kiln_rt_tensor x = TF32(SH(4), 1, NAN, INFINITY, -NAN), o = out_tensor(KILN_BOOL, SH(4));
  EV_OK(KILN_OP_isnan, NULL, &o, 1, &x);
  EXPECT(o, 0, 0, 1, 0, 1);
  kiln_rt_tensor xi = TI32(SH(2), 0, -1), oi = out_tensor(KILN_BOOL, SH(2));
  cr_assert_eq(ev(KILN_OP_isnan, NULL, &oi, 1, &xi), KILN_ERR_INVALID_ARGUMENT, "isnan is for floats only");
}

/* ------------------------------------------------------------------ binary */
static kiln_rt_tensor bin(kiln_op op, int kind, kiln_dtype out_dt, kiln_rt_tensor a, kiln_rt_tensor b) {
  kiln_attrs at = {.kind = kind};
  kiln_rt_tensor o = out_tensor(out_dt, a.shape);
  kiln_rt_tensor ins[2] = {a, b};
  EV_OK(op, &at, &o, 2, ins);
  return o;
}

Test(interp, add_every_dtype) {
  for (int dt = 0; dt < KILN_DTYPE_COUNT; dt++) {
    if (dt == KILN_BOOL) continue;
    kiln_rt_tensor a = out_tensor((kiln_dtype)dt, SH(3)), b = out_tensor((kiln_dtype)dt, SH(3));
    /* u8: 253 + 6 wraps to 3; signed types: -3 + 6 = 3. */
    int64_t av[3] = {1, 2, dt == KILN_U8 ? 253 : -3}, bv[3] = {4, 5, 6};
    for (int i = 0; i < 3; i++) {
      kiln_rt_set_i64((kiln_dtype)dt, a.data, i, av[i]);
      kiln_rt_set_i64((kiln_dtype)dt, b.data, i, bv[i]);
    }
    kiln_rt_tensor o = bin(KILN_OP_add, 0, (kiln_dtype)dt, a, b);
    cr_assert_eq(kiln_rt_get_f64((kiln_dtype)dt, o.data, 0), 5, "%s", kiln_dtype_name(dt));
    cr_assert_eq(kiln_rt_get_f64((kiln_dtype)dt, o.data, 1), 7, "%s", kiln_dtype_name(dt));
    cr_assert_eq(kiln_rt_get_f64((kiln_dtype)dt, o.data, 2), 3, "%s", kiln_dtype_name(dt));
  }
  /* bool is not a number (ops.def OPERANDS NUMERIC) */
  kiln_rt_tensor ins[2] = {TBOOL(SH(3), 0, 1, 1), TBOOL(SH(3), 0, 0, 1)}, ob = out_tensor(KILN_BOOL, SH(3));
  cr_assert_eq(ev(KILN_OP_add, NULL, &ob, 2, ins), KILN_ERR_INVALID_ARGUMENT);
  kiln_rt_tensor o = bin(KILN_OP_add, 0, KILN_I8, TI8(SH(2), 127, -128), TI8(SH(2), 1, -1));
  EXPECT(o, 0, -128, 127);
  /* f32 rounding happens on store: 1 + 2^-30 is 1 in f32 */
  o = bin(KILN_OP_add, 0, KILN_F32, TF32(SH(1), 1), TF32(SH(1), 0x1p-30f));
  cr_assert_eq(((float *)o.data)[0], 1.0f);
}

Test(interp, sub_mul) {
  kiln_rt_tensor o = bin(KILN_OP_sub, 0, KILN_F32, TF32(SH(2), 1, 5), TF32(SH(2), 3, -1));
  EXPECT(o, 0, -2, 6);
  o = bin(KILN_OP_mul, 0, KILN_F32, TF32(SH(2), 1.5f, -2), TF32(SH(2), 4, 3));
  EXPECT(o, 0, 6, -6);
  o = bin(KILN_OP_mul, 0, KILN_I32, TI32(SH(2), 65536, -7), TI32(SH(2), 65536, 6));
  EXPECT(o, 0, 0, -42); /* 2^32 wraps to 0 in i32 */
}

Test(interp, div_float_and_integer_truncation) {
  kiln_rt_tensor o = bin(KILN_OP_div, 0, KILN_F32, TF32(SH(4), 1, -1, 0, 7), TF32(SH(4), 0, 0, 0, 2));
  EXPECT(o, 0, INFINITY, -INFINITY, NAN, 3.5);
  o = bin(KILN_OP_div, 0, KILN_I32, TI32(SH(5), 7, -7, 7, -7, INT32_MIN), TI32(SH(5), 2, 2, -2, -2, -1));
  EXPECT(o, 0, 3, -3, -3, 3, INT32_MIN);
  o = bin(KILN_OP_div, 0, KILN_I64, TI64(SH(1), INT64_MIN), TI64(SH(1), -1));
  cr_assert_eq(((int64_t *)o.data)[0], INT64_MIN);
}

Test(interp, integer_division_by_zero_is_an_error_naming_the_node) {
  kiln_rt_tensor ins[2] = {TI32(SH(2), 1, 2), TI32(SH(2), 1, 0)}, o = out_tensor(KILN_I32, SH(2));
  cr_assert_eq(ev(KILN_OP_div, NULL, &o, 2, ins), KILN_ERR_INVALID_ARGUMENT);
  cr_assert(strstr(test_diag.msg, "node_under_test") && strstr(test_diag.msg, "zero"), "%s", test_diag.msg);
  kiln_attrs a = {.kind = 0};
  memset(&test_diag, 0, sizeof test_diag);
  cr_assert_eq(ev(KILN_OP_mod, &a, &o, 2, ins), KILN_ERR_INVALID_ARGUMENT);
}

Test(interp, mod_python_and_fmod) {
  kiln_rt_tensor a = TI32(SH(5), 7, -7, 7, -7, 6), b = TI32(SH(5), 3, 3, -3, -3, -3);
  kiln_rt_tensor o = bin(KILN_OP_mod, 0, KILN_I32, a, b);
  EXPECT(o, 0, 1, 2, -2, -1, 0);
  o = bin(KILN_OP_mod, 1, KILN_I32, a, b);
  EXPECT(o, 0, 1, -1, 1, -1, 0);
  kiln_rt_tensor fa = TF32(SH(4), 5.5f, -5.5f, 5.5f, -4), fb = TF32(SH(4), 2, 2, -2, 2);
  o = bin(KILN_OP_mod, 0, KILN_F32, fa, fb);
  EXPECT(o, 0, 1.5, 0.5, -0.5, 0);
  o = bin(KILN_OP_mod, 1, KILN_F32, fa, fb);
  EXPECT(o, 0, 1.5, -1.5, 1.5, -0.0);
  o = bin(KILN_OP_mod, 0, KILN_I64, TI64(SH(1), INT64_MIN), TI64(SH(1), -1));
  EXPECT(o, 0, 0);
}

Test(interp, pow_float_and_integer) {
  kiln_rt_tensor o = bin(KILN_OP_pow, 0, KILN_F32, TF32(SH(4), 2, 4, 2, -8), TF32(SH(4), 3, 0.5f, -1, 0.5f));
  EXPECT(o, F32TOL, 8, 2, 0.5, NAN);
  o = bin(KILN_OP_pow, 0, KILN_I32, TI32(SH(6), 2, 3, -2, 2, 1, -1), TI32(SH(6), 10, 0, 3, -1, -5, -3));
  EXPECT(o, 0, 1024, 1, -8, 0, 1, -1);
}

Test(interp, max_min_propagate_nan) {
  kiln_rt_tensor a = TF32(SH(3), 1, NAN, 3), b = TF32(SH(3), 2, 0, NAN);
  kiln_rt_tensor o = bin(KILN_OP_max, 0, KILN_F32, a, b);
  EXPECT(o, 0, 2, NAN, NAN);
  o = bin(KILN_OP_min, 0, KILN_F32, a, b);
  EXPECT(o, 0, 1, NAN, NAN);
  o = bin(KILN_OP_max, 0, KILN_I32, TI32(SH(2), -5, 4), TI32(SH(2), -6, 9));
  EXPECT(o, 0, -5, 9);
  o = bin(KILN_OP_min, 0, KILN_I32, TI32(SH(2), -5, 4), TI32(SH(2), -6, 9));
  EXPECT(o, 0, -6, 4);
}

Test(interp, logic_ops) {
  kiln_rt_tensor a = TBOOL(SH(4), 0, 0, 1, 1), b = TBOOL(SH(4), 0, 1, 0, 1);
  kiln_rt_tensor o = bin(KILN_OP_and, 0, KILN_BOOL, a, b);
  EXPECT(o, 0, 0, 0, 0, 1);
  o = bin(KILN_OP_or, 0, KILN_BOOL, a, b);
  EXPECT(o, 0, 0, 1, 1, 1);
  o = bin(KILN_OP_xor, 0, KILN_BOOL, a, b);
  EXPECT(o, 0, 0, 1, 1, 0);
}

Test(interp, and_or_xor_not_are_bitwise_on_integers) {
  kiln_rt_tensor a = TI32(SH(4), 12, -7, 0, 5), b = TI32(SH(4), 10, 2, -1, 0);
  kiln_rt_tensor o = bin(KILN_OP_and, 0, KILN_I32, a, b);
  EXPECT(o, 0, 8, 0, 0, 0);
  o = bin(KILN_OP_or, 0, KILN_I32, a, b);
  EXPECT(o, 0, 14, -5, -1, 5);
  o = bin(KILN_OP_xor, 0, KILN_I32, a, b);
  EXPECT(o, 0, 6, -5, -1, 5);
  UNARY(not, TI32(SH(3), 0, -1, 5), -1, 0, -6);
  UNARY(not, TI8(SH(2), 127, -128), -128, 127);
  kiln_rt_tensor u = {KILN_U8, SH(2), (uint8_t[]){0, 200}};
  UNARY(not, u, 255, 55); /* complement within 8 bits, unsigned */
}

Test(interp, comparisons_with_nan_and_large_ints) {
  kiln_rt_tensor a = TF32(SH(3), 1, 2, NAN), b = TF32(SH(3), 1, 3, NAN);
  kiln_rt_tensor o = bin(KILN_OP_eq, 0, KILN_BOOL, a, b);
  EXPECT(o, 0, 1, 0, 0);
  o = bin(KILN_OP_ne, 0, KILN_BOOL, a, b);
  EXPECT(o, 0, 0, 1, 1);
  o = bin(KILN_OP_lt, 0, KILN_BOOL, a, b);
  EXPECT(o, 0, 0, 1, 0);
  o = bin(KILN_OP_le, 0, KILN_BOOL, a, b);
  EXPECT(o, 0, 1, 1, 0);
  o = bin(KILN_OP_gt, 0, KILN_BOOL, a, b);
  EXPECT(o, 0, 0, 0, 0);
  o = bin(KILN_OP_ge, 0, KILN_BOOL, a, b);
  EXPECT(o, 0, 1, 0, 0);
  /* 2^53 + 1 vs 2^53: equal as doubles, different as int64 */
  int64_t big = (int64_t)1 << 53;
  o = bin(KILN_OP_gt, 0, KILN_BOOL, TI64(SH(1), big + 1), TI64(SH(1), big));
  EXPECT(o, 0, 1);
}

Test(interp, select_picks_per_element) {
  kiln_rt_tensor ins[3] = {TBOOL(SH(3), 1, 0, 1), TF32(SH(3), 1, 2, 3), TF32(SH(3), 4, 5, 6)};
  kiln_rt_tensor o = out_tensor(KILN_F32, SH(3));
  EV_OK(KILN_OP_select, NULL, &o, 3, ins);
  EXPECT(o, 0, 1, 5, 3);
  int64_t big = INT64_MAX - 1;
  kiln_rt_tensor ins2[3] = {TBOOL(SH(2), 0, 1), TI64(SH(2), 1, big), TI64(SH(2), -1, 0)};
  kiln_rt_tensor o2 = out_tensor(KILN_I64, SH(2));
  EV_OK(KILN_OP_select, NULL, &o2, 3, ins2);
  cr_assert_eq(((int64_t *)o2.data)[0], -1);
  cr_assert_eq(((int64_t *)o2.data)[1], big);
}

Test(interp, cast_to_every_dtype) {
  kiln_rt_tensor x = TF32(SH(7), 1.75f, -1.75f, 0, 300, -2.9f, NAN, 3e9f);
  /* float -> integer truncates and saturates, NaN -> 0 (ops.def) */
  double want[KILN_DTYPE_COUNT][7] = {
      [KILN_F32] = {1.75, -1.75, 0, 300, -2.9f, NAN, 3e9f}, [KILN_F64] = {1.75, -1.75, 0, 300, -2.9f, NAN, 3e9f},
      [KILN_F16] = {1.75, -1.75, 0, 300, -2.900390625, NAN, INFINITY},
      [KILN_BF16] = {1.75, -1.75, 0, 300, -2.90625, NAN, 3003121664.0},
      [KILN_I8] = {1, -1, 0, 127, -2, 0, 127},
      [KILN_I16] = {1, -1, 0, 300, -2, 0, 32767},
      [KILN_I32] = {1, -1, 0, 300, -2, 0, 2147483647},
      [KILN_I64] = {1, -1, 0, 300, -2, 0, 3e9},
      [KILN_U8] = {1, 0, 0, 255, 0, 0, 255},
      [KILN_BOOL] = {1, 1, 0, 1, 1, 1, 1},
  };
  for (int dt = 0; dt < KILN_DTYPE_COUNT; dt++) {
    kiln_rt_tensor o = out_tensor((kiln_dtype)dt, SH(7));
    EV_OK(KILN_OP_cast, NULL, &o, 1, &x);
    expect_vals(&o, want[dt], 7, 0, kiln_dtype_name(dt));
  }
}

Test(interp, cast_from_ints_and_bools) {
  kiln_rt_tensor x = TI64(SH(3), ((int64_t)1 << 24) + 1, -5, 0), o = out_tensor(KILN_F32, SH(3));
  EV_OK(KILN_OP_cast, NULL, &o, 1, &x);
  EXPECT(o, 0, 16777216, -5, 0);
  kiln_rt_tensor b = TBOOL(SH(2), 1, 0), ob = out_tensor(KILN_F64, SH(2));
  EV_OK(KILN_OP_cast, NULL, &ob, 1, &b);
  EXPECT(ob, 0, 1, 0);
  kiln_rt_tensor n = TF32(SH(2), NAN, -0.0f), on = out_tensor(KILN_BOOL, SH(2));
  EV_OK(KILN_OP_cast, NULL, &on, 1, &n);
  EXPECT(on, 0, 1, 0);
  kiln_rt_tensor i = TI32(SH(2), 256, -1), oi = out_tensor(KILN_U8, SH(2));
  EV_OK(KILN_OP_cast, NULL, &oi, 1, &i);
  EXPECT(oi, 0, 0, 255);
}

/* ------------------------------------------------------------------ movement */
static kiln_rt_tensor iota_f32(kiln_shape s) {
  kiln_rt_tensor t = out_tensor(KILN_F32, s);
  for (int64_t i = 0; i < kiln_shape_numel(&s); i++) ((float *)t.data)[i] = (float)i;
  return t;
}

Test(interp, reshape_keeps_row_major_order) {
  kiln_rt_tensor x = iota_f32(SH(2, 3)), o = out_tensor(KILN_F32, SH(3, 2));
  EV_OK(KILN_OP_reshape, NULL, &o, 1, &x);
  EXPECT(o, 0, 0, 1, 2, 3, 4, 5);
}

Test(interp, permute) {
  kiln_rt_tensor x = iota_f32(SH(2, 3)), o = out_tensor(KILN_F32, SH(3, 2));
  kiln_attrs a = {.perm = {1, 0}};
  EV_OK(KILN_OP_permute, &a, &o, 1, &x);
  EXPECT(o, 0, 0, 3, 1, 4, 2, 5);
  /* rank 3, perm {2,0,1}: out[i0,i1,i2] = in[i1,i2,i0] */
  kiln_rt_tensor x3 = iota_f32(SH(2, 3, 4)), o3 = out_tensor(KILN_F32, SH(4, 2, 3));
  kiln_attrs a3 = {.perm = {2, 0, 1}};
  EV_OK(KILN_OP_permute, &a3, &o3, 1, &x3);
  cr_assert_eq(((float *)o3.data)[3 * 6 + 1 * 3 + 2], 1 * 12 + 2 * 4 + 3);
  cr_assert_eq(((float *)o3.data)[1 * 6 + 0 * 3 + 2], 0 * 12 + 2 * 4 + 1);
}

Test(interp, broadcast_numpy_rules) {
  kiln_rt_tensor x = TF32(SH(3), 1, 2, 3), o = out_tensor(KILN_F32, SH(2, 3));
  EV_OK(KILN_OP_broadcast, NULL, &o, 1, &x);
  EXPECT(o, 0, 1, 2, 3, 1, 2, 3);
  kiln_rt_tensor c = TF32(SH(2, 1), 7, 8), oc = out_tensor(KILN_F32, SH(2, 3));
  EV_OK(KILN_OP_broadcast, NULL, &oc, 1, &c);
  EXPECT(oc, 0, 7, 7, 7, 8, 8, 8);
  kiln_rt_tensor s = TF32(SCALAR, 5), os = out_tensor(KILN_F32, SH(2, 2));
  EV_OK(KILN_OP_broadcast, NULL, &os, 1, &s);
  EXPECT(os, 0, 5, 5, 5, 5);
  kiln_rt_tensor bad = TF32(SH(2), 1, 2), ob = out_tensor(KILN_F32, SH(3));
  cr_assert_eq(ev(KILN_OP_broadcast, NULL, &ob, 1, &bad), KILN_ERR_SHAPE);
}

Test(interp, slice_with_negative_and_strided_steps) {
  kiln_rt_tensor x = iota_f32(SH(5)), o = out_tensor(KILN_F32, SH(3));
  kiln_attrs a = {.starts = {4}, .steps = {-2}};
  EV_OK(KILN_OP_slice, &a, &o, 1, &x);
  EXPECT(o, 0, 4, 2, 0);
  kiln_rt_tensor x2 = iota_f32(SH(3, 4)), o2 = out_tensor(KILN_F32, SH(2, 2));
  kiln_attrs a2 = {.starts = {1, 0}, .steps = {1, 2}};
  EV_OK(KILN_OP_slice, &a2, &o2, 1, &x2);
  EXPECT(o2, 0, 4, 6, 8, 10);
  kiln_rt_tensor o3 = out_tensor(KILN_F32, SH(3));
  kiln_attrs a3 = {.starts = {3}, .steps = {1}}; /* reads index 5: out of range */
  cr_assert_eq(ev(KILN_OP_slice, &a3, &o3, 1, &x), KILN_ERR_SHAPE);
}

Test(interp, pad_fills_and_negative_crops) {
  kiln_rt_tensor x = TF32(SH(2, 2), 1, 2, 3, 4), o = out_tensor(KILN_F32, SH(3, 3));
  kiln_attrs a = {.lo = {1, 0}, .hi = {0, 1}, .value = 9};
  EV_OK(KILN_OP_pad, &a, &o, 1, &x);
  EXPECT(o, 0, 9, 9, 9, 1, 2, 9, 3, 4, 9);
  kiln_rt_tensor x1 = TF32(SH(4), 1, 2, 3, 4), o1 = out_tensor(KILN_F32, SH(4));
  kiln_attrs a1 = {.lo = {-1}, .hi = {1}, .value = 0};
  EV_OK(KILN_OP_pad, &a1, &o1, 1, &x1);
  EXPECT(o1, 0, 2, 3, 4, 0);
}

Test(interp, concat_along_axis) {
  kiln_rt_tensor ins[3] = {TF32(SH(2, 1), 1, 2), TF32(SH(2, 2), 3, 4, 5, 6), TF32(SH(2, 0), 0)};
  kiln_rt_tensor o = out_tensor(KILN_F32, SH(2, 3));
  kiln_attrs a = {.axis = 1};
  EV_OK(KILN_OP_concat, &a, &o, 3, ins);
  EXPECT(o, 0, 1, 3, 4, 2, 5, 6);
}

Test(interp, reverse_listed_axes) {
  kiln_rt_tensor x = iota_f32(SH(2, 3)), o = out_tensor(KILN_F32, SH(2, 3));
  kiln_attrs a = {.n_axes = 1, .axes = {1}};
  EV_OK(KILN_OP_reverse, &a, &o, 1, &x);
  EXPECT(o, 0, 2, 1, 0, 5, 4, 3);
  kiln_attrs a2 = {.n_axes = 2, .axes = {0, 1}};
  EV_OK(KILN_OP_reverse, &a2, &o, 1, &x);
  EXPECT(o, 0, 5, 4, 3, 2, 1, 0);
}

Test(interp, gather_with_negative_indices) {
  kiln_rt_tensor ins[2] = {TF32(SH(3, 2), 1, 2, 3, 4, 5, 6), TI64(SH(2, 2), 0, -1, 1, 0)};
  kiln_rt_tensor o = out_tensor(KILN_F32, SH(2, 2, 2));
  kiln_attrs a = {.axis = 0};
  EV_OK(KILN_OP_gather, &a, &o, 2, ins);
  EXPECT(o, 0, 1, 2, 5, 6, 3, 4, 1, 2);
  kiln_rt_tensor ins1[2] = {ins[0], TI32(SH(1), 1)};
  kiln_rt_tensor o1 = out_tensor(KILN_F32, SH(3, 1));
  kiln_attrs a1 = {.axis = 1};
  EV_OK(KILN_OP_gather, &a1, &o1, 2, ins1);
  EXPECT(o1, 0, 2, 4, 6);
  /* scalar index removes the axis */
  kiln_rt_tensor ins2[2] = {ins[0], TI64(SCALAR, -1)};
  kiln_rt_tensor o2 = out_tensor(KILN_F32, SH(2));
  EV_OK(KILN_OP_gather, &a, &o2, 2, ins2);
  EXPECT(o2, 0, 5, 6);
}

Test(interp, gather_out_of_range_is_an_error) {
  kiln_attrs a = {.axis = 0};
  kiln_rt_tensor o = out_tensor(KILN_F32, SH(1, 2));
  kiln_rt_tensor ins[2] = {TF32(SH(3, 2), 1, 2, 3, 4, 5, 6), TI64(SH(1), 3)};
  cr_assert_eq(ev(KILN_OP_gather, &a, &o, 2, ins), KILN_ERR_INVALID_ARGUMENT);
  cr_assert(strstr(test_diag.msg, "out of range"), "%s", test_diag.msg);
  kiln_rt_tensor ins2[2] = {ins[0], TI64(SH(1), -4)};
  cr_assert_eq(ev(KILN_OP_gather, &a, &o, 2, ins2), KILN_ERR_INVALID_ARGUMENT);
}

Test(interp, gather_elements) {
  kiln_rt_tensor ins[2] = {TF32(SH(2, 2), 1, 2, 3, 4), TI64(SH(2, 2), 0, 0, 1, -2)};
  kiln_rt_tensor o = out_tensor(KILN_F32, SH(2, 2));
  kiln_attrs a = {.axis = 1};
  EV_OK(KILN_OP_gather_elements, &a, &o, 2, ins);
  EXPECT(o, 0, 1, 1, 4, 3);
  kiln_rt_tensor ins0[2] = {TF32(SH(3, 2), 1, 2, 3, 4, 5, 6), TI32(SH(1, 2), 2, -3)};
  kiln_rt_tensor o0 = out_tensor(KILN_F32, SH(1, 2));
  kiln_attrs a0 = {.axis = 0};
  EV_OK(KILN_OP_gather_elements, &a0, &o0, 2, ins0);
  EXPECT(o0, 0, 5, 2);
  kiln_rt_tensor bad[2] = {ins[0], TI64(SH(2, 2), 0, 2, 0, 0)};
  cr_assert_eq(ev(KILN_OP_gather_elements, &a, &o, 2, bad), KILN_ERR_INVALID_ARGUMENT);
}

Test(interp, iota_along_axis) {
  kiln_rt_tensor o = out_tensor(KILN_F32, SH(2, 3));
  kiln_attrs a = {.axis = 1};
  EV_OK(KILN_OP_iota, &a, &o, 0, NULL);
  EXPECT(o, 0, 0, 1, 2, 0, 1, 2);
  kiln_rt_tensor oi = out_tensor(KILN_I64, SH(2, 3));
  kiln_attrs a0 = {.axis = 0};
  EV_OK(KILN_OP_iota, &a0, &oi, 0, NULL);
  EXPECT(oi, 0, 0, 0, 0, 1, 1, 1);
}

/* ------------------------------------------------------------------ reductions */
static kiln_rt_tensor red(kiln_op op, kiln_rt_tensor x, kiln_shape out, int n_axes, int a0, int a1, int keep) {
  kiln_attrs a = {.n_axes = n_axes, .axes = {a0, a1}, .keepdims = keep};
  kiln_rt_tensor o = out_tensor(x.dtype, out);
  EV_OK(op, &a, &o, 1, &x);
  return o;
}

Test(interp, reduce_sum_axes_and_keepdims) {
  kiln_rt_tensor x = TF32(SH(2, 3), 1, 2, 3, 4, 5, 6);
  kiln_rt_tensor o = red(KILN_OP_reduce_sum, x, SH(2), 1, 1, 0, 0);
  EXPECT(o, 0, 6, 15);
  o = red(KILN_OP_reduce_sum, x, SH(1, 3), 1, 0, 0, 1);
  EXPECT(o, 0, 5, 7, 9);
  o = red(KILN_OP_reduce_sum, x, SCALAR, 2, 0, 1, 0);
  EXPECT(o, 0, 21);
  o = red(KILN_OP_reduce_sum, x, SH(2, 3), 0, 0, 0, 0); /* no axes: identity */
  EXPECT(o, 0, 1, 2, 3, 4, 5, 6);
  o = red(KILN_OP_reduce_sum, TI8(SH(2), 100, 100), SCALAR, 1, 0, 0, 0);
  EXPECT(o, 0, -56); /* 200 wraps in i8 */
}

Test(interp, reduce_max_min_prod) {
  kiln_rt_tensor x = TF32(SH(2, 3), 1, -2, 3, 4, NAN, 6);
  kiln_rt_tensor o = red(KILN_OP_reduce_max, x, SH(2), 1, 1, 0, 0);
  EXPECT(o, 0, 3, NAN);
  o = red(KILN_OP_reduce_min, x, SH(2), 1, 1, 0, 0);
  EXPECT(o, 0, -2, NAN);
  o = red(KILN_OP_reduce_prod, TF32(SH(2, 2), 1, 2, 3, 4), SH(2), 1, 0, 0, 0);
  EXPECT(o, 0, 3, 8);
  o = red(KILN_OP_reduce_max, TI32(SH(3), -7, -3, -9), SCALAR, 1, 0, 0, 0);
  EXPECT(o, 0, -3);
}

Test(interp, empty_reductions_give_identities) {
  kiln_rt_tensor x = TF32(SH(2, 0), 0);
  kiln_rt_tensor o = red(KILN_OP_reduce_sum, x, SH(2), 1, 1, 0, 0);
  EXPECT(o, 0, 0, 0);
  o = red(KILN_OP_reduce_prod, x, SH(2), 1, 1, 0, 0);
  EXPECT(o, 0, 1, 1);
  o = red(KILN_OP_reduce_max, x, SH(2), 1, 1, 0, 0);
  EXPECT(o, 0, -INFINITY, -INFINITY);
  o = red(KILN_OP_reduce_min, x, SH(2), 1, 1, 0, 0);
  EXPECT(o, 0, INFINITY, INFINITY);
  kiln_rt_tensor xi = TI32(SH(0), 0);
  o = red(KILN_OP_reduce_max, xi, SCALAR, 1, 0, 0, 0);
  EXPECT(o, 0, INT32_MIN);
  o = red(KILN_OP_reduce_min, xi, SCALAR, 1, 0, 0, 0);
  EXPECT(o, 0, INT32_MAX);
}

static kiln_rt_tensor arg(kiln_op op, kiln_rt_tensor x, kiln_shape out, int axis, int last) {
  kiln_attrs a = {.axis = axis, .kind = last, .keepdims = 0};
  kiln_rt_tensor o = out_tensor(KILN_I64, out);
  EV_OK(op, &a, &o, 1, &x);
  return o;
}

Test(interp, argmax_argmin_ties) {
  kiln_rt_tensor x = TF32(SH(2, 3), 1, 3, 3, 2, 2, 1);
  kiln_rt_tensor o = arg(KILN_OP_argmax, x, SH(2), 1, 0);
  EXPECT(o, 0, 1, 0);
  o = arg(KILN_OP_argmax, x, SH(2), 1, 1);
  EXPECT(o, 0, 2, 1);
  o = arg(KILN_OP_argmin, x, SH(2), 1, 0);
  EXPECT(o, 0, 0, 2);
  o = arg(KILN_OP_argmin, TI32(SH(2, 2), 5, 5, 5, 5), SH(2), 0, 1);
  EXPECT(o, 0, 1, 1);
  o = arg(KILN_OP_argmax, x, SH(3), 0, 0);
  EXPECT(o, 0, 1, 0, 0);
  /* NaN wins both, first occurrence (numpy) */
  o = arg(KILN_OP_argmax, TF32(SH(4), 1, NAN, 5, NAN), SCALAR, 0, 0);
  EXPECT(o, 0, 1);
  o = arg(KILN_OP_argmin, TF32(SH(3), 1, NAN, -5), SCALAR, 0, 0);
  EXPECT(o, 0, 1);
  kiln_rt_tensor e = TF32(SH(2, 0), 0), oe = out_tensor(KILN_I64, SH(2));
  kiln_attrs a = {.axis = 1};
  cr_assert_eq(ev(KILN_OP_argmax, &a, &oe, 1, &e), KILN_ERR_INVALID_ARGUMENT);
}

/* ------------------------------------------------------------------ window */
static kiln_rt_tensor pool1d(int kind, kiln_rt_tensor x, int64_t out_len, int64_t w, int64_t s, int64_t dil,
                             int64_t lo, int64_t hi, int cip) {
  kiln_attrs a = {.kind = kind, .window = {w}, .strides = {s}, .dilations = {dil}, .lo = {lo}, .hi = {hi},
                  .count_include_pad = cip};
  kiln_rt_tensor o = out_tensor(x.dtype, SH(1, 1, out_len));
  EV_OK(KILN_OP_pool, &a, &o, 1, &x);
  return o;
}

Test(interp, pool_max_2d) {
  kiln_rt_tensor x = TF32(SH(1, 1, 3, 3), 1, 2, 3, 4, 5, 6, 7, 8, 9), o = out_tensor(KILN_F32, SH(1, 1, 2, 2));
  kiln_attrs a = {.kind = KILN_POOL_MAX, .window = {2, 2}, .strides = {1, 1}, .dilations = {1, 1}};
  EV_OK(KILN_OP_pool, &a, &o, 1, &x);
  EXPECT(o, 0, 5, 6, 8, 9);
}

Test(interp, pool_max_padding_never_wins) {
  kiln_rt_tensor o = pool1d(KILN_POOL_MAX, TF32(SH(1, 1, 4), -1, -2, -3, -4), 3, 2, 2, 1, 1, 1, 0);
  EXPECT(o, 0, -1, -2, -4);
}

Test(interp, pool_avg_divisor_rules) {
  kiln_rt_tensor x = TF32(SH(1, 1, 4), 1, 2, 3, 4);
  kiln_rt_tensor o = pool1d(KILN_POOL_AVG, x, 4, 3, 1, 1, 1, 1, 1);
  EXPECT(o, F32TOL, 1, 2, 3, 7.0 / 3);
  o = pool1d(KILN_POOL_AVG, x, 4, 3, 1, 1, 1, 1, 0);
  EXPECT(o, F32TOL, 1.5, 2, 3, 3.5);
  /* hi padding only: the second window covers positions 2, 3 and the pad at 4 */
  o = pool1d(KILN_POOL_AVG, x, 2, 3, 2, 1, 0, 1, 1);
  EXPECT(o, F32TOL, 2, 7.0 / 3);
  o = pool1d(KILN_POOL_AVG, x, 2, 3, 2, 1, 0, 1, 0);
  EXPECT(o, F32TOL, 2, 3.5);
}

Test(interp, pool_sum_and_dilation) {
  kiln_rt_tensor o = pool1d(KILN_POOL_SUM, TF32(SH(1, 1, 4), 1, 2, 3, 4), 2, 2, 2, 1, 0, 0, 0);
  EXPECT(o, 0, 3, 7);
  o = pool1d(KILN_POOL_SUM, TF32(SH(1, 1, 5), 1, 2, 3, 4, 5), 3, 2, 1, 2, 0, 0, 0);
  EXPECT(o, 0, 4, 6, 8);
  /* several channels and batches are independent */
  kiln_rt_tensor x = TF32(SH(2, 2, 2), 1, 2, 3, 4, 5, 6, 7, 8), o2 = out_tensor(KILN_F32, SH(2, 2, 1));
  kiln_attrs a = {.kind = KILN_POOL_SUM, .window = {2}, .strides = {1}, .dilations = {1}};
  EV_OK(KILN_OP_pool, &a, &o2, 1, &x);
  EXPECT(o2, 0, 3, 7, 11, 15);
}

/* ------------------------------------------------------------------ contractions */
Test(interp, dot_2d_and_batched) {
  kiln_rt_tensor ins[2] = {TF32(SH(2, 3), 1, 2, 3, 4, 5, 6), TF32(SH(3, 2), 7, 8, 9, 10, 11, 12)};
  kiln_rt_tensor o = out_tensor(KILN_F32, SH(2, 2));
  EV_OK(KILN_OP_dot, NULL, &o, 2, ins);
  EXPECT(o, 0, 58, 64, 139, 154);
  kiln_rt_tensor bi[2] = {TF32(SH(2, 1, 2), 1, 2, 3, 4), TF32(SH(2, 2, 1), 5, 6, 7, 8)};
  kiln_rt_tensor ob = out_tensor(KILN_F32, SH(2, 1, 1));
  EV_OK(KILN_OP_dot, NULL, &ob, 2, bi);
  EXPECT(ob, 0, 17, 53);
  kiln_rt_tensor ii[2] = {TI32(SH(1, 2), 3, -4), TI32(SH(2, 2), 1, 2, 3, 4)};
  kiln_rt_tensor oi = out_tensor(KILN_I32, SH(1, 2));
  EV_OK(KILN_OP_dot, NULL, &oi, 2, ii);
  EXPECT(oi, 0, -9, -10);
  kiln_rt_tensor ei[2] = {TF32(SH(2, 0), 0), TF32(SH(0, 2), 0)}; /* K = 0: zeros */
  kiln_rt_tensor oe = out_tensor(KILN_F32, SH(2, 2));
  EV_OK(KILN_OP_dot, NULL, &oe, 2, ei);
  EXPECT(oe, 0, 0, 0, 0, 0);
}

static kiln_attrs conv_attrs(int k, int64_t s, int64_t dil, int64_t lo, int64_t hi, int groups) {
  kiln_attrs a = {.groups = groups};
  for (int i = 0; i < k; i++) {
    a.strides[i] = s;
    a.dilations[i] = dil;
    a.lo[i] = lo;
    a.hi[i] = hi;
  }
  return a;
}

Test(interp, conv_2d_plain_and_padded_strided) {
  kiln_rt_tensor ins[2] = {TF32(SH(1, 1, 3, 3), 1, 2, 3, 4, 5, 6, 7, 8, 9), TF32(SH(1, 1, 2, 2), 1, 0, 0, 1)};
  kiln_rt_tensor o = out_tensor(KILN_F32, SH(1, 1, 2, 2));
  kiln_attrs a = conv_attrs(2, 1, 1, 0, 0, 1);
  EV_OK(KILN_OP_conv, &a, &o, 2, ins);
  EXPECT(o, 0, 6, 8, 12, 14);
  kiln_rt_tensor ins2[2] = {ins[0], TF32(SH(1, 1, 2, 2), 1, 1, 1, 1)};
  kiln_attrs a2 = conv_attrs(2, 2, 1, 1, 1, 1);
  EV_OK(KILN_OP_conv, &a2, &o, 2, ins2);
  EXPECT(o, 0, 1, 5, 11, 28);
}

Test(interp, conv_groups_dilation_channels) {
  kiln_rt_tensor x = TF32(SH(1, 2, 3), 1, 2, 3, 4, 5, 6);
  kiln_rt_tensor ins[2] = {x, TF32(SH(2, 1, 2), 1, 1, 1, -1)};
  kiln_rt_tensor o = out_tensor(KILN_F32, SH(1, 2, 2));
  kiln_attrs a = conv_attrs(1, 1, 1, 0, 0, 2);
  EV_OK(KILN_OP_conv, &a, &o, 2, ins);
  EXPECT(o, 0, 3, 5, -1, -1);
  kiln_rt_tensor ind[2] = {TF32(SH(1, 1, 5), 1, 2, 3, 4, 5), TF32(SH(1, 1, 2), 1, 1)};
  kiln_rt_tensor od = out_tensor(KILN_F32, SH(1, 1, 3));
  kiln_attrs ad = conv_attrs(1, 1, 2, 0, 0, 1);
  EV_OK(KILN_OP_conv, &ad, &od, 2, ind);
  EXPECT(od, 0, 4, 6, 8);
  kiln_rt_tensor inc[2] = {TF32(SH(1, 2, 2), 1, 2, 3, 4), TF32(SH(2, 2, 1), 1, 1, 1, -1)};
  kiln_rt_tensor oc = out_tensor(KILN_F32, SH(1, 2, 2));
  kiln_attrs ac = conv_attrs(1, 1, 1, 0, 0, 1);
  EV_OK(KILN_OP_conv, &ac, &oc, 2, inc);
  EXPECT(oc, 0, 4, 6, -2, -2);
  kiln_attrs bad = conv_attrs(1, 1, 1, 0, 0, 3);
  cr_assert_eq(ev(KILN_OP_conv, &bad, &o, 2, ins), KILN_ERR_SHAPE);
}

/* ------------------------------------------------------------------ opaque */
Test(interp, topk_sorted_ties_lower_index_first) {
  kiln_rt_tensor x = TF32(SH(5), 3, 1, 3, 5, 1), o = out_tensor(KILN_I64, SH(3));
  kiln_attrs a = {.axis = 0, .k = 3, .kind = 1};
  EV_OK(KILN_OP_topk, &a, &o, 1, &x);
  EXPECT(o, 0, 3, 0, 2);
  a.kind = 0;
  EV_OK(KILN_OP_topk, &a, &o, 1, &x);
  EXPECT(o, 0, 1, 4, 0);
  kiln_rt_tensor x2 = TI32(SH(3, 2), 1, 9, 5, 2, 3, 2), o2 = out_tensor(KILN_I64, SH(2, 2));
  kiln_attrs a2 = {.axis = 0, .k = 2, .kind = 1};
  EV_OK(KILN_OP_topk, &a2, &o2, 1, &x2);
  EXPECT(o2, 0, 1, 0, 2, 1); /* col 0 [1,5,3] -> 1,2; col 1 [9,2,2] -> 0,1 */
  kiln_rt_tensor xn = TF32(SH(3), 1, NAN, 2), on = out_tensor(KILN_I64, SH(1));
  kiln_attrs an = {.axis = 0, .k = 1, .kind = 1};
  EV_OK(KILN_OP_topk, &an, &on, 1, &xn);
  EXPECT(on, 0, 1);
}

Test(interp, nonzero_coordinates) {
  kiln_rt_tensor x = TF32(SH(2, 3), 0, 1, 0, 2, 0, NAN), o = out_tensor(KILN_I64, SH(2, 3));
  EV_OK(KILN_OP_nonzero, NULL, &o, 1, &x);
  EXPECT(o, 0, 0, 1, 1, 1, 0, 2);
  kiln_rt_tensor bad = out_tensor(KILN_I64, SH(2, 2));
  cr_assert_eq(ev(KILN_OP_nonzero, NULL, &bad, 1, &x), KILN_ERR_SHAPE);
}

static kiln_rt_tensor scatter(int kind, int axis, kiln_rt_tensor data, kiln_rt_tensor idx, kiln_rt_tensor upd) {
  kiln_rt_tensor ins[3] = {data, idx, upd}, o = out_tensor(data.dtype, data.shape);
  kiln_attrs a = {.axis = axis, .kind = kind};
  EV_OK(KILN_OP_scatter, &a, &o, 3, ins);
  return o;
}

Test(interp, scatter_elements_and_reductions) {
  kiln_rt_tensor o = scatter(0, 0, TF32(SH(3, 3), 0, 0, 0, 0, 0, 0, 0, 0, 0), TI64(SH(2, 3), 1, 0, 2, 0, 2, 1),
                             TF32(SH(2, 3), 1.0f, 1.1f, 1.2f, 2.0f, 2.1f, 2.2f));
  EXPECT(o, F32TOL, 2.0, 1.1, 0.0, 1.0, 0.0, 2.2, 0.0, 2.1, 1.2);
  kiln_rt_tensor d = TF32(SH(1, 5), 1, 2, 3, 4, 5), ix = TI64(SH(1, 2), 1, -4), up = TF32(SH(1, 2), 1.5f, 2.5f);
  o = scatter(1, 1, d, ix, up);
  EXPECT(o, F32TOL, 1, 6, 3, 4, 5);
  o = scatter(2, 1, d, ix, up);
  EXPECT(o, F32TOL, 1, 7.5, 3, 4, 5);
  o = scatter(3, 1, d, ix, up);
  EXPECT(o, F32TOL, 1, 2.5, 3, 4, 5);
  o = scatter(4, 1, d, ix, up);
  EXPECT(o, F32TOL, 1, 1.5, 3, 4, 5);
  o = scatter(1, 0, TI32(SH(2), 1, 2), TI32(SH(2), -1, -1), TI32(SH(2), 10, 20));
  EXPECT(o, 0, 1, 32);
  kiln_rt_tensor ins[3] = {d, TI64(SH(1, 2), 5, 0), up}, ob = out_tensor(KILN_F32, SH(1, 5));
  kiln_attrs a = {.axis = 1};
  cr_assert_eq(ev(KILN_OP_scatter, &a, &ob, 3, ins), KILN_ERR_INVALID_ARGUMENT);
}

Test(interp, every_op_has_reference_semantics) {
  /* A node whose op falls through the dispatch would report "no reference semantics". */
  for (int op = KILN_OP_neg; op < KILN_OP_COUNT; op++) {
    kiln_node n;
    memset(&n, 0, sizeof n);
    n.op = (kiln_op)op;
    n.name = "probe";
    int arity = kiln_op_table[op].arity;
    n.n_in = arity < 0 ? 1 : arity;
    kiln_rt_tensor ins[3], out = {KILN_F32, SH(0), test_alloc(8)};
    for (int i = 0; i < 3; i++) ins[i] = (kiln_rt_tensor){KILN_F32, SH(0), test_alloc(8)};
    n.shape = out.shape;
    if (op == KILN_OP_pool || op == KILN_OP_conv) continue; /* need rank >= 2 shapes */
    kiln_diag d = {0};
    kiln_rt_eval_node(NULL, &n, ins, &out, &d);
    cr_assert(!strstr(d.msg, "no reference semantics"), "%s: %s", kiln_op_name(op), d.msg);
  }
}
