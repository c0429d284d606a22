/* test_passes_plan.c - the fusion plan on its own: what fuse decides for small graphs
 * (groups, members, buffers, refusals), that the verifier catches each kind of broken
 * plan, and that lowering refuses to compute a node the plan does not put in a group. */
#include <criterion/criterion.h>
#include <string.h>

#include "../../passes/passes.h"
#include "test_target.h"

static kiln_shape shp(int32_t rank, int64_t a, int64_t b) {
  int64_t d[2] = {a, b};
  return kiln_shape_make(rank, d);
}

/* y = relu(x @ w + b), and e = exp(z) read by two kernels: a GEMM group with an
 * epilogue, and a costly shared producer. */
static kiln_graph *dense_graph(void) {
  kiln_graph *g = kiln_ir_graph_create(NULL, "dense");
  kiln_shape xs = shp(2, 4, 8), ws = shp(2, 8, 16), bs = shp(1, 16, 0);
  int32_t x = kiln_ir_input(g, "x", KILN_F32, &xs, NULL), w = kiln_ir_input(g, "w", KILN_F32, &ws, NULL);
  int32_t b = kiln_ir_input(g, "b", KILN_F32, &bs, NULL);
  int32_t mm = kiln_ir_matmul(g, x, w, "mm");
  int32_t y = kiln_ir_binary(g, KILN_OP_max, kiln_ir_binary(g, KILN_OP_add, mm, b, "bias"),
                             kiln_ir_scalar(g, KILN_F32, 0, "zero"), "relu");
  kiln_ir_add_output(g, y, "y");
  kiln_shape zs = shp(2, 4, 16);
  int32_t e = kiln_ir_unary(g, KILN_OP_exp, kiln_ir_input(g, "z", KILN_F32, &zs, NULL), "e");
  kiln_ir_add_output(g, kiln_ir_unary(g, KILN_OP_neg, e, "n"), "n");
  int32_t axes[1] = {1};
  kiln_ir_add_output(g, kiln_ir_reduce(g, KILN_OP_reduce_max, e, 1, axes, 0, "m"), "m");
  cr_assert_eq(g->diag.status, KILN_OK, "%s", g->diag.msg);
  return g;
}

static kiln_fusion_plan *plan_of(const kiln_graph *g, kiln_fusion_level f) {
  kiln_pass_target t = test_cpu_target(f);
  kiln_fusion_plan *p = NULL;
  kiln_diag d = {0};
  cr_assert_eq(kiln_pass_fuse(g, &t, &p, &d), KILN_OK, "%s", d.msg);
  return p;
}

static int32_t node_named(const kiln_graph *g, const char *name, kiln_op op) {
  for (int32_t i = 0; i < g->n_nodes; i++)
    if (g->nodes[i].op == op && !strcmp(g->nodes[i].name, name)) return i;
  cr_assert_fail("no %s node '%s'", kiln_op_name(op), name);
  return -1;
}

static const kiln_fusion_group *group_rooted(const kiln_fusion_plan *p, int32_t root) {
  for (int32_t i = 0; i < p->n_groups; i++)
    if (p->groups[i].root == root) return &p->groups[i];
  return NULL;
}

Test(plan, gemm_epilogue_and_costly_producer) {
  kiln_graph *g = dense_graph();
  kiln_fusion_plan *p = plan_of(g, KILN_FUSION_FULL);
  int32_t relu = node_named(g, "relu", KILN_OP_max), mm = node_named(g, "mm", KILN_OP_dot);
  const kiln_fusion_group *gr = group_rooted(p, relu);
  cr_assert(gr, "a group rooted at the epilogue's sink");
  cr_expect_eq(gr->kind, KILN_GROUP_GEMM);
  cr_expect_eq(gr->contraction, mm);
  cr_expect_eq(gr->epilogue, relu);
  cr_expect(p->materialized[mm] && p->materialized[relu]);
  int32_t bias = node_named(g, "bias", KILN_OP_add);
  cr_expect(!p->materialized[bias], "the bias add is inlined into the epilogue");
  cr_expect_eq(p->group[bias], gr - p->groups);
  int32_t e = node_named(g, "e", KILN_OP_exp);
  cr_expect(p->materialized[e], "exp read by two kernels is a buffer");
  bool said = false;
  for (int32_t i = 0; i < p->n_refused; i++) said = said || (p->refused[i].producer == e && strstr(p->refused[i].reason, "16 flop"));
  cr_expect(said, "the refusal names the cost");
  kiln_pass_plan_destroy(p);
  p = plan_of(g, KILN_FUSION_NONE);
  for (int32_t v = 0; v < g->n_nodes; v++)
    if (kiln_op_table[g->nodes[v].op].category != KILN_CAT_LEAF && g->nodes[v].op != KILN_OP_broadcast)
      cr_expect(p->materialized[v], "--fusion none: %s is a buffer", g->nodes[v].name);
  kiln_pass_plan_destroy(p);
  kiln_ir_graph_destroy(g);
}

