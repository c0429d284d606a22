/* test_err_index.c - the run-time error channel from generated code to the API: an index
 * outside [-dim, dim) in an input tensor of gather, gather_elements or scatter makes
 * kiln_run fail with KILN_ERR_INVALID_ARGUMENT and a message naming the node and the
 * kernel (JIT, KILN_VERIFY's per-kernel path, and an AOT library through kiln_export +
 * kiln_load_library), never a silent clamped or zero-filled answer; in-range indices
 * (negative ones included) match the interpreter; a constant out-of-range index is a
 * compile-time error naming the node; the CUDA renderer emits the check and NVRTC
 * compiles it. The compile cache is off so each compile exercises codegen. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../driver/driver.h"
#ifdef KILN_HAVE_CUDA
#include "../../cuda/cuda.h"
#endif

/* data f32[4,3], indices i64[2] from an input, gather along axis 0 -> [2,3], then exp
 * (fused into the same kernel as the gather). */
static const char *gather_text =
    "graph \"gth\" {\n"
    "  %0 = input f32[4,3] \"data\"\n"
    "  %1 = input i64[2] \"idx\"\n"
    "  %2 = gather f32[2,3] (%0, %1) {axis=0} \"Gather_3\"\n"
    "  %3 = exp f32[2,3] (%2) \"Exp_4\"\n"
    "  output %3 \"y\"\n"
    "}\n";

/* gather_elements along axis 1: data f32[2,3], indices i32[2,2] -> [2,2]. */
static const char *gather_elements_text =
    "graph \"gel\" {\n"
    "  %0 = input f32[2,3] \"data\"\n"
    "  %1 = input i32[2,2] \"idx\"\n"
    "  %2 = gather_elements f32[2,2] (%0, %1) {axis=1} \"GatherElements_7\"\n"
    "  output %2 \"y\"\n"
    "}\n";

/* ScatterElements (no reduction) along axis 0: data f32[3], indices i64[2], updates f32[2]. */
static const char *scatter_text =
    "graph \"sct\" {\n"
    "  %0 = input f32[3] \"data\"\n"
    "  %1 = input i64[2] \"idx\"\n"
    "  %2 = input f32[2] \"upd\"\n"
    "  %3 = scatter f32[3] (%0, %1, %2) {axis=0, kind=0} \"ScatterElements_9\"\n"
    "  output %3 \"y\"\n"
    "}\n";

/* A constant index 5 into a dim of 4. */
static const char *const_bad_text =
    "graph \"cbad\" {\n"
    "  %0 = input f32[4,3] \"data\"\n"
    "  %1 = constant i64[2] \"cidx\" [1, 5]\n"
    "  %2 = gather f32[2,3] (%0, %1) {axis=0} \"Gather_const\"\n"
    "  output %2 \"y\"\n"
    "}\n";

/* Constant indices in range, negative included: no run-time check is needed. */
static const char *const_ok_text =
    "graph \"cok\" {\n"
    "  %0 = input f32[4,3] \"data\"\n"
    "  %1 = constant i64[2] \"cidx\" [-4, 3]\n"
    "  %2 = gather f32[2,3] (%0, %1) {axis=0} \"Gather_const\"\n"
    "  %3 = neg f32[2,3] (%2) \"Neg\"\n"
    "  output %3 \"y\"\n"
    "}\n";

typedef struct fx {
  kiln_context *ctx;
  kiln_graph *g;
  kiln_tensor in[3], out[1], ref[1];
  int n_in;
} fx;

static int64_t numel(const kiln_tensor *t) {
  int64_t n = 1;
  for (int i = 0; i < t->rank; i++) n *= t->dims[i];
  return n;
}

