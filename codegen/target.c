/* target.c - the target machine (the host's, or a named triple and CPU for AOT) and the
 * O3 pipeline shared by JIT, AOT and the module printer; LLVM error reporting into a
 * kiln_diag; the version string. */
#include "llvm_impl.h"

#include <llvm-c/Transforms/PassBuilder.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

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

/* Creates the target machine. LLVM's C API lists no CPU names and only prints "'x' is
 * not a recognized processor for this target (ignoring processor)" to stderr when it
 * meets an unknown one (while the machine is created, from its subtarget info). So for a
 * named CPU, stderr is redirected to a temporary file around the creation: that line
 * means the name is unknown; anything else captured is written back to stderr. The
 * window is short, but another thread's stderr output in it is delayed until after. */
static LLVMTargetMachineRef create_machine(LLVMTargetRef target, const char *triple, const char *cpu,
                                           const char *features, LLVMRelocMode reloc, LLVMCodeModel cm,
                                           bool check_cpu, bool *unknown_cpu) {
  *unknown_cpu = false;
  FILE *cap = check_cpu ? tmpfile() : NULL;
  int saved = -1;
  if (cap) {
    fflush(stderr);
    saved = dup(2);
    if (saved < 0 || dup2(fileno(cap), 2) < 0) {
      if (saved >= 0) close(saved);
      saved = -1;
    }
  }
  LLVMTargetMachineRef tm =
      LLVMCreateTargetMachine(target, triple, cpu, features, LLVMCodeGenLevelAggressive, reloc, cm);
  if (saved >= 0) {
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char buf[2048];
    rewind(cap);
    size_t n = fread(buf, 1, sizeof buf - 1, cap);
    buf[n] = 0;
    if (strstr(buf, "is not a recognized processor")) *unknown_cpu = true;
    else if (n) fputs(buf, stderr);
  }
  if (cap) fclose(cap);
  return tm;
}

kiln_status kiln_llvm_target_machine(const char *triple_name, const char *cpu_name, LLVMRelocMode reloc,
                                     LLVMCodeModel cm, LLVMTargetMachineRef *tm, kiln_diag *d) {
  *tm = NULL;
  if (triple_name && !*triple_name) triple_name = NULL;
  if (cpu_name && !*cpu_name) cpu_name = NULL;
  /* Idempotent in LLVM; called per compile so Kiln keeps no "initialized" global. */
  if (LLVMInitializeNativeTarget() || LLVMInitializeNativeAsmPrinter())
    return kiln_diag_set(d, KILN_ERR_BACKEND, "LLVM: the native target is not available");
  if (triple_name) {
    /* Another architecture: every target this LLVM was built with. */
    LLVMInitializeAllTargetInfos();
    LLVMInitializeAllTargets();
    LLVMInitializeAllTargetMCs();
    LLVMInitializeAllAsmPrinters();
  }
  char *host_triple = LLVMGetDefaultTargetTriple();
  char *triple = triple_name ? LLVMNormalizeTargetTriple(triple_name) : host_triple;
  /* The host's features belong to the host CPU only; a named CPU brings its own. */
  bool host_cpu = !cpu_name && !triple_name;
  char *cpu = cpu_name ? NULL : host_cpu ? LLVMGetHostCPUName() : NULL;
  char *features = host_cpu ? LLVMGetHostCPUFeatures() : NULL;
  LLVMTargetRef target = NULL;
  char *err = NULL;
  kiln_status st = KILN_OK;
  if (LLVMGetTargetFromTriple(triple, &target, &err)) {
    st = triple_name ? kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT, "unknown target triple '%s': %s", triple_name,
                                     err ? err : "")
                     : kiln_diag_set(d, KILN_ERR_BACKEND, "LLVM: no target for %s: %s", triple, err ? err : "");
  } else {
    bool unknown = false;
    const char *use_cpu = cpu_name ? cpu_name : cpu ? cpu : "";
    *tm = create_machine(target, triple, use_cpu, features ? features : "", reloc, cm, cpu_name != NULL, &unknown);
    if (unknown) {
      LLVMDisposeTargetMachine(*tm);
      *tm = NULL;
      st = kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT, "unknown CPU '%s' for target %s (LLVM %s)", cpu_name, triple,
                         KILN_LLVM_VERSION);
    } else if (!*tm) {
      st = kiln_diag_set(d, KILN_ERR_BACKEND, "LLVM: cannot create a target machine for %s (%s)", triple, use_cpu);
    }
  }
  LLVMDisposeMessage(err);
  if (triple != host_triple) LLVMDisposeMessage(triple);
  LLVMDisposeMessage(host_triple);
  LLVMDisposeMessage(cpu);
  LLVMDisposeMessage(features);
  return st;
}

