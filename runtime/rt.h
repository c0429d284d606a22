/* rt.h - what the runtime/ module offers: tensors, the reference interpreter (the oracle
 * of every test and the engine of constant folding), the thread pool, the routines that
 * compiled code calls (parallel loops, GEMM, opaque ops), the CPU executable, and .npy I/O.
 * Layer: above ir/, beside frontend/.
 *
 * The runtime ABI (functions called from generated code, descriptor structs embedded as
 * raw bytes in generated code) is listed under "Called from generated code". These
 * structs hold no pointers, so their bytes can be embedded in an object file.
 */
#ifndef KILN_RT_H
#define KILN_RT_H

#include "../ir/ir.h"

/* ------------------------------------------------------------------ tensors */
typedef struct kiln_rt_tensor {
  kiln_dtype dtype;
  kiln_shape shape;
  void *data;
} kiln_rt_tensor;

size_t kiln_rt_tensor_nbytes(const kiln_rt_tensor *t);

/* Element access through doubles / int64 (slow; for the interpreter and tests). Storing
 * converts as the graph's cast does (ops.def): a double into an integer dtype truncates
 * and saturates (NaN -> 0), an int64 into a narrower integer keeps the low bits. */
double kiln_rt_get_f64(kiln_dtype dt, const void *data, int64_t i);
int64_t kiln_rt_get_i64(kiln_dtype dt, const void *data, int64_t i);
void kiln_rt_set_f64(kiln_dtype dt, void *data, int64_t i, double v);
void kiln_rt_set_i64(kiln_dtype dt, void *data, int64_t i, int64_t v);

/* ------------------------------------------------------------------ reference interpreter */
/* Evaluates one node: `ins` are its inputs (n->n_in of them, with their shapes), `out`
 * has n->dtype/n->shape and preallocated data. Constants and inputs are not evaluated
 * here (the caller supplies them). Straightforward loops, no cleverness: this is the
 * definition of every op's semantics. */
kiln_status kiln_rt_eval_node(const kiln_graph *g, const kiln_node *n, const kiln_rt_tensor *ins,
                              kiln_rt_tensor *out, kiln_diag *d);

/* Runs the whole graph. `in` in graph input order; `out` in graph output order with
 * caller-allocated data of the graph's output shapes. */
kiln_status kiln_rt_interpret(const kiln_graph *g, const kiln_rt_tensor *in, int32_t n_in,
                              kiln_rt_tensor *out, int32_t n_out, kiln_diag *d);

/* Runs the graph and returns the value of every node (vals[i] for node i; constants point
 * into the constant store, others are allocated). Free with kiln_rt_values_free. */
kiln_status kiln_rt_interpret_values(const kiln_graph *g, const kiln_rt_tensor *in, int32_t n_in,
                                     kiln_rt_tensor **vals, kiln_diag *d);
void kiln_rt_values_free(const kiln_graph *g, kiln_rt_tensor *vals);

/* Evaluates node v, all of whose transitive inputs must be constants, and appends its
 * value as a constant node. *out_node is the new constant node id. Used by the fold pass
 * and (through a callback) by the ONNX importers for shape computations. */
kiln_status kiln_rt_fold_value(kiln_graph *g, int32_t v, int32_t *out_node, kiln_diag *d);

/* ------------------------------------------------------------------ thread pool */
typedef struct kiln_rt_pool kiln_rt_pool;
/* threads <= 0: number of online CPUs. threads == 1 runs everything on the caller.
 * a: the allocator (NULL: malloc). spin_us: how long a thread about to sleep spins first
 * (microseconds, at most 1 s; < 0: the default, 100; pool.c says why). Any number of
 * threads may call kiln_rt_parallel_for on one pool at once (one job runs on the
 * workers; the others run on their callers). */
kiln_rt_pool *kiln_rt_pool_create(const kiln_allocator *a, int threads, int64_t spin_us);
void kiln_rt_pool_destroy(kiln_rt_pool *p);
int kiln_rt_pool_threads(const kiln_rt_pool *p);

/* ------------------------------------------------------------------ called from generated code */
/* A LOOP kernel compiled for the CPU: computes output rows [begin, end) of its parallel
 * range. bufs[i] is the base address of buffer i of the kernel program.
 *
 * Error word: bufs has one slot more than the program has buffers; bufs[n_buffers]
 * points to an int32_t the caller zeroes before a run. A kernel that finds its input data
 * invalid (a CHECK kx that fails: an out-of-range gather index; an OPAQUE routine that
 * refuses, e.g. a scatter index) sets it to (its kernel index + 1), first error wins
 * (compare-and-swap from 0), and goes on without reading out of bounds; the caller turns
 * a nonzero word into an error status (kiln_ir_kernel_error_message). Generated code
 * touches the slot only when reporting, so a program with no checks and no failing
 * opaque kernel never reads it. */
