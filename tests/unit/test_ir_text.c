/* test_ir_text.c - the graph text form: exact round trips (every op, every dtype, both
 * constant layouts), hand-written input, parse errors with positions, and garbage that
 * must fail cleanly. */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "test_ir_util.h"

static char *print(const kiln_graph *g) {
  char *s = kiln_ir_print_to_string(g, NULL);
  cr_assert_not_null(s);
  return s;
}

static kiln_graph *parse_ok(const char *text) {
  kiln_graph *g = NULL;
  kiln_diag d = {0};
  kiln_status st = kiln_ir_parse(NULL, text, "t.kir", &g, &d);
  cr_assert_eq(st, KILN_OK, "parse failed: %s\n%s", d.msg, text);
  return g;
}

static void parse_fails(const char *text, kiln_status want, const char *needle) {
  kiln_graph *g = NULL;
  kiln_diag d = {0};
  kiln_status st = kiln_ir_parse(NULL, text, "t.kir", &g, &d);
  cr_assert_eq(st, want, "status %d (want %d) for:\n%s\nmsg: %s", st, want, text, d.msg);
  cr_assert_null(g);
  if (needle) cr_assert(strstr(d.msg, needle), "message '%s' lacks '%s'", d.msg, needle);
}

/* Every field of every node, constant and io entry equal. */
static void assert_same_graph(const kiln_graph *a, const kiln_graph *b) {
  cr_assert_str_eq(a->name, b->name);
  cr_assert_eq(a->n_nodes, b->n_nodes);
  for (int i = 0; i < a->n_nodes; i++) {
    const kiln_node *x = &a->nodes[i], *y = &b->nodes[i];
    cr_assert_eq(x->op, y->op, "node %d", i);
    cr_assert_eq(x->dtype, y->dtype, "node %d", i);
    cr_assert(kiln_shape_eq(&x->shape, &y->shape), "node %d", i);
    cr_assert_eq(x->n_in, y->n_in);
    for (int k = 0; k < x->n_in; k++) cr_assert_eq(x->in[k], y->in[k]);
    cr_assert_eq(x->index, y->index, "node %d", i);
    cr_assert_str_eq(x->name, y->name);
    cr_assert(memcmp(&x->a, &y->a, sizeof x->a) == 0, "attrs of node %d (%s)", i, kiln_op_name(x->op));
  }
  cr_assert_eq(a->n_consts, b->n_consts);
  for (int i = 0; i < a->n_consts; i++) {
    cr_assert_eq(a->consts[i].dtype, b->consts[i].dtype);
    cr_assert(kiln_shape_eq(&a->consts[i].shape, &b->consts[i].shape));
    cr_assert_eq(a->consts[i].nbytes, b->consts[i].nbytes);
    cr_assert(memcmp(a->consts[i].data, b->consts[i].data, a->consts[i].nbytes) == 0, "bytes of constant %d", i);
    cr_assert_str_eq(a->consts[i].name, b->consts[i].name);
  }
  cr_assert_eq(a->n_inputs, b->n_inputs);
  for (int i = 0; i < a->n_inputs; i++) {
    cr_assert_eq(a->inputs[i].node, b->inputs[i].node);
    cr_assert_str_eq(a->inputs[i].name, b->inputs[i].name);
    for (int k = 0; k < KILN_MAX_RANK; k++) {
      const char *p = a->inputs[i].dim_names[k], *q = b->inputs[i].dim_names[k];
      cr_assert((!p && !q) || (p && q && strcmp(p, q) == 0), "dim name %d of input %d", k, i);
    }
  }
  cr_assert_eq(a->n_outputs, b->n_outputs);
  for (int i = 0; i < a->n_outputs; i++) {
    cr_assert_eq(a->outputs[i].node, b->outputs[i].node);
    cr_assert_str_eq(a->outputs[i].name, b->outputs[i].name);
  }
}

static void round_trip(const kiln_graph *g) {
  char *s1 = print(g);
  kiln_graph *g2 = parse_ok(s1);
  char *s2 = print(g2);
  cr_assert_str_eq(s1, s2);
  assert_same_graph(g, g2);
  free(s1);
  free(s2);
  kiln_ir_graph_destroy(g2);
}

