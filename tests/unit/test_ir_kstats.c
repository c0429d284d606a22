/* test_ir_kstats.c - kernel IR parts the fusion report relies on, on hand-built programs:
 * kiln_ir_kernel_stats (bytes each buffer once, sub-kernel traffic kept inside, flops per
 * distinct value of a node's loop variables, index math free), the dump of GEMM
 * sub-kernels, categories and refused fusions, and the verifier's sub-kernel checks. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "../../ir/ir.h"

typedef struct kx_builder {
  kiln_kernel *k;
  int32_t cap;
} kx_builder;

static int32_t add(kx_builder *b, kiln_kx x) {
  cr_assert_lt(b->k->n_kx, b->cap);
  if (x.kind == KILN_KX_CONST || x.kind == KILN_KX_VAR) x.a[0] = x.a[1] = x.a[2] = -1;
  b->k->kx[b->k->n_kx] = x;
  return b->k->n_kx++;
}
static int32_t var(kx_builder *b, int32_t v) { return add(b, (kiln_kx){.kind = KILN_KX_VAR, .dtype = KILN_I64, .var = v}); }
static int32_t cint(kx_builder *b, int64_t i) { return add(b, (kiln_kx){.kind = KILN_KX_CONST, .dtype = KILN_I64, .i = i}); }
static int32_t cf32(kx_builder *b, double f) { return add(b, (kiln_kx){.kind = KILN_KX_CONST, .dtype = KILN_F32, .f = f}); }
static int32_t alu(kx_builder *b, kiln_op op, kiln_dtype dt, int32_t x, int32_t y) {
  return add(b, (kiln_kx){.kind = KILN_KX_ALU, .dtype = dt, .op = op, .a = {x, y, -1}});
}
static int32_t load(kx_builder *b, int32_t buf, kiln_dtype dt, int32_t off) {
  return add(b, (kiln_kx){.kind = KILN_KX_LOAD, .dtype = dt, .buf = buf, .a = {off, -1, -1}});
}

static kiln_kernel *new_loop(kiln_kprogram *p, kiln_kernel *k, const char *name, int32_t out_buf, int32_t rank,
                             const int64_t *extents, int32_t n_vars, kx_builder *b) {
  memset(k, 0, sizeof *k);
  k->kind = KILN_KERNEL_LOOP;
  k->name = name;
  k->out_buf = out_buf;
  k->out_dtype = KILN_F32;
  k->out = kiln_shape_make(rank, extents);
  k->n_vars = n_vars;
  k->extent = kiln_arena_alloc(p->arena, sizeof(int64_t) * (size_t)n_vars);
  memcpy(k->extent, extents, sizeof(int64_t) * (size_t)n_vars);
  b->k = k;
  b->cap = 32;
  k->kx = kiln_arena_alloc(p->arena, sizeof(kiln_kx) * 32);
  k->node = -1;
  return k;
}

static kiln_buffer buffer(kiln_buffer_kind kind, kiln_dtype dt, int32_t rank, int64_t d0, int64_t d1, int32_t index) {
  int64_t dims[2] = {d0, d1};
  kiln_buffer b = {.kind = kind, .dtype = dt, .shape = kiln_shape_make(rank, dims), .index = index};
  b.nbytes = (size_t)kiln_shape_numel(&b.shape) * kiln_dtype_size(dt);
  return b;
}

/* C[3,8] = W[3,2] * B[2,8] with B[kk, j] = 2 * X[kk, j mod 4] packed in tiles of 4 columns
 * (the tile's first column comes from the parameter buffer), and an epilogue
 * out[i, j] = max(C[i, j] + bias[i], 0) over the output.
 * Buffers: b0 X f32[2,4] input, b1 W f32[3,2] const, b2 scratch f32[2,4], b3 params
 * i64[2], b4 bias f32[3] const, b5 out f32[3,8] output. */
