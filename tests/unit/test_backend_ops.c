/* test_backend_ops.c - every elementwise op of ir/ops.def at every dtype it accepts (its
 * OPERANDS column; cast from every dtype to every dtype), on every backend, against the
 * reference interpreter, in the spirit of ggml's test-backend-ops. The interpreter is the
 * oracle: the semantics are defined once (ops.def's header, runtime/interp.c) and this
 * test holds no copy of them.
 *
 * One case table, `rows` (indexed by op): the values each op is fed beside the edge values
 * every case gets (zeros of both signs, infinities, NaN, subnormals, dtype minimum and
 * maximum, halfway points, values that overflow a narrower dtype, ...; binary ops see every
 * pair of edge values) and its tolerance: exact (bit for bit, the sign of a zero
 * included) unless the row allows ulp of the result dtype or an absolute error. All cases
 * go into one graph (an input per operand, an output per case), which runs
 *   - on the interpreter (kiln_rt_interpret): the expected values;
 *   - lowered for the CPU and JIT-compiled by the LLVM backend, on a pool of 2 threads;
 *   - lowered for CUDA and rendered as CUDA C, compiled by NVRTC for sm_90 (where
 *     libnvrtc loads) and run on the host emulation (cuda_host.h);
 *   - on the GPU through the CUDA executor, where there is one.
 * and prints the largest error of each (op, dtype, backend). Integer division and modulo
 * by zero, an error of the input data, must be reported by every backend.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../codegen/llvm.h"
#include "../../codegen/llvm_impl.h" /* the step function: one kernel at a time */
#include "../../passes/passes.h"
#include "cuda_host.h"

/* ------------------------------------------------------------------ the case table */
/* Values beside the edge values, by what the op is sensitive to. */
typedef enum gen {
  G_WIDE,  /* any magnitude 2^-30 .. 2^30, either sign */
  G_EXP,   /* [-110, 90]: exp's overflow and subnormal results, sigmoid's and tanh's tails */
  G_LOG,   /* positive, every f32 exponent (subnormals included) */
  G_TRIG,  /* [-50, 50] and some large arguments */
  G_SMALL, /* [-6, 6] */
  G_POW,   /* base [-4, 4], exponent half-integers in [-10, 10] (integers: [-3, 40]) */
  G_FOLD,  /* reductions that add or multiply: small integers, halves, +-0, +-inf, NaN, so
            * that every order of the fold gives the same float (integers wrap, which no
            * order changes either) */
  G_PICK,  /* reductions that pick (max, min, argmax, argmin): ties, +-0, +-inf, NaN,
            * subnormals, the largest values */
} gen;

typedef struct op_row {
  bool present;
  gen gen;
  int ulp;        /* tolerance for f32/f64 results, in ulp of the result dtype */
  int ulp_narrow; /* ... for f16/bf16 results */
  double abs;     /* or an absolute error (0: none) */
  bool any_zero;  /* a zero result may have either sign (ops.def: reduce_max/min) */
} op_row;

#define EXACT(g) {true, g, 0, 0, 0, false}
/* Transcendental functions are within a few ulp (ops.def), not correctly rounded; f16/bf16
 * computed from an f32 within a few ulp round to within 1 ulp of the interpreter's. */
static const op_row rows[KILN_OP_COUNT] = {
    [KILN_OP_neg] = EXACT(G_WIDE),
    [KILN_OP_abs] = EXACT(G_WIDE),
    [KILN_OP_exp] = {true, G_EXP, 2, 1, 0, false},
    [KILN_OP_log] = {true, G_LOG, 2, 1, 0, false},
    [KILN_OP_sqrt] = EXACT(G_LOG),
    [KILN_OP_rsqrt] = {true, G_LOG, 2, 1, 0, false}, /* two roundings; CUDA's rsqrtf is within 2 ulp */
    [KILN_OP_recip] = EXACT(G_WIDE),
    [KILN_OP_tanh] = {true, G_SMALL, 3, 1, 0, false},
    [KILN_OP_sigmoid] = {true, G_EXP, 3, 1, 0, false},
    [KILN_OP_erf] = {true, G_SMALL, 3, 1, 4e-7, false}, /* the LLVM backend's one rational: 4e-7 (scalar.c) */
    [KILN_OP_sin] = {true, G_TRIG, 2, 1, 0, false},
    [KILN_OP_cos] = {true, G_TRIG, 2, 1, 0, false},
    [KILN_OP_floor] = EXACT(G_SMALL),
    [KILN_OP_ceil] = EXACT(G_SMALL),
    [KILN_OP_round] = EXACT(G_SMALL),
    [KILN_OP_sign] = EXACT(G_WIDE),
    [KILN_OP_not] = EXACT(G_WIDE),
    [KILN_OP_isnan] = EXACT(G_WIDE),
    [KILN_OP_atan] = {true, G_TRIG, 2, 1, 0, false},
    [KILN_OP_add] = EXACT(G_WIDE),
    [KILN_OP_sub] = EXACT(G_WIDE),
    [KILN_OP_mul] = EXACT(G_WIDE),
    [KILN_OP_div] = EXACT(G_WIDE),
    [KILN_OP_pow] = {true, G_POW, 2, 1, 0, false},
    [KILN_OP_max] = EXACT(G_WIDE),
    [KILN_OP_min] = EXACT(G_WIDE),
    [KILN_OP_mod] = EXACT(G_WIDE),
    [KILN_OP_and] = EXACT(G_WIDE),
    [KILN_OP_or] = EXACT(G_WIDE),
    [KILN_OP_xor] = EXACT(G_WIDE),
    [KILN_OP_eq] = EXACT(G_SMALL),
    [KILN_OP_ne] = EXACT(G_SMALL),
    [KILN_OP_lt] = EXACT(G_SMALL),
    [KILN_OP_le] = EXACT(G_SMALL),
    [KILN_OP_gt] = EXACT(G_SMALL),
    [KILN_OP_ge] = EXACT(G_SMALL),
    [KILN_OP_select] = EXACT(G_WIDE),
    [KILN_OP_cast] = EXACT(G_WIDE),
    [KILN_OP_reduce_sum] = EXACT(G_FOLD),
    [KILN_OP_reduce_prod] = EXACT(G_FOLD),
    /* the LLVM backend's max/min folds compare with no signed zeros (render.c: vmaxps) */
    [KILN_OP_reduce_max] = {true, G_PICK, 0, 0, 0, true},
    [KILN_OP_reduce_min] = {true, G_PICK, 0, 0, 0, true},
    [KILN_OP_argmax] = EXACT(G_PICK),
    [KILN_OP_argmin] = EXACT(G_PICK),
};

