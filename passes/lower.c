/* lower.c - the fusion engine: fusion decisions, and lowering of the graph to the kernel
 * IR.
 *
 * Every node is either MATERIALIZED (it gets a buffer; non-leaves get a kernel that
 * writes it) or INLINED (its scalar expression is substituted into its consumers'
 * kernels). decide_materialized takes every decision before anything is emitted, and
 * records every fusion it refuses, with the reason, in the program (the fusion report):
 *   - leaves are buffers; graph outputs get their OUTPUT buffer; opaque ops are barriers;
 *   - at --fusion none every node is materialized;
 *   - elementwise and movement nodes are inlined into their consumers; one read by
 *     several kernels is recomputed in each when it is an index map or costs at most
 *     RECOMPUTE_FLOPS flop/element, else materialized; a costly one read through an
 *     overlapping window is materialized (the recompute cost model);
 *   - at --fusion full a reduction (or window, or direct contraction) is inlined into its
 *     one consumer when it is computed once per point of the kernel it lands in: an
 *     epilogue over its own domain, or a row-wise kernel (softmax, layer norm) when it
 *     reduces the last axis and the kernel has its input's domain (reduce_fits);
 *   - f32/f64 dots and convolutions are GEMM kernels. At full fusion their elementwise
 *     consumers up to one escaping node become the GEMM's epilogue sub-kernel
 *     (grow_epilogue), a convolution packs its im2col matrix tile by tile in a pack
 *     sub-kernel, dot operands that are strided views of a buffer are read in place
 *     (operand_view, view.c), and a dot whose only use is a permute/reshape chain into a
 *     materialized node writes that node's buffer through a view (permute sinking).
 * A kernel's expression is built by emit(node, idx): the value of node at output
 * coordinates idx (kx ids of i64 index expressions). A materialized node is a LOAD; an
 * elementwise node is an ALU over its inputs' expressions; a movement node maps idx to
 * its input's coordinates; reductions, pools and direct convolutions/dots open REDUCE
 * loops over new variables.
 */
#include "passes-impl.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
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
  uint8_t *in_group;     /* scratch of grow_epilogue, all 0 between calls */
  uint8_t *view_mode;    /* per GEMM dot: operands read as their own buffers (dot_views) */
  uint8_t *prologue;     /* per node: a GEMM dot's A operand its pack computes (no buffer) */
  uint8_t *cheap;        /* per node: an inlined index map over buffers (recomputable) */
  uint8_t *idx_state;    /* per gather node: 0 not looked at, 1 constant indices all in
                            range (no run-time check), 2 needs a run-time check */
  int32_t *const_buf;    /* per constant-store entry: buffer id or -1 */
  int32_t *epi_sink;     /* per GEMM contraction: last node of its fused epilogue, or -1 */
  int32_t *epi_of;       /* per node: the GEMM contraction whose epilogue computes it, or -1 */
  int32_t *sunk_to;      /* per GEMM dot: the permute/reshape node whose buffer it writes
                            directly through a strided output view, or -1 */
  int32_t *sunk_by;      /* per node: the GEMM dot that writes its buffer (sunk_to), or -1 */
  int32_t *kern;         /* per node: the kernel (root node) it is computed in; -2: several */
  int32_t *cost;         /* per node: flop per element of its expression as inlined */
  int32_t *cons_at, *cons; /* the distinct consumers of node u: cons[cons_at[u] .. cons_at[u+1]) */
  int32_t n_refused, cap_refused;
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

/* The first consumer of u (the only one when n_cons[u] == 1), or -1. */
static int32_t first_consumer(const lower_ctx *c, int32_t u) {
  return c->n_cons[u] ? c->cons[c->cons_at[u]] : -1;
}

/* A dot or conv that becomes a GEMM kernel: its operands must be buffers. */
static bool dot_is_gemm(const kiln_node *n) {
  return n->op == KILN_OP_dot && (n->dtype == KILN_F32 || n->dtype == KILN_F64);
}

bool kiln_pass_conv_is_gemm(const kiln_graph *g, const kiln_node *n) {
  if ((n->op != KILN_OP_conv && n->op != KILN_OP_conv_cl) || (n->dtype != KILN_F32 && n->dtype != KILN_F64))
    return false;
  bool cl = n->op == KILN_OP_conv_cl; /* weights [k..., Ci/G, Co], else [Co, Ci/G, k...] */
  const kiln_shape *ws = &g->nodes[n->in[1]].shape;
  int32_t r = ws->rank;
  int64_t groups = n->a.groups > 0 ? n->a.groups : 1, kvol = 1;
  for (int32_t d = 0; d < r - 2; d++) kvol *= ws->dims[cl ? d : 2 + d];
  int64_t ci_g = ws->dims[cl ? r - 2 : 1], co_g = ws->dims[cl ? r - 1 : 0] / groups;
  if (cl && groups > 1) return false; /* groups of one: C is then [pixels, Co], dense */
  /* Depthwise-like convolutions (one output channel per group) are matrix-vector work:
   * a direct loop beats a GEMM call per (batch, group). */
  return co_g > 1 && (ci_g > 1 || kvol > 1);
}

static bool conv_is_gemm(const kiln_graph *g, const kiln_node *n) { return kiln_pass_conv_is_gemm(g, n); }

/* A conv_cl GEMM whose x is the layout pass's permute to channels last of a channels-first
 * value (where it enters the channels-last region: a network's first convolution): that
 * value, which the GEMM reads without a transposed copy (a pack reads it through the
 * permute's index map, a 1x1 convolution as A^T); else -1. */
static int32_t cl_source(const kiln_graph *g, const kiln_node *n) {
  const kiln_node *x = &g->nodes[n->in[0]];
  if (n->op != KILN_OP_conv_cl || x->op != KILN_OP_permute || !conv_is_gemm(g, n)) return -1;
  int32_t perm[KILN_MAX_RANK];
  kiln_cl_perm(x->shape.rank, true, perm);
  return memcmp(perm, x->a.perm, sizeof(int32_t) * (size_t)x->shape.rank) == 0 ? x->in[0] : -1;
}

static bool needs_buffer_operands(const kiln_graph *g, int32_t c) {
  const kiln_node *n = &g->nodes[c];
  return dot_is_gemm(n) || conv_is_gemm(g, n) || cat_of(g, c) == KILN_CAT_OPAQUE;
}

static bool is_cheap_map(kiln_op op) {
  return op == KILN_OP_broadcast || op == KILN_OP_reshape || op == KILN_OP_permute ||
         op == KILN_OP_slice || op == KILN_OP_reverse || op == KILN_OP_iota;
}

