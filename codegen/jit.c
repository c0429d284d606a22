/* jit.c - in-process compilation of a kernel program with ORC LLJIT: render, optimize
 * for the host, hand the module to the JIT, look up the entry. The runtime ABI (kiln_rt_*)
 * is bound by address; everything else (libm) resolves against the running process. */
#include "llvm_impl.h"

#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <stdint.h>
#include <string.h>

struct kiln_llvm_jit {
  const kiln_allocator *alloc;
  LLVMOrcLLJITRef lljit;
  /* What the session reported on its own (e.g. "Symbols not found: [ erff ]"): the
   * lookup error itself only says which definitions failed. */
  char session_errors[512];
};

static void report_session_error(void *ctx, LLVMErrorRef err) {
  kiln_llvm_jit *h = ctx;
  char *msg = LLVMGetErrorMessage(err);
  size_t n = strlen(h->session_errors);
  if (n + 2 < sizeof h->session_errors)
    snprintf(h->session_errors + n, sizeof h->session_errors - n, "%s%s", n ? "; " : "", msg);
  LLVMDisposeErrorMessage(msg);
}

#define KILN_JIT_ENTRY "kiln_main"

static kiln_status create_lljit(kiln_llvm_jit *h, LLVMOrcLLJITRef *out, kiln_diag *d) {
  *out = NULL;
  /* The JIT's code generator uses the same host CPU and features the module was
   * optimized for (detectHost would too, but this states it). */
  LLVMTargetMachineRef tm;
  if (kiln_llvm_host_machine(LLVMRelocDefault, LLVMCodeModelJITDefault, &tm, d) != KILN_OK) return d->status;
  LLVMOrcLLJITBuilderRef bld = LLVMOrcCreateLLJITBuilder();
  LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(bld, LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(tm));
  LLVMOrcLLJITRef j;
  LLVMErrorRef err = LLVMOrcCreateLLJIT(&j, bld); /* consumes bld, even on error */
  if (err) return kiln_llvm_fail(d, "creating the JIT", err, NULL);
  LLVMOrcExecutionSessionSetErrorReporter(LLVMOrcLLJITGetExecutionSession(j), report_session_error, h);
  LLVMOrcDefinitionGeneratorRef gen;
  err = LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(&gen, LLVMOrcLLJITGetGlobalPrefix(j), NULL, NULL);
  if (err) {
    kiln_llvm_fail(d, "process symbol generator", err, NULL);
    LLVMConsumeError(LLVMOrcDisposeLLJIT(j));
    return d->status;
  }
  LLVMOrcJITDylibRef jd = LLVMOrcLLJITGetMainJITDylib(j);
  LLVMOrcJITDylibAddGenerator(jd, gen); /* the dylib owns gen */
  /* The runtime ABI by address: a static link keeps only what the program references, so
   * the process may export no kiln_rt_gemm for the generator to find. Naming them here
   * links them in and binds the JIT to exactly this runtime. */
  struct { const char *name; void (*fn)(void); } rt[] = {
      {"kiln_rt_parallel_for", (void (*)(void))kiln_rt_parallel_for},
      {"kiln_rt_gemm", (void (*)(void))kiln_rt_gemm},
      {"kiln_rt_opaque", (void (*)(void))kiln_rt_opaque},
  };
  LLVMOrcCSymbolMapPair syms[sizeof rt / sizeof rt[0]];
  for (size_t i = 0; i < sizeof rt / sizeof rt[0]; i++) {
    syms[i].Name = LLVMOrcLLJITMangleAndIntern(j, rt[i].name);
    syms[i].Sym.Address = (LLVMOrcExecutorAddress)(uintptr_t)rt[i].fn;
    syms[i].Sym.Flags.GenericFlags = LLVMJITSymbolGenericFlagsExported | LLVMJITSymbolGenericFlagsCallable;
    syms[i].Sym.Flags.TargetFlags = 0;
  }
  LLVMOrcMaterializationUnitRef mu = LLVMOrcAbsoluteSymbols(syms, sizeof rt / sizeof rt[0]);
  err = LLVMOrcJITDylibDefine(jd, mu);
  if (err) {
    LLVMOrcDisposeMaterializationUnit(mu);
    kiln_llvm_fail(d, "defining the runtime symbols", err, NULL);
    LLVMConsumeError(LLVMOrcDisposeLLJIT(j));
    return d->status;
  }
  *out = j;
  return KILN_OK;
}

kiln_status kiln_llvm_jit_compile(const kiln_kprogram *p, kiln_llvm_jit **jit, kiln_rt_entry_fn *entry,
                                  kiln_diag *d) {
  *jit = NULL;
  *entry = NULL;
  kiln_llvm_jit *h = kiln_ir_malloc(p->alloc, sizeof *h);
  if (!h) return kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory creating the JIT");
  memset(h, 0, sizeof *h);
  h->alloc = p->alloc;
  LLVMTargetMachineRef tm;
  if (kiln_llvm_host_machine(LLVMRelocDefault, LLVMCodeModelJITDefault, &tm, d) != KILN_OK) {
    kiln_ir_free(p->alloc, h);
    return d->status;
  }
  LLVMOrcThreadSafeContextRef tsc = LLVMOrcCreateNewThreadSafeContext();
  LLVMModuleRef m = NULL;
  kiln_llvm_render_options o = {.entry_name = KILN_JIT_ENTRY};
  kiln_status st = kiln_llvm_render(p, LLVMOrcThreadSafeContextGetContext(tsc), &o, &m, d);
  if (st == KILN_OK) st = kiln_llvm_optimize(m, tm, d);
  LLVMDisposeTargetMachine(tm);
  if (st == KILN_OK) st = create_lljit(h, &h->lljit, d);
  if (st != KILN_OK) {
    /* The module never reached the JIT: it is ours to dispose. */
    if (m) LLVMDisposeModule(m);
    LLVMOrcDisposeThreadSafeContext(tsc);
    kiln_ir_free(p->alloc, h);
    return st;
  }
  LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(m, tsc); /* owns m */
  LLVMOrcDisposeThreadSafeContext(tsc); /* tsm keeps the context alive */
  /* From here the JIT owns the module: the C API consumes tsm even when it fails. */
  LLVMErrorRef err = LLVMOrcLLJITAddLLVMIRModule(h->lljit, LLVMOrcLLJITGetMainJITDylib(h->lljit), tsm);
  LLVMOrcExecutorAddress addr = 0;
  if (!err) err = LLVMOrcLLJITLookup(h->lljit, &addr, KILN_JIT_ENTRY); /* compiles and links */
  if (err || !addr) {
    kiln_llvm_fail(d, "JIT compilation", err, NULL);
    if (h->session_errors[0]) kiln_diag_append(d, " (%s)", h->session_errors);
    kiln_llvm_jit_destroy(h);
    return d->status;
  }
  *jit = h;
  *entry = (kiln_rt_entry_fn)(uintptr_t)addr;
  return KILN_OK;
}

void kiln_llvm_jit_destroy(kiln_llvm_jit *jit) {
  if (!jit) return;
  LLVMConsumeError(LLVMOrcDisposeLLJIT(jit->lljit));
  kiln_ir_free(jit->alloc, jit);
}