static void setup(fx *f, const char *text) {
  memset(f, 0, sizeof *f);
  kiln_context_options co = {.threads = 2, .cache_dir = ""};
  cr_assert_eq(kiln_context_create(&co, &f->ctx), KILN_OK);
  cr_assert_eq(kiln_parse_text(f->ctx, text, &f->g), KILN_OK, "%s", kiln_last_error(f->ctx));
  f->n_in = kiln_graph_num_inputs(f->g);
  for (int i = 0; i < f->n_in + 2; i++) {
    kiln_tensor *t = i < f->n_in ? &f->in[i] : i == f->n_in ? &f->out[0] : &f->ref[0];
    kiln_dtype dt;
    int32_t rank;
    int64_t dims[8];
    if (i < f->n_in) cr_assert_eq(kiln_graph_input_info(f->g, i, NULL, &dt, &rank, dims), KILN_OK);
    else cr_assert_eq(kiln_graph_output_info(f->g, 0, NULL, &dt, &rank, dims), KILN_OK);
    memset(t, 0, sizeof *t);
    t->dtype = dt;
    t->rank = rank;
    memcpy(t->dims, dims, sizeof(int64_t) * (size_t)rank);
    t->data = calloc((size_t)numel(t) * kiln_dtype_size(dt) + 1, 1);
    cr_assert(t->data);
    if (i < f->n_in && kiln_dtype_is_float(dt))
      for (int64_t j = 0; j < numel(t); j++) kiln_rt_set_f64(dt, t->data, j, (double)(j % 7) / 4.0 - 0.5);
  }
}

static void teardown(fx *f) {
  for (int i = 0; i < f->n_in; i++) free(f->in[i].data);
  free(f->out[0].data);
  free(f->ref[0].data);
  kiln_graph_destroy(f->g);
  kiln_context_destroy(f->ctx);
}

static void set_idx(fx *f, int which, const int64_t *v) {
  kiln_tensor *t = &f->in[which];
  for (int64_t j = 0; j < numel(t); j++) kiln_rt_set_i64(t->dtype, t->data, j, v[j]);
}

/* The executable's output equals the interpreter's (bitwise: gathers copy values). */
static void expect_matches_interpreter(fx *f, kiln_executable *e, const char *what) {
  cr_assert_eq(kiln_run(e, f->in, (size_t)f->n_in, f->out, 1), KILN_OK, "%s: %s", what, kiln_last_error(f->ctx));
  cr_assert_eq(kiln_interpret(f->ctx, f->g, f->in, (size_t)f->n_in, f->ref, 1), KILN_OK, "%s", kiln_last_error(f->ctx));
  for (int64_t j = 0; j < numel(&f->out[0]); j++)
    cr_expect_eq(kiln_rt_get_f64(f->out[0].dtype, f->out[0].data, j), kiln_rt_get_f64(f->ref[0].dtype, f->ref[0].data, j),
                 "%s: element %lld", what, (long long)j);
}

/* kiln_run fails with KILN_ERR_INVALID_ARGUMENT and a message holding every needle. */
static void expect_index_error(fx *f, kiln_executable *e, const char *what, const char *const *needles) {
  kiln_status st = kiln_run(e, f->in, (size_t)f->n_in, f->out, 1);
  const char *msg = kiln_last_error(f->ctx);
  cr_assert_eq(st, KILN_ERR_INVALID_ARGUMENT, "%s: kiln_run returned %d (%s)", what, (int)st, msg);
  for (int i = 0; needles[i]; i++) cr_expect(strstr(msg, needles[i]) != NULL, "%s: '%s' not in: %s", what, needles[i], msg);
  /* the interpreter refuses the same inputs */
  cr_expect_neq(kiln_interpret(f->ctx, f->g, f->in, (size_t)f->n_in, f->ref, 1), KILN_OK, "%s: the interpreter accepted", what);
}

static kiln_executable *compile(fx *f, bool verify) {
  kiln_compile_options o = {0};
  o.verify = verify;
  kiln_executable *e = NULL;
  cr_assert_eq(kiln_compile(f->ctx, f->g, &o, &e), KILN_OK, "%s", kiln_last_error(f->ctx));
  return e;
}

static const char *const gather_needles[] = {"index out of range", "gather", "'Gather_3'", "[-4, 4)", "kernel k", NULL};

