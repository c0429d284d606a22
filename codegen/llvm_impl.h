/* llvm_impl.h - what the files of codegen/ share among themselves: the scalar op table
 * (scalar.c), rendering a kernel program into an LLVM module (render.c), the host target
 * machine and the O3 pipeline, and error reporting that carries LLVM's message and the
 * module text into a kiln_diag.
 * Internal to codegen/; the module's public face is llvm.h.
 */
#ifndef KILN_LLVM_IMPL_H
#define KILN_LLVM_IMPL_H

#include "llvm.h"

#include <llvm-c/Core.h>
#include <llvm-c/Error.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>

typedef struct kiln_llvm_render_options {
  const char *entry_name; /* symbol of the entry function */
  /* AOT: constants become hidden globals kiln_c<idx> (64-byte aligned) in the module so
   * the glue can point bufs at them; the JIT reads constants through bufs only. */
  bool embed_consts;
  bool hidden_entry;      /* AOT: the entry is hidden (only the glue calls it) */
  /* When set, a second function void step(ptr bufs, ptr pool, i32 k) that runs kernel k
   * only (for the driver's per-kernel verify mode); same visibility as the entry. */
  const char *step_name;
  /* The target is x86-64 with AVX-512F (and VL): exp scales by 2^n with vscalefps
   * (scalar.c scalef_f32, lowered after O3 by kiln_llvm_optimize). */
  bool avx512f, avx512vl;
} kiln_llvm_render_options;

/* Sets o->avx512f/avx512vl from tm: its triple and feature string. A named CPU's target
 * machine carries no feature string, so it gets neither (the portable code). */
void kiln_llvm_target_features(LLVMTargetMachineRef tm, kiln_llvm_render_options *o);

/* The scalar and vector functions scalar.c calls for exp's 2^n scaling on AVX-512 (see
 * scalef_f32); declarations only, replaced by the x86 intrinsics after O3. */
#define KILN_LLVM_SCALEF "kiln_scalef_f32"
#define KILN_LLVM_SCALEF_V16 "kiln_scalef_v16f32"
#define KILN_LLVM_SCALEF_V8 "kiln_scalef_v8f32"
#define KILN_LLVM_SCALEF_V4 "kiln_scalef_v4f32"

/* ------------------------------------------------------------------ scalar.c */
/* What the scalar op table needs to build IR: the context, the module (for intrinsic
 * and libm declarations), the builder positioned where the value goes, the types it
 * uses, and the target flags that pick instructions (kiln_llvm_render_options). render.c
 * embeds one (module and builder set once it has created them). */
typedef struct kiln_llvm_scalar {
  LLVMContextRef ctx;
  LLVMModuleRef mod;
  LLVMBuilderRef b;
  LLVMTypeRef t_void, t_i1, t_i8, t_i16, t_i32, t_i64, t_half, t_f32, t_f64, t_ptr;
  bool avx512f, avx512vl;
} kiln_llvm_scalar;

/* Fills s's context, types and flags (avx512vl only with avx512f); mod and b NULL. */
void kiln_llvm_scalar_init(kiln_llvm_scalar *s, LLVMContextRef ctx, bool avx512f, bool avx512vl);

/* How a dtype computes: floats (f16/bf16 in f32, rounded to their dtype where a value is
 * computed: kiln_ir_kx_rounds_narrow), signed ints, unsigned ints (u8), bool (i1 in
 * registers, one byte in memory). */
typedef enum kiln_llvm_dclass {
  KILN_LLVM_DC_FLOAT,
  KILN_LLVM_DC_SINT,
  KILN_LLVM_DC_UINT,
  KILN_LLVM_DC_BOOL
} kiln_llvm_dclass;
kiln_llvm_dclass kiln_llvm_dclass_of(kiln_dtype t);
/* The register type a dtype is computed in, and the memory type of one element. */
LLVMTypeRef kiln_llvm_ctype(const kiln_llvm_scalar *s, kiln_dtype t);
LLVMTypeRef kiln_llvm_mtype(const kiln_llvm_scalar *s, kiln_dtype t);
LLVMValueRef kiln_llvm_ci64(const kiln_llvm_scalar *s, int64_t v);
LLVMValueRef kiln_llvm_cint(LLVMTypeRef t, int64_t v);
/* A register constant of dtype t: f for float dtypes (rounded to t), else i. */
LLVMValueRef kiln_llvm_const(const kiln_llvm_scalar *s, kiln_dtype t, double f, int64_t i);
/* A call of LLVM intrinsic `name` overloaded on tys. */
LLVMValueRef kiln_llvm_intrinsic(const kiln_llvm_scalar *s, const char *name, LLVMTypeRef *tys, unsigned n_tys,
                                 LLVMValueRef *args, unsigned n_args);
