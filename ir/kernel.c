/* kernel.c - the kernel IR's readable dump (kiln_ir_kprogram_print, for `kiln dump` and
 * golden tests), its verifier (kiln_ir_kprogram_verify), which checks what every backend
 * relies on: operand order, dtypes, buffer ids, loop-variable ownership, GEMM sub-kernels,
 * and the cost of a kernel for reports (kiln_ir_kernel_stats). */
#include "ir.h"

#include <math.h>
#include <stdint.h>
#include <string.h>


static const char *buf_kind_name(kiln_buffer_kind k) {
  switch (k) {
  case KILN_BUF_INPUT: return "input";
  case KILN_BUF_OUTPUT: return "output";
  case KILN_BUF_CONST: return "const";
  case KILN_BUF_ARENA: return "arena";
  }
  return "?";
}

const char *kiln_ir_kernel_kind_name(kiln_kernel_kind k) {
  switch (k) {
  case KILN_KERNEL_LOOP: return "loop";
  case KILN_KERNEL_GEMM: return "gemm";
  case KILN_KERNEL_OPAQUE: return "opaque";
  }
  return "?";
}


/* ====================================================================== print */
static void print_scalar(FILE *f, kiln_dtype dt, double fv, int64_t iv) {
  if (kiln_dtype_is_float(dt)) fprintf(f, "%.9g", fv);
  else fprintf(f, "%lld", (long long)iv);
}

static void print_kx(FILE *f, const char *ind, const kiln_kx *x, int32_t id) {
  fprintf(f, "%s%%%d = ", ind, (int)id);
  switch (x->kind) {
  case KILN_KX_CONST:
    fprintf(f, "const %s ", kiln_dtype_name(x->dtype));
    print_scalar(f, x->dtype, x->f, x->i);
    break;
  case KILN_KX_VAR: fprintf(f, "var v%d", (int)x->var); break;
  case KILN_KX_LOAD:
    fprintf(f, "load %s b%d[%%%d]", kiln_dtype_name(x->dtype), (int)x->buf, (int)x->a[0]);
    if (x->a[1] >= 0) {
      fprintf(f, " mask %%%d else ", (int)x->a[1]);
      print_scalar(f, x->dtype, x->f, x->i);
    }
    break;
  case KILN_KX_ALU: {
    fprintf(f, "alu %s", kiln_op_name(x->op));
    if (x->op == KILN_OP_mod) fprintf(f, ".%d", (int)x->kind_attr);
    fprintf(f, " %s", kiln_dtype_name(x->dtype));
    int ar = (unsigned)x->op < KILN_OP_COUNT ? kiln_op_table[x->op].arity : 0;
    for (int k = 0; k < ar && k < 3; k++) fprintf(f, " %%%d", (int)x->a[k]);
    break;
  }
  case KILN_KX_REDUCE:
    fprintf(f, "%s %s vars[%d..%d) %%%d", kiln_op_name(x->op), kiln_dtype_name(x->dtype), (int)x->var,
            (int)(x->var + x->n_vars), (int)x->a[0]);
    if (kiln_op_has(x->op, KILN_OPF_INDEX) && x->kind_attr) fprintf(f, " last");
    break;
  case KILN_KX_CHECK:
    fprintf(f, "check %s %%%d %%%d (%s src %d dim %lld)", kiln_dtype_name(x->dtype), (int)x->a[0], (int)x->a[1],
            (unsigned)x->op < KILN_OP_COUNT ? kiln_op_name(x->op) : "?", (int)x->var, (long long)x->i);
    break;
  default: fprintf(f, "? kind %d", (int)x->kind); break;
  }
  fputc('\n', f);
}

/* The schedule line(s) of kernel k (nothing before the schedule pass ran). */
static void print_schedule(FILE *f, const char *ind, const kiln_kernel *k) {
  const kiln_schedule *s = &k->sched;
  if (!s->set || k->kind != KILN_KERNEL_LOOP) return;
  if (s->model == KILN_SCHED_SIMT) {
    fprintf(f, "%sschedule simt block %d%s\n", ind, (int)s->block, s->warp_per_row ? " warp_per_row" : "");
    return;
  }
  fprintf(f, "%sschedule rows %lld grain %lld vector %d%s", ind, (long long)s->rows, (long long)s->grain,
          (int)s->vector_bits, s->stream ? " stream" : "");
  if (s->n_prefetch) {
    fprintf(f, " prefetch %d:", (int)s->prefetch_bytes);
    for (int32_t i = 0; i < s->n_prefetch; i++) fprintf(f, "%sb%d", i ? "," : "", (int)s->prefetch[i]);
  }
  for (int32_t i = 0; s->row_cache && i < k->n_kx; i++)
    if (s->row_cache[i] >= 0) fprintf(f, " row_cache %%%d<-%%%d", (int)i, (int)s->row_cache[i]);
  for (int32_t i = 0; s->div && i < k->n_kx; i++)
    if (s->div[i] != KILN_DIV_PLAIN) fprintf(f, " %s %%%d", s->div[i] == KILN_DIV_ROW_RECIP ? "row_recip" : "const_recip", (int)i);
  fputc('\n', f);
}

/* The expression part of a LOOP kernel (or sub-kernel), each line after `ind`. */
static void print_loop_body(FILE *f, const char *ind, const kiln_kernel *k) {
  fprintf(f, "%sdomain [", ind);
  for (int v = 0; v < k->n_vars; v++) fprintf(f, "%s%lld", v ? "," : "", k->extent ? (long long)k->extent[v] : -1LL);
  fprintf(f, "] (%d output vars)\n", (int)k->out.rank);
  for (int j = 0; j < k->n_kx; j++) print_kx(f, ind, &k->kx[j], j);
  fprintf(f, "%sroot %%%d\n", ind, (int)k->root);
  print_schedule(f, ind, k);
}

/* A GEMM's fused sub-kernel, indented under it: "pack" or "epilogue". */
static void print_sub_kernel(FILE *f, const char *what, const kiln_kernel *s) {
  fprintf(f, "    %s %s \"%s\" -> b%d %s%s\n", what, kiln_ir_kernel_kind_name(s->kind), s->name ? s->name : "",
          (int)s->out_buf, kiln_dtype_name(s->out_dtype), KILN_SHAPE_STR(&s->out));
  if (s->kind == KILN_KERNEL_LOOP) print_loop_body(f, "      ", s);
}

