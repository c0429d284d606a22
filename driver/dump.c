/* dump.c - kiln dump: the graph after a pass, the kernel program, the LLVM module or the
 * CUDA C of a model. */
#include "driver.h"
#ifdef KILN_HAVE_LLVM
#include "../codegen/llvm.h"
#endif
#ifdef KILN_HAVE_CUDA
#include "../cuda/cuda.h"
#endif

/* ------------------------------------------------------------------ dump */
kiln_status kiln_driver_dump(kiln_context *ctx, const kiln_graph *g, const kiln_dump_options *o,
                             FILE *f) {
  kiln_print_options po = {.elide_constants = o->elide_constants};
  if (!o->print_after && !o->kernels && !o->llvm && !o->cuda) {
    if (kiln_ir_print(g, f, &po) != KILN_OK) return kiln_driver_failf(ctx, KILN_ERR_IO, "cannot print the graph");
    return KILN_OK;
  }
  kiln_compile_options co = {0};
  co.fusion = o->fusion;
  co.disable_passes = o->disable_passes;
  co.print_after = o->print_after;
  co.target = o->cuda ? KILN_TARGET_CUDA : KILN_TARGET_CPU;
  kiln_kprogram *p = NULL;
  kiln_status st = kiln_driver_lower(ctx, g, &co, f, &p);
  if (st != KILN_OK) return st;
  kiln_diag d = {0};
  if (o->kernels) kiln_ir_kprogram_print(p, f);
  if (o->llvm) {
#ifdef KILN_HAVE_LLVM
    st = kiln_llvm_print_module(p, f, &d);
#else
    st = kiln_diag_set(&d, KILN_ERR_UNSUPPORTED, "built without LLVM");
#endif
  }
  if (st == KILN_OK && o->cuda) {
#ifdef KILN_HAVE_CUDA
    char *src = NULL;
    st = kiln_cuda_render(p, &src, &d);
    if (st == KILN_OK) fputs(src, f);
    kiln_ir_free(p->alloc, src);
#else
    st = kiln_diag_set(&d, KILN_ERR_UNSUPPORTED, "built without CUDA support");
#endif
  }
  kiln_ir_kprogram_destroy(p);
  return st == KILN_OK ? KILN_OK : kiln_driver_fail(ctx, &d);
}

