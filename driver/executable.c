/* executable.c - kiln_compile and kiln_run: lowering, then a compiled model behind one
 * small vtable per backend with the backend's private state (the CPU executor of
 * codegen/exec.c, the CUDA one of cuda/exec.c; a loaded AOT library is in library.c),
 * with run-time checking of the caller's tensors. Verify mode is in verify.c. */
#include "driver.h"
#ifdef KILN_HAVE_LLVM
#include "../codegen/llvm.h"
#endif
#ifdef KILN_HAVE_CUDA
#include "../cuda/cuda.h"
#endif

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ cost estimates */
void kiln_driver_program_stats(const kiln_kprogram *p, kiln_exe_stats *s) {
  memset(s, 0, sizeof *s);
  s->kernels = p->n_kernels;
  s->arena_bytes = (int64_t)p->arena_bytes;
  kiln_kernel_stats t; /* the fusion report's totals: one source of truth */
  kiln_ir_kprogram_totals(p, &t);
  s->bytes_moved = t.bytes_read + t.bytes_written;
  s->flops = t.flops;
}

/* ------------------------------------------------------------------ executable shell */
kiln_executable *kiln_driver_exe_new(kiln_context *ctx) {
  kiln_executable *e = kiln_ir_malloc(&ctx->alloc, sizeof *e);
  if (!e) return NULL;
  memset(e, 0, sizeof *e);
  e->ctx = ctx;
  e->corrupt_kernel = -1;
  e->arena = kiln_arena_create(&ctx->alloc);
  if (!e->arena) {
    kiln_ir_free(&ctx->alloc, e);
    return NULL;
  }
  pthread_mutex_init(&e->run_mu, NULL);
  kiln_driver_ctx_retain(ctx);
  return e;
}

static bool exe_io_from_program(kiln_executable *e, const kiln_kprogram *p) {
  e->n_in = p->n_inputs;
  e->n_out = p->n_outputs;
  e->in = kiln_arena_alloc(e->arena, sizeof(exe_io) * (size_t)(p->n_inputs + 1));
  e->out = kiln_arena_alloc(e->arena, sizeof(exe_io) * (size_t)(p->n_outputs + 1));
  if (!e->in || !e->out) return false;
  for (int i = 0; i < p->n_inputs; i++) {
    e->in[i] = (exe_io){p->inputs[i].name, p->in_dtypes[i], p->in_shapes[i], {NULL}};
    memcpy(e->in[i].dim_names, p->inputs[i].dim_names, sizeof e->in[i].dim_names); /* the program outlives e's use */
  }
  for (int i = 0; i < p->n_outputs; i++) e->out[i] = (exe_io){p->outputs[i].name, p->out_dtypes[i], p->out_shapes[i], {NULL}};
  return true;
}

void kiln_executable_destroy(kiln_executable *e) {
  if (!e) return;
  if (e->vt && e->vt->destroy) e->vt->destroy(e);
  kiln_ir_kprogram_destroy(e->prog);
  kiln_ir_graph_destroy(e->ref);
  kiln_ir_graph_destroy(e->opt);
  kiln_context *ctx = e->ctx;
  kiln_arena_destroy(e->arena);
  pthread_mutex_destroy(&e->run_mu);
  kiln_ir_free(&ctx->alloc, e);
  kiln_driver_ctx_release(ctx);
}

#ifdef KILN_HAVE_LLVM
/* ------------------------------------------------------------------ CPU (codegen/exec.c) */
static kiln_status cpu_run(kiln_executable *e, const kiln_rt_tensor *in, kiln_rt_tensor *out, kiln_diag *d) {
  if (e->verify) return kiln_driver_verify_cpu_run(e, in, out, d);
  return kiln_llvm_exec_run(e->state, in, out, NULL, NULL, d);
}

static void cpu_destroy(kiln_executable *e) { kiln_llvm_exec_destroy(e->state); }

static const exe_backend_i cpu_backend = {"cpu", cpu_run, cpu_destroy, false};

/* The disk cache (cache.c) behind codegen's cache interface. */
static void cache_key(void *ctx, const void *material, size_t n, char key[65]) {
  (void)ctx;
  kiln_driver_cache_key(material, n, key);
}
static bool cache_get(void *ctx, const char key[65], void **obj, size_t *n) {
  return kiln_driver_cache_get(ctx, key, obj, n);
}
static void cache_put(void *ctx, const char key[65], const void *obj, size_t n) {
  kiln_driver_cache_put(ctx, key, obj, n);
}

static kiln_status cpu_create(kiln_executable *e, kiln_progress progress, kiln_diag *d) {
  kiln_context *ctx = e->ctx;
  kiln_llvm_cache_i cache = {cache_key, cache_get, cache_put, ctx};
  kiln_llvm_exec_options o = {.alloc = &ctx->alloc,
                              .pool = kiln_driver_pool(ctx),
                              .cache = kiln_driver_cache_enabled(ctx) ? &cache : NULL,
                              .steps = e->verify,
                              .profile = ctx->env.profile,
                              .progress = progress};
  kiln_llvm_exec *x = NULL;
  kiln_status st = kiln_llvm_exec_create(e->prog, &o, &x, d);
  e->vt = &cpu_backend;
  e->state = x;
  e->stats.cache_hit = kiln_llvm_exec_cache_hit(x);
  return st;
}
#endif