kiln_status kiln_llvm_host_machine(LLVMRelocMode reloc, LLVMCodeModel cm, LLVMTargetMachineRef *tm,
                                   kiln_diag *d) {
  return kiln_llvm_target_machine(NULL, NULL, reloc, cm, tm, d);
}

/* The pointer a load or store goes through, with its GEPs stripped: the base pointer. */
static LLVMValueRef base_of(LLVMValueRef ptr) {
  while (LLVMIsAGetElementPtrInst(ptr)) ptr = LLVMGetOperand(ptr, 0);
  return ptr;
}

/* The streaming variants of kernels (render.c, "_stream" functions): after O3, their
 * vector stores through the output pointer (the one load of a buffer pointer that carries
 * !align) become non-temporal. Marked here because the loop vectorizer does not widen a
 * non-temporal scalar store whose alignment it cannot prove for the vector. */
static void mark_streaming_stores(LLVMModuleRef m) {
  LLVMContextRef ctx = LLVMGetModuleContext(m);
  unsigned align_kind = LLVMGetMDKindIDInContext(ctx, "align", 5);
  unsigned nt_kind = LLVMGetMDKindIDInContext(ctx, "nontemporal", 11);
  LLVMMetadataRef one = LLVMValueAsMetadata(LLVMConstInt(LLVMInt32TypeInContext(ctx), 1, 0));
  LLVMValueRef nt = LLVMMetadataAsValue(ctx, LLVMMDNodeInContext2(ctx, &one, 1));
  for (LLVMValueRef f = LLVMGetFirstFunction(m); f; f = LLVMGetNextFunction(f)) {
    size_t n;
    const char *name = LLVMGetValueName2(f, &n);
    if (n < 7 || strcmp(name + n - 7, "_stream") != 0) continue;
    for (LLVMBasicBlockRef bb = LLVMGetFirstBasicBlock(f); bb; bb = LLVMGetNextBasicBlock(bb))
      for (LLVMValueRef i = LLVMGetFirstInstruction(bb); i; i = LLVMGetNextInstruction(i)) {
        if (!LLVMIsAStoreInst(i) || LLVMGetTypeKind(LLVMTypeOf(LLVMGetOperand(i, 0))) != LLVMVectorTypeKind) continue;
        LLVMValueRef ptr = base_of(LLVMGetOperand(i, 1));
        if (LLVMIsALoadInst(ptr) && LLVMGetMetadata(ptr, align_kind)) LLVMSetMetadata(i, nt_kind, nt);
      }
  }
}

/* The marked base pointer (KILN_LLVM_MD_PREFETCH, render.c) vector load i reads
 * through, or NULL. */
static LLVMValueRef prefetch_base(LLVMValueRef i, unsigned pf_kind) {
  if (!LLVMIsALoadInst(i) || LLVMGetTypeKind(LLVMTypeOf(i)) != LLVMVectorTypeKind) return NULL;
  LLVMValueRef root = base_of(LLVMGetOperand(i, 0));
  return LLVMIsALoadInst(root) && LLVMGetMetadata(root, pf_kind) ? root : NULL;
}

/* After each vector load through a base pointer marked KILN_LLVM_MD_PREFETCH (render.c),
 * a prefetch of the byte KILN_LLVM_PREFETCH_AHEAD past its address. Done after O3 so
 * that it is one prefetch per vector, where the vectorizer would have issued one per lane
 * of a prefetch in the scalar loop.
 *
 * A row that several passes read (softmax's max, exp-and-sum and output loops; a layer
 * norm's mean, variance and output loops) gets its prefetches in one block only, the one
 * doing the most work per load of that base: the prefetches then overlap the slowest pass,
 * and later passes find the row in the cache. Blocks that store to memory other than the
 * stack (an output pass, whose stores compete for the same bandwidth) are chosen only when
 * no other block reads the base. Measured on softmax [32768, 768], 2 threads: prefetching
 * in the max loop (the first to read the row) 8.3-9.0 ms, in the exp loop 6.0-6.7 ms;
 * layer norm the same either way, and 6.3-7.3 ms against 4.6-4.8 ms in its output loop. */
