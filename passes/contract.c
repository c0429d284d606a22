/* contract.c - graph rewrites around contractions (dot, conv) that the fusion engine
 * relies on: constant scales folded into the weights, bias chains merged, scalar scales
 * moved behind the contraction (pass "contract"), and sibling contractions that share
 * their left operand merged into one (pass "siblings").
 *
 * contract, iterated to a fixed point (p = conv(x, W) with s, b per output channel, dim 1;
 * or p = dot(x, W) with s, b per output column, the last dim; W, s, b constants or
 * broadcasts of one):
 *   mul(p, s)           -> p(x, W * s)                 (BatchNormalization after a conv)
 *   mul(add(p, b), s)   -> add(p(x, W * s), b * s)     (the bias stays an add: an epilogue)
 *   add(add(p, b1), b2) -> add(p, b1 + b2)
 *   dot(mul(a, c), b)   -> mul(dot(a, b), c)           (c a splat; div by c as mul by 1/c;
 *                                                       either operand, both at once)
 *   mul(mul(x, c1), c2) -> mul(x, c1 * c2)             (c1, c2 splats; div likewise)
 * Every intermediate a rule removes has the rewritten node as its only consumer, so no
 * value is computed twice and no weight is duplicated. New weights are computed here,
 * once, in double and rounded to the dtype; only f32/f64 graphs are rewritten. The results
 * are those of real arithmetic: floating-point rounding may differ in the last bits.
 *
 * siblings: dots that share their left operand x and whose right operands are constants
 * (or broadcasts of one) of one dtype with equal shapes except the last dim N become one
 * dot over the weights concatenated along N, and each original dot a slice of it. When
 * every such dot's only consumer adds a constant bias per output column, the biases are
 * concatenated too and the slices taken after the one add (one GEMM, one bias epilogue):
 * BERT's Q, K and V projections become one GEMM.
 */
#include "passes-impl.h"

#include <string.h>

typedef struct rw {
  kiln_graph *g;
  kiln_diag *d;
  int32_t *uses;    /* uses of each node present at the start of the sweep */
  int32_t *repl;    /* replacement of each such node */
  uint8_t *touched; /* rewritten (or consumed by a rewrite) in this sweep */
  bool failed;      /* an allocation or a node append failed: d says why */
} rw;

/* ------------------------------------------------------------------ constant analysis */

static bool is_rewritable_float(kiln_dtype dt) { return dt == KILN_F32 || dt == KILN_F64; }

static int32_t peel_broadcast(const kiln_graph *g, int32_t v) {
  return g->nodes[v].op == KILN_OP_broadcast ? g->nodes[v].in[0] : v;
}

/* The constant behind v (v itself or one broadcast of it) when it has dtype dt. */
static const kiln_const *weight_const(const kiln_graph *g, int32_t v, kiln_dtype dt) {
  const kiln_const *c = kiln_ir_const_of(g, peel_broadcast(g, v));
  return c && c->dtype == dt ? c : NULL;
}

/* True when v (through broadcasts and reshapes) is a dt constant whose every element
 * equals one value, stored in *c. */
static bool splat_value(const kiln_graph *g, int32_t v, kiln_dtype dt, double *c) {
  while (g->nodes[v].op == KILN_OP_broadcast || g->nodes[v].op == KILN_OP_reshape)
    v = g->nodes[v].in[0];
  const kiln_const *k = kiln_ir_const_of(g, v);
  if (!k || k->dtype != dt || !is_rewritable_float(dt)) return false;
  int64_t n = kiln_shape_numel(&k->shape);
  if (n == 0) return false;
  double x = kiln_rt_get_f64(dt, k->data, 0);
  for (int64_t i = 1; i < n; i++)
    if (kiln_rt_get_f64(dt, k->data, i) != x) return false;
  *c = x;
  return true;
}

/* True when q (a constant, or one broadcast of a constant, of q's own dtype) holds, at
 * every point, vec[the point's coordinate along axis]; fills vec (q's dims[axis] entries).
 * A constant whose dims other than axis are not all 1 qualifies only when its values do
 * not change along them (checked element by element). */