/* The verifier's message after breaking a fresh plan with `breaker`. */
static void expect_broken(void (*breaker)(kiln_fusion_plan *, const kiln_graph *), const char *want) {
  kiln_graph *g = dense_graph();
  kiln_fusion_plan *p = plan_of(g, KILN_FUSION_FULL);
  breaker(p, g);
  kiln_diag d = {0};
  cr_expect_eq(kiln_pass_plan_verify(p, &d), KILN_ERR_INTERNAL);
  cr_expect(strstr(d.msg, want), "want '%s' in: %s", want, d.msg);
  kiln_pass_plan_destroy(p);
  kiln_ir_graph_destroy(g);
}

static kiln_fusion_group *gemm_group(kiln_fusion_plan *p, const kiln_graph *g) {
  return (kiln_fusion_group *)group_rooted(p, node_named(g, "relu", KILN_OP_max));
}

static void drop_member(kiln_fusion_plan *p, const kiln_graph *g) {
  kiln_fusion_group *gr = gemm_group(p, g);
  int32_t bias = node_named(g, "bias", KILN_OP_add), j = 0;
  for (int32_t i = 0; i < gr->n_members; i++)
    if (gr->members[i] != bias) gr->members[j++] = gr->members[i];
  gr->n_members = j;
}
static void materialize_member(kiln_fusion_plan *p, const kiln_graph *g) {
  p->materialized[node_named(g, "bias", KILN_OP_add)] = 1;
}
static void swap_groups(kiln_fusion_plan *p, const kiln_graph *g) {
  for (int32_t i = 0; i + 1 < p->n_groups; i++) { /* the exp's group after its reader */
    if (p->groups[i].kind == KILN_GROUP_LOOP && g->nodes[p->groups[i].root].op == KILN_OP_exp) {
      kiln_fusion_group t = p->groups[i];
      p->groups[i] = p->groups[i + 1];
      p->groups[i + 1] = t;
      for (int32_t v = 0; v < p->n_nodes; v++)
        if (p->group[v] == i) p->group[v] = i + 1;
        else if (p->group[v] == i + 1) p->group[v] = i;
      return;
    }
  }
  cr_assert_fail("no exp group");
}
static void wrong_epilogue(kiln_fusion_plan *p, const kiln_graph *g) {
  gemm_group(p, g)->epilogue = node_named(g, "bias", KILN_OP_add);
}
static void inline_output(kiln_fusion_plan *p, const kiln_graph *g) {
  p->materialized[node_named(g, "n", KILN_OP_neg)] = 0;
}

Test(plan, verifier_catches_broken_plans) {
  expect_broken(drop_member, "neither inlined here nor a buffer");
  expect_broken(materialize_member, "has a buffer of its own");
  expect_broken(swap_groups, "before a kernel writes it");
  expect_broken(wrong_epilogue, "is not its root");
  expect_broken(inline_output, "has no buffer");
}

Test(plan, lowering_computes_only_members) {
  kiln_graph *g = dense_graph();
  kiln_fusion_plan *p = plan_of(g, KILN_FUSION_FULL);
  kiln_fusion_group *gr = gemm_group(p, g);
  int32_t bias = node_named(g, "bias", KILN_OP_add), j = 0;
  for (int32_t i = 0; i < gr->n_members; i++)
    if (gr->members[i] != bias) gr->members[j++] = gr->members[i];
  gr->n_members = j;
  kiln_pass_target t = test_cpu_target(KILN_FUSION_FULL);
  kiln_kprogram *prog = NULL;
  kiln_diag d = {0};
  cr_expect_eq(kiln_pass_lower(g, p, &t, &prog, &d), KILN_ERR_INTERNAL);
  cr_expect(strstr(d.msg, "which the fusion plan does not put there"), "%s", d.msg);
  cr_expect_null(prog);
  kiln_pass_plan_destroy(p);
  kiln_ir_graph_destroy(g);
}