/* The ops the matrix covers: every elementwise op and every reduction. */
static bool covered(int op) {
  kiln_category c = kiln_op_table[op].category;
  return c == KILN_CAT_ELEMENTWISE || c == KILN_CAT_REDUCE;
}

/* Adding an elementwise op or a reduction to ops.def must add its row here. */
Test(backend_ops, every_elementwise_op_and_reduction_has_a_case) {
  for (int op = 0; op < KILN_OP_COUNT; op++) {
    bool cov = covered(op);
    cr_expect(rows[op].present == cov, "%s: %s", kiln_op_name((kiln_op)op),
              cov ? "an elementwise op or reduction without a case in test_backend_ops.c"
                  : "a case for an op that is neither elementwise nor a reduction");
    int n_dtypes = 0;
    for (int t = 0; t < KILN_DTYPE_COUNT; t++) n_dtypes += kiln_op_accepts((kiln_op)op, (kiln_dtype)t);
    cr_expect(!cov || n_dtypes > 0, "%s accepts no dtype", kiln_op_name((kiln_op)op));
  }
}

/* ------------------------------------------------------------------ input values */
typedef struct rng {
  uint64_t s;
} rng;
static uint64_t rnext(rng *r) {
  r->s ^= r->s >> 12, r->s ^= r->s << 25, r->s ^= r->s >> 27;
  return r->s * 2685821657736338717ull;
}
static double runit(rng *r) { return (double)(rnext(r) >> 11) * 0x1p-53; } /* [0, 1) */
static double rrange(rng *r, double lo, double hi) { return lo + (hi - lo) * runit(r); }

static const double float_edges[] = {
    0.0,    -0.0,    1.0,   -1.0,    0.5,     -0.5,    1.5,     -1.5,    2.5,     -2.5,  2.0,     -2.0,   3.0,
    -7.0,   0.3,     -0.7,  1e-3,    100.0,   -100.0,  88.5,    -88.5,   89.0,    -104.0, -720.0, 710.0,  4.5,
    0.625,  300.0,   -129.7, 3e9,    -3e9,    65504.0, 65520.0, 1e30,    -1e30,   3e38,  FLT_MAX, 1e-40,  -1e-45,
    1e-310, 5e-324,  1e300, -1e300,  INFINITY, -INFINITY, NAN};
#define N_FLOAT_EDGES ((int)(sizeof float_edges / sizeof float_edges[0]))

static const int64_t int_edges[] = {0,   1,    -1,   2,     -2,         3,          -3,         5,        7,
                                    -7,  31,   40,   63,    64,         100,        -100,       127,      128,
                                    255, 256,  -129, 65535, INT32_MAX,  INT32_MIN,  INT64_MAX,  INT64_MIN,
                                    INT64_MIN + 1,   INT64_MAX - 1, (int64_t)1 << 40, -((int64_t)1 << 33)};
#define N_INT_EDGES ((int)(sizeof int_edges / sizeof int_edges[0]))

enum { N_EXTRA = 512 };

/* Number of elements of every operand of dtype t: each pair of edge values, then extras. */
static int64_t count_of(kiln_dtype t) {
  int64_t ne = kiln_dtype_is_float(t) ? N_FLOAT_EDGES : t == KILN_BOOL ? 2 : N_INT_EDGES;
  return ne * ne + N_EXTRA;
}

