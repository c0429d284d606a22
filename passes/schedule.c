/* schedule.c - the schedule pass: how each kernel runs on its target (kiln_schedule),
 * decided here after memory planning and obeyed by the renderers.
 *
 * Loop nests (a CPU, kiln_target_desc.model KILN_SCHED_LOOP_NEST): a LOOP kernel is a
 * parallel loop over its output rows, in chunks of `grain` rows (row_cost), with the last
 * dim as the vectorized column loop; on top of that
 *   - streaming stores where the output is too large for the caches (wants_stream),
 *   - software prefetches of large inputs (prefetch_list),
 *   - row caches: a reduction over the row whose body is also what the column loop
 *     computes keeps its values for the row (find_row_caches),
 *   - divides by a value the loop does not change become multiplies by its reciprocal
 *     (choose_divides).
 * SIMT (a GPU): one thread per output element, or one warp per output row where a
 * reduction depends on the row only (warp_per_row).
 * GEMM kernels are library calls, or generated code (schedule_gemm: micro-tiles held in
 * registers, B packed at compile time by the pack pass) where the target generates it and
 * the operands fit. Their pack and epilogue sub-kernels run tile by tile (or, generated,
 * task by task) and are scheduled like LOOP kernels (no streaming: their outputs stay in
 * cache). The GEMM tiles
 * themselves are chosen by kiln_pass_gemm_tile at lowering, since the pack's domain is
 * the tile.
 */
#include "passes-impl.h"

#include <math.h>
#include <string.h>

typedef struct sched_ctx {
  kiln_kprogram *p;
  const kiln_target_desc *t;
  const kiln_kernel *k;
  uint64_t *dep;  /* per kx: loop variables it depends on (NULL: more than 64 variables) */
  bool oom;
} sched_ctx;

static void *alloc(sched_ctx *c, size_t n) {
  void *m = kiln_arena_alloc(c->p->arena, n ? n : 1);
  if (!m) c->oom = true;
  return m;
}

/* ------------------------------------------------------------------ parallel rows */

/* Work per row of a LOOP kernel, in element-steps: its columns plus each reduction's
 * loops, times the variables outside them that it depends on. A row-wise reduction
 * (softmax's max and sum, a layer norm's mean and variance) runs once per row, so a
 * [16, 64] layer norm is about 200 steps a row, not 64^3: counted as a product, its rows
 * went one by one to the thread pool, whose hand-off cost more than the row (the
 * transformer example's last layer norm, 1 -> 16 us at 2 threads). */
static int64_t row_cost(const sched_ctx *c, int64_t last) {
  const kiln_kernel *k = c->k;
  int64_t cost = last, cap = c->t->grain_elems;
  int32_t first = k->out.rank > 0 ? k->out.rank - 1 : 0; /* the column variable, if any */
  for (int32_t i = 0; i < k->n_kx && cost < cap; i++) {
    const kiln_kx *x = &k->kx[i];
    if (x->kind != KILN_KX_REDUCE) continue;
    int64_t n = 1;
    for (int32_t v = first; v < k->n_vars && n < cap; v++) {
      bool own = v >= x->var && v < x->var + x->n_vars;
      bool outer = !c->dep || (v < 64 && (c->dep[i] >> v & 1)); /* unknown: assume it depends */
      if (own || outer) n *= k->extent[v] > 1 ? k->extent[v] : 1;
    }
    cost += n;
  }
  return cost > 0 ? cost : 1;
}

/* ------------------------------------------------------------------ streaming stores */

/* Whether k's output is written with non-temporal stores (they write around the cache,
 * with no read of each line before it is written): where the output is at least
 * stream_min_bytes, each row starts a cache line (whole vector stores), and the kernel
 * does not write over one of its inputs in place. */
static bool wants_stream(const sched_ctx *c, const kiln_kernel *k) {
  const kiln_kprogram *p = c->p;
  if (k->out.rank < 1 || c->t->stream_min_bytes <= 0) return false;
  const kiln_buffer *o = &p->buffers[k->out_buf];
  int64_t row = k->out.dims[k->out.rank - 1] * (int64_t)kiln_dtype_size(k->out_dtype);
  if (o->nbytes < (size_t)c->t->stream_min_bytes || row % c->t->cache_line) return false;
  for (int32_t i = 0; i < k->n_kx; i++) {
    const kiln_kx *x = &k->kx[i];
    if (x->kind != KILN_KX_LOAD) continue;
    const kiln_buffer *in = &p->buffers[x->buf];
    bool overlap = in->kind == KILN_BUF_ARENA && o->kind == KILN_BUF_ARENA &&
                   in->offset < o->offset + (int64_t)o->nbytes && o->offset < in->offset + (int64_t)in->nbytes;
    if (x->buf == k->out_buf || overlap) return false;
  }
  return true;
}

