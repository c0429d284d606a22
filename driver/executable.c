/* executable.c - kiln_compile / kiln_run / kiln_export / kiln_load_library: a compiled
 * model behind one small vtable per backend (LLVM JIT, CUDA, a loaded AOT library), with
 * run-time checking of the caller's tensors and verify mode (KILN_VERIFY=1): on the CPU
 * every kernel's output is compared with the reference interpreter's value of its node
 * as soon as the kernel has run, naming the first kernel that disagrees; on every
 * backend the final outputs are compared with the interpreter on the source graph. */
#include "driver.h"
#ifdef KILN_HAVE_LLVM
#include "../codegen/llvm.h"
#endif
#ifdef KILN_HAVE_CUDA
#include "../cuda/cuda.h"
#endif

#include <dlfcn.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct exe_backend_i {
  const char *name;
  kiln_status (*run)(kiln_executable *e, const kiln_rt_tensor *in, kiln_rt_tensor *out, kiln_diag *d);
  void (*destroy)(kiln_executable *e);
} exe_backend_i;

typedef struct exe_io {
  const char *name;
  kiln_dtype dtype;
  kiln_shape shape;
} exe_io;

struct kiln_executable {
  kiln_context *ctx;
  const exe_backend_i *vt;
  kiln_arena *arena;        /* io names, bufs */
  kiln_kprogram *prog;      /* NULL for a loaded library */
  kiln_graph *ref;          /* the source graph, kept for verify mode */
  kiln_graph *opt;          /* verify mode: the optimized graph that was lowered */
  bool verify;
  int32_t corrupt_kernel;   /* verify mode test hook (KILN_VERIFY_CORRUPT_KERNEL), or -1 */
  int32_t n_in, n_out;
  exe_io *in, *out;
  kiln_exe_stats stats;
  /* LLVM JIT */
  void *jit;
  kiln_rt_entry_fn entry;
  void (*step)(void **bufs, kiln_rt_pool *pool, int32_t k); /* verify mode: one kernel */
  void *arena_mem;          /* 64-byte aligned, inside arena_raw */
  void *arena_raw;
  void **bufs;              /* n_buffers + 1: the last slot points to err_word */
  int32_t err_word;         /* the run's error word (runtime ABI, rt.h) */
  /* CUDA */
  void *cuda;
  /* AOT library */
  void *dl;
  const kiln_aot_model *model;
  void *inst;
};

/* ------------------------------------------------------------------ cost estimates */
void kiln_driver_program_stats(const kiln_kprogram *p, kiln_exe_stats *s) {
  memset(s, 0, sizeof *s);
  s->kernels = p->n_kernels;
  s->arena_bytes = (int64_t)p->arena_bytes;
  bool *seen = kiln_ir_malloc(p->alloc, (size_t)p->n_buffers + 1);
  for (int k = 0; k < p->n_kernels; k++) {
    const kiln_kernel *kn = &p->kernels[k];
    int64_t points = kiln_shape_numel(&kn->out);
    s->bytes_moved += (int64_t)p->buffers[kn->out_buf].nbytes;
    if (seen) memset(seen, 0, (size_t)p->n_buffers);
    if (kn->kind == KILN_KERNEL_LOOP) {
      int64_t inner = 1;
      for (int v = kn->out.rank; v < kn->n_vars; v++) inner *= kn->extent[v];
      int64_t alu = 0;
      for (int i = 0; i < kn->n_kx; i++) {
        const kiln_kx *x = &kn->kx[i];
        if (x->kind == KILN_KX_LOAD && seen && !seen[x->buf]) {
          seen[x->buf] = true;
          s->bytes_moved += (int64_t)p->buffers[x->buf].nbytes;
        }
        if (x->kind == KILN_KX_ALU && x->dtype != KILN_I64) alu++;
      }
      s->flops += points * alu * (inner > 1 ? inner : 1);
    } else if (kn->kind == KILN_KERNEL_GEMM) {
      const kiln_gemm_desc *gd = &kn->gemm;
      int64_t batch = 1;
      for (int b = 0; b < gd->n_batch; b++) batch *= gd->batch[b];
      s->flops += 2 * batch * gd->m * gd->n * gd->k;
      s->bytes_moved += (int64_t)p->buffers[gd->a_buf].nbytes + (int64_t)p->buffers[gd->b_buf].nbytes;
    } else {
      for (int i = 0; i < kn->n_in_bufs; i++) s->bytes_moved += (int64_t)p->buffers[kn->in_bufs[i]].nbytes;
    }
  }
  kiln_ir_free(p->alloc, seen);
}

