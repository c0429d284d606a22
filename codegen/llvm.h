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

/* The JIT in two halves, for the driver's compile cache (kiln_llvm_jit_compile is the
 * two in a row). compile_object: the optimized object file (ELF on Linux) of p for the
 * host CPU; *obj is allocated with p->alloc. It references constants through bufs only,
 * so it is valid for any constant values. */
kiln_status kiln_llvm_compile_object(const kiln_kprogram *p, void **obj, size_t *n, kiln_diag *d);
/* Loads an object made by kiln_llvm_compile_object (copied; obj may be freed after) into
 * a new JIT and looks up entry_name (KILN_LLVM_JIT_ENTRY_NAME). The jit's bookkeeping
 * is allocated with a (the default allocator when NULL), which must outlive the jit. A
 * malformed object is an error, not a crash, as far as LLVM's object reader checks. */
#define KILN_LLVM_JIT_ENTRY_NAME "kiln_main"
kiln_status kiln_llvm_jit_load_object(const kiln_allocator *a, const void *obj, size_t n, const char *entry_name,
                                      kiln_llvm_jit **jit, kiln_rt_entry_fn *entry, kiln_diag *d);
/* JIT code also holds a step function that runs one kernel k of the program alone
 * (k outside [0, n_kernels) does nothing), with the same bufs and pool as the entry:
 * calling it for k = 0, 1, ... in order is the same as calling the entry once. The
 * driver's verify mode uses it to check each kernel's output as soon as it is written. */
typedef void (*kiln_llvm_step_fn)(void **bufs, kiln_rt_pool *pool, int32_t k);
#define KILN_LLVM_JIT_STEP_NAME "kiln_step"
kiln_status kiln_llvm_jit_lookup_step(kiln_llvm_jit *jit, kiln_llvm_step_fn *step, kiln_diag *d);
/* The bytes that determine kiln_llvm_compile_object's result on this host: LLVM's
 * version, the target machine (triple, host CPU name and features), code generation
 * settings, and the bitcode of the rendered, unoptimized module (which holds everything
 * of p that reaches the code, including every constant the renderer embeds; constant
 * buffers are not embedded). Equal fingerprints give equal objects, so a strong hash of
 * them keys the compile cache. *data is allocated with p->alloc. */
kiln_status kiln_llvm_jit_fingerprint(const kiln_kprogram *p, void **data, size_t *n, kiln_diag *d);

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
} kiln_llvm_aot_options;

/* AOT: emits an object (code + embedded constants), generates glue C with the typed and
 * generic entry points and the header, and links the shared library. */
kiln_status kiln_llvm_export(const kiln_kprogram *p, const kiln_llvm_aot_options *o, kiln_diag *d);

/* What the LLVM backend runs and the numbers its loop nests are scheduled with, for the
 * host (triple NULL) or a named target triple: loop nests, 512-bit vectors on x86-64
 * (LLVM narrows them to what the CPU has), GEMM prologues, sibling pairs and
 * channels-last convolutions. */
void kiln_llvm_target_desc(const char *triple, kiln_target_desc *d);

/* "LLVM 19.1.7" style version string, for the compile cache key. */
const char *kiln_llvm_version(void);

#endif
