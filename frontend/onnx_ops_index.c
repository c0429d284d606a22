/* onnx_ops_index.c - importers for ONNX indexing ops built on gather and scatter: GatherND,
 * ScatterND (both on a linear index into a flattened view), and the ops whose result shape
 * depends on values, which Kiln accepts only when those values are known at import time:
 * Compress, NonZero, Unique, ReverseSequence. */
#include "onnx_impl.h"

#include <string.h>

#define G (c->g)
#define NM (n->name)

static int32_t bin(fe_ctx *c, fe_node *n, kiln_op op, int32_t a, int32_t b) {
  return kiln_ir_binary(G, op, a, b, NM);
}

/* Rank-1 i64 constant of len values. */
static int32_t i64_vec(fe_ctx *c, fe_node *n, int64_t len, const int64_t *vals) {
  kiln_shape s = {.rank = 1, .dims = {len}};
  return kiln_ir_constant(G, NM, KILN_I64, &s, vals);
}

/* The linear position, in data viewed as [prod(ds[:b+k]), rest], of each index tuple of
 * ind [..., k] (the first b dims of ind are batch dims shared with data); negative
 * components wrap once. The result has ind's shape without its last dim. */
static int32_t nd_linear_index(fe_ctx *c, fe_node *n, int32_t ind, const kiln_shape *ds, int b) {
  const kiln_shape is = G->nodes[ind].shape;
  int k = (int)is.dims[is.rank - 1];
  kiln_shape t = {.rank = is.rank - 1};
  for (int i = 0; i < t.rank; i++) t.dims[i] = is.dims[i];
  if (G->nodes[ind].dtype != KILN_I64) ind = kiln_ir_cast(G, ind, KILN_I64, NM);
  int32_t lin = kiln_ir_broadcast(G, kiln_ir_scalar(G, KILN_I64, 0, NM), &t, NM);
  int64_t stride = 1;
  for (int j = k - 1; j >= 0; j--) {
    int64_t starts[KILN_MAX_RANK] = {0}, steps[KILN_MAX_RANK], counts[KILN_MAX_RANK];
    for (int i = 0; i < is.rank; i++) steps[i] = 1, counts[i] = is.dims[i];
    starts[is.rank - 1] = j;
    counts[is.rank - 1] = 1;
    int32_t comp = kiln_ir_reshape(G, kiln_ir_slice(G, ind, starts, steps, counts, NM), &t, NM);
    int32_t dim = kiln_ir_scalar(G, KILN_I64, (double)ds->dims[b + j], NM);
    int32_t neg = bin(c, n, KILN_OP_lt, comp, kiln_ir_scalar(G, KILN_I64, 0, NM));
    comp = kiln_ir_select(G, neg, bin(c, n, KILN_OP_add, comp, dim), comp, NM);
    lin = bin(c, n, KILN_OP_add, lin, bin(c, n, KILN_OP_mul, comp, kiln_ir_scalar(G, KILN_I64, (double)stride, NM)));
    stride *= ds->dims[b + j];
  }
  /* Batch coordinates select the block of stride elements that belongs to them. */
  for (int i = b - 1; i >= 0; i--) {
    lin = bin(c, n, KILN_OP_add, lin,
              bin(c, n, KILN_OP_mul, kiln_ir_iota(G, KILN_I64, &t, i, NM),
                  kiln_ir_scalar(G, KILN_I64, (double)stride, NM)));
    stride *= ds->dims[i];
  }
  return lin;
}

/* Checks ind [..., k] against data for GatherND/ScatterND with b batch dims. */
static kiln_status nd_check(fe_ctx *c, fe_node *n, const kiln_shape *ds, const kiln_shape *is, int64_t b) {
  if (is->rank < 1 || b < 0 || b >= is->rank)
    return fe_fail(c, n, KILN_ERR_SHAPE, "indices must have rank > batch_dims");
  int64_t k = is->dims[is->rank - 1];
  if (b + k > ds->rank) return fe_fail(c, n, KILN_ERR_SHAPE, "index tuples of %lld entries exceed the data rank", (long long)k);
  for (int i = 0; i < b; i++)
    if (is->dims[i] != ds->dims[i]) return fe_fail(c, n, KILN_ERR_SHAPE, "batch dim %d differs", i);
  if (is->rank - 1 + ds->rank - b - k > KILN_MAX_RANK)
    return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "the result has rank above %d", KILN_MAX_RANK);
  return KILN_OK;
}

