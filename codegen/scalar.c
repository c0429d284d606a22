/* scalar.c - the LLVM scalar op table: how each dtype is computed in registers and
 * stored in memory, constants, conversions (cast, f16/bf16 rounding), the f32
 * transcendentals as straight-line IR, and one switch (kiln_llvm_alu) that maps every
 * elementwise op to LLVM IR for every dtype class. render.c builds kernels around it.
 */
#include "llvm_impl.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

void kiln_llvm_scalar_init(kiln_llvm_scalar *r, LLVMContextRef ctx, bool avx512f, bool avx512vl) {
  memset(r, 0, sizeof *r);
  r->ctx = ctx;
  r->avx512f = avx512f;
  r->avx512vl = avx512f && avx512vl;
  r->t_void = LLVMVoidTypeInContext(ctx);
  r->t_i1 = LLVMInt1TypeInContext(ctx);
  r->t_i8 = LLVMInt8TypeInContext(ctx);
  r->t_i16 = LLVMInt16TypeInContext(ctx);
  r->t_i32 = LLVMInt32TypeInContext(ctx);
  r->t_i64 = LLVMInt64TypeInContext(ctx);
  r->t_half = LLVMHalfTypeInContext(ctx);
  r->t_f32 = LLVMFloatTypeInContext(ctx);
  r->t_f64 = LLVMDoubleTypeInContext(ctx);
  r->t_ptr = LLVMPointerTypeInContext(ctx, 0);
}

/* ------------------------------------------------------------------ types */
kiln_llvm_dclass kiln_llvm_dclass_of(kiln_dtype t) {
  if (kiln_dtype_is_float(t)) return KILN_LLVM_DC_FLOAT;
  if (t == KILN_BOOL) return KILN_LLVM_DC_BOOL;
  if (t == KILN_U8) return KILN_LLVM_DC_UINT;
  return KILN_LLVM_DC_SINT;
}

/* The register type a dtype is computed in. */
LLVMTypeRef kiln_llvm_ctype(const kiln_llvm_scalar *r, kiln_dtype t) {
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
LLVMTypeRef kiln_llvm_mtype(const kiln_llvm_scalar *r, kiln_dtype t) {
  switch (t) {
  case KILN_F16: return r->t_half;
  case KILN_BF16: return r->t_i16;
  case KILN_BOOL: return r->t_i8;
  default: return kiln_llvm_ctype(r, t);
  }
}

LLVMValueRef kiln_llvm_ci64(const kiln_llvm_scalar *r, int64_t v) {
  return LLVMConstInt(r->t_i64, (unsigned long long)v, 1);
}
LLVMValueRef kiln_llvm_cint(LLVMTypeRef t, int64_t v) { return LLVMConstInt(t, (unsigned long long)v, 1); }

/* ------------------------------------------------------------------ calls */
LLVMValueRef kiln_llvm_intrinsic(const kiln_llvm_scalar *r, const char *name, LLVMTypeRef *tys, unsigned n_tys,
                                 LLVMValueRef *args, unsigned n_args) {
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  KILN_ASSERT(id != 0);
  LLVMValueRef fn = LLVMGetIntrinsicDeclaration(r->mod, id, tys, n_tys);
  LLVMTypeRef fty = LLVMIntrinsicGetType(r->ctx, id, tys, n_tys);
  return LLVMBuildCall2(r->b, fty, fn, args, n_args, "");
}

static LLVMValueRef intr1(const kiln_llvm_scalar *r, const char *name, LLVMValueRef x) {
  LLVMTypeRef t = LLVMTypeOf(x);
  return kiln_llvm_intrinsic(r, name, &t, 1, &x, 1);
}

static LLVMValueRef intr2(const kiln_llvm_scalar *r, const char *name, LLVMValueRef x, LLVMValueRef y) {
  LLVMTypeRef t = LLVMTypeOf(x);
  LLVMValueRef a[2] = {x, y};
  return kiln_llvm_intrinsic(r, name, &t, 1, a, 2);
}

LLVMValueRef kiln_llvm_declare_fn(const kiln_llvm_scalar *r, const char *name, LLVMTypeRef fty) {
  LLVMValueRef fn = LLVMGetNamedFunction(r->mod, name);
  return fn ? fn : LLVMAddFunction(r->mod, name, fty);
}

/* libm for what has no LLVM intrinsic (erf, tanh): "erff" for f32, "erf" for f64. */
static LLVMValueRef libm1(const kiln_llvm_scalar *r, const char *f64name, LLVMValueRef x) {
  LLVMTypeRef t = LLVMTypeOf(x);
  char name[32];
  snprintf(name, sizeof name, "%s%s", f64name, t == r->t_f32 ? "f" : "");
  LLVMTypeRef fty = LLVMFunctionType(t, &t, 1, 0);
  return LLVMBuildCall2(r->b, fty, kiln_llvm_declare_fn(r, name, fty), &x, 1, "");
}

void kiln_llvm_fn_attr(const kiln_llvm_scalar *r, LLVMValueRef fn, const char *name) {
  unsigned kind = LLVMGetEnumAttributeKindForName(name, strlen(name));
  LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(r->ctx, kind, 0));
}