static double extra_float(rng *r, gen g, int operand) {
  switch (g) {
  case G_WIDE: return (rnext(r) & 1 ? -1 : 1) * ldexp(1 + runit(r), (int)rrange(r, -30, 30));
  case G_EXP: return rrange(r, -110, 90);
  case G_LOG: return ldexp(1 + runit(r), (int)rrange(r, -149, 127));
  case G_TRIG: return rnext(r) % 8 ? rrange(r, -50, 50) : rrange(r, -1e6, 1e6);
  case G_SMALL: return rrange(r, -6, 6);
  case G_POW: return operand == 0 ? rrange(r, -4, 4) : (double)((int)rrange(r, -20, 21)) / 2;
  case G_FOLD: case G_PICK: break; /* reductions: make_rows */
  }
  return 0;
}

static int64_t extra_int(rng *r, gen g, int operand) {
  if (g == G_POW && operand == 1) return (int64_t)rrange(r, -3, 41);
  if (rnext(r) & 1) return (int64_t)rrange(r, -20, 21);
  return (int64_t)rnext(r);
}

/* Operand `operand` (0 or 1) of a case of op on dtype t: every pair of edge values
 * (operand 0 the row's, operand 1 the column's), then N_EXTRA values of the row's kind.
 * n elements (count_of(t), or the values' count for select's condition); nonzero: no zero
 * (divisors of integer div/mod, whose zero is tested apart). */
static kiln_rt_tensor make_operand(kiln_dtype t, int64_t n, gen g, int operand, bool nonzero, uint64_t seed) {
  kiln_rt_tensor x = {t, kiln_shape_make(1, &n), calloc((size_t)n, 8)};
  cr_assert(x.data);
  rng r = {seed * 0x9e3779b97f4a7c15ull + 1};
  bool fl = kiln_dtype_is_float(t);
  int64_t ne = fl ? N_FLOAT_EDGES : t == KILN_BOOL ? 2 : N_INT_EDGES;
  for (int64_t i = 0; i < n; i++) {
    int64_t e = i < ne * ne ? (operand == 0 ? i / ne : i % ne) : -1;
    if (fl) kiln_rt_set_f64(t, x.data, i, e >= 0 ? float_edges[e] : extra_float(&r, g, operand));
    else if (t == KILN_BOOL) kiln_rt_set_i64(t, x.data, i, e >= 0 ? e : (int64_t)(rnext(&r) & 1));
    else kiln_rt_set_i64(t, x.data, i, e >= 0 ? int_edges[e] : extra_int(&r, g, operand));
    if (nonzero && kiln_rt_get_i64(t, x.data, i) == 0) kiln_rt_set_i64(t, x.data, i, 3);
  }
  return x;
}

/* The operand of a reduction: REDUCE_ROWS rows of REDUCE_COLS values, each drawn from the
 * generator's set (floats) or from the integer edge values (which any order of a wrapping
 * sum or product folds alike), reduced along the rows. */
enum { REDUCE_ROWS = 1024, REDUCE_COLS = 8 };
static const double fold_values[] = {0.0, -0.0, 1.0, -1.0, 2.0, -2.0, 3.0, 0.5, -0.25, INFINITY, -INFINITY, NAN};
static const double pick_values[] = {0.0, -0.0, 1.0, -1.0, 2.5, 1e30, -1e30, 1e-40, FLT_MAX, INFINITY, -INFINITY, NAN};
#define N_SET ((int)(sizeof fold_values / sizeof fold_values[0]))

static kiln_rt_tensor make_rows(kiln_dtype t, gen g, uint64_t seed) {
  int64_t dims[2] = {REDUCE_ROWS, REDUCE_COLS}, n = REDUCE_ROWS * REDUCE_COLS;
  kiln_rt_tensor x = {t, kiln_shape_make(2, dims), calloc((size_t)n, 8)};
  cr_assert(x.data);
  rng r = {seed * 0x9e3779b97f4a7c15ull + 1};
  const double *set = g == G_FOLD ? fold_values : pick_values;
  for (int64_t i = 0; i < n; i++) {
    uint64_t u = rnext(&r);
    if (kiln_dtype_is_float(t)) kiln_rt_set_f64(t, x.data, i, set[u % N_SET]);
    else if (t == KILN_BOOL) kiln_rt_set_i64(t, x.data, i, (int64_t)(u & 1));
    else kiln_rt_set_i64(t, x.data, i, int_edges[u % (g == G_PICK ? 8 : N_INT_EDGES)]); /* G_PICK: many ties */
  }
  return x;
}

/* ------------------------------------------------------------------ the graph of all cases */
typedef struct tcase {
  kiln_op op;
  int kind;
  kiln_dtype dt, out; /* operands' dtype (select: the values'), result's */
  int32_t node;
  int first_in, n_in; /* its inputs in the graph's input list */
} tcase;

enum { MAX_CASES = 512, MAX_INPUTS = 3 * MAX_CASES };

typedef struct matrix {
  kiln_graph *g;
  tcase cases[MAX_CASES];
  int n_cases;
  kiln_rt_tensor in[MAX_INPUTS];
  int n_in;
} matrix;

static int32_t add_input(matrix *m, kiln_rt_tensor t) {
  char name[32];
  snprintf(name, sizeof name, "in%d", m->n_in);
  cr_assert_lt(m->n_in, MAX_INPUTS);
  m->in[m->n_in++] = t;
  int32_t v = kiln_ir_input(m->g, name, t.dtype, &t.shape, NULL);
  cr_assert_geq(v, 0, "%s", m->g->diag.msg);
  return v;
}

