/* test_llvm_alu.c - what the LLVM backend's scalar op table (codegen/scalar.c) adds to
 * the semantics every backend shares: the accuracy of its own f32 transcendentals over
 * dense sweeps (with and without AVX-512's vscalefps), and divides computed as multiplies
 * by a reciprocal. Every op at every dtype against the interpreter is
 * test_backend_ops.c's. */
#include "test_llvm_helpers.h"
#include "../../codegen/llvm_impl.h"

#include <float.h>
#include <stdlib.h>

/* ------------------------------------------------------------------ f32 transcendentals */
/* exp, log, tanh, sigmoid and erf of f32 are inline polynomials in the backend (so loops
 * using them vectorize). Dense sweeps over each function's interesting range bound their
 * error against double libm: in ulp of the f32 result (erf: absolute), with the
 * special values exact. */
#define SWEEP_N (1 << 20)

typedef struct sweep {
  kiln_op op;
  double lo, hi;     /* uniform grid; lo == hi: float bit patterns from 1 to +max */
  double max_ulp;    /* bound in ulp, or */
  double max_abs;    /* absolute bound (when > 0) */
} sweep;

static double ref_f32_op(kiln_op op, float x) {
  switch (op) {
  case KILN_OP_exp: return exp((double)x);
  case KILN_OP_log: return log((double)x);
  case KILN_OP_tanh: return tanh((double)x);
  case KILN_OP_sigmoid: return 1.0 / (1.0 + exp(-(double)x));
  case KILN_OP_erf: return erf((double)x);
  default: cr_assert_fail("no sweep reference for %s", kiln_op_name(op)); return 0;
  }
}

/* The gap between |f| and the next f32 up (the subnormal step at 0). */
static double ulp_f32(float f) {
  f = fabsf(f);
  if (f >= FLT_MAX) return ldexp(1.0, 104);
  return f == 0 ? ldexp(1.0, -149) : (double)nextafterf(f, INFINITY) - (double)f;
}

static const float sweep_specials[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 1.0f, -1.0f, 1e-45f, -1e-45f,
                                       1e-38f, 88.72f, 88.73f, 89.0f, 100.0f, -87.0f, -87.4f, -103.0f, -103.97f,
                                       -104.0f, -150.0f, 0.625f, -0.625f, 0.875f, -0.875f, 3.92f, 4.0f, 9.0f,
                                       -9.0f, 20.0f, 1e30f, -1e30f, FLT_MAX, -FLT_MAX, 0.5f, 2.0f};
#define N_SPECIALS ((int)(sizeof sweep_specials / sizeof sweep_specials[0]))

/* The optimized LLVM module of p, as text (free it). */
static char *module_text(kiln_kprogram *p) {
  char *text = NULL;
  size_t n = 0;
  FILE *f = open_memstream(&text, &n);
  kiln_diag d = {0};
  tp_schedule(p);
  cr_assert_eq(kiln_llvm_print_module(p, f, &d), KILN_OK, "%s", d.msg);
  fclose(f);
  return text;
}

/* p compiled as the JIT does, but rendered with the portable math (the code a target
 * without AVX-512 gets: exp's 2^n scaling as two multiplies instead of vscalefps), so
 * that the sweeps cover both on an AVX-512 host. */
static kiln_rt_entry_fn compile_portable(kiln_kprogram *p, kiln_llvm_jit **jit) {
  kiln_diag d = {0};
  LLVMTargetMachineRef tm;
  cr_assert_eq(kiln_llvm_host_machine(KILN_LLVM_JIT_RELOC, KILN_LLVM_JIT_CODE_MODEL, &tm, &d), KILN_OK, "%s", d.msg);
  LLVMContextRef ctx = LLVMContextCreate();
  LLVMModuleRef m = NULL;
  kiln_llvm_render_options o = {.entry_name = KILN_LLVM_JIT_ENTRY};
  tp_schedule(p);
  cr_assert_eq(kiln_llvm_render(p, ctx, &o, &m, &d), KILN_OK, "%s", d.msg);
  cr_assert_eq(kiln_llvm_optimize(m, tm, &d), KILN_OK, "%s", d.msg);
  char *text = LLVMPrintModuleToString(m);
  cr_expect(!strstr(text, "scalef"), "portable code uses vscalefps");
  LLVMDisposeMessage(text);
  char *err = NULL;
  LLVMMemoryBufferRef mb = NULL;
  cr_assert(!LLVMTargetMachineEmitToMemoryBuffer(tm, m, LLVMObjectFile, &err, &mb), "%s", err);
  kiln_rt_entry_fn entry = NULL;
  cr_assert_eq(kiln_llvm_jit_load_object(NULL, LLVMGetBufferStart(mb), LLVMGetBufferSize(mb), KILN_LLVM_JIT_ENTRY, jit,
                                         &entry, &d),
               KILN_OK, "%s", d.msg);
  LLVMDisposeMemoryBuffer(mb);
  LLVMDisposeModule(m);
  LLVMContextDispose(ctx);
  LLVMDisposeTargetMachine(tm);
  return entry;
}