static bool axis_vector(const kiln_graph *g, int32_t q, int32_t axis, double *vec) {
  const kiln_node *qn = &g->nodes[q];
  const kiln_const *k = weight_const(g, q, qn->dtype);
  if (!k || !is_rewritable_float(k->dtype) || k->shape.rank > qn->shape.rank) return false;
  int64_t n = qn->shape.dims[axis];
  int32_t ca = axis - (qn->shape.rank - k->shape.rank); /* axis in the constant's dims */
  bool along = ca >= 0 && k->shape.dims[ca] != 1;
  if (along && k->shape.dims[ca] != n) return false;
  int64_t stride = 1;
  for (int32_t d = ca + 1; along && d < k->shape.rank; d++) stride *= k->shape.dims[d];
  for (int64_t i = 0; i < n; i++) vec[i] = kiln_rt_get_f64(k->dtype, k->data, along ? i * stride : 0);
  int64_t numel = kiln_shape_numel(&k->shape);
  for (int64_t e = 0; e < numel; e++) {
    int64_t coord = along ? (e / stride) % n : 0;
    if (kiln_rt_get_f64(k->dtype, k->data, e) != vec[coord]) return false;
  }
  return true;
}

/* The axis along which a contraction's scale/bias may vary to fold into its weights
 * (conv: output channels; dot: output columns), -1 when p is no foldable contraction:
 * its weight operand must be a constant (dot: or a broadcast of one) whose dims map the
 * output axis one to one. */
static int32_t weight_axis(const kiln_graph *g, int32_t p) {
  const kiln_node *pn = &g->nodes[p];
  if (!is_rewritable_float(pn->dtype)) return -1;
  if (pn->op == KILN_OP_conv) {
    const kiln_const *w = kiln_ir_const_of(g, pn->in[1]);
    return w && w->dtype == pn->dtype ? 1 : -1;
  }
  if (pn->op == KILN_OP_dot) {
    const kiln_const *w = weight_const(g, pn->in[1], pn->dtype);
    int32_t r = pn->shape.rank;
    return w && w->shape.rank >= 1 && w->shape.dims[w->shape.rank - 1] == pn->shape.dims[r - 1]
               ? r - 1 : -1;
  }
  return -1;
}

/* ------------------------------------------------------------------ node construction */

static int32_t append(rw *r, kiln_op op, kiln_dtype dt, const kiln_shape *s, int32_t n_in,
                      const int32_t *in, const kiln_attrs *a, const char *name) {
  int32_t id = kiln_ir_append(r->g, op, dt, s, n_in, in, a, name);
  if (id < 0) {
    kiln_diag_set(r->d, r->g->diag.status ? r->g->diag.status : KILN_ERR_OUT_OF_MEMORY, "%s",
                  r->g->diag.msg);
    r->failed = true;
  }
  return id;
}

/* A new constant node of shape s (zero-filled); *data points at its storage. */
static int32_t new_const(rw *r, kiln_dtype dt, const kiln_shape *s, const char *name, void **data) {
  int32_t ci = kiln_ir_add_const(r->g, dt, s, NULL, name);
  if (ci < 0) {
    kiln_diag_set(r->d, r->g->diag.status ? r->g->diag.status : KILN_ERR_OUT_OF_MEMORY, "%s",
                  r->g->diag.msg);
    r->failed = true;
    return -1;
  }
  int32_t id = append(r, KILN_OP_constant, dt, s, 0, NULL, NULL, name);
  if (id < 0) return -1;
  r->g->nodes[id].index = ci;
  *data = r->g->consts[ci].data;
  return id;
}

/* s may point into the node array: appending moves it, so it is copied first. */
static int32_t broadcast_to(rw *r, int32_t v, const kiln_shape *s, const char *name) {
  if (v < 0 || kiln_shape_eq(&r->g->nodes[v].shape, s)) return v;
  kiln_shape to = *s;
  return append(r, KILN_OP_broadcast, r->g->nodes[v].dtype, &to, 1, &v, NULL, name);
}

/* vec (out->dims[axis] values) as a constant [n, 1, ...] broadcast to out. */
static int32_t axis_const(rw *r, kiln_dtype dt, const double *vec, int32_t axis,
                          const kiln_shape *out, const char *name) {
  kiln_shape s = {.rank = out->rank - axis};
  s.dims[0] = out->dims[axis];
  for (int32_t d = 1; d < s.rank; d++) s.dims[d] = 1;
  void *data;
  int32_t c = new_const(r, dt, &s, name, &data);
  if (c < 0) return -1;
  for (int64_t i = 0; i < s.dims[0]; i++) kiln_rt_set_f64(dt, data, i, vec[i]);
  return broadcast_to(r, c, out, name);
}

