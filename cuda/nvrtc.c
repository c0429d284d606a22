/* nvrtc.c - compiles CUDA C to a cubin (or PTX) with NVRTC, loaded with dlopen so that
 * nothing links against it: a machine without the CUDA toolkit runs every CPU feature.
 * The library is loaded per call into a small struct of function pointers (no globals);
 * dlopen of an already loaded library is cheap.
 */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include <nvrtc.h>

#include "cuda.h"

typedef struct nvrtc_api {
  void *lib;
  __typeof__(&nvrtcCreateProgram) CreateProgram;
  __typeof__(&nvrtcCompileProgram) CompileProgram;
  __typeof__(&nvrtcGetProgramLogSize) GetProgramLogSize;
  __typeof__(&nvrtcGetProgramLog) GetProgramLog;
  __typeof__(&nvrtcGetCUBINSize) GetCUBINSize;
  __typeof__(&nvrtcGetCUBIN) GetCUBIN;
  __typeof__(&nvrtcGetPTXSize) GetPTXSize;
  __typeof__(&nvrtcGetPTX) GetPTX;
  __typeof__(&nvrtcDestroyProgram) DestroyProgram;
  __typeof__(&nvrtcGetErrorString) GetErrorString;
  __typeof__(&nvrtcVersion) Version;
} nvrtc_api;

static void *open_nvrtc(void) {
  static const char *const names[] = {"libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12",
                                      "/usr/local/cuda/lib64/libnvrtc.so"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    void *h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (h) return h;
  }
  return NULL;
}

/* Loads NVRTC and resolves every entry point; false (and api->lib NULL) when any is missing. */
static bool nvrtc_load(nvrtc_api *api, kiln_diag *d) {
  memset(api, 0, sizeof *api);
  api->lib = open_nvrtc();
  if (!api->lib) {
    kiln_diag_set(d, KILN_ERR_NO_DEVICE,
                  "CUDA backend: NVRTC not found (tried libnvrtc.so, libnvrtc.so.13, libnvrtc.so.12, "
                  "/usr/local/cuda/lib64/libnvrtc.so); install the CUDA toolkit or add its lib64 to "
                  "LD_LIBRARY_PATH");
    return false;
  }
#define SYM(field, name)                                                                   \
  do {                                                                                     \
    *(void **)&api->field = dlsym(api->lib, name);                                         \
    if (!api->field) {                                                                     \
      kiln_diag_set(d, KILN_ERR_BACKEND, "CUDA backend: NVRTC lacks the symbol %s", name); \
      dlclose(api->lib);                                                                   \
      api->lib = NULL;                                                                     \
      return false;                                                                        \
    }                                                                                      \
  } while (0)
  SYM(CreateProgram, "nvrtcCreateProgram");
  SYM(CompileProgram, "nvrtcCompileProgram");
  SYM(GetProgramLogSize, "nvrtcGetProgramLogSize");
  SYM(GetProgramLog, "nvrtcGetProgramLog");
  SYM(GetCUBINSize, "nvrtcGetCUBINSize");
  SYM(GetCUBIN, "nvrtcGetCUBIN");
  SYM(GetPTXSize, "nvrtcGetPTXSize");
  SYM(GetPTX, "nvrtcGetPTX");
  SYM(DestroyProgram, "nvrtcDestroyProgram");
  SYM(GetErrorString, "nvrtcGetErrorString");
  SYM(Version, "nvrtcVersion");
#undef SYM
  return true;
}

bool kiln_cuda_nvrtc_available(void) {
  nvrtc_api api;
  if (!nvrtc_load(&api, NULL)) return false;
  dlclose(api.lib);
  return true;
}

/* "sm_90", "sm_90a", "compute_90" or "90" -> "90" / "90a"; false when malformed. */
static bool arch_number(const char *arch, char *out, size_t n) {
  if (!arch) return false;
  if (!strncmp(arch, "sm_", 3)) arch += 3;
  else if (!strncmp(arch, "compute_", 8)) arch += 8;
  size_t len = strlen(arch);
  if (len < 2 || len + 1 > n || arch[0] < '1' || arch[0] > '9') return false;
  for (size_t i = 0; i < len; i++)
    if (!((arch[i] >= '0' && arch[i] <= '9') || (i == len - 1 && (arch[i] == 'a' || arch[i] == 'f'))))
      return false;
  memcpy(out, arch, len + 1);
  return true;
}

