/* driver.h - what the driver/ module offers beyond the public API: the pieces the CLI
 * needs that are not for library users (dumps, stats of a kernel program). The driver
 * is the only module that knows all the others: it wires frontend -> passes -> backend
 * -> runtime. */
#ifndef KILN_DRIVER_H
#define KILN_DRIVER_H

#include "../ir/ir.h"
#include "../runtime/rt.h"
#include "../passes/passes.h"

struct kiln_context {
  kiln_allocator alloc;
  int threads;
  char *cache_dir;
  int log_level;
  kiln_rt_pool *pool;          /* created on first use */
  char last_error[2048];
};

/* Records d's message as the context's last error and returns its status. */
kiln_status kiln_driver_fail(kiln_context *ctx, const kiln_diag *d);
kiln_status kiln_driver_failf(kiln_context *ctx, kiln_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Runs the pass pipeline on a copy of g and returns the kernel program. print_after
 * output goes to `to` (stderr when NULL). */
kiln_status kiln_driver_lower(kiln_context *ctx, const kiln_graph *g, const kiln_compile_options *o,
                              FILE *to, kiln_kprogram **out);

/* Estimates of a kernel program's cost (also kiln_executable_stats). */
void kiln_driver_program_stats(const kiln_kprogram *p, kiln_exe_stats *s);

/* kiln dump: the graph after a pass (print_after), or the kernel program (kernels=true),
 * or the optimized LLVM module (llvm=true), or the CUDA C source (cuda=true), to f. */
typedef struct kiln_dump_options {
  const char *print_after;
  const char *disable_passes;
  kiln_fusion_level fusion;
  bool kernels, llvm, cuda, elide_constants;
} kiln_dump_options;
kiln_status kiln_driver_dump(kiln_context *ctx, const kiln_graph *g, const kiln_dump_options *o,
                             FILE *f);

kiln_rt_pool *kiln_driver_pool(kiln_context *ctx);

#endif
