/* render.c - the LLVM renderer: turns a kernel program into one LLVM module. Each LOOP
 * kernel becomes an internal function over a chunk of output rows (the runtime ABI in
 * runtime/rt.h); GEMM and OPAQUE kernels become calls into the runtime with their
 * descriptors embedded as constant bytes; an entry function runs every kernel in order,
 * and (when asked) a step function runs one kernel by its number.
 * Every scalar op is mapped to LLVM IR in one place, scalar.c (kiln_llvm_alu).
 */
#include "llvm_impl.h"

#include <llvm-c/Analysis.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

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

typedef struct render {
  kiln_llvm_scalar s;     /* context, module, builder, types, target flags (scalar.c) */
  const kiln_kprogram *p;
  kiln_diag *d;
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
  const int32_t *row_cached; /* the schedule's: per kx, the REDUCE whose body computed it
                                for the row, or -1 (NULL: none) */
  LLVMValueRef *row_buf;  /* per REDUCE kx: its body's values for the row (a stack array) */
  const uint8_t *div_mode; /* the schedule's: per kx, a kiln_div_mode (NULL: all divide) */
  /* A second output stored beside the root, at the same element (sibling kernels run as
   * one: merge_siblings); extra_root < 0: none. */
  int32_t extra_root, extra_buf;
  kiln_dtype extra_dtype;
} render;

static LLVMValueRef ci64(render *r, int64_t v) { return kiln_llvm_ci64(&r->s, v); }

/* ------------------------------------------------------------------ loops */
typedef struct loop {
  LLVMBasicBlockRef header, exit;
  LLVMValueRef iv;
} loop;

/* for (iv = lo; iv < hi; iv++): leaves the builder in the body. */
static LLVMValueRef loop_begin(render *r, loop *l, LLVMValueRef lo, LLVMValueRef hi) {
  LLVMBasicBlockRef pre = LLVMGetInsertBlock(r->s.b);
  l->header = LLVMAppendBasicBlockInContext(r->s.ctx, r->fn, "loop");
  LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(r->s.ctx, r->fn, "body");
  l->exit = LLVMAppendBasicBlockInContext(r->s.ctx, r->fn, "exit");
  LLVMBuildBr(r->s.b, l->header);
  LLVMPositionBuilderAtEnd(r->s.b, l->header);
  l->iv = LLVMBuildPhi(r->s.b, r->s.t_i64, "i");
  LLVMAddIncoming(l->iv, &lo, &pre, 1);
  LLVMBuildCondBr(r->s.b, LLVMBuildICmp(r->s.b, LLVMIntSLT, l->iv, hi, ""), body, l->exit);
  LLVMPositionBuilderAtEnd(r->s.b, body);
  return l->iv;
}

static void loop_end(render *r, loop *l) {
  LLVMBasicBlockRef latch = LLVMGetInsertBlock(r->s.b);
  LLVMValueRef next = LLVMBuildNSWAdd(r->s.b, l->iv, ci64(r, 1), "");
  LLVMBuildBr(r->s.b, l->header);
  LLVMAddIncoming(l->iv, &next, &latch, 1);
  LLVMPositionBuilderAtEnd(r->s.b, l->exit);
}

/* An alloca in the entry block, so mem2reg turns it into SSA. */
static LLVMValueRef entry_alloca(render *r, LLVMTypeRef t) {
  LLVMBuilderRef ab = LLVMCreateBuilderInContext(r->s.ctx);
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
  l->ph = LLVMAppendBasicBlockInContext(r->s.ctx, r->fn, "pre");
  l->land = LLVMAppendBasicBlockInContext(r->s.ctx, r->fn, "land");
  LLVMBuildBr(r->s.b, l->ph);
  LLVMPositionBuilderAtEnd(r->s.b, l->land);
  return true;
}

/* Closes the innermost level (its loops have ended): its preheader now enters the loop.
 * Values computed in it are forgotten: its serial is not handed out again. */
static void level_close(render *r) {
  level *l = &r->lv[r->top--];
  LLVMBasicBlockRef cur = LLVMGetInsertBlock(r->s.b);
  LLVMPositionBuilderAtEnd(r->s.b, l->ph);
  LLVMBuildBr(r->s.b, l->land);
  LLVMPositionBuilderAtEnd(r->s.b, cur);
}

/* ------------------------------------------------------------------ run-time errors */
/* Reports kernel ki through the error word bufs[n_buffers] (runtime ABI, rt.h): a relaxed
 * compare-and-swap from 0, so the first kernel to fail in a run is the one named (threads
 * of one kernel race only to store the same value). */
static void report_error(render *r, LLVMValueRef bufs, int32_t ki) {
  LLVMValueRef idx = ci64(r, r->p->n_buffers);
  LLVMValueRef slot = LLVMBuildInBoundsGEP2(r->s.b, r->s.t_ptr, bufs, &idx, 1, "");
  LLVMValueRef word = LLVMBuildLoad2(r->s.b, r->s.t_ptr, slot, "err");
  LLVMBuildAtomicCmpXchg(r->s.b, word, kiln_llvm_cint(r->s.t_i32, 0), kiln_llvm_cint(r->s.t_i32, ki + 1),
                         LLVMAtomicOrderingMonotonic, LLVMAtomicOrderingMonotonic, 0);
}

/* Branches on cond: where true, reports kernel ki; the builder continues after. */
static void report_if(render *r, LLVMValueRef fn, LLVMValueRef cond, LLVMValueRef bufs, int32_t ki) {
  LLVMBasicBlockRef fail = LLVMAppendBasicBlockInContext(r->s.ctx, fn, "report");
  LLVMBasicBlockRef cont = LLVMAppendBasicBlockInContext(r->s.ctx, fn, "reported");
  LLVMBuildCondBr(r->s.b, cond, fail, cont);
  LLVMPositionBuilderAtEnd(r->s.b, fail);
  report_error(r, bufs, ki);
  LLVMBuildBr(r->s.b, cont);
  LLVMPositionBuilderAtEnd(r->s.b, cont);
}

