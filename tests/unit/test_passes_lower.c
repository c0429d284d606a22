/* test_passes_lower.c - fusion decisions and the shape of lowered programs (kernel
 * counts and kinds per fusion level, GEMM descriptors, index expressions kept small,
 * copies for leaf outputs) and memory planning (no two simultaneously live buffers
 * overlap; a chain reuses space). Values are checked by test_passes_kexec.c. */
#include <criterion/criterion.h>
#include <string.h>

#include "../../passes/passes.h"

static kiln_shape shp(int32_t rank, int64_t a, int64_t b, int64_t c, int64_t d) {
  int64_t dims[4] = {a, b, c, d};
  return kiln_shape_make(rank, dims);
}

static kiln_kprogram *lower(const kiln_graph *g, kiln_fusion_level f) {
  cr_assert_eq(g->diag.status, KILN_OK, "builder: %s", g->diag.msg);
  kiln_pass_target t = {KILN_TARGET_CPU, f};
  kiln_kprogram *p = NULL;
  kiln_diag d = {0};
  cr_assert_eq(kiln_pass_lower(g, &t, &p, &d), KILN_OK, "%s", d.msg);
  cr_assert_eq(kiln_pass_plan_memory(p, &d), KILN_OK, "%s", d.msg);
  cr_assert_eq(kiln_ir_kprogram_verify(p, &d), KILN_OK, "%s", d.msg);
  return p;
}

static int count_kind(const kiln_kprogram *p, kiln_kernel_kind k) {
  int n = 0;
  for (int32_t i = 0; i < p->n_kernels; i++) n += p->kernels[i].kind == k;
  return n;
}

static int count_kx(const kiln_kernel *k, kiln_kx_kind kind, kiln_op op) {
  int n = 0;
  for (int32_t i = 0; i < k->n_kx; i++)
    n += k->kx[i].kind == kind && (kind != KILN_KX_ALU || k->kx[i].op == op);
  return n;
}

static kiln_graph *chain_graph(int n_ops) {
  kiln_graph *g = kiln_ir_graph_create(NULL, "chain");
  kiln_shape s = shp(2, 16, 16, 0, 0);
  int32_t x = kiln_ir_input(g, "x", KILN_F32, &s, NULL);
  static const kiln_op ops[] = {KILN_OP_exp, KILN_OP_neg, KILN_OP_tanh, KILN_OP_abs};
  for (int i = 0; i < n_ops; i++) x = kiln_ir_unary(g, ops[i % 4], x, "u");
  kiln_ir_add_output(g, x, "y");
  return g;
}

Test(lower, elementwise_chain_fuses_into_one_kernel) {
  kiln_graph *g = chain_graph(6);
  for (int f = KILN_FUSION_FULL; f <= KILN_FUSION_ELEMENTWISE; f++) {
    kiln_kprogram *p = lower(g, (kiln_fusion_level)f);
    cr_expect_eq(p->n_kernels, 1);
    cr_expect_eq(p->kernels[0].n_sources, 6, "the kernel names the six nodes it covers");
    cr_expect_eq(p->arena_bytes, 0);
    cr_expect_eq(count_kx(&p->kernels[0], KILN_KX_LOAD, 0), 1);
    kiln_ir_kprogram_destroy(p);
  }
  kiln_kprogram *p = lower(g, KILN_FUSION_NONE);
  cr_expect_eq(p->n_kernels, 6);
  /* six same-size temporaries in a chain: at most two are live at once */
  cr_expect_leq(p->arena_bytes, 2 * 16 * 16 * 4, "arena %zu", p->arena_bytes);
  kiln_ir_kprogram_destroy(p);
  kiln_ir_graph_destroy(g);
}

