/* test_ir_build.c - the builder: shape inference, numpy broadcasting made explicit,
 * matmul promotion, axis normalization, and errors that name the node. */
#include <criterion/criterion.h>

#include "test_ir_util.h"

static kiln_graph *G(void) { return kiln_ir_graph_create(NULL, "t"); }
static const kiln_node *N(kiln_graph *g, int32_t v) {
  cr_assert(v >= 0 && v < g->n_nodes, "bad id %d (diag: %s)", v, g->diag.msg);
  return &g->nodes[v];
}
static void assert_shape(kiln_graph *g, int32_t v, kiln_shape s) {
  cr_assert(kiln_shape_eq(&N(g, v)->shape, &s), "node %d rank %d dims %lld,%lld,%lld", v, N(g, v)->shape.rank,
            (long long)N(g, v)->shape.dims[0], (long long)N(g, v)->shape.dims[1], (long long)N(g, v)->shape.dims[2]);
}
static void assert_verifies(kiln_graph *g) {
  kiln_diag d = {0};
  cr_assert_eq(kiln_ir_verify(g, &d), KILN_OK, "%s", d.msg);
}

Test(ir_build, binary_broadcasts_both_operands_numpy_style) {
  kiln_graph *g = G();
  kiln_shape sa = shp(3, 2, 1, 3), sb = shp(2, 4, 3);
  int32_t a = kiln_ir_input(g, "a", KILN_F32, &sa, NULL), b = kiln_ir_input(g, "b", KILN_F32, &sb, NULL);
  int32_t c = kiln_ir_binary(g, KILN_OP_add, a, b, "Add_1");
  assert_shape(g, c, shp(3, 2, 4, 3));
  const kiln_node *n = N(g, c);
  cr_assert_eq(n->op, KILN_OP_add);
  for (int i = 0; i < 2; i++) {
    const kiln_node *bn = N(g, n->in[i]);
    cr_assert_eq(bn->op, KILN_OP_broadcast);
    assert_shape(g, n->in[i], shp(3, 2, 4, 3));
    cr_assert_str_eq(bn->name, "Add_1");
  }
  cr_assert_eq(N(g, n->in[0])->in[0], a);
  cr_assert_eq(N(g, n->in[1])->in[0], b);
  assert_verifies(g);
  kiln_ir_graph_destroy(g);
}

Test(ir_build, no_broadcast_node_when_shapes_match) {
  kiln_graph *g = G();
  kiln_shape s = shp(2, 2, 3);
  int32_t a = kiln_ir_input(g, "a", KILN_F32, &s, NULL), b = kiln_ir_input(g, "b", KILN_F32, &s, NULL);
  int32_t n0 = g->n_nodes;
  int32_t c = kiln_ir_binary(g, KILN_OP_mul, a, b, "m");
  cr_assert_eq(g->n_nodes, n0 + 1);
  cr_assert_eq(N(g, c)->in[0], a);
  cr_assert_eq(N(g, c)->in[1], b);
  kiln_ir_graph_destroy(g);
}

Test(ir_build, comparisons_produce_bool_and_select_broadcasts_condition) {
  kiln_graph *g = G();
  kiln_shape s = shp(2, 2, 3), s1 = shp(1, 3);
  int32_t a = kiln_ir_input(g, "a", KILN_F32, &s, NULL), b = kiln_ir_input(g, "b", KILN_F32, &s1, NULL);
  int32_t c = kiln_ir_binary(g, KILN_OP_lt, b, kiln_ir_scalar(g, KILN_F32, 0, "z"), "lt");
  cr_assert_eq(N(g, c)->dtype, KILN_BOOL);
  assert_shape(g, c, shp(1, 3));
  int32_t sel = kiln_ir_select(g, c, a, kiln_ir_scalar(g, KILN_F32, 1, "one"), "where");
  assert_shape(g, sel, shp(2, 2, 3));
  cr_assert_eq(N(g, N(g, sel)->in[0])->op, KILN_OP_broadcast);
  cr_assert_eq(N(g, sel)->in[1], a);
  assert_verifies(g);
  kiln_ir_graph_destroy(g);
}

