/* executable.c - kiln_compile and kiln_run: a compiled model behind one small vtable per
 * backend (LLVM JIT, CUDA; a loaded AOT library is in library.c), with run-time checking
 * of the caller's tensors. Verify mode (KILN_VERIFY=1) is in verify.c. */
#include "driver.h"
#ifdef KILN_HAVE_LLVM
#include "../codegen/llvm.h"
#endif
#ifdef KILN_HAVE_CUDA
#include "../cuda/cuda.h"
#endif

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------------ cost estimates */
void kiln_driver_program_stats(const kiln_kprogram *p, kiln_exe_stats *s) {
  memset(s, 0, sizeof *s);
  s->kernels = p->n_kernels;
  s->arena_bytes = (int64_t)p->arena_bytes;
  kiln_kernel_stats t; /* the fusion report's totals: one source of truth */
  kiln_driver_kprogram_totals(p, &t);
  s->bytes_moved = t.bytes_read + t.bytes_written;
  s->flops = t.flops;
}

/* ------------------------------------------------------------------ executable shell */
kiln_executable *kiln_driver_exe_new(kiln_context *ctx) {
  kiln_executable *e = kiln_ir_malloc(&ctx->alloc, sizeof *e);
  if (!e) return NULL;
  memset(e, 0, sizeof *e);
  e->ctx = ctx;
  e->arena = kiln_arena_create(&ctx->alloc);
  if (!e->arena) {
    kiln_ir_free(&ctx->alloc, e);
    return NULL;
  }
  return e;
}

static bool exe_io_from_program(kiln_executable *e, const kiln_kprogram *p) {
  e->n_in = p->n_inputs;
  e->n_out = p->n_outputs;
  e->in = kiln_arena_alloc(e->arena, sizeof(exe_io) * (size_t)(p->n_inputs + 1));
  e->out = kiln_arena_alloc(e->arena, sizeof(exe_io) * (size_t)(p->n_outputs + 1));
  if (!e->in || !e->out) return false;
  for (int i = 0; i < p->n_inputs; i++)
    e->in[i] = (exe_io){kiln_arena_strdup(e->arena, p->inputs[i].name), p->in_dtypes[i], p->in_shapes[i]};
  for (int i = 0; i < p->n_outputs; i++)
    e->out[i] = (exe_io){kiln_arena_strdup(e->arena, p->outputs[i].name), p->out_dtypes[i], p->out_shapes[i]};
  return true;
}

void kiln_executable_destroy(kiln_executable *e) {
  if (!e) return;
  if (e->vt && e->vt->destroy) e->vt->destroy(e);
  kiln_ir_kprogram_destroy(e->prog);
  kiln_ir_graph_destroy(e->ref);
  kiln_ir_graph_destroy(e->opt);
  kiln_allocator a = e->ctx->alloc;
  kiln_arena_destroy(e->arena);
  kiln_ir_free(&a, e);
}

#ifdef KILN_HAVE_LLVM
/* ------------------------------------------------------------------ CPU (LLVM JIT) */
/* A nonzero error word after a run: the kernel it names found its input data invalid. */
static kiln_status cpu_data_error(const kiln_executable *e, kiln_diag *d) {
  int32_t k = e->err_word - 1;
  if (k < 0 || k >= e->prog->n_kernels)
    return kiln_diag_set(d, KILN_ERR_INTERNAL, "the run's error word holds %d, not a kernel", (int)e->err_word);
  char msg[sizeof d->msg];
  kiln_ir_kernel_error_message(e->prog, k, msg, sizeof msg);
  return kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT, "%s", msg);
}

/* Verify mode: the kernels one at a time through the step function, each output checked
 * against the interpreter's value of its node on the optimized graph (computed once per
 * run) before the next kernel can overwrite anything. */
