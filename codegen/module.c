/* module.c - from a kernel program to an optimized module: render (render.c), O3 for the
 * target machine (target.c makes it), then the renderer's post-O3 half (finish.c); and
 * the module's text for kiln dump --llvm. JIT and AOT go through kiln_llvm_optimize. */
#include "llvm_impl.h"

#include <llvm-c/Transforms/PassBuilder.h>
#include <stdio.h>

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
  kiln_llvm_finish(m);
  return KILN_OK;
}

kiln_status kiln_llvm_print_module(const kiln_kprogram *p, FILE *f, kiln_diag *d) {
  LLVMTargetMachineRef tm;
  if (kiln_llvm_host_machine(LLVMRelocDefault, LLVMCodeModelDefault, &tm, d) != KILN_OK) return d->status;
  LLVMContextRef ctx = LLVMContextCreate();
  LLVMModuleRef m = NULL;
  kiln_llvm_render_options o = {.entry_name = "kiln_main"};
  kiln_llvm_target_features(tm, &o);
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