static void print_kernel(FILE *f, const kiln_kernel *k, int32_t idx) {
  fprintf(f, "  kernel k%d %s \"%s\" -> b%d %s%s", (int)idx, kiln_ir_kernel_kind_name(k->kind), k->name ? k->name : "",
          (int)k->out_buf, kiln_dtype_name(k->out_dtype), KILN_SHAPE_STR(&k->out));
  if (k->n_sources > 0 && k->sources) {
    fprintf(f, " from");
    for (int i = 0; i < k->n_sources; i++) fprintf(f, "%s\"%s\"", i ? ", " : " ", k->sources[i] ? k->sources[i] : "");
  }
  fprintf(f, " category %s%s\n", kiln_category_name(k->category), k->with_next ? " with_next" : "");
  if (k->kind == KILN_KERNEL_LOOP) {
    print_loop_body(f, "    ", k);
  } else if (k->kind == KILN_KERNEL_GEMM) {
    const kiln_gemm_desc *g = &k->gemm;
    fprintf(f, "    C b%d+%lld ldc %lld = A%s b%d+%lld lda %lld * B%s b%d+%lld ldb %lld; m %lld n %lld k %lld\n",
            (int)g->c_buf, (long long)g->c_off, (long long)g->ldc, g->trans_a ? "^T" : "", (int)g->a_buf,
            (long long)g->a_off, (long long)g->lda, g->trans_b ? "^T" : "", (int)g->b_buf, (long long)g->b_off,
            (long long)g->ldb, (long long)g->m, (long long)g->n, (long long)g->k);
    for (int i = 0; i < g->n_batch && i < 2; i++)
      fprintf(f, "    batch %lld strides a %lld b %lld c %lld\n", (long long)g->batch[i], (long long)g->a_bstride[i],
              (long long)g->b_bstride[i], (long long)g->c_bstride[i]);
    int64_t whole = g->pack_a && !g->trans_a ? g->k : g->tile_n; /* pack_last when not printed */
    if (g->tile_n > 0) fprintf(f, "    tile_n %lld params b%d", (long long)g->tile_n, (int)g->param_buf);
    if (g->tile_n > 0 && g->pack_last > 0 && g->pack_last != whole) fprintf(f, " pack_last %lld", (long long)g->pack_last);
    if (g->tile_n > 0) fprintf(f, "%s\n", g->pack_a ? " pack_a" : "");
    if (k->pack) print_sub_kernel(f, "pack", k->pack);
    if (k->epilogue) {
      fprintf(f, "    epi_last %lld\n", (long long)g->epi_last);
      print_sub_kernel(f, "epilogue", k->epilogue);
    }
    /* after the sub-kernels: the schedule is the last word on how the kernel runs */
    if (k->sched.set && k->sched.gemm_engine == KILN_GEMM_GENERATED)
      fprintf(f, "    schedule gemm generated mr %d nv %d lanes %d mc %lld kc %lld col_groups %d packed b%d\n",
              (int)k->sched.mr, (int)k->sched.nv, (int)k->sched.lanes, (long long)k->sched.mc,
              (long long)k->sched.kc, (int)k->sched.col_groups,
              (int)k->sched.packed_b);
    else if (k->sched.set)
      fputs("    schedule gemm library\n", f);
  } else if (k->kind == KILN_KERNEL_OPAQUE) {
    fprintf(f, "    %s (", kiln_op_name(k->op));
    for (int i = 0; i < k->n_in_bufs; i++) fprintf(f, "%sb%d", i ? ", " : "", k->in_bufs ? (int)k->in_bufs[i] : -1);
    fprintf(f, ") axis %d kind %d k %lld\n", (int)k->attrs.axis, (int)k->attrs.kind, (long long)k->attrs.k);
  }
}

void kiln_ir_kprogram_print(const kiln_kprogram *p, FILE *f) {
  fprintf(f, "kprogram \"%s\" {\n", p->name ? p->name : "");
  fprintf(f, "  arena %zu bytes\n", p->arena_bytes);
  for (int i = 0; i < p->n_buffers; i++) {
    const kiln_buffer *b = &p->buffers[i];
    fprintf(f, "  b%d %s", i, buf_kind_name(b->kind));
    if (b->kind == KILN_BUF_ARENA) fprintf(f, " @%lld", (long long)b->offset);
    else fprintf(f, " #%d", (int)b->index);
    fprintf(f, " %s%s %zu bytes", kiln_dtype_name(b->dtype), KILN_SHAPE_STR(&b->shape), b->nbytes);
    if (b->name) fprintf(f, " \"%s\"", b->name);
    fputc('\n', f);
  }
  for (int i = 0; i < p->n_kernels; i++) print_kernel(f, &p->kernels[i], i);
  for (int i = 0; i < p->n_refused && p->refused; i++) {
    const kiln_fusion_refusal *r = &p->refused[i];
    fprintf(f, "  refused \"%s\" -> \"%s\": %s\n", r->producer ? r->producer : "", r->consumer ? r->consumer : "",
            r->reason ? r->reason : "");
  }
  fprintf(f, "}\n");
}

/* ====================================================================== verify */
#define KFMT "kernel %d '%s': "
#define KARGS(i, k) (int)(i), (k)->name ? (k)->name : ""

static bool buf_ok(const kiln_kprogram *p, int32_t b) { return b >= 0 && b < p->n_buffers; }

static bool is_reduce_op(kiln_op op) {
  return (unsigned)op < KILN_OP_COUNT && kiln_op_table[op].category == KILN_CAT_REDUCE;
}

/* Result dtype an ALU node must have given its operand dtypes (graph semantics); -1 when
 * the operands themselves do not fit. cast returns the node's own dtype. */
static int alu_result(const kiln_kx *x, const kiln_kx *kx, char *why, size_t nwhy) {
  kiln_op op = x->op;
  int ar = kiln_op_table[op].arity;
  kiln_dtype t0 = kx[x->a[0]].dtype;
  if (op == KILN_OP_cast) return x->dtype;
  if (op == KILN_OP_select) {
    if (t0 != KILN_BOOL || kx[x->a[1]].dtype != kx[x->a[2]].dtype) {
      snprintf(why, nwhy, "select needs a bool condition and equal branch dtypes");
      return -1;
    }
    return kx[x->a[1]].dtype;
  }
  if (ar == 2 && kx[x->a[1]].dtype != t0) {
    snprintf(why, nwhy, "operand dtypes differ: %s and %s", kiln_dtype_name(t0), kiln_dtype_name(kx[x->a[1]].dtype));
    return -1;
  }
  if (!kiln_op_accepts(op, t0)) {
    snprintf(why, nwhy, "%s is not defined on %s operands", kiln_op_name(op), kiln_dtype_name(t0));
    return -1;
  }
  return kiln_op_has(op, KILN_OPF_BOOL) ? KILN_BOOL : (int)t0;
}

