/* render.c - the LLVM renderer: turns a kernel program into one LLVM module. Each LOOP
 * kernel becomes an internal function over a chunk of output rows (the runtime ABI in
 * runtime/rt.h); GEMM and OPAQUE kernels become calls into the runtime with their
 * descriptors embedded as constant bytes; an entry function runs every kernel in order,
 * and (when asked) a step function runs one kernel by its number.
 * Every scalar op is mapped to LLVM IR in one place, emit_alu.
 */
#include "llvm_impl.h"

#include <llvm-c/Analysis.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A chunk handed to one worker holds at least this many output elements (times the
 * reduction work of each), so a parallel chunk amortizes the pool's dispatch cost. */
#define KILN_LLVM_GRAIN_ELEMS 16384

/* A scheduling level: the code outside every loop (level 0), a row of the output (1),
 * one output element (2, in the column loop), or the body of a REDUCE's loops (3 and
 * up). A value is computed at the outermost open level whose variables it depends on,
 * so a REDUCE that depends only on the row runs once per row, not once per column. */
typedef struct level {
  uint64_t vars;           /* loop variables this level binds */
  int64_t serial;          /* tells apart successive openings of a level */
  /* The preheader of the loop that opened this level (level >= 1): code placed at the
   * level below goes here. Kept open (no terminator) until the loop closes; `land` is
   * where it then branches, the block the loop is entered from. */
  LLVMBasicBlockRef ph, land;
} level;

/* How a dtype computes: floats (f16/bf16 in f32, rounded to their dtype where a value is
 * computed: kiln_ir_kx_rounds_narrow), signed ints, unsigned ints (u8), bool (i1 in
 * registers, one byte in memory). */
typedef enum dclass { DC_FLOAT, DC_SINT, DC_UINT, DC_BOOL } dclass;

typedef struct render {
  LLVMContextRef ctx;
  LLVMModuleRef mod;
  LLVMBuilderRef b;
  const kiln_kprogram *p;
  kiln_diag *d;
  LLVMTypeRef t_void, t_i1, t_i8, t_i16, t_i32, t_i64, t_half, t_f32, t_f64, t_ptr;
  /* per LOOP kernel */
  const kiln_kernel *k;
  LLVMValueRef fn;
  LLVMBasicBlockRef entry_bb;
  LLVMValueRef *var;      /* current value of each loop variable (NULL outside its loop) */
  LLVMValueRef *memo;     /* value of each kx, valid while its level is open (below) */
  int32_t *memo_level;    /* the level it was computed at, */
  int64_t *memo_serial;   /* and that level's serial then */
  uint64_t *dep;          /* loop variables each kx depends on (NULL: no scheduling) */
  level *lv;              /* the open levels 0..top, innermost last */
  int32_t top, n_lv;
  int64_t serial;         /* last level serial handed out */
  LLVMValueRef *base;     /* base pointer of each buffer, loaded in the entry block */
  LLVMValueRef bad;       /* i1 alloca: some CHECK failed in this call (NULL: no CHECK) */
  int32_t *row_cached;    /* per kx: the REDUCE whose body computed it for the row, or -1 */
  LLVMValueRef *row_buf;  /* per REDUCE kx: its body's values for the row (a stack array) */
  uint8_t *div_mode;      /* per kx: how a divide is computed (div_modes); NULL: all divide */
  /* A second output stored beside the root, at the same element (sibling kernels run as
   * one: merge_siblings); extra_root < 0: none. */
  int32_t extra_root, extra_buf;
  kiln_dtype extra_dtype;
  bool avx512f, avx512vl; /* kiln_llvm_render_options */
} render;

/* ------------------------------------------------------------------ types */
static dclass dclass_of(kiln_dtype t) {
  if (kiln_dtype_is_float(t)) return DC_FLOAT;
  if (t == KILN_BOOL) return DC_BOOL;
  if (t == KILN_U8) return DC_UINT;
  return DC_SINT;
}

/* The register type a dtype is computed in. */
static LLVMTypeRef ctype(render *r, kiln_dtype t) {
  switch (t) {
  case KILN_F64: return r->t_f64;
  case KILN_F32: case KILN_F16: case KILN_BF16: return r->t_f32;
  case KILN_I8: case KILN_U8: return r->t_i8;
  case KILN_I16: return r->t_i16;
  case KILN_I32: return r->t_i32;
  case KILN_I64: return r->t_i64;
  case KILN_BOOL: return r->t_i1;
  default: return r->t_i64;
  }
}

/* The memory type of one element. bf16 is handled as i16 bits: GCC 12's libgcc has no
 * __truncsfbf2, so LLVM's bfloat conversions could leave an unresolvable libcall. */
static LLVMTypeRef mtype(render *r, kiln_dtype t) {
  switch (t) {
  case KILN_F16: return r->t_half;
  case KILN_BF16: return r->t_i16;
  case KILN_BOOL: return r->t_i8;
  default: return ctype(r, t);
  }
}

static LLVMValueRef ci64(render *r, int64_t v) { return LLVMConstInt(r->t_i64, (unsigned long long)v, 1); }
static LLVMValueRef cint(LLVMTypeRef t, int64_t v) { return LLVMConstInt(t, (unsigned long long)v, 1); }

/* ------------------------------------------------------------------ calls */
static LLVMValueRef intrinsic(render *r, const char *name, LLVMTypeRef *tys, unsigned n_tys,
                              LLVMValueRef *args, unsigned n_args) {
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  KILN_ASSERT(id != 0);
  LLVMValueRef fn = LLVMGetIntrinsicDeclaration(r->mod, id, tys, n_tys);
  LLVMTypeRef fty = LLVMIntrinsicGetType(r->ctx, id, tys, n_tys);
  return LLVMBuildCall2(r->b, fty, fn, args, n_args, "");
}

static LLVMValueRef intr1(render *r, const char *name, LLVMValueRef x) {
  LLVMTypeRef t = LLVMTypeOf(x);
  return intrinsic(r, name, &t, 1, &x, 1);
}

static LLVMValueRef intr2(render *r, const char *name, LLVMValueRef x, LLVMValueRef y) {
  LLVMTypeRef t = LLVMTypeOf(x);
  LLVMValueRef a[2] = {x, y};
  return intrinsic(r, name, &t, 1, a, 2);
}

static LLVMValueRef declare_fn(render *r, const char *name, LLVMTypeRef fty) {
  LLVMValueRef fn = LLVMGetNamedFunction(r->mod, name);
  return fn ? fn : LLVMAddFunction(r->mod, name, fty);
}

/* libm for what has no LLVM intrinsic (erf, tanh): "erff" for f32, "erf" for f64. */
static LLVMValueRef libm1(render *r, const char *f64name, LLVMValueRef x) {
  LLVMTypeRef t = LLVMTypeOf(x);
  char name[32];
  snprintf(name, sizeof name, "%s%s", f64name, t == r->t_f32 ? "f" : "");
  LLVMTypeRef fty = LLVMFunctionType(t, &t, 1, 0);
  return LLVMBuildCall2(r->b, fty, declare_fn(r, name, fty), &x, 1, "");
}

static void fn_attr(render *r, LLVMValueRef fn, const char *name) {
  unsigned kind = LLVMGetEnumAttributeKindForName(name, strlen(name));
  LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(r->ctx, kind, 0));
}

/* ------------------------------------------------------------------ conversions */
/* f32 -> bf16 bits, round to nearest even, NaN stays a quiet NaN (as kiln_f32_to_bf16). */
static LLVMValueRef f32_to_bf16_bits(render *r, LLVMValueRef v) {
  LLVMBuilderRef b = r->b;
  LLVMValueRef u = LLVMBuildBitCast(b, v, r->t_i32, "");
  LLVMValueRef lsb = LLVMBuildAnd(b, LLVMBuildLShr(b, u, cint(r->t_i32, 16), ""), cint(r->t_i32, 1), "");
  LLVMValueRef rnd = LLVMBuildAdd(b, LLVMBuildAdd(b, u, cint(r->t_i32, 0x7fff), ""), lsb, "");
  LLVMValueRef nan = LLVMBuildOr(b, u, cint(r->t_i32, 0x400000), "");
  LLVMValueRef isnan = LLVMBuildFCmp(b, LLVMRealUNO, v, v, "");
  LLVMValueRef w = LLVMBuildLShr(b, LLVMBuildSelect(b, isnan, nan, rnd, ""), cint(r->t_i32, 16), "");
  return LLVMBuildTrunc(b, w, r->t_i16, "");
}

static LLVMValueRef bf16_bits_to_f32(render *r, LLVMValueRef h) {
  LLVMValueRef w = LLVMBuildZExt(r->b, h, r->t_i32, "");
  w = LLVMBuildShl(r->b, w, cint(r->t_i32, 16), "");
  return LLVMBuildBitCast(r->b, w, r->t_f32, "");
}

/* An f32 register value rounded to the precision of a narrow float dtype. */
static LLVMValueRef round_narrow(render *r, LLVMValueRef f, kiln_dtype to) {
  if (to == KILN_F16)
    return LLVMBuildFPExt(r->b, LLVMBuildFPTrunc(r->b, f, r->t_half, ""), r->t_f32, "");
  if (to == KILN_BF16) return bf16_bits_to_f32(r, f32_to_bf16_bits(r, f));
  return f;
}

/* Graph semantics of cast: float->int truncates (saturating, NaN -> 0, so no poison);
 * ->bool is x != 0; bool->number is 0/1. */
static LLVMValueRef convert(render *r, LLVMValueRef v, kiln_dtype from, kiln_dtype to) {
  if (from == to) return v;
  LLVMBuilderRef b = r->b;
  dclass cf = dclass_of(from), ct = dclass_of(to);
  LLVMTypeRef tf = ctype(r, from), tt = ctype(r, to);
  if (ct == DC_FLOAT) {
    LLVMValueRef f;
    if (cf == DC_FLOAT) {
      f = tf == tt ? v : tt == r->t_f64 ? LLVMBuildFPExt(b, v, tt, "") : LLVMBuildFPTrunc(b, v, tt, "");
    } else if (cf == DC_SINT) {
      f = LLVMBuildSIToFP(b, v, tt, "");
    } else {
      f = LLVMBuildUIToFP(b, v, tt, "");
    }
    return round_narrow(r, f, to);
  }
  if (ct == DC_BOOL) {
    if (cf == DC_FLOAT) return LLVMBuildFCmp(b, LLVMRealUNE, v, LLVMConstReal(tf, 0.0), "");
    return LLVMBuildICmp(b, LLVMIntNE, v, LLVMConstInt(tf, 0, 0), "");
  }
  if (cf == DC_FLOAT) {
    LLVMTypeRef tys[2] = {r->t_i64, tf};
    LLVMValueRef w = intrinsic(r, "llvm.fptosi.sat", tys, 2, &v, 1);
    return tt == r->t_i64 ? w : LLVMBuildTrunc(b, w, tt, "");
  }
  unsigned wf = LLVMGetIntTypeWidth(tf), wt = LLVMGetIntTypeWidth(tt);
  if (wf == wt) return v; /* i8 <-> u8: same bits */
  if (wf > wt) return LLVMBuildTrunc(b, v, tt, "");
  return cf == DC_SINT ? LLVMBuildSExt(b, v, tt, "") : LLVMBuildZExt(b, v, tt, "");
}

/* Memory element -> register value of dtype t. */
static LLVMValueRef from_memory(render *r, LLVMValueRef m, kiln_dtype t) {
  switch (t) {
  case KILN_F16: return LLVMBuildFPExt(r->b, m, r->t_f32, "");
  case KILN_BF16: return bf16_bits_to_f32(r, m);
  case KILN_BOOL: return LLVMBuildICmp(r->b, LLVMIntNE, m, cint(r->t_i8, 0), "");
  default: return m;
  }
}

static LLVMValueRef to_memory(render *r, LLVMValueRef v, kiln_dtype t) {
  switch (t) {
  case KILN_F16: return LLVMBuildFPTrunc(r->b, v, r->t_half, "");
  case KILN_BF16: return f32_to_bf16_bits(r, v);
  case KILN_BOOL: return LLVMBuildZExt(r->b, v, r->t_i8, "");
  default: return v;
  }
}

static LLVMValueRef const_of(render *r, kiln_dtype t, double f, int64_t i) {
  switch (dclass_of(t)) {
  case DC_FLOAT:
    if (t == KILN_F16) f = kiln_f16_to_f32(kiln_f32_to_f16((float)f));
    if (t == KILN_BF16) f = kiln_bf16_to_f32(kiln_f32_to_bf16((float)f));
    return LLVMConstReal(ctype(r, t), t == KILN_F64 ? f : (double)(float)f);
  case DC_BOOL: return LLVMConstInt(r->t_i1, i != 0, 0);
  default: return cint(ctype(r, t), i);
  }
}

/* ------------------------------------------------------------------ f32 transcendentals */
/* exp, log, tanh, erf and sigmoid of f32 as straight-line IR: range reduction, a
 * polynomial, and selects for the special cases (inf, NaN, overflow, underflow, zero).
 * A libm call has no vector form, so a loop using one would stay scalar; these
 * vectorize. The coefficients are Kiln's own minimax fits (Lawson's algorithm over
 * Chebyshev nodes in double, rounded to f32); test_llvm_alu sweeps dense ranges and
 * bounds the error (a few ulp; erf about 1e-7 absolute). f64 keeps libm. */
static LLVMValueRef fk(render *r, double v) { return LLVMConstReal(r->t_f32, v); }
static LLVMValueRef ik(render *r, int64_t v) { return cint(r->t_i32, v); }

static LLVMValueRef fmadd(render *r, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) {
  LLVMTypeRef t = r->t_f32;
  LLVMValueRef v[3] = {a, b, c};
  return intrinsic(r, "llvm.fmuladd", &t, 1, v, 3);
}

/* c[0] + c[1] x + ... + c[n-1] x^(n-1) */
static LLVMValueRef horner(render *r, LLVMValueRef x, const float *c, int n) {
  LLVMValueRef p = fk(r, c[n - 1]);
  for (int i = n - 2; i >= 0; i--) p = fmadd(r, p, x, fk(r, c[i]));
  return p;
}

/* a / b where b is finite and nonzero by construction, inside an approximation that is
 * itself a few ulp off: a reciprocal estimate refined once (vrcp14ps and two FMAs on
 * AVX-512, within about an ulp) instead of a divide. */
static LLVMValueRef approx_div(render *r, LLVMValueRef a, LLVMValueRef bv) {
  LLVMValueRef q = LLVMBuildFDiv(r->b, a, bv, "");
  LLVMSetFastMathFlags(q, LLVMFastMathNoInfs | LLVMFastMathAllowReciprocal | LLVMFastMathAllowContract);
  return q;
}