/* Error message: what failed, the NVRTC error, the log, and the start of the source, all
 * within the diag's fixed size (log first: it says what is wrong). */
static kiln_status compile_error(nvrtc_api *api, nvrtcProgram prog, const char *what, nvrtcResult rc,
                                 const char *opt, const char *src, kiln_diag *d) {
  kiln_diag_set(d, KILN_ERR_BACKEND, "CUDA backend: %s failed (%s): %s", what, opt,
                api->GetErrorString(rc));
  size_t log_size = 0;
  if (prog && api->GetProgramLogSize(prog, &log_size) == NVRTC_SUCCESS && log_size > 1) {
    char *log = malloc(log_size);
    if (log && api->GetProgramLog(prog, log) == NVRTC_SUCCESS)
      kiln_diag_append(d, "\n--- NVRTC log ---\n%.1200s", log);
    free(log);
  }
  const char *kernel = strstr(src, "/* kernel ");
  kiln_diag_append(d, "\n--- source (from the first kernel) ---\n%.600s", kernel ? kernel : src);
  return KILN_ERR_BACKEND;
}

kiln_status kiln_cuda_compile(const kiln_allocator *a, const char *src, const char *arch, bool cubin,
                              void **image, size_t *image_size, kiln_diag *d) {
  *image = NULL;
  *image_size = 0;
  if (!a) a = kiln_ir_default_allocator();
  char num[16];
  if (!arch_number(arch, num, sizeof num))
    return kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT,
                         "CUDA backend: bad architecture '%s' (want e.g. sm_90)", arch ? arch : "(null)");
  nvrtc_api api;
  if (!nvrtc_load(&api, d)) return d ? d->status : KILN_ERR_NO_DEVICE;

  char opt_arch[64];
  snprintf(opt_arch, sizeof opt_arch, "--gpu-architecture=%s_%s", cubin ? "sm" : "compute", num);
  const char *opts[] = {opt_arch, "-default-device", "--std=c++17"};
  kiln_status st = KILN_OK;
  nvrtcProgram prog = NULL;
  nvrtcResult rc = api.CreateProgram(&prog, src, "kiln.cu", 0, NULL, NULL);
  if (rc != NVRTC_SUCCESS) {
    st = compile_error(&api, NULL, "nvrtcCreateProgram", rc, opt_arch, src, d);
    goto done;
  }
  rc = api.CompileProgram(prog, (int)(sizeof opts / sizeof opts[0]), opts);
  if (rc != NVRTC_SUCCESS) {
    st = compile_error(&api, prog, "nvrtcCompileProgram", rc, opt_arch, src, d);
    goto done;
  }
  size_t size = 0;
  rc = cubin ? api.GetCUBINSize(prog, &size) : api.GetPTXSize(prog, &size);
  if (rc != NVRTC_SUCCESS || size == 0) {
    st = compile_error(&api, prog, cubin ? "nvrtcGetCUBINSize" : "nvrtcGetPTXSize",
                       rc != NVRTC_SUCCESS ? rc : NVRTC_ERROR_INTERNAL_ERROR, opt_arch, src, d);
    goto done;
  }
  char *buf = kiln_ir_malloc(a, size);
  if (!buf) {
    st = kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "CUDA backend: out of memory for a %zu-byte image", size);
    goto done;
  }
  rc = cubin ? api.GetCUBIN(prog, buf) : api.GetPTX(prog, buf);
  if (rc != NVRTC_SUCCESS) {
    kiln_ir_free(a, buf);
    st = compile_error(&api, prog, cubin ? "nvrtcGetCUBIN" : "nvrtcGetPTX", rc, opt_arch, src, d);
    goto done;
  }
  *image = buf;
  *image_size = size;
done:
  if (prog) api.DestroyProgram(&prog);
  dlclose(api.lib);
  return st;
}
