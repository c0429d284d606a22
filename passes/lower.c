/* lower.c - fusion decisions and lowering of the graph to the kernel IR.
 *
 * Every node is either MATERIALIZED (it gets a buffer; non-leaves get a kernel that
 * writes it) or INLINED (its scalar expression is substituted into each consumer's
 * kernel). The rules (decide_materialized):
 *   - leaves (input, constant) are buffers; graph outputs always get their OUTPUT buffer;
 *   - reduce, window, contraction and opaque nodes are materialized;
 *   - at fusion level NONE every other node is materialized too;
 *   - otherwise an elementwise or movement node with one consumer is inlined into it,
 *     unless the consumer needs buffers for operands (a GEMM-lowered dot/conv, an opaque
 *     op);
 *   - a node with several consumers is materialized, except a cheap index map (broadcast,
 *     reshape, permute, slice, reverse of a buffer or of another such map; iota), which
 *     each consumer recomputes.
 * A kernel's expression is built by emit(node, idx): the value of node at output
 * coordinates idx (kx ids of i64 index expressions). A materialized node is a LOAD; an
 * elementwise node is an ALU over its inputs' expressions; a movement node maps idx to
 * its input's coordinates; reductions, pools and direct convolutions/dots open REDUCE
 * loops over new variables. f32/f64 dots become GEMM kernels; f32/f64 convolutions with
 * a real contraction become an im2col LOOP kernel plus a batched GEMM.
 */
#include "passes-impl.h"

#include <math.h>
#include <string.h>

typedef struct memo_entry {
  int32_t node, rank, result;
  int32_t idx[KILN_MAX_RANK];
} memo_entry;

typedef struct lower_ctx {
  const kiln_graph *g;
  const kiln_pass_target *t;
  kiln_kprogram *p;
  kiln_diag *d;
  const kiln_allocator *alloc;
  uint8_t *mat;          /* per node: has a buffer */
  int32_t *buf_of;       /* per node: buffer id, -1 until created */
  int32_t *n_cons;       /* per node: distinct consumer nodes */
  uint8_t *is_output;
  uint8_t *feeds_buffer_op; /* per node: an operand of a GEMM or opaque kernel */
  uint8_t *cheap;        /* per node: an inlined index map over buffers (recomputable) */
  uint8_t *idx_state;    /* per gather node: 0 not looked at, 1 constant indices all in
                            range (no run-time check), 2 needs a run-time check */
  int32_t *const_buf;    /* per constant-store entry: buffer id or -1 */
  int32_t cap_kernels, cap_buffers;
  /* the kernel being built */
  kiln_pass_kb kb;
  int32_t root;          /* node whose own buffer is being written (computed, not loaded) */
  memo_entry *memo;
  int32_t cap_memo, n_memo;
  int32_t *covered;      /* node ids folded into the current kernel */
  int32_t n_covered;
  uint8_t *in_kernel;
  bool oom;
  kiln_status user_err;  /* a compile-time error in the graph (message in d), stops lowering */
} lower_ctx;

/* ------------------------------------------------------------------ fusion decisions */

static kiln_category cat_of(const kiln_graph *g, int32_t v) {
  return kiln_op_table[g->nodes[v].op].category;
}

/* A dot or conv that becomes a GEMM kernel: its operands must be buffers. */
static bool dot_is_gemm(const kiln_node *n) {
  return n->op == KILN_OP_dot && (n->dtype == KILN_F32 || n->dtype == KILN_F64);
}

static bool conv_is_gemm(const kiln_graph *g, const kiln_node *n) {
  if (n->op != KILN_OP_conv || (n->dtype != KILN_F32 && n->dtype != KILN_F64)) return false;
  const kiln_shape *xs = &g->nodes[n->in[0]].shape, *ws = &g->nodes[n->in[1]].shape;
  int64_t groups = n->a.groups > 0 ? n->a.groups : 1;
  int64_t kvol = 1;
  for (int32_t d = 2; d < ws->rank; d++) kvol *= ws->dims[d];
  int64_t ci_g = xs->dims[1] / groups, co_g = ws->dims[0] / groups;
  /* Depthwise-like convolutions (one output channel per group) are matrix-vector work:
   * a direct loop beats a GEMM call per (batch, group). */
  return co_g > 1 && (ci_g > 1 || kvol > 1);
}

static bool needs_buffer_operands(const kiln_graph *g, int32_t c) {
  const kiln_node *n = &g->nodes[c];
  return dot_is_gemm(n) || conv_is_gemm(g, n) || cat_of(g, c) == KILN_CAT_OPAQUE;
}

static bool is_cheap_map(kiln_op op) {
  return op == KILN_OP_broadcast || op == KILN_OP_reshape || op == KILN_OP_permute ||
         op == KILN_OP_slice || op == KILN_OP_reverse || op == KILN_OP_iota;
}

