/* exec.c - runs a kernel program on an NVIDIA GPU through the driver API: LOOP kernels
 * rendered and compiled with NVRTC for the device's exact sm, GEMM kernels through cuBLAS
 * (with their fused pack and epilogue sub-kernels as generated kernels around it), OPAQUE
 * kernels on the host (device -> host copy, kiln_rt_opaque, copy back).
 * libcuda.so.1 and libcublas are loaded with dlopen; without a driver the create call
 * returns KILN_ERR_NO_DEVICE with a message instead of failing to link or crashing.
 *
 * Device memory: one allocation per buffer kind (inputs, outputs, constants, arena), made
 * at create since shapes are static; constants are uploaded once; the device table of
 * buffer addresses is uploaded once. A run copies inputs in, launches every kernel in
 * order on the legacy default stream (cuBLAS uses it too, so order is kept), copies
 * outputs back and synchronizes.
 * GEMM with a pack (kiln_gemm_desc): per (batch, column tile) the pack kernel fills the
 * scratch B tile, then cuBLAS multiplies it into C's columns of that tile. The pack reads
 * (batch, first column) from param_buf: every pair a run needs is uploaded once at create
 * into a device table, and each tile copies its pair into param_buf with an asynchronous
 * device-to-device copy on the same stream, so tiles cost no host round trip. The
 * epilogue (elementwise, in place on C) runs once over the whole output after the last
 * product, which gives the same values as running it per tile.
 * Error word (runtime ABI, rt.h): the device table has one slot more than the program has
 * buffers, the address of a device int32 zeroed before each run; generated checks set it
 * (atomicCAS from 0) and an opaque kernel that refuses its input sets it from the host.
 * It is read back after the run: nonzero is an error status naming the kernel and node.
 * Future work: capture a run as a CUDA graph; cuBLASLt with fused epilogues.
 */
#include <dlfcn.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <cuda.h>
#include <cublas_api.h>

#include "cuda.h"

#define MAX_BLOCKS (65535ll * 4)
#define ALIGN 256

typedef struct cu_api {
  void *lib;
  __typeof__(&cuInit) Init;
  __typeof__(&cuGetErrorName) GetErrorName;
  __typeof__(&cuDeviceGetCount) DeviceGetCount;
  __typeof__(&cuDeviceGet) DeviceGet;
  __typeof__(&cuDeviceGetAttribute) DeviceGetAttribute;
  __typeof__(&cuDevicePrimaryCtxRetain) PrimaryCtxRetain;
  __typeof__(&cuDevicePrimaryCtxRelease_v2) PrimaryCtxRelease;
  __typeof__(&cuCtxSetCurrent) CtxSetCurrent;
  __typeof__(&cuCtxSynchronize) CtxSynchronize;
  __typeof__(&cuModuleLoadData) ModuleLoadData;
  __typeof__(&cuModuleUnload) ModuleUnload;
  __typeof__(&cuModuleGetFunction) ModuleGetFunction;
  __typeof__(&cuMemAlloc_v2) MemAlloc;
  __typeof__(&cuMemFree_v2) MemFree;
  __typeof__(&cuMemcpyHtoD_v2) MemcpyHtoD;
  __typeof__(&cuMemcpyDtoH_v2) MemcpyDtoH;
  __typeof__(&cuMemcpyDtoDAsync_v2) MemcpyDtoDAsync;
  __typeof__(&cuLaunchKernel) LaunchKernel;
} cu_api;

typedef struct blas_api {
  void *lib;
  __typeof__(&cublasCreate_v2) Create;
  __typeof__(&cublasDestroy_v2) Destroy;
  __typeof__(&cublasSgemmStridedBatched) Sgemm;
  __typeof__(&cublasDgemmStridedBatched) Dgemm;
} blas_api;

/* One step of the program, copied so the exec does not borrow the kernel program. */
typedef struct step {
  kiln_kernel_kind kind;
  char name[96];
  CUfunction fn;          /* LOOP */
  long long n;            /* LOOP: output elements */
  kiln_gemm_desc gemm;    /* GEMM */
  kiln_dtype dtype;       /* GEMM */
  CUfunction pack_fn, epi_fn; /* GEMM sub-kernels, NULL when absent */
  long long pack_n, epi_n;    /* their domains' element counts */
  int block, pack_block, epi_block; /* threads per block (the kernels' schedules) */
  int64_t n_prod;         /* GEMM: products (flattened batch) */
  int64_t n_tiles;        /* GEMM with pack: column tiles per product */
  size_t param_off;       /* GEMM with pack: byte offset of its (batch, column) table in mem_params */
  kiln_rt_opaque_desc op; /* OPAQUE */
  char err[400];          /* the message when this step sets the error word */
} step;

struct kiln_cuda_exec {
  const kiln_allocator *alloc;
  cu_api cu;
  blas_api blas;
  cublasHandle_t blas_handle;
  CUdevice dev;
  CUcontext ctx;
  bool ctx_retained;
  CUmodule mod;
  char arch[16];
  int32_t n_steps;
  step *steps;
  int32_t n_buffers;
  size_t *buf_bytes;
  CUdeviceptr *dbuf;      /* device address of every buffer */
  CUdeviceptr mem_in, mem_out, mem_const, mem_arena, mem_table, mem_err, mem_params;
  int32_t n_inputs, n_outputs;
  kiln_dtype *in_dt, *out_dt;
  kiln_shape *in_shape, *out_shape;
  size_t *in_off, *out_off;
};

