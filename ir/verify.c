/* verify.c - the graph verifier (kiln_ir_verify): ids and topological order, arity, leaf
 * indices against the constant store and the input list, and every computed node's dtype
 * and shape re-derived with kiln_ir_infer (which also range-checks its attributes). Runs
 * after parsing and between passes; the message names the node id, its name and its op. */
#include "ir.h"

#include <string.h>


#define NODE_FMT "node %%%d '%s' (%s): "
#define NODE_ARGS(i, n) (int)(i), (n)->name ? (n)->name : "", kiln_op_name((n)->op)

static kiln_status verify_leaf(const kiln_graph *g, int32_t i, const kiln_node *n, kiln_diag *d) {
  if (n->n_in != 0)
    return kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT, NODE_FMT "a leaf has %d inputs", NODE_ARGS(i, n), (int)n->n_in);
  if (n->op == KILN_OP_input) {
    if (n->index < 0 || n->index >= g->n_inputs)
      return kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT, NODE_FMT "input number %d out of range (%d inputs)",
                           NODE_ARGS(i, n), (int)n->index, (int)g->n_inputs);
    if (g->inputs[n->index].node != i)
      return kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT, NODE_FMT "input %d names node %d, not this one",
                           NODE_ARGS(i, n), (int)n->index, (int)g->inputs[n->index].node);
    return KILN_OK;
  }
  if (n->index < 0 || n->index >= g->n_consts)
    return kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT, NODE_FMT "constant index %d out of range (%d constants)",
                         NODE_ARGS(i, n), (int)n->index, (int)g->n_consts);
  const kiln_const *c = &g->consts[n->index];
  if (c->dtype != n->dtype || !kiln_shape_eq(&c->shape, &n->shape))
    return kiln_diag_set(d, KILN_ERR_SHAPE, NODE_FMT "is %s%s but constant %d is %s%s", NODE_ARGS(i, n),
                         kiln_dtype_name(n->dtype), KILN_SHAPE_STR(&n->shape), (int)n->index, kiln_dtype_name(c->dtype),
                         KILN_SHAPE_STR(&c->shape));
  size_t want = (size_t)kiln_shape_numel(&c->shape) * kiln_dtype_size(c->dtype);
  if (c->nbytes != want || (want && !c->data))
    return kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT, NODE_FMT "constant %d holds %zu bytes, needs %zu",
                         NODE_ARGS(i, n), (int)n->index, c->nbytes, want);
  return KILN_OK;
}

static kiln_status verify_node(const kiln_graph *g, int32_t i, kiln_diag *d) {
  const kiln_node *n = &g->nodes[i];
  if ((unsigned)n->op >= KILN_OP_COUNT)
    return kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT, "node %%%d '%s': unknown op %d", (int)i,
                         n->name ? n->name : "", (int)n->op);
  if (!n->name) return kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT, "node %%%d (%s): no name", (int)i, kiln_op_name(n->op));
  if ((unsigned)n->dtype >= KILN_DTYPE_COUNT)
    return kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT, NODE_FMT "bad dtype %d", NODE_ARGS(i, n), (int)n->dtype);
  if (n->shape.rank < 0 || n->shape.rank > KILN_MAX_RANK)
    return kiln_diag_set(d, KILN_ERR_SHAPE, NODE_FMT "rank %d not in 0..%d", NODE_ARGS(i, n), (int)n->shape.rank,
                         KILN_MAX_RANK);
  for (int k = 0; k < n->shape.rank; k++)
    if (n->shape.dims[k] < 0)
      return kiln_diag_set(d, KILN_ERR_SHAPE, NODE_FMT "negative dim in %s", NODE_ARGS(i, n), KILN_SHAPE_STR(&n->shape));
  const kiln_op_info *info = &kiln_op_table[n->op];
  if (info->arity >= 0 ? n->n_in != info->arity : n->n_in < 1)
    return kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT, NODE_FMT "has %d inputs, the op takes %s%d", NODE_ARGS(i, n),
                         (int)n->n_in, info->arity < 0 ? "at least " : "", info->arity < 0 ? 1 : info->arity);
  if (n->n_in > 0 && !n->in)
    return kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT, NODE_FMT "no input list", NODE_ARGS(i, n));
  for (int k = 0; k < n->n_in; k++)
    if (n->in[k] < 0 || n->in[k] >= i)
      return kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT,
                           NODE_FMT "input %d is %%%d, which is not an earlier node (forward reference or bad id)",
                           NODE_ARGS(i, n), k, (int)n->in[k]);
  if (info->category == KILN_CAT_LEAF) return verify_leaf(g, i, n, d);

  kiln_dtype dt = n->dtype;
  kiln_shape s = n->shape;
  kiln_diag inner = {0};
  if (kiln_ir_infer(g, n->op, n->n_in, n->in, &n->a, &dt, &s, &inner) != KILN_OK)
    return kiln_diag_set(d, inner.status, NODE_FMT "%s", NODE_ARGS(i, n), inner.msg);
  if (dt != n->dtype || !kiln_shape_eq(&s, &n->shape))
    return kiln_diag_set(d, KILN_ERR_SHAPE, NODE_FMT "is %s%s but its inputs and attributes give %s%s",
                         NODE_ARGS(i, n), kiln_dtype_name(n->dtype), KILN_SHAPE_STR(&n->shape), kiln_dtype_name(dt),
                         KILN_SHAPE_STR(&s));
  return KILN_OK;
}

kiln_status kiln_ir_verify(const kiln_graph *g, kiln_diag *d) {
  if (!g) return kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT, "verify: no graph");
  if (g->n_nodes < 0 || (g->n_nodes > 0 && !g->nodes))
    return kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT, "graph '%s': bad node list", g->name ? g->name : "");
  for (int32_t i = 0; i < g->n_nodes; i++) {
    kiln_status st = verify_node(g, i, d);
    if (st) return st;
  }
  for (int32_t j = 0; j < g->n_inputs; j++) {
    int32_t v = g->inputs[j].node;
    if (v < 0 || v >= g->n_nodes || g->nodes[v].op != KILN_OP_input || g->nodes[v].index != j)
      return kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT, "graph input %d '%s' names node %%%d, not an input node with number %d",
                           (int)j, g->inputs[j].name ? g->inputs[j].name : "", (int)v, (int)j);
  }
  for (int32_t j = 0; j < g->n_outputs; j++) {
    int32_t v = g->outputs[j].node;
    if (v < 0 || v >= g->n_nodes)
      return kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT, "graph output %d '%s' names node %%%d, which does not exist",
                           (int)j, g->outputs[j].name ? g->outputs[j].name : "", (int)v);
  }
  return KILN_OK;
}