/* ------------------------------------------------------------------ conversions */
/* f32 -> bf16 bits, round to nearest even, NaN stays a quiet NaN (as kiln_f32_to_bf16). */
static LLVMValueRef f32_to_bf16_bits(const kiln_llvm_scalar *r, LLVMValueRef v) {
  LLVMBuilderRef b = r->b;
  LLVMValueRef u = LLVMBuildBitCast(b, v, r->t_i32, "");
  LLVMValueRef lsb =
      LLVMBuildAnd(b, LLVMBuildLShr(b, u, kiln_llvm_cint(r->t_i32, 16), ""), kiln_llvm_cint(r->t_i32, 1), "");
  LLVMValueRef rnd = LLVMBuildAdd(b, LLVMBuildAdd(b, u, kiln_llvm_cint(r->t_i32, 0x7fff), ""), lsb, "");
  LLVMValueRef nan = LLVMBuildOr(b, u, kiln_llvm_cint(r->t_i32, 0x400000), "");
  LLVMValueRef isnan = LLVMBuildFCmp(b, LLVMRealUNO, v, v, "");
  LLVMValueRef w = LLVMBuildLShr(b, LLVMBuildSelect(b, isnan, nan, rnd, ""), kiln_llvm_cint(r->t_i32, 16), "");
  return LLVMBuildTrunc(b, w, r->t_i16, "");
}

static LLVMValueRef bf16_bits_to_f32(const kiln_llvm_scalar *r, LLVMValueRef h) {
  LLVMValueRef w = LLVMBuildZExt(r->b, h, r->t_i32, "");
  w = LLVMBuildShl(r->b, w, kiln_llvm_cint(r->t_i32, 16), "");
  return LLVMBuildBitCast(r->b, w, r->t_f32, "");
}

/* An f32 register value rounded to the precision of a narrow float dtype. */
LLVMValueRef kiln_llvm_round_narrow(const kiln_llvm_scalar *r, LLVMValueRef f, kiln_dtype to) {
  if (to == KILN_F16)
    return LLVMBuildFPExt(r->b, LLVMBuildFPTrunc(r->b, f, r->t_half, ""), r->t_f32, "");
  if (to == KILN_BF16) return bf16_bits_to_f32(r, f32_to_bf16_bits(r, f));
  return f;
}

/* Graph semantics of cast (ops.def): float->int truncates and saturates to the
 * destination's range, NaN -> 0 (so no poison); int->int keeps the low bits; ->bool is
 * x != 0 (NaN is true); bool->number is 0/1. */