/* (a pr b) ? t : f */
static LLVMValueRef fsel(render *r, LLVMRealPredicate pr, LLVMValueRef a, LLVMValueRef b, LLVMValueRef t,
                         LLVMValueRef f) {
  return LLVMBuildSelect(r->b, LLVMBuildFCmp(r->b, pr, a, b, ""), t, f, "");
}

static LLVMValueRef copysign_f32(render *r, LLVMValueRef mag, LLVMValueRef sgn) {
  return intr2(r, "llvm.copysign", mag, sgn);
}

/* exp(x) = 2^n exp(x - n ln2), |x - n ln2| <= ln2/2. 2^n is applied with vscalefps on
 * AVX-512 (scalef_f32), elsewhere as two factors so that results down in the subnormals
 * round once. Inputs are clamped to [-110, 89], beyond which the result is 0 or inf
 * anyway. */
/* exp(y) = 2^n p for finite y in [-110, 89]: p = exp(y - n ln2), *n_out = n (an integral
 * f32) and *ni_out = n as i32. */
static LLVMValueRef exp_core(render *r, LLVMValueRef xc, LLVMValueRef *n_out, LLVMValueRef *ni_out) {
  /* q(y) ~ (exp(y) - 1 - y) / y^2, degree 4, weighted by y^2 / exp(y): 3.1e-9 relative
   * error in double (Lawson-reweighted least squares on Chebyshev nodes) */
  static const float c[5] = {0.49999994f, 0.166665211f, 0.041668389f, 0.00836871006f, 0.00138146128f};
  LLVMBuilderRef b = r->b;
  /* n = round(x / ln2): adding 1.5 * 2^23 leaves n in the low mantissa bits */
  LLVMValueRef t = fmadd(r, xc, fk(r, 1.44269504088896341), fk(r, 12582912.0));
  LLVMValueRef n = LLVMBuildFSub(b, t, fk(r, 12582912.0), "");
  LLVMValueRef ni = LLVMBuildSub(b, LLVMBuildBitCast(b, t, r->t_i32, ""), ik(r, 0x4B400000), "");
  /* Cody-Waite: ln2 = 0.693359375 (n times it is exact) - 2.12194440e-4 */
  LLVMValueRef y = fmadd(r, n, fk(r, -0.693359375), xc);
  y = fmadd(r, n, fk(r, 2.12194440e-4), y);
  /* 1 + y (1 + y q(y)): Horner all the way, six multiply-adds (fmuladd, since llvm.fma
   * is a libm call without FMA); no y^2, which is subnormal (a microcode assist) for tiny y */
  LLVMValueRef p = fmadd(r, horner(r, y, c, 5), y, fk(r, 1.0));
  *n_out = n;
  *ni_out = ni;
  return fmadd(r, p, y, fk(r, 1.0));
}

/* 2^n as f32, for n in [-126, 127] */
static LLVMValueRef pow2i(render *r, LLVMValueRef n) {
  LLVMBuilderRef b = r->b;
  return LLVMBuildBitCast(b, LLVMBuildShl(b, LLVMBuildAdd(b, n, ik(r, 127), ""), ik(r, 23), ""), r->t_f32, "");
}

/* p 2^n (n integral) on AVX-512: one vscalefps, rounded once, subnormal and overflowing
 * results included, where the portable scaling (exp_f32) takes nine instructions; in
 * softmax's exp loop, which is compute-bound, that was a third of the work. The renderer
 * emits scalar code and LLVM's loop vectorizer widens it, which it cannot do for an x86
 * intrinsic; so the IR calls a pure scalar declaration (KILN_LLVM_SCALEF) naming its vector
 * forms through "vector-function-abi-variant", the vectorizer calls those, and after O3
 * kiln_llvm_optimize replaces every call with the intrinsic of its width. */
/* nounwind willreturn memory(none): a pure function, which LICM may hoist and the loop
 * vectorizer may widen */
static void pure_fn(render *r, LLVMValueRef fn) {
  fn_attr(r, fn, "nounwind");
  fn_attr(r, fn, "willreturn");
  LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex,
                          LLVMCreateEnumAttribute(r->ctx, LLVMGetEnumAttributeKindForName("memory", 6), 0));
}

static LLVMValueRef scalef_f32(render *r, LLVMValueRef p, LLVMValueRef n) {
  LLVMValueRef fn = LLVMGetNamedFunction(r->mod, KILN_LLVM_SCALEF);
  LLVMTypeRef args[2] = {r->t_f32, r->t_f32};
  LLVMTypeRef ft = LLVMFunctionType(r->t_f32, args, 2, 0);
  if (!fn) {
    fn = LLVMAddFunction(r->mod, KILN_LLVM_SCALEF, ft);
    static const struct { const char *name; unsigned lanes; } v[] = {
        {KILN_LLVM_SCALEF_V16, 16}, {KILN_LLVM_SCALEF_V8, 8}, {KILN_LLVM_SCALEF_V4, 4}};
    LLVMValueRef used[3];
    unsigned n_used = 0;
    for (int i = 0; i < 3; i++) {
      if (v[i].lanes < 16 && !r->avx512vl) continue;
      LLVMTypeRef vt = LLVMVectorType(r->t_f32, v[i].lanes), vargs[2] = {vt, vt};
      used[n_used] = LLVMAddFunction(r->mod, v[i].name, LLVMFunctionType(vt, vargs, 2, 0));
      pure_fn(r, used[n_used++]);
    }
    /* llvm.compiler.used keeps the unreferenced vector declarations alive until the
     * vectorizer runs (O3 deletes unused declarations first); lower_scalef removes it */
    LLVMValueRef g = LLVMAddGlobal(r->mod, LLVMArrayType2(r->t_ptr, n_used), "llvm.compiler.used");
    LLVMSetLinkage(g, LLVMAppendingLinkage);
    LLVMSetSection(g, "llvm.metadata");
    LLVMSetInitializer(g, LLVMConstArray2(r->t_ptr, used, n_used));
    pure_fn(r, fn);
  }
  const char *variants = r->avx512vl ? "_ZGV_LLVM_N16vv_" KILN_LLVM_SCALEF "(" KILN_LLVM_SCALEF_V16 "),"
                                       "_ZGV_LLVM_N8vv_" KILN_LLVM_SCALEF "(" KILN_LLVM_SCALEF_V8 "),"
                                       "_ZGV_LLVM_N4vv_" KILN_LLVM_SCALEF "(" KILN_LLVM_SCALEF_V4 ")"
                                     : "_ZGV_LLVM_N16vv_" KILN_LLVM_SCALEF "(" KILN_LLVM_SCALEF_V16 ")";
  const char *key = "vector-function-abi-variant";
  LLVMValueRef a[2] = {p, n};
  LLVMValueRef call = LLVMBuildCall2(r->b, ft, fn, a, 2, "");
  /* on the call: LLVM's vectorizer reads the mapping from the call site */
  LLVMAddCallSiteAttribute(call, LLVMAttributeFunctionIndex,
                           LLVMCreateStringAttribute(r->ctx, key, (unsigned)strlen(key), variants,
                                                     (unsigned)strlen(variants)));
  return call;
}

static LLVMValueRef exp_f32(render *r, LLVMValueRef x) {
  LLVMBuilderRef b = r->b;
  LLVMValueRef xc = fsel(r, LLVMRealOGT, x, fk(r, 89.0), fk(r, 89.0), x);
  xc = fsel(r, LLVMRealOLT, xc, fk(r, -110.0), fk(r, -110.0), xc);
  /* a NaN passes both clamps and makes p NaN, and p times any scale is NaN */
  LLVMValueRef n, ni, p = exp_core(r, xc, &n, &ni);
  if (r->avx512f) return scalef_f32(r, p, n);
  LLVMValueRef n1 = LLVMBuildAShr(b, ni, ik(r, 1), ""), n2 = LLVMBuildSub(b, ni, n1, "");
  return LLVMBuildFMul(b, LLVMBuildFMul(b, p, pow2i(r, n1), ""), pow2i(r, n2), "");
}

/* log(x) = e ln2 + log(1 + f) with x = 2^e (1 + f), 1 + f in [sqrt(1/2), sqrt(2)). */
static LLVMValueRef log_f32(render *r, LLVMValueRef x) {
  static const float c[9] = {0.333333135f,  -0.250000089f, 0.200021192f, -0.166679963f, 0.142195508f,
                             -0.124055915f, 0.118881747f,  -0.116756409f, 0.0674660131f};
  LLVMBuilderRef b = r->b;
  /* subnormals: scaled into the normals first */
  LLVMValueRef sub = LLVMBuildFCmp(b, LLVMRealOLT, x, fk(r, 1.17549435e-38), "");
  LLVMValueRef xs = LLVMBuildSelect(b, sub, LLVMBuildFMul(b, x, fk(r, 8388608.0), ""), x, "");
  LLVMValueRef bits = LLVMBuildBitCast(b, xs, r->t_i32, "");
  LLVMValueRef e = LLVMBuildSub(b, LLVMBuildLShr(b, bits, ik(r, 23), ""), ik(r, 126), "");
  e = LLVMBuildSub(b, e, LLVMBuildSelect(b, sub, ik(r, 23), ik(r, 0), ""), "");
  LLVMValueRef mbits = LLVMBuildOr(b, LLVMBuildAnd(b, bits, ik(r, 0x007fffff), ""), ik(r, 0x3f000000), "");
  LLVMValueRef m = LLVMBuildBitCast(b, mbits, r->t_f32, ""); /* [0.5, 1) */
  LLVMValueRef lo = LLVMBuildFCmp(b, LLVMRealOLT, m, fk(r, 0.707106781186547524), "");
  e = LLVMBuildSub(b, e, LLVMBuildZExt(b, lo, r->t_i32, ""), "");
  LLVMValueRef f = LLVMBuildFSub(b, LLVMBuildSelect(b, lo, LLVMBuildFAdd(b, m, m, ""), m, ""), fk(r, 1.0), "");
  LLVMValueRef z = LLVMBuildFMul(b, f, f, "");
  LLVMValueRef y = LLVMBuildFMul(b, LLVMBuildFMul(b, f, z, ""), horner(r, f, c, 9), "");
  LLVMValueRef ef = LLVMBuildSIToFP(b, e, r->t_f32, "");
  y = fmadd(r, ef, fk(r, -2.12194440e-4), y);
  y = fmadd(r, z, fk(r, -0.5), y);
  LLVMValueRef v = fmadd(r, ef, fk(r, 0.693359375), LLVMBuildFAdd(b, f, y, ""));
  v = fsel(r, LLVMRealOEQ, x, fk(r, INFINITY), x, v);
  v = fsel(r, LLVMRealOEQ, x, fk(r, 0.0), fk(r, -INFINITY), v);
  return fsel(r, LLVMRealULT, x, fk(r, 0.0), fk(r, NAN), v); /* negative or NaN */
}

/* tanh: an odd polynomial below 0.625, else 1 - 2 / (exp(2|x|) + 1) with x's sign. */
static LLVMValueRef tanh_f32(render *r, LLVMValueRef x) {
  static const float c[5] = {-0.333332807f, 0.133314416f, -0.0537397116f, 0.0206390787f, -0.00570497848f};
  LLVMBuilderRef b = r->b;
  LLVMValueRef ax = intr1(r, "llvm.fabs", x);
  LLVMValueRef z = fmadd(r, x, x, fk(r, 0x1p-100)); /* no subnormal from a tiny x */
  LLVMValueRef small = fmadd(r, x, LLVMBuildFMul(b, z, horner(r, z, c, 5), ""), x);
  /* |x| clamped to 10 (tanh is 1 in f32 from 9.01 on), so e + 1 is finite */
  LLVMValueRef a9 = fsel(r, LLVMRealOGT, ax, fk(r, 10.0), fk(r, 10.0), ax);
  LLVMValueRef e = exp_f32(r, LLVMBuildFAdd(b, a9, a9, ""));
  LLVMValueRef big = LLVMBuildFSub(b, fk(r, 1.0), approx_div(r, fk(r, 2.0), LLVMBuildFAdd(b, e, fk(r, 1.0), "")), "");
  /* the sign from x: tanh(-0) = -0 (the polynomial would give +0); NaN: big is NaN */
  return copysign_f32(r, fsel(r, LLVMRealOLT, ax, fk(r, 0.625), small, big), x);
}

/* erf(x) = x P(x^2) / Q(x^2) on x clamped to [-4, 4] (erf is 1 in f32 from 3.92 on,
 * which the last select makes exact), with P and Q of degree 5: Kiln's own fit (Loeb's
 * linearized least squares with Lawson reweighting, relative error 2.5e-8 in double).
 * In f32 with FMA it is within 4e-7 of erf (6 ulp near 1, 3 ulp near 0; test_llvm_alu
 * sweeps it); a target without FMA rounds each multiply-add twice (4.6e-7, simulated).
 * One branch for every lane and a reciprocal estimate for the divide (Q is in [1, 220]):
 * erf is the costly part of GELU, which the old two-branch form (a polynomial below
 * 0.875 and 1 - exp(-x^2) Q(x) above, both computed) kept at 45% of copy bandwidth.
 * x^2 + 2^-100 keeps a tiny x from making subnormals, which cost a microcode assist. */
static LLVMValueRef erf_f32(render *r, LLVMValueRef x) {
  static const float p[6] = {1.128379139e+00f, 1.935452900e-01f, 5.310174060e-02f,
                             3.883343235e-03f, 2.845642331e-04f, 1.986760202e-06f};
  static const float q[6] = {1.000000000e+00f, 5.048576031e-01f, 1.153500623e-01f,
                             1.520725181e-02f, 1.185567794e-03f, 3.741985480e-05f};
  LLVMBuilderRef b = r->b;
  LLVMValueRef xc = fsel(r, LLVMRealOGT, x, fk(r, 4.0), fk(r, 4.0), x); /* a NaN stays */
  xc = fsel(r, LLVMRealOLT, xc, fk(r, -4.0), fk(r, -4.0), xc);
  LLVMValueRef z = fmadd(r, xc, xc, fk(r, 0x1p-100));
  LLVMValueRef v = approx_div(r, LLVMBuildFMul(b, xc, horner(r, z, p, 6), ""), horner(r, z, q, 6));
  /* the sign from x: the estimate's correction can turn -0 into +0 */
  return copysign_f32(r, fsel(r, LLVMRealOGE, intr1(r, "llvm.fabs", x), fk(r, 3.92), fk(r, 1.0), v), x);
}

