/* onnx_ops_resize.c - the importer for ONNX Resize (opset 10+) and Upsample, for constant
 * scales/sizes/roi. Resizing is separable: for each resized axis the importer computes at
 * import time a constant [out, in] interpolation matrix (nearest, linear or cubic
 * coefficients at the source coordinate of every output position, with the coordinate
 * transformation, nearest rounding, exclude_outside, antialias and edge clamping of
 * onnx.reference's _interpolate_1d_along_axis) and applies it as a matmul along that
 * axis; tf_crop_and_resize positions outside the input get extrapolation_value. */
#include "onnx_impl.h"

#include <math.h>
#include <string.h>

#define G (c->g)
#define NM (n->name)
#define OP (n->p->op_type)

enum { M_NEAREST, M_LINEAR, M_CUBIC };
enum { NR_PREFER_FLOOR, NR_PREFER_CEIL, NR_FLOOR, NR_CEIL };
enum { CT_HALF_PIXEL, CT_HALF_PIXEL_SYM, CT_PYTORCH, CT_ALIGN, CT_ASYM, CT_TF_CROP };

typedef struct resize_cfg {
  int mode, nearest, coord;
  double cubic_a, extrap;
  bool exclude_outside, antialias;
} resize_cfg;

/* Interpolation coefficients at ratio (in (0, 1]); returns their count (<= cap). */
static int coeffs(const resize_cfg *r, double ratio, double scale, double *cf, int cap) {
  double A = r->cubic_a;
  if (r->mode == M_NEAREST) {
    bool integral = ratio == floor(ratio);
    bool hi = integral ? true
              : r->nearest == NR_PREFER_FLOOR ? ratio > 0.5
              : r->nearest == NR_PREFER_CEIL ? ratio >= 0.5
              : r->nearest == NR_CEIL;
    cf[0] = !hi, cf[1] = hi;
    return 2;
  }
  if (!r->antialias) {
    if (r->mode == M_LINEAR) {
      cf[0] = 1 - ratio, cf[1] = ratio;
      return 2;
    }
    double t = ratio + 1, u = 1 - ratio, w = 2 - ratio;
    cf[0] = ((A * t - 5 * A) * t + 8 * A) * t - 4 * A;
    cf[1] = ((A + 2) * ratio - (A + 3)) * ratio * ratio + 1;
    cf[2] = ((A + 2) * u - (A + 3)) * u * u + 1;
    cf[3] = ((A * w - 5 * A) * w + 8 * A) * w - 4 * A;
    return 4;
  }
  double s = scale < 1.0 ? scale : 1.0, sum = 0;
  int cnt = 0;
  if (r->mode == M_LINEAR) {
    int start = (int)floor(-1 / s) + 1, foot = 2 - 2 * start;
    for (int i = 0; i < foot && cnt < cap; i++) {
      double a = fabs((start + i - ratio) * s);
      cf[cnt] = a < 1 ? 1 - a : 0;
      sum += cf[cnt++];
    }
  } else {
    int i0 = (int)floor(-2 / s) + 1, i1 = 2 - i0;
    for (int i = i0; i < i1 && cnt < cap; i++) {
      double x = fabs(s * (i - ratio)), x2 = x * x, x3 = x2 * x;
      cf[cnt] = x <= 1 ? (A + 2) * x3 - (A + 3) * x2 + 1
                : x < 2 ? A * x3 - 5 * A * x2 + 8 * A * x - 4 * A : 0.0;
      sum += cf[cnt++];
    }
  }
  for (int i = 0; i < cnt; i++) cf[i] /= sum;
  return cnt;
}

/* Fills w [out_n, in_n] (row-major, zeroed by the caller) and extrap[out_n]; returns false
 * when a coefficient footprint is too large. */
