/* gemm_gen.c - generated GEMM kernels (kiln_schedule.gemm_engine KILN_GEMM_GENERATED):
 * C = A B for one GEMM kernel, specialized to its sizes, with B read from the panels the
 * pack pass made at compile time.
 *
 * The kernel is a task function over (batch, block of mc rows, group of panels), run on
 * Kiln's pool by the entry. A task computes its rows panel by panel in micro-tiles of
 * mr rows x nv vectors: mr * nv accumulators held in vector registers for the whole of k,
 * each step loading nv vectors of the panel's row and broadcasting mr elements of A
 * (which x86 folds into the multiply-add), then one store of the tile (masked past n).
 * A direct convolution's A is its input image: for each tap, every row's input pixel (or
 * a zero row in the padding) is found once, and the channels are the inner reduction.
 * A task then runs its rows through the fused epilogue (the kernel's epilogue sub-kernel),
 * while they are in cache; with the panels split among tasks, the entry runs it after.
 * Micro-tiles of fewer rows (the last, m % mr) and of the last panel (columns past n) are
 * functions of their own.
 */
#include "llvm_impl.h"

#include <stdio.h>
#include <string.h>

typedef struct gg {
  const kiln_llvm_scalar *s;
  const kiln_kernel *k;
  const kiln_gemm_desc *g;
  const kiln_schedule *sc;
  LLVMTypeRef vt;     /* <lanes x float> */
  int64_t w, np;      /* panel width (floats), panels */
} gg;

static LLVMValueRef ci64(const gg *c, int64_t v) { return kiln_llvm_ci64(c->s, v); }

static LLVMValueRef gep_f32(const gg *c, LLVMValueRef base, LLVMValueRef idx) {
  return LLVMBuildGEP2(c->s->b, c->s->t_f32, base, &idx, 1, "");
}

/* for (i = lo; i < hi; i += step): the phi is returned, the builder left in the body;
 * loop_close ends it. */
typedef struct gloop {
  LLVMBasicBlockRef head, body, exit;
  LLVMValueRef iv;
  int64_t step;
} gloop;

static LLVMValueRef loop_open(const gg *c, LLVMValueRef fn, gloop *l, LLVMValueRef lo, LLVMValueRef hi, int64_t step) {
  LLVMBuilderRef b = c->s->b;
  LLVMBasicBlockRef pre = LLVMGetInsertBlock(b);
  l->head = LLVMAppendBasicBlockInContext(c->s->ctx, fn, "head");
  l->body = LLVMAppendBasicBlockInContext(c->s->ctx, fn, "body");
  l->exit = LLVMAppendBasicBlockInContext(c->s->ctx, fn, "exit");
  l->step = step;
  LLVMBuildBr(b, l->head);
  LLVMPositionBuilderAtEnd(b, l->head);
  l->iv = LLVMBuildPhi(b, c->s->t_i64, "i");
  LLVMAddIncoming(l->iv, &lo, &pre, 1);
  LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, l->iv, hi, ""), l->body, l->exit);
  LLVMPositionBuilderAtEnd(b, l->body);
  return l->iv;
}

static void loop_close(const gg *c, gloop *l) {
  LLVMBuilderRef b = c->s->b;
  LLVMBasicBlockRef latch = LLVMGetInsertBlock(b);
  LLVMValueRef next = LLVMBuildNSWAdd(b, l->iv, ci64(c, l->step), "");
  LLVMBuildBr(b, l->head);
  LLVMAddIncoming(l->iv, &next, &latch, 1);
  LLVMPositionBuilderAtEnd(b, l->exit);
}

/* v broadcast to every lane. */
static LLVMValueRef splat(const gg *c, LLVMValueRef v) {
  LLVMBuilderRef b = c->s->b;
  LLVMValueRef one = LLVMBuildInsertElement(b, LLVMGetPoison(c->vt), v, kiln_llvm_cint(c->s->t_i32, 0), "");
  LLVMValueRef zeros = LLVMConstNull(LLVMVectorType(c->s->t_i32, (unsigned)c->sc->lanes));
  return LLVMBuildShuffleVector(b, one, LLVMGetPoison(c->vt), zeros, "");
}

