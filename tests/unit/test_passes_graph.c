/* test_passes_graph.c - the graph passes: each simplification rule, cse, dce, fold, the
 * shared rewrite, and the pass manager's options. Each test checks both the rewritten
 * structure and (where values can change) the graph's results through the interpreter. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../passes/passes-impl.h"
#include "test_target.h"

static kiln_pass_target T;
static void init_target(void) __attribute__((constructor));
static void init_target(void) { T = test_cpu_target(KILN_FUSION_FULL); }

static kiln_shape shp(int32_t rank, int64_t a, int64_t b, int64_t c) {
  int64_t d[3] = {a, b, c};
  return kiln_shape_make(rank, d);
}

static int count_op(const kiln_graph *g, kiln_op op) {
  int n = 0;
  for (int32_t i = 0; i < g->n_nodes; i++) n += g->nodes[i].op == op;
  return n;
}

static void ok(kiln_status st, const kiln_diag *d) { cr_assert_eq(st, KILN_OK, "status %d: %s", st, d->msg); }

static void check_valid(kiln_graph *g) {
  kiln_diag d = {0};
  ok(kiln_ir_verify(g, &d), &d);
}

/* Output node of a graph after a pass. */
static const kiln_node *out_node(const kiln_graph *g, int i) { return &g->nodes[g->outputs[i].node]; }

static kiln_graph *new_graph(void) {
  kiln_graph *g = kiln_ir_graph_create(NULL, "t");
  cr_assert(g);
  return g;
}

static void run_pass(kiln_graph_pass_fn fn, kiln_graph *g) {
  kiln_diag d = {0};
  cr_assert_eq(g->diag.status, KILN_OK, "builder: %s", g->diag.msg);
  ok(fn(g, &T, &d), &d);
  check_valid(g);
}

/* ------------------------------------------------------------------ simplify */
static void check_identity(kiln_op op, double c, bool const_left) {
  kiln_graph *g = new_graph();
  kiln_shape s = shp(2, 2, 3, 0);
  int32_t x = kiln_ir_input(g, "x", KILN_F32, &s, NULL);
  int32_t k = kiln_ir_scalar(g, KILN_F32, c, "k");
  int32_t y = const_left ? kiln_ir_binary(g, op, k, x, "y") : kiln_ir_binary(g, op, x, k, "y");
  kiln_ir_add_output(g, kiln_ir_unary(g, KILN_OP_exp, y, "e"), "out");
  run_pass(kiln_pass_simplify, g);
  cr_expect_eq(count_op(g, op), 0, "%s with %g should vanish", kiln_op_name(op), c);
  cr_expect_eq(g->nodes[out_node(g, 0)->in[0]].op, KILN_OP_input);
  kiln_ir_graph_destroy(g);
}

Test(simplify, add_zero) { check_identity(KILN_OP_add, 0, false); check_identity(KILN_OP_add, 0, true); }
Test(simplify, sub_zero) { check_identity(KILN_OP_sub, 0, false); }
Test(simplify, mul_one) { check_identity(KILN_OP_mul, 1, false); check_identity(KILN_OP_mul, 1, true); }
Test(simplify, div_one) { check_identity(KILN_OP_div, 1, false); }

Test(simplify, keeps_non_identities) {
  kiln_graph *g = new_graph();
  kiln_shape s = shp(1, 4, 0, 0);
  int32_t x = kiln_ir_input(g, "x", KILN_F32, &s, NULL);
  int32_t y = kiln_ir_binary(g, KILN_OP_sub, kiln_ir_scalar(g, KILN_F32, 0, "z"), x, "zero_minus_x");
  y = kiln_ir_binary(g, KILN_OP_mul, y, kiln_ir_scalar(g, KILN_F32, 2, "two"), "times_two");
  y = kiln_ir_binary(g, KILN_OP_div, kiln_ir_scalar(g, KILN_F32, 1, "one"), y, "one_over");
  kiln_ir_add_output(g, y, "out");
  run_pass(kiln_pass_simplify, g);
  cr_expect_eq(count_op(g, KILN_OP_sub), 1);
  cr_expect_eq(count_op(g, KILN_OP_mul), 1);
  cr_expect_eq(count_op(g, KILN_OP_div), 1);
  kiln_ir_graph_destroy(g);
}

Test(simplify, reshape_chains) {
  kiln_graph *g = new_graph();
  kiln_shape s = shp(2, 2, 6, 0), s1 = shp(3, 2, 3, 2), s2 = shp(2, 4, 3, 0);
  int32_t x = kiln_ir_input(g, "x", KILN_F32, &s, NULL);
  int32_t r = kiln_ir_reshape(g, kiln_ir_reshape(g, x, &s1, "r1"), &s2, "r2");
  kiln_ir_add_output(g, r, "a");
  int32_t back = kiln_ir_reshape(g, kiln_ir_reshape(g, x, &s1, "r3"), &s, "r4");
  kiln_ir_add_output(g, kiln_ir_unary(g, KILN_OP_neg, back, "n"), "b");
  run_pass(kiln_pass_simplify, g);
  cr_expect_eq(count_op(g, KILN_OP_reshape), 1, "one reshape x->[4,3]; the round trip vanishes");
  cr_expect_eq(out_node(g, 0)->op, KILN_OP_reshape);
  cr_expect_eq(g->nodes[out_node(g, 0)->in[0]].op, KILN_OP_input);
  cr_expect_eq(g->nodes[out_node(g, 1)->in[0]].op, KILN_OP_input);
  kiln_ir_graph_destroy(g);
}