static void decide_materialized(lower_ctx *c) {
  const kiln_graph *g = c->g;
  int32_t n = g->n_nodes;
  for (int32_t i = 0; i < n; i++) c->n_cons[i] = 0, c->feeds_buffer_op[i] = 0;
  for (int32_t i = 0; i < n; i++) {
    const kiln_node *nd = &g->nodes[i];
    for (int32_t j = 0; j < nd->n_in; j++) {
      int32_t u = nd->in[j];
      bool seen = false;
      for (int32_t k = 0; k < j; k++) seen = seen || nd->in[k] == u;
      if (seen) continue; /* mul(x, x): one consumer */
      c->n_cons[u]++;
    }
    if (needs_buffer_operands(g, i))
      for (int32_t j = 0; j < nd->n_in; j++) c->feeds_buffer_op[nd->in[j]] = 1;
  }
  for (int32_t i = 0; i < n; i++) {
    const kiln_node *nd = &g->nodes[i];
    kiln_category cat = cat_of(g, i);
    bool m;
    if (cat == KILN_CAT_REDUCE && c->t->fusion == KILN_FUSION_FULL && !c->is_output[i] && c->n_cons[i] == 1 &&
        !c->feeds_buffer_op[i] && nd->op != KILN_OP_argmax && nd->op != KILN_OP_argmin)
      m = false; /* inlined into its consumer: a row-wise kernel computes it once per row */
    else if (cat != KILN_CAT_ELEMENTWISE && cat != KILN_CAT_MOVEMENT) m = true;
    else if (c->is_output[i] || c->t->fusion == KILN_FUSION_NONE) m = true;
    else if (c->n_cons[i] == 0) m = false; /* dead: nothing emits it */
    else {
      if (c->feeds_buffer_op[i]) m = true;
      else if (c->n_cons[i] == 1) m = false;
      else {
        /* Recompute a cheap index map in each consumer when it reads a buffer (or
         * another such map): no arithmetic is duplicated, only index math. */
        m = !(is_cheap_map(nd->op) && (nd->n_in == 0 || c->mat[nd->in[0]] || c->cheap[nd->in[0]]));
      }
    }
    c->mat[i] = m;
    c->cheap[i] = !m && is_cheap_map(nd->op) && (nd->n_in == 0 || c->mat[nd->in[0]] || c->cheap[nd->in[0]]);
  }
}

/* ------------------------------------------------------------------ buffers */

static int32_t new_buffer(lower_ctx *c, kiln_buffer_kind kind, kiln_dtype dt, const kiln_shape *s,
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
static int32_t buffer_of(lower_ctx *c, int32_t v) {
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
      c->const_buf[ci] = new_buffer(c, KILN_BUF_CONST, src->dtype, &src->shape, p->n_consts++, n->name);
    }
    return c->buf_of[v] = c->const_buf[ci];
  }
  KILN_ASSERT(n->op != KILN_OP_input);
  return c->buf_of[v] = new_buffer(c, KILN_BUF_ARENA, n->dtype, &n->shape, -1, n->name);
}

/* ------------------------------------------------------------------ kernels */

static kiln_kernel *begin_kernel(lower_ctx *c, kiln_kernel_kind kind, int32_t out_buf,
                                 kiln_dtype dt, const kiln_shape *out) {
  kiln_kprogram *p = c->p;
  KILN_ASSERT(p->n_kernels < c->cap_kernels);
  kiln_kernel *k = &p->kernels[p->n_kernels++];
  memset(k, 0, sizeof *k);
  k->kind = kind;
  k->out_buf = out_buf;
  k->out_dtype = dt;
  k->out = *out;
  k->root = -1;
  k->node = -1; /* set by the caller when out_buf holds a graph value */
  kiln_pass_kb_reset(&c->kb, out);
  c->n_memo = 0;
  for (int32_t i = 0; i < c->cap_memo; i++) c->memo[i].node = -1;
  for (int32_t i = 0; i < c->n_covered; i++) c->in_kernel[c->covered[i]] = 0;
  c->n_covered = 0;
  return k;
}

static void cover(lower_ctx *c, int32_t v) {
  if (c->in_kernel[v]) return;
  c->in_kernel[v] = 1;
  c->covered[c->n_covered++] = v;
}

