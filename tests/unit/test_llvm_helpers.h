/* test_llvm_helpers.h - builds kernel programs by hand for the LLVM backend's tests:
 * buffers, LOOP/GEMM kernels and their kx nodes, plus JIT-and-run with a thread pool. */
#ifndef TEST_LLVM_HELPERS_H
#define TEST_LLVM_HELPERS_H

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "../../codegen/llvm.h"
#include "../../passes/passes.h"

#define TP_MAX_KERNELS 64
#define TP_MAX_BUFFERS 160
#define TP_MAX_KX 64

static inline kiln_kprogram *tp_new(void) {
  kiln_kprogram *p = kiln_ir_kprogram_create(NULL);
  cr_assert(p);
  p->kernels = kiln_arena_alloc(p->arena, sizeof(kiln_kernel) * TP_MAX_KERNELS);
  p->buffers = kiln_arena_alloc(p->arena, sizeof(kiln_buffer) * TP_MAX_BUFFERS);
  cr_assert(p->kernels && p->buffers);
  p->name = "test";
  return p;
}

static inline int32_t tp_buffer(kiln_kprogram *p, kiln_buffer_kind kind, kiln_dtype dt, int32_t rank,
                                const int64_t *dims, int32_t index) {
  cr_assert(p->n_buffers < TP_MAX_BUFFERS);
  kiln_buffer *b = &p->buffers[p->n_buffers];
  b->kind = kind;
  b->dtype = dt;
  b->shape = kiln_shape_make(rank, dims);
  b->index = index;
  b->nbytes = (size_t)kiln_shape_numel(&b->shape) * kiln_dtype_size(dt);
  b->name = "buf";
  return p->n_buffers++;
}

/* A LOOP kernel writing out_buf (its shape/dtype), with extra reduce extents. */
static inline kiln_kernel *tp_loop(kiln_kprogram *p, int32_t out_buf, int32_t n_red, const int64_t *red_extents) {
  cr_assert(p->n_kernels < TP_MAX_KERNELS);
  kiln_kernel *k = &p->kernels[p->n_kernels++];
  const kiln_buffer *ob = &p->buffers[out_buf];
  k->kind = KILN_KERNEL_LOOP;
  k->name = "loop";
  k->out_buf = out_buf;
  k->out_dtype = ob->dtype;
  k->out = ob->shape;
  k->n_vars = ob->shape.rank + n_red;
  k->extent = kiln_arena_alloc(p->arena, sizeof(int64_t) * (size_t)(k->n_vars + 1));
  for (int i = 0; i < ob->shape.rank; i++) k->extent[i] = ob->shape.dims[i];
  for (int i = 0; i < n_red; i++) k->extent[ob->shape.rank + i] = red_extents[i];
  k->kx = kiln_arena_alloc(p->arena, sizeof(kiln_kx) * TP_MAX_KX);
  return k;
}

static inline int32_t kx_push(kiln_kernel *k, kiln_kx x) {
  cr_assert(k->n_kx < TP_MAX_KX);
  k->kx[k->n_kx] = x;
  k->root = k->n_kx;
  return k->n_kx++;
}

