/* onnx_ops_shape.c - importers for ONNX shape computations and data movement: Shape,
 * Size, constants, Range, Reshape, Flatten, Transpose, (Un)Squeeze, Concat, Split, Slice,
 * Gather(Elements), ScatterElements, Expand, Tile, Pad (every mode), CenterCropPad,
 * DepthToSpace, SpaceToDepth.
 * Shapes are static, so Shape yields a constant and every value a shape depends on is
 * folded to a constant at import time. */
#include "onnx_impl.h"

#include <math.h>
#include <string.h>

#define G (c->g)
#define NM (n->name)
#define OP (n->p->op_type)

static const kiln_shape *shape_of(fe_ctx *c, int32_t v) { return &G->nodes[v].shape; }

/* Rank-1 i64 constant. */
static int32_t i64_list(fe_ctx *c, fe_node *n, int64_t len, const int64_t *vals) {
  kiln_shape s = {.rank = 1, .dims = {len}};
  return kiln_ir_constant(G, NM, KILN_I64, &s, vals);
}

/* An integer list from an attribute (older opsets) or from input `idx` (newer ones, folded);
 * *count = -1 when neither is given. */
static kiln_status ints_attr_or_input(fe_ctx *c, fe_node *n, bool from_input, const char *attr,
                                      int idx, int64_t *vals, int max, int *count) {
  kiln_status st = KILN_OK;
  *count = -1;
  if (!from_input) {
    *count = fe_attr_ints(c, n, attr, vals, max, &st);
    return st;
  }
  if (fe_in(n, idx) < 0) return KILN_OK;
  return fe_value_ints(c, n, idx, vals, max, count);
}

/* ------------------------------------------------------------------ shapes and constants */
kiln_status fe_import_shape(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  const kiln_shape s = *shape_of(c, n->in[0]);
  int64_t r = s.rank, start = fe_attr_int(n, "start", 0), end = fe_attr_int(n, "end", r);
  if (start < 0) start += r;
  if (end < 0) end += r;
  start = start < 0 ? 0 : start > r ? r : start;
  end = end < 0 ? 0 : end > r ? r : end;
  if (end < start) end = start;
  n->out[0] = i64_list(c, n, end - start, s.dims + start);
  return KILN_OK;
}

kiln_status fe_import_size(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  int64_t numel = kiln_shape_numel(shape_of(c, n->in[0]));
  kiln_shape s = {.rank = 0};
  n->out[0] = kiln_ir_constant(G, NM, KILN_I64, &s, &numel);
  return KILN_OK;
}

kiln_status fe_import_constant(fe_ctx *c, fe_node *n) {
  const Onnx__AttributeProto *a;
  char what[320];
  snprintf(what, sizeof what, "node \"%s\" (Constant) value", NM);
  if ((a = fe_attr(n, "value")) && a->t) return fe_tensor_node(c, a->t, what, NM, &n->out[0]);
  if ((a = fe_attr(n, "value_float")) && a->has_f) {
    n->out[0] = kiln_ir_scalar(G, KILN_F32, a->f, NM);
  } else if ((a = fe_attr(n, "value_int")) && a->has_i) {
    kiln_shape s = {.rank = 0};
    n->out[0] = kiln_ir_constant(G, NM, KILN_I64, &s, &a->i);
  } else if ((a = fe_attr(n, "value_floats"))) {
    kiln_shape s = {.rank = 1, .dims = {(int64_t)a->n_floats}};
    n->out[0] = kiln_ir_constant(G, NM, KILN_F32, &s, a->floats);
  } else if ((a = fe_attr(n, "value_ints"))) {
    n->out[0] = i64_list(c, n, (int64_t)a->n_ints, a->ints);
  } else {
    return fe_fail(c, n, KILN_ERR_UNSUPPORTED,
                   "only value, value_float(s) and value_int(s) are supported (not sparse or "
                   "string values)");
  }
  return KILN_OK;
}