/* a / b for KILN_DIV_ROW_RECIP (the schedule's, passes/schedule.c): (a * RN(1/(b s))) * s */
static LLVMValueRef div_by_row_recip(render *r, LLVMValueRef a, LLVMValueRef bv) {
  LLVMBuilderRef b = r->s.b;
  LLVMTypeRef t = LLVMTypeOf(bv);
  LLVMValueRef mag = kiln_llvm_intrinsic(&r->s, "llvm.fabs", &t, 1, &bv, 1);
  double lo = t == r->s.t_f32 ? 0x1p-126 : 0x1p-1022, hi = t == r->s.t_f32 ? 0x1p126 : 0x1p1022;
  LLVMValueRef s = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOLT, mag, LLVMConstReal(t, lo), ""),
                                   LLVMConstReal(t, 0x1p64), LLVMConstReal(t, 1.0), "");
  s = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOGT, mag, LLVMConstReal(t, hi), ""), LLVMConstReal(t, 0x1p-64), s,
                      "");
  LLVMValueRef rcp = LLVMBuildFDiv(b, LLVMConstReal(t, 1.0), LLVMBuildFMul(b, bv, s, ""), "");
  return LLVMBuildFMul(b, LLVMBuildFMul(b, a, rcp, ""), s, "");
}

/* ------------------------------------------------------------------ expressions */
static LLVMValueRef eval(render *r, int32_t id);


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
  LLVMBuilderRef b = r->s.b;
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
  LLVMValueRef out = LLVMBuildAdd(b, LLVMBuildPtrToInt(b, r->base[k->out_buf], r->s.t_i64, ""), row, "");
  LLVMValueRef cache = LLVMBuildPtrToInt(b, r->row_buf[red], r->s.t_i64, "");
  LLVMValueRef delta = LLVMBuildSub(b, LLVMBuildAdd(b, out, ci64(r, 2048), ""), cache, "");
  delta = LLVMBuildAnd(b, delta, ci64(r, (ROW_CACHE_SLIDE - 1) & ~63), ""); /* 64-byte aligned */
  LLVMValueRef p = LLVMBuildInBoundsGEP2(b, r->s.t_i8, r->row_buf[red], &delta, 1, "");
  return LLVMBuildInBoundsGEP2(b, et, p, &v, 1, "");
}

