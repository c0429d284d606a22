/* onnx_ops_grid.c - importers for GridSample (nearest, linear and cubic; zeros, border and
 * reflection padding; align_corners; any number of spatial dims) and AffineGrid (constant
 * size). GridSample is index arithmetic on the grid: for every output point and every tap
 * of the interpolation stencil the flat source offset is computed and read with
 * gather_elements from X viewed as [N, C, S]; the taps' weights multiply and sum. The
 * coordinate handling follows onnx.reference's GridSample step by step. */
#include "onnx_impl.h"

#include <math.h>
#include <string.h>

#define G (c->g)
#define NM (n->name)

enum { GS_NEAREST, GS_LINEAR, GS_CUBIC };
enum { GS_ZEROS, GS_BORDER, GS_REFLECTION };

static int32_t bin(fe_ctx *c, fe_node *n, kiln_op op, int32_t a, int32_t b) {
  return kiln_ir_binary(G, op, a, b, NM);
}
static int32_t sc(fe_ctx *c, fe_node *n, int32_t like, double v) { return fe_scalar_like(c, n, like, v); }
static int32_t add_s(fe_ctx *c, fe_node *n, int32_t x, double v) { return bin(c, n, KILN_OP_add, x, sc(c, n, x, v)); }
static int32_t clamp(fe_ctx *c, fe_node *n, int32_t x, double lo, double hi) {
  return bin(c, n, KILN_OP_min, bin(c, n, KILN_OP_max, x, sc(c, n, x, lo)), sc(c, n, x, hi));
}

/* Reflects v into [lo, hi] by the near border until it lies inside (reference _gs_reflect). */
static int32_t reflect(fe_ctx *c, fe_node *n, int32_t v, double lo, double hi) {
  double rng = hi - lo;
  if (rng <= 0) return clamp(c, n, v, lo, hi); /* a single position: everything maps there */
  int32_t below = bin(c, n, KILN_OP_lt, v, sc(c, n, v, lo)), above = bin(c, n, KILN_OP_gt, v, sc(c, n, v, hi));
  int32_t dx = kiln_ir_select(G, below, bin(c, n, KILN_OP_sub, sc(c, n, v, lo), v), add_s(c, n, v, -hi), NM);
  int32_t q = kiln_ir_unary(G, KILN_OP_floor, bin(c, n, KILN_OP_div, dx, sc(c, n, v, rng)), NM);
  int32_t r = bin(c, n, KILN_OP_sub, dx, bin(c, n, KILN_OP_mul, q, sc(c, n, v, rng)));
  int32_t even = bin(c, n, KILN_OP_eq, kiln_ir_mod(G, q, sc(c, n, q, 2), 0, NM), sc(c, n, q, 0));
  int32_t from_lo = add_s(c, n, r, lo), from_hi = bin(c, n, KILN_OP_sub, sc(c, n, r, hi), r);
  int32_t res_below = kiln_ir_select(G, even, from_lo, from_hi, NM);
  int32_t res_above = kiln_ir_select(G, even, from_hi, from_lo, NM);
  return kiln_ir_select(G, below, res_below, kiln_ir_select(G, above, res_above, v, NM), NM);
}

/* Keys cubic coefficient (alpha -0.75) of tap j in 0..3 at fraction t. */
static int32_t cubic_coeff(fe_ctx *c, fe_node *n, int32_t t, int j) {
  const double A = -0.75;
  int32_t s; /* distance of the tap from the sample point */
  switch (j) {
  case 0: s = add_s(c, n, t, 1); break;
  case 1: s = t; break;
  case 2: s = bin(c, n, KILN_OP_sub, sc(c, n, t, 1), t); break;
  default: s = bin(c, n, KILN_OP_sub, sc(c, n, t, 2), t); break;
  }
  if (j == 1 || j == 2) /* ((A + 2) s - (A + 3)) s s + 1 */
    return add_s(c, n, bin(c, n, KILN_OP_mul, bin(c, n, KILN_OP_mul, add_s(c, n, bin(c, n, KILN_OP_mul, s, sc(c, n, s, A + 2)), -(A + 3)), s), s), 1);
  /* ((A s - 5A) s + 8A) s - 4A */
  int32_t p = add_s(c, n, bin(c, n, KILN_OP_mul, s, sc(c, n, s, A)), -5 * A);
  p = add_s(c, n, bin(c, n, KILN_OP_mul, p, s), 8 * A);
  return add_s(c, n, bin(c, n, KILN_OP_mul, p, s), -4 * A);
}