LLVMValueRef kiln_llvm_convert(const kiln_llvm_scalar *r, LLVMValueRef v, kiln_dtype from, kiln_dtype to) {
  if (from == to) return v;
  LLVMBuilderRef b = r->b;
  kiln_llvm_dclass cf = kiln_llvm_dclass_of(from), ct = kiln_llvm_dclass_of(to);
  LLVMTypeRef tf = kiln_llvm_ctype(r, from), tt = kiln_llvm_ctype(r, to);
  if (ct == KILN_LLVM_DC_FLOAT) {
    LLVMValueRef f;
    if (cf == KILN_LLVM_DC_FLOAT) {
      f = tf == tt ? v : tt == r->t_f64 ? LLVMBuildFPExt(b, v, tt, "") : LLVMBuildFPTrunc(b, v, tt, "");
    } else if (cf == KILN_LLVM_DC_SINT) {
      f = LLVMBuildSIToFP(b, v, tt, "");
    } else {
      f = LLVMBuildUIToFP(b, v, tt, "");
    }
    return kiln_llvm_round_narrow(r, f, to);
  }
  if (ct == KILN_LLVM_DC_BOOL) {
    if (cf == KILN_LLVM_DC_FLOAT) return LLVMBuildFCmp(b, LLVMRealUNE, v, LLVMConstReal(tf, 0.0), "");
    return LLVMBuildICmp(b, LLVMIntNE, v, LLVMConstInt(tf, 0, 0), "");
  }
  if (cf == KILN_LLVM_DC_FLOAT) { /* saturating to to's range, NaN -> 0 (ops.def) */
    LLVMTypeRef tys[2] = {tt, tf};
    return kiln_llvm_intrinsic(r, ct == KILN_LLVM_DC_UINT ? "llvm.fptoui.sat" : "llvm.fptosi.sat", tys, 2, &v, 1);
  }
  unsigned wf = LLVMGetIntTypeWidth(tf), wt = LLVMGetIntTypeWidth(tt);
  if (wf == wt) return v; /* i8 <-> u8: same bits */
  if (wf > wt) return LLVMBuildTrunc(b, v, tt, "");
  return cf == KILN_LLVM_DC_SINT ? LLVMBuildSExt(b, v, tt, "") : LLVMBuildZExt(b, v, tt, "");
}

/* Memory element -> register value of dtype t. */
LLVMValueRef kiln_llvm_from_memory(const kiln_llvm_scalar *r, LLVMValueRef m, kiln_dtype t) {
  switch (t) {
  case KILN_F16: return LLVMBuildFPExt(r->b, m, r->t_f32, "");
  case KILN_BF16: return bf16_bits_to_f32(r, m);
  case KILN_BOOL: return LLVMBuildICmp(r->b, LLVMIntNE, m, kiln_llvm_cint(r->t_i8, 0), "");
  default: return m;
  }
}

LLVMValueRef kiln_llvm_to_memory(const kiln_llvm_scalar *r, LLVMValueRef v, kiln_dtype t) {
  switch (t) {
  case KILN_F16: return LLVMBuildFPTrunc(r->b, v, r->t_half, "");
  case KILN_BF16: return f32_to_bf16_bits(r, v);
  case KILN_BOOL: return LLVMBuildZExt(r->b, v, r->t_i8, "");
  default: return v;
  }
}

LLVMValueRef kiln_llvm_const(const kiln_llvm_scalar *r, kiln_dtype t, double f, int64_t i) {
  switch (kiln_llvm_dclass_of(t)) {
  case KILN_LLVM_DC_FLOAT:
    if (t == KILN_F16) f = kiln_f16_to_f32(kiln_f32_to_f16((float)f));
    if (t == KILN_BF16) f = kiln_bf16_to_f32(kiln_f32_to_bf16((float)f));
    return LLVMConstReal(kiln_llvm_ctype(r, t), t == KILN_F64 ? f : (double)(float)f);
  case KILN_LLVM_DC_BOOL: return LLVMConstInt(r->t_i1, i != 0, 0);
  default: return kiln_llvm_cint(kiln_llvm_ctype(r, t), i);
  }
}

