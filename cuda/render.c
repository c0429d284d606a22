/* render.c - renders the LOOP kernels of a kernel program as CUDA C: one __global__
 * function per kernel (kiln_k<index>), one thread per output element over a grid-stride
 * loop, the kx DAG as C statements. Every elementwise op maps to CUDA C in one table
 * (alu_table below); REDUCE nodes become sequential loops inside the thread.
 *
 * Scoping: a value is declared in the innermost loop whose variables it uses. Before a
 * REDUCE opens its loop, every value of its body that uses only variables bound outside
 * is emitted first (hoisted), so loop-invariant loads and index math run once; values
 * computed inside a loop are forgotten when it closes.
 */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>

#include "cuda.h"

/* ------------------------------------------------------------------ types */
/* Type classes pick a column of the op table: f16/bf16 compute in float. */
typedef enum tclass { TC_F32, TC_F64, TC_INT, TC_BOOL, TC_COUNT } tclass;

static tclass tclass_of(kiln_dtype t) {
  switch (t) {
  case KILN_F32: case KILN_F16: case KILN_BF16: return TC_F32;
  case KILN_F64: return TC_F64;
  case KILN_BOOL: return TC_BOOL;
  default: return TC_INT;
  }
}

/* The C type values of a dtype are computed in. */
static const char *ctype(kiln_dtype t) {
  switch (t) {
  case KILN_F32: case KILN_F16: case KILN_BF16: return "float";
  case KILN_F64: return "double";
  case KILN_I8: return "signed char";
  case KILN_I16: return "short";
  case KILN_I32: return "int";
  case KILN_I64: return "long long";
  case KILN_U8: return "unsigned char";
  case KILN_BOOL: return "bool";
  default: return NULL;
  }
}

/* The C type a dtype is stored as in memory. */
static const char *stype(kiln_dtype t) {
  switch (t) {
  case KILN_F16: case KILN_BF16: return "unsigned short";
  case KILN_BOOL: return "unsigned char";
  default: return ctype(t);
  }
}

/* ------------------------------------------------------------------ the op table */
/* Templates: %0 %1 %2 are the operands (variable names or literals, so repeating one costs
 * nothing and has no side effects), %T the C compute type of the result, %% a percent
 * sign. NULL: the op is not defined on that class (ops.def OPERANDS says which classes an
 * op accepts; check_kx refuses the others, and test_backend_ops renders every op on every
 * dtype it accepts). Columns by the class of the operands (for select: of the two values).
 * Signed integer arithmetic goes through unsigned long long so that it wraps, as ops.def
 * says, instead of being undefined. */
typedef struct alu_rule {
  const char *t[TC_COUNT]; /* f32 (also f16/bf16), f64, integers, bool */
} alu_rule;

#define KILN_WRAP(e) "(%T)((unsigned long long)(%0) " e " (unsigned long long)(%1))"
static const alu_rule alu_table[KILN_OP_COUNT] = {
    [KILN_OP_neg] = {{"(-%0)", "(-%0)", "(%T)(0ull - (unsigned long long)(%0))", NULL}},
    [KILN_OP_abs] = {{"fabsf(%0)", "fabs(%0)",
                      "(%T)(%0 < 0 ? 0ull - (unsigned long long)(%0) : (unsigned long long)(%0))", NULL}},
    [KILN_OP_exp] = {{"expf(%0)", "exp(%0)", NULL, NULL}},
    [KILN_OP_log] = {{"logf(%0)", "log(%0)", NULL, NULL}},
    [KILN_OP_sqrt] = {{"sqrtf(%0)", "sqrt(%0)", NULL, NULL}},
    [KILN_OP_rsqrt] = {{"rsqrtf(%0)", "rsqrt(%0)", NULL, NULL}},
    [KILN_OP_recip] = {{"(1.0f / %0)", "(1.0 / %0)", NULL, NULL}},
    [KILN_OP_tanh] = {{"tanhf(%0)", "tanh(%0)", NULL, NULL}},
    [KILN_OP_sigmoid] = {{"kiln_sigmoidf(%0)", "kiln_sigmoid(%0)", NULL, NULL}},
    [KILN_OP_erf] = {{"erff(%0)", "erf(%0)", NULL, NULL}},
    [KILN_OP_sin] = {{"sinf(%0)", "sin(%0)", NULL, NULL}},
    [KILN_OP_cos] = {{"cosf(%0)", "cos(%0)", NULL, NULL}},
    [KILN_OP_floor] = {{"floorf(%0)", "floor(%0)", NULL, NULL}},
    [KILN_OP_ceil] = {{"ceilf(%0)", "ceil(%0)", NULL, NULL}},
    [KILN_OP_round] = {{"rintf(%0)", "rint(%0)", NULL, NULL}}, /* rint: half to even */
    [KILN_OP_sign] = {{"kiln_signf(%0)", "kiln_sign(%0)", "(%T)((%0 > 0) - (%0 < 0))", NULL}},
    [KILN_OP_not] = {{NULL, NULL, "(%T)(~%0)", "(!%0)"}},
    [KILN_OP_isnan] = {{"(%0 != %0)", "(%0 != %0)", NULL, NULL}},
    [KILN_OP_atan] = {{"atanf(%0)", "atan(%0)", NULL, NULL}},
    [KILN_OP_add] = {{"(%0 + %1)", "(%0 + %1)", KILN_WRAP("+"), NULL}},
    [KILN_OP_sub] = {{"(%0 - %1)", "(%0 - %1)", KILN_WRAP("-"), NULL}},
    [KILN_OP_mul] = {{"(%0 * %1)", "(%0 * %1)", KILN_WRAP("*"), NULL}},
    [KILN_OP_div] = {{"(%0 / %1)", "(%0 / %1)", "(%T)kiln_idiv(%0, %1)", NULL}},
    [KILN_OP_pow] = {{"powf(%0, %1)", "pow(%0, %1)", "(%T)kiln_ipow(%0, %1)", NULL}},
    /* bool max/min: for bool reductions */
    [KILN_OP_max] = {{"kiln_fmaxf(%0, %1)", "kiln_fmax(%0, %1)", "(%0 > %1 ? %0 : %1)", "(%0 || %1)"}},
    [KILN_OP_min] = {{"kiln_fminf(%0, %1)", "kiln_fmin(%0, %1)", "(%0 < %1 ? %0 : %1)", "(%0 && %1)"}},
    [KILN_OP_mod] = {{"kiln_pymodf(%0, %1)", "kiln_pymod(%0, %1)", "(%T)kiln_ipymod(%0, %1)", NULL}}, /* kind 0 */
    [KILN_OP_and] = {{NULL, NULL, "(%T)(%0 & %1)", "(%0 && %1)"}},
    [KILN_OP_or] = {{NULL, NULL, "(%T)(%0 | %1)", "(%0 || %1)"}},
    [KILN_OP_xor] = {{NULL, NULL, "(%T)(%0 ^ %1)", "(%0 != %1)"}},
    [KILN_OP_eq] = {{"(%0 == %1)", "(%0 == %1)", "(%0 == %1)", "(%0 == %1)"}},
    [KILN_OP_ne] = {{"(%0 != %1)", "(%0 != %1)", "(%0 != %1)", "(%0 != %1)"}},
    [KILN_OP_lt] = {{"(%0 < %1)", "(%0 < %1)", "(%0 < %1)", "(%0 < %1)"}},
    [KILN_OP_le] = {{"(%0 <= %1)", "(%0 <= %1)", "(%0 <= %1)", "(%0 <= %1)"}},
    [KILN_OP_gt] = {{"(%0 > %1)", "(%0 > %1)", "(%0 > %1)", "(%0 > %1)"}},
    [KILN_OP_ge] = {{"(%0 >= %1)", "(%0 >= %1)", "(%0 >= %1)", "(%0 >= %1)"}},
    [KILN_OP_select] = {{"(%0 ? %1 : %2)", "(%0 ? %1 : %2)", "(%0 ? %1 : %2)", "(%0 ? %1 : %2)"}},
    /* int->int and ->float: C conversion (wraps); float->int, ->bool and ->f16/bf16 are
     * finished in emit_alu (saturation, x != 0, rounding to the narrow type). */
    [KILN_OP_cast] = {{"((%T)(%0))", "((%T)(%0))", "((%T)(%0))", "((%T)(%0))"}},
};
#undef KILN_WRAP
/* mod kind 1: C fmod, the dividend's sign */
static const alu_rule alu_fmod = {{"fmodf(%0, %1)", "fmod(%0, %1)", "(%T)kiln_imod(%0, %1)", NULL}};