/* ------------------------------------------------------------------ the scalar op table */
/* Integer division/remainder that never traps: x/0 is 0 (a kernel has no way to report
 * it) and INT_MIN/-1 wraps. */
static LLVMValueRef int_divrem(render *r, bool div, bool is_signed, LLVMValueRef a, LLVMValueRef b) {
  LLVMBuilderRef bl = r->b;
  LLVMTypeRef t = LLVMTypeOf(a);
  LLVMValueRef zero = cint(t, 0), one = cint(t, 1);
  LLVMValueRef bz = LLVMBuildICmp(bl, LLVMIntEQ, b, zero, "");
  if (!is_signed) {
    LLVMValueRef s = LLVMBuildSelect(bl, bz, one, b, "");
    LLVMValueRef q = div ? LLVMBuildUDiv(bl, a, s, "") : LLVMBuildURem(bl, a, s, "");
    return LLVMBuildSelect(bl, bz, zero, q, "");
  }
  LLVMValueRef bm1 = LLVMBuildICmp(bl, LLVMIntEQ, b, cint(t, -1), "");
  LLVMValueRef s = LLVMBuildSelect(bl, LLVMBuildOr(bl, bz, bm1, ""), one, b, "");
  LLVMValueRef q = div ? LLVMBuildSDiv(bl, a, s, "") : LLVMBuildSRem(bl, a, s, "");
  q = LLVMBuildSelect(bl, bm1, div ? LLVMBuildSub(bl, zero, a, "") : zero, q, "");
  return LLVMBuildSelect(bl, bz, zero, q, "");
}

static LLVMValueRef alu(render *r, kiln_op op, int32_t kind, kiln_dtype odt, kiln_dtype rdt,
                        LLVMValueRef *v);

/* Math that only makes sense on floats, applied to integers: through f64 and back. */
static LLVMValueRef alu_via_f64(render *r, kiln_op op, int32_t kind, kiln_dtype odt, int n,
                                LLVMValueRef *v) {
  LLVMValueRef f[2];
  for (int i = 0; i < n; i++) f[i] = convert(r, v[i], odt, KILN_F64);
  return convert(r, alu(r, op, kind, KILN_F64, KILN_F64, f), KILN_F64, odt);
}

/* One switch maps every elementwise op to LLVM IR for float, signed, unsigned and bool
 * operands. odt is the operand dtype (of a[1] for select), rdt the result dtype. */
static LLVMValueRef alu(render *r, kiln_op op, int32_t kind, kiln_dtype odt, kiln_dtype rdt,
                        LLVMValueRef *v) {
  LLVMBuilderRef b = r->b;
  dclass c = dclass_of(odt);
  bool fl = c == DC_FLOAT, sg = c == DC_SINT, bo = c == DC_BOOL;
  LLVMTypeRef t = ctype(r, odt);
  LLVMValueRef zero = fl ? LLVMConstReal(t, 0.0) : LLVMConstInt(t, 0, 0);
  LLVMValueRef one = fl ? LLVMConstReal(t, 1.0) : LLVMConstInt(t, 1, 0);
  switch (op) {
  case KILN_OP_neg: return fl ? LLVMBuildFNeg(b, v[0], "") : bo ? v[0] : LLVMBuildNeg(b, v[0], "");
  case KILN_OP_abs:
    if (fl) return intr1(r, "llvm.fabs", v[0]);
    if (sg) return intr2(r, "llvm.abs", v[0], LLVMConstInt(r->t_i1, 0, 0));
    return v[0];
  case KILN_OP_exp:
    if (fl) return t == r->t_f32 ? exp_f32(r, v[0]) : intr1(r, "llvm.exp", v[0]);
    return alu_via_f64(r, op, kind, odt, 1, v);
  case KILN_OP_log:
    if (fl) return t == r->t_f32 ? log_f32(r, v[0]) : intr1(r, "llvm.log", v[0]);
    return alu_via_f64(r, op, kind, odt, 1, v);
  case KILN_OP_sqrt: return fl ? intr1(r, "llvm.sqrt", v[0]) : alu_via_f64(r, op, kind, odt, 1, v);
  case KILN_OP_rsqrt:
    return fl ? LLVMBuildFDiv(b, one, intr1(r, "llvm.sqrt", v[0]), "") : alu_via_f64(r, op, kind, odt, 1, v);
  case KILN_OP_recip: return fl ? LLVMBuildFDiv(b, one, v[0], "") : int_divrem(r, true, sg, one, v[0]);
  case KILN_OP_tanh:
    if (fl) return t == r->t_f32 ? tanh_f32(r, v[0]) : libm1(r, "tanh", v[0]);
    return alu_via_f64(r, op, kind, odt, 1, v);
  case KILN_OP_sigmoid: {
    /* e = exp(-|x|) never overflows: 1 / (1 + e) for x >= 0, e / (1 + e) below, which
     * keeps the tiny (subnormal) results of very negative x that 1 / (1 + exp(-x))
     * would flush to 0. */
    if (!fl) return alu_via_f64(r, op, kind, odt, 1, v);
    LLVMValueRef nx = LLVMBuildFNeg(b, intr1(r, "llvm.fabs", v[0]), "");
    LLVMValueRef e = t == r->t_f32 ? exp_f32(r, nx) : intr1(r, "llvm.exp", nx);
    LLVMValueRef s = t == r->t_f32 ? approx_div(r, one, LLVMBuildFAdd(b, one, e, "")) /* 1 + e in [1, 2] */
                                   : LLVMBuildFDiv(b, one, LLVMBuildFAdd(b, one, e, ""), "");
    return LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOLT, v[0], zero, ""), LLVMBuildFMul(b, e, s, ""), s, "");
  }
  case KILN_OP_erf:
    if (fl) return t == r->t_f32 ? erf_f32(r, v[0]) : libm1(r, "erf", v[0]);
    return alu_via_f64(r, op, kind, odt, 1, v);
  case KILN_OP_sin: return fl ? intr1(r, "llvm.sin", v[0]) : alu_via_f64(r, op, kind, odt, 1, v);
  case KILN_OP_cos: return fl ? intr1(r, "llvm.cos", v[0]) : alu_via_f64(r, op, kind, odt, 1, v);
  case KILN_OP_atan: return fl ? libm1(r, "atan", v[0]) : alu_via_f64(r, op, kind, odt, 1, v);
  case KILN_OP_floor: return fl ? intr1(r, "llvm.floor", v[0]) : v[0];
  case KILN_OP_ceil: return fl ? intr1(r, "llvm.ceil", v[0]) : v[0];
  case KILN_OP_round: return fl ? intr1(r, "llvm.roundeven", v[0]) : v[0];
  case KILN_OP_sign: {
    if (bo) return v[0];
    if (fl) { /* zero (either sign) and NaN are returned as they are */
      LLVMValueRef m1 = LLVMConstReal(t, -1.0);
      LLVMValueRef neg = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOLT, v[0], zero, ""), m1, v[0], "");
      return LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOGT, v[0], zero, ""), one, neg, "");
    }
    LLVMValueRef pos = LLVMBuildZExt(b, LLVMBuildICmp(b, sg ? LLVMIntSGT : LLVMIntUGT, v[0], zero, ""), t, "");
    if (!sg) return pos;
    LLVMValueRef neg = LLVMBuildZExt(b, LLVMBuildICmp(b, LLVMIntSLT, v[0], zero, ""), t, "");
    return LLVMBuildSub(b, pos, neg, "");
  }
  case KILN_OP_not: return bo ? LLVMBuildXor(b, v[0], one, "") : LLVMBuildNot(b, v[0], "");
  case KILN_OP_isnan:
    return fl ? LLVMBuildFCmp(b, LLVMRealUNO, v[0], v[0], "") : LLVMConstInt(r->t_i1, 0, 0);
  case KILN_OP_add: return fl ? LLVMBuildFAdd(b, v[0], v[1], "") : bo ? LLVMBuildOr(b, v[0], v[1], "") : LLVMBuildAdd(b, v[0], v[1], "");
  case KILN_OP_sub: return fl ? LLVMBuildFSub(b, v[0], v[1], "") : bo ? LLVMBuildXor(b, v[0], v[1], "") : LLVMBuildSub(b, v[0], v[1], "");
  case KILN_OP_mul: return fl ? LLVMBuildFMul(b, v[0], v[1], "") : bo ? LLVMBuildAnd(b, v[0], v[1], "") : LLVMBuildMul(b, v[0], v[1], "");
  case KILN_OP_div:
    if (fl) return LLVMBuildFDiv(b, v[0], v[1], "");
    if (bo) return LLVMBuildAnd(b, v[0], v[1], "");
    return int_divrem(r, true, sg, v[0], v[1]);
  case KILN_OP_pow: return fl ? intr2(r, "llvm.pow", v[0], v[1]) : alu_via_f64(r, op, kind, odt, 2, v);
  case KILN_OP_max:
    if (fl) return intr2(r, "llvm.maximum", v[0], v[1]); /* NaN propagates */
    if (bo) return LLVMBuildOr(b, v[0], v[1], "");
    return intr2(r, sg ? "llvm.smax" : "llvm.umax", v[0], v[1]);
  case KILN_OP_min:
    if (fl) return intr2(r, "llvm.minimum", v[0], v[1]);
    if (bo) return LLVMBuildAnd(b, v[0], v[1], "");
    return intr2(r, sg ? "llvm.smin" : "llvm.umin", v[0], v[1]);
  case KILN_OP_mod: {
    if (bo) return LLVMBuildAnd(b, v[0], LLVMBuildNot(b, v[1], ""), ""); /* x % 1 = 0, x % 0 = 0 */
    if (!fl && !sg) return int_divrem(r, false, false, v[0], v[1]);
    LLVMValueRef rem = fl ? LLVMBuildFRem(b, v[0], v[1], "") : int_divrem(r, false, true, v[0], v[1]);
    if (kind == 1) return rem; /* C fmod: sign of the dividend */
    /* Python: a nonzero remainder takes the divisor's sign */
    LLVMValueRef fix;
    if (fl) {
      LLVMValueRef rneg = LLVMBuildFCmp(b, LLVMRealOLT, rem, zero, "");
      LLVMValueRef bneg = LLVMBuildFCmp(b, LLVMRealOLT, v[1], zero, "");
      fix = LLVMBuildAnd(b, LLVMBuildFCmp(b, LLVMRealONE, rem, zero, ""), LLVMBuildXor(b, rneg, bneg, ""), "");
      return LLVMBuildSelect(b, fix, LLVMBuildFAdd(b, rem, v[1], ""), rem, "");
    }
    LLVMValueRef sx = LLVMBuildICmp(b, LLVMIntSLT, LLVMBuildXor(b, rem, v[1], ""), zero, "");
    fix = LLVMBuildAnd(b, LLVMBuildICmp(b, LLVMIntNE, rem, zero, ""), sx, "");
    return LLVMBuildSelect(b, fix, LLVMBuildAdd(b, rem, v[1], ""), rem, "");
  }
  case KILN_OP_and: return LLVMBuildAnd(b, v[0], v[1], "");
  case KILN_OP_or: return LLVMBuildOr(b, v[0], v[1], "");
  case KILN_OP_xor: return LLVMBuildXor(b, v[0], v[1], "");
  case KILN_OP_eq: return fl ? LLVMBuildFCmp(b, LLVMRealOEQ, v[0], v[1], "") : LLVMBuildICmp(b, LLVMIntEQ, v[0], v[1], "");
  case KILN_OP_ne: return fl ? LLVMBuildFCmp(b, LLVMRealUNE, v[0], v[1], "") : LLVMBuildICmp(b, LLVMIntNE, v[0], v[1], "");
  case KILN_OP_lt: return fl ? LLVMBuildFCmp(b, LLVMRealOLT, v[0], v[1], "") : LLVMBuildICmp(b, sg ? LLVMIntSLT : LLVMIntULT, v[0], v[1], "");
  case KILN_OP_le: return fl ? LLVMBuildFCmp(b, LLVMRealOLE, v[0], v[1], "") : LLVMBuildICmp(b, sg ? LLVMIntSLE : LLVMIntULE, v[0], v[1], "");
  case KILN_OP_gt: return fl ? LLVMBuildFCmp(b, LLVMRealOGT, v[0], v[1], "") : LLVMBuildICmp(b, sg ? LLVMIntSGT : LLVMIntUGT, v[0], v[1], "");
  case KILN_OP_ge: return fl ? LLVMBuildFCmp(b, LLVMRealOGE, v[0], v[1], "") : LLVMBuildICmp(b, sg ? LLVMIntSGE : LLVMIntUGE, v[0], v[1], "");
  case KILN_OP_select: return LLVMBuildSelect(b, v[0], v[1], v[2], "");
  case KILN_OP_cast: return convert(r, v[0], odt, rdt);
  default: return NULL; /* not elementwise: refused by check_kernel */
  }
}

/* ------------------------------------------------------------------ loops */
typedef struct loop {
  LLVMBasicBlockRef header, exit;
  LLVMValueRef iv;
} loop;

/* for (iv = lo; iv < hi; iv++): leaves the builder in the body. */
static LLVMValueRef loop_begin(render *r, loop *l, LLVMValueRef lo, LLVMValueRef hi) {
  LLVMBasicBlockRef pre = LLVMGetInsertBlock(r->b);
  l->header = LLVMAppendBasicBlockInContext(r->ctx, r->fn, "loop");
  LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(r->ctx, r->fn, "body");
  l->exit = LLVMAppendBasicBlockInContext(r->ctx, r->fn, "exit");
  LLVMBuildBr(r->b, l->header);
  LLVMPositionBuilderAtEnd(r->b, l->header);
  l->iv = LLVMBuildPhi(r->b, r->t_i64, "i");
  LLVMAddIncoming(l->iv, &lo, &pre, 1);
  LLVMBuildCondBr(r->b, LLVMBuildICmp(r->b, LLVMIntSLT, l->iv, hi, ""), body, l->exit);
  LLVMPositionBuilderAtEnd(r->b, body);
  return l->iv;
}

static void loop_end(render *r, loop *l) {
  LLVMBasicBlockRef latch = LLVMGetInsertBlock(r->b);
  LLVMValueRef next = LLVMBuildNSWAdd(r->b, l->iv, ci64(r, 1), "");
  LLVMBuildBr(r->b, l->header);
  LLVMAddIncoming(l->iv, &next, &latch, 1);
  LLVMPositionBuilderAtEnd(r->b, l->exit);
}

