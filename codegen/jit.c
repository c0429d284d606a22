/* jit.c - in-process compilation of a kernel program with ORC LLJIT, in steps: render the
 * module for the host (kiln_llvm_jit_render), optionally fingerprint it for the compile
 * cache (kiln_llvm_jit_module_fingerprint), optimize it and emit an object in memory
 * (kiln_llvm_jit_module_object), then load an object into an LLJIT and look up the entry
 * (kiln_llvm_jit_load_object). exec.c runs the steps with the cache between them, so a
 * miss renders once and a hit skips optimization and code generation. The runtime ABI
 * (kiln_rt_*) is bound by address; everything else (libm) resolves against the running
 * process. */
#include "llvm_impl.h"

#include <llvm-c/BitWriter.h>
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

static kiln_status create_lljit(kiln_llvm_jit *h, LLVMOrcLLJITRef *out, kiln_diag *d) {
  *out = NULL;
  /* Only objects are added, so the JIT's own code generator never runs; its target
   * machine still describes the host the objects were made for (detectHost would too,
   * but this states it). */
  LLVMTargetMachineRef tm;
  if (kiln_llvm_host_machine(KILN_LLVM_JIT_RELOC, KILN_LLVM_JIT_CODE_MODEL, &tm, d) != KILN_OK) return d->status;
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
      {"kiln_rt_gemm_fused", (void (*)(void))kiln_rt_gemm_fused},
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

kiln_status kiln_llvm_jit_render(const kiln_kprogram *p, kiln_llvm_jit_module *jm, kiln_diag *d) {
  memset(jm, 0, sizeof *jm);
  jm->alloc = p->alloc;
  if (kiln_llvm_host_machine(KILN_LLVM_JIT_RELOC, KILN_LLVM_JIT_CODE_MODEL, &jm->tm, d) != KILN_OK) return d->status;
  jm->ctx = LLVMContextCreate();
  kiln_llvm_render_options o = {.entry_name = KILN_LLVM_JIT_ENTRY, .step_name = KILN_LLVM_JIT_STEP};
  kiln_llvm_target_features(jm->tm, &o);
  kiln_status st = kiln_llvm_render(p, jm->ctx, &o, &jm->m, d);
  if (st == KILN_OK) {
    /* The module's name is the graph's; it reaches the object only as a file symbol, so
     * the same program under another graph name may share the cache entry. */
    LLVMSetModuleIdentifier(jm->m, "kiln", 4);
    LLVMSetSourceFileName(jm->m, "kiln", 4);
  }
  return st;
}

void kiln_llvm_jit_module_dispose(kiln_llvm_jit_module *jm) {
  if (jm->m) LLVMDisposeModule(jm->m);
  if (jm->ctx) LLVMContextDispose(jm->ctx);
  if (jm->tm) LLVMDisposeTargetMachine(jm->tm);
  memset(jm, 0, sizeof *jm);
}

kiln_status kiln_llvm_jit_module_object(kiln_llvm_jit_module *jm, void **obj, size_t *n, kiln_diag *d) {
  *obj = NULL;
  *n = 0;
  kiln_status st = kiln_llvm_optimize(jm->m, jm->tm, d);
  LLVMMemoryBufferRef mb = NULL;
  if (st == KILN_OK) {
    char *err = NULL;
    /* The same code generation LLJIT's IR layer would run (same target machine), only
     * its result is kept as bytes so the compile cache can store it. */
    if (LLVMTargetMachineEmitToMemoryBuffer(jm->tm, jm->m, LLVMObjectFile, &err, &mb)) {
      st = kiln_diag_set(d, KILN_ERR_BACKEND, "LLVM: emitting the JIT object: %s", err ? err : "failed");
      mb = NULL;
    }
    LLVMDisposeMessage(err);
  }
  if (st == KILN_OK) {
    size_t sz = LLVMGetBufferSize(mb);
    void *bytes = kiln_ir_malloc(jm->alloc, sz ? sz : 1);
    if (!bytes) {
      st = kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory for a %zu-byte object", sz);
    } else {
      memcpy(bytes, LLVMGetBufferStart(mb), sz);
      *obj = bytes;
      *n = sz;
    }
  }
  if (mb) LLVMDisposeMemoryBuffer(mb);
  return st;
}

kiln_status kiln_llvm_jit_load_object(const kiln_allocator *a, const void *obj, size_t n, const char *entry_name,
                                      kiln_llvm_jit **jit, kiln_rt_entry_fn *entry, kiln_diag *d) {
  *jit = NULL;
  *entry = NULL;
  if (!a) a = kiln_ir_default_allocator();
  kiln_llvm_jit *h = kiln_ir_malloc(a, sizeof *h);
  if (!h) return kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory creating the JIT");
  memset(h, 0, sizeof *h);
  h->alloc = a;
  if (create_lljit(h, &h->lljit, d) != KILN_OK) {
    kiln_ir_free(a, h);
    return d->status;
  }
  /* A copy: the JIT may keep the buffer after the caller frees obj. */
  LLVMMemoryBufferRef mb = LLVMCreateMemoryBufferWithMemoryRangeCopy(obj, n, "kiln-jit-object");
  /* Consumes mb, even on error. Linking happens at the lookup. */
  LLVMErrorRef err = LLVMOrcLLJITAddObjectFile(h->lljit, LLVMOrcLLJITGetMainJITDylib(h->lljit), mb);
  LLVMOrcExecutorAddress addr = 0;
  if (!err) err = LLVMOrcLLJITLookup(h->lljit, &addr, entry_name);
  if (err || !addr) {
    kiln_llvm_fail(d, "loading the JIT object", err, NULL);
    if (h->session_errors[0]) kiln_diag_append(d, " (%s)", h->session_errors);
    kiln_llvm_jit_destroy(h);
    return d->status;
  }
  *jit = h;
  *entry = (kiln_rt_entry_fn)(uintptr_t)addr;
  return KILN_OK;
}

/* One path for JIT code, cached or not: the object the cache would store is exactly what
 * gets loaded here. */
kiln_status kiln_llvm_jit_compile(const kiln_kprogram *p, kiln_llvm_jit **jit, kiln_rt_entry_fn *entry,
                                  kiln_diag *d) {
  *jit = NULL;
  *entry = NULL;
  void *obj = NULL;
  size_t n = 0;
  kiln_llvm_jit_module jm;
  kiln_status st = kiln_llvm_jit_render(p, &jm, d);
  if (st == KILN_OK) st = kiln_llvm_jit_module_object(&jm, &obj, &n, d);
  kiln_llvm_jit_module_dispose(&jm);
  if (st == KILN_OK) st = kiln_llvm_jit_load_object(p->alloc, obj, n, KILN_LLVM_JIT_ENTRY, jit, entry, d);
  kiln_ir_free(p->alloc, obj);
  return st;
}

kiln_status kiln_llvm_jit_module_fingerprint(const kiln_llvm_jit_module *jm, void **data, size_t *n, kiln_diag *d) {
  *data = NULL;
  *n = 0;
  LLVMTargetMachineRef tm = jm->tm;
  kiln_status st = KILN_OK;
  LLVMMemoryBufferRef bc = LLVMWriteBitcodeToMemoryBuffer(jm->m);
  if (!bc) st = kiln_diag_set(d, KILN_ERR_BACKEND, "LLVM: cannot write the module's bitcode");
  if (st == KILN_OK) {
    /* Everything the object depends on besides the module itself: what the target
     * machine was built from and how code is generated. Length-prefixed, so no two
     * different field lists give the same bytes. */
    char *triple = LLVMGetTargetMachineTriple(tm), *cpu = LLVMGetTargetMachineCPU(tm);
    char *features = LLVMGetTargetMachineFeatureString(tm);
    char settings[96];
    snprintf(settings, sizeof settings, "jit-object v6 reloc %d cm %d opt %d O3+vec", (int)KILN_LLVM_JIT_RELOC,
             (int)KILN_LLVM_JIT_CODE_MODEL, (int)LLVMCodeGenLevelAggressive);
    const char *fields[] = {kiln_llvm_version(), triple, cpu, features, settings, KILN_LLVM_JIT_ENTRY,
                            KILN_LLVM_JIT_STEP};
    size_t nf = sizeof fields / sizeof fields[0], total = 0;
    for (size_t i = 0; i < nf; i++) total += 8 + strlen(fields[i]);
    size_t bcn = LLVMGetBufferSize(bc);
    total += 8 + bcn;
    unsigned char *out = kiln_ir_malloc(jm->alloc, total);
    if (!out) {
      st = kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory for the cache key");
    } else {
      size_t o = 0;
      for (size_t i = 0; i <= nf; i++) {
        const void *src = i < nf ? (const void *)fields[i] : (const void *)LLVMGetBufferStart(bc);
        uint64_t len = i < nf ? strlen(fields[i]) : bcn;
        for (int b = 0; b < 8; b++) out[o++] = (unsigned char)(len >> (8 * b));
        memcpy(out + o, src, (size_t)len);
        o += (size_t)len;
      }
      *data = out;
      *n = total;
    }
    LLVMDisposeMessage(triple);
    LLVMDisposeMessage(cpu);
    LLVMDisposeMessage(features);
  }
  if (bc) LLVMDisposeMemoryBuffer(bc);
  return st;
}

kiln_status kiln_llvm_jit_lookup_step(kiln_llvm_jit *jit, kiln_llvm_step_fn *step, kiln_diag *d) {
  *step = NULL;
  if (!jit) return kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT, "kiln_llvm_jit_lookup_step: no JIT");
  LLVMOrcExecutorAddress addr = 0;
  LLVMErrorRef err = LLVMOrcLLJITLookup(jit->lljit, &addr, KILN_LLVM_JIT_STEP);
  if (err || !addr) return kiln_llvm_fail(d, "looking up the step function", err, NULL);
  *step = (kiln_llvm_step_fn)(uintptr_t)addr;
  return KILN_OK;
}

void kiln_llvm_jit_destroy(kiln_llvm_jit *jit) {
  if (!jit) return;
  LLVMConsumeError(LLVMOrcDisposeLLJIT(jit->lljit));
  kiln_ir_free(jit->alloc, jit);
}
