/* test_rt_graph.c - whole-graph interpretation: kiln_rt_interpret (input/output checks),
 * kiln_rt_interpret_values (every node's value, constants aliasing the store) and
 * kiln_rt_fold_value (evaluates only the constant cone and appends a constant node).
 * Graphs are built with the raw kiln_ir_append so these tests do not depend on the builder. */
#include "test_rt_helpers.h"

TestSuite(graph, .fini = free_test_bufs);

/* Defined in ir/core.c (used by the builder's kiln_ir_input). */
int32_t kiln_ir_add_input_io(kiln_graph *g, int32_t node, const char *name, const char *const *dim_names,
                             int32_t rank);

static int32_t input(kiln_graph *g, const char *name, kiln_dtype dt, kiln_shape s) {
  int32_t id = kiln_ir_append(g, KILN_OP_input, dt, &s, 0, NULL, NULL, name);
  g->nodes[id].index = g->n_inputs;
  kiln_ir_add_input_io(g, id, name, NULL, s.rank);
  return id;
}

static int32_t constant(kiln_graph *g, const char *name, kiln_dtype dt, kiln_shape s, const void *data) {
  int32_t ci = kiln_ir_add_const(g, dt, &s, data, name);
  int32_t id = kiln_ir_append(g, KILN_OP_constant, dt, &s, 0, NULL, NULL, name);
  g->nodes[id].index = ci;
  return id;
}

static int32_t node2(kiln_graph *g, kiln_op op, kiln_dtype dt, kiln_shape s, int32_t a, int32_t b, const char *name) {
  int32_t in[2] = {a, b};
  return kiln_ir_append(g, op, dt, &s, 2, in, NULL, name);
}

/* y = (x + c) * c, z = y > 5 */
static kiln_graph *small_graph(void) {
  kiln_graph *g = kiln_ir_graph_create(NULL, "small");
  int32_t x = input(g, "x", KILN_F32, SH(3));
  int32_t c = constant(g, "c", KILN_F32, SH(3), (float[]){1, 2, 3});
  int32_t s = node2(g, KILN_OP_add, KILN_F32, SH(3), x, c, "sum");
  int32_t y = node2(g, KILN_OP_mul, KILN_F32, SH(3), s, c, "prod");
  int32_t five = constant(g, "five", KILN_F32, SH(3), (float[]){5, 5, 5});
  int32_t z = node2(g, KILN_OP_gt, KILN_BOOL, SH(3), y, five, "big");
  kiln_ir_add_output(g, y, "y");
  kiln_ir_add_output(g, z, "z");
  cr_assert_eq(g->diag.status, KILN_OK);
  return g;
}

Test(graph, interpret_runs_inputs_to_outputs) {
  kiln_graph *g = small_graph();
  kiln_rt_tensor in = TF32(SH(3), 1, 1, 1);
  kiln_rt_tensor out[2] = {out_tensor(KILN_F32, SH(3)), out_tensor(KILN_BOOL, SH(3))};
  kiln_diag d = {0};
  cr_assert_eq(kiln_rt_interpret(g, &in, 1, out, 2, &d), KILN_OK, "%s", d.msg);
  EXPECT(out[0], 0, 2, 6, 12);
  EXPECT(out[1], 0, 0, 1, 1);
  kiln_ir_graph_destroy(g);
}

Test(graph, interpret_rejects_wrong_inputs_naming_them) {
  kiln_graph *g = small_graph();
  kiln_rt_tensor out[2] = {out_tensor(KILN_F32, SH(3)), out_tensor(KILN_BOOL, SH(3))};
  kiln_diag d = {0};
  kiln_rt_tensor wrong_dt = TF64(SH(3), 1, 1, 1);
  cr_assert_eq(kiln_rt_interpret(g, &wrong_dt, 1, out, 2, &d), KILN_ERR_INVALID_ARGUMENT);
  cr_assert(strstr(d.msg, "'x'") && strstr(d.msg, "f64"), "%s", d.msg);
  memset(&d, 0, sizeof d);
  kiln_rt_tensor wrong_shape = TF32(SH(1, 3), 1, 1, 1);
  cr_assert_eq(kiln_rt_interpret(g, &wrong_shape, 1, out, 2, &d), KILN_ERR_INVALID_ARGUMENT);
  cr_assert(strstr(d.msg, "'x'") && strstr(d.msg, "[1,3]"), "%s", d.msg);
  memset(&d, 0, sizeof d);
  cr_assert_eq(kiln_rt_interpret(g, NULL, 0, out, 2, &d), KILN_ERR_INVALID_ARGUMENT);
  memset(&d, 0, sizeof d);
  kiln_rt_tensor in = TF32(SH(3), 1, 1, 1);
  kiln_rt_tensor bad_out[2] = {out_tensor(KILN_F32, SH(3)), out_tensor(KILN_F32, SH(3))};
  cr_assert_eq(kiln_rt_interpret(g, &in, 1, bad_out, 2, &d), KILN_ERR_INVALID_ARGUMENT);
  cr_assert(strstr(d.msg, "'z'"), "%s", d.msg);
  kiln_ir_graph_destroy(g);
}

