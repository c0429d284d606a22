/* test_passes_lower.c - fusion decisions and the shape of lowered programs (kernel
 * counts and kinds per fusion level, GEMM descriptors, index expressions kept small,
 * copies for leaf outputs) and memory planning (no two simultaneously live buffers
 * overlap; a chain reuses space). Values are checked by test_passes_kexec.c. */
#include <criterion/criterion.h>
#include <string.h>

#include "../../passes/passes.h"
#include "test_target.h"

static kiln_shape shp(int32_t rank, int64_t a, int64_t b, int64_t c, int64_t d) {
  int64_t dims[4] = {a, b, c, d};
  return kiln_shape_make(rank, dims);
}

static kiln_kprogram *lower(const kiln_graph *g, kiln_fusion_level f) {
  cr_assert_eq(g->diag.status, KILN_OK, "builder: %s", g->diag.msg);
  kiln_pass_target t = test_cpu_target(f);
  kiln_kprogram *p = NULL;
  kiln_diag d = {0};
  cr_assert_eq(test_lower(g, &t, &p, &d), KILN_OK, "%s", d.msg);
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
  if (b < 0) return;
  if (first[b] < 0) first[b] = k;
  last[b] = k;
}

static void touch_loop(int32_t *first, int32_t *last, const kiln_kernel *kn, int32_t k) {
  if (!kn) return;
  touch(first, last, kn->out_buf, k);
  for (int32_t i = 0; i < kn->n_kx; i++)
    if (kn->kx[i].kind == KILN_KX_LOAD) touch(first, last, kn->kx[i].buf, k);
}

/* Value of index node id of kernel k at the loop variables' values v (i64/bool ALU over
 * VARs and CONSTs); false for anything else. */
static bool eval_index(const kiln_kernel *k, int32_t id, const int64_t *v, int64_t *out) {
  const kiln_kx *x = &k->kx[id];
  if (x->kind == KILN_KX_CONST) return *out = x->i, true;
  if (x->kind == KILN_KX_VAR) return *out = v[x->var], true;
  if (x->kind != KILN_KX_ALU) return false;
  int64_t a[3] = {0, 0, 0};
  int ar = kiln_op_table[x->op].arity;
  for (int i = 0; i < ar; i++)
    if (!eval_index(k, x->a[i], v, &a[i])) return false;
  switch (x->op) {
  case KILN_OP_add: *out = a[0] + a[1]; return true;
  case KILN_OP_sub: *out = a[0] - a[1]; return true;
  case KILN_OP_mul: *out = a[0] * a[1]; return true;
  case KILN_OP_div: *out = a[1] ? a[0] / a[1] : 0; return true;
  case KILN_OP_mod: *out = a[1] ? a[0] % a[1] : 0; return true;
  case KILN_OP_min: *out = a[0] < a[1] ? a[0] : a[1]; return true;
  case KILN_OP_max: *out = a[0] > a[1] ? a[0] : a[1]; return true;
  case KILN_OP_lt: *out = a[0] < a[1]; return true;
  case KILN_OP_le: *out = a[0] <= a[1]; return true;
  case KILN_OP_gt: *out = a[0] > a[1]; return true;
  case KILN_OP_ge: *out = a[0] >= a[1]; return true;
  case KILN_OP_eq: *out = a[0] == a[1]; return true;
  case KILN_OP_ne: *out = a[0] != a[1]; return true;
  case KILN_OP_and: *out = a[0] && a[1]; return true;
  case KILN_OP_or: *out = a[0] || a[1]; return true;
  case KILN_OP_select: *out = a[0] ? a[1] : a[2]; return true;
  default: return false;
  }
}

/* True when LOOP kernel k reads buffer b only at the element it stores (checked at every
 * point of its loops): then it may store over b. */
