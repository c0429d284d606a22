/* layout.c - the layout pass. Tensors are row-major in the graph's own dim order; the
 * pass chooses that order (channels last where the target runs channels-last
 * convolutions: kiln_target_desc.conv_channels_last) and moves permutes so pairs cancel.
 *
 * Channels last (such a target, --fusion full): a convolution that runs as a GEMM
 * (f32/f64, groups of one) becomes conv_cl: input [N, spatial..., Ci], weights [k..., Ci, Co]
 * (permuted at compile time when they are constants), output [N, spatial..., Co]. Its
 * im2col rows are then runs of contiguous channels, and a 1x1 convolution needs no im2col
 * at all. Depthwise-like convolutions (direct loops) follow too: their innermost loop then
 * runs over contiguous channels (a direct one with few input channels reads its taps along
 * the last spatial dim as one run: its padding along that dim becomes a pad of its input,
 * pad_for_merged_taps). Elementwise ops with a channels-last operand and pools of
 * a channels-last input stay channels last, so the layout changes only where a value
 * leaves that region (a graph input or output, a reduction, a reshape): there a permute,
 * which fusion inlines into the consumer as index arithmetic. A convolution entering the
 * region reads its channels-first input itself (a 1x1 as A^T, others through its pack);
 * a graph output, or an operand of a channels-first GEMM, gets the permute as a copy
 * kernel. Only regions that pay go channels last (region_pays).
 *
 * Permute sinking:
 *
 *   e(permute(a, p), permute(b, p), splat) -> permute(e(a, b, splat'), p)
 *       e elementwise; every non-splat operand a permute by the same p used only by e;
 *       done when it saves a permute (two or more operands), or when e's value flows
 *       through single-consumer elementwise ops (other operands splats) into a permute,
 *       so the sunk permute meets it: permute(e(permute(a, p1)), p2) -> permute(e(a), p1.p2),
 *       gone when the composition is the identity.
 *
 * Elementwise ops commute with any permutation of their (equal-shaped) operands, so the
 * rewrites are exact. Permute chains and permutes of constants are simplify's and fold's.
 */
#include "passes-impl.h"

#include <string.h>

/* v (through broadcasts and reshapes) is a constant whose elements are all equal (bytewise):
 * its constant node. */
static int32_t splat_node(const kiln_graph *g, int32_t v) {
  while (g->nodes[v].op == KILN_OP_broadcast || g->nodes[v].op == KILN_OP_reshape)
    v = g->nodes[v].in[0];
  const kiln_const *c = kiln_ir_const_of(g, v);
  if (!c) return -1;
  int64_t n = kiln_shape_numel(&c->shape);
  size_t es = kiln_dtype_size(c->dtype);
  for (int64_t i = 1; i < n; i++)
    if (memcmp((const char *)c->data + (size_t)i * es, c->data, es) != 0) return -1;
  return n > 0 ? v : -1;
}

static bool is_identity(const int32_t *perm, int32_t rank) {
  for (int32_t d = 0; d < rank; d++)
    if (perm[d] != d) return false;
  return true;
}

/* The permutation every non-splat operand of e applies (copied to perm); false when the
 * operands do not all qualify. *n_perm counts the permute operands. */
static bool common_perm(const kiln_graph *g, const int32_t *uses, int32_t e, int32_t *perm,
                        int32_t *n_perm) {
  const kiln_node *n = &g->nodes[e];
  *n_perm = 0;
  for (int32_t j = 0; j < n->n_in; j++) {
    int32_t u = n->in[j];
    const kiln_node *un = &g->nodes[u];
    if (un->op != KILN_OP_permute) {
      if (splat_node(g, u) < 0) return false;
      continue;
    }
    int32_t times = 0;
    for (int32_t k = 0; k < n->n_in; k++) times += n->in[k] == u;
    if (uses[u] != times) return false; /* the permute stays for another consumer */
    if (*n_perm == 0) memcpy(perm, un->a.perm, sizeof(int32_t) * (size_t)n->shape.rank);
    else if (memcmp(perm, un->a.perm, sizeof(int32_t) * (size_t)n->shape.rank) != 0) return false;
    (*n_perm)++;
  }
  return *n_perm > 0;
}

/* True when e's value flows through single-consumer elementwise ops whose other operands
 * are splats into a permute: a permute sunk below e keeps sinking until it meets that one. */