Test(ir_text, every_op_and_dtype_round_trips) {
  kiln_graph *g = build_every_op_graph();
  cr_assert_eq(g->diag.status, KILN_OK, "%s", g->diag.msg);
  kiln_diag d = {0};
  cr_assert_eq(kiln_ir_verify(g, &d), KILN_OK, "%s", d.msg);
  bool op_used[KILN_OP_COUNT] = {0}, dt_used[KILN_DTYPE_COUNT] = {0};
  for (int i = 0; i < g->n_nodes; i++) op_used[g->nodes[i].op] = true;
  for (int i = 0; i < g->n_consts; i++) dt_used[g->consts[i].dtype] = true;
  for (int i = 0; i < KILN_OP_COUNT; i++) cr_assert(op_used[i], "op %s not in the test graph", kiln_op_name((kiln_op)i));
  for (int i = 0; i < KILN_DTYPE_COUNT; i++) cr_assert(dt_used[i], "dtype %s not in a constant", kiln_dtype_name((kiln_dtype)i));
  round_trip(g);
  kiln_ir_graph_destroy(g);
}

Test(ir_text, store_not_in_node_order_round_trips) {
  kiln_graph *g = build_every_op_graph();
  /* An orphan store entry (as after DCE) forces the explicit `const #i` layout. */
  float v = 2;
  kiln_shape s0 = {0};
  kiln_ir_add_const(g, KILN_F32, &s0, &v, "orphan");
  char *s = print(g);
  cr_assert(strstr(s, "const #0 "), "%s", s);
  free(s);
  round_trip(g);
  kiln_ir_graph_destroy(g);
}

Test(ir_text, input_renamed_and_reordered_round_trips) {
  kiln_graph *g = kiln_ir_graph_create(NULL, "io");
  kiln_shape s = {.rank = 1, .dims = {4}};
  int32_t a = kiln_ir_input(g, "a", KILN_F32, &s, NULL);
  int32_t b = kiln_ir_input(g, "b", KILN_F32, &s, NULL);
  /* Swap the input numbers and rename one graph input. */
  g->nodes[a].index = 1;
  g->nodes[b].index = 0;
  kiln_graph_io t = g->inputs[0];
  g->inputs[0] = g->inputs[1];
  g->inputs[1] = t;
  g->inputs[1].name = "renamed";
  kiln_ir_add_output(g, kiln_ir_binary(g, KILN_OP_add, a, b, "sum"), "s");
  kiln_diag d = {0};
  cr_assert_eq(kiln_ir_verify(g, &d), KILN_OK, "%s", d.msg);
  char *txt = print(g);
  cr_assert(strstr(txt, "input #1 f32[4] \"a\" as \"renamed\""), "%s", txt);
  free(txt);
  round_trip(g);
  kiln_ir_graph_destroy(g);
}

Test(ir_text, small_constants_print_values_exactly) {
  kiln_graph *g = kiln_ir_graph_create(NULL, "c");
  float v[3] = {0.1f, 1.0f, -3.5e-38f};
  kiln_shape s = {.rank = 1, .dims = {3}};
  kiln_ir_constant(g, "v", KILN_F32, &s, v);
  char *txt = print(g);
  cr_assert(strstr(txt, "[0.1, 1, -3.5e-38]"), "%s", txt);
  free(txt);
  round_trip(g);
  kiln_ir_graph_destroy(g);
}

Test(ir_text, hand_written_text_parses) {
  const char *t2 =
      "graph \"mlp\" {\n"
      "  %0 = input f32[batch=2,3] \"x\"   # comment\n"
      "  %1 = constant f32[] \"two\" [2]   ; another\n"
      "  %2 = broadcast f32[2,3] (%1) \"b\"\n"
      "  %3 = mul f32[2,3] (%0, %2) \"m\"\n"
      "  %4 = pad f32[4,3] (%3) {lo=[1,0], hi=[1,0], value=-inf} \"p\"\n"
      "  %5 = reshape f32[1,1,4,3] (%4) \"r\"\n"
      "  %6 = pool f32[1,1,3,2] (%5) {kind=0, window=[2,2]} \"pool\"\n"
      "  output %6 \"y\"\n"
      "}\n";
  kiln_graph *g = parse_ok(t2);
  cr_assert_eq(g->n_nodes, 7);
  cr_assert_str_eq(g->inputs[0].dim_names[0], "batch");
  cr_assert_null(g->inputs[0].dim_names[1]);
  cr_assert(isinf(g->nodes[4].a.value) && g->nodes[4].a.value < 0);
  cr_assert_eq(g->nodes[6].a.strides[0], 1, "strides default to 1");
  cr_assert_eq(*(float *)g->consts[0].data, 2.0f);
  round_trip(g);
  kiln_ir_graph_destroy(g);
}

