/* pool.c - the runtime thread pool and kiln_rt_parallel_for, which generated code calls
 * to run a LOOP kernel's rows in parallel.
 *
 * A pool of threads-1 workers sleeps on a condition variable; the calling thread takes
 * part in every job, so threads == 1 means no worker threads at all. A job splits [0, n)
 * into chunks of at least `grain` rows, handed out through an atomic counter.
 *
 * One job at a time: a parallel_for that finds the pool busy (a nested call from inside a
 * kernel, or a second thread sharing the pool) runs its range serially on its own thread,
 * which is always correct and never deadlocks.
 *
 * A thread about to sleep first spins briefly when jobs are short (spin_until), so that
 * back-to-back small kernels do not pay a wake-up each.
 *
 * GEMMs (gemm.c) thread on this pool too, with OpenBLAS pinned to one thread inside
 * Kiln's calls, so OpenBLAS's own threads never compete with the pool's.
 */
#include "rt.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

struct kiln_rt_pool {
  const kiln_allocator *alloc;
  int threads;                 /* including the caller */
  int n_workers;
  pthread_t *workers;
  pthread_mutex_t run_mu;      /* held by the thread whose job is running */
  pthread_mutex_t mu;          /* guards everything below except the atomics */
  pthread_cond_t work_cv;      /* workers wait here for a new generation */
  pthread_cond_t done_cv;      /* the caller waits here for the job to finish */
  /* bumped for every job (under mu; atomic so that spin_until reads it without the lock) */
  atomic_uint_fast64_t generation;
  int active;                  /* workers that joined the current job and have not left */
  atomic_int stop;             /* set once, by destroy (atomic: spin_until reads it too) */
  /* the current job */
  kiln_rt_kernel_fn fn;
  void **bufs;
  int64_t n, chunk, n_chunks;
  atomic_int_fast64_t next;    /* next chunk to hand out */
  atomic_int_fast64_t left;    /* chunks not finished yet */
  atomic_int_fast64_t last_job_ns; /* how long the last job took (whether to spin) */
  int64_t spin_ns;               /* how long a thread spins before it sleeps (0: never) */
};

/* A thread about to sleep on a condition variable first spins for up to spin_ns (100 us;
 * kiln_rt_pool_create's spin_us sets it, from $KILN_POOL_SPIN_US through the context; 0
 * turns spinning off) on a lock-free copy of the
 * condition, when jobs are short: small kernels follow each other within microseconds,
 * and a sleeping thread takes far longer to wake (a futex wake, and on a virtual machine
 * an idle virtual CPU to resume). With the spin, at 2 threads, together with the GEMM
 * threading of gemm.c: the cnn example 0.39 -> 0.29 ms, MobileNetV2 8.6 -> 6.0 ms. After
 * a job of a millisecond or more the threads sleep at once: the wake-up is then a small
 * part of the time, and spinning would only burn the core. */
enum { DEFAULT_SPIN_NS = 100 * 1000, SPIN_AFTER_JOBS_UNDER_NS = 1000 * 1000 };

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

/* Spins until done(p, arg) or p->spin_ns pass; true when done. */
static bool spin_until(kiln_rt_pool *p, bool (*done)(kiln_rt_pool *, uint64_t), uint64_t arg) {
  if (p->spin_ns <= 0) return false;
  int64_t deadline = 0;
  for (int i = 0;; i++) {
    if (done(p, arg)) return true;
    cpu_relax();
    if ((i & 63) == 0) {
      int64_t t = now_ns();
      if (!deadline) deadline = t + p->spin_ns;
      else if (t > deadline) return false;
    }
  }
}

static bool new_job_or_stop(kiln_rt_pool *p, uint64_t seen) {
  return atomic_load(&p->generation) != seen || atomic_load(&p->stop);
}

static bool job_done(kiln_rt_pool *p, uint64_t unused) {
  (void)unused;
  return atomic_load(&p->left) == 0;
}

typedef struct job {
  kiln_rt_kernel_fn fn;
  void **bufs;
  int64_t n, chunk, n_chunks;
} job;

/* Runs chunks of the current job until none are left to claim. */
static void run_chunks(kiln_rt_pool *p, const job *j) {
  for (;;) {
    int64_t c = atomic_fetch_add(&p->next, 1);
    if (c >= j->n_chunks) return;
    int64_t b = c * j->chunk, e = b + j->chunk < j->n ? b + j->chunk : j->n;
    j->fn(j->bufs, b, e);
    if (atomic_fetch_sub(&p->left, 1) == 1) { /* the last chunk: wake the caller */
      pthread_mutex_lock(&p->mu);
      pthread_cond_broadcast(&p->done_cv);
      pthread_mutex_unlock(&p->mu);
    }
  }
}

