/* exec.c - the CPU executor: a kernel program's JIT code, compiled through the compile
 * cache when given one (render once, fingerprint that module, and on a miss optimize and
 * compile the same module), and the scratch memory of its runs. Runs may be concurrent:
 * each takes a run state (bufs, arena, error word) from a free list or makes one, so the
 * executor holds as many arenas as the most runs it has seen at once. The runs share the
 * pool; kiln_rt_parallel_for gives its workers to one run at a time and runs the others'
 * loops on their own threads. Per-kernel modes: a kernel hook after each kernel (the
 * driver's verify mode) and profiling (KILN_PROFILE), both through the step function. */
#include "llvm_impl.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* The scratch of one run. bufs[b] is buffer b's base: constants and arena slots are set
 * once, inputs and outputs at each run; bufs[n_buffers] points to err_word (the runtime's
 * error word, rt.h). One allocation: the struct, bufs, then the 64-byte aligned arena. */
typedef struct run_state {
  struct run_state *next; /* in the free list */
  void **bufs;
  int32_t err_word;
} run_state;

struct kiln_llvm_exec {
  const kiln_kprogram *p;
  const kiln_allocator *alloc;
  kiln_rt_pool *pool;
  kiln_llvm_jit *jit;
  kiln_rt_entry_fn entry;
  kiln_llvm_step_fn step;   /* NULL unless steps or profile was asked for */
  int32_t cache_hit;
  pthread_mutex_t mu;       /* guards free_states and the profile */
  run_state *free_states;
  double *profile_ns;       /* profile: time spent in each kernel over all runs */
  int64_t profile_runs;
};

/* ------------------------------------------------------------------ compiling */
/* JIT code through the compile cache. The key comes from the rendered module's bitcode
 * plus the target and code generation settings (kiln_llvm_jit_module_fingerprint):
 * keying on the module rather than on the graph or kernel text makes the key exact by
 * construction, since whatever of the program, the options or the renderer reaches the
 * code is in the module, and nothing else is (node names, constant values). Weights are
 * not in the key because JIT code reads every constant buffer through bufs; the few values
 * the renderer embeds (scalar constants, GEMM and opaque descriptors) are in the module.
 * Any cache problem falls back to compiling. */
static kiln_status compile(kiln_llvm_exec *e, const kiln_llvm_exec_options *o, kiln_diag *d) {
  const kiln_kprogram *p = e->p;
  const kiln_llvm_cache_i *c = o->cache;
  kiln_llvm_jit_module jm;
  kiln_status st = kiln_llvm_jit_render(p, &jm, d);
  if (st == KILN_OK) kiln_progress_report(&o->progress, "rendered %d kernels into LLVM IR", (int)p->n_kernels);
  char key[65];
  bool keyed = false;
  if (st == KILN_OK && c) {
    void *fp = NULL, *obj = NULL;
    size_t fpn = 0, n = 0;
    kiln_diag kd = {0};
    if (kiln_llvm_jit_module_fingerprint(&jm, &fp, &fpn, &kd) == KILN_OK) {
      c->key(c->user, fp, fpn, key);
      keyed = true;
    }
    kiln_ir_free(jm.alloc, fp);
    if (keyed && c->get(c->user, key, &obj, &n)) {
      kiln_diag ld = {0};
      st = kiln_llvm_jit_load_object(e->alloc, obj, n, KILN_LLVM_JIT_ENTRY, &e->jit, &e->entry, &ld);
      kiln_ir_free(e->alloc, obj);
      if (st == KILN_OK) {
        e->cache_hit = 1;
        kiln_llvm_jit_module_dispose(&jm);
        kiln_progress_report(&o->progress, "loaded %d kernels from the compile cache", (int)p->n_kernels);
        return KILN_OK;
      }
      kiln_progress_report(&o->progress, "compile cache entry %s did not load, recompiling: %s", key, ld.msg);
      st = KILN_OK;
    }
  }
  void *obj = NULL;
  size_t n = 0;
  if (st == KILN_OK) st = kiln_llvm_jit_module_object(&jm, &obj, &n, d);
  kiln_llvm_jit_module_dispose(&jm);
  if (st == KILN_OK) {
    kiln_progress_report(&o->progress, "optimized and compiled %d kernels (%zu bytes of machine code)",
                         (int)p->n_kernels, n);
    st = kiln_llvm_jit_load_object(e->alloc, obj, n, KILN_LLVM_JIT_ENTRY, &e->jit, &e->entry, d);
  }
  /* Stored only once it loaded: the cache never holds an object that failed here. */
  if (st == KILN_OK && keyed) c->put(c->user, key, obj, n);
  kiln_ir_free(p->alloc, obj);
  return st;
}