Test(ir_text, elided_constants_print_dots) {
  kiln_graph *g = build_every_op_graph();
  kiln_print_options o = {.elide_constants = true};
  char *s = kiln_ir_print_to_string(g, &o);
  cr_assert(strstr(s, "\"img\" ..."), "%s", s);
  cr_assert(strstr(s, "\"w\" [-0.5,"), "small constants still print values");
  kiln_graph *g2 = NULL;
  kiln_diag d = {0};
  cr_assert_eq(kiln_ir_parse(NULL, s, "dump", &g2, &d), KILN_ERR_PARSE);
  cr_assert(strstr(d.msg, "elided"), "%s", d.msg);
  free(s);
  kiln_ir_graph_destroy(g);
}

Test(ir_text, parse_errors_name_position_and_expectation) {
  parse_fails("grph \"x\" {}", KILN_ERR_PARSE, "t.kir:1:1: expected 'graph'");
  parse_fails("graph \"x\" {\n  %0 = input f32[2 \"x\"\n}", KILN_ERR_PARSE, "t.kir:2:20: expected ','");
  parse_fails("graph \"x\" {\n  %0 = inptu f32[2] \"x\"\n}", KILN_ERR_PARSE, "2:8: expected an op name");
  parse_fails("graph \"x\" {\n  %0 = input f33[2] \"x\"\n}", KILN_ERR_PARSE, "expected a dtype");
  parse_fails("graph \"x\" {\n  %1 = input f32[2] \"x\"\n}", KILN_ERR_PARSE, "out of order");
  parse_fails("graph \"x\" {\n  %0 = input f32[2] \"x\"\n  %1 = neg f32[2] (%1) \"n\"\n}", KILN_ERR_PARSE,
              "not an earlier node");
  parse_fails("graph \"x\" {\n  %0 = input f32[2] \"x\"\n  %1 = neg f32[2] (%0) {axis=1} \"n\"\n}", KILN_ERR_PARSE,
              "has no attribute 'axis'");
  parse_fails("graph \"x\" {\n  %0 = input f32[2,3] \"x\"\n  %1 = permute f32[3,2] (%0) {perm=[1]} \"p\"\n}",
              KILN_ERR_PARSE, "needs 2 entries");
  parse_fails("graph \"x\" {\n  %0 = constant f32[2] \"c\" [1]\n}", KILN_ERR_PARSE, "exactly 2 values");
  parse_fails("graph \"x\" {\n  %0 = constant f32[2] \"c\" hex\"0000\"\n}", KILN_ERR_PARSE, "hex data");
  parse_fails("graph \"x\" {\n  %0 = constant i8[1] \"c\" [300]\n}", KILN_ERR_PARSE, "out of range");
  parse_fails("graph \"x\" {\n  output %0 \"y\"\n}", KILN_ERR_PARSE, "not a node");
  parse_fails("graph \"x\" {\n  %0 = input f32[2] \"x\n}", KILN_ERR_PARSE, NULL);
  parse_fails("graph \"x\" {\n", KILN_ERR_PARSE, "end of input");
  parse_fails("graph \"x\" {} trailing", KILN_ERR_PARSE, "end of input after the graph");
  /* Parses, but the verifier rejects the shape. */
  parse_fails("graph \"x\" {\n  %0 = input f32[2] \"x\"\n  %1 = neg f32[3] (%0) \"n\"\n}", KILN_ERR_SHAPE,
              "node %1 'n' (neg)");
}