/* A fusion the lowering considered and refused, for the fusion report. */
static void refuse(lower_ctx *c, int32_t producer, int32_t consumer, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void refuse(lower_ctx *c, int32_t producer, int32_t consumer, const char *fmt, ...) {
  kiln_kprogram *p = c->p;
  if (c->n_refused == c->cap_refused) {
    int32_t cap = c->cap_refused ? 2 * c->cap_refused : 16;
    kiln_fusion_refusal *r = kiln_arena_alloc(p->arena, sizeof *r * (size_t)cap);
    if (!r) return (void)(c->oom = true);
    if (c->n_refused) memcpy(r, p->refused, sizeof *r * (size_t)c->n_refused);
    p->refused = r;
    c->cap_refused = cap;
  }
  char reason[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(reason, sizeof reason, fmt, ap);
  va_end(ap);
  kiln_fusion_refusal *r = &p->refused[c->n_refused++];
  r->producer = kiln_arena_strdup(p->arena, c->g->nodes[producer].name);
  r->consumer = consumer >= 0 ? kiln_arena_strdup(p->arena, c->g->nodes[consumer].name) : "";
  r->reason = kiln_arena_strdup(p->arena, reason);
  if (!r->producer || !r->consumer || !r->reason) c->oom = true;
  p->n_refused = c->n_refused;
}

/* Flop per element of one elementwise op, for the recompute cost model: transcendental
 * functions cost about what a vectorized polynomial does, division and roots a few. */
static int32_t op_cost(kiln_op op) {
  switch (op) {
  case KILN_OP_exp: case KILN_OP_log: case KILN_OP_tanh: case KILN_OP_erf: case KILN_OP_sigmoid:
  case KILN_OP_sin: case KILN_OP_cos: case KILN_OP_pow: return 16;
  case KILN_OP_div: case KILN_OP_sqrt: case KILN_OP_rsqrt: case KILN_OP_recip: case KILN_OP_mod: return 4;
  default: return kiln_op_table[op].category == KILN_CAT_ELEMENTWISE ? 1 : 0;
  }
}

/* Above this many flop per element, a producer read by several kernels is materialized
 * once instead of recomputed in each (the recompute cost model). */
#define RECOMPUTE_FLOPS 8

/* The view through which a GEMM dot reads operand u: movement ops over a materialized
 * base cost nothing. The base is the first node down the chain that is not a reshape,
 * permute, slice or broadcast, or the node where the chain stops being a strided view. */
static int32_t operand_view(lower_ctx *c, int32_t u, kiln_pass_view *view) {
  const kiln_graph *g = c->g;
  int32_t chain[64], n = 0;
  int32_t b = u;
  while (n < 64) {
    const kiln_node *nd = &g->nodes[b];
    bool movable = nd->op == KILN_OP_reshape || nd->op == KILN_OP_permute || nd->op == KILN_OP_slice ||
                   nd->op == KILN_OP_broadcast;
    if (!movable || (b != u && c->is_output[b])) break;
    chain[n++] = b;
    b = nd->in[0];
  }
  kiln_pass_view_dense(view, b, &g->nodes[b].shape);
  for (int32_t i = n - 1; i >= 0; i--)
    if (!kiln_pass_view_apply(view, &g->nodes[chain[i]])) kiln_pass_view_dense(view, chain[i], &g->nodes[chain[i]].shape);
  return view->base;
}

/* The GEMM descriptor of dot v reading its operands through views, writing c (a view
 * of v's value in some buffer). False when the views do not fit a GEMM. */
static bool dot_views(lower_ctx *c, int32_t v, const kiln_pass_view *cv, kiln_pass_view *av, kiln_pass_view *bv,
                      kiln_gemm_desc *gd) {
  const kiln_node *n = &c->g->nodes[v];
  /* view_mode bit j: operand j is read as its own dense buffer, not through a view */
  if (c->view_mode[v] & 1) kiln_pass_view_dense(av, n->in[0], &c->g->nodes[n->in[0]].shape);
  else operand_view(c, n->in[0], av);
  if (c->view_mode[v] & 2) kiln_pass_view_dense(bv, n->in[1], &c->g->nodes[n->in[1]].shape);
  else operand_view(c, n->in[1], bv);
  memset(gd, 0, sizeof *gd);
  gd->param_buf = -1;
  return kiln_pass_view_gemm(av, bv, cv, gd);
}

static bool is_gemm(const kiln_graph *g, int32_t v) {
  return dot_is_gemm(&g->nodes[v]) || conv_is_gemm(g, &g->nodes[v]);
}

/* The epilogue of GEMM contraction v: the elementwise ops (and reshapes that keep the
 * last dim) after it, up to one node whose value leaves the group, applied to each
 * output tile while it is in cache. Sets epi_sink/epi_of. */
static void grow_epilogue(lower_ctx *c, int32_t v, uint8_t *in_group) {
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
  /* Shrink until exactly one member (the last, the sink) is read outside the group (or is
   * an output) and has the product's dtype. */
  while (nm > 0) {
    int32_t escapes = 0, bad = 0;
    for (int32_t i = -1; i < nm; i++) {
      int32_t u = i < 0 ? v : members[i];
      bool esc = c->is_output[u];
      for (int32_t e = c->cons_at[u]; e < c->cons_at[u + 1] && !esc; e++) esc = !in_group[c->cons[e]];
      if (esc) escapes++, bad += u != members[nm - 1];
    }
    if (escapes == 1 && !bad && g->nodes[members[nm - 1]].dtype == gv->dtype) break;
    in_group[members[--nm]] = 0;
  }
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

/* Whether inlined reduction (or window/direct contraction) r is computed once per point
 * of the kernel it ends up in: its consumer kernel has r's own domain (an epilogue
 * after it), or r reduces its input's last axis and the kernel has the input's domain
 * (a row-wise kernel such as softmax or layer norm: once per row). */
static bool reduce_fits(lower_ctx *c, int32_t r, int32_t root) {
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

/* Taps per output element of a window consumer (pool or direct convolution) reading u. */
static double window_reuse(lower_ctx *c, int32_t w) {
  const kiln_node *n = &c->g->nodes[w];
  if (n->op != KILN_OP_pool && n->op != KILN_OP_conv && n->op != KILN_OP_pool_cl && n->op != KILN_OP_conv_cl)
    return 1;
  const kiln_shape *xs = &c->g->nodes[n->in[0]].shape;
  double taps = 1;
  for (int32_t d = 0; d + 2 < xs->rank; d++) {
    const kiln_node *w = n->n_in > 1 ? &c->g->nodes[n->in[1]] : NULL;
    int64_t win = !w ? n->a.window[d] : w->shape.dims[n->op == KILN_OP_conv_cl ? d : 2 + d];
    int64_t st = n->a.strides[d] > 0 ? n->a.strides[d] : 1;
    taps *= (double)win / (double)st;
  }
  return taps;
}

/* Columns of the im2col matrix packed per tile: a tile of k x tile_n elements stays
 * within about this many bytes, in whole output rows (the epilogue runs per row). */
#define PACK_TILE_BYTES (1024 * 1024)

/* GEMM prologue: dot v's A operand, when it is an elementwise op (a cast, an activation)
 * that only v reads, is computed by the GEMM kernel's pack sub-kernel (pack_a, one tile:
 * dot_prologue) instead of by a kernel of its own writing a buffer: each element once,
 * into a scratch tile that stays in cache. Only where A is the operand itself, read
 * densely as one [m, k] matrix (no batch loop, no transpose) of at most PACK_TILE_BYTES,
 * on the CPU (the CUDA renderer has no pack_a), and not where the product's output is
 * sunk into a permute (its views are chosen later). Otherwise the operand is a buffer,
 * and the report says why. */
/* The first node of u's expression, as a prologue would inline it, that is neither
 * elementwise nor movement nor certain to have a buffer (a reduction, a window, a direct
 * contraction: a softmax feeding attention's second product stays one row kernel), or -1.
 * depth bounds the walk (-2 when it runs out). */
static int32_t prologue_blocker(lower_ctx *c, int32_t u, int depth) {
  const kiln_graph *g = c->g;
  kiln_category cat = cat_of(g, u);
  if (cat == KILN_CAT_LEAF || c->is_output[u] || is_gemm(g, u) || cat == KILN_CAT_OPAQUE || c->epi_sink[u] >= 0 ||
      c->epi_of[u] >= 0)
    return -1; /* a buffer: an input, a constant, a GEMM's or its epilogue's output */
  if (cat != KILN_CAT_ELEMENTWISE && cat != KILN_CAT_MOVEMENT) return c->n_cons[u] > 1 ? -1 : u;
  if (depth > 32) return -2;
  for (int32_t j = 0; j < g->nodes[u].n_in; j++) {
    int32_t b = prologue_blocker(c, g->nodes[u].in[j], depth + 1);
    if (b != -1) return b;
  }
  return -1;
}

/* Whether a GEMM reads A (view av, descriptor gd) as the operand u itself, one dense
 * [m, k] matrix: what a prologue's pack computes. */
static bool prologue_fits(const kiln_pass_view *av, const kiln_gemm_desc *gd, int32_t u) {
  return av->base == u && gd->n_batch == 0 && !gd->trans_a && gd->a_off == 0 && gd->lda == gd->k && gd->k > 0 &&
         gd->m > 0;
}

static void choose_prologue(lower_ctx *c, int32_t v) {
  const kiln_graph *g = c->g;
  const kiln_node *n = &g->nodes[v];
  for (int32_t j = 0; j < 2; j++) {
    int32_t u = n->in[j];
    if (cat_of(g, u) != KILN_CAT_ELEMENTWISE || c->is_output[u] || c->n_cons[u] != 1 || c->epi_of[u] >= 0 ||
        c->epi_sink[u] >= 0 || n->in[1 - j] == u)
      continue;
    const char *why = NULL;
    int32_t w = first_consumer(c, v);
    kiln_pass_view cv, av, bv;
    kiln_gemm_desc gd;
    kiln_pass_view_dense(&cv, v, &n->shape);
    int32_t blocker = j == 0 ? prologue_blocker(c, u, 0) : -1;
    char buf[96];
    if (j == 1) why = "it is the GEMM's B operand (prologues are fused into A)";
    else if (c->t->target != KILN_TARGET_CPU) why = "the target has no GEMM prologue";
    else if (blocker == -2) why = "its expression is too deep";
    else if (blocker >= 0) {
      snprintf(buf, sizeof buf, "its expression holds a %s", kiln_op_name(g->nodes[blocker].op));
      why = buf;
    }
    else if (g->nodes[u].dtype != n->dtype) why = "its dtype is not the product's";
    else if (!c->is_output[v] && c->n_cons[v] == 1 && w >= 0 &&
             (g->nodes[w].op == KILN_OP_permute || g->nodes[w].op == KILN_OP_reshape))
      why = "the product's output may be sunk into a layout change";
    else if (!dot_views(c, v, &cv, &av, &bv, &gd) || !prologue_fits(&av, &gd, u))
      why = "the product has batch loops or reads A through a view";
    else if (gd.m * gd.k * (int64_t)kiln_dtype_size(n->dtype) > PACK_TILE_BYTES)
      why = "A is larger than one pack tile (1 MiB)";
    if (why) {
      refuse(c, u, v, "%s as a GEMM operand is materialized: %s", kiln_op_name(g->nodes[u].op), why);
      continue;
    }
    c->prologue[u] = 1;
    c->feeds_buffer_op[u] = 0;
  }
}

static void decide_materialized(lower_ctx *c) {
  const kiln_graph *g = c->g;
  int32_t n = g->n_nodes;
  bool full = c->t->fusion == KILN_FUSION_FULL, none = c->t->fusion == KILN_FUSION_NONE;
  for (int32_t i = 0; i < n; i++)
    c->n_cons[i] = 0, c->feeds_buffer_op[i] = 0, c->epi_sink[i] = -1, c->epi_of[i] = -1,
    c->sunk_to[i] = -1, c->sunk_by[i] = -1, c->mat[i] = 0, c->cheap[i] = 0, c->prologue[i] = 0;
  for (int32_t i = 0; i < n; i++) {
    const kiln_node *nd = &g->nodes[i];
    for (int32_t j = 0; j < nd->n_in; j++) {
      int32_t u = nd->in[j];
      bool seen = false;
      for (int32_t k = 0; k < j; k++) seen = seen || nd->in[k] == u;
      if (seen) continue; /* mul(x, x): one consumer */
      c->n_cons[u]++;
    }
    if (needs_buffer_operands(g, i) && !(full && dot_is_gemm(nd))) /* full: dots read views (below) */
      for (int32_t j = 0; j < nd->n_in; j++) {
        /* a conv_cl entering the channels-last region reads the channels-first source
         * itself (A^T, or its pack through the permute): that must be a buffer, or a pool
         * before it would be computed again for every im2col element */
        int32_t src = j == 0 ? cl_source(g, nd) : -1;
        c->feeds_buffer_op[src >= 0 ? src : nd->in[j]] = 1;
      }
  }
  /* consumer lists, in node order (c->cost is the fill cursor until the cost model) */
  c->cons_at[0] = 0;
  for (int32_t i = 0; i < n; i++) c->cons_at[i + 1] = c->cons_at[i] + c->n_cons[i], c->cost[i] = c->cons_at[i];
  for (int32_t i = 0; i < n; i++) {
    const kiln_node *nd = &g->nodes[i];
    for (int32_t j = 0; j < nd->n_in; j++) {
      bool seen = false;
      for (int32_t k = 0; k < j; k++) seen = seen || nd->in[k] == nd->in[j];
      if (!seen) c->cons[c->cost[nd->in[j]]++] = i;
    }
  }
  for (int32_t i = 0; i < n; i++) c->cost[i] = 0;
  /* GEMM dot operands that are strided views of a buffer need only that buffer: each
   * operand through its view where the GEMM can read it, else as a buffer of its own. */
  for (int32_t i = 0; full && i < n; i++) {
    if (!dot_is_gemm(&g->nodes[i])) continue;
    kiln_pass_view cv, av, bv;
    kiln_gemm_desc gd;
    kiln_pass_view_dense(&cv, i, &g->nodes[i].shape);
    for (c->view_mode[i] = 0; c->view_mode[i] < 3; c->view_mode[i]++)
      if (dot_views(c, i, &cv, &av, &bv, &gd)) break;
    if (c->view_mode[i] == 3) dot_views(c, i, &cv, &av, &bv, &gd); /* both dense: always a GEMM */
    c->feeds_buffer_op[av.base] = c->feeds_buffer_op[bv.base] = 1;
  }
  uint8_t *in_group = c->in_group;
  for (int32_t i = 0; full && i < n; i++)
    if (is_gemm(g, i)) grow_epilogue(c, i, in_group);
  for (int32_t i = 0; full && i < n; i++)
    if (dot_is_gemm(&g->nodes[i])) choose_prologue(c, i);
  /* First decision per node, then the cost model until nothing changes. */
  for (int32_t i = 0; i < n; i++) {
    const kiln_node *nd = &g->nodes[i];
    kiln_category cat = cat_of(g, i);
    bool m;
    if (c->epi_sink[i] >= 0) m = true;           /* its buffer is its sink's */
    else if (c->epi_of[i] >= 0) m = c->epi_sink[c->epi_of[i]] == i;
    else if (cat == KILN_CAT_LEAF || cat == KILN_CAT_OPAQUE || is_gemm(g, i) || c->is_output[i] || none) m = true;
    else if (c->n_cons[i] == 0) m = false;       /* dead: nothing emits it */
    else if (c->feeds_buffer_op[i]) m = true;
    else if (cat == KILN_CAT_ELEMENTWISE || cat == KILN_CAT_MOVEMENT) m = false;
    else if (nd->op == KILN_OP_argmax || nd->op == KILN_OP_argmin) m = true;
    else if (!full) {
      m = true;
      if (c->n_cons[i] == 1) refuse(c, i, first_consumer(c, i), "fusing a %s into its consumer needs --fusion full", kiln_category_name(cat));
    } else if (c->n_cons[i] > 1) {
      m = true;
      refuse(c, i, -1, "%s result has %d consumers: materialized", kiln_category_name(cat), c->n_cons[i]);
    } else m = false; /* reduce/window/direct contraction inlined: checked below */
    c->mat[i] = m;
  }
  bool changed = true;
  for (int iter = 0; changed && iter < 64; iter++) {
    changed = false;
    /* cheap: an index map over buffers, recomputed anywhere for free */
    for (int32_t i = 0; i < n; i++) {
      const kiln_node *nd = &g->nodes[i];
      c->cheap[i] = !c->mat[i] && is_cheap_map(nd->op) && (nd->n_in == 0 || c->mat[nd->in[0]] || c->cheap[nd->in[0]]);
      int32_t cost = c->mat[i] ? 0 : op_cost(nd->op);
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
    for (int32_t i = 0; i < n; i++) {
      if (c->mat[i] || c->n_cons[i] == 0) continue;
      const kiln_node *nd = &g->nodes[i];
      kiln_category cat = cat_of(g, i);
      if (cat == KILN_CAT_ELEMENTWISE || cat == KILN_CAT_MOVEMENT) {
        if (c->kern[i] == -2 && !c->cheap[i] && c->cost[i] > RECOMPUTE_FLOPS && c->epi_of[i] < 0) {
          c->mat[i] = changed = true;
          refuse(c, i, -1, "producer has %d consumers in several kernels and costs %d flop/element: materialized",
                 c->n_cons[i], c->cost[i]);
          continue;
        }
        int32_t w = first_consumer(c, i);
        double reuse = c->n_cons[i] == 1 && w >= 0 ? window_reuse(c, w) : 1;
        if (reuse > 1.5 && c->cost[i] * reuse > RECOMPUTE_FLOPS && c->cost[i] > 1) {
          c->mat[i] = changed = true;
          refuse(c, i, w, "consumer reads each element %.1f times (window) and producer costs %d flop/element: materialized",
                 reuse, c->cost[i]);
        }
      } else if (c->kern[i] == -2 || c->kern[i] < 0 || !reduce_fits(c, i, c->kern[i])) {
        c->mat[i] = changed = true;
        refuse(c, i, first_consumer(c, i),
               c->kern[i] >= 0 ? "%s would be recomputed for every element of the consumer's kernel: materialized"
                               : "%s is read by several kernels: materialized",
               kiln_op_name(nd->op));
      }
    }
  }
  /* Permute sinking: a GEMM dot whose only use is a chain of permutes/reshapes into a
   * materialized node writes that node's buffer directly through a strided view. */
  for (int32_t v = 0; full && v < n; v++) {
    if (!dot_is_gemm(&g->nodes[v]) || c->epi_sink[v] >= 0 || c->is_output[v] || c->n_cons[v] != 1) continue;
    int32_t chain[16], nc = 0, w = first_consumer(c, v);
    while (nc < 16 && w >= 0 && (g->nodes[w].op == KILN_OP_permute || g->nodes[w].op == KILN_OP_reshape)) {
      chain[nc++] = w;
      if (c->mat[w] || c->n_cons[w] != 1) break;
      w = first_consumer(c, w);
    }
    if (nc == 0 || !c->mat[chain[nc - 1]]) continue;
    int32_t f = chain[nc - 1];
    kiln_pass_view cv, av, bv;
    kiln_gemm_desc gd;
    kiln_pass_view_dense(&cv, f, &g->nodes[f].shape);
    bool ok = true;
    for (int32_t i = nc - 1; i >= 0 && ok; i--) {
      const kiln_node *nd = &g->nodes[chain[i]];
      const kiln_shape *from = &g->nodes[nd->in[0]].shape;
      if (nd->op == KILN_OP_reshape) ok = kiln_pass_view_reshape(&cv, from);
      else {
        int32_t inv[KILN_MAX_RANK];
        for (int32_t d = 0; d < nd->shape.rank; d++) inv[nd->a.perm[d]] = d;
        ok = kiln_pass_view_permute(&cv, inv);
      }
    }
    if (ok && dot_views(c, v, &cv, &av, &bv, &gd)) {
      c->sunk_to[v] = f;
      c->sunk_by[f] = v;
    } else refuse(c, v, f, "the layout change after the contraction is not a strided view of its output");
  }
  /* A movement op copied only so a GEMM can read it (not one a GEMM writes): say why. */
  for (int32_t i = 0; full && i < n; i++) {
    if (!dot_is_gemm(&g->nodes[i])) continue;
    kiln_pass_view cv, av, bv;
    kiln_gemm_desc gd;
    kiln_pass_view_dense(&cv, i, &g->nodes[i].shape);
    dot_views(c, i, &cv, &av, &bv, &gd);
    for (int32_t j = 0; j < 2; j++) {
      int32_t m = j ? bv.base : av.base;
      if (kiln_op_table[g->nodes[m].op].category == KILN_CAT_MOVEMENT && c->sunk_by[m] < 0 && !c->is_output[m])
        refuse(c, m, i, "%s is not a strided view the GEMM can read: materialized", kiln_op_name(g->nodes[m].op));
    }
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

static kiln_kernel *begin_kernel(lower_ctx *c, kiln_kernel_kind kind, int32_t out_buf,
                                 kiln_dtype dt, const kiln_shape *out) {
  kiln_kprogram *p = c->p;
  KILN_ASSERT(p->n_kernels < c->cap_kernels);
  kiln_kernel *k = &p->kernels[p->n_kernels++];
  init_kernel(k, kind, out_buf, dt, out);
  k->category = kind == KILN_KERNEL_GEMM ? KILN_CAT_CONTRACTION : kind == KILN_KERNEL_OPAQUE ? KILN_CAT_OPAQUE
                                                                                               : KILN_CAT_ELEMENTWISE;
  begin_expr(c, out);
  for (int32_t i = 0; i < c->n_covered; i++) c->in_kernel[c->covered[i]] = 0;
  c->n_covered = 0;
  return k;
}

/* A LOOP sub-kernel (pack or epilogue) of the GEMM kernel being built; the nodes it
 * covers count as the GEMM kernel's. NULL when out of memory. */
static kiln_kernel *begin_sub(lower_ctx *c, int32_t out_buf, kiln_dtype dt, const kiln_shape *out) {
  kiln_kernel *k = kiln_arena_alloc(c->p->arena, sizeof *k);
  if (!k) return c->oom = true, NULL;
  init_kernel(k, KILN_KERNEL_LOOP, out_buf, dt, out);
  k->category = KILN_CAT_ELEMENTWISE;
  begin_expr(c, out);
  return k;
}

/* Copies the builder's expression into k (program arena). */
static void finish_expr(lower_ctx *c, kiln_kernel *k) {
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

static void cover(lower_ctx *c, int32_t v) {
  if (c->in_kernel[v]) return;
  c->in_kernel[v] = 1;
  c->covered[c->n_covered++] = v;
}

/* CHECK nodes were built naming their graph node: name its place in the kernel's
 * sources instead (the program outlives the graph). */
static void check_sources(lower_ctx *c, kiln_kernel *k) {
  for (int32_t i = 0; k && k->kind == KILN_KERNEL_LOOP && !c->oom && i < k->n_kx; i++) {
    kiln_kx *x = &k->kx[i];
    if (x->kind != KILN_KX_CHECK) continue;
    int32_t at = -1;
    for (int32_t j = 0; j < c->n_covered && at < 0; j++)
      if (c->covered[j] == x->var) at = j;
    x->var = at;
  }
}

/* Copies the builder's expression, the sources and a name into the program arena. */
static void end_kernel(lower_ctx *c, kiln_kernel *k, const char *suffix) {
  kiln_kprogram *p = c->p;
  if (k->kind == KILN_KERNEL_LOOP) finish_expr(c, k);
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

/* Node v at coordinates idx, fill where mask is false, through coordinates clamped into
 * range and a select. emit_masked's way for an expression; for a buffer, the better way
 * when the mask does not depend on the innermost variable (a channels-last window: the
 * mask is per pixel, the innermost variable a channel): the load is unconditional and its
 * offset affine in the innermost variable, so the loop vectorizes. A branch around each
 * load, even an invariant one, kept LLVM from it: a depthwise 3x3 over [16,16,64] ran 6x
 * slower. */
static int32_t emit_clamped(lower_ctx *c, int32_t v, const int32_t *idx, int32_t mask, double fill) {
  const kiln_node *n = &c->g->nodes[v];
  if (kiln_shape_numel(&n->shape) == 0) return kiln_pass_kb_const(KB, n->dtype, fill);
  int32_t j[KILN_MAX_RANK];
  for (int32_t d = 0; d < n->shape.rank; d++) j[d] = kiln_pass_kb_clamp(KB, idx[d], 0, n->shape.dims[d] - 1);
  return kiln_pass_kb_select(KB, mask, emit(c, v, j), kiln_pass_kb_const(KB, n->dtype, fill));
}

/* node v at coordinates idx that may lie outside v's shape where mask (a bool kx, or -1
 * for none) is false: there the value is fill. */
static int32_t emit_masked(lower_ctx *c, int32_t v, const int32_t *idx, int32_t mask, double fill) {
  if (mask < 0) return emit(c, v, idx);
  const kiln_node *n = &c->g->nodes[v];
  if (kiln_shape_numel(&n->shape) == 0) return kiln_pass_kb_const(KB, n->dtype, fill);
  /* A buffer's masked load is not performed where the mask is false (every backend), so
   * its offset needs no clamping: unclamped, it stays affine in the innermost variable,
   * and the LLVM vectorizer makes a masked vector load of it (an im2col row, a padded
   * window) instead of a gather. An expression is computed everywhere: clamped. */
  if (is_buffer(c, v))
    return kiln_pass_kb_load(KB, buffer_of(c, v), n->dtype, kiln_pass_kb_linearize(KB, idx, &n->shape), mask, fill);
  return emit_clamped(c, v, idx, mask, fill);
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
    mask = IX(and, mask, in_range(c, j[2 + d], 0, is->dims[2 + d]));
  }
  const int32_t *jx = cl ? cl_index(j, is->rank, true, false, jcl) : j;
  int32_t (*masked)(lower_ctx *, int32_t, const int32_t *, int32_t, double) = cl ? emit_clamped : emit_masked;
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
      cmask = IX(and, cmask, in_range(c, p, lo, hi));
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
  int32_t ops[2] = {kiln_pass_kb_cast(KB, emit(c, n->in[0], ja), wt),
                    kiln_pass_kb_cast(KB, emit(c, n->in[1], jb), wt)};
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
    mask = IX(and, mask, in_range(c, jx[2 + d], 0, xs->dims[2 + d]));
  }
  kiln_dtype wt = wide_dtype(n->dtype);
  int32_t ops[2] = {kiln_pass_kb_cast(KB, cl ? emit_clamped(c, x, cl_index(jx, xs->rank, true, false, xcl), mask, 0)
                                             : emit_masked(c, x, jx, mask, 0), wt),
                    kiln_pass_kb_cast(KB, emit(c, w, cl ? cl_index(jw, xs->rank, true, true, wcl) : jw), wt)};
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

static int32_t emit(lower_ctx *c, int32_t v, const int32_t *idx) {
  const kiln_node *n = &c->g->nodes[v];
  int32_t sc = splat_const(c, v);
  if (sc >= 0) return sc;
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

/* k's expression: node v computed (not loaded) at every point of its output domain. */
static void emit_root(lower_ctx *c, kiln_kernel *k, int32_t v) {
  int32_t idx[KILN_MAX_RANK];
  c->root = v;
  out_vars(c, c->g->nodes[v].shape.rank, idx);
  k->root = emit(c, v, idx);
  c->root = -1;
}

static void lower_loop(lower_ctx *c, int32_t v) {
  const kiln_node *n = &c->g->nodes[v];
  kiln_kernel *k = begin_kernel(c, KILN_KERNEL_LOOP, c->buf_of[v], n->dtype, &n->shape);
  k->node = v;
  emit_root(c, k, v);
  /* the category of the heaviest node it covers (movement < elementwise < reduce < ...) */
  k->category = KILN_CAT_MOVEMENT;
  for (int32_t i = 0; i < c->n_covered; i++) {
    kiln_category cat = cat_of(c->g, c->covered[i]);
    if (cat != KILN_CAT_MOVEMENT && (k->category == KILN_CAT_MOVEMENT || cat > k->category)) k->category = cat;
  }
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

/* The view of dot v's value inside the buffer of f, the permute/reshape chain's end it
 * is sunk into (the chain inverted, from f back to v). */
static bool sunk_view(lower_ctx *c, int32_t v, int32_t f, kiln_pass_view *cv) {
  const kiln_graph *g = c->g;
  kiln_pass_view_dense(cv, f, &g->nodes[f].shape);
  for (int32_t w = f; w != v;) {
    const kiln_node *nd = &g->nodes[w];
    const kiln_shape *from = &g->nodes[nd->in[0]].shape;
    bool ok;
    if (nd->op == KILN_OP_reshape) ok = kiln_pass_view_reshape(cv, from);
    else if (nd->op == KILN_OP_permute) {
      int32_t inv[KILN_MAX_RANK];
      for (int32_t d = 0; d < nd->shape.rank; d++) inv[nd->a.perm[d]] = d;
      ok = kiln_pass_view_permute(cv, inv);
    } else ok = false;
    if (!ok) return false;
    cover(c, w);
    w = nd->in[0];
  }
  return true;
}

/* The epilogue sub-kernel of GEMM node v: its sink's expression, with v's value read
 * from the product's buffer (the sink's own: the epilogue runs in place). */
static void build_epilogue(lower_ctx *c, kiln_kernel *k, int32_t v) {
  int32_t sink = c->epi_sink[v];
  const kiln_node *sn = &c->g->nodes[sink];
  kiln_kernel *e = begin_sub(c, c->buf_of[sink], sn->dtype, &sn->shape);
  if (!e) return;
  e->node = sink;
  emit_root(c, e, sink);
  finish_expr(c, e);
  k->epilogue = e;
  k->node = sink;
  k->gemm.epi_last = sn->shape.rank ? sn->shape.dims[sn->shape.rank - 1] : 1;
}

/* The buffer a GEMM contraction v writes: its epilogue's sink's, the node it is sunk
 * into, or its own. */
static int32_t gemm_dst(lower_ctx *c, int32_t v) {
  int32_t dst = c->epi_sink[v] >= 0 ? c->epi_sink[v] : c->sunk_to[v] >= 0 ? c->sunk_to[v] : v;
  int32_t b = buffer_of(c, dst);
  if (dst != v) c->buf_of[v] = b;
  return dst;
}

static void dot_prologue(lower_ctx *c, kiln_kernel *k, int32_t v);

static void lower_dot_gemm(lower_ctx *c, int32_t v) {
  const kiln_node *n = &c->g->nodes[v];
  int32_t dst = gemm_dst(c, v);
  kiln_kernel *k = begin_kernel(c, KILN_KERNEL_GEMM, c->buf_of[dst], c->g->nodes[dst].dtype, &c->g->nodes[dst].shape);
  k->node = dst;
  cover(c, v);
  kiln_gemm_desc *gd = &k->gemm;
  kiln_pass_view av, bv, cv;
  bool ok = false;
  if (c->t->fusion == KILN_FUSION_FULL) {
    if (c->sunk_to[v] >= 0) ok = sunk_view(c, v, c->sunk_to[v], &cv);
    else kiln_pass_view_dense(&cv, dst, &n->shape), ok = true;
    ok = ok && dot_views(c, v, &cv, &av, &bv, gd);
  }
  if (!ok) { /* operands (and the result) are dense buffers of their own */
    KILN_ASSERT(c->sunk_to[v] < 0);
    kiln_pass_view_dense(&cv, dst, &n->shape);
    kiln_pass_view_dense(&av, n->in[0], &c->g->nodes[n->in[0]].shape);
    kiln_pass_view_dense(&bv, n->in[1], &c->g->nodes[n->in[1]].shape);
    memset(gd, 0, sizeof *gd);
    ok = kiln_pass_view_gemm(&av, &bv, &cv, gd);
    KILN_ASSERT(ok);
  }
  gd->param_buf = -1;
  gd->b_buf = buffer_of(c, bv.base);
  gd->c_buf = c->buf_of[dst];
  int32_t u = n->in[0];
  if (c->prologue[u] && !c->mat[u]) {
    if (!prologue_fits(&av, gd, u)) {
      c->user_err = kiln_diag_set(c->d, KILN_ERR_INTERNAL, "GEMM '%s': its prologue's operand is read through a view",
                                  n->name ? n->name : "?");
      return;
    }
    dot_prologue(c, k, v);
  } else {
    gd->a_buf = buffer_of(c, av.base);
  }
  if (c->epi_sink[v] >= 0) build_epilogue(c, k, v);
  end_kernel(c, k, "gemm");
}


/* A GEMM pack's scratch buffers for convolution n: the packed tile (returned; "<n>.col")
 * and the two i64 tile parameters (*par; "<n>.tile"). */
static int32_t pack_scratch(lower_ctx *c, const kiln_node *n, const kiln_shape *tile_shape, int32_t *par) {
  char nm[160];
  int64_t two = 2;
  kiln_shape ps = kiln_shape_make(1, &two);
  snprintf(nm, sizeof nm, "%s.col", n->name);
  int32_t col = new_buffer(c, KILN_BUF_ARENA, n->dtype, tile_shape, -1, nm);
  snprintf(nm, sizeof nm, "%s.tile", n->name);
  *par = new_buffer(c, KILN_BUF_ARENA, KILN_I64, &ps, -1, nm);
  return col;
}

/* The pack of GEMM dot v's prologue (choose_prologue): A as one tile of m x k (at most
 * PACK_TILE_BYTES), row r computing row r of the operand (its [m, k] flattening). One
 * tile, because OpenBLAS runs a product split into tiles of rows slower than the whole
 * ([4096, 768] x [768, 768] with a cast prologue: 21.8 ms in tiles of 341 rows, 17.9 ms
 * with the cast as a kernel of its own); the prologue then saves a kernel and keeps the
 * operand in cache. */
static void dot_prologue(lower_ctx *c, kiln_kernel *k, int32_t v) {
  const kiln_node *n = &c->g->nodes[v];
  int32_t u = n->in[0];
  const kiln_shape *us = &c->g->nodes[u].shape;
  kiln_gemm_desc *gd = &k->gemm;
  int64_t M = gd->m, K = gd->k;
  int64_t cd[2] = {M, K};
  kiln_shape cs = kiln_shape_make(2, cd);
  int32_t par, col = pack_scratch(c, n, &cs, &par);
  gd->a_buf = col, gd->lda = K, gd->tile_n = M, gd->param_buf = par, gd->pack_a = 1;
  kiln_kernel *pk = begin_sub(c, col, n->dtype, &cs);
  if (!pk) return;
  int32_t idx[2], ui[KILN_MAX_RANK];
  out_vars(c, 2, idx);
  int32_t row = idx[0];
  if (us->rank > 1) {
    kiln_shape m1 = kiln_shape_make(1, &M), lead = kiln_shape_make(us->rank - 1, us->dims);
    reshape_index(c, &m1, &lead, &row, ui);
  }
  ui[us->rank - 1] = idx[1];
  pk->root = emit(c, u, ui);
  finish_expr(c, pk);
  k->pack = pk;
}

/* The output pixel a k-major pack tile's element stands for (the channels-first pack's,
 * and conv_cl's A^T pack's), as coordinates over the P output pixels of spatial dims
 * od[0..sd) (into pj): by_rows, output row first / row + idx[1], column idx[2]; else
 * pixel first + idx[1]. first: the tile's first pixel. Returns the mask "a pixel of the
 * output" (the last tile may run past it); the coordinates are clamped. */
static int32_t tile_pixel(lower_ctx *c, bool by_rows, int32_t first, const int32_t *idx, int64_t P, int64_t row,
                          int32_t sd, const int64_t *od, int32_t *pj) {
  if (by_rows) {
    int64_t n_rows = P / row;
    int32_t orow = IX(add, IX(div, first, INT(row)), idx[1]);
    int32_t mask = IX(lt, orow, INT(n_rows));
    orow = kiln_pass_kb_clamp(KB, orow, 0, n_rows - 1);
    kiln_shape o1 = kiln_shape_make(1, &n_rows), os = kiln_shape_make(sd - 1, od);
    if (sd > 1) reshape_index(c, &o1, &os, &orow, pj);
    pj[sd - 1] = idx[2];
    return mask;
  }
  int32_t p = IX(add, first, idx[1]);
  int32_t mask = IX(lt, p, INT(P));
  p = kiln_pass_kb_clamp(KB, p, 0, P - 1);
  kiln_shape p1 = kiln_shape_make(1, &P), os = kiln_shape_make(sd, od);
  reshape_index(c, &p1, &os, &p, pj);
  return mask;
}

/* conv through GEMM: C[n, g] (Co/G x OHW) = W[g] (Co/G x Kc) * col[n, g] (Kc x OHW). The
 * column matrix is never stored whole: the kernel's pack sub-kernel computes it tile by
 * tile (tile_n columns, im2col), each tile multiplied as soon as it is packed. */
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
  int64_t Kc = cig * kvol, es = (int64_t)kiln_dtype_size(n->dtype);
  pointwise = pointwise || Kc == 0 || P == 0; /* an empty product: nothing to pack */
  int64_t row = sd > 0 ? n->shape.dims[xs->rank - 1] : 1; /* one output row: the epilogue's unit */
  int32_t dst = gemm_dst(c, v);
  kiln_kernel *k = begin_kernel(c, KILN_KERNEL_GEMM, c->buf_of[dst], n->dtype, &c->g->nodes[dst].shape);
  k->node = dst;
  cover(c, v);
  kiln_gemm_desc *gd = &k->gemm;
  gd->param_buf = -1;
  int32_t nb = 0;
  if (N != 1) { /* N = 0: no products (one would write past the empty output) */
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
  gd->a_buf = buffer_of(c, w);
  gd->c_buf = c->buf_of[dst];
  gd->m = cog, gd->n = P, gd->k = Kc;
  gd->lda = Kc, gd->ldb = P, gd->ldc = P;
  if (pointwise) gd->b_buf = buffer_of(c, x);
  else {
    /* whole output rows per tile, the tiles as even as the budget allows (no small
     * remainder tile: each tile is one GEMM call) */
    int64_t rows = PACK_TILE_BYTES / (Kc * es * (row > 0 ? row : 1));
    int64_t all_rows = row > 0 ? P / row : 1;
    if (rows < 1) rows = 1;
    int64_t n_tiles = (all_rows + rows - 1) / rows;
    int64_t tile = (all_rows + n_tiles - 1) / n_tiles * row;
    if (tile >= P || row <= 0) tile = P;
    int64_t cd[2] = {Kc, tile};
    kiln_shape cs = kiln_shape_make(2, cd);
    int32_t par, col = pack_scratch(c, n, &cs, &par);
    for (int32_t i = 0; i < nb; i++) gd->b_bstride[i] = 0;
    gd->b_buf = col, gd->ldb = tile, gd->tile_n = tile, gd->param_buf = par, gd->pack_last = tile;
    /* In whole output rows (tiles are), the pack's domain is [Kc, tile rows, row]: the
     * innermost variable is then an output column, whose input offset is affine (a
     * contiguous, masked vector load at stride 1) rather than a div/mod of a flat column
     * index (a gather). */
    bool by_rows = sd >= 1 && row > 0 && tile % row == 0;
    if (by_rows) gd->pack_last = row;
    int64_t cd3[3] = {Kc, by_rows ? tile / row : 1, by_rows ? row : tile};
    kiln_shape cs3 = kiln_shape_make(3, cd3);
    kiln_kernel *pk = begin_sub(c, col, n->dtype, by_rows ? &cs3 : &cs);
    if (pk) {
      /* col[r, jj] = x[n, g*cig + ci(r), o(p)*stride + k(r)*dilation - lo], p = j0 + jj */
      int32_t idx[3];
      out_vars(c, by_rows ? 3 : 2, idx);
      int32_t t = kiln_pass_kb_clamp(KB, kiln_pass_kb_load(KB, par, KILN_I64, INT(0), -1, 0), 0, N * G - 1);
      int32_t j0 = kiln_pass_kb_clamp(KB, kiln_pass_kb_load(KB, par, KILN_I64, INT(1), -1, 0), 0, P - 1);
      int32_t ni = G > 1 ? IX(div, t, INT(G)) : t, gi = G > 1 ? IX(mod, t, INT(G)) : INT(0);
      int64_t rd[KILN_MAX_RANK + 1], pd[KILN_MAX_RANK];
      rd[0] = cig;
      for (int32_t d = 0; d < sd; d++) rd[1 + d] = ws->dims[2 + d], pd[d] = n->shape.dims[2 + d];
      kiln_shape rs = kiln_shape_make(1 + sd, rd), r1 = kiln_shape_make(1, &Kc);
      int32_t rj[KILN_MAX_RANK], pj[KILN_MAX_RANK], jx[KILN_MAX_RANK];
      reshape_index(c, &r1, &rs, &idx[0], rj);
      int32_t mask = tile_pixel(c, by_rows, j0, idx, P, row, sd, pd, pj);
      jx[0] = ni;
      jx[1] = IX(add, IX(mul, gi, INT(cig)), rj[0]);
      for (int32_t d = 0; d < sd; d++) {
        jx[2 + d] = IX(sub, IX(add, IX(mul, pj[d], INT(n->a.strides[d])), IX(mul, rj[1 + d], INT(n->a.dilations[d]))),
                       INT(n->a.lo[d]));
        mask = IX(and, mask, in_range(c, jx[2 + d], 0, xs->dims[2 + d]));
      }
      pk->root = emit_masked(c, x, jx, mask, 0);
      finish_expr(c, pk);
      k->pack = pk;
    }
  }
  if (c->epi_sink[v] >= 0) build_epilogue(c, k, v);
  end_kernel(c, k, "gemm");
}

/* A conv_cl GEMM convolution's operands and sizes (lower_conv_cl_gemm): node n, input x
 * [N, spatial..., Ci] and weights of shapes xs and ws (r = rank), Kc = Ci * kernel volume
 * (the product's k), P output pixels per image (its m). */
typedef struct cl_conv {
  const kiln_node *n;
  int32_t x, r;
  const kiln_shape *xs, *ws;
  int64_t N, Ci, Kc, P;
} cl_conv;

/* The pack of conv_cl GEMM kernel k when x is a buffer: A tile by tile as it is,
 * tile x Kc, row p the input patch of output pixel p in (k..., ci) order. */
static void cl_pack_rows(lower_ctx *c, kiln_kernel *k, const cl_conv *cv) {
  const kiln_node *n = cv->n;
  int32_t x = cv->x, r = cv->r, sd = r - 2;
  const kiln_shape *xs = cv->xs, *ws = cv->ws;
  kiln_gemm_desc *gd = &k->gemm;
  int64_t N = cv->N, Ci = cv->Ci, Kc = cv->Kc, P = cv->P, es = (int64_t)kiln_dtype_size(n->dtype);
  gd->lda = Kc;
  /* rows per tile within the budget, the tiles as even as that allows */
  int64_t rows = PACK_TILE_BYTES / (Kc * es);
  if (rows < 1) rows = 1;
  int64_t n_tiles = (P + rows - 1) / rows, tile = (P + n_tiles - 1) / n_tiles;
  int64_t cd[2] = {tile, Kc};
  kiln_shape cs = kiln_shape_make(2, cd);
  int32_t par, col = pack_scratch(c, n, &cs, &par);
  /* The pack's rows (its domain is [tile, Kc / last, last]): with the last kernel dim
   * undilated, a row is a kernel row's kw * Ci input elements, contiguous in x: a masked
   * load over the padding columns, affine in the innermost variable (rows of 16 channels
   * alone made a 16-channel 3x3's pack 3x slower). Else a row is one kernel position's Ci
   * channels, read through clamped coordinates and a select. */
  bool runs = n->a.dilations[sd - 1] == 1;
  int64_t last = runs ? ws->dims[sd - 1] * Ci : Ci;
  gd->a_buf = col, gd->tile_n = tile, gd->param_buf = par, gd->pack_a = 1, gd->pack_last = last;
  int64_t pd3[3] = {tile, Kc / last, last};
  kiln_shape pks = kiln_shape_make(3, pd3);
  kiln_kernel *pk = begin_sub(c, col, n->dtype, &pks);
  if (pk) {
    /* col[jj, (kp, ci)] = x[t, o(i0 + jj) * stride + k(kp) * dilation - lo, ci] */
    int32_t idx[3];
    out_vars(c, 3, idx);
    int32_t t = kiln_pass_kb_clamp(KB, kiln_pass_kb_load(KB, par, KILN_I64, INT(0), -1, 0), 0, N - 1);
    int32_t i0 = kiln_pass_kb_clamp(KB, kiln_pass_kb_load(KB, par, KILN_I64, INT(1), -1, 0), 0, P - 1);
    int32_t p = IX(add, i0, idx[0]);
    int32_t mask = IX(lt, p, INT(P));
    p = kiln_pass_kb_clamp(KB, p, 0, P - 1);
    int64_t kd[KILN_MAX_RANK], od[KILN_MAX_RANK], kq = Kc / last;
    for (int32_t d = 0; d < sd; d++) kd[d] = ws->dims[d], od[d] = n->shape.dims[1 + d];
    int32_t ksd = runs ? sd - 1 : sd; /* kernel dims idx[1] ranges over */
    kiln_shape ks = kiln_shape_make(ksd, kd), os = kiln_shape_make(sd, od);
    kiln_shape k1 = kiln_shape_make(1, &kq), p1 = kiln_shape_make(1, &P);
    int32_t kj[KILN_MAX_RANK], oj[KILN_MAX_RANK], jx[KILN_MAX_RANK];
    if (ksd > 0) reshape_index(c, &k1, &ks, &idx[1], kj);
    reshape_index(c, &p1, &os, &p, oj);
    for (int32_t d = 0; d < ksd; d++) {
      jx[1 + d] = IX(sub, IX(add, IX(mul, oj[d], INT(n->a.strides[d])), IX(mul, kj[d], INT(n->a.dilations[d]))),
                     INT(n->a.lo[d]));
      mask = IX(and, mask, in_range(c, jx[1 + d], 0, xs->dims[1 + d]));
    }
    if (runs) {
      /* offset ((t * X0 + i0) * ...) * (Xlast * Ci) + (o_last * stride - lo) * Ci + j */
      int64_t row = xs->dims[sd] * Ci;
      int32_t off = t;
      for (int32_t d = 0; d < sd - 1; d++) off = IX(add, IX(mul, off, INT(xs->dims[1 + d])), jx[1 + d]);
      int32_t w0 = IX(sub, IX(mul, oj[sd - 1], INT(n->a.strides[sd - 1])), INT(n->a.lo[sd - 1]));
      int32_t in_row = IX(add, IX(mul, w0, INT(Ci)), idx[2]);
      mask = IX(and, mask, in_range(c, in_row, 0, row));
      off = IX(add, IX(mul, off, INT(row)), in_row);
      pk->root = kiln_pass_kb_load(KB, buffer_of(c, x), n->dtype, off, mask, 0);
    } else {
      jx[0] = t;
      jx[r - 1] = idx[2];
      pk->root = emit_clamped(c, x, jx, mask, 0);
    }
    finish_expr(c, pk);
    k->pack = pk;
  }
}

/* The pack of conv_cl GEMM kernel k when x is the layout pass's permute of a
 * channels-first value (a network's first convolution, reading its input): A^T tile by
 * tile, Kc x tile (trans_a), in whole output rows with the output column innermost, as the
 * channels-first pack does: the input is then read along its rows (a masked load, affine
 * in the innermost variable) rather than across channels. resnet18's 7x7 stem over 3
 * channels: 5.5 ms packing rows of 3 channels, 2.3 ms channels first. */
static void cl_pack_transposed(lower_ctx *c, kiln_kernel *k, const cl_conv *cv) {
  const kiln_node *n = cv->n;
  int32_t x = cv->x, r = cv->r, sd = r - 2;
  const kiln_shape *xs = cv->xs, *ws = cv->ws;
  kiln_gemm_desc *gd = &k->gemm;
  int64_t N = cv->N, Ci = cv->Ci, Kc = cv->Kc, P = cv->P, es = (int64_t)kiln_dtype_size(n->dtype);
  int64_t row = n->shape.dims[sd]; /* one output row */
  int64_t rows = PACK_TILE_BYTES / (Kc * es * row), all_rows = P / row;
  if (rows < 1) rows = 1;
  int64_t n_tiles = (all_rows + rows - 1) / rows;
  int64_t tile = (all_rows + n_tiles - 1) / n_tiles * row;
  if (tile >= P) tile = P;
  bool by_rows = tile % row == 0;
  int64_t cd[2] = {Kc, tile};
  kiln_shape cs = kiln_shape_make(2, cd);
  int32_t par, col = pack_scratch(c, n, &cs, &par);
  gd->a_buf = col, gd->lda = tile, gd->trans_a = 1, gd->tile_n = tile, gd->param_buf = par, gd->pack_a = 1;
  gd->pack_last = by_rows ? row : tile;
  int64_t pd3[3] = {Kc, by_rows ? tile / row : 1, by_rows ? row : tile};
  kiln_shape pks = kiln_shape_make(3, pd3);
  kiln_kernel *pk = begin_sub(c, col, n->dtype, by_rows ? &pks : &cs);
  if (!pk) return;
  /* colT[(kp, ci), jj] = x[t, o(i0 + jj) * stride + k(kp) * dilation - lo, ci] */
  int32_t idx[3];
  out_vars(c, by_rows ? 3 : 2, idx);
  int32_t t = kiln_pass_kb_clamp(KB, kiln_pass_kb_load(KB, par, KILN_I64, INT(0), -1, 0), 0, N - 1);
  int32_t i0 = kiln_pass_kb_clamp(KB, kiln_pass_kb_load(KB, par, KILN_I64, INT(1), -1, 0), 0, P - 1);
  int64_t kd[KILN_MAX_RANK + 1], od[KILN_MAX_RANK];
  for (int32_t d = 0; d < sd; d++) kd[d] = ws->dims[d], od[d] = n->shape.dims[1 + d];
  kd[sd] = Ci;
  kiln_shape ks = kiln_shape_make(sd + 1, kd), k1 = kiln_shape_make(1, &Kc);
  int32_t kj[KILN_MAX_RANK + 1], oj[KILN_MAX_RANK], jx[KILN_MAX_RANK];
  reshape_index(c, &k1, &ks, &idx[0], kj);
  int32_t mask = tile_pixel(c, by_rows, i0, idx, P, row, sd, od, oj);
  jx[0] = t;
  jx[r - 1] = kj[sd];
  for (int32_t d = 0; d < sd; d++) {
    jx[1 + d] = IX(sub, IX(add, IX(mul, oj[d], INT(n->a.strides[d])), IX(mul, kj[d], INT(n->a.dilations[d]))),
                   INT(n->a.lo[d]));
    mask = IX(and, mask, in_range(c, jx[1 + d], 0, xs->dims[1 + d]));
  }
  /* through the permute to its source buffer: a masked load there needs no clamping */
  const kiln_node *xn = &c->g->nodes[x];
  if (xn->op == KILN_OP_permute && is_buffer(c, xn->in[0])) {
    int32_t sj[KILN_MAX_RANK];
    for (int32_t d = 0; d < r; d++) sj[xn->a.perm[d]] = jx[d];
    cover(c, x);
    pk->root = emit_masked(c, xn->in[0], sj, mask, 0);
  } else {
    pk->root = emit_masked(c, x, jx, mask, 0);
  }
  finish_expr(c, pk);
  k->pack = pk;
}

/* conv_cl through GEMM, per batch n: C[n] (P x Co) = col[n] (P x Kc) * W (Kc x Co). Row p
 * of col is output pixel p's input patch in (k..., ci) order; W as laid out ([k..., Ci,
 * Co]) is Kc x Co; C is the output itself. 1x1, stride 1, no padding: x is col already
 * and the batch is one product (m = N * P). Else the pack sub-kernel computes col tile_n
 * rows at a time (pack_a: cl_pack_rows, cl_pack_transposed), each tile multiplied, and
 * its rows of the output finished by the epilogue, while in cache. */
static void lower_conv_cl_gemm(lower_ctx *c, int32_t v) {
  const kiln_node *n = &c->g->nodes[v];
  int32_t x = n->in[0], w = n->in[1];
  const kiln_shape *xs = &c->g->nodes[x].shape, *ws = &c->g->nodes[w].shape;
  int32_t r = xs->rank, sd = r - 2;
  int64_t N = xs->dims[0], Ci = xs->dims[r - 1], Co = ws->dims[r - 1], kvol = 1, P = 1;
  bool pointwise = true;
  for (int32_t d = 0; d < sd; d++) {
    kvol *= ws->dims[d];
    P *= n->shape.dims[1 + d];
    pointwise = pointwise && ws->dims[d] == 1 && n->a.strides[d] == 1 && n->a.lo[d] == 0 && n->a.hi[d] == 0;
  }
  int64_t Kc = Ci * kvol;
  pointwise = pointwise || Kc == 0 || P == 0; /* an empty product: nothing to pack */
  cl_conv cv = {n, x, r, xs, ws, N, Ci, Kc, P};
  int32_t dst = gemm_dst(c, v);
  kiln_kernel *k = begin_kernel(c, KILN_KERNEL_GEMM, c->buf_of[dst], n->dtype, &c->g->nodes[dst].shape);
  k->node = dst;
  cover(c, v);
  kiln_gemm_desc *gd = &k->gemm;
  gd->param_buf = -1;
  gd->b_buf = buffer_of(c, w);
  gd->c_buf = c->buf_of[dst];
  gd->n = Co, gd->k = Kc, gd->ldb = Co, gd->ldc = Co;
  int32_t src = is_buffer(c, x) ? -1 : cl_source(c->g, n);
  if (pointwise && src >= 0) { /* per batch, A^T [Ci, P] is the channels-first input itself */
    cover(c, x);
    gd->a_buf = buffer_of(c, src);
    gd->m = P, gd->lda = P, gd->trans_a = 1;
    if (N != 1) gd->n_batch = 1, gd->batch[0] = N, gd->a_bstride[0] = Ci * P, gd->c_bstride[0] = P * Co;
  } else if (pointwise) {
    gd->a_buf = buffer_of(c, x);
    gd->m = N * P, gd->lda = Ci;
  } else {
    gd->m = P;
    if (N != 1) gd->n_batch = 1, gd->batch[0] = N, gd->c_bstride[0] = P * Co;
    if (is_buffer(c, x)) cl_pack_rows(c, k, &cv);
    else cl_pack_transposed(c, k, &cv);
  }
  if (c->epi_sink[v] >= 0) build_epilogue(c, k, v);
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

/* ------------------------------------------------------------------ sibling kernels */
/* "k12_add" -> "k<i>_add" (and a sub-kernel's "k12_conv_gemm.pack" alike): kernel names
 * carry their index, which pair_siblings changes. */
static const char *renumbered(lower_ctx *c, const char *name, int32_t i) {
  if (!name || name[0] != 'k') return name;
  const char *rest = name + 1;
  while (*rest >= '0' && *rest <= '9') rest++;
  char buf[160];
  snprintf(buf, sizeof buf, "k%d%s", (int)i, rest);
  const char *r = kiln_arena_strdup(c->p->arena, buf);
  if (!r) c->oom = true;
  return r ? r : name;
}

/* Whether kernel m may run after kernel b instead of before it: b reads nothing m writes
 * (nothing else can conflict before memory planning: every buffer has one writer). */
static bool may_pass(const kiln_kernel *b, const kiln_kernel *m) {
  if (kiln_ir_kernel_loads(b, m->out_buf)) return false;
  if (m->kind == KILN_KERNEL_GEMM && m->pack)
    return !kiln_ir_kernel_loads(b, m->gemm.pack_a ? m->gemm.a_buf : m->gemm.b_buf) &&
           !kiln_ir_kernel_loads(b, m->gemm.param_buf);
  return true;
}

/* How far the second sibling may move up: past at most this many kernels, none of them a
 * GEMM or opaque kernel. Moving up makes its output live longer (a larger arena: past
 * four GEMMs, 2.1 -> 3.1 MB) and written long before its readers run. */
#define SIBLING_MAX_PASS 3

/* Sibling fusion: two elementwise kernels over the same domain that read a common input
 * (not a constant) run as one (kiln_kernel.with_next): the second moves up to right after
 * the first, where nothing it reads is still to be written (and not far: SIBLING_MAX_PASS),
 * and the CPU backend runs the two in one loop nest, so the common input is read from
 * memory once. Pairs only (no chains of three); the first kernel of each pair is the
 * earlier one. The report counts the common input once, with the first (kiln_ir_kernel_stats). */
static void pair_siblings(lower_ctx *c) {
  kiln_kprogram *p = c->p;
  for (int32_t i = 0; i + 1 < p->n_kernels; i++) {
    kiln_kernel *a = &p->kernels[i];
    if (a->with_next || (i > 0 && p->kernels[i - 1].with_next) || a->kind != KILN_KERNEL_LOOP) continue;
    for (int32_t j = i + 1; j < p->n_kernels && j <= i + 1 + SIBLING_MAX_PASS; j++) {
      if (j > i + 1 && p->kernels[j - 1].kind != KILN_KERNEL_LOOP) break; /* not past a GEMM or opaque kernel */
      kiln_kernel *b = &p->kernels[j];
      if (b->kind != KILN_KERNEL_LOOP || !kiln_ir_siblings_ok(a, b)) continue;
      bool common = false;
      for (int32_t x = 0; x < b->n_kx && !common; x++)
        common = b->kx[x].kind == KILN_KX_LOAD && p->buffers[b->kx[x].buf].kind != KILN_BUF_CONST &&
                 kiln_ir_kernel_loads(a, b->kx[x].buf);
      bool movable = common;
      for (int32_t m = i + 1; m < j && movable; m++) movable = may_pass(b, &p->kernels[m]);
      if (!movable) continue;
      kiln_kernel moved = *b;
      memmove(&p->kernels[i + 2], &p->kernels[i + 1], sizeof(kiln_kernel) * (size_t)(j - i - 1));
      p->kernels[i + 1] = moved;
      for (int32_t m = i + 1; m <= j; m++) {
        kiln_kernel *k = &p->kernels[m];
        k->name = renumbered(c, k->name, m);
        if (k->pack) k->pack->name = renumbered(c, k->pack->name, m);
        if (k->epilogue) k->epilogue->name = renumbered(c, k->epilogue->name, m);
      }
      p->kernels[i].with_next = true;
      break;
    }
  }
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
    if (!c->mat[v] || cat_of(g, v) == KILN_CAT_LEAF) continue;
    if (!c->is_output[v] && c->n_cons[v] == 0) continue; /* dead */
    /* A GEMM is emitted at its epilogue's sink (when every operand of the epilogue is
     * ready); a node a GEMM is sunk into is written by that GEMM. */
    if (c->sunk_by[v] >= 0 || c->epi_sink[v] >= 0) continue;
    int32_t gemm = c->epi_of[v] >= 0 ? c->epi_of[v] : is_gemm(g, v) ? v : -1;
    if (gemm < 0) buffer_of(c, v);
    if (gemm >= 0 && dot_is_gemm(&g->nodes[gemm])) lower_dot_gemm(c, gemm);
    else if (gemm >= 0 && g->nodes[gemm].op == KILN_OP_conv_cl) lower_conv_cl_gemm(c, gemm);
    else if (gemm >= 0) lower_conv_gemm(c, gemm);
    else if (cat_of(g, v) == KILN_CAT_OPAQUE) lower_opaque(c, v);
    else lower_loop(c, v);
  }
  /* Outputs whose buffer is not written by their node's kernel get a copy. */
  for (int32_t i = 0; i < g->n_outputs && !c->oom && !c->user_err; i++) {
    int32_t v = g->outputs[i].node, b = first_out + i;
    int32_t src = buffer_of(c, v);
    if (src != b) lower_copy(c, src, b, v, g->nodes[v].name);
  }
  /* the CPU backend runs a pair as one loop nest; CUDA would launch two kernels anyway */
  if (c->t->fusion == KILN_FUSION_FULL && c->t->target == KILN_TARGET_CPU && !c->oom && !c->user_err)
    pair_siblings(c);
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
  size_t n_edges = 1;
  for (int32_t i = 0; i < n; i++) n_edges += (size_t)g->nodes[i].n_in;
  int32_t *ints = kiln_ir_malloc(g->alloc, sizeof(int32_t) * (nn * 10 + 1 + n_edges) +
                                               sizeof(int32_t) * (size_t)(g->n_consts + 1));
  uint8_t *bytes = kiln_ir_malloc(g->alloc, nn * 9);
  kiln_status st = KILN_OK;
  if (!c.p || !ints || !bytes) {
    st = kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory lowering graph '%s'", g->name);
    goto done;
  }
  c.buf_of = ints, c.n_cons = ints + n, c.covered = ints + 2 * n;
  c.epi_sink = ints + 3 * n, c.epi_of = ints + 4 * n, c.sunk_to = ints + 5 * n, c.sunk_by = ints + 6 * n;
  c.kern = ints + 7 * n, c.cost = ints + 8 * n, c.cons_at = ints + 9 * n; /* n + 1 */
  c.cons = ints + 10 * n + 1;
  c.const_buf = c.cons + n_edges;
  c.mat = bytes, c.is_output = bytes + n, c.in_kernel = bytes + 2 * n;
  c.feeds_buffer_op = bytes + 3 * n;
  c.cheap = bytes + 4 * n;
  c.idx_state = bytes + 5 * n;
  c.in_group = bytes + 6 * n;
  c.view_mode = bytes + 7 * n;
  c.prologue = bytes + 8 * n;
  memset(bytes, 0, nn * 9);
  for (int32_t i = 0; i < n; i++) c.buf_of[i] = -1, c.cost[i] = 0;
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