/* Stores accumulator v (vector number vi of a row whose first `valid` columns exist)
 * at ptr: whole, masked to its first lanes, or not at all. */
static void store_vec(const gg *c, LLVMValueRef v, LLVMValueRef ptr, int64_t vi, int64_t valid) {
  int64_t lanes = c->sc->lanes, col = vi * lanes;
  if (col >= valid) return;
  if (col + lanes <= valid) {
    LLVMSetAlignment(LLVMBuildStore(c->s->b, v, ptr), 4);
    return;
  }
  LLVMValueRef bits[64];
  for (int64_t l = 0; l < lanes; l++) bits[l] = LLVMConstInt(c->s->t_i1, col + l < valid, 0);
  LLVMValueRef args[4] = {v, ptr, kiln_llvm_cint(c->s->t_i32, 4), LLVMConstVector(bits, (unsigned)lanes)};
  LLVMTypeRef tys[2] = {c->vt, c->s->t_ptr};
  kiln_llvm_intrinsic(c->s, "llvm.masked.store", tys, 2, args, 4);
}

/* Loads C's vector vi of a row whose first `valid` columns exist, at ptr (zero past
 * valid): the accumulators of a reduction block after the first. */
static LLVMValueRef load_vec(const gg *c, LLVMValueRef ptr, int64_t vi, int64_t valid) {
  int64_t lanes = c->sc->lanes, col = vi * lanes;
  if (col >= valid) return LLVMConstNull(c->vt);
  if (col + lanes <= valid) {
    LLVMValueRef v = LLVMBuildLoad2(c->s->b, c->vt, ptr, "c");
    LLVMSetAlignment(v, 4);
    return v;
  }
  LLVMValueRef bits[64];
  for (int64_t l = 0; l < lanes; l++) bits[l] = LLVMConstInt(c->s->t_i1, col + l < valid, 0);
  LLVMValueRef args[4] = {ptr, kiln_llvm_cint(c->s->t_i32, 4), LLVMConstVector(bits, (unsigned)lanes),
                          LLVMConstNull(c->vt)};
  LLVMTypeRef tys[2] = {c->vt, c->s->t_ptr};
  return kiln_llvm_intrinsic(c->s, "llvm.masked.load", tys, 2, args, 4);
}

/* Opens a do-while loop block `name` after the current block: an i64 counter from `from`,
 * and the n accumulators acc as phis (in phi). Returns the counter. */
static LLVMValueRef acc_loop_open(const gg *c, LLVMValueRef fn, const char *name, LLVMValueRef from, int32_t n,
                                  const LLVMValueRef *acc, LLVMValueRef *phi) {
  LLVMBuilderRef b = c->s->b;
  LLVMBasicBlockRef pre = LLVMGetInsertBlock(b), loop = LLVMAppendBasicBlockInContext(c->s->ctx, fn, name);
  LLVMBuildBr(b, loop);
  LLVMPositionBuilderAtEnd(b, loop);
  LLVMValueRef i = LLVMBuildPhi(b, c->s->t_i64, name);
  LLVMAddIncoming(i, &from, &pre, 1);
  for (int32_t j = 0; j < n; j++) {
    phi[j] = LLVMBuildPhi(b, c->vt, "acc");
    LLVMAddIncoming(phi[j], (LLVMValueRef *)&acc[j], &pre, 1);
  }
  return i;
}

/* Closes acc_loop_open's loop of counter i: the accumulators' next values nxt, again while
 * i + 1 < end; leaves the builder after the loop with acc = nxt. */