static int32_t splat_const(rw *r, kiln_dtype dt, double x, const kiln_shape *out, const char *name) {
  kiln_shape s = {.rank = 0};
  void *data;
  int32_t c = new_const(r, dt, &s, name, &data);
  if (c < 0) return -1;
  kiln_rt_set_f64(dt, data, 0, x);
  return broadcast_to(r, c, out, name);
}

/* Contraction p rebuilt with its weights scaled by s along weight_axis(p). */
static int32_t scaled_contraction(rw *r, int32_t p, const double *s) {
  kiln_node pn = r->g->nodes[p];
  kiln_shape bshape = r->g->nodes[pn.in[1]].shape;
  int32_t wv = peel_broadcast(r->g, pn.in[1]);
  const kiln_const *w = kiln_ir_const_of(r->g, wv);
  kiln_shape ws = w->shape;
  int64_t numel = kiln_shape_numel(&ws);
  void *data;
  int32_t nw = new_const(r, pn.dtype, &ws, r->g->nodes[wv].name, &data);
  if (nw < 0) return -1;
  w = kiln_ir_const_of(r->g, wv); /* the constant store may have moved */
  if (pn.op == KILN_OP_conv) { /* W [Co, Ci/groups, k...]: scale row co by s[co] */
    int64_t per = ws.dims[0] ? numel / ws.dims[0] : 0;
    for (int64_t e = 0; e < numel; e++)
      kiln_rt_set_f64(pn.dtype, data, e, kiln_rt_get_f64(pn.dtype, w->data, e) * s[e / per]);
  } else { /* W [..., K, N]: scale column n by s[n] */
    int64_t n = ws.dims[ws.rank - 1];
    for (int64_t e = 0; e < numel; e++)
      kiln_rt_set_f64(pn.dtype, data, e, kiln_rt_get_f64(pn.dtype, w->data, e) * s[e % n]);
    nw = broadcast_to(r, nw, &bshape, r->g->nodes[pn.in[1]].name);
    if (nw < 0) return -1;
  }
  int32_t in[2] = {pn.in[0], nw};
  return append(r, pn.op, pn.dtype, &pn.shape, 2, in, &pn.a, pn.name);
}

/* ------------------------------------------------------------------ contract rules */

static bool fresh(const rw *r, int32_t v) { return !r->touched[v]; }

static void replace(rw *r, int32_t v, int32_t by) {
  if (by < 0) return;
  r->repl[v] = by;
  r->touched[v] = 1;
}

/* mul(p, s) -> p(x, W*s);  mul(add(p, b), s) -> add(p(x, W*s), b*s). */
static bool fold_scale(rw *r, int32_t i, double *s, double *b) {
  const kiln_graph *g = r->g;
  const kiln_node *m = &g->nodes[i];
  for (int side = 0; side < 2; side++) {
    int32_t a = m->in[side], q = m->in[1 - side];
    if (r->uses[a] != 1 || !fresh(r, a)) continue;
    int32_t ax = weight_axis(g, a);
    if (ax >= 0) {
      if (!axis_vector(g, q, ax, s)) continue;
      replace(r, i, scaled_contraction(r, a, s));
      r->touched[a] = 1;
      return true;
    }
    if (g->nodes[a].op != KILN_OP_add) continue;
    for (int bs = 0; bs < 2; bs++) {
      int32_t p = g->nodes[a].in[bs], bq = g->nodes[a].in[1 - bs];
      if (r->uses[p] != 1 || !fresh(r, p) || (ax = weight_axis(g, p)) < 0) continue;
      if (!axis_vector(g, q, ax, s) || !axis_vector(g, bq, ax, b)) continue;
      kiln_shape out = g->nodes[i].shape;
      kiln_dtype dt = g->nodes[i].dtype;
      const char *name = g->nodes[a].name;
      for (int64_t k = 0; k < out.dims[ax]; k++) b[k] *= s[k];
      int32_t np = scaled_contraction(r, p, s);
      int32_t nb = axis_const(r, dt, b, ax, &out, name);
      if (np < 0 || nb < 0) return true;
      int32_t in[2] = {np, nb};
      replace(r, i, append(r, KILN_OP_add, dt, &out, 2, in, NULL, name));
      r->touched[a] = r->touched[p] = 1;
      return true;
    }
  }
  return false;
}