static kiln_status cpu_run_checked(kiln_executable *e, const kiln_rt_tensor *in, kiln_diag *d) {
  const kiln_kprogram *p = e->prog;
  kiln_rt_tensor *vals = NULL;
  if (kiln_rt_interpret_values(e->opt, in, e->n_in, &vals, d) != KILN_OK) return d->status;
  kiln_rt_pool *pool = kiln_driver_pool(e->ctx);
  kiln_status st = KILN_OK;
  e->err_word = 0;
  for (int32_t k = 0; k < p->n_kernels && st == KILN_OK; k++) {
    const kiln_kernel *kn = &p->kernels[k];
    e->step(e->bufs, pool, k);
    if (e->err_word) {
      st = cpu_data_error(e, d);
      break;
    }
    if (k == e->corrupt_kernel) kiln_driver_verify_corrupt(&p->buffers[kn->out_buf], e->bufs[kn->out_buf]);
    if (kn->node >= 0 && kn->node < e->opt->n_nodes) st = kiln_driver_verify_kernel(e, k, e->bufs[kn->out_buf], &vals[kn->node], d);
  }
  kiln_rt_values_free(e->opt, vals);
  return st;
}

static kiln_status cpu_run(kiln_executable *e, const kiln_rt_tensor *in, kiln_rt_tensor *out,
                           kiln_diag *d) {
  const kiln_kprogram *p = e->prog;
  for (int b = 0; b < p->n_buffers; b++) {
    const kiln_buffer *bf = &p->buffers[b];
    if (bf->kind == KILN_BUF_INPUT) e->bufs[b] = in[bf->index].data;
    else if (bf->kind == KILN_BUF_OUTPUT) e->bufs[b] = out[bf->index].data;
  }
  if (e->verify && e->step) return cpu_run_checked(e, in, d);
  e->err_word = 0;
  if (e->profile_ns && e->step) { /* kernel by kernel, each timed */
    kiln_rt_pool *pool = kiln_driver_pool(e->ctx);
    for (int32_t k = 0; k < p->n_kernels && !e->err_word; k++) {
      struct timespec t0, t1;
      clock_gettime(CLOCK_MONOTONIC, &t0);
      e->step(e->bufs, pool, k);
      clock_gettime(CLOCK_MONOTONIC, &t1);
      e->profile_ns[k] += (double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec);
    }
    e->profile_runs++;
    return e->err_word ? cpu_data_error(e, d) : KILN_OK;
  }
  e->entry(e->bufs, kiln_driver_pool(e->ctx));
  return e->err_word ? cpu_data_error(e, d) : KILN_OK;
}

/* KILN_PROFILE=1: the time of each kernel over the executable's runs, on stderr when it
 * is destroyed (a developer's view of where a model's time goes). */
static void print_profile(const kiln_executable *e) {
  const kiln_kprogram *p = e->prog;
  double total = 0;
  for (int32_t k = 0; k < p->n_kernels; k++) total += e->profile_ns[k];
  if (e->profile_runs == 0 || total <= 0) return;
  fprintf(stderr, "kiln profile: %s, %lld runs, %.3f ms per run\n", p->name ? p->name : "?",
          (long long)e->profile_runs, total / 1e6 / (double)e->profile_runs);
  for (int32_t k = 0; k < p->n_kernels; k++) {
    if (k > 0 && p->kernels[k - 1].with_next) { /* its time is on the line above */
      fprintf(stderr, "  %17s %s (ran with k%d)\n", "", p->kernels[k].name ? p->kernels[k].name : "?", (int)k - 1);
      continue;
    }
    fprintf(stderr, "  %9.3f ms %5.1f%%  %s%s\n", e->profile_ns[k] / 1e6 / (double)e->profile_runs,
            100.0 * e->profile_ns[k] / total, p->kernels[k].name ? p->kernels[k].name : "?",
            p->kernels[k].with_next ? " (and the next)" : "");
  }
}