static bool leads_to_permute(const kiln_graph *g, const int32_t *uses, const int32_t *user, int32_t e) {
  for (int32_t v = e; uses[v] == 1 && user[v] >= 0;) {
    const kiln_node *u = &g->nodes[user[v]];
    if (u->op == KILN_OP_permute) return true;
    if (kiln_op_table[u->op].category != KILN_CAT_ELEMENTWISE) return false;
    for (int32_t j = 0; j < u->n_in; j++)
      if (u->in[j] != v && splat_node(g, u->in[j]) < 0) return false;
    v = user[v];
  }
  return false;
}

typedef struct layout_sweep {
  kiln_graph *g;
  kiln_diag *d;
  bool failed;
} layout_sweep;

static int32_t append(layout_sweep *s, kiln_op op, kiln_dtype dt, const kiln_shape *shape,
                      int32_t n_in, const int32_t *in, const kiln_attrs *a, const char *name) {
  kiln_shape sh = *shape; /* may point into the node array, which appending moves */
  int32_t id = kiln_ir_append(s->g, op, dt, &sh, n_in, in, a, name);
  if (id < 0) {
    kiln_diag_set(s->d, s->g->diag.status ? s->g->diag.status : KILN_ERR_OUT_OF_MEMORY, "%s",
                  s->g->diag.msg);
    s->failed = true;
  }
  return id;
}

/* e rebuilt on the permutes' sources, then permuted by perm to shape out; returns the
 * new node. */
static int32_t sink_through(layout_sweep *s, int32_t e, const int32_t *perm, kiln_shape out) {
  kiln_node en = s->g->nodes[e];
  int32_t in[3];
  KILN_ASSERT(en.n_in <= 3);
  kiln_shape inner = {0};
  for (int32_t j = 0; j < en.n_in; j++)
    if (s->g->nodes[en.in[j]].op == KILN_OP_permute) {
      in[j] = s->g->nodes[en.in[j]].in[0];
      inner = s->g->nodes[in[j]].shape;
    }
  for (int32_t j = 0; j < en.n_in; j++) {
    if (s->g->nodes[en.in[j]].op == KILN_OP_permute) continue;
    /* the splat's value as a rank-0 constant, broadcast to the unpermuted shape */
    const kiln_const *c = kiln_ir_const_of(s->g, splat_node(s->g, en.in[j]));
    kiln_dtype dt = c->dtype;
    kiln_shape scalar = {0};
    const char *name = s->g->nodes[en.in[j]].name;
    int32_t ci = kiln_ir_add_const(s->g, dt, &scalar, c->data, name);
    int32_t cn = ci < 0 ? -1 : append(s, KILN_OP_constant, dt, &scalar, 0, NULL, NULL, name);
    if (ci < 0 && !s->failed) {
      kiln_diag_set(s->d, s->g->diag.status, "%s", s->g->diag.msg);
      s->failed = true;
    }
    if (cn < 0) return -1;
    s->g->nodes[cn].index = ci;
    in[j] = append(s, KILN_OP_broadcast, dt, &inner, 1, &cn, NULL, name);
    if (in[j] < 0) return -1;
  }
  int32_t ne = append(s, en.op, en.dtype, &inner, en.n_in, in, &en.a, en.name);
  if (ne < 0 || is_identity(perm, en.shape.rank)) return ne;
  kiln_attrs pa = {0};
  memcpy(pa.perm, perm, sizeof pa.perm);
  return append(s, KILN_OP_permute, en.dtype, &out, 1, &ne, &pa, en.name);
}

/* ------------------------------------------------------------------ channels last */

/* A convolution that goes channels last: one the lowering runs as a GEMM with groups of
 * one, or as a direct loop (one output channel per group: depthwise). Grouped GEMM
 * convolutions stay channels first (the channels-last GEMM has groups of one). */
static bool conv_goes_cl(const kiln_graph *g, const kiln_node *n) {
  if (n->op != KILN_OP_conv || (n->dtype != KILN_F32 && n->dtype != KILN_F64) || n->shape.rank < 3) return false;
  return n->a.groups <= 1 || !kiln_pass_conv_is_gemm(g, n);
}

typedef struct cl_state {
  layout_sweep s;
  int32_t *cl_of;  /* per original node: its channels-last twin, or -1 */
  int32_t *to_cl;  /* per original node: permute(node) to channels last, or -1 */
  int32_t *w_cl;   /* per original node: it as conv weights [k..., Ci/G, Co], or -1 */
} cl_state;

