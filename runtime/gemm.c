/* gemm.c - kiln_rt_gemm, the GEMM kernel compiled code calls: row-major
 * C[m,n] = op(A)[m,k] * op(B)[k,n] over up to two batch loops with element strides
 * (a stride may be 0 for a broadcast operand). f32 and f64 only.
 *
 * With OpenBLAS (KILN_HAVE_OPENBLAS) each matrix product is cblas_?gemm calls. Threads:
 * Kiln's pool alone, with OpenBLAS pinned to one thread inside Kiln's calls (its setting is
 * restored after): a big product is split into bands of rows or columns (split_product),
 * a packed GEMM's tiles run in parallel (tiles_fn), many small products are spread over
 * the pool (gemm_batches_fn), and a small product runs on the caller. Without OpenBLAS a
 * plain C loop, parallel over rows.
 */
#include "rt.h"

#include <pthread.h>

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#ifdef KILN_HAVE_OPENBLAS
#include <cblas.h>
#endif

typedef struct gemm_job {
  const kiln_gemm_desc *g;
  int32_t dtype;
  char *a, *b, *c; /* base + offset, in bytes */
  size_t es;
  kiln_rt_kernel_fn epi; /* fused epilogue run after each product (NULL: none) */
  void **bufs;           /* the program's buffers, for the epilogue */
} gemm_job;

static void epilogue_of_batch(const gemm_job *j, int64_t t, bool parallel, kiln_rt_pool *pool);

/* Below this many multiply-adds per product, a product is "small": threading inside it
 * costs more than it gains, so batches are spread over the pool instead. */
#define GEMM_SMALL_FLOPS (128 * 128 * 128)
/* ... and below this many in all the batches together, the pool's hand-off costs more
 * than the products: they run one after the other on the caller (a transformer's 4-head
 * 16x16x16 attention scores: 11 -> 2 us at 2 threads). */
#define GEMM_POOL_MIN_FLOPS (64 * 64 * 64)

/* Element offset of batch number t (row-major over the batch loops) along an operand's
 * batch strides. */
static int64_t batch_offset(const kiln_gemm_desc *g, int64_t t, const int64_t *bstride) {
  if (g->n_batch == 0) return 0;
  if (g->n_batch == 1) return t * bstride[0];
  return t / g->batch[1] * bstride[0] + t % g->batch[1] * bstride[1];
}

/* Pointers of batch number t. */
static void batch_ptrs(const gemm_job *j, int64_t t, char **a, char **b, char **c) {
  const kiln_gemm_desc *g = j->g;
  *a = j->a + batch_offset(g, t, g->a_bstride) * (int64_t)j->es;
  *b = j->b + batch_offset(g, t, g->b_bstride) * (int64_t)j->es;
  *c = j->c + batch_offset(g, t, g->c_bstride) * (int64_t)j->es;
}

/* Rows [r0, r1) of one product in plain C (accumulating in the element type, like BLAS). */
#define GEMM_ROWS(T)                                                                      \
  static void gemm_rows_##T(const kiln_gemm_desc *g, const T *A, const T *B, T *C,       \
                            int64_t r0, int64_t r1) {                                     \
    for (int64_t i = r0; i < r1; i++) {                                                   \
      T *crow = C + i * g->ldc;                                                           \
      for (int64_t jj = 0; jj < g->n; jj++) crow[jj] = 0;                                 \
      for (int64_t p = 0; p < g->k; p++) {                                                \
        T av = g->trans_a ? A[p * g->lda + i] : A[i * g->lda + p];                        \
        if (g->trans_b)                                                                   \
          for (int64_t jj = 0; jj < g->n; jj++) crow[jj] += av * B[jj * g->ldb + p];      \
        else                                                                              \
          for (int64_t jj = 0; jj < g->n; jj++) crow[jj] += av * B[p * g->ldb + jj];      \
      }                                                                                   \
    }                                                                                     \
  }
GEMM_ROWS(float)
GEMM_ROWS(double)

#ifdef KILN_HAVE_OPENBLAS
static bool fits_blasint(const kiln_gemm_desc *g) {
  int64_t lim = sizeof(blasint) >= 8 ? INT64_MAX : INT32_MAX;
  return g->m <= lim && g->n <= lim && g->k <= lim && g->lda <= lim && g->ldb <= lim && g->ldc <= lim;
}
#endif

