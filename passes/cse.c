/* cse.c - common subexpression elimination: two nodes with the same op, dtype, shape,
 * inputs and used attribute fields compute the same value, so the later one is replaced
 * by the earlier. Constants are merged when dtype, shape and bytes agree (small ones
 * only: comparing megabytes of weights is not worth it). Graph inputs are never merged.
 */
#include "passes-impl.h"

#include <string.h>

enum { CSE_MAX_CONST_BYTES = 4096 };

static uint64_t mix(uint64_t h, const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull; /* FNV-1a */
  return h;
}

/* Calls f(field address, size) for each attribute field op uses, in a fixed order. */
#define ATTR_FIELDS(F, a, attrs)                                                     \
  do {                                                                               \
    if ((attrs) & KILN_A_AXIS) F(&(a)->axis, sizeof (a)->axis);                      \
    if ((attrs) & KILN_A_AXES) {                                                     \
      F(&(a)->n_axes, sizeof (a)->n_axes);                                           \
      F((a)->axes, sizeof (a)->axes);                                                \
    }                                                                                \
    if ((attrs) & KILN_A_KEEPDIMS) F(&(a)->keepdims, sizeof (a)->keepdims);          \
    if ((attrs) & KILN_A_PERM) F((a)->perm, sizeof (a)->perm);                       \
    if ((attrs) & KILN_A_STARTS) F((a)->starts, sizeof (a)->starts);                 \
    if ((attrs) & KILN_A_STEPS) F((a)->steps, sizeof (a)->steps);                    \
    if ((attrs) & KILN_A_LO) F((a)->lo, sizeof (a)->lo);                             \
    if ((attrs) & KILN_A_HI) F((a)->hi, sizeof (a)->hi);                             \
    if ((attrs) & KILN_A_VALUE) F(&(a)->value, sizeof (a)->value);                   \
    if ((attrs) & KILN_A_KIND) F(&(a)->kind, sizeof (a)->kind);                      \
    if ((attrs) & KILN_A_WINDOW) F((a)->window, sizeof (a)->window);                 \
    if ((attrs) & KILN_A_STRIDES) F((a)->strides, sizeof (a)->strides);              \
    if ((attrs) & KILN_A_DILATIONS) F((a)->dilations, sizeof (a)->dilations);        \
    if ((attrs) & KILN_A_GROUPS) F(&(a)->groups, sizeof (a)->groups);                \
    if ((attrs) & KILN_A_COUNT_PAD) F(&(a)->count_include_pad, sizeof (a)->count_include_pad); \
    if ((attrs) & KILN_A_K) F(&(a)->k, sizeof (a)->k);                               \
  } while (0)

static uint64_t node_hash(const kiln_graph *g, const kiln_node *n) {
  uint64_t h = 14695981039346656037ull;
  h = mix(h, &n->op, sizeof n->op);
  h = mix(h, &n->dtype, sizeof n->dtype);
  h = mix(h, &n->shape.rank, sizeof n->shape.rank);
  h = mix(h, n->shape.dims, sizeof(int64_t) * (size_t)n->shape.rank);
  h = mix(h, &n->n_in, sizeof n->n_in);
  if (n->n_in) h = mix(h, n->in, sizeof(int32_t) * (size_t)n->n_in);
#define HASH_FIELD(p, sz) (h = mix(h, (p), (sz)))
  ATTR_FIELDS(HASH_FIELD, &n->a, kiln_op_table[n->op].attrs);
#undef HASH_FIELD
  if (n->op == KILN_OP_constant) {
    const kiln_const *c = &g->consts[n->index];
    h = mix(h, c->data, c->nbytes);
  }
  return h;
}

static bool node_equal(const kiln_graph *g, const kiln_node *x, const kiln_node *y) {
  if (x->op != y->op || x->dtype != y->dtype || !kiln_shape_eq(&x->shape, &y->shape) ||
      x->n_in != y->n_in)
    return false;
  if (x->n_in && memcmp(x->in, y->in, sizeof(int32_t) * (size_t)x->n_in) != 0) return false;
  bool same = true;
  const kiln_attrs *a = &x->a;
  const unsigned char *base_a = (const unsigned char *)&x->a, *base_b = (const unsigned char *)&y->a;
#define CMP_FIELD(p, sz)                                                              \
  (same = same && memcmp((p), base_b + ((const unsigned char *)(p) - base_a), (sz)) == 0)
  ATTR_FIELDS(CMP_FIELD, a, kiln_op_table[x->op].attrs);
#undef CMP_FIELD
  if (!same) return false;
  if (x->op == KILN_OP_constant) {
    const kiln_const *cx = &g->consts[x->index], *cy = &g->consts[y->index];
    return cx->nbytes == cy->nbytes && memcmp(cx->data, cy->data, cx->nbytes) == 0;
  }
  return true;
}

static bool cse_candidate(const kiln_graph *g, const kiln_node *n) {
  if (n->op == KILN_OP_input) return false;
  if (n->op == KILN_OP_constant) return g->consts[n->index].nbytes <= CSE_MAX_CONST_BYTES;
  return true;
}

kiln_status kiln_pass_cse(kiln_graph *g, const kiln_pass_target *t, kiln_diag *d) {
  (void)t;
  int32_t n = g->n_nodes;
  if (n == 0) return KILN_OK;
  int32_t cap = 16;
  while (cap < 2 * n) cap *= 2;
  int32_t *repl = kiln_ir_malloc(g->alloc, sizeof(int32_t) * (size_t)n);
  int32_t *table = kiln_ir_malloc(g->alloc, sizeof(int32_t) * (size_t)cap);
  if (!repl || !table) {
    kiln_ir_free(g->alloc, repl);
    kiln_ir_free(g->alloc, table);
    return kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory in cse");
  }
  for (int32_t i = 0; i < cap; i++) table[i] = -1;
  for (int32_t i = 0; i < n; i++) {
    kiln_node *nd = &g->nodes[i];
    repl[i] = i;
    /* Inputs first take their own replacements (earlier nodes, already final), so
     * duplicates cascade: two equal chains merge node by node in one sweep. */
    for (int32_t j = 0; j < nd->n_in; j++) nd->in[j] = repl[nd->in[j]];
    if (!cse_candidate(g, nd)) continue;
    uint32_t slot = (uint32_t)node_hash(g, nd) & (uint32_t)(cap - 1);
    for (;; slot = (slot + 1) & (uint32_t)(cap - 1)) {
      int32_t other = table[slot];
      if (other < 0) {
        table[slot] = i;
        break;
      }
      if (node_equal(g, &g->nodes[other], nd)) {
        repl[i] = other;
        break;
      }
    }
  }
  kiln_status st = kiln_pass_rewrite(g, repl, n, NULL, d);
  kiln_ir_free(g->alloc, table);
  kiln_ir_free(g->alloc, repl);
  return st;
}
