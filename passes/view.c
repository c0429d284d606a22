/* view.c - strided views: which chains of movement ops (reshape, permute, slice,
 * broadcast) over a buffer are plain strided access to it, and how a GEMM reads or writes
 * such views through its leading dimensions, transpose flags and batch strides. This is
 * what lets a contraction read Q, K^T and V straight out of a fused QKV product and write
 * its result straight into a permuted layout, with no copy kernel in between.
 */
#include "passes-impl.h"

#include <string.h>

void kiln_pass_view_dense(kiln_pass_view *v, int32_t base, const kiln_shape *s) {
  memset(v, 0, sizeof *v);
  v->base = base;
  v->rank = s->rank;
  int64_t st = 1;
  for (int32_t d = s->rank - 1; d >= 0; d--) {
    v->dims[d] = s->dims[d];
    v->stride[d] = st;
    st *= s->dims[d] > 0 ? s->dims[d] : 1;
  }
}

bool kiln_pass_view_permute(kiln_pass_view *v, const int32_t *perm) {
  kiln_pass_view o = *v;
  for (int32_t d = 0; d < v->rank; d++) {
    o.dims[d] = v->dims[perm[d]];
    o.stride[d] = v->stride[perm[d]];
  }
  *v = o;
  return true;
}

/* Reshape without copying (numpy's rule): dims are matched in groups of equal product;
 * the input dims of a group (ignoring size-1 dims) must be contiguous in one another, and
 * the group's output dims then take strides from its innermost input dim. */
bool kiln_pass_view_reshape(kiln_pass_view *v, const kiln_shape *to) {
  kiln_pass_view o = *v;
  o.rank = to->rank;
  for (int32_t d = 0; d < to->rank; d++) o.dims[d] = to->dims[d];
  int64_t numel = 1;
  for (int32_t d = 0; d < v->rank; d++) numel *= v->dims[d];
  if (numel == 0) {
    kiln_pass_view_dense(&o, v->base, to);
    o.off = v->off;
    *v = o;
    return true;
  }
  int32_t oi = 0, ii = 0;
  while (oi < to->rank || ii < v->rank) {
    int32_t o0 = oi, i0 = ii;
    int64_t po = 1, pi = 1;
    if (oi < to->rank) po *= to->dims[oi++];
    if (ii < v->rank) pi *= v->dims[ii++];
    while (po != pi) {
      if (po < pi && oi < to->rank) po *= to->dims[oi++];
      else if (ii < v->rank) pi *= v->dims[ii++];
      else return false;
    }
    /* take trailing size-1 dims into this group so the next group starts at a real dim */
    while (oi < to->rank && to->dims[oi] == 1 && !(ii < v->rank && v->dims[ii] == 1)) oi++;
    /* contiguity of the group's input dims (size-1 dims carry no constraint) */
    int64_t inner = -1, inner_dim = 1;
    for (int32_t d = ii - 1; d >= i0; d--) {
      if (v->dims[d] == 1) continue;
      if (inner >= 0 && v->stride[d] != inner * inner_dim) return false;
      inner = v->stride[d];
      inner_dim = v->dims[d];
    }
    /* innermost stride of the group */
    int64_t st = 1;
    for (int32_t d = ii - 1; d >= i0; d--)
      if (v->dims[d] != 1) {
        st = v->stride[d];
        break;
      }
    for (int32_t d = oi - 1; d >= o0; d--) {
      o.stride[d] = st;
      st *= to->dims[d];
    }
  }
  *v = o;
  return true;
}

/* n is a movement node whose input's view is v: v becomes n's view. */
bool kiln_pass_view_apply(kiln_pass_view *v, const kiln_node *n) {
  switch (n->op) {
  case KILN_OP_reshape: return kiln_pass_view_reshape(v, &n->shape);
  case KILN_OP_permute: return kiln_pass_view_permute(v, n->a.perm);
  case KILN_OP_slice:
    for (int32_t d = 0; d < v->rank; d++) {
      v->off += n->a.starts[d] * v->stride[d];
      v->stride[d] *= n->a.steps[d];
      v->dims[d] = n->shape.dims[d];
    }
    return true;
  case KILN_OP_broadcast: {
    kiln_pass_view o = *v;
    int32_t lead = n->shape.rank - v->rank;
    o.rank = n->shape.rank;
    for (int32_t d = 0; d < n->shape.rank; d++) {
      o.dims[d] = n->shape.dims[d];
      int32_t s = d - lead;
      o.stride[d] = s < 0 || v->dims[s] == 1 ? 0 : v->stride[s];
    }
    *v = o;
    return true;
  }
  case KILN_OP_pad: case KILN_OP_concat: case KILN_OP_reverse: case KILN_OP_gather: case KILN_OP_gather_elements:
  case KILN_OP_iota: /* not a strided view of their input */
  KILN_OPS_NOT_MOVEMENT(KILN_OP_CASE)
  case KILN_OP_COUNT: break;
  }
  return false;
}

/* The matrix in the last two dims of a view: unit stride along columns (row-major, ld =
 * the row stride) or along rows (stored transposed). A dim of extent 1 has no stride. */