static LLVMValueRef eval_reduce(render *r, const kiln_kx *x) {
  LLVMBuilderRef b = r->s.b;
  const kiln_kx *src = &r->k->kx[x->a[0]];
  bool arg = kiln_op_has(x->op, KILN_OPF_INDEX); /* argmax/argmin */
  kiln_dtype vdt = arg ? src->dtype : x->dtype; /* dtype accumulated */
  LLVMTypeRef vt = kiln_llvm_ctype(&r->s, vdt);
  /* An empty reduction is its initial value, and its body is never computed: the loops
   * below are entered only when they run at least once, which is what lets the body's
   * loop-invariant parts be computed before them. */
  uint64_t vars = 0;
  for (int32_t j = 0; j < x->n_vars; j++) {
    if (r->k->extent[x->var + j] <= 0) return arg ? ci64(r, 0) : kiln_llvm_reduce_init(&r->s, x->op, vdt);
    if (x->var + j < 64) vars |= 1ull << (x->var + j);
  }
  LLVMValueRef acc = entry_alloca(r, vt), best_i = NULL, any_nan = NULL;
  LLVMBuildStore(b, kiln_llvm_reduce_init(&r->s, x->op, vdt), acc);
  /* A float max/min as the largest number by a plain compare (nnan: vmaxps, and a cheap
   * reduction of the vector's lanes at the end) beside a flag for whether a NaN was seen,
   * which is then the result. llvm.maximum orders NaNs at every step, lane by lane in
   * the final reduction too (softmax's row max was about 400 instructions a row). */
  bool minmax_f = (x->op == KILN_OP_reduce_max || x->op == KILN_OP_reduce_min) &&
                  kiln_llvm_dclass_of(vdt) == KILN_LLVM_DC_FLOAT;
  if (minmax_f) {
    any_nan = entry_alloca(r, r->s.t_i1);
    LLVMBuildStore(b, LLVMConstInt(r->s.t_i1, 0, 0), any_nan);
  }
  if (arg) {
    best_i = entry_alloca(r, r->s.t_i64);
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
  if (!arg) val = kiln_llvm_convert(&r->s, val, src->dtype, vdt);
  LLVMValueRef cur = LLVMBuildLoad2(b, vt, acc, "");
  kiln_llvm_dclass c = kiln_llvm_dclass_of(vdt);
  bool fl = c == KILN_LLVM_DC_FLOAT;
  if (arg) {
    /* better: a NaN beats any number and ties with a NaN; ties go to the last when kind=1
     * (ops.def), so a NaN replaces the best unless that is a NaN and kind=0 */
    bool mx = x->op == KILN_OP_argmax, last = x->kind_attr == 1;
    LLVMValueRef better;
    if (fl) {
      LLVMRealPredicate pr = mx ? (last ? LLVMRealOGE : LLVMRealOGT) : (last ? LLVMRealOLE : LLVMRealOLT);
      LLVMValueRef nan = LLVMBuildFCmp(b, LLVMRealUNO, val, val, "");
      if (!last) nan = LLVMBuildAnd(b, nan, LLVMBuildFCmp(b, LLVMRealORD, cur, cur, ""), "");
      better = LLVMBuildOr(b, LLVMBuildFCmp(b, pr, val, cur, ""), nan, "");
    } else {
      bool sg = c == KILN_LLVM_DC_SINT;
      LLVMIntPredicate pr = mx ? (sg ? LLVMIntSGT : LLVMIntUGT) : (sg ? LLVMIntSLT : LLVMIntULT);
      if (x->kind_attr == 1) pr = mx ? (sg ? LLVMIntSGE : LLVMIntUGE) : (sg ? LLVMIntSLE : LLVMIntULE);
      better = LLVMBuildICmp(b, pr, val, cur, "");
    }
    LLVMBuildStore(b, LLVMBuildSelect(b, better, val, cur, ""), acc);
    LLVMValueRef bi = LLVMBuildLoad2(b, r->s.t_i64, best_i, "");
    LLVMBuildStore(b, LLVMBuildSelect(b, better, r->var[x->var], bi, ""), best_i);
  } else if (minmax_f) {
    LLVMValueRef gt = LLVMBuildFCmp(b, x->op == KILN_OP_reduce_max ? LLVMRealOGT : LLVMRealOLT, val, cur, "");
    LLVMSetFastMathFlags(gt, LLVMFastMathNoNaNs | LLVMFastMathNoSignedZeros);
    LLVMValueRef nv = LLVMBuildSelect(b, gt, val, cur, "");
    LLVMSetFastMathFlags(nv, LLVMFastMathNoNaNs | LLVMFastMathNoSignedZeros);
    LLVMBuildStore(b, nv, acc);
    LLVMValueRef seen = LLVMBuildLoad2(b, r->s.t_i1, any_nan, "");
    LLVMBuildStore(b, LLVMBuildOr(b, seen, LLVMBuildFCmp(b, LLVMRealUNO, val, val, ""), ""), any_nan);
  } else {
    LLVMValueRef nv;
    kiln_op op = kiln_op_combine(x->op);
    LLVMValueRef ops[2] = {cur, val};
    nv = kiln_llvm_alu(&r->s, op, 0, vdt, vdt, ops);
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
  if (arg) return LLVMBuildLoad2(b, r->s.t_i64, best_i, "");
  LLVMValueRef res = LLVMBuildLoad2(b, vt, acc, "");
  if (minmax_f) /* the nnan result may be anything where a NaN was seen: NaN there */
    res = LLVMBuildSelect(b, LLVMBuildLoad2(b, r->s.t_i1, any_nan, ""), LLVMConstReal(vt, NAN), res, "");
  return res;
}

static LLVMValueRef eval_load(render *r, const kiln_kx *x) {
  LLVMBuilderRef b = r->s.b;
  kiln_dtype bdt = r->p->buffers[x->buf].dtype;
  LLVMTypeRef mt = kiln_llvm_mtype(&r->s, bdt);
  LLVMValueRef off = eval(r, x->a[0]);
  if (!off) return NULL;
  if (x->a[1] < 0) {
    LLVMValueRef ptr = LLVMBuildInBoundsGEP2(b, mt, r->base[x->buf], &off, 1, "");
    return kiln_llvm_convert(&r->s, kiln_llvm_from_memory(&r->s, LLVMBuildLoad2(b, mt, ptr, ""), bdt), bdt, x->dtype);
  }
  /* Masked: the offset may be out of range where the mask is false, so the load sits in
   * a block only entered when it is true. */
  LLVMValueRef m = eval(r, x->a[1]);
  if (!m) return NULL;
  LLVMBasicBlockRef pre = LLVMGetInsertBlock(b);
  LLVMBasicBlockRef then = LLVMAppendBasicBlockInContext(r->s.ctx, r->fn, "mload");
  LLVMBasicBlockRef join = LLVMAppendBasicBlockInContext(r->s.ctx, r->fn, "mjoin");
  LLVMBuildCondBr(b, m, then, join);
  LLVMPositionBuilderAtEnd(b, then);
  /* not inbounds: the vectorizer turns this into a masked vector load, whose address
   * (that of its first lane) may lie outside the buffer for lanes that are off */
  LLVMValueRef ptr = LLVMBuildGEP2(b, mt, r->base[x->buf], &off, 1, "");
  LLVMValueRef v =
      kiln_llvm_convert(&r->s, kiln_llvm_from_memory(&r->s, LLVMBuildLoad2(b, mt, ptr, ""), bdt), bdt, x->dtype);
  LLVMBasicBlockRef then_end = LLVMGetInsertBlock(b);
  LLVMBuildBr(b, join);
  LLVMPositionBuilderAtEnd(b, join);
  LLVMValueRef phi = LLVMBuildPhi(b, kiln_llvm_ctype(&r->s, x->dtype), "");
  LLVMValueRef vals[2] = {v, kiln_llvm_const(&r->s, x->dtype, x->f, x->i)};
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
  LLVMBasicBlockRef cur = LLVMGetInsertBlock(r->s.b);
  LLVMPositionBuilderAtEnd(r->s.b, saved[0].ph);
  r->top = at;
  LLVMValueRef v = eval(r, id);
  saved[0].ph = LLVMGetInsertBlock(r->s.b); /* the hoisted code may have added blocks */
  memcpy(&r->lv[at + 1], saved, sizeof(level) * (size_t)n);
  r->top = top;
  LLVMPositionBuilderAtEnd(r->s.b, cur);
  kiln_ir_free(r->p->alloc, saved);
  return v;
}

/* The value of kx id at the insertion point: computed once at the level where it
 * belongs (place) and reused while that level is open. */
static LLVMValueRef eval(render *r, int32_t id) {
  if (r->memo[id] && r->memo_level[id] <= r->top && r->lv[r->memo_level[id]].serial == r->memo_serial[id])
    return r->memo[id];
  const kiln_kx *x = &r->k->kx[id];
  if (x->kind == KILN_KX_CONST) return kiln_llvm_const(&r->s, x->dtype, x->f, x->i);
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
    LLVMTypeRef et = kiln_llvm_ctype(&r->s, x->dtype);
    v = LLVMBuildLoad2(r->s.b, et, row_cache_at(r, red, et, r->var[r->k->out.rank - 1]), "");
    r->memo[id] = v;
    r->memo_level[id] = r->top;
    r->memo_serial[id] = r->lv[r->top].serial;
    return v;
  }
  switch (x->kind) {
  case KILN_KX_CONST: v = kiln_llvm_const(&r->s, x->dtype, x->f, x->i); break;
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
    if (r->div_mode && r->div_mode[id] == KILN_DIV_CONST_RECIP) {
      LLVMValueRef num = eval(r, x->a[0]);
      if (!num) return NULL;
      v = LLVMBuildFMul(r->s.b, num, LLVMConstReal(r->s.t_f32, (double)(1.0f / (float)r->k->kx[x->a[1]].f)), "");
      break;
    }
    if (r->div_mode && r->div_mode[id] == KILN_DIV_ROW_RECIP) {
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
    v = kiln_llvm_alu(&r->s, x->op, x->kind_attr, odt, x->dtype, a);
    break;
  }
  case KILN_KX_REDUCE: v = eval_reduce(r, x); break;
  case KILN_KX_CHECK: {
    /* No branch or store in the loop: a failure is OR-ed into a flag (a reduction the
     * vectorizer handles) that the kernel reports once after its loops. */
    LLVMValueRef c = eval(r, x->a[0]);
    if (!c || !(v = eval(r, x->a[1]))) return NULL;
    LLVMValueRef cur = LLVMBuildLoad2(r->s.b, r->s.t_i1, r->bad, "");
    LLVMBuildStore(r->s.b, LLVMBuildOr(r->s.b, cur, LLVMBuildNot(r->s.b, c, ""), ""), r->bad);
    break;
  }
  }
  if (!v) return NULL;
  /* f16/bf16 compute in f32, but each graph node's result is of its dtype: rounded where
   * the interpreter and an unfused kernel's store round it (kiln_ir_kx_rounds_narrow) */
  if (kiln_ir_kx_rounds_narrow(x)) v = kiln_llvm_round_narrow(&r->s, v, x->dtype);
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
    const kiln_schedule *sc = &k->sched;
    if (sc->gemm_engine == KILN_GEMM_GENERATED &&
        (k->out_dtype != KILN_F32 || sc->lanes < 1 || sc->lanes > 64 || sc->nv < 1 || sc->nv > 8 || sc->mr < 1 ||
         sc->mr * sc->nv > 64 || sc->packed_b < 0 || sc->packed_b >= p->n_buffers))
      return kiln_diag_set(r->d, KILN_ERR_INTERNAL, "kernel %s: a generated GEMM of %d x %d vectors of %d lanes", kn,
                           (int)sc->mr, (int)sc->nv, (int)sc->lanes);
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
  if (!k->sched.set || k->sched.model != KILN_SCHED_LOOP_NEST)
    return kiln_diag_set(r->d, KILN_ERR_INTERNAL, "kernel %s has no loop-nest schedule (the schedule pass did not run)", kn);
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
      bool arg = kiln_op_has(x->op, KILN_OPF_INDEX); /* argmax/argmin */
      if ((unsigned)x->op >= KILN_OP_COUNT || kiln_op_table[x->op].category != KILN_CAT_REDUCE)
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
    if (x->kind == KILN_KX_ALU && !kiln_op_accepts(x->op, kx[x->a[x->op == KILN_OP_select ? 1 : 0]].dtype))
      return kiln_diag_set(r->d, KILN_ERR_UNSUPPORTED, "kernel %s: kx %d: %s is not defined on %s (ops.def)", kn, i,
                           kiln_op_name(x->op), kiln_dtype_name(kx[x->a[x->op == KILN_OP_select ? 1 : 0]].dtype));
    if (bad)
      return kiln_diag_set(r->d, KILN_ERR_INTERNAL, "kernel %s: kx %d (%s): operand dtypes do not fit", kn, i,
                           x->kind == KILN_KX_LOAD ? "load" : x->kind == KILN_KX_CHECK ? "check" : kiln_op_name(x->op));
  }
  return KILN_OK;
}

