/* plan.c - the fusion plan's verifier and its text form (kiln dump --fusion-plan). The
 * plan is made by fuse.c and emitted by lower.c; these check and show it on its own. */
#include "passes-impl.h"

#include <string.h>

const char *kiln_pass_group_kind_name(kiln_group_kind k) {
  switch (k) {
  case KILN_GROUP_LOOP: return "loop";
  case KILN_GROUP_GEMM: return "gemm";
  case KILN_GROUP_OPAQUE: return "opaque";
  case KILN_GROUP_COPY: return "copy";
  }
  return "?";
}

/* ------------------------------------------------------------------ verify */
typedef struct plan_check {
  const kiln_fusion_plan *p;
  const kiln_graph *g;
  kiln_diag *d;
  uint8_t *live;      /* per node: reachable from an output */
  int32_t *made_by;   /* per node: the group whose kernel writes its buffer, or -1 */
  uint8_t *mark;      /* per node: scratch, the current group's members (1) and views (2) */
} plan_check;

#define GFMT "group g%d (%s, root %%%d): "
#define GARGS(i, gr) (int)(i), kiln_pass_group_kind_name((gr)->kind), (int)(gr)->root

static bool is_leaf(const kiln_graph *g, int32_t v) { return kiln_op_table[g->nodes[v].op].category == KILN_CAT_LEAF; }

static bool node_ok(const plan_check *c, int32_t v) { return v >= 0 && v < c->g->n_nodes; }

/* Nodes reachable from the graph's outputs. */
static void mark_live(plan_check *c) {
  const kiln_graph *g = c->g;
  for (int32_t i = 0; i < g->n_outputs; i++) c->live[g->outputs[i].node] = 1;
  for (int32_t v = g->n_nodes - 1; v >= 0; v--)
    if (c->live[v])
      for (int32_t j = 0; j < g->nodes[v].n_in; j++) c->live[g->nodes[v].in[j]] = 1;
}

/* The parts of GEMM group gr are of the kinds they must be. */
static kiln_status check_gemm(plan_check *c, int32_t gi, const kiln_fusion_group *gr) {
  const kiln_graph *g = c->g;
  if (!node_ok(c, gr->contraction) || !kiln_pass_is_gemm(g, gr->contraction) || !c->mark[gr->contraction])
    return kiln_diag_set(c->d, KILN_ERR_INTERNAL, GFMT "contraction %%%d is not a GEMM member", GARGS(gi, gr),
                         (int)gr->contraction);
  if (gr->epilogue >= 0 && gr->epilogue != gr->root)
    return kiln_diag_set(c->d, KILN_ERR_INTERNAL, GFMT "its epilogue's sink %%%d is not its root", GARGS(gi, gr),
                         (int)gr->epilogue);
  if (gr->sunk_to >= 0 && (gr->epilogue >= 0 || gr->sunk_to != gr->root))
    return kiln_diag_set(c->d, KILN_ERR_INTERNAL, GFMT "sunk into %%%d, which is not its root", GARGS(gi, gr),
                         (int)gr->sunk_to);
  for (int32_t w = gr->sunk_to; w >= 0 && w != gr->contraction; w = g->nodes[w].in[0])
    if (g->nodes[w].op != KILN_OP_permute && g->nodes[w].op != KILN_OP_reshape)
      return kiln_diag_set(c->d, KILN_ERR_INTERNAL, GFMT "its sink chain holds a %s", GARGS(gi, gr),
                           kiln_op_name(g->nodes[w].op));
  if (gr->epilogue < 0 && gr->sunk_to < 0 && gr->root != gr->contraction)
    return kiln_diag_set(c->d, KILN_ERR_INTERNAL, GFMT "neither epilogue nor sink, yet not rooted at the contraction",
                         GARGS(gi, gr));
  if (gr->prologue >= 0 &&
      (gr->prologue != g->nodes[gr->contraction].in[0] || c->p->materialized[gr->prologue] ||
       kiln_op_table[g->nodes[gr->prologue].op].category != KILN_CAT_ELEMENTWISE))
    return kiln_diag_set(c->d, KILN_ERR_INTERNAL, GFMT "prologue %%%d is not an inlined elementwise A operand",
                         GARGS(gi, gr), (int)gr->prologue);
  return KILN_OK;
}

