/* test_e2e_random.c - differential testing of the whole compiler: seeded random graphs of
 * primitive ops are compiled with kiln_compile at every fusion level, run on random
 * inputs, and every output is compared with the reference interpreter (kiln_interpret).
 *
 * The generator tracks, for every value it builds, a bound on its magnitude, whether it
 * is *exact* (every step so far has one right answer in every implementation: quarter-
 * grid floats moved, compared, added or cast while small, and every integer), and the
 * weakest float dtype an inexact value went through. Discontinuous ops (comparisons,
 * float->int casts, floor/ceil/round/sign, argmax, topk, float mod) only get exact
 * operands, so a rounding difference can never turn into a wrong-looking index; exact
 * results are compared bit for bit, inexact ones with the tolerance of their weakest
 * dtype (test_e2e_util.h). Magnitudes are kept bounded by clamping, and math functions
 * get operands in their safe domains (log(|x|+1), a / (|b|+1), ...).
 *
 * `make test` runs E2E_DEFAULT_GRAPHS graphs from a fixed seed, in E2E_SHARDS Criterion
 * tests. `make fuzz-graphs` sets KILN_FUZZ_GRAPHS (how many) and KILN_FUZZ_SEED (the base
 * seed; graph i uses seed base + i). A mismatch prints the graph's seed, its text and the
 * first differing element; KILN_FUZZ_SEED=<seed> KILN_FUZZ_GRAPHS=1 reruns just it.
 *
 * Conv-heavy graphs (KILN_FUZZ_CONV=1, and E2E_CONV_GRAPHS of them in `make test`) pick a
 * convolution, pool or elementwise op half the time, so that chains of convolutions (which
 * the layout pass runs channels last at --fusion full) are common. */
#include "test_e2e_util.h"

#include <signal.h>
#include <unistd.h>

#define E2E_DEFAULT_GRAPHS 200
#define E2E_DEFAULT_SEED 20240601u
#define E2E_SHARDS 4
#define E2E_CONV_GRAPHS 100
#define E2E_CONV_SEED 20261126u

/* Set while conv-heavy graphs are generated (generate, the reproducer line). */
static bool g_conv_heavy;
#define E2E_MAX_VALS 160
#define E2E_MAX_NUMEL 4096
#define E2E_MAX_IO 3

typedef struct gval {
  int32_t id;
  double bound;    /* |value| <= bound everywhere */
  bool exact;      /* one right answer (see the file comment) */
  kiln_dtype weak; /* inexact floats: the weakest float dtype on the path */
} gval;

typedef struct gen {
  e2e_rng *r;
  kiln_graph *g;
  gval v[E2E_MAX_VALS];
  int n;
  int n_inputs;
  char why[2100]; /* first generator failure (a builder call that refused) */
  const kiln_shape *partner_of; /* read by partner_ok during one pick_where */
} gen;

static const kiln_node *node_of(gen *G, int32_t id) { return &G->g->nodes[id]; }
static kiln_dtype dt_of(gen *G, const gval *v) { return node_of(G, v->id)->dtype; }
static const kiln_shape *sh_of(gen *G, const gval *v) { return &node_of(G, v->id)->shape; }

static int dtype_rank(kiln_dtype t) { /* higher = more precise */
  switch (t) {
  case KILN_BF16: return 0;
  case KILN_F16: return 1;
  case KILN_F32: return 2;
  case KILN_F64: return 3;
  default: return 4;
  }
}
static kiln_dtype weaker(kiln_dtype a, kiln_dtype b) { return dtype_rank(a) <= dtype_rank(b) ? a : b; }

/* The largest integer-valued magnitude a dtype holds exactly on a quarter grid, so that
 * "exact" stays exact after a store in that dtype. */
static double exact_limit(kiln_dtype t) {
  switch (t) {
  case KILN_BF16: return 32;
  case KILN_F16: return 256;
  case KILN_F32: case KILN_F64: return 1 << 16;
  default: return 1e15;
  }
}

/* Registers node id as a new value. A failed builder call (id < 0) is a generator bug
 * (the generator only asks for valid graphs): remember why and return NULL. */
static gval *push(gen *G, int32_t id, double bound, bool exact, kiln_dtype weak) {
  if (id < 0) {
    if (!G->why[0]) snprintf(G->why, sizeof G->why, "%.2047s", G->g->diag.msg);
    return NULL;
  }
  if (G->n >= E2E_MAX_VALS) return NULL;
  kiln_dtype dt = G->g->nodes[id].dtype;
  if (!kiln_dtype_is_float(dt)) exact = true, weak = dt;
  if (exact && bound > exact_limit(dt)) exact = false;
  if (exact) weak = dt;
  G->v[G->n] = (gval){id, bound, exact, weak};
  return &G->v[G->n++];
}

static gval *pick(gen *G) { return &G->v[e2e_int(G->r, 0, G->n - 1)]; }

static gval *pick_where(gen *G, bool (*ok)(gen *, const gval *)) {
  int cand[E2E_MAX_VALS], nc = 0;
  for (int i = 0; i < G->n; i++)
    if (ok(G, &G->v[i])) cand[nc++] = i;
  return nc ? &G->v[cand[e2e_int(G->r, 0, nc - 1)]] : NULL;
}

static kiln_dtype random_dtype(e2e_rng *r) {
  static const kiln_dtype w[] = {KILN_F32, KILN_F32, KILN_F32, KILN_F32, KILN_F32, KILN_I32, KILN_I64,
                                 KILN_BOOL, KILN_F16, KILN_BF16, KILN_F64};
  return w[e2e_int(r, 0, (int64_t)(sizeof w / sizeof w[0]) - 1)];
}

static kiln_shape random_shape(e2e_rng *r, int min_rank, int max_rank) {
  kiln_shape s = {.rank = (int32_t)e2e_int(r, min_rank, max_rank)};
  for (int d = 0; d < s.rank; d++) s.dims[d] = e2e_int(r, 1, e2e_chance(r, 0.2) ? 1 : 7);
  while (kiln_shape_numel(&s) > 600) s.dims[e2e_int(r, 0, s.rank - 1)] = e2e_int(r, 1, 3);
  return s;
}

/* A constant of dtype dt and shape s with quarter-grid data (exact). */
static gval *make_const(gen *G, kiln_dtype dt, const kiln_shape *s, double lim) {
  int64_t n = kiln_shape_numel(s);
  void *data = calloc((size_t)n * kiln_dtype_size(dt) + 1, 1);
  double q = lim * 4;
  for (int64_t i = 0; i < n; i++) {
    if (kiln_dtype_is_float(dt)) kiln_rt_set_f64(dt, data, i, (double)e2e_int(G->r, (int64_t)-q, (int64_t)q) / 4.0);
    else if (dt == KILN_BOOL) kiln_rt_set_i64(dt, data, i, e2e_int(G->r, 0, 1));
    else kiln_rt_set_i64(dt, data, i, e2e_int(G->r, (int64_t)-lim, (int64_t)lim));
  }
  gval *v = push(G, kiln_constant(G->g, "c", dt, s->rank, s->dims, data).id, lim, true, dt);
  free(data);
  return v;
}