/* A loop kernel's schedule, once set: what it names exists and is of the right kind. */
static kiln_status verify_schedule(const kiln_kprogram *p, int32_t ki, const kiln_kernel *k, kiln_diag *d) {
  const kiln_schedule *s = &k->sched;
  if (!s->set) return KILN_OK;
  if (s->model == KILN_SCHED_LOOP_NEST && (s->grain < 1 || s->rows < 0 || s->vector_bits < 0))
    return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "schedule: grain %lld, rows %lld", KARGS(ki, k), (long long)s->grain,
                         (long long)s->rows);
  for (int32_t i = 0; i < s->n_prefetch; i++)
    if (!buf_ok(p, s->prefetch[i]) || s->prefetch[i] == k->out_buf)
      return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "schedule: prefetches b%d", KARGS(ki, k), (int)s->prefetch[i]);
  for (int32_t i = 0; i < k->n_kx; i++) {
    int32_t red = s->row_cache ? s->row_cache[i] : -1;
    if (red >= 0 && (red >= k->n_kx || k->kx[red].kind != KILN_KX_REDUCE || k->kx[i].dtype != k->kx[k->kx[red].a[0]].dtype))
      return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "schedule: %%%d cached from %%%d, not a reduction whose body has its dtype",
                           KARGS(ki, k), (int)i, (int)red);
    if (s->div && s->div[i] != KILN_DIV_PLAIN &&
        (k->kx[i].kind != KILN_KX_ALU || k->kx[i].op != KILN_OP_div || !kiln_dtype_is_float(k->kx[i].dtype) ||
         s->div[i] > KILN_DIV_ROW_RECIP))
      return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "schedule: %%%d is no float divide", KARGS(ki, k), (int)i);
  }
  return KILN_OK;
}

static kiln_status verify_loop(const kiln_kprogram *p, int32_t ki, const kiln_kernel *k, kiln_diag *d) {
  if (k->n_vars < k->out.rank || k->n_vars > 64)
    return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "n_vars %d is below the output rank %d or absurd", KARGS(ki, k),
                         (int)k->n_vars, (int)k->out.rank);
  if (k->n_vars > 0 && !k->extent) return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "no extents", KARGS(ki, k));
  for (int v = 0; v < k->n_vars; v++) {
    if (k->extent[v] < 0)
      return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "extent of v%d is %lld", KARGS(ki, k), v, (long long)k->extent[v]);
    if (v < k->out.rank && k->extent[v] != k->out.dims[v])
      return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "extent of output var v%d is %lld, the domain %s says %lld",
                           KARGS(ki, k), v, (long long)k->extent[v], KILN_SHAPE_STR(&k->out), (long long)k->out.dims[v]);
  }
  if (k->n_kx < 1 || !k->kx) return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "empty expression", KARGS(ki, k));
  int owner[64];
  for (int v = 0; v < 64; v++) owner[v] = -1;
  for (int32_t j = 0; j < k->n_kx; j++) {
    const kiln_kx *x = &k->kx[j];
    int n_ops = 0;
    switch (x->kind) {
    case KILN_KX_CONST: case KILN_KX_VAR: n_ops = 0; break;
    case KILN_KX_LOAD: n_ops = x->a[1] >= 0 ? 2 : 1; break;
    case KILN_KX_ALU:
      if ((unsigned)x->op >= KILN_OP_COUNT || kiln_op_table[x->op].category != KILN_CAT_ELEMENTWISE)
        return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "%%%d: ALU op %s is not elementwise", KARGS(ki, k), (int)j,
                             kiln_op_name(x->op));
      n_ops = kiln_op_table[x->op].arity;
      break;
    case KILN_KX_REDUCE: n_ops = 1; break;
    case KILN_KX_CHECK: n_ops = 2; break;
    default: return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "%%%d: unknown kind %d", KARGS(ki, k), (int)j, (int)x->kind);
    }
    if ((unsigned)x->dtype >= KILN_DTYPE_COUNT)
      return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "%%%d: bad dtype %d", KARGS(ki, k), (int)j, (int)x->dtype);
    for (int o = 0; o < n_ops; o++)
      if (x->a[o] < 0 || x->a[o] >= j)
        return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "%%%d: operand %d is %%%d, not an earlier node", KARGS(ki, k),
                             (int)j, o, (int)x->a[o]);
    char why[160] = "";
    switch (x->kind) {
    case KILN_KX_VAR:
      if (x->var < 0 || x->var >= k->n_vars || x->dtype != KILN_I64)
        return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "%%%d: var v%d (%s) must be an i64 var below %d", KARGS(ki, k),
                             (int)j, (int)x->var, kiln_dtype_name(x->dtype), (int)k->n_vars);
      break;
    case KILN_KX_LOAD:
      if (!buf_ok(p, x->buf))
        return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "%%%d: load from buffer b%d, which does not exist", KARGS(ki, k),
                             (int)j, (int)x->buf);
      if (x->dtype != p->buffers[x->buf].dtype)
        return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "%%%d: load is %s, buffer b%d is %s", KARGS(ki, k), (int)j,
                             kiln_dtype_name(x->dtype), (int)x->buf, kiln_dtype_name(p->buffers[x->buf].dtype));
      if (k->kx[x->a[0]].dtype != KILN_I64)
        return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "%%%d: load offset %%%d is %s, must be i64", KARGS(ki, k), (int)j,
                             (int)x->a[0], kiln_dtype_name(k->kx[x->a[0]].dtype));
      if (x->a[1] >= 0 && k->kx[x->a[1]].dtype != KILN_BOOL)
        return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "%%%d: load mask %%%d is %s, must be bool", KARGS(ki, k), (int)j,
                             (int)x->a[1], kiln_dtype_name(k->kx[x->a[1]].dtype));
      break;
    case KILN_KX_ALU: {
      int want = alu_result(x, k->kx, why, sizeof why);
      if (want < 0) return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "%%%d: alu %s: %s", KARGS(ki, k), (int)j,
                                         kiln_op_name(x->op), why);
      if ((kiln_dtype)want != x->dtype)
        return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "%%%d: alu %s is %s, its operands give %s", KARGS(ki, k), (int)j,
                             kiln_op_name(x->op), kiln_dtype_name(x->dtype), kiln_dtype_name((kiln_dtype)want));
      break;
    }
    case KILN_KX_REDUCE: {
      if (!is_reduce_op(x->op))
        return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "%%%d: reduce op %s is not a reduction", KARGS(ki, k), (int)j,
                             kiln_op_name(x->op));
      if (x->n_vars < 1 || x->var < k->out.rank || x->var + x->n_vars > k->n_vars)
        return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "%%%d: reduce vars [%d..%d) outside [%d..%d)", KARGS(ki, k),
                             (int)j, (int)x->var, (int)(x->var + x->n_vars), (int)k->out.rank, (int)k->n_vars);
      bool arg = kiln_op_has(x->op, KILN_OPF_INDEX); /* argmax/argmin */
      if (arg && (x->n_vars != 1 || x->dtype != KILN_I64))
        return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "%%%d: %s needs one var and an i64 result", KARGS(ki, k), (int)j,
                             kiln_op_name(x->op));
      if (!arg && x->dtype != k->kx[x->a[0]].dtype)
        return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "%%%d: %s is %s, its operand is %s", KARGS(ki, k), (int)j,
                             kiln_op_name(x->op), kiln_dtype_name(x->dtype), kiln_dtype_name(k->kx[x->a[0]].dtype));
      for (int v = x->var; v < x->var + x->n_vars; v++) {
        if (owner[v] >= 0)
          return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "var v%d is looped by both %%%d and %%%d", KARGS(ki, k), v,
                               owner[v], (int)j);
        owner[v] = j;
      }
      break;
    }
    case KILN_KX_CHECK:
      if (k->kx[x->a[0]].dtype != KILN_BOOL || x->dtype != k->kx[x->a[1]].dtype)
        return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "%%%d: check needs a bool condition and its value's dtype",
                             KARGS(ki, k), (int)j);
      if ((unsigned)x->op >= KILN_OP_COUNT || x->var < -1 || x->var >= k->n_sources)
        return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "%%%d: check names op %d, source %d of %d", KARGS(ki, k),
                             (int)j, (int)x->op, (int)x->var, (int)k->n_sources);
      break;
    default: break;
    }
  }
  for (int v = k->out.rank; v < k->n_vars; v++)
    if (owner[v] < 0)
      return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "var v%d belongs to no reduce", KARGS(ki, k), v);
  if (k->root < 0 || k->root >= k->n_kx)
    return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "root %%%d out of range", KARGS(ki, k), (int)k->root);
  if (k->kx[k->root].dtype != k->out_dtype)
    return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "root %%%d is %s, the output is %s", KARGS(ki, k), (int)k->root,
                         kiln_dtype_name(k->kx[k->root].dtype), kiln_dtype_name(k->out_dtype));
  return verify_schedule(p, ki, k, d);
}

