/* test_exec_concurrent.c - one executable run from several threads at once: N threads x
 * M runs, each run with one of several input variants, every output compared with the
 * single-threaded result for its variant (itself checked against the interpreter), on a
 * GEMM + reductions model, a convolution, a model whose runs fail on some inputs (an
 * index out of range: the error word is per run, and a failure never leaks into another
 * thread's run), in verify mode, and through a loaded AOT library; and executables and
 * graphs that outlive their context (kiln_context_destroy first, in every order), which
 * must keep working. `make test-tsan` runs this file under ThreadSanitizer too. */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kiln.h"

enum { THREADS = 8, RUNS = 25, VARIANTS = 5, MAX_IO = 4 };

/* A GEMM big enough for the pool to split, then elementwise, a reduction and an argmax:
 * arena buffers between kernels, which concurrent runs must not share. */
static const char *gemm_text =
    "graph \"gemm_chain\" {\n"
    "  %0 = input f32[64,128] \"x\"\n"
    "  %1 = input f32[128,96] \"w\"\n"
    "  %2 = dot f32[64,96] (%0, %1) \"mm\"\n"
    "  %3 = tanh f32[64,96] (%2) \"t\"\n"
    "  %4 = reduce_sum f32[64] (%3) {axes=[1], keepdims=0} \"s\"\n"
    "  %5 = argmax i64[64] (%2) {axis=1, keepdims=0} \"am\"\n"
    "  %6 = mul f32[64,96] (%3, %3) \"sq\"\n"
    "  output %4 \"sum\"\n"
    "  output %5 \"idx\"\n"
    "  output %6 \"sq\"\n"
    "}\n";

/* A padded 3x3 convolution (im2col packed inside the GEMM kernel) and an epilogue. */
static const char *conv_text =
    "graph \"conv\" {\n"
    "  %0 = input f32[1,8,24,24] \"x\"\n"
    "  %1 = input f32[16,8,3,3] \"w\"\n"
    "  %2 = conv f32[1,16,24,24] (%0, %1) {strides=[1,1], dilations=[1,1], lo=[1,1], hi=[1,1], groups=1} \"c\"\n"
    "  %3 = tanh f32[1,16,24,24] (%2) \"t\"\n"
    "  %4 = reduce_max f32[1,16] (%3) {axes=[2,3], keepdims=0} \"m\"\n"
    "  output %3 \"y\"\n"
    "  output %4 \"ymax\"\n"
    "}\n";

/* A gather whose indices come from an input: variant 0 has one out of range. */
static const char *gather_text =
    "graph \"gth\" {\n"
    "  %0 = input f32[40,16] \"data\"\n"
    "  %1 = input i64[8] \"idx\"\n"
    "  %2 = gather f32[8,16] (%0, %1) {axis=0} \"Gather_3\"\n"
    "  %3 = exp f32[8,16] (%2) \"Exp_4\"\n"
    "  output %3 \"y\"\n"
    "}\n";

typedef struct model {
  kiln_context *ctx;
  kiln_graph *g;
  kiln_executable *exe;
  int n_in, n_out;
  kiln_tensor in[VARIANTS][MAX_IO];
  kiln_tensor want[VARIANTS][MAX_IO]; /* the single-threaded outputs */
  kiln_status want_st[VARIANTS];
} model;

static int64_t numel(const kiln_tensor *t) {
  int64_t n = 1;
  for (int i = 0; i < t->rank; i++) n *= t->dims[i];
  return n;
}

static size_t nbytes(const kiln_tensor *t) {
  static const size_t sz[] = {4, 8, 2, 2, 1, 2, 4, 8, 1, 1};
  return (size_t)numel(t) * sz[t->dtype];
}

static void alloc_like(kiln_tensor *t, kiln_dtype dt, int32_t rank, const int64_t *dims) {
  memset(t, 0, sizeof *t);
  t->dtype = dt;
  t->rank = rank;
  memcpy(t->dims, dims, sizeof(int64_t) * (size_t)rank);
  t->data = calloc(nbytes(t) + 64, 1);
  cr_assert(t->data);
}

