/* concurrent.c - throughput of one executable run from several threads at once, the way
 * a server shares one compiled model across request threads, against the same runs
 * serialized (a mutex around kiln_run: what kiln_run would do if runs shared one arena).
 * Built as build/bench/kiln_bench_concurrent:
 *
 *   kiln_bench_concurrent MODEL.onnx THREADS RUNS_PER_THREAD [POOL_THREADS]
 *
 * prints one line per mode: runs per second and the median latency of a run. Inputs are
 * random, the same for every run (speed only; tests/unit/test_exec_concurrent.c checks
 * the results). */
#include "kiln.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { MAX_IO = 16 };

typedef struct shared {
  kiln_executable *exe;
  kiln_tensor in[MAX_IO];
  int n_in, n_out, runs;
  pthread_mutex_t mu;
  int serial;
  double *lat;           /* threads * runs latencies, ms */
} shared;

typedef struct worker {
  shared *s;
  int t, failed;
} worker;

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static size_t bytes_of(const kiln_tensor *t) {
  static const size_t sz[] = {4, 8, 2, 2, 1, 2, 4, 8, 1, 1};
  size_t n = sz[t->dtype];
  for (int i = 0; i < t->rank; i++) n *= (size_t)t->dims[i];
  return n;
}

static void *worker_main(void *arg) {
  worker *w = arg;
  shared *s = w->s;
  kiln_tensor out[MAX_IO];
  for (int i = 0; i < s->n_out; i++) {
    memset(&out[i], 0, sizeof out[i]);
    kiln_executable_output_info(s->exe, i, NULL, &out[i].dtype, &out[i].rank, out[i].dims);
    out[i].data = aligned_alloc(64, (bytes_of(&out[i]) + 63) / 64 * 64 + 64);
  }
  for (int r = 0; r < s->runs; r++) {
    double t0 = now_ms();
    if (s->serial) pthread_mutex_lock(&s->mu);
    w->failed += kiln_run(s->exe, s->in, (size_t)s->n_in, out, (size_t)s->n_out) != KILN_OK;
    if (s->serial) pthread_mutex_unlock(&s->mu);
    s->lat[w->t * s->runs + r] = now_ms() - t0;
  }
  for (int i = 0; i < s->n_out; i++) free(out[i].data);
  return NULL;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* One mode: THREADS threads x runs; prints runs/s and the median latency. */
static int measure(shared *s, int threads, const char *model) {
  pthread_t th[256];
  worker w[256];
  double t0 = now_ms();
  for (int t = 0; t < threads; t++) {
    w[t] = (worker){s, t, 0};
    pthread_create(&th[t], NULL, worker_main, &w[t]);
  }
  int failed = 0;
  for (int t = 0; t < threads; t++) {
    pthread_join(th[t], NULL);
    failed += w[t].failed;
  }
  double wall = now_ms() - t0;
  int n = threads * s->runs;
  qsort(s->lat, (size_t)n, sizeof *s->lat, cmp);
  printf("%s: %-10s %d threads x %d runs: %.1f runs/s, median latency %.3f ms%s\n", model,
         s->serial ? "serialized" : "concurrent", threads, s->runs, n / wall * 1e3, s->lat[n / 2],
         failed ? " (RUNS FAILED)" : "");
  return failed;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s MODEL.onnx THREADS RUNS_PER_THREAD [POOL_THREADS]\n", argv[0]);
    return 2;
  }
  int threads = atoi(argv[2]), runs = atoi(argv[3]), pool = argc > 4 ? atoi(argv[4]) : 0;
  if (threads < 1 || threads > 256 || runs < 1) return fprintf(stderr, "bad THREADS or RUNS\n"), 2;
  kiln_context_options co = {.threads = pool};
  kiln_context *ctx;
  kiln_graph *g;
  shared s = {.runs = runs, .mu = PTHREAD_MUTEX_INITIALIZER};
  if (kiln_context_create(&co, &ctx) || kiln_load_onnx(ctx, argv[1], NULL, &g) || kiln_compile(ctx, g, NULL, &s.exe)) {
    fprintf(stderr, "%s\n", kiln_last_error(ctx));
    return 1;
  }
  s.n_in = kiln_executable_num_inputs(s.exe);
  s.n_out = kiln_executable_num_outputs(s.exe);
  for (int i = 0; i < s.n_in; i++) {
    kiln_executable_input_info(s.exe, i, NULL, &s.in[i].dtype, &s.in[i].rank, s.in[i].dims);
    size_t n = bytes_of(&s.in[i]);
    s.in[i].data = aligned_alloc(64, (n + 63) / 64 * 64 + 64);
    memset(s.in[i].data, 0, n);
    if (s.in[i].dtype == KILN_F32)
      for (size_t j = 0; j < n / 4; j++) ((float *)s.in[i].data)[j] = (float)((double)(j * 37 % 61) / 30.0 - 1.0);
  }
  s.lat = calloc((size_t)threads * (size_t)runs, sizeof *s.lat);
  int failed = 0;
  for (int serial = 1; serial >= 0; serial--) {
    s.serial = serial;
    worker_main(&(worker){&s, 0, 0}); /* warm-up: run states, caches */
    failed += measure(&s, threads, argv[1]);
  }
  for (int i = 0; i < s.n_in; i++) free(s.in[i].data);
  free(s.lat);
  kiln_executable_destroy(s.exe);
  kiln_graph_destroy(g);
  kiln_context_destroy(ctx);
  return failed ? 1 : 0;
}