/* An alloca in the entry block, so mem2reg turns it into SSA. */
static LLVMValueRef entry_alloca(render *r, LLVMTypeRef t) {
  LLVMBuilderRef ab = LLVMCreateBuilderInContext(r->ctx);
  LLVMValueRef first = LLVMGetFirstInstruction(r->entry_bb);
  if (first) LLVMPositionBuilderBefore(ab, first);
  else LLVMPositionBuilderAtEnd(ab, r->entry_bb);
  LLVMValueRef a = LLVMBuildAlloca(ab, t, "acc");
  LLVMDisposeBuilder(ab);
  return a;
}

/* Opens level top+1, binding vars: the builder goes through the level's new preheader
 * (left open for code hoisted to the level below) to `land`, where the caller begins the
 * level's loops. False (diag set) when the level table is full, which the table's size
 * rules out. */
static bool level_open(render *r, uint64_t vars) {
  if (r->top + 1 >= r->n_lv) {
    kiln_diag_set(r->d, KILN_ERR_INTERNAL, "kernel %s: loops nested too deeply", r->k->name ? r->k->name : "?");
    return false;
  }
  level *l = &r->lv[++r->top];
  l->vars = vars;
  l->serial = ++r->serial;
  l->ph = LLVMAppendBasicBlockInContext(r->ctx, r->fn, "pre");
  l->land = LLVMAppendBasicBlockInContext(r->ctx, r->fn, "land");
  LLVMBuildBr(r->b, l->ph);
  LLVMPositionBuilderAtEnd(r->b, l->land);
  return true;
}

/* Closes the innermost level (its loops have ended): its preheader now enters the loop.
 * Values computed in it are forgotten: its serial is not handed out again. */
static void level_close(render *r) {
  level *l = &r->lv[r->top--];
  LLVMBasicBlockRef cur = LLVMGetInsertBlock(r->b);
  LLVMPositionBuilderAtEnd(r->b, l->ph);
  LLVMBuildBr(r->b, l->land);
  LLVMPositionBuilderAtEnd(r->b, cur);
}

/* ------------------------------------------------------------------ run-time errors */
/* Reports kernel ki through the error word bufs[n_buffers] (runtime ABI, rt.h): a relaxed
 * compare-and-swap from 0, so the first kernel to fail in a run is the one named (threads
 * of one kernel race only to store the same value). */
static void report_error(render *r, LLVMValueRef bufs, int32_t ki) {
  LLVMValueRef idx = ci64(r, r->p->n_buffers);
  LLVMValueRef slot = LLVMBuildInBoundsGEP2(r->b, r->t_ptr, bufs, &idx, 1, "");
  LLVMValueRef word = LLVMBuildLoad2(r->b, r->t_ptr, slot, "err");
  LLVMBuildAtomicCmpXchg(r->b, word, cint(r->t_i32, 0), cint(r->t_i32, ki + 1), LLVMAtomicOrderingMonotonic,
                         LLVMAtomicOrderingMonotonic, 0);
}

/* Branches on cond: where true, reports kernel ki; the builder continues after. */
static void report_if(render *r, LLVMValueRef fn, LLVMValueRef cond, LLVMValueRef bufs, int32_t ki) {
  LLVMBasicBlockRef fail = LLVMAppendBasicBlockInContext(r->ctx, fn, "report");
  LLVMBasicBlockRef cont = LLVMAppendBasicBlockInContext(r->ctx, fn, "reported");
  LLVMBuildCondBr(r->b, cond, fail, cont);
  LLVMPositionBuilderAtEnd(r->b, fail);
  report_error(r, bufs, ki);
  LLVMBuildBr(r->b, cont);
  LLVMPositionBuilderAtEnd(r->b, cont);
}

/* How a divide is computed: div_modes (with the kernels, below) says which. */
enum { DIV_PLAIN, DIV_CONST, DIV_ROW };

/* a / b for mode DIV_ROW (div_modes): (a * RN(1/(b s))) * s */
static LLVMValueRef div_by_row_recip(render *r, LLVMValueRef a, LLVMValueRef bv) {
  LLVMBuilderRef b = r->b;
  LLVMTypeRef t = LLVMTypeOf(bv);
  LLVMValueRef mag = intrinsic(r, "llvm.fabs", &t, 1, &bv, 1);
  double lo = t == r->t_f32 ? 0x1p-126 : 0x1p-1022, hi = t == r->t_f32 ? 0x1p126 : 0x1p1022;
  LLVMValueRef s = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOLT, mag, LLVMConstReal(t, lo), ""),
                                   LLVMConstReal(t, 0x1p64), LLVMConstReal(t, 1.0), "");
  s = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOGT, mag, LLVMConstReal(t, hi), ""), LLVMConstReal(t, 0x1p-64), s,
                      "");
  LLVMValueRef rcp = LLVMBuildFDiv(b, LLVMConstReal(t, 1.0), LLVMBuildFMul(b, bv, s, ""), "");
  return LLVMBuildFMul(b, LLVMBuildFMul(b, a, rcp, ""), s, "");
}

/* ------------------------------------------------------------------ expressions */
static LLVMValueRef eval(render *r, int32_t id);

static LLVMValueRef reduce_init(render *r, kiln_op op, kiln_dtype t) {
  bool is_max = op == KILN_OP_reduce_max || op == KILN_OP_argmax;
  switch (op) {
  case KILN_OP_reduce_sum: return const_of(r, t, 0.0, 0);
  case KILN_OP_reduce_prod: return const_of(r, t, 1.0, 1);
  default: break;
  }
  switch (dclass_of(t)) {
  case DC_FLOAT: return LLVMConstReal(ctype(r, t), is_max ? -INFINITY : INFINITY);
  case DC_BOOL: return LLVMConstInt(r->t_i1, is_max ? 0 : 1, 0);
  case DC_UINT: return LLVMConstInt(r->t_i8, is_max ? 0 : 255, 0);
  default: {
    unsigned w = LLVMGetIntTypeWidth(ctype(r, t));
    int64_t mx = (int64_t)((~0ull) >> (65 - w));
    return cint(ctype(r, t), is_max ? -mx - 1 : mx);
  }
  }
}

/* Row caches (find_row_caches) slide within ROW_CACHE_SLIDE bytes of stack so that each
 * row's cache sits about 2 KiB past the output row's address modulo 4 KiB: a store and a
 * later load whose addresses agree in their low 12 bits stall as if dependent (4K
 * aliasing), and the exp loop stores the cache while it loads the input row (input and
 * output buffers, page-aligned, agree in those bits). Where the stack happened to put
 * the cache, softmax [32768, 768] ran 4.99 to 5.70 ms depending on how deep the worker
 * thread's stack was at the call (padding it by 0, 512, 1024 or 2048 bytes). */
enum { ROW_CACHE_SLIDE = 4096 };

/* The element pointer (of type et) of row cache red at column v, for the current row. */
static LLVMValueRef row_cache_at(render *r, int32_t red, LLVMTypeRef et, LLVMValueRef v) {
  LLVMBuilderRef b = r->b;
  const kiln_kernel *k = r->k;
  int32_t rank = k->out.rank;
  /* the output row's first element: flat index of (row variables, 0), counting only the
   * variables the reduction depends on: they are bound wherever its cache is used (the
   * reduction may sit outside loops it does not depend on), and the store and the loads
   * of one row must agree on the slide */
  LLVMValueRef row = ci64(r, 0);
  for (int32_t d = 0; d + 1 < rank; d++) {
    bool used = d < 64 && (r->dep[red] & (1ull << d)) && r->var[d];
    row = LLVMBuildAdd(b, LLVMBuildMul(b, row, ci64(r, k->out.dims[d]), ""), used ? r->var[d] : ci64(r, 0), "");
  }
  row = LLVMBuildMul(b, row, ci64(r, k->out.dims[rank - 1] * (int64_t)kiln_dtype_size(k->out_dtype)), "");
  LLVMValueRef out = LLVMBuildAdd(b, LLVMBuildPtrToInt(b, r->base[k->out_buf], r->t_i64, ""), row, "");
  LLVMValueRef cache = LLVMBuildPtrToInt(b, r->row_buf[red], r->t_i64, "");
  LLVMValueRef delta = LLVMBuildSub(b, LLVMBuildAdd(b, out, ci64(r, 2048), ""), cache, "");
  delta = LLVMBuildAnd(b, delta, ci64(r, (ROW_CACHE_SLIDE - 1) & ~63), ""); /* 64-byte aligned */
  LLVMValueRef p = LLVMBuildInBoundsGEP2(b, r->t_i8, r->row_buf[red], &delta, 1, "");
  return LLVMBuildInBoundsGEP2(b, et, p, &v, 1, "");
}

static LLVMValueRef eval_reduce(render *r, const kiln_kx *x) {
  LLVMBuilderRef b = r->b;
  const kiln_kx *src = &r->k->kx[x->a[0]];
  bool arg = x->op == KILN_OP_argmax || x->op == KILN_OP_argmin;
  kiln_dtype vdt = arg ? src->dtype : x->dtype; /* dtype accumulated */
  LLVMTypeRef vt = ctype(r, vdt);
  /* An empty reduction is its initial value, and its body is never computed: the loops
   * below are entered only when they run at least once, which is what lets the body's
   * loop-invariant parts be computed before them. */
  uint64_t vars = 0;
  for (int32_t j = 0; j < x->n_vars; j++) {
    if (r->k->extent[x->var + j] <= 0) return arg ? ci64(r, 0) : reduce_init(r, x->op, vdt);
    if (x->var + j < 64) vars |= 1ull << (x->var + j);
  }
  LLVMValueRef acc = entry_alloca(r, vt), best_i = NULL, any_nan = NULL;
  LLVMBuildStore(b, reduce_init(r, x->op, vdt), acc);
  /* A float max/min as the largest number by a plain compare (nnan: vmaxps, and a cheap
   * reduction of the vector's lanes at the end) beside a flag for whether a NaN was seen,
   * which is then the result. llvm.maximum orders NaNs at every step, lane by lane in
   * the final reduction too (softmax's row max was about 400 instructions a row). */
  bool minmax_f = (x->op == KILN_OP_reduce_max || x->op == KILN_OP_reduce_min) && dclass_of(vdt) == DC_FLOAT;
  if (minmax_f) {
    any_nan = entry_alloca(r, r->t_i1);
    LLVMBuildStore(b, LLVMConstInt(r->t_i1, 0, 0), any_nan);
  }
  if (arg) {
    best_i = entry_alloca(r, r->t_i64);
    LLVMBuildStore(b, ci64(r, 0), best_i);
  }
  loop loops[KILN_MAX_RANK * 2];
  LLVMValueRef outer_var[KILN_MAX_RANK * 2]; /* another REDUCE's, when the two share variables */
  if (!level_open(r, vars)) return NULL;
  for (int32_t j = 0; j < x->n_vars; j++) {
    outer_var[j] = r->var[x->var + j];
    r->var[x->var + j] = loop_begin(r, &loops[j], ci64(r, 0), ci64(r, r->k->extent[x->var + j]));
  }
  LLVMValueRef val = eval(r, x->a[0]);
  if (!val) return NULL;
  if (r->row_buf && r->row_buf[x - r->k->kx]) /* kept for the column loop, which needs the same values */
    LLVMBuildStore(b, val, row_cache_at(r, (int32_t)(x - r->k->kx), LLVMTypeOf(val), r->var[x->var]));
  if (!arg) val = convert(r, val, src->dtype, vdt);
  LLVMValueRef cur = LLVMBuildLoad2(b, vt, acc, "");
  dclass c = dclass_of(vdt);
  bool fl = c == DC_FLOAT;
  if (arg) {
    /* better: nothing beats a NaN; a NaN beats any number; ties go to the last when kind=1 */
    bool mx = x->op == KILN_OP_argmax;
    LLVMValueRef better;
    if (fl) {
      better = LLVMBuildFCmp(b, mx ? LLVMRealOGT : LLVMRealOLT, val, cur, "");
      better = LLVMBuildOr(b, better, LLVMBuildFCmp(b, LLVMRealUNO, val, val, ""), "");
      if (x->kind_attr == 1) better = LLVMBuildOr(b, better, LLVMBuildFCmp(b, LLVMRealOEQ, val, cur, ""), "");
      better = LLVMBuildAnd(b, better, LLVMBuildFCmp(b, LLVMRealORD, cur, cur, ""), "");
    } else {
      bool sg = c == DC_SINT;
      LLVMIntPredicate pr = mx ? (sg ? LLVMIntSGT : LLVMIntUGT) : (sg ? LLVMIntSLT : LLVMIntULT);
      if (x->kind_attr == 1) pr = mx ? (sg ? LLVMIntSGE : LLVMIntUGE) : (sg ? LLVMIntSLE : LLVMIntULE);
      better = LLVMBuildICmp(b, pr, val, cur, "");
    }
    LLVMBuildStore(b, LLVMBuildSelect(b, better, val, cur, ""), acc);
    LLVMValueRef bi = LLVMBuildLoad2(b, r->t_i64, best_i, "");
    LLVMBuildStore(b, LLVMBuildSelect(b, better, r->var[x->var], bi, ""), best_i);
  } else if (minmax_f) {
    LLVMValueRef gt = LLVMBuildFCmp(b, x->op == KILN_OP_reduce_max ? LLVMRealOGT : LLVMRealOLT, val, cur, "");
    LLVMSetFastMathFlags(gt, LLVMFastMathNoNaNs | LLVMFastMathNoSignedZeros);
    LLVMValueRef nv = LLVMBuildSelect(b, gt, val, cur, "");
    LLVMSetFastMathFlags(nv, LLVMFastMathNoNaNs | LLVMFastMathNoSignedZeros);
    LLVMBuildStore(b, nv, acc);
    LLVMValueRef seen = LLVMBuildLoad2(b, r->t_i1, any_nan, "");
    LLVMBuildStore(b, LLVMBuildOr(b, seen, LLVMBuildFCmp(b, LLVMRealUNO, val, val, ""), ""), any_nan);
  } else {
    LLVMValueRef nv;
    kiln_op op = x->op == KILN_OP_reduce_sum ? KILN_OP_add
                 : x->op == KILN_OP_reduce_prod ? KILN_OP_mul
                 : x->op == KILN_OP_reduce_max ? KILN_OP_max : KILN_OP_min;
    LLVMValueRef ops[2] = {cur, val};
    nv = alu(r, op, 0, vdt, vdt, ops);
    /* Reassociation lets the vectorizer split float sums/products into lanes; the
     * result differs from a sequential sum only by rounding. */
    if (fl && (op == KILN_OP_add || op == KILN_OP_mul) && LLVMCanValueUseFastMathFlags(nv))
      LLVMSetFastMathFlags(nv, LLVMFastMathAllowReassoc);
    LLVMBuildStore(b, nv, acc);
  }
  for (int32_t j = x->n_vars - 1; j >= 0; j--) {
    loop_end(r, &loops[j]);
    r->var[x->var + j] = outer_var[j];
  }
  level_close(r);
  if (arg) return LLVMBuildLoad2(b, r->t_i64, best_i, "");
  LLVMValueRef res = LLVMBuildLoad2(b, vt, acc, "");
  if (minmax_f) /* the nnan result may be anything where a NaN was seen: NaN there */
    res = LLVMBuildSelect(b, LLVMBuildLoad2(b, r->t_i1, any_nan, ""), LLVMConstReal(vt, NAN), res, "");
  return res;
}

