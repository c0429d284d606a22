/* test_llvm_rowwise.c - row-wise kernels on the LLVM backend: one LOOP kernel whose root
 * holds REDUCE nodes that depend only on the row (softmax, layer norm with the mean
 * inside the variance), rank-1 outputs whose reductions depend on no variable, empty
 * reductions, sibling reductions that share variables, and a check that the optimized
 * code of such a kernel is vectorized with no libm call left in it. Values hoisted out
 * of a loop must equal the ones computed inside it, so each case compares with a plain
 * C reference. */
#include "test_llvm_helpers.h"

#include <stdlib.h>

/* x[i, col] as a load: offset i * cols + col over the given variables. */
static int32_t load_rc(kiln_kernel *k, const kiln_kprogram *p, int32_t buf, int32_t row_var, int32_t col_var,
                       int64_t cols) {
  int32_t v[2] = {row_var, col_var};
  int64_t s[2] = {cols, 1};
  return kx_load(k, p, buf, kx_offset(k, 2, v, s));
}

static void run_and_compare(kiln_kprogram *p, void **bufs, const float *out, const float *want, int64_t n,
                            double tol, const char *what) {
  kiln_llvm_jit *jit;
  kiln_rt_entry_fn entry = tp_compile(p, &jit);
  for (int t = 0; t < TP_N_THREADS; t++) {
    memset((void *)out, 0xff, sizeof(float) * (size_t)n);
    tp_exec(entry, bufs, tp_threads[t]);
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++)
      if (!tp_close(out[i], want[i], tol) && bad++ < 4)
        cr_log_error("%s threads %d [%ld]: got %.9g want %.9g", what, tp_threads[t], (long)i, out[i], want[i]);
    cr_expect_eq(bad, 0, "%s threads %d: %ld wrong", what, tp_threads[t], (long)bad);
  }
  kiln_llvm_jit_destroy(jit);
}

/* out[i,j] = exp(x[i,j] - max_k x[i,k]) / sum_k exp(x[i,k] - max_k' x[i,k']) in one
 * kernel; rows with +inf (NaN row), a NaN and -inf entries. */
Test(llvm_rowwise, softmax_in_one_kernel) {
  enum { R = 37, C = 53 };
  kiln_kprogram *p = tp_new();
  int64_t d[2] = {R, C}, red[2] = {C, C};
  int32_t X = tp_buffer(p, KILN_BUF_INPUT, KILN_F32, 2, d, 0);
  int32_t O = tp_buffer(p, KILN_BUF_OUTPUT, KILN_F32, 2, d, 0);
  kiln_kernel *k = tp_loop(p, O, 2, red);
  int32_t mx = kx_reduce(k, KILN_OP_reduce_max, KILN_F32, 2, 1, load_rc(k, p, X, 0, 2, C), 0);
  int32_t e3 = kx_alu(k, KILN_OP_exp, KILN_F32,
                      kx_alu(k, KILN_OP_sub, KILN_F32, load_rc(k, p, X, 0, 3, C), mx, -1), -1, -1);
  int32_t sm = kx_reduce(k, KILN_OP_reduce_sum, KILN_F32, 3, 1, e3, 0);
  int32_t e = kx_alu(k, KILN_OP_exp, KILN_F32, kx_alu(k, KILN_OP_sub, KILN_F32, load_rc(k, p, X, 0, 1, C), mx, -1),
                     -1, -1);
  kx_alu(k, KILN_OP_div, KILN_F32, e, sm, -1);

  float *x = malloc(sizeof(float) * R * C), *out = malloc(sizeof(float) * R * C), *want = malloc(sizeof(float) * R * C);
  for (int i = 0; i < R * C; i++) x[i] = (float)((i * 37) % 101) * 0.19f - 9.0f;
  x[3 * C + 5] = INFINITY;
  x[4 * C + 7] = NAN;
  x[5 * C + 1] = -INFINITY;
  for (int i = 0; i < R; i++) {
    double m = -INFINITY, s = 0;
    for (int j = 0; j < C; j++) m = isnan(x[i * C + j]) || isnan(m) ? NAN : fmax(m, x[i * C + j]);
    for (int j = 0; j < C; j++) s += exp((double)x[i * C + j] - m);
    for (int j = 0; j < C; j++) want[i * C + j] = (float)(exp((double)x[i * C + j] - m) / s);
  }
  void *bufs[2] = {x, out};
  run_and_compare(p, bufs, out, want, R * C, 1e-5, "softmax");
  free(x);
  free(out);
  free(want);
  kiln_ir_kprogram_destroy(p);
}