static void acc_loop_close(const gg *c, LLVMValueRef fn, LLVMValueRef i, int32_t n, LLVMValueRef *phi,
                           const LLVMValueRef *nxt, LLVMValueRef end, LLVMValueRef *acc) {
  LLVMBuilderRef b = c->s->b;
  LLVMBasicBlockRef latch = LLVMGetInsertBlock(b), loop = LLVMGetInstructionParent(i);
  LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(c->s->ctx, fn, "done");
  LLVMValueRef next = LLVMBuildNSWAdd(b, i, ci64(c, 1), "");
  LLVMAddIncoming(i, &next, &latch, 1);
  for (int32_t j = 0; j < n; j++) LLVMAddIncoming(phi[j], (LLVMValueRef *)&nxt[j], &latch, 1);
  LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, next, end, ""), loop, done);
  LLVMPositionBuilderAtEnd(b, done);
  for (int32_t j = 0; j < n; j++) acc[j] = nxt[j];
}

/* A loop over n steps of the reduction: step kk multiplies row i's element rowp[i][kk]
 * by the panel's row k0 + kk, into the accumulators acc (in: their values before the
 * loop; out: after it). Leaves the builder after the loop. */
static void k_loop(const gg *c, LLVMValueRef fn, int32_t rows, LLVMValueRef *rowp, LLVMValueRef panel,
                   LLVMValueRef k0, LLVMValueRef n, LLVMValueRef *acc) {
  const kiln_llvm_scalar *s = c->s;
  LLVMBuilderRef b = s->b;
  int32_t nv = c->sc->nv, n_acc = rows * nv;
  LLVMValueRef phi[64], nxt[64], kk = acc_loop_open(c, fn, "kk", ci64(c, 0), n_acc, acc, phi);
  LLVMValueRef row = LLVMBuildMul(b, LLVMBuildAdd(b, k0, kk, ""), ci64(c, c->w), ""), bv[8];
  for (int32_t v = 0; v < nv; v++) {
    bv[v] = LLVMBuildLoad2(b, c->vt, gep_f32(c, panel, LLVMBuildAdd(b, row, ci64(c, (int64_t)v * c->sc->lanes), "")), "b");
    LLVMSetAlignment(bv[v], 4);
  }
  for (int32_t i = 0; i < rows; i++) {
    LLVMValueRef as = splat(c, LLVMBuildLoad2(b, s->t_f32, gep_f32(c, rowp[i], kk), "a"));
    for (int32_t v = 0; v < nv; v++) {
      LLVMValueRef ops[3] = {as, bv[v], phi[i * nv + v]};
      LLVMTypeRef vt = c->vt;
      nxt[i * nv + v] = kiln_llvm_intrinsic(s, "llvm.fmuladd", &vt, 1, ops, 3);
    }
  }
  acc_loop_close(c, fn, kk, n_acc, phi, nxt, n, acc);
}

/* The input row of micro-tile row p (an output pixel) at tap t: x at o(p) * stride + k(t)
 * * dilation - lo, or the zero row where that is padding. */
static LLVMValueRef conv_row(const gg *c, LLVMValueRef x, LLVMValueRef zeros, LLVMValueRef p, LLVMValueRef t) {
  LLVMBuilderRef b = c->s->b;
  const kiln_gemm_desc *g = c->g;
  int32_t r = g->conv_rank;
  LLVMValueRef o[3], kp[3], ok = LLVMConstInt(c->s->t_i1, 1, 0), off = ci64(c, 0);
  for (int32_t d = r - 1; d >= 0; d--) { /* pixel and tap coordinates, row-major */
    o[d] = d ? LLVMBuildURem(b, p, ci64(c, g->conv_out[d]), "") : p;
    kp[d] = d ? LLVMBuildURem(b, t, ci64(c, g->conv_k[d]), "") : t;
    if (d) p = LLVMBuildUDiv(b, p, ci64(c, g->conv_out[d]), ""), t = LLVMBuildUDiv(b, t, ci64(c, g->conv_k[d]), "");
  }
  for (int32_t d = 0; d < r; d++) {
    LLVMValueRef at = LLVMBuildSub(b, LLVMBuildAdd(b, LLVMBuildMul(b, o[d], ci64(c, g->conv_stride[d]), ""),
                                                   LLVMBuildMul(b, kp[d], ci64(c, g->conv_dil[d]), ""), ""),
                                   ci64(c, g->conv_lo[d]), "");
    ok = LLVMBuildAnd(b, ok, LLVMBuildICmp(b, LLVMIntULT, at, ci64(c, g->conv_in[d]), ""), "");
    off = LLVMBuildAdd(b, LLVMBuildMul(b, off, ci64(c, g->conv_in[d]), ""), at, "");
  }
  LLVMValueRef row = gep_f32(c, x, LLVMBuildMul(b, off, ci64(c, g->lda), ""));
  return LLVMBuildSelect(b, ok, row, zeros, "");
}

