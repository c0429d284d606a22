/* driver.h - what the driver/ module offers beyond the public API: the pieces the CLI
 * needs that are not for library users (dumps, stats of a kernel program). The driver
 * is the only module that knows all the others: it wires frontend -> passes -> backend
 * -> runtime. */
#ifndef KILN_DRIVER_H
#define KILN_DRIVER_H

#include "../ir/ir.h"
#include "../runtime/rt.h"
#include "../passes/passes.h"

#include <pthread.h>
#include <stdatomic.h>

/* What kiln_context_create reads from the environment, once (kiln.h, ENVIRONMENT): no
 * library call reads an environment variable after that. */
typedef struct kiln_context_env {
  bool verify;              /* KILN_VERIFY=1: every compile in verify mode */
  int32_t corrupt_kernel;   /* KILN_VERIFY_CORRUPT_KERNEL (verify mode test hook), or -1 */
  bool profile;             /* KILN_PROFILE (set, not 0): time each CPU kernel */
  int64_t pool_spin_us;     /* KILN_POOL_SPIN_US, or -1: the pool's default */
  bool verify_passes;       /* KILN_VERIFY_PASSES (set, not 0): verify after every pass */
  char *aotrt;              /* KILN_AOTRT: the AOT runtime to link (NULL: found beside Kiln) */
  char *cc;                 /* CC: the C compiler that links AOT libraries (NULL: cc) */
} kiln_context_env;

struct kiln_context {
  kiln_allocator alloc;
  int threads;
  char *cache_dir;
  int log_level;
  kiln_context_env env;
  /* The user's reference plus one per live graph and executable: the context is freed
   * when the last of them goes, so destroying it first is never a use-after-free. */
  atomic_int refs;
  pthread_mutex_t mu;          /* guards pool creation and last_error */
  kiln_rt_pool *pool;          /* created by the first compile that needs it */
  char last_error[2048];
};

void kiln_driver_ctx_retain(kiln_context *ctx);
void kiln_driver_ctx_release(kiln_context *ctx);
/* The context a public graph was made in (its allocator is the context's). */
kiln_context *kiln_driver_graph_ctx(const kiln_graph *g);

