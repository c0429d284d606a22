/* onnx_ops_attention.c - the importer for ONNX Attention (opset 23+): scaled dot-product
 * attention decomposed into reshapes, two matmuls and a softmax, with the optional KV cache
 * concat, boolean/additive masks, causal masking, per-batch KV padding lengths, grouped
 * query heads (interleaved repeat), softcap and the qk_matmul_output modes. The order of
 * operations follows onnx.reference so that results agree within rounding. Also
 * RotaryEmbedding (opset 23), the rotation of query/key halves by cached angles. */
#include "onnx_impl.h"

#include <math.h>
#include <string.h>

#define G (c->g)
#define NM (n->name)

static int32_t bin(fe_ctx *c, fe_node *n, kiln_op op, int32_t a, int32_t b) {
  return kiln_ir_binary(G, op, a, b, NM);
}

/* [B, L, H*D] -> [B, H, L, D]. */
static int32_t split_heads(fe_ctx *c, fe_node *n, int32_t x, int64_t heads) {
  const kiln_shape s = G->nodes[x].shape;
  kiln_shape r = {4, {s.dims[0], s.dims[1], heads, s.dims[2] / heads}};
  static const int32_t perm[4] = {0, 2, 1, 3};
  return kiln_ir_permute(G, kiln_ir_reshape(G, x, &r, NM), perm, NM);
}

/* [B, Hkv, L, D] -> [B, Hkv*r, L, D], each head repeated r times in place (h0 h0 h1 h1). */
static int32_t repeat_heads(fe_ctx *c, fe_node *n, int32_t x, int64_t r) {
  const kiln_shape s = G->nodes[x].shape;
  kiln_shape s5 = {5, {s.dims[0], s.dims[1], 1, s.dims[2], s.dims[3]}}, b5 = s5;
  b5.dims[2] = r;
  kiln_shape out = {4, {s.dims[0], s.dims[1] * r, s.dims[2], s.dims[3]}};
  return kiln_ir_reshape(G, kiln_ir_broadcast(G, kiln_ir_reshape(G, x, &s5, NM), &b5, NM), &out, NM);
}

