/* passes.h - what the passes/ module offers: the pass manager and the graph passes
 * (verify, fold, simplify, contract, cse, siblings, dce, layout), fusion and lowering to kernel IR, and
 * memory planning. Layer: above ir/ and runtime/; knows no backend.
 *
 * Pipeline (kiln_pass_pipeline):
 *
 *   verify -> fold -> simplify -> contract -> cse -> siblings -> dce -> layout
 *     -> fuse+lower -> plan_memory
 *   (graph passes rewrite the graph in place)   (graph -> kiln_kprogram)
 */
#ifndef KILN_PASSES_H
#define KILN_PASSES_H

#include "../ir/ir.h"
#include "../runtime/rt.h"

typedef struct kiln_pass_target {
  kiln_target target;          /* public enum: CPU or CUDA */
  kiln_fusion_level fusion;
} kiln_pass_target;

/* A graph pass: rewrites g in place (node ids may change; outputs are kept). */
typedef kiln_status (*kiln_graph_pass_fn)(kiln_graph *g, const kiln_pass_target *t, kiln_diag *d);

kiln_status kiln_pass_verify(kiln_graph *g, const kiln_pass_target *t, kiln_diag *d);
kiln_status kiln_pass_fold(kiln_graph *g, const kiln_pass_target *t, kiln_diag *d);
kiln_status kiln_pass_simplify(kiln_graph *g, const kiln_pass_target *t, kiln_diag *d);
kiln_status kiln_pass_cse(kiln_graph *g, const kiln_pass_target *t, kiln_diag *d);
kiln_status kiln_pass_dce(kiln_graph *g, const kiln_pass_target *t, kiln_diag *d);
kiln_status kiln_pass_layout(kiln_graph *g, const kiln_pass_target *t, kiln_diag *d);
/* Rewrites around contractions (contract.c): constant per-channel scales folded into conv/dot
 * weights, bias chains merged, splat scales moved behind dots; and sibling dots that share
 * their left operand and have constant weights merged into one dot plus slices. */
kiln_status kiln_pass_contract(kiln_graph *g, const kiln_pass_target *t, kiln_diag *d);
kiln_status kiln_pass_siblings(kiln_graph *g, const kiln_pass_target *t, kiln_diag *d);

/* Fusion decisions + lowering: every node that is materialized becomes a kernel whose
 * expression inlines the producers fused into it. */
kiln_status kiln_pass_lower(const kiln_graph *g, const kiln_pass_target *t, kiln_kprogram **out,
                            kiln_diag *d);
/* Liveness over kernel order, best-fit offsets in one arena, 64-byte alignment. */
kiln_status kiln_pass_plan_memory(kiln_kprogram *p, kiln_diag *d);

typedef struct kiln_pipeline_options {
  kiln_pass_target target;
  const char *disable;        /* comma-separated pass names */
  const char *print_after;    /* pass name or "all" */
  FILE *print_to;             /* where print_after goes (stderr when NULL) */
  bool verify_each;           /* run the verifier after every graph pass */
  kiln_progress progress;     /* told after each pass (its name; kernels after lowering) */
} kiln_pipeline_options;

/* Runs the graph passes on g (in place), then lowering and memory planning. */
kiln_status kiln_pass_pipeline(kiln_graph *g, const kiln_pipeline_options *o, kiln_kprogram **out,
                               kiln_diag *d);

/* Names of the passes in pipeline order, NULL-terminated (for --help and --print-after). */
extern const char *const kiln_pass_names[];

#endif