/* out[t..., r...] = data[batch(t), ind[t]..., r...]: gather rows of data viewed as
 * [prod(ds[:b+k]), prod(ds[b+k:])]. */
kiln_status fe_import_gather_nd(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 2);
  if (st != KILN_OK) return st;
  int32_t data = n->in[0], ind = n->in[1];
  const kiln_shape ds = G->nodes[data].shape, is = G->nodes[ind].shape;
  int64_t b = fe_attr_int(n, "batch_dims", 0);
  if ((st = nd_check(c, n, &ds, &is, b)) != KILN_OK) return st;
  int64_t k = is.dims[is.rank - 1], lead = 1, rest = 1;
  for (int i = 0; i < ds.rank; i++) *(i < b + k ? &lead : &rest) *= ds.dims[i];
  kiln_shape flat = {2, {lead, rest}}, out = {.rank = is.rank - 1};
  for (int i = 0; i < is.rank - 1; i++) out.dims[i] = is.dims[i];
  for (int i = (int)(b + k); i < ds.rank; i++) out.dims[out.rank++] = ds.dims[i];
  int32_t lin = nd_linear_index(c, n, ind, &ds, (int)b);
  n->out[0] = kiln_ir_reshape(G, kiln_ir_gather(G, kiln_ir_reshape(G, data, &flat, NM), lin, 0, NM), &out, NM);
  return KILN_OK;
}

/* ScatterElements on data viewed as [prod(ds[:k]), rest], one row per index tuple. */
kiln_status fe_import_scatter_nd(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 3);
  if (st != KILN_OK) return st;
  int32_t data = n->in[0], ind = n->in[1], upd = n->in[2];
  const kiln_shape ds = G->nodes[data].shape, is = G->nodes[ind].shape;
  if ((st = nd_check(c, n, &ds, &is, 0)) != KILN_OK) return st;
  int kind;
  if ((st = fe_scatter_reduction(c, n, &kind)) != KILN_OK) return st;
  int64_t k = is.dims[is.rank - 1], lead = 1, rest = 1, tuples = 1;
  for (int i = 0; i < ds.rank; i++) *(i < k ? &lead : &rest) *= ds.dims[i];
  for (int i = 0; i < is.rank - 1; i++) tuples *= is.dims[i];
  if (kiln_shape_numel(&G->nodes[upd].shape) != tuples * rest)
    return fe_fail(c, n, KILN_ERR_SHAPE, "updates must have shape indices.shape[:-1] + data.shape[k:]");
  kiln_shape flat = {2, {lead, rest}}, col = {2, {tuples, 1}}, rows = {2, {tuples, rest}};
  int32_t lin = kiln_ir_reshape(G, nd_linear_index(c, n, ind, &ds, 0), &col, NM);
  int32_t y = kiln_ir_scatter(G, kiln_ir_reshape(G, data, &flat, NM), kiln_ir_broadcast(G, lin, &rows, NM),
                              kiln_ir_reshape(G, upd, &rows, NM), 0, kind, NM);
  n->out[0] = kiln_ir_reshape(G, y, &ds, NM);
  return KILN_OK;
}

/* Gathers the positions where the (import-time) condition holds along axis, or along the
 * flattened input when axis is absent. */
kiln_status fe_import_compress(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 2);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0], axis = 0;
  const kiln_const *cond;
  if ((st = fe_value(c, n, n->in[1], &cond)) != KILN_OK) return st;
  if (!fe_attr(n, "axis")) {
    kiln_shape flat = {1, {kiln_shape_numel(&G->nodes[x].shape)}};
    x = kiln_ir_reshape(G, x, &flat, NM);
    if (x < 0) return KILN_OK;
  } else if ((st = fe_axis(c, n, fe_attr_int(n, "axis", 0), G->nodes[x].shape.rank, &axis)) != KILN_OK) {
    return st;
  }
  int64_t len = kiln_shape_numel(&cond->shape), dim = G->nodes[x].shape.dims[axis];
  if (len > dim) return fe_fail(c, n, KILN_ERR_SHAPE, "condition has %lld entries for a dim of %lld", (long long)len, (long long)dim);
  int64_t *idx = kiln_ir_malloc(G->alloc, sizeof(int64_t) * (size_t)(len + 1)), cnt = 0;
  if (!idx) return fe_fail(c, n, KILN_ERR_OUT_OF_MEMORY, "out of memory");
  for (int64_t i = 0; i < len; i++)
    if (fe_get_f64(cond->dtype, cond->data, i) != 0) idx[cnt++] = i;
  int32_t iv = i64_vec(c, n, cnt, idx);
  kiln_ir_free(G->alloc, idx);
  n->out[0] = kiln_ir_gather(G, x, iv, axis, NM);
  return KILN_OK;
}