kiln_status fe_import_attention(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 3);
  if (st != KILN_OK) return st;
  int32_t q = n->in[0], k = n->in[1], v = n->in[2];
  int32_t mask = fe_in(n, 3), past_k = fe_in(n, 4), past_v = fe_in(n, 5), nonpad = fe_in(n, 6);
  int32_t rank = G->nodes[q].shape.rank;
  kiln_dtype dt = G->nodes[q].dtype;
  if (!kiln_dtype_is_float(dt)) return fe_fail(c, n, KILN_ERR_SHAPE, "Q must be a float tensor");
  if (G->nodes[k].shape.rank != rank || G->nodes[v].shape.rank != rank || (rank != 3 && rank != 4))
    return fe_fail(c, n, KILN_ERR_SHAPE, "Q, K and V must all be 3-D or all 4-D");
  if ((past_k >= 0) != (past_v >= 0))
    return fe_fail(c, n, KILN_ERR_SHAPE, "past_key and past_value must be given together");
  if (rank == 3) {
    int64_t hq = fe_attr_int(n, "q_num_heads", 0), hkv = fe_attr_int(n, "kv_num_heads", 0);
    if (hq < 1 || hkv < 1 || G->nodes[q].shape.dims[2] % hq || G->nodes[k].shape.dims[2] % hkv ||
        G->nodes[v].shape.dims[2] % hkv)
      return fe_fail(c, n, KILN_ERR_SHAPE,
                     "3-D inputs need q_num_heads and kv_num_heads that divide the hidden sizes");
    q = split_heads(c, n, q, hq);
    k = split_heads(c, n, k, hkv);
    v = split_heads(c, n, v, hkv);
    if (q < 0 || k < 0 || v < 0) return KILN_OK;
  }
  const kiln_shape qs = G->nodes[q].shape;
  int64_t B = qs.dims[0], Hq = qs.dims[1], Lq = qs.dims[2], Dq = qs.dims[3];
  const Onnx__AttributeProto *sa = fe_attr(n, "scale");
  double scale = sa && sa->has_f ? sa->f : 1.0 / sqrt((double)Dq);
  double softcap = fe_attr_float(n, "softcap", 0.0f);
  int64_t mode = fe_attr_int(n, "qk_matmul_output_mode", 0);
  if (mode < 0 || mode > 3)
    return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "qk_matmul_output_mode=%lld is not supported", (long long)mode);
  int64_t past_len = past_k >= 0 ? G->nodes[past_k].shape.dims[2] : 0;
  if (past_k >= 0) {
    int32_t kk[2] = {past_k, k}, vv[2] = {past_v, v};
    k = kiln_ir_concat(G, 2, kk, 2, NM);
    v = kiln_ir_concat(G, 2, vv, 2, NM);
  }
  if (k < 0 || v < 0) return KILN_OK;
  int32_t present_k = k, present_v = v;
  int64_t Hkv = G->nodes[k].shape.dims[1], Lkv = G->nodes[k].shape.dims[2];

  /* The additive bias: mask (padded to Lkv), causal triangle, KV padding lengths. */
  int32_t bias = -1;
  if (mask >= 0) {
    const kiln_shape ms = G->nodes[mask].shape;
    bool is_bool = G->nodes[mask].dtype == KILN_BOOL;
    if (ms.rank < 1 || ms.dims[ms.rank - 1] > Lkv)
      return fe_fail(c, n, KILN_ERR_SHAPE, "attn_mask's last dim exceeds the KV length %lld", (long long)Lkv);
    if (ms.dims[ms.rank - 1] < Lkv) {
      int64_t lo[KILN_MAX_RANK] = {0}, hi[KILN_MAX_RANK] = {0};
      hi[ms.rank - 1] = Lkv - ms.dims[ms.rank - 1];
      mask = kiln_ir_pad(G, mask, lo, hi, is_bool ? 0.0 : -INFINITY, NM);
    }
    if (is_bool)
      bias = kiln_ir_select(G, mask, kiln_ir_scalar(G, dt, 0, NM), kiln_ir_scalar(G, dt, -INFINITY, NM), NM);
    else
      bias = G->nodes[mask].dtype == dt ? mask : kiln_ir_cast(G, mask, dt, NM);
  }
  if (fe_attr_int(n, "is_causal", 0)) {
    /* -inf where column j > row i + past length (upper-left alignment after the cache). */
    kiln_shape cs = {2, {Lq, Lkv}};
    int32_t rows = kiln_ir_iota(G, KILN_I64, &cs, 0, NM), cols = kiln_ir_iota(G, KILN_I64, &cs, 1, NM);
    int32_t above = bin(c, n, KILN_OP_gt, cols,
                        bin(c, n, KILN_OP_add, rows, kiln_ir_scalar(G, KILN_I64, (double)past_len, NM)));
    int32_t tri = kiln_ir_select(G, above, kiln_ir_scalar(G, dt, -INFINITY, NM), kiln_ir_scalar(G, dt, 0, NM), NM);
    bias = bias >= 0 ? bin(c, n, KILN_OP_add, bias, tri) : tri;
  }
  if (nonpad >= 0) {
    kiln_shape ps = {4, {B, 1, 1, Lkv}}, ls = {4, {B, 1, 1, 1}};
    int32_t pos = kiln_ir_iota(G, G->nodes[nonpad].dtype, &ps, 3, NM);
    int32_t keep = bin(c, n, KILN_OP_lt, pos, kiln_ir_reshape(G, nonpad, &ls, NM));
    int32_t pad = kiln_ir_select(G, keep, kiln_ir_scalar(G, dt, 0, NM), kiln_ir_scalar(G, dt, -INFINITY, NM), NM);
    bias = bias >= 0 ? bin(c, n, KILN_OP_add, bias, pad) : pad;
  }

  int32_t kr = k, vr = v;
  if (Hq != Hkv) {
    if (Hkv < 1 || Hq % Hkv)
      return fe_fail(c, n, KILN_ERR_SHAPE, "%lld query heads are not a multiple of %lld KV heads",
                     (long long)Hq, (long long)Hkv);
    kr = repeat_heads(c, n, k, Hq / Hkv);
    vr = repeat_heads(c, n, v, Hq / Hkv);
  }
  /* Q and K are each scaled by sqrt(scale) before the product, as the reference does. */
  int32_t sq = kiln_ir_scalar(G, dt, sqrt(scale), NM);
  static const int32_t tr[4] = {0, 1, 3, 2};
  int32_t qk = kiln_ir_matmul(G, bin(c, n, KILN_OP_mul, q, sq),
                              kiln_ir_permute(G, bin(c, n, KILN_OP_mul, kr, sq), tr, NM), NM);
  if (softcap > 0) {
    int32_t cap = kiln_ir_scalar(G, dt, softcap, NM);
    qk = bin(c, n, KILN_OP_mul, kiln_ir_unary(G, KILN_OP_tanh, bin(c, n, KILN_OP_div, qk, cap), NM), cap);
  }
  int32_t qkb = bias >= 0 ? bin(c, n, KILN_OP_add, qk, bias) : qk;
  int32_t x = qkb;
  const Onnx__AttributeProto *pa = fe_attr(n, "softmax_precision");
  kiln_dtype sdt = dt;
  if (pa && pa->has_i && (!fe_dtype((int32_t)pa->i, &sdt) || !kiln_dtype_is_float(sdt)))
    return fe_fail(c, n, KILN_ERR_UNSUPPORTED, "softmax_precision=%lld is not supported", (long long)pa->i);
  if (sdt != dt) x = kiln_ir_cast(G, x, sdt, NM);
  int32_t ax = 3;
  int32_t e = kiln_ir_unary(G, KILN_OP_exp,
                            bin(c, n, KILN_OP_sub, x, kiln_ir_reduce(G, KILN_OP_reduce_max, x, 1, &ax, 1, NM)), NM);
  int32_t sm = bin(c, n, KILN_OP_div, e, kiln_ir_reduce(G, KILN_OP_reduce_sum, e, 1, &ax, 1, NM));
  if (sdt != dt) sm = kiln_ir_cast(G, sm, dt, NM);
  int32_t y = kiln_ir_matmul(G, sm, vr, NM);
  if (rank == 3 && y >= 0) {
    static const int32_t back[4] = {0, 2, 1, 3};
    kiln_shape os = {3, {B, Lq, Hq * G->nodes[y].shape.dims[3]}};
    y = kiln_ir_reshape(G, kiln_ir_permute(G, y, back, NM), &os, NM);
  }
  n->out[0] = y;
  if (n->n_out > 1) n->out[1] = present_k;
  if (n->n_out > 2) n->out[2] = present_v;
  if (n->n_out > 3) n->out[3] = mode == 3 ? sm : mode == 2 ? qkb : qk;
  return KILN_OK;
}