/* A direct convolution's reduction block from k0 (kc: a divisor of the input channels,
 * or a whole number of taps): a loop over its taps, each a k_loop over its input channels
 * of every row's input pixel at that tap. */
static void conv_taps(const gg *c, LLVMValueRef fn, int32_t rows, LLVMValueRef x, LLVMValueRef row0, LLVMValueRef panel,
                      LLVMValueRef k0, LLVMValueRef *acc) {
  const kiln_llvm_scalar *s = c->s;
  LLVMBuilderRef b = s->b;
  const kiln_gemm_desc *g = c->g;
  int32_t n_acc = rows * c->sc->nv;
  int64_t taps = g->k / g->conv_ci, kc = c->sc->kc, per = kc >= g->conv_ci ? kc / g->conv_ci : 1;
  LLVMValueRef t0 = LLVMBuildUDiv(b, k0, ci64(c, g->conv_ci), ""), ch0 = LLVMBuildURem(b, k0, ci64(c, g->conv_ci), "");
  LLVMTypeRef i64 = s->t_i64;
  LLVMValueRef t1 = kiln_llvm_intrinsic(s, "llvm.smin", &i64, 1,
                                        (LLVMValueRef[]){LLVMBuildAdd(b, t0, ci64(c, per), ""), ci64(c, taps)}, 2);
  char zname[48];
  snprintf(zname, sizeof zname, "kiln_zeros%lld", (long long)g->conv_ci);
  LLVMValueRef zeros = LLVMGetNamedGlobal(s->mod, zname);
  if (!zeros) { /* the padding's input row */
    LLVMTypeRef zt = LLVMArrayType2(s->t_f32, (uint64_t)g->conv_ci);
    zeros = LLVMAddGlobal(s->mod, zt, zname);
    LLVMSetInitializer(zeros, LLVMConstNull(zt));
    LLVMSetGlobalConstant(zeros, 1);
    LLVMSetLinkage(zeros, LLVMInternalLinkage);
    LLVMSetAlignment(zeros, 64);
  }
  LLVMValueRef phi[64], cur[64], rowp[16], t = acc_loop_open(c, fn, "tap", t0, n_acc, acc, phi);
  memcpy(cur, phi, sizeof(LLVMValueRef) * (size_t)n_acc);
  for (int32_t i = 0; i < rows; i++)
    rowp[i] = gep_f32(c, conv_row(c, x, zeros, LLVMBuildAdd(b, row0, ci64(c, i), ""), t), ch0);
  LLVMValueRef kt = LLVMBuildAdd(b, LLVMBuildMul(b, t, ci64(c, g->conv_ci), ""), ch0, "");
  k_loop(c, fn, rows, rowp, panel, kt, ci64(c, kc < g->conv_ci ? kc : g->conv_ci), cur);
  acc_loop_close(c, fn, t, n_acc, phi, cur, t1, acc);
}

/* The accumulators' values before the micro-tile's reduction block from k0: zero for the
 * first block, else what the earlier blocks stored in C at cp. */