/* ------------------------------------------------------------------ prefetches */

/* The buffers of at least prefetch_min_bytes that k loads (not its output, nor the
 * output of the kernel it runs with, `other`): a kernel whose work per element is long
 * (GELU's erf, softmax's exp) keeps few cache misses in flight, and the hardware
 * prefetchers do not make up for it. */
static void prefetch_list(sched_ctx *c, const kiln_kernel *k, int32_t other, kiln_schedule *s) {
  int32_t n = 0, *list = alloc(c, sizeof(int32_t) * (size_t)(k->n_kx + 1));
  if (!list || c->t->prefetch_bytes <= 0) return;
  for (int32_t i = 0; i < k->n_kx; i++) {
    const kiln_kx *x = &k->kx[i];
    if (x->kind != KILN_KX_LOAD || x->buf == k->out_buf || x->buf == other) continue;
    if (c->p->buffers[x->buf].nbytes < (size_t)c->t->prefetch_min_bytes) continue;
    bool seen = false;
    for (int32_t j = 0; j < n && !seen; j++) seen = list[j] == x->buf;
    if (!seen) list[n++] = x->buf;
  }
  s->prefetch = list;
  s->n_prefetch = n;
  s->prefetch_bytes = n ? c->t->prefetch_bytes : 0;
}

/* ------------------------------------------------------------------ row caches */

/* Whether kx a (over variable va) and kx b (over vb) compute the same values, va and vb
 * playing the same part: a structural comparison of the two DAGs. */
static bool same_over(const sched_ctx *c, int32_t a, int32_t b, int32_t va, int32_t vb, int depth) {
  const kiln_kx *x = &c->k->kx[a], *y = &c->k->kx[b];
  uint64_t vbits = (va < 64 ? 1ull << va : 0) | (vb < 64 ? 1ull << vb : 0);
  if (a == b) return !(c->dep[a] & vbits);
  if (depth > 48 || x->kind != y->kind || x->dtype != y->dtype || x->op != y->op || x->kind_attr != y->kind_attr)
    return false;
  int n = 0;
  switch (x->kind) {
  case KILN_KX_VAR: return x->var == va && y->var == vb;
  case KILN_KX_CONST: return x->f == y->f && x->i == y->i;
  case KILN_KX_LOAD:
    if (x->buf != y->buf || (x->a[1] < 0) != (y->a[1] < 0) || (x->a[1] >= 0 && (x->f != y->f || x->i != y->i)))
      return false;
    n = x->a[1] >= 0 ? 2 : 1;
    break;
  case KILN_KX_ALU: n = kiln_op_table[x->op].arity; break;
  case KILN_KX_REDUCE: case KILN_KX_CHECK: return false; /* not worth matching */
  }
  for (int i = 0; i < n; i++)
    if (!same_over(c, x->a[i], y->a[i], va, vb, depth + 1)) return false;
  return true;
}

static bool has_transcendental(const kiln_kernel *k, int32_t id, int depth) {
  const kiln_kx *x = &k->kx[id];
  if (depth > 48 || x->kind != KILN_KX_ALU) return false;
  if (kiln_op_has(x->op, KILN_OPF_TRANS)) return true; /* ops.def TRANS */
  for (int i = 0; i < kiln_op_table[x->op].arity; i++)
    if (has_transcendental(k, x->a[i], depth + 1)) return true;
  return false;
}

/* Row caches: a reduction over the row's last dim whose body (exp(x[i,k] - max_i) in a
 * softmax) is also what the column loop computes (exp(x[i,j] - max_i)) keeps its body's
 * values for the row, and the column loop reads them instead of computing them again.
 * Only for costly bodies (a transcendental function) and rows of 2 to row_cache_max
 * elements. */
