/* kernel_kind.c - what kernel a contraction becomes (a GEMM or a direct loop), asked by
 * the layout pass, fusion, the plan's verifier and lowering alike. */
#include "passes-impl.h"

#include <string.h>

bool kiln_pass_dot_is_gemm(const kiln_node *n) {
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

bool kiln_pass_is_gemm(const kiln_graph *g, int32_t v) {
  return kiln_pass_dot_is_gemm(&g->nodes[v]) || kiln_pass_conv_is_gemm(g, &g->nodes[v]);
}

bool kiln_pass_taps_can_merge(int64_t ci, int64_t kw, int64_t dilation) {
  return ci < 8 && kw > 1 && ci * kw >= 8 && dilation == 1;
}

bool kiln_pass_conv_merges_taps(const kiln_graph *g, const kiln_node *n) {
  int32_t sd = n->shape.rank - 2, w = sd - 1;
  if (n->op != KILN_OP_conv_cl || sd < 1) return false;
  int64_t ci = g->nodes[n->in[0]].shape.dims[n->shape.rank - 1], kw = g->nodes[n->in[1]].shape.dims[w];
  return kiln_pass_taps_can_merge(ci, kw, n->a.dilations[w]) && n->a.lo[w] == 0 && n->a.hi[w] == 0;
}

bool kiln_pass_conv_direct(const kiln_graph *g, const kiln_node *n, const kiln_target_desc *d) {
  /* fewer than 8 input channels (a network's first layer on RGB): a tap's few multiply-adds
   * do not pay for finding its input pixel, unless the taps along the last spatial dim
   * merge into one run (kiln_pass_conv_merges_taps; the layout pass pads for it) */
  int32_t sd = n->shape.rank - 2;
  const kiln_shape *xs = &g->nodes[n->in[0]].shape;
  return d->gemm_generated && n->op == KILN_OP_conv_cl && kiln_pass_conv_is_gemm(g, n) && n->dtype == KILN_F32 &&
         g->nodes[n->in[1]].op == KILN_OP_constant && sd >= 1 && sd <= 3 &&
         (xs->dims[xs->rank - 1] >= 8 || kiln_pass_conv_merges_taps(g, n));
}

int32_t kiln_pass_cl_source(const kiln_graph *g, const kiln_node *n) {
  const kiln_node *x = &g->nodes[n->in[0]];
  if (n->op != KILN_OP_conv_cl || x->op != KILN_OP_permute || !kiln_pass_conv_is_gemm(g, n)) return -1;
  int32_t perm[KILN_MAX_RANK];
  kiln_cl_perm(x->shape.rank, true, perm);
  return memcmp(perm, x->a.perm, sizeof(int32_t) * (size_t)x->shape.rank) == 0 ? x->in[0] : -1;
}