/* Node w permuted by perm: a constant permuted now (conv weights pre-packed at compile
 * time; a splat stays a splat, which lowering makes a constant in the code), a broadcast
 * of one element broadcast to the new shape, anything else through a permute node. */
static int32_t permuted(cl_state *c, int32_t w, const int32_t *perm) {
  kiln_graph *g = c->s.g;
  kiln_node wn = g->nodes[w];
  kiln_attrs pa = {0};
  memcpy(pa.perm, perm, sizeof(int32_t) * (size_t)wn.shape.rank);
  kiln_shape sh = kiln_shape_permuted(&wn.shape, pa.perm);
  if (wn.op == KILN_OP_broadcast && kiln_shape_numel(&g->nodes[wn.in[0]].shape) == 1)
    return append(&c->s, KILN_OP_broadcast, wn.dtype, &sh, 1, &wn.in[0], NULL, wn.name);
  int32_t pn = append(&c->s, KILN_OP_permute, wn.dtype, &sh, 1, &w, &pa, wn.name);
  if (pn < 0 || !kiln_ir_const_of(g, w)) return pn;
  int32_t cn; /* the permute evaluated by the interpreter (the fold pass's way); it dies */
  if (kiln_rt_fold_value(g, pn, &cn, c->s.d) != KILN_OK) {
    c->s.failed = true;
    return -1;
  }
  return cn;
}

/* Original node u as channels last: its twin, or u permuted (made once). */
static int32_t as_cl(cl_state *c, int32_t u) {
  if (c->cl_of[u] >= 0) return c->cl_of[u];
  if (c->to_cl[u] >= 0) return c->to_cl[u];
  int32_t perm[KILN_MAX_RANK];
  kiln_cl_perm(c->s.g->nodes[u].shape.rank, true, perm);
  return c->to_cl[u] = permuted(c, u, perm);
}

/* Conv weights as [k..., Ci/G, Co] (made once: convolutions may share weights). */
static int32_t cl_weights(cl_state *c, int32_t w) {
  if (c->w_cl[w] >= 0) return c->w_cl[w];
  int32_t perm[KILN_MAX_RANK];
  kiln_cl_weight_perm(c->s.g->nodes[w].shape.rank, true, perm);
  return c->w_cl[w] = permuted(c, w, perm);
}

/* A direct convolution of few input channels (an RGB first layer) reads the taps along
 * its last spatial dim as one run of adjacent pixels, which padding along that dim would
 * break: the input is padded along it instead (a pad the permute's kernel writes), and the
 * conv's own padding there becomes 0 (kiln_pass_conv_merges_taps). *x and *a are the
 * conv_cl's input and attributes; false when an append failed. */
static bool pad_for_merged_taps(cl_state *c, const kiln_pass_target *t, const kiln_node *nd, int32_t w_cl,
                                int32_t *x, kiln_attrs *a) {
  kiln_graph *g = c->s.g;
  int32_t r = nd->shape.rank, w = r - 3;
  int64_t ci = nd->n_in > 1 ? g->nodes[nd->in[1]].shape.dims[1] : 0, kw = g->nodes[w_cl].shape.dims[w];
  if (!t->desc.gemm_generated || nd->dtype != KILN_F32 || nd->n_in != 2 || nd->a.groups > 1 ||
      !kiln_pass_taps_can_merge(ci, kw, a->dilations[w]) || (a->lo[w] == 0 && a->hi[w] == 0) || a->lo[w] < 0 ||
      a->hi[w] < 0 || g->nodes[w_cl].op != KILN_OP_constant)
    return true;
  kiln_attrs pa = {0};
  pa.lo[r - 2] = a->lo[w], pa.hi[r - 2] = a->hi[w], pa.value = 0;
  kiln_shape sh = g->nodes[*x].shape;
  sh.dims[r - 2] += a->lo[w] + a->hi[w];
  int32_t p = append(&c->s, KILN_OP_pad, nd->dtype, &sh, 1, x, &pa, nd->name);
  if (p < 0) return false;
  *x = p, a->lo[w] = a->hi[w] = 0;
  return true;
}

/* Union-find over the nodes that want channels last; a root's entry sums its region. */
typedef struct cl_region {
  int32_t up;
  int32_t convs, depthwise, gemms; /* convolutions in the region: all, direct loops, GEMMs */
  int64_t co_sum;                  /* output channels of its GEMM convolutions, summed */
} cl_region;

