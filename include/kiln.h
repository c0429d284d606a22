/* kiln.h - the public C API of Kiln, a tensor-graph compiler.
 *
 * OVERVIEW
 *
 * Kiln takes a model (an ONNX file, a textual Kiln IR file, or a graph built with the
 * builder functions below), optimizes it (constant folding, simplification, CSE/DCE,
 * fusion, memory planning) and compiles it to native code: CPU code through LLVM (run
 * in-process, or written out as a self-contained shared library with a C header), or
 * CUDA C compiled by NVRTC.
 *
 * Everything lives in a kiln_context: the allocator, thread count, cache directory, the
 * settings read from the environment and the last error message. There are no mutable
 * globals; several contexts may live in one process.
 *
 * THREADS. A context and the graphs made in it are used by one thread at a time. The
 * exception is kiln_run: one executable may be run from several threads at once (and so
 * may several executables of one context), each run correct on its own. Concurrent runs
 * of a CPU executable each get their own scratch memory (the executable keeps as many
 * arenas as the most runs it has seen at once, for reuse); the context's worker threads
 * serve one run at a time and the others run on their calling threads. Runs of a CUDA
 * executable or of a loaded library (kiln_load_library: one model object) wait for each
 * other. A failed concurrent run's message goes to the context under a lock: read it
 * with kiln_last_error_copy, since another thread's failure may replace it.
 *
 * LIFETIMES. Graphs and executables keep their context alive: kiln_context_destroy
 * gives up the caller's reference, and the context is freed when the last graph or
 * executable made in it is destroyed (in any order). Destroy an executable only after
 * its last run returned.
 *
 * ENVIRONMENT. kiln_context_create reads these once; nothing reads them later:
 *   KILN_CACHE_DIR    the compile cache folder when the options give none ("": no cache;
 *                     unset: $HOME/.cache/kiln)
 *   KILN_VERIFY=1     every kiln_compile in verify mode (kiln_compile_options.verify)
 *   KILN_VERIFY_CORRUPT_KERNEL=k  test hook of verify mode: corrupts kernel k's output
 *   KILN_VERIFY_PASSES  (set, not 0) run the graph verifier after every pass
 *   KILN_PROFILE      (set, not 0) time each CPU kernel; printed to stderr when the
 *                     executable is destroyed
 *   KILN_POOL_SPIN_US how long a worker thread spins before it sleeps (0..1000000 us;
 *                     default 100)
 *   KILN_AOTRT        kiln_export: the AOT runtime library to link (default: the
 *                     libkiln_aotrt.a installed beside Kiln, in LIBDIR/kiln/)
 *   CC                kiln_export: the C compiler that links the library (default cc)
 *
 * Every function that can fail returns a kiln_status; kiln_last_error(ctx) then says what
 * went wrong and where (file, ONNX node name, op). Builder functions return a kiln_value;
 * on error the value is invalid (id < 0), the error sticks to the graph, and every later
 * builder call on an invalid value stays invalid, so a builder sequence needs one check
 * at the end (kiln_graph_status, with the message in kiln_graph_error).
 *
 * WORKED EXAMPLE: y = relu(x @ W + b), compiled and run on the CPU
 *
 * (the body of a main function; tests/install/ compiles and runs it as it stands here)
 *
 *   kiln_context *ctx;
 *   if (kiln_context_create(NULL, &ctx) != KILN_OK) return 1;
 *   kiln_graph *g;
 *   kiln_graph_create(ctx, "mlp", &g);
 *   int64_t xd[2] = {1, 4}, wd[2] = {4, 2}, bd[1] = {2};
 *   float W[8] = {1, -1, 0, 1, 1, 0, -1, 1}, B[2] = {0.5f, -20};
 *   kiln_value x = kiln_input(g, "x", KILN_F32, 2, xd);
 *   kiln_value w = kiln_constant(g, "W", KILN_F32, 2, wd, W);
 *   kiln_value b = kiln_constant(g, "b", KILN_F32, 1, bd, B);
 *   kiln_value y = kiln_relu(g, kiln_add(g, kiln_matmul(g, x, w), b));
 *   kiln_output(g, "y", y);
 *   if (kiln_graph_status(g) != KILN_OK) { puts(kiln_graph_error(g)); return 1; }
 *
 *   kiln_executable *exe;
 *   if (kiln_compile(ctx, g, NULL, &exe) != KILN_OK) { puts(kiln_last_error(ctx)); return 1; }
 *   float xin[4] = {1, 2, 3, 4}, yout[2];
 *   kiln_tensor in = {KILN_F32, 2, {1, 4}, xin}, out = {KILN_F32, 2, {1, 2}, yout};
 *   if (kiln_run(exe, &in, 1, &out, 1) != KILN_OK) { puts(kiln_last_error(ctx)); return 1; }
 *   printf("y = %g %g\n", yout[0], yout[1]); // y = 0.5 0: relu([0.5, -15])
 *   kiln_executable_destroy(exe);
 *   kiln_graph_destroy(g);
 *   kiln_context_destroy(ctx);
 *
 * Loading ONNX instead: kiln_load_onnx(ctx, "model.onnx", NULL, &g). Writing a shared
 * library and its header, with the typed API named model_create, model_run, ...:
 * kiln_export(ctx, g, NULL, "libmodel.so", "model.h", "model").
 */