#define GS_MAX_TAPS 4

/* One spatial dim's stencil: per tap the (scaled) flat offset, its weight (-1: 1) and
 * whether it lies inside (-1: always). */
typedef struct gs_axis {
  int taps;
  int32_t off[GS_MAX_TAPS], w[GS_MAX_TAPS], ok[GS_MAX_TAPS];
} gs_axis;

static kiln_status gs_axis_build(fe_ctx *c, fe_node *n, int32_t nx, int64_t D, int64_t stride, int mode,
                                 int pad, bool align, gs_axis *ax) {
  double xmin = align ? 0 : -0.5, xmax = align ? (double)D - 1 : (double)D - 0.5;
  /* denormalize: align ? (nx + 1) / 2 (D - 1) : ((nx + 1) D - 1) / 2 */
  int32_t x = add_s(c, n, nx, 1);
  x = align ? bin(c, n, KILN_OP_mul, bin(c, n, KILN_OP_div, x, sc(c, n, x, 2)), sc(c, n, x, (double)D - 1))
            : bin(c, n, KILN_OP_div, add_s(c, n, bin(c, n, KILN_OP_mul, x, sc(c, n, x, (double)D)), -1), sc(c, n, x, 2));
  if (mode == GS_NEAREST) x = kiln_ir_unary(G, KILN_OP_round, x, NM);
  if (pad == GS_BORDER) {
    int32_t out = kiln_ir_binary(G, KILN_OP_or, bin(c, n, KILN_OP_lt, x, sc(c, n, x, xmin)),
                                 bin(c, n, KILN_OP_gt, x, sc(c, n, x, xmax)), NM);
    x = kiln_ir_select(G, out, clamp(c, n, x, 0, (double)D - 1), x, NM);
  } else if (pad == GS_REFLECTION) {
    x = reflect(c, n, x, xmin, xmax);
  }
  int32_t base = x, t = -1;
  ax->taps = mode == GS_NEAREST ? 1 : mode == GS_LINEAR ? 2 : 4;
  if (mode != GS_NEAREST) {
    base = kiln_ir_unary(G, KILN_OP_floor, x, NM);
    t = bin(c, n, KILN_OP_sub, x, base);
  }
  int first = mode == GS_CUBIC ? -1 : 0;
  for (int j = 0; j < ax->taps; j++) {
    int32_t pos = j + first ? add_s(c, n, base, j + first) : base;
    ax->ok[j] = -1;
    if (pad == GS_ZEROS)
      ax->ok[j] = kiln_ir_binary(G, KILN_OP_and, bin(c, n, KILN_OP_ge, pos, sc(c, n, pos, 0)),
                                 bin(c, n, KILN_OP_le, pos, sc(c, n, pos, (double)D - 1)), NM);
    if (pad == GS_REFLECTION) pos = reflect(c, n, pos, xmin, xmax);
    /* clamped in every mode: zeros-padded taps read a valid element and are masked */
    int32_t idx = kiln_ir_cast(G, clamp(c, n, pos, 0, (double)D - 1), KILN_I64, NM);
    ax->off[j] = stride == 1 ? idx : bin(c, n, KILN_OP_mul, idx, sc(c, n, idx, (double)stride));
    if (mode == GS_NEAREST) ax->w[j] = -1;
    else if (mode == GS_LINEAR) ax->w[j] = j ? t : bin(c, n, KILN_OP_sub, sc(c, n, t, 1), t);
    else ax->w[j] = cubic_coeff(c, n, t, j);
  }
  return G->diag.status;
}