/* A GEMM's fused sub-kernel: a LOOP kernel like any other (verify_loop), whose output is
 * the one the GEMM's descriptor expects. */
static kiln_status verify_sub(const kiln_kprogram *p, int32_t ki, const kiln_kernel *k, const kiln_kernel *s,
                              const char *what, int32_t want_buf, const kiln_shape *want_out, kiln_diag *d) {
  if (s->kind != KILN_KERNEL_LOOP)
    return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "%s sub-kernel is a %s kernel, not a loop", KARGS(ki, k), what,
                         kiln_ir_kernel_kind_name(s->kind));
  if (s->out_buf != want_buf)
    return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "%s sub-kernel writes b%d, the gemm needs b%d", KARGS(ki, k), what,
                         (int)s->out_buf, (int)want_buf);
  if (s->out_dtype != k->out_dtype || !kiln_shape_eq(&s->out, want_out))
    return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "%s sub-kernel computes %s%s, the gemm needs %s%s", KARGS(ki, k),
                         what, kiln_dtype_name(s->out_dtype), KILN_SHAPE_STR(&s->out), kiln_dtype_name(k->out_dtype),
                         KILN_SHAPE_STR(want_out));
  if (!buf_ok(p, want_buf) || kiln_shape_numel(&p->buffers[want_buf].shape) < kiln_shape_numel(want_out))
    return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "%s sub-kernel's buffer b%d is smaller than %s", KARGS(ki, k), what,
                         (int)want_buf, KILN_SHAPE_STR(want_out));
  bool fresh = d && d->status == KILN_OK;
  kiln_status st = verify_loop(p, ki, s, d);
  if (st != KILN_OK && fresh) {
    /* Say which part of the GEMM kernel the loop verifier's message is about (the
     * diagnostic keeps its first message, so it is cleared and set again). */
    char msg[sizeof d->msg];
    snprintf(msg, sizeof msg, "%s", d->msg);
    d->status = KILN_OK;
    return kiln_diag_set(d, st, KFMT "%s sub-kernel: %s", KARGS(ki, k), what, msg);
  }
  return st;
}

/* pack: domain [k, tile_n] into the scratch B (ldb = tile_n, not transposed, not batched),
 * or with pack_a [tile_n, k] into the scratch A (lda = k), with a parameter buffer of two
 * i64; epilogue: in place over a dense C over the output domain. */
static kiln_status verify_gemm_subs(const kiln_kprogram *p, int32_t ki, const kiln_kernel *k, kiln_diag *d) {
  const kiln_gemm_desc *g = &k->gemm;
  if ((g->tile_n > 0) != (k->pack != NULL))
    return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "tile_n %lld %s a pack sub-kernel", KARGS(ki, k),
                         (long long)g->tile_n, k->pack ? "with" : "without");
  if ((g->pack_a != 0 && g->pack_a != 1) || (g->pack_a && !k->pack))
    return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "pack_a %d %s a pack sub-kernel", KARGS(ki, k), (int)g->pack_a,
                         k->pack ? "with" : "without");
  if (k->pack) {
    if (!buf_ok(p, g->param_buf) || p->buffers[g->param_buf].dtype != KILN_I64 ||
        kiln_shape_numel(&p->buffers[g->param_buf].shape) < 2)
      return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "pack parameter buffer b%d is not two i64", KARGS(ki, k),
                           (int)g->param_buf);
    bool k_major = !g->pack_a || g->trans_a; /* the tile is [k, tile_n], else [tile_n, k] */
    if (g->pack_a ? g->lda != (k_major ? g->tile_n : g->k) || g->a_off != 0 || g->a_bstride[0] != 0 || g->a_bstride[1] != 0
                  : g->ldb != g->tile_n || g->trans_b || g->b_off != 0 || g->b_bstride[0] != 0 || g->b_bstride[1] != 0)
      return kiln_diag_set(d, KILN_ERR_INTERNAL,
                           KFMT "packed %s must be a %s tile (ld %lld, tile_n %lld, k %lld, trans %d, offset %lld)",
                           KARGS(ki, k), g->pack_a ? "A" : "B", k_major ? "k x tile_n" : "tile_n x k",
                           (long long)(g->pack_a ? g->lda : g->ldb), (long long)g->tile_n, (long long)g->k,
                           (int)(g->pack_a ? g->trans_a : g->trans_b), (long long)(g->pack_a ? g->a_off : g->b_off));
    int64_t whole = k_major ? g->tile_n : g->k; /* the extent pack_last divides */
    int64_t pl = g->pack_last > 0 ? g->pack_last : whole;
    bool rows = k->pack->out.rank == 3; /* [k, tile_n / pack_last, pack_last] or [tile_n, k / pack_last, pack_last] */
    if (whole % pl || (!rows && pl != whole))
      return kiln_diag_set(d, KILN_ERR_INTERNAL,
                           KFMT "pack_last %lld: must divide %s %lld, and be it for a 2-d pack", KARGS(ki, k),
                           (long long)pl, k_major ? "tile_n" : "k", (long long)whole);
    int64_t dims[3] = {g->k, rows ? g->tile_n / pl : g->tile_n, pl};
    if (!k_major) dims[0] = g->tile_n, dims[1] = rows ? g->k / pl : g->k;
    kiln_shape want = kiln_shape_make(rows ? 3 : 2, dims);
    kiln_status st = verify_sub(p, ki, k, k->pack, "pack", g->pack_a ? g->a_buf : g->b_buf, &want, d);
    if (st != KILN_OK) return st;
  }
  if (k->epilogue) {
    int64_t last = k->out.rank > 0 ? k->out.dims[k->out.rank - 1] : 1;
    if (g->epi_last != last)
      return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "epi_last %lld, the output's last extent is %lld", KARGS(ki, k),
                           (long long)g->epi_last, (long long)last);
    bool dense = g->c_off == 0 && g->ldc == g->n;
    int64_t stride = g->m * g->n;
    for (int i = g->n_batch - 1; i >= 0; i--) {
      dense = dense && g->c_bstride[i] == stride;
      stride *= g->batch[i];
    }
    if (!dense)
      return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "an epilogue needs a dense C (offset %lld, ldc %lld, n %lld)",
                           KARGS(ki, k), (long long)g->c_off, (long long)g->ldc, (long long)g->n);
    kiln_status st = verify_sub(p, ki, k, k->epilogue, "epilogue", k->out_buf, &k->out, d);
    if (st != KILN_OK) return st;
  }
  return KILN_OK;
}

