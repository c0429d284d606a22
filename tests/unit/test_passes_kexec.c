/* test_passes_kexec.c - the oracle check for lowering, before any backend exists: a
 * straightforward scalar evaluator of the kernel IR (LOOP kernels point by point, GEMM
 * kernels as plain loops, OPAQUE kernels through kiln_rt_opaque) runs lowered programs,
 * with ARENA buffers at their planned offsets in one arena, and compares them against
 * kiln_rt_interpret on random graphs at every fusion level, with and without the graph
 * passes. Scalar ALU ops go through kiln_rt_eval_node on rank-0 tensors, so the
 * evaluator shares the interpreter's op semantics and only tests what lowering adds:
 * index maps, masks, reductions, buffers and the memory plan. Every load is bounds
 * checked: compiled code must never read out of bounds.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../passes/passes.h"
#include "test_target.h"

/* ------------------------------------------------------------------ the evaluator */
typedef struct kval {
  kiln_dtype dt;
  _Alignas(8) unsigned char b[8];
} kval;

typedef struct kexec {
  const kiln_kprogram *p;
  const kiln_kernel *k;
  void **bufs;
  int64_t *vars;
  kval *cache;
  uint8_t *valid;
  uint64_t *dep; /* loop variables each kx depends on */
  char *err;     /* first problem found (out-of-bounds load), or "" */
  int32_t ki;    /* this kernel's index */
  int32_t *errw; /* the run's error word (runtime ABI): a failed CHECK sets it to ki + 1 */
} kexec;

static double kv_f(const kval *v) { return kiln_rt_get_f64(v->dt, v->b, 0); }
static int64_t kv_i(const kval *v) { return kiln_rt_get_i64(v->dt, v->b, 0); }
static kval kv_make_f(kiln_dtype dt, double f) {
  kval v = {dt, {0}};
  kiln_rt_set_f64(dt, v.b, 0, f);
  return v;
}
static kval kv_make_i(kiln_dtype dt, int64_t i) {
  kval v = {dt, {0}};
  kiln_rt_set_i64(dt, v.b, 0, i);
  return v;
}
static bool is_fl(kiln_dtype dt) { return kiln_dtype_is_float(dt); }

static kval eval_kx(kexec *e, int32_t id);

static kval eval_alu(kexec *e, const kiln_kx *x) {
  kval ops[3];
  kiln_rt_tensor ins[3];
  int n = 0;
  for (; n < 3 && x->a[n] >= 0; n++) {
    ops[n] = eval_kx(e, x->a[n]);
    ins[n] = (kiln_rt_tensor){ops[n].dt, {.rank = 0}, ops[n].b};
  }
  kiln_node nd;
  memset(&nd, 0, sizeof nd);
  nd.op = x->op;
  nd.dtype = x->dtype;
  nd.n_in = n;
  nd.a.kind = x->kind_attr;
  nd.name = "kx";
  kval r = {x->dtype, {0}};
  kiln_rt_tensor out = {x->dtype, {.rank = 0}, r.b};
  kiln_diag d = {0};
  kiln_status st = kiln_rt_eval_node(NULL, &nd, ins, &out, &d);
  cr_assert_eq(st, KILN_OK, "kernel %s: alu %s: %s", e->k->name, kiln_op_name(x->op), d.msg);
  return r;
}

static double lowest_f(kiln_dtype dt) { (void)dt; return -INFINITY; }
static int64_t lowest_i(kiln_dtype dt) {
  switch (dt) {
  case KILN_I8: return INT8_MIN;
  case KILN_I16: return INT16_MIN;
  case KILN_I32: return INT32_MIN;
  case KILN_U8: case KILN_BOOL: return 0;
  default: return INT64_MIN;
  }
}
static int64_t highest_i(kiln_dtype dt) {
  switch (dt) {
  case KILN_I8: return INT8_MAX;
  case KILN_I16: return INT16_MAX;
  case KILN_I32: return INT32_MAX;
  case KILN_U8: return 255;
  case KILN_BOOL: return 1;
  default: return INT64_MAX;
  }
}

static void invalidate(kexec *e, uint64_t mask) {
  for (int32_t i = 0; i < e->k->n_kx; i++)
    if (e->dep[i] & mask) e->valid[i] = 0;
}

/* Accumulates like the interpreter: floats in double, ints in int64. */
static kval eval_reduce(kexec *e, const kiln_kx *x) {
  int32_t v0 = x->var, nv = x->n_vars;
  int64_t total = 1;
  for (int32_t v = v0; v < v0 + nv; v++) total *= e->k->extent[v];
  uint64_t mask = 0;
  for (int32_t v = v0; v < v0 + nv; v++) mask |= 1ull << v;
  bool arg = x->op == KILN_OP_argmax || x->op == KILN_OP_argmin;
  kiln_dtype bdt = e->k->kx[x->a[0]].dtype;
  bool fl = is_fl(bdt);
  double af = x->op == KILN_OP_reduce_sum ? 0 : x->op == KILN_OP_reduce_prod ? 1
            : x->op == KILN_OP_reduce_max ? lowest_f(bdt) : INFINITY;
  int64_t ai = x->op == KILN_OP_reduce_sum ? 0 : x->op == KILN_OP_reduce_prod ? 1
             : x->op == KILN_OP_reduce_max ? lowest_i(bdt) : highest_i(bdt);
  double best_f = 0;
  int64_t best_i = 0, best_at = 0;
  for (int64_t t = 0; t < total; t++) {
    int64_t rem = t;
    for (int32_t v = v0 + nv - 1; v >= v0; v--) {
      e->vars[v] = rem % e->k->extent[v];
      rem /= e->k->extent[v];
    }
    invalidate(e, mask);
    kval b = eval_kx(e, x->a[0]);
    if (arg) {
      bool is_max = x->op == KILN_OP_argmax, better;
      if (fl) {
        double f = kv_f(&b);
        better = t == 0 || (is_max ? f > best_f : f < best_f) || (x->kind_attr == 1 && f == best_f);
        if (better) best_f = f, best_at = t;
      } else {
        int64_t i = kv_i(&b);
        better = t == 0 || (is_max ? i > best_i : i < best_i) || (x->kind_attr == 1 && i == best_i);
        if (better) best_i = i, best_at = t;
      }
      continue;
    }
    if (fl) {
      double f = kv_f(&b);
      switch (x->op) {
      case KILN_OP_reduce_sum: af += f; break;
      case KILN_OP_reduce_prod: af *= f; break;
      case KILN_OP_reduce_max: af = isnan(af) || isnan(f) ? NAN : f > af ? f : af; break;
      default: af = isnan(af) || isnan(f) ? NAN : f < af ? f : af; break;
      }
    } else {
      int64_t i = kv_i(&b);
      switch (x->op) {
      case KILN_OP_reduce_sum: ai = (int64_t)((uint64_t)ai + (uint64_t)i); break;
      case KILN_OP_reduce_prod: ai = (int64_t)((uint64_t)ai * (uint64_t)i); break;
      case KILN_OP_reduce_max: ai = i > ai ? i : ai; break;
      default: ai = i < ai ? i : ai; break;
      }
    }
  }
  invalidate(e, mask);
  if (arg) return kv_make_i(x->dtype, best_at);
  return fl ? kv_make_f(x->dtype, af) : kv_make_i(x->dtype, ai);
}