/* Copies the builder's expression, the sources and a name into the program arena. */
static void end_kernel(lower_ctx *c, kiln_kernel *k, const char *suffix) {
  kiln_kprogram *p = c->p;
  if (c->kb.oom) c->oom = true;
  if (k->kind == KILN_KERNEL_LOOP && !c->oom) {
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
  /* sources in graph order */
  for (int32_t i = 1; i < c->n_covered; i++)
    for (int32_t j = i; j > 0 && c->covered[j - 1] > c->covered[j]; j--) {
      int32_t t = c->covered[j];
      c->covered[j] = c->covered[j - 1];
      c->covered[j - 1] = t;
    }
  k->n_sources = c->n_covered;
  k->sources = kiln_arena_alloc(p->arena, sizeof(char *) * (size_t)(c->n_covered ? c->n_covered : 1));
  char name[96];
  int len = snprintf(name, sizeof name, "k%d", p->n_kernels - 1);
  for (int32_t i = 0; k->sources && i < c->n_covered; i++) {
    const kiln_node *n = &c->g->nodes[c->covered[i]];
    k->sources[i] = kiln_arena_strdup(p->arena, n->name); /* the program outlives the graph */
    if (!k->sources[i]) c->oom = true;
    if (len < 64) len += snprintf(name + len, sizeof name - (size_t)len, "_%s", kiln_op_name(n->op));
  }
  if (suffix && len < 80) snprintf(name + len, sizeof name - (size_t)len, "_%s", suffix);
  /* CHECK nodes were built naming their graph node: name its place in sources instead
   * (the program outlives the graph). */
  for (int32_t i = 0; k->kind == KILN_KERNEL_LOOP && !c->oom && i < k->n_kx; i++) {
    kiln_kx *x = &k->kx[i];
    if (x->kind != KILN_KX_CHECK) continue;
    int32_t at = -1;
    for (int32_t j = 0; j < c->n_covered && at < 0; j++)
      if (c->covered[j] == x->var) at = j;
    x->var = at;
  }
  k->name = kiln_arena_strdup(p->arena, name);
  if (!k->sources || !k->name) c->oom = true;
}

/* ------------------------------------------------------------------ expressions */

static int32_t emit(lower_ctx *c, int32_t v, const int32_t *idx);

static bool is_buffer(lower_ctx *c, int32_t v) { return c->mat[v] && v != c->root; }

static uint32_t memo_slot(const lower_ctx *c, int32_t v, int32_t rank, const int32_t *idx) {
  uint64_t h = (uint64_t)v * 0x9E3779B97F4A7C15ull;
  for (int32_t d = 0; d < rank; d++) h = (h ^ (uint64_t)idx[d]) * 1099511628211ull;
  return (uint32_t)(h ^ (h >> 31)) & (uint32_t)(c->cap_memo - 1);
}

static int32_t memo_find(lower_ctx *c, int32_t v, int32_t rank, const int32_t *idx) {
  if (!c->cap_memo) return -1;
  for (uint32_t s = memo_slot(c, v, rank, idx);; s = (s + 1) & (uint32_t)(c->cap_memo - 1)) {
    memo_entry *e = &c->memo[s];
    if (e->node < 0) return -1;
    if (e->node == v && e->rank == rank && memcmp(e->idx, idx, sizeof(int32_t) * (size_t)rank) == 0)
      return e->result;
  }
}

static void memo_put(lower_ctx *c, int32_t v, int32_t rank, const int32_t *idx, int32_t result) {
  if (4 * (c->n_memo + 1) > 3 * c->cap_memo) {
    int32_t cap = c->cap_memo ? c->cap_memo * 2 : 256;
    memo_entry *old = c->memo;
    int32_t old_cap = c->cap_memo;
    c->memo = kiln_ir_malloc(c->alloc, sizeof(memo_entry) * (size_t)cap);
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
  memo_entry *e = &c->memo[s];
  e->node = v;
  e->rank = rank;
  e->result = result;
  memcpy(e->idx, idx, sizeof(int32_t) * (size_t)rank);
  c->n_memo++;
}

#define KB (&c->kb)
#define IX(op, x, y) kiln_pass_kb_ix(KB, KILN_OP_##op, (x), (y))
#define INT(v) kiln_pass_kb_int(KB, (v))

/* node v at coordinates idx that may lie outside v's shape where mask (a bool kx, or -1
 * for none) is false: there the value is fill. */
static int32_t emit_masked(lower_ctx *c, int32_t v, const int32_t *idx, int32_t mask, double fill) {
  if (mask < 0) return emit(c, v, idx);
  const kiln_node *n = &c->g->nodes[v];
  if (kiln_shape_numel(&n->shape) == 0) return kiln_pass_kb_const(KB, n->dtype, fill);
  int32_t j[KILN_MAX_RANK];
  for (int32_t d = 0; d < n->shape.rank; d++) j[d] = kiln_pass_kb_clamp(KB, idx[d], 0, n->shape.dims[d] - 1);
  if (is_buffer(c, v))
    return kiln_pass_kb_load(KB, buffer_of(c, v), n->dtype, kiln_pass_kb_linearize(KB, j, &n->shape),
                             mask, fill);
  return kiln_pass_kb_select(KB, mask, emit(c, v, j), kiln_pass_kb_const(KB, n->dtype, fill));
}

/* In-range mask of coordinate x in [lo, hi), folded away where it cannot fail. */
static int32_t in_range(lower_ctx *c, int32_t x, int64_t lo, int64_t hi) {
  return IX(and, IX(ge, x, INT(lo)), IX(lt, x, INT(hi)));
}

/* reshape: dims are matched in groups with equal products; within a group the output
 * coordinates are linearized and split again into the input's, so merging or splitting
 * dims costs one mul-add or div/mod and untouched dims pass straight through. */
static void reshape_index(lower_ctx *c, const kiln_shape *out, const kiln_shape *in, const int32_t *idx,
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
    reshape_index(c, os, is, idx, j);
    return emit(c, x, j);
  case KILN_OP_permute:
    for (int32_t d = 0; d < os->rank; d++) j[n->a.perm[d]] = idx[d];
    return emit(c, x, j);
  case KILN_OP_broadcast: {
    int32_t off = os->rank - is->rank;
    for (int32_t d = 0; d < is->rank; d++) j[d] = is->dims[d] == 1 ? INT(0) : idx[d + off];
    return emit(c, x, j);
  }
  case KILN_OP_slice:
    for (int32_t d = 0; d < os->rank; d++)
      j[d] = IX(add, IX(mul, idx[d], INT(n->a.steps[d])), INT(n->a.starts[d]));
    return emit(c, x, j);
  case KILN_OP_reverse:
    for (int32_t d = 0; d < os->rank; d++) j[d] = idx[d];
    for (int32_t k = 0; k < n->a.n_axes; k++) {
      int32_t d = n->a.axes[k];
      j[d] = IX(sub, INT(os->dims[d] - 1), idx[d]);
    }
    return emit(c, x, j);
  case KILN_OP_pad: {
    int32_t mask = kiln_pass_kb_bool(KB, true);
    for (int32_t d = 0; d < os->rank; d++) {
      j[d] = IX(sub, idx[d], INT(n->a.lo[d]));
      mask = IX(and, mask, in_range(c, j[d], 0, is->dims[d]));
    }
    return emit_masked(c, x, j, mask, n->a.value);
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
      int32_t val = emit(c, n->in[k], j);
      result = result < 0 ? val : kiln_pass_kb_select(KB, IX(lt, idx[ax], INT(off[k] + len)), val, result);
    }
    if (off != offs) kiln_ir_free(c->alloc, off);
    return result >= 0 ? result : kiln_pass_kb_const(KB, n->dtype, 0);
  }
  case KILN_OP_gather: {
    int32_t ax = n->a.axis, q = c->g->nodes[n->in[1]].shape.rank;
    int32_t r = is->rank;
    int32_t iv = emit(c, n->in[1], idx + ax);
    for (int32_t d = 0; d < ax; d++) j[d] = idx[d];
    j[ax] = wrap_index(c, v, iv, is->dims[ax]);
    for (int32_t d = ax + 1; d < r; d++) j[d] = idx[d - 1 + q];
    return emit(c, x, j);
  }
  case KILN_OP_gather_elements: {
    int32_t ax = n->a.axis;
    int32_t iv = emit(c, n->in[1], idx);
    for (int32_t d = 0; d < os->rank; d++) j[d] = idx[d];
    j[ax] = wrap_index(c, v, iv, is->dims[ax]);
    return emit(c, x, j);
  }
  case KILN_OP_iota:
    return kiln_pass_kb_cast(KB, idx[n->a.axis], n->dtype);
  default:
    KILN_ASSERT(!"movement op without a lowering");
    return 0;
  }
}

