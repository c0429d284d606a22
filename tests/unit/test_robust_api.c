/* test_robust_api.c - misuse of the public API (include/kiln.h) gets a status and a
 * message, never a crash: NULL handles and pointers to every function, wrong tensors at
 * run time (count, dtype, rank, dims, NULL data), kiln_load_library on files that are not
 * Kiln libraries, kiln_load_text/kiln_parse_text on garbage, and builder misuse (invalid
 * value ids, out-of-range axes, mismatched matmul) giving a sticky error that names the
 * node; kiln_version and kiln_last_error_copy. Run under the ASan build to see memory
 * errors. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kiln.h"

#define INV KILN_ERR_INVALID_ARGUMENT

static kiln_context *new_ctx(void) {
  kiln_context_options o = {.threads = 1, .cache_dir = ""};
  kiln_context *ctx = NULL;
  cr_assert_eq(kiln_context_create(&o, &ctx), KILN_OK);
  return ctx;
}

/* y = relu(x + 1), x f32[2,3]. */
static kiln_graph *small_graph(kiln_context *ctx) {
  kiln_graph *g;
  cr_assert_eq(kiln_graph_create(ctx, "small", &g), KILN_OK);
  int64_t d[2] = {2, 3};
  kiln_value x = kiln_input(g, "x", KILN_F32, 2, d);
  kiln_value y = kiln_relu(g, kiln_add(g, x, kiln_scalar(g, KILN_F32, 1.0)));
  cr_assert_eq(kiln_output(g, "y", y), KILN_OK);
  cr_assert_eq(kiln_graph_status(g), KILN_OK, "%s", kiln_graph_error(g));
  return g;
}

static void expect_msg(kiln_context *ctx, const char *needle) {
  const char *m = kiln_last_error(ctx);
  cr_assert(m && m[0] && strcmp(m, "no error"), "no message");
  if (needle) cr_assert(strstr(m, needle), "message '%s' does not mention '%s'", m, needle);
}