static kval eval_kx(kexec *e, int32_t id) {
  if (e->valid[id]) return e->cache[id];
  const kiln_kx *x = &e->k->kx[id];
  kval r = {x->dtype, {0}};
  switch (x->kind) {
  case KILN_KX_CONST: r = is_fl(x->dtype) ? kv_make_f(x->dtype, x->f) : kv_make_i(x->dtype, x->i); break;
  case KILN_KX_VAR: r = kv_make_i(KILN_I64, e->vars[x->var]); break;
  case KILN_KX_LOAD: {
    if (x->a[1] >= 0) {
      kval m = eval_kx(e, x->a[1]);
      if (!kv_i(&m)) {
        r = is_fl(x->dtype) ? kv_make_f(x->dtype, x->f) : kv_make_i(x->dtype, x->i);
        break;
      }
    }
    kval o = eval_kx(e, x->a[0]);
    int64_t off = kv_i(&o);
    const kiln_buffer *b = &e->p->buffers[x->buf];
    int64_t n = kiln_shape_numel(&b->shape);
    if (off < 0 || off >= n) {
      if (!e->err[0])
        snprintf(e->err, 256, "kernel %s: load %%%d reads b%d (%s) at %lld of %lld", e->k->name, id, x->buf,
                 b->name, (long long)off, (long long)n);
      break;
    }
    size_t es = kiln_dtype_size(b->dtype);
    memcpy(r.b, (char *)e->bufs[x->buf] + (size_t)off * es, es);
    break;
  }
  case KILN_KX_ALU: r = eval_alu(e, x); break;
  case KILN_KX_REDUCE: r = eval_reduce(e, x); break;
  case KILN_KX_CHECK: {
    kval c = eval_kx(e, x->a[0]);
    if (!kv_i(&c) && !*e->errw) *e->errw = e->ki + 1;
    r = eval_kx(e, x->a[1]);
    break;
  }
  }
  e->cache[id] = r;
  e->valid[id] = 1;
  return r;
}

static void run_loop_kernel(const kiln_kprogram *p, const kiln_kernel *k, int32_t ki, void **bufs, char *err) {
  cr_assert_leq(k->n_vars, 64);
  kexec e = {p, k, bufs, calloc((size_t)k->n_vars + 1, 8), calloc((size_t)k->n_kx, sizeof(kval)),
             calloc((size_t)k->n_kx, 1), calloc((size_t)k->n_kx, 8), err, ki, bufs[p->n_buffers]};
  for (int32_t i = 0; i < k->n_kx; i++) {
    const kiln_kx *x = &k->kx[i];
    uint64_t dm = x->kind == KILN_KX_VAR ? 1ull << x->var : 0;
    for (int j = 0; j < 3; j++)
      if (x->a[j] >= 0) dm |= e.dep[x->a[j]];
    if (x->kind == KILN_KX_REDUCE)
      for (int32_t v = x->var; v < x->var + x->n_vars; v++) dm &= ~(1ull << v);
    e.dep[i] = dm;
  }
  int64_t n = kiln_shape_numel(&k->out);
  size_t es = kiln_dtype_size(k->out_dtype);
  for (int64_t pt = 0; pt < n; pt++) {
    int64_t rem = pt;
    for (int32_t d = k->out.rank - 1; d >= 0; d--) {
      e.vars[d] = rem % k->out.dims[d];
      rem /= k->out.dims[d];
    }
    memset(e.valid, 0, (size_t)k->n_kx);
    kval r = eval_kx(&e, k->root);
    memcpy((char *)bufs[k->out_buf] + (size_t)pt * es, r.b, es);
  }
  free(e.vars), free(e.cache), free(e.valid), free(e.dep);
}

static void run_loop(const kiln_kprogram *p, int32_t ki, void **bufs, char *err) {
  run_loop_kernel(p, &p->kernels[ki], ki, bufs, err);
}

/* A GEMM kernel: with a pack sub-kernel, B is packed one (batch, column tile) at a time
 * into its scratch buffer first (A one (batch, row tile) at a time, with pack_a); the
 * epilogue runs in place once every product is done (it reads the product only at its
 * own element, so that is equivalent to per tile). */
