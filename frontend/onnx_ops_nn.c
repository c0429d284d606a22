/* onnx_ops_nn.c - importers for ONNX contractions and windows: MatMul, Gemm, Conv,
 * ConvTranspose, the pools (LpPool too), BatchNormalization (inference form, folded to a
 * per-channel scale and shift; training form with batch statistics), Col2Im and
 * MaxUnpool. */
#include "onnx_impl.h"

#include <string.h>

#define G (c->g)
#define NM (n->name)
#define OP (n->p->op_type)

kiln_status fe_import_matmul(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 2);
  if (st != KILN_OK) return st;
  n->out[0] = kiln_ir_matmul(G, n->in[0], n->in[1], NM);
  return KILN_OK;
}

/* Y = alpha * op(A) op(B) + beta * C */
kiln_status fe_import_gemm(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 2);
  if (st != KILN_OK) return st;
  int32_t a = n->in[0], b = n->in[1];
  if (G->nodes[a].shape.rank != 2 || G->nodes[b].shape.rank != 2)
    return fe_fail(c, n, KILN_ERR_SHAPE, "A and B must be 2-D");
  static const int32_t t[2] = {1, 0};
  if (fe_attr_int(n, "transA", 0)) a = kiln_ir_permute(G, a, t, NM);
  if (fe_attr_int(n, "transB", 0)) b = kiln_ir_permute(G, b, t, NM);
  int32_t y = kiln_ir_matmul(G, a, b, NM);
  double alpha = fe_attr_float(n, "alpha", 1.0f), beta = fe_attr_float(n, "beta", 1.0f);
  if (alpha != 1.0) y = kiln_ir_binary(G, KILN_OP_mul, y, fe_scalar_like(c, n, y, alpha), NM);
  int32_t cc = fe_in(n, 2);
  if (cc >= 0 && beta != 0.0) {
    if (beta != 1.0) cc = kiln_ir_binary(G, KILN_OP_mul, cc, fe_scalar_like(c, n, cc, beta), NM);
    y = kiln_ir_binary(G, KILN_OP_add, y, cc, NM);
  }
  n->out[0] = y;
  return KILN_OK;
}

/* Strides, dilations and pads of a conv or pool over k spatial dims of sizes in[], with
 * window w[] (auto_pad resolved here). Defaults: stride 1, dilation 1, no padding. */
static kiln_status window_attrs(fe_ctx *c, fe_node *n, int k, const int64_t *in, const int64_t *w,
                                int64_t *strides, int64_t *dil, int64_t *lo, int64_t *hi) {
  kiln_status st = KILN_OK;
  int64_t pads[2 * KILN_MAX_RANK];
  for (int i = 0; i < k; i++) strides[i] = dil[i] = 1, lo[i] = hi[i] = 0;
  int ns = fe_attr_ints(c, n, "strides", strides, k, &st);
  int nd = fe_attr_ints(c, n, "dilations", dil, k, &st);
  int np = fe_attr_ints(c, n, "pads", pads, 2 * k, &st);
  if (st != KILN_OK) return st;
  if ((ns >= 0 && ns != k) || (nd >= 0 && nd != k) || (np >= 0 && np != 2 * k))
    return fe_fail(c, n, KILN_ERR_SHAPE, "strides/dilations need %d entries and pads %d", k, 2 * k);
  for (int i = 0; i < k; i++) {
    if (strides[i] < 1 || dil[i] < 1)
      return fe_fail(c, n, KILN_ERR_SHAPE, "strides and dilations must be positive");
    if (np > 0) lo[i] = pads[i], hi[i] = pads[k + i];
  }
  const char *ap = fe_attr_str(c, n, "auto_pad", "NOTSET");
  if (!strcmp(ap, "NOTSET")) return KILN_OK;
  bool upper = !strcmp(ap, "SAME_UPPER"), lower = !strcmp(ap, "SAME_LOWER");
  if (!upper && !lower && strcmp(ap, "VALID"))
    return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "auto_pad='%s' is not supported", ap);
  for (int i = 0; i < k; i++) {
    lo[i] = hi[i] = 0;
    if (!upper && !lower) continue;
    /* SAME: the output has ceil(in / stride) positions; odd padding goes after (UPPER) or
     * before (LOWER). */
    int64_t out = (in[i] + strides[i] - 1) / strides[i];
    int64_t total = (out - 1) * strides[i] + (w[i] - 1) * dil[i] + 1 - in[i];
    if (total < 0) total = 0;
    lo[i] = upper ? total / 2 : total - total / 2;
    hi[i] = total - lo[i];
  }
  return KILN_OK;
}

