/* test_cuda_backend.c - the CUDA backend on hand-built kernel programs: rendering
 * (broadcast index math, reductions, argmax ties, masked loads, f16/bf16; every elementwise
 * op at every dtype is test_backend_ops.c's), NVRTC compilation for sm_90 (cubin) and
 * compute_90 (PTX), the rendered source run on the host (cuda_host.h: compiled as C++ with
 * a few shims for CUDA built-ins) to check values without a GPU, and the executor: KILN_ERR_NO_DEVICE without a GPU, real runs with one.
 */
#include <criterion/criterion.h>

#include "cuda_host.h"
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../cuda/cuda.h"
#include "../../passes/passes.h"

/* ------------------------------------------------------------------ building programs */
#define MAXK 64
#define MAXB 128
#define MAXKX 160

/* Schedules hand-built program p for the CUDA backend, as the pipeline's last pass would
 * (the renderer obeys schedules and makes none). */
static void tc_schedule(kiln_kprogram *p) {
  kiln_pass_target t;
  memset(&t, 0, sizeof t);
  kiln_cuda_target_desc(&t.desc);
  kiln_diag d = {0};
  cr_assert_eq(kiln_pass_schedule(p, &t, &d), KILN_OK, "schedule: %s", d.msg);
}

static kiln_kprogram *tp_new(void) {
  kiln_kprogram *p = kiln_ir_kprogram_create(NULL);
  cr_assert(p);
  p->kernels = kiln_arena_alloc(p->arena, sizeof(kiln_kernel) * MAXK);
  p->buffers = kiln_arena_alloc(p->arena, sizeof(kiln_buffer) * MAXB);
  p->inputs = kiln_arena_alloc(p->arena, sizeof(kiln_graph_io) * MAXB);
  p->outputs = kiln_arena_alloc(p->arena, sizeof(kiln_graph_io) * MAXB);
  p->in_dtypes = kiln_arena_alloc(p->arena, sizeof(kiln_dtype) * MAXB);
  p->out_dtypes = kiln_arena_alloc(p->arena, sizeof(kiln_dtype) * MAXB);
  p->in_shapes = kiln_arena_alloc(p->arena, sizeof(kiln_shape) * MAXB);
  p->out_shapes = kiln_arena_alloc(p->arena, sizeof(kiln_shape) * MAXB);
  p->name = "test";
  return p;
}

static int32_t tp_buf(kiln_kprogram *p, kiln_buffer_kind kind, kiln_dtype dt, int rank, const int64_t *dims) {
  cr_assert(p->n_buffers < MAXB);
  kiln_buffer *b = &p->buffers[p->n_buffers];
  b->kind = kind;
  b->dtype = dt;
  b->shape = kiln_shape_make(rank, dims);
  b->nbytes = (size_t)kiln_shape_numel(&b->shape) * kiln_dtype_size(dt);
  b->name = "buf";
  if (kind == KILN_BUF_INPUT) {
    b->index = p->n_inputs;
    p->in_dtypes[p->n_inputs] = dt;
    p->in_shapes[p->n_inputs] = b->shape;
    p->inputs[p->n_inputs++].name = "in";
  } else if (kind == KILN_BUF_OUTPUT) {
    b->index = p->n_outputs;
    p->out_dtypes[p->n_outputs] = dt;
    p->out_shapes[p->n_outputs] = b->shape;
    p->outputs[p->n_outputs++].name = "out";
  } else if (kind == KILN_BUF_ARENA) {
    b->offset = (int64_t)p->arena_bytes;
    p->arena_bytes += (b->nbytes + 63) / 64 * 64;
  }
  return p->n_buffers++;
}

/* A LOOP kernel writing buffer out_buf (its shape is the domain), with n_red extra
 * reduce variables of the given extents. */
static kiln_kernel *tp_loop(kiln_kprogram *p, const char *name, int32_t out_buf, int n_red, const int64_t *red) {
  cr_assert(p->n_kernels < MAXK);
  kiln_kernel *k = &p->kernels[p->n_kernels++];
  const kiln_buffer *b = &p->buffers[out_buf];
  k->kind = KILN_KERNEL_LOOP;
  k->name = name;
  k->out_buf = out_buf;
  k->out_dtype = b->dtype;
  k->out = b->shape;
  k->n_vars = b->shape.rank + n_red;
  k->extent = kiln_arena_alloc(p->arena, sizeof(int64_t) * (size_t)(k->n_vars + 1));
  for (int i = 0; i < b->shape.rank; i++) k->extent[i] = b->shape.dims[i];
  for (int i = 0; i < n_red; i++) k->extent[b->shape.rank + i] = red[i];
  k->kx = kiln_arena_alloc(p->arena, sizeof(kiln_kx) * MAXKX);
  return k;
}

static int32_t kx_push(kiln_kernel *k, kiln_kx x) {
  cr_assert(k->n_kx < MAXKX);
  k->kx[k->n_kx] = x;
  k->root = k->n_kx;
  return k->n_kx++;
}
static int32_t K_VAR(kiln_kernel *k, int v) {
  return kx_push(k, (kiln_kx){.kind = KILN_KX_VAR, .dtype = KILN_I64, .var = v, .a = {-1, -1, -1}});
}
static int32_t K_CI(kiln_kernel *k, kiln_dtype dt, int64_t i) {
  return kx_push(k, (kiln_kx){.kind = KILN_KX_CONST, .dtype = dt, .i = i, .a = {-1, -1, -1}});
}
static int32_t K_CF(kiln_kernel *k, kiln_dtype dt, double f) {
  return kx_push(k, (kiln_kx){.kind = KILN_KX_CONST, .dtype = dt, .f = f, .a = {-1, -1, -1}});
}
static int32_t K_LOAD(kiln_kernel *k, int32_t buf, kiln_dtype dt, int32_t idx, int32_t mask, double fill) {
  return kx_push(k, (kiln_kx){.kind = KILN_KX_LOAD, .dtype = dt, .buf = buf, .a = {idx, mask, -1},
                              .f = fill, .i = (int64_t)fill});
}
static int32_t K_ALU(kiln_kernel *k, kiln_op op, kiln_dtype dt, int32_t a, int32_t b, int32_t c) {
  return kx_push(k, (kiln_kx){.kind = KILN_KX_ALU, .op = op, .dtype = dt, .a = {a, b, c}});
}
static int32_t K_ALUK(kiln_kernel *k, kiln_op op, kiln_dtype dt, int32_t a, int32_t b, int kind) {
  return kx_push(k, (kiln_kx){.kind = KILN_KX_ALU, .op = op, .dtype = dt, .a = {a, b, -1}, .kind_attr = kind});
}
static int32_t K_RED(kiln_kernel *k, kiln_op op, kiln_dtype dt, int var, int n, int32_t body, int kind) {
  return kx_push(k, (kiln_kx){.kind = KILN_KX_REDUCE, .op = op, .dtype = dt, .var = var, .n_vars = n,
                              .a = {body, -1, -1}, .kind_attr = kind});
}
/* Row-major offset of variables vars[] in dims[] (dims of size 1 contribute nothing, so a
 * broadcast operand just lists its own dims with 1 where it is stretched). */
static int32_t K_INDEX(kiln_kernel *k, int n, const int *vars, const int64_t *dims) {
  int32_t acc = K_CI(k, KILN_I64, 0);
  int64_t stride = 1;
  for (int i = n - 1; i >= 0; i--) {
    if (dims[i] != 1) {
      int32_t term = K_ALU(k, KILN_OP_mul, KILN_I64, K_VAR(k, vars[i]), K_CI(k, KILN_I64, stride), -1);
      acc = K_ALU(k, KILN_OP_add, KILN_I64, acc, term, -1);
    }
    stride *= dims[i];
  }
  return acc;
}

/* ------------------------------------------------------------------ helpers */
static char *render_ok(kiln_kprogram *p) {
  kiln_diag d = {0};
  char *src = NULL;
  tc_schedule(p);
  kiln_status st = kiln_cuda_render(p, &src, &d);
  cr_assert_eq(st, KILN_OK, "render failed: %s", d.msg);
  cr_assert(src);
  char name[32];
  for (int32_t i = 0; i < p->n_kernels; i++) {
    snprintf(name, sizeof name, "void kiln_k%d(", i);
    if (p->kernels[i].kind == KILN_KERNEL_LOOP) cr_assert(strstr(src, name), "no %s in:\n%s", name, src);
    else cr_assert_null(strstr(src, name), "%s rendered for a host-side kernel", name);
  }
  return src;
}

/* NVRTC for sm_90 (cubin) and compute_90 (PTX); skipped only when NVRTC cannot be loaded. */
static void compile_both(const char *src) {
  if (!kiln_cuda_nvrtc_available()) {
    printf("skipping NVRTC compilation: libnvrtc cannot be loaded\n");
    return;
  }
  for (int cubin = 1; cubin >= 0; cubin--) {
    kiln_diag d = {0};
    void *img = NULL;
    size_t n = 0;
    kiln_status st = kiln_cuda_compile(NULL, src, cubin ? "sm_90" : "compute_90", cubin, &img, &n, &d);
    cr_assert_eq(st, KILN_OK, "NVRTC (%s) failed: %s\nsource:\n%s", cubin ? "cubin" : "ptx", d.msg, src);
    cr_assert(n > 0 && img);
    if (cubin) cr_assert_eq(memcmp(img, "\177ELF", 4), 0, "a cubin is an ELF image");
    else cr_assert(strstr((const char *)img, ".entry kiln_k"), "PTX has the kernel entries");
    free(img);
  }
}