/* ------------------------------------------------------------------ lowering */
kiln_status kiln_driver_lower(kiln_context *ctx, const kiln_graph *g, const kiln_compile_options *o,
                              FILE *to, kiln_kprogram **out) {
  return kiln_driver_lower_graph(ctx, g, o, to, out, NULL);
}

kiln_status kiln_driver_lower_graph(kiln_context *ctx, const kiln_graph *g, const kiln_compile_options *o,
                                    FILE *to, kiln_kprogram **out, kiln_graph **lowered) {
  *out = NULL;
  if (lowered) *lowered = NULL;
  if (g->diag.status != KILN_OK)
    return kiln_driver_failf(ctx, g->diag.status, "the graph has a builder error: %s", g->diag.msg);
  if (g->n_outputs == 0)
    return kiln_driver_failf(ctx, KILN_ERR_INVALID_ARGUMENT, "graph '%s' has no outputs", g->name);
  kiln_graph *work = kiln_ir_graph_clone(g);
  if (!work) return kiln_driver_failf(ctx, KILN_ERR_OUT_OF_MEMORY, "out of memory copying the graph");
  kiln_pipeline_options po = {0};
  po.target.target = o ? o->target : KILN_TARGET_CPU;
  po.target.fusion = o ? o->fusion : KILN_FUSION_FULL;
  po.disable = o ? o->disable_passes : NULL;
  po.print_after = o ? o->print_after : NULL;
  po.print_to = to;
  po.verify_each = getenv("KILN_VERIFY_PASSES") != NULL;
  kiln_diag d = {0};
  kiln_status st = kiln_pass_pipeline(work, &po, out, &d);
  /* The passes rewrote work in place: it is the graph that was lowered. */
  if (st == KILN_OK && lowered) *lowered = work;
  else kiln_ir_graph_destroy(work);
  if (st != KILN_OK) return kiln_driver_fail(ctx, &d);
  return KILN_OK;
}