typedef struct pf_choice {
  LLVMValueRef base;
  LLVMBasicBlockRef bb;
  double work;   /* instructions per load of base in bb */
  bool stores;   /* bb stores to non-stack memory */
} pf_choice;

static void add_prefetches(LLVMModuleRef m) {
  LLVMContextRef ctx = LLVMGetModuleContext(m);
  unsigned pf_kind = LLVMGetMDKindIDInContext(ctx, KILN_LLVM_MD_PREFETCH, strlen(KILN_LLVM_MD_PREFETCH));
  LLVMTypeRef ptr_t = LLVMPointerTypeInContext(ctx, 0), i8 = LLVMInt8TypeInContext(ctx);
  LLVMTypeRef i32 = LLVMInt32TypeInContext(ctx), i64 = LLVMInt64TypeInContext(ctx);
  unsigned id = LLVMLookupIntrinsicID("llvm.prefetch", 13);
  LLVMValueRef pf = NULL;
  LLVMTypeRef pf_ty = LLVMIntrinsicGetType(ctx, id, &ptr_t, 1);
  LLVMBuilderRef b = LLVMCreateBuilderInContext(ctx);
  enum { MAX_BASES = 64 };
  for (LLVMValueRef f = LLVMGetFirstFunction(m); f; f = LLVMGetNextFunction(f)) {
    pf_choice best[MAX_BASES];
    int n_base = 0;
    for (LLVMBasicBlockRef bb = LLVMGetFirstBasicBlock(f); bb; bb = LLVMGetNextBasicBlock(bb)) {
      int n_inst = 0, n_loads[MAX_BASES] = {0};
      bool stores = false;
      for (LLVMValueRef i = LLVMGetFirstInstruction(bb); i; i = LLVMGetNextInstruction(i)) {
        n_inst++;
        if (LLVMIsAStoreInst(i) && !LLVMIsAAllocaInst(base_of(LLVMGetOperand(i, 1)))) stores = true;
        LLVMValueRef root = prefetch_base(i, pf_kind);
        if (!root) continue;
        int at = 0;
        while (at < n_base && best[at].base != root) at++;
        if (at == n_base) {
          if (n_base == MAX_BASES) continue;
          best[n_base++] = (pf_choice){.base = root};
        }
        n_loads[at]++;
      }
      for (int at = 0; at < n_base; at++) {
        if (!n_loads[at]) continue;
        double work = (double)n_inst / n_loads[at];
        pf_choice *c = &best[at];
        bool better = !c->bb || (c->stores && !stores) || (c->stores == stores && work > c->work);
        if (better) c->bb = bb, c->work = work, c->stores = stores;
      }
    }
    for (int at = 0; at < n_base; at++)
      for (LLVMValueRef i = LLVMGetFirstInstruction(best[at].bb); i; i = LLVMGetNextInstruction(i)) {
        if (prefetch_base(i, pf_kind) != best[at].base) continue;
        if (!pf) pf = LLVMGetIntrinsicDeclaration(m, id, &ptr_t, 1);
        LLVMValueRef next = LLVMGetNextInstruction(i);
        LLVMPositionBuilderBefore(b, next);
        LLVMValueRef ahead = LLVMConstInt(i64, KILN_LLVM_PREFETCH_AHEAD, 0);
        LLVMValueRef args[4] = {LLVMBuildGEP2(b, i8, LLVMGetOperand(i, 0), &ahead, 1, ""), LLVMConstInt(i32, 0, 0),
                                LLVMConstInt(i32, 3, 0), LLVMConstInt(i32, 1, 0)};
        LLVMBuildCall2(b, pf_ty, pf, args, 4, "");
        i = LLVMGetPreviousInstruction(next); /* the call just added */
      }
  }
  LLVMDisposeBuilder(b);
}

void kiln_llvm_target_features(LLVMTargetMachineRef tm, kiln_llvm_render_options *o) {
  char *triple = LLVMGetTargetMachineTriple(tm), *features = LLVMGetTargetMachineFeatureString(tm);
  bool x86 = strncmp(triple, "x86_64", 6) == 0;
  o->avx512f = x86 && strstr(features, "+avx512f") != NULL;
  o->avx512vl = x86 && strstr(features, "+avx512vl") != NULL;
  LLVMDisposeMessage(triple);
  LLVMDisposeMessage(features);
}

