/* test_rt_gemm.c - kiln_rt_gemm against a naive triple loop: f32 and f64, every transpose
 * combination, padded leading dimensions, offsets, 0-2 batch loops with strides including
 * 0 (a broadcast operand), k = 0, with and without a thread pool. Elements of C outside
 * the m x n results (ld padding) must stay untouched. Several threads calling at once on
 * one pool each get their own product, and OpenBLAS keeps the caller's thread count. */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../../runtime/rt.h"

static uint64_t rng = 88172645463325252ull;
static double rnd(void) { /* xorshift: deterministic, in [-1, 1) */
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (double)(rng >> 11) / 4503599627370496.0 - 1.0;
}

typedef struct gcase {
  int dtype;
  int ta, tb;
  int64_t m, n, k, pad; /* pad: extra leading-dimension elements */
  int n_batch;
  int64_t batch[2];
  int a_bcast, b_bcast; /* stride 0 in batch loop 0 */
} gcase;

static double getv(int dt, const void *p, int64_t i) {
  return dt == KILN_F32 ? ((const float *)p)[i] : ((const double *)p)[i];
}
static void setv(int dt, void *p, int64_t i, double v) {
  if (dt == KILN_F32) ((float *)p)[i] = (float)v;
  else ((double *)p)[i] = v;
}

static void run_case(kiln_rt_pool *pool, const gcase *gc) {
  kiln_gemm_desc g;
  memset(&g, 0, sizeof g);
  g.a_buf = 2; g.b_buf = 0; g.c_buf = 1; /* buffer ids need not be in order */
  g.a_off = 3; g.b_off = 1; g.c_off = 2;
  g.trans_a = gc->ta; g.trans_b = gc->tb;
  g.m = gc->m; g.n = gc->n; g.k = gc->k;
  int64_t a_rows = gc->ta ? gc->k : gc->m, a_cols = gc->ta ? gc->m : gc->k;
  int64_t b_rows = gc->tb ? gc->n : gc->k, b_cols = gc->tb ? gc->k : gc->n;
  g.lda = a_cols + gc->pad; g.ldb = b_cols + gc->pad; g.ldc = gc->n + gc->pad;
  int64_t a_mat = a_rows * g.lda, b_mat = b_rows * g.ldb, c_mat = gc->m * g.ldc;
  g.n_batch = gc->n_batch;
  int64_t nb = 1;
  for (int i = 0; i < gc->n_batch; i++) {
    g.batch[i] = gc->batch[i];
    nb *= gc->batch[i];
  }
  /* row-major batch strides; loop 0 may broadcast A or B */
  int64_t b1 = gc->n_batch == 2 ? gc->batch[1] : 1;
  if (gc->n_batch >= 1) {
    g.a_bstride[0] = gc->a_bcast ? 0 : a_mat * b1;
    g.b_bstride[0] = gc->b_bcast ? 0 : b_mat * b1;
    g.c_bstride[0] = c_mat * b1;
  }
  if (gc->n_batch == 2) {
    g.a_bstride[1] = a_mat;
    g.b_bstride[1] = b_mat;
    g.c_bstride[1] = c_mat;
  }
  size_t es = gc->dtype == KILN_F32 ? 4 : 8;
  int64_t na = g.a_off + a_mat * nb + 1, nbb = g.b_off + b_mat * nb + 1, nc = g.c_off + c_mat * nb + 1;
  void *A = malloc((size_t)na * es), *B = malloc((size_t)nbb * es), *C = malloc((size_t)nc * es);
  for (int64_t i = 0; i < na; i++) setv(gc->dtype, A, i, rnd());
  for (int64_t i = 0; i < nbb; i++) setv(gc->dtype, B, i, rnd());
  for (int64_t i = 0; i < nc; i++) setv(gc->dtype, C, i, 12345.0); /* sentinel */
  void *bufs[3] = {B, C, A};
  kiln_rt_gemm(pool, &g, gc->dtype, bufs);

  double tol = gc->dtype == KILN_F32 ? 1e-4 : 1e-12;
  for (int64_t t = 0; t < nb; t++) {
    int64_t t0 = gc->n_batch == 2 ? t / b1 : t, t1 = gc->n_batch == 2 ? t % b1 : 0;
    int64_t ao = g.a_off + (gc->n_batch ? t0 * g.a_bstride[0] + t1 * g.a_bstride[1] : 0);
    int64_t bo = g.b_off + (gc->n_batch ? t0 * g.b_bstride[0] + t1 * g.b_bstride[1] : 0);
    int64_t co = g.c_off + (gc->n_batch ? t0 * g.c_bstride[0] + t1 * g.c_bstride[1] : 0);
    for (int64_t i = 0; i < gc->m; i++)
      for (int64_t j = 0; j < g.ldc; j++) {
        double got = getv(gc->dtype, C, co + i * g.ldc + j);
        if (j >= gc->n) {
          cr_assert_eq(got, 12345.0, "ld padding of C written at batch %lld [%lld,%lld]", (long long)t,
                       (long long)i, (long long)j);
          continue;
        }
        double want = 0;
        for (int64_t p = 0; p < gc->k; p++) {
          double a = getv(gc->dtype, A, ao + (gc->ta ? p * g.lda + i : i * g.lda + p));
          double b = getv(gc->dtype, B, bo + (gc->tb ? j * g.ldb + p : p * g.ldb + j));
          want += a * b;
        }
        cr_assert(fabs(got - want) <= tol * (1 + fabs(want)) * (1 + (double)gc->k),
                  "%s ta=%d tb=%d m=%lld n=%lld k=%lld batch %lld C[%lld,%lld]=%.9g want %.9g",
                  gc->dtype == KILN_F32 ? "f32" : "f64", gc->ta, gc->tb, (long long)gc->m, (long long)gc->n,
                  (long long)gc->k, (long long)t, (long long)i, (long long)j, got, want);
      }
  }
  free(A);
  free(B);
  free(C);
}