kiln_status kiln_llvm_exec_create(const kiln_kprogram *p, const kiln_llvm_exec_options *o, kiln_llvm_exec **out,
                                  kiln_diag *d) {
  *out = NULL;
  const kiln_allocator *a = o->alloc ? o->alloc : p->alloc;
  kiln_llvm_exec *e = kiln_ir_malloc(a, sizeof *e);
  if (!e) return kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory creating the executor");
  memset(e, 0, sizeof *e);
  e->p = p;
  e->alloc = a;
  e->pool = o->pool;
  pthread_mutex_init(&e->mu, NULL);
  kiln_status st = compile(e, o, d);
  if (st == KILN_OK && o->profile) {
    e->profile_ns = kiln_ir_malloc(a, sizeof(double) * ((size_t)p->n_kernels + 1));
    if (!e->profile_ns) st = kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory for the profile");
    else memset(e->profile_ns, 0, sizeof(double) * ((size_t)p->n_kernels + 1));
  }
  if (st == KILN_OK && (o->steps || o->profile)) st = kiln_llvm_jit_lookup_step(e->jit, &e->step, d);
  if (st != KILN_OK) {
    kiln_llvm_exec_destroy(e);
    return st;
  }
  *out = e;
  return KILN_OK;
}

int32_t kiln_llvm_exec_cache_hit(const kiln_llvm_exec *e) { return e ? e->cache_hit : 0; }

/* ------------------------------------------------------------------ run states */
static run_state *new_state(const kiln_llvm_exec *e) {
  const kiln_kprogram *p = e->p;
  size_t head = (sizeof(run_state) + sizeof(void *) * (size_t)(p->n_buffers + 1) + 63) & ~(size_t)63;
  size_t ab = (p->arena_bytes + 63) & ~(size_t)63;
  /* 64-byte aligned through the allocator hook: over-allocate and round up */
  char *raw = kiln_ir_malloc(e->alloc, head + ab + 63);
  if (!raw) return NULL;
  run_state *s = (run_state *)raw;
  s->next = NULL;
  s->bufs = (void **)(raw + sizeof(run_state));
  char *arena = (char *)(((uintptr_t)raw + head + 63) & ~(uintptr_t)63);
  for (int32_t b = 0; b < p->n_buffers; b++) {
    const kiln_buffer *bf = &p->buffers[b];
    s->bufs[b] = bf->kind == KILN_BUF_CONST   ? p->consts[bf->index].data
                 : bf->kind == KILN_BUF_ARENA ? arena + bf->offset
                                              : NULL;
  }
  s->bufs[p->n_buffers] = &s->err_word;
  return s;
}

static run_state *take_state(kiln_llvm_exec *e) {
  pthread_mutex_lock(&e->mu);
  run_state *s = e->free_states;
  if (s) e->free_states = s->next;
  pthread_mutex_unlock(&e->mu);
  return s ? s : new_state(e);
}

static void give_state(kiln_llvm_exec *e, run_state *s) {
  pthread_mutex_lock(&e->mu);
  s->next = e->free_states;
  e->free_states = s;
  pthread_mutex_unlock(&e->mu);
}

/* ------------------------------------------------------------------ running */
/* A nonzero error word after a run: the kernel it names found its input data invalid. */
static kiln_status data_error(const kiln_llvm_exec *e, int32_t word, kiln_diag *d) {
  int32_t k = word - 1;
  if (k < 0 || k >= e->p->n_kernels)
    return kiln_diag_set(d, KILN_ERR_INTERNAL, "the run's error word holds %d, not a kernel", (int)word);
  char msg[sizeof d->msg];
  kiln_ir_kernel_error_message(e->p, k, msg, sizeof msg);
  return kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT, "%s", msg);
}