Test(robust_api, null_handles_everywhere) {
  kiln_context *ctx = new_ctx();
  kiln_graph *g = NULL;
  kiln_executable *e = NULL;
  kiln_tensor t = {0};
  const char *name;
  kiln_dtype dt;
  int32_t rank;
  int64_t dims[8];
  kiln_exe_stats s;

  cr_assert_str_not_empty(kiln_status_name((kiln_status)999));
  cr_assert_eq(kiln_context_create(NULL, NULL), INV);
  kiln_context_destroy(NULL);
  cr_assert_str_not_empty(kiln_last_error(NULL));

  cr_assert_eq(kiln_load_onnx(NULL, "x.onnx", NULL, &g), INV);
  cr_assert_eq(kiln_load_onnx(ctx, NULL, NULL, &g), INV);
  cr_assert_eq(kiln_load_onnx(ctx, "x.onnx", NULL, NULL), INV);
  cr_assert_eq(kiln_load_text(NULL, "x.kir", &g), INV);
  cr_assert_eq(kiln_load_text(ctx, NULL, &g), INV);
  cr_assert_eq(kiln_load_text(ctx, "x.kir", NULL), INV);
  cr_assert_eq(kiln_parse_text(NULL, "", &g), INV);
  cr_assert_eq(kiln_parse_text(ctx, NULL, &g), INV);
  cr_assert_eq(kiln_parse_text(ctx, "graph \"a\" {}", NULL), INV);

  cr_assert_eq(kiln_graph_create(NULL, "g", &g), INV);
  cr_assert_eq(kiln_graph_create(ctx, "g", NULL), INV);
  kiln_graph_destroy(NULL);
  cr_assert_eq(kiln_graph_status(NULL), INV);
  cr_assert_str_not_empty(kiln_graph_error(NULL));
  cr_assert_null(kiln_graph_to_text(ctx, NULL));
  kiln_free(ctx, NULL);
  kiln_free(NULL, NULL);
  cr_assert_eq(kiln_graph_num_inputs(NULL), 0);
  cr_assert_eq(kiln_graph_num_outputs(NULL), 0);
  cr_assert_eq(kiln_graph_input_info(NULL, 0, &name, &dt, &rank, dims), INV);
  cr_assert_eq(kiln_graph_output_info(NULL, 0, &name, &dt, &rank, dims), INV);

  kiln_value v = {0}, vs[2] = {{0}, {0}};
  int64_t d1[1] = {1};
  int32_t ax[1] = {0}, perm[1] = {0};
  cr_assert_lt(kiln_input(NULL, "x", KILN_F32, 1, d1).id, 0);
  cr_assert_lt(kiln_constant(NULL, "c", KILN_F32, 1, d1, NULL).id, 0);
  cr_assert_lt(kiln_scalar(NULL, KILN_F32, 1).id, 0);
  cr_assert_eq(kiln_output(NULL, "y", v), INV);
  cr_assert_lt(kiln_add(NULL, v, v).id, 0);
  cr_assert_lt(kiln_sub(NULL, v, v).id, 0);
  cr_assert_lt(kiln_mul(NULL, v, v).id, 0);
  cr_assert_lt(kiln_div(NULL, v, v).id, 0);
  cr_assert_lt(kiln_pow(NULL, v, v).id, 0);
  cr_assert_lt(kiln_max(NULL, v, v).id, 0);
  cr_assert_lt(kiln_min(NULL, v, v).id, 0);
  cr_assert_lt(kiln_neg(NULL, v).id, 0);
  cr_assert_lt(kiln_exp(NULL, v).id, 0);
  cr_assert_lt(kiln_log(NULL, v).id, 0);
  cr_assert_lt(kiln_sqrt(NULL, v).id, 0);
  cr_assert_lt(kiln_tanh(NULL, v).id, 0);
  cr_assert_lt(kiln_sigmoid(NULL, v).id, 0);
  cr_assert_lt(kiln_erf(NULL, v).id, 0);
  cr_assert_lt(kiln_relu(NULL, v).id, 0);
  cr_assert_lt(kiln_cast(NULL, v, KILN_I32).id, 0);
  cr_assert_lt(kiln_where(NULL, v, v, v).id, 0);
  cr_assert_lt(kiln_reshape(NULL, v, 1, d1).id, 0);
  cr_assert_lt(kiln_transpose(NULL, v, perm).id, 0);
  cr_assert_lt(kiln_concat(NULL, 2, vs, 0).id, 0);
  cr_assert_lt(kiln_reduce_sum(NULL, v, 1, ax, 0).id, 0);
  cr_assert_lt(kiln_reduce_max(NULL, v, 1, ax, 0).id, 0);
  cr_assert_lt(kiln_softmax(NULL, v, 0).id, 0);
  cr_assert_lt(kiln_matmul(NULL, v, v).id, 0);
  cr_assert_lt(kiln_conv2d(NULL, v, v, NULL, NULL, 1).id, 0);

  cr_assert_eq(kiln_compile(NULL, g, NULL, &e), INV);
  cr_assert_eq(kiln_compile(ctx, NULL, NULL, &e), INV);
  kiln_graph *sg = small_graph(ctx);
  cr_assert_eq(kiln_compile(ctx, sg, NULL, NULL), INV);
  cr_assert_eq(kiln_run(NULL, &t, 1, &t, 1), INV);
  kiln_executable_destroy(NULL);
  cr_assert_eq(kiln_executable_stats(NULL, &s), INV);
  cr_assert_eq(kiln_executable_num_inputs(NULL), 0);
  cr_assert_eq(kiln_executable_num_outputs(NULL), 0);
  cr_assert_eq(kiln_executable_input_info(NULL, 0, &name, &dt, &rank, dims), INV);
  cr_assert_eq(kiln_executable_output_info(NULL, 0, &name, &dt, &rank, dims), INV);
  cr_assert_eq(kiln_export(NULL, sg, NULL, "/tmp/x.so", NULL, NULL), INV);
  cr_assert_eq(kiln_export(ctx, NULL, NULL, "/tmp/x.so", NULL, NULL), INV);
  cr_assert_eq(kiln_export(ctx, sg, NULL, NULL, NULL, NULL), INV);
  cr_assert_eq(kiln_load_library(NULL, "/tmp/x.so", &e), INV);
  cr_assert_eq(kiln_load_library(ctx, NULL, &e), INV);
  cr_assert_eq(kiln_load_library(ctx, "/tmp/x.so", NULL), INV);
  cr_assert_eq(kiln_interpret(NULL, sg, &t, 1, &t, 1), INV);
  cr_assert_eq(kiln_interpret(ctx, NULL, &t, 1, &t, 1), INV);
  /* NULL tensor arrays with non-zero counts. */
  cr_assert_eq(kiln_interpret(ctx, sg, NULL, 1, NULL, 1), INV);
  expect_msg(ctx, NULL);
  kiln_graph_destroy(sg);
  kiln_context_destroy(ctx);
}

