/* test_llvm_alu.c - every elementwise op of ops.def through the LLVM backend's op table:
 * f32 against libm-computed expectations, i32/i64/u8 against wrapping C arithmetic
 * (including the division guards; and/or/xor/not bitwise), and the bool ops. One kernel per case, one JIT
 * compile per dtype, run with pools of 1 and 2 threads. */
#include "test_llvm_helpers.h"
#include "alu_ref.h"
#include "../../codegen/llvm_impl.h"

#include <float.h>
#include <stdlib.h>

#define N 16

typedef enum form {
  F_F,   /* f32 a -> f32 */
  F_B,   /* f32 a -> bool */
  B_B,   /* bool c -> bool */
  FF_F,  /* f32 a, b -> f32 */
  FF_B,  /* f32 a, b -> bool */
  BB_B,  /* bool c, e -> bool */
  SEL,   /* c ? a : b -> f32 */
  CAST,  /* f32 a -> dtype */
} form;

typedef struct fcase {
  kiln_op op;
  int kind;
  form form;
  kiln_dtype out; /* CAST only */
} fcase;

static const fcase fcases[] = {
    {KILN_OP_neg, 0, F_F, 0},     {KILN_OP_abs, 0, F_F, 0},   {KILN_OP_exp, 0, F_F, 0},
    {KILN_OP_log, 0, F_F, 0},     {KILN_OP_sqrt, 0, F_F, 0},  {KILN_OP_rsqrt, 0, F_F, 0},
    {KILN_OP_recip, 0, F_F, 0},   {KILN_OP_tanh, 0, F_F, 0},  {KILN_OP_sigmoid, 0, F_F, 0},
    {KILN_OP_erf, 0, F_F, 0},     {KILN_OP_sin, 0, F_F, 0},   {KILN_OP_cos, 0, F_F, 0},
    {KILN_OP_floor, 0, F_F, 0},   {KILN_OP_ceil, 0, F_F, 0},  {KILN_OP_round, 0, F_F, 0},
    {KILN_OP_sign, 0, F_F, 0},    {KILN_OP_not, 0, B_B, 0},   {KILN_OP_isnan, 0, F_B, 0},
    {KILN_OP_atan, 0, F_F, 0},
    {KILN_OP_add, 0, FF_F, 0},    {KILN_OP_sub, 0, FF_F, 0},  {KILN_OP_mul, 0, FF_F, 0},
    {KILN_OP_div, 0, FF_F, 0},    {KILN_OP_pow, 0, FF_F, 0},  {KILN_OP_max, 0, FF_F, 0},
    {KILN_OP_min, 0, FF_F, 0},    {KILN_OP_mod, 0, FF_F, 0},  {KILN_OP_mod, 1, FF_F, 0},
    {KILN_OP_and, 0, BB_B, 0},    {KILN_OP_or, 0, BB_B, 0},   {KILN_OP_xor, 0, BB_B, 0},
    {KILN_OP_eq, 0, FF_B, 0},     {KILN_OP_ne, 0, FF_B, 0},   {KILN_OP_lt, 0, FF_B, 0},
    {KILN_OP_le, 0, FF_B, 0},     {KILN_OP_gt, 0, FF_B, 0},   {KILN_OP_ge, 0, FF_B, 0},
    {KILN_OP_select, 0, SEL, 0},  {KILN_OP_cast, 0, CAST, KILN_I32},
    {KILN_OP_cast, 0, CAST, KILN_BOOL}, {KILN_OP_cast, 0, CAST, KILN_F64},
};
#define N_FCASES ((int)(sizeof fcases / sizeof fcases[0]))


