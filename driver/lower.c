/* lower.c - the driver's lowering: a copy of the graph through the pass pipeline for the
 * backend the options name, whose description (what it can run, the numbers of its
 * schedules) comes from the backend itself. */
#include "driver.h"
#ifdef KILN_HAVE_LLVM
#include "../codegen/llvm.h"
#endif
#ifdef KILN_HAVE_CUDA
#include "../cuda/cuda.h"
#endif


/* The description of the target o names (a backend missing from this build gets the
 * generic one; compiling for it fails later with a clear message). */
static void target_desc(const kiln_compile_options *o, kiln_target_desc *desc) {
  if (o && o->target == KILN_TARGET_CUDA) {
#ifdef KILN_HAVE_CUDA
    kiln_cuda_target_desc(desc);
#else
    kiln_ir_target_desc_default(KILN_SCHED_SIMT, desc);
#endif
    return;
  }
#ifdef KILN_HAVE_LLVM
  kiln_llvm_target_desc(o ? o->triple : NULL, o ? o->cpu : NULL, desc);
#else
  kiln_ir_target_desc_default(KILN_SCHED_LOOP_NEST, desc);
#endif
}

/* The pipeline on a copy of g, reporting to progress; hands back the program and, when
 * asked, the lowered graph and the fusion plan over it. */
static kiln_status lower(kiln_context *ctx, const kiln_graph *g, const kiln_compile_options *o, FILE *to,
                         kiln_progress progress, kiln_kprogram **out, kiln_graph **lowered, kiln_fusion_plan **plan) {
  *out = NULL;
  if (lowered) *lowered = NULL;
  if (plan) *plan = NULL;
  if (g->diag.status != KILN_OK)
    return kiln_driver_failf(ctx, g->diag.status, "the graph has a builder error: %s", g->diag.msg);
  if (plan && !lowered) /* the plan is over the lowered graph, which must then outlive it */
    return kiln_driver_failf(ctx, KILN_ERR_INTERNAL, "kiln_driver_lower_plan: a plan needs its lowered graph");
  if (g->n_outputs == 0)
    return kiln_driver_failf(ctx, KILN_ERR_INVALID_ARGUMENT, "graph '%s' has no outputs", g->name);
  kiln_graph *work = kiln_ir_graph_clone(g);
  if (!work) return kiln_driver_failf(ctx, KILN_ERR_OUT_OF_MEMORY, "out of memory copying the graph");
  kiln_pipeline_options po = {0};
  target_desc(o, &po.target.desc);
  po.target.fusion = o ? o->fusion : KILN_FUSION_FULL;
  po.disable = o ? o->disable_passes : NULL;
  po.print_after = o ? o->print_after : NULL;
  po.print_to = to;
  po.verify_each = ctx->env.verify_passes;
  po.progress = progress;
  po.plan = plan;
  kiln_diag d = {0};
  kiln_status st = kiln_pass_pipeline(work, &po, out, &d);
  /* The passes rewrote work in place: it is the graph that was lowered (and planned). */
  if (st == KILN_OK && lowered) *lowered = work;
  else kiln_ir_graph_destroy(work);
  if (st != KILN_OK) return kiln_driver_fail(ctx, &d);
  return KILN_OK;
}

kiln_status kiln_driver_lower_plan(kiln_context *ctx, const kiln_graph *g, const kiln_compile_options *o, FILE *to,
                                   kiln_kprogram **out, kiln_graph **lowered, kiln_fusion_plan **plan) {
  kiln_driver_progress ps;
  return lower(ctx, g, o, to, kiln_driver_progress_start(ctx, &ps), out, lowered, plan);
}

kiln_status kiln_driver_lower_with(kiln_context *ctx, const kiln_graph *g, const kiln_compile_options *o, FILE *to,
                                   kiln_progress progress, kiln_kprogram **out, kiln_graph **lowered) {
  return lower(ctx, g, o, to, progress, out, lowered, NULL);
}

kiln_status kiln_driver_lower(kiln_context *ctx, const kiln_graph *g, const kiln_compile_options *o, FILE *to,
                              kiln_kprogram **out) {
  return kiln_driver_lower_plan(ctx, g, o, to, out, NULL, NULL);
}

kiln_status kiln_driver_lower_graph(kiln_context *ctx, const kiln_graph *g, const kiln_compile_options *o, FILE *to,
                                    kiln_kprogram **out, kiln_graph **lowered) {
  return kiln_driver_lower_plan(ctx, g, o, to, out, lowered, NULL);
}