static int32_t scalar(gen *G, kiln_dtype dt, double x) { return kiln_scalar(G->g, dt, x).id; }

/* min(max(x, -c), c): keeps magnitudes (and so integer overflow and float range) bounded. */
static gval *clamp(gen *G, gval *x, double c) {
  if (x->bound <= c) return x;
  kiln_dtype dt = dt_of(G, x);
  if (dt == KILN_BOOL) return x;
  gval xv = *x;
  int32_t lo = kiln_ir_binary(G->g, KILN_OP_max, xv.id, scalar(G, dt, -c), "clamp.lo");
  return push(G, kiln_ir_binary(G->g, KILN_OP_min, lo, scalar(G, dt, c), "clamp.hi"), c, xv.exact, xv.weak);
}

static gval *cast_to(gen *G, gval *x, kiln_dtype to) {
  if (dt_of(G, x) == to) return x;
  gval xv = *x;
  kiln_dtype from = dt_of(G, &xv);
  bool exact = xv.exact;
  kiln_dtype weak = xv.weak;
  if (kiln_dtype_is_float(to)) {
    if (!xv.exact) weak = weaker(weak, to);
  } else if (kiln_dtype_is_float(from) && !xv.exact) {
    return NULL; /* a float->int/bool cast of an inexact value has no single right answer */
  }
  double b = to == KILN_BOOL ? 1 : xv.bound;
  if (!kiln_dtype_is_float(to) && kiln_dtype_is_float(from)) b = floor(b);
  return push(G, kiln_cast(G->g, (kiln_value){xv.id}, to).id, b, exact, weak);
}

/* ------------------------------------------------------------------ broadcasting partners */
static bool bcast_shape(const kiln_shape *a, const kiln_shape *b, kiln_shape *out) {
  int r = a->rank > b->rank ? a->rank : b->rank;
  out->rank = r;
  for (int i = 0; i < r; i++) {
    int64_t da = i < r - a->rank ? 1 : a->dims[i - (r - a->rank)];
    int64_t db = i < r - b->rank ? 1 : b->dims[i - (r - b->rank)];
    if (da != db && da != 1 && db != 1) return false;
    out->dims[i] = da > db ? da : db;
  }
  return kiln_shape_numel(out) <= E2E_MAX_NUMEL;
}

static bool partner_ok(gen *G, const gval *v) {
  kiln_shape o;
  return bcast_shape(G->partner_of, sh_of(G, v), &o) && dt_of(G, v) != KILN_BOOL;
}

/* A value that broadcasts against x: one from the pool, x reduced with keepdims (the
 * softmax pattern), or a constant of a compatible shape. */
static gval *partner(gen *G, gval *x) {
  const kiln_shape *s = sh_of(G, x);
  int how = (int)e2e_int(G->r, 0, 9);
  if (how < 5) {
    G->partner_of = s;
    gval *p = pick_where(G, partner_ok);
    if (p) return p;
  }
  if (how < 7 && s->rank > 0 && dt_of(G, x) != KILN_BOOL) {
    int32_t axes[KILN_MAX_RANK], na = 0;
    for (int d = 0; d < s->rank; d++)
      if (e2e_chance(G->r, 0.5)) axes[na++] = d;
    if (na == 0) axes[na++] = (int32_t)e2e_int(G->r, 0, s->rank - 1);
    gval xv = *x;
    kiln_op op = e2e_chance(G->r, 0.5) ? KILN_OP_reduce_max : KILN_OP_reduce_min;
    return push(G, kiln_ir_reduce(G->g, op, xv.id, na, axes, 1, "partner.reduce"), xv.bound, xv.exact, xv.weak);
  }
  kiln_shape c = {.rank = (int32_t)e2e_int(G->r, 0, s->rank)};
  for (int d = 0; d < c.rank; d++) c.dims[d] = e2e_chance(G->r, 0.3) ? 1 : s->dims[s->rank - c.rank + d];
  kiln_dtype dt = dt_of(G, x) == KILN_BOOL ? KILN_F32 : dt_of(G, x);
  return make_const(G, dt, &c, 4);
}

/* x and y in a common dtype (x's). NULL when y cannot be cast exactly enough. */
static gval *same_dtype(gen *G, gval *x, gval *y) { return cast_to(G, y, dt_of(G, x)); }