static kiln_kprogram *gemm_program(void) {
  kiln_kprogram *p = kiln_ir_kprogram_create(NULL);
  p->name = "packed";
  p->n_inputs = p->n_outputs = 1;
  p->n_consts = 2;
  p->n_buffers = 6;
  p->buffers = kiln_arena_alloc(p->arena, sizeof(kiln_buffer) * 6);
  p->buffers[0] = buffer(KILN_BUF_INPUT, KILN_F32, 2, 2, 4, 0);
  p->buffers[1] = buffer(KILN_BUF_CONST, KILN_F32, 2, 3, 2, 0);
  p->buffers[2] = buffer(KILN_BUF_ARENA, KILN_F32, 2, 2, 4, 0);
  p->buffers[3] = buffer(KILN_BUF_ARENA, KILN_I64, 1, 2, 0, 0);
  p->buffers[4] = buffer(KILN_BUF_CONST, KILN_F32, 1, 3, 0, 1);
  p->buffers[5] = buffer(KILN_BUF_OUTPUT, KILN_F32, 2, 3, 8, 0);
  p->n_kernels = 1;
  p->kernels = kiln_arena_alloc(p->arena, sizeof(kiln_kernel));
  kiln_kernel *k = &p->kernels[0];
  memset(k, 0, sizeof *k);
  k->kind = KILN_KERNEL_GEMM;
  k->name = "k0_conv_add_relu";
  static const char *srcs[] = {"conv \"1\"", "add", "relu"};
  k->n_sources = 3;
  k->sources = srcs;
  k->category = KILN_CAT_CONTRACTION;
  k->out_buf = 5;
  k->out_dtype = KILN_F32;
  k->out = (kiln_shape){2, {3, 8}};
  k->node = -1;
  k->gemm = (kiln_gemm_desc){.a_buf = 1, .b_buf = 2, .c_buf = 5, .m = 3, .n = 8, .k = 2, .lda = 2, .ldb = 4,
                             .ldc = 8, .tile_n = 4, .param_buf = 3, .epi_last = 8};

  kx_builder b;
  k->pack = kiln_arena_alloc(p->arena, sizeof(kiln_kernel));
  new_loop(p, k->pack, "k0_pack", 2, 2, (int64_t[]){2, 4}, 2, &b);
  int32_t col0 = load(&b, 3, KILN_I64, cint(&b, 1));
  int32_t col = alu(&b, KILN_OP_mod, KILN_I64, alu(&b, KILN_OP_add, KILN_I64, col0, var(&b, 1)), cint(&b, 4));
  b.k->kx[col].kind_attr = 1;
  int32_t off = alu(&b, KILN_OP_add, KILN_I64, alu(&b, KILN_OP_mul, KILN_I64, var(&b, 0), cint(&b, 4)), col);
  b.k->root = alu(&b, KILN_OP_mul, KILN_F32, load(&b, 0, KILN_F32, off), cf32(&b, 2.0));

  k->epilogue = kiln_arena_alloc(p->arena, sizeof(kiln_kernel));
  new_loop(p, k->epilogue, "k0_epilogue", 5, 2, (int64_t[]){3, 8}, 2, &b);
  int32_t v0 = var(&b, 0);
  int32_t eoff = alu(&b, KILN_OP_add, KILN_I64, alu(&b, KILN_OP_mul, KILN_I64, v0, cint(&b, 8)), var(&b, 1));
  int32_t sum = alu(&b, KILN_OP_add, KILN_F32, load(&b, 5, KILN_F32, eoff), load(&b, 4, KILN_F32, v0));
  b.k->root = alu(&b, KILN_OP_max, KILN_F32, sum, cf32(&b, 0));
  return p;
}

static char *print_program(const kiln_kprogram *p) {
  char *buf = NULL;
  size_t n = 0;
  FILE *f = open_memstream(&buf, &n);
  kiln_ir_kprogram_print(p, f);
  fclose(f);
  return buf;
}

static void kexpect_fail(kiln_kprogram *p, const char *needle) {
  kiln_diag d = {0};
  cr_assert_neq(kiln_ir_kprogram_verify(p, &d), KILN_OK, "expected failure containing '%s'", needle);
  cr_assert(strstr(d.msg, needle), "'%s' lacks '%s'", d.msg, needle);
}