static void transcendental_sweeps(bool portable) {
  static const sweep sw[] = {
      {KILN_OP_exp, -110, 90, 2, 0},
      {KILN_OP_log, 0, 0, 2, 0},
      {KILN_OP_log, 0.5, 2, 2, 0},
      {KILN_OP_tanh, -12, 12, 3, 0},
      {KILN_OP_tanh, -0.7, 0.7, 3, 0},
      {KILN_OP_sigmoid, -110, 110, 3, 0},
      {KILN_OP_erf, -5, 5, 0, 4e-7}, /* one rational for all x: 6 ulp near 1 (render.c) */
      {KILN_OP_erf, -1e-3, 1e-3, 3, 0},
  };
  enum { NS = (int)(sizeof sw / sizeof sw[0]) };
  kiln_kprogram *p = tp_new();
  int64_t d[1] = {SWEEP_N + N_SPECIALS};
  float *in = malloc(sizeof(float) * (size_t)d[0] * NS), *out = malloc(sizeof(float) * (size_t)d[0] * NS);
  cr_assert(in && out);
  void *bufs[2 * NS];
  for (int s = 0; s < NS; s++) {
    float *x = in + (size_t)s * (size_t)d[0];
    for (int i = 0; i < SWEEP_N; i++) {
      if (sw[s].lo == sw[s].hi) { /* every f32 magnitude: bit patterns 1 .. 0x7f7fffff */
        uint32_t u = 1u + (uint32_t)((uint64_t)i * 0x7f7ffffeu / (SWEEP_N - 1));
        memcpy(&x[i], &u, 4);
      } else {
        x[i] = (float)(sw[s].lo + (sw[s].hi - sw[s].lo) * i / (SWEEP_N - 1));
      }
    }
    memcpy(x + SWEEP_N, sweep_specials, sizeof sweep_specials);
    int32_t A = tp_buffer(p, KILN_BUF_INPUT, KILN_F32, 1, d, s);
    int32_t O = tp_buffer(p, KILN_BUF_OUTPUT, KILN_F32, 1, d, s);
    bufs[A] = x;
    bufs[O] = out + (size_t)s * (size_t)d[0];
    kiln_kernel *k = tp_loop(p, O, 0, NULL);
    kx_alu(k, sw[s].op, KILN_F32, kx_load(k, p, A, kx_var(k, 0)), -1, -1);
  }
  if (!portable && __builtin_cpu_supports("avx512f")) { /* the loop's exp scales with vscalefps */
    char *text = module_text(p);
    cr_expect(strstr(text, "llvm.x86.avx512.mask.scalef.ps.512"), "no 16-lane vscalefps in the exp loop");
    free(text);
  }
  kiln_llvm_jit *jit;
  kiln_rt_entry_fn entry = portable ? compile_portable(p, &jit) : tp_compile(p, &jit);
  tp_exec(entry, bufs, 2);
  for (int s = 0; s < NS; s++) {
    const float *x = in + (size_t)s * (size_t)d[0], *y = out + (size_t)s * (size_t)d[0];
    double worst = 0, worst_x = 0;
    int bad_special = 0;
    for (int64_t i = 0; i < d[0]; i++) {
      double want = ref_f32_op(sw[s].op, x[i]);
      float wf = (float)want;
      if (isnan(want) || isinf(wf) || (i >= SWEEP_N && (wf == 0 || fabsf(wf) == 1))) {
        /* NaN, overflow, and exact specials (0, -0, +-1) must match exactly, sign too */
        bool ok = isnan(want) ? isnan(y[i]) : (y[i] == wf && signbit(y[i]) == signbit(wf));
        if (!ok && bad_special++ < 4)
          cr_log_error("%s(%.9g) = %.9g, want %.9g", kiln_op_name(sw[s].op), x[i], y[i], wf);
        continue;
      }
      double err = sw[s].max_abs > 0 ? fabs(y[i] - want) : fabs(y[i] - want) / ulp_f32(wf);
      if (!(err <= worst)) worst = isnan(err) ? INFINITY : err, worst_x = x[i];
    }
    double bound = sw[s].max_abs > 0 ? sw[s].max_abs : sw[s].max_ulp;
    cr_expect_eq(bad_special, 0, "%s: %d special values wrong", kiln_op_name(sw[s].op), bad_special);
    cr_expect(worst <= bound, "%s over [%g, %g]: error %.3g %s at x=%.9g (bound %g)", kiln_op_name(sw[s].op), sw[s].lo,
              sw[s].hi, worst, sw[s].max_abs > 0 ? "abs" : "ulp", worst_x, bound);
    cr_log_info("%s%s over [%g, %g]: max error %.3g %s", portable ? "portable " : "", kiln_op_name(sw[s].op), sw[s].lo,
                sw[s].hi, worst, sw[s].max_abs > 0 ? "abs" : "ulp");
  }
  kiln_llvm_jit_destroy(jit);
  kiln_ir_kprogram_destroy(p);
  free(in);
  free(out);
}

