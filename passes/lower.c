/* lower.c - lowering: one kernel of the kernel IR per group of a fusion plan (fuse.c
 * decides, this file emits): loop, opaque and copy kernels here, GEMM kernels in
 * lower_gemm.c, their expressions built by emit.c. Last, where the target runs two
 * sibling loop kernels as one (kiln_target_desc.sibling_pairs), kernels that read a
 * common input are paired (pair_siblings).
 */
#include "lower-impl.h"

#include <stdio.h>
#include <string.h>

static kiln_category cat_of(const kiln_graph *g, int32_t v) { return kiln_op_table[g->nodes[v].op].category; }

static void lower_loop(lower_ctx *c, int32_t v) {
  const kiln_node *n = &c->g->nodes[v];
  kiln_kernel *k = kiln_lower_begin_kernel(c, KILN_KERNEL_LOOP, c->buf_of[v], n->dtype, &n->shape);
  k->node = v;
  kiln_lower_emit_root(c, k, v);
  kiln_lower_end_kernel(c, k, NULL);
}

/* y = x as a loop (a graph output that is a leaf, or the second output of one node):
 * dst_buf then holds node v's value. */
static void lower_copy(lower_ctx *c, int32_t src_buf, int32_t dst_buf, int32_t v, const char *what) {
  const kiln_buffer *b = &c->p->buffers[dst_buf];
  kiln_kernel *k = kiln_lower_begin_kernel(c, KILN_KERNEL_LOOP, dst_buf, b->dtype, &b->shape);
  k->node = v;
  int32_t idx[KILN_MAX_RANK];
  kiln_lower_out_vars(c, b->shape.rank, idx);
  k->root = kiln_pass_kb_load(KB, src_buf, b->dtype, kiln_pass_kb_linearize(KB, idx, &b->shape), -1, 0);
  kiln_lower_end_kernel(c, k, "copy");
  k->n_sources = 1;
  k->sources[0] = kiln_arena_strdup(c->p->arena, what);
  if (!k->sources[0]) c->oom = true;
}
static void lower_opaque(lower_ctx *c, int32_t v) {
  const kiln_node *n = &c->g->nodes[v];
  kiln_kernel *k = kiln_lower_begin_kernel(c, KILN_KERNEL_OPAQUE, c->buf_of[v], n->dtype, &n->shape);
  k->node = v;
  k->op = n->op;
  k->attrs = n->a;
  k->n_in_bufs = n->n_in;
  k->in_bufs = kiln_arena_alloc(c->p->arena, sizeof(int32_t) * (size_t)(n->n_in ? n->n_in : 1));
  if (!k->in_bufs) c->oom = true;
  for (int32_t j = 0; k->in_bufs && j < n->n_in; j++) k->in_bufs[j] = kiln_lower_buffer_of(c, n->in[j]);
  kiln_lower_cover(c, v);
  kiln_lower_end_kernel(c, k, NULL);
}

/* ------------------------------------------------------------------ the program */

static kiln_status copy_interface(lower_ctx *c) {
  const kiln_graph *g = c->g;
  kiln_kprogram *p = c->p;
  kiln_arena *ar = p->arena;
  p->name = kiln_arena_strdup(ar, g->name);
  p->n_inputs = g->n_inputs;
  p->n_outputs = g->n_outputs;
  p->inputs = kiln_arena_alloc(ar, sizeof(kiln_graph_io) * (size_t)(g->n_inputs + 1));
  p->outputs = kiln_arena_alloc(ar, sizeof(kiln_graph_io) * (size_t)(g->n_outputs + 1));
  p->in_dtypes = kiln_arena_alloc(ar, sizeof(kiln_dtype) * (size_t)(g->n_inputs + 1));
  p->out_dtypes = kiln_arena_alloc(ar, sizeof(kiln_dtype) * (size_t)(g->n_outputs + 1));
  p->in_shapes = kiln_arena_alloc(ar, sizeof(kiln_shape) * (size_t)(g->n_inputs + 1));
  p->out_shapes = kiln_arena_alloc(ar, sizeof(kiln_shape) * (size_t)(g->n_outputs + 1));
  if (!p->name || !p->inputs || !p->outputs || !p->in_dtypes || !p->out_dtypes || !p->in_shapes ||
      !p->out_shapes)
    return KILN_ERR_OUT_OF_MEMORY;
  for (int32_t i = 0; i < g->n_inputs; i++) {
    const kiln_node *n = &g->nodes[g->inputs[i].node];
    p->inputs[i].node = -1;
    p->inputs[i].name = kiln_arena_strdup(ar, g->inputs[i].name);
    for (int32_t d = 0; d < n->shape.rank; d++)
      if (g->inputs[i].dim_names[d]) p->inputs[i].dim_names[d] = kiln_arena_strdup(ar, g->inputs[i].dim_names[d]);
    p->in_dtypes[i] = n->dtype;
    p->in_shapes[i] = n->shape;
  }
  for (int32_t i = 0; i < g->n_outputs; i++) {
    const kiln_node *n = &g->nodes[g->outputs[i].node];
    p->outputs[i].node = -1;
    p->outputs[i].name = kiln_arena_strdup(ar, g->outputs[i].name);
    p->out_dtypes[i] = n->dtype;
    p->out_shapes[i] = n->shape;
  }
  return KILN_OK;
}