kiln_status fe_import_conv(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 2);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0], w = n->in[1];
  const kiln_shape xs = G->nodes[x].shape, ws = G->nodes[w].shape;
  int k = xs.rank - 2;
  if (k < 1 || ws.rank != xs.rank)
    return fe_fail(c, n, KILN_ERR_SHAPE, "X must be [N, C, spatial...] and W of the same rank");
  int64_t strides[KILN_MAX_RANK], dil[KILN_MAX_RANK], lo[KILN_MAX_RANK], hi[KILN_MAX_RANK];
  if ((st = window_attrs(c, n, k, xs.dims + 2, ws.dims + 2, strides, dil, lo, hi)) != KILN_OK)
    return st;
  int64_t group = fe_attr_int(n, "group", 1);
  int32_t y = kiln_ir_conv(G, x, w, strides, dil, lo, hi, (int32_t)group, NM);
  if (fe_in(n, 2) >= 0)
    y = kiln_ir_binary(G, KILN_OP_add, y, fe_channel_view(c, n, n->in[2], k + 2), NM);
  n->out[0] = y;
  return KILN_OK;
}

/* Positions of window o (start o*stride - lo, step dil, w of them) inside [-lo, in + hi). */
static int64_t window_count(int64_t o, int64_t in, int64_t w, int64_t stride, int64_t dil,
                            int64_t lo, int64_t hi) {
  int64_t cnt = 0;
  for (int64_t j = 0; j < w; j++) {
    int64_t p = o * stride - lo + j * dil;
    cnt += p >= -lo && p < in + hi;
  }
  return cnt;
}

/* Divisors of a count_include_pad average pool whose ceil_mode windows run past the
 * padding: the IR's avg divides by positions inside [-lo, in + hi) of the padded input, and
 * ceil_mode's extra end padding must not count. Returns a constant [out spatial...]. */
static int32_t avg_divisors(fe_ctx *c, fe_node *n, int32_t x, int k, const int64_t *in,
                            const int64_t *w, const int64_t *strides, const int64_t *dil,
                            const int64_t *lo, const int64_t *hi, const int64_t *outd) {
  kiln_shape s = {.rank = k};
  for (int i = 0; i < k; i++) s.dims[i] = outd[i];
  int64_t total = kiln_shape_numel(&s);
  kiln_dtype dt = G->nodes[x].dtype;
  void *buf = kiln_ir_malloc(G->alloc, (size_t)total * kiln_dtype_size(dt) + 1);
  if (!buf) return -1;
  for (int64_t e = 0; e < total; e++) {
    int64_t rem = e, div = 1;
    for (int i = k - 1; i >= 0; i--) {
      div *= window_count(rem % outd[i], in[i], w[i], strides[i], dil[i], lo[i], hi[i]);
      rem /= outd[i];
    }
    fe_set_f64(dt, buf, e, (double)div);
  }
  int32_t v = kiln_ir_constant(G, NM, dt, &s, buf);
  kiln_ir_free(G->alloc, buf);
  return v;
}

/* The window of a pooling node over x [N, C, spatial...]: kernel_shape (required) and the
 * strides, dilations and pads of window_attrs, one entry per spatial dim. */