static bool axis_matrix(const resize_cfg *r, int64_t in_n, int64_t out_n, double scale,
                        double roi0, double roi1, double *w, bool *extrap) {
  enum { CAP = 256 };
  double cf[CAP];
  double out_w = scale * (double)in_n;
  for (int64_t o = 0; o < out_n; o++) {
    double y = (double)o, x;
    extrap[o] = false;
    switch (r->coord) {
    case CT_ALIGN: x = out_w == 1 ? 0.0 : y * (double)(in_n - 1) / (out_w - 1); break;
    case CT_ASYM: x = y / scale; break;
    case CT_TF_CROP:
      x = out_w == 1 ? (roi1 - roi0) * (double)(in_n - 1) / 2
                     : y * (roi1 - roi0) * (double)(in_n - 1) / (out_w - 1);
      x += roi0 * (double)(in_n - 1);
      extrap[o] = x < 0 || x > (double)(in_n - 1);
      break;
    case CT_PYTORCH: x = out_w == 1 ? -0.5 : (y + 0.5) / scale - 0.5; break;
    case CT_HALF_PIXEL_SYM: {
      double adj = (double)out_n / out_w, center = (double)in_n / 2;
      x = center * (1 - adj) + (y + 0.5) / scale - 0.5;
      break;
    }
    default: x = (y + 0.5) / scale - 0.5; break;
    }
    double xf = floor(x);
    double ratio = x == xf ? 1.0 : x - xf;
    int cnt = coeffs(r, ratio, scale, cf, CAP);
    if (cnt >= CAP) return false;
    int pad = (cnt + 1) / 2;
    double xp = x + pad, pp = floor(xp), frac = xp - pp;
    int64_t off = cnt % 2 == 0 ? (frac == 0 ? -(cnt / 2) : -(cnt / 2) + 1)
                               : (frac <= 0.5 ? -((cnt - 1) / 2) : -((cnt - 1) / 2) + 1);
    int64_t start = (int64_t)pp + off - pad;
    if (r->exclude_outside) {
      double sum = 0;
      for (int i = 0; i < cnt; i++) {
        if (start + i < 0 || start + i >= in_n) cf[i] = 0;
        sum += cf[i];
      }
      if (sum == 0) sum = 1;
      for (int i = 0; i < cnt; i++) cf[i] /= sum;
    }
    for (int i = 0; i < cnt; i++) {
      int64_t idx = start + i;
      idx = idx < 0 ? 0 : idx >= in_n ? in_n - 1 : idx;
      w[o * in_n + idx] += cf[i];
    }
  }
  return true;
}

static int pick(const char *s, const char *const *names, int count) {
  for (int i = 0; i < count; i++)
    if (!strcmp(s, names[i])) return i;
  return -1;
}

/* Applies the [out, in] matrix along axis of x (a float tensor of dtype ct). */
static int32_t apply_axis(fe_ctx *c, fe_node *n, int32_t x, int32_t axis, const double *w,
                          const bool *extrap, bool any_extrap, int64_t out_n, double ev) {
  const kiln_shape s = G->nodes[x].shape;
  kiln_dtype dt = G->nodes[x].dtype;
  int64_t in_n = s.dims[axis];
  int32_t perm[KILN_MAX_RANK], inv[KILN_MAX_RANK], k = 0;
  for (int i = 0; i < s.rank; i++)
    if (i != axis) perm[k++] = i;
  perm[k] = axis;
  for (int i = 0; i < s.rank; i++) inv[perm[i]] = i;
  kiln_shape ps = {.rank = s.rank}, flat = {2, {1, in_n}};
  for (int i = 0; i < s.rank; i++) ps.dims[i] = s.dims[perm[i]];
  for (int i = 0; i < s.rank - 1; i++) flat.dims[0] *= ps.dims[i];
  /* The constant is stored transposed, [in, out], ready for the matmul. */
  void *buf = kiln_ir_malloc(G->alloc, (size_t)(in_n * out_n) * kiln_dtype_size(dt) + 1);
  if (!buf) return -1;
  for (int64_t o = 0; o < out_n; o++)
    for (int64_t i = 0; i < in_n; i++) fe_set_f64(dt, buf, i * out_n + o, w[o * in_n + i]);
  kiln_shape ws = {2, {in_n, out_n}};
  int32_t wc = kiln_ir_constant(G, NM, dt, &ws, buf);
  kiln_ir_free(G->alloc, buf);
  int32_t y = kiln_ir_permute(G, x, perm, NM);
  y = kiln_ir_matmul(G, kiln_ir_reshape(G, y, &flat, NM), wc, NM);
  ps.dims[s.rank - 1] = out_n;
  y = kiln_ir_permute(G, kiln_ir_reshape(G, y, &ps, NM), inv, NM);
  if (any_extrap && y >= 0) {
    kiln_shape ms = {.rank = s.rank};
    for (int i = 0; i < s.rank; i++) ms.dims[i] = i == axis ? out_n : 1;
    uint8_t *mb = kiln_ir_malloc(G->alloc, (size_t)out_n + 1);
    if (!mb) return -1;
    for (int64_t o = 0; o < out_n; o++) mb[o] = extrap[o];
    int32_t m = kiln_ir_constant(G, NM, KILN_BOOL, &ms, mb);
    kiln_ir_free(G->alloc, mb);
    y = kiln_ir_select(G, m, kiln_ir_scalar(G, dt, ev, NM), y, NM);
  }
  return y;
}