/* A generated GEMM's schedule: a micro-tile, tasks of whole micro-tiles, and packed B a
 * constant holding every panel. */
static kiln_status verify_gemm_schedule(const kiln_kprogram *p, int32_t ki, const kiln_kernel *k, kiln_diag *d) {
  const kiln_schedule *s = &k->sched;
  const kiln_gemm_desc *g = &k->gemm;
  if (s->set && g->conv_rank && s->gemm_engine != KILN_GEMM_GENERATED)
    return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "a direct convolution must be generated code", KARGS(ki, k));
  if (!s->set || s->gemm_engine != KILN_GEMM_GENERATED) return KILN_OK;
  if (s->mr < 1 || s->nv < 1 || s->lanes < 1 || s->mc < s->mr || s->mc % s->mr || s->col_groups < 1 || k->pack ||
      k->out_dtype != KILN_F32 || s->kc < 1 || s->kc > g->k || (g->conv_rank && s->kc != g->k && g->conv_ci % s->kc && s->kc % g->conv_ci))
    return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "generated GEMM: mr %d nv %d lanes %d mc %lld kc %lld", KARGS(ki, k),
                         (int)s->mr, (int)s->nv, (int)s->lanes, (long long)s->mc, (long long)s->kc);
  int64_t w = (int64_t)s->nv * s->lanes, need = (g->n + w - 1) / w * g->k * w;
  if (!buf_ok(p, s->packed_b) || p->buffers[s->packed_b].kind != KILN_BUF_CONST ||
      p->buffers[s->packed_b].dtype != KILN_F32 || kiln_shape_numel(&p->buffers[s->packed_b].shape) < need)
    return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "generated GEMM: packed B b%d is not a constant of %lld floats",
                         KARGS(ki, k), (int)s->packed_b, (long long)need);
  return KILN_OK;
}

static kiln_status verify_gemm(const kiln_kprogram *p, int32_t ki, const kiln_kernel *k, kiln_diag *d) {
  const kiln_gemm_desc *g = &k->gemm;
  if (k->out_dtype != KILN_F32 && k->out_dtype != KILN_F64)
    return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "gemm dtype %s (must be f32 or f64)", KARGS(ki, k),
                         kiln_dtype_name(k->out_dtype));
  int32_t bufs[3] = {g->a_buf, g->b_buf, g->c_buf};
  for (int i = 0; i < 3; i++) {
    if (!buf_ok(p, bufs[i]))
      return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "gemm %c buffer b%d does not exist", KARGS(ki, k), "ABC"[i],
                           (int)bufs[i]);
    if (p->buffers[bufs[i]].dtype != k->out_dtype)
      return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "gemm %c buffer b%d is %s, the gemm is %s", KARGS(ki, k), "ABC"[i],
                           (int)bufs[i], kiln_dtype_name(p->buffers[bufs[i]].dtype), kiln_dtype_name(k->out_dtype));
  }
  if (g->c_buf != k->out_buf)
    return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "gemm writes b%d, the kernel's output is b%d", KARGS(ki, k),
                         (int)g->c_buf, (int)k->out_buf);
  if (g->m < 0 || g->n < 0 || g->k < 0 || g->n_batch < 0 || g->n_batch > 2 || g->a_off < 0 || g->b_off < 0 ||
      g->c_off < 0)
    return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "gemm sizes m %lld n %lld k %lld batches %d out of range",
                         KARGS(ki, k), (long long)g->m, (long long)g->n, (long long)g->k, (int)g->n_batch);
  kiln_status st = verify_gemm_subs(p, ki, k, d);
  return st == KILN_OK ? verify_gemm_schedule(p, ki, k, d) : st;
}

int kiln_ir_kx_n_operands(const kiln_kx *x) {
  switch (x->kind) {
  case KILN_KX_LOAD: return x->a[1] >= 0 ? 2 : 1;
  case KILN_KX_ALU: return (unsigned)x->op < KILN_OP_COUNT ? kiln_op_table[x->op].arity : 0;
  case KILN_KX_REDUCE: return 1;
  case KILN_KX_CHECK: return 2;
  default: return 0;
  }
}

bool kiln_ir_kx_rounds_narrow(const kiln_kx *x) {
  if (x->kind != KILN_KX_ALU && x->kind != KILN_KX_REDUCE) return false;
  if (x->dtype != KILN_F16 && x->dtype != KILN_BF16) return false;
  /* a cast rounds in its conversion */
  return x->op != KILN_OP_cast && !kiln_op_has(x->op, KILN_OPF_EXACT);
}

bool kiln_ir_kernel_loads(const kiln_kernel *k, int32_t buf) {
  for (int32_t i = 0; k && i < k->n_kx; i++)
    if (k->kx[i].kind == KILN_KX_LOAD && k->kx[i].buf == buf) return true;
  return false;
}

static bool plain_loop(const kiln_kernel *k) {
  if (k->kind != KILN_KERNEL_LOOP || k->n_vars != k->out.rank || k->pack || k->epilogue) return false;
  for (int32_t i = 0; i < k->n_kx; i++)
    if (k->kx[i].kind == KILN_KX_CHECK || k->kx[i].kind == KILN_KX_REDUCE) return false;
  return true;
}

