/* test_fe_onnx.c - the ONNX frontend: loading (files, buffers, errors), initializers and
 * external data, symbolic dims, the one-error listing of unsupported ops, import-time
 * folding of shape chains, and every importer run through the reference interpreter
 * against values from ONNX's own reference evaluator.
 *
 * Models are written by tests/unit/data/fe_models.py (python3 + onnx) into a temporary
 * folder; without python3/onnx the tests are skipped with a reason. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../frontend/onnx.h"
#include "../../runtime/rt.h"
#include "test_gen_models.h"

static kiln_status fold_cb(void *user, kiln_graph *g, int32_t v, int32_t *out, kiln_diag *d) {
  (void)user;
  return kiln_rt_fold_value(g, v, out, d);
}

TestSuite(fe_onnx, .fini = gen_cleanup);

/* Writes the models of one group of fe_models.py into a fresh temporary folder. */
static void gen(const char *group) { gen_models("fe", "fe_models.py", (const char *const[]){group, NULL}); }

static void path_of(char *buf, size_t n, const char *file) { snprintf(buf, n, "%s/%s", gen_dir, file); }

static kiln_status load(const char *file, const kiln_load_options *lo, kiln_graph **g, kiln_diag *d) {
  char path[512];
  path_of(path, sizeof path, file);
  kiln_fe_options o = {.load = lo, .fold = fold_cb};
  memset(d, 0, sizeof *d);
  return kiln_fe_load_onnx(NULL, path, &o, g, d);
}

static kiln_graph *load_ok(const char *file) {
  kiln_graph *g = NULL;
  kiln_diag d;
  kiln_status st = load(file, NULL, &g, &d);
  cr_assert_eq(st, KILN_OK, "%s: %s", file, d.msg);
  cr_assert_not_null(g);
  cr_assert_eq(kiln_ir_verify(g, &d), KILN_OK, "%s: imported graph does not verify: %s", file, d.msg);
  return g;
}

static bool close_enough(kiln_dtype dt, double a, double b) {
  if (!kiln_dtype_is_float(dt)) return a == b;
  if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
  if (isinf(a) || isinf(b)) return a == b;
  return fabs(a - b) <= 1e-5 + 1e-4 * fabs(b);
}

/* Interprets g on <prefix>.in<i>.npy and compares with <prefix>.out<i>.npy. Returns "" or
 * what differs. */
static const char *run_and_compare(const kiln_graph *g, const char *prefix, int n_in, int n_out,
                                   char *msg, size_t msz) {
  kiln_rt_tensor in[8] = {0}, out[8] = {0}, want[8] = {0};
  kiln_diag d = {0};
  char path[512];
  msg[0] = 0;
  if (n_in != g->n_inputs || n_out != g->n_outputs) {
    snprintf(msg, msz, "%d inputs / %d outputs, the graph has %d / %d", n_in, n_out, g->n_inputs,
             g->n_outputs);
    return msg;
  }
  for (int i = 0; i < n_in; i++) {
    snprintf(path, sizeof path, "%s/%s.in%d.npy", gen_dir, prefix, i);
    cr_assert_eq(kiln_rt_npy_read(NULL, path, &in[i], &d), KILN_OK, "%s", d.msg);
  }
  for (int i = 0; i < n_out; i++) {
    snprintf(path, sizeof path, "%s/%s.out%d.npy", gen_dir, prefix, i);
    cr_assert_eq(kiln_rt_npy_read(NULL, path, &want[i], &d), KILN_OK, "%s", d.msg);
    const kiln_node *o = &g->nodes[g->outputs[i].node];
    out[i] = (kiln_rt_tensor){o->dtype, o->shape, NULL};
    out[i].data = calloc(1, kiln_rt_tensor_nbytes(&out[i]) + 1);
  }
  if (kiln_rt_interpret(g, in, n_in, out, n_out, &d) != KILN_OK) {
    snprintf(msg, msz, "interpreter: %.400s", d.msg);
  } else {
    for (int i = 0; i < n_out && !msg[0]; i++) {
      if (out[i].dtype != want[i].dtype || !kiln_shape_eq(&out[i].shape, &want[i].shape)) {
        snprintf(msg, msz, "output %d is %s rank %d, expected %s rank %d", i, kiln_dtype_name(out[i].dtype),
                 out[i].shape.rank, kiln_dtype_name(want[i].dtype), want[i].shape.rank);
        break;
      }
      int64_t n = kiln_shape_numel(&out[i].shape);
      for (int64_t j = 0; j < n; j++) {
        double a = kiln_rt_get_f64(out[i].dtype, out[i].data, j);
        double b = kiln_rt_get_f64(want[i].dtype, want[i].data, j);
        if (!close_enough(out[i].dtype, a, b)) {
          snprintf(msg, msz, "output %d element %lld: got %.8g, expected %.8g", i, (long long)j, a, b);
          break;
        }
      }
    }
  }
  for (int i = 0; i < n_in; i++) free(in[i].data);
  for (int i = 0; i < n_out; i++) free(out[i].data), free(want[i].data);
  return msg;
}

