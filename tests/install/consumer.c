/* consumer.c - a program that uses an installed Kiln the way a user's would: it includes
 * only <kiln.h> and links only what `pkg-config --libs kiln` or find_package(Kiln) give.
 * It builds y = softmax(relu(x W + b)) with the builder API, JIT-compiles and runs it,
 * exports it as a shared library (AOT) and runs that too, and compares both with the
 * reference interpreter. Exit status 0 and "consumer: ok" when everything matches.
 *
 *   consumer OUTDIR     (the exported library and header go to OUTDIR) */
#include <kiln.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define M 3
#define K 5
#define N 4

static int fail(kiln_context *ctx, const char *what) {
  fprintf(stderr, "consumer: %s failed: %s\n", what, kiln_last_error(ctx));
  return 1;
}

static int compare(const char *what, const float *got, const float *want) {
  for (int i = 0; i < M * N; i++)
    if (!(fabsf(got[i] - want[i]) <= 1e-5f * (1 + fabsf(want[i])))) {
      fprintf(stderr, "consumer: %s element %d: %g, interpreter %g\n", what, i, got[i], want[i]);
      return 1;
    }
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: consumer OUTDIR\n");
    return 2;
  }
  kiln_context_options co = {.threads = 2, .cache_dir = ""};
  kiln_context *ctx;
  if (kiln_context_create(&co, &ctx) != KILN_OK) return 1;
  kiln_graph *g;
  if (kiln_graph_create(ctx, "consumer", &g) != KILN_OK) return fail(ctx, "kiln_graph_create");
  float W[K * N], B[N], x[M * K];
  for (int i = 0; i < K * N; i++) W[i] = (float)((i * 7) % 11 - 5) / 4.0f;
  for (int i = 0; i < N; i++) B[i] = (float)i / 8.0f;
  for (int i = 0; i < M * K; i++) x[i] = (float)((i * 5) % 9 - 4) / 3.0f;
  int64_t xd[2] = {M, K}, wd[2] = {K, N}, bd[1] = {N};
  kiln_value xv = kiln_input(g, "x", KILN_F32, 2, xd);
  kiln_value h = kiln_relu(g, kiln_add(g, kiln_matmul(g, xv, kiln_constant(g, "W", KILN_F32, 2, wd, W)),
                                       kiln_constant(g, "b", KILN_F32, 1, bd, B)));
  kiln_output(g, "y", kiln_softmax(g, h, 1));
  if (kiln_graph_status(g) != KILN_OK) {
    fprintf(stderr, "consumer: builder: %s\n", kiln_graph_error(g));
    return 1;
  }
  float want[M * N], jit[M * N], aot[M * N];
  kiln_tensor in = {KILN_F32, 2, {M, K}, x};
  kiln_tensor out = {KILN_F32, 2, {M, N}, want};
  if (kiln_interpret(ctx, g, &in, 1, &out, 1) != KILN_OK) return fail(ctx, "kiln_interpret");

  kiln_executable *exe;
  if (kiln_compile(ctx, g, NULL, &exe) != KILN_OK) return fail(ctx, "kiln_compile");
  out.data = jit;
  if (kiln_run(exe, &in, 1, &out, 1) != KILN_OK) return fail(ctx, "kiln_run (JIT)");
  kiln_executable_destroy(exe);
  if (compare("JIT", jit, want)) return 1;

  char so[4096], hdr[4096];
  snprintf(so, sizeof so, "%s/libconsumer.so", argv[1]);
  snprintf(hdr, sizeof hdr, "%s/consumer.h", argv[1]);
  if (kiln_export(ctx, g, NULL, so, hdr, "consumer") != KILN_OK) return fail(ctx, "kiln_export");
  if (kiln_load_library(ctx, so, &exe) != KILN_OK) return fail(ctx, "kiln_load_library");
  out.data = aot;
  if (kiln_run(exe, &in, 1, &out, 1) != KILN_OK) return fail(ctx, "kiln_run (AOT)");
  kiln_executable_destroy(exe);
  if (compare("AOT", aot, want)) return 1;

  kiln_graph_destroy(g);
  kiln_context_destroy(ctx);
  printf("consumer: ok (Kiln %s: JIT and AOT match the interpreter)\n", kiln_version());
  return 0;
}