/* One whole product (batch t) on the calling thread. */
static void gemm_one(const gemm_job *j, int64_t t) {
  const kiln_gemm_desc *g = j->g;
  char *a, *b, *c;
  batch_ptrs(j, t, &a, &b, &c);
#ifdef KILN_HAVE_OPENBLAS
  if (!fits_blasint(g)) { /* dims beyond blasint (32-bit in stock OpenBLAS): plain C */
    if (j->dtype == KILN_F32) gemm_rows_float(g, (const float *)a, (const float *)b, (float *)c, 0, g->m);
    else gemm_rows_double(g, (const double *)a, (const double *)b, (double *)c, 0, g->m);
    return;
  }
  /* BLAS rejects a leading dimension below the stored row length even when there is only
   * one stored row (whose ld is then irrelevant): lift it in that case. */
  int64_t a_cols = g->trans_a ? g->m : g->k, a_rows = g->trans_a ? g->k : g->m;
  int64_t b_cols = g->trans_b ? g->k : g->n, b_rows = g->trans_b ? g->n : g->k;
  int64_t lda = a_rows <= 1 && g->lda < a_cols ? a_cols : g->lda;
  int64_t ldb = b_rows <= 1 && g->ldb < b_cols ? b_cols : g->ldb;
  int64_t ldc = g->m <= 1 && g->ldc < g->n ? g->n : g->ldc;
  enum CBLAS_TRANSPOSE ta = g->trans_a ? CblasTrans : CblasNoTrans;
  enum CBLAS_TRANSPOSE tb = g->trans_b ? CblasTrans : CblasNoTrans;
  if (j->dtype == KILN_F32)
    cblas_sgemm(CblasRowMajor, ta, tb, (blasint)g->m, (blasint)g->n, (blasint)g->k, 1.0f, (const float *)a,
                (blasint)lda, (const float *)b, (blasint)ldb, 0.0f, (float *)c, (blasint)ldc);
  else
    cblas_dgemm(CblasRowMajor, ta, tb, (blasint)g->m, (blasint)g->n, (blasint)g->k, 1.0, (const double *)a,
                (blasint)lda, (const double *)b, (blasint)ldb, 0.0, (double *)c, (blasint)ldc);
#else
  if (j->dtype == KILN_F32) gemm_rows_float(g, (const float *)a, (const float *)b, (float *)c, 0, g->m);
  else gemm_rows_double(g, (const double *)a, (const double *)b, (double *)c, 0, g->m);
#endif
}

/* parallel_for bodies: bufs[0] is the gemm_job. */
#ifdef KILN_HAVE_OPENBLAS
static void gemm_batches_fn(void **bufs, int64_t begin, int64_t end) {
  const gemm_job *j = bufs[0];
  for (int64_t t = begin; t < end; t++) {
    gemm_one(j, t);
    if (j->epi) epilogue_of_batch(j, t, false, NULL); /* while the product is in cache */
  }
}

#else
/* Rows of the flattened (batch, m) range, for the C fallback's single big products. */
static void gemm_rows_fn(void **bufs, int64_t begin, int64_t end) {
  const gemm_job *j = bufs[0];
  const kiln_gemm_desc *g = j->g;
  while (begin < end) {
    int64_t t = begin / g->m, r0 = begin % g->m, r1 = g->m;
    if (r1 - r0 > end - begin) r1 = r0 + (end - begin);
    char *a, *b, *c;
    batch_ptrs(j, t, &a, &b, &c);
    if (j->dtype == KILN_F32) gemm_rows_float(g, (const float *)a, (const float *)b, (float *)c, r0, r1);
    else gemm_rows_double(g, (const double *)a, (const double *)b, (double *)c, r0, r1);
    begin += r1 - r0;
  }
}

#endif

static void zero_c(const gemm_job *j, int64_t nb) {
  const kiln_gemm_desc *g = j->g;
  for (int64_t t = 0; t < nb; t++) {
    char *a, *b, *c;
    batch_ptrs(j, t, &a, &b, &c);
    for (int64_t i = 0; i < g->m; i++) memset(c + i * g->ldc * (int64_t)j->es, 0, (size_t)g->n * j->es);
  }
}