/* s->mod's function `name`, declared with type fty if it is not there yet. */
LLVMValueRef kiln_llvm_declare_fn(const kiln_llvm_scalar *s, const char *name, LLVMTypeRef fty);
/* Adds the enum attribute `name` (e.g. "nounwind") to function fn. */
void kiln_llvm_fn_attr(const kiln_llvm_scalar *s, LLVMValueRef fn, const char *name);
/* An f32 register value rounded to the precision of narrow float dtype `to` (others: f). */
LLVMValueRef kiln_llvm_round_narrow(const kiln_llvm_scalar *s, LLVMValueRef f, kiln_dtype to);
/* Register value v of dtype from as dtype to (the graph's cast). */
LLVMValueRef kiln_llvm_convert(const kiln_llvm_scalar *s, LLVMValueRef v, kiln_dtype from, kiln_dtype to);
/* A loaded memory element of dtype t as its register value, and back. */
LLVMValueRef kiln_llvm_from_memory(const kiln_llvm_scalar *s, LLVMValueRef m, kiln_dtype t);
LLVMValueRef kiln_llvm_to_memory(const kiln_llvm_scalar *s, LLVMValueRef v, kiln_dtype t);
/* Elementwise op `op` (ops.def ELEMENTWISE; kind: its kind attribute) of operands v, whose
 * dtype is odt (of v[1] for select), giving dtype rdt. NULL for an op that is not
 * elementwise. */
LLVMValueRef kiln_llvm_alu(const kiln_llvm_scalar *s, kiln_op op, int32_t kind, kiln_dtype odt, kiln_dtype rdt,
                           LLVMValueRef *v);
/* The initial accumulator of reduction op (reduce_*, argmax, argmin) over dtype t. */
LLVMValueRef kiln_llvm_reduce_init(const kiln_llvm_scalar *s, kiln_op op, kiln_dtype t);

/* ------------------------------------------------------------------ gemm_gen.c */
/* The task function void kiln_k<ki>_mm(ptr bufs, i64 begin, i64 end) of program kernel
 * ki, a GEMM scheduled KILN_GEMM_GENERATED; epilogue is its rendered epilogue sub-kernel
 * (NULL: none), which a task calls on its rows unless the panels are split (col_groups >
 * 1: the entry then runs it after the tasks). */
LLVMValueRef kiln_llvm_gemm_kernel(const kiln_llvm_scalar *s, const kiln_kprogram *p, int32_t ki, LLVMValueRef epilogue);
/* How many tasks it has (the entry's parallel range). */
int64_t kiln_llvm_gemm_tasks(const kiln_kernel *k);

/* ------------------------------------------------------------------ render.c */
/* Renders p into a new module in ctx and verifies it. On failure *out is NULL and d
 * holds the reason (with the module text when LLVM's verifier refused it). */
kiln_status kiln_llvm_render(const kiln_kprogram *p, LLVMContextRef ctx,
                             const kiln_llvm_render_options *o, LLVMModuleRef *out,
                             kiln_diag *d);

/* A target machine for the host CPU (its name and features), O3 code generation. */
kiln_status kiln_llvm_host_machine(LLVMRelocMode reloc, LLVMCodeModel cm, LLVMTargetMachineRef *tm,
                                   kiln_diag *d);
/* A target machine for a named triple and CPU (NULL: the host's; a named CPU gets that
 * CPU's default features, the host CPU the host's features). An unknown triple or a CPU
 * LLVM does not know for the triple is KILN_ERR_INVALID_ARGUMENT naming it. */
kiln_status kiln_llvm_target_machine(const char *triple, const char *cpu, LLVMRelocMode reloc, LLVMCodeModel cm,
                                     LLVMTargetMachineRef *tm, kiln_diag *d);