static void cpu_destroy(kiln_executable *e) {
  if (e->profile_ns) {
    print_profile(e);
    kiln_ir_free(&e->ctx->alloc, e->profile_ns);
  }
  if (e->jit) kiln_llvm_jit_destroy(e->jit);
  kiln_ir_free(&e->ctx->alloc, e->arena_raw);
}

static const exe_backend_i cpu_backend = {"cpu", cpu_run, cpu_destroy};

/* JIT code through the compile cache. The key is a SHA-256 of codegen's fingerprint: the
 * rendered module's bitcode plus the target and code generation settings (see
 * kiln_llvm_jit_fingerprint). Keying on the module rather than on the graph or kernel
 * text makes the key exact by construction: whatever of the program, the compile options
 * or the renderer reaches the code is in the module, and nothing else is (node names,
 * constant values). Weights are not in the key because the JIT code reads every constant
 * buffer through bufs; the few values the renderer does embed (scalar constants, GEMM
 * and opaque descriptors) are in the module. Rendering costs a small fraction of O3 and
 * code generation, which a hit skips. Any cache problem falls back to compiling. */
static kiln_status cpu_cached_jit(kiln_context *ctx, const kiln_kprogram *p, kiln_llvm_jit **jit,
                                  kiln_rt_entry_fn *entry, int32_t *hit, kiln_diag *d) {
  *hit = 0;
  if (!kiln_driver_cache_enabled(ctx)) return kiln_llvm_jit_compile(p, jit, entry, d);
  void *fp = NULL, *obj = NULL;
  size_t fpn = 0, n = 0;
  char key[65];
  kiln_diag kd = {0};
  if (kiln_llvm_jit_fingerprint(p, &fp, &fpn, &kd) != KILN_OK) {
    /* Rendering failed: compiling will fail the same way, with the real message. */
    kiln_ir_free(p->alloc, fp);
    return kiln_llvm_jit_compile(p, jit, entry, d);
  }
  kiln_driver_cache_key(fp, fpn, key);
  kiln_ir_free(p->alloc, fp);
  if (kiln_driver_cache_get(ctx, key, &obj, &n)) {
    kiln_diag ld = {0};
    kiln_status st = kiln_llvm_jit_load_object(p->alloc, obj, n, KILN_LLVM_JIT_ENTRY_NAME, jit, entry, &ld);
    kiln_ir_free(&ctx->alloc, obj);
    if (st == KILN_OK) {
      *hit = 1;
      if (ctx->log_level >= 2) fprintf(stderr, "kiln: cache: hit %s\n", key);
      return KILN_OK;
    }
    if (ctx->log_level >= 1) fprintf(stderr, "kiln: cache: entry %s did not load, recompiling: %s\n", key, ld.msg);
  }
  kiln_status st = kiln_llvm_compile_object(p, &obj, &n, d);
  if (st == KILN_OK) st = kiln_llvm_jit_load_object(p->alloc, obj, n, KILN_LLVM_JIT_ENTRY_NAME, jit, entry, d);
  /* Stored only once it loaded: the cache never holds an object that failed here. */
  if (st == KILN_OK) kiln_driver_cache_put(ctx, key, obj, n);
  kiln_ir_free(p->alloc, obj);
  return st;
}