Test(simplify, permute_chains) {
  kiln_graph *g = new_graph();
  kiln_shape s = shp(3, 2, 3, 4);
  int32_t x = kiln_ir_input(g, "x", KILN_F32, &s, NULL);
  int32_t p1[3] = {1, 2, 0}, p2[3] = {2, 0, 1}, p3[3] = {1, 0, 2};
  /* p1 then p2 is the identity; p1 then p3 is a real permutation */
  int32_t a = kiln_ir_permute(g, kiln_ir_permute(g, x, p1, "a1"), p2, "a2");
  int32_t b = kiln_ir_permute(g, kiln_ir_permute(g, x, p1, "b1"), p3, "b2");
  kiln_ir_add_output(g, kiln_ir_unary(g, KILN_OP_neg, a, "na"), "a");
  kiln_ir_add_output(g, b, "b");
  kiln_graph *ref = kiln_ir_graph_clone(g);
  run_pass(kiln_pass_simplify, g);
  cr_expect_eq(count_op(g, KILN_OP_permute), 1);
  cr_expect_eq(g->nodes[out_node(g, 0)->in[0]].op, KILN_OP_input);
  const kiln_node *pb = out_node(g, 1);
  cr_assert_eq(pb->op, KILN_OP_permute);
  cr_expect_eq(g->nodes[pb->in[0]].op, KILN_OP_input);
  /* composed: out d reads in p1[p3[d]] = {2, 1, 0} */
  cr_expect_eq(pb->a.perm[0], 2);
  cr_expect_eq(pb->a.perm[1], 1);
  cr_expect_eq(pb->a.perm[2], 0);
  cr_expect(kiln_shape_eq(&pb->shape, &ref->nodes[ref->outputs[1].node].shape));
  kiln_ir_graph_destroy(ref);
  kiln_ir_graph_destroy(g);
}

Test(simplify, trivial_movement_and_casts) {
  kiln_graph *g = new_graph();
  kiln_shape s = shp(2, 3, 4, 0);
  int32_t x = kiln_ir_input(g, "x", KILN_F32, &s, NULL);
  int64_t z[2] = {0, 0}, one[2] = {1, 1}, cnt[2] = {3, 4};
  int32_t y = kiln_ir_broadcast(g, x, &s, "bc");
  y = kiln_ir_cast(g, y, KILN_F32, "cast");
  y = kiln_ir_slice(g, y, z, one, cnt, "slice");
  y = kiln_ir_pad(g, y, z, z, 0, "pad");
  y = kiln_ir_concat(g, 1, &y, 0, "cat");
  y = kiln_ir_unary(g, KILN_OP_neg, kiln_ir_unary(g, KILN_OP_neg, y, "n1"), "n2");
  kiln_ir_add_output(g, kiln_ir_unary(g, KILN_OP_exp, y, "e"), "out");
  run_pass(kiln_pass_simplify, g);
  cr_expect_eq(g->n_nodes, 2, "only x and exp remain, got %d nodes", g->n_nodes);
  kiln_ir_graph_destroy(g);
}

Test(simplify, broadcast_of_broadcast) {
  kiln_graph *g = new_graph();
  kiln_shape s = shp(1, 4, 0, 0), s1 = shp(2, 3, 4, 0), s2 = shp(3, 2, 3, 4);
  int32_t x = kiln_ir_input(g, "x", KILN_F32, &s, NULL);
  int32_t y = kiln_ir_broadcast(g, kiln_ir_broadcast(g, x, &s1, "b1"), &s2, "b2");
  kiln_ir_add_output(g, y, "out");
  run_pass(kiln_pass_simplify, g);
  cr_expect_eq(count_op(g, KILN_OP_broadcast), 1);
  cr_expect_eq(g->nodes[out_node(g, 0)->in[0]].op, KILN_OP_input);
  kiln_ir_graph_destroy(g);
}

/* ------------------------------------------------------------------ cse / dce */
Test(cse, merges_duplicate_chains_and_small_constants) {
  kiln_graph *g = new_graph();
  kiln_shape s = shp(1, 4, 0, 0);
  int32_t x = kiln_ir_input(g, "x", KILN_F32, &s, NULL);
  int32_t a = kiln_ir_binary(g, KILN_OP_mul, kiln_ir_unary(g, KILN_OP_exp, x, "e1"), kiln_ir_scalar(g, KILN_F32, 3, "c1"), "m1");
  int32_t b = kiln_ir_binary(g, KILN_OP_mul, kiln_ir_unary(g, KILN_OP_exp, x, "e2"), kiln_ir_scalar(g, KILN_F32, 3, "c2"), "m2");
  int32_t c = kiln_ir_binary(g, KILN_OP_mul, kiln_ir_unary(g, KILN_OP_exp, x, "e3"), kiln_ir_scalar(g, KILN_F32, 4, "c3"), "m3");
  kiln_ir_add_output(g, kiln_ir_binary(g, KILN_OP_add, a, b, "s"), "o1");
  kiln_ir_add_output(g, c, "o2");
  run_pass(kiln_pass_cse, g);
  cr_expect_eq(count_op(g, KILN_OP_exp), 1);
  cr_expect_eq(count_op(g, KILN_OP_mul), 2, "x*3 merged, x*4 kept");
  cr_expect_eq(count_op(g, KILN_OP_constant), 2);
  const kiln_node *s_node = out_node(g, 0);
  cr_expect_eq(s_node->in[0], s_node->in[1], "add(a, a) after merging");
  kiln_ir_graph_destroy(g);
}

