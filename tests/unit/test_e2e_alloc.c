/* test_e2e_alloc.c - allocator failure injection through kiln_context_options.allocator
 * (STYLE.md: "the n-th allocation fails; nothing leaks, a clear error comes back").
 * For n = 1, 2, ... a hook fails the n-th allocation while the whole public life cycle
 * runs (context, parse or build, compile with the LLVM JIT, run, interpret, print,
 * destroy); it stops at the first n where nothing was injected. Every call must return
 * KILN_OK or KILN_ERR_OUT_OF_MEMORY (never crash, never another status), a run that
 * reports success must give the right numbers, and after destroying everything the
 * hook's live-allocation count must be back to 0. LLVM's own allocations do not go
 * through the hook, so they are neither failed nor counted. */
#include "test_e2e_util.h"

#define MAX_INJECT 20000

typedef struct failing_alloc {
  long n_calls;  /* allocations (and reallocs) seen */
  long fail_at;  /* fail the call with this number (1-based); 0 never */
  long injected; /* how many calls were failed */
  long live;     /* blocks handed out and not yet freed */
} failing_alloc;

static bool should_fail(failing_alloc *f) {
  if (++f->n_calls == f->fail_at) {
    f->injected++;
    return true;
  }
  return false;
}

static void *fa_alloc(void *u, size_t n) {
  failing_alloc *f = u;
  if (should_fail(f)) return NULL;
  void *p = malloc(n);
  if (p) f->live++;
  return p;
}

static void *fa_realloc(void *u, void *p, size_t n) {
  failing_alloc *f = u;
  if (should_fail(f)) return NULL; /* p stays valid, as with realloc */
  void *q = realloc(p, n);
  if (q && !p) f->live++;
  return q;
}

static void fa_free(void *u, void *p) {
  failing_alloc *f = u;
  if (p) f->live--;
  free(p);
}

/* The graph under test: a little of everything the pipeline handles (GEMM, a fused
 * elementwise chain, a reduction, pad, concat, an opaque topk, folded constants). */
static const char *graph_text(void) {
  kiln_context *ctx;
  kiln_context_options o = {.cache_dir = ""};
  cr_assert(kiln_context_create(&o, &ctx) == KILN_OK);
  kiln_graph *g;
  cr_assert(kiln_graph_create(ctx, "alloc", &g) == KILN_OK);
  int64_t xd[2] = {3, 4}, wd[2] = {4, 5};
  float w[20];
  for (int i = 0; i < 20; i++) w[i] = (float)(i % 7) * 0.25f - 0.5f;
  kiln_value x = kiln_input(g, "x", KILN_F32, 2, xd);
  kiln_value W = kiln_constant(g, "W", KILN_F32, 2, wd, w);
  kiln_value h = kiln_relu(g, kiln_add(g, kiln_matmul(g, x, W), kiln_scalar(g, KILN_F32, 0.5)));
  kiln_value s = kiln_softmax(g, kiln_tanh(g, h), 1);
  int32_t ax = 0;
  kiln_value r = kiln_reduce_sum(g, s, 1, &ax, 1);
  kiln_value parts[2] = {s, r};
  kiln_value c = kiln_concat(g, 2, parts, 0);
  int64_t lo[2] = {1, 0}, hi[2] = {0, 1};
  int32_t p = kiln_ir_pad(g, c.id, lo, hi, 0.0, "pad");
  int32_t t = kiln_ir_topk(g, p, 2, 1, 1, "topk");
  kiln_output(g, "y", (kiln_value){p});
  kiln_output(g, "top", (kiln_value){t});
  cr_assert(kiln_graph_status(g) == KILN_OK, "%s", kiln_graph_error(g));
  char *text = kiln_graph_to_text(ctx, g);
  cr_assert(text);
  char *copy = strdup(text);
  kiln_free(ctx, text);
  kiln_graph_destroy(g);
  kiln_context_destroy(ctx);
  return copy;
}

typedef struct io_set {
  kiln_tensor in, out[2], ref[2];
} io_set;

static void io_make(io_set *io, kiln_graph *g) {
  const char *nm;
  kiln_dtype dt;
  int32_t rank;
  int64_t dims[KILN_TENSOR_MAX_RANK];
  kiln_graph_input_info(g, 0, &nm, &dt, &rank, dims);
  e2e_tensor_alloc(&io->in, dt, rank, dims);
  e2e_rng r = {42};
  e2e_fill_random(&r, &io->in);
  for (int i = 0; i < 2; i++) {
    kiln_graph_output_info(g, i, &nm, &dt, &rank, dims);
    e2e_tensor_alloc(&io->out[i], dt, rank, dims);
    e2e_tensor_alloc(&io->ref[i], dt, rank, dims);
  }
}

static void io_free(io_set *io) {
  free(io->in.data);
  for (int i = 0; i < 2; i++) free(io->out[i].data), free(io->ref[i].data);
}

/* A status from a call that may have met an injected failure. */
static void expect_ok_or_oom(kiln_status st, const char *what, long n, kiln_context *ctx) {
  cr_assert(st == KILN_OK || st == KILN_ERR_OUT_OF_MEMORY,
            "fail_at %ld: %s returned %s (%s), expected KILN_OK or KILN_ERR_OUT_OF_MEMORY", n, what,
            kiln_status_name(st), ctx ? kiln_last_error(ctx) : "");
}

typedef enum { VIA_TEXT, VIA_BUILDER } graph_source;