static void *worker_main(void *arg) {
  kiln_rt_pool *p = arg;
  uint64_t seen = 0;
  pthread_mutex_lock(&p->mu);
  for (;;) {
    if (!p->stop && p->generation == seen) {
      pthread_mutex_unlock(&p->mu);
      if (atomic_load(&p->last_job_ns) < SPIN_AFTER_JOBS_UNDER_NS) spin_until(p, new_job_or_stop, seen);
      pthread_mutex_lock(&p->mu);
    }
    while (!p->stop && p->generation == seen) pthread_cond_wait(&p->work_cv, &p->mu);
    if (p->stop) break;
    seen = p->generation;
    /* Snapshot under the lock; the caller does not set up a new job while active > 0,
     * so the counters this worker touches belong to this snapshot's job. */
    job j = {p->fn, p->bufs, p->n, p->chunk, p->n_chunks};
    p->active++;
    pthread_mutex_unlock(&p->mu);
    run_chunks(p, &j);
    pthread_mutex_lock(&p->mu);
    if (--p->active == 0) pthread_cond_broadcast(&p->done_cv);
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

kiln_rt_pool *kiln_rt_pool_create(const kiln_allocator *a, int threads, int64_t spin_us) {
  if (threads <= 0) {
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    threads = c > 0 ? (int)c : 1;
  }
  kiln_rt_pool *p = kiln_ir_malloc(a, sizeof *p);
  if (!p) return NULL;
  *p = (kiln_rt_pool){.alloc = a, .threads = threads, .spin_ns = DEFAULT_SPIN_NS};
  if (spin_us >= 0) p->spin_ns = (spin_us < 1000000 ? spin_us : 1000000) * 1000;
  atomic_init(&p->next, 0);
  atomic_init(&p->generation, 0);
  atomic_init(&p->stop, 0);
  atomic_init(&p->left, 0);
  atomic_init(&p->last_job_ns, 0);
  pthread_mutex_init(&p->run_mu, NULL);
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->work_cv, NULL);
  pthread_cond_init(&p->done_cv, NULL);
  if (threads > 1) {
    p->workers = kiln_ir_malloc(a, sizeof(pthread_t) * (size_t)(threads - 1));
    if (!p->workers) {
      kiln_rt_pool_destroy(p);
      return NULL;
    }
    for (int i = 0; i < threads - 1; i++) {
      if (pthread_create(&p->workers[i], NULL, worker_main, p) != 0) break;
      p->n_workers++;
    }
    /* Fewer threads than asked (a resource limit) still work: the caller does the rest. */
    p->threads = p->n_workers + 1;
  }
  return p;
}

void kiln_rt_pool_destroy(kiln_rt_pool *p) {
  if (!p) return;
  pthread_mutex_lock(&p->mu);
  atomic_store(&p->stop, 1);
  pthread_cond_broadcast(&p->work_cv);
  pthread_mutex_unlock(&p->mu);
  for (int i = 0; i < p->n_workers; i++) pthread_join(p->workers[i], NULL);
  pthread_cond_destroy(&p->done_cv);
  pthread_cond_destroy(&p->work_cv);
  pthread_mutex_destroy(&p->mu);
  pthread_mutex_destroy(&p->run_mu);
  kiln_ir_free(p->alloc, p->workers);
  kiln_ir_free(p->alloc, p);
}

int kiln_rt_pool_threads(const kiln_rt_pool *p) { return p ? p->threads : 1; }

void kiln_rt_parallel_for(kiln_rt_pool *p, kiln_rt_kernel_fn fn, void **bufs, int64_t n,
                          int64_t grain) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  if (!p || p->threads <= 1 || n <= grain || pthread_mutex_trylock(&p->run_mu) != 0) {
    fn(bufs, 0, n); /* serial: no pool, one thread, too little work, or nested/busy */
    return;
  }
  /* About four chunks per thread balances uneven rows without much hand-out traffic. */
  int64_t target = (int64_t)p->threads * 4;
  int64_t chunk = (n + target - 1) / target;
  if (chunk < grain) chunk = grain;
  job j = {fn, bufs, n, chunk, (n + chunk - 1) / chunk};

  int64_t start = now_ns();
  pthread_mutex_lock(&p->mu);
  while (p->active > 0) pthread_cond_wait(&p->done_cv, &p->mu); /* late joiners of the last job */
  p->fn = fn;
  p->bufs = bufs;
  p->n = n;
  p->chunk = j.chunk;
  p->n_chunks = j.n_chunks;
  atomic_store(&p->next, 0);
  atomic_store(&p->left, j.n_chunks);
  atomic_fetch_add(&p->generation, 1);
  pthread_cond_broadcast(&p->work_cv);
  pthread_mutex_unlock(&p->mu);

  run_chunks(p, &j);

  if (now_ns() - start < SPIN_AFTER_JOBS_UNDER_NS) spin_until(p, job_done, 0);
  pthread_mutex_lock(&p->mu);
  while (atomic_load(&p->left) > 0) pthread_cond_wait(&p->done_cv, &p->mu);
  atomic_store(&p->last_job_ns, now_ns() - start);
  pthread_mutex_unlock(&p->mu);
  pthread_mutex_unlock(&p->run_mu);
}