/* Case op(kind) on operands of dtype dt (cast: to `to`), with nonzero divisors. */
static void add_case(matrix *m, kiln_op op, int kind, kiln_dtype dt, kiln_dtype to) {
  cr_assert_lt(m->n_cases, MAX_CASES);
  tcase *c = &m->cases[m->n_cases];
  const op_row *row = &rows[op];
  uint64_t seed = (uint64_t)m->n_cases * 131 + 7;
  c->op = op, c->kind = kind, c->dt = dt, c->first_in = m->n_in;
  bool divides = (op == KILN_OP_div || op == KILN_OP_mod) && !kiln_dtype_is_float(dt);
  int32_t a = add_input(m, make_operand(dt, count_of(dt), row->gen, 0, false, seed)), b = -1, v;
  int arity = kiln_op_table[op].arity;
  if (arity >= 2) b = add_input(m, make_operand(dt, count_of(dt), row->gen, 1, divides, seed + 1));
  char name[48];
  snprintf(name, sizeof name, "%s%s_%s", kiln_op_name(op), op == KILN_OP_mod ? (kind ? "1" : "0") : "",
           kiln_dtype_name(dt));
  if (op == KILN_OP_cast) {
    snprintf(name, sizeof name, "cast_%s_%s", kiln_dtype_name(dt), kiln_dtype_name(to));
    v = kiln_ir_cast(m->g, a, to, name);
  } else if (op == KILN_OP_select) {
    int32_t cond = add_input(m, make_operand(KILN_BOOL, count_of(dt), G_WIDE, 1, false, seed + 2));
    v = kiln_ir_select(m->g, cond, a, b, name);
  } else if (op == KILN_OP_mod) {
    v = kiln_ir_mod(m->g, a, b, kind, name);
  } else {
    v = arity == 1 ? kiln_ir_unary(m->g, op, a, name) : kiln_ir_binary(m->g, op, a, b, name);
  }
  cr_assert_geq(v, 0, "building %s: %s", name, m->g->diag.msg);
  c->node = v;
  c->out = m->g->nodes[v].dtype;
  c->n_in = m->n_in - c->first_in;
  cr_assert_geq(kiln_ir_add_output(m->g, v, name), 0);
  m->n_cases++;
}

/* Case op (argmax/argmin: kind 1 takes the last of ties) over the rows of dtype dt. */
static void add_reduce_case(matrix *m, kiln_op op, int kind, kiln_dtype dt) {
  cr_assert_lt(m->n_cases, MAX_CASES);
  tcase *c = &m->cases[m->n_cases];
  c->op = op, c->kind = kind, c->dt = dt, c->first_in = m->n_in, c->n_in = 1;
  int32_t x = add_input(m, make_rows(dt, rows[op].gen, (uint64_t)m->n_cases * 131 + 7)), axis = 1;
  char name[48];
  bool arg = kiln_op_has(op, KILN_OPF_INDEX);
  snprintf(name, sizeof name, "%s%s_%s", kiln_op_name(op), arg ? (kind ? "1" : "0") : "", kiln_dtype_name(dt));
  c->node = arg ? kiln_ir_arg(m->g, op, x, axis, 0, kind, name) : kiln_ir_reduce(m->g, op, x, 1, &axis, 0, name);
  cr_assert_geq(c->node, 0, "building %s: %s", name, m->g->diag.msg);
  c->out = m->g->nodes[c->node].dtype;
  cr_assert_geq(kiln_ir_add_output(m->g, c->node, name), 0);
  m->n_cases++;
}

/* Every elementwise op and reduction at every dtype ops.def says it accepts; cast between
 * every pair. */
static void build_matrix(matrix *m) {
  memset(m, 0, sizeof *m);
  m->g = kiln_ir_graph_create(NULL, "backend_ops");
  cr_assert(m->g);
  for (int op = 0; op < KILN_OP_COUNT; op++) {
    if (!covered(op)) continue;
    for (int t = 0; t < KILN_DTYPE_COUNT; t++) {
      if (!kiln_op_accepts((kiln_op)op, (kiln_dtype)t)) continue;
      if (kiln_op_table[op].category == KILN_CAT_REDUCE)
        for (int kind = 0; kind <= kiln_op_has((kiln_op)op, KILN_OPF_INDEX); kind++)
          add_reduce_case(m, (kiln_op)op, kind, (kiln_dtype)t);
      else if (op == KILN_OP_cast)
        for (int to = 0; to < KILN_DTYPE_COUNT; to++) add_case(m, KILN_OP_cast, 0, (kiln_dtype)t, (kiln_dtype)to);
      else
        for (int kind = 0; kind <= (op == KILN_OP_mod); kind++) add_case(m, (kiln_op)op, kind, (kiln_dtype)t, 0);
    }
  }
  kiln_diag d = {0};
  cr_assert_eq(kiln_ir_verify(m->g, &d), KILN_OK, "%s", d.msg);
}

static void free_tensors(kiln_rt_tensor *t, int n) {
  for (int i = 0; i < n; i++) free(t[i].data);
}