static void acc_init(const gg *c, LLVMValueRef fn, int32_t rows, LLVMValueRef cp, LLVMValueRef k0, int64_t valid,
                     LLVMValueRef *acc) {
  const kiln_llvm_scalar *s = c->s;
  LLVMBuilderRef b = s->b;
  int32_t nv = c->sc->nv, n_acc = rows * nv;
  for (int32_t i = 0; i < n_acc; i++) acc[i] = LLVMConstNull(c->vt);
  if (c->sc->kc >= c->g->k) return;
  LLVMBasicBlockRef first = LLVMGetInsertBlock(b);
  LLVMBasicBlockRef more = LLVMAppendBasicBlockInContext(s->ctx, fn, "more");
  LLVMBasicBlockRef join = LLVMAppendBasicBlockInContext(s->ctx, fn, "init");
  LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntEQ, k0, ci64(c, 0), ""), join, more);
  LLVMPositionBuilderAtEnd(b, more);
  LLVMValueRef ld[64];
  for (int32_t i = 0; i < rows; i++)
    for (int32_t v = 0; v < nv; v++)
      ld[i * nv + v] = load_vec(c, gep_f32(c, cp, ci64(c, i * c->g->ldc + (int64_t)v * c->sc->lanes)), v, valid);
  LLVMBuildBr(b, join);
  LLVMPositionBuilderAtEnd(b, join);
  for (int32_t i = 0; i < n_acc; i++) {
    LLVMValueRef phi = LLVMBuildPhi(b, c->vt, "acc0");
    LLVMAddIncoming(phi, &acc[i], &first, 1);
    LLVMAddIncoming(phi, &ld[i], &more, 1);
    acc[i] = phi;
  }
}

/* void mk(ptr a, ptr panel, ptr c, i64 row, i64 k0): the micro-tile of `rows` rows from
 * product row `row` (A at a: a matrix of row stride lda, or a direct convolution's image),
 * over the reduction block [k0, k0 + kc) (the whole reduction for a convolution), into C
 * at c (row stride ldc), `valid` columns of it. */
static LLVMValueRef micro_kernel(const gg *c, const char *name, int32_t rows, int64_t valid) {
  const kiln_llvm_scalar *s = c->s;
  LLVMBuilderRef b = s->b;
  const kiln_gemm_desc *g = c->g;
  int32_t nv = c->sc->nv;
  LLVMTypeRef params[5] = {s->t_ptr, s->t_ptr, s->t_ptr, s->t_i64, s->t_i64};
  LLVMValueRef fn = LLVMAddFunction(s->mod, name, LLVMFunctionType(s->t_void, params, 5, 0));
  LLVMSetLinkage(fn, LLVMInternalLinkage);
  kiln_llvm_fn_attr(s, fn, "nounwind");
  LLVMValueRef a = LLVMGetParam(fn, 0), bp = LLVMGetParam(fn, 1), cp = LLVMGetParam(fn, 2), row = LLVMGetParam(fn, 3);
  LLVMValueRef k0 = LLVMGetParam(fn, 4);
  LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(s->ctx, fn, "entry"));
  LLVMValueRef acc[64], rowp[16];
  acc_init(c, fn, rows, cp, k0, valid, acc);
  if (g->conv_rank) conv_taps(c, fn, rows, a, row, bp, k0, acc);
  else {
    for (int32_t i = 0; i < rows; i++)
      rowp[i] = gep_f32(c, a, LLVMBuildAdd(b, LLVMBuildMul(b, LLVMBuildAdd(b, row, ci64(c, i), ""), ci64(c, g->lda), ""),
                                           k0, ""));
    LLVMTypeRef i64 = s->t_i64;
    LLVMValueRef left = LLVMBuildSub(b, ci64(c, g->k), k0, "");
    LLVMValueRef n = kiln_llvm_intrinsic(s, "llvm.smin", &i64, 1, (LLVMValueRef[]){left, ci64(c, c->sc->kc)}, 2);
    k_loop(c, fn, rows, rowp, bp, k0, n, acc);
  }
  for (int32_t i = 0; i < rows; i++)
    for (int32_t v = 0; v < nv; v++)
      store_vec(c, acc[i * nv + v], gep_f32(c, cp, ci64(c, i * g->ldc + (int64_t)v * c->sc->lanes)), v, valid);
  LLVMBuildRetVoid(b);
  return fn;
}