static bool close_f(double a, double b, double tol) {
  if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
  if (isinf(a) || isinf(b)) return a == b;
  return fabs(a - b) <= tol * (1 + fabs(b));
}

/* ------------------------------------------------------------------ programs */
/* out[2,3,4] = a[2,3,4] + b[4] * c[3,1] (broadcast index math). */
static kiln_kprogram *prog_broadcast(int32_t *bufs3) {
  kiln_kprogram *p = tp_new();
  int32_t a = tp_buf(p, KILN_BUF_INPUT, KILN_F32, 3, (int64_t[]){2, 3, 4});
  int32_t b = tp_buf(p, KILN_BUF_INPUT, KILN_F32, 1, (int64_t[]){4});
  int32_t c = tp_buf(p, KILN_BUF_INPUT, KILN_F32, 2, (int64_t[]){3, 1});
  int32_t o = tp_buf(p, KILN_BUF_OUTPUT, KILN_F32, 3, (int64_t[]){2, 3, 4});
  kiln_kernel *k = tp_loop(p, "k0_add_mul", o, 0, NULL);
  int32_t la = K_LOAD(k, a, KILN_F32, K_INDEX(k, 3, (int[]){0, 1, 2}, (int64_t[]){2, 3, 4}), -1, 0);
  int32_t lb = K_LOAD(k, b, KILN_F32, K_INDEX(k, 1, (int[]){2}, (int64_t[]){4}), -1, 0);
  int32_t lc = K_LOAD(k, c, KILN_F32, K_INDEX(k, 2, (int[]){1, 2}, (int64_t[]){3, 1}), -1, 0);
  K_ALU(k, KILN_OP_add, KILN_F32, la, K_ALU(k, KILN_OP_mul, KILN_F32, lb, lc, -1), -1);
  if (bufs3) bufs3[0] = a, bufs3[1] = b, bufs3[2] = c, bufs3[3] = o;
  return p;
}

/* in[2,3,4] -> sum over the last axis into the arena, max over it into out0, then
 * out1[2,3] = arena * 2, argmax (first and last of ties) into out2/out3 (i64). */
static kiln_kprogram *prog_reduce(void) {
  kiln_kprogram *p = tp_new();
  int32_t in = tp_buf(p, KILN_BUF_INPUT, KILN_F32, 3, (int64_t[]){2, 3, 4});
  int32_t tmp = tp_buf(p, KILN_BUF_ARENA, KILN_F32, 2, (int64_t[]){2, 3});
  int32_t omax = tp_buf(p, KILN_BUF_OUTPUT, KILN_F32, 2, (int64_t[]){2, 3});
  int32_t osum = tp_buf(p, KILN_BUF_OUTPUT, KILN_F32, 2, (int64_t[]){2, 3});
  int32_t oam = tp_buf(p, KILN_BUF_OUTPUT, KILN_I64, 2, (int64_t[]){2, 3});
  int32_t oaml = tp_buf(p, KILN_BUF_OUTPUT, KILN_I64, 2, (int64_t[]){2, 3});
  kiln_op ops[4] = {KILN_OP_reduce_sum, KILN_OP_reduce_max, KILN_OP_argmax, KILN_OP_argmax};
  int32_t outs[4] = {tmp, omax, oam, oaml};
  for (int r = 0; r < 4; r++) {
    kiln_kernel *k = tp_loop(p, "reduce", outs[r], 1, (int64_t[]){4});
    int32_t x = K_LOAD(k, in, KILN_F32, K_INDEX(k, 3, (int[]){0, 1, 2}, (int64_t[]){2, 3, 4}), -1, 0);
    K_RED(k, ops[r], r >= 2 ? KILN_I64 : KILN_F32, 2, 1, x, r == 3);
  }
  kiln_kernel *k = tp_loop(p, "k_scale", osum, 0, NULL);
  int32_t x = K_LOAD(k, tmp, KILN_F32, K_INDEX(k, 2, (int[]){0, 1}, (int64_t[]){2, 3}), -1, 0);
  K_ALU(k, KILN_OP_mul, KILN_F32, x, K_CF(k, KILN_F32, 2.0), -1);
  return p;
}

/* Nested reduces and a shared-variable softmax denominator:
 * out[2] = sum_i max_j in[v0, i, j]  and  den[2] = sum_ij exp(in - max_ij in). */
static kiln_kprogram *prog_nested(void) {
  kiln_kprogram *p = tp_new();
  int32_t in = tp_buf(p, KILN_BUF_INPUT, KILN_F32, 3, (int64_t[]){2, 3, 4});
  int32_t o = tp_buf(p, KILN_BUF_OUTPUT, KILN_F32, 1, (int64_t[]){2});
  int32_t den = tp_buf(p, KILN_BUF_OUTPUT, KILN_F32, 1, (int64_t[]){2});
  kiln_kernel *k = tp_loop(p, "k_sum_of_max", o, 2, (int64_t[]){3, 4});
  int32_t x = K_LOAD(k, in, KILN_F32, K_INDEX(k, 3, (int[]){0, 1, 2}, (int64_t[]){2, 3, 4}), -1, 0);
  int32_t mx = K_RED(k, KILN_OP_reduce_max, KILN_F32, 2, 1, x, 0);
  K_RED(k, KILN_OP_reduce_sum, KILN_F32, 1, 1, mx, 0);
  k = tp_loop(p, "k_softmax_den", den, 2, (int64_t[]){3, 4});
  x = K_LOAD(k, in, KILN_F32, K_INDEX(k, 3, (int[]){0, 1, 2}, (int64_t[]){2, 3, 4}), -1, 0);
  mx = K_RED(k, KILN_OP_reduce_max, KILN_F32, 1, 2, x, 0);
  /* the same load reused after the first loop closed: must be recomputed in the second */
  int32_t e = K_ALU(k, KILN_OP_exp, KILN_F32, K_ALU(k, KILN_OP_sub, KILN_F32, x, mx, -1), -1, -1);
  K_RED(k, KILN_OP_reduce_sum, KILN_F32, 1, 2, e, 0);
  return p;
}

/* pad: out[6] = (1 <= v0 < 5) ? in[v0 - 1] : -7 (masked load). */
static kiln_kprogram *prog_pad(void) {
  kiln_kprogram *p = tp_new();
  int32_t in = tp_buf(p, KILN_BUF_INPUT, KILN_F32, 1, (int64_t[]){4});
  int32_t o = tp_buf(p, KILN_BUF_OUTPUT, KILN_F32, 1, (int64_t[]){6});
  kiln_kernel *k = tp_loop(p, "k_pad", o, 0, NULL);
  int32_t i = K_ALU(k, KILN_OP_sub, KILN_I64, K_VAR(k, 0), K_CI(k, KILN_I64, 1), -1);
  int32_t m = K_ALU(k, KILN_OP_and, KILN_BOOL, K_ALU(k, KILN_OP_ge, KILN_BOOL, i, K_CI(k, KILN_I64, 0), -1),
                    K_ALU(k, KILN_OP_lt, KILN_BOOL, i, K_CI(k, KILN_I64, 4), -1), -1);
  K_LOAD(k, in, KILN_F32, i, m, -7.0);
  return p;
}

/* ------------------------------------------------------------------ tests: render + NVRTC */
Test(cuda_render, broadcast_elementwise_renders_and_compiles) {
  kiln_kprogram *p = prog_broadcast(NULL);
  char *src = render_ok(p);
  cr_assert(strstr(src, "((const float*)bufs[0])["), "typed pointer loads");
  cr_assert(strstr(src, "rem % 4ll"), "coordinates from the flat index");
  compile_both(src);
  free(src);
  kiln_ir_kprogram_destroy(p);
}

Test(cuda_render, reductions_and_argmax_render_and_compile) {
  kiln_kprogram *p = prog_reduce();
  char *src = render_ok(p);
  cr_assert(strstr(src, "for (long long v2 = 0; v2 < 4ll; ++v2)"));
  cr_assert(strstr(src, "kiln_fmaxf("), "max reduce propagates NaN");
  cr_assert(strstr(src, ">= best"), "argmax kind=1 keeps the last of ties");
  compile_both(src);
  free(src);
  kiln_ir_kprogram_destroy(p);
}

Test(cuda_render, nested_and_masked_render_and_compile) {
  kiln_kprogram *p = prog_nested();
  char *src = render_ok(p);
  compile_both(src);
  free(src);
  kiln_ir_kprogram_destroy(p);
  p = prog_pad();
  src = render_ok(p);
  cr_assert(strstr(src, " ? ((const float*)bufs[0])["), "masked load is conditional");
  compile_both(src);
  free(src);
  kiln_ir_kprogram_destroy(p);
}