static kiln_status cpu_create(kiln_executable *e, kiln_diag *d) {
  const kiln_kprogram *p = e->prog;
  e->vt = &cpu_backend;
  e->bufs = kiln_arena_alloc(e->arena, sizeof(void *) * (size_t)(p->n_buffers + 1));
  size_t ab = (p->arena_bytes + 63) & ~(size_t)63;
  /* 64-byte aligned through the allocator hook: over-allocate and round up */
  e->arena_raw = ab ? kiln_ir_malloc(&e->ctx->alloc, ab + 63) : NULL;
  e->arena_mem = e->arena_raw ? (void *)(((uintptr_t)e->arena_raw + 63) & ~(uintptr_t)63) : NULL;
  if (!e->bufs || (ab && !e->arena_mem))
    return kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "out of memory for a %zu-byte arena", ab);
  for (int b = 0; b < p->n_buffers; b++) {
    const kiln_buffer *bf = &p->buffers[b];
    if (bf->kind == KILN_BUF_CONST) e->bufs[b] = p->consts[bf->index].data;
    else if (bf->kind == KILN_BUF_ARENA) e->bufs[b] = (char *)e->arena_mem + bf->offset;
  }
  e->bufs[p->n_buffers] = &e->err_word;
  kiln_llvm_jit *jit = NULL;
  kiln_status st = cpu_cached_jit(e->ctx, p, &jit, &e->entry, &e->stats.cache_hit, d);
  e->jit = jit;
  const char *prof = getenv("KILN_PROFILE");
  if (st == KILN_OK && prof && *prof && strcmp(prof, "0") != 0) {
    e->profile_ns = kiln_ir_malloc(&e->ctx->alloc, sizeof(double) * ((size_t)p->n_kernels + 1));
    if (e->profile_ns) memset(e->profile_ns, 0, sizeof(double) * ((size_t)p->n_kernels + 1));
  }
  if (st == KILN_OK && (e->verify || e->profile_ns)) {
    kiln_llvm_step_fn step = NULL;
    st = kiln_llvm_jit_lookup_step(jit, &step, d);
    e->step = step;
  }
  return st;
}
#endif

/* ------------------------------------------------------------------ CUDA */
#ifdef KILN_HAVE_CUDA
static kiln_status cuda_run(kiln_executable *e, const kiln_rt_tensor *in, kiln_rt_tensor *out,
                            kiln_diag *d) {
  return kiln_cuda_exec_run(e->cuda, in, e->n_in, out, e->n_out, d);
}
static void cuda_destroy(kiln_executable *e) {
  if (e->cuda) kiln_cuda_exec_destroy(e->cuda);
}
static const exe_backend_i cuda_backend = {"cuda", cuda_run, cuda_destroy};
#endif

/* ------------------------------------------------------------------ compile */
kiln_status kiln_compile(kiln_context *ctx, const kiln_graph *g, const kiln_compile_options *o,
                         kiln_executable **out) {
  if (!ctx || !g || !out) return kiln_driver_failf(ctx, KILN_ERR_INVALID_ARGUMENT, "kiln_compile: NULL argument");
  *out = NULL;
  kiln_compile_options def = {0};
  if (!o) o = &def;
  kiln_executable *e = kiln_driver_exe_new(ctx);
  if (!e) return kiln_driver_failf(ctx, KILN_ERR_OUT_OF_MEMORY, "out of memory");
  const char *ev = getenv("KILN_VERIFY");
  e->verify = o->verify || (ev && ev[0] == '1');
  e->corrupt_kernel = -1;
  const char *cv = e->verify ? getenv("KILN_VERIFY_CORRUPT_KERNEL") : NULL;
  if (cv && *cv) e->corrupt_kernel = (int32_t)strtol(cv, NULL, 10);
  kiln_status st = kiln_driver_lower_graph(ctx, g, o, NULL, &e->prog, e->verify ? &e->opt : NULL);
  if (st != KILN_OK) {
    kiln_executable_destroy(e);
    return st;
  }
  if (!exe_io_from_program(e, e->prog)) {
    kiln_executable_destroy(e);
    return kiln_driver_failf(ctx, KILN_ERR_OUT_OF_MEMORY, "out of memory");
  }
  kiln_driver_program_stats(e->prog, &e->stats);
  if (e->verify && !(e->ref = kiln_ir_graph_clone(g))) {
    kiln_executable_destroy(e);
    return kiln_driver_failf(ctx, KILN_ERR_OUT_OF_MEMORY, "out of memory");
  }
  kiln_diag d = {0};
  if (o->target == KILN_TARGET_CPU) {
#ifdef KILN_HAVE_LLVM
    st = cpu_create(e, &d);
#else
    st = kiln_diag_set(&d, KILN_ERR_UNSUPPORTED, "this Kiln was built without LLVM: the CPU target is unavailable");
#endif
  } else if (o->target == KILN_TARGET_CUDA) {
#ifdef KILN_HAVE_CUDA
    e->vt = &cuda_backend;
    kiln_cuda_exec *ce = NULL;
    st = kiln_cuda_exec_create(e->prog, o->cuda_arch, &ce, &d);
    e->cuda = ce;
#else
    st = kiln_diag_set(&d, KILN_ERR_UNSUPPORTED, "this Kiln was built without CUDA support");
#endif
  } else {
    st = kiln_diag_set(&d, KILN_ERR_INVALID_ARGUMENT, "unknown target %d", (int)o->target);
  }
  if (st != KILN_OK) {
    kiln_executable_destroy(e);
    return kiln_driver_fail(ctx, &d);
  }
  *out = e;
  return KILN_OK;
}