static void sweep(kiln_rt_pool *pool) {
  int64_t dims[][3] = {{1, 1, 1}, {3, 5, 7}, {8, 1, 4}, {1, 9, 2}, {17, 13, 11}};
  for (int dt = 0; dt < 2; dt++)
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++)
        for (size_t d = 0; d < sizeof dims / sizeof *dims; d++)
          for (int pad = 0; pad < 2; pad++) {
            gcase c = {dt == 0 ? KILN_F32 : KILN_F64, ta, tb, dims[d][0], dims[d][1], dims[d][2], pad * 3, 0, {0, 0}, 0, 0};
            run_case(pool, &c);
            c.n_batch = 1; c.batch[0] = 3;
            run_case(pool, &c);
            c.a_bcast = 1;
            run_case(pool, &c);
            c.a_bcast = 0; c.b_bcast = 1;
            run_case(pool, &c);
            c.n_batch = 2; c.batch[0] = 2; c.batch[1] = 3; c.b_bcast = 0; c.a_bcast = 1;
            run_case(pool, &c);
          }
}

Test(gemm, matches_naive_loop_serial) { sweep(NULL); }

Test(gemm, matches_naive_loop_with_pool) {
  kiln_rt_pool *p = kiln_rt_pool_create(NULL, 3, -1);
  sweep(p);
  kiln_rt_pool_destroy(p);
}

Test(gemm, big_products_and_many_batches) {
  kiln_rt_pool *p = kiln_rt_pool_create(NULL, 2, -1);
  gcase big = {KILN_F32, 0, 1, 150, 140, 130, 0, 1, {2, 0}, 0, 0}; /* above the "small" threshold */
  run_case(p, &big);
  gcase many = {KILN_F64, 1, 0, 4, 5, 6, 1, 2, {7, 9}, 0, 1};
  run_case(p, &many);
  kiln_rt_pool_destroy(p);
}