/* Adding an elementwise op to ops.def must add a case here. */
Test(llvm_alu, table_covers_every_elementwise_op) {
  for (int op = 0; op < KILN_OP_COUNT; op++) {
    if (kiln_op_table[op].category != KILN_CAT_ELEMENTWISE) continue;
    bool found = false;
    for (int i = 0; i < N_FCASES; i++) found |= (int)fcases[i].op == op;
    cr_expect(found, "elementwise op %s has no LLVM test case", kiln_op_name(op));
  }
  /* every case checked against libm has a reference (all are finite at a = b = 1) */
  for (int i = 0; i < N_FCASES; i++)
    if (fcases[i].form == F_F || fcases[i].form == FF_F || fcases[i].form == FF_B)
      cr_expect(!isnan(alu_ref(fcases[i].op, fcases[i].kind, 1, 1, true)), "no libm reference for %s",
                kiln_op_name(fcases[i].op));
}

Test(llvm_alu, every_op_f32_matches_libm) {
  static const float a[N] = {-3.7f, -2.5f, -1, -0.5f, -0.0f, 0, 0.3f, 0.5f, 1, 1.5f, 2.5f, 3.2f, 7, NAN, 0.75f, -6};
  static const float b[N] = {2, 1.5f, -1, 0.5f, 1, -2, 0.3f, 2, -3, 1.5f, -2.5f, 1.1f, -0.5f, 1, NAN, 4};
  static const uint8_t c[N] = {1, 0, 1, 0, 1, 1, 0, 0, 1, 0, 1, 0, 1, 1, 0, 0};
  static const uint8_t e[N] = {1, 1, 0, 0, 1, 0, 1, 0, 0, 1, 1, 0, 1, 0, 0, 1};
  kiln_kprogram *p = tp_new();
  int64_t d[1] = {N};
  int32_t A = tp_buffer(p, KILN_BUF_INPUT, KILN_F32, 1, d, 0);
  int32_t B = tp_buffer(p, KILN_BUF_INPUT, KILN_F32, 1, d, 1);
  int32_t C = tp_buffer(p, KILN_BUF_INPUT, KILN_BOOL, 1, d, 2);
  int32_t E = tp_buffer(p, KILN_BUF_INPUT, KILN_BOOL, 1, d, 3);
  static double out[N_FCASES][N]; /* room for any dtype (f64 is the widest) */
  void *bufs[4 + N_FCASES] = {(void *)a, (void *)b, (void *)c, (void *)e};
  for (int i = 0; i < N_FCASES; i++) {
    const fcase *fc = &fcases[i];
    kiln_dtype odt = fc->form == F_F || fc->form == FF_F || fc->form == SEL ? KILN_F32
                     : fc->form == CAST ? fc->out : KILN_BOOL;
    int32_t O = tp_buffer(p, KILN_BUF_OUTPUT, odt, 1, d, i);
    bufs[O] = out[i];
    kiln_kernel *k = tp_loop(p, O, 0, NULL);
    int32_t v = kx_var(k, 0);
    int32_t la = kx_load(k, p, A, v), lb = kx_load(k, p, B, v), lc = kx_load(k, p, C, v), le = kx_load(k, p, E, v);
    switch (fc->form) {
    case F_F: case F_B: case CAST: kx_alu(k, fc->op, odt, la, -1, -1); break;
    case B_B: kx_alu(k, fc->op, odt, lc, -1, -1); break;
    case FF_F: case FF_B: kx_alu_kind(k, fc->op, odt, la, lb, fc->kind); break;
    case BB_B: kx_alu(k, fc->op, odt, lc, le, -1); break;
    case SEL: kx_alu(k, fc->op, odt, lc, la, lb); break;
    }
  }
  kiln_llvm_jit *jit;
  kiln_rt_entry_fn entry = tp_compile(p, &jit);
  for (int t = 0; t < 2; t++) {
    memset(out, 0x55, sizeof out);
    tp_exec(entry, bufs, tp_threads[t]);
    for (int i = 0; i < N_FCASES; i++) {
      const fcase *fc = &fcases[i];
      for (int j = 0; j < N; j++) {
        double want, got;
        const float *of = (const float *)out[i];
        const uint8_t *ob = (const uint8_t *)out[i];
        switch (fc->form) {
        case F_F: want = (float)alu_ref(fc->op, 0, a[j], 0, false); got = of[j]; break;
        case FF_F: want = (float)alu_ref(fc->op, fc->kind, a[j], b[j], false); got = of[j]; break;
        case F_B: want = isnan(a[j]); got = ob[j]; break;
        case B_B: want = !c[j]; got = ob[j]; break;
        case FF_B: want = alu_ref(fc->op, 0, a[j], b[j], false); got = ob[j]; break;
        case BB_B:
          want = fc->op == KILN_OP_and ? (c[j] && e[j]) : fc->op == KILN_OP_or ? (c[j] || e[j]) : (c[j] != e[j]);
          got = ob[j];
          break;
        case SEL: want = c[j] ? a[j] : b[j]; got = of[j]; break;
        default: /* CAST */
          if (fc->out == KILN_I32) want = isnan(a[j]) ? 0 : trunc(a[j]), got = ((const int32_t *)out[i])[j];
          else if (fc->out == KILN_BOOL) want = a[j] != 0, got = ob[j];
          else want = a[j], got = out[i][j];
          break;
        }
        if (fc->form == F_B || fc->form == B_B || fc->form == FF_B || fc->form == BB_B || (fc->form == CAST && fc->out == KILN_BOOL))
          cr_expect(ob[j] <= 1, "%s: bool byte %d at %d", kiln_op_name(fc->op), ob[j], j);
        cr_expect(tp_close(got, want, 2e-6), "case %d %s(kind %d) threads %d at %d: a=%g b=%g got %.9g want %.9g", i,
                  kiln_op_name(fc->op), fc->kind, tp_threads[t], j, a[j], b[j], got, want);
      }
    }
  }
  kiln_llvm_jit_destroy(jit);
  kiln_ir_kprogram_destroy(p);
}

