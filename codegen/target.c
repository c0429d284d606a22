/* target.c - the host target machine and the O3 pipeline shared by JIT, AOT and the
 * module printer; LLVM error reporting into a kiln_diag; the version string. */
#include "llvm_impl.h"

#include <llvm-c/Transforms/PassBuilder.h>
#include <string.h>

void kiln_llvm_diag_module(kiln_diag *d, LLVMModuleRef m) {
  if (!d || !m) return;
  char *text = LLVMPrintModuleToString(m);
  size_t used = strlen(d->msg), room = sizeof d->msg - used;
  /* Keep the verifier's message; the module text gets whatever room is left. */
  if (room > 32) kiln_diag_append(d, "\n--- module ---\n%.*s", (int)(room - 32), text ? text : "");
  LLVMDisposeMessage(text);
}

kiln_status kiln_llvm_fail(kiln_diag *d, const char *what, LLVMErrorRef err, LLVMModuleRef m) {
  char *msg = err ? LLVMGetErrorMessage(err) : NULL;
  kiln_status st = kiln_diag_set(d, KILN_ERR_BACKEND, "LLVM: %s: %s", what, msg ? msg : "failed");
  if (msg) LLVMDisposeErrorMessage(msg);
  kiln_llvm_diag_module(d, m);
  return st;
}

kiln_status kiln_llvm_host_machine(LLVMRelocMode reloc, LLVMCodeModel cm, LLVMTargetMachineRef *tm,
                                   kiln_diag *d) {
  *tm = NULL;
  /* Idempotent in LLVM; called per compile so Kiln keeps no "initialized" global. */
  if (LLVMInitializeNativeTarget() || LLVMInitializeNativeAsmPrinter())
    return kiln_diag_set(d, KILN_ERR_BACKEND, "LLVM: the native target is not available");
  char *triple = LLVMGetDefaultTargetTriple();
  char *cpu = LLVMGetHostCPUName();
  char *features = LLVMGetHostCPUFeatures();
  LLVMTargetRef target = NULL;
  char *err = NULL;
  kiln_status st = KILN_OK;
  if (LLVMGetTargetFromTriple(triple, &target, &err)) {
    st = kiln_diag_set(d, KILN_ERR_BACKEND, "LLVM: no target for %s: %s", triple, err ? err : "");
  } else {
    *tm = LLVMCreateTargetMachine(target, triple, cpu, features, LLVMCodeGenLevelAggressive, reloc, cm);
    if (!*tm) st = kiln_diag_set(d, KILN_ERR_BACKEND, "LLVM: cannot create a target machine for %s (%s)", triple, cpu);
  }
  LLVMDisposeMessage(err);
  LLVMDisposeMessage(triple);
  LLVMDisposeMessage(cpu);
  LLVMDisposeMessage(features);
  return st;
}

kiln_status kiln_llvm_optimize(LLVMModuleRef m, LLVMTargetMachineRef tm, kiln_diag *d) {
  char *triple = LLVMGetTargetMachineTriple(tm);
  LLVMSetTarget(m, triple);
  LLVMDisposeMessage(triple);
  LLVMTargetDataRef dl = LLVMCreateTargetDataLayout(tm);
  LLVMSetModuleDataLayout(m, dl);
  LLVMDisposeTargetData(dl);
  LLVMPassBuilderOptionsRef po = LLVMCreatePassBuilderOptions();
  LLVMPassBuilderOptionsSetLoopVectorization(po, 1);
  LLVMPassBuilderOptionsSetSLPVectorization(po, 1);
  LLVMErrorRef err = LLVMRunPasses(m, "default<O3>", tm, po);
  LLVMDisposePassBuilderOptions(po);
  if (err) return kiln_llvm_fail(d, "optimizing the module", err, m);
  return KILN_OK;
}

kiln_status kiln_llvm_print_module(const kiln_kprogram *p, FILE *f, kiln_diag *d) {
  LLVMTargetMachineRef tm;
  if (kiln_llvm_host_machine(LLVMRelocDefault, LLVMCodeModelDefault, &tm, d) != KILN_OK) return d->status;
  LLVMContextRef ctx = LLVMContextCreate();
  LLVMModuleRef m = NULL;
  kiln_llvm_render_options o = {.entry_name = "kiln_main"};
  kiln_status st = kiln_llvm_render(p, ctx, &o, &m, d);
  if (st == KILN_OK) st = kiln_llvm_optimize(m, tm, d);
  if (st == KILN_OK) {
    char *text = LLVMPrintModuleToString(m);
    if (fputs(text, f) < 0) st = kiln_diag_set(d, KILN_ERR_IO, "cannot write the LLVM module text");
    LLVMDisposeMessage(text);
  }
  if (m) LLVMDisposeModule(m);
  LLVMContextDispose(ctx);
  LLVMDisposeTargetMachine(tm);
  return st;
}

const char *kiln_llvm_version(void) { return "LLVM " KILN_LLVM_VERSION; }