/* ------------------------------------------------------------------ executable shell */
static kiln_executable *exe_new(kiln_context *ctx) {
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
/* ------------------------------------------------------------------ per-kernel verify */
/* How far a compiled value may be from the interpreter's: integers and bool exactly;
 * floats within rtol of the tensor's scale (its largest finite |value|) plus atol, since
 * fused kernels round differently and errors of earlier kernels flow in. */
static void verify_tolerance(kiln_dtype dt, double *rtol, double *atol) {
  switch (dt) {
  case KILN_F64: *rtol = 1e-9, *atol = 1e-12; break;
  case KILN_F32: *rtol = 1e-4, *atol = 1e-6; break;
  case KILN_F16: *rtol = 1e-2, *atol = 1e-3; break;
  case KILN_BF16: *rtol = 2e-2, *atol = 1e-2; break;
  default: *rtol = 0, *atol = 0; break;
  }
}

typedef struct verify_diff {
  int64_t at;            /* first element out of tolerance, -1: none */
  double got, want, maxerr, tol;
} verify_diff;

/* Compares n elements of got with want (both of dtype dt). */
static verify_diff verify_compare(kiln_dtype dt, const void *got, const void *want, int64_t n) {
  verify_diff r = {.at = -1};
  if (!kiln_dtype_is_float(dt)) {
    for (int64_t j = 0; j < n; j++) {
      int64_t a = kiln_rt_get_i64(dt, got, j), b = kiln_rt_get_i64(dt, want, j);
      if (a == b) continue;
      double err = fabs((double)a - (double)b);
      if (r.at < 0) r.at = j, r.got = (double)a, r.want = (double)b;
      if (err > r.maxerr) r.maxerr = err;
    }
    return r;
  }
  double rtol, atol, scale = 0;
  verify_tolerance(dt, &rtol, &atol);
  for (int64_t j = 0; j < n; j++) {
    double b = fabs(kiln_rt_get_f64(dt, want, j));
    if (isfinite(b) && b > scale) scale = b;
  }
  r.tol = rtol * scale + atol;
  for (int64_t j = 0; j < n; j++) {
    double a = kiln_rt_get_f64(dt, got, j), b = kiln_rt_get_f64(dt, want, j);
    if ((isnan(a) && isnan(b)) || a == b) continue; /* a == b also covers equal infinities */
    double err = fabs(a - b);
    if (isnan(err)) err = INFINITY;
    if (err > r.maxerr) r.maxerr = err;
    if (err > r.tol && r.at < 0) r.at = j, r.got = a, r.want = b;
  }
  return r;
}

/* TEST HOOK, verify mode only: KILN_VERIFY_CORRUPT_KERNEL=k makes the driver change
 * element 0 of kernel k's output right after it runs, far outside any tolerance, so tests
 * can check that verify mode names exactly that kernel. Never acts without verify. */
static void verify_corrupt(const kiln_buffer *b, void *data) {
  int64_t n = kiln_shape_numel(&b->shape);
  if (n <= 0 || !data) return;
  if (kiln_dtype_is_float(b->dtype)) {
    double big = 0;
    for (int64_t j = 0; j < n; j++) {
      double v = fabs(kiln_rt_get_f64(b->dtype, data, j));
      if (isfinite(v) && v > big) big = v;
    }
    kiln_rt_set_f64(b->dtype, data, 0, kiln_rt_get_f64(b->dtype, data, 0) + 1 + 2 * big);
  } else {
    kiln_rt_set_i64(b->dtype, data, 0, kiln_rt_get_i64(b->dtype, data, 0) ^ 1);
  }
}

/* "[1,2,3]" for flat element i of shape s. */
static void verify_coords(const kiln_shape *s, int64_t i, char *out, size_t n) {
  int64_t c[KILN_MAX_RANK];
  for (int d = s->rank - 1; d >= 0; d--) {
    int64_t ext = s->dims[d] > 0 ? s->dims[d] : 1;
    c[d] = i % ext;
    i /= ext;
  }
  size_t j = (size_t)snprintf(out, n, "[");
  for (int d = 0; d < s->rank && j < n; d++) j += (size_t)snprintf(out + j, n - j, d ? ",%lld" : "%lld", (long long)c[d]);
  if (j < n) snprintf(out + j, n - j, "]");
}

/* Checks kernel k's output buffer (holding node kn->node of e->opt) against the
 * interpreter's value of that node. */
static kiln_status verify_kernel(const kiln_executable *e, int32_t k, const void *data, const kiln_rt_tensor *want,
                                 kiln_diag *d) {
  const kiln_kprogram *p = e->prog;
  const kiln_kernel *kn = &p->kernels[k];
  const kiln_buffer *b = &p->buffers[kn->out_buf];
  const kiln_node *node = &e->opt->nodes[kn->node];
  char src[768] = "";
  size_t j = 0;
  for (int32_t i = 0; i < kn->n_sources && j < sizeof src; i++) {
    bool seen = false; /* one ONNX node often becomes several graph nodes */
    for (int32_t q = 0; q < i && !seen; q++)
      seen = kn->sources[q] && kn->sources[i] && !strcmp(kn->sources[q], kn->sources[i]);
    if (seen) continue;
    if (j > sizeof src - 80) {
      snprintf(src + j, sizeof src - j, ", ... (%d more)", kn->n_sources - i);
      break;
    }
    j += (size_t)snprintf(src + j, sizeof src - j, "%s'%s'", i ? ", " : "", kn->sources[i] ? kn->sources[i] : "?");
  }
  int64_t n = kiln_shape_numel(&b->shape);
  if (want->dtype != b->dtype || kiln_shape_numel(&want->shape) != n)
    return kiln_diag_set(d, KILN_ERR_INTERNAL,
                         "KILN_VERIFY: kernel %d '%s' (from %s): buffer %d '%s' is %s with %lld elements but its node "
                         "%d '%s' is %s with %lld",
                         k, kn->name, src, kn->out_buf, b->name ? b->name : "", kiln_dtype_name(b->dtype), (long long)n,
                         kn->node, node->name ? node->name : "", kiln_dtype_name(want->dtype),
                         (long long)kiln_shape_numel(&want->shape));
  verify_diff r = verify_compare(b->dtype, data, want->data, n);
  if (r.at < 0) return KILN_OK;
  char at[200];
  verify_coords(&b->shape, r.at, at, sizeof at);
  return kiln_diag_set(d, KILN_ERR_INTERNAL,
                       "KILN_VERIFY: kernel %d '%s' (from %s) disagrees with the reference interpreter: buffer %d "
                       "'%s' (%s, node %d '%s'), first differing element %lld %s: compiled %.9g, reference %.9g; "
                       "max error %.6g (tolerance %.3g)",
                       k, kn->name, src, kn->out_buf, b->name ? b->name : "", kiln_dtype_name(b->dtype), kn->node,
                       node->name ? node->name : "", (long long)r.at, at, r.got, r.want, r.maxerr, r.tol);
}

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
    if (k == e->corrupt_kernel) verify_corrupt(&p->buffers[kn->out_buf], e->bufs[kn->out_buf]);
    if (kn->node >= 0 && kn->node < e->opt->n_nodes) st = verify_kernel(e, k, e->bufs[kn->out_buf], &vals[kn->node], d);
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
  e->entry(e->bufs, kiln_driver_pool(e->ctx));
  return e->err_word ? cpu_data_error(e, d) : KILN_OK;
}