static void find_row_caches(sched_ctx *c, kiln_schedule *s) {
  const kiln_kernel *k = c->k;
  int32_t rank = k->out.rank, col = rank - 1;
  if (!c->dep || rank < 1 || col >= 64 || k->out.dims[col] > c->t->row_cache_max || k->out.dims[col] < 2) return;
  for (int32_t red = 0; red < k->n_kx; red++) {
    const kiln_kx *x = &k->kx[red];
    if (x->kind != KILN_KX_REDUCE || x->n_vars != 1 || x->var >= 64 || k->extent[x->var] != k->out.dims[col] ||
        (c->dep[red] & (1ull << col)) || kiln_op_has(x->op, KILN_OPF_INDEX) ||
        !has_transcendental(k, x->a[0], 0))
      continue;
    for (int32_t e = 0; e < k->n_kx; e++) {
      if (e == x->a[0] || !(c->dep[e] & (1ull << col)) || (c->dep[e] & (1ull << x->var))) continue;
      if (s->row_cache && s->row_cache[e] >= 0) continue;
      if (!same_over(c, x->a[0], e, x->var, col, 0)) continue;
      if (!s->row_cache) {
        s->row_cache = alloc(c, sizeof(int32_t) * (size_t)k->n_kx);
        if (!s->row_cache) return;
        for (int32_t i = 0; i < k->n_kx; i++) s->row_cache[i] = -1;
      }
      s->row_cache[e] = red;
    }
  }
}

/* ------------------------------------------------------------------ divides */

/* A divide a / b is computed as a * RN(1/b), a multiply, where that is both worth it and
 * harmless: a divide costs a multiply's throughput ten times over (vdivps on 512 bits,
 * about 10 cycles a vector here), and the product is within about 1.5 ulp of the
 * quotient.
 *  - KILN_DIV_CONST_RECIP: b is a normal f32 constant whose reciprocal is normal
 *    (bias+GELU, whose x / sqrt(2) feeds erf: 8.2 -> 6.3 ms).
 *  - KILN_DIV_ROW_RECIP: b is not constant, but the divide runs in a loop b does not
 *    depend on (softmax's exp / sum, layer norm's (x - mean) / sqrt(var + eps)): 1/b is
 *    computed once outside that loop and each element pays a multiply. So that 1/b is
 *    normal and finite for every b, a b whose reciprocal is not (a subnormal or zero b, or
 *    |b| > 2^126 in f32) is first scaled by a power of two s (2^64 or 2^-64; else s = 1)
 *    and the product by s again: a / b = (a * RN(1/(b s))) * s.
 * Only for f32 and f64 (a narrow dtype's result must round as the interpreter's does),
 * and only where every reader is well conditioned (KILN_OPF_COND in ops.def): the result
 * is stored, or read by an add, sub, mul, neg, abs, max, min, select (as a value), a cast
 * to a float, a sum/max/min reduction, or erf/tanh/sigmoid (|f'(y) y| <= 0.49). Not
 * where it feeds exp, log, pow or a periodic function, whose error grows with the
 * input, nor a comparison, rounding or cast to an integer, where an ulp can change the
 * answer. */
static bool well_conditioned_reader(const kiln_kx *x, int32_t operand) {
  if (x->kind != KILN_KX_REDUCE && x->kind != KILN_KX_ALU) return false;
  if (!kiln_op_has(x->op, KILN_OPF_COND)) return false;            /* ops.def COND */
  if (x->op == KILN_OP_select) return operand > 0;                 /* as a value, not the condition */
  if (x->op == KILN_OP_cast) return kiln_dtype_is_float(x->dtype); /* an integer result can change */
  return true;
}