/* Output tensors for the graph's outputs, filled with a pattern no backend computes. */
static kiln_rt_tensor *alloc_outputs(const kiln_graph *g) {
  kiln_rt_tensor *o = calloc((size_t)g->n_outputs, sizeof *o);
  cr_assert(o);
  for (int i = 0; i < g->n_outputs; i++) {
    const kiln_node *n = &g->nodes[g->outputs[i].node];
    o[i] = (kiln_rt_tensor){n->dtype, n->shape, NULL};
    size_t nb = kiln_rt_tensor_nbytes(&o[i]);
    o[i].data = malloc(nb + 1);
    cr_assert(o[i].data);
    memset(o[i].data, 0xA5, nb + 1);
  }
  return o;
}

/* ------------------------------------------------------------------ backends */
/* g lowered for the target's backend (its own description), one kernel per case (no
 * fusion), memory planned and scheduled: what the renderers take. */
static kiln_kprogram *lower(const kiln_graph *g, kiln_target target) {
  kiln_pass_target t;
  memset(&t, 0, sizeof t);
  if (target == KILN_TARGET_CUDA) kiln_cuda_target_desc(&t.desc);
  else kiln_llvm_target_desc(NULL, NULL, &t.desc);
  t.fusion = KILN_FUSION_NONE;
  kiln_fusion_plan *plan = NULL;
  kiln_kprogram *p = NULL;
  kiln_diag d = {0};
  cr_assert_eq(kiln_pass_fuse(g, &t, &plan, &d), KILN_OK, "fuse: %s", d.msg);
  cr_assert_eq(kiln_pass_lower(g, plan, &t, &p, &d), KILN_OK, "lower: %s", d.msg);
  kiln_pass_plan_destroy(plan);
  cr_assert_eq(kiln_pass_plan_memory(p, &d), KILN_OK, "plan: %s", d.msg);
  cr_assert_eq(kiln_pass_schedule(p, &t, &d), KILN_OK, "schedule: %s", d.msg);
  return p;
}

/* The runtime ABI's buffer table of p (rt.h): inputs, outputs, constants, the arena, and
 * the error word last. Free with free(); *arena too. */
static void **buffer_table(const kiln_kprogram *p, const kiln_rt_tensor *in, kiln_rt_tensor *out, int32_t *errw,
                           unsigned char **arena) {
  void **bufs = calloc((size_t)p->n_buffers + 1, sizeof(void *));
  *arena = calloc(p->arena_bytes + 64, 1);
  cr_assert(bufs && *arena);
  for (int32_t i = 0; i < p->n_buffers; i++) {
    const kiln_buffer *b = &p->buffers[i];
    switch (b->kind) {
    case KILN_BUF_INPUT: bufs[i] = in[b->index].data; break;
    case KILN_BUF_OUTPUT: bufs[i] = out[b->index].data; break;
    case KILN_BUF_CONST: bufs[i] = p->consts[b->index].data; break;
    case KILN_BUF_ARENA: bufs[i] = *arena + b->offset; break;
    }
  }
  *errw = 0;
  bufs[p->n_buffers] = errw;
  return bufs;
}

/* The LLVM JIT: the whole program on a pool of 2 threads. Returns the error word. */
static int32_t run_llvm(const kiln_kprogram *p, const kiln_rt_tensor *in, kiln_rt_tensor *out) {
  kiln_llvm_jit *jit = NULL;
  kiln_rt_entry_fn entry = NULL;
  kiln_diag d = {0};
  cr_assert_eq(kiln_llvm_jit_compile(p, &jit, &entry, &d), KILN_OK, "LLVM: %s", d.msg);
  int32_t errw;
  unsigned char *arena;
  void **bufs = buffer_table(p, in, out, &errw, &arena);
  kiln_rt_pool *pool = kiln_rt_pool_create(NULL, 2, -1);
  cr_assert(pool);
  entry(bufs, pool);
  kiln_rt_pool_destroy(pool);
  kiln_llvm_jit_destroy(jit);
  free(bufs);
  free(arena);
  return errw;
}

/* The CUDA C of p, compiled by NVRTC for sm_90 where libnvrtc loads (false and a line
 * saying so where it does not). */
static char *render_cuda(const kiln_kprogram *p, bool *nvrtc) {
  kiln_diag d = {0};
  char *src = NULL;
  cr_assert_eq(kiln_cuda_render(p, &src, &d), KILN_OK, "CUDA render: %s", d.msg);
  *nvrtc = kiln_cuda_nvrtc_available();
  if (!*nvrtc) {
    printf("backend-ops: NVRTC compilation skipped: libnvrtc cannot be loaded\n");
    return src;
  }
  void *img = NULL;
  size_t n = 0;
  cr_assert_eq(kiln_cuda_compile(NULL, src, "sm_90", true, &img, &n, &d), KILN_OK, "NVRTC: %s", d.msg);
  free(img);
  return src;
}

/* ------------------------------------------------------------------ comparing */
/* A float element as an integer that orders like the value, -0 and +0 both 0, so that a
 * difference counts the representable values between (ulp; infinity is one past the
 * largest finite value). */