/* add(add(p, b1), b2) -> add(p, b1 + b2). */
static bool merge_bias(rw *r, int32_t i, double *b1, double *b2) {
  const kiln_graph *g = r->g;
  const kiln_node *n = &g->nodes[i];
  for (int side = 0; side < 2; side++) {
    int32_t a = n->in[side], q2 = n->in[1 - side];
    if (g->nodes[a].op != KILN_OP_add || r->uses[a] != 1 || !fresh(r, a)) continue;
    for (int bs = 0; bs < 2; bs++) {
      int32_t p = g->nodes[a].in[bs], q1 = g->nodes[a].in[1 - bs];
      int32_t ax = weight_axis(g, p);
      if (ax < 0 || !axis_vector(g, q1, ax, b1) || !axis_vector(g, q2, ax, b2)) continue;
      kiln_shape out = n->shape;
      kiln_dtype dt = n->dtype;
      const char *name = n->name;
      for (int64_t k = 0; k < out.dims[ax]; k++) b1[k] += b2[k];
      int32_t nb = axis_const(r, dt, b1, ax, &out, name);
      if (nb < 0) return true;
      int32_t in[2] = {p, nb};
      replace(r, i, append(r, KILN_OP_add, dt, &out, 2, in, NULL, name));
      r->touched[a] = 1;
      return true;
    }
  }
  return false;
}

/* v = mul(x, splat c) / mul(splat c, x) / div(x, splat c) with one use: *x and the
 * factor (c or 1/c). */
static bool scaled_operand(const rw *r, int32_t v, int32_t *x, double *f) {
  const kiln_graph *g = r->g;
  const kiln_node *n = &g->nodes[v];
  if (r->uses[v] != 1 || !fresh(r, v) || !is_rewritable_float(n->dtype)) return false;
  double c;
  if (n->op == KILN_OP_mul) {
    for (int side = 0; side < 2; side++)
      if (splat_value(g, n->in[1 - side], n->dtype, &c)) {
        *x = n->in[side];
        *f = c;
        return true;
      }
  } else if (n->op == KILN_OP_div && splat_value(g, n->in[1], n->dtype, &c) && c != 0) {
    *x = n->in[0];
    *f = 1.0 / c;
    return true;
  }
  return false;
}

/* dot(mul(a, c), b) -> mul(dot(a, b), c), for either operand or both. */
static bool sink_scale(rw *r, int32_t i) {
  kiln_node dn = r->g->nodes[i];
  if (dn.op != KILN_OP_dot || !is_rewritable_float(dn.dtype)) return false;
  int32_t in[2] = {dn.in[0], dn.in[1]};
  double f = 1, fj;
  bool any = false;
  for (int j = 0; j < 2; j++)
    if (dn.in[0] != dn.in[1] && scaled_operand(r, dn.in[j], &in[j], &fj)) {
      r->touched[dn.in[j]] = 1;
      f *= fj;
      any = true;
    }
  if (!any) return false;
  int32_t nd = append(r, KILN_OP_dot, dn.dtype, &dn.shape, 2, in, NULL, dn.name);
  int32_t c = nd < 0 ? -1 : splat_const(r, dn.dtype, f, &dn.shape, dn.name);
  if (c < 0) return true;
  int32_t mi[2] = {nd, c};
  replace(r, i, append(r, KILN_OP_mul, dn.dtype, &dn.shape, 2, mi, NULL, dn.name));
  return true;
}

/* mul(mul(x, c1), c2) -> mul(x, c1*c2) (each mul may be a div by a splat). */
static bool merge_splats(rw *r, int32_t i) {
  int32_t x, y;
  double f1, f2;
  const kiln_node *n = &r->g->nodes[i];
  if (n->op != KILN_OP_mul && n->op != KILN_OP_div) return false;
  /* the outer node's own factor: scaled_operand's use check does not apply to it */
  int32_t save = r->uses[i];
  r->uses[i] = 1;
  bool outer = scaled_operand(r, i, &y, &f2);
  r->uses[i] = save;
  if (!outer || !scaled_operand(r, y, &x, &f1)) return false;
  kiln_node on = r->g->nodes[i];
  r->touched[y] = 1;
  int32_t c = splat_const(r, on.dtype, f1 * f2, &on.shape, on.name);
  if (c < 0) return true;
  int32_t mi[2] = {x, c};
  replace(r, i, append(r, KILN_OP_mul, on.dtype, &on.shape, 2, mi, NULL, on.name));
  return true;
}

