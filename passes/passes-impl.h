/* passes-impl.h - helpers shared inside the passes/ module (not part of its interface):
 * the one graph rewrite mechanism every graph pass uses.
 */
#ifndef KILN_PASSES_IMPL_H
#define KILN_PASSES_IMPL_H

#include "passes.h"

/* Rebuilds g's node array after a pass has decided its replacements.
 *
 * repl (may be NULL: no replacements) has n_repl entries (nodes from n_repl on, e.g.
 * appended by the pass, are kept as they are): repl[i] == i keeps node i, anything
 * else replaces every use of i (node inputs and graph outputs) by repl[i] (followed
 * transitively). Replacement targets may be nodes appended after their users: the
 * rebuild emits nodes in a topological order (the old order wherever it is already one).
 * Nodes not reachable from the outputs are dropped, except graph input nodes, which stay
 * (in their input order). Unused constant-store entries are released.
 * Sets *changed (may be NULL) when the node array differs from before. */
kiln_status kiln_pass_rewrite(kiln_graph *g, const int32_t *repl, int32_t n_repl, bool *changed,
                              kiln_diag *d);

/* Follows repl (n_repl entries; nodes beyond are kept) to the final replacement of v. */
int32_t kiln_pass_resolve(const int32_t *repl, int32_t n_repl, int32_t v);

/* True when node v is a constant (or a broadcast/reshape of one) whose every element
 * equals x. */
bool kiln_pass_is_splat(const kiln_graph *g, int32_t v, double x);

/* ------------------------------------------------------------------------------------
 * What kernel a contraction becomes (kernel_kind.c), shared by fusion, lowering and layout.
 * ---------------------------------------------------------------------------------- */
/* Whether conv (or conv_cl) node n runs as a GEMM kernel: f32/f64, and not a
 * depthwise-like convolution (one output channel per group, or one input channel and a
 * 1x1 kernel), which is a direct loop; conv_cl only with groups of one. */
bool kiln_pass_conv_is_gemm(const kiln_graph *g, const kiln_node *n);
/* Whether dot node n is a GEMM kernel (f32/f64): its operands must then be buffers. */
bool kiln_pass_dot_is_gemm(const kiln_node *n);
/* A dot or convolution that is a GEMM kernel. */
bool kiln_pass_is_gemm(const kiln_graph *g, int32_t v);
/* A conv_cl GEMM whose x is the layout pass's permute to channels last of a channels-first
 * value (where it enters the channels-last region: a network's first convolution): that
 * value, which the GEMM reads without a transposed copy (a pack reads it through the
 * permute's index map, a 1x1 convolution as A^T); else -1. */
int32_t kiln_pass_cl_source(const kiln_graph *g, const kiln_node *n);
/* A conv_cl GEMM the target runs as a direct convolution over its input (generated code:
 * f32, constant weights, 1 to 3 spatial dims, at least 8 input channels): its input is then a buffer of its own, the
 * channels-last copy where it enters the region (one pass, instead of an im2col). */
bool kiln_pass_conv_direct(const kiln_graph *g, const kiln_node *n, const kiln_target_desc *d);
/* conv_cl n has fewer than 8 input channels and its taps along the last spatial dim read
 * adjacent pixels (dilation 1, no padding along that dim): a direct convolution reads
 * those kw taps as one run of kw * Ci contiguous elements (an RGB network's first layer). */
bool kiln_pass_conv_merges_taps(const kiln_graph *g, const kiln_node *n);
/* ... the part of that which padding does not decide: ci input channels, kw taps along the
 * last spatial dim, its dilation. */
bool kiln_pass_taps_can_merge(int64_t ci, int64_t kw, int64_t dilation);
/* GEMM tiles (schedule.c): how many of n_units (output rows of a convolution's im2col,
 * rows of A) of unit_bytes each one pack tile holds: within the target's pack_tile_bytes
 * (a tile is multiplied while it is in cache), the tiles as even as that allows (no small
 * remainder tile: each tile is one GEMM call). At least 1. */
int64_t kiln_pass_gemm_tile(const kiln_target_desc *t, int64_t unit_bytes, int64_t n_units);


/* ------------------------------------------------------------------------------------
 * Kernel expression builder (kbuild.c): builds one LOOP kernel's kx DAG. Identical nodes
 * are shared (hash-consing), and i64 index arithmetic is simplified as it is built from
 * the value range of every index node (constants fold, x+0 / x*1 vanish, a clamp or a
 * bounds check that cannot fire disappears, a div/mod that cannot wrap becomes 0 / x).
 * Value arithmetic (the graph's own ops) is never rewritten.
 * ---------------------------------------------------------------------------------- */
typedef struct kiln_pass_kb {
  const kiln_allocator *alloc;
  kiln_kx *kx;
  int64_t *lo, *hi; /* value range of each i64 (or bool 0/1) node */
  int32_t n_kx, cap_kx;
  int32_t *table;   /* hash-cons: open addressing over kx ids, -1 empty */
  int32_t cap_table;
  int64_t *extent;
  int32_t n_vars, cap_vars;
  int32_t out_rank;
  bool oom;         /* sticky: every builder call after an OOM returns 0 */
} kiln_pass_kb;

