/* gemm.c - the contraction engine against the machine's limit and OpenBLAS, in one run.
 * Built as build/bench/kiln_bench_gemm:
 *
 *   kiln_bench_gemm [--threads T] [MxNxK ...]
 *
 * For each shape, C[M,N] = A[M,K] * W[K,N] with W a constant (a layer's weights), compiled
 * by Kiln twice: its generated engine (the default) and its library path (the pack pass
 * disabled: OpenBLAS called per tile), and cblas_sgemm called directly; each reports
 * GFLOP/s (median of 7 rounds, each at least 50 ms of repeated runs) and the share of the
 * measured peak of T cores. The peak is measured, not looked up: independent FMA chains on
 * the widest vectors the CPU has (AVX-512, else AVX2+FMA, else SSE), on T threads at once.
 * Kiln's results are checked against OpenBLAS's (the largest relative difference is
 * printed). Run it with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset, or set to the right
 * core for this CPU (OpenBLAS 0.3.21 reads some Xeons as Prescott and runs 3x slower). */
#include "kiln.h"

#include <cblas.h>
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void openblas_set_num_threads(int);
char *openblas_get_corename(void);

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* ---------------------------------------------------------------------- peak */
enum { PEAK_ITERS = 1 << 24 };

/* 12 independent FMA chains per thread, kept in registers (written out: an array of
 * vectors stays in memory at -O2): more than latency x ports on every x86 core. */
#define CHAINS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define PEAK_LOOP(V, SET, FMA, ADD)                                        \
  V m = SET(0.999999f), c = SET(1e-7f);                                     \
  CHAINS(DECL)                                                              \
  for (long it = 0; it < PEAK_ITERS / 12; it++) {                           \
    CHAINS(STEP)                                                            \
    __asm__ volatile("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3));          \
  }                                                                         \
  V s = ADD(ADD(ADD(a0, a1), ADD(a2, a3)), ADD(ADD(a4, a5), ADD(a6, a7)));  \
  s = ADD(s, ADD(ADD(a8, a9), ADD(a10, a11)));
#define DECL(i) V_T a##i = SET_T((float)(i));
#define STEP(i) a##i = FMA_T(a##i, m, c);

#define V_T __m512
#define SET_T _mm512_set1_ps
#define FMA_T _mm512_fmadd_ps
__attribute__((target("avx512f"))) static float fma_avx512(void) {
  PEAK_LOOP(__m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps)
  return _mm512_reduce_add_ps(s);
}
#undef V_T
#undef SET_T
#undef FMA_T

#define V_T __m256
#define SET_T _mm256_set1_ps
#define FMA_T _mm256_fmadd_ps
__attribute__((target("avx2,fma"))) static float fma_avx2(void) {
  PEAK_LOOP(__m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps)
  float out[8], r = 0;
  _mm256_storeu_ps(out, s);
  for (int i = 0; i < 8; i++) r += out[i];
  return r;
}
#undef V_T
#undef SET_T
#undef FMA_T

#define V_T __m128
#define SET_T _mm_set1_ps
#define FMA_T(a, m, c) _mm_add_ps(_mm_mul_ps(a, m), c)
static float mul_add_sse(void) {
  PEAK_LOOP(__m128, _mm_set1_ps, FMA_T, _mm_add_ps)
  float out[4], r = 0;
  _mm_storeu_ps(out, s);
  for (int i = 0; i < 4; i++) r += out[i];
  return r;
}

static int isa; /* 2 AVX-512, 1 AVX2+FMA, 0 SSE */
static double flops_per_call(void) {
  static const double lanes[] = {4, 8, 16};
  return 12.0 * 2 * lanes[isa] * (PEAK_ITERS / 12);
}

static void *peak_thread(void *sink) {
  float v = isa == 2 ? fma_avx512() : isa == 1 ? fma_avx2() : mul_add_sse();
  *(volatile float *)sink = v;
  return NULL;
}

/* GFLOP/s of T threads running the FMA loop at once (the best of 5: other work on the
 * machine only ever makes a round slower). */
static double measure_peak(int threads) {
  __builtin_cpu_init();
  isa = __builtin_cpu_supports("avx512f") ? 2 : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 1 : 0;
  double r[5];
  float sink[64];
  for (int k = 0; k < 5; k++) {
    pthread_t th[64];
    double t0 = now_s();
    for (int t = 0; t < threads; t++) pthread_create(&th[t], NULL, peak_thread, &sink[t]);
    for (int t = 0; t < threads; t++) pthread_join(th[t], NULL);
    r[k] = flops_per_call() * threads / (now_s() - t0) * 1e-9;
  }
  qsort(r, 5, sizeof *r, cmp);
  return r[4];
}

/* ---------------------------------------------------------------------- GEMMs */
typedef struct shape {
  int64_t m, n, k;
} shape;

typedef void (*run_fn)(void *arg);

/* Median GFLOP/s over 7 rounds of at least 50 ms each. */
static double rate(const shape *s, run_fn f, void *arg) {
  double r[7], flops = 2.0 * (double)s->m * (double)s->n * (double)s->k;
  f(arg); /* warm */
  for (int k = 0; k < 7; k++) {
    int reps = 0;
    double t0 = now_s(), t;
    do {
      f(arg);
      reps++;
    } while ((t = now_s() - t0) < 0.05);
    r[k] = flops * reps / t * 1e-9;
  }
  qsort(r, 7, sizeof *r, cmp);
  return r[3];
}

typedef struct kiln_case {
  kiln_executable *exe;
  kiln_tensor in, out;
} kiln_case;

static void run_kiln(void *arg) {
  kiln_case *c = arg;
  if (kiln_run(c->exe, &c->in, 1, &c->out, 1) != KILN_OK) {
    fprintf(stderr, "kiln_run failed\n");
    exit(1);
  }
}

typedef struct blas_case {
  const shape *s;
  const float *a, *w;
  float *c;
} blas_case;

static void run_blas(void *arg) {
  blas_case *b = arg;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)b->s->m, (int)b->s->n, (int)b->s->k, 1.0f, b->a,
              (int)b->s->k, b->w, (int)b->s->n, 0.0f, b->c, (int)b->s->n);
}