static const char *cu_name(const kiln_cuda_exec *e, CUresult rc) {
  const char *s = NULL;
  if (e->cu.GetErrorName && e->cu.GetErrorName(rc, &s) == CUDA_SUCCESS && s) return s;
  return "CUDA_ERROR_UNKNOWN";
}

/* Checks a CUresult; `what` names the call and the kernel or buffer it was for. */
#define CU_CHECK(e, call, d, ...)                                                          \
  do {                                                                                     \
    CUresult rc_ = (call);                                                                 \
    if (rc_ != CUDA_SUCCESS) {                                                             \
      kiln_diag_set(d, KILN_ERR_BACKEND, "CUDA backend: " __VA_ARGS__);                    \
      kiln_diag_append(d, ": %s (%d)", cu_name(e, rc_), (int)rc_);                         \
      return KILN_ERR_BACKEND;                                                             \
    }                                                                                      \
  } while (0)

static size_t align_up(size_t n) { return (n + ALIGN - 1) / ALIGN * ALIGN; }

static size_t shape_bytes(kiln_dtype dt, const kiln_shape *s) {
  return (size_t)kiln_shape_numel(s) * kiln_dtype_size(dt);
}

/* ------------------------------------------------------------------ loading the driver */
static kiln_status load_cuda(cu_api *cu, kiln_diag *d) {
  memset(cu, 0, sizeof *cu);
  cu->lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
  if (!cu->lib)
    return kiln_diag_set(d, KILN_ERR_NO_DEVICE,
                         "the CUDA target needs an NVIDIA driver (libcuda.so.1 not found)");
#define SYM(field, name)                                                                   \
  do {                                                                                     \
    *(void **)&cu->field = dlsym(cu->lib, name);                                           \
    if (!cu->field)                                                                        \
      return kiln_diag_set(d, KILN_ERR_NO_DEVICE,                                          \
                           "the CUDA target needs a newer NVIDIA driver (libcuda.so.1 lacks %s)", \
                           name);                                                          \
  } while (0)
  SYM(Init, "cuInit");
  SYM(GetErrorName, "cuGetErrorName");
  SYM(DeviceGetCount, "cuDeviceGetCount");
  SYM(DeviceGet, "cuDeviceGet");
  SYM(DeviceGetAttribute, "cuDeviceGetAttribute");
  SYM(PrimaryCtxRetain, "cuDevicePrimaryCtxRetain");
  SYM(PrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2");
  SYM(CtxSetCurrent, "cuCtxSetCurrent");
  SYM(CtxSynchronize, "cuCtxSynchronize");
  SYM(ModuleLoadData, "cuModuleLoadData");
  SYM(ModuleUnload, "cuModuleUnload");
  SYM(ModuleGetFunction, "cuModuleGetFunction");
  SYM(MemAlloc, "cuMemAlloc_v2");
  SYM(MemFree, "cuMemFree_v2");
  SYM(MemcpyHtoD, "cuMemcpyHtoD_v2");
  SYM(MemcpyDtoH, "cuMemcpyDtoH_v2");
  SYM(MemcpyDtoDAsync, "cuMemcpyDtoDAsync_v2");
  SYM(LaunchKernel, "cuLaunchKernel");
#undef SYM
  return KILN_OK;
}

static kiln_status load_cublas(blas_api *b, kiln_diag *d) {
  static const char *const names[] = {"libcublas.so.13", "libcublas.so.12", "libcublas.so",
                                      "/usr/local/cuda/lib64/libcublas.so"};
  memset(b, 0, sizeof *b);
  for (size_t i = 0; i < sizeof names / sizeof names[0] && !b->lib; i++)
    b->lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
  if (!b->lib)
    return kiln_diag_set(d, KILN_ERR_NO_DEVICE,
                         "CUDA backend: the program has matrix products and cuBLAS was not found "
                         "(libcublas.so.13/.12); add the CUDA toolkit's lib64 to LD_LIBRARY_PATH");
  *(void **)&b->Create = dlsym(b->lib, "cublasCreate_v2");
  *(void **)&b->Destroy = dlsym(b->lib, "cublasDestroy_v2");
  *(void **)&b->Sgemm = dlsym(b->lib, "cublasSgemmStridedBatched");
  *(void **)&b->Dgemm = dlsym(b->lib, "cublasDgemmStridedBatched");
  if (!b->Create || !b->Destroy || !b->Sgemm || !b->Dgemm)
    return kiln_diag_set(d, KILN_ERR_BACKEND, "CUDA backend: cuBLAS lacks cublasCreate_v2 or *gemmStridedBatched");
  return KILN_OK;
}

/* ------------------------------------------------------------------ create */
static kiln_status pick_device(kiln_cuda_exec *e, const char *arch, kiln_diag *d) {
  CUresult rc = e->cu.Init(0);
  if (rc != CUDA_SUCCESS)
    return kiln_diag_set(d, KILN_ERR_NO_DEVICE, "the CUDA target needs a GPU: cuInit failed (%s)",
                         cu_name(e, rc));
  int count = 0;
  rc = e->cu.DeviceGetCount(&count);
  if (rc != CUDA_SUCCESS || count < 1)
    return kiln_diag_set(d, KILN_ERR_NO_DEVICE, "the CUDA target needs a GPU: no CUDA device (%s)",
                         rc != CUDA_SUCCESS ? cu_name(e, rc) : "count is 0");
  CU_CHECK(e, e->cu.DeviceGet(&e->dev, 0), d, "cuDeviceGet(0)");
  if (arch && *arch) {
    snprintf(e->arch, sizeof e->arch, "%s", arch);
  } else {
    int major = 0, minor = 0;
    CU_CHECK(e, e->cu.DeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, e->dev), d,
             "cuDeviceGetAttribute(compute capability major)");
    CU_CHECK(e, e->cu.DeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, e->dev), d,
             "cuDeviceGetAttribute(compute capability minor)");
    snprintf(e->arch, sizeof e->arch, "sm_%d%d", major, minor);
  }
  CU_CHECK(e, e->cu.PrimaryCtxRetain(&e->ctx, e->dev), d, "cuDevicePrimaryCtxRetain");
  e->ctx_retained = true;
  CU_CHECK(e, e->cu.CtxSetCurrent(e->ctx), d, "cuCtxSetCurrent");
  return KILN_OK;
}

