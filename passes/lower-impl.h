/* lower-impl.h - what the files of lowering share (internal to passes/): the lowering
 * context, the kernel and expression builders of emit.c, and the GEMM kernels of
 * lower_gemm.c (lower.c dispatches the groups). Lowering emits the kernels of a fusion plan; it decides nothing
 * about fusion (fuse.c does).
 */
#ifndef KILN_LOWER_IMPL_H
#define KILN_LOWER_IMPL_H

#include "passes-impl.h"

typedef struct kiln_lower_memo {
  int32_t node, rank, result;
  int32_t idx[KILN_MAX_RANK];
} kiln_lower_memo;

typedef struct lower_ctx {
  const kiln_graph *g;
  const kiln_pass_target *t;
  const kiln_fusion_plan *plan;
  const kiln_fusion_group *group; /* the group whose kernel is being built */
  kiln_kprogram *p;
  kiln_diag *d;
  const kiln_allocator *alloc;
  kiln_arena *scratch;   /* this lowering's per-node arrays, freed at once */
  int32_t *buf_of;       /* per node: buffer id, -1 until created */
  int32_t *const_buf;    /* per constant-store entry: buffer id or -1 */
  uint8_t *idx_state;    /* per gather node: 0 not looked at, 1 constant indices all in
                            range (no run-time check), 2 needs a run-time check */
  uint8_t *member;       /* per node: a member of the current group */
  int32_t cap_kernels, cap_buffers;
  /* the kernel being built */
  kiln_pass_kb kb;
  int32_t root;          /* node whose own buffer is being written (computed, not loaded) */
  kiln_lower_memo *memo;
  int32_t cap_memo, n_memo;
  bool oom;
  kiln_status user_err;  /* a compile-time error in the graph (message in d), stops lowering */
} lower_ctx;

#define KB (&c->kb)
#define IX(op, x, y) kiln_pass_kb_ix(KB, KILN_OP_##op, (x), (y))
#define INT(v) kiln_pass_kb_int(KB, (v))

/* Buffers (emit.c). */
int32_t kiln_lower_new_buffer(lower_ctx *c, kiln_buffer_kind kind, kiln_dtype dt, const kiln_shape *s, int32_t index,
                              const char *name);
/* The buffer holding node v's value (created on first use for constants and
 * intermediates; inputs and outputs have theirs from the start). */
int32_t kiln_lower_buffer_of(lower_ctx *c, int32_t v);
/* Whether node v is read from a buffer in the expression being built. */
bool kiln_lower_is_buffer(const lower_ctx *c, int32_t v);

/* Kernels (emit.c): begin one (or a GEMM's LOOP sub-kernel), copy its expression into
 * the program, end it (name, sources: the group's members). */
kiln_kernel *kiln_lower_begin_kernel(lower_ctx *c, kiln_kernel_kind kind, int32_t out_buf, kiln_dtype dt,
                                     const kiln_shape *out);
kiln_kernel *kiln_lower_begin_sub(lower_ctx *c, int32_t out_buf, kiln_dtype dt, const kiln_shape *out);
void kiln_lower_finish_expr(lower_ctx *c, kiln_kernel *k);
void kiln_lower_end_kernel(lower_ctx *c, kiln_kernel *k, const char *suffix);
/* Checks that node v, about to be computed in the current kernel, is one of its group's
 * members (an internal error otherwise: lowering inlines only what the plan says). */
void kiln_lower_cover(lower_ctx *c, int32_t v);

/* Expressions (emit.c). emit: the value of node v at output coordinates idx (kx ids of
 * i64 index expressions); emit_masked: where mask is false the value is fill and the
 * coordinates may be out of range; emit_clamped: the same through clamped coordinates and
 * a select (for buffers whose mask does not depend on the innermost variable). */
int32_t kiln_lower_emit(lower_ctx *c, int32_t v, const int32_t *idx);
int32_t kiln_lower_emit_masked(lower_ctx *c, int32_t v, const int32_t *idx, int32_t mask, double fill);
int32_t kiln_lower_emit_clamped(lower_ctx *c, int32_t v, const int32_t *idx, int32_t mask, double fill);
/* k's expression: node v computed (not loaded) at every point of its output domain. */
void kiln_lower_emit_root(lower_ctx *c, kiln_kernel *k, int32_t v);
void kiln_lower_out_vars(lower_ctx *c, int32_t rank, int32_t *idx);
/* In-range mask of coordinate x in [lo, hi), folded away where it cannot fail. */
int32_t kiln_lower_in_range(lower_ctx *c, int32_t x, int64_t lo, int64_t hi);
/* Coordinates idx of shape out as coordinates j of shape in (same elements, row-major). */
void kiln_lower_reshape_index(lower_ctx *c, const kiln_shape *out, const kiln_shape *in, const int32_t *idx, int32_t *j);

/* GEMM kernels (lower_gemm.c), one per contraction group. */
void kiln_lower_dot_gemm(lower_ctx *c, int32_t v);
void kiln_lower_conv_gemm(lower_ctx *c, int32_t v);
void kiln_lower_conv_cl_gemm(lower_ctx *c, int32_t v);

#endif
