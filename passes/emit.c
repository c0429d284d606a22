/* emit.c - the expressions of lowering's kernels: the value of a graph node at index
 * coordinates (kiln_lower_emit), as loads of buffers, ALU nodes, index maps for movement
 * ops and REDUCE loops for reductions, pools and direct contractions; and the kernel
 * shells around them (buffers, begin/end of a kernel: its name and sources are its
 * group's members). Every node emit computes rather than loads must be a member of the
 * kernel's group (kiln_lower_cover checks it). Used by lower.c and lower_gemm.c.
 */
#include "lower-impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static kiln_category cat_of(const kiln_graph *g, int32_t v) { return kiln_op_table[g->nodes[v].op].category; }

/* ------------------------------------------------------------------ buffers */

int32_t kiln_lower_new_buffer(lower_ctx *c, kiln_buffer_kind kind, kiln_dtype dt, const kiln_shape *s,
                          int32_t index, const char *name) {
  kiln_kprogram *p = c->p;
  KILN_ASSERT(p->n_buffers < c->cap_buffers);
  kiln_buffer *b = &p->buffers[p->n_buffers];
  memset(b, 0, sizeof *b);
  b->kind = kind;
  b->dtype = dt;
  b->shape = *s;
  b->index = index;
  b->nbytes = (size_t)kiln_shape_numel(s) * kiln_dtype_size(dt);
  b->name = kiln_arena_strdup(p->arena, name);
  if (!b->name) c->oom = true;
  return p->n_buffers++;
}

/* The buffer holding node v's value (created on first use for constants and
 * intermediates; inputs and outputs have theirs from the start). */
int32_t kiln_lower_buffer_of(lower_ctx *c, int32_t v) {
  if (c->buf_of[v] >= 0) return c->buf_of[v];
  const kiln_node *n = &c->g->nodes[v];
  if (n->op == KILN_OP_constant) {
    int32_t ci = n->index;
    if (c->const_buf[ci] < 0) {
      kiln_kprogram *p = c->p;
      const kiln_const *src = &c->g->consts[ci];
      kiln_const *dst = &p->consts[p->n_consts];
      *dst = *src;
      dst->data = kiln_arena_alloc(p->arena, src->nbytes ? src->nbytes : 1);
      dst->name = kiln_arena_strdup(p->arena, src->name);
      if (!dst->data || !dst->name) c->oom = true;
      else memcpy(dst->data, src->data, src->nbytes);
      c->const_buf[ci] = kiln_lower_new_buffer(c, KILN_BUF_CONST, src->dtype, &src->shape, p->n_consts++, n->name);
    }
    return c->buf_of[v] = c->const_buf[ci];
  }
  KILN_ASSERT(n->op != KILN_OP_input);
  return c->buf_of[v] = kiln_lower_new_buffer(c, KILN_BUF_ARENA, n->dtype, &n->shape, -1, n->name);
}

/* ------------------------------------------------------------------ kernels */

/* Starts a new expression (a kernel's or a sub-kernel's) over domain out. */
static void begin_expr(lower_ctx *c, const kiln_shape *out) {
  kiln_pass_kb_reset(&c->kb, out);
  c->n_memo = 0;
  for (int32_t i = 0; i < c->cap_memo; i++) c->memo[i].node = -1;
}

static void init_kernel(kiln_kernel *k, kiln_kernel_kind kind, int32_t out_buf, kiln_dtype dt, const kiln_shape *out) {
  memset(k, 0, sizeof *k);
  k->kind = kind;
  k->out_buf = out_buf;
  k->out_dtype = dt;
  k->out = *out;
  k->root = -1;
  k->node = -1; /* set by the caller when out_buf holds a graph value */
}

kiln_kernel *kiln_lower_begin_kernel(lower_ctx *c, kiln_kernel_kind kind, int32_t out_buf,
                                 kiln_dtype dt, const kiln_shape *out) {
  kiln_kprogram *p = c->p;
  KILN_ASSERT(p->n_kernels < c->cap_kernels);
  kiln_kernel *k = &p->kernels[p->n_kernels++];
  init_kernel(k, kind, out_buf, dt, out);
  k->category = kind == KILN_KERNEL_GEMM ? KILN_CAT_CONTRACTION : kind == KILN_KERNEL_OPAQUE ? KILN_CAT_OPAQUE
                                                                                               : KILN_CAT_ELEMENTWISE;
  begin_expr(c, out);
  return k;
}

/* A LOOP sub-kernel (pack or epilogue) of the GEMM kernel being built; the nodes it
 * covers count as the GEMM kernel's. NULL when out of memory. */
kiln_kernel *kiln_lower_begin_sub(lower_ctx *c, int32_t out_buf, kiln_dtype dt, const kiln_shape *out) {
  kiln_kernel *k = kiln_arena_alloc(c->p->arena, sizeof *k);
  if (!k) return c->oom = true, NULL;
  init_kernel(k, KILN_KERNEL_LOOP, out_buf, dt, out);
  k->category = KILN_CAT_ELEMENTWISE;
  begin_expr(c, out);
  return k;
}