/* The attributes of Resize/Upsample node n (v10: the opset-10 defaults) into cfg, and
 * its keep_aspect_ratio_policy; an unsupported value is an error naming it. */
static kiln_status resize_config(fe_ctx *c, fe_node *n, bool v10, resize_cfg *cfg, const char **pol) {
  static const char *const modes[] = {"nearest", "linear", "cubic"};
  const char *ms = fe_attr_str(c, n, "mode", "nearest");
  cfg->mode = pick(ms, modes, 3);
  if (!strcmp(ms, "bilinear")) cfg->mode = M_LINEAR; /* Upsample-7 spelling */
  if (cfg->mode < 0) return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "mode='%s' is not supported", ms);
  static const char *const nmodes[] = {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"};
  const char *nm = fe_attr_str(c, n, "nearest_mode", v10 ? "floor" : "round_prefer_floor");
  cfg->nearest = pick(nm, nmodes, 4);
  if (cfg->nearest < 0) return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "nearest_mode='%s' is not supported", nm);
  static const char *const cmodes[] = {"half_pixel", "half_pixel_symmetric", "pytorch_half_pixel",
                                       "align_corners", "asymmetric", "tf_crop_and_resize"};
  const char *cm = fe_attr_str(c, n, "coordinate_transformation_mode", v10 ? "asymmetric" : "half_pixel");
  cfg->coord = pick(cm, cmodes, 6);
  if (cfg->coord < 0)
    return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "coordinate_transformation_mode='%s' is not supported", cm);
  cfg->cubic_a = fe_attr_float(n, "cubic_coeff_a", -0.75f);
  cfg->extrap = fe_attr_float(n, "extrapolation_value", 0.0f);
  cfg->exclude_outside = fe_attr_int(n, "exclude_outside", 0) != 0;
  cfg->antialias = fe_attr_int(n, "antialias", 0) != 0;
  if (cfg->antialias && cfg->mode == M_NEAREST)
    return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "antialias is not defined for mode='nearest'");
  *pol = fe_attr_str(c, n, "keep_aspect_ratio_policy", "stretch");
  if (strcmp(*pol, "stretch") && strcmp(*pol, "not_larger") && strcmp(*pol, "not_smaller"))
    return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "keep_aspect_ratio_policy='%s' is not supported", *pol);
  return KILN_OK;

}

/* The result of resizing in compute type ct back in dtype dt: integers rounded and
 * saturated, as the reference does. */