/* ------------------------------------------------------------------ kernels */
/* Streaming stores need whole 64-byte vector stores: the entry runs a kernel's streaming
 * variant only where its outputs are this aligned. */
enum { STREAM_ALIGN = 64 };

/* The row caches of k's schedule get their stack arrays: 8 bytes an element (the widest
 * register type) and the slide. */
static bool alloc_row_caches(render *r, const kiln_kernel *k) {
  r->row_cached = k->sched.row_cache;
  r->row_buf = NULL;
  if (!r->row_cached) return true;
  r->row_buf = kiln_ir_malloc(r->p->alloc, sizeof(LLVMValueRef) * (size_t)k->n_kx);
  if (!r->row_buf) return false;
  for (int32_t i = 0; i < k->n_kx; i++) r->row_buf[i] = NULL;
  int64_t row = k->out.rank > 0 ? k->out.dims[k->out.rank - 1] : 1;
  for (int32_t e = 0; e < k->n_kx; e++) {
    int32_t red = r->row_cached[e];
    if (red < 0 || r->row_buf[red]) continue;
    r->row_buf[red] = entry_alloca(r, LLVMArrayType2(r->s.t_i8, (uint64_t)row * 8 + ROW_CACHE_SLIDE));
    LLVMSetAlignment(r->row_buf[red], 64);
  }
  return true;
}

static bool prefetched(const kiln_schedule *s, int32_t buf) {
  for (int32_t i = 0; i < s->n_prefetch; i++)
    if (s->prefetch[i] == buf) return true;
  return false;
}

/* Loads the base pointer of every buffer k touches, once per call in the entry block
 * (stores into buffers can then not force reloads), marking those the schedule
 * prefetches (KILN_LLVM_MD_PREFETCH, with the distance) and, in a streaming variant,
 * the outputs as aligned for the vector stores. */
static void load_bases(render *r, const kiln_kernel *k, LLVMValueRef bufs, bool streaming) {
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
    LLVMValueRef slot = LLVMBuildInBoundsGEP2(r->s.b, r->s.t_ptr, bufs, &idx, 1, "");
    r->base[bi] = LLVMBuildLoad2(r->s.b, r->s.t_ptr, slot, bb->name ? bb->name : "buf");
    if (prefetched(&k->sched, bi)) {
      LLVMMetadataRef ahead = LLVMValueAsMetadata(ci64(r, k->sched.prefetch_bytes));
      unsigned pf = LLVMGetMDKindIDInContext(r->s.ctx, KILN_LLVM_MD_PREFETCH, strlen(KILN_LLVM_MD_PREFETCH));
      LLVMSetMetadata(r->base[bi], pf, LLVMMetadataAsValue(r->s.ctx, LLVMMDNodeInContext2(r->s.ctx, &ahead, 1)));
    }
    if (streaming && (bi == k->out_buf || bi == r->extra_buf)) { /* the entry checked: aligned */
      LLVMMetadataRef a64 = LLVMValueAsMetadata(ci64(r, STREAM_ALIGN));
      LLVMSetMetadata(r->base[bi], LLVMGetMDKindIDInContext(r->s.ctx, "align", 5),
                      LLVMMetadataAsValue(r->s.ctx, LLVMMDNodeInContext2(r->s.ctx, &a64, 1)));
    }
  }
}

/* The function of a LOOP kernel: void fn_name(ptr bufs, i64 begin, i64 end), internal,
 * vectorized at the schedule's width; a streaming variant is marked for its stores to be
 * made non-temporal after O3 (KILN_LLVM_ATTR_STREAM). */
static LLVMValueRef add_kernel_fn(render *r, const kiln_kernel *k, const char *fn_name, bool streaming) {
  LLVMTypeRef params[3] = {r->s.t_ptr, r->s.t_i64, r->s.t_i64};
  LLVMValueRef fn = LLVMAddFunction(r->s.mod, fn_name, LLVMFunctionType(r->s.t_void, params, 3, 0));
  LLVMSetLinkage(fn, LLVMInternalLinkage);
  /* noinline: the entry calls each kernel from two places (pool / no pool); one body. */
  kiln_llvm_fn_attr(&r->s, fn, "noinline");
  kiln_llvm_fn_attr(&r->s, fn, "nounwind");
  char width[16];
  int n = snprintf(width, sizeof width, "%d", k->sched.vector_bits > 0 ? (int)k->sched.vector_bits : 128);
  LLVMAttributeRef vw = LLVMCreateStringAttribute(r->s.ctx, "prefer-vector-width", 19, width, (unsigned)n);
  LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, vw);
  if (streaming) {
    size_t an = strlen(KILN_LLVM_ATTR_STREAM);
    LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex,
                            LLVMCreateStringAttribute(r->s.ctx, KILN_LLVM_ATTR_STREAM, (unsigned)an, "", 0));
  }
  return fn;
}