Test(ir_build, matmul_batch_broadcast_and_vector_promotion) {
  kiln_graph *g = G();
  kiln_shape s523 = shp(3, 5, 2, 3), s34 = shp(2, 3, 4), s3 = shp(1, 3);
  int32_t a = kiln_ir_input(g, "a", KILN_F32, &s523, NULL);
  int32_t w = kiln_ir_input(g, "w", KILN_F32, &s34, NULL);
  int32_t v = kiln_ir_input(g, "v", KILN_F32, &s3, NULL);
  int32_t y = kiln_ir_matmul(g, a, w, "mm");
  assert_shape(g, y, shp(3, 5, 2, 4));
  cr_assert_eq(N(g, y)->op, KILN_OP_dot);
  cr_assert_eq(N(g, y)->in[0], a);
  cr_assert_eq(N(g, N(g, y)->in[1])->op, KILN_OP_broadcast);
  assert_shape(g, N(g, y)->in[1], shp(3, 5, 3, 4));
  int32_t vw = kiln_ir_matmul(g, v, w, "vw");
  assert_shape(g, vw, shp(1, 4));
  cr_assert_eq(N(g, vw)->op, KILN_OP_reshape);
  int32_t av = kiln_ir_matmul(g, a, v, "av");
  assert_shape(g, av, shp(2, 5, 2));
  int32_t vv = kiln_ir_matmul(g, v, v, "vv");
  assert_shape(g, vv, shp(0));
  assert_verifies(g);
  kiln_ir_graph_destroy(g);
}

Test(ir_build, matmul_dim_mismatch_is_a_shape_error_naming_the_node) {
  kiln_graph *g = G();
  kiln_shape s23 = shp(2, 2, 3), s45 = shp(2, 4, 5);
  int32_t a = kiln_ir_input(g, "a", KILN_F32, &s23, NULL), b = kiln_ir_input(g, "b", KILN_F32, &s45, NULL);
  int32_t n0 = g->n_nodes;
  cr_assert_eq(kiln_ir_matmul(g, a, b, "MatMul_7"), -1);
  cr_assert_eq(g->diag.status, KILN_ERR_SHAPE);
  cr_assert(strstr(g->diag.msg, "MatMul_7"), "%s", g->diag.msg);
  cr_assert(strstr(g->diag.msg, "[2,3]") && strstr(g->diag.msg, "[4,5]"), "%s", g->diag.msg);
  cr_assert_eq(g->n_nodes, n0, "a failed builder adds no nodes");
  /* -1 propagates silently: the first message stays. */
  char first[sizeof g->diag.msg];
  strcpy(first, g->diag.msg);
  cr_assert_eq(kiln_ir_unary(g, KILN_OP_exp, -1, "Exp_8"), -1);
  cr_assert_eq(kiln_ir_binary(g, KILN_OP_add, a, -1, "Add_9"), -1);
  cr_assert_str_eq(g->diag.msg, first);
  kiln_ir_graph_destroy(g);
}

Test(ir_build, incompatible_broadcast_and_dtype_errors) {
  kiln_graph *g = G();
  kiln_shape s23 = shp(2, 2, 3), s4 = shp(1, 4);
  int32_t a = kiln_ir_input(g, "a", KILN_F32, &s23, NULL), b = kiln_ir_input(g, "b", KILN_F32, &s4, NULL);
  cr_assert_eq(kiln_ir_binary(g, KILN_OP_add, a, b, "Add_bad"), -1);
  cr_assert_eq(g->diag.status, KILN_ERR_SHAPE);
  cr_assert(strstr(g->diag.msg, "Add_bad") && strstr(g->diag.msg, "broadcast"), "%s", g->diag.msg);
  kiln_ir_graph_destroy(g);

  g = G();
  a = kiln_ir_input(g, "a", KILN_F32, &s23, NULL);
  int32_t i = kiln_ir_input(g, "i", KILN_I32, &s23, NULL);
  cr_assert_eq(kiln_ir_binary(g, KILN_OP_sub, a, i, "Sub_mixed"), -1);
  cr_assert(strstr(g->diag.msg, "Sub_mixed") && strstr(g->diag.msg, "i32"), "%s", g->diag.msg);
  kiln_ir_graph_destroy(g);

  g = G();
  i = kiln_ir_input(g, "i", KILN_I32, &s23, NULL);
  cr_assert_eq(kiln_ir_unary(g, KILN_OP_exp, i, "Exp_int"), -1);
  cr_assert_eq(g->diag.status, KILN_ERR_SHAPE);
  kiln_ir_graph_destroy(g);
}