static int count_op(const kiln_graph *g, kiln_op op) {
  int n = 0;
  for (int i = 0; i < g->n_nodes; i++) n += g->nodes[i].op == op;
  return n;
}

/* ------------------------------------------------------------------ loading */
Test(fe_onnx, mlp_imports_with_shapes_and_computes) {
  gen("mlp");
  kiln_graph *g = load_ok("mlp.onnx");
  cr_assert_str_eq(g->name, "mlp");
  cr_assert_eq(g->n_inputs, 1);
  cr_assert_str_eq(g->inputs[0].name, "x");
  const kiln_node *x = &g->nodes[g->inputs[0].node];
  cr_assert(x->op == KILN_OP_input && x->dtype == KILN_F32 && x->shape.rank == 2 &&
            x->shape.dims[0] == 2 && x->shape.dims[1] == 4);
  cr_assert_eq(g->n_outputs, 1);
  cr_assert_str_eq(g->outputs[0].name, "y");
  const kiln_node *y = &g->nodes[g->outputs[0].node];
  cr_assert(y->shape.rank == 2 && y->shape.dims[0] == 2 && y->shape.dims[1] == 3);
  cr_assert_eq(count_op(g, KILN_OP_dot), 2);
  /* Primitives carry their ONNX node's name. */
  bool named_fc2 = false;
  for (int i = 0; i < g->n_nodes; i++)
    named_fc2 |= g->nodes[i].op == KILN_OP_dot && !strcmp(g->nodes[i].name, "fc2");
  cr_assert(named_fc2, "the Gemm's dot is not named after the ONNX node");
  char msg[512];
  cr_assert_str_empty(run_and_compare(g, "mlp", 1, 1, msg, sizeof msg), "%s", msg);
  kiln_ir_graph_destroy(g);
}

Test(fe_onnx, buffer_load_matches_file_load) {
  gen("mlp");
  char path[512];
  path_of(path, sizeof path, "mlp.onnx");
  FILE *f = fopen(path, "rb");
  cr_assert_not_null(f);
  static uint8_t buf[1 << 16];
  size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  kiln_graph *g = NULL;
  kiln_diag d = {0};
  kiln_fe_options o = {.fold = fold_cb};
  cr_assert_eq(kiln_fe_load_onnx_buffer(NULL, buf, n, gen_dir, &o, &g, &d), KILN_OK, "%s", d.msg);
  char msg[512];
  cr_assert_str_empty(run_and_compare(g, "mlp", 1, 1, msg, sizeof msg), "%s", msg);
  kiln_ir_graph_destroy(g);
}

Test(fe_onnx, shape_chain_folds_to_a_constant_reshape) {
  gen("chain");
  kiln_graph *g = load_ok("chain.onnx");
  /* Shape -> Gather -> Unsqueeze -> Concat folded away: input, the folded target, reshape. */
  cr_assert_eq(g->n_nodes, 2, "expected [input, reshape], got %d nodes", g->n_nodes);
  cr_assert_eq(g->nodes[0].op, KILN_OP_input);
  cr_assert_eq(g->nodes[1].op, KILN_OP_reshape);
  cr_assert_eq(g->n_consts, 0, "dead constants were kept");
  const kiln_node *y = &g->nodes[g->outputs[0].node];
  cr_assert(y->shape.rank == 2 && y->shape.dims[0] == 2 && y->shape.dims[1] == 12);
  char msg[512];
  cr_assert_str_empty(run_and_compare(g, "chain", 1, 1, msg, sizeof msg), "%s", msg);
  kiln_ir_graph_destroy(g);
}

Test(fe_onnx, missing_file_is_an_io_error_naming_the_path) {
  kiln_graph *g = (kiln_graph *)1;
  kiln_diag d = {0};
  kiln_fe_options o = {.fold = fold_cb};
  kiln_status st = kiln_fe_load_onnx(NULL, "/nonexistent/kiln/model.onnx", &o, &g, &d);
  cr_assert_eq(st, KILN_ERR_IO);
  cr_assert_null(g);
  cr_assert(strstr(d.msg, "/nonexistent/kiln/model.onnx"), "%s", d.msg);
}