Test(robust_api, wrong_tensors_at_run_time_name_the_tensor) {
  kiln_context *ctx = new_ctx();
  kiln_graph *g = small_graph(ctx);
  kiln_executable *e;
  cr_assert_eq(kiln_compile(ctx, g, NULL, &e), KILN_OK, "%s", kiln_last_error(ctx));
  const kiln_compile_options *none = NULL;
  (void)none;
  float x[6] = {-1, 2, -3, 4, -5, 6}, y[6], big[64];
  kiln_tensor in = {KILN_F32, 2, {2, 3}, x}, out = {KILN_F32, 2, {2, 3}, y};

  for (int interp = 0; interp < 2; interp++) {
#define RUN(pi, ni, po, no) (interp ? kiln_interpret(ctx, g, pi, ni, po, no) : kiln_run(e, pi, ni, po, no))
    cr_assert_eq(RUN(&in, 1, &out, 1), KILN_OK, "%s", kiln_last_error(ctx));
    cr_assert_float_eq(y[0], 0.0f, 1e-6);
    cr_assert_float_eq(y[1], 3.0f, 1e-6);
    /* Counts. */
    kiln_tensor two[2] = {in, in};
    cr_assert_eq(RUN(two, 2, &out, 1), INV);
    expect_msg(ctx, "input");
    cr_assert_eq(RUN(&in, 0, &out, 1), INV);
    cr_assert_eq(RUN(&in, 1, &out, 0), INV);
    cr_assert_eq(RUN(NULL, 1, &out, 1), INV);
    cr_assert_eq(RUN(&in, 1, NULL, 1), INV);
    cr_assert_eq(RUN(&in, 1000, &out, 1), INV);
    /* Dtype. */
    kiln_tensor bad = in;
    bad.dtype = KILN_F64;
    cr_assert_eq(RUN(&bad, 1, &out, 1), INV);
    expect_msg(ctx, "x");
    bad.dtype = (kiln_dtype)77;
    cr_assert_eq(RUN(&bad, 1, &out, 1), INV);
    bad.dtype = (kiln_dtype)-5;
    cr_assert_eq(RUN(&bad, 1, &out, 1), INV);
    /* Rank and dims (a bigger buffer, so a missed check would not read past it). */
    bad = in;
    bad.data = big;
    bad.rank = 3;
    bad.dims[2] = 1;
    cr_assert_eq(RUN(&bad, 1, &out, 1), INV);
    expect_msg(ctx, "x");
    bad.rank = 1;
    bad.dims[0] = 6;
    cr_assert_eq(RUN(&bad, 1, &out, 1), INV);
    bad = in;
    bad.dims[1] = 4;
    bad.data = big;
    cr_assert_eq(RUN(&bad, 1, &out, 1), INV);
    expect_msg(ctx, "[2,3]");
    bad.rank = -1;
    cr_assert_eq(RUN(&bad, 1, &out, 1), INV);
    bad.rank = 1000;
    cr_assert_eq(RUN(&bad, 1, &out, 1), INV);
    /* NULL data. */
    bad = in;
    bad.data = NULL;
    cr_assert_eq(RUN(&bad, 1, &out, 1), INV);
    expect_msg(ctx, "x");
    kiln_tensor bado = out;
    bado.data = NULL;
    cr_assert_eq(RUN(&in, 1, &bado, 1), INV);
    expect_msg(ctx, "y");
    bado = out;
    bado.dims[0] = 3;
    bado.data = big;
    cr_assert_eq(RUN(&in, 1, &bado, 1), INV);
    expect_msg(ctx, "y");
#undef RUN
  }
  /* Info queries out of range. */
  const char *name;
  cr_assert_eq(kiln_executable_input_info(e, 1, &name, NULL, NULL, NULL), INV);
  cr_assert_eq(kiln_executable_output_info(e, -1, &name, NULL, NULL, NULL), INV);
  cr_assert_eq(kiln_graph_input_info(g, 5, &name, NULL, NULL, NULL), INV);
  cr_assert_eq(kiln_graph_output_info(g, -1, &name, NULL, NULL, NULL), INV);
  /* Bad compile options. */
  kiln_executable *e2 = NULL;
  kiln_compile_options co = {.target = (kiln_target)9};
  cr_assert_neq(kiln_compile(ctx, g, &co, &e2), KILN_OK);
  cr_assert_null(e2);
  expect_msg(ctx, NULL);
  co = (kiln_compile_options){.fusion = (kiln_fusion_level)42};
  kiln_status st = kiln_compile(ctx, g, &co, &e2);
  if (st != KILN_OK) expect_msg(ctx, NULL);
  kiln_executable_destroy(e2);
  kiln_executable_destroy(e);
  kiln_graph_destroy(g);
  kiln_context_destroy(ctx);
}