static double ordered(kiln_dtype t, const void *data, int64_t i) {
  uint64_t u, sign;
  switch (t) {
  case KILN_F32: { uint32_t w; memcpy(&w, (const char *)data + 4 * i, 4); u = w & 0x7fffffffu; sign = w >> 31; break; }
  case KILN_F64: { memcpy(&u, (const char *)data + 8 * i, 8); sign = u >> 63; u &= ~(1ull << 63); break; }
  default: { uint16_t h; memcpy(&h, (const char *)data + 2 * i, 2); u = h & 0x7fffu; sign = h >> 15; break; }
  }
  return sign ? -(double)u : (double)u;
}

static bool same_bytes(kiln_dtype t, const void *a, const void *b, int64_t i) {
  size_t es = kiln_dtype_size(t);
  return memcmp((const char *)a + es * (size_t)i, (const char *)b + es * (size_t)i, es) == 0;
}

typedef struct verdict {
  double worst; /* ulp (float results) or |difference| (integers, bool) */
  int64_t bad, first_bad;
} verdict;

/* got against want (the interpreter's) under c's tolerance. */
static verdict compare(const tcase *c, const kiln_rt_tensor *want, const kiln_rt_tensor *got) {
  verdict v = {0, 0, -1};
  const op_row *row = &rows[c->op];
  kiln_dtype t = c->out;
  bool narrow = t == KILN_F16 || t == KILN_BF16;
  int ulp = narrow ? row->ulp_narrow : row->ulp;
  bool exact = ulp == 0 && row->abs == 0;
  for (int64_t i = 0, n = kiln_shape_numel(&want->shape); i < n; i++) {
    double err;
    bool ok;
    if (kiln_dtype_is_float(t)) {
      double w = kiln_rt_get_f64(t, want->data, i), g = kiln_rt_get_f64(t, got->data, i);
      if (isnan(w) || isnan(g)) {
        ok = isnan(w) && isnan(g);
        err = ok ? 0 : INFINITY;
      } else {
        err = fabs(ordered(t, got->data, i) - ordered(t, want->data, i));
        /* exact: bit for bit, so the sign of a zero counts (unless the row says not) */
        ok = exact ? same_bytes(t, want->data, got->data, i) || (row->any_zero && w == 0 && g == 0)
                   : err <= ulp || (row->abs > 0 && isfinite(w) && fabs(g - w) <= row->abs);
      }
    } else {
      int64_t w = kiln_rt_get_i64(t, want->data, i), g = kiln_rt_get_i64(t, got->data, i);
      ok = w == g;
      err = ok ? 0 : fabs((double)g - (double)w);
    }
    if (err > v.worst) v.worst = err;
    if (!ok && v.bad++ == 0) v.first_bad = i;
  }
  return v;
}

/* Element i of a tensor of dtype t, as text. */
static void describe_value(kiln_dtype t, const void *data, int64_t i, char *out, size_t n) {
  if (kiln_dtype_is_float(t)) snprintf(out, n, "%.17g", kiln_rt_get_f64(t, data, i));
  else snprintf(out, n, "%lld", (long long)kiln_rt_get_i64(t, data, i));
}

/* The inputs of case c at element i (of a reduction: row i), for a failure message. */
static void describe_inputs(const matrix *m, const tcase *c, int64_t i, char *out, size_t n) {
  size_t at = 0;
  bool red = kiln_op_table[c->op].category == KILN_CAT_REDUCE;
  int64_t first = red ? i * REDUCE_COLS : i, count = red ? REDUCE_COLS : 1;
  for (int k = 0; k < c->n_in && at < n; k++) {
    for (int64_t e = first; e < first + count && at < n; e++) {
      char v[40];
      describe_value(m->in[c->first_in + k].dtype, m->in[c->first_in + k].data, e, v, sizeof v);
      at += (size_t)snprintf(out + at, n - at, "%s%s", k || e > first ? ", " : "", v);
    }
  }
}

enum { B_LLVM, B_CUDA_HOST, B_GPU, N_BACKENDS };
static const char *const backend_names[N_BACKENDS] = {"llvm", "cuda-host", "gpu"};