static kiln_status pool_window(fe_ctx *c, fe_node *n, const kiln_shape *xs, int64_t *w,
                               int64_t *strides, int64_t *dil, int64_t *lo, int64_t *hi) {
  int k = xs->rank - 2;
  kiln_status st = KILN_OK;
  if (k < 1) return fe_fail(c, n, KILN_ERR_SHAPE, "X must be [N, C, spatial...]");
  if (fe_attr_ints(c, n, "kernel_shape", w, k, &st) != k)
    return st != KILN_OK ? st : fe_fail(c, n, KILN_ERR_SHAPE, "kernel_shape needs %d entries", k);
  return window_attrs(c, n, k, xs->dims + 2, w, strides, dil, lo, hi);
}

kiln_status fe_import_pool(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0];
  const kiln_shape xs = G->nodes[x].shape;
  const int64_t *in = xs.dims + 2;
  int k = xs.rank - 2;
  int64_t w[KILN_MAX_RANK], strides[KILN_MAX_RANK], dil[KILN_MAX_RANK], lo[KILN_MAX_RANK], hi[KILN_MAX_RANK];
  if ((st = pool_window(c, n, &xs, w, strides, dil, lo, hi)) != KILN_OK) return st;
  bool is_max = !strcmp(OP, "MaxPool");
  int cip = (int)fe_attr_int(n, "count_include_pad", 0);
  /* ceil_mode: extend the end padding until floor() gives the ceil() count, but a window
   * must start inside the input or its front padding. */
  int64_t hi_ext[KILN_MAX_RANK], outd[KILN_MAX_RANK];
  bool extended = false;
  for (int i = 0; i < k; i++) {
    int64_t span = in[i] + lo[i] + hi[i] - (dil[i] * (w[i] - 1) + 1);
    hi_ext[i] = hi[i];
    outd[i] = span >= 0 ? span / strides[i] + 1 : 0;
    if (span < 0 || !fe_attr_int(n, "ceil_mode", 0)) continue;
    int64_t oc = (span + strides[i] - 1) / strides[i] + 1;
    if ((oc - 1) * strides[i] >= in[i] + lo[i]) oc--;
    if (oc > outd[i]) {
      hi_ext[i] += (oc - 1) * strides[i] - span;
      outd[i] = oc;
      extended = true;
    }
  }
  if (is_max) {
    n->out[0] = kiln_ir_pool(G, x, KILN_POOL_MAX, w, strides, dil, lo, hi_ext, 0, NM);
    return KILN_OK; /* the optional Indices output is not computed */
  }
  if (extended && cip) {
    int32_t sum = kiln_ir_pool(G, x, KILN_POOL_SUM, w, strides, dil, lo, hi_ext, 0, NM);
    int32_t div = avg_divisors(c, n, x, k, in, w, strides, dil, lo, hi, outd);
    n->out[0] = kiln_ir_binary(G, KILN_OP_div, sum, div, NM);
    return KILN_OK;
  }
  n->out[0] = kiln_ir_pool(G, x, KILN_POOL_AVG, w, strides, dil, lo, hi_ext, cip, NM);
  return KILN_OK;
}

kiln_status fe_import_global_pool(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0], rank = G->nodes[x].shape.rank;
  if (rank < 3) return fe_fail(c, n, KILN_ERR_SHAPE, "X must be [N, C, spatial...]");
  int32_t axes[KILN_MAX_RANK], n_axes = 0;
  for (int i = 2; i < rank; i++) axes[n_axes++] = i;
  n->out[0] = !strcmp(OP, "GlobalMaxPool")
                  ? kiln_ir_reduce(G, KILN_OP_reduce_max, x, n_axes, axes, 1, NM)
                  : fe_reduce_mean(c, n, x, n_axes, axes, 1);
  return KILN_OK;
}

/* y = x * a + b with a = scale / sqrt(var + eps), b = bias - mean * a, per channel.
 * With constant parameters a and b are folded to constants shaped [C, 1, ...]. */
