/* library.c - ahead-of-time artifacts: kiln_export (a self-contained shared library and
 * header through LLVM, linked with the AOT runtime found beside the running Kiln by the C
 * compiler; or a cubin through NVRTC) and kiln_load_library (an exported library run
 * through the executable vtable). */
#include "driver.h"
#ifdef KILN_HAVE_LLVM
#include "../codegen/llvm.h"
#endif
#ifdef KILN_HAVE_CUDA
#include "../cuda/cuda.h"
#endif

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------ AOT library */
/* A loaded model library: its handle, its description, one model object (with its
 * own arena, so runs are serialized). */
typedef struct lib_state {
  void *dl;
  const kiln_aot_model *model;
  void *inst;
} lib_state;

static kiln_status lib_run(kiln_executable *e, const kiln_rt_tensor *in, kiln_rt_tensor *out,
                           kiln_diag *d) {
  const lib_state *l = e->state;
  const void *ins[64];
  void *outs[64];
  for (int i = 0; i < e->n_in; i++) ins[i] = in[i].data;
  for (int i = 0; i < e->n_out; i++) outs[i] = out[i].data;
  int rc = l->model->run(l->inst, ins, outs);
  /* 3: a kernel found its input data invalid (generated glue, codegen/aot.c) */
  if (rc == 3)
    return kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT, "model library '%s': %s", l->model->name,
                         l->model->strerror(rc));
  if (rc != 0)
    return kiln_diag_set(d, KILN_ERR_BACKEND, "model library '%s' failed: %s", l->model->name,
                         l->model->strerror(rc));
  return KILN_OK;
}

static void lib_destroy(kiln_executable *e) {
  lib_state *l = e->state;
  if (!l) return;
  if (l->inst) l->model->destroy(l->inst);
  if (l->dl) dlclose(l->dl);
}

static const exe_backend_i lib_backend = {"library", lib_run, lib_destroy, true};

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
  lib_state *l = kiln_arena_alloc(e->arena, sizeof *l);
  if (!l) {
    dlclose(dl);
    kiln_executable_destroy(e);
    return kiln_driver_failf(ctx, KILN_ERR_OUT_OF_MEMORY, "out of memory");
  }
  *l = (lib_state){dl, m, NULL};
  e->vt = &lib_backend;
  e->state = l;
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
                        kiln_shape_make(m->inputs[i].rank, m->inputs[i].dims), {NULL}};
  for (int i = 0; i < m->n_outputs; i++)
    e->out[i] = (exe_io){m->outputs[i].name, (kiln_dtype)m->outputs[i].dtype,
                         kiln_shape_make(m->outputs[i].rank, m->outputs[i].dims), {NULL}};
  e->stats.kernels = m->n_kernels;
  e->stats.arena_bytes = m->arena_bytes;
  int rc = m->create(&l->inst, ctx->threads);
  if (rc != 0) {
    kiln_status st = kiln_driver_failf(ctx, KILN_ERR_BACKEND, "%s: create failed: %s", so_path, m->strerror(rc));
    l->inst = NULL;
    kiln_executable_destroy(e);
    return st;
  }
  *out = e;
  return KILN_OK;
}

/* ------------------------------------------------------------------ export */
/* Set in libkiln.so only (the generated kiln_shared.c): its address tells which file the
 * running Kiln is. Weak, so a program linking the static libraries has none (NULL). */
extern const char kiln_shared_library_marker __attribute__((weak));

/* The folder of the file the running Kiln is in: libkiln.so's, or the program's that
 * links Kiln statically (the kiln tool, tests). False when it cannot be found. */
static bool kiln_home(char *dir, size_t n) {
  char path[4096] = "";
  Dl_info info;
  if (&kiln_shared_library_marker && dladdr(&kiln_shared_library_marker, &info) && info.dli_fname &&
      realpath(info.dli_fname, path)) {
  } else {
    ssize_t len = readlink("/proc/self/exe", path, sizeof path - 1);
    if (len <= 0) return false;
    path[len] = 0;
  }
  char *slash = strrchr(path, '/');
  if (!slash) return false;
  *slash = 0;
  return snprintf(dir, n, "%s", path) < (int)n;
}