static bool contract_node(rw *r, int32_t i, double *v1, double *v2) {
  if (!fresh(r, i)) return false;
  switch (r->g->nodes[i].op) {
  case KILN_OP_mul:
    return fold_scale(r, i, v1, v2) || merge_splats(r, i);
  case KILN_OP_div:
    return merge_splats(r, i);
  case KILN_OP_add:
    return merge_bias(r, i, v1, v2);
  case KILN_OP_dot:
    return sink_scale(r, i);
  /* no rule */
  case KILN_OP_neg: case KILN_OP_abs: case KILN_OP_exp: case KILN_OP_log: case KILN_OP_sqrt: case KILN_OP_rsqrt:
  case KILN_OP_recip: case KILN_OP_tanh: case KILN_OP_sigmoid: case KILN_OP_erf: case KILN_OP_sin: case KILN_OP_cos:
  case KILN_OP_floor: case KILN_OP_ceil: case KILN_OP_round: case KILN_OP_sign: case KILN_OP_not: case KILN_OP_isnan:
  case KILN_OP_atan: case KILN_OP_sub: case KILN_OP_pow: case KILN_OP_max: case KILN_OP_min: case KILN_OP_mod:
  case KILN_OP_and: case KILN_OP_or: case KILN_OP_xor: case KILN_OP_eq: case KILN_OP_ne: case KILN_OP_lt:
  case KILN_OP_le: case KILN_OP_gt: case KILN_OP_ge: case KILN_OP_select: case KILN_OP_cast:
  case KILN_OP_conv: case KILN_OP_conv_cl:
  KILN_OPS_LEAF(KILN_OP_CASE)
  KILN_OPS_MOVEMENT(KILN_OP_CASE)
  KILN_OPS_REDUCE(KILN_OP_CASE)
  KILN_OPS_WINDOW(KILN_OP_CASE)
  KILN_OPS_OPAQUE(KILN_OP_CASE)
  case KILN_OP_COUNT: break;
  }
  return false;
}

/* Work arrays for a sweep over the first n nodes; the vectors hold the widest dim. */
static kiln_status sweep_begin(rw *r, kiln_graph *g, kiln_diag *d, double **vecs, int64_t *widest) {
  int32_t n = g->n_nodes;
  *widest = 1;
  for (int32_t i = 0; i < n; i++)
    for (int32_t k = 0; k < g->nodes[i].shape.rank; k++)
      if (g->nodes[i].shape.dims[k] > *widest) *widest = g->nodes[i].shape.dims[k];
  *r = (rw){.g = g, .d = d};
  r->uses = kiln_ir_malloc(g->alloc, sizeof(int32_t) * 2 * (size_t)n + (size_t)n + 1);
  *vecs = kiln_ir_malloc(g->alloc, sizeof(double) * 2 * (size_t)*widest);
  if (!r->uses || !*vecs) {
    kiln_ir_free(g->alloc, r->uses);
    kiln_ir_free(g->alloc, *vecs);
    return kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory rewriting contractions");
  }
  r->repl = r->uses + n;
  r->touched = (uint8_t *)(r->repl + n);
  kiln_ir_count_uses(g, r->uses);
  for (int32_t i = 0; i < n; i++) {
    r->repl[i] = i;
    r->touched[i] = 0;
  }
  return KILN_OK;
}

/* Applies the sweep's replacements; *again when something was rewritten. */
static kiln_status sweep_end(rw *r, int32_t n, int applied, double *vecs, bool *again) {
  kiln_graph *g = r->g;
  kiln_status st = r->failed ? r->d->status : kiln_pass_rewrite(g, r->repl, n, NULL, r->d);
  kiln_ir_free(g->alloc, r->uses);
  kiln_ir_free(g->alloc, vecs);
  *again = st == KILN_OK && applied > 0;
  return st;
}