kiln_status fe_import_batch_norm(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 5);
  if (st != KILN_OK) return st;
  bool training = fe_attr_int(n, "training_mode", 0) != 0;
  if (training && c->opset < 14)
    return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "training_mode before opset 14 is not supported");
  if (c->opset < 9 && !fe_attr_int(n, "spatial", 1))
    return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "spatial=0 is not supported");
  int32_t x = n->in[0], rank = G->nodes[x].shape.rank;
  if (rank < 2) return fe_fail(c, n, KILN_ERR_SHAPE, "X must be [N, C, ...]");
  int32_t p[4];
  bool all_const = !training;
  for (int i = 0; i < 4; i++) {
    p[i] = fe_channel_view(c, n, n->in[i + 1], rank);
    all_const = all_const && kiln_ir_const_of(G, n->in[i + 1]);
  }
  int32_t scale = p[0], bias = p[1], mean = p[2], var = p[3];
  if (training) {
    /* Statistics of this batch (population variance) normalize; the running statistics
     * move toward them by 1 - momentum (outputs 1 and 2). */
    int32_t axes[KILN_MAX_RANK], k = 0;
    for (int i = 0; i < rank; i++)
      if (i != 1) axes[k++] = i;
    mean = fe_reduce_mean(c, n, x, k, axes, 1);
    int32_t dx = kiln_ir_binary(G, KILN_OP_sub, x, mean, NM);
    var = fe_reduce_mean(c, n, kiln_ir_binary(G, KILN_OP_mul, dx, dx, NM), k, axes, 1);
    double mom = fe_attr_float(n, "momentum", 0.9f);
    for (int o = 1; o <= 2 && o < n->n_out; o++) {
      int32_t run = n->in[o == 1 ? 3 : 4], cur = o == 1 ? mean : var;
      kiln_shape vs = G->nodes[run].shape;
      cur = kiln_ir_reshape(G, cur, &vs, NM);
      n->out[o] = kiln_ir_binary(G, KILN_OP_add, kiln_ir_binary(G, KILN_OP_mul, run, fe_scalar_like(c, n, run, mom), NM),
                                 kiln_ir_binary(G, KILN_OP_mul, cur, fe_scalar_like(c, n, cur, 1 - mom), NM), NM);
    }
  }
  int32_t eps = fe_scalar_like(c, n, var, fe_attr_float(n, "epsilon", 1e-5f));
  int32_t a = kiln_ir_binary(G, KILN_OP_mul, scale,
                             kiln_ir_unary(G, KILN_OP_rsqrt, kiln_ir_binary(G, KILN_OP_add, var, eps, NM), NM), NM);
  int32_t b = kiln_ir_binary(G, KILN_OP_sub, bias, kiln_ir_binary(G, KILN_OP_mul, mean, a, NM), NM);
  if (all_const && a >= 0 && b >= 0) {
    if ((st = fe_fold(c, n, a, &a)) != KILN_OK || (st = fe_fold(c, n, b, &b)) != KILN_OK) return st;
  }
  n->out[0] = kiln_ir_binary(G, KILN_OP_add, kiln_ir_binary(G, KILN_OP_mul, x, a, NM), b, NM);
  return KILN_OK;
}

/* LpPool: (sum over the window of |x|^p)^(1/p); padding contributes zeros. */
kiln_status fe_import_lp_pool(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 1);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0];
  const kiln_shape xs = G->nodes[x].shape;
  if (fe_attr_int(n, "ceil_mode", 0))
    return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "ceil_mode=1 is not supported");
  int64_t w[KILN_MAX_RANK], strides[KILN_MAX_RANK], dil[KILN_MAX_RANK], lo[KILN_MAX_RANK], hi[KILN_MAX_RANK];
  if ((st = pool_window(c, n, &xs, w, strides, dil, lo, hi)) != KILN_OK) return st;
  double p = (double)fe_attr_int(n, "p", 2);
  int32_t a = kiln_ir_binary(G, KILN_OP_pow, kiln_ir_unary(G, KILN_OP_abs, x, NM), fe_scalar_like(c, n, x, p), NM);
  int32_t sum = kiln_ir_pool(G, a, KILN_POOL_SUM, w, strides, dil, lo, hi, 0, NM);
  n->out[0] = kiln_ir_binary(G, KILN_OP_pow, sum, fe_scalar_like(c, n, x, 1.0 / p), NM);
  return KILN_OK;
}

