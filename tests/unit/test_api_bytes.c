/* test_api_bytes.c - the C entry points the Python package (python/kiln) is built on:
 * kiln_load_onnx_bytes gives the graph kiln_load_onnx gives from the same bytes (binds,
 * constant inputs, errors, external data refused by name), kiln_value_info describes
 * builder values, and kiln_fusion_report returns the report `kiln dump --fusion-report`
 * prints, as text or JSON, agreeing with kiln_executable_stats.
 *
 * Models are written by tests/unit/data/fe_models.py (python3 + onnx) into a temporary
 * folder; without python3/onnx the tests that need them are skipped with a reason. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln.h"
#include "test_gen_models.h"

TestSuite(api_bytes, .fini = gen_cleanup);

static void gen(const char *const *groups) { gen_models("bytes", "fe_models.py", groups); }

/* The bytes of gen_dir/file (free them). */
static void *slurp(const char *file, size_t *n) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", gen_dir, file);
  FILE *f = fopen(path, "rb");
  cr_assert(f, "cannot open %s", path);
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  void *buf = malloc((size_t)len + 1);
  cr_assert_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
  fclose(f);
  *n = (size_t)len;
  return buf;
}

static kiln_context *new_ctx(void) {
  kiln_context_options o = {.threads = 1, .cache_dir = ""};
  kiln_context *ctx = NULL;
  cr_assert_eq(kiln_context_create(&o, &ctx), KILN_OK);
  return ctx;
}

/* The textual IR of g without its first line (the graph's name: the file's stem when
 * loaded from a file, the model's graph name from memory). */
static char *body_text(kiln_context *ctx, const kiln_graph *g) {
  char *t = kiln_graph_to_text(ctx, g);
  cr_assert(t);
  char *nl = strchr(t, '\n');
  char *body = strdup(nl ? nl : t);
  kiln_free(ctx, t);
  return body;
}

static kiln_graph *load_file(kiln_context *ctx, const char *file, const kiln_load_options *lo) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", gen_dir, file);
  kiln_graph *g = NULL;
  cr_assert_eq(kiln_load_onnx(ctx, path, lo, &g), KILN_OK, "%s: %s", file, kiln_last_error(ctx));
  return g;
}

static kiln_graph *load_bytes(kiln_context *ctx, const char *file, const kiln_load_options *lo) {
  size_t n;
  void *data = slurp(file, &n);
  kiln_graph *g = NULL;
  kiln_status st = kiln_load_onnx_bytes(ctx, data, n, lo, &g);
  memset(data, 0xab, n); /* not kept: the graph must not point into the caller's buffer */
  free(data);
  cr_assert_eq(st, KILN_OK, "%s from memory: %s", file, kiln_last_error(ctx));
  return g;
}

static void same_graph(kiln_context *ctx, const char *file, const kiln_load_options *lo) {
  kiln_graph *a = load_file(ctx, file, lo), *b = load_bytes(ctx, file, lo);
  char *ta = body_text(ctx, a), *tb = body_text(ctx, b);
  cr_assert_str_eq(tb, ta, "%s: from memory\n%s\nfrom the file\n%s", file, tb, ta);
  free(ta);
  free(tb);
  kiln_graph_destroy(a);
  kiln_graph_destroy(b);
}

Test(api_bytes, from_memory_is_the_graph_from_the_file) {
  gen((const char *const[]){"mlp", "dims", "unsupported", NULL});
  kiln_context *ctx = new_ctx();
  same_graph(ctx, "mlp.onnx", NULL);
  const char *names[] = {"batch"};
  int64_t values[] = {5};
  kiln_load_options bind = {.n_bindings = 1, .binding_names = names, .binding_values = values};
  same_graph(ctx, "dims.onnx", &bind);
  kiln_graph *g = load_bytes(ctx, "dims.onnx", &bind);
  kiln_dtype dt;
  int32_t rank;
  int64_t dims[KILN_TENSOR_MAX_RANK];
  cr_assert_eq(kiln_graph_input_info(g, 0, NULL, &dt, &rank, dims), KILN_OK);
  cr_assert(rank == 2 && dims[0] == 5 && dims[1] == 4, "x is [%lld, %lld]", (long long)dims[0],
            (long long)dims[1]);
  kiln_graph_destroy(g);
  /* A constant input from memory: Reshape's shape known at load, no longer an input. */
  int64_t shape[2] = {4, 1};
  const char *cn[] = {"shape"};
  kiln_tensor cv[] = {{KILN_I64, 1, {2}, shape}};
  kiln_load_options frozen = {.n_constant_inputs = 1, .constant_input_names = cn, .constant_input_values = cv};
  same_graph(ctx, "datadep.onnx", &frozen);
  g = load_bytes(ctx, "datadep.onnx", &frozen);
  cr_assert_eq(kiln_graph_num_inputs(g), 1);
  cr_assert_eq(kiln_graph_output_info(g, 0, NULL, &dt, &rank, dims), KILN_OK);
  cr_assert(rank == 2 && dims[0] == 4 && dims[1] == 1);
  kiln_graph_destroy(g);
  kiln_context_destroy(ctx);
}