/* ------------------------------------------------------------------ elementwise */
static gval *gen_unary(gen *G, gval *x) {
  kiln_dtype dt = dt_of(G, x);
  if (dt == KILN_BOOL) {
    gval xv = *x;
    return push(G, kiln_ir_unary(G->g, KILN_OP_not, xv.id, "not"), 1, true, dt);
  }
  int which = (int)e2e_int(G->r, 0, kiln_dtype_is_float(dt) ? 16 : 3);
  gval xv = *x;
  kiln_dtype weak = xv.exact ? dt : xv.weak;
  switch (which) {
  case 0: return push(G, kiln_neg(G->g, (kiln_value){xv.id}).id, xv.bound, xv.exact, xv.weak);
  case 1: return push(G, kiln_ir_unary(G->g, KILN_OP_abs, xv.id, "abs"), xv.bound, xv.exact, xv.weak);
  case 2: return push(G, kiln_relu(G->g, (kiln_value){xv.id}).id, xv.bound, xv.exact, xv.weak);
  case 3:
    if (kiln_dtype_is_float(dt) && !xv.exact) return NULL;
    return push(G, kiln_ir_unary(G->g, KILN_OP_sign, xv.id, "sign"), 1, xv.exact, xv.weak);
  }
  /* float math from here on */
  if (which >= 12 && !xv.exact) which = 4 + which % 8; /* floor/ceil/round need exact input */
  gval *c = (which == 4 || which == 10 || which == 11) ? clamp(G, x, 8) : x;
  if (!c) return NULL;
  gval cv = *c;
  int32_t id = cv.id, ab, one = -1;
  switch (which) {
  case 4: return push(G, kiln_exp(G->g, (kiln_value){id}).id, exp(cv.bound), false, weak);
  case 5:
    ab = kiln_ir_unary(G->g, KILN_OP_abs, id, "abs");
    one = scalar(G, dt, 1);
    return push(G, kiln_log(G->g, (kiln_value){kiln_ir_binary(G->g, KILN_OP_add, ab, one, "add1")}).id,
                log(cv.bound + 1), false, weak);
  case 6:
    ab = kiln_ir_unary(G->g, KILN_OP_abs, id, "abs");
    /* sqrt is steep at 0: only an exact operand may get there */
    if (!cv.exact) ab = kiln_ir_binary(G->g, KILN_OP_add, ab, scalar(G, dt, 1), "add1");
    return push(G, kiln_sqrt(G->g, (kiln_value){ab}).id, sqrt(cv.bound + 1), false, weak);
  case 7:
    ab = kiln_ir_binary(G->g, KILN_OP_add, kiln_ir_unary(G->g, KILN_OP_abs, id, "abs"), scalar(G, dt, 1), "add1");
    return push(G, kiln_ir_unary(G->g, e2e_chance(G->r, 0.5) ? KILN_OP_rsqrt : KILN_OP_recip, ab, "inv"), 1, false,
                weak);
  case 8: return push(G, kiln_tanh(G->g, (kiln_value){id}).id, 1, false, weak);
  case 9: return push(G, kiln_sigmoid(G->g, (kiln_value){id}).id, 1, false, weak);
  case 10: return push(G, kiln_erf(G->g, (kiln_value){id}).id, 1, false, weak);
  case 11:
    return push(G, kiln_ir_unary(G->g, e2e_chance(G->r, 0.5) ? KILN_OP_sin : KILN_OP_cos, id, "trig"), 1, false,
                weak);
  case 12: return push(G, kiln_ir_unary(G->g, KILN_OP_floor, id, "floor"), cv.bound + 1, true, dt);
  case 13: return push(G, kiln_ir_unary(G->g, KILN_OP_ceil, id, "ceil"), cv.bound + 1, true, dt);
  case 14: return push(G, kiln_ir_unary(G->g, KILN_OP_round, id, "round"), cv.bound + 1, true, dt);
  case 15: return push(G, kiln_ir_unary(G->g, KILN_OP_isnan, id, "isnan"), 1, true, KILN_BOOL);
  default: return push(G, kiln_ir_unary(G->g, KILN_OP_sign, id, "sign"), 1, true, dt);
  }
}

static gval *gen_binary(gen *G, gval *x) {
  if (dt_of(G, x) == KILN_BOOL) {
    gval xv = *x;
    gval *y = pick(G);
    kiln_shape o;
    if (dt_of(G, y) != KILN_BOOL || !bcast_shape(sh_of(G, &xv), sh_of(G, y), &o)) return NULL;
    static const kiln_op lops[] = {KILN_OP_and, KILN_OP_or, KILN_OP_xor};
    return push(G, kiln_ir_binary(G->g, lops[e2e_int(G->r, 0, 2)], xv.id, y->id, "logic"), 1, true, KILN_BOOL);
  }
  gval *y = partner(G, x);
  if (!y) return NULL;
  y = same_dtype(G, x, y);
  if (!y) return NULL;
  kiln_dtype dt = dt_of(G, x);
  bool isf = kiln_dtype_is_float(dt);
  /* re-read x: partner() may have grown the pool (pointers stay valid, values do too) */
  gval xv = *x, yv = *y;
  bool ex = xv.exact && yv.exact;
  kiln_dtype weak = weaker(xv.exact ? dt : xv.weak, yv.exact ? dt : yv.weak);
  if (!ex) weak = weaker(weak, dt);
  int which = (int)e2e_int(G->r, 0, 8);
  switch (which) {
  case 0: case 1: {
    kiln_op op = which == 0 ? KILN_OP_add : KILN_OP_sub;
    return push(G, kiln_ir_binary(G->g, op, xv.id, yv.id, which ? "sub" : "add"), xv.bound + yv.bound, ex, weak);
  }
  case 2: {
    gval *a = clamp(G, x, isf ? 100 : 1000), *b = a ? clamp(G, y, isf ? 100 : 1000) : NULL;
    if (!b) return NULL;
    gval av = *a, bv = *b;
    return push(G, kiln_mul(G->g, (kiln_value){av.id}, (kiln_value){bv.id}).id, av.bound * bv.bound,
                !isf && ex, weak);
  }
  case 3: case 4: { /* a / (|b| + 1), sometimes negated: truncation and sign conventions */
    int32_t den = kiln_ir_binary(G->g, KILN_OP_add, kiln_ir_unary(G->g, KILN_OP_abs, yv.id, "abs"),
                                 scalar(G, dt, 1), "add1");
    if (e2e_chance(G->r, 0.3)) den = kiln_ir_unary(G->g, KILN_OP_neg, den, "neg");
    if (which == 4 && (!isf || ex)) /* float mod is discontinuous: exact operands only */
      return push(G, kiln_ir_mod(G->g, xv.id, den, (int)e2e_int(G->r, 0, 1), "mod"), yv.bound + 1, ex, weak);
    return push(G, kiln_div(G->g, (kiln_value){xv.id}, (kiln_value){den}).id, xv.bound, !isf && ex, weak);
  }
  case 5: return push(G, kiln_max(G->g, (kiln_value){xv.id}, (kiln_value){yv.id}).id,
                      fmax(xv.bound, yv.bound), ex, weak);
  case 6: return push(G, kiln_min(G->g, (kiln_value){xv.id}, (kiln_value){yv.id}).id,
                      fmax(xv.bound, yv.bound), ex, weak);
  case 7: { /* compare: exact operands only */
    if (!ex) return NULL;
    static const kiln_op cops[] = {KILN_OP_eq, KILN_OP_ne, KILN_OP_lt, KILN_OP_le, KILN_OP_gt, KILN_OP_ge};
    return push(G, kiln_ir_binary(G->g, cops[e2e_int(G->r, 0, 5)], xv.id, yv.id, "cmp"), 1, true, KILN_BOOL);
  }
  default: { /* pow */
    if (isf) { /* (sigmoid(a) + 0.5) ^ clamp(b, 3): base in [0.5, 1.5] */
      int32_t base = kiln_ir_binary(G->g, KILN_OP_add, kiln_ir_unary(G->g, KILN_OP_sigmoid, xv.id, "sig"),
                                    scalar(G, dt, 0.5), "add.5");
      gval *e = clamp(G, y, 3);
      if (!e) return NULL;
      if (e2e_chance(G->r, 0.3)) /* x^2: the pattern simplify may rewrite */
        return push(G, kiln_pow(G->g, (kiln_value){base}, (kiln_value){scalar(G, dt, 2)}).id, 2.25, false, weak);
      return push(G, kiln_pow(G->g, (kiln_value){base}, (kiln_value){e->id}).id, 3.4, false, weak);
    }
    gval *b = clamp(G, x, 10);
    if (!b) return NULL;
    int e = (int)e2e_int(G->r, 0, 3);
    return push(G, kiln_pow(G->g, (kiln_value){b->id}, (kiln_value){scalar(G, dt, e)}).id,
                pow(fmax(b->bound, 1), e), true, dt);
  }
  }
}