/* Renders, compiles for the exact sm, loads, and finds every LOOP kernel's function. */
static kiln_status build_module(kiln_cuda_exec *e, const kiln_kprogram *p, kiln_diag *d) {
  bool any = false;
  for (int32_t i = 0; i < p->n_kernels; i++)
    any |= p->kernels[i].kind == KILN_KERNEL_LOOP ||
           (p->kernels[i].kind == KILN_KERNEL_GEMM && (p->kernels[i].pack || p->kernels[i].epilogue));
  if (!any) return KILN_OK;
  char *src = NULL;
  kiln_status st = kiln_cuda_render(p, &src, d);
  if (st != KILN_OK) return st;
  void *image = NULL;
  size_t size = 0;
  st = kiln_cuda_compile(e->alloc, src, e->arch, true, &image, &size, d);
  kiln_ir_free(p->alloc, src);
  if (st != KILN_OK) return st;
  CUresult rc = e->cu.ModuleLoadData(&e->mod, image);
  kiln_ir_free(e->alloc, image);
  if (rc != CUDA_SUCCESS) {
    e->mod = NULL;
    kiln_diag_set(d, KILN_ERR_BACKEND, "CUDA backend: cuModuleLoadData (cubin for %s) failed: %s",
                  e->arch, cu_name(e, rc));
    return KILN_ERR_BACKEND;
  }
  for (int32_t i = 0; i < p->n_kernels; i++) {
    const kiln_kernel *k = &p->kernels[i];
    char fname[48];
    if (k->kind == KILN_KERNEL_LOOP) {
      snprintf(fname, sizeof fname, "kiln_k%d", i);
      CU_CHECK(e, e->cu.ModuleGetFunction(&e->steps[i].fn, e->mod, fname), d,
               "cuModuleGetFunction(%s) for kernel %s", fname, e->steps[i].name);
    } else if (k->kind == KILN_KERNEL_GEMM) {
      if (k->pack) {
        snprintf(fname, sizeof fname, "kiln_k%d_pack", i);
        CU_CHECK(e, e->cu.ModuleGetFunction(&e->steps[i].pack_fn, e->mod, fname), d,
                 "cuModuleGetFunction(%s) for the pack of GEMM kernel %s", fname, e->steps[i].name);
      }
      if (k->epilogue) {
        snprintf(fname, sizeof fname, "kiln_k%d_epilogue", i);
        CU_CHECK(e, e->cu.ModuleGetFunction(&e->steps[i].epi_fn, e->mod, fname), d,
                 "cuModuleGetFunction(%s) for the epilogue of GEMM kernel %s", fname, e->steps[i].name);
      }
    }
  }
  return KILN_OK;
}

static kiln_status dev_alloc(kiln_cuda_exec *e, CUdeviceptr *ptr, size_t bytes, const char *what,
                             kiln_diag *d) {
  *ptr = 0;
  if (!bytes) return KILN_OK;
  CU_CHECK(e, e->cu.MemAlloc(ptr, bytes), d, "cuMemAlloc of %zu bytes for %s", bytes, what);
  return KILN_OK;
}

/* The (flattened batch index, first column) pair of every tile of every GEMM with a pack,
 * as the pack reads them from param_buf: one device table, copied from per tile. */
static kiln_status upload_pack_params(kiln_cuda_exec *e, kiln_diag *d) {
  size_t total = 0;
  for (int32_t i = 0; i < e->n_steps; i++) {
    step *s = &e->steps[i];
    if (!s->pack_fn) continue;
    s->param_off = total;
    total += (size_t)(s->n_prod * s->n_tiles) * 2 * sizeof(int64_t);
  }
  if (!total) return KILN_OK;
  int64_t *host = kiln_ir_malloc(e->alloc, total);
  if (!host) return kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "CUDA backend: out of memory for the GEMM tile table");
  for (int32_t i = 0; i < e->n_steps; i++) {
    const step *s = &e->steps[i];
    if (!s->pack_fn) continue;
    int64_t *q = host + s->param_off / sizeof(int64_t);
    for (int64_t t = 0; t < s->n_prod; t++)
      for (int64_t j = 0; j < s->n_tiles; j++, q += 2) q[0] = t, q[1] = j * s->gemm.tile_n;
  }
  kiln_status st = dev_alloc(e, &e->mem_params, total, "the GEMM tile table", d);
  if (!st) {
    CUresult rc = e->cu.MemcpyHtoD(e->mem_params, host, total);
    if (rc != CUDA_SUCCESS)
      st = kiln_diag_set(d, KILN_ERR_BACKEND, "CUDA backend: uploading the GEMM tile table: %s", cu_name(e, rc));
  }
  kiln_ir_free(e->alloc, host);
  return st;
}