Test(api_bytes, errors_from_memory) {
  gen((const char *const[]){"unsupported", "external", NULL});
  kiln_context *ctx = new_ctx();
  kiln_graph *g = (kiln_graph *)1;
  cr_assert_eq(kiln_load_onnx_bytes(NULL, "x", 1, NULL, &g), KILN_ERR_INVALID_ARGUMENT);
  cr_assert_eq(kiln_load_onnx_bytes(ctx, NULL, 1, NULL, &g), KILN_ERR_INVALID_ARGUMENT);
  cr_assert(strstr(kiln_last_error(ctx), "kiln_load_onnx_bytes"), "%s", kiln_last_error(ctx));
  cr_assert_eq(kiln_load_onnx_bytes(ctx, "x", 1, NULL, NULL), KILN_ERR_INVALID_ARGUMENT);
  static const char garbage[] = "\x08\x07 this is not protobuf";
  g = (kiln_graph *)1;
  cr_assert_eq(kiln_load_onnx_bytes(ctx, garbage, sizeof garbage - 1, NULL, &g), KILN_ERR_PARSE);
  cr_assert_null(g);
  cr_assert(strstr(kiln_last_error(ctx), "<memory>"), "%s", kiln_last_error(ctx));
  cr_assert_eq(kiln_load_onnx_bytes(ctx, garbage, 0, NULL, &g), KILN_ERR_PARSE, "%s", kiln_last_error(ctx));
  size_t n;
  void *data = slurp("unsupported.onnx", &n);
  cr_assert_eq(kiln_load_onnx_bytes(ctx, data, n, NULL, &g), KILN_ERR_UNSUPPORTED);
  cr_assert(strstr(kiln_last_error(ctx), "Foo") && strstr(kiln_last_error(ctx), "FusedConv"), "%s",
            kiln_last_error(ctx));
  free(data);
  data = slurp("datadep.onnx", &n);
  cr_assert_neq(kiln_load_onnx_bytes(ctx, data, n, NULL, &g), KILN_OK);
  cr_assert(strstr(kiln_last_error(ctx), "depends on graph input 'shape'"), "%s", kiln_last_error(ctx));
  /* more constant inputs than the limit, or names without values */
  const char *cn[65];
  kiln_tensor cv[65] = {{0}};
  for (int i = 0; i < 65; i++) cn[i] = "shape";
  kiln_load_options lo = {.n_constant_inputs = 65, .constant_input_names = cn, .constant_input_values = cv};
  cr_assert_eq(kiln_load_onnx_bytes(ctx, data, n, &lo, &g), KILN_ERR_INVALID_ARGUMENT);
  cr_assert(strstr(kiln_last_error(ctx), "kiln_load_onnx_bytes: constant inputs: 65"), "%s", kiln_last_error(ctx));
  lo.n_constant_inputs = 1;
  lo.constant_input_values = NULL;
  cr_assert_eq(kiln_load_onnx_bytes(ctx, data, n, &lo, &g), KILN_ERR_INVALID_ARGUMENT);
  free(data);
  /* External weights need the model's folder: refused by name, not read from the cwd. */
  data = slurp("m/ext.onnx", &n);
  cr_assert_eq(kiln_load_onnx_bytes(ctx, data, n, NULL, &g), KILN_ERR_UNSUPPORTED);
  cr_assert(strstr(kiln_last_error(ctx), "w.bin") && strstr(kiln_last_error(ctx), "load from a file"), "%s",
            kiln_last_error(ctx));
  free(data);
  kiln_graph_destroy(load_file(ctx, "m/ext.onnx", NULL)); /* while the file loads */
  kiln_context_destroy(ctx);
}

Test(api_bytes, value_info_of_builder_values) {
  kiln_context *ctx = new_ctx();
  kiln_graph *g;
  cr_assert_eq(kiln_graph_create(ctx, "vi", &g), KILN_OK);
  int64_t d[3] = {2, 3, 4};
  kiln_value x = kiln_input(g, "x", KILN_F32, 3, d);
  int32_t ax[1] = {1};
  kiln_value s = kiln_reduce_sum(g, x, 1, ax, 0);
  kiln_value c = kiln_cast(g, s, KILN_I32);
  kiln_dtype dt = KILN_F64;
  int32_t rank = -1;
  int64_t dims[KILN_TENSOR_MAX_RANK] = {0};
  cr_assert_eq(kiln_value_info(g, x, &dt, &rank, dims), KILN_OK);
  cr_assert(dt == KILN_F32 && rank == 3 && dims[0] == 2 && dims[1] == 3 && dims[2] == 4);
  cr_assert_eq(kiln_value_info(g, c, &dt, &rank, dims), KILN_OK);
  cr_assert(dt == KILN_I32 && rank == 2 && dims[0] == 2 && dims[1] == 4);
  cr_assert_eq(kiln_value_info(g, kiln_scalar(g, KILN_F16, 1), &dt, &rank, NULL), KILN_OK);
  cr_assert(dt == KILN_F16 && rank == 0);
  cr_assert_eq(kiln_value_info(g, (kiln_value){-1}, &dt, &rank, dims), KILN_ERR_INVALID_ARGUMENT);
  cr_assert_eq(kiln_value_info(g, (kiln_value){9999}, &dt, &rank, dims), KILN_ERR_INVALID_ARGUMENT);
  cr_assert_eq(kiln_value_info(NULL, x, &dt, &rank, dims), KILN_ERR_INVALID_ARGUMENT);
  kiln_graph_destroy(g);
  kiln_context_destroy(ctx);
}