#ifndef KILN_H
#define KILN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ===================================================================== status codes */
typedef enum kiln_status {
  KILN_OK = 0,
  KILN_ERR_INVALID_ARGUMENT, /* a NULL handle, a wrong tensor at run time, a bad option */
  KILN_ERR_IO,               /* a missing or unreadable file */
  KILN_ERR_PARSE,            /* a malformed model or IR text */
  KILN_ERR_UNSUPPORTED,      /* an op, dtype or attribute Kiln does not handle (yet) */
  KILN_ERR_SHAPE,            /* shapes or dtypes that do not fit an op */
  KILN_ERR_OUT_OF_MEMORY,
  KILN_ERR_BACKEND,          /* LLVM, the linker, NVRTC or the CUDA driver failed */
  KILN_ERR_NO_DEVICE,        /* the CUDA target was asked for and no GPU/driver is there */
  KILN_ERR_INTERNAL,         /* a bug in Kiln: please report it with the message */
} kiln_status;

/* Short name of a status ("KILN_ERR_PARSE"). */
const char *kiln_status_name(kiln_status s);

/* Kiln's version, "MAJOR.MINOR.PATCH" (also in the compile cache's key). */
const char *kiln_version(void);

/* ===================================================================== dtypes */
typedef enum kiln_dtype {
  KILN_F32 = 0,
  KILN_F64,
  KILN_F16,
  KILN_BF16,
  KILN_I8,
  KILN_I16,
  KILN_I32,
  KILN_I64,
  KILN_U8,
  KILN_BOOL, /* one byte, 0 or 1 */
  KILN_DTYPE_COUNT
} kiln_dtype;

/* ===================================================================== handles */
typedef struct kiln_context kiln_context;
typedef struct kiln_graph kiln_graph;
typedef struct kiln_executable kiln_executable;

/* A value in a graph under construction. Invalid when id < 0. */
typedef struct kiln_value {
  int32_t id;
} kiln_value;

/* A tensor handed to or returned from kiln_run: dense, row-major, caller-owned data. */
#define KILN_TENSOR_MAX_RANK 8
typedef struct kiln_tensor {
  kiln_dtype dtype;
  int32_t rank;
  int64_t dims[KILN_TENSOR_MAX_RANK];
  void *data;
} kiln_tensor;

/* ===================================================================== context */
/* The allocator hook: every allocation Kiln makes goes through it. */
typedef struct kiln_allocator {
  void *(*alloc)(void *user, size_t size);           /* NULL on failure */
  void *(*realloc)(void *user, void *p, size_t size);
  void (*free)(void *user, void *p);
  void *user;
} kiln_allocator;

typedef struct kiln_context_options {
  const kiln_allocator *allocator; /* NULL: malloc/realloc/free */
  int threads;                     /* worker threads for compiled code; 0: all cores */
  const char *cache_dir;           /* compile cache; NULL: $KILN_CACHE_DIR or ~/.cache/kiln;
                                      "" disables the cache */
  int log_level;                   /* to stderr: 0 quiet; 1 info, and the stages of a
                                      compile that takes over a second (passes, kernels
                                      rendered and compiled); 2 debug, every stage */
} kiln_context_options;

/* Also reads the environment (ENVIRONMENT above). */
kiln_status kiln_context_create(const kiln_context_options *o, kiln_context **ctx);
/* Gives up the caller's reference: the context lives on while graphs or executables made
 * in it do (LIFETIMES above). */
