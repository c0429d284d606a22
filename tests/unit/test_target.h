/* test_target.h - the target the passes' unit tests compile for: the LLVM backend's
 * description (codegen/target.c kiln_llvm_target_desc on x86-64), which these tests,
 * linked without the backend, rebuild from the generic one; and lowering through a
 * fusion plan in one call. */
#ifndef KILN_TEST_TARGET_H
#define KILN_TEST_TARGET_H

#include <string.h>

#include "../../passes/passes.h"

static inline kiln_pass_target test_cpu_target(kiln_fusion_level f) {
  kiln_pass_target t;
  memset(&t, 0, sizeof t);
  kiln_ir_target_desc_default(KILN_SCHED_LOOP_NEST, &t.desc);
  t.desc.vector_bits = 512;
  t.desc.gemm_prologue = t.desc.sibling_pairs = t.desc.conv_channels_last = true;
  t.fusion = f;
  return t;
}

/* fuse + lower (no memory planning, no schedule). */
static inline kiln_status test_lower(const kiln_graph *g, const kiln_pass_target *t, kiln_kprogram **p, kiln_diag *d) {
  kiln_fusion_plan *plan = NULL;
  *p = NULL;
  kiln_status st = kiln_pass_fuse(g, t, &plan, d);
  if (st == KILN_OK) st = kiln_pass_lower(g, plan, t, p, d);
  kiln_pass_plan_destroy(plan);
  return st;
}

#endif
