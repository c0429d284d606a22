/* test_rt_helpers.h - small helpers shared by the runtime's unit tests: literal shapes and
 * tensors, evaluating one node through the reference interpreter, and checking values. */
#ifndef TEST_RT_HELPERS_H
#define TEST_RT_HELPERS_H

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../runtime/rt.h"

static inline kiln_shape mkshape(size_t r, const int64_t *d) { return kiln_shape_make((int32_t)r, d); }
#define SH(...) mkshape(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t), (int64_t[]){__VA_ARGS__})
#define SCALAR ((kiln_shape){0})

#define TF32(sh, ...) ((kiln_rt_tensor){KILN_F32, sh, (float[]){__VA_ARGS__}})
#define TF64(sh, ...) ((kiln_rt_tensor){KILN_F64, sh, (double[]){__VA_ARGS__}})
#define TI32(sh, ...) ((kiln_rt_tensor){KILN_I32, sh, (int32_t[]){__VA_ARGS__}})
#define TI64(sh, ...) ((kiln_rt_tensor){KILN_I64, sh, (int64_t[]){__VA_ARGS__}})
#define TI8(sh, ...) ((kiln_rt_tensor){KILN_I8, sh, (int8_t[]){__VA_ARGS__}})
#define TBOOL(sh, ...) ((kiln_rt_tensor){KILN_BOOL, sh, (uint8_t[]){__VA_ARGS__}})

/* Output tensors: freed by the suite's fini (each Criterion test runs in its own process,
 * but sanitizer builds check for leaks). */
#define MAX_TEST_BUFS 256
static void *test_bufs[MAX_TEST_BUFS];
static int n_test_bufs;
static inline void free_test_bufs(void) {
  for (int i = 0; i < n_test_bufs; i++) free(test_bufs[i]);
  n_test_bufs = 0;
}
static inline void *test_alloc(size_t n) {
  void *p = calloc(1, n ? n : 1);
  cr_assert(p && n_test_bufs < MAX_TEST_BUFS);
  test_bufs[n_test_bufs++] = p;
  return p;
}
static inline kiln_rt_tensor out_tensor(kiln_dtype dt, kiln_shape s) {
  kiln_rt_tensor t = {dt, s, NULL};
  t.data = test_alloc(kiln_rt_tensor_nbytes(&t));
  /* Poison so that an element the interpreter forgets to write is noticed. */
  memset(t.data, 0x7f, kiln_rt_tensor_nbytes(&t));
  return t;
}

static kiln_diag test_diag;

/* Evaluates op on ins into out (whose dtype/shape are the node's). */
static inline kiln_status ev(kiln_op op, const kiln_attrs *a, kiln_rt_tensor *out, int n_in,
                             const kiln_rt_tensor *ins) {
  kiln_node n;
  memset(&n, 0, sizeof n);
  n.op = op;
  n.dtype = out->dtype;
  n.shape = out->shape;
  n.n_in = n_in;
  if (a) n.a = *a;
  n.name = "node_under_test";
  memset(&test_diag, 0, sizeof test_diag);
  return kiln_rt_eval_node(NULL, &n, ins, out, &test_diag);
}
#define EV_OK(op, a, out, n_in, ins)                                                   \
  do {                                                                                 \
    kiln_status st_ = ev(op, a, out, n_in, ins);                                       \
    cr_assert_eq(st_, KILN_OK, "%s failed: %s", kiln_op_name(op), test_diag.msg);      \
  } while (0)

static inline void expect_vals(const kiln_rt_tensor *t, const double *want, int64_t n, double tol,
                               const char *what) {
  cr_assert_eq(kiln_shape_numel(&t->shape), n, "%s: %lld elements, expected %lld", what,
               (long long)kiln_shape_numel(&t->shape), (long long)n);
  for (int64_t i = 0; i < n; i++) {
    double g = kiln_rt_get_f64(t->dtype, t->data, i), w = want[i];
    if (isnan(w)) cr_assert(isnan(g), "%s[%lld]: got %g, want NaN", what, (long long)i, g);
    else if (isinf(w)) cr_assert(g == w, "%s[%lld]: got %g, want %g", what, (long long)i, g, w);
    else
      cr_assert(fabs(g - w) <= tol * (1 + fabs(w)), "%s[%lld]: got %.9g, want %.9g", what, (long long)i, g, w);
  }
}
#define EXPECT(t, tol, ...)                                                            \
  expect_vals(&(t), (double[]){__VA_ARGS__}, sizeof((double[]){__VA_ARGS__}) / sizeof(double), tol, #t)

#endif