/* ------------------------------------------------------------------ f32 transcendentals */
/* exp, log, tanh, erf and sigmoid of f32 as straight-line IR: range reduction, a
 * polynomial, and selects for the special cases (inf, NaN, overflow, underflow, zero).
 * A libm call has no vector form, so a loop using one would stay scalar; these
 * vectorize. The coefficients are Kiln's own minimax fits (Lawson's algorithm over
 * Chebyshev nodes in double, rounded to f32); test_llvm_alu sweeps dense ranges and
 * bounds the error (a few ulp; erf about 1e-7 absolute). f64 keeps libm. */
static LLVMValueRef fk(const kiln_llvm_scalar *r, double v) { return LLVMConstReal(r->t_f32, v); }
static LLVMValueRef ik(const kiln_llvm_scalar *r, int64_t v) { return kiln_llvm_cint(r->t_i32, v); }

static LLVMValueRef fmadd(const kiln_llvm_scalar *r, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) {
  LLVMTypeRef t = r->t_f32;
  LLVMValueRef v[3] = {a, b, c};
  return kiln_llvm_intrinsic(r, "llvm.fmuladd", &t, 1, v, 3);
}

/* c[0] + c[1] x + ... + c[n-1] x^(n-1) */
static LLVMValueRef horner(const kiln_llvm_scalar *r, LLVMValueRef x, const float *c, int n) {
  LLVMValueRef p = fk(r, c[n - 1]);
  for (int i = n - 2; i >= 0; i--) p = fmadd(r, p, x, fk(r, c[i]));
  return p;
}

/* a / b where b is finite and nonzero by construction, inside an approximation that is
 * itself a few ulp off: a reciprocal estimate refined once (vrcp14ps and two FMAs on
 * AVX-512, within about an ulp) instead of a divide. */
static LLVMValueRef approx_div(const kiln_llvm_scalar *r, LLVMValueRef a, LLVMValueRef bv) {
  LLVMValueRef q = LLVMBuildFDiv(r->b, a, bv, "");
  LLVMSetFastMathFlags(q, LLVMFastMathNoInfs | LLVMFastMathAllowReciprocal | LLVMFastMathAllowContract);
  return q;
}

/* (a pr b) ? t : f */
static LLVMValueRef fsel(const kiln_llvm_scalar *r, LLVMRealPredicate pr, LLVMValueRef a, LLVMValueRef b,
                         LLVMValueRef t, LLVMValueRef f) {
  return LLVMBuildSelect(r->b, LLVMBuildFCmp(r->b, pr, a, b, ""), t, f, "");
}

static LLVMValueRef copysign_f32(const kiln_llvm_scalar *r, LLVMValueRef mag, LLVMValueRef sgn) {
  return intr2(r, "llvm.copysign", mag, sgn);
}

/* exp(x) = 2^n exp(x - n ln2), |x - n ln2| <= ln2/2. 2^n is applied with vscalefps on
 * AVX-512 (scalef_f32), elsewhere as two factors so that results down in the subnormals
 * round once. Inputs are clamped to [-110, 89], beyond which the result is 0 or inf
 * anyway. */
/* exp(y) = 2^n p for finite y in [-110, 89]: p = exp(y - n ln2), *n_out = n (an integral
 * f32) and *ni_out = n as i32. */