/* Records d's message as the context's last error and returns its status. */
kiln_status kiln_driver_fail(kiln_context *ctx, const kiln_diag *d);
kiln_status kiln_driver_failf(kiln_context *ctx, kiln_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Runs the pass pipeline on a copy of g and returns the kernel program. print_after
 * output goes to `to` (stderr when NULL). */
kiln_status kiln_driver_lower(kiln_context *ctx, const kiln_graph *g, const kiln_compile_options *o,
                              FILE *to, kiln_kprogram **out);
/* kiln_driver_lower that also hands back (when lowered is not NULL) the optimized graph
 * that was lowered: the graph the kernels' .node ids refer to. The caller destroys it
 * with kiln_ir_graph_destroy. */
kiln_status kiln_driver_lower_graph(kiln_context *ctx, const kiln_graph *g, const kiln_compile_options *o,
                                    FILE *to, kiln_kprogram **out, kiln_graph **lowered);
/* kiln_driver_lower_graph reporting each pass to progress (kiln_driver_progress_start). */
kiln_status kiln_driver_lower_with(kiln_context *ctx, const kiln_graph *g, const kiln_compile_options *o, FILE *to,
                                   kiln_progress progress, kiln_kprogram **out, kiln_graph **lowered);

/* kiln_driver_lower_graph that also hands back the fusion plan (when plan is not NULL;
 * lowered must then be given too: the plan's node ids are the lowered graph's). The
 * caller destroys it with kiln_pass_plan_destroy before the graph. */
kiln_status kiln_driver_lower_plan(kiln_context *ctx, const kiln_graph *g, const kiln_compile_options *o, FILE *to,
                                   kiln_kprogram **out, kiln_graph **lowered, kiln_fusion_plan **plan);

/* Estimates of a kernel program's cost (also kiln_executable_stats). */
void kiln_driver_program_stats(const kiln_kprogram *p, kiln_exe_stats *s);

/* The fusion report's two forms (docs/fusion-report.md): text for people, JSON for
 * scripts. */
typedef enum kiln_report_format {
  KILN_REPORT_NONE = 0,
  KILN_REPORT_TEXT,
  KILN_REPORT_JSON,
} kiln_report_format;

/* kiln dump: the graph after a pass (print_after), the fusion plan (fusion_plan=true), or
 * the kernel program (kernels=true),
 * or the optimized LLVM module (llvm=true), or the CUDA C source (cuda=true), and/or the
 * fusion report (fusion_report), to f. */
typedef struct kiln_dump_options {
  const char *print_after;
  const char *disable_passes;
  kiln_fusion_level fusion;
  bool kernels, llvm, cuda, elide_constants, fusion_plan;
  kiln_report_format fusion_report;
  const char *model;           /* the report's "model" (NULL: the graph's name) */
  kiln_target target;          /* what the report's program is lowered for (cuda=true: CUDA) */
} kiln_dump_options;

/* Writes the fusion report of p (lowered at `fusion` for `target`) in form fmt to f. */
kiln_status kiln_driver_fusion_report(const kiln_kprogram *p, const char *model, kiln_fusion_level fusion,
                                      kiln_target target, kiln_report_format fmt, FILE *f);
kiln_status kiln_driver_dump(kiln_context *ctx, const kiln_graph *g, const kiln_dump_options *o,
                             FILE *f);

/* The context's worker threads, created on first use (thread-safe); NULL when out of
 * memory (code then runs on the caller alone). */
kiln_rt_pool *kiln_driver_pool(kiln_context *ctx);
/* Progress of one compile on ctx (kiln_progress): printed to stderr from log level 2, and
 * from level 1 once the compile has taken more than a second. Init at the compile's start. */
typedef struct kiln_driver_progress {
  kiln_context *ctx;
  double start_s;
} kiln_driver_progress;
kiln_progress kiln_driver_progress_start(kiln_context *ctx, kiln_driver_progress *state);

/* ------------------------------------------------------------------ compile cache (cache.c) */
typedef struct kiln_sha256 {
  uint32_t h[8];
  uint64_t len;
  uint8_t buf[64];
  size_t used;
} kiln_sha256;
void kiln_sha256_init(kiln_sha256 *s);
void kiln_sha256_update(kiln_sha256 *s, const void *data, size_t n);
void kiln_sha256_final(kiln_sha256 *s, uint8_t out[32]);
void kiln_sha256_hex(const void *data, size_t n, char hex[65]);

/* True when ctx has a cache directory (ctx->cache_dir: NULL or "" means no cache). */
bool kiln_driver_cache_enabled(const kiln_context *ctx);
/* key = SHA-256 (hex) of the Kiln version, the entry format and a backend's fingerprint
 * (everything its output depends on). */
void kiln_driver_cache_key(const void *material, size_t n, char key[65]);
/* The entry stored under key, checked (length, checksum); *data from ctx->alloc. False
 * on a miss or a damaged entry. */
bool kiln_driver_cache_get(kiln_context *ctx, const char key[65], void **data, size_t *n);
/* Stores data under key atomically (temporary file + rename), creating the directory.
 * Failures only log (log_level >= 1): the cache never fails a compile. */
void kiln_driver_cache_put(kiln_context *ctx, const char key[65], const void *data, size_t n);

/* ------------------------------------------------------------------ executables (internal)
 * A compiled model: a small vtable per backend with the backend's private state. CPU
 * (codegen/'s executor) and CUDA (cuda/'s) are wired in executable.c, a loaded AOT
 * library in library.c; verify.c checks runs against the interpreter. */
typedef struct exe_backend_i {
  const char *name;
  kiln_status (*run)(kiln_executable *e, const kiln_rt_tensor *in, kiln_rt_tensor *out, kiln_diag *d);
  void (*destroy)(kiln_executable *e);
  /* The backend's runs share one scratch (a CUDA program's device buffers, an AOT model
   * object's arena): kiln_run serializes them. Others may run concurrently. */
  bool serial;
} exe_backend_i;

typedef struct exe_io {
  const char *name;
  kiln_dtype dtype;
  kiln_shape shape;
  const char *dim_names[KILN_MAX_RANK]; /* inputs: the symbol each dim was bound from, or NULL */
} exe_io;

struct kiln_executable {
  kiln_context *ctx;        /* retained: the executable keeps it alive */
  const exe_backend_i *vt;
  void *state;              /* the backend's */
  pthread_mutex_t run_mu;   /* serializes the runs of a serial backend */
  kiln_arena *arena;        /* io names, backend state of a library */
  int32_t n_in, n_out;
  exe_io *in, *out;
  kiln_exe_stats stats;
  /* verify mode (verify.c) */
  kiln_kprogram *prog;      /* NULL for a loaded library */
  kiln_graph *ref;          /* the source graph */
  kiln_graph *opt;          /* the optimized graph that was lowered */
  bool verify;
  int32_t corrupt_kernel;   /* test hook (KILN_VERIFY_CORRUPT_KERNEL), or -1 */
};

kiln_executable *kiln_driver_exe_new(kiln_context *ctx);
kiln_rt_tensor kiln_driver_to_rt(const kiln_tensor *t);
/* Verify mode on the CPU: runs e kernel by kernel, each kernel's output checked against
 * the interpreter's value of its node on the optimized graph (computed once per run)
 * before the next kernel can overwrite anything; the error names the kernel, its source
 * nodes and the first differing element. */
kiln_status kiln_driver_verify_cpu_run(kiln_executable *e, const kiln_rt_tensor *in, kiln_rt_tensor *out,
                                       kiln_diag *d);
/* Verify mode: every output against the interpreter on the source graph. */
kiln_status kiln_driver_verify_outputs(kiln_executable *e, const kiln_rt_tensor *in, const kiln_rt_tensor *out);

#endif