static const char *alu_template(kiln_op op, int kind, tclass c) {
  if ((unsigned)op >= KILN_OP_COUNT) return NULL;
  return (op == KILN_OP_mod && kind == 1 ? &alu_fmod : &alu_table[op])->t[c];
}

/* Expands a template into b. */
static void expand(kiln_strbuf *b, const char *tpl, const char *const *opnd, const char *T) {
  for (const char *p = tpl; *p; p++) {
    if (*p != '%') {
      kiln_strbuf_printf(b, "%c", *p);
      continue;
    }
    p++;
    if (*p >= '0' && *p <= '2') kiln_strbuf_puts(b, opnd[*p - '0']);
    else if (*p == 'T') kiln_strbuf_puts(b, T);
    else kiln_strbuf_printf(b, "%c", *p); /* "%%" */
  }
}

/* ------------------------------------------------------------------ the prelude */
/* Self-contained: NVRTC finds no system headers, and cuda_fp16.h is not assumed. */
static const char prelude[] =
    "/* generated by kiln: CUDA C for the LOOP kernels of one kernel program */\n"
    "__device__ __forceinline__ float kiln_h2f(unsigned short h) {\n"
    "  unsigned s = (unsigned)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;\n"
    "  if (e == 0) { float v = (float)m * 5.9604644775390625e-8f; return s ? -v : v; }\n"
    "  if (e == 31) return __uint_as_float(s | 0x7f800000u | (m << 13));\n"
    "  return __uint_as_float(s | ((e + 112u) << 23) | (m << 13));\n"
    "}\n"
    "__device__ __forceinline__ unsigned short kiln_f2h(float f) {\n"
    "  unsigned x = __float_as_uint(f), s = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;\n"
    "  if (ax >= 0x7f800000u) return (unsigned short)(s | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u));\n"
    "  if (ax >= 0x477ff000u) return (unsigned short)(s | 0x7c00u);\n"
    "  if (ax < 0x38800000u) return (unsigned short)(s | __float2uint_rn(__uint_as_float(ax) * 16777216.0f));\n"
    "  unsigned e = (ax >> 23) - 112u, m = ax & 0x7fffffu, h = (e << 10) | (m >> 13), r = m & 0x1fffu;\n"
    "  if (r > 0x1000u || (r == 0x1000u && (h & 1u))) h++;\n"
    "  return (unsigned short)(s | h);\n"
    "}\n"
    "__device__ __forceinline__ float kiln_bf2f(unsigned short h) { return __uint_as_float((unsigned)h << 16); }\n"
    "__device__ __forceinline__ unsigned short kiln_f2bf(float f) {\n"
    "  unsigned x = __float_as_uint(f);\n"
    "  if ((x & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((x >> 16) | 0x40u);\n"
    "  return (unsigned short)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);\n"
    "}\n"
    "__device__ __forceinline__ float kiln_rh(float x) { return kiln_h2f(kiln_f2h(x)); }\n"
    "__device__ __forceinline__ float kiln_rbf(float x) { return kiln_bf2f(kiln_f2bf(x)); }\n"
    /* max/min propagate NaN (fmaxf would drop it) */
    /* max/min: IEEE 754-2019 maximum/minimum, NaN propagates and -0 < +0 (ops.def) */
    "__device__ __forceinline__ float kiln_fmaxf(float a, float b) {\n"
    "  return (a != a || b != b) ? a + b : a == b ? ((__float_as_uint(a) >> 31) ? b : a) : fmaxf(a, b);\n"
    "}\n"
    "__device__ __forceinline__ float kiln_fminf(float a, float b) {\n"
    "  return (a != a || b != b) ? a + b : a == b ? ((__float_as_uint(a) >> 31) ? a : b) : fminf(a, b);\n"
    "}\n"
    "__device__ __forceinline__ double kiln_fmax(double a, double b) {\n"
    "  return (a != a || b != b) ? a + b : a == b ? (__double_as_longlong(a) < 0 ? b : a) : fmax(a, b);\n"
    "}\n"
    "__device__ __forceinline__ double kiln_fmin(double a, double b) {\n"
    "  return (a != a || b != b) ? a + b : a == b ? (__double_as_longlong(a) < 0 ? a : b) : fmin(a, b);\n"
    "}\n"
    /* sign: +0 for either zero, NaN stays */
    "__device__ __forceinline__ float kiln_signf(float x) {\n"
    "  return x > 0.0f ? 1.0f : x < 0.0f ? -1.0f : x == 0.0f ? 0.0f : x;\n"
    "}\n"
    "__device__ __forceinline__ double kiln_sign(double x) {\n"
    "  return x > 0.0 ? 1.0 : x < 0.0 ? -1.0 : x == 0.0 ? 0.0 : x;\n"
    "}\n"
    /* sigmoid as e/(1+e) below 0, e = exp(-|x|): no overflow, tiny results kept */
    "__device__ __forceinline__ float kiln_sigmoidf(float x) {\n"
    "  float e = expf(-fabsf(x)), s = 1.0f / (1.0f + e); return x < 0.0f ? e * s : s;\n"
    "}\n"
    "__device__ __forceinline__ double kiln_sigmoid(double x) {\n"
    "  double e = exp(-fabs(x)), s = 1.0 / (1.0 + e); return x < 0.0 ? e * s : s;\n"
    "}\n"
    /* Python-style mod: a nonzero result takes the divisor's sign, a zero one too */
    "__device__ __forceinline__ float kiln_pymodf(float a, float b) {\n"
    "  float r = fmodf(a, b); if (r != 0.0f && ((r < 0.0f) != (b < 0.0f))) r += b;\n"
    "  return r == 0.0f ? copysignf(r, b) : r;\n"
    "}\n"
    "__device__ __forceinline__ double kiln_pymod(double a, double b) {\n"
    "  double r = fmod(a, b); if (r != 0.0 && ((r < 0.0) != (b < 0.0))) r += b;\n"
    "  return r == 0.0 ? copysign(r, b) : r;\n"
    "}\n"
    /* integer division and remainder that never trap: x/0 and x%0 compute 0 (lowering's
     * CHECK reports them), min/-1 wraps, min%-1 is 0 */
    "__device__ __forceinline__ long long kiln_idiv(long long a, long long b) {\n"
    "  return b == 0 ? 0 : b == -1 ? (long long)(0ull - (unsigned long long)a) : a / b;\n"
    "}\n"
    "__device__ __forceinline__ long long kiln_imod(long long a, long long b) {\n"
    "  return b == 0 || b == -1 ? 0 : a % b;\n"
    "}\n"
    "__device__ __forceinline__ long long kiln_ipymod(long long a, long long b) {\n"
    "  long long r = kiln_imod(a, b); if (r != 0 && ((r < 0) != (b < 0))) r += b; return r;\n"
    "}\n"
    /* a^e wrapping; e < 0: 1 for a = 1, +-1 for a = -1, else 0 */
    "__device__ __forceinline__ long long kiln_ipow(long long a, long long e) {\n"
    "  if (e < 0) return a == 1 ? 1 : (a == -1 ? ((e & 1) ? -1 : 1) : 0);\n"
    "  unsigned long long r = 1, x = (unsigned long long)a;\n"
    "  while (e) { if (e & 1) r *= x; x *= x; e >>= 1; }\n"
    "  return (long long)r;\n"
    "}\n"
    /* float -> integer: truncate, saturate to [lo, hi], NaN -> 0 */
    "__device__ __forceinline__ long long kiln_f2i(double x, long long lo, long long hi) {\n"
    "  return x != x ? 0 : x <= (double)lo ? lo : x >= (double)hi ? hi : (long long)x;\n"
    "}\n\n";