/* Member (or view, is_view) u of group gr: computed here legitimately (a view: read in
 * place, computed nowhere), and its inputs are members, views of this group, buffers
 * written by earlier groups, or leaves. */
static kiln_status check_member(plan_check *c, int32_t gi, const kiln_fusion_group *gr, int32_t u, bool is_view) {
  const kiln_fusion_plan *p = c->p;
  const kiln_graph *g = c->g;
  bool own_buffer = u == gr->root || u == gr->contraction;
  if (p->materialized[u] && !own_buffer)
    return kiln_diag_set(c->d, KILN_ERR_INTERNAL, GFMT "%s %%%d (%s) has a buffer of its own", GARGS(gi, gr),
                         is_view ? "view" : "member", (int)u, g->nodes[u].name);
  if (is_view && kiln_op_table[g->nodes[u].op].category != KILN_CAT_MOVEMENT)
    return kiln_diag_set(c->d, KILN_ERR_INTERNAL, GFMT "view %%%d is a %s", GARGS(gi, gr), (int)u, kiln_op_name(g->nodes[u].op));
  if (!is_view && p->group[u] != gi && p->group[u] != -2)
    return kiln_diag_set(c->d, KILN_ERR_INTERNAL, GFMT "member %%%d says it is in group %d", GARGS(gi, gr), (int)u,
                         (int)p->group[u]);
  for (int32_t j = 0; j < g->nodes[u].n_in; j++) {
    int32_t w = g->nodes[u].in[j];
    if (c->mark[w] || is_leaf(g, w)) continue;
    if (!p->materialized[w])
      return kiln_diag_set(c->d, KILN_ERR_INTERNAL, GFMT "member %%%d reads %%%d (%s), which is neither inlined here nor a buffer",
                           GARGS(gi, gr), (int)u, (int)w, g->nodes[w].name);
    if (c->made_by[w] < 0 || c->made_by[w] >= gi)
      return kiln_diag_set(c->d, KILN_ERR_INTERNAL, GFMT "member %%%d reads %%%d (%s) before a kernel writes it",
                           GARGS(gi, gr), (int)u, (int)w, g->nodes[w].name);
  }
  return KILN_OK;
}