static int32_t find_root(cl_region *r, int32_t v) {
  while (r[v].up != v) v = r[v].up = r[r[v].up].up;
  return v;
}

/* Regions worth running channels last: at least two convolutions (one alone would pay a
 * permute in and out), and a depthwise convolution (its loop then runs over contiguous
 * channels) or GEMM convolutions of 32 or more output channels on average (narrower
 * channels-last products are slower with OpenBLAS than channels first: two 16-channel
 * 3x3 convolutions over [2,16,56,56] ran 1.5 ms against 1.1 ms, at 8 channels 0.14-0.18
 * against 0.11-0.15 ms; ResNet-18's 64 to 512 channels, 29.1 against 30.5 ms). */
#define CL_MIN_MEAN_CHANNELS 32

static bool region_pays(const cl_region *r) {
  return r->convs >= 2 && (r->depthwise > 0 || (r->gemms > 0 && r->co_sum >= (int64_t)CL_MIN_MEAN_CHANNELS * r->gemms));
}

/* Which nodes go channels last (want[v]): convolutions (conv_goes_cl), then elementwise
 * ops with a channels-last operand and pools of a channels-last input, in connected
 * regions that pay (region_pays). */
static void choose_cl(const kiln_graph *g, uint8_t *want, cl_region *r) {
  int32_t n = g->n_nodes;
  for (int32_t v = 0; v < n; v++) {
    const kiln_node *nd = &g->nodes[v];
    r[v] = (cl_region){.up = v};
    want[v] = 0;
    if (nd->op == KILN_OP_conv && (want[v] = conv_goes_cl(g, nd))) {
      const kiln_shape *ws = &g->nodes[nd->in[1]].shape;
      bool loop = nd->a.groups > 1; /* conv_goes_cl: grouped means one channel per group */
      r[v].convs = 1, r[v].depthwise = loop, r[v].gemms = !loop, r[v].co_sum = loop ? 0 : ws->dims[0];
    } else if (nd->op == KILN_OP_pool) {
      want[v] = want[nd->in[0]];
    } else if (kiln_op_table[nd->op].category == KILN_CAT_ELEMENTWISE && nd->shape.rank >= 3) {
      for (int32_t j = 0; j < nd->n_in; j++) want[v] = want[v] || want[nd->in[j]];
    }
    if (!want[v]) continue;
    for (int32_t j = 0; j < nd->n_in; j++) {
      int32_t u = nd->in[j];
      if (!want[u]) continue;
      int32_t a = find_root(r, u), b = find_root(r, v);
      if (a == b) continue;
      r[a].up = b;
      r[b].convs += r[a].convs, r[b].depthwise += r[a].depthwise, r[b].gemms += r[a].gemms;
      r[b].co_sum += r[a].co_sum;
    }
  }
  for (int32_t v = 0; v < n; v++) want[v] = want[v] && region_pays(&r[find_root(r, v)]);
}

static kiln_status channels_last(kiln_graph *g, const kiln_pass_target *t, kiln_diag *d) {
  int32_t n = g->n_nodes;
  if (n == 0) return KILN_OK;
  int32_t *work = kiln_ir_malloc(g->alloc, sizeof(int32_t) * 4 * (size_t)n + (size_t)n);
  cl_region *regions = kiln_ir_malloc(g->alloc, sizeof(cl_region) * (size_t)n);
  if (!work || !regions) {
    kiln_ir_free(g->alloc, work);
    kiln_ir_free(g->alloc, regions);
    return kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory in the layout pass");
  }
  cl_state c = {{g, d, false}, work + n, work + 2 * n, work + 3 * n};
  int32_t *repl = work;
  uint8_t *want = (uint8_t *)(work + 4 * n);
  choose_cl(g, want, regions);
  kiln_ir_free(g->alloc, regions);
  for (int32_t i = 0; i < n; i++) repl[i] = i, c.cl_of[i] = c.to_cl[i] = c.w_cl[i] = -1;
  bool any = false;
  for (int32_t v = 0; v < n && !c.s.failed; v++) {
    if (!want[v]) continue;
    kiln_node nd = g->nodes[v]; /* a copy: appending moves the node array */
    kiln_op op = nd.op == KILN_OP_conv ? KILN_OP_conv_cl : nd.op == KILN_OP_pool ? KILN_OP_pool_cl : nd.op;
    int32_t in[3];
    KILN_ASSERT(nd.n_in <= 3);
    for (int32_t j = 0; j < nd.n_in; j++)
      in[j] = op == KILN_OP_conv_cl && j == 1 ? cl_weights(&c, nd.in[1]) : as_cl(&c, nd.in[j]);
    kiln_attrs ca = nd.a;
    if (c.s.failed || (op == KILN_OP_conv_cl && !pad_for_merged_taps(&c, t, &nd, in[1], &in[0], &ca))) break;
    kiln_attrs pa = {0};
    kiln_cl_perm(nd.shape.rank, true, pa.perm);
    kiln_shape sh = kiln_shape_permuted(&nd.shape, pa.perm);
    int32_t cl = append(&c.s, op, nd.dtype, &sh, nd.n_in, in, &ca, nd.name);
    if (cl < 0) break;
    c.cl_of[v] = cl;
    kiln_cl_perm(nd.shape.rank, false, pa.perm);
    int32_t back = append(&c.s, KILN_OP_permute, nd.dtype, &nd.shape, 1, &cl, &pa, nd.name);
    if (back < 0) break;
    repl[v] = back; /* channels-first readers see the twin through a permute */
    any = true;
  }
  kiln_status st = c.s.failed ? d->status : any ? kiln_pass_rewrite(g, repl, n, NULL, d) : KILN_OK;
  kiln_ir_free(g->alloc, work);
  return st;
}