static void run_gemm(const kiln_kprogram *p, int32_t ki, void **bufs, char *err) {
  const kiln_kernel *k = &p->kernels[ki];
  const kiln_gemm_desc *g = &k->gemm;
  kiln_dtype dt = k->out_dtype;
  int64_t b0 = g->n_batch > 0 ? g->batch[0] : 1, b1 = g->n_batch > 1 ? g->batch[1] : 1;
  bool pa = k->pack && g->pack_a, pb = k->pack && !g->pack_a;
  int64_t ext = pa ? g->m : g->n; /* the extent tiles split */
  for (int64_t i0 = 0; i0 < b0; i0++)
    for (int64_t i1 = 0; i1 < b1; i1++)
      for (int64_t t0 = 0; t0 < ext; t0 += g->tile_n ? g->tile_n : ext) {
      int64_t t1 = g->tile_n && t0 + g->tile_n < ext ? t0 + g->tile_n : ext;
      if (k->pack) {
        int64_t *par = bufs[g->param_buf];
        par[0] = i0 * b1 + i1, par[1] = t0;
        run_loop_kernel(p, k->pack, ki, bufs, err);
      }
      int64_t ao = g->a_off + i0 * (g->n_batch > 0 ? g->a_bstride[0] : 0) + i1 * (g->n_batch > 1 ? g->a_bstride[1] : 0);
      int64_t bo = g->b_off + i0 * (g->n_batch > 0 ? g->b_bstride[0] : 0) + i1 * (g->n_batch > 1 ? g->b_bstride[1] : 0);
      int64_t co = g->c_off + i0 * (g->n_batch > 0 ? g->c_bstride[0] : 0) + i1 * (g->n_batch > 1 ? g->c_bstride[1] : 0);
      for (int64_t m = pa ? t0 : 0; m < (pa ? t1 : g->m); m++)
        for (int64_t n = pb ? t0 : 0; n < (pb ? t1 : g->n); n++) {
          double s = 0;
          for (int64_t kk = 0; kk < g->k; kk++) {
            int64_t am = pa ? m - t0 : m, ab = pa ? 0 : ao;
            int64_t ai = ab + (g->trans_a ? kk * g->lda + am : am * g->lda + kk);
            int64_t bn = pb ? n - t0 : n, bb = pb ? 0 : bo;
            int64_t bi = bb + (g->trans_b ? bn * g->ldb + kk : kk * g->ldb + bn);
            s += kiln_rt_get_f64(dt, bufs[g->a_buf], ai) * kiln_rt_get_f64(dt, bufs[g->b_buf], bi);
          }
          kiln_rt_set_f64(dt, bufs[g->c_buf], co + m * g->ldc + n, s);
        }
      }
  if (k->epilogue) run_loop_kernel(p, k->epilogue, ki, bufs, err);
}

static void run_opaque(const kiln_kprogram *p, int32_t ki, void **bufs) {
  const kiln_kernel *k = &p->kernels[ki];
  kiln_rt_opaque_desc desc;
  memset(&desc, 0, sizeof desc);
  desc.op = k->op;
  desc.out_buf = k->out_buf;
  desc.out_dtype = k->out_dtype;
  desc.out_shape = k->out;
  desc.attrs = k->attrs;
  desc.n_in = k->n_in_bufs;
  for (int32_t i = 0; i < k->n_in_bufs; i++) {
    desc.in_bufs[i] = k->in_bufs[i];
    desc.in_dtypes[i] = p->buffers[k->in_bufs[i]].dtype;
    desc.in_shapes[i] = p->buffers[k->in_bufs[i]].shape;
  }
  int32_t *errw = bufs[p->n_buffers];
  if (kiln_rt_opaque(&desc, bufs) != 0 && !*errw) *errw = ki + 1;
}

/* Runs program p on inputs `in`, writing `out` (caller-allocated, graph output order).
 * The arena is poisoned first so reads of unwritten temporaries show up. Returns the
 * error word (0: no kernel found its input data invalid). */
static int32_t run_program_err(const kiln_kprogram *p, const kiln_rt_tensor *in, kiln_rt_tensor *out) {
  int32_t errw = 0;
  void **bufs = calloc((size_t)p->n_buffers + 1, sizeof(void *));
  bufs[p->n_buffers] = &errw;
  unsigned char *arena = malloc(p->arena_bytes + 64);
  memset(arena, 0xA5, p->arena_bytes + 64);
  for (int32_t i = 0; i < p->n_buffers; i++) {
    const kiln_buffer *b = &p->buffers[i];
    switch (b->kind) {
    case KILN_BUF_INPUT: bufs[i] = in[b->index].data; break;
    case KILN_BUF_OUTPUT: bufs[i] = out[b->index].data; break;
    case KILN_BUF_CONST: bufs[i] = p->consts[b->index].data; break;
    case KILN_BUF_ARENA:
      cr_assert_eq(b->offset % 64, 0);
      cr_assert_leq((size_t)b->offset + b->nbytes, p->arena_bytes, "buffer %s past the arena", b->name);
      bufs[i] = arena + b->offset;
      break;
    }
  }
  char err[256] = "";
  for (int32_t k = 0; k < p->n_kernels; k++) {
    const kiln_kernel *kn = &p->kernels[k];
    if (kn->kind == KILN_KERNEL_LOOP) run_loop(p, k, bufs, err);
    else if (kn->kind == KILN_KERNEL_GEMM) run_gemm(p, k, bufs, err);
    else run_opaque(p, k, bufs);
    cr_assert_str_empty(err, "%s", err);
  }
  free(arena);
  free(bufs);
  return errw;
}

/* Where the interpreter accepts the inputs no kernel may report an error. */
static void run_program(const kiln_kprogram *p, const kiln_rt_tensor *in, kiln_rt_tensor *out) {
  int32_t errw = run_program_err(p, in, out);
  cr_assert_eq(errw, 0, "kernel %d reported invalid input data", errw - 1);
}

/* ------------------------------------------------------------------ random graphs */
typedef struct rng { uint64_t s; } rng;
static uint64_t rnext(rng *r) {
  r->s ^= r->s >> 12, r->s ^= r->s << 25, r->s ^= r->s >> 27;
  return r->s * 2685821657736338717ull;
}
static int rint_(rng *r, int lo, int hi) { return lo + (int)(rnext(r) % (uint64_t)(hi - lo + 1)); }
/* values on a 1/4 grid: sums and products of them are exact in f32 */
static float rval(rng *r) { return (float)rint_(r, -8, 8) / 4.0f; }

enum { MAX_VALS = 256, MAX_NUMEL = 384 };

typedef struct gen {
  kiln_graph *g;
  rng r;
  int32_t vals[MAX_VALS];
  int n_vals;
} gen;

static const kiln_shape *S(gen *G, int32_t v) { return &G->g->nodes[v].shape; }

static void push(gen *G, int32_t v) {
  cr_assert_geq(v, 0, "builder: %s", G->g->diag.msg);
  if (kiln_shape_numel(S(G, v)) > MAX_NUMEL || G->n_vals >= MAX_VALS) return; /* stays dead */
  G->vals[G->n_vals++] = v;
}

