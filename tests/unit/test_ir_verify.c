/* test_ir_verify.c - the graph verifier catches corrupted graphs (wrong shape, forward
 * reference, bad axis, bad leaf indices) and the kernel-program verifier and printer work
 * on a hand-built kernel. */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "test_ir_util.h"

static void expect_fail(kiln_graph *g, kiln_status want, const char *n1, const char *n2) {
  kiln_diag d = {0};
  kiln_status st = kiln_ir_verify(g, &d);
  cr_assert_eq(st, want, "status %d, msg: %s", st, d.msg);
  if (n1) cr_assert(strstr(d.msg, n1), "'%s' lacks '%s'", d.msg, n1);
  if (n2) cr_assert(strstr(d.msg, n2), "'%s' lacks '%s'", d.msg, n2);
}

static int32_t find(kiln_graph *g, const char *name) {
  for (int i = 0; i < g->n_nodes; i++)
    if (strcmp(g->nodes[i].name, name) == 0) return i;
  cr_assert_fail("no node %s", name);
  return -1;
}

Test(ir_verify, accepts_a_valid_graph) {
  kiln_graph *g = build_every_op_graph();
  kiln_diag d = {0};
  cr_assert_eq(kiln_ir_verify(g, &d), KILN_OK, "%s", d.msg);
  kiln_graph *c = kiln_ir_graph_clone(g);
  cr_assert_eq(kiln_ir_verify(c, &d), KILN_OK, "%s", d.msg);
  kiln_ir_graph_destroy(c);
  kiln_ir_graph_destroy(g);
}

Test(ir_verify, wrong_shape_names_node_id_name_and_op) {
  kiln_graph *g = build_every_op_graph();
  int32_t v = find(g, "matmul");
  g->nodes[v].shape.dims[1] = 5;
  char id[24]; /* "node %" and any int32 */
  snprintf(id, sizeof id, "node %%%d", v);
  expect_fail(g, KILN_ERR_SHAPE, id, "'matmul' (dot)");
  kiln_ir_graph_destroy(g);
}

Test(ir_verify, wrong_dtype) {
  kiln_graph *g = build_every_op_graph();
  g->nodes[find(g, "eq")].dtype = KILN_F32;
  expect_fail(g, KILN_ERR_SHAPE, "'eq'", "bool");
  kiln_ir_graph_destroy(g);
}

Test(ir_verify, forward_reference) {
  kiln_graph *g = build_every_op_graph();
  int32_t v = find(g, "neg");
  g->nodes[v].in[0] = v + 1;
  expect_fail(g, KILN_ERR_INVALID_ARGUMENT, "'neg'", "forward reference");
  g->nodes[v].in[0] = v;
  expect_fail(g, KILN_ERR_INVALID_ARGUMENT, "'neg'", "not an earlier node");
  kiln_ir_graph_destroy(g);
}

Test(ir_verify, bad_axis_and_attrs) {
  kiln_graph *g = build_every_op_graph();
  int32_t v = find(g, "reduce_sum");
  g->nodes[v].a.axes[0] = 2;
  expect_fail(g, KILN_ERR_INVALID_ARGUMENT, "'reduce_sum'", "axis 2 out of range");
  g->nodes[v].a.axes[0] = 1;
  g->nodes[find(g, "concat")].a.axis = -1;
  expect_fail(g, KILN_ERR_INVALID_ARGUMENT, "'concat'", "axis -1");
  g->nodes[find(g, "concat")].a.axis = 1;
  g->nodes[find(g, "permute")].a.perm[1] = 1; /* [1,1] */
  expect_fail(g, KILN_ERR_INVALID_ARGUMENT, "'permute'", "perm");
  kiln_ir_graph_destroy(g);

  g = build_every_op_graph();
  g->nodes[find(g, "pool")].a.kind = 3;
  expect_fail(g, KILN_ERR_INVALID_ARGUMENT, "'pool'", "kind=3");
  kiln_ir_graph_destroy(g);

  g = build_every_op_graph();
  g->nodes[find(g, "slice")].a.steps[0] = 0;
  expect_fail(g, KILN_ERR_INVALID_ARGUMENT, "'slice'", "step");
  kiln_ir_graph_destroy(g);
}