/* Inputs of variant v: floats that differ clearly between variants; indices in range,
 * except index 3 of variant 0 (for the gather model). */
static void fill(kiln_tensor *t, int input, int v) {
  for (int64_t j = 0; j < numel(t); j++) {
    if (t->dtype == KILN_F32) ((float *)t->data)[j] = (float)(0.5 * sin(0.37 * (double)j + 1.3 * v + input));
    else if (t->dtype == KILN_I64) ((int64_t *)t->data)[j] = (v == 0 && j == 3) ? 1000 : (j * 7 + v * 3) % 40;
  }
}

static bool same(const kiln_tensor *a, const kiln_tensor *b, char *why, size_t n) {
  for (int64_t j = 0; j < numel(a); j++) {
    double x, y;
    if (a->dtype == KILN_F32) x = ((float *)a->data)[j], y = ((float *)b->data)[j];
    else x = (double)((int64_t *)a->data)[j], y = (double)((int64_t *)b->data)[j];
    double tol = a->dtype == KILN_F32 ? 1e-5 * (1 + fabs(y)) : 0;
    if (!(fabs(x - y) <= tol)) {
      snprintf(why, n, "element %lld: %.9g, single-threaded %.9g", (long long)j, x, y);
      return false;
    }
  }
  return true;
}

static void out_tensors(const model *m, kiln_tensor *out) {
  for (int i = 0; i < m->n_out; i++) {
    kiln_dtype dt;
    int32_t rank;
    int64_t dims[KILN_TENSOR_MAX_RANK];
    cr_assert_eq(kiln_executable_output_info(m->exe, i, NULL, &dt, &rank, dims), KILN_OK);
    alloc_like(&out[i], dt, rank, dims);
  }
}

/* Parses and compiles text (verify: in verify mode), makes each variant's inputs, and
 * records its single-threaded outputs, checked against the interpreter. */
static void setup(model *m, const char *text, int verify) {
  memset(m, 0, sizeof *m);
  kiln_context_options co = {.threads = 2, .cache_dir = ""};
  cr_assert_eq(kiln_context_create(&co, &m->ctx), KILN_OK);
  cr_assert_eq(kiln_parse_text(m->ctx, text, &m->g), KILN_OK, "%s", kiln_last_error(m->ctx));
  kiln_compile_options o = {.verify = verify};
  cr_assert_eq(kiln_compile(m->ctx, m->g, &o, &m->exe), KILN_OK, "%s", kiln_last_error(m->ctx));
  m->n_in = kiln_executable_num_inputs(m->exe);
  m->n_out = kiln_executable_num_outputs(m->exe);
  cr_assert(m->n_in <= MAX_IO && m->n_out <= MAX_IO);
  for (int v = 0; v < VARIANTS; v++) {
    for (int i = 0; i < m->n_in; i++) {
      kiln_dtype dt;
      int32_t rank;
      int64_t dims[KILN_TENSOR_MAX_RANK];
      cr_assert_eq(kiln_executable_input_info(m->exe, i, NULL, &dt, &rank, dims), KILN_OK);
      alloc_like(&m->in[v][i], dt, rank, dims);
      fill(&m->in[v][i], i, v);
    }
    out_tensors(m, m->want[v]);
    m->want_st[v] = kiln_run(m->exe, m->in[v], (size_t)m->n_in, m->want[v], (size_t)m->n_out);
    if (m->want_st[v] != KILN_OK) continue;
    kiln_tensor ref[MAX_IO];
    out_tensors(m, ref);
    cr_assert_eq(kiln_interpret(m->ctx, m->g, m->in[v], (size_t)m->n_in, ref, (size_t)m->n_out), KILN_OK);
    char why[200];
    for (int i = 0; i < m->n_out; i++) {
      if (ref[i].dtype == KILN_F32) /* fused kernels round differently from the interpreter */
        for (int64_t j = 0; j < numel(&ref[i]); j++) {
          float a = ((float *)m->want[v][i].data)[j], b = ((float *)ref[i].data)[j];
          cr_assert(fabsf(a - b) <= 1e-4f * (1 + fabsf(b)), "variant %d output %d [%lld]: %g vs %g", v, i,
                    (long long)j, a, b);
        }
      else
        cr_assert(same(&m->want[v][i], &ref[i], why, sizeof why), "variant %d output %d: %s", v, i, why);
      free(ref[i].data);
    }
  }
}