/* ------------------------------------------------------------------ sibling kernels */
/* "k12_add" -> "k<i>_add" (and a sub-kernel's "k12_conv_gemm.pack" alike): kernel names
 * carry their index, which pair_siblings changes. */
static const char *renumbered(lower_ctx *c, const char *name, int32_t i) {
  if (!name || name[0] != 'k') return name;
  const char *rest = name + 1;
  while (*rest >= '0' && *rest <= '9') rest++;
  char buf[160];
  snprintf(buf, sizeof buf, "k%d%s", (int)i, rest);
  const char *r = kiln_arena_strdup(c->p->arena, buf);
  if (!r) c->oom = true;
  return r ? r : name;
}

/* Whether kernel m may run after kernel b instead of before it: b reads nothing m writes
 * (nothing else can conflict before memory planning: every buffer has one writer). */
static bool may_pass(const kiln_kernel *b, const kiln_kernel *m) {
  if (kiln_ir_kernel_loads(b, m->out_buf)) return false;
  if (m->kind == KILN_KERNEL_GEMM && m->pack)
    return !kiln_ir_kernel_loads(b, m->gemm.pack_a ? m->gemm.a_buf : m->gemm.b_buf) &&
           !kiln_ir_kernel_loads(b, m->gemm.param_buf);
  return true;
}

/* How far the second sibling may move up: past at most this many kernels, none of them a
 * GEMM or opaque kernel. Moving up makes its output live longer (a larger arena: past
 * four GEMMs, 2.1 -> 3.1 MB) and written long before its readers run. */
#define SIBLING_MAX_PASS 3

/* Sibling fusion: two elementwise kernels over the same domain that read a common input
 * (not a constant) run as one (kiln_kernel.with_next): the second moves up to right after
 * the first, where nothing it reads is still to be written (and not far: SIBLING_MAX_PASS),
 * and the CPU backend runs the two in one loop nest, so the common input is read from
 * memory once. Pairs only (no chains of three); the first kernel of each pair is the
 * earlier one. The report counts the common input once, with the first (kiln_ir_kernel_stats). */
