/* lower_gemm.c - the GEMM kernels of lowering: a dot or convolution group of the fusion
 * plan as one GEMM kernel, with its fused sub-kernels: the epilogue (the group's
 * elementwise consumers, applied to each output tile), the prologue (an A operand the
 * pack computes) and the im2col packs of convolutions, channels first and last. Operands
 * and results are read and written through strided views where the plan says so.
 */
#include "lower-impl.h"

#include <stdio.h>
#include <string.h>

/* The epilogue sub-kernel of the current GEMM group: its sink's expression, with v's value read
 * from the product's buffer (the sink's own: the epilogue runs in place). */
static void build_epilogue(lower_ctx *c, kiln_kernel *k) {
  int32_t sink = c->group->epilogue;
  const kiln_node *sn = &c->g->nodes[sink];
  kiln_kernel *e = kiln_lower_begin_sub(c, c->buf_of[sink], sn->dtype, &sn->shape);
  if (!e) return;
  e->node = sink;
  kiln_lower_emit_root(c, e, sink);
  kiln_lower_finish_expr(c, e);
  k->epilogue = e;
  k->node = sink;
  k->gemm.epi_last = sn->shape.rank ? sn->shape.dims[sn->shape.rank - 1] : 1;
}

/* The node whose buffer GEMM contraction v writes (the group's root: its epilogue's
 * sink, the node it is sunk into, or v itself); v's value is then that buffer's. */
static int32_t gemm_dst(lower_ctx *c, int32_t v) {
  int32_t dst = c->group->root;
  int32_t b = kiln_lower_buffer_of(c, dst);
  if (dst != v) c->buf_of[v] = b;
  return dst;
}

static void dot_prologue(lower_ctx *c, kiln_kernel *k, int32_t v);

void kiln_lower_dot_gemm(lower_ctx *c, int32_t v) {
  const kiln_node *n = &c->g->nodes[v];
  int32_t dst = gemm_dst(c, v);
  kiln_kernel *k = kiln_lower_begin_kernel(c, KILN_KERNEL_GEMM, c->buf_of[dst], c->g->nodes[dst].dtype, &c->g->nodes[dst].shape);
  k->node = dst;
  kiln_lower_cover(c, v);
  kiln_gemm_desc *gd = &k->gemm;
  const kiln_fusion_group *gr = c->group;
  kiln_pass_view av, bv, cv;
  bool ok = true;
  if (gr->sunk_to >= 0) ok = kiln_pass_sunk_view(c->g, v, gr->sunk_to, &cv);
  else kiln_pass_view_dense(&cv, dst, &n->shape);
  if (!ok || !kiln_pass_dot_views(c->g, c->plan->is_output, v, gr->dense_operands, &cv, &av, &bv, gd)) {
    c->user_err = kiln_diag_set(c->d, KILN_ERR_INTERNAL, "GEMM '%s': the plan's operand and result views do not fit",
                                n->name ? n->name : "?");
    return;
  }
  gd->b_buf = kiln_lower_buffer_of(c, bv.base);
  gd->c_buf = c->buf_of[dst];
  int32_t u = n->in[0];
  if (gr->prologue == u) {
    if (!kiln_pass_prologue_fits(&av, gd, u)) {
      c->user_err = kiln_diag_set(c->d, KILN_ERR_INTERNAL, "GEMM '%s': its prologue's operand is read through a view",
                                  n->name ? n->name : "?");
      return;
    }
    dot_prologue(c, k, v);
  } else {
    gd->a_buf = kiln_lower_buffer_of(c, av.base);
  }
  if (c->group->epilogue >= 0) build_epilogue(c, k);
  kiln_lower_end_kernel(c, k, "gemm");
}


/* A GEMM pack's scratch buffers for convolution n: the packed tile (returned; "<n>.col")
 * and the two i64 tile parameters (*par; "<n>.tile"). */
static int32_t pack_scratch(lower_ctx *c, const kiln_node *n, const kiln_shape *tile_shape, int32_t *par) {
  char nm[160];
  int64_t two = 2;
  kiln_shape ps = kiln_shape_make(1, &two);
  snprintf(nm, sizeof nm, "%s.col", n->name);
  int32_t col = kiln_lower_new_buffer(c, KILN_BUF_ARENA, n->dtype, tile_shape, -1, nm);
  snprintf(nm, sizeof nm, "%s.tile", n->name);
  *par = kiln_lower_new_buffer(c, KILN_BUF_ARENA, KILN_I64, &ps, -1, nm);
  return col;
}

