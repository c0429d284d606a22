/* test_verify.c - per-kernel verify mode (KILN_VERIFY / kiln_compile_options.verify): a
 * correct model runs and gives the interpreter's outputs; a kernel corrupted through the
 * driver's test hook (KILN_VERIFY_CORRUPT_KERNEL=k, read with the rest of the environment when
 * the context is created; it acts only in verify mode) fails
 * the run with KILN_ERR_INTERNAL and a message naming exactly that kernel, also when the
 * code comes from the compile cache; lowering records which graph node each kernel's
 * output buffer holds (-1 for im2col columns). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../driver/driver.h"

/* A GEMM, elementwise loops, a reduction and an i64 argmax (exact comparison). */
static const char *chain_text =
    "graph \"chain\" {\n"
    "  %0 = input f32[4,8] \"x\"\n"
    "  %1 = input f32[8,6] \"w\"\n"
    "  %2 = dot f32[4,6] (%0, %1) \"mm\"\n"
    "  %3 = exp f32[4,6] (%2) \"e\"\n"
    "  %4 = reduce_sum f32[4] (%3) {axes=[1], keepdims=0} \"s\"\n"
    "  %5 = argmax i64[4] (%2) {axis=1, keepdims=0} \"am\"\n"
    "  %6 = mul f32[4,6] (%3, %3) \"sq\"\n"
    "  output %4 \"sum\"\n"
    "  output %5 \"idx\"\n"
    "  output %6 \"sq\"\n"
    "}\n";

/* A 3x3 convolution with padding: lowered as an im2col loop and a GEMM. */
static const char *conv_text =
    "graph \"conv\" {\n"
    "  %0 = input f32[1,2,5,5] \"x\"\n"
    "  %1 = input f32[3,2,3,3] \"w\"\n"
    "  %2 = conv f32[1,3,5,5] (%0, %1) {strides=[1,1], dilations=[1,1], lo=[1,1], hi=[1,1], groups=1} \"c\"\n"
    "  %3 = exp f32[1,3,5,5] (%2) \"e\"\n"
    "  output %3 \"y\"\n"
    "}\n";

typedef struct fixture {
  kiln_context *ctx;
  kiln_graph *g;
  kiln_tensor in[2], out[3], ref[3];
  int n_in, n_out;
} fixture;

static void tensor_alloc(kiln_tensor *t, kiln_dtype dt, int32_t rank, const int64_t *dims) {
  memset(t, 0, sizeof *t);
  t->dtype = dt;
  t->rank = rank;
  int64_t n = 1;
  for (int i = 0; i < rank; i++) n *= (t->dims[i] = dims[i]);
  t->data = calloc((size_t)n * kiln_dtype_size(dt) + 1, 1);
  cr_assert(t->data);
}

static int64_t numel(const kiln_tensor *t) {
  int64_t n = 1;
  for (int i = 0; i < t->rank; i++) n *= t->dims[i];
  return n;
}

/* Parses text; inputs get small deterministic values; outputs and reference buffers are
 * allocated; ref holds the interpreter's outputs. cache_dir: "" for no cache. */
static void setup(fixture *f, const char *text, const char *cache_dir) {
  memset(f, 0, sizeof *f);
  kiln_context_options co = {.threads = 2, .cache_dir = cache_dir};
  cr_assert_eq(kiln_context_create(&co, &f->ctx), KILN_OK);
  cr_assert_eq(kiln_parse_text(f->ctx, text, &f->g), KILN_OK, "%s", kiln_last_error(f->ctx));
  f->n_in = kiln_graph_num_inputs(f->g);
  f->n_out = kiln_graph_num_outputs(f->g);
  for (int i = 0; i < f->n_in; i++) {
    kiln_dtype dt;
    int32_t rank;
    int64_t dims[8];
    cr_assert_eq(kiln_graph_input_info(f->g, i, NULL, &dt, &rank, dims), KILN_OK);
    tensor_alloc(&f->in[i], dt, rank, dims);
    for (int64_t j = 0; j < numel(&f->in[i]); j++)
      kiln_rt_set_f64(dt, f->in[i].data, j, (double)((j * 7 + i * 3) % 11 - 5) / 8.0);
  }
  for (int i = 0; i < f->n_out; i++) {
    kiln_dtype dt;
    int32_t rank;
    int64_t dims[8];
    cr_assert_eq(kiln_graph_output_info(f->g, i, NULL, &dt, &rank, dims), KILN_OK);
    tensor_alloc(&f->out[i], dt, rank, dims);
    tensor_alloc(&f->ref[i], dt, rank, dims);
  }
  cr_assert_eq(kiln_interpret(f->ctx, f->g, f->in, (size_t)f->n_in, f->ref, (size_t)f->n_out), KILN_OK, "%s",
               kiln_last_error(f->ctx));
}