static bool is_bool_v(gen *G, const gval *v) { return dt_of(G, v) == KILN_BOOL; }

static gval *gen_select(gen *G, gval *x) {
  if (dt_of(G, x) == KILN_BOOL) return NULL;
  gval *c = pick_where(G, is_bool_v);
  if (!c) return NULL;
  gval cv = *c;
  gval *y = partner(G, x);
  if (!y || !(y = same_dtype(G, x, y))) return NULL;
  gval xv = *x, yv = *y;
  kiln_shape o1, o2;
  if (!bcast_shape(sh_of(G, &xv), sh_of(G, &yv), &o1) || !bcast_shape(&o1, sh_of(G, &cv), &o2)) return NULL;
  kiln_dtype dt = dt_of(G, &xv);
  bool ex = xv.exact && yv.exact;
  kiln_dtype weak = weaker(xv.exact ? dt : xv.weak, yv.exact ? dt : yv.weak);
  return push(G, kiln_where(G->g, (kiln_value){cv.id}, (kiln_value){xv.id}, (kiln_value){yv.id}).id,
              fmax(xv.bound, yv.bound), ex, weak);
}

static gval *gen_cast(gen *G, gval *x) {
  static const kiln_dtype to[] = {KILN_F32, KILN_I32, KILN_I64, KILN_BOOL, KILN_F16, KILN_BF16, KILN_F64};
  kiln_dtype t = to[e2e_int(G->r, 0, 6)];
  if (!kiln_dtype_is_float(t) && kiln_dtype_is_float(dt_of(G, x)) && !x->exact) return NULL;
  /* f16/bf16 cannot hold large magnitudes */
  if ((t == KILN_F16 || t == KILN_BF16) && x->bound > 1000) x = clamp(G, x, 1000);
  if (t == KILN_I32 && x && x->bound > 1e9) x = clamp(G, x, 1e6);
  return x ? cast_to(G, x, t) : NULL;
}

/* ------------------------------------------------------------------ movement */
static gval *keep(gen *G, gval *x, int32_t id) {
  gval xv = *x;
  return push(G, id, xv.bound, xv.exact, xv.weak);
}

static gval *gen_reshape(gen *G, gval *x) {
  const kiln_shape *s = sh_of(G, x);
  int64_t n = kiln_shape_numel(s);
  int64_t f[32];
  int nf = 0;
  for (int64_t m = n, p = 2; m > 1 && nf < 32;) {
    if (m % p == 0) f[nf++] = p, m /= p;
    else p++;
  }
  kiln_shape o = {.rank = (int32_t)e2e_int(G->r, nf ? 1 : 0, 4)};
  for (int d = 0; d < o.rank; d++) o.dims[d] = 1;
  for (int i = 0; i < nf; i++) o.dims[e2e_int(G->r, 0, o.rank - 1)] *= f[i];
  return keep(G, x, kiln_reshape(G->g, (kiln_value){x->id}, o.rank, o.dims).id);
}

static gval *gen_permute(gen *G, gval *x) {
  int r = sh_of(G, x)->rank;
  int32_t p[KILN_MAX_RANK];
  for (int i = 0; i < r; i++) p[i] = i;
  for (int i = r - 1; i > 0; i--) {
    int j = (int)e2e_int(G->r, 0, i);
    int32_t t = p[i];
    p[i] = p[j], p[j] = t;
  }
  return keep(G, x, kiln_transpose(G->g, (kiln_value){x->id}, p).id);
}

static gval *gen_broadcast(gen *G, gval *x) {
  const kiln_shape *s = sh_of(G, x);
  kiln_shape o = {.rank = (int32_t)e2e_int(G->r, s->rank, 4)};
  int lead = o.rank - s->rank;
  for (int d = 0; d < o.rank; d++) {
    int64_t in = d < lead ? 1 : s->dims[d - lead];
    o.dims[d] = in == 1 ? e2e_int(G->r, 1, 5) : in;
  }
  if (kiln_shape_numel(&o) > E2E_MAX_NUMEL) return NULL;
  return keep(G, x, kiln_ir_broadcast(G->g, x->id, &o, "broadcast"));
}

static gval *gen_slice(gen *G, gval *x) {
  const kiln_shape *s = sh_of(G, x);
  int64_t st[KILN_MAX_RANK], sp[KILN_MAX_RANK], cnt[KILN_MAX_RANK];
  for (int d = 0; d < s->rank; d++) {
    int64_t n = s->dims[d];
    static const int64_t steps[] = {1, 1, 2, 3, -1, -1, -2};
    sp[d] = steps[e2e_int(G->r, 0, 6)];
    st[d] = e2e_int(G->r, 0, n - 1);
    int64_t room = sp[d] > 0 ? (n - 1 - st[d]) / sp[d] + 1 : st[d] / -sp[d] + 1;
    cnt[d] = e2e_int(G->r, 1, room);
  }
  return keep(G, x, kiln_ir_slice(G->g, x->id, st, sp, cnt, "slice"));
}

static gval *gen_pad(gen *G, gval *x) {
  const kiln_shape *s = sh_of(G, x);
  int64_t lo[KILN_MAX_RANK], hi[KILN_MAX_RANK], numel = 1;
  for (int d = 0; d < s->rank; d++) {
    lo[d] = e2e_int(G->r, s->dims[d] > 1 ? -1 : 0, 2);
    hi[d] = e2e_int(G->r, s->dims[d] + lo[d] > 1 ? -1 : 0, 2);
    numel *= s->dims[d] + lo[d] + hi[d];
  }
  if (numel > E2E_MAX_NUMEL) return NULL;
  kiln_dtype dt = dt_of(G, x);
  double val = dt == KILN_BOOL ? 1 : (double)e2e_int(G->r, -8, 8) / (kiln_dtype_is_float(dt) ? 4 : 1);
  gval xv = *x;
  return push(G, kiln_ir_pad(G->g, xv.id, lo, hi, val, "pad"), fmax(xv.bound, 2), xv.exact, xv.weak);
}