/* One allocation per buffer kind; the table of buffer addresses uploaded once. */
static kiln_status alloc_memory(kiln_cuda_exec *e, const kiln_kprogram *p, kiln_diag *d) {
  size_t in_total = 0, out_total = 0, const_total = 0;
  for (int32_t i = 0; i < p->n_inputs; i++) {
    e->in_off[i] = in_total;
    in_total += align_up(shape_bytes(p->in_dtypes[i], &p->in_shapes[i]));
  }
  for (int32_t i = 0; i < p->n_outputs; i++) {
    e->out_off[i] = out_total;
    out_total += align_up(shape_bytes(p->out_dtypes[i], &p->out_shapes[i]));
  }
  size_t *const_off = kiln_ir_malloc(e->alloc, sizeof(size_t) * (size_t)(p->n_consts + 1));
  if (!const_off) return kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "CUDA backend: out of memory");
  for (int32_t i = 0; i < p->n_consts; i++) {
    const_off[i] = const_total;
    const_total += align_up(p->consts[i].nbytes);
  }
  kiln_status st = dev_alloc(e, &e->mem_in, in_total, "the inputs", d);
  if (!st) st = dev_alloc(e, &e->mem_out, out_total, "the outputs", d);
  if (!st) st = dev_alloc(e, &e->mem_const, const_total, "the constants", d);
  if (!st) st = dev_alloc(e, &e->mem_arena, p->arena_bytes, "the arena", d);
  if (!st) st = dev_alloc(e, &e->mem_table, sizeof(CUdeviceptr) * (size_t)(p->n_buffers + 1), "the buffer table", d);
  if (!st) st = dev_alloc(e, &e->mem_err, sizeof(int32_t), "the error word", d);
  if (!st) st = upload_pack_params(e, d);
  for (int32_t i = 0; i < p->n_consts && !st; i++) {
    if (!p->consts[i].nbytes) continue;
    CUresult rc = e->cu.MemcpyHtoD(e->mem_const + const_off[i], p->consts[i].data, p->consts[i].nbytes);
    if (rc != CUDA_SUCCESS)
      st = kiln_diag_set(d, KILN_ERR_BACKEND, "CUDA backend: uploading constant %d (%s): %s", i,
                         p->consts[i].name ? p->consts[i].name : "?", cu_name(e, rc));
  }
  for (int32_t i = 0; i < p->n_buffers && !st; i++) {
    const kiln_buffer *b = &p->buffers[i];
    int32_t limit = b->kind == KILN_BUF_INPUT ? p->n_inputs : b->kind == KILN_BUF_OUTPUT ? p->n_outputs
                  : b->kind == KILN_BUF_CONST ? p->n_consts : INT32_MAX;
    if (b->kind != KILN_BUF_ARENA && (b->index < 0 || b->index >= limit)) {
      st = kiln_diag_set(d, KILN_ERR_INTERNAL, "CUDA backend: buffer %d has index %d out of range", i, b->index);
      break;
    }
    switch (b->kind) {
    case KILN_BUF_INPUT: e->dbuf[i] = e->mem_in + e->in_off[b->index]; break;
    case KILN_BUF_OUTPUT: e->dbuf[i] = e->mem_out + e->out_off[b->index]; break;
    case KILN_BUF_CONST: e->dbuf[i] = e->mem_const + const_off[b->index]; break;
    case KILN_BUF_ARENA: e->dbuf[i] = e->mem_arena + (CUdeviceptr)b->offset; break;
    }
    e->buf_bytes[i] = b->nbytes ? b->nbytes : shape_bytes(b->dtype, &b->shape);
  }
  kiln_ir_free(e->alloc, const_off);
  if (!st) {
    e->dbuf[p->n_buffers] = e->mem_err; /* the error word's slot */
    CUresult rc = e->cu.MemcpyHtoD(e->mem_table, e->dbuf, sizeof(CUdeviceptr) * (size_t)(p->n_buffers + 1));
    if (rc != CUDA_SUCCESS)
      st = kiln_diag_set(d, KILN_ERR_BACKEND, "CUDA backend: uploading the buffer table: %s", cu_name(e, rc));
  }
  return st;
}