/* Every elementwise op at every dtype it accepts, rendered, NVRTC-compiled and run on
 * the host against the interpreter: tests/unit/test_backend_ops.c. */

Test(cuda_render, f16_and_bf16_loads_and_stores) {
  kiln_kprogram *p = tp_new();
  int32_t h = tp_buf(p, KILN_BUF_INPUT, KILN_F16, 1, (int64_t[]){8});
  int32_t bf = tp_buf(p, KILN_BUF_INPUT, KILN_BF16, 1, (int64_t[]){8});
  int32_t oh = tp_buf(p, KILN_BUF_OUTPUT, KILN_F16, 1, (int64_t[]){8});
  int32_t ob = tp_buf(p, KILN_BUF_OUTPUT, KILN_BF16, 1, (int64_t[]){8});
  int32_t of = tp_buf(p, KILN_BUF_OUTPUT, KILN_F16, 1, (int64_t[]){8});
  int32_t hs = tp_buf(p, KILN_BUF_OUTPUT, KILN_F16, 0, NULL);
  kiln_kernel *k = tp_loop(p, "k_h", oh, 0, NULL);
  K_ALU(k, KILN_OP_mul, KILN_F16, K_LOAD(k, h, KILN_F16, K_VAR(k, 0), -1, 0), K_CF(k, KILN_F16, 3.0), -1);
  k = tp_loop(p, "k_bf", ob, 0, NULL);
  K_ALU(k, KILN_OP_mul, KILN_BF16, K_LOAD(k, bf, KILN_BF16, K_VAR(k, 0), -1, 0), K_CF(k, KILN_BF16, 3.0), -1);
  /* f32 -> f16 cast of a bf16 value: rounds to f16 */
  k = tp_loop(p, "k_cast", of, 0, NULL);
  K_ALU(k, KILN_OP_cast, KILN_F16, K_LOAD(k, bf, KILN_BF16, K_VAR(k, 0), -1, 0), -1, -1);
  k = tp_loop(p, "k_sum_f16", hs, 1, (int64_t[]){8}); /* rank-0 output, f16 reduce */
  K_RED(k, KILN_OP_reduce_sum, KILN_F16, 0, 1, K_LOAD(k, h, KILN_F16, K_VAR(k, 0), -1, 0), 0);
  char *src = render_ok(p);
  cr_assert(strstr(src, "kiln_h2f(((const unsigned short*)bufs[0])"), "f16 loads go through bits");
  cr_assert(strstr(src, "kiln_f2bf("), "bf16 stores go through bits");
  cr_assert_null(strstr(src, "cuda_fp16"), "no dependency on cuda_fp16.h");
  compile_both(src);
  host_mod m = {0};
  if (host_build(src, &m)) {
    float vals[8] = {0.1f, -1.5f, 65504.0f, 6e-8f, -0.0f, INFINITY, 1000.3f, 2.0f / 3};
    uint16_t hin[8], bin[8], hout[8], bout[8], fout[8], sum;
    for (int i = 0; i < 8; i++) hin[i] = kiln_f32_to_f16(vals[i]), bin[i] = kiln_f32_to_bf16(vals[i]);
    void *bufs[] = {hin, bin, hout, bout, fout, &sum};
    host_run(&m, p, bufs);
    float s = 0;
    for (int i = 0; i < 8; i++) {
      cr_expect_eq(hout[i], kiln_f32_to_f16(kiln_f16_to_f32(hin[i]) * 3.0f), "f16 at %d", i);
      cr_expect_eq(bout[i], kiln_f32_to_bf16(kiln_bf16_to_f32(bin[i]) * 3.0f), "bf16 at %d", i);
      cr_expect_eq(fout[i], kiln_f32_to_f16(kiln_bf16_to_f32(bin[i])), "bf16->f16 cast at %d", i);
      s += kiln_f16_to_f32(hin[i]);
    }
    cr_expect_eq(sum, kiln_f32_to_f16(s), "f16 sum");
    host_free(&m);
  }
  free(src);
  kiln_ir_kprogram_destroy(p);
}

/* Narrow floats compute in float, but every value of an f16/bf16 kx is one of its dtype
 * (a graph node's result, rounded as the interpreter rounds it): y = x * (1/3) + x
 * rounds the product before the add; s = sum(x) * 0.7 rounds the sum before the
 * multiply. */
Test(cuda_render, f16_and_bf16_round_every_intermediate) {
  kiln_kprogram *p = tp_new();
  int32_t h = tp_buf(p, KILN_BUF_INPUT, KILN_F16, 1, (int64_t[]){8});
  int32_t bf = tp_buf(p, KILN_BUF_INPUT, KILN_BF16, 1, (int64_t[]){8});
  int32_t oh = tp_buf(p, KILN_BUF_OUTPUT, KILN_F16, 1, (int64_t[]){8});
  int32_t ob = tp_buf(p, KILN_BUF_OUTPUT, KILN_BF16, 1, (int64_t[]){8});
  int32_t os = tp_buf(p, KILN_BUF_OUTPUT, KILN_F16, 0, NULL);
  for (int i = 0; i < 2; i++) {
    kiln_dtype dt = i ? KILN_BF16 : KILN_F16;
    kiln_kernel *k = tp_loop(p, i ? "k_bf" : "k_h", i ? ob : oh, 0, NULL);
    int32_t x = K_LOAD(k, i ? bf : h, dt, K_VAR(k, 0), -1, 0);
    K_ALU(k, KILN_OP_add, dt, K_ALU(k, KILN_OP_mul, dt, x, K_CF(k, dt, 1.0 / 3), -1), x, -1);
  }
  kiln_kernel *k = tp_loop(p, "k_sum", os, 1, (int64_t[]){8});
  int32_t s = K_RED(k, KILN_OP_reduce_sum, KILN_F16, 0, 1, K_LOAD(k, h, KILN_F16, K_VAR(k, 0), -1, 0), 0);
  K_ALU(k, KILN_OP_mul, KILN_F16, s, K_CF(k, KILN_F16, 0.7), -1);
  char *src = render_ok(p);
  cr_assert(strstr(src, "= kiln_rh(") && strstr(src, "= kiln_rbf("), "no rounding of intermediates in:\n%s", src);
  compile_both(src);
  host_mod m = {0};
  if (host_build(src, &m)) {
    float vals[8] = {0.1f, -1.7f, 3.3f, 100.9f, 0.77f, -5.1f, 1000.3f, 2.0f / 3};
    uint16_t hin[8], bin[8], hout[8], bout[8], sum;
    for (int i = 0; i < 8; i++) hin[i] = kiln_f32_to_f16(vals[i]), bin[i] = kiln_f32_to_bf16(vals[i]);
    void *bufs[] = {hin, bin, hout, bout, &sum};
    host_run(&m, p, bufs);
    float th = kiln_f16_to_f32(kiln_f32_to_f16(1.0f / 3)), tb = kiln_bf16_to_f32(kiln_f32_to_bf16(1.0f / 3));
    float sh = 0;
    int unrounded_differs = 0; /* the inputs tell the two apart */
    for (int i = 0; i < 8; i++) {
      float xh = kiln_f16_to_f32(hin[i]), xb = kiln_bf16_to_f32(bin[i]);
      uint16_t wh = kiln_f32_to_f16(kiln_f16_to_f32(kiln_f32_to_f16(xh * th)) + xh);
      uint16_t wb = kiln_f32_to_bf16(kiln_bf16_to_f32(kiln_f32_to_bf16(xb * tb)) + xb);
      unrounded_differs += wh != kiln_f32_to_f16(xh * th + xh);
      unrounded_differs += wb != kiln_f32_to_bf16(xb * tb + xb);
      cr_expect_eq(hout[i], wh, "f16 at %d: got %#x want %#x", i, hout[i], wh);
      cr_expect_eq(bout[i], wb, "bf16 at %d: got %#x want %#x", i, bout[i], wb);
      sh += xh;
    }
    cr_assert(unrounded_differs > 0);
    float c07 = kiln_f16_to_f32(kiln_f32_to_f16(0.7f));
    uint16_t ws = kiln_f32_to_f16(kiln_f16_to_f32(kiln_f32_to_f16(sh)) * c07);
    cr_assert_neq(ws, kiln_f32_to_f16(sh * c07), "the inputs tell a rounded sum apart");
    cr_expect_eq(sum, ws, "f16 sum * 0.7: got %#x want %#x", sum, ws);
    host_free(&m);
  }
  free(src);
  kiln_ir_kprogram_destroy(p);
}

