/* test_e2e_gemm.c - the generated GEMM engine (codegen/gemm_gen.c) end to end: products
 * and channels-last convolutions with constant weights, over shapes that do not fill a
 * micro-tile or a panel, with and without a fused epilogue, batched, with transposed and
 * offset weights, and direct convolutions with padding, strides, dilations, 1 to 3
 * spatial dims and odd channel counts; each compiled with kiln_compile and compared with
 * kiln_interpret, and each checked to have been generated (not the library path). */
#include "test_e2e_util.h"

#include "../../codegen/llvm.h"

static kiln_context *ctx(void) {
  kiln_context *c;
  kiln_context_options o = {.cache_dir = ""};
  cr_assert_eq(kiln_context_create(&o, &c), KILN_OK);
  return c;
}

/* A constant of the given shape on the quarter grid (exact products and sums). */
static int32_t rand_const(kiln_graph *g, e2e_rng *r, int32_t rank, const int64_t *dims, const char *name) {
  kiln_shape s = kiln_shape_make(rank, dims);
  int64_t n = kiln_shape_numel(&s);
  float *d = malloc(sizeof(float) * (size_t)(n ? n : 1));
  for (int64_t i = 0; i < n; i++) d[i] = (float)e2e_int(r, -8, 8) / 4.0f;
  int32_t v = kiln_ir_constant(g, name, KILN_F32, &s, d);
  free(d);
  return v;
}

/* g compiled: by the JIT (cpu NULL), else exported for that CPU into dir and loaded. */
static kiln_executable *build(kiln_context *c, kiln_graph *g, const char *cpu, const char *dir, const char *what) {
  kiln_executable *e = NULL;
  if (!cpu) {
    cr_assert_eq(kiln_compile(c, g, NULL, &e), KILN_OK, "%s: %s", what, kiln_last_error(c));
    return e;
  }
  char so[256], h[256];
  snprintf(so, sizeof so, "%s/libgm_%s.so", dir, cpu);
  snprintf(h, sizeof h, "%s/gm_%s.h", dir, cpu);
  kiln_compile_options o = {.cpu = cpu};
  cr_assert_eq(kiln_export(c, g, &o, so, h, "gm"), KILN_OK, "%s (%s): %s", what, cpu, kiln_last_error(c));
  cr_assert_eq(kiln_load_library(c, so, &e), KILN_OK, "%s (%s): %s", what, cpu, kiln_last_error(c));
  return e;
}

/* Compiles g (for the host, or exported for a named cpu into dir), runs it on random
 * inputs, compares with the interpreter; returns how many of its GEMM kernels are
 * generated code. */
static int run_on(kiln_graph *g, uint64_t seed, const char *what, const char *cpu, const char *dir) {
  cr_assert_eq(g->diag.status, KILN_OK, "%s: builder: %s", what, g->diag.msg);
  kiln_context *c = ctx();
  kiln_executable *e = build(c, g, cpu, dir, what);
  e2e_rng r = {seed};
  kiln_tensor in[4], got[2], want[2];
  for (int32_t i = 0; i < g->n_inputs; i++) {
    const kiln_node *n = &g->nodes[g->inputs[i].node];
    e2e_tensor_alloc(&in[i], n->dtype, n->shape.rank, n->shape.dims);
    e2e_fill_random(&r, &in[i]);
  }
  for (int32_t i = 0; i < g->n_outputs; i++) {
    const kiln_node *n = &g->nodes[g->outputs[i].node];
    e2e_tensor_alloc(&got[i], n->dtype, n->shape.rank, n->shape.dims);
    e2e_tensor_alloc(&want[i], n->dtype, n->shape.rank, n->shape.dims);
  }
  cr_assert_eq(kiln_run(e, in, (size_t)g->n_inputs, got, (size_t)g->n_outputs), KILN_OK, "%s: %s", what,
               kiln_last_error(c));
  cr_assert_eq(kiln_interpret(c, g, in, (size_t)g->n_inputs, want, (size_t)g->n_outputs), KILN_OK, "%s: %s", what,
               kiln_last_error(c));
  for (int32_t i = 0; i < g->n_outputs; i++) {
    double gv = 0, rv = 0;
    int64_t at = e2e_first_mismatch(&got[i], &want[i], e2e_tol_for(KILN_F32), &gv, &rv);
    cr_expect_eq(at, -1, "%s: output %d element %lld: compiled %.9g, interpreter %.9g", what, i, (long long)at, gv, rv);
  }
  kiln_compile_options o = {.cpu = cpu};
  kiln_kprogram *p = NULL;
  cr_assert_eq(kiln_driver_lower(c, g, &o, NULL, &p), KILN_OK);
  int generated = 0;
  for (int32_t k = 0; k < p->n_kernels; k++)
    generated += p->kernels[k].kind == KILN_KERNEL_GEMM && p->kernels[k].sched.gemm_engine == KILN_GEMM_GENERATED;
  kiln_ir_kprogram_destroy(p);
  for (int32_t i = 0; i < g->n_inputs; i++) free(in[i].data);
  for (int32_t i = 0; i < g->n_outputs; i++) free(got[i].data), free(want[i].data);
  kiln_executable_destroy(e);
  kiln_context_destroy(c);
  return generated;
}