static int32_t pick(gen *G) {
  if (G->n_vals > 4 && rint_(&G->r, 0, 9) < 7) return G->vals[G->n_vals - 1 - rint_(&G->r, 0, 3)];
  return G->vals[rint_(&G->r, 0, G->n_vals - 1)];
}

static int32_t rand_const(gen *G, kiln_dtype dt, const kiln_shape *shape, float lo_mag) {
  kiln_shape s0 = *shape, *s = &s0; /* shape may point into g->nodes, which appending moves */
  int64_t n = kiln_shape_numel(s);
  unsigned char *buf = malloc((size_t)(n ? n : 1) * 8);
  for (int64_t i = 0; i < n; i++) {
    double x = rval(&G->r);
    if (lo_mag > 0) x = lo_mag + fabs(x) / 2; /* in [lo_mag, lo_mag + 1] */
    kiln_rt_set_f64(dt, buf, i, x);
  }
  int32_t c = kiln_ir_constant(G->g, "c", dt, s, buf);
  free(buf);
  return c;
}

/* A shape x broadcasts to: some dims set to 1, maybe fewer leading dims. */
static kiln_shape bcast_shape(gen *G, const kiln_shape *s) {
  kiln_shape b = *s;
  int drop = s->rank > 0 ? rint_(&G->r, 0, s->rank) : 0;
  b.rank = s->rank - drop;
  for (int d = 0; d < b.rank; d++) {
    b.dims[d] = s->dims[d + drop];
    if (rint_(&G->r, 0, 1)) b.dims[d] = 1;
  }
  return b;
}

static int32_t same_shape_value(gen *G, int32_t a) {
  for (int t = 0; t < 6; t++) {
    int32_t b = G->vals[rint_(&G->r, 0, G->n_vals - 1)];
    if (b != a && kiln_shape_eq(S(G, a), S(G, b)) && G->g->nodes[b].dtype == KILN_F32) return b;
  }
  return rand_const(G, KILN_F32, S(G, a), 0);
}

/* [N, C, spatial...] view of a (reshaped when needed). */
static int32_t as_nchw(gen *G, int32_t a) {
  const kiln_shape *s = S(G, a);
  if (s->rank == 3 || s->rank == 4) return a;
  int64_t n = kiln_shape_numel(s);
  int64_t d3[3] = {1, 1, n};
  if (n % 2 == 0 && rint_(&G->r, 0, 1)) d3[1] = 2, d3[2] = n / 2;
  kiln_shape ns = kiln_shape_make(3, d3);
  return kiln_ir_reshape(G->g, a, &ns, "to_nchw");
}