static void pair_siblings(lower_ctx *c) {
  kiln_kprogram *p = c->p;
  for (int32_t i = 0; i + 1 < p->n_kernels; i++) {
    kiln_kernel *a = &p->kernels[i];
    if (a->with_next || (i > 0 && p->kernels[i - 1].with_next) || a->kind != KILN_KERNEL_LOOP) continue;
    for (int32_t j = i + 1; j < p->n_kernels && j <= i + 1 + SIBLING_MAX_PASS; j++) {
      if (j > i + 1 && p->kernels[j - 1].kind != KILN_KERNEL_LOOP) break; /* not past a GEMM or opaque kernel */
      kiln_kernel *b = &p->kernels[j];
      if (b->kind != KILN_KERNEL_LOOP || !kiln_ir_siblings_ok(a, b)) continue;
      bool common = false;
      for (int32_t x = 0; x < b->n_kx && !common; x++)
        common = b->kx[x].kind == KILN_KX_LOAD && p->buffers[b->kx[x].buf].kind != KILN_BUF_CONST &&
                 kiln_ir_kernel_loads(a, b->kx[x].buf);
      bool movable = common;
      for (int32_t m = i + 1; m < j && movable; m++) movable = may_pass(b, &p->kernels[m]);
      if (!movable) continue;
      kiln_kernel moved = *b;
      memmove(&p->kernels[i + 2], &p->kernels[i + 1], sizeof(kiln_kernel) * (size_t)(j - i - 1));
      p->kernels[i + 1] = moved;
      for (int32_t m = i + 1; m <= j; m++) {
        kiln_kernel *k = &p->kernels[m];
        k->name = renumbered(c, k->name, m);
        if (k->pack) k->pack->name = renumbered(c, k->pack->name, m);
        if (k->epilogue) k->epilogue->name = renumbered(c, k->epilogue->name, m);
      }
      p->kernels[i].with_next = true;
      break;
    }
  }
}

/* The program's refusals: the plan's, by node name (the program outlives the graph). */
static void copy_refusals(lower_ctx *c) {
  const kiln_fusion_plan *pl = c->plan;
  kiln_kprogram *p = c->p;
  p->refused = kiln_arena_alloc(p->arena, sizeof(kiln_fusion_refusal) * (size_t)(pl->n_refused + 1));
  if (!p->refused) return (void)(c->oom = true);
  for (int32_t i = 0; i < pl->n_refused; i++) {
    const kiln_plan_refusal *r = &pl->refused[i];
    kiln_fusion_refusal *o = &p->refused[i];
    o->producer = kiln_arena_strdup(p->arena, c->g->nodes[r->producer].name);
    o->consumer = r->consumer >= 0 ? kiln_arena_strdup(p->arena, c->g->nodes[r->consumer].name) : "";
    o->reason = kiln_arena_strdup(p->arena, r->reason);
    if (!o->producer || !o->consumer || !o->reason) c->oom = true;
  }
  p->n_refused = pl->n_refused;
}

/* The kernel of group gr. */
static void lower_group(lower_ctx *c, const kiln_fusion_group *gr, int32_t first_out) {
  const kiln_graph *g = c->g;
  int32_t v = gr->root;
  c->group = gr;
  for (int32_t i = 0; i < gr->n_members; i++) c->member[gr->members[i]] = 1;
  switch (gr->kind) {
  case KILN_GROUP_GEMM:
    if (kiln_pass_dot_is_gemm(&g->nodes[gr->contraction])) kiln_lower_dot_gemm(c, gr->contraction);
    else if (g->nodes[gr->contraction].op == KILN_OP_conv_cl) kiln_lower_conv_cl_gemm(c, gr->contraction);
    else kiln_lower_conv_gemm(c, gr->contraction);
    break;
  case KILN_GROUP_OPAQUE:
    kiln_lower_buffer_of(c, v);
    lower_opaque(c, v);
    break;
  case KILN_GROUP_LOOP:
    kiln_lower_buffer_of(c, v);
    lower_loop(c, v);
    break;
  case KILN_GROUP_COPY: {
    int32_t src = kiln_lower_buffer_of(c, v), dst = first_out + gr->output;
    if (src == dst)
      c->user_err = kiln_diag_set(c->d, KILN_ERR_INTERNAL, "the plan copies output %d onto itself", (int)gr->output);
    else lower_copy(c, src, dst, v, g->nodes[v].name);
    break;
  }
  }
  for (int32_t i = 0; i < gr->n_members; i++) c->member[gr->members[i]] = 0;
}