static int32_t emit_reduce(lower_ctx *c, int32_t v, const int32_t *idx) {
  const kiln_node *n = &c->g->nodes[v];
  const kiln_shape *is = &c->g->nodes[n->in[0]].shape;
  bool arg = n->op == KILN_OP_argmax || n->op == KILN_OP_argmin;
  int32_t n_axes = arg ? 1 : n->a.n_axes;
  const int32_t *axes = arg ? &n->a.axis : n->a.axes;
  if (n_axes == 0) return emit(c, n->in[0], idx);
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
  int32_t body = emit(c, n->in[0], j);
  return kiln_pass_kb_reduce(KB, n->op, n->dtype, arg ? n->a.kind : 0, v0, n_axes, body);
}

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

static int32_t emit_pool(lower_ctx *c, int32_t v, const int32_t *idx) {
  const kiln_node *n = &c->g->nodes[v];
  int32_t x = n->in[0];
  const kiln_shape *is = &c->g->nodes[x].shape;
  int32_t sd = is->rank - 2;
  int32_t w0 = kiln_pass_kb_new_vars(KB, sd, n->a.window);
  int32_t j[KILN_MAX_RANK], mask = kiln_pass_kb_bool(KB, true);
  j[0] = idx[0];
  j[1] = idx[1];
  for (int32_t d = 0; d < sd; d++) {
    j[2 + d] = IX(sub, IX(add, IX(mul, idx[2 + d], INT(n->a.strides[d])),
                          IX(mul, kiln_pass_kb_var(KB, w0 + d), INT(n->a.dilations[d]))),
                  INT(n->a.lo[d]));
    mask = IX(and, mask, in_range(c, j[2 + d], 0, is->dims[2 + d]));
  }
  if (n->a.kind == KILN_POOL_MAX) {
    int32_t body = emit_masked(c, x, j, mask, lowest(n->dtype));
    return kiln_pass_kb_reduce(KB, KILN_OP_reduce_max, n->dtype, 0, w0, sd, body);
  }
  int32_t sum = kiln_pass_kb_reduce(KB, KILN_OP_reduce_sum, n->dtype, 0, w0, sd,
                                    emit_masked(c, x, j, mask, 0));
  if (n->a.kind == KILN_POOL_SUM) return sum;
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
      cmask = IX(and, cmask, in_range(c, p, lo, hi));
      full *= n->a.window[d];
    }
    if (c->kb.oom) return 0;
    bool always = c->kb.kx[cmask].kind == KILN_KX_CONST && c->kb.lo[cmask] == 1;
    if (always) count = kiln_pass_kb_const(KB, n->dtype, (double)full);
    else if (pass == 1) {
      /* A window wholly in padding counts 0 positions; its sum is 0 and the result must
       * be 0 (interp.c's convention), so divide by max(count, 1), never 0/0. */
      int32_t cnt[2] = {kiln_pass_kb_reduce(KB, KILN_OP_reduce_sum, KILN_I64, 0, u0, sd,
                                            kiln_pass_kb_cast(KB, cmask, KILN_I64)),
                        kiln_pass_kb_const(KB, KILN_I64, 1)};
      count = kiln_pass_kb_cast(KB, kiln_pass_kb_alu(KB, KILN_OP_max, KILN_I64, 0, 2, cnt), n->dtype);
    }
  }
  int32_t ops[2] = {sum, count};
  return kiln_pass_kb_alu(KB, KILN_OP_div, n->dtype, 0, 2, ops);
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
  int32_t ops[2] = {emit(c, n->in[0], ja), emit(c, n->in[1], jb)};
  int32_t prod = kiln_pass_kb_alu(KB, KILN_OP_mul, n->dtype, 0, 2, ops);
  return kiln_pass_kb_reduce(KB, KILN_OP_reduce_sum, n->dtype, 0, k, 1, prod);
}