/* Every call to the scalef declarations (scalar.c scalef_f32) becomes the AVX-512
 * intrinsic of its width, all lanes on, rounding as the current mode; then the
 * declarations go. The scalar one is a vscalefss on lane 0 of a 4-lane vector. */
static void lower_scalef(LLVMModuleRef m) {
  LLVMContextRef ctx = LLVMGetModuleContext(m);
  LLVMTypeRef f32 = LLVMFloatTypeInContext(ctx), i8 = LLVMInt8TypeInContext(ctx);
  LLVMTypeRef i16 = LLVMInt16TypeInContext(ctx), i32 = LLVMInt32TypeInContext(ctx);
  static const struct { const char *fn, *intrinsic; unsigned lanes; } map[] = {
      {KILN_LLVM_SCALEF, "llvm.x86.avx512.mask.scalef.ss", 1},
      {KILN_LLVM_SCALEF_V16, "llvm.x86.avx512.mask.scalef.ps.512", 16},
      {KILN_LLVM_SCALEF_V8, "llvm.x86.avx512.mask.scalef.ps.256", 8},
      {KILN_LLVM_SCALEF_V4, "llvm.x86.avx512.mask.scalef.ps.128", 4},
  };
  LLVMBuilderRef b = LLVMCreateBuilderInContext(ctx);
  for (size_t k = 0; k < sizeof map / sizeof map[0]; k++) {
    LLVMValueRef fn = LLVMGetNamedFunction(m, map[k].fn);
    if (!fn) continue;
    unsigned id = LLVMLookupIntrinsicID(map[k].intrinsic, strlen(map[k].intrinsic));
    LLVMValueRef intr = NULL;
    LLVMTypeRef it = LLVMIntrinsicGetType(ctx, id, NULL, 0);
    bool scalar = map[k].lanes == 1;
    LLVMTypeRef vt = LLVMVectorType(f32, scalar ? 4 : map[k].lanes);
    for (LLVMUseRef u = LLVMGetFirstUse(fn), next; u; u = next) {
      next = LLVMGetNextUse(u);
      LLVMValueRef call = LLVMGetUser(u);
      if (!LLVMIsACallInst(call)) continue; /* the llvm.compiler.used array */
      if (!intr) intr = LLVMGetIntrinsicDeclaration(m, id, NULL, 0);
      LLVMPositionBuilderBefore(b, call);
      LLVMValueRef p = LLVMGetOperand(call, 0), n = LLVMGetOperand(call, 1);
      if (scalar) {
        LLVMValueRef zero = LLVMConstInt(i32, 0, 0);
        p = LLVMBuildInsertElement(b, LLVMGetPoison(vt), p, zero, "");
        n = LLVMBuildInsertElement(b, LLVMGetPoison(vt), n, zero, "");
      }
      /* (a, b, passthrough, mask[, rounding 4: the current mode]); the 512-bit and
       * scalar forms take the rounding argument */
      LLVMValueRef args[5] = {p, n, LLVMConstNull(vt), LLVMConstInt(map[k].lanes == 16 ? i16 : i8, (unsigned long long)-1, 1),
                              LLVMConstInt(i32, 4, 0)};
      unsigned n_args = map[k].lanes == 16 || scalar ? 5 : 4;
      LLVMValueRef v = LLVMBuildCall2(b, it, intr, args, n_args, "");
      if (scalar) v = LLVMBuildExtractElement(b, v, LLVMConstInt(i32, 0, 0), "");
      LLVMReplaceAllUsesWith(call, v);
      LLVMInstructionEraseFromParent(call);
    }
    LLVMReplaceAllUsesWith(fn, LLVMConstNull(LLVMTypeOf(fn)));
    LLVMDeleteFunction(fn);
  }
  LLVMDisposeBuilder(b);
  LLVMValueRef used = LLVMGetNamedGlobal(m, "llvm.compiler.used"); /* scalar.c's, for these alone */
  if (used) LLVMDeleteGlobal(used);
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
  lower_scalef(m);
  mark_streaming_stores(m);
  add_prefetches(m);
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

const char *kiln_llvm_version(void) { return "LLVM " KILN_LLVM_VERSION; }