static gval *gen_concat(gen *G, gval *x) {
  const kiln_shape *s = sh_of(G, x);
  if (s->rank == 0) return NULL;
  int32_t axis = (int32_t)e2e_int(G->r, 0, s->rank - 1);
  gval xv = *x;
  kiln_value parts[3] = {{xv.id}};
  int np = 1;
  double b = xv.bound;
  bool ex = xv.exact;
  kiln_dtype weak = xv.weak;
  int want = (int)e2e_int(G->r, 2, 3);
  for (int i = 1; i < want; i++) {
    /* another value of the same shape but the axis: from the pool, or a slice of x */
    gval *y = NULL;
    for (int t = 0; t < 8 && !y; t++) {
      gval *c = pick(G);
      const kiln_shape *cs = sh_of(G, c);
      bool ok = cs->rank == s->rank && c->id != xv.id;
      for (int d = 0; ok && d < s->rank; d++) ok = d == axis || cs->dims[d] == s->dims[d];
      if (ok) y = c;
    }
    if (!y) {
      int64_t st[KILN_MAX_RANK] = {0}, sp[KILN_MAX_RANK], cnt[KILN_MAX_RANK];
      for (int d = 0; d < s->rank; d++) sp[d] = 1, cnt[d] = s->dims[d];
      cnt[axis] = e2e_int(G->r, 1, s->dims[axis]);
      st[axis] = s->dims[axis] - cnt[axis];
      y = keep(G, x, kiln_ir_slice(G->g, xv.id, st, sp, cnt, "concat.slice"));
      s = sh_of(G, &xv);
    }
    if (!y || !(y = cast_to(G, y, dt_of(G, &xv)))) return NULL;
    s = sh_of(G, &xv);
    parts[np++] = (kiln_value){y->id};
    b = fmax(b, y->bound);
    ex = ex && y->exact;
    weak = weaker(weak, y->weak); /* push() keeps weak = dtype for exact values */
  }
  kiln_shape o = *s;
  o.dims[axis] = 0;
  for (int i = 0; i < np; i++) o.dims[axis] += G->g->nodes[parts[i].id].shape.dims[axis];
  if (kiln_shape_numel(&o) > E2E_MAX_NUMEL) return NULL;
  return push(G, kiln_concat(G->g, np, parts, axis).id, b, ex, weak);
}

static gval *gen_reverse(gen *G, gval *x) {
  const kiln_shape *s = sh_of(G, x);
  int32_t axes[KILN_MAX_RANK], na = 0;
  for (int d = 0; d < s->rank; d++)
    if (e2e_chance(G->r, 0.5)) axes[na++] = d;
  return keep(G, x, kiln_ir_reverse(G->g, x->id, na, axes, "reverse"));
}

/* Constant indices in [-n, n) of a random index dtype. */
static int32_t index_const(gen *G, const kiln_shape *s, int64_t n) {
  kiln_dtype dt = e2e_chance(G->r, 0.5) ? KILN_I32 : KILN_I64;
  int64_t cnt = kiln_shape_numel(s);
  void *data = calloc((size_t)cnt * 8 + 1, 1);
  for (int64_t i = 0; i < cnt; i++) kiln_rt_set_i64(dt, data, i, e2e_int(G->r, -n, n - 1));
  int32_t id = kiln_constant(G->g, "idx", dt, s->rank, s->dims, data).id;
  free(data);
  return id;
}

static gval *gen_gather(gen *G, gval *x) {
  kiln_shape s = *sh_of(G, x);
  if (s.rank == 0) return NULL;
  int32_t axis = (int32_t)e2e_int(G->r, 0, s.rank - 1);
  gval xv = *x;
  if (e2e_chance(G->r, 0.6)) {
    kiln_shape is = {.rank = (int32_t)e2e_int(G->r, 0, 2)};
    if (s.rank - 1 + is.rank > 4) is.rank = 4 - (s.rank - 1);
    for (int d = 0; d < is.rank; d++) is.dims[d] = e2e_int(G->r, 1, 4);
    if (kiln_shape_numel(&s) / s.dims[axis] * kiln_shape_numel(&is) > E2E_MAX_NUMEL) return NULL;
    int32_t idx = index_const(G, &is, s.dims[axis]);
    return keep(G, &xv, kiln_ir_gather(G->g, xv.id, idx, axis, "gather"));
  }
  kiln_shape is = s;
  for (int d = 0; d < s.rank; d++) is.dims[d] = d == axis ? e2e_int(G->r, 1, 5) : e2e_int(G->r, 1, s.dims[d]);
  int32_t idx = index_const(G, &is, s.dims[axis]);
  return keep(G, &xv, kiln_ir_gather_elements(G->g, xv.id, idx, axis, "gather_elements"));
}

static gval *gen_iota(gen *G) {
  kiln_shape s = random_shape(G->r, 1, 4);
  static const kiln_dtype ts[] = {KILN_I32, KILN_I64, KILN_F32};
  double b = 0;
  for (int d = 0; d < s.rank; d++) b = fmax(b, (double)s.dims[d]);
  return push(G, kiln_ir_iota(G->g, ts[e2e_int(G->r, 0, 2)], &s, (int32_t)e2e_int(G->r, 0, s.rank - 1), "iota"),
              b, true, KILN_F32);
}

/* ------------------------------------------------------------------ reductions */
static gval *gen_reduce(gen *G, gval *x) {
  const kiln_shape *s = sh_of(G, x);
  kiln_dtype dt = dt_of(G, x);
  gval xv = *x;
  int keepdims = (int)e2e_int(G->r, 0, 1);
  if (dt != KILN_BOOL && s->rank > 0 && xv.exact && e2e_chance(G->r, 0.25)) {
    kiln_op op = e2e_chance(G->r, 0.5) ? KILN_OP_argmax : KILN_OP_argmin;
    int32_t axis = (int32_t)e2e_int(G->r, 0, s->rank - 1);
    return push(G, kiln_ir_arg(G->g, op, xv.id, axis, keepdims, (int)e2e_int(G->r, 0, 1), "arg"),
                (double)s->dims[axis], true, KILN_I64);
  }
  int32_t axes[KILN_MAX_RANK], na = 0;
  int64_t n = 1;
  for (int d = 0; d < s->rank; d++)
    if (e2e_chance(G->r, 0.5)) axes[na++] = d, n *= s->dims[d];
  kiln_op op = (kiln_op)(KILN_OP_reduce_sum + e2e_int(G->r, 0, 3));
  if (dt == KILN_BOOL && (op == KILN_OP_reduce_sum || op == KILN_OP_reduce_prod)) op = KILN_OP_reduce_max;
  double b = xv.bound;
  bool ex = xv.exact;
  if (op == KILN_OP_reduce_sum) {
    b = xv.bound * (double)n;
  } else if (op == KILN_OP_reduce_prod) {
    gval *c = clamp(G, x, kiln_dtype_is_float(dt) ? 1.5 : 2);
    if (!c) return NULL;
    xv = *c;
    b = pow(fmax(xv.bound, 1), (double)n);
    if (b > 1e6) return NULL;
    if (kiln_dtype_is_float(dt)) ex = false;
  }
  kiln_dtype weak = ex ? dt : weaker(xv.weak, dt);
  return push(G, kiln_ir_reduce(G->g, op, xv.id, na, axes, keepdims, "reduce"), b, ex, weak);
}