/* ------------------------------------------------------------------ integers */
typedef struct icase {
  kiln_op op;
  int kind;
  int arity;
  kiln_dtype out; /* KILN_DTYPE_COUNT: the operand dtype */
} icase;

static const icase icases[] = {
    {KILN_OP_neg, 0, 1, KILN_DTYPE_COUNT}, {KILN_OP_abs, 0, 1, KILN_DTYPE_COUNT},
    {KILN_OP_sign, 0, 1, KILN_DTYPE_COUNT}, {KILN_OP_recip, 0, 1, KILN_DTYPE_COUNT},
    {KILN_OP_floor, 0, 1, KILN_DTYPE_COUNT}, {KILN_OP_round, 0, 1, KILN_DTYPE_COUNT},
    {KILN_OP_add, 0, 2, KILN_DTYPE_COUNT}, {KILN_OP_sub, 0, 2, KILN_DTYPE_COUNT},
    {KILN_OP_mul, 0, 2, KILN_DTYPE_COUNT}, {KILN_OP_div, 0, 2, KILN_DTYPE_COUNT},
    {KILN_OP_mod, 0, 2, KILN_DTYPE_COUNT}, {KILN_OP_mod, 1, 2, KILN_DTYPE_COUNT},
    {KILN_OP_max, 0, 2, KILN_DTYPE_COUNT}, {KILN_OP_min, 0, 2, KILN_DTYPE_COUNT},
    {KILN_OP_eq, 0, 2, KILN_BOOL}, {KILN_OP_ne, 0, 2, KILN_BOOL}, {KILN_OP_lt, 0, 2, KILN_BOOL},
    {KILN_OP_le, 0, 2, KILN_BOOL}, {KILN_OP_gt, 0, 2, KILN_BOOL}, {KILN_OP_ge, 0, 2, KILN_BOOL},
    {KILN_OP_isnan, 0, 1, KILN_BOOL}, {KILN_OP_cast, 0, 1, KILN_F32}, {KILN_OP_cast, 0, 1, KILN_I8},
    {KILN_OP_cast, 0, 1, KILN_BOOL}, {KILN_OP_cast, 0, 1, KILN_I64},
    {KILN_OP_and, 0, 2, KILN_DTYPE_COUNT}, {KILN_OP_or, 0, 2, KILN_DTYPE_COUNT},
    {KILN_OP_xor, 0, 2, KILN_DTYPE_COUNT}, {KILN_OP_not, 0, 1, KILN_DTYPE_COUNT},
};
#define N_ICASES ((int)(sizeof icases / sizeof icases[0]))