static bool matrix_of(const kiln_pass_view *v, int32_t *trans, int64_t *ld, int64_t *off) {
  int32_t r = v->rank;
  int64_t rows = v->dims[r - 2], cols = v->dims[r - 1];
  int64_t rs = rows == 1 ? cols : v->stride[r - 2], cs = cols == 1 ? 1 : v->stride[r - 1];
  *off = v->off;
  if (cs == 1 && rs >= cols && rs > 0) {
    *trans = 0;
    *ld = rs;
    return true;
  }
  if (rows == 1 && cs > 0) { /* one row: read it as a column of a transposed matrix */
    *trans = 1;
    *ld = cs;
    return cs >= 1;
  }
  if (rs == 1 && cs >= rows) {
    *trans = 1;
    *ld = cs;
    return true;
  }
  return false;
}

bool kiln_pass_view_gemm(const kiln_pass_view *a, const kiln_pass_view *b, const kiln_pass_view *c,
                         kiln_gemm_desc *gd) {
  int32_t r = c->rank;
  if (r < 2 || a->rank != r || b->rank != r) return false;
  int32_t tc;
  int64_t ldc, offc;
  if (!matrix_of(a, &gd->trans_a, &gd->lda, &gd->a_off) || !matrix_of(b, &gd->trans_b, &gd->ldb, &gd->b_off) ||
      !matrix_of(c, &tc, &ldc, &offc) || tc)
    return false;
  gd->ldc = ldc;
  gd->c_off = offc;
  gd->m = c->dims[r - 2], gd->n = c->dims[r - 1], gd->k = a->dims[r - 1];
  /* batch loops: drop extent-1 dims, merge dims that are contiguous in all three */
  int64_t ext[KILN_MAX_RANK], sa[KILN_MAX_RANK], sb[KILN_MAX_RANK], sc[KILN_MAX_RANK];
  int32_t nb = 0;
  for (int32_t d = 0; d < r - 2; d++) {
    if (c->dims[d] == 1) continue;
    if (nb > 0 && sa[nb - 1] == a->stride[d] * c->dims[d] && sb[nb - 1] == b->stride[d] * c->dims[d] &&
        sc[nb - 1] == c->stride[d] * c->dims[d]) {
      ext[nb - 1] *= c->dims[d];
      sa[nb - 1] = a->stride[d], sb[nb - 1] = b->stride[d], sc[nb - 1] = c->stride[d];
      continue;
    }
    ext[nb] = c->dims[d], sa[nb] = a->stride[d], sb[nb] = b->stride[d], sc[nb] = c->stride[d];
    nb++;
  }
  /* A batch loop over which B is shared (stride 0) and A's and C's rows simply continue
   * is more rows of one product: [B, M, K] x broadcast [K, N] is one [B*M, K] x [K, N]. */
  while (nb > 0 && sb[nb - 1] == 0 && !gd->trans_a && sa[nb - 1] == gd->m * gd->lda && sc[nb - 1] == gd->m * gd->ldc) {
    gd->m *= ext[nb - 1];
    nb--;
  }
  if (nb > 2) return false;
  gd->n_batch = nb;
  for (int32_t i = 0; i < nb; i++) {
    gd->batch[i] = ext[i];
    gd->a_bstride[i] = sa[i], gd->b_bstride[i] = sb[i], gd->c_bstride[i] = sc[i];
  }
  return true;
}

int32_t kiln_pass_operand_view(const kiln_graph *g, const uint8_t *is_output, int32_t u, kiln_pass_view *view) {
  int32_t chain[64], n = 0;
  int32_t b = u;
  while (n < 64) {
    const kiln_node *nd = &g->nodes[b];
    bool movable = nd->op == KILN_OP_reshape || nd->op == KILN_OP_permute || nd->op == KILN_OP_slice ||
                   nd->op == KILN_OP_broadcast;
    if (!movable || (b != u && is_output[b])) break;
    chain[n++] = b;
    b = nd->in[0];
  }
  kiln_pass_view_dense(view, b, &g->nodes[b].shape);
  for (int32_t i = n - 1; i >= 0; i--)
    if (!kiln_pass_view_apply(view, &g->nodes[chain[i]])) kiln_pass_view_dense(view, chain[i], &g->nodes[chain[i]].shape);
  return view->base;
}

bool kiln_pass_dot_views(const kiln_graph *g, const uint8_t *is_output, int32_t v, uint8_t dense,
                         const kiln_pass_view *cv, kiln_pass_view *av, kiln_pass_view *bv, kiln_gemm_desc *gd) {
  const kiln_node *n = &g->nodes[v];
  if (dense & 1) kiln_pass_view_dense(av, n->in[0], &g->nodes[n->in[0]].shape);
  else kiln_pass_operand_view(g, is_output, n->in[0], av);
  if (dense & 2) kiln_pass_view_dense(bv, n->in[1], &g->nodes[n->in[1]].shape);
  else kiln_pass_operand_view(g, is_output, n->in[1], bv);
  memset(gd, 0, sizeof *gd);
  gd->param_buf = -1;
  return kiln_pass_view_gemm(av, bv, cv, gd);
}

bool kiln_pass_sunk_view(const kiln_graph *g, int32_t v, int32_t f, kiln_pass_view *cv) {
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
    w = nd->in[0];
  }
  return true;
}

bool kiln_pass_prologue_fits(const kiln_pass_view *av, const kiln_gemm_desc *gd, int32_t u) {
  return av->base == u && gd->n_batch == 0 && !gd->trans_a && gd->a_off == 0 && gd->lda == gd->k && gd->k > 0 &&
         gd->m > 0;
}