Test(cse, distinguishes_attributes) {
  kiln_graph *g = new_graph();
  kiln_shape s = shp(2, 3, 3, 0);
  int32_t x = kiln_ir_input(g, "x", KILN_F32, &s, NULL);
  int32_t p[2] = {1, 0}, ax0 = 0, ax1 = 1;
  int32_t a = kiln_ir_reduce(g, KILN_OP_reduce_sum, x, 1, &ax0, 0, "r0");
  int32_t b = kiln_ir_reduce(g, KILN_OP_reduce_sum, x, 1, &ax1, 0, "r1");
  int32_t t = kiln_ir_permute(g, x, p, "t");
  kiln_ir_add_output(g, kiln_ir_binary(g, KILN_OP_add, a, b, "s"), "o1");
  kiln_ir_add_output(g, kiln_ir_binary(g, KILN_OP_add, t, x, "s2"), "o2");
  run_pass(kiln_pass_cse, g);
  cr_expect_eq(count_op(g, KILN_OP_reduce_sum), 2);
  cr_expect_eq(count_op(g, KILN_OP_permute), 1);
  kiln_ir_graph_destroy(g);
}

Test(dce, drops_unreachable_keeps_inputs) {
  kiln_graph *g = new_graph();
  kiln_shape s = shp(1, 4, 0, 0);
  int32_t x = kiln_ir_input(g, "x", KILN_F32, &s, NULL);
  kiln_ir_input(g, "unused", KILN_I32, &s, NULL);
  kiln_ir_unary(g, KILN_OP_exp, x, "dead1");
  kiln_ir_unary(g, KILN_OP_log, kiln_ir_scalar(g, KILN_F32, 2, "dead_c"), "dead2");
  int32_t y = kiln_ir_unary(g, KILN_OP_neg, x, "y");
  kiln_ir_add_output(g, y, "out");
  run_pass(kiln_pass_dce, g);
  cr_expect_eq(g->n_nodes, 3);
  cr_expect_eq(g->n_inputs, 2);
  cr_expect_eq(g->nodes[g->inputs[1].node].op, KILN_OP_input);
  cr_expect_eq(g->nodes[g->inputs[1].node].index, 1);
  cr_expect_eq(g->n_consts, 0, "the dead constant's store entry is released");
  cr_expect_eq(out_node(g, 0)->op, KILN_OP_neg);
  kiln_ir_graph_destroy(g);
}

/* ------------------------------------------------------------------ fold */
Test(fold, replaces_constant_subgraph) {
  kiln_graph *g = new_graph();
  kiln_shape s6 = shp(1, 6, 0, 0), s23 = shp(2, 2, 3, 0);
  float w[6] = {1, 2, 3, 4, 5, 6}, b[6] = {10, 20, 30, 40, 50, 60};
  int32_t x = kiln_ir_input(g, "x", KILN_F32, &s23, NULL);
  int32_t wr = kiln_ir_reshape(g, kiln_ir_constant(g, "w", KILN_F32, &s6, w), &s23, "wr");
  int32_t br = kiln_ir_reshape(g, kiln_ir_constant(g, "b", KILN_F32, &s6, b), &s23, "br");
  int32_t c = kiln_ir_binary(g, KILN_OP_add, wr, br, "wb");
  int32_t perm[2] = {1, 0};
  int32_t ct = kiln_ir_permute(g, kiln_ir_permute(g, c, perm, "t1"), perm, "t2");
  kiln_ir_add_output(g, kiln_ir_binary(g, KILN_OP_mul, x, ct, "y"), "out");
  run_pass(kiln_pass_fold, g);
  cr_expect_eq(g->n_nodes, 3, "x, one folded constant, mul; got %d", g->n_nodes);
  const kiln_node *y = out_node(g, 0);
  const kiln_const *k = kiln_ir_const_of(g, y->in[1]);
  cr_assert(k, "the mul's second operand is a constant");
  cr_expect(kiln_shape_eq(&k->shape, &s23));
  for (int i = 0; i < 6; i++) cr_expect_eq(((float *)k->data)[i], w[i] + b[i]);
  cr_expect_eq(g->n_consts, 1, "the inputs of the fold are released");
  kiln_ir_graph_destroy(g);
}

Test(fold, keeps_large_bias_broadcast_lazy) {
  kiln_graph *g = new_graph();
  kiln_shape sx = shp(3, 8, 64, 64), sb = shp(3, 8, 1, 1);
  float bias[8] = {0};
  int32_t x = kiln_ir_input(g, "x", KILN_F32, &sx, NULL);
  int32_t b = kiln_ir_constant(g, "b", KILN_F32, &sb, bias);
  kiln_ir_add_output(g, kiln_ir_binary(g, KILN_OP_add, x, b, "y"), "out");
  run_pass(kiln_pass_fold, g);
  cr_expect_eq(count_op(g, KILN_OP_broadcast), 1, "a 32K-element broadcast of 8 values stays an index map");
  cr_expect_eq(g->consts[0].nbytes, 8 * sizeof(float));
  kiln_ir_graph_destroy(g);
}