/* The element offset of batch number t along batch strides bs (rt.h's order: row-major
 * over the batch loops). */
static LLVMValueRef batch_offset(const gg *c, LLVMValueRef t, const int64_t *bs) {
  LLVMBuilderRef b = c->s->b;
  const kiln_gemm_desc *g = c->g;
  if (g->n_batch == 0) return ci64(c, 0);
  if (g->n_batch == 1) return LLVMBuildMul(b, t, ci64(c, bs[0]), "");
  LLVMValueRef hi = LLVMBuildUDiv(b, t, ci64(c, g->batch[1]), ""), lo = LLVMBuildURem(b, t, ci64(c, g->batch[1]), "");
  return LLVMBuildAdd(b, LLVMBuildMul(b, hi, ci64(c, bs[0]), ""), LLVMBuildMul(b, lo, ci64(c, bs[1]), ""), "");
}

typedef struct tile_fns {
  LLVMValueRef full, full_last, rest, rest_last; /* rows mr or m % mr; last panel or not */
} tile_fns;

/* A micro-tile call's arguments: A, the panel, C at the tile, the first row, k0. */
typedef struct tile_args {
  LLVMValueRef v[5];
} tile_args;

static void call_tile(const gg *c, LLVMValueRef fn, tile_args args) {
  LLVMTypeRef params[5] = {c->s->t_ptr, c->s->t_ptr, c->s->t_ptr, c->s->t_i64, c->s->t_i64};
  LLVMBuildCall2(c->s->b, LLVMFunctionType(c->s->t_void, params, 5, 0), fn, args.v, 5, "");
}

/* if (cond) call f(args) else call g(args) */
static void call_either(const gg *c, LLVMValueRef fn, LLVMValueRef cond, LLVMValueRef f, LLVMValueRef g2,
                        tile_args args) {
  if (f == g2) {
    call_tile(c, f, args);
    return;
  }
  LLVMBuilderRef b = c->s->b;
  LLVMBasicBlockRef yes = LLVMAppendBasicBlockInContext(c->s->ctx, fn, "last"),
                    no = LLVMAppendBasicBlockInContext(c->s->ctx, fn, "panel"),
                    join = LLVMAppendBasicBlockInContext(c->s->ctx, fn, "tiled");
  LLVMBuildCondBr(b, cond, yes, no);
  LLVMPositionBuilderAtEnd(b, yes);
  call_tile(c, f, args);
  LLVMBuildBr(b, join);
  LLVMPositionBuilderAtEnd(b, no);
  call_tile(c, g2, args);
  LLVMBuildBr(b, join);
  LLVMPositionBuilderAtEnd(b, join);
}

/* One task's panels [p0, p1) over rows [r0, r1) of the product at a / c: reduction block
 * by block (kc), each over all of the task's panels and rows, so that a block of a panel
 * stays in L1 while the rows go past it. */