static void teardown(model *m) {
  for (int v = 0; v < VARIANTS; v++) {
    for (int i = 0; i < m->n_in; i++) free(m->in[v][i].data);
    for (int i = 0; i < m->n_out; i++) free(m->want[v][i].data);
  }
  kiln_executable_destroy(m->exe);
  kiln_graph_destroy(m->g);
  kiln_context_destroy(m->ctx);
}

/* ------------------------------------------------------------------ the threads */
typedef struct worker {
  model *m;
  int t;
  int wrong;           /* runs whose status or outputs differ from the single-threaded run */
  char first[400];     /* what the first wrong run did */
} worker;

static void *worker_main(void *arg) {
  worker *w = arg;
  model *m = w->m;
  kiln_tensor out[MAX_IO];
  out_tensors(m, out);
  for (int r = 0; r < RUNS; r++) {
    int v = (w->t + r) % VARIANTS;
    for (int i = 0; i < m->n_out; i++) memset(out[i].data, 0xff, nbytes(&out[i])); /* NaNs, -1s */
    kiln_status st = kiln_run(m->exe, m->in[v], (size_t)m->n_in, out, (size_t)m->n_out);
    char why[300] = "";
    bool ok = st == m->want_st[v];
    if (!ok) snprintf(why, sizeof why, "status %s, single-threaded %s", kiln_status_name(st),
                      kiln_status_name(m->want_st[v]));
    if (ok && st != KILN_OK) {
      char msg[2048];
      kiln_last_error_copy(m->ctx, msg, sizeof msg);
      ok = strstr(msg, "Gather_3") != NULL;
      if (!ok) snprintf(why, sizeof why, "failed run's message does not name the node: %.200s", msg);
    }
    for (int i = 0; ok && st == KILN_OK && i < m->n_out; i++) ok = same(&out[i], &m->want[v][i], why, sizeof why);
    if (!ok && w->wrong++ == 0) snprintf(w->first, sizeof w->first, "thread %d run %d (variant %d): %s", w->t, r, v, why);
  }
  for (int i = 0; i < m->n_out; i++) free(out[i].data);
  return NULL;
}

/* THREADS threads x RUNS runs on m's one executable: the number of wrong runs. */
static int run_concurrently(model *m, char *first, size_t n) {
  pthread_t th[THREADS];
  worker w[THREADS];
  for (int t = 0; t < THREADS; t++) {
    w[t] = (worker){m, t, 0, ""};
    cr_assert_eq(pthread_create(&th[t], NULL, worker_main, &w[t]), 0);
  }
  int wrong = 0;
  first[0] = 0;
  for (int t = 0; t < THREADS; t++) {
    pthread_join(th[t], NULL);
    if (w[t].wrong && !first[0]) snprintf(first, n, "%s", w[t].first);
    wrong += w[t].wrong;
  }
  return wrong;
}

static void expect_concurrent_runs_correct(const char *text, int verify) {
  model m;
  setup(&m, text, verify);
  char first[400];
  int wrong = run_concurrently(&m, first, sizeof first);
  cr_expect_eq(wrong, 0, "%d of %d concurrent runs wrong; first: %s", wrong, THREADS * RUNS, first);
  teardown(&m);
}