void kiln_context_destroy(kiln_context *ctx);
/* The message of the last failed call on this context (never NULL): the context's own
 * buffer, rewritten by the next failure. */
const char *kiln_last_error(const kiln_context *ctx);
/* The same message copied into buf (n bytes, NUL-terminated, cut to fit) under the
 * context's lock: safe while other threads run executables of the context. Returns the
 * message's length. */
size_t kiln_last_error_copy(const kiln_context *ctx, char *buf, size_t n);

/* ===================================================================== loading models */
typedef struct kiln_load_options {
  /* Values for symbolic input dims (ONNX dim_param), e.g. {"batch", 8}. A symbol with
   * no binding gets default_dim (1 when 0). */
  int32_t n_bindings;
  const char *const *binding_names;
  const int64_t *binding_values;
  int64_t default_dim;
  /* Graph inputs whose values are known at load time (e.g. a shape, axes or pads input):
   * the input named constant_input_names[i] is imported as a constant holding
   * constant_input_values[i] (copied), so shape computations that depend on it fold.
   * It is no longer an input of the graph. */
  int32_t n_constant_inputs;
  const char *const *constant_input_names;
  const kiln_tensor *constant_input_values;
} kiln_load_options;

/* ONNX model file. External data files are resolved relative to the model's folder and
 * may not leave it. An unsupported model gets one error listing every unsupported op. */
kiln_status kiln_load_onnx(kiln_context *ctx, const char *path, const kiln_load_options *o,
                           kiln_graph **g);
/* kiln_load_onnx from a serialized ModelProto in memory (data, n bytes; not kept). There
 * is no model folder, so a model with external data is KILN_ERR_UNSUPPORTED. */
kiln_status kiln_load_onnx_bytes(kiln_context *ctx, const void *data, size_t n, const kiln_load_options *o,
                                 kiln_graph **out);
/* Kiln's textual IR (what `kiln dump` prints). */
kiln_status kiln_load_text(kiln_context *ctx, const char *path, kiln_graph **g);
kiln_status kiln_parse_text(kiln_context *ctx, const char *text, kiln_graph **g);

/* ===================================================================== graph builder */
kiln_status kiln_graph_create(kiln_context *ctx, const char *name, kiln_graph **g);
void kiln_graph_destroy(kiln_graph *g);
/* KILN_OK, or the first builder error; kiln_graph_error says what and where. */
kiln_status kiln_graph_status(kiln_graph *g);
const char *kiln_graph_error(const kiln_graph *g);
/* Textual IR, allocated with the context's allocator; free with kiln_free. */
char *kiln_graph_to_text(kiln_context *ctx, const kiln_graph *g);
void kiln_free(kiln_context *ctx, void *p);

int32_t kiln_graph_num_inputs(const kiln_graph *g);
int32_t kiln_graph_num_outputs(const kiln_graph *g);
/* Dtype and shape of value v of g (dims must hold KILN_TENSOR_MAX_RANK);
 * KILN_ERR_INVALID_ARGUMENT for an invalid value. */
kiln_status kiln_value_info(const kiln_graph *g, kiln_value v, kiln_dtype *dt, int32_t *rank, int64_t *dims);
/* Name, dtype and shape of input/output i (dims must hold KILN_TENSOR_MAX_RANK). */
kiln_status kiln_graph_input_info(const kiln_graph *g, int32_t i, const char **name,
                                  kiln_dtype *dt, int32_t *rank, int64_t *dims);
kiln_status kiln_graph_output_info(const kiln_graph *g, int32_t i, const char **name,
                                   kiln_dtype *dt, int32_t *rank, int64_t *dims);
/* The symbol dim `dim` of input i was bound from (ONNX dim_param, e.g. "batch"; its value
 * is in kiln_graph_input_info's dims), or NULL for a fixed dim or bad arguments. */
const char *kiln_graph_input_dim_name(const kiln_graph *g, int32_t i, int32_t dim);

kiln_value kiln_input(kiln_graph *g, const char *name, kiln_dtype dt, int32_t rank,
                      const int64_t *dims);
/* Copies data. */
kiln_value kiln_constant(kiln_graph *g, const char *name, kiln_dtype dt, int32_t rank,
                         const int64_t *dims, const void *data);
kiln_value kiln_scalar(kiln_graph *g, kiln_dtype dt, double v);
kiln_status kiln_output(kiln_graph *g, const char *name, kiln_value v);