Test(lower, softmax_kernels) {
  kiln_graph *g = kiln_ir_graph_create(NULL, "softmax");
  kiln_shape s = shp(2, 4, 8, 0, 0);
  int32_t x = kiln_ir_input(g, "x", KILN_F32, &s, NULL), ax = 1;
  int32_t m = kiln_ir_reduce(g, KILN_OP_reduce_max, x, 1, &ax, 1, "max");
  int32_t e = kiln_ir_unary(g, KILN_OP_exp, kiln_ir_binary(g, KILN_OP_sub, x, m, "sub"), "exp");
  int32_t sum = kiln_ir_reduce(g, KILN_OP_reduce_sum, e, 1, &ax, 1, "sum");
  kiln_ir_add_output(g, kiln_ir_binary(g, KILN_OP_div, e, sum, "div"), "y");
  kiln_kprogram *p = lower(g, KILN_FUSION_FULL);
  /* one row-wise kernel: exp(x - max) / sum, max and sum as REDUCEs over the row (exp,
   * read by both the sum and the division, is recomputed: it stays in one kernel) */
  cr_expect_eq(p->n_kernels, 1);
  cr_expect_eq(count_kx(&p->kernels[0], KILN_KX_REDUCE, 0), 2, "max and sum, the max shared");
  cr_expect_eq(p->kernels[0].category, KILN_CAT_REDUCE);
  kiln_ir_kprogram_destroy(p);
  p = lower(g, KILN_FUSION_ELEMENTWISE);
  /* max | exp(x - bcast(max)) (read by two kernels, 17 flop/element: materialized) | sum
   * | exp / bcast(sum) */
  cr_expect_eq(p->n_kernels, 4);
  cr_expect_eq(count_kx(&p->kernels[0], KILN_KX_REDUCE, 0), 1);
  cr_expect_eq(count_kx(&p->kernels[2], KILN_KX_REDUCE, 0), 1);
  cr_expect_geq(p->n_refused, 1, "the refusals say why");
  kiln_ir_kprogram_destroy(p);
  p = lower(g, KILN_FUSION_NONE);
  cr_expect_eq(p->n_kernels, 7, "max, bcast, sub, exp, sum, bcast, div: got %d", p->n_kernels);
  kiln_ir_kprogram_destroy(p);
  kiln_ir_graph_destroy(g);
}

Test(lower, reduce_inlines_its_elementwise_prologue) {
  kiln_graph *g = kiln_ir_graph_create(NULL, "l2");
  kiln_shape s = shp(2, 4, 8, 0, 0);
  int32_t x = kiln_ir_input(g, "x", KILN_F32, &s, NULL), ax = 1;
  int32_t sq = kiln_ir_binary(g, KILN_OP_mul, x, x, "sq");
  kiln_ir_add_output(g, kiln_ir_unary(g, KILN_OP_sqrt, kiln_ir_reduce(g, KILN_OP_reduce_sum, sq, 1, &ax, 0, "sum"), "sqrt"), "y");
  kiln_kprogram *p = lower(g, KILN_FUSION_FULL);
  cr_expect_eq(p->n_kernels, 1, "sqrt(sum(x*x)): the reduction takes its prologue and epilogue");
  cr_expect_eq(count_kx(&p->kernels[0], KILN_KX_ALU, KILN_OP_mul) >= 1, 1);
  cr_expect_eq(count_kx(&p->kernels[0], KILN_KX_LOAD, 0), 1, "x*x loads x once (hash-consed)");
  kiln_ir_kprogram_destroy(p);
  kiln_ir_graph_destroy(g);
}

Test(lower, matmul_becomes_gemm) {
  kiln_graph *g = kiln_ir_graph_create(NULL, "mm");
  kiln_shape sa = shp(3, 2, 3, 5, 0), sb = shp(3, 2, 5, 4, 0);
  int32_t a = kiln_ir_input(g, "a", KILN_F32, &sa, NULL), b = kiln_ir_input(g, "b", KILN_F32, &sb, NULL);
  kiln_ir_add_output(g, kiln_ir_unary(g, KILN_OP_tanh, kiln_ir_matmul(g, kiln_ir_unary(g, KILN_OP_neg, a, "na"), b, "mm"), "t"), "y");
  kiln_kprogram *p = lower(g, KILN_FUSION_FULL);
  cr_assert_eq(count_kind(p, KILN_KERNEL_GEMM), 1);
  cr_expect_eq(p->n_kernels, 2, "neg (a GEMM operand is a buffer) | gemm with a tanh epilogue");
  const kiln_gemm_desc *gd = NULL;
  for (int i = 0; i < p->n_kernels; i++)
    if (p->kernels[i].kind == KILN_KERNEL_GEMM) gd = &p->kernels[i].gemm;
  cr_expect_eq(gd->m, 3);
  cr_expect_eq(gd->n, 4);
  cr_expect_eq(gd->k, 5);
  cr_expect_eq(gd->n_batch, 1);
  cr_expect_eq(gd->batch[0], 2);
  cr_expect_eq(gd->a_bstride[0], 15);
  cr_expect_eq(gd->c_bstride[0], 12);
  for (int i = 0; i < p->n_kernels; i++)
    if (p->kernels[i].kind == KILN_KERNEL_GEMM) {
      cr_assert_not_null(p->kernels[i].epilogue);
      cr_expect_eq(count_kx(p->kernels[i].epilogue, KILN_KX_ALU, KILN_OP_tanh), 1);
      cr_expect_eq(p->kernels[i].epilogue->out_buf, p->kernels[i].gemm.c_buf, "in place");
    }
  kiln_ir_kprogram_destroy(p);
  kiln_ir_graph_destroy(g);
}