Test(ir_verify, arity_and_leaves_and_outputs) {
  kiln_graph *g = build_every_op_graph();
  g->nodes[find(g, "add")].n_in = 1;
  expect_fail(g, KILN_ERR_INVALID_ARGUMENT, "'add'", "has 1 inputs");
  kiln_ir_graph_destroy(g);

  g = build_every_op_graph();
  g->nodes[find(g, "w")].index = 999;
  expect_fail(g, KILN_ERR_INVALID_ARGUMENT, "'w' (constant)", "999");
  kiln_ir_graph_destroy(g);

  g = build_every_op_graph();
  g->nodes[find(g, "w")].index = find(g, "img") - 1; /* a constant of another shape */
  expect_fail(g, KILN_ERR_SHAPE, "'w'", "constant");
  kiln_ir_graph_destroy(g);

  g = build_every_op_graph();
  g->nodes[find(g, "x")].index = 1;
  expect_fail(g, KILN_ERR_INVALID_ARGUMENT, "'x' (input)", NULL);
  kiln_ir_graph_destroy(g);

  g = build_every_op_graph();
  g->outputs[0].node = g->n_nodes;
  expect_fail(g, KILN_ERR_INVALID_ARGUMENT, "output 0 'out'", NULL);
  kiln_ir_graph_destroy(g);
}

/* ------------------------------------------------------------------ kernel IR */

/* out[i] = sum_j in[i*3 + j] for in f32[2,3]: buffers b0 input, b1 output. */
static kiln_kprogram *row_sum_program(void) {
  kiln_kprogram *p = kiln_ir_kprogram_create(NULL);
  p->name = "rowsum";
  p->n_inputs = p->n_outputs = 1;
  p->n_buffers = 2;
  p->buffers = kiln_arena_alloc(p->arena, sizeof(kiln_buffer) * 2);
  p->buffers[0] = (kiln_buffer){.kind = KILN_BUF_INPUT, .dtype = KILN_F32, .shape = {2, {2, 3}}, .index = 0, .nbytes = 24, .name = "x"};
  p->buffers[1] = (kiln_buffer){.kind = KILN_BUF_OUTPUT, .dtype = KILN_F32, .shape = {1, {2}}, .index = 0, .nbytes = 8, .name = "y"};
  p->n_kernels = 1;
  p->kernels = kiln_arena_alloc(p->arena, sizeof(kiln_kernel));
  kiln_kernel *k = &p->kernels[0];
  k->kind = KILN_KERNEL_LOOP;
  k->name = "k0_reduce_sum";
  k->out_buf = 1;
  k->out_dtype = KILN_F32;
  k->out = (kiln_shape){1, {2}};
  k->n_vars = 2;
  k->extent = kiln_arena_alloc(p->arena, sizeof(int64_t) * 2);
  k->extent[0] = 2;
  k->extent[1] = 3;
  k->n_kx = 7;
  k->kx = kiln_arena_alloc(p->arena, sizeof(kiln_kx) * 7);
  kiln_kx *x = k->kx;
  for (int i = 0; i < 7; i++) x[i].a[0] = x[i].a[1] = x[i].a[2] = -1;
  x[0].kind = KILN_KX_VAR, x[0].dtype = KILN_I64, x[0].var = 0;
  x[1].kind = KILN_KX_CONST, x[1].dtype = KILN_I64, x[1].i = 3;
  x[2].kind = KILN_KX_ALU, x[2].dtype = KILN_I64, x[2].op = KILN_OP_mul, x[2].a[0] = 0, x[2].a[1] = 1;
  x[3].kind = KILN_KX_VAR, x[3].dtype = KILN_I64, x[3].var = 1;
  x[4].kind = KILN_KX_ALU, x[4].dtype = KILN_I64, x[4].op = KILN_OP_add, x[4].a[0] = 2, x[4].a[1] = 3;
  x[5].kind = KILN_KX_LOAD, x[5].dtype = KILN_F32, x[5].buf = 0, x[5].a[0] = 4;
  x[6].kind = KILN_KX_REDUCE, x[6].dtype = KILN_F32, x[6].op = KILN_OP_reduce_sum, x[6].var = 1, x[6].n_vars = 1,
  x[6].a[0] = 5;
  k->root = 6;
  return p;
}