static LLVMValueRef eval_load(render *r, const kiln_kx *x) {
  LLVMBuilderRef b = r->b;
  kiln_dtype bdt = r->p->buffers[x->buf].dtype;
  LLVMTypeRef mt = mtype(r, bdt);
  LLVMValueRef off = eval(r, x->a[0]);
  if (!off) return NULL;
  if (x->a[1] < 0) {
    LLVMValueRef ptr = LLVMBuildInBoundsGEP2(b, mt, r->base[x->buf], &off, 1, "");
    return convert(r, from_memory(r, LLVMBuildLoad2(b, mt, ptr, ""), bdt), bdt, x->dtype);
  }
  /* Masked: the offset may be out of range where the mask is false, so the load sits in
   * a block only entered when it is true. */
  LLVMValueRef m = eval(r, x->a[1]);
  if (!m) return NULL;
  LLVMBasicBlockRef pre = LLVMGetInsertBlock(b);
  LLVMBasicBlockRef then = LLVMAppendBasicBlockInContext(r->ctx, r->fn, "mload");
  LLVMBasicBlockRef join = LLVMAppendBasicBlockInContext(r->ctx, r->fn, "mjoin");
  LLVMBuildCondBr(b, m, then, join);
  LLVMPositionBuilderAtEnd(b, then);
  /* not inbounds: the vectorizer turns this into a masked vector load, whose address
   * (that of its first lane) may lie outside the buffer for lanes that are off */
  LLVMValueRef ptr = LLVMBuildGEP2(b, mt, r->base[x->buf], &off, 1, "");
  LLVMValueRef v = convert(r, from_memory(r, LLVMBuildLoad2(b, mt, ptr, ""), bdt), bdt, x->dtype);
  LLVMBasicBlockRef then_end = LLVMGetInsertBlock(b);
  LLVMBuildBr(b, join);
  LLVMPositionBuilderAtEnd(b, join);
  LLVMValueRef phi = LLVMBuildPhi(b, ctype(r, x->dtype), "");
  LLVMValueRef vals[2] = {v, const_of(r, x->dtype, x->f, x->i)};
  LLVMBasicBlockRef from[2] = {then_end, pre};
  LLVMAddIncoming(phi, vals, from, 2);
  return phi;
}

/* The level kx id is computed at: the innermost open level that binds a variable it
 * depends on (0 when none); -1 when some variable it depends on is bound by no open
 * level. Without dependence sets, the current level (no scheduling). */
static int32_t place(render *r, int32_t id) {
  if (!r->dep) return r->top;
  uint64_t m = r->dep[id], bound = 0;
  int32_t at = -1;
  for (int32_t l = r->top; l >= 0; l--) {
    if (at < 0 && (r->lv[l].vars & m)) at = l;
    bound |= r->lv[l].vars;
  }
  if (m & ~bound) return -1;
  return at < 0 ? 0 : at;
}

/* kx id computed at the outer level `at`: in the preheader of the level above it, with
 * the levels from there on set aside (their values do not dominate that point), then
 * put back. */
static LLVMValueRef eval_hoisted(render *r, int32_t id, int32_t at) {
  int32_t top = r->top, n = top - at;
  level *saved = kiln_ir_malloc(r->p->alloc, sizeof(level) * (size_t)n);
  if (!saved) {
    kiln_diag_set(r->d, KILN_ERR_OUT_OF_MEMORY, "out of memory rendering kernel %s", r->k->name ? r->k->name : "?");
    return NULL;
  }
  memcpy(saved, &r->lv[at + 1], sizeof(level) * (size_t)n);
  LLVMBasicBlockRef cur = LLVMGetInsertBlock(r->b);
  LLVMPositionBuilderAtEnd(r->b, saved[0].ph);
  r->top = at;
  LLVMValueRef v = eval(r, id);
  saved[0].ph = LLVMGetInsertBlock(r->b); /* the hoisted code may have added blocks */
  memcpy(&r->lv[at + 1], saved, sizeof(level) * (size_t)n);
  r->top = top;
  LLVMPositionBuilderAtEnd(r->b, cur);
  kiln_ir_free(r->p->alloc, saved);
  return v;
}

/* The value of kx id at the insertion point: computed once at the level where it
 * belongs (place) and reused while that level is open. */
static LLVMValueRef eval(render *r, int32_t id) {
  if (r->memo[id] && r->memo_level[id] <= r->top && r->lv[r->memo_level[id]].serial == r->memo_serial[id])
    return r->memo[id];
  const kiln_kx *x = &r->k->kx[id];
  if (x->kind == KILN_KX_CONST) return const_of(r, x->dtype, x->f, x->i);
  int32_t at = place(r, id);
  if (at < 0) {
    kiln_diag_set(r->d, KILN_ERR_INTERNAL, "kernel %s: kx %d uses a variable outside its loop",
                  r->k->name ? r->k->name : "?", id);
    return NULL;
  }
  if (at < r->top) return eval_hoisted(r, id, at);
  LLVMValueRef v = NULL;
  if (r->row_cached && r->row_cached[id] >= 0) { /* computed by a row reduction already */
    int32_t red = r->row_cached[id];
    if (!eval(r, red)) return NULL; /* fills the row's values (before the column loop) */
    LLVMTypeRef et = ctype(r, x->dtype);
    v = LLVMBuildLoad2(r->b, et, row_cache_at(r, red, et, r->var[r->k->out.rank - 1]), "");
    r->memo[id] = v;
    r->memo_level[id] = r->top;
    r->memo_serial[id] = r->lv[r->top].serial;
    return v;
  }
  switch (x->kind) {
  case KILN_KX_CONST: v = const_of(r, x->dtype, x->f, x->i); break;
  case KILN_KX_VAR:
    v = r->var[x->var];
    if (!v) {
      kiln_diag_set(r->d, KILN_ERR_INTERNAL, "kernel %s: kx %d uses variable %d outside its loop",
                    r->k->name ? r->k->name : "?", id, x->var);
      return NULL;
    }
    break;
  case KILN_KX_LOAD: v = eval_load(r, x); break;
  case KILN_KX_ALU: {
    if (r->div_mode && r->div_mode[id] == DIV_CONST) {
      LLVMValueRef num = eval(r, x->a[0]);
      if (!num) return NULL;
      v = LLVMBuildFMul(r->b, num, fk(r, (double)(1.0f / (float)r->k->kx[x->a[1]].f)), "");
      break;
    }
    if (r->div_mode && r->div_mode[id] == DIV_ROW) {
      LLVMValueRef num = eval(r, x->a[0]), den = num ? eval(r, x->a[1]) : NULL;
      if (!den) return NULL;
      v = div_by_row_recip(r, num, den);
      break;
    }
    LLVMValueRef a[3] = {NULL, NULL, NULL};
    int n = kiln_op_table[x->op].arity;
    for (int i = 0; i < n; i++)
      if (!(a[i] = eval(r, x->a[i]))) return NULL;
    kiln_dtype odt = r->k->kx[x->a[x->op == KILN_OP_select ? 1 : 0]].dtype;
    v = alu(r, x->op, x->kind_attr, odt, x->dtype, a);
    break;
  }
  case KILN_KX_REDUCE: v = eval_reduce(r, x); break;
  case KILN_KX_CHECK: {
    /* No branch or store in the loop: a failure is OR-ed into a flag (a reduction the
     * vectorizer handles) that the kernel reports once after its loops. */
    LLVMValueRef c = eval(r, x->a[0]);
    if (!c || !(v = eval(r, x->a[1]))) return NULL;
    LLVMValueRef cur = LLVMBuildLoad2(r->b, r->t_i1, r->bad, "");
    LLVMBuildStore(r->b, LLVMBuildOr(r->b, cur, LLVMBuildNot(r->b, c, ""), ""), r->bad);
    break;
  }
  }
  if (!v) return NULL;
  /* f16/bf16 compute in f32, but each graph node's result is of its dtype: rounded where
   * the interpreter and an unfused kernel's store round it (kiln_ir_kx_rounds_narrow) */
  if (kiln_ir_kx_rounds_narrow(x)) v = round_narrow(r, v, x->dtype);
  r->memo[id] = v;
  r->memo_level[id] = r->top;
  r->memo_serial[id] = r->lv[r->top].serial;
  return v;
}

/* ------------------------------------------------------------------ checks */
static kiln_status check_kernel(render *r, const kiln_kernel *k, int32_t ki) {
  const char *kn = k->name ? k->name : "?";
  const kiln_kprogram *p = r->p;
  if (k->out_buf < 0 || k->out_buf >= p->n_buffers)
    return kiln_diag_set(r->d, KILN_ERR_INTERNAL, "kernel %d (%s): output buffer %d out of range", ki, kn, k->out_buf);
  if ((unsigned)k->out_dtype >= KILN_DTYPE_COUNT || k->out.rank < 0 || k->out.rank > KILN_MAX_RANK)
    return kiln_diag_set(r->d, KILN_ERR_INTERNAL, "kernel %d (%s): bad output dtype or rank", ki, kn);
  if (k->kind == KILN_KERNEL_GEMM) {
    if (k->out_dtype != KILN_F32 && k->out_dtype != KILN_F64)
      return kiln_diag_set(r->d, KILN_ERR_UNSUPPORTED, "kernel %s: GEMM in %s is not supported by the LLVM backend (f32/f64 only)",
                           kn, kiln_dtype_name(k->out_dtype));
    /* Fused sub-kernels are LOOP kernels rendered like any other. */
    const kiln_kernel *sub[2] = {k->pack, k->epilogue};
    for (int i = 0; i < 2; i++) {
      if (!sub[i]) continue;
      if (sub[i]->kind != KILN_KERNEL_LOOP)
        return kiln_diag_set(r->d, KILN_ERR_INTERNAL, "kernel %s: its %s is not a LOOP kernel", kn, i ? "epilogue" : "pack");
      if (check_kernel(r, sub[i], ki) != KILN_OK) return r->d->status;
    }
    return KILN_OK;
  }
  if (k->kind == KILN_KERNEL_OPAQUE) {
    if (k->n_in_bufs > KILN_RT_MAX_OPAQUE_IN)
      return kiln_diag_set(r->d, KILN_ERR_UNSUPPORTED, "kernel %s: opaque op %s has %d inputs (at most %d)", kn,
                           kiln_op_name(k->op), k->n_in_bufs, KILN_RT_MAX_OPAQUE_IN);
    for (int i = 0; i < k->n_in_bufs; i++)
      if (k->in_bufs[i] < 0 || k->in_bufs[i] >= p->n_buffers)
        return kiln_diag_set(r->d, KILN_ERR_INTERNAL, "kernel %s: input buffer %d out of range", kn, k->in_bufs[i]);
    return KILN_OK;
  }
  if (k->kind != KILN_KERNEL_LOOP)
    return kiln_diag_set(r->d, KILN_ERR_UNSUPPORTED, "kernel %s: unknown kernel kind %d", kn, (int)k->kind);
  if (k->n_vars < k->out.rank || k->root < 0 || k->root >= k->n_kx)
    return kiln_diag_set(r->d, KILN_ERR_INTERNAL, "kernel %s: bad variable count or root", kn);
  for (int32_t i = 0; i < k->n_kx; i++) {
    const kiln_kx *x = &k->kx[i];
    int n_ops = kiln_ir_kx_n_operands(x);
    switch (x->kind) {
    case KILN_KX_CONST: break;
    case KILN_KX_VAR:
      if (x->var < 0 || x->var >= k->n_vars)
        return kiln_diag_set(r->d, KILN_ERR_INTERNAL, "kernel %s: kx %d: variable %d out of range", kn, i, x->var);
      break;
    case KILN_KX_LOAD:
      if (x->buf < 0 || x->buf >= p->n_buffers)
        return kiln_diag_set(r->d, KILN_ERR_INTERNAL, "kernel %s: kx %d: buffer %d out of range", kn, i, x->buf);
      break;
    case KILN_KX_ALU:
      if ((unsigned)x->op >= KILN_OP_COUNT || kiln_op_table[x->op].category != KILN_CAT_ELEMENTWISE)
        return kiln_diag_set(r->d, KILN_ERR_UNSUPPORTED, "kernel %s: kx %d: op %s is not a scalar op the LLVM backend renders",
                             kn, i, (unsigned)x->op < KILN_OP_COUNT ? kiln_op_name(x->op) : "?");
      break;
    case KILN_KX_REDUCE: {
      bool arg = x->op == KILN_OP_argmax || x->op == KILN_OP_argmin;
      if (!arg && x->op != KILN_OP_reduce_sum && x->op != KILN_OP_reduce_max && x->op != KILN_OP_reduce_min &&
          x->op != KILN_OP_reduce_prod)
        return kiln_diag_set(r->d, KILN_ERR_UNSUPPORTED, "kernel %s: kx %d: %s is not a reduction", kn, i,
                             (unsigned)x->op < KILN_OP_COUNT ? kiln_op_name(x->op) : "?");
      if (x->var < k->out.rank || x->n_vars < 1 || x->n_vars > 2 * KILN_MAX_RANK || x->var + x->n_vars > k->n_vars ||
          (arg && x->n_vars != 1))
        return kiln_diag_set(r->d, KILN_ERR_INTERNAL, "kernel %s: kx %d: bad reduction variables [%d, %d)", kn, i, x->var,
                             x->var + x->n_vars);
      break;
    }
    case KILN_KX_CHECK: break;
    default: return kiln_diag_set(r->d, KILN_ERR_INTERNAL, "kernel %s: kx %d has an unknown kind", kn, i);
    }
    if ((unsigned)x->dtype >= KILN_DTYPE_COUNT)
      return kiln_diag_set(r->d, KILN_ERR_INTERNAL, "kernel %s: kx %d has a bad dtype", kn, i);
    for (int j = 0; j < n_ops; j++)
      if (x->a[j] < 0 || x->a[j] >= i)
        return kiln_diag_set(r->d, KILN_ERR_INTERNAL, "kernel %s: kx %d operand %d (%d) is not an earlier kx", kn, i, j, x->a[j]);
    /* Operand dtypes the op table relies on (LLVM would reject the IR less clearly). */
    const kiln_kx *kx = k->kx;
    bool bad = false;
    if (x->kind == KILN_KX_LOAD)
      bad = !kiln_dtype_is_int(kx[x->a[0]].dtype) || (n_ops == 2 && kx[x->a[1]].dtype != KILN_BOOL);
    else if (x->kind == KILN_KX_CHECK)
      bad = kx[x->a[0]].dtype != KILN_BOOL || x->dtype != kx[x->a[1]].dtype;
    else if (x->kind == KILN_KX_ALU && x->op == KILN_OP_select)
      bad = kx[x->a[0]].dtype != KILN_BOOL || kx[x->a[1]].dtype != kx[x->a[2]].dtype;
    else if (x->kind == KILN_KX_ALU && n_ops == 2)
      bad = kx[x->a[0]].dtype != kx[x->a[1]].dtype;
    if (bad)
      return kiln_diag_set(r->d, KILN_ERR_INTERNAL, "kernel %s: kx %d (%s): operand dtypes do not fit", kn, i,
                           x->kind == KILN_KX_LOAD ? "load" : x->kind == KILN_KX_CHECK ? "check" : kiln_op_name(x->op));
  }
  return KILN_OK;
}