static kiln_status check_group(plan_check *c, int32_t gi) {
  const kiln_fusion_plan *p = c->p;
  const kiln_graph *g = c->g;
  const kiln_fusion_group *gr = &p->groups[gi];
  if (!node_ok(c, gr->root)) return kiln_diag_set(c->d, KILN_ERR_INTERNAL, GFMT "root out of range", GARGS(gi, gr));
  if (gr->kind == KILN_GROUP_COPY) {
    if (gr->output < 0 || gr->output >= g->n_outputs || g->outputs[gr->output].node != gr->root)
      return kiln_diag_set(c->d, KILN_ERR_INTERNAL, GFMT "copies to output %d, which is not its root", GARGS(gi, gr),
                           (int)gr->output);
    return gr->n_members ? kiln_diag_set(c->d, KILN_ERR_INTERNAL, GFMT "a copy computes nothing", GARGS(gi, gr)) : KILN_OK;
  }
  for (int32_t i = 0; i < gr->n_members; i++) {
    int32_t u = gr->members[i];
    if (!node_ok(c, u) || (i > 0 && u <= gr->members[i - 1]) || is_leaf(g, u))
      return kiln_diag_set(c->d, KILN_ERR_INTERNAL, GFMT "members are not distinct non-leaf nodes in order", GARGS(gi, gr));
    c->mark[u] = 1;
  }
  for (int32_t i = 0; i < gr->n_views; i++)
    if (node_ok(c, gr->views[i])) c->mark[gr->views[i]] = 2;
  kiln_status st = c->mark[gr->root] == 1 ? KILN_OK
                   : kiln_diag_set(c->d, KILN_ERR_INTERNAL, GFMT "its root is not a member", GARGS(gi, gr));
  if (st == KILN_OK && gr->kind == KILN_GROUP_GEMM) st = check_gemm(c, gi, gr);
  if (st == KILN_OK && gr->kind != KILN_GROUP_GEMM && (gr->contraction >= 0 || gr->epilogue >= 0 || gr->n_views))
    st = kiln_diag_set(c->d, KILN_ERR_INTERNAL, GFMT "GEMM parts in a %s group", GARGS(gi, gr),
                       kiln_pass_group_kind_name(gr->kind));
  if (st == KILN_OK && gr->kind == KILN_GROUP_OPAQUE &&
      (gr->n_members != 1 || kiln_op_table[g->nodes[gr->root].op].category != KILN_CAT_OPAQUE))
    st = kiln_diag_set(c->d, KILN_ERR_INTERNAL, GFMT "an opaque group is its one opaque node", GARGS(gi, gr));
  for (int32_t i = 0; i < gr->n_members && st == KILN_OK; i++) st = check_member(c, gi, gr, gr->members[i], false);
  for (int32_t i = 0; i < gr->n_views && st == KILN_OK; i++) st = check_member(c, gi, gr, gr->views[i], true);
  for (int32_t i = 0; i < gr->n_members; i++) c->mark[gr->members[i]] = 0;
  for (int32_t i = 0; i < gr->n_views; i++)
    if (node_ok(c, gr->views[i])) c->mark[gr->views[i]] = 0;
  if (st == KILN_OK) {
    c->made_by[gr->root] = gi;
    if (gr->contraction >= 0) c->made_by[gr->contraction] = gi;
  }
  return st;
}

/* Every live node is a leaf, written by exactly one group, or computed by some group. */
static kiln_status check_coverage(plan_check *c) {
  const kiln_fusion_plan *p = c->p;
  const kiln_graph *g = c->g;
  for (int32_t v = 0; v < g->n_nodes; v++) {
    if (!c->live[v] || is_leaf(g, v)) continue;
    if (p->is_output[v] && !p->materialized[v])
      return kiln_diag_set(c->d, KILN_ERR_INTERNAL, "output node %%%d (%s) has no buffer", (int)v, g->nodes[v].name);
    if (p->fusion == KILN_FUSION_NONE && !p->materialized[v])
      return kiln_diag_set(c->d, KILN_ERR_INTERNAL, "node %%%d (%s) is inlined at --fusion none", (int)v,
                           g->nodes[v].name);
    if (p->materialized[v] && c->made_by[v] < 0)
      return kiln_diag_set(c->d, KILN_ERR_INTERNAL, "node %%%d (%s) has a buffer that no group writes", (int)v,
                           g->nodes[v].name);
    if (!p->materialized[v] && p->group[v] == -1) {
      bool viewed = false;
      for (int32_t i = 0; i < p->n_groups && !viewed; i++)
        for (int32_t j = 0; j < p->groups[i].n_views && !viewed; j++) viewed = p->groups[i].views[j] == v;
      if (!viewed)
        return kiln_diag_set(c->d, KILN_ERR_INTERNAL, "node %%%d (%s) is computed by no group", (int)v, g->nodes[v].name);
    }
  }
  return KILN_OK;
}