bool kiln_ir_siblings_ok(const kiln_kernel *a, const kiln_kernel *b) {
  return plain_loop(a) && plain_loop(b) && kiln_shape_eq(&a->out, &b->out) && a->out_buf != b->out_buf &&
         !kiln_ir_kernel_loads(a, b->out_buf) && !kiln_ir_kernel_loads(b, a->out_buf);
}

kiln_status kiln_ir_kprogram_verify(const kiln_kprogram *p, kiln_diag *d) {
  if (!p) return kiln_diag_set(d, KILN_ERR_INTERNAL, "kprogram verify: no program");
  for (int i = 0; i < p->n_buffers; i++) {
    const kiln_buffer *b = &p->buffers[i];
    if ((unsigned)b->dtype >= KILN_DTYPE_COUNT || b->shape.rank < 0 || b->shape.rank > KILN_MAX_RANK)
      return kiln_diag_set(d, KILN_ERR_INTERNAL, "buffer b%d: bad dtype or rank", i);
    bool ok = true;
    switch (b->kind) {
    case KILN_BUF_INPUT: ok = b->index >= 0 && b->index < p->n_inputs; break;
    case KILN_BUF_OUTPUT: ok = b->index >= 0 && b->index < p->n_outputs; break;
    case KILN_BUF_CONST: ok = b->index >= 0 && b->index < p->n_consts; break;
    case KILN_BUF_ARENA: ok = b->offset >= 0; break;
    default: ok = false;
    }
    if (!ok)
      return kiln_diag_set(d, KILN_ERR_INTERNAL, "buffer b%d (%s): index %d / offset %lld out of range", i,
                           buf_kind_name(b->kind), (int)b->index, (long long)b->offset);
  }
  for (int32_t ki = 0; ki < p->n_kernels; ki++) {
    const kiln_kernel *k = &p->kernels[ki];
    if (!buf_ok(p, k->out_buf))
      return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "output buffer b%d does not exist", KARGS(ki, k), (int)k->out_buf);
    const kiln_buffer *ob = &p->buffers[k->out_buf];
    /* A buffer is dense row-major, so any shape with its element count addresses it the
     * same way (a kernel may store a reshaped view). */
    if (ob->dtype != k->out_dtype || kiln_shape_numel(&ob->shape) != kiln_shape_numel(&k->out))
      return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "writes %s%s into b%d, which is %s%s", KARGS(ki, k),
                           kiln_dtype_name(k->out_dtype), KILN_SHAPE_STR(&k->out), (int)k->out_buf,
                           kiln_dtype_name(ob->dtype), KILN_SHAPE_STR(&ob->shape));
    kiln_status st = KILN_OK;
    switch (k->kind) {
    case KILN_KERNEL_LOOP: st = verify_loop(p, ki, k, d); break;
    case KILN_KERNEL_GEMM: st = verify_gemm(p, ki, k, d); break;
    case KILN_KERNEL_OPAQUE:
      if ((unsigned)k->op >= KILN_OP_COUNT || kiln_op_table[k->op].category != KILN_CAT_OPAQUE)
        return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "opaque kernel runs %s, not an opaque op", KARGS(ki, k),
                             kiln_op_name(k->op));
      if (k->n_in_bufs != kiln_op_table[k->op].arity || (k->n_in_bufs > 0 && !k->in_bufs))
        return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "%s takes %d buffers, got %d", KARGS(ki, k), kiln_op_name(k->op),
                             kiln_op_table[k->op].arity, (int)k->n_in_bufs);
      for (int i = 0; i < k->n_in_bufs; i++)
        if (!buf_ok(p, k->in_bufs[i]))
          return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "input buffer b%d does not exist", KARGS(ki, k),
                               (int)k->in_bufs[i]);
      break;
    default: return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "unknown kernel kind %d", KARGS(ki, k), (int)k->kind);
    }
    if (st) return st;
    if (k->with_next && (ki + 1 >= p->n_kernels || !kiln_ir_siblings_ok(k, &p->kernels[ki + 1])))
      return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "runs with the next kernel, which is not its sibling",
                           KARGS(ki, k));
    if (k->with_next && ki > 0 && p->kernels[ki - 1].with_next)
      return kiln_diag_set(d, KILN_ERR_INTERNAL, KFMT "runs with the next kernel and the previous one: pairs only",
                           KARGS(ki, k));
  }
  return KILN_OK;
}

/* ====================================================================== stats */
static int64_t sat_mul(int64_t a, int64_t b) {
  if (a <= 0 || b <= 0) return 0;
  return a > INT64_MAX / b ? INT64_MAX : a * b;
}

static int64_t sat_add(int64_t a, int64_t b) { return a > INT64_MAX - b ? INT64_MAX : a + b; }

/* Value operations of one LOOP kernel over its whole domain. A node's dependency set is
 * the loop variables it reads (through its operands; a REDUCE removes its own); it costs
 * one operation per distinct value of those variables, i.e. as if every node were hoisted
 * to the outermost loop it can live in (what the backends' common-subexpression and
 * loop-invariant code motion aim at). A REDUCE accumulates once per value of its operand's
 * variables and its own. Index arithmetic (i64/bool nodes built only from VARs and CONSTs,
 * and in a pack sub-kernel the tile parameters loaded from param_buf) and loads are not
 * operations. */
static int64_t loop_flops(const kiln_kprogram *p, const kiln_kernel *k, int32_t param_buf) {
  if (k->kind != KILN_KERNEL_LOOP || k->n_kx <= 0 || !k->kx) return 0;
  uint64_t *dep = kiln_ir_malloc(p->alloc, sizeof(uint64_t) * (size_t)k->n_kx);
  bool *ix = kiln_ir_malloc(p->alloc, sizeof(bool) * (size_t)k->n_kx);
  int64_t total = 0;
  if (!dep || !ix) goto done;
  for (int32_t i = 0; i < k->n_kx; i++) {
    const kiln_kx *x = &k->kx[i];
    int n_ops = kiln_ir_kx_n_operands(x);
    /* Variables past 64 (the verifier refuses them) count as the last one. */
    uint64_t m = x->kind == KILN_KX_VAR ? 1ull << (x->var < 64 ? x->var : 63) : 0;
    bool index = x->kind == KILN_KX_VAR || x->kind == KILN_KX_CONST ||
                 (x->kind == KILN_KX_LOAD && param_buf >= 0 && x->buf == param_buf && x->dtype == KILN_I64) ||
                 (x->kind == KILN_KX_ALU && (x->dtype == KILN_I64 || x->dtype == KILN_BOOL));
    for (int j = 0; j < n_ops && j < 3; j++) {
      int32_t a = x->a[j];
      if (a < 0 || a >= i) continue; /* malformed: the verifier says so */
      m |= dep[a];
      if (x->kind != KILN_KX_LOAD) index = index && ix[a];
    }
    uint64_t own = 0;
    if (x->kind == KILN_KX_REDUCE)
      for (int32_t v = x->var; v < x->var + x->n_vars && v < 64; v++) own |= 1ull << v;
    if ((x->kind == KILN_KX_ALU && !index) || x->kind == KILN_KX_REDUCE) {
      int64_t n = 1;
      uint64_t all = m | own;
      for (int32_t v = 0; v < k->n_vars && v < 64; v++)
        if (all >> v & 1) n = sat_mul(n, k->extent ? k->extent[v] : 1);
      total = sat_add(total, n);
    }
    dep[i] = m & ~own;
    ix[i] = index;
  }
done:
  kiln_ir_free(p->alloc, dep);
  kiln_ir_free(p->alloc, ix);
  return total;
}