Test(fold, folds_broadcast_feeding_weights) {
  /* BatchNorm-style: w * broadcast(scale) with both constant folds to one tensor */
  kiln_graph *g = new_graph();
  kiln_shape sw = shp(3, 16, 32, 9), ss = shp(3, 16, 1, 1);
  static float w[16 * 32 * 9], sc[16];
  for (int i = 0; i < 16 * 32 * 9; i++) w[i] = (float)i;
  for (int i = 0; i < 16; i++) sc[i] = 2;
  int32_t x = kiln_ir_input(g, "x", KILN_F32, &sw, NULL);
  int32_t m = kiln_ir_binary(g, KILN_OP_mul, kiln_ir_constant(g, "w", KILN_F32, &sw, w),
                             kiln_ir_constant(g, "s", KILN_F32, &ss, sc), "ws");
  kiln_ir_add_output(g, kiln_ir_binary(g, KILN_OP_add, x, m, "y"), "out");
  run_pass(kiln_pass_fold, g);
  cr_expect_eq(count_op(g, KILN_OP_broadcast), 0);
  cr_expect_eq(count_op(g, KILN_OP_mul), 0);
  const kiln_const *k = kiln_ir_const_of(g, out_node(g, 0)->in[1]);
  cr_assert(k);
  cr_expect_eq(((float *)k->data)[100], 200.0f);
  kiln_ir_graph_destroy(g);
}

Test(fold, leaves_out_of_range_gather_alone) {
  kiln_graph *g = new_graph();
  kiln_shape sd = shp(1, 4, 0, 0), si = shp(1, 1, 0, 0);
  float data[4] = {1, 2, 3, 4};
  int64_t idx[1] = {7};
  int32_t x = kiln_ir_input(g, "x", KILN_F32, &si, NULL);
  int32_t gth = kiln_ir_gather(g, kiln_ir_constant(g, "d", KILN_F32, &sd, data),
                               kiln_ir_constant(g, "i", KILN_I64, &si, idx), 0, "g");
  kiln_ir_add_output(g, kiln_ir_binary(g, KILN_OP_add, x, gth, "y"), "out");
  run_pass(kiln_pass_fold, g);
  cr_expect_eq(count_op(g, KILN_OP_gather), 1, "the interpreter refuses; lowering then reports the node");
  kiln_ir_graph_destroy(g);
}

/* ------------------------------------------------------------------ rewrite */
Test(rewrite, replacement_appended_after_its_user_is_reordered) {
  kiln_graph *g = new_graph();
  kiln_shape s = shp(1, 4, 0, 0);
  int32_t x = kiln_ir_input(g, "x", KILN_F32, &s, NULL);
  int32_t a = kiln_ir_unary(g, KILN_OP_exp, x, "a");
  int32_t b = kiln_ir_unary(g, KILN_OP_neg, a, "b");
  kiln_ir_add_output(g, b, "out");
  int32_t r = kiln_ir_unary(g, KILN_OP_log, x, "replacement"); /* appended after b */
  int32_t repl[4] = {0, 1, 2, 3};
  repl[a] = r;
  kiln_diag d = {0};
  bool changed = false;
  ok(kiln_pass_rewrite(g, repl, 4, &changed, &d), &d);
  cr_expect(changed);
  check_valid(g);
  cr_expect_eq(g->n_nodes, 3);
  cr_expect_eq(g->nodes[1].op, KILN_OP_log);
  cr_expect_eq(out_node(g, 0)->op, KILN_OP_neg);
  cr_expect_eq(out_node(g, 0)->in[0], 1);
  kiln_ir_graph_destroy(g);
}

/* ------------------------------------------------------------------ manager */
static kiln_graph *small_graph(void) {
  kiln_graph *g = new_graph();
  kiln_shape s = shp(1, 4, 0, 0);
  int32_t x = kiln_ir_input(g, "x", KILN_F32, &s, NULL);
  int32_t y = kiln_ir_binary(g, KILN_OP_add, x, kiln_ir_scalar(g, KILN_F32, 0, "zero"), "add0");
  kiln_ir_add_output(g, kiln_ir_unary(g, KILN_OP_exp, y, "e"), "out");
  return g;
}

Test(manager, names_and_disable_errors) {
  cr_expect_str_eq(kiln_pass_names[0], "verify");
  int n = 0;
  while (kiln_pass_names[n]) n++;
  cr_expect_str_eq(kiln_pass_names[n - 1], "pack");
  const char *bad[] = {"verify", "lower", "simplify,plan_memory", "nosuchpass"};
  for (int i = 0; i < 4; i++) {
    kiln_graph *g = small_graph();
    kiln_pipeline_options o = {.target = T, .disable = bad[i]};
    kiln_diag d = {0};
    kiln_kprogram *p = NULL;
    cr_expect_eq(kiln_pass_pipeline(g, &o, &p, &d), KILN_ERR_INVALID_ARGUMENT, "disable=%s", bad[i]);
    cr_expect_null(p);
    cr_expect(strlen(d.msg) > 0);
    kiln_ir_graph_destroy(g);
  }
}