static void choose_divides(sched_ctx *c, kiln_schedule *s) {
  const kiln_kernel *k = c->k;
  uint8_t *mode = NULL;
  for (int32_t i = 0; i < k->n_kx; i++) {
    const kiln_kx *x = &k->kx[i];
    if (x->kind != KILN_KX_ALU || x->op != KILN_OP_div || (x->dtype != KILN_F32 && x->dtype != KILN_F64)) continue;
    const kiln_kx *b = &k->kx[x->a[1]];
    uint8_t m = KILN_DIV_PLAIN;
    if (b->kind == KILN_KX_CONST) {
      float bf = (float)b->f;
      if (x->dtype == KILN_F32 && isnormal(bf) && isnormal(1.0f / bf)) m = KILN_DIV_CONST_RECIP;
    } else if (c->dep && (c->dep[i] & ~c->dep[x->a[1]])) {
      m = KILN_DIV_ROW_RECIP;
    }
    if (m == KILN_DIV_PLAIN) continue;
    if (!mode && !(mode = alloc(c, (size_t)k->n_kx))) return;
    mode[i] = m;
  }
  if (!mode) return;
  for (int32_t i = 0; i < k->n_kx; i++) {
    const kiln_kx *x = &k->kx[i];
    for (int j = 0, n_ops = kiln_ir_kx_n_operands(x); j < n_ops; j++)
      if (x->a[j] >= 0 && x->a[j] < k->n_kx && !well_conditioned_reader(x, j)) mode[x->a[j]] = KILN_DIV_PLAIN;
  }
  s->div = mode;
}

/* ------------------------------------------------------------------ SIMT */

/* One warp per row where some reduction the root needs depends only on the row
 * variables (softmax, layer norm), else that reduction would be recomputed for every
 * element of the row. Not when a reduction is empty anywhere: what is computed once per
 * row must be what the element-wise form computes. Bool reductions are not shared. */
static bool warp_per_row(sched_ctx *c) {
  const kiln_kernel *k = c->k;
  if (!c->dep) return false;
  for (int32_t v = k->out.rank; v < k->n_vars; v++)
    if (k->extent[v] <= 0) return false;
  uint64_t row_vars = k->out.rank >= 2 ? (1ull << (k->out.rank - 1)) - 1 : 0;
  uint8_t *need = alloc(c, (size_t)k->n_kx);
  if (!need) return false;
  need[k->root] = 1;
  bool any = false;
  for (int32_t j = k->root; j >= 0 && !any; j--) {
    if (!need[j]) continue;
    const kiln_kx *x = &k->kx[j];
    for (int o = 0, n = kiln_ir_kx_n_operands(x); o < n; o++)
      if (x->a[o] >= 0) need[x->a[o]] = 1;
    any = x->kind == KILN_KX_REDUCE && !(c->dep[j] & ~row_vars) && x->dtype != KILN_BOOL &&
          kiln_op_combine(x->op) != KILN_OP_COUNT; /* not argmax/argmin */
  }
  return any;
}

/* ------------------------------------------------------------------ GEMMs */

/* Whether GEMM kernel k can run as generated code: f32, B a constant the whole batch
 * shares (packed once, at compile time), A read row by row, no pack sub-kernel (its tiles
 * are the library path's), and an epilogue only over a dense C whose rows are the
 * epilogue's. */
static bool gemm_generated_fits(const kiln_kprogram *p, const kiln_kernel *k, const kiln_target_desc *t) {
  const kiln_gemm_desc *g = &k->gemm;
  if (!t->gemm_generated || t->simd_bits < 128 || t->simd_regs < 16 || k->out_dtype != KILN_F32 || k->pack)
    return false;
  if (g->b_buf < 0 || p->buffers[g->b_buf].kind != KILN_BUF_CONST || p->buffers[g->b_buf].dtype != KILN_F32) return false;
  if (g->trans_a || g->m <= 0 || g->n <= 0 || g->k <= 0 || g->ldc < g->n) return false;
  if (!g->conv_rank && g->lda < (g->m > 1 ? g->k : 1)) return false;
  for (int32_t i = 0; i < g->n_batch; i++)
    if (g->b_bstride[i] != 0) return false;
  if (!k->epilogue) return true;
  int64_t dense = g->m * g->n;
  for (int32_t i = g->n_batch - 1; i >= 0; i--) {
    if (g->c_bstride[i] != dense) return false;
    dense *= g->batch[i];
  }
  return g->c_off == 0 && g->ldc == g->n && g->epi_last == g->n;
}

/* A direct convolution's reduction block of at most kc0 (taps x input channels, the
 * channels innermost): the whole reduction where it fits, else a whole number of taps, or
 * within a tap a divisor of the channels (at least 8 of them; else the whole tap). */
static int64_t conv_block(const kiln_gemm_desc *g, int64_t kc0) {
  int64_t ci = g->conv_ci;
  if (g->k <= kc0) return g->k;
  if (ci <= kc0) return ci * (kc0 / ci);
  for (int64_t d = kc0; d >= 8; d--)
    if (ci % d == 0) return d;
  return ci;
}

