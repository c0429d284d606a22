/* passes.h - what the passes/ module offers: the pass manager and the graph passes
 * (verify, widen, fold, simplify, contract, cse, siblings, dce, layout), the fusion plan,
 * lowering to kernel IR, memory planning and per-target schedules. Layer: above ir/ and
 * runtime/; knows no backend: what a target can do comes as data (kiln_target_desc).
 *
 * Pipeline (kiln_pass_pipeline, manager.c):
 *
 *   verify -> widen -> fold -> simplify -> contract -> cse -> siblings -> dce -> layout
 *     -> fuse -> lower -> plan_memory -> schedule -> pack
 *   (graph passes rewrite the graph in place) (plan) (graph + plan -> kiln_kprogram)
 */
#ifndef KILN_PASSES_H
#define KILN_PASSES_H

#include "../ir/ir.h"
#include "../runtime/rt.h"

/* What the passes are compiling for: the backend's description (capabilities and the
 * numbers its schedules use; ir.h) and the fusion level. */
typedef struct kiln_pass_target {
  kiln_target_desc desc;
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
/* f16/bf16 contractions computed in f32, and integer ones in f32 or f64 where that is
 * exact (bounds of the operands' values), each converted back to its dtype (widen.c). */
kiln_status kiln_pass_widen(kiln_graph *g, const kiln_pass_target *t, kiln_diag *d);

/* ------------------------------------------------------------------ the fusion plan
 * fuse decides, lower emits. The plan groups the graph's nodes into the kernels lowering
 * will make, and records every fusion it refused, with the reason. Node ids are those of
 * the graph the plan was made for (borrowed: it must outlive the plan). */
typedef enum kiln_group_kind {
  KILN_GROUP_LOOP,    /* one LOOP kernel: root computed at every point of its domain */
  KILN_GROUP_GEMM,    /* a contraction run as a GEMM, with its pack and epilogue */
  KILN_GROUP_OPAQUE,  /* a runtime routine (an OPAQUE op) */
  KILN_GROUP_COPY,    /* a graph output whose value is already in another buffer */
} kiln_group_kind;

typedef struct kiln_fusion_group {
  kiln_group_kind kind;
  kiln_category category;   /* for reports: the heaviest category of its members */
  /* The node whose value the group's output buffer holds once its kernel has run: the
   * LOOP or OPAQUE node; a GEMM's epilogue sink, the node it is sunk into, or the
   * contraction; a COPY's source node. */
  int32_t root;
  int32_t contraction;      /* GEMM: the dot or conv; else -1 */
  int32_t prologue;         /* GEMM: the A operand its pack computes (no buffer), or -1 */
  int32_t epilogue;         /* GEMM: the epilogue's sink (== root), or -1: no epilogue */
  int32_t sunk_to;          /* GEMM: the permute/reshape whose buffer it writes, or -1 */
  uint8_t dense_operands;   /* GEMM dot: bit j: operand j read as its own buffer, not a view */
  int32_t output;           /* COPY: the graph output it writes */
  /* Every node the group's kernel computes, in node order: the root and what is inlined
   * into it (a GEMM: the contraction, its epilogue, prologue and sink chain). A node
   * recomputed in several kernels is a member of each. */
  int32_t n_members;
  int32_t *members;
  /* GEMM dot: the movement nodes read in place through strided views (not computed). */
  int32_t n_views;
  int32_t *views;
} kiln_fusion_group;

typedef struct kiln_plan_refusal {
  int32_t producer, consumer;  /* node ids; consumer -1: none in particular */
  const char *reason;
} kiln_plan_refusal;

typedef struct kiln_fusion_plan {
  const kiln_graph *g;          /* borrowed */
  kiln_arena *arena;            /* owns everything below */
  kiln_fusion_level fusion;
  int32_t n_nodes;
  uint8_t *materialized;        /* per node: has a buffer (leaves, roots, outputs, sink targets) */
  uint8_t *is_output;           /* per node: a graph output */
  int32_t *group;               /* per node: the group that computes it; -2 several; -1 none */
  int32_t n_groups;
  kiln_fusion_group *groups;    /* in the order their kernels run */
  int32_t n_refused;
  kiln_plan_refusal *refused;   /* in the order they were decided */
} kiln_fusion_plan;

/* Fusion decisions (fuse.c): every node materialized or inlined, GEMM epilogues,
 * prologues, operand views and permute sinking, the recompute cost model; the result
 * verified. */
kiln_status kiln_pass_fuse(const kiln_graph *g, const kiln_pass_target *t, kiln_fusion_plan **out, kiln_diag *d);
void kiln_pass_plan_destroy(kiln_fusion_plan *p);
/* The plan's invariants (plan.c): every live node computed by exactly the groups that
 * need it, groups in dependence order, members closed over inlined inputs, GEMM parts of
 * the kinds they must be. */
kiln_status kiln_pass_plan_verify(const kiln_fusion_plan *p, kiln_diag *d);
/* Text form of the plan (kiln dump --fusion-plan, lit tests). */
void kiln_pass_plan_print(const kiln_fusion_plan *p, FILE *f);
/* "loop", "gemm", "opaque", "copy". */
const char *kiln_pass_group_kind_name(kiln_group_kind k);

/* Lowering (lower.c): one kernel per group of the plan, its expression inlining the
 * group's members; then sibling pairs where the target runs them. */
kiln_status kiln_pass_lower(const kiln_graph *g, const kiln_fusion_plan *plan, const kiln_pass_target *t,
                            kiln_kprogram **out, kiln_diag *d);
/* Liveness over kernel order, best-fit offsets in one arena, 64-byte alignment. */
kiln_status kiln_pass_plan_memory(kiln_kprogram *p, kiln_diag *d);
/* Per-target schedules (schedule.c): fills every kernel's kiln_schedule. */
kiln_status kiln_pass_schedule(kiln_kprogram *p, const kiln_pass_target *t, kiln_diag *d);
/* Weight packing (pack.c): the B operand of every GEMM scheduled KILN_GEMM_GENERATED, in
 * the panel layout its microkernels read, as a new constant (kiln_schedule.packed_b). */
kiln_status kiln_pass_pack(kiln_kprogram *p, const kiln_pass_target *t, kiln_diag *d);

typedef struct kiln_pipeline_options {
  kiln_pass_target target;
  const char *disable;        /* comma-separated pass names */
  const char *print_after;    /* pass name or "all" */
  FILE *print_to;             /* where print_after goes (stderr when NULL) */
  bool verify_each;           /* run the verifier after every graph pass */
  kiln_fusion_plan **plan;    /* when set: receives the fusion plan (over the rewritten
                                 graph, which must outlive it; kiln_pass_plan_destroy) */
  kiln_progress progress;     /* told after each pass (its name; kernels after lowering) */
} kiln_pipeline_options;

/* Runs the graph passes on g (in place), then fusion, lowering, memory planning and
 * scheduling. */
kiln_status kiln_pass_pipeline(kiln_graph *g, const kiln_pipeline_options *o, kiln_kprogram **out,
                               kiln_diag *d);

/* Names of the passes in pipeline order, NULL-terminated (for --help and --print-after). */
extern const char *const kiln_pass_names[];

#endif