/* ------------------------------------------------------------------ kernels */
/* The loop variables each kx depends on: its own (VAR), its operands', less a REDUCE's
 * own variables. NULL (no scheduling: everything computed where it is used) when the
 * kernel has more variables than a mask holds. */
static uint64_t *var_deps(const kiln_kernel *k, const kiln_allocator *al, bool *oom) {
  *oom = false;
  if (k->n_vars > 64) return NULL;
  uint64_t *dep = kiln_ir_malloc(al, sizeof(uint64_t) * ((size_t)k->n_kx + 1));
  if (!dep) {
    *oom = true;
    return NULL;
  }
  for (int32_t i = 0; i < k->n_kx; i++) {
    const kiln_kx *x = &k->kx[i];
    uint64_t m = x->kind == KILN_KX_VAR ? 1ull << x->var : 0;
    int n_ops = kiln_ir_kx_n_operands(x);
    for (int j = 0; j < n_ops; j++) m |= dep[x->a[j]];
    if (x->kind == KILN_KX_REDUCE)
      for (int32_t v = x->var; v < x->var + x->n_vars; v++) m &= ~(1ull << v);
    dep[i] = m;
  }
  return dep;
}

/* Whether kx a (over variable va) and kx b (over vb) compute the same values, va and vb
 * playing the same part: a structural comparison of the two DAGs. */
static bool same_over(const render *r, int32_t a, int32_t b, int32_t va, int32_t vb, int depth) {
  const kiln_kx *x = &r->k->kx[a], *y = &r->k->kx[b];
  uint64_t vbits = (va < 64 ? 1ull << va : 0) | (vb < 64 ? 1ull << vb : 0);
  if (a == b) return !(r->dep[a] & vbits);
  if (depth > 48 || x->kind != y->kind || x->dtype != y->dtype || x->op != y->op || x->kind_attr != y->kind_attr)
    return false;
  int n = 0;
  switch (x->kind) {
  case KILN_KX_VAR: return x->var == va && y->var == vb;
  case KILN_KX_CONST: return x->f == y->f && x->i == y->i;
  case KILN_KX_LOAD:
    if (x->buf != y->buf || (x->a[1] < 0) != (y->a[1] < 0) || (x->a[1] >= 0 && (x->f != y->f || x->i != y->i)))
      return false;
    n = x->a[1] >= 0 ? 2 : 1;
    break;
  case KILN_KX_ALU: n = kiln_op_table[x->op].arity; break;
  default: return false; /* a REDUCE or CHECK inside: not worth matching */
  }
  for (int i = 0; i < n; i++)
    if (!same_over(r, x->a[i], y->a[i], va, vb, depth + 1)) return false;
  return true;
}

static bool has_transcendental(const kiln_kernel *k, int32_t id, int depth) {
  const kiln_kx *x = &k->kx[id];
  if (depth > 48 || x->kind != KILN_KX_ALU) return false;
  if (x->op == KILN_OP_exp || x->op == KILN_OP_log || x->op == KILN_OP_tanh || x->op == KILN_OP_erf ||
      x->op == KILN_OP_sigmoid || x->op == KILN_OP_pow)
    return true;
  for (int i = 0; i < kiln_op_table[x->op].arity; i++)
    if (has_transcendental(k, x->a[i], depth + 1)) return true;
  return false;
}

/* Row cache: a reduction over the row's last dim whose body (exp(x[i,k] - max_i) in a
 * softmax) is also what the column loop computes (exp(x[i,j] - max_i)) keeps its body's
 * values in a stack array, and the column loop loads them instead of computing them
 * again. Only for costly bodies (a transcendental function) and rows of at most 16384
 * elements. Sets row_cached/row_buf; false when out of memory. */
static bool find_row_caches(render *r) {
  const kiln_kernel *k = r->k;
  const kiln_allocator *al = r->p->alloc;
  r->row_cached = NULL;
  r->row_buf = NULL;
  int32_t rank = k->out.rank, col = rank - 1;
  if (!r->dep || rank < 1 || col >= 64 || k->out.dims[col] > 16384 || k->out.dims[col] < 2) return true;
  for (int32_t red = 0; red < k->n_kx; red++) {
    const kiln_kx *x = &k->kx[red];
    if (x->kind != KILN_KX_REDUCE || x->n_vars != 1 || x->var >= 64 || k->extent[x->var] != k->out.dims[col] ||
        (r->dep[red] & (1ull << col)) || x->op == KILN_OP_argmax || x->op == KILN_OP_argmin ||
        !has_transcendental(k, x->a[0], 0))
      continue;
    for (int32_t e = 0; e < k->n_kx; e++) {
      if (e == x->a[0] || !(r->dep[e] & (1ull << col)) || (r->dep[e] & (1ull << x->var))) continue;
      if (r->row_cached && r->row_cached[e] >= 0) continue;
      if (!same_over(r, x->a[0], e, x->var, col, 0)) continue;
      if (!r->row_cached) {
        r->row_cached = kiln_ir_malloc(al, sizeof(int32_t) * (size_t)k->n_kx);
        r->row_buf = kiln_ir_malloc(al, sizeof(LLVMValueRef) * (size_t)k->n_kx);
        if (!r->row_cached || !r->row_buf) return false;
        for (int32_t i = 0; i < k->n_kx; i++) r->row_cached[i] = -1, r->row_buf[i] = NULL;
      }
      if (!r->row_buf[red]) { /* 8 bytes an element (the widest register type) and the slide */
        r->row_buf[red] = entry_alloca(r, LLVMArrayType2(r->t_i8, (uint64_t)k->out.dims[col] * 8 + ROW_CACHE_SLIDE));
        LLVMSetAlignment(r->row_buf[red], 64);
      }
      r->row_cached[e] = red;
    }
  }
  return true;
}

/* void fn_name(ptr bufs, i64 begin, i64 end): rows [begin, end) of LOOP kernel k, which
 * is program kernel ki or one of its sub-kernels (GEMM pack/epilogue); ki names the
 * kernel a failed CHECK reports. */
/* Software prefetch for streaming reads. A kernel whose work per element is long (GELU's
 * erf, softmax's exp) keeps few cache misses in flight, and the hardware prefetchers do
 * not make up for it. The base pointer of every input of at least PREFETCH_MIN_BUFFER
 * bytes is marked (KILN_LLVM_MD_PREFETCH); after O3, each vector load through it in the
 * first block that reads it is followed by a prefetch KILN_LLVM_PREFETCH_AHEAD bytes
 * further on (target.c add_prefetches), one per line loaded, spread over the loop.
 * Measured on bias+GELU [32768, 768], 2 threads, streaming stores: no prefetch 19.1 ms, a
 * burst of the next row's lines at each row start 10.0 ms, one prefetch after each vector
 * load 7.1 ms. */
enum { PREFETCH_MIN_BUFFER = 4 << 20, CACHE_LINE = 64 };

/* A divide a / b is computed as (a * RN(1/b)), a multiply, where that is both worth it
 * and harmless: a divide costs a multiply's throughput ten times over (vdivps on 512 bits,
 * about 10 cycles a vector here), and the product is within about 1.5 ulp of the quotient.
 *  - DIV_CONST: b is a normal f32 constant whose reciprocal is normal (bias+GELU, whose
 *    x / sqrt(2) feeds erf: 8.2 -> 6.3 ms).
 *  - DIV_ROW: b is not constant, but the divide runs in a loop b does not depend on
 *    (softmax's exp / sum, layer norm's (x - mean) / sqrt(var + eps)): 1/b is computed
 *    once outside that loop (LICM hoists it) and each element pays a multiply. So that
 *    1/b is normal and finite for every b, a b whose reciprocal is not (a subnormal or
 *    zero b, or |b| > 2^126 in f32) is first scaled by a power of two s (2^64 or 2^-64;
 *    else s = 1) and the product by s again: a / b = (a * RN(1/(b s))) * s, two
 *    multiplies, the second exact when s = 1. a * RN(1/(b s)) then neither loses bits to
 *    the subnormals where the quotient is normal nor overflows where it is finite.
 * Only for f32 and f64 (a narrow dtype's result must round as the interpreter's does),
 * and only where every reader is well conditioned: the result is stored, or read by an
 * add, sub, mul, neg, abs, max, min, select (as a value), a cast to a float, a sum/max/min
 * reduction, or erf/tanh/sigmoid (|f'(y) y| <= 0.49). Not where it feeds exp, log, pow
 * or a periodic function, whose error grows with the input, nor a comparison, rounding
 * or cast to an integer, where an ulp can change the answer.
 * NULL (every divide stays a divide) when out of memory. */
static bool well_conditioned_reader(const kiln_kx *x, int32_t operand) {
  if (x->kind == KILN_KX_REDUCE)
    return x->op == KILN_OP_reduce_sum || x->op == KILN_OP_reduce_max || x->op == KILN_OP_reduce_min;
  if (x->kind != KILN_KX_ALU) return false;
  switch (x->op) {
  case KILN_OP_add: case KILN_OP_sub: case KILN_OP_mul: case KILN_OP_neg: case KILN_OP_abs:
  case KILN_OP_max: case KILN_OP_min: case KILN_OP_erf: case KILN_OP_tanh: case KILN_OP_sigmoid: return true;
  case KILN_OP_select: return operand > 0;
  case KILN_OP_cast: return kiln_dtype_is_float(x->dtype);
  default: return false;
  }
}

static uint8_t *div_modes(const render *r, const kiln_kernel *k, const kiln_allocator *al) {
  uint8_t *mode = kiln_ir_malloc(al, (size_t)k->n_kx + 1);
  if (!mode) return NULL;
  for (int32_t i = 0; i < k->n_kx; i++) {
    const kiln_kx *x = &k->kx[i];
    mode[i] = DIV_PLAIN;
    if (x->kind != KILN_KX_ALU || x->op != KILN_OP_div || (x->dtype != KILN_F32 && x->dtype != KILN_F64)) continue;
    const kiln_kx *c = &k->kx[x->a[1]];
    if (c->kind == KILN_KX_CONST) {
      float cf = (float)c->f;
      if (x->dtype == KILN_F32 && isnormal(cf) && isnormal(1.0f / cf)) mode[i] = DIV_CONST;
    } else if (r->dep && (r->dep[i] & ~r->dep[x->a[1]])) {
      mode[i] = DIV_ROW;
    }
  }
  for (int32_t i = 0; i < k->n_kx; i++) {
    const kiln_kx *x = &k->kx[i];
    for (int j = 0, n_ops = kiln_ir_kx_n_operands(x); j < n_ops; j++)
      if (x->a[j] >= 0 && x->a[j] < k->n_kx && !well_conditioned_reader(x, j)) mode[x->a[j]] = DIV_PLAIN;
  }
  return mode;
}

/* Streaming (non-temporal) stores for an output too large to stay in the caches: they
 * write around the cache, with no read of each line before it is written. Measured here
 * (2 threads, [32768, 768] f32, 100 MB): a copy 7.5 -> 4.1 ms, and two kernels in a row
 * 16.3 -> 12.2 ms even though the second reads the first's output from memory; at 16 MB
 * they were slower (the data was still in the cache), at 64 MB faster. A kernel gets a
 * second, streaming variant where its output is at least STREAM_MIN_BYTES, each row starts
 * a cache line (whole 64-byte vector stores), and it does not write over an input in
 * place; the entry runs it when the output pointer is 64-byte aligned. */
enum { STREAM_MIN_BYTES = 64 << 20 };

static bool streams(const kiln_kernel *k, const kiln_kprogram *p) {
  if (k->out.rank < 1) return false;
  const kiln_buffer *o = &p->buffers[k->out_buf];
  int64_t row = k->out.dims[k->out.rank - 1] * (int64_t)kiln_dtype_size(k->out_dtype);
  if (o->nbytes < (size_t)STREAM_MIN_BYTES || row % CACHE_LINE) return false;
  for (int32_t i = 0; i < k->n_kx; i++) {
    const kiln_kx *x = &k->kx[i];
    if (x->kind != KILN_KX_LOAD) continue;
    const kiln_buffer *in = &p->buffers[x->buf];
    bool overlap = in->kind == KILN_BUF_ARENA && o->kind == KILN_BUF_ARENA &&
                   in->offset < o->offset + (int64_t)o->nbytes && o->offset < in->offset + (int64_t)in->nbytes;
    if (x->buf == k->out_buf || overlap) return false;
  }
  return true;
}