/* Starts a new kernel whose output domain is `out` (variables 0..rank-1). */
void kiln_pass_kb_reset(kiln_pass_kb *b, const kiln_shape *out);
void kiln_pass_kb_free(kiln_pass_kb *b);
/* n new loop variables with these extents (for a REDUCE); returns the first. */
int32_t kiln_pass_kb_new_vars(kiln_pass_kb *b, int32_t n, const int64_t *extents);
int32_t kiln_pass_kb_var(kiln_pass_kb *b, int32_t var);
int32_t kiln_pass_kb_int(kiln_pass_kb *b, int64_t v);               /* i64 constant */
int32_t kiln_pass_kb_bool(kiln_pass_kb *b, bool v);
int32_t kiln_pass_kb_const(kiln_pass_kb *b, kiln_dtype dt, double v); /* any dtype */
/* Index arithmetic on i64 (add sub mul div mod min max) and bool (lt le gt ge eq ne and
 * or) with folding; div/mod only on non-negative values. */
int32_t kiln_pass_kb_ix(kiln_pass_kb *b, kiln_op op, int32_t x, int32_t y);
int32_t kiln_pass_kb_select(kiln_pass_kb *b, int32_t c, int32_t x, int32_t y);
int32_t kiln_pass_kb_clamp(kiln_pass_kb *b, int32_t x, int64_t lo, int64_t hi);
/* A graph elementwise op on values (operands a[0..n-1]); kind for mod. */
int32_t kiln_pass_kb_alu(kiln_pass_kb *b, kiln_op op, kiln_dtype dt, int32_t kind, int32_t n,
                         const int32_t *a);
int32_t kiln_pass_kb_cast(kiln_pass_kb *b, int32_t x, kiln_dtype to);
/* mask < 0: unmasked. fill is used where the mask is false. */
int32_t kiln_pass_kb_load(kiln_pass_kb *b, int32_t buf, kiln_dtype dt, int32_t off, int32_t mask,
                          double fill);
int32_t kiln_pass_kb_reduce(kiln_pass_kb *b, kiln_op op, kiln_dtype dt, int32_t kind, int32_t var,
                            int32_t n_vars, int32_t body);
/* A run-time check (KILN_KX_CHECK) that cond holds wherever value is computed; returns a
 * node with value's value. op, node (a graph node id; lowering turns it into a source
 * index) and dim describe what is checked, for the error message. A check whose condition
 * folds to true is dropped (returns value). */
int32_t kiln_pass_kb_check(kiln_pass_kb *b, int32_t cond, int32_t value, kiln_op op, int32_t node,
                           int64_t dim);
/* Drops nodes root does not reach (index math that folded away); returns root's new id.
 * Ends the kernel: call it last. */
int32_t kiln_pass_kb_compact(kiln_pass_kb *b, int32_t root);
/* Row-major offset of idx in shape s. */
int32_t kiln_pass_kb_linearize(kiln_pass_kb *b, const int32_t *idx, const kiln_shape *s);

/* ------------------------------------------------------------------------------------
 * Strided views (view.c): element (i_0..i_{r-1}) of a value lives at
 * off + sum_d i_d * stride[d] in the buffer of node base.
 * ---------------------------------------------------------------------------------- */
typedef struct kiln_pass_view {
  int32_t base, rank;
  int64_t off;
  int64_t dims[KILN_MAX_RANK], stride[KILN_MAX_RANK];
} kiln_pass_view;

void kiln_pass_view_dense(kiln_pass_view *v, int32_t base, const kiln_shape *s);
bool kiln_pass_view_reshape(kiln_pass_view *v, const kiln_shape *to);
bool kiln_pass_view_permute(kiln_pass_view *v, const int32_t *perm);
/* n is a reshape, permute, slice or broadcast whose input has view v: v becomes n's
 * view. False (v unusable) when n's value is not a strided view of the same buffer. */
bool kiln_pass_view_apply(kiln_pass_view *v, const kiln_node *n);
/* Fills gd's dims, leading dims, transpose flags, offsets and batch loops for
 * c = a x b (equal ranks >= 2, equal batch dims); false when some operand's matrix has
 * no unit stride, C would need a transpose, or more than two batch loops remain. */
bool kiln_pass_view_gemm(const kiln_pass_view *a, const kiln_pass_view *b, const kiln_pass_view *c,
                         kiln_gemm_desc *gd);
/* The view through which a GEMM dot reads operand u: movement ops over a materialized
 * base cost nothing. The base is the first node down the chain that is not a reshape,
 * permute, slice or broadcast (or is a graph output, is_output per node), or the node
 * where the chain stops being a strided view. Returns the base. */
int32_t kiln_pass_operand_view(const kiln_graph *g, const uint8_t *is_output, int32_t u, kiln_pass_view *view);
/* The GEMM descriptor of dot v reading its operands through views (operand j as its own
 * dense buffer where bit j of dense is set), writing cv (a view of v's value in some
 * buffer). False when the views do not fit a GEMM. */
bool kiln_pass_dot_views(const kiln_graph *g, const uint8_t *is_output, int32_t v, uint8_t dense,
                         const kiln_pass_view *cv, kiln_pass_view *av, kiln_pass_view *bv, kiln_gemm_desc *gd);
/* The view of dot v's value inside the buffer of f, the end of the permute/reshape chain
 * from v it is sunk into (the chain inverted, from f back to v); false when it is none. */
bool kiln_pass_sunk_view(const kiln_graph *g, int32_t v, int32_t f, kiln_pass_view *cv);
/* Whether a GEMM reads A (view av, descriptor gd) as the operand u itself, one dense
 * [m, k] matrix: what a prologue's pack computes. */
bool kiln_pass_prologue_fits(const kiln_pass_view *av, const kiln_gemm_desc *gd, int32_t u);

#endif