Test(lower, integer_matmul_is_a_reduce_loop) {
  kiln_graph *g = kiln_ir_graph_create(NULL, "mmi");
  kiln_shape sa = shp(2, 3, 5, 0, 0), sb = shp(2, 5, 4, 0, 0);
  int32_t a = kiln_ir_input(g, "a", KILN_I32, &sa, NULL), b = kiln_ir_input(g, "b", KILN_I32, &sb, NULL);
  kiln_ir_add_output(g, kiln_ir_matmul(g, a, b, "mm"), "y");
  kiln_kprogram *p = lower(g, KILN_FUSION_FULL);
  cr_expect_eq(p->n_kernels, 1);
  cr_expect_eq(p->kernels[0].kind, KILN_KERNEL_LOOP);
  cr_expect_eq(count_kx(&p->kernels[0], KILN_KX_REDUCE, 0), 1);
  kiln_ir_kprogram_destroy(p);
  kiln_ir_graph_destroy(g);
}

static kiln_kprogram *conv_program(int64_t ci, int64_t co, int32_t groups, int64_t k, int64_t stride, int64_t pad) {
  kiln_graph *g = kiln_ir_graph_create(NULL, "conv");
  kiln_shape sx = shp(4, 2, ci, 6, 6), sw = shp(4, co, ci / groups, k, k);
  int32_t x = kiln_ir_input(g, "x", KILN_F32, &sx, NULL), w = kiln_ir_input(g, "w", KILN_F32, &sw, NULL);
  int64_t st[2] = {stride, stride}, dil[2] = {1, 1}, p[2] = {pad, pad};
  kiln_ir_add_output(g, kiln_ir_conv(g, x, w, st, dil, p, p, groups, "conv"), "y");
  kiln_kprogram *prog = lower(g, KILN_FUSION_FULL);
  kiln_ir_graph_destroy(g);
  return prog;
}

Test(lower, conv_lowerings) {
  kiln_kprogram *p = conv_program(4, 8, 2, 3, 2, 1);
  cr_assert_eq(p->n_kernels, 1, "one GEMM kernel packing its im2col tiles");
  const kiln_gemm_desc *gd = &p->kernels[0].gemm;
  cr_expect_eq(p->kernels[0].kind, KILN_KERNEL_GEMM);
  cr_assert_not_null(p->kernels[0].pack);
  cr_expect_eq(p->kernels[0].pack->out_buf, gd->b_buf);
  cr_expect_eq(gd->m, 4);
  cr_expect_eq(gd->k, 2 * 9);
  cr_expect_eq(gd->n, 9);
  cr_expect_eq(gd->tile_n, 9, "a small column matrix is one tile");
  cr_expect_eq(gd->n_batch, 2);
  cr_expect_eq(gd->a_bstride[0], 0, "weights are shared across the batch");
  cr_expect_eq(p->buffers[gd->b_buf].kind, KILN_BUF_ARENA);
  cr_expect_eq(p->buffers[gd->b_buf].nbytes, 2 * 9 * 9 * 4, "the scratch holds one tile");
  cr_expect_gt(p->arena_bytes, 0);
  kiln_ir_kprogram_destroy(p);

  p = conv_program(4, 8, 1, 1, 1, 0); /* pointwise: x already is the column matrix */
  cr_expect_eq(p->n_kernels, 1);
  cr_expect_eq(p->kernels[0].kind, KILN_KERNEL_GEMM);
  cr_expect_eq(p->buffers[p->kernels[0].gemm.b_buf].kind, KILN_BUF_INPUT);
  kiln_ir_kprogram_destroy(p);

  p = conv_program(4, 4, 4, 3, 1, 1); /* depthwise: a direct loop */
  cr_expect_eq(p->n_kernels, 1);
  cr_expect_eq(p->kernels[0].kind, KILN_KERNEL_LOOP);
  cr_expect_eq(count_kx(&p->kernels[0], KILN_KX_REDUCE, 0), 1);
  kiln_ir_kprogram_destroy(p);
}