/* The coordinates of the nonzero elements of an import-time value, as a constant. */
kiln_status fe_import_nonzero(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  const kiln_const *k;
  if ((st = fe_value(c, n, n->in[0], &k)) != KILN_OK) return st;
  kiln_shape s = k->shape;
  if (s.rank == 0) s = (kiln_shape){1, {1}}; /* a scalar counts as one element */
  int64_t numel = kiln_shape_numel(&s), cnt = 0;
  for (int64_t i = 0; i < numel; i++) cnt += fe_get_f64(k->dtype, k->data, i) != 0;
  int64_t *out = kiln_ir_malloc(G->alloc, sizeof(int64_t) * (size_t)(s.rank * cnt + 1));
  if (!out) return fe_fail(c, n, KILN_ERR_OUT_OF_MEMORY, "out of memory");
  for (int64_t i = 0, j = 0; i < numel; i++) {
    if (fe_get_f64(k->dtype, k->data, i) == 0) continue;
    for (int64_t d = s.rank - 1, rem = i; d >= 0; d--) {
      out[d * cnt + j] = rem % s.dims[d];
      rem /= s.dims[d];
    }
    j++;
  }
  kiln_shape os = {2, {s.rank, cnt}};
  n->out[0] = kiln_ir_constant(G, NM, KILN_I64, &os, out);
  kiln_ir_free(G->alloc, out);
  return KILN_OK;
}

/* Unique over an import-time value: slices along axis (elements when axis is absent)
 * compared as [outer, len, inner] views; every output is a constant. */
typedef struct uniq_view {
  const kiln_const *k;
  int64_t outer, len, inner;
} uniq_view;

static int uniq_cmp(const uniq_view *v, int64_t a, int64_t b) {
  for (int64_t o = 0; o < v->outer; o++)
    for (int64_t i = 0; i < v->inner; i++) {
      double x = fe_get_f64(v->k->dtype, v->k->data, (o * v->len + a) * v->inner + i);
      double y = fe_get_f64(v->k->dtype, v->k->data, (o * v->len + b) * v->inner + i);
      if (x != y) return x < y ? -1 : 1;
    }
  return 0;
}