/* Copies the builder's expression into k (program arena). */
void kiln_lower_finish_expr(lower_ctx *c, kiln_kernel *k) {
  kiln_kprogram *p = c->p;
  if (c->kb.oom) c->oom = true;
  if (c->oom) return;
  k->root = kiln_pass_kb_compact(&c->kb, k->root);
  k->n_kx = c->kb.n_kx;
  k->n_vars = c->kb.n_vars;
  k->kx = kiln_arena_alloc(p->arena, sizeof(kiln_kx) * (size_t)(k->n_kx ? k->n_kx : 1));
  k->extent = kiln_arena_alloc(p->arena, sizeof(int64_t) * (size_t)(k->n_vars ? k->n_vars : 1));
  if (!k->kx || !k->extent) c->oom = true;
  else {
    memcpy(k->kx, c->kb.kx, sizeof(kiln_kx) * (size_t)k->n_kx);
    if (k->n_vars) memcpy(k->extent, c->kb.extent, sizeof(int64_t) * (size_t)k->n_vars);
  }
}

void kiln_lower_cover(lower_ctx *c, int32_t v) {
  if (c->member[v] || c->user_err) return;
  const kiln_node *n = &c->g->nodes[v];
  c->user_err = kiln_diag_set(c->d, KILN_ERR_INTERNAL,
                              "lowering group g%d computes %%%d (%s '%s'), which the fusion plan does not put there",
                              (int)(c->group - c->plan->groups), (int)v, kiln_op_name(n->op), n->name);
}