Test(lower, movement_index_math_stays_small) {
  kiln_graph *g = kiln_ir_graph_create(NULL, "mv");
  kiln_shape s = shp(3, 2, 3, 4, 0), s2 = shp(2, 6, 4, 0, 0), s3 = shp(3, 2, 3, 4, 0);
  int32_t x = kiln_ir_input(g, "x", KILN_F32, &s, NULL);
  /* merge then split the leading dims again: the last dim passes straight through */
  int32_t y = kiln_ir_reshape(g, kiln_ir_reshape(g, x, &s2, "r1"), &s3, "r2");
  int32_t perm[3] = {2, 0, 1};
  y = kiln_ir_permute(g, kiln_ir_unary(g, KILN_OP_exp, y, "e"), perm, "p");
  kiln_ir_add_output(g, y, "y");
  kiln_kprogram *p = lower(g, KILN_FUSION_FULL);
  cr_assert_eq(p->n_kernels, 1);
  const kiln_kernel *k = &p->kernels[0];
  cr_expect_leq(count_kx(k, KILN_KX_ALU, KILN_OP_div), 1, "kernel has %d divs", count_kx(k, KILN_KX_ALU, KILN_OP_div));
  cr_expect_leq(count_kx(k, KILN_KX_ALU, KILN_OP_mod), 1);
  cr_expect_leq(k->n_kx, 16, "kernel has %d kx nodes", k->n_kx);
  kiln_ir_kprogram_destroy(p);
  kiln_ir_graph_destroy(g);
}

Test(lower, pad_of_a_buffer_is_a_masked_load) {
  kiln_graph *g = kiln_ir_graph_create(NULL, "pad");
  kiln_shape s = shp(2, 3, 4, 0, 0);
  int32_t x = kiln_ir_input(g, "x", KILN_F32, &s, NULL);
  int64_t lo[2] = {1, 0}, hi[2] = {0, -1}; /* only dim 0 can fall outside */
  kiln_ir_add_output(g, kiln_ir_pad(g, x, lo, hi, 7, "pad"), "y");
  kiln_kprogram *p = lower(g, KILN_FUSION_FULL);
  const kiln_kernel *k = &p->kernels[0];
  int masked = 0;
  for (int32_t i = 0; i < k->n_kx; i++)
    if (k->kx[i].kind == KILN_KX_LOAD && k->kx[i].a[1] >= 0) {
      masked++;
      cr_expect_eq(k->kx[i].f, 7.0);
    }
  cr_expect_eq(masked, 1);
  cr_expect_eq(count_kx(k, KILN_KX_ALU, KILN_OP_lt), 0, "the upper bound of dim 0 and all of dim 1 cannot fail");
  kiln_ir_kprogram_destroy(p);
  kiln_ir_graph_destroy(g);
}

Test(lower, leaf_and_duplicate_outputs_get_copies) {
  kiln_graph *g = kiln_ir_graph_create(NULL, "outs");
  kiln_shape s = shp(1, 5, 0, 0, 0);
  int32_t x = kiln_ir_input(g, "x", KILN_F32, &s, NULL);
  float c[5] = {1, 2, 3, 4, 5};
  int32_t k = kiln_ir_constant(g, "c", KILN_F32, &s, c);
  int32_t y = kiln_ir_binary(g, KILN_OP_add, x, k, "y");
  kiln_ir_add_output(g, y, "y");
  kiln_ir_add_output(g, x, "x_out");
  kiln_ir_add_output(g, y, "y_again");
  kiln_ir_add_output(g, k, "c_out");
  kiln_kprogram *p = lower(g, KILN_FUSION_FULL);
  cr_expect_eq(p->n_kernels, 4, "add + three copies");
  cr_expect_eq(p->n_outputs, 4);
  cr_expect_str_eq(p->outputs[3].name, "c_out");
  cr_expect_eq(p->n_consts, 1);
  cr_expect_eq(((float *)p->consts[0].data)[4], 5.0f);
  kiln_ir_kprogram_destroy(p);
  kiln_ir_graph_destroy(g);
}

Test(lower, program_outlives_the_graph) {
  kiln_graph *g = chain_graph(2);
  kiln_kprogram *p = lower(g, KILN_FUSION_NONE);
  kiln_ir_graph_destroy(g);
  cr_expect_str_eq(p->inputs[0].name, "x");
  cr_expect_str_eq(p->kernels[1].sources[0], "u");
  kiln_diag d = {0};
  cr_expect_eq(kiln_ir_kprogram_verify(p, &d), KILN_OK, "%s", d.msg);
  kiln_ir_kprogram_destroy(p);
}