Test(gemm, k_zero_gives_zeros) {
  float a[1] = {1}, b[1] = {1}, c[6] = {9, 9, 9, 9, 9, 9};
  kiln_gemm_desc g;
  memset(&g, 0, sizeof g);
  g.a_buf = 0; g.b_buf = 1; g.c_buf = 2;
  g.m = 2; g.n = 3; g.k = 0; g.lda = 1; g.ldb = 3; g.ldc = 3;
  void *bufs[3] = {a, b, c};
  kiln_rt_gemm(NULL, &g, KILN_F32, bufs);
  for (int i = 0; i < 6; i++) cr_assert_eq(c[i], 0);
}

/* ------------------------------------------------------------------ concurrent callers */
#ifdef KILN_HAVE_OPENBLAS
int openblas_get_num_threads(void);
void openblas_set_num_threads(int n);
#endif

enum { CM = 64, CN = 40, CK = 48, CALLERS = 4, CALLS = 20 };
typedef struct caller {
  kiln_rt_pool *pool;
  float a[CM * CK], b[CK * CN], c[CM * CN], want[CM * CN];
  int wrong;
} caller;

static void *caller_main(void *arg) {
  caller *c = arg;
  kiln_gemm_desc g;
  memset(&g, 0, sizeof g);
  g.a_buf = 0; g.b_buf = 1; g.c_buf = 2;
  g.m = CM; g.n = CN; g.k = CK; g.lda = CK; g.ldb = CN; g.ldc = CN;
  void *bufs[3] = {c->a, c->b, c->c};
  for (int r = 0; r < CALLS; r++) {
    memset(c->c, 0xff, sizeof c->c);
    kiln_rt_gemm(c->pool, &g, KILN_F32, bufs);
    for (int i = 0; i < CM * CN; i++) c->wrong += !(fabsf(c->c[i] - c->want[i]) <= 1e-4f * (1 + fabsf(c->want[i])));
  }
  return NULL;
}

/* GEMMs from several threads at once on one pool (concurrent runs of executables) each
 * give their own product, and OpenBLAS's thread count is the caller's again after them
 * (its pinning to one thread inside Kiln's calls is counted, not saved per call). */
Test(gemm, concurrent_callers_share_a_pool) {
  static caller cs[CALLERS];
  kiln_rt_pool *p = kiln_rt_pool_create(NULL, 2, -1);
#ifdef KILN_HAVE_OPENBLAS
  openblas_set_num_threads(2);
  int before = openblas_get_num_threads();
#endif
  for (int t = 0; t < CALLERS; t++) {
    cs[t].pool = p;
    cs[t].wrong = 0;
    for (int i = 0; i < CM * CK; i++) cs[t].a[i] = (float)rnd();
    for (int i = 0; i < CK * CN; i++) cs[t].b[i] = (float)rnd();
    for (int i = 0; i < CM; i++)
      for (int j = 0; j < CN; j++) {
        double s = 0;
        for (int k = 0; k < CK; k++) s += (double)cs[t].a[i * CK + k] * cs[t].b[k * CN + j];
        cs[t].want[i * CN + j] = (float)s;
      }
  }
  pthread_t th[CALLERS];
  for (int t = 0; t < CALLERS; t++) cr_assert_eq(pthread_create(&th[t], NULL, caller_main, &cs[t]), 0);
  for (int t = 0; t < CALLERS; t++) pthread_join(th[t], NULL);
  for (int t = 0; t < CALLERS; t++) cr_expect_eq(cs[t].wrong, 0, "caller %d: %d wrong elements", t, cs[t].wrong);
#ifdef KILN_HAVE_OPENBLAS
  cr_expect_eq(openblas_get_num_threads(), before, "OpenBLAS threads %d after, %d before",
               openblas_get_num_threads(), before);
#endif
  kiln_rt_pool_destroy(p);
}