/* The pack of GEMM dot v's prologue (choose_prologue): A as one tile of m x k (at most
 * the target's pack tile), row r computing row r of the operand (its [m, k] flattening). One
 * tile, because OpenBLAS runs a product split into tiles of rows slower than the whole
 * ([4096, 768] x [768, 768] with a cast prologue: 21.8 ms in tiles of 341 rows, 17.9 ms
 * with the cast as a kernel of its own); the prologue then saves a kernel and keeps the
 * operand in cache. */
static void dot_prologue(lower_ctx *c, kiln_kernel *k, int32_t v) {
  const kiln_node *n = &c->g->nodes[v];
  int32_t u = n->in[0];
  const kiln_shape *us = &c->g->nodes[u].shape;
  kiln_gemm_desc *gd = &k->gemm;
  int64_t M = gd->m, K = gd->k;
  int64_t cd[2] = {M, K};
  kiln_shape cs = kiln_shape_make(2, cd);
  int32_t par, col = pack_scratch(c, n, &cs, &par);
  gd->a_buf = col, gd->lda = K, gd->tile_n = M, gd->param_buf = par, gd->pack_a = 1;
  kiln_kernel *pk = kiln_lower_begin_sub(c, col, n->dtype, &cs);
  if (!pk) return;
  int32_t idx[2], ui[KILN_MAX_RANK];
  kiln_lower_out_vars(c, 2, idx);
  int32_t row = idx[0];
  if (us->rank > 1) {
    kiln_shape m1 = kiln_shape_make(1, &M), lead = kiln_shape_make(us->rank - 1, us->dims);
    kiln_lower_reshape_index(c, &m1, &lead, &row, ui);
  }
  ui[us->rank - 1] = idx[1];
  pk->root = kiln_lower_emit(c, u, ui);
  kiln_lower_finish_expr(c, pk);
  k->pack = pk;
}

/* The output pixel a k-major pack tile's element stands for (the channels-first pack's,
 * and conv_cl's A^T pack's), as coordinates over the P output pixels of spatial dims
 * od[0..sd) (into pj): by_rows, output row first / row + idx[1], column idx[2]; else
 * pixel first + idx[1]. first: the tile's first pixel. Returns the mask "a pixel of the
 * output" (the last tile may run past it); the coordinates are clamped. */
static int32_t tile_pixel(lower_ctx *c, bool by_rows, int32_t first, const int32_t *idx, int64_t P, int64_t row,
                          int32_t sd, const int64_t *od, int32_t *pj) {
  if (by_rows) {
    int64_t n_rows = P / row;
    int32_t orow = IX(add, IX(div, first, INT(row)), idx[1]);
    int32_t mask = IX(lt, orow, INT(n_rows));
    orow = kiln_pass_kb_clamp(KB, orow, 0, n_rows - 1);
    kiln_shape o1 = kiln_shape_make(1, &n_rows), os = kiln_shape_make(sd - 1, od);
    if (sd > 1) kiln_lower_reshape_index(c, &o1, &os, &orow, pj);
    pj[sd - 1] = idx[2];
    return mask;
  }
  int32_t p = IX(add, first, idx[1]);
  int32_t mask = IX(lt, p, INT(P));
  p = kiln_pass_kb_clamp(KB, p, 0, P - 1);
  kiln_shape p1 = kiln_shape_make(1, &P), os = kiln_shape_make(sd, od);
  kiln_lower_reshape_index(c, &p1, &os, &p, pj);
  return mask;
}

/* conv through GEMM: C[n, g] (Co/G x OHW) = W[g] (Co/G x Kc) * col[n, g] (Kc x OHW). The
 * column matrix is never stored whole: the kernel's pack sub-kernel computes it tile by
 * tile (tile_n columns, im2col), each tile multiplied as soon as it is packed. */