Test(cuda_render, programs_compute_the_right_values_on_the_host) {
  /* broadcast */
  int32_t ids[4];
  kiln_kprogram *p = prog_broadcast(ids);
  char *src = render_ok(p);
  host_mod m = {0};
  if (!host_build(src, &m)) {
    printf("skipping host run: no C++ compiler\n");
    free(src);
    kiln_ir_kprogram_destroy(p);
    return;
  }
  float a[24], b[4] = {1, 2, 3, 4}, c[3] = {10, 20, 30}, o[24];
  for (int i = 0; i < 24; i++) a[i] = (float)i;
  void *bufs[] = {a, b, c, o};
  host_run(&m, p, bufs);
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 3; j++)
      for (int l = 0; l < 4; l++)
        cr_expect_eq(o[i * 12 + j * 4 + l], a[i * 12 + j * 4 + l] + b[l] * c[j], "broadcast at %d,%d,%d", i, j, l);
  host_free(&m);
  free(src);
  kiln_ir_kprogram_destroy(p);

  /* reductions: rows with ties and a NaN */
  p = prog_reduce();
  src = render_ok(p);
  host_build(src, &m);
  float in[24] = {1, 5, 5, 2, /**/ -1, -3, -1, -2, /**/ 0, 0, 0, 0,
                  4, 3, 2, 1, /**/ 1, NAN, 3, NAN, /**/ -INFINITY, -INFINITY, -INFINITY, -INFINITY};
  float arena[8], omax[6], osum[6];
  int64_t am[6], aml[6];
  void *rb[] = {in, arena, omax, osum, am, aml};
  host_run(&m, p, rb);
  float wmax[6] = {5, -1, 0, 4, NAN, -INFINITY}, wsum[6] = {26, -14, 0, 20, NAN, -INFINITY};
  /* row 4 {1, NaN, 3, NaN}: NaNs tie (ops.def), so the last of ties is the second NaN */
  int64_t wam[6] = {1, 0, 0, 0, 1, 0}, waml[6] = {2, 2, 3, 0, 3, 3};
  for (int i = 0; i < 6; i++) {
    cr_expect(close_f(omax[i], wmax[i], 0), "max row %d: %g", i, omax[i]);
    cr_expect(close_f(osum[i], wsum[i], 0), "2*sum row %d: %g", i, osum[i]);
    cr_expect_eq(am[i], wam[i], "argmax row %d: %ld", i, (long)am[i]);
    cr_expect_eq(aml[i], waml[i], "argmax(last) row %d: %ld", i, (long)aml[i]);
  }
  host_free(&m);
  free(src);
  kiln_ir_kprogram_destroy(p);

  /* nested reduces, and a value reused after its loop closed */
  p = prog_nested();
  src = render_ok(p);
  host_build(src, &m);
  float x[24], on[2], od[2];
  for (int i = 0; i < 24; i++) x[i] = (float)((i * 7) % 11) - 5;
  void *nb[] = {x, on, od};
  host_run(&m, p, nb);
  for (int b0 = 0; b0 < 2; b0++) {
    float s = 0, mx = -INFINITY, den = 0;
    for (int i = 0; i < 3; i++) {
      float rm = -INFINITY;
      for (int j = 0; j < 4; j++) rm = fmaxf(rm, x[b0 * 12 + i * 4 + j]);
      s += rm;
      mx = fmaxf(mx, rm);
    }
    for (int i = 0; i < 12; i++) den += expf(x[b0 * 12 + i] - mx);
    cr_expect_eq(on[b0], s, "sum of row maxima %d: %g vs %g", b0, on[b0], s);
    cr_expect(close_f(od[b0], den, 1e-6), "softmax denominator %d: %g vs %g", b0, od[b0], den);
  }
  host_free(&m);
  free(src);
  kiln_ir_kprogram_destroy(p);

  /* masked load */
  p = prog_pad();
  src = render_ok(p);
  host_build(src, &m);
  float pin[4] = {1, 2, 3, 4}, pout[6];
  void *pb[] = {pin, pout};
  host_run(&m, p, pb);
  float wp[6] = {-7, 1, 2, 3, 4, -7};
  for (int i = 0; i < 6; i++) cr_expect_eq(pout[i], wp[i], "pad at %d", i);
  host_free(&m);
  free(src);
  kiln_ir_kprogram_destroy(p);
}

Test(cuda_render, host_side_kernels_render_nothing) {
  kiln_kprogram *p = tp_new();
  int32_t a = tp_buf(p, KILN_BUF_INPUT, KILN_F32, 2, (int64_t[]){2, 3});
  int32_t b = tp_buf(p, KILN_BUF_INPUT, KILN_F32, 2, (int64_t[]){3, 2});
  int32_t c = tp_buf(p, KILN_BUF_ARENA, KILN_F32, 2, (int64_t[]){2, 2});
  int32_t o = tp_buf(p, KILN_BUF_OUTPUT, KILN_F32, 2, (int64_t[]){2, 2});
  kiln_kernel *g = &p->kernels[p->n_kernels++];
  g->kind = KILN_KERNEL_GEMM;
  g->name = "k0_dot";
  g->out_buf = c;
  g->out_dtype = KILN_F32;
  g->gemm = (kiln_gemm_desc){.a_buf = a, .b_buf = b, .c_buf = c, .m = 2, .n = 2, .k = 3, .lda = 3, .ldb = 2, .ldc = 2};
  kiln_kernel *k = tp_loop(p, "k1_relu", o, 0, NULL);
  int32_t x = K_LOAD(k, c, KILN_F32, K_INDEX(k, 2, (int[]){0, 1}, (int64_t[]){2, 2}), -1, 0);
  K_ALU(k, KILN_OP_max, KILN_F32, x, K_CF(k, KILN_F32, 0), -1);
  char *src = render_ok(p); /* asserts kiln_k1 present, kiln_k0 absent */
  compile_both(src);
  free(src);
  kiln_ir_kprogram_destroy(p);
}

Test(cuda_render, unsupported_op_is_refused_naming_the_kernel) {
  kiln_kprogram *p = tp_new();
  int32_t a = tp_buf(p, KILN_BUF_INPUT, KILN_I32, 1, (int64_t[]){4});
  int32_t o = tp_buf(p, KILN_BUF_OUTPUT, KILN_I32, 1, (int64_t[]){4});
  kiln_kernel *k = tp_loop(p, "k0_int_exp", o, 0, NULL);
  K_ALU(k, KILN_OP_exp, KILN_I32, K_LOAD(k, a, KILN_I32, K_VAR(k, 0), -1, 0), -1, -1);
  kiln_diag d = {0};
  char *src = (char *)1;
  tc_schedule(p);
  cr_assert_eq(kiln_cuda_render(p, &src, &d), KILN_ERR_UNSUPPORTED);
  cr_assert_null(src);
  cr_assert(strstr(d.msg, "k0_int_exp") && strstr(d.msg, "exp"), "message: %s", d.msg);
  kiln_ir_kprogram_destroy(p);
}

Test(cuda_nvrtc, compile_error_reports_log_and_source) {
  if (!kiln_cuda_nvrtc_available()) cr_skip("libnvrtc cannot be loaded");
  kiln_diag d = {0};
  void *img = NULL;
  size_t n = 0;
  const char *bad = "/* kernel 0: broken */\nextern \"C\" __global__ void kiln_k0() { undefined_thing(); }\n";
  cr_assert_eq(kiln_cuda_compile(NULL, bad, "sm_90", true, &img, &n, &d), KILN_ERR_BACKEND);
  cr_assert_null(img);
  cr_assert(strstr(d.msg, "undefined_thing") && strstr(d.msg, "kernel 0: broken"), "message: %s", d.msg);
  kiln_diag d2 = {0};
  cr_assert_eq(kiln_cuda_compile(NULL, bad, "gfx90a", true, &img, &n, &d2), KILN_ERR_INVALID_ARGUMENT);
}

/* ------------------------------------------------------------------ the executor */
/* Without a GPU: a clear KILN_ERR_NO_DEVICE. With one: the programs run and match. */
static kiln_cuda_exec *exec_or_no_device(kiln_kprogram *p) {
  kiln_diag d = {0};
  kiln_cuda_exec *e = NULL;
  tc_schedule(p);
  kiln_status st = kiln_cuda_exec_create(p, NULL, &e, &d);
  if (st == KILN_ERR_NO_DEVICE) {
    cr_assert_null(e);
    /* scripts/gpu-check.sh sets this: there, falling back to the error path is a failure */
    cr_assert_null(getenv("KILN_REQUIRE_GPU"), "KILN_REQUIRE_GPU is set but: %s", d.msg);
    cr_assert(strlen(d.msg) > 10 && (strstr(d.msg, "libcuda.so.1") || strstr(d.msg, "GPU")), "message: %s", d.msg);
    printf("no GPU here (%s): checked the error path only\n", d.msg);
    return NULL;
  }
  cr_assert_eq(st, KILN_OK, "exec_create: %s", d.msg);
  return e;
}