static void task_body(const gg *c, LLVMValueRef fn, const tile_fns *t, LLVMValueRef a, LLVMValueRef bp,
                      LLVMValueRef cm, LLVMValueRef r0, LLVMValueRef r1, LLVMValueRef p0, LLVMValueRef p1) {
  LLVMBuilderRef b = c->s->b;
  const kiln_gemm_desc *g = c->g;
  int32_t mr = c->sc->mr;
  gloop lk, lp, li;
  LLVMValueRef k0 = loop_open(c, fn, &lk, ci64(c, 0), ci64(c, g->k), c->sc->kc);
  LLVMValueRef p = loop_open(c, fn, &lp, p0, p1, 1);
  LLVMValueRef panel = gep_f32(c, bp, LLVMBuildMul(b, p, ci64(c, g->k * c->w), ""));
  LLVMValueRef last = LLVMBuildICmp(b, LLVMIntEQ, p, ci64(c, c->np - 1), "");
  LLVMValueRef col = LLVMBuildMul(b, p, ci64(c, c->w), "");
  LLVMValueRef full_end = LLVMBuildSub(b, r1, LLVMBuildSRem(b, LLVMBuildSub(b, r1, r0, ""), ci64(c, mr), ""), "");
  LLVMValueRef i0 = loop_open(c, fn, &li, r0, full_end, mr);
  LLVMValueRef cp = gep_f32(c, cm, LLVMBuildAdd(b, LLVMBuildMul(b, i0, ci64(c, g->ldc), ""), col, ""));
  call_either(c, fn, last, t->full_last, t->full, (tile_args){{a, panel, cp, i0, k0}});
  loop_close(c, &li);
  if (t->rest) { /* rows past the last whole micro-tile: only the last task has them */
    LLVMBasicBlockRef rest = LLVMAppendBasicBlockInContext(c->s->ctx, fn, "rest"),
                      next = LLVMAppendBasicBlockInContext(c->s->ctx, fn, "next");
    LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, full_end, r1, ""), rest, next);
    LLVMPositionBuilderAtEnd(b, rest);
    cp = gep_f32(c, cm, LLVMBuildAdd(b, LLVMBuildMul(b, full_end, ci64(c, g->ldc), ""), col, ""));
    call_either(c, fn, last, t->rest_last, t->rest, (tile_args){{a, panel, cp, full_end, k0}});
    LLVMBuildBr(b, next);
    LLVMPositionBuilderAtEnd(b, next);
  }
  loop_close(c, &lp);
  loop_close(c, &lk);
}

/* The micro-tile functions of kernel ki. */
static tile_fns make_tiles(const gg *c, int32_t ki) {
  const kiln_gemm_desc *g = c->g;
  int32_t mr = c->sc->mr, rest = (int32_t)(g->m % mr);
  int64_t tail = g->n - (c->np - 1) * c->w; /* columns of the last panel */
  char name[64];
  tile_fns t = {0};
  snprintf(name, sizeof name, "kiln_k%d_tile", (int)ki);
  t.full = micro_kernel(c, name, mr, c->w);
  snprintf(name, sizeof name, "kiln_k%d_tile_last", (int)ki);
  t.full_last = tail == c->w ? t.full : micro_kernel(c, name, mr, tail);
  if (rest) {
    snprintf(name, sizeof name, "kiln_k%d_tile_rest", (int)ki);
    t.rest = micro_kernel(c, name, rest, c->w);
    snprintf(name, sizeof name, "kiln_k%d_tile_rest_last", (int)ki);
    t.rest_last = tail == c->w ? t.rest : micro_kernel(c, name, rest, tail);
  }
  return t;
}

static LLVMValueRef load_buf(const gg *c, LLVMValueRef bufs, int32_t i) {
  LLVMValueRef idx = ci64(c, i);
  return LLVMBuildLoad2(c->s->b, c->s->t_ptr, LLVMBuildInBoundsGEP2(c->s->b, c->s->t_ptr, bufs, &idx, 1, ""), "");
}

/* Tasks of a generated GEMM, for the entry's parallel loop. */
int64_t kiln_llvm_gemm_tasks(const kiln_kernel *k) {
  const kiln_gemm_desc *g = &k->gemm;
  const kiln_schedule *s = &k->sched;
  int64_t batches = 1;
  for (int32_t i = 0; i < g->n_batch; i++) batches *= g->batch[i];
  return batches * ((g->m + s->mc - 1) / s->mc) * s->col_groups;
}