/* Reads a shape (list of non-negative dims) from input i. */
static kiln_status shape_input(fe_ctx *c, fe_node *n, int i, kiln_shape *s) {
  int64_t dims[KILN_MAX_RANK];
  int cnt;
  kiln_status st = fe_value_ints(c, n, i, dims, KILN_MAX_RANK, &cnt);
  if (st != KILN_OK) return st;
  s->rank = cnt;
  for (int j = 0; j < cnt; j++) {
    if (dims[j] < 0) return fe_fail(c, n, KILN_ERR_SHAPE, "negative dim %lld", (long long)dims[j]);
    s->dims[j] = dims[j];
  }
  return KILN_OK;
}

kiln_status fe_import_constant_of_shape(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  kiln_shape s;
  if ((st = shape_input(c, n, 0, &s)) != KILN_OK) return st;
  const Onnx__AttributeProto *a = fe_attr(n, "value");
  int32_t v;
  if (a && a->t) {
    char what[320];
    snprintf(what, sizeof what, "node \"%s\" (ConstantOfShape) value", NM);
    if ((st = fe_tensor_node(c, a->t, what, NM, &v)) != KILN_OK) return st;
    if (kiln_shape_numel(shape_of(c, v)) != 1)
      return fe_fail(c, n, KILN_ERR_SHAPE, "value must hold one element");
    kiln_shape scalar = {.rank = 0};
    v = kiln_ir_reshape(G, v, &scalar, NM);
  } else {
    v = kiln_ir_scalar(G, KILN_F32, 0, NM);
  }
  /* A broadcast scalar: no need to materialize the filled tensor. */
  n->out[0] = kiln_ir_broadcast(G, v, &s, NM);
  return KILN_OK;
}

kiln_status fe_import_range(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 3);
  if (st != KILN_OK) return st;
  /* Each value is copied out at once: folding the next one may move the constant store. */
  double fv[3];
  int64_t iv[3];
  for (int i = 0; i < 3; i++) {
    const kiln_const *k;
    if ((st = fe_value(c, n, n->in[i], &k)) != KILN_OK) return st;
    if (kiln_shape_numel(&k->shape) != 1)
      return fe_fail(c, n, KILN_ERR_SHAPE, "start, limit and delta must be scalars");
    fv[i] = fe_get_f64(k->dtype, k->data, 0);
    iv[i] = fe_get_i64(k->dtype, k->data, 0);
  }
  kiln_dtype dt = G->nodes[n->in[0]].dtype;
  bool is_float = kiln_dtype_is_float(dt);
  if (is_float ? fv[2] == 0 : iv[2] == 0) return fe_fail(c, n, KILN_ERR_SHAPE, "delta is 0");
  int64_t len;
  if (is_float) {
    double cnt = ceil((fv[1] - fv[0]) / fv[2]);
    len = cnt > 0 ? (cnt < 0x1p62 ? (int64_t)cnt : INT64_MAX) : 0; /* NaN: 0 */
  } else {
    int64_t span = iv[1] - iv[0], step = iv[2];
    len = span > 0 && step > 0 ? (span + step - 1) / step
          : span < 0 && step < 0 ? (-span - step - 1) / -step : 0;
  }
  kiln_shape s = {.rank = 1, .dims = {len}};
  if (kiln_ir_check_size(G, dt, &s, NM) != KILN_OK) return KILN_OK; /* reported from g->diag */
  void *buf = kiln_ir_malloc(G->alloc, (size_t)len * kiln_dtype_size(dt) + 1);
  if (!buf) return fe_fail(c, n, KILN_ERR_OUT_OF_MEMORY, "out of memory");
  for (int64_t i = 0; i < len; i++) {
    if (is_float) fe_set_f64(dt, buf, i, fv[0] + (double)i * fv[2]);
    else if (dt == KILN_I64) ((int64_t *)buf)[i] = iv[0] + i * iv[2];
    else fe_set_f64(dt, buf, i, (double)(iv[0] + i * iv[2]));
  }
  n->out[0] = kiln_ir_constant(G, NM, dt, &s, buf);
  kiln_ir_free(G->alloc, buf);
  return KILN_OK;
}

