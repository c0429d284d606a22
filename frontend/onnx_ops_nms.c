/* onnx_ops_nms.c - the importer for NonMaxSuppression when its boxes, scores and
 * thresholds are known at import time (constants, or inputs frozen by the caller): the
 * number of selected boxes fixes the output shape, so the selection runs here, step by
 * step as onnx.reference does (float32 arithmetic, ties to the lower box index), and the
 * result is an i64 [selected, 3] constant of (batch, class, box) rows. */
#include "onnx_impl.h"

#include <string.h>

#define G (c->g)
#define NM (n->name)

static void min_max(float a, float b, float *lo, float *hi) {
  *lo = a < b ? a : b;
  *hi = a < b ? b : a;
}

/* The extent [lo, hi) of box b along coordinate pair (x: 1, y: 0). */
static void box_span(const float *b, int center, int axis, float *lo, float *hi) {
  if (!center) {
    min_max(b[axis], b[axis + 2], lo, hi);
  } else { /* [x_center, y_center, width, height] */
    int ci = axis == 1 ? 0 : 1;
    float half = b[ci + 2] / 2;
    *lo = b[ci] - half, *hi = b[ci] + half;
  }
}

/* True when boxes a and b overlap by more than iou_threshold (reference suppress_by_iou). */
static bool suppress(const float *a, const float *b, int center, float iou_threshold) {
  float ax0, ax1, bx0, bx1, ay0, ay1, by0, by1;
  box_span(a, center, 1, &ax0, &ax1), box_span(b, center, 1, &bx0, &bx1);
  float ix0 = ax0 > bx0 ? ax0 : bx0, ix1 = ax1 < bx1 ? ax1 : bx1;
  if (ix1 <= ix0) return false;
  box_span(a, center, 0, &ay0, &ay1), box_span(b, center, 0, &by0, &by1);
  float iy0 = ay0 > by0 ? ay0 : by0, iy1 = ay1 < by1 ? ay1 : by1;
  if (iy1 <= iy0) return false;
  float inter = (ix1 - ix0) * (iy1 - iy0);
  if (inter <= 0) return false;
  float area_a = (ax1 - ax0) * (ay1 - ay0), area_b = (bx1 - bx0) * (by1 - by0);
  float uni = area_a + area_b - inter;
  if (area_a <= 0 || area_b <= 0 || uni <= 0) return false;
  return inter / uni > iou_threshold;
}

/* A copy of input i's values as float32 (NULL after a failure or when omitted). */
static kiln_status values_f32(fe_ctx *c, fe_node *n, int i, float **out, kiln_shape *s) {
  const kiln_const *k;
  kiln_status st = fe_value(c, n, n->in[i], &k);
  if (st != KILN_OK) return st;
  int64_t cnt = kiln_shape_numel(&k->shape);
  *s = k->shape;
  *out = kiln_ir_malloc(G->alloc, sizeof(float) * (size_t)(cnt + 1));
  if (!*out) return fe_fail(c, n, KILN_ERR_OUT_OF_MEMORY, "out of memory");
  for (int64_t j = 0; j < cnt; j++) (*out)[j] = (float)fe_get_f64(k->dtype, k->data, j);
  return KILN_OK;
}

kiln_status fe_import_non_max_suppression(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 2);
  if (st != KILN_OK) return st;
  double v;
  int64_t max_out = 0;
  float iou = 0, score_min = 0;
  bool has_score = false;
  if (fe_in(n, 2) >= 0 && kiln_shape_numel(&G->nodes[n->in[2]].shape) > 0) {
    if ((st = fe_value_scalar(c, n, 2, &v)) != KILN_OK) return st;
    max_out = v > 0 ? (int64_t)v : 0;
  }
  if (fe_in(n, 3) >= 0 && kiln_shape_numel(&G->nodes[n->in[3]].shape) > 0) {
    if ((st = fe_value_scalar(c, n, 3, &v)) != KILN_OK) return st;
    iou = (float)v;
  }
  if (fe_in(n, 4) >= 0 && kiln_shape_numel(&G->nodes[n->in[4]].shape) > 0) {
    if ((st = fe_value_scalar(c, n, 4, &v)) != KILN_OK) return st;
    score_min = (float)v, has_score = true;
  }
  int center = (int)fe_attr_int(n, "center_point_box", 0);
  float *boxes = NULL, *scores = NULL;
  int64_t *sel = NULL, *order = NULL;
  kiln_shape bs, ss;
  if ((st = values_f32(c, n, 0, &boxes, &bs)) != KILN_OK) goto done;
  if ((st = values_f32(c, n, 1, &scores, &ss)) != KILN_OK) goto done;
  if (bs.rank != 3 || bs.dims[2] != 4 || ss.rank != 3 || ss.dims[0] != bs.dims[0] || ss.dims[2] != bs.dims[1]) {
    st = fe_fail(c, n, KILN_ERR_SHAPE, "boxes must be [B, n, 4] and scores [B, classes, n]");
    goto done;
  }
  int64_t B = bs.dims[0], K = ss.dims[1], M = bs.dims[1], cnt = 0;
  int64_t cap = B * K * (max_out < M ? max_out : M);
  sel = kiln_ir_malloc(G->alloc, sizeof(int64_t) * (size_t)(3 * cap + 1));
  order = kiln_ir_malloc(G->alloc, sizeof(int64_t) * (size_t)(2 * M + 1));
  if (!sel || !order) {
    st = fe_fail(c, n, KILN_ERR_OUT_OF_MEMORY, "out of memory");
    goto done;
  }
  int64_t *picked = order + M;
  for (int64_t b = 0; b < B; b++)
    for (int64_t k = 0; k < K; k++) {
      const float *sc = scores + (b * K + k) * M;
      int64_t m = 0, n_picked = 0;
      for (int64_t i = 0; i < M; i++)
        if (!has_score || sc[i] > score_min) order[m++] = i;
      /* candidates by score, highest first; equal scores: lower index first (insertion
       * sort keeps it simple and stable) */
      for (int64_t i = 1; i < m; i++) {
        int64_t x = order[i], j = i;
        while (j > 0 && sc[order[j - 1]] < sc[x]) order[j] = order[j - 1], j--;
        order[j] = x;
      }
      for (int64_t i = 0; i < m && n_picked < max_out; i++) {
        const float *cand = boxes + (b * M + order[i]) * 4;
        bool keep = true;
        for (int64_t j = 0; j < n_picked && keep; j++)
          keep = !suppress(cand, boxes + (b * M + picked[j]) * 4, center, iou);
        if (!keep) continue;
        picked[n_picked++] = order[i];
        sel[3 * cnt] = b, sel[3 * cnt + 1] = k, sel[3 * cnt + 2] = order[i];
        cnt++;
      }
    }
  kiln_shape os = {2, {cnt, 3}};
  n->out[0] = kiln_ir_constant(G, NM, KILN_I64, &os, sel);
done:
  kiln_ir_free(G->alloc, boxes);
  kiln_ir_free(G->alloc, scores);
  kiln_ir_free(G->alloc, sel);
  kiln_ir_free(G->alloc, order);
  return st;
}