/* A value of rank 3 or 4 ([N, C, spatial...]) from x, reshaping when needed. */
static gval *as_nc(gen *G, gval *x) {
  const kiln_shape *s = sh_of(G, x);
  if (s->rank == 3 || s->rank == 4) return x;
  int64_t n = kiln_shape_numel(s);
  int64_t c = n % 2 == 0 ? 2 : 1;
  int64_t d[4] = {1, c, n / c, 1};
  int r = e2e_chance(G->r, 0.5) ? 3 : 4;
  if (r == 4 && (n / c) % 2 == 0) d[2] = n / c / 2, d[3] = 2;
  return keep(G, x, kiln_reshape(G->g, (kiln_value){x->id}, r, d).id);
}

static gval *gen_pool(gen *G, gval *x) {
  if (dt_of(G, x) == KILN_BOOL) return NULL;
  if (!(x = as_nc(G, x))) return NULL;
  gval xv = *x;
  const kiln_shape *s = sh_of(G, &xv);
  int k = s->rank - 2;
  int kind = (int)e2e_int(G->r, 0, 2);
  bool isf = kiln_dtype_is_float(dt_of(G, &xv));
  if (!isf && kind == KILN_POOL_AVG) kind = KILN_POOL_MAX;
  int64_t w[2], st[2], dl[2], lo[2], hi[2], numel = s->dims[0] * s->dims[1], win = 1;
  for (int i = 0; i < k; i++) {
    int64_t n = s->dims[2 + i];
    dl[i] = e2e_chance(G->r, 0.25) ? 2 : 1;
    w[i] = e2e_int(G->r, 1, 3);
    lo[i] = e2e_int(G->r, 0, w[i] - 1);
    hi[i] = e2e_int(G->r, 0, w[i] - 1);
    st[i] = e2e_int(G->r, 1, 3);
    int64_t span = dl[i] * (w[i] - 1) + 1;
    if (n + lo[i] + hi[i] < span) dl[i] = 1, span = w[i];
    if (n + lo[i] + hi[i] < span) w[i] = 1, span = 1;
    numel *= (n + lo[i] + hi[i] - span) / st[i] + 1;
    win *= w[i];
  }
  if (numel > E2E_MAX_NUMEL) return NULL;
  int cip = (int)e2e_int(G->r, 0, 1);
  double b = kind == KILN_POOL_SUM ? xv.bound * (double)win : xv.bound;
  bool ex = xv.exact && kind != KILN_POOL_AVG;
  kiln_dtype dt = dt_of(G, &xv);
  return push(G, kiln_ir_pool(G->g, xv.id, kind, w, st, dl, lo, hi, cip, "pool"), b, ex,
              ex ? dt : weaker(xv.exact ? dt : xv.weak, dt));
}

static bool dot_dtype_ok(kiln_dtype t) {
  return t == KILN_F32 || t == KILN_F64 || t == KILN_I32 || t == KILN_I64 || t == KILN_F16;
}

static gval *gen_dot(gen *G, gval *x) {
  kiln_dtype dt = dt_of(G, x);
  if (!dot_dtype_ok(dt)) return NULL;
  const kiln_shape *s = sh_of(G, x);
  if (s->rank < 2 || s->rank > 4) return NULL;
  gval *a = clamp(G, x, 10);
  if (!a) return NULL;
  gval av = *a;
  s = sh_of(G, &av);
  int64_t K = s->dims[s->rank - 1];
  gval *b;
  if (e2e_chance(G->r, 0.5)) { /* a @ a^T */
    int32_t p[KILN_MAX_RANK];
    for (int i = 0; i < s->rank; i++) p[i] = i;
    p[s->rank - 1] = s->rank - 2, p[s->rank - 2] = s->rank - 1;
    b = keep(G, &av, kiln_transpose(G->g, (kiln_value){av.id}, p).id);
  } else { /* a constant [K, N] or [batch..., K, N] */
    kiln_shape bs = {.rank = (int32_t)e2e_int(G->r, 2, s->rank)};
    for (int d = 0; d < bs.rank - 2; d++) bs.dims[d] = s->dims[s->rank - bs.rank + d];
    bs.dims[bs.rank - 2] = K;
    bs.dims[bs.rank - 1] = e2e_int(G->r, 1, 7);
    b = make_const(G, dt, &bs, 2);
  }
  if (!b) return NULL;
  gval bv = *b;
  bool isf = kiln_dtype_is_float(dt);
  kiln_dtype weak = weaker(av.exact ? dt : av.weak, bv.exact ? dt : bv.weak);
  return push(G, kiln_matmul(G->g, (kiln_value){av.id}, (kiln_value){bv.id}).id,
              av.bound * bv.bound * (double)K, !isf, weaker(weak, dt));
}

static gval *gen_conv(gen *G, gval *x) {
  kiln_dtype dt = dt_of(G, x);
  if (dt != KILN_F32 && dt != KILN_F64 && dt != KILN_I32) return NULL;
  if (!(x = as_nc(G, x)) || !(x = clamp(G, x, 10))) return NULL;
  gval xv = *x;
  const kiln_shape *s = sh_of(G, &xv);
  int k = s->rank - 2;
  int64_t ci = s->dims[1];
  int64_t groups = 1;
  for (int64_t gr = ci; gr >= 1; gr--)
    if (ci % gr == 0 && e2e_chance(G->r, 0.4)) {
      groups = gr;
      break;
    }
  int64_t co = groups * e2e_int(G->r, 1, 3);
  int64_t st[2], dl[2], lo[2], hi[2], numel = s->dims[0] * co;
  kiln_shape ws = {.rank = s->rank, .dims = {co, ci / groups}};
  for (int i = 0; i < k; i++) {
    int64_t n = s->dims[2 + i];
    ws.dims[2 + i] = e2e_int(G->r, 1, 3);
    dl[i] = e2e_chance(G->r, 0.25) ? 2 : 1;
    lo[i] = e2e_int(G->r, 0, 1);
    hi[i] = e2e_int(G->r, 0, 1);
    st[i] = e2e_int(G->r, 1, 2);
    int64_t span = dl[i] * (ws.dims[2 + i] - 1) + 1;
    if (n + lo[i] + hi[i] < span) dl[i] = 1, ws.dims[2 + i] = 1, span = 1;
    numel *= (n + lo[i] + hi[i] - span) / st[i] + 1;
  }
  if (numel > E2E_MAX_NUMEL) return NULL;
  gval *w = make_const(G, dt, &ws, 2);
  if (!w) return NULL;
  double taps = (double)(ci / groups) * (double)(kiln_shape_numel(&ws) / co / (ci / groups));
  bool isf = kiln_dtype_is_float(dt);
  return push(G, kiln_ir_conv(G->g, xv.id, w->id, st, dl, lo, hi, (int32_t)groups, "conv"),
              xv.bound * 2 * taps, !isf, weaker(xv.exact ? dt : xv.weak, dt));
}