Test(cuda_exec, broadcast_and_reductions_run_or_report_no_device) {
  int32_t ids[4];
  kiln_kprogram *p = prog_broadcast(ids);
  kiln_cuda_exec *e = exec_or_no_device(p);
  if (e) {
    float a[24], b[4] = {1, 2, 3, 4}, c[3] = {10, 20, 30}, o[24];
    for (int i = 0; i < 24; i++) a[i] = (float)i;
    kiln_rt_tensor in[3] = {{KILN_F32, p->in_shapes[0], a}, {KILN_F32, p->in_shapes[1], b}, {KILN_F32, p->in_shapes[2], c}};
    kiln_rt_tensor out[1] = {{KILN_F32, p->out_shapes[0], o}};
    kiln_diag d = {0};
    cr_assert_eq(kiln_cuda_exec_run(e, in, 3, out, 1, &d), KILN_OK, "%s", d.msg);
    for (int i = 0; i < 24; i++) cr_expect_eq(o[i], a[i] + b[i % 4] * c[(i / 4) % 3], "at %d", i);
    kiln_cuda_exec_destroy(e);
  }
  kiln_ir_kprogram_destroy(p);

  p = prog_reduce();
  e = exec_or_no_device(p);
  if (e) {
    float in[24] = {1, 5, 5, 2, -1, -3, -1, -2, 0, 0, 0, 0, 4, 3, 2, 1, 1, NAN, 3, NAN, -1, -1, -1, -1};
    float omax[6], osum[6];
    int64_t am[6], aml[6];
    kiln_rt_tensor ti = {KILN_F32, p->in_shapes[0], in};
    kiln_rt_tensor to[4] = {{KILN_F32, p->out_shapes[0], omax}, {KILN_F32, p->out_shapes[1], osum},
                            {KILN_I64, p->out_shapes[2], am}, {KILN_I64, p->out_shapes[3], aml}};
    kiln_diag d = {0};
    cr_assert_eq(kiln_cuda_exec_run(e, &ti, 1, to, 4, &d), KILN_OK, "%s", d.msg);
    float wmax[6] = {5, -1, 0, 4, NAN, -1}, wsum[6] = {26, -14, 0, 20, NAN, -8};
    int64_t wam[6] = {1, 0, 0, 0, 1, 0}, waml[6] = {2, 2, 3, 0, 3, 3}; /* NaNs tie, as above */
    for (int i = 0; i < 6; i++) {
      cr_expect(close_f(omax[i], wmax[i], 0), "max row %d: %g", i, omax[i]);
      cr_expect(close_f(osum[i], wsum[i], 0), "2*sum row %d: %g", i, osum[i]);
      cr_expect_eq(am[i], wam[i], "argmax row %d", i);
      cr_expect_eq(aml[i], waml[i], "argmax(last) row %d", i);
    }
    /* a second run reuses the same device memory */
    in[0] = 100;
    cr_assert_eq(kiln_cuda_exec_run(e, &ti, 1, to, 4, &d), KILN_OK, "%s", d.msg);
    cr_expect_eq(omax[0], 100);
    kiln_cuda_exec_destroy(e);
  }
  kiln_ir_kprogram_destroy(p);
}

Test(cuda_exec, gemm_through_cublas_runs_or_reports_no_device) {
  /* C[2,2] = A[2,3] * B^T where B is stored [2,3] (trans_b), batched twice with a
   * broadcast A (stride 0), then relu into the output. */
  kiln_kprogram *p = tp_new();
  int32_t a = tp_buf(p, KILN_BUF_INPUT, KILN_F32, 2, (int64_t[]){2, 3});
  int32_t b = tp_buf(p, KILN_BUF_INPUT, KILN_F32, 3, (int64_t[]){2, 2, 3});
  int32_t c = tp_buf(p, KILN_BUF_ARENA, KILN_F32, 3, (int64_t[]){2, 2, 2});
  int32_t o = tp_buf(p, KILN_BUF_OUTPUT, KILN_F32, 3, (int64_t[]){2, 2, 2});
  kiln_kernel *g = &p->kernels[p->n_kernels++];
  g->kind = KILN_KERNEL_GEMM;
  g->name = "k0_dot";
  g->out_buf = c;
  g->out_dtype = KILN_F32;
  g->gemm = (kiln_gemm_desc){.a_buf = a, .b_buf = b, .c_buf = c, .trans_b = 1, .m = 2, .n = 2, .k = 3,
                             .lda = 3, .ldb = 3, .ldc = 2, .n_batch = 1, .batch = {2},
                             .a_bstride = {0}, .b_bstride = {6}, .c_bstride = {4}};
  kiln_kernel *k = tp_loop(p, "k1_relu", o, 0, NULL);
  int32_t x = K_LOAD(k, c, KILN_F32, K_INDEX(k, 3, (int[]){0, 1, 2}, (int64_t[]){2, 2, 2}), -1, 0);
  K_ALU(k, KILN_OP_max, KILN_F32, x, K_CF(k, KILN_F32, 0), -1);
  kiln_cuda_exec *e = exec_or_no_device(p);
  if (e) {
    float av[6] = {1, 2, 3, -1, -2, -3}, bv[12] = {1, 0, 0, 0, 1, 1, 2, 2, 2, -1, 0, 1}, ov[8];
    kiln_rt_tensor in[2] = {{KILN_F32, p->in_shapes[0], av}, {KILN_F32, p->in_shapes[1], bv}};
    kiln_rt_tensor out = {KILN_F32, p->out_shapes[0], ov};
    kiln_diag d = {0};
    cr_assert_eq(kiln_cuda_exec_run(e, in, 2, &out, 1, &d), KILN_OK, "%s", d.msg);
    for (int bt = 0; bt < 2; bt++)
      for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) {
          float s = 0;
          for (int l = 0; l < 3; l++) s += av[i * 3 + l] * bv[bt * 6 + j * 3 + l];
          cr_expect_eq(ov[bt * 4 + i * 2 + j], s > 0 ? s : 0, "gemm at %d,%d,%d", bt, i, j);
        }
    kiln_cuda_exec_destroy(e);
  }
  kiln_ir_kprogram_destroy(p);
}

/* ------------------------------------------------------------------ run-time index checks */
/* y[i] = data[clamp(wrap(idx[i]))] with a CHECK that idx[i] is in [-4, 4) (what lowering
 * emits for a gather), then a scatter (OPAQUE, run on the host) of upd into the result at
 * sidx. Either reports through the error word (runtime ABI, rt.h). */
static kiln_kprogram *prog_checked(void) {
  kiln_kprogram *p = tp_new();
  int32_t data = tp_buf(p, KILN_BUF_INPUT, KILN_F32, 1, (int64_t[]){4});
  int32_t idx = tp_buf(p, KILN_BUF_INPUT, KILN_I64, 1, (int64_t[]){3});
  int32_t sidx = tp_buf(p, KILN_BUF_INPUT, KILN_I64, 1, (int64_t[]){1});
  int32_t upd = tp_buf(p, KILN_BUF_INPUT, KILN_F32, 1, (int64_t[]){1});
  int32_t g = tp_buf(p, KILN_BUF_ARENA, KILN_F32, 1, (int64_t[]){3});
  int32_t out = tp_buf(p, KILN_BUF_OUTPUT, KILN_F32, 1, (int64_t[]){3});
  kiln_kernel *k = tp_loop(p, "k0_gather", g, 0, NULL);
  int32_t iv = K_LOAD(k, idx, KILN_I64, K_VAR(k, 0), -1, 0);
  int32_t ok = K_ALU(k, KILN_OP_and, KILN_BOOL, K_ALU(k, KILN_OP_ge, KILN_BOOL, iv, K_CI(k, KILN_I64, -4), -1),
                     K_ALU(k, KILN_OP_lt, KILN_BOOL, iv, K_CI(k, KILN_I64, 4), -1), -1);
  int32_t chk = kx_push(k, (kiln_kx){.kind = KILN_KX_CHECK, .dtype = KILN_I64, .op = KILN_OP_gather, .var = -1,
                                     .i = 4, .a = {ok, iv, -1}});
  int32_t neg = K_ALU(k, KILN_OP_lt, KILN_BOOL, chk, K_CI(k, KILN_I64, 0), -1);
  int32_t w = K_ALU(k, KILN_OP_select, KILN_I64, neg, K_ALU(k, KILN_OP_add, KILN_I64, chk, K_CI(k, KILN_I64, 4), -1), chk);
  int32_t c = K_ALU(k, KILN_OP_min, KILN_I64, K_ALU(k, KILN_OP_max, KILN_I64, w, K_CI(k, KILN_I64, 0), -1),
                    K_CI(k, KILN_I64, 3), -1);
  K_LOAD(k, data, KILN_F32, c, -1, 0);
  kiln_kernel *s = &p->kernels[p->n_kernels++];
  s->kind = KILN_KERNEL_OPAQUE;
  s->name = "k1_scatter";
  s->op = KILN_OP_scatter;
  s->out_buf = out;
  s->out_dtype = KILN_F32;
  s->out = p->buffers[out].shape;
  s->n_in_bufs = 3;
  s->in_bufs = kiln_arena_alloc(p->arena, sizeof(int32_t) * 3);
  s->in_bufs[0] = g, s->in_bufs[1] = sidx, s->in_bufs[2] = upd;
  kiln_diag d = {0};
  cr_assert_eq(kiln_ir_kprogram_verify(p, &d), KILN_OK, "%s", d.msg);
  return p;
}

Test(cuda_render, index_check_renders_and_compiles) {
  kiln_kprogram *p = prog_checked();
  char *src = render_ok(p);
  char want[80];
  snprintf(want, sizeof want, "atomicCAS((int *)bufs[%d], 0, 1);", p->n_buffers);
  cr_assert(strstr(src, want), "no error-word check (%s) in:\n%s", want, src);
  compile_both(src);
  free(src);
  kiln_ir_kprogram_destroy(p);
}