static LLVMValueRef emit_loop_kernel(render *r, const kiln_kernel *k, int32_t ki, const char *fn_name,
                                     bool streaming) {
  const kiln_allocator *al = r->p->alloc;
  LLVMTypeRef params[3] = {r->t_ptr, r->t_i64, r->t_i64};
  r->fn = LLVMAddFunction(r->mod, fn_name, LLVMFunctionType(r->t_void, params, 3, 0));
  LLVMSetLinkage(r->fn, LLVMInternalLinkage);
  /* noinline: the entry calls each kernel from two places (pool / no pool); one body. */
  fn_attr(r, r->fn, "noinline");
  fn_attr(r, r->fn, "nounwind");
  /* 512-bit vectors where the target has them (LLVM defaults to 256 on x86): the
   * polynomial exp/erf of softmax and GELU are compute-bound at 256 bits; measured
   * 1.4-1.7x faster at 512 on AVX-512 hosts. Targets without them ignore it. */
  LLVMAttributeRef vw = LLVMCreateStringAttribute(r->ctx, "prefer-vector-width", 19, "512", 3);
  LLVMAddAttributeAtIndex(r->fn, LLVMAttributeFunctionIndex, vw);
  r->k = k;
  size_t nb = (size_t)r->p->n_buffers, nk = (size_t)k->n_kx, nv = (size_t)k->n_vars;
  /* Levels: outside the loops, the row, the element, and one per REDUCE open at once
   * (each at most once: a REDUCE is not in its own body). */
  r->n_lv = 3;
  for (int32_t i = 0; i < k->n_kx; i++) r->n_lv += k->kx[i].kind == KILN_KX_REDUCE;
  bool oom;
  r->dep = var_deps(k, al, &oom);
  r->var = kiln_ir_malloc(al, sizeof(LLVMValueRef) * (nv + 1));
  r->memo = kiln_ir_malloc(al, sizeof(LLVMValueRef) * (nk + 1));
  r->memo_level = kiln_ir_malloc(al, sizeof(int32_t) * (nk + 1));
  r->memo_serial = kiln_ir_malloc(al, sizeof(int64_t) * (nk + 1));
  r->lv = kiln_ir_malloc(al, sizeof(level) * (size_t)r->n_lv);
  r->base = kiln_ir_malloc(al, sizeof(LLVMValueRef) * (nb + 1));
  LLVMValueRef ret = NULL;
  if (oom || !r->var || !r->memo || !r->memo_level || !r->memo_serial || !r->lv || !r->base) {
    kiln_diag_set(r->d, KILN_ERR_OUT_OF_MEMORY, "out of memory rendering kernel %s", k->name ? k->name : "?");
    goto done;
  }
  memset(r->var, 0, sizeof(LLVMValueRef) * (nv + 1));
  memset(r->memo, 0, sizeof(LLVMValueRef) * (nk + 1));
  memset(r->base, 0, sizeof(LLVMValueRef) * (nb + 1));
  r->top = 0;
  r->serial = 0;
  r->lv[0] = (level){.vars = 0, .serial = 0};

  LLVMValueRef bufs = LLVMGetParam(r->fn, 0), begin = LLVMGetParam(r->fn, 1), end = LLVMGetParam(r->fn, 2);
  r->entry_bb = LLVMAppendBasicBlockInContext(r->ctx, r->fn, "entry");
  LLVMPositionBuilderAtEnd(r->b, r->entry_bb);
  /* Base pointers once per call: stores into buffers can then not force reloads. */
  for (int32_t i = 0; i <= k->n_kx + 1; i++) {
    int32_t bi = i == k->n_kx + 1 ? r->extra_buf
                 : i == k->n_kx   ? k->out_buf
                 : k->kx[i].kind == KILN_KX_LOAD ? k->kx[i].buf : -1;
    if (bi < 0 || r->base[bi]) continue;
    /* An arena buffer at the same offset as one already loaded is the same memory (the
     * kernel writes in place over its input, memory planning's in-place reuse): one
     * pointer for both, so LLVM sees the load and the store of an element at the same
     * address and vectorizes without a run-time overlap check (which would fail and
     * fall back to the scalar loop). */
    const kiln_buffer *bb = &r->p->buffers[bi];
    for (int32_t j = 0; j < r->p->n_buffers && !r->base[bi] && bb->kind == KILN_BUF_ARENA; j++)
      if (j != bi && r->base[j] && r->p->buffers[j].kind == KILN_BUF_ARENA && r->p->buffers[j].offset == bb->offset)
        r->base[bi] = r->base[j];
    if (r->base[bi]) continue;
    LLVMValueRef idx = ci64(r, bi);
    LLVMValueRef slot = LLVMBuildInBoundsGEP2(r->b, r->t_ptr, bufs, &idx, 1, "");
    r->base[bi] = LLVMBuildLoad2(r->b, r->t_ptr, slot, r->p->buffers[bi].name ? r->p->buffers[bi].name : "buf");
    if (bi != k->out_buf && bi != r->extra_buf && bb->nbytes >= (size_t)PREFETCH_MIN_BUFFER) {
      unsigned pf = LLVMGetMDKindIDInContext(r->ctx, KILN_LLVM_MD_PREFETCH, strlen(KILN_LLVM_MD_PREFETCH));
      LLVMSetMetadata(r->base[bi], pf, LLVMMDNodeInContext(r->ctx, NULL, 0));
    }
    if (streaming && (bi == k->out_buf || bi == r->extra_buf)) { /* the caller checked: 64-byte aligned */
      LLVMMetadataRef a64 = LLVMValueAsMetadata(ci64(r, CACHE_LINE));
      LLVMSetMetadata(r->base[bi], LLVMGetMDKindIDInContext(r->ctx, "align", 5),
                      LLVMMetadataAsValue(r->ctx, LLVMMDNodeInContext2(r->ctx, &a64, 1)));
    }
  }
  r->bad = NULL;
  for (int32_t i = 0; i < k->n_kx && !r->bad; i++)
    if (k->kx[i].kind == KILN_KX_CHECK) r->bad = entry_alloca(r, r->t_i1);
  if (r->bad) LLVMBuildStore(r->b, LLVMConstInt(r->t_i1, 0, 0), r->bad);
  r->div_mode = div_modes(r, k, al);
  if (!find_row_caches(r)) {
    kiln_diag_set(r->d, KILN_ERR_OUT_OF_MEMORY, "out of memory rendering kernel %s", k->name ? k->name : "?");
    goto done;
  }

  int32_t rank = k->out.rank;
  int64_t last = rank > 0 ? k->out.dims[rank - 1] : 1;
  loop rows, cols;
  uint64_t row_vars = rank >= 2 && rank - 1 < 64 ? (1ull << (rank - 1)) - 1 : 0;
  if (!level_open(r, row_vars)) goto done;
  LLVMValueRef row = loop_begin(r, &rows, begin, end);
  /* Output coordinates of every dim but the last, from the row number. */
  LLVMValueRef rem = row;
  /* Leading dims of extent 1 (a batch of 1) have coordinate 0, and the first real dim
   * takes the rest of the row number without a remainder: LLVM cannot know that row <
   * n_rows, and a `row % 16` where row is the offset would hide that a load and the
   * store of an in-place kernel hit the same element (its overlap check then fails and
   * the scalar loop runs). */
  int32_t first = 0;
  while (first < rank - 2 && k->out.dims[first] == 1) r->var[first++] = ci64(r, 0);
  for (int32_t dd = rank - 2; dd > first; dd--) {
    LLVMValueRef ext = ci64(r, k->out.dims[dd] > 0 ? k->out.dims[dd] : 1);
    r->var[dd] = LLVMBuildURem(r->b, rem, ext, "");
    rem = LLVMBuildUDiv(r->b, rem, ext, "");
  }
  if (rank >= 2) r->var[first] = rem;
  LLVMValueRef col = ci64(r, 0);
  if (rank >= 1) {
    /* The kernel only runs for a non-empty domain, so the column loop runs at least once
     * and what is hoisted out of it would have been computed anyway. */
    if (!level_open(r, rank - 1 < 64 ? 1ull << (rank - 1) : 0)) goto done;
    col = r->var[rank - 1] = loop_begin(r, &cols, ci64(r, 0), ci64(r, last));
  }
  LLVMValueRef v = eval(r, k->root);
  if (!v) goto done;
  v = to_memory(r, convert(r, v, k->kx[k->root].dtype, k->out_dtype), k->out_dtype);
  LLVMValueRef off = LLVMBuildNSWAdd(r->b, LLVMBuildNSWMul(r->b, row, ci64(r, last), ""), col, "");
  /* (a streaming variant's vector stores of it are marked non-temporal after the loop
   * vectorizer, which does not widen non-temporal scalar stores: kiln_llvm_optimize) */
  LLVMBuildStore(r->b, v, LLVMBuildInBoundsGEP2(r->b, mtype(r, k->out_dtype), r->base[k->out_buf], &off, 1, ""));
  if (r->extra_root >= 0) {
    LLVMValueRef v2 = eval(r, r->extra_root);
    if (!v2) goto done;
    v2 = to_memory(r, convert(r, v2, k->kx[r->extra_root].dtype, r->extra_dtype), r->extra_dtype);
    LLVMBuildStore(r->b, v2, LLVMBuildInBoundsGEP2(r->b, mtype(r, r->extra_dtype), r->base[r->extra_buf], &off, 1, ""));
  }
  if (rank >= 1) {
    loop_end(r, &cols);
    level_close(r);
  }
  loop_end(r, &rows);
  level_close(r);
  /* streaming stores are weakly ordered: visible before the pool's barrier says done */
  if (streaming) LLVMBuildFence(r->b, LLVMAtomicOrderingSequentiallyConsistent, 0, "");
  if (r->bad) report_if(r, r->fn, LLVMBuildLoad2(r->b, r->t_i1, r->bad, ""), bufs, ki);
  LLVMBuildRetVoid(r->b);
  ret = r->fn;
done:
  kiln_ir_free(al, r->var);
  kiln_ir_free(al, r->memo);
  kiln_ir_free(al, r->memo_level);
  kiln_ir_free(al, r->memo_serial);
  kiln_ir_free(al, r->lv);
  kiln_ir_free(al, r->dep);
  kiln_ir_free(al, r->base);
  kiln_ir_free(al, r->row_cached);
  kiln_ir_free(al, r->row_buf);
  kiln_ir_free(al, r->div_mode);
  r->div_mode = NULL;
  r->row_cached = NULL;
  r->row_buf = NULL;
  r->var = r->memo = r->base = NULL;
  r->memo_level = NULL;
  r->memo_serial = NULL;
  r->lv = NULL;
  r->dep = NULL;
  r->bad = NULL;
  return ret;
}

/* A constant global holding raw bytes (descriptors, embedded weights). */
static LLVMValueRef bytes_global(render *r, const char *name, const void *data, size_t n, unsigned align) {
  LLVMValueRef init = LLVMConstStringInContext2(r->ctx, n ? (const char *)data : "", n ? n : 1, 1);
  LLVMValueRef g = LLVMAddGlobal(r->mod, LLVMTypeOf(init), name);
  LLVMSetInitializer(g, init);
  LLVMSetGlobalConstant(g, 1);
  LLVMSetAlignment(g, align);
  return g;
}

static void emit_consts(render *r) {
  for (int32_t i = 0; i < r->p->n_buffers; i++) {
    const kiln_buffer *bf = &r->p->buffers[i];
    if (bf->kind != KILN_BUF_CONST || bf->index < 0 || bf->index >= r->p->n_consts) continue;
    char name[32];
    snprintf(name, sizeof name, "kiln_c%d", bf->index);
    if (LLVMGetNamedGlobal(r->mod, name)) continue;
    const kiln_const *c = &r->p->consts[bf->index];
    LLVMValueRef g = bytes_global(r, name, c->data, c->nbytes, 64);
    LLVMSetVisibility(g, LLVMHiddenVisibility);
  }
}

/* The runtime's entry points as LLVM function types. */
typedef struct call_types {
  LLVMTypeRef kty, pf_ty, gm_ty, gf_ty, op_ty;
} call_types;

static call_types runtime_types(render *r) {
  call_types t;
  LLVMTypeRef kp[3] = {r->t_ptr, r->t_i64, r->t_i64};
  t.kty = LLVMFunctionType(r->t_void, kp, 3, 0);
  LLVMTypeRef pf_p[5] = {r->t_ptr, r->t_ptr, r->t_ptr, r->t_i64, r->t_i64};
  t.pf_ty = LLVMFunctionType(r->t_void, pf_p, 5, 0);
  LLVMTypeRef gm_p[4] = {r->t_ptr, r->t_ptr, r->t_i32, r->t_ptr};
  t.gm_ty = LLVMFunctionType(r->t_void, gm_p, 4, 0);
  LLVMTypeRef gf_p[6] = {r->t_ptr, r->t_ptr, r->t_i32, r->t_ptr, r->t_ptr, r->t_ptr};
  t.gf_ty = LLVMFunctionType(r->t_void, gf_p, 6, 0);
  LLVMTypeRef op_p[2] = {r->t_ptr, r->t_ptr};
  t.op_ty = LLVMFunctionType(r->t_i32, op_p, 2, 0);
  return t;
}

/* A kernel's descriptor global, shared by the entry and the step function. */
static LLVMValueRef desc_global(render *r, const char *name, const void *data, size_t n) {
  LLVMValueRef g = LLVMGetNamedGlobal(r->mod, name);
  if (g) return g;
  g = bytes_global(r, name, data, n, 8);
  LLVMSetLinkage(g, LLVMInternalLinkage);
  return g;
}

/* Work per row of a LOOP kernel, in element-steps: its columns plus each reduction's
 * loops, times the variables outside them that it depends on. A row-wise reduction
 * (softmax's max and sum, a layer norm's mean and variance) runs once per row, so a
 * [16, 64] layer norm is about 200 steps a row, not 64^3: counted as a product, its rows
 * went one by one to the thread pool, whose hand-off cost more than the row (the
 * transformer example's last layer norm, 1 -> 16 us at 2 threads). */
static int64_t row_cost(render *r, const kiln_kernel *k, int64_t last) {
  bool oom;
  uint64_t *dep = var_deps(k, r->p->alloc, &oom);
  int64_t cost = last;
  for (int32_t i = 0; i < k->n_kx && cost < KILN_LLVM_GRAIN_ELEMS; i++) {
    const kiln_kx *x = &k->kx[i];
    if (x->kind != KILN_KX_REDUCE) continue;
    int64_t c = 1;
    for (int32_t v = k->out.rank - 1; v < k->n_vars && c < KILN_LLVM_GRAIN_ELEMS; v++) {
      bool own = v >= x->var && v < x->var + x->n_vars;
      bool outer = !dep || (v < 64 && (dep[i] >> v & 1)); /* unknown: assume it depends */
      if ((own || outer) && v >= 0) c *= k->extent[v] > 1 ? k->extent[v] : 1;
    }
    cost += c;
  }
  kiln_ir_free(r->p->alloc, dep);
  return cost > 0 ? cost : 1;
}

/* Sibling kernels a and b (a->with_next) as one kernel for emit_loop_kernel: a's with b's
 * expression nodes after its own, b's root stored as the extra output. The caller frees
 * m->kx. False when out of memory. */