kiln_status kiln_pass_contract(kiln_graph *g, const kiln_pass_target *t, kiln_diag *d) {
  (void)t;
  /* Each sweep rewrites every match whose nodes no earlier match of the sweep touched;
   * every rule removes a node, so the loop ends; the bound only caps pathological chains
   * (what was done is valid either way). */
  for (int iter = 0; iter < 64; iter++) {
    rw r;
    double *vecs;
    int64_t widest;
    int32_t n = g->n_nodes;
    kiln_status st = sweep_begin(&r, g, d, &vecs, &widest);
    if (st != KILN_OK) return st;
    int applied = 0;
    for (int32_t i = 0; i < n && !r.failed; i++) applied += contract_node(&r, i, vecs, vecs + widest);
    bool again;
    st = sweep_end(&r, n, applied, vecs, &again);
    if (st != KILN_OK || !again) return st;
  }
  return KILN_OK;
}

/* ------------------------------------------------------------------ siblings */

/* Dot i can join a sibling group: float or not, its right operand is a constant (or a
 * broadcast of one) of its dtype whose last dim is N. */
static bool mergeable_dot(const kiln_graph *g, int32_t i) {
  const kiln_node *n = &g->nodes[i];
  if (n->op != KILN_OP_dot) return false;
  const kiln_const *w = weight_const(g, n->in[1], n->dtype);
  return w && w->shape.rank >= 2 && n->in[0] != n->in[1] &&
         w->shape.dims[w->shape.rank - 1] == n->shape.dims[n->shape.rank - 1];
}

static bool same_but_last(const kiln_shape *a, const kiln_shape *b) {
  if (a->rank != b->rank) return false;
  for (int32_t d = 0; d + 1 < a->rank; d++)
    if (a->dims[d] != b->dims[d]) return false;
  return true;
}

/* Dots j and i merge exactly: same left operand and dtype, weights alike but for N. */
static bool siblings_alike(const kiln_graph *g, int32_t i, int32_t j) {
  const kiln_node *a = &g->nodes[i], *b = &g->nodes[j];
  if (a->in[0] != b->in[0] || a->dtype != b->dtype) return false;
  const kiln_node *wa = &g->nodes[a->in[1]], *wb = &g->nodes[b->in[1]];
  const kiln_const *ca = weight_const(g, a->in[1], a->dtype), *cb = weight_const(g, b->in[1], b->dtype);
  return same_but_last(&wa->shape, &wb->shape) && same_but_last(&ca->shape, &cb->shape) &&
         (wa->op == KILN_OP_broadcast) == (wb->op == KILN_OP_broadcast);
}

/* The bias add that is dot v's only consumer, with its bias in b (N values); -1 if none. */
static int32_t bias_of(const rw *r, const int32_t *user, int32_t v, double *b) {
  const kiln_graph *g = r->g;
  if (r->uses[v] != 1 || user[v] < 0 || !is_rewritable_float(g->nodes[v].dtype)) return -1;
  const kiln_node *a = &g->nodes[user[v]];
  if (a->op != KILN_OP_add || a->in[0] == a->in[1]) return -1;
  int32_t q = a->in[0] == v ? a->in[1] : a->in[0];
  return axis_vector(g, q, a->shape.rank - 1, b) ? user[v] : -1;
}