void kiln_lower_conv_gemm(lower_ctx *c, int32_t v) {
  const kiln_node *n = &c->g->nodes[v];
  int32_t x = n->in[0], w = n->in[1];
  const kiln_shape *xs = &c->g->nodes[x].shape, *ws = &c->g->nodes[w].shape;
  int32_t sd = xs->rank - 2;
  int64_t G = n->a.groups > 0 ? n->a.groups : 1, N = xs->dims[0];
  int64_t cig = ws->dims[1], cog = ws->dims[0] / G, kvol = 1, P = 1;
  bool pointwise = true; /* 1x1, stride 1, no padding: x already is the column matrix */
  for (int32_t d = 0; d < sd; d++) {
    kvol *= ws->dims[2 + d];
    P *= n->shape.dims[2 + d];
    pointwise = pointwise && ws->dims[2 + d] == 1 && n->a.strides[d] == 1 && n->a.lo[d] == 0 &&
                n->a.hi[d] == 0;
  }
  int64_t Kc = cig * kvol, es = (int64_t)kiln_dtype_size(n->dtype);
  pointwise = pointwise || Kc == 0 || P == 0; /* an empty product: nothing to pack */
  int64_t row = sd > 0 ? n->shape.dims[xs->rank - 1] : 1; /* one output row: the epilogue's unit */
  int32_t dst = gemm_dst(c, v);
  kiln_kernel *k = kiln_lower_begin_kernel(c, KILN_KERNEL_GEMM, c->buf_of[dst], n->dtype, &c->g->nodes[dst].shape);
  k->node = dst;
  kiln_lower_cover(c, v);
  kiln_gemm_desc *gd = &k->gemm;
  gd->param_buf = -1;
  int32_t nb = 0;
  if (N != 1) { /* N = 0: no products (one would write past the empty output) */
    gd->batch[nb] = N;
    gd->a_bstride[nb] = 0, gd->b_bstride[nb] = G * Kc * P, gd->c_bstride[nb] = G * cog * P;
    nb++;
  }
  if (G > 1) {
    gd->batch[nb] = G;
    gd->a_bstride[nb] = cog * Kc, gd->b_bstride[nb] = Kc * P, gd->c_bstride[nb] = cog * P;
    nb++;
  }
  gd->n_batch = nb;
  gd->a_buf = kiln_lower_buffer_of(c, w);
  gd->c_buf = c->buf_of[dst];
  gd->m = cog, gd->n = P, gd->k = Kc;
  gd->lda = Kc, gd->ldb = P, gd->ldc = P;
  if (pointwise) gd->b_buf = kiln_lower_buffer_of(c, x);
  else {
    /* whole output rows per tile, the tiles as even as the budget allows (no small
     * remainder tile: each tile is one GEMM call) */
    int64_t all_rows = row > 0 ? P / row : 1;
    int64_t tile = kiln_pass_gemm_tile(&c->t->desc, Kc * es * (row > 0 ? row : 1), all_rows) * row;
    if (tile >= P || row <= 0) tile = P;
    int64_t cd[2] = {Kc, tile};
    kiln_shape cs = kiln_shape_make(2, cd);
    int32_t par, col = pack_scratch(c, n, &cs, &par);
    for (int32_t i = 0; i < nb; i++) gd->b_bstride[i] = 0;
    gd->b_buf = col, gd->ldb = tile, gd->tile_n = tile, gd->param_buf = par, gd->pack_last = tile;
    /* In whole output rows (tiles are), the pack's domain is [Kc, tile rows, row]: the
     * innermost variable is then an output column, whose input offset is affine (a
     * contiguous, masked vector load at stride 1) rather than a div/mod of a flat column
     * index (a gather). */
    bool by_rows = sd >= 1 && row > 0 && tile % row == 0;
    if (by_rows) gd->pack_last = row;
    int64_t cd3[3] = {Kc, by_rows ? tile / row : 1, by_rows ? row : tile};
    kiln_shape cs3 = kiln_shape_make(3, cd3);
    kiln_kernel *pk = kiln_lower_begin_sub(c, col, n->dtype, by_rows ? &cs3 : &cs);
    if (pk) {
      /* col[r, jj] = x[n, g*cig + ci(r), o(p)*stride + k(r)*dilation - lo], p = j0 + jj */
      int32_t idx[3];
      kiln_lower_out_vars(c, by_rows ? 3 : 2, idx);
      int32_t t = kiln_pass_kb_clamp(KB, kiln_pass_kb_load(KB, par, KILN_I64, INT(0), -1, 0), 0, N * G - 1);
      int32_t j0 = kiln_pass_kb_clamp(KB, kiln_pass_kb_load(KB, par, KILN_I64, INT(1), -1, 0), 0, P - 1);
      int32_t ni = G > 1 ? IX(div, t, INT(G)) : t, gi = G > 1 ? IX(mod, t, INT(G)) : INT(0);
      int64_t rd[KILN_MAX_RANK + 1], pd[KILN_MAX_RANK];
      rd[0] = cig;
      for (int32_t d = 0; d < sd; d++) rd[1 + d] = ws->dims[2 + d], pd[d] = n->shape.dims[2 + d];
      kiln_shape rs = kiln_shape_make(1 + sd, rd), r1 = kiln_shape_make(1, &Kc);
      int32_t rj[KILN_MAX_RANK], pj[KILN_MAX_RANK], jx[KILN_MAX_RANK];
      kiln_lower_reshape_index(c, &r1, &rs, &idx[0], rj);
      int32_t mask = tile_pixel(c, by_rows, j0, idx, P, row, sd, pd, pj);
      jx[0] = ni;
      jx[1] = IX(add, IX(mul, gi, INT(cig)), rj[0]);
      for (int32_t d = 0; d < sd; d++) {
        jx[2 + d] = IX(sub, IX(add, IX(mul, pj[d], INT(n->a.strides[d])), IX(mul, rj[1 + d], INT(n->a.dilations[d]))),
                       INT(n->a.lo[d]));
        mask = IX(and, mask, kiln_lower_in_range(c, jx[2 + d], 0, xs->dims[2 + d]));
      }
      pk->root = kiln_lower_emit_masked(c, x, jx, mask, 0);
      kiln_lower_finish_expr(c, pk);
      k->pack = pk;
    }
  }
  if (c->group->epilogue >= 0) build_epilogue(c, k);
  kiln_lower_end_kernel(c, k, "gemm");
}