/* Copies what run needs from the program; refuses GEMMs cuBLAS cannot take. */
static kiln_status copy_steps(kiln_cuda_exec *e, const kiln_kprogram *p, kiln_diag *d) {
  for (int32_t i = 0; i < p->n_kernels; i++) {
    const kiln_kernel *k = &p->kernels[i];
    step *s = &e->steps[i];
    s->kind = k->kind;
    snprintf(s->name, sizeof s->name, "%d (%s)", i, k->name ? k->name : "?");
    kiln_ir_kernel_error_message(p, i, s->err, sizeof s->err);
    switch (k->kind) {
    case KILN_KERNEL_LOOP:
      s->n = kiln_shape_numel(&k->out);
      s->block = k->sched.block;
      break;
    case KILN_KERNEL_GEMM: {
      const kiln_gemm_desc *g = &k->gemm;
      s->gemm = *g;
      if (g->a_buf < 0 || g->a_buf >= p->n_buffers || g->b_buf < 0 || g->b_buf >= p->n_buffers ||
          g->c_buf < 0 || g->c_buf >= p->n_buffers)
        return kiln_diag_set(d, KILN_ERR_INTERNAL, "CUDA backend: GEMM kernel %s: bad buffer id", s->name);
      s->dtype = k->out_dtype;
      if (k->out_dtype != KILN_F32 && k->out_dtype != KILN_F64)
        return kiln_diag_set(d, KILN_ERR_UNSUPPORTED, "CUDA backend: GEMM kernel %s on %s (f32/f64 only)",
                             s->name, kiln_dtype_name(k->out_dtype));
      if (g->m > INT_MAX || g->n > INT_MAX || g->k > INT_MAX || g->lda > INT_MAX || g->ldb > INT_MAX ||
          g->ldc > INT_MAX || g->n_batch < 0 || g->n_batch > 2 ||
          (g->n_batch > 0 && g->batch[g->n_batch - 1] > INT_MAX))
        return kiln_diag_set(d, KILN_ERR_UNSUPPORTED, "CUDA backend: GEMM kernel %s is too large for cuBLAS",
                             s->name);
      s->n_prod = 1;
      for (int32_t b = 0; b < g->n_batch; b++) s->n_prod *= g->batch[b];
      if (k->epilogue) {
        if (k->epilogue->kind != KILN_KERNEL_LOOP || k->epilogue->out_buf != k->out_buf)
          return kiln_diag_set(d, KILN_ERR_INTERNAL,
                               "CUDA backend: GEMM kernel %s: its epilogue is not a LOOP kernel into its output",
                               s->name);
        s->epi_n = kiln_shape_numel(&k->epilogue->out);
        s->epi_block = k->epilogue->sched.block;
      }
      if (k->pack && g->pack_a) /* kiln_cuda_render refuses it first */
        return kiln_diag_set(d, KILN_ERR_UNSUPPORTED, "CUDA backend: GEMM kernel %s packs A", s->name);
      if (k->pack) {
        const kiln_buffer *pb = g->param_buf >= 0 && g->param_buf < p->n_buffers ? &p->buffers[g->param_buf] : NULL;
        size_t pbytes = !pb ? 0 : pb->nbytes ? pb->nbytes : shape_bytes(pb->dtype, &pb->shape);
        if (k->pack->kind != KILN_KERNEL_LOOP || k->pack->out_buf != g->b_buf || g->tile_n <= 0 ||
            g->tile_n > INT_MAX || g->trans_b || pbytes < 2 * sizeof(int64_t))
          return kiln_diag_set(d, KILN_ERR_INTERNAL,
                               "CUDA backend: GEMM kernel %s: malformed pack (tile_n %" PRId64
                               ", param_buf %d, pack into buffer %d, B buffer %d)",
                               s->name, g->tile_n, (int)g->param_buf, (int)k->pack->out_buf, (int)g->b_buf);
        s->pack_n = kiln_shape_numel(&k->pack->out);
        s->pack_block = k->pack->sched.block;
        s->n_tiles = (g->n + g->tile_n - 1) / g->tile_n;
        if (s->n_tiles < 0) s->n_tiles = 0;
      }
      break;
    }
    case KILN_KERNEL_OPAQUE: {
      if (k->n_in_bufs > KILN_RT_MAX_OPAQUE_IN)
        return kiln_diag_set(d, KILN_ERR_UNSUPPORTED, "CUDA backend: opaque kernel %s has %d inputs",
                             s->name, k->n_in_bufs);
      kiln_rt_opaque_desc *o = &s->op;
      memset(o, 0, sizeof *o);
      o->op = k->op;
      o->out_buf = k->out_buf;
      o->out_dtype = k->out_dtype;
      o->n_in = k->n_in_bufs;
      o->out_shape = k->out;
      o->attrs = k->attrs;
      if (k->out_buf < 0 || k->out_buf >= p->n_buffers)
        return kiln_diag_set(d, KILN_ERR_INTERNAL, "CUDA backend: opaque kernel %s: bad output buffer", s->name);
      for (int32_t j = 0; j < k->n_in_bufs; j++) {
        if (k->in_bufs[j] < 0 || k->in_bufs[j] >= p->n_buffers)
          return kiln_diag_set(d, KILN_ERR_INTERNAL, "CUDA backend: opaque kernel %s: bad input buffer", s->name);
        o->in_bufs[j] = k->in_bufs[j];
        o->in_dtypes[j] = p->buffers[k->in_bufs[j]].dtype;
        o->in_shapes[j] = p->buffers[k->in_bufs[j]].shape;
      }
      break;
    }
    default:
      return kiln_diag_set(d, KILN_ERR_UNSUPPORTED, "CUDA backend: kernel %s has unknown kind %d", s->name,
                           (int)k->kind);
    }
  }
  return KILN_OK;
}

#define ARRAY(ptr, n)                                                                      \
  ((ptr) = kiln_ir_malloc(e->alloc, sizeof *(ptr) * (size_t)((n) + 1)),                     \
   (ptr) ? memset((ptr), 0, sizeof *(ptr) * (size_t)((n) + 1)) : NULL)