/* Inserts s - 1 zeros between the elements of spatial dim d (2 + i) of x. */
static int32_t dilate_dim(fe_ctx *c, fe_node *n, int32_t x, int d, int64_t s) {
  if (s == 1 || x < 0) return x;
  const kiln_shape xs = G->nodes[x].shape;
  int64_t in = xs.dims[d];
  if (in == 0) return x;
  kiln_shape s1 = {.rank = xs.rank + 1};
  for (int i = 0, j = 0; i < xs.rank; i++) {
    s1.dims[j++] = xs.dims[i];
    if (i == d) s1.dims[j++] = 1;
  }
  int64_t lo[KILN_MAX_RANK] = {0}, hi[KILN_MAX_RANK] = {0};
  hi[d + 1] = s - 1;
  int32_t y = kiln_ir_pad(G, kiln_ir_reshape(G, x, &s1, NM), lo, hi, 0.0, NM);
  kiln_shape s2 = xs;
  s2.dims[d] = in * s;
  y = kiln_ir_reshape(G, y, &s2, NM);
  int64_t starts[KILN_MAX_RANK] = {0}, steps[KILN_MAX_RANK], counts[KILN_MAX_RANK];
  for (int i = 0; i < xs.rank; i++) steps[i] = 1, counts[i] = s2.dims[i];
  counts[d] = (in - 1) * s + 1;
  return kiln_ir_slice(G, y, starts, steps, counts, NM);
}

/* ConvTranspose as a stride-1 conv: the input is dilated by the strides and padded by
 * (effective kernel - 1 - pad) on each side (plus output_padding at the end), and the
 * kernel is flipped with its in/out channels swapped per group. */