/* The per-kernel scratch of emit_loop_kernel; false when out of memory. */
static bool begin_loop_kernel(render *r, const kiln_kernel *k) {
  const kiln_allocator *al = r->p->alloc;
  size_t nb = (size_t)r->p->n_buffers, nk = (size_t)k->n_kx, nv = (size_t)k->n_vars;
  r->k = k;
  /* Levels: outside the loops, the row, the element, and one per REDUCE open at once
   * (each at most once: a REDUCE is not in its own body). */
  r->n_lv = 3;
  for (int32_t i = 0; i < k->n_kx; i++) r->n_lv += k->kx[i].kind == KILN_KX_REDUCE;
  r->dep = kiln_ir_malloc(al, sizeof(uint64_t) * (nk + 1));
  if (r->dep && !kiln_ir_kx_deps(k, r->dep)) {
    kiln_ir_free(al, r->dep); /* more variables than a mask holds: everything where it is used */
    r->dep = NULL;
  } else if (!r->dep) return false;
  r->var = kiln_ir_malloc(al, sizeof(LLVMValueRef) * (nv + 1));
  r->memo = kiln_ir_malloc(al, sizeof(LLVMValueRef) * (nk + 1));
  r->memo_level = kiln_ir_malloc(al, sizeof(int32_t) * (nk + 1));
  r->memo_serial = kiln_ir_malloc(al, sizeof(int64_t) * (nk + 1));
  r->lv = kiln_ir_malloc(al, sizeof(level) * (size_t)r->n_lv);
  r->base = kiln_ir_malloc(al, sizeof(LLVMValueRef) * (nb + 1));
  if (!r->var || !r->memo || !r->memo_level || !r->memo_serial || !r->lv || !r->base) return false;
  memset(r->var, 0, sizeof(LLVMValueRef) * (nv + 1));
  memset(r->memo, 0, sizeof(LLVMValueRef) * (nk + 1));
  memset(r->base, 0, sizeof(LLVMValueRef) * (nb + 1));
  r->top = 0;
  r->serial = 0;
  r->lv[0] = (level){.vars = 0, .serial = 0};
  r->div_mode = k->sched.div;
  return true;
}

static void end_loop_kernel(render *r) {
  const kiln_allocator *al = r->p->alloc;
  kiln_ir_free(al, r->var);
  kiln_ir_free(al, r->memo);
  kiln_ir_free(al, r->memo_level);
  kiln_ir_free(al, r->memo_serial);
  kiln_ir_free(al, r->lv);
  kiln_ir_free(al, r->dep);
  kiln_ir_free(al, r->base);
  kiln_ir_free(al, r->row_buf);
  r->div_mode = NULL;
  r->row_cached = NULL;
  r->row_buf = NULL;
  r->var = r->memo = r->base = NULL;
  r->memo_level = NULL;
  r->memo_serial = NULL;
  r->lv = NULL;
  r->dep = NULL;
  r->bad = NULL;
}

/* The output coordinates of every dim but the last, from the row number. Leading dims of
 * extent 1 (a batch of 1) have coordinate 0, and the first real dim takes the rest of the
 * row number without a remainder: LLVM cannot know that row < n_rows, and a `row % 16`
 * where row is the offset would hide that a load and the store of an in-place kernel hit
 * the same element (its overlap check then fails and the scalar loop runs). */
static void row_coordinates(render *r, const kiln_kernel *k, LLVMValueRef row) {
  int32_t rank = k->out.rank, first = 0;
  LLVMValueRef rem = row;
  while (first < rank - 2 && k->out.dims[first] == 1) r->var[first++] = ci64(r, 0);
  for (int32_t dd = rank - 2; dd > first; dd--) {
    LLVMValueRef ext = ci64(r, k->out.dims[dd] > 0 ? k->out.dims[dd] : 1);
    r->var[dd] = LLVMBuildURem(r->s.b, rem, ext, "");
    rem = LLVMBuildUDiv(r->s.b, rem, ext, "");
  }
  if (rank >= 2) r->var[first] = rem;
}

/* Stores kx `root` of dtype dt into buffer buf at element *off (row * last + col, built
 * after the first value, where the original renderer built it, when *off is NULL). */
static bool store_root(render *r, int32_t root, kiln_dtype dt, int32_t buf, LLVMValueRef *off, LLVMValueRef row,
                       LLVMValueRef col, int64_t last) {
  LLVMValueRef v = eval(r, root);
  if (!v) return false;
  v = kiln_llvm_to_memory(&r->s, kiln_llvm_convert(&r->s, v, r->k->kx[root].dtype, dt), dt);
  if (!*off) *off = LLVMBuildNSWAdd(r->s.b, LLVMBuildNSWMul(r->s.b, row, ci64(r, last), ""), col, "");
  /* (a streaming variant's vector stores of it are made non-temporal after the loop
   * vectorizer, which does not widen non-temporal scalar stores: finish.c) */
  LLVMBuildStore(r->s.b, v, LLVMBuildInBoundsGEP2(r->s.b, kiln_llvm_mtype(&r->s, dt), r->base[buf], off, 1, ""));
  return true;
}

/* The loops: rows [begin, end) of the output, and the column loop in each. */
static bool emit_loops(render *r, const kiln_kernel *k, LLVMValueRef begin, LLVMValueRef end) {
  int32_t rank = k->out.rank;
  int64_t last = rank > 0 ? k->out.dims[rank - 1] : 1;
  loop rows, cols;
  uint64_t row_vars = rank >= 2 && rank - 1 < 64 ? (1ull << (rank - 1)) - 1 : 0;
  if (!level_open(r, row_vars)) return false;
  LLVMValueRef row = loop_begin(r, &rows, begin, end);
  row_coordinates(r, k, row);
  LLVMValueRef col = ci64(r, 0);
  if (rank >= 1) {
    /* The kernel only runs for a non-empty domain, so the column loop runs at least once
     * and what is hoisted out of it would have been computed anyway. */
    if (!level_open(r, rank - 1 < 64 ? 1ull << (rank - 1) : 0)) return false;
    col = r->var[rank - 1] = loop_begin(r, &cols, ci64(r, 0), ci64(r, last));
  }
  LLVMValueRef off = NULL;
  if (!store_root(r, k->root, k->out_dtype, k->out_buf, &off, row, col, last)) return false;
  if (r->extra_root >= 0 && !store_root(r, r->extra_root, r->extra_dtype, r->extra_buf, &off, row, col, last))
    return false;
  if (rank >= 1) {
    loop_end(r, &cols);
    level_close(r);
  }
  loop_end(r, &rows);
  level_close(r);
  return true;
}