static void cpu_destroy(kiln_executable *e) {
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
  if (st == KILN_OK && e->verify) {
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
  kiln_executable *e = exe_new(ctx);
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

static kiln_rt_tensor to_rt(const kiln_tensor *t) {
  kiln_rt_tensor r;
  r.dtype = t->dtype;
  r.shape = kiln_shape_make(t->rank, t->dims);
  r.data = t->data;
  return r;
}

/* Compares every output with the reference interpreter; names the first that differs. */
static kiln_status verify_run(kiln_executable *e, const kiln_rt_tensor *in, const kiln_rt_tensor *out) {
  kiln_context *ctx = e->ctx;
  kiln_rt_tensor *ref = kiln_ir_malloc(&ctx->alloc, sizeof *ref * (size_t)(e->n_out + 1));
  if (ref) memset(ref, 0, sizeof *ref * (size_t)(e->n_out + 1));
  kiln_status st = KILN_OK;
  for (int i = 0; ref && i < e->n_out; i++) {
    ref[i] = out[i];
    ref[i].data = kiln_ir_malloc(&ctx->alloc, kiln_rt_tensor_nbytes(&out[i]) + 1);
    if (!ref[i].data) st = KILN_ERR_OUT_OF_MEMORY;
  }
  kiln_diag d = {0};
  if (!ref) st = KILN_ERR_OUT_OF_MEMORY;
  if (st == KILN_OK && kiln_rt_interpret(e->ref, in, e->n_in, ref, e->n_out, &d) != KILN_OK)
    st = kiln_driver_fail(ctx, &d);
  for (int i = 0; st == KILN_OK && i < e->n_out; i++) {
    int64_t n = kiln_shape_numel(&out[i].shape);
    double maxerr = 0, scale = 1;
    int64_t at = -1;
    for (int64_t j = 0; j < n; j++) {
      double a = kiln_rt_get_f64(out[i].dtype, out[i].data, j), b = kiln_rt_get_f64(out[i].dtype, ref[i].data, j);
      if (isnan(a) && isnan(b)) continue;
      double err = fabs(a - b);
      if (isnan(err) || err > maxerr) { maxerr = isnan(err) ? INFINITY : err; at = j; }
      if (fabs(b) > scale) scale = fabs(b);
    }
    if (maxerr > 1e-3 * scale)
      st = kiln_driver_failf(ctx, KILN_ERR_INTERNAL,
                             "KILN_VERIFY: output %d ('%s') differs from the reference interpreter: max "
                             "error %g at element %lld (scale %g)",
                             i, e->out[i].name, maxerr, (long long)at, scale);
  }
  for (int i = 0; ref && i < e->n_out; i++) kiln_ir_free(&ctx->alloc, ref[i].data);
  kiln_ir_free(&ctx->alloc, ref);
  return st;
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
    rin[i] = to_rt(&in[i]);
  }
  for (size_t i = 0; i < n_out; i++) {
    kiln_status st = check_tensor(ctx, "output", (int)i, &e->out[i], &out[i]);
    if (st) return st;
    rout[i] = to_rt(&out[i]);
  }
  kiln_diag d = {0};
  if (e->vt->run(e, rin, rout, &d) != KILN_OK) return kiln_driver_fail(ctx, &d);
  if (e->verify && e->ref) return verify_run(e, rin, rout);
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

/* ------------------------------------------------------------------ AOT library */
static kiln_status lib_run(kiln_executable *e, const kiln_rt_tensor *in, kiln_rt_tensor *out,
                           kiln_diag *d) {
  const void *ins[64];
  void *outs[64];
  for (int i = 0; i < e->n_in; i++) ins[i] = in[i].data;
  for (int i = 0; i < e->n_out; i++) outs[i] = out[i].data;
  int rc = e->model->run(e->inst, ins, outs);
  /* 3: a kernel found its input data invalid (generated glue, codegen/aot.c) */
  if (rc == 3)
    return kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT, "model library '%s': %s", e->model->name,
                         e->model->strerror(rc));
  if (rc != 0)
    return kiln_diag_set(d, KILN_ERR_BACKEND, "model library '%s' failed: %s", e->model->name,
                         e->model->strerror(rc));
  return KILN_OK;
}

static void lib_destroy(kiln_executable *e) {
  if (e->inst) e->model->destroy(e->inst);
  if (e->dl) dlclose(e->dl);
}

static const exe_backend_i lib_backend = {"library", lib_run, lib_destroy};

kiln_status kiln_load_library(kiln_context *ctx, const char *so_path, kiln_executable **out) {
  if (!ctx || !so_path || !out) return kiln_driver_failf(ctx, KILN_ERR_INVALID_ARGUMENT, "kiln_load_library: NULL argument");
  *out = NULL;
  /* dlopen needs a path with a slash to avoid searching the library path. */
  char path[4096];
  snprintf(path, sizeof path, "%s%s", strchr(so_path, '/') ? "" : "./", so_path);
  void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!dl) return kiln_driver_failf(ctx, KILN_ERR_IO, "%s: cannot load library: %s", so_path, dlerror());
  const kiln_aot_model *(*describe)(void) = (const kiln_aot_model *(*)(void))dlsym(dl, "kiln_aot_describe");
  if (!describe) {
    dlclose(dl);
    return kiln_driver_failf(ctx, KILN_ERR_INVALID_ARGUMENT, "%s: not a Kiln model library (no kiln_aot_describe)", so_path);
  }
  const kiln_aot_model *m = describe();
  if (!m || m->abi_version != KILN_AOT_ABI_VERSION) {
    dlclose(dl);
    return kiln_driver_failf(ctx, KILN_ERR_UNSUPPORTED, "%s: model library ABI version %d, this Kiln reads %d",
                             so_path, m ? m->abi_version : -1, KILN_AOT_ABI_VERSION);
  }
  if (m->n_inputs > 64 || m->n_outputs > 64) {
    dlclose(dl);
    return kiln_driver_failf(ctx, KILN_ERR_UNSUPPORTED, "%s: more than 64 inputs or outputs", so_path);
  }
  kiln_executable *e = exe_new(ctx);
  if (!e) {
    dlclose(dl);
    return kiln_driver_failf(ctx, KILN_ERR_OUT_OF_MEMORY, "out of memory");
  }
  e->vt = &lib_backend;
  e->dl = dl;
  e->model = m;
  e->n_in = m->n_inputs;
  e->n_out = m->n_outputs;
  e->in = kiln_arena_alloc(e->arena, sizeof(exe_io) * (size_t)(m->n_inputs + 1));
  e->out = kiln_arena_alloc(e->arena, sizeof(exe_io) * (size_t)(m->n_outputs + 1));
  if (!e->in || !e->out) {
    kiln_executable_destroy(e);
    return kiln_driver_failf(ctx, KILN_ERR_OUT_OF_MEMORY, "out of memory");
  }
  for (int i = 0; i < m->n_inputs; i++)
    e->in[i] = (exe_io){m->inputs[i].name, (kiln_dtype)m->inputs[i].dtype,
                        kiln_shape_make(m->inputs[i].rank, m->inputs[i].dims)};
  for (int i = 0; i < m->n_outputs; i++)
    e->out[i] = (exe_io){m->outputs[i].name, (kiln_dtype)m->outputs[i].dtype,
                         kiln_shape_make(m->outputs[i].rank, m->outputs[i].dims)};
  e->stats.kernels = m->n_kernels;
  e->stats.arena_bytes = m->arena_bytes;
  int rc = m->create(&e->inst, ctx->threads);
  if (rc != 0) {
    kiln_status st = kiln_driver_failf(ctx, KILN_ERR_BACKEND, "%s: create failed: %s", so_path, m->strerror(rc));
    e->inst = NULL;
    kiln_executable_destroy(e);
    return st;
  }
  *out = e;
  return KILN_OK;
}

