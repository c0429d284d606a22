/* test_e2e_narrow.c - f16 and bf16 graphs compiled at every fusion level agree with the
 * reference interpreter: every node's result is rounded to its dtype (ONNX semantics,
 * and what the interpreter and a kernel boundary do), also inside a fused kernel, which
 * computes narrow floats in f32 registers.
 *
 * Two kinds of check:
 *  - arithmetic (add, mul, div, abs, dot, sum/avg pool, reduce_sum) on inputs whose
 *    products and sums f32 holds exactly: an f32 result correctly rounded and rounded
 *    again to f16/bf16 is the correctly rounded result (24 >= 2p + 2 bits for + - * /),
 *    so compiled and interpreted outputs must agree bit for bit. A value left unrounded
 *    between two nodes shows up as a different last bit.
 *  - the differential fuzzer's failures (test_e2e_random seeds 32701 and 91481), shrunk:
 *    transcendental chains where an unrounded intermediate is amplified past the
 *    fuzzer's tolerance of the dtype. */
#include "test_e2e_util.h"

#define MAX_IO 4

typedef struct fixture {
  kiln_context *ctx;
  kiln_graph *g;
  int32_t n_in, n_out;
  kiln_tensor in[MAX_IO], ref[MAX_IO], out[MAX_IO];
} fixture;

/* Parses text; input i element j gets a quarter-grid value in [-4, 4] (every one of the
 * 33 values over 33 consecutive elements); ref holds the interpreter's outputs. */
static void setup(fixture *f, const char *text) {
  memset(f, 0, sizeof *f);
  kiln_context_options o = {.threads = 2, .cache_dir = ""};
  cr_assert_eq(kiln_context_create(&o, &f->ctx), KILN_OK);
  cr_assert_eq(kiln_parse_text(f->ctx, text, &f->g), KILN_OK, "%s", kiln_last_error(f->ctx));
  f->n_in = kiln_graph_num_inputs(f->g);
  f->n_out = kiln_graph_num_outputs(f->g);
  cr_assert(f->n_in <= MAX_IO && f->n_out <= MAX_IO);
  for (int i = 0; i < f->n_in; i++) {
    kiln_dtype dt;
    int32_t rank;
    int64_t dims[KILN_TENSOR_MAX_RANK];
    cr_assert_eq(kiln_graph_input_info(f->g, i, NULL, &dt, &rank, dims), KILN_OK);
    e2e_tensor_alloc(&f->in[i], dt, rank, dims);
    for (int64_t j = 0; j < e2e_numel(&f->in[i]); j++)
      kiln_rt_set_f64(dt, f->in[i].data, j, (double)((j * 7 + i * 5) % 33 - 16) / 4.0);
  }
  for (int i = 0; i < f->n_out; i++) {
    kiln_dtype dt;
    int32_t rank;
    int64_t dims[KILN_TENSOR_MAX_RANK];
    cr_assert_eq(kiln_graph_output_info(f->g, i, NULL, &dt, &rank, dims), KILN_OK);
    e2e_tensor_alloc(&f->ref[i], dt, rank, dims);
    e2e_tensor_alloc(&f->out[i], dt, rank, dims);
  }
  cr_assert_eq(kiln_interpret(f->ctx, f->g, f->in, (size_t)f->n_in, f->ref, (size_t)f->n_out), KILN_OK, "%s",
               kiln_last_error(f->ctx));
}

static void teardown(fixture *f) {
  for (int i = 0; i < f->n_in; i++) free(f->in[i].data);
  for (int i = 0; i < f->n_out; i++) free(f->ref[i].data), free(f->out[i].data);
  kiln_graph_destroy(f->g);
  kiln_context_destroy(f->ctx);
}

static const char *fusion_name(kiln_fusion_level l) {
  return l == KILN_FUSION_NONE ? "none" : l == KILN_FUSION_ELEMENTWISE ? "elementwise" : "full";
}

/* Compiles and runs text at every fusion level; every output within tol of the
 * interpreter's ({0, 0}: bit for bit). */
static void expect_matches_interpreter(const char *text, e2e_tol tol) {
  static const kiln_fusion_level levels[] = {KILN_FUSION_NONE, KILN_FUSION_ELEMENTWISE, KILN_FUSION_FULL};
  fixture f;
  setup(&f, text);
  for (int l = 0; l < 3; l++) {
    kiln_compile_options co = {.fusion = levels[l]};
    kiln_executable *exe = NULL;
    cr_assert_eq(kiln_compile(f.ctx, f.g, &co, &exe), KILN_OK, "fusion %s: %s", fusion_name(levels[l]),
                 kiln_last_error(f.ctx));
    cr_assert_eq(kiln_run(exe, f.in, (size_t)f.n_in, f.out, (size_t)f.n_out), KILN_OK, "%s", kiln_last_error(f.ctx));
    for (int i = 0; i < f.n_out; i++) {
      double got, want;
      int64_t at = e2e_first_mismatch(&f.out[i], &f.ref[i], tol, &got, &want);
      cr_expect(at < 0, "fusion %s, output %d (%s), element %lld: got %.9g, the interpreter %.9g", fusion_name(levels[l]),
                i, kiln_dtype_name(f.ref[i].dtype), (long long)at, got, want);
    }
    kiln_executable_destroy(exe);
  }
  teardown(&f);
}