/* void fn_name(ptr bufs, i64 begin, i64 end): rows [begin, end) of LOOP kernel k as its
 * schedule says, k being program kernel ki or one of its sub-kernels (GEMM
 * pack/epilogue); ki names the kernel a failed CHECK reports. */
static LLVMValueRef emit_loop_kernel(render *r, const kiln_kernel *k, int32_t ki, const char *fn_name,
                                     bool streaming) {
  r->fn = add_kernel_fn(r, k, fn_name, streaming);
  LLVMValueRef ret = NULL;
  if (!begin_loop_kernel(r, k)) {
    kiln_diag_set(r->d, KILN_ERR_OUT_OF_MEMORY, "out of memory rendering kernel %s", k->name ? k->name : "?");
    goto done;
  }
  LLVMValueRef bufs = LLVMGetParam(r->fn, 0), begin = LLVMGetParam(r->fn, 1), end = LLVMGetParam(r->fn, 2);
  r->entry_bb = LLVMAppendBasicBlockInContext(r->s.ctx, r->fn, "entry");
  LLVMPositionBuilderAtEnd(r->s.b, r->entry_bb);
  load_bases(r, k, bufs, streaming);
  r->bad = NULL;
  for (int32_t i = 0; i < k->n_kx && !r->bad; i++)
    if (k->kx[i].kind == KILN_KX_CHECK) r->bad = entry_alloca(r, r->s.t_i1);
  if (r->bad) LLVMBuildStore(r->s.b, LLVMConstInt(r->s.t_i1, 0, 0), r->bad);
  if (!alloc_row_caches(r, k)) {
    kiln_diag_set(r->d, KILN_ERR_OUT_OF_MEMORY, "out of memory rendering kernel %s", k->name ? k->name : "?");
    goto done;
  }
  if (!emit_loops(r, k, begin, end)) goto done;
  /* streaming stores are weakly ordered: visible before the pool's barrier says done */
  if (streaming) LLVMBuildFence(r->s.b, LLVMAtomicOrderingSequentiallyConsistent, 0, "");
  if (r->bad) report_if(r, r->fn, LLVMBuildLoad2(r->s.b, r->s.t_i1, r->bad, ""), bufs, ki);
  LLVMBuildRetVoid(r->s.b);
  ret = r->fn;
done:
  end_loop_kernel(r);
  return ret;
}

/* A constant global holding raw bytes (descriptors, embedded weights). */
static LLVMValueRef bytes_global(render *r, const char *name, const void *data, size_t n, unsigned align) {
  LLVMValueRef init = LLVMConstStringInContext2(r->s.ctx, n ? (const char *)data : "", n ? n : 1, 1);
  LLVMValueRef g = LLVMAddGlobal(r->s.mod, LLVMTypeOf(init), name);
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
    if (LLVMGetNamedGlobal(r->s.mod, name)) continue;
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
  LLVMTypeRef kp[3] = {r->s.t_ptr, r->s.t_i64, r->s.t_i64};
  t.kty = LLVMFunctionType(r->s.t_void, kp, 3, 0);
  LLVMTypeRef pf_p[5] = {r->s.t_ptr, r->s.t_ptr, r->s.t_ptr, r->s.t_i64, r->s.t_i64};
  t.pf_ty = LLVMFunctionType(r->s.t_void, pf_p, 5, 0);
  LLVMTypeRef gm_p[4] = {r->s.t_ptr, r->s.t_ptr, r->s.t_i32, r->s.t_ptr};
  t.gm_ty = LLVMFunctionType(r->s.t_void, gm_p, 4, 0);
  LLVMTypeRef gf_p[6] = {r->s.t_ptr, r->s.t_ptr, r->s.t_i32, r->s.t_ptr, r->s.t_ptr, r->s.t_ptr};
  t.gf_ty = LLVMFunctionType(r->s.t_void, gf_p, 6, 0);
  LLVMTypeRef op_p[2] = {r->s.t_ptr, r->s.t_ptr};
  t.op_ty = LLVMFunctionType(r->s.t_i32, op_p, 2, 0);
  return t;
}

/* A kernel's descriptor global, shared by the entry and the step function. */
static LLVMValueRef desc_global(render *r, const char *name, const void *data, size_t n) {
  LLVMValueRef g = LLVMGetNamedGlobal(r->s.mod, name);
  if (g) return g;
  g = bytes_global(r, name, data, n, 8);
  LLVMSetLinkage(g, LLVMInternalLinkage);
  return g;
}

/* Sibling kernels a and b (a->with_next) as one kernel for emit_loop_kernel: a's with b's
 * expression nodes after its own, b's root stored as the extra output, run on a's
 * schedule (which the schedule pass made for the pair) with both kernels' per-kx
 * choices. The caller frees it (free_merged). False when out of memory. */
static bool merge_siblings(render *r, const kiln_kernel *a, const kiln_kernel *b, kiln_kernel *m) {
  *m = *a;
  m->with_next = false;
  m->sched.div = NULL;
  m->sched.row_cache = NULL;
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
  if (a->sched.div || b->sched.div) {
    if (!(m->sched.div = kiln_ir_malloc(r->p->alloc, (size_t)m->n_kx))) return false;
    for (int32_t i = 0; i < m->n_kx; i++) {
      const kiln_schedule *s = i < a->n_kx ? &a->sched : &b->sched;
      m->sched.div[i] = s->div ? s->div[i < a->n_kx ? i : i - a->n_kx] : KILN_DIV_PLAIN;
    }
  }
  if (a->sched.row_cache || b->sched.row_cache) {
    if (!(m->sched.row_cache = kiln_ir_malloc(r->p->alloc, sizeof(int32_t) * (size_t)m->n_kx))) return false;
    for (int32_t i = 0; i < m->n_kx; i++) {
      bool first = i < a->n_kx;
      const int32_t *rc = first ? a->sched.row_cache : b->sched.row_cache;
      int32_t v = rc ? rc[first ? i : i - a->n_kx] : -1;
      m->sched.row_cache[i] = v < 0 || first ? v : v + a->n_kx;
    }
  }
  r->extra_root = a->n_kx + b->root;
  r->extra_buf = b->out_buf;
  r->extra_dtype = b->out_dtype;
  return true;
}