/* ------------------------------------------------------------------ kernel rendering */
typedef struct render {
  const kiln_kprogram *p;
  const kiln_kernel *k;
  int32_t ki;
  const char *suffix;   /* appended to kiln_k<ki>: "" or a GEMM's "_pack" / "_epilogue" */
  kiln_strbuf *b;
  kiln_diag *d;
  uint64_t *mask;       /* loop variables each kx uses */
  int32_t *depth;       /* loop depth where a kx was declared, -1: not visible */
  uint8_t *mark;        /* scratch */
  char (*name)[64];     /* how each kx is referred to */
  bool failed;
  kiln_status status;
} render;

static void indent(render *r, int depth) {
  for (int i = 0; i < depth + 2; i++) kiln_strbuf_puts(r->b, "  ");
}

static bool fail(render *r, kiln_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool fail(render *r, kiln_status st, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  kiln_diag_set(r->d, st, "CUDA backend: kernel %d (%s): %s", r->ki, r->k->name ? r->k->name : "?",
                msg);
  r->failed = true;
  r->status = st;
  return false;
}

/* A literal of dtype t holding f (float dtypes) or i. */
static void literal(char *out, size_t n, kiln_dtype t, double f, int64_t i) {
  switch (tclass_of(t)) {
  case TC_F32: {
    float v = (float)f;
    /* a narrow constant is a value of its dtype, as the LLVM renderer's const_of makes it */
    if (t == KILN_F16) v = kiln_f16_to_f32(kiln_f32_to_f16(v));
    if (t == KILN_BF16) v = kiln_bf16_to_f32(kiln_f32_to_bf16(v));
    uint32_t u;
    memcpy(&u, &v, 4);
    if (isfinite(v)) snprintf(out, n, "(%af)", (double)v); /* hex: exact */
    else snprintf(out, n, "__uint_as_float(0x%08" PRIx32 "u)", u);
    break;
  }
  case TC_F64: {
    uint64_t u;
    memcpy(&u, &f, 8);
    if (isfinite(f)) snprintf(out, n, "(%a)", f);
    else snprintf(out, n, "__longlong_as_double(0x%016" PRIx64 "ll)", u);
    break;
  }
  case TC_BOOL: snprintf(out, n, "%s", i ? "true" : "false"); break;
  case TC_INT:
    if (i == INT64_MIN) snprintf(out, n, "((%s)(-9223372036854775807ll - 1))", ctype(t));
    else if (t == KILN_I64) snprintf(out, n, "(%" PRId64 "ll)", i);
    else snprintf(out, n, "((%s)%" PRId64 "ll)", ctype(t), i);
    break;
  default: snprintf(out, n, "0");
  }
}

static bool check_kx(render *r, int32_t j) {
  const kiln_kernel *k = r->k;
  const kiln_kx *x = &k->kx[j];
  if (!ctype(x->dtype)) return fail(r, KILN_ERR_UNSUPPORTED, "kx %d has an unknown dtype", j);
  int arity = 0;
  switch (x->kind) {
  case KILN_KX_CONST: break;
  case KILN_KX_VAR:
    if (x->var < 0 || x->var >= k->n_vars) return fail(r, KILN_ERR_INTERNAL, "kx %d: variable %d out of range", j, x->var);
    break;
  case KILN_KX_LOAD:
    arity = x->a[1] >= 0 ? 2 : 1;
    if (x->buf < 0 || x->buf >= r->p->n_buffers)
      return fail(r, KILN_ERR_INTERNAL, "kx %d: buffer %d out of range", j, x->buf);
    break;
  case KILN_KX_ALU: {
    if ((unsigned)x->op >= KILN_OP_COUNT || kiln_op_table[x->op].category != KILN_CAT_ELEMENTWISE)
      return fail(r, KILN_ERR_UNSUPPORTED, "kx %d: ALU op %d is not elementwise", j, (int)x->op);
    arity = kiln_op_table[x->op].arity;
    int32_t v = x->a[x->op == KILN_OP_select ? 1 : 0];
    if (v >= 0 && v < j && !kiln_op_accepts(x->op, k->kx[v].dtype))
      return fail(r, KILN_ERR_UNSUPPORTED, "kx %d: %s is not defined on %s (ops.def)", j, kiln_op_name(x->op),
                  kiln_dtype_name(k->kx[v].dtype));
    break;
  }
  case KILN_KX_REDUCE:
    arity = 1;
    if (x->var < k->out.rank || x->n_vars < 1 || x->var + x->n_vars > k->n_vars)
      return fail(r, KILN_ERR_INTERNAL, "kx %d: reduce variables [%d, %d) out of range", j, x->var,
                  x->var + x->n_vars);
    if (kiln_op_has(x->op, KILN_OPF_INDEX) && x->n_vars != 1)
      return fail(r, KILN_ERR_UNSUPPORTED, "kx %d: %s over %d variables", j, kiln_op_name(x->op),
                  x->n_vars);
    break;
  case KILN_KX_CHECK:
    arity = 2;
    break;
  default: return fail(r, KILN_ERR_UNSUPPORTED, "kx %d: unknown kind %d", j, (int)x->kind);
  }
  for (int o = 0; o < arity; o++)
    if (x->a[o] < 0 || x->a[o] >= j)
      return fail(r, KILN_ERR_INTERNAL, "kx %d: operand %d (%d) is not an earlier node", j, o, x->a[o]);
  return true;
}

static int kx_arity(const kiln_kx *x) {
  switch (x->kind) {
  case KILN_KX_LOAD: return x->a[1] >= 0 ? 2 : 1;
  case KILN_KX_ALU: return kiln_op_table[x->op].arity;
  case KILN_KX_REDUCE: return 1;
  case KILN_KX_CHECK: return 2;
  default: return 0;
  }
}

static bool emit_reduce(render *r, int32_t j, int depth, uint64_t bound);

/* The C bounds of integer dtype t, for a saturating float -> integer cast. */
static const char *int_limit(kiln_dtype t, bool max);

/* ALU kx x of operands opnd as a C expression. */
static bool emit_alu(render *r, const kiln_kx *x, const char *const *opnd) {
  /* the class of the operands: select's values are operands 1 and 2 */
  kiln_dtype in_dt = r->k->kx[x->a[x->op == KILN_OP_select ? 1 : 0]].dtype;
  const char *tpl = alu_template(x->op, x->kind_attr, tclass_of(in_dt));
  if (!tpl)
    return fail(r, KILN_ERR_INTERNAL, "op %s (kind %d) on %s has no rule in the op table", kiln_op_name(x->op),
                x->kind_attr, kiln_dtype_name(in_dt));
  const char *narrow = x->dtype == KILN_F16 ? "kiln_rh" : "kiln_rbf";
  if (x->op == KILN_OP_cast && x->dtype == KILN_BOOL) {
    kiln_strbuf_printf(r->b, "(%s != 0)", opnd[0]);
  } else if (x->op == KILN_OP_cast && (x->dtype == KILN_F16 || x->dtype == KILN_BF16)) {
    /* the value must become exactly representable in the narrow type */
    kiln_strbuf_printf(r->b, "%s((float)(%s))", narrow, opnd[0]);
  } else if (x->op == KILN_OP_cast && kiln_dtype_is_float(in_dt) && kiln_dtype_is_int(x->dtype)) {
    /* a C conversion out of range is undefined; ops.def says it saturates */
    kiln_strbuf_printf(r->b, "((%s)kiln_f2i((double)(%s), %s, %s))", ctype(x->dtype), opnd[0],
                       int_limit(x->dtype, false), int_limit(x->dtype, true));
  } else if (kiln_ir_kx_rounds_narrow(x)) { /* f16/bf16 in float: rounded as the graph rounds */
    kiln_strbuf_printf(r->b, "%s(", narrow);
    expand(r->b, tpl, opnd, ctype(x->dtype));
    kiln_strbuf_puts(r->b, ")");
  } else {
    expand(r->b, tpl, opnd, ctype(x->dtype));
  }
  return true;
}

/* Declares kx j (not a REDUCE) at the current scope. */
static bool emit_stmt(render *r, int32_t j, int depth, uint64_t bound) {
  const kiln_kx *x = &r->k->kx[j];
  if (r->mask[j] & ~bound)
    return fail(r, KILN_ERR_INTERNAL, "kx %d uses a loop variable outside its reduce", j);
  const char *opnd[3] = {"", "", ""};
  for (int o = 0; o < kx_arity(x); o++) opnd[o] = r->name[x->a[o]];
  snprintf(r->name[j], sizeof r->name[j], "x%d", j);
  indent(r, depth);
  if (x->kind == KILN_KX_CHECK) {
    /* the error word (runtime ABI): the first failing kernel of a run is kept */
    kiln_strbuf_printf(r->b, "if (!(%s)) atomicCAS((int *)bufs[%d], 0, %d);\n", opnd[0], r->p->n_buffers, r->ki + 1);
    indent(r, depth);
    kiln_strbuf_printf(r->b, "const %s x%d = %s;\n", ctype(x->dtype), j, opnd[1]);
    r->depth[j] = depth;
    return true;
  }
  kiln_strbuf_printf(r->b, "const %s x%d = ", ctype(x->dtype), j);
  if (x->kind == KILN_KX_LOAD) {
    const char *st = stype(x->dtype);
    char ld[160];
    switch (x->dtype) {
    case KILN_F16: snprintf(ld, sizeof ld, "kiln_h2f(((const %s*)bufs[%d])[%s])", st, x->buf, opnd[0]); break;
    case KILN_BF16: snprintf(ld, sizeof ld, "kiln_bf2f(((const %s*)bufs[%d])[%s])", st, x->buf, opnd[0]); break;
    case KILN_BOOL: snprintf(ld, sizeof ld, "(((const %s*)bufs[%d])[%s] != 0)", st, x->buf, opnd[0]); break;
    default: snprintf(ld, sizeof ld, "((const %s*)bufs[%d])[%s]", st, x->buf, opnd[0]);
    }
    if (x->a[1] >= 0) {
      char fill[64];
      literal(fill, sizeof fill, x->dtype, x->f, x->i);
      kiln_strbuf_printf(r->b, "(%s ? %s : %s)", opnd[1], ld, fill); /* no memory touched when false */
    } else {
      kiln_strbuf_puts(r->b, ld);
    }
  } else if (!emit_alu(r, x, opnd)) {
    return false;
  }
  kiln_strbuf_puts(r->b, ";\n");
  r->depth[j] = depth;
  return true;
}

/* Marks what must be declared to make kx t visible: not yet visible, not VAR/CONST.
 * into_reduce: also walk REDUCE bodies (for hoisting). Sweeps downward: operands are
 * earlier. */
static void mark_needed(render *r, int32_t t, bool into_reduce) {
  memset(r->mark, 0, (size_t)t + 1);
  r->mark[t] = 1;
  for (int32_t j = t; j >= 0; j--) {
    if (!r->mark[j]) continue;
    const kiln_kx *x = &r->k->kx[j];
    if (r->depth[j] >= 0 || x->kind == KILN_KX_VAR || x->kind == KILN_KX_CONST) {
      r->mark[j] = 0;
      continue;
    }
    if (x->kind == KILN_KX_REDUCE && !into_reduce) continue; /* emit_reduce does its body */
    for (int o = 0; o < kx_arity(x); o++) r->mark[x->a[o]] = 1;
  }
}

/* Declares, in ascending order, the marked kx in [0, t] whose variables are all bound.
 * Takes a private copy of the marks: emit_reduce reuses the scratch. */
static bool emit_marked(render *r, int32_t t, int depth, uint64_t bound, bool require_bound) {
  int32_t n = 0;
  for (int32_t j = 0; j <= t; j++) n += r->mark[j];
  if (!n) return true;
  int32_t *list = kiln_ir_malloc(r->p->alloc, sizeof(int32_t) * (size_t)n);
  if (!list) return fail(r, KILN_ERR_OUT_OF_MEMORY, "out of memory");
  n = 0;
  for (int32_t j = 0; j <= t; j++)
    if (r->mark[j] && (!require_bound || !(r->mask[j] & ~bound))) list[n++] = j;
  bool ok = true;
  for (int32_t i = 0; i < n && ok; i++) {
    int32_t j = list[i];
    if (r->depth[j] >= 0) continue;
    ok = r->k->kx[j].kind == KILN_KX_REDUCE ? emit_reduce(r, j, depth, bound)
                                            : emit_stmt(r, j, depth, bound);
  }
  kiln_ir_free(r->p->alloc, list);
  return ok;
}

/* Makes kx t visible at this depth. */
static bool emit_value(render *r, int32_t t, int depth, uint64_t bound) {
  if (r->depth[t] >= 0 || r->k->kx[t].kind == KILN_KX_VAR || r->k->kx[t].kind == KILN_KX_CONST)
    return true;
  mark_needed(r, t, false);
  return emit_marked(r, t, depth, bound, false);
}

static const char *int_limit(kiln_dtype t, bool max) {
  switch (t) {
  case KILN_I8: return max ? "127" : "(-128)";
  case KILN_I16: return max ? "32767" : "(-32768)";
  case KILN_I32: return max ? "2147483647" : "(-2147483647 - 1)";
  case KILN_I64: return max ? "9223372036854775807ll" : "(-9223372036854775807ll - 1)";
  case KILN_U8: return max ? "255" : "0";
  case KILN_BOOL: return max ? "true" : "false";
  default: return "0";
  }
}

/* The initial value of a reduction accumulating dtype t, as C; NULL: not supported. */
static const char *reduce_init(kiln_op op, kiln_dtype t) {
  tclass c = tclass_of(t);
  switch (op) {
  case KILN_OP_reduce_sum: return c == TC_BOOL ? NULL : "0";
  case KILN_OP_reduce_prod: return c == TC_BOOL ? NULL : "1";
  case KILN_OP_reduce_max:
    return c == TC_F32 ? "__uint_as_float(0xff800000u)"
         : c == TC_F64 ? "__longlong_as_double(0xfff0000000000000ll)" : int_limit(t, false);
  case KILN_OP_reduce_min:
    return c == TC_F32 ? "__uint_as_float(0x7f800000u)"
         : c == TC_F64 ? "__longlong_as_double(0x7ff0000000000000ll)" : int_limit(t, true);
  case KILN_OP_argmax: case KILN_OP_argmin: return "0";
  KILN_OPS_NOT_REDUCE(KILN_OP_CASE)
  case KILN_OP_COUNT: break;
  }
  return NULL;
}

/* After REDUCE j's loops: an f16/bf16 result, accumulated in float, rounded to its dtype
 * (kiln_ir_kx_rounds_narrow), as the graph's node is. */
static void round_reduce(render *r, int32_t j, int depth) {
  const kiln_kx *x = &r->k->kx[j];
  if (!kiln_ir_kx_rounds_narrow(x)) return;
  indent(r, depth);
  kiln_strbuf_printf(r->b, "x%d = %s(x%d);\n", j, x->dtype == KILN_F16 ? "kiln_rh" : "kiln_rbf", j);
}

/* A REDUCE: hoist what its body needs from outside, then loop and accumulate. */
static bool emit_reduce(render *r, int32_t j, int depth, uint64_t bound) {
  const kiln_kx *x = &r->k->kx[j];
  int32_t body = x->a[0];
  kiln_dtype bdt = r->k->kx[body].dtype;
  uint64_t own = 0;
  for (int v = x->var; v < x->var + x->n_vars; v++) own |= 1ull << v;
  if (r->mask[j] & ~bound)
    return fail(r, KILN_ERR_INTERNAL, "reduce kx %d uses a loop variable outside its scope", j);

  /* loop invariants of the body, declared before the loop */
  mark_needed(r, body, true);
  if (!emit_marked(r, body, depth, bound, true)) return false;

  bool arg = kiln_op_has(x->op, KILN_OPF_INDEX); /* argmax/argmin */
  kiln_dtype adt = arg ? bdt : x->dtype; /* the accumulated type */
  tclass c = tclass_of(adt);
  snprintf(r->name[j], sizeof r->name[j], "x%d", j);
  indent(r, depth);
  const char *init = reduce_init(x->op, adt);
  if (!init)
    return fail(r, KILN_ERR_UNSUPPORTED, "reduce %s on %s is not supported", kiln_op_name(x->op),
                kiln_dtype_name(adt));
  if (arg) {
    kiln_strbuf_printf(r->b, "long long x%d = 0; %s best%d = 0;\n", j, ctype(adt), j);
  } else {
    kiln_strbuf_printf(r->b, "%s x%d = (%s)%s;\n", ctype(adt), j, ctype(adt), init);
  }
  for (int v = x->var; v < x->var + x->n_vars; v++) {
    indent(r, depth + (v - x->var));
    kiln_strbuf_printf(r->b, "for (long long v%d = 0; v%d < %" PRId64 "ll; ++v%d) {\n", v, v, r->k->extent[v], v);
  }
  int inner = depth + x->n_vars;
  if (!emit_value(r, body, inner, bound | own)) return false;
  indent(r, inner);
  const char *b = r->name[body];
  if (arg) {
    /* ties: the first unless kind_attr=1; a NaN wins over numbers and ties with a NaN, so
     * the first NaN stays unless kind_attr=1 (ops.def; ONNX's reference flips the axis) */
    bool mx = x->op == KILN_OP_argmax, last = x->kind_attr == 1;
    const char *cmp = mx ? (last ? ">=" : ">") : (last ? "<=" : "<");
    kiln_strbuf_printf(r->b, "if (v%d == 0 || %s %s best%d", x->var, b, cmp, j);
    if ((c == TC_F32 || c == TC_F64) && last) kiln_strbuf_printf(r->b, " || %s != %s", b, b);
    else if (c == TC_F32 || c == TC_F64) kiln_strbuf_printf(r->b, " || (%s != %s && best%d == best%d)", b, b, j, j);
    kiln_strbuf_printf(r->b, ") { best%d = %s; x%d = v%d; }\n", j, b, j, x->var);
  } else {
    const char *tpl = alu_template(kiln_op_combine(x->op), -1, c);
    if (!tpl)
      return fail(r, KILN_ERR_UNSUPPORTED, "reduce %s on %s is not supported", kiln_op_name(x->op),
                  kiln_dtype_name(adt));
    const char *opnd[3] = {r->name[j], b, ""};
    kiln_strbuf_printf(r->b, "x%d = ", j);
    expand(r->b, tpl, opnd, ctype(adt));
    kiln_strbuf_puts(r->b, ";\n");
  }
  for (int v = x->var + x->n_vars - 1; v >= x->var; v--) {
    indent(r, depth + (v - x->var));
    kiln_strbuf_puts(r->b, "}\n");
  }
  round_reduce(r, j, depth);
  /* values declared inside the loop are out of scope now */
  for (int32_t i = 0; i < r->k->n_kx; i++)
    if (r->depth[i] > depth) r->depth[i] = -1;
  r->depth[j] = depth;
  return !r->failed;
}

/* ------------------------------------------------------------------ row-wise kernels */
/* A kernel whose REDUCEs depend only on the row (softmax, layer norm: out[i,j] =
 * f(x[i,j], sum_k g(x[i,k]), ...)) would recompute each reduction for every element of
 * the row. Such a kernel is rendered with one warp per output row (rows grid-strided over
 * the warps of the launch): the warp computes each row-invariant reduction together,
 * every lane a strided part of the loop, combined with shuffles so every lane holds the
 * result, then the lanes share out the row's elements (when the schedule says so:
 * kiln_schedule.warp_per_row). Needs blockDim.x a multiple of 32 (exec.c checks the
 * schedule's block size); reductions combine in a different order than
 * a sequential loop (floating-point rounding may differ). */

/* A reduction the warp can share: a combine of sum/prod/max/min on floats or integers. */
static bool coop_capable(const kiln_kx *x) {
  if (kiln_op_combine(x->op) == KILN_OP_COUNT) return false; /* argmax/argmin */
  tclass c = tclass_of(x->dtype);
  return c == TC_F32 || c == TC_F64 || c == TC_INT;
}

/* REDUCE j, its iterations strided over the 32 lanes, combined across the warp. Every
 * lane of the warp must get here together (the shuffles take the full mask). */
static bool emit_coop_reduce(render *r, int32_t j, int depth, uint64_t bound) {
  const kiln_kx *x = &r->k->kx[j];
  int32_t body = x->a[0];
  uint64_t own = 0;
  int64_t total = 1;
  for (int v = x->var; v < x->var + x->n_vars; v++) {
    own |= 1ull << v;
    total *= r->k->extent[v];
  }
  if (r->mask[j] & ~bound) return fail(r, KILN_ERR_INTERNAL, "reduce kx %d uses a loop variable outside its scope", j);
  mark_needed(r, body, true);
  if (!emit_marked(r, body, depth, bound, true)) return false;
  const char *T = ctype(x->dtype), *init = reduce_init(x->op, x->dtype);
  const char *tpl = alu_template(kiln_op_combine(x->op), -1, tclass_of(x->dtype));
  if (!init || !tpl)
    return fail(r, KILN_ERR_UNSUPPORTED, "reduce %s on %s is not supported", kiln_op_name(x->op),
                kiln_dtype_name(x->dtype));
  snprintf(r->name[j], sizeof r->name[j], "x%d", j);
  indent(r, depth);
  kiln_strbuf_printf(r->b, "%s x%d = (%s)%s;\n", T, j, T, init);
  indent(r, depth);
  kiln_strbuf_printf(r->b, "for (long long f%d = lane; f%d < %" PRId64 "ll; f%d += 32) {\n", j, j, total, j);
  /* the reduction's variables from the flat iteration number, row-major */
  int64_t stride = total;
  for (int v = x->var; v < x->var + x->n_vars; v++) {
    stride /= r->k->extent[v] > 0 ? r->k->extent[v] : 1;
    indent(r, depth + 1);
    kiln_strbuf_printf(r->b, "const long long v%d = (f%d / %" PRId64 "ll) %% %" PRId64 "ll;\n", v, j, stride,
                       r->k->extent[v]);
  }
  if (!emit_value(r, body, depth + 1, bound | own)) return false;
  char acc[16], other[16];
  snprintf(acc, sizeof acc, "x%d", j);
  snprintf(other, sizeof other, "t%d", j);
  const char *step[3] = {acc, r->name[body], ""};
  indent(r, depth + 1);
  kiln_strbuf_printf(r->b, "x%d = ", j);
  expand(r->b, tpl, step, T);
  kiln_strbuf_puts(r->b, ";\n");
  indent(r, depth);
  kiln_strbuf_puts(r->b, "}\n");
  const char *comb[3] = {acc, other, ""};
  indent(r, depth);
  kiln_strbuf_printf(r->b, "for (int o%d = 16; o%d > 0; o%d >>= 1) {\n", j, j, j);
  indent(r, depth + 1);
  kiln_strbuf_printf(r->b, "const %s t%d = (%s)__shfl_xor_sync(0xffffffffu, x%d, o%d);\n", T, j, T, j, j);
  indent(r, depth + 1);
  kiln_strbuf_printf(r->b, "x%d = ", j);
  expand(r->b, tpl, comb, T);
  kiln_strbuf_puts(r->b, ";\n");
  indent(r, depth);
  kiln_strbuf_puts(r->b, "}\n");
  round_reduce(r, j, depth);
  for (int32_t i = 0; i < r->k->n_kx; i++)
    if (r->depth[i] > depth) r->depth[i] = -1;
  r->depth[j] = depth;
  return !r->failed;
}

/* The body of a row-wise kernel (see above). */
static bool render_rows(render *r, uint64_t row_vars) {
  const kiln_kernel *k = r->k;
  kiln_strbuf *b = r->b;
  int32_t rank = k->out.rank;
  int64_t last = rank > 0 ? k->out.dims[rank - 1] : 1;
  kiln_strbuf_printf(b, "  const int lane = threadIdx.x & 31;\n"
                        "  const long long n_warps = ((long long)gridDim.x * blockDim.x) >> 5;\n"
                        "  for (long long row = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5; row < n / %" PRId64
                        "ll; row += n_warps) {\n",
                     last);
  if (rank >= 2) {
    kiln_strbuf_puts(b, "    long long rem = row;\n");
    for (int v = rank - 2; v >= 1; v--)
      kiln_strbuf_printf(b, "    const long long v%d = rem %% %" PRId64 "ll; rem /= %" PRId64 "ll;\n", v,
                         k->out.dims[v], k->out.dims[v]);
    kiln_strbuf_puts(b, "    const long long v0 = rem;\n");
  }
  /* the row-invariant reductions, shared by the warp, in node order (operands first) */
  mark_needed(r, k->root, true);
  int32_t n = 0;
  for (int32_t j = 0; j <= k->root; j++) n += r->mark[j] && k->kx[j].kind == KILN_KX_REDUCE;
  int32_t *list = kiln_ir_malloc(r->p->alloc, sizeof(int32_t) * (size_t)(n ? n : 1));
  if (!list) return fail(r, KILN_ERR_OUT_OF_MEMORY, "out of memory");
  n = 0;
  for (int32_t j = 0; j <= k->root; j++)
    if (r->mark[j] && k->kx[j].kind == KILN_KX_REDUCE && !(r->mask[j] & ~row_vars)) list[n++] = j;
  bool ok = true;
  for (int32_t i = 0; i < n && ok; i++)
    if (r->depth[list[i]] < 0)
      ok = coop_capable(&k->kx[list[i]]) ? emit_coop_reduce(r, list[i], 0, row_vars) : emit_reduce(r, list[i], 0, row_vars);
  kiln_ir_free(r->p->alloc, list);
  if (!ok) return false;
  /* the rest of the row's values, then the row's elements over the lanes */
  mark_needed(r, k->root, false);
  if (!emit_marked(r, k->root, 0, row_vars, true)) return false;
  uint64_t all = row_vars;
  if (rank >= 1) {
    kiln_strbuf_printf(b, "    for (long long v%d = lane; v%d < %" PRId64 "ll; v%d += 32) {\n", rank - 1, rank - 1, last,
                       rank - 1);
    all |= 1ull << (rank - 1);
  } else {
    kiln_strbuf_puts(b, "    if (lane == 0) {\n");
  }
  if (!emit_value(r, k->root, 1, all)) return false;
  const char *val = r->name[k->root], *st = stype(k->out_dtype);
  char at[64];
  if (rank >= 1) snprintf(at, sizeof at, "row * %" PRId64 "ll + v%d", last, rank - 1);
  else snprintf(at, sizeof at, "row");
  switch (k->out_dtype) {
  case KILN_F16: kiln_strbuf_printf(b, "      ((%s*)bufs[%d])[%s] = kiln_f2h((float)(%s));\n", st, k->out_buf, at, val); break;
  case KILN_BF16: kiln_strbuf_printf(b, "      ((%s*)bufs[%d])[%s] = kiln_f2bf((float)(%s));\n", st, k->out_buf, at, val); break;
  case KILN_BOOL:
    kiln_strbuf_printf(b, "      ((%s*)bufs[%d])[%s] = (unsigned char)((%s) != 0);\n", st, k->out_buf, at, val);
    break;
  default: kiln_strbuf_printf(b, "      ((%s*)bufs[%d])[%s] = (%s)(%s);\n", st, k->out_buf, at, st, val);
  }
  kiln_strbuf_puts(b, "    }\n  }\n}\n\n");
  return !r->failed;
}

static void safe_name(char *out, size_t n, const char *s) {
  size_t i = 0;
  for (; s && *s && i + 1 < n; s++) out[i++] = (char)((*s == '*' || *s == '/' || *s == '\n') ? '_' : *s);
  out[i] = 0;
}

/* Renders LOOP kernel k as __global__ function fn_name; ki is the program kernel it is
 * (or belongs to, for a GEMM's pack/epilogue sub-kernel): failed CHECKs report it. */
static bool render_kernel(render *r, const kiln_kernel *k, int32_t ki, const char *fn_name) {
  r->k = k;
  r->ki = ki;
  kiln_strbuf *b = r->b;
  if (k->n_vars > 64) return fail(r, KILN_ERR_UNSUPPORTED, "%d loop variables (at most 64)", k->n_vars);
  if (k->n_vars < k->out.rank || k->n_kx < 1 || k->root < 0 || k->root >= k->n_kx)
    return fail(r, KILN_ERR_INTERNAL, "malformed LOOP kernel (n_vars %d, rank %d, root %d of %d)",
                k->n_vars, k->out.rank, k->root, k->n_kx);
  if (k->out_buf < 0 || k->out_buf >= r->p->n_buffers)
    return fail(r, KILN_ERR_INTERNAL, "output buffer %d out of range", k->out_buf);
  if (!ctype(k->out_dtype)) return fail(r, KILN_ERR_UNSUPPORTED, "unknown output dtype");
  for (int32_t j = 0; j < k->n_kx; j++) {
    if (!check_kx(r, j)) return false;
    const kiln_kx *x = &k->kx[j];
    r->depth[j] = -1;
    r->mask[j] = 0;
    if (x->kind == KILN_KX_VAR) {
      r->mask[j] = 1ull << x->var;
      snprintf(r->name[j], sizeof r->name[j], "v%d", x->var);
    } else if (x->kind == KILN_KX_CONST) {
      literal(r->name[j], sizeof r->name[j], x->dtype, x->f, x->i);
    } else {
      snprintf(r->name[j], sizeof r->name[j], "x%d", j);
      for (int o = 0; o < kx_arity(x); o++) r->mask[j] |= r->mask[x->a[o]];
      if (x->kind == KILN_KX_REDUCE)
        for (int v = x->var; v < x->var + x->n_vars; v++) r->mask[j] &= ~(1ull << v);
    }
  }
  char nm[128];
  safe_name(nm, sizeof nm, k->name);
  kiln_strbuf_printf(b, "/* kernel %d%s: %s, output [", r->ki, r->suffix, nm);
  for (int i = 0; i < k->out.rank; i++) kiln_strbuf_printf(b, "%s%" PRId64, i ? "," : "", k->out.dims[i]);
  kiln_strbuf_printf(b, "] %s into buffer %d */\n", kiln_dtype_name(k->out_dtype), k->out_buf);
  kiln_strbuf_printf(b, "extern \"C\" __global__ void %s(void *const *bufs, long long n) {\n", fn_name);
  uint64_t row_vars = k->out.rank >= 2 ? (1ull << (k->out.rank - 1)) - 1 : 0;
  if (k->sched.warp_per_row) return render_rows(r, row_vars); /* the schedule's choice */
  kiln_strbuf_puts(b, "  for (long long flat = (long long)blockIdx.x * blockDim.x + threadIdx.x; flat < n;\n"
             "       flat += (long long)gridDim.x * blockDim.x) {\n");
  uint64_t bound = 0;
  if (k->out.rank > 0) {
    kiln_strbuf_puts(b, "    long long rem = flat;\n");
    for (int v = k->out.rank - 1; v >= 0; v--) {
      if (v > 0)
        kiln_strbuf_printf(b, "    const long long v%d = rem %% %" PRId64 "ll; rem /= %" PRId64 "ll;\n", v,
                  k->out.dims[v], k->out.dims[v]);
      else
        kiln_strbuf_puts(b, "    const long long v0 = rem;\n");
      bound |= 1ull << v;
    }
  }
  if (!emit_value(r, k->root, 0, bound)) return false;
  const char *val = r->name[k->root];
  const char *st = stype(k->out_dtype);
  switch (k->out_dtype) {
  case KILN_F16: kiln_strbuf_printf(b, "    ((%s*)bufs[%d])[flat] = kiln_f2h((float)(%s));\n", st, k->out_buf, val); break;
  case KILN_BF16: kiln_strbuf_printf(b, "    ((%s*)bufs[%d])[flat] = kiln_f2bf((float)(%s));\n", st, k->out_buf, val); break;
  case KILN_BOOL: kiln_strbuf_printf(b, "    ((%s*)bufs[%d])[flat] = (unsigned char)((%s) != 0);\n", st, k->out_buf, val); break;
  default: kiln_strbuf_printf(b, "    ((%s*)bufs[%d])[flat] = (%s)(%s);\n", st, k->out_buf, st, val);
  }
  kiln_strbuf_puts(b, "  }\n}\n\n");
  return !r->failed;
}

void kiln_cuda_target_desc(kiln_target_desc *d) { kiln_ir_target_desc_default(KILN_SCHED_SIMT, d); }

kiln_status kiln_cuda_render(const kiln_kprogram *p, char **src, kiln_diag *d) {
  *src = NULL;
  kiln_strbuf b = {.a = p->alloc};
  kiln_strbuf_puts(&b, prelude);
  /* scratch sized for the largest LOOP kernel, GEMM pack/epilogue sub-kernels included */
  int32_t max_kx = 1;
  for (int32_t i = 0; i < p->n_kernels; i++) {
    /* a GEMM's pack/epilogue sub-kernels are LOOP kernels too (rendered by name) */
    const kiln_kernel *ks[3] = {&p->kernels[i], p->kernels[i].pack, p->kernels[i].epilogue};
    for (int j = 0; j < 3; j++)
      if (ks[j] && ks[j]->kind == KILN_KERNEL_LOOP && ks[j]->n_kx > max_kx) max_kx = ks[j]->n_kx;
  }
  render r = {.p = p, .b = &b, .d = d};
  r.mask = kiln_ir_malloc(p->alloc, sizeof(uint64_t) * (size_t)max_kx);
  r.depth = kiln_ir_malloc(p->alloc, sizeof(int32_t) * (size_t)max_kx);
  r.mark = kiln_ir_malloc(p->alloc, (size_t)max_kx);
  r.name = kiln_ir_malloc(p->alloc, sizeof *r.name * (size_t)max_kx);
  kiln_status st = KILN_OK;
  if (!r.mask || !r.depth || !r.mark || !r.name) {
    st = kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "CUDA backend: out of memory rendering kernels");
  } else {
    for (int32_t i = 0; i < p->n_kernels && !r.failed; i++) {
      const kiln_kernel *k = &p->kernels[i];
      r.ki = i;
      r.suffix = "";
      if (k->kind == KILN_KERNEL_OPAQUE) continue; /* host side */
      if (k->kind == KILN_KERNEL_GEMM) {
        /* cuBLAS does the product; its fused sub-kernels (LOOP kernels) run on the GPU
         * around it as kiln_k<i>_pack / kiln_k<i>_epilogue */
        if (k->pack && k->gemm.pack_a) {
          r.k = k;
          fail(&r, KILN_ERR_UNSUPPORTED,
               "packs A (a channels-last convolution, conv_cl), which the CUDA backend does not run; the "
               "layout pass makes conv_cl for the CPU target only");
          break;
        }
        const kiln_kernel *subs[2] = {k->pack, k->epilogue};
        static const char *const sfx[2] = {"_pack", "_epilogue"};
        for (int j = 0; j < 2 && !r.failed; j++) {
          if (!subs[j]) continue;
          r.k = subs[j];
          r.suffix = sfx[j];
          if (subs[j]->kind != KILN_KERNEL_LOOP) {
            r.k = k;
            fail(&r, KILN_ERR_INTERNAL, "GEMM sub-kernel%s is not a LOOP kernel", sfx[j]);
          } else {
            char fn[48];
            snprintf(fn, sizeof fn, "kiln_k%d%s", i, sfx[j]);
            render_kernel(&r, subs[j], i, fn);
          }
        }
      } else if (k->kind != KILN_KERNEL_LOOP) {
        r.k = k;
        fail(&r, KILN_ERR_UNSUPPORTED, "unknown kernel kind %d", (int)k->kind);
      } else {
        char fn[32];
        snprintf(fn, sizeof fn, "kiln_k%d", i);
        render_kernel(&r, k, i, fn);
      }
    }
    if (r.failed) st = r.status;
  }
  if (st == KILN_OK && b.oom) st = kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "CUDA backend: out of memory rendering kernels");
  kiln_ir_free(p->alloc, r.mask);
  kiln_ir_free(p->alloc, r.depth);
  kiln_ir_free(p->alloc, r.mark);
  kiln_ir_free(p->alloc, r.name);
  if (st != KILN_OK) {
    kiln_ir_free(p->alloc, b.s);
    return st;
  }
  *src = b.s;
  return KILN_OK;
}