static void gen_op(gen *G) {
  kiln_graph *g = G->g;
  rng *r = &G->r;
  int32_t a = pick(G);
  const kiln_shape s = *S(G, a);
  int rank = s.rank;
  switch (rint_(r, 0, 22)) {
  case 0: case 1: {
    static const kiln_op un[] = {KILN_OP_neg, KILN_OP_abs, KILN_OP_tanh, KILN_OP_sigmoid, KILN_OP_sin,
                                 KILN_OP_cos, KILN_OP_erf, KILN_OP_floor, KILN_OP_ceil, KILN_OP_round,
                                 KILN_OP_sign};
    push(G, kiln_ir_unary(g, un[rint_(r, 0, 10)], a, "u"));
    break;
  }
  case 2: push(G, kiln_ir_unary(g, KILN_OP_exp, kiln_ir_unary(g, KILN_OP_tanh, a, "t"), "e")); break;
  case 3: case 4: {
    static const kiln_op bin[] = {KILN_OP_add, KILN_OP_sub, KILN_OP_mul, KILN_OP_max, KILN_OP_min};
    push(G, kiln_ir_binary(g, bin[rint_(r, 0, 4)], a, same_shape_value(G, a), "b"));
    break;
  }
  case 5: {
    static const kiln_op bin[] = {KILN_OP_add, KILN_OP_sub, KILN_OP_mul, KILN_OP_div};
    int k = rint_(r, 0, 3);
    kiln_shape bs = bcast_shape(G, &s);
    int32_t c = rand_const(G, KILN_F32, &bs, k == 3 ? 1.0f : 0);
    push(G, rint_(r, 0, 1) || k == 3 ? kiln_ir_binary(g, bin[k], a, c, "bb") : kiln_ir_binary(g, bin[k], c, a, "bb"));
    break;
  }
  case 6: {
    int32_t b = same_shape_value(G, a);
    int32_t c = kiln_ir_binary(g, rint_(r, 0, 1) ? KILN_OP_gt : KILN_OP_le, a, b, "cmp");
    push(G, kiln_ir_select(g, c, a, kiln_ir_unary(g, KILN_OP_neg, b, "nb"), "sel"));
    break;
  }
  case 7: {
    kiln_dtype mid = rint_(r, 0, 1) ? KILN_I32 : KILN_F64;
    int32_t x = kiln_ir_binary(g, KILN_OP_mul, a, kiln_ir_scalar(g, KILN_F32, 4, "four"), "x4");
    x = kiln_ir_cast(g, x, mid, "to");
    if (mid == KILN_I32) x = kiln_ir_mod(g, x, kiln_ir_scalar(g, KILN_I32, 5, "five"), rint_(r, 0, 1), "m");
    else x = kiln_ir_unary(g, KILN_OP_tanh, x, "t64");
    push(G, kiln_ir_cast(g, x, KILN_F32, "back"));
    break;
  }
  case 8: { /* reshape to random factors */
    int64_t n = kiln_shape_numel(&s), dims[KILN_MAX_RANK];
    int nr = 0;
    while (n > 1 && nr < 5) {
      int64_t f = 1;
      for (int t = 0; t < 4; t++) {
        int64_t c = rint_(r, 2, 6);
        if (n % c == 0) { f = c; break; }
      }
      if (f == 1) f = n;
      dims[nr++] = f;
      n /= f;
      if (rint_(r, 0, 4) == 0 && nr < 5) dims[nr++] = 1;
    }
    if (n > 1) dims[nr++] = n;
    kiln_shape ns = kiln_shape_make(nr, dims);
    push(G, kiln_ir_reshape(g, a, &ns, "rs"));
    break;
  }
  case 9: {
    if (rank < 2) return;
    int32_t perm[KILN_MAX_RANK];
    for (int d = 0; d < rank; d++) perm[d] = d;
    for (int d = rank - 1; d > 0; d--) {
      int j = rint_(r, 0, d), t = perm[d];
      perm[d] = perm[j], perm[j] = t;
    }
    push(G, kiln_ir_permute(g, a, perm, "perm"));
    break;
  }
  case 10: {
    int64_t st[KILN_MAX_RANK], sp[KILN_MAX_RANK], cnt[KILN_MAX_RANK];
    for (int d = 0; d < rank; d++) {
      int64_t n = s.dims[d];
      sp[d] = (int64_t[]){1, 2, -1, -2, 1}[rint_(r, 0, 4)];
      st[d] = rint_(r, 0, (int)n - 1);
      int64_t avail = sp[d] > 0 ? (n - st[d] + sp[d] - 1) / sp[d] : st[d] / -sp[d] + 1;
      cnt[d] = rint_(r, 1, (int)avail);
    }
    push(G, kiln_ir_slice(g, a, st, sp, cnt, "slice"));
    break;
  }
  case 11: {
    int64_t lo[KILN_MAX_RANK], hi[KILN_MAX_RANK];
    for (int d = 0; d < rank; d++) {
      lo[d] = rint_(r, -1, 2), hi[d] = rint_(r, -1, 2);
      while (s.dims[d] + lo[d] + hi[d] < 1 || -lo[d] >= s.dims[d] || -hi[d] >= s.dims[d]) lo[d]++, hi[d] = hi[d] < 0 ? 0 : hi[d];
    }
    push(G, kiln_ir_pad(g, a, lo, hi, rval(r), "pad"));
    break;
  }
  case 12: {
    if (rank == 0) return;
    int ax = rint_(r, 0, rank - 1);
    int32_t xs[3] = {a, kiln_ir_unary(g, KILN_OP_neg, a, "cn"), a};
    if (s.dims[ax] > 1 && rint_(r, 0, 1)) {
      int64_t st[KILN_MAX_RANK] = {0}, sp[KILN_MAX_RANK], cnt[KILN_MAX_RANK];
      for (int d = 0; d < rank; d++) sp[d] = 1, cnt[d] = s.dims[d];
      cnt[ax] = 1;
      xs[1] = kiln_ir_slice(g, a, st, sp, cnt, "cs");
    }
    push(G, kiln_ir_concat(g, rint_(r, 2, 3), xs, ax, "cat"));
    break;
  }
  case 13: {
    if (rank == 0) return;
    int32_t axes[KILN_MAX_RANK], n = 0;
    for (int d = 0; d < rank; d++)
      if (rint_(r, 0, 1)) axes[n++] = d;
    if (n == 0) axes[n++] = rank - 1;
    push(G, kiln_ir_reverse(g, a, n, axes, "rev"));
    break;
  }
  case 14: {
    if (rank == 0) return;
    int ax = rint_(r, 0, rank - 1), q = rint_(r, 0, 2);
    int64_t idims[2] = {rint_(r, 1, 3), rint_(r, 1, 2)};
    kiln_shape is = kiln_shape_make(q, idims);
    int64_t n = kiln_shape_numel(&is), dim = s.dims[ax];
    int64_t iv[8];
    kiln_dtype idt = rint_(r, 0, 1) ? KILN_I64 : KILN_I32;
    int32_t ivv[8];
    for (int64_t i = 0; i < n; i++) iv[i] = rint_(r, -(int)dim, (int)dim - 1), ivv[i] = (int32_t)iv[i];
    int32_t ix = kiln_ir_constant(g, "idx", idt, &is, idt == KILN_I64 ? (void *)iv : (void *)ivv);
    if (rint_(r, 0, 1)) { /* computed indices: gather's index expression is fused */
      int32_t one = kiln_ir_scalar(g, idt, 0, "zero");
      ix = kiln_ir_binary(g, KILN_OP_add, ix, one, "ixc");
    }
    push(G, kiln_ir_gather(g, a, ix, ax, "gather"));
    break;
  }
  case 15: {
    if (rank == 0) return;
    int ax = rint_(r, 0, rank - 1);
    int64_t n = kiln_shape_numel(&s);
    int64_t *iv = malloc(sizeof(int64_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++) iv[i] = rint_(r, -(int)s.dims[ax], (int)s.dims[ax] - 1);
    int32_t ix = kiln_ir_constant(g, "gidx", KILN_I64, &s, iv);
    free(iv);
    push(G, kiln_ir_gather_elements(g, a, ix, ax, "gel"));
    break;
  }
  case 16: {
    if (rank == 0) return;
    int32_t io = kiln_ir_iota(g, KILN_F32, &s, rint_(r, 0, rank - 1), "iota");
    push(G, kiln_ir_binary(g, KILN_OP_add, a, io, "plus_iota"));
    break;
  }
  case 17: case 18: {
    static const kiln_op red[] = {KILN_OP_reduce_sum, KILN_OP_reduce_max, KILN_OP_reduce_min, KILN_OP_reduce_prod};
    int32_t axes[KILN_MAX_RANK], n = 0;
    for (int d = 0; d < rank; d++)
      if (rint_(r, 0, 1)) axes[n++] = d;
    kiln_op op = red[rint_(r, 0, 3)];
    int32_t x = op == KILN_OP_reduce_prod ? kiln_ir_unary(g, KILN_OP_tanh, a, "tp") : a;
    if (rint_(r, 0, 3) == 0 && rank > 0) { /* arg reductions */
      int32_t y = kiln_ir_arg(g, rint_(r, 0, 1) ? KILN_OP_argmax : KILN_OP_argmin, a, rint_(r, 0, rank - 1),
                              rint_(r, 0, 1), rint_(r, 0, 1), "arg");
      push(G, kiln_ir_cast(g, y, KILN_F32, "argf"));
      break;
    }
    push(G, kiln_ir_reduce(g, op, x, n, axes, rint_(r, 0, 1), "red"));
    break;
  }
  case 19: {
    int32_t x = as_nchw(G, a);
    const kiln_shape xs = *S(G, x);
    int sd = xs.rank - 2;
    int64_t w[2], st[2], dil[2], lo[2], hi[2];
    for (int d = 0; d < sd; d++) {
      int64_t n = xs.dims[2 + d];
      dil[d] = n >= 3 ? rint_(r, 1, 2) : 1;
      w[d] = rint_(r, 1, 3);
      st[d] = rint_(r, 1, 2);
      lo[d] = dil[d] == 1 ? rint_(r, 0, (int)w[d] - 1) : 0;
      hi[d] = dil[d] == 1 ? rint_(r, 0, (int)w[d] - 1) : 0;
      while (n + lo[d] + hi[d] < dil[d] * (w[d] - 1) + 1) w[d]--;
      if (w[d] < 1) w[d] = 1;
      if (lo[d] >= w[d]) lo[d] = w[d] - 1;
      if (hi[d] >= w[d]) hi[d] = w[d] - 1;
    }
    push(G, kiln_ir_pool(g, x, rint_(r, 0, 2), w, st, dil, lo, hi, rint_(r, 0, 1), "pool"));
    break;
  }
  case 20: {
    int32_t x = as_nchw(G, a);
    const kiln_shape xs = *S(G, x);
    int sd = xs.rank - 2;
    int64_t ci = xs.dims[1];
    int32_t groups = rint_(r, 0, 2) == 0 ? (int32_t)ci : 1;
    int64_t co = groups * rint_(r, 1, 3);
    int64_t wd[KILN_MAX_RANK] = {co, ci / groups}, st[2], dil[2], lo[2], hi[2];
    for (int d = 0; d < sd; d++) {
      int64_t n = xs.dims[2 + d];
      wd[2 + d] = rint_(r, 1, 3);
      dil[d] = rint_(r, 1, 2);
      st[d] = rint_(r, 1, 2);
      lo[d] = rint_(r, 0, 1), hi[d] = rint_(r, 0, 1);
      while (n + lo[d] + hi[d] < dil[d] * (wd[2 + d] - 1) + 1) wd[2 + d]--;
      if (wd[2 + d] < 1) wd[2 + d] = 1;
    }
    kiln_shape ws = kiln_shape_make(2 + sd, wd);
    kiln_dtype dt = (kiln_dtype[]){KILN_F32, KILN_F32, KILN_F64, KILN_I32}[rint_(r, 0, 3)];
    int32_t wc = rand_const(G, dt, &ws, 0);
    if (dt == KILN_I32) x = kiln_ir_cast(g, kiln_ir_unary(g, KILN_OP_round, x, "rnd"), dt, "xi");
    else if (dt != KILN_F32) x = kiln_ir_cast(g, x, dt, "xc");
    int32_t y = kiln_ir_conv(g, x, wc, st, dil, lo, hi, groups, "conv");
    push(G, dt == KILN_F32 ? y : kiln_ir_cast(g, y, KILN_F32, "convf"));
    break;
  }
  case 21: {
    int32_t x = a;
    if (rank < 2) {
      int64_t d2[2] = {1, kiln_shape_numel(&s)};
      kiln_shape s2 = kiln_shape_make(2, d2);
      x = kiln_ir_reshape(g, a, &s2, "row");
    }
    const kiln_shape xs = *S(G, x);
    kiln_dtype dt = (kiln_dtype[]){KILN_F32, KILN_F32, KILN_F64, KILN_I32}[rint_(r, 0, 3)];
    int32_t b;
    if (rint_(r, 0, 2) == 0) { /* x @ x^T: a computed operand */
      int32_t perm[KILN_MAX_RANK];
      for (int d = 0; d < xs.rank; d++) perm[d] = d;
      perm[xs.rank - 1] = xs.rank - 2, perm[xs.rank - 2] = xs.rank - 1;
      b = kiln_ir_permute(g, x, perm, "xT");
      if (dt != KILN_F32) b = kiln_ir_cast(g, b, dt, "bc");
    } else {
      int64_t bd[2] = {xs.dims[xs.rank - 1], rint_(r, 1, 4)};
      kiln_shape bs = kiln_shape_make(2, bd);
      b = rand_const(G, dt, &bs, 0);
    }
    if (dt != KILN_F32) x = kiln_ir_cast(g, dt == KILN_I32 ? kiln_ir_unary(g, KILN_OP_round, x, "r") : x, dt, "ac");
    if (dt == KILN_I32 && g->nodes[b].op != KILN_OP_constant) b = kiln_ir_cast(g, kiln_ir_unary(g, KILN_OP_round, kiln_ir_cast(g, b, KILN_F32, "bf"), "br"), dt, "bi");
    int32_t y = kiln_ir_matmul(g, x, b, "mm");
    push(G, dt == KILN_F32 ? y : kiln_ir_cast(g, y, KILN_F32, "mmf"));
    break;
  }
  case 22: {
    if (rank == 0) return;
    int ax = rint_(r, 0, rank - 1);
    int32_t y = kiln_ir_topk(g, a, rint_(r, 1, (int)s.dims[ax]), ax, rint_(r, 0, 1), "topk");
    push(G, kiln_ir_cast(g, y, KILN_F32, "topkf"));
    break;
  }
  }
}

typedef struct case_data {
  kiln_graph *g;
  kiln_rt_tensor in[4];
  int n_in;
} case_data;

static void make_case(case_data *c, uint64_t seed, int n_ops) {
  gen G;
  memset(&G, 0, sizeof G);
  G.r.s = seed * 0x9E3779B97F4A7C15ull + 1;
  G.g = kiln_ir_graph_create(NULL, "rand");
  c->g = G.g;
  c->n_in = rint_(&G.r, 1, 3);
  for (int i = 0; i < c->n_in; i++) {
    int64_t dims[4];
    int rank = rint_(&G.r, 1, 4);
    for (int d = 0; d < rank; d++) dims[d] = rint_(&G.r, 1, 4);
    kiln_shape s = kiln_shape_make(rank, dims);
    char nm[16];
    snprintf(nm, sizeof nm, "x%d", i);
    int32_t v = kiln_ir_input(G.g, nm, KILN_F32, &s, NULL);
    push(&G, v);
    int64_t n = kiln_shape_numel(&s);
    float *data = malloc(sizeof(float) * (size_t)n);
    for (int64_t k = 0; k < n; k++) data[k] = rval(&G.r);
    c->in[i] = (kiln_rt_tensor){KILN_F32, s, data};
  }
  for (int i = 0; i < n_ops; i++) gen_op(&G);
  cr_assert_eq(G.g->diag.status, KILN_OK, "seed %llu: %s", (unsigned long long)seed, G.g->diag.msg);
  int n_out = rint_(&G.r, 1, 3);
  kiln_ir_add_output(G.g, G.vals[G.n_vals - 1], "y0");
  for (int i = 1; i < n_out; i++) kiln_ir_add_output(G.g, pick(&G), "yi");
  if (rint_(&G.r, 0, 5) == 0) kiln_ir_add_output(G.g, G.g->inputs[0].node, "x_again");
  if (rint_(&G.r, 0, 5) == 0) kiln_ir_add_output(G.g, G.vals[G.n_vals - 1], "y0_again");
}

static void free_case(case_data *c) {
  for (int i = 0; i < c->n_in; i++) free(c->in[i].data);
  kiln_ir_graph_destroy(c->g);
}

static kiln_rt_tensor *alloc_outputs(const kiln_graph *g) {
  kiln_rt_tensor *o = calloc((size_t)g->n_outputs, sizeof *o);
  for (int i = 0; i < g->n_outputs; i++) {
    const kiln_node *n = &g->nodes[g->outputs[i].node];
    o[i] = (kiln_rt_tensor){n->dtype, n->shape, NULL};
    o[i].data = calloc((size_t)kiln_rt_tensor_nbytes(&o[i]) + 1, 1);
  }
  return o;
}

static void free_outputs(const kiln_graph *g, kiln_rt_tensor *o) {
  for (int i = 0; i < g->n_outputs; i++) free(o[i].data);
  free(o);
}

static void compare(const kiln_graph *g, const kiln_rt_tensor *want, const kiln_rt_tensor *got, const char *what) {
  for (int i = 0; i < g->n_outputs; i++) {
    int64_t n = kiln_shape_numel(&want[i].shape);
    for (int64_t k = 0; k < n; k++) {
      double a = kiln_rt_get_f64(want[i].dtype, want[i].data, k), b = kiln_rt_get_f64(got[i].dtype, got[i].data, k);
      if (isnan(a) && isnan(b)) continue;
      if (a == b) continue;
      cr_assert(fabs(a - b) <= 1e-4 + 1e-3 * fabs(a), "%s: output %d element %lld: interpreter %.9g, kernels %.9g",
                what, i, (long long)k, a, b);
    }
  }
}

static kiln_kprogram *lower_planned(const kiln_graph *g, kiln_fusion_level f) {
  kiln_pass_target t = test_cpu_target(f);
  kiln_kprogram *p = NULL;
  kiln_diag d = {0};
  cr_assert_eq(test_lower(g, &t, &p, &d), KILN_OK, "lower: %s", d.msg);
  cr_assert_eq(kiln_pass_plan_memory(p, &d), KILN_OK, "plan: %s", d.msg);
  return p;
}

static void check_case(uint64_t seed, int n_ops) {
  case_data c;
  make_case(&c, seed, n_ops);
  kiln_diag d = {0};
  cr_assert_eq(kiln_ir_verify(c.g, &d), KILN_OK, "seed %llu: %s", (unsigned long long)seed, d.msg);
  kiln_rt_tensor *want = alloc_outputs(c.g);
  kiln_status st = kiln_rt_interpret(c.g, c.in, c.n_in, want, c.g->n_outputs, &d);
  cr_assert_eq(st, KILN_OK, "seed %llu: interpreter: %s", (unsigned long long)seed, d.msg);
  char what[96];
  static const char *level[] = {"full", "elementwise", "none"};
  for (int f = KILN_FUSION_FULL; f <= KILN_FUSION_NONE; f++) {
    kiln_kprogram *p = lower_planned(c.g, (kiln_fusion_level)f);
    kiln_rt_tensor *got = alloc_outputs(c.g);
    run_program(p, c.in, got);
    if (getenv("KEXEC_STATS")) {
      int kinds[3] = {0};
      for (int32_t k = 0; k < p->n_kernels; k++) kinds[p->kernels[k].kind]++;
      fprintf(stderr, "seed %llu f%d nodes %d kernels loop %d gemm %d opaque %d arena %zu\n", (unsigned long long)seed, f,
              c.g->n_nodes, kinds[0], kinds[1], kinds[2], p->arena_bytes);
      for (int32_t k = 0; getenv("KEXEC_NAMES") && k < p->n_kernels; k++) fprintf(stderr, "K %s\n", p->kernels[k].name);
    }
    snprintf(what, sizeof what, "seed %llu, fusion %s", (unsigned long long)seed, level[f]);
    compare(c.g, want, got, what);
    free_outputs(c.g, got);
    kiln_ir_kprogram_destroy(p);
  }
  /* through the whole pipeline: the graph passes must keep the values too */
  kiln_graph *g2 = kiln_ir_graph_clone(c.g);
  kiln_pipeline_options o = {.target = test_cpu_target((kiln_fusion_level)(seed % 3)), .verify_each = true};
  kiln_kprogram *p = NULL;
  cr_assert_eq(kiln_pass_pipeline(g2, &o, &p, &d), KILN_OK, "seed %llu: pipeline: %s", (unsigned long long)seed, d.msg);
  if (getenv("KEXEC_PRINT") && strtoull(getenv("KEXEC_PRINT"), NULL, 10) == seed) { /* debugging one seed */
    kiln_ir_print(c.g, stderr, NULL);
    kiln_ir_print(g2, stderr, NULL);
  }
  kiln_rt_tensor *got = alloc_outputs(c.g);
  run_program(p, c.in, got);
  snprintf(what, sizeof what, "seed %llu, pipeline", (unsigned long long)seed);
  compare(c.g, want, got, what);
  free_outputs(c.g, got);
  kiln_ir_kprogram_destroy(p);
  kiln_ir_graph_destroy(g2);
  free_outputs(c.g, want);
  free_case(&c);
}

Test(kexec, random_graphs_match_the_interpreter) {
  /* KEXEC_SEEDS=N widens the sweep for a longer soak run. */
  uint64_t n = getenv("KEXEC_SEEDS") ? strtoull(getenv("KEXEC_SEEDS"), NULL, 10) : 300;
  for (uint64_t seed = 1; seed <= n; seed++) check_case(seed, 8 + (int)(seed % 40));
}

/* ------------------------------------------------------------------ named cases */
static void run_and_compare(kiln_graph *g, const kiln_rt_tensor *in, int n_in, kiln_fusion_level f) {
  kiln_diag d = {0};
  kiln_rt_tensor *want = alloc_outputs(g), *got = alloc_outputs(g);
  cr_assert_eq(kiln_rt_interpret(g, in, n_in, want, g->n_outputs, &d), KILN_OK, "%s", d.msg);
  kiln_kprogram *p = lower_planned(g, f);
  run_program(p, in, got);
  compare(g, want, got, "named case");
  kiln_ir_kprogram_destroy(p);
  free_outputs(g, want);
  free_outputs(g, got);
}

Test(kexec, softmax_rows) {
  kiln_graph *g = kiln_ir_graph_create(NULL, "softmax");
  int64_t dims[2] = {3, 5};
  kiln_shape s = kiln_shape_make(2, dims);
  int32_t x = kiln_ir_input(g, "x", KILN_F32, &s, NULL), ax = 1;
  int32_t m = kiln_ir_reduce(g, KILN_OP_reduce_max, x, 1, &ax, 1, "max");
  int32_t e = kiln_ir_unary(g, KILN_OP_exp, kiln_ir_binary(g, KILN_OP_sub, x, m, "sub"), "exp");
  int32_t sum = kiln_ir_reduce(g, KILN_OP_reduce_sum, e, 1, &ax, 1, "sum");
  kiln_ir_add_output(g, kiln_ir_binary(g, KILN_OP_div, e, sum, "div"), "y");
  float xv[15];
  for (int i = 0; i < 15; i++) xv[i] = (float)(i % 7) - 3.0f;
  kiln_rt_tensor in = {KILN_F32, s, xv};
  for (int f = 0; f < 3; f++) run_and_compare(g, &in, 1, (kiln_fusion_level)f);
  kiln_ir_graph_destroy(g);
}

Test(kexec, out_of_range_gather_index_is_reported_and_clamped) {
  kiln_graph *g = kiln_ir_graph_create(NULL, "gather");
  int64_t dd[1] = {4}, id[1] = {2};
  kiln_shape sd = kiln_shape_make(1, dd), si = kiln_shape_make(1, id);
  int32_t x = kiln_ir_input(g, "x", KILN_F32, &sd, NULL);
  int32_t ix = kiln_ir_input(g, "i", KILN_I64, &si, NULL);
  kiln_ir_add_output(g, kiln_ir_gather(g, kiln_ir_unary(g, KILN_OP_neg, x, "n"), ix, 0, "g"), "y");
  float xv[4] = {1, 2, 3, 4};
  int64_t iv[2] = {9, -9};
  kiln_rt_tensor in[2] = {{KILN_F32, sd, xv}, {KILN_I64, si, iv}};
  kiln_kprogram *p = lower_planned(g, KILN_FUSION_FULL);
  float out[2];
  kiln_rt_tensor o = {KILN_F32, si, out};
  /* run_program_err fails on any out-of-bounds load: the clamp keeps reads in bounds
   * while the CHECK reports the bad index through the error word */
  int32_t errw = run_program_err(p, in, &o);
  cr_expect_gt(errw, 0, "an out-of-range index must set the error word");
  int n_checks = 0;
  for (int32_t k = 0; k < p->n_kernels; k++)
    for (int32_t i = 0; p->kernels[k].kind == KILN_KERNEL_LOOP && i < p->kernels[k].n_kx; i++)
      n_checks += p->kernels[k].kx[i].kind == KILN_KX_CHECK;
  cr_expect_eq(n_checks, 1, "one CHECK for the one gather");
  if (errw > 0) {
    char msg[512];
    kiln_ir_kernel_error_message(p, errw - 1, msg, sizeof msg);
    cr_expect(strstr(msg, "gather") && strstr(msg, "'g'") && strstr(msg, "[-4, 4)"), "%s", msg);
  }
  cr_expect_eq(out[0], -4.0f, "9 clamps to 3");
  cr_expect_eq(out[1], -1.0f, "-9 wraps once to -5, then clamps to 0");
  /* in range: no error */
  iv[0] = 3, iv[1] = -4;
  cr_expect_eq(run_program_err(p, in, &o), 0);
  cr_expect_eq(out[0], -4.0f);
  cr_expect_eq(out[1], -1.0f);
  kiln_ir_kprogram_destroy(p);
  kiln_ir_graph_destroy(g);
}

/* Found by test_e2e_random: an avg pool (count_include_pad=0) whose window lies wholly in
 * the padding counted 0 positions and divided 0/0 = NaN; the interpreter's convention
 * is 0. Window 1, lo 1, stride 2 over a spatial dim of 1: output 0 reads only index -1. */
Test(kexec, avg_pool_window_wholly_in_padding_is_zero) {
  kiln_graph *g = kiln_ir_graph_create(NULL, "avgpad");
  int64_t dims[4] = {1, 1, 1, 1};
  kiln_shape s = kiln_shape_make(4, dims);
  int32_t x = kiln_ir_input(g, "x", KILN_F32, &s, NULL);
  int64_t w[2] = {1, 3}, st[2] = {2, 2}, dl[2] = {1, 1}, lo[2] = {1, 0}, hi[2] = {0, 2};
  int32_t y = kiln_ir_pool(g, x, KILN_POOL_AVG, w, st, dl, lo, hi, 0, "pool");
  kiln_ir_add_output(g, y, "y");
  cr_assert_eq(g->diag.status, KILN_OK, "%s", g->diag.msg);
  float xv[1] = {2.5f};
  kiln_rt_tensor in = {KILN_F32, s, xv};
  for (int f = 0; f < 3; f++) run_and_compare(g, &in, 1, (kiln_fusion_level)f);
  kiln_ir_graph_destroy(g);
}