/* The epilogue over a tile of batch t's C: rows [i0, i0 + tm), columns [j0, j0 + tn).
 * bufs[0] of the parallel body is the epi_job. */
typedef struct epi_job {
  const kiln_gemm_desc *g;
  kiln_rt_kernel_fn epi;
  void **bufs;
  int64_t cbase, i0, j0, tn, row0; /* row0: first epilogue row when the tile is whole rows */
} epi_job;

static void epi_whole_fn(void **ctx, int64_t begin, int64_t end) {
  const epi_job *e = ctx[0];
  e->epi(e->bufs, e->row0 + begin, e->row0 + end);
}

static void epi_per_row_fn(void **ctx, int64_t m0, int64_t m1) {
  const epi_job *e = ctx[0];
  int64_t L = e->g->epi_last > 0 ? e->g->epi_last : 1;
  for (int64_t m = e->i0 + m0; m < e->i0 + m1; m++) {
    int64_t lin = e->cbase + m * e->g->ldc + e->j0;
    e->epi(e->bufs, lin / L, (lin + e->tn) / L);
  }
}

static void run_epilogue(kiln_rt_pool *pool, const kiln_gemm_desc *g, kiln_rt_kernel_fn epi, void **bufs, int64_t t,
                         int64_t i0, int64_t tm, int64_t j0, int64_t tn, bool parallel) {
  int64_t L = g->epi_last > 0 ? g->epi_last : 1;
  epi_job e = {g, epi, bufs, g->c_off + batch_offset(g, t, g->c_bstride), i0, j0, tn, 0};
  void *ctx[1] = {&e};
  int64_t first = e.cbase + i0 * g->n, count = tm * g->n;
  if (j0 == 0 && tn == g->n && g->ldc == g->n && first % L == 0 && count % L == 0) {
    /* the tile is whole rows of the output */
    e.row0 = first / L;
    int64_t rows = count / L;
    if (parallel) kiln_rt_parallel_for(pool, epi_whole_fn, ctx, rows, 16384 / L + 1);
    else epi_whole_fn(ctx, 0, rows);
  } else if (parallel) kiln_rt_parallel_for(pool, epi_per_row_fn, ctx, tm, 16384 / (tn > 0 ? tn : 1) + 1);
  else epi_per_row_fn(ctx, 0, tm);
}

static void epilogue_of_batch(const gemm_job *j, int64_t t, bool parallel, kiln_rt_pool *pool) {
  run_epilogue(pool, j->g, j->epi, j->bufs, t, 0, j->g->m, 0, j->g->n, parallel);
}

#ifdef KILN_HAVE_OPENBLAS
/* One product split over the pool: OpenBLAS runs single-threaded inside Kiln's calls
 * (kiln_rt_gemm_fused pins it), so the pool is the only set of threads and OpenBLAS's own
 * never spin beside it (they did when the two alternated, kernel after kernel: resnet18's
 * median 33 ms against 27). Each worker multiplies a band of C: rows (A's rows, then the
 * epilogue on them while they are in cache) when m >= n, else columns (B's columns; the
 * epilogue after the whole product, as its rows span the bands). */
typedef struct split_job {
  const gemm_job *j;
  int64_t t;
  bool by_rows;
} split_job;

/* Below this many rows (columns) per thread, or GEMM_SMALL_FLOPS multiply-adds in all, a
 * product runs on one thread. */
#define GEMM_SPLIT_MIN 16

static void split_fn(void **ctx, int64_t begin, int64_t end) {
  const split_job *s = ctx[0];
  const gemm_job *j = s->j;
  const kiln_gemm_desc *g = j->g;
  char *a, *b, *c;
  batch_ptrs(j, s->t, &a, &b, &c);
  kiln_gemm_desc part = *g;
  gemm_job pj = *j;
  pj.g = &part;
  part.n_batch = 0;
  int64_t es = (int64_t)j->es;
  if (s->by_rows) {
    part.m = end - begin;
    pj.a = a + (g->trans_a ? begin : begin * g->lda) * es, pj.b = b, pj.c = c + begin * g->ldc * es;
  } else {
    part.n = end - begin;
    pj.a = a, pj.b = b + (g->trans_b ? begin * g->ldb : begin) * es, pj.c = c + begin * es;
  }
  gemm_one(&pj, 0);
  if (j->epi && s->by_rows) run_epilogue(NULL, g, j->epi, j->bufs, s->t, begin, end - begin, 0, g->n, false);
}