/* ------------------------------------------------------------------ reshapes */
kiln_status fe_import_reshape(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0];
  const kiln_shape in = *shape_of(c, x);
  int64_t want[KILN_MAX_RANK];
  int cnt;
  if ((st = ints_attr_or_input(c, n, c->opset >= 5, "shape", 1, want, KILN_MAX_RANK, &cnt)) != KILN_OK)
    return st;
  if (cnt < 0) return fe_fail(c, n, KILN_ERR_PARSE, "the target shape is missing");
  bool allowzero = fe_attr_int(n, "allowzero", 0) != 0;
  kiln_shape out = {.rank = cnt};
  int infer = -1;
  int64_t known = 1;
  for (int i = 0; i < cnt; i++) {
    int64_t v = want[i];
    if (v == 0 && !allowzero) {
      if (i >= in.rank) return fe_fail(c, n, KILN_ERR_SHAPE, "dim %d is 0 (copy) past the input rank", i);
      v = in.dims[i];
    }
    if (v == -1) {
      if (infer >= 0) return fe_fail(c, n, KILN_ERR_SHAPE, "more than one -1 in the shape");
      infer = i;
      continue;
    }
    if (v < 0) return fe_fail(c, n, KILN_ERR_SHAPE, "bad dim %lld in the shape", (long long)v);
    out.dims[i] = v;
    if (__builtin_mul_overflow(known, v, &known))
      return fe_fail(c, n, KILN_ERR_SHAPE, "the target shape has more than 2^63 elements");
  }
  int64_t numel = kiln_shape_numel(&in);
  if (infer >= 0) {
    if (known == 0 || numel % known)
      return fe_fail(c, n, KILN_ERR_SHAPE, "cannot infer the -1 dim: %lld elements into %lld",
                     (long long)numel, (long long)known);
    out.dims[infer] = numel / known;
  }
  n->out[0] = kiln_ir_reshape(G, x, &out, NM);
  return KILN_OK;
}

kiln_status fe_import_flatten(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  const kiln_shape in = *shape_of(c, n->in[0]);
  int64_t axis = fe_attr_int(n, "axis", 1);
  if (axis < 0) axis += in.rank;
  if (axis < 0 || axis > in.rank)
    return fe_fail(c, n, KILN_ERR_SHAPE, "axis %lld is out of range", (long long)fe_attr_int(n, "axis", 1));
  kiln_shape out = {.rank = 2, .dims = {1, 1}};
  for (int i = 0; i < in.rank; i++) out.dims[i < axis ? 0 : 1] *= in.dims[i];
  n->out[0] = kiln_ir_reshape(G, n->in[0], &out, NM);
  return KILN_OK;
}

kiln_status fe_import_transpose(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  int32_t rank = shape_of(c, n->in[0])->rank;
  int64_t p64[KILN_MAX_RANK];
  int32_t perm[KILN_MAX_RANK];
  int cnt = fe_attr_ints(c, n, "perm", p64, KILN_MAX_RANK, &st);
  if (st != KILN_OK) return st;
  if (cnt >= 0 && cnt != rank)
    return fe_fail(c, n, KILN_ERR_SHAPE, "perm has %d entries for rank %d", cnt, rank);
  for (int i = 0; i < rank; i++) {
    if (cnt < 0) perm[i] = rank - 1 - i;
    else if ((st = fe_axis(c, n, p64[i], rank, &perm[i])) != KILN_OK) return st;
  }
  n->out[0] = kiln_ir_permute(G, n->in[0], perm, NM);
  return KILN_OK;
}

kiln_status fe_import_squeeze(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  const kiln_shape in = *shape_of(c, n->in[0]);
  int64_t ax[KILN_MAX_RANK];
  int cnt;
  if ((st = ints_attr_or_input(c, n, c->opset >= 13, "axes", 1, ax, KILN_MAX_RANK, &cnt)) != KILN_OK)
    return st;
  bool drop[KILN_MAX_RANK] = {0};
  for (int i = 0; i < cnt; i++) {
    int32_t a;
    if ((st = fe_axis(c, n, ax[i], in.rank, &a)) != KILN_OK) return st;
    if (in.dims[a] != 1)
      return fe_fail(c, n, KILN_ERR_SHAPE, "cannot squeeze axis %d of size %lld", a, (long long)in.dims[a]);
    drop[a] = true;
  }
  if (cnt <= 0) /* no axes: every size-1 dim */
    for (int i = 0; i < in.rank; i++) drop[i] = in.dims[i] == 1;
  kiln_shape out = {.rank = 0};
  for (int i = 0; i < in.rank; i++)
    if (!drop[i]) out.dims[out.rank++] = in.dims[i];
  n->out[0] = kiln_ir_reshape(G, n->in[0], &out, NM);
  return KILN_OK;
}