static void teardown(fixture *f) {
  for (int i = 0; i < f->n_in; i++) free(f->in[i].data);
  for (int i = 0; i < f->n_out; i++) free(f->out[i].data), free(f->ref[i].data);
  kiln_graph_destroy(f->g);
  kiln_context_destroy(f->ctx);
}

static kiln_status compile_run(fixture *f, kiln_fusion_level fusion, int verify, kiln_exe_stats *stats) {
  kiln_compile_options o = {.fusion = fusion, .verify = verify};
  kiln_executable *e = NULL;
  kiln_status st = kiln_compile(f->ctx, f->g, &o, &e);
  cr_assert_eq(st, KILN_OK, "compile: %s", kiln_last_error(f->ctx));
  if (stats) kiln_executable_stats(e, stats);
  st = kiln_run(e, f->in, (size_t)f->n_in, f->out, (size_t)f->n_out);
  kiln_executable_destroy(e);
  return st;
}

static void expect_outputs_match(const fixture *f) {
  for (int i = 0; i < f->n_out; i++)
    for (int64_t j = 0; j < numel(&f->out[i]); j++) {
      double a = kiln_rt_get_f64(f->out[i].dtype, f->out[i].data, j);
      double b = kiln_rt_get_f64(f->ref[i].dtype, f->ref[i].data, j);
      cr_expect_float_eq(a, b, 1e-4 * (1 + fabs(b)), "output %d element %lld: %g vs %g", i, (long long)j, a, b);
    }
}

/* The kernel program of f's graph as kiln_compile builds it, with the lowered graph. */
static kiln_kprogram *lower(fixture *f, kiln_fusion_level fusion, kiln_graph **lowered) {
  kiln_compile_options o = {.fusion = fusion};
  kiln_kprogram *p = NULL;
  cr_assert_eq(kiln_driver_lower_graph(f->ctx, f->g, &o, NULL, &p, lowered), KILN_OK, "%s", kiln_last_error(f->ctx));
  return p;
}

/* The test hook as KILN_VERIFY_CORRUPT_KERNEL=k sets it when the context is created. */
static void set_corrupt(fixture *f, int k) { f->ctx->env.corrupt_kernel = k; }

Test(verify, correct_model_passes_at_every_fusion_level) {
  const kiln_fusion_level levels[] = {KILN_FUSION_NONE, KILN_FUSION_ELEMENTWISE, KILN_FUSION_FULL};
  for (int l = 0; l < 3; l++) {
    fixture f;
    setup(&f, chain_text, "");
    cr_expect_eq(compile_run(&f, levels[l], 1, NULL), KILN_OK, "fusion %d: %s", (int)levels[l], kiln_last_error(f.ctx));
    expect_outputs_match(&f);
    teardown(&f);
  }
}

Test(verify, kernels_record_the_node_their_buffer_holds) {
  fixture f;
  setup(&f, conv_text, "");
  kiln_graph *lg = NULL;
  kiln_kprogram *p = lower(&f, KILN_FUSION_NONE, &lg);
  cr_assert(lg);
  int packed = 0, with_node = 0;
  for (int32_t k = 0; k < p->n_kernels; k++) {
    const kiln_kernel *kn = &p->kernels[k];
    packed += kn->pack != NULL;
    cr_assert(kn->node >= 0 && kn->node < lg->n_nodes, "%s: node %d", kn->name, kn->node);
    const kiln_node *n = &lg->nodes[kn->node];
    cr_expect_eq(n->dtype, p->buffers[kn->out_buf].dtype, "%s", kn->name);
    cr_expect_eq(kiln_shape_numel(&n->shape), kiln_shape_numel(&p->buffers[kn->out_buf].shape), "%s", kn->name);
    with_node++;
  }
  cr_expect_eq(packed, 1, "the padded 3x3 conv packs its im2col tiles inside its GEMM kernel");
  cr_expect_geq(with_node, 2);
  kiln_ir_kprogram_destroy(p);
  kiln_ir_graph_destroy(lg);
  /* and the whole thing verifies */
  cr_expect_eq(compile_run(&f, KILN_FUSION_NONE, 1, NULL), KILN_OK, "%s", kiln_last_error(f.ctx));
  expect_outputs_match(&f);
  teardown(&f);
}