/* GPU only (scripts/gpu-check.sh): a bad gather index or scatter index fails the run with
 * KILN_ERR_INVALID_ARGUMENT naming the kernel; in-range runs before and after succeed. */
Test(cuda_exec, index_errors_reach_the_caller_or_report_no_device) {
  kiln_kprogram *p = prog_checked();
  kiln_cuda_exec *e = exec_or_no_device(p);
  if (e) {
    float data[4] = {10, 20, 30, 40}, upd[1] = {-1}, o[3];
    int64_t idx[3] = {0, -1, 3}, sidx[1] = {1};
    kiln_rt_tensor in[4] = {{KILN_F32, p->in_shapes[0], data}, {KILN_I64, p->in_shapes[1], idx},
                            {KILN_I64, p->in_shapes[2], sidx}, {KILN_F32, p->in_shapes[3], upd}};
    kiln_rt_tensor out = {KILN_F32, p->out_shapes[0], o};
    kiln_diag d = {0};
    cr_assert_eq(kiln_cuda_exec_run(e, in, 4, &out, 1, &d), KILN_OK, "%s", d.msg);
    cr_expect(o[0] == 10 && o[1] == -1 && o[2] == 40, "got %g %g %g", o[0], o[1], o[2]);
    idx[1] = 4; /* gather index out of [-4, 4) */
    d = (kiln_diag){0}; /* a diag keeps its first error */
    cr_assert_eq(kiln_cuda_exec_run(e, in, 4, &out, 1, &d), KILN_ERR_INVALID_ARGUMENT, "bad gather index: %s", d.msg);
    cr_expect(strstr(d.msg, "gather") && strstr(d.msg, "k0_gather") && strstr(d.msg, "[-4, 4)"), "%s", d.msg);
    idx[1] = -1;
    sidx[0] = -4; /* scatter index out of [-3, 3) */
    d = (kiln_diag){0};
    cr_assert_eq(kiln_cuda_exec_run(e, in, 4, &out, 1, &d), KILN_ERR_INVALID_ARGUMENT, "bad scatter index: %s", d.msg);
    cr_expect(strstr(d.msg, "scatter") && strstr(d.msg, "k1_scatter"), "%s", d.msg);
    sidx[0] = 2;
    d = (kiln_diag){0};
    cr_assert_eq(kiln_cuda_exec_run(e, in, 4, &out, 1, &d), KILN_OK, "the error word is cleared per run: %s", d.msg);
    cr_expect(o[0] == 10 && o[1] == 40 && o[2] == -1, "got %g %g %g", o[0], o[1], o[2]);
    kiln_cuda_exec_destroy(e);
  }
  kiln_ir_kprogram_destroy(p);
}

/* ------------------------------------------------------------------ row-wise kernels */
/* x[row, col] over [rows, cols] as a load through variables rv, cv. */
static int32_t K_RC(kiln_kernel *k, int32_t buf, int rv, int cv, int64_t rows, int64_t cols) {
  return K_LOAD(k, buf, KILN_F32, K_INDEX(k, 2, (int[]){rv, cv}, (int64_t[]){rows, cols}), -1, 0);
}

/* Kernels whose REDUCEs depend only on the row render one warp per row, the reductions
 * shared by the lanes and combined with shuffles; run on the host's 32-lane emulation:
 * softmax (a NaN row, a -inf entry, rows longer than a warp), layer norm (the mean inside
 * the variance), a rank-0 sum, a rank-1 x / sum(x), an i32 row max, an argmax at row
 * level (not shared: computed by every lane), and a column-dependent reduction using a
 * row reduction. */
Test(cuda_render, row_wise_kernels_share_reductions_across_a_warp) {
  enum { R = 5, C = 45, LR = 3, LC = 70, V = 100 };
  kiln_kprogram *p = tp_new();
  int32_t x = tp_buf(p, KILN_BUF_INPUT, KILN_F32, 2, (int64_t[]){R, C});
  int32_t lx = tp_buf(p, KILN_BUF_INPUT, KILN_F32, 2, (int64_t[]){LR, LC});
  int32_t vx = tp_buf(p, KILN_BUF_INPUT, KILN_F32, 1, (int64_t[]){V});
  int32_t ix = tp_buf(p, KILN_BUF_INPUT, KILN_I32, 2, (int64_t[]){R, C});
  int32_t o_sm = tp_buf(p, KILN_BUF_OUTPUT, KILN_F32, 2, (int64_t[]){R, C});
  int32_t o_ln = tp_buf(p, KILN_BUF_OUTPUT, KILN_F32, 2, (int64_t[]){LR, LC});
  int32_t o_s0 = tp_buf(p, KILN_BUF_OUTPUT, KILN_F32, 0, NULL);
  int32_t o_v = tp_buf(p, KILN_BUF_OUTPUT, KILN_F32, 1, (int64_t[]){V});
  int32_t o_im = tp_buf(p, KILN_BUF_OUTPUT, KILN_I32, 2, (int64_t[]){R, C});
  int32_t o_am = tp_buf(p, KILN_BUF_OUTPUT, KILN_F32, 2, (int64_t[]){R, C});
  int32_t o_cd = tp_buf(p, KILN_BUF_OUTPUT, KILN_F32, 2, (int64_t[]){R, C});
  /* softmax */
  kiln_kernel *k = tp_loop(p, "k_softmax", o_sm, 2, (int64_t[]){C, C});
  int32_t mx = K_RED(k, KILN_OP_reduce_max, KILN_F32, 2, 1, K_RC(k, x, 0, 2, R, C), 0);
  int32_t e3 = K_ALU(k, KILN_OP_exp, KILN_F32, K_ALU(k, KILN_OP_sub, KILN_F32, K_RC(k, x, 0, 3, R, C), mx, -1), -1, -1);
  int32_t sm = K_RED(k, KILN_OP_reduce_sum, KILN_F32, 3, 1, e3, 0);
  int32_t e = K_ALU(k, KILN_OP_exp, KILN_F32, K_ALU(k, KILN_OP_sub, KILN_F32, K_RC(k, x, 0, 1, R, C), mx, -1), -1, -1);
  K_ALU(k, KILN_OP_div, KILN_F32, e, sm, -1);
  /* layer norm without scale: (x - mean) * rsqrt(mean((x - mean)^2) + eps) */
  k = tp_loop(p, "k_layer_norm", o_ln, 2, (int64_t[]){LC, LC});
  int32_t n = K_CF(k, KILN_F32, LC);
  int32_t mean = K_ALU(k, KILN_OP_div, KILN_F32, K_RED(k, KILN_OP_reduce_sum, KILN_F32, 2, 1, K_RC(k, lx, 0, 2, LR, LC), 0), n, -1);
  int32_t dv = K_ALU(k, KILN_OP_sub, KILN_F32, K_RC(k, lx, 0, 3, LR, LC), mean, -1);
  int32_t var = K_ALU(k, KILN_OP_div, KILN_F32,
                      K_RED(k, KILN_OP_reduce_sum, KILN_F32, 3, 1, K_ALU(k, KILN_OP_mul, KILN_F32, dv, dv, -1), 0), n, -1);
  int32_t rs = K_ALU(k, KILN_OP_rsqrt, KILN_F32, K_ALU(k, KILN_OP_add, KILN_F32, var, K_CF(k, KILN_F32, 1e-5), -1), -1, -1);
  K_ALU(k, KILN_OP_mul, KILN_F32, K_ALU(k, KILN_OP_sub, KILN_F32, K_RC(k, lx, 0, 1, LR, LC), mean, -1), rs, -1);
  /* rank 0: sum of squares */
  k = tp_loop(p, "k_sum0", o_s0, 1, (int64_t[]){V});
  int32_t v0 = K_LOAD(k, vx, KILN_F32, K_VAR(k, 0), -1, 0);
  K_RED(k, KILN_OP_reduce_sum, KILN_F32, 0, 1, K_ALU(k, KILN_OP_mul, KILN_F32, v0, v0, -1), 0);
  /* rank 1: x / sum(x) */
  k = tp_loop(p, "k_vec", o_v, 1, (int64_t[]){V});
  int32_t vs = K_RED(k, KILN_OP_reduce_sum, KILN_F32, 1, 1, K_LOAD(k, vx, KILN_F32, K_VAR(k, 1), -1, 0), 0);
  K_ALU(k, KILN_OP_div, KILN_F32, K_LOAD(k, vx, KILN_F32, K_VAR(k, 0), -1, 0), vs, -1);
  /* i32: x - max of the row */
  k = tp_loop(p, "k_imax", o_im, 1, (int64_t[]){C});
  int32_t il = K_LOAD(k, ix, KILN_I32, K_INDEX(k, 2, (int[]){0, 2}, (int64_t[]){R, C}), -1, 0);
  int32_t im = K_RED(k, KILN_OP_reduce_max, KILN_I32, 2, 1, il, 0);
  K_ALU(k, KILN_OP_sub, KILN_I32, K_LOAD(k, ix, KILN_I32, K_INDEX(k, 2, (int[]){0, 1}, (int64_t[]){R, C}), -1, 0), im, -1);
  /* argmax of the row (every lane computes it) + sum of the row (shared) */
  k = tp_loop(p, "k_argmax", o_am, 2, (int64_t[]){C, C});
  int32_t am = K_RED(k, KILN_OP_argmax, KILN_I64, 2, 1, K_RC(k, x, 0, 2, R, C), 0);
  int32_t rsum = K_RED(k, KILN_OP_reduce_sum, KILN_F32, 3, 1, K_RC(k, x, 0, 3, R, C), 0);
  K_ALU(k, KILN_OP_add, KILN_F32, K_ALU(k, KILN_OP_cast, KILN_F32, am, -1, -1), rsum, -1);
  /* out[i,j] = sum_k (x[i,k] * x[i,j] - max_l x[i,l]) */
  k = tp_loop(p, "k_coldep", o_cd, 2, (int64_t[]){C, C});
  int32_t ml = K_RED(k, KILN_OP_reduce_max, KILN_F32, 3, 1, K_RC(k, x, 0, 3, R, C), 0);
  int32_t pr = K_ALU(k, KILN_OP_mul, KILN_F32, K_RC(k, x, 0, 2, R, C), K_RC(k, x, 0, 1, R, C), -1);
  K_RED(k, KILN_OP_reduce_sum, KILN_F32, 2, 1, K_ALU(k, KILN_OP_sub, KILN_F32, pr, ml, -1), 0);

  char *src = render_ok(p);
  cr_assert(strstr(src, "__shfl_xor_sync(0xffffffffu"), "row-wise kernels combine with warp shuffles:\n%s", src);
  compile_both(src);
  host_mod m = {0};
  if (!host_build(src, &m)) {
    printf("skipping host run: no C++ compiler\n");
    free(src);
    kiln_ir_kprogram_destroy(p);
    return;
  }
  static float xv[R * C], lxv[LR * LC], vv[V], osm[R * C], oln[LR * LC], os0, ov[V], oam[R * C], ocd[R * C];
  static int32_t ixv[R * C], oim[R * C];
  for (int i = 0; i < R * C; i++) {
    xv[i] = (float)((i * 37) % 101) * 0.05f - 2.5f;
    ixv[i] = (i * 7919) % 1000 - 500;
  }
  xv[1 * C + 40] = NAN;
  xv[2 * C + 3] = -INFINITY;
  for (int i = 0; i < LR * LC; i++) lxv[i] = (float)((i * 53) % 97) * 0.07f + (float)(i / LC);
  for (int i = 0; i < V; i++) vv[i] = (float)(i % 13) * 0.5f + 1.0f;
  void *bufs[] = {xv, lxv, vv, ixv, osm, oln, &os0, ov, oim, oam, ocd};
  host_run(&m, p, bufs);
  for (int i = 0; i < R; i++) {
    double mxr = -INFINITY, s = 0, sum = 0;
    int arg = 0;
    int32_t imx = INT32_MIN;
    for (int j = 0; j < C; j++) {
      float v = xv[i * C + j];
      mxr = isnan(v) || isnan(mxr) ? NAN : fmax(mxr, v);
      sum += v;
      if (v > xv[i * C + arg] || (isnan(v) && !isnan(xv[i * C + arg]))) arg = j;
      imx = ixv[i * C + j] > imx ? ixv[i * C + j] : imx;
    }
    for (int j = 0; j < C; j++) s += exp((double)xv[i * C + j] - mxr);
    for (int j = 0; j < C; j++) {
      int at = i * C + j;
      double cd = 0;
      for (int kk = 0; kk < C; kk++) cd += (double)xv[i * C + kk] * xv[at] - mxr;
      cr_expect(close_f(osm[at], exp((double)xv[at] - mxr) / s, 1e-5), "softmax [%d,%d]: %g", i, j, osm[at]);
      cr_expect_eq(oim[at], ixv[at] - imx, "i32 max [%d,%d]", i, j);
      cr_expect(close_f(oam[at], arg + sum, 1e-5), "argmax + sum [%d,%d]: %g want %g", i, j, oam[at], arg + sum);
      cr_expect(close_f(ocd[at], cd, 1e-5), "column dependent [%d,%d]: %g want %g", i, j, ocd[at], cd);
    }
  }
  for (int i = 0; i < LR; i++) {
    double mu = 0, va = 0;
    for (int j = 0; j < LC; j++) mu += lxv[i * LC + j];
    mu /= LC;
    for (int j = 0; j < LC; j++) va += (lxv[i * LC + j] - mu) * (lxv[i * LC + j] - mu);
    va /= LC;
    for (int j = 0; j < LC; j++)
      cr_expect(close_f(oln[i * LC + j], (lxv[i * LC + j] - mu) / sqrt(va + 1e-5), 2e-5), "layer norm [%d,%d]: %g", i,
                j, oln[i * LC + j]);
  }
  double s0 = 0, sv = 0;
  for (int i = 0; i < V; i++) s0 += (double)vv[i] * vv[i], sv += vv[i];
  cr_expect(close_f(os0, s0, 1e-6), "rank-0 sum %g want %g", os0, s0);
  for (int i = 0; i < V; i++) cr_expect(close_f(ov[i], vv[i] / sv, 1e-6), "x / sum(x) at %d: %g", i, ov[i]);
  host_free(&m);
  free(src);
  kiln_ir_kprogram_destroy(p);
}