Test(fe_onnx, garbage_is_a_parse_error) {
  char path[] = "/tmp/kiln_fe_garbage_XXXXXX";
  int fd = mkstemp(path);
  cr_assert(fd >= 0);
  static const char junk[] = "\xff\xff\xff\xff this is not a protobuf \x07\x07";
  cr_assert_eq(write(fd, junk, sizeof junk), (ssize_t)sizeof junk);
  close(fd);
  kiln_graph *g = NULL;
  kiln_diag d = {0};
  kiln_fe_options o = {.fold = fold_cb};
  kiln_status st = kiln_fe_load_onnx(NULL, path, &o, &g, &d);
  unlink(path);
  cr_assert_eq(st, KILN_ERR_PARSE, "%s", d.msg);
  cr_assert(strstr(d.msg, path), "%s", d.msg);
}

/* ------------------------------------------------------------------ refusals */
Test(fe_onnx, unsupported_ops_are_listed_in_one_error) {
  gen("unsupported");
  kiln_graph *g = NULL;
  kiln_diag d;
  cr_assert_eq(load("unsupported.onnx", NULL, &g, &d), KILN_ERR_UNSUPPORTED, "%s", d.msg);
  cr_assert_null(g);
  cr_assert(strstr(d.msg, "unsupported.onnx: unsupported ONNX ops (opset 13)"), "%s", d.msg);
  cr_assert(strstr(d.msg, "Foo (node \"n1\")"), "%s", d.msg);
  cr_assert(strstr(d.msg, "Bar (node \"n2\", \"n3\")"), "%s", d.msg);
  cr_assert(strstr(d.msg, "com.microsoft.FusedConv (node \"n4\")"), "%s", d.msg);
  cr_assert_null(strstr(d.msg, "Relu"), "a supported op is listed: %s", d.msg);
}

Test(fe_onnx, importer_refusals_name_the_node) {
  gen("unsupported");
  kiln_graph *g = NULL;
  kiln_diag d;
  cr_assert_eq(load("refused.onnx", NULL, &g, &d), KILN_ERR_UNSUPPORTED, "%s", d.msg);
  cr_assert(strstr(d.msg, "\"lpceil\"") && strstr(d.msg, "ceil_mode=1"), "%s", d.msg);
  cr_assert_eq(load("datadep.onnx", NULL, &g, &d), KILN_ERR_UNSUPPORTED, "%s", d.msg);
  cr_assert(strstr(d.msg, "data-dependent shape for dyn"), "%s", d.msg);
  /* The error names the graph input the value depends on, so callers can freeze it. */
  cr_assert(strstr(d.msg, "depends on graph input 'shape'"), "%s", d.msg);
  cr_assert_eq(load("baddtype.onnx", NULL, &g, &d), KILN_ERR_UNSUPPORTED, "%s", d.msg);
  cr_assert(strstr(d.msg, "'u32'") && strstr(d.msg, "uint32"), "%s", d.msg);
}

/* Every node's input and output counts are checked against its op's schema at the
 * model's opset (frontend/onnx_arity.inc), before any importer runs. */
Test(fe_onnx, input_and_output_counts_follow_the_schema) {
  gen("arity");
  static const struct {
    const char *file, *msg;
  } bad[] = {
      {"add3.onnx", "add3.onnx: node \"n1\" (Add): 3 inputs, Add takes 2"},
      /* A trailing empty name is an input left out: it does not count. */
      {"add_trailing_empty.onnx", "node \"n1\" (Add): 1 input, Add takes 2"},
      /* An empty name before a named one is an omitted input: refused where required. */
      {"add_first_empty.onnx", "node \"n1\" (Add): input 0 is empty, but Add requires it"},
      {"relu_two_outputs.onnx", "node \"n1\" (Relu): 2 outputs, Relu produces 1"},
      {"topk_one_output.onnx", "node \"n1\" (TopK): 1 output, TopK produces 2 (opset 11)"},
      /* The schema version in force at the model's opset decides. */
      {"clip_inputs_at_opset6.onnx", "node \"n1\" (Clip): 2 inputs, Clip takes 1 (opset 6)"},
      {"reshape_input_at_opset1.onnx", "(Reshape): 2 inputs, Reshape takes 1 (opset 1)"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    kiln_graph *g = (kiln_graph *)1;
    kiln_diag d;
    cr_assert_eq(load(bad[i].file, NULL, &g, &d), KILN_ERR_PARSE, "%s: %s", bad[i].file, d.msg);
    cr_assert_null(g);
    cr_assert(strstr(d.msg, bad[i].msg), "%s: want \"%s\", got: %s", bad[i].file, bad[i].msg, d.msg);
  }
  static const char *ok[] = {"clip_trailing_empty.onnx", "clip_middle_empty.onnx", "sum5.onnx",
                             "dropout_empty_mask.onnx", "resize11_empty_scales.onnx",
                             "gelu_before_its_opset.onnx", "newest_opset.onnx"};
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) kiln_ir_graph_destroy(load_ok(ok[i]));
}