/* A conv_cl GEMM convolution's operands and sizes (lower_conv_cl_gemm): node n, input x
 * [N, spatial..., Ci] and weights of shapes xs and ws (r = rank), Kc = Ci * kernel volume
 * (the product's k), P output pixels per image (its m). */
typedef struct cl_conv {
  const kiln_node *n;
  int32_t x, r;
  const kiln_shape *xs, *ws;
  int64_t N, Ci, Kc, P;
} cl_conv;

/* The pack of conv_cl GEMM kernel k when x is a buffer: A tile by tile as it is,
 * tile x Kc, row p the input patch of output pixel p in (k..., ci) order. */
static void cl_pack_rows(lower_ctx *c, kiln_kernel *k, const cl_conv *cv) {
  const kiln_node *n = cv->n;
  int32_t x = cv->x, r = cv->r, sd = r - 2;
  const kiln_shape *xs = cv->xs, *ws = cv->ws;
  kiln_gemm_desc *gd = &k->gemm;
  int64_t N = cv->N, Ci = cv->Ci, Kc = cv->Kc, P = cv->P, es = (int64_t)kiln_dtype_size(n->dtype);
  gd->lda = Kc;
  /* rows per tile within the budget, the tiles as even as that allows */
  int64_t tile = kiln_pass_gemm_tile(&c->t->desc, Kc * es, P);
  int64_t cd[2] = {tile, Kc};
  kiln_shape cs = kiln_shape_make(2, cd);
  int32_t par, col = pack_scratch(c, n, &cs, &par);
  /* The pack's rows (its domain is [tile, Kc / last, last]): with the last kernel dim
   * undilated, a row is a kernel row's kw * Ci input elements, contiguous in x: a masked
   * load over the padding columns, affine in the innermost variable (rows of 16 channels
   * alone made a 16-channel 3x3's pack 3x slower). Else a row is one kernel position's Ci
   * channels, read through clamped coordinates and a select. */
  bool runs = n->a.dilations[sd - 1] == 1;
  int64_t last = runs ? ws->dims[sd - 1] * Ci : Ci;
  gd->a_buf = col, gd->tile_n = tile, gd->param_buf = par, gd->pack_a = 1, gd->pack_last = last;
  int64_t pd3[3] = {tile, Kc / last, last};
  kiln_shape pks = kiln_shape_make(3, pd3);
  kiln_kernel *pk = kiln_lower_begin_sub(c, col, n->dtype, &pks);
  if (pk) {
    /* col[jj, (kp, ci)] = x[t, o(i0 + jj) * stride + k(kp) * dilation - lo, ci] */
    int32_t idx[3];
    kiln_lower_out_vars(c, 3, idx);
    int32_t t = kiln_pass_kb_clamp(KB, kiln_pass_kb_load(KB, par, KILN_I64, INT(0), -1, 0), 0, N - 1);
    int32_t i0 = kiln_pass_kb_clamp(KB, kiln_pass_kb_load(KB, par, KILN_I64, INT(1), -1, 0), 0, P - 1);
    int32_t p = IX(add, i0, idx[0]);
    int32_t mask = IX(lt, p, INT(P));
    p = kiln_pass_kb_clamp(KB, p, 0, P - 1);
    int64_t kd[KILN_MAX_RANK], od[KILN_MAX_RANK], kq = Kc / last;
    for (int32_t d = 0; d < sd; d++) kd[d] = ws->dims[d], od[d] = n->shape.dims[1 + d];
    int32_t ksd = runs ? sd - 1 : sd; /* kernel dims idx[1] ranges over */
    kiln_shape ks = kiln_shape_make(ksd, kd), os = kiln_shape_make(sd, od);
    kiln_shape k1 = kiln_shape_make(1, &kq), p1 = kiln_shape_make(1, &P);
    int32_t kj[KILN_MAX_RANK], oj[KILN_MAX_RANK], jx[KILN_MAX_RANK];
    if (ksd > 0) kiln_lower_reshape_index(c, &k1, &ks, &idx[1], kj);
    kiln_lower_reshape_index(c, &p1, &os, &p, oj);
    for (int32_t d = 0; d < ksd; d++) {
      jx[1 + d] = IX(sub, IX(add, IX(mul, oj[d], INT(n->a.strides[d])), IX(mul, kj[d], INT(n->a.dilations[d]))),
                     INT(n->a.lo[d]));
      mask = IX(and, mask, kiln_lower_in_range(c, jx[1 + d], 0, xs->dims[1 + d]));
    }
    if (runs) {
      /* offset ((t * X0 + i0) * ...) * (Xlast * Ci) + (o_last * stride - lo) * Ci + j */
      int64_t row = xs->dims[sd] * Ci;
      int32_t off = t;
      for (int32_t d = 0; d < sd - 1; d++) off = IX(add, IX(mul, off, INT(xs->dims[1 + d])), jx[1 + d]);
      int32_t w0 = IX(sub, IX(mul, oj[sd - 1], INT(n->a.strides[sd - 1])), INT(n->a.lo[sd - 1]));
      int32_t in_row = IX(add, IX(mul, w0, INT(Ci)), idx[2]);
      mask = IX(and, mask, kiln_lower_in_range(c, in_row, 0, row));
      off = IX(add, IX(mul, off, INT(row)), in_row);
      pk->root = kiln_pass_kb_load(KB, kiln_lower_buffer_of(c, x), n->dtype, off, mask, 0);
    } else {
      jx[0] = t;
      jx[r - 1] = idx[2];
      pk->root = kiln_lower_emit_clamped(c, x, jx, mask, 0);
    }
    kiln_lower_finish_expr(c, pk);
    k->pack = pk;
  }
}