static LLVMValueRef exp_core(const kiln_llvm_scalar *r, LLVMValueRef xc, LLVMValueRef *n_out, LLVMValueRef *ni_out) {
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
static LLVMValueRef pow2i(const kiln_llvm_scalar *r, LLVMValueRef n) {
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
static void pure_fn(const kiln_llvm_scalar *r, LLVMValueRef fn) {
  kiln_llvm_fn_attr(r, fn, "nounwind");
  kiln_llvm_fn_attr(r, fn, "willreturn");
  LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex,
                          LLVMCreateEnumAttribute(r->ctx, LLVMGetEnumAttributeKindForName("memory", 6), 0));
}

static LLVMValueRef scalef_f32(const kiln_llvm_scalar *r, LLVMValueRef p, LLVMValueRef n) {
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

static LLVMValueRef exp_f32(const kiln_llvm_scalar *r, LLVMValueRef x) {
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
static LLVMValueRef log_f32(const kiln_llvm_scalar *r, LLVMValueRef x) {
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
static LLVMValueRef tanh_f32(const kiln_llvm_scalar *r, LLVMValueRef x) {
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
static LLVMValueRef erf_f32(const kiln_llvm_scalar *r, LLVMValueRef x) {
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
/* Integer division/remainder that never traps (ops.def's semantics): min / -1 wraps and
 * min mod -1 is 0; x / 0 and x mod 0, an error that lowering's CHECK reports, compute 0
 * meanwhile. */
static LLVMValueRef int_divrem(const kiln_llvm_scalar *r, bool div, bool is_signed, LLVMValueRef a, LLVMValueRef b) {
  LLVMBuilderRef bl = r->b;
  LLVMTypeRef t = LLVMTypeOf(a);
  LLVMValueRef zero = kiln_llvm_cint(t, 0), one = kiln_llvm_cint(t, 1);
  LLVMValueRef bz = LLVMBuildICmp(bl, LLVMIntEQ, b, zero, "");
  if (!is_signed) {
    LLVMValueRef s = LLVMBuildSelect(bl, bz, one, b, "");
    LLVMValueRef q = div ? LLVMBuildUDiv(bl, a, s, "") : LLVMBuildURem(bl, a, s, "");
    return LLVMBuildSelect(bl, bz, zero, q, "");
  }
  LLVMValueRef bm1 = LLVMBuildICmp(bl, LLVMIntEQ, b, kiln_llvm_cint(t, -1), "");
  LLVMValueRef s = LLVMBuildSelect(bl, LLVMBuildOr(bl, bz, bm1, ""), one, b, "");
  LLVMValueRef q = div ? LLVMBuildSDiv(bl, a, s, "") : LLVMBuildSRem(bl, a, s, "");
  q = LLVMBuildSelect(bl, bm1, div ? LLVMBuildSub(bl, zero, a, "") : zero, q, "");
  return LLVMBuildSelect(bl, bz, zero, q, "");
}

/* Integer a^e (ops.def): square and multiply over every bit of e, wrapping, as straight-
 * line selects that vectorize; a negative e gives 1 for a = 1, (-1)^e for a = -1, else 0. */
static LLVMValueRef int_pow(const kiln_llvm_scalar *r, bool is_signed, LLVMValueRef a, LLVMValueRef e) {
  LLVMBuilderRef b = r->b;
  LLVMTypeRef t = LLVMTypeOf(a);
  LLVMValueRef one = kiln_llvm_cint(t, 1), res = one, base = a, ex = e;
  for (unsigned i = 0, w = LLVMGetIntTypeWidth(t); i < w; i++) {
    LLVMValueRef bit = LLVMBuildTrunc(b, ex, r->t_i1, "");
    res = LLVMBuildSelect(b, bit, LLVMBuildMul(b, res, base, ""), res, "");
    if (i + 1 < w) base = LLVMBuildMul(b, base, base, "");
    ex = LLVMBuildLShr(b, ex, one, "");
  }
  if (!is_signed) return res;
  LLVMValueRef m1 = kiln_llvm_cint(t, -1), odd = LLVMBuildTrunc(b, e, r->t_i1, "");
  LLVMValueRef neg = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntEQ, a, m1, ""), LLVMBuildSelect(b, odd, m1, one, ""),
                                     kiln_llvm_cint(t, 0), "");
  neg = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntEQ, a, one, ""), one, neg, "");
  return LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, e, kiln_llvm_cint(t, 0), ""), neg, res, "");
}