/* ------------------------------------------------------------------ export */
static kiln_status write_file(kiln_context *ctx, const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f) return kiln_driver_failf(ctx, KILN_ERR_IO, "%s: cannot open for writing", path);
  size_t w = fwrite(data, 1, n, f);
  if (fclose(f) != 0 || w != n) return kiln_driver_failf(ctx, KILN_ERR_IO, "%s: write failed", path);
  return KILN_OK;
}

kiln_status kiln_export(kiln_context *ctx, const kiln_graph *g, const kiln_compile_options *o,
                        const char *so_path, const char *header_path, const char *prefix) {
  if (!ctx || !g || !so_path) return kiln_driver_failf(ctx, KILN_ERR_INVALID_ARGUMENT, "kiln_export: NULL argument");
  kiln_compile_options def = {0};
  if (!o) o = &def;
  kiln_kprogram *p = NULL;
  kiln_status st = kiln_driver_lower(ctx, g, o, NULL, &p);
  if (st != KILN_OK) return st;
  kiln_diag d = {0};
  if (o->target == KILN_TARGET_CUDA) {
#ifdef KILN_HAVE_CUDA
    /* The CUDA artifact: a cubin of every generated kernel, and its CUDA C beside it. */
    char *src = NULL;
    void *img = NULL;
    size_t n = 0;
    st = kiln_cuda_render(p, &src, &d);
    if (st == KILN_OK) st = kiln_cuda_compile(p->alloc, src, o->cuda_arch ? o->cuda_arch : "sm_90", true, &img, &n, &d);
    if (st == KILN_OK) {
      st = write_file(ctx, so_path, img, n);
      char cu[4096];
      snprintf(cu, sizeof cu, "%s.cu", so_path);
      if (st == KILN_OK) st = write_file(ctx, cu, src, strlen(src));
    } else {
      st = kiln_driver_fail(ctx, &d);
    }
    kiln_ir_free(p->alloc, src);
    kiln_ir_free(p->alloc, img);
#else
    st = kiln_driver_failf(ctx, KILN_ERR_UNSUPPORTED, "this Kiln was built without CUDA support");
#endif
  } else {
#ifdef KILN_HAVE_LLVM
    const char *rt = getenv("KILN_AOTRT");
    kiln_llvm_aot_options ao = {0};
    ao.prefix = prefix ? prefix : g->name;
    ao.so_path = so_path;
    ao.header_path = header_path;
    ao.aotrt_lib = rt ? rt : KILN_AOTRT_PATH;
    ao.cc = getenv("CC");
    ao.link_flags = KILN_LINK_FLAGS;
    ao.cpu = o->cpu;
    ao.triple = o->triple;
    st = kiln_llvm_export(p, &ao, &d);
    if (st != KILN_OK) st = kiln_driver_fail(ctx, &d);
#else
    (void)header_path;
    (void)prefix;
    (void)d;
    st = kiln_driver_failf(ctx, KILN_ERR_UNSUPPORTED, "this Kiln was built without LLVM: cannot export a CPU library");
#endif
  }
  kiln_ir_kprogram_destroy(p);
  return st;
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
  for (size_t i = 0; i < n_in; i++) rin[i] = to_rt(&in[i]);
  for (size_t i = 0; i < n_out; i++) rout[i] = to_rt(&out[i]);
  kiln_diag d = {0};
  if (kiln_rt_interpret(g, rin, (int32_t)n_in, rout, (int32_t)n_out, &d) != KILN_OK) return kiln_driver_fail(ctx, &d);
  return KILN_OK;
}