/* Layer norm in one kernel: the mean is a REDUCE inside the variance's REDUCE (computed
 * once per row, outside the variance loop) and inside the root.
 * out[i,j] = (x[i,j] - mean_i) * rsqrt(var_i + eps) * g[j] + b[j] */
Test(llvm_rowwise, layer_norm_mean_inside_variance) {
  enum { R = 19, C = 70 };
  kiln_kprogram *p = tp_new();
  int64_t d[2] = {R, C}, dc[1] = {C}, red[2] = {C, C};
  int32_t X = tp_buffer(p, KILN_BUF_INPUT, KILN_F32, 2, d, 0);
  int32_t G = tp_buffer(p, KILN_BUF_INPUT, KILN_F32, 1, dc, 1);
  int32_t B = tp_buffer(p, KILN_BUF_INPUT, KILN_F32, 1, dc, 2);
  int32_t O = tp_buffer(p, KILN_BUF_OUTPUT, KILN_F32, 2, d, 0);
  kiln_kernel *k = tp_loop(p, O, 2, red);
  int32_t n = kx_f(k, KILN_F32, C);
  int32_t mean = kx_alu(k, KILN_OP_div, KILN_F32,
                        kx_reduce(k, KILN_OP_reduce_sum, KILN_F32, 2, 1, load_rc(k, p, X, 0, 2, C), 0), n, -1);
  int32_t dv = kx_alu(k, KILN_OP_sub, KILN_F32, load_rc(k, p, X, 0, 3, C), mean, -1);
  int32_t var = kx_alu(k, KILN_OP_div, KILN_F32,
                       kx_reduce(k, KILN_OP_reduce_sum, KILN_F32, 3, 1, kx_alu(k, KILN_OP_mul, KILN_F32, dv, dv, -1), 0),
                       n, -1);
  int32_t rs = kx_alu(k, KILN_OP_rsqrt, KILN_F32, kx_alu(k, KILN_OP_add, KILN_F32, var, kx_f(k, KILN_F32, 1e-5), -1),
                      -1, -1);
  int32_t xc = kx_alu(k, KILN_OP_sub, KILN_F32, load_rc(k, p, X, 0, 1, C), mean, -1);
  int32_t g = kx_load(k, p, G, kx_var(k, 1)), b = kx_load(k, p, B, kx_var(k, 1));
  kx_alu(k, KILN_OP_add, KILN_F32,
         kx_alu(k, KILN_OP_mul, KILN_F32, kx_alu(k, KILN_OP_mul, KILN_F32, xc, rs, -1), g, -1), b, -1);

  static float x[R * C], gg[C], bb[C], out[R * C], want[R * C];
  for (int i = 0; i < R * C; i++) x[i] = (float)((i * 53) % 97) * 0.07f + (float)(i / C);
  for (int j = 0; j < C; j++) {
    gg[j] = 1.0f + 0.01f * (float)j;
    bb[j] = 0.5f - 0.02f * (float)j;
  }
  for (int i = 0; i < R; i++) {
    double m = 0, v = 0;
    for (int j = 0; j < C; j++) m += x[i * C + j];
    m /= C;
    for (int j = 0; j < C; j++) v += (x[i * C + j] - m) * (x[i * C + j] - m);
    v /= C;
    for (int j = 0; j < C; j++) want[i * C + j] = (float)((x[i * C + j] - m) / sqrt(v + 1e-5) * gg[j] + bb[j]);
  }
  void *bufs[4] = {x, gg, bb, out};
  run_and_compare(p, bufs, out, want, R * C, 2e-5, "layer norm");
  kiln_ir_kprogram_destroy(p);
}

/* Rank-1 output (one row): out[j] = x[j] / sum_k x[k] + max_k x[k], the reductions
 * depending on no variable. */