Test(ir_build, axes_are_normalized_sorted_and_identity_reduce_is_x) {
  kiln_graph *g = G();
  kiln_shape s = shp(3, 2, 3, 4);
  int32_t x = kiln_ir_input(g, "x", KILN_F32, &s, NULL);
  int32_t axes[2] = {-1, 0};
  int32_t r = kiln_ir_reduce(g, KILN_OP_reduce_sum, x, 2, axes, 0, "sum");
  cr_assert_eq(N(g, r)->a.n_axes, 2);
  cr_assert_eq(N(g, r)->a.axes[0], 0);
  cr_assert_eq(N(g, r)->a.axes[1], 2);
  assert_shape(g, r, shp(1, 3));
  cr_assert_eq(kiln_ir_reduce(g, KILN_OP_reduce_max, x, 0, NULL, 1, "id"), x);
  int32_t am = kiln_ir_arg(g, KILN_OP_argmax, x, -2, 1, 0, "am");
  cr_assert_eq(N(g, am)->a.axis, 1);
  cr_assert_eq(N(g, am)->dtype, KILN_I64);
  assert_shape(g, am, shp(3, 2, 1, 4));
  int32_t c = kiln_ir_concat(g, 2, (int32_t[]){x, x}, -3, "cat");
  assert_shape(g, c, shp(3, 4, 3, 4));
  int32_t bad[1] = {3};
  cr_assert_eq(kiln_ir_reduce(g, KILN_OP_reduce_sum, x, 1, bad, 0, "Bad_axis"), -1);
  cr_assert_eq(g->diag.status, KILN_ERR_INVALID_ARGUMENT);
  cr_assert(strstr(g->diag.msg, "Bad_axis") && strstr(g->diag.msg, "axis 3"), "%s", g->diag.msg);
  kiln_ir_graph_destroy(g);
}

Test(ir_build, movement_shapes) {
  kiln_graph *g = G();
  kiln_shape s = shp(3, 2, 3, 4);
  int32_t x = kiln_ir_input(g, "x", KILN_F32, &s, NULL);
  assert_shape(g, kiln_ir_permute(g, x, (int32_t[]){2, 0, 1}, "p"), shp(3, 4, 2, 3));
  assert_shape(g, kiln_ir_pad(g, x, (int64_t[]){0, 1, -1}, (int64_t[]){1, 1, 0}, 0, "pad"), shp(3, 3, 5, 3));
  int64_t idx[3] = {0, 1, 2};
  kiln_shape si = shp(2, 1, 3);
  int32_t ind = kiln_ir_constant(g, "ind", KILN_I64, &si, idx);
  assert_shape(g, kiln_ir_gather(g, x, ind, -1, "g"), shp(4, 2, 3, 1, 3));
  assert_shape(g, kiln_ir_slice(g, x, (int64_t[]){1, 2, 3}, (int64_t[]){1, -1, -2}, (int64_t[]){1, 3, 2}, "sl"),
               shp(3, 1, 3, 2));
  cr_assert_eq(kiln_ir_slice(g, x, (int64_t[]){0, 0, 0}, (int64_t[]){1, 1, 2}, (int64_t[]){2, 3, 3}, "Slice_oob"), -1);
  cr_assert(strstr(g->diag.msg, "Slice_oob"), "%s", g->diag.msg);
  kiln_ir_graph_destroy(g);

  g = G();
  x = kiln_ir_input(g, "x", KILN_F32, &s, NULL);
  kiln_shape s6 = shp(2, 6, 4), s5 = shp(1, 5);
  assert_shape(g, kiln_ir_reshape(g, x, &s6, "r"), s6);
  cr_assert_eq(kiln_ir_reshape(g, x, &s5, "Reshape_bad"), -1);
  cr_assert_eq(g->diag.status, KILN_ERR_SHAPE);
  kiln_ir_graph_destroy(g);

  g = G();
  kiln_shape s23 = shp(2, 2, 3);
  int32_t io = kiln_ir_iota(g, KILN_I64, &s23, -1, "iota");
  cr_assert_eq(N(g, io)->a.axis, 1);
  cr_assert_eq(N(g, io)->dtype, KILN_I64);
  int32_t t = kiln_ir_topk(g, kiln_ir_cast(g, io, KILN_F32, "c"), 2, -1, 1, "tk");
  assert_shape(g, t, shp(2, 2, 2));
  cr_assert_eq(N(g, t)->dtype, KILN_I64);
  cr_assert_eq(kiln_ir_topk(g, io, 4, 1, 1, "TopK_bad"), -1);
  assert_verifies(g);
  kiln_ir_graph_destroy(g);
}