Test(err, gather_jit_in_range_and_out_of_range) {
  fx f;
  setup(&f, gather_text);
  kiln_executable *e = compile(&f, false);
  int64_t ok[2] = {3, -4}, hi[2] = {1, 4}, lo[2] = {-5, 0};
  set_idx(&f, 1, ok);
  expect_matches_interpreter(&f, e, "in range");
  set_idx(&f, 1, hi);
  expect_index_error(&f, e, "index 4 of dim 4", gather_needles);
  set_idx(&f, 1, lo);
  expect_index_error(&f, e, "index -5 of dim 4", gather_needles);
  /* the error word is per run: a good run after a bad one is fine again */
  set_idx(&f, 1, ok);
  expect_matches_interpreter(&f, e, "in range after an error");
  kiln_executable_destroy(e);
  teardown(&f);
}

/* KILN_VERIFY's per-kernel path: the interpreter on the optimized graph refuses first,
 * naming the node; either way the run fails with KILN_ERR_INVALID_ARGUMENT. */
Test(err, gather_verify_mode) {
  fx f;
  setup(&f, gather_text);
  kiln_executable *e = compile(&f, true);
  int64_t ok[2] = {0, -1}, hi[2] = {9, 0};
  set_idx(&f, 1, ok);
  expect_matches_interpreter(&f, e, "verify, in range");
  set_idx(&f, 1, hi);
  const char *const needles[] = {"Gather_3", NULL};
  expect_index_error(&f, e, "verify, out of range", needles);
  kiln_executable_destroy(e);
  teardown(&f);
}

Test(err, gather_elements_jit) {
  fx f;
  setup(&f, gather_elements_text);
  kiln_executable *e = compile(&f, false);
  int64_t ok[4] = {2, -3, 0, 1}, hi[4] = {0, 1, 3, 2}, lo[4] = {0, -4, 1, 1};
  set_idx(&f, 1, ok);
  expect_matches_interpreter(&f, e, "in range");
  const char *const needles[] = {"index out of range", "gather_elements", "'GatherElements_7'", "[-3, 3)", NULL};
  set_idx(&f, 1, hi);
  expect_index_error(&f, e, "index 3 of dim 3", needles);
  set_idx(&f, 1, lo);
  expect_index_error(&f, e, "index -4 of dim 3", needles);
  kiln_executable_destroy(e);
  teardown(&f);
}

Test(err, scatter_bad_index_is_an_error_not_zeros) {
  fx f;
  setup(&f, scatter_text);
  kiln_executable *e = compile(&f, false);
  int64_t ok[2] = {2, -3}, bad[2] = {0, 3};
  set_idx(&f, 1, ok);
  expect_matches_interpreter(&f, e, "in range");
  const char *const needles[] = {"index out of range", "scatter", "'ScatterElements_9'", "[-3, 3)", NULL};
  set_idx(&f, 1, bad);
  expect_index_error(&f, e, "scatter index 3 of dim 3", needles);
  kiln_executable_destroy(e);
  teardown(&f);
}

Test(err, constant_out_of_range_index_fails_at_compile_time) {
  fx f;
  setup(&f, const_bad_text);
  kiln_executable *e = NULL;
  kiln_status st = kiln_compile(f.ctx, f.g, NULL, &e);
  const char *msg = kiln_last_error(f.ctx);
  cr_assert_eq(st, KILN_ERR_INVALID_ARGUMENT, "compile returned %d: %s", (int)st, msg);
  cr_expect(strstr(msg, "'Gather_const'") && strstr(msg, "5") && strstr(msg, "[-4, 4)"), "%s", msg);
  cr_expect_null(e);
  teardown(&f);
}

/* Constant indices in range need no run-time check: the program has no CHECK. */
Test(err, constant_in_range_indices_have_no_check) {
  fx f;
  setup(&f, const_ok_text);
  kiln_kprogram *p = NULL;
  cr_assert_eq(kiln_driver_lower(f.ctx, f.g, NULL, NULL, &p), KILN_OK, "%s", kiln_last_error(f.ctx));
  for (int32_t k = 0; k < p->n_kernels; k++)
    for (int32_t i = 0; p->kernels[k].kind == KILN_KERNEL_LOOP && i < p->kernels[k].n_kx; i++)
      cr_expect_neq(p->kernels[k].kx[i].kind, KILN_KX_CHECK, "kernel %s has a CHECK", p->kernels[k].name);
  kiln_ir_kprogram_destroy(p);
  kiln_executable *e = compile(&f, false);
  expect_matches_interpreter(&f, e, "constant indices");
  kiln_executable_destroy(e);
  teardown(&f);
}