typedef void (*kiln_rt_kernel_fn)(void **bufs, int64_t begin, int64_t end);
/* The whole program: runs every kernel in order. pool may be NULL (single thread). */
typedef void (*kiln_rt_entry_fn)(void **bufs, kiln_rt_pool *pool);

/* Splits [0, n) into chunks of at least `grain` and runs fn on the pool; returns when all
 * chunks are done. Called by generated code. */
void kiln_rt_parallel_for(kiln_rt_pool *pool, kiln_rt_kernel_fn fn, void **bufs, int64_t n,
                          int64_t grain);

/* GEMM kernel: dtype is KILN_F32 or KILN_F64 (OpenBLAS when built with it, else a
 * blocked C loop). desc is a kiln_gemm_desc (ir.h). */
void kiln_rt_gemm(kiln_rt_pool *pool, const kiln_gemm_desc *desc, int32_t dtype, void **bufs);
/* A GEMM kernel with fused sub-kernels (either may be NULL): pack computes B's tiles
 * (desc->tile_n, param_buf: see kiln_gemm_desc), epilogue runs over the output rows of
 * each finished tile (rows in the epilogue domain, desc->epi_last elements each). */
void kiln_rt_gemm_fused(kiln_rt_pool *pool, const kiln_gemm_desc *desc, int32_t dtype, void **bufs,
                        kiln_rt_kernel_fn pack, kiln_rt_kernel_fn epilogue);

/* OPAQUE kernel: runs the reference routine of an opaque op. */
#define KILN_RT_MAX_OPAQUE_IN 4
typedef struct kiln_rt_opaque_desc {
  int32_t op;                     /* kiln_op */
  int32_t out_buf;
  int32_t out_dtype;
  int32_t n_in;
  kiln_shape out_shape;
  kiln_attrs attrs;
  int32_t in_bufs[KILN_RT_MAX_OPAQUE_IN];
  int32_t in_dtypes[KILN_RT_MAX_OPAQUE_IN];
  kiln_shape in_shapes[KILN_RT_MAX_OPAQUE_IN];
} kiln_rt_opaque_desc;
/* Returns 0, or nonzero when the routine refused its input data (an out-of-range scatter
 * index): the output is then zero-filled and generated code reports the kernel through
 * the error word. */
int kiln_rt_opaque(const kiln_rt_opaque_desc *desc, void **bufs);

/* ------------------------------------------------------------------ the AOT library's
 * generic, self-describing entry. A shared library written by kiln_export exports
 * `const kiln_aot_model *kiln_aot_describe(void)`. */
/* Generated model headers carry the same definitions under the same guard, so a file
 * may include both. */
#ifndef KILN_AOT_MODEL_DEFINED
#define KILN_AOT_MODEL_DEFINED
#define KILN_AOT_ABI_VERSION 1
typedef struct kiln_aot_io {
  const char *name;
  int32_t dtype;                  /* kiln_dtype */
  int32_t rank;
  int64_t dims[KILN_MAX_RANK];
} kiln_aot_io;

typedef struct kiln_aot_model {
  int32_t abi_version;
  const char *name;
  int32_t n_inputs, n_outputs;
  const kiln_aot_io *inputs, *outputs;
  int32_t n_kernels;
  int64_t arena_bytes;
  /* Generic entry points (the typed ones in the generated header wrap these). */
  int (*create)(void **model, int threads);
  int (*run)(void *model, const void *const *inputs, void *const *outputs);
  void (*destroy)(void *model);
  const char *(*strerror)(int code);
} kiln_aot_model;
#endif

/* ------------------------------------------------------------------ .npy files */
/* Reads a .npy file (v1/v2/v3, little-endian, C order; dtypes f4 f8 f2 i1 i2 i4 i8 u1 b1;
 * bf16 not representable). data is allocated with the allocator. */
kiln_status kiln_rt_npy_read(const kiln_allocator *a, const char *path, kiln_rt_tensor *t,
                             kiln_diag *d);
kiln_status kiln_rt_npy_write(const char *path, const kiln_rt_tensor *t, kiln_diag *d);

#endif