static int run_and_compare(kiln_graph *g, uint64_t seed, const char *what) { return run_on(g, seed, what, NULL, NULL); }

/* y = relu(x[batch?, m, k] @ w[k, n] + b) (epilogue) or x @ w; w transposed (stored
 * [n, k]) when trans. */
static kiln_graph *product(int64_t batch, int64_t m, int64_t k, int64_t n, bool epilogue, bool trans, uint64_t seed) {
  kiln_graph *g = kiln_ir_graph_create(NULL, "product");
  e2e_rng r = {seed};
  int64_t xd[3] = {batch, m, k}, wd[2] = {k, n}, wt[2] = {n, k}, bd[1] = {n};
  kiln_shape xs = batch ? kiln_shape_make(3, xd) : kiln_shape_make(2, xd + 1);
  int32_t x = kiln_ir_input(g, "x", KILN_F32, &xs, NULL);
  int32_t perm[2] = {1, 0};
  int32_t w = trans ? kiln_ir_permute(g, rand_const(g, &r, 2, wt, "wt"), perm, "w") : rand_const(g, &r, 2, wd, "w");
  int32_t y = kiln_ir_matmul(g, x, w, "mm");
  if (epilogue)
    y = kiln_ir_binary(g, KILN_OP_max, kiln_ir_binary(g, KILN_OP_add, y, rand_const(g, &r, 1, bd, "b"), "bias"),
                       kiln_ir_scalar(g, KILN_F32, 0, "zero"), "relu");
  kiln_ir_add_output(g, y, "y");
  return g;
}

Test(e2e_gemm, products_of_every_shape_class) {
  static const int64_t ms[] = {1, 5, 6, 7, 13, 64, 127}, ns[] = {1, 15, 16, 17, 63, 64, 65, 130}, ks[] = {1, 3, 100};
  uint64_t seed = 1;
  for (size_t a = 0; a < sizeof ms / sizeof ms[0]; a++)
    for (size_t b = 0; b < sizeof ns / sizeof ns[0]; b++)
      for (size_t c = 0; c < sizeof ks / sizeof ks[0]; c++) {
        bool epi = (a + b + c) % 2, trans = (a + c) % 3 == 0;
        char what[96];
        snprintf(what, sizeof what, "m %lld n %lld k %lld%s%s", (long long)ms[a], (long long)ns[b], (long long)ks[c],
                 epi ? " +bias+relu" : "", trans ? " (w transposed)" : "");
        kiln_graph *g = product(0, ms[a], ks[c], ns[b], epi, trans, seed++);
        cr_expect_eq(run_and_compare(g, seed, what), 1, "%s: not generated", what);
        kiln_ir_graph_destroy(g);
      }
}

/* Reductions longer than one block (kc: a panel's block fits L1), in blocks of equal
 * and of unequal size, every block after the first adding to what C holds. */
Test(e2e_gemm, reductions_in_blocks) {
  static const struct { int64_t m, n, k; } cases[] = {{13, 65, 301}, {5, 17, 1000}, {40, 130, 513}, {1, 64, 2049}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char what[64];
    snprintf(what, sizeof what, "m %lld n %lld k %lld", (long long)cases[i].m, (long long)cases[i].n,
             (long long)cases[i].k);
    kiln_graph *g = product(i % 2 ? 2 : 0, cases[i].m, cases[i].k, cases[i].n, i % 2 == 0, i == 2, 40 + i);
    cr_expect_eq(run_and_compare(g, 50 + i, what), 1, "%s: not generated", what);
    kiln_ir_graph_destroy(g);
  }
}

Test(e2e_gemm, batched_products_share_the_weights) {
  kiln_graph *g = product(3, 17, 40, 50, true, false, 7);
  cr_expect_eq(run_and_compare(g, 8, "batch 3 of 17x40x50"), 1);
  kiln_ir_graph_destroy(g);
  g = product(4, 2, 64, 300, false, true, 9); /* few rows: the panels split among tasks */
  cr_expect_eq(run_and_compare(g, 10, "batch 4 of 2x64x300"), 1);
  kiln_ir_graph_destroy(g);
}