/* conv as a loop: REDUCE sum over (input channel in group, kernel position). */
static int32_t emit_conv(lower_ctx *c, int32_t v, const int32_t *idx) {
  const kiln_node *n = &c->g->nodes[v];
  int32_t x = n->in[0], w = n->in[1];
  const kiln_shape *xs = &c->g->nodes[x].shape, *ws = &c->g->nodes[w].shape;
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
    mask = IX(and, mask, in_range(c, jx[2 + d], 0, xs->dims[2 + d]));
  }
  int32_t ops[2] = {emit_masked(c, x, jx, mask, 0), emit(c, w, jw)};
  int32_t prod = kiln_pass_kb_alu(KB, KILN_OP_mul, n->dtype, 0, 2, ops);
  return kiln_pass_kb_reduce(KB, KILN_OP_reduce_sum, n->dtype, 0, v0, 1 + sd, prod);
}

static int32_t emit(lower_ctx *c, int32_t v, const int32_t *idx) {
  const kiln_node *n = &c->g->nodes[v];
  if (is_buffer(c, v))
    return kiln_pass_kb_load(KB, buffer_of(c, v), n->dtype, kiln_pass_kb_linearize(KB, idx, &n->shape),
                             -1, 0);
  int32_t r = memo_find(c, v, n->shape.rank, idx);
  if (r >= 0) return r;
  cover(c, v);
  switch (cat_of(c->g, v)) {
  case KILN_CAT_ELEMENTWISE: {
    int32_t ops[3];
    for (int32_t j = 0; j < n->n_in; j++) ops[j] = emit(c, n->in[j], idx);
    r = kiln_pass_kb_alu(KB, n->op, n->dtype, n->op == KILN_OP_mod ? n->a.kind : 0, n->n_in, ops);
    break;
  }
  case KILN_CAT_MOVEMENT: r = emit_movement(c, v, idx); break;
  case KILN_CAT_REDUCE: r = emit_reduce(c, v, idx); break;
  case KILN_CAT_WINDOW: r = emit_pool(c, v, idx); break;
  case KILN_CAT_CONTRACTION: r = n->op == KILN_OP_dot ? emit_dot(c, v, idx) : emit_conv(c, v, idx); break;
  default: KILN_ASSERT(!"node kind cannot be inlined"); r = 0;
  }
  memo_put(c, v, n->shape.rank, idx, r);
  return r;
}

/* ------------------------------------------------------------------ per-node kernels */

static void out_vars(lower_ctx *c, int32_t rank, int32_t *idx) {
  for (int32_t d = 0; d < rank; d++) idx[d] = kiln_pass_kb_var(KB, d);
}

static void lower_loop(lower_ctx *c, int32_t v) {
  const kiln_node *n = &c->g->nodes[v];
  kiln_kernel *k = begin_kernel(c, KILN_KERNEL_LOOP, c->buf_of[v], n->dtype, &n->shape);
  k->node = v;
  c->root = v;
  int32_t idx[KILN_MAX_RANK];
  out_vars(c, n->shape.rank, idx);
  k->root = emit(c, v, idx);
  c->root = -1;
  end_kernel(c, k, NULL);
}

/* y = x as a loop (a graph output that is a leaf, or the second output of one node):
 * dst_buf then holds node v's value. */