/* ------------------------------------------------------------------ CUDA (cuda/exec.c) */
#ifdef KILN_HAVE_CUDA
static kiln_status cuda_run(kiln_executable *e, const kiln_rt_tensor *in, kiln_rt_tensor *out,
                            kiln_diag *d) {
  return kiln_cuda_exec_run(e->state, in, e->n_in, out, e->n_out, d);
}
static void cuda_destroy(kiln_executable *e) {
  if (e->state) kiln_cuda_exec_destroy(e->state);
}
/* One set of device buffers per program: runs are serialized. */
static const exe_backend_i cuda_backend = {"cuda", cuda_run, cuda_destroy, true};
#endif

/* ------------------------------------------------------------------ compile */
static kiln_status backend_create(kiln_executable *e, const kiln_compile_options *o, kiln_progress progress,
                                  kiln_diag *d) {
  (void)progress;
  if (o->target == KILN_TARGET_CPU) {
#ifdef KILN_HAVE_LLVM
    return cpu_create(e, progress, d);
#else
    return kiln_diag_set(d, KILN_ERR_UNSUPPORTED, "this Kiln was built without LLVM: the CPU target is unavailable");
#endif
  }
  if (o->target == KILN_TARGET_CUDA) {
#ifdef KILN_HAVE_CUDA
    e->vt = &cuda_backend;
    kiln_cuda_exec *ce = NULL;
    kiln_status st = kiln_cuda_exec_create(e->prog, o->cuda_arch, &ce, d);
    e->state = ce;
    return st;
#else
    return kiln_diag_set(d, KILN_ERR_UNSUPPORTED, "this Kiln was built without CUDA support");
#endif
  }
  return kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT, "unknown target %d", (int)o->target);
}

kiln_status kiln_compile(kiln_context *ctx, const kiln_graph *g, const kiln_compile_options *o,
                         kiln_executable **out) {
  if (!ctx || !g || !out) return kiln_driver_failf(ctx, KILN_ERR_INVALID_ARGUMENT, "kiln_compile: NULL argument");
  *out = NULL;
  kiln_compile_options def = {0};
  if (!o) o = &def;
  kiln_executable *e = kiln_driver_exe_new(ctx);
  if (!e) return kiln_driver_failf(ctx, KILN_ERR_OUT_OF_MEMORY, "out of memory");
  e->verify = o->verify || ctx->env.verify;
  if (e->verify) e->corrupt_kernel = ctx->env.corrupt_kernel;
  kiln_driver_progress ps;
  kiln_progress progress = kiln_driver_progress_start(ctx, &ps);
  kiln_status st = kiln_driver_lower_with(ctx, g, o, NULL, progress, &e->prog, e->verify ? &e->opt : NULL);
  if (st != KILN_OK) {
    kiln_executable_destroy(e);
    return st;
  }
  if (!exe_io_from_program(e, e->prog) || (e->verify && !(e->ref = kiln_ir_graph_clone(g)))) {
    kiln_executable_destroy(e);
    return kiln_driver_failf(ctx, KILN_ERR_OUT_OF_MEMORY, "out of memory");
  }
  kiln_driver_program_stats(e->prog, &e->stats);
  kiln_diag d = {0};
  if (backend_create(e, o, progress, &d) != KILN_OK) {
    kiln_executable_destroy(e);
    return kiln_driver_fail(ctx, &d);
  }
  *out = e;
  return KILN_OK;
}

/* ------------------------------------------------------------------ run */
/* For a shape that does not fit io: which of its symbolic dims differ, and the binding
 * that would make each fit ("; dim 0 is the symbol 'batch' ..."). */
static void symbol_hint(const exe_io *io, const kiln_tensor *t, char *out, size_t n) {
  out[0] = 0;
  if (t->rank != io->shape.rank) return;
  for (int r = 0; r < t->rank; r++) {
    const char *sym = io->dim_names[r];
    if (!sym || t->dims[r] == io->shape.dims[r]) continue;
    size_t j = strlen(out);
    snprintf(out + j, n - j,
             "; dim %d is the symbol '%s', bound to %lld when the model was loaded: bind %s=%lld to fit "
             "(kiln_load_options; kiln --bind %s=%lld)",
             r, sym, (long long)io->shape.dims[r], sym, (long long)t->dims[r], sym, (long long)t->dims[r]);
  }
}

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
    char got[160] = "", want[400] = "", hint[1200];
    for (int r = 0; r < t->rank && r < KILN_MAX_RANK; r++)
      snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", r ? "," : "", (long long)t->dims[r]);
    for (int r = 0; r < io->shape.rank; r++)
      snprintf(want + strlen(want), sizeof want - strlen(want), "%s%s%s%lld", r ? "," : "",
               io->dim_names[r] ? io->dim_names[r] : "", io->dim_names[r] ? "=" : "", (long long)io->shape.dims[r]);
    symbol_hint(io, t, hint, sizeof hint);
    return kiln_driver_failf(ctx, KILN_ERR_INVALID_ARGUMENT, "%s %d ('%s'): shape [%s], expected [%s]%s", what,
                             i, io->name, got, want, hint);
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
  if (e->vt->serial) pthread_mutex_lock(&e->run_mu);
  kiln_status st = e->vt->run(e, rin, rout, &d);
  if (e->vt->serial) pthread_mutex_unlock(&e->run_mu);
  if (st != KILN_OK) return kiln_driver_fail(ctx, &d);
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