Test(fe_onnx, opsets_out_of_range_are_refused) {
  gen("arity");
  kiln_graph *g = NULL;
  kiln_diag d;
  cr_assert_eq(load("opset99.onnx", NULL, &g, &d), KILN_ERR_UNSUPPORTED, "%s", d.msg);
  cr_assert_null(g);
  cr_assert(strstr(d.msg, "opset99.onnx: default-domain opset 99 is newer than the newest Kiln supports ("),
            "%s", d.msg);
  cr_assert_eq(load("opset0.onnx", NULL, &g, &d), KILN_ERR_PARSE, "%s", d.msg);
  cr_assert(strstr(d.msg, "opset0.onnx: default-domain opset 0 is invalid"), "%s", d.msg);
  cr_assert_eq(load("opset_negative.onnx", NULL, &g, &d), KILN_ERR_PARSE, "%s", d.msg);
  cr_assert(strstr(d.msg, "opset -3 is invalid"), "%s", d.msg);
}

/* frontend/onnx_arity.inc is what scripts/gen_onnx_arity.py writes from the op types in
 * onnx_table.c: an importer added without rerunning the script would go unchecked. */
Test(fe_onnx, arity_table_is_up_to_date) {
  if (system("python3 -c 'import onnx' >/dev/null 2>&1") != 0)
    cr_skip_test("python3 with the onnx package is not available");
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "python3 '%s/scripts/gen_onnx_arity.py' --check", KILN_SOURCE_DIR);
  int rc = system(cmd);
  if (WIFEXITED(rc) && WEXITSTATUS(rc) == 3)
    cr_skip_test("the installed onnx is not the version onnx_arity.inc was generated from");
  cr_assert_eq(rc, 0, "%s failed: rerun scripts/gen_onnx_arity.py", cmd);
}

Test(fe_onnx, frozen_inputs_become_constants) {
  gen("unsupported");
  int64_t shape[2] = {4, 1};
  kiln_const frozen = {.dtype = KILN_I64, .shape = {.rank = 1, .dims = {2}}, .data = shape, .name = "shape"};
  char path[512];
  path_of(path, sizeof path, "datadep.onnx");
  kiln_fe_options o = {.fold = fold_cb, .n_frozen = 1, .frozen = &frozen};
  kiln_graph *g = NULL;
  kiln_diag d = {0};
  cr_assert_eq(kiln_fe_load_onnx(NULL, path, &o, &g, &d), KILN_OK, "%s", d.msg);
  cr_assert_eq(g->n_inputs, 1, "the frozen input is still an input");
  char msg[512];
  cr_assert_str_empty(run_and_compare(g, "datadep", 1, 1, msg, sizeof msg), "%s", msg);
  kiln_ir_graph_destroy(g);
}

/* ------------------------------------------------------------------ external data */
Test(fe_onnx, external_data_loads_from_the_model_folder) {
  gen("external");
  kiln_graph *g = load_ok("m/ext.onnx");
  char msg[512];
  cr_assert_str_empty(run_and_compare(g, "m/ext", 1, 1, msg, sizeof msg), "%s", msg);
  kiln_ir_graph_destroy(g);
}

Test(fe_onnx, external_data_may_not_leave_the_model_folder) {
  gen("external");
  kiln_graph *g = NULL;
  kiln_diag d;
  const char *cases[][2] = {{"m/escape.onnx", "../outside.bin"},
                            {"m/absolute.onnx", "outside.bin"},
                            {"m/symlink.onnx", "link.bin"}};
  for (int i = 0; i < 3; i++) {
    kiln_status st = load(cases[i][0], NULL, &g, &d);
    cr_assert_neq(st, KILN_OK, "%s loaded", cases[i][0]);
    cr_assert_null(g);
    cr_assert(strstr(d.msg, "initializer 'w'") && strstr(d.msg, cases[i][1]), "%s: %s", cases[i][0], d.msg);
    cr_assert(strstr(d.msg, "outside") || strstr(d.msg, "leaves"), "%s: %s", cases[i][0], d.msg);
  }
}