static void lower_copy(lower_ctx *c, int32_t src_buf, int32_t dst_buf, int32_t v, const char *what) {
  const kiln_buffer *b = &c->p->buffers[dst_buf];
  kiln_kernel *k = begin_kernel(c, KILN_KERNEL_LOOP, dst_buf, b->dtype, &b->shape);
  k->node = v;
  int32_t idx[KILN_MAX_RANK];
  out_vars(c, b->shape.rank, idx);
  k->root = kiln_pass_kb_load(KB, src_buf, b->dtype, kiln_pass_kb_linearize(KB, idx, &b->shape), -1, 0);
  end_kernel(c, k, "copy");
  k->n_sources = 1;
  k->sources[0] = kiln_arena_strdup(c->p->arena, what);
  if (!k->sources[0]) c->oom = true;
}

static void lower_dot_gemm(lower_ctx *c, int32_t v) {
  const kiln_node *n = &c->g->nodes[v];
  const kiln_shape *as = &c->g->nodes[n->in[0]].shape;
  int32_t r = n->shape.rank;
  int64_t M = n->shape.dims[r - 2], N = n->shape.dims[r - 1], K = as->dims[r - 1], B = 1;
  for (int32_t d = 0; d < r - 2; d++) B *= n->shape.dims[d];
  kiln_kernel *k = begin_kernel(c, KILN_KERNEL_GEMM, c->buf_of[v], n->dtype, &n->shape);
  k->node = v;
  kiln_gemm_desc *gd = &k->gemm;
  gd->a_buf = buffer_of(c, n->in[0]);
  gd->b_buf = buffer_of(c, n->in[1]);
  gd->c_buf = c->buf_of[v];
  gd->m = M, gd->n = N, gd->k = K;
  gd->lda = K, gd->ldb = N, gd->ldc = N;
  if (B > 1) { /* batch dims are dense in all three: flattened into one loop */
    gd->n_batch = 1;
    gd->batch[0] = B;
    gd->a_bstride[0] = M * K, gd->b_bstride[0] = K * N, gd->c_bstride[0] = M * N;
  }
  cover(c, v);
  end_kernel(c, k, "gemm");
}

/* conv through GEMM: C[n, g] (Co/G x OHW) = W[g] (Co/G x Kc) * col[n, g] (Kc x OHW). */
static void lower_conv_gemm(lower_ctx *c, int32_t v) {
  const kiln_node *n = &c->g->nodes[v];
  int32_t x = n->in[0], w = n->in[1];
  const kiln_shape *xs = &c->g->nodes[x].shape, *ws = &c->g->nodes[w].shape;
  int32_t sd = xs->rank - 2;
  int64_t G = n->a.groups > 0 ? n->a.groups : 1, N = xs->dims[0];
  int64_t cig = ws->dims[1], cog = ws->dims[0] / G, kvol = 1, P = 1;
  bool pointwise = true; /* 1x1, stride 1, no padding: x already is the column matrix */
  for (int32_t d = 0; d < sd; d++) {
    kvol *= ws->dims[2 + d];
    P *= n->shape.dims[2 + d];
    pointwise = pointwise && ws->dims[2 + d] == 1 && n->a.strides[d] == 1 && n->a.lo[d] == 0 &&
                n->a.hi[d] == 0;
  }
  int64_t Kc = cig * kvol;
  int32_t col = buffer_of(c, x);
  if (!pointwise) {
    int64_t cd[4] = {N, G, Kc, P};
    kiln_shape cs = kiln_shape_make(4, cd);
    char nm[160];
    snprintf(nm, sizeof nm, "%s.col", n->name);
    col = new_buffer(c, KILN_BUF_ARENA, n->dtype, &cs, -1, nm);
    kiln_kernel *k = begin_kernel(c, KILN_KERNEL_LOOP, col, n->dtype, &cs);
    int32_t idx[4];
    out_vars(c, 4, idx);
    int64_t rd[KILN_MAX_RANK + 1], pd[KILN_MAX_RANK];
    rd[0] = cig;
    for (int32_t d = 0; d < sd; d++) rd[1 + d] = ws->dims[2 + d], pd[d] = n->shape.dims[2 + d];
    kiln_shape rs = kiln_shape_make(1 + sd, rd), ps = kiln_shape_make(sd, pd);
    kiln_shape r1 = kiln_shape_make(1, &Kc), p1 = kiln_shape_make(1, &P);
    int32_t rj[KILN_MAX_RANK], pj[KILN_MAX_RANK], jx[KILN_MAX_RANK];
    /* split r into (ci, k...) and p into (o...): a reshape from the flat dim */
    reshape_index(c, &r1, &rs, &idx[2], rj);
    reshape_index(c, &p1, &ps, &idx[3], pj);
    int32_t mask = kiln_pass_kb_bool(KB, true);
    jx[0] = idx[0];
    jx[1] = IX(add, IX(mul, idx[1], INT(cig)), rj[0]);
    for (int32_t d = 0; d < sd; d++) {
      jx[2 + d] = IX(sub, IX(add, IX(mul, pj[d], INT(n->a.strides[d])), IX(mul, rj[1 + d], INT(n->a.dilations[d]))),
                     INT(n->a.lo[d]));
      mask = IX(and, mask, in_range(c, jx[2 + d], 0, xs->dims[2 + d]));
    }
    k->root = emit_masked(c, x, jx, mask, 0);
    cover(c, v);
    end_kernel(c, k, "im2col");
  }
  kiln_kernel *k = begin_kernel(c, KILN_KERNEL_GEMM, c->buf_of[v], n->dtype, &n->shape);
  k->node = v;
  kiln_gemm_desc *gd = &k->gemm;
  gd->a_buf = buffer_of(c, w);
  gd->b_buf = col;
  gd->c_buf = c->buf_of[v];
  gd->m = cog, gd->n = P, gd->k = Kc;
  gd->lda = Kc, gd->ldb = P, gd->ldc = P;
  int32_t nb = 0;
  if (N > 1) {
    gd->batch[nb] = N;
    gd->a_bstride[nb] = 0, gd->b_bstride[nb] = G * Kc * P, gd->c_bstride[nb] = G * cog * P;
    nb++;
  }
  if (G > 1) {
    gd->batch[nb] = G;
    gd->a_bstride[nb] = cog * Kc, gd->b_bstride[nb] = Kc * P, gd->c_bstride[nb] = cog * P;
    nb++;
  }
  gd->n_batch = nb;
  cover(c, v);
  end_kernel(c, k, "gemm");
}