/* ------------------------------------------------------------------ run */
static kiln_status check_tensor(kiln_context *ctx, const char *what, int i, const exe_io *io,
                                const kiln_tensor *t) {
  if (!t->data && kiln_shape_numel(&io->shape) > 0)
    return kiln_driver_failf(ctx, KILN_ERR_INVALID_ARGUMENT, "%s %d ('%s'): data is NULL", what, i, io->name);
  if (t->dtype != io->dtype)
    return kiln_driver_failf(ctx, KILN_ERR_INVALID_ARGUMENT, "%s %d ('%s'): dtype %s, expected %s", what, i,
                             io->name, kiln_dtype_name(t->dtype), kiln_dtype_name(io->dtype));
  bool ok = t->rank == io->shape.rank;
  for (int r = 0; ok && r < t->rank; r++) ok = t->dims[r] == io->shape.dims[r];
  if (!ok) {
    char got[160] = "", want[160] = "";
    for (int r = 0; r < t->rank && r < KILN_MAX_RANK; r++)
      snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", r ? "," : "", (long long)t->dims[r]);
    for (int r = 0; r < io->shape.rank; r++)
      snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", r ? "," : "",
               (long long)io->shape.dims[r]);
    return kiln_driver_failf(ctx, KILN_ERR_INVALID_ARGUMENT, "%s %d ('%s'): shape [%s], expected [%s]", what,
                             i, io->name, got, want);
  }
  return KILN_OK;
}

kiln_rt_tensor kiln_driver_to_rt(const kiln_tensor *t) {
  kiln_rt_tensor r;
  r.dtype = t->dtype;
  r.shape = kiln_shape_make(t->rank, t->dims);
  r.data = t->data;
  return r;
}

kiln_status kiln_run(kiln_executable *e, const kiln_tensor *in, size_t n_in, kiln_tensor *out,
                     size_t n_out) {
  if (!e) return KILN_ERR_INVALID_ARGUMENT;
  kiln_context *ctx = e->ctx;
  if (n_in != (size_t)e->n_in || n_out != (size_t)e->n_out || (n_in && !in) || (n_out && !out))
    return kiln_driver_failf(ctx, KILN_ERR_INVALID_ARGUMENT, "kiln_run: %zu inputs and %zu outputs given, the model has %d and %d",
                             n_in, n_out, e->n_in, e->n_out);
  kiln_rt_tensor rin[64], rout[64];
  if (n_in > 64 || n_out > 64)
    return kiln_driver_failf(ctx, KILN_ERR_UNSUPPORTED, "kiln_run: more than 64 inputs or outputs");
  for (size_t i = 0; i < n_in; i++) {
    kiln_status st = check_tensor(ctx, "input", (int)i, &e->in[i], &in[i]);
    if (st) return st;
    rin[i] = kiln_driver_to_rt(&in[i]);
  }
  for (size_t i = 0; i < n_out; i++) {
    kiln_status st = check_tensor(ctx, "output", (int)i, &e->out[i], &out[i]);
    if (st) return st;
    rout[i] = kiln_driver_to_rt(&out[i]);
  }
  kiln_diag d = {0};
  if (e->vt->run(e, rin, rout, &d) != KILN_OK) return kiln_driver_fail(ctx, &d);
  if (e->verify && e->ref) return kiln_driver_verify_outputs(e, rin, rout);
  return KILN_OK;
}