/* The tasks of a generated GEMM of n_micro micro-tiles of rows and np panels: blocks of
 * *per_task micro-tiles times *groups groups of panels, about eight tasks in all (with the
 * batch; the most there can be where fewer), split the way that reads the least memory: each block of rows reads its
 * group's B, each group of panels its rows' A (a convolution's A is its input image).
 * Where a task goes over several panels its A block stays in L2 (256 KiB of rows). */
static void gemm_tasks(const kiln_gemm_desc *g, int64_t n_micro, int64_t np, int64_t w, int32_t mr, int64_t kc,
                       int64_t *per_task, int32_t *groups) {
  int64_t batches = 1, a_bytes = g->m * g->k * 4, b_bytes = g->k * np * w * 4;
  for (int32_t i = 0; i < g->n_batch; i++) batches *= g->batch[i];
  if (g->conv_rank) {
    a_bytes = g->lda * 4;
    for (int32_t d = 0; d < g->conv_rank; d++) a_bytes *= g->conv_in[d];
  }
  double best = -1;
  int64_t fit = (256 << 10) / ((int64_t)mr * kc * 4), most = 0;
  int64_t target = batches * n_micro * np < 8 ? batches * n_micro * np : 8;
  for (int64_t cg = 1; cg <= np && cg <= 8; cg++) {
    int64_t ppg = (np + cg - 1) / cg, groups_used = (np + ppg - 1) / ppg;
    if (groups_used != cg) continue; /* no empty groups */
    int64_t want = (8 + batches * cg - 1) / (batches * cg), pt = (n_micro + want - 1) / want;
    if (ppg > 1 && pt > fit) pt = fit > 0 ? fit : 1;
    int64_t rb = (n_micro + pt - 1) / pt;
    double cost = (double)batches * ((double)rb * (double)b_bytes + (double)cg * (double)a_bytes);
    int64_t tasks = batches * rb * cg;
    if (tasks > target) tasks = target; /* more than enough counts as enough */
    if (tasks > most || (tasks == most && cost < best)) most = tasks, best = cost, *per_task = pt, *groups = (int32_t)cg;
  }
}

/* The generated engine's blocking of GEMM kernel k (see kiln_schedule): the widest
 * micro-tile the vector registers hold (mr x nv accumulators, nv vectors of B and one
 * broadcast of A), the reduction in blocks whose panel rows fit L1, and tasks as
 * gemm_tasks splits them. */
static void schedule_gemm(sched_ctx *c, kiln_kernel *k) {
  kiln_schedule *s = &k->sched;
  const kiln_gemm_desc *g = &k->gemm;
  const kiln_target_desc *t = c->t;
  if (!gemm_generated_fits(c->p, k, t)) return;
  int32_t lanes = t->simd_bits / 32, regs = t->simd_regs;
  int64_t vecs = (g->n + lanes - 1) / lanes;
  int32_t nv = (int32_t)(vecs < (regs >= 32 ? 4 : 2) ? vecs : (regs >= 32 ? 4 : 2));
  int32_t mr = (regs - nv - 1) / nv;
  if (mr > 12) mr = 12;
  /* reduction blocks of a panel of at most 32 KiB (in L1 beside A's rows), of even size */
  int64_t w = (int64_t)nv * lanes, kc0 = (32 << 10) / (w * 4), blocks = (g->k + kc0 - 1) / kc0;
  int64_t kc = g->conv_rank ? conv_block(g, kc0) : (g->k + blocks - 1) / blocks;
  int64_t n_micro = (g->m + mr - 1) / mr, np = (vecs + nv - 1) / nv, per_task = 1;
  int32_t groups = 1;
  gemm_tasks(g, n_micro, np, w, mr, kc, &per_task, &groups);
  s->gemm_engine = KILN_GEMM_GENERATED;
  s->mr = mr, s->nv = nv, s->lanes = lanes;
  s->mc = per_task * mr;
  s->kc = kc;
  s->col_groups = groups;
  s->packed_b = -1; /* the pack pass makes it */
}

/* ------------------------------------------------------------------ kernels */