Test(concurrent, gemm_chain_runs_are_independent) { expect_concurrent_runs_correct(gemm_text, 0); }
Test(concurrent, conv_runs_are_independent) { expect_concurrent_runs_correct(conv_text, 0); }
Test(concurrent, failing_runs_stay_in_their_thread) {
  model m;
  setup(&m, gather_text, 0);
  cr_assert_eq(m.want_st[0], KILN_ERR_INVALID_ARGUMENT, "variant 0 must fail (index 1000 of 40)");
  cr_assert_eq(m.want_st[1], KILN_OK, "%s", kiln_last_error(m.ctx));
  char first[400];
  int wrong = run_concurrently(&m, first, sizeof first);
  cr_expect_eq(wrong, 0, "%d of %d concurrent runs wrong; first: %s", wrong, THREADS * RUNS, first);
  teardown(&m);
}
Test(concurrent, verify_mode_runs_are_independent) { expect_concurrent_runs_correct(gemm_text, 1); }

/* A loaded AOT library has one model object: its runs wait for each other. */
Test(concurrent, library_runs_are_serialized_and_correct) {
  model m;
  setup(&m, gemm_text, 0);
  char so[] = "/tmp/kiln_concurrent_XXXXXX";
  cr_assert(mkdtemp(so));
  char path[128];
  snprintf(path, sizeof path, "%s/libgemm.so", so);
  cr_assert_eq(kiln_export(m.ctx, m.g, NULL, path, NULL, "gemm"), KILN_OK, "%s", kiln_last_error(m.ctx));
  kiln_executable *jit = m.exe;
  cr_assert_eq(kiln_load_library(m.ctx, path, &m.exe), KILN_OK, "%s", kiln_last_error(m.ctx));
  char first[400];
  int wrong = run_concurrently(&m, first, sizeof first);
  cr_expect_eq(wrong, 0, "%d of %d concurrent runs wrong; first: %s", wrong, THREADS * RUNS, first);
  kiln_executable_destroy(jit);
  teardown(&m);
  unlink(path);
  rmdir(so);
}

/* ------------------------------------------------------------------ lifetimes */
/* The context destroyed first: the graph and the executable keep it alive, the executable
 * still runs (and fails with a message), and destroying them in either order frees it
 * (ASan: no use-after-free, no leak). */
static void outlive_context(bool graph_first) {
  model m;
  setup(&m, gather_text, 0);
  kiln_context_destroy(m.ctx);
  kiln_tensor out[MAX_IO];
  out_tensors(&m, out);
  cr_expect_eq(kiln_run(m.exe, m.in[1], (size_t)m.n_in, out, (size_t)m.n_out), KILN_OK);
  char why[200];
  cr_expect(same(&out[0], &m.want[1][0], why, sizeof why), "%s", why);
  cr_expect_eq(kiln_run(m.exe, m.in[0], (size_t)m.n_in, out, (size_t)m.n_out), KILN_ERR_INVALID_ARGUMENT);
  free(out[0].data);
  for (int v = 0; v < VARIANTS; v++) {
    for (int i = 0; i < m.n_in; i++) free(m.in[v][i].data);
    for (int i = 0; i < m.n_out; i++) free(m.want[v][i].data);
  }
  if (graph_first) {
    kiln_graph_destroy(m.g);
    kiln_executable_destroy(m.exe);
  } else {
    kiln_executable_destroy(m.exe);
    kiln_graph_destroy(m.g);
  }
}

Test(lifetime, executable_and_graph_outlive_the_context) { outlive_context(false); }
Test(lifetime, graph_destroyed_before_the_executable) { outlive_context(true); }

/* A graph alone keeps its context too, and can still be compiled. */
Test(lifetime, graph_outlives_the_context) {
  kiln_context *ctx;
  cr_assert_eq(kiln_context_create(NULL, &ctx), KILN_OK);
  kiln_graph *g;
  cr_assert_eq(kiln_parse_text(ctx, gather_text, &g), KILN_OK);
  kiln_context_destroy(ctx);
  cr_expect_eq(kiln_graph_num_inputs(g), 2);
  char *text = kiln_graph_to_text(NULL, g);
  cr_expect(text && strstr(text, "Gather_3"));
  kiln_free(NULL, text); /* the default allocator's */
  kiln_graph_destroy(g);
}