static void free_merged(render *r, kiln_kernel *m) {
  kiln_ir_free(r->p->alloc, m->kx);
  kiln_ir_free(r->p->alloc, m->sched.div);
  kiln_ir_free(r->p->alloc, m->sched.row_cache);
}

/* Runs kf(bufs, begin, end) over [0, n): on the pool in chunks of grain, or on the caller
 * when there is no pool (rt.h allows a NULL pool). */
static void emit_parallel(render *r, LLVMValueRef fn, const call_types *t, LLVMValueRef bufs, LLVMValueRef pool,
                          LLVMValueRef no_pool, LLVMValueRef kf, int64_t n, int64_t grain) {
  LLVMBuilderRef b = r->s.b;
  LLVMBasicBlockRef serial = LLVMAppendBasicBlockInContext(r->s.ctx, fn, "serial");
  LLVMBasicBlockRef par = LLVMAppendBasicBlockInContext(r->s.ctx, fn, "parallel");
  LLVMBasicBlockRef next = LLVMAppendBasicBlockInContext(r->s.ctx, fn, "next");
  LLVMBuildCondBr(b, no_pool, serial, par);
  LLVMPositionBuilderAtEnd(b, serial);
  LLVMValueRef sa[3] = {bufs, ci64(r, 0), ci64(r, n)};
  LLVMBuildCall2(b, t->kty, kf, sa, 3, "");
  LLVMBuildBr(b, next);
  LLVMPositionBuilderAtEnd(b, par);
  LLVMValueRef pa[5] = {pool, kf, bufs, ci64(r, n), ci64(r, grain < 1 ? 1 : grain)};
  LLVMBuildCall2(b, t->pf_ty, kiln_llvm_declare_fn(&r->s, "kiln_rt_parallel_for", t->pf_ty), pa, 5, "");
  LLVMBuildBr(b, next);
  LLVMPositionBuilderAtEnd(b, next);
}

/* A generated GEMM (gemm_gen.c): its tasks on the pool, then, where the tasks split the
 * panels, the epilogue over every row. */
static void emit_generated_gemm(render *r, LLVMValueRef fn, const call_types *t, LLVMValueRef bufs, LLVMValueRef pool,
                                LLVMValueRef no_pool, int32_t i, LLVMValueRef *kfn) {
  const kiln_kernel *k = &r->p->kernels[i];
  emit_parallel(r, fn, t, bufs, pool, no_pool, kfn[i], kiln_llvm_gemm_tasks(k), 1);
  if (!k->epilogue || k->sched.col_groups == 1) return;
  char sub[48];
  snprintf(sub, sizeof sub, "kiln_k%d_epilogue", i);
  emit_parallel(r, fn, t, bufs, pool, no_pool, LLVMGetNamedFunction(r->s.mod, sub), k->epilogue->sched.rows,
                k->epilogue->sched.grain);
}

/* Runs kernel i at the builder's position in fn (which takes bufs and pool). */
static void emit_kernel_call(render *r, LLVMValueRef fn, const call_types *t, LLVMValueRef bufs, LLVMValueRef pool,
                             LLVMValueRef no_pool, int32_t i, LLVMValueRef *kfn) {
  LLVMBuilderRef b = r->s.b;
  const kiln_kernel *k = &r->p->kernels[i];
  char name[48];
  if (i > 0 && r->p->kernels[i - 1].with_next) return; /* ran with kernel i - 1 */
  if (k->kind == KILN_KERNEL_LOOP) {
    if (kiln_shape_numel(&k->out) <= 0) return;
    LLVMValueRef kf = kfn[i], kst = kfn[r->p->n_kernels + i];
    if (kst) { /* the streaming variant where the output (both, for siblings) is 64-byte aligned */
      LLVMValueRef mis = ci64(r, 0);
      for (int o = 0; o < (k->with_next ? 2 : 1); o++) {
        LLVMValueRef at = ci64(r, o ? r->p->kernels[i + 1].out_buf : k->out_buf);
        LLVMValueRef out = LLVMBuildLoad2(b, r->s.t_ptr, LLVMBuildInBoundsGEP2(b, r->s.t_ptr, bufs, &at, 1, ""), "");
        mis = LLVMBuildOr(b, mis, LLVMBuildPtrToInt(b, out, r->s.t_i64, ""), "");
      }
      mis = LLVMBuildAnd(b, mis, ci64(r, STREAM_ALIGN - 1), "");
      kf = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntEQ, mis, ci64(r, 0), ""), kst, kf, "");
    }
    emit_parallel(r, fn, t, bufs, pool, no_pool, kf, k->sched.rows, k->sched.grain); /* the schedule's split */
  } else if (k->kind == KILN_KERNEL_GEMM && k->sched.gemm_engine == KILN_GEMM_GENERATED) {
    emit_generated_gemm(r, fn, t, bufs, pool, no_pool, i, kfn);
  } else if (k->kind == KILN_KERNEL_GEMM) {
    snprintf(name, sizeof name, "kiln_gemm%d", i);
    kiln_gemm_desc gdesc = k->gemm;
    gdesc.n_bufs = r->p->n_buffers; /* for the runtime's per-worker copies of bufs */
    LLVMValueRef g = desc_global(r, name, &gdesc, sizeof gdesc);
    if (k->pack || k->epilogue) { /* sub-kernels rendered as kiln_k<i>_pack / _epilogue */
      char sub[48];
      snprintf(sub, sizeof sub, "kiln_k%d_pack", i);
      LLVMValueRef pk = k->pack ? LLVMGetNamedFunction(r->s.mod, sub) : LLVMConstNull(r->s.t_ptr);
      snprintf(sub, sizeof sub, "kiln_k%d_epilogue", i);
      LLVMValueRef ep = k->epilogue ? LLVMGetNamedFunction(r->s.mod, sub) : LLVMConstNull(r->s.t_ptr);
      LLVMValueRef a[6] = {pool, g, kiln_llvm_cint(r->s.t_i32, k->out_dtype), bufs, pk, ep};
      LLVMBuildCall2(b, t->gf_ty, kiln_llvm_declare_fn(&r->s, "kiln_rt_gemm_fused", t->gf_ty), a, 6, "");
      return;
    }
    LLVMValueRef a[4] = {pool, g, kiln_llvm_cint(r->s.t_i32, k->out_dtype), bufs};
    LLVMBuildCall2(b, t->gm_ty, kiln_llvm_declare_fn(&r->s, "kiln_rt_gemm", t->gm_ty), a, 4, "");
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
    LLVMValueRef rc = LLVMBuildCall2(b, t->op_ty, kiln_llvm_declare_fn(&r->s, "kiln_rt_opaque", t->op_ty), a, 2, "");
    report_if(r, fn, LLVMBuildICmp(b, LLVMIntNE, rc, kiln_llvm_cint(r->s.t_i32, 0), ""), bufs, i);
  }
}