static int64_t wrap(int64_t v, kiln_dtype t) {
  switch (t) {
  case KILN_I8: return (int8_t)v;
  case KILN_U8: return (uint8_t)v;
  case KILN_I16: return (int16_t)v;
  case KILN_I32: return (int32_t)v;
  default: return v;
  }
}

static int64_t ref_i(kiln_op op, int kind, int64_t a, int64_t b, kiln_dtype t) {
  bool u = t == KILN_U8;
  uint64_t ua = (uint64_t)a, ub = (uint64_t)b;
  switch (op) {
  case KILN_OP_neg: return wrap((int64_t)(0 - ua), t);
  case KILN_OP_abs: return wrap(a < 0 ? (int64_t)(0 - ua) : a, t);
  case KILN_OP_sign: return (a > 0) - (a < 0);
  case KILN_OP_recip: return ref_i(KILN_OP_div, 0, 1, a, t);
  case KILN_OP_floor: case KILN_OP_round: return a;
  case KILN_OP_add: return wrap((int64_t)(ua + ub), t);
  case KILN_OP_sub: return wrap((int64_t)(ua - ub), t);
  case KILN_OP_mul: return wrap((int64_t)(ua * ub), t);
  case KILN_OP_div:
    if (b == 0) return 0;
    if (b == -1 && !u) return wrap((int64_t)(0 - ua), t);
    return a / b;
  case KILN_OP_mod: {
    if (b == 0 || (b == -1 && !u)) return 0;
    int64_t r = a % b;
    if (kind == 0 && r != 0 && ((r < 0) != (b < 0))) r += b;
    return r;
  }
  case KILN_OP_max: return a > b ? a : b;
  case KILN_OP_min: return a < b ? a : b;
  case KILN_OP_eq: return a == b;
  case KILN_OP_ne: return a != b;
  case KILN_OP_lt: return a < b;
  case KILN_OP_le: return a <= b;
  case KILN_OP_gt: return a > b;
  case KILN_OP_ge: return a >= b;
  case KILN_OP_isnan: return 0;
  case KILN_OP_and: return wrap(a & b, t); /* bitwise on integers */
  case KILN_OP_or: return wrap(a | b, t);
  case KILN_OP_xor: return wrap(a ^ b, t);
  case KILN_OP_not: return wrap(~a, t);
  default: cr_assert_fail("no reference for %s", kiln_op_name(op)); return 0;
  }
}

static void put_i(kiln_dtype t, void *p, int j, int64_t v) {
  switch (t) {
  case KILN_I8: ((int8_t *)p)[j] = (int8_t)v; break;
  case KILN_U8: case KILN_BOOL: ((uint8_t *)p)[j] = (uint8_t)v; break;
  case KILN_I16: ((int16_t *)p)[j] = (int16_t)v; break;
  case KILN_I32: ((int32_t *)p)[j] = (int32_t)v; break;
  default: ((int64_t *)p)[j] = v; break;
  }
}

static int64_t get_i(kiln_dtype t, const void *p, int j) {
  switch (t) {
  case KILN_I8: return ((const int8_t *)p)[j];
  case KILN_U8: case KILN_BOOL: return ((const uint8_t *)p)[j];
  case KILN_I16: return ((const int16_t *)p)[j];
  case KILN_I32: return ((const int32_t *)p)[j];
  default: return ((const int64_t *)p)[j];
  }
}