Test(manager, disable_and_print_after) {
  kiln_graph *g = small_graph();
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  kiln_pipeline_options o = {.target = T, .disable = "simplify", .print_after = "dce", .print_to = f,
                             .verify_each = true};
  kiln_diag d = {0};
  kiln_kprogram *p = NULL;
  ok(kiln_pass_pipeline(g, &o, &p, &d), &d);
  fclose(f);
  cr_expect_eq(count_op(g, KILN_OP_add), 1, "simplify was disabled");
  cr_expect(strstr(buf, "add") != NULL, "printed graph: %s", buf);
  cr_expect(strstr(buf, "after dce") != NULL);
  cr_expect(strstr(buf, "after cse") == NULL);
  free(buf);
  kiln_ir_kprogram_destroy(p);
  kiln_ir_graph_destroy(g);

  g = small_graph();
  buf = NULL;
  f = open_memstream(&buf, &len);
  kiln_pipeline_options o2 = {.target = T, .print_after = "all", .print_to = f};
  memset(&d, 0, sizeof d);
  ok(kiln_pass_pipeline(g, &o2, &p, &d), &d);
  fclose(f);
  cr_expect_eq(count_op(g, KILN_OP_add), 0);
  for (int i = 0; kiln_pass_names[i]; i++) {
    char want[64];
    snprintf(want, sizeof want, "after %s", kiln_pass_names[i]);
    cr_expect(strstr(buf, want) != NULL, "missing '%s'", want);
  }
  free(buf);
  cr_expect_eq(p->n_kernels, 1);
  kiln_ir_kprogram_destroy(p);
  kiln_ir_graph_destroy(g);
}

static kiln_status break_graph(kiln_graph *g, const kiln_pass_target *t, kiln_diag *d) {
  (void)t;
  (void)d;
  g->nodes[g->n_nodes - 1].shape.dims[0] = 99; /* exp's shape no longer matches */
  return KILN_OK;
}

Test(manager, verify_pass_rejects_a_broken_graph) {
  kiln_graph *g = small_graph();
  kiln_diag d = {0};
  break_graph(g, &T, &d);
  cr_expect_neq(kiln_pass_verify(g, &T, &d), KILN_OK);
  kiln_ir_graph_destroy(g);
}

/* ------------------------------------------------------------------ contract / siblings
 * Each rule is checked twice: the graph has the rewritten structure, and the interpreter
 * gives the same outputs before and after (up to float reassociation). */
static kiln_shape shp4(int32_t rank, int64_t a, int64_t b, int64_t c, int64_t e) {
  int64_t d[4] = {a, b, c, e};
  return kiln_shape_make(rank, d);
}

/* A deterministic f32 constant of shape s with values in about [-1.5, 1.5] (+ offset). */
static int32_t det_const(kiln_graph *g, const char *name, kiln_shape s, int seed, float offset) {
  int64_t n = kiln_shape_numel(&s);
  float *v = malloc(sizeof(float) * (size_t)(n ? n : 1));
  for (int64_t i = 0; i < n; i++) v[i] = offset + 1.5f * sinf(0.37f * (float)(i + 1) * (float)seed + (float)seed);
  int32_t c = kiln_ir_constant(g, name, KILN_F32, &s, v);
  free(v);
  return c;
}

/* Interprets g on deterministic inputs; returns the outputs (f32), caller frees each. */
static float **interpret(const kiln_graph *g) {
  kiln_rt_tensor in[8], out[8];
  cr_assert(g->n_inputs <= 8 && g->n_outputs <= 8);
  for (int32_t i = 0; i < g->n_inputs; i++) {
    const kiln_node *n = &g->nodes[g->inputs[i].node];
    int64_t k = kiln_shape_numel(&n->shape);
    float *p = malloc(sizeof(float) * (size_t)(k ? k : 1));
    for (int64_t e = 0; e < k; e++) p[e] = cosf(0.61f * (float)e + (float)i);
    in[i] = (kiln_rt_tensor){KILN_F32, n->shape, p};
  }
  float **res = calloc((size_t)g->n_outputs, sizeof(float *));
  for (int32_t i = 0; i < g->n_outputs; i++) {
    const kiln_node *n = &g->nodes[g->outputs[i].node];
    cr_assert_eq(n->dtype, KILN_F32);
    res[i] = malloc(sizeof(float) * (size_t)(kiln_shape_numel(&n->shape) + 1));
    out[i] = (kiln_rt_tensor){KILN_F32, n->shape, res[i]};
  }
  kiln_diag d = {0};
  ok(kiln_rt_interpret(g, in, g->n_inputs, out, g->n_outputs, &d), &d);
  for (int32_t i = 0; i < g->n_inputs; i++) free(in[i].data);
  return res;
}

/* Runs fn on g and checks the outputs did not change (relative tolerance 1e-5). */
static void run_pass_same_values(kiln_graph_pass_fn fn, kiln_graph *g) {
  cr_assert_eq(g->diag.status, KILN_OK, "builder: %s", g->diag.msg);
  float **before = interpret(g);
  run_pass(fn, g);
  float **after = interpret(g);
  for (int32_t i = 0; i < g->n_outputs; i++) {
    int64_t n = kiln_shape_numel(&g->nodes[g->outputs[i].node].shape);
    for (int64_t e = 0; e < n; e++)
      cr_expect(fabsf(before[i][e] - after[i][e]) <= 1e-5f * (1 + fabsf(before[i][e])),
                "output %d element %ld: %g before, %g after", i, (long)e, before[i][e], after[i][e]);
    free(before[i]);
    free(after[i]);
  }
  free(before);
  free(after);
}