static kiln_status lower_all(lower_ctx *c) {
  const kiln_graph *g = c->g;
  kiln_kprogram *p = c->p;
  int32_t n = g->n_nodes;
  c->cap_buffers = g->n_inputs + g->n_outputs + 2 * n + 1;
  c->cap_kernels = c->plan->n_groups + 1;
  p->buffers = kiln_arena_alloc(p->arena, sizeof(kiln_buffer) * (size_t)c->cap_buffers);
  p->kernels = kiln_arena_alloc(p->arena, sizeof(kiln_kernel) * (size_t)c->cap_kernels);
  p->consts = kiln_arena_alloc(p->arena, sizeof(kiln_const) * (size_t)(g->n_consts + 1));
  if (!p->buffers || !p->kernels || !p->consts || copy_interface(c) != KILN_OK)
    return KILN_ERR_OUT_OF_MEMORY;
  copy_refusals(c);
  for (int32_t i = 0; i < g->n_inputs; i++) {
    int32_t v = g->inputs[i].node;
    c->buf_of[v] = kiln_lower_new_buffer(c, KILN_BUF_INPUT, g->nodes[v].dtype, &g->nodes[v].shape, i, g->inputs[i].name);
  }
  int32_t first_out = p->n_buffers;
  for (int32_t i = 0; i < g->n_outputs; i++) {
    int32_t v = g->outputs[i].node;
    int32_t b = kiln_lower_new_buffer(c, KILN_BUF_OUTPUT, g->nodes[v].dtype, &g->nodes[v].shape, i, g->outputs[i].name);
    if (c->buf_of[v] < 0 && cat_of(g, v) != KILN_CAT_LEAF) c->buf_of[v] = b;
  }
  for (int32_t i = 0; i < c->plan->n_groups && !c->oom && !c->user_err; i++) lower_group(c, &c->plan->groups[i], first_out);
  if (c->t->fusion == KILN_FUSION_FULL && c->t->desc.sibling_pairs && !c->oom && !c->user_err) pair_siblings(c);
  return c->oom ? KILN_ERR_OUT_OF_MEMORY : c->user_err;
}

static bool alloc_ctx(lower_ctx *c) {
  const kiln_graph *g = c->g;
  size_t nn = (size_t)g->n_nodes + 1;
  c->scratch = kiln_arena_create(g->alloc);
  if (!c->scratch) return false;
  c->buf_of = kiln_arena_alloc(c->scratch, sizeof(int32_t) * nn);
  c->const_buf = kiln_arena_alloc(c->scratch, sizeof(int32_t) * ((size_t)g->n_consts + 1));
  c->idx_state = kiln_arena_alloc(c->scratch, nn);
  c->member = kiln_arena_alloc(c->scratch, nn);
  if (!c->buf_of || !c->const_buf || !c->idx_state || !c->member) return false;
  for (int32_t i = 0; i < g->n_nodes; i++) c->buf_of[i] = -1;
  for (int32_t i = 0; i < g->n_consts; i++) c->const_buf[i] = -1;
  return true;
}

kiln_status kiln_pass_lower(const kiln_graph *g, const kiln_fusion_plan *plan, const kiln_pass_target *t,
                            kiln_kprogram **out, kiln_diag *d) {
  *out = NULL;
  if (plan->g != g || plan->n_nodes != g->n_nodes)
    return kiln_diag_set(d, KILN_ERR_INTERNAL, "lowering graph '%s' with a fusion plan made for another graph", g->name);
  lower_ctx c;
  memset(&c, 0, sizeof c);
  c.g = g;
  c.t = t;
  c.plan = plan;
  c.d = d;
  c.alloc = g->alloc;
  c.kb.alloc = g->alloc;
  c.root = -1;
  c.p = kiln_ir_kprogram_create(g->alloc);
  kiln_status st = KILN_OK;
  if (!c.p || !alloc_ctx(&c)) {
    st = kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory lowering graph '%s'", g->name);
    goto done;
  }
  st = lower_all(&c);
  if (st != KILN_OK) {
    if (st == KILN_ERR_OUT_OF_MEMORY) kiln_diag_set(d, st, "out of memory lowering graph '%s'", g->name);
    goto done;
  }
  kiln_diag vd = {0};
  if (kiln_ir_kprogram_verify(c.p, &vd) != KILN_OK) {
    st = kiln_diag_set(d, KILN_ERR_INTERNAL, "lowering of graph '%s' produced an invalid kernel program: %s",
                       g->name, vd.msg);
    goto done;
  }
done:
  kiln_pass_kb_free(&c.kb);
  kiln_ir_free(g->alloc, c.memo);
  kiln_arena_destroy(c.scratch);
  if (st != KILN_OK) kiln_ir_kprogram_destroy(c.p);
  else *out = c.p;
  return st;
}