/* void entry(ptr bufs, ptr pool): every kernel in program order. */
static kiln_status emit_entry(render *r, const char *entry_name, bool hidden, LLVMValueRef *kfn) {
  LLVMBuilderRef b = r->s.b;
  LLVMTypeRef p2[2] = {r->s.t_ptr, r->s.t_ptr};
  LLVMValueRef fn = LLVMAddFunction(r->s.mod, entry_name, LLVMFunctionType(r->s.t_void, p2, 2, 0));
  if (hidden) LLVMSetVisibility(fn, LLVMHiddenVisibility);
  r->fn = fn;
  LLVMValueRef bufs = LLVMGetParam(fn, 0), pool = LLVMGetParam(fn, 1);
  LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(r->s.ctx, fn, "entry"));
  call_types t = runtime_types(r);
  LLVMValueRef no_pool = LLVMBuildICmp(b, LLVMIntEQ, pool, LLVMConstNull(r->s.t_ptr), "no_pool");
  for (int32_t i = 0; i < r->p->n_kernels; i++) emit_kernel_call(r, fn, &t, bufs, pool, no_pool, i, kfn);
  LLVMBuildRetVoid(b);
  return KILN_OK;
}

/* void step(ptr bufs, ptr pool, i32 k): kernel k alone (nothing for another k), so the
 * driver's verify mode can check each kernel's output as soon as it is written. */
static kiln_status emit_step(render *r, const char *step_name, bool hidden, LLVMValueRef *kfn) {
  LLVMBuilderRef b = r->s.b;
  LLVMTypeRef p3[3] = {r->s.t_ptr, r->s.t_ptr, r->s.t_i32};
  LLVMValueRef fn = LLVMAddFunction(r->s.mod, step_name, LLVMFunctionType(r->s.t_void, p3, 3, 0));
  if (hidden) LLVMSetVisibility(fn, LLVMHiddenVisibility);
  r->fn = fn;
  LLVMValueRef bufs = LLVMGetParam(fn, 0), pool = LLVMGetParam(fn, 1), which = LLVMGetParam(fn, 2);
  LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(r->s.ctx, fn, "entry"));
  call_types t = runtime_types(r);
  LLVMValueRef no_pool = LLVMBuildICmp(b, LLVMIntEQ, pool, LLVMConstNull(r->s.t_ptr), "no_pool");
  LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(r->s.ctx, fn, "done");
  LLVMValueRef sw = LLVMBuildSwitch(b, which, done, (unsigned)r->p->n_kernels);
  for (int32_t i = 0; i < r->p->n_kernels; i++) {
    LLVMBasicBlockRef bb = LLVMAppendBasicBlockInContext(r->s.ctx, fn, "kernel");
    LLVMAddCase(sw, kiln_llvm_cint(r->s.t_i32, i), bb);
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
  kiln_llvm_scalar_init(&r.s, ctx, o->avx512f, o->avx512vl);
  r.extra_root = r.extra_buf = -1;
  r.p = p;
  r.d = d;

  for (int32_t i = 0; i < p->n_kernels; i++)
    if (check_kernel(&r, &p->kernels[i], i) != KILN_OK) return d->status;

  r.s.mod = LLVMModuleCreateWithNameInContext(p->name ? p->name : "kiln", ctx);
  r.s.b = LLVMCreateBuilderInContext(ctx);
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
        free_merged(&r, &merged);
        st = kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory rendering kernel %d", i);
        goto fail;
      }
      lk = &merged;
    }
    bool loop = lk->kind == KILN_KERNEL_LOOP;
    kfn[i] = loop ? emit_loop_kernel(&r, lk, i, name, false) : NULL;
    bool ok = !loop || kfn[i];
    if (ok && loop && lk->sched.stream) { /* a pair's: both kernels stream (the schedule pass) */
      snprintf(name, sizeof name, "kiln_k%d_stream", i);
      ok = (kfn[p->n_kernels + i] = emit_loop_kernel(&r, lk, i, name, true)) != NULL;
    }
    if (lk == &merged) free_merged(&r, &merged);
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
    const kiln_kernel *gk = &p->kernels[i];
    if (gk->kind == KILN_KERNEL_GEMM && gk->sched.gemm_engine == KILN_GEMM_GENERATED) {
      snprintf(name, sizeof name, "kiln_k%d_epilogue", i);
      kfn[i] = kiln_llvm_gemm_kernel(&r.s, p, i, gk->epilogue ? LLVMGetNamedFunction(r.s.mod, name) : NULL);
    }
  }
  if ((st = emit_entry(&r, o->entry_name, o->hidden_entry, kfn)) != KILN_OK) goto fail;
  if (o->step_name && (st = emit_step(&r, o->step_name, o->hidden_entry, kfn)) != KILN_OK) goto fail;
  char *msg = NULL;
  if (LLVMVerifyModule(r.s.mod, LLVMReturnStatusAction, &msg)) {
    st = kiln_diag_set(d, KILN_ERR_BACKEND, "LLVM rejected the generated module: %s", msg ? msg : "");
    kiln_llvm_diag_module(d, r.s.mod);
    LLVMDisposeMessage(msg);
    goto fail;
  }
  LLVMDisposeMessage(msg);
  kiln_ir_free(p->alloc, kfn);
  LLVMDisposeBuilder(r.s.b);
  *out = r.s.mod;
  return KILN_OK;
fail:
  kiln_ir_free(p->alloc, kfn);
  LLVMDisposeBuilder(r.s.b);
  LLVMDisposeModule(r.s.mod);
  return st;
}