static int32_t in_f32(kiln_graph *g, const char *name, kiln_shape s) {
  return kiln_ir_input(g, name, KILN_F32, &s, NULL);
}

static int32_t conv3x3(kiln_graph *g, int32_t x, int32_t w, int32_t groups, const char *name) {
  int64_t one[2] = {1, 1};
  return kiln_ir_conv(g, x, w, one, one, one, one, groups, name);
}

Test(contract, batch_norm_scale_folds_into_conv_weights) {
  kiln_graph *g = new_graph();
  int32_t x = kiln_ir_input(g, "x", KILN_F32, &(kiln_shape){4, {1, 3, 5, 5}}, NULL);
  int32_t c = conv3x3(g, x, det_const(g, "w", shp4(4, 4, 3, 3, 3), 1, 0), 1, "conv");
  int32_t y = kiln_ir_binary(g, KILN_OP_mul, c, det_const(g, "s", shp(3, 4, 1, 1), 2, 2), "bn_mul");
  y = kiln_ir_binary(g, KILN_OP_add, y, det_const(g, "t", shp(3, 4, 1, 1), 3, 0), "bn_add");
  kiln_ir_add_output(g, y, "out");
  run_pass_same_values(kiln_pass_contract, g);
  cr_expect_eq(count_op(g, KILN_OP_mul), 0);
  cr_expect_eq(count_op(g, KILN_OP_conv), 1);
  cr_expect_eq(out_node(g, 0)->op, KILN_OP_add, "the shift stays an add after the conv");
  kiln_ir_graph_destroy(g);
}

Test(contract, grouped_conv_bias_then_scale_then_shift) {
  /* (conv + b) * s + t -> conv(x, W*s) + (b*s + t): one conv, one add, no mul */
  kiln_graph *g = new_graph();
  int32_t x = kiln_ir_input(g, "x", KILN_F32, &(kiln_shape){4, {2, 4, 5, 5}}, NULL);
  int32_t c = conv3x3(g, x, det_const(g, "w", shp4(4, 6, 2, 3, 3), 4, 0), 2, "conv");
  int32_t y = kiln_ir_binary(g, KILN_OP_add, c, det_const(g, "b", shp4(4, 1, 6, 1, 1), 5, 0), "bias");
  y = kiln_ir_binary(g, KILN_OP_mul, det_const(g, "s", shp(3, 6, 1, 1), 6, 2), y, "bn_mul");
  y = kiln_ir_binary(g, KILN_OP_add, y, det_const(g, "t", shp(3, 6, 1, 1), 7, 0), "bn_add");
  kiln_ir_add_output(g, y, "out");
  run_pass_same_values(kiln_pass_contract, g);
  cr_expect_eq(count_op(g, KILN_OP_mul), 0);
  cr_expect_eq(count_op(g, KILN_OP_add), 1);
  const kiln_node *o = out_node(g, 0);
  cr_assert_eq(o->op, KILN_OP_add);
  cr_expect_eq(g->nodes[o->in[0]].op, KILN_OP_conv);
  kiln_ir_graph_destroy(g);
}

Test(contract, scale_that_varies_along_space_or_a_shared_conv_is_kept) {
  kiln_graph *g = new_graph();
  int32_t x = kiln_ir_input(g, "x", KILN_F32, &(kiln_shape){4, {1, 2, 4, 4}}, NULL);
  int32_t c = conv3x3(g, x, det_const(g, "w", shp4(4, 2, 2, 3, 3), 1, 0), 1, "conv");
  int32_t a = kiln_ir_binary(g, KILN_OP_mul, c, det_const(g, "s", shp(3, 2, 1, 4), 2, 2), "varies_w");
  int32_t c2 = conv3x3(g, x, det_const(g, "w2", shp4(4, 2, 2, 3, 3), 3, 0), 1, "conv2");
  int32_t b = kiln_ir_binary(g, KILN_OP_mul, c2, det_const(g, "s2", shp(3, 2, 1, 1), 4, 2), "shared");
  kiln_ir_add_output(g, a, "a");
  kiln_ir_add_output(g, b, "b");
  kiln_ir_add_output(g, c2, "c2"); /* conv2 has another consumer: folding would compute it twice */
  run_pass_same_values(kiln_pass_contract, g);
  cr_expect_eq(count_op(g, KILN_OP_mul), 2);
  kiln_ir_graph_destroy(g);
}

Test(contract, per_column_scale_folds_into_dot_weights) {
  kiln_graph *g = new_graph();
  int32_t x = in_f32(g, "x", shp(3, 2, 3, 4));
  int32_t d = kiln_ir_matmul(g, x, det_const(g, "w", shp(2, 4, 5, 0), 1, 0), "mm"); /* batch broadcast */
  int32_t y = kiln_ir_binary(g, KILN_OP_add, d, det_const(g, "b", shp(1, 5, 0, 0), 2, 0), "bias");
  y = kiln_ir_binary(g, KILN_OP_mul, y, det_const(g, "s", shp(1, 5, 0, 0), 3, 2), "scale");
  y = kiln_ir_binary(g, KILN_OP_add, y, det_const(g, "t", shp(2, 1, 5, 0), 4, 0), "shift");
  kiln_ir_add_output(g, y, "out");
  run_pass_same_values(kiln_pass_contract, g);
  cr_expect_eq(count_op(g, KILN_OP_mul), 0);
  cr_expect_eq(count_op(g, KILN_OP_add), 1);
  cr_expect_eq(count_op(g, KILN_OP_dot), 1);
  kiln_ir_graph_destroy(g);
}

