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
/* kiln_driver_lower that also hands back (when lowered is not NULL) the optimized graph
 * that was lowered: the graph the kernels' .node ids refer to. The caller destroys it
 * with kiln_ir_graph_destroy. */
kiln_status kiln_driver_lower_graph(kiln_context *ctx, const kiln_graph *g, const kiln_compile_options *o,
                                    FILE *to, kiln_kprogram **out, kiln_graph **lowered);

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

#endif