/* Corrupts each checked kernel in turn; the error must name that kernel and no other. */
static void expect_each_corruption_named(const char *text, kiln_fusion_level fusion, int min_checked) {
  fixture f;
  setup(&f, text, "");
  kiln_kprogram *p = lower(&f, fusion, NULL);
  int checked = 0;
  for (int32_t k = 0; k < p->n_kernels; k++) {
    const kiln_kernel *kn = &p->kernels[k];
    if (kn->node < 0) continue;
    set_corrupt(&f, k);
    kiln_status st = compile_run(&f, fusion, 1, NULL);
    const char *msg = kiln_last_error(f.ctx);
    cr_expect_eq(st, KILN_ERR_INTERNAL, "kernel %d (%s) corrupted, run gave %d: %s", k, kn->name, (int)st, msg);
    char want[256];
    snprintf(want, sizeof want, "kernel %d '%s'", k, kn->name);
    cr_expect(strstr(msg, want), "expected '%s' in: %s", want, msg);
    cr_expect(strstr(msg, "first differing element 0"), "%s", msg);
    cr_expect(kn->n_sources == 0 || strstr(msg, kn->sources[0]), "sources not named: %s", msg);
    checked++;
  }
  cr_expect_geq(checked, min_checked, "too few kernels to check");
  kiln_ir_kprogram_destroy(p);
  teardown(&f);
}

Test(verify, corrupted_kernel_is_named_unfused) { expect_each_corruption_named(chain_text, KILN_FUSION_NONE, 5); }
Test(verify, corrupted_kernel_is_named_fused) { expect_each_corruption_named(chain_text, KILN_FUSION_FULL, 3); }
Test(verify, corrupted_conv_gemm_is_named) { expect_each_corruption_named(conv_text, KILN_FUSION_NONE, 2); }

Test(verify, corruption_hook_acts_only_in_verify_mode) {
  fixture f;
  setup(&f, chain_text, "");
  set_corrupt(&f, 0);
  cr_expect_eq(compile_run(&f, KILN_FUSION_NONE, 0, NULL), KILN_OK, "%s", kiln_last_error(f.ctx));
  expect_outputs_match(&f);
  teardown(&f);
}

/* The environment is read when the context is created, and only then. */
Test(verify, env_var_turns_verify_on) {
  cr_assert_eq(setenv("KILN_VERIFY", "1", 1), 0);
  cr_assert_eq(setenv("KILN_VERIFY_CORRUPT_KERNEL", "1", 1), 0);
  fixture f;
  setup(&f, chain_text, "");
  cr_assert_eq(unsetenv("KILN_VERIFY"), 0);
  cr_assert_eq(unsetenv("KILN_VERIFY_CORRUPT_KERNEL"), 0);
  kiln_status st = compile_run(&f, KILN_FUSION_NONE, 0, NULL);
  cr_expect_eq(st, KILN_ERR_INTERNAL, "%s", kiln_last_error(f.ctx));
  cr_expect(strstr(kiln_last_error(f.ctx), "kernel 1 '"), "%s", kiln_last_error(f.ctx));
  teardown(&f);
  /* set after a context was created: that context never sees it */
  setup(&f, chain_text, "");
  cr_assert_eq(setenv("KILN_VERIFY", "1", 1), 0);
  cr_assert_eq(setenv("KILN_VERIFY_CORRUPT_KERNEL", "1", 1), 0);
  cr_expect_eq(compile_run(&f, KILN_FUSION_NONE, 0, NULL), KILN_OK, "%s", kiln_last_error(f.ctx));
  teardown(&f);
}

/* The step function is part of the cached object: a cache hit verifies kernel by kernel
 * too. */
Test(verify, works_from_the_compile_cache) {
  char dir[] = "/tmp/kiln_verify_cache_XXXXXX";
  cr_assert(mkdtemp(dir));
  fixture f;
  setup(&f, chain_text, dir);
  kiln_exe_stats s1, s2;
  cr_expect_eq(compile_run(&f, KILN_FUSION_NONE, 1, &s1), KILN_OK, "%s", kiln_last_error(f.ctx));
  cr_expect_eq(s1.cache_hit, 0);
  set_corrupt(&f, 2);
  kiln_status st = compile_run(&f, KILN_FUSION_NONE, 1, &s2);
  cr_expect_eq(s2.cache_hit, 1, "the second compile should hit the cache");
  cr_expect_eq(st, KILN_ERR_INTERNAL, "%s", kiln_last_error(f.ctx));
  cr_expect(strstr(kiln_last_error(f.ctx), "kernel 2 '"), "%s", kiln_last_error(f.ctx));
  teardown(&f);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  cr_expect_eq(system(cmd), 0);
}