kiln_status kiln_cuda_exec_create(const kiln_kprogram *p, const char *arch, kiln_cuda_exec **out,
                                  kiln_diag *d) {
  *out = NULL;
  const kiln_allocator *a = p->alloc ? p->alloc : kiln_ir_default_allocator();
  kiln_cuda_exec *e = kiln_ir_malloc(a, sizeof *e);
  if (!e) return kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "CUDA backend: out of memory");
  memset(e, 0, sizeof *e);
  e->alloc = a;
  kiln_status st = load_cuda(&e->cu, d);
  if (!st) st = pick_device(e, arch, d);
  if (!st) {
    e->n_steps = p->n_kernels;
    e->n_buffers = p->n_buffers;
    e->n_inputs = p->n_inputs;
    e->n_outputs = p->n_outputs;
    if (!ARRAY(e->steps, p->n_kernels) || !ARRAY(e->buf_bytes, p->n_buffers) ||
        !ARRAY(e->dbuf, p->n_buffers) || !ARRAY(e->in_dt, p->n_inputs) ||
        !ARRAY(e->out_dt, p->n_outputs) || !ARRAY(e->in_shape, p->n_inputs) ||
        !ARRAY(e->out_shape, p->n_outputs) || !ARRAY(e->in_off, p->n_inputs) ||
        !ARRAY(e->out_off, p->n_outputs))
      st = kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "CUDA backend: out of memory");
  }
  if (!st) {
    for (int32_t i = 0; i < p->n_inputs; i++) {
      e->in_dt[i] = p->in_dtypes[i];
      e->in_shape[i] = p->in_shapes[i];
    }
    for (int32_t i = 0; i < p->n_outputs; i++) {
      e->out_dt[i] = p->out_dtypes[i];
      e->out_shape[i] = p->out_shapes[i];
    }
    st = copy_steps(e, p, d);
  }
  if (!st) st = build_module(e, p, d);
  bool gemm = false;
  for (int32_t i = 0; i < p->n_kernels; i++) gemm |= p->kernels[i].kind == KILN_KERNEL_GEMM;
  if (!st && gemm) st = load_cublas(&e->blas, d);
  if (!st && gemm) {
    cublasStatus_t bs = e->blas.Create(&e->blas_handle);
    if (bs != CUBLAS_STATUS_SUCCESS) {
      e->blas_handle = NULL;
      st = kiln_diag_set(d, KILN_ERR_BACKEND, "CUDA backend: cublasCreate failed (status %d)", (int)bs);
    }
  }
  if (!st) st = alloc_memory(e, p, d);
  if (st) {
    kiln_cuda_exec_destroy(e);
    return st;
  }
  *out = e;
  return KILN_OK;
}

/* ------------------------------------------------------------------ run */
/* A generated kernel over n elements (grid-stride loop), on the legacy default stream. */
static kiln_status launch(kiln_cuda_exec *e, CUfunction fn, long long n, int block, const char *what, const step *s,
                          kiln_diag *d) {
  if (n <= 0) return KILN_OK;
  if (block < 32 || block % 32 || block > 1024) /* a warp-per-row kernel needs whole warps */
    return kiln_diag_set(d, KILN_ERR_INTERNAL, "CUDA backend: %skernel %s is scheduled with %d threads a block", what,
                         s->name, block);
  long long blocks = (n + block - 1) / block;
  if (blocks > MAX_BLOCKS) blocks = MAX_BLOCKS;
  CUdeviceptr table = e->mem_table;
  void *args[] = {&table, &n};
  CU_CHECK(e, e->cu.LaunchKernel(fn, (unsigned)blocks, 1, 1, (unsigned)block, 1, 1, 0, NULL, args, NULL), d,
           "launching %skernel %s", what, s->name);
  return KILN_OK;
}

/* One cuBLAS strided-batched call, column-major: C(n x m) = op(B) * op(A). */
static kiln_status blas_call(kiln_cuda_exec *e, const step *s, cublasOperation_t ta, cublasOperation_t tb,
                             int64_t n, int64_t m, int64_t k, CUdeviceptr B, int64_t ldb, int64_t bs,
                             CUdeviceptr A, int64_t lda, int64_t as, CUdeviceptr C, int64_t ldc, int64_t cs,
                             int64_t count, kiln_diag *d) {
  cublasStatus_t st;
  if (s->dtype == KILN_F32) {
    const float one = 1.0f, zero = 0.0f;
    st = e->blas.Sgemm(e->blas_handle, ta, tb, (int)n, (int)m, (int)k, &one, (const float *)(uintptr_t)B, (int)ldb,
                       bs, (const float *)(uintptr_t)A, (int)lda, as, &zero, (float *)(uintptr_t)C, (int)ldc, cs,
                       (int)count);
  } else {
    const double one = 1.0, zero = 0.0;
    st = e->blas.Dgemm(e->blas_handle, ta, tb, (int)n, (int)m, (int)k, &one, (const double *)(uintptr_t)B, (int)ldb,
                       bs, (const double *)(uintptr_t)A, (int)lda, as, &zero, (double *)(uintptr_t)C, (int)ldc, cs,
                       (int)count);
  }
  if (st != CUBLAS_STATUS_SUCCESS)
    return kiln_diag_set(d, KILN_ERR_BACKEND, "CUDA backend: cuBLAS gemm failed for kernel %s (status %d)", s->name,
                         (int)st);
  return KILN_OK;
}

/* Element offset of product t (row-major over the batch loops) with per-loop strides bs. */
static int64_t batch_offset(const kiln_gemm_desc *g, const int64_t *bs, int64_t t) {
  if (g->n_batch == 0) return 0;
  if (g->n_batch == 1) return t * bs[0];
  return t / g->batch[1] * bs[0] + t % g->batch[1] * bs[1];
}