/* ------------------------------------------------------------------ dump */
kiln_status kiln_driver_dump(kiln_context *ctx, const kiln_graph *g, const kiln_dump_options *o,
                             FILE *f) {
  kiln_print_options po = {.elide_constants = o->elide_constants};
  if (!o->print_after && !o->kernels && !o->llvm && !o->cuda) {
    if (kiln_ir_print(g, f, &po) != KILN_OK) return kiln_driver_failf(ctx, KILN_ERR_IO, "cannot print the graph");
    return KILN_OK;
  }
  kiln_compile_options co = {0};
  co.fusion = o->fusion;
  co.disable_passes = o->disable_passes;
  co.print_after = o->print_after;
  co.target = o->cuda ? KILN_TARGET_CUDA : KILN_TARGET_CPU;
  kiln_kprogram *p = NULL;
  kiln_status st = kiln_driver_lower(ctx, g, &co, f, &p);
  if (st != KILN_OK) return st;
  kiln_diag d = {0};
  if (o->kernels) kiln_ir_kprogram_print(p, f);
  if (o->llvm) {
#ifdef KILN_HAVE_LLVM
    st = kiln_llvm_print_module(p, f, &d);
#else
    st = kiln_diag_set(&d, KILN_ERR_UNSUPPORTED, "built without LLVM");
#endif
  }
  if (st == KILN_OK && o->cuda) {
#ifdef KILN_HAVE_CUDA
    char *src = NULL;
    st = kiln_cuda_render(p, &src, &d);
    if (st == KILN_OK) fputs(src, f);
    kiln_ir_free(p->alloc, src);
#else
    st = kiln_diag_set(&d, KILN_ERR_UNSUPPORTED, "built without CUDA support");
#endif
  }
  kiln_ir_kprogram_destroy(p);
  return st == KILN_OK ? KILN_OK : kiln_driver_fail(ctx, &d);
}