/* The AOT runtime support (libkiln_aotrt.a) that every exported library links: $KILN_AOTRT,
 * else in kiln/ beside the running Kiln, in each layout it is installed or built in:
 * LIBDIR/libkiln.so and PREFIX/bin/kiln (installed: LIBDIR/kiln/), build/lib/libkiln.so,
 * build/kiln and build/tests/ (the build tree: build/lib/kiln/). */
static kiln_status find_aotrt(kiln_context *ctx, char *out, size_t n) {
  if (ctx->env.aotrt) {
    if (access(ctx->env.aotrt, R_OK) == 0) return snprintf(out, n, "%s", ctx->env.aotrt) < (int)n ? KILN_OK : KILN_ERR_IO;
    return kiln_driver_failf(ctx, KILN_ERR_IO, "KILN_AOTRT=%s: cannot read the AOT runtime there: %s", ctx->env.aotrt,
                             strerror(errno));
  }
  char home[4096], looked[2048] = "";
  if (!kiln_home(home, sizeof home))
    return kiln_driver_failf(ctx, KILN_ERR_IO, "cannot tell where Kiln is installed, to find its AOT runtime "
                                               "(libkiln_aotrt.a): set KILN_AOTRT to its path");
  static const char *const rel[] = {"kiln", KILN_BIN_TO_LIB "/kiln", "lib/kiln", "../lib/kiln"};
  for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
    bool seen = false; /* KILN_BIN_TO_LIB is usually ../lib already */
    for (size_t j = 0; j < i; j++) seen = seen || !strcmp(rel[i], rel[j]);
    if (seen || snprintf(out, n, "%s/%s/libkiln_aotrt.a", home, rel[i]) >= (int)n) continue;
    if (access(out, R_OK) == 0) return KILN_OK;
    size_t j = strlen(looked);
    snprintf(looked + j, sizeof looked - j, "%s%.1000s", j ? ", " : "", out);
  }
  return kiln_driver_failf(ctx, KILN_ERR_IO,
                           "cannot find Kiln's AOT runtime (libkiln_aotrt.a, linked into every exported library): "
                           "looked for %s; set KILN_AOTRT to its path",
                           looked);
}

/* The C compiler that links exported libraries ($CC, else cc): its first word must be an
 * executable, given with a path or found on $PATH; otherwise a clear error now rather
 * than a shell's "not found" after the whole compile. */
static kiln_status find_cc(kiln_context *ctx, const char **cc) {
  *cc = ctx->env.cc ? ctx->env.cc : "cc";
  char prog[1024];
  size_t len = strcspn(*cc, " \t");
  if (len == 0 || len >= sizeof prog)
    return kiln_driver_failf(ctx, KILN_ERR_INVALID_ARGUMENT, "CC='%s' names no C compiler", *cc);
  memcpy(prog, *cc, len);
  prog[len] = 0;
  const char *why = "is not an executable file";
  if (strchr(prog, '/')) {
    if (access(prog, X_OK) == 0) return KILN_OK;
  } else {
    why = "is not on PATH";
    const char *path = getenv("PATH");
    for (const char *p = path ? path : ""; *p;) {
      size_t dl = strcspn(p, ":");
      char full[4096];
      if (dl > 0 && snprintf(full, sizeof full, "%.*s/%s", (int)dl, p, prog) < (int)sizeof full &&
          access(full, X_OK) == 0)
        return KILN_OK;
      p += dl + (p[dl] == ':');
    }
  }
  return kiln_driver_failf(ctx, KILN_ERR_BACKEND,
                           "no C compiler to link the model library: '%s' %s (install one, e.g. gcc, or set CC to "
                           "its path)",
                           prog, why);
}