Test(kstats, gemm_with_pack_and_epilogue) {
  kiln_kprogram *p = gemm_program();
  kiln_diag d = {0};
  cr_assert_eq(kiln_ir_kprogram_verify(p, &d), KILN_OK, "%s", d.msg);
  kiln_kernel_stats s;
  kiln_ir_kernel_stats(p, &p->kernels[0], &s);
  /* W 24 + X 32 (what the pack loads; not the scratch tile nor the params) + bias 12; the
   * product read back by the epilogue in place is not traffic. */
  cr_expect_eq(s.bytes_read, 24 + 32 + 12);
  cr_expect_eq(s.bytes_written, 3 * 8 * 4, "one write of the output");
  /* 2*m*n*k = 96; pack: one mul per tile element, 2 tiles of 2x4 = 16 (its index math on
   * the tile parameters is free); epilogue: add and max per output element = 48 */
  cr_expect_eq(s.flops, 96 + 16 + 48);
  kiln_ir_kprogram_destroy(p);
}

Test(kstats, flops_count_distinct_values_of_a_nodes_variables) {
  /* out[i, j] = x[i, j] * exp(r[i]) + sum_t x[i, t]: exp depends on i only (2), the mul
   * and the add on (i, j) (6 each), the reduce accumulates over (i, t) (6). */
  kiln_kprogram *p = kiln_ir_kprogram_create(NULL);
  p->n_inputs = 2, p->n_outputs = 1, p->n_buffers = 3;
  p->buffers = kiln_arena_alloc(p->arena, sizeof(kiln_buffer) * 3);
  p->buffers[0] = buffer(KILN_BUF_INPUT, KILN_F32, 2, 2, 3, 0);
  p->buffers[1] = buffer(KILN_BUF_INPUT, KILN_F32, 1, 2, 0, 1);
  p->buffers[2] = buffer(KILN_BUF_OUTPUT, KILN_F32, 2, 2, 3, 0);
  p->n_kernels = 1;
  p->kernels = kiln_arena_alloc(p->arena, sizeof(kiln_kernel));
  kx_builder b;
  kiln_kernel *k = new_loop(p, &p->kernels[0], "k0", 2, 2, (int64_t[]){2, 3, 3}, 3, &b);
  int32_t i = var(&b, 0), c3 = cint(&b, 3);
  int32_t row = alu(&b, KILN_OP_mul, KILN_I64, i, c3);
  int32_t xij = load(&b, 0, KILN_F32, alu(&b, KILN_OP_add, KILN_I64, row, var(&b, 1)));
  int32_t e = add(&b, (kiln_kx){.kind = KILN_KX_ALU, .dtype = KILN_F32, .op = KILN_OP_exp,
                                .a = {load(&b, 1, KILN_F32, i), -1, -1}});
  int32_t xit = load(&b, 0, KILN_F32, alu(&b, KILN_OP_add, KILN_I64, row, var(&b, 2)));
  int32_t red = add(&b, (kiln_kx){.kind = KILN_KX_REDUCE, .dtype = KILN_F32, .op = KILN_OP_reduce_sum, .var = 2,
                                  .n_vars = 1, .a = {xit, -1, -1}});
  k->root = alu(&b, KILN_OP_add, KILN_F32, alu(&b, KILN_OP_mul, KILN_F32, xij, e), red);
  kiln_diag d = {0};
  cr_assert_eq(kiln_ir_kprogram_verify(p, &d), KILN_OK, "%s", d.msg);
  kiln_kernel_stats s;
  kiln_ir_kernel_stats(p, k, &s);
  cr_expect_eq(s.flops, 2 + 6 + 6 + 6);
  cr_expect_eq(s.bytes_read, 24 + 8, "x once although loaded twice, r");
  cr_expect_eq(s.bytes_written, 24);
  kiln_ir_kprogram_destroy(p);
}