/* Checks and prints every case on every backend that ran (got[b] NULL: did not run). */
static void check_cases(const matrix *m, const kiln_rt_tensor *want, kiln_rt_tensor *const *got) {
  printf("backend-ops: largest error per (op, dtype) and backend against the interpreter "
         "(ulp of float results, |difference| of integers; '-': did not run)\n");
  printf("%-22s %-14s", "case", "tolerance");
  for (int b = 0; b < N_BACKENDS; b++) printf(" %10s", backend_names[b]);
  printf("\n");
  int failed = 0;
  for (int k = 0; k < m->n_cases; k++) {
    const tcase *c = &m->cases[k];
    const op_row *row = &rows[c->op];
    bool narrow = c->out == KILN_F16 || c->out == KILN_BF16;
    char tol[32];
    int ulp = narrow ? row->ulp_narrow : row->ulp;
    if (kiln_dtype_is_float(c->out) && row->any_zero) snprintf(tol, sizeof tol, "exact but +-0");
    else if (!kiln_dtype_is_float(c->out) || (ulp == 0 && row->abs == 0)) snprintf(tol, sizeof tol, "exact");
    else if (row->abs > 0) snprintf(tol, sizeof tol, "%d ulp or %.0e", ulp, row->abs);
    else snprintf(tol, sizeof tol, "%d ulp", ulp);
    printf("%-22s %-14s", m->g->outputs[k].name, tol);
    for (int b = 0; b < N_BACKENDS; b++) {
      if (!got[b]) {
        printf(" %10s", "-");
        continue;
      }
      verdict v = compare(c, &want[k], &got[b][k]);
      printf(" %10.4g%s", v.worst, v.bad ? "!" : " ");
      if (v.bad) {
        char ins[320], w[40], g[40];
        describe_inputs(m, c, v.first_bad, ins, sizeof ins);
        describe_value(c->out, want[k].data, v.first_bad, w, sizeof w);
        describe_value(c->out, got[b][k].data, v.first_bad, g, sizeof g);
        cr_expect_fail("%s on %s: %lld of %lld elements wrong, the first %s(%s) = %s, the interpreter's %s",
                       m->g->outputs[k].name, backend_names[b], (long long)v.bad,
                       (long long)kiln_shape_numel(&want[k].shape), kiln_op_name(c->op), ins, g, w);
        failed++;
      }
    }
    printf("\n");
  }
  printf("backend-ops: %d cases, %d (case, backend) pairs outside their tolerance\n", m->n_cases, failed);
}

/* ------------------------------------------------------------------ the matrix */
Test(backend_ops, every_op_at_every_dtype_matches_the_interpreter_on_every_backend, .timeout = 600) {
  matrix *m = calloc(1, sizeof *m);
  cr_assert(m);
  build_matrix(m);
  const kiln_graph *g = m->g;
  kiln_diag d = {0};
  kiln_rt_tensor *want = alloc_outputs(g), *got[N_BACKENDS] = {NULL, NULL, NULL};
  cr_assert_eq(kiln_rt_interpret(g, m->in, m->n_in, want, g->n_outputs, &d), KILN_OK, "interpreter: %s", d.msg);

  kiln_kprogram *cpu = lower(g, KILN_TARGET_CPU);
  got[B_LLVM] = alloc_outputs(g);
  int32_t errw = run_llvm(cpu, m->in, got[B_LLVM]);
  cr_expect_eq(errw, 0, "LLVM: kernel %d reported invalid input data", errw - 1);
  kiln_ir_kprogram_destroy(cpu);

  kiln_kprogram *gpu = lower(g, KILN_TARGET_CUDA);
  bool nvrtc;
  char *src = render_cuda(gpu, &nvrtc);
  host_mod hm = {0};
  if (!host_build(src, &hm)) {
    printf("backend-ops: CUDA host emulation skipped: no C++ compiler\n");
  } else {
    got[B_CUDA_HOST] = alloc_outputs(g);
    unsigned char *arena;
    void **bufs = buffer_table(gpu, m->in, got[B_CUDA_HOST], &errw, &arena);
    host_run(&hm, gpu, bufs);
    cr_expect_eq(errw, 0, "CUDA host: kernel %d reported invalid input data", errw - 1);
    free(bufs);
    free(arena);
    host_free(&hm);
  }
  free(src);
  kiln_cuda_exec *ex = NULL;
  kiln_status st = kiln_cuda_exec_create(gpu, NULL, &ex, &d);
  if (st == KILN_ERR_NO_DEVICE) {
    printf("backend-ops: GPU column skipped: %s\n", d.msg);
  } else {
    cr_assert_eq(st, KILN_OK, "CUDA executor: %s", d.msg);
    got[B_GPU] = alloc_outputs(g);
    cr_assert_eq(kiln_cuda_exec_run(ex, m->in, m->n_in, got[B_GPU], g->n_outputs, &d), KILN_OK, "GPU run: %s", d.msg);
    kiln_cuda_exec_destroy(ex);
  }
  kiln_ir_kprogram_destroy(gpu);

  check_cases(m, want, got);
  for (int b = 0; b < N_BACKENDS; b++)
    if (got[b]) free_tensors(got[b], g->n_outputs), free(got[b]);
  free_tensors(want, g->n_outputs);
  free(want);
  free_tensors(m->in, m->n_in);
  kiln_ir_graph_destroy(m->g);
  free(m);
}

/* ------------------------------------------------------------------ integer division by zero */
/* x / 0 and x mod 0 on integers are an error in the input data (ops.def): the interpreter
 * refuses them, and every backend reports them through the error word, naming the node.
 * One kernel per (op, kind, dtype); each runs on its own so that each must report. */