Test(contract, splat_scales_sink_behind_the_dot_and_merge) {
  kiln_graph *g = new_graph();
  int32_t q = in_f32(g, "q", shp(3, 2, 4, 8));
  int32_t k = in_f32(g, "k", shp(3, 2, 8, 4));
  int32_t qs = kiln_ir_binary(g, KILN_OP_mul, q, kiln_ir_scalar(g, KILN_F32, 0.5, "sq"), "qs");
  int32_t ks = kiln_ir_binary(g, KILN_OP_div, k, kiln_ir_scalar(g, KILN_F32, 4, "sk"), "ks");
  int32_t s = kiln_ir_matmul(g, qs, ks, "qk");
  s = kiln_ir_binary(g, KILN_OP_mul, s, kiln_ir_scalar(g, KILN_F32, 3, "s3"), "post");
  kiln_ir_add_output(g, kiln_ir_unary(g, KILN_OP_exp, s, "e"), "out");
  run_pass_same_values(kiln_pass_contract, g);
  cr_expect_eq(count_op(g, KILN_OP_mul), 1, "three splat scales become one mul");
  cr_expect_eq(count_op(g, KILN_OP_div), 0);
  const kiln_node *m = &g->nodes[out_node(g, 0)->in[0]];
  cr_assert_eq(m->op, KILN_OP_mul);
  cr_expect_eq(g->nodes[m->in[0]].op, KILN_OP_dot);
  cr_expect(kiln_pass_is_splat(g, m->in[1], 0.375), "0.5 / 4 * 3");
  kiln_ir_graph_destroy(g);
}

Test(contract, splat_scale_into_constant_weights_vanishes) {
  /* dot(x * c, W) -> dot(x, W) * c -> dot(x, W*c) */
  kiln_graph *g = new_graph();
  int32_t x = in_f32(g, "x", shp(2, 3, 4, 0));
  int32_t xs = kiln_ir_binary(g, KILN_OP_mul, kiln_ir_scalar(g, KILN_F32, 0.25, "c"), x, "xs");
  kiln_ir_add_output(g, kiln_ir_matmul(g, xs, det_const(g, "w", shp(2, 4, 6, 0), 1, 0), "mm"), "out");
  run_pass_same_values(kiln_pass_contract, g);
  cr_expect_eq(count_op(g, KILN_OP_mul), 0);
  cr_expect_eq(out_node(g, 0)->op, KILN_OP_dot);
  kiln_ir_graph_destroy(g);
}

Test(contract, scaled_operand_with_another_consumer_stays) {
  kiln_graph *g = new_graph();
  int32_t q = in_f32(g, "q", shp(2, 4, 8, 0));
  int32_t k = in_f32(g, "k", shp(2, 8, 4, 0));
  int32_t qs = kiln_ir_binary(g, KILN_OP_mul, q, kiln_ir_scalar(g, KILN_F32, 0.5, "sq"), "qs");
  kiln_ir_add_output(g, kiln_ir_matmul(g, qs, k, "qk"), "a");
  kiln_ir_add_output(g, qs, "b");
  run_pass_same_values(kiln_pass_contract, g);
  cr_expect_eq(count_op(g, KILN_OP_mul), 1);
  cr_expect_eq(g->nodes[out_node(g, 0)->in[0]].op, KILN_OP_mul);
  kiln_ir_graph_destroy(g);
}

/* x [2,3,8] times three weights [8,N] (QKV), each with a bias when with_bias. */
static kiln_graph *qkv_graph(bool with_bias, bool extra_consumer) {
  kiln_graph *g = new_graph();
  int32_t x = in_f32(g, "x", shp(3, 2, 3, 8));
  int64_t ns[3] = {8, 8, 4};
  const char *names[3] = {"q", "k", "v"};
  for (int i = 0; i < 3; i++) {
    int32_t y = kiln_ir_matmul(g, x, det_const(g, names[i], shp(2, 8, ns[i], 0), i + 1, 0), names[i]);
    if (with_bias) y = kiln_ir_binary(g, KILN_OP_add, y, det_const(g, "b", shp(1, ns[i], 0, 0), i + 5, 0), "bias");
    kiln_ir_add_output(g, y, names[i]);
  }
  if (extra_consumer) kiln_ir_add_output(g, g->nodes[g->outputs[2].node].in[0], "v_raw");
  return g;
}

