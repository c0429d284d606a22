/* test_rt_tensor.c - tensor byte sizes and per-element access for every dtype, and the
 * opaque-kernel entry (kiln_rt_opaque) that generated code calls. */
#include "test_rt_helpers.h"

#include <stdio.h>
#include <unistd.h>

TestSuite(tensor, .fini = free_test_bufs);

Test(tensor, nbytes) {
  kiln_rt_tensor t = {KILN_F64, SH(2, 3), NULL};
  cr_assert_eq(kiln_rt_tensor_nbytes(&t), 48);
  t = (kiln_rt_tensor){KILN_BOOL, SCALAR, NULL};
  cr_assert_eq(kiln_rt_tensor_nbytes(&t), 1);
  t = (kiln_rt_tensor){KILN_F16, SH(4, 0), NULL};
  cr_assert_eq(kiln_rt_tensor_nbytes(&t), 0);
}

Test(tensor, set_get_round_trip_every_dtype) {
  for (int dt = 0; dt < KILN_DTYPE_COUNT; dt++) {
    unsigned char buf[64] = {0};
    kiln_rt_set_f64((kiln_dtype)dt, buf, 1, 3.0);
    cr_assert_eq(kiln_rt_get_f64((kiln_dtype)dt, buf, 1), dt == KILN_BOOL ? 1.0 : 3.0, "%s", kiln_dtype_name(dt));
    cr_assert_eq(kiln_rt_get_i64((kiln_dtype)dt, buf, 1), dt == KILN_BOOL ? 1 : 3, "%s", kiln_dtype_name(dt));
    kiln_rt_set_i64((kiln_dtype)dt, buf, 2, 0);
    cr_assert_eq(kiln_rt_get_f64((kiln_dtype)dt, buf, 2), 0.0, "%s", kiln_dtype_name(dt));
    cr_assert_eq(kiln_rt_get_f64((kiln_dtype)dt, buf, 1), dt == KILN_BOOL ? 1.0 : 3.0, "neighbour untouched");
  }
}

Test(tensor, conversions_on_store) {
  unsigned char buf[16];
  kiln_rt_set_f64(KILN_I32, buf, 0, -2.9);
  cr_assert_eq(kiln_rt_get_i64(KILN_I32, buf, 0), -2, "float->int truncates toward zero");
  kiln_rt_set_i64(KILN_I8, buf, 0, 200);
  cr_assert_eq(kiln_rt_get_i64(KILN_I8, buf, 0), -56, "ints wrap");
  kiln_rt_set_i64(KILN_U8, buf, 0, -1);
  cr_assert_eq(kiln_rt_get_i64(KILN_U8, buf, 0), 255);
  kiln_rt_set_f64(KILN_BOOL, buf, 0, 0.25);
  cr_assert_eq(buf[0], 1, "->bool is x != 0");
  kiln_rt_set_f64(KILN_F16, buf, 0, 1.0 / 3);
  cr_assert_eq(((uint16_t *)buf)[0], 0x3555, "f16 round to nearest even");
  kiln_rt_set_f64(KILN_BF16, buf, 0, 1.0 / 3);
  cr_assert_eq(((uint16_t *)buf)[0], 0x3eab);
  kiln_rt_set_f64(KILN_I64, buf, 0, 1e300);
  cr_assert_eq(kiln_rt_get_i64(KILN_I64, buf, 0), INT64_MAX, "out-of-range saturates, never UB");
  kiln_rt_set_f64(KILN_I32, buf, 0, NAN);
  cr_assert_eq(kiln_rt_get_i64(KILN_I32, buf, 0), 0);
  int64_t big = ((int64_t)1 << 53) + 1;
  kiln_rt_set_i64(KILN_I64, buf, 0, big);
  cr_assert_eq(kiln_rt_get_i64(KILN_I64, buf, 0), big, "i64 exact through get_i64");
}

Test(tensor, opaque_runs_the_reference_routine) {
  float x[5] = {3, 1, 3, 5, 1};
  int64_t idx[2] = {-1, -1};
  void *bufs[2] = {x, idx};
  kiln_rt_opaque_desc desc;
  memset(&desc, 0, sizeof desc);
  desc.op = KILN_OP_topk;
  desc.out_buf = 1;
  desc.out_dtype = KILN_I64;
  desc.n_in = 1;
  desc.out_shape = SH(2);
  desc.attrs.axis = 0;
  desc.attrs.k = 2;
  desc.attrs.kind = 1;
  desc.in_bufs[0] = 0;
  desc.in_dtypes[0] = KILN_F32;
  desc.in_shapes[0] = SH(5);
  kiln_rt_opaque(&desc, bufs);
  cr_assert_eq(idx[0], 3);
  cr_assert_eq(idx[1], 0);
}

Test(tensor, opaque_failure_zeroes_the_output_and_returns_nonzero) {
  float data[3] = {1, 2, 3}, upd[1] = {9}, out[3] = {7, 7, 7};
  int64_t ix[1] = {5}; /* out of range */
  void *bufs[4] = {data, ix, upd, out};
  kiln_rt_opaque_desc desc;
  memset(&desc, 0, sizeof desc);
  desc.op = KILN_OP_scatter;
  desc.out_buf = 3;
  desc.out_dtype = KILN_F32;
  desc.out_shape = SH(3);
  desc.n_in = 3;
  kiln_dtype dts[3] = {KILN_F32, KILN_I64, KILN_F32};
  kiln_shape shs[3] = {SH(3), SH(1), SH(1)};
  for (int i = 0; i < 3; i++) {
    desc.in_bufs[i] = i;
    desc.in_dtypes[i] = dts[i];
    desc.in_shapes[i] = shs[i];
  }
  /* nonzero: generated code then sets the run's error word (rt.h) */
  cr_assert_neq(kiln_rt_opaque(&desc, bufs), 0, "an out-of-range scatter index must be reported");
  cr_assert_eq(out[0], 0);
  cr_assert_eq(out[1], 0);
  cr_assert_eq(out[2], 0);
  ix[0] = -3; /* in range: wraps to 0 */
  cr_assert_eq(kiln_rt_opaque(&desc, bufs), 0);
  cr_assert_eq(out[0], 9);
  cr_assert_eq(out[1], 2);
}