Test(backend_ops, integer_division_by_zero_is_reported_by_every_backend, .timeout = 300) {
  matrix *m = calloc(1, sizeof *m);
  cr_assert(m);
  m->g = kiln_ir_graph_create(NULL, "divide_by_zero");
  int64_t n = 4;
  for (int t = 0; t < KILN_DTYPE_COUNT; t++) {
    if (!kiln_dtype_is_int((kiln_dtype)t)) continue;
    for (int k = 0; k < 3; k++) {
      kiln_rt_tensor a = {(kiln_dtype)t, kiln_shape_make(1, &n), calloc(4, 8)}, b = a;
      b.data = calloc(4, 8);
      for (int i = 0; i < 4; i++) kiln_rt_set_i64(a.dtype, a.data, i, 7 - 3 * i), kiln_rt_set_i64(b.dtype, b.data, i, i == 2 ? 0 : 2);
      tcase *c = &m->cases[m->n_cases];
      c->op = k ? KILN_OP_mod : KILN_OP_div, c->kind = k == 2, c->dt = c->out = (kiln_dtype)t, c->first_in = m->n_in;
      int32_t va = add_input(m, a), vb = add_input(m, b);
      char name[32];
      snprintf(name, sizeof name, "%s%s_%s", kiln_op_name(c->op), k ? (k == 2 ? "1" : "0") : "", kiln_dtype_name(t));
      c->node = k ? kiln_ir_mod(m->g, va, vb, c->kind, name) : kiln_ir_binary(m->g, KILN_OP_div, va, vb, name);
      cr_assert_geq(c->node, 0);
      cr_assert_geq(kiln_ir_add_output(m->g, c->node, name), 0);
      c->n_in = 2;
      m->n_cases++;
    }
  }
  kiln_diag d = {0};
  /* the interpreter, node by node */
  for (int k = 0; k < m->n_cases; k++) {
    const tcase *c = &m->cases[k];
    kiln_rt_tensor o = {c->out, kiln_shape_make(1, &n), calloc(4, 8)};
    memset(&d, 0, sizeof d);
    kiln_status st = kiln_rt_eval_node(m->g, &m->g->nodes[c->node], &m->in[c->first_in], &o, &d);
    cr_expect(st == KILN_ERR_INVALID_ARGUMENT && strstr(d.msg, "by zero") && strstr(d.msg, m->g->outputs[k].name),
              "interpreter on %s: status %d, %s", m->g->outputs[k].name, (int)st, d.msg);
    free(o.data);
  }
  kiln_rt_tensor *out = alloc_outputs(m->g);
  /* LLVM: each kernel alone through the step function */
  kiln_kprogram *cpu = lower(m->g, KILN_TARGET_CPU);
  cr_assert_eq(cpu->n_kernels, m->n_cases, "one kernel per case");
  kiln_llvm_jit *jit;
  kiln_rt_entry_fn entry;
  kiln_llvm_step_fn step;
  cr_assert_eq(kiln_llvm_jit_compile(cpu, &jit, &entry, &d), KILN_OK, "%s", d.msg);
  cr_assert_eq(kiln_llvm_jit_lookup_step(jit, &step, &d), KILN_OK, "%s", d.msg);
  int32_t errw;
  unsigned char *arena;
  void **bufs = buffer_table(cpu, m->in, out, &errw, &arena);
  for (int32_t k = 0; k < cpu->n_kernels; k++) {
    errw = 0;
    step(bufs, NULL, k);
    char msg[512];
    kiln_ir_kernel_error_message(cpu, errw - 1, msg, sizeof msg);
    cr_expect(errw == k + 1 && strstr(msg, "by zero") && strstr(msg, cpu->kernels[k].sources[0]),
              "LLVM kernel %d (%s): error word %d, %s", k, cpu->kernels[k].name, errw, msg);
  }
  free(bufs);
  free(arena);
  kiln_llvm_jit_destroy(jit);
  kiln_ir_kprogram_destroy(cpu);
  /* CUDA: rendered, compiled, each kernel alone on the host; the whole program on a GPU */
  kiln_kprogram *gpu = lower(m->g, KILN_TARGET_CUDA);
  bool nvrtc;
  char *src = render_cuda(gpu, &nvrtc);
  host_mod hm = {0};
  if (host_build(src, &hm)) {
    bufs = buffer_table(gpu, m->in, out, &errw, &arena);
    for (int32_t k = 0; k < gpu->n_kernels; k++) {
      errw = 0;
      host_run_kernel(&hm, gpu, bufs, k);
      cr_expect_eq(errw, k + 1, "CUDA host kernel %d (%s): error word %d", k, gpu->kernels[k].name, errw);
    }
    free(bufs);
    free(arena);
    host_free(&hm);
  } else {
    printf("backend-ops: CUDA host emulation skipped: no C++ compiler\n");
  }
  free(src);
  kiln_cuda_exec *ex = NULL;
  memset(&d, 0, sizeof d);
  kiln_status st = kiln_cuda_exec_create(gpu, NULL, &ex, &d);
  if (st == KILN_ERR_NO_DEVICE) {
    printf("backend-ops: GPU check skipped: %s\n", d.msg);
  } else {
    cr_assert_eq(st, KILN_OK, "%s", d.msg);
    memset(&d, 0, sizeof d);
    st = kiln_cuda_exec_run(ex, m->in, m->n_in, out, m->g->n_outputs, &d);
    cr_expect(st == KILN_ERR_INVALID_ARGUMENT && strstr(d.msg, "by zero"), "GPU: status %d, %s", (int)st, d.msg);
    kiln_cuda_exec_destroy(ex);
  }
  kiln_ir_kprogram_destroy(gpu);
  free_tensors(out, m->g->n_outputs);
  free(out);
  free_tensors(m->in, m->n_in);
  kiln_ir_graph_destroy(m->g);
  free(m);
}
