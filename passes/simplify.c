/* simplify.c - algebraic identities and movement-chain folding, iterated to a fixed
 * point:
 *   x+0, 0+x, x-0, x*1, 1*x, x/1 -> x   (the other operand is a splat constant; elementwise
 *                                        operands already have the node's shape and dtype)
 *   neg(neg(x)) -> x                     cast to x's own dtype -> x
 *   reshape(reshape(x)) -> reshape(x)    reshape to x's shape -> x
 *   permute(permute(x)) -> permute(x)    identity permute -> x
 *   broadcast(broadcast(x)) -> broadcast(x), broadcast to x's shape -> x
 *   full slice with step 1 -> x          pad with all-zero lo/hi -> x
 *   concat of one input -> x
 * A sweep rewrites chains in place (a node's input is replaced by an earlier node, so the
 * order stays topological) and records replacements; kiln_pass_rewrite then drops what
 * died.
 */
#include "passes-impl.h"

#include <string.h>

static bool is_identity_perm(const kiln_node *n) {
  for (int32_t d = 0; d < n->shape.rank; d++)
    if (n->a.perm[d] != d) return false;
  return true;
}

/* The node that replaces v, v itself when no rule applies; may rewrite v in place
 * (counted in *edits). */
static int32_t simplify_node(kiln_graph *g, int32_t v, int *edits) {
  kiln_node *n = &g->nodes[v];
  if (n->n_in == 0) return v;
  int32_t x = n->in[0];
  const kiln_node *xn = &g->nodes[x];
  switch (n->op) {
  case KILN_OP_add:
    if (kiln_pass_is_splat(g, n->in[1], 0)) return x;
    if (kiln_pass_is_splat(g, x, 0)) return n->in[1];
    return v;
  case KILN_OP_sub:
    return kiln_pass_is_splat(g, n->in[1], 0) ? x : v;
  case KILN_OP_mul:
    if (kiln_pass_is_splat(g, n->in[1], 1)) return x;
    if (kiln_pass_is_splat(g, x, 1)) return n->in[1];
    return v;
  case KILN_OP_div:
    return kiln_pass_is_splat(g, n->in[1], 1) ? x : v;
  case KILN_OP_pow:
    /* x^2 is x*x, rounded the same (layer norm's variance as ONNX exports it): a multiply
     * instead of a libm pow per element. x^1 is x, NaN and infinities included. */
    if (kiln_dtype_is_float(n->dtype) && kiln_pass_is_splat(g, n->in[1], 2)) {
      n->op = KILN_OP_mul;
      n->in[1] = x;
      (*edits)++;
      return v;
    }
    return kiln_pass_is_splat(g, n->in[1], 1) ? x : v;
  case KILN_OP_neg:
    return xn->op == KILN_OP_neg ? xn->in[0] : v;
  case KILN_OP_cast:
    return xn->dtype == n->dtype ? x : v;
  case KILN_OP_reshape:
  case KILN_OP_broadcast:
    if (xn->op == n->op) { /* both compose: numpy broadcasting is transitive */
      n->in[0] = x = xn->in[0];
      xn = &g->nodes[x];
      (*edits)++;
    }
    return kiln_shape_eq(&xn->shape, &n->shape) ? x : v;
  case KILN_OP_permute:
    if (xn->op == KILN_OP_permute) {
      /* out dim d = mid dim p2[d] = in dim p1[p2[d]] */
      int32_t q[KILN_MAX_RANK];
      for (int32_t d = 0; d < n->shape.rank; d++) q[d] = xn->a.perm[n->a.perm[d]];
      memcpy(n->a.perm, q, sizeof(int32_t) * (size_t)n->shape.rank);
      n->in[0] = x = xn->in[0];
      (*edits)++;
    }
    return is_identity_perm(n) ? x : v;
  case KILN_OP_slice:
    if (!kiln_shape_eq(&xn->shape, &n->shape)) return v;
    for (int32_t d = 0; d < n->shape.rank; d++)
      if (n->a.starts[d] != 0 || n->a.steps[d] != 1) return v;
    return x;
  case KILN_OP_pad:
    for (int32_t d = 0; d < n->shape.rank; d++)
      if (n->a.lo[d] != 0 || n->a.hi[d] != 0) return v;
    return x;
  case KILN_OP_concat:
    return n->n_in == 1 ? x : v;
  /* no rule */
  case KILN_OP_abs: case KILN_OP_exp: case KILN_OP_log: case KILN_OP_sqrt: case KILN_OP_rsqrt: case KILN_OP_recip:
  case KILN_OP_tanh: case KILN_OP_sigmoid: case KILN_OP_erf: case KILN_OP_sin: case KILN_OP_cos: case KILN_OP_floor:
  case KILN_OP_ceil: case KILN_OP_round: case KILN_OP_sign: case KILN_OP_not: case KILN_OP_isnan: case KILN_OP_atan:
  case KILN_OP_max: case KILN_OP_min: case KILN_OP_mod: case KILN_OP_and: case KILN_OP_or: case KILN_OP_xor:
  case KILN_OP_eq: case KILN_OP_ne: case KILN_OP_lt: case KILN_OP_le: case KILN_OP_gt: case KILN_OP_ge:
  case KILN_OP_select:
  case KILN_OP_reverse: case KILN_OP_gather: case KILN_OP_gather_elements: case KILN_OP_iota:
  KILN_OPS_LEAF(KILN_OP_CASE)
  KILN_OPS_REDUCE(KILN_OP_CASE)
  KILN_OPS_WINDOW(KILN_OP_CASE)
  KILN_OPS_CONTRACTION(KILN_OP_CASE)
  KILN_OPS_OPAQUE(KILN_OP_CASE)
  case KILN_OP_COUNT: break;
  }
  return v;
}

kiln_status kiln_pass_simplify(kiln_graph *g, const kiln_pass_target *t, kiln_diag *d) {
  (void)t;
  for (int iter = 0; iter < 64; iter++) {
    int32_t n = g->n_nodes;
    int32_t *repl = kiln_ir_malloc(g->alloc, sizeof(int32_t) * (size_t)(n ? n : 1));
    if (!repl) return kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory in simplify");
    int edits = 0;
    for (int32_t i = 0; i < n; i++) {
      kiln_node *nd = &g->nodes[i];
      for (int32_t j = 0; j < nd->n_in; j++) nd->in[j] = repl[nd->in[j]]; /* already final */
      repl[i] = simplify_node(g, i, &edits);
      if (repl[i] != i) edits++;
    }
    bool changed = false;
    kiln_status st = kiln_pass_rewrite(g, repl, n, &changed, d);
    kiln_ir_free(g->alloc, repl);
    if (st != KILN_OK) return st;
    if (edits == 0) return KILN_OK;
  }
  return KILN_OK; /* a fixed point this deep is not expected; what was done is valid */
}