static int32_t resize_cast_back(fe_ctx *c, fe_node *n, int32_t y, kiln_dtype dt, kiln_dtype ct) {
  if (y < 0 || dt == ct) return y;
  if (kiln_dtype_is_int(dt)) {
    double lo = dt == KILN_U8 ? 0 : dt == KILN_I8 ? -128 : dt == KILN_I16 ? -32768 : -2147483648.0;
    double hi = dt == KILN_U8 ? 255 : dt == KILN_I8 ? 127 : dt == KILN_I16 ? 32767 : 2147483647.0;
    y = kiln_ir_unary(G, KILN_OP_round, y, NM);
    if (dt != KILN_I64)
      y = kiln_ir_binary(G, KILN_OP_max, kiln_ir_binary(G, KILN_OP_min, y, kiln_ir_scalar(G, ct, hi, NM), NM),
                         kiln_ir_scalar(G, ct, lo, NM), NM);
  }
  return kiln_ir_cast(G, y, dt, NM);
}

kiln_status fe_import_resize(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need(c, n, 0);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0];
  const kiln_shape xs = G->nodes[x].shape;
  int32_t r = xs.rank;
  bool upsample = !strcmp(OP, "Upsample");
  bool v10 = upsample || c->opset < 11; /* X, scales; asymmetric coordinates */
  resize_cfg cfg = {0};
  const char *pol = NULL;
  if ((st = resize_config(c, n, v10, &cfg, &pol)) != KILN_OK) return st;

  /* Axes (opset 18+), then scales or sizes and roi, all as full-rank lists. */
  int64_t ax64[KILN_MAX_RANK];
  int n_ax = fe_attr_ints(c, n, "axes", ax64, KILN_MAX_RANK, &st);
  if (st != KILN_OK) return st;
  int32_t axes[KILN_MAX_RANK];
  if (n_ax < 0) {
    n_ax = r;
    for (int i = 0; i < r; i++) axes[i] = i;
  } else {
    for (int i = 0; i < n_ax; i++)
      if ((st = fe_axis(c, n, ax64[i], r, &axes[i])) != KILN_OK) return st;
  }
  double scale[KILN_MAX_RANK], roi0[KILN_MAX_RANK], roi1[KILN_MAX_RANK];
  int64_t out[KILN_MAX_RANK];
  bool resized[KILN_MAX_RANK] = {0};
  for (int i = 0; i < r; i++) scale[i] = 1, out[i] = xs.dims[i], roi0[i] = 0, roi1[i] = 1;
  for (int i = 0; i < n_ax; i++) resized[axes[i]] = true;
  int scales_in = v10 ? 1 : 2, sizes_in = v10 ? -1 : 3;
  const kiln_const *k;
  if (upsample && c->opset < 9) {
    const Onnx__AttributeProto *a = fe_attr(n, "scales");
    if (!a || (int)a->n_floats != r) return fe_fail(c, n, KILN_ERR_SHAPE, "scales needs %d entries", r);
    for (int i = 0; i < r; i++) scale[i] = a->floats[i], out[i] = (int64_t)(a->floats[i] * (double)xs.dims[i]);
  } else if (sizes_in >= 0 && fe_in(n, sizes_in) >= 0) {
    if ((st = fe_value(c, n, n->in[sizes_in], &k)) != KILN_OK) return st;
    if (kiln_shape_numel(&k->shape) != n_ax)
      return fe_fail(c, n, KILN_ERR_SHAPE, "sizes has %lld entries for %d axes",
                     (long long)kiln_shape_numel(&k->shape), n_ax);
    for (int i = 0; i < n_ax; i++) {
      int32_t a = axes[i];
      out[a] = fe_get_i64(k->dtype, k->data, i);
      scale[a] = (double)out[a] / (double)xs.dims[a];
    }
    if (strcmp(pol, "stretch")) {
      double s = scale[axes[0]];
      for (int i = 1; i < n_ax; i++)
        s = !strcmp(pol, "not_larger") ? fmin(s, scale[axes[i]]) : fmax(s, scale[axes[i]]);
      for (int i = 0; i < n_ax; i++) {
        scale[axes[i]] = s;
        out[axes[i]] = (int64_t)(s * (double)xs.dims[axes[i]] + 0.5);
      }
    }
  } else if (fe_in(n, scales_in) >= 0) {
    if ((st = fe_value(c, n, n->in[scales_in], &k)) != KILN_OK) return st;
    if (kiln_shape_numel(&k->shape) != n_ax)
      return fe_fail(c, n, KILN_ERR_SHAPE, "scales has %lld entries for %d axes",
                     (long long)kiln_shape_numel(&k->shape), n_ax);
    for (int i = 0; i < n_ax; i++) {
      int32_t a = axes[i];
      scale[a] = fe_get_f64(k->dtype, k->data, i);
      out[a] = (int64_t)(scale[a] * (double)xs.dims[a]);
    }
  } else {
    return fe_fail(c, n, KILN_ERR_PARSE, "needs scales or sizes");
  }
  for (int i = 0; i < r; i++)
    if (!(scale[i] > 0) || out[i] < 0)
      return fe_fail(c, n, KILN_ERR_SHAPE, "scale %g on axis %d is not positive", scale[i], i);
  if (!v10 && cfg.coord == CT_TF_CROP && fe_in(n, 1) >= 0) {
    if ((st = fe_value(c, n, n->in[1], &k)) != KILN_OK) return st;
    int64_t m = kiln_shape_numel(&k->shape);
    if (m != 2 * n_ax) return fe_fail(c, n, KILN_ERR_SHAPE, "roi needs %d entries", 2 * n_ax);
    for (int i = 0; i < n_ax; i++) {
      roi0[axes[i]] = fe_get_f64(k->dtype, k->data, i);
      roi1[axes[i]] = fe_get_f64(k->dtype, k->data, n_ax + i);
    }
  }

  /* Compute in a float type; integers are rounded and saturated back, as the reference does. */
  kiln_dtype dt = G->nodes[x].dtype, ct = dt == KILN_F64 ? KILN_F64 : KILN_F32;
  if (dt == KILN_BOOL) return fe_fail(c, n, KILN_ERR_SHAPE, "bool input is not supported");
  int32_t y = dt == ct ? x : kiln_ir_cast(G, x, ct, NM);
  for (int a = 0; a < r && y >= 0; a++) {
    if (!resized[a]) continue;
    if (fabs(scale[a] - 1.0) <= 1e-9 && out[a] == xs.dims[a] && fabs(roi0[a]) <= 1e-9 &&
        fabs(roi1[a] - 1.0) <= 1e-9)
      continue;
    int64_t in_n = xs.dims[a];
    if (in_n == 0 || out[a] == 0 || in_n * out[a] > (int64_t)1 << 26)
      return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "axis %d: resizing %lld to %lld is not supported", a,
                     (long long)in_n, (long long)out[a]);
    double *w = kiln_ir_malloc(G->alloc, sizeof(double) * (size_t)(in_n * out[a]));
    bool *ex = kiln_ir_malloc(G->alloc, sizeof(bool) * (size_t)out[a]);
    if (!w || !ex) {
      kiln_ir_free(G->alloc, w);
      kiln_ir_free(G->alloc, ex);
      return fe_fail(c, n, KILN_ERR_OUT_OF_MEMORY, "out of memory");
    }
    memset(w, 0, sizeof(double) * (size_t)(in_n * out[a]));
    bool ok = axis_matrix(&cfg, in_n, out[a], scale[a], roi0[a], roi1[a], w, ex);
    bool any = false;
    for (int64_t o = 0; o < out[a]; o++) any = any || ex[o];
    if (ok) y = apply_axis(c, n, y, a, w, ex, any, out[a], cfg.extrap);
    kiln_ir_free(G->alloc, w);
    kiln_ir_free(G->alloc, ex);
    if (!ok) return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "axis %d: the antialias footprint is too large", a);
  }
  n->out[0] = resize_cast_back(c, n, y, dt, ct);
  return KILN_OK;
}