kiln_status fe_import_unsqueeze(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  const kiln_shape in = *shape_of(c, n->in[0]);
  int64_t ax[KILN_MAX_RANK];
  int cnt;
  if ((st = ints_attr_or_input(c, n, c->opset >= 13, "axes", 1, ax, KILN_MAX_RANK, &cnt)) != KILN_OK)
    return st;
  if (cnt < 0) return fe_fail(c, n, KILN_ERR_PARSE, "axes are missing");
  int32_t rank = in.rank + cnt;
  if (rank > KILN_MAX_RANK)
    return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "result rank %d exceeds %d", rank, KILN_MAX_RANK);
  bool add[KILN_MAX_RANK] = {0};
  for (int i = 0; i < cnt; i++) {
    int32_t a;
    if ((st = fe_axis(c, n, ax[i], rank, &a)) != KILN_OK) return st;
    if (add[a]) return fe_fail(c, n, KILN_ERR_SHAPE, "axis %d is repeated", a);
    add[a] = true;
  }
  kiln_shape out = {.rank = rank};
  for (int i = 0, j = 0; i < rank; i++) out.dims[i] = add[i] ? 1 : in.dims[j++];
  n->out[0] = kiln_ir_reshape(G, n->in[0], &out, NM);
  return KILN_OK;
}

kiln_status fe_import_depth_to_space(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  const kiln_shape in = *shape_of(c, n->in[0]);
  int64_t b = fe_attr_int(n, "blocksize", 0);
  if (in.rank != 4 || b < 1 || in.dims[1] % (b * b))
    return fe_fail(c, n, KILN_ERR_SHAPE, "needs a [N, C, H, W] input with C divisible by blocksize^2");
  int64_t N = in.dims[0], C = in.dims[1] / (b * b), H = in.dims[2], W = in.dims[3];
  bool crd = !strcmp(fe_attr_str(c, n, "mode", "DCR"), "CRD");
  kiln_shape s6 = crd ? (kiln_shape){6, {N, C, b, b, H, W}} : (kiln_shape){6, {N, b, b, C, H, W}};
  static const int32_t dcr[6] = {0, 3, 4, 1, 5, 2}, crdp[6] = {0, 1, 4, 2, 5, 3};
  kiln_shape out = {4, {N, C, H * b, W * b}};
  int32_t y = kiln_ir_reshape(G, n->in[0], &s6, NM);
  y = kiln_ir_permute(G, y, crd ? crdp : dcr, NM);
  n->out[0] = kiln_ir_reshape(G, y, &out, NM);
  return KILN_OK;
}

kiln_status fe_import_space_to_depth(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  const kiln_shape in = *shape_of(c, n->in[0]);
  int64_t b = fe_attr_int(n, "blocksize", 0);
  if (in.rank != 4 || b < 1 || in.dims[2] % b || in.dims[3] % b)
    return fe_fail(c, n, KILN_ERR_SHAPE, "needs a [N, C, H, W] input with H, W divisible by blocksize");
  int64_t N = in.dims[0], C = in.dims[1], H = in.dims[2] / b, W = in.dims[3] / b;
  kiln_shape s6 = {6, {N, C, H, b, W, b}}, out = {4, {N, C * b * b, H, W}};
  static const int32_t perm[6] = {0, 3, 5, 1, 2, 4};
  int32_t y = kiln_ir_reshape(G, n->in[0], &s6, NM);
  n->out[0] = kiln_ir_reshape(G, kiln_ir_permute(G, y, perm, NM), &out, NM);
  return KILN_OK;
}