static void lower_opaque(lower_ctx *c, int32_t v) {
  const kiln_node *n = &c->g->nodes[v];
  kiln_kernel *k = begin_kernel(c, KILN_KERNEL_OPAQUE, c->buf_of[v], n->dtype, &n->shape);
  k->node = v;
  k->op = n->op;
  k->attrs = n->a;
  k->n_in_bufs = n->n_in;
  k->in_bufs = kiln_arena_alloc(c->p->arena, sizeof(int32_t) * (size_t)(n->n_in ? n->n_in : 1));
  if (!k->in_bufs) c->oom = true;
  for (int32_t j = 0; k->in_bufs && j < n->n_in; j++) k->in_bufs[j] = buffer_of(c, n->in[j]);
  cover(c, v);
  end_kernel(c, k, NULL);
}

/* ------------------------------------------------------------------ the program */

static kiln_status copy_interface(lower_ctx *c) {
  const kiln_graph *g = c->g;
  kiln_kprogram *p = c->p;
  kiln_arena *ar = p->arena;
  p->name = kiln_arena_strdup(ar, g->name);
  p->n_inputs = g->n_inputs;
  p->n_outputs = g->n_outputs;
  p->inputs = kiln_arena_alloc(ar, sizeof(kiln_graph_io) * (size_t)(g->n_inputs + 1));
  p->outputs = kiln_arena_alloc(ar, sizeof(kiln_graph_io) * (size_t)(g->n_outputs + 1));
  p->in_dtypes = kiln_arena_alloc(ar, sizeof(kiln_dtype) * (size_t)(g->n_inputs + 1));
  p->out_dtypes = kiln_arena_alloc(ar, sizeof(kiln_dtype) * (size_t)(g->n_outputs + 1));
  p->in_shapes = kiln_arena_alloc(ar, sizeof(kiln_shape) * (size_t)(g->n_inputs + 1));
  p->out_shapes = kiln_arena_alloc(ar, sizeof(kiln_shape) * (size_t)(g->n_outputs + 1));
  if (!p->name || !p->inputs || !p->outputs || !p->in_dtypes || !p->out_dtypes || !p->in_shapes ||
      !p->out_shapes)
    return KILN_ERR_OUT_OF_MEMORY;
  for (int32_t i = 0; i < g->n_inputs; i++) {
    const kiln_node *n = &g->nodes[g->inputs[i].node];
    p->inputs[i].node = -1;
    p->inputs[i].name = kiln_arena_strdup(ar, g->inputs[i].name);
    for (int32_t d = 0; d < n->shape.rank; d++)
      if (g->inputs[i].dim_names[d]) p->inputs[i].dim_names[d] = kiln_arena_strdup(ar, g->inputs[i].dim_names[d]);
    p->in_dtypes[i] = n->dtype;
    p->in_shapes[i] = n->shape;
  }
  for (int32_t i = 0; i < g->n_outputs; i++) {
    const kiln_node *n = &g->nodes[g->outputs[i].node];
    p->outputs[i].node = -1;
    p->outputs[i].name = kiln_arena_strdup(ar, g->outputs[i].name);
    p->out_dtypes[i] = n->dtype;
    p->out_shapes[i] = n->shape;
  }
  return KILN_OK;
}