kiln_status kiln_executable_stats(const kiln_executable *e, kiln_exe_stats *s) {
  if (!e || !s) return KILN_ERR_INVALID_ARGUMENT;
  *s = e->stats;
  return KILN_OK;
}

int32_t kiln_executable_num_inputs(const kiln_executable *e) { return e ? e->n_in : 0; }
int32_t kiln_executable_num_outputs(const kiln_executable *e) { return e ? e->n_out : 0; }

static kiln_status info(const exe_io *io, int32_t n, int32_t i, const char **name, kiln_dtype *dt,
                        int32_t *rank, int64_t *dims) {
  if (i < 0 || i >= n) return KILN_ERR_INVALID_ARGUMENT;
  if (name) *name = io[i].name;
  if (dt) *dt = io[i].dtype;
  if (rank) *rank = io[i].shape.rank;
  if (dims) memcpy(dims, io[i].shape.dims, sizeof(int64_t) * (size_t)io[i].shape.rank);
  return KILN_OK;
}
kiln_status kiln_executable_input_info(const kiln_executable *e, int32_t i, const char **name,
                                       kiln_dtype *dt, int32_t *rank, int64_t *dims) {
  return e ? info(e->in, e->n_in, i, name, dt, rank, dims) : KILN_ERR_INVALID_ARGUMENT;
}
kiln_status kiln_executable_output_info(const kiln_executable *e, int32_t i, const char **name,
                                        kiln_dtype *dt, int32_t *rank, int64_t *dims) {
  return e ? info(e->out, e->n_out, i, name, dt, rank, dims) : KILN_ERR_INVALID_ARGUMENT;
}

/* ------------------------------------------------------------------ reference */
kiln_status kiln_interpret(kiln_context *ctx, const kiln_graph *g, const kiln_tensor *in,
                           size_t n_in, kiln_tensor *out, size_t n_out) {
  if (!ctx || !g) return kiln_driver_failf(ctx, KILN_ERR_INVALID_ARGUMENT, "kiln_interpret: NULL argument");
  if (n_in != (size_t)g->n_inputs || n_out != (size_t)g->n_outputs)
    return kiln_driver_failf(ctx, KILN_ERR_INVALID_ARGUMENT, "kiln_interpret: %zu inputs and %zu outputs given, the graph has %d and %d",
                             n_in, n_out, g->n_inputs, g->n_outputs);
  if (n_in > 64 || n_out > 64) return kiln_driver_failf(ctx, KILN_ERR_UNSUPPORTED, "more than 64 inputs or outputs");
  if ((n_in && !in) || (n_out && !out))
    return kiln_driver_failf(ctx, KILN_ERR_INVALID_ARGUMENT, "kiln_interpret: %zu inputs and %zu outputs given with a NULL array",
                             n_in, n_out);
  kiln_rt_tensor rin[64], rout[64];
  for (size_t i = 0; i < n_in; i++) rin[i] = kiln_driver_to_rt(&in[i]);
  for (size_t i = 0; i < n_out; i++) rout[i] = kiln_driver_to_rt(&out[i]);
  kiln_diag d = {0};
  if (kiln_rt_interpret(g, rin, (int32_t)n_in, rout, (int32_t)n_out, &d) != KILN_OK) return kiln_driver_fail(ctx, &d);
  return KILN_OK;
}