Test(kstats, dump_shows_sub_kernels_category_and_refusals) {
  kiln_kprogram *p = gemm_program();
  kiln_fusion_refusal r = {"a", "b", "producer has 3 consumers"};
  p->n_refused = 1;
  p->refused = &r;
  char *out = print_program(p);
  cr_expect(strstr(out, "kernel k0 gemm \"k0_conv_add_relu\" -> b5 f32[3,8] from \"conv \"1\"\", \"add\", \"relu\" "
                        "category contraction\n"),
            "%s", out);
  cr_expect(strstr(out, "    tile_n 4 params b3\n    pack loop \"k0_pack\" -> b2 f32[2,4]\n      domain [2,4]"), "%s", out);
  cr_expect(strstr(out, "    epilogue loop \"k0_epilogue\" -> b5 f32[3,8]\n      domain [3,8]"), "%s", out);
  cr_expect(strstr(out, "      %0 = load i64 b3[%1]") == NULL, "operands come first: %s", out);
  cr_expect(strstr(out, "  refused \"a\" -> \"b\": producer has 3 consumers\n}"), "%s", out);
  free(out);
  p->n_refused = 0;
  kiln_ir_kprogram_destroy(p);
}

Test(kstats, verifier_checks_sub_kernels) {
  kiln_kprogram *p = gemm_program();
  p->kernels[0].pack->out_buf = 4;
  kexpect_fail(p, "pack sub-kernel writes b4, the gemm needs b2");
  kiln_ir_kprogram_destroy(p);

  p = gemm_program();
  p->kernels[0].epilogue->out = (kiln_shape){2, {3, 4}};
  kexpect_fail(p, "epilogue sub-kernel computes f32[3,4]");
  kiln_ir_kprogram_destroy(p);

  p = gemm_program();
  p->kernels[0].gemm.param_buf = 4;
  kexpect_fail(p, "parameter buffer b4");
  kiln_ir_kprogram_destroy(p);

  p = gemm_program(); /* the runtime would run tile_n / 2 rows per k of a 2-d pack */
  p->kernels[0].gemm.pack_last = 2;
  kexpect_fail(p, "pack_last 2: must divide tile_n 4, and be it for a 2-d pack");
  kiln_ir_kprogram_destroy(p);

  p = gemm_program();
  p->kernels[0].gemm.pack_last = 3;
  kexpect_fail(p, "pack_last 3: must divide tile_n 4");
  kiln_ir_kprogram_destroy(p);

  p = gemm_program();
  p->kernels[0].gemm.param_buf = 9;
  kexpect_fail(p, "parameter buffer b9");
  kiln_ir_kprogram_destroy(p);

  p = gemm_program();
  p->kernels[0].pack->kx[1].a[0] = 3; /* the load's offset is not an earlier node */
  kexpect_fail(p, "pack sub-kernel: kernel 0 'k0_pack': %1: operand 0 is %3");
  kiln_ir_kprogram_destroy(p);

  p = gemm_program(); /* packing A instead: the pack must then compute [tile_n, k] into A */
  p->kernels[0].gemm.pack_a = 1;
  kexpect_fail(p, "pack sub-kernel writes b2, the gemm needs b1");
  kiln_ir_kprogram_destroy(p);

  p = gemm_program();
  p->kernels[0].gemm.pack_a = 1;
  p->kernels[0].gemm.lda = 3;
  kexpect_fail(p, "packed A must be a tile_n x k tile (ld 3, tile_n 4, k 2");
  kiln_ir_kprogram_destroy(p);

  p = gemm_program();
  p->kernels[0].gemm.pack_a = 2;
  kexpect_fail(p, "pack_a 2 with a pack sub-kernel");
  kiln_ir_kprogram_destroy(p);

  p = gemm_program();
  p->kernels[0].gemm.tile_n = 0;
  kexpect_fail(p, "tile_n 0 with a pack sub-kernel");
  kiln_ir_kprogram_destroy(p);

  p = gemm_program();
  p->kernels[0].gemm.ldc = 9;
  kexpect_fail(p, "dense C");
  kiln_ir_kprogram_destroy(p);

  p = gemm_program();
  p->kernels[0].gemm.epi_last = 3;
  kexpect_fail(p, "epi_last 3");
  kiln_ir_kprogram_destroy(p);
}