/* ------------------------------------------------------------------ memory planning */
static void touch(int32_t *first, int32_t *last, int32_t b, int32_t k) {
  if (first[b] < 0) first[b] = k;
  last[b] = k;
}

/* Recomputes liveness independently and checks every pair of arena buffers. */
static void check_no_overlap(const kiln_kprogram *p) {
  int32_t nb = p->n_buffers, first[256], last[256];
  cr_assert_leq(nb, 256);
  for (int32_t b = 0; b < nb; b++) first[b] = last[b] = -1;
  for (int32_t k = 0; k < p->n_kernels; k++) {
    const kiln_kernel *kn = &p->kernels[k];
    touch(first, last, kn->out_buf, k);
    for (int32_t i = 0; i < kn->n_kx; i++)
      if (kn->kx[i].kind == KILN_KX_LOAD) touch(first, last, kn->kx[i].buf, k);
    if (kn->kind == KILN_KERNEL_GEMM) touch(first, last, kn->gemm.a_buf, k), touch(first, last, kn->gemm.b_buf, k);
    for (int32_t i = 0; i < kn->n_in_bufs; i++) touch(first, last, kn->in_bufs[i], k);
  }
  for (int32_t a = 0; a < nb; a++) {
    const kiln_buffer *ba = &p->buffers[a];
    if (ba->kind != KILN_BUF_ARENA) continue;
    cr_expect_eq(ba->offset % 64, 0);
    cr_expect_leq((size_t)ba->offset + ba->nbytes, p->arena_bytes);
    for (int32_t b = a + 1; b < nb; b++) {
      const kiln_buffer *bb = &p->buffers[b];
      if (bb->kind != KILN_BUF_ARENA || first[a] < 0 || first[b] < 0) continue;
      bool live_together = first[a] <= last[b] && first[b] <= last[a];
      bool overlap = ba->offset < bb->offset + (int64_t)bb->nbytes && bb->offset < ba->offset + (int64_t)ba->nbytes;
      cr_expect(!(live_together && overlap), "b%d [%d,%d] @%lld+%zu and b%d [%d,%d] @%lld+%zu", a, first[a], last[a],
                (long long)ba->offset, ba->nbytes, b, first[b], last[b], (long long)bb->offset, bb->nbytes);
    }
  }
}

Test(memplan, live_buffers_never_overlap) {
  kiln_graph *g = kiln_ir_graph_create(NULL, "diamonds");
  kiln_shape s = shp(2, 8, 8, 0, 0);
  int32_t x = kiln_ir_input(g, "x", KILN_F32, &s, NULL), ax = 1;
  int32_t keep[8];
  for (int i = 0; i < 8; i++) {
    int32_t a = kiln_ir_unary(g, KILN_OP_exp, x, "a");
    int32_t r = kiln_ir_reduce(g, KILN_OP_reduce_sum, a, 1, &ax, 1, "r");
    x = kiln_ir_binary(g, KILN_OP_div, a, r, "d"); /* a is live across the reduction */
    keep[i] = r;
    if (i % 3 == 2) x = kiln_ir_binary(g, KILN_OP_add, x, kiln_ir_broadcast(g, keep[i - 2], &s, "bk"), "skip");
  }
  kiln_ir_add_output(g, x, "y");
  for (int f = 0; f < 3; f++) {
    kiln_kprogram *p = lower(g, (kiln_fusion_level)f);
    check_no_overlap(p);
    kiln_ir_kprogram_destroy(p);
  }
  kiln_ir_graph_destroy(g);
}

Test(memplan, chain_reuses_space) {
  kiln_graph *g = chain_graph(12);
  kiln_kprogram *p = lower(g, KILN_FUSION_NONE);
  int64_t one = 16 * 16 * 4, total = 0;
  for (int32_t b = 0; b < p->n_buffers; b++) total += p->buffers[b].kind == KILN_BUF_ARENA ? (int64_t)p->buffers[b].nbytes : 0;
  cr_expect_eq(total, 11 * one, "eleven temporaries");
  cr_expect_eq((int64_t)p->arena_bytes, 2 * one, "two slots, reused alternately");
  check_no_overlap(p);
  kiln_ir_kprogram_destroy(p);
  kiln_ir_graph_destroy(g);
}