/* y = softmax(relu(x @ W)) over x f32[2, 8]: a GEMM with its epilogue and a row kernel. */
static kiln_graph *small_model(kiln_context *ctx) {
  kiln_graph *g;
  cr_assert_eq(kiln_graph_create(ctx, "small", &g), KILN_OK);
  int64_t xd[2] = {2, 8}, wd[2] = {8, 8};
  float w[64];
  for (int i = 0; i < 64; i++) w[i] = (float)((i * 7) % 11) / 11.0f - 0.5f;
  kiln_value x = kiln_input(g, "x", KILN_F32, 2, xd);
  kiln_value y = kiln_softmax(g, kiln_relu(g, kiln_matmul(g, x, kiln_constant(g, "W", KILN_F32, 2, wd, w))), -1);
  cr_assert_eq(kiln_output(g, "y", y), KILN_OK);
  cr_assert_eq(kiln_graph_status(g), KILN_OK, "%s", kiln_graph_error(g));
  return g;
}

/* The number after `"key": ` at its first occurrence in json, or -1. */
static long long json_int(const char *json, const char *key) {
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\": ", key);
  const char *p = strstr(json, pat);
  return p ? atoll(p + strlen(pat)) : -1;
}

Test(api_bytes, fusion_report_as_a_string) {
  kiln_context *ctx = new_ctx();
  kiln_graph *g = small_model(ctx);
  char *r = NULL;
  cr_assert_eq(kiln_fusion_report(ctx, g, NULL, 1, &r), KILN_OK, "%s", kiln_last_error(ctx));
  cr_assert(r && r[0] == '{', "%s", r ? r : "(null)");
  cr_assert(strstr(r, "\"model\": \"small\"") && strstr(r, "\"fusion\": \"full\""), "%s", r);
  kiln_executable *exe;
  cr_assert_eq(kiln_compile(ctx, g, NULL, &exe), KILN_OK, "%s", kiln_last_error(ctx));
  kiln_exe_stats s;
  cr_assert_eq(kiln_executable_stats(exe, &s), KILN_OK);
  const char *tot = strstr(r, "\"totals\"");
  cr_assert(tot, "%s", r);
  cr_assert_eq(json_int(tot, "kernels"), s.kernels, "%s", r);
  cr_assert_eq(json_int(tot, "flops"), s.flops, "%s", r);
  cr_assert_eq(json_int(r, "arena_bytes"), s.arena_bytes, "%s", r);
  kiln_executable_destroy(exe);
  kiln_free(ctx, r);
  /* Each level gets its own report; fusion none launches one kernel per op. */
  kiln_compile_options none = {.fusion = KILN_FUSION_NONE};
  cr_assert_eq(kiln_fusion_report(ctx, g, &none, 0, &r), KILN_OK, "%s", kiln_last_error(ctx));
  cr_assert(strstr(r, "fusion report for 'small' (fusion none, target cpu)") == r, "%s", r);
  cr_assert_eq(kiln_compile(ctx, g, &none, &exe), KILN_OK);
  cr_assert_eq(kiln_executable_stats(exe, &s), KILN_OK);
  char want[64];
  snprintf(want, sizeof want, "target cpu): %d kernels", (int)s.kernels);
  cr_assert(strstr(r, want), "'%s' not in %s", want, r);
  cr_assert_gt(s.kernels, 1);
  kiln_executable_destroy(exe);
  kiln_free(ctx, r);
  /* Errors: NULL arguments, a graph with a builder error. */
  r = (char *)1;
  cr_assert_eq(kiln_fusion_report(ctx, NULL, NULL, 1, &r), KILN_ERR_INVALID_ARGUMENT);
  cr_assert_eq(kiln_fusion_report(ctx, g, NULL, 1, NULL), KILN_ERR_INVALID_ARGUMENT);
  kiln_graph_destroy(g);
  cr_assert_eq(kiln_graph_create(ctx, "bad", &g), KILN_OK);
  int64_t d2[2] = {2, 3}, d4[2] = {4, 5};
  kiln_value y = kiln_matmul(g, kiln_input(g, "a", KILN_F32, 2, d2), kiln_input(g, "b", KILN_F32, 2, d4));
  kiln_output(g, "y", y);
  r = (char *)1;
  cr_assert_neq(kiln_fusion_report(ctx, g, NULL, 1, &r), KILN_OK);
  cr_assert_null(r);
  cr_assert(strstr(kiln_last_error(ctx), "matmul"), "%s", kiln_last_error(ctx));
  kiln_graph_destroy(g);
  kiln_context_destroy(ctx);
}