static inline int32_t kx_f(kiln_kernel *k, kiln_dtype dt, double f) {
  return kx_push(k, (kiln_kx){.kind = KILN_KX_CONST, .dtype = dt, .f = f, .a = {-1, -1, -1}});
}
static inline int32_t kx_i(kiln_kernel *k, kiln_dtype dt, int64_t i) {
  return kx_push(k, (kiln_kx){.kind = KILN_KX_CONST, .dtype = dt, .i = i, .a = {-1, -1, -1}});
}
static inline int32_t kx_var(kiln_kernel *k, int32_t v) {
  return kx_push(k, (kiln_kx){.kind = KILN_KX_VAR, .dtype = KILN_I64, .var = v, .a = {-1, -1, -1}});
}
static inline int32_t kx_load(kiln_kernel *k, const kiln_kprogram *p, int32_t buf, int32_t off) {
  return kx_push(k, (kiln_kx){.kind = KILN_KX_LOAD, .dtype = p->buffers[buf].dtype, .buf = buf, .a = {off, -1, -1}});
}
static inline int32_t kx_mload(kiln_kernel *k, const kiln_kprogram *p, int32_t buf, int32_t off, int32_t mask,
                               double fill) {
  return kx_push(k, (kiln_kx){.kind = KILN_KX_LOAD, .dtype = p->buffers[buf].dtype, .buf = buf,
                              .a = {off, mask, -1}, .f = fill, .i = (int64_t)fill});
}
static inline int32_t kx_alu(kiln_kernel *k, kiln_op op, kiln_dtype dt, int32_t a, int32_t b, int32_t c) {
  return kx_push(k, (kiln_kx){.kind = KILN_KX_ALU, .op = op, .dtype = dt, .a = {a, b, c}});
}
static inline int32_t kx_alu_kind(kiln_kernel *k, kiln_op op, kiln_dtype dt, int32_t a, int32_t b, int32_t kind) {
  return kx_push(k, (kiln_kx){.kind = KILN_KX_ALU, .op = op, .dtype = dt, .kind_attr = kind, .a = {a, b, -1}});
}
static inline int32_t kx_reduce(kiln_kernel *k, kiln_op op, kiln_dtype dt, int32_t var, int32_t n_vars, int32_t a,
                                int32_t kind) {
  return kx_push(k, (kiln_kx){.kind = KILN_KX_REDUCE, .op = op, .dtype = dt, .var = var, .n_vars = n_vars,
                              .kind_attr = kind, .a = {a, -1, -1}});
}
/* sum of vars[i] * strides[i], in i64 */
static inline int32_t kx_offset(kiln_kernel *k, int32_t n, const int32_t *vars, const int64_t *strides) {
  int32_t acc = kx_i(k, KILN_I64, 0);
  for (int32_t i = 0; i < n; i++) {
    int32_t v = kx_var(k, vars[i]);
    int32_t t = kx_alu(k, KILN_OP_mul, KILN_I64, v, kx_i(k, KILN_I64, strides[i]), -1);
    acc = kx_alu(k, KILN_OP_add, KILN_I64, acc, t, -1);
  }
  return acc;
}

/* Elementwise copy-through kernel: out[i] = f(in[i]) on flat rank-1 buffers is built by
 * callers; this gives the flat offset of a rank-1 output. */
static inline int32_t kx_flat(kiln_kernel *k) { return kx_var(k, 0); }

/* Schedules hand-built program p for the host, as the pipeline's last pass would (the
 * renderer obeys schedules and makes none). */
static inline void tp_schedule(kiln_kprogram *p) {
  kiln_pass_target t;
  memset(&t, 0, sizeof t);
  kiln_llvm_target_desc(NULL, NULL, &t.desc);
  kiln_diag d = {0};
  cr_assert_eq(kiln_pass_schedule(p, &t, &d), KILN_OK, "schedule: %s", d.msg);
}

/* Schedules and JIT-compiles p (the test fails with the diag when it does not compile). */
static inline kiln_rt_entry_fn tp_compile(kiln_kprogram *p, kiln_llvm_jit **jit) {
  tp_schedule(p);
  kiln_diag d = {0};
  kiln_rt_entry_fn entry = NULL;
  kiln_status st = kiln_llvm_jit_compile(p, jit, &entry, &d);
  cr_assert_eq(st, KILN_OK, "jit: %s", d.msg);
  cr_assert(entry);
  return entry;
}

/* Runs a compiled program once with a pool of `threads` (0: a NULL pool). */
static inline void tp_exec(kiln_rt_entry_fn entry, void **bufs, int threads) {
  kiln_rt_pool *pool = threads > 0 ? kiln_rt_pool_create(NULL, threads, -1) : NULL;
  cr_assert(threads == 0 || pool);
  entry(bufs, pool);
  if (pool) kiln_rt_pool_destroy(pool);
}

/* Thread counts every program is run with. */
static const int tp_threads[] = {1, 2, 0};
#define TP_N_THREADS 3

static inline bool tp_close(double got, double want, double tol) {
  if (isnan(want)) return isnan(got);
  if (isinf(want)) return got == want;
  return fabs(got - want) <= tol * (1.0 + fabs(want));
}

#endif