/* a mod b: kind 1 C's (the dividend's sign), kind 0 Python's: a nonzero remainder whose
 * sign differs from b's gets b added, and a zero one takes b's sign (ops.def). */
static LLVMValueRef mod(const kiln_llvm_scalar *r, int32_t kind, kiln_llvm_dclass c, LLVMValueRef a, LLVMValueRef bv) {
  LLVMBuilderRef b = r->b;
  if (c == KILN_LLVM_DC_UINT) return int_divrem(r, false, false, a, bv);
  bool fl = c == KILN_LLVM_DC_FLOAT;
  LLVMValueRef rem = fl ? LLVMBuildFRem(b, a, bv, "") : int_divrem(r, false, true, a, bv);
  if (kind == 1) return rem;
  if (fl) {
    LLVMValueRef zero = LLVMConstReal(LLVMTypeOf(a), 0.0);
    LLVMValueRef rneg = LLVMBuildFCmp(b, LLVMRealOLT, rem, zero, "");
    LLVMValueRef bneg = LLVMBuildFCmp(b, LLVMRealOLT, bv, zero, "");
    LLVMValueRef fix = LLVMBuildAnd(b, LLVMBuildFCmp(b, LLVMRealONE, rem, zero, ""), LLVMBuildXor(b, rneg, bneg, ""), "");
    LLVMValueRef v = LLVMBuildSelect(b, fix, LLVMBuildFAdd(b, rem, bv, ""), rem, "");
    return fsel(r, LLVMRealOEQ, rem, zero, intr2(r, "llvm.copysign", rem, bv), v);
  }
  LLVMValueRef zero = kiln_llvm_cint(LLVMTypeOf(a), 0);
  LLVMValueRef sx = LLVMBuildICmp(b, LLVMIntSLT, LLVMBuildXor(b, rem, bv, ""), zero, "");
  LLVMValueRef fix = LLVMBuildAnd(b, LLVMBuildICmp(b, LLVMIntNE, rem, zero, ""), sx, "");
  return LLVMBuildSelect(b, fix, LLVMBuildAdd(b, rem, bv, ""), rem, "");
}

/* 1/(1+e^-x) as e/(1+e) below 0 with e = exp(-|x|), which never overflows and keeps the
 * tiny (subnormal) results of very negative x that 1/(1+exp(-x)) would flush to 0. */
static LLVMValueRef sigmoid(const kiln_llvm_scalar *r, LLVMValueRef x) {
  LLVMBuilderRef b = r->b;
  LLVMTypeRef t = LLVMTypeOf(x);
  LLVMValueRef one = LLVMConstReal(t, 1.0);
  LLVMValueRef nx = LLVMBuildFNeg(b, intr1(r, "llvm.fabs", x), "");
  LLVMValueRef e = t == r->t_f32 ? exp_f32(r, nx) : intr1(r, "llvm.exp", nx);
  LLVMValueRef s = t == r->t_f32 ? approx_div(r, one, LLVMBuildFAdd(b, one, e, "")) /* 1 + e in [1, 2] */
                                 : LLVMBuildFDiv(b, one, LLVMBuildFAdd(b, one, e, ""), "");
  return fsel(r, LLVMRealOLT, x, LLVMConstReal(t, 0.0), LLVMBuildFMul(b, e, s, ""), s);
}