/* y0: an elementwise chain; y1: a batched dot (a loop kernel for narrow floats) of a
 * scaled operand; y2: an average pool; y3: a row sum scaled in its epilogue. %%s: the
 * dtype. */
static const char arith_text[] =
    "graph \"narrow_arith\" {\n"
    "  %%0 = input %s[2,3,8] \"x\"\n"
    "  %%1 = input %s[2,8,5] \"w\"\n"
    "  %%2 = constant %s[] \"c\" [0.3333]\n"
    "  %%3 = broadcast %s[2,3,8] (%%2) \"c.b\"\n"
    "  %%4 = mul %s[2,3,8] (%%0, %%3) \"scale\"\n"
    "  %%5 = add %s[2,3,8] (%%4, %%0) \"res\"\n"
    "  %%6 = abs %s[2,3,8] (%%0) \"abs\"\n"
    "  %%7 = constant %s[] \"one\" [1]\n"
    "  %%8 = broadcast %s[2,3,8] (%%7) \"one.b\"\n"
    "  %%9 = add %s[2,3,8] (%%6, %%8) \"den\"\n"
    "  %%10 = div %s[2,3,8] (%%5, %%9) \"div\"\n"
    "  %%11 = dot %s[2,3,5] (%%4, %%1) \"dot\"\n"
    "  %%12 = pool %s[2,3,4] (%%4) {lo=[1], hi=[1], kind=1, window=[3], strides=[2], dilations=[1], "
    "count_include_pad=0} \"avg\"\n"
    "  %%13 = reduce_sum %s[2,3] (%%4) {axes=[2], keepdims=0} \"sum\"\n"
    "  %%14 = constant %s[] \"c2\" [0.7]\n"
    "  %%15 = broadcast %s[2,3] (%%14) \"c2.b\"\n"
    "  %%16 = mul %s[2,3] (%%13, %%15) \"sum.scale\"\n"
    "  output %%10 \"y0\"\n"
    "  output %%11 \"y1\"\n"
    "  output %%12 \"y2\"\n"
    "  output %%16 \"y3\"\n"
    "}\n";

static void check_arith(const char *dt) {
  char text[2048];
  int n = snprintf(text, sizeof text, arith_text, dt, dt, dt, dt, dt, dt, dt, dt, dt, dt, dt, dt, dt, dt, dt, dt, dt);
  cr_assert(n > 0 && n < (int)sizeof text);
  expect_matches_interpreter(text, (e2e_tol){0, 0});
}

Test(e2e_narrow, f16_arithmetic_rounds_every_node_bit_exact) { check_arith("f16"); }
Test(e2e_narrow, bf16_arithmetic_rounds_every_node_bit_exact) { check_arith("bf16"); }

/* test_e2e_random seed 32701, shrunk: y = sin(pow(sigmoid(x) + 0.5, x)). The base left
 * in f32 changed pow's result by a few f16 ulps and sin near pi by 4% (0.0766 for
 * 0.0732 at x = 3). */
Test(e2e_narrow, f16_pow_sin_chain_from_fuzz_seed_32701) {
  expect_matches_interpreter("graph \"fuzz32701\" {\n"
                             "  %0 = input f16[33] \"x\"\n"
                             "  %1 = sigmoid f16[33] (%0) \"sig\"\n"
                             "  %2 = constant f16[] \"half\" [0.5]\n"
                             "  %3 = broadcast f16[33] (%2) \"half.b\"\n"
                             "  %4 = add f16[33] (%1, %3) \"base\"\n"
                             "  %5 = pow f16[33] (%4, %0) \"pow\"\n"
                             "  %6 = sin f16[33] (%5) \"sin\"\n"
                             "  output %6 \"y\"\n"
                             "}\n",
                             e2e_tol_for(KILN_F16));
}

/* test_e2e_random seed 91481, shrunk: y = exp(pow(sigmoid(x) + 0.5, -3)). bf16's 8 bits
 * left unrounded in the base and the power moved exp's result by up to 9% (852 for 780
 * in the fuzzer's graph, which summed it in a pool and concatenated a slice of it). */
Test(e2e_narrow, bf16_pow_exp_chain_from_fuzz_seed_91481) {
  expect_matches_interpreter("graph \"fuzz91481\" {\n"
                             "  %0 = input bf16[33] \"x\"\n"
                             "  %1 = sigmoid bf16[33] (%0) \"sig\"\n"
                             "  %2 = constant bf16[] \"half\" [0.5]\n"
                             "  %3 = broadcast bf16[33] (%2) \"half.b\"\n"
                             "  %4 = add bf16[33] (%1, %3) \"base\"\n"
                             "  %5 = constant bf16[] \"e\" [-3]\n"
                             "  %6 = broadcast bf16[33] (%5) \"e.b\"\n"
                             "  %7 = pow bf16[33] (%4, %6) \"pow\"\n"
                             "  %8 = exp bf16[33] (%7) \"exp\"\n"
                             "  output %8 \"y\"\n"
                             "}\n",
                             e2e_tol_for(KILN_BF16));
}
