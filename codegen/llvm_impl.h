/* llvm_impl.h - what the files of codegen/ share among themselves: rendering a kernel
 * program into an LLVM module (render.c), the host target machine and the O3 pipeline,
 * and error reporting that carries LLVM's message and the module text into a kiln_diag.
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
   * (render.c scalef_f32, lowered after O3 by kiln_llvm_optimize). */
  bool avx512f, avx512vl;
} kiln_llvm_render_options;

/* Sets o->avx512f/avx512vl from tm: its triple and feature string. A named CPU's target
 * machine carries no feature string, so it gets neither (the portable code). */
void kiln_llvm_target_features(LLVMTargetMachineRef tm, kiln_llvm_render_options *o);

/* The scalar and vector functions render.c calls for exp's 2^n scaling on AVX-512 (see
 * scalef_f32); declarations only, replaced by the x86 intrinsics after O3. */
#define KILN_LLVM_SCALEF "kiln_scalef_f32"
#define KILN_LLVM_SCALEF_V16 "kiln_scalef_v16f32"
#define KILN_LLVM_SCALEF_V8 "kiln_scalef_v8f32"
#define KILN_LLVM_SCALEF_V4 "kiln_scalef_v4f32"

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

/* Metadata kind on the load of an input's base pointer: its vector loads are followed by
 * prefetches after O3 (render.c, target.c). */
#define KILN_LLVM_MD_PREFETCH "kiln.prefetch"
/* Distance of those prefetches ahead of the load, in bytes. Applied after O3, so not in
 * the module the JIT cache key hashes: a change here bumps the key's settings string
 * (jit.c). 4 KiB against 2 KiB, 6 interleaved runs of `kiln bench --runs 30 --threads 2`
 * on [32768, 768]: residual + layer norm 8.56 against 8.76 ms, bias + GELU 5.50 against
 * 5.78 ms (medians); layer norm, softmax and copy the same within noise. */
#define KILN_LLVM_PREFETCH_AHEAD 4096

/* Sets m's triple and data layout from tm, runs default<O3>, then marks the vector stores
 * of streaming kernel variants non-temporal and adds the prefetches of marked inputs. */
kiln_status kiln_llvm_optimize(LLVMModuleRef m, LLVMTargetMachineRef tm, kiln_diag *d);

/* Sets d to KILN_ERR_BACKEND with what + LLVM's message (consumes err) and, when m is
 * given, as much of the module text as fits. */
kiln_status kiln_llvm_fail(kiln_diag *d, const char *what, LLVMErrorRef err, LLVMModuleRef m);
/* Appends as much of m's text as fits into d's message. */
void kiln_llvm_diag_module(kiln_diag *d, LLVMModuleRef m);

#endif