/* Adds the size of buffer b to *read unless it was counted already or is skipped. */
static void count_read(const kiln_kprogram *p, bool *seen, int32_t b, int32_t skip1, int32_t skip2, int64_t *read) {
  if (!buf_ok(p, b) || b == skip1 || b == skip2) return;
  if (seen) {
    if (seen[b]) return;
    seen[b] = true;
  }
  *read = sat_add(*read, (int64_t)p->buffers[b].nbytes);
}

static void count_loads(const kiln_kprogram *p, const kiln_kernel *k, bool *seen, int32_t skip1, int32_t skip2,
                        int64_t *read) {
  if (!k || k->kind != KILN_KERNEL_LOOP) return;
  for (int32_t i = 0; i < k->n_kx; i++)
    if (k->kx[i].kind == KILN_KX_LOAD) count_read(p, seen, k->kx[i].buf, skip1, skip2, read);
}

/* Traffic counts what crosses the kernel's boundary: each buffer it reads once at its full
 * size, its output once. What a GEMM's sub-kernels exchange with the product stays inside:
 * the packed B tile (scratch b_buf; A and a_buf with pack_a) and the pack parameters are
 * not traffic; the pack's own loads are. The epilogue reads the product where the GEMM left it and stores over it
 * (c_buf == out_buf): one write, and its other loads (bias, residual) are reads. */
void kiln_ir_kernel_stats(const kiln_kprogram *p, const kiln_kernel *k, kiln_kernel_stats *s) {
  memset(s, 0, sizeof *s);
  if (!p || !k) return;
  /* Without memory for the table, a buffer read twice counts twice (an overestimate). */
  bool *seen = p->n_buffers > 0 ? kiln_ir_malloc(p->alloc, (size_t)p->n_buffers) : NULL;
  if (seen) memset(seen, 0, (size_t)p->n_buffers);
  /* The second of a sibling pair runs in the first's loop nest: what both read crosses
   * the boundary once, counted with the first. */
  for (int32_t i = 1; seen && i < p->n_kernels; i++)
    if (&p->kernels[i] == k && p->kernels[i - 1].with_next) {
      int64_t ignored = 0;
      count_loads(p, &p->kernels[i - 1], seen, -1, -1, &ignored);
    }
  if (buf_ok(p, k->out_buf)) s->bytes_written = (int64_t)p->buffers[k->out_buf].nbytes;
  switch (k->kind) {
  case KILN_KERNEL_LOOP:
    count_loads(p, k, seen, -1, -1, &s->bytes_read);
    s->flops = loop_flops(p, k, -1);
    break;
  case KILN_KERNEL_GEMM: {
    const kiln_gemm_desc *g = &k->gemm;
    int64_t batches = 1;
    for (int i = 0; i < g->n_batch && i < 2; i++) batches = sat_mul(batches, g->batch[i]);
    count_read(p, seen, g->pack_a ? g->b_buf : g->a_buf, -1, -1, &s->bytes_read);
    if (k->pack) {
      count_loads(p, k->pack, seen, g->pack_a ? g->a_buf : g->b_buf, g->param_buf, &s->bytes_read);
      /* The pack runs once per column (row, pack_a) tile of each product. */
      int64_t ext = g->pack_a ? g->m : g->n;
      int64_t tiles = g->tile_n > 0 ? (ext + g->tile_n - 1) / g->tile_n : 1;
      s->flops = sat_add(s->flops, sat_mul(sat_mul(loop_flops(p, k->pack, g->param_buf), tiles), batches));
    } else {
      count_read(p, seen, g->b_buf, -1, -1, &s->bytes_read);
    }
    if (k->epilogue) {
      count_loads(p, k->epilogue, seen, g->c_buf, k->out_buf, &s->bytes_read);
      s->flops = sat_add(s->flops, loop_flops(p, k->epilogue, -1));
    }
    s->flops = sat_add(s->flops, sat_mul(sat_mul(sat_mul(sat_mul(2, g->m), g->n), g->k), batches));
    break;
  }
  case KILN_KERNEL_OPAQUE:
    /* A reference routine: its operation count is not modelled (0). */
    for (int32_t i = 0; i < k->n_in_bufs && k->in_bufs; i++) count_read(p, seen, k->in_bufs[i], -1, -1, &s->bytes_read);
    break;
  }
  kiln_ir_free(p->alloc, seen);
}

/* ====================================================================== run-time errors */
static const char *source_name(const kiln_kernel *k, int32_t i) {
  return i >= 0 && i < k->n_sources && k->sources && k->sources[i] ? k->sources[i] : "?";
}

void kiln_ir_kprogram_totals(const kiln_kprogram *p, kiln_kernel_stats *total) {
  memset(total, 0, sizeof *total);
  for (int32_t i = 0; i < p->n_kernels; i++) {
    kiln_kernel_stats s;
    kiln_ir_kernel_stats(p, &p->kernels[i], &s);
    total->bytes_read += s.bytes_read;
    total->bytes_written += s.bytes_written;
    total->flops += s.flops;
  }
}

/* CHECK kx i of k repeats an earlier one (same op, node and dim). */
static bool check_seen_before(const kiln_kernel *k, int32_t i) {
  const kiln_kx *x = &k->kx[i];
  for (int32_t q = 0; q < i; q++)
    if (k->kx[q].kind == KILN_KX_CHECK && k->kx[q].op == x->op && k->kx[q].var == x->var && k->kx[q].i == x->i)
      return true;
  return false;
}

/* A CHECK that an integer divisor is nonzero (the others check gather indices). */
static bool is_divisor_check(const kiln_kx *x) { return x->op == KILN_OP_div || x->op == KILN_OP_mod; }