static bool split_product(kiln_rt_pool *pool, const gemm_job *j, int64_t t, int threads) {
  const kiln_gemm_desc *g = j->g;
  split_job s = {j, t, g->m >= g->n};
  int64_t extent = s.by_rows ? g->m : g->n;
  if (extent / threads < GEMM_SPLIT_MIN || g->m * g->n * g->k < GEMM_SMALL_FLOPS) return false;
  void *ctx[1] = {&s};
  kiln_rt_parallel_for(pool, split_fn, ctx, extent, (extent + threads - 1) / threads);
  if (j->epi && !s.by_rows) epilogue_of_batch(j, t, true, pool);
  return true;
}
#endif

/* Every product of job j (nb batches), threaded as the sizes suggest; with an epilogue,
 * each product's epilogue runs right after it. */
static void run_products(kiln_rt_pool *pool, const gemm_job *j, int64_t nb) {
  const kiln_gemm_desc *g = j->g;
  if (g->k <= 0) { /* an empty sum: C = 0 (not every BLAS handles k = 0) */
    zero_c(j, nb);
    for (int64_t t = 0; j->epi && t < nb; t++) epilogue_of_batch(j, t, true, pool);
    return;
  }
  void *ctx[1] = {(void *)j};
  int threads = kiln_rt_pool_threads(pool);
#ifdef KILN_HAVE_OPENBLAS
  int64_t macs = g->m * g->n * g->k;
  if (nb > 1 && threads > 1 && macs < GEMM_SMALL_FLOPS && nb * macs >= GEMM_POOL_MIN_FLOPS) {
    kiln_rt_parallel_for(pool, gemm_batches_fn, ctx, nb, 1);
  } else {
    for (int64_t t = 0; t < nb; t++) {
      if (threads > 1 && split_product(pool, j, t, threads)) continue;
      gemm_one(j, t);
      if (j->epi) epilogue_of_batch(j, t, true, pool);
    }
  }
#else
  /* Enough rows per chunk that a chunk is worth a thread hand-off. */
  int64_t row_work = g->n * g->k > 0 ? g->n * g->k : 1;
  int64_t grain = 32768 / row_work + 1;
  if (threads <= 1) {
    for (int64_t t = 0; t < nb; t++) gemm_one(j, t);
  } else {
    kiln_rt_parallel_for(pool, gemm_rows_fn, ctx, nb * g->m, grain);
  }
  for (int64_t t = 0; j->epi && t < nb; t++) epilogue_of_batch(j, t, true, pool);
#endif
}

static gemm_job make_job(const kiln_gemm_desc *g, int32_t dtype, void **bufs, kiln_rt_kernel_fn epi) {
  gemm_job j = {g, dtype, NULL, NULL, NULL, dtype == KILN_F32 ? 4 : 8, epi, bufs};
  j.a = (char *)bufs[g->a_buf] + g->a_off * (int64_t)j.es;
  j.b = (char *)bufs[g->b_buf] + g->b_off * (int64_t)j.es;
  j.c = (char *)bufs[g->c_buf] + g->c_off * (int64_t)j.es;
  return j;
}

/* A GEMM with a pack: its tiles (A's rows with pack_a, else B's columns; tile_n each, per
 * batch) are packed into the scratch buffer, multiplied, and given the epilogue one at a
 * time. With a pool of two or more threads and several tiles, whole tiles run in parallel
 * instead (tiles_fn), each worker packing, multiplying with a one-thread OpenBLAS, and
 * running the epilogue on its own: a product of a few hundred rows is too small for
 * OpenBLAS's threads (resnet18's 56x56 3x3 convolutions: tiles of 448 pixel rows x 64
 * x 576 took 0.29 ms with two OpenBLAS threads, 0.27 ms with one), and the three phases'
 * hand-offs between the pool and OpenBLAS cost more than the work. Each worker gets a
 * copy of bufs whose tile and parameter buffers point at scratch of its own. */
enum { TILE_SLOTS = 64 };

typedef struct tile_ctx {
  const gemm_job *j;
  kiln_rt_kernel_fn pack, epi;
  int64_t extent, per_batch; /* rows (pack_a) or columns tiled, and tiles per batch */
  int n_slots;
  atomic_int busy[TILE_SLOTS];
  void **slot[TILE_SLOTS];   /* per worker: bufs, then its tile and parameters */
} tile_ctx;