/* Elementwise; binary ops broadcast with numpy rules. */
kiln_value kiln_add(kiln_graph *g, kiln_value a, kiln_value b);
kiln_value kiln_sub(kiln_graph *g, kiln_value a, kiln_value b);
kiln_value kiln_mul(kiln_graph *g, kiln_value a, kiln_value b);
kiln_value kiln_div(kiln_graph *g, kiln_value a, kiln_value b);
kiln_value kiln_pow(kiln_graph *g, kiln_value a, kiln_value b);
kiln_value kiln_max(kiln_graph *g, kiln_value a, kiln_value b);
kiln_value kiln_min(kiln_graph *g, kiln_value a, kiln_value b);
kiln_value kiln_neg(kiln_graph *g, kiln_value x);
kiln_value kiln_exp(kiln_graph *g, kiln_value x);
kiln_value kiln_log(kiln_graph *g, kiln_value x);
kiln_value kiln_sqrt(kiln_graph *g, kiln_value x);
kiln_value kiln_tanh(kiln_graph *g, kiln_value x);
kiln_value kiln_sigmoid(kiln_graph *g, kiln_value x);
kiln_value kiln_erf(kiln_graph *g, kiln_value x);
kiln_value kiln_relu(kiln_graph *g, kiln_value x);
kiln_value kiln_cast(kiln_graph *g, kiln_value x, kiln_dtype to);
kiln_value kiln_where(kiln_graph *g, kiln_value cond, kiln_value a, kiln_value b);

/* Movement. */
kiln_value kiln_reshape(kiln_graph *g, kiln_value x, int32_t rank, const int64_t *dims);
kiln_value kiln_transpose(kiln_graph *g, kiln_value x, const int32_t *perm);
kiln_value kiln_concat(kiln_graph *g, int32_t n, const kiln_value *xs, int32_t axis);

/* Reductions over `axes` (negative counts from the end). */
kiln_value kiln_reduce_sum(kiln_graph *g, kiln_value x, int32_t n_axes, const int32_t *axes,
                           int keepdims);
kiln_value kiln_reduce_max(kiln_graph *g, kiln_value x, int32_t n_axes, const int32_t *axes,
                           int keepdims);
kiln_value kiln_softmax(kiln_graph *g, kiln_value x, int32_t axis);

/* Contractions: numpy matmul; 2-D convolution of NCHW input and OIHW weights. */
kiln_value kiln_matmul(kiln_graph *g, kiln_value a, kiln_value b);
kiln_value kiln_conv2d(kiln_graph *g, kiln_value x, kiln_value w, const int64_t strides[2],
                       const int64_t pads[4] /* top left bottom right */, int32_t groups);

/* ===================================================================== compiling */
typedef enum kiln_target {
  KILN_TARGET_CPU = 0,  /* LLVM, host CPU */
  KILN_TARGET_CUDA = 1, /* CUDA C through NVRTC, run through the driver API */
} kiln_target;

/* How much the compiler fuses; every level computes the same results. FULL (the default)
 * adds to ELEMENTWISE: reductions with their prologue and epilogue (softmax and layer
 * norm as one row-wise kernel), GEMM epilogues (bias, activation, residual) and im2col
 * packing inside the GEMM kernel, GEMM operands and results read and written through
 * strided views, and recomputation of cheap producers. `kiln dump --fusion-report` says
 * what was fused and why not; KILN_PROFILE=1 in the environment prints each kernel's
 * time (CPU) when an executable is destroyed. */
typedef enum kiln_fusion_level {
  KILN_FUSION_FULL = 0,        /* default */
  KILN_FUSION_ELEMENTWISE = 1, /* elementwise and movement chains into their consumer */
  KILN_FUSION_NONE = 2,        /* one kernel per primitive op */
} kiln_fusion_level;

typedef struct kiln_compile_options {
  kiln_target target;
  kiln_fusion_level fusion;
  const char *cuda_arch;       /* "sm_90" (default) */
  const char *disable_passes;  /* comma-separated pass names, e.g. "fold,cse" */
  const char *print_after;     /* pass name or "all": print the graph to stderr after it */
  int verify;                  /* check every kernel against the reference interpreter
                                  on each run (also $KILN_VERIFY=1); the first kernel
                                  whose output differs fails the run, named (CPU target;
                                  CUDA compares the final outputs) */
  /* kiln_export for the CPU target only (the JIT always compiles for the host): the LLVM
   * CPU name to generate code for ("x86-64", "x86-64-v3", "znver4", "skylake-avx512";
   * NULL: the host CPU and its features) and the target triple (NULL: the host's). An
   * unknown name is KILN_ERR_INVALID_ARGUMENT. */
  const char *cpu;
  const char *triple;
} kiln_compile_options;

