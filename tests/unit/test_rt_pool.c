/* test_rt_pool.c - the thread pool: kiln_rt_parallel_for runs every row of [0, n) exactly
 * once, in chunks of at least `grain` (except the last), for many n/grain/thread counts,
 * with no pool, nested inside itself, from two threads sharing one pool, and with the
 * threads spinning before they sleep or not (KILN_POOL_SPIN_US). */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../runtime/rt.h"

#define MAX_N 5000

typedef struct cover {
  atomic_int hits[MAX_N];
  atomic_int bad_chunks; /* chunks smaller than grain that do not end at n */
  atomic_int calls;
  int64_t n, grain;
  kiln_rt_pool *pool; /* for the nested test */
} cover;

static void count_rows(void **bufs, int64_t begin, int64_t end) {
  cover *c = bufs[0];
  atomic_fetch_add(&c->calls, 1);
  if (end - begin < c->grain && end != c->n) atomic_fetch_add(&c->bad_chunks, 1);
  for (int64_t i = begin; i < end; i++) atomic_fetch_add(&c->hits[i], 1);
}

static void check_cover(kiln_rt_pool *p, int64_t n, int64_t grain) {
  static cover c; /* large: keep off the stack */
  memset(&c, 0, sizeof c);
  c.n = n;
  c.grain = grain < 1 ? 1 : grain;
  void *bufs[1] = {&c};
  kiln_rt_parallel_for(p, count_rows, bufs, n, grain);
  for (int64_t i = 0; i < n; i++)
    cr_assert_eq(atomic_load(&c.hits[i]), 1, "row %lld hit %d times (n=%lld grain=%lld threads=%d)",
                 (long long)i, atomic_load(&c.hits[i]), (long long)n, (long long)grain, kiln_rt_pool_threads(p));
  cr_assert_eq(atomic_load(&c.bad_chunks), 0, "chunk below grain (n=%lld grain=%lld)", (long long)n, (long long)grain);
  if (n == 0) cr_assert_eq(atomic_load(&c.calls), 0, "n = 0 runs nothing");
}

Test(pool, covers_every_row_once) {
  int threads[] = {1, 2, 3, 8};
  int64_t ns[] = {0, 1, 2, 7, 64, 100, 1000, 4999};
  int64_t grains[] = {0, 1, 3, 16, 1000, 10000};
  for (size_t t = 0; t < sizeof threads / sizeof *threads; t++) {
    kiln_rt_pool *p = kiln_rt_pool_create(NULL, threads[t], -1);
    cr_assert(p);
    cr_assert_eq(kiln_rt_pool_threads(p), threads[t]);
    for (size_t i = 0; i < sizeof ns / sizeof *ns; i++)
      for (size_t g = 0; g < sizeof grains / sizeof *grains; g++) check_cover(p, ns[i], grains[g]);
    kiln_rt_pool_destroy(p);
  }
}

Test(pool, null_pool_runs_serially) {
  check_cover(NULL, 1000, 1);
  cr_assert_eq(kiln_rt_pool_threads(NULL), 1);
}

Test(pool, default_thread_count_is_positive) {
  kiln_rt_pool *p = kiln_rt_pool_create(NULL, 0, -1);
  cr_assert(p && kiln_rt_pool_threads(p) >= 1);
  check_cover(p, 333, 2);
  kiln_rt_pool_destroy(p);
}

Test(pool, many_jobs_back_to_back) {
  kiln_rt_pool *p = kiln_rt_pool_create(NULL, 4, -1);
  for (int r = 0; r < 300; r++) check_cover(p, 1 + r % 97, 1);
  kiln_rt_pool_destroy(p);
}

/* Nested: each outer row runs an inner parallel_for on the same pool. */
typedef struct nested {
  kiln_rt_pool *pool;
  atomic_int hits[64][64];
} nested;

static void inner_rows(void **bufs, int64_t b, int64_t e) {
  nested *s = bufs[0];
  int64_t row = (int64_t)(intptr_t)bufs[1];
  for (int64_t i = b; i < e; i++) atomic_fetch_add(&s->hits[row][i], 1);
}

static void outer_rows(void **bufs, int64_t b, int64_t e) {
  nested *s = bufs[0];
  for (int64_t r = b; r < e; r++) {
    void *ib[2] = {s, (void *)(intptr_t)r};
    kiln_rt_parallel_for(s->pool, inner_rows, ib, 64, 1);
  }
}

Test(pool, nested_parallel_for_runs_inline) {
  static nested s;
  memset(&s, 0, sizeof s);
  s.pool = kiln_rt_pool_create(NULL, 3, -1);
  void *bufs[1] = {&s};
  kiln_rt_parallel_for(s.pool, outer_rows, bufs, 64, 1);
  for (int r = 0; r < 64; r++)
    for (int i = 0; i < 64; i++) cr_assert_eq(atomic_load(&s.hits[r][i]), 1, "[%d][%d]", r, i);
  kiln_rt_pool_destroy(s.pool);
}

/* Two threads share one pool: one runs its job on the pool, the other serially. */
typedef struct sharer {
  kiln_rt_pool *pool;
  cover c;
} sharer;

static void *share_main(void *arg) {
  sharer *s = arg;
  void *bufs[1] = {&s->c};
  for (int r = 0; r < 50; r++) kiln_rt_parallel_for(s->pool, count_rows, bufs, s->c.n, 1);
  return NULL;
}

Test(pool, two_callers_share_a_pool) {
  static sharer s[2];
  memset(s, 0, sizeof s);
  kiln_rt_pool *p = kiln_rt_pool_create(NULL, 3, -1);
  pthread_t th[2];
  for (int i = 0; i < 2; i++) {
    s[i].pool = p;
    s[i].c.n = 500;
    s[i].c.grain = 1;
    pthread_create(&th[i], NULL, share_main, &s[i]);
  }
  for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
  for (int i = 0; i < 2; i++)
    for (int r = 0; r < 500; r++) cr_assert_eq(atomic_load(&s[i].c.hits[r]), 50);
  kiln_rt_pool_destroy(p);
}

/* Threads that spin before they sleep (the default) and threads that never spin
 * (spin_us 0, from KILN_POOL_SPIN_US=0 through the context) run the same jobs the same way.
 * Short jobs back to back (the spinning case) and long gaps (the sleeping one). */
Test(pool, spin_settings_keep_every_row_once) {
  static const int64_t settings[] = {0, 50, 100000, 5000000, -1};
  for (int s = 0; s < 5; s++) {
    kiln_rt_pool *p = kiln_rt_pool_create(NULL, 3, settings[s]);
    cr_assert(p);
    for (int i = 0; i < 200; i++) check_cover(p, 1 + i * 7 % 997, 1 + i % 5);
    usleep(2000); /* past any spin: the workers sleep, then wake for the next job */
    check_cover(p, 4000, 3);
    kiln_rt_pool_destroy(p);
  }
}