/* ------------------------------------------------------------------ joining and slicing */
kiln_status fe_import_concat(fe_ctx *c, fe_node *n) {
  if (n->n_in < 1 || n->in[0] < 0) return fe_fail(c, n, KILN_ERR_PARSE, "needs inputs");
  int32_t xs[64], k = 0, axis;
  for (int i = 0; i < n->n_in; i++)
    if (n->in[i] >= 0) xs[k++] = n->in[i];
  kiln_status st = fe_axis(c, n, fe_attr_int(n, "axis", 0), shape_of(c, xs[0])->rank, &axis);
  if (st != KILN_OK) return st;
  n->out[0] = k == 1 ? xs[0] : kiln_ir_concat(G, k, xs, axis, NM);
  return KILN_OK;
}

/* x[start : start + count] along axis (step 1). */
static int32_t slice_axis(fe_ctx *c, fe_node *n, int32_t x, int32_t axis, int64_t start, int64_t count) {
  const kiln_shape s = *shape_of(c, x);
  int64_t starts[KILN_MAX_RANK] = {0}, steps[KILN_MAX_RANK], counts[KILN_MAX_RANK];
  for (int i = 0; i < s.rank; i++) steps[i] = 1, counts[i] = s.dims[i];
  starts[axis] = count > 0 ? start : 0;
  counts[axis] = count;
  return kiln_ir_slice(G, x, starts, steps, counts, NM);
}

kiln_status fe_import_split(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0], axis;
  const kiln_shape s = *shape_of(c, x);
  if ((st = fe_axis(c, n, fe_attr_int(n, "axis", 0), s.rank, &axis)) != KILN_OK) return st;
  int64_t sizes[64];
  int cnt;
  if ((st = ints_attr_or_input(c, n, c->opset >= 13, "split", 1, sizes, 64, &cnt)) != KILN_OK)
    return st;
  int64_t dim = s.dims[axis];
  if (cnt < 0) {
    /* Equal parts (the last may be smaller when num_outputs does not divide the dim). */
    int64_t parts = fe_attr_int(n, "num_outputs", n->n_out);
    if (parts < 1 || parts > 64) return fe_fail(c, n, KILN_ERR_SHAPE, "bad number of outputs");
    int64_t each = (dim + parts - 1) / parts;
    for (int i = 0; i < parts; i++) sizes[i] = dim - i * each < each ? (dim - i * each > 0 ? dim - i * each : 0) : each;
    cnt = (int)parts;
  }
  if (cnt != n->n_out) return fe_fail(c, n, KILN_ERR_SHAPE, "%d split sizes for %d outputs", cnt, n->n_out);
  int64_t total = 0;
  for (int i = 0; i < cnt; i++) total += sizes[i];
  if (total != dim)
    return fe_fail(c, n, KILN_ERR_SHAPE, "split sizes add up to %lld, the axis has %lld", (long long)total,
                   (long long)dim);
  int64_t start = 0;
  for (int i = 0; i < cnt; i++) {
    n->out[i] = slice_axis(c, n, x, axis, start, sizes[i]);
    start += sizes[i];
  }
  return KILN_OK;
}

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : v > hi ? hi : v; }