kiln_status fe_import_conv_transpose(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 2);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0], w = n->in[1];
  const kiln_shape xs = G->nodes[x].shape, ws = G->nodes[w].shape;
  int k = xs.rank - 2;
  if (k < 1 || ws.rank != xs.rank)
    return fe_fail(c, n, KILN_ERR_SHAPE, "X must be [N, C, spatial...] and W of the same rank");
  int64_t g = fe_attr_int(n, "group", 1);
  if (g < 1 || xs.dims[1] != ws.dims[0] || ws.dims[0] % g)
    return fe_fail(c, n, KILN_ERR_SHAPE, "W must be [C, M/group, k...] with C divisible by group");
  int64_t kw[KILN_MAX_RANK], strides[KILN_MAX_RANK], dil[KILN_MAX_RANK], pads[2 * KILN_MAX_RANK],
      opad[KILN_MAX_RANK], oshape[KILN_MAX_RANK], lo[KILN_MAX_RANK], hi[KILN_MAX_RANK];
  for (int i = 0; i < k; i++) kw[i] = ws.dims[2 + i], strides[i] = dil[i] = 1, opad[i] = 0, lo[i] = hi[i] = 0;
  int nks = fe_attr_ints(c, n, "kernel_shape", kw, k, &st);
  int ns = fe_attr_ints(c, n, "strides", strides, k, &st);
  int nd = fe_attr_ints(c, n, "dilations", dil, k, &st);
  int np = fe_attr_ints(c, n, "pads", pads, 2 * k, &st);
  int nop = fe_attr_ints(c, n, "output_padding", opad, k, &st);
  int nos = fe_attr_ints(c, n, "output_shape", oshape, KILN_MAX_RANK, &st);
  if (st != KILN_OK) return st;
  if ((nks >= 0 && nks != k) || (ns >= 0 && ns != k) || (nd >= 0 && nd != k) || (np >= 0 && np != 2 * k) ||
      (nop >= 0 && nop != k))
    return fe_fail(c, n, KILN_ERR_SHAPE, "kernel_shape/strides/dilations/output_padding need %d entries, pads %d", k, 2 * k);
  for (int i = 0; i < k; i++) {
    if (kw[i] != ws.dims[2 + i]) return fe_fail(c, n, KILN_ERR_SHAPE, "kernel_shape differs from W");
    if (strides[i] < 1 || dil[i] < 1) return fe_fail(c, n, KILN_ERR_SHAPE, "strides and dilations must be positive");
    if (np > 0) lo[i] = pads[i], hi[i] = pads[k + i];
  }
  const char *ap = fe_attr_str(c, n, "auto_pad", "NOTSET");
  bool same = !strcmp(ap, "SAME_UPPER") || !strcmp(ap, "SAME_LOWER");
  if (strcmp(ap, "NOTSET") && strcmp(ap, "VALID") && !same)
    return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "auto_pad='%s' is not supported", ap);
  if (!strcmp(ap, "VALID"))
    for (int i = 0; i < k; i++) lo[i] = hi[i] = 0;
  if (nos >= 0 || same) {
    /* The pads follow from the requested output shape (the reference's rule). */
    if (nos >= 0 && nos != k && nos != k + 2)
      return fe_fail(c, n, KILN_ERR_SHAPE, "output_shape needs %d entries", k);
    for (int i = 0; i < k; i++) {
      int64_t want = nos >= 0 ? oshape[nos - k + i] : xs.dims[2 + i] * strides[i];
      int64_t total = strides[i] * (xs.dims[2 + i] - 1) + opad[i] + (kw[i] - 1) * dil[i] + 1 - want;
      bool upper = !strcmp(ap, "SAME_UPPER");
      /* Floor division: a negative total (output larger than the natural size) puts the
       * extra zero positions at the end, as in the reference. */
      int64_t half = total >= 0 ? total / 2 : -((-total + 1) / 2);
      lo[i] = upper ? half : total - half;
      hi[i] = total - lo[i];
    }
  }
  int32_t y = x;
  int64_t plo[KILN_MAX_RANK] = {0}, phi[KILN_MAX_RANK] = {0};
  for (int i = 0; i < k; i++) {
    y = dilate_dim(c, n, y, 2 + i, strides[i]);
    int64_t ke = (kw[i] - 1) * dil[i] + 1;
    plo[2 + i] = ke - 1 - lo[i];
    phi[2 + i] = ke - 1 - hi[i] + opad[i];
  }
  y = kiln_ir_pad(G, y, plo, phi, 0.0, NM);
  /* W [C, M/g, k...] -> [g, C/g, M/g, k...] -> [g, M/g, C/g, k...] -> [M, C/g, k...], flipped. */
  int64_t C = ws.dims[0], Mg = ws.dims[1];
  kiln_shape w5 = {.rank = ws.rank + 1}, wo = {.rank = ws.rank};
  w5.dims[0] = g, w5.dims[1] = C / g, w5.dims[2] = Mg;
  wo.dims[0] = g * Mg, wo.dims[1] = C / g;
  int32_t perm[KILN_MAX_RANK + 1] = {0, 2, 1};
  int32_t rev[KILN_MAX_RANK];
  for (int i = 0; i < k; i++) {
    w5.dims[3 + i] = wo.dims[2 + i] = kw[i];
    perm[3 + i] = 3 + i;
    rev[i] = 2 + i;
  }
  if (w5.rank > KILN_MAX_RANK) return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "%d spatial dims are too many", k);
  int32_t wt = kiln_ir_reshape(G, kiln_ir_permute(G, kiln_ir_reshape(G, w, &w5, NM), perm, NM), &wo, NM);
  wt = kiln_ir_reverse(G, wt, k, rev, NM);
  int64_t ones[KILN_MAX_RANK], zeros[KILN_MAX_RANK] = {0};
  for (int i = 0; i < k; i++) ones[i] = 1;
  y = kiln_ir_conv(G, y, wt, ones, dil, zeros, zeros, (int32_t)g, NM);
  if (fe_in(n, 2) >= 0) y = kiln_ir_binary(G, KILN_OP_add, y, fe_channel_view(c, n, n->in[2], k + 2), NM);
  n->out[0] = y;
  return KILN_OK;
}