/* Tile i (batch i / per_batch): pack, multiply, epilogue, each phase spread over pool
 * (NULL: all on the caller). */
static void run_tile(const tile_ctx *tc, void **bufs, int64_t i, kiln_rt_pool *pool) {
  const gemm_job *j = tc->j;
  const kiln_gemm_desc *g = j->g;
  int64_t t = i / tc->per_batch, p0 = i % tc->per_batch * g->tile_n;
  int64_t tp = tc->extent - p0 < g->tile_n ? tc->extent - p0 : g->tile_n;
  int64_t *par = bufs[g->param_buf];
  par[0] = t, par[1] = p0;
  bool k_major = !g->pack_a || g->trans_a; /* the packed tile is [k, tile_n], else [tile_n, k] */
  int64_t last = g->pack_last > 0 ? g->pack_last : k_major ? g->tile_n : g->k;
  int64_t rows = k_major ? g->k * (g->tile_n / last) : g->tile_n * (g->k / last);
  kiln_rt_parallel_for(pool, tc->pack, bufs, rows, 16384 / last + 1);
  kiln_gemm_desc tile = *g;
  gemm_job tj = *j;
  tj.g = &tile;
  tj.epi = NULL;
  tile.n_batch = 0;
  if (g->pack_a) {
    /* A's rows [p0, p0 + tp) into C's rows */
    tile.m = tp;
    tile.lda = k_major ? g->tile_n : g->k;
    tj.a = (char *)bufs[g->a_buf];
    tj.b = j->b + batch_offset(g, t, g->b_bstride) * (int64_t)j->es;
    tj.c = j->c + (batch_offset(g, t, g->c_bstride) + p0 * g->ldc) * (int64_t)j->es;
  } else {
    /* B's columns [p0, p0 + tp) into C's columns */
    tile.n = tp;
    tile.ldb = g->tile_n, tile.trans_b = 0;
    tj.a = j->a + batch_offset(g, t, g->a_bstride) * (int64_t)j->es;
    tj.b = (char *)bufs[g->b_buf];
    tj.c = j->c + (batch_offset(g, t, g->c_bstride) + p0) * (int64_t)j->es;
  }
  run_products(pool, &tj, 1);
  if (!tc->epi) return;
  if (g->pack_a) run_epilogue(pool, g, tc->epi, bufs, t, p0, tp, 0, g->n, true);
  else run_epilogue(pool, g, tc->epi, bufs, t, 0, g->m, p0, tp, true);
}

/* parallel_for body over tiles: bufs[0] is the tile_ctx; a free worker slot is claimed
 * for the chunk (at most n_slots chunks run at once: one per pool thread). */
static void tiles_fn(void **ctx, int64_t begin, int64_t end) {
  tile_ctx *tc = ctx[0];
  int s = 0;
  for (;; s = (s + 1) % tc->n_slots)
    if (atomic_exchange(&tc->busy[s], 1) == 0) break;
  for (int64_t i = begin; i < end; i++) run_tile(tc, tc->slot[s], i, NULL);
  atomic_store(&tc->busy[s], 0);
}

static void free_slots(tile_ctx *tc) {
  for (int s = 0; s < tc->n_slots; s++) free(tc->slot[s]);
  tc->n_slots = 0;
}

/* n worker slots: a copy of bufs (with the error word after the buffers), the tile
 * (64-byte aligned) and the two parameters, in one allocation each. False when out of
 * memory (the tiles then run one at a time on the program's own scratch). */
static bool tile_slots(tile_ctx *tc, void **bufs, int n) {
  const kiln_gemm_desc *g = tc->j->g;
  size_t nb = (size_t)g->n_bufs + 1, ptrs = (nb * sizeof(void *) + 63) / 64 * 64;
  size_t tile = ((size_t)g->tile_n * (size_t)g->k * tc->j->es + 63) / 64 * 64;
  for (tc->n_slots = 0; tc->n_slots < n; tc->n_slots++) {
    char *mem = aligned_alloc(64, ptrs + tile + 64);
    if (!mem) {
      free_slots(tc);
      return false;
    }
    void **b = (void **)mem;
    memcpy(b, bufs, nb * sizeof(void *));
    b[g->pack_a ? g->a_buf : g->b_buf] = mem + ptrs;
    b[g->param_buf] = mem + ptrs + tile;
    tc->slot[tc->n_slots] = b;
    atomic_init(&tc->busy[tc->n_slots], 0);
  }
  return true;
}