/* relu(conv(x, w) + b) in NCHW, which the layout pass turns channels last; spatial rank
 * sd with the same window, stride, dilation and padding on every dim. */
static kiln_graph *conv(int32_t sd, int64_t ci, int64_t co, int64_t size, int64_t kw, int64_t stride, int64_t dil,
                        int64_t pad, uint64_t seed) {
  kiln_graph *g = kiln_ir_graph_create(NULL, "conv");
  e2e_rng r = {seed};
  int64_t xd[5] = {2, ci}, wd[5] = {co, ci}, bd[4] = {co}, st[3], di[3], lo[3];
  for (int32_t d = 0; d < sd; d++) xd[2 + d] = size, wd[2 + d] = kw, bd[1 + d] = 1, st[d] = stride, di[d] = dil, lo[d] = pad;
  kiln_shape xs = kiln_shape_make(2 + sd, xd);
  int32_t x = kiln_ir_input(g, "x", KILN_F32, &xs, NULL);
  int32_t y = kiln_ir_conv(g, x, rand_const(g, &r, 2 + sd, wd, "w"), st, di, lo, lo, 1, "conv");
  y = kiln_ir_binary(g, KILN_OP_add, y, rand_const(g, &r, 1 + sd, bd, "b"), "bias");
  kiln_ir_add_output(g, kiln_ir_binary(g, KILN_OP_max, y, kiln_ir_scalar(g, KILN_F32, 0, "zero"), "relu"), "y");
  return g;
}

/* Two convolutions in a row, so the layout pass runs them channels last (it does for 32
 * or more output channels on average) and the second reads the first's channels-last
 * output directly. */
static kiln_graph *conv_pair(int32_t sd, int64_t ci, int64_t co, int64_t size, int64_t kw, int64_t stride, int64_t dil,
                             int64_t pad, uint64_t seed) {
  kiln_graph *g = conv(sd, ci, co, size, kw, 1, 1, kw / 2, seed);
  e2e_rng r = {seed + 1};
  int64_t wd[5] = {co, co}, st[3], di[3], lo[3];
  for (int32_t d = 0; d < sd; d++) wd[2 + d] = kw, st[d] = stride, di[d] = dil, lo[d] = pad;
  int32_t y = g->outputs[0].node;
  y = kiln_ir_conv(g, y, rand_const(g, &r, 2 + sd, wd, "w2"), st, di, lo, lo, 1, "conv2");
  g->outputs[0].node = y;
  return g;
}

Test(e2e_gemm, direct_convolutions) {
  static const struct {
    int32_t sd;
    int64_t ci, co, size, k, stride, dil, pad;
  } cases[] = {
      {2, 16, 32, 8, 3, 1, 1, 1},  {2, 5, 33, 9, 3, 2, 1, 1},   {2, 32, 64, 7, 1, 2, 1, 0},
      {2, 8, 40, 11, 5, 1, 2, 4},  {2, 3, 33, 6, 3, 1, 1, 0},   {2, 64, 64, 5, 3, 1, 1, 2},
      {1, 12, 48, 20, 3, 1, 1, 1}, {1, 7, 37, 15, 4, 3, 1, 2},  {3, 4, 32, 5, 3, 1, 1, 1},
      {3, 6, 36, 6, 2, 2, 1, 0},   {2, 16, 130, 4, 3, 1, 1, 1}, {2, 40, 48, 13, 3, 2, 2, 3},
      {2, 8, 160, 5, 3, 1, 1, 1},  {2, 8, 256, 4, 3, 2, 1, 1}, /* the reduction split inside a tap */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char what[128];
    snprintf(what, sizeof what, "conv%dd ci %lld co %lld size %lld k %lld stride %lld dilation %lld pad %lld",
             cases[i].sd, (long long)cases[i].ci, (long long)cases[i].co, (long long)cases[i].size, (long long)cases[i].k,
             (long long)cases[i].stride, (long long)cases[i].dil, (long long)cases[i].pad);
    kiln_graph *g = conv_pair(cases[i].sd, cases[i].ci, cases[i].co, cases[i].size, cases[i].k, cases[i].stride,
                              cases[i].dil, cases[i].pad, 100 + i);
    cr_expect_geq(run_and_compare(g, 200 + i, what), 1, "%s: no generated GEMM", what);
    kiln_ir_graph_destroy(g);
  }
}