static bool merge_siblings(render *r, const kiln_kernel *a, const kiln_kernel *b, kiln_kernel *m) {
  *m = *a;
  m->with_next = false;
  m->kx = kiln_ir_malloc(r->p->alloc, sizeof(kiln_kx) * ((size_t)(a->n_kx + b->n_kx) + 1));
  if (!m->kx) return false;
  memcpy(m->kx, a->kx, sizeof(kiln_kx) * (size_t)a->n_kx);
  for (int32_t i = 0; i < b->n_kx; i++) {
    kiln_kx x = b->kx[i];
    for (int j = 0, n_ops = kiln_ir_kx_n_operands(&x); j < n_ops; j++)
      if (x.a[j] >= 0) x.a[j] += a->n_kx; /* a LOAD's absent mask stays -1 */
    m->kx[a->n_kx + i] = x;
  }
  m->n_kx = a->n_kx + b->n_kx;
  r->extra_root = a->n_kx + b->root;
  r->extra_buf = b->out_buf;
  r->extra_dtype = b->out_dtype;
  return true;
}

/* Runs kernel i at the builder's position in fn (which takes bufs and pool). */
static void emit_kernel_call(render *r, LLVMValueRef fn, const call_types *t, LLVMValueRef bufs, LLVMValueRef pool,
                             LLVMValueRef no_pool, int32_t i, LLVMValueRef *kfn) {
  LLVMBuilderRef b = r->b;
  const kiln_kernel *k = &r->p->kernels[i];
  char name[48];
  if (i > 0 && r->p->kernels[i - 1].with_next) return; /* ran with kernel i - 1 */
  if (k->kind == KILN_KERNEL_LOOP) {
    int64_t numel = kiln_shape_numel(&k->out);
    if (numel <= 0) return;
    int64_t last = k->out.rank > 0 ? k->out.dims[k->out.rank - 1] : 1;
    int64_t n_rows = numel / last;
    int64_t row_work = row_cost(r, k, last);
    int64_t grain = (KILN_LLVM_GRAIN_ELEMS + row_work - 1) / row_work;
    /* No pool: run the whole range on the caller (rt.h allows a NULL pool). */
    LLVMBasicBlockRef serial = LLVMAppendBasicBlockInContext(r->ctx, fn, "serial");
    LLVMBasicBlockRef par = LLVMAppendBasicBlockInContext(r->ctx, fn, "parallel");
    LLVMBasicBlockRef next = LLVMAppendBasicBlockInContext(r->ctx, fn, "next");
    LLVMValueRef kf = kfn[i], kst = kfn[r->p->n_kernels + i];
    if (kst) { /* the streaming variant where the output (both, for siblings) is 64-byte aligned */
      LLVMValueRef mis = ci64(r, 0);
      for (int o = 0; o < (k->with_next ? 2 : 1); o++) {
        LLVMValueRef at = ci64(r, o ? r->p->kernels[i + 1].out_buf : k->out_buf);
        LLVMValueRef out = LLVMBuildLoad2(b, r->t_ptr, LLVMBuildInBoundsGEP2(b, r->t_ptr, bufs, &at, 1, ""), "");
        mis = LLVMBuildOr(b, mis, LLVMBuildPtrToInt(b, out, r->t_i64, ""), "");
      }
      mis = LLVMBuildAnd(b, mis, ci64(r, CACHE_LINE - 1), "");
      kf = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntEQ, mis, ci64(r, 0), ""), kst, kf, "");
    }
    LLVMBuildCondBr(b, no_pool, serial, par);
    LLVMPositionBuilderAtEnd(b, serial);
    LLVMValueRef sa[3] = {bufs, ci64(r, 0), ci64(r, n_rows)};
    LLVMBuildCall2(b, t->kty, kf, sa, 3, "");
    LLVMBuildBr(b, next);
    LLVMPositionBuilderAtEnd(b, par);
    LLVMValueRef pa[5] = {pool, kf, bufs, ci64(r, n_rows), ci64(r, grain < 1 ? 1 : grain)};
    LLVMBuildCall2(b, t->pf_ty, declare_fn(r, "kiln_rt_parallel_for", t->pf_ty), pa, 5, "");
    LLVMBuildBr(b, next);
    LLVMPositionBuilderAtEnd(b, next);
  } else if (k->kind == KILN_KERNEL_GEMM) {
    snprintf(name, sizeof name, "kiln_gemm%d", i);
    kiln_gemm_desc gdesc = k->gemm;
    gdesc.n_bufs = r->p->n_buffers; /* for the runtime's per-worker copies of bufs */
    LLVMValueRef g = desc_global(r, name, &gdesc, sizeof gdesc);
    if (k->pack || k->epilogue) { /* sub-kernels rendered as kiln_k<i>_pack / _epilogue */
      char sub[48];
      snprintf(sub, sizeof sub, "kiln_k%d_pack", i);
      LLVMValueRef pk = k->pack ? LLVMGetNamedFunction(r->mod, sub) : LLVMConstNull(r->t_ptr);
      snprintf(sub, sizeof sub, "kiln_k%d_epilogue", i);
      LLVMValueRef ep = k->epilogue ? LLVMGetNamedFunction(r->mod, sub) : LLVMConstNull(r->t_ptr);
      LLVMValueRef a[6] = {pool, g, cint(r->t_i32, k->out_dtype), bufs, pk, ep};
      LLVMBuildCall2(b, t->gf_ty, declare_fn(r, "kiln_rt_gemm_fused", t->gf_ty), a, 6, "");
      return;
    }
    LLVMValueRef a[4] = {pool, g, cint(r->t_i32, k->out_dtype), bufs};
    LLVMBuildCall2(b, t->gm_ty, declare_fn(r, "kiln_rt_gemm", t->gm_ty), a, 4, "");
  } else {
    kiln_rt_opaque_desc od;
    memset(&od, 0, sizeof od); /* padding bytes too: the bytes are embedded verbatim */
    od.op = k->op;
    od.out_buf = k->out_buf;
    od.out_dtype = k->out_dtype;
    od.n_in = k->n_in_bufs;
    od.out_shape = k->out;
    od.attrs = k->attrs;
    for (int j = 0; j < k->n_in_bufs; j++) {
      const kiln_buffer *bf = &r->p->buffers[k->in_bufs[j]];
      od.in_bufs[j] = k->in_bufs[j];
      od.in_dtypes[j] = bf->dtype;
      od.in_shapes[j] = bf->shape;
    }
    snprintf(name, sizeof name, "kiln_opaque%d", i);
    LLVMValueRef g = desc_global(r, name, &od, sizeof od);
    LLVMValueRef a[2] = {g, bufs};
    LLVMValueRef rc = LLVMBuildCall2(b, t->op_ty, declare_fn(r, "kiln_rt_opaque", t->op_ty), a, 2, "");
    report_if(r, fn, LLVMBuildICmp(b, LLVMIntNE, rc, cint(r->t_i32, 0), ""), bufs, i);
  }
}

/* void entry(ptr bufs, ptr pool): every kernel in program order. */
static kiln_status emit_entry(render *r, const char *entry_name, bool hidden, LLVMValueRef *kfn) {
  LLVMBuilderRef b = r->b;
  LLVMTypeRef p2[2] = {r->t_ptr, r->t_ptr};
  LLVMValueRef fn = LLVMAddFunction(r->mod, entry_name, LLVMFunctionType(r->t_void, p2, 2, 0));
  if (hidden) LLVMSetVisibility(fn, LLVMHiddenVisibility);
  r->fn = fn;
  LLVMValueRef bufs = LLVMGetParam(fn, 0), pool = LLVMGetParam(fn, 1);
  LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(r->ctx, fn, "entry"));
  call_types t = runtime_types(r);
  LLVMValueRef no_pool = LLVMBuildICmp(b, LLVMIntEQ, pool, LLVMConstNull(r->t_ptr), "no_pool");
  for (int32_t i = 0; i < r->p->n_kernels; i++) emit_kernel_call(r, fn, &t, bufs, pool, no_pool, i, kfn);
  LLVMBuildRetVoid(b);
  return KILN_OK;
}

/* void step(ptr bufs, ptr pool, i32 k): kernel k alone (nothing for another k), so the
 * driver's verify mode can check each kernel's output as soon as it is written. */
static kiln_status emit_step(render *r, const char *step_name, bool hidden, LLVMValueRef *kfn) {
  LLVMBuilderRef b = r->b;
  LLVMTypeRef p3[3] = {r->t_ptr, r->t_ptr, r->t_i32};
  LLVMValueRef fn = LLVMAddFunction(r->mod, step_name, LLVMFunctionType(r->t_void, p3, 3, 0));
  if (hidden) LLVMSetVisibility(fn, LLVMHiddenVisibility);
  r->fn = fn;
  LLVMValueRef bufs = LLVMGetParam(fn, 0), pool = LLVMGetParam(fn, 1), which = LLVMGetParam(fn, 2);
  LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(r->ctx, fn, "entry"));
  call_types t = runtime_types(r);
  LLVMValueRef no_pool = LLVMBuildICmp(b, LLVMIntEQ, pool, LLVMConstNull(r->t_ptr), "no_pool");
  LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(r->ctx, fn, "done");
  LLVMValueRef sw = LLVMBuildSwitch(b, which, done, (unsigned)r->p->n_kernels);
  for (int32_t i = 0; i < r->p->n_kernels; i++) {
    LLVMBasicBlockRef bb = LLVMAppendBasicBlockInContext(r->ctx, fn, "kernel");
    LLVMAddCase(sw, cint(r->t_i32, i), bb);
    LLVMPositionBuilderAtEnd(b, bb);
    emit_kernel_call(r, fn, &t, bufs, pool, no_pool, i, kfn);
    LLVMBuildBr(b, done);
  }
  LLVMPositionBuilderAtEnd(b, done);
  LLVMBuildRetVoid(b);
  return KILN_OK;
}

kiln_status kiln_llvm_render(const kiln_kprogram *p, LLVMContextRef ctx,
                             const kiln_llvm_render_options *o, LLVMModuleRef *out, kiln_diag *d) {
  *out = NULL;
  render r;
  memset(&r, 0, sizeof r);
  r.extra_root = r.extra_buf = -1;
  r.avx512f = o->avx512f;
  r.avx512vl = o->avx512f && o->avx512vl;
  r.ctx = ctx;
  r.p = p;
  r.d = d;
  r.t_void = LLVMVoidTypeInContext(ctx);
  r.t_i1 = LLVMInt1TypeInContext(ctx);
  r.t_i8 = LLVMInt8TypeInContext(ctx);
  r.t_i16 = LLVMInt16TypeInContext(ctx);
  r.t_i32 = LLVMInt32TypeInContext(ctx);
  r.t_i64 = LLVMInt64TypeInContext(ctx);
  r.t_half = LLVMHalfTypeInContext(ctx);
  r.t_f32 = LLVMFloatTypeInContext(ctx);
  r.t_f64 = LLVMDoubleTypeInContext(ctx);
  r.t_ptr = LLVMPointerTypeInContext(ctx, 0);

  for (int32_t i = 0; i < p->n_kernels; i++)
    if (check_kernel(&r, &p->kernels[i], i) != KILN_OK) return d->status;

  r.mod = LLVMModuleCreateWithNameInContext(p->name ? p->name : "kiln", ctx);
  r.b = LLVMCreateBuilderInContext(ctx);
  /* kfn[i]: kernel i's function; kfn[n + i]: its streaming-store variant, or NULL */
  LLVMValueRef *kfn = kiln_ir_malloc(p->alloc, sizeof(LLVMValueRef) * (2 * (size_t)p->n_kernels + 1));
  kiln_status st = KILN_OK;
  if (!kfn) {
    st = kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory rendering the LLVM module");
    goto fail;
  }
  if (o->embed_consts) emit_consts(&r);
  for (int32_t i = 0; i < p->n_kernels; i++) {
    char name[32];
    snprintf(name, sizeof name, "kiln_k%d", i);
    kfn[i] = NULL;
    kfn[p->n_kernels + i] = NULL;
    if (i > 0 && p->kernels[i - 1].with_next) continue; /* rendered with kernel i - 1 */
    kiln_kernel merged;
    const kiln_kernel *lk = &p->kernels[i];
    r.extra_root = -1;
    if (lk->with_next) {
      if (!merge_siblings(&r, lk, &p->kernels[i + 1], &merged)) {
        st = kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory rendering kernel %d", i);
        goto fail;
      }
      lk = &merged;
    }
    bool loop = lk->kind == KILN_KERNEL_LOOP;
    kfn[i] = loop ? emit_loop_kernel(&r, lk, i, name, false) : NULL;
    bool ok = !loop || kfn[i];
    if (ok && loop && streams(lk, p) && (r.extra_root < 0 || streams(&p->kernels[i + 1], p))) {
      snprintf(name, sizeof name, "kiln_k%d_stream", i);
      ok = (kfn[p->n_kernels + i] = emit_loop_kernel(&r, lk, i, name, true)) != NULL;
    }
    if (lk == &merged) kiln_ir_free(p->alloc, merged.kx);
    r.extra_root = r.extra_buf = -1;
    if (!ok) {
      st = d->status != KILN_OK ? d->status : kiln_diag_set(d, KILN_ERR_INTERNAL, "kernel %d failed to render", i);
      goto fail;
    }
    const kiln_kernel *subs[2] = {p->kernels[i].pack, p->kernels[i].epilogue};
    for (int s = 0; s < 2; s++) {
      if (p->kernels[i].kind != KILN_KERNEL_GEMM || !subs[s]) continue;
      snprintf(name, sizeof name, "kiln_k%d_%s", i, s ? "epilogue" : "pack");
      if (!emit_loop_kernel(&r, subs[s], i, name, false)) {
        st = d->status != KILN_OK ? d->status : kiln_diag_set(d, KILN_ERR_INTERNAL, "kernel %d failed to render", i);
        goto fail;
      }
    }
  }
  if ((st = emit_entry(&r, o->entry_name, o->hidden_entry, kfn)) != KILN_OK) goto fail;
  if (o->step_name && (st = emit_step(&r, o->step_name, o->hidden_entry, kfn)) != KILN_OK) goto fail;
  char *msg = NULL;
  if (LLVMVerifyModule(r.mod, LLVMReturnStatusAction, &msg)) {
    st = kiln_diag_set(d, KILN_ERR_BACKEND, "LLVM rejected the generated module: %s", msg ? msg : "");
    kiln_llvm_diag_module(d, r.mod);
    LLVMDisposeMessage(msg);
    goto fail;
  }
  LLVMDisposeMessage(msg);
  kiln_ir_free(p->alloc, kfn);
  LLVMDisposeBuilder(r.b);
  *out = r.mod;
  return KILN_OK;
fail:
  kiln_ir_free(p->alloc, kfn);
  LLVMDisposeBuilder(r.b);
  LLVMDisposeModule(r.mod);
  return st;
}