static void write_file(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  cr_assert(f);
  cr_assert_eq(fwrite(data, 1, n, f), n);
  fclose(f);
}

Test(robust_api, files_that_are_not_what_they_claim) {
  kiln_context *ctx = new_ctx();
  char dir[] = "/tmp/kiln_robust_api_XXXXXX", path[256];
  cr_assert(mkdtemp(dir));
  kiln_executable *e = (kiln_executable *)1;
  kiln_graph *g = (kiln_graph *)1;
  /* A text file as a library. */
  snprintf(path, sizeof path, "%s/text.so", dir);
  write_file(path, "hello\n", 6);
  cr_assert_neq(kiln_load_library(ctx, path, &e), KILN_OK);
  cr_assert_null(e);
  expect_msg(ctx, "text.so");
  /* A shared library that is not a Kiln model. */
  e = (kiln_executable *)1;
  cr_assert_eq(kiln_load_library(ctx, "libm.so.6", &e), KILN_ERR_IO); /* no slash: not searched */
  cr_assert_null(e);
  char so[256];
  snprintf(so, sizeof so, "%s/libnotkiln.so", dir);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "printf 'int f(void){return 1;}' | cc -shared -fPIC -x c - -o '%s' 2>/dev/null", so);
  if (system(cmd) == 0) {
    cr_assert_eq(kiln_load_library(ctx, so, &e), INV);
    cr_assert_null(e);
    expect_msg(ctx, "libnotkiln.so");
  }
  /* Missing files. */
  snprintf(path, sizeof path, "%s/missing.onnx", dir);
  cr_assert_eq(kiln_load_onnx(ctx, path, NULL, &g), KILN_ERR_IO);
  cr_assert_null(g);
  expect_msg(ctx, "missing.onnx");
  g = (kiln_graph *)1;
  snprintf(path, sizeof path, "%s/missing.kir", dir);
  cr_assert_eq(kiln_load_text(ctx, path, &g), KILN_ERR_IO);
  cr_assert_null(g);
  expect_msg(ctx, "missing.kir");
  /* A folder as a model. */
  cr_assert_neq(kiln_load_onnx(ctx, dir, NULL, &g), KILN_OK);
  expect_msg(ctx, dir);
  cr_assert_neq(kiln_load_text(ctx, dir, &g), KILN_OK);
  expect_msg(ctx, NULL);
  /* Garbage as text IR and as ONNX. */
  static const char *const garbage[] = {
      "", "\x01\x02\x03", "graph", "graph \"g\" {", "graph \"g\" { %0 = input f32[2 \"x\" }",
      "graph \"g\" {\n  %0 = input f32[2] \"x\"\n  %1 = add %0, %7\n  output %1 \"y\"\n}",
      "graph \"g\" {\n  %0 = input f32[99999999999,99999999999,9999999999] \"x\"\n  output %0 \"y\"\n}",
      "graph \"g\" {\n  %0 = input f32[1,1,1,1,1,1,1,1,1] \"x\"\n  output %0 \"y\"\n}",
      "graph \"g\" {\n  %0 = input f32[-3] \"x\"\n  output %0 \"y\"\n}",
      "graph \"g\" {\n  %0 = input f32[2] \"x\"\n  %1 = nosuchop %0\n  output %1 \"y\"\n}",
      "graph \"g\" {\n  %0 = input f32[2] \"x\"\n  output %5 \"y\"\n}",
      "graph \"g\" {\n  %0 = input f32[2] \"x\"\n  %0 = input f32[2] \"x\"\n  output %0 \"y\"\n}",
      "graph \"g\" {\n  %0 = input q77[2] \"x\"\n  output %0 \"y\"\n}",
      "graph \"g\" {\n  %0 = constant f32[2] \"c\" [1]\n  output %0 \"y\"\n}",
      "graph \"g\" {\n  %0 = input f32[2] \"x\"\n  %1 = permute %0 {perm=[3]}\n  output %1 \"y\"\n}",
  };
  for (size_t i = 0; i < sizeof garbage / sizeof garbage[0]; i++) {
    g = NULL;
    kiln_status st = kiln_parse_text(ctx, garbage[i], &g);
    cr_assert_neq(st, KILN_OK, "garbage %zu parsed", i);
    expect_msg(ctx, NULL);
    snprintf(path, sizeof path, "%s/garbage%zu.kir", dir, i);
    write_file(path, garbage[i], strlen(garbage[i]));
    g = NULL;
    cr_assert_neq(kiln_load_text(ctx, path, &g), KILN_OK, "garbage %zu loaded", i);
    expect_msg(ctx, NULL);
    snprintf(path, sizeof path, "%s/garbage%zu.onnx", dir, i);
    write_file(path, garbage[i], strlen(garbage[i]));
    cr_assert_neq(kiln_load_onnx(ctx, path, NULL, &g), KILN_OK, "garbage %zu loaded as ONNX", i);
    expect_msg(ctx, "garbage");
  }
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  cr_assert_eq(system(cmd), 0);
  kiln_context_destroy(ctx);
}