kiln_status fe_import_slice(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0];
  const kiln_shape s = *shape_of(c, x);
  int64_t sv[KILN_MAX_RANK], ev[KILN_MAX_RANK], av[KILN_MAX_RANK], stv[KILN_MAX_RANK];
  int ns, ne, na, nst = -1;
  bool inputs = c->opset >= 10;
  if ((st = ints_attr_or_input(c, n, inputs, "starts", 1, sv, KILN_MAX_RANK, &ns)) != KILN_OK ||
      (st = ints_attr_or_input(c, n, inputs, "ends", 2, ev, KILN_MAX_RANK, &ne)) != KILN_OK ||
      (st = ints_attr_or_input(c, n, inputs, "axes", 3, av, KILN_MAX_RANK, &na)) != KILN_OK)
    return st;
  if (inputs && fe_in(n, 4) >= 0 && (st = fe_value_ints(c, n, 4, stv, KILN_MAX_RANK, &nst)) != KILN_OK)
    return st;
  if (ns < 0 || ne != ns || (na >= 0 && na != ns) || (nst >= 0 && nst != ns))
    return fe_fail(c, n, KILN_ERR_SHAPE, "starts, ends, axes and steps must have equal lengths");
  int64_t starts[KILN_MAX_RANK], steps[KILN_MAX_RANK], counts[KILN_MAX_RANK];
  bool seen[KILN_MAX_RANK] = {0};
  for (int i = 0; i < s.rank; i++) starts[i] = 0, steps[i] = 1, counts[i] = s.dims[i];
  for (int i = 0; i < ns; i++) {
    int32_t a;
    if ((st = fe_axis(c, n, na >= 0 ? av[i] : i, s.rank, &a)) != KILN_OK) return st;
    if (seen[a]) return fe_fail(c, n, KILN_ERR_SHAPE, "axis %d is repeated", a);
    seen[a] = true;
    int64_t d = s.dims[a], step = nst >= 0 ? stv[i] : 1, b = sv[i], e = ev[i], cnt;
    if (step == 0) return fe_fail(c, n, KILN_ERR_SHAPE, "step 0 on axis %d", a);
    /* Steps beyond the dim select at most one element: clamping them avoids overflow. */
    step = clamp64(step, -d - 1, d + 1);
    if (b < 0) b += d;
    if (e < 0) e += d;
    if (step > 0) {
      b = clamp64(b, 0, d);
      e = clamp64(e, 0, d);
      cnt = e > b ? (e - b + step - 1) / step : 0;
    } else {
      b = clamp64(b, 0, d - 1);
      e = clamp64(e, -1, d - 1);
      cnt = b > e ? (b - e - step - 1) / -step : 0;
    }
    starts[a] = cnt > 0 ? b : 0;
    steps[a] = cnt > 1 ? step : 1;
    counts[a] = cnt;
  }
  n->out[0] = kiln_ir_slice(G, x, starts, steps, counts, NM);
  return KILN_OK;
}

/* Checks the first k inputs and normalizes the "axis" attribute (default 0) against the
 * rank of input 0. */
static kiln_status inputs_and_axis(fe_ctx *c, fe_node *n, int k, int32_t *axis) {
  kiln_status st = fe_need_inputs(c, n, k);
  if (st != KILN_OK) return st;
  return fe_axis(c, n, fe_attr_int(n, "axis", 0), shape_of(c, n->in[0])->rank, axis);
}

kiln_status fe_import_gather(fe_ctx *c, fe_node *n) {
  int32_t axis;
  kiln_status st = inputs_and_axis(c, n, 2, &axis);
  if (st != KILN_OK) return st;
  n->out[0] = kiln_ir_gather(G, n->in[0], n->in[1], axis, NM);
  return KILN_OK;
}

kiln_status fe_import_gather_elements(fe_ctx *c, fe_node *n) {
  int32_t axis;
  kiln_status st = inputs_and_axis(c, n, 2, &axis);
  if (st != KILN_OK) return st;
  n->out[0] = kiln_ir_gather_elements(G, n->in[0], n->in[1], axis, NM);
  return KILN_OK;
}

kiln_status fe_import_scatter_elements(fe_ctx *c, fe_node *n) {
  int32_t axis;
  kiln_status st = inputs_and_axis(c, n, 3, &axis);
  if (st != KILN_OK) return st;
  int kind;
  if ((st = fe_scatter_reduction(c, n, &kind)) != KILN_OK) return st;
  n->out[0] = kiln_ir_scatter(G, n->in[0], n->in[1], n->in[2], axis, kind, NM);
  return KILN_OK;
}

/* ------------------------------------------------------------------ broadcasting */
kiln_status fe_import_expand(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 2);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0];
  kiln_shape want, out;
  if ((st = shape_input(c, n, 1, &want)) != KILN_OK) return st;
  const kiln_shape in = *shape_of(c, x);
  /* Bidirectional: the result is the numpy broadcast of both shapes. */
  out.rank = in.rank > want.rank ? in.rank : want.rank;
  for (int i = 0; i < out.rank; i++) {
    int ia = i - (out.rank - in.rank), ib = i - (out.rank - want.rank);
    int64_t a = ia >= 0 ? in.dims[ia] : 1, b = ib >= 0 ? want.dims[ib] : 1;
    if (a != b && a != 1 && b != 1)
      return fe_fail(c, n, KILN_ERR_SHAPE, "cannot expand dim %lld to %lld", (long long)a, (long long)b);
    out.dims[i] = a == 1 ? b : a;
  }
  n->out[0] = kiln_shape_eq(&out, &in) ? x : kiln_ir_broadcast(G, x, &out, NM);
  return KILN_OK;
}