/* The pack of conv_cl GEMM kernel k when x is the layout pass's permute of a
 * channels-first value (a network's first convolution, reading its input): A^T tile by
 * tile, Kc x tile (trans_a), in whole output rows with the output column innermost, as the
 * channels-first pack does: the input is then read along its rows (a masked load, affine
 * in the innermost variable) rather than across channels. resnet18's 7x7 stem over 3
 * channels: 5.5 ms packing rows of 3 channels, 2.3 ms channels first. */
static void cl_pack_transposed(lower_ctx *c, kiln_kernel *k, const cl_conv *cv) {
  const kiln_node *n = cv->n;
  int32_t x = cv->x, r = cv->r, sd = r - 2;
  const kiln_shape *xs = cv->xs, *ws = cv->ws;
  kiln_gemm_desc *gd = &k->gemm;
  int64_t N = cv->N, Ci = cv->Ci, Kc = cv->Kc, P = cv->P, es = (int64_t)kiln_dtype_size(n->dtype);
  int64_t row = n->shape.dims[sd]; /* one output row */
  int64_t tile = kiln_pass_gemm_tile(&c->t->desc, Kc * es * row, P / row) * row;
  if (tile >= P) tile = P;
  bool by_rows = tile % row == 0;
  int64_t cd[2] = {Kc, tile};
  kiln_shape cs = kiln_shape_make(2, cd);
  int32_t par, col = pack_scratch(c, n, &cs, &par);
  gd->a_buf = col, gd->lda = tile, gd->trans_a = 1, gd->tile_n = tile, gd->param_buf = par, gd->pack_a = 1;
  gd->pack_last = by_rows ? row : tile;
  int64_t pd3[3] = {Kc, by_rows ? tile / row : 1, by_rows ? row : tile};
  kiln_shape pks = kiln_shape_make(3, pd3);
  kiln_kernel *pk = kiln_lower_begin_sub(c, col, n->dtype, by_rows ? &pks : &cs);
  if (!pk) return;
  /* colT[(kp, ci), jj] = x[t, o(i0 + jj) * stride + k(kp) * dilation - lo, ci] */
  int32_t idx[3];
  kiln_lower_out_vars(c, by_rows ? 3 : 2, idx);
  int32_t t = kiln_pass_kb_clamp(KB, kiln_pass_kb_load(KB, par, KILN_I64, INT(0), -1, 0), 0, N - 1);
  int32_t i0 = kiln_pass_kb_clamp(KB, kiln_pass_kb_load(KB, par, KILN_I64, INT(1), -1, 0), 0, P - 1);
  int64_t kd[KILN_MAX_RANK + 1], od[KILN_MAX_RANK];
  for (int32_t d = 0; d < sd; d++) kd[d] = ws->dims[d], od[d] = n->shape.dims[1 + d];
  kd[sd] = Ci;
  kiln_shape ks = kiln_shape_make(sd + 1, kd), k1 = kiln_shape_make(1, &Kc);
  int32_t kj[KILN_MAX_RANK + 1], oj[KILN_MAX_RANK], jx[KILN_MAX_RANK];
  kiln_lower_reshape_index(c, &k1, &ks, &idx[0], kj);
  int32_t mask = tile_pixel(c, by_rows, i0, idx, P, row, sd, od, oj);
  jx[0] = t;
  jx[r - 1] = kj[sd];
  for (int32_t d = 0; d < sd; d++) {
    jx[1 + d] = IX(sub, IX(add, IX(mul, oj[d], INT(n->a.strides[d])), IX(mul, kj[d], INT(n->a.dilations[d]))),
                   INT(n->a.lo[d]));
    mask = IX(and, mask, kiln_lower_in_range(c, jx[1 + d], 0, xs->dims[1 + d]));
  }
  /* through the permute to its source buffer: a masked load there needs no clamping */
  const kiln_node *xn = &c->g->nodes[x];
  if (xn->op == KILN_OP_permute && kiln_lower_is_buffer(c, xn->in[0])) {
    int32_t sj[KILN_MAX_RANK];
    for (int32_t d = 0; d < r; d++) sj[xn->a.perm[d]] = jx[d];
    kiln_lower_cover(c, x);
    pk->root = kiln_lower_emit_masked(c, xn->in[0], sj, mask, 0);
  } else {
    pk->root = kiln_lower_emit_masked(c, x, jx, mask, 0);
  }
  kiln_lower_finish_expr(c, pk);
  k->pack = pk;
}

