/* fuse.c - the fusion decisions: which nodes get a buffer and which kernel computes each
 * of the others, as a kiln_fusion_plan that lowering (lower.c) then emits. Nothing here
 * builds a kernel.
 *
 * Every node is MATERIALIZED (it gets a buffer; non-leaves are computed by a kernel of
 * their own) or INLINED (its scalar expression is substituted into its consumers'
 * kernels). Every decision is taken before anything is emitted, and every fusion refused
 * is recorded with the reason (the fusion report):
 *   - leaves are buffers; graph outputs get their OUTPUT buffer; opaque ops are barriers;
 *   - at --fusion none every node is materialized;
 *   - elementwise and movement nodes are inlined into their consumers; one read by
 *     several kernels is recomputed in each when it is an index map or costs at most
 *     RECOMPUTE_FLOPS flop/element (the op table's cost column), else materialized; a
 *     costly one read through an overlapping window is materialized (the recompute cost
 *     model);
 *   - at --fusion full a reduction (or window, or direct contraction) is inlined into its
 *     one consumer when it is computed once per point of the kernel it lands in: an
 *     epilogue over its own domain, or a row-wise kernel (softmax, layer norm) when it
 *     reduces the last axis and the kernel has its input's domain (reduce_fits);
 *   - f32/f64 dots and convolutions are GEMM kernels. At full fusion their elementwise
 *     consumers up to one escaping node become the GEMM's epilogue (grow_epilogue), an
 *     elementwise A operand only the dot reads its prologue where the target packs A
 *     (choose_prologue), dot operands that are strided views of a buffer are read in
 *     place (kiln_pass_dot_views, view.c), and a dot whose only use is a permute/reshape
 *     chain into a materialized node writes that node's buffer through a view (permute
 *     sinking).
 * make_groups then turns the decisions into the plan's groups, in the order their
 * kernels run: a group per materialized non-leaf node (a GEMM's at its epilogue's sink),
 * its members the nodes its kernel computes, and a COPY per graph output whose value is
 * already in another buffer.
 */
#include "passes-impl.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct fuse_ctx {
  const kiln_graph *g;
  const kiln_pass_target *t;
  kiln_fusion_plan *p;
  uint8_t *mat;          /* per node: has a buffer (the plan's) */
  uint8_t *is_output;    /* the plan's */
  int32_t *n_cons;       /* per node: distinct consumer nodes */
  int32_t *cons_at, *cons; /* the distinct consumers of node u: cons[cons_at[u] .. cons_at[u+1]) */
  uint8_t *feeds_buffer_op; /* per node: an operand of a GEMM or opaque kernel */
  uint8_t *in_group;     /* scratch of grow_epilogue, all 0 between calls */
  uint8_t *dense;        /* per GEMM dot: operands read as their own buffers (kiln_pass_dot_views) */
  uint8_t *prologue;     /* per node: a GEMM dot's A operand its pack computes (no buffer) */
  uint8_t *cheap;        /* per node: an inlined index map over buffers (recomputable) */
  int32_t *epi_sink;     /* per GEMM contraction: last node of its fused epilogue, or -1 */
  int32_t *epi_of;       /* per node: the GEMM contraction whose epilogue computes it, or -1 */
  int32_t *sunk_to;      /* per GEMM dot: the permute/reshape node whose buffer it writes
                            directly through a strided output view, or -1 */
  int32_t *sunk_by;      /* per node: the GEMM dot that writes its buffer (sunk_to), or -1 */
  int32_t *kern;         /* per node: the kernel (root node) it is computed in; -2: several */
  int32_t *cost;         /* per node: flop per element of its expression as inlined */
  int32_t cap_refused;
  bool oom;
} fuse_ctx;

static kiln_category cat_of(const kiln_graph *g, int32_t v) { return kiln_op_table[g->nodes[v].op].category; }

/* The first consumer of u (the only one when n_cons[u] == 1), or -1. */
static int32_t first_consumer(const fuse_ctx *c, int32_t u) { return c->n_cons[u] ? c->cons[c->cons_at[u]] : -1; }

static bool needs_buffer_operands(const kiln_graph *g, int32_t c) {
  return kiln_pass_is_gemm(g, c) || cat_of(g, c) == KILN_CAT_OPAQUE;
}

static void *zalloc(fuse_ctx *c, size_t n) {
  void *p = kiln_arena_alloc(c->p->arena, n ? n : 1);
  if (!p) c->oom = true;
  return p;
}