/* x[..., start + i*step] for i < count along the last dim. */
static int32_t slice_last(fe_ctx *c, fe_node *n, int32_t x, int64_t start, int64_t step, int64_t count) {
  if (x < 0) return -1;
  const kiln_shape s = G->nodes[x].shape;
  int64_t starts[KILN_MAX_RANK] = {0}, steps[KILN_MAX_RANK], counts[KILN_MAX_RANK];
  for (int i = 0; i < s.rank; i++) steps[i] = 1, counts[i] = s.dims[i];
  starts[s.rank - 1] = start, steps[s.rank - 1] = step, counts[s.rank - 1] = count;
  return kiln_ir_slice(G, x, starts, steps, counts, NM);
}

/* x viewed as [B, S, H, D]; the first rot entries of D form pairs (halves, or even/odd
 * entries when interleaved) rotated by the cos/sin cache rows of each position:
 * (x1, x2) -> (cos x1 - sin x2, sin x1 + cos x2). */
kiln_status fe_import_rotary_embedding(fe_ctx *c, fe_node *n) {
  kiln_status st = fe_need_inputs(c, n, 3);
  if (st != KILN_OK) return st;
  int32_t x = n->in[0], pos = fe_in(n, 3);
  const kiln_shape s = G->nodes[x].shape;
  int64_t heads = fe_attr_int(n, "num_heads", 0), rot = fe_attr_int(n, "rotary_embedding_dim", 0);
  bool inter = fe_attr_int(n, "interleaved", 0) != 0;
  static const int32_t swap12[4] = {0, 2, 1, 3};
  int32_t x4;
  if (s.rank == 4) {
    x4 = kiln_ir_permute(G, x, swap12, NM);
  } else if (s.rank == 3) {
    if (heads < 1 || s.dims[2] % heads) return fe_fail(c, n, KILN_ERR_SHAPE, "num_heads must divide the hidden size");
    kiln_shape v = {4, {s.dims[0], s.dims[1], heads, s.dims[2] / heads}};
    x4 = kiln_ir_reshape(G, x, &v, NM);
  } else {
    return fe_fail(c, n, KILN_ERR_SHAPE, "input must be 3-D or 4-D");
  }
  if (x4 < 0) return KILN_OK;
  const kiln_shape xs = G->nodes[x4].shape;
  int64_t d = xs.dims[3];
  if (rot == 0) rot = d;
  if (rot < 2 || rot > d || rot % 2) return fe_fail(c, n, KILN_ERR_SHAPE, "rotary_embedding_dim must be even and at most %lld", (long long)d);
  int64_t half = rot / 2;
  int32_t cs[2];
  kiln_shape c4 = {4, {xs.dims[0], xs.dims[1], 1, half}};
  for (int i = 0; i < 2; i++) {
    int32_t t = n->in[1 + i];
    if (pos >= 0) t = kiln_ir_gather(G, t, pos, 0, NM);
    if (t >= 0 && G->nodes[t].shape.dims[G->nodes[t].shape.rank - 1] != half)
      return fe_fail(c, n, KILN_ERR_SHAPE, "the cos/sin caches must have rotary_embedding_dim/2 columns");
    cs[i] = kiln_ir_reshape(G, t, &c4, NM);
  }
  int32_t x1 = inter ? slice_last(c, n, x4, 0, 2, half) : slice_last(c, n, x4, 0, 1, half);
  int32_t x2 = inter ? slice_last(c, n, x4, 1, 2, half) : slice_last(c, n, x4, half, 1, half);
  int32_t re = bin(c, n, KILN_OP_sub, bin(c, n, KILN_OP_mul, cs[0], x1), bin(c, n, KILN_OP_mul, cs[1], x2));
  int32_t im = bin(c, n, KILN_OP_add, bin(c, n, KILN_OP_mul, cs[1], x1), bin(c, n, KILN_OP_mul, cs[0], x2));
  int32_t y;
  if (inter) {
    kiln_shape p5 = {5, {xs.dims[0], xs.dims[1], xs.dims[2], half, 1}}, r4 = xs;
    r4.dims[3] = rot;
    int32_t parts[2] = {kiln_ir_reshape(G, re, &p5, NM), kiln_ir_reshape(G, im, &p5, NM)};
    y = kiln_ir_reshape(G, kiln_ir_concat(G, 2, parts, 4, NM), &r4, NM);
  } else {
    int32_t parts[2] = {re, im};
    y = kiln_ir_concat(G, 2, parts, 3, NM);
  }
  if (rot < d) {
    int32_t parts[2] = {y, slice_last(c, n, x4, rot, 1, d - rot)};
    y = kiln_ir_concat(G, 2, parts, 3, NM);
  }
  n->out[0] = s.rank == 4 ? kiln_ir_permute(G, y, swap12, NM) : kiln_ir_reshape(G, y, &s, NM);
  return KILN_OK;
}
