/* fold.c - constant folding: every computation whose inputs are all constants is
 * evaluated once with the reference interpreter (the one definition of op semantics)
 * and replaced by a constant node.
 *
 * Two exceptions keep weights small: a node larger than FOLD_MAX_ELEMS is left alone,
 * and an expanding op (broadcast, iota, pad) with a large output is folded only when
 * every consumer folds too (then it disappears); otherwise, e.g. a bias broadcast to a
 * conv's output shape, it stays an index map that lowering inlines for free.
 */
#include "passes-impl.h"

#include <string.h>

enum { FOLD_MAX_ELEMS = 16 * 1024 * 1024, FOLD_SMALL_ELEMS = 4096 };

/* A broadcast that only adds size-1 dims (a weight [K,N] seen as [1,K,N] by a batched
 * dot) copies nothing: folding it costs no memory and leaves the consumer a plain constant. */
static bool is_expanding(const kiln_graph *g, const kiln_node *n) {
  if (n->op == KILN_OP_broadcast)
    return kiln_shape_numel(&n->shape) > kiln_shape_numel(&g->nodes[n->in[0]].shape);
  return n->op == KILN_OP_iota || n->op == KILN_OP_pad;
}

/* Evaluates node v (inputs resolved to constant nodes) and appends a constant node
 * holding its value; returns the new node id, or -1 when the interpreter refused (left
 * unfolded: lowering or the compiled code reports it, e.g. an out-of-range constant gather
 * index is a compile-time error naming the node). */
static int32_t fold_node(kiln_graph *g, int32_t v, const int32_t *in, kiln_diag *d) {
  kiln_node n = g->nodes[v];
  kiln_rt_tensor ins[8], *insp = ins;
  if (n.n_in > 8) {
    insp = kiln_ir_malloc(g->alloc, sizeof(kiln_rt_tensor) * (size_t)n.n_in);
    if (!insp) return kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory folding '%s'", n.name), -1;
  }
  for (int32_t j = 0; j < n.n_in; j++) {
    const kiln_const *c = kiln_ir_const_of(g, in[j]);
    insp[j] = (kiln_rt_tensor){c->dtype, c->shape, c->data};
  }
  size_t nbytes = (size_t)kiln_shape_numel(&n.shape) * kiln_dtype_size(n.dtype);
  kiln_rt_tensor out = {n.dtype, n.shape, kiln_ir_malloc(g->alloc, nbytes ? nbytes : 1)};
  int32_t id = -1;
  if (!out.data) {
    kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory folding '%s'", n.name);
    goto done;
  }
  /* The node evaluated with its inputs already folded: a copy whose in[] names them. */
  kiln_node tmp = n;
  tmp.in = (int32_t *)in;
  kiln_diag local = {0};
  if (kiln_rt_eval_node(g, &tmp, insp, &out, &local) != KILN_OK) goto done;
  int32_t ci = kiln_ir_add_const(g, n.dtype, &n.shape, out.data, n.name);
  if (ci < 0) {
    kiln_diag_set(d, g->diag.status, "%s", g->diag.msg);
    goto done;
  }
  id = kiln_ir_append(g, KILN_OP_constant, n.dtype, &n.shape, 0, NULL, NULL, n.name);
  if (id < 0) {
    kiln_diag_set(d, g->diag.status, "%s", g->diag.msg);
    goto done;
  }
  g->nodes[id].index = ci;
done:
  kiln_ir_free(g->alloc, out.data);
  if (insp != ins) kiln_ir_free(g->alloc, insp);
  return id;
}

kiln_status kiln_pass_fold(kiln_graph *g, const kiln_pass_target *t, kiln_diag *d) {
  (void)t;
  int32_t n = g->n_nodes;
  if (n == 0) return KILN_OK;
  /* cv: value computable from constants alone; lazy: expanding and kept unfolded. */
  uint8_t *cv = kiln_ir_malloc(g->alloc, (size_t)n * 2);
  int32_t *repl = kiln_ir_malloc(g->alloc, sizeof(int32_t) * (size_t)n);
  int32_t *in = NULL;
  int32_t cap_in = 0;
  kiln_status st = KILN_OK;
  if (!cv || !repl) {
    st = kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory in fold");
    goto done;
  }
  uint8_t *lazy = cv + n;
  for (int32_t i = 0; i < n; i++) {
    const kiln_node *nd = &g->nodes[i];
    repl[i] = i;
    lazy[i] = 0;
    cv[i] = nd->op == KILN_OP_constant;
    if (kiln_op_table[nd->op].category == KILN_CAT_LEAF) continue;
    if (kiln_shape_numel(&nd->shape) > FOLD_MAX_ELEMS) continue;
    bool all = true;
    for (int32_t j = 0; j < nd->n_in; j++) all = all && cv[nd->in[j]];
    cv[i] = all;
  }
  /* An expanding node with a large output stays lazy if any consumer does not fold. */
  for (int32_t i = n - 1; i >= 0; i--) {
    const kiln_node *nd = &g->nodes[i];
    for (int32_t j = 0; j < nd->n_in; j++) {
      int32_t u = nd->in[j];
      const kiln_node *un = &g->nodes[u];
      if (is_expanding(g, un) && (!cv[i] || lazy[i]) &&
          kiln_shape_numel(&un->shape) > FOLD_SMALL_ELEMS)
        lazy[u] = 1;
    }
  }
  for (int32_t i = 0; i < n && st == KILN_OK; i++) {
    const kiln_node *nd = &g->nodes[i];
    if (!cv[i] || nd->op == KILN_OP_constant || lazy[i]) continue;
    if (nd->n_in > cap_in) {
      cap_in = nd->n_in * 2;
      int32_t *p = kiln_ir_realloc(g->alloc, in, sizeof(int32_t) * (size_t)cap_in);
      if (!p) { st = kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory in fold"); break; }
      in = p;
    }
    bool ready = true;
    for (int32_t j = 0; j < nd->n_in; j++) {
      in[j] = kiln_pass_resolve(repl, n, nd->in[j]);
      ready = ready && g->nodes[in[j]].op == KILN_OP_constant;
    }
    if (!ready) continue; /* an input stayed lazy */
    int32_t c = fold_node(g, i, in, d);
    if (d && d->status != KILN_OK) st = d->status;
    if (c >= 0) repl[i] = c;
  }
  if (st == KILN_OK) st = kiln_pass_rewrite(g, repl, n, NULL, d);
done:
  kiln_ir_free(g->alloc, in);
  kiln_ir_free(g->alloc, repl);
  kiln_ir_free(g->alloc, cv);
  return st;
}
