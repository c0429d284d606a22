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

/* Textual LLVM IR of the program's module, after optimization (for kiln dump --llvm). */
kiln_status kiln_llvm_print_module(const kiln_kprogram *p, FILE *f, kiln_diag *d);

typedef struct kiln_llvm_aot_options {
  const char *prefix;         /* C identifier used for the typed API, e.g. "resnet" */
  const char *so_path;
  const char *header_path;    /* may be NULL */
  const char *aotrt_lib;      /* path of libkiln_aotrt.a (runtime support linked in) */
  const char *cc;             /* C compiler/linker driver, "cc" when NULL */
  const char *link_flags;     /* extra libraries, e.g. "-lopenblas" */
} kiln_llvm_aot_options;

/* AOT: emits an object (code + embedded constants), generates glue C with the typed and
 * generic entry points and the header, and links the shared library. */
kiln_status kiln_llvm_export(const kiln_kprogram *p, const kiln_llvm_aot_options *o, kiln_diag *d);

/* "LLVM 19.1.7" style version string, for the compile cache key. */
const char *kiln_llvm_version(void);

#endif