LLVMValueRef kiln_llvm_gemm_kernel(const kiln_llvm_scalar *s, const kiln_kprogram *p, int32_t ki, LLVMValueRef epilogue) {
  const kiln_kernel *k = &p->kernels[ki];
  gg c = {.s = s, .k = k, .g = &k->gemm, .sc = &k->sched, .vt = LLVMVectorType(s->t_f32, (unsigned)k->sched.lanes)};
  const kiln_gemm_desc *g = c.g;
  c.w = (int64_t)c.sc->nv * c.sc->lanes;
  c.np = (g->n + c.w - 1) / c.w;
  tile_fns tiles = make_tiles(&c, ki);
  char name[48];
  snprintf(name, sizeof name, "kiln_k%d_mm", (int)ki);
  LLVMTypeRef params[3] = {s->t_ptr, s->t_i64, s->t_i64};
  LLVMTypeRef kty = LLVMFunctionType(s->t_void, params, 3, 0);
  LLVMValueRef fn = LLVMAddFunction(s->mod, name, kty);
  LLVMSetLinkage(fn, LLVMInternalLinkage);
  kiln_llvm_fn_attr(s, fn, "nounwind");
  LLVMBuilderRef b = s->b;
  LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(s->ctx, fn, "entry"));
  LLVMValueRef bufs = LLVMGetParam(fn, 0);
  LLVMValueRef A = load_buf(&c, bufs, g->a_buf), Bp = load_buf(&c, bufs, c.sc->packed_b), C = load_buf(&c, bufs, g->c_buf);
  int64_t nrb = (g->m + c.sc->mc - 1) / c.sc->mc, ncg = c.sc->col_groups, ppg = (c.np + ncg - 1) / ncg;
  gloop lt;
  LLVMValueRef task = loop_open(&c, fn, &lt, LLVMGetParam(fn, 1), LLVMGetParam(fn, 2), 1);
  LLVMValueRef t = LLVMBuildUDiv(b, task, ci64(&c, nrb * ncg), ""), rem = LLVMBuildURem(b, task, ci64(&c, nrb * ncg), "");
  LLVMValueRef rb = LLVMBuildUDiv(b, rem, ci64(&c, ncg), ""), cg = LLVMBuildURem(b, rem, ci64(&c, ncg), "");
  LLVMValueRef a = gep_f32(&c, A, LLVMBuildAdd(b, ci64(&c, g->a_off), batch_offset(&c, t, g->a_bstride), ""));
  LLVMValueRef cm = gep_f32(&c, C, LLVMBuildAdd(b, ci64(&c, g->c_off), batch_offset(&c, t, g->c_bstride), ""));
  LLVMValueRef r0 = LLVMBuildMul(b, rb, ci64(&c, c.sc->mc), ""), p0 = LLVMBuildMul(b, cg, ci64(&c, ppg), "");
  LLVMValueRef r1 = LLVMBuildAdd(b, r0, ci64(&c, c.sc->mc), ""), p1 = LLVMBuildAdd(b, p0, ci64(&c, ppg), "");
  LLVMTypeRef i64 = s->t_i64;
  r1 = kiln_llvm_intrinsic(s, "llvm.smin", &i64, 1, (LLVMValueRef[]){r1, ci64(&c, g->m)}, 2);
  p1 = kiln_llvm_intrinsic(s, "llvm.smin", &i64, 1, (LLVMValueRef[]){p1, ci64(&c, c.np)}, 2);
  task_body(&c, fn, &tiles, a, Bp, cm, r0, r1, p0, p1);
  if (epilogue && ncg == 1) { /* the task's rows, finished: through the epilogue while in cache */
    LLVMValueRef row0 = LLVMBuildAdd(b, LLVMBuildMul(b, t, ci64(&c, g->m), ""), r0, "");
    LLVMValueRef row1 = LLVMBuildAdd(b, LLVMBuildMul(b, t, ci64(&c, g->m), ""), r1, "");
    LLVMBuildCall2(b, kty, epilogue, (LLVMValueRef[]){bufs, row0, row1}, 3, "");
  }
  loop_close(&c, &lt);
  LLVMBuildRetVoid(b);
  return fn;
}