static kiln_status run_gemm(kiln_cuda_exec *e, const step *s, kiln_diag *d) {
  const kiln_gemm_desc *g = &s->gemm;
  if (s->n_prod <= 0 || g->m <= 0 || g->n <= 0) return KILN_OK; /* as the CPU runtime: nothing to do */
  /* Row-major C = A*B is column-major C^T = B^T * A^T: swap the operands and m/n. */
  cublasOperation_t ta = g->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasOperation_t tb = g->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  size_t es = kiln_dtype_size(s->dtype);
  kiln_status st = KILN_OK;
  if (s->pack_fn) {
    /* B packed tile by tile into the scratch b_buf (ldb = tile_n, not transposed) */
    for (int64_t t = 0; t < s->n_prod && !st; t++) {
      CUdeviceptr A = e->dbuf[g->a_buf] + (CUdeviceptr)((g->a_off + batch_offset(g, g->a_bstride, t)) * (int64_t)es);
      CUdeviceptr C0 = e->dbuf[g->c_buf] + (CUdeviceptr)((g->c_off + batch_offset(g, g->c_bstride, t)) * (int64_t)es);
      for (int64_t ti = 0; ti < s->n_tiles && !st; ti++) {
        int64_t j0 = ti * g->tile_n, tn = g->n - j0 < g->tile_n ? g->n - j0 : g->tile_n;
        CUdeviceptr par = e->mem_params + (CUdeviceptr)(s->param_off + (size_t)(t * s->n_tiles + ti) * 2 * sizeof(int64_t));
        CU_CHECK(e, e->cu.MemcpyDtoDAsync(e->dbuf[g->param_buf], par, 2 * sizeof(int64_t), NULL), d,
                 "setting the tile parameters (batch %" PRId64 ", column %" PRId64 ") of GEMM kernel %s", t, j0,
                 s->name);
        st = launch(e, s->pack_fn, s->pack_n, s->pack_block, "the pack of ", s, d);
        if (!st)
          st = blas_call(e, s, CUBLAS_OP_N, tb, tn, g->m, g->k, e->dbuf[g->b_buf], g->tile_n, 0, A, g->lda, 0,
                         C0 + (CUdeviceptr)(j0 * (int64_t)es), g->ldc, 0, 1, d);
      }
    }
  } else {
    int64_t outer = g->n_batch == 2 ? g->batch[0] : 1;
    int64_t inner = g->n_batch >= 1 ? g->batch[g->n_batch - 1] : 1;
    int64_t as = g->n_batch >= 1 ? g->a_bstride[g->n_batch - 1] : 0;
    int64_t bs = g->n_batch >= 1 ? g->b_bstride[g->n_batch - 1] : 0;
    int64_t cs = g->n_batch >= 1 ? g->c_bstride[g->n_batch - 1] : 0;
    for (int64_t o = 0; o < outer && !st; o++) {
      CUdeviceptr A = e->dbuf[g->a_buf] + (CUdeviceptr)((g->a_off + o * (g->n_batch == 2 ? g->a_bstride[0] : 0)) * (int64_t)es);
      CUdeviceptr B = e->dbuf[g->b_buf] + (CUdeviceptr)((g->b_off + o * (g->n_batch == 2 ? g->b_bstride[0] : 0)) * (int64_t)es);
      CUdeviceptr C = e->dbuf[g->c_buf] + (CUdeviceptr)((g->c_off + o * (g->n_batch == 2 ? g->c_bstride[0] : 0)) * (int64_t)es);
      st = blas_call(e, s, ta, tb, g->n, g->m, g->k, B, g->ldb, bs, A, g->lda, as, C, g->ldc, cs, inner, d);
    }
  }
  /* elementwise and in place over C: once over everything equals once per tile */
  if (!st && s->epi_fn) st = launch(e, s->epi_fn, s->epi_n, s->epi_block, "the epilogue of ", s, d);
  return st;
}

/* The reference routine on host copies of the kernel's buffers. */
static kiln_status run_opaque(kiln_cuda_exec *e, const step *s, kiln_diag *d) {
  const kiln_rt_opaque_desc *o = &s->op;
  void **host = kiln_ir_malloc(e->alloc, sizeof(void *) * (size_t)e->n_buffers);
  if (!host) return kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "CUDA backend: out of memory");
  memset(host, 0, sizeof(void *) * (size_t)e->n_buffers);
  kiln_status st = KILN_OK;
  int32_t ids[KILN_RT_MAX_OPAQUE_IN + 1];
  int32_t n_ids = 0;
  for (int32_t j = 0; j < o->n_in; j++) ids[n_ids++] = o->in_bufs[j];
  ids[n_ids++] = o->out_buf;
  for (int32_t j = 0; j < n_ids && !st; j++) {
    int32_t b = ids[j];
    if (host[b]) continue;
    host[b] = kiln_ir_malloc(e->alloc, e->buf_bytes[b] ? e->buf_bytes[b] : 1);
    if (!host[b]) {
      st = kiln_diag_set(d, KILN_ERR_OUT_OF_MEMORY, "CUDA backend: out of memory for kernel %s", s->name);
      break;
    }
    if (e->buf_bytes[b]) {
      CUresult rc = e->cu.MemcpyDtoH(host[b], e->dbuf[b], e->buf_bytes[b]);
      if (rc != CUDA_SUCCESS)
        st = kiln_diag_set(d, KILN_ERR_BACKEND, "CUDA backend: copying buffer %d to the host for kernel %s: %s",
                           b, s->name, cu_name(e, rc));
    }
  }
  if (!st) {
    if (kiln_rt_opaque(o, host) != 0) {
      /* earlier kernels are done (the copies above synchronized): keep the first error */
      int32_t w = 0, me = (int32_t)(s - e->steps) + 1;
      CUresult rc = e->cu.MemcpyDtoH(&w, e->mem_err, sizeof w);
      if (rc == CUDA_SUCCESS && w == 0) rc = e->cu.MemcpyHtoD(e->mem_err, &me, sizeof me);
      if (rc != CUDA_SUCCESS)
        st = kiln_diag_set(d, KILN_ERR_BACKEND, "CUDA backend: setting the error word for kernel %s: %s", s->name,
                           cu_name(e, rc));
    }
    if (!st && e->buf_bytes[o->out_buf]) {
      CUresult rc = e->cu.MemcpyHtoD(e->dbuf[o->out_buf], host[o->out_buf], e->buf_bytes[o->out_buf]);
      if (rc != CUDA_SUCCESS)
        st = kiln_diag_set(d, KILN_ERR_BACKEND, "CUDA backend: copying the result of kernel %s back: %s",
                           s->name, cu_name(e, rc));
    }
  }
  for (int32_t b = 0; b < e->n_buffers; b++) kiln_ir_free(e->alloc, host[b]);
  kiln_ir_free(e->alloc, host);
  return st;
}