Test(ir_build, pool_and_conv_check_window_and_groups) {
  kiln_graph *g = G();
  kiln_shape sx = shp(4, 1, 4, 5, 5), sw = shp(4, 6, 2, 3, 3);
  int32_t x = kiln_ir_input(g, "x", KILN_F32, &sx, NULL);
  int32_t w = kiln_ir_input(g, "w", KILN_F32, &sw, NULL);
  int32_t c = kiln_ir_conv(g, x, w, (int64_t[]){2, 2}, NULL, (int64_t[]){1, 1}, (int64_t[]){1, 1}, 2, "conv");
  assert_shape(g, c, shp(4, 1, 6, 3, 3));
  cr_assert_eq(kiln_ir_conv(g, x, w, NULL, NULL, NULL, NULL, 3, "Conv_groups"), -1);
  cr_assert(strstr(g->diag.msg, "Conv_groups") && strstr(g->diag.msg, "groups"), "%s", g->diag.msg);
  kiln_ir_graph_destroy(g);

  g = G();
  x = kiln_ir_input(g, "x", KILN_F32, &sx, NULL);
  int32_t p = kiln_ir_pool(g, x, KILN_POOL_MAX, (int64_t[]){3, 3}, (int64_t[]){2, 2}, NULL, NULL, NULL, 0, "mp");
  assert_shape(g, p, shp(4, 1, 4, 2, 2));
  cr_assert_eq(kiln_ir_pool(g, x, KILN_POOL_MAX, (int64_t[]){6, 1}, NULL, NULL, NULL, NULL, 0, "Pool_big"), -1);
  cr_assert_eq(g->diag.status, KILN_ERR_SHAPE);
  cr_assert(strstr(g->diag.msg, "Pool_big") && strstr(g->diag.msg, "does not fit"), "%s", g->diag.msg);
  kiln_ir_graph_destroy(g);
}

Test(ir_build, scalar_converts_into_the_dtype) {
  kiln_graph *g = G();
  int32_t i = kiln_ir_scalar(g, KILN_I32, -3.7, "i");
  cr_assert_eq(*(int32_t *)kiln_ir_const_of(g, i)->data, -3);
  int32_t h = kiln_ir_scalar(g, KILN_F16, 1.5, "h");
  cr_assert_eq(*(uint16_t *)kiln_ir_const_of(g, h)->data, 0x3e00);
  int32_t b = kiln_ir_scalar(g, KILN_BOOL, 0.5, "b");
  cr_assert_eq(*(uint8_t *)kiln_ir_const_of(g, b)->data, 1);
  int32_t u = kiln_ir_scalar(g, KILN_U8, 300, "u");
  cr_assert_eq(*(uint8_t *)kiln_ir_const_of(g, u)->data, 255);
  cr_assert_eq(N(g, u)->shape.rank, 0);
  kiln_ir_graph_destroy(g);
}

Test(ir_build, inputs_register_in_the_input_list) {
  kiln_graph *g = G();
  kiln_shape s = shp(2, 1, 3);
  const char *dn[2] = {"batch", NULL};
  int32_t a = kiln_ir_input(g, "a", KILN_F32, &s, dn);
  int32_t b = kiln_ir_input(g, "b", KILN_I64, &s, NULL);
  cr_assert_eq(g->n_inputs, 2);
  cr_assert_eq(N(g, a)->index, 0);
  cr_assert_eq(N(g, b)->index, 1);
  cr_assert_eq(g->inputs[1].node, b);
  cr_assert_str_eq(g->inputs[0].dim_names[0], "batch");
  cr_assert_null(g->inputs[0].dim_names[1]);
  kiln_ir_graph_destroy(g);
}

Test(ir_build, every_op_graph_builds_and_verifies) {
  kiln_graph *g = build_every_op_graph();
  cr_assert_eq(g->diag.status, KILN_OK, "%s", g->diag.msg);
  assert_verifies(g);
  kiln_ir_graph_destroy(g);
}