/* The schedule of LOOP kernel k (a program kernel, or a GEMM's sub-kernel: sub). */
static void schedule_loop(sched_ctx *c, kiln_kernel *k, bool sub) {
  kiln_schedule *s = &k->sched;
  memset(s, 0, sizeof *s);
  s->set = true;
  s->model = c->t->model;
  c->k = k;
  c->dep = alloc(c, sizeof(uint64_t) * ((size_t)k->n_kx + 1));
  if (c->dep && !kiln_ir_kx_deps(k, c->dep)) c->dep = NULL; /* > 64 variables: no analysis */
  if (c->oom) return;
  if (s->model == KILN_SCHED_SIMT) {
    s->block = c->t->block;
    s->warp_per_row = warp_per_row(c);
    return;
  }
  int64_t numel = kiln_shape_numel(&k->out), last = k->out.rank > 0 ? k->out.dims[k->out.rank - 1] : 1;
  s->rows = last > 0 ? numel / last : 0;
  int64_t work = row_cost(c, last);
  s->grain = (c->t->grain_elems + work - 1) / work;
  if (s->grain < 1) s->grain = 1;
  s->vector_bits = c->t->vector_bits;
  s->stream = !sub && wants_stream(c, k);
  prefetch_list(c, k, -1, s);
  find_row_caches(c, s);
  choose_divides(c, s);
}

/* A with_next pair runs as one loop nest on the first kernel's schedule: it streams only
 * if both would, and prefetches what either loads but the other writes. */
static void schedule_pair(sched_ctx *c, kiln_kernel *a, kiln_kernel *b) {
  if (a->sched.model != KILN_SCHED_LOOP_NEST) return;
  a->sched.stream = a->sched.stream && b->sched.stream;
  b->sched.stream = a->sched.stream;
  kiln_schedule pa = a->sched, pb = b->sched;
  prefetch_list(c, a, b->out_buf, &pa);
  prefetch_list(c, b, a->out_buf, &pb);
  int32_t *both = alloc(c, sizeof(int32_t) * (size_t)(pa.n_prefetch + pb.n_prefetch + 1));
  if (!both) return;
  int32_t n = 0;
  for (int32_t i = 0; i < pa.n_prefetch; i++) both[n++] = pa.prefetch[i];
  for (int32_t i = 0; i < pb.n_prefetch; i++) {
    bool seen = false;
    for (int32_t j = 0; j < n && !seen; j++) seen = both[j] == pb.prefetch[i];
    if (!seen) both[n++] = pb.prefetch[i];
  }
  a->sched.prefetch = both;
  a->sched.n_prefetch = n;
  a->sched.prefetch_bytes = n ? c->t->prefetch_bytes : 0;
}

kiln_status kiln_pass_schedule(kiln_kprogram *p, const kiln_pass_target *t, kiln_diag *d) {
  sched_ctx c = {.p = p, .t = &t->desc};
  for (int32_t i = 0; i < p->n_kernels && !c.oom; i++) {
    kiln_kernel *k = &p->kernels[i];
    if (k->kind == KILN_KERNEL_LOOP) schedule_loop(&c, k, false);
    else {
      memset(&k->sched, 0, sizeof k->sched);
      k->sched.set = true;
      k->sched.model = t->desc.model;
      k->sched.packed_b = -1;
      if (k->kind == KILN_KERNEL_GEMM && t->desc.model == KILN_SCHED_LOOP_NEST) schedule_gemm(&c, k);
    }
    if (k->pack) schedule_loop(&c, k->pack, true);
    if (k->epilogue) schedule_loop(&c, k->epilogue, true);
  }
  for (int32_t i = 0; i + 1 < p->n_kernels && !c.oom; i++)
    if (p->kernels[i].with_next) schedule_pair(&c, &p->kernels[i], &p->kernels[i + 1]);
  if (c.oom) return kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory scheduling '%s'", p->name ? p->name : "?");
  return KILN_OK; /* the pipeline verifies the scheduled program (manager.c) */
}

/* ------------------------------------------------------------------ GEMM tiles */
int64_t kiln_pass_gemm_tile(const kiln_target_desc *t, int64_t unit_bytes, int64_t n_units) {
  int64_t per = unit_bytes > 0 ? t->pack_tile_bytes / unit_bytes : n_units;
  if (per < 1) per = 1;
  if (n_units <= 0) return n_units;
  int64_t n_tiles = (n_units + per - 1) / per;
  return (n_units + n_tiles - 1) / n_tiles;
}