kiln_status fe_import_unique(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  const kiln_const *k;
  if ((st = fe_value(c, n, n->in[0], &k)) != KILN_OK) return st;
  kiln_shape s = k->shape;
  int32_t axis = -1;
  uniq_view v = {k, 1, kiln_shape_numel(&s), 1};
  if (fe_attr(n, "axis")) {
    if ((st = fe_axis(c, n, fe_attr_int(n, "axis", 0), s.rank, &axis)) != KILN_OK) return st;
    v.len = s.dims[axis];
    for (int i = 0; i < s.rank; i++)
      if (i != axis) *(i < axis ? &v.outer : &v.inner) *= s.dims[i];
  }
  bool sorted = fe_attr_int(n, "sorted", 1) != 0;
  size_t cap = sizeof(int64_t) * (size_t)(v.len + 1);
  int64_t *first = kiln_ir_malloc(G->alloc, cap), *inverse = kiln_ir_malloc(G->alloc, cap),
          *counts = kiln_ir_malloc(G->alloc, cap), *order = kiln_ir_malloc(G->alloc, cap),
          *rank = kiln_ir_malloc(G->alloc, cap);
  int64_t nu = 0;
  if (!first || !inverse || !counts || !order || !rank) {
    st = fe_fail(c, n, KILN_ERR_OUT_OF_MEMORY, "out of memory");
    goto done;
  }
  /* Distinct slices in order of first occurrence (quadratic: import-time values are small). */
  for (int64_t i = 0; i < v.len; i++) {
    int64_t u = 0;
    while (u < nu && uniq_cmp(&v, first[u], i) != 0) u++;
    if (u == nu) first[nu] = i, counts[nu++] = 0;
    counts[u]++;
    inverse[i] = u;
  }
  /* order[r] = the distinct slice at output position r (insertion sort, stable). */
  for (int64_t u = 0; u < nu; u++) {
    int64_t r = u;
    while (sorted && r > 0 && uniq_cmp(&v, first[order[r - 1]], first[u]) > 0) order[r] = order[r - 1], r--;
    order[r] = u;
  }
  /* rank: output position of each distinct slice; then first and counts move there
   * (through order, which is free again once rank is known). */
  for (int64_t r = 0; r < nu; r++) rank[order[r]] = r;
  for (int64_t i = 0; i < v.len; i++) inverse[i] = rank[inverse[i]];
  for (int64_t u = 0; u < nu; u++) order[rank[u]] = first[u];
  memcpy(first, order, sizeof(int64_t) * (size_t)nu);
  for (int64_t r = 0; r < nu; r++) counts[r] = 0;
  for (int64_t i = 0; i < v.len; i++) counts[inverse[i]]++;
  int32_t src = kiln_ir_constant(G, NM, k->dtype, &k->shape, k->data);
  int32_t sel = i64_vec(c, n, nu, first);
  if (axis < 0) {
    kiln_shape flat = {1, {v.len}};
    n->out[0] = kiln_ir_gather(G, kiln_ir_reshape(G, src, &flat, NM), sel, 0, NM);
  } else {
    n->out[0] = kiln_ir_gather(G, src, sel, axis, NM);
  }
  if (n->n_out > 1) n->out[1] = i64_vec(c, n, nu, first);
  if (n->n_out > 2) n->out[2] = i64_vec(c, n, v.len, inverse);
  if (n->n_out > 3) n->out[3] = i64_vec(c, n, nu, counts);
done:
  kiln_ir_free(G->alloc, first);
  kiln_ir_free(G->alloc, inverse);
  kiln_ir_free(G->alloc, counts);
  kiln_ir_free(G->alloc, order);
  kiln_ir_free(G->alloc, rank);
  return st;
}

/* Reverses the first lens[b] steps of every batch entry along time_axis, through a
 * constant time index per (batch, step) that gather_elements applies. */
kiln_status fe_import_reverse_sequence(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 2);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0], ba, ta;
  const kiln_shape s = G->nodes[x].shape;
  if ((st = fe_axis(c, n, fe_attr_int(n, "batch_axis", 1), s.rank, &ba)) != KILN_OK ||
      (st = fe_axis(c, n, fe_attr_int(n, "time_axis", 0), s.rank, &ta)) != KILN_OK)
    return st;
  if (ba == ta) return fe_fail(c, n, KILN_ERR_SHAPE, "batch_axis and time_axis must differ");
  const kiln_const *lens;
  if ((st = fe_value(c, n, n->in[1], &lens)) != KILN_OK) return st;
  int64_t nb = s.dims[ba], nt = s.dims[ta];
  if (kiln_shape_numel(&lens->shape) != nb)
    return fe_fail(c, n, KILN_ERR_SHAPE, "sequence_lens must have one entry per batch");
  int64_t *idx = kiln_ir_malloc(G->alloc, sizeof(int64_t) * (size_t)(nb * nt + 1));
  if (!idx) return fe_fail(c, n, KILN_ERR_OUT_OF_MEMORY, "out of memory");
  kiln_shape is = {.rank = s.rank};
  for (int i = 0; i < s.rank; i++) is.dims[i] = i == ba ? nb : i == ta ? nt : 1;
  for (int64_t b = 0; b < nb; b++) {
    int64_t len = fe_get_i64(lens->dtype, lens->data, b);
    len = len < 0 ? 0 : len > nt ? nt : len;
    for (int64_t t = 0; t < nt; t++) idx[ba < ta ? b * nt + t : t * nb + b] = t < len ? len - 1 - t : t;
  }
  int32_t iv = kiln_ir_constant(G, NM, KILN_I64, &is, idx);
  kiln_ir_free(G->alloc, idx);
  n->out[0] = kiln_ir_gather_elements(G, x, kiln_ir_broadcast(G, iv, &s, NM), ta, NM);
  return KILN_OK;
}