static gval *gen_topk(gen *G, gval *x) {
  const kiln_shape *s = sh_of(G, x);
  if (s->rank == 0 || dt_of(G, x) == KILN_BOOL || !x->exact) return NULL;
  int32_t axis = (int32_t)e2e_int(G->r, 0, s->rank - 1);
  int64_t k = e2e_int(G->r, 1, s->dims[axis]);
  return push(G, kiln_ir_topk(G->g, x->id, k, axis, (int)e2e_int(G->r, 0, 1), "topk"), (double)s->dims[axis], true,
              KILN_I64);
}

/* ------------------------------------------------------------------ one graph */
static bool generate(gen *G, int n_steps) {
  for (int i = 0; i < G->n_inputs; i++) {
    kiln_shape s = random_shape(G->r, 0, 4);
    char name[16];
    snprintf(name, sizeof name, "x%d", i);
    if (!push(G, kiln_input(G->g, name, random_dtype(G->r), s.rank, s.dims).id, 4, true, KILN_F32)) return false;
  }
  for (int step = 0, tries = 0; step < n_steps && tries < 200; tries++) {
    if (G->n > E2E_MAX_VALS - 24) break;
    /* favour recent values so graphs are deep rather than wide */
    gval *x = e2e_chance(G->r, 0.6) ? &G->v[G->n - 1] : pick(G);
    gval *y = NULL;
    static const int conv_heavy[] = {22, 22, 22, 20, 4, 5, 0, 10};
    int pick_op = g_conv_heavy && e2e_chance(G->r, 0.5) ? conv_heavy[e2e_int(G->r, 0, 7)] : (int)e2e_int(G->r, 0, 23);
    switch (pick_op) {
    case 0: case 1: case 2: y = gen_unary(G, x); break;
    case 3: case 4: case 5: case 6: y = gen_binary(G, x); break;
    case 7: y = gen_select(G, x); break;
    case 8: y = gen_cast(G, x); break;
    case 9: y = gen_reshape(G, x); break;
    case 10: y = gen_permute(G, x); break;
    case 11: y = gen_broadcast(G, x); break;
    case 12: y = gen_slice(G, x); break;
    case 13: y = gen_pad(G, x); break;
    case 14: y = gen_concat(G, x); break;
    case 15: y = gen_reverse(G, x); break;
    case 16: y = gen_gather(G, x); break;
    case 17: y = e2e_chance(G->r, 0.3) ? gen_iota(G) : gen_unary(G, x); break;
    case 18: case 19: y = gen_reduce(G, x); break;
    case 20: y = gen_pool(G, x); break;
    case 21: y = gen_dot(G, x); break;
    case 22: y = gen_conv(G, x); break;
    default: y = gen_topk(G, x); break;
    }
    if (G->why[0]) return false;
    if (y) step++;
  }
  if (G->why[0]) return false;
  /* outputs: the last value and up to two others */
  int n_out = (int)e2e_int(G->r, 1, E2E_MAX_IO);
  for (int i = 0; i < n_out; i++) {
    const gval *o = i == 0 ? &G->v[G->n - 1] : pick(G);
    char name[16];
    snprintf(name, sizeof name, "y%d", i);
    if (kiln_output(G->g, name, (kiln_value){o->id}) != KILN_OK) {
      snprintf(G->why, sizeof G->why, "output: %.2047s", G->g->diag.msg);
      return false;
    }
  }
  return true;
}

/* The tolerance of output i: exact values bit for bit, others by their weakest dtype. */
static e2e_tol output_tol(gen *G, int32_t node) {
  for (int i = G->n - 1; i >= 0; i--)
    if (G->v[i].id == node) return G->v[i].exact ? (e2e_tol){0, 0} : e2e_tol_for(G->v[i].weak);
  return e2e_tol_for(G->g->nodes[node].dtype);
}

static const char *fusion_name(kiln_fusion_level f) {
  return f == KILN_FUSION_NONE ? "none" : f == KILN_FUSION_ELEMENTWISE ? "elementwise" : "full";
}

/* One kiln_run of exe, every output compared with ref; prints a reproducer on a mismatch. */
static bool run_and_check(kiln_context *ctx, gen *G, kiln_executable *exe, const kiln_tensor *in, int32_t ni,
                          kiln_tensor *got, const kiln_tensor *ref, int32_t no, uint64_t seed,
                          kiln_fusion_level level, int rep, const char *text) {
  for (int i = 0; i < no; i++) memset(got[i].data, 0xa5, (size_t)e2e_numel(&got[i]) * kiln_dtype_size(got[i].dtype));
  if (kiln_run(exe, in, (size_t)ni, got, (size_t)no) != KILN_OK) {
    fprintf(stderr, "e2e_random: seed %llu, fusion %s: kiln_run failed: %s\n%s\n", (unsigned long long)seed,
            fusion_name(level), kiln_last_error(ctx), text);
    return false;
  }
  for (int i = 0; i < no; i++) {
    double gv, rv;
    e2e_tol tol = output_tol(G, G->g->outputs[i].node);
    int64_t at = e2e_first_mismatch(&got[i], &ref[i], tol, &gv, &rv);
    if (at >= 0) {
      fprintf(stderr,
              "e2e_random: seed %llu, fusion %s, run %d: output %d (%s) differs from the interpreter at "
              "element %lld: got %.9g, expected %.9g (tolerance rel %g abs %g)\n"
              "  reproduce: %sKILN_FUZZ_SEED=%llu KILN_FUZZ_GRAPHS=1 %s/tests/test_e2e_random\n%s\n",
              (unsigned long long)seed, fusion_name(level), rep, i, kiln_dtype_name(ref[i].dtype), (long long)at, gv,
              rv, tol.rel, tol.abs, g_conv_heavy ? "KILN_FUZZ_CONV=1 " : "", (unsigned long long)seed,
              KILN_BINARY_DIR, text);
      return false;
    }
  }
  return true;
}