/* sign: 1 above 0, -1 below; for floats +0 for either zero and NaN for NaN (ops.def). */
static LLVMValueRef sign(const kiln_llvm_scalar *r, kiln_llvm_dclass c, LLVMValueRef x) {
  LLVMBuilderRef b = r->b;
  LLVMTypeRef t = LLVMTypeOf(x);
  if (c == KILN_LLVM_DC_FLOAT) {
    LLVMValueRef zero = LLVMConstReal(t, 0.0);
    LLVMValueRef v = fsel(r, LLVMRealUNO, x, x, x, zero);
    v = fsel(r, LLVMRealOLT, x, zero, LLVMConstReal(t, -1.0), v);
    return fsel(r, LLVMRealOGT, x, zero, LLVMConstReal(t, 1.0), v);
  }
  bool sg = c == KILN_LLVM_DC_SINT;
  LLVMValueRef zero = kiln_llvm_cint(t, 0);
  LLVMValueRef pos = LLVMBuildZExt(b, LLVMBuildICmp(b, sg ? LLVMIntSGT : LLVMIntUGT, x, zero, ""), t, "");
  if (!sg) return pos;
  return LLVMBuildSub(b, pos, LLVMBuildZExt(b, LLVMBuildICmp(b, LLVMIntSLT, x, zero, ""), t, ""), "");
}

/* One switch maps every elementwise op to LLVM IR for the dtype classes the op accepts
 * (ops.def OPERANDS; check_kernel refuses the rest), plus bool max/min, which bool
 * reductions use. odt is the operand dtype (of a[1] for select), rdt the result dtype. */
LLVMValueRef kiln_llvm_alu(const kiln_llvm_scalar *r, kiln_op op, int32_t kind, kiln_dtype odt, kiln_dtype rdt,
                           LLVMValueRef *v) {
  LLVMBuilderRef b = r->b;
  kiln_llvm_dclass c = kiln_llvm_dclass_of(odt);
  bool fl = c == KILN_LLVM_DC_FLOAT, sg = c == KILN_LLVM_DC_SINT, bo = c == KILN_LLVM_DC_BOOL;
  LLVMTypeRef t = kiln_llvm_ctype(r, odt);
  bool f32 = t == r->t_f32;
  LLVMValueRef one = fl ? LLVMConstReal(t, 1.0) : LLVMConstInt(t, 1, 0);
  switch (op) {
  case KILN_OP_neg: return fl ? LLVMBuildFNeg(b, v[0], "") : LLVMBuildNeg(b, v[0], "");
  case KILN_OP_abs:
    if (fl) return intr1(r, "llvm.fabs", v[0]);
    return sg ? intr2(r, "llvm.abs", v[0], LLVMConstInt(r->t_i1, 0, 0)) : v[0]; /* abs(min) = min */
  case KILN_OP_exp: return f32 ? exp_f32(r, v[0]) : intr1(r, "llvm.exp", v[0]);
  case KILN_OP_log: return f32 ? log_f32(r, v[0]) : intr1(r, "llvm.log", v[0]);
  case KILN_OP_sqrt: return intr1(r, "llvm.sqrt", v[0]);
  case KILN_OP_rsqrt: return LLVMBuildFDiv(b, one, intr1(r, "llvm.sqrt", v[0]), "");
  case KILN_OP_recip: return LLVMBuildFDiv(b, one, v[0], "");
  case KILN_OP_tanh: return f32 ? tanh_f32(r, v[0]) : libm1(r, "tanh", v[0]);
  case KILN_OP_sigmoid: return sigmoid(r, v[0]);
  case KILN_OP_erf: return f32 ? erf_f32(r, v[0]) : libm1(r, "erf", v[0]);
  case KILN_OP_sin: return intr1(r, "llvm.sin", v[0]);
  case KILN_OP_cos: return intr1(r, "llvm.cos", v[0]);
  case KILN_OP_atan: return libm1(r, "atan", v[0]);
  case KILN_OP_floor: return intr1(r, "llvm.floor", v[0]);
  case KILN_OP_ceil: return intr1(r, "llvm.ceil", v[0]);
  case KILN_OP_round: return intr1(r, "llvm.roundeven", v[0]);
  case KILN_OP_sign: return sign(r, c, v[0]);
  case KILN_OP_not: return bo ? LLVMBuildXor(b, v[0], one, "") : LLVMBuildNot(b, v[0], "");
  case KILN_OP_isnan: return LLVMBuildFCmp(b, LLVMRealUNO, v[0], v[0], "");
  case KILN_OP_add: return fl ? LLVMBuildFAdd(b, v[0], v[1], "") : LLVMBuildAdd(b, v[0], v[1], "");
  case KILN_OP_sub: return fl ? LLVMBuildFSub(b, v[0], v[1], "") : LLVMBuildSub(b, v[0], v[1], "");
  case KILN_OP_mul: return fl ? LLVMBuildFMul(b, v[0], v[1], "") : LLVMBuildMul(b, v[0], v[1], "");
  case KILN_OP_div: return fl ? LLVMBuildFDiv(b, v[0], v[1], "") : int_divrem(r, true, sg, v[0], v[1]);
  case KILN_OP_pow: return fl ? intr2(r, "llvm.pow", v[0], v[1]) : int_pow(r, sg, v[0], v[1]);
  case KILN_OP_max: /* IEEE 754-2019 maximum: NaN propagates, -0 < +0 */
    if (fl) return intr2(r, "llvm.maximum", v[0], v[1]);
    return bo ? LLVMBuildOr(b, v[0], v[1], "") : intr2(r, sg ? "llvm.smax" : "llvm.umax", v[0], v[1]);
  case KILN_OP_min:
    if (fl) return intr2(r, "llvm.minimum", v[0], v[1]);
    return bo ? LLVMBuildAnd(b, v[0], v[1], "") : intr2(r, sg ? "llvm.smin" : "llvm.umin", v[0], v[1]);
  case KILN_OP_mod: return mod(r, kind, c, v[0], v[1]);
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
  case KILN_OP_cast: return kiln_llvm_convert(r, v[0], odt, rdt);
  KILN_OPS_NOT_ELEMENTWISE(KILN_OP_CASE) /* not elementwise: refused by check_kernel */
  case KILN_OP_COUNT: break;
  }
  return NULL;
}