Test(robust_api, builder_misuse_is_a_sticky_error_naming_the_node) {
  kiln_context *ctx = new_ctx();
  int64_t d23[2] = {2, 3}, d45[2] = {4, 5};
  kiln_value bogus[] = {{-1}, {12345}, {INT32_MAX}};
  for (size_t b = 0; b < sizeof bogus / sizeof bogus[0]; b++) {
    kiln_graph *g;
    cr_assert_eq(kiln_graph_create(ctx, "g", &g), KILN_OK);
    kiln_value x = kiln_input(g, "x", KILN_F32, 2, d23), v = bogus[b];
    int32_t ax[1] = {0}, perm[2] = {1, 0};
    kiln_value vs[2] = {x, v};
    int64_t d6[1] = {6};
    /* Every builder call with an invalid operand returns an invalid value. */
    cr_assert_lt(kiln_add(g, x, v).id, 0);
    cr_assert_lt(kiln_sub(g, v, x).id, 0);
    cr_assert_lt(kiln_neg(g, v).id, 0);
    cr_assert_lt(kiln_relu(g, v).id, 0);
    cr_assert_lt(kiln_cast(g, v, KILN_I32).id, 0);
    cr_assert_lt(kiln_where(g, v, x, x).id, 0);
    cr_assert_lt(kiln_reshape(g, v, 1, d6).id, 0);
    cr_assert_lt(kiln_transpose(g, v, perm).id, 0);
    cr_assert_lt(kiln_concat(g, 2, vs, 0).id, 0);
    cr_assert_lt(kiln_reduce_sum(g, v, 1, ax, 1).id, 0);
    cr_assert_lt(kiln_reduce_max(g, v, 1, ax, 1).id, 0);
    cr_assert_lt(kiln_softmax(g, v, 0).id, 0);
    cr_assert_lt(kiln_matmul(g, v, x).id, 0);
    cr_assert_lt(kiln_conv2d(g, v, x, NULL, NULL, 1).id, 0);
    cr_assert_neq(kiln_output(g, "y", v), KILN_OK);
    if (b > 0) { /* a made-up id is an error of its own; -1 only propagates an earlier one */
      cr_assert_neq(kiln_graph_status(g), KILN_OK);
      cr_assert_str_not_empty(kiln_graph_error(g));
    }
    kiln_executable *e = NULL;
    if (kiln_graph_status(g) != KILN_OK) {
      cr_assert_neq(kiln_compile(ctx, g, NULL, &e), KILN_OK, "compiled a graph with a builder error");
      cr_assert_null(e);
    }
    kiln_graph_destroy(g);
  }

  /* Shape errors name the node and stick: later calls stay invalid, the first error stays. */
  kiln_graph *g;
  cr_assert_eq(kiln_graph_create(ctx, "g", &g), KILN_OK);
  kiln_value a = kiln_input(g, "a", KILN_F32, 2, d23), b = kiln_input(g, "b", KILN_F32, 2, d45);
  kiln_value m = kiln_matmul(g, a, b);
  cr_assert_lt(m.id, 0);
  cr_assert_eq(kiln_graph_status(g), KILN_ERR_SHAPE, "%s", kiln_graph_error(g));
  cr_assert(strstr(kiln_graph_error(g), "matmul"), "%s", kiln_graph_error(g));
  char first[512];
  snprintf(first, sizeof first, "%s", kiln_graph_error(g));
  cr_assert_lt(kiln_relu(g, m).id, 0);
  cr_assert_neq(kiln_output(g, "y", m), KILN_OK);
  cr_assert_str_eq(kiln_graph_error(g), first);
  kiln_graph_destroy(g);

  /* Out-of-range axes, bad perms, ranks and dims. */
  struct {
    const char *what;
    int kind;
  } cases[] = {{"reduce_sum", 0}, {"reduce_max", 1}, {"softmax", 2}, {"concat", 3},
               {"transpose", 4},  {"reshape", 5},    {"input", 6},   {"input", 7},
               {"constant", 8},   {"cast", 9},       {"conv2d", 10}, {"input", 11}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    cr_assert_eq(kiln_graph_create(ctx, "g", &g), KILN_OK);
    kiln_value x = kiln_input(g, "x", KILN_F32, 2, d23), r = {-1};
    int32_t ax[2] = {5, 0}, perm[2] = {0, 0};
    kiln_value xs[2] = {x, x};
    int64_t d7[1] = {7}, neg[2] = {2, -3}, huge[3] = {1000000, 1000000, 1000000};
    switch (cases[i].kind) {
      case 0: r = kiln_reduce_sum(g, x, 1, ax, 0); break;
      case 1: r = kiln_reduce_max(g, x, 2, (int32_t[]){-3, 0}, 0); break;
      case 2: r = kiln_softmax(g, x, 2); break;
      case 3: r = kiln_concat(g, 2, xs, -3); break;
      case 4: r = kiln_transpose(g, x, perm); break;
      case 5: r = kiln_reshape(g, x, 1, d7); break;
      case 6: r = kiln_input(g, "x2", KILN_F32, 9, huge); break;
      case 7: r = kiln_input(g, "x2", KILN_F32, 2, neg); break;
      case 8: r = kiln_constant(g, "c", KILN_F32, 3, huge, NULL); break;
      case 9: r = kiln_cast(g, x, (kiln_dtype)99); break;
      case 10: r = kiln_conv2d(g, x, x, NULL, NULL, 1); break;
      case 11: r = kiln_input(g, "x2", KILN_F32, 3, huge); break;
    }
    cr_assert_lt(r.id, 0, "case %zu (%s) built", i, cases[i].what);
    cr_assert_neq(kiln_graph_status(g), KILN_OK, "case %zu (%s): no sticky error", i, cases[i].what);
    const char *msg = kiln_graph_error(g);
    cr_assert(strstr(msg, cases[i].what) || strstr(msg, "x2") || strstr(msg, "'c'"),
              "case %zu: '%s' does not name the node (%s)", i, msg, cases[i].what);
    kiln_graph_destroy(g);
  }
  kiln_context_destroy(ctx);
}

/* kiln_version: "MAJOR.MINOR.PATCH", the same as the kiln tool's --version. */
Test(robust_api, version_is_major_minor_patch) {
  const char *v = kiln_version();
  cr_assert(v);
  int a, b, c;
  char rest;
  cr_expect_eq(sscanf(v, "%d.%d.%d%c", &a, &b, &c, &rest), 3, "version '%s'", v);
}

/* kiln_last_error_copy copies the message, cut to fit and NUL-terminated. */
Test(robust_api, last_error_copy_cuts_to_fit) {
  kiln_context *ctx = new_ctx();
  kiln_graph *g = NULL;
  cr_assert_neq(kiln_load_text(ctx, "/no/such/model.kir", &g), KILN_OK);
  char full[2048], small[8];
  size_t n = kiln_last_error_copy(ctx, full, sizeof full);
  cr_expect_str_eq(full, kiln_last_error(ctx));
  cr_expect_eq(n, strlen(full));
  kiln_last_error_copy(ctx, small, sizeof small);
  cr_expect_eq(strlen(small), sizeof small - 1);
  cr_expect(strncmp(small, full, sizeof small - 1) == 0);
  kiln_context_destroy(ctx);
}