Test(graph, interpret_values_gives_every_node) {
  kiln_graph *g = small_graph();
  kiln_rt_tensor in = TF32(SH(3), 0, 0, 0), *vals;
  kiln_diag d = {0};
  cr_assert_eq(kiln_rt_interpret_values(g, &in, 1, &vals, &d), KILN_OK, "%s", d.msg);
  EXPECT(vals[0], 0, 0, 0, 0);
  cr_assert_eq(vals[1].data, g->consts[0].data, "constants alias the store");
  EXPECT(vals[2], 0, 1, 2, 3);
  EXPECT(vals[3], 0, 1, 4, 9);
  EXPECT(vals[5], 0, 0, 0, 1);
  kiln_rt_values_free(g, vals);
  kiln_ir_graph_destroy(g);
}

Test(graph, runtime_errors_name_the_node) {
  kiln_graph *g = kiln_ir_graph_create(NULL, "divz");
  int32_t x = input(g, "x", KILN_I32, SH(2));
  int32_t z = constant(g, "zero", KILN_I32, SH(2), (int32_t[]){1, 0});
  int32_t q = node2(g, KILN_OP_div, KILN_I32, SH(2), x, z, "onnx_div_7");
  kiln_ir_add_output(g, q, "q");
  kiln_rt_tensor in = TI32(SH(2), 4, 4), out = out_tensor(KILN_I32, SH(2));
  kiln_diag d = {0};
  cr_assert_eq(kiln_rt_interpret(g, &in, 1, &out, 1, &d), KILN_ERR_INVALID_ARGUMENT);
  cr_assert(strstr(d.msg, "onnx_div_7"), "%s", d.msg);
  kiln_ir_graph_destroy(g);
}

Test(graph, fold_value_appends_a_constant) {
  kiln_graph *g = kiln_ir_graph_create(NULL, "fold");
  int32_t x = input(g, "x", KILN_F32, SH(2));
  int32_t a = constant(g, "a", KILN_F32, SH(2), (float[]){1, 2});
  int32_t b = constant(g, "b", KILN_F32, SH(2), (float[]){3, 4});
  int32_t s = node2(g, KILN_OP_add, KILN_F32, SH(2), a, b, "s");
  int32_t m = node2(g, KILN_OP_mul, KILN_F32, SH(2), s, b, "m");
  int32_t mx = node2(g, KILN_OP_mul, KILN_F32, SH(2), x, m, "mx");
  int32_t n_before = g->n_nodes, c_before = g->n_consts, folded = -1;
  kiln_diag d = {0};
  cr_assert_eq(kiln_rt_fold_value(g, m, &folded, &d), KILN_OK, "%s", d.msg);
  cr_assert_eq(folded, n_before);
  cr_assert_eq(g->n_consts, c_before + 1);
  const kiln_node *fn = &g->nodes[folded];
  cr_assert_eq(fn->op, KILN_OP_constant);
  cr_assert_str_eq(fn->name, "m");
  const kiln_const *c = kiln_ir_const_of(g, folded);
  cr_assert(c && c->dtype == KILN_F32 && kiln_shape_eq(&c->shape, &fn->shape));
  cr_assert_eq(((float *)c->data)[0], 12);
  cr_assert_eq(((float *)c->data)[1], 24);
  /* a node depending on a graph input cannot be folded */
  memset(&d, 0, sizeof d);
  cr_assert_eq(kiln_rt_fold_value(g, mx, &folded, &d), KILN_ERR_INVALID_ARGUMENT);
  cr_assert(strstr(d.msg, "'x'"), "%s", d.msg);
  /* folding a constant gives the constant itself */
  cr_assert_eq(kiln_rt_fold_value(g, a, &folded, NULL), KILN_OK);
  cr_assert_eq(folded, a);
  kiln_ir_graph_destroy(g);
}

Test(graph, fold_value_evaluates_only_the_cone) {
  /* An unrelated node that would fail (integer division by zero) must not be evaluated. */
  kiln_graph *g = kiln_ir_graph_create(NULL, "cone");
  int32_t z = constant(g, "z", KILN_I32, SH(1), (int32_t[]){0});
  int32_t bad = node2(g, KILN_OP_div, KILN_I32, SH(1), z, z, "bad");
  int32_t two = constant(g, "two", KILN_I32, SH(1), (int32_t[]){2});
  int32_t sq = node2(g, KILN_OP_mul, KILN_I32, SH(1), two, two, "sq");
  (void)bad;
  int32_t folded;
  kiln_diag d = {0};
  cr_assert_eq(kiln_rt_fold_value(g, sq, &folded, &d), KILN_OK, "%s", d.msg);
  cr_assert_eq(((int32_t *)kiln_ir_const_of(g, folded)->data)[0], 4);
  kiln_ir_graph_destroy(g);
}

Test(graph, variadic_concat_in_a_graph) {
  kiln_graph *g = kiln_ir_graph_create(NULL, "cat");
  int32_t ids[5];
  for (int i = 0; i < 5; i++) ids[i] = constant(g, "p", KILN_I64, SH(1), (int64_t[]){i * 10});
  kiln_attrs a = {.axis = 0};
  kiln_shape s = SH(5);
  int32_t c = kiln_ir_append(g, KILN_OP_concat, KILN_I64, &s, 5, ids, &a, "cat");
  kiln_ir_add_output(g, c, "out");
  kiln_rt_tensor out = out_tensor(KILN_I64, SH(5));
  kiln_diag d = {0};
  cr_assert_eq(kiln_rt_interpret(g, NULL, 0, &out, 1, &d), KILN_OK, "%s", d.msg);
  EXPECT(out, 0, 0, 10, 20, 30, 40);
  kiln_ir_graph_destroy(g);
}