kiln_status kiln_pass_layout(kiln_graph *g, const kiln_pass_target *t, kiln_diag *d) {
  if (t && t->desc.conv_channels_last && t->fusion == KILN_FUSION_FULL) {
    kiln_status st = channels_last(g, t, d);
    if (st != KILN_OK) return st;
  }
  /* Each sweep moves every permute it can by one op and removes at least one permute per
   * rewrite; the bound only caps very long elementwise chains. */
  for (int iter = 0; iter < 64; iter++) {
    int32_t n = g->n_nodes;
    if (n == 0) return KILN_OK;
    int32_t *work = kiln_ir_malloc(g->alloc, sizeof(int32_t) * 4 * (size_t)n);
    if (!work) return kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory in the layout pass");
    int32_t *uses = work, *repl = work + n, *user = work + 2 * n;
    uint8_t *touched = (uint8_t *)(work + 3 * n); /* rewritten or consumed in this sweep */
    memset(touched, 0, (size_t)n);
    kiln_ir_count_uses(g, uses);
    for (int32_t i = 0; i < n; i++) repl[i] = i, user[i] = -1;
    for (int32_t i = 0; i < n; i++)
      for (int32_t j = 0; j < g->nodes[i].n_in; j++) user[g->nodes[i].in[j]] = i;
    layout_sweep s = {g, d, false};
    int applied = 0;
    for (int32_t e = 0; e < n && !s.failed; e++) {
      const kiln_node *en = &g->nodes[e];
      int32_t perm[KILN_MAX_RANK], n_perm;
      if (kiln_op_table[en->op].category != KILN_CAT_ELEMENTWISE || touched[e]) continue;
      if (!common_perm(g, uses, e, perm, &n_perm)) continue;
      bool inputs_fresh = true;
      for (int32_t j = 0; j < en->n_in; j++) inputs_fresh = inputs_fresh && !touched[en->in[j]];
      if (!inputs_fresh) continue;
      int32_t u = uses[e] == 1 ? user[e] : -1;
      if (u >= 0 && g->nodes[u].op == KILN_OP_permute && !touched[u]) {
        /* permute(e(permute(a, p1)), p2) -> permute(e(a), p1 . p2); e dies with u */
        int32_t q[KILN_MAX_RANK];
        for (int32_t dd = 0; dd < en->shape.rank; dd++) q[dd] = perm[g->nodes[u].a.perm[dd]];
        int32_t r = sink_through(&s, e, q, g->nodes[u].shape);
        if (r >= 0) repl[u] = r, touched[u] = touched[e] = 1, applied++;
        continue;
      }
      if (n_perm < 2 && !leads_to_permute(g, uses, user, e)) continue;
      int32_t r = sink_through(&s, e, perm, en->shape);
      if (r >= 0) repl[e] = r, touched[e] = 1, applied++;
    }
    kiln_status st = s.failed ? d->status : kiln_pass_rewrite(g, repl, n, NULL, d);
    kiln_ir_free(g->alloc, work);
    if (st != KILN_OK || applied == 0) return st;
  }
  return KILN_OK;
}
