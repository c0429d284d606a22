/* llvm.h - what the codegen/ module offers: the LLVM backend. Renders a kernel program
 * to one LLVM module (one function per LOOP kernel over a chunk of its parallel range, and
 * an entry function running every kernel in order), optimizes it for the host CPU (or a
 * named target), and either JIT-compiles it in-process (ORC LLJIT) or writes an object
 * file and links a self-contained shared library with a generated C header.
 * Layer: above ir/ and runtime/; never includes cuda/.
 */
#ifndef KILN_LLVM_H
#define KILN_LLVM_H

#include "../ir/ir.h"
#include "../runtime/rt.h"

typedef struct kiln_llvm_jit kiln_llvm_jit;

/* JIT: compiles p; *entry runs the whole program. The jit owns the code; destroy it
 * after the last call to *entry. Constants are read through bufs (not embedded). */
kiln_status kiln_llvm_jit_compile(const kiln_kprogram *p, kiln_llvm_jit **jit,
                                  kiln_rt_entry_fn *entry, kiln_diag *d);
void kiln_llvm_jit_destroy(kiln_llvm_jit *jit);

/* Loads an object file made for this host's JIT (copied; obj may be freed after) into a
 * new JIT and looks up entry_name (KILN_LLVM_JIT_ENTRY_NAME). The jit's bookkeeping is
 * allocated with a (the default allocator when NULL), which must outlive the jit. A
 * malformed object is an error, not a crash, as far as LLVM's object reader checks. */
#define KILN_LLVM_JIT_ENTRY_NAME "kiln_main"
kiln_status kiln_llvm_jit_load_object(const kiln_allocator *a, const void *obj, size_t n, const char *entry_name,
                                      kiln_llvm_jit **jit, kiln_rt_entry_fn *entry, kiln_diag *d);

/* ------------------------------------------------------------------ the CPU executor (exec.c)
 * A compiled program ready to run: its JIT code (through the compile cache when given
 * one), and the scratch memory of its runs. Runs may be concurrent: each run takes a run
 * state (its bufs, arena and error word) from a free list, or makes one, and gives it back
 * after; the pool's worker threads serve one run at a time (kiln_rt_parallel_for), the
 * others run on their own threads. */
typedef struct kiln_llvm_exec kiln_llvm_exec;

/* The compile cache, as the executor sees it (the driver implements it on disk). key is
 * derived from the fingerprint material by the cache; get hands back an entry allocated
 * with the executor's allocator, or false on a miss. Neither may fail the compile. */
typedef struct kiln_llvm_cache_i {
  void (*key)(void *user, const void *material, size_t n, char key[65]);
  bool (*get)(void *user, const char key[65], void **obj, size_t *n);
  void (*put)(void *user, const char key[65], const void *obj, size_t n);
  void *user;
} kiln_llvm_cache_i;

typedef struct kiln_llvm_exec_options {
  const kiln_allocator *alloc;   /* run states, profile; NULL: the program's */
  kiln_rt_pool *pool;            /* worker threads shared by all runs (NULL: each run on
                                    its caller alone); must outlive the executor */
  const kiln_llvm_cache_i *cache; /* NULL: always compile */
  bool steps;                    /* also look up the step function: runs with a kernel
                                    hook (kiln_llvm_exec_run) are possible */
  bool profile;                  /* time each kernel over all runs; printed to stderr by
                                    kiln_llvm_exec_destroy (KILN_PROFILE=1) */
  kiln_progress progress;        /* compile stages (log, optional) */
} kiln_llvm_exec_options;

/* Compiles p for the host. p must outlive the executor (its buffer layout and constants
 * are read at every run). */
kiln_status kiln_llvm_exec_create(const kiln_kprogram *p, const kiln_llvm_exec_options *o, kiln_llvm_exec **e,
                                  kiln_diag *d);
/* 1 when the code came from the compile cache (no LLVM optimization or code generation). */
int32_t kiln_llvm_exec_cache_hit(const kiln_llvm_exec *e);
/* Called after kernel k ran in a run with a hook, with the run's bufs (bufs[b] is the
 * base of buffer b of the program); a non-OK status stops the run with it. */
typedef kiln_status (*kiln_llvm_kernel_hook)(void *user, int32_t k, void *const *bufs, kiln_diag *d);
/* Runs the program once: in and out in program order, checked by the caller (dtype, shape,
 * storage). hook (NULL: none; needs steps) runs kernel by kernel and calls it after each.
 * A kernel that finds its input data invalid (an index out of range) fails the run with
 * KILN_ERR_INVALID_ARGUMENT naming it. Safe to call from several threads at once. */
kiln_status kiln_llvm_exec_run(kiln_llvm_exec *e, const kiln_rt_tensor *in, kiln_rt_tensor *out,
                               kiln_llvm_kernel_hook hook, void *user, kiln_diag *d);
void kiln_llvm_exec_destroy(kiln_llvm_exec *e);

/* Textual LLVM IR of the program's module, after optimization (for kiln dump --llvm). */
kiln_status kiln_llvm_print_module(const kiln_kprogram *p, FILE *f, kiln_diag *d);

typedef struct kiln_llvm_aot_options {
  const char *prefix;         /* C identifier used for the typed API, e.g. "resnet" */
  const char *so_path;
  const char *header_path;    /* may be NULL */
  const char *aotrt_lib;      /* path of libkiln_aotrt.a (runtime support linked in) */
  const char *cc;             /* C compiler/linker driver, "cc" when NULL */
  const char *link_flags;     /* extra libraries, e.g. "-lopenblas" */
  /* The machine the code is for: an LLVM CPU name ("x86-64", "x86-64-v3", "znver4",
   * "skylake-avx512"; NULL: the host CPU with its features) and target triple (NULL:
   * the host's). Another triple's object needs a matching cc and runtime to link. An
   * unknown name is KILN_ERR_INVALID_ARGUMENT. */
  const char *cpu;
  const char *triple;
  kiln_progress progress;     /* stages (optional) */
} kiln_llvm_aot_options;

/* Whether prefix may name a library's typed API (a C identifier, no keyword, nothing
 * reserved, no kiln_ name, no name the generated code uses); why says why not. */
bool kiln_llvm_check_prefix(const char *prefix, char *why, size_t n);

/* AOT: emits an object (code + embedded constants), generates glue C with the typed and
 * generic entry points and the header, and links the shared library. */
kiln_status kiln_llvm_export(const kiln_kprogram *p, const kiln_llvm_aot_options *o, kiln_diag *d);

/* What the LLVM backend runs and the numbers its loop nests are scheduled with, for the
 * host (triple and cpu NULL) or a named target triple or CPU: loop nests, 512-bit vectors
 * on x86-64 (LLVM narrows them to what the CPU has), GEMM prologues, sibling pairs and
 * channels-last convolutions; generated GEMM microkernels for the host, whose vector
 * registers are known (from its features: AVX-512, AVX2+FMA, SSE, NEON). */
void kiln_llvm_target_desc(const char *triple, const char *cpu, kiln_target_desc *d);

/* "LLVM 19.1.7" style version string, for the compile cache key. */
const char *kiln_llvm_version(void);

#endif
