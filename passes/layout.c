/* layout.c - the layout pass. Tensors stay row-major in the graph's own dim order (no
 * NHWC or blocked layouts yet); what the pass does is move permutes so that pairs cancel:
 *
 *   e(permute(a, p), permute(b, p), splat) -> permute(e(a, b, splat'), p)
 *       e elementwise; every non-splat operand a permute by the same p used only by e;
 *       done when it saves a permute (two or more operands), or when e's value flows
 *       through single-consumer elementwise ops (other operands splats) into a permute,
 *       so the sunk permute meets it: permute(e(permute(a, p1)), p2) -> permute(e(a), p1.p2),
 *       gone when the composition is the identity.
 *
 * Elementwise ops commute with any permutation of their (equal-shaped) operands, so the
 * rewrite is exact. Permute chains and permutes of constants are simplify's and fold's.
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

kiln_status kiln_pass_layout(kiln_graph *g, const kiln_pass_target *t, kiln_diag *d) {
  (void)t;
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