/* A first layer on few input channels (RGB) runs as a direct convolution whose taps along
 * the last spatial dim merge into one run of kw * ci contiguous inputs (the layout pass
 * pads the input along that dim instead of the conv); with dilation there it cannot, and
 * stays the library path. Each first layer is followed by a 1x1 conv (a region of two). */
Test(e2e_gemm, first_layers_merge_their_taps) {
  static const struct {
    int32_t sd;
    int64_t ci, co, size, k, stride, dil, pad;
    int generated;
  } cases[] = {
      {2, 3, 64, 23, 7, 2, 1, 3, 2}, {2, 3, 32, 17, 3, 2, 1, 1, 2}, {1, 2, 40, 30, 5, 1, 1, 2, 2},
      {3, 3, 32, 6, 3, 1, 1, 1, 2},  {2, 4, 33, 9, 2, 1, 1, 0, 2},  {2, 3, 32, 11, 3, 1, 2, 2, 1},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char what[128];
    snprintf(what, sizeof what, "first layer conv%dd ci %lld co %lld size %lld k %lld stride %lld dilation %lld pad %lld",
             cases[i].sd, (long long)cases[i].ci, (long long)cases[i].co, (long long)cases[i].size, (long long)cases[i].k,
             (long long)cases[i].stride, (long long)cases[i].dil, (long long)cases[i].pad);
    kiln_graph *g = conv(cases[i].sd, cases[i].ci, cases[i].co, cases[i].size, cases[i].k, cases[i].stride,
                         cases[i].dil, cases[i].pad, 300 + i);
    e2e_rng r = {400 + i};
    int64_t wd[5] = {cases[i].co, cases[i].co, 1, 1, 1}, one[3] = {1, 1, 1}, zero[3] = {0};
    g->outputs[0].node = kiln_ir_conv(g, g->outputs[0].node, rand_const(g, &r, 2 + cases[i].sd, wd, "w2"), one, one,
                                      zero, zero, 1, "conv2");
    cr_expect_eq(run_and_compare(g, 500 + i, what), cases[i].generated, "%s: generated GEMMs", what);
    kiln_ir_graph_destroy(g);
  }
}

/* Exported for named x86-64 CPUs, the engine takes their vector registers (x86-64: SSE,
 * 4 floats, 16 registers; x86-64-v3: AVX2, 8 floats, 16 registers): the portable paths,
 * run on this host (which has at least their features, checked) against the interpreter. */
#if defined(__x86_64__)
Test(e2e_gemm, named_cpus_get_their_own_micro_tiles) {
  static const struct {
    const char *cpu, *needs;
    int32_t bits, regs;
  } cpus[] = {{"x86-64", "sse2", 128, 16}, {"x86-64-v3", "avx2", 256, 16}, {"skylake-avx512", "avx512f", 512, 32}};
  char dir[] = "/tmp/kiln_gemm_XXXXXX", cmd[64];
  cr_assert(mkdtemp(dir));
  __builtin_cpu_init();
  for (size_t i = 0; i < sizeof cpus / sizeof cpus[0]; i++) {
    kiln_target_desc d;
    kiln_llvm_target_desc(NULL, cpus[i].cpu, &d);
    cr_expect(d.gemm_generated && d.simd_bits == cpus[i].bits && d.simd_regs == cpus[i].regs,
              "%s: generated %d, %d bits, %d registers", cpus[i].cpu, d.gemm_generated, d.simd_bits, d.simd_regs);
    int host_has = !strcmp(cpus[i].needs, "sse2") ? __builtin_cpu_supports("sse2")
                   : !strcmp(cpus[i].needs, "avx2") ? __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
                                                    : __builtin_cpu_supports("avx512f");
    if (!host_has) {
      printf("e2e_gemm: SKIPPED running the %s export (this CPU has no %s)\n", cpus[i].cpu, cpus[i].needs);
      continue;
    }
    char what[64];
    snprintf(what, sizeof what, "%s: 13x70x300 +bias+relu", cpus[i].cpu);
    kiln_graph *g = product(0, 13, 300, 70, true, false, 60 + i);
    cr_expect_eq(run_on(g, 70 + i, what, cpus[i].cpu, dir), 1, "%s: not generated", what);
    kiln_ir_graph_destroy(g);
    snprintf(what, sizeof what, "%s: conv 3x3 over 40 channels", cpus[i].cpu);
    g = conv_pair(2, 8, 40, 9, 3, 1, 1, 1, 80 + i);
    cr_expect_geq(run_on(g, 90 + i, what, cpus[i].cpu, dir), 1, "%s: no generated GEMM", what);
    kiln_ir_graph_destroy(g);
  }
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  cr_expect_eq(system(cmd), 0);
}
#endif