kiln_status kiln_compile(kiln_context *ctx, const kiln_graph *g, const kiln_compile_options *o,
                         kiln_executable **exe);

/* Inputs and outputs in graph order. Output tensors give dtype, shape and storage; a
 * mismatch is KILN_ERR_INVALID_ARGUMENT naming the tensor. Input data that an op cannot
 * take (a gather or scatter index out of range) is KILN_ERR_INVALID_ARGUMENT naming the
 * node; the outputs are then unspecified. A shape that differs in a symbolic dim says
 * which symbol and the binding that would fit. May be called from several threads at
 * once (THREADS above). */
kiln_status kiln_run(kiln_executable *exe, const kiln_tensor *in, size_t n_in, kiln_tensor *out,
                     size_t n_out);
void kiln_executable_destroy(kiln_executable *exe);

/* Statistics of a compiled executable. */
typedef struct kiln_exe_stats {
  int32_t kernels;        /* kernels launched per run */
  int64_t bytes_moved;    /* bytes read + written by all kernels per run (estimate) */
  int64_t arena_bytes;    /* peak temporary memory */
  int64_t flops;          /* estimate */
  int32_t cache_hit;      /* 1: the CPU code came from the compile cache (no LLVM
                             optimization or code generation ran); 0 otherwise */
} kiln_exe_stats;
kiln_status kiln_executable_stats(const kiln_executable *exe, kiln_exe_stats *s);
int32_t kiln_executable_num_outputs(const kiln_executable *exe);
kiln_status kiln_executable_output_info(const kiln_executable *exe, int32_t i, const char **name,
                                        kiln_dtype *dt, int32_t *rank, int64_t *dims);
int32_t kiln_executable_num_inputs(const kiln_executable *exe);
kiln_status kiln_executable_input_info(const kiln_executable *exe, int32_t i, const char **name,
                                       kiln_dtype *dt, int32_t *rank, int64_t *dims);

/* The fusion report (docs/fusion-report.md) of g compiled with o (NULL: the defaults):
 * every kernel with the model nodes it covers, and every fusion refused with its reason.
 * json != 0: the JSON form, else the text form of `kiln dump --fusion-report`. *report is
 * allocated with the context's allocator; free it with kiln_free. It lowers g again (the
 * passes, no code generation), so it costs a fraction of a kiln_compile. */
kiln_status kiln_fusion_report(kiln_context *ctx, const kiln_graph *g, const kiln_compile_options *o, int json,
                               char **report);

/* ===================================================================== ahead of time */
/* Writes a self-contained shared library (generated code, embedded weights, the small
 * runtime support) and a C header with a typed entry point named after `prefix`
 * (NULL: the graph's name; a C identifier, not a keyword nor a kiln_ name). See the
 * header it writes for the entry points: PREFIX_create, PREFIX_run, PREFIX_destroy,
 * PREFIX_strerror, PREFIX_describe. Needs a C compiler to link (CC, else cc: a clear
 * error when there is none) and the AOT runtime installed with Kiln (KILN_AOTRT). The
 * CUDA target writes a cubin at so_path and its CUDA C at so_path.cu; it takes no
 * header (header_path must be NULL). */
kiln_status kiln_export(kiln_context *ctx, const kiln_graph *g, const kiln_compile_options *o,
                        const char *so_path, const char *header_path, const char *prefix);

/* Loads a shared library written by kiln_export as an executable (its generic entry,
 * found as kiln_aot_describe). Its runs wait for each other (one model object). */
kiln_status kiln_load_library(kiln_context *ctx, const char *so_path, kiln_executable **exe);

/* ===================================================================== reference */
/* Runs a graph with the reference interpreter (the oracle for all tests). */
kiln_status kiln_interpret(kiln_context *ctx, const kiln_graph *g, const kiln_tensor *in,
                           size_t n_in, kiln_tensor *out, size_t n_out);

#ifdef __cplusplus
}
#endif
#endif
