/* cuda.h - what the cuda/ module offers: the CUDA backend. Renders every LOOP kernel of a
 * kernel program as CUDA C, compiles it with NVRTC for a named architecture (works without
 * a GPU), and on a machine with a GPU runs the program through the driver API, with GEMM
 * kernels through cuBLAS. libcuda, NVRTC and cuBLAS are loaded with dlopen, so a CPU-only
 * machine runs every CPU feature of the same build.
 * Layer: above ir/ and runtime/; never includes codegen/.
 */
#ifndef KILN_CUDA_H
#define KILN_CUDA_H

#include "../ir/ir.h"
#include "../runtime/rt.h"

/* What the CUDA backend runs: SIMT schedules (one thread per element, or a warp per
 * row), 256 threads a block; no GEMM prologue, no sibling pairs, channels first. */
void kiln_cuda_target_desc(kiln_target_desc *d);

/* CUDA C source for the program's LOOP kernels (one __global__ function per kernel, named
 * kiln_k<index>). Refuses (KILN_ERR_UNSUPPORTED naming the kernel) what it cannot render.
 * *src is allocated with p->alloc. */
kiln_status kiln_cuda_render(const kiln_kprogram *p, char **src, kiln_diag *d);

/* NVRTC: compiles src for arch ("sm_90"); *image is a cubin (or PTX when cubin=false),
 * allocated with a. The compile log is put into the diag on failure, with the source. */
kiln_status kiln_cuda_compile(const kiln_allocator *a, const char *src, const char *arch,
                              bool cubin, void **image, size_t *image_size, kiln_diag *d);

/* True when libnvrtc can be loaded (for tests that need it). */
bool kiln_cuda_nvrtc_available(void);

typedef struct kiln_cuda_exec kiln_cuda_exec;
/* Needs a GPU: KILN_ERR_NO_DEVICE with a clear message otherwise. */
kiln_status kiln_cuda_exec_create(const kiln_kprogram *p, const char *arch, kiln_cuda_exec **e,
                                  kiln_diag *d);
kiln_status kiln_cuda_exec_run(kiln_cuda_exec *e, const kiln_rt_tensor *in, int32_t n_in,
                               kiln_rt_tensor *out, int32_t n_out, kiln_diag *d);
void kiln_cuda_exec_destroy(kiln_cuda_exec *e);

#endif
