/* rewrite.c - the one graph rewrite mechanism of the passes: a pass records which node
 * replaces which (possibly a node it appended), and kiln_pass_rewrite rebuilds the node
 * array in topological order through an old->new id map, dropping what the outputs no
 * longer reach. No pass renumbers nodes by hand. */
#include "passes-impl.h"

#include <string.h>

int32_t kiln_pass_resolve(const int32_t *repl, int32_t n_repl, int32_t v) {
  /* Chains are short; the bound only guards against a pass that built a cycle. */
  for (int32_t guard = 0; repl && v < n_repl && repl[v] != v; guard++) {
    KILN_ASSERT(guard <= n_repl);
    v = repl[v];
  }
  return v;
}

bool kiln_pass_is_splat(const kiln_graph *g, int32_t v, double x) {
  while (g->nodes[v].op == KILN_OP_broadcast || g->nodes[v].op == KILN_OP_reshape)
    v = g->nodes[v].in[0];
  const kiln_const *c = kiln_ir_const_of(g, v);
  if (!c) return false;
  int64_t n = kiln_shape_numel(&c->shape);
  for (int64_t i = 0; i < n; i++) {
    double e = kiln_dtype_is_float(c->dtype) ? kiln_rt_get_f64(c->dtype, c->data, i)
                                             : (double)kiln_rt_get_i64(c->dtype, c->data, i);
    if (e != x) return false;
  }
  return true;
}

/* Drops constant-store entries no node uses (folding leaves many behind). */
static kiln_status compact_consts(kiln_graph *g, kiln_diag *d) {
  if (g->n_consts == 0) return KILN_OK;
  int32_t *map = kiln_ir_malloc(g->alloc, sizeof(int32_t) * (size_t)g->n_consts);
  if (!map) return kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory compacting constants");
  for (int32_t i = 0; i < g->n_consts; i++) map[i] = -1;
  for (int32_t i = 0; i < g->n_nodes; i++)
    if (g->nodes[i].op == KILN_OP_constant) map[g->nodes[i].index] = 0;
  int32_t k = 0;
  for (int32_t i = 0; i < g->n_consts; i++) {
    if (map[i] < 0) {
      kiln_ir_free(g->alloc, g->consts[i].data);
      continue;
    }
    map[i] = k;
    g->consts[k++] = g->consts[i];
  }
  g->n_consts = k;
  for (int32_t i = 0; i < g->n_nodes; i++)
    if (g->nodes[i].op == KILN_OP_constant) g->nodes[i].index = map[g->nodes[i].index];
  kiln_ir_free(g->alloc, map);
  return KILN_OK;
}

kiln_status kiln_pass_rewrite(kiln_graph *g, const int32_t *repl, int32_t n_repl, bool *changed,
                              kiln_diag *d) {
  int32_t n = g->n_nodes;
  if (changed) *changed = false;
  if (n == 0) return KILN_OK;
  /* One allocation for the work arrays: res, state, newid, order, stack (2 per entry). */
  int32_t *work = kiln_ir_malloc(g->alloc, sizeof(int32_t) * (size_t)n * 6);
  kiln_node *nodes = kiln_ir_malloc(g->alloc, sizeof(kiln_node) * (size_t)n);
  if (!work || !nodes) {
    kiln_ir_free(g->alloc, work);
    kiln_ir_free(g->alloc, nodes);
    return kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory rewriting graph '%s'", g->name);
  }
  int32_t *res = work, *state = work + n, *newid = work + 2 * n, *order = work + 3 * n;
  int32_t *stack = work + 4 * n; /* pairs (node, next input to visit) */
  for (int32_t i = 0; i < n; i++) {
    res[i] = kiln_pass_resolve(repl, n_repl, i);
    state[i] = 0; /* 0 dead, 1 live, 2 on stack, 3 emitted */
    newid[i] = -1;
  }
  for (int32_t i = 0; i < g->n_inputs; i++) {
    KILN_ASSERT(res[g->inputs[i].node] == g->inputs[i].node); /* inputs are never replaced */
    state[g->inputs[i].node] = 1;
  }
  /* Liveness: everything the (replaced) outputs reach through replaced inputs. */
  int32_t sp = 0;
  for (int32_t i = 0; i < g->n_outputs; i++) {
    int32_t v = res[g->outputs[i].node];
    if (state[v] == 0) { state[v] = 1; stack[sp++] = v; }
  }
  while (sp > 0) {
    const kiln_node *nd = &g->nodes[stack[--sp]];
    for (int32_t j = 0; j < nd->n_in; j++) {
      int32_t u = res[nd->in[j]];
      if (state[u] == 0) { state[u] = 1; stack[sp++] = u; }
    }
  }
  /* Post-order DFS over live nodes in id order: the old order where it is topological,
   * appended replacement nodes pulled in front of their first user. */
  int32_t n_new = 0;
  for (int32_t root = 0; root < n; root++) {
    if (state[root] != 1) continue;
    sp = 0;
    stack[sp++] = root;
    stack[sp++] = 0;
    state[root] = 2;
    while (sp > 0) {
      int32_t v = stack[sp - 2], j = stack[sp - 1];
      const kiln_node *nd = &g->nodes[v];
      if (j < nd->n_in) {
        stack[sp - 1] = j + 1;
        int32_t u = res[nd->in[j]];
        KILN_ASSERT(state[u] != 2); /* a cycle means a pass replaced a node by its user */
        if (state[u] == 1) {
          state[u] = 2;
          stack[sp++] = u;
          stack[sp++] = 0;
        }
        continue;
      }
      sp -= 2;
      state[v] = 3;
      newid[v] = n_new;
      order[n_new++] = v;
    }
  }
  bool diff = n_new != n;
  for (int32_t k = 0; k < n_new; k++) {
    kiln_node nd = g->nodes[order[k]];
    if (order[k] != k) diff = true;
    for (int32_t j = 0; j < nd.n_in; j++) {
      int32_t u = newid[res[nd.in[j]]];
      if (u != nd.in[j]) diff = true;
      nd.in[j] = u; /* each node owns its input array: safe to update in place */
    }
    nodes[k] = nd;
  }
  for (int32_t i = 0; i < g->n_inputs; i++) g->inputs[i].node = newid[g->inputs[i].node];
  for (int32_t i = 0; i < g->n_outputs; i++) {
    int32_t v = newid[res[g->outputs[i].node]];
    if (v != g->outputs[i].node) diff = true;
    g->outputs[i].node = v;
  }
  kiln_ir_free(g->alloc, g->nodes);
  g->nodes = nodes;
  g->n_nodes = n_new;
  g->cap_nodes = n;
  kiln_ir_free(g->alloc, work);
  if (changed) *changed = diff;
  return compact_consts(g, d);
}