static kiln_status check_tensor(const kiln_rt_tensor *t, kiln_dtype dt, const kiln_shape *s,
                                const char *what, int32_t i, kiln_diag *d) {
  if (t->dtype != dt || !kiln_shape_eq(&t->shape, s) || (!t->data && kiln_shape_numel(s) > 0))
    return kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT,
                         "CUDA backend: %s %d: expected %s of rank %d with %" PRId64 " elements, got %s of rank %d",
                         what, i, kiln_dtype_name(dt), s->rank, kiln_shape_numel(s), kiln_dtype_name(t->dtype),
                         t->shape.rank);
  return KILN_OK;
}

kiln_status kiln_cuda_exec_run(kiln_cuda_exec *e, const kiln_rt_tensor *in, int32_t n_in,
                               kiln_rt_tensor *out, int32_t n_out, kiln_diag *d) {
  if (n_in != e->n_inputs || n_out != e->n_outputs)
    return kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT, "CUDA backend: %d inputs and %d outputs given, %d and %d expected",
                         n_in, n_out, e->n_inputs, e->n_outputs);
  for (int32_t i = 0; i < n_in; i++)
    if (check_tensor(&in[i], e->in_dt[i], &e->in_shape[i], "input", i, d)) return KILN_ERR_INVALID_ARGUMENT;
  for (int32_t i = 0; i < n_out; i++)
    if (check_tensor(&out[i], e->out_dt[i], &e->out_shape[i], "output", i, d)) return KILN_ERR_INVALID_ARGUMENT;
  CU_CHECK(e, e->cu.CtxSetCurrent(e->ctx), d, "cuCtxSetCurrent");
  const int32_t zero = 0;
  CU_CHECK(e, e->cu.MemcpyHtoD(e->mem_err, &zero, sizeof zero), d, "clearing the error word");
  for (int32_t i = 0; i < n_in; i++) {
    size_t bytes = shape_bytes(e->in_dt[i], &e->in_shape[i]);
    if (bytes) CU_CHECK(e, e->cu.MemcpyHtoD(e->mem_in + e->in_off[i], in[i].data, bytes), d, "copying input %d to the GPU", i);
  }
  for (int32_t i = 0; i < e->n_steps; i++) {
    const step *s = &e->steps[i];
    kiln_status st = KILN_OK;
    switch (s->kind) {
    case KILN_KERNEL_LOOP: st = launch(e, s->fn, s->n, s->block, "", s, d); break;
    case KILN_KERNEL_GEMM: st = run_gemm(e, s, d); break;
    case KILN_KERNEL_OPAQUE: st = run_opaque(e, s, d); break;
    }
    if (st) return st;
  }
  for (int32_t i = 0; i < n_out; i++) {
    size_t bytes = shape_bytes(e->out_dt[i], &e->out_shape[i]);
    /* a failed kernel surfaces here, at the first synchronizing call */
    if (bytes) CU_CHECK(e, e->cu.MemcpyDtoH(out[i].data, e->mem_out + e->out_off[i], bytes), d,
                        "copying output %d back (or an earlier kernel failed)", i);
  }
  CU_CHECK(e, e->cu.CtxSynchronize(), d, "cuCtxSynchronize after the run");
  int32_t err = 0;
  CU_CHECK(e, e->cu.MemcpyDtoH(&err, e->mem_err, sizeof err), d, "reading the error word back");
  if (err != 0) {
    if (err < 1 || err > e->n_steps)
      return kiln_diag_set(d, KILN_ERR_INTERNAL, "CUDA backend: the error word holds %d, not a kernel", (int)err);
    return kiln_diag_set(d, KILN_ERR_INVALID_ARGUMENT, "%s", e->steps[err - 1].err);
  }
  return KILN_OK;
}

void kiln_cuda_exec_destroy(kiln_cuda_exec *e) {
  if (!e) return;
  if (e->ctx) e->cu.CtxSetCurrent(e->ctx);
  CUdeviceptr mems[] = {e->mem_in, e->mem_out, e->mem_const, e->mem_arena, e->mem_table, e->mem_err, e->mem_params};
  for (size_t i = 0; i < sizeof mems / sizeof mems[0]; i++)
    if (mems[i]) e->cu.MemFree(mems[i]);
  if (e->mod) e->cu.ModuleUnload(e->mod);
  if (e->blas_handle) e->blas.Destroy(e->blas_handle);
  if (e->ctx_retained) e->cu.PrimaryCtxRelease(e->dev);
  const kiln_allocator *a = e->alloc;
  kiln_ir_free(a, e->steps);
  kiln_ir_free(a, e->buf_bytes);
  kiln_ir_free(a, e->dbuf);
  kiln_ir_free(a, e->in_dt);
  kiln_ir_free(a, e->out_dt);
  kiln_ir_free(a, e->in_shape);
  kiln_ir_free(a, e->out_shape);
  kiln_ir_free(a, e->in_off);
  kiln_ir_free(a, e->out_off);
  if (e->cu.lib) dlclose(e->cu.lib);
  if (e->blas.lib) dlclose(e->blas.lib);
  kiln_ir_free(a, e);
}