/* How JIT objects are generated (kiln_llvm_jit_module_object; part of the cache key): the
 * JIT's default code model (large on x86-64, so code and data may land anywhere in the
 * address space) and the default relocation model. */
#define KILN_LLVM_JIT_RELOC LLVMRelocDefault
#define KILN_LLVM_JIT_CODE_MODEL LLVMCodeModelJITDefault
/* The entry symbol of JIT code, and of its one-kernel step function. */
#define KILN_LLVM_JIT_ENTRY KILN_LLVM_JIT_ENTRY_NAME
#define KILN_LLVM_JIT_STEP "kiln_step"

/* JIT code for a kernel program in steps (jit.c): a module rendered for this host, not
 * optimized yet. The compile cache fingerprints it; on a miss the same module is
 * optimized and compiled, so it is rendered once either way. */
typedef struct kiln_llvm_jit_module {
  const kiln_allocator *alloc;
  LLVMTargetMachineRef tm;
  LLVMContextRef ctx;
  LLVMModuleRef m;
} kiln_llvm_jit_module;
/* Renders p for the host's JIT. Dispose *jm afterwards, also on failure. */
kiln_status kiln_llvm_jit_render(const kiln_kprogram *p, kiln_llvm_jit_module *jm, kiln_diag *d);
void kiln_llvm_jit_module_dispose(kiln_llvm_jit_module *jm);
/* The bytes that determine kiln_llvm_jit_module_object's result on this host: LLVM's
 * version, the target machine (triple, host CPU name and features), code generation
 * settings, and the bitcode of the rendered, unoptimized module (which holds everything
 * of p that reaches the code, including every constant the renderer embeds; constant
 * buffers are not embedded). Equal fingerprints give equal objects, so a strong hash of
 * them keys the compile cache. *data is allocated with jm->alloc. */
kiln_status kiln_llvm_jit_module_fingerprint(const kiln_llvm_jit_module *jm, void **data, size_t *n, kiln_diag *d);
/* Optimizes jm's module (in place) and emits the object file (ELF on Linux) for the
 * host; *obj is allocated with jm->alloc. It references constants through bufs only, so
 * it is valid for any constant values. */
kiln_status kiln_llvm_jit_module_object(kiln_llvm_jit_module *jm, void **obj, size_t *n, kiln_diag *d);
/* JIT code also holds a step function that runs one kernel k of the program alone (k
 * outside [0, n_kernels) does nothing), with the same bufs and pool as the entry: calling
 * it for k = 0, 1, ... in order is the same as calling the entry once. exec.c uses it to
 * run a kernel hook (verify mode) or time each kernel (profile). */
typedef void (*kiln_llvm_step_fn)(void **bufs, kiln_rt_pool *pool, int32_t k);
kiln_status kiln_llvm_jit_lookup_step(kiln_llvm_jit *jit, kiln_llvm_step_fn *step, kiln_diag *d);

/* What render.c marks for finish.c (the renderer's post-O3 half) in the module itself,
 * so the marks are part of what the compile cache hashes:
 * KILN_LLVM_MD_PREFETCH on the load of an input's base pointer, its one operand the
 * distance in bytes: its vector loads are followed by prefetches that far ahead;
 * KILN_LLVM_ATTR_STREAM, a function attribute: the kernel's vector stores through the
 * output pointers (the base pointer loads that carry !align) become non-temporal. */
#define KILN_LLVM_MD_PREFETCH "kiln.prefetch"
#define KILN_LLVM_ATTR_STREAM "kiln-streaming-stores"

/* Sets m's triple and data layout from tm, runs default<O3>, then kiln_llvm_finish
 * (module.c). */
kiln_status kiln_llvm_optimize(LLVMModuleRef m, LLVMTargetMachineRef tm, kiln_diag *d);
/* After O3: lowers what render.c marked (finish.c). */
void kiln_llvm_finish(LLVMModuleRef m);

/* Sets d to KILN_ERR_BACKEND with what + LLVM's message (consumes err) and, when m is
 * given, as much of the module text as fits. */
kiln_status kiln_llvm_fail(kiln_diag *d, const char *what, LLVMErrorRef err, LLVMModuleRef m);
/* Appends as much of m's text as fits into d's message. */
void kiln_llvm_diag_module(kiln_diag *d, LLVMModuleRef m);

#endif