kiln_status fe_import_tile(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 2);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0];
  const kiln_shape in = *shape_of(c, x);
  int64_t reps[KILN_MAX_RANK];
  int cnt;
  if ((st = fe_value_ints(c, n, 1, reps, KILN_MAX_RANK, &cnt)) != KILN_OK) return st;
  if (cnt != in.rank) return fe_fail(c, n, KILN_ERR_SHAPE, "repeats has %d entries for rank %d", cnt, in.rank);
  bool any = false;
  for (int i = 0; i < cnt; i++) {
    if (reps[i] < 0) return fe_fail(c, n, KILN_ERR_SHAPE, "negative repeat");
    any = any || reps[i] != 1;
  }
  if (!any) {
    n->out[0] = x;
    return KILN_OK;
  }
  if (2 * in.rank <= KILN_MAX_RANK) {
    /* [d0, d1] -> [1, d0, 1, d1] -> broadcast [r0, d0, r1, d1] -> [r0*d0, r1*d1] */
    kiln_shape s1 = {.rank = 2 * in.rank}, s2 = s1, s3 = {.rank = in.rank};
    for (int i = 0; i < in.rank; i++) {
      s1.dims[2 * i] = 1, s1.dims[2 * i + 1] = in.dims[i];
      s2.dims[2 * i] = reps[i], s2.dims[2 * i + 1] = in.dims[i];
      s3.dims[i] = reps[i] * in.dims[i];
    }
    int32_t y = kiln_ir_broadcast(G, kiln_ir_reshape(G, x, &s1, NM), &s2, NM);
    n->out[0] = kiln_ir_reshape(G, y, &s3, NM);
    return KILN_OK;
  }
  int32_t y = x;
  for (int i = 0; i < in.rank; i++) {
    if (reps[i] == 1) continue;
    if (reps[i] > 64) return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "repeat %lld on a rank-%d input", (long long)reps[i], in.rank);
    int32_t xs[64];
    for (int j = 0; j < reps[i]; j++) xs[j] = y;
    y = reps[i] == 0 ? slice_axis(c, n, y, i, 0, 0) : kiln_ir_concat(G, (int32_t)reps[i], xs, i, NM);
  }
  n->out[0] = y;
  return KILN_OK;
}

/* Pads axis a of *x by lo/hi (negative crops) in mode 1 edge, 2 reflect or 3 wrap: a
 * gather with the constant source index of every output position. */
static kiln_status pad_axis_by_gather(fe_ctx *c, fe_node *n, int32_t *x, int a, int64_t lo, int64_t hi,
                                      int mode) {
  int64_t d = shape_of(c, *x)->dims[a], len = d + lo + hi;
  if (len < 0) return fe_fail(c, n, KILN_ERR_SHAPE, "pads remove more than axis %d holds", a);
  if (d == 0 && len > 0) return fe_fail(c, n, KILN_ERR_SHAPE, "cannot pad an empty axis %d in this mode", a);
  int64_t *idx = kiln_ir_malloc(G->alloc, sizeof(int64_t) * (size_t)(len + 1));
  if (!idx) return fe_fail(c, n, KILN_ERR_OUT_OF_MEMORY, "out of memory");
  for (int64_t i = 0; i < len; i++) {
    int64_t j = i - lo;
    if (mode == 1) {
      j = clamp64(j, 0, d - 1);
    } else if (mode == 3) {
      j = ((j % d) + d) % d;
    } else if (d == 1) {
      j = 0;
    } else {
      int64_t p = 2 * (d - 1); /* reflect: the edge element is not repeated */
      j = ((j % p) + p) % p;
      if (j >= d) j = p - j;
    }
    idx[i] = j;
  }
  int32_t iv = i64_list(c, n, len, idx);
  kiln_ir_free(G->alloc, idx);
  *x = kiln_ir_gather(G, *x, iv, a, NM);
  return KILN_OK;
}