/* Col2Im: input [N, C*K, L] (K block positions, L sliding positions) summed into images
 * [N, C, img...]. The scatter-add is a matmul with a constant 0/1 matrix [K*L, pixels]
 * that sends each (block position, sliding position) to its pixel (none when it falls in
 * the padding). */
kiln_status fe_import_col2im(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 3);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0];
  const kiln_shape xs = G->nodes[x].shape;
  int64_t img[KILN_MAX_RANK], blk[KILN_MAX_RANK], strides[KILN_MAX_RANK], dil[KILN_MAX_RANK],
      pads[2 * KILN_MAX_RANK];
  int k, kb;
  if ((st = fe_value_ints(c, n, 1, img, KILN_MAX_RANK - 2, &k)) != KILN_OK ||
      (st = fe_value_ints(c, n, 2, blk, KILN_MAX_RANK - 2, &kb)) != KILN_OK)
    return st;
  if (k != kb || k < 1) return fe_fail(c, n, KILN_ERR_SHAPE, "image_shape and block_shape must have equal lengths");
  int got_s = fe_attr_ints(c, n, "strides", strides, k, &st), got_d = fe_attr_ints(c, n, "dilations", dil, k, &st),
      got_p = fe_attr_ints(c, n, "pads", pads, 2 * k, &st);
  if (st != KILN_OK) return st;
  int64_t nk = 1, nl = 1, npix = 1, grid[KILN_MAX_RANK];
  for (int i = 0; i < k; i++) {
    if (got_s < 0) strides[i] = 1;
    if (got_d < 0) dil[i] = 1;
    if (got_p < 0) pads[i] = pads[k + i] = 0;
    if (strides[i] < 1 || dil[i] < 1 || blk[i] < 1 || img[i] < 1)
      return fe_fail(c, n, KILN_ERR_SHAPE, "sizes, strides and dilations must be positive");
    int64_t span = img[i] + pads[i] + pads[k + i] - dil[i] * (blk[i] - 1) - 1;
    grid[i] = span < 0 ? 0 : span / strides[i] + 1;
    nk *= blk[i], nl *= grid[i], npix *= img[i];
  }
  if (xs.rank != 3 || xs.dims[1] % nk || xs.dims[2] != nl)
    return fe_fail(c, n, KILN_ERR_SHAPE, "input must be [N, C*%lld, %lld]", (long long)nk, (long long)nl);
  if (nk * nl * npix > ((int64_t)1 << 24))
    return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "the %lld x %lld scatter matrix is too large", (long long)(nk * nl), (long long)npix);
  kiln_dtype dt = G->nodes[x].dtype;
  void *m = kiln_ir_malloc(G->alloc, (size_t)(nk * nl * npix) * kiln_dtype_size(dt) + 1);
  if (!m) return fe_fail(c, n, KILN_ERR_OUT_OF_MEMORY, "out of memory");
  memset(m, 0, (size_t)(nk * nl * npix) * kiln_dtype_size(dt));
  for (int64_t b = 0; b < nk; b++)
    for (int64_t l = 0; l < nl; l++) {
      int64_t pix = 0, rb = b, rl = l, coord[KILN_MAX_RANK];
      bool inside = true;
      for (int i = k - 1; i >= 0; i--) {
        coord[i] = (rl % grid[i]) * strides[i] - pads[i] + (rb % blk[i]) * dil[i];
        rb /= blk[i], rl /= grid[i];
        inside = inside && coord[i] >= 0 && coord[i] < img[i];
      }
      if (!inside) continue;
      for (int i = 0; i < k; i++) pix = pix * img[i] + coord[i];
      fe_set_f64(dt, m, (b * nl + l) * npix + pix, 1.0);
    }
  kiln_shape ms = {2, {nk * nl, npix}}, x3 = {3, {xs.dims[0], xs.dims[1] / nk, nk * nl}}, out = {2 + k, {xs.dims[0], xs.dims[1] / nk}};
  for (int i = 0; i < k; i++) out.dims[2 + i] = img[i];
  int32_t mv = kiln_ir_constant(G, NM, dt, &ms, m);
  kiln_ir_free(G->alloc, m);
  n->out[0] = kiln_ir_reshape(G, kiln_ir_matmul(G, kiln_ir_reshape(G, x, &x3, NM), mv, NM), &out, NM);
  return KILN_OK;
}