static double now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

/* Kernel by kernel through the step function: the hook after each (it may stop the run),
 * or each kernel timed into the profile. */
static kiln_status run_steps(kiln_llvm_exec *e, run_state *s, kiln_llvm_kernel_hook hook, void *user,
                             kiln_diag *d) {
  const kiln_kprogram *p = e->p;
  for (int32_t k = 0; k < p->n_kernels; k++) {
    double t0 = hook ? 0 : now_ns();
    e->step(s->bufs, e->pool, k);
    if (s->err_word) return data_error(e, s->err_word, d);
    if (hook) {
      kiln_status st = hook(user, k, s->bufs, d);
      if (st != KILN_OK) return st;
      continue;
    }
    double t = now_ns() - t0;
    pthread_mutex_lock(&e->mu);
    e->profile_ns[k] += t;
    pthread_mutex_unlock(&e->mu);
  }
  if (!hook) {
    pthread_mutex_lock(&e->mu);
    e->profile_runs++;
    pthread_mutex_unlock(&e->mu);
  }
  return KILN_OK;
}

kiln_status kiln_llvm_exec_run(kiln_llvm_exec *e, const kiln_rt_tensor *in, kiln_rt_tensor *out,
                               kiln_llvm_kernel_hook hook, void *user, kiln_diag *d) {
  if (hook && !e->step)
    return kiln_diag_set(d, KILN_ERR_INTERNAL, "a kernel hook needs the step function (exec options .steps)");
  run_state *s = take_state(e);
  if (!s) return kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory for a %zu-byte arena", e->p->arena_bytes);
  const kiln_kprogram *p = e->p;
  for (int32_t b = 0; b < p->n_buffers; b++) {
    const kiln_buffer *bf = &p->buffers[b];
    if (bf->kind == KILN_BUF_INPUT) s->bufs[b] = in[bf->index].data;
    else if (bf->kind == KILN_BUF_OUTPUT) s->bufs[b] = out[bf->index].data;
  }
  s->err_word = 0;
  kiln_status st = KILN_OK;
  if (hook || e->profile_ns) {
    st = run_steps(e, s, hook, user, d);
  } else {
    e->entry(s->bufs, e->pool);
    if (s->err_word) st = data_error(e, s->err_word, d);
  }
  give_state(e, s);
  return st;
}

/* ------------------------------------------------------------------ profile, destroy */
/* The time of each kernel over the executor's runs, on stderr (a developer's view of
 * where a model's time goes). */
static void print_profile(const kiln_llvm_exec *e) {
  const kiln_kprogram *p = e->p;
  double total = 0;
  for (int32_t k = 0; k < p->n_kernels; k++) total += e->profile_ns[k];
  if (e->profile_runs == 0 || total <= 0) return;
  double runs = (double)e->profile_runs;
  fprintf(stderr, "kiln profile: %s, %lld runs, %.3f ms per run\n", p->name ? p->name : "?",
          (long long)e->profile_runs, total / 1e6 / runs);
  for (int32_t k = 0; k < p->n_kernels; k++) {
    const char *name = p->kernels[k].name ? p->kernels[k].name : "?";
    if (k > 0 && p->kernels[k - 1].with_next) { /* its time is on the line above */
      fprintf(stderr, "  %17s %s (ran with k%d)\n", "", name, (int)k - 1);
      continue;
    }
    fprintf(stderr, "  %9.3f ms %5.1f%%  %s%s\n", e->profile_ns[k] / 1e6 / runs, 100.0 * e->profile_ns[k] / total,
            name, p->kernels[k].with_next ? " (and the next)" : "");
  }
}

void kiln_llvm_exec_destroy(kiln_llvm_exec *e) {
  if (!e) return;
  if (e->profile_ns) {
    print_profile(e);
    kiln_ir_free(e->alloc, e->profile_ns);
  }
  while (e->free_states) {
    run_state *s = e->free_states;
    e->free_states = s->next;
    kiln_ir_free(e->alloc, s);
  }
  if (e->jit) kiln_llvm_jit_destroy(e->jit);
  pthread_mutex_destroy(&e->mu);
  kiln_ir_free(e->alloc, e);
}