kiln_status fe_import_pad(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0];
  int32_t rank = shape_of(c, x)->rank;
  const char *mode = fe_attr_str(c, n, "mode", "constant");
  int pmode = !strcmp(mode, "constant") ? 0 : !strcmp(mode, "edge") ? 1 : !strcmp(mode, "reflect") ? 2
            : !strcmp(mode, "wrap") ? 3 : -1;
  if (pmode < 0) return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "mode='%s' is not supported", mode);
  bool inputs = c->opset >= 11;
  int64_t pads[2 * KILN_MAX_RANK], ax[KILN_MAX_RANK];
  int np, na = -1;
  if ((st = ints_attr_or_input(c, n, inputs, inputs ? "" : "pads", 1, pads, 2 * KILN_MAX_RANK, &np)) != KILN_OK)
    return st;
  if (np < 0) return fe_fail(c, n, KILN_ERR_PARSE, "pads are missing");
  double value = inputs ? 0.0 : fe_attr_float(n, "value", 0.0f);
  if (inputs && fe_in(n, 2) >= 0 && (st = fe_value_scalar(c, n, 2, &value)) != KILN_OK) return st;
  if (inputs && fe_in(n, 3) >= 0 && (st = fe_value_ints(c, n, 3, ax, KILN_MAX_RANK, &na)) != KILN_OK)
    return st;
  int32_t n_ax = na >= 0 ? na : rank;
  if (np != 2 * n_ax) return fe_fail(c, n, KILN_ERR_SHAPE, "pads has %d entries, expected %d", np, 2 * n_ax);
  int64_t lo[KILN_MAX_RANK] = {0}, hi[KILN_MAX_RANK] = {0};
  for (int i = 0; i < n_ax; i++) {
    int32_t a = i;
    if (na >= 0 && (st = fe_axis(c, n, ax[i], rank, &a)) != KILN_OK) return st;
    lo[a] = pads[i];
    hi[a] = pads[n_ax + i];
  }
  if (pmode == 0) {
    n->out[0] = kiln_ir_pad(G, x, lo, hi, value, NM);
    return KILN_OK;
  }
  for (int a = 0; a < rank && x >= 0; a++)
    if ((lo[a] || hi[a]) && (st = pad_axis_by_gather(c, n, &x, a, lo[a], hi[a], pmode)) != KILN_OK) return st;
  n->out[0] = x;
  return KILN_OK;
}

/* CenterCropPad: per listed axis, crop or zero-pad symmetrically to the target size (the
 * odd element goes to the end); one pad node with negative amounts for the crops. */
kiln_status fe_import_center_crop_pad(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 2);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0];
  const kiln_shape s = *shape_of(c, x);
  int64_t want[KILN_MAX_RANK], ax[KILN_MAX_RANK];
  int nw, na = fe_attr_ints(c, n, "axes", ax, KILN_MAX_RANK, &st);
  if (st != KILN_OK || (st = fe_value_ints(c, n, 1, want, KILN_MAX_RANK, &nw)) != KILN_OK) return st;
  if (nw != (na >= 0 ? na : s.rank))
    return fe_fail(c, n, KILN_ERR_SHAPE, "shape has %d entries for %d axes", nw, na >= 0 ? na : s.rank);
  int64_t lo[KILN_MAX_RANK] = {0}, hi[KILN_MAX_RANK] = {0};
  for (int i = 0; i < nw; i++) {
    int32_t a = i;
    if (na >= 0 && (st = fe_axis(c, n, ax[i], s.rank, &a)) != KILN_OK) return st;
    if (want[i] < 0) return fe_fail(c, n, KILN_ERR_SHAPE, "negative target size");
    int64_t diff = want[i] - s.dims[a];
    lo[a] = diff >= 0 ? diff / 2 : -(-diff / 2);
    hi[a] = diff - lo[a];
  }
  n->out[0] = kiln_ir_pad(G, x, lo, hi, 0.0, NM);
  return KILN_OK;
}