/* Merges the dots group[0..k-1]; with_bias: their bias adds too. */
static void merge_group(rw *r, const int32_t *group, int32_t k, const int32_t *user, bool with_bias,
                        double *vec) {
  kiln_graph *g = r->g;
  kiln_node d0 = g->nodes[group[0]];
  int32_t rank = d0.shape.rank;
  int64_t total = 0;
  for (int32_t m = 0; m < k; m++) total += g->nodes[group[m]].shape.dims[rank - 1];
  /* Weights [..., K, N_m] concatenated along N, row by row. */
  int32_t w0 = peel_broadcast(g, d0.in[1]);
  kiln_shape ws = g->consts[g->nodes[w0].index].shape;
  int64_t rows = kiln_shape_numel(&ws) / ws.dims[ws.rank - 1];
  ws.dims[ws.rank - 1] = total;
  size_t es = kiln_dtype_size(d0.dtype);
  void *data;
  int32_t nw = new_const(r, d0.dtype, &ws, g->nodes[w0].name, &data);
  if (nw < 0) return;
  int64_t col = 0;
  for (int32_t m = 0; m < k; m++) {
    const kiln_const *c = kiln_ir_const_of(g, peel_broadcast(g, g->nodes[group[m]].in[1]));
    int64_t nm = c->shape.dims[c->shape.rank - 1];
    for (int64_t row = 0; row < rows; row++)
      memcpy((char *)data + (size_t)(row * total + col) * es, (const char *)c->data + (size_t)(row * nm) * es,
             (size_t)nm * es);
    col += nm;
  }
  kiln_shape bs = g->nodes[d0.in[1]].shape;
  bs.dims[rank - 1] = total;
  nw = broadcast_to(r, nw, &bs, g->nodes[d0.in[1]].name);
  kiln_shape out = d0.shape;
  out.dims[rank - 1] = total;
  int32_t in[2] = {d0.in[0], nw};
  int32_t base = nw < 0 ? -1 : append(r, KILN_OP_dot, d0.dtype, &out, 2, in, NULL, d0.name);
  if (base < 0) return;
  if (with_bias) {
    col = 0;
    for (int32_t m = 0; m < k; m++) {
      bias_of(r, user, group[m], vec + col);
      col += g->nodes[group[m]].shape.dims[rank - 1];
    }
    const char *name = g->nodes[user[group[0]]].name;
    int32_t bias = axis_const(r, d0.dtype, vec, rank - 1, &out, name);
    int32_t ai[2] = {base, bias};
    base = bias < 0 ? -1 : append(r, KILN_OP_add, d0.dtype, &out, 2, ai, NULL, name);
    if (base < 0) return;
  }
  kiln_attrs sa = {0};
  for (int32_t dd = 0; dd < rank; dd++) sa.steps[dd] = 1;
  col = 0;
  for (int32_t m = 0; m < k; m++) {
    int32_t v = with_bias ? user[group[m]] : group[m];
    kiln_node vn = g->nodes[v];
    sa.starts[rank - 1] = col;
    replace(r, v, append(r, KILN_OP_slice, vn.dtype, &vn.shape, 1, &base, &sa, vn.name));
    col += vn.shape.dims[rank - 1];
  }
}

kiln_status kiln_pass_siblings(kiln_graph *g, const kiln_pass_target *t, kiln_diag *d) {
  (void)t;
  rw r;
  double *vecs;
  int64_t widest;
  int32_t n = g->n_nodes;
  kiln_status st = sweep_begin(&r, g, d, &vecs, &widest);
  if (st != KILN_OK) return st;
  /* Merged widths can exceed any present dim: the bias vector gets its own buffer. */
  int64_t total_n = 1;
  int32_t *user = kiln_ir_malloc(g->alloc, sizeof(int32_t) * 2 * (size_t)(n ? n : 1));
  for (int32_t i = 0; i < n; i++)
    if (g->nodes[i].op == KILN_OP_dot) total_n += g->nodes[i].shape.dims[g->nodes[i].shape.rank - 1];
  double *bias = kiln_ir_malloc(g->alloc, sizeof(double) * (size_t)total_n);
  if (!user || !bias) {
    r.failed = true;
    kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory merging sibling contractions");
  }
  int applied = 0;
  if (!r.failed) {
    int32_t *group = user + n;
    for (int32_t i = 0; i < n; i++) user[i] = -1;
    for (int32_t i = 0; i < n; i++)
      for (int32_t j = 0; j < g->nodes[i].n_in; j++) user[g->nodes[i].in[j]] = i;
    for (int32_t i = 0; i < n && !r.failed; i++) {
      if (r.touched[i] || !mergeable_dot(g, i)) continue;
      int32_t k = 0;
      group[k++] = i;
      for (int32_t j = i + 1; j < n; j++)
        if (!r.touched[j] && mergeable_dot(g, j) && siblings_alike(g, i, j)) group[k++] = j;
      if (k < 2) continue;
      bool with_bias = true;
      for (int32_t m = 0; m < k && with_bias; m++) with_bias = bias_of(&r, user, group[m], vecs) >= 0;
      for (int32_t m = 0; m < k; m++) r.touched[group[m]] = 1;
      merge_group(&r, group, k, user, with_bias, bias);
      applied++;
    }
  }
  kiln_ir_free(g->alloc, user);
  kiln_ir_free(g->alloc, bias);
  bool again;
  return sweep_end(&r, n, applied, vecs, &again);
}