Test(llvm_rowwise, rank1_reductions_of_no_variable) {
  enum { C = 100 };
  kiln_kprogram *p = tp_new();
  int64_t d[1] = {C}, red[1] = {C};
  int32_t X = tp_buffer(p, KILN_BUF_INPUT, KILN_F32, 1, d, 0);
  int32_t O = tp_buffer(p, KILN_BUF_OUTPUT, KILN_F32, 1, d, 0);
  kiln_kernel *k = tp_loop(p, O, 1, red);
  int32_t xk = kx_load(k, p, X, kx_var(k, 1));
  int32_t sm = kx_reduce(k, KILN_OP_reduce_sum, KILN_F32, 1, 1, xk, 0);
  int32_t mx = kx_reduce(k, KILN_OP_reduce_max, KILN_F32, 1, 1, xk, 0); /* shares var 1 with the sum */
  kx_alu(k, KILN_OP_add, KILN_F32, kx_alu(k, KILN_OP_div, KILN_F32, kx_load(k, p, X, kx_var(k, 0)), sm, -1), mx, -1);
  float x[C], out[C], want[C];
  double s = 0, m = -INFINITY;
  for (int j = 0; j < C; j++) {
    x[j] = (float)((j * 7) % 13) + 0.5f;
    s += x[j];
    m = fmax(m, x[j]);
  }
  for (int j = 0; j < C; j++) want[j] = (float)(x[j] / s + m);
  void *bufs[2] = {x, out};
  run_and_compare(p, bufs, out, want, C, 1e-5, "rank 1");
  kiln_ir_kprogram_destroy(p);
}

/* Rank-0 output: the sum of squares of a vector. */
Test(llvm_rowwise, rank0_reduction) {
  kiln_kprogram *p = tp_new();
  int64_t d[1] = {50}, red[1] = {50};
  int32_t X = tp_buffer(p, KILN_BUF_INPUT, KILN_F32, 1, d, 0);
  int32_t O = tp_buffer(p, KILN_BUF_OUTPUT, KILN_F32, 0, NULL, 0);
  kiln_kernel *k = tp_loop(p, O, 1, red);
  int32_t xk = kx_load(k, p, X, kx_var(k, 0));
  kx_reduce(k, KILN_OP_reduce_sum, KILN_F32, 0, 1, kx_alu(k, KILN_OP_mul, KILN_F32, xk, xk, -1), 0);
  float x[50], out[1], want[1] = {0};
  for (int j = 0; j < 50; j++) {
    x[j] = (float)j * 0.25f;
    want[0] += x[j] * x[j];
  }
  void *bufs[2] = {x, out};
  run_and_compare(p, bufs, out, want, 1, 1e-6, "rank 0");
  kiln_ir_kprogram_destroy(p);
}

/* Empty reductions inside a row kernel: sum 0, max -inf, and their bodies (which would
 * read out of range) never run. out[i,j] = x[i,j] + sum_{k<0} x[i,k+1000] + max(...) */
Test(llvm_rowwise, empty_reductions_are_their_initial_value) {
  enum { R = 4, C = 6 };
  kiln_kprogram *p = tp_new();
  int64_t d[2] = {R, C}, red[2] = {0, 0};
  int32_t X = tp_buffer(p, KILN_BUF_INPUT, KILN_F32, 2, d, 0);
  int32_t O = tp_buffer(p, KILN_BUF_OUTPUT, KILN_F32, 2, d, 0);
  kiln_kernel *k = tp_loop(p, O, 2, red);
  int32_t far = kx_alu(k, KILN_OP_add, KILN_I64, kx_var(k, 2), kx_i(k, KILN_I64, 1000000000), -1);
  int32_t sm = kx_reduce(k, KILN_OP_reduce_sum, KILN_F32, 2, 1, kx_load(k, p, X, far), 0);
  int32_t row_far = kx_alu(k, KILN_OP_add, KILN_I64, kx_var(k, 0), kx_i(k, KILN_I64, 1000000000), -1);
  int32_t mx = kx_reduce(k, KILN_OP_reduce_max, KILN_F32, 3, 1, kx_load(k, p, X, row_far), 0);
  int32_t t = kx_alu(k, KILN_OP_add, KILN_F32, load_rc(k, p, X, 0, 1, C), sm, -1);
  /* max(-inf, t) = t: max is -inf */
  kx_alu(k, KILN_OP_max, KILN_F32, t, mx, -1);
  float x[R * C], out[R * C], want[R * C];
  for (int i = 0; i < R * C; i++) want[i] = x[i] = (float)i - 3.0f;
  void *bufs[2] = {x, out};
  run_and_compare(p, bufs, out, want, R * C, 0, "empty");
  kiln_ir_kprogram_destroy(p);
}

/* A reduction over a column-dependent value stays inside the column loop, while the
 * row-invariant reduction in its body is computed once per row:
 * out[i,j] = sum_k (x[i,k] * x[i,j] - max_l x[i,l]). */
