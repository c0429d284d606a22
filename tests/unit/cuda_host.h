/* cuda_host.h - runs CUDA C rendered by cuda/render.c on the host, so that tests check
 * the values of generated kernels without a GPU: the source is compiled as C++ with shims
 * for the CUDA built-ins it uses and loaded with dlopen. Shared by test_cuda_backend.c
 * and test_backend_ops.c. */
#ifndef KILN_TEST_CUDA_HOST_H
#define KILN_TEST_CUDA_HOST_H

#include <criterion/criterion.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

#include "../../cuda/cuda.h"

/* Runs the rendered source on the host: compiled as C++ with shims for the CUDA built-ins
 * it uses, a grid of one warp: 32 host threads (one per lane) cover the grid-stride loop,
 * and __shfl_xor_sync exchanges values between them at a barrier, so row-wise kernels
 * (a warp per row, reductions combined by shuffles) run as they would on a GPU.
 * kiln_host_launch runs one kernel so. NULL when no C++ compiler. */
static const char host_shim[] __attribute__((unused)) =
    "#include <cmath>\n#include <cstring>\n#include <thread>\n#include <barrier>\nusing namespace std;\n"
    "#define __global__\n#define __device__\n#define __forceinline__ inline\n"
    "struct kiln_dim3 { unsigned x, y, z; };\n"
    "static const kiln_dim3 blockIdx = {0, 0, 0}, blockDim = {32, 1, 1}, gridDim = {1, 1, 1};\n"
    "static thread_local kiln_dim3 threadIdx = {0, 0, 0};\n"
    "static std::barrier<> *kiln_warp_bar;\n"
    "static unsigned char kiln_warp_slot[32][8];\n"
    "template <class T> static T __shfl_xor_sync(unsigned, T v, int o) {\n"
    "  memcpy(kiln_warp_slot[threadIdx.x], &v, sizeof v); kiln_warp_bar->arrive_and_wait();\n"
    "  T r; memcpy(&r, kiln_warp_slot[threadIdx.x ^ (unsigned)o], sizeof r); kiln_warp_bar->arrive_and_wait();\n"
    "  return r;\n"
    "}\n"
    "static int atomicCAS(int *p, int cmp, int v) { __atomic_compare_exchange_n(p, &cmp, v, false, 5, 5); return cmp; }\n"
    "extern \"C\" void kiln_host_launch(void (*fn)(void *const *, long long), void *const *bufs, long long n) {\n"
    "  std::barrier<> bar(32); kiln_warp_bar = &bar; std::thread t[32];\n"
    "  for (unsigned l = 0; l < 32; l++) t[l] = std::thread([=] { threadIdx.x = l; fn(bufs, n); });\n"
    "  for (auto &th : t) th.join();\n"
    "}\n"
    "static inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }\n"
    "static inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }\n"
    "static inline float __int_as_float(int u) { float f; memcpy(&f, &u, 4); return f; }\n"
    "static inline unsigned __float2uint_rn(float f) { return (unsigned)nearbyintf(f); }\n"
    "static inline double __longlong_as_double(long long u) { double f; memcpy(&f, &u, 8); return f; }\n"
    "static inline long long __double_as_longlong(double f) { long long u; memcpy(&u, &f, 8); return u; }\n"
    "static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }\n"
    "static inline double rsqrt(double x) { return 1.0 / sqrt(x); }\n";

typedef struct host_mod {
  void *h;
  char dir[64];
} host_mod;

static inline bool host_build(const char *src, host_mod *m) {
  if (system("c++ --version >/dev/null 2>&1") != 0) return false;
  snprintf(m->dir, sizeof m->dir, "/tmp/kiln_cuda_test_XXXXXX");
  cr_assert(mkdtemp(m->dir));
  char path[128], cmd[512];
  snprintf(path, sizeof path, "%s/k.cc", m->dir);
  FILE *f = fopen(path, "w");
  cr_assert(f);
  fputs(host_shim, f);
  fputs(src, f);
  fclose(f);
  snprintf(cmd, sizeof cmd, "c++ -std=c++20 -O1 -w -shared -fPIC -pthread -o %s/k.so %s 2>%s/log", m->dir, path, m->dir);
  int rc = system(cmd);
  if (rc != 0) {
    snprintf(cmd, sizeof cmd, "cat %s/log | head -30", m->dir);
    (void)!system(cmd);
  }
  cr_assert_eq(rc, 0, "the rendered source does not compile as host C++:\n%s", src);
  snprintf(path, sizeof path, "%s/k.so", m->dir);
  m->h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  cr_assert(m->h, "%s", dlerror());
  return true;
}

static inline void host_free(host_mod *m) {
  char cmd[128];
  if (m->h) dlclose(m->h);
  snprintf(cmd, sizeof cmd, "rm -rf %s", m->dir);
  (void)!system(cmd);
}

typedef void (*host_kernel)(void *const *bufs, long long n);
typedef void (*host_launch)(host_kernel fn, void *const *bufs, long long n);
/* Runs LOOP kernel i of p (kiln_k<i>) on the host over its whole output. */
static inline void host_run_kernel(host_mod *m, const kiln_kprogram *p, void **bufs, int32_t i) {
  host_launch launch;
  *(void **)&launch = dlsym(m->h, "kiln_host_launch");
  cr_assert(launch, "no kiln_host_launch");
  char name[32];
  snprintf(name, sizeof name, "kiln_k%d", i);
  host_kernel fn;
  *(void **)&fn = dlsym(m->h, name);
  cr_assert(fn, "no %s", name);
  launch(fn, bufs, (long long)kiln_shape_numel(&p->kernels[i].out));
}

/* Runs every LOOP kernel of p on the host, in order. */
static inline void host_run(host_mod *m, const kiln_kprogram *p, void **bufs) {
  for (int32_t i = 0; i < p->n_kernels; i++)
    if (p->kernels[i].kind == KILN_KERNEL_LOOP) host_run_kernel(m, p, bufs, i);
}

#endif
