/* library.c - ahead-of-time artifacts: kiln_export (a self-contained shared library and
 * header through LLVM, or a cubin through NVRTC) and kiln_load_library (an exported
 * library run through the executable vtable). */
#include "driver.h"
#ifdef KILN_HAVE_LLVM
#include "../codegen/llvm.h"
#endif
#ifdef KILN_HAVE_CUDA
#include "../cuda/cuda.h"
#endif

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

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
  kiln_executable *e = kiln_driver_exe_new(ctx);
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