/* The same through an exported library: run() returns 3, which loads as a clear error. */
static void aot_case(const char *text, int which, const int64_t *good, const int64_t *bad, const char *tag) {
  fx f;
  setup(&f, text);
  char so[256], hdr[256];
  snprintf(so, sizeof so, "/tmp/kiln_err_%s_%ld.so", tag, (long)getpid());
  snprintf(hdr, sizeof hdr, "/tmp/kiln_err_%s_%ld.h", tag, (long)getpid());
  cr_assert_eq(kiln_export(f.ctx, f.g, NULL, so, hdr, "errm"), KILN_OK, "%s", kiln_last_error(f.ctx));
  /* the header documents code 3 */
  FILE *h = fopen(hdr, "r");
  cr_assert(h);
  char buf[16384];
  size_t n = fread(buf, 1, sizeof buf - 1, h);
  buf[n] = 0;
  fclose(h);
  cr_expect(strstr(buf, "3 an index in the input data is out of range"), "header RETURN CODES lack code 3");
  kiln_executable *e = NULL;
  cr_assert_eq(kiln_load_library(f.ctx, so, &e), KILN_OK, "%s", kiln_last_error(f.ctx));
  set_idx(&f, which, good);
  expect_matches_interpreter(&f, e, "library, in range");
  set_idx(&f, which, bad);
  const char *const needles[] = {"an index in the input data is out of range", NULL};
  expect_index_error(&f, e, "library, out of range", needles);
  set_idx(&f, which, good);
  expect_matches_interpreter(&f, e, "library, in range again");
  kiln_executable_destroy(e);
  unlink(so);
  unlink(hdr);
  teardown(&f);
}

Test(err, gather_aot_library) {
  int64_t ok[2] = {3, -4}, bad[2] = {-5, 0};
  aot_case(gather_text, 1, ok, bad, "g");
}

Test(err, scatter_aot_library) {
  int64_t ok[2] = {2, -3}, bad[2] = {7, 0};
  aot_case(scatter_text, 1, ok, bad, "s");
}

/* The CUDA backend renders the check (an atomicCAS on the error word in the table's slot
 * past the buffers) and NVRTC compiles it; running it needs a GPU (test_cuda_backend). */
Test(err, cuda_renders_and_compiles_the_check) {
#ifndef KILN_HAVE_CUDA
  cr_skip_test("built without CUDA");
#else
  fx f;
  setup(&f, gather_text);
  kiln_compile_options o = {0};
  o.target = KILN_TARGET_CUDA;
  kiln_kprogram *p = NULL;
  cr_assert_eq(kiln_driver_lower(f.ctx, f.g, &o, NULL, &p), KILN_OK, "%s", kiln_last_error(f.ctx));
  kiln_diag d = {0};
  char *src = NULL;
  cr_assert_eq(kiln_cuda_render(p, &src, &d), KILN_OK, "%s", d.msg);
  char want[64];
  snprintf(want, sizeof want, "atomicCAS((int *)bufs[%d], 0, ", p->n_buffers);
  cr_expect(strstr(src, want) != NULL, "no error-word check in:\n%s", src);
  if (kiln_cuda_nvrtc_available()) {
    void *img = NULL;
    size_t n = 0;
    cr_expect_eq(kiln_cuda_compile(p->alloc, src, "sm_90", false, &img, &n, &d), KILN_OK, "%s", d.msg);
    kiln_ir_free(p->alloc, img);
  }
  kiln_ir_free(p->alloc, src);
  kiln_ir_kprogram_destroy(p);
  teardown(&f);
#endif
}