Test(llvm_alu, f32_transcendentals_dense_sweeps) { transcendental_sweeps(false); }
Test(llvm_alu, f32_transcendentals_dense_sweeps_portable) { transcendental_sweeps(true); }

/* ------------------------------------------------------------------ divides by a row's value */
/* y[i, j] = x[i, j] / s[i]: the divisor does not depend on the column loop, so each element
 * is x times the row's reciprocal (render.c div_modes, DIV_ROW), with the divisor scaled
 * by a power of two first where its reciprocal would not be a normal number. Every
 * divisor class (zero, subnormal, tiny, huge, infinite, NaN) against C's division: within
 * 2 ulp, and exact where the quotient is 0, infinite or NaN. */
/* A [R, C] kernel y = x / s[row] of dtype dt, read by `reader` (an op) when not -1. */
static kiln_kprogram *row_divide_program(kiln_dtype dt, int64_t R, int64_t C, kiln_op reader) {
  kiln_kprogram *p = tp_new();
  int64_t d2[2] = {R, C}, d1[1] = {R};
  int32_t X = tp_buffer(p, KILN_BUF_INPUT, dt, 2, d2, 0), S = tp_buffer(p, KILN_BUF_INPUT, dt, 1, d1, 1);
  int32_t Y = tp_buffer(p, KILN_BUF_OUTPUT, dt, 2, d2, 0);
  kiln_kernel *k = tp_loop(p, Y, 0, NULL);
  int32_t vars[2] = {0, 1};
  int64_t strides[2] = {C, 1};
  int32_t x = kx_load(k, p, X, kx_offset(k, 2, vars, strides));
  int32_t s = kx_load(k, p, S, kx_var(k, 0));
  int32_t q = kx_alu(k, KILN_OP_div, dt, x, s, -1);
  if ((int)reader >= 0) kx_alu(k, reader, dt, q, -1, -1);
  return p;
}

/* Whether p's optimized module divides vectors (a divide left in a column loop). */
static void expect_vector_divide(kiln_kprogram *p, bool want) {
  char *text = module_text(p);
  bool has = strstr(text, "fdiv <") != NULL;
  cr_expect(has == want, "%s", want ? "the divide became a multiply" : "a vector divide is left in the column loop");
  free(text);
}

