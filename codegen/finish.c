/* finish.c - the renderer's second half, after O3 (kiln_llvm_finish): what render.c marks
 * in the module for it, and only that: calls of the scalef declarations become the
 * AVX-512 intrinsic of their width, the vector stores of streaming kernel variants
 * (KILN_LLVM_ATTR_STREAM) become non-temporal, and the vector loads of prefetched
 * buffers (KILN_LLVM_MD_PREFETCH, whose operand is the distance) get their prefetches.
 * These must follow LLVM's vectorizer: each is per vector, not per scalar. The marks
 * come from the kernels' schedules (passes/schedule.c). */
#include "llvm_impl.h"

#include <string.h>

/* The pointer a load or store goes through, with its GEPs stripped: the base pointer. */
static LLVMValueRef base_of(LLVMValueRef ptr) {
  while (LLVMIsAGetElementPtrInst(ptr)) ptr = LLVMGetOperand(ptr, 0);
  return ptr;
}

/* Whether function f carries string attribute name. */
static bool has_fn_attr(LLVMValueRef f, const char *name) {
  return LLVMGetStringAttributeAtIndex(f, LLVMAttributeFunctionIndex, name, (unsigned)strlen(name)) != NULL;
}

/* The streaming variants of kernels (functions with KILN_LLVM_ATTR_STREAM, render.c):
 * after O3, their vector stores through the output pointer (the one load of a buffer
 * pointer that carries !align) become non-temporal. Marked here because the loop
 * vectorizer does not widen a non-temporal scalar store whose alignment it cannot prove
 * for the vector. */
static void mark_streaming_stores(LLVMModuleRef m) {
  LLVMContextRef ctx = LLVMGetModuleContext(m);
  unsigned align_kind = LLVMGetMDKindIDInContext(ctx, "align", 5);
  unsigned nt_kind = LLVMGetMDKindIDInContext(ctx, "nontemporal", 11);
  LLVMMetadataRef one = LLVMValueAsMetadata(LLVMConstInt(LLVMInt32TypeInContext(ctx), 1, 0));
  LLVMValueRef nt = LLVMMetadataAsValue(ctx, LLVMMDNodeInContext2(ctx, &one, 1));
  for (LLVMValueRef f = LLVMGetFirstFunction(m); f; f = LLVMGetNextFunction(f)) {
    if (!has_fn_attr(f, KILN_LLVM_ATTR_STREAM)) continue;
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

/* The distance a prefetch mark on base pointer load `base` carries (its one operand). */
static int64_t prefetch_distance(LLVMValueRef base, unsigned pf_kind) {
  LLVMValueRef md = LLVMGetMetadata(base, pf_kind), op = NULL;
  if (!md || LLVMGetMDNodeNumOperands(md) != 1) return 0;
  LLVMGetMDNodeOperands(md, &op);
  return op && LLVMIsAConstantInt(op) ? LLVMConstIntGetSExtValue(op) : 0;
}

/* After each vector load through a base pointer marked KILN_LLVM_MD_PREFETCH (render.c,
 * from the kernel's schedule), a prefetch of the byte the mark's distance past its
 * address. Done after O3 so
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
        LLVMValueRef ahead = LLVMConstInt(i64, (unsigned long long)prefetch_distance(best[at].base, pf_kind), 0);
        LLVMValueRef args[4] = {LLVMBuildGEP2(b, i8, LLVMGetOperand(i, 0), &ahead, 1, ""), LLVMConstInt(i32, 0, 0),
                                LLVMConstInt(i32, 3, 0), LLVMConstInt(i32, 1, 0)};
        LLVMBuildCall2(b, pf_ty, pf, args, 4, "");
        i = LLVMGetPreviousInstruction(next); /* the call just added */
      }
  }
  LLVMDisposeBuilder(b);
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


void kiln_llvm_finish(LLVMModuleRef m) {
  lower_scalef(m);
  mark_streaming_stores(m);
  add_prefetches(m);
}