/* ------------------------------------------------------------------ GEMM with pack and epilogue */
/* conv1d + bias + relu as the lowering builds it at --fusion full (passes/lower.c,
 * lower_conv_gemm): x [2, 2, 6], w [3, 2, 3], no padding -> out [2, 3, 4]. GEMM per batch
 * n: C[n] (3 x 4) = W (3 x 6) * col[n] (6 x 4), the column matrix packed tile by tile
 * (tile_n 3, so the last tile has one valid column) from (n, j0) in the parameter buffer;
 * the epilogue computes relu(C + bias[co]) in place into the output. */
enum { CV_N = 2, CV_CI = 2, CV_L = 6, CV_CO = 3, CV_KW = 3, CV_P = 4, CV_KC = CV_CI * CV_KW, CV_TILE = 3 };

/* A LOOP sub-kernel of a GEMM: built like a program kernel, then moved out of the list. */
static kiln_kernel *tp_sub(kiln_kprogram *p, const char *name, int32_t out_buf) {
  kiln_kernel *k = tp_loop(p, name, out_buf, 0, NULL);
  kiln_kernel *s = kiln_arena_alloc(p->arena, sizeof *s);
  cr_assert(s);
  *s = *k;
  memset(k, 0, sizeof *k);
  p->n_kernels--;
  return s;
}

static kiln_kprogram *prog_conv_gemm(int32_t ids[5]) {
  kiln_kprogram *p = tp_new();
  int32_t x = tp_buf(p, KILN_BUF_INPUT, KILN_F32, 3, (int64_t[]){CV_N, CV_CI, CV_L});
  int32_t w = tp_buf(p, KILN_BUF_INPUT, KILN_F32, 2, (int64_t[]){CV_CO, CV_KC});
  int32_t bias = tp_buf(p, KILN_BUF_INPUT, KILN_F32, 1, (int64_t[]){CV_CO});
  int32_t o = tp_buf(p, KILN_BUF_OUTPUT, KILN_F32, 3, (int64_t[]){CV_N, CV_CO, CV_P});
  int32_t col = tp_buf(p, KILN_BUF_ARENA, KILN_F32, 2, (int64_t[]){CV_KC, CV_TILE});
  int32_t par = tp_buf(p, KILN_BUF_ARENA, KILN_I64, 1, (int64_t[]){2});
  kiln_kernel *g = &p->kernels[p->n_kernels++];
  g->kind = KILN_KERNEL_GEMM;
  g->name = "k0_conv_add_relu";
  g->out_buf = o;
  g->out_dtype = KILN_F32;
  g->out = p->buffers[o].shape;
  g->gemm = (kiln_gemm_desc){.a_buf = w, .b_buf = col, .c_buf = o, .m = CV_CO, .n = CV_P, .k = CV_KC,
                             .lda = CV_KC, .ldb = CV_TILE, .ldc = CV_P, .n_batch = 1, .batch = {CV_N},
                             .a_bstride = {0}, .b_bstride = {0}, .c_bstride = {CV_CO * CV_P},
                             .tile_n = CV_TILE, .param_buf = par, .epi_last = CV_P};
  kiln_kernel *pk = tp_sub(p, "k0_conv_add_relu.pack", col);
  int32_t t = K_LOAD(pk, par, KILN_I64, K_CI(pk, KILN_I64, 0), -1, 0);
  int32_t j0 = K_LOAD(pk, par, KILN_I64, K_CI(pk, KILN_I64, 1), -1, 0);
  int32_t pp = K_ALU(pk, KILN_OP_add, KILN_I64, j0, K_VAR(pk, 1), -1);
  int32_t mask = K_ALU(pk, KILN_OP_lt, KILN_BOOL, pp, K_CI(pk, KILN_I64, CV_P), -1);
  pp = K_ALU(pk, KILN_OP_min, KILN_I64, pp, K_CI(pk, KILN_I64, CV_P - 1), -1);
  int32_t ci = K_ALUK(pk, KILN_OP_div, KILN_I64, K_VAR(pk, 0), K_CI(pk, KILN_I64, CV_KW), 0);
  int32_t kk = K_ALUK(pk, KILN_OP_mod, KILN_I64, K_VAR(pk, 0), K_CI(pk, KILN_I64, CV_KW), 1);
  int32_t xi = K_ALU(pk, KILN_OP_add, KILN_I64, K_ALU(pk, KILN_OP_mul, KILN_I64, t, K_CI(pk, KILN_I64, CV_CI * CV_L), -1),
                     K_ALU(pk, KILN_OP_add, KILN_I64, K_ALU(pk, KILN_OP_mul, KILN_I64, ci, K_CI(pk, KILN_I64, CV_L), -1),
                           K_ALU(pk, KILN_OP_add, KILN_I64, pp, kk, -1), -1), -1);
  K_LOAD(pk, x, KILN_F32, xi, mask, 0);
  kiln_kernel *ek = tp_sub(p, "k0_conv_add_relu.epilogue", o);
  int32_t cv = K_LOAD(ek, o, KILN_F32, K_INDEX(ek, 3, (int[]){0, 1, 2}, (int64_t[]){CV_N, CV_CO, CV_P}), -1, 0);
  int32_t bv = K_LOAD(ek, bias, KILN_F32, K_VAR(ek, 1), -1, 0);
  K_ALU(ek, KILN_OP_max, KILN_F32, K_ALU(ek, KILN_OP_add, KILN_F32, cv, bv, -1), K_CF(ek, KILN_F32, 0), -1);
  g->pack = pk;
  g->epilogue = ek;
  if (ids) ids[0] = x, ids[1] = w, ids[2] = bias, ids[3] = o, ids[4] = par;
  return p;
}