static void int_ops(kiln_dtype t, const int64_t *av, const int64_t *bv) {
  kiln_kprogram *p = tp_new();
  int64_t d[1] = {N};
  static int64_t ain[N], bin[N], out[N_ICASES][N];
  for (int j = 0; j < N; j++) put_i(t, ain, j, av[j]), put_i(t, bin, j, bv[j]);
  int32_t A = tp_buffer(p, KILN_BUF_INPUT, t, 1, d, 0);
  int32_t B = tp_buffer(p, KILN_BUF_INPUT, t, 1, d, 1);
  void *bufs[2 + N_ICASES] = {ain, bin};
  for (int i = 0; i < N_ICASES; i++) {
    kiln_dtype odt = icases[i].out == KILN_DTYPE_COUNT ? t : icases[i].out;
    int32_t O = tp_buffer(p, KILN_BUF_OUTPUT, odt, 1, d, i);
    bufs[O] = out[i];
    kiln_kernel *k = tp_loop(p, O, 0, NULL);
    int32_t v = kx_var(k, 0);
    int32_t la = kx_load(k, p, A, v), lb = kx_load(k, p, B, v);
    kx_alu_kind(k, icases[i].op, odt, la, icases[i].arity == 2 ? lb : -1, icases[i].kind);
  }
  kiln_llvm_jit *jit;
  kiln_rt_entry_fn entry = tp_compile(p, &jit);
  for (int th = 0; th < 2; th++) {
    memset(out, 0x55, sizeof out);
    tp_exec(entry, bufs, tp_threads[th]);
    for (int i = 0; i < N_ICASES; i++) {
      const icase *ic = &icases[i];
      kiln_dtype odt = ic->out == KILN_DTYPE_COUNT ? t : ic->out;
      for (int j = 0; j < N; j++) {
        int64_t a = get_i(t, ain, j), b = get_i(t, bin, j);
        if (odt == KILN_F32) {
          float got = ((float *)out[i])[j];
          cr_expect_eq(got, (float)a, "%s cast f32 at %d: %g", kiln_dtype_name(t), j, got);
          continue;
        }
        int64_t want = ic->op == KILN_OP_cast ? (odt == KILN_BOOL ? a != 0 : wrap(a, odt)) : ref_i(ic->op, ic->kind, a, b, t);
        int64_t got = get_i(odt, out[i], j);
        cr_expect_eq(got, want, "%s %s(kind %d) -> %s at %d: a=%lld b=%lld got %lld want %lld", kiln_dtype_name(t),
                     kiln_op_name(ic->op), ic->kind, kiln_dtype_name(odt), j, (long long)a, (long long)b,
                     (long long)got, (long long)want);
      }
    }
  }
  kiln_llvm_jit_destroy(jit);
  kiln_ir_kprogram_destroy(p);
}

Test(llvm_alu, i32_ops_wrap_and_never_trap) {
  int64_t a[N] = {7, -7, 7, -7, 0, 5, INT32_MIN, 3, INT32_MAX, -1, 100, -100, 9, 1, 1, -1};
  int64_t b[N] = {2, 2, -2, -2, 3, 0, -1, 7, 1, -1, 7, 7, -4, 0, -1, 1};
  int_ops(KILN_I32, a, b);
}

Test(llvm_alu, i64_ops_wrap_and_never_trap) {
  int64_t a[N] = {7, -7, 7, -7, 0, 5, INT64_MIN, 3, INT64_MAX, -1, 1LL << 40, -(1LL << 40), 9, 1, 1, -1};
  int64_t b[N] = {2, 2, -2, -2, 3, 0, -1, 7, 1, -1, 7, 3, -4, 0, -1, 1};
  int_ops(KILN_I64, a, b);
}

Test(llvm_alu, u8_ops_are_unsigned) {
  int64_t a[N] = {7, 250, 255, 0, 0, 5, 128, 3, 200, 1, 100, 13, 9, 1, 255, 254};
  int64_t b[N] = {2, 10, 1, 3, 0, 0, 2, 7, 100, 255, 7, 3, 4, 0, 255, 255};
  int_ops(KILN_U8, a, b);
}

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