/* Kiln's rate for shape s with the given passes disabled; its output in c->out. */
static double kiln_rate(kiln_context *ctx, const shape *s, const float *a, const float *w, const char *disable,
                        float *out) {
  kiln_graph *g;
  if (kiln_graph_create(ctx, "gemm", &g)) return -1;
  int64_t ad[2] = {s->m, s->k}, wd[2] = {s->k, s->n};
  kiln_value x = kiln_input(g, "a", KILN_F32, 2, ad);
  kiln_value wc = kiln_constant(g, "w", KILN_F32, 2, wd, w);
  kiln_output(g, "c", kiln_matmul(g, x, wc));
  kiln_compile_options o = {.disable_passes = disable};
  kiln_case c = {.in = {KILN_F32, 2, {s->m, s->k}, (void *)a}, .out = {KILN_F32, 2, {s->m, s->n}, out}};
  if (kiln_graph_status(g) || kiln_compile(ctx, g, &o, &c.exe)) {
    fprintf(stderr, "%s\n", kiln_last_error(ctx));
    return -1;
  }
  double r = rate(s, run_kiln, &c);
  kiln_executable_destroy(c.exe);
  kiln_graph_destroy(g);
  return r;
}

static double max_rel(const float *x, const float *ref, size_t n) {
  double scale = 0, d = 0;
  for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(ref[i]));
  for (size_t i = 0; i < n; i++) d = fmax(d, fabs((double)x[i] - ref[i]));
  return d / (scale > 0 ? scale : 1);
}

static float *random_floats(size_t n, unsigned seed) {
  float *p = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
  for (size_t i = 0; i < n; i++) {
    seed = seed * 1103515245u + 12345u;
    p[i] = (float)((seed >> 8) & 0xffff) / 32768.0f - 1.0f;
  }
  return p;
}

int main(int argc, char **argv) {
  int threads = 1;
  shape shapes[32];
  int n = 0;
  for (int i = 1; i < argc; i++) {
    long long m, nn, k;
    if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
    else if (sscanf(argv[i], "%lldx%lldx%lld", &m, &nn, &k) == 3 && m > 0 && nn > 0 && k > 0 && n < 32)
      shapes[n++] = (shape){m, nn, k};
    else return fprintf(stderr, "usage: %s [--threads T] [MxNxK ...]\n", argv[0]), 2;
  }
  if (threads < 1 || threads > 64) return fprintf(stderr, "--threads: 1 to 64\n"), 2;
  if (n == 0) { /* L1/L2-resident, a BERT projection, a ResNet layer as a GEMM, a big square */
    static const shape d[] = {{64, 64, 256}, {96, 256, 256}, {128, 768, 768}, {196, 256, 2304}, {1024, 1024, 1024}};
    n = (int)(sizeof d / sizeof d[0]);
    memcpy(shapes, d, sizeof d);
  }
  openblas_set_num_threads(threads);
  kiln_context_options co = {.threads = threads, .cache_dir = ""};
  kiln_context *ctx;
  if (kiln_context_create(&co, &ctx)) return fprintf(stderr, "kiln_context_create failed\n"), 1;
  double peak = measure_peak(threads);
  printf("peak (measured, %d thread%s, %s FMA): %.1f GFLOP/s; OpenBLAS core %s\n", threads, threads > 1 ? "s" : "",
         isa == 2 ? "AVX-512" : isa == 1 ? "AVX2" : "SSE mul+add", peak, openblas_get_corename());
  printf("%-18s %12s %7s %12s %7s %12s %7s %10s\n", "M x N x K", "kiln gen", "%peak", "kiln lib", "%peak", "openblas",
         "%peak", "max rel d");
  for (int i = 0; i < n; i++) {
    const shape *s = &shapes[i];
    float *a = random_floats((size_t)(s->m * s->k), 1u + (unsigned)i), *w = random_floats((size_t)(s->k * s->n), 7u);
    float *c_gen = aligned_alloc(64, (size_t)(s->m * s->n) * 4 + 64), *c_ref = aligned_alloc(64, (size_t)(s->m * s->n) * 4 + 64);
    float *c_lib = aligned_alloc(64, (size_t)(s->m * s->n) * 4 + 64);
    double gen = kiln_rate(ctx, s, a, w, NULL, c_gen), lib = kiln_rate(ctx, s, a, w, "pack", c_lib);
    blas_case b = {s, a, w, c_ref};
    double blas = rate(s, run_blas, &b);
    double d = fmax(max_rel(c_gen, c_ref, (size_t)(s->m * s->n)), max_rel(c_lib, c_ref, (size_t)(s->m * s->n)));
    char name[64];
    snprintf(name, sizeof name, "%lldx%lldx%lld", (long long)s->m, (long long)s->n, (long long)s->k);
    printf("%-18s %12.1f %6.0f%% %12.1f %6.0f%% %12.1f %6.0f%% %10.2e\n", name, gen, 100 * gen / peak, lib,
           100 * lib / peak, blas, 100 * blas / peak, d);
    free(a), free(w), free(c_gen), free(c_ref), free(c_lib);
  }
  kiln_context_destroy(ctx);
  return 0;
}