kiln_status kiln_pass_plan_verify(const kiln_fusion_plan *p, kiln_diag *d) {
  const kiln_graph *g = p->g;
  if (!g || p->n_nodes != g->n_nodes) return kiln_diag_set(d, KILN_ERR_INTERNAL, "the plan is not for this graph");
  size_t n = (size_t)g->n_nodes + 1;
  plan_check c = {p, g, d, kiln_ir_malloc(g->alloc, n), kiln_ir_malloc(g->alloc, sizeof(int32_t) * n),
                  kiln_ir_malloc(g->alloc, n)};
  kiln_status st = KILN_OK;
  if (!c.live || !c.made_by || !c.mark) st = kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory verifying a plan");
  else {
    memset(c.live, 0, n);
    memset(c.mark, 0, n);
    for (size_t i = 0; i < n; i++) c.made_by[i] = -1;
    mark_live(&c);
    for (int32_t i = 0; i < p->n_groups && st == KILN_OK; i++) st = check_group(&c, i);
    if (st == KILN_OK) st = check_coverage(&c);
    for (int32_t i = 0; i < p->n_refused && st == KILN_OK; i++)
      if (!node_ok(&c, p->refused[i].producer) || p->refused[i].consumer < -1 || p->refused[i].consumer >= g->n_nodes)
        st = kiln_diag_set(d, KILN_ERR_INTERNAL, "refusal %d names a node out of range", (int)i);
  }
  kiln_ir_free(g->alloc, c.live);
  kiln_ir_free(g->alloc, c.made_by);
  kiln_ir_free(g->alloc, c.mark);
  return st;
}

/* ------------------------------------------------------------------ print */
static void print_node(FILE *f, const kiln_graph *g, int32_t v) {
  fprintf(f, "%%%d %s \"%s\"", (int)v, kiln_op_name(g->nodes[v].op), g->nodes[v].name ? g->nodes[v].name : "");
}

static void print_list(FILE *f, const kiln_graph *g, const char *what, const int32_t *v, int32_t n) {
  if (n == 0) return;
  fprintf(f, "    %s:", what);
  for (int32_t i = 0; i < n; i++) {
    fputs(i ? ", " : " ", f);
    print_node(f, g, v[i]);
  }
  fputc('\n', f);
}

static void print_group(FILE *f, const kiln_fusion_plan *p, int32_t i) {
  const kiln_graph *g = p->g;
  const kiln_fusion_group *gr = &p->groups[i];
  fprintf(f, "  g%d %s %s root ", (int)i, kiln_pass_group_kind_name(gr->kind), kiln_category_name(gr->category));
  print_node(f, g, gr->root);
  if (gr->kind == KILN_GROUP_COPY) fprintf(f, " -> output %d", (int)gr->output);
  fputc('\n', f);
  if (gr->kind == KILN_GROUP_GEMM) {
    fputs("    contraction: ", f);
    print_node(f, g, gr->contraction);
    if (gr->epilogue >= 0) fputs(" +epilogue", f);
    if (gr->prologue >= 0) fprintf(f, " +prologue %%%d", (int)gr->prologue);
    if (gr->sunk_to >= 0) fprintf(f, " +sunk into %%%d", (int)gr->sunk_to);
    if (kiln_pass_dot_is_gemm(&g->nodes[gr->contraction]))
      fprintf(f, " operands %s,%s", gr->dense_operands & 1 ? "dense" : "view", gr->dense_operands & 2 ? "dense" : "view");
    fputc('\n', f);
  }
  print_list(f, g, "members", gr->members, gr->n_members);
  print_list(f, g, "views", gr->views, gr->n_views);
}

void kiln_pass_plan_print(const kiln_fusion_plan *p, FILE *f) {
  const kiln_graph *g = p->g;
  static const char *const levels[] = {"full", "elementwise", "none"}; /* kiln_fusion_level order */
  fprintf(f, "fusion plan \"%s\" (fusion %s): %d groups, %d refused\n", g->name ? g->name : "",
          (unsigned)p->fusion < 3 ? levels[p->fusion] : "?", (int)p->n_groups, (int)p->n_refused);
  for (int32_t i = 0; i < p->n_groups; i++) print_group(f, p, i);
  fputs("  buffers:", f);
  for (int32_t v = 0; v < g->n_nodes; v++)
    if (p->materialized[v] && !is_leaf(g, v)) fprintf(f, " %%%d", (int)v);
  fputc('\n', f);
  for (int32_t i = 0; i < p->n_refused; i++) {
    const kiln_plan_refusal *r = &p->refused[i];
    fputs("  refused ", f);
    print_node(f, g, r->producer);
    fputs(" -> ", f);
    if (r->consumer >= 0) print_node(f, g, r->consumer);
    else fputs("(consumers)", f);
    fprintf(f, ": %s\n", r->reason);
  }
}