static kiln_status write_file(kiln_context *ctx, const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f) return kiln_driver_failf(ctx, KILN_ERR_IO, "%s: cannot open for writing: %s", path, strerror(errno));
  size_t w = fwrite(data, 1, n, f);
  if (fclose(f) != 0 || w != n) return kiln_driver_failf(ctx, KILN_ERR_IO, "%s: write failed", path);
  return KILN_OK;
}

#ifdef KILN_HAVE_CUDA
/* The CUDA artifact: a cubin of every generated kernel, and its CUDA C beside it. */
static kiln_status export_cuda(kiln_context *ctx, const kiln_kprogram *p, const kiln_compile_options *o,
                               const char *so_path) {
  char *src = NULL;
  void *img = NULL;
  size_t n = 0;
  kiln_diag d = {0};
  kiln_status st = kiln_cuda_render(p, &src, &d);
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
  return st;
}
#endif

#ifdef KILN_HAVE_LLVM
static kiln_status export_cpu(kiln_context *ctx, const kiln_kprogram *p, const kiln_compile_options *o,
                              const char *so_path, const char *header_path, const char *prefix,
                              kiln_progress progress) {
  char aotrt[4096];
  kiln_llvm_aot_options ao = {0};
  kiln_status st = find_aotrt(ctx, aotrt, sizeof aotrt);
  if (st == KILN_OK) st = find_cc(ctx, &ao.cc);
  if (st != KILN_OK) return st;
  ao.prefix = prefix;
  ao.so_path = so_path;
  ao.header_path = header_path;
  ao.aotrt_lib = aotrt;
  ao.link_flags = KILN_LINK_FLAGS;
  ao.cpu = o->cpu;
  ao.triple = o->triple;
  ao.progress = progress;
  kiln_diag d = {0};
  return kiln_llvm_export(p, &ao, &d) == KILN_OK ? KILN_OK : kiln_driver_fail(ctx, &d);
}
#endif

kiln_status kiln_export(kiln_context *ctx, const kiln_graph *g, const kiln_compile_options *o,
                        const char *so_path, const char *header_path, const char *prefix) {
  if (!ctx || !g || !so_path) return kiln_driver_failf(ctx, KILN_ERR_INVALID_ARGUMENT, "kiln_export: NULL argument");
  kiln_compile_options def = {0};
  if (!o) o = &def;
  if (!prefix) prefix = g->name;
  if (o->target == KILN_TARGET_CUDA && header_path)
    return kiln_driver_failf(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "kiln_export: a C header is written for the CPU target only; the CUDA target writes "
                             "a cubin (%s) and its CUDA C (%s.cu), with no C API to declare",
                             so_path, so_path);
#ifdef KILN_HAVE_LLVM
  char why[256];
  if (o->target == KILN_TARGET_CPU && !kiln_llvm_check_prefix(prefix, why, sizeof why))
    return kiln_driver_failf(ctx, KILN_ERR_INVALID_ARGUMENT, "kiln_export: prefix '%s' %s", prefix ? prefix : "", why);
#endif
  kiln_driver_progress ps;
  kiln_progress progress = kiln_driver_progress_start(ctx, &ps);
  kiln_kprogram *p = NULL;
  kiln_status st = kiln_driver_lower_with(ctx, g, o, NULL, progress, &p, NULL);
  if (st != KILN_OK) return st;
  if (o->target == KILN_TARGET_CUDA) {
#ifdef KILN_HAVE_CUDA
    st = export_cuda(ctx, p, o, so_path);
#else
    st = kiln_driver_failf(ctx, KILN_ERR_UNSUPPORTED, "this Kiln was built without CUDA support");
#endif
  } else {
#ifdef KILN_HAVE_LLVM
    st = export_cpu(ctx, p, o, so_path, header_path, prefix, progress);
#else
    st = kiln_driver_failf(ctx, KILN_ERR_UNSUPPORTED, "this Kiln was built without LLVM: cannot export a CPU library");
#endif
  }
  kiln_ir_kprogram_destroy(p);
  return st;
}