/* The extreme of dtype t a max (is_max) or min reduction starts from. */
static LLVMValueRef extreme(const kiln_llvm_scalar *r, bool is_max, kiln_dtype t) {
  switch (kiln_llvm_dclass_of(t)) {
  case KILN_LLVM_DC_FLOAT: return LLVMConstReal(kiln_llvm_ctype(r, t), is_max ? -INFINITY : INFINITY);
  case KILN_LLVM_DC_BOOL: return LLVMConstInt(r->t_i1, is_max ? 0 : 1, 0);
  case KILN_LLVM_DC_UINT: return LLVMConstInt(r->t_i8, is_max ? 0 : 255, 0);
  case KILN_LLVM_DC_SINT: break;
  }
  unsigned w = LLVMGetIntTypeWidth(kiln_llvm_ctype(r, t));
  int64_t mx = (int64_t)((~0ull) >> (65 - w));
  return kiln_llvm_cint(kiln_llvm_ctype(r, t), is_max ? -mx - 1 : mx);
}

LLVMValueRef kiln_llvm_reduce_init(const kiln_llvm_scalar *r, kiln_op op, kiln_dtype t) {
  switch (op) {
  case KILN_OP_reduce_sum: return kiln_llvm_const(r, t, 0.0, 0);
  case KILN_OP_reduce_prod: return kiln_llvm_const(r, t, 1.0, 1);
  case KILN_OP_reduce_max: case KILN_OP_argmax: return extreme(r, true, t);
  case KILN_OP_reduce_min: case KILN_OP_argmin: return extreme(r, false, t);
  KILN_OPS_NOT_REDUCE(KILN_OP_CASE)
  case KILN_OP_COUNT: break;
  }
  return NULL; /* not a reduction: refused by check_kernel */
}