/* Where node v is among the current group's members (sorted), or -1. */
static int32_t member_index(const lower_ctx *c, int32_t v) {
  const kiln_fusion_group *gr = c->group;
  int32_t lo = 0, hi = gr->n_members - 1;
  while (lo <= hi) {
    int32_t mid = (lo + hi) / 2;
    if (gr->members[mid] == v) return mid;
    if (gr->members[mid] < v) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}

/* CHECK nodes were built naming their graph node: name its place in the kernel's
 * sources instead (the program outlives the graph). */
static void check_sources(lower_ctx *c, kiln_kernel *k) {
  for (int32_t i = 0; k && k->kind == KILN_KERNEL_LOOP && !c->oom && i < k->n_kx; i++) {
    kiln_kx *x = &k->kx[i];
    if (x->kind != KILN_KX_CHECK) continue;
    x->var = member_index(c, x->var);
  }
}

/* Copies the builder's expression, the sources and a name into the program arena. */
void kiln_lower_end_kernel(lower_ctx *c, kiln_kernel *k, const char *suffix) {
  kiln_kprogram *p = c->p;
  if (k->kind == KILN_KERNEL_LOOP) kiln_lower_finish_expr(c, k);
  /* sources: the group's members, in graph order */
  const kiln_fusion_group *gr = c->group;
  k->category = gr->category;
  k->n_sources = gr->n_members;
  k->sources = kiln_arena_alloc(p->arena, sizeof(char *) * (size_t)(gr->n_members ? gr->n_members : 1));
  char name[96];
  int len = snprintf(name, sizeof name, "k%d", p->n_kernels - 1);
  for (int32_t i = 0; k->sources && i < gr->n_members; i++) {
    const kiln_node *n = &c->g->nodes[gr->members[i]];
    k->sources[i] = kiln_arena_strdup(p->arena, n->name); /* the program outlives the graph */
    if (!k->sources[i]) c->oom = true;
    if (len < 64) len += snprintf(name + len, sizeof name - (size_t)len, "_%s", kiln_op_name(n->op));
  }
  if (suffix && len < 80) snprintf(name + len, sizeof name - (size_t)len, "_%s", suffix);
  check_sources(c, k);
  check_sources(c, k->pack);
  check_sources(c, k->epilogue);
  k->name = kiln_arena_strdup(p->arena, name);
  if (!k->sources || !k->name) c->oom = true;
  /* Sub-kernels share their GEMM's sources (their CHECKs name them). */
  kiln_kernel *subs[2] = {k->pack, k->epilogue};
  for (int i = 0; i < 2; i++)
    if (subs[i]) subs[i]->n_sources = k->n_sources, subs[i]->sources = k->sources;
  char sub[112];
  if (k->pack && k->name) {
    snprintf(sub, sizeof sub, "%s.pack", k->name);
    k->pack->name = kiln_arena_strdup(p->arena, sub);
  }
  if (k->epilogue && k->name) {
    snprintf(sub, sizeof sub, "%s.epilogue", k->name);
    k->epilogue->name = kiln_arena_strdup(p->arena, sub);
  }
}

/* ------------------------------------------------------------------ expressions */

int32_t kiln_lower_emit(lower_ctx *c, int32_t v, const int32_t *idx);

bool kiln_lower_is_buffer(const lower_ctx *c, int32_t v) { return c->plan->materialized[v] && v != c->root; }

static uint32_t memo_slot(const lower_ctx *c, int32_t v, int32_t rank, const int32_t *idx) {
  uint64_t h = (uint64_t)v * 0x9E3779B97F4A7C15ull;
  for (int32_t d = 0; d < rank; d++) h = (h ^ (uint64_t)idx[d]) * 1099511628211ull;
  return (uint32_t)(h ^ (h >> 31)) & (uint32_t)(c->cap_memo - 1);
}

static int32_t memo_find(lower_ctx *c, int32_t v, int32_t rank, const int32_t *idx) {
  if (!c->cap_memo) return -1;
  for (uint32_t s = memo_slot(c, v, rank, idx);; s = (s + 1) & (uint32_t)(c->cap_memo - 1)) {
    kiln_lower_memo *e = &c->memo[s];
    if (e->node < 0) return -1;
    if (e->node == v && e->rank == rank && memcmp(e->idx, idx, sizeof(int32_t) * (size_t)rank) == 0)
      return e->result;
  }
}

static void memo_put(lower_ctx *c, int32_t v, int32_t rank, const int32_t *idx, int32_t result) {
  if (4 * (c->n_memo + 1) > 3 * c->cap_memo) {
    int32_t cap = c->cap_memo ? c->cap_memo * 2 : 256;
    kiln_lower_memo *old = c->memo;
    int32_t old_cap = c->cap_memo;
    c->memo = kiln_ir_malloc(c->alloc, sizeof(kiln_lower_memo) * (size_t)cap);
    if (!c->memo) {
      c->memo = old; /* memoization only saves work: skip this entry, keep the table */
      return;
    }
    c->cap_memo = cap;
    c->n_memo = 0;
    for (int32_t i = 0; i < cap; i++) c->memo[i].node = -1;
    for (int32_t i = 0; i < old_cap; i++)
      if (old[i].node >= 0) memo_put(c, old[i].node, old[i].rank, old[i].idx, old[i].result);
    kiln_ir_free(c->alloc, old);
  }
  uint32_t s = memo_slot(c, v, rank, idx);
  while (c->memo[s].node >= 0) s = (s + 1) & (uint32_t)(c->cap_memo - 1);
  kiln_lower_memo *e = &c->memo[s];
  e->node = v;
  e->rank = rank;
  e->result = result;
  memcpy(e->idx, idx, sizeof(int32_t) * (size_t)rank);
  c->n_memo++;
}


/* Node v at coordinates idx, fill where mask is false, through coordinates clamped into
 * range and a select. emit_masked's way for an expression; for a buffer, the better way
 * when the mask does not depend on the innermost variable (a channels-last window: the
 * mask is per pixel, the innermost variable a channel): the load is unconditional and its
 * offset affine in the innermost variable, so the loop vectorizes. A branch around each
 * load, even an invariant one, kept LLVM from it: a depthwise 3x3 over [16,16,64] ran 6x
 * slower. */
int32_t kiln_lower_emit_clamped(lower_ctx *c, int32_t v, const int32_t *idx, int32_t mask, double fill) {
  const kiln_node *n = &c->g->nodes[v];
  if (kiln_shape_numel(&n->shape) == 0) return kiln_pass_kb_const(KB, n->dtype, fill);
  int32_t j[KILN_MAX_RANK];
  for (int32_t d = 0; d < n->shape.rank; d++) j[d] = kiln_pass_kb_clamp(KB, idx[d], 0, n->shape.dims[d] - 1);
  return kiln_pass_kb_select(KB, mask, kiln_lower_emit(c, v, j), kiln_pass_kb_const(KB, n->dtype, fill));
}

/* node v at coordinates idx that may lie outside v's shape where mask (a bool kx, or -1
 * for none) is false: there the value is fill. */
int32_t kiln_lower_emit_masked(lower_ctx *c, int32_t v, const int32_t *idx, int32_t mask, double fill) {
  if (mask < 0) return kiln_lower_emit(c, v, idx);
  const kiln_node *n = &c->g->nodes[v];
  if (kiln_shape_numel(&n->shape) == 0) return kiln_pass_kb_const(KB, n->dtype, fill);
  /* A buffer's masked load is not performed where the mask is false (every backend), so
   * its offset needs no clamping: unclamped, it stays affine in the innermost variable,
   * and the LLVM vectorizer makes a masked vector load of it (an im2col row, a padded
   * window) instead of a gather. An expression is computed everywhere: clamped. */
  if (kiln_lower_is_buffer(c, v))
    return kiln_pass_kb_load(KB, kiln_lower_buffer_of(c, v), n->dtype, kiln_pass_kb_linearize(KB, idx, &n->shape), mask, fill);
  return kiln_lower_emit_clamped(c, v, idx, mask, fill);
}

/* In-range mask of coordinate x in [lo, hi), folded away where it cannot fail. */
int32_t kiln_lower_in_range(lower_ctx *c, int32_t x, int64_t lo, int64_t hi) {
  return IX(and, IX(ge, x, INT(lo)), IX(lt, x, INT(hi)));
}

/* reshape: dims are matched in groups with equal products; within a group the output
 * coordinates are linearized and split again into the input's, so merging or splitting
 * dims costs one mul-add or div/mod and untouched dims pass straight through. */
void kiln_lower_reshape_index(lower_ctx *c, const kiln_shape *out, const kiln_shape *in, const int32_t *idx,
                          int32_t *j) {
  bool has_zero = kiln_shape_numel(out) == 0;
  int32_t oi = 0, ii = 0;
  while (oi < out->rank || ii < in->rank) {
    int32_t o0 = oi, i0 = ii;
    int64_t po = 1, pi = 1;
    if (has_zero) oi = out->rank, ii = in->rank; /* one group: nothing is ever read */
    else {
      if (oi < out->rank) po *= out->dims[oi++];
      if (ii < in->rank) pi *= in->dims[ii++];
      while (po != pi) {
        if (po < pi && oi < out->rank) po *= out->dims[oi++];
        else if (ii < in->rank) pi *= in->dims[ii++];
        else break;
      }
    }
    int32_t lin = INT(0);
    int64_t st = 1;
    for (int32_t d = oi - 1; d >= o0; d--) {
      lin = IX(add, lin, IX(mul, idx[d], INT(st)));
      st *= out->dims[d];
    }
    st = 1;
    for (int32_t d = ii - 1; d >= i0; d--) {
      int32_t q = IX(div, lin, INT(st > 0 ? st : 1));
      j[d] = in->dims[d] > 0 ? IX(mod, q, INT(in->dims[d])) : INT(0);
      st *= in->dims[d];
    }
  }
}

/* Whether gather node v needs a run-time index check; false also after a compile-time
 * error (c->user_err). Valid indices are [-dim, dim) wherever the node is evaluated, as
 * the interpreter requires. Constant indices are checked here, once per node: one out of
 * range is an error in the graph. An empty indexed dim makes every index invalid. Only
 * when the output has elements does any index get used (as in the interpreter). */
static bool needs_index_check(lower_ctx *c, int32_t v, int64_t dim) {
  if (c->idx_state[v]) return c->idx_state[v] == 2;
  const kiln_node *n = &c->g->nodes[v];
  c->idx_state[v] = 2;
  if (kiln_shape_numel(&n->shape) == 0) return c->idx_state[v] = 1, false;
  if (dim == 0) {
    c->user_err = kiln_diag_set(c->d, KILN_ERR_INVALID_ARGUMENT,
                                "%s '%s': axis %d of the data has size 0, so every index is out of range",
                                kiln_op_name(n->op), n->name, (int)n->a.axis);
    return false;
  }
  const kiln_const *k = kiln_ir_const_of(c->g, n->in[1]);
  if (!k) return true;
  int64_t cnt = kiln_shape_numel(&k->shape);
  for (int64_t i = 0; i < cnt; i++) {
    int64_t x = k->dtype == KILN_I32 ? ((const int32_t *)k->data)[i] : ((const int64_t *)k->data)[i];
    if (x < -dim || x >= dim) {
      c->user_err = kiln_diag_set(c->d, KILN_ERR_INVALID_ARGUMENT,
                                  "%s '%s': constant index %lld (indices element %lld) is out of range [-%lld, %lld)",
                                  kiln_op_name(n->op), n->name, (long long)x, (long long)i, (long long)dim,
                                  (long long)dim);
      return false;
    }
  }
  c->idx_state[v] = 1;
  return false;
}

/* An index value loaded from a tensor for gather node node, made a valid coordinate into
 * a dim of size dim: negative wraps once. Anything outside [-dim, dim) is an error in the
 * input data: a CHECK reports it at run time (unless the indices are constants checked at
 * compile time, or the index's value range proves it cannot happen), and the clamp keeps
 * the read in bounds meanwhile, so compiled code never reads out of bounds. */
static int32_t wrap_index(lower_ctx *c, int32_t node, int32_t v, int64_t dim) {
  v = kiln_pass_kb_cast(KB, v, KILN_I64);
  if (needs_index_check(c, node, dim)) {
    int32_t ok = IX(and, IX(ge, v, INT(-dim)), IX(lt, v, INT(dim)));
    if (!c->kb.oom && c->kb.kx[ok].kind == KILN_KX_CONST && c->kb.kx[ok].i == 0) {
      const kiln_node *n = &c->g->nodes[node];
      c->user_err = kiln_diag_set(c->d, KILN_ERR_INVALID_ARGUMENT,
                                  "%s '%s': every index is out of range [-%lld, %lld)", kiln_op_name(n->op), n->name,
                                  (long long)dim, (long long)dim);
    }
    v = kiln_pass_kb_check(KB, ok, v, c->g->nodes[node].op, node, dim);
  }
  int32_t neg = IX(lt, v, INT(0));
  v = kiln_pass_kb_select(KB, neg, IX(add, v, INT(dim)), v);
  return kiln_pass_kb_clamp(KB, v, 0, dim - 1);
}

static int32_t emit_movement(lower_ctx *c, int32_t v, const int32_t *idx) {
  const kiln_node *n = &c->g->nodes[v];
  const kiln_shape *os = &n->shape;
  int32_t x = n->n_in > 0 ? n->in[0] : -1;
  const kiln_shape *is = x >= 0 ? &c->g->nodes[x].shape : NULL;
  int32_t j[KILN_MAX_RANK];
  switch (n->op) {
  case KILN_OP_reshape:
    kiln_lower_reshape_index(c, os, is, idx, j);
    return kiln_lower_emit(c, x, j);
  case KILN_OP_permute:
    for (int32_t d = 0; d < os->rank; d++) j[n->a.perm[d]] = idx[d];
    return kiln_lower_emit(c, x, j);
  case KILN_OP_broadcast: {
    int32_t off = os->rank - is->rank;
    for (int32_t d = 0; d < is->rank; d++) j[d] = is->dims[d] == 1 ? INT(0) : idx[d + off];
    return kiln_lower_emit(c, x, j);
  }
  case KILN_OP_slice:
    for (int32_t d = 0; d < os->rank; d++)
      j[d] = IX(add, IX(mul, idx[d], INT(n->a.steps[d])), INT(n->a.starts[d]));
    return kiln_lower_emit(c, x, j);
  case KILN_OP_reverse:
    for (int32_t d = 0; d < os->rank; d++) j[d] = idx[d];
    for (int32_t k = 0; k < n->a.n_axes; k++) {
      int32_t d = n->a.axes[k];
      j[d] = IX(sub, INT(os->dims[d] - 1), idx[d]);
    }
    return kiln_lower_emit(c, x, j);
  case KILN_OP_pad: {
    int32_t mask = kiln_pass_kb_bool(KB, true);
    for (int32_t d = 0; d < os->rank; d++) {
      j[d] = IX(sub, idx[d], INT(n->a.lo[d]));
      mask = IX(and, mask, kiln_lower_in_range(c, j[d], 0, is->dims[d]));
    }
    return kiln_lower_emit_masked(c, x, j, mask, n->a.value);
  }
  case KILN_OP_concat: {
    int32_t ax = n->a.axis, result = -1;
    int64_t offs[64], *off = offs;
    if (n->n_in > 64) {
      off = kiln_ir_malloc(c->alloc, sizeof(int64_t) * (size_t)n->n_in);
      if (!off) return c->oom = true, INT(0);
    }
    int64_t o = 0;
    for (int32_t k = 0; k < n->n_in; k++) off[k] = o, o += c->g->nodes[n->in[k]].shape.dims[ax];
    /* select chain from the last input back: each branch reads clamped coordinates */
    for (int32_t k = n->n_in - 1; k >= 0; k--) {
      int64_t len = c->g->nodes[n->in[k]].shape.dims[ax];
      if (len == 0) continue;
      for (int32_t d = 0; d < os->rank; d++) j[d] = idx[d];
      j[ax] = kiln_pass_kb_clamp(KB, IX(sub, idx[ax], INT(off[k])), 0, len - 1);
      int32_t val = kiln_lower_emit(c, n->in[k], j);
      result = result < 0 ? val : kiln_pass_kb_select(KB, IX(lt, idx[ax], INT(off[k] + len)), val, result);
    }
    if (off != offs) kiln_ir_free(c->alloc, off);
    return result >= 0 ? result : kiln_pass_kb_const(KB, n->dtype, 0);
  }
  case KILN_OP_gather: {
    int32_t ax = n->a.axis, q = c->g->nodes[n->in[1]].shape.rank;
    int32_t r = is->rank;
    int32_t iv = kiln_lower_emit(c, n->in[1], idx + ax);
    for (int32_t d = 0; d < ax; d++) j[d] = idx[d];
    j[ax] = wrap_index(c, v, iv, is->dims[ax]);
    for (int32_t d = ax + 1; d < r; d++) j[d] = idx[d - 1 + q];
    return kiln_lower_emit(c, x, j);
  }
  case KILN_OP_gather_elements: {
    int32_t ax = n->a.axis;
    int32_t iv = kiln_lower_emit(c, n->in[1], idx);
    for (int32_t d = 0; d < os->rank; d++) j[d] = idx[d];
    j[ax] = wrap_index(c, v, iv, is->dims[ax]);
    return kiln_lower_emit(c, x, j);
  }
  case KILN_OP_iota:
    return kiln_pass_kb_cast(KB, idx[n->a.axis], n->dtype);
  KILN_OPS_NOT_MOVEMENT(KILN_OP_CASE)
  case KILN_OP_COUNT: break;
  }
  KILN_ASSERT(!"not a movement op");
}

static int32_t emit_reduce(lower_ctx *c, int32_t v, const int32_t *idx) {
  const kiln_node *n = &c->g->nodes[v];
  const kiln_shape *is = &c->g->nodes[n->in[0]].shape;
  bool arg = n->op == KILN_OP_argmax || n->op == KILN_OP_argmin;
  int32_t n_axes = arg ? 1 : n->a.n_axes;
  const int32_t *axes = arg ? &n->a.axis : n->a.axes;
  if (n_axes == 0) return kiln_lower_emit(c, n->in[0], idx);
  int64_t ext[KILN_MAX_RANK];
  for (int32_t k = 0; k < n_axes; k++) ext[k] = is->dims[axes[k]];
  int32_t v0 = kiln_pass_kb_new_vars(KB, n_axes, ext);
  int32_t j[KILN_MAX_RANK], k = 0, pos = 0;
  for (int32_t d = 0; d < is->rank; d++) {
    if (k < n_axes && axes[k] == d) {
      j[d] = kiln_pass_kb_var(KB, v0 + k++);
      if (n->a.keepdims) pos++;
    } else j[d] = idx[pos++];
  }
  int32_t body = kiln_lower_emit(c, n->in[0], j);
  return kiln_pass_kb_reduce(KB, n->op, n->dtype, arg ? n->a.kind : 0, v0, n_axes, body);
}

/* The dtype the inner steps of a node run in (a pool's sum and divide, a contraction's
 * products and sum): f32 for f16/bf16, the node's dtype otherwise. A narrow kx is rounded
 * to its dtype where it is computed (kiln_ir_kx_rounds_narrow), which is right for a
 * node's result only: the interpreter computes these steps wide and rounds once, at the
 * node's output, so they run wide and a cast rounds the result. */
static kiln_dtype wide_dtype(kiln_dtype dt) { return dt == KILN_F16 || dt == KILN_BF16 ? KILN_F32 : dt; }

/* Lowest value of a dtype: what max-pool padding reads (never wins). */
static double lowest(kiln_dtype dt) {
  switch (dt) {
  case KILN_I8: return -128;
  case KILN_I16: return -32768;
  case KILN_I32: return -2147483648.0;
  case KILN_I64: return -9223372036854775808.0;
  case KILN_U8: case KILN_BOOL: return 0;
  default: return -INFINITY;
  }
}

/* conv_cl and pool_cl are emitted as their channels-first forms: output coordinates are
 * taken to channels-first order (cl_index, to_cl false) and operand coordinates back. */
static const int32_t *cl_index(const int32_t *from, int32_t rank, bool to_cl, bool weight, int32_t *out) {
  int32_t perm[KILN_MAX_RANK];
  if (weight) kiln_cl_weight_perm(rank, to_cl, perm);
  else kiln_cl_perm(rank, to_cl, perm);
  for (int32_t d = 0; d < rank; d++) out[d] = from[perm[d]];
  return out;
}

static kiln_shape cl_shape(const kiln_shape *s, bool weight) {
  int32_t perm[KILN_MAX_RANK];
  if (weight) kiln_cl_weight_perm(s->rank, false, perm);
  else kiln_cl_perm(s->rank, false, perm);
  return kiln_shape_permuted(s, perm);
}

static int32_t emit_pool(lower_ctx *c, int32_t v, const int32_t *idx) {
  const kiln_node *n = &c->g->nodes[v];
  int32_t x = n->in[0];
  bool cl = n->op == KILN_OP_pool_cl;
  kiln_shape isf = cl ? cl_shape(&c->g->nodes[x].shape, false) : c->g->nodes[x].shape;
  const kiln_shape *is = &isf;
  int32_t cfi[KILN_MAX_RANK] = {0}, jcl[KILN_MAX_RANK] = {0};
  if (cl) idx = cl_index(idx, is->rank, false, false, cfi);
  int32_t sd = is->rank - 2;
  int32_t w0 = kiln_pass_kb_new_vars(KB, sd, n->a.window);
  int32_t j[KILN_MAX_RANK], mask = kiln_pass_kb_bool(KB, true);
  j[0] = idx[0];
  j[1] = idx[1];
  for (int32_t d = 0; d < sd; d++) {
    j[2 + d] = IX(sub, IX(add, IX(mul, idx[2 + d], INT(n->a.strides[d])),
                          IX(mul, kiln_pass_kb_var(KB, w0 + d), INT(n->a.dilations[d]))),
                  INT(n->a.lo[d]));
    mask = IX(and, mask, kiln_lower_in_range(c, j[2 + d], 0, is->dims[2 + d]));
  }
  const int32_t *jx = cl ? cl_index(j, is->rank, true, false, jcl) : j;
  int32_t (*masked)(lower_ctx *, int32_t, const int32_t *, int32_t, double) = cl ? kiln_lower_emit_clamped : kiln_lower_emit_masked;
  if (n->a.kind == KILN_POOL_MAX) {
    int32_t body = masked(c, x, jx, mask, lowest(n->dtype));
    return kiln_pass_kb_reduce(KB, KILN_OP_reduce_max, n->dtype, 0, w0, sd, body);
  }
  kiln_dtype wt = wide_dtype(n->dtype);
  int32_t sum = kiln_pass_kb_reduce(KB, KILN_OP_reduce_sum, wt, 0, w0, sd,
                                    kiln_pass_kb_cast(KB, masked(c, x, jx, mask, 0), wt));
  if (n->a.kind == KILN_POOL_SUM) return kiln_pass_kb_cast(KB, sum, n->dtype);
  /* avg: divide by the number of window positions inside the counted range: a constant
   * when no window can leave it, else counted by a second loop over fresh variables. */
  int32_t count = -1;
  for (int pass = 0; pass < 2 && count < 0; pass++) {
    int32_t u0 = pass == 0 ? w0 : kiln_pass_kb_new_vars(KB, sd, n->a.window);
    int32_t cmask = kiln_pass_kb_bool(KB, true);
    int64_t full = 1;
    for (int32_t d = 0; d < sd; d++) {
      int32_t p = IX(sub, IX(add, IX(mul, idx[2 + d], INT(n->a.strides[d])),
                             IX(mul, kiln_pass_kb_var(KB, u0 + d), INT(n->a.dilations[d]))),
                     INT(n->a.lo[d]));
      int64_t lo = n->a.count_include_pad ? -n->a.lo[d] : 0;
      int64_t hi = n->a.count_include_pad ? is->dims[2 + d] + n->a.hi[d] : is->dims[2 + d];
      cmask = IX(and, cmask, kiln_lower_in_range(c, p, lo, hi));
      full *= n->a.window[d];
    }
    if (c->kb.oom) return 0;
    bool always = c->kb.kx[cmask].kind == KILN_KX_CONST && c->kb.lo[cmask] == 1;
    if (always) count = kiln_pass_kb_const(KB, wt, (double)full);
    else if (pass == 1) {
      /* A window wholly in padding counts 0 positions; its sum is 0 and the result must
       * be 0 (interp.c's convention), so divide by max(count, 1), never 0/0. */
      int32_t cnt[2] = {kiln_pass_kb_reduce(KB, KILN_OP_reduce_sum, KILN_I64, 0, u0, sd,
                                            kiln_pass_kb_cast(KB, cmask, KILN_I64)),
                        kiln_pass_kb_const(KB, KILN_I64, 1)};
      count = kiln_pass_kb_cast(KB, kiln_pass_kb_alu(KB, KILN_OP_max, KILN_I64, 0, 2, cnt), wt);
    }
  }
  int32_t ops[2] = {sum, count};
  return kiln_pass_kb_cast(KB, kiln_pass_kb_alu(KB, KILN_OP_div, wt, 0, 2, ops), n->dtype);
}

/* dot as a loop: REDUCE sum over k of a[..., m, k] * b[..., k, n]. */
static int32_t emit_dot(lower_ctx *c, int32_t v, const int32_t *idx) {
  const kiln_node *n = &c->g->nodes[v];
  const kiln_shape *as = &c->g->nodes[n->in[0]].shape;
  int32_t r = n->shape.rank;
  int64_t K = as->dims[as->rank - 1];
  int32_t k = kiln_pass_kb_new_vars(KB, 1, &K);
  int32_t ja[KILN_MAX_RANK], jb[KILN_MAX_RANK];
  for (int32_t d = 0; d < r - 2; d++) ja[d] = jb[d] = idx[d];
  ja[r - 2] = idx[r - 2];
  ja[r - 1] = kiln_pass_kb_var(KB, k);
  jb[r - 2] = kiln_pass_kb_var(KB, k);
  jb[r - 1] = idx[r - 1];
  kiln_dtype wt = wide_dtype(n->dtype);
  int32_t ops[2] = {kiln_pass_kb_cast(KB, kiln_lower_emit(c, n->in[0], ja), wt),
                    kiln_pass_kb_cast(KB, kiln_lower_emit(c, n->in[1], jb), wt)};
  int32_t prod = kiln_pass_kb_alu(KB, KILN_OP_mul, wt, 0, 2, ops);
  return kiln_pass_kb_cast(KB, kiln_pass_kb_reduce(KB, KILN_OP_reduce_sum, wt, 0, k, 1, prod), n->dtype);
}

/* conv as a loop: REDUCE sum over (input channel in group, kernel position). */
static int32_t emit_conv(lower_ctx *c, int32_t v, const int32_t *idx) {
  const kiln_node *n = &c->g->nodes[v];
  int32_t x = n->in[0], w = n->in[1];
  bool cl = n->op == KILN_OP_conv_cl;
  kiln_shape xsf = cl ? cl_shape(&c->g->nodes[x].shape, false) : c->g->nodes[x].shape;
  kiln_shape wsf = cl ? cl_shape(&c->g->nodes[w].shape, true) : c->g->nodes[w].shape;
  const kiln_shape *xs = &xsf, *ws = &wsf;
  int32_t cfi[KILN_MAX_RANK] = {0}, xcl[KILN_MAX_RANK] = {0}, wcl[KILN_MAX_RANK] = {0};
  if (cl) idx = cl_index(idx, xs->rank, false, false, cfi);
  int32_t sd = xs->rank - 2;
  int64_t groups = n->a.groups > 0 ? n->a.groups : 1;
  int64_t ext[KILN_MAX_RANK];
  ext[0] = ws->dims[1];
  for (int32_t d = 0; d < sd; d++) ext[1 + d] = ws->dims[2 + d];
  int32_t v0 = kiln_pass_kb_new_vars(KB, 1 + sd, ext);
  int32_t ci = kiln_pass_kb_var(KB, v0);
  int32_t g = IX(div, idx[1], INT(ws->dims[0] / groups));
  int32_t jx[KILN_MAX_RANK], jw[KILN_MAX_RANK], mask = kiln_pass_kb_bool(KB, true);
  jx[0] = idx[0];
  jx[1] = IX(add, IX(mul, g, INT(ws->dims[1])), ci);
  jw[0] = idx[1];
  jw[1] = ci;
  for (int32_t d = 0; d < sd; d++) {
    int32_t kv = kiln_pass_kb_var(KB, v0 + 1 + d);
    jw[2 + d] = kv;
    jx[2 + d] = IX(sub, IX(add, IX(mul, idx[2 + d], INT(n->a.strides[d])), IX(mul, kv, INT(n->a.dilations[d]))),
                   INT(n->a.lo[d]));
    mask = IX(and, mask, kiln_lower_in_range(c, jx[2 + d], 0, xs->dims[2 + d]));
  }
  kiln_dtype wt = wide_dtype(n->dtype);
  int32_t ops[2] = {kiln_pass_kb_cast(KB, cl ? kiln_lower_emit_clamped(c, x, cl_index(jx, xs->rank, true, false, xcl), mask, 0)
                                             : kiln_lower_emit_masked(c, x, jx, mask, 0), wt),
                    kiln_pass_kb_cast(KB, kiln_lower_emit(c, w, cl ? cl_index(jw, xs->rank, true, true, wcl) : jw), wt)};
  int32_t prod = kiln_pass_kb_alu(KB, KILN_OP_mul, wt, 0, 2, ops);
  return kiln_pass_kb_cast(KB, kiln_pass_kb_reduce(KB, KILN_OP_reduce_sum, wt, 0, v0, 1 + sd, prod), n->dtype);
}

/* An f32 constant whose elements are all the same (GELU's 1/sqrt(2), a scale, an epsilon,
 * also where constant folding has broadcast it to a small tensor) as a constant in the
 * kernel rather than a buffer it loads, which LLVM can then fold. -1 where v is not one;
 * constants above SPLAT_MAX_ELEMS elements are not scanned. */
enum { SPLAT_MAX_ELEMS = 4096 };

static int32_t splat_const(lower_ctx *c, int32_t v) {
  const kiln_node *n = &c->g->nodes[v];
  int64_t numel = kiln_shape_numel(&n->shape);
  if (n->op != KILN_OP_constant || n->dtype != KILN_F32 || numel < 1 || numel > SPLAT_MAX_ELEMS || n->index < 0 ||
      n->index >= c->g->n_consts)
    return -1;
  const kiln_const *k = &c->g->consts[n->index];
  if (!k->data || k->nbytes < (size_t)numel * sizeof(float)) return -1;
  const uint32_t *bits = k->data; /* the same bits: -0 and 0, or two NaNs, differ */
  for (int64_t i = 1; i < numel; i++)
    if (bits[i] != bits[0]) return -1;
  float f;
  memcpy(&f, k->data, sizeof f);
  return kiln_pass_kb_const(KB, KILN_F32, (double)f);
}

/* Whether integer div/mod node n needs a run-time check that its divisor is nonzero
 * (ops.def: division by zero is an error in the input data, which the interpreter
 * refuses): not when the divisor is a constant, seen through broadcasts and reshapes,
 * with no zero element. */
static bool divisor_may_be_zero(const kiln_graph *g, const kiln_node *n) {
  if ((n->op != KILN_OP_div && n->op != KILN_OP_mod) || !kiln_dtype_is_int(n->dtype)) return false;
  int32_t b = n->in[1];
  while (g->nodes[b].op == KILN_OP_broadcast || g->nodes[b].op == KILN_OP_reshape) b = g->nodes[b].in[0];
  const kiln_const *k = kiln_ir_const_of(g, b);
  if (!k) return true;
  for (int64_t i = 0, cnt = kiln_shape_numel(&k->shape); i < cnt; i++)
    if (kiln_rt_get_i64(k->dtype, k->data, i) == 0) return true;
  return false;
}

int32_t kiln_lower_emit(lower_ctx *c, int32_t v, const int32_t *idx) {
  const kiln_node *n = &c->g->nodes[v];
  int32_t sc = splat_const(c, v);
  if (sc >= 0) return sc;
  if (kiln_lower_is_buffer(c, v))
    return kiln_pass_kb_load(KB, kiln_lower_buffer_of(c, v), n->dtype, kiln_pass_kb_linearize(KB, idx, &n->shape),
                             -1, 0);
  int32_t r = memo_find(c, v, n->shape.rank, idx);
  if (r >= 0) return r;
  kiln_lower_cover(c, v);
  switch (cat_of(c->g, v)) {
  case KILN_CAT_ELEMENTWISE: {
    int32_t ops[3];
    for (int32_t j = 0; j < n->n_in; j++) ops[j] = kiln_lower_emit(c, n->in[j], idx);
    r = kiln_pass_kb_alu(KB, n->op, n->dtype, n->op == KILN_OP_mod ? n->a.kind : 0, n->n_in, ops);
    if (divisor_may_be_zero(c->g, n)) /* reported through the error word; the kernel computes 0 */
      r = kiln_pass_kb_check(KB, IX(ne, ops[1], kiln_pass_kb_const(KB, n->dtype, 0)), r, n->op, v, 0);
    break;
  }
  case KILN_CAT_MOVEMENT: r = emit_movement(c, v, idx); break;
  case KILN_CAT_REDUCE: r = emit_reduce(c, v, idx); break;
  case KILN_CAT_WINDOW: r = emit_pool(c, v, idx); break;
  case KILN_CAT_CONTRACTION: r = n->op == KILN_OP_dot ? emit_dot(c, v, idx) : emit_conv(c, v, idx); break;
  case KILN_CAT_LEAF: case KILN_CAT_OPAQUE: /* buffers: loaded above */
    KILN_ASSERT(!"node kind cannot be inlined");
    r = 0;
    break;
  }
  memo_put(c, v, n->shape.rank, idx, r);
  return r;
}
/* ------------------------------------------------------------------ per-node kernels */

void kiln_lower_out_vars(lower_ctx *c, int32_t rank, int32_t *idx) {
  for (int32_t d = 0; d < rank; d++) idx[d] = kiln_pass_kb_var(KB, d);
}

/* k's expression: node v computed (not loaded) at every point of its output domain. */
void kiln_lower_emit_root(lower_ctx *c, kiln_kernel *k, int32_t v) {
  int32_t idx[KILN_MAX_RANK];
  c->root = v;
  kiln_lower_out_vars(c, c->g->nodes[v].shape.rank, idx);
  k->root = kiln_lower_emit(c, v, idx);
  c->root = -1;
}