void kiln_ir_kernel_error_message(const kiln_kprogram *p, int32_t ki, char *out, size_t n) {
  if (!n) return;
  if (!p || ki < 0 || ki >= p->n_kernels) {
    snprintf(out, n, "a kernel reported that its input data is invalid (kernel %d of none)", (int)ki);
    return;
  }
  const kiln_kernel *k = &p->kernels[ki];
  if (k->kind == KILN_KERNEL_GEMM) { /* the error came from a sub-kernel's CHECK */
    const kiln_kernel *subs[2] = {k->pack, k->epilogue};
    for (int s = 0; s < 2; s++)
      for (int32_t i = 0; subs[s] && i < subs[s]->n_kx; i++)
        if (subs[s]->kx[i].kind == KILN_KX_CHECK) {
          k = subs[s];
          s = 2;
          break;
        }
  }
  const char *kn = k->name ? k->name : "?";
  if (k->kind == KILN_KERNEL_OPAQUE) {
    const char *on = (unsigned)k->op < KILN_OP_COUNT ? kiln_op_name(k->op) : "?";
    if (k->op == KILN_OP_scatter && k->n_in_bufs > 0 && k->in_bufs && buf_ok(p, k->in_bufs[0])) {
      const kiln_shape *s = &p->buffers[k->in_bufs[0]].shape;
      int64_t dim = k->attrs.axis >= 0 && k->attrs.axis < s->rank ? s->dims[k->attrs.axis] : 0;
      snprintf(out, n,
               "index out of range in %s (node '%s', kernel %s): an input holds an index outside [-%lld, %lld)", on,
               source_name(k, k->n_sources - 1), kn, (long long)dim, (long long)dim);
    } else {
      snprintf(out, n, "%s refused its input data at run time (node '%s', kernel %s)", on,
               source_name(k, k->n_sources - 1), kn);
    }
    return;
  }
  /* The distinct checks of the kernel (usually one): gather indices, or integer divisors
   * (passes/lower.c) */
  int shown = 0, divisors = 0;
  const kiln_kx *first = NULL;
  for (int32_t i = 0; i < k->n_kx; i++) {
    const kiln_kx *x = &k->kx[i];
    if (x->kind != KILN_KX_CHECK || check_seen_before(k, i)) continue;
    if (!first) first = x;
    shown++;
    divisors += is_divisor_check(x);
  }
  if (shown == 0) {
    snprintf(out, n, "kernel %s reported that its input data is invalid", kn);
  } else if (shown == 1 && divisors) {
    snprintf(out, n, "integer %s by zero in %s (node '%s', kernel %s): a divisor is 0",
             first->op == KILN_OP_div ? "division" : "modulo", kiln_op_name(first->op), source_name(k, first->var), kn);
  } else if (shown == 1) {
    /* one check: "gather (node 'G', kernel k4): ... outside [-d, d)" */
    snprintf(out, n, "index out of range in %s (node '%s', kernel %s): an input holds an index outside [-%lld, %lld)",
             (unsigned)first->op < KILN_OP_COUNT ? kiln_op_name(first->op) : "?", source_name(k, first->var), kn,
             (long long)first->i, (long long)first->i);
  } else {
    size_t at = (size_t)snprintf(out, n, "%s in ", divisors ? "invalid input data" : "index out of range");
    int listed = 0;
    for (int32_t i = 0; i < k->n_kx && at < n; i++) {
      const kiln_kx *x = &k->kx[i];
      if (x->kind != KILN_KX_CHECK || check_seen_before(k, i)) continue;
      const char *on = (unsigned)x->op < KILN_OP_COUNT ? kiln_op_name(x->op) : "?";
      if (is_divisor_check(x))
        at += (size_t)snprintf(out + at, n - at, "%s%s (node '%s', a divisor of 0)", listed ? " or " : "", on,
                               source_name(k, x->var));
      else
        at += (size_t)snprintf(out + at, n - at, "%s%s (node '%s', indices in [-%lld, %lld))", listed ? " or " : "",
                               on, source_name(k, x->var), (long long)x->i, (long long)x->i);
      listed++;
    }
    if (at < n)
      snprintf(out + at, n - at, " in kernel %s%s", kn, divisors ? "" : ": an input holds an index outside its range");
  }
}

/* ====================================================================== analyses */
bool kiln_ir_kx_deps(const kiln_kernel *k, uint64_t *dep) {
  if (k->n_vars > 64) return false;
  for (int32_t i = 0; i < k->n_kx; i++) {
    const kiln_kx *x = &k->kx[i];
    uint64_t m = x->kind == KILN_KX_VAR && x->var >= 0 && x->var < 64 ? 1ull << x->var : 0;
    int n_ops = kiln_ir_kx_n_operands(x);
    for (int j = 0; j < n_ops; j++)
      if (x->a[j] >= 0 && x->a[j] < i) m |= dep[x->a[j]];
    if (x->kind == KILN_KX_REDUCE)
      for (int32_t v = x->var; v < x->var + x->n_vars && v < 64; v++)
        if (v >= 0) m &= ~(1ull << v);
    dep[i] = m;
  }
  return true;
}

/* ====================================================================== constants */
void *kiln_ir_kprogram_new_const(kiln_kprogram *p, kiln_dtype dt, const kiln_shape *s, const char *name, int32_t *buf) {
  *buf = -1;
  size_t nbytes = (size_t)kiln_shape_numel(s) * kiln_dtype_size(dt);
  kiln_buffer *bufs = kiln_arena_alloc(p->arena, sizeof(kiln_buffer) * (size_t)(p->n_buffers + 1));
  kiln_const *consts = kiln_arena_alloc(p->arena, sizeof(kiln_const) * (size_t)(p->n_consts + 1));
  char *raw = kiln_arena_alloc(p->arena, nbytes + 64);
  const char *nm = kiln_arena_strdup(p->arena, name);
  if (!bufs || !consts || !raw || !nm) return NULL;
  void *data = (void *)(((uintptr_t)raw + 63) & ~(uintptr_t)63);
  if (p->n_buffers) memcpy(bufs, p->buffers, sizeof(kiln_buffer) * (size_t)p->n_buffers);
  if (p->n_consts) memcpy(consts, p->consts, sizeof(kiln_const) * (size_t)p->n_consts);
  consts[p->n_consts] = (kiln_const){.dtype = dt, .shape = *s, .data = data, .nbytes = nbytes, .name = nm};
  bufs[p->n_buffers] = (kiln_buffer){.kind = KILN_BUF_CONST, .dtype = dt, .shape = *s, .index = p->n_consts,
                                     .nbytes = nbytes, .name = nm};
  p->buffers = bufs;
  p->consts = consts;
  p->n_consts++;
  *buf = p->n_buffers++;
  return data;
}