Test(siblings, qkv_projections_become_one_dot_and_one_bias_add) {
  kiln_graph *g = qkv_graph(true, false);
  run_pass_same_values(kiln_pass_siblings, g);
  run_pass(kiln_pass_dce, g);
  cr_expect_eq(count_op(g, KILN_OP_dot), 1);
  cr_expect_eq(count_op(g, KILN_OP_add), 1);
  cr_expect_eq(count_op(g, KILN_OP_slice), 3);
  for (int i = 0; i < 3; i++) {
    const kiln_node *s = out_node(g, i);
    cr_assert_eq(s->op, KILN_OP_slice);
    cr_expect_eq(g->nodes[s->in[0]].op, KILN_OP_add);
    cr_expect_eq(s->a.starts[2], i * 8);
  }
  const kiln_node *d = &g->nodes[g->nodes[out_node(g, 0)->in[0]].in[0]];
  cr_expect_eq(d->shape.dims[2], 20);
  kiln_ir_graph_destroy(g);
}

Test(siblings, without_biases_or_with_another_consumer_the_dots_still_merge) {
  for (int variant = 0; variant < 2; variant++) {
    kiln_graph *g = qkv_graph(variant == 1, variant == 1);
    run_pass_same_values(kiln_pass_siblings, g);
    cr_expect_eq(count_op(g, KILN_OP_dot), 1, "variant %d", variant);
    cr_expect_eq(count_op(g, KILN_OP_add), variant == 1 ? 3 : 0, "biases merge only when every dot has one");
    kiln_ir_graph_destroy(g);
  }
}

Test(siblings, dots_on_different_operands_or_weights_that_are_not_constant_stay) {
  kiln_graph *g = new_graph();
  int32_t x = in_f32(g, "x", shp(2, 3, 8, 0));
  int32_t z = in_f32(g, "z", shp(2, 3, 8, 0));
  int32_t w = in_f32(g, "w", shp(2, 8, 4, 0));
  kiln_ir_add_output(g, kiln_ir_matmul(g, x, det_const(g, "a", shp(2, 8, 4, 0), 1, 0), "xa"), "a");
  kiln_ir_add_output(g, kiln_ir_matmul(g, z, det_const(g, "b", shp(2, 8, 4, 0), 2, 0), "zb"), "b");
  kiln_ir_add_output(g, kiln_ir_matmul(g, x, w, "xw"), "c");
  run_pass_same_values(kiln_pass_siblings, g);
  cr_expect_eq(count_op(g, KILN_OP_dot), 3);
  cr_expect_eq(count_op(g, KILN_OP_slice), 0);
  kiln_ir_graph_destroy(g);
}

/* ------------------------------------------------------------------ layout */
Test(layout, permutes_around_elementwise_ops_cancel) {
  kiln_graph *g = new_graph();
  int32_t a = in_f32(g, "a", shp(3, 2, 3, 4)), b = in_f32(g, "b", shp(3, 2, 3, 4));
  int32_t p[3] = {2, 0, 1}, back[3] = {1, 2, 0}, other[3] = {0, 2, 1};
  int32_t s = kiln_ir_binary(g, KILN_OP_sub, kiln_ir_permute(g, a, p, "pa"), kiln_ir_permute(g, b, p, "pb"), "s");
  s = kiln_ir_binary(g, KILN_OP_mul, s, kiln_ir_scalar(g, KILN_F32, 3, "three"), "m");
  s = kiln_ir_unary(g, KILN_OP_tanh, s, "t");
  kiln_ir_add_output(g, kiln_ir_permute(g, s, back, "back"), "cancelled");
  /* one permute operand whose consumer is another permute: they compose into one */
  int32_t e = kiln_ir_unary(g, KILN_OP_exp, kiln_ir_permute(g, a, back, "pa2"), "e");
  kiln_ir_add_output(g, kiln_ir_permute(g, e, other, "composed"), "composed");
  run_pass(kiln_pass_cse, g);
  run_pass_same_values(kiln_pass_layout, g);
  cr_expect_eq(out_node(g, 0)->op, KILN_OP_tanh);
  cr_expect_eq(count_op(g, KILN_OP_permute), 1);
  const kiln_node *c = out_node(g, 1);
  cr_assert_eq(c->op, KILN_OP_permute);
  cr_expect_eq(g->nodes[c->in[0]].op, KILN_OP_exp);
  cr_expect(c->a.perm[0] == 1 && c->a.perm[1] == 0 && c->a.perm[2] == 2, "back then other");
  kiln_ir_graph_destroy(g);
}

Test(layout, a_permute_with_another_consumer_or_different_perms_stay) {
  kiln_graph *g = new_graph();
  int32_t a = in_f32(g, "a", shp(2, 3, 4, 0)), b = in_f32(g, "b", shp(2, 4, 3, 0)), z = in_f32(g, "z", shp(2, 4, 3, 0));
  int32_t p[2] = {1, 0};
  int32_t pa = kiln_ir_permute(g, a, p, "pa");
  kiln_ir_add_output(g, kiln_ir_binary(g, KILN_OP_add, pa, kiln_ir_permute(g, b, (int32_t[]){0, 1}, "idb"), "x"), "x");
  kiln_ir_add_output(g, pa, "pa");
  kiln_ir_add_output(g, kiln_ir_permute(g, kiln_ir_binary(g, KILN_OP_add, kiln_ir_permute(g, z, p, "pz"), a, "y"), p, "py"), "y");
  int32_t before = count_op(g, KILN_OP_permute);
  run_pass_same_values(kiln_pass_layout, g);
  cr_expect_eq(count_op(g, KILN_OP_permute), before);
  kiln_ir_graph_destroy(g);
}