/* For a crash, the seed of the graph being run: printed by the signal handler. */
static volatile uint64_t g_current_seed;
static void on_crash(int sig) {
  char buf[96];
  int n = snprintf(buf, sizeof buf, "\ne2e_random: crashed (signal %d) on graph seed %llu\n", sig,
                   (unsigned long long)g_current_seed);
  if (write(2, buf, (size_t)n) < 0) _exit(128 + sig);
  signal(sig, SIG_DFL);
  raise(sig);
}

static uint64_t env_u64(const char *name, uint64_t def) {
  const char *s = getenv(name);
  return s && *s ? strtoull(s, NULL, 10) : def;
}

/* Builds, compiles and checks the graph of `seed`. Returns true when every fusion level
 * agrees with the interpreter; prints a reproducer otherwise. */
static bool run_graph(kiln_context *ctx, uint64_t seed) {
  g_current_seed = seed;
  e2e_rng r = {seed};
  gen *G = calloc(1, sizeof *G);
  G->r = &r;
  G->n_inputs = (int)e2e_int(&r, 1, E2E_MAX_IO);
  cr_assert(kiln_graph_create(ctx, "rnd", &G->g) == KILN_OK);
  bool ok = true;
  char *text = NULL;
  if (!generate(G, (int)e2e_int(&r, 3, 22))) {
    text = kiln_graph_to_text(ctx, G->g);
    fprintf(stderr, "e2e_random: seed %llu: the generator built an invalid graph: %s\n%s\n",
            (unsigned long long)seed, G->why, text ? text : "");
    ok = false;
    goto done;
  }
  text = kiln_graph_to_text(ctx, G->g);
  if (env_u64("KILN_FUZZ_VERBOSE", 0))
    fprintf(stderr, "e2e_random: seed %llu: %d nodes\n%s\n", (unsigned long long)seed, G->g->n_nodes, text);
  int32_t ni = kiln_graph_num_inputs(G->g), no = kiln_graph_num_outputs(G->g);
  kiln_tensor in[E2E_MAX_IO], ref[E2E_MAX_IO], got[E2E_MAX_IO];
  for (int i = 0; i < ni; i++) {
    const char *nm;
    kiln_dtype dt;
    int32_t rank;
    int64_t dims[KILN_TENSOR_MAX_RANK];
    kiln_graph_input_info(G->g, i, &nm, &dt, &rank, dims);
    e2e_tensor_alloc(&in[i], dt, rank, dims);
    e2e_fill_random(&r, &in[i]);
  }
  for (int i = 0; i < no; i++) {
    const char *nm;
    kiln_dtype dt;
    int32_t rank;
    int64_t dims[KILN_TENSOR_MAX_RANK];
    kiln_graph_output_info(G->g, i, &nm, &dt, &rank, dims);
    e2e_tensor_alloc(&ref[i], dt, rank, dims);
    e2e_tensor_alloc(&got[i], dt, rank, dims);
  }
  if (kiln_interpret(ctx, G->g, in, (size_t)ni, ref, (size_t)no) != KILN_OK) {
    fprintf(stderr, "e2e_random: seed %llu: the interpreter failed: %s\n%s\n", (unsigned long long)seed,
            kiln_last_error(ctx), text);
    ok = false;
  }
  static const kiln_fusion_level levels[] = {KILN_FUSION_NONE, KILN_FUSION_ELEMENTWISE, KILN_FUSION_FULL};
  for (int l = 0; ok && l < 3; l++) {
    kiln_compile_options co = {.fusion = levels[l]};
    kiln_executable *exe = NULL;
    if (kiln_compile(ctx, G->g, &co, &exe) != KILN_OK) {
      fprintf(stderr, "e2e_random: seed %llu, fusion %s: kiln_compile failed: %s\n%s\n", (unsigned long long)seed,
              fusion_name(levels[l]), kiln_last_error(ctx), text);
      ok = false;
      break;
    }
    /* twice: a second run must not depend on what the first left in the arena */
    for (int rep = 1; ok && rep <= 2; rep++)
      ok = run_and_check(ctx, G, exe, in, ni, got, ref, no, seed, levels[l], rep, text);
    kiln_executable_destroy(exe);
  }
  for (int i = 0; i < ni; i++) free(in[i].data);
  for (int i = 0; i < no; i++) free(ref[i].data), free(got[i].data);
done:
  kiln_free(ctx, text);
  kiln_graph_destroy(G->g);
  free(G);
  return ok;
}

/* Runs graphs shard, shard + E2E_SHARDS, ... of the configured set. */
static void run_shard(int shard) {
  signal(SIGSEGV, on_crash);
  signal(SIGABRT, on_crash);
  signal(SIGFPE, on_crash);
  signal(SIGBUS, on_crash);
  uint64_t n = env_u64("KILN_FUZZ_GRAPHS", E2E_DEFAULT_GRAPHS);
  uint64_t base = env_u64("KILN_FUZZ_SEED", E2E_DEFAULT_SEED);
  g_conv_heavy = env_u64("KILN_FUZZ_CONV", 0) != 0;
  kiln_context_options o = {.threads = 2, .cache_dir = ""};
  kiln_context *ctx;
  cr_assert(kiln_context_create(&o, &ctx) == KILN_OK);
  int failed = 0, ran = 0;
  for (uint64_t i = (uint64_t)shard; i < n; i += E2E_SHARDS, ran++)
    if (!run_graph(ctx, base + i)) failed++;
  kiln_context_destroy(ctx);
  cr_expect(failed == 0, "%d of %d random graphs (base seed %llu, shard %d) differ from the interpreter", failed,
            ran, (unsigned long long)base, shard);
}

/* Conv-heavy graphs from their own seed, in one test (KILN_FUZZ_* do not apply). */
Test(e2e_random, conv_chains) {
  kiln_context_options o = {.threads = 2, .cache_dir = ""};
  kiln_context *ctx;
  cr_assert(kiln_context_create(&o, &ctx) == KILN_OK);
  g_conv_heavy = true;
  int failed = 0;
  for (uint64_t i = 0; i < E2E_CONV_GRAPHS; i++)
    if (!run_graph(ctx, E2E_CONV_SEED + i)) failed++;
  kiln_context_destroy(ctx);
  cr_expect(failed == 0, "%d of %d conv-heavy random graphs (base seed %llu) differ from the interpreter", failed,
            E2E_CONV_GRAPHS, (unsigned long long)E2E_CONV_SEED);
}

Test(e2e_random, shard0) { run_shard(0); }
Test(e2e_random, shard1) { run_shard(1); }
Test(e2e_random, shard2) { run_shard(2); }
Test(e2e_random, shard3) { run_shard(3); }