kiln_status fe_import_grid_sample(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 2);
  if (st != KILN_OK) return st;
  int32_t X = n->in[0], grid = n->in[1];
  const kiln_shape xs = G->nodes[X].shape, gs = G->nodes[grid].shape;
  kiln_dtype dt = G->nodes[X].dtype, gdt = G->nodes[grid].dtype;
  int k = xs.rank - 2;
  if (k < 1 || gs.rank != xs.rank || gs.dims[0] != xs.dims[0] || gs.dims[gs.rank - 1] != k)
    return fe_fail(c, n, KILN_ERR_SHAPE, "X must be [N, C, spatial...] and grid [N, out spatial..., %d]", k < 1 ? 1 : k);
  if (!kiln_dtype_is_float(dt) || !kiln_dtype_is_float(gdt))
    return fe_fail(c, n, KILN_ERR_SHAPE, "X and grid must be float tensors");
  const char *m = fe_attr_str(c, n, "mode", "linear"), *p = fe_attr_str(c, n, "padding_mode", "zeros");
  int mode = !strcmp(m, "nearest") ? GS_NEAREST
             : !strcmp(m, "linear") || !strcmp(m, "bilinear") ? GS_LINEAR
             : !strcmp(m, "cubic") || !strcmp(m, "bicubic") ? GS_CUBIC : -1;
  int pad = !strcmp(p, "zeros") ? GS_ZEROS : !strcmp(p, "border") ? GS_BORDER : !strcmp(p, "reflection") ? GS_REFLECTION : -1;
  if (mode < 0 || pad < 0) return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "mode '%s' / padding_mode '%s' is not supported", m, p);
  bool align = fe_attr_int(n, "align_corners", 0) != 0;
  int taps = mode == GS_NEAREST ? 1 : mode == GS_LINEAR ? 2 : 4, combos = 1;
  for (int i = 0; i < k; i++) {
    combos *= taps;
    if (combos > 256) return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "%d spatial dims of %s interpolation is too many taps", k, m);
  }
  int64_t N = xs.dims[0], C = xs.dims[1], S = 1, P = 1, stride[KILN_MAX_RANK];
  for (int i = k - 1; i >= 0; i--) stride[i] = S, S *= xs.dims[2 + i];
  for (int i = 1; i <= k; i++) P *= gs.dims[i];
  kiln_dtype ct = gdt == KILN_F64 ? KILN_F64 : KILN_F32;
  kiln_shape s3 = {.rank = 3, .dims = {N, P, k}}, s2 = {.rank = 2, .dims = {N, P}};
  int32_t g3 = kiln_ir_cast(G, kiln_ir_reshape(G, grid, &s3, NM), ct, NM);
  gs_axis axes[KILN_MAX_RANK];
  for (int i = 0; i < k; i++) {
    /* the grid's last axis lists coordinates innermost dim first (x, y, z) */
    int64_t starts[3] = {0, 0, k - 1 - i}, steps[3] = {1, 1, 1}, counts[3] = {N, P, 1};
    int32_t nx = kiln_ir_reshape(G, kiln_ir_slice(G, g3, starts, steps, counts, NM), &s2, NM);
    if ((st = gs_axis_build(c, n, nx, xs.dims[2 + i], stride[i], mode, pad, align, &axes[i])) != KILN_OK) return st;
  }
  kiln_shape xr = {.rank = 3, .dims = {N, C, S}}, v1 = {.rank = 3, .dims = {N, 1, P}}, vc = {.rank = 3, .dims = {N, C, P}};
  int32_t data = kiln_ir_reshape(G, X, &xr, NM), acc = -1;
  for (int combo = 0; combo < combos; combo++) {
    int32_t off = -1, w = -1, ok = -1;
    for (int i = 0, rest = combo; i < k; i++, rest /= taps) {
      const gs_axis *a = &axes[i];
      int j = rest % taps;
      off = off < 0 ? a->off[j] : bin(c, n, KILN_OP_add, off, a->off[j]);
      if (a->w[j] >= 0) w = w < 0 ? a->w[j] : bin(c, n, KILN_OP_mul, w, a->w[j]);
      if (a->ok[j] >= 0) ok = ok < 0 ? a->ok[j] : kiln_ir_binary(G, KILN_OP_and, ok, a->ok[j], NM);
    }
    int32_t idx = kiln_ir_broadcast(G, kiln_ir_reshape(G, off, &v1, NM), &vc, NM);
    int32_t term = kiln_ir_gather_elements(G, data, idx, 2, NM);
    if (w >= 0) term = bin(c, n, KILN_OP_mul, term, kiln_ir_cast(G, kiln_ir_reshape(G, w, &v1, NM), dt, NM));
    if (ok >= 0) term = kiln_ir_select(G, kiln_ir_reshape(G, ok, &v1, NM), term, sc(c, n, data, 0), NM);
    acc = acc < 0 ? term : bin(c, n, KILN_OP_add, acc, term);
  }
  kiln_shape ys = {.rank = xs.rank};
  ys.dims[0] = N, ys.dims[1] = C;
  for (int i = 1; i <= k; i++) ys.dims[i + 1] = gs.dims[i];
  n->out[0] = kiln_ir_reshape(G, acc, &ys, NM);
  return KILN_OK;
}