/* A fusion considered and refused, for the fusion report. */
static void refuse(fuse_ctx *c, int32_t producer, int32_t consumer, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void refuse(fuse_ctx *c, int32_t producer, int32_t consumer, const char *fmt, ...) {
  kiln_fusion_plan *p = c->p;
  if (p->n_refused == c->cap_refused) {
    int32_t cap = c->cap_refused ? 2 * c->cap_refused : 16;
    kiln_plan_refusal *r = zalloc(c, sizeof *r * (size_t)cap);
    if (!r) return;
    if (p->n_refused) memcpy(r, p->refused, sizeof *r * (size_t)p->n_refused);
    p->refused = r;
    c->cap_refused = cap;
  }
  char reason[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(reason, sizeof reason, fmt, ap);
  va_end(ap);
  kiln_plan_refusal *r = &p->refused[p->n_refused++];
  r->producer = producer;
  r->consumer = consumer;
  r->reason = kiln_arena_strdup(p->arena, reason);
  if (!r->reason) c->oom = true;
}

/* Above this many flop per element, a producer read by several kernels is materialized
 * once instead of recomputed in each (the recompute cost model). */
#define RECOMPUTE_FLOPS 8

/* ------------------------------------------------------------------ GEMM epilogues */

/* Shrinks grow_epilogue's candidate members until exactly one (the last, the sink) is read
 * outside the group (or is an output) and has the product's dtype; returns how many stay. */
static int32_t shrink_epilogue(fuse_ctx *c, int32_t v, const int32_t *members, int32_t nm, uint8_t *in_group) {
  while (nm > 0) {
    int32_t escapes = 0, bad = 0;
    for (int32_t i = -1; i < nm; i++) {
      int32_t u = i < 0 ? v : members[i];
      bool esc = c->is_output[u];
      for (int32_t e = c->cons_at[u]; e < c->cons_at[u + 1] && !esc; e++) esc = !in_group[c->cons[e]];
      if (esc) escapes++, bad += u != members[nm - 1];
    }
    if (escapes == 1 && !bad && c->g->nodes[members[nm - 1]].dtype == c->g->nodes[v].dtype) break;
    in_group[members[--nm]] = 0;
  }
  return nm;
}

/* The epilogue of GEMM contraction v: the elementwise ops (and reshapes that keep the
 * last dim) after it, up to one node whose value leaves the group, applied to each
 * output tile while it is in cache. Sets epi_sink/epi_of. */
static void grow_epilogue(fuse_ctx *c, int32_t v, uint8_t *in_group) {
  const kiln_graph *g = c->g;
  const kiln_node *gv = &g->nodes[v];
  int32_t members[256], nm = 0;
  if (c->is_output[v] || c->n_cons[v] == 0) return;
  in_group[v] = 1;
  int64_t last = gv->shape.dims[gv->shape.rank - 1];
  for (int32_t u = v + 1; u < g->n_nodes && nm < 256; u++) {
    const kiln_node *nd = &g->nodes[u];
    bool touches = false, ok = true;
    for (int32_t j = 0; j < nd->n_in; j++) touches = touches || in_group[nd->in[j]];
    if (!touches) continue;
    if (c->epi_of[u] >= 0) ok = false; /* in an earlier contraction's epilogue */
    else if (cat_of(g, u) == KILN_CAT_ELEMENTWISE) ok = true;
    else if (nd->op == KILN_OP_reshape) ok = nd->shape.rank > 0 && nd->shape.dims[nd->shape.rank - 1] == last;
    else ok = false;
    if (ok && nd->dtype != gv->dtype && kiln_dtype_is_float(nd->dtype)) ok = false;
    if (!ok) continue; /* u reads the group but stays outside: it makes its reader escape */
    in_group[u] = 1;
    members[nm++] = u;
  }
  nm = shrink_epilogue(c, v, members, nm, in_group);
  if (nm == 0) {
    in_group[v] = 0;
    int32_t u = first_consumer(c, v);
    if (c->n_cons[v] > 1) refuse(c, v, -1, "contraction result has %d consumers: no epilogue", c->n_cons[v]);
    else if (u >= 0 && g->nodes[u].op != KILN_OP_permute && g->nodes[u].op != KILN_OP_reshape)
      refuse(c, v, u, "%s is not elementwise over the contraction's output: no epilogue", kiln_op_name(g->nodes[u].op));
    return;
  }
  int32_t sink = members[nm - 1];
  c->epi_sink[v] = sink;
  for (int32_t i = 0; i < nm; i++) c->epi_of[members[i]] = v, in_group[members[i]] = 0;
  in_group[v] = 0;
  if (c->n_cons[sink] == 1 && !c->is_output[sink]) {
    int32_t u = first_consumer(c, sink);
    kiln_category cu = cat_of(g, u);
    if (cu == KILN_CAT_REDUCE || cu == KILN_CAT_WINDOW)
      refuse(c, sink, u, "epilogue ends before %s: reductions are not fused into a contraction's epilogue",
             kiln_op_name(g->nodes[u].op));
  }
}

/* ------------------------------------------------------------------ GEMM prologues */

/* The first node of u's expression, as a prologue would inline it, that is neither
 * elementwise nor movement nor certain to have a buffer (a reduction, a window, a direct
 * contraction: a softmax feeding attention's second product stays one row kernel), or -1.
 * depth bounds the walk (-2 when it runs out). */
static int32_t prologue_blocker(fuse_ctx *c, int32_t u, int depth) {
  const kiln_graph *g = c->g;
  kiln_category cat = cat_of(g, u);
  if (cat == KILN_CAT_LEAF || c->is_output[u] || kiln_pass_is_gemm(g, u) || cat == KILN_CAT_OPAQUE ||
      c->epi_sink[u] >= 0 || c->epi_of[u] >= 0)
    return -1; /* a buffer: an input, a constant, a GEMM's or its epilogue's output */
  if (cat != KILN_CAT_ELEMENTWISE && cat != KILN_CAT_MOVEMENT) return c->n_cons[u] > 1 ? -1 : u;
  if (depth > 32) return -2;
  for (int32_t j = 0; j < g->nodes[u].n_in; j++) {
    int32_t b = prologue_blocker(c, g->nodes[u].in[j], depth + 1);
    if (b != -1) return b;
  }
  return -1;
}

/* Why dot v's A operand u cannot be its prologue, or NULL when it can (buf holds a
 * formatted reason). */
static const char *prologue_refusal(fuse_ctx *c, int32_t v, int32_t u, char *buf, size_t n) {
  const kiln_graph *g = c->g;
  const kiln_node *nd = &g->nodes[v];
  int32_t w = first_consumer(c, v);
  int32_t blocker = prologue_blocker(c, u, 0);
  kiln_pass_view cv, av, bv;
  kiln_gemm_desc gd;
  kiln_pass_view_dense(&cv, v, &nd->shape);
  if (!c->t->desc.gemm_prologue) return "the target has no GEMM prologue";
  if (blocker == -2) return "its expression is too deep";
  if (blocker >= 0) {
    snprintf(buf, n, "its expression holds a %s", kiln_op_name(g->nodes[blocker].op));
    return buf;
  }
  if (g->nodes[u].dtype != nd->dtype) return "its dtype is not the product's";
  if (!c->is_output[v] && c->n_cons[v] == 1 && w >= 0 &&
      (g->nodes[w].op == KILN_OP_permute || g->nodes[w].op == KILN_OP_reshape))
    return "the product's output may be sunk into a layout change";
  if (!kiln_pass_dot_views(g, c->is_output, v, c->dense[v], &cv, &av, &bv, &gd) || !kiln_pass_prologue_fits(&av, &gd, u))
    return "the product has batch loops or reads A through a view";
  if (gd.m * gd.k * (int64_t)kiln_dtype_size(nd->dtype) > c->t->desc.pack_tile_bytes)
  {
    snprintf(buf, n, "A is larger than one pack tile (%g MiB)", (double)c->t->desc.pack_tile_bytes / (1 << 20));
    return buf;
  }
  return NULL;
}

/* GEMM prologue: dot v's A operand, when it is an elementwise op (a cast, an activation)
 * that only v reads, is computed by the GEMM kernel's pack sub-kernel (pack_a, one tile)
 * instead of by a kernel of its own writing a buffer: each element once, into a scratch
 * tile that stays in cache. Only where A is the operand itself, read densely as one
 * [m, k] matrix (no batch loop, no transpose) of at most one pack tile, where the target
 * packs A, and not where the product's output is sunk into a permute (its views are
 * chosen later). Otherwise the operand is a buffer, and the report says why. */
static void choose_prologue(fuse_ctx *c, int32_t v) {
  const kiln_graph *g = c->g;
  const kiln_node *n = &g->nodes[v];
  for (int32_t j = 0; j < 2; j++) {
    int32_t u = n->in[j];
    if (cat_of(g, u) != KILN_CAT_ELEMENTWISE || c->is_output[u] || c->n_cons[u] != 1 || c->epi_of[u] >= 0 ||
        c->epi_sink[u] >= 0 || n->in[1 - j] == u)
      continue;
    char buf[96];
    const char *why = j == 1 ? "it is the GEMM's B operand (prologues are fused into A)"
                             : prologue_refusal(c, v, u, buf, sizeof buf);
    if (why) {
      refuse(c, u, v, "%s as a GEMM operand is materialized: %s", kiln_op_name(g->nodes[u].op), why);
      continue;
    }
    c->prologue[u] = 1;
    c->feeds_buffer_op[u] = 0;
  }
}

/* ------------------------------------------------------------------ materialization */

/* Consumer counts and lists, and which nodes GEMM and opaque kernels need as buffers. */
static void count_consumers(fuse_ctx *c, bool full) {
  const kiln_graph *g = c->g;
  int32_t n = g->n_nodes;
  for (int32_t i = 0; i < n; i++) {
    const kiln_node *nd = &g->nodes[i];
    for (int32_t j = 0; j < nd->n_in; j++) {
      bool seen = false;
      for (int32_t k = 0; k < j; k++) seen = seen || nd->in[k] == nd->in[j];
      if (!seen) c->n_cons[nd->in[j]]++; /* mul(x, x): one consumer */
    }
    if (needs_buffer_operands(g, i) && !(full && kiln_pass_dot_is_gemm(nd))) /* full: dots read views */
      for (int32_t j = 0; j < nd->n_in; j++) {
        /* a conv_cl entering the channels-last region reads the channels-first source
         * itself (A^T, or its pack through the permute): that must be a buffer, or a pool
         * before it would be computed again for every im2col element; a direct
         * convolution reads the permute's own buffer */
        int32_t src = j == 0 && !kiln_pass_conv_direct(g, nd, &c->t->desc) ? kiln_pass_cl_source(g, nd) : -1;
        c->feeds_buffer_op[src >= 0 ? src : nd->in[j]] = 1;
      }
  }
  c->cons_at[0] = 0;
  for (int32_t i = 0; i < n; i++) c->cons_at[i + 1] = c->cons_at[i] + c->n_cons[i], c->cost[i] = c->cons_at[i];
  for (int32_t i = 0; i < n; i++) { /* c->cost is the fill cursor until the cost model */
    const kiln_node *nd = &g->nodes[i];
    for (int32_t j = 0; j < nd->n_in; j++) {
      bool seen = false;
      for (int32_t k = 0; k < j; k++) seen = seen || nd->in[k] == nd->in[j];
      if (!seen) c->cons[c->cost[nd->in[j]]++] = i;
    }
  }
  for (int32_t i = 0; i < n; i++) c->cost[i] = 0;
}

/* The views GEMM dot v reads its operands through (operand j dense where bit j of dense
 * is set) when it writes its own value densely; false when they do not fit a GEMM. */
static bool operand_views(fuse_ctx *c, int32_t v, uint8_t dense, kiln_pass_view *av, kiln_pass_view *bv) {
  kiln_pass_view cv;
  kiln_gemm_desc gd;
  kiln_pass_view_dense(&cv, v, &c->g->nodes[v].shape);
  return kiln_pass_dot_views(c->g, c->is_output, v, dense, &cv, av, bv, &gd);
}

/* GEMM dot operands that are strided views of a buffer need only that buffer: each
 * operand through its view where the GEMM can read it, else as a buffer of its own. */
static void choose_operand_views(fuse_ctx *c) {
  const kiln_graph *g = c->g;
  for (int32_t i = 0; i < g->n_nodes; i++) {
    if (!kiln_pass_dot_is_gemm(&g->nodes[i])) continue;
    kiln_pass_view av, bv;
    for (c->dense[i] = 0; c->dense[i] < 3; c->dense[i]++)
      if (operand_views(c, i, c->dense[i], &av, &bv)) break;
    if (c->dense[i] == 3) operand_views(c, i, 3, &av, &bv); /* both dense: always a GEMM */
    c->feeds_buffer_op[av.base] = c->feeds_buffer_op[bv.base] = 1;
  }
}

/* The first decision for node i, before the cost model revisits inlined ones. */
static bool first_decision(fuse_ctx *c, int32_t i, bool full, bool none) {
  const kiln_graph *g = c->g;
  const kiln_node *nd = &g->nodes[i];
  kiln_category cat = cat_of(g, i);
  if (c->epi_sink[i] >= 0) return true; /* its buffer is its sink's */
  if (c->epi_of[i] >= 0) return c->epi_sink[c->epi_of[i]] == i;
  if (cat == KILN_CAT_LEAF || cat == KILN_CAT_OPAQUE || kiln_pass_is_gemm(g, i) || c->is_output[i] || none) return true;
  if (c->n_cons[i] == 0) return false; /* dead: nothing emits it */
  if (c->feeds_buffer_op[i]) return true;
  if (cat == KILN_CAT_ELEMENTWISE || cat == KILN_CAT_MOVEMENT) return false;
  if (kiln_op_has(nd->op, KILN_OPF_INDEX)) return true; /* argmax/argmin */
  if (!full) {
    if (c->n_cons[i] == 1)
      refuse(c, i, first_consumer(c, i), "fusing a %s into its consumer needs --fusion full", kiln_category_name(cat));
    return true;
  }
  if (c->n_cons[i] > 1) {
    refuse(c, i, -1, "%s result has %d consumers: materialized", kiln_category_name(cat), c->n_cons[i]);
    return true;
  }
  return false; /* reduce/window/direct contraction inlined: checked by the cost model */
}

/* Whether inlined reduction (or window/direct contraction) r is computed once per point
 * of the kernel it ends up in: its consumer kernel has r's own domain (an epilogue
 * after it), or r reduces its input's last axis and the kernel has the input's domain
 * (a row-wise kernel such as softmax or layer norm: once per row). */
static bool reduce_fits(fuse_ctx *c, int32_t r, int32_t root) {
  const kiln_node *n = &c->g->nodes[r];
  int64_t kn = kiln_shape_numel(&c->g->nodes[root].shape);
  if (kn == kiln_shape_numel(&n->shape)) return true;
  if (cat_of(c->g, r) != KILN_CAT_REDUCE) return false;
  const kiln_shape *is = &c->g->nodes[n->in[0]].shape;
  if (kn != kiln_shape_numel(is)) return false;
  int32_t last = is->rank - 1;
  while (last > 0 && is->dims[last] == 1) last--;
  for (int32_t k = 0; k < n->a.n_axes; k++)
    if (n->a.axes[k] != last && is->dims[n->a.axes[k]] != 1) return false;
  return true;
}

/* Taps per output element of a window consumer w (pool or direct convolution). */
static double window_reuse(fuse_ctx *c, int32_t w) {
  const kiln_node *n = &c->g->nodes[w];
  if (n->op != KILN_OP_pool && n->op != KILN_OP_conv && n->op != KILN_OP_pool_cl && n->op != KILN_OP_conv_cl)
    return 1;
  const kiln_shape *xs = &c->g->nodes[n->in[0]].shape;
  double taps = 1;
  for (int32_t d = 0; d + 2 < xs->rank; d++) {
    const kiln_node *wt = n->n_in > 1 ? &c->g->nodes[n->in[1]] : NULL;
    int64_t win = !wt ? n->a.window[d] : wt->shape.dims[n->op == KILN_OP_conv_cl ? d : 2 + d];
    int64_t st = n->a.strides[d] > 0 ? n->a.strides[d] : 1;
    taps *= (double)win / (double)st;
  }
  return taps;
}

/* One round of the cost model over the inlined nodes: which are cheap index maps, what
 * each costs as inlined, which kernel each lands in. */
static void cost_round(fuse_ctx *c) {
  const kiln_graph *g = c->g;
  int32_t n = g->n_nodes;
  for (int32_t i = 0; i < n; i++) {
    const kiln_node *nd = &g->nodes[i];
    c->cheap[i] = !c->mat[i] && kiln_op_has(nd->op, KILN_OPF_REMAP) && /* ops.def REMAP */
                  (nd->n_in == 0 || c->mat[nd->in[0]] || c->cheap[nd->in[0]]);
    int32_t cost = c->mat[i] ? 0 : kiln_op_table[nd->op].cost; /* ops.def COST */
    kiln_category cat = cat_of(g, i);
    if (!c->mat[i] && (cat == KILN_CAT_ELEMENTWISE || cat == KILN_CAT_MOVEMENT))
      for (int32_t j = 0; j < nd->n_in; j++) cost += c->mat[nd->in[j]] ? 0 : c->cost[nd->in[j]];
    c->cost[i] = cost > 1000000 ? 1000000 : cost;
  }
  for (int32_t i = n - 1; i >= 0; i--) {
    if (c->mat[i]) {
      c->kern[i] = i;
      continue;
    }
    int32_t k = -1;
    for (int32_t e = c->cons_at[i]; e < c->cons_at[i + 1] && k != -2; e++) {
      int32_t w = c->cons[e];
      int32_t kw = c->mat[w] ? w : c->kern[w];
      if (c->epi_of[w] >= 0) kw = c->epi_of[w];
      if (kw < 0) continue;
      k = k == -1 ? kw : k == kw ? k : -2;
    }
    c->kern[i] = k;
  }
}

/* Whether inlined node i must be materialized after all (refusal recorded). */
static bool must_materialize(fuse_ctx *c, int32_t i) {
  const kiln_node *nd = &c->g->nodes[i];
  kiln_category cat = cat_of(c->g, i);
  if (cat == KILN_CAT_ELEMENTWISE || cat == KILN_CAT_MOVEMENT) {
    if (c->kern[i] == -2 && !c->cheap[i] && c->cost[i] > RECOMPUTE_FLOPS && c->epi_of[i] < 0) {
      refuse(c, i, -1, "producer has %d consumers in several kernels and costs %d flop/element: materialized",
             c->n_cons[i], c->cost[i]);
      return true;
    }
    int32_t w = first_consumer(c, i);
    double reuse = c->n_cons[i] == 1 && w >= 0 ? window_reuse(c, w) : 1;
    if (reuse > 1.5 && c->cost[i] * reuse > RECOMPUTE_FLOPS && c->cost[i] > 1) {
      refuse(c, i, w, "consumer reads each element %.1f times (window) and producer costs %d flop/element: materialized",
             reuse, c->cost[i]);
      return true;
    }
    return false;
  }
  if (c->kern[i] == -2 || c->kern[i] < 0 || !reduce_fits(c, i, c->kern[i])) {
    refuse(c, i, first_consumer(c, i),
           c->kern[i] >= 0 ? "%s would be recomputed for every element of the consumer's kernel: materialized"
                           : "%s is read by several kernels: materialized",
           kiln_op_name(nd->op));
    return true;
  }
  return false;
}

/* ------------------------------------------------------------------ permute sinking */

/* The chain of permutes/reshapes from GEMM dot v's only use to a materialized node, which
 * v may then write through a view: its length (chain[0] first), 0 when there is none. */
static int32_t sink_chain(fuse_ctx *c, int32_t v, int32_t *chain) {
  const kiln_graph *g = c->g;
  int32_t nc = 0, w = first_consumer(c, v);
  while (nc < 16 && w >= 0 && (g->nodes[w].op == KILN_OP_permute || g->nodes[w].op == KILN_OP_reshape)) {
    chain[nc++] = w;
    if (c->mat[w] || c->n_cons[w] != 1) break;
    w = first_consumer(c, w);
  }
  return nc > 0 && c->mat[chain[nc - 1]] ? nc : 0;
}

/* Permute sinking: a GEMM dot whose only use is a chain of permutes/reshapes into a
 * materialized node writes that node's buffer directly through a strided view. */
static void sink_permutes(fuse_ctx *c) {
  const kiln_graph *g = c->g;
  for (int32_t v = 0; v < g->n_nodes; v++) {
    if (!kiln_pass_dot_is_gemm(&g->nodes[v]) || c->epi_sink[v] >= 0 || c->is_output[v] || c->n_cons[v] != 1) continue;
    int32_t chain[16], nc = sink_chain(c, v, chain);
    if (nc == 0) continue;
    int32_t f = chain[nc - 1];
    kiln_pass_view cv, av, bv;
    kiln_gemm_desc gd;
    bool ok = kiln_pass_sunk_view(g, v, f, &cv);
    if (ok && kiln_pass_dot_views(g, c->is_output, v, c->dense[v], &cv, &av, &bv, &gd)) {
      c->sunk_to[v] = f;
      c->sunk_by[f] = v;
    } else refuse(c, v, f, "the layout change after the contraction is not a strided view of its output");
  }
}

/* A movement op copied only so a GEMM can read it (not one a GEMM writes): say why. */
static void explain_operand_copies(fuse_ctx *c) {
  const kiln_graph *g = c->g;
  for (int32_t i = 0; i < g->n_nodes; i++) {
    if (!kiln_pass_dot_is_gemm(&g->nodes[i])) continue;
    kiln_pass_view av, bv;
    operand_views(c, i, c->dense[i], &av, &bv);
    for (int32_t j = 0; j < 2; j++) {
      int32_t m = j ? bv.base : av.base;
      if (cat_of(g, m) == KILN_CAT_MOVEMENT && c->sunk_by[m] < 0 && !c->is_output[m])
        refuse(c, m, i, "%s is not a strided view the GEMM can read: materialized", kiln_op_name(g->nodes[m].op));
    }
  }
}

static void decide(fuse_ctx *c) {
  const kiln_graph *g = c->g;
  int32_t n = g->n_nodes;
  bool full = c->t->fusion == KILN_FUSION_FULL, none = c->t->fusion == KILN_FUSION_NONE;
  for (int32_t i = 0; i < n; i++) c->epi_sink[i] = c->epi_of[i] = c->sunk_to[i] = c->sunk_by[i] = -1;
  count_consumers(c, full);
  if (full) {
    choose_operand_views(c);
    for (int32_t i = 0; i < n; i++)
      if (kiln_pass_is_gemm(g, i)) grow_epilogue(c, i, c->in_group);
    for (int32_t i = 0; i < n; i++)
      if (kiln_pass_dot_is_gemm(&g->nodes[i])) choose_prologue(c, i);
  }
  for (int32_t i = 0; i < n; i++) c->mat[i] = first_decision(c, i, full, none);
  bool changed = true;
  for (int iter = 0; changed && iter < 64; iter++) {
    changed = false;
    cost_round(c);
    for (int32_t i = 0; i < n; i++)
      if (!c->mat[i] && c->n_cons[i] > 0 && must_materialize(c, i)) c->mat[i] = changed = true;
  }
  if (full) {
    sink_permutes(c);
    explain_operand_copies(c);
  }
}

/* ------------------------------------------------------------------ groups */

typedef struct member_set {
  int32_t *list;   /* node ids, then sorted */
  int32_t n;
  uint8_t *in;     /* per node: in the list (cleared by the caller after use) */
} member_set;

static void add_member(member_set *s, int32_t v) {
  if (s->in[v]) return;
  s->in[v] = 1;
  s->list[s->n++] = v;
}

/* v and every node of v's expression that is inlined (not a buffer), stopping also at
 * `stop` (a GEMM's product inside its epilogue). Iterative: graphs may be deep. */
static void add_expression(fuse_ctx *c, member_set *s, int32_t v, int32_t stop, int32_t *stack) {
  const kiln_graph *g = c->g;
  int32_t top = 0;
  if (s->in[v]) return;
  add_member(s, v);
  stack[top++] = v;
  while (top > 0) {
    const kiln_node *nd = &g->nodes[stack[--top]];
    for (int32_t j = 0; j < nd->n_in; j++) {
      int32_t u = nd->in[j];
      if (u == stop || c->mat[u] || cat_of(g, u) == KILN_CAT_LEAF || s->in[u]) continue;
      add_member(s, u);
      stack[top++] = u;
    }
  }
}

/* The nodes a GEMM group computes: the contraction, its epilogue's expression, its
 * prologue's, the permute/reshape chain it is sunk through, and the inlined permute a
 * channels-last convolution reads its channels-first source through. */
static void gemm_members(fuse_ctx *c, member_set *s, int32_t v, int32_t *stack) {
  const kiln_graph *g = c->g;
  const kiln_node *n = &g->nodes[v];
  add_member(s, v);
  if (c->epi_sink[v] >= 0) add_expression(c, s, c->epi_sink[v], v, stack);
  int32_t u = n->in[0];
  if (c->prologue[u] && !c->mat[u]) add_expression(c, s, u, -1, stack);
  for (int32_t w = c->sunk_to[v]; w >= 0 && w != v; w = g->nodes[w].in[0]) add_member(s, w);
  if (n->op == KILN_OP_conv_cl && !c->mat[u]) add_expression(c, s, u, -1, stack);
}

/* A dot's operands read in place: the movement nodes between each operand and its base. */
static void gemm_views(fuse_ctx *c, kiln_fusion_group *gr, int32_t v) {
  const kiln_graph *g = c->g;
  const kiln_node *n = &g->nodes[v];
  int32_t views[128], nv = 0;
  for (int32_t j = 0; j < 2 && kiln_pass_dot_is_gemm(n) && c->t->fusion == KILN_FUSION_FULL; j++) {
    if (c->dense[v] & (1u << j)) continue;
    for (int32_t u = n->in[j]; !c->mat[u] && cat_of(g, u) == KILN_CAT_MOVEMENT && nv < 128; u = g->nodes[u].in[0]) {
      if (c->prologue[u]) break;
      views[nv++] = u;
    }
  }
  gr->n_views = nv;
  gr->views = zalloc(c, sizeof(int32_t) * (size_t)nv);
  if (gr->views) memcpy(gr->views, views, sizeof(int32_t) * (size_t)nv);
}

static int cmp_i32(const void *a, const void *b) {
  int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
  return (x > y) - (x < y);
}

/* The category a report gives the group: a GEMM's is contraction; a loop's the
 * heaviest of its members (movement < elementwise < reduce < ...). */
static kiln_category group_category(const kiln_graph *g, const kiln_fusion_group *gr) {
  if (gr->kind == KILN_GROUP_GEMM) return KILN_CAT_CONTRACTION;
  if (gr->kind == KILN_GROUP_OPAQUE) return KILN_CAT_OPAQUE;
  if (gr->kind == KILN_GROUP_COPY) return KILN_CAT_ELEMENTWISE;
  kiln_category best = KILN_CAT_MOVEMENT;
  for (int32_t i = 0; i < gr->n_members; i++) {
    kiln_category cat = cat_of(g, gr->members[i]);
    if (cat != KILN_CAT_MOVEMENT && (best == KILN_CAT_MOVEMENT || cat > best)) best = cat;
  }
  return best;
}

static kiln_fusion_group *new_group(fuse_ctx *c, kiln_group_kind kind, int32_t root) {
  kiln_fusion_group *gr = &c->p->groups[c->p->n_groups++];
  memset(gr, 0, sizeof *gr);
  gr->kind = kind;
  gr->root = root;
  gr->contraction = gr->prologue = gr->epilogue = gr->sunk_to = gr->output = -1;
  return gr;
}

/* The group of materialized node v (its kernel is emitted here), or NULL when v needs
 * none: a leaf, dead, written by a GEMM it is sunk into, or a GEMM emitted at its sink. */
static kiln_fusion_group *group_at(fuse_ctx *c, member_set *s, int32_t v, int32_t *stack) {
  const kiln_graph *g = c->g;
  if (!c->mat[v] || cat_of(g, v) == KILN_CAT_LEAF || (!c->is_output[v] && c->n_cons[v] == 0)) return NULL;
  if (c->sunk_by[v] >= 0 || c->epi_sink[v] >= 0) return NULL;
  int32_t gemm = c->epi_of[v] >= 0 ? c->epi_of[v] : kiln_pass_is_gemm(g, v) ? v : -1;
  kiln_fusion_group *gr;
  if (gemm >= 0) {
    int32_t dst = c->epi_sink[gemm] >= 0 ? c->epi_sink[gemm] : c->sunk_to[gemm] >= 0 ? c->sunk_to[gemm] : gemm;
    gr = new_group(c, KILN_GROUP_GEMM, dst);
    gr->contraction = gemm;
    gr->epilogue = c->epi_sink[gemm];
    gr->sunk_to = c->sunk_to[gemm];
    gr->dense_operands = c->t->fusion == KILN_FUSION_FULL ? c->dense[gemm] : 3;
    int32_t u = g->nodes[gemm].in[0];
    gr->prologue = c->prologue[u] && !c->mat[u] ? u : -1;
    gemm_members(c, s, gemm, stack);
    gemm_views(c, gr, gemm);
  } else if (cat_of(g, v) == KILN_CAT_OPAQUE) {
    gr = new_group(c, KILN_GROUP_OPAQUE, v);
    add_member(s, v);
  } else {
    gr = new_group(c, KILN_GROUP_LOOP, v);
    add_expression(c, s, v, -1, stack);
  }
  return gr;
}

/* Moves the member set into group gr (sorted) and records the group of each member. */
static void take_members(fuse_ctx *c, member_set *s, kiln_fusion_group *gr, int32_t gi) {
  qsort(s->list, (size_t)s->n, sizeof(int32_t), cmp_i32);
  gr->n_members = s->n;
  gr->members = zalloc(c, sizeof(int32_t) * (size_t)s->n);
  for (int32_t i = 0; i < s->n; i++) {
    int32_t u = s->list[i];
    if (gr->members) gr->members[i] = u;
    s->in[u] = 0;
    int32_t *pg = &c->p->group[u];
    *pg = *pg == -1 || *pg == gi ? gi : -2;
  }
  s->n = 0;
  gr->category = group_category(c->g, gr);
}

static void make_groups(fuse_ctx *c) {
  const kiln_graph *g = c->g;
  kiln_fusion_plan *p = c->p;
  int32_t n = g->n_nodes;
  p->groups = zalloc(c, sizeof(kiln_fusion_group) * (size_t)(n + g->n_outputs + 1));
  member_set s = {zalloc(c, sizeof(int32_t) * (size_t)(n + 1)), 0, zalloc(c, (size_t)n + 1)};
  int32_t *stack = zalloc(c, sizeof(int32_t) * (size_t)(n + 1));
  if (c->oom) return;
  for (int32_t v = 0; v < n; v++) p->group[v] = -1;
  for (int32_t v = 0; v < n; v++) {
    kiln_fusion_group *gr = group_at(c, &s, v, stack);
    if (gr) take_members(c, &s, gr, p->n_groups - 1);
  }
  /* Outputs whose value is not their own buffer's (a leaf, or a node that is an earlier
   * output too) are copied there. */
  for (int32_t i = 0; i < g->n_outputs; i++) {
    int32_t v = g->outputs[i].node;
    bool earlier = false;
    for (int32_t j = 0; j < i; j++) earlier = earlier || g->outputs[j].node == v;
    if (!earlier && cat_of(g, v) != KILN_CAT_LEAF) continue;
    kiln_fusion_group *gr = new_group(c, KILN_GROUP_COPY, v);
    gr->output = i;
    gr->category = group_category(g, gr);
  }
}

static bool alloc_ctx(fuse_ctx *c, int32_t n, size_t n_edges) {
  kiln_fusion_plan *p = c->p;
  size_t nn = (size_t)n + 1;
  p->materialized = c->mat = zalloc(c, nn);
  p->is_output = c->is_output = zalloc(c, nn);
  p->group = zalloc(c, sizeof(int32_t) * nn);
  c->n_cons = zalloc(c, sizeof(int32_t) * nn);
  c->cons_at = zalloc(c, sizeof(int32_t) * (nn + 1));
  c->cons = zalloc(c, sizeof(int32_t) * n_edges);
  c->feeds_buffer_op = zalloc(c, nn);
  c->in_group = zalloc(c, nn);
  c->dense = zalloc(c, nn);
  c->prologue = zalloc(c, nn);
  c->cheap = zalloc(c, nn);
  int32_t **ints[] = {&c->epi_sink, &c->epi_of, &c->sunk_to, &c->sunk_by, &c->kern, &c->cost};
  for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) *ints[i] = zalloc(c, sizeof(int32_t) * nn);
  return !c->oom;
}

kiln_status kiln_pass_fuse(const kiln_graph *g, const kiln_pass_target *t, kiln_fusion_plan **out, kiln_diag *d) {
  *out = NULL;
  kiln_arena *ar = kiln_arena_create(g->alloc);
  kiln_fusion_plan *p = ar ? kiln_arena_alloc(ar, sizeof *p) : NULL;
  if (!p) {
    kiln_arena_destroy(ar);
    return kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory planning the fusion of graph '%s'", g->name);
  }
  p->g = g;
  p->arena = ar;
  p->fusion = t->fusion;
  p->n_nodes = g->n_nodes;
  fuse_ctx c = {.g = g, .t = t, .p = p};
  size_t n_edges = 1;
  for (int32_t i = 0; i < g->n_nodes; i++) n_edges += (size_t)g->nodes[i].n_in;
  if (alloc_ctx(&c, g->n_nodes, n_edges)) {
    for (int32_t i = 0; i < g->n_outputs; i++) c.is_output[g->outputs[i].node] = 1;
    decide(&c);
    make_groups(&c);
  }
  if (c.oom) {
    kiln_pass_plan_destroy(p);
    return kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory planning the fusion of graph '%s'", g->name);
  }
  kiln_diag vd = {0};
  if (kiln_pass_plan_verify(p, &vd) != KILN_OK) {
    if (getenv("KILN_DEBUG_PLAN")) kiln_pass_plan_print(p, stderr);
    kiln_pass_plan_destroy(p);
    if (vd.status == KILN_ERR_OUT_OF_MEMORY) return kiln_diag_set(d, vd.status, "%s", vd.msg);
    return kiln_diag_set(d, KILN_ERR_INTERNAL, "the fusion plan of graph '%s' is invalid: %s", g->name, vd.msg);
  }
  *out = p;
  return KILN_OK;
}

void kiln_pass_plan_destroy(kiln_fusion_plan *p) {
  if (p) kiln_arena_destroy(p->arena);
}