/* Builds the test graph with the builder inside ctx (so builder allocations fail too). */
static kiln_status build_graph(kiln_context *ctx, const char *text, kiln_graph **out) {
  (void)text;
  kiln_graph *g;
  kiln_status st = kiln_graph_create(ctx, "built", &g);
  if (st != KILN_OK) return st;
  int64_t xd[2] = {3, 4}, cd[2] = {1, 4};
  float c[4] = {0.5f, -1, 2, 0.25f};
  kiln_value x = kiln_input(g, "x", KILN_F32, 2, xd);
  kiln_value k = kiln_constant(g, "k", KILN_F32, 2, cd, c);
  kiln_value y = kiln_exp(g, kiln_mul(g, kiln_tanh(g, x), k));
  int32_t ax = 1;
  kiln_value m = kiln_reduce_max(g, y, 1, &ax, 1);
  kiln_output(g, "y", y);
  kiln_output(g, "m", kiln_sub(g, y, m));
  st = kiln_graph_status(g);
  if (st != KILN_OK) {
    kiln_graph_destroy(g);
    return st;
  }
  *out = g;
  return KILN_OK;
}

/* One life cycle with the fail_at-th allocation failing. Returns how many were injected. */
static long life_cycle(failing_alloc *fa, graph_source src, const char *text, kiln_fusion_level fusion,
                       io_set *io, bool have_ref) {
  kiln_allocator a = {fa_alloc, fa_realloc, fa_free, fa};
  kiln_context_options o = {.allocator = &a, .threads = 1, .cache_dir = ""};
  kiln_context *ctx = NULL;
  kiln_graph *g = NULL;
  kiln_executable *exe = NULL;
  long n = fa->fail_at;
  kiln_status st = kiln_context_create(&o, &ctx);
  expect_ok_or_oom(st, "kiln_context_create", n, NULL);
  if (st != KILN_OK) goto done;
  st = src == VIA_TEXT ? kiln_parse_text(ctx, text, &g) : build_graph(ctx, text, &g);
  expect_ok_or_oom(st, src == VIA_TEXT ? "kiln_parse_text" : "the builder", n, ctx);
  if (st != KILN_OK) goto done;
  kiln_compile_options co = {.fusion = fusion};
  st = kiln_compile(ctx, g, &co, &exe);
  expect_ok_or_oom(st, "kiln_compile", n, ctx);
  if (st == KILN_OK) {
    for (int i = 0; i < 2; i++) memset(io->out[i].data, 0xa5, (size_t)e2e_numel(&io->out[i]) * kiln_dtype_size(io->out[i].dtype));
    st = kiln_run(exe, &io->in, 1, io->out, 2);
    expect_ok_or_oom(st, "kiln_run", n, ctx);
    for (int i = 0; st == KILN_OK && have_ref && i < 2; i++) {
      double gv, rv;
      int64_t at = e2e_first_mismatch(&io->out[i], &io->ref[i], e2e_tol_for(io->ref[i].dtype), &gv, &rv);
      cr_assert(at < 0, "fail_at %ld: kiln_run reported success but output %d element %lld is %g, expected %g", n,
                i, (long long)at, gv, rv);
    }
  }
  st = kiln_interpret(ctx, g, &io->in, 1, have_ref ? io->out : io->ref, 2);
  expect_ok_or_oom(st, "kiln_interpret", n, ctx);
  for (int i = 0; st == KILN_OK && have_ref && i < 2; i++) {
    double gv, rv;
    cr_assert(e2e_first_mismatch(&io->out[i], &io->ref[i], (e2e_tol){0, 0}, &gv, &rv) < 0,
              "fail_at %ld: kiln_interpret reported success with a different output %d", n, i);
  }
  char *t = kiln_graph_to_text(ctx, g);
  kiln_free(ctx, t);
done:
  kiln_executable_destroy(exe);
  kiln_graph_destroy(g);
  kiln_context_destroy(ctx);
  cr_assert_eq(fa->live, 0, "fail_at %ld: %ld allocations through the hook were never freed", n, fa->live);
  return fa->injected;
}

static void inject_every_allocation(graph_source src, kiln_fusion_level fusion) {
  const char *text = graph_text();
  io_set io;
  {
    kiln_context *ctx;
    kiln_context_options o = {.cache_dir = ""};
    cr_assert(kiln_context_create(&o, &ctx) == KILN_OK);
    kiln_graph *g;
    cr_assert(src == VIA_TEXT ? kiln_parse_text(ctx, text, &g) == KILN_OK : build_graph(ctx, text, &g) == KILN_OK);
    io_make(&io, g);
    kiln_graph_destroy(g);
    kiln_context_destroy(ctx);
  }
  /* the reference run: no failure, fills io.ref */
  failing_alloc fa = {0};
  cr_assert_eq(life_cycle(&fa, src, text, fusion, &io, false), 0);
  long total = fa.n_calls, n;
  cr_assert_gt(total, 10, "the life cycle allocates through the hook");
  cr_log_info("%ld allocations through the hook per life cycle", total);
  for (n = 1; n <= MAX_INJECT; n++) {
    fa = (failing_alloc){.fail_at = n};
    if (life_cycle(&fa, src, text, fusion, &io, true) == 0) break;
  }
  cr_expect_leq(n, MAX_INJECT, "stopped after %d injections without a clean run", MAX_INJECT);
  cr_expect_eq(n, total + 1, "a clean run needs as many allocations as the reference run (%ld), got %ld", total, n - 1);
  io_free(&io);
  free((void *)text);
}

Test(e2e_alloc, every_allocation_failure_parsed_graph_full_fusion, .timeout = 300) {
  inject_every_allocation(VIA_TEXT, KILN_FUSION_FULL);
}

Test(e2e_alloc, every_allocation_failure_parsed_graph_no_fusion, .timeout = 300) {
  inject_every_allocation(VIA_TEXT, KILN_FUSION_NONE);
}

Test(e2e_alloc, every_allocation_failure_built_graph, .timeout = 300) {
  inject_every_allocation(VIA_BUILDER, KILN_FUSION_ELEMENTWISE);
}