static bool reads_only_own_element(const kiln_kernel *k, int32_t b) {
  if (k->kind != KILN_KERNEL_LOOP) return false;
  int64_t n = 1, v[64] = {0}, stride[KILN_MAX_RANK];
  for (int32_t i = 0; i < k->n_vars; i++) n *= k->extent[i];
  if (n > (1 << 16) || k->n_vars > 64) return false;
  kiln_shape_strides(&k->out, stride);
  for (int64_t p = 0; p < n; p++) {
    int64_t rem = p, own = 0;
    for (int32_t i = k->n_vars - 1; i >= 0; i--) v[i] = rem % k->extent[i], rem /= k->extent[i];
    for (int32_t i = 0; i < k->out.rank; i++) own += v[i] * stride[i];
    for (int32_t j = 0; j < k->n_kx; j++) {
      if (k->kx[j].kind != KILN_KX_LOAD || k->kx[j].buf != b) continue;
      int64_t off;
      if (!eval_index(k, k->kx[j].a[0], v, &off) || off != own) return false;
    }
  }
  return true;
}

/* Recomputes liveness independently (sub-kernels included) and checks every pair of
 * arena buffers: two live at once never share bytes, except a kernel's output stored
 * exactly over an input that dies there and that the kernel reads only at the element it
 * stores (in-place reuse). Returns the number of such in-place pairs. */