/* AffineGrid(theta [N, k, k+1], size [N, C, spatial...]): the normalized base grid of the
 * output size (homogeneous, innermost coordinate first) is a constant [k+1, P]; the grid
 * is theta times it, transposed to [N, spatial..., k]. */
kiln_status fe_import_affine_grid(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 2);
  if (st != KILN_OK) return st;
  int64_t size[KILN_MAX_RANK];
  int cnt;
  if ((st = fe_value_ints(c, n, 1, size, KILN_MAX_RANK, &cnt)) != KILN_OK) return st;
  int k = cnt - 2;
  int32_t theta = n->in[0];
  const kiln_shape ts = G->nodes[theta].shape;
  kiln_dtype dt = G->nodes[theta].dtype;
  if (k < 1 || k + 1 >= KILN_MAX_RANK || ts.rank != 3 || ts.dims[1] != k || ts.dims[2] != k + 1 || ts.dims[0] != size[0])
    return fe_fail(c, n, KILN_ERR_SHAPE, "theta must be [N, k, k+1] for a size of [N, C, k spatial dims]");
  if (!kiln_dtype_is_float(dt)) return fe_fail(c, n, KILN_ERR_SHAPE, "theta must be a float tensor");
  bool align = fe_attr_int(n, "align_corners", 0) != 0;
  int64_t P = 1;
  for (int i = 0; i < k; i++) {
    if (size[2 + i] < 1 || size[2 + i] > (INT64_C(1) << 24) / P)
      return fe_fail(c, n, KILN_ERR_SHAPE, "output size %lld is out of range", (long long)size[2 + i]);
    P *= size[2 + i];
  }
  double *base = kiln_ir_malloc(G->alloc, (size_t)((k + 1) * P) * sizeof(double));
  if (!base) return fe_fail(c, n, KILN_ERR_OUT_OF_MEMORY, "out of memory for the base grid");
  for (int64_t q = 0; q < P; q++) {
    int64_t rest = q;
    for (int i = k - 1; i >= 0; i--) { /* spatial dim i is row k-1-i of the base grid */
      int64_t D = size[2 + i], at = rest % D;
      rest /= D;
      double v = align ? (D > 1 ? -1 + at * (2.0 / (double)(D - 1)) : -1) : -1 + (2.0 / (double)D) * ((double)at + 0.5);
      base[(k - 1 - i) * P + q] = v;
    }
    base[k * P + q] = 1;
  }
  void *data = kiln_ir_malloc(G->alloc, (size_t)((k + 1) * P) * kiln_dtype_size(dt));
  if (!data) {
    kiln_ir_free(G->alloc, base);
    return fe_fail(c, n, KILN_ERR_OUT_OF_MEMORY, "out of memory for the base grid");
  }
  for (int64_t i = 0; i < (k + 1) * P; i++) fe_set_f64(dt, data, i, base[i]);
  kiln_ir_free(G->alloc, base);
  kiln_shape bs = {.rank = 2, .dims = {k + 1, P}};
  int32_t b = kiln_ir_constant(G, NM, dt, &bs, data);
  kiln_ir_free(G->alloc, data);
  int32_t perm[3] = {0, 2, 1};
  int32_t y = kiln_ir_permute(G, kiln_ir_matmul(G, theta, b, NM), perm, NM); /* [N, P, k] */
  kiln_shape ys = {.rank = k + 2};
  ys.dims[0] = size[0];
  for (int i = 0; i < k; i++) ys.dims[1 + i] = size[2 + i];
  ys.dims[k + 1] = k;
  n->out[0] = kiln_ir_reshape(G, y, &ys, NM);
  return KILN_OK;
}