Test(llvm_alu, divide_by_row_value_multiplies_by_reciprocal) {
  static const float divisors[] = {1.0f,    3.0f,     -7.0f,    0.0f,   -0.0f,     1e-40f,  -3e-39f, 1e-45f,
                                   1e-20f,  0x1p-64f, 0x1p-65f, 5e19f,  0x1p64f,   3e38f,   FLT_MAX, INFINITY,
                                   -INFINITY, NAN,    0.1f,     -1e-30f};
  enum { R = (int)(sizeof divisors / sizeof divisors[0]), C = 64 };
  kiln_kprogram *p = row_divide_program(KILN_F32, R, C, (kiln_op)-1);
  expect_vector_divide(p, false);
  static float x[R * C], y[R * C];
  static const float xs[] = {1.0f, -2.5f, 0.0f, -0.0f, 1e30f, -1e-30f, 3e38f, 1e-40f, INFINITY, NAN, 7.75f, 1e-10f};
  for (int i = 0; i < R * C; i++) x[i] = i % 16 < 12 ? xs[i % 16] : (float)(i % 97) * 0.37f - 11.0f;
  kiln_llvm_jit *jit;
  kiln_rt_entry_fn entry = tp_compile(p, &jit);
  void *bufs[3] = {x, (void *)divisors, y};
  for (int t = 0; t < TP_N_THREADS; t++) {
    memset(y, 0, sizeof y);
    tp_exec(entry, bufs, tp_threads[t]);
    int bad = 0;
    for (int i = 0; i < R; i++)
      for (int j = 0; j < C; j++) {
        float a = x[i * C + j], want = a / divisors[i], got = y[i * C + j];
        bool ok = isnan(want) || isinf(want) || want == 0
                      ? (isnan(want) ? isnan(got) : got == want && signbit(got) == signbit(want))
                      : fabs((double)got - (double)want) <= 2 * ulp_f32(want);
        if (!ok && bad++ < 6)
          cr_log_error("threads %d: %.9g / %.9g = %.9g, want %.9g", tp_threads[t], a, divisors[i], got, want);
      }
    cr_expect_eq(bad, 0, "threads %d: %d quotients wrong", tp_threads[t], bad);
  }
  kiln_llvm_jit_destroy(jit);
  kiln_ir_kprogram_destroy(p);
}

/* A quotient read by exp stays a divide: exp's error grows with its input. */
Test(llvm_alu, divide_read_by_exp_stays_a_divide) {
  kiln_kprogram *p = row_divide_program(KILN_F32, 4, 64, KILN_OP_exp);
  expect_vector_divide(p, true);
  kiln_ir_kprogram_destroy(p);
}

/* f64: the same rule, with f64's range (subnormal and beyond-2^1022 divisors). */
Test(llvm_alu, divide_by_row_value_f64) {
  static const double divisors[] = {1.0, -3.0, 0.0, 1e-310, -4e-320, 1e-300, 1e308, -DBL_MAX, INFINITY, NAN, 0.1};
  enum { R = (int)(sizeof divisors / sizeof divisors[0]), C = 32 };
  kiln_kprogram *p = row_divide_program(KILN_F64, R, C, (kiln_op)-1);
  expect_vector_divide(p, false);
  static double x[R * C], y[R * C];
  static const double xs[] = {1.0, -2.5, 0.0, 1e300, -1e-300, 5e-324, 1e-310, INFINITY};
  for (int i = 0; i < R * C; i++) x[i] = i % 16 < 8 ? xs[i % 16] : (double)(i % 97) * 0.37 - 11.0;
  kiln_llvm_jit *jit;
  kiln_rt_entry_fn entry = tp_compile(p, &jit);
  void *bufs[3] = {x, (void *)divisors, y};
  tp_exec(entry, bufs, 2);
  int bad = 0;
  for (int i = 0; i < R * C; i++) {
    double want = x[i] / divisors[i / C], got = y[i];
    double ulp = want == 0 ? 0x1p-1074 : fabs(nextafter(want, INFINITY) - want);
    bool ok = isnan(want) || isinf(want) || want == 0 ? (isnan(want) ? isnan(got) : got == want && signbit(got) == signbit(want))
                                                      : fabs(got - want) <= 2 * ulp;
    if (!ok && bad++ < 6) cr_log_error("%.17g / %.17g = %.17g, want %.17g", x[i], divisors[i / C], got, want);
  }
  cr_expect_eq(bad, 0, "%d quotients wrong", bad);
  kiln_llvm_jit_destroy(jit);
  kiln_ir_kprogram_destroy(p);
}