void kiln_rt_gemm(kiln_rt_pool *pool, const kiln_gemm_desc *g, int32_t dtype, void **bufs) {
  kiln_rt_gemm_fused(pool, g, dtype, bufs, NULL, NULL);
}

static void gemm_fused(kiln_rt_pool *pool, const kiln_gemm_desc *g, int32_t dtype, void **bufs, kiln_rt_kernel_fn pack,
                       kiln_rt_kernel_fn epi) {
  KILN_ASSERT(dtype == KILN_F32 || dtype == KILN_F64);
  KILN_ASSERT(g->n_batch >= 0 && g->n_batch <= 2);
  int64_t nb = 1;
  for (int i = 0; i < g->n_batch; i++) nb *= g->batch[i];
  if (nb <= 0 || g->m <= 0 || g->n <= 0) return;
  gemm_job j = make_job(g, dtype, bufs, epi);
  if (!pack) {
    run_products(pool, &j, nb);
    return;
  }
  KILN_ASSERT(g->tile_n > 0 && g->param_buf >= 0);
  /* a small product runs on the caller alone: each hand-off to the pool costs more than
   * its share of the work (the cnn example's 16-channel convolutions, 2.4 M multiply-adds:
   * 0.61 ms for the model split over two threads, 0.35 ms on one) */
  if (nb * g->m * g->n * g->k < GEMM_SMALL_FLOPS) pool = NULL;
  tile_ctx tc = {&j, pack, epi, g->pack_a ? g->m : g->n, 0, 0, {0}, {NULL}};
  tc.per_batch = (tc.extent + g->tile_n - 1) / g->tile_n;
  int64_t n_tiles = nb * tc.per_batch;
  int threads = kiln_rt_pool_threads(pool);
#ifdef KILN_HAVE_OPENBLAS
  if (threads > 1 && n_tiles > 1 && g->n_bufs > 0 && tile_slots(&tc, bufs, threads < TILE_SLOTS ? threads : TILE_SLOTS)) {
    void *ctx[1] = {&tc};
    kiln_rt_parallel_for(pool, tiles_fn, ctx, n_tiles, 1);
    free_slots(&tc);
    return;
  }
#endif
  (void)threads;
  for (int64_t i = 0; i < n_tiles; i++) run_tile(&tc, bufs, i, pool);
}

#ifdef KILN_HAVE_OPENBLAS
/* OpenBLAS's thread count is one setting for the whole process, so pinning it to 1 for
 * Kiln's calls is too: the first of any concurrent GEMMs (runs of executables on several
 * threads) saves the setting and the last gives it back. A save and restore per call would
 * race: a call ending while another runs would unpin the other, and the other's restore
 * would then leave 1 for good. The runtime's one piece of process-wide state, because
 * OpenBLAS's setting is. */
static pthread_mutex_t blas_mu = PTHREAD_MUTEX_INITIALIZER;
static int blas_users, blas_saved;

static void blas_pin(bool on) {
  pthread_mutex_lock(&blas_mu);
  if (on && blas_users++ == 0) {
    blas_saved = openblas_get_num_threads();
    openblas_set_num_threads(1);
  } else if (!on && --blas_users == 0) {
    openblas_set_num_threads(blas_saved);
  }
  pthread_mutex_unlock(&blas_mu);
}
#endif

void kiln_rt_gemm_fused(kiln_rt_pool *pool, const kiln_gemm_desc *g, int32_t dtype, void **bufs, kiln_rt_kernel_fn pack,
                        kiln_rt_kernel_fn epi) {
#ifdef KILN_HAVE_OPENBLAS
  /* Kiln's pool threads every product (split_product, tiles_fn, gemm_batches_fn); OpenBLAS
   * runs on the calling thread, and gets its setting back for the rest of the process. */
  blas_pin(true);
  gemm_fused(pool, g, dtype, bufs, pack, epi);
  blas_pin(false);
#else
  gemm_fused(pool, g, dtype, bufs, pack, epi);
#endif
}