/* Truncations and byte flips of a valid text never crash and never half-succeed. */
Test(ir_text, garbage_fails_cleanly) {
  kiln_graph *g = build_every_op_graph();
  char *s = print(g);
  size_t n = strlen(s);
  char *buf = malloc(n + 1);
  unsigned seed = 12345;
  int parsed = 0;
  for (size_t cut = 0; cut + 1 < n; cut += 7) {
    memcpy(buf, s, cut);
    buf[cut] = 0;
    kiln_graph *g2 = NULL;
    kiln_diag d = {0};
    if (kiln_ir_parse(NULL, buf, "cut", &g2, &d) == KILN_OK) {
      parsed++;
      kiln_ir_graph_destroy(g2);
    } else {
      cr_assert_null(g2);
      cr_assert_neq(d.msg[0], 0);
    }
  }
  cr_assert_eq(parsed, 0, "a strict prefix of the text parsed");
  static const char junk[] = "%#[]{}(),=\"\\x-.9e\n az";
  for (int it = 0; it < 400; it++) {
    memcpy(buf, s, n + 1);
    for (int k = 0; k < 3; k++) {
      seed = seed * 1103515245u + 12345u;
      size_t pos = (seed >> 8) % n;
      seed = seed * 1103515245u + 12345u;
      buf[pos] = junk[(seed >> 8) % (sizeof junk - 1)];
    }
    kiln_graph *g2 = NULL;
    kiln_diag d = {0};
    if (kiln_ir_parse(NULL, buf, "fuzz", &g2, &d) == KILN_OK) {
      kiln_diag vd = {0};
      cr_assert_eq(kiln_ir_verify(g2, &vd), KILN_OK);
      kiln_ir_graph_destroy(g2);
    } else {
      cr_assert_null(g2);
    }
  }
  free(buf);
  free(s);
  kiln_ir_graph_destroy(g);
}

/* An allocator that fails its n-th call and counts live blocks. */
typedef struct nth_fail {
  long calls, fail_at, live;
} nth_fail;
static void *nf_alloc(void *u, size_t n) {
  nth_fail *f = u;
  if (++f->calls == f->fail_at) return NULL;
  void *p = malloc(n);
  f->live += p != NULL;
  return p;
}
static void *nf_realloc(void *u, void *p, size_t n) {
  nth_fail *f = u;
  if (++f->calls == f->fail_at) return NULL;
  void *q = realloc(p, n);
  f->live += q && !p;
  return q;
}
static void nf_free(void *u, void *p) {
  nth_fail *f = u;
  f->live -= p != NULL;
  free(p);
}

/* Found by test_e2e_alloc: an allocation failure inside a node or output statement came
 * back as KILN_ERR_PARSE ("out of memory, got '%1'"); it must be KILN_ERR_OUT_OF_MEMORY,
 * with nothing leaked. */
Test(ir_text, allocation_failure_is_out_of_memory) {
  const char *text = "graph \"g\" {\n"
                     "  %0 = input f32[2,3] \"x\"\n"
                     "  %1 = exp f32[2,3] (%0) \"e\"\n"
                     "  %2 = add f32[2,3] (%1, %0) \"a\"\n"
                     "  output %2 \"y\"\n"
                     "  output %1 \"z\"\n"
                     "}\n";
  long n;
  for (n = 1; n < 1000; n++) {
    nth_fail f = {.fail_at = n};
    kiln_allocator a = {nf_alloc, nf_realloc, nf_free, &f};
    kiln_graph *g = NULL;
    kiln_diag d = {0};
    kiln_status st = kiln_ir_parse(&a, text, "t.kir", &g, &d);
    if (st == KILN_OK) {
      kiln_ir_graph_destroy(g);
      cr_assert_eq(f.live, 0);
      if (f.calls < n) break; /* nothing was failed: every allocation has been tried */
      continue;
    }
    cr_assert_eq(st, KILN_ERR_OUT_OF_MEMORY, "fail_at %ld: %s", n, d.msg);
    cr_assert_null(g);
    cr_assert_eq(f.live, 0, "fail_at %ld: %ld blocks leaked", n, f.live);
  }
  cr_assert_gt(n, 3, "the parse allocates");
}