/* Whether conv_cl node n runs as a direct convolution (kiln_gemm_desc.conv_rank): where
 * the target generates GEMM code for a constant B (its weights) and x is a buffer, f32,
 * one to three spatial dims. Only generated code runs it, so the condition is the
 * schedule's (schedule.c gemm_generated_fits) for a product without a pack. */
static bool direct_conv(lower_ctx *c, const kiln_node *n, int32_t x) {
  return kiln_pass_conv_direct(c->g, n, &c->t->desc) && kiln_lower_is_buffer(c, x);
}

/* conv_cl through GEMM, per batch n: C[n] (P x Co) = col[n] (P x Kc) * W (Kc x Co). Row p
 * of col is output pixel p's input patch in (k..., ci) order; W as laid out ([k..., Ci,
 * Co]) is Kc x Co; C is the output itself. 1x1, stride 1, no padding: x is col already
 * and the batch is one product (m = N * P). Else the pack sub-kernel computes col tile_n
 * rows at a time (pack_a: cl_pack_rows, cl_pack_transposed), each tile multiplied, and
 * its rows of the output finished by the epilogue, while in cache. */
void kiln_lower_conv_cl_gemm(lower_ctx *c, int32_t v) {
  const kiln_node *n = &c->g->nodes[v];
  int32_t x = n->in[0], w = n->in[1];
  const kiln_shape *xs = &c->g->nodes[x].shape, *ws = &c->g->nodes[w].shape;
  int32_t r = xs->rank, sd = r - 2;
  int64_t N = xs->dims[0], Ci = xs->dims[r - 1], Co = ws->dims[r - 1], kvol = 1, P = 1;
  bool pointwise = true;
  for (int32_t d = 0; d < sd; d++) {
    kvol *= ws->dims[d];
    P *= n->shape.dims[1 + d];
    pointwise = pointwise && ws->dims[d] == 1 && n->a.strides[d] == 1 && n->a.lo[d] == 0 && n->a.hi[d] == 0;
  }
  int64_t Kc = Ci * kvol;
  pointwise = pointwise || Kc == 0 || P == 0; /* an empty product: nothing to pack */
  cl_conv cv = {n, x, r, xs, ws, N, Ci, Kc, P};
  int32_t dst = gemm_dst(c, v);
  kiln_kernel *k = kiln_lower_begin_kernel(c, KILN_KERNEL_GEMM, c->buf_of[dst], n->dtype, &c->g->nodes[dst].shape);
  k->node = dst;
  kiln_lower_cover(c, v);
  kiln_gemm_desc *gd = &k->gemm;
  gd->param_buf = -1;
  gd->b_buf = kiln_lower_buffer_of(c, w);
  gd->c_buf = c->buf_of[dst];
  gd->n = Co, gd->k = Kc, gd->ldb = Co, gd->ldc = Co;
  int32_t src = kiln_lower_is_buffer(c, x) ? -1 : kiln_pass_cl_source(c->g, n);
  if (pointwise && src >= 0) { /* per batch, A^T [Ci, P] is the channels-first input itself */
    kiln_lower_cover(c, x);
    gd->a_buf = kiln_lower_buffer_of(c, src);
    gd->m = P, gd->lda = P, gd->trans_a = 1;
    if (N != 1) gd->n_batch = 1, gd->batch[0] = N, gd->a_bstride[0] = Ci * P, gd->c_bstride[0] = P * Co;
  } else if (pointwise) {
    gd->a_buf = kiln_lower_buffer_of(c, x);
    gd->m = N * P, gd->lda = Ci;
  } else if (direct_conv(c, n, x)) {
    gd->m = P;
    gd->a_buf = kiln_lower_buffer_of(c, x);
    gd->lda = Ci;
    if (N != 1) gd->n_batch = 1, gd->batch[0] = N, gd->a_bstride[0] = kiln_shape_numel(xs) / N, gd->c_bstride[0] = P * Co;
    gd->conv_rank = sd, gd->conv_ci = Ci;
    for (int32_t d = 0; d < sd; d++) {
      gd->conv_in[d] = xs->dims[1 + d], gd->conv_out[d] = n->shape.dims[1 + d], gd->conv_k[d] = ws->dims[d];
      gd->conv_stride[d] = n->a.strides[d], gd->conv_dil[d] = n->a.dilations[d], gd->conv_lo[d] = n->a.lo[d];
    }
    if (kiln_pass_conv_merges_taps(c->g, n)) /* the last dim's taps: one run of kw pixels */
      gd->conv_ci = Ci * gd->conv_k[sd - 1], gd->conv_k[sd - 1] = 1;
  } else {
    gd->m = P;
    if (N != 1) gd->n_batch = 1, gd->batch[0] = N, gd->c_bstride[0] = P * Co;
    if (kiln_lower_is_buffer(c, x)) cl_pack_rows(c, k, &cv);
    else cl_pack_transposed(c, k, &cv);
  }
  if (c->group->epilogue >= 0) build_epilogue(c, k);
  kiln_lower_end_kernel(c, k, "gemm");
}