static int check_no_overlap(const kiln_kprogram *p) {
  int32_t nb = p->n_buffers, first[256], last[256];
  int in_place = 0;
  cr_assert_leq(nb, 256);
  for (int32_t b = 0; b < nb; b++) first[b] = last[b] = -1;
  for (int32_t k = 0; k < p->n_kernels; k++) {
    const kiln_kernel *kn = &p->kernels[k];
    touch(first, last, kn->out_buf, k);
    if (kn->kind == KILN_KERNEL_LOOP) touch_loop(first, last, kn, k);
    if (kn->kind == KILN_KERNEL_GEMM) {
      touch(first, last, kn->gemm.a_buf, k), touch(first, last, kn->gemm.b_buf, k);
      if (kn->pack) touch(first, last, kn->gemm.param_buf, k);
      touch_loop(first, last, kn->pack, k), touch_loop(first, last, kn->epilogue, k);
    }
    for (int32_t i = 0; i < kn->n_in_bufs; i++) touch(first, last, kn->in_bufs[i], k);
  }
  for (int32_t a = 0; a < nb; a++) {
    const kiln_buffer *ba = &p->buffers[a];
    if (ba->kind != KILN_BUF_ARENA) continue;
    cr_expect_eq(ba->offset % 64, 0);
    cr_expect_leq((size_t)ba->offset + ba->nbytes, p->arena_bytes);
    for (int32_t b = 0; b < nb; b++) {
      const kiln_buffer *bb = &p->buffers[b];
      if (b == a || bb->kind != KILN_BUF_ARENA || first[a] < 0 || first[b] < 0 || first[a] > first[b]) continue;
      if (first[a] == first[b] && b < a) continue; /* each pair once */
      bool live_together = first[a] <= last[b] && first[b] <= last[a];
      bool overlap = ba->offset < bb->offset + (int64_t)bb->nbytes && bb->offset < ba->offset + (int64_t)ba->nbytes;
      if (!(live_together && overlap)) continue;
      int32_t k = first[b];
      bool ok = last[a] == k && p->kernels[k].out_buf == b && ba->offset == bb->offset && ba->nbytes == bb->nbytes &&
                reads_only_own_element(&p->kernels[k], a);
      in_place += ok;
      cr_expect(ok, "b%d [%d,%d] @%lld+%zu and b%d [%d,%d] @%lld+%zu", a, first[a], last[a], (long long)ba->offset,
                ba->nbytes, b, first[b], last[b], (long long)bb->offset, bb->nbytes);
    }
  }
  return in_place;
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

Test(memplan, chain_reuses_space_in_place) {
  kiln_graph *g = chain_graph(12);
  kiln_kprogram *p = lower(g, KILN_FUSION_NONE);
  int64_t one = 16 * 16 * 4, total = 0;
  for (int32_t b = 0; b < p->n_buffers; b++) total += p->buffers[b].kind == KILN_BUF_ARENA ? (int64_t)p->buffers[b].nbytes : 0;
  cr_expect_eq(total, 11 * one, "eleven temporaries");
  /* Without in-place reuse two slots alternate (input and output of each kernel are live
   * together); each unary op stores over its dead input, so one slot holds them all. */
  cr_expect_eq((int64_t)p->arena_bytes, one, "arena %zu", p->arena_bytes);
  cr_expect_eq(check_no_overlap(p), 10, "ten kernels store over their input");
  kiln_ir_kprogram_destroy(p);
  kiln_ir_graph_destroy(g);
}

/* exp -> permute -> exp -> reverse -> slice of a pad -> neg on a square f32[16,16] at
 * --fusion none: every temporary has the same size and dies at its one consumer, but the
 * movement kernels read their input at another element, so they never store over it. */
Test(memplan, kernels_reading_elsewhere_never_store_over_their_input) {
  kiln_graph *g = kiln_ir_graph_create(NULL, "moves");
  kiln_shape s = shp(2, 16, 16, 0, 0);
  int32_t x = kiln_ir_input(g, "x", KILN_F32, &s, NULL), perm[2] = {1, 0}, axes[1] = {1};
  x = kiln_ir_unary(g, KILN_OP_exp, x, "e1");
  x = kiln_ir_permute(g, x, perm, "t");
  x = kiln_ir_unary(g, KILN_OP_exp, x, "e2");
  x = kiln_ir_reverse(g, x, 1, axes, "rev");
  x = kiln_ir_unary(g, KILN_OP_exp, x, "e3");
  int64_t lo[2] = {0, 1}, hi[2] = {0, -1};
  x = kiln_ir_pad(g, x, lo, hi, 0.0, "shift"); /* out[i, j] = in[i, j - 1] */
  kiln_ir_add_output(g, kiln_ir_unary(g, KILN_OP_neg, x, "n"), "y");
  kiln_kprogram *p = lower(g, KILN_FUSION_NONE);
  cr_assert_eq(p->n_kernels, 7);
  check_no_overlap(p);
  for (int32_t k = 0; k < p->n_kernels; k++) {
    const kiln_kernel *kn = &p->kernels[k];
    const char *src = kn->n_sources ? kn->sources[kn->n_sources - 1] : "";
    bool moves = !strcmp(src, "t") || !strcmp(src, "rev") || !strcmp(src, "shift");
    for (int32_t i = 0; i < kn->n_kx; i++) {
      if (kn->kx[i].kind != KILN_KX_LOAD) continue;
      const kiln_buffer *in = &p->buffers[kn->kx[i].buf], *out = &p->buffers[kn->out_buf];
      if (in->kind != KILN_BUF_ARENA || out->kind != KILN_BUF_ARENA) continue;
      if (moves) cr_expect_neq(in->offset, out->offset, "%s stores over its input", kn->name);
      else cr_expect_eq(in->offset, out->offset, "%s could store over its dead input", kn->name);
    }
  }
  kiln_ir_kprogram_destroy(p);
  kiln_ir_graph_destroy(g);
}

/* A hand-built program whose GEMM kernel has a pack and an epilogue:
 *   k0: R = copy(x)       k1: X = copy(x2)
 *   k2: O = A * pack(X) (tiles of 4 columns through scratch S and params P), epilogue
 *       O = O + R
 *   k3: y = copy(O)
 * R and X are read only by the sub-kernels, so they live through k2; S and P live only
 * in k2; O is written by the GEMM before its epilogue reads R, so it may not take R's
 * slot although R dies at k2 with O's size. */
static int32_t kx_add(kiln_kernel *k, kiln_kx x) {
  for (int j = 0; j < 3; j++)
    if (x.kind == KILN_KX_CONST || x.kind == KILN_KX_VAR) x.a[j] = -1;
  k->kx[k->n_kx] = x;
  return k->n_kx++;
}

static void loop_kernel(kiln_kprogram *p, kiln_kernel *k, int32_t out_buf, int64_t d0, int64_t d1) {
  memset(k, 0, sizeof *k);
  k->kind = KILN_KERNEL_LOOP;
  k->name = "loop";
  k->node = -1;
  k->out_buf = out_buf;
  k->out_dtype = KILN_F32;
  k->out = shp(2, d0, d1, 0, 0);
  k->n_vars = 2;
  k->extent = kiln_arena_alloc(p->arena, sizeof(int64_t) * 2);
  k->extent[0] = d0, k->extent[1] = d1;
  k->kx = kiln_arena_alloc(p->arena, sizeof(kiln_kx) * 16);
}

/* k's offset var0 * stride + var1 (stride = the row length) */
static int32_t kx_rowmajor(kiln_kernel *k, int64_t stride) {
  int32_t v0 = kx_add(k, (kiln_kx){.kind = KILN_KX_VAR, .dtype = KILN_I64, .var = 0});
  int32_t v1 = kx_add(k, (kiln_kx){.kind = KILN_KX_VAR, .dtype = KILN_I64, .var = 1});
  int32_t c = kx_add(k, (kiln_kx){.kind = KILN_KX_CONST, .dtype = KILN_I64, .i = stride});
  int32_t m = kx_add(k, (kiln_kx){.kind = KILN_KX_ALU, .dtype = KILN_I64, .op = KILN_OP_mul, .a = {v0, c, -1}});
  return kx_add(k, (kiln_kx){.kind = KILN_KX_ALU, .dtype = KILN_I64, .op = KILN_OP_add, .a = {m, v1, -1}});
}

static void copy_kernel(kiln_kprogram *p, kiln_kernel *k, int32_t out_buf, int32_t in_buf, int64_t d0, int64_t d1) {
  loop_kernel(p, k, out_buf, d0, d1);
  int32_t off = kx_rowmajor(k, d1);
  k->root = kx_add(k, (kiln_kx){.kind = KILN_KX_LOAD, .dtype = KILN_F32, .buf = in_buf, .a = {off, -1, -1}});
}

static kiln_buffer buf(kiln_buffer_kind kind, kiln_dtype dt, int64_t d0, int64_t d1, int32_t index) {
  kiln_buffer b = {.kind = kind, .dtype = dt, .shape = shp(2, d0, d1, 0, 0), .index = index};
  b.nbytes = (size_t)(d0 * d1) * kiln_dtype_size(dt);
  return b;
}

Test(memplan, gemm_sub_kernel_buffers) {
  kiln_kprogram *p = kiln_ir_kprogram_create(NULL);
  p->n_inputs = 3, p->n_outputs = 1;
  p->n_buffers = 9;
  p->buffers = kiln_arena_alloc(p->arena, sizeof(kiln_buffer) * 9);
  enum { X_IN, X2_IN, A_IN, R, X, S, P, O, Y };
  p->buffers[X_IN] = buf(KILN_BUF_INPUT, KILN_F32, 16, 64, 0);
  p->buffers[X2_IN] = buf(KILN_BUF_INPUT, KILN_F32, 2, 64, 1);
  p->buffers[A_IN] = buf(KILN_BUF_INPUT, KILN_F32, 16, 2, 2);
  p->buffers[R] = buf(KILN_BUF_ARENA, KILN_F32, 16, 64, 0);
  p->buffers[X] = buf(KILN_BUF_ARENA, KILN_F32, 2, 64, 0);
  p->buffers[S] = buf(KILN_BUF_ARENA, KILN_F32, 2, 16, 0);
  p->buffers[P] = buf(KILN_BUF_ARENA, KILN_I64, 1, 2, 0);
  p->buffers[O] = buf(KILN_BUF_ARENA, KILN_F32, 16, 64, 0);
  p->buffers[Y] = buf(KILN_BUF_OUTPUT, KILN_F32, 16, 64, 0);
  p->n_kernels = 4;
  p->kernels = kiln_arena_alloc(p->arena, sizeof(kiln_kernel) * 4);
  copy_kernel(p, &p->kernels[0], R, X_IN, 16, 64);
  copy_kernel(p, &p->kernels[1], X, X2_IN, 2, 64);
  copy_kernel(p, &p->kernels[3], Y, O, 16, 64);
  kiln_kernel *k = &p->kernels[2];
  memset(k, 0, sizeof *k);
  k->kind = KILN_KERNEL_GEMM;
  k->name = "gemm";
  k->node = -1;
  k->out_buf = O;
  k->out_dtype = KILN_F32;
  k->out = shp(2, 16, 64, 0, 0);
  k->gemm = (kiln_gemm_desc){.a_buf = A_IN, .b_buf = S, .c_buf = O, .m = 16, .n = 64, .k = 2, .lda = 2, .ldb = 16,
                             .ldc = 64, .tile_n = 16, .param_buf = P, .epi_last = 64};
  /* pack: S[kk, j] = X[kk, col0 + j] with col0 = P[1] */
  k->pack = kiln_arena_alloc(p->arena, sizeof(kiln_kernel));
  loop_kernel(p, k->pack, S, 2, 16);
  kiln_kernel *pk = k->pack;
  int32_t one = kx_add(pk, (kiln_kx){.kind = KILN_KX_CONST, .dtype = KILN_I64, .i = 1});
  int32_t col0 = kx_add(pk, (kiln_kx){.kind = KILN_KX_LOAD, .dtype = KILN_I64, .buf = P, .a = {one, -1, -1}});
  int32_t off = kx_rowmajor(pk, 64);
  off = kx_add(pk, (kiln_kx){.kind = KILN_KX_ALU, .dtype = KILN_I64, .op = KILN_OP_add, .a = {off, col0, -1}});
  pk->root = kx_add(pk, (kiln_kx){.kind = KILN_KX_LOAD, .dtype = KILN_F32, .buf = X, .a = {off, -1, -1}});
  /* epilogue: O = O + R at its own element */
  k->epilogue = kiln_arena_alloc(p->arena, sizeof(kiln_kernel));
  loop_kernel(p, k->epilogue, O, 16, 64);
  kiln_kernel *ek = k->epilogue;
  int32_t eoff = kx_rowmajor(ek, 64);
  int32_t c = kx_add(ek, (kiln_kx){.kind = KILN_KX_LOAD, .dtype = KILN_F32, .buf = O, .a = {eoff, -1, -1}});
  int32_t r = kx_add(ek, (kiln_kx){.kind = KILN_KX_LOAD, .dtype = KILN_F32, .buf = R, .a = {eoff, -1, -1}});
  ek->root = kx_add(ek, (kiln_kx){.kind = KILN_KX_ALU, .dtype = KILN_F32, .op = KILN_OP_add, .a = {c, r, -1}});

  kiln_diag d = {0};
  cr_assert_eq(kiln_ir_kprogram_verify(p, &d), KILN_OK, "%s", d.msg);
  cr_assert_eq(kiln_pass_plan_memory(p, &d), KILN_OK, "%s", d.msg);
  cr_expect_eq(check_no_overlap(p), 0, "nothing in place around a GEMM");
  const kiln_buffer *b = p->buffers;
  cr_expect_neq(b[O].offset, b[R].offset, "the product would overwrite the residual before the epilogue reads it");
  /* R (4 KB), X (512 B), S, P and O (4 KB) are all live during the GEMM */
  cr_expect_geq(p->arena_bytes, 4096 + 512 + 128 + 64 + 4096);
  kiln_ir_kprogram_destroy(p);
}