static void conv_data(float *x, float *w, float *bias) {
  for (int i = 0; i < CV_N * CV_CI * CV_L; i++) x[i] = (float)((i * 5) % 7) - 3;
  for (int i = 0; i < CV_CO * CV_KC; i++) w[i] = (float)((i * 3) % 5) - 2;
  for (int i = 0; i < CV_CO; i++) bias[i] = (float)i - 1.5f;
}

/* relu(conv(x, w) + bias), computed directly */
static float conv_ref(const float *x, const float *w, const float *bias, int n, int co, int p) {
  float s = 0;
  for (int ci = 0; ci < CV_CI; ci++)
    for (int kk = 0; kk < CV_KW; kk++) s += w[co * CV_KC + ci * CV_KW + kk] * x[(n * CV_CI + ci) * CV_L + p + kk];
  s += bias[co];
  return s > 0 ? s : 0;
}

Test(cuda_render, gemm_pack_and_epilogue_render_and_compile) {
  kiln_kprogram *p = prog_conv_gemm(NULL);
  kiln_diag d = {0};
  cr_assert_eq(kiln_ir_kprogram_verify(p, &d), KILN_OK, "%s", d.msg);
  char *src = render_ok(p); /* asserts no kiln_k0 for the GEMM itself */
  cr_assert(strstr(src, "void kiln_k0_pack(void *const *bufs, long long n)"), "no pack kernel in:\n%s", src);
  cr_assert(strstr(src, "void kiln_k0_epilogue(void *const *bufs, long long n)"), "no epilogue kernel in:\n%s", src);
  /* the pack reads its tile parameters from param_buf (buffer 5) */
  cr_assert(strstr(src, "((const long long*)bufs[5])[(0ll)]") && strstr(src, "((const long long*)bufs[5])[(1ll)]"),
            "pack does not read (batch, column) from the parameter buffer:\n%s", src);
  compile_both(src);
  if (kiln_cuda_nvrtc_available()) { /* both entries in the PTX */
    void *img = NULL;
    size_t n = 0;
    cr_assert_eq(kiln_cuda_compile(NULL, src, "compute_90", false, &img, &n, &d), KILN_OK, "%s", d.msg);
    cr_assert(strstr(img, ".entry kiln_k0_pack") && strstr(img, ".entry kiln_k0_epilogue"));
    free(img);
  }
  free(src);
  kiln_ir_kprogram_destroy(p);
}

/* The executor's GEMM protocol replayed on the host with the rendered sub-kernels: per
 * (batch, tile) write the parameters, pack, multiply the tile; then the epilogue once. */
Test(cuda_render, gemm_pack_and_epilogue_compute_the_conv_on_the_host) {
  int32_t ids[5];
  kiln_kprogram *p = prog_conv_gemm(ids);
  char *src = render_ok(p);
  host_mod m = {0};
  if (!host_build(src, &m)) {
    printf("skipping host run: no C++ compiler\n");
    free(src);
    kiln_ir_kprogram_destroy(p);
    return;
  }
  host_kernel pack, epi;
  host_launch launch; /* runs a kernel as a grid of host threads (warps included) */
  *(void **)&launch = dlsym(m.h, "kiln_host_launch");
  cr_assert(launch, "no kiln_host_launch");
  *(void **)&pack = dlsym(m.h, "kiln_k0_pack");
  *(void **)&epi = dlsym(m.h, "kiln_k0_epilogue");
  cr_assert(pack && epi);
  float x[CV_N * CV_CI * CV_L], w[CV_CO * CV_KC], bias[CV_CO], o[CV_N * CV_CO * CV_P], col[CV_KC * CV_TILE];
  int64_t par[2];
  conv_data(x, w, bias);
  for (int i = 0; i < CV_N * CV_CO * CV_P; i++) o[i] = NAN;
  void *bufs[] = {x, w, bias, o, col, par};
  const kiln_gemm_desc *g = &p->kernels[0].gemm;
  for (int64_t t = 0; t < CV_N; t++)
    for (int64_t j0 = 0; j0 < g->n; j0 += g->tile_n) {
      int64_t tn = g->n - j0 < g->tile_n ? g->n - j0 : g->tile_n;
      par[0] = t, par[1] = j0;
      for (int i = 0; i < CV_KC * CV_TILE; i++) col[i] = NAN;
      launch(pack, bufs, (long long)kiln_shape_numel(&p->kernels[0].pack->out));
      for (int64_t jj = tn; jj < g->tile_n; jj++) /* columns past n: masked to the fill */
        for (int r = 0; r < CV_KC; r++) cr_expect_eq(col[r * CV_TILE + jj], 0.0f, "padding column %d", (int)jj);
      for (int64_t i = 0; i < g->m; i++)
        for (int64_t jj = 0; jj < tn; jj++) {
          float s = 0;
          for (int64_t r = 0; r < g->k; r++) s += w[i * g->lda + r] * col[r * g->ldb + jj];
          o[t * g->c_bstride[0] + i * g->ldc + j0 + jj] = s;
        }
    }
  launch(epi, bufs, (long long)kiln_shape_numel(&p->kernels[0].epilogue->out));
  for (int n = 0; n < CV_N; n++)
    for (int co = 0; co < CV_CO; co++)
      for (int q = 0; q < CV_P; q++) {
        float want = conv_ref(x, w, bias, n, co, q), got = o[(n * CV_CO + co) * CV_P + q];
        cr_expect(close_f(got, want, 1e-6), "conv at %d,%d,%d: %g vs %g", n, co, q, got, want);
      }
  host_free(&m);
  free(src);
  kiln_ir_kprogram_destroy(p);
}

/* GPU only (scripts/gpu-check.sh): the same program through the executor, twice (the
 * second run must not see stale tiles or parameters). */
Test(cuda_exec, gemm_with_pack_and_epilogue_runs_or_reports_no_device) {
  kiln_kprogram *p = prog_conv_gemm(NULL);
  kiln_cuda_exec *e = exec_or_no_device(p);
  if (e) {
    float x[CV_N * CV_CI * CV_L], w[CV_CO * CV_KC], bias[CV_CO], o[CV_N * CV_CO * CV_P];
    conv_data(x, w, bias);
    for (int run = 0; run < 2; run++) {
      if (run) x[3] = 9, bias[1] = 4;
      kiln_rt_tensor in[3] = {{KILN_F32, p->in_shapes[0], x}, {KILN_F32, p->in_shapes[1], w},
                              {KILN_F32, p->in_shapes[2], bias}};
      kiln_rt_tensor out = {KILN_F32, p->out_shapes[0], o};
      kiln_diag d = {0};
      cr_assert_eq(kiln_cuda_exec_run(e, in, 3, &out, 1, &d), KILN_OK, "%s", d.msg);
      for (int n = 0; n < CV_N; n++)
        for (int co = 0; co < CV_CO; co++)
          for (int q = 0; q < CV_P; q++) {
            float want = conv_ref(x, w, bias, n, co, q), got = o[(n * CV_CO + co) * CV_P + q];
            cr_expect(close_f(got, want, 1e-5), "run %d conv at %d,%d,%d: %g vs %g", run, n, co, q, got, want);
          }
    }
    kiln_cuda_exec_destroy(e);
  }
  kiln_ir_kprogram_destroy(p);
}