/* ------------------------------------------------------------------ dims and tensors */
Test(fe_onnx, dim_params_are_bound_and_recorded) {
  gen("dims");
  const char *names[] = {"batch"};
  int64_t vals[] = {5};
  kiln_load_options lo = {.n_bindings = 1, .binding_names = names, .binding_values = vals};
  kiln_graph *g = NULL;
  kiln_diag d;
  cr_assert_eq(load("dims.onnx", &lo, &g, &d), KILN_OK, "%s", d.msg);
  const kiln_node *x = &g->nodes[g->inputs[0].node];
  cr_assert(x->shape.dims[0] == 5 && x->shape.dims[1] == 4);
  cr_assert_str_eq(g->inputs[0].dim_names[0], "batch");
  cr_assert_null(g->inputs[0].dim_names[1]);
  kiln_ir_graph_destroy(g);

  kiln_load_options dflt = {.default_dim = 3};
  cr_assert_eq(load("dims.onnx", &dflt, &g, &d), KILN_OK, "%s", d.msg);
  cr_assert_eq(g->nodes[g->inputs[0].node].shape.dims[0], 3);
  kiln_ir_graph_destroy(g);
  cr_assert_eq(load("dims.onnx", NULL, &g, &d), KILN_OK, "%s", d.msg);
  cr_assert_eq(g->nodes[g->inputs[0].node].shape.dims[0], 1);
  kiln_ir_graph_destroy(g);

  cr_assert_eq(load("unknown_dim.onnx", NULL, &g, &d), KILN_ERR_UNSUPPORTED, "%s", d.msg);
  cr_assert(strstr(d.msg, "input 'x'") && strstr(d.msg, "dim 0"), "%s", d.msg);
}

Test(fe_onnx, tensor_pb_reads_data_and_name) {
  gen("dims");
  char path[512];
  path_of(path, sizeof path, "t.pb");
  kiln_const c;
  kiln_diag d = {0};
  cr_assert_eq(kiln_fe_load_tensor_pb(NULL, path, &c, &d), KILN_OK, "%s", d.msg);
  cr_assert_eq(c.dtype, KILN_I32);
  cr_assert(c.shape.rank == 2 && c.shape.dims[0] == 2 && c.shape.dims[1] == 3);
  cr_assert_str_eq(c.name, "t");
  for (int i = 0; i < 6; i++) cr_assert_eq(((int32_t *)c.data)[i], i);
  kiln_ir_free(kiln_ir_default_allocator(), c.data);
}

/* ------------------------------------------------------------------ importers */
Test(fe_onnx, importers_match_the_onnx_reference, .timeout = 120) {
  gen("ops");
  char path[512], line[256], msg[512], fails[8192] = "";
  path_of(path, sizeof path, "ops.txt");
  FILE *f = fopen(path, "r");
  cr_assert_not_null(f);
  int n_cases = 0, n_fail = 0;
  while (fgets(line, sizeof line, f)) {
    char name[128];
    int n_in, n_out;
    if (sscanf(line, "%127s %d %d", name, &n_in, &n_out) != 3) continue;
    n_cases++;
    char file[160];
    snprintf(file, sizeof file, "%s.onnx", name);
    kiln_graph *g = NULL;
    kiln_diag d;
    const char *why = msg;
    if (load(file, NULL, &g, &d) != KILN_OK) {
      snprintf(msg, sizeof msg, "import: %.400s", d.msg);
    } else if (kiln_ir_verify(g, &d) != KILN_OK) {
      snprintf(msg, sizeof msg, "verify: %.400s", d.msg);
    } else {
      why = run_and_compare(g, name, n_in, n_out, msg, sizeof msg);
    }
    if (why[0]) {
      n_fail++;
      size_t len = strlen(fails);
      snprintf(fails + len, sizeof fails - len, "\n  %s: %s", name, why);
    }
    kiln_ir_graph_destroy(g);
  }
  fclose(f);
  cr_assert_gt(n_cases, 100);
  cr_assert_eq(n_fail, 0, "%d of %d importer cases differ:%s", n_fail, n_cases, fails);
}