/* MaxUnpool(X, I, output_shape): X's values scattered to the flat positions I of a zero
 * tensor of the inferred unpooled shape, then zero-padded at the end of each dim to
 * output_shape when given (onnx.reference's behavior). */
kiln_status fe_import_max_unpool(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 2);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0], idx = n->in[1];
  const kiln_shape xs = G->nodes[x].shape;
  int k = xs.rank - 2;
  if (k < 1 || !kiln_shape_eq(&G->nodes[idx].shape, &xs))
    return fe_fail(c, n, KILN_ERR_SHAPE, "X must be [N, C, spatial...] and I of the same shape");
  int64_t kern[KILN_MAX_RANK], strides[KILN_MAX_RANK], pads[2 * KILN_MAX_RANK], out[KILN_MAX_RANK];
  if (fe_attr_ints(c, n, "kernel_shape", kern, KILN_MAX_RANK, &st) != k)
    return st != KILN_OK ? st : fe_fail(c, n, KILN_ERR_SHAPE, "kernel_shape must have %d entries", k);
  for (int i = 0; i < k; i++) strides[i] = 1, pads[i] = pads[k + i] = 0;
  int got = fe_attr_ints(c, n, "strides", strides, KILN_MAX_RANK, &st);
  if (st != KILN_OK || (got >= 0 && got != k)) return st != KILN_OK ? st : fe_fail(c, n, KILN_ERR_SHAPE, "strides must have %d entries", k);
  got = fe_attr_ints(c, n, "pads", pads, 2 * KILN_MAX_RANK, &st);
  if (st != KILN_OK || (got >= 0 && got != 2 * k)) return st != KILN_OK ? st : fe_fail(c, n, KILN_ERR_SHAPE, "pads must have %d entries", 2 * k);
  kiln_shape inf = xs;
  for (int i = 0; i < k; i++) {
    inf.dims[2 + i] = (xs.dims[2 + i] - 1) * strides[i] - pads[i] - pads[k + i] + kern[i];
    if (inf.dims[2 + i] < 1) return fe_fail(c, n, KILN_ERR_SHAPE, "the unpooled dim %d is empty", i);
  }
  kiln_shape flat = {1, {kiln_shape_numel(&inf)}}, xf = {1, {kiln_shape_numel(&xs)}};
  int32_t zero = kiln_ir_broadcast(G, kiln_ir_scalar(G, G->nodes[x].dtype, 0, NM), &flat, NM);
  int32_t ii = G->nodes[idx].dtype == KILN_I64 ? idx : kiln_ir_cast(G, idx, KILN_I64, NM);
  int32_t y = kiln_ir_scatter(G, zero, kiln_ir_reshape(G, ii, &xf, NM), kiln_ir_reshape(G, x, &xf, NM), 0, 0, NM);
  y = kiln_ir_reshape(G, y, &inf, NM);
  if (fe_in(n, 2) >= 0) {
    int cnt;
    if ((st = fe_value_ints(c, n, 2, out, KILN_MAX_RANK, &cnt)) != KILN_OK) return st;
    if (cnt != xs.rank) return fe_fail(c, n, KILN_ERR_SHAPE, "output_shape must have %d entries", xs.rank);
    int64_t lo[KILN_MAX_RANK] = {0}, hi[KILN_MAX_RANK];
    for (int i = 0; i < xs.rank; i++) {
      hi[i] = out[i] - inf.dims[i];
      if (hi[i] < 0) return fe_fail(c, n, KILN_ERR_SHAPE, "output_shape dim %d is below the unpooled %lld", i, (long long)inf.dims[i]);
    }
    y = kiln_ir_pad(G, y, lo, hi, 0, NM);
  }
  n->out[0] = y;
  return KILN_OK;
}