static void kexpect_fail(kiln_kprogram *p, const char *needle) {
  kiln_diag d = {0};
  cr_assert_neq(kiln_ir_kprogram_verify(p, &d), KILN_OK, "expected failure containing '%s'", needle);
  cr_assert(strstr(d.msg, needle), "'%s' lacks '%s'", d.msg, needle);
}

Test(ir_kernel, hand_built_kernel_verifies_and_prints) {
  kiln_kprogram *p = row_sum_program();
  kiln_diag d = {0};
  cr_assert_eq(kiln_ir_kprogram_verify(p, &d), KILN_OK, "%s", d.msg);
  char *buf = NULL;
  size_t n = 0;
  FILE *f = open_memstream(&buf, &n);
  kiln_ir_kprogram_print(p, f);
  fclose(f);
  cr_assert(strstr(buf, "%5 = load f32 b0[%4]"), "%s", buf);
  cr_assert(strstr(buf, "%4 = alu add i64 %2 %3"), "%s", buf);
  cr_assert(strstr(buf, "%6 = reduce_sum f32 vars[1..2) %5"), "%s", buf);
  cr_assert(strstr(buf, "b1 output #0 f32[2]"), "%s", buf);
  free(buf);
  kiln_ir_kprogram_destroy(p);
}

Test(ir_kernel, verifier_catches_broken_kernels) {
  kiln_kprogram *p = row_sum_program();
  p->kernels[0].kx[2].a[1] = 4;
  kexpect_fail(p, "not an earlier node");
  kiln_ir_kprogram_destroy(p);

  p = row_sum_program();
  p->kernels[0].kx[4].dtype = KILN_I32;
  kexpect_fail(p, "alu add is i32");
  kiln_ir_kprogram_destroy(p);

  p = row_sum_program();
  p->kernels[0].kx[5].buf = 7;
  kexpect_fail(p, "b7");
  kiln_ir_kprogram_destroy(p);

  p = row_sum_program();
  p->kernels[0].kx[5].dtype = KILN_F64;
  kexpect_fail(p, "buffer b0 is f32");
  kiln_ir_kprogram_destroy(p);

  p = row_sum_program();
  p->kernels[0].kx[3].var = 2;
  kexpect_fail(p, "var v2");
  kiln_ir_kprogram_destroy(p);

  p = row_sum_program(); /* a reduce var nobody loops */
  p->kernels[0].root = 5;
  p->kernels[0].kx[6].kind = KILN_KX_ALU, p->kernels[0].kx[6].op = KILN_OP_neg;
  kexpect_fail(p, "v1 belongs to no reduce");
  kiln_ir_kprogram_destroy(p);

  p = row_sum_program();
  p->kernels[0].out_buf = 0;
  kexpect_fail(p, "into b0");
  kiln_ir_kprogram_destroy(p);

  p = row_sum_program();
  p->kernels[0].kx[6].var = 0;
  kexpect_fail(p, "reduce vars");
  kiln_ir_kprogram_destroy(p);
}

Test(ir_kernel, gemm_buffers_are_checked) {
  kiln_kprogram *p = row_sum_program();
  kiln_kernel *k = &p->kernels[0];
  k->kind = KILN_KERNEL_GEMM;
  k->gemm = (kiln_gemm_desc){.a_buf = 0, .b_buf = 0, .c_buf = 1, .m = 2, .n = 1, .k = 3, .lda = 3, .ldb = 1, .ldc = 1};
  kiln_diag d = {0};
  cr_assert_eq(kiln_ir_kprogram_verify(p, &d), KILN_OK, "%s", d.msg);
  k->gemm.b_buf = 5;
  kexpect_fail(p, "gemm B buffer b5");
  kiln_ir_kprogram_destroy(p);
}