Test(llvm_rowwise, column_dependent_reduction_uses_row_reduction) {
  enum { R = 5, C = 9 };
  kiln_kprogram *p = tp_new();
  int64_t d[2] = {R, C}, red[2] = {C, C};
  int32_t X = tp_buffer(p, KILN_BUF_INPUT, KILN_F32, 2, d, 0);
  int32_t O = tp_buffer(p, KILN_BUF_OUTPUT, KILN_F32, 2, d, 0);
  kiln_kernel *k = tp_loop(p, O, 2, red);
  int32_t mx = kx_reduce(k, KILN_OP_reduce_max, KILN_F32, 3, 1, load_rc(k, p, X, 0, 3, C), 0);
  int32_t prod = kx_alu(k, KILN_OP_mul, KILN_F32, load_rc(k, p, X, 0, 2, C), load_rc(k, p, X, 0, 1, C), -1);
  kx_reduce(k, KILN_OP_reduce_sum, KILN_F32, 2, 1, kx_alu(k, KILN_OP_sub, KILN_F32, prod, mx, -1), 0);
  float x[R * C], out[R * C], want[R * C];
  for (int i = 0; i < R * C; i++) x[i] = (float)((i * 5) % 11) - 4.0f;
  for (int i = 0; i < R; i++) {
    float m = -INFINITY;
    for (int l = 0; l < C; l++) m = fmaxf(m, x[i * C + l]);
    for (int j = 0; j < C; j++) {
      double s = 0;
      for (int kk = 0; kk < C; kk++) s += x[i * C + kk] * x[i * C + j] - m;
      want[i * C + j] = (float)s;
    }
  }
  void *bufs[2] = {x, out};
  run_and_compare(p, bufs, out, want, R * C, 1e-6, "column dependent");
  kiln_ir_kprogram_destroy(p);
}

/* The optimized code of a one-kernel softmax and of a GELU is vectorized: the row's max
 * and sum are vector reductions, and exp/erf leave no libm call behind (which would keep
 * the loops scalar). */
Test(llvm_rowwise, softmax_and_gelu_vectorize_without_libm_calls) {
  enum { R = 64, C = 256 };
  kiln_kprogram *p = tp_new();
  int64_t d[2] = {R, C}, red[2] = {C, C};
  int32_t X = tp_buffer(p, KILN_BUF_INPUT, KILN_F32, 2, d, 0);
  int32_t O = tp_buffer(p, KILN_BUF_OUTPUT, KILN_F32, 2, d, 0);
  int32_t O2 = tp_buffer(p, KILN_BUF_OUTPUT, KILN_F32, 2, d, 1);
  kiln_kernel *k = tp_loop(p, O, 2, red);
  int32_t mx = kx_reduce(k, KILN_OP_reduce_max, KILN_F32, 2, 1, load_rc(k, p, X, 0, 2, C), 0);
  int32_t e3 = kx_alu(k, KILN_OP_exp, KILN_F32,
                      kx_alu(k, KILN_OP_sub, KILN_F32, load_rc(k, p, X, 0, 3, C), mx, -1), -1, -1);
  int32_t sm = kx_reduce(k, KILN_OP_reduce_sum, KILN_F32, 3, 1, e3, 0);
  int32_t e = kx_alu(k, KILN_OP_exp, KILN_F32, kx_alu(k, KILN_OP_sub, KILN_F32, load_rc(k, p, X, 0, 1, C), mx, -1),
                     -1, -1);
  kx_alu(k, KILN_OP_div, KILN_F32, e, sm, -1);
  k = tp_loop(p, O2, 0, NULL);
  int32_t x = load_rc(k, p, X, 0, 1, C);
  int32_t er = kx_alu(k, KILN_OP_erf, KILN_F32, kx_alu(k, KILN_OP_mul, KILN_F32, x, kx_f(k, KILN_F32, M_SQRT1_2), -1),
                      -1, -1);
  kx_alu(k, KILN_OP_mul, KILN_F32, x, kx_alu(k, KILN_OP_add, KILN_F32, er, kx_f(k, KILN_F32, 1.0), -1), -1);
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  kiln_diag dg = {0};
  tp_schedule(p);
  cr_assert_eq(kiln_llvm_print_module(p, f, &dg), KILN_OK, "%s", dg.msg);
  fclose(f);
  /* the max of numbers (NaNs are counted beside it: render.c eval_reduce) */
  cr_expect(strstr(text, "llvm.vector.reduce.fmax"), "the row max is not a vector reduction");
  cr_expect(strstr(text, "llvm.vector.reduce.fadd"), "the row sum is not a vector reduction");
  cr_expect_null(strstr(text, "@expf"), "exp left as a libm call");
  cr_expect_null(strstr(text, "@erff"), "erf left as a libm call");
  cr_expect_null(strstr(text, "llvm.exp."), "exp left as an intrinsic (a libm call)");
  free(text);
  kiln_ir_kprogram_destroy(p);
}