static kiln_status lower_all(lower_ctx *c) {
  const kiln_graph *g = c->g;
  kiln_kprogram *p = c->p;
  int32_t n = g->n_nodes;
  c->cap_buffers = g->n_inputs + g->n_outputs + 2 * n + 1;
  c->cap_kernels = 2 * n + g->n_outputs + 1;
  p->buffers = kiln_arena_alloc(p->arena, sizeof(kiln_buffer) * (size_t)c->cap_buffers);
  p->kernels = kiln_arena_alloc(p->arena, sizeof(kiln_kernel) * (size_t)c->cap_kernels);
  p->consts = kiln_arena_alloc(p->arena, sizeof(kiln_const) * (size_t)(g->n_consts + 1));
  if (!p->buffers || !p->kernels || !p->consts || copy_interface(c) != KILN_OK)
    return KILN_ERR_OUT_OF_MEMORY;
  for (int32_t i = 0; i < g->n_inputs; i++) {
    int32_t v = g->inputs[i].node;
    c->buf_of[v] = new_buffer(c, KILN_BUF_INPUT, g->nodes[v].dtype, &g->nodes[v].shape, i, g->inputs[i].name);
  }
  int32_t first_out = p->n_buffers;
  for (int32_t i = 0; i < g->n_outputs; i++) {
    int32_t v = g->outputs[i].node;
    int32_t b = new_buffer(c, KILN_BUF_OUTPUT, g->nodes[v].dtype, &g->nodes[v].shape, i, g->outputs[i].name);
    if (c->buf_of[v] < 0 && cat_of(g, v) != KILN_CAT_LEAF) c->buf_of[v] = b;
  }
  decide_materialized(c);
  for (int32_t v = 0; v < n && !c->oom && !c->user_err; v++) {
    const kiln_node *nd = &g->nodes[v];
    if (!c->mat[v] || cat_of(g, v) == KILN_CAT_LEAF) continue;
    if (!c->is_output[v] && c->n_cons[v] == 0) continue; /* dead */
    buffer_of(c, v);
    if (dot_is_gemm(nd)) lower_dot_gemm(c, v);
    else if (conv_is_gemm(g, nd)) lower_conv_gemm(c, v);
    else if (cat_of(g, v) == KILN_CAT_OPAQUE) lower_opaque(c, v);
    else lower_loop(c, v);
  }
  /* Outputs whose buffer is not written by their node's kernel get a copy. */
  for (int32_t i = 0; i < g->n_outputs && !c->oom && !c->user_err; i++) {
    int32_t v = g->outputs[i].node, b = first_out + i;
    int32_t src = buffer_of(c, v);
    if (src != b) lower_copy(c, src, b, v, g->nodes[v].name);
  }
  return c->oom ? KILN_ERR_OUT_OF_MEMORY : c->user_err;
}

kiln_status kiln_pass_lower(const kiln_graph *g, const kiln_pass_target *t, kiln_kprogram **out,
                            kiln_diag *d) {
  *out = NULL;
  kiln_pass_target deft = {KILN_TARGET_CPU, KILN_FUSION_FULL};
  lower_ctx c;
  memset(&c, 0, sizeof c);
  c.g = g;
  c.t = t ? t : &deft;
  c.d = d;
  c.alloc = g->alloc;
  c.kb.alloc = g->alloc;
  c.root = -1;
  int32_t n = g->n_nodes;
  size_t nn = (size_t)(n ? n : 1);
  c.p = kiln_ir_kprogram_create(g->alloc);
  int32_t *ints = kiln_ir_malloc(g->alloc, sizeof(int32_t) * nn * 3 + sizeof(int32_t) * (size_t)(g->n_consts + 1));
  uint8_t *bytes = kiln_ir_malloc(g->alloc, nn * 6);
  kiln_status st = KILN_OK;
  if (!c.p || !ints || !bytes) {
    st = kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory lowering graph '%s'", g->name);
    goto done;
  }
  c.buf_of = ints, c.n_cons = ints + n, c.covered = ints + 2 * n;
  c.const_buf = ints + 3 * n;
  c.mat = bytes, c.is_output = bytes + n, c.in_kernel = bytes + 2 * n;
  c.feeds_buffer_op = bytes + 3 * n;
  c.cheap = bytes + 4 * n;
  c.idx_state = bytes + 5 * n;
  for (int32_t i = 0; i < n; i++) c.buf_of[i] = -1, c.is_output[i] = 0, c.in_kernel[i] = 0, c.idx_state[i] = 0;
  for (int32_t i = 0; i < g->n_consts; i++) c.const_buf[i] = -1;
  for (int32_t i = 0; i < g->n_outputs; i++) c.is_output[g->outputs[i].node] = 1;
  st = lower_all(&c);
  if (st != KILN_OK) {
    if (st == KILN_ERR_OUT_OF_MEMORY) kiln_diag_set(d, st, "out of memory lowering graph '%s'", g->name);
    goto done;
  }
  kiln_diag vd = {0};
  if (kiln_ir_kprogram_verify(c.p, &vd) != KILN_OK) {
    st = kiln_diag_set(d, KILN_ERR_INTERNAL, "lowering of graph '%s' produced an invalid kernel program: %s",
                       g->name, vd.msg);
    goto done;
  }
done:
  kiln_pass_kb_free(&c.kb);
  kiln_ir_free(g->alloc, c.memo);
  kiln_ir_free(g->alloc, ints);
  kiln_ir_free(g->alloc, bytes);
  if (st != KILN_OK) kiln_ir_kprogram_destroy(c.p);
  else *out = c.p;
  return st;
}
